//! The hub: what the connections share, and the one place where one
//! connection's doings reach another.
//!
//! It holds which collar is online under which MAC (the registry), the
//! event log and its subscribers ([`feeds`]), and who waits for which
//! collar's location. Sessions never touch any of it: they return
//! [`Effect`]s, and the reactor hands each one to [`Hub::apply`] after the
//! session's call, in order. The hub acts on other connections only
//! through the reactor's [`Ops`] (append output, deliver a reply, close),
//! which are queued and carried out by the reactor, so no handler ever
//! runs inside another.
//!
//! The paths that cross connections:
//! - a collar's `IDENTIFY` puts it online; an older connection with that
//!   MAC is announced as `disconnected` (`replaced`) and closed, then the
//!   new one as `connected`; a MAC taken over too often is quarantined
//!   ([`flap`]) and its `IDENTIFY`s refused;
//! - a collar's `LOCATION:` is published (see [`feeds`]: no subscriber is
//!   touched but those waiting for news) and answers
//!   the location queries waiting on that connection;
//! - a collar going away is announced, unless it was replaced, and fails
//!   the location queries waiting on it (502);
//! - a location query sends `location` to the collar unless one is already
//!   on the wire for it, and waits; a command is written to the collar, or
//!   refused if its output is full.

pub mod cluster;
pub mod feeds;
pub mod flap;
pub mod frames;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::Bound;

use log::debug;
use mio::Token;

use crate::close::CloseReason;
use crate::device::{DeviceSession, Fix, Line, Mac};
use crate::effect::{Answer, Effect, Query, Reply};
use crate::events::{EventKind, EventLog, Rfc3339};
use crate::http::{HttpSession, Response, json};
use crate::metrics;
use crate::proto::Proto;
use crate::reactor::{App, Kind, Ops, OutBuf, Peer, Pool, Produce};
use crate::stats::Stats;
use crate::time::{Clock, Millis};
use cluster::{Cluster, ClusterSettings, Remote, Waiter};
use feeds::{Feeds, Woken};
use flap::{FlapGuard, FlapSettings};
use views::{CommandAccepted, DeviceView, DevicesPage, FixView, Health, LocationView};

/// The shared state of the gateway.
#[derive(Debug)]
pub struct Hub {
    clock: Clock,
    /// `Access-Control-Allow-Origin` of a refusal's 503.
    cors_origin: String,
    /// Identified collars that are online, by MAC, ordered so that listings
    /// page deterministically. Holds exactly the open connections whose
    /// collar identified and was not replaced since.
    registry: BTreeMap<Mac, Token>,
    log: EventLog,
    feeds: Feeds,
    /// Location queries waiting on a collar connection, here or on other
    /// gateways. A collar with an entry has been sent `location` already.
    locating: HashMap<Token, Vec<Waiter>>,
    /// The collar each local waiting location query waits on.
    waiting_on: HashMap<Token, Token>,
    /// The Redis side (`--redis`): the fleet's directory and the bus.
    cluster: Option<Cluster>,
    /// Reused by [`Hub::publish`].
    woken: Woken,
    /// Takeovers by MAC, and the MACs quarantined for flapping.
    flap: FlapGuard,
    /// With `--workers`: this worker's index and how many times the
    /// supervisor restarted it, for `/metrics`.
    worker: Option<metrics::WorkerLevels>,
}

impl Hub {
    pub fn new(clock: Clock, event_history: usize, cors_origin: String, cluster: Option<ClusterSettings>) -> Hub {
        let log = match cluster {
            Some(_) => EventLog::with_stream_ids(event_history),
            None => EventLog::new(event_history),
        };
        Hub {
            cluster: cluster.map(|settings| Cluster::new(settings, event_history)),
            clock,
            cors_origin,
            registry: BTreeMap::new(),
            log,
            feeds: Feeds::default(),
            locating: HashMap::new(),
            waiting_on: HashMap::new(),
            woken: Woken::default(),
            flap: FlapGuard::new(FlapSettings::default()),
            worker: None,
        }
    }

