//! TLS on the collar port and the API (issue 10), over real TLS with
//! `rcgen` certificates: the device protocol end to end inside TLS beside
//! the plain listener, mutual TLS (matching, mismatching and missing
//! client certificates), and what a TLS port does with plain text, a
//! truncated handshake and a handshake that never finishes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Client, Gateway, Pki, TlsClient, closed, config};
use tether::Config;
use tether::close::CloseReason;

/// A gateway config with the TLS collar listener on a free port.
fn tls_config(pki: &Pki) -> Config {
    Config {
        device_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        device_tls_cert: Some(pki.cert()),
        device_tls_key: Some(pki.key()),
        ..config()
    }
}

/// Reads until the peer closes; what it sent before.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("not closed: {e} (after {got:?})"),
    }
}

#[test]
fn the_device_protocol_runs_inside_tls_beside_the_plain_listener() {
    let pki = Pki::new("e2e");
    let gw = Gateway::start(tls_config(&pki));
    let mut collar = TlsClient::connect(gw.tls.unwrap(), pki.client_config(None)).unwrap();
    collar.send(b"PING\n");
    collar.expect(b"PONG\n");
    collar.send(b"IDENTIFY:ce-96-c2-78-27-fc\nPING\nLOCATION:");
    collar.expect(b"OK\nPONG\n");
    collar.send(b"48.85,2.35\n");
    // The plain listener still serves, side by side.
    let mut plain = gw.device("02:00:00:00:00:01");
    plain.send(b"PING\n");
    plain.expect(b"PONG\n");
    // The collar on TLS is online like any other: the API sends it a command.
    let reply = gw.api().post("/devices/CE:96:C2:78:27:FC/commands", "beep 3");
    assert_eq!(reply.status, 202, "{}", reply.body);
    collar.expect(b"beep 3\n");
    // A line too long inside TLS is still one: BYE, then close_notify.
    collar.send(&vec![b'x'; 2000]);
    collar.expect(b"BYE line-too-long\n");
    collar.expect_close_notify();
    drop(plain);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::LineTooLong), 1);
    assert_eq!(stats.accepted, [2, 1]);
}

#[test]
fn plain_text_to_the_tls_port_is_closed_as_a_tls_error() {
    let pki = Pki::new("plain");
    let gw = Gateway::start(tls_config(&pki));
    let mut client = Client::connect(gw.tls.unwrap());
    client.send(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    let answer = read_to_close(&mut client.stream);
    // A TLS alert record (type 21), never a line in clear text.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    gw.expect_log("TLS from 127.0.0.1");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TlsError), 1);
}

#[test]
fn a_truncated_handshake_is_closed_as_a_tls_error() {
    let pki = Pki::new("truncated");
    let gw = Gateway::start(tls_config(&pki));
    // A ClientHello record header announcing 512 bytes, then the record
    // cut short and the write side closed.
    let mut stream = TcpStream::connect(gw.tls.unwrap()).unwrap();
    stream.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_close(&mut stream);
    gw.expect_log("the handshake was cut short");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TlsError), 1);
}

#[test]
fn a_handshake_that_never_finishes_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("stalled");
    let gw = Gateway::start(Config { handshake_timeout: Duration::from_millis(200), ..tls_config(&pki) });
    // Half a ClientHello, and then nothing.
    let mut stream = TcpStream::connect(gw.tls.unwrap()).unwrap();
    stream.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3]).unwrap();
    let answer = read_to_close(&mut stream);
    assert_eq!(answer, b"", "no BYE in clear text on a TLS port");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::HandshakeTimeout), 1);
}

#[test]
fn mutual_tls_admits_the_mac_the_certificate_names_without_a_challenge() {
    let pki = Pki::new("mtls-match");
    let keys = common::KeyFile::new("mtls-match", &[[7; 32]]);
    let collar = pki.issue("collar", "CE:96:C2:78:27:FC", &[]);
    let gw = Gateway::start(Config {
        device_tls_client_ca: Some(pki.ca()),
        device_key_file: Some(keys.keys.clone()),
        ..tls_config(&pki)
    });
    let mut client = TlsClient::connect(gw.tls.unwrap(), pki.client_config(Some(&collar))).unwrap();
    client.send(b"IDENTIFY:ce-96-c2-78-27-fc\n");
    client.expect(b"OK\n");
    client.send(b"PING\n");
    client.expect(b"PONG\n");
    // The plain listener still asks for the key.
    let mut plain = gw.connect();
    plain.send(b"IDENTIFY:02:00:00:00:00:01\n");
    plain.expect(b"CHALLENGE ");
}

