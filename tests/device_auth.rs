//! Device authentication over real sockets (`--device-key-file`): the
//! `IDENTIFY` / `CHALLENGE` / `AUTH` handshake with exact bytes, failed
//! proofs, a takeover only after a proof, the handshake timeout covering
//! `AUTH`, key rotation, the counters, and the binary's `device-key`
//! command, start-up lines and key-file errors.

mod common;

use std::time::Duration;

use common::{Client, Gateway};
use common::{KeyFile, Process, auth_line, authenticate, challenge, closed, config, mac, metric, tether_command};
use tether::Config;
use tether::close::CloseReason;
use tether::device::auth::Nonce;

const MASTER: [u8; 32] = [0x3C; 32];
const OLD_MASTER: [u8; 32] = [0xA5; 32];

fn keyed(name: &str) -> (Config, KeyFile) {
    let keys = KeyFile::new(name, &[MASTER]);
    let config = Config { device_key_file: Some(keys.keys.clone()), ..config() };
    (config, keys)
}

#[test]
fn identify_is_challenged_and_a_proof_puts_the_collar_online() {
    let (config, keys) = keyed("online");
    let gw = Gateway::start(config);
    let mut dev = gw.connect();
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    let nonce = challenge(&mut dev, &mac(1));
    // Until AUTH, the collar is not identified.
    dev.send(b"LOCATION:1,2\nPONG\n");
    dev.expect(b"ERR not-identified\nERR not-identified\n");
    assert_eq!(gw.api().get(&format!("/devices/{}", mac(1))).status, 404);
    // The proof in upper-case hex, with a PING behind it in the same write.
    let line = auth_line(&keys.device_key(&mac(1)), &nonce).to_uppercase();
    dev.send(format!("{line}PING\n").as_bytes());
    dev.expect(b"OK\nPONG\n");
    assert_eq!(gw.api().get(&format!("/devices/{}", mac(1))).status, 200);
    dev.send(b"AUTH:00\nIDENTIFY:02:00:00:00:00:09\n");
    dev.expect(b"ERR already-identified\nERR already-identified\n");
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, r#"tether_device_auth_total{result="ok"}"#), 1.0);
    assert_eq!(metric(&metrics, r#"tether_device_auth_total{result="failed"}"#), 0.0);
    // `AUTH:00` is malformed: counted as invalid.
    assert_eq!(metric(&metrics, r#"tether_lines_received_total{type="auth"}"#), 1.0);
    drop(dev);
    gw.stop_drained();
}

#[test]
fn every_challenge_has_a_fresh_nonce() {
    let (config, _keys) = keyed("fresh");
    let gw = Gateway::start(config);
    let mut seen: Vec<Nonce> = Vec::new();
    for _ in 0..20 {
        let mut dev = gw.connect();
        let nonce = challenge(&mut dev, &mac(1));
        assert!(!seen.contains(&nonce));
        seen.push(nonce);
    }
}

/// Makes an `AUTH:` line for a challenge's nonce.
type Proving<'a> = Box<dyn Fn(&Nonce) -> String + 'a>;

#[test]
fn a_wrong_proof_is_answered_bad_auth_and_the_collar_closed() {
    let (config, keys) = keyed("wrong");
    let gw = Gateway::start(config);
    let cases: [(&str, Proving); 4] = [
        ("another collar's key", Box::new(|n| auth_line(&keys.device_key(&mac(2)), n))),
        ("a replayed proof for another nonce", Box::new(|_| auth_line(&keys.device_key(&mac(1)), &Nonce([0; 16])))),
        ("the master key itself", Box::new(|n| auth_line(&MASTER, n))),
        ("not hex", Box::new(|_| format!("AUTH:{}\n", "g".repeat(64)))),
    ];
    for (why, proof) in &cases {
        let mut dev = gw.connect();
        let nonce = challenge(&mut dev, &mac(1));
        dev.send(format!("{}PING\n", proof(&nonce)).as_bytes());
        assert_eq!(dev.read_to_eof(), b"ERR bad-auth\nBYE auth-failed\n", "{why}");
    }
    let line = gw.expect_log("AUTH failed for 02:00:00:00:00:01");
    assert!(line.starts_with("DEBUG "), "a failed auth's MAC is logged at debug level only: {line}");
    let metrics = gw.metrics();
    assert_eq!(metric(&metrics, r#"tether_device_auth_total{result="failed"}"#), 4.0);
    assert_eq!(metric(&metrics, r#"tether_closed_total{kind="device",reason="auth-failed"}"#), 4.0);
    let stats = gw.stop_drained();
    assert_eq!((stats.device_auth_failures, closed(&stats, CloseReason::AuthFailed)), (4, 4));
}

#[test]
fn auth_before_identify_is_not_identified() {
    let (config, keys) = keyed("early");
    let gw = Gateway::start(config);
    let mut dev = gw.connect();
    dev.send(auth_line(&keys.device_key(&mac(1)), &Nonce([1; 16])).as_bytes());
    dev.expect(b"ERR not-identified\n");
    authenticate(&mut dev, &mac(1), &keys.device_key(&mac(1)));
}

#[test]
fn a_takeover_happens_only_after_a_proof() {
    let (config, keys) = keyed("takeover");
    let gw = Gateway::start(config);
    let mut events = gw.http_client();
    events.send(b"GET /events HTTP/1.1\r\n\r\n");
    events.expect(common::STREAM_START.as_bytes());
    let mut holder = gw.connect();
    authenticate(&mut holder, &mac(1), &keys.device_key(&mac(1)));
    assert!(events.read_event().contains("event: connected"));
    // An impostor claims the MAC: challenged, and the holder is untouched.
    let mut impostor = gw.connect();
    let nonce = challenge(&mut impostor, &mac(1));
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
    impostor.send(auth_line(&[0; 32], &nonce).as_bytes());
    impostor.expect(b"ERR bad-auth\nBYE auth-failed\n");
    holder.send(b"PING\n");
    holder.expect(b"PONG\n");
    // The collar itself, reconnecting, takes over once it has proved it.
    let mut again = gw.connect();
    authenticate(&mut again, &mac(1), &keys.device_key(&mac(1)));
    holder.expect(b"BYE replaced\n");
    let event = events.read_event();
    assert!(event.contains("event: disconnected") && event.contains("replaced"), "{event}");
    assert!(events.read_event().contains("event: connected"));
}

#[test]
fn the_handshake_timeout_covers_auth() {
    let (config, _keys) = keyed("timeout");
    let gw = Gateway::start(Config { handshake_timeout: Duration::from_millis(200), ..config });
    let mut dev = gw.connect();
    challenge(&mut dev, &mac(1));
    dev.expect_within(b"BYE handshake-timeout\n", Duration::from_secs(2));
    dev.expect_eof();
}

#[test]
fn a_collar_keyed_under_an_older_master_key_is_still_accepted() {
    let keys = KeyFile::new("rotated", &[MASTER, OLD_MASTER]);
    let old = KeyFile::new("old", &[OLD_MASTER]);
    let gw = Gateway::start(Config { device_key_file: Some(keys.keys.clone()), ..config() });
    let mut new_collar = gw.connect();
    authenticate(&mut new_collar, &mac(1), &keys.device_key(&mac(1)));
    let mut old_collar = gw.connect();
    authenticate(&mut old_collar, &mac(2), &old.device_key(&mac(2)));
    assert_ne!(keys.device_key(&mac(2)), old.device_key(&mac(2)), "new collars get the first key's");
}

#[test]
fn without_a_key_file_the_protocol_is_unchanged() {
    let gw = Gateway::start(config());
    let mut dev = gw.connect();
    dev.send(b"AUTH:00\n");
    dev.expect(b"ERR not-identified\n");
    dev.identify(&mac(1));
    dev.send(format!("AUTH:{}\n", "0".repeat(64)).as_bytes());
    dev.expect(b"ERR unknown-command\n");
}

#[test]
fn max_line_must_leave_room_for_auth() {
    let (config, _keys) = keyed("short");
    let error = tether::Gateway::bind(Config { max_line: 64, ..config }).err().expect("refused");
    assert_eq!(error.to_string(), "--max-line 64 is too short for AUTH lines (71 bytes)");
}

#[test]
fn the_binary_prints_a_collars_key() {
    let keys = KeyFile::new("print", &[MASTER, OLD_MASTER]);
    let output =
        tether_command().args(["device-key", "--device-key-file", keys.path(), "ce-96-c2-78-27-fc"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let expected = common::auth::hex(&keys.device_key("CE:96:C2:78:27:FC"));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), format!("{expected}\n"));
    let output = tether_command().args(["device-key", "--device-key-file", keys.path(), "ce-96"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"ce-96\" is not a MAC like CE:96:C2:78:27:FC"));
}

#[test]
fn a_bad_key_file_stops_the_gateway_at_start_up() {
    let dir = std::env::temp_dir().join(format!("tether-bad-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "# one key\nfeedface\n").unwrap();
    let path = file.to_str().unwrap();
    let output = tether_command().args(["--device-listen", "127.0.0.1:0", "--device-key-file", path]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{path}: line 2: expected a key of 64 hex digits (32 bytes), found 8 characters");
    assert!(stderr.contains("--device-key-file") && stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("feedface"), "the file's content is not echoed: {stderr}");
    let output = tether_command().args(["--device-key-file", "/nonexistent/keys"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/keys"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_lists_the_device_security_flags() {
    let output = tether_command().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in ["--device-key-file", "--flap-limit", "--flap-window", "--flap-quarantine", "--flap-max-tracked"] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
    assert!(help.contains("device-key"), "--help does not list the device-key command:\n{help}");
}

#[test]
fn the_start_up_log_says_whether_collars_must_prove_their_key() {
    let open = Process::start(&[], None);
    let line = open.preamble.iter().find(|l| l.contains("claim")).expect("a warning");
    assert!(line.contains("WARN") && line.ends_with("devices: no --device-key-file: any client can claim any MAC"));
    let keys = KeyFile::new("banner", &[MASTER, OLD_MASTER]);
    let keyed = Process::start(&["--device-key-file", keys.path()], None);
    let line = keyed.preamble.iter().find(|l| l.contains("AUTH")).expect("an info line");
    assert!(line.ends_with("devices: collars must prove their key (AUTH) under 2 master keys"), "{line}");
    let mut dev: Client = keyed.connect();
    authenticate(&mut dev, &mac(1), &keys.device_key(&mac(1)));
}
