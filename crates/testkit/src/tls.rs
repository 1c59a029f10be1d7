//! HTTPS and WSS for the testkit's clients: they trust exactly the certificates whose
//! SHA-256 fingerprints were handed to [`trust`] (a [`crate::TestServer`] started with
//! `tls` trusts its own self-signed one from its start log line), and nothing else.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

static TRUSTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Trusts the certificate with this SHA-256 fingerprint (hex, with or without colons, any
/// case) for every HTTPS and WSS connection of this process.
pub fn trust(fingerprint: &str) {
    TRUSTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(normalize(fingerprint));
}

fn normalize(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn is_trusted(der: &[u8]) -> bool {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    TRUSTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&hex)
}

/// Accepts a server whose certificate is one of the trusted ones, whatever its names and
/// dates; its handshake signatures are still checked, so it must hold the key.
#[derive(Debug)]
struct Pinned(Arc<CryptoProvider>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if is_trusted(end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration of every HTTPS request and WSS connection of the testkit.
pub fn client_config() -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned(provider)))
        .with_no_client_auth())
}

/// Opens a WebSocket to a `wss://` URL over TLS that trusts the [`trust`]ed certificates.
pub async fn connect_wss(url: &str) -> anyhow::Result<WebSocketStream<TlsStream<TcpStream>>> {
    let request = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {url}"))?;
    let uri = request.uri();
    let host = uri
        .host()
        .with_context(|| format!("no host in {url}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("TCP connect to {host}:{port}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone()).with_context(|| format!("server name {host}"))?;
    let tls = TlsConnector::from(Arc::new(client_config()?))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {host}:{port}"))?;
    let (ws, _resp) = tokio_tungstenite::client_async(request, tls)
        .await
        .with_context(|| format!("WebSocket handshake with {url}"))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_whatever_their_spelling() {
        assert_eq!(normalize("ab:CD:0f"), "ABCD0F");
        assert!(!is_trusted(b"a certificate nobody trusts"));
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"pinned");
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        trust(&hex.join(":"));
        assert!(is_trusted(b"pinned"));
    }
}
