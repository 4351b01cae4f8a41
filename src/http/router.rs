//! Which endpoint a path names, and which methods it takes.
//!
//! Paths are split on `/` and each segment is percent-decoded before it is
//! matched, so `/devices/CE%3A96%3AC2%3A78%3A27%3AFC` and
//! `/devices/ce-96-c2-78-27-fc` name the same device. A trailing slash is
//! ignored.

use super::Method;
use super::dashboard::Asset;
use super::percent;
use crate::device::Mac;

/// An endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    /// `GET /stats`: the figures of `/metrics` as JSON.
    Stats,
    /// The dashboard's page (`/`) and its files (`/dashboard/...`).
    Dashboard(Asset),
    Devices,
    Device(Mac),
    DeviceLocation(Mac),
    DeviceCommands(Mac),
    Events,
    EventsPoll,
}

/// Why a path does not resolve to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// 404.
    NotFound,
    /// 400: the path names a device with an invalid MAC, or is badly encoded.
    BadPath(&'static str),
}

impl Route {
    /// The methods the endpoint takes, as an `Allow` header value.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Health | Route::Metrics | Route::Stats | Route::Dashboard(_) | Route::Devices | Route::Device(_) => {
                "GET, HEAD, OPTIONS"
            }
            Route::DeviceLocation(_) | Route::Events | Route::EventsPoll => "GET, OPTIONS",
            Route::DeviceCommands(_) => "POST, OPTIONS",
        }
    }

    /// Whether the endpoint answers without the API token: the health
    /// check, and the dashboard's files (its data comes from the API, which
    /// asks for the token).
    pub fn public(self) -> bool {
        matches!(self, Route::Health | Route::Dashboard(_))
    }

    /// Whether the endpoint takes `method`.
    pub fn allows(self, method: Method) -> bool {
        let name = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Options => "OPTIONS",
            Method::Other => return false,
        };
        self.allow().split(", ").any(|m| m == name)
    }
}

/// Resolves a (still encoded) path to its endpoint.
pub fn resolve(path: &str) -> Result<Route, RouteError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut decoded = Vec::with_capacity(3);
    for raw in path.split('/') {
        if decoded.len() == 3 {
            return Err(RouteError::NotFound);
        }
        decoded.push(percent::decode(raw).map_err(|_| RouteError::BadPath("badly encoded path"))?);
    }
    let parts: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let mac = |text: &str| Mac::parse(text.as_bytes()).map_err(|_| RouteError::BadPath("invalid MAC in path"));
    match parts[..] {
        [""] => Ok(Route::Dashboard(Asset::Page)),
        ["dashboard", file] => Asset::named(file).map(Route::Dashboard).ok_or(RouteError::NotFound),
        ["health"] => Ok(Route::Health),
        ["metrics"] => Ok(Route::Metrics),
        ["stats"] => Ok(Route::Stats),
        ["devices"] => Ok(Route::Devices),
        ["devices", m] => Ok(Route::Device(mac(m)?)),
        ["devices", m, "location"] => Ok(Route::DeviceLocation(mac(m)?)),
        ["devices", m, "commands"] => Ok(Route::DeviceCommands(mac(m)?)),
        ["events"] => Ok(Route::Events),
        ["events", "poll"] => Ok(Route::EventsPoll),
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);

    #[test]
    fn resolves_every_endpoint() {
        let cases = [
            ("/", Route::Dashboard(Asset::Page)),
            ("", Route::Dashboard(Asset::Page)),
            ("/dashboard/dashboard.js", Route::Dashboard(Asset::Script)),
            ("/dashboard/dashboard.css", Route::Dashboard(Asset::Style)),
            ("/dashboard/icon.svg", Route::Dashboard(Asset::Icon)),
            ("/health", Route::Health),
            ("/metrics", Route::Metrics),
            ("/stats", Route::Stats),
            ("/devices", Route::Devices),
            ("/devices/", Route::Devices),
            ("/devices/CE:96:C2:78:27:FC", Route::Device(MAC)),
            ("/devices/ce-96-c2-78-27-fc", Route::Device(MAC)),
            ("/devices/CE%3A96%3AC2%3A78%3A27%3AFC", Route::Device(MAC)),
            ("/devices/CE%3a96%3ac2%3a78%3a27%3afc/location", Route::DeviceLocation(MAC)),
            ("/devices/CE-96-C2-78-27-FC/commands", Route::DeviceCommands(MAC)),
            ("/events", Route::Events),
            ("/events/poll", Route::EventsPoll),
        ];
        for (path, route) in cases {
            assert_eq!(resolve(path), Ok(route), "{path}");
        }
    }

    #[test]
    fn unknown_paths_and_bad_macs() {
        for path in [
            "/nope",
            "/dashboard",
            "/dashboard/",
            "/dashboard/x.js",
            "/dashboard/dashboard.js/x",
            "/index.html",
            "/devices/CE:96:C2:78:27:FC/other",
            "/health/x",
            "/a/b/c/d/e",
            "//health",
        ] {
            assert_eq!(resolve(path), Err(RouteError::NotFound), "{path}");
        }
        assert_eq!(resolve("/devices/not-a-mac"), Err(RouteError::BadPath("invalid MAC in path")));
        assert_eq!(resolve("/devices/%zz"), Err(RouteError::BadPath("badly encoded path")));
    }

    #[test]
    fn methods() {
        assert!(Route::Health.allows(Method::Head));
        assert!(!Route::Health.allows(Method::Post));
        assert!(Route::DeviceCommands(MAC).allows(Method::Post));
        assert!(!Route::DeviceCommands(MAC).allows(Method::Get));
        assert!(!Route::Events.allows(Method::Other));
        assert_eq!(Route::DeviceCommands(MAC).allow(), "POST, OPTIONS");
    }
}
