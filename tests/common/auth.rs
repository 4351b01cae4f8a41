//! Device authentication from the collar's side: a key file the gateway
//! reads (removed when dropped), the key a collar is provisioned with, and
//! the `IDENTIFY` / `CHALLENGE` / `AUTH` exchange with exact bytes.

use std::path::PathBuf;

use tether::device::Mac;
use tether::device::auth::{self, DeviceKeys, KEY_LEN, Nonce};

use super::client::Client;

/// A key file in the temporary directory, listing `keys` (the first one
/// first) under a comment; removed when dropped.
pub struct KeyFile {
    pub path: PathBuf,
    pub keys: DeviceKeys,
}

impl KeyFile {
    pub fn new(name: &str, keys: &[[u8; KEY_LEN]]) -> KeyFile {
        let dir = std::env::temp_dir().join(format!("tether-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut text = String::from("# tether device master keys, newest first\n\n");
        for key in keys {
            text.push_str(&hex(key));
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        KeyFile { keys: DeviceKeys::new(keys).unwrap(), path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The key the collar with `mac` is provisioned with.
    pub fn device_key(&self, mac: &str) -> [u8; KEY_LEN] {
        self.keys.device_key(Mac::parse(mac.as_bytes()).unwrap())
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `IDENTIFY:<mac>` and reads the `CHALLENGE` line; its nonce.
pub fn challenge(client: &mut Client, mac: &str) -> Nonce {
    client.send(format!("IDENTIFY:{mac}\n").as_bytes());
    let line = client.read_line();
    let digits = line.strip_prefix("CHALLENGE ").and_then(|l| l.strip_suffix('\n')).expect(&line);
    assert_eq!(digits.len(), 32, "{line:?}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{line:?}");
    Nonce::parse(digits.as_bytes()).unwrap()
}

/// The `AUTH:` line a collar holding `device_key` sends for `nonce`.
pub fn auth_line(device_key: &[u8; KEY_LEN], nonce: &Nonce) -> String {
    format!("AUTH:{}\n", hex(&auth::prove(device_key, nonce).0))
}

/// The whole handshake with `device_key`, up to and including `OK`.
pub fn authenticate(client: &mut Client, mac: &str, device_key: &[u8; KEY_LEN]) {
    let nonce = challenge(client, mac);
    client.send(auth_line(device_key, &nonce).as_bytes());
    client.expect(b"OK\n");
}
