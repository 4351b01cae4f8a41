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

use std::ops::ControlFlow;

use crate::close::CloseReason;
use crate::effect::{Effect, Reply};
use crate::reactor::{CxOf, Next, OutputLimit, Session};
use crate::stats::LineKind;
use crate::time::Millis;

use super::line::LineFramer;
use super::protocol::{self, Line};
use super::rules::{Collar, Due, Step, Timeouts};

/// The collar protocol's settings.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Longest line, terminator included.
    pub max_line: usize,
    /// Most unsent output before the collar is dropped as a slow consumer.
    pub max_output: usize,
    pub timeouts: Timeouts,
}

/// One collar connection: its unfinished line and its state.
#[derive(Debug)]
pub struct DeviceSession {
    framer: LineFramer,
    pub collar: Collar,
}

impl DeviceSession {
    pub fn new(now: Millis) -> DeviceSession {
        DeviceSession { framer: LineFramer::default(), collar: Collar::new(now) }
    }
}

impl Session for DeviceSession {
    type Config = DeviceSettings;
    type Effect = Effect;
    type Reply = Reply;

    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        let collar = &mut self.collar;
        let framed = self.framer.feed(input, cx.config.max_line, |line| on_line(collar, line, cx));
        framed.map_or(Next::Close(CloseReason::LineTooLong), |()| Next::Continue)
    }

    /// Answers the lines put off when the output passed `--max-output`
    /// (the reactor calls this once it drained).
    fn on_resume(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        let collar = &mut self.collar;
        let framed = self.framer.resume(cx.config.max_line, |line| on_line(collar, line, cx));
        framed.map_or(Next::Close(CloseReason::LineTooLong), |()| Next::Continue)
    }

    fn on_reply(&mut self, _reply: Reply, _cx: &mut CxOf<'_, Self>) -> Next {
        // A collar asks the hub nothing.
        Next::Continue
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

    /// Lines put off are answered before more input is read.
    fn wants_input(&self, _config: &DeviceSettings) -> bool {
        !self.framer.holds_lines()
    }

    fn has_work(&self) -> bool {
        self.framer.holds_lines()
    }

    fn output_limit(&self, config: &DeviceSettings) -> OutputLimit {
        OutputLimit::CloseAbove(config.max_output)
    }
}

/// Applies one line: answer it, and tell the hub what changed. Stops the
/// framing once the answers pass `--max-output`: the rest of the read is
/// put off until they drain, so what one read can make a collar be sent
/// (an `ERR` line is up to 23 bytes for a 1-byte line) stays bounded.
fn on_line(collar: &mut Collar, line: &[u8], cx: &mut CxOf<'_, DeviceSession>) -> ControlFlow<()> {
    let command = protocol::parse(line);
    cx.stats.line_in(LineKind::of(&command));
    let answer = match collar.on_command(command, cx.now) {
        Step::Reply(answer) => Some(answer),
        Step::Silent => None,
        Step::Located => {
            if let (Some(mac), Some(&fix)) = (collar.mac, collar.location.as_deref()) {
                cx.effects.push(Effect::Located { mac, fix });
            }
            None
        }
        Step::Identified(mac) => {
            cx.effects.push(Effect::Identified { mac });
            Some(Line::Ok)
        }
    };
    if let Some(answer) = answer {
        cx.stats.lines_out += 1;
        cx.send(answer.bytes());
    }
    if cx.out.len() > cx.config.max_output { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::device::Mac;
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
        assert_eq!(h.sent(), "PONG\nOK\n");
        assert_eq!(h.parts.effects, vec![Effect::Identified { mac: MAC }]);
        assert_eq!(h.input(3, b".5\nHELLO\n"), Next::Continue);
        assert_eq!(h.sent(), "ERR unknown-command\n");
        assert_eq!(
            h.parts.effects[1],
            Effect::Located { mac: MAC, fix: crate::device::Fix { lat: 1.5, lon: -2.5, at: 3 } }
        );
        assert_eq!(h.parts.stats.lines_out, 3);
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
