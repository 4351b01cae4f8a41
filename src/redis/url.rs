//! `redis://HOST:PORT[/DB]`, the form `--redis` takes.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Where Redis is, and which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// The address as given, resolved once at start.
    pub addr: SocketAddr,
    pub db: u32,
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<RedisUrl, String> {
        let rest = text.strip_prefix("redis://").ok_or("expected redis://HOST:PORT[/DB]")?;
        let (host, db) = match rest.split_once('/') {
            Some((host, "")) => (host, 0),
            Some((host, db)) => (host, db.parse().map_err(|_| format!("bad database number {db:?}"))?),
            None => (rest, 0),
        };
        if host.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let host = if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(RedisUrl { addr, db })
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://{}/{}", self.addr, self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_database() {
        let url: RedisUrl = "redis://127.0.0.1:6380/2".parse().unwrap();
        assert_eq!((url.addr.to_string(), url.db), ("127.0.0.1:6380".into(), 2));
        let url: RedisUrl = "redis://127.0.0.1".parse().unwrap();
        assert_eq!((url.addr.port(), url.db), (6379, 0));
        assert_eq!("redis://[::1]:7000/".parse::<RedisUrl>().unwrap().addr.to_string(), "[::1]:7000");
        assert_eq!(url.to_string(), "redis://127.0.0.1:6379/0");
        for bad in ["127.0.0.1:6379", "redis://127.0.0.1:6379/x", "redis://u:p@127.0.0.1"] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad}");
        }
    }
}
