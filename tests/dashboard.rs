//! The dashboard (`GET /`) and `GET /stats`.
//!
//! The files as HTTP serves them (types, caching, 304s, the page's policy)
//! and `/stats` against a running gateway need no browser. The rest runs
//! the page in headless Chromium ([`Browser`]) against a real gateway and
//! checks what an operator would see: a collar's row appearing within 2 s,
//! a `LOCATION` line moving its point and showing in the feed, a command
//! and a location query sent from the page reaching the collar, the page
//! reconnecting when the gateway restarts, the token prompt, the keyboard,
//! and the layout at 360 px and on a desktop (screenshots under
//! `target/`; `docs/dashboard.png` is one of them).

mod common;

use std::time::Duration;

use common::{Browser, Client, Gateway, HttpClient, config, mac};
use serde_json::Value;
use tether::Config;
use tether::http::dashboard::Asset;

const MAC: &str = "CE:96:C2:78:27:FC";

/// Opens the dashboard of `gateway` and waits until it is live: the event
/// stream open and the first page of collars shown.
fn open_dashboard(browser: &Browser, gateway: &Gateway) {
    browser.goto(&format!("http://{}/", gateway.http));
    live(browser);
}

fn live(browser: &Browser) {
    browser.wait_for("document.getElementById('status').dataset.state === 'live'");
    browser.wait_for("document.getElementById('devices-caption').textContent.includes('online')");
}

fn row(mac: &str) -> String {
    format!("#devices tr[data-mac=\"{mac}\"]")
}

fn exists(selector: &str) -> String {
    format!("document.querySelector('{}') !== null", selector.replace('\'', "\\'"))
}

#[test]
fn the_files_are_served_with_their_type_and_revalidated_by_etag() {
    let gateway = Gateway::start(Config { api_token: Some("s3cret".into()), ..config() });
    for (path, asset) in [
        ("/", Asset::Page),
        ("/dashboard/dashboard.js", Asset::Script),
        ("/dashboard/dashboard.css", Asset::Style),
        ("/dashboard/icon.svg", Asset::Icon),
    ] {
        // Public even with a token: the page holds no data.
        let mut client = HttpClient::connect(gateway.http);
        let response = client.get(path);
        assert_eq!(response.status, 200, "{}", response.raw());
        assert_eq!(response.header("Content-Type"), Some(asset.content_type()));
        assert_eq!(response.header("Cache-Control"), Some("no-cache"));
        assert_eq!(response.header("ETag"), Some(asset.etag()));
        assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(response.body, asset.bytes());
        // A copy that is current: 304, no body, the connection kept.
        client.send(format!("GET {path} HTTP/1.1\r\nIf-None-Match: {}\r\n\r\n", asset.etag()).as_bytes());
        client.expect(
            format!(
                "HTTP/1.1 304 Not Modified\r\nAccess-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\n\
                 ETag: {}\r\nX-Content-Type-Options: nosniff\r\n{}\r\n",
                asset.etag(),
                if asset == Asset::Page {
                    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
                     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                     frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\n"
                } else {
                    ""
                }
            )
            .as_bytes(),
        );
        let response = client.get(path);
        assert_eq!((response.status, response.body.len()), (200, asset.bytes().len()), "still served after a 304");
    }
    let mut client = HttpClient::connect(gateway.http);
    assert_eq!(client.get("/dashboard/nope.js").status, 404);
    assert_eq!(client.get("/stats").status, 401, "the data is not public");
    gateway.stop_drained();
}

