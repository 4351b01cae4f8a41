//! What a request asks for (sans-IO): routing, method checks, CORS
//! preflights, the bearer token, and query parameters, decided from the
//! request alone.
//!
//! [`decide`] either answers at once (a preflight, a 404, a 400 for a bad
//! parameter, a 401) or turns the request into a [`Query`] for the hub,
//! which holds the fleet's state and answers it. Long polls also get the
//! time until which they may wait. See the README's "App API" section for
//! the contract.

use std::time::Duration;

use subtle::ConstantTimeEq;

use super::dashboard;
use super::request::{Head, Method};
use super::router::{self, Route, RouteError};
use super::session::HttpSettings;
use crate::config::parse_duration;
use crate::device::Mac;
use crate::effect::{Answer, Query};
use crate::events::EventRef;
use crate::time::{Millis, millis};

/// `GET /devices`: default and largest page.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Default `timeout=` of the two long polls.
const LOCATION_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers of a CORS preflight answer, besides the methods.
const PREFLIGHT_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Extra response headers: (name, value).
pub type Headers = Vec<(&'static str, &'static str)>;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer now.
    Respond(Answer, Headers),
    /// Ask the hub. A long poll may wait for its answer until `until`.
    Ask(Query, Option<Millis>),
}

fn error(status: u16, message: &str) -> Decision {
    Decision::Respond(Answer::error(status, message), Headers::new())
}

/// Decides what `head` (with its decoded `body`) asks for, at `now`.
pub fn decide(head: &Head<'_>, body: &[u8], settings: &HttpSettings, now: Millis, draining: bool) -> Decision {
    let route = match router::resolve(head.path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return error(404, "no such endpoint"),
        Err(RouteError::BadPath(why)) => return error(400, why),
    };
    if head.method == Method::Options {
        let headers = vec![
            ("Allow", route.allow()),
            ("Access-Control-Allow-Methods", route.allow()),
            ("Access-Control-Allow-Headers", PREFLIGHT_HEADERS),
            ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
        ];
        return Decision::Respond(Answer::json(204, Vec::new()), headers);
    }
    if !route.allows(head.method) {
        return Decision::Respond(Answer::error(405, "method not allowed"), vec![("Allow", route.allow())]);
    }
    if !route.public() && !authorized(head, settings.api_token.as_deref()) {
        let answer = Answer::error(401, "missing or wrong bearer token");
        return Decision::Respond(answer, vec![("WWW-Authenticate", "Bearer")]);
    }
    let until = |timeout: Duration| Some(now.saturating_add(millis(timeout)));
    let result = match route {
        Route::Health => Ok(Decision::Ask(Query::Health, None)),
        Route::Metrics => Ok(Decision::Ask(Query::Metrics, None)),
        Route::Stats => Ok(Decision::Ask(Query::Stats, None)),
        Route::Dashboard(asset) => Ok(dashboard::serve(asset, head.if_none_match)),
        Route::Devices => devices(head),
        Route::Device(mac) => Ok(Decision::Ask(Query::Device(mac), None)),
        Route::DeviceLocation(mac) => timeout_param(head, LOCATION_TIMEOUT, settings.max_wait)
            .map(|t| Decision::Ask(Query::Location(mac), until(t))),
        Route::DeviceCommands(mac) => command(body, mac, settings.max_command),
        Route::Events if draining => Err((503, "the gateway is shutting down".into())),
        Route::Events => mac_param(head, "mac").map(|filter| {
            // The header (what `EventSource` sends when it reconnects by
            // itself) wins over `?last_event_id=` (what a page that opens
            // a new `EventSource` has to use).
            let from_query = head.param("last_event_id").ok().flatten();
            let last_event_id =
                event_id(head.last_event_id).or_else(|| from_query.and_then(|id| event_id(Some(id.as_bytes()))));
            Decision::Ask(Query::Stream { filter, last_event_id }, None)
        }),
        Route::EventsPoll => {
            poll(head, settings, draining).map(|(query, timeout)| Decision::Ask(query, until(timeout)))
        }
    };
    result.unwrap_or_else(|(status, why)| error(status, &why))
}

type Refusal = (u16, String);

fn devices(head: &Head<'_>) -> Result<Decision, Refusal> {
    let limit = number_param(head, "limit")?.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let offset = number_param(head, "offset")?.unwrap_or(0);
    let after = mac_param(head, "after")?;
    Ok(Decision::Ask(Query::Devices { after, offset, limit }, None))
}

/// `POST /devices/{mac}/commands`: one line of printable ASCII.
fn command(body: &[u8], mac: Mac, max_command: usize) -> Result<Decision, Refusal> {
    if body.is_empty() {
        return Err((400, "empty command".into()));
    }
    if body.len() > max_command {
        return Err((400, "command longer than --max-line".into()));
    }
    if body.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err((400, "a command is one line of printable ASCII (no control characters)".into()));
    }
    Ok(Decision::Ask(Query::Command { mac, line: body.to_vec() }, None))
}

