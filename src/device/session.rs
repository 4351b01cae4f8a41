//! The collar protocol as the reactor drives it (sans-IO).
//!
//! A [`DeviceSession`] takes whatever bytes a read returned, frames them
//! into lines, applies each to the collar's rules, and appends the answers
//! to its output: many lines in one read get their answers in one write
//! at the end of the turn. Once the answers pass `--max-output` the rest
//! of the read waits (put off in the framer) until they drain. What the rest of the gateway must hear of (the
//! collar identified, reported a fix, went away) is returned as an
//! [`Effect`]. Deadlines come from the rules; the heartbeat `PING` is sent
//! from here, and a close is announced with `BYE <reason>`.
//!
//! A collar that identified (and proved its key, with device keys) is not
//! answered `OK` at once: the hub decides whether it may go online (a MAC
//! quarantined for flapping may not), so the session returns
//! [`Effect::Identified`] and holds the lines behind the `IDENTIFY` until
//! the hub's [`Reply::Admitted`] or [`Reply::Refused`] arrives (in the same
//! turn). The `OK` or the refusal thus comes before any answer to a later
//! line, and no later line acts for a collar the hub turned away.

use std::ops::ControlFlow;

use log::debug;

use crate::close::CloseReason;
use crate::effect::{Effect, Reply};
use crate::reactor::{CxOf, Next, OutputLimit, PeerIdentity, Session};
use crate::stats::LineKind;
use crate::time::Millis;

use super::auth::DeviceKeys;
use super::line::LineFramer;
use super::mac::Mac;
use super::protocol::{self, ErrorCode, Line};
use super::rules::{Collar, Due, Step, Timeouts};

/// The collar protocol's settings.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Longest line, terminator included.
    pub max_line: usize,
    /// Most unsent output before the collar is dropped as a slow consumer.
    pub max_output: usize,
    pub timeouts: Timeouts,
    /// The master keys of `--device-key-file`: with them a collar must
    /// prove its key before it is identified.
    pub keys: Option<DeviceKeys>,
}

/// One collar connection: its unfinished line and its state. While the
/// collar awaits the hub's word ([`Collar::admitting`]) no line is framed.
#[derive(Debug)]
pub struct DeviceSession {
    framer: LineFramer,
    pub collar: Collar,
}

/// Why [`on_line`] stopped the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The answers passed `--max-output`: go on once they drain.
    Output,
    /// The collar identified: go on once the hub has its say.
    Admission,
    /// Close the connection.
    Close(CloseReason),
}

impl DeviceSession {
    pub fn new(now: Millis) -> DeviceSession {
        DeviceSession { framer: LineFramer::default(), collar: Collar::new(now) }
    }

    /// Frames `input` (or, with `None`, the lines put off) and applies
    /// each line.
    fn frame(&mut self, input: Option<&[u8]>, cx: &mut CxOf<'_, Self>) -> Next {
        let collar = &mut self.collar;
        let max_line = cx.config.max_line;
        let mut close = None;
        let on_line = |line: &[u8]| match on_line(collar, line, cx) {
            ControlFlow::Continue(()) => ControlFlow::Continue(()),
            ControlFlow::Break(stop) => {
                if let Stop::Close(reason) = stop {
                    close = Some(reason);
                }
                ControlFlow::Break(())
            }
        };
        let framed = match input {
            Some(input) => self.framer.feed(input, max_line, on_line),
            None => self.framer.resume(max_line, on_line),
        };
        match (framed, close) {
            (Err(_), _) => Next::Close(CloseReason::LineTooLong),
            (Ok(()), Some(reason)) => Next::Close(reason),
            (Ok(()), None) => Next::Continue,
        }
    }
}

