//! Several gateways against one real Redis (`--redis`): the fleet-wide
//! directory, takeovers across gateways, commands and location queries
//! carried to the gateway that holds the collar, and riding out a Redis
//! outage and a gateway's death.
//!
//! Each test starts its own `redis-server` on a free port
//! ([`RedisServer`]); without one on `PATH` it skips when run by hand and
//! fails under `scripts/test.sh`. Waits are reads with timeouts and the
//! gateways' own log lines (a claim answered, a link up), never sleeps.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Gateway, Process, RedisServer, assert_like, config, mac};
use tether::Config;
use tether::redis::codec::Frame as _;

/// A gateway on `redis`, with short Redis timings.
fn gateway(redis: &RedisServer) -> Gateway {
    gateway_with(redis, config())
}

fn gateway_with(redis: &RedisServer, base: Config) -> Gateway {
    gateway_and_id(redis, base).0
}

/// A gateway and its id in the directory.
fn gateway_and_id(redis: &RedisServer, base: Config) -> (Gateway, String) {
    let config = Config {
        redis: Some(redis.url().parse().unwrap()),
        redis_ttl: Duration::from_secs(1),
        redis_timeout: Duration::from_millis(500),
        redis_reconnect_max: Duration::from_millis(200),
        ..base
    };
    let gateway = Gateway::start(config);
    let line = gateway.expect_log("redis: connected to");
    let id = line.rsplit("as gateway ").next().unwrap().to_string();
    (gateway, id)
}

/// Identifies `mac` on `gateway` and waits until Redis has the claim.
fn online(gateway: &Gateway, mac: &str) -> common::Client {
    let client = gateway.device(mac);
    gateway.expect_log(&format!("{}: claimed with epoch", mac.to_uppercase().replace('-', ":")));
    client
}

fn upper(mac: &str) -> String {
    mac.to_uppercase().replace('-', ":")
}

