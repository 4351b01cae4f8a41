//! Feeds driven by hand, without a reactor: events are appended to an
//! [`EventLog`] and announced with [`Feeds::published`], and each
//! feed's output is asked for with [`Feeds::produce`] into its own
//! [`OutBuf`], as the reactor's flush phase would for a woken feed.

use super::*;
use crate::events::EventKind;

const A: Mac = Mac([2, 0, 0, 0, 0, 0x0A]);
const B: Mac = Mac([2, 0, 0, 0, 0, 0x0B]);
const ENOUGH: usize = usize::MAX;

fn t(n: usize) -> Token {
    Token(n)
}

struct Bench {
    feeds: Feeds,
    log: EventLog,
    pool: Pool,
    stats: Stats,
    outs: HashMap<Token, OutBuf>,
}

impl Bench {
    fn new(capacity: usize) -> Bench {
        Bench {
            feeds: Feeds::default(),
            log: EventLog::new(capacity),
            pool: Pool::default(),
            stats: Stats::default(),
            outs: HashMap::new(),
        }
    }

    /// Appends an event for `mac` (each one different: its latitude is
    /// its id) and announces it.
    fn publish(&mut self, mac: Mac) -> Woken {
        let lat = (self.log.last_id() + 1) as f64;
        self.log.publish(mac, EventKind::Location { lat, lon: 0.5 }, 1000);
        let event = self.log.latest().unwrap().clone();
        self.announce(&event)
    }

    fn announce(&mut self, event: &Event) -> Woken {
        let mut woken = Woken::default();
        self.feeds.published(event, &self.log, &mut woken);
        woken
    }

    fn stream(&mut self, token: Token, filter: Option<Mac>, last_event_id: Option<u64>) {
        self.feeds.stream(token, filter, last_event_id, &self.log);
    }

    fn poll(&mut self, token: Token, since: u64, filter: Option<Mac>, wait: bool) -> Option<String> {
        let answer = self.feeds.poll(token, since, filter, wait, &self.log)?;
        assert_eq!((answer.status, answer.content_type), (200, Answer::JSON));
        Some(String::from_utf8(answer.body).unwrap())
    }

    fn produce(&mut self, token: Token, budget: usize) -> Produce<Reply> {
        let out = self.outs.entry(token).or_default();
        self.feeds.produce(token, out, &mut self.pool, budget, &self.log, &mut self.stats)
    }

    /// The feed's output so far, taken.
    fn taken(&mut self, token: Token) -> String {
        let out = self.outs.entry(token).or_default();
        let text = String::from_utf8(out.pending().to_vec()).unwrap();
        out.clear(&mut self.pool);
        text
    }

    /// Produces until the feed is caught up; its output.
    fn catch_up(&mut self, token: Token) -> String {
        assert!(matches!(self.produce(token, ENOUGH), Produce::Idle));
        self.taken(token)
    }

