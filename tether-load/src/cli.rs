//! The command line (clap derive), and the checks clap cannot make alone.
//!
//! Durations are written like the gateway's (`250ms`, `10s`, `5m`; `0`
//! disables where noted) and parsed by the same function. A later flag
//! overrides an earlier one, which is how the parent turns its own command
//! line into each worker's (see [`crate::plan::Share::worker_args`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tether::config::parse_duration;
use tether::device::{DeviceKeys, Mac};

use crate::plan::{DEFAULT_MAC_BASE, macs_fit};
use crate::sources::SourceIps;

/// The end of `--help` (the module docs of `main.rs` say the same).
pub const EXIT_STATUS: &str = "\
Exit status:
  0  the run completed and at least one collar connected (got OK to IDENTIFY)
  1  no collar connected, whatever the other flags (a line on stderr says what
     became of them), or the run could not start or finish (bad flags, a
     worker that failed)
  2  with --fail-on-loss: a collar connected, but at least one failed or was
     closed by the gateway before the end";

/// tether-load: simulates a fleet of collars against a tether gateway and
/// reports connection counts, failures, latencies and throughput.
#[derive(Debug, Clone, Parser)]
#[command(name = "tether-load", version, args_override_self = true, after_help = EXIT_STATUS)]
pub struct Args {
    /// The gateway's device address; the only address the tool connects to.
    #[arg(long, default_value = "127.0.0.1:3001", value_name = "ADDR")]
    pub target: SocketAddr,

    /// Collars to simulate, over all processes.
    #[arg(short = 'n', long, default_value = "100", value_name = "N")]
    pub collars: u64,

    /// New connections per second, over all processes (0: as fast as the
    /// in-flight cap allows).
    #[arg(long, default_value = "0", value_name = "PER_SECOND")]
    pub connect_rate: f64,

    /// Most connections connecting or identifying at once, over all
    /// processes, so a storm does not overflow the gateway's backlog.
    #[arg(long, default_value = "1024", value_name = "N")]
    pub max_in_flight: u64,

