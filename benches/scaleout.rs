//! Scale-out cost: what Redis holds per online collar, how many Redis
//! commands a collar's connect, event and disconnect cost, and how much
//! latency the hop to another gateway adds to a command and to a location
//! query.
//!
//! # What it measures
//!
//! One `redis-server` and G gateways (default 3) on it (`--redis`), all on
//! free loopback ports. N collars (default 10,000) connect to gateway A.
//!
//! - **Memory.** Redis's `used_memory` (`INFO memory`) before the collars
//!   connect, once the directory holds them all (`ZCARD tether:devices`),
//!   after the events, and after they all left; per online collar, with
//!   and without the event stream's growth (`tether:events`, capped near
//!   `--event-history` whatever the fleet's size); and the size of each key
//!   kind (`MEMORY USAGE … SAMPLES 0`): a sample of `tether:dev:<MAC>`
//!   hashes (without and with a last fix), and the sorted set
//!   `tether:devices`, A's set `tether:gw:<id>:devs` divided by N, and the
//!   fleet-wide epoch counter `tether:epoch` (one key, whatever N).
//! - **Commands.** Calls per command (`INFO commandstats`) over three
//!   windows: the N connects, K `LOCATION:` lines (default 10,000, spread
//!   over the collars and paced at `SCALEOUT_EVENT_RATE` a second: each is
//!   an event), and the N disconnects; per operation, per command, marked
//!   as sent by a gateway (a round trip on one of its links) or run inside
//!   one of tether's functions (`FCALL`; the names come from the library
//!   the gateway loads), with totals. The gateways' idle work (liveness
//!   refresh, sweep, the stream tails' `XREAD BLOCK` coming back empty) is
//!   measured first over an idle window and its rate times each window's
//!   length is taken off; the idle rate is its own column. The bench's own
//!   commands are counted and taken off too. Cross-check: the gateways'
//!   `tether_redis_commands_total`.
//! - **The hop.** M (default 1,000) sequential `POST
//!   /devices/{mac}/commands` for a collar on A, asked of A (local) and of
//!   B (carried over the bus), interleaved one for one, on one kept-alive
//!   connection to each; then the same for `GET /devices/{mac}/location`,
//!   the collar (a thread of its own) answering each `location` with a fix
//!   at once. p50 / p99 / max per case, and what the hop adds at p50 and
//!   p99.
//!
//! # How
//!
//! A window starts and ends on a settled fleet: every gateway has no Redis
//! reply outstanding (`tether_redis_pending` 0 in `/metrics`) and every
//! stream tail is blocked in `XREAD` (`blocked_clients` = G), i.e. has read
//! the whole stream. Its end is the directory's count for connects and
//! disconnects, and the stream's `entries-added` for events. Collars are
//! blocking sockets connected in chunks of 256 (connect, `IDENTIFY:<MAC>`,
//! then the chunk's `OK`s). The gateways run with `--heartbeat-interval 0`
//! so that idle collars are not pinged during a long run (pings cost no
//! Redis command either way). Every wait is bounded
//! (`SCALEOUT_TIMEOUT_S`); the processes are killed at the end.
//!
//! # Running it
//!
//! ```sh
//! cargo bench --bench scaleout
//! # smaller, two gateways, events as fast as the sockets take them
//! SCALEOUT_COLLARS=2000 SCALEOUT_GATEWAYS=2 SCALEOUT_EVENT_RATE=0 cargo bench --bench scaleout
//! # another build of the gateway
//! TETHER_BIN=/path/to/tether cargo bench --bench scaleout
//! ```
//!
//! Environment: `SCALEOUT_COLLARS` (10000), `SCALEOUT_GATEWAYS` (3, at
//! least 2), `SCALEOUT_EVENTS` (10000), `SCALEOUT_EVENT_RATE` (2000 lines
//! a second; 0: unpaced), `SCALEOUT_REQUESTS` (1000 per case),
//! `SCALEOUT_IDLE_S` (5), `SCALEOUT_SAMPLE` (100 device keys sized),
//! `SCALEOUT_TIMEOUT_S` (120, per wait), `TETHER_BIN`. Needs
//! `redis-server` 7 on `PATH` (`apt-get install redis-server`); without it
//! the bench says so and measures nothing. Output: three markdown tables
//! and one JSON line per row (`{"table":…}`).