    /// The flapping guard's settings (the defaults otherwise).
    pub fn with_flap_guard(mut self, settings: FlapSettings) -> Hub {
        self.flap = FlapGuard::new(settings);
        self
    }

    /// This process is worker `index` of a supervisor, restarted
    /// `restarts` times.
    pub fn as_worker(mut self, index: usize, restarts: u64) -> Hub {
        self.worker = Some(metrics::WorkerLevels { index, restarts });
        self
    }

    /// Collars online.
    pub fn online(&self) -> usize {
        self.registry.len()
    }

    /// The connection of the collar online as `mac`.
    fn device(&self, mac: Mac, ops: &Ops<'_, Proto>) -> Option<Token> {
        self.registry.get(&mac).copied().filter(|&token| ops.session(token).is_some())
    }

    /// Publishes an event: with Redis up, appended to the fleet's stream
    /// (the tail brings it back into the log, in the fleet's order);
    /// otherwise appended to the log here.
    fn publish(&mut self, mac: Mac, kind: EventKind, ops: &mut Ops<'_, Proto>) {
        let at = self.clock.unix_ms(ops.now());
        ops.stats().events_published += 1;
        if self.cluster.as_ref().is_some_and(Cluster::up) && self.append_to_stream(mac, &kind, at, ops) {
            return;
        }
        let ext = self.log.external(0).ext;
        self.append(mac, kind, at, ext, ops);
    }

    /// Appends an event to the log and wakes the feeds it concerns.
    fn append(&mut self, mac: Mac, kind: EventKind, at: u64, ext: u64, ops: &mut Ops<'_, Proto>) {
        self.log.publish_as(mac, kind, at, ext);
        let event = self.log.latest().expect("just published");
        self.feeds.published(event, &self.log, &mut self.woken);
        for token in self.woken.wake.drain(..) {
            ops.wake(token);
        }
        for token in self.woken.cut.drain(..) {
            debug!("{token:?}: fell off the event log");
            ops.close(token, CloseReason::SlowConsumer);
        }
    }

    fn identified(&mut self, origin: Token, mac: Mac, ops: &mut Ops<'_, Proto>) {
        // A collar whose connection closed in the same call (an over-long
        // line right behind its IDENTIFY) never goes online: it takes no MAC
        // over and is not announced, so its goodbye says nothing either.
        let Some(peer) = ops.peer(origin).cloned() else { return };
        let now = ops.now();
        if self.flap.quarantined(mac, now) {
            ops.stats().flap_refusals += 1;
            ops.reply(origin, Reply::Refused(CloseReason::Flapping));
            return;
        }
        let mut quarantine = None;
        if let Some(old) = self.registry.insert(mac, origin)
            && ops.session(old).is_some()
        {
            // Announced here, before the newcomer: the old connection's own
            // goodbye finds itself replaced and says nothing.
            ops.stats().takeovers += 1;
            debug!("{mac}: {origin:?} takes over from {old:?}");
            self.publish(mac, EventKind::Disconnected { reason: CloseReason::Replaced }, ops);
            ops.close(old, CloseReason::Replaced);
            // With Redis up, takeovers are counted fleet-wide there (by the
            // claim); this gateway counts them itself otherwise.
            if self.cluster.as_ref().is_none_or(|c| !c.up()) {
                quarantine = self.flap.taken_over(mac, now);
            }
        }
        debug!("{origin:?} identified as {mac}");
        self.publish(mac, EventKind::Connected { peer }, ops);
        if self.cluster.is_some() {
            self.claim(mac, origin, ops);
        }
        if let Some(q) = quarantine {
            // The winner of this takeover stays; the MAC's next IDENTIFYs
            // are refused until the quarantine ends.
            ops.stats().flap_quarantines += 1;
            debug!("{mac}: taken over {} times, quarantined", q.takeovers);
            let until_unix_ms = self.clock.unix_ms(q.until);
            self.publish(mac, EventKind::Flapping { takeovers: q.takeovers, until_unix_ms }, ops);
        }
        ops.reply(origin, Reply::Admitted);
    }