impl Session for DeviceSession {
    type Config = DeviceSettings;
    type Effect = Effect;
    type Reply = Reply;

    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        self.frame(Some(input), cx)
    }

    /// Answers the lines put off when the output passed `--max-output`
    /// (the reactor calls this once it drained).
    fn on_resume(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        if self.collar.admitting() {
            return Next::Continue;
        }
        self.frame(None, cx)
    }

    /// The hub's word on a collar that identified: `OK` and on with the
    /// lines held behind the `IDENTIFY`, or the refusal and a close.
    fn on_reply(&mut self, reply: Reply, cx: &mut CxOf<'_, Self>) -> Next {
        let refusal = match reply {
            _ if !self.collar.admitting() => return Next::Continue,
            Reply::Admitted => None,
            Reply::Refused(reason) => Some(reason),
            // The hub answers a collar with nothing else.
            Reply::Answer(_) | Reply::Stream => return Next::Continue,
        };
        // Refused, the collar is not online, so its goodbye announces
        // nothing.
        self.collar.admitted(refusal.is_none());
        cx.stats.lines_out += 1;
        match refusal {
            None => {
                cx.send(Line::Ok.bytes());
                self.frame(None, cx)
            }
            Some(reason) => {
                let code = if reason == CloseReason::Flapping { ErrorCode::Flapping } else { ErrorCode::NotIdentified };
                cx.send(Line::Err(code).bytes());
                Next::Close(reason)
            }
        }
    }

    fn on_deadline(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        match self.collar.on_deadline(cx.now, cx.last_rx, &cx.config.timeouts) {
            Due::Nothing => Next::Continue,
            Due::Ping => {
                cx.stats.heartbeat_pings += 1;
                cx.stats.lines_out += 1;
                cx.send(Line::Ping.bytes());
                Next::Continue
            }
            Due::Close(reason) => Next::Close(reason),
        }
    }

    /// Mutual TLS: the MAC is the client certificate's common name (in
    /// either of the spellings `IDENTIFY` accepts).
    fn on_peer_identity(&mut self, identity: &PeerIdentity, _cx: &mut CxOf<'_, Self>) -> Next {
        let mac = identity.common_name.as_deref().and_then(|cn| Mac::parse(cn.as_bytes()).ok());
        self.collar.certify(mac);
        Next::Continue
    }

    fn on_drain(&mut self, _cx: &mut CxOf<'_, Self>) -> Next {
        Next::Close(CloseReason::Shutdown)
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut CxOf<'_, Self>) {
        if reason == CloseReason::SlowConsumer {
            // The peer is not reading: drop the backlog (not the reason),
            // but finish a line already started, so it never sees a torn
            // line before its BYE.
            cx.out.keep_started_line(cx.pool);
        }
        if let Some(bye) = reason.bye() {
            cx.stats.lines_out += 1;
            cx.send(bye);
        }
        if let Some(mac) = self.collar.mac {
            cx.effects.push(Effect::Offline { mac, reason });
        }
    }

    fn deadline(&self, config: &DeviceSettings, last_rx: Millis) -> Option<Millis> {
        self.collar.next_deadline(last_rx, &config.timeouts)
    }

    /// Lines put off are answered before more input is read, and nothing
    /// is read while the hub decides on an identified collar.
    fn wants_input(&self, _config: &DeviceSettings) -> bool {
        !self.framer.holds_lines() && !self.collar.admitting()
    }

    fn has_work(&self) -> bool {
        self.framer.holds_lines() && !self.collar.admitting()
    }

    fn output_limit(&self, config: &DeviceSettings) -> OutputLimit {
        OutputLimit::CloseAbove(config.max_output)
    }
}

