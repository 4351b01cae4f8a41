//! `GET /stats`: the figures of `/metrics` as one JSON object, for the
//! dashboard and for scripts that would rather not parse Prometheus text.
//!
//! It is rendered from the very inputs [`crate::metrics::render`] takes
//! ([`Stats`], the reactor's [`Levels`], the hub's [`HubLevels`]), through
//! `serde_json`, and a test checks every sample of the one against the
//! other, so the two never disagree. Names are the metric names without
//! the `tether_` prefix and the `_total` suffix; a labelled family is an
//! object keyed by its label, in the same order as the exposition; the
//! loop histogram keeps Prometheus's cumulative buckets, the last one
//! (`+Inf`) with `"le": null`.

use serde::Serialize;
use serde::ser::Serializer;

use crate::close::CloseReason;
use crate::http::json;
use crate::metrics::{self, HubLevels};
use crate::reactor::{Budget, Kind, Levels};
use crate::stats::{LOOP_BUCKETS, LineKind, Stats};

/// An object whose keys come in the given order (a family's labels).
struct Keyed<K, V>(Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for Keyed<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A value per kind of connection.
fn by_kind<V>(value: impl Fn(Kind) -> V) -> Keyed<&'static str, V> {
    Keyed(Kind::ALL.iter().map(|&kind| (kind.as_str(), value(kind))).collect())
}

#[derive(Serialize)]
struct Bucket {
    /// Upper bound in seconds; `None` (`null`) for `+Inf`.
    le: Option<f64>,
    /// Turns at most `le` long (cumulative, as in Prometheus).
    count: u64,
}

#[derive(Serialize)]
struct Histogram {
    buckets: Vec<Bucket>,
    sum: f64,
    count: u64,
}

#[derive(Serialize)]
struct Loop {
    iterations: u64,
    busy_seconds: f64,
    wait_seconds: f64,
    longest_turn_seconds: f64,
    iteration_seconds: Histogram,
}

/// The whole answer; field order is the order on the wire.
#[derive(Serialize)]
struct StatsView {
    uptime_seconds: f64,
    start_time_seconds: f64,
    connections: Keyed<&'static str, usize>,
    devices_online: usize,
    sse_subscribers: usize,
    long_polls: usize,
    events_held: usize,
    event_position: u64,
    event_frame_bytes: usize,
    events_published: u64,
    events_delivered: u64,
    accepted: Keyed<&'static str, u64>,
    closed: Keyed<&'static str, Keyed<&'static str, u64>>,
    rejected: Keyed<&'static str, u64>,
    accept_errors: u64,
    lines_received: Keyed<&'static str, u64>,
    lines_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
    socket_reads: u64,
    socket_writes: u64,
    takeovers: u64,
    device_auth: Keyed<&'static str, u64>,
    flap_quarantines: u64,
    flap_refusals: u64,
    tls_handshakes: Keyed<&'static str, u64>,
    heartbeat_pings: u64,
    heartbeat_timeouts: u64,
    http_responses: Keyed<String, u64>,
    #[serde(rename = "loop")]
    turns: Loop,
    budget_spent: Keyed<&'static str, u64>,
    fd_limit: u64,
    max_connections: usize,
    max_http_connections: usize,
    pooled_buffers: usize,
    unsent_bytes: usize,
    resident_memory_bytes: Option<u64>,
    /// With `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<RedisView>,
    /// With `--workers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<WorkerView>,
}

/// Which worker answered (`tether_worker_*`).
#[derive(Serialize)]
struct WorkerView {
    index: usize,
    restarts: u64,
}

/// The Redis side's figures (`tether_redis_*`).
#[derive(Serialize)]
struct RedisView {
    up: u64,
    pending: usize,
    commands: u64,
    reconnects: u64,
    claims: u64,
    lost_to_remote: u64,
    swept: u64,
    liveness_expired: u64,
    requests: Keyed<&'static str, u64>,
    /// Only the reasons that happened, as in `/metrics`.
    link_closed: Keyed<&'static str, u64>,
}

