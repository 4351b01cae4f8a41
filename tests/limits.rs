//! Limits and accounting: `--max-line` (with and without a newline ever
//! arriving), `--max-connections` (`BYE server-full`), `--max-output` (a
//! device that does not read is closed as a slow consumer without a torn
//! line), the stats invariant `accepted == held + sum(closed)`, and a smoke
//! test with 5,000 devices.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Gateway, TIMEOUT, closed, config, mac};
use tether::close::CloseReason;
use tether::stats::LineKind;

/// Long enough for a reply or a close to arrive if one were coming.
const NO_REPLY: Duration = Duration::from_millis(50);

fn line_of(len: usize) -> Vec<u8> {
    vec![b'X'; len]
}

#[test]
fn a_line_of_exactly_max_line_bytes_is_accepted() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    // The default --max-line is 1024 bytes, terminator included.
    dev.send(&[line_of(1023), b"\n".to_vec()].concat());
    dev.expect(b"ERR unknown-command\n");
    dev.send(&[line_of(1022), b"\r\n".to_vec()].concat());
    dev.expect(b"ERR unknown-command\n");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::LineTooLong), 0);
}

#[test]
fn a_line_over_max_line_is_told_bye_line_too_long() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    dev.send(&[line_of(1024), b"\n".to_vec()].concat());
    dev.expect(b"BYE line-too-long\n");
    dev.expect_eof();
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::LineTooLong), 1);
}

#[test]
fn a_line_without_newline_is_refused_once_it_reaches_max_line() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    // 1023 bytes could still become a valid line with its `\n`...
    for chunk in line_of(1023).chunks(100) {
        dev.send(chunk);
    }
    dev.expect_silence(NO_REPLY);
    // ...1024 bytes without one cannot.
    dev.send(b"X");
    dev.expect(b"BYE line-too-long\n");
    dev.expect_eof();
}

#[test]
fn max_line_is_configurable_and_applies_before_identify() {
    let mut config = config();
    config.max_line = 16;
    let gw = Gateway::start(config);
    let mut client = gw.connect();
    client.send(&[line_of(15), b"\n".to_vec()].concat());
    client.expect(b"ERR not-identified\n");
    // The lines before the long one are answered, then the BYE.
    client.send(&[b"PING\n".to_vec(), line_of(16), b"\nPING\n".to_vec()].concat());
    client.expect(b"PONG\nBYE line-too-long\n");
    client.expect_eof();
}

#[test]
fn an_endless_line_is_refused_without_waiting_for_a_newline() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    client.send(&line_of(5000));
    client.expect(b"BYE line-too-long\n");
    client.expect_eof();
}

#[test]
fn a_connection_over_max_connections_is_told_server_full() {
    let mut config = config();
    config.max_connections = Some(2);
    let gw = Gateway::start(config);
    let mut a = gw.device(&mac(1));
    let mut b = gw.device(&mac(2));
    let mut c = gw.connect();
    c.expect(b"BYE server-full\n");
    c.expect_eof();
    // The connections held are untouched.
    for dev in [&mut a, &mut b] {
        dev.send(b"PING\n");
        dev.expect(b"PONG\n");
    }
    drop((a, b, c));
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [3, 0]);
    assert_eq!(closed(&stats, CloseReason::ServerFull), 1);
}