#[test]
fn mutual_tls_refuses_an_identify_for_another_mac() {
    let pki = Pki::new("mtls-mismatch");
    let collar = pki.issue("collar", "CE:96:C2:78:27:FC", &[]);
    let gw = Gateway::start(Config { device_tls_client_ca: Some(pki.ca()), ..tls_config(&pki) });
    let mut client = TlsClient::connect(gw.tls.unwrap(), pki.client_config(Some(&collar))).unwrap();
    client.send(b"IDENTIFY:02:00:00:00:00:01\n");
    client.expect(b"ERR bad-mac\nBYE auth-failed\n");
    client.expect_close_notify();
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::AuthFailed), 1);
}

#[test]
fn mutual_tls_refuses_a_certificate_that_names_no_mac() {
    let pki = Pki::new("mtls-nomac");
    let collar = pki.issue("collar", "not a mac", &[]);
    let gw = Gateway::start(Config { device_tls_client_ca: Some(pki.ca()), ..tls_config(&pki) });
    let mut client = TlsClient::connect(gw.tls.unwrap(), pki.client_config(Some(&collar))).unwrap();
    client.send(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    client.expect(b"ERR bad-mac\nBYE auth-failed\n");
}

#[test]
fn mutual_tls_without_a_client_certificate_is_a_tls_error() {
    let pki = Pki::new("mtls-missing");
    let gw = Gateway::start(Config { device_tls_client_ca: Some(pki.ca()), ..tls_config(&pki) });
    // In TLS 1.3 the client finishes its side before the server checks its
    // (missing) certificate: the refusal comes as an alert on the first read.
    let outcome = TlsClient::connect(gw.tls.unwrap(), pki.client_config(None)).and_then(|mut client| {
        client.tls.write_all(b"PING\n")?;
        let mut buf = [0; 16];
        client.tls.read(&mut buf)
    });
    let e = outcome.expect_err("a TLS alert");
    assert!(e.to_string().contains("CertificateRequired") || e.to_string().contains("certificate"), "{e}");
    gw.expect_log("TLS from 127.0.0.1");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TlsError), 1);
}

#[test]
fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new("mtls-ca");
    let other = Pki::new("mtls-other");
    let stranger = other.issue("collar", "CE:96:C2:78:27:FC", &[]);
    let gw = Gateway::start(Config { device_tls_client_ca: Some(pki.ca()), ..tls_config(&pki) });
    // Trusts the gateway's CA, presents a certificate of another one.
    let mut config = (*pki.client_config(None)).clone();
    config.client_auth_cert_resolver = other.client_config(Some(&stranger)).client_auth_cert_resolver.clone();
    let outcome = TlsClient::connect(gw.tls.unwrap(), std::sync::Arc::new(config)).and_then(|mut client| {
        client.tls.write_all(b"PING\n")?;
        let mut buf = [0; 16];
        client.tls.read(&mut buf)
    });
    outcome.expect_err("a TLS alert");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TlsError), 1);
}

/// A gateway config serving the API over HTTPS.
fn https_config(pki: &Pki) -> Config {
    Config { http_tls_cert: Some(pki.cert()), http_tls_key: Some(pki.key()), ..config() }
}

#[test]
fn the_api_answers_over_https() {
    let pki = Pki::new("https-health");
    let gw = Gateway::start(https_config(&pki));
    let _collar = gw.device("CE:96:C2:78:27:FC");
    let mut client = TlsClient::connect(gw.http, pki.client_config(None)).unwrap();
    // Two requests on one connection, the second closing it.
    client.send(b"GET /health HTTP/1.1\r\nHost: tether\r\n\r\n");
    let body = r#"{"status":"ok","uptime_s":<INT>,"devices_online":1,"connections":2}"#;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ";
    client.expect(head.as_bytes());
    let mut rest = Vec::new();
    let mut byte = [0];
    while !rest.ends_with(b"\r\n\r\n") {
        client.tls.read_exact(&mut byte).unwrap();
        rest.push(byte[0]);
    }
    let length: usize = String::from_utf8_lossy(&rest).split("\r\n").next().unwrap().parse().unwrap();
    let mut got = vec![0; length];
    client.tls.read_exact(&mut got).unwrap();
    common::assert_like(&String::from_utf8(got).unwrap(), body);
    client.send(b"GET /nope HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n");
    let body = r#"{"error":"no such endpoint"}"#;
    client.expect(common::json_response("404 Not Found", body, &[], true).as_bytes());
    client.expect_close_notify();
    // The plain protocol on the HTTPS port is a TLS error, not a 400.
    let mut plain = Client::connect(gw.http);
    plain.send(b"GET /health HTTP/1.1\r\n\r\n");
    let answer = read_to_close(&mut plain.stream);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let stats = gw.stop_drained();
    assert_eq!(stats.closed(tether::reactor::Kind::Http, CloseReason::TlsError), 1);
}

