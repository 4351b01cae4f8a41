//! Fan-out under a burst: tether and Redis 7 side by side, same run, same
//! scenario, one table.
//!
//! # What it measures
//!
//! Per server, on a fresh process: S reading subscribers (default 500) and
//! K stuck ones (50: they subscribe, then never read again), one publisher
//! that sends a burst of E messages (10,000) as fast as its socket takes
//! them, and a canary that sends a `PING` every 1 ms (open loop: on
//! schedule whether or not the last answer came; answers matched in order)
//! and records each round trip. Reported per server:
//!
//! - canary RTT p50 / p99 / max over the window (first burst byte until the
//!   last reading subscriber has its last message), and how many pings;
//!   pings still unanswered when the run ends count at their age then, and
//!   the figures are marked `≥` (lower bounds);
//! - server CPU (utime + stime from `/proc/<pid>/stat`) over the window, in
//!   total and per message delivered to one reading subscriber;
//! - deliveries per second (messages received by all reading subscribers /
//!   window), and how many reading subscribers got all E;
//! - the longest turn of the server loop: tether's `/metrics`
//!   (`tether_loop_longest_turn_seconds` if the build has it, else the upper
//!   bound of the highest non-empty `tether_loop_iteration_seconds` bucket);
//!   for Redis n/a (the notes show the worst `LATENCY LATEST` event, which
//!   is the command part of a turn, not the whole turn);
//! - the server's peak RSS (`VmHWM`) and RSS at the end, and the peak of
//!   the kernel's TCP memory (`/proc/net/sockstat`, sampled every 50 ms)
//!   over its value before the clients connected. That one is system-wide:
//!   it holds both ends of every loopback connection, the stuck
//!   subscribers' unread bytes included.
//!
//! # How
//!
//! - tether: the binary from `TETHER_BIN`, or the one cargo built, started
//!   on free loopback ports with `--max-http-connections S + K + 64` and
//!   nothing else but what `benches/common` passes, so older builds run
//!   too. Subscribers are `GET /events` streams (head and `retry: 3000`
//!   read, then SSE frames with `event: location` counted). The publisher
//!   is a collar (`IDENTIFY:02:00:00:00:00:01`, `OK`) writing E
//!   `LOCATION:<lat>,<lon>` lines; the canary is another collar
//!   (`…:02`) sending `PING`, answered `PONG`.
//! - Redis: `redis-server` on a free loopback port without persistence.
//!   Subscribers send `SUBSCRIBE locations` and wait for the confirmation;
//!   the publisher pipelines E `PUBLISH locations <json>` whose payload is
//!   the JSON of a tether location event, so a delivery has about the same
//!   size; messages are counted by parsing the `message` push frames. The
//!   canary sends `PING` on its own connection and waits for `+PONG`.
//!   If `redis-server` is not installed, the Redis row is skipped (install
//!   it with `apt-get install redis-server`).
//!
//! The clients run on ONE thread with one mio `Poll` over all sockets
//! (non-blocking, edge-triggered, each read drained until `WouldBlock`),
//! so the client takes one of the machine's cores at most (its own CPU over
//! the window is in the notes); it looks after the canary every 100 µs
//! while draining subscribers. Set-up (connect and
//! subscribe) is done before, with blocking sockets and timeouts. Every
//! wait is bounded: a run gives up after `FANOUT_TIMEOUT_S` and reports
//! what was delivered. Between runs the clients are closed, the server is
//! killed and the kernel's TCP memory is let settle.
//!
//! # Running it
//!
//! ```sh
//! cargo bench --bench fanout
//! # before/after a change to the reactor: the same bench against an old build
//! TETHER_BIN=/path/to/old/tether cargo bench --bench fanout
//! # a smaller or larger scenario, one server only, another order
//! FANOUT_SUBSCRIBERS=100 FANOUT_STUCK=10 FANOUT_EVENTS=2000 cargo bench --bench fanout
//! FANOUT_SKIP_REDIS=1 cargo bench --bench fanout
//! FANOUT_ORDER=redis,tether cargo bench --bench fanout
//! ```
//!
//! Environment: `FANOUT_SUBSCRIBERS` (500), `FANOUT_STUCK` (50),
//! `FANOUT_EVENTS` (10000), `FANOUT_PING_EVERY_US` (1000),
//! `FANOUT_TIMEOUT_S` (300, per server), `FANOUT_ORDER` (`tether,redis`),
//! `FANOUT_SKIP_TETHER=1`, `FANOUT_SKIP_REDIS=1`, `TETHER_BIN`,
//! `FANOUT_SELF_TEST=1` (check the parsers, then exit). Output: a markdown
//! table, notes per server, and one JSON line per row (`{"server":…}`).

