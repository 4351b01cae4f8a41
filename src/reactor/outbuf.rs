//! A connection's unsent output.
//!
//! Handlers never write to a socket: they append to the connection's
//! [`OutBuf`], and the flush phase at the end of the turn writes each
//! pending connection once. Most of the time the kernel takes everything
//! at once and the buffer is empty again, so an empty `OutBuf` is one null
//! pointer that owns no memory: an idle connection holds no output buffer.
//! Emptied buffers go back to a small [`Pool`] rather than to the
//! allocator, so a busy connection does not pay a `malloc`/`free` pair per
//! turn.

/// Bytes accepted for sending that the kernel has not taken yet.
#[derive(Debug, Default)]
pub struct OutBuf {
    pending: Option<Box<Pending>>,
}

#[derive(Debug)]
struct Pending {
    buf: Vec<u8>,
    /// Bytes of `buf` already written; always `< buf.len()` while held.
    sent: usize,
    /// The bytes already on the wire end in the middle of a line, which the
    /// first unsent byte continues.
    mid_line: bool,
}

/// Emptied output buffers kept for reuse.
#[derive(Debug, Default)]
pub struct Pool {
    // The boxes are what is reused: an `OutBuf` holds one.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Pending>>,
}

/// Buffers larger than this are returned to the allocator, not pooled.
const POOLED_CAPACITY: usize = 64 * 1024;
/// Most buffers the pool keeps.
const POOLED: usize = 256;

impl OutBuf {
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.buf.len() - p.sent)
    }

    /// The unsent bytes, in order.
    pub fn pending(&self) -> &[u8] {
        self.pending.as_ref().map_or(&[], |p| &p.buf[p.sent..])
    }

    /// Appends `bytes` behind those already pending, taking a buffer from
    /// `pool` if this one owns none yet.
    pub fn push(&mut self, bytes: &[u8], pool: &mut Pool) {
        if bytes.is_empty() {
            return;
        }
        let p = self.pending.get_or_insert_with(|| pool.take());
        // Reclaim the sent prefix before growing, rather than growing
        // behind bytes that are already gone.
        if p.sent > 0 && p.buf.len() + bytes.len() > p.buf.capacity() {
            p.buf.drain(..p.sent);
            p.sent = 0;
        }
        p.buf.extend_from_slice(bytes);
    }

    /// Lends the buffer to a writer that appends to it directly (a JSON
    /// serializer, an event renderer); `write` returns what it appended.
    pub fn append_with<T>(&mut self, pool: &mut Pool, write: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        let p = self.pending.get_or_insert_with(|| pool.take());
        // Reclaim the sent prefix first: the writer may append a lot.
        if p.sent > 0 {
            p.buf.drain(..p.sent);
            p.sent = 0;
        }
        let before = p.buf.len();
        let result = write(&mut p.buf);
        if p.buf.len() == before && before == 0 {
            // Nothing was appended to an empty buffer: give it back.
            self.release(pool);
        }
        result
    }

    /// Marks `n` more bytes as written; the buffer goes back to `pool`
    /// once all are.
    pub fn consume(&mut self, n: usize, pool: &mut Pool) {
        let Some(p) = &mut self.pending else { return };
        p.sent += n;
        debug_assert!(p.sent <= p.buf.len());
        if p.sent >= p.buf.len() {
            self.release(pool);
        } else if n > 0 {
            p.mid_line = p.buf[p.sent - 1] != b'\n';
        }
    }

    /// Drops every unsent byte.
    pub fn clear(&mut self, pool: &mut Pool) {
        self.release(pool);
    }

    /// Drops every unsent line that has not started to go out, keeping the
    /// rest of a line the kernel has taken part of, so the peer never sees a
    /// torn line. Used before a last `BYE` to a peer that does not read.
    pub fn keep_started_line(&mut self, pool: &mut Pool) {
        let Some(p) = &mut self.pending else { return };
        if !p.mid_line {
            return self.release(pool);
        }
        let end = memchr::memchr(b'\n', &p.buf[p.sent..]).map_or(p.buf.len(), |i| p.sent + i + 1);
        p.buf.truncate(end);
        p.buf.drain(..p.sent);
        p.sent = 0;
    }

    fn release(&mut self, pool: &mut Pool) {
        if let Some(p) = self.pending.take() {
            pool.give(p);
        }
    }
}

impl Pool {
    fn take(&mut self) -> Box<Pending> {
        self.free.pop().unwrap_or_else(|| Box::new(Pending { buf: Vec::new(), sent: 0, mid_line: false }))
    }

    fn give(&mut self, mut p: Box<Pending>) {
        if self.free.len() < POOLED && p.buf.capacity() <= POOLED_CAPACITY {
            p.buf.clear();
            p.sent = 0;
            p.mid_line = false;
            self.free.push(p);
        }
    }

    /// Buffers held for reuse.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_buf_tracks_what_was_sent_and_frees_when_done() {
        let mut pool = Pool::default();
        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\n", &mut pool);
        out.consume(3, &mut pool);
        assert_eq!(out.pending(), b"G\nPONG\n");
        assert_eq!(out.len(), 7);
        out.push(b"OK\n", &mut pool);
        assert_eq!(out.pending(), b"G\nPONG\nOK\n");
        out.consume(10, &mut pool);
        assert!(out.is_empty());
        assert!(out.pending.is_none(), "no allocation once flushed");
        assert_eq!(pool.len(), 1, "the buffer went back to the pool");
        out.push(b"OK\n", &mut pool);
        assert!(pool.is_empty(), "and was taken from it again");
    }

    #[test]
    fn keep_started_line_drops_only_unstarted_lines() {
        let mut pool = Pool::default();
        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\nPONG\n", &mut pool);
        out.consume(7, &mut pool); // "PONG\nPO" went out
        out.keep_started_line(&mut pool);
        assert_eq!(out.pending(), b"NG\n");

        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\n", &mut pool);
        out.consume(5, &mut pool); // a whole line went out
        out.keep_started_line(&mut pool);
        assert!(out.is_empty());

        let mut out = OutBuf::default();
        out.push(b"PONG\n", &mut pool);
        out.keep_started_line(&mut pool);
        assert!(out.is_empty(), "nothing started");
    }

    #[test]
    fn reclaiming_the_sent_prefix_remembers_a_started_line() {
        let mut pool = Pool::default();
        let mut out = OutBuf::default();
        out.push(b"PONG\nPONG\n", &mut pool);
        out.consume(7, &mut pool); // "PONG\nPO" went out
        out.push(&[b'x'; 64], &mut pool); // forces the sent prefix to be reclaimed
        out.keep_started_line(&mut pool);
        assert_eq!(out.pending(), b"NG\n");
    }

    #[test]
    fn append_with_lends_the_buffer_and_takes_nothing_for_nothing() {
        let mut pool = Pool::default();
        let mut out = OutBuf::default();
        let n = out.append_with(&mut pool, |buf| {
            buf.extend_from_slice(b"{}");
            2
        });
        assert_eq!((n, out.pending()), (2, &b"{}"[..]));
        let mut empty = OutBuf::default();
        empty.append_with(&mut pool, |_| ());
        assert!(empty.pending.is_none(), "an empty append leaves no buffer behind");
    }
}