/// Applies one line: answer it, and tell the hub what changed. Stops the
/// framing once the answers pass `--max-output`: the rest of the read is
/// put off until they drain, so what one read can make a collar be sent
/// (an `ERR` line is up to 23 bytes for a 1-byte line) stays bounded. Stops
/// it too when the collar identified (the hub must admit it first) or
/// failed to prove its key.
fn on_line(collar: &mut Collar, line: &[u8], cx: &mut CxOf<'_, DeviceSession>) -> ControlFlow<Stop> {
    let command = protocol::parse(line);
    cx.stats.line_in(LineKind::of(&command));
    let answer = match collar.on_command(command, cx.now, cx.config.keys.as_ref()) {
        Step::Reply(answer) => Some(answer),
        Step::Silent => None,
        Step::Challenge(nonce) => {
            cx.stats.lines_out += 1;
            cx.send(&protocol::challenge(&nonce));
            None
        }
        Step::AuthFailed(mac) => {
            cx.stats.device_auth_failures += 1;
            // Debug only: a failed proof says nothing about who the peer
            // is, and an attacker could fill the log with MACs.
            debug!("{:?}: AUTH failed for {mac}", cx.token);
            cx.stats.lines_out += 1;
            cx.send(Line::Err(ErrorCode::BadAuth).bytes());
            return ControlFlow::Break(Stop::Close(CloseReason::AuthFailed));
        }
        Step::CertificateMismatch(mac) => {
            cx.stats.device_auth_failures += 1;
            debug!("{:?}: IDENTIFY {mac} does not match the client certificate", cx.token);
            cx.stats.lines_out += 1;
            cx.send(Line::Err(ErrorCode::BadMac).bytes());
            return ControlFlow::Break(Stop::Close(CloseReason::AuthFailed));
        }
        Step::Located => {
            if let (Some(mac), Some(&fix)) = (collar.mac, collar.location()) {
                cx.effects.push(Effect::Located { mac, fix });
            }
            None
        }
        Step::Identified(mac) => {
            if cx.config.keys.is_some() {
                cx.stats.device_auths += 1;
            }
            cx.effects.push(Effect::Identified { mac });
            return ControlFlow::Break(Stop::Admission);
        }
    };
    if let Some(answer) = answer {
        cx.stats.lines_out += 1;
        cx.send(answer.bytes());
    }
    if cx.out.len() > cx.config.max_output { ControlFlow::Break(Stop::Output) } else { ControlFlow::Continue(()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::device::Mac;
    use crate::device::auth::{self, DeviceKeys, Nonce};
    use crate::reactor::session::Parts;

    const MAC: Mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);

    fn settings() -> DeviceSettings {
        DeviceSettings {
            max_line: 32,
            max_output: 64,
            timeouts: Timeouts {
                handshake: Duration::from_millis(100),
                heartbeat_interval: Duration::from_millis(300),
                heartbeat_timeout: Duration::from_millis(50),
                idle: Duration::from_millis(1000),
            },
            keys: None,
        }
    }

    /// A session with its own output, effects and stats, driven by hand.
    struct Harness {
        session: DeviceSession,
        settings: DeviceSettings,
        parts: Parts<Effect>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness { session: DeviceSession::new(0), settings: settings(), parts: Parts::default() }
        }

        fn with<R>(
            &mut self,
            now: Millis,
            last_rx: Millis,
            f: impl FnOnce(&mut DeviceSession, &mut CxOf<'_, DeviceSession>) -> R,
        ) -> R {
            f(&mut self.session, &mut self.parts.cx(&self.settings, now, last_rx))
        }

        fn input(&mut self, now: Millis, bytes: &[u8]) -> Next {
            self.with(now, now, |s, cx| s.on_input(bytes, cx))
        }

        fn reply(&mut self, now: Millis, reply: Reply) -> Next {
            self.with(now, now, |s, cx| s.on_reply(reply, cx))
        }

        /// The output so far, taken.
        fn sent(&mut self) -> String {
            let text = String::from_utf8(self.parts.out.pending().to_vec()).unwrap();
            self.parts.out.clear(&mut self.parts.pool);
            text
        }
    }

    #[test]
    fn lines_split_anywhere_are_answered_in_one_output() {
        let mut h = Harness::new();
        assert_eq!(h.input(1, b"PI"), Next::Continue);
        assert_eq!(h.sent(), "");
        assert_eq!(h.input(2, b"NG\nIDENTIFY:ce-96-c2-78-27-fc\r\nLOCATION:1.5,-2"), Next::Continue);
        assert_eq!(h.sent(), "PONG\n", "OK waits for the hub");
        assert_eq!(h.parts.effects, vec![Effect::Identified { mac: MAC }]);
        assert!(!h.session.wants_input(&h.settings) && !h.session.has_work());
        assert_eq!(h.reply(2, Reply::Admitted), Next::Continue);
        assert_eq!(h.sent(), "OK\n");
        assert!(h.session.wants_input(&h.settings));
        assert_eq!(h.input(3, b".5\nHELLO\n"), Next::Continue);
        assert_eq!(h.sent(), "ERR unknown-command\n");
        assert_eq!(
            h.parts.effects[1],
            Effect::Located { mac: MAC, fix: crate::device::Fix { lat: 1.5, lon: -2.5, at: 3 } }
        );
        assert_eq!(h.parts.stats.lines_out, 3);
    }

    /// A harness whose collars must prove their key.
    fn with_keys() -> (Harness, DeviceKeys) {
        let keys = DeviceKeys::new(&[[0x5A; 32]]).unwrap();
        let mut h = Harness::new();
        // An AUTH line is 70 bytes.
        h.settings.max_line = 80;
        h.settings.keys = Some(keys.clone());
        (h, keys)
    }

    /// The nonce of a `CHALLENGE` line.
    fn nonce_of(line: &str) -> Nonce {
        let hex = line.strip_prefix("CHALLENGE ").and_then(|l| l.strip_suffix('\n')).expect(line);
        Nonce::parse(hex.as_bytes()).expect(line)
    }

    fn auth_line(keys: &DeviceKeys, nonce: &Nonce) -> String {
        let proof = auth::prove(&keys.device_key(MAC), nonce);
        let mut hex = vec![0; 64];
        auth::encode_hex(&proof.0, &mut hex);
        format!("AUTH:{}\n", String::from_utf8(hex).unwrap())
    }

    #[test]
    fn with_keys_identify_is_challenged_and_auth_identifies() {
        let (mut h, keys) = with_keys();
        assert_eq!(h.input(1, b"IDENTIFY:CE:96:C2:78:27:FC\nLOCATION:1,2\n"), Next::Continue);
        let sent = h.sent();
        let (challenge, rest) = sent.split_at(protocol::CHALLENGE_LEN);
        assert_eq!(rest, "ERR not-identified\n");
        let nonce = nonce_of(challenge);
        assert!(h.parts.effects.is_empty(), "nobody is online before AUTH");
        let line = auth_line(&keys, &nonce);
        // The AUTH line split anywhere, with a PING behind it.
        assert_eq!(h.input(2, &line.as_bytes()[..9]), Next::Continue);
        assert_eq!(h.input(3, format!("{}PING\n", &line[9..]).as_bytes()), Next::Continue);
        assert_eq!(h.sent(), "");
        assert_eq!(h.parts.effects, vec![Effect::Identified { mac: MAC }]);
        assert_eq!(h.reply(3, Reply::Admitted), Next::Continue);
        assert_eq!(h.sent(), "OK\nPONG\n");
        assert_eq!((h.parts.stats.device_auths, h.parts.stats.device_auth_failures), (1, 0));
        assert_eq!(h.parts.stats.lines_in[LineKind::Auth as usize], 1);
    }

    #[test]
    fn a_failed_auth_is_answered_bad_auth_and_closed() {
        let (mut h, keys) = with_keys();
        assert_eq!(h.input(1, b"IDENTIFY:CE:96:C2:78:27:FC\n"), Next::Continue);
        let nonce = nonce_of(&h.sent());
        let mut line = auth_line(&keys, &nonce).into_bytes();
        line[5] = if line[5] == b'0' { b'1' } else { b'0' };
        line.extend_from_slice(b"PING\n");
        assert_eq!(h.input(2, &line), Next::Close(CloseReason::AuthFailed));
        assert_eq!(h.sent(), "ERR bad-auth\n", "nothing after the failed line is answered");
        h.with(2, 2, |s, cx| s.on_close(CloseReason::AuthFailed, cx));
        assert_eq!(h.sent(), "BYE auth-failed\n");
        assert!(h.parts.effects.is_empty(), "never online, never announced");
        assert_eq!(h.parts.stats.device_auth_failures, 1);
        // A malformed proof fails the same way.
        let (mut h, _) = with_keys();
        assert_eq!(h.input(1, b"IDENTIFY:CE:96:C2:78:27:FC\n"), Next::Continue);
        h.sent();
        assert_eq!(h.input(2, b"AUTH:00\n"), Next::Close(CloseReason::AuthFailed));
        assert_eq!(h.sent(), "ERR bad-auth\n");
    }

    #[test]
    fn a_refused_collar_is_told_why_and_closed_unannounced() {
        let mut h = Harness::new();
        assert_eq!(h.input(1, b"IDENTIFY:CE:96:C2:78:27:FC\nPING\n"), Next::Continue);
        assert_eq!(h.reply(1, Reply::Refused(CloseReason::Flapping)), Next::Close(CloseReason::Flapping));
        h.with(1, 1, |s, cx| s.on_close(CloseReason::Flapping, cx));
        assert_eq!(h.sent(), "ERR flapping\nBYE flapping\n");
        assert_eq!(h.parts.effects, vec![Effect::Identified { mac: MAC }], "no Offline for a collar never online");
    }

    #[test]
    fn the_answers_to_one_read_stop_at_max_output_and_the_rest_waits() {
        let mut h = Harness::new();
        // 1,000 empty lines: 1,000 `ERR not-identified` (19 bytes each)
        // against a limit of 64 bytes.
        let lines = vec![b'\n'; 1000];
        assert_eq!(h.input(0, &lines), Next::Continue);
        let mut answered = h.parts.out.len();
        assert!(answered > 64 && answered <= 64 + 19, "{answered} bytes for one read");
        assert!(h.session.has_work() && !h.session.wants_input(&h.settings));
        while h.session.has_work() {
            h.parts.out.clear(&mut h.parts.pool);
            assert_eq!(h.with(1, 1, |s, cx| s.on_resume(cx)), Next::Continue);
            assert!(h.parts.out.len() <= 64 + 19);
            answered += h.parts.out.len();
        }
        assert_eq!(answered, 1000 * b"ERR not-identified\n".len(), "every line answered");
        assert!(h.session.wants_input(&h.settings));
    }

    #[test]
    fn a_line_over_max_line_closes() {
        let mut h = Harness::new();
        assert_eq!(h.input(1, &[b'A'; 40]), Next::Close(CloseReason::LineTooLong));
    }

    #[test]
    fn the_heartbeat_pings_and_a_silent_collar_is_closed_without_a_bye() {
        let mut h = Harness::new();
        assert_eq!(h.input(0, b"IDENTIFY:ce-96-c2-78-27-fc\n"), Next::Continue);
        assert_eq!(h.reply(0, Reply::Admitted), Next::Continue);
        h.sent();
        let s = &h.settings;
        assert_eq!(h.session.deadline(s, 0), Some(300));
        assert_eq!(h.with(300, 0, |s, cx| s.on_deadline(cx)), Next::Continue);
        assert_eq!(h.sent(), "PING\n");
        assert_eq!(h.session.deadline(&h.settings, 0), Some(350));
        assert_eq!(h.with(350, 0, |s, cx| s.on_deadline(cx)), Next::Close(CloseReason::HeartbeatTimeout));
        h.with(350, 0, |s, cx| s.on_close(CloseReason::HeartbeatTimeout, cx));
        assert_eq!(h.sent(), "", "a peer presumed dead is not told");
        assert_eq!(h.parts.effects.last(), Some(&Effect::Offline { mac: MAC, reason: CloseReason::HeartbeatTimeout }));
    }

    #[test]
    fn a_slow_consumer_gets_the_end_of_its_started_line_then_its_bye() {
        let mut h = Harness::new();
        assert_eq!(h.input(0, b"PING\nPING\n"), Next::Continue);
        h.parts.out.consume(2, &mut h.parts.pool); // "PO" went out
        h.with(1, 1, |s, cx| s.on_close(CloseReason::SlowConsumer, cx));
        assert_eq!(h.sent(), "NG\nBYE slow-consumer\n");
        assert!(h.parts.effects.is_empty(), "a collar that never identified goes unannounced");
        assert_eq!(h.session.output_limit(&h.settings), OutputLimit::CloseAbove(64));
    }
}