mod common;
// A bench's root file looks for modules beside it; these live in fanout/.
#[path = "fanout/run.rs"]
mod run;
#[path = "fanout/server.rs"]
mod server;
#[path = "fanout/wire.rs"]
mod wire;

use std::str::FromStr;
use std::time::{Duration, Instant};

use common::thousands;

use hdrhistogram::Histogram;
use serde_json::json;

use run::{Measured, Scenario, StuckReport};
use server::{Server, StartError};
use wire::{Proto, Value};

fn main() {
    if std::env::var("FANOUT_SELF_TEST").is_ok_and(|v| v == "1") {
        wire::self_test();
        return;
    }
    let (scenario, order) = match params() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fanout: {e}");
            std::process::exit(2);
        }
    };
    server::raise_fd_limit();
    let tether_bin = std::env::var("TETHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").to_string());
    println!(
        "fan-out: {} reading + {} stuck subscribers, {} messages, canary every {} µs, timeout {} s per server",
        scenario.subscribers,
        scenario.stuck,
        scenario.events,
        scenario.ping_every.as_micros(),
        scenario.timeout.as_secs()
    );

    let mut rows = Vec::new();
    let mut failed = false;
    for (i, &proto) in order.iter().enumerate() {
        if i > 0 {
            settle();
        }
        let started = match proto {
            Proto::Tether => Server::tether(&tether_bin, scenario.subscribers + scenario.stuck + 64),
            Proto::Redis => Server::redis(),
        };
        let server = match started {
            Ok(server) => server,
            Err(StartError::Missing(why)) => {
                println!("\n{}: row skipped: {why}", proto.name());
                continue;
            }
            Err(StartError::Failed(why)) => {
                println!("\n{}: row skipped, the server did not start: {why}", proto.name());
                failed = true;
                continue;
            }
        };
        println!("\n{}: {} (pid {}) ...", proto.name(), server.label, server.pid);
        match measure(&server, &scenario) {
            Ok(row) => {
                print_notes(&row);
                rows.push(row);
            }
            Err(e) => {
                println!("{}: run failed: {e}", proto.name());
                failed = true;
            }
        }
        server.stop();
    }

    if !rows.is_empty() {
        println!();
        print_table(&rows, &scenario);
        println!();
        for row in &rows {
            println!("{}", row_json(row, &scenario));
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// The parameters, from the environment.
fn params() -> Result<(Scenario, Vec<Proto>), String> {
    let scenario = Scenario {
        subscribers: env_or("FANOUT_SUBSCRIBERS", 500)?,
        stuck: env_or("FANOUT_STUCK", 50)?,
        events: env_or("FANOUT_EVENTS", 10_000)?,
        ping_every: Duration::from_micros(env_or("FANOUT_PING_EVERY_US", 1000)?.max(1)),
        timeout: Duration::from_secs(env_or("FANOUT_TIMEOUT_S", 300)?),
    };
    let order = std::env::var("FANOUT_ORDER").unwrap_or_else(|_| "tether,redis".to_string());
    let mut servers = Vec::new();
    for name in order.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let proto = match name {
            "tether" => Proto::Tether,
            "redis" => Proto::Redis,
            _ => return Err(format!("FANOUT_ORDER: unknown server {name:?} (tether, redis)")),
        };
        let skip = match proto {
            Proto::Tether => "FANOUT_SKIP_TETHER",
            Proto::Redis => "FANOUT_SKIP_REDIS",
        };
        if !servers.contains(&proto) && !std::env::var(skip).is_ok_and(|v| v == "1") {
            servers.push(proto);
        }
    }
    Ok((scenario, servers))
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// One row of the table.
struct Row {
    proto: Proto,
    label: String,
    m: Measured,
    /// The longest loop turn, in seconds, and where the figure comes from.
    longest_turn: Option<f64>,
    longest_turn_text: String,
    stuck: StuckReport,
    notes: Vec<String>,
}

/// Runs the scenario on `server`, then asks it what it saw, then reads the
/// stuck subscribers, then closes every client.
fn measure(server: &Server, scenario: &Scenario) -> Result<Row, String> {
    let (m, mut clients) = run::run(server, scenario)?;
    let mut notes = Vec::new();
    let (longest_turn, longest_turn_text) = match server.proto {
        Proto::Tether => tether_facts(server, &mut notes),
        Proto::Redis => redis_facts(server, &mut notes),
    };
    let stuck = clients.drain_stuck();
    drop(clients);
    notes.extend(server.warnings().into_iter().take(10).map(|w| format!("log: {w}")));
    Ok(Row { proto: server.proto, label: server.label.clone(), m, longest_turn, longest_turn_text, stuck, notes })
}

/// From tether's `/metrics`: the longest loop turn, and the streams closed
/// as slow consumers.
fn tether_facts(server: &Server, notes: &mut Vec<String>) -> (Option<f64>, String) {
    let metrics = match server.http.map(|http| server::http_get(http, "/metrics")) {
        Some(Ok(body)) => body,
        Some(Err(e)) => {
            notes.push(format!("/metrics: {e}"));
            return (None, "? (no /metrics)".to_string());
        }
        None => return (None, "?".to_string()),
    };
    // `name{labels} value` or `name value`.
    let samples: Vec<(&str, &str, f64)> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (name, labels) = key.split_once('{').unwrap_or((key, ""));
            Some((name, labels, value.parse().ok()?))
        })
        .collect();
    let slow: f64 = samples
        .iter()
        .filter(|(name, labels, _)| *name == "tether_closed_total" && labels.contains("reason=\"slow-consumer\""))
        .map(|s| s.2)
        .sum();
    notes.push(format!("tether closed {slow} connection(s) as slow consumers (tether_closed_total)"));
    if let Some(&(_, _, streams)) = samples.iter().find(|s| s.0 == "tether_sse_subscribers") {
        notes.push(format!("tether_sse_subscribers after the run: {streams}"));
    }

    if let Some(&(_, _, seconds)) = samples.iter().find(|s| s.0 == "tether_loop_longest_turn_seconds") {
        return (Some(seconds), format!("{} (longest_turn)", secs(seconds)));
    }
    // Cumulative buckets: the highest non-empty one is the first that
    // already holds every turn.
    let buckets: Vec<(&str, f64)> = samples
        .iter()
        .filter(|s| s.0 == "tether_loop_iteration_seconds_bucket")
        .filter_map(|&(_, labels, n)| Some((labels.split("le=\"").nth(1)?.split('"').next()?, n)))
        .collect();
    let Some(&(_, all)) = buckets.last() else { return (None, "? (no loop histogram)".to_string()) };
    let Some(i) = buckets.iter().position(|&(_, n)| n >= all) else { return (None, "?".to_string()) };
    // Rust reads "+Inf" as infinity: the last bucket has no upper bound.
    match buckets[i].0.parse::<f64>() {
        Ok(le) if le.is_finite() => (Some(le), format!("≤ {} (histogram)", secs(le))),
        _ => {
            let below = if i > 0 { buckets[i - 1].0.parse::<f64>().ok() } else { None };
            (below, format!("> {} (histogram)", below.map_or("?".to_string(), secs)))
        }
    }
}

