//! `--tls`: the client side of TLS, rustls's client configuration built
//! from the flags. The loop drives each connection's `ClientConnection`
//! itself (see `fleet`), as the gateway's reactor drives its side.
//!
//! Client certificates for mutual TLS come one of two ways:
//! - `--client-cert/--client-key`: one certificate for the whole fleet (the
//!   gateway accepts it for one MAC, its CN, so for one collar);
//! - `--client-ca-cert/--client-ca-key`: each collar its own, as a real
//!   fleet has. When a collar starts, a fresh ECDSA P-256 key and a
//!   certificate for it (CN = the collar's MAC, valid from an hour ago to a
//!   day ahead) are made and signed with the CA's key ([`CollarCa`]). The
//!   collar's connection gets a clone of the fleet's `ClientConfig` whose
//!   certificate resolver hands rustls that certificate once ([`OneCert`]):
//!   after the handshake, rustls has dropped the key and the certificate,
//!   and what stays with the connection is the config's clone (a few
//!   hundred bytes, whose parts are shared `Arc`s). Made at connect time,
//!   not ahead of the wave: only the collars handshaking hold a key.
//!   Resumption is off with them: a TLS 1.3 ticket resumes the identity of
//!   the collar it was issued to, so one collar's ticket would present
//!   another's certificate (and MAC) to the gateway.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tether::device::Mac;
use time::{Duration, OffsetDateTime};

use crate::cli::Args;

/// Debian's bundle of the system's CAs, trusted without `--tls-ca`.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A collar certificate is valid from this long before it is made (clocks
/// drift) ...
const NOT_BEFORE: Duration = Duration::hours(1);
/// ... to this long after: a run's handshakes all happen well within.
const NOT_AFTER: Duration = Duration::days(1);

/// What every collar's TLS connection is made with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
    /// `--client-ca-cert`: the CA that issues each collar's certificate.
    pub collar_ca: Option<Arc<CollarCa>>,
}

impl ClientTls {
    /// A new TLS connection for the collar with this MAC: with the fleet's
    /// configuration, or with one that presents the collar's own
    /// certificate.
    pub fn connect(&self, mac: Mac) -> Result<ClientConnection, String> {
        let config = match &self.collar_ca {
            None => Arc::clone(&self.config),
            Some(ca) => {
                let mut config = ClientConfig::clone(&self.config);
                config.client_auth_cert_resolver = Arc::new(OneCert(Mutex::new(Some(ca.issue(mac)?))));
                Arc::new(config)
            }
        };
        ClientConnection::new(config, self.name.clone()).map_err(|e| e.to_string())
    }
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
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
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
    let collar_ca = match (&args.client_ca_cert, &args.client_ca_key) {
        (Some(cert), Some(key)) => Some(Arc::new(CollarCa::load(cert, key, provider)?)),
        _ => None,
    };
    // By default rustls keeps the gateway's tickets in memory (a bounded
    // cache per server name), so a later connection resumes; never across
    // collars of their own identity (see the module docs).
    if args.tls_no_resume || collar_ca.is_some() {
        config.resumption = Resumption::disabled();
    }
    let name = match &args.tls_server_name {
        Some(name) => ServerName::try_from(name.clone()).map_err(|e| format!("--tls-server-name {name}: {e}"))?,
        None => ServerName::from(args.target.ip()),
    };
    Ok(Some(ClientTls { config: Arc::new(config), name, collar_ca }))
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

/// `--client-ca-cert/--client-ca-key`: the CA that issues every collar its
/// own certificate.
pub struct CollarCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, sent after the collar's so that a gateway
    /// trusting a CA above this one can build the chain.
    chain: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for CollarCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollarCa").finish_non_exhaustive()
    }
}

