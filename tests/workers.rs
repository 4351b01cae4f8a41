//! `--workers N`, with the real binary: the supervisor's workers all take
//! connections on the shared ports (which worker holds a connection is read
//! from `/proc`), a worker killed with SIGKILL is started again with
//! back-off while the others keep serving and its collars leave the fleet's
//! directory within `--redis-ttl` (every test runs its workers against a
//! real `redis-server`, which `--workers` above 1 requires), SIGTERM drains every worker
//! (`BYE shutdown`) and the supervisor exits 0, a second signal forces,
//! the workers of a supervisor killed hard drain and exit on their own, a
//! port held by another program fails cleanly, `--workers auto` picks
//! the number of workers and their caps from the fd limit, and (in a
//! network namespace of its own, as root) `net.ipv4.tcp_migrate_req=1`
//! hands a dying worker's queued connections to another.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::{Client, Process, RedisServer, TIMEOUT, mac, socket_inodes, socket_inodes_at, tether_command};

/// The binary as a supervisor, each of its workers' pid, and the log lines
/// up to the moment they all served.
struct Supervised {
    tether: Process,
    pids: Vec<i32>,
    lines: Vec<String>,
    /// The Redis the workers share (`--redis` is required with more than
    /// one worker); killed with the test.
    redis: RedisServer,
}

/// Starts `tether --workers N` with `args`, and waits until every worker
/// serves.
fn start(workers: usize, args: &[&str]) -> Supervised {
    let count = workers.to_string();
    let args: Vec<&str> = ["--workers", count.as_str()].iter().chain(args).copied().collect();
    supervise(&args, None, workers)
}

/// Starts the binary with `args` and RLIMIT_NOFILE `limit`, and waits until
/// `workers` workers serve.
fn supervise(args: &[&str], limit: Option<u64>, workers: usize) -> Supervised {
    let redis = RedisServer::start("workers").expect("redis-server (scripts/test.sh installs it)");
    let url = redis.url();
    let args: Vec<&str> = args.iter().copied().chain(["--redis", url.as_str()]).collect();
    let tether = Process::start(&args, limit);
    let mut lines: Vec<String> = tether.preamble.iter().chain([&tether.banner, &tether.http_banner]).cloned().collect();
    let pids = serving(&tether, &mut lines, &(0..workers).collect::<Vec<_>>());
    Supervised { tether, pids, lines, redis }
}

/// Waits until each worker of `which` has logged its pid and its HTTP
/// banner (the last line before it serves), looking at the lines `seen`
/// first and adding those it reads; returns their pids in the order of
/// `which`.
fn serving(tether: &Process, seen: &mut Vec<String>, which: &[usize]) -> Vec<i32> {
    let mut pids = vec![None; which.len()];
    let mut up = vec![false; which.len()];
    let mut next = 0;
    while pids.iter().any(Option::is_none) || up.contains(&false) {
        if next == seen.len() {
            let line = tether.log.recv_timeout(TIMEOUT);
            seen.push(line.unwrap_or_else(|_| panic!("workers {which:?} do not serve: {pids:?} {up:?}")));
        }
        let line = &seen[next];
        next += 1;
        for (k, index) in which.iter().enumerate() {
            let Some(said) = line.split(&format!("] worker {index}: ")).nth(1) else { continue };
            if let Some(pid) = said.strip_prefix("pid ") {
                let digits: String = pid.chars().take_while(char::is_ascii_digit).collect();
                pids[k] = Some(digits.parse().unwrap());
            }
            up[k] |= said.starts_with("http: listening on ");
        }
    }
    pids.into_iter().map(Option::unwrap).collect()
}