/// From Redis: who is still subscribed, whether it dropped anyone for its
/// output buffer limit, and its latency monitor.
fn redis_facts(server: &Server, notes: &mut Vec<String>) -> (Option<f64>, String) {
    match server::query(server.addr, &["PUBSUB", "NUMSUB", wire::CHANNEL]) {
        Ok(Value::Array(items)) if items.len() == 2 => {
            notes.push(format!("PUBSUB NUMSUB {} after the run: {:?}", wire::CHANNEL, items[1]));
        }
        other => notes.push(format!("PUBSUB NUMSUB: {other:?}")),
    }
    if let Ok(Value::Text(info)) = server::query(server.addr, &["INFO", "stats"]) {
        for field in ["client_output_buffer_limit_disconnections", "pubsub_channels"] {
            if let Some(v) = server::info_field(&info, field) {
                notes.push(format!("INFO {field}: {v}"));
            }
        }
    }
    if let Ok(Value::Text(info)) = server::query(server.addr, &["INFO", "clients"]) {
        for field in ["connected_clients", "client_recent_max_output_buffer"] {
            if let Some(v) = server::info_field(&info, field) {
                notes.push(format!("INFO {field}: {v}"));
            }
        }
    }
    match server::query(server.addr, &["LATENCY", "LATEST"]) {
        Ok(Value::Array(events)) if events.is_empty() => {
            notes.push("LATENCY LATEST: no event of 1 ms or more".to_string());
        }
        Ok(Value::Array(events)) => {
            let worst = events
                .iter()
                .filter_map(|e| match e {
                    Value::Array(f) if f.len() >= 4 => match (&f[0], &f[3]) {
                        (Value::Text(name), Value::Int(max_ms)) => Some((name.clone(), *max_ms)),
                        _ => None,
                    },
                    _ => None,
                })
                .max_by_key(|e| e.1);
            if let Some((name, max_ms)) = worst {
                notes
                    .push(format!("LATENCY LATEST: worst event {name:?} {max_ms} ms (command time, not a whole turn)"));
            }
        }
        other => notes.push(format!("LATENCY LATEST: {other:?}")),
    }
    (None, "n/a".to_string())
}

