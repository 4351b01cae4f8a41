//! The endpoints of the app's HTTP API.
//!
//! [`Reactor::handle_request`] resolves the path, answers CORS preflights,
//! checks the method and the token, and calls the endpoint. Every endpoint
//! answers at once except the two long polls (`/devices/{mac}/location`,
//! `/events/poll`), which park the connection, and `/events`, which turns
//! it into a stream. See the README's "App API" section for the contract.

use std::fmt::Write as _;
use std::ops::Bound;
use std::time::Duration;

use log::debug;

use super::Reactor;
use super::http::Exchange;
use super::push::parse_event_id;
use crate::config::parse_duration;
use crate::connection::Role;
use crate::device::Mac;
use crate::http::{Method, Request, Response, Route, RouteError, State, Wait, json, router};
use crate::metrics::{self, Levels};
use crate::time::{Millis, millis, write_rfc3339};

/// `GET /devices`: default and largest page.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Default `timeout=` of the two long polls.
const LOCATION_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers of a CORS preflight answer, besides `Allow`.
const PREFLIGHT_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
const PREFLIGHT_MAX_AGE: &str = "86400";

impl Reactor {
    pub(super) fn handle_request(&mut self, key: usize, req: &Request<'_>) {
        if log::log_enabled!(log::Level::Debug) {
            debug!("#{key} HTTP {:?} {}{}", req.method, req.path, redacted_query(req.query));
        }
        let ex = Exchange { keep_alive: req.keep_alive && !self.draining(), head_only: req.method == Method::Head };
        let route = match router::resolve(req.path) {
            Ok(route) => route,
            Err(RouteError::NotFound) => return self.respond_error(key, ex, 404, "no such endpoint"),
            Err(RouteError::BadPath(why)) => return self.respond_error(key, ex, 400, why),
        };
        if req.method == Method::Options {
            let headers = [
                ("Allow", route.allow()),
                ("Access-Control-Allow-Methods", route.allow()),
                ("Access-Control-Allow-Headers", PREFLIGHT_HEADERS),
                ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
            ];
            return self.respond(key, ex, Response { headers: &headers, ..Response::json(204, "") });
        }
        if !route.allows(req.method) {
            let body = json::error("method not allowed");
            let headers = [("Allow", route.allow())];
            return self.respond(key, ex, Response { headers: &headers, ..Response::json(405, &body) });
        }
        if route != Route::Health && !self.authorized(req) {
            let body = json::error("missing or wrong bearer token");
            let headers = [("WWW-Authenticate", "Bearer")];
            return self.respond(key, ex, Response { headers: &headers, ..Response::json(401, &body) });
        }
        match route {
            Route::Health => self.health(key, ex),
            Route::Metrics => self.metrics(key, ex),
            Route::Devices => self.list_devices(key, ex, req),
            Route::Device(mac) => self.one_device(key, ex, mac),
            Route::DeviceLocation(mac) => self.query_location(key, ex, req, mac),
            Route::DeviceCommands(mac) => self.command(key, ex, req, mac),
            Route::Events => self.events_stream(key, ex, req),
            Route::EventsPoll => self.events_poll(key, ex, req),
        }
    }

    fn health(&mut self, key: usize, ex: Exchange) {
        if self.draining() {
            return self.respond(key, ex, Response::json(503, "{\"status\":\"draining\"}"));
        }
        let body = format!(
            "{{\"status\":\"ok\",\"uptime_s\":{},\"devices_online\":{},\"connections\":{}}}",
            self.now / 1000,
            self.devices.len(),
            self.conns.len()
        );
        self.respond(key, ex, Response::json(200, &body));
    }

    fn metrics(&mut self, key: usize, ex: Exchange) {
        let levels = Levels {
            connections: self.open,
            devices_online: self.devices.len(),
            sse_subscribers: self.subscribers.len(),
            long_polls: self.pollers.len() + self.location_waits.values().map(Vec::len).sum::<usize>(),
            events_held: self.events.len(),
            fd_limit: self.fd_limit,
            max_connections: self.max_connections,
            max_http_connections: self.config.max_http_connections,
            resident_memory_bytes: resident_memory(),
            uptime_seconds: self.now as f64 / 1000.0,
        };
        let mut body = String::with_capacity(8 * 1024);
        metrics::render(&mut body, &self.stats, &levels);
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        self.respond(key, ex, Response { content_type, ..Response::json(200, &body) });
    }

