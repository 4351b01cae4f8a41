//! Connection deadlines, with durations of a few hundred milliseconds: the
//! handshake timeout, the heartbeat PING and its timeout, the idle timeout,
//! what counts as liveness (any byte, even of an unfinished line), a zero
//! duration disabling a deadline, the linger after a `BYE`, and the reset
//! that ends a connection presumed dead (heartbeat timeout, idle).
//!
//! Each test starts from [`quiet`] (every deadline off) and turns on only
//! the ones it checks. Events are awaited with reads; "not yet" is asserted
//! with silence windows well inside the deadline.

mod common;

use std::thread;
use std::time::Duration;

use common::{Gateway, closed, config, mac};
use tether::close::CloseReason;
use tether::{Config, Exit};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The test config with every device deadline disabled.
fn quiet() -> Config {
    let mut config = config();
    config.handshake_timeout = Duration::ZERO;
    config.heartbeat_interval = Duration::ZERO;
    config.heartbeat_timeout = Duration::ZERO;
    config.idle_timeout = Duration::ZERO;
    config
}

#[test]
fn no_identify_in_time_is_told_bye_handshake_timeout() {
    let mut config = quiet();
    config.handshake_timeout = ms(250);
    let gw = Gateway::start(config);
    let mut client = gw.connect();
    client.expect_silence(ms(100));
    client.expect(b"BYE handshake-timeout\n");
    client.expect_eof();
    drop(client);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HandshakeTimeout), 1);
}

#[test]
fn pings_do_not_extend_the_handshake() {
    let mut config = quiet();
    config.handshake_timeout = ms(250);
    let gw = Gateway::start(config);
    let mut client = gw.connect();
    // A PING every 50 ms: if PINGs reset the handshake deadline it would
    // never pass while this runs (2 s, eight handshake timeouts).
    let mut pings = 0;
    loop {
        assert!(pings < 40, "still no handshake timeout after {pings} PINGs in 50 ms steps");
        client.send(b"PING\n");
        pings += 1;
        match client.read_line().as_str() {
            "PONG\n" => thread::sleep(ms(50)),
            "BYE handshake-timeout\n" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    client.expect_eof();
}

#[test]
fn a_bad_mac_leaves_the_handshake_deadline_running() {
    let mut config = quiet();
    config.handshake_timeout = ms(250);
    let gw = Gateway::start(config);
    let mut client = gw.connect();
    client.send(b"IDENTIFY:not-a-mac\n");
    client.expect(b"ERR bad-mac\n");
    client.expect(b"BYE handshake-timeout\n");
    client.expect_eof();
}

#[test]
fn identify_in_time_ends_the_handshake_deadline() {
    let mut config = quiet();
    config.handshake_timeout = ms(100);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    // Well past the handshake deadline: still open and answering.
    dev.expect_silence(ms(250));
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
}

#[test]
fn silence_brings_a_heartbeat_ping_and_each_answer_restarts_the_interval() {
    let mut config = quiet();
    config.heartbeat_interval = ms(250);
    config.heartbeat_timeout = ms(5000);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect_silence(ms(100));
    dev.expect_within(b"PING\n", ms(1000));
    for _ in 0..2 {
        dev.send(b"PONG\n");
        // The next PING is due an interval (250 ms) after the answer, long
        // before the heartbeat timeout (5 s) that waited for the answer.
        dev.expect_silence(ms(100));
        dev.expect_within(b"PING\n", ms(1000));
    }
    drop(dev);
    let stats = gw.stop_drained();
    assert!(stats.heartbeat_pings >= 3, "{stats:?}");
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 0);
}

#[test]
fn with_heartbeat_timeout_zero_answered_pings_keep_coming() {
    let mut config = quiet();
    config.heartbeat_interval = ms(200);
    // 0: an unanswered PING never closes the connection.
    config.heartbeat_timeout = Duration::ZERO;
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect_within(b"PING\n", ms(1000));
    dev.send(b"PONG\n");
    dev.expect_within(b"PING\n", ms(1000));
}

#[test]
fn an_unanswered_heartbeat_closes_without_bye() {
    let mut config = quiet();
    config.heartbeat_interval = ms(150);
    config.heartbeat_timeout = ms(300);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect(b"PING\n");
    dev.expect_silence(ms(100));
    // Presumed dead: closed with no BYE, and abortively.
    dev.expect_reset();
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 1);
    assert_eq!(stats.heartbeat_pings, 1);
}

