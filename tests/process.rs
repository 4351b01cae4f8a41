//! The real binary: graceful shutdown on SIGTERM/SIGINT (`BYE shutdown`,
//! device listener closed, HTTP listener open with `/health` draining,
//! exit 0, drain timeout), a second signal forcing the exit (143 / 130)
//! and saying so on stderr, running out of file descriptors (EMFILE)
//! without crashing, spinning or losing a connection (and counting it in
//! `/metrics`), the command line (`--help`, a bad duration, the API token
//! from the environment, host names as listen addresses), and what it
//! logs at start-up and shutdown, word for word.

mod common;

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use common::{Client, HttpClient, Process, json_response, mac, metric, tether_command};

#[test]
fn sigterm_tells_every_device_bye_shutdown_and_exits_zero() {
    let mut tether = Process::start(&[], None);
    let mut devices: Vec<Client> = (0..3).map(|i| tether.device(&mac(i))).collect();
    tether.signal(libc::SIGTERM);
    for dev in &mut devices {
        dev.expect(b"BYE shutdown\n");
        dev.expect_eof();
    }
    drop(devices);
    let status = tether.wait();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn after_the_first_signal_new_connections_are_refused() {
    let mut tether = Process::start(&[], None);
    let mut dev = tether.device(&mac(1));
    tether.signal(libc::SIGTERM);
    // The listener is closed before anyone is told BYE.
    dev.expect(b"BYE shutdown\n");
    let refused = TcpStream::connect(tether.addr).map(|_| ()).expect_err("connected after the stop signal");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused}");
    dev.expect_eof();
    drop(dev);
    assert_eq!(tether.wait().code(), Some(0));
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut tether = Process::start(&[], None);
    let mut dev = tether.device(&mac(1));
    tether.signal(libc::SIGINT);
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    drop(dev);
    assert_eq!(tether.wait().code(), Some(0));
}

#[test]
fn drain_timeout_exits_zero_even_if_a_device_never_closes() {
    let mut tether = Process::start(&["--drain-timeout", "300ms", "--linger-timeout", "60s"], None);
    let mut dev = tether.device(&mac(1));
    tether.signal(libc::SIGTERM);
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    // `dev` stays open.
    let status = tether.wait();
    assert_eq!(status.code(), Some(0), "{status}");
    tether.expect_log("drain timeout");
    drop(dev);
}

/// Starts a gateway that would drain for a minute, with one device that
/// holds its connection open after the first `signal`.
fn draining(signal: i32) -> (Process, Client) {
    let tether = Process::start(&["--drain-timeout", "60s", "--linger-timeout", "60s"], None);
    let mut dev = tether.device(&mac(1));
    tether.signal(signal);
    // The first signal has been handled: the drain is under way.
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    (tether, dev)
}

#[test]
fn a_second_sigterm_while_draining_exits_at_once_with_143() {
    let (mut tether, _dev) = draining(libc::SIGTERM);
    tether.signal(libc::SIGTERM);
    let status = tether.wait();
    assert_eq!(status.code(), Some(143), "{status}");
}

#[test]
fn a_second_sigint_while_draining_exits_at_once_with_130() {
    let (mut tether, _dev) = draining(libc::SIGINT);
    tether.signal(libc::SIGINT);
    let status = tether.wait();
    assert_eq!(status.code(), Some(130), "{status}");
}

