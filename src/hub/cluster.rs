//! The hub's Redis side: the fleet-wide directory and the bus between
//! gateways, when `--redis` is given.
//!
//! Each gateway process has a unique id and four links to Redis, all
//! dialed by the reactor and spoken through [`RedisSession`]:
//! - the **command** link carries pipelined calls of the function library
//!   (`src/redis/tether.lua`): claim a MAC on `IDENTIFY`, release it on
//!   close (compare-and-delete on the epoch), append an event to the
//!   stream (a location also recorded as the collar's last fix, in the same
//!   call), page the directory for `GET /devices`, and `PUBLISH` to other
//!   gateways. Redis answers in order, so each reply pops the oldest
//!   [`Pending`] entry, which says what it answers;
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
//! Claims are fenced by epochs: a claim takes the next epoch of a
//! fleet-wide counter, so a MAC's epochs only grow; an owner is
//! told of a newer claim and closes its connection (`BYE replaced`) only
//! if its own epoch is older, so a slow old owner never closes the new
//! one, and its release (compare-and-delete) never removes the new entry.
//!
//! When Redis is down or slow the gateway goes on alone: collars identify
//! locally, the API serves local devices and answers 503 for the others,
//! `/health` says `degraded`. A reply overdue by `--redis-timeout` closes
//! the link, failing what waited on it; the links are redialed with
//! back-off, and once both are up again every local collar is claimed
//! again (the higher epoch wins; a loser closes).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use log::{debug, info, warn};
use mio::Token;

use super::Hub;
use super::views::{DeviceView, DevicesPage, FixView};
use crate::close::CloseReason;
use crate::device::Mac;
use crate::effect::{Answer, LinkEvent, Reply};
use crate::events::{EventId, EventKind, LOCAL_ONLY, Rfc3339, pack_stream_id};
use crate::http::json;
use crate::proto::Proto;
use crate::reactor::{Ops, Peer};
use crate::redis::codec::{self, Frame, OwnedFrame};
use crate::redis::{FUNCTIONS, RedisSession, RedisUrl, function};
use crate::time::{Millis, millis};

/// First wait before redialing; doubled after each failure up to
/// `--redis-reconnect-max`.
const FIRST_BACKOFF: Millis = 100;
/// Wait before claiming again after a claim failed.
const CLAIM_RETRY: Millis = 1000;
/// How long a link found overdue gets before it is judged dead: two ticks
/// of the wheel, so at least one more turn reads it.
const GRACE: Millis = 20;
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

/// What the control link's replies answer, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlRequest {
    /// `SELECT`, `CLIENT SETNAME`.
    Setup,
    /// `tether_v1_alive`: 1 if the liveness key was still there.
    Alive,
    /// `tether_v1_sweep`: the MACs taken off the directory.
    Sweep,
}

/// Key of the fleet's event stream.
const EVENTS: &str = "tether:events";
/// Entries taken per read of the stream.
const TAIL_BATCH: usize = 1000;
/// Longest `XREAD BLOCK`: a quiet stream still answers this often, which
/// is how a dead tail link is noticed.
const TAIL_BLOCK: Millis = 2000;

/// What the tail link's replies answer, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailRequest {
    /// `CLIENT SETNAME`, and `SELECT`.
    Setup,
    /// `XREVRANGE`: the recent history, at start.
    History,
    /// `XREAD BLOCK`.
    Read,
    /// `XRANGE <last seen> + COUNT 1`, on a reconnect: whether the last
    /// entry seen is still there (trimming takes the oldest first, so then
    /// nothing after it was lost), or was trimmed with newer entries left
    /// (some of which may never have been seen: a gap).
    Check,
}

/// One link's state.
#[derive(Debug, Default)]
struct Link {
    token: Option<Token>,
    /// Its set-up was answered (functions loaded, channel subscribed).
    ready: bool,
}

/// What a reply on the command link answers, in the order sent.
#[derive(Debug)]
enum Pending {
    /// `SELECT`, `CLIENT SETNAME`: an error closes the link.
    Setup,
    /// `FUNCTION LOAD`: the command link is ready.
    Loaded,
    /// Fire and forget (liveness, release, fix, a bus answer): an error is
    /// logged.
    Quiet(&'static str),
    Claim {
        mac: Mac,
        token: Token,
    },
    Page {
        origin: Token,
        offset: usize,
        limit: usize,
    },
    Get {
        origin: Token,
    },
    /// Where `mac` is, to carry `ask` there, for request `rpc` (registered
    /// already, so that its origin's timeout or departure forgets it).
    Route {
        rpc: u64,
        mac: Mac,
        ask: Ask,
    },
    /// This gateway's entries in the directory, after a reconnect: those
    /// of collars no longer here are released.
    Owned,
    /// A request published to another gateway: with no subscriber, no
    /// gateway holds that channel any more.
    Publish {
        rpc: u64,
    },
    /// An event appended to the stream: if that fails, it is kept locally.
    Event(Box<(Mac, EventKind, u64)>),
}

/// A request carried to the gateway that holds the collar.
#[derive(Debug, Clone)]
enum Ask {
    Command(Vec<u8>),
    Location,
}

/// A collar of this gateway as the directory knows it.
#[derive(Debug)]
struct Claim {
    token: Token,
    /// The epoch Redis gave the claim (`None` while the claim is on the way).
    epoch: Option<u64>,
    /// The highest epoch another gateway announced while ours was unknown:
    /// if ours turns out older, we lost.
    fence: u64,
}

/// A request of ours that another gateway answers.
#[derive(Debug)]
struct Rpc {
    origin: Token,
    /// `None` for a location query, which the HTTP session's own wait
    /// bounds (`Query::Expired`).
    deadline: Option<Millis>,
}

/// Someone waiting for a collar's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiter {
    /// An HTTP request on this gateway.
    Local(Token),
    /// A request on another gateway: answer on its channel.
    Remote { gateway: String, rpc: u64 },
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

    /// When the command link is overdue, if it owes replies.
    fn overdue_at(&self) -> Option<Millis> {
        let &(sent, _) = self.pending.front()?;
        Some(sent.max(self.last_reply) + millis(self.settings.timeout))
    }

