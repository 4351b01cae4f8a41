//! A private network namespace for the calling test thread, and packet
//! loss made with nftables inside it: the faults that loopback alone cannot
//! make (a pulled cable, a host that lost power).
//!
//! [`Netns::enter`] calls `unshare(CLONE_NEWNET)`, which moves only the
//! calling thread into a new namespace; every thread it spawns afterwards
//! (the in-process gateway's) and every process it starts (`ip`, `nft`, a
//! collar in a child process) inherits it. Tests running in parallel each
//! get their own namespace, so their rules, ports and sockets never meet.
//! The namespace holds only `lo`, which [`Netns::enter`] brings up, and one
//! nftables table whose prerouting chain drops every TCP segment to or from
//! a port in the set `cut`: [`Netns::cut`] adds a collar's port (its cable
//! is pulled: loss silent to both ends, since both still believe they
//! sent), [`Netns::restore`] removes it. Prerouting is where loopback
//! traffic is received, so a dropped segment was sent (and is retransmitted)
//! but never arrives.
//!
//! It needs root (`CAP_SYS_ADMIN` and `CAP_NET_ADMIN`), `ip` and `nft`:
//! without them [`Netns::enter`] returns `None` through
//! [`super::require`], so the test skips by hand and fails under
//! `scripts/test.sh`.

use std::process::Command;

use super::require::{program, require};

/// The calling thread's own network namespace.
pub struct Netns {
    _private: (),
}

/// The nftables ruleset of a namespace: a set of cut ports, dropped both
/// ways as they arrive.
const RULESET: &str = "table inet faults {
    set cut { type inet_service; }
    chain prerouting {
        type filter hook prerouting priority raw; policy accept;
        tcp sport @cut drop
        tcp dport @cut drop
    }
}
";

impl Netns {
    /// Moves the calling thread into a new network namespace with `lo` up
    /// and the fault table in place; `None` (the test should return) when
    /// that cannot be done here.
    pub fn enter(test: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        let root = if unsafe { libc::geteuid() } == 0 {
            Ok(())
        } else {
            Err("not root: a network namespace needs CAP_SYS_ADMIN".to_string())
        };
        if !require(test, root.and_then(|()| program("nft")).and_then(|()| program("ip"))) {
            return None;
        }
        // SAFETY: unshare only changes the calling thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let why = format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            require(test, Err(why));
            return None;
        }
        run("ip", &["link", "set", "lo", "up"], None);
        run("nft", &["-f", "-"], Some(RULESET));
        Some(Netns { _private: () })
    }

    /// Pulls the cable of the connection using local `port`: from now on
    /// every segment to or from it is dropped on arrival.
    pub fn cut(&self, port: u16) {
        run("nft", &["add", "element", "inet", "faults", "cut", &format!("{{ {port} }}")], None);
    }

    /// Plugs the cable back in: segments of `port` flow again, and those
    /// the ends retransmit arrive.
    pub fn restore(&self, port: u16) {
        run("nft", &["delete", "element", "inet", "faults", "cut", &format!("{{ {port} }}")], None);
    }
}

/// Runs `program` with `args` (and `stdin`), and panics unless it succeeds.
fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(text) = stdin {
        child.stdin.take().expect("piped").write_all(text.as_bytes()).expect("write to nft");
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}
