//! The process's DTLS setup, made once instead of once per PeerConnection.
//!
//! str0m's aws-lc-rs backend builds a fresh `dimpl::Config` for every `Rtc`, and building one
//! runs dimpl's crypto self-validation (a test ECDH exchange and a test ECDSA signature
//! check): ~11 million instructions, a few milliseconds of a worker's core per joining peer
//! during which no media moves (measured with callgrind on `engine_fanout`, see
//! docs/benchmarks.md). It also generates a new self-signed certificate per peer.
//!
//! This provider keeps one validated config and one certificate for the whole process, as
//! mediasoup keeps one certificate per worker; every peer still runs its own DTLS handshake
//! with its own keys for SRTP. Only peer creation touches it, never the media path.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::CryptoError;

/// The crypto provider every peer of this process uses: str0m's aws-lc-rs provider with the
/// DTLS part replaced by [`SharedDtls`].
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            static DTLS: SharedDtls = SharedDtls {
                config: OnceLock::new(),
                cert: OnceLock::new(),
            };
            let mut p = str0m::crypto::from_feature_flags();
            p.dtls_provider = &DTLS;
            Arc::new(p)
        })
        .clone()
}

/// One dimpl config (built for the first MTU asked for) and one certificate, shared.
#[derive(Debug)]
struct SharedDtls {
    config: OnceLock<(Option<usize>, Arc<dimpl::Config>)>,
    cert: OnceLock<Option<DtlsCert>>,
}

fn build_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    // As str0m's backend does: ICE has verified return routability before DTLS starts, so
    // server cookies add a round trip for nothing.
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    builder
        .build()
        .map(Arc::new)
        .map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))
}

impl DtlsProvider for SharedDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.cert
            .get_or_init(|| {
                dimpl::certificate::generate_self_signed_certificate()
                    .ok()
                    .map(|c| DtlsCert {
                        certificate: c.certificate,
                        private_key: c.private_key,
                    })
            })
            .clone()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = match self.config.get() {
            Some((m, c)) if *m == mtu => c.clone(),
            Some(_) => build_config(mtu)?,
            None => {
                let c = build_config(mtu)?;
                // A racing thread may have stored its own; either is fine.
                let _ = self.config.set((mtu, c.clone()));
                c
            }
        };
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )))
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// A dimpl endpoint behind str0m's DTLS interface.
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dtls::Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