/// `GET /events/poll?since=&timeout=[&mac=]`.
fn poll(head: &Head<'_>, settings: &HttpSettings, draining: bool) -> Result<(Query, Duration), Refusal> {
    let filter = mac_param(head, "mac")?;
    let since = match head.param("since") {
        Ok(None) => None,
        Ok(Some(text)) => Some(EventRef::parse(&text).ok_or((400, "since must be an event id".to_string()))?),
        Err(_) => return Err((400, "badly encoded query".into())),
    };
    let timeout = timeout_param(head, POLL_TIMEOUT, settings.max_wait)?;
    if draining {
        return Err((503, "the gateway is shutting down".into()));
    }
    Ok((Query::Poll { since, filter, wait: !timeout.is_zero() }, timeout))
}

/// Whether `head` carries the API token (always, when none is set): as a
/// bearer token, or as `?access_token=` where headers cannot be set
/// (`EventSource`). Compared in constant time.
fn authorized(head: &Head<'_>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let from_header = head.authorization.and_then(|value| {
        let (scheme, credentials) = value.split_at(value.iter().position(|&b| b == b' ')?);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| credentials.trim_ascii().to_vec())
    });
    let presented = match from_header {
        Some(credentials) => credentials,
        None => match head.param("access_token") {
            Ok(Some(value)) => value.into_bytes(),
            _ => return false,
        },
    };
    presented.ct_eq(token.as_bytes()).into()
}

/// The `timeout=` of a long poll, capped at `--max-wait`.
fn timeout_param(head: &Head<'_>, default: Duration, max_wait: Duration) -> Result<Duration, Refusal> {
    match head.param("timeout") {
        Ok(None) => Ok(default.min(max_wait)),
        Ok(Some(text)) => Ok(parse_duration(&text).map_err(|why| (400, why))?.min(max_wait)),
        Err(_) => Err((400, "badly encoded query".into())),
    }
}

/// A non-negative integer query parameter.
fn number_param(head: &Head<'_>, name: &str) -> Result<Option<usize>, Refusal> {
    match head.param(name) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => text.parse().map(Some).map_err(|_| (400, format!("{name} must be a non-negative integer"))),
        Err(_) => Err((400, "badly encoded query".into())),
    }
}

/// A MAC query parameter, in either spelling.
fn mac_param(head: &Head<'_>, name: &str) -> Result<Option<Mac>, Refusal> {
    match head.param(name) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => {
            Mac::parse(text.as_bytes()).map(Some).map_err(|_| (400, format!("{name} is not a MAC address")))
        }
        Err(_) => Err((400, "badly encoded query".into())),
    }
}

/// A `Last-Event-ID` header value (ignored if not a number).
fn event_id(value: Option<&[u8]>) -> Option<EventRef> {
    EventRef::parse(std::str::from_utf8(value?).ok()?)
}