    fn located(&mut self, origin: Token, mac: Mac, fix: Fix, ops: &mut Ops<'_, Proto>) {
        // With Redis, the event also records the fix in the directory.
        self.publish(mac, EventKind::Location { lat: fix.lat, lon: fix.lon }, ops);
        let location = FixView::new(&fix, |at| self.clock.unix_ms(at));
        let answer = Answer::json(200, json::to_vec(&LocationView { mac, location }));
        self.answer_waiters(origin, &answer, ops);
    }

    /// Answers everyone waiting for the location of the collar on `device`.
    fn answer_waiters(&mut self, device: Token, answer: &Answer, ops: &mut Ops<'_, Proto>) {
        let Some(waiters) = self.locating.remove(&device) else { return };
        for waiter in &waiters {
            match waiter {
                Waiter::Local(token) => {
                    self.waiting_on.remove(token);
                    ops.reply(*token, Reply::Answer(answer.clone()));
                }
                Waiter::Remote { .. } => self.answer_waiter(waiter, answer, ops),
            }
        }
    }

    fn offline(&mut self, origin: Token, mac: Mac, reason: CloseReason, ops: &mut Ops<'_, Proto>) {
        let answer = Answer::error(502, "the device disconnected before answering");
        self.answer_waiters(origin, &answer, ops);
        if self.registry.get(&mac) == Some(&origin) {
            self.registry.remove(&mac);
            debug!("{mac} offline");
            self.publish(mac, EventKind::Disconnected { reason }, ops);
        }
        if self.cluster.is_some() {
            self.release(mac, origin, ops);
        }
    }

    /// Answers a query now, or registers its wait (`None`).
    fn answer(&mut self, origin: Token, query: Query, ops: &mut Ops<'_, Proto>) -> Option<Reply> {
        let answer = match query {
            Query::Health => self.health(ops),
            Query::Metrics => self.metrics(ops),
            Query::Stats => {
                let (levels, hub) = (ops.levels(), self.hub_levels(ops));
                Answer::json(200, crate::stats_json::render(ops.stats(), &levels, &hub))
            }
            Query::Devices { after, offset, limit } => {
                if self.fleet_page(origin, after, offset, limit, ops).is_some() {
                    return None;
                }
                self.devices(after, offset, limit, ops)
            }
            Query::Device(mac) => match self.device(mac, ops) {
                Some(token) => Answer::json(200, json::to_vec(&self.view(mac, token, ops))),
                None if self.cluster.is_some() => {
                    return self.remote(origin, mac, Remote::Device, ops).map(Reply::Answer);
                }
                None => Answer::error(404, "device not online"),
            },
            Query::Command { mac, line } if self.cluster.is_some() && self.device(mac, ops).is_none() => {
                return self.remote(origin, mac, Remote::Command(line), ops).map(Reply::Answer);
            }
            Query::Command { mac, line } => self.command(mac, line, ops),
            Query::Location(mac) if self.cluster.is_some() && self.device(mac, ops).is_none() => {
                return self.remote(origin, mac, Remote::Location, ops).map(Reply::Answer);
            }
            Query::Location(mac) => return self.locate(Waiter::Local(origin), mac, ops).map(Reply::Answer),
            Query::Stream { filter, last_event_id } => {
                let last_event_id = last_event_id.map(|named| self.log.resolve(named));
                self.feeds.stream(origin, filter, last_event_id, &self.log);
                ops.feed(origin);
                ops.wake(origin);
                return Some(Reply::Stream);
            }
            Query::Poll { since, filter, wait } => {
                let since = since.map_or(self.log.last_id(), |named| self.log.resolve(named));
                let answer = self.feeds.poll(origin, since, filter, wait, &self.log);
                if answer.is_none() {
                    ops.feed(origin);
                }
                return answer.map(Reply::Answer);
            }
            Query::Expired => self.expired(origin),
        };
        Some(Reply::Answer(answer))
    }

