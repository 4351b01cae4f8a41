//! The rules of one collar connection (sans-IO): handshake, commands,
//! heartbeat and idle deadlines.
//!
//! A collar starts in the handshake (no MAC yet) and becomes identified
//! after a valid `IDENTIFY`, or, with device keys (`--device-key-file`),
//! after `IDENTIFY` is answered with a `CHALLENGE` and the collar's `AUTH`
//! proves its key (see [`super::auth`]); a failed proof ends the
//! connection. Until then every line but `PING` is refused, and the
//! handshake timeout runs. [`Collar::on_command`] applies one parsed line
//! and says what must happen; [`Collar::on_deadline`] applies the
//! handshake, heartbeat and idle rules at a given `now`. Neither touches a
//! socket or a clock, so both are tested with plain values.
//!
//! Liveness is the connection's `last_rx`: the time any byte last arrived,
//! which the reactor stores on every read. The rules never re-arm a timer
//! themselves; [`Collar::next_deadline`] derives the next deadline from
//! `last_rx`, so resetting the idle and heartbeat clocks costs one store.

use std::cmp::min;
use std::time::Duration;

use super::auth::{DeviceKeys, Nonce};
use super::mac::Mac;
use super::protocol::{Command, ErrorCode, Line};
use crate::close::CloseReason;
use crate::time::{Millis, deadline};

/// The device deadlines. A zero duration disables that deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From connect to a successful IDENTIFY.
    pub handshake: Duration,
    /// Silence after which the gateway sends a heartbeat `PING`.
    pub heartbeat_interval: Duration,
    /// Further silence after that `PING` before the peer is presumed dead.
    pub heartbeat_timeout: Duration,
    /// Silence after which the device is told `BYE idle`.
    pub idle: Duration,
}

/// A device's last reported position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// When the report arrived.
    pub at: Millis,
}

/// One collar's state.
#[derive(Debug)]
pub struct Collar {
    /// `None` during the handshake; set once by a valid IDENTIFY (with
    /// keys: a valid AUTH), and cleared if the hub refuses the collar.
    pub mac: Option<Mac>,
    /// The collar identified and the hub has not yet said whether it may
    /// go online (see [`Collar::admitted`]). Sits in the padding beside
    /// `mac`, so it costs no byte.
    admitting: bool,
    pub connected_at: Millis,
    /// When the last heartbeat PING went out (0: never). A PING is
    /// outstanding exactly while this is later than the connection's
    /// `last_rx`, so receiving anything answers it without a store here.
    ping_sent_at: Millis,
    /// The challenge awaiting `AUTH` during the handshake, the last fix
    /// once identified: never both, so they share one boxed slot, and a
    /// collar costs its slab entry one pointer for either (most of a
    /// collar's life is spent idle, without a fix).
    aside: Option<Box<Aside>>,
}

/// What a collar holds beside its fixed-size state.
#[derive(Debug)]
enum Aside {
    Challenge(Challenge),
    Fix(Fix),
    /// The connection came through mutual TLS and its client certificate
    /// names this MAC (`None`: its CN is not a MAC): `IDENTIFY` must
    /// name the same one, and no challenge is needed.
    Certified(Option<Mac>),
}

/// An `IDENTIFY` answered with `CHALLENGE`: whom it claims to be, and the
/// nonce it must prove its key on.
#[derive(Debug)]
struct Challenge {
    mac: Mac,
    nonce: Nonce,
}

/// What must happen after a command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Send this line back.
    Reply(Line),
    /// Send `CHALLENGE` with this nonce: the collar claimed a MAC and must
    /// prove its key with `AUTH`.
    Challenge(Nonce),
    /// The device just identified (and, with keys, proved it): resolve any
    /// takeover, then answer `OK`.
    Identified(Mac),
    /// `IDENTIFY` named another MAC than the client certificate does (or
    /// the certificate names none): answer `ERR bad-mac` and close
    /// (`auth-failed`).
    CertificateMismatch(Mac),
    /// The `AUTH` line did not prove the key of the MAC claimed: answer
    /// `ERR bad-auth` and close (`auth-failed`).
    AuthFailed(Mac),
    /// A new fix is stored (see [`Collar::location`]); no answer.
    Located,
    /// Nothing to send.
    Silent,
}

