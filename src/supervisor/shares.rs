//! How many workers, and how many connections each may hold.
//!
//! With workers, `--max-connections`, `--max-http-connections` and
//! `--http-max-per-ip` are totals for the whole gateway, as with one
//! process: each worker's cap is
//! its even share plus `--worker-headroom` percent of it. The kernel hands
//! each new connection to a worker by a hash of the client's address and
//! port, so the workers fill up unevenly; the headroom lets a worker take a
//! little more than its share rather than turn a collar away while the
//! gateway as a whole has room. The gateway may thus hold up to that
//! headroom more than the total (N × cap), never less. Without
//! `--max-connections` there is no total to share: each worker's cap comes
//! from its own descriptors, as for one process.
//!
//! `--workers auto` takes the fewest workers whose caps fit under the
//! per-process descriptor limit (the hard `RLIMIT_NOFILE`, which each
//! worker raises its soft limit to), after `--fd-reserve` and the HTTP
//! share: with 20,000 descriptors, 100,000 collars and the defaults, 6
//! workers of 18,334 collars and 189 HTTP connections each.

use crate::config::{Config, MAX_WORKERS, Workers};

/// How many workers, and what each one may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub workers: usize,
    /// Each worker's `--max-connections` (`None`: from its descriptors).
    pub devices: Option<usize>,
    /// Each worker's `--max-http-connections`.
    pub http: usize,
    /// Each worker's `--http-max-per-ip` (0: no limit).
    pub per_ip: usize,
}

/// One worker's cap when `workers` share `total` connections: the even
/// share, rounded up, plus `headroom` percent of it, also rounded up. A
/// single worker takes the total.
pub fn share(total: usize, workers: usize, headroom: usize) -> usize {
    if workers <= 1 {
        return total;
    }
    let even = total.div_ceil(workers);
    even.saturating_add(even.saturating_mul(headroom).div_ceil(100))
}

impl Shares {
    /// The workers `config` asks for, and their caps. `fd_ceiling` is what
    /// each worker can raise its descriptor limit to (see
    /// [`net::fd_ceiling`](crate::net::fd_ceiling)).
    pub fn of(config: &Config, fd_ceiling: u64) -> Result<Shares, String> {
        let workers = match config.workers {
            Workers::Count(n) => n,
            Workers::Auto => auto(config, fd_ceiling)?,
        };
        let headroom = config.worker_headroom;
        Ok(Shares {
            workers,
            devices: config.max_connections.map(|total| share(total, workers, headroom)),
            http: share(config.max_http_connections, workers, headroom),
            per_ip: share(config.http_max_per_ip, workers, headroom),
        })
    }
}

