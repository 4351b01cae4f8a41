//! Who is who, and who does what: each collar's MAC, and each worker
//! process's share of a run (sans-IO).
//!
//! Collar `i` of a run (counted over all processes) identifies as
//! `--mac-base + i`, the MAC read as a 48-bit number. Workers get
//! consecutive, disjoint index ranges, so two processes of one run never
//! claim the same MAC (which the gateway would answer with a takeover,
//! `BYE replaced`). Separate runs against one gateway need different
//! `--mac-base` values, at least `--collars` apart.
//!
//! The same even split divides the collars, the `--active` RTT collars and
//! the in-flight cap; the connect rate is divided exactly; the source
//! addresses are dealt out by [`SourceIps::share`].

use tether::device::Mac;

use crate::cli::Args;
use crate::sources::SourceIps;

/// The default `--mac-base`: a locally administered unicast prefix (`02`)
/// with `4C` for "load", far from the `02:00:…` the gateway's tests use.
pub const DEFAULT_MAC_BASE: &str = "02:4C:00:00:00:00";

const MAC_SPACE: u64 = 1 << 48;

/// A MAC as a 48-bit number.
pub fn mac_number(mac: Mac) -> u64 {
    mac.0.iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

/// The MAC of collar `index`: `base + index`, or `None` past the end of
/// the 48-bit space.
pub fn mac_of(base: Mac, index: u64) -> Option<Mac> {
    let n = mac_number(base).checked_add(index).filter(|&n| n < MAC_SPACE)?;
    let bytes = n.to_be_bytes();
    Some(Mac([bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]))
}

/// Whether `count` collars from index `first` on all have a MAC.
pub fn macs_fit(base: Mac, first: u64, count: u64) -> bool {
    count == 0 || first.checked_add(count - 1).and_then(|last| mac_of(base, last)).is_some()
}

/// Part `part` (from 0) of `total` items cut into `parts` nearly equal runs:
/// `(offset of its first item, its count)`. The first `total % parts`
/// parts get one more.
pub fn split(total: u64, parts: u32, part: u32) -> (u64, u64) {
    let (parts, part) = (u64::from(parts.max(1)), u64::from(part));
    let (each, extra) = (total / parts, total % parts);
    (part * each + part.min(extra), each + u64::from(part < extra))
}

/// One worker's part of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub collars: u64,
    /// Global index of its first collar (added to `--mac-offset`).
    pub first_index: u64,
    pub connect_rate: f64,
    pub max_in_flight: u64,
    /// Its collars in the RTT loop, with `--rtt` (possibly 0).
    pub active: Option<u64>,
    pub source_ips: Option<SourceIps>,
}

impl Share {
    /// Worker `worker`'s share of `args` over `args.processes` processes.
    pub fn of(args: &Args, worker: u32) -> Share {
        let workers = args.processes;
        let (first, collars) = split(args.collars, workers, worker);
        Share {
            collars,
            first_index: args.mac_offset + first,
            connect_rate: args.connect_rate / f64::from(workers.max(1)),
            // At least one each, or a worker could never connect.
            max_in_flight: split(args.max_in_flight, workers, worker).1.max(1),
            active: args.rtt.then(|| split(args.active, workers, worker).1),
            source_ips: args.source_ips.as_ref().map(|ips| ips.share(worker, workers)),
        }
    }

