//! Event streams and waiting long polls: cursors into the event log.
//!
//! A subscriber is not a queue of copies but a `Feed`: where it is in the
//! log (the next id to send), its `?mac=` filter, and whether it is caught
//! up. Publishing an event appends it to the log once and wakes the feeds
//! that were caught up; a feed that is behind is not touched (it will read
//! the new event when its turn to write comes). So a publish costs O(1)
//! plus one wake per subscriber that had caught up, which it pays once per
//! catch-up and not per event: during a burst, the first event wakes every
//! subscriber and the next thousand wake nobody. The reactor's flush phase then asks for
//! each woken feed's output ([`Feeds::produce`]), which copies its events
//! from the rendered frames into its output, up to the connection's byte
//! budget per turn.
//!
//! A filtered feed must not scan other collars' events: each MAC that some
//! feed filters on has a `Filter` with the ids of that MAC's events still
//! in the log, built once when the first such feed appears and kept up as
//! events are published. Feeds behind the head are ordered by cursor, so
//! the ones whose cursor falls off the end of the log are found at once
//! and cut as slow consumers: a stuck subscriber costs its cursor and what
//! the kernel holds for it, never a private backlog.

use std::collections::{BTreeSet, HashMap, VecDeque};

use mio::Token;

use super::frames::Frames;
use super::views;
use crate::close::CloseReason;
use crate::device::Mac;
use crate::effect::{Answer, Reply};
use crate::events::{Event, EventLog};
use crate::reactor::{OutBuf, Pool, Produce};
use crate::stats::Stats;

