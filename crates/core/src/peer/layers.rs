//! Which layer each slot of a subscribing peer should receive: the subscriber's requests,
//! their fit to the downlink estimate (`alloc`), the keyframes a change needs, the layers
//! demanded from the origin, and what is reported to the control plane.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::Mid;

use super::{Peer, PeerOut, Slot};
use crate::alloc::{allocate, cumulative, Rates, Want};
use crate::api::Layers;
use crate::ids::{Kind, TrackId};
use crate::packet::Need;
use crate::temporal::ALL_TEMPORAL;

/// How often a subscriber's layers are reallocated within its estimate.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(500);
/// Share of the estimate given to media; the rest is headroom for retransmissions and RTCP.
const ESTIMATE_USE: f64 = 0.9;
/// A track moved down for lack of bandwidth moves up again only after this long (no
/// flapping, no keyframe storms); moving down is immediate.
const UPGRADE_HOLD: Duration = Duration::from_secs(2);
/// A layer the subscriber just asked for is given at once and kept this long whatever the
/// estimate, while str0m probes for the bandwidth it needs: an estimate that followed a low
/// layer (measured down to 198 kbit/s) takes seconds to grow to a top layer's rate.
const REQUEST_GRACE: Duration = Duration::from_secs(3);

impl Peer {
    /// The simulcast layers slot `slot` needs ([`Need`]). It is piped (and relayed) the one
    /// it forwards and the one it moves to, and on the way up (or with nothing yet) those in
    /// between too, which its forwarder takes as steps or as a fallback when the target does
    /// not come (`forward.rs`; a target above the track's layers stands for its top one).
    /// The publisher keeps every layer up to the highest of those and, with an estimate, up
    /// to the one requested, which the allocator may move up to. Every layer for audio;
    /// none when the slot is off or carries nothing.
    pub fn demand(&self, slot: usize) -> Need {
        let Some(s) = self.slots.get(slot).filter(|s| s.track.is_some()) else {
            return Need::NONE;
        };
        if s.kind == Kind::Audio {
            return Need::ALL;
        }
        let upto = |l: u8| ((2u16 << l.min(7)) - 1) as u8;
        let flow = match (s.forward.current, s.forward.target) {
            (_, None) => 0,
            (None, Some(t)) => upto(t),
            (Some(c), Some(t)) if c > t => (1 << c.min(7)) | (1 << t.min(7)),
            (Some(c), Some(t)) => upto(t) & !(upto(c) >> 1),
        };
        let top = s.forward.target.max(s.forward.current);
        let top = if self.estimating {
            top.max(s.requested)
        } else {
            top
        };
        Need {
            flow,
            keep: top.map_or(0, upto),
        }
    }