#[test]
fn stats_gives_the_figures_of_metrics() {
    let gateway = Gateway::start(Config { api_token: Some("s3cret".into()), ..config() });
    let _collar = gateway.device(MAC);
    let api = gateway.api();
    let reply = api.get("/stats?access_token=s3cret");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.header("Cache-Control"), Some("no-store"));
    let stats: Value = serde_json::from_str(&reply.body).unwrap();
    // The order on the wire is pinned by the unit test (src/stats_json.rs);
    // here, that every field is there and nothing else.
    let keys: Vec<&str> = stats.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "uptime_seconds",
        "start_time_seconds",
        "connections",
        "devices_online",
        "sse_subscribers",
        "long_polls",
        "events_held",
        "event_position",
        "event_frame_bytes",
        "events_published",
        "events_delivered",
        "accepted",
        "closed",
        "rejected",
        "accept_errors",
        "lines_received",
        "lines_sent",
        "bytes_received",
        "bytes_sent",
        "socket_reads",
        "socket_writes",
        "takeovers",
        "device_auth",
        "flap_quarantines",
        "flap_refusals",
        "tls_handshakes",
        "heartbeat_pings",
        "heartbeat_timeouts",
        "http_responses",
        "loop",
        "budget_spent",
        "fd_limit",
        "max_connections",
        "max_http_connections",
        "pooled_buffers",
        "unsent_bytes",
        "resident_memory_bytes",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(stats["devices_online"], 1);
    assert_eq!(stats["connections"]["device"], 1);
    assert_eq!(stats["events_published"], 1, "the collar's connected event");
    assert_eq!(stats["lines_received"]["identify"], 1);
    let buckets = stats["loop"]["iteration_seconds"]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 11);
    assert_eq!(buckets[10]["le"], Value::Null);
    assert_eq!(buckets[10]["count"], stats["loop"]["iteration_seconds"]["count"]);
    assert!(stats["resident_memory_bytes"].as_u64().unwrap() > 0);
    let bearer = api.call("GET", "/stats", &[("Authorization", "Bearer s3cret")], None);
    assert_eq!(bearer.status, 200);
    gateway.stop_drained();
}

#[test]
fn a_collar_that_connects_shows_within_two_seconds() {
    let Some(browser) = Browser::open("a_collar_that_connects_shows_within_two_seconds", 1280, 900) else { return };
    let gateway = Gateway::start(config());
    open_dashboard(&browser, &gateway);
    assert_eq!(browser.text("#devices tbody").unwrap(), "No collar online.");
    let collar = gateway.device(MAC);
    browser.wait_for_within(&exists(&row(MAC)), Duration::from_secs(2));
    let peer = collar.stream.local_addr().unwrap().to_string();
    assert_eq!(browser.text(&format!("{} .peer", row(MAC))).unwrap(), peer);
    assert_eq!(browser.text(&format!("{} .location", row(MAC))).unwrap(), "–");
    browser.wait_for("document.getElementById('f-online').textContent === '1'");
    browser.wait_for(&exists(&format!("#feed li[data-kind=connected][data-mac=\"{MAC}\"]")));
    let caption = browser.text("#devices-caption").unwrap();
    assert_eq!(caption, "1 online; showing 1–1");
    // It leaves: its row goes, the feed says why.
    drop(collar);
    browser.wait_for(&format!("!({})", exists(&row(MAC))));
    browser.wait_for(&exists(&format!("#feed li[data-kind=disconnected][data-mac=\"{MAC}\"]")));
    assert!(browser.text("#feed li[data-kind=disconnected]").unwrap().ends_with("disconnectedpeer-closed"));
    gateway.stop_drained();
}

/// The plotted point of `mac`: (lat, lon, x, y) from the map's list.
fn point(browser: &Browser, mac: &str) -> (f64, f64, f64, f64) {
    let value = browser.eval_with(
        "const li = document.querySelector(`#map-points li[data-mac=\"${arguments[0]}\"]`);
         return li && [li.dataset.lat, li.dataset.lon, li.dataset.x, li.dataset.y].map(Number);",
        vec![Value::from(mac)],
    );
    let n = |i: usize| value[i].as_f64().unwrap();
    (n(0), n(1), n(2), n(3))
}

