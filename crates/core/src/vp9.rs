//! VP9 scalable video (SVC, RFC 9628): one RTP stream carries every spatial and temporal
//! layer of a picture, and each subscription forwards the spatial layers up to the one it
//! gets, dropping the rest.
//!
//! The payload descriptor is read once at the origin ([`Vp9Layer::parse`]); per subscriber,
//! [`select`] decides each packet. As in mediasoup and LiveKit, a subscription moves down at
//! the start of any picture (lower layers never depend on higher ones) and up only at a
//! keyframe: in `L3T3_KEY`, the mode browsers use, a spatial layer's frames depend on the
//! layers below only in keyframes, so a decoder cannot join a higher layer anywhere else.
//! When a picture's higher layers are dropped, the last packet of the highest forwarded
//! layer takes the marker bit (the receiver's end of the picture).
//!
//! Dropped packets leave no gap in the subscriber's sequence numbers (`rewrite` skips them).

/// The layer fields of one VP9 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp9Layer {
    pub spatial: u8,
    pub temporal: u8,
    /// B: the first packet of this layer's frame.
    pub begin: bool,
    /// E: the last packet of this layer's frame.
    pub end: bool,
    /// Spatial layers announced by the scalability structure this packet carries (V), if
    /// any: browsers send one with every keyframe and whenever the layers change.
    pub spatial_layers: Option<u8>,
}

impl Vp9Layer {
    /// Reads the descriptor of an untrusted payload; `None` when it has no layer indices
    /// (a stream without scalability: nothing to select) or is malformed.
    pub fn parse(p: &[u8]) -> Option<Self> {
        let &b0 = p.first()?;
        let picture_id = b0 & 0x80 != 0;
        let inter = b0 & 0x40 != 0;
        let layers = b0 & 0x20 != 0;
        let flexible = b0 & 0x10 != 0;
        let begin = b0 & 0x08 != 0;
        let end = b0 & 0x04 != 0;
        let ss = b0 & 0x02 != 0;
        if !layers {
            return None;
        }
        let mut i = 1;
        if picture_id {
            let &pid = p.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        let &l = p.get(i)?;
        i += 1;
        let temporal = l >> 5;
        let spatial = (l >> 1) & 0x07;
        if !flexible {
            i += 1; // TL0PICIDX
        }
        if flexible && inter {
            // Up to three reference indices, each with a "one more follows" bit.
            for _ in 0..3 {
                let &r = p.get(i)?;
                i += 1;
                if r & 0x01 == 0 {
                    break;
                }
            }
        }
        let spatial_layers = if ss {
            let &n = p.get(i)?;
            Some((n >> 5) + 1)
        } else {
            None
        };
        Some(Vp9Layer {
            spatial,
            temporal,
            begin,
            end,
            spatial_layers,
        })
    }

    /// Whether this packet starts a new picture (its lowest layer's first packet).
    pub fn picture_start(&self) -> bool {
        self.begin && self.spatial == 0
    }
}

/// What one subscription does with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub forward: bool,
    /// The marker bit to send the packet with.
    pub marker: bool,
    /// The subscription waits to move up: the publisher should send a keyframe.
    pub wants_keyframe: bool,
}

