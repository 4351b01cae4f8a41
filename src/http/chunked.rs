//! Decoding a chunked request body (RFC 9112 7.1), incrementally (sans-IO).
//!
//! A chunked body arrives as `<hex size>[;ext]\r\n<data>\r\n` chunks, a
//! last chunk of size 0, optional trailer fields and a blank line. The
//! decoder is fed the body's bytes as they arrive and remembers how far it
//! got, so a body trickling in byte by byte is decoded in O(n), never
//! rescanned. Chunk-size lines are parsed by `httparse::parse_chunk_size`.
//! The decoded size is capped by `max_body` (413) and the size lines and
//! trailers by `max_head` (431), so a client cannot make the gateway hold
//! more than one request's worth.

use super::request::{Limits, RequestError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data { left: usize },
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one.
    Trailers,
}

/// A chunked body being decoded.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// Bytes of the body as sent (framing included) consumed so far.
    consumed: usize,
    /// Bytes of framing (size lines, trailers) seen, for the limit.
    framing: usize,
    /// The decoded body so far.
    pub body: Vec<u8>,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked { state: State::Size, consumed: 0, framing: 0, body: Vec::new() }
    }
}

impl Chunked {
    /// Decodes what is new in `wire`, the body as sent so far from its first
    /// byte. `Ok(Some(n))` once the body is complete: it took `n` bytes of
    /// `wire`; `Ok(None)` while more is needed.
    pub fn feed(&mut self, wire: &[u8], limits: Limits) -> Result<Option<usize>, RequestError> {
        loop {
            let rest = &wire[self.consumed..];
            match self.state {
                State::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.frame(n, limits)?;
                        if size == 0 {
                            self.state = State::Trailers;
                        } else {
                            let size = usize::try_from(size).map_err(|_| RequestError::BodyTooLarge)?;
                            if self.body.len().saturating_add(size) > limits.max_body {
                                return Err(RequestError::BodyTooLarge);
                            }
                            self.body.reserve(size);
                            self.state = State::Data { left: size };
                        }
                    }
                    Ok(httparse::Status::Partial) => {
                        self.check_pending(rest, limits)?;
                        return Ok(None);
                    }
                    Err(_) => return Err(RequestError::Malformed("invalid chunk size")),
                },
                State::Data { left } => {
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    self.consumed += take;
                    if take < left {
                        self.state = State::Data { left: left - take };
                        return Ok(None);
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        self.frame(2, limits)?;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(None),
                    _ => return Err(RequestError::Malformed("chunk data not followed by CRLF")),
                },
                State::Trailers => {
                    let Some(end) = memchr::memmem::find(rest, b"\r\n") else {
                        self.check_pending(rest, limits)?;
                        return Ok(None);
                    };
                    self.frame(end + 2, limits)?;
                    if end == 0 {
                        return Ok(Some(self.consumed));
                    }
                    // A trailer field: accepted and ignored.
                }
            }
        }
    }

    /// Consumes `n` bytes of framing, within the limit.
    fn frame(&mut self, n: usize, limits: Limits) -> Result<(), RequestError> {
        self.consumed += n;
        self.framing += n;
        if self.framing > limits.max_head { Err(RequestError::HeadTooLarge) } else { Ok(()) }
    }

    /// An unfinished size line or trailer may not grow past the limit.
    fn check_pending(&self, rest: &[u8], limits: Limits) -> Result<(), RequestError> {
        if self.framing + rest.len() > limits.max_head { Err(RequestError::HeadTooLarge) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 64, max_body: 16 };

    /// Feeds `wire` in pieces of `step` bytes; the decoded body and the
    /// length taken, or the error.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), RequestError> {
        let mut chunked = Chunked::default();
        for end in (step..wire.len() + step).step_by(step) {
            if let Some(n) = chunked.feed(&wire[..end.min(wire.len())], LIMITS)? {
                return Ok((chunked.body, n));
            }
        }
        Err(RequestError::Malformed("incomplete"))
    }

    #[test]
    fn decodes_however_the_bytes_arrive() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(decode(wire, step), Ok((b"Wikipedia".to_vec(), wire.len() - 4)), "step {step}");
        }
    }

    #[test]
    fn trailers_are_skipped() {
        let wire = b"3\r\nabc\r\n0\r\nX-Check: 1\r\n\r\n";
        assert_eq!(decode(wire, 1), Ok((b"abc".to_vec(), wire.len())));
    }

    #[test]
    fn an_empty_body() {
        assert_eq!(decode(b"0\r\n\r\n", 1), Ok((Vec::new(), 5)));
    }

    #[test]
    fn limits_and_malformed_framing() {
        assert_eq!(decode(b"11\r\n", 1), Err(RequestError::BodyTooLarge), "17 bytes announced, 16 allowed");
        assert_eq!(decode(b"8\r\n12345678\r\n9\r\n", 1), Err(RequestError::BodyTooLarge), "16 + 9");
        assert_eq!(decode(b"zz\r\n", 1), Err(RequestError::Malformed("invalid chunk size")));
        assert_eq!(decode(b"3\r\nabcX\r\n", 1), Err(RequestError::Malformed("chunk data not followed by CRLF")));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(80));
        assert_eq!(decode(long_trailer.as_bytes(), 1), Err(RequestError::HeadTooLarge));
        let endless = format!("1;{}", "x".repeat(80));
        assert_eq!(decode(endless.as_bytes(), 1), Err(RequestError::HeadTooLarge), "an endless size line");
    }
}
