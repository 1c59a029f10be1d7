//! Scalable video (SVC): one RTP stream carries every spatial and temporal layer of a
//! picture, and each subscription forwards the spatial layers up to the one it gets,
//! dropping the rest. The codec-specific part is reading a packet's layer fields once at the
//! origin ([`SvcLayer`]: `vp9` from the VP9 payload descriptor, `dd` from AV1's dependency
//! descriptor); what to forward is decided here, per subscriber, the same way for both.
//!
//! As in mediasoup and LiveKit, a subscription moves down at the start of any picture (lower
//! layers never depend on higher ones) and up only at a keyframe: in `L3T3_KEY`, the mode
//! browsers use, a spatial layer's frames depend on the layers below only in keyframes, so a
//! decoder cannot join a higher layer anywhere else. When a picture's higher layers are
//! dropped, the last packet of the highest forwarded layer takes the marker bit (the
//! receiver's end of the picture).
//!
//! Dropped packets leave no gap in the subscriber's sequence numbers (`rewrite` skips them).
//! Temporal layers are chosen in `temporal`, from the fields read here.

use crate::temporal::{TemporalLayer, ALL_TEMPORAL};

/// The layer fields of one packet of a scalable stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcLayer {
    pub spatial: u8,
    pub temporal: u8,
    /// The highest temporal layer a subscription may start forwarding at this picture
    /// (`temporal::TemporalLayer::switch_up`, without the keyframe case).
    pub switch_up: u8,
    /// The first packet of this layer's frame.
    pub begin: bool,
    /// The last packet of this layer's frame.
    pub end: bool,
    /// Spatial layers of the stream: what this packet announces (VP9's scalability
    /// structure, AV1's template structure) when read, the stream's latest count once the
    /// origin has filled it in.
    pub spatial_layers: Option<u8>,
}

impl SvcLayer {
    /// Whether this packet starts a new picture (its lowest layer's first packet).
    pub fn picture_start(&self) -> bool {
        self.begin && self.spatial == 0
    }

    /// Its temporal layer fields; decisions are per picture.
    pub fn temporal(&self, keyframe: bool) -> TemporalLayer {
        TemporalLayer {
            tid: self.temporal,
            frame_start: self.picture_start(),
            switch_up: if keyframe {
                ALL_TEMPORAL
            } else {
                self.switch_up
            },
        }
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
    layer: &SvcLayer,
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

    fn layer(spatial: u8, end: bool) -> SvcLayer {
        SvcLayer {
            spatial,
            temporal: 0,
            switch_up: 0,
            begin: true,
            end,
            spatial_layers: None,
        }
    }

    fn decide(current: &mut Option<u8>, target: u8, sid: u8, key: bool, end: bool) -> Decision {
        let l = layer(sid, end);
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