    fn health(&self, ops: &Ops<'_, Proto>) -> Answer {
        let levels = ops.levels();
        let redis = self.cluster.as_ref().map(|c| if c.up() { "up" } else { "down" });
        let health = if levels.draining {
            Health { status: "draining", uptime_s: None, devices_online: None, connections: None, redis }
        } else {
            Health {
                // Still 200: the gateway serves its own collars without Redis.
                status: if redis == Some("down") { "degraded" } else { "ok" },
                uptime_s: Some(ops.now() / 1000),
                devices_online: Some(self.registry.len()),
                connections: Some(levels.held.iter().sum()),
                redis,
            }
        };
        Answer::json(if levels.draining { 503 } else { 200 }, json::to_vec(&health))
    }

    /// The hub's figures for `/metrics` and `/stats`.
    fn hub_levels(&self, ops: &mut Ops<'_, Proto>) -> metrics::HubLevels {
        metrics::HubLevels {
            devices_online: self.registry.len(),
            sse_subscribers: self.feeds.streams(),
            long_polls: self.feeds.polls() + self.waiting_on.len(),
            events_held: self.log.len(),
            event_position: self.log.last_id(),
            frame_cache_bytes: self.feeds.frame_bytes(),
            unsent_bytes: ops.unsent_bytes(),
            uptime_seconds: ops.now() as f64 / 1000.0,
            start_time_seconds: self.clock.unix_ms(0) as f64 / 1000.0,
            redis: self.cluster.as_ref().map(|c| metrics::RedisLevels {
                up: c.up(),
                pending: c.pending(),
                stats: c.stats,
            }),
            worker: self.worker,
        }
    }

    fn metrics(&self, ops: &mut Ops<'_, Proto>) -> Answer {
        let (levels, hub) = (ops.levels(), self.hub_levels(ops));
        let mut body = String::with_capacity(16 * 1024);
        metrics::render(&mut body, ops.stats(), &levels, &hub);
        Answer { status: 200, content_type: Answer::PROMETHEUS, body: body.into_bytes() }
    }

    /// `GET /devices`: a page of the online collars by MAC; `after` is a
    /// cursor that costs nothing however deep the page.
    fn devices(&self, after: Option<Mac>, offset: usize, limit: usize, ops: &Ops<'_, Proto>) -> Answer {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let devices = self
            .registry
            .range((lower, Bound::Unbounded))
            .skip(offset)
            .take(limit)
            .map(|(&mac, &token)| self.view(mac, token, ops))
            .collect();
        let page = DevicesPage { total: self.registry.len(), offset, limit, devices };
        Answer::json(200, json::to_vec(&page))
    }

    /// A collar as `GET /devices/{mac}` shows it.
    fn view(&self, mac: Mac, token: Token, ops: &Ops<'_, Proto>) -> DeviceView {
        let unix = |at: Millis| Rfc3339(self.clock.unix_ms(at));
        let (connected_at, location) = match ops.session(token) {
            Some(Proto::Device(d)) => (d.collar.connected_at, d.collar.location()),
            _ => (0, None),
        };
        DeviceView {
            mac,
            peer: ops.peer(token).map(ToString::to_string).unwrap_or_default(),
            connected_at: unix(connected_at),
            last_seen: unix(ops.last_rx(token).unwrap_or(connected_at)),
            location: location.map(|fix| FixView::new(fix, |at| self.clock.unix_ms(at))),
        }
    }

    /// `POST /devices/{mac}/commands`: the line goes to the collar as it
    /// stands, or is refused when the collar's output is full.
    fn command(&self, mac: Mac, mut line: Vec<u8>, ops: &mut Ops<'_, Proto>) -> Answer {
        let Some(device) = self.device(mac, ops) else { return Answer::error(404, "device not online") };
        line.push(b'\n');
        match ops.send(device, &line) {
            Ok(()) => {
                ops.stats().lines_out += 1;
                let accepted = CommandAccepted { mac, accepted: true, bytes: line.len() };
                Answer::json(202, json::to_vec(&accepted))
            }
            Err(_) => Answer::error(503, "the device's output buffer is full"),
        }
    }

