//! Device authentication: master keys, per-collar keys, challenges and
//! proofs (sans-IO, but for the kernel's random numbers).
//!
//! A collar proves it holds its own key, which the factory provisions as
//! `HMAC-SHA256(master, MAC)`, the MAC written `CE:96:C2:78:27:FC`
//! (`tether device-key` prints it). To identify it answers the gateway's
//! `CHALLENGE <nonce>` with `AUTH:<HMAC-SHA256(device key, nonce)>`, both in
//! hex. The gateway holds only the master keys and derives a collar's key
//! when it needs it, so there is no per-collar table to provision or leak.
//!
//! The key file lists one or more master keys so that they can be rotated:
//! new collars get keys derived from the first one, and a proof made with
//! a key derived from any of them is accepted. Retiring a master key is
//! deleting its line once the collars provisioned with it are re-keyed.
//!
//! Nonces are 16 bytes from the kernel's CSPRNG (`getrandom`), fresh for
//! every challenge, so a recorded `AUTH` line is worth nothing on another
//! connection. Proofs are compared in constant time (`hmac`'s
//! `verify_slice`). Keys never appear in logs: [`DeviceKeys`]'s `Debug`
//! says how many keys it holds, nothing more.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;

use super::mac::Mac;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a master key and in a device key.
pub const KEY_LEN: usize = 32;
/// Bytes in a challenge's nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes in an `AUTH` proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// The master keys of `--device-key-file`, the first one first. Cloning
/// shares them.
#[derive(Clone)]
pub struct DeviceKeys {
    /// Each master key's HMAC state, keyed once at start-up: deriving a
    /// device key clones it rather than hashing the master key again.
    masters: Arc<[HmacSha256]>,
}

/// A challenge's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

/// The 32 bytes of an `AUTH:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof(pub [u8; PROOF_LEN]);

impl fmt::Debug for DeviceKeys {
    /// The number of keys only: a key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKeys({} master keys)", self.masters.len())
    }
}

impl DeviceKeys {
    /// Master keys from their bytes, the first one first (at least one).
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Result<DeviceKeys, String> {
        if keys.is_empty() {
            return Err("no key: the file needs at least one line of 64 hex digits".into());
        }
        let masters = keys.iter().map(|key| HmacSha256::new_from_slice(key).expect("any key length")).collect();
        Ok(DeviceKeys { masters })
    }

    /// Parses a key file: one master key a line as 64 hex digits (either
    /// case), the first one used for new collars. Blank lines and lines
    /// whose first non-blank character is `#` are ignored, and blanks
    /// around a key are trimmed. An error names the line but never echoes
    /// it, since it may hold a key.
    pub fn parse(text: &str) -> Result<DeviceKeys, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = decode_hex::<KEY_LEN>(line.as_bytes()).ok_or_else(|| {
                format!(
                    "line {}: expected a key of 64 hex digits (32 bytes), found {} characters{}",
                    i + 1,
                    line.chars().count(),
                    if line.len() == 2 * KEY_LEN { " that are not all hex digits" } else { "" }
                )
            })?;
            if keys.contains(&key) {
                return Err(format!("line {}: the same key is listed twice", i + 1));
            }
            keys.push(key);
        }
        DeviceKeys::new(&keys)
    }

    /// Reads and parses `--device-key-file` (clap's value parser, so a bad
    /// file stops the gateway at start-up with a message naming it).
    pub fn load(path: &str) -> Result<DeviceKeys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        DeviceKeys::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// Master keys held.
    pub fn len(&self) -> usize {
        self.masters.len()
    }

    /// Never true: a key file holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// The key to provision on a new collar: derived from the first master
    /// key.
    pub fn device_key(&self, mac: Mac) -> [u8; KEY_LEN] {
        derive(&self.masters[0], mac)
    }

    /// Whether `proof` answers `nonce` for `mac` under any master key. Every
    /// key is tried, and each comparison takes constant time.
    pub fn verify(&self, mac: Mac, nonce: &Nonce, proof: &Proof) -> bool {
        self.masters.iter().fold(false, |ok, master| {
            let key = derive(master, mac);
            let mut tag = HmacSha256::new_from_slice(&key).expect("any key length");
            tag.update(&nonce.0);
            ok | tag.verify_slice(&proof.0).is_ok()
        })
    }
}

/// `HMAC-SHA256(master, "CE:96:C2:78:27:FC")`.
fn derive(master: &HmacSha256, mac: Mac) -> [u8; KEY_LEN] {
    let mut tag = master.clone();
    tag.update(&mac.text());
    tag.finalize().into_bytes().into()
}

/// The proof a collar holding `device_key` sends for `nonce` (collars and
/// tests compute it; the gateway only verifies).
pub fn prove(device_key: &[u8; KEY_LEN], nonce: &Nonce) -> Proof {
    let mut tag = HmacSha256::new_from_slice(device_key).expect("any key length");
    tag.update(&nonce.0);
    Proof(tag.finalize().into_bytes().into())
}

