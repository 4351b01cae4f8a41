//! The device protocol's vocabulary: what a collar may say and what the
//! gateway answers (sans-IO).
//!
//! [`parse`] turns one framed line into a [`Command`]; it knows nothing of
//! connection state. [`Line`] holds every line the gateway sends (answers,
//! the heartbeat probe, the location query), each a static byte string, so
//! sending one costs no formatting and no allocation; the one line that
//! carries a value, `CHALLENGE <nonce>`, is built by [`challenge`].

use super::auth::{self, NONCE_LEN, Nonce, Proof};
use super::mac::Mac;

/// One line from a device, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// `IDENTIFY:<MAC>` with a valid MAC.
    Identify(Mac),
    /// `PING`: the device checks the gateway is alive.
    Ping,
    /// `PONG`: the answer to the gateway's heartbeat `PING`.
    Pong,
    /// `LOCATION:<lat>,<lon>` in range.
    Location { lat: f64, lon: f64 },
    /// `AUTH:<64 hex digits>`: the answer to a `CHALLENGE` (with
    /// `--device-key-file`).
    Auth(Proof),
    /// A line that cannot be accepted as it stands.
    Invalid(ErrorCode),
}

/// The `ERR <code>` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadMac,
    BadLocation,
    UnknownCommand,
    NotIdentified,
    AlreadyIdentified,
    /// An `AUTH:` line that is malformed or does not prove the key.
    BadAuth,
    /// The MAC is quarantined for flapping (`--flap-limit`).
    Flapping,
}

/// Every line the gateway sends to a device, but `BYE` (see
/// [`crate::close::CloseReason::bye`]) and the app's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Ok,
    Pong,
    /// The heartbeat probe.
    Ping,
    /// Asks the device to report its location.
    LocationQuery,
    Err(ErrorCode),
}

impl Line {
    /// The line as it goes on the wire, terminator included.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Line::Ok => b"OK\n",
            Line::Pong => b"PONG\n",
            Line::Ping => b"PING\n",
            Line::LocationQuery => b"location\n",
            Line::Err(ErrorCode::BadMac) => b"ERR bad-mac\n",
            Line::Err(ErrorCode::BadLocation) => b"ERR bad-location\n",
            Line::Err(ErrorCode::UnknownCommand) => b"ERR unknown-command\n",
            Line::Err(ErrorCode::NotIdentified) => b"ERR not-identified\n",
            Line::Err(ErrorCode::AlreadyIdentified) => b"ERR already-identified\n",
            Line::Err(ErrorCode::BadAuth) => b"ERR bad-auth\n",
            Line::Err(ErrorCode::Flapping) => b"ERR flapping\n",
        }
    }
}

/// The longest `AUTH:` line, `\r\n` included: `--max-line` must allow it
/// when collars authenticate.
pub const AUTH_LINE_MAX: usize = b"AUTH:".len() + 64 + 2;

/// Length of a `CHALLENGE` line, terminator included.
pub const CHALLENGE_LEN: usize = b"CHALLENGE ".len() + 2 * NONCE_LEN + 1;

/// `CHALLENGE <32 lower-case hex digits>\n`, built on the stack.
pub fn challenge(nonce: &Nonce) -> [u8; CHALLENGE_LEN] {
    let mut line = [b'\n'; CHALLENGE_LEN];
    line[..10].copy_from_slice(b"CHALLENGE ");
    auth::encode_hex(&nonce.0, &mut line[10..CHALLENGE_LEN - 1]);
    line
}

/// Parses one line (terminator already removed). Commands are upper-case
/// and exact: `ping` is an unknown command, as is an empty line or
/// anything not ASCII.
pub fn parse(line: &[u8]) -> Command {
    match line {
        b"PING" => Command::Ping,
        b"PONG" => Command::Pong,
        b"IDENTIFY" => Command::Invalid(ErrorCode::BadMac),
        b"LOCATION" => Command::Invalid(ErrorCode::BadLocation),
        b"AUTH" => Command::Invalid(ErrorCode::BadAuth),
        _ => {
            if let Some(mac) = line.strip_prefix(b"IDENTIFY:") {
                match Mac::parse(mac) {
                    Ok(mac) => Command::Identify(mac),
                    Err(_) => Command::Invalid(ErrorCode::BadMac),
                }
            } else if let Some(proof) = line.strip_prefix(b"AUTH:") {
                Proof::parse(proof).map_or(Command::Invalid(ErrorCode::BadAuth), Command::Auth)
            } else if let Some(position) = line.strip_prefix(b"LOCATION:") {
                match parse_location(position) {
                    Some((lat, lon)) => Command::Location { lat, lon },
                    None => Command::Invalid(ErrorCode::BadLocation),
                }
            } else {
                Command::Invalid(ErrorCode::UnknownCommand)
            }
        }
    }
}