#[test]
fn a_partial_line_answers_the_heartbeat() {
    let mut config = quiet();
    config.heartbeat_interval = ms(300);
    config.heartbeat_timeout = ms(60);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect(b"PING\n");
    // Half a line, no newline: it still shows the device is alive, so the
    // heartbeat timeout (60 ms) passes without a close...
    dev.send(b"PO");
    dev.expect_silence(ms(150));
    // ...and the next PING comes an interval after those bytes.
    dev.expect(b"PING\n");
    dev.send(b"NG\nPING\n");
    dev.expect(b"PONG\n");
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HeartbeatTimeout), 0);
}

#[test]
fn silence_for_the_idle_timeout_is_told_bye_idle_then_reset() {
    let mut config = quiet();
    config.idle_timeout = ms(250);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    dev.expect_silence(ms(100));
    dev.expect(b"BYE idle\n");
    // Presumed dead: closed abortively once the BYE is out.
    dev.expect_reset();
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::Idle), 1);
}

#[test]
fn bytes_of_an_unfinished_line_keep_a_device_from_going_idle() {
    let mut config = quiet();
    config.idle_timeout = ms(300);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    // One byte every 80 ms, 400 ms in all: more than the idle timeout
    // without a complete line, but never 300 ms without a byte.
    for byte in b"PING\n" {
        thread::sleep(ms(80));
        dev.send(&[*byte]);
    }
    dev.expect(b"PONG\n");
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::Idle), 0);
}

#[test]
fn lines_keep_a_device_from_going_idle() {
    let mut config = quiet();
    config.idle_timeout = ms(250);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    // A line every 80 ms, 320 ms in all.
    for line in [&b"PONG\n"[..], b"LOCATION:1,2\n", b"\n", b"HELLO\n"] {
        thread::sleep(ms(80));
        dev.send(line);
    }
    dev.expect(b"ERR unknown-command\nERR unknown-command\n");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    // And once it falls silent, the idle timeout still applies.
    dev.expect(b"BYE idle\n");
    dev.expect_eof();
}

#[test]
fn zero_disables_every_deadline() {
    let mut config = quiet();
    config.heartbeat_timeout = ms(50);
    let gw = Gateway::start(config);
    let mut client = gw.connect();
    client.expect_silence(ms(200));
    client.identify(&mac(1));
    client.expect_silence(ms(200));
    client.send(b"PING\n");
    client.expect(b"PONG\n");
}

#[test]
fn heartbeat_off_leaves_the_idle_timeout_in_force() {
    let mut config = quiet();
    config.heartbeat_timeout = ms(50);
    config.idle_timeout = ms(200);
    let gw = Gateway::start(config);
    let mut dev = gw.device(&mac(1));
    // No heartbeat PING first: straight to the idle BYE.
    dev.expect(b"BYE idle\n");
    dev.expect_eof();
}

#[test]
fn after_a_bye_the_gateway_lingers_for_the_linger_timeout_only() {
    let mut config = quiet();
    config.handshake_timeout = ms(100);
    config.linger_timeout = ms(200);
    config.drain_timeout = Duration::from_secs(5);
    let gw = Gateway::start(config);
    let mut dev = gw.connect();
    dev.expect(b"BYE handshake-timeout\n");
    dev.expect_fin();
    // Our side stays open. Input is still read (and ignored) while lingering.
    dev.send(b"PING\n");
    // The drain waits for the lingering connection; only its linger
    // deadline can free it before the 5 s drain timeout.
    let (exit, stats) = gw.stop();
    assert_eq!(exit, Exit::Drained, "{stats:?}");
    common::assert_all_closed(&stats);
    assert_eq!(closed(&stats, CloseReason::HandshakeTimeout), 1);
    drop(dev);
}

#[test]
fn the_peer_closing_after_a_bye_ends_the_linger() {
    let mut config = quiet();
    config.handshake_timeout = ms(100);
    config.linger_timeout = Duration::from_secs(60);
    config.drain_timeout = Duration::from_secs(5);
    let gw = Gateway::start(config);
    let mut dev = gw.connect();
    dev.expect(b"BYE handshake-timeout\n");
    dev.expect_fin();
    drop(dev);
    // With a 60 s linger, only our close can have freed the connection
    // before the 5 s drain timeout.
    let (exit, stats) = gw.stop();
    assert_eq!(exit, Exit::Drained, "{stats:?}");
    common::assert_all_closed(&stats);
}