/// The fewest workers whose collar and HTTP caps, with the reserve, fit
/// under `fd_ceiling` descriptors each.
fn auto(config: &Config, fd_ceiling: u64) -> Result<usize, String> {
    let Some(total) = config.max_connections else {
        return Err("--workers auto sizes the workers for --max-connections: give it too, \
                    or a number of workers"
            .into());
    };
    let fds = usize::try_from(fd_ceiling).unwrap_or(usize::MAX);
    let fits = |n: usize| {
        let (devices, http) =
            (share(total, n, config.worker_headroom), share(config.max_http_connections, n, config.worker_headroom));
        devices.saturating_add(http).saturating_add(config.fd_reserve) <= fds
    };
    (1..=MAX_WORKERS).find(|&n| fits(n)).ok_or_else(|| {
        format!(
            "--workers auto: {MAX_WORKERS} workers cannot hold --max-connections {total} under a limit of {fd_ceiling} \
             descriptors per process"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        Config::try_parse_from(std::iter::once("tether").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn a_share_is_the_even_part_plus_the_headroom_rounded_up() {
        assert_eq!(share(100_000, 6, 10), 16_667 + 1_667);
        assert_eq!(share(1024, 6, 10), 171 + 18);
        assert_eq!(share(100, 2, 10), 55);
        assert_eq!(share(100, 2, 0), 50);
        assert_eq!(share(101, 2, 0), 51, "the even share is rounded up");
        assert_eq!(share(1, 4, 10), 2, "every worker may take one, plus one");
        assert_eq!(share(0, 4, 10), 0);
        assert_eq!(share(100, 1, 10), 100, "one worker takes the total, no more");
        assert!(share(usize::MAX, 2, 50) > usize::MAX / 2, "no overflow");
        assert_eq!(share(usize::MAX, 1, 50), usize::MAX);
    }

    #[test]
    fn auto_takes_the_fewest_workers_that_fit_under_the_fd_limit() {
        // 100,000 collars under 20,000 descriptors (this host): 5 workers
        // would need 22,000 + 226 + 32 each; 6 need 18,334 + 189 + 32.
        let c = config(&["--workers", "auto", "--max-connections", "100000"]);
        assert_eq!(Shares::of(&c, 20_000), Ok(Shares { workers: 6, devices: Some(18_334), http: 189, per_ip: 11 + 2 }));
        // What fits in one process runs as one, with the exact caps.
        let c = config(&["--workers", "auto", "--max-connections", "18000"]);
        assert_eq!(Shares::of(&c, 20_000), Ok(Shares { workers: 1, devices: Some(18_000), http: 1024, per_ip: 64 }));
        // Just over one process: two, with headroom.
        let c = config(&["--workers", "auto", "--max-connections", "18945"]);
        assert_eq!(Shares::of(&c, 20_000).unwrap().workers, 2);
        let c = config(&["--workers", "auto", "--max-connections", "18944"]);
        assert_eq!(Shares::of(&c, 20_000).unwrap().workers, 1, "18,944 + 1,024 + 32 = 20,000");
        // The headroom and the reserve count.
        let c = config(&["--workers", "auto", "--max-connections", "100000", "--worker-headroom", "0"]);
        assert_eq!(Shares::of(&c, 20_000).unwrap().workers, 6, "5 would need 20,000 + 205 + 32");
        let c = config(&[
            "--workers",
            "auto",
            "--max-connections",
            "100000",
            "--worker-headroom",
            "0",
            "--max-http-connections",
            "0",
            "--fd-reserve",
            "0",
        ]);
        assert_eq!(Shares::of(&c, 20_000).unwrap().workers, 5);
    }

    #[test]
    fn auto_needs_a_total_and_a_limit_it_can_reach() {
        let c = config(&["--workers", "auto"]);
        assert!(Shares::of(&c, 20_000).unwrap_err().contains("give it too"));
        let c = config(&["--workers", "auto", "--max-connections", "100000000"]);
        assert!(Shares::of(&c, 20_000).unwrap_err().contains("cannot hold"));
        let c = config(&["--workers", "auto", "--max-connections", "10"]);
        assert!(Shares::of(&c, 33).is_err(), "the reserve leaves no room for a collar and an HTTP client");
    }

    #[test]
    fn a_number_of_workers_shares_the_totals_out() {
        let c = config(&["--workers", "4", "--max-connections", "1000", "--max-http-connections", "100"]);
        assert_eq!(Shares::of(&c, 20_000), Ok(Shares { workers: 4, devices: Some(275), http: 28, per_ip: 18 }));
        let c = config(&["--workers", "4", "--http-max-per-ip", "0"]);
        assert_eq!(Shares::of(&c, 20_000).unwrap().per_ip, 0, "no limit stays no limit");
        let c = config(&["--workers", "4"]);
        assert_eq!(Shares::of(&c, 20_000), Ok(Shares { workers: 4, devices: None, http: 282, per_ip: 18 }));
        let c = config(&[]);
        assert_eq!(Shares::of(&c, 20_000), Ok(Shares { workers: 1, devices: None, http: 1024, per_ip: 64 }));
    }
}
