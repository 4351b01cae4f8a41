//! The `tether-load` binary against a real gateway (in-process, loopback):
//! a fleet connects, answers heartbeats and measures round trips; several
//! processes add up; a full gateway is counted as losses (exit status 2
//! with `--fail-on-loss`), not crashes; and a run in which no collar
//! connected (a closed port, a gateway that turns every collar away) exits
//! 1 with a line saying why, whatever the flags.
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

/// How a `tether-load` run ended.
struct Run {
    status: ExitStatus,
    /// The JSON summary (stdout).
    summary: Value,
    /// Progress lines, and the line that explains a failure.
    stderr: String,
}

/// Runs `tether-load --target <target> --json <args>` to its end.
fn load(target: SocketAddr, args: &[&str]) -> Run {
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
    let stderr = progress.join().unwrap_or_default();
    println!("tether-load {args:?}: {status}\n{stderr}");
    let summary = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not a JSON summary ({e}): {out}"));
    Run { status, summary, stderr }
}

/// The line on stderr that says no collar connected (there is one at most).
fn none_connected(stderr: &str) -> Option<&str> {
    let mut lines = stderr.lines().filter(|line| line.starts_with("tether-load: no collar connected"));
    let line = lines.next();
    assert_eq!(lines.next(), None, "one such line at most: {stderr}");
    line
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
    let Run { status, summary: s, stderr } =
        load(gateway.addr, &["-n", "300", "--duration", "2s", "--rtt", "--active", "20", "--fail-on-loss"]);
    assert_eq!(status.code(), Some(0), "{s:#}");
    assert_eq!(none_connected(&stderr), None);

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

/// With device keys, every collar of the fleet (in two processes) answers
/// its challenge and comes online; without the key file none does.
#[test]
fn with_device_keys_the_fleet_proves_its_keys() {
    let dir = std::env::temp_dir().join(format!("tether-load-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, format!("# test key\n{}\n", "5e".repeat(32))).unwrap();
    let path = file.to_str().unwrap();
    let keys = tether::device::DeviceKeys::load(path).unwrap();
    let gateway = Gateway::start(tether::Config { device_key_file: Some(keys), ..common::config() });
    let args = ["-n", "200", "--processes", "2", "--duration", "1s", "--fail-on-loss", "--device-key-file", path];
    let Run { status, summary: s, .. } = load(gateway.addr, &args);
    assert_eq!(status.code(), Some(0), "{s:#}");
    assert_eq!(count(&s, "connections.established"), 200, "{s:#}");
    assert_eq!(count(&s, "handshake_latency_us.count"), 200);
    let Run { status, summary: s, .. } =
        load(gateway.addr, &["-n", "5", "--duration", "1s", "--mac-base", "02:4D:00:00:00:00"]);
    assert_eq!(status.code(), Some(1), "{s:#}");
    assert_eq!(count(&s, "connections.established"), 0, "{s:#}");
    let stats = gateway.stop_drained();
    assert_eq!((stats.device_auths, stats.device_auth_failures), (200, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn worker_processes_add_up() {
    let gateway = gateway();
    let Run { status, summary: s, .. } = load(
        gateway.addr,
        &["-n", "200", "--processes", "2", "--duration", "2s", "--report-interval", "100ms", "--fail-on-loss"],
    );
    assert_eq!(status.code(), Some(0), "{s:#}");
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
fn collars_turned_away_by_a_full_gateway_are_losses_that_fail_only_when_asked() {
    for (flags, exit) in [(&["--fail-on-loss"][..], 2), (&[][..], 0)] {
        // A gateway of its own for each run: the first run's collars are
        // not gone from the gateway the moment tether-load exits.
        let gateway = Gateway::start(tether::Config { max_connections: Some(50), ..common::config() });
        let Run { status, summary: s, stderr } =
            load(gateway.addr, &[&["-n", "100", "--duration", "2s"], flags].concat());
        assert_eq!(status.code(), Some(exit), "{flags:?}: {s:#}");
        assert_eq!(none_connected(&stderr), None, "50 collars connected");
        assert_eq!(count(&s, "connections.attempted"), 100);
        assert_eq!(count(&s, "connections.established"), 50);
        assert_eq!(count(&s, "connections.open_at_end"), 50);
        // Each turned-away collar is told `BYE server-full`; one whose
        // IDENTIFY crossed the close may see the reset first.
        let turned_away = s["closed_by_server"]["bye"]["server-full"].as_u64().unwrap_or(0) + count(&s, "failed.reset");
        assert_eq!(turned_away, 50, "{s:#}");
        assert_eq!(count(&s, "connections.lost"), 0, "never online, so not lost");
    }
}

#[test]
fn a_closed_port_is_counted_as_refused_the_run_ends_early_and_fails() {
    // No collar connected: status 1 whatever the flags, with or without
    // --fail-on-loss (whose 2 means "some collars were lost"), in one
    // process or several.
    for flags in [&[][..], &["--fail-on-loss"], &["--processes", "2"]] {
        // A port that was free a moment ago: nothing listens there.
        let target = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let Run { status, summary: s, stderr } = load(target, &[&["-n", "20", "--duration", "30s"], flags].concat());
        assert_eq!(status.code(), Some(1), "{flags:?}: {s:#}");
        assert_eq!(
            none_connected(&stderr),
            Some("tether-load: no collar connected (20 failed: refused 20)"),
            "{flags:?}: {stderr}"
        );
        assert_eq!(count(&s, "connections.attempted"), 20);
        assert_eq!(count(&s, "failed.refused"), 20, "{s:#}");
        assert_eq!(count(&s, "connections.established"), 0);
        // Every collar had ended, so the run did not wait out its 30 s.
        assert!(s["elapsed_s"].as_f64().unwrap() < 10.0, "{s:#}");
    }
}

#[test]
fn a_gateway_that_turns_every_collar_away_fails_the_run() {
    let gateway = Gateway::start(tether::Config { max_connections: Some(0), ..common::config() });
    let Run { status, summary: s, stderr } = load(gateway.addr, &["-n", "10", "--duration", "2s"]);
    assert_eq!(status.code(), Some(1), "{s:#}");
    assert_eq!(count(&s, "connections.established"), 0, "{s:#}");
    let line = none_connected(&stderr).unwrap_or_else(|| panic!("no explanation on stderr: {stderr}"));
    let bye = s["closed_by_server"]["bye"]["server-full"].as_u64().unwrap_or(0);
    assert_eq!(bye + count(&s, "failed.reset"), 10, "{s:#}");
    if bye > 0 {
        assert!(line.contains(&format!("BYE server-full {bye}")), "{line}");
    }
}

/// A CA (`ca.pem`, `ca.key`) and the gateway certificate it issued (for
/// 127.0.0.1), and a client certificate for `client_cn`, as PEM files in a
/// new directory.
fn pki(name: &str, client_cn: &str) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("tether-load-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tether-load test CA");
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for (file, cn, sans) in [("server", "localhost", vec!["127.0.0.1".to_string()]), ("client", client_cn, vec![])] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        std::fs::write(dir.join(format!("{file}.pem")), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }
    dir
}

/// `--tls`: the fleet holds its collars inside TLS and measures round
/// trips there; with `--client-cert` a collar identifies through mutual
/// TLS.
#[test]
fn a_fleet_speaks_tls_and_mutual_tls() {
    let dir = pki("fleet", "02:4C:00:00:00:00");
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let gateway = Gateway::start(tether::Config {
        device_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        device_tls_cert: Some(dir.join("server.pem")),
        device_tls_key: Some(dir.join("server.key")),
        ..common::config()
    });
    let ca = file("ca.pem");
    let args = ["-n", "200", "--duration", "1s", "--rtt", "--active", "10", "--fail-on-loss", "--tls", "--tls-ca", &ca];
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &args);
    assert_eq!(status.code(), Some(0), "{s:#}");
    assert_eq!(count(&s, "connections.established"), 200, "{s:#}");
    assert!(count(&s, "rtt_us.count") > 0, "{s:#}");
    // Plain text's collars against the TLS port connect no one.
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &["-n", "3", "--duration", "1s"]);
    assert_eq!((status.code(), count(&s, "connections.established")), (Some(1), 0), "{s:#}");
    let stats = gateway.stop_drained();
    assert_eq!(stats.tls_handshakes.iter().sum::<u64>(), 200, "{stats:?}");

    let gateway = Gateway::start(tether::Config {
        device_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        device_tls_cert: Some(dir.join("server.pem")),
        device_tls_key: Some(dir.join("server.key")),
        device_tls_client_ca: Some(dir.join("ca.pem")),
        ..common::config()
    });
    let (cert, key) = (file("client.pem"), file("client.key"));
    let args = ["-n", "1", "--duration", "1s", "--fail-on-loss", "--tls", "--tls-ca", &ca];
    let mutual = [&args[..], &["--client-cert", &cert, "--client-key", &key]].concat();
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &mutual);
    assert_eq!((status.code(), count(&s, "connections.established")), (Some(0), 1), "{s:#}");
    // Without the certificate the handshake fails.
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &args);
    assert_eq!((status.code(), count(&s, "connections.established")), (Some(1), 0), "{s:#}");
    gateway.stop_drained();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--leave-after-identify` with `--max-in-flight 1`: a collar starts only
/// once the one before it is identified and gone, with that one's session
/// tickets (the gateway sends them before its `OK`). So the first TLS
/// handshake is full and every later one resumes, as the gateway counts
/// too; with `--tls-no-resume` every one is full.
#[test]
fn collars_that_leave_one_by_one_resume_with_the_tickets_of_those_before() {
    let dir = pki("resume", "unused");
    let gateway = Gateway::start(tether::Config {
        device_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        device_tls_cert: Some(dir.join("server.pem")),
        device_tls_key: Some(dir.join("server.key")),
        ..common::config()
    });
    let ca = dir.join("ca.pem").to_str().unwrap().to_string();
    let args = ["-n", "20", "--max-in-flight", "1", "--leave-after-identify", "--duration", "15s", "--fail-on-loss"];
    let args = [&args[..], &["--tls", "--tls-ca", &ca]].concat();
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &args);
    assert_eq!(status.code(), Some(0), "{s:#}");
    for (path, n) in [
        ("connections.established", 20),
        ("connections.left", 20),
        ("connections.open_at_end", 0),
        ("connections.lost", 0),
        ("tls_handshakes.full", 1),
        ("tls_handshakes.full_with_hello_retry", 0),
        ("tls_handshakes.resumed", 19),
    ] {
        assert_eq!(count(&s, path), n, "{path}: {s:#}");
    }
    assert!(s["elapsed_s"].as_f64().unwrap() < 15.0, "the run ends when every collar has left: {s:#}");

    let no_resume = [&args[..], &["--tls-no-resume", "--mac-base", "02:4D:00:00:00:00"]].concat();
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &no_resume);
    assert_eq!(status.code(), Some(0), "{s:#}");
    let counts = ["connections.left", "tls_handshakes.full", "tls_handshakes.resumed"].map(|path| count(&s, path));
    assert_eq!(counts, [20, 20, 0], "{s:#}");

    let stats = gateway.stop_drained();
    assert_eq!(stats.tls_handshakes, [21, 19], "the gateway saw the same: {stats:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--client-ca-cert/--client-ca-key`: over mutual TLS, each collar
/// presents a certificate of its own naming its MAC, so a whole fleet comes
/// online; certificates from a CA the gateway does not trust are refused.
#[test]
fn over_mutual_tls_each_collar_presents_its_own_certificate() {
    let (dir, other) = (pki("collar-ca", "unused"), pki("other-ca", "unused"));
    let gateway = Gateway::start(tether::Config {
        device_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        device_tls_cert: Some(dir.join("server.pem")),
        device_tls_key: Some(dir.join("server.key")),
        device_tls_client_ca: Some(dir.join("ca.pem")),
        ..common::config()
    });
    let file = |dir: &std::path::Path, name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca, ca_key, other_ca, other_key) =
        (file(&dir, "ca.pem"), file(&dir, "ca.key"), file(&other, "ca.pem"), file(&other, "ca.key"));
    let args = ["--tls", "--tls-ca", &ca, "-n", "50", "--duration", "10s", "--fail-on-loss", "--leave-after-identify"];
    let own = [&args[..], &["--client-ca-cert", &ca, "--client-ca-key", &ca_key]].concat();
    let Run { status, summary: s, .. } = load(gateway.tls.unwrap(), &own);
    assert_eq!(status.code(), Some(0), "{s:#}");
    let counts = ["connections.established", "connections.left", "tls_handshakes.full", "tls_handshakes.resumed"];
    assert_eq!(counts.map(|path| count(&s, path)), [50, 50, 50, 0], "never resumed: {s:#}");

    let wrong = [&args[..], &["--client-ca-cert", &other_ca, "--client-ca-key", &other_key]].concat();
    let wrong = [&wrong[..], &["--mac-base", "02:4D:00:00:00:00"]].concat();
    let Run { status, summary: s, stderr } = load(gateway.tls.unwrap(), &wrong);
    assert_eq!(status.code(), Some(1), "{s:#}");
    assert_eq!((count(&s, "connections.established"), count(&s, "failed.other")), (0, 50), "{s:#}");
    assert!(none_connected(&stderr).is_some(), "{stderr}");

    let stats = gateway.stop_drained();
    assert_eq!(stats.tls_handshakes, [50, 0], "{stats:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}