    /// `GET /devices/{mac}/location`: waits on the collar's connection;
    /// concurrent queries for one collar, from this gateway or others,
    /// share one query on the wire.
    fn locate(&mut self, waiter: Waiter, mac: Mac, ops: &mut Ops<'_, Proto>) -> Option<Answer> {
        let Some(device) = self.device(mac, ops) else { return Some(Answer::error(404, "device not online")) };
        let waiters = self.locating.entry(device).or_default();
        if waiters.is_empty() {
            if ops.send(device, Line::LocationQuery.bytes()).is_err() {
                self.locating.remove(&device);
                return Some(Answer::error(503, "the device's output buffer is full"));
            }
            ops.stats().lines_out += 1;
        }
        if let Waiter::Local(origin) = waiter {
            self.waiting_on.insert(origin, device);
        }
        waiters.push(waiter);
        None
    }

    /// A wait timed out: forget it, and give its last answer.
    fn expired(&mut self, origin: Token) -> Answer {
        if self.forget_location_wait(origin) {
            return Answer::error(504, "the device did not answer in time");
        }
        if self.cluster.as_mut().is_some_and(|c| c.forget(origin)) {
            return Answer::error(504, "the gateway holding the device did not answer in time");
        }
        match self.feeds.remove(origin, &self.log) {
            Some(answer) => answer,
            None => Answer::error(504, "nothing to wait for"),
        }
    }

    /// Drops a location query from its collar's list; with nobody left
    /// waiting, the next query asks the collar again rather than wait on
    /// one it may never answer. Whether `origin` was waiting for one.
    fn forget_location_wait(&mut self, origin: Token) -> bool {
        let Some(device) = self.waiting_on.remove(&origin) else { return false };
        if let Some(waiters) = self.locating.get_mut(&device) {
            waiters.retain(|w| *w != Waiter::Local(origin));
            if waiters.is_empty() {
                self.locating.remove(&device);
            }
        }
        true
    }
}

impl App for Hub {
    type Session = Proto;

    fn open(&mut self, kind: Kind, _peer: &Peer, now: Millis) -> Proto {
        match kind {
            Kind::Device => Proto::Device(DeviceSession::new(now)),
            Kind::Http => Proto::Http(Box::new(HttpSession::new(now))),
            Kind::Link => unreachable!("links are dialed (Ops::dial), never accepted"),
        }
    }

    fn refusal(&mut self, kind: Kind, reason: CloseReason, out: &mut Vec<u8>, stats: &mut Stats) {
        match kind {
            Kind::Device => {
                if let Some(bye) = reason.bye() {
                    out.extend_from_slice(bye);
                    stats.lines_out += 1;
                }
            }
            Kind::Link => {}
            Kind::Http => {
                let answer = match reason {
                    CloseReason::PeerLimit => Answer::error(429, "too many connections from this address"),
                    _ => Answer::error(503, "server full"),
                };
                let response = Response {
                    status: answer.status,
                    content_type: answer.content_type,
                    body: &answer.body,
                    headers: &[],
                };
                response.write(out, &self.cors_origin, false, false);
                stats.http_response(answer.status);
            }
        }
    }

    fn apply(&mut self, origin: Token, effect: Effect, ops: &mut Ops<'_, Proto>) {
        match effect {
            Effect::Identified { mac } => self.identified(origin, mac, ops),
            Effect::Located { mac, fix } => self.located(origin, mac, fix, ops),
            Effect::Offline { mac, reason } => self.offline(origin, mac, reason, ops),
            Effect::Ask(query) => {
                if let Some(reply) = self.answer(origin, query, ops) {
                    ops.reply(origin, reply);
                }
            }
            Effect::Withdraw => {
                self.forget_location_wait(origin);
                if let Some(cluster) = &mut self.cluster {
                    cluster.forget(origin);
                }
                self.feeds.remove(origin, &self.log);
            }
            Effect::Link(event) => self.link_event(origin, event, ops),
        }
    }

