//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Renders the [`Stats`] counters and the current levels of the reactor
//! ([`Levels`]) and of the hub ([`HubLevels`]). Every label combination is
//! always present (zero until it happens), so series do not appear out of
//! nowhere.

use std::fmt::Write as _;

use crate::close::CloseReason;
use crate::reactor::{Budget, Kind, Levels};
use crate::stats::{LOOP_BUCKETS, LineKind, Stats};

/// The hub's current levels, read when the page is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubLevels {
    pub devices_online: usize,
    pub sse_subscribers: usize,
    pub long_polls: usize,
    pub events_held: usize,
    /// The position of the newest event in this gateway's log (its local
    /// id: `L<n>`, or plainly `n` without `--redis`), for a client that
    /// wants to replay the last few.
    pub event_position: u64,
    /// Bytes held by the rendered frames of recent events.
    pub frame_cache_bytes: usize,
    /// Output accepted for sending that the kernel has not taken yet.
    pub unsent_bytes: usize,
    pub uptime_seconds: f64,
    /// When the gateway started, as Unix time: tells one run from the next
    /// (the dashboard reloads when it changes).
    pub start_time_seconds: f64,
    /// With `--redis`.
    pub redis: Option<RedisLevels>,
    /// With `--workers`.
    pub worker: Option<WorkerLevels>,
}

/// Which worker this process is (`--workers`).
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerLevels {
    pub index: usize,
    /// Times the supervisor restarted this worker.
    pub restarts: u64,
}

/// The Redis side's figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisLevels {
    pub up: bool,
    /// Commands sent and not answered yet.
    pub pending: usize,
    pub stats: crate::hub::cluster::ClusterStats,
}