/// A response larger than a write budget, to a client that reads slowly
/// and asked for the connection to close: sealed a budget at a time, even
/// as the connection closes, and followed by the `close_notify`.
#[test]
fn a_large_https_response_before_a_close_arrives_whole() {
    let pki = Pki::new("https-large");
    let gw = Gateway::start(Config { budget_write: 4096, linger_timeout: common::TIMEOUT, ..https_config(&pki) });
    let stream = Client::connect_with_recv_buffer(gw.http, 4096).stream;
    let mut client = TlsClient::over(stream, pki.client_config(None)).unwrap();
    client.send(b"GET /dashboard/dashboard.js HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    client.tls.read_to_end(&mut response).expect("the whole response, then the gateway's close_notify");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Connection: close\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("a Content-Length");
    assert!(length > 4 * 4096, "a response of {length} bytes takes a few write budgets");
    assert_eq!(response.len() - split, length);
    drop(client);
    let stats = gw.stop_drained();
    assert!(stats.budget_spent[tether::reactor::Budget::WriteBytes as usize] > 0, "{:?}", stats.budget_spent);
}

#[test]
fn an_event_stream_runs_over_https() {
    let pki = Pki::new("https-sse");
    let gw = Gateway::start(https_config(&pki));
    let mut stream = TlsClient::connect(gw.http, pki.client_config(None)).unwrap();
    stream.send(b"GET /events HTTP/1.1\r\nHost: tether\r\n\r\n");
    stream.expect(common::STREAM_START.as_bytes());
    let mut collar = gw.device("CE:96:C2:78:27:FC");
    let peer = collar.stream.local_addr().unwrap();
    collar.send(b"LOCATION:48.5,2.25\n");
    let mut frames = String::new();
    let mut buf = [0; 4096];
    while frames.matches("\n\n").count() < 2 {
        let n = stream.tls.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {frames:?}");
        frames.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    common::assert_like(
        &frames,
        &format!(
            "id: 1\nevent: connected\ndata: {{\"mac\":\"CE:96:C2:78:27:FC\",\"peer\":\"{peer}\",\"at\":\"<TIME>\"}}\n\n\
             id: 2\nevent: location\ndata: {{\"mac\":\"CE:96:C2:78:27:FC\",\"lat\":48.5,\"lon\":2.25,\"at\":\"<TIME>\"}}\n\n"
        ),
    );
}

/// Limits keep their meaning inside TLS: a collar that sends PINGs and
/// never reads is closed as a slow consumer once more than `--max-output`
/// of plaintext is unsent, and when it reads at last it finds whole
/// `PONG` lines, its `BYE` and the `close_notify`.
#[test]
fn a_collar_that_does_not_read_is_closed_as_a_slow_consumer_inside_tls() {
    let pki = Pki::new("slow");
    // No deadline comes during the test: the flush alone must judge.
    let gw = Gateway::start(Config {
        max_output: 4096,
        linger_timeout: common::TIMEOUT,
        handshake_timeout: Duration::ZERO,
        heartbeat_interval: Duration::ZERO,
        ..tls_config(&pki)
    });
    let stream = Client::connect_with_recv_buffer(gw.tls.unwrap(), 4096).stream;
    let mut collar = TlsClient::over(stream, pki.client_config(None)).unwrap();
    collar.send(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    collar.tls.sock.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // rustls's stream reads when a write blocks; with a read timeout past
    // the test's, the collar takes nothing until the gateway has judged it
    // (a gateway that waits for the collar to read fails here).
    collar.tls.sock.set_read_timeout(Some(3 * common::TIMEOUT)).unwrap();
    let chunk = b"PING\n".repeat(1000);
    // Bounded: 8 MiB of PONGs is far more than the kernel's buffers hold.
    let mut sent = 0;
    while sent < 8 << 20 && collar.tls.write_all(&chunk).and_then(|()| collar.tls.flush()).is_ok() {
        sent += chunk.len();
    }
    gw.expect_log("closing: slow-consumer");
    let mut received = Vec::new();
    collar.tls.read_to_end(&mut received).expect("the gateway's close_notify");
    let bye = b"BYE slow-consumer\n";
    assert!(received.starts_with(b"OK\n") && received.ends_with(bye), "...{:?}", received.escape_ascii().to_string());
    let lines = &received[3..received.len() - bye.len()];
    assert!(lines.chunks(5).all(|line| line == b"PONG\n"), "a torn line");
    assert!(lines.len() / 5 < sent / 5, "{} PONGs for {} PINGs", lines.len() / 5, sent / 5);
    drop(collar);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::SlowConsumer), 1);
}

/// The address of the binary's TLS collar listener, from its banner.
fn tls_addr(gw: &common::Process) -> std::net::SocketAddr {
    let banner = gw.preamble.iter().find_map(|line| line.split("devices: TLS on ").nth(1)).expect("a TLS banner");
    banner.split([',', ' ']).next().unwrap().parse().unwrap()
}

#[test]
fn sighup_reloads_the_certificate_and_a_broken_file_keeps_the_one_in_force() {
    let first = Pki::new("reload-first");
    let second = Pki::new("reload-second");
    let (cert, key) = (first.cert(), first.key());
    let gw = common::Process::start(
        &[
            "--device-tls-listen",
            "127.0.0.1:0",
            "--device-tls-cert",
            cert.to_str().unwrap(),
            "--device-tls-key",
            key.to_str().unwrap(),
        ],
        None,
    );
    let addr = tls_addr(&gw);
    let mut before = TlsClient::connect(addr, first.client_config(None)).unwrap();
    before.send(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    before.expect(b"OK\n");

    // A good file: new connections get the second CA's certificate.
    std::fs::copy(second.cert(), &cert).unwrap();
    std::fs::copy(second.key(), &key).unwrap();
    gw.signal(libc::SIGHUP);
    gw.expect_log("tls: reloaded the certificate");
    let mut after = TlsClient::connect(addr, second.client_config(None)).unwrap();
    after.send(b"PING\n");
    after.expect(b"PONG\n");
    let refused = TlsClient::connect(addr, first.client_config(None)).err().expect("the old CA no longer vouches");
    assert!(refused.to_string().contains("UnknownIssuer") || refused.to_string().contains("issuer"), "{refused}");
    // The connection from before the reload was not dropped.
    before.send(b"PING\n");
    before.expect(b"PONG\n");

    // A broken file: the log says why, and the second certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    gw.signal(libc::SIGHUP);
    let line = gw.expect_log("keeps the certificate in force");
    assert!(line.contains(cert.to_str().unwrap()), "{line}");
    let mut still = TlsClient::connect(addr, second.client_config(None)).unwrap();
    still.send(b"PING\n");
    still.expect(b"PONG\n");
}

#[test]
fn a_returning_collar_resumes_its_session() {
    let pki = Pki::new("resume");
    let gw = Gateway::start(tls_config(&pki));
    // One client configuration keeps the tickets the gateway sent.
    let config = pki.client_config(None);
    for i in 0..3 {
        let mut collar = TlsClient::connect(gw.tls.unwrap(), std::sync::Arc::clone(&config)).unwrap();
        collar.send(b"PING\n");
        collar.expect(b"PONG\n");
        let resumed = collar.tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        assert_eq!(resumed, i > 0, "connection {i}");
    }
    let metrics = gw.metrics();
    assert_eq!(common::metric(&metrics, r#"tether_tls_handshakes_total{kind="full"}"#), 1.0);
    assert_eq!(common::metric(&metrics, r#"tether_tls_handshakes_total{kind="resumed"}"#), 2.0);
}

#[test]
fn tls_1_2_is_refused_unless_allowed() {
    let pki = Pki::new("tls12");
    let gw = Gateway::start(tls_config(&pki));
    let tls12 = pki.client_config_for(&rustls::version::TLS12, None);
    let e = TlsClient::connect(gw.tls.unwrap(), std::sync::Arc::clone(&tls12)).err().expect("TLS 1.2 refused");
    assert!(e.to_string().contains("ProtocolVersion") || e.to_string().contains("version"), "{e}");
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::TlsError), 1);

    let gw = Gateway::start(Config { tls12: true, ..tls_config(&pki) });
    let mut collar = TlsClient::connect(gw.tls.unwrap(), tls12).unwrap();
    assert_eq!(collar.tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    collar.send(b"PING\n");
    collar.expect(b"PONG\n");
}

#[test]
fn a_full_tls_listener_turns_a_newcomer_away_without_clear_text() {
    let pki = Pki::new("full");
    let gw = Gateway::start(Config { max_connections: Some(1), ..tls_config(&pki) });
    let mut first = TlsClient::connect(gw.tls.unwrap(), pki.client_config(None)).unwrap();
    first.send(b"PING\n");
    first.expect(b"PONG\n");
    let mut second = TcpStream::connect(gw.tls.unwrap()).unwrap();
    assert_eq!(read_to_close(&mut second), b"", "no BYE server-full in clear text");
    drop(first);
    let stats = gw.stop_drained();
    assert_eq!(closed(&stats, CloseReason::ServerFull), 1);
}
