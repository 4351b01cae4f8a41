//! A connection's end: half-closes, graceful and abortive closes, and the
//! drain.

use super::*;

#[test]
fn a_client_that_half_closes_still_gets_its_answers() {
    let server = Setup::new().run();
    let mut c = server.connect();
    c.send("one\ntwo\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect("one\ntwo\n");
    c.expect_closed();
    assert_eq!(server.closed(), (None, CloseReason::PeerClosed));
    server.stop();
}

#[test]
fn a_stop_request_drains_every_connection_with_its_last_words() {
    let server = Setup::new().run();
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    for c in &mut clients {
        c.send("hi\n");
        c.expect("hi\n");
    }
    let draining = thread::spawn(move || server.drain());
    for c in &mut clients {
        c.expect("bye shutdown\n");
        c.expect_closed();
    }
    drop(clients);
    let done = draining.join().unwrap();
    assert_eq!(done.exit, Exit::Drained);
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::Shutdown), 3);
}

#[test]
fn a_close_on_purpose_ends_with_a_fin_after_the_last_words() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    b.send("close a\n");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::Replaced));
    a.expect("bye replaced\n");
    a.expect_fin();
    server.stop();
}

#[test]
fn a_peer_presumed_dead_is_reset_and_freed_at_once() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    b.send("kill a\n");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::HeartbeatTimeout));
    a.expect_reset();
    // Freed at once: no lingering connection holds up the drain, which
    // would otherwise wait for the 500 ms linger deadline.
    drop(b);
    let done = server.drain();
    assert_eq!(done.exit, Exit::Drained);
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::HeartbeatTimeout), 1);
}

#[test]
fn a_peer_presumed_dead_gets_its_last_words_then_a_reset() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    b.send("abort a\n");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::Idle));
    a.expect("bye idle\n");
    a.expect_reset();
    b.send("still here\n");
    b.expect("still here\n");
    server.stop();
}