/// The colour of the map's canvas at CSS pixel (x, y).
fn map_pixel(browser: &Browser, x: f64, y: f64) -> Vec<u64> {
    let value = browser.eval_with(
        "const c = document.getElementById('map'); const r = c.width / c.clientWidth;
         return Array.from(c.getContext('2d').getImageData(Math.round(arguments[0] * r), Math.round(arguments[1] * r), 1, 1).data);",
        vec![Value::from(x), Value::from(y)],
    );
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

#[test]
fn a_location_line_moves_the_point_and_shows_in_the_feed() {
    let Some(browser) = Browser::open("a_location_line_moves_the_point_and_shows_in_the_feed", 1280, 900) else {
        return;
    };
    let gateway = Gateway::start(config());
    let mut collar = gateway.device(MAC);
    // Two collars at the corners hold the map's view (it fits the collars)
    // still while this one moves between them.
    let mut anchors = [gateway.device("02:00:00:00:00:01"), gateway.device("02:00:00:00:00:02")];
    anchors[0].send(b"LOCATION:48.8,2.2\n");
    anchors[1].send(b"LOCATION:49,2.6\n");
    open_dashboard(&browser, &gateway);
    browser.wait_for("document.querySelectorAll('#map-points li').length === 2");
    let point_of = |lat: &str| exists(&format!("#map-points li[data-mac=\"{MAC}\"][data-lat=\"{lat}\"]"));

    collar.send(b"LOCATION:48.8566,2.3522\n");
    browser.wait_for(&point_of("48.8566"));
    let (_, lon, x1, y1) = point(&browser, MAC);
    assert_eq!(lon, 2.3522);
    // The point is drawn where the list says: the collars' colour there.
    assert_eq!(map_pixel(&browser, x1, y1), [0x1f, 0x6f, 0x5c, 255]);
    browser.wait_for(&exists(&format!("#feed li[data-kind=location][data-mac=\"{MAC}\"]")));
    assert_eq!(browser.text("#feed li[data-kind=location] span:last-child").unwrap(), "48.85660°, 2.35220°");
    browser.wait_for(&format!(
        "document.querySelector('{} .location').textContent === '48.85660°, 2.35220°'",
        row(MAC).replace('\'', "\\'")
    ));

    collar.send(b"LOCATION:48.9000,2.5000\n");
    browser.wait_for(&point_of("48.9"));
    let (lat, lon, x2, y2) = point(&browser, MAC);
    assert_eq!((lat, lon), (48.9, 2.5));
    assert!(x2 > x1 && y2 < y1, "east and north: ({x1}, {y1}) -> ({x2}, {y2})");
    assert_eq!(map_pixel(&browser, x2, y2), [0x1f, 0x6f, 0x5c, 255]);
    assert_eq!(browser.text("#feed li[data-kind=location] span:last-child").unwrap(), "48.90000°, 2.50000°");
    let items = browser.eval("return document.querySelectorAll('#feed li[data-kind=location]').length;");
    assert_eq!(items, 4, "the anchors' fixes (sent before the page opened) and both of this one's");
    gateway.stop_drained();
}

/// Opens the detail of `mac` by clicking its row's button.
fn open_detail(browser: &Browser, mac: &str) {
    browser.wait_for(&exists(&row(mac)));
    browser.click(&format!("{} button", row(mac)));
    browser.wait_for("document.getElementById('detail').open");
    browser.wait_for(&format!("document.getElementById('d-mac').textContent === '{mac}'"));
}

#[test]
fn a_command_sent_from_the_page_reaches_the_collar() {
    let Some(browser) = Browser::open("a_command_sent_from_the_page_reaches_the_collar", 1280, 900) else { return };
    let gateway = Gateway::start(config());
    let mut collar = gateway.device(MAC);
    open_dashboard(&browser, &gateway);
    open_detail(&browser, MAC);
    browser.type_into("#d-line", "SET-INTERVAL 30");
    browser.click("#d-command button");
    collar.expect(b"SET-INTERVAL 30\n");
    browser.wait_for("document.getElementById('d-command-result').textContent === 'sent SET-INTERVAL 30 (16 B)'");
    // The collar's own events are listed in its detail.
    browser.wait_for("document.querySelector('#d-events li[data-kind=connected]') !== null");
    collar.send(b"LOCATION:1.5,2.5\n");
    browser.wait_for("document.querySelector('#d-events li[data-kind=location]') !== null");
    assert_eq!(browser.text("#d-events li span:last-child").unwrap(), "1.50000°, 2.50000°");
    // A collar that went away: the page says what the API said.
    drop(collar);
    browser.wait_for(&exists(&format!("#feed li[data-kind=disconnected][data-mac=\"{MAC}\"]")));
    browser.type_into("#d-line", "REBOOT");
    browser.click("#d-command button");
    browser.wait_for("document.getElementById('d-command-result').textContent === '404: device not online'");
    gateway.stop_drained();
}

#[test]
fn a_location_query_from_the_page_gets_the_collars_answer() {
    let Some(browser) = Browser::open("a_location_query_from_the_page_gets_the_collars_answer", 1280, 900) else {
        return;
    };
    let gateway = Gateway::start(config());
    let mut collar = gateway.device(MAC);
    open_dashboard(&browser, &gateway);
    open_detail(&browser, MAC);
    browser.type_into("#d-timeout", "4");
    browser.click("#d-locate button");
    collar.expect(b"location\n");
    // While the collar has not answered, the page shows the wait and its timeout.
    let waiting = browser.text("#d-locate-result").unwrap();
    assert!(waiting.starts_with("waiting for the collar: ") && waiting.ends_with(" s of 4.0 s"), "{waiting}");
    collar.send(b"LOCATION:-33.8688,151.2093\n");
    let answer = browser.wait_for(
        "(t => t.startsWith('-33.86880°, 151.20930° at ') && t)(document.getElementById('d-locate-result').textContent)",
    );
    assert!(answer.as_str().unwrap().contains("(answered in "), "{answer}");
    assert_eq!(browser.text("#d-location").unwrap().split(" at ").next(), Some("-33.86880°, 151.20930°"));
    // One that does not answer: the gateway's 504 after the timeout shown.
    browser.type_into("#d-timeout", "0.3");
    browser.click("#d-locate button");
    collar.expect(b"location\n");
    browser.wait_for(
        "document.getElementById('d-locate-result').textContent.startsWith('504: the device did not answer in time (after ')",
    );
    gateway.stop_drained();
}

#[test]
fn the_page_reconnects_when_the_gateway_restarts() {
    let Some(browser) = Browser::open("the_page_reconnects_when_the_gateway_restarts", 1280, 900) else { return };
    let first = Gateway::start(config());
    let http = first.http;
    let _old = first.device(MAC);
    open_dashboard(&browser, &first);
    browser.wait_for(&exists(&row(MAC)));
    first.stop();
    browser.wait_for("document.getElementById('status').dataset.state === 'reconnecting'");

    // The same address, a new gateway: the stream comes back by itself,
    // and its reset (the old ids mean nothing here) reloads the table.
    let second = Gateway::start(Config { http_listen: http, ..config() });
    let newcomer = "02:00:00:00:00:02";
    let _new = second.device(newcomer);
    browser.wait_for_within("document.getElementById('status').dataset.state === 'live'", Duration::from_secs(20));
    browser.wait_for(&exists(&row(newcomer)));
    browser.wait_for(&format!("!({})", exists(&row(MAC))));
    browser.wait_for(&exists("#feed li[data-kind=reset]"));
    second.stop_drained();
}

#[test]
fn with_a_token_the_page_asks_for_it_and_shows_no_data_without_it() {
    let Some(browser) = Browser::open("with_a_token_the_page_asks_for_it_and_shows_no_data_without_it", 1280, 900)
    else {
        return;
    };
    let gateway = Gateway::start(Config { api_token: Some("s3cret".into()), ..config() });
    let _collar = gateway.device(MAC);
    browser.goto(&format!("http://{}/", gateway.http));
    browser.wait_for("document.getElementById('status').dataset.state === 'token'");
    assert!(browser.visible("#login"));
    assert!(!browser.visible("#main"));
    assert_eq!(browser.text("#devices tbody").unwrap(), "", "no collar shown");
    assert_eq!(browser.text("#f-online").unwrap(), "–");

    browser.type_into("#token", "wrong");
    browser.click("#login button");
    browser.wait_for("document.getElementById('login-error').textContent === 'The gateway refused that token.'");
    assert!(!browser.visible("#main"));

    browser.type_into("#token", "s3cret");
    browser.click("#login button");
    live(&browser);
    assert!(!browser.visible("#login"));
    browser.wait_for(&exists(&row(MAC)));
    // Kept for the tab: a reload does not ask again.
    browser.goto(&format!("http://{}/", gateway.http));
    live(&browser);
    assert!(!browser.visible("#login"));
    gateway.stop_drained();
}

#[test]
fn the_keyboard_opens_and_closes_a_collar() {
    let Some(browser) = Browser::open("the_keyboard_opens_and_closes_a_collar", 1280, 900) else { return };
    let gateway = Gateway::start(config());
    let _collar = gateway.device(MAC);
    open_dashboard(&browser, &gateway);
    browser.wait_for(&exists(&row(MAC)));
    browser
        .eval_with("document.querySelector(arguments[0]).focus();", vec![Value::from(format!("{} button", row(MAC)))]);
    browser.keys("\u{E007}"); // Enter
    browser.wait_for("document.getElementById('detail').open");
    assert_eq!(browser.eval("return document.activeElement.id;"), "d-line");
    browser.keys("\u{E00C}"); // Escape
    browser.wait_for("!document.getElementById('detail').open");
    let focused = browser
        .eval("return document.activeElement.closest('tr') && document.activeElement.closest('tr').dataset.mac;");
    assert_eq!(focused, MAC, "the focus goes back to the row");
    gateway.stop_drained();
}

/// The MACs in the table, in order.
fn rows(browser: &Browser) -> Vec<String> {
    let value =
        browser.eval("return Array.from(document.querySelectorAll('#devices tr[data-mac]')).map(r => r.dataset.mac);");
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn the_table_pages_on_the_cursor_and_searches_by_mac() {
    let Some(browser) = Browser::open("the_table_pages_on_the_cursor_and_searches_by_mac", 1280, 900) else { return };
    let gateway = Gateway::start(config());
    let macs: Vec<String> = (1..=25).map(mac).collect();
    let _collars: Vec<Client> = macs.iter().map(|m| gateway.device(m)).collect();
    open_dashboard(&browser, &gateway);
    browser.wait_for("document.getElementById('devices-caption').textContent === '25 online; showing 1–20'");
    assert_eq!(rows(&browser), macs[..20]);
    assert_eq!(browser.eval("return document.getElementById('page-prev').disabled;"), true);

    browser.click("#page-next");
    browser.wait_for("document.getElementById('devices-caption').textContent === '25 online; showing 21–25'");
    assert_eq!(rows(&browser), macs[20..]);
    assert_eq!(browser.text("#page-info").unwrap(), "page 2");
    assert_eq!(browser.eval("return document.getElementById('page-next').disabled;"), true, "no empty third page");

    browser.click("#page-prev");
    browser.wait_for("document.getElementById('devices-caption').textContent === '25 online; showing 1–20'");
    assert_eq!(rows(&browser), macs[..20]);

    // The start of a MAC, in another spelling: 02:00:00:00:00:10 to :19.
    browser.type_into("#mac-search", "02-00-00-00-00-1");
    browser.click("#search button");
    browser.wait_for(
        "document.getElementById('devices-caption').textContent === '25 online; showing MACs starting 02:00:00:00:00:1'",
    );
    assert_eq!(rows(&browser), macs[15..25]);
    // One MAC exactly.
    browser.type_into("#mac-search", "02:00:00:00:00:0a");
    browser.click("#search button");
    browser.wait_for("document.querySelectorAll('#devices tr[data-mac]').length === 1");
    assert_eq!(rows(&browser), [macs[9].clone()]);
    // Not a MAC: the field says so, and the table stays.
    browser.type_into("#mac-search", "collar 7");
    browser.click("#search button");
    assert_eq!(
        browser.eval("return document.getElementById('mac-search').validationMessage;"),
        "A MAC is hex digits, with or without : or -"
    );
    assert_eq!(rows(&browser), [macs[9].clone()]);
    // None: an empty search lists them all again.
    browser.type_into("#mac-search", "FF");
    browser.click("#search button");
    browser.wait_for("document.querySelector('#devices tr.empty') !== null");
    assert_eq!(browser.text("#devices tbody").unwrap(), "No collar online with a MAC starting FF.");
    browser.eval("document.getElementById('mac-search').value = '';");
    browser.click("#search button");
    browser.wait_for("document.getElementById('devices-caption').textContent === '25 online; showing 1–20'");
    gateway.stop_drained();
}

/// A few collars with fixes, for the pictures.
fn fleet(gateway: &Gateway) -> Vec<Client> {
    let fixes = [
        (48.8566, 2.3522),
        (48.8606, 2.3376),
        (48.8530, 2.3499),
        (48.8738, 2.2950),
        (48.8462, 2.3372),
        (48.8867, 2.3431),
        (48.8339, 2.3265),
    ];
    fixes
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| {
            let mut collar = gateway.device(&format!("CE:96:C2:78:27:{:02X}", 0x10 + i));
            collar.send(format!("LOCATION:{lat},{lon}\n").as_bytes());
            collar
        })
        .collect()
}

#[test]
fn readable_at_360_px_and_on_a_desktop() {
    let Some(mut browser) = Browser::open("readable_at_360_px_and_on_a_desktop", 1440, 1000) else { return };
    let gateway = Gateway::start(config());
    let collars = fleet(&gateway);
    open_dashboard(&browser, &gateway);
    browser.wait_for(&format!("document.querySelectorAll('#map-points li').length === {}", collars.len()));
    // Rates and percentiles need two samples of /stats.
    browser.wait_for("document.getElementById('f-p99').textContent.startsWith('≤')");
    browser.wait_for(&format!("document.querySelectorAll('#feed li').length === {}", 2 * collars.len()));
    let desktop = browser.screenshot("dashboard-desktop");
    println!("screenshot: {}", desktop.display());
    let overflow = "return document.documentElement.scrollWidth - window.innerWidth;";
    assert_eq!(browser.eval(overflow), 0, "no horizontal scrolling on a desktop");

    browser.set_size(360, 800);
    browser.wait_for("window.innerWidth === 360");
    assert_eq!(browser.eval(overflow), 0, "no horizontal scrolling at 360 px (wide tables scroll in their box)");
    let phone = browser.screenshot("dashboard-360");
    println!("screenshot: {}", phone.display());
    // Each collar is a card there, with every column's name.
    let card = browser.eval(&format!(
        "return getComputedStyle(document.querySelector('{} .peer'), '::before').content;",
        row("CE:96:C2:78:27:10")
    ));
    assert_eq!(card, "\"peer\"");
    browser.eval("document.getElementById('collars').scrollIntoView();");
    let collars_shot = browser.screenshot("dashboard-360-collars");
    println!("screenshot: {}", collars_shot.display());

    // Numbers do not move the layout: each figure's box keeps its size
    // whatever the number in it.
    let boxes =
        "return Array.from(document.querySelectorAll('.figures dd')).map(e => e.getBoundingClientRect().width);";
    let before = browser.eval(boxes);
    browser.eval("document.getElementById('f-online').textContent = '1,000,000';");
    assert_eq!(browser.eval(boxes), before);
    // Numbers carry their units (the page's own formatting functions).
    let formatted = browser.eval(
        "return [fmtSeconds(0.00001), fmtSeconds(0.0005), fmtSeconds(0.0012), fmtSeconds(2), fmtRate(12.345),
                 fmtPercent(3.25), fmtBytes(11.5 * 1048576), fmtBytes(512), fmtCount(1234567), fmtDuration(3725)];",
    );
    assert_eq!(
        formatted,
        serde_json::json!([
            "10 µs",
            "500 µs",
            "1.2 ms",
            "2 s",
            "12.3 /s",
            "3.3 %",
            "11.5 MiB",
            "512 B",
            "1,234,567",
            "1 h 2 min"
        ])
    );
    drop(collars);
    gateway.stop_drained();
}
