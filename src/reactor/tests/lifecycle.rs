//! A connection's end: half-closes and the drain.

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