/// The JSON body of `GET /stats`.
pub fn render(stats: &Stats, levels: &Levels, hub: &HubLevels) -> Vec<u8> {
    let mut cumulative = 0;
    let buckets = (0..=LOOP_BUCKETS.len())
        .map(|i| {
            cumulative += stats.loop_histogram[i];
            Bucket { le: LOOP_BUCKETS.get(i).copied(), count: cumulative }
        })
        .collect();
    let view = StatsView {
        uptime_seconds: hub.uptime_seconds,
        start_time_seconds: hub.start_time_seconds,
        connections: by_kind(|kind| levels.held[kind as usize]),
        devices_online: hub.devices_online,
        sse_subscribers: hub.sse_subscribers,
        long_polls: hub.long_polls,
        events_held: hub.events_held,
        event_position: hub.event_position,
        event_frame_bytes: hub.frame_cache_bytes,
        events_published: stats.events_published,
        events_delivered: stats.events_delivered,
        accepted: by_kind(|kind| stats.accepted[kind as usize]),
        closed: by_kind(|kind| {
            Keyed(CloseReason::ALL.iter().map(|&reason| (reason.as_str(), stats.closed(kind, reason))).collect())
        }),
        rejected: Keyed(vec![
            ("server-full", Kind::ALL.iter().map(|&k| stats.closed(k, CloseReason::ServerFull)).sum()),
            ("emfile", stats.accept_fd_exhausted),
        ]),
        accept_errors: stats.accept_failed,
        lines_received: Keyed(LineKind::ALL.iter().map(|&k| (k.as_str(), stats.lines_in[k as usize])).collect()),
        lines_sent: stats.lines_out,
        bytes_received: stats.bytes_in,
        bytes_sent: stats.bytes_out,
        socket_reads: stats.reads,
        socket_writes: stats.writes,
        takeovers: stats.takeovers,
        device_auth: Keyed(vec![("ok", stats.device_auths), ("failed", stats.device_auth_failures)]),
        flap_quarantines: stats.flap_quarantines,
        flap_refusals: stats.flap_refusals,
        tls_handshakes: Keyed(vec![("full", stats.tls_handshakes[0]), ("resumed", stats.tls_handshakes[1])]),
        heartbeat_pings: stats.heartbeat_pings,
        heartbeat_timeouts: stats.closed(Kind::Device, CloseReason::HeartbeatTimeout),
        http_responses: Keyed(stats.http_responses.iter().map(|(status, &n)| (status.to_string(), n)).collect()),
        turns: Loop {
            iterations: stats.loop_iterations,
            busy_seconds: stats.loop_busy.as_secs_f64(),
            wait_seconds: stats.loop_wait.as_secs_f64(),
            longest_turn_seconds: stats.longest_turn_ever.as_secs_f64(),
            iteration_seconds: Histogram { buckets, sum: stats.loop_busy.as_secs_f64(), count: cumulative },
        },
        budget_spent: Keyed(Budget::ALL.iter().map(|&b| (b.as_str(), stats.budget_spent[b as usize])).collect()),
        fd_limit: levels.fd_limit,
        max_connections: levels.caps[Kind::Device as usize],
        max_http_connections: levels.caps[Kind::Http as usize],
        pooled_buffers: levels.pooled_buffers,
        unsent_bytes: hub.unsent_bytes,
        resident_memory_bytes: metrics::resident_memory(),
        redis: hub.redis.as_ref().map(|redis| {
            let s = &redis.stats;
            RedisView {
                up: u64::from(redis.up),
                pending: redis.pending,
                commands: s.commands,
                reconnects: s.reconnects,
                claims: s.claims,
                lost_to_remote: s.lost_to_remote,
                swept: s.swept,
                liveness_expired: s.expired,
                requests: Keyed(vec![("sent", s.rpc_sent), ("timed-out", s.rpc_timeouts), ("served", s.rpc_served)]),
                link_closed: Keyed(
                    CloseReason::ALL
                        .iter()
                        .map(|&reason| (reason.as_str(), stats.closed(Kind::Link, reason)))
                        .filter(|&(_, n)| n > 0)
                        .collect(),
                ),
            }
        }),
        worker: hub.worker.map(|w| WorkerView { index: w.index, restarts: w.restarts }),
    };
    json::to_vec(&view)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    /// Figures with something in every family.
    fn figures() -> (Stats, Levels, HubLevels) {
        let mut stats = Stats { accepted: [3, 2], accept_fd_exhausted: 4, accept_failed: 5, ..Stats::default() };
        stats.close(Kind::Device, CloseReason::Idle);
        stats.close(Kind::Device, CloseReason::ServerFull);
        stats.close(Kind::Http, CloseReason::ServerFull);
        stats.close(Kind::Device, CloseReason::HeartbeatTimeout);
        stats.line_in(LineKind::Ping);
        stats.line_in(LineKind::Location);
        stats.line_in(LineKind::Location);
        stats.lines_out = 6;
        stats.bytes_in = 700;
        stats.bytes_out = 800;
        stats.reads = 9;
        stats.writes = 10;
        stats.takeovers = 11;
        stats.heartbeat_pings = 12;
        stats.events_published = 13;
        stats.events_delivered = 14;
        stats.http_response(200);
        stats.http_response(200);
        stats.http_response(404);
        stats.loop_iterations = 2;
        stats.loop_turn(Duration::from_micros(3));
        stats.loop_turn(Duration::from_millis(2));
        stats.loop_wait = Duration::from_millis(500);
        stats.budget_spent(Budget::Timers);
        let levels = Levels { held: [2, 1], caps: [100, 10], fd_limit: 1024, draining: false, pooled_buffers: 3 };
        let hub = HubLevels {
            devices_online: 2,
            sse_subscribers: 1,
            long_polls: 4,
            events_held: 13,
            event_position: 40,
            frame_cache_bytes: 256,
            unsent_bytes: 17,
            uptime_seconds: 12.5,
            start_time_seconds: 1_764_400_000.25,
            redis: None,
            worker: None,
        };
        (stats, levels, hub)
    }

    #[test]
    fn the_exact_shape() {
        let (stats, levels, hub) = figures();
        let body = String::from_utf8(render(&stats, &levels, &hub)).unwrap();
        // Resident memory is read when rendered: check it is a number, then
        // pin everything else byte for byte.
        let (head, rss) = body.rsplit_once(",\"resident_memory_bytes\":").unwrap();
        assert!(rss.strip_suffix('}').unwrap().parse::<u64>().is_ok(), "{rss}");
        let zeros = |names: &[&str], except: &[(&str, u64)]| {
            let fields: Vec<String> = names
                .iter()
                .map(|n| format!("\"{n}\":{}", except.iter().find(|(e, _)| e == n).map_or(0, |(_, v)| *v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        };
        let reasons: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        let expected = format!(
            concat!(
                "{{\"uptime_seconds\":12.5,\"start_time_seconds\":1764400000.25,\"connections\":{{\"device\":2,\"http\":1}},\"devices_online\":2,",
                "\"sse_subscribers\":1,\"long_polls\":4,\"events_held\":13,\"event_position\":40,\"event_frame_bytes\":256,",
                "\"events_published\":13,\"events_delivered\":14,\"accepted\":{{\"device\":3,\"http\":2}},",
                "\"closed\":{{\"device\":{},\"http\":{}}},\"rejected\":{{\"server-full\":2,\"emfile\":4}},",
                "\"accept_errors\":5,",
                "\"lines_received\":{{\"identify\":0,\"ping\":1,\"pong\":0,\"location\":2,\"invalid\":0,\"auth\":0}},",
                "\"lines_sent\":6,\"bytes_received\":700,\"bytes_sent\":800,\"socket_reads\":9,",
                "\"socket_writes\":10,\"takeovers\":11,\"device_auth\":{{\"ok\":0,\"failed\":0}},",
                "\"flap_quarantines\":0,\"flap_refusals\":0,\"tls_handshakes\":{{\"full\":0,\"resumed\":0}},\"heartbeat_pings\":12,\"heartbeat_timeouts\":1,",
                "\"http_responses\":{{\"200\":2,\"404\":1}},",
                "\"loop\":{{\"iterations\":2,\"busy_seconds\":0.002003,\"wait_seconds\":0.5,",
                "\"longest_turn_seconds\":0.002,\"iteration_seconds\":{{\"buckets\":[",
                "{{\"le\":0.00001,\"count\":1}},{{\"le\":0.00005,\"count\":1}},{{\"le\":0.0001,\"count\":1}},",
                "{{\"le\":0.0005,\"count\":1}},{{\"le\":0.001,\"count\":1}},{{\"le\":0.005,\"count\":2}},",
                "{{\"le\":0.01,\"count\":2}},{{\"le\":0.05,\"count\":2}},{{\"le\":0.1,\"count\":2}},",
                "{{\"le\":1.0,\"count\":2}},{{\"le\":null,\"count\":2}}],\"sum\":0.002003,\"count\":2}}}},",
                "\"budget_spent\":{},",
                "\"fd_limit\":1024,\"max_connections\":100,\"max_http_connections\":10,\"pooled_buffers\":3,",
                "\"unsent_bytes\":17"
            ),
            zeros(&reasons, &[("idle", 1), ("server-full", 1), ("heartbeat-timeout", 1)]),
            zeros(&reasons, &[("server-full", 1)]),
            zeros(&Budget::ALL.iter().map(|b| b.as_str()).collect::<Vec<_>>(), &[("timers", 1)]),
        );
        assert_eq!(head, expected);
    }

    /// The JSON value that stands for one Prometheus sample.
    fn counterpart<'v>(json: &'v Value, name: &str, labels: &[(&str, &str)]) -> Option<&'v Value> {
        let label = |key: &str| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).unwrap();
        let name = name.strip_prefix("tether_").unwrap_or(name);
        match name {
            "process_resident_memory_bytes" => json.get("resident_memory_bytes"),
            "process_start_time_seconds" => json.get("start_time_seconds"),
            "connections" | "accepted_total" => json[name.trim_end_matches("_total")].get(label("kind")),
            "closed_total" => json["closed"][label("kind")].get(label("reason")),
            "rejected_total" => json["rejected"].get(label("reason")),
            "lines_received_total" => json["lines_received"].get(label("type")),
            "http_responses_total" => json["http_responses"].get(label("status")),
            "budget_spent_total" => json["budget_spent"].get(label("budget")),
            "device_auth_total" => json["device_auth"].get(label("result")),
            "tls_handshakes_total" => json["tls_handshakes"].get(label("kind")),
            "loop_iterations_total" => json["loop"].get("iterations"),
            "loop_busy_seconds_total" => json["loop"].get("busy_seconds"),
            "loop_wait_seconds_total" => json["loop"].get("wait_seconds"),
            "loop_longest_turn_seconds" => json["loop"].get("longest_turn_seconds"),
            "loop_iteration_seconds_sum" => json["loop"]["iteration_seconds"].get("sum"),
            "loop_iteration_seconds_count" => json["loop"]["iteration_seconds"].get("count"),
            "loop_iteration_seconds_bucket" => {
                let le = label("le");
                let buckets = json["loop"]["iteration_seconds"]["buckets"].as_array()?;
                let bucket = buckets.iter().find(|b| match b["le"].as_f64() {
                    Some(bound) => le.parse::<f64>().ok() == Some(bound),
                    None => le == "+Inf",
                })?;
                bucket.get("count")
            }
            "event_frame_bytes" => json.get("event_frame_bytes"),
            "accept_errors_total" => json.get("accept_errors"),
            "redis_requests_total" => json["redis"]["requests"].get(label("side")),
            "worker_index" => json["worker"].get("index"),
            "worker_restarts" => json["worker"].get("restarts"),
            "redis_link_closed_total" => json["redis"]["link_closed"].get(label("reason")),
            redis if redis.starts_with("redis_") => {
                json["redis"].get(redis.trim_start_matches("redis_").trim_end_matches("_total"))
            }
            other => json.get(other.strip_suffix("_total").unwrap_or(other)),
        }
    }

    #[test]
    fn every_sample_of_metrics_has_the_same_value_in_stats() {
        let (stats, levels, hub) = figures();
        same_samples(&stats, &levels, &hub);
    }

    #[test]
    fn with_redis_too() {
        let (mut stats, levels, mut hub) = figures();
        stats.close(Kind::Link, CloseReason::LinkTimeout);
        let cluster = crate::hub::cluster::ClusterStats {
            commands: 40,
            reconnects: 1,
            claims: 7,
            lost_to_remote: 2,
            swept: 3,
            rpc_sent: 5,
            rpc_timeouts: 1,
            rpc_served: 6,
            expired: 1,
        };
        hub.redis = Some(metrics::RedisLevels { up: true, pending: 4, stats: cluster });
        hub.worker = Some(metrics::WorkerLevels { index: 2, restarts: 1 });
        let body = String::from_utf8(render(&stats, &levels, &hub)).unwrap();
        assert!(
            body.ends_with(concat!(
                ",\"redis\":{\"up\":1,\"pending\":4,\"commands\":40,\"reconnects\":1,\"claims\":7,",
                "\"lost_to_remote\":2,\"swept\":3,\"liveness_expired\":1,\"requests\":{\"sent\":5,\"timed-out\":1,\"served\":6},",
                "\"link_closed\":{\"link-timeout\":1}},\"worker\":{\"index\":2,\"restarts\":1}}"
            )),
            "{body}"
        );
        same_samples(&stats, &levels, &hub);
    }

    /// Every sample of `/metrics` has its value in `/stats`, and `/stats`
    /// has nothing else.
    fn same_samples(stats: &Stats, levels: &Levels, hub: &HubLevels) {
        let mut text = String::new();
        metrics::render(&mut text, stats, levels, hub);
        let json: Value = serde_json::from_slice(&render(stats, levels, hub)).unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels: Vec<(&str, &str)> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k, v.trim_matches('"'))
                })
                .collect();
            let found = counterpart(&json, name, &labels).unwrap_or_else(|| panic!("no counterpart for {line}"));
            if name == "process_resident_memory_bytes" {
                // Read once per render; both are the process's, a page apart at most.
                assert!(found.as_u64().is_some(), "{line}: {found}");
            } else {
                assert_eq!(found.as_f64(), Some(value.parse::<f64>().unwrap()), "{line}: {found}");
            }
            checked += 1;
        }
        // Every JSON leaf is some sample: count the leaves the same way.
        fn leaves(v: &Value) -> usize {
            match v {
                Value::Object(map) => map.values().map(leaves).sum(),
                Value::Array(items) => items.iter().map(|b| leaves(&b["count"])).sum(),
                _ => 1,
            }
        }
        assert_eq!(leaves(&json), checked, "/stats holds exactly the samples of /metrics");
    }
}
