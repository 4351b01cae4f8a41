//! The layer without a socket: an in-memory rustls client on one side,
//! [`Tls`] driven the way the reactor drives it on the other, with the
//! bytes between them cut wherever a test likes.

use std::io::{Read, Write};

use super::*;
use rustls::SupportedProtocolVersion;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A server configuration for `localhost` speaking `version` (with
/// session tickets, as the gateway's), and a client that trusts it and
/// cuts its records to `fragment` bytes, if given.
fn configs(
    version: &'static SupportedProtocolVersion,
    fragment: Option<usize>,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    server.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.max_fragment_size = fragment;
    (Arc::new(server), Arc::new(client))
}

/// Both ends, and what the server end opened so far.
struct Pair {
    server: Box<Tls>,
    client: ClientConnection,
    plaintext: Vec<u8>,
    /// Where each call of `receive` stopped.
    opened: Vec<Opened>,
    /// How much plaintext was out when the handshake was reported, for
    /// each time it was.
    secured: Vec<usize>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(&TLS13, None)
    }

    fn with(version: &'static SupportedProtocolVersion, fragment: Option<usize>) -> Pair {
        let (server, client) = configs(version, fragment);
        Pair {
            server: Tls::accept(&server).unwrap(),
            client: ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap(),
            plaintext: Vec::new(),
            opened: Vec::new(),
            secured: Vec::new(),
        }
    }

    /// Hands `bytes` to the server end `cut` bytes per read, as the
    /// reactor does: what was carried in front, the read behind it.
    fn feed(&mut self, bytes: &[u8], cut: usize) -> Result<(), rustls::Error> {
        let mut buf = vec![0; 64 * 1024];
        for piece in bytes.chunks(cut) {
            let mut filled = self.server.resume(&mut buf);
            buf[filled..filled + piece.len()].copy_from_slice(piece);
            filled += piece.len();
            let out = self.plaintext.len();
            let secured = &mut self.secured;
            let (left, opened) =
                self.server.receive(&mut buf[..filled], &mut self.plaintext, &mut |_| secured.push(out));
            self.server.keep(&buf[..left]);
            self.opened.push(opened?);
        }
        Ok(())
    }

    /// What the client has to send.
    fn client_sends(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut bytes).unwrap();
        }
        bytes
    }

    /// The client writes `plaintext`; its records.
    fn client_writes(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.client.writer().write_all(plaintext).unwrap();
        self.client_sends()
    }

    /// Hands the server's sealed records to the client; the plaintext
    /// they carried.
    fn deliver_to_client(&mut self) -> Vec<u8> {
        let sealed = std::mem::take(&mut self.server.sealed);
        let mut records = &sealed[..];
        let mut plaintext = Vec::new();
        while !records.is_empty() {
            self.client.read_tls(&mut records).unwrap();
            self.client.process_new_packets().unwrap();
            let _ = self.client.reader().read_to_end(&mut plaintext);
        }
        plaintext
    }

    /// Seals `plaintext` as the flush does, behind the records sealed
    /// before, and a `close_notify` after it if `close`; what the
    /// client reads of it all.
    fn server_writes(&mut self, plaintext: &[u8], close: bool) -> Vec<u8> {
        let mut scratch = vec![0; 64 * 1024];
        let before = std::mem::take(&mut self.server.sealed);
        scratch[..before.len()].copy_from_slice(&before);
        let mut end =
            self.server.seal(&mut scratch, before.len(), |traffic, buf| traffic.encrypt(plaintext, buf)).unwrap();
        if close {
            end = self.server.seal(&mut scratch, end, |traffic, buf| traffic.queue_close_notify(buf)).unwrap();
        }
        assert_eq!(scratch.len(), 64 * 1024, "the scratch buffer did not grow");
        scratch.truncate(end);
        self.server.sealed = scratch;
        self.deliver_to_client()
    }

    /// A complete handshake, every flight cut `cut` bytes per read.
    fn handshake(&mut self, cut: usize) {
        while self.client.is_handshaking() {
            let hello = self.client_sends();
            self.feed(&hello, cut).unwrap();
            self.deliver_to_client();
        }
        let finished = self.client_sends();
        self.feed(&finished, cut).unwrap();
        assert!(self.server.is_secured() && self.server.secured);
        assert_eq!(self.secured.len(), 1, "the handshake is reported once");
        // The tickets (TLS 1.3).
        self.deliver_to_client();
    }

    /// The client's close_notify has reached the server's session.
    fn client_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.client.reader().read_to_end(&mut rest), Ok(0))
    }
}