    /// When a tail request sent at `sent` is overdue: a blocking read may
    /// take its block time first.
    fn tail_due(&self, sent: Millis, request: TailRequest) -> Millis {
        sent + millis(self.settings.timeout) + if request == TailRequest::Read { TAIL_BLOCK } else { 0 }
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

    fn take_rpc(&mut self, rpc: u64) -> Option<Rpc> {
        let entry = self.rpcs.remove(&rpc)?;
        if self.rpc_of.get(&entry.origin) == Some(&rpc) {
            self.rpc_of.remove(&entry.origin);
        }
        if let Some(at) = entry.deadline {
            self.rpc_deadlines.remove(&(at, rpc));
        }
        Some(entry)
    }

    /// Registers a request of `origin` to be carried to another gateway.
    fn new_rpc(&mut self, origin: Token) -> u64 {
        let rpc = self.next_rpc;
        self.next_rpc += 1;
        self.rpcs.insert(rpc, Rpc { origin, deadline: None });
        self.rpc_of.insert(origin, rpc);
        rpc
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

    /// Forgets the request `origin` is waiting for (it timed out or left);
    /// whether there was one.
    pub fn forget(&mut self, origin: Token) -> bool {
        match self.rpc_of.get(&origin).copied() {
            Some(rpc) => self.take_rpc(rpc).is_some(),
            None => false,
        }
    }
}

impl Hub {
    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("called with --redis only")
    }

    /// Writes one command on the command link; `false` if it could not
    /// (link down, or its output full), and then `pending` was not queued.
    fn redis(&mut self, args: &[&[u8]], pending: Pending, ops: &mut Ops<'_, Proto>) -> bool {
        let cluster = self.cluster_mut();
        let Some(token) = cluster.command.token else { return false };
        if !cluster.write(Some(token), args, ops) {
            warn!("redis: the command link's output is full; a command was dropped");
            return false;
        }
        cluster.pending.push_back((ops.now(), pending));
        true
    }

    /// Calls a function of the library.
    /// Calls function `name` of this version of the library (`function`).
    fn fcall(&mut self, name: &str, args: &[&[u8]], pending: Pending, ops: &mut Ops<'_, Proto>) -> bool {
        let name = function(name);
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 3);
        all.extend_from_slice(&[b"FCALL", name.as_bytes(), b"0"]);
        all.extend_from_slice(args);
        self.redis(&all, pending, ops)
    }

    /// Dials both links and sends their set-up.
    fn dial(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        cluster.retry_at = None;
        let addr = cluster.settings.url.addr;
        let db = cluster.settings.url.db.to_string();
        let name = format!("tether:{}", cluster.settings.gateway_id);
        let channel = Cluster::channel(&cluster.settings.gateway_id);
        for role in [Role::Command, Role::Bus, Role::Tail, Role::Control] {
            match ops.dial(addr, Proto::Redis(Box::new(RedisSession::new()))) {
                Ok(token) => match role {
                    Role::Command => self.cluster_mut().command = Link { token: Some(token), ready: false },
                    Role::Bus => self.cluster_mut().bus = Link { token: Some(token), ready: false },
                    Role::Tail => self.cluster_mut().tail = Link { token: Some(token), ready: false },
                    Role::Control => self.cluster_mut().control = Link { token: Some(token), ready: false },
                },
                Err(e) => {
                    warn!("redis: cannot connect to {addr}: {e}");
                    return self.link_down(ops);
                }
            }
        }
        if db != "0" {
            self.redis(&[b"SELECT", db.as_bytes()], Pending::Setup, ops);
        }
        self.redis(&[b"CLIENT", b"SETNAME", name.as_bytes()], Pending::Setup, ops);
        self.redis(&[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTIONS.as_bytes()], Pending::Loaded, ops);
        // The bus link only subscribes; its confirmation marks it ready.
        let cluster = self.cluster_mut();
        cluster.buf.clear();
        codec::command(&mut cluster.buf, &[b"SUBSCRIBE", channel.as_bytes()]);
        if let Some(token) = cluster.bus.token {
            let _ = ops.send(token, &cluster.buf);
        }
        // The tail link: its set-up, then the history or the rest of the
        // stream.
        let tail_name = format!("{name}:tail");
        if db != "0" {
            self.tail_request(&[b"SELECT", db.as_bytes()], TailRequest::Setup, ops);
        }
        self.tail_request(&[b"CLIENT", b"SETNAME", tail_name.as_bytes()], TailRequest::Setup, ops);
        self.tail_resume(ops);
        let control_name = format!("{name}:control");
        if db != "0" {
            self.control_request(&[b"SELECT", db.as_bytes()], ControlRequest::Setup, ops);
        }
        self.control_request(&[b"CLIENT", b"SETNAME", control_name.as_bytes()], ControlRequest::Setup, ops);
    }

    /// Writes one command on the control link.
    fn control_request(&mut self, args: &[&[u8]], request: ControlRequest, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.write(cluster.control.token, args, ops) {
            cluster.control_pending.push_back((ops.now(), request));
        }
    }

    /// A reply on the control link.
    fn control_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some((_, request)) = cluster.control_pending.pop_front() else { return };
        if let Some(error) = frame.error() {
            warn!("redis: {request:?} failed: {error}");
            if let Some(token) = cluster.control.token.filter(|_| request == ControlRequest::Setup) {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        }
        match request {
            ControlRequest::Setup => {
                if cluster.control_pending.iter().all(|&(_, r)| r != ControlRequest::Setup) && !cluster.control.ready {
                    cluster.control.ready = true;
                    if cluster.up() {
                        self.links_up(ops);
                    }
                }
            }
            ControlRequest::Alive => {
                let expired = frame.int() == Some(0) && cluster.alive_confirmed;
                cluster.alive_confirmed = true;
                if expired {
                    // Other gateways may have swept our collars off the
                    // directory meanwhile: claim them again (each is kept
                    // if still ours, claimed afresh if gone).
                    warn!("redis: this gateway's liveness key had expired: claiming every local collar again");
                    cluster.stats.expired += 1;
                    self.claim_all(ops);
                }
            }
            ControlRequest::Sweep => {
                let swept = frame.items().len();
                if swept > 0 {
                    info!("redis: swept {swept} devices of gateways that stopped refreshing their liveness key");
                    self.cluster_mut().stats.swept += swept as u64;
                }
            }
        }
    }