mod common;
// A bench's root file looks for modules beside it; these live in scaleout/.
#[path = "scaleout/clients.rs"]
mod clients;
#[path = "scaleout/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::thousands;

use hdrhistogram::Histogram;
use serde_json::json;

use clients::{Answerer, Http, mac};
use fleet::{GatewayProcess, Probe, RedisProcess, RedisStart};

/// The key of the directory's sorted set, and of the event stream.
const DEVICES: &str = "tether:devices";
const EVENTS: &str = "tether:events";
/// Requests per case not recorded (connections and caches warm up).
const WARM_UP: usize = 50;

struct Params {
    collars: usize,
    gateways: usize,
    events: usize,
    event_rate: u64,
    requests: usize,
    idle: Duration,
    sample: usize,
    timeout: Duration,
}

fn main() {
    let p = match params() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("scaleout: {e}");
            std::process::exit(2);
        }
    };
    raise_fd_limit();
    let redis = match RedisProcess::start() {
        Ok(redis) => redis,
        Err(RedisStart::Missing) => {
            println!("scaleout: redis-server is not installed (apt-get install redis-server); nothing measured");
            return;
        }
        Err(RedisStart::Failed(why)) => {
            eprintln!("scaleout: {why}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&p, &redis) {
        eprintln!("scaleout: {e}");
        // exit() runs no destructor: kill Redis first.
        drop(redis);
        std::process::exit(1);
    }
}

fn params() -> Result<Params, String> {
    let p = Params {
        collars: env_or("SCALEOUT_COLLARS", 10_000)?,
        gateways: env_or("SCALEOUT_GATEWAYS", 3)?,
        events: env_or("SCALEOUT_EVENTS", 10_000)?,
        event_rate: env_or("SCALEOUT_EVENT_RATE", 2000)?,
        requests: env_or("SCALEOUT_REQUESTS", 1000)?,
        idle: Duration::from_secs(env_or("SCALEOUT_IDLE_S", 5)?),
        sample: env_or("SCALEOUT_SAMPLE", 100)?,
        timeout: Duration::from_secs(env_or("SCALEOUT_TIMEOUT_S", 120)?),
    };
    if p.gateways < 2 {
        return Err("SCALEOUT_GATEWAYS must be at least 2 (a hop needs two)".to_string());
    }
    if p.collars == 0 || p.requests == 0 || p.idle.is_zero() {
        return Err("SCALEOUT_COLLARS, SCALEOUT_REQUESTS and SCALEOUT_IDLE_S must be above 0".to_string());
    }
    Ok(p)
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Command calls over one window, the bench's own taken off.
struct Window {
    calls: BTreeMap<String, u64>,
    secs: f64,
    /// What the gateways say they sent (`tether_redis_commands_total`).
    sent: f64,
}

impl Window {
    /// Calls of `name` per operation, the idle rate over this window's
    /// length taken off.
    fn per_op(&self, name: &str, idle: &Window, ops: usize) -> f64 {
        let background = idle.calls.get(name).copied().unwrap_or(0) as f64 / idle.secs * self.secs;
        (self.calls.get(name).copied().unwrap_or(0) as f64 - background).max(0.0) / ops.max(1) as f64
    }

    fn sent_per_op(&self, idle: &Window, ops: usize) -> f64 {
        (self.sent - idle.sent / idle.secs * self.secs).max(0.0) / ops.max(1) as f64
    }
}

/// The memory figures.
#[derive(Default)]
struct Memory {
    base: u64,
    online: u64,
    after_events: u64,
    after_leaving: u64,
    stream_base: u64,
    stream_online: u64,
    stream_after_events: u64,
    /// Bytes per key kind, per online collar.
    dev_hash: f64,
    dev_hash_with_fix: Option<f64>,
    devices_zset: u64,
    gateway_set: u64,
    epochs: u64,
    epochs_after_leaving: u64,
    stream_after_leaving: u64,
    keys_after_leaving: i64,
}

fn run(p: &Params, redis: &RedisProcess) -> Result<(), String> {
    let bin = std::env::var("TETHER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").to_string());
    let url = redis.url();
    let mut gateways = Vec::new();
    for _ in 0..p.gateways {
        gateways.push(GatewayProcess::start(&bin, &url, &["--heartbeat-interval", "0"])?);
    }
    let (a, b) = (&gateways[0], &gateways[1]);
    println!(
        "scale-out: redis-server {} on {}, {} gateways ({bin}), {} collars on A, {} events at {}, {} requests per case",
        redis.version,
        redis.addr,
        p.gateways,
        p.collars,
        p.events,
        if p.event_rate == 0 { "full speed".to_string() } else { format!("{}/s", p.event_rate) },
        p.requests
    );
    let mut probe = Probe::connect(redis.addr)?;
    let inner = function_commands();

    println!("idle window ({} s) ...", p.idle.as_secs());
    let idle = window(&mut probe, &gateways, p, |_| {
        // The idle window is a length of time by definition.
        std::thread::sleep(p.idle);
        Ok(())
    })?;

    let mut mem = Memory { base: probe.used_memory()?, ..Memory::default() };
    mem.stream_base = probe.memory_usage(EVENTS)?.unwrap_or(0);

    println!("connecting {} collars to A ...", p.collars);
    let mut collars = Vec::new();
    let connects = window(&mut probe, &gateways, p, |probe| {
        let start = Instant::now();
        collars = clients::connect_collars(a.devices, 0, p.collars)?;
        println!("  identified in {:.2?}", start.elapsed());
        wait_for(probe, p, "the directory to hold every collar", |probe| {
            Ok(probe.int(&["ZCARD", DEVICES])? as usize == p.collars)
        })
    })?;
    mem.online = probe.used_memory()?;
    mem.stream_online = probe.memory_usage(EVENTS)?.unwrap_or(0);
    let sample = p.sample.clamp(1, p.collars);
    mem.dev_hash = dev_hash_mean(&mut probe, sample)?;
    mem.devices_zset = probe.memory_usage(DEVICES)?.unwrap_or(0);
    mem.gateway_set = probe.memory_usage(&format!("tether:gw:{}:devs", a.id))?.unwrap_or(0);
    mem.epochs = probe.memory_usage("tether:epoch")?.unwrap_or(0);

    println!("{} LOCATION lines ...", p.events);
    let added = probe.stream_added(EVENTS)?;
    let events = window(&mut probe, &gateways, p, |probe| {
        let took = clients::send_locations(&mut collars, p.events, p.event_rate)?;
        println!("  written in {took:.2?}");
        let want = added + p.events as u64;
        wait_for(probe, p, "every event to reach the stream", |probe| Ok(probe.stream_added(EVENTS)? >= want))
    })?;
    mem.after_events = probe.used_memory()?;
    mem.stream_after_events = probe.memory_usage(EVENTS)?.unwrap_or(0);
    if p.events >= sample {
        mem.dev_hash_with_fix = Some(dev_hash_mean(&mut probe, sample)?);
    }

    // The p99 of the hop depends on who else wants the CPU: say so.
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split(' ').next()?.parse::<f64>().ok());
    println!(
        "{} requests per case, local on A and remote through B (load average {}) ...",
        p.requests,
        load.map_or("?".to_string(), |l| l.to_string())
    );
    let answerer = Answerer::start(a.devices, p.collars)?;
    wait_for(&mut probe, p, "the answering collar in the directory", |probe| {
        Ok(probe.int(&["ZCARD", DEVICES])? as usize == p.collars + 1)
    })?;
    let latency = hop_latency(a, b, &mac(p.collars), p.requests);
    let answered = answerer.stop();
    let latency = latency?;
    println!("  the collar answered {} location queries", answered?);
    wait_for(&mut probe, p, "the answering collar to leave", |probe| {
        Ok(probe.int(&["ZCARD", DEVICES])? as usize == p.collars)
    })?;

    println!("disconnecting {} collars ...", p.collars);
    let leaving = window(&mut probe, &gateways, p, |probe| {
        drop(std::mem::take(&mut collars));
        wait_for(probe, p, "the directory to be empty", |probe| Ok(probe.int(&["ZCARD", DEVICES])? == 0))
    })?;
    mem.after_leaving = probe.used_memory()?;
    mem.epochs_after_leaving = probe.memory_usage("tether:epoch")?.unwrap_or(0);
    mem.stream_after_leaving = probe.memory_usage(EVENTS)?.unwrap_or(0);
    mem.keys_after_leaving = probe.int(&["DBSIZE"])?;

    for (name, gateway) in names().zip(&gateways) {
        for warning in gateway.warnings().into_iter().take(5) {
            println!("  gateway {name} (pid {}): {warning}", gateway.pid());
        }
    }

    let ops = Ops { connects: &connects, events: &events, leaving: &leaving, idle: &idle };
    println!();
    print_memory(&mem, p);
    println!();
    print_commands(&ops, &inner, p);
    println!();
    print_latency(&latency, load);
    println!();
    for line in
        memory_json(&mem, p).into_iter().chain(commands_json(&ops, &inner, p)).chain(latency_json(&latency, p, load))
    {
        println!("{line}");
    }
    Ok(())
}

