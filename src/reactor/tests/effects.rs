//! Effects, replies and closes asked for by the application, and stale tokens.

use super::*;

#[test]
fn effects_are_applied_in_order_after_the_call_that_returned_them() {
    let server = Setup::new().run();
    let mut c = server.connect();
    c.send("fx a\nfx b\nfx c\nask done\n");
    // The reply to the last effect follows the three before it.
    c.expect("re done\n");
    let done = server.stop();
    let applied: Vec<(String, usize)> =
        done.app.applied.iter().map(|(_, what, lines)| (what.clone(), *lines)).collect();
    // Applied in order, each after the call that read all four lines.
    assert_eq!(applied, vec![("a".into(), 4), ("b".into(), 4), ("c".into(), 4)]);
}

#[test]
fn replies_reach_the_session_they_are_for() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    a.send("ask x\n");
    a.expect("re x\n");
    b.send("reply a hello\n");
    b.expect("replied\n");
    a.expect("hello\n");
    // Output queued in the call comes before the reply to its effect.
    a.send("one\nask y\ntwo\n");
    a.expect("one\ntwo\nre y\n");
    server.stop();
}

#[test]
fn ops_close_closes_for_the_reason_given_after_the_last_words() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    b.send("close a\n");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::Replaced));
    a.expect("bye replaced\n");
    a.expect_closed();
    b.send("still here\n");
    b.expect("still here\n");
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::Replaced), 1);
}

#[test]
fn a_stale_token_is_ignored_even_when_its_slot_is_reused() {
    let server = Setup::new().run();
    let mut a = server.named("a");
    let mut b = server.named("b");
    // Closed without lingering: freed at once, its slot free for the next.
    b.send("kill a\n");
    assert_eq!(server.closed(), (Some("a".into()), CloseReason::HeartbeatTimeout));
    a.expect_closed();
    let mut c = server.named("c");
    b.send("send a boo\n");
    b.expect("sent Err(Gone)\n");
    b.send("reply a boo\n");
    b.expect("replied\n");
    b.send("close a\n");
    b.send("ping\n");
    b.expect("ping\n");
    // Nothing of the above reached the connection in a's old slot.
    c.send("ping\n");
    c.expect("ping\n");
    let done = server.stop();
    let (a, c) = (done.app.names["a"], done.app.names["c"]);
    assert_eq!(token::unpack(a).0, token::unpack(c).0, "the slot was reused");
    assert_ne!(a, c);
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::Replaced), 0);
}

// (f) Caps.
