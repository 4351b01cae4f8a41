//! The checks on made-up readings: a roomy host stops nothing, and each
//! limit, made too small on its own, gives its own finding, fix and bound.

use super::*;

/// A host with room for a million connections.
fn roomy() -> Readings {
    Readings {
        fd_limit: Some((1024, 2_097_152)),
        nr_open: Some(2_097_152),
        file_max: Some(9_223_372_036_854_775_807),
        files_open: Some(1504),
        somaxconn: Some(65535),
        syn_backlog: Some(65535),
        syncookies: Some(1),
        migrate_req: Some(0),
        port_range: Some((32768, 60999)),
        reserved_ports: Some(vec![]),
        conntrack: None,
        mem_available: Some(64 << 30),
        page_size: 4096,
        tcp_mem: Some([2_000_000, 3_000_000, 4_000_000]),
        tcp_rmem: Some([4096, 131_072, 6_291_456]),
        tcp_wmem: Some([4096, 16_384, 4_194_304]),
    }
}

/// One process, the gateway's defaults.
fn want(connections: u64) -> Want {
    Want {
        connections,
        fd_reserve: 32,
        http_connections: 1024,
        backlog: 4096,
        ports: vec![3001, 3000],
        workers: 1,
        worker_connections: connections,
        worker_http: 1024,
        headroom: 10,
    }
}

fn named<'a>(findings: &'a [Finding], name: &str) -> &'a Finding {
    findings.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no finding {name}: {findings:#?}"))
}

#[test]
fn the_defaults_of_the_gateway_are_what_is_asked_of_the_host() {
    let w = Want::new(&Config::default(), None, 20_000).unwrap();
    assert_eq!(w, want(DEFAULT_CONNECTIONS));
    assert_eq!(w.descriptors(), 100_000 + 1024 + 32);
    let config = Config { max_connections: Some(5000), max_http_connections: 16, ..Config::default() };
    assert_eq!(Want::new(&config, None, 20_000).unwrap().connections, 5000);
    assert_eq!(Want::new(&config, Some(7), 20_000).unwrap().descriptors(), 7 + 16 + 32);
}

#[test]
fn a_roomy_host_stops_nothing() {
    let findings = check(&roomy(), &want(1_000_000));
    assert!(!stops(&findings), "{findings:#?}");
    let levels: Vec<(&str, Level)> = findings.iter().map(|f| (f.name, f.level)).collect();
    assert_eq!(
        levels,
        [
            ("RLIMIT_NOFILE", Level::Ok),
            ("fs.nr_open", Level::Ok),
            ("fs.file-max", Level::Ok),
            ("net.core.somaxconn", Level::Ok),
            ("net.ipv4.tcp_max_syn_backlog", Level::Ok),
            // A million from one source address would need 36 of them.
            ("net.ipv4.ip_local_port_range", Level::Note),
            ("net.netfilter.nf_conntrack_max", Level::Ok),
            ("MemAvailable", Level::Ok),
            ("net.ipv4.tcp_mem", Level::Ok),
            ("net.ipv4.tcp_rmem/tcp_wmem", Level::Ok),
        ]
    );
    assert!(findings.iter().all(|f| f.fix.is_none()), "{findings:#?}");
    let limit = named(&findings, "RLIMIT_NOFILE");
    assert_eq!(
        limit.text,
        "soft 1024, hard 2097152 (this shell's; a systemd unit sets its own): 1001056 descriptors needed \
         (1000000 collars + 1024 HTTP + 32 reserved); tether raises its soft limit to the hard one"
    );
    assert_eq!(limit.allows, Some(2_097_152 - 1056));
    assert!(
        named(&findings, "net.ipv4.ip_local_port_range").text.ends_with("needs 36 source address(es) toward one port")
    );
    assert_eq!(capacity(&findings), Some((2_097_152 - 1056, "RLIMIT_NOFILE")));
    // 64 GiB at 4.5 KiB each.
    assert_eq!(named(&findings, "MemAvailable").allows, Some(14_913_080));
}

