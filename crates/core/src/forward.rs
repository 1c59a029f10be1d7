//! Which packets one subscription forwards: the simulcast layer it takes (switching at
//! keyframes, falling back, stepping up), the spatial and temporal layers it keeps, and when
//! it asks for a keyframe. Pure (no str0m, no peer): a relay can hold a [`Forwarder`] too.

use std::time::{Duration, Instant};

use crate::svc::{self, SvcLayer};
use crate::temporal::{self, TemporalLayer, ALL_TEMPORAL};

/// How long a subscription with nothing to forward waits for its target layer before it
/// takes a lower one.
pub const LAYER_FALLBACK: Duration = Duration::from_secs(1);
/// How often one subscription may ask for a keyframe while it waits for one.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(300);
/// The layer a new subscription asks for: the best the publisher sends.
pub const HIGHEST_LAYER: u8 = crate::api::DEFAULT_LAYER;

/// What the decision reads of a packet: its layer fields, read once at the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketView {
    /// Simulcast layer of its stream, 0 the lowest (0 without simulcast).
    pub layer: u8,
    /// Simulcast layers the publisher announced (1 without simulcast).
    pub layers: u8,
    /// The packet starts a keyframe (always true for audio).
    pub keyframe: bool,
    pub marker: bool,
    /// The layer fields of a scalable (SVC) stream.
    pub svc: Option<SvcLayer>,
    /// The temporal layer fields, if the stream has temporal layers.
    pub temporal: Option<TemporalLayer>,
}

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send it with this marker bit (moved when higher spatial layers are dropped).
    Forward { marker: bool },
    /// Not sent, but it belongs to the stream being sent (a spatial or temporal layer
    /// above this subscription's): the sender must close its gap (`Rewriter::skip`, and
    /// `Vp8Rewriter::skip` for a VP8 packet) so that the receiver sees none.
    Skip,
    /// Not sent, and nothing to account for (another simulcast stream, off, not ready).
    Drop,
}

/// The decision for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The subscription waits for a keyframe (to start, or to move to its target layer)
    /// and it is time to ask the origin again (at most every [`KEYFRAME_RETRY`]).
    pub ask_keyframe: bool,
}

/// The state of one subscription's forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarder {
    /// The layer this subscription should receive now (clamped to the layers the track
    /// has when a packet is decided); `None`: off, no packets.
    pub target: Option<u8>,
    /// The highest temporal layer to forward of `target` ([`ALL_TEMPORAL`] unless the
    /// downlink is short).
    pub temporal_target: u8,
    /// The highest temporal layer being forwarded; moves to `temporal_target` where the
    /// stream allows (`temporal::select`).
    pub temporal: u8,
    /// The layer being forwarded; a switch to `target` happens at one of its keyframes.
    /// `None`: nothing can be forwarded until a keyframe (a new subscription, a resumed one).
    pub current: Option<u8>,
    /// Since when nothing has been forwarded while waiting for a layer (for the fallback
    /// to a lower one).
    pub idle_since: Option<Instant>,
    /// When a keyframe was last asked for on this subscription's behalf.
    pub last_keyframe_ask: Option<Instant>,
}

impl Default for Forwarder {
    /// A new subscription: the best layer, every temporal layer, waiting for a keyframe.
    fn default() -> Self {
        Forwarder {
            target: Some(HIGHEST_LAYER),
            temporal_target: ALL_TEMPORAL,
            temporal: ALL_TEMPORAL,
            current: None,
            idle_since: None,
            last_keyframe_ask: None,
        }
    }
}

impl Forwarder {
    /// Nothing more is forwarded until a keyframe (the receiver has to start decoding over).
    pub fn restart(&mut self) {
        self.current = None;
        self.idle_since = None;
        self.last_keyframe_ask = None;
    }

