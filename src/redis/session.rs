//! A link to Redis as a reactor [`Session`]: bytes in, replies out as
//! effects, nothing else.
//!
//! The session only frames: it gathers input until a whole RESP reply is
//! there and hands each reply to the hub ([`LinkEvent::Frame`]), in order.
//! What a reply answers (the commands were pipelined by the hub, and
//! Redis answers in order) and when one is overdue are the hub's business
//! (`crate::hub::cluster`), which also writes the commands, through the
//! reactor, to this connection's output. A reply larger than
//! `--redis-max-reply` or bytes that are not RESP close the link
//! (`protocol-error`); the hub then reconnects.

use crate::close::CloseReason;
use crate::effect::{Effect, LinkEvent, Reply};
use crate::reactor::{Cx, Next, OutputLimit, Session};
use crate::time::Millis;

use super::codec;

/// The Redis link's settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Longest reply accepted (`--redis-max-reply`).
    pub max_reply: usize,
    /// Most unsent commands held before the hub is refused
    /// (`--redis-max-output`).
    pub max_output: usize,
}

impl Default for RedisSettings {
    fn default() -> RedisSettings {
        RedisSettings { max_reply: 64 << 20, max_output: 64 << 20 }
    }
}

/// One Redis connection's input side.
#[derive(Debug, Default)]
pub struct RedisSession {
    /// Input not yet a whole reply. Emptied (and its allocation freed when
    /// large) as replies are taken.
    inbuf: Vec<u8>,
}

/// Kept when a reply is taken, so that a link that carries replies all day
/// does not allocate for each; a larger buffer is given back.
const KEEP: usize = 64 * 1024;

impl RedisSession {
    pub fn new() -> RedisSession {
        RedisSession::default()
    }

    /// Input held that is not a whole reply yet.
    pub fn held(&self) -> usize {
        self.inbuf.len()
    }

    /// Takes every whole reply out of `inbuf`.
    fn frames(&mut self, effects: &mut Vec<Effect>, max_reply: usize) -> Next {
        let mut used = 0;
        let next = loop {
            match codec::decode(&self.inbuf[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    effects.push(Effect::Link(LinkEvent::Frame(frame)));
                }
                Ok(None) if self.inbuf.len() - used > max_reply => {
                    log::warn!("redis: a reply over --redis-max-reply ({max_reply} bytes): closing the link");
                    break Next::Close(CloseReason::ProtocolError);
                }
                Ok(None) => break Next::Continue,
                Err(e) => {
                    log::warn!("redis: not RESP ({e}): closing the link");
                    break Next::Close(CloseReason::ProtocolError);
                }
            }
        };
        self.inbuf.drain(..used);
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP {
            self.inbuf = Vec::new();
        }
        next
    }
}

impl Session for RedisSession {
    type Config = RedisSettings;
    type Effect = Effect;
    type Reply = Reply;

    fn on_input(&mut self, input: &[u8], cx: &mut Cx<'_, RedisSettings, Effect>) -> Next {
        self.inbuf.extend_from_slice(input);
        self.frames(cx.effects, cx.config.max_reply)
    }

    /// Nothing is ever asked of the hub by a link and answered.
    fn on_reply(&mut self, _reply: Reply, _cx: &mut Cx<'_, RedisSettings, Effect>) -> Next {
        Next::Continue
    }

    /// The hub keeps the deadlines of what it asked.
    fn on_deadline(&mut self, _cx: &mut Cx<'_, RedisSettings, Effect>) -> Next {
        Next::Continue
    }

    /// Every other connection has closed: the hub closes the link once
    /// what it owes Redis (releasing the directory entries) is answered.
    fn on_drain(&mut self, cx: &mut Cx<'_, RedisSettings, Effect>) -> Next {
        cx.effects.push(Effect::Link(LinkEvent::Drain));
        Next::Continue
    }

    fn on_close(&mut self, reason: CloseReason, cx: &mut Cx<'_, RedisSettings, Effect>) {
        cx.effects.push(Effect::Link(LinkEvent::Closed(reason)));
    }

    fn deadline(&self, _config: &RedisSettings, _last_rx: Millis) -> Option<Millis> {
        None
    }

    fn output_limit(&self, config: &RedisSettings) -> OutputLimit {
        OutputLimit::PauseAbove(config.max_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::session::Parts;
    use crate::redis::codec::OwnedFrame;

    fn feed(session: &mut RedisSession, parts: &mut Parts<Effect>, settings: &RedisSettings, bytes: &[u8]) -> Next {
        let mut cx = parts.cx(settings, 0, 0);
        session.on_input(bytes, &mut cx)
    }

    #[test]
    fn replies_come_out_whole_and_in_order_however_the_bytes_are_split() {
        let settings = RedisSettings::default();
        let input = b"+OK\r\n*2\r\n$7\r\nmessage\r\n:3\r\n$-1\r\n";
        for split in 0..input.len() {
            let (mut session, mut parts) = (RedisSession::new(), Parts::default());
            assert_eq!(feed(&mut session, &mut parts, &settings, &input[..split]), Next::Continue);
            assert_eq!(feed(&mut session, &mut parts, &settings, &input[split..]), Next::Continue);
            let frames: Vec<_> = parts
                .effects
                .drain(..)
                .map(|e| match e {
                    Effect::Link(LinkEvent::Frame(f)) => f,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                frames,
                vec![
                    OwnedFrame::SimpleString(b"OK".to_vec()),
                    OwnedFrame::Array(vec![OwnedFrame::BulkString(b"message".to_vec()), OwnedFrame::Integer(3)]),
                    OwnedFrame::Null,
                ],
                "split at {split}"
            );
            assert!(session.inbuf.is_empty());
        }
    }

    #[test]
    fn garbage_and_oversized_replies_close_the_link() {
        let settings = RedisSettings { max_reply: 16, max_output: 1 };
        let (mut session, mut parts) = (RedisSession::new(), Parts::default());
        assert_eq!(feed(&mut session, &mut parts, &settings, b"hello\r\n"), Next::Close(CloseReason::ProtocolError));
        let (mut session, mut parts) = (RedisSession::new(), Parts::default());
        assert_eq!(feed(&mut session, &mut parts, &settings, b"$100\r\n0123456789"), Next::Continue);
        assert_eq!(
            feed(&mut session, &mut parts, &settings, b"0123456789"),
            Next::Close(CloseReason::ProtocolError),
            "20 bytes of a reply still incomplete, over 16"
        );
        assert_eq!(session.output_limit(&settings), OutputLimit::PauseAbove(1));
    }
}