/// What a deadline check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing is due yet (the deadline moved because bytes arrived).
    Nothing,
    /// Send a heartbeat `PING`.
    Ping,
    /// Close the connection.
    Close(CloseReason),
}

impl Collar {
    pub fn new(connected_at: Millis) -> Collar {
        Collar { mac: None, admitting: false, connected_at, ping_sent_at: 0, aside: None }
    }

    /// Applies one command received at `now`; `keys` are the device keys
    /// when authentication is on.
    pub fn on_command(&mut self, command: Command, now: Millis, keys: Option<&DeviceKeys>) -> Step {
        match (self.mac, command) {
            (_, Command::Ping) => Step::Reply(Line::Pong),
            (None, Command::Identify(mac)) if let Some(certified) = self.certified() => {
                if certified == Some(mac) {
                    self.aside = None;
                    self.mac = Some(mac);
                    self.admitting = true;
                    Step::Identified(mac)
                } else {
                    Step::CertificateMismatch(mac)
                }
            }
            (None, Command::Identify(mac)) => match keys {
                None => {
                    self.mac = Some(mac);
                    self.admitting = true;
                    Step::Identified(mac)
                }
                // A second IDENTIFY before AUTH (a firmware retrying, say)
                // gets a fresh challenge for the MAC it names now.
                Some(_) => {
                    let nonce = Nonce::fresh().expect("the kernel's CSPRNG does not fail once booted");
                    self.aside = Some(Box::new(Aside::Challenge(Challenge { mac, nonce })));
                    Step::Challenge(nonce)
                }
            },
            (None, Command::Auth(proof)) if self.challenged().is_some() => {
                let Some(keys) = keys else { return Step::Reply(Line::Err(ErrorCode::NotIdentified)) };
                let Some(Aside::Challenge(Challenge { mac, nonce })) = self.aside.take().map(|a| *a) else {
                    unreachable!("checked")
                };
                if keys.verify(mac, &nonce, &proof) {
                    self.mac = Some(mac);
                    self.admitting = true;
                    Step::Identified(mac)
                } else {
                    Step::AuthFailed(mac)
                }
            }
            (None, Command::Invalid(ErrorCode::BadAuth)) if self.challenged().is_some() => {
                let mac = self.challenged().expect("checked");
                self.aside = None;
                Step::AuthFailed(mac)
            }
            (None, Command::Invalid(ErrorCode::BadMac)) => Step::Reply(Line::Err(ErrorCode::BadMac)),
            (None, _) => Step::Reply(Line::Err(ErrorCode::NotIdentified)),
            (Some(_), Command::Identify(_) | Command::Invalid(ErrorCode::BadMac)) => {
                Step::Reply(Line::Err(ErrorCode::AlreadyIdentified))
            }
            // Without keys there is no AUTH command, as before there was
            // authentication at all.
            (Some(_), Command::Auth(_) | Command::Invalid(ErrorCode::BadAuth)) => match keys {
                Some(_) => Step::Reply(Line::Err(ErrorCode::AlreadyIdentified)),
                None => Step::Reply(Line::Err(ErrorCode::UnknownCommand)),
            },
            (Some(_), Command::Pong) => Step::Silent,
            (Some(_), Command::Location { lat, lon }) => {
                let fix = Fix { lat, lon, at: now };
                match self.aside.as_deref_mut() {
                    Some(stored) => *stored = Aside::Fix(fix),
                    None => self.aside = Some(Box::new(Aside::Fix(fix))),
                }
                Step::Located
            }
            (Some(_), Command::Invalid(code)) => Step::Reply(Line::Err(code)),
        }
    }

    /// The peer proved a client certificate through mutual TLS, naming
    /// `mac` (`None`: no MAC); from now on only that MAC may identify, and
    /// without a challenge.
    pub fn certify(&mut self, mac: Option<Mac>) {
        if self.mac.is_none() {
            self.aside = Some(Box::new(Aside::Certified(mac)));
        }
    }