/// Most events in one long-poll answer; `next` tells the client where to
/// continue.
pub const POLL_BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /events`: sends events for as long as the connection lasts.
    Stream,
    /// `GET /events/poll`: answers once, with the events after its cursor.
    Poll,
}

/// One subscriber's place in the log.
#[derive(Debug)]
struct Feed {
    kind: Kind,
    filter: Option<Mac>,
    /// The id of the next event it may be sent (ids before it were sent,
    /// or filtered out, or lost).
    next: u64,
    /// The events after this id (the client's last) were lost: a stream
    /// sends `event: reset` first, a poll says `"reset": true`.
    lost_after: Option<u64>,
    /// Caught up and waiting to be woken by the next matching event, at
    /// this index of its waiting list (so that removing it costs O(1)).
    waiting: Option<usize>,
    /// Something was produced for it: a stream that falls off the log from
    /// then on is a slow consumer; one that never had anything (it was
    /// opened during a burst) starts over at the log's start instead.
    started: bool,
}

impl Feed {
    /// The log no longer holds the feed's next event (it starts at
    /// `first`). Whether the feed must be cut: a stream that was sent
    /// events fell behind; one that was sent nothing yet starts over at
    /// `first`, owing its client an `event: reset`.
    fn fell_off(&mut self, first: u64) -> bool {
        if self.started {
            return true;
        }
        self.lost_after.get_or_insert(self.next.saturating_sub(1));
        self.next = first;
        false
    }
}

/// The ids of one MAC's events in the log, and the feeds filtering on it.
#[derive(Debug, Default)]
struct Filter {
    ids: VecDeque<u64>,
    /// Caught-up feeds filtered on this MAC.
    waiting: Vec<Token>,
    /// Feeds filtering on this MAC.
    users: usize,
}

/// Every feed, and the indexes that keep publishing from touching them.
#[derive(Debug, Default)]
pub struct Feeds {
    feeds: HashMap<Token, Feed>,
    /// Caught-up feeds without a filter.
    waiting: Vec<Token>,
    filters: HashMap<Mac, Filter>,
    /// Streams that are behind the head, by cursor: the first ones fall off
    /// the log first.
    behind: BTreeSet<(u64, Token)>,
    frames: Frames,
    /// Open streams (frames are rendered while there is one).
    streams: usize,
}

/// What publishing an event asks of the reactor.
#[derive(Debug, Default)]
pub struct Woken {
    /// Feeds to flush: they have an event to send.
    pub wake: Vec<Token>,
    /// Streams whose cursor fell off the log: close as slow consumers.
    pub cut: Vec<Token>,
}

impl Feeds {
    /// Open event streams.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Waiting long polls.
    pub fn polls(&self) -> usize {
        self.feeds.len() - self.streams
    }

    /// Bytes held by rendered frames.
    pub fn frame_bytes(&self) -> usize {
        self.frames.capacity()
    }

    /// Every feed, split into event streams and waiting long polls (for a
    /// gap in the log, when the hub must start them over).
    pub fn tokens(&self) -> (Vec<Token>, Vec<Token>) {
        let (mut streams, mut polls) = (Vec::new(), Vec::new());
        for (&token, feed) in &self.feeds {
            match feed.kind {
                Kind::Stream => streams.push(token),
                Kind::Poll => polls.push(token),
            }
        }
        (streams, polls)
    }

    /// Starts a stream for `token`, resuming after `last_event_id`.
    pub fn stream(&mut self, token: Token, filter: Option<Mac>, last_event_id: Option<u64>, log: &EventLog) {
        let (next, lost_after) = match last_event_id {
            None => (log.last_id() + 1, None),
            // An id the log never gave out is from before a restart.
            Some(id) if id > log.last_id() => (log.first_id(), Some(id)),
            Some(id) if id + 1 < log.first_id() => (log.first_id(), Some(id)),
            Some(id) => (id + 1, None),
        };
        self.streams += 1;
        self.add(token, Feed { kind: Kind::Stream, filter, next, lost_after, waiting: None, started: false }, log);
        let next = match self.feeds.get_mut(&token) {
            Some(feed) if lost_after.is_none() => {
                feed.next = owed(feed.next, filter, &self.filters, log);
                feed.next
            }
            _ => next,
        };
        self.behind.insert((next, token));
    }

    /// A long poll from `since`: its answer now if it has news (or must
    /// not wait), else it waits as a feed.
    pub fn poll(
        &mut self,
        token: Token,
        since: u64,
        filter: Option<Mac>,
        wait: bool,
        log: &EventLog,
    ) -> Option<Answer> {
        if !wait || self.has_news(since, filter, log) {
            return Some(self.poll_answer(since, filter, log));
        }
        self.add(
            token,
            Feed { kind: Kind::Poll, filter, next: since + 1, lost_after: None, waiting: None, started: false },
            log,
        );
        self.park(token);
        None
    }

    fn add(&mut self, token: Token, feed: Feed, log: &EventLog) {
        if let Some(mac) = feed.filter {
            let filter = self.filters.entry(mac).or_insert_with(|| Filter {
                // Built once per filtered MAC; kept up by `published`.
                ids: log.from(log.first_id()).filter(|e| e.mac == mac).map(|e| e.id).collect(),
                ..Filter::default()
            });
            filter.users += 1;
        }
        self.feeds.insert(token, feed);
    }

    /// Forgets a feed (its connection closes, or its wait ended); a poll
    /// that timed out gets its last answer (an empty list, most likely).
    pub fn remove(&mut self, token: Token, log: &EventLog) -> Option<Answer> {
        let feed = self.feeds.remove(&token)?;
        self.behind.remove(&(feed.next, token));
        if let Some(at) = feed.waiting {
            // Off its waiting list: the next event must not wake a feed
            // that is gone, and a quiet log must not collect the tokens of
            // every subscriber that left.
            let list = match feed.filter {
                Some(mac) => self.filters.get_mut(&mac).map(|f| &mut f.waiting),
                None => Some(&mut self.waiting),
            };
            if let Some(list) = list
                && list.get(at) == Some(&token)
            {
                list.swap_remove(at);
                if let Some(moved) = list.get(at)
                    && let Some(feed) = self.feeds.get_mut(moved)
                {
                    feed.waiting = Some(at);
                }
            }
        }
        if let Some(mac) = feed.filter
            && let Some(filter) = self.filters.get_mut(&mac)
        {
            filter.users -= 1;
            if filter.users == 0 {
                self.filters.remove(&mac);
            }
        }
        match feed.kind {
            Kind::Stream => {
                self.streams -= 1;
                if self.streams == 0 {
                    self.frames.clear();
                }
                None
            }
            Kind::Poll => Some(self.poll_answer(feed.next - 1, feed.filter, log)),
        }
    }

    /// The log has a new event: render it for the streams, index it for its
    /// MAC's filter, and wake the feeds waiting for it. Streams that fell
    /// off the log are reported for cutting.
    pub fn published(&mut self, event: &Event, log: &EventLog, woken: &mut Woken) {
        let first = log.first_id();
        if self.streams > 0 {
            self.frames.push(event);
        }
        self.frames.evict_before(first);
        if let Some(filter) = self.filters.get_mut(&event.mac) {
            while filter.ids.front().is_some_and(|&id| id < first) {
                filter.ids.pop_front();
            }
            filter.ids.push_back(event.id);
            woken.wake.append(&mut filter.waiting);
        }
        woken.wake.append(&mut self.waiting);
        for token in &woken.wake {
            if let Some(feed) = self.feeds.get_mut(token)
                && feed.waiting.is_some()
            {
                feed.waiting = None;
                // Caught up to just before this event: nothing of its
                // filter's came in between.
                feed.next = feed.next.max(event.id);
                if feed.kind == Kind::Stream {
                    self.behind.insert((feed.next, *token));
                }
            }
        }
        while let Some(&(next, token)) = self.behind.first()
            && next < first
        {
            self.behind.pop_first();
            let Some(feed) = self.feeds.get_mut(&token) else { continue };
            if feed.fell_off(first) {
                woken.cut.push(token);
            } else {
                self.behind.insert((feed.next, token));
            }
        }
    }

    /// Marks a feed caught up: the next matching event wakes it.
    fn park(&mut self, token: Token) {
        let Some(feed) = self.feeds.get_mut(&token) else { return };
        if feed.waiting.is_some() {
            return;
        }
        let list = match feed.filter {
            Some(mac) => &mut self.filters.entry(mac).or_default().waiting,
            None => &mut self.waiting,
        };
        feed.waiting = Some(list.len());
        list.push(token);
    }

    /// Appends up to about `budget` bytes of a feed's events to `out`, or
    /// answers a poll that has news.
    pub fn produce(
        &mut self,
        token: Token,
        out: &mut OutBuf,
        pool: &mut Pool,
        budget: usize,
        log: &EventLog,
        stats: &mut Stats,
    ) -> Produce<Reply> {
        let Some(feed) = self.feeds.get(&token) else { return Produce::Idle };
        if feed.kind == Kind::Poll {
            let (since, filter) = (feed.next - 1, feed.filter);
            if !self.has_news(since, filter, log) {
                self.park(token);
                return Produce::Idle;
            }
            let answer = self.poll_answer(since, filter, log);
            self.remove(token, log);
            return Produce::Reply(Reply::Answer(answer));
        }
        let Some(feed) = self.feeds.get_mut(&token) else { return Produce::Idle };
        let before = feed.next;
        if feed.next < log.first_id() && feed.fell_off(log.first_id()) {
            return Produce::Close(CloseReason::SlowConsumer);
        }
        feed.started = true;
        let (filter, frames, filters) = (feed.filter, &self.frames, &self.filters);
        let caught_up = out.append_with(pool, |buf| {
            if let Some(id) = feed.lost_after.take() {
                let named = (id != u64::MAX).then(|| log.external(id));
                views::write_reset(buf, named, log.external(log.last_id()));
            }
            let start = buf.len();
            loop {
                if buf.len() - start >= budget {
                    return false;
                }
                let Some(id) = next_id(feed.next, filter, filters, log) else { return true };
                let left = budget - (buf.len() - start);
                let sent = match frames.run_from(id, left) {
                    // A run of whole frames in one copy (one frame when
                    // filtered: the next match may be anywhere).
                    Some((run, after)) if filter.is_none() => {
                        buf.extend_from_slice(run);
                        after - id
                    }
                    Some((_, _)) => {
                        buf.extend_from_slice(frames.get(id).unwrap_or_default());
                        1
                    }
                    // Older than the frames held (a replay): rendered here.
                    None => match log.get(id) {
                        Some(event) => {
                            event.write_sse(buf);
                            1
                        }
                        None => return true,
                    },
                };
                stats.events_delivered += sent;
                feed.next = match filter {
                    None => id + sent,
                    Some(_) => id + 1,
                };
            }
        });
        feed.next = owed(feed.next, filter, filters, log);
        let next = feed.next;
        self.behind.remove(&(before, token));
        if caught_up {
            self.park(token);
            Produce::Idle
        } else {
            self.behind.insert((next, token));
            Produce::More
        }
    }

    /// Whether a poll from `since` has something to answer now.
    fn has_news(&self, since: u64, filter: Option<Mac>, log: &EventLog) -> bool {
        let found = log.since(since);
        found.lost || next_id(since + 1, filter, &self.filters, log).is_some()
    }

    /// `{"events":[…],"next":N,"reset":bool}` for the events after `since`.
    fn poll_answer(&self, since: u64, filter: Option<Mac>, log: &EventLog) -> Answer {
        let found = log.since(since);
        let lost = found.lost;
        let mut events: Vec<&Event> = Vec::new();
        let mut next = log.last_id();
        for event in found.events.filter(|e| filter.is_none_or(|f| f == e.mac)) {
            if events.len() == POLL_BATCH {
                next = events.last().map_or(next, |e| e.id);
                break;
            }
            events.push(event);
        }
        Answer::json(200, views::poll_body(&events, log.external(next), lost))
    }
}

/// A feed's cursor as kept: for a filtered feed the id of the next event
/// of its MAC (or the next to come), so that it falls off the log only
/// when one of the events it is owed does, not when other collars' events
/// push the log past it.
fn owed(next: u64, filter: Option<Mac>, filters: &HashMap<Mac, Filter>, log: &EventLog) -> u64 {
    if filter.is_none() || next < log.first_id() {
        return next;
    }
    next_id(next, filter, filters, log).unwrap_or(log.last_id() + 1)
}

/// The id of the first event from `from` on that a feed with `filter` may
/// be sent, if the log holds one: found in the filter's index when there
/// is one, else (a poll answered at once) by a scan.
fn next_id(from: u64, filter: Option<Mac>, filters: &HashMap<Mac, Filter>, log: &EventLog) -> Option<u64> {
    let from = from.max(log.first_id());
    match filter.map(|mac| (mac, filters.get(&mac))) {
        None => (from <= log.last_id()).then_some(from),
        Some((_, Some(index))) => {
            let at = index.ids.partition_point(|&id| id < from);
            index.ids.get(at).copied()
        }
        Some((mac, None)) => log.from(from).find(|e| e.mac == mac).map(|e| e.id),
    }
}

#[cfg(test)]
mod tests;