#[test]
fn a_low_hard_fd_limit_stops_and_bounds_the_connections() {
    let r = Readings { fd_limit: Some((20_000, 20_000)), ..roomy() };
    let findings = check(&r, &want(100_000));
    let f = named(&findings, "RLIMIT_NOFILE");
    assert_eq!(f.level, Level::Stop);
    assert_eq!(f.allows, Some(20_000 - 1056));
    let fix = f.fix.as_deref().unwrap();
    assert!(
        fix.starts_with("raise the hard limit where tether starts: LimitNOFILE=101056 in its systemd unit"),
        "{fix}"
    );
    assert!(stops(&findings));
    assert_eq!(capacity(&findings), Some((18_944, "RLIMIT_NOFILE")));
    // The same host holds what fits.
    assert!(!stops(&check(&r, &want(18_944))));
    assert!(stops(&check(&r, &want(18_945))));
}

#[test]
fn an_unlimited_hard_limit_is_capped_by_nr_open() {
    let r = Readings { fd_limit: Some((u64::MAX, u64::MAX)), nr_open: Some(50_000), ..roomy() };
    let findings = check(&r, &want(100_000));
    assert_eq!(named(&findings, "RLIMIT_NOFILE").level, Level::Stop);
    let f = named(&findings, "fs.nr_open");
    assert_eq!(f.level, Level::Stop);
    assert_eq!(f.text, "50000, the ceiling of any hard fd limit: 101056 needed");
    assert_eq!(
        f.fix.as_deref(),
        Some(
            "sysctl -w fs.nr_open=131072; to keep it across reboots, install contrib/sysctl.d/90-tether.conf in /etc/sysctl.d/"
        )
    );
    assert_eq!(capacity(&findings), Some((50_000 - 1056, "RLIMIT_NOFILE")));
}

#[test]
fn file_handles_in_use_count_against_file_max() {
    let r = Readings { file_max: Some(200_000), files_open: Some(150_000), ..roomy() };
    let findings = check(&r, &want(100_000));
    let f = named(&findings, "fs.file-max");
    assert_eq!(f.level, Level::Stop);
    assert_eq!(f.text, "200000 file handles system-wide, 150000 in use: 101056 more needed");
    assert_eq!(f.allows, Some(50_000 - 1056));
    assert!(f.fix.as_deref().unwrap().starts_with("sysctl -w fs.file-max=524288;"), "{f:?}");
    assert!(!stops(&check(&r, &want(48_944))));
}

#[test]
fn a_short_accept_queue_warns_but_does_not_stop() {
    let r = Readings { somaxconn: Some(128), ..roomy() };
    let findings = check(&r, &want(10_000));
    assert!(!stops(&findings));
    let f = named(&findings, "net.core.somaxconn");
    assert_eq!(f.level, Level::Warn);
    assert!(f.text.starts_with("128, below --backlog 4096: when 10000 collars reconnect at once"), "{}", f.text);
    assert!(f.fix.as_deref().unwrap().starts_with("sysctl -w net.core.somaxconn=4096;"));
    assert_eq!(f.allows, None, "held connections are not bounded by it");
    assert_eq!(named(&findings, "net.ipv4.tcp_max_syn_backlog").level, Level::Ok);
}

#[test]
fn a_short_syn_queue_is_covered_by_syn_cookies() {
    let r = Readings { syn_backlog: Some(2048), ..roomy() };
    let f = named(&check(&r, &want(10_000)), "net.ipv4.tcp_max_syn_backlog").clone();
    assert_eq!(f.level, Level::Note);
    assert_eq!(f.text, "2048, below --backlog 4096: past it the kernel answers with SYN cookies (tcp_syncookies=1)");
    let r = Readings { syncookies: Some(0), ..r };
    let f = named(&check(&r, &want(10_000)), "net.ipv4.tcp_max_syn_backlog").clone();
    assert_eq!(f.level, Level::Warn);
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("sysctl -w net.ipv4.tcp_max_syn_backlog=4096 (or net.ipv4.tcp_syncookies=1);")
    );
}

#[test]
fn a_listening_port_inside_the_ephemeral_range_warns_unless_reserved() {
    let wide = Readings { port_range: Some((1024, 65535)), ..roomy() };
    let f = named(&check(&wide, &want(10_000)), "net.ipv4.ip_local_port_range").clone();
    assert_eq!(f.level, Level::Warn);
    assert!(f.text.contains("it holds tether's port(s) 3001, 3000"), "{}", f.text);
    assert!(f.fix.as_deref().unwrap().starts_with("sysctl -w net.ipv4.ip_local_reserved_ports=3001,3000;"));

    let reserved = Readings { reserved_ports: Some(vec![(3000, 3001)]), ..wide };
    let f = named(&check(&reserved, &want(10_000)), "net.ipv4.ip_local_port_range").clone();
    assert_eq!(f.level, Level::Ok, "{f:?}");
    assert_eq!(
        f.text,
        "1024-65535 (64512 ports): incoming connections take no local port; a load generator on this host \
         needs 1 source address(es) toward one port"
    );
}