    /// Whether this subscription, waiting for a keyframe, may ask again now (and records
    /// the ask).
    pub fn may_ask_keyframe(&mut self, now: Instant) -> bool {
        let due = self
            .last_keyframe_ask
            .is_none_or(|t| now >= t + KEYFRAME_RETRY);
        if due {
            self.last_keyframe_ask = Some(now);
        }
        due
    }

    /// Decides one packet of the subscribed track and moves the state on.
    pub fn decide(&mut self, pkt: &PacketView, now: Instant) -> Decision {
        let Some(target) = self.target else {
            return Decision::new(Action::Drop, false); // turned off
        };
        let mut marker = pkt.marker;
        let mut ask_keyframe = false;
        if let Some(layer) = &pkt.svc {
            // One stream, every spatial layer: keep those up to the one this subscription
            // gets.
            let top = layer.spatial_layers.unwrap_or(1).saturating_sub(1);
            let d = svc::select(
                &mut self.current,
                target.min(top),
                layer,
                pkt.keyframe,
                marker,
            );
            if !d.forward {
                let ask = self.current.is_none() && self.may_ask_keyframe(now);
                return Decision::new(Action::Skip, ask);
            }
            marker = d.marker;
            ask_keyframe = d.wants_keyframe && self.may_ask_keyframe(now);
        } else if self.current != Some(pkt.layer) {
            // Not the layer being forwarded: maybe the one to switch to.
            let target = target.min(pkt.layers.saturating_sub(1));
            let idle_since = *self.idle_since.get_or_insert(now);
            // A subscription that has waited long for its target layer takes a keyframe of
            // a lower one rather than show nothing (the target may be off at the
            // publisher); it still switches up at the target's next keyframe.
            let fallback =
                self.current.is_none() && pkt.layer < target && now >= idle_since + LAYER_FALLBACK;
            // Below the target, any layer closer to it is a step up worth taking.
            let step_up = self
                .current
                .is_some_and(|c| c < pkt.layer && pkt.layer < target);
            if pkt.layer != target && !fallback && !step_up {
                return Decision::new(Action::Drop, false);
            }
            if !pkt.keyframe {
                // The target's keyframe is asked for; once the fallback is due, a lower
                // layer's too (a publisher sends one unasked only when it starts).
                let ask = (pkt.layer == target || fallback) && self.may_ask_keyframe(now);
                return Decision::new(Action::Drop, ask);
            }
            self.current = Some(pkt.layer);
            self.idle_since = None;
        }
        if let Some(t) = &pkt.temporal {
            if !temporal::select(&mut self.temporal, self.temporal_target, t) {
                // A whole frame above the temporal layers this subscription gets. (An ask
                // counted above is not passed on; the next one comes KEYFRAME_RETRY later.)
                return Decision::new(Action::Skip, false);
            }
        }
        Decision::new(Action::Forward { marker }, ask_keyframe)
    }
}