    /// Claims every local collar again (see `claim`): not takeovers, so
    /// not counted for flapping.
    fn claim_all(&mut self, ops: &mut Ops<'_, Proto>) {
        self.cluster_mut().claims_due = None;
        let local: Vec<(Mac, Token)> = self.registry.iter().map(|(&mac, &token)| (mac, token)).collect();
        for (mac, token) in local {
            self.claim_as(mac, token, false, ops);
        }
    }

    /// Writes one command on the tail link.
    fn tail_request(&mut self, args: &[&[u8]], request: TailRequest, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.write(cluster.tail.token, args, ops) {
            cluster.tail_pending.push_back((ops.now(), request));
        }
    }

    /// After a reconnect: asks whether the stream lost entries we did not
    /// see, then goes on reading.
    fn tail_resume(&mut self, ops: &mut Ops<'_, Proto>) {
        if let Some(seen) = self.cluster_mut().tail_from {
            let seen = EventId { local: 0, ext: seen }.to_string();
            let args: [&[u8]; 6] = [b"XRANGE", EVENTS.as_bytes(), seen.as_bytes(), b"+", b"COUNT", b"1"];
            self.tail_request(&args, TailRequest::Check, ops);
        } else {
            self.tail_next(ops);
        }
    }

    /// Asks for what comes next on the stream: its recent history if the
    /// log has nothing from it yet, else what follows the last id seen.
    fn tail_next(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        match cluster.tail_from {
            None => {
                let count = cluster.history.to_string();
                let args: [&[u8]; 6] = [b"XREVRANGE", EVENTS.as_bytes(), b"+", b"-", b"COUNT", count.as_bytes()];
                self.tail_request(&args, TailRequest::History, ops);
            }
            Some(from) => {
                let from = EventId { local: 0, ext: from }.to_string();
                let (count, block) = (TAIL_BATCH.to_string(), TAIL_BLOCK.to_string());
                let args: [&[u8]; 8] = [
                    b"XREAD",
                    b"COUNT",
                    count.as_bytes(),
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    EVENTS.as_bytes(),
                    from.as_bytes(),
                ];
                self.tail_request(&args, TailRequest::Read, ops);
            }
        }
    }

    /// A reply on the tail link.
    fn tail_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some((_, request)) = cluster.tail_pending.pop_front() else { return };
        if let Some(error) = frame.error() {
            warn!("redis: the event stream's {request:?} failed: {error}");
            if let Some(token) = cluster.tail.token {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        }
        match request {
            TailRequest::Setup => {
                if cluster.tail_pending.iter().all(|&(_, r)| r != TailRequest::Setup) && !cluster.tail.ready {
                    cluster.tail.ready = true;
                    if cluster.up() {
                        self.links_up(ops);
                    }
                }
            }
            TailRequest::History => {
                // Newest first: appended oldest first.
                let entries: Vec<&OwnedFrame> = frame.items().iter().rev().collect();
                for entry in entries {
                    self.stream_entry(entry, ops);
                }
                let cluster = self.cluster_mut();
                // An empty stream: read it from its start (`0-1`, as `0-0`
                // packs to nothing).
                cluster.tail_from.get_or_insert(1);
                self.tail_next(ops);
            }
            TailRequest::Check => {
                let first = frame.items().first().and_then(|e| e.items().first()).and_then(Frame::text);
                if let (Some(first), Some(seen)) = (first.and_then(parse_stream_id), cluster.tail_from)
                    && first > seen
                {
                    self.events_gap(ops);
                }
                self.tail_next(ops);
            }
            TailRequest::Read => {
                // Null: the block timed out with nothing new.
                let mut read = 0;
                for stream in frame.items() {
                    for entry in stream.items().get(1).map(Frame::items).unwrap_or_default() {
                        self.stream_entry(entry, ops);
                        read += 1;
                    }
                }
                // A full batch: this gateway may be falling behind a stream
                // trimmed as it goes; see that the last entry read is still
                // there before reading on.
                if read >= TAIL_BATCH {
                    self.tail_resume(ops);
                } else {
                    self.tail_next(ops);
                }
            }
        }
    }

    /// The stream dropped entries this gateway never saw (trimmed while the
    /// link was down): the log cannot be followed on as if nothing was
    /// missed. It is cleared, event streams are closed (their clients
    /// reconnect with `Last-Event-ID`, which no longer resolves, and get
    /// `event: reset`), and waiting long polls are answered with
    /// `"reset":true`.
    fn events_gap(&mut self, ops: &mut Ops<'_, Proto>) {
        warn!("redis: the event stream was trimmed past the last event seen: event clients start over");
        self.log.clear();
        let (streams, polls) = self.feeds.tokens();
        for token in streams {
            ops.close(token, CloseReason::SlowConsumer);
        }
        for token in polls {
            ops.wake(token);
        }
    }

    /// One stream entry `[id, [field, value, ...]]` into the local log.
    fn stream_entry(&mut self, entry: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let items = entry.items();
        let Some(packed) = items.first().and_then(Frame::text).and_then(parse_stream_id) else { return };
        self.cluster_mut().tail_from = Some(packed);
        let fields = items.get(1).map(Frame::items).unwrap_or_default();
        match decode_event(fields) {
            Some((mac, kind, at)) => self.append(mac, kind, at, packed, ops),
            None => debug!("redis: an event stream entry tether cannot read: {entry:?}"),
        }
    }