/// Waits until the kernel has let go of the last run's sockets (at most
/// 10 s), so the next baseline is clean.
fn settle() {
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let mut last = server::tcp_mem_bytes();
    while start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        let now = server::tcp_mem_bytes();
        if now == last && server::tcp_in_use().is_none_or(|n| n < 16) {
            break;
        }
        last = now;
    }
}

/// The canary's round trips, the unanswered pings at their age when the
/// run ended (so a stall that outlasts the run still shows, as a lower
/// bound).
fn histogram(m: &Measured) -> Option<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for &rtt in m.rtts_us.iter().chain(&m.unanswered_age_us) {
        h.saturating_record(rtt);
    }
    (!h.is_empty()).then_some(h)
}

fn print_table(rows: &[Row], sc: &Scenario) {
    println!(
        "| server | window | canary pings | RTT p50 | RTT p99 | RTT max | server CPU | CPU per delivery | deliveries/s | got all {} | longest loop turn | peak RSS | RSS at end | kernel TCP mem peak Δ (system-wide) |",
        sc.events
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let m = &row.m;
        let h = histogram(m);
        let at_least = if m.pings_unanswered > 0 { "≥ " } else { "" };
        let q =
            |q: f64| h.as_ref().map_or("-".to_string(), |h| format!("{at_least}{}", micros(h.value_at_quantile(q))));
        let max = h.as_ref().map_or("-".to_string(), |h| format!("{at_least}{}", micros(h.max())));
        let lost = if m.pings_unanswered > 0 { format!(" ({} unanswered)", m.pings_unanswered) } else { String::new() };
        println!(
            "| {} | {:.2} s{} | {}{} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            row.proto.name(),
            m.window.as_secs_f64(),
            if m.timed_out { " (timed out)" } else { "" },
            m.pings,
            lost,
            q(0.5),
            q(0.99),
            max,
            m.cpu_seconds.map_or("?".to_string(), |s| format!("{:.0} ms", s * 1e3)),
            cpu_per_delivery(m).map_or("-".to_string(), |us| format!("{us:.3} µs")),
            rate(m).map_or("-".to_string(), |r| thousands(r as u64)),
            m.complete,
            sc.subscribers,
            row.longest_turn_text,
            mib(m.rss_peak),
            mib(m.rss_end),
            tcp_delta(m).map_or("?".to_string(), |d| format!("{:.1} MiB", d as f64 / 1048576.0)),
        );
    }
}