#[test]
fn a_full_conntrack_table_stops_new_connections() {
    let r = Readings { conntrack: Some((262_144, 200_000)), ..roomy() };
    let findings = check(&r, &want(100_000));
    let f = named(&findings, "net.netfilter.nf_conntrack_max");
    assert_eq!(f.level, Level::Stop);
    assert_eq!(f.allows, Some(62_144 - 1024));
    assert!(f.text.starts_with("262144 entries, 200000 in use: 101024 needed"), "{}", f.text);
    let fix = f.fix.as_deref().unwrap();
    assert!(fix.starts_with("sysctl -w net.netfilter.nf_conntrack_max=524288;") && fix.contains("notrack"), "{fix}");
    assert_eq!(named(&check(&roomy(), &want(100_000)), "net.netfilter.nf_conntrack_max").level, Level::Ok);
}

#[test]
fn memory_for_idle_connections() {
    let r = Readings { mem_available: Some(1 << 30), ..roomy() };
    // 1 GiB holds 233,016 connections at 4.5 KiB; past half of it, a warning.
    let f = named(&check(&r, &want(100_000)), "MemAvailable").clone();
    assert_eq!((f.level, f.allows), (Level::Ok, Some(233_016)));
    assert_eq!(
        f.text,
        "1.0 GiB available: 100000 idle connections take about 439.5 MiB (4.5 KiB each, kernel and gateway)"
    );
    assert_eq!(named(&check(&r, &want(200_000)), "MemAvailable").level, Level::Warn);
    assert_eq!(named(&check(&r, &want(233_017)), "MemAvailable").level, Level::Stop);
    assert!(stops(&check(&r, &want(233_017))));
}

#[test]
fn tcp_memory_pages_for_a_heartbeat_round() {
    let r = Readings { tcp_mem: Some([50_000, 80_000, 120_000]), ..roomy() };
    let f = named(&check(&r, &want(100_000)), "net.ipv4.tcp_mem").clone();
    assert_eq!(f.level, Level::Warn, "past the pressure mark");
    assert_eq!(f.allows, Some(120_000));
    assert!(f.fix.as_deref().unwrap().starts_with("sysctl -w net.ipv4.tcp_mem=\"50000 100000 150000\";"), "{f:?}");
    let f = named(&check(&r, &want(130_000)), "net.ipv4.tcp_mem").clone();
    assert_eq!(f.level, Level::Stop);
    assert!(f.text.ends_with("past the max the kernel drops what arrives"), "{}", f.text);

    // The buffers' minimums for every socket beyond tcp_mem's max: a warning.
    let f = named(&check(&r, &want(70_000)), "net.ipv4.tcp_rmem/tcp_wmem").clone();
    assert_eq!(f.level, Level::Warn);
    assert_eq!(f.fix.as_deref(), Some("raise net.ipv4.tcp_mem's max to at least 140000 pages"));
    assert_eq!(named(&check(&r, &want(50_000)), "net.ipv4.tcp_rmem/tcp_wmem").level, Level::Ok);
}

#[test]
fn what_cannot_be_read_is_said_and_does_not_stop() {
    let r = Readings { page_size: 4096, ..Readings::default() };
    let findings = check(&r, &want(100));
    assert!(!stops(&findings));
    assert_eq!(capacity(&findings), None);
    let unread: Vec<&str> = findings.iter().filter(|f| f.text == "cannot be read").map(|f| f.name).collect();
    assert_eq!(unread.len(), 9, "{findings:#?}");
    assert_eq!(named(&findings, "net.netfilter.nf_conntrack_max").text, "conntrack not loaded: no table to fill");
}