/// Gateway names in the output: A, B, C, ...
fn names() -> impl Iterator<Item = char> {
    'A'..='Z'
}

/// Runs `action` between two snapshots of Redis's command counts and the
/// gateways' own, each taken on a settled fleet.
fn window(
    probe: &mut Probe,
    gateways: &[GatewayProcess],
    p: &Params,
    action: impl FnOnce(&mut Probe) -> Result<(), String>,
) -> Result<Window, String> {
    settle(probe, gateways, p)?;
    let (before, sent_before, start) = (probe.commandstats()?, sent_total(gateways)?, Instant::now());
    action(probe)?;
    settle(probe, gateways, p)?;
    let (after, sent_after, secs) = (probe.commandstats()?, sent_total(gateways)?, start.elapsed().as_secs_f64());
    let calls = after
        .iter()
        .map(|(name, &n)| (name.clone(), n.saturating_sub(before.get(name).copied().unwrap_or(0))))
        .filter(|&(_, n)| n > 0)
        .collect();
    Ok(Window { calls, secs, sent: sent_after - sent_before })
}

/// `tether_redis_commands_total`, summed over the gateways.
fn sent_total(gateways: &[GatewayProcess]) -> Result<f64, String> {
    let mut total = 0.0;
    for gateway in gateways {
        total += gateway.metrics()?.get("tether_redis_commands_total").copied().unwrap_or(0.0);
    }
    Ok(total)
}