impl Decision {
    fn new(action: Action, ask_keyframe: bool) -> Self {
        Decision {
            action,
            ask_keyframe,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Table tests in the manner of LiveKit's `forwarder_test.go`: each row is the state
    //! before, one packet and the time, then the decision and the state after.

    use super::*;

    const KEY: bool = true;
    const DELTA: bool = false;

    /// A state forwarding `current` and aiming at `target`, every temporal layer, never idle,
    /// never asked.
    fn state(target: Option<u8>, current: Option<u8>) -> Forwarder {
        Forwarder {
            target,
            current,
            ..Forwarder::default()
        }
    }

    /// Times are milliseconds after a common start.
    struct At(Instant);

    impl At {
        fn ms(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    impl Forwarder {
        fn idle_since(mut self, t: Instant) -> Self {
            self.idle_since = Some(t);
            self
        }
        fn asked(mut self, t: Instant) -> Self {
            self.last_keyframe_ask = Some(t);
            self
        }
        fn temporal(mut self, target: u8, current: u8) -> Self {
            self.temporal_target = target;
            self.temporal = current;
            self
        }
    }

    /// One packet of simulcast layer `layer` of `layers` (audio: layer 0 of 1, always a
    /// keyframe).
    fn simulcast(layer: u8, layers: u8, keyframe: bool) -> PacketView {
        PacketView {
            layer,
            layers,
            keyframe,
            marker: true,
            svc: None,
            temporal: None,
        }
    }

    /// One packet of spatial layer `spatial` of a scalable stream of `spatial_layers`; `begin`
    /// and `end` of its layer's frame; a keyframe only at spatial layer 0.
    fn scalable(spatial: u8, spatial_layers: u8, begin: bool, end: bool, key: bool) -> PacketView {
        let svc = SvcLayer {
            spatial,
            temporal: 0,
            switch_up: 0,
            begin,
            end,
            spatial_layers: Some(spatial_layers),
        };
        PacketView {
            layer: 0,
            layers: 1,
            keyframe: key,
            marker: false,
            svc: Some(svc),
            temporal: Some(svc.temporal(key)),
        }
    }

    impl PacketView {
        /// With temporal layer `tid`, starting a frame, switching point up to `switch_up`.
        fn tid(mut self, tid: u8, switch_up: u8) -> Self {
            if let Some(l) = &mut self.svc {
                l.temporal = tid;
            }
            self.temporal = Some(TemporalLayer {
                tid,
                frame_start: true,
                switch_up,
            });
            self
        }
        /// With the marker bit unset (not a frame's last packet).
        fn mid_frame(mut self) -> Self {
            self.marker = false;
            self
        }
    }

    fn forward(marker: bool) -> Decision {
        Decision::new(Action::Forward { marker }, false)
    }
    fn skip() -> Decision {
        Decision::new(Action::Skip, false)
    }
    fn drop() -> Decision {
        Decision::new(Action::Drop, false)
    }
    impl Decision {
        fn ask(mut self) -> Self {
            self.ask_keyframe = true;
            self
        }
    }

    struct Row {
        name: &'static str,
        before: Forwarder,
        packet: PacketView,
        now: Instant,
        decision: Decision,
        after: Forwarder,
    }

    fn check(rows: Vec<Row>) {
        for row in rows {
            let mut f = row.before.clone();
            let d = f.decide(&row.packet, row.now);
            assert_eq!(d, row.decision, "{}: decision", row.name);
            assert_eq!(f, row.after, "{}: state after", row.name);
        }
    }

    #[test]
    fn waits_for_a_first_keyframe() {
        let t = At(Instant::now());
        check(vec![
            Row {
                name: "a delta frame of the target: ask for a keyframe",
                before: state(Some(2), None),
                packet: simulcast(2, 3, DELTA),
                now: t.ms(0),
                decision: drop().ask(),
                after: state(Some(2), None).idle_since(t.ms(0)).asked(t.ms(0)),
            },
            Row {
                name: "a keyframe of the target starts forwarding",
                before: state(Some(2), None).idle_since(t.ms(0)).asked(t.ms(0)),
                packet: simulcast(2, 3, KEY),
                now: t.ms(40),
                decision: forward(true),
                after: state(Some(2), Some(2)).asked(t.ms(0)),
            },
            Row {
                name: "audio: every packet is a keyframe",
                before: state(Some(HIGHEST_LAYER), None),
                packet: simulcast(0, 1, KEY),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(HIGHEST_LAYER), Some(0)),
            },
            Row {
                name: "the target is clamped to the layers the track has",
                before: state(Some(HIGHEST_LAYER), None),
                packet: simulcast(1, 2, KEY),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(HIGHEST_LAYER), Some(1)),
            },
            Row {
                name: "a layer below the target, before the fallback: dropped, no ask",
                before: state(Some(2), None),
                packet: simulcast(0, 3, KEY),
                now: t.ms(0),
                decision: drop(),
                after: state(Some(2), None).idle_since(t.ms(0)),
            },
            Row {
                name: "a layer above the target is never taken",
                before: state(Some(1), None).idle_since(t.ms(0)),
                packet: simulcast(2, 3, KEY),
                now: t.ms(5_000),
                decision: drop(),
                after: state(Some(1), None).idle_since(t.ms(0)),
            },
        ]);
    }

    #[test]
    fn keyframe_asks_are_throttled() {
        let t = At(Instant::now());
        let waiting = || state(Some(2), None).idle_since(t.ms(0));
        check(vec![
            Row {
                name: "asked 299 ms ago: not again",
                before: waiting().asked(t.ms(0)),
                packet: simulcast(2, 3, DELTA),
                now: t.ms(299),
                decision: drop(),
                after: waiting().asked(t.ms(0)),
            },
            Row {
                name: "asked 300 ms ago: again",
                before: waiting().asked(t.ms(0)),
                packet: simulcast(2, 3, DELTA),
                now: t.ms(300),
                decision: drop().ask(),
                after: waiting().asked(t.ms(300)),
            },
            Row {
                name: "a delta frame of a lower layer asks for nothing before the fallback",
                before: waiting(),
                packet: simulcast(1, 3, DELTA),
                now: t.ms(999),
                decision: drop(),
                after: waiting(),
            },
            Row {
                name: "a scalable stream waiting to start: skipped, asks",
                before: state(Some(2), None),
                packet: scalable(0, 3, true, true, DELTA),
                now: t.ms(0),
                decision: skip().ask(),
                after: state(Some(2), None).asked(t.ms(0)),
            },
            Row {
                name: "a scalable stream waiting to start, asked 100 ms ago",
                before: state(Some(2), None).asked(t.ms(0)),
                packet: scalable(0, 3, true, true, DELTA),
                now: t.ms(100),
                decision: skip(),
                after: state(Some(2), None).asked(t.ms(0)),
            },
        ]);
    }

    #[test]
    fn switches_simulcast_layers_at_keyframes() {
        let t = At(Instant::now());
        check(vec![
            Row {
                name: "down: the current layer flows until the target's keyframe",
                before: state(Some(0), Some(2)),
                packet: simulcast(2, 3, DELTA),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(0), Some(2)),
            },
            Row {
                name: "down: a delta frame of the target asks for a keyframe",
                before: state(Some(0), Some(2)),
                packet: simulcast(0, 3, DELTA),
                now: t.ms(0),
                decision: drop().ask(),
                after: state(Some(0), Some(2)).idle_since(t.ms(0)).asked(t.ms(0)),
            },
            Row {
                name: "down at the target's keyframe",
                before: state(Some(0), Some(2)).idle_since(t.ms(0)).asked(t.ms(0)),
                packet: simulcast(0, 3, KEY),
                now: t.ms(30),
                decision: forward(true),
                after: state(Some(0), Some(0)).asked(t.ms(0)),
            },
            Row {
                name: "up: not at a delta frame",
                before: state(Some(2), Some(0)),
                packet: simulcast(2, 3, DELTA),
                now: t.ms(0),
                decision: drop().ask(),
                after: state(Some(2), Some(0)).idle_since(t.ms(0)).asked(t.ms(0)),
            },
            Row {
                name: "up at the target's keyframe",
                before: state(Some(2), Some(0)).idle_since(t.ms(0)),
                packet: simulcast(2, 3, KEY),
                now: t.ms(10),
                decision: forward(true),
                after: state(Some(2), Some(2)),
            },
            Row {
                name: "the layer left behind is dropped",
                before: state(Some(2), Some(2)),
                packet: simulcast(0, 3, KEY),
                now: t.ms(0),
                decision: drop(),
                after: state(Some(2), Some(2)).idle_since(t.ms(0)),
            },
        ]);
    }

    #[test]
    fn falls_back_to_a_lower_layer_and_steps_up() {
        let t = At(Instant::now());
        check(vec![
            Row {
                name: "no fallback before LAYER_FALLBACK",
                before: state(Some(2), None).idle_since(t.ms(0)),
                packet: simulcast(0, 3, KEY),
                now: t.ms(999),
                decision: drop(),
                after: state(Some(2), None).idle_since(t.ms(0)),
            },
            Row {
                name: "a lower layer's keyframe after LAYER_FALLBACK",
                before: state(Some(2), None).idle_since(t.ms(0)),
                packet: simulcast(0, 3, KEY),
                now: t.ms(1_000),
                decision: forward(true),
                after: state(Some(2), Some(0)),
            },
            Row {
                name: "a fallback needs a keyframe, and asks for one",
                before: state(Some(2), None).idle_since(t.ms(0)),
                packet: simulcast(1, 3, DELTA),
                now: t.ms(1_000),
                decision: drop().ask(),
                after: state(Some(2), None).idle_since(t.ms(0)).asked(t.ms(1_000)),
            },
            Row {
                name: "no lower keyframe is asked for before LAYER_FALLBACK",
                before: state(Some(2), None).idle_since(t.ms(0)),
                packet: simulcast(1, 3, DELTA),
                now: t.ms(999),
                decision: drop(),
                after: state(Some(2), None).idle_since(t.ms(0)),
            },
            Row {
                name: "step up towards the target at a keyframe",
                before: state(Some(2), Some(0)),
                packet: simulcast(1, 3, KEY),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(2), Some(1)),
            },
            Row {
                name: "no step up at a delta frame",
                before: state(Some(2), Some(0)),
                packet: simulcast(1, 3, DELTA),
                now: t.ms(0),
                decision: drop(),
                after: state(Some(2), Some(0)).idle_since(t.ms(0)),
            },
            Row {
                name: "no step down: a lower layer than the current one",
                before: state(Some(2), Some(1)),
                packet: simulcast(0, 3, KEY),
                now: t.ms(0),
                decision: drop(),
                after: state(Some(2), Some(1)).idle_since(t.ms(0)),
            },
        ]);
    }