    /// The flags that turn the parent's command line into this worker's:
    /// appended after the parent's own arguments, they override them (the
    /// command line lets a later flag override an earlier one).
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = vec![
            "--worker".to_owned(),
            "--processes=1".to_owned(),
            format!("--collars={}", self.collars),
            format!("--mac-offset={}", self.first_index),
            format!("--connect-rate={}", self.connect_rate),
            format!("--max-in-flight={}", self.max_in_flight),
        ];
        if let Some(active) = self.active {
            args.push(format!("--active={active}"));
        }
        if let Some(ips) = &self.source_ips {
            args.push(format!("--source-ips={ips}"));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use clap::Parser;

    use super::*;

    fn mac(text: &str) -> Mac {
        text.parse().unwrap()
    }

    #[test]
    fn macs_count_up_from_the_base_across_bytes() {
        let base = mac("02:4C:00:00:00:FE");
        assert_eq!(mac_of(base, 0), Some(base));
        assert_eq!(mac_of(base, 1).unwrap().to_string(), "02:4C:00:00:00:FF");
        assert_eq!(mac_of(base, 2).unwrap().to_string(), "02:4C:00:00:01:00");
        assert_eq!(mac_of(base, 0x1_0000_0000).unwrap().to_string(), "02:4D:00:00:00:FE");
    }

    #[test]
    fn macs_stop_at_the_end_of_the_48_bit_space() {
        let top = mac("FF:FF:FF:FF:FF:FE");
        assert!(mac_of(top, 1).is_some());
        assert_eq!(mac_of(top, 2), None);
        assert_eq!(mac_of(top, u64::MAX), None);
        assert!(macs_fit(top, 0, 2));
        assert!(!macs_fit(top, 0, 3));
        assert!(!macs_fit(top, 1, 2));
        assert!(macs_fit(top, 5, 0));
    }

    #[test]
    fn split_covers_everything_once() {
        for (total, parts) in [(10, 3), (3, 5), (0, 2), (19_000, 2), (7, 1)] {
            let mut next = 0;
            for part in 0..parts {
                let (offset, count) = split(total, parts, part);
                assert_eq!(offset, next, "{total}/{parts} part {part}");
                next += count;
            }
            assert_eq!(next, total);
        }
        assert_eq!(split(10, 3, 0), (0, 4));
        assert_eq!(split(10, 3, 2), (7, 3));
    }

    #[test]
    fn macs_are_unique_across_worker_processes() {
        for (collars, processes, offset) in [(1000, 3, 0), (19_000, 2, 0), (5, 4, 17), (3, 3, 0)] {
            let args = Args::parse_from([
                "tether-load",
                "-n",
                &collars.to_string(),
                "--processes",
                &processes.to_string(),
                "--mac-offset",
                &offset.to_string(),
            ]);
            let mut seen = HashSet::new();
            for worker in 0..processes {
                let share = Share::of(&args, worker);
                for i in 0..share.collars {
                    let mac = mac_of(args.mac_base, share.first_index + i).unwrap();
                    assert!(seen.insert(mac), "{mac} twice ({collars} over {processes})");
                }
            }
            assert_eq!(seen.len() as u64, collars);
            // And they are the MACs a single process would use.
            let single: HashSet<Mac> = (0..collars).map(|i| mac_of(args.mac_base, offset + i).unwrap()).collect();
            assert_eq!(seen, single);
        }
    }

    #[test]
    fn a_worker_command_line_is_the_parents_with_its_share() {
        let parent = [
            "tether-load",
            "-n",
            "19000",
            "--processes",
            "2",
            "--source-ips",
            "127.0.0.2-127.0.0.5",
            "--connect-rate",
            "5000",
            "--rtt",
            "--active",
            "21",
            "--json",
        ];
        let args = Args::parse_from(parent);
        let share = Share::of(&args, 1);
        let mut argv: Vec<String> = parent.iter().map(|s| s.to_string()).collect();
        argv.extend(share.worker_args());
        let worker = Args::parse_from(argv);
        assert!(worker.worker);
        assert_eq!(worker.processes, 1);
        assert_eq!(worker.collars, 9500);
        assert_eq!(worker.mac_offset, 9500);
        assert_eq!(worker.connect_rate, 2500.0);
        assert_eq!(worker.max_in_flight, 512);
        assert_eq!(worker.active, 10);
        assert_eq!(worker.source_ips.as_ref().unwrap().to_string(), "127.0.0.3,127.0.0.5");
        assert!(worker.rtt && worker.json);
        assert_eq!(worker.target, args.target);
        worker.check().unwrap();
    }

    #[test]
    fn a_worker_may_have_no_rtt_collars_or_no_rtt_at_all() {
        let rtt = Args::parse_from(["tether-load", "-n", "10", "--processes", "3", "--rtt", "--active", "2"]);
        assert_eq!(Share::of(&rtt, 2).active, Some(0));
        let plain = Args::parse_from(["tether-load", "-n", "10", "--processes", "3"]);
        assert_eq!(Share::of(&plain, 0).active, None);
        for (parent, worker) in [(&rtt, 2), (&plain, 0)] {
            let mut argv = vec!["tether-load".to_owned(), "-n".into(), "10".into()];
            if parent.rtt {
                argv.push("--rtt".into());
            }
            argv.extend(Share::of(parent, worker).worker_args());
            let args = Args::try_parse_from(argv).unwrap();
            args.check().unwrap();
            assert_eq!(args.rtt, parent.rtt);
        }
    }
}