/// Waits for a log line ending with each of `needles`, in any order.
fn expect_lines(tether: &Process, mut needles: Vec<String>) {
    while !needles.is_empty() {
        let line = tether.log.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no log lines ending {needles:#?}"));
        needles.retain(|needle| !line.ends_with(needle.as_str()));
    }
}

/// The inode of the gateway's end of each of `clients`' connections.
fn inodes(clients: &[Client], gateway: SocketAddr) -> Vec<u64> {
    let at = socket_inodes_at(gateway);
    clients.iter().map(|c| at[&c.stream.local_addr().unwrap()]).collect()
}

/// How many of `clients` each process of `pids` holds the gateway's end of.
fn landed(clients: &[Client], gateway: SocketAddr, pids: &[i32]) -> Vec<usize> {
    let inodes = inodes(clients, gateway);
    pids.iter()
        .map(|&pid| {
            let held = socket_inodes(pid);
            inodes.iter().filter(|inode| held.contains(inode)).count()
        })
        .collect()
}

/// `count` collars, identified (so accepted by some worker), MACs from `first`.
fn collars(tether: &Process, first: u32, count: u32) -> Vec<Client> {
    (first..first + count).map(|i| tether.device(&mac(i))).collect()
}

/// Waits until process `pid` (not a child of the test) has exited.
fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH), "pidfd_open({pid})");
        return; // Gone already.
    }
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes the one pollfd we pass; close takes the
    // descriptor pidfd_open gave us.
    let ready = unsafe { libc::poll(&mut poll, 1, TIMEOUT.as_millis() as i32) };
    unsafe { libc::close(fd) };
    assert_eq!(ready, 1, "process {pid} still runs after {TIMEOUT:?}");
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

#[test]
fn two_workers_share_the_ports_and_both_take_collars() {
    let sup = start(2, &["--max-connections", "200"]);
    let tether = &sup.tether;
    assert_ne!(sup.pids[0], sup.pids[1]);
    assert!(!sup.pids.contains(&tether.pid()), "the supervisor serves no connection");
    // The supervisor says how it shared the caps out, and each worker took
    // its share: half of each total plus 10%.
    let plan = sup.lines.iter().find(|l| l.contains("supervisor: 2 workers on ")).expect("the plan line");
    assert!(plan.contains(&format!("2 workers on {} and {}", tether.addr, tether.http)), "{plan}");
    assert!(plan.contains("each holds at most 110 collars and 564 HTTP connections"), "{plan}");
    assert!(plan.contains("564 HTTP connections (36 per address)"), "{plan}");
    assert!(tether.banner.contains("at most 110 connections"), "{}", tether.banner);
    assert!(tether.http_banner.contains("at most 564 connections (36 per address)"), "{}", tether.http_banner);

    // The kernel spreads connections by a hash of their addresses: of 64,
    // each worker gets some (all on one has a chance of 2^-63).
    let mut clients = collars(tether, 0, 64);
    let spread = landed(&clients, tether.addr, &sup.pids);
    assert_eq!(spread.iter().sum::<usize>(), 64, "{spread:?}: every collar on one of the workers");
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    // Each one's worker answers it.
    for client in &mut clients {
        client.send(b"PING\n");
        client.expect(b"PONG\n");
    }
    // The supervisor is no busy loop: it sleeps while nothing happens.
    let cpu = tether.cpu_time();
    assert!(cpu < std::time::Duration::from_millis(200), "{cpu:?}");
}

