//! What the fuzz targets share: a fixed cluster clock, and inputs cut into pieces.

use std::time::Instant;

use sfumato_core::wire::ClusterClock;

/// A cluster clock fixed for the run, so that an input replays the same way.
pub fn clock() -> ClusterClock {
    use std::sync::OnceLock;
    static AT: OnceLock<Instant> = OnceLock::new();
    ClusterClock {
        at: *AT.get_or_init(Instant::now),
        unix_micros: 1_800_000_000_000_000,
    }
}

/// Cuts `data` into pieces, each one length byte then up to that many bytes.
pub fn pieces(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&n, rest) = data.split_first()?;
        let n = usize::from(n).min(rest.len());
        let (piece, rest) = rest.split_at(n);
        data = rest;
        Some(piece)
    })
}
