//! The hub's Redis side: the fleet-wide directory and the bus between
//! gateways, when `--redis` is given.
//!
//! Each gateway process has a unique id and four links to Redis, all
//! dialed by the reactor and spoken through
//! [`RedisSession`](crate::redis::RedisSession):
//! - the **command** link carries pipelined calls of the function library
//!   (`src/redis/tether.lua`): claim a MAC on `IDENTIFY`, release it on
//!   close (compare-and-delete on the epoch), append an event to the
//!   stream (a location also recorded as the collar's last fix, in the same
//!   call), page the directory for `GET /devices`, and `PUBLISH` to other
//!   gateways. Redis answers in order, so each reply pops the oldest
//!   `Pending` entry (`pipeline.rs`), which says what it answers;
//! - the **bus** link is subscribed to this gateway's channel,
//!   `tether:gw:<id>`: another gateway's claim of one of our MACs
//!   (`replaced MAC EPOCH`), a command or a location query for one of our
//!   collars (`cmd`, `loc`), and the answers to ours (`ans`);
//! - the **tail** link follows the fleet's event stream, `tether:events`
//!   (`XREAD BLOCK`), into the local event log. Every gateway appends its
//!   events to that stream (`tether_v1_event`: `XADD`, capped near
//!   `--event-history`) instead
//!   of to its own log, so every log holds the whole fleet's events in one
//!   order, with the stream's ids, and SSE and long polls stay local
//!   cursors. A gateway that starts loads the stream's recent history
//!   first, so `Last-Event-ID` replays across gateways and restarts;
//! - the **control** link refreshes this gateway's liveness key and sweeps
//!   the directory: on a connection of its own, so that no pipeline of
//!   claims holds the refresh back past `--redis-ttl`. A refresh that finds
//!   the key expired (the gateway was too slow, or cut off, and may have
//!   been swept) makes it claim its collars again.
//!
//! When Redis is down or slow the gateway goes on alone: collars identify
//! locally, the API serves local devices and answers 503 for the others,
//! `/health` says `degraded`. A reply overdue by `--redis-timeout` closes
//! the link, failing what waited on it; the links are redialed with
//! back-off, and once all four are up again every local collar is claimed
//! again (the higher epoch wins; a loser closes).
//!
//! The code is cut by what it holds, each part an `impl Hub` (and `impl
//! Cluster`) block of its own over the one [`Cluster`] state kept here:
//! - this file: [`Cluster`], its settings and counters, the links' roles,
//!   the earliest deadline, and the dispatch of what a link reports to the
//!   part that reads it;
//! - `links`: dialing the four links and their set-up, coming up, going
//!   down and redialing with back-off, and the deadline turn;
//! - `pipeline`: the command link's pipeline: writing a call, what each
//!   reply answers, and what a call that gets no reply fails;
//! - `claims`: this gateway's collars in the directory, fenced by epochs;
//! - `stream`: the fleet's event stream: appending to it, and its tail;
//! - `control`: the liveness refresh and the sweep;
//! - `remote`: queries about collars of other gateways, carried to the
//!   gateway that holds them, and their answers;
//! - `bus`: what other gateways publish on this gateway's channel.

mod bus;
mod claims;
mod control;
mod links;
mod pipeline;
mod remote;
mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use log::debug;
use mio::Token;

use self::claims::Claim;
use self::control::ControlRequest;
use self::pipeline::Pending;
use self::remote::Rpc;
pub use self::remote::{Remote, Waiter};
use self::stream::TailRequest;
use super::Hub;
use crate::close::CloseReason;
use crate::device::Mac;
use crate::effect::LinkEvent;
use crate::proto::Proto;
use crate::reactor::Ops;
use crate::redis::{RedisUrl, codec};
use crate::time::{Millis, millis};

/// First wait before redialing; doubled after each failure up to
/// `--redis-reconnect-max`.
const FIRST_BACKOFF: Millis = 100;
/// Key and channel prefix.
const PREFIX: &str = "tether:";

/// The Redis settings of the gateway.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub url: RedisUrl,
    /// This process's id in the directory and its channel name.
    pub gateway_id: String,
    /// Lifetime of the liveness key (refreshed every third of it); also the
    /// period of the sweep.
    pub ttl: Duration,
    /// Longest wait for a Redis reply, or for another gateway's answer.
    pub timeout: Duration,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// How long another gateway's location query may wait on one of our
    /// collars (`--max-wait`, the longest its asker waits).
    pub remote_wait: Duration,
}

/// The four links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Command,
    Bus,
    Tail,
    Control,
}

/// One link's state.
#[derive(Debug, Default)]
struct Link {
    token: Option<Token>,
    /// Its set-up was answered: the command link's functions loaded, the
    /// bus's channel subscribed, the tail's and the control link's
    /// database selected and name set.
    ready: bool,
}