#[test]
fn the_report_lists_each_limit_its_fix_and_the_verdict() {
    let r = Readings { fd_limit: Some((20_000, 20_000)), somaxconn: Some(128), ..roomy() };
    let w = want(100_000);
    let report = render(&check(&r, &w), &w);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "tether check-host: can this host hold 100000 collar connections? (101056 descriptors with 1024 HTTP \
         (--max-http-connections) and 32 reserved (--fd-reserve); nothing is changed)"
    );
    assert_eq!(lines[1], "");
    assert!(lines[2].starts_with("STOP  RLIMIT_NOFILE                   soft 20000, hard 20000"), "{report}");
    assert!(lines[3].starts_with("                                      fix: raise the hard limit"), "{report}");
    assert!(lines[4].starts_with("ok    fs.nr_open                      2097152,"), "{report}");
    assert!(report.contains("\nWARN  net.core.somaxconn              128, below --backlog 4096"), "{report}");
    assert!(report.ends_with(
        "\nAt most 18944 collar connections fit here; RLIMIT_NOFILE is the first limit.\n\
         1 limit(s) stop 100000 connections (STOP above), 1 warning(s).\n"
    ));
    let report = render(&check(&roomy(), &w), &w);
    assert!(report.ends_with("Nothing here stops 100000 connections; 0 warning(s).\n"), "{report}");
}

#[test]
fn workers_need_their_share_of_descriptors_each_and_the_whole_of_the_rest() {
    use crate::config::Workers;
    let config = Config { workers: Workers::Count(4), ..Config::default() };
    let w = Want::new(&config, Some(100_000), 20_000).unwrap();
    // 25,000 and 256 each, plus the 10% headroom, as the supervisor shares.
    assert_eq!((w.workers, w.worker_connections, w.worker_http), (4, 27_500, 282));
    assert_eq!(w.descriptors(), 27_500 + 282 + 32);

    let r = Readings { fd_limit: Some((20_000, 20_000)), ..roomy() };
    let findings = check(&r, &w);
    let f = named(&findings, "RLIMIT_NOFILE");
    assert_eq!(f.level, Level::Stop);
    assert!(
        f.text.ends_with("27814 descriptors needed in each of 4 workers (27500 collars + 282 HTTP + 32 reserved)"),
        "{}",
        f.text
    );
    // Each worker may take 19,686 collars, its share plus 10%: 17,896 each.
    assert_eq!(f.allows, Some(17_896 * 4));
    // A restarting worker would reset its queued connections.
    let migrate = named(&findings, "net.ipv4.tcp_migrate_req");
    assert_eq!(migrate.level, Level::Warn);
    assert!(migrate.fix.as_deref().unwrap().starts_with("sysctl -w net.ipv4.tcp_migrate_req=1;"));
    assert_eq!(
        named(&check(&Readings { migrate_req: Some(1), ..r.clone() }, &w), "net.ipv4.tcp_migrate_req").level,
        Level::Ok
    );
    assert!(check(&r, &want(100)).iter().all(|f| f.name != "net.ipv4.tcp_migrate_req"), "one process: not asked");

    // System-wide, every worker's descriptors count.
    let tight = Readings { file_max: Some(100_000), files_open: Some(0), ..roomy() };
    let f = named(&check(&tight, &w), "fs.file-max").clone();
    assert_eq!(f.level, Level::Stop);
    assert_eq!(f.text, "100000 file handles system-wide, 0 in use: 111256 more needed");

    let report = render(&findings, &w);
    assert!(report.starts_with("tether check-host: can this host hold 100000 collar connections in 4 workers? (each holds up to 27500 collars and 282 HTTP connections, --worker-headroom 10% included, and keeps 32 descriptors in reserve: 27814 descriptors a process; nothing is changed)\n"), "{report}");
}

#[test]
fn workers_auto_takes_the_fewest_that_fit_or_says_none_does() {
    use crate::config::Workers;
    let config = Config { workers: Workers::Auto, ..Config::default() };
    // The supervisor's own example: 6 workers of 18,334 collars and 189
    // HTTP connections under 20,000 descriptors.
    let w = Want::new(&config, Some(100_000), 20_000).unwrap();
    assert_eq!((w.workers, w.worker_connections, w.worker_http), (6, 18_334, 189));
    assert!(!stops(&check(&Readings { fd_limit: Some((20_000, 20_000)), ..roomy() }, &w)));
    let e = Want::new(&config, Some(100_000), 100).unwrap_err();
    assert!(e.contains("--workers auto"), "{e}");
}
