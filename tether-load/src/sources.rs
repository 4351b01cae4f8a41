//! Source addresses: parsing `--source-ips` and sharing them among the
//! worker processes (sans-IO).
//!
//! One source IP has at most ~28k–64k ephemeral ports toward one server
//! port (`net.ipv4.ip_local_port_range`), so more connections than that
//! need more source addresses; on loopback every 127.x.y.z works without
//! any set-up. The flag takes a single address (`127.0.0.2`), an inclusive
//! range (`127.0.0.2-127.0.0.9`), or a comma list of either
//! (`127.0.0.2-127.0.0.5,127.0.0.9`). IPv6 works the same way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Most addresses one `--source-ips` may name: far more than any test host
/// needs, and a typo like `10.0.0.1-10.9.0.1` is caught instead of
/// allocating millions of entries.
pub const MAX_SOURCE_IPS: u128 = 4096;

/// The source addresses, in the order given, without duplicates; never
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(Vec<IpAddr>);

impl SourceIps {
    pub fn as_slice(&self) -> &[IpAddr] {
        &self.0
    }

    /// The addresses worker `worker` of `workers` uses: every `workers`-th
    /// one when there are enough to go round (so the shares are disjoint),
    /// otherwise one address, shared round-robin (the kernel hands out
    /// ports per address across processes, so sharing is safe, only the
    /// port budget is split).
    pub fn share(&self, worker: u32, workers: u32) -> SourceIps {
        let (worker, workers) = (worker as usize, workers.max(1) as usize);
        if self.0.len() >= workers {
            SourceIps(self.0.iter().skip(worker).step_by(workers).copied().collect())
        } else {
            SourceIps(vec![self.0[worker % self.0.len()]])
        }
    }
}

/// The form the flag takes back: a comma list, for a worker's command line.
impl fmt::Display for SourceIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ip) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{ip}")?;
        }
        Ok(())
    }
}

impl FromStr for SourceIps {
    type Err = String;

    fn from_str(text: &str) -> Result<SourceIps, String> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("{text:?}: empty item in the list"));
            }
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (parse_ip(a.trim())?, parse_ip(b.trim())?),
                None => {
                    let ip = parse_ip(item)?;
                    (ip, ip)
                }
            };
            let (start, end) = match (first, last) {
                (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b))),
                (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
                _ => return Err(format!("{item:?}: a range cannot mix IPv4 and IPv6")),
            };
            if start > end {
                return Err(format!("{item:?}: the range is reversed (did you mean {last}-{first}?)"));
            }
            if (end - start).saturating_add(1).saturating_add(ips.len() as u128) > MAX_SOURCE_IPS {
                return Err(format!("{text:?}: more than {MAX_SOURCE_IPS} addresses"));
            }
            for n in start..=end {
                let ip = match first {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
                };
                if ips.contains(&ip) {
                    return Err(format!("{text:?}: {ip} is named twice"));
                }
                ips.push(ip);
            }
        }
        if ips.iter().any(|ip| ip.is_ipv4() != ips[0].is_ipv4()) {
            return Err(format!("{text:?}: mixes IPv4 and IPv6 addresses"));
        }
        Ok(SourceIps(ips))
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text.parse().map_err(|_| format!("{text:?} is not an IP address"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("{ip} cannot be a source address"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(text: &str) -> Vec<String> {
        text.parse::<SourceIps>().unwrap().0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_single_address() {
        assert_eq!(ips("127.0.0.2"), ["127.0.0.2"]);
        assert_eq!(ips("::1"), ["::1"]);
    }

    #[test]
    fn an_inclusive_range() {
        assert_eq!(ips("127.0.0.2-127.0.0.5"), ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
        assert_eq!(ips("127.0.0.7-127.0.0.7"), ["127.0.0.7"]);
        // Ranges carry across octets.
        assert_eq!(ips("127.0.0.254-127.0.1.1"), ["127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"]);
        assert_eq!(ips("fd00::1-fd00::3"), ["fd00::1", "fd00::2", "fd00::3"]);
    }

    #[test]
    fn lists_of_addresses_and_ranges() {
        assert_eq!(ips("127.0.0.2,127.0.0.9"), ["127.0.0.2", "127.0.0.9"]);
        assert_eq!(ips("127.0.0.2-127.0.0.3, 127.0.0.9"), ["127.0.0.2", "127.0.0.3", "127.0.0.9"]);
    }

    #[test]
    fn invalid_input_is_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty item"),
            ("127.0.0.2,", "empty item"),
            ("127.0.0.300", "not an IP address"),
            ("localhost", "not an IP address"),
            ("127.0.0.2-", "not an IP address"),
            ("127.0.0.2-127.0.0.3-127.0.0.4", "not an IP address"),
            ("127.0.0.9-127.0.0.2", "reversed"),
            ("127.0.0.1-::1", "mix IPv4 and IPv6"),
            ("127.0.0.1,::1", "mixes IPv4 and IPv6"),
            ("0.0.0.0", "cannot be a source"),
            ("224.0.0.1", "cannot be a source"),
            ("127.0.0.2,127.0.0.1-127.0.0.3", "named twice"),
        ] {
            let err = text.parse::<SourceIps>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn over_large_ranges_are_refused() {
        let err = "10.0.0.0-10.255.255.255".parse::<SourceIps>().unwrap_err();
        assert!(err.contains("more than 4096"), "{err}");
        let err = "fd00::-fd00::ffff:ffff:ffff:ffff".parse::<SourceIps>().unwrap_err();
        assert!(err.contains("more than 4096"), "{err}");
        // The cap counts the whole list, not each item.
        let err = "127.0.0.0-127.0.7.255,127.0.8.0-127.0.16.0".parse::<SourceIps>().unwrap_err();
        assert!(err.contains("more than 4096"), "{err}");
        assert_eq!(ips("127.0.0.0-127.0.15.255").len(), 4096);
    }

    #[test]
    fn prints_back_as_a_list_that_parses_to_the_same() {
        let all: SourceIps = "127.0.0.2-127.0.0.4,127.0.0.9".parse().unwrap();
        assert_eq!(all.to_string(), "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.9");
        assert_eq!(all.to_string().parse::<SourceIps>(), Ok(all));
    }

    #[test]
    fn shares_are_disjoint_when_there_are_enough() {
        let all: SourceIps = "127.0.0.2-127.0.0.9".parse().unwrap();
        let shares: Vec<SourceIps> = (0..3).map(|w| all.share(w, 3)).collect();
        assert_eq!(shares[0].to_string(), "127.0.0.2,127.0.0.5,127.0.0.8");
        assert_eq!(shares[1].to_string(), "127.0.0.3,127.0.0.6,127.0.0.9");
        assert_eq!(shares[2].to_string(), "127.0.0.4,127.0.0.7");
        let mut union: Vec<IpAddr> = shares.iter().flat_map(|s| s.0.clone()).collect();
        union.sort();
        assert_eq!(union, all.0);
    }

    #[test]
    fn fewer_addresses_than_workers_are_shared_round_robin() {
        let all: SourceIps = "127.0.0.2-127.0.0.3".parse().unwrap();
        let shares: Vec<String> = (0..5).map(|w| all.share(w, 5).to_string()).collect();
        assert_eq!(shares, ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3", "127.0.0.2"]);
    }
}