/// `<lat>,<lon>` in decimal degrees, lat in [-90, 90], lon in [-180, 180].
fn parse_location(text: &[u8]) -> Option<(f64, f64)> {
    let comma = memchr::memchr(b',', text)?;
    let lat = parse_degrees(&text[..comma])?;
    let lon = parse_degrees(&text[comma + 1..])?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// A plain decimal number: an optional sign, digits, and an optional
/// fraction (`-33.8688`, `+151`, `0.5`, `.5`). No exponent, `inf` or `NaN`,
/// which `f64::from_str` would otherwise accept.
fn parse_degrees(text: &[u8]) -> Option<f64> {
    let digits = text.strip_prefix(b"-").or_else(|| text.strip_prefix(b"+")).unwrap_or(text);
    let mut seen_digit = false;
    let mut seen_point = false;
    for &b in digits {
        match b {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
    }
    if !seen_digit || digits.len() > 32 {
        return None;
    }
    // Only ASCII digits, sign and point remain, so this is valid UTF-8.
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);
        let cases: &[(&[u8], Command)] = &[
            (b"PING", Command::Ping),
            (b"PONG", Command::Pong),
            (b"", Command::Invalid(ErrorCode::UnknownCommand)),
            (b"IDENTIFY:ce-96-c2-78-27-fc", Command::Identify(mac)),
            (b"IDENTIFY:CE:96:C2:78:27:FC", Command::Identify(mac)),
            (b"IDENTIFY:CE:96:C2:78:27", Command::Invalid(ErrorCode::BadMac)),
            (b"IDENTIFY:", Command::Invalid(ErrorCode::BadMac)),
            (b"IDENTIFY", Command::Invalid(ErrorCode::BadMac)),
            (b"LOCATION:48.8566,2.3522", Command::Location { lat: 48.8566, lon: 2.3522 }),
            (b"LOCATION:-90,180", Command::Location { lat: -90.0, lon: 180.0 }),
            (b"LOCATION:+90.0,-180.000", Command::Location { lat: 90.0, lon: -180.0 }),
            (b"LOCATION:.5,5.", Command::Location { lat: 0.5, lon: 5.0 }),
            (b"LOCATION", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:90.0001,0", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:0,-180.5", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:1,2,3", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:1e1,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:NaN,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:inf,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:1..2,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:-,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:.,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION: 1,2", Command::Invalid(ErrorCode::BadLocation)),
            (b"LOCATION:1,", Command::Invalid(ErrorCode::BadLocation)),
            (
                b"AUTH:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                Command::Auth(Proof([0xFF; 32])),
            ),
            (
                b"AUTH:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                Command::Auth(Proof([0xFF; 32])),
            ),
            (
                b"AUTH:fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                Command::Invalid(ErrorCode::BadAuth),
            ),
            (
                b"AUTH:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffx",
                Command::Invalid(ErrorCode::BadAuth),
            ),
            (b"AUTH:", Command::Invalid(ErrorCode::BadAuth)),
            (b"AUTH", Command::Invalid(ErrorCode::BadAuth)),
            (b"auth:ff", Command::Invalid(ErrorCode::UnknownCommand)),
            (b"ping", Command::Invalid(ErrorCode::UnknownCommand)),
            (b"PING ", Command::Invalid(ErrorCode::UnknownCommand)),
            (b"HELLO", Command::Invalid(ErrorCode::UnknownCommand)),
            (b"\xff\xfe", Command::Invalid(ErrorCode::UnknownCommand)),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), *expected, "{:?}", line.escape_ascii().to_string());
        }
    }

    #[test]
    fn lines_are_exact() {
        assert_eq!(Line::Ok.bytes(), b"OK\n");
        assert_eq!(Line::LocationQuery.bytes(), b"location\n");
        assert_eq!(Line::Err(ErrorCode::NotIdentified).bytes(), b"ERR not-identified\n");
        assert_eq!(Line::Err(ErrorCode::AlreadyIdentified).bytes(), b"ERR already-identified\n");
        assert_eq!(Line::Err(ErrorCode::BadAuth).bytes(), b"ERR bad-auth\n");
        assert_eq!(Line::Err(ErrorCode::Flapping).bytes(), b"ERR flapping\n");
        let line = challenge(&Nonce(std::array::from_fn(|i| (i * 17) as u8)));
        assert_eq!(&line, b"CHALLENGE 00112233445566778899aabbccddeeff\n");
        assert_eq!(line.len(), CHALLENGE_LEN);
    }
}