    /// What the client certificate names, on a mutual-TLS connection not
    /// identified yet.
    fn certified(&self) -> Option<Option<Mac>> {
        match self.aside.as_deref() {
            Some(Aside::Certified(mac)) => Some(*mac),
            _ => None,
        }
    }

    /// The MAC a challenge awaiting `AUTH` was issued for.
    pub fn challenged(&self) -> Option<Mac> {
        match self.aside.as_deref() {
            Some(Aside::Challenge(challenge)) => Some(challenge.mac),
            _ => None,
        }
    }

    /// The last fix reported.
    pub fn location(&self) -> Option<&Fix> {
        match self.aside.as_deref() {
            Some(Aside::Fix(fix)) => Some(fix),
            _ => None,
        }
    }

    /// Whether the collar identified and awaits the hub's word.
    pub fn admitting(&self) -> bool {
        self.admitting
    }

    /// The hub's word on the collar that identified: online, or not (then
    /// it is not identified any more, and its goodbye announces nothing).
    pub fn admitted(&mut self, online: bool) {
        self.admitting = false;
        if !online {
            self.mac = None;
        }
    }

    /// Whether a heartbeat PING is unanswered, given when bytes last arrived.
    pub fn awaiting_pong(&self, last_rx: Millis) -> bool {
        self.ping_sent_at > last_rx
    }

    /// The next moment [`Collar::on_deadline`] may have work, given the
    /// time the last byte arrived; `None` when every deadline is disabled.
    pub fn next_deadline(&self, last_rx: Millis, t: &Timeouts) -> Option<Millis> {
        let idle = deadline(last_rx, t.idle);
        if self.mac.is_none() {
            // The idle deadline applies during the handshake too, so a
            // silent socket is dropped even with the handshake timeout off.
            return earliest(deadline(self.connected_at, t.handshake), idle);
        }
        let heartbeat = if self.awaiting_pong(last_rx) {
            deadline(self.ping_sent_at, t.heartbeat_timeout)
        } else {
            deadline(last_rx, t.heartbeat_interval)
        };
        earliest(heartbeat, idle)
    }