    /// Appends an event to the fleet's stream (`tether_v1_event`, which also
    /// keeps a location from the collar's holder as its last fix in the
    /// directory); `false` if it could not be sent (the caller keeps it
    /// locally).
    pub(super) fn append_to_stream(&mut self, mac: Mac, kind: &EventKind, at: u64, ops: &mut Ops<'_, Proto>) -> bool {
        let cluster = self.cluster_mut();
        let history = cluster.history.to_string();
        let epoch = cluster.claims.get(&mac).and_then(|c| c.epoch).map(|e| e.to_string()).unwrap_or_default();
        let (mac_text, at_text) = (mac.to_string(), at.to_string());
        let detail: Vec<(&[u8], String)> = match kind {
            EventKind::Connected { peer } => vec![(b"peer", peer.to_string())],
            EventKind::Disconnected { reason } => vec![(b"reason", reason.as_str().to_string())],
            EventKind::Location { lat, lon } => vec![(b"lat", lat.to_string()), (b"lon", lon.to_string())],
            EventKind::Flapping { takeovers, until_unix_ms } => {
                vec![(b"takeovers", takeovers.to_string()), (b"until", until_unix_ms.to_string())]
            }
        };
        let event_fn = function("event");
        let mut args: Vec<&[u8]> = vec![
            b"FCALL",
            event_fn.as_bytes(),
            b"0",
            history.as_bytes(),
            epoch.as_bytes(),
            b"mac",
            mac_text.as_bytes(),
            b"event",
            kind.name().as_bytes(),
            b"at",
            at_text.as_bytes(),
        ];
        for (name, value) in &detail {
            args.push(name);
            args.push(value.as_bytes());
        }
        self.redis(&args, Pending::Event(Box::new((mac, kind.clone(), at))), ops)
    }

    /// Both links answered their set-up: claim every local collar again,
    /// refresh liveness, sweep.
    fn links_up(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        cluster.backoff = FIRST_BACKOFF;
        if cluster.was_down {
            cluster.stats.reconnects += 1;
        }
        info!(
            "redis: connected to {} as gateway {}{}",
            cluster.settings.url,
            cluster.settings.gateway_id,
            if cluster.was_down { " (again: claiming every local collar)" } else { "" }
        );
        cluster.refresh_at = Some(now);
        cluster.sweep_at = Some(now + millis(cluster.settings.ttl));
        cluster.alive_confirmed = false;
        self.refresh(ops);
        self.claim_all(ops);
        // Entries this gateway made and can no longer release by itself:
        // collars that left while the links were down (their release could
        // not be sent), claims whose reply was lost with the link. Asked
        // after the claims above, which Redis carries out first.
        let id = self.cluster_mut().settings.gateway_id.clone();
        self.fcall("owned", &[id.as_bytes()], Pending::Owned, ops);
    }

    /// Releases the directory's entries of this gateway whose collar is not
    /// here any more (`{mac, epoch, ...}`), by compare-and-delete on the
    /// epoch each has.
    fn reconcile(&mut self, owned: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let id = self.cluster_mut().settings.gateway_id.clone();
        let mut stale = 0;
        for pair in owned.items().chunks_exact(2) {
            let (Some(mac_text), Some(epoch)) = (pair[0].text(), pair[1].text()) else { continue };
            let Ok(mac) = mac_text.parse::<Mac>() else { continue };
            if self.cluster_mut().claims.contains_key(&mac) {
                continue;
            }
            stale += 1;
            let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
            self.fcall("release", &args, Pending::Quiet("release"), ops);
        }
        if stale > 0 {
            info!("redis: released {stale} directory entries of collars that left while the links were down");
        }
    }

    /// Refreshes this gateway's liveness key.
    fn refresh(&mut self, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let id = cluster.settings.gateway_id.clone();
        let ttl = millis(cluster.settings.ttl).to_string();
        cluster.refresh_at = Some(ops.now() + millis(cluster.settings.ttl) / 3);
        let alive = function("alive");
        let args: [&[u8]; 5] = [b"FCALL", alive.as_bytes(), b"0", id.as_bytes(), ttl.as_bytes()];
        self.control_request(&args, ControlRequest::Alive, ops);
    }

    /// A link closed: fail what waited on it, close the other, and dial
    /// again after the back-off.
    fn link_down(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        let was_up = cluster.up();
        for link in [&mut cluster.command, &mut cluster.bus, &mut cluster.tail, &mut cluster.control] {
            if let Some(token) = link.token.take() {
                ops.close(token, CloseReason::Shutdown);
            }
            link.ready = false;
        }
        cluster.tail_pending.clear();
        cluster.control_pending.clear();
        cluster.refresh_at = None;
        cluster.sweep_at = None;
        let failed: Vec<Pending> = cluster.pending.drain(..).map(|(_, p)| p).collect();
        // Requests on other gateways are answered there and cannot come
        // back now: give up on them.
        let rpcs: Vec<u64> = cluster.rpcs.keys().copied().collect();
        let mut lost = Vec::new();
        for rpc in rpcs {
            if let Some(entry) = cluster.take_rpc(rpc) {
                lost.push(entry.origin);
            }
        }
        if !cluster.draining {
            cluster.retry_at = Some(now + cluster.backoff);
            if was_up || !cluster.was_down {
                warn!(
                    "redis: link to {} down; serving local devices only, retrying in {} ms (then backing off up to {:?})",
                    cluster.settings.url, cluster.backoff, cluster.settings.reconnect_max
                );
            }
            cluster.backoff = (cluster.backoff * 2).min(millis(cluster.settings.reconnect_max).max(FIRST_BACKOFF));
        }
        cluster.was_down = true;
        for pending in failed {
            self.failed(pending, ops);
        }
        for origin in lost {
            ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
        }
    }

