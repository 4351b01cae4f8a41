//! The `tether-load` binary against a real gateway (in-process, loopback):
//! a fleet connects, answers heartbeats and measures round trips; several
//! processes add up; a full gateway and a closed port are counted as
//! losses (exit status 2 with `--fail-on-loss`), not crashes.
//!
//! Each run is bounded by its own `--duration`; the test waits for the
//! process with a timeout (a channel receive, never a sleep) and kills it
//! if it overruns.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::Gateway;
use serde_json::Value;
use tether::reactor::Kind;

/// Longest a run may take beyond its own `--duration` before the test fails.
const SLACK: Duration = Duration::from_secs(20);

/// A gateway whose heartbeats fire during a short run.
fn gateway() -> Gateway {
    Gateway::start(tether::Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        ..common::config()
    })
}

/// Runs `tether-load --target <target> --json <args>` and returns its exit
/// status and parsed summary.
fn load(target: SocketAddr, args: &[&str]) -> (ExitStatus, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(["--target", &target.to_string(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether-load");
    // Both pipes are drained by threads so neither can fill up and stall
    // the tool; stderr (progress lines) is printed, which the test harness
    // shows for a failing test.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = String::new();
        let read = stdout.read_to_string(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let progress = thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let out = match rx.recv_timeout(SLACK) {
        Ok(out) => out.expect("read tether-load's output"),
        Err(_) => {
            let _ = child.kill();
            panic!("tether-load {args:?} did not finish in time");
        }
    };
    let status = child.wait().expect("wait for tether-load");
    println!("tether-load {args:?}: {status}\n{}", progress.join().unwrap_or_default());
    let summary = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not a JSON summary ({e}): {out}"));
    (status, summary)
}

fn count(summary: &Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(summary, |v, key| v.get(key))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no count at {path} in {summary:#}"))
}

#[test]
fn a_fleet_connects_answers_heartbeats_and_measures_round_trips() {
    let gateway = gateway();
    let (status, s) =
        load(gateway.addr, &["-n", "300", "--duration", "2s", "--rtt", "--active", "20", "--fail-on-loss"]);
    assert!(status.success(), "{status}: {s:#}");

    assert_eq!(count(&s, "connections.attempted"), 300);
    assert_eq!(count(&s, "connections.established"), 300);
    assert_eq!(count(&s, "connections.failed"), 0, "{s:#}");
    assert_eq!(count(&s, "connections.closed_by_server"), 0, "{s:#}");
    assert_eq!(count(&s, "connections.open_at_end"), 300);
    assert_eq!(count(&s, "connect_latency_us.count"), 300);
    assert_eq!(count(&s, "handshake_latency_us.count"), 300);

    // The closed loop ran on 20 collars and measured something.
    assert_eq!(count(&s, "rtt.active"), 20);
    assert!(count(&s, "rtt_us.count") > 0, "{s:#}");
    assert!(count(&s, "rtt_us.p50") > 0, "{s:#}");
    assert!(count(&s, "rtt_us.p50") <= count(&s, "rtt_us.p99"));
    assert!(s["rtt"]["per_s"].as_f64().unwrap() > 0.0);

    // The 280 quiet collars were pinged by the gateway and answered.
    let heartbeats = count(&s, "heartbeats.received");
    assert!(heartbeats > 0, "{s:#}");
    assert_eq!(count(&s, "heartbeats.answered"), heartbeats);

    // The gateway saw the same: 300 collars, none dropped for silence.
    let stats = gateway.stop_drained();
    assert_eq!(stats.accepted[Kind::Device as usize], 300);
    assert_eq!(common::closed(&stats, tether::close::CloseReason::HeartbeatTimeout), 0);
}

#[test]
fn worker_processes_add_up() {
    let gateway = gateway();
    let (status, s) = load(
        gateway.addr,
        &["-n", "200", "--processes", "2", "--duration", "2s", "--report-interval", "100ms", "--fail-on-loss"],
    );
    assert!(status.success(), "{status}: {s:#}");
    assert_eq!(count(&s, "processes"), 2);
    assert_eq!(count(&s, "collars"), 200);
    assert_eq!(count(&s, "connections.attempted"), 200);
    assert_eq!(count(&s, "connections.established"), 200);
    assert_eq!(count(&s, "connections.open_at_end"), 200);
    // No two workers shared a MAC: a duplicate would have been replaced.
    assert_eq!(count(&s, "connections.closed_by_server"), 0, "{s:#}");
    // Histograms were merged, not just one process's kept.
    assert_eq!(count(&s, "connect_latency_us.count"), 200);
    assert_eq!(count(&s, "handshake_latency_us.count"), 200);
    assert!(count(&s, "reports_sent") > 0);

    let stats = gateway.stop_drained();
    assert_eq!(stats.accepted[Kind::Device as usize], 200);
    assert_eq!(common::closed(&stats, tether::close::CloseReason::Replaced), 0);
}

#[test]
fn collars_turned_away_by_a_full_gateway_are_losses() {
    let gateway = Gateway::start(tether::Config { max_connections: Some(50), ..common::config() });
    let (status, s) = load(gateway.addr, &["-n", "100", "--duration", "2s", "--fail-on-loss"]);
    assert_eq!(status.code(), Some(2), "{s:#}");
    assert_eq!(count(&s, "connections.attempted"), 100);
    assert_eq!(count(&s, "connections.established"), 50);
    assert_eq!(count(&s, "connections.open_at_end"), 50);
    // Each turned-away collar is told `BYE server-full`; one whose IDENTIFY
    // crossed the close may see the reset first.
    let turned_away = s["closed_by_server"]["bye"]["server-full"].as_u64().unwrap_or(0) + count(&s, "failed.reset");
    assert_eq!(turned_away, 50, "{s:#}");
    assert_eq!(count(&s, "connections.lost"), 0, "never online, so not lost");
}

#[test]
fn a_closed_port_is_counted_as_refused_and_the_run_ends_early() {
    // A port that was free a moment ago: nothing listens there.
    let target = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (status, s) = load(target, &["-n", "20", "--duration", "30s", "--fail-on-loss"]);
    assert_eq!(status.code(), Some(2), "{s:#}");
    assert_eq!(count(&s, "connections.attempted"), 20);
    assert_eq!(count(&s, "failed.refused"), 20, "{s:#}");
    assert_eq!(count(&s, "connections.established"), 0);
    // Every collar had ended, so the run did not wait out its 30 s.
    assert!(s["elapsed_s"].as_f64().unwrap() < 10.0, "{s:#}");
}
