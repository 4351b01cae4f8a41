//! The binary's commands for the host and its operator, run for real:
//! `tether check-host` reads this host's limits and exits 1 when one would
//! stop the connections asked for (the fd limit is set for the child, so
//! the verdict does not depend on the machine), and `--log-format json`
//! writes each log line as one JSON object with the text log's fields.
//! And the files a host needs: the systemd unit passes `systemd-analyze
//! verify`, and the sysctl file names settings the kernel has.

mod common;

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Output;

use common::{Process, mac, tether_command};
use serde_json::Value;

/// `tether <args>` with RLIMIT_NOFILE set to `limit` (soft and hard).
fn run_with_fd_limit(args: &[&str], limit: u64) -> Output {
    let mut command = tether_command();
    command.args(args);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing
    // else between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run tether")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 report")
}

/// The report's line for `name`, and the fix line under it if any.
fn finding<'a>(report: &'a str, name: &str) -> (&'a str, Option<&'a str>) {
    let mut lines = report.lines().skip_while(|line| line.get(6..).is_none_or(|rest| !rest.starts_with(name)));
    let line = lines.next().unwrap_or_else(|| panic!("no line for {name} in:\n{report}"));
    let fix = lines.next().filter(|next| next.trim_start().starts_with("fix: "));
    (line, fix)
}

#[test]
fn check_host_passes_when_the_limits_hold_the_connections() {
    let output = run_with_fd_limit(&["check-host", "--connections", "100"], 2000);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        report.lines().next(),
        Some(
            "tether check-host: can this host hold 100 collar connections? (1156 descriptors with 1024 HTTP \
             (--max-http-connections) and 32 reserved (--fd-reserve); nothing is changed)"
        )
    );
    let (line, fix) = finding(&report, "RLIMIT_NOFILE");
    assert!(line.starts_with("ok    RLIMIT_NOFILE "), "{line}");
    assert!(line.ends_with("soft 2000, hard 2000 (this shell's; a systemd unit sets its own): 1156 descriptors needed (100 collars + 1024 HTTP + 32 reserved)"), "{line}");
    assert_eq!(fix, None);
    // Every limit the issue names is read and judged.
    for name in [
        "fs.nr_open",
        "fs.file-max",
        "net.core.somaxconn",
        "net.ipv4.ip_local_port_range",
        "net.netfilter.nf_conntrack_max",
        "MemAvailable",
        "net.ipv4.tcp_mem",
        "net.ipv4.tcp_rmem/tcp_wmem",
    ] {
        let (line, _) = finding(&report, name);
        assert!(!line.starts_with("STOP") && !line.contains("cannot be read"), "{line}");
    }
    assert!(
        report.contains("\nAt most 944 collar connections fit here; RLIMIT_NOFILE is the first limit.\n"),
        "{report}"
    );
    assert!(report.contains("\nNothing here stops 100 connections;"), "{report}");
}

#[test]
fn check_host_fails_and_says_how_to_fix_a_limit_that_stops_the_connections() {
    let output = run_with_fd_limit(&["check-host", "--connections", "5000"], 2000);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let (line, fix) = finding(&report, "RLIMIT_NOFILE");
    assert!(line.starts_with("STOP  RLIMIT_NOFILE "), "{line}");
    let fix = fix.expect("a fix under the STOP line");
    assert!(
        fix.contains("fix: raise the hard limit where tether starts: LimitNOFILE=6056 in its systemd unit"),
        "{fix}"
    );
    assert!(
        report.contains("\nAt most 944 collar connections fit here; RLIMIT_NOFILE is the first limit.\n"),
        "{report}"
    );
    assert!(report.contains("limit(s) stop 5000 connections (STOP above)"), "{report}");
}

#[test]
fn check_host_counts_the_gateways_own_flags() {
    // A smaller HTTP share leaves more descriptors to collars; without
    // --connections, --max-connections is what is checked.
    let output = run_with_fd_limit(&["--max-http-connections", "16", "--max-connections", "1900", "check-host"], 2000);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.starts_with(
            "tether check-host: can this host hold 1900 collar connections? (1948 descriptors with 16 HTTP"
        ),
        "{report}"
    );
    assert!(report.contains("\nAt most 1952 collar connections fit here;"), "{report}");

    let bad = tether_command().args(["check-host", "--connections", "many"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("invalid value 'many' for '--connections <N>'"), "{stderr}");
}

#[test]
fn check_host_checks_one_workers_share_of_the_descriptors() {
    // 5,000 collars in 4 workers: 1,375 each (their share and 10%), with
    // 282 HTTP connections and the reserve, fit under 2,000 descriptors.
    let output = run_with_fd_limit(&["--workers", "4", "check-host", "--connections", "5000"], 2000);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(report.starts_with("tether check-host: can this host hold 5000 collar connections in 4 workers? (each holds up to 1375 collars and 282 HTTP connections"), "{report}");
    let (line, _) = finding(&report, "RLIMIT_NOFILE");
    assert!(
        line.ends_with("1689 descriptors needed in each of 4 workers (1375 collars + 282 HTTP + 32 reserved)"),
        "{line}"
    );
    finding(&report, "net.ipv4.tcp_migrate_req");
    // auto finds the same 4 (3 would need 2,211 descriptors each).
    let output = run_with_fd_limit(&["--workers", "auto", "check-host", "--connections", "5000"], 2000);
    assert!(stdout(&output).starts_with("tether check-host: can this host hold 5000 collar connections in 4 workers?"));
    // And says so when no number of workers fits.
    let output = run_with_fd_limit(&["--workers", "auto", "check-host", "--connections", "5000"], 40);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("tether check-host: --workers auto"), "{stderr}");
}

