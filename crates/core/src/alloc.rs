//! Which simulcast layer each video track of one subscriber gets, within its downlink
//! estimate. Pure: the peer measures the layers' bitrates ([`LayerRates`]), asks
//! [`allocate`] and applies the answer.
//!
//! In priority order, every track first gets its lowest layer if that fits in what is left
//! of the budget; a track whose lowest layer does not fit is paused (no packets), as
//! LiveKit's stream allocator does: sending it anyway would only queue in the pacer and
//! delay every track of the link. A track whose layers are not measured yet gets what it
//! asks for at no cost. The rest of the budget then upgrades tracks one layer at a time,
//! round after round in priority order, so that one track never takes everything while
//! others stay at the bottom. Layers the publisher does not send (no bytes seen) are
//! skipped. As SFUs do (LiveKit's stream allocator, mediasoup's consumer priorities),
//! higher priority first: the active speaker, then screen shares, then the rest.

use std::time::{Duration, Instant};

use crate::packet::MAX_LAYERS;

/// Below this a layer counts as not sent (a few RTCP-sized packets are not a video layer).
const ACTIVE_BPS: u64 = 10_000;

/// The bitrate of each simulcast layer of one track, as seen by one subscription: every
/// packet of every layer passes through the subscription on its way to being forwarded or
/// dropped, so the measure costs one addition per packet.
#[derive(Debug)]
pub struct LayerRates {
    bytes: [u64; MAX_LAYERS],
    since: Option<Instant>,
    bps: [u64; MAX_LAYERS],
}

impl Default for LayerRates {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerRates {
    pub fn new() -> Self {
        LayerRates {
            bytes: [0; MAX_LAYERS],
            since: None,
            bps: [0; MAX_LAYERS],
        }
    }

    /// Counts one packet of `layer`.
    pub fn add(&mut self, now: Instant, layer: u8, bytes: usize) {
        self.since.get_or_insert(now);
        if let Some(b) = self.bytes.get_mut(usize::from(layer)) {
            *b += bytes as u64;
        }
    }

    /// Closes the measuring window (at least `min` long, else nothing changes) and smooths
    /// the new rates in (half old, half new). A layer with no bytes in a whole window has
    /// stopped (the publisher turned it off): its rate drops to 0 at once, so that its
    /// subscribers move to another layer instead of waiting on a frozen one.
    pub fn update(&mut self, now: Instant, min: Duration) {
        let Some(since) = self.since else { return };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < min {
            return;
        }
        let secs = elapsed.as_secs_f64();
        for (rate, bytes) in self.bps.iter_mut().zip(&mut self.bytes) {
            let fresh = (*bytes as f64 * 8.0 / secs) as u64;
            *rate = if fresh == 0 { 0 } else { (*rate + fresh) / 2 };
            *bytes = 0;
        }
        self.since = Some(now);
    }

    /// Smoothed bits per second of each layer; 0 for a layer not being sent.
    pub fn bps(&self) -> [u64; MAX_LAYERS] {
        self.bps.map(|b| if b < ACTIVE_BPS { 0 } else { b })
    }
}

/// One video track a subscriber wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The best layer asked for (`None`: off).
    pub requested: Option<u8>,
    /// Per layer bitrate, 0 when not sent.
    pub rates: [u64; MAX_LAYERS],
    /// Higher first.
    pub priority: u8,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Per want: the layer to forward, `None` for off.
    pub layers: Vec<Option<u8>>,
    /// Bits per second of what was given.
    pub used: u64,
    /// Bits per second the best layer of every track not turned off would take: what
    /// probing keeps the estimate up to, so that a switch up does not first wait for the
    /// estimate to grow from what a low layer needs (225 kbps to 1.5 Mbps took 3.2 s in
    /// the simulcast browser test).
    pub desired: u64,
}

