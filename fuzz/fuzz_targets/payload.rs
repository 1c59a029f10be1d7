//! RTP payloads as the origin reads them: keyframe detection per codec (VP8, VP9, H264,
//! AV1), the VP9 layer fields, the RED primary block, and the VP8 descriptor with the
//! rewriting a subscriber's stream applies to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfumato_core::ids::{PeerId, TrackId};
use sfumato_core::rewrite::Source;
use sfumato_core::vp8::Vp8Rewriter;
use sfumato_core::{keyframe, red, vp9};
use str0m::format::Codec;
use str0m::rtp::Vp8Descriptor;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1, Codec::Opus] {
        let _ = keyframe::is_keyframe_start(codec, data);
    }
    if let Some(l) = vp9::parse(data) {
        let _ = l.temporal(true);
    }
    if let Some(p) = red::primary(data) {
        assert!(
            p.len() < data.len(),
            "the primary block is inside the payload"
        );
    }
    if let Ok(desc) = Vp8Descriptor::parse(data) {
        let track = TrackId {
            peer: PeerId(1),
            index: 0,
        };
        let one = Source { track, ssrc: 1 };
        let two = Source { track, ssrc: 2 };
        let mut rw = Vp8Rewriter::new();
        let fields = rw.rewrite(one, &desc, data);
        let _ = fields.patch(&desc);
        rw.skip(one, &desc, data);
        let fields = rw.rewrite(two, &desc, data);
        let _ = fields.patch(&desc);
    }
});