/// Appends the whole exposition to `out`.
pub fn render(out: &mut String, stats: &Stats, levels: &Levels, hub: &HubLevels) {
    let mut m = Writer { out };

    m.family("tether_connections", "gauge", "Connections held (open or closing), by kind.");
    for kind in Kind::ALL {
        m.sample("tether_connections", &[("kind", kind.as_str())], levels.held[kind as usize] as u64);
    }
    m.single("tether_devices_online", "gauge", "Identified devices online.", hub.devices_online as u64);
    m.single("tether_sse_subscribers", "gauge", "Open Server-Sent Events streams.", hub.sse_subscribers as u64);
    m.single("tether_long_polls", "gauge", "Long-poll requests waiting for an answer.", hub.long_polls as u64);
    m.single("tether_events_held", "gauge", "Events held in the replay ring.", hub.events_held as u64);
    m.single(
        "tether_event_position",
        "gauge",
        "Local id of the newest event in the log (Last-Event-ID L<n>, or n without --redis).",
        hub.event_position,
    );
    m.single(
        "tether_event_frame_bytes",
        "gauge",
        "Bytes of rendered event frames kept while streams are open.",
        hub.frame_cache_bytes as u64,
    );
    m.single("tether_events_delivered_total", "counter", "Events sent on event streams.", stats.events_delivered);

    m.family("tether_accepted_total", "counter", "Connections accepted, by kind (server-full rejections included).");
    for kind in Kind::ALL {
        m.sample("tether_accepted_total", &[("kind", kind.as_str())], stats.accepted[kind as usize]);
    }
    m.family("tether_closed_total", "counter", "Connections closed, by kind and reason.");
    for kind in Kind::ALL {
        for reason in CloseReason::ALL {
            let labels = [("kind", kind.as_str()), ("reason", reason.as_str())];
            m.sample("tether_closed_total", &labels, stats.closed(kind, reason));
        }
    }
    m.family("tether_rejected_total", "counter", "Connections turned away: server full, or accept out of descriptors.");
    let full: u64 = Kind::ALL.iter().map(|&k| stats.closed(k, CloseReason::ServerFull)).sum();
    m.sample("tether_rejected_total", &[("reason", "server-full")], full);
    m.sample("tether_rejected_total", &[("reason", "emfile")], stats.accept_fd_exhausted);
    m.single("tether_accept_errors_total", "counter", "Other accept failures.", stats.accept_failed);

    m.family("tether_lines_received_total", "counter", "Device lines received, by type.");
    for kind in LineKind::ALL {
        m.sample("tether_lines_received_total", &[("type", kind.as_str())], stats.lines_in[kind as usize]);
    }
    m.single("tether_lines_sent_total", "counter", "Lines sent to devices.", stats.lines_out);
    m.single("tether_bytes_received_total", "counter", "Bytes read from all connections.", stats.bytes_in);
    m.single("tether_bytes_sent_total", "counter", "Bytes written to all connections.", stats.bytes_out);
    m.single("tether_socket_reads_total", "counter", "read calls that returned bytes.", stats.reads);
    m.single("tether_socket_writes_total", "counter", "write calls that wrote bytes.", stats.writes);
    m.single("tether_takeovers_total", "counter", "Identifications that replaced a connection.", stats.takeovers);
    m.single("tether_heartbeat_pings_total", "counter", "Heartbeat PINGs sent.", stats.heartbeat_pings);
    let timeouts = stats.closed(Kind::Device, CloseReason::HeartbeatTimeout);
    m.single("tether_heartbeat_timeouts_total", "counter", "Devices closed for not answering a heartbeat.", timeouts);
    m.single("tether_events_published_total", "counter", "Device events published.", stats.events_published);
    m.family("tether_device_auth_total", "counter", "Device AUTH answers (--device-key-file), by result.");
    m.sample("tether_device_auth_total", &[("result", "ok")], stats.device_auths);
    m.sample("tether_device_auth_total", &[("result", "failed")], stats.device_auth_failures);
    let quarantines = stats.flap_quarantines;
    m.single("tether_flap_quarantines_total", "counter", "MACs quarantined for flapping.", quarantines);
    let refusals = stats.flap_refusals;
    m.single("tether_flap_refusals_total", "counter", "IDENTIFYs refused for a quarantined MAC.", refusals);
    m.family("tether_tls_handshakes_total", "counter", "TLS handshakes completed, full or resumed.");
    m.sample("tether_tls_handshakes_total", &[("kind", "full")], stats.tls_handshakes[0]);
    m.sample("tether_tls_handshakes_total", &[("kind", "resumed")], stats.tls_handshakes[1]);

    m.family("tether_http_responses_total", "counter", "HTTP responses made, by status (queued for sending).");
    for (status, n) in &stats.http_responses {
        m.sample("tether_http_responses_total", &[("status", &status.to_string())], *n);
    }

    m.single("tether_loop_iterations_total", "counter", "Turns of the event loop.", stats.loop_iterations);
    m.single_f(
        "tether_loop_busy_seconds_total",
        "counter",
        "Time spent handling events.",
        stats.loop_busy.as_secs_f64(),
    );
    m.single_f(
        "tether_loop_wait_seconds_total",
        "counter",
        "Time spent waiting in poll.",
        stats.loop_wait.as_secs_f64(),
    );
    m.single_f(
        "tether_loop_longest_turn_seconds",
        "gauge",
        "The longest busy time of one loop turn since the start.",
        stats.longest_turn_ever.as_secs_f64(),
    );
    m.family(
        "tether_budget_spent_total",
        "counter",
        "Times a per-turn budget ran out with work left (per connection for the per-connection budgets).",
    );
    for budget in Budget::ALL {
        m.sample("tether_budget_spent_total", &[("budget", budget.as_str())], stats.budget_spent[budget as usize]);
    }
    m.family("tether_loop_iteration_seconds", "histogram", "Busy time of each loop turn.");
    let mut cumulative = 0;
    for (i, le) in LOOP_BUCKETS.iter().enumerate() {
        cumulative += stats.loop_histogram[i];
        m.sample("tether_loop_iteration_seconds_bucket", &[("le", &le.to_string())], cumulative);
    }
    cumulative += stats.loop_histogram[LOOP_BUCKETS.len()];
    m.sample("tether_loop_iteration_seconds_bucket", &[("le", "+Inf")], cumulative);
    m.sample_f("tether_loop_iteration_seconds_sum", &[], stats.loop_busy.as_secs_f64());
    m.sample("tether_loop_iteration_seconds_count", &[], cumulative);

    m.single("tether_fd_limit", "gauge", "Soft RLIMIT_NOFILE.", levels.fd_limit);
    m.single(
        "tether_max_connections",
        "gauge",
        "Device connection cap in force.",
        levels.caps[Kind::Device as usize] as u64,
    );
    m.single(
        "tether_max_http_connections",
        "gauge",
        "HTTP connection cap in force.",
        levels.caps[Kind::Http as usize] as u64,
    );
    m.single("tether_pooled_buffers", "gauge", "Output buffers kept for reuse.", levels.pooled_buffers as u64);
    m.single(
        "tether_unsent_bytes",
        "gauge",
        "Output held in user space that the kernel has not taken yet, all connections together.",
        hub.unsent_bytes as u64,
    );
    if let Some(rss) = resident_memory() {
        m.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    }
    m.single_f("tether_uptime_seconds", "gauge", "Seconds since the gateway started.", hub.uptime_seconds);
    m.single_f(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        hub.start_time_seconds,
    );
    if let Some(redis) = &hub.redis {
        redis_metrics(&mut m, redis, stats);
    }
    if let Some(worker) = &hub.worker {
        m.single(
            "tether_worker_index",
            "gauge",
            "This worker's index under its supervisor (--workers).",
            worker.index as u64,
        );
        m.single("tether_worker_restarts", "gauge", "Times the supervisor restarted this worker.", worker.restarts);
    }
}