/// Waits until no gateway waits on a Redis reply and every stream tail is
/// blocked in `XREAD` (it has read the whole stream), twice in a row.
fn settle(probe: &mut Probe, gateways: &[GatewayProcess], p: &Params) -> Result<(), String> {
    let deadline = Instant::now() + p.timeout;
    let mut in_a_row = 0;
    while in_a_row < 2 {
        let mut idle = true;
        for gateway in gateways {
            idle &= gateway.metrics()?.get("tether_redis_pending").copied() == Some(0.0);
        }
        idle &= probe.blocked_clients()? == gateways.len() as u64;
        in_a_row = if idle { in_a_row + 1 } else { 0 };
        if Instant::now() > deadline {
            return Err(format!("the fleet did not settle within {:?}", p.timeout));
        }
        // Polling gateways and Redis from outside: nothing to block on.
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Polls `done` every 20 ms until it holds, at most `SCALEOUT_TIMEOUT_S`.
fn wait_for(
    probe: &mut Probe,
    p: &Params,
    what: &str,
    mut done: impl FnMut(&mut Probe) -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + p.timeout;
    while !done(probe)? {
        if Instant::now() > deadline {
            return Err(format!("timed out after {:?} waiting for {what}", p.timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The mean `MEMORY USAGE` of the first `n` collars' directory entries.
fn dev_hash_mean(probe: &mut Probe, n: usize) -> Result<f64, String> {
    let mut total = 0;
    for i in 0..n {
        let key = format!("tether:dev:{}", mac(i));
        total += probe.memory_usage(&key)?.ok_or_else(|| format!("{key} is missing"))?;
    }
    Ok(total as f64 / n as f64)
}

/// The commands tether's functions run (`redis.call('NAME'`), lower case.
fn function_commands() -> BTreeSet<String> {
    tether::redis::FUNCTIONS
        .split("redis.call(")
        .skip(1)
        .filter_map(|rest| rest.strip_prefix('\'')?.split('\'').next())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// One case's round trips, in microseconds.
struct Case {
    name: &'static str,
    local: Histogram<u64>,
    remote: Histogram<u64>,
}

/// Local and remote requests for the collar `mac` on `a`, one for one.
fn hop_latency(a: &GatewayProcess, b: &GatewayProcess, mac: &str, m: usize) -> Result<Vec<Case>, String> {
    let path_mac = mac.replace(':', "-");
    let (mut on_a, mut on_b) = (Http::new(a.http), Http::new(b.http));
    let command = format!("/devices/{path_mac}/commands");
    let location = format!("/devices/{path_mac}/location");
    let cases: [(&'static str, &str, &str, &[u8], u16); 2] =
        [("command", "POST", &command, b"BUZZ", 202), ("location", "GET", &location, b"", 200)];
    let mut out = Vec::new();
    for (name, method, path, body, status) in cases {
        let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let (mut local, mut remote) = (new(), new());
        for i in 0..WARM_UP + m {
            for (http, h) in [(&mut on_a, &mut local), (&mut on_b, &mut remote)] {
                let start = Instant::now();
                let (got, answer) = http.request(method, path, body)?;
                let took = start.elapsed().as_micros() as u64;
                if got != status {
                    return Err(format!("{method} {path}: {got} {}", String::from_utf8_lossy(&answer)));
                }
                if i >= WARM_UP {
                    h.saturating_record(took.max(1));
                }
            }
        }
        out.push(Case { name, local, remote });
    }
    if on_a.redials + on_b.redials > 0 {
        println!("  kept-alive connections redialed: {} on A, {} on B", on_a.redials, on_b.redials);
    }
    Ok(out)
}

/// The three command windows and the idle one.
struct Ops<'a> {
    connects: &'a Window,
    events: &'a Window,
    leaving: &'a Window,
    idle: &'a Window,
}

fn print_memory(m: &Memory, p: &Params) {
    let n = p.collars as f64;
    let delta = m.online as f64 - m.base as f64;
    let stream = m.stream_online as f64 - m.stream_base as f64;
    println!("Redis memory, {} collars online on A ({} gateways):", p.collars, p.gateways);
    println!();
    println!("| figure | bytes | per online collar |");
    println!("|---|---|---|");
    println!("| `used_memory` before the collars | {} | |", thousands(m.base));
    println!("| `used_memory` with all online | {} | {:.0} |", thousands(m.online), delta / n);
    println!(
        "| of which the event stream's growth (`{EVENTS}`, {} → {} bytes; capped near `--event-history`) | {} | {:.0} |",
        thousands(m.stream_base),
        thousands(m.stream_online),
        thousands(stream.max(0.0) as u64),
        stream / n
    );
    println!(
        "| the rest: the directory | {} | **{:.0}** |",
        thousands((delta - stream).max(0.0) as u64),
        (delta - stream) / n
    );
    println!("| `tether:dev:<MAC>` hash (mean of {}) | | {:.0} |", p.sample.min(p.collars), m.dev_hash);
    if let Some(fix) = m.dev_hash_with_fix {
        println!("| `tether:dev:<MAC>` hash with a last fix | | {fix:.0} |");
    }
    println!("| `{DEVICES}` sorted set | {} | {:.0} |", thousands(m.devices_zset), m.devices_zset as f64 / n);
    println!("| `tether:gw:<A>:devs` set | {} | {:.0} |", thousands(m.gateway_set), m.gateway_set as f64 / n);
    println!("| `tether:epoch` counter (one key) | {} | {:.2} |", thousands(m.epochs), m.epochs as f64 / n);
    println!(
        "| `used_memory` after {} events (stream {} bytes) | {} | {:.0} |",
        p.events,
        thousands(m.stream_after_events),
        thousands(m.after_events),
        (m.after_events as f64 - m.base as f64) / n
    );
    println!(
        "| `used_memory` after all left ({} keys left) | {} | {:.0} |",
        m.keys_after_leaving,
        thousands(m.after_leaving),
        (m.after_leaving as f64 - m.base as f64) / n
    );
    println!(
        "| of which the event stream (`{EVENTS}`) | {} | {:.0} |",
        thousands(m.stream_after_leaving),
        m.stream_after_leaving as f64 / n
    );
    println!(
        "| of which the `tether:epoch` counter | {} | {:.2} |",
        thousands(m.epochs_after_leaving),
        m.epochs_after_leaving as f64 / n
    );
}

fn print_commands(o: &Ops<'_>, inner: &BTreeSet<String>, p: &Params) {
    println!(
        "Redis commands per operation ({} gateways; idle work taken off at its measured rate; `INFO commandstats`):",
        p.gateways
    );
    println!();
    println!("| command | where | per connect | per event | per disconnect | idle, per second (all gateways) |");
    println!("|---|---|---|---|---|---|");
    let idle_rate = |name: &str| o.idle.calls.get(name).copied().unwrap_or(0) as f64 / o.idle.secs;
    for name in command_names(o) {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            place(&name, inner),
            o.connects.per_op(&name, o.idle, p.collars),
            o.events.per_op(&name, o.idle, p.events),
            o.leaving.per_op(&name, o.idle, p.collars),
            idle_rate(&name)
        );
    }
    for (label, filter) in totals() {
        let sum = |w: &Window, ops: usize| -> f64 {
            command_names(o).iter().filter(|n| filter(inner.contains(*n))).map(|n| w.per_op(n, o.idle, ops)).sum()
        };
        let idle: f64 = command_names(o).iter().filter(|n| filter(inner.contains(*n))).map(|n| idle_rate(n)).sum();
        println!(
            "| **{label}** | | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** |",
            sum(o.connects, p.collars),
            sum(o.events, p.events),
            sum(o.leaving, p.collars),
            idle
        );
    }
    println!(
        "| gateways' `tether_redis_commands_total` | | {:.2} | {:.2} | {:.2} | {:.2} |",
        o.connects.sent_per_op(o.idle, p.collars),
        o.events.sent_per_op(o.idle, p.events),
        o.leaving.sent_per_op(o.idle, p.collars),
        o.idle.sent / o.idle.secs
    );
    println!();
    println!(
        "Windows: connects {:.2} s, events {:.2} s, disconnects {:.2} s, idle {:.2} s.",
        o.connects.secs, o.events.secs, o.leaving.secs, o.idle.secs
    );
}

/// Every command seen in any window, in name order.
fn command_names(o: &Ops<'_>) -> BTreeSet<String> {
    [o.connects, o.events, o.leaving, o.idle].iter().flat_map(|w| w.calls.keys().cloned()).collect()
}

fn place(name: &str, inner: &BTreeSet<String>) -> &'static str {
    if inner.contains(name) { "in a function" } else { "sent by a gateway" }
}

type Filter = fn(bool) -> bool;

/// The total rows: what the gateways sent, what ran inside functions, all.
fn totals() -> [(&'static str, Filter); 3] {
    [("sent by gateways", |inner| !inner), ("run inside functions", |inner| inner), ("all", |_| true)]
}

fn print_latency(cases: &[Case], load: Option<f64>) {
    println!(
        "The cross-gateway hop (sequential requests, kept-alive connections, µs; 1-minute load average {}):",
        load.map_or("?".to_string(), |l| l.to_string())
    );
    println!();
    println!("| request | asked of | n | p50 | p99 | max | the hop adds (p50 / p99) |");
    println!("|---|---|---|---|---|---|---|");
    for case in cases {
        let (l, r) = (&case.local, &case.remote);
        for (label, h) in [("A, the collar's gateway", l), ("B (over Redis)", r)] {
            let adds = if std::ptr::eq(h, r) {
                format!(
                    "{} / {}",
                    signed(r.value_at_quantile(0.5) as i64 - l.value_at_quantile(0.5) as i64),
                    signed(r.value_at_quantile(0.99) as i64 - l.value_at_quantile(0.99) as i64)
                )
            } else {
                String::new()
            };
            println!(
                "| {} | {label} | {} | {} | {} | {} | {adds} |",
                case_label(case.name),
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            );
        }
    }
}

fn case_label(name: &str) -> &'static str {
    if name == "command" { "`POST /devices/{mac}/commands`" } else { "`GET /devices/{mac}/location`" }
}

fn signed(n: i64) -> String {
    if n >= 0 { format!("+{n}") } else { n.to_string() }
}

fn memory_json(m: &Memory, p: &Params) -> Vec<String> {
    let n = p.collars as f64;
    let stream = m.stream_online as f64 - m.stream_base as f64;
    vec![
        json!({
            "table": "memory",
            "collars": p.collars,
            "gateways": p.gateways,
            "events": p.events,
            "used_memory_before": m.base,
            "used_memory_online": m.online,
            "used_memory_after_events": m.after_events,
            "used_memory_after_leaving": m.after_leaving,
            "per_online_collar": (m.online as f64 - m.base as f64) / n,
            "stream_before": m.stream_base,
            "stream_online": m.stream_online,
            "stream_after_events": m.stream_after_events,
            "directory_per_online_collar": (m.online as f64 - m.base as f64 - stream) / n,
            "dev_hash_mean": m.dev_hash,
            "dev_hash_with_fix_mean": m.dev_hash_with_fix,
            "devices_zset": m.devices_zset,
            "gateway_set": m.gateway_set,
            "epoch_counter": m.epochs,
            "epoch_counter_after_leaving": m.epochs_after_leaving,
            "stream_after_leaving": m.stream_after_leaving,
            "keys_after_leaving": m.keys_after_leaving,
            "left_behind_per_collar": (m.after_leaving as f64 - m.base as f64) / n,
        })
        .to_string(),
    ]
}

fn commands_json(o: &Ops<'_>, inner: &BTreeSet<String>, p: &Params) -> Vec<String> {
    let mut rows: Vec<String> = command_names(o)
        .iter()
        .map(|name| {
            json!({
                "table": "commands",
                "gateways": p.gateways,
                "command": name,
                "where": place(name, inner),
                "per_connect": o.connects.per_op(name, o.idle, p.collars),
                "per_event": o.events.per_op(name, o.idle, p.events),
                "per_disconnect": o.leaving.per_op(name, o.idle, p.collars),
                "idle_per_second": o.idle.calls.get(name).copied().unwrap_or(0) as f64 / o.idle.secs,
                "raw": [o.connects.calls.get(name), o.events.calls.get(name), o.leaving.calls.get(name), o.idle.calls.get(name)],
            })
            .to_string()
        })
        .collect();
    rows.push(
        json!({
            "table": "commands",
            "gateways": p.gateways,
            "command": "tether_redis_commands_total",
            "per_connect": o.connects.sent_per_op(o.idle, p.collars),
            "per_event": o.events.sent_per_op(o.idle, p.events),
            "per_disconnect": o.leaving.sent_per_op(o.idle, p.collars),
            "idle_per_second": o.idle.sent / o.idle.secs,
            "window_s": [o.connects.secs, o.events.secs, o.leaving.secs, o.idle.secs],
        })
        .to_string(),
    );
    rows
}

fn latency_json(cases: &[Case], p: &Params, load: Option<f64>) -> Vec<String> {
    let mut rows = Vec::new();
    for case in cases {
        for (asked_of, h) in [("local", &case.local), ("remote", &case.remote)] {
            rows.push(
                json!({
                    "table": "latency",
                    "gateways": p.gateways,
                    "request": case.name,
                    "asked_of": asked_of,
                    "n": h.len(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p99_us": h.value_at_quantile(0.99),
                    "max_us": h.max(),
                    "mean_us": h.mean(),
                    "loadavg_1m": load,
                })
                .to_string(),
            );
        }
    }
    rows
}

/// Raises the soft open-file limit to the hard one: the bench holds a
/// socket per collar (the gateways raise their own).
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            // An unlimited hard limit still stops at fs.nr_open.
            limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