#[test]
fn every_gateway_lists_the_whole_fleet_and_pages_it_by_mac() {
    let Some(redis) = RedisServer::start("every_gateway_lists_the_whole_fleet_and_pages_it_by_mac") else { return };
    let (a, b) = (gateway(&redis), gateway(&redis));
    let _on_a = [online(&a, &mac(1)), online(&a, &mac(3))];
    let mut on_b = online(&b, &mac(2));
    on_b.send(b"LOCATION:48.8566,2.3522\n");
    let key = format!("tether:dev:{}", upper(&mac(2)));
    let deadline = Instant::now() + common::TIMEOUT;
    while redis.text(&["HGET", &key, "lat"]).is_none() {
        assert!(Instant::now() < deadline, "the fix never reached the directory");
    }

    for gateway in [&a, &b] {
        let page = gateway.api().get("/devices");
        assert_eq!(page.status, 200);
        let entry = |m: &str| {
            format!(r#"{{"mac":"{m}","peer":"<PEER>","connected_at":"<TIME>","last_seen":"<TIME>","location":null}}"#)
        };
        let located = format!(
            r#"{{"mac":"{}","peer":"<PEER>","connected_at":"<TIME>","last_seen":"<TIME>","location":{{"lat":48.8566,"lon":2.3522,"at":"<TIME>"}}}}"#,
            upper(&mac(2))
        );
        assert_like(
            &page.body,
            &format!(
                r#"{{"total":3,"offset":0,"limit":100,"devices":[{},{located},{}]}}"#,
                entry(&upper(&mac(1))),
                entry(&upper(&mac(3)))
            ),
        );
        let after = gateway.api().get(&format!("/devices?after={}&limit=1", upper(&mac(1))));
        assert_like(&after.body, &format!(r#"{{"total":3,"offset":0,"limit":1,"devices":[{located}]}}"#));
        let one = gateway.api().get(&format!("/devices/{}", upper(&mac(2))));
        assert_eq!(one.status, 200);
        assert_like(&one.body, &located);
    }
    let missing = a.api().get(&format!("/devices/{}", upper(&mac(9))));
    assert_eq!((missing.status, missing.body.as_str()), (404, r#"{"error":"device not online"}"#));
    assert_eq!(redis.int(&["ZCARD", "tether:devices"]), 3);
}

#[test]
fn a_collar_that_moves_to_another_gateway_replaces_the_old_connection_both_ways() {
    let Some(redis) =
        RedisServer::start("a_collar_that_moves_to_another_gateway_replaces_the_old_connection_both_ways")
    else {
        return;
    };
    let (a, b) = (gateway(&redis), gateway(&redis));
    let m = mac(7);
    let mut first = online(&a, &m);
    let mut second = online(&b, &m);
    first.expect(b"BYE replaced\n");
    first.expect_eof();
    let mut third = online(&a, &m);
    second.expect(b"BYE replaced\n");
    second.expect_eof();
    third.send(b"PING\n");
    third.expect(b"PONG\n");
    // Three claims took the counter's next three values, which started from
    // Redis's clock (in microseconds) as the counter did not exist.
    let entry = redis.cmd(&["HGET", &format!("tether:dev:{}", upper(&m)), "epoch"]);
    let epoch = tether::redis::codec::Frame::int(&entry).unwrap();
    assert_eq!(redis.int(&["GET", "tether:epoch"]), epoch, "the entry has the last epoch given");
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    assert!((now_us - 60_000_000..=now_us).contains(&(epoch - 3)), "{epoch} against {now_us}");
    assert!(a.metrics().contains("tether_redis_lost_to_remote_total 1\n"));
    assert!(b.metrics().contains("tether_redis_lost_to_remote_total 1\n"));
    // The last owner's goodbye releases the entry; the losers' releases
    // (older epochs) removed nothing.
    drop(third);
    let deadline = Instant::now() + common::TIMEOUT;
    while redis.int(&["ZCARD", "tether:devices"]) > 0 {
        assert!(Instant::now() < deadline, "never released");
    }
    let listed = b.api().get("/devices");
    assert_like(&listed.body, r#"{"total":0,"offset":0,"limit":100,"devices":[]}"#);
}

#[test]
fn two_claims_racing_leave_exactly_one_collar_online() {
    let Some(redis) = RedisServer::start("two_claims_racing_leave_exactly_one_collar_online") else { return };
    let (a, id_a) = gateway_and_id(&redis, config());
    let (b, id_b) = gateway_and_id(&redis, config());
    let m = mac(11);
    let claimed = format!("{}: claimed with epoch", upper(&m));
    for round in 0..5 {
        let (addr_a, addr_b, m1, m2) = (a.addr, b.addr, m.clone(), m.clone());
        let t1 = thread::spawn(move || common::Client::identified(addr_a, &m1));
        let t2 = thread::spawn(move || common::Client::identified(addr_b, &m2));
        let (mut c1, mut c2) = (t1.join().unwrap(), t2.join().unwrap());
        a.expect_log(&claimed);
        b.expect_log(&claimed);
        // The later claim (the directory's owner now) wins; the other
        // collar is told so, and the winner goes on talking.
        let owner = redis.text(&["HGET", &format!("tether:dev:{}", upper(&m)), "gw"]).unwrap();
        let (winner, loser, winner_gateway, loser_gateway) = if owner == id_a {
            (&mut c1, &mut c2, &a, &b)
        } else {
            assert_eq!(owner, id_b, "round {round}");
            (&mut c2, &mut c1, &b, &a)
        };
        loser.expect(b"BYE replaced\n");
        loser.expect_eof();
        winner.send(b"PING\n");
        winner.expect(b"PONG\n");
        assert_eq!(winner_gateway.api().get(&format!("/devices/{}", upper(&m))).status, 200);
        let _ = loser_gateway;
        drop((c1, c2));
        winner_gateway.expect_log(&format!("{} offline", upper(&m)));
    }
}

#[test]
fn commands_and_location_queries_reach_a_collar_on_another_gateway() {
    let Some(redis) = RedisServer::start("commands_and_location_queries_reach_a_collar_on_another_gateway") else {
        return;
    };
    let (a, b, c) = (gateway(&redis), gateway(&redis), gateway(&redis));
    let m = mac(21);
    let mut collar = online(&c, &m);

    let sent = a.api().post(&format!("/devices/{}/commands", upper(&m)), "BEEP 3");
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.body, format!(r#"{{"mac":"{}","accepted":true,"bytes":7}}"#, upper(&m)));
    collar.expect(b"BEEP 3\n");

    // Two queries from two other gateways share one query on the wire.
    let path = format!("/devices/{}/location", upper(&m));
    let (api_a, api_b, p1, p2) = (a.api(), b.api(), path.clone(), path.clone());
    let q1 = thread::spawn(move || api_a.get(&p1));
    let q2 = thread::spawn(move || api_b.get(&p2));
    collar.expect(b"location\n");
    // Both queries are on the wire at the owner before the answer goes out.
    c.expect_log("bus: loc");
    c.expect_log("bus: loc");
    collar.send(b"LOCATION:1.25,-2.5\n");
    for reply in [q1.join().unwrap(), q2.join().unwrap()] {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_like(
            &reply.body,
            &format!(r#"{{"mac":"{}","location":{{"lat":1.25,"lon":-2.5,"at":"<TIME>"}}}}"#, upper(&m)),
        );
    }
    collar.expect_silence(Duration::from_millis(100));

    // A query whose collar leaves before answering: 502, as on one gateway.
    let api_a = a.api();
    let q = thread::spawn(move || api_a.get(&path));
    collar.expect(b"location\n");
    drop(collar);
    let reply = q.join().unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (502, r#"{"error":"the device disconnected before answering"}"#));
    let gone = a.api().post(&format!("/devices/{}/commands", upper(&m)), "BEEP");
    assert_eq!((gone.status, gone.body.as_str()), (404, r#"{"error":"device not online"}"#));
}

#[test]
fn a_request_that_the_owning_gateway_never_answers_gets_504_at_the_timeout() {
    let Some(redis) = RedisServer::start("a_request_that_the_owning_gateway_never_answers_gets_504_at_the_timeout")
    else {
        return;
    };
    let a = gateway(&redis);
    // A "gateway" that holds a collar in the directory and listens on its
    // channel but never answers (a lost message, a stuck process).
    let m = upper(&mac(31));
    redis.cmd(&["HSET", &format!("tether:dev:{m}"), "gw", "mute", "epoch", "1", "peer", "10.0.0.1:1", "since", "0"]);
    redis.cmd(&["ZADD", "tether:devices", "0", &m]);
    let mut mute = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let mut subscribe = Vec::new();
    tether::redis::codec::command(&mut subscribe, &[b"SUBSCRIBE", b"tether:gw:mute"]);
    std::io::Write::write_all(&mut mute, &subscribe).unwrap();
    let mut confirmation = [0u8; 64];
    std::io::Read::read(&mut mute, &mut confirmation).unwrap();

    let started = Instant::now();
    let reply = a.api().post(&format!("/devices/{m}/commands"), "BEEP");
    let took = started.elapsed();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (504, r#"{"error":"the gateway holding the device did not answer in time"}"#)
    );
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");
    assert!(a.metrics().contains("tether_redis_requests_total{side=\"timed-out\"} 1\n"));
    // A gateway nobody listens for any more: 404 at once.
    redis.cmd(&["HSET", &format!("tether:dev:{m}"), "gw", "gone"]);
    let reply = a.api().post(&format!("/devices/{m}/commands"), "BEEP");
    assert_eq!((reply.status, reply.body.as_str()), (404, r#"{"error":"device not online"}"#));
}

#[test]
fn without_redis_a_gateway_serves_its_own_collars_and_claims_them_again_when_redis_is_back() {
    let Some(mut redis) =
        RedisServer::start("without_redis_a_gateway_serves_its_own_collars_and_claims_them_again_when_redis_is_back")
    else {
        return;
    };
    let (a, b) = (gateway(&redis), gateway(&redis));
    let (m1, m2) = (mac(41), mac(42));
    let mut c1 = online(&a, &m1);
    let _c2 = online(&b, &m2);

    redis.kill();
    a.expect_log("redis: link to");
    let health = a.api().get("/health");
    assert_eq!(health.status, 200);
    assert_like(
        &health.body,
        r#"{"status":"degraded","uptime_s":<INT>,"devices_online":1,"connections":<INT>,"redis":"down"}"#,
    );
    assert!(a.metrics().contains("tether_redis_up 0\n"));
    // Local collars work; a new one identifies locally; others are 503.
    c1.send(b"PING\n");
    c1.expect(b"PONG\n");
    let _c3 = a.device(&mac(43));
    let local = a.api().get("/devices");
    assert_like(
        &local.body,
        &format!(
            r#"{{"total":2,"offset":0,"limit":100,"devices":[{{"mac":"{}","peer":"<PEER>","connected_at":"<TIME>","last_seen":"<TIME>","location":null}},{{"mac":"{}","peer":"<PEER>","connected_at":"<TIME>","last_seen":"<TIME>","location":null}}]}}"#,
            upper(&m1),
            upper(&mac(43))
        ),
    );
    let remote = a.api().get(&format!("/devices/{}", upper(&m2)));
    assert_eq!(remote.status, 503, "{}", remote.body);
    let remote = a.api().post(&format!("/devices/{}/commands", upper(&m2)), "BEEP");
    assert_eq!(remote.status, 503, "{}", remote.body);

    // Redis comes back empty: both gateways reconnect and claim their
    // collars again.
    redis.restart();
    a.expect_log("redis: connected to");
    b.expect_log("redis: connected to");
    let deadline = Instant::now() + common::TIMEOUT;
    while redis.int(&["ZCARD", "tether:devices"]) < 3 {
        assert!(Instant::now() < deadline, "the collars were not claimed again");
    }
    let fleet = b.api().get("/devices");
    assert!(fleet.body.starts_with(r#"{"total":3,"#), "{}", fleet.body);
    assert!(a.metrics().contains("tether_redis_reconnects_total 1\n"));
    assert_like(
        &a.api().get("/health").body,
        r#"{"status":"ok","uptime_s":<INT>,"devices_online":2,"connections":<INT>,"redis":"up"}"#,
    );
}

#[test]
fn a_gateway_killed_outright_leaves_the_directory_within_the_ttl() {
    let Some(redis) = RedisServer::start("a_gateway_killed_outright_leaves_the_directory_within_the_ttl") else {
        return;
    };
    let survivor = gateway(&redis);
    let url = redis.url();
    let doomed = Process::start(
        &["--device-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--redis", &url, "--redis-ttl", "1s"],
        None,
    );
    doomed.expect_log("redis: connected to");
    let _collar = doomed.device(&mac(51));
    let deadline = Instant::now() + common::TIMEOUT;
    while redis.int(&["ZCARD", "tether:devices"]) < 1 {
        assert!(Instant::now() < deadline, "never claimed");
    }
    let killed = Instant::now();
    doomed.signal(libc::SIGKILL);
    survivor.expect_log("redis: swept 1 devices");
    // The liveness key lives 1 s and the survivor sweeps every 1 s.
    assert!(killed.elapsed() < Duration::from_secs(3), "{:?}", killed.elapsed());
    assert_eq!(redis.int(&["ZCARD", "tether:devices"]), 0);
    assert!(survivor.metrics().contains("tether_redis_swept_total 1\n"));
}

/// An SSE frame as `(id, event, data)`.
fn sse(frame: &str) -> (String, String, String) {
    let mut parts = (String::new(), String::new(), String::new());
    for line in frame.lines() {
        if let Some(id) = line.strip_prefix("id: ") {
            parts.0 = id.to_string();
        } else if let Some(event) = line.strip_prefix("event: ") {
            parts.1 = event.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            parts.2 = data.to_string();
        }
    }
    parts
}

/// A stream id as Redis writes it: `MS-SEQ`.
fn assert_stream_id(id: &str) {
    let (ms, seq) = id.split_once('-').unwrap_or_else(|| panic!("not a stream id: {id:?}"));
    assert!(ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(), "not a stream id: {id:?}");
}

fn subscribe(gateway: &Gateway, headers: &str) -> common::HttpClient {
    let mut stream = gateway.http_client();
    stream.send(format!("GET /events HTTP/1.1\r\nHost: tether\r\n{headers}\r\n").as_bytes());
    stream.expect(common::STREAM_START.as_bytes());
    stream
}

#[test]
fn every_stream_sees_the_whole_fleet_and_replays_across_a_restart_by_stream_id() {
    let Some(redis) = RedisServer::start("every_stream_sees_the_whole_fleet_and_replays_across_a_restart_by_stream_id")
    else {
        return;
    };
    let (a, b) = (gateway(&redis), gateway(&redis));
    let mut on_b = subscribe(&b, "");
    let mut collar = online(&a, &mac(61));
    collar.send(b"LOCATION:10.5,20.25\n");
    let (id1, event, data) = sse(&on_b.read_event());
    assert_stream_id(&id1);
    assert_eq!(event, "connected");
    assert_like(&data, &format!(r#"{{"mac":"{}","peer":"<PEER>","at":"<TIME>"}}"#, upper(&mac(61))));
    let (id2, event, data) = sse(&on_b.read_event());
    assert_stream_id(&id2);
    assert_eq!(event, "location");
    assert_like(&data, &format!(r#"{{"mac":"{}","lat":10.5,"lon":20.25,"at":"<TIME>"}}"#, upper(&mac(61))));
    assert_eq!(redis.int(&["XLEN", "tether:events"]), 2);
    drop(on_b);
    b.stop_drained();

    // A gateway started afterwards loads the history: the client resumes
    // where it left off, by the stream's id, on another process.
    let c = gateway(&redis);
    let mut resumed = subscribe(&c, &format!("Last-Event-ID: {id1}\r\n"));
    let (id, event, _) = sse(&resumed.read_event());
    assert_eq!((id.as_str(), event.as_str()), (id2.as_str(), "location"));
    let poll = c.api().get(&format!("/events/poll?since={id1}&timeout=0"));
    assert_like(
        &poll.body,
        &format!(
            r#"{{"events":[{{"id":"{id2}","event":"location","data":{{"mac":"{}","lat":10.5,"lon":20.25,"at":"<TIME>"}}}}],"next":"{id2}","reset":false}}"#,
            upper(&mac(61))
        ),
    );
    // An id from before what the stream holds: start over.
    let mut lost = subscribe(&c, "Last-Event-ID: 1-0\r\n");
    assert_eq!(lost.read_event(), format!("event: reset\ndata: {{\"last_event_id\":null,\"latest\":\"{id2}\"}}\n\n"));
    assert_eq!(sse(&lost.read_event()).0, id1);
    assert_eq!(sse(&lost.read_event()).0, id2);
    // Events keep flowing to the resumed stream from the first gateway.
    drop(collar);
    let (id3, event, data) = sse(&resumed.read_event());
    assert_stream_id(&id3);
    assert_eq!(event, "disconnected");
    assert!(data.contains(r#""reason":"peer-closed""#), "{data}");
}

#[test]
fn a_stream_trimmed_past_what_a_gateway_saw_while_cut_off_makes_its_event_clients_start_over() {
    let Some(redis) =
        RedisServer::start("a_stream_trimmed_past_what_a_gateway_saw_while_cut_off_makes_its_event_clients_start_over")
    else {
        return;
    };
    let (a, id_a) = gateway_and_id(&redis, config());
    let mut stream = subscribe(&a, "");
    let _collar = online(&a, &mac(71));
    let (seen, _, _) = sse(&stream.read_event());

    // Cut the gateway's links; before it is back (its first retry waits
    // 100 ms), the stream gets an entry it never sees and is trimmed.
    let clients = redis.text(&["CLIENT", "LIST"]).unwrap();
    for line in clients.lines().filter(|l| l.contains(&format!("name=tether:{id_a}"))) {
        let id = line.split_whitespace().find_map(|f| f.strip_prefix("id=")).unwrap();
        redis.cmd(&["CLIENT", "KILL", "ID", id]);
    }
    for _ in 0..2 {
        let entry = ["mac", "02:00:00:00:00:09", "event", "location", "at", "0", "lat", "1", "lon", "2"];
        redis.cmd(&[&["XADD", "tether:events", "*"][..], &entry[..]].concat());
    }
    redis.cmd(&["XTRIM", "tether:events", "MAXLEN", "1"]);
    a.expect_log("event clients start over");
    stream.expect_eof();
    let mut again = subscribe(&a, &format!("Last-Event-ID: {seen}\r\n"));
    let reset = again.read_event();
    assert!(reset.starts_with("event: reset\ndata: {\"last_event_id\":null,\"latest\":"), "{reset}");
    let poll = a.api().get(&format!("/events/poll?since={seen}&timeout=0"));
    assert!(poll.body.ends_with(r#""reset":true}"#), "{}", poll.body);
}

#[test]
fn a_collar_claimed_elsewhere_while_its_gateway_was_cut_off_stays_with_the_newer_claim() {
    let Some(redis) =
        RedisServer::start("a_collar_claimed_elsewhere_while_its_gateway_was_cut_off_stays_with_the_newer_claim")
    else {
        return;
    };
    let (a, id_a) = gateway_and_id(&redis, config());
    let b = gateway(&redis);
    let (moved, stays) = (mac(81), mac(82));
    let mut old = online(&a, &moved);
    let mut kept = online(&a, &stays);

    // A is cut off (its links killed; it redials after 100 ms). Before it
    // is back, the collar reconnects to B: B's claim is newer, and A never
    // hears of it (its channel was down).
    let clients = redis.text(&["CLIENT", "LIST"]).unwrap();
    for line in clients.lines().filter(|l| l.contains(&format!("name=tether:{id_a}"))) {
        let id = line.split_whitespace().find_map(|f| f.strip_prefix("id=")).unwrap();
        redis.cmd(&["CLIENT", "KILL", "ID", id]);
    }
    let mut new = online(&b, &moved);
    // A's claims again on reconnect: the one still its own is kept, the
    // one B took is lost, and A closes its stale connection.
    a.expect_log("again: claiming every local collar");
    old.expect(b"BYE replaced\n");
    old.expect_eof();
    new.send(b"PING\n");
    new.expect(b"PONG\n");
    kept.send(b"PING\n");
    kept.expect(b"PONG\n");
    let owner = |m: &str| redis.text(&["HGET", &format!("tether:dev:{}", upper(m)), "gw"]).unwrap();
    assert_ne!(owner(&moved), id_a);
    assert_eq!(owner(&stays), id_a);
    assert!(a.metrics().contains("tether_redis_lost_to_remote_total 1\n"));
}

#[test]
fn a_gateway_whose_liveness_key_expired_claims_its_collars_again() {
    let Some(redis) = RedisServer::start("a_gateway_whose_liveness_key_expired_claims_its_collars_again") else {
        return;
    };
    let (a, id_a) = gateway_and_id(&redis, config());
    let _collar = online(&a, &mac(91));
    // As if A had been too slow to refresh its key for a while: the key is
    // gone, and a sweep takes A's collar off the directory (at once, in one
    // transaction, before A refreshes its key).
    let key = format!("tether:gw:{id_a}:alive");
    let swept = redis.transaction(&[&["DEL", &key], &["FCALL", "tether_v1_sweep", "0"]]);
    assert_eq!(swept.items()[1].items().len(), 1, "{swept:?}");
    // A's next refresh finds its key gone, and A claims its collars again.
    a.expect_log("liveness key had expired: claiming every local collar again");
    a.expect_log(&format!("{}: claimed with epoch", upper(&mac(91))));
    assert_eq!(redis.int(&["ZCARD", "tether:devices"]), 1);
    assert_eq!(redis.text(&["HGET", &format!("tether:dev:{}", upper(&mac(91))), "gw"]).as_deref(), Some(id_a.as_str()));
    assert!(a.metrics().contains("tether_redis_liveness_expired_total 1\n"));
}

#[test]
fn a_mac_fought_over_across_gateways_is_quarantined_fleet_wide() {
    let Some(redis) = RedisServer::start("a_mac_fought_over_across_gateways_is_quarantined_fleet_wide") else {
        return;
    };
    let guarded = || Config {
        flap_limit: 2,
        flap_window: Duration::from_secs(60),
        flap_quarantine: Duration::from_secs(60),
        ..config()
    };
    let (a, b) = (gateway_with(&redis, guarded()), gateway_with(&redis, guarded()));
    let m = mac(101);
    let mut events = subscribe(&b, "");
    // Two collars with one MAC, on two gateways, each taking it back in
    // turn: no gateway sees more than two takeovers, the fleet sees three.
    let mut held = Vec::new();
    for (i, gateway) in [&a, &b, &a, &b].into_iter().enumerate() {
        held.push(online(gateway, &m));
        if i > 0 {
            held[i - 1].expect(b"BYE replaced\n");
        }
    }
    let flapping = loop {
        let (_, event, data) = sse(&events.read_event());
        if event == "flapping" {
            break data;
        }
    };
    assert!(flapping.contains(&format!(r#""mac":"{}","takeovers":3,"until":""#, upper(&m))), "{flapping}");
    // The winner of the last takeover stays.
    let winner = held.last_mut().unwrap();
    winner.send(b"PING\n");
    winner.expect(b"PONG\n");
    // On B, which saw the quarantine start, the next IDENTIFY is refused at
    // once; on A, the claim is refused by Redis (after A's OK), and A
    // refuses at once from then on.
    let mut late = b.connect();
    late.send(format!("IDENTIFY:{m}\n").as_bytes());
    assert_eq!(late.read_to_eof(), b"ERR flapping\nBYE flapping\n");
    let mut late = a.connect();
    late.send(format!("IDENTIFY:{m}\n").as_bytes());
    assert_eq!(late.read_to_eof(), b"OK\nBYE flapping\n");
    let mut late = a.connect();
    late.send(format!("IDENTIFY:{m}\n").as_bytes());
    assert_eq!(late.read_to_eof(), b"ERR flapping\nBYE flapping\n");
    assert!(redis.int(&["PTTL", &format!("tether:quarantine:{}", upper(&m))]) > 50_000);
    assert!(b.metrics().contains("tether_flap_quarantines_total 1\n"));
    assert!(a.metrics().contains("tether_flap_refusals_total 2\n"));
}

#[test]
fn a_collar_that_leaves_while_its_gateway_is_cut_off_leaves_the_directory_when_it_is_back() {
    let Some(redis) =
        RedisServer::start("a_collar_that_leaves_while_its_gateway_is_cut_off_leaves_the_directory_when_it_is_back")
    else {
        return;
    };
    let (a, id_a) = gateway_and_id(&redis, config());
    let gone = online(&a, &mac(111));
    let _stays = online(&a, &mac(112));
    // A is cut off; Redis keeps its data. The collar leaves meanwhile:
    // A cannot release its entry then.
    let clients = redis.text(&["CLIENT", "LIST"]).unwrap();
    for line in clients.lines().filter(|l| l.contains(&format!("name=tether:{id_a}"))) {
        let id = line.split_whitespace().find_map(|f| f.strip_prefix("id=")).unwrap();
        redis.cmd(&["CLIENT", "KILL", "ID", id]);
    }
    drop(gone);
    a.expect_log(&format!("{} offline", upper(&mac(111))));
    // Back: A compares the directory with what it holds and lets go.
    a.expect_log("again: claiming every local collar");
    a.expect_log("released 1 directory entries of collars that left while the links were down");
    let deadline = Instant::now() + common::TIMEOUT;
    while redis.int(&["ZCARD", "tether:devices"]) != 1 {
        assert!(Instant::now() < deadline, "the entry stayed");
    }
    assert_eq!(redis.int(&["EXISTS", &format!("tether:dev:{}", upper(&mac(111)))]), 0);
    assert_eq!(redis.int(&["EXISTS", &format!("tether:dev:{}", upper(&mac(112)))]), 1);
}

#[test]
fn a_location_query_from_another_gateway_that_is_never_answered_does_not_hold_the_collar() {
    let Some(redis) =
        RedisServer::start("a_location_query_from_another_gateway_that_is_never_answered_does_not_hold_the_collar")
    else {
        return;
    };
    // The owner gives other gateways' queries up after --max-wait (1 s here).
    let (a, c) = (gateway(&redis), gateway_with(&redis, Config { max_wait: Duration::from_secs(1), ..config() }));
    let m = mac(121);
    let mut collar = online(&c, &m);
    let path = format!("/devices/{}/location?timeout=300ms", upper(&m));
    let reply = a.api().get(&path);
    assert_eq!(reply.status, 504, "{}", reply.body);
    collar.expect(b"location\n");
    // The collar never answered that one. Once C gave the query up, the next
    // one (from anywhere) asks the collar again instead of waiting on the
    // first.
    c.expect_log("given up");
    let api = a.api();
    let later = format!("/devices/{}/location?timeout=5s", upper(&m));
    let query = thread::spawn(move || api.get(&later));
    collar.expect_within(b"location\n", Duration::from_secs(3));
    collar.send(b"LOCATION:3,4\n");
    let reply = query.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}
