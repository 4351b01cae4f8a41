//! TLS from the client's side: a throwaway CA and the certificates it
//! issues (made with `rcgen`, written to PEM files for the gateway's
//! flags), and a blocking rustls client that asserts exact plaintext
//! bytes, with a read timeout on every wait, like [`super::Client`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::TIMEOUT;

/// A CA, the server certificate it issued (for `localhost` and
/// `127.0.0.1`), and a directory holding their PEM files.
pub struct Pki {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
}

impl Pki {
    /// A fresh CA named `name`, with its files in a new directory.
    pub fn new(name: &str) -> Pki {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-tls-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("tether test CA {name}"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        let pki = Pki { dir, issuer: Issuer::new(params, key), ca: cert.der().clone() };
        pki.issue("server", "localhost", &["localhost", "127.0.0.1"]);
        pki
    }

    /// Issues a certificate with common name `cn` and these SANs, written
    /// to `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// A client configuration trusting this CA, presenting the client
    /// certificate in `identity` (files from [`Pki::issue`]) if given.
    pub fn client_config(&self, identity: Option<&(PathBuf, PathBuf)>) -> Arc<ClientConfig> {
        self.client_config_for(&rustls::version::TLS13, identity)
    }

    /// [`Pki::client_config`] speaking only TLS `version`.
    pub fn client_config_for(
        &self,
        version: &'static rustls::SupportedProtocolVersion,
        identity: Option<&(PathBuf, PathBuf)>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder.with_client_auth_cert(certs(cert), private_key(key)).unwrap(),
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path).unwrap().map(Result::unwrap).collect()
}

fn private_key(path: &Path) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).unwrap()
}

/// A blocking TLS client with a read timeout.
pub struct TlsClient {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects and completes the handshake (for `localhost`).
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
        TlsClient::over(TcpStream::connect(addr)?, config)
    }

    /// Completes the handshake on a connected stream.
    pub fn over(stream: TcpStream, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut tls = StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient { tls })
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).expect("send");
        self.tls.flush().unwrap();
    }

    /// Reads exactly `expected.len()` bytes of plaintext and asserts they
    /// are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0; expected.len()];
        let mut n = 0;
        while n < got.len() {
            match self.tls.read(&mut got[n..]) {
                Ok(0) => panic!(
                    "closed after {:?}, waiting for {:?}",
                    got[..n].escape_ascii().to_string(),
                    expected.escape_ascii().to_string()
                ),
                Ok(k) => n += k,
                Err(e) => panic!(
                    "{e} after {:?}, waiting for {:?}",
                    got[..n].escape_ascii().to_string(),
                    expected.escape_ascii().to_string()
                ),
            }
        }
        assert_eq!(got.escape_ascii().to_string(), expected.escape_ascii().to_string());
    }

    /// Reads until the gateway's `close_notify`; fails on more bytes.
    pub fn expect_close_notify(&mut self) {
        let mut rest = Vec::new();
        match self.tls.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected {:?}", rest.escape_ascii().to_string()),
            Err(e) => panic!("no close_notify: {e} (after {:?})", rest.escape_ascii().to_string()),
        }
    }
}