/// Counters of the Redis side, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterStats {
    pub commands: u64,
    pub reconnects: u64,
    pub claims: u64,
    /// Our collars closed because another gateway claimed them later.
    pub lost_to_remote: u64,
    /// Directory entries of dead gateways removed by our sweeps.
    pub swept: u64,
    /// Times this gateway found its own liveness key expired (and claimed
    /// its collars again).
    pub expired: u64,
    pub rpc_sent: u64,
    pub rpc_timeouts: u64,
    pub rpc_served: u64,
}

/// The state of the Redis side. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    settings: ClusterSettings,
    command: Link,
    bus: Link,
    tail: Link,
    /// The control link: the liveness refresh and the sweep, on a
    /// connection of their own so that no pipeline of claims (a reconnect
    /// storm) can hold them back past `--redis-ttl`: Redis serves its
    /// clients in turn, so a short queue is answered however long another
    /// is.
    control: Link,
    /// What the control link's replies answer, with when each was asked.
    control_pending: VecDeque<(Millis, ControlRequest)>,
    /// The liveness key has been refreshed since the links came up: a
    /// refresh that finds it gone means it expired (this gateway was too
    /// slow, or cut off), and its collars may have been swept.
    alive_confirmed: bool,
    /// What the tail link's replies answer, with when each was asked.
    tail_pending: VecDeque<(Millis, TailRequest)>,
    /// The newest stream id the tail has seen, packed (`None`: none yet,
    /// so load the history first).
    tail_from: Option<u64>,
    /// `--event-history`: how much of the stream is kept, and loaded.
    history: usize,
    /// When to dial again (links down).
    retry_at: Option<Millis>,
    backoff: Millis,
    /// Set once a link went down, so that coming back is logged.
    was_down: bool,
    refresh_at: Option<Millis>,
    sweep_at: Option<Millis>,
    /// What the command link's replies answer, oldest first, with when each
    /// was sent.
    pending: VecDeque<(Millis, Pending)>,
    /// When the command link last delivered a reply. Redis is overdue when
    /// it has made no progress for `--redis-timeout`: neither answered the
    /// oldest command within it nor any command since, so a long pipeline
    /// (a reconnect storm's claims) that Redis works through steadily is
    /// not taken for a dead link.
    last_reply: Millis,
    /// This gateway's collars, by MAC.
    claims: HashMap<Mac, Claim>,
    rpcs: HashMap<u64, Rpc>,
    rpc_of: HashMap<Token, u64>,
    rpc_deadlines: BTreeSet<(Millis, u64)>,
    next_rpc: u64,
    /// Location queries of other gateways waiting on our collars, by when
    /// they are given up (`--max-wait`): the asker answers 504 by then, and
    /// the waiter must not keep the collar's query slot for ever.
    remote_waits: BTreeMap<(Millis, u64), (Token, Waiter)>,
    /// When to claim every local collar again, after a claim failed.
    claims_due: Option<Millis>,
    /// A link was found overdue: judged dead if still so then.
    grace_until: Option<Millis>,
    /// The gateway is shutting down: no more dialing; the command link
    /// closes once its pending replies are in.
    draining: bool,
    /// Reused command buffer.
    buf: Vec<u8>,
    pub stats: ClusterStats,
}

impl Cluster {
    pub fn new(settings: ClusterSettings, history: usize) -> Cluster {
        Cluster {
            settings,
            command: Link::default(),
            bus: Link::default(),
            tail: Link::default(),
            control: Link::default(),
            control_pending: VecDeque::new(),
            alive_confirmed: false,
            tail_pending: VecDeque::new(),
            tail_from: None,
            history: history.max(1),
            retry_at: Some(0),
            backoff: FIRST_BACKOFF,
            was_down: false,
            refresh_at: None,
            sweep_at: None,
            pending: VecDeque::new(),
            last_reply: 0,
            claims: HashMap::new(),
            rpcs: HashMap::new(),
            rpc_of: HashMap::new(),
            rpc_deadlines: BTreeSet::new(),
            next_rpc: 1,
            remote_waits: BTreeMap::new(),
            claims_due: None,
            grace_until: None,
            draining: false,
            buf: Vec::new(),
            stats: ClusterStats::default(),
        }
    }

    /// Every link is set up: the directory, the bus and the stream work.
    pub fn up(&self) -> bool {
        self.command.ready && self.bus.ready && self.tail.ready && self.control.ready
    }

    pub fn gateway_id(&self) -> &str {
        &self.settings.gateway_id
    }