/// With RLIMIT_NOFILE 40 and no reserve, the cap is 40 connections but a
/// few descriptors are already taken, so `accept` fails with EMFILE while
/// connections wait in the backlog. The gateway must back off (no crash,
/// no spin) and accept them once descriptors are freed.
#[test]
fn out_of_file_descriptors_the_waiting_connections_are_served_once_some_close() {
    const LIMIT: usize = 40;
    // With no reserve and one descriptor for HTTP, the collars' cap is above
    // what the process can really open: accept runs out of descriptors.
    let mut tether = Process::start(&["--fd-reserve", "0", "--max-http-connections", "1"], Some(LIMIT as u64));
    assert!(tether.banner.contains(&format!("at most {} connections", LIMIT - 1)), "{}", tether.banner);
    // Once a first device is answered the event loop is running, with every
    // descriptor of its own open (the signal pipe comes after the banner).
    let first = tether.device(&mac(0));
    // Descriptors are numbered from 0 and must stay below the limit; one
    // inherited with a higher number does not take a place.
    let in_use = tether.open_fds().iter().filter(|&&fd| fd < LIMIT).count() - 1;
    assert!((4..20).contains(&in_use), "{in_use} descriptors open before any connection");
    // Accepted in connect order, until no descriptor is left.
    let served = LIMIT - in_use;

    let mut clients = vec![first];
    clients.extend((1..LIMIT as u32).map(|i| {
        let mut client = tether.connect();
        client.send(format!("IDENTIFY:{}\n", mac(i)).as_bytes());
        client
    }));
    for client in &mut clients[1..served] {
        client.expect(b"OK\n");
    }
    tether.expect_log("accept failed");

    // The rest wait in the backlog: no answer while the gateway retries
    // every 100 ms, and retrying costs next to no CPU.
    let cpu_before = tether.cpu_time();
    clients[served].expect_silence(Duration::from_millis(500));
    let cpu = tether.cpu_time() - cpu_before;
    assert!(cpu < Duration::from_millis(150), "{cpu:?} of CPU in 500 ms while out of descriptors");
    for client in &mut clients[served + 1..] {
        client.expect_nothing_yet();
    }

    // Closing identified devices frees descriptors: the waiting ones are
    // accepted and answered.
    let waiting = LIMIT - served;
    let closing = waiting.max(10);
    drop(clients.drain(..closing));
    for client in &mut clients[served - closing..] {
        client.expect(b"OK\n");
    }
    // None lost: every remaining device is online and answering.
    for client in &mut clients {
        client.send(b"PING\n");
    }
    for client in &mut clients {
        client.expect(b"PONG\n");
    }

    // /metrics counted the EMFILE failures. One more device leaves so the
    // HTTP connection surely finds a descriptor (it waits in the backlog
    // until then).
    drop(clients.pop());
    let mut http = HttpClient::connect(tether.http);
    let metrics = http.get_closing("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.raw());
    let text = metrics.text();
    assert!(metric(text, r#"tether_rejected_total{reason="emfile"}"#) >= 1.0, "{text}");
    assert_eq!(metric(text, r#"tether_accepted_total{kind="device"}"#), LIMIT as f64, "none lost");
    assert_eq!(metric(text, r#"tether_rejected_total{reason="server-full"}"#), 0.0);
    assert_eq!(metric(text, "tether_max_connections"), (LIMIT - 1) as f64);
    assert_eq!(metric(text, "tether_fd_limit"), LIMIT as f64);
    drop(http);

    tether.signal(libc::SIGTERM);
    for client in &mut clients {
        client.expect(b"BYE shutdown\n");
        client.expect_eof();
    }
    drop(clients);
    assert_eq!(tether.wait().code(), Some(0));
}

const FLAGS: [&str; 14] = [
    "--device-listen",
    "--max-line",
    "--handshake-timeout",
    "--heartbeat-interval",
    "--heartbeat-timeout",
    "--idle-timeout",
    "--backlog",
    "--tcp-keepalive",
    "--max-connections",
    "--fd-reserve",
    "--max-output",
    "--linger-timeout",
    "--drain-timeout",
    "--stats-interval",
];

#[test]
fn help_lists_every_flag() {
    let output = tether_command().arg("--help").output().unwrap();
    assert!(output.status.success(), "{}", output.status);
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in FLAGS {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn a_bad_duration_is_refused_with_a_clear_message() {
    let output = tether_command().args(["--device-listen", "127.0.0.1:0", "--idle-timeout", "5x"]).output().unwrap();
    assert!(!output.status.success(), "{}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in ["--idle-timeout", "5x", "duration"] {
        assert!(stderr.contains(needle), "no {needle:?} in the error:\n{stderr}");
    }
}

#[test]
fn bad_values_for_other_flags_are_refused() {
    for args in [
        ["--max-output", "lots"],
        ["--max-line", "0"],
        ["--tcp-keepalive", "60s,10s"],
        ["--drain-timeout", "1.5s"],
        ["--device-listen", "nowhere"],
    ] {
        let output = tether_command().args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}: {}", output.status);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: the error does not name the flag:\n{stderr}");
    }
}

const HTTP_FLAGS: [&str; 12] = [
    "--http-listen",
    "--max-http-connections",
    "--http-request-timeout",
    "--http-idle-timeout",
    "--http-max-head",
    "--http-max-body",
    "--cors-origin",
    "--api-token",
    "--event-history",
    "--sse-max-backlog",
    "--sse-keepalive",
    "--max-wait",
];

#[test]
fn help_lists_the_http_flags_and_hides_the_token_from_the_environment() {
    let output = tether_command().arg("--help").env("TETHER_API_TOKEN", "hunter2-secret").output().unwrap();
    assert!(output.status.success(), "{}", output.status);
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in HTTP_FLAGS {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
    assert!(help.contains("TETHER_API_TOKEN"), "{help}");
    assert!(!help.contains("hunter2-secret"), "--help shows the token:\n{help}");
}

#[test]
fn the_api_token_can_come_from_the_environment() {
    let tether = Process::start_with_env(&[], &[("TETHER_API_TOKEN", "s3cret")], None);
    let mut http = HttpClient::connect(tether.http);
    assert_eq!(http.get("/health").status, 200);
    let response = http.get("/devices");
    assert_eq!(response.status, 401, "{}", response.raw());
    assert_eq!(response.header("WWW-Authenticate"), Some("Bearer"));
    http.send(b"GET /devices HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
    assert_eq!(http.read_response().status, 200);
    // The token is not on the command line.
    assert!(!tether.cmdline().contains("s3cret"), "{}", tether.cmdline());
}

#[test]
fn while_draining_the_http_listener_stays_open_and_health_says_draining() {
    let mut tether = Process::start(&["--drain-timeout", "60s", "--linger-timeout", "60s"], None);
    let mut dev = tether.device(&mac(1));
    let mut http = HttpClient::connect(tether.http);
    assert_eq!(http.get("/health").status, 200);
    tether.signal(libc::SIGTERM);
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    // The idle keep-alive connection is closed; new ones are served.
    http.expect_eof();
    for _ in 0..2 {
        let mut http = HttpClient::connect(tether.http);
        let response = http.get("/health");
        assert_eq!(response.raw(), json_response("503 Service Unavailable", r#"{"status":"draining"}"#, &[], true));
        http.expect_eof();
    }
    // The last connections closing end the drain; then the HTTP listener
    // closes too.
    drop((dev, http));
    assert_eq!(tether.wait().code(), Some(0));
    let refused = TcpStream::connect(tether.http).map(|_| ()).expect_err("connected after the exit");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "{refused}");
}

/// The flags of the second edition: the per-address cap and the loop's
/// per-turn budgets, each under its own heading.
#[test]
fn help_lists_the_per_address_cap_and_the_loop_budgets() {
    let output = tether_command().arg("--help").output().unwrap();
    assert!(output.status.success(), "{}", output.status);
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--http-max-per-ip",
        "--budget-reads",
        "--budget-requests",
        "--budget-accepts",
        "--budget-timers",
        "--budget-write",
        "--budget-turn-write",
        "--budget-turn-time",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
    assert!(help.contains("Loop budgets (per turn):"), "{help}");
}

/// A log line without its `[time LEVEL target]` prefix.
fn message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, message)| message)
}

/// The start-up line about descriptors says what happened: raised, or
/// left as it was (it once said "raised from 2048" when nothing was).
#[test]
fn the_file_descriptor_line_says_whether_the_limit_was_raised() {
    let tether = Process::start(&[], Some(2048));
    let line = tether.preamble.iter().find(|l| l.contains("file descriptors")).expect("a line about descriptors");
    assert_eq!(message(line), "file descriptors: soft limit 2048 (the hard limit is 2048)");

    let tether = Process::start_with_fd_limits(&[], 1024, 2048);
    let line = tether.preamble.iter().find(|l| l.contains("file descriptors")).expect("a line about descriptors");
    assert_eq!(message(line), "file descriptors: soft limit raised from 1024 to 2048 (the hard limit)");
}

/// Counts in the log agree with their nouns: "1 connection", not "1
/// connections".
#[test]
fn the_drain_lines_count_one_connection_in_the_singular() {
    let mut tether = Process::start(&["--drain-timeout", "300ms", "--linger-timeout", "60s"], None);
    let mut dev = tether.device(&mac(1));
    tether.signal(libc::SIGTERM);
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    // `dev` stays open: the drain times out.
    assert_eq!(tether.wait().code(), Some(0));
    let draining = tether.expect_log("draining");
    assert_eq!(message(&draining), "draining: 1 connection to close, waiting up to 300ms");
    let timeout = tether.expect_log("drain timeout");
    assert_eq!(message(&timeout), "drain timeout: closing the 1 connection still open");
    drop(dev);
}

/// Listen addresses may name a host, resolved at start (`localhost:3001`
/// was once refused as "not an address").
#[test]
fn listen_addresses_may_name_a_host() {
    let tether = Process::start(&["--device-listen", "localhost:0", "--http-listen", "localhost:0"], None);
    assert!(tether.addr.ip().is_loopback() && tether.http.ip().is_loopback(), "{} {}", tether.addr, tether.http);
    let mut dev = tether.device(&mac(1));
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    let mut http = HttpClient::connect(tether.http);
    assert_eq!(http.get("/health").status, 200);
}

/// A second stop signal while draining exits at once, and says why on
/// stderr first (the exit was once silent: a status of 130 and nothing
/// in the log to say where it came from).
#[test]
fn a_second_signal_while_draining_says_why_on_stderr() {
    for (signal, name, status) in [(libc::SIGINT, "SIGINT", 130), (libc::SIGTERM, "SIGTERM", 143)] {
        let (mut tether, _dev) = draining(signal);
        tether.signal(signal);
        assert_eq!(tether.wait().code(), Some(status), "{name}");
        let line = tether.expect_log("second stop signal");
        assert_eq!(
            line,
            format!("tether: a second stop signal ({name}) while draining: exiting now with status {status}")
        );
    }
}
