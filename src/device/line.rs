//! Line framing for the device protocol: bytes in, lines out (sans-IO).
//!
//! TCP delivers a byte stream, not messages: one read may hold many lines,
//! part of a line, or a single byte. [`LineFramer::feed`] takes whatever a
//! read returned and calls back once per complete line, however the stream
//! was split. Lines end with `\n`; one `\r` before it is stripped.
//!
//! Complete lines are handed out as slices of the caller's buffer (no copy).
//! Only the unfinished tail of a read is copied into the framer, and the
//! framer frees that copy as soon as the line completes, so a connection
//! with no partial line holds no heap memory. Each byte is scanned for `\n`
//! once: the held tail is never rescanned when more bytes arrive, so a long
//! line trickling in byte by byte costs O(n), not O(n²).
//!
//! The consumer may stop the framing after any line (its answers are
//! backing up, say): the rest of the read is then put off, and
//! [`LineFramer::resume`] hands it out later. A read is at most 64 KiB, so
//! that is what a connection may hold while it waits.
//!
//! A line longer than the limit is refused as soon as it is known to be too
//! long, without waiting for its end, so a peer cannot make the gateway
//! buffer more than `max_line` bytes of one line.

use std::ops::ControlFlow;

/// A line (terminator included) exceeded `max_line` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// The framing state of one connection: bytes received and not framed yet.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// `None` while nothing is held. Boxed: most of the time nothing is, and
    /// one pointer instead of a `Vec`'s three words saves 16 bytes on every
    /// idle collar.
    held: Option<Box<Held>>,
}

#[derive(Debug)]
struct Held {
    /// Without put-off lines: the start of a line whose end has not arrived
    /// (no `\n`, shorter than `max_line`). With them: the rest of a read
    /// whose framing was stopped, whole lines first.
    bytes: Vec<u8>,
    put_off: bool,
}

/// How far [`frame`] got through its input.
enum Framed {
    /// Every whole line was handed out; the unfinished tail starts here.
    All(usize),
    /// The consumer stopped after the line that ends here.
    Stopped(usize),
}

impl LineFramer {
    /// Bytes held, for an unfinished line or put off.
    pub fn pending(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes.len())
    }

    /// Whether lines were put off and wait for [`LineFramer::resume`].
    pub fn holds_lines(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.put_off)
    }

    /// Frames `input`, calling `on_line` for each complete line (without its
    /// terminator) in order. `max_line` bounds a line including its `\n`.
    /// Must not be called while lines are put off (see
    /// [`LineFramer::holds_lines`]): input would overtake them.
    ///
    /// When `on_line` breaks, the rest of `input` is put off for
    /// [`LineFramer::resume`]. Returns `Err(LineTooLong)` once a line is
    /// known to exceed the limit; the framer is then in an unspecified state
    /// and the stream must be closed.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        max_line: usize,
        mut on_line: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), LineTooLong> {
        debug_assert!(!self.holds_lines(), "input fed behind put-off lines");
        // Finish the line held from earlier reads, if any. Only the new
        // bytes are scanned for the terminator.
        if let Some(held) = &mut self.held {
            let partial = &mut held.bytes;
            let Some(end) = memchr::memchr(b'\n', input) else {
                if partial.len() + input.len() >= max_line {
                    return Err(LineTooLong);
                }
                partial.extend_from_slice(input);
                return Ok(());
            };
            if partial.len() + end + 1 > max_line {
                return Err(LineTooLong);
            }
            partial.extend_from_slice(&input[..end]);
            let flow = on_line(strip_cr(partial));
            // Free the buffer: between lines a connection holds no heap memory.
            self.held = None;
            input = &input[end + 1..];
            if flow.is_break() {
                self.put_off(input);
                return Ok(());
            }
        }
        match frame(input, max_line, on_line)? {
            Framed::All(start) if start < input.len() => {
                self.held = Some(Box::new(Held { bytes: input[start..].to_vec(), put_off: false }));
            }
            Framed::All(_) => {}
            Framed::Stopped(start) => self.put_off(&input[start..]),
        }
        Ok(())
    }

    /// Frames the lines put off by a consumer that stopped, as
    /// [`LineFramer::feed`] does (and it may stop again).
    pub fn resume(
        &mut self,
        max_line: usize,
        on_line: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), LineTooLong> {
        let Some(mut held) = self.held.take_if(|h| h.put_off) else { return Ok(()) };
        let done = match frame(&held.bytes, max_line, on_line)? {
            Framed::All(start) => {
                held.put_off = false;
                start
            }
            Framed::Stopped(start) => start,
        };
        held.bytes.drain(..done);
        if !held.bytes.is_empty() {
            self.held = Some(held);
        }
        Ok(())
    }

    fn put_off(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.held = Some(Box::new(Held { bytes: rest.to_vec(), put_off: true }));
        }
    }
}

