//! A listener's share: idle eviction and the per-address cap.

use super::*;

#[test]
fn at_the_cap_the_longest_idle_connection_makes_room_and_without_one_a_newcomer_is_refused() {
    let mut setup = Setup::new();
    setup.cap = 2;
    setup.evict_idle = true;
    let server = setup.run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    // Full: a has been idle the longest.
    let mut c = server.named("c");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::Evicted));
    a.expect_closed();
    // b is busy, so c, though newer, is the one to go.
    b.send("busy\n");
    b.expect("busy\n");
    let mut d = server.named("d");
    assert_eq!(server.closed(), (Some("c".into()), CloseReason::Evicted));
    c.expect_closed();
    // Nobody idle: the newcomer is turned away with the app's words.
    d.send("busy\n");
    d.expect("busy\n");
    let mut e = server.connect();
    e.expect("refused server-full\n");
    e.expect_closed();
    b.send("ping\n");
    b.expect("ping\n");
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::Evicted), 2);
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::ServerFull), 1);
}

#[test]
fn a_second_connection_from_one_address_is_refused_past_the_per_ip_cap() {
    let mut setup = Setup::new();
    setup.per_ip = Some(1);
    let server = setup.run();
    let mut a = server.connect();
    a.send("hi\n");
    a.expect("hi\n");
    let mut b = server.connect();
    b.expect("refused per-ip-limit\n");
    b.expect_closed();
    // Once the first is gone, the address may connect again.
    drop(a);
    assert_eq!(server.closed(), (None, CloseReason::PeerClosed));
    let mut c = server.connect();
    c.send("hi\n");
    c.expect("hi\n");
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::PeerLimit), 1);
    assert_eq!(done.stats.accepted[Kind::Device as usize], 3);
}

// Closing and stopping.
