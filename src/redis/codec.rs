//! RESP on byte slices: commands out, replies in, through the
//! `redis-protocol` crate (sans-IO: it encodes into and decodes from
//! buffers and never sees a socket).
//!
//! A command is an array of bulk strings ([`command`]); a reply is an
//! [`OwnedFrame`], which [`Frame`] reads without a match at every call
//! site.

use redis_protocol::resp2::decode;
use redis_protocol::resp2::encode;
use redis_protocol::resp2::types::BorrowedFrame;
pub use redis_protocol::resp2::types::OwnedFrame;

/// Appends `args` to `out` as one RESP command (an array of bulk strings).
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let parts: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&parts);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer was sized by the frame's own length, so encoding cannot
    // run out of room, and bulk strings have no other way to fail.
    let written = encode::encode_borrowed(&mut out[start..], &frame, false).expect("sized by encode_len");
    out.truncate(start + written);
}

/// The first whole reply in `buf` and the bytes it took; `Ok(None)` when
/// `buf` holds only part of one.
pub fn decode(buf: &[u8]) -> Result<Option<(OwnedFrame, usize)>, String> {
    decode::decode(buf).map_err(|e| e.to_string())
}

/// Reading a reply.
pub trait Frame {
    /// A bulk or simple string's bytes.
    fn bytes(&self) -> Option<&[u8]>;
    /// A string as UTF-8 text.
    fn text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    /// An integer reply, or a string holding one.
    fn int(&self) -> Option<i64>;
    /// An array's elements (an empty slice for anything else).
    fn items(&self) -> &[OwnedFrame];
    /// The message of an error reply.
    fn error(&self) -> Option<&str>;
}

impl Frame for OwnedFrame {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Some(b),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            OwnedFrame::Integer(i) => Some(*i),
            _ => self.text()?.parse().ok(),
        }
    }

    fn items(&self) -> &[OwnedFrame] {
        match self {
            OwnedFrame::Array(items) => items,
            _ => &[],
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            OwnedFrame::Error(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = b"before".to_vec();
        command(&mut out, &[b"SET", b"k", b"a b\r\n"]);
        assert_eq!(out, b"before*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\r\n\r\n");
    }

    #[test]
    fn replies_decode_whole_or_not_at_all() {
        let reply = b"*3\r\n:7\r\n$-1\r\n+OK\r\n-ERR no\r\n";
        for cut in 0..18 {
            assert_eq!(decode(&reply[..cut]).unwrap(), None, "{cut} bytes are not a whole reply");
        }
        let (frame, used) = decode(reply).unwrap().unwrap();
        assert_eq!(used, 18);
        let items = frame.items();
        assert_eq!((items[0].int(), items[1].bytes(), items[2].text()), (Some(7), None, Some("OK")));
        let (error, _) = decode(&reply[used..]).unwrap().unwrap();
        assert_eq!(error.error(), Some("ERR no"));
        assert!(decode(b"?what\r\n").is_err());
    }
}