/// A device that sends PINGs but never reads the PONGs: once its unsent
/// output passes `--max-output` it is closed as a slow consumer. When it
/// finally reads it finds whole `PONG` lines, then the BYE, then the end.
#[test]
fn a_device_that_does_not_read_is_closed_as_slow_consumer_without_a_torn_line() {
    let mut config = config();
    config.max_output = 4096;
    // The client reads only after the gateway has given up on it; the BYE
    // must still be there to read.
    config.linger_timeout = TIMEOUT;
    let gw = Gateway::start(config);
    let mut client = Client::connect_with_recv_buffer(gw.addr, 4096);
    client.identify(&mac(1));

    let stop = Arc::new(AtomicBool::new(false));
    let mut stream = client.stream.try_clone().unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let writer = thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let chunk = b"PING\n".repeat(1000);
            let mut sent = 0;
            // Bounded: 64 MiB of PINGs answered by 64 MiB of PONGs is far
            // more than the kernel's buffers on both sides can hold.
            while sent < 64 << 20 && !stop.load(Ordering::Relaxed) {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent / b"PING\n".len()
        }
    });
    // The kernel buffers hide when the gateway gives up, so wait for it to
    // say so before reading.
    gw.expect_log("closing: slow-consumer");
    stop.store(true, Ordering::Relaxed);
    let pings = writer.join().unwrap();

    let received = client.read_to_eof();
    let bye = b"BYE slow-consumer\n";
    let tail = &received[received.len().saturating_sub(40)..];
    assert!(received.ends_with(bye), "no BYE at the end: ...{:?}", String::from_utf8_lossy(tail));
    let lines = &received[..received.len() - bye.len()];
    if let Some(torn) = lines.chunks(5).position(|line| line != b"PONG\n") {
        let at = torn * 5;
        panic!(
            "torn line at byte {at} of {}: ...{:?}",
            received.len(),
            String::from_utf8_lossy(&received[at.saturating_sub(20)..(at + 40).min(received.len())])
        );
    }
    let pongs = lines.len() / 5;
    assert!(pongs > 0 && pongs < pings, "{pongs} PONGs for {pings} PINGs");

    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::SlowConsumer), 1);
}

#[test]
fn stats_account_for_every_connection_by_close_reason() {
    let mut config = config();
    config.max_connections = Some(3);
    // Connections told BYE stay held until their peer closes.
    config.linger_timeout = TIMEOUT;
    let gw = Gateway::start(config);
    // Replaced: `b` is taken over by `b2`.
    let mut a = gw.device(&mac(1));
    let mut b = gw.device(&mac(2));
    let b2 = gw.device(&mac(2));
    b.expect(b"BYE replaced\n");
    b.expect_eof();
    // Server full: `b` lingers (this side has not closed), so three are held.
    let mut full = gw.connect();
    full.expect(b"BYE server-full\n");
    full.expect_eof();
    // Line too long.
    a.send(&line_of(2000));
    a.expect(b"BYE line-too-long\n");
    a.expect_eof();
    drop((a, b, full));
    // Shutdown: `b2` is open when the gateway stops, and closes once told.
    let closer = thread::spawn(move || {
        let mut b2 = b2;
        b2.expect(b"BYE shutdown\n");
        b2.expect_eof();
    });
    let stats = gw.stop_drained();
    closer.join().unwrap();
    assert_eq!(stats.accepted, [4, 0]);
    assert_eq!(stats.takeovers, 1);
    for (reason, count) in [
        (CloseReason::Replaced, 1),
        (CloseReason::ServerFull, 1),
        (CloseReason::LineTooLong, 1),
        (CloseReason::Shutdown, 1),
        (CloseReason::PeerClosed, 0),
    ] {
        assert_eq!(closed(&stats, reason), count, "{}: {stats:?}", reason.as_str());
    }
}

#[test]
fn five_thousand_devices_identify_and_ping() {
    const DEVICES: u32 = 5000;
    // Connect in batches, each smaller than the listen backlog, so that a
    // connect never waits for a SYN retry however the accept loop keeps up.
    const BATCH: u32 = 500;
    let gw = Gateway::start(config());
    let started = Instant::now();
    let mut devices = Vec::with_capacity(DEVICES as usize);
    for first in (0..DEVICES).step_by(BATCH as usize) {
        let mut batch: Vec<Client> = (first..DEVICES.min(first + BATCH))
            .map(|i| {
                let mut client = gw.connect();
                client.send(format!("IDENTIFY:{}\n", mac(i)).as_bytes());
                client
            })
            .collect();
        for client in &mut batch {
            client.expect(b"OK\n");
        }
        devices.append(&mut batch);
    }
    for dev in &mut devices {
        dev.send(b"PING\n");
    }
    for dev in &mut devices {
        dev.expect(b"PONG\n");
    }
    println!("{DEVICES} devices identified and pinged in {:?}", started.elapsed());
    drop(devices);
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [u64::from(DEVICES), 0]);
    assert_eq!(stats.lines_in[LineKind::Identify as usize], u64::from(DEVICES));
    assert_eq!(stats.lines_in[LineKind::Ping as usize], u64::from(DEVICES));
    assert_eq!(stats.takeovers, 0);
    assert_eq!(closed(&stats, CloseReason::ServerFull), 0);
}