/// The fields of a JSON log line, in the order the line has them (a
/// `serde_json::Value` would sort them), with their values.
fn fields(line: &str) -> Vec<(String, String)> {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
    let mut f: Vec<(usize, String, String)> = object
        .iter()
        .map(|(k, v)| {
            let at = line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {line}"));
            (at, k.clone(), v.as_str().unwrap_or_else(|| panic!("{k} not a string: {line}")).to_owned())
        })
        .collect();
    f.sort();
    f.into_iter().map(|(_, k, v)| (k, v)).collect()
}

#[test]
fn json_logs_are_one_object_a_line_with_the_text_logs_fields() {
    let text = Process::start(&[], None);
    let mut json = Process::start(&["--log-format", "json"], None);
    // Every start-up line, the text one and the JSON one side by side:
    // the same level, target and message (but for the ports, which differ).
    let port =
        |s: &str| s.replace(&json.addr.port().to_string(), "PORT").replace(&text.addr.port().to_string(), "PORT");
    let texts: Vec<&String> = text.preamble.iter().chain([&text.banner]).collect();
    let jsons: Vec<&String> = json.preamble.iter().chain([&json.banner]).collect();
    assert_eq!(texts.len(), jsons.len(), "{texts:#?} {jsons:#?}");
    for (text_line, json_line) in texts.into_iter().zip(jsons) {
        let f = fields(json_line);
        let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        // The text log's order.
        assert_eq!(names, ["time", "level", "target", "message"], "{json_line}");
        let time = &f[0].1;
        assert_eq!(time.len(), "2026-11-29T06:43:10.123Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T' && time.as_bytes()[19] == b'.', "{time}");
        // `[2026-11-29T06:43:10Z INFO  tether::gateway] message`
        let (head, message) = text_line.split_once("] ").expect("[time LEVEL target] message");
        let words: Vec<&str> = head.split_whitespace().collect();
        assert_eq!((words[1], words[2]), (f[1].1.as_str(), f[2].1.as_str()), "{text_line} / {json_line}");
        assert_eq!(port(message), port(&f[3].1));
    }
    assert_eq!(fields(&json.banner)[2].1, "tether::gateway");

    // A line from the loop, while it runs: a stop signal, then the drain.
    let dev = json.device(&mac(1));
    json.signal(libc::SIGTERM);
    let stop = fields(&json.expect_log("received a stop signal"));
    assert_eq!((stop[1].1.as_str(), stop[3].1.as_str()), ("INFO", "received a stop signal"));
    drop(dev);
    assert_eq!(json.wait().code(), Some(0));
}

#[test]
fn json_logs_of_workers_say_who_wrote_each_line() {
    let Some(redis) = common::RedisServer::start("json_logs_of_workers_say_who_wrote_each_line") else { return };
    let mut tether = Process::start(&["--workers", "2", "--redis", &redis.url(), "--log-format", "json"], None);
    let lines: Vec<&String> = tether.preamble.iter().chain([&tether.banner]).collect();
    let messages: Vec<String> = lines.iter().map(|line| fields(line)[3].1.clone()).collect();
    assert!(messages.iter().any(|m| m.starts_with("supervisor: ")), "{messages:#?}");
    assert!(messages.iter().any(|m| m.starts_with("worker 0: ") || m.starts_with("worker 1: ")), "{messages:#?}");
    assert!(tether.banner.contains(r#""message":"worker "#), "{}", tether.banner);
    tether.signal(libc::SIGTERM);
    let drained = fields(&tether.expect_log("every worker has exited"));
    assert_eq!((drained[1].1.as_str(), drained[2].1.as_str()), ("INFO", "tether::supervisor::process"));
    assert_eq!(tether.wait().code(), Some(0));
}

#[test]
fn a_log_format_that_does_not_exist_is_refused() {
    let output = tether_command().args(["--log-format", "xml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'xml' for '--log-format <FORMAT>'"), "{stderr}");
    assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
}

/// The repository's root (where `contrib/` is).
fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !common::require("the_systemd_unit_passes_systemd_analyze_verify", common::program("systemd-analyze")) {
        return;
    }
    let unit = std::fs::read_to_string(root().join("contrib/systemd/tether.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/bin/tether "), "{unit}");
    // verify checks that ExecStart is executable: this build's binary
    // stands in for the installed one.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("unit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tether.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/tether", env!("CARGO_BIN_EXE_tether"))).unwrap();
    let output = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {}\n{stderr}", output.status);
}

#[test]
fn the_sysctl_file_names_settings_this_kernel_has() {
    let conf = std::fs::read_to_string(root().join("contrib/sysctl.d/90-tether.conf")).unwrap();
    let mut keys = 0;
    for line in conf.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key = value: {line}"));
        // A leading "-": systemd-sysctl skips a key this kernel lacks.
        let (optional, key) = match key.trim().strip_prefix('-') {
            Some(key) => (true, key),
            None => (false, key.trim()),
        };
        assert!(!value.trim().is_empty(), "{line}");
        let exists = std::path::Path::new("/proc/sys").join(key.replace('.', "/")).exists();
        assert!(exists || optional, "{key} is not a setting of this kernel (a typo?), and not marked optional");
        keys += 1;
    }
    assert_eq!(keys, 8, "{conf}");
    // What tune-host.sh --apply applies is this file, read at run time.
    let script = std::fs::read_to_string(root().join("scripts/tune-host.sh")).unwrap();
    assert!(script.contains("contrib/sysctl.d/90-tether.conf\"") && script.contains("done <\"$conf\""), "{script}");
}
