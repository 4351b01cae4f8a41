//! TLS settings: the certificate, key and client CA files of a TLS
//! listener, loaded into a rustls [`ServerConfig`].
//!
//! Everything cryptographic is rustls's (with the `ring` provider, which
//! builds with only a C compiler); PEM is read by `rustls-pki-types`. This
//! module only picks the settings: TLS 1.3, and 1.2 when asked; a client
//! certificate from the given CA required when there is one; stateless
//! session tickets (TLS 1.3) and a bounded session cache (TLS 1.2), so a
//! reconnecting collar skips the full handshake.
//!
//! [`TlsFiles::load`] is called at start-up and again on SIGHUP; a file
//! that does not load is an error naming the file and why, so a reload
//! keeps the configuration in force.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Sessions the TLS 1.2 resumption cache remembers (each about 100 bytes);
/// TLS 1.3 resumes with stateless tickets and needs no cache.
const SESSION_CACHE: usize = 4096;

/// Where a TLS listener's certificate, key and client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Require client certificates issued by this CA (PEM), if set.
    pub client_ca: Option<PathBuf>,
    /// Allow TLS 1.2 as well as 1.3.
    pub tls12: bool,
}

/// A file that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl From<LoadError> for std::io::Error {
    fn from(e: LoadError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

fn failed(path: &Path, what: &str, e: impl fmt::Display) -> LoadError {
    LoadError(format!("{}: {what}: {e}", path.display()))
}

impl TlsFiles {
    /// Reads the files and builds the server configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, LoadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certificates(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| failed(&self.key, "private key", e))?;
        let versions: &[&rustls::SupportedProtocolVersion] =
            if self.tls12 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| failed(&self.cert, "protocol versions", e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, &provider)?),
        };
        let mut config =
            builder.with_single_cert(certs, key).map_err(|e| failed(&self.key, "certificate and key", e))?;
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| failed(&self.cert, "session tickets", e))?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Arc::new(config))
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(path, "certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(failed(path, "certificates", "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Requires a client certificate that chains to a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, LoadError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| failed(path, "client CA", e))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| failed(path, "client CA", e))
}
