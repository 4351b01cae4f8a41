//! What an event stream that reads nothing costs, and when it is cut.
//!
//! A stream is a cursor into the event log, and the gateway's side of its
//! socket holds at most what `SO_SNDBUF` lets it (set from
//! `--sse-max-backlog`): a stuck client costs the gateway no more than the
//! backlog, counted where the bytes really are, in the kernel
//! (`/proc/net/tcp`). Its cursor stops where the kernel stopped taking
//! bytes; once more than `--event-history` events have been published past
//! it, the events it would need next are gone from the log, and it is
//! closed as `slow-consumer`. Reconnecting with `Last-Event-ID` then says
//! what was lost with `event: reset` before the events the log still holds.
//!
//! The gateway runs as the real binary, with flags an operator has.

mod common;

use common::{HttpClient, Process, STREAM_START, assert_like, frames, location_frame, locations, metric, tcp_queues};

const MAC: &str = "CE:96:C2:78:27:FC";

/// A stream that reads nothing, with the default receive buffer: the
/// gateway's send queue for it never holds more than `--sse-max-backlog`,
/// however much is published (it once grew far past it: the kernel's
/// autotuned buffer filled before the user-space cap counted a byte).
/// Once its cursor is more than
/// `--event-history` events behind, it is cut as `slow-consumer`; the
/// client finds whole frames in order, and on reconnecting with the last
/// id it read, a reset and then the events the log holds.
#[test]
fn a_stream_that_reads_nothing_costs_at_most_the_backlog_and_is_cut_when_it_falls_off_the_log() {
    const BACKLOG: u64 = 256 * 1024;
    const HISTORY: usize = 1000;
    const BATCH: usize = 900;
    const BATCHES: usize = 7;
    let tether = Process::start(&["--sse-max-backlog", "256KiB", "--event-history", "1000"], None);
    let mut publisher = tether.device(MAC);
    let mut stuck = HttpClient::connect(tether.http);
    stuck.send(b"GET /events HTTP/1.1\r\nHost: tether\r\n\r\n");
    stuck.expect(STREAM_START.as_bytes());
    let client = stuck.stream.local_addr().unwrap();

    // Batches smaller than the history, each published before the next is
    // sent (the PONG comes after the batch's lines are handled); after
    // each, what the kernel holds for the stream on the gateway's side.
    let mut most = (0, 0);
    for batch in 0..BATCHES {
        publisher.send(format!("{}PING\n", locations(batch * BATCH, (batch + 1) * BATCH)).as_bytes());
        publisher.expect(b"PONG\n");
        let queued = match tcp_queues(tether.http, client) {
            Some((queued, _)) => queued,
            // Cut, and its socket gone from the kernel's table: it holds
            // nothing any more.
            None if batch > 0 => 0,
            None => panic!("no socket {} -> {client} in /proc/net/tcp", tether.http),
        };
        most = most.max((queued, (batch + 1) * BATCH));
    }
    let (queued, after) = most;
    assert!(
        queued <= BACKLOG,
        "{queued} bytes were queued in the kernel (after {after} events) for a stream that reads nothing, \
         over --sse-max-backlog {BACKLOG}"
    );
    let published = (1 + BATCHES * BATCH) as u64;
    let metrics = tether.metrics();
    assert_eq!(metric(&metrics, r#"tether_closed_total{kind="http",reason="slow-consumer"}"#), 1.0);
    assert_eq!(metric(&metrics, "tether_sse_subscribers"), 0.0);

    // What reached the client: whole frames from the first event on, in
    // order, far fewer than were published (the last may be cut short).
    let received = frames(&stuck.read_to_eof());
    let last = received.last().expect("some frames reached the stuck stream").0;
    for (n, (id, frame)) in received.iter().enumerate() {
        assert_eq!(*id, 2 + n as u64, "frame {n}");
        assert_like(frame, &location_frame(*id, MAC, n));
    }
    assert!(last + (HISTORY as u64) < published, "cut at {last} of {published}: not behind by the history");

    // Reconnecting from there: the events after `last` that are gone are
    // announced, then the log's events follow, from the oldest it holds.
    let mut resumed = HttpClient::connect(tether.http);
    resumed.send(format!("GET /events HTTP/1.1\r\nHost: tether\r\nLast-Event-ID: {last}\r\n\r\n").as_bytes());
    resumed.expect(STREAM_START.as_bytes());
    resumed.expect(format!("event: reset\ndata: {{\"last_event_id\":{last},\"latest\":{published}}}\n\n").as_bytes());
    let oldest = published - HISTORY as u64 + 1;
    for id in oldest..=published {
        assert_like(&resumed.read_event(), &location_frame(id, MAC, (id - 2) as usize));
    }
    // Then live.
    publisher.send(locations(1, 2).as_bytes());
    assert_like(&resumed.read_event(), &location_frame(published + 1, MAC, 1));
}