fn print_notes(row: &Row) {
    let m = &row.m;
    let name = row.proto.name();
    println!(
        "  set-up {:.2?}; window {:.3} s{}",
        m.setup,
        m.window.as_secs_f64(),
        if m.timed_out { " (TIMED OUT)" } else { "" }
    );
    if let Some(client) = m.client_cpu_seconds {
        println!(
            "  client CPU over the window: {:.0} ms ({:.0}% of one core; the client is one thread)",
            client * 1e3,
            100.0 * client / m.window.as_secs_f64().max(1e-9)
        );
    }
    if m.pings_unanswered > 0 {
        println!(
            "  {} pings of the window were not answered when the run ended: counted at their age then, so the RTT figures are lower bounds (≥)",
            m.pings_unanswered
        );
    }
    println!(
        "  burst written in {}; {} messages delivered to reading subscribers ({} bytes each on the wire), fewest on one: {}",
        m.burst_written.map_or("(not finished)".to_string(), |d| format!("{d:.2?}")),
        thousands(m.delivered),
        m.delivered_bytes.checked_div(m.delivered).map_or("-".to_string(), |b| b.to_string()),
        m.min_delivered
    );
    if !m.readers_closed.is_empty() {
        println!("  {} reading subscribers closed; first: {}", m.readers_closed.len(), m.readers_closed[0]);
    }
    if let (Some(first), Some(last)) = (m.receivers_first, m.receivers_last) {
        println!("  PUBLISH receivers: {first} for the first message, {last} for the last");
    }
    println!(
        "  stuck subscribers, read after the run: {} of them closed by the server; {}..{} messages each",
        row.stuck.closed, row.stuck.min, row.stuck.max
    );
    println!(
        "  kernel TCP memory (system-wide, both ends of the loopback connections): {} before, peak {}",
        mib(m.tcp_mem_base),
        mib(m.tcp_mem_peak)
    );
    for note in m.notes.iter().chain(&row.notes) {
        println!("  {name}: {note}");
    }
}

fn row_json(row: &Row, sc: &Scenario) -> String {
    let m = &row.m;
    let h = histogram(m);
    let q = |q: f64| h.as_ref().map(|h| h.value_at_quantile(q));
    json!({
        "server": row.proto.name(),
        "label": row.label,
        "subscribers": sc.subscribers,
        "stuck": sc.stuck,
        "events": sc.events,
        "ping_every_us": sc.ping_every.as_micros() as u64,
        "timed_out": m.timed_out,
        "window_s": m.window.as_secs_f64(),
        "pings": m.pings,
        "pings_unanswered": m.pings_unanswered,
        // With unanswered pings, the RTT figures are lower bounds.
        "rtt_lower_bound": m.pings_unanswered > 0,
        "rtt_p50_us": q(0.5),
        "rtt_p99_us": q(0.99),
        "rtt_max_us": h.as_ref().map(|h| h.max()),
        "cpu_ms": m.cpu_seconds.map(|s| s * 1e3),
        "cpu_per_delivery_us": cpu_per_delivery(m),
        "client_cpu_ms": m.client_cpu_seconds.map(|s| s * 1e3),
        "delivered": m.delivered,
        "deliveries_per_s": rate(m),
        "bytes_per_delivery": (m.delivered > 0).then(|| m.delivered_bytes as f64 / m.delivered as f64),
        "subscribers_complete": m.complete,
        "subscribers_closed": m.readers_closed.len(),
        // With "longest_turn": "> …", this is the bound it passed.
        "longest_turn_s": row.longest_turn,
        "longest_turn": row.longest_turn_text,
        "peak_rss_bytes": m.rss_peak,
        "end_rss_bytes": m.rss_end,
        "tcp_mem_base_bytes": m.tcp_mem_base,
        "tcp_mem_peak_delta_bytes": tcp_delta(m),
        "stuck_closed": row.stuck.closed,
        "stuck_messages_min": row.stuck.min,
        "stuck_messages_max": row.stuck.max,
        "burst_written_s": m.burst_written.map(|d| d.as_secs_f64()),
    })
    .to_string()
}

fn cpu_per_delivery(m: &Measured) -> Option<f64> {
    (m.delivered > 0).then_some(m.cpu_seconds? * 1e6 / m.delivered as f64)
}

fn rate(m: &Measured) -> Option<f64> {
    (m.delivered > 0 && !m.window.is_zero()).then(|| m.delivered as f64 / m.window.as_secs_f64())
}

fn tcp_delta(m: &Measured) -> Option<i64> {
    Some(m.tcp_mem_peak? as i64 - m.tcp_mem_base? as i64)
}

fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn secs(s: f64) -> String {
    micros((s * 1e6).round() as u64)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}
