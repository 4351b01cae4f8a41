//! The `/metrics` series that say how the loop works, moving with what
//! happens: reads and writes of sockets (each a system call that moved
//! bytes), events delivered on streams, the longest turn, the bytes of
//! rendered event frames (kept only while a stream is open), and the
//! output buffers pooled for reuse.
//!
//! Each `/metrics` request is made on a connection of its own, which the
//! counts include: one read for its request (before the page is rendered)
//! and one write for its answer (after).

mod common;

use common::{Gateway, assert_like, config, location_frame, locations, metric, subscribe_many};

const MAC: &str = "CE:96:C2:78:27:FC";

#[test]
fn reads_and_writes_count_the_system_calls_that_moved_bytes() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let before = gw.metrics();
    // Three round trips: a read and a write each.
    for _ in 0..3 {
        dev.send(b"PING\n");
        dev.expect(b"PONG\n");
    }
    let after = gw.metrics();
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    // The PINGs, and the second `/metrics` request.
    assert_eq!(delta("tether_socket_reads_total"), 4.0);
    // The PONGs, and the first `/metrics` answer.
    assert_eq!(delta("tether_socket_writes_total"), 4.0);
    assert!(metric(&after, "tether_loop_longest_turn_seconds") > 0.0, "{after}");
}

#[test]
fn events_delivered_frame_bytes_and_pooled_buffers_follow_the_streams() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(MAC);
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, "tether_event_frame_bytes"), 0.0, "no stream, no frames");
    assert_eq!(metric(&metrics, "tether_events_delivered_total"), 0.0);

    let mut streams: Vec<_> = subscribe_many(gw.http, 2, None);
    dev.send(locations(0, 3).as_bytes());
    for stream in &mut streams {
        for i in 0..3 {
            assert_like(&stream.read_event(), &location_frame(2 + i as u64, MAC, i));
        }
    }
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, "tether_events_delivered_total"), 6.0);
    assert!(metric(&metrics, "tether_event_frame_bytes") > 0.0, "the frames of the events are kept");
    // Every answer so far was written whole: its buffer went back to the pool.
    assert!(metric(&metrics, "tether_pooled_buffers") >= 1.0);

    // The last stream gone, the frames go too.
    drop(streams);
    gw.expect_log("closing: peer-closed");
    gw.expect_log("closing: peer-closed");
    assert_eq!(metric(&gw.metrics(), "tether_event_frame_bytes"), 0.0);
    assert_eq!(metric(&gw.metrics(), "tether_sse_subscribers"), 0.0);
}