#[test]
fn a_worker_killed_with_sigkill_is_started_again_and_the_port_keeps_serving() {
    // No heartbeat: on a loaded machine one could come before the kill,
    // and the victim's collars are to get nothing but the end of file. And
    // however slow the machine, the second kill comes before the back-off
    // starts over.
    let args = [
        "--worker-restart-delay",
        "50ms",
        "--heartbeat-interval",
        "0",
        "--worker-stable-after",
        "10m",
        "--redis-ttl",
        "1s",
    ];
    let sup = start(2, &args);
    let tether = &sup.tether;
    let (survivor, victim) = (sup.pids[0], sup.pids[1]);
    let all = collars(tether, 0, 32);
    let held = socket_inodes(victim);
    let mine: Vec<bool> = inodes(&all, tether.addr).iter().map(|inode| held.contains(inode)).collect();
    let (on_victim, others): (Vec<_>, Vec<_>) = all.into_iter().zip(mine).partition(|(_, mine)| *mine);
    let mut on_victim: Vec<Client> = on_victim.into_iter().map(|(c, _)| c).collect();
    let mut others: Vec<Client> = others.into_iter().map(|(c, _)| c).collect();
    assert!(!on_victim.is_empty() && !others.is_empty(), "{} and {}", on_victim.len(), others.len());
    let directory = || sup.redis.int(&["ZCARD", "tether:devices"]) as usize;
    let until = std::time::Instant::now() + TIMEOUT;
    while directory() < 32 {
        assert!(std::time::Instant::now() < until, "the collars never reached the directory");
    }

    let killed = std::time::Instant::now();
    kill(victim, libc::SIGKILL);
    let line = tether.expect_log(&format!("worker 1 (pid {victim}) was killed by SIGKILL (9)"));
    assert!(line.ends_with("; restarting it in 50 ms (restart 1 of this worker, 1 in all)"), "{line}");
    // Its collars lost their connection (no BYE: it died); the kernel
    // closed their sockets.
    for client in &mut on_victim {
        let rest = client.read_to_eof();
        assert!(rest.is_empty(), "{rest:?}");
    }
    // It comes back with a new pid, told it was restarted once.
    let line = tether.expect_log("] worker 1: pid ");
    assert!(line.ends_with(", restart 1 of this worker"), "{line}");
    let reborn = serving(tether, &mut vec![line], &[1])[0];
    assert_ne!(reborn, victim);
    // Its collars leave the fleet's directory once its liveness key has
    // expired (--redis-ttl 1s) and a sweep has run (every second).
    while directory() > others.len() {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(3),
            "{} left after {:?}",
            directory(),
            killed.elapsed()
        );
    }
    assert_eq!(directory(), others.len());
    // Each worker says which it is and how often it was restarted
    // (`/metrics` reaches one worker or the other, by the kernel's hash).
    let mut seen = [None, None];
    for _ in 0..200 {
        let metrics = tether.metrics();
        let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_string);
        let index: usize = value("tether_worker_index ").expect("a worker's metrics").parse().unwrap();
        seen[index] = value("tether_worker_restarts ");
        if seen.iter().all(Option::is_some) {
            break;
        }
    }
    assert_eq!(seen, [Some("0".to_string()), Some("1".to_string())]);

    // The other worker's collars never noticed; and new collars land on
    // both workers again, the new one included.
    for client in &mut others {
        client.send(b"PING\n");
        client.expect(b"PONG\n");
    }
    let fresh = collars(tether, 100, 64);
    let spread = landed(&fresh, tether.addr, &[survivor, reborn]);
    assert_eq!(spread.iter().sum::<usize>(), 64, "{spread:?}");
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");

    // Killed again soon after, it waits twice as long.
    kill(reborn, libc::SIGKILL);
    let line = tether.expect_log(&format!("worker 1 (pid {reborn}) was killed by SIGKILL (9)"));
    assert!(line.ends_with("; restarting it in 100 ms (restart 2 of this worker, 2 in all)"), "{line}");
    let line = tether.expect_log("] worker 1: pid ");
    assert!(line.ends_with(", restart 2 of this worker"), "{line}");
}

#[test]
fn sigterm_drains_every_worker_and_the_supervisor_exits_zero() {
    let mut sup = start(2, &[]);
    let mut clients = collars(&sup.tether, 0, 32);
    let spread = landed(&clients, sup.tether.addr, &sup.pids);
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    sup.tether.signal(libc::SIGTERM);
    for client in &mut clients {
        client.expect(b"BYE shutdown\n");
        client.expect_eof();
    }
    drop(clients);
    assert_eq!(sup.tether.wait().code(), Some(0));
    // Their links to Redis closed last, after the collars' releases were
    // answered: nothing is left in the directory to wait for a sweep.
    assert_eq!(sup.redis.int(&["ZCARD", "tether:devices"]), 0);
    let drained = sup.pids.iter().enumerate();
    expect_lines(
        &sup.tether,
        drained
            .map(|(index, pid)| format!("supervisor: worker {index} (pid {pid}) exited with status 0: drained"))
            .collect(),
    );
    for pid in &sup.pids {
        wait_gone(*pid);
    }
}

#[test]
fn sigint_to_the_supervisor_drains_too() {
    let mut sup = start(2, &[]);
    let mut dev = sup.tether.device(&mac(1));
    sup.tether.signal(libc::SIGINT);
    dev.expect(b"BYE shutdown\n");
    dev.expect_eof();
    drop(dev);
    assert_eq!(sup.tether.wait().code(), Some(0));
    sup.tether.expect_log("every worker has exited (0 restarts in all); exiting with status 0");
}