    /// `GET /devices?limit=&offset=` (and `after=<mac>`, a cursor that
    /// costs nothing however deep the page): online devices by MAC.
    fn list_devices(&mut self, key: usize, ex: Exchange, req: &Request<'_>) {
        let limit = match number_param(req, "limit") {
            Ok(limit) => limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let offset = match number_param(req, "offset") {
            Ok(offset) => offset.unwrap_or(0),
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let after = match mac_param(req, "after") {
            Ok(after) => after,
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let page: Vec<(Mac, usize)> = self
            .devices
            .range((lower, Bound::Unbounded))
            .skip(offset)
            .take(limit)
            .filter_map(|(&mac, &token)| Some((mac, self.live_key(token)?)))
            .collect();
        let mut body =
            format!("{{\"total\":{},\"offset\":{offset},\"limit\":{limit},\"devices\":[", self.devices.len());
        for (i, &(mac, device)) in page.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            self.write_device(&mut body, mac, device);
        }
        body.push_str("]}");
        self.respond(key, ex, Response::json(200, &body));
    }

    fn one_device(&mut self, key: usize, ex: Exchange, mac: Mac) {
        let Some(device) = self.online(mac) else { return self.respond_error(key, ex, 404, "device not online") };
        let mut body = String::new();
        self.write_device(&mut body, mac, device);
        self.respond(key, ex, Response::json(200, &body));
    }

    /// `{"mac","peer","connected_at","last_seen","location"}`.
    fn write_device(&self, out: &mut String, mac: Mac, device: usize) {
        let conn = &self.conns[device];
        let Role::Device(d) = &conn.role else { return };
        let _ = write!(out, "{{\"mac\":\"{mac}\",\"peer\":");
        json::string(out, &conn.peer.to_string());
        out.push_str(",\"connected_at\":");
        self.write_time(out, d.session.connected_at);
        out.push_str(",\"last_seen\":");
        self.write_time(out, conn.last_rx);
        out.push_str(",\"location\":");
        match d.session.location.as_deref() {
            Some(fix) => self.write_fix(out, fix),
            None => out.push_str("null"),
        }
        out.push('}');
    }

    fn write_time(&self, out: &mut String, at: Millis) {
        out.push('"');
        write_rfc3339(out, self.clock.unix_ms(at));
        out.push('"');
    }

    /// The slab key of the online device with this MAC.
    fn online(&self, mac: Mac) -> Option<usize> {
        self.live_key(*self.devices.get(&mac)?)
    }

    /// `GET /devices/{mac}/location?timeout=5s`: asks the collar and waits.
    fn query_location(&mut self, key: usize, ex: Exchange, req: &Request<'_>, mac: Mac) {
        let timeout = match self.timeout_param(req, LOCATION_TIMEOUT) {
            Ok(timeout) => timeout,
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let Some(device) = self.online(mac) else { return self.respond_error(key, ex, 404, "device not online") };
        let device_token = self.token_of(device);
        let Role::Http(http) = &mut self.conns[key].role else { return };
        let until = self.now.saturating_add(millis(timeout));
        http.state =
            State::Waiting { wait: Wait::Location { device: device_token, mac }, until, keep_alive: ex.keep_alive };
        self.set_timer(key, Some(until));
        self.wait_for_location(key, device);
    }

    /// `POST /devices/{mac}/commands`: one line of text, written to the
    /// collar as it stands.
    fn command(&mut self, key: usize, ex: Exchange, req: &Request<'_>, mac: Mac) {
        let line = req.body;
        if line.is_empty() {
            return self.respond_error(key, ex, 400, "empty command");
        }
        if line.len() + 1 > self.config.max_line {
            return self.respond_error(key, ex, 400, "command longer than --max-line");
        }
        if line.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
            return self.respond_error(
                key,
                ex,
                400,
                "a command is one line of printable ASCII (no control characters)",
            );
        }
        let Some(device) = self.online(mac) else { return self.respond_error(key, ex, 404, "device not online") };
        if self.conns[device].out.len() + line.len() + 1 > self.config.max_output {
            return self.respond_error(key, ex, 503, "the device's output buffer is full");
        }
        let mut wire = Vec::with_capacity(line.len() + 1);
        wire.extend_from_slice(line);
        wire.push(b'\n');
        self.stats.lines_out += 1;
        let _ = self.send(device, &wire);
        let body = format!("{{\"mac\":\"{mac}\",\"accepted\":true,\"bytes\":{}}}", wire.len());
        self.respond(key, ex, Response::json(202, &body));
    }

    /// `GET /events[?mac=]`: a Server-Sent Events stream.
    fn events_stream(&mut self, key: usize, ex: Exchange, req: &Request<'_>) {
        let filter = match mac_param(req, "mac") {
            Ok(filter) => filter,
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        if self.draining() {
            return self.respond_error(key, ex, 503, "the gateway is shutting down");
        }
        self.start_stream(key, filter, parse_event_id(req.last_event_id));
    }

    /// `GET /events/poll?since=&timeout=[&mac=]`: events after `since` at
    /// once, or the first one to come, or an empty list after `timeout`.
    fn events_poll(&mut self, key: usize, ex: Exchange, req: &Request<'_>) {
        let filter = match mac_param(req, "mac") {
            Ok(filter) => filter,
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let since = match number_param(req, "since") {
            // Without `since`, only what happens from now on.
            Ok(since) => since.map_or(self.events.last_id(), |s| s as u64),
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        let timeout = match self.timeout_param(req, POLL_TIMEOUT) {
            Ok(timeout) => timeout,
            Err(why) => return self.respond_error(key, ex, 400, &why),
        };
        if self.draining() {
            return self.respond_error(key, ex, 503, "the gateway is shutting down");
        }
        if self.poll_has_news(since, filter) || timeout.is_zero() {
            let body = self.poll_body(since, filter);
            return self.respond(key, ex, Response::json(200, &body));
        }
        let until = self.now.saturating_add(millis(timeout));
        let Role::Http(http) = &mut self.conns[key].role else { return };
        http.state = State::Waiting { wait: Wait::Events { since, filter }, until, keep_alive: ex.keep_alive };
        let token = self.token_of(key);
        self.pollers.insert(token);
        self.set_timer(key, Some(until));
    }

    /// The `timeout=` of a long poll, capped at `--max-wait`.
    fn timeout_param(&self, req: &Request<'_>, default: Duration) -> Result<Duration, String> {
        match req.param("timeout") {
            Ok(None) => Ok(default.min(self.config.max_wait)),
            Ok(Some(text)) => Ok(parse_duration(&text)?.min(self.config.max_wait)),
            Err(_) => Err("badly encoded query".into()),
        }
    }
}

/// `?query` for the log, with the value of `access_token` hidden.
fn redacted_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| if pair.starts_with("access_token=") { "access_token=<redacted>" } else { pair })
        .collect();
    format!("?{}", pairs.join("&"))
}

/// A non-negative integer query parameter.
fn number_param(req: &Request<'_>, name: &str) -> Result<Option<usize>, String> {
    match req.param(name) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => text.parse().map(Some).map_err(|_| format!("{name} must be a non-negative integer")),
        Err(_) => Err("badly encoded query".into()),
    }
}

/// A MAC query parameter, in either spelling.
fn mac_param(req: &Request<'_>, name: &str) -> Result<Option<Mac>, String> {
    match req.param(name) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => Mac::parse(text.as_bytes()).map(Some).map_err(|_| format!("{name} is not a MAC address")),
        Err(_) => Err("badly encoded query".into()),
    }
}

/// The process's resident memory, from `/proc/self/statm`.
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::redacted_query;

    #[test]
    fn the_token_never_reaches_the_log() {
        assert_eq!(redacted_query(""), "");
        assert_eq!(redacted_query("limit=5"), "?limit=5");
        assert_eq!(redacted_query("mac=x&access_token=s3cret&since=4"), "?mac=x&access_token=<redacted>&since=4");
    }
}