#[test]
fn records_cut_anywhere_come_out_whole_and_in_order() {
    for cut in [1, 2, 3, 5, 7, 64, 1000] {
        let mut pair = Pair::new();
        pair.handshake(cut);
        let mut sent = Vec::new();
        for i in 0..20 {
            let line = format!("LOCATION:48.{i},2.35\n");
            pair.client.writer().write_all(line.as_bytes()).unwrap();
            sent.extend_from_slice(line.as_bytes());
        }
        let records = pair.client_sends();
        pair.feed(&records, cut).unwrap();
        assert_eq!(pair.plaintext.escape_ascii().to_string(), sent.escape_ascii().to_string(), "cut {cut}");
        // Between records, nothing is carried and nothing is held.
        assert_eq!(pair.server.received.capacity(), 0, "cut {cut}");
    }
}

#[test]
fn handshake_messages_split_over_records_and_reads_come_together() {
    // Records of 32 bytes: the ClientHello (and the client's
    // Certificate-less Finished) span many, cut across reads anywhere.
    for version in [&TLS13, &TLS12] {
        for cut in [1, 3, 7, 33, 100, 1000] {
            let mut pair = Pair::with(version, Some(32));
            pair.handshake(cut);
            let records = pair.client_writes(b"PING\nPING\n");
            pair.feed(&records, cut).unwrap();
            assert_eq!(pair.plaintext, b"PING\nPING\n", "{version:?}, cut {cut}");
            assert_eq!(pair.server_writes(b"PONG\nPONG\n", false), b"PONG\nPONG\n");
        }
    }
}

#[test]
fn the_handshake_is_reported_before_the_input_that_came_with_it() {
    let mut pair = Pair::new();
    let hello = pair.client_sends();
    pair.feed(&hello, usize::MAX).unwrap();
    pair.deliver_to_client();
    assert!(pair.secured.is_empty());
    // The client's Finished and its first line, in one read.
    let read = pair.client_writes(b"IDENTIFY:CE:96:C2:78:27:FC\n");
    pair.feed(&read, usize::MAX).unwrap();
    assert_eq!(pair.secured, [0], "reported once, before any plaintext");
    assert_eq!(pair.plaintext, b"IDENTIFY:CE:96:C2:78:27:FC\n");
    // Every whole record was opened: nothing is carried, so a session
    // that refused the identity can still be answered.
    assert!(pair.server.received.is_empty());
    assert_eq!(pair.server_writes(b"BYE auth-failed\n", true), b"BYE auth-failed\n");
    assert!(pair.client_closed());
}

#[test]
fn plain_text_is_refused_with_an_alert_in_clear() {
    let mut pair = Pair::new();
    let error = pair.feed(b"IDENTIFY:CE:96:C2:78:27:FC\n", usize::MAX).unwrap_err();
    assert!(matches!(error, rustls::Error::InvalidMessage(_)), "{error:?}");
    // One alert record (type 21), and nothing else.
    let sealed = &pair.server.sealed;
    assert_eq!(sealed.first(), Some(&21), "{sealed:?}");
    assert_eq!(sealed.len(), 7, "{sealed:?}");
}

#[test]
fn a_record_that_does_not_decrypt_is_refused_once() {
    let mut pair = Pair::new();
    pair.handshake(usize::MAX);
    let mut record = pair.client_writes(b"PING\n");
    *record.last_mut().unwrap() ^= 1;
    let error = pair.feed(&record, usize::MAX).unwrap_err();
    assert_eq!(error, rustls::Error::DecryptError);
    assert!(pair.plaintext.is_empty());
    // The alert is sealed, once (a second would trip rustls).
    assert_eq!(pair.server.sealed.first(), Some(&23), "an encrypted alert");
}

#[test]
fn a_key_update_the_client_asks_for_is_answered_in_order() {
    for cut in [1, 5, 1000] {
        let mut pair = Pair::new();
        pair.handshake(usize::MAX);
        pair.client.refresh_traffic_keys().unwrap();
        let records = pair.client_writes(b"PING\n");
        pair.feed(&records, cut).unwrap();
        assert_eq!(pair.plaintext, b"PING\n");
        // Our key update goes in front of the answer, sealed with it.
        assert_eq!(pair.server_writes(b"PONG\n", false), b"PONG\n");
        let records = pair.client_writes(b"PING\n");
        pair.feed(&records, cut).unwrap();
        assert_eq!(pair.server_writes(b"BYE\n", true), b"BYE\n");
        assert!(pair.client_closed());
    }
}

