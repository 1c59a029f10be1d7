//! Temporal layers: the frames of a video stream split into layers of doubling frame rate
//! (browsers send VP8 simulcast streams in three, `L1T3`, and SVC in `L3T3_KEY`), where a
//! frame never depends on a higher layer's. A subscription short of bandwidth can forward
//! the lower layers alone, at a half or a quarter of the frame rate, before it has to take
//! a smaller picture or pause.
//!
//! The layer fields are read once at the origin ([`TemporalLayer`]: from the VP8 payload
//! descriptor here, from the VP9 descriptor or AV1's dependency descriptor through `svc`).
//! Per subscriber, [`select`] decides, as mediasoup's and LiveKit's forwarders do: a
//! subscription moves down at the start of any frame, and up only where the stream allows
//! it, at a frame that marks a switching point (VP8's layer sync bit, VP9's switching up
//! point) or, for AV1, at a base-layer frame (`L3T3` frames above the base refer to nothing
//! before the latest base frame), and at every keyframe. Dropped frames leave no gap in the
//! sequence numbers (`rewrite`) nor, for VP8, in the PictureID (`vp8`): libwebrtc's VP8
//! receiver waits for every missing PictureID before it decodes the next frame.

/// Temporal layers the allocator measures and chooses between; higher ones count with the
/// top one (and are forwarded with it).
pub const MAX_TEMPORAL: usize = 3;

/// Every temporal layer: what a subscription forwards unless its downlink is short.
pub const ALL_TEMPORAL: u8 = u8::MAX;

/// The temporal layer fields of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemporalLayer {
    /// The layer, 0 the base.
    pub tid: u8,
    /// The packet starts a frame (for SVC: a picture): a subscription changes what it
    /// forwards only there.
    pub frame_start: bool,
    /// The highest layer a subscription may start forwarding at this frame
    /// ([`ALL_TEMPORAL`] at a keyframe; 0: none, it may only move down here).
    pub switch_up: u8,
}

impl TemporalLayer {
    /// Reads an untrusted VP8 payload descriptor (RFC 7741); `None` when it carries no
    /// temporal layer index (a stream without temporal layers) or is malformed.
    pub fn vp8(p: &[u8], keyframe: bool) -> Option<Self> {
        let &b0 = p.first()?;
        if b0 & 0x80 == 0 {
            return None; // no extension byte, so no TID
        }
        let frame_start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
        let &x = p.get(1)?;
        let (has_pid, has_tl0, has_tid, has_key) =
            (x & 0x80 != 0, x & 0x40 != 0, x & 0x20 != 0, x & 0x10 != 0);
        if !has_tid {
            return None;
        }
        let mut i = 2;
        if has_pid {
            i += if p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if has_tl0 {
            i += 1;
        }
        let _ = has_key; // KEYIDX shares the TID byte
        let &t = p.get(i)?;
        let tid = t >> 6;
        let layer_sync = t & 0x20 != 0;
        let switch_up = match (keyframe, layer_sync) {
            (true, _) => ALL_TEMPORAL,
            (false, true) => tid,
            (false, false) => 0,
        };
        Some(TemporalLayer {
            tid,
            frame_start,
            switch_up,
        })
    }
}

/// Whether a subscription that forwards temporal layers up to `current` and should get up
/// to `target` forwards this packet; moves `current` where the stream allows.
/// Up is one layer at a time: a switching point of layer t says that frame needs nothing
/// above the base, not that the layers between are decodable from there.
pub fn select(current: &mut u8, target: u8, t: &TemporalLayer) -> bool {
    if t.frame_start {
        if target < *current {
            *current = target;
        } else if target > *current {
            if t.switch_up == ALL_TEMPORAL {
                *current = target;
            } else if Some(t.switch_up) == current.checked_add(1) {
                *current = t.switch_up;
            }
        }
    }
    t.tid <= *current
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-packet frame's descriptor: PictureID, TL0PICIDX, TID and layer sync.
    fn vp8(tid: u8, sync: bool) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80,
            0x05,
            7,
            tid << 6 | if sync { 0x20 } else { 0 },
            0x01,
        ]
    }

    fn frame(tid: u8, switch_up: u8) -> TemporalLayer {
        TemporalLayer {
            tid,
            frame_start: true,
            switch_up,
        }
    }

    #[test]
    fn reads_the_vp8_descriptor() {
        let t = TemporalLayer::vp8(&vp8(2, true), false).unwrap();
        assert_eq!((t.tid, t.frame_start, t.switch_up), (2, true, 2));
        let t = TemporalLayer::vp8(&vp8(1, false), false).unwrap();
        assert_eq!((t.tid, t.switch_up), (1, 0));
        assert_eq!(
            TemporalLayer::vp8(&vp8(0, false), true).unwrap().switch_up,
            ALL_TEMPORAL
        );
        // A continuation packet (S unset) does not start a frame.
        let mut p = vp8(0, false);
        p[0] = 0x80;
        assert!(!TemporalLayer::vp8(&p, false).unwrap().frame_start);
        // No T bit, no extension, truncated: nothing to select on.
        assert_eq!(
            TemporalLayer::vp8(&[0x90, 0xc0, 0x80, 0x05, 7], false),
            None
        );
        assert_eq!(TemporalLayer::vp8(&[0x10, 0x9d], false), None);
        assert_eq!(TemporalLayer::vp8(&[0x90, 0xe0, 0x80], false), None);
        assert_eq!(TemporalLayer::vp8(&[], false), None);
    }

    #[test]
    fn moves_down_at_any_frame_and_up_at_a_switching_point() {
        let mut current = ALL_TEMPORAL;
        // Down to the base layer at the next frame, whatever its layer.
        assert!(!select(&mut current, 0, &frame(2, 0)));
        assert_eq!(current, 0);
        assert!(select(&mut current, 0, &frame(0, 0)));
        assert!(!select(&mut current, 0, &frame(1, 1)));
        // Up to 2: not at a frame that is no switching point, nor at a switching point of
        // layer 2 while layer 1 is not forwarded; one layer at a time.
        assert!(!select(&mut current, 2, &frame(1, 0)));
        assert!(!select(&mut current, 2, &frame(2, 2)));
        assert_eq!(current, 0);
        assert!(select(&mut current, 2, &frame(1, 1)));
        assert_eq!(current, 1);
        assert!(!select(&mut current, 2, &frame(2, 0)));
        assert!(select(&mut current, 2, &frame(2, 2)));
        assert_eq!(current, 2);
        // Not past the target.
        let mut current = 0;
        assert!(!select(&mut current, 0, &frame(1, 1)));
        assert_eq!(current, 0);
        // Everything at a keyframe.
        assert!(select(&mut current, ALL_TEMPORAL, &frame(0, ALL_TEMPORAL)));
        assert_eq!(current, ALL_TEMPORAL);
        assert!(select(&mut current, ALL_TEMPORAL, &frame(2, 0)));
    }

    #[test]
    fn changes_only_at_a_frame_start() {
        let mut current = ALL_TEMPORAL;
        let middle = TemporalLayer {
            tid: 2,
            frame_start: false,
            switch_up: 0,
        };
        assert!(
            select(&mut current, 0, &middle),
            "the frame started is finished"
        );
        assert_eq!(current, ALL_TEMPORAL);
    }
}