/// Splits `budget` bits per second between `wants`.
pub fn allocate(budget: u64, wants: &[Want]) -> Allocation {
    // Candidate layers of each want: those sent, up to the one requested. A track whose
    // layers are not measured yet (nothing received) gets what it asks for at no cost.
    let candidates: Vec<Vec<u8>> = wants
        .iter()
        .map(|w| match w.requested {
            None => Vec::new(),
            Some(r) => (0..=r.min(MAX_LAYERS as u8 - 1))
                .filter(|l| w.rates[usize::from(*l)] > 0)
                .collect(),
        })
        .collect();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(wants[i].priority));

    let rate = |i: usize, l: u8| wants[i].rates[usize::from(l)];
    let mut layers: Vec<Option<u8>> = vec![None; wants.len()];
    // Index into candidates[i] of the layer given.
    let mut step: Vec<usize> = vec![0; wants.len()];
    let mut avail = budget;
    let mut desired = 0;
    for &i in &order {
        let c = &candidates[i];
        match (c.first(), wants[i].requested) {
            (None, Some(r)) if wants[i].rates.iter().all(|b| *b == 0) => layers[i] = Some(r),
            (None, _) => {}
            (Some(&low), _) => {
                desired += wants[i].rates.iter().max().copied().unwrap_or(0);
                if rate(i, low) <= avail {
                    avail -= rate(i, low);
                    layers[i] = Some(low);
                }
            }
        }
    }
    loop {
        let mut upgraded = false;
        for &i in &order {
            let (c, s) = (&candidates[i], step[i]);
            let (Some(cur), Some(&next)) = (layers[i], c.get(s + 1)) else {
                continue;
            };
            let delta = rate(i, next).saturating_sub(rate(i, cur));
            if delta <= avail {
                avail -= delta;
                layers[i] = Some(next);
                step[i] = s + 1;
                upgraded = true;
            }
        }
        if !upgraded {
            break;
        }
    }
    let used = layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some(wants[i].rates[usize::from((*l)?)]))
        .sum();
    Allocation {
        layers,
        used,
        desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A track sending 150 kbps, 500 kbps and 1.5 Mbps (the SDK's layers).
    fn camera(requested: Option<u8>, priority: u8) -> Want {
        Want {
            requested,
            rates: [150_000, 500_000, 1_500_000, 0],
            priority,
        }
    }

    #[test]
    fn a_wide_link_gets_everything_requested() {
        let a = allocate(10_000_000, &[camera(Some(2), 0), camera(Some(1), 0)]);
        assert_eq!(a.layers, [Some(2), Some(1)]);
        assert_eq!(a.used, 2_000_000);
        // Probing aims at both tracks' top layers, whatever was asked.
        assert_eq!(a.desired, 3_000_000);
    }

    #[test]
    fn a_narrow_link_gets_lower_layers_shared_fairly() {
        // 1.2 Mbps for three cameras: all get the bottom (450k), then the middle for as many
        // as fit, in order: one (+350k = 800k), a second (+350k = 1150k), not the third.
        let w = [camera(Some(2), 0), camera(Some(2), 0), camera(Some(2), 0)];
        let a = allocate(1_200_000, &w);
        assert_eq!(a.layers, [Some(1), Some(1), Some(0)]);
        assert_eq!(a.used, 1_150_000);
        assert_eq!(a.desired, 4_500_000);
    }

    #[test]
    fn priority_decides_who_is_upgraded_and_who_is_paused() {
        let w = [camera(Some(2), 0), camera(Some(2), 9)];
        // Room for the bottom layer of both and one upgrade: the speaker's.
        assert_eq!(allocate(700_000, &w).layers, [Some(0), Some(1)]);
        // Room for one bottom layer only: the speaker keeps it, the other track pauses.
        let a = allocate(200_000, &w);
        assert_eq!(a.layers, [None, Some(0)]);
        assert_eq!(a.used, 150_000);
        // Paused tracks still count in what probing aims at.
        assert_eq!(a.desired, 3_000_000);
        // Not even one bottom layer: everything pauses.
        assert_eq!(allocate(100_000, &w).layers, [None, None]);
    }

    #[test]
    fn a_smaller_track_fits_where_a_larger_one_did_not() {
        let thumbnail = Want {
            requested: Some(0),
            rates: [60_000, 0, 0, 0],
            priority: 0,
        };
        let a = allocate(
            220_000,
            &[camera(Some(2), 9), camera(Some(2), 5), thumbnail],
        );
        assert_eq!(a.layers, [Some(0), None, Some(0)]);
        assert_eq!(a.used, 210_000);
    }

    #[test]
    fn layers_not_sent_are_skipped_and_off_takes_nothing() {
        let no_middle = Want {
            requested: Some(2),
            rates: [150_000, 0, 1_500_000, 0],
            priority: 0,
        };
        assert_eq!(allocate(2_000_000, &[no_middle]).layers, [Some(2)]);
        assert_eq!(allocate(1_000_000, &[no_middle]).layers, [Some(0)]);
        let a = allocate(1_000_000, &[camera(None, 0), camera(Some(0), 0)]);
        assert_eq!(a.layers, [None, Some(0)]);
        assert_eq!(a.used, 150_000);
    }

    #[test]
    fn a_track_not_measured_yet_gets_its_request() {
        let fresh = Want {
            requested: Some(2),
            rates: [0; MAX_LAYERS],
            priority: 0,
        };
        assert_eq!(allocate(0, &[fresh]).layers, [Some(2)]);
    }

    #[test]
    fn rates_are_measured_per_layer_and_drop_when_a_layer_stops() {
        let t0 = Instant::now();
        let mut r = LayerRates::new();
        for i in 0..100u32 {
            let t = t0 + Duration::from_millis(10 * u64::from(i));
            r.add(t, 0, 125); // 100 kbps
            r.add(t, 2, 1250); // 1 Mbps
        }
        r.update(t0 + Duration::from_secs(1), Duration::from_millis(500));
        // Half of the first window (smoothing from zero).
        assert_eq!(r.bps(), [50_000, 0, 500_000, 0]);
        r.add(t0 + Duration::from_millis(1500), 0, 12_500); // 100 kbps over the next second
        r.update(t0 + Duration::from_secs(2), Duration::from_millis(500));
        assert_eq!(r.bps(), [75_000, 0, 0, 0], "layer 2 stopped");
    }
}
