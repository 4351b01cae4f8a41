//! The device protocol over real sockets, with exact bytes: every command and
//! its reply before and after `IDENTIFY` (empty lines included), MAC spellings and
//! `\r\n`, line framing however TCP splits or joins the bytes, and takeover
//! of a MAC that is already online.

mod common;

use std::time::Duration;

use common::{Gateway, closed, config, mac};
use tether::close::CloseReason;

/// Long enough for a reply to a complete line to arrive if one were coming.
const NO_REPLY: Duration = Duration::from_millis(30);

#[test]
fn identify_answers_ok_and_ping_answers_pong() {
    let gw = Gateway::start(config());
    let mut dev = gw.device("ce-96-c2-78-27-fc");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    drop(dev);
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [1, 0]);
}

#[test]
fn ping_is_answered_before_identify() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    client.send(b"PING\n");
    client.expect(b"PONG\n");
    client.identify("CE:96:C2:78:27:FC");
    client.send(b"PING\n");
    client.expect(b"PONG\n");
}

#[test]
fn identify_accepts_either_separator_in_any_case() {
    let gw = Gateway::start(config());
    for mac in ["CE:96:C2:78:27:FC", "0a-1b-2c-3d-4e-5f", "aB:cD:eF:01:23:45", "Fe-dC-bA-98-76-54", "00:00:00:00:00:00"]
    {
        let mut client = gw.connect();
        client.send(format!("IDENTIFY:{mac}\n").as_bytes());
        client.expect(b"OK\n");
    }
}

#[test]
fn invalid_mac_is_refused_and_the_connection_stays_in_the_handshake() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    for bad in [
        "IDENTIFY:",
        "IDENTIFY:CE:96:C2:78:27",
        "IDENTIFY:CE:96:C2:78:27:FC:00",
        "IDENTIFY:CE:96:C2:78:27:F",
        "IDENTIFY:CE:96-C2:78:27:FC",
        "IDENTIFY:CE.96.C2.78.27.FC",
        "IDENTIFY:CE:96:C2:78:27:FG",
        "IDENTIFY:CE96C27827FC",
        "IDENTIFY: CE:96:C2:78:27:FC",
        "IDENTIFY:CE:96:C2:78:27:FC ",
    ] {
        client.send(format!("{bad}\n").as_bytes());
        client.expect(b"ERR bad-mac\n");
    }
    // Still unidentified: commands other than IDENTIFY and PING are refused.
    client.send(b"PONG\n");
    client.expect(b"ERR not-identified\n");
    client.identify("CE:96:C2:78:27:FC");
    client.send(b"PONG\nPING\n");
    client.expect(b"PONG\n");
}

#[test]
fn identify_on_an_identified_connection_is_refused() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    dev.send(format!("IDENTIFY:{}\n", mac(1)).as_bytes());
    dev.expect(b"ERR already-identified\n");
    dev.send(format!("IDENTIFY:{}\n", mac(2)).as_bytes());
    dev.expect(b"ERR already-identified\n");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");

    // The refused IDENTIFY did not rename the connection: another device
    // identifying as mac(2) takes nothing over, and `dev` stays online.
    let mut other = gw.device(&mac(2));
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    other.send(b"PING\n");
    other.expect(b"PONG\n");
    drop((dev, other));
    let stats = gw.stop_drained();
    assert_eq!(stats.takeovers, 0);
    assert_eq!(closed(&stats, CloseReason::Replaced), 0);
}

#[test]
fn commands_before_identify_are_refused_as_not_identified() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    for line in ["PONG", "LOCATION:48.8566,2.3522", "LOCATION:100,0", "HELLO", "BYE"] {
        client.send(format!("{line}\n").as_bytes());
        client.expect(b"ERR not-identified\n");
    }
    client.send(b"PING\n");
    client.expect(b"PONG\n");
}

#[test]
fn pong_and_valid_locations_get_no_reply() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    // Any reply to the silent lines would arrive before the PONG.
    dev.send(
        b"PONG\nLOCATION:48.8566,2.3522\nLOCATION:-90,180\nLOCATION:90,-180\nLOCATION:0,0\n\
          LOCATION:+1.5,-0.25\nLOCATION:-33.8688,151.2093\nPING\n",
    );
    dev.expect(b"PONG\n");
    dev.expect_silence(NO_REPLY);
}

#[test]
fn out_of_range_or_malformed_locations_are_refused() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    for bad in [
        "LOCATION:90.0001,0",
        "LOCATION:-90.5,0",
        "LOCATION:0,180.0001",
        "LOCATION:0,-181",
        "LOCATION:",
        "LOCATION:1",
        "LOCATION:1,",
        "LOCATION:,2",
        "LOCATION:1,2,3",
        "LOCATION:north,east",
        "LOCATION:1..2,3",
        "LOCATION:NaN,0",
        "LOCATION:inf,0",
    ] {
        dev.send(format!("{bad}\n").as_bytes());
        dev.expect(b"ERR bad-location\n");
    }
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
}

#[test]
fn other_lines_from_an_identified_device_are_unknown_commands() {
    let gw = Gateway::start(config());
    let mut dev = gw.device(&mac(1));
    for line in [&b"HELLO"[..], b"OK", b"BYE", b"PINGPONG", b"PING PING", b"ping", b"\xff\xfe"] {
        dev.send(&[line, b"\n"].concat());
        dev.expect(b"ERR unknown-command\n");
    }
}

#[test]
fn an_empty_line_is_a_line_like_any_other() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    client.send(b"\n\r\nPING\n");
    client.expect(b"ERR not-identified\nERR not-identified\nPONG\n");
    client.identify(&mac(1));
    client.send(b"\n\r\nPING\n");
    client.expect(b"ERR unknown-command\nERR unknown-command\nPONG\n");
    client.expect_silence(NO_REPLY);
}