/// `?query` for the log, with the value of `access_token` hidden.
pub fn redacted_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| if pair.starts_with("access_token=") { "access_token=<redacted>" } else { pair })
        .collect();
    format!("?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{Limits, parse_head};
    use crate::http::session::HttpTimeouts;

    const MAC: Mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);

    fn settings(token: Option<&str>) -> HttpSettings {
        HttpSettings {
            limits: Limits { max_head: 4096, max_body: 64 },
            timeouts: HttpTimeouts {
                request: Duration::from_secs(1),
                idle: Duration::from_secs(1),
                sse_keepalive: Duration::from_secs(1),
            },
            cors_origin: "*".into(),
            api_token: token.map(Into::into),
            max_wait: Duration::from_secs(60),
            max_command: 16,
            pause_above: 1024,
        }
    }

    fn decide_at(request: &str, token: Option<&str>, draining: bool) -> Decision {
        let buf = request.as_bytes();
        let head = parse_head(buf, settings(None).limits).unwrap().unwrap();
        let body = &buf[head.len..];
        decide(&head, body, &settings(token), 1000, draining)
    }

    fn status(decision: &Decision) -> u16 {
        match decision {
            Decision::Respond(answer, _) => answer.status,
            Decision::Ask(..) => 0,
        }
    }

    #[test]
    fn queries_for_the_hub() {
        let cases = [
            ("GET /health HTTP/1.1\r\n\r\n", Decision::Ask(Query::Health, None)),
            ("GET /metrics HTTP/1.1\r\n\r\n", Decision::Ask(Query::Metrics, None)),
            ("GET /stats HTTP/1.1\r\n\r\n", Decision::Ask(Query::Stats, None)),
            (
                "GET /devices?limit=5000&offset=3&after=ce-96-c2-78-27-fc HTTP/1.1\r\n\r\n",
                Decision::Ask(Query::Devices { after: Some(MAC), offset: 3, limit: MAX_PAGE }, None),
            ),
            ("GET /devices/CE:96:C2:78:27:FC HTTP/1.1\r\n\r\n", Decision::Ask(Query::Device(MAC), None)),
            (
                "GET /devices/CE:96:C2:78:27:FC/location?timeout=2s HTTP/1.1\r\n\r\n",
                Decision::Ask(Query::Location(MAC), Some(3000)),
            ),
            (
                "POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: 6\r\n\r\nREBOOT",
                Decision::Ask(Query::Command { mac: MAC, line: b"REBOOT".to_vec() }, None),
            ),
            (
                "GET /events?mac=CE:96:C2:78:27:FC HTTP/1.1\r\nLast-Event-ID: 41\r\n\r\n",
                Decision::Ask(Query::Stream { filter: Some(MAC), last_event_id: Some(EventRef::Local(41)) }, None),
            ),
            (
                "GET /events?last_event_id=17 HTTP/1.1\r\n\r\n",
                Decision::Ask(Query::Stream { filter: None, last_event_id: Some(EventRef::Local(17)) }, None),
            ),
            (
                "GET /events?last_event_id=17 HTTP/1.1\r\nLast-Event-ID: 41\r\n\r\n",
                Decision::Ask(Query::Stream { filter: None, last_event_id: Some(EventRef::Local(41)) }, None),
            ),
            (
                "GET /events/poll?since=7&timeout=0 HTTP/1.1\r\n\r\n",
                Decision::Ask(Query::Poll { since: Some(EventRef::Local(7)), filter: None, wait: false }, Some(1000)),
            ),
            (
                "GET /events/poll HTTP/1.1\r\n\r\n",
                Decision::Ask(Query::Poll { since: None, filter: None, wait: true }, Some(31_000)),
            ),
        ];
        for (request, decision) in cases {
            assert_eq!(decide_at(request, None, false), decision, "{request}");
        }
    }

    #[test]
    fn answered_at_once() {
        for (request, code) in [
            ("GET /nope HTTP/1.1\r\n\r\n", 404),
            ("GET /devices/not-a-mac HTTP/1.1\r\n\r\n", 400),
            ("POST /health HTTP/1.1\r\n\r\n", 405),
            ("OPTIONS /devices HTTP/1.1\r\n\r\n", 204),
            ("GET /devices?limit=-1 HTTP/1.1\r\n\r\n", 400),
            ("GET /devices?after=zz HTTP/1.1\r\n\r\n", 400),
            ("GET /devices/CE:96:C2:78:27:FC/location?timeout=soon HTTP/1.1\r\n\r\n", 400),
            ("POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\n\r\n", 400),
            ("POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: 17\r\n\r\n12345678901234567", 400),
            ("POST /devices/CE:96:C2:78:27:FC/commands HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb", 400),
        ] {
            assert_eq!(status(&decide_at(request, None, false)), code, "{request}");
        }
        assert_eq!(status(&decide_at("GET /events HTTP/1.1\r\n\r\n", None, true)), 503);
        assert_eq!(status(&decide_at("GET /events/poll HTTP/1.1\r\n\r\n", None, true)), 503);
    }

    #[test]
    fn the_token_is_required_but_for_health_and_preflights() {
        let token = Some("s3cret");
        assert_eq!(status(&decide_at("GET /devices HTTP/1.1\r\n\r\n", token, false)), 401);
        assert_eq!(
            status(&decide_at("GET /devices HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n", token, false)),
            401
        );
        assert_eq!(
            status(&decide_at("GET /devices HTTP/1.1\r\nAuthorization: bearer s3cret\r\n\r\n", token, false)),
            0
        );
        assert_eq!(status(&decide_at("GET /devices?access_token=s3cret HTTP/1.1\r\n\r\n", token, false)), 0);
        assert_eq!(status(&decide_at("GET /devices?access_token=s3cre HTTP/1.1\r\n\r\n", token, false)), 401);
        assert_eq!(status(&decide_at("GET /stats HTTP/1.1\r\n\r\n", token, false)), 401);
        assert_eq!(status(&decide_at("GET /stats?access_token=s3cret HTTP/1.1\r\n\r\n", token, false)), 0);
        assert_eq!(status(&decide_at("GET /health HTTP/1.1\r\n\r\n", token, false)), 0);
        // The dashboard's files are public; what they show comes from the API.
        assert_eq!(status(&decide_at("GET / HTTP/1.1\r\n\r\n", token, false)), 200);
        assert_eq!(status(&decide_at("GET /dashboard/dashboard.js HTTP/1.1\r\n\r\n", token, false)), 200);
        assert_eq!(status(&decide_at("OPTIONS /devices HTTP/1.1\r\n\r\n", token, false)), 204);
    }

    #[test]
    fn the_token_never_reaches_the_log() {
        assert_eq!(redacted_query(""), "");
        assert_eq!(redacted_query("limit=5"), "?limit=5");
        assert_eq!(redacted_query("mac=x&access_token=s3cret&since=4"), "?mac=x&access_token=<redacted>&since=4");
    }

    #[test]
    fn event_ids() {
        assert_eq!(event_id(Some(b" 42 ")), Some(EventRef::Local(42)));
        assert_eq!(event_id(Some(b"L42")), Some(EventRef::Local(42)));
        assert_eq!(event_id(Some(b"1764398400000-3")), EventRef::parse("1764398400000-3"));
        assert!(matches!(event_id(Some(b"1764398400000-3")), Some(EventRef::Stream(_))));
        assert_eq!(event_id(Some(b"x")), None);
        assert_eq!(event_id(None), None);
    }
}
