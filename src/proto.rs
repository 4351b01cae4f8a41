//! The protocols the gateway speaks, as one session type for the reactor.
//!
//! The reactor holds one session type in its slab; [`Proto`] is either a
//! collar ([`DeviceSession`]) or an HTTP client ([`HttpSession`]), and
//! hands each call to the one it is, with its own part of the
//! [`Settings`]. Each protocol is a [`Session`] on its own; this file only
//! dispatches. The Redis link is a third variant: a connection the hub dialed.

use crate::close::CloseReason;
use crate::device::{DeviceSession, DeviceSettings};
use crate::effect::{Effect, Reply};
use crate::http::{HttpSession, HttpSettings};
use crate::reactor::{CxOf, Next, OutputLimit, PeerIdentity, Session};
use crate::redis::{RedisSession, RedisSettings};
use crate::time::Millis;

/// Every protocol's settings, as the reactor lends them to sessions.
#[derive(Debug, Clone)]
pub struct Settings {
    pub device: DeviceSettings,
    pub http: HttpSettings,
    pub redis: RedisSettings,
}

/// What speaks on a connection.
#[derive(Debug)]
pub enum Proto {
    Device(DeviceSession),
    /// Boxed: HTTP connections are few next to collars, and their state is
    /// larger; the box keeps every slab entry small.
    Http(Box<HttpSession>),
    /// A link to Redis (`--redis`): two per gateway.
    Redis(Box<RedisSession>),
}

/// Calls `$call` on the protocol's session with the call context narrowed
/// to its settings.
macro_rules! dispatch {
    ($self:ident, $cx:ident, |$s:ident, $c:ident| $call:expr) => {
        match $self {
            Proto::Device($s) => {
                let $c = &mut $cx.with_config(&$cx.config.device);
                $call
            }
            Proto::Http($s) => {
                let $c = &mut $cx.with_config(&$cx.config.http);
                $call
            }
            Proto::Redis($s) => {
                let $c = &mut $cx.with_config(&$cx.config.redis);
                $call
            }
        }
    };
}

impl Session for Proto {
    type Config = Settings;
    type Effect = Effect;
    type Reply = Reply;

    fn on_input(&mut self, input: &[u8], cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_input(input, c))
    }

    fn on_resume(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_resume(c))
    }

    fn on_reply(&mut self, reply: Reply, cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_reply(reply, c))
    }

    fn on_deadline(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_deadline(c))
    }

    fn on_peer_identity(&mut self, identity: &PeerIdentity, cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_peer_identity(identity, c))
    }

    fn on_drain(&mut self, cx: &mut CxOf<'_, Self>) -> Next {
        dispatch!(self, cx, |s, c| s.on_drain(c))
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut CxOf<'_, Self>) {
        dispatch!(self, cx, |s, c| s.on_close(reason, c))
    }

    fn deadline(&self, config: &Settings, last_rx: Millis) -> Option<Millis> {
        match self {
            Proto::Device(s) => s.deadline(&config.device, last_rx),
            Proto::Http(s) => s.deadline(&config.http, last_rx),
            Proto::Redis(s) => s.deadline(&config.redis, last_rx),
        }
    }

    fn wants_input(&self, config: &Settings) -> bool {
        match self {
            Proto::Device(s) => s.wants_input(&config.device),
            Proto::Http(s) => s.wants_input(&config.http),
            Proto::Redis(s) => s.wants_input(&config.redis),
        }
    }

    fn has_work(&self) -> bool {
        match self {
            Proto::Device(s) => s.has_work(),
            Proto::Http(s) => s.has_work(),
            Proto::Redis(s) => s.has_work(),
        }
    }

    fn idle_since(&self) -> Option<Millis> {
        match self {
            Proto::Device(s) => s.idle_since(),
            Proto::Http(s) => s.idle_since(),
            Proto::Redis(s) => s.idle_since(),
        }
    }

    fn output_limit(&self, config: &Settings) -> OutputLimit {
        match self {
            Proto::Device(s) => s.output_limit(&config.device),
            Proto::Http(s) => s.output_limit(&config.http),
            Proto::Redis(s) => s.output_limit(&config.redis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::Conn;

    #[test]
    fn a_collar_connection_stays_small() {
        // The idle-memory target is ~216 bytes of RSS per identified collar
        // with the slab entry, the MAC index, the timer node and its share of
        // the event ring together. Grow this only with a reason.
        let size = std::mem::size_of::<Conn<Proto>>();
        assert!(size <= 128, "a connection is {size} bytes");
    }
}