/// Hands out the whole lines of `input` until the consumer stops; refuses a
/// line (or an unfinished tail) over `max_line`.
fn frame(
    input: &[u8],
    max_line: usize,
    mut on_line: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> Result<Framed, LineTooLong> {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', input) {
        if end - start + 1 > max_line {
            return Err(LineTooLong);
        }
        let flow = on_line(strip_cr(&input[start..end]));
        start = end + 1;
        if flow.is_break() {
            return Ok(Framed::Stopped(start));
        }
    }
    if input.len() - start >= max_line {
        return Err(LineTooLong);
    }
    Ok(Framed::All(start))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` in order and collects the lines, or the error.
    fn frame(chunks: &[&[u8]], max_line: usize) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut framer = LineFramer::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            framer.feed(chunk, max_line, |line| {
                lines.push(line.to_vec());
                ControlFlow::Continue(())
            })?;
        }
        Ok(lines)
    }

    fn lines(expected: &[&str]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        Ok(expected.iter().map(|l| l.as_bytes().to_vec()).collect())
    }

    #[test]
    fn many_lines_in_one_read() {
        assert_eq!(frame(&[b"PING\nPONG\nIDENTIFY:x\n"], 64), lines(&["PING", "PONG", "IDENTIFY:x"]));
    }

    #[test]
    fn one_line_over_many_reads() {
        assert_eq!(frame(&[b"LOC", b"ATION:1", b",2", b"\n"], 64), lines(&["LOCATION:1,2"]));
    }

    #[test]
    fn one_byte_per_read() {
        let stream = b"PING\r\nOK\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame(&chunks, 64), lines(&["PING", "OK"]));
    }

    #[test]
    fn strips_one_carriage_return_only_before_the_newline() {
        assert_eq!(frame(&[b"A\r\r\nB\rC\n\r\n"], 64), lines(&["A\r", "B\rC", ""]));
    }

    #[test]
    fn a_partial_line_is_held_and_freed_when_complete() {
        let mut framer = LineFramer::default();
        framer.feed(b"PI", 64, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(framer.pending(), 2);
        framer.feed(b"NG\n", 64, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(framer.pending(), 0);
        assert!(framer.held.is_none(), "no heap memory between lines");
    }

    #[test]
    fn the_limit_counts_the_terminator() {
        // max_line 5: "ABCD\n" is 5 bytes and fits; "ABCDE\n" does not.
        assert_eq!(frame(&[b"ABCD\n"], 5), lines(&["ABCD"]));
        assert_eq!(frame(&[b"ABCDE\n"], 5), Err(LineTooLong));
        assert_eq!(frame(&[b"AB", b"CD\n"], 5), lines(&["ABCD"]));
        assert_eq!(frame(&[b"AB", b"CDE\n"], 5), Err(LineTooLong));
    }

    #[test]
    fn an_overlong_line_is_refused_before_its_end_arrives() {
        // Five bytes with no newline can never become a valid 5-byte line.
        assert_eq!(frame(&[b"ABCDE"], 5), Err(LineTooLong));
        assert_eq!(frame(&[b"AB", b"CDE"], 5), Err(LineTooLong));
        assert_eq!(frame(&[b"ABCD"], 5), Ok(vec![]));
    }

    #[test]
    fn a_stop_puts_the_rest_off_until_resumed() {
        let mut framer = LineFramer::default();
        let mut seen = Vec::new();
        let stop_after = |line: &[u8], seen: &mut Vec<Vec<u8>>| {
            seen.push(line.to_vec());
            if line == b"B" || line == b"D" { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        framer.feed(b"A\nB\nC\nD\nE\nF", 64, |line| stop_after(line, &mut seen)).unwrap();
        assert_eq!(seen, [&b"A"[..], b"B"]);
        assert!(framer.holds_lines());
        framer.resume(64, |line| stop_after(line, &mut seen)).unwrap();
        assert_eq!(seen, [&b"A"[..], b"B", b"C", b"D"]);
        framer.resume(64, |line| stop_after(line, &mut seen)).unwrap();
        assert_eq!(seen.len(), 5, "E");
        assert!(!framer.holds_lines() && framer.pending() == 1, "F is a partial line now");
        framer.feed(b"\n", 64, |line| stop_after(line, &mut seen)).unwrap();
        assert_eq!(seen.last().unwrap(), b"F");
        assert!(framer.held.is_none());
    }

    /// Splits `stream` at the given cut points.
    fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&stream[start..cut]);
            start = cut;
        }
        chunks.push(&stream[start..]);
        chunks
    }

    /// Frames `stream` in `chunks`, stopping after every line whose index
    /// is in `stops` and resuming (before the next read) until nothing is put
    /// off.
    fn frame_with_stops(chunks: &[&[u8]], stops: &[usize], max_line: usize) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut framer = LineFramer::default();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut on_line = |line: &[u8]| {
            lines.push(line.to_vec());
            if stops.contains(&(lines.len() - 1)) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        for chunk in chunks {
            framer.feed(chunk, max_line, &mut on_line)?;
            while framer.holds_lines() {
                framer.resume(max_line, &mut on_line)?;
            }
        }
        Ok(lines)
    }

    proptest! {
        /// Stopping and resuming anywhere changes nothing in what is framed.
        #[test]
        fn stops_and_resumes_yield_the_same_lines(
            stream in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'A'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            stops in proptest::collection::vec(0usize..100, 0..20),
            max_line in 1usize..48,
        ) {
            let chunks = split(&stream, &cuts);
            prop_assert_eq!(frame_with_stops(&chunks, &stops, max_line), frame(&chunks, max_line));
        }

        /// Any split of a byte stream into reads yields the same lines, and
        /// the same verdict on an overlong line.
        #[test]
        fn any_split_yields_the_same_lines(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'A'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
            max_line in 1usize..48,
        ) {
            let whole = frame(&[&stream], max_line);
            let pieces = frame(&split(&stream, &cuts), max_line);
            prop_assert_eq!(&pieces, &whole);
            // And the lines are what a naive splitter finds.
            let mut naive: Vec<Vec<u8>> = stream.split(|&b| b == b'\n').map(|l| strip_cr(l).to_vec()).collect();
            let tail = naive.pop().unwrap_or_default();
            let too_long = stream.split(|&b| b == b'\n').any(|l| l.len() + 1 > max_line)
                || tail.len() >= max_line;
            if too_long {
                prop_assert_eq!(whole, Err(LineTooLong));
            } else {
                prop_assert_eq!(whole, Ok(naive));
            }
        }
    }
}