#[test]
fn carriage_return_before_the_newline_is_stripped() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    client.send(b"PING\r\n");
    client.expect(b"PONG\n");
    client.send(format!("IDENTIFY:{}\r\n", mac(1)).as_bytes());
    client.expect(b"OK\n");
    client.send(b"LOCATION:1.5,2.5\r\nPONG\r\n\r\nPING\r\n");
    client.expect(b"ERR unknown-command\nPONG\n");
    // Only the `\r` right before the `\n` is a terminator.
    client.send(b"PING\r\r\n");
    client.expect(b"ERR unknown-command\n");
}

#[test]
fn many_lines_in_one_write_are_answered_in_order() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    client.send(
        format!(
            "PING\nPONG\nIDENTIFY:{}\nPING\nHELLO\nLOCATION:1,2\nLOCATION:100,0\n\nIDENTIFY:{}\nPING\n",
            mac(1),
            mac(2)
        )
        .as_bytes(),
    );
    client.expect(
        b"PONG\nERR not-identified\nOK\nPONG\nERR unknown-command\nERR bad-location\nERR unknown-command\n\
          ERR already-identified\nPONG\n",
    );
    client.expect_silence(NO_REPLY);
}

#[test]
fn one_line_over_many_writes_is_one_line() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    let identify = format!("IDENTIFY:{}\r\n", mac(1));
    let (a, rest) = identify.split_at(4);
    let (b, c) = rest.split_at(9);
    for piece in [a, b, c] {
        // Nothing is answered until the line is complete.
        client.expect_silence(NO_REPLY);
        client.send(piece.as_bytes());
    }
    client.expect(b"OK\n");
    for piece in ["LOC", "ATION:1", ".5,", "2", "\nPI", "NG", "\n"] {
        client.send(piece.as_bytes());
    }
    client.expect(b"PONG\n");
    client.expect_silence(NO_REPLY);
}

#[test]
fn one_byte_per_write_frames_the_same_lines() {
    let gw = Gateway::start(config());
    let mut client = gw.connect();
    let stream = format!("PING\r\nIDENTIFY:{}\nLOCATION:-1.25,3\n\nHELLO\r\nPING\n", mac(1));
    for byte in stream.as_bytes() {
        client.send(&[*byte]);
    }
    client.expect(b"PONG\nOK\nERR unknown-command\nERR unknown-command\nPONG\n");
    client.expect_silence(NO_REPLY);
}

#[test]
fn every_split_of_a_stream_into_two_writes_frames_the_same_lines() {
    let gw = Gateway::start(config());
    let mut client = gw.device(&mac(1));
    let stream = b"PING\r\nLOCATION:1,2\nHELLO\n\nPING\n";
    for cut in 0..=stream.len() {
        client.send(&stream[..cut]);
        client.send(&stream[cut..]);
        client.expect(b"PONG\nERR unknown-command\nERR unknown-command\nPONG\n");
    }
    client.expect_silence(NO_REPLY);
}

#[test]
fn a_second_connection_with_the_same_mac_takes_over() {
    let gw = Gateway::start(config());
    let mut old = gw.device("ce-96-c2-78-27-fc");
    let mut new = gw.connect();
    new.send(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    new.expect(b"OK\n");
    old.expect(b"BYE replaced\n");
    old.expect_eof();
    new.send(b"PING\n");
    new.expect(b"PONG\n");
    drop((old, new));
    let stats = gw.stop_drained();
    assert_eq!(stats.takeovers, 1);
    assert_eq!(closed(&stats, CloseReason::Replaced), 1);
}

#[test]
fn every_spelling_of_a_mac_is_the_same_device() {
    let gw = Gateway::start(config());
    let spellings = ["aa-bb-cc-dd-ee-0f", "AA:BB:CC:DD:EE:0F", "Aa:bB:cC:Dd:eE:0f", "AA-BB-CC-DD-EE-0F"];
    let mut current = gw.device(spellings[0]);
    for spelling in &spellings[1..] {
        let next = gw.device(spelling);
        current.expect(b"BYE replaced\n");
        current.expect_eof();
        current = next;
    }
    current.send(b"PING\n");
    current.expect(b"PONG\n");
    drop(current);
    let stats = gw.stop_drained();
    assert_eq!(stats.takeovers, 3);
    assert_eq!(closed(&stats, CloseReason::Replaced), 3);
}

#[test]
fn the_replaced_connection_closing_leaves_its_successor_online() {
    let gw = Gateway::start(config());
    let mut first = gw.device(&mac(7));
    let mut second = gw.device(&mac(7));
    first.expect(b"BYE replaced\n");
    first.expect_eof();
    // The replaced connection finishes closing; the MAC must still lead to
    // `second`, so a third identification replaces `second`.
    drop(first);
    second.send(b"PING\n");
    second.expect(b"PONG\n");
    let mut third = gw.device(&mac(7));
    second.expect(b"BYE replaced\n");
    second.expect_eof();
    third.send(b"PING\n");
    third.expect(b"PONG\n");
    drop((second, third));
    let stats = gw.stop_drained();
    assert_eq!(stats.takeovers, 2);
}

#[test]
fn devices_with_different_macs_do_not_replace_each_other() {
    let gw = Gateway::start(config());
    let mut devices: Vec<_> = (0..10).map(|i| gw.device(&mac(i))).collect();
    for dev in &mut devices {
        dev.send(b"PING\n");
    }
    for dev in &mut devices {
        dev.expect(b"PONG\n");
    }
    drop(devices);
    let stats = gw.stop_drained();
    assert_eq!(stats.accepted, [10, 0]);
    assert_eq!(stats.takeovers, 0);
}