    /// Limit on a connect, and again on the OK after IDENTIFY (0: none).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Each online collar sends PING this often, phases spread (0: never).
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Each online collar sends LOCATION this often, phases spread (0: never).
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_duration)]
    pub report_interval: Duration,

    /// Length of the run, connecting included; then every connection is
    /// closed and the report printed.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Duration,

    /// Each collar closes its connection (inside TLS after a close_notify)
    /// as soon as the gateway answers OK to its IDENTIFY, and counts as
    /// `left`: a stream of short connections, to measure connects and TLS
    /// handshakes (the run ends when every collar has left). Give each run
    /// its own --mac-base, so that no MAC reconnects (--flap-limit).
    #[arg(long, conflicts_with = "rtt")]
    pub leave_after_identify: bool,

    /// Closed-loop RTT measurement: once every collar is connected (or has
    /// failed), --active of them send PING as soon as the previous PONG
    /// arrives, until the end of the run.
    #[arg(long)]
    pub rtt: bool,

    /// Collars in the RTT loop, over all processes.
    #[arg(long, default_value = "1", value_name = "K", requires = "rtt")]
    pub active: u64,

    /// MAC of collar 0; collar i is this plus i. Give separate runs against
    /// one gateway bases at least --collars apart.
    #[arg(long, default_value = DEFAULT_MAC_BASE, value_name = "MAC", value_parser = parse_mac)]
    pub mac_base: Mac,

    /// Source addresses to spread connections over (bind before connect):
    /// one address, a range `127.0.0.2-127.0.0.9`, or a comma list of both.
    #[arg(long, value_name = "IPS")]
    pub source_ips: Option<SourceIps>,

    /// Worker processes to run the collars in (each gets its share of the
    /// collars, MACs, source addresses and rates); one process can hold
    /// only as many sockets as its descriptor limit.
    #[arg(long, default_value = "1", value_name = "P")]
    pub processes: u32,

    /// Print the final summary as JSON on stdout (fields in the docs of
    /// `summary.rs`) instead of the text report.
    #[arg(long)]
    pub json: bool,

    /// Also write a self-contained HTML report of the run to FILE: charts
    /// of collars connected, connect rate, RTT percentiles over time, the
    /// latency distributions, heartbeats, failures and closes by reason.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// How often the report samples the run (whole seconds; longer when
    /// --duration would need more than --max-samples).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub sample_interval: Duration,

    /// Most samples the report keeps, which bounds its memory.
    #[arg(long, default_value = "3600", value_name = "N")]
    pub max_samples: u64,

    /// Exit with status 2 if any collar failed or was closed by the gateway
    /// (status 1, with or without this flag, if none connected at all).
    #[arg(long)]
    pub fail_on_loss: bool,

    /// The gateway's key file (`tether --device-key-file`): each collar
    /// answers the CHALLENGE with the proof of its own key.
    #[arg(long, value_name = "FILE", value_parser = DeviceKeys::load)]
    pub device_key_file: Option<DeviceKeys>,

    /// Speak TLS to the target (the gateway's --device-tls-listen port).
    #[arg(long)]
    pub tls: bool,

    /// Trust the gateway certificates this CA issued (PEM); without it,
    /// the system's CA bundle.
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub tls_ca: Option<PathBuf>,

    /// The name the gateway's certificate must carry; by default the
    /// target's IP address.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,

    /// Make every TLS handshake a full one: no session kept from one
    /// connection for the next (by default the tickets the gateway sends
    /// are kept, in memory, and a later collar resumes with one).
    #[arg(long, requires = "tls")]
    pub tls_no_resume: bool,

    /// Mutual TLS: every collar presents this client certificate (PEM)...
    #[arg(long, value_name = "PEM", requires_all = ["tls", "client_key"])]
    pub client_cert: Option<PathBuf>,

    /// ... with this private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Mutual TLS with a certificate per collar, as the gateway's
    /// --device-tls-client-ca expects of a fleet: each collar gets a new
    /// ECDSA P-256 key and a certificate for it whose CN is its MAC, valid
    /// from an hour ago to a day ahead, issued by this CA (PEM) when the
    /// collar starts. That costs the client about 70 us of CPU per collar
    /// (1.3 s for 19,000, measured), and some 540 bytes per connection for
    /// its own copy of the TLS configuration; no session is resumed (a
    /// ticket would carry another collar's certificate).
    #[arg(long, value_name = "PEM", requires_all = ["tls", "client_ca_key"], conflicts_with = "client_cert")]
    pub client_ca_cert: Option<PathBuf>,

    /// ... signed with this CA's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_ca_cert")]
    pub client_ca_key: Option<PathBuf>,

    /// Run as a worker of a parent tether-load: JSON lines on stdout.
    #[arg(long, hide = true)]
    pub worker: bool,

    /// Index of this process's first collar (its MAC offset from --mac-base).
    #[arg(long, hide = true, default_value = "0")]
    pub mac_offset: u64,
}

fn parse_mac(text: &str) -> Result<Mac, String> {
    Mac::parse(text.as_bytes()).map_err(|_| format!("{text:?} is not a MAC like 02:4C:00:00:00:00"))
}