    #[test]
    fn off_forwards_nothing() {
        let t = At(Instant::now());
        check(vec![
            Row {
                name: "a keyframe",
                before: state(None, None),
                packet: simulcast(0, 3, KEY),
                now: t.ms(0),
                decision: drop(),
                after: state(None, None),
            },
            Row {
                name: "the layer that was being forwarded",
                before: state(None, Some(1)).asked(t.ms(0)),
                packet: simulcast(1, 3, DELTA),
                now: t.ms(5_000),
                decision: drop(),
                after: state(None, Some(1)).asked(t.ms(0)),
            },
            Row {
                name: "a scalable stream",
                before: state(None, None),
                packet: scalable(0, 3, true, true, KEY),
                now: t.ms(0),
                decision: drop(),
                after: state(None, None),
            },
        ]);
    }

    #[test]
    fn selects_spatial_layers_and_moves_the_marker() {
        let t = At(Instant::now());
        check(vec![
            Row {
                name: "starts at a keyframe with the target's layers",
                before: state(Some(1), None),
                packet: scalable(0, 3, true, false, KEY),
                now: t.ms(0),
                decision: forward(false),
                after: state(Some(1), Some(1)),
            },
            Row {
                name: "the target is clamped to the stream's spatial layers",
                before: state(Some(HIGHEST_LAYER), None),
                packet: scalable(0, 2, true, false, KEY),
                now: t.ms(0),
                decision: forward(false),
                after: state(Some(HIGHEST_LAYER), Some(1)),
            },
            Row {
                name: "the top forwarded layer's end takes the marker",
                before: state(Some(1), Some(1)),
                packet: scalable(1, 3, false, true, DELTA),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(1), Some(1)),
            },
            Row {
                name: "a lower layer's end does not",
                before: state(Some(1), Some(1)),
                packet: scalable(0, 3, false, true, DELTA),
                now: t.ms(0),
                decision: forward(false),
                after: state(Some(1), Some(1)),
            },
            Row {
                name: "a layer above is skipped",
                before: state(Some(1), Some(1)),
                packet: scalable(2, 3, true, true, DELTA),
                now: t.ms(0),
                decision: skip(),
                after: state(Some(1), Some(1)),
            },
            Row {
                name: "down at any picture start",
                before: state(Some(0), Some(2)),
                packet: scalable(0, 3, true, true, DELTA),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(0), Some(0)),
            },
            Row {
                name: "not down in the middle of a picture",
                before: state(Some(0), Some(2)),
                packet: scalable(2, 3, false, true, DELTA),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(0), Some(2)),
            },
            Row {
                name: "up: the lower layers flow while it asks for a keyframe",
                before: state(Some(2), Some(0)),
                packet: scalable(0, 3, true, true, DELTA),
                now: t.ms(0),
                decision: forward(true).ask(),
                after: state(Some(2), Some(0)).asked(t.ms(0)),
            },
            Row {
                name: "up: asked 100 ms ago",
                before: state(Some(2), Some(0)).asked(t.ms(0)),
                packet: scalable(0, 3, true, true, DELTA),
                now: t.ms(100),
                decision: forward(true),
                after: state(Some(2), Some(0)).asked(t.ms(0)),
            },
            Row {
                name: "up at a keyframe",
                before: state(Some(2), Some(0)).asked(t.ms(0)),
                packet: scalable(0, 3, true, false, KEY),
                now: t.ms(100),
                decision: forward(false),
                after: state(Some(2), Some(2)).asked(t.ms(0)),
            },
        ]);
    }

    #[test]
    fn selects_temporal_layers() {
        let t = At(Instant::now());
        let base_only = || state(Some(0), Some(0)).temporal(0, 0);
        check(vec![
            Row {
                name: "down at the next frame: a frame above is skipped",
                before: state(Some(0), Some(0)).temporal(0, ALL_TEMPORAL),
                packet: simulcast(0, 3, DELTA).tid(2, 0),
                now: t.ms(0),
                decision: skip(),
                after: base_only(),
            },
            Row {
                name: "the base layer flows",
                before: base_only(),
                packet: simulcast(0, 3, DELTA).tid(0, 0),
                now: t.ms(0),
                decision: forward(true),
                after: base_only(),
            },
            Row {
                name: "up: not at a frame that is no switching point",
                before: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, 0),
                packet: simulcast(0, 3, DELTA).tid(1, 0),
                now: t.ms(0),
                decision: skip(),
                after: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, 0),
            },
            Row {
                name: "up one layer at a switching point",
                before: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, 0),
                packet: simulcast(0, 3, DELTA).tid(1, 1),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, 1),
            },
            Row {
                name: "every layer at a keyframe",
                before: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, 0),
                packet: simulcast(0, 3, KEY).tid(0, ALL_TEMPORAL).mid_frame(),
                now: t.ms(0),
                decision: forward(false),
                after: state(Some(0), Some(0)).temporal(ALL_TEMPORAL, ALL_TEMPORAL),
            },
            Row {
                name: "a simulcast switch keeps the temporal target",
                before: state(Some(1), Some(0)).temporal(0, 0),
                packet: simulcast(1, 3, KEY).tid(0, ALL_TEMPORAL),
                now: t.ms(0),
                decision: forward(true),
                after: state(Some(1), Some(1)).temporal(0, 0),
            },
            Row {
                name: "a scalable stream moving up whose frame is above the temporal target: \
                       skipped, the keyframe ask counted but not made",
                before: state(Some(2), Some(0)).temporal(0, 0),
                packet: scalable(0, 3, true, true, DELTA).tid(1, 0),
                now: t.ms(0),
                decision: skip(),
                after: state(Some(2), Some(0)).temporal(0, 0).asked(t.ms(0)),
            },
        ]);
    }
}