#[test]
fn sealed_output_and_close_notify_reach_the_client() {
    for version in [&TLS13, &TLS12] {
        let mut pair = Pair::with(version, None);
        pair.handshake(usize::MAX);
        assert_eq!(pair.server_writes(b"OK\nPONG\n", true), b"OK\nPONG\n");
        assert!(pair.client_closed(), "{version:?}");
    }
}

#[test]
fn a_large_output_is_cut_into_records_with_room_to_spare() {
    let mut pair = Pair::new();
    pair.handshake(usize::MAX);
    // What the flush seals at most into the scratch buffer fits it.
    let plaintext = vec![b'x'; 64 * 1024 - SEAL_SLACK];
    assert_eq!(pair.server_writes(&plaintext, true).len(), plaintext.len());
}

#[test]
fn the_peers_close_notify_ends_its_input() {
    for version in [&TLS13, &TLS12] {
        let mut pair = Pair::with(version, None);
        pair.handshake(7);
        pair.client.writer().write_all(b"PING\n").unwrap();
        pair.client.send_close_notify();
        let bytes = pair.client_sends();
        pair.feed(&bytes, 7).unwrap();
        assert_eq!(pair.plaintext, b"PING\n");
        assert_eq!(pair.opened.last(), Some(&Opened::PeerClosed));
        // The last words still go out, and our close_notify.
        assert_eq!(pair.server_writes(b"BYE\n", true), b"BYE\n");
        assert!(pair.client_closed());
    }
}

/// Hands `bytes` to the server end cut at `cuts` (each taken modulo
/// what is left), stopping at the first failure; whether one came.
fn feed_cut(pair: &mut Pair, bytes: &[u8], cuts: &[usize]) -> bool {
    let mut rest = bytes;
    for &cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
        if rest.is_empty() {
            return false;
        }
        let (piece, after) = rest.split_at(cut % rest.len() + 1);
        if pair.feed(piece, usize::MAX).is_err() {
            return true;
        }
        rest = after;
    }
    unreachable!("the cuts repeat until the bytes run out")
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 64, failure_persistence: None, ..Default::default() })]

    /// Whatever a peer sends instead of a handshake, cut however: no
    /// panic, nothing carried past the read buffer, at most one alert.
    #[test]
    fn any_bytes_before_the_handshake_end_in_an_alert_or_wait(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
    ) {
        let mut pair = Pair::new();
        let failed = feed_cut(&mut pair, &bytes, &cuts);
        proptest::prop_assert!(pair.server.received.len() <= bytes.len());
        proptest::prop_assert!(pair.plaintext.is_empty(), "plaintext before a handshake");
        if failed {
            proptest::prop_assert!(pair.server.sealed.len() <= 7, "{:?}", pair.server.sealed);
        }
    }

    /// A genuine client's records, damaged (bytes flipped, cut short,
    /// followed by garbage) and cut however: no panic, and what the
    /// session is given is always a prefix of what the client sent.
    #[test]
    fn damaged_records_give_the_session_only_what_the_client_sent(
        plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..3000),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1..=255u8), 0..3),
        keep in proptest::prelude::any::<usize>(),
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
    ) {
        let mut pair = Pair::new();
        pair.handshake(usize::MAX);
        let mut records = pair.client_writes(&plaintext);
        for &(at, bits) in &flips {
            let at = at % records.len();
            records[at] ^= bits;
        }
        records.truncate(keep % (records.len() + 1));
        records.extend_from_slice(&garbage);
        let failed = feed_cut(&mut pair, &records, &cuts);
        proptest::prop_assert!(plaintext.starts_with(&pair.plaintext), "plaintext the client never sent");
        if flips.is_empty() && garbage.is_empty() && keep % (records.len() + 1) == records.len() {
            proptest::prop_assert_eq!(&pair.plaintext, &plaintext);
        }
        // Sealing afterwards works, or fails at once after a failure
        // (rustls is not asked again), and never panics.
        let mut scratch = vec![0; 64 * 1024];
        let sealed = pair.server.seal(&mut scratch, 0, |traffic, buf| traffic.encrypt(b"BYE\n", buf));
        proptest::prop_assert_eq!(sealed.is_err(), failed, "{:?}", sealed);
    }
}
