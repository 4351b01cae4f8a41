//! What rustls keeps per idle connection, counted by the allocator: the
//! buffered `ServerConnection` the gateway used first against the
//! unbuffered `UnbufferedServerConnection` it drives now (see
//! `src/reactor/tls.rs`).
//!
//! For each, N connections complete a TLS 1.3 handshake in memory with a
//! rustls client (ECDSA P-256 certificate, the client's preferred suite,
//! as a collar's), the clients are dropped, and the bytes still allocated
//! divided by N are what one idle server connection costs: its state, its
//! keys, and for the buffered one the receive buffer it keeps. The
//! gateway's own share (its slab entry, the box around the TLS state) and
//! the allocator's overhead are not in it; `scripts/tls-bench.sh`
//! measures the whole process.
//!
//! Run: `cargo bench --bench tls_memory` (1,000 connections each), or
//! `TETHER_TLS_CONNS=5000 cargo bench --bench tls_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        IN_USE.fetch_add(size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn in_use() -> isize {
    IN_USE.load(Ordering::Relaxed)
}

/// The gateway's kind of server configuration (TLS 1.3, session
/// tickets), and a client without resumption, so no ticket is kept.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    server.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn client(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(Arc::clone(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// The client's pending records, then the server's answer, until both
/// have nothing more to say, and then one line from the client; `serve`
/// takes the client's bytes and returns the server's.
fn converse(client: &mut ClientConnection, mut serve: impl FnMut(&[u8]) -> Vec<u8>) {
    loop {
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        let answer = serve(&bytes);
        let mut records = &answer[..];
        while !records.is_empty() {
            client.read_tls(&mut records).unwrap();
            client.process_new_packets().unwrap();
        }
        if bytes.is_empty() && answer.is_empty() {
            break;
        }
    }
    assert!(!client.is_handshaking());
    // One line, as an identified collar has said.
    client.writer().write_all(b"IDENTIFY:CE:96:C2:78:27:FC\n").unwrap();
    let mut line = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut line).unwrap();
    }
    serve(&line);
}

fn buffered(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> ServerConnection {
    let mut conn = ServerConnection::new(Arc::clone(server)).unwrap();
    let mut peer = self::client(client);
    let serve = |bytes: &[u8]| {
        let mut bytes = bytes;
        while !bytes.is_empty() {
            conn.read_tls(&mut bytes).unwrap();
            conn.process_new_packets().unwrap();
        }
        let mut plaintext = Vec::new();
        let _ = conn.reader().read_to_end(&mut plaintext);
        let mut answer = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut answer).unwrap();
        }
        answer
    };
    converse(&mut peer, serve);
    conn
}

fn unbuffered(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> UnbufferedServerConnection {
    let mut conn = UnbufferedServerConnection::new(Arc::clone(server)).unwrap();
    let mut peer = self::client(client);
    let serve = |bytes: &[u8]| {
        let mut incoming = bytes.to_vec();
        let mut answer = Vec::new();
        let mut done = 0;
        loop {
            let status = conn.process_tls_records(&mut incoming[done..]);
            let discard = status.discard;
            match status.state.unwrap() {
                ConnectionState::EncodeTlsData(mut data) => {
                    let at = answer.len();
                    answer.resize(at + 16 * 1024, 0);
                    let n = data.encode(&mut answer[at..]).unwrap();
                    answer.truncate(at + n);
                }
                ConnectionState::TransmitTlsData(sent) => sent.done(),
                ConnectionState::ReadTraffic(mut records) => while records.next_record().is_some() {},
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => break,
                state => panic!("{state:?}"),
            }
            done += discard;
        }
        answer
    };
    converse(&mut peer, serve);
    conn
}

/// Heap bytes still allocated per connection once `make` made `n` of them
/// and everything else it allocated is gone (the connections themselves
/// sit in a vector allocated beforehand), and the size of one.
fn per_connection<T>(n: usize, mut make: impl FnMut() -> T) -> (isize, usize) {
    let mut held = Vec::with_capacity(n);
    let before = in_use();
    for _ in 0..n {
        held.push(make());
    }
    let after = in_use();
    drop(held);
    ((after - before) / n as isize, std::mem::size_of::<T>())
}

fn main() {
    let n: usize = std::env::var("TETHER_TLS_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let (server, client) = configs();
    // Warm up: the first handshake allocates what every later one shares.
    drop(buffered(&server, &client));
    drop(unbuffered(&server, &client));
    println!("{n} idle TLS 1.3 server connections each, after a handshake and one line");
    println!("{:<34} {:>8} {:>8} {:>8}", "bytes per connection", "struct", "heap", "total");
    let (heap, size) = per_connection(n, || buffered(&server, &client));
    println!("{:<34} {size:>8} {heap:>8} {:>8}", "rustls ServerConnection (buffered)", size as isize + heap);
    let (heap, size) = per_connection(n, || unbuffered(&server, &client));
    println!("{:<34} {size:>8} {heap:>8} {:>8}", "rustls UnbufferedServerConnection", size as isize + heap);
}