impl CollarCa {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<CollarCa, String> {
        let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
        let key_pair = KeyPair::from_pem(&read(key)?).map_err(|e| format!("{}: {e}", key.display()))?;
        let chain = certificates(cert)?.swap_remove(0);
        let issuer = Issuer::from_ca_cert_der(&chain, key_pair).map_err(|e| format!("{}: {e}", cert.display()))?;
        let ca = CollarCa { issuer, chain, provider };
        // A key that is not the certificate's, or a certificate that is no
        // CA, would fail every handshake: say so now, once, by checking a
        // collar's certificate as the gateway would.
        let certified = ca.issue(Mac::parse(b"02:00:00:00:00:00").expect("a valid MAC"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.chain.clone()).map_err(|e| format!("{}: {e}", cert.display()))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&ca.provider))
            .build()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        verifier.verify_client_cert(&certified.cert[0], &[], UnixTime::now()).map_err(|e| {
            format!(
                "{}: a certificate signed with {} does not verify against it ({e}): not this CA's key?",
                cert.display(),
                key.display()
            )
        })?;
        Ok(ca)
    }

    /// A new key and a certificate for it naming `mac`, signed by the CA.
    pub fn issue(&self, mac: Mac) -> Result<Arc<CertifiedKey>, String> {
        let failed = |e: rcgen::Error| format!("a certificate for {mac}: {e}");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.distinguished_name.push(DnType::CommonName, mac.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - NOT_BEFORE;
        params.not_after = now + NOT_AFTER;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let chain = vec![cert.der().clone(), self.chain.clone()];
        let certified = CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| failed_rustls(mac, e))?;
        Ok(Arc::new(certified))
    }
}

fn failed_rustls(mac: Mac, e: rustls::Error) -> String {
    format!("a certificate for {mac}: {e}")
}

/// One collar's certificate, handed to rustls once, when the gateway asks
/// for it: from then on only the handshake holds it, and it is freed with
/// the handshake's state.
#[derive(Debug)]
struct OneCert(Mutex<Option<Arc<CertifiedKey>>>);

impl ResolvesClientCert for OneCert {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        // rustls picks the signature scheme from the key; a poisoned lock
        // (a panic elsewhere in this thread) cannot happen in a run that
        // goes on.
        self.0.lock().ok()?.take()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, IsCa};

    use super::*;

    /// A CA's certificate and key, as `--client-ca-cert/--client-ca-key`
    /// would load them.
    fn ca() -> CollarCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "collar CA");
        let cert = params.self_signed(&key).unwrap();
        let issuer = Issuer::from_ca_cert_der(cert.der(), key).unwrap();
        CollarCa { issuer, chain: cert.der().clone(), provider: Arc::new(rustls::crypto::ring::default_provider()) }
    }

    #[test]
    fn each_collar_gets_a_certificate_naming_its_mac_that_its_ca_vouches_for() {
        let ca = ca();
        let mac = Mac::parse(b"02:4C:00:00:01:02").unwrap();
        let certified = ca.issue(mac).unwrap();
        assert_eq!(certified.cert.len(), 2, "the collar's certificate, then the CA's");
        assert_eq!(certified.cert[1], ca.chain);
        let (_, leaf) = x509_parser::parse_x509_certificate(&certified.cert[0]).unwrap();
        let cn = leaf.subject().iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "02:4C:00:00:01:02");
        let valid = leaf.validity();
        let lifetime = valid.not_after.timestamp() - valid.not_before.timestamp();
        assert_eq!(lifetime, (NOT_BEFORE + NOT_AFTER).whole_seconds());
        // A verifier that trusts the CA (as the gateway's does) accepts it
        // now, not after it expires.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.chain.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&ca.provider)).build().unwrap();
        let now = UnixTime::now();
        verifier.verify_client_cert(&certified.cert[0], &[], now).unwrap();
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + 2 * 86_400));
        assert!(verifier.verify_client_cert(&certified.cert[0], &[], later).is_err());
        // Every collar has a key of its own.
        let other = ca.issue(Mac::parse(b"02:4C:00:00:01:03").unwrap()).unwrap();
        assert_ne!(other.key.public_key(), certified.key.public_key());
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("tether-load-collar-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "collar CA");
        std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("other.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let (ca, ca_key, other_key) = (dir.join("ca.pem"), dir.join("ca.key"), dir.join("other.key"));
        CollarCa::load(&ca, &ca_key, provider()).unwrap();
        let err = CollarCa::load(&ca, &other_key, provider()).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}: a certificate signed with {} does not verify",
                ca.display(),
                other_key.display()
            )),
            "{err}"
        );
        let err = CollarCa::load(&ca, &ca, provider()).unwrap_err();
        assert!(err.starts_with(&ca.display().to_string()), "a certificate is no key: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_resolver_hands_the_certificate_over_once() {
        let certified = ca().issue(Mac::parse(b"02:4C:00:00:00:09").unwrap()).unwrap();
        let one = OneCert(Mutex::new(Some(Arc::clone(&certified))));
        assert!(Arc::ptr_eq(&one.resolve(&[], &[]).unwrap(), &certified));
        assert!(one.resolve(&[], &[]).is_none());
        assert_eq!(Arc::strong_count(&certified), 1, "the resolver keeps no copy");
    }
}