    /// The bitrates of the layers of the track slot `slot` carries, as its origin measured
    /// them: what the allocator weighs.
    pub fn set_rates(&mut self, slot: usize, rates: &Rates) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.rates = *rates;
        }
    }

    /// The layer asked for and the priority of the subscription to `track`, if there is one.
    pub fn subscription(&self, track: TrackId) -> Option<(Option<u8>, u8)> {
        let s = self.slots.iter().find(|s| s.track == Some(track))?;
        Some((s.requested, s.priority))
    }

    /// Sets the allocation priority of the subscription to `track` (applied at the next
    /// allocation).
    pub fn set_priority(&mut self, track: TrackId, priority: u8) {
        for slot in self.slots.iter_mut().filter(|s| s.track == Some(track)) {
            slot.priority = priority;
        }
    }

    /// Sets the best layer the subscription to `track` may receive; `None` turns it off.
    /// Within the downlink estimate, it gets that layer or the best one that fits.
    pub fn set_layer(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: Option<u8>,
        out: &mut Vec<PeerOut>,
    ) {
        let Some(i) = self.slots.iter().position(|s| s.track == Some(track)) else {
            return;
        };
        if self.slots[i].requested == layer {
            return;
        }
        self.slots[i].requested = layer;
        self.slots[i].forward.temporal_target = ALL_TEMPORAL;
        self.retarget(now, i, layer, out);
        if self.estimate.is_some() {
            // Given at once; the allocation lowers it only if the estimate has not grown
            // to it after the grace (and probes towards it meanwhile).
            self.slots[i].lowered = None;
            self.slots[i].asked = Some(now);
            self.allocate(now, out);
        } else {
            self.report(out);
        }
    }

    /// Reallocates every `ALLOCATION_INTERVAL` when the peer estimates its downlink.
    pub(super) fn allocate_if_due(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        if self.estimating && now >= self.next_allocation {
            self.next_allocation = now + ALLOCATION_INTERVAL;
            self.allocate(now, out);
        }
    }

    /// Gives each video track the best layer that fits the downlink estimate (see `alloc`).
    fn allocate(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        let Some(estimate) = self.estimate else {
            return;
        };
        let live = |s: &Slot| s.track.is_some() && s.negotiated_active;
        let audio: u64 = self
            .slots
            .iter()
            .filter(|s| live(s) && s.kind == Kind::Audio)
            .map(|s| s.rates[0].iter().sum::<u64>())
            .sum();
        let video: Vec<usize> = (0..self.slots.len())
            .filter(|&i| live(&self.slots[i]) && self.slots[i].kind == Kind::Video)
            .collect();
        let wants: Vec<Want> = video
            .iter()
            .map(|&i| {
                let s = &self.slots[i];
                Want {
                    requested: s.requested,
                    rates: cumulative(s.rates, s.svc),
                    priority: s.priority,
                }
            })
            .collect();
        let budget = ((estimate as f64 * ESTIMATE_USE) as u64).saturating_sub(audio);
        let result = allocate(budget, &wants);
        tracing::debug!(peer = %self.id, estimate, audio, ?wants, ?result, "allocation");
        for (&i, &given) in video.iter().zip(&result.layers) {
            let s = &self.slots[i];
            let now_given = s.forward.target.map(|l| (l, s.forward.temporal_target));
            if given == now_given {
                continue;
            }
            let up = given > now_given;
            if up && s.lowered.is_some_and(|t| now < t + UPGRADE_HOLD) {
                continue;
            }
            // Not measured yet (the lowest layer until it is), or the publisher does not
            // send the layer aimed at (it has just started, or its own estimate dropped the
            // layer, and waiting for it only shows nothing): the link did not decide.
            let measured = s.rates.iter().flatten().any(|&b| b > 0);
            let unsent = s.forward.target.is_some_and(|l| {
                s.rates
                    .get(usize::from(l))
                    .is_none_or(|r| r.iter().all(|&b| b == 0))
            });
            let link = measured && !unsent;
            if !up && link && s.asked.is_some_and(|t| now < t + REQUEST_GRACE) {
                continue;
            }
            // Lowered below the request: the link, not the subscriber, decided.
            if !up && link && given < s.requested.map(|l| (l, ALL_TEMPORAL)) {
                self.slots[i].lowered = Some(now);
            }
            let layer = given.map(|(l, _)| l);
            self.slots[i].forward.temporal_target = given.map_or(ALL_TEMPORAL, |(_, t)| t);
            if layer != self.slots[i].forward.target {
                if up {
                    self.counts.layer_ups += 1;
                } else {
                    self.counts.layer_downs += 1;
                }
                self.retarget(now, i, layer, out);
            }
        }
        // Probe towards what everyone asked for; keep sustaining what is sent.
        let used = Bitrate::bps(result.used + audio);
        let desired = Bitrate::bps(result.desired.max(result.used) + audio);
        self.rtc.bwe().set_bitrate(used, desired);
        self.report(out);
    }

    /// Reports the estimate and the video layers if they changed (the estimate by > 10%).
    fn report(&mut self, out: &mut Vec<PeerOut>) {
        let layers: Layers = self
            .slots
            .iter()
            .filter(|s| s.kind == Kind::Video && s.negotiated_active)
            .filter_map(|s| Some((s.track?, s.forward.target, s.forward.temporal_target)))
            .collect();
        let estimate = self.estimate;
        let changed = match &self.reported {
            None => true,
            Some((e, l)) => {
                *l != layers
                    || match (estimate, *e) {
                        (Some(a), Some(b)) => a.abs_diff(b) * 10 > b,
                        (a, b) => a != b,
                    }
            }
        };
        if changed {
            self.reported = Some((estimate, layers.clone()));
            out.push(PeerOut::Allocated {
                estimate_bps: estimate,
                layers,
            });
        }
    }

    /// Points slot `i` at `layer` (`None`: no packets), asking for the keyframe a switch
    /// needs; the current layer keeps flowing until it arrives.
    fn retarget(&mut self, now: Instant, i: usize, layer: Option<u8>, out: &mut Vec<PeerOut>) {
        let connected = self.connected;
        let slot = &mut self.slots[i];
        slot.forward.target = layer;
        match layer {
            // Resuming needs a keyframe: the decoder missed everything in between.
            None => slot.restart(),
            Some(layer) => {
                if let (true, true, Kind::Video, Some(track)) =
                    (connected, slot.negotiated_active, slot.kind, slot.track)
                {
                    if slot.forward.current != Some(layer) {
                        slot.forward.last_keyframe_ask = Some(now);
                        out.push(PeerOut::KeyframeWanted { track, layer });
                    }
                }
            }
        }
    }

    /// Asks for keyframes for every slot that waits for one (throttled per slot).
    pub(super) fn ask_keyframes(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        if !self.connected {
            return;
        }
        for slot in &mut self.slots {
            if let (true, true, Some(track), Some(layer)) = (
                slot.waiting_keyframe(),
                slot.negotiated_active,
                slot.track,
                slot.forward.target,
            ) {
                if slot.forward.may_ask_keyframe(now) {
                    out.push(PeerOut::KeyframeWanted { track, layer });
                }
            }
        }
    }

    /// The subscriber asked for a keyframe on m-line `mid` (PLI/FIR): of the layer it
    /// receives, else the one it waits for.
    pub(super) fn on_keyframe_request(&mut self, mid: Mid, out: &mut Vec<PeerOut>) {
        if let Some(slot) = self.slots.iter().find(|s| s.mid == Some(mid)) {
            if let (Some(track), Some(layer)) =
                (slot.track, slot.forward.current.or(slot.forward.target))
            {
                out.push(PeerOut::KeyframeWanted { track, layer });
            }
        }
    }
}