    /// Applies the deadlines at `now`.
    pub fn on_deadline(&mut self, now: Millis, last_rx: Millis, t: &Timeouts) -> Due {
        let passed = |at: Option<Millis>| at.is_some_and(|at| now >= at);
        if self.mac.is_none() && passed(deadline(self.connected_at, t.handshake)) {
            return Due::Close(CloseReason::HandshakeTimeout);
        }
        if passed(deadline(last_rx, t.idle)) {
            return Due::Close(CloseReason::Idle);
        }
        if self.mac.is_none() {
            return Due::Nothing;
        }
        if self.awaiting_pong(last_rx) {
            if passed(deadline(self.ping_sent_at, t.heartbeat_timeout)) {
                return Due::Close(CloseReason::HeartbeatTimeout);
            }
        } else if passed(deadline(last_rx, t.heartbeat_interval)) {
            self.ping_sent_at = now;
            return Due::Ping;
        }
        Due::Nothing
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(min(a, b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::auth;

    const MAC: Mac = Mac([1, 2, 3, 4, 5, 6]);

    fn timeouts() -> Timeouts {
        Timeouts {
            handshake: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(300),
            heartbeat_timeout: Duration::from_millis(50),
            idle: Duration::from_millis(1000),
        }
    }

    fn identified(at: Millis) -> Collar {
        let mut s = Collar::new(at);
        assert_eq!(s.on_command(Command::Identify(MAC), at, None), Step::Identified(MAC));
        s
    }

    #[test]
    fn handshake_rules() {
        let mut s = Collar::new(0);
        assert_eq!(s.on_command(Command::Ping, 1, None), Step::Reply(Line::Pong));
        assert_eq!(s.on_command(Command::Pong, 1, None), Step::Reply(Line::Err(ErrorCode::NotIdentified)));
        assert_eq!(
            s.on_command(Command::Location { lat: 1.0, lon: 2.0 }, 1, None),
            Step::Reply(Line::Err(ErrorCode::NotIdentified))
        );
        assert_eq!(
            s.on_command(Command::Invalid(ErrorCode::BadLocation), 1, None),
            Step::Reply(Line::Err(ErrorCode::NotIdentified))
        );
        assert_eq!(
            s.on_command(Command::Invalid(ErrorCode::UnknownCommand), 1, None),
            Step::Reply(Line::Err(ErrorCode::NotIdentified))
        );
        assert_eq!(
            s.on_command(Command::Invalid(ErrorCode::BadMac), 1, None),
            Step::Reply(Line::Err(ErrorCode::BadMac))
        );
        assert_eq!(s.mac, None, "a bad MAC leaves the collar in the handshake");
        assert_eq!(s.on_command(Command::Identify(MAC), 2, None), Step::Identified(MAC));
        assert_eq!(s.mac, Some(MAC));
    }

    #[test]
    fn identified_rules() {
        let mut s = identified(0);
        let again = Step::Reply(Line::Err(ErrorCode::AlreadyIdentified));
        assert_eq!(s.on_command(Command::Identify(Mac([9; 6])), 1, None), again);
        assert_eq!(s.on_command(Command::Invalid(ErrorCode::BadMac), 1, None), again);
        assert_eq!(s.on_command(Command::Pong, 1, None), Step::Silent);
        assert_eq!(s.on_command(Command::Ping, 1, None), Step::Reply(Line::Pong));
        assert_eq!(
            s.on_command(Command::Invalid(ErrorCode::UnknownCommand), 1, None),
            Step::Reply(Line::Err(ErrorCode::UnknownCommand))
        );
        assert_eq!(
            s.on_command(Command::Invalid(ErrorCode::BadLocation), 1, None),
            Step::Reply(Line::Err(ErrorCode::BadLocation))
        );
        assert_eq!(s.location(), None);
        assert_eq!(s.on_command(Command::Location { lat: 1.5, lon: -2.5 }, 7, None), Step::Located);
        assert_eq!(s.location(), Some(&Fix { lat: 1.5, lon: -2.5, at: 7 }));
        assert_eq!(s.on_command(Command::Location { lat: 3.0, lon: 4.0 }, 9, None), Step::Located);
        assert_eq!(s.location(), Some(&Fix { lat: 3.0, lon: 4.0, at: 9 }));
    }

    fn keys() -> DeviceKeys {
        DeviceKeys::new(&[[0x42; 32]]).unwrap()
    }

    /// A collar that sent `IDENTIFY` with keys on, and the nonce it got.
    fn challenged(keys: &DeviceKeys) -> (Collar, Nonce) {
        let mut s = Collar::new(0);
        let Step::Challenge(nonce) = s.on_command(Command::Identify(MAC), 1, Some(keys)) else {
            panic!("no challenge")
        };
        (s, nonce)
    }

    #[test]
    fn a_certified_collar_identifies_as_its_certificate_only_and_unchallenged() {
        let keys = keys();
        let mut s = Collar::new(0);
        s.certify(Some(MAC));
        let other = Mac([6, 5, 4, 3, 2, 1]);
        assert_eq!(s.on_command(Command::Identify(other), 1, Some(&keys)), Step::CertificateMismatch(other));
        assert_eq!(s.mac, None);
        assert_eq!(s.on_command(Command::Identify(MAC), 1, Some(&keys)), Step::Identified(MAC));
        assert_eq!((s.mac, s.challenged()), (Some(MAC), None));
        // A certificate that names no MAC lets no IDENTIFY through.
        let mut s = Collar::new(0);
        s.certify(None);
        assert_eq!(s.on_command(Command::Identify(MAC), 1, None), Step::CertificateMismatch(MAC));
        assert_eq!(s.on_command(Command::Ping, 1, None), Step::Reply(Line::Pong));
    }

    #[test]
    fn with_keys_identify_is_challenged_and_a_proof_identifies() {
        let keys = keys();
        let (mut s, nonce) = challenged(&keys);
        assert_eq!(s.mac, None, "not identified before AUTH");
        let refused = Step::Reply(Line::Err(ErrorCode::NotIdentified));
        assert_eq!(s.on_command(Command::Pong, 2, Some(&keys)), refused);
        assert_eq!(s.on_command(Command::Location { lat: 1.0, lon: 2.0 }, 2, Some(&keys)), refused);
        assert_eq!(s.on_command(Command::Ping, 2, Some(&keys)), Step::Reply(Line::Pong));
        let proof = auth::prove(&keys.device_key(MAC), &nonce);
        assert_eq!(s.on_command(Command::Auth(proof), 3, Some(&keys)), Step::Identified(MAC));
        assert_eq!(s.mac, Some(MAC));
        let again = Step::Reply(Line::Err(ErrorCode::AlreadyIdentified));
        assert_eq!(s.on_command(Command::Auth(proof), 4, Some(&keys)), again, "a proof counts once");
        assert_eq!(s.on_command(Command::Invalid(ErrorCode::BadAuth), 4, Some(&keys)), again);
        assert_eq!(s.on_command(Command::Identify(MAC), 4, Some(&keys)), again);
    }

    #[test]
    fn a_wrong_or_malformed_proof_fails_and_auth_without_a_challenge_is_refused() {
        let keys = keys();
        let (mut s, nonce) = challenged(&keys);
        let other = DeviceKeys::new(&[[0x43; 32]]).unwrap();
        let wrong = auth::prove(&other.device_key(MAC), &nonce);
        assert_eq!(s.on_command(Command::Auth(wrong), 2, Some(&keys)), Step::AuthFailed(MAC));
        assert_eq!(s.mac, None);
        let (mut s, _) = challenged(&keys);
        assert_eq!(s.on_command(Command::Invalid(ErrorCode::BadAuth), 2, Some(&keys)), Step::AuthFailed(MAC));
        let mut fresh = Collar::new(0);
        let refused = Step::Reply(Line::Err(ErrorCode::NotIdentified));
        assert_eq!(fresh.on_command(Command::Auth(wrong), 1, Some(&keys)), refused, "AUTH before IDENTIFY");
        assert_eq!(fresh.on_command(Command::Invalid(ErrorCode::BadAuth), 1, Some(&keys)), refused);
    }

    #[test]
    fn a_second_identify_gets_a_fresh_challenge_for_the_mac_it_names() {
        let keys = keys();
        let (mut s, first) = challenged(&keys);
        let other = Mac([9; 6]);
        let Step::Challenge(second) = s.on_command(Command::Identify(other), 2, Some(&keys)) else { panic!() };
        assert_ne!(first, second);
        let stale = auth::prove(&keys.device_key(other), &first);
        assert_eq!(
            s.on_command(Command::Auth(stale), 3, Some(&keys)),
            Step::AuthFailed(other),
            "the first nonce is void"
        );
        let (mut s, _) = challenged(&keys);
        let Step::Challenge(nonce) = s.on_command(Command::Identify(other), 2, Some(&keys)) else { panic!() };
        let proof = auth::prove(&keys.device_key(other), &nonce);
        assert_eq!(s.on_command(Command::Auth(proof), 3, Some(&keys)), Step::Identified(other));
    }

    #[test]
    fn without_keys_auth_lines_are_what_they_were_before_authentication() {
        let mut s = Collar::new(0);
        let proof = crate::device::Proof([0; 32]);
        let refused = Step::Reply(Line::Err(ErrorCode::NotIdentified));
        assert_eq!(s.on_command(Command::Auth(proof), 1, None), refused);
        let mut s = identified(0);
        let unknown = Step::Reply(Line::Err(ErrorCode::UnknownCommand));
        assert_eq!(s.on_command(Command::Auth(proof), 1, None), unknown);
        assert_eq!(s.on_command(Command::Invalid(ErrorCode::BadAuth), 1, None), unknown);
    }

    #[test]
    fn the_handshake_timeout_covers_the_challenge() {
        let t = timeouts();
        let keys = keys();
        let (mut s, _) = challenged(&keys);
        assert_eq!(s.next_deadline(50, &t), Some(100));
        assert_eq!(s.on_deadline(100, 50, &t), Due::Close(CloseReason::HandshakeTimeout));
    }

    #[test]
    fn the_hub_admits_or_refuses_an_identified_collar() {
        let mut s = Collar::new(0);
        assert_eq!(s.on_command(Command::Identify(MAC), 1, None), Step::Identified(MAC));
        assert!(s.admitting());
        s.admitted(true);
        assert_eq!((s.admitting(), s.mac), (false, Some(MAC)));
        let mut s = Collar::new(0);
        s.on_command(Command::Identify(MAC), 1, None);
        s.admitted(false);
        assert_eq!((s.admitting(), s.mac), (false, None), "refused: not identified");
    }

    #[test]
    fn a_collar_costs_no_more_for_authentication() {
        // The challenge shares the fix's boxed slot, and the admission flag
        // the MAC's padding.
        assert_eq!(std::mem::size_of::<Collar>(), 32);
    }

    #[test]
    fn handshake_timeout() {
        let t = timeouts();
        let mut s = Collar::new(10);
        assert_eq!(s.next_deadline(10, &t), Some(110));
        assert_eq!(s.on_deadline(109, 50, &t), Due::Nothing, "bytes do not extend the handshake");
        assert_eq!(s.on_deadline(110, 50, &t), Due::Close(CloseReason::HandshakeTimeout));
    }

    #[test]
    fn without_a_handshake_timeout_the_idle_timeout_still_applies() {
        let t = Timeouts { handshake: Duration::ZERO, ..timeouts() };
        let mut s = Collar::new(0);
        assert_eq!(s.next_deadline(200, &t), Some(1200));
        assert_eq!(s.on_deadline(1199, 200, &t), Due::Nothing);
        assert_eq!(s.on_deadline(1200, 200, &t), Due::Close(CloseReason::Idle));
    }

    #[test]
    fn heartbeat_ping_then_timeout() {
        let t = timeouts();
        let mut s = identified(0);
        assert_eq!(s.next_deadline(0, &t), Some(300));
        assert_eq!(s.on_deadline(299, 0, &t), Due::Nothing);
        assert_eq!(s.on_deadline(300, 0, &t), Due::Ping);
        assert_eq!(s.next_deadline(0, &t), Some(350));
        assert_eq!(s.on_deadline(349, 0, &t), Due::Nothing, "no second PING while one is outstanding");
        assert_eq!(s.on_deadline(350, 0, &t), Due::Close(CloseReason::HeartbeatTimeout));
    }

    #[test]
    fn any_byte_answers_the_heartbeat() {
        let t = timeouts();
        let mut s = identified(0);
        assert_eq!(s.on_deadline(305, 0, &t), Due::Ping);
        // Something arrived at 320: the ping is answered, the clock restarts.
        assert_eq!(s.next_deadline(320, &t), Some(620));
        assert_eq!(s.on_deadline(360, 320, &t), Due::Nothing);
        assert_eq!(s.on_deadline(620, 320, &t), Due::Ping);
    }

    #[test]
    fn idle_timeout_when_heartbeat_is_disabled() {
        let t = Timeouts { heartbeat_interval: Duration::ZERO, ..timeouts() };
        let mut s = identified(0);
        assert_eq!(s.next_deadline(500, &t), Some(1500));
        assert_eq!(s.on_deadline(1499, 500, &t), Due::Nothing);
        assert_eq!(s.on_deadline(1500, 500, &t), Due::Close(CloseReason::Idle));
    }

    #[test]
    fn idle_wins_when_it_comes_first() {
        let t = Timeouts { idle: Duration::from_millis(200), ..timeouts() };
        let mut s = identified(0);
        assert_eq!(s.next_deadline(0, &t), Some(200));
        assert_eq!(s.on_deadline(200, 0, &t), Due::Close(CloseReason::Idle));
    }

    #[test]
    fn everything_disabled_means_no_deadline() {
        let t = Timeouts {
            handshake: Duration::ZERO,
            heartbeat_interval: Duration::ZERO,
            heartbeat_timeout: Duration::ZERO,
            idle: Duration::ZERO,
        };
        assert_eq!(Collar::new(0).next_deadline(0, &t), None);
        let mut s = identified(0);
        assert_eq!(s.next_deadline(0, &t), None);
        assert_eq!(s.on_deadline(u64::MAX, 0, &t), Due::Nothing);
    }
}