#[test]
fn a_second_signal_makes_every_worker_exit_at_once() {
    for (signal, status) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut sup = start(2, &["--drain-timeout", "60s", "--linger-timeout", "60s"]);
        // Collars that keep their connections open after BYE hold both
        // workers in their drain for a minute.
        let mut clients = collars(&sup.tether, 0, 32);
        assert!(landed(&clients, sup.tether.addr, &sup.pids).iter().all(|&n| n > 0));
        sup.tether.signal(signal);
        for client in &mut clients {
            client.expect(b"BYE shutdown\n");
        }
        sup.tether.signal(signal);
        assert_eq!(sup.tether.wait().code(), Some(status));
        let name = if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
        let said = |index: usize| {
            format!(
                "tether worker {index}: a second stop signal ({name}) while draining: exiting now with status {status}"
            )
        };
        expect_lines(&sup.tether, vec![said(0), said(1)]);
        for pid in &sup.pids {
            wait_gone(*pid);
        }
    }
}

#[test]
fn workers_of_a_supervisor_killed_hard_drain_and_exit() {
    let sup = start(2, &[]);
    let mut clients = collars(&sup.tether, 0, 32);
    assert!(landed(&clients, sup.tether.addr, &sup.pids).iter().all(|&n| n > 0));
    // SIGKILL leaves no chance to pass anything on: the kernel sends each
    // worker its death signal (SIGTERM), and each drains.
    sup.tether.signal(libc::SIGKILL);
    for client in &mut clients {
        client.expect(b"BYE shutdown\n");
        client.expect_eof();
    }
    drop(clients);
    for pid in &sup.pids {
        wait_gone(*pid);
    }
}

#[test]
fn a_port_held_by_another_program_fails_cleanly() {
    // A listener that does not share its port, as most programs.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().to_string();
    for (args, status) in [
        (vec!["--workers", "2", "--device-listen", &port, "--redis", "redis://127.0.0.1:1"], 1),
        (vec!["--workers", "2", "--http-listen", &port, "--redis", "redis://127.0.0.1:1"], 1),
        // A worker alone tells its supervisor not to try again.
        (vec!["--worker-index", "0", "--device-listen", &port], 78),
    ] {
        let mut command = tether_command();
        for flag in ["--device-listen", "--http-listen"] {
            if !args.contains(&flag) {
                command.args([flag, "127.0.0.1:0"]);
            }
        }
        let output = command.args(&args).env("RUST_LOG", "info").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        let said = format!("cannot start on {port}: Address already in use");
        assert!(stderr.contains(&said), "{args:?}: {stderr}");
        assert!(!stderr.contains("started (pid"), "no worker is started: {stderr}");
    }
    drop(other);
}