    /// Commands sent and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The earliest of this side's deadlines.
    pub fn deadline(&self) -> Option<Millis> {
        // During a grace, the overdue links' time is the grace's end.
        let links = match self.grace_until {
            Some(at) => [Some(at), None, None],
            None => [
                self.overdue_at(),
                self.tail_pending.front().map(|&(sent, request)| self.tail_due(sent, request)),
                self.control_pending.front().map(|&(sent, _)| sent + millis(self.settings.timeout)),
            ],
        };
        let rpc = self.rpc_deadlines.first().map(|&(at, _)| at);
        let waits = self.remote_waits.first_key_value().map(|(&(at, _), _)| at);
        links
            .into_iter()
            .chain([self.retry_at, self.refresh_at, self.sweep_at, rpc, waits, self.claims_due])
            .flatten()
            .min()
    }

    fn role(&self, token: Token) -> Option<Role> {
        if self.command.token == Some(token) {
            Some(Role::Command)
        } else if self.bus.token == Some(token) {
            Some(Role::Bus)
        } else if self.tail.token == Some(token) {
            Some(Role::Tail)
        } else if self.control.token == Some(token) {
            Some(Role::Control)
        } else {
            None
        }
    }

    fn channel(gateway: &str) -> String {
        format!("{PREFIX}gw:{gateway}")
    }

    /// Writes one command on the link `token` and counts it; `false` if
    /// the link is down or its output full (nothing written).
    fn write(&mut self, token: Option<Token>, args: &[&[u8]], ops: &mut Ops<'_, Proto>) -> bool {
        let Some(token) = token else { return false };
        self.buf.clear();
        codec::command(&mut self.buf, args);
        if ops.send(token, &self.buf).is_err() {
            return false;
        }
        self.stats.commands += 1;
        true
    }
}

impl Hub {
    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("called with --redis only")
    }

    /// A link's session reported something.
    pub(super) fn link_event(&mut self, origin: Token, event: LinkEvent, ops: &mut Ops<'_, Proto>) {
        let Some(role) = self.cluster.as_ref().and_then(|c| c.role(origin)) else { return };
        match event {
            LinkEvent::Frame(frame) => match role {
                Role::Command => self.command_reply(frame, ops),
                Role::Bus => self.bus_frame(frame, ops),
                Role::Tail => self.tail_reply(frame, ops),
                Role::Control => self.control_reply(frame, ops),
            },
            LinkEvent::Closed(reason) => {
                debug!("redis: {role:?} link closed: {}", reason.as_str());
                let cluster = self.cluster_mut();
                match role {
                    Role::Command => cluster.command.token = None,
                    Role::Bus => cluster.bus.token = None,
                    Role::Tail => cluster.tail.token = None,
                    Role::Control => cluster.control.token = None,
                }
                if cluster.draining {
                    return;
                }
                self.link_down(ops);
            }
            LinkEvent::Drain => {
                let cluster = self.cluster_mut();
                cluster.draining = true;
                cluster.retry_at = None;
                match role {
                    Role::Tail => cluster.tail_pending.clear(),
                    Role::Control => cluster.control_pending.clear(),
                    _ => {}
                }
                if role != Role::Command || cluster.pending.is_empty() {
                    ops.close(origin, CloseReason::Shutdown);
                }
            }
        }
    }

    /// The Redis figures of the stats line.
    pub(super) fn cluster_report(&self, line: &mut String) {
        if let Some(cluster) = &self.cluster {
            let _ =
                write!(line, " redis={} redis_pending={}", if cluster.up() { "up" } else { "down" }, cluster.pending());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_earliest_of_retry_refresh_sweep_and_overdue_replies() {
        let settings = ClusterSettings {
            url: "redis://127.0.0.1:6379".parse().unwrap(),
            gateway_id: "g".into(),
            ttl: Duration::from_secs(3),
            timeout: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(5),
            remote_wait: Duration::from_secs(60),
        };
        let mut cluster = Cluster::new(settings, 100);
        assert_eq!(cluster.deadline(), Some(0), "dial at once");
        cluster.retry_at = None;
        assert_eq!(cluster.deadline(), None);
        cluster.refresh_at = Some(1000);
        cluster.pending.push_back((100, Pending::Setup));
        assert_eq!(cluster.deadline(), Some(600));
        // Redis answered something at 300: the oldest reply is owed by 800
        // (progress, not the age of a long pipeline's last command).
        cluster.last_reply = 300;
        assert_eq!(cluster.deadline(), Some(800));
        cluster.rpc_deadlines.insert((550, 1));
        assert_eq!(cluster.deadline(), Some(550));
        // A link found overdue gets a grace: until then, its time is the
        // grace's end (no spinning on a deadline in the past).
        cluster.rpc_deadlines.clear();
        cluster.grace_until = Some(820);
        assert_eq!(cluster.deadline(), Some(820));
        cluster.claims_due = Some(700);
        assert_eq!(cluster.deadline(), Some(700));
        assert!(!cluster.up());
    }
}