fn redis_metrics(m: &mut Writer<'_>, redis: &RedisLevels, stats: &Stats) {
    let s = &redis.stats;
    m.single("tether_redis_up", "gauge", "1 while both Redis links are up.", u64::from(redis.up));
    m.single("tether_redis_pending", "gauge", "Redis commands sent and not answered yet.", redis.pending as u64);
    m.single("tether_redis_commands_total", "counter", "Commands sent to Redis.", s.commands);
    m.single(
        "tether_redis_reconnects_total",
        "counter",
        "Times the Redis links came back after a failure.",
        s.reconnects,
    );
    m.single(
        "tether_redis_claims_total",
        "counter",
        "Directory claims made on IDENTIFY (and again after a reconnect).",
        s.claims,
    );
    m.single(
        "tether_redis_lost_to_remote_total",
        "counter",
        "Collars closed because another gateway claimed them with a newer epoch.",
        s.lost_to_remote,
    );
    m.single(
        "tether_redis_swept_total",
        "counter",
        "Directory entries of dead gateways removed by this gateway's sweeps.",
        s.swept,
    );
    m.single(
        "tether_redis_liveness_expired_total",
        "counter",
        "Times this gateway found its liveness key expired, and claimed its collars again.",
        s.expired,
    );
    m.family("tether_redis_requests_total", "counter", "Requests carried between gateways, by side and result.");
    m.sample("tether_redis_requests_total", &[("side", "sent")], s.rpc_sent);
    m.sample("tether_redis_requests_total", &[("side", "timed-out")], s.rpc_timeouts);
    m.sample("tether_redis_requests_total", &[("side", "served")], s.rpc_served);
    m.family("tether_redis_link_closed_total", "counter", "Redis link closes, by reason.");
    for reason in CloseReason::ALL {
        let n = stats.closed(crate::reactor::Kind::Link, reason);
        if n > 0 {
            m.sample("tether_redis_link_closed_total", &[("reason", reason.as_str())], n);
        }
    }
}

/// The process's resident memory, from `/proc/self/statm` (also for `/stats`).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        for (i, (key, value)) in labels.iter().enumerate() {
            let _ = write!(self.out, "{}{key}=\"{value}\"", if i == 0 { "{" } else { "," });
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.out, " {}", value);
    }

    fn sample_f(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn single_f(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample_f(name, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counters_labels_and_the_histogram() {
        let mut stats = Stats { accepted: [3, 1], ..Stats::default() };
        stats.close(Kind::Device, CloseReason::Idle);
        stats.close(Kind::Device, CloseReason::ServerFull);
        stats.http_response(200);
        stats.loop_turn(Duration::from_micros(3));
        stats.loop_turn(Duration::from_millis(2));
        stats.budget_spent(Budget::Timers);
        let levels = Levels { held: [2, 1], ..Levels::default() };
        let hub = HubLevels { devices_online: 2, ..HubLevels::default() };
        let mut out = String::new();
        render(&mut out, &stats, &levels, &hub);
        for line in [
            "# TYPE tether_connections gauge",
            "tether_connections{kind=\"device\"} 2",
            "tether_connections{kind=\"http\"} 1",
            "tether_accepted_total{kind=\"device\"} 3",
            "tether_closed_total{kind=\"device\",reason=\"idle\"} 1",
            "tether_closed_total{kind=\"http\",reason=\"idle\"} 0",
            "tether_rejected_total{reason=\"server-full\"} 1",
            "tether_http_responses_total{status=\"200\"} 1",
            "tether_loop_iteration_seconds_bucket{le=\"0.00001\"} 1",
            "tether_loop_iteration_seconds_bucket{le=\"0.005\"} 2",
            "tether_loop_iteration_seconds_bucket{le=\"+Inf\"} 2",
            "tether_loop_iteration_seconds_count 2",
            "tether_budget_spent_total{budget=\"timers\"} 1",
            "tether_budget_spent_total{budget=\"reads\"} 0",
            "tether_loop_longest_turn_seconds 0.002",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // Every sample line is `name[{labels}] value`.
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }
}