#[test]
fn workers_auto_picks_enough_workers_for_max_connections_under_the_fd_limit() {
    // With 1,024 descriptors per process, 32 kept back: 3,000 collars and
    // 100 HTTP connections need 4 workers of 825 + 28 (3 would need
    // 1,100 + 38).
    let args = ["--workers", "auto", "--max-connections", "3000", "--max-http-connections", "100"];
    let mut sup = supervise(&args, Some(1024), 4);
    let plan = sup.lines.iter().find(|l| l.contains("supervisor: 4 workers")).expect("the plan line");
    assert!(
        plan.contains("4 workers (--workers auto: the fewest whose caps fit under the descriptor limit)"),
        "{plan}"
    );
    assert!(plan.contains("each holds at most 825 collars and 28 HTTP connections"), "{plan}");
    assert!(sup.tether.banner.contains("at most 825 connections"), "{}", sup.tether.banner);
    sup.tether.signal(libc::SIGTERM);
    assert_eq!(sup.tether.wait().code(), Some(0));

    // What one process holds runs as one process, unchanged.
    let args = ["--workers", "auto", "--max-connections", "500", "--max-http-connections", "100"];
    let mut one = Process::start(&args, Some(1024));
    assert!(one.banner.contains("at most 500 connections") && !one.banner.contains("worker"), "{}", one.banner);
    assert!(one.preamble.iter().any(|l| l.contains("--workers auto: one process holds")), "{:#?}", one.preamble);
    one.signal(libc::SIGTERM);
    assert_eq!(one.wait().code(), Some(0));

    // More than one worker needs Redis: without it, each would know only
    // its own collars.
    let output = tether_command().args(["--workers", "2"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--workers 2 needs --redis"), "{stderr}");

    // `auto` needs a total to size for.
    let output = tether_command().args(["--workers", "auto"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--workers auto sizes the workers for --max-connections"), "{stderr}");
}

#[test]
fn worker_log_lines_say_which_worker_wrote_them() {
    let sup = start(2, &[]);
    let lines = &sup.lines;
    for index in 0..2 {
        let mine = format!("] worker {index}: ");
        assert!(lines.iter().any(|l| l.contains(&mine) && l.contains("file descriptors: soft limit")), "{lines:#?}");
    }
    for line in lines {
        assert!(line.contains("] worker ") || line.contains("] supervisor: "), "unattributed: {line}");
    }
}

/// This thread's network namespace before [`own_network_namespace`], which
/// it goes back to when dropped (libtest may run the next test on this
/// thread).
struct Namespace(std::fs::File);

impl Drop for Namespace {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: setns takes a descriptor we own and a flag.
        let rc = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

/// Moves this test's thread into a network namespace of its own, with its
/// loopback up, until the returned guard is dropped: the sockets it opens
/// and the processes it starts meanwhile live there, and so do the
/// `/proc/sys/net` settings it writes, so the host's are left alone. Needs
/// root (CAP_SYS_ADMIN) and `ip`.
fn own_network_namespace() -> Result<Namespace, String> {
    common::program("ip")?;
    let original = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    // SAFETY: unshare takes flags only; with CLONE_NEWNET it moves the
    // calling thread alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("cannot make a network namespace: {}", std::io::Error::last_os_error()));
    }
    let back = Namespace(original);
    let status =
        std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("ip link set lo up: {status}"));
    }
    Ok(back)
}

/// Starts two workers, stops the second (SIGSTOP) so that its share of 32
/// new collars waits in its accept queue, then kills it; returns what each
/// collar then reads after its `IDENTIFY`: `Ok` with its first line, or
/// the error (a reset).
fn kill_a_worker_with_a_full_queue(sup: &Supervised, first: u32) -> Vec<std::io::Result<String>> {
    use std::io::{BufRead, BufReader};
    let victim = *sup.pids.last().unwrap();
    kill(victim, libc::SIGSTOP);
    let mut clients: Vec<Client> = (first..first + 32).map(|_| sup.tether.connect()).collect();
    for (i, client) in (first..).zip(&mut clients) {
        client.send(format!("IDENTIFY:{}\n", mac(i)).as_bytes());
    }
    kill(victim, libc::SIGKILL);
    clients
        .into_iter()
        .map(|c| {
            let mut line = String::new();
            BufReader::new(c.stream).read_line(&mut line).map(|_| line)
        })
        .collect()
}

/// `scripts/tune-host.sh` sets `net.ipv4.tcp_migrate_req=1`: with it, the
/// connections waiting in a dying worker's accept queue move to another
/// worker; without it, they are reset.
#[test]
fn with_tcp_migrate_req_a_dead_workers_queued_connections_move_to_another() {
    let test = "with_tcp_migrate_req_a_dead_workers_queued_connections_move_to_another";
    let namespace = own_network_namespace();
    let check = namespace.as_ref().map(|_| ()).map_err(Clone::clone);
    if !common::require(test, check) {
        return;
    }
    let migrate = "/proc/sys/net/ipv4/tcp_migrate_req";
    std::fs::write(migrate, "0").unwrap();
    let sup = start(2, &["--worker-restart-delay", "50ms", "--heartbeat-interval", "0"]);

    // Without it, those queued on the victim are reset (with 32 collars,
    // some are: none has a chance of 2^-32), the others answered.
    let read = kill_a_worker_with_a_full_queue(&sup, 0);
    let reset = read.iter().filter(|r| r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    let answered = read.iter().filter(|r| r.as_ref().is_ok_and(|line| line == "OK\n"));
    let (reset, answered) = (reset.count(), answered.count());
    assert!(reset > 0 && reset + answered == 32, "{read:?}");

    // With it, every one is answered: by the other worker.
    std::fs::write(migrate, "1").unwrap();
    let line = sup.tether.expect_log("] worker 1: pid ");
    let reborn = serving(&sup.tether, &mut vec![line], &[1])[0];
    let sup = Supervised { pids: vec![sup.pids[0], reborn], ..sup };
    let read = kill_a_worker_with_a_full_queue(&sup, 100);
    assert!(read.iter().all(|r| r.as_ref().is_ok_and(|line| line == "OK\n")), "{read:?}");
}
