//! The HTML report (`--html`) of a real run, opened in headless Chromium:
//! the page's script draws every chart from the run's data (the DOM after
//! the script ran is read back with `--dump-dom`), with nothing fetched.
//!
//! The run is small and short: 300 collars against an in-process gateway
//! that holds 250 (so 50 are told `BYE server-full` and the failure bars
//! have something to show), heartbeats every 200 ms, and 10 collars in a
//! closed PING loop for the round-trip charts. A run with no round trips
//! at all draws the rest, and says so where the round trips would be.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::Gateway;
use common::require::{program, require};

/// Longest a child (the run, the browser) may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `command` to its end, killing it and failing past [`LIMIT`]
/// (a channel receive with a timeout, never a sleep).
fn run(mut command: Command) -> Output {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let errors = thread::spawn(move || {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        err
    });
    let stdout = match rx.recv_timeout(LIMIT) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            panic!("{command:?} did not finish in time");
        }
    };
    let status = child.wait().expect("wait");
    Output { status, stdout, stderr: errors.join().unwrap_or_default() }
}

/// A directory of this test's own under Cargo's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    dir
}

/// The page as Chromium holds it once its script has run.
fn rendered_dom(page: &Path, profile: &Path) -> String {
    let mut chromium = Command::new("chromium");
    chromium.args([
        "--headless",
        // Root in a container has no user namespace for the sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1280,1800",
    ]);
    chromium.arg(format!("--user-data-dir={}", profile.display()));
    chromium.arg("--dump-dom").arg(format!("file://{}", page.display()));
    let output = run(chromium);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 DOM")
}

/// The markup of `<figure id="{id}">`.
fn figure<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("<figure id=\"{id}\"")).unwrap_or_else(|| panic!("no figure {id}"));
    let end = dom[start..].find("</figure>").expect("closed figure") + start;
    &dom[start..end]
}

/// Each series line of a figure: (its name, its number of points).
fn series(figure: &str) -> Vec<(String, usize)> {
    figure
        .split("<path class=\"series ")
        .skip(1)
        .map(|path| {
            let attr = |name: &str| {
                let from =
                    path.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("{name} in {path}")) + name.len() + 2;
                path[from..from + path[from..].find('"').unwrap()].to_owned()
            };
            (attr("data-series"), attr("data-points").parse().unwrap())
        })
        .collect()
}

/// Runs `tether-load --html` against `gateway` with `args`; the page.
fn report(gateway: &Gateway, dir: &Path, args: &[&str]) -> PathBuf {
    let page = dir.join("report.html");
    let mut load = Command::new(env!("CARGO_BIN_EXE_tether-load"));
    load.args(["--target", &gateway.addr.to_string()]).args(args).arg("--html").arg(&page);
    let output = run(load);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    page
}

#[test]
fn the_report_of_a_run_draws_every_chart_in_a_browser() {
    if !require("the_report_of_a_run_draws_every_chart_in_a_browser", program("chromium")) {
        return;
    }
    let gateway = Gateway::start(tether::Config {
        max_connections: Some(250),
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        ..common::config()
    });
    let dir = scratch("report");
    let page = report(&gateway, &dir, &["-n", "300", "--duration", "3s", "--rtt", "--active", "10"]);
    drop(gateway);

    let html = std::fs::read_to_string(&page).expect("the report was written");
    assert!(html.starts_with("<!doctype html>"));
    for fetch in ["src=", "href=", "https://", "@import", "url("] {
        assert!(!html.contains(fetch), "the page would fetch something: {fetch}");
    }

    let dom = rendered_dom(&page, &dir.join("profile"));
    assert!(!dom.contains("id=\"report-error\""), "the script failed: {dom}");
    assert!(dom.contains("data-drawn=\"6\""), "not every chart was drawn: {dom}");

    // A point at 0 s and one per second of the 3 s run (the last may fall
    // just before or after the 3 s mark).
    let connected = series(figure(&dom, "connected"));
    let names: Vec<&str> = connected.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["online", "connecting", "failed (total)", "closed by the gateway (total)"]);
    assert!(connected.iter().all(|&(_, n)| (4..=5).contains(&n)), "{connected:?}");
    let rate = series(figure(&dom, "rate"));
    assert_eq!(rate.len(), 3, "{rate:?}");
    let rtt = series(figure(&dom, "rtt-time"));
    assert_eq!(rtt.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["p50", "p90", "p99", "max"]);
    assert!(rtt.iter().all(|&(_, n)| n >= 2), "{rtt:?}");
    // The distributions: a step (two points) per recorded value, for the
    // round trips, all 300 connects (the gateway accepts, then turns 50
    // away) and the 250 handshakes.
    let dist = series(figure(&dom, "rtt-dist"));
    assert_eq!(dist.len(), 3, "{dist:?}");
    assert!(dist[0].0.starts_with("PING round trip ("), "{dist:?}");
    assert_eq!(&dist[1].0, "connect (300)");
    assert_eq!(&dist[2].0, "IDENTIFY to OK (250)");
    assert!(dist.iter().all(|&(_, n)| n >= 2 && n % 2 == 0), "{dist:?}");
    // Its x axis counts nines, up to as many as the samples allow, never
    // rounding the last to 100%.
    let ticks = figure(&dom, "rtt-dist");
    for label in [">0%<", ">90%<", ">99%<", ">99.9%<"] {
        assert!(ticks.contains(label), "{label} in {ticks}");
    }
    assert!(!ticks.contains(">100%<"), "{ticks}");
    let traffic = series(figure(&dom, "traffic"));
    assert_eq!(traffic[2].0, "heartbeat PINGs per second");
    // The 50 collars turned away, as a bar of their own.
    let ends = figure(&dom, "ends");
    let bar = &ends[ends.find(">BYE server-full</text>").expect("a bar for BYE server-full")..];
    let bar = &bar[..bar.find("class=\"bar-label\"").unwrap_or(bar.len())];
    assert!(bar.contains("data-value=\"50\""), "{bar}");
    assert!(ends.contains("<rect class=\"bar s3\"") && ends.contains("data-value=\"0\""), "{ends}");
    // The tables were filled from the same data.
    assert!(dom.contains("<td>300 against 127.0.0.1:"), "{dom}");
    assert!(dom.contains("<th>RTT loop</th><td>10 collars</td>"), "{dom}");
}

#[test]
fn a_run_without_round_trips_draws_the_other_charts() {
    if !require("a_run_without_round_trips_draws_the_other_charts", program("chromium")) {
        return;
    }
    let gateway = Gateway::start(common::config());
    let dir = scratch("report-quiet");
    let page = report(&gateway, &dir, &["-n", "20", "--duration", "1s"]);
    drop(gateway);
    let dom = rendered_dom(&page, &dir.join("profile"));
    assert!(!dom.contains("id=\"report-error\""), "the script failed: {dom}");
    assert!(dom.contains("data-drawn=\"5\""), "{dom}");
    let rtt = figure(&dom, "rtt-time");
    assert_eq!(series(rtt), []);
    assert!(rtt.contains(">no samples in this run</text>"), "{rtt}");
    // The distribution still has the connects and handshakes.
    let dist = series(figure(&dom, "rtt-dist"));
    let names: Vec<&str> = dist.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["connect (20)", "IDENTIFY to OK (20)"]);
}