/// Decides one packet for a subscription that forwards spatial layers up to `current`
/// (`None`: nothing yet, it starts at a keyframe) and should get `target`, already clamped
/// to the layers the publisher sends. `keyframe`: the packet starts a keyframe.
pub fn select(
    current: &mut Option<u8>,
    target: u8,
    layer: &Vp9Layer,
    keyframe: bool,
    marker: bool,
) -> Decision {
    if layer.picture_start() {
        match *current {
            Some(c) if target < c => *current = Some(target),
            Some(c) if target > c && keyframe => *current = Some(target),
            None if keyframe => *current = Some(target),
            _ => {}
        }
    }
    let Some(c) = *current else {
        return Decision {
            forward: false,
            marker,
            wants_keyframe: true,
        };
    };
    Decision {
        forward: layer.spatial <= c,
        marker: marker || (layer.end && layer.spatial == c),
        wants_keyframe: target > c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-flexible descriptor: I (15-bit picture id), L, B/E as given, SS with 3 layers if
    /// `ss`; P set unless `key`.
    fn desc(sid: u8, tid: u8, b: bool, e: bool, key: bool, ss: bool) -> Vec<u8> {
        let mut b0 = 0xa0;
        if !key {
            b0 |= 0x40;
        }
        if b {
            b0 |= 0x08;
        }
        if e {
            b0 |= 0x04;
        }
        if ss {
            b0 |= 0x02;
        }
        let mut p = vec![b0, 0x81, 0x23, (tid << 5) | (sid << 1), 7];
        if ss {
            p.push(2 << 5);
        }
        p.extend_from_slice(&[0xde, 0xad]);
        p
    }

    fn parsed(p: &[u8]) -> Vp9Layer {
        Vp9Layer::parse(p).expect("a layered descriptor")
    }

    #[test]
    fn reads_layers_and_the_scalability_structure() {
        let l = parsed(&desc(2, 1, true, false, false, false));
        assert_eq!((l.spatial, l.temporal, l.begin, l.end), (2, 1, true, false));
        assert_eq!(l.spatial_layers, None);
        assert!(!l.picture_start());
        let k = parsed(&desc(0, 0, true, true, true, true));
        assert_eq!(k.spatial_layers, Some(3));
        assert!(k.picture_start());
    }

    #[test]
    fn flexible_mode_reference_indices_are_skipped() {
        // I=1 P=1 L=1 F=1 B=1 V=1; 7-bit pid; layer byte; two P_DIFF (N set on the first); SS.
        let p = [0xfa, 0x05, (1 << 5) | (1 << 1), 0x03, 0x02, 1 << 5, 0x00];
        let l = parsed(&p);
        assert_eq!((l.spatial, l.temporal), (1, 1));
        assert_eq!(l.spatial_layers, Some(2));
    }

    #[test]
    fn truncated_or_unlayered_is_none() {
        let p = desc(1, 0, true, true, false, true);
        for len in 0..6 {
            assert_eq!(Vp9Layer::parse(&p[..len]), None, "length {len}");
        }
        // L=0: no layer indices.
        assert_eq!(Vp9Layer::parse(&[0x88, 0x81, 0x23]), None);
    }

    fn decide(current: &mut Option<u8>, target: u8, sid: u8, key: bool, end: bool) -> Decision {
        let l = parsed(&desc(sid, 0, true, end, key, false));
        select(current, target, &l, key && sid == 0, false)
    }

    #[test]
    fn starts_at_a_keyframe_and_drops_layers_above_the_target() {
        let mut current = None;
        let d = decide(&mut current, 1, 0, false, true);
        assert!(!d.forward && d.wants_keyframe);
        assert!(decide(&mut current, 1, 0, true, true).forward);
        assert_eq!(current, Some(1));
        let d = decide(&mut current, 1, 1, false, true);
        assert!(
            d.forward && d.marker,
            "the top forwarded layer ends the picture"
        );
        assert!(!decide(&mut current, 1, 2, false, true).forward);
    }

    #[test]
    fn moves_down_at_a_picture_start_and_up_only_at_a_keyframe() {
        let mut current = Some(2);
        // Mid-picture, nothing changes.
        assert!(decide(&mut current, 0, 2, false, true).forward);
        // The next picture: down at once.
        assert!(decide(&mut current, 0, 0, false, true).forward);
        assert_eq!(current, Some(0));
        assert!(!decide(&mut current, 0, 1, false, true).forward);
        // Up: asks, keeps the lower layer, moves at the keyframe.
        let d = decide(&mut current, 2, 0, false, true);
        assert!(d.forward && d.wants_keyframe && d.marker);
        assert!(!decide(&mut current, 2, 1, false, true).forward);
        let d = decide(&mut current, 2, 0, true, true);
        assert!(d.forward && !d.wants_keyframe && !d.marker);
        assert!(decide(&mut current, 2, 2, false, true).forward);
    }
}
