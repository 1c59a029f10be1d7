//! Small str0m helpers shared by the test client and the load generator (`sfumato-bench`).

use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::Rtc;

/// The payload type the remote negotiated for `codec` on `mid`, if any.
pub fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let cfg = rtc.codec_config();
    media.remote_pts().iter().copied().find(|pt| {
        cfg.params()
            .iter()
            .any(|p| p.pt() == *pt && p.spec().codec == codec)
    })
}

/// A random u64 from the std hasher's per-process random keys and the clock (no dependency).
pub fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
