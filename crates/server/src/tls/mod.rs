//! HTTPS and WSS for the whole HTTP listener: where the certificate comes from (PEM files or
//! one made at start), the rustls configuration built from it, and the accept loop that
//! serves the router over it.

mod cert;
mod listener;

use std::path::PathBuf;

pub use cert::Certified;
pub use listener::serve;

/// Where the listener's certificate comes from (`--tls-cert`/`--tls-key` or
/// `--tls-self-signed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A PEM certificate chain and its PEM private key.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate made at start for this host's names and addresses.
    SelfSigned,
}