impl Args {
    /// The checks that involve more than one flag, or a range clap's
    /// parsers do not know.
    pub fn check(&self) -> Result<(), String> {
        if self.collars == 0 {
            return Err("--collars must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if !self.connect_rate.is_finite() || self.connect_rate < 0.0 {
            return Err("--connect-rate must be a number of connections per second, 0 or more".into());
        }
        if self.sample_interval.is_zero() {
            return Err("--sample-interval must be more than 0".into());
        }
        if self.max_samples == 0 {
            return Err("--max-samples must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        if self.processes == 0 || u64::from(self.processes) > self.collars {
            return Err(format!("--processes must be between 1 and --collars ({})", self.collars));
        }
        // A worker's share of the RTT collars may be none.
        if self.rtt && ((self.active == 0 && !self.worker) || self.active > self.collars) {
            return Err(format!("--active must be between 1 and --collars ({})", self.collars));
        }
        if !macs_fit(self.mac_base, self.mac_offset, self.collars) {
            return Err(format!("--mac-base {} leaves no room for {} collars", self.mac_base, self.collars));
        }
        if let Some(ips) = &self.source_ips
            && ips.as_slice()[0].is_ipv4() != self.target.is_ipv4()
        {
            return Err("--source-ips must be of the same IP version as --target".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, String> {
        let args = Args::try_parse_from(["tether-load"].iter().chain(extra)).map_err(|e| e.to_string())?;
        args.check()?;
        Ok(args)
    }

    #[test]
    fn defaults() {
        let a = args(&[]).unwrap();
        assert_eq!(a.target, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!((a.collars, a.processes, a.max_in_flight), (100, 1, 1024));
        assert_eq!(a.ping_interval, Duration::ZERO);
        assert_eq!(a.mac_base.to_string(), DEFAULT_MAC_BASE);
        assert!(a.source_ips.is_none() && !a.rtt && !a.json && !a.worker);
        assert_eq!((a.html, a.sample_interval, a.max_samples), (None, Duration::from_secs(1), 3600));
    }

    #[test]
    fn durations_and_lists_parse() {
        let a = args(&[
            "-n",
            "19000",
            "--duration",
            "5m",
            "--ping-interval",
            "250ms",
            "--source-ips",
            "127.0.0.2-127.0.0.3",
        ])
        .unwrap();
        assert_eq!(a.duration, Duration::from_secs(300));
        assert_eq!(a.ping_interval, Duration::from_millis(250));
        assert_eq!(a.source_ips.unwrap().as_slice().len(), 2);
    }

    #[test]
    fn inconsistent_flags_are_refused() {
        for (flags, why) in [
            (&["-n", "0"][..], "--collars"),
            (&["--duration", "0"], "--duration"),
            (&["--duration", "10"], "not a duration"),
            (&["--connect-rate=-1"], "--connect-rate"),
            (&["--connect-rate", "NaN"], "--connect-rate"),
            (&["--max-in-flight", "0"], "--max-in-flight"),
            (&["--sample-interval", "0"], "--sample-interval"),
            (&["--max-samples", "0"], "--max-samples"),
            (&["-n", "2", "--processes", "3"], "--processes"),
            (&["--processes", "0"], "--processes"),
            (&["--active", "2"], "--rtt"),
            (&["-n", "5", "--rtt", "--active", "6"], "--active"),
            (&["--rtt", "--active", "0"], "--active"),
            (&["--mac-base", "FF:FF:FF:FF:FF:F0", "-n", "17"], "no room"),
            (&["--mac-base", "nope"], "not a MAC"),
            (&["--source-ips", "::1"], "same IP version"),
            (&["--source-ips", "127.0.0.9-127.0.0.2"], "reversed"),
            (&["--tls-no-resume"], "--tls"),
            (&["--leave-after-identify", "--rtt"], "cannot be used with"),
            (&["--tls", "--client-ca-cert", "ca.pem"], "--client-ca-key"),
            (&["--client-ca-cert", "ca.pem", "--client-ca-key", "ca.key"], "--tls"),
            (
                &[
                    "--tls",
                    "--client-cert",
                    "c.pem",
                    "--client-key",
                    "c.key",
                    "--client-ca-cert",
                    "ca.pem",
                    "--client-ca-key",
                    "k",
                ],
                "cannot be used with",
            ),
        ] {
            let err = args(flags).unwrap_err();
            assert!(err.contains(why), "{flags:?}: {err}");
        }
        assert!(args(&["--mac-base", "FF:FF:FF:FF:FF:F0", "-n", "16"]).is_ok());
    }

    #[test]
    fn help_ends_with_the_exit_statuses() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(help.trim_end().ends_with(EXIT_STATUS), "{help}");
        assert!(help.contains("1  no collar connected, whatever the other flags"), "{help}");
    }

    #[test]
    fn a_later_flag_overrides_an_earlier_one() {
        let a = args(&["-n", "10", "--collars", "20", "--json", "--json"]).unwrap();
        assert_eq!(a.collars, 20);
    }
}
