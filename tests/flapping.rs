//! The flapping guard over real sockets: two collars fighting over one MAC
//! until it is quarantined (`ERR flapping`, `BYE flapping`, the `flapping`
//! event, the counters), the end of the quarantine, a guard turned off, and
//! with device keys, that only a proved collar's takeovers count.

mod common;

use std::time::Duration;

use common::{Gateway, HttpClient, KeyFile, auth_line, authenticate, challenge, closed, config, mac, metric};
use tether::Config;
use tether::close::CloseReason;

/// A guard that quarantines the fourth takeover within ten seconds.
fn guarded(quarantine: Duration) -> Config {
    Config { flap_limit: 3, flap_window: Duration::from_secs(10), flap_quarantine: quarantine, ..config() }
}

fn events(gw: &Gateway) -> HttpClient {
    let mut events = gw.http_client();
    events.send(b"GET /events HTTP/1.1\r\n\r\n");
    events.expect(common::STREAM_START.as_bytes());
    events
}

/// `n` takeovers of `mac(1)`, each by a new connection; the last one, which
/// holds the MAC.
fn fight(gw: &Gateway, n: usize) -> common::Client {
    let mut holder = gw.device(&mac(1));
    for _ in 0..n {
        let next = gw.device(&mac(1));
        holder.expect(b"BYE replaced\n");
        holder = next;
    }
    holder
}

#[test]
fn a_mac_taken_over_too_often_is_quarantined_and_the_winner_stays() {
    let gw = Gateway::start(guarded(Duration::from_secs(60)));
    let mut events = events(&gw);
    let mut winner = fight(&gw, 4);
    // connected, then (disconnected, connected) per takeover, then flapping.
    for _ in 0..1 + 2 * 4 {
        events.read_event();
    }
    let flapping = events.read_event();
    assert!(flapping.starts_with("id: 10\nevent: flapping\ndata: "), "{flapping}");
    assert!(flapping.contains(r#""mac":"02:00:00:00:00:01","takeovers":4,"until":""#), "{flapping}");
    // Every further IDENTIFY for the MAC is refused, and nothing announced.
    for _ in 0..3 {
        let mut late = gw.connect();
        late.send(format!("IDENTIFY:{}\nPING\n", mac(1)).as_bytes());
        assert_eq!(late.read_to_eof(), b"ERR flapping\nBYE flapping\n");
    }
    winner.send(b"PING\n");
    winner.expect(b"PONG\n");
    // Other MACs are not concerned.
    let mut other = gw.device(&mac(2));
    let connected = events.read_event();
    assert!(connected.contains("event: connected") && connected.contains(&mac(2)), "{connected}");
    other.send(b"PING\n");
    other.expect(b"PONG\n");
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, "tether_flap_quarantines_total"), 1.0);
    assert_eq!(metric(&metrics, "tether_flap_refusals_total"), 3.0);
    assert_eq!(metric(&metrics, "tether_takeovers_total"), 4.0);
    assert_eq!(metric(&metrics, r#"tether_closed_total{kind="device",reason="flapping"}"#), 3.0);
    drop((winner, other));
    let stats = gw.stop_drained();
    assert_eq!((stats.flap_quarantines, stats.flap_refusals, closed(&stats, CloseReason::Flapping)), (1, 3, 3));
}

#[test]
fn the_limit_itself_is_allowed() {
    let gw = Gateway::start(guarded(Duration::from_secs(60)));
    let mut holder = fight(&gw, 3);
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
    // Not quarantined: a fourth takeover succeeds (and quarantines).
    let _winner = gw.device(&mac(1));
    holder.expect(b"BYE replaced\n");
}

#[test]
fn after_the_quarantine_the_mac_may_identify_again() {
    let gw = Gateway::start(guarded(Duration::from_millis(300)));
    let mut winner = fight(&gw, 4);
    let mut refused = gw.connect();
    refused.send(format!("IDENTIFY:{}\n", mac(1)).as_bytes());
    assert_eq!(refused.read_to_eof(), b"ERR flapping\nBYE flapping\n");
    // The quarantine has 300 ms to run: nothing is sent meanwhile.
    winner.expect_silence(Duration::from_millis(400));
    let _back = gw.device(&mac(1));
    winner.expect(b"BYE replaced\n");
}

#[test]
fn a_limit_of_zero_turns_the_guard_off() {
    let gw = Gateway::start(Config { flap_limit: 0, ..guarded(Duration::from_secs(60)) });
    let mut holder = fight(&gw, 30);
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
    assert_eq!(metric(&gw.metrics(), "tether_flap_quarantines_total"), 0.0);
}

#[test]
fn with_keys_the_refusal_comes_after_the_proof_and_failed_proofs_never_count() {
    let keys = KeyFile::new("flapping", &[[0x77; 32]]);
    let key = keys.device_key(&mac(1));
    let gw = Gateway::start(Config { device_key_file: Some(keys.keys.clone()), ..guarded(Duration::from_secs(60)) });
    let mut holder = gw.connect();
    authenticate(&mut holder, &mac(1), &key);
    // Impostors without the key make no takeover, however many.
    for _ in 0..10 {
        let mut impostor = gw.connect();
        let nonce = challenge(&mut impostor, &mac(1));
        impostor.send(auth_line(&[0; 32], &nonce).as_bytes());
        assert_eq!(impostor.read_to_eof(), b"ERR bad-auth\nBYE auth-failed\n");
    }
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
    for _ in 0..4 {
        let mut next = gw.connect();
        authenticate(&mut next, &mac(1), &key);
        holder.expect(b"BYE replaced\n");
        holder = next;
    }
    let mut late = gw.connect();
    let nonce = challenge(&mut late, &mac(1));
    late.send(auth_line(&key, &nonce).as_bytes());
    assert_eq!(late.read_to_eof(), b"ERR flapping\nBYE flapping\n");
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
}