    /// The SSE frames of the logged events `ids`, as the log renders them.
    fn frames(&self, ids: impl IntoIterator<Item = u64>) -> String {
        let mut out = Vec::new();
        for id in ids {
            self.log.get(id).expect("held").write_sse(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// A poll answer's body for the logged events `ids`.
    fn poll_body(&self, ids: impl IntoIterator<Item = u64>, next: u64, reset: bool) -> String {
        let events: Vec<String> =
            ids.into_iter().map(|id| serde_json::to_string(self.log.get(id).unwrap()).unwrap()).collect();
        format!(r#"{{"events":[{}],"next":{next},"reset":{reset}}}"#, events.join(","))
    }
}

/// The `id:` lines of a stream's output, in order.
fn ids(text: &str) -> Vec<u64> {
    text.lines().filter_map(|line| line.strip_prefix("id: ")).map(|id| id.parse().unwrap()).collect()
}

fn sorted(mut tokens: Vec<Token>) -> Vec<Token> {
    tokens.sort();
    tokens
}

fn reply_body(produced: Produce<Reply>) -> String {
    match produced {
        Produce::Reply(Reply::Answer(answer)) => String::from_utf8(answer.body).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn publishing_wakes_exactly_the_caught_up_feeds_once_until_they_catch_up_again() {
    let mut b = Bench::new(100);
    b.stream(t(1), None, None);
    b.stream(t(2), None, None);
    // The hub wakes a new stream at once; with nothing to send it parks.
    assert_eq!(b.catch_up(t(1)), "");
    assert_eq!(b.catch_up(t(2)), "");
    assert_eq!(b.poll(t(3), 0, None, true), None, "nothing yet: the poll waits");
    assert_eq!((b.feeds.streams(), b.feeds.polls()), (2, 1));

    let woken = b.publish(A);
    assert_eq!(sorted(woken.wake), vec![t(1), t(2), t(3)]);
    assert!(woken.cut.is_empty());
    let woken = b.publish(A);
    assert!(woken.wake.is_empty(), "nobody caught up since the last event: O(1), nobody to wake");

    assert_eq!(ids(&b.catch_up(t(1))), vec![1, 2]);
    let woken = b.publish(B);
    assert_eq!(woken.wake, vec![t(1)], "only the feed that caught up in between");
    assert_eq!(reply_body(b.produce(t(3), ENOUGH)), b.poll_body([1, 2, 3], 3, false));
    assert_eq!(b.feeds.polls(), 0, "an answered poll is forgotten");

    assert_eq!(ids(&b.catch_up(t(1))), vec![3]);
    assert_eq!(ids(&b.catch_up(t(2))), vec![1, 2, 3]);
    b.feeds.remove(t(1), &b.log);
    let woken = b.publish(A);
    assert_eq!(woken.wake, vec![t(2)], "a removed feed is not woken");
    assert_eq!(ids(&b.catch_up(t(2))), vec![4]);
}

#[test]
fn feeds_that_leave_while_caught_up_leave_nothing_behind() {
    // Long polls that time out and streams that close while caught up,
    // with no event in between (a quiet gateway): nothing of them may
    // stay on the waiting lists, to be woken by the next event.
    let mut b = Bench::new(100);
    b.publish(A);
    for round in 0..100 {
        let (poll, filtered, stream) = (t(3 * round), t(3 * round + 1), t(3 * round + 2));
        assert_eq!(b.poll(poll, 1, None, true), None);
        assert_eq!(b.poll(filtered, 1, Some(B), true), None);
        b.stream(stream, None, None);
        assert_eq!(b.catch_up(stream), "");
        assert!(b.feeds.remove(poll, &b.log).is_some());
        assert!(b.feeds.remove(filtered, &b.log).is_some());
        assert_eq!(b.feeds.remove(stream, &b.log), None);
    }
    // One parked feed of each kind that stays, parked in the middle.
    assert_eq!(b.poll(t(1000), 1, Some(B), true), None);
    b.stream(t(1001), None, None);
    assert_eq!(b.catch_up(t(1001)), "");
    assert_eq!(b.poll(t(1002), 1, Some(B), true), None);
    b.stream(t(1003), None, None);
    assert_eq!(b.catch_up(t(1003)), "");
    assert!(b.feeds.remove(t(1000), &b.log).is_some());
    assert_eq!(b.feeds.remove(t(1001), &b.log), None);
    assert_eq!(b.feeds.waiting, vec![t(1003)]);
    assert_eq!(b.feeds.filters[&B].waiting, vec![t(1002)]);
    assert_eq!(b.publish(B).wake, vec![t(1002), t(1003)]);
}

#[test]
fn a_filtered_feed_gets_only_its_macs_events_and_only_they_wake_it() {
    let mut b = Bench::new(100);
    b.publish(A); // 1
    b.publish(B); // 2
    b.stream(t(1), Some(A), Some(0));
    b.stream(t(2), None, Some(0));
    assert_eq!(ids(&b.catch_up(t(1))), vec![1], "the replay is filtered too");
    assert_eq!(ids(&b.catch_up(t(2))), vec![1, 2]);

    let woken = b.publish(B); // 3
    assert_eq!(woken.wake, vec![t(2)]);
    let woken = b.publish(B); // 4
    assert!(woken.wake.is_empty());
    // Even asked, the filtered feed has nothing of B's to send.
    assert_eq!(b.catch_up(t(1)), "");
    let woken = b.publish(A); // 5
    assert_eq!(woken.wake, vec![t(1)], "t(2) is behind: not woken");
    assert!(b.publish(B).wake.is_empty()); // 6
    // 5 and 6 lie next to each other in the frames: the filtered
    // stream takes 5's alone.
    assert_eq!(ids(&b.catch_up(t(1))), vec![5]);
    assert_eq!(ids(&b.catch_up(t(2))), vec![3, 4, 5, 6]);

    // A filtered poll the same way.
    assert_eq!(b.poll(t(3), 6, Some(A), true), None);
    assert!(b.publish(B).wake.iter().all(|&w| w != t(3)), "another MAC's event does not wake it");
    assert_eq!(sorted(b.publish(A).wake), vec![t(1), t(3)], "A's caught-up stream and poll");
    assert_eq!(reply_body(b.produce(t(3), ENOUGH)), b.poll_body([8], 8, false));
}

#[test]
fn produce_keeps_to_its_budget_and_sends_every_id_in_order() {
    let mut b = Bench::new(100);
    b.stream(t(1), None, None);
    assert_eq!(b.catch_up(t(1)), "");
    for _ in 0..50 {
        b.publish(A);
    }
    // At least one frame, whatever the budget.
    assert!(matches!(b.produce(t(1), 1), Produce::More));
    let first = b.taken(t(1));
    assert_eq!(first, b.frames([1]));

    let longest = (1..=50).map(|id| b.frames([id]).len()).max().unwrap();
    let budget = 300;
    let mut sent = ids(&first);
    let mut mores = 1;
    loop {
        let produced = b.produce(t(1), budget);
        let out = b.taken(t(1));
        assert!(!out.is_empty(), "a woken feed with events to send sends one");
        assert!(out.len() < budget + longest, "{} bytes for a budget of {budget}", out.len());
        sent.extend(ids(&out));
        match produced {
            Produce::More => mores += 1,
            Produce::Idle => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, (1..=50).collect::<Vec<_>>(), "every id once, in order");
    assert!(mores >= 50 * b.frames([50]).len() as u64 / budget as u64 - 1, "{mores} turns for the budget");
    assert_eq!(b.stats.events_delivered, 50);
    assert_eq!(b.catch_up(t(1)), "", "caught up: nothing more until woken");
    assert_eq!(b.publish(A).wake, vec![t(1)]);
}

#[test]
fn live_events_are_copied_from_their_frames_and_replays_rendered_from_the_log() {
    let mut b = Bench::new(100);
    for _ in 0..3 {
        b.publish(A); // no stream yet: nothing is rendered
    }
    assert_eq!((b.feeds.frames.len(), b.feeds.frame_bytes()), (0, 0));
    b.stream(t(1), None, Some(1));
    b.stream(t(2), Some(A), Some(1));
    // Event 4 goes into the log; the feeds are told of a copy that
    // renders differently. What the streams send for 4 tells where it
    // came from: the frame rendered at publication, not the log.
    b.log.publish(A, EventKind::Location { lat: 4.0, lon: 0.5 }, 1000);
    let mut doctored = b.log.latest().unwrap().clone();
    doctored.kind = EventKind::Location { lat: -4.0, lon: -0.5 };
    b.announce(&doctored);
    let mut frame = Vec::new();
    doctored.write_sse(&mut frame);
    let expected = b.frames([2, 3]) + std::str::from_utf8(&frame).unwrap();
    assert_eq!(b.catch_up(t(1)), expected, "2 and 3 replayed from the log, 4 from its frame");
    assert_eq!(b.catch_up(t(2)), expected, "a filtered stream takes frames one by one");
    assert_eq!(b.stats.events_delivered, 6);
}

#[test]
fn a_last_event_id_the_log_cannot_resume_from_sends_a_reset_first() {
    let mut b = Bench::new(3);
    for _ in 0..5 {
        b.publish(A);
    }
    assert_eq!((b.log.first_id(), b.log.last_id()), (3, 5));
    let reset = |last: u64| format!("event: reset\ndata: {{\"last_event_id\":{last},\"latest\":5}}\n\n");
    let cases = [
        (1, reset(1) + &b.frames(3..=5)),
        (2, b.frames(3..=5)),
        (4, b.frames([5])),
        (5, String::new()),
        (99, reset(99) + &b.frames(3..=5)),
    ];
    for (token, (last, expected)) in cases.into_iter().enumerate() {
        b.stream(t(token), None, Some(last));
        assert_eq!(b.catch_up(t(token)), expected, "Last-Event-ID {last}");
    }
    // Once sent, the reset is not sent again.
    b.publish(A);
    assert_eq!(b.catch_up(t(0)), b.frames([6]));
}

#[test]
fn a_stream_that_falls_off_the_log_is_cut_and_one_that_keeps_up_is_not() {
    let mut b = Bench::new(3);
    b.stream(t(1), None, None);
    b.stream(t(2), None, None);
    assert_eq!(b.catch_up(t(1)), "");
    assert_eq!(b.catch_up(t(2)), "");
    for id in 1..=3 {
        let woken = b.publish(A);
        assert!(woken.cut.is_empty(), "event {id}: t(1) is behind but its next event is held");
        assert_eq!(ids(&b.catch_up(t(2))), vec![id]);
    }
    let woken = b.publish(A); // 4: the log holds 2..=4, t(1) still wants 1
    assert_eq!(woken.cut, vec![t(1)]);
    assert_eq!(woken.wake, vec![t(2)]);
    assert!(matches!(b.produce(t(1), ENOUGH), Produce::Close(CloseReason::SlowConsumer)));
    assert!(b.publish(A).cut.is_empty(), "cut once");
    assert_eq!(ids(&b.catch_up(t(2))), vec![4, 5]);
    assert_eq!(b.feeds.remove(t(1), &b.log), None, "a stream has no last answer");
    assert_eq!(b.feeds.streams(), 1);
}

#[test]
fn polls_are_answered_at_once_with_news_or_wait_for_a_matching_event() {
    let mut b = Bench::new(100);
    for _ in 0..3 {
        b.publish(A);
    }
    assert_eq!(b.poll(t(1), 1, None, true), Some(b.poll_body([2, 3], 3, false)), "news: at once");
    assert_eq!(b.poll(t(1), 3, None, false), Some(b.poll_body([], 3, false)), "wait: false: at once");
    assert_eq!(b.poll(t(1), 0, Some(B), false), Some(b.poll_body([], 3, false)));
    assert_eq!(b.feeds.polls(), 0, "answered polls do not wait");

    assert_eq!(b.poll(t(1), 3, None, true), None);
    assert_eq!(b.poll(t(2), 3, Some(B), true), None);
    assert_eq!(b.feeds.polls(), 2);
    // Asked before any event, a waiting poll stays waiting.
    assert!(matches!(b.produce(t(1), ENOUGH), Produce::Idle));
    assert_eq!(b.publish(A).wake, vec![t(1)]);
    assert_eq!(reply_body(b.produce(t(1), ENOUGH)), b.poll_body([4], 4, false));
    // The other times out: its last answer has nothing in it.
    assert_eq!(
        b.feeds.remove(t(2), &b.log).map(|a| String::from_utf8(a.body).unwrap()),
        Some(b.poll_body([], 4, false))
    );
    assert_eq!(b.feeds.polls(), 0);
    assert!(b.publish(B).wake.is_empty(), "forgotten");
}

#[test]
fn a_poll_answer_holds_at_most_a_batch_and_says_where_to_go_on() {
    let mut b = Bench::new(POLL_BATCH + 500);
    for _ in 0..POLL_BATCH + 200 {
        b.publish(A);
    }
    let last = (POLL_BATCH + 200) as u64;
    let first = POLL_BATCH as u64;
    assert_eq!(b.poll(t(1), 0, None, true), Some(b.poll_body(1..=first, first, false)));
    assert_eq!(b.poll(t(1), first, None, true), Some(b.poll_body(first + 1..=last, last, false)));
}

#[test]
fn a_poll_from_before_the_log_or_a_restart_is_told_to_reset() {
    let mut b = Bench::new(3);
    assert_eq!(b.poll(t(1), 7, None, true), Some(b.poll_body([], 0, true)), "an id never given out");
    for _ in 0..5 {
        b.publish(A);
    }
    assert_eq!(b.poll(t(1), 1, None, true), Some(b.poll_body(3..=5, 5, true)), "event 2 was lost");
    assert_eq!(b.poll(t(1), 2, None, true), Some(b.poll_body(3..=5, 5, false)), "nothing lost");
    assert_eq!(b.poll(t(1), 99, None, false), Some(b.poll_body(3..=5, 5, true)));
    // A waiting poll whose events fall off before it is answered.
    assert_eq!(b.poll(t(2), 5, None, true), None);
    assert_eq!(b.publish(A).wake, vec![t(2)]);
    for _ in 0..3 {
        b.publish(A);
    }
    assert_eq!(reply_body(b.produce(t(2), ENOUGH)), b.poll_body(7..=9, 9, true));
}

#[test]
fn a_stream_opened_during_a_burst_starts_over_rather_than_being_cut() {
    let mut b = Bench::new(3);
    for _ in 0..5 {
        b.publish(A); // the log holds 3..=5
    }
    // Last-Event-ID 1: events 2.. were lost. Last-Event-ID 2: resumes
    // exactly at the log's first event. A new stream: at the head.
    b.stream(t(1), None, Some(1));
    b.stream(t(2), None, Some(2));
    b.stream(t(3), None, None);
    // Four events are published before the flush phase produces for
    // them (a collar served later in the same turn, or a short turn
    // budget under fan-out): 3..=6 leave the log.
    for _ in 0..4 {
        let woken = b.publish(A);
        assert!(woken.cut.is_empty(), "cut before anything was sent to them: {:?}", woken.cut);
    }
    let reset = |last: u64| format!("event: reset\ndata: {{\"last_event_id\":{last},\"latest\":9}}\n\n");
    for (token, last) in [(t(1), 1), (t(2), 2), (t(3), 5)] {
        assert_eq!(b.catch_up(token), reset(last) + &b.frames([7, 8, 9]), "{token:?}");
    }
    // Once it was sent something, falling off the log is being slow.
    for _ in 0..3 {
        b.publish(A);
    }
    assert_eq!(b.publish(A).cut.len(), 3);
}

#[test]
fn removing_the_last_stream_frees_the_frames() {
    let mut b = Bench::new(1000);
    b.stream(t(1), None, None);
    b.stream(t(2), Some(A), None);
    for _ in 0..100 {
        b.publish(A);
    }
    assert!(b.feeds.frame_bytes() > 0);
    assert_eq!(b.feeds.remove(t(1), &b.log), None);
    assert!(b.feeds.frame_bytes() > 0, "a stream is still open");
    assert_eq!(b.feeds.remove(t(2), &b.log), None);
    assert_eq!((b.feeds.frame_bytes(), b.feeds.streams()), (0, 0));
    // Polls alone render nothing.
    assert_eq!(b.poll(t(3), 100, None, true), None);
    b.publish(A);
    assert_eq!(b.feeds.frame_bytes(), 0);
    assert_eq!(b.feeds.remove(t(9), &b.log), None, "an unknown feed");
}

#[test]
fn a_filtered_stream_falls_off_only_when_one_of_its_own_events_does() {
    let mut b = Bench::new(4);
    b.stream(t(1), Some(A), None);
    b.publish(A); // 1
    b.publish(B); // 2
    b.publish(B); // 3
    b.publish(A); // 4
    // One frame per turn: it is sent 1 and owes 4.
    assert!(matches!(b.produce(t(1), 1), Produce::More));
    assert_eq!(ids(&b.taken(t(1))), [1]);
    // Other collars' events push the log past 2 and 3, not past 4.
    for _ in 0..2 {
        assert!(b.publish(B).cut.is_empty(), "nothing it is owed has left the log");
    }
    assert_eq!(ids(&b.catch_up(t(1))), [4]);
    // Behind again, owing 7; 7 leaves the log: now it is slow.
    b.publish(A); // 7
    b.publish(A); // 8
    assert!(matches!(b.produce(t(1), 1), Produce::More));
    assert_eq!(ids(&b.taken(t(1))), [7]);
    for _ in 0..3 {
        assert!(b.publish(B).cut.is_empty());
    }
    assert_eq!(b.publish(B).cut, [t(1)], "8 left the log unsent");
}
