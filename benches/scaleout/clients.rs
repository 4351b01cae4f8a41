//! The scale-out bench's clients: a fleet of collars on raw sockets, one
//! collar that answers location queries at once, and an HTTP/1.1 client
//! that keeps its connection alive.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fleet::{CONTROL_TIMEOUT, connect, read_more};

/// Collars connected at once before their `OK`s are read: enough to
/// overlap the round trips, few enough for the listen backlog.
const CHUNK: usize = 256;

/// The MAC of collar `i`, as the directory spells it.
pub fn mac(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("02:00:{:02X}:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2], b[3])
}

/// Connects collars `first..first + n` to `addr`, each identified
/// (`IDENTIFY:<MAC>`, `OK`), in chunks.
pub fn connect_collars(addr: SocketAddr, first: usize, n: usize) -> Result<Vec<TcpStream>, String> {
    let mut collars = Vec::with_capacity(n);
    for start in (first..first + n).step_by(CHUNK) {
        let end = (start + CHUNK).min(first + n);
        let mut chunk = Vec::with_capacity(end - start);
        for i in start..end {
            let mut s = connect(addr)?;
            s.write_all(format!("IDENTIFY:{}\n", mac(i)).as_bytes()).map_err(|e| format!("collar {i}: {e}"))?;
            chunk.push(s);
        }
        for (i, s) in (start..end).zip(&mut chunk) {
            let mut ok = [0u8; 3];
            s.read_exact(&mut ok).map_err(|e| format!("collar {i}: no OK: {e}"))?;
            if &ok != b"OK\n" {
                return Err(format!("collar {i}: {:?} instead of OK", String::from_utf8_lossy(&ok)));
            }
        }
        collars.append(&mut chunk);
    }
    Ok(collars)
}

/// Sends `k` `LOCATION:` lines over `collars` in turn, at `rate` lines a
/// second (0: as fast as the sockets take them). Each line is an event.
pub fn send_locations(collars: &mut [TcpStream], k: usize, rate: u64) -> Result<Duration, String> {
    let start = Instant::now();
    for i in 0..k {
        // Paced in steps of 1 ms: line i is due at i / rate seconds (no
        // due time with a rate of 0).
        if let Some(due) = (i as u64).saturating_mul(1_000_000_000).checked_div(rate)
            && let Some(wait) = Duration::from_nanos(due).checked_sub(start.elapsed())
            && wait >= Duration::from_millis(1)
        {
            std::thread::sleep(wait);
        }
        let n = collars.len();
        let (lat, lon) = (-60.0 + (i % 12_000) as f64 / 100.0, 2.0 + (i / n) as f64 / 1000.0);
        let line = format!("LOCATION:{lat:.4},{lon:.4}\n");
        collars[i % n].write_all(line.as_bytes()).map_err(|e| format!("collar {}: {e}", i % n))?;
    }
    Ok(start.elapsed())
}

/// A collar on its own thread that answers every `location` query with a
/// fix at once and reads (and drops) any other line.
pub struct Answerer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl Answerer {
    pub fn start(addr: SocketAddr, index: usize) -> Result<Answerer, String> {
        let mut s = connect_collars(addr, index, 1)?.pop().expect("one collar");
        s.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut buf, mut answered) = (Vec::new(), 0u64);
            let mut chunk = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                match s.read(&mut chunk) {
                    Ok(0) => return Err("the answering collar was closed".to_string()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                    Err(e) => return Err(format!("the answering collar: {e}")),
                }
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    if &buf[..end] == b"location" {
                        s.write_all(b"LOCATION:48.8566,2.3522\n").map_err(|e| e.to_string())?;
                        answered += 1;
                    }
                    buf.drain(..=end);
                }
            }
            Ok(answered)
        });
        Ok(Answerer { stop, thread: Some(thread) })
    }

    /// Stops the thread and closes the collar; how many queries it answered.
    pub fn stop(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("running").join().map_err(|_| "the answering collar panicked".to_string())?
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// HTTP/1.1 on one kept-alive connection, redialed if the server closed
/// it between requests (counted).
pub struct Http {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    pub redials: u64,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr, stream: None, buf: Vec::new(), redials: 0 }
    }

    /// Sends one request and reads its answer: the status and the body.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n").into_bytes();
        if !body.is_empty() || method == "POST" {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        // One retry on a fresh connection if the kept one was closed.
        for attempt in 0..2 {
            if self.stream.is_none() {
                self.redials += u64::from(attempt > 0);
                self.stream = Some(connect(self.addr)?);
                self.buf.clear();
            }
            let stream = self.stream.as_mut().expect("connected");
            match stream.write_all(&request).map_err(|e| e.to_string()).and_then(|()| self.read_answer()) {
                Ok(answer) => return Ok(answer),
                Err(e) if attempt == 0 && e.contains("closed") => self.stream = None,
                Err(e) => return Err(format!("{method} {path}: {e}")),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// One answer with a `Content-Length` body.
    fn read_answer(&mut self) -> Result<(u16, Vec<u8>), String> {
        let stream = self.stream.as_mut().expect("connected");
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if Instant::now() > deadline {
                return Err("no answer in time".to_string());
            }
            read_more(stream, &mut self.buf)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 =
            head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad head {head:?}"))?;
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        while self.buf.len() < head_end + length {
            read_more(stream, &mut self.buf)?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        if head.lines().any(|l| l.eq_ignore_ascii_case("connection: close")) {
            self.stream = None;
        }
        Ok((status, body))
    }
}
