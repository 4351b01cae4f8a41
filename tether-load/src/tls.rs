//! `--tls`: the client side of TLS, rustls's client configuration built
//! from the flags. The loop drives each connection's `ClientConnection`
//! itself (see `fleet`), as the gateway's reactor drives its side.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::cli::Args;

/// Debian's bundle of the system's CAs, trusted without `--tls-ca`.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What every collar's TLS connection is made with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// The client configuration the flags ask for, if `--tls`.
pub fn from_args(args: &Args) -> Result<Option<ClientTls>, String> {
    if !args.tls {
        return Ok(None);
    }
    let ca = args.tls_ca.as_deref().unwrap_or(Path::new(SYSTEM_CAS));
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(certificates(cert)?, key).map_err(|e| format!("{}: {e}", cert.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    // By default rustls keeps the gateway's tickets in memory (a bounded
    // cache per server name), so a later connection resumes.
    let name = match &args.tls_server_name {
        Some(name) => ServerName::try_from(name.clone()).map_err(|e| format!("--tls-server-name {name}: {e}"))?,
        None => ServerName::from(args.target.ip()),
    };
    if args.tls_no_resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Some(ClientTls { config: Arc::new(config), name }))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}
