//! The listener's certificate and key: read from PEM files and checked to belong together,
//! or made at start (rcgen) for every name and address this host answers on; the rustls
//! server configuration over them, on the aws-lc-rs provider.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Source;

/// How long a self-signed certificate is valid: within the 825 days some clients (Apple's)
/// accept for a TLS server certificate.
const SELF_SIGNED_DAYS: i64 = 365;

/// Why the certificate cannot be served; the underlying error is the `source` (printed
/// after it with `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the TLS certificate {path}")]
    ReadCert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCert { path: PathBuf },
    #[error("reading the TLS private key {path}")]
    ReadKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error(
        "{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC \
         PRIVATE KEY)"
    )]
    NoKey { path: PathBuf },
    #[error("the TLS private key {path} cannot be used")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the TLS private key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("making the self-signed TLS certificate")]
    Generate(#[from] rcgen::Error),
    #[error("the TLS configuration")]
    Config(#[from] rustls::Error),
}

/// A certificate ready to serve: the rustls configuration and what the start log says of it.
#[derive(Debug, Clone)]
pub struct Certified {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, as browsers show it (`AB:CD:…`).
    pub fingerprint: String,
    /// For a self-signed certificate, the names and addresses it covers; empty otherwise.
    pub names: Vec<String>,
}

impl Certified {
    /// The certificate of `source`; `listen` and `announce` are among the addresses a
    /// self-signed one covers.
    pub fn load(source: &Source, listen: SocketAddr, announce: IpAddr) -> Result<Self, TlsError> {
        match source {
            Source::Files { cert, key } => from_files(cert, key),
            Source::SelfSigned => {
                let interfaces = if_addrs::get_if_addrs()
                    .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
                    .unwrap_or_default();
                self_signed(&self_signed_names(listen.ip(), announce, interfaces))
            }
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate chain in `cert` and the private key in `key` (PEM), checked to match.
pub fn from_files(cert: &Path, key: &Path) -> Result<Certified, TlsError> {
    let read_cert = |source| TlsError::ReadCert {
        path: cert.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_cert)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_path_buf(),
        },
        source => TlsError::ReadKey {
            path: key.to_path_buf(),
            source,
        },
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|source| TlsError::BadKey {
            path: key.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    finish(certified, provider, Vec::new())
}

/// The names a self-signed certificate covers: localhost and the loopback addresses, the
/// listen and announce addresses (unless unspecified) and every interface address.
pub fn self_signed_names(listen: IpAddr, announce: IpAddr, interfaces: Vec<IpAddr>) -> Vec<String> {
    let ips: BTreeSet<IpAddr> = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        listen,
        announce,
    ]
    .into_iter()
    .chain(interfaces)
    .map(|ip| ip.to_canonical())
    .filter(|ip| !ip.is_unspecified())
    .collect();
    std::iter::once("localhost".to_string())
        .chain(ips.into_iter().map(|ip| ip.to_string()))
        .collect()
}

/// A certificate for `names` (DNS names or IP addresses), signed by its own fresh key.
pub fn self_signed(names: &[String]) -> Result<Certified, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sfumato (self-signed)");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    // From an hour ago, for clients whose clock is a little behind.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let provider = provider();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider.key_provider.load_private_key(private)?;
    finish(
        CertifiedKey::new(vec![cert.der().clone()], signing),
        provider,
        names.to_vec(),
    )
}

fn finish(
    certified: CertifiedKey,
    provider: Arc<CryptoProvider>,
    names: Vec<String>,
) -> Result<Certified, TlsError> {
    let fingerprint = certified
        .end_entity_cert()
        .map(|c| fingerprint(c.as_ref()))
        .unwrap_or_default();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // HTTP/1.1 only: the router is served by hyper's HTTP/1 connection, which the WebSocket
    // upgrade needs anyway.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certified {
        config: Arc::new(config),
        fingerprint,
        names,
    })
}

/// SHA-256 of `der` as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sfumato-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A certificate for `localhost` with its key, as PEM.
    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_that_belong_together_load() {
        let d = dir("ok");
        let (cert, key) = pem_pair();
        std::fs::write(d.join("cert.pem"), &cert).unwrap();
        std::fs::write(d.join("key.pem"), &key).unwrap();
        let c = from_files(&d.join("cert.pem"), &d.join("key.pem")).unwrap();
        assert_eq!(c.fingerprint.len(), 32 * 3 - 1, "{}", c.fingerprint);
        assert_eq!(c.config.alpn_protocols, [b"http/1.1".to_vec()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn loading_errors_say_what_is_wrong() {
        let d = dir("bad");
        let (cert, key) = pem_pair();
        let (_, other_key) = pem_pair();
        std::fs::write(d.join("cert.pem"), &cert).unwrap();
        std::fs::write(d.join("key.pem"), &key).unwrap();
        std::fs::write(d.join("other.pem"), &other_key).unwrap();
        std::fs::write(d.join("empty.pem"), "not a pem file\n").unwrap();
        std::fs::write(d.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nAAA\n").unwrap();
        let err = |c: &str, k: &str| from_files(&d.join(c), &d.join(k)).unwrap_err();

        let e = err("missing.pem", "key.pem");
        assert!(matches!(e, TlsError::ReadCert { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = err("cert.pem", "missing.pem");
        assert!(matches!(e, TlsError::ReadKey { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = err("empty.pem", "key.pem");
        assert!(matches!(e, TlsError::NoCert { .. }), "{e}");
        let e = err("broken.pem", "key.pem");
        assert!(matches!(e, TlsError::ReadCert { .. }), "{e}");
        let e = err("cert.pem", "empty.pem");
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        // The certificate where the key should be: no key in it.
        let e = err("cert.pem", "cert.pem");
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        let e = err("cert.pem", "other.pem");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("does not belong"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_self_signed_certificate_covers_the_host() {
        let names = self_signed_names(
            "0.0.0.0".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            vec![
                "127.0.0.1".parse().unwrap(),
                "198.51.100.3".parse().unwrap(),
                "::ffff:203.0.113.9".parse().unwrap(),
            ],
        );
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "192.0.2.7",
                "198.51.100.3",
                "203.0.113.9",
                "::1"
            ]
        );
        let c = self_signed(&names).unwrap();
        assert_eq!(c.names, names);
        assert_eq!(c.fingerprint.split(':').count(), 32);
        // A fresh key each time.
        assert_ne!(self_signed(&names).unwrap().fingerprint, c.fingerprint);
    }
}