impl Nonce {
    /// A fresh nonce from the kernel's CSPRNG. `None` only if the kernel
    /// refuses (it does not on Linux once booted).
    pub fn fresh() -> Option<Nonce> {
        let mut nonce = [0; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        Some(Nonce(nonce))
    }

    /// Parses the 32 hex digits of a `CHALLENGE` line.
    pub fn parse(hex: &[u8]) -> Option<Nonce> {
        decode_hex(hex).map(Nonce)
    }
}

impl Proof {
    /// Parses the 64 hex digits of an `AUTH:` line (either case).
    pub fn parse(hex: &[u8]) -> Option<Proof> {
        decode_hex(hex).map(Proof)
    }
}

/// Exactly `2 * N` hex digits as `N` bytes.
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Bytes as lower-case hex into `out`, which holds exactly two digits a
/// byte.
pub fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), 2 * bytes.len());
    for (&b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFC]);

    fn hex(bytes: &[u8]) -> String {
        let mut out = vec![0; 2 * bytes.len()];
        encode_hex(bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2: key "Jefe".
        let mut tag = HmacSha256::new_from_slice(b"Jefe").unwrap();
        tag.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&tag.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_device_key_is_the_hmac_of_the_mac_written_upper_case_with_colons() {
        let master = [0x11; KEY_LEN];
        let keys = DeviceKeys::new(&[master]).unwrap();
        let mut expected = HmacSha256::new_from_slice(&master).unwrap();
        expected.update(b"CE:96:C2:78:27:FC");
        let expected: [u8; 32] = expected.finalize().into_bytes().into();
        assert_eq!(keys.device_key(MAC), expected);
        assert_ne!(keys.device_key(Mac([0xCE, 0x96, 0xC2, 0x78, 0x27, 0xFD])), expected);
    }

    #[test]
    fn a_proof_verifies_under_any_listed_master_key_and_nothing_else() {
        let (old, new) = ([1; KEY_LEN], [2; KEY_LEN]);
        let rotated = DeviceKeys::new(&[new, old]).unwrap();
        let only_old = DeviceKeys::new(&[old]).unwrap();
        let nonce = Nonce([7; NONCE_LEN]);
        let proof = prove(&only_old.device_key(MAC), &nonce);
        assert!(rotated.verify(MAC, &nonce, &proof), "a collar keyed under the old master key");
        assert!(rotated.verify(MAC, &nonce, &prove(&rotated.device_key(MAC), &nonce)));
        assert!(!DeviceKeys::new(&[new]).unwrap().verify(MAC, &nonce, &proof), "the old key retired");
        assert!(!rotated.verify(MAC, &Nonce([8; NONCE_LEN]), &proof), "another nonce");
        assert!(!rotated.verify(Mac([0; 6]), &nonce, &proof), "another MAC");
        let mut flipped = proof;
        flipped.0[31] ^= 1;
        assert!(!rotated.verify(MAC, &nonce, &flipped));
    }

    #[test]
    fn key_files_list_keys_with_comments_and_blank_lines() {
        let a = "00".repeat(31) + "0a";
        let b = "AB".repeat(32);
        let text = format!("# rotated 2026-11\n\n  {b}  \n\t# the old one\n{a}\r\n");
        let keys = DeviceKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.device_key(MAC), DeviceKeys::new(&[[0xAB; 32]]).unwrap().device_key(MAC), "first is used");
        assert_eq!(format!("{keys:?}"), "DeviceKeys(2 master keys)", "Debug shows no key");
    }

    #[test]
    fn bad_key_files_name_the_line_and_never_echo_it() {
        let key = "ab".repeat(32);
        let cases = [
            ("".to_string(), "no key: the file needs at least one line of 64 hex digits"),
            ("# only a comment\n\n".into(), "no key: the file needs at least one line of 64 hex digits"),
            (format!("{key}\nsecret"), "line 2: expected a key of 64 hex digits (32 bytes), found 6 characters"),
            (
                format!("# c\n{}zz", "ab".repeat(31)),
                "line 2: expected a key of 64 hex digits (32 bytes), found 64 characters that are not all hex digits",
            ),
            (format!("{key}0"), "line 1: expected a key of 64 hex digits (32 bytes), found 65 characters"),
            (format!("{key} {key}"), "line 1: expected a key of 64 hex digits (32 bytes), found 129 characters"),
            (format!("{key}\n{}", key.to_uppercase()), "line 2: the same key is listed twice"),
        ];
        for (text, expected) in cases {
            assert_eq!(DeviceKeys::parse(&text).unwrap_err(), expected, "{text:?}");
        }
        let missing = DeviceKeys::load("/nonexistent/tether.keys").unwrap_err();
        assert!(missing.starts_with("cannot read /nonexistent/tether.keys: "), "{missing}");
    }

    #[test]
    fn hex_is_exact() {
        assert_eq!(Nonce::parse(b"000102030405060708090a0B0c0D0e0F"), Some(Nonce(std::array::from_fn(|i| i as u8))));
        assert_eq!(Nonce::parse(b"000102030405060708090a0b0c0d0e0"), None);
        assert_eq!(Nonce::parse(b"000102030405060708090a0b0c0d0e0g"), None);
        assert_eq!(Proof::parse(&[b'f'; 64]), Some(Proof([0xFF; 32])));
        assert_eq!(Proof::parse(&[b'f'; 66]), None);
        assert_eq!(Proof::parse("é".repeat(32).as_bytes()), None);
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
    }

    #[test]
    fn nonces_are_fresh() {
        let (a, b) = (Nonce::fresh().unwrap(), Nonce::fresh().unwrap());
        assert_ne!(a, b);
    }
}