    fn start(&mut self, ops: &mut Ops<'_, Proto>) {
        if self.cluster.is_some() {
            self.cluster_start(ops);
        }
    }

    fn deadline(&self) -> Option<Millis> {
        self.cluster.as_ref().and_then(Cluster::deadline)
    }

    fn on_deadline(&mut self, ops: &mut Ops<'_, Proto>) {
        if self.cluster.is_some() {
            self.cluster_deadline(ops);
        }
    }

    fn produce(
        &mut self,
        token: Token,
        out: &mut OutBuf,
        pool: &mut Pool,
        budget: usize,
        stats: &mut Stats,
    ) -> Produce<Reply> {
        self.feeds.produce(token, out, pool, budget, &self.log, stats)
    }

    fn report(&self, line: &mut String) {
        let _ = write!(line, " devices={} subscribers={}", self.registry.len(), self.feeds.streams());
        self.cluster_report(line);
    }
}

#[cfg(test)]
mod tests {
    //! What of the hub needs no reactor: what a turned-away connection is
    //! told, the session a new connection gets, and production for a
    //! connection that has no feed. [`Hub::apply`] acts through [`Ops`],
    //! which only the reactor builds; it is exercised through a running
    //! gateway by the integration tests (`tests/protocol.rs`,
    //! `tests/http_devices.rs`, `tests/http_events.rs`), and the feeds it
    //! drives are unit-tested in [`feeds`].

    use super::*;
    use crate::reactor::Session as _;

    fn hub() -> Hub {
        Hub::new(Clock::new(), 10, "https://app.example".into(), None)
    }

    fn refusal(kind: Kind, reason: CloseReason) -> (String, Stats) {
        let mut out = Vec::new();
        let mut stats = Stats::default();
        hub().refusal(kind, reason, &mut out, &mut stats);
        (String::from_utf8(out).unwrap(), stats)
    }

    #[test]
    fn an_http_client_turned_away_gets_a_closing_json_error() {
        let (text, stats) = refusal(Kind::Http, CloseReason::PeerLimit);
        let body = r#"{"error":"too many connections from this address"}"#;
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Cache-Control: no-store\r\nAccess-Control-Allow-Origin: https://app.example\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        );
        assert_eq!(stats.http_responses.get(&429), Some(&1));
        let (text, stats) = refusal(Kind::Http, CloseReason::ServerFull);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n{\"error\":\"server full\"}"), "{text}");
        assert_eq!(stats.http_responses.get(&503), Some(&1));
    }

    #[test]
    fn a_collar_turned_away_is_told_bye_with_the_reason() {
        let (text, stats) = refusal(Kind::Device, CloseReason::ServerFull);
        assert_eq!((text.as_str(), stats.lines_out), ("BYE server-full\n", 1));
        let (text, stats) = refusal(Kind::Device, CloseReason::PeerLimit);
        assert_eq!((text.as_str(), stats.lines_out), ("BYE per-ip-limit\n", 1));
        assert!(stats.http_responses.is_empty());
    }

    #[test]
    fn each_listener_gets_its_protocol() {
        let mut hub = hub();
        let peer = Peer::V4([127, 0, 0, 1], 4000);
        assert!(matches!(hub.open(Kind::Device, &peer, 5), Proto::Device(_)));
        let http = hub.open(Kind::Http, &peer, 7);
        assert!(matches!(http, Proto::Http(_)));
        assert_eq!(http.idle_since(), Some(7), "opened at the turn's time");
    }

    #[test]
    fn a_connection_without_a_feed_produces_nothing() {
        let mut hub = hub();
        let (mut out, mut pool, mut stats) = (OutBuf::default(), Pool::default(), Stats::default());
        assert!(matches!(hub.produce(Token(3), &mut out, &mut pool, 1024, &mut stats), Produce::Idle));
        assert!(out.is_empty());
        let mut line = String::new();
        hub.report(&mut line);
        assert_eq!(line, " devices=0 subscribers=0");
        assert_eq!(hub.online(), 0);
    }
}