    /// A command that will get no reply: answer whoever waited on it.
    fn failed(&mut self, pending: Pending, ops: &mut Ops<'_, Proto>) {
        match pending {
            Pending::Page { origin, .. } | Pending::Get { origin, .. } => {
                ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
            }
            Pending::Route { rpc, .. } => {
                if let Some(entry) = self.cluster_mut().take_rpc(rpc) {
                    ops.reply(entry.origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
                }
            }
            Pending::Claim { mac, token } => {
                // Not claimed: try again soon (a claim is idempotent), so
                // that the collar is not left out of the directory.
                let cluster = self.cluster_mut();
                if cluster.claims.get(&mac).is_some_and(|c| c.token == token && c.epoch.is_none()) {
                    cluster.claims_due.get_or_insert(ops.now() + CLAIM_RETRY);
                }
            }
            Pending::Publish { rpc } => {
                if let Some(entry) = self.cluster_mut().take_rpc(rpc) {
                    ops.reply(entry.origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
                }
            }
            Pending::Event(event) => {
                let (mac, kind, at) = *event;
                self.append(mac, kind, at, LOCAL_ONLY, ops);
            }
            _ => {}
        }
    }

    /// The reactor's `App::start`: dial Redis.
    pub(super) fn cluster_start(&mut self, ops: &mut Ops<'_, Proto>) {
        self.dial(ops);
    }

    /// The Redis side's deadline passed: redial, refresh, sweep, or give
    /// up on what is overdue.
    pub(super) fn cluster_deadline(&mut self, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let draining = ops.levels().draining;
        let cluster = self.cluster_mut();
        if cluster.retry_at.is_some_and(|at| at <= now) {
            if draining {
                cluster.retry_at = None;
            } else {
                return self.dial(ops);
            }
        }
        let cluster = self.cluster_mut();
        let overdue = [
            (cluster.overdue_at(), cluster.command.token, "the command link"),
            (
                cluster.tail_pending.front().map(|&(sent, r)| cluster.tail_due(sent, r)),
                cluster.tail.token,
                "the event stream",
            ),
            (
                cluster.control_pending.front().map(|&(sent, _)| sent + millis(cluster.settings.timeout)),
                cluster.control.token,
                "the liveness refresh",
            ),
        ]
        .into_iter()
        .find(|(at, _, _)| at.is_some_and(|at| at <= now));
        match (overdue, cluster.grace_until) {
            (None, _) => cluster.grace_until = None,
            // One more turn first: the run phase reads what arrived (a
            // reply may wait unread behind a turn's budget) before a link
            // is judged dead.
            (Some(_), None) => cluster.grace_until = Some(now + GRACE),
            (Some(_), Some(at)) if at > now => {}
            (Some((_, token, what)), Some(_)) => {
                warn!("redis: no progress on {what} within {:?}: closing the links", cluster.settings.timeout);
                cluster.grace_until = None;
                if let Some(token) = token {
                    ops.close(token, CloseReason::LinkTimeout);
                }
                return self.link_down(ops);
            }
        }
        let waits = &mut self.cluster.as_mut().expect("with --redis").remote_waits;
        while let Some((&(at, serial), _)) = waits.first_key_value() {
            if at > now {
                break;
            }
            let Some((device, waiter)) = waits.remove(&(at, serial)) else { break };
            if let Waiter::Remote { gateway, rpc } = &waiter {
                debug!("redis: location query {rpc} of gateway {gateway} given up");
            }
            // Given up: the asker answered 504 by now. With nobody left
            // waiting, the next query asks the collar again.
            if let Some(waiters) = self.locating.get_mut(&device) {
                waiters.retain(|w| *w != waiter);
                if waiters.is_empty() {
                    self.locating.remove(&device);
                }
            }
        }
        let cluster = self.cluster_mut();
        if cluster.claims_due.is_some_and(|at| at <= now) && cluster.up() {
            self.claim_all(ops);
        }
        let cluster = self.cluster_mut();
        while let Some(&(at, rpc)) = cluster.rpc_deadlines.first() {
            if at > now {
                break;
            }
            if let Some(entry) = cluster.take_rpc(rpc) {
                cluster.stats.rpc_timeouts += 1;
                ops.reply(
                    entry.origin,
                    Reply::Answer(Answer::error(504, "the gateway holding the device did not answer in time")),
                );
            }
        }
        if cluster.refresh_at.is_some_and(|at| at <= now) {
            self.refresh(ops);
        }
        let cluster = self.cluster_mut();
        if cluster.sweep_at.is_some_and(|at| at <= now) {
            cluster.sweep_at = Some(now + millis(cluster.settings.ttl));
            let sweep = function("sweep");
            self.control_request(&[b"FCALL", sweep.as_bytes(), b"0"], ControlRequest::Sweep, ops);
        }
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

    fn command_reply(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        cluster.last_reply = ops.now();
        let Some((_, pending)) = cluster.pending.pop_front() else {
            warn!("redis: a reply to nothing asked; closing the link");
            if let Some(token) = cluster.command.token {
                ops.close(token, CloseReason::ProtocolError);
            }
            return;
        };
        if cluster.draining
            && cluster.pending.is_empty()
            && let Some(token) = cluster.command.token
        {
            ops.close(token, CloseReason::Shutdown);
        }
        if let Some(error) = frame.error() {
            match &pending {
                Pending::Quiet(what) => warn!("redis: {what} failed: {error}"),
                other => warn!("redis: {other:?} failed: {error}"),
            }
            if matches!(pending, Pending::Setup | Pending::Loaded)
                && let Some(token) = self.cluster_mut().command.token
            {
                ops.close(token, CloseReason::ProtocolError);
            }
            return self.failed(pending, ops);
        }
        match pending {
            Pending::Setup | Pending::Quiet(_) | Pending::Event(_) => {}
            Pending::Loaded => {
                let cluster = self.cluster_mut();
                cluster.command.ready = true;
                if cluster.up() {
                    self.links_up(ops);
                }
            }
            Pending::Claim { mac, token } => self.claimed(mac, token, &frame, ops),
            Pending::Page { origin, offset, limit } => {
                let items = frame.items();
                let total = items.first().and_then(Frame::int).unwrap_or(0).max(0) as usize;
                let devices = items.iter().skip(1).filter_map(|e| self.entry_view(e, ops)).collect();
                let page = DevicesPage { total, offset, limit, devices };
                ops.reply(origin, Reply::Answer(Answer::json(200, json::to_vec(&page))));
            }
            Pending::Get { origin } => {
                let answer = match self.entry_view(&frame, ops) {
                    Some(view) => Answer::json(200, json::to_vec(&view)),
                    None => Answer::error(404, "device not online"),
                };
                ops.reply(origin, Reply::Answer(answer));
            }
            Pending::Route { rpc, mac, ask } => self.route(rpc, mac, ask, &frame, ops),
            Pending::Owned => self.reconcile(&frame, ops),
            Pending::Publish { rpc } => {
                if frame.int() == Some(0)
                    && let Some(entry) = self.cluster_mut().take_rpc(rpc)
                {
                    // Nobody listens on that gateway's channel: it is gone,
                    // and its entries will be swept.
                    ops.reply(entry.origin, Reply::Answer(Answer::error(404, "device not online")));
                }
            }
        }
    }

    /// A directory entry `{mac, gw, peer, since, lat, lon, fix_at}` as the
    /// API shows a device; our own collars from the registry (fresher).
    fn entry_view(&self, entry: &OwnedFrame, ops: &Ops<'_, Proto>) -> Option<DeviceView> {
        let f = entry.items();
        let mac: Mac = f.first()?.text()?.parse().ok()?;
        if f.get(1).and_then(Frame::text) == Some(self.cluster.as_ref()?.gateway_id())
            && let Some(token) = self.device(mac, ops)
        {
            return Some(self.view(mac, token, ops));
        }
        let since = f.get(3).and_then(Frame::int).unwrap_or(0).max(0) as u64;
        let fix_at = f.get(6).and_then(Frame::int).map(|at| at.max(0) as u64);
        let location = match (f.get(4).and_then(Frame::text), f.get(5).and_then(Frame::text), fix_at) {
            (Some(lat), Some(lon), Some(at)) => {
                Some(FixView { lat: lat.parse().ok()?, lon: lon.parse().ok()?, at: Rfc3339(at) })
            }
            _ => None,
        };
        Some(DeviceView {
            mac,
            peer: f.get(2).and_then(Frame::text).unwrap_or_default().to_string(),
            connected_at: Rfc3339(since),
            last_seen: Rfc3339(fix_at.unwrap_or(since).max(since)),
            location,
        })
    }

    /// Claims `mac` for the collar on `token` (it identified here).
    /// With the epoch its claim held already (the links came back), claims
    /// it again (`tether_v1_reclaim`): kept if still ours, lost if another
    /// gateway claimed it meanwhile.
    pub(super) fn claim(&mut self, mac: Mac, token: Token, ops: &mut Ops<'_, Proto>) {
        self.claim_as(mac, token, true, ops);
    }

    /// `claim`, counted for flapping in Redis if `takeover` (a new
    /// `IDENTIFY`, not a claim made again).
    fn claim_as(&mut self, mac: Mac, token: Token, takeover: bool, ops: &mut Ops<'_, Proto>) {
        let held = self.cluster_mut().claims.get(&mac).filter(|c| c.token == token).and_then(|c| c.epoch);
        let peer = ops.peer(token).map(ToString::to_string).unwrap_or_default();
        let since = match ops.session(token) {
            Some(Proto::Device(d)) => self.clock.unix_ms(d.collar.connected_at),
            _ => self.clock.unix_ms(ops.now()),
        };
        let cluster = self.cluster_mut();
        cluster.claims.insert(mac, Claim { token, epoch: None, fence: 0 });
        if !cluster.up() {
            return;
        }
        cluster.stats.claims += 1;
        let id = cluster.settings.gateway_id.clone();
        let (mac_text, since) = (mac.to_string(), since.to_string());
        let args: [&[u8]; 4] = [mac_text.as_bytes(), id.as_bytes(), peer.as_bytes(), since.as_bytes()];
        match held {
            Some(epoch) => {
                let epoch = epoch.to_string();
                let args: Vec<&[u8]> = args.iter().copied().chain([epoch.as_bytes()]).collect();
                self.fcall("reclaim", &args, Pending::Claim { mac, token }, ops)
            }
            None => {
                // The fleet-wide flapping guard counts takeovers in Redis
                // with the same settings as this gateway's own.
                let flap = self.flap.settings();
                let limit = if takeover { flap.limit } else { 0 };
                let (limit, window, quarantine) =
                    (limit.to_string(), millis(flap.window).to_string(), millis(flap.quarantine).to_string());
                let args: Vec<&[u8]> =
                    args.iter().copied().chain([limit.as_bytes(), window.as_bytes(), quarantine.as_bytes()]).collect();
                self.fcall("claim", &args, Pending::Claim { mac, token }, ops)
            }
        };
    }

    /// Redis answered our claim of `mac`: `{epoch, previous gateway,
    /// previous epoch}`; epoch 0 from a re-claim: another gateway claimed
    /// it while we were cut off.
    fn claimed(&mut self, mac: Mac, token: Token, reply: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let Some(epoch) = reply.items().first().and_then(Frame::int) else { return };
        if epoch < 0 {
            // The MAC is quarantined fleet-wide for flapping: nothing was
            // claimed, and the collar (admitted here before Redis answered)
            // is closed with the word; this gateway refuses it at once from
            // now on too.
            let left = reply.items().get(1).and_then(Frame::int).unwrap_or(0).max(0) as u64;
            let now = ops.now();
            self.flap.quarantine(mac, now, now + left);
            if self.cluster_mut().claims.get(&mac).is_some_and(|c| c.token == token) {
                self.cluster_mut().claims.remove(&mac);
                ops.stats().flap_refusals += 1;
                debug!("{mac}: quarantined for flapping, fleet-wide: refused");
                ops.close(token, CloseReason::Flapping);
            }
            return;
        }
        let epoch = epoch as u64;
        if let Some(takeovers) = reply.items().get(3).and_then(Frame::int).filter(|&n| n > 0) {
            // This takeover was one too many, fleet-wide: it stands, and the
            // MAC is quarantined.
            let flap = self.flap.settings();
            let now = ops.now();
            let until = now + millis(flap.quarantine);
            self.flap.quarantine(mac, now, until);
            ops.stats().flap_quarantines += 1;
            debug!("{mac}: taken over {takeovers} times across the fleet, quarantined");
            let kind = EventKind::Flapping { takeovers: takeovers as u32, until_unix_ms: self.clock.unix_ms(until) };
            self.publish(mac, kind, ops);
        }
        if epoch == 0 {
            if self.cluster_mut().claims.get(&mac).is_some_and(|c| c.token == token) {
                debug!("{mac}: claimed by another gateway while this one was cut off from Redis");
                self.lost_to_remote(mac, ops);
            }
            return;
        }
        let cluster = self.cluster_mut();
        let Some(claim) = cluster.claims.get_mut(&mac).filter(|c| c.token == token) else {
            // The collar left (or was replaced here) meanwhile: let go of the
            // entry we just made, unless a newer claim took it.
            let (id, mac_text, epoch) = (cluster.settings.gateway_id.clone(), mac.to_string(), epoch.to_string());
            let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
            self.fcall("release", &args, Pending::Quiet("release"), ops);
            return;
        };
        claim.epoch = Some(epoch);
        match reply.items().get(1).and_then(Frame::text) {
            Some(previous) if previous != cluster.settings.gateway_id => {
                debug!("{mac}: claimed with epoch {epoch}, from gateway {previous}")
            }
            _ => debug!("{mac}: claimed with epoch {epoch}"),
        }
        if claim.fence > epoch {
            // Another gateway claimed it after us, before we knew our epoch.
            self.lost_to_remote(mac, ops);
        }
    }

    /// Another gateway claimed `mac` with a newer epoch: our collar was
    /// replaced.
    fn lost_to_remote(&mut self, mac: Mac, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        let Some(claim) = cluster.claims.remove(&mac) else { return };
        cluster.stats.lost_to_remote += 1;
        if self.registry.get(&mac) == Some(&claim.token) {
            self.registry.remove(&mac);
            ops.stats().takeovers += 1;
            debug!("{mac}: taken over by another gateway");
            self.publish(mac, EventKind::Disconnected { reason: CloseReason::Replaced }, ops);
        }
        ops.close(claim.token, CloseReason::Replaced);
    }

    /// Our collar on `token` left: release its entry (compare-and-delete).
    pub(super) fn release(&mut self, mac: Mac, token: Token, ops: &mut Ops<'_, Proto>) {
        let cluster = self.cluster_mut();
        if cluster.claims.get(&mac).is_none_or(|c| c.token != token) {
            return;
        }
        let claim = cluster.claims.remove(&mac).expect("just checked");
        let Some(epoch) = claim.epoch else {
            // Unknown yet: the claim's reply finds the collar gone and
            // releases then.
            return;
        };
        let (id, mac_text, epoch) = (cluster.settings.gateway_id.clone(), mac.to_string(), epoch.to_string());
        let args: [&[u8]; 3] = [mac_text.as_bytes(), id.as_bytes(), epoch.as_bytes()];
        self.fcall("release", &args, Pending::Quiet("release"), ops);
    }

    /// `GET /devices` over the whole fleet; `None` when Redis is down (the
    /// caller serves the local page).
    pub(super) fn fleet_page(
        &mut self,
        origin: Token,
        after: Option<Mac>,
        offset: usize,
        limit: usize,
        ops: &mut Ops<'_, Proto>,
    ) -> Option<()> {
        if !self.cluster.as_ref()?.up() {
            return None;
        }
        let after = after.map(|m| m.to_string()).unwrap_or_default();
        let (offset_text, limit_text) = (offset.to_string(), limit.to_string());
        let args: [&[u8]; 3] = [after.as_bytes(), offset_text.as_bytes(), limit_text.as_bytes()];
        self.fcall("page", &args, Pending::Page { origin, offset, limit }, ops).then_some(())
    }

    /// A query about a collar that is not ours: look it up (a device), or
    /// carry it to the gateway that holds it (a command, a location). The
    /// answer to give at once when that cannot be done.
    pub(super) fn remote(&mut self, origin: Token, mac: Mac, what: Remote, ops: &mut Ops<'_, Proto>) -> Option<Answer> {
        let unavailable =
            || Some(Answer::error(503, "device not on this gateway, and the directory (redis) is unavailable"));
        if !self.cluster.as_ref().is_some_and(Cluster::up) {
            return unavailable();
        }
        let mac_text = mac.to_string();
        let pending = match what {
            Remote::Device => Pending::Get { origin },
            Remote::Command(line) => {
                Pending::Route { rpc: self.cluster_mut().new_rpc(origin), mac, ask: Ask::Command(line) }
            }
            Remote::Location => Pending::Route { rpc: self.cluster_mut().new_rpc(origin), mac, ask: Ask::Location },
        };
        let rpc = match &pending {
            Pending::Route { rpc, .. } => Some(*rpc),
            _ => None,
        };
        if self.fcall("get", &[mac_text.as_bytes()], pending, ops) {
            return None;
        }
        if let Some(rpc) = rpc {
            self.cluster_mut().take_rpc(rpc);
        }
        unavailable()
    }

    /// The directory says where `mac` is: carry the request there.
    fn route(&mut self, rpc: u64, mac: Mac, ask: Ask, entry: &OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let now = ops.now();
        let cluster = self.cluster_mut();
        // Its request timed out or went away during the lookup: nothing to
        // carry, and nobody to answer.
        let Some(origin) = cluster.rpcs.get(&rpc).map(|r| r.origin) else { return };
        let gateway = entry.items().get(1).and_then(Frame::text).map(str::to_string);
        let Some(gateway) = gateway.filter(|g| *g != cluster.settings.gateway_id) else {
            // Not in the directory, or ours by it but not in the registry
            // (it is leaving).
            cluster.take_rpc(rpc);
            return ops.reply(origin, Reply::Answer(Answer::error(404, "device not online")));
        };
        let me = cluster.settings.gateway_id.clone();
        let mut message = match &ask {
            Ask::Command(_) => format!("cmd {me} {rpc} {mac} ").into_bytes(),
            Ask::Location => format!("loc {me} {rpc} {mac}").into_bytes(),
        };
        let deadline = match ask {
            Ask::Command(line) => {
                message.extend_from_slice(&line);
                Some(now + millis(cluster.settings.timeout))
            }
            Ask::Location => None,
        };
        if let Some(at) = deadline {
            cluster.rpcs.insert(rpc, Rpc { origin, deadline });
            cluster.rpc_deadlines.insert((at, rpc));
        }
        cluster.stats.rpc_sent += 1;
        let channel = Cluster::channel(&gateway);
        if !self.redis(&[b"PUBLISH", channel.as_bytes(), &message], Pending::Publish { rpc }, ops) {
            self.cluster_mut().take_rpc(rpc);
            ops.reply(origin, Reply::Answer(Answer::error(503, "the directory (redis) is unavailable")));
        }
    }

    /// Publishes `ans RPC STATUS BODY` to `gateway`.
    fn answer_remote(&mut self, gateway: &str, rpc: u64, answer: &Answer, ops: &mut Ops<'_, Proto>) {
        let mut message = format!("ans {rpc} {} ", answer.status).into_bytes();
        message.extend_from_slice(&answer.body);
        let channel = Cluster::channel(gateway);
        self.redis(&[b"PUBLISH", channel.as_bytes(), &message], Pending::Quiet("answer"), ops);
    }

    /// Answers the location waiters of another gateway.
    pub(super) fn answer_waiter(&mut self, waiter: &Waiter, answer: &Answer, ops: &mut Ops<'_, Proto>) {
        match waiter {
            Waiter::Local(token) => ops.reply(*token, Reply::Answer(answer.clone())),
            Waiter::Remote { gateway, rpc } => self.answer_remote(gateway, *rpc, answer, ops),
        }
    }

    /// A frame on the bus link: a subscription confirmed, or a message.
    fn bus_frame(&mut self, frame: OwnedFrame, ops: &mut Ops<'_, Proto>) {
        let items = frame.items();
        match items.first().and_then(Frame::bytes) {
            Some(b"subscribe") => {
                let cluster = self.cluster_mut();
                cluster.bus.ready = true;
                if cluster.up() {
                    self.links_up(ops);
                }
            }
            Some(b"message") => {
                if let Some(payload) = items.get(2).and_then(Frame::bytes) {
                    let payload = payload.to_vec();
                    self.bus_message(&payload, ops);
                }
            }
            _ => debug!("redis: unexpected on the bus: {frame:?}"),
        }
    }

    /// `replaced MAC EPOCH`, `cmd FROM RPC MAC LINE`, `loc FROM RPC MAC`,
    /// `ans RPC STATUS BODY`. Anything else is logged and dropped.
    fn bus_message(&mut self, payload: &[u8], ops: &mut Ops<'_, Proto>) {
        let mut parts = payload.splitn(5, |&b| b == b' ');
        let verb = parts.next().unwrap_or_default();
        let text = |p: Option<&[u8]>| p.and_then(|p| std::str::from_utf8(p).ok()).map(str::to_string);
        match verb {
            b"replaced" => {
                let (Some(mac), Some(epoch)) = (text(parts.next()), text(parts.next())) else { return };
                let (Ok(mac), Ok(epoch)) = (mac.parse::<Mac>(), epoch.parse::<u64>()) else { return };
                let cluster = self.cluster_mut();
                let Some(claim) = cluster.claims.get_mut(&mac) else { return };
                match claim.epoch {
                    Some(ours) if ours < epoch => self.lost_to_remote(mac, ops),
                    Some(_) => {}
                    None => claim.fence = claim.fence.max(epoch),
                }
            }
            b"cmd" | b"loc" => {
                let (Some(from), Some(rpc), Some(mac)) = (text(parts.next()), text(parts.next()), text(parts.next()))
                else {
                    return;
                };
                let (Ok(rpc), Ok(mac)) = (rpc.parse::<u64>(), mac.parse::<Mac>()) else { return };
                debug!("bus: {} {rpc} from {from} for {mac}", String::from_utf8_lossy(verb));
                self.cluster_mut().stats.rpc_served += 1;
                if verb == b"cmd" {
                    let line = parts.next().unwrap_or_default().to_vec();
                    let answer = self.command(mac, line, ops);
                    self.answer_remote(&from, rpc, &answer, ops);
                } else {
                    let waiter = Waiter::Remote { gateway: from.clone(), rpc };
                    match self.locate(waiter.clone(), mac, ops) {
                        Some(answer) => self.answer_remote(&from, rpc, &answer, ops),
                        None => {
                            let device = self.device(mac, ops).expect("locate found it");
                            let cluster = self.cluster_mut();
                            let at = ops.now() + millis(cluster.settings.remote_wait);
                            let serial = cluster.next_rpc;
                            cluster.next_rpc += 1;
                            cluster.remote_waits.insert((at, serial), (device, waiter));
                        }
                    }
                }
            }
            b"ans" => {
                let (Some(rpc), Some(status)) = (text(parts.next()), text(parts.next())) else { return };
                let (Ok(rpc), Ok(status)) = (rpc.parse::<u64>(), status.parse::<u16>()) else { return };
                let mut body = parts.next().unwrap_or_default().to_vec();
                if let Some(rest) = parts.next() {
                    body.push(b' ');
                    body.extend_from_slice(rest);
                }
                if let Some(entry) = self.cluster_mut().take_rpc(rpc) {
                    ops.reply(entry.origin, Reply::Answer(Answer::json(status, body)));
                }
            }
            _ => debug!("redis: unknown bus message {:?}", payload.escape_ascii().to_string()),
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

/// `MS-SEQ`, packed.
fn parse_stream_id(text: &str) -> Option<u64> {
    let (ms, seq) = text.split_once('-')?;
    pack_stream_id(ms.parse().ok()?, seq.parse().ok()?)
}

/// A stream entry's fields as an event: `mac`, `event`, `at`, and the
/// details of its kind.
fn decode_event(fields: &[OwnedFrame]) -> Option<(Mac, EventKind, u64)> {
    let field =
        |name: &str| fields.chunks_exact(2).find(|pair| pair[0].text() == Some(name)).and_then(|pair| pair[1].text());
    let mac: Mac = field("mac")?.parse().ok()?;
    let at = field("at")?.parse().ok()?;
    let kind = match field("event")? {
        "connected" => EventKind::Connected { peer: Peer::from(field("peer")?.parse::<std::net::SocketAddr>().ok()?) },
        "disconnected" => {
            let reason = field("reason")?;
            EventKind::Disconnected { reason: CloseReason::ALL.into_iter().find(|r| r.as_str() == reason)? }
        }
        "location" => EventKind::Location { lat: field("lat")?.parse().ok()?, lon: field("lon")?.parse().ok()? },
        "flapping" => EventKind::Flapping {
            takeovers: field("takeovers")?.parse().ok()?,
            until_unix_ms: field("until")?.parse().ok()?,
        },
        _ => return None,
    };
    Some((mac, kind, at))
}

/// What [`Hub::remote`] is asked for.
#[derive(Debug)]
pub enum Remote {
    Device,
    Command(Vec<u8>),
    Location,
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
