//! Which layer each video track of one subscriber gets, within its downlink estimate. Pure:
//! the track's origin measures the layers' bitrates ([`LayerRates`]) and passes them to every
//! subscription, whose peer asks [`allocate`] and applies the answer.
//!
//! A track's steps ([`Rung`]s) are the temporal layers of its lowest simulcast or spatial
//! layer (a quarter, then half of its frame rate, when the stream has temporal layers),
//! then each layer whole. In priority order, every track first gets its lowest step if
//! that fits in what is left of the budget; a track whose lowest step does not fit is
//! paused (no packets), as LiveKit's stream allocator does: sending it anyway would only
//! queue in the pacer and delay every track of the link. A track whose layers are not
//! measured yet gets its lowest layer at no cost: its first keyframe is the smallest (a top
//! layer's keyframe queued more than a second in a 700 kbit/s pacer in the cluster browser
//! test), and it moves up once measured. The rest of the budget then upgrades
//! tracks one step at a time,
//! round after round in priority order, so that one track never takes everything while
//! others stay at the bottom. Layers the publisher does not send (no bytes seen) are
//! skipped. As SFUs do (LiveKit's stream allocator, mediasoup's consumer priorities),
//! higher priority first: the active speaker, then screen shares, then the rest.

use std::time::{Duration, Instant};

use crate::packet::MAX_LAYERS;
use crate::temporal::{ALL_TEMPORAL, MAX_TEMPORAL};

/// Below this a layer counts as not sent (a few RTCP-sized packets are not a video layer).
const ACTIVE_BPS: u64 = 10_000;

/// Bits per second per (simulcast or spatial layer, temporal layer).
pub type Rates = [[u64; MAX_TEMPORAL]; MAX_LAYERS];

/// The bitrate of each layer of one track, measured where its publisher is (every layer it
/// sends arrives there; elsewhere only the layers forwarded do): one addition per packet.
#[derive(Debug)]
pub struct LayerRates {
    bytes: Rates,
    since: Option<Instant>,
    bps: Rates,
}

impl Default for LayerRates {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerRates {
    pub fn new() -> Self {
        LayerRates {
            bytes: [[0; MAX_TEMPORAL]; MAX_LAYERS],
            since: None,
            bps: [[0; MAX_TEMPORAL]; MAX_LAYERS],
        }
    }

    /// Counts one packet of `layer` and temporal layer `temporal` (the higher temporal
    /// layers count with the top one).
    pub fn add(&mut self, now: Instant, layer: u8, temporal: u8, bytes: usize) {
        self.since.get_or_insert(now);
        let t = usize::from(temporal).min(MAX_TEMPORAL - 1);
        if let Some(b) = self.bytes.get_mut(usize::from(layer)) {
            b[t] += bytes as u64;
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
        for (rates, bytes) in self.bps.iter_mut().zip(&mut self.bytes) {
            for (rate, bytes) in rates.iter_mut().zip(bytes.iter_mut()) {
                let fresh = (*bytes as f64 * 8.0 / secs) as u64;
                *rate = if fresh == 0 { 0 } else { (*rate + fresh) / 2 };
                *bytes = 0;
            }
        }
        self.since = Some(now);
    }

    /// Smoothed bits per second of each layer's temporal layers; 0 for a layer not being
    /// sent.
    pub fn bps(&self) -> Rates {
        self.bps.map(|r| {
            if r.iter().sum::<u64>() < ACTIVE_BPS {
                [0; MAX_TEMPORAL]
            } else {
                r
            }
        })
    }
}

/// What forwarding each layer up to each temporal layer takes, from what each one sends:
/// every temporal layer comes with those below it and, for a scalable (`svc`) stream,
/// every spatial layer with those below it.
pub fn cumulative(mut rates: Rates, svc: bool) -> Rates {
    for r in &mut rates {
        for t in 1..MAX_TEMPORAL {
            r[t] += r[t - 1];
        }
    }
    if svc {
        for l in 1..MAX_LAYERS {
            if rates[l][MAX_TEMPORAL - 1] > 0 {
                let below = rates[l - 1];
                for (r, b) in rates[l].iter_mut().zip(below) {
                    *r += b;
                }
            }
        }
    }
    rates
}

/// One video track a subscriber wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The best layer asked for (`None`: off).
    pub requested: Option<u8>,
    /// What each (layer, up to temporal layer) takes ([`cumulative`]); 0 when not sent.
    pub rates: Rates,
    /// Higher first.
    pub priority: u8,
}

/// What one track gets: its layer and the highest temporal layer of it
/// ([`ALL_TEMPORAL`]: every one).
pub type Rung = (u8, u8);

#[derive(Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Per want: what to forward, `None` for nothing (off or paused).
    pub layers: Vec<Option<Rung>>,
    /// Bits per second of what was given.
    pub used: u64,
    /// Bits per second the best layer of every track not turned off would take: what
    /// probing keeps the estimate up to, so that a switch up does not first wait for the
    /// estimate to grow from what a low layer needs (225 kbps to 1.5 Mbps took 3.2 s in
    /// the simulcast browser test).
    pub desired: u64,
}

/// The steps a track may be given, cheapest first, with their bitrates: the temporal
/// layers of its lowest sent layer, then every sent layer up to the one requested, whole.
/// Fewer frames of a small picture come before pausing it; a larger picture is never
/// shown at a lower frame rate than a smaller one would be.
fn rungs(w: &Want) -> Vec<(Rung, u64)> {
    let Some(r) = w.requested else {
        return Vec::new();
    };
    let whole = |l: usize| w.rates[l][MAX_TEMPORAL - 1];
    let sent: Vec<usize> = (0..=usize::from(r).min(MAX_LAYERS - 1))
        .filter(|&l| whole(l) > 0)
        .collect();
    let mut rungs = Vec::new();
    if let Some(&low) = sent.first() {
        for t in 0..MAX_TEMPORAL - 1 {
            let rate = w.rates[low][t];
            let above_last = rungs.last().is_none_or(|&(_, last)| rate > last);
            if rate > 0 && rate < whole(low) && above_last {
                rungs.push(((low as u8, t as u8), rate));
            }
        }
    }
    rungs.extend(sent.iter().map(|&l| ((l as u8, ALL_TEMPORAL), whole(l))));
    rungs
}

/// Splits `budget` bits per second between `wants`.
pub fn allocate(budget: u64, wants: &[Want]) -> Allocation {
    let candidates: Vec<Vec<(Rung, u64)>> = wants.iter().map(rungs).collect();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(wants[i].priority));

    let mut layers: Vec<Option<Rung>> = vec![None; wants.len()];
    // Index into candidates[i] of the rung given.
    let mut step: Vec<usize> = vec![0; wants.len()];
    let mut avail = budget;
    let mut used = 0;
    let mut desired = 0;
    for &i in &order {
        let c = &candidates[i];
        match (c.first(), wants[i].requested) {
            // Not measured yet (nothing received): the lowest layer, at no cost.
            (None, Some(_)) if wants[i].rates.iter().flatten().all(|b| *b == 0) => {
                layers[i] = Some((0, ALL_TEMPORAL));
            }
            (None, _) => {}
            (Some(&(low, rate)), _) => {
                desired += wants[i]
                    .rates
                    .iter()
                    .map(|r| r[MAX_TEMPORAL - 1])
                    .max()
                    .unwrap_or(0);
                if rate <= avail {
                    avail -= rate;
                    used += rate;
                    layers[i] = Some(low);
                }
            }
        }
    }
    loop {
        let mut upgraded = false;
        for &i in &order {
            let (c, s) = (&candidates[i], step[i]);
            let (Some(_), Some(&(_, cur_rate)), Some(&(next, next_rate))) =
                (layers[i], c.get(s), c.get(s + 1))
            else {
                continue;
            };
            let delta = next_rate.saturating_sub(cur_rate);
            if delta <= avail {
                avail -= delta;
                used = used - cur_rate + next_rate;
                layers[i] = Some(next);
                step[i] = s + 1;
                upgraded = true;
            }
        }
        if !upgraded {
            break;
        }
    }
    Allocation {
        layers,
        used,
        desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-layer rates of a stream without temporal layers.
    fn flat(layers: [u64; MAX_LAYERS]) -> Rates {
        layers.map(|r| [r; MAX_TEMPORAL])
    }

    /// The layer each track gets, whatever its temporal layers.
    fn spatial(a: &Allocation) -> Vec<Option<u8>> {
        a.layers.iter().map(|r| r.map(|(l, _)| l)).collect()
    }

    /// A track sending 150 kbps, 500 kbps and 1.5 Mbps (the SDK's layers).
    fn camera(requested: Option<u8>, priority: u8) -> Want {
        Want {
            requested,
            rates: flat([150_000, 500_000, 1_500_000, 0]),
            priority,
        }
    }

    /// The same with three temporal layers each: half of a layer's bits in the base, a
    /// quarter in each of the two others.
    fn camera_l1t3(requested: Option<u8>, priority: u8) -> Want {
        let layer = |r: u64| [r / 2, r / 4, r / 4];
        Want {
            requested,
            rates: cumulative(
                [
                    layer(160_000),
                    layer(500_000),
                    layer(1_500_000),
                    [0; MAX_TEMPORAL],
                ],
                false,
            ),
            priority,
        }
    }

    #[test]
    fn a_wide_link_gets_everything_requested() {
        let a = allocate(10_000_000, &[camera(Some(2), 0), camera(Some(1), 0)]);
        assert_eq!(spatial(&a), [Some(2), Some(1)]);
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
        assert_eq!(spatial(&a), [Some(1), Some(1), Some(0)]);
        assert_eq!(a.used, 1_150_000);
        assert_eq!(a.desired, 4_500_000);
    }

    #[test]
    fn priority_decides_who_is_upgraded_and_who_is_paused() {
        let w = [camera(Some(2), 0), camera(Some(2), 9)];
        // Room for the bottom layer of both and one upgrade: the speaker's.
        assert_eq!(spatial(&allocate(700_000, &w)), [Some(0), Some(1)]);
        // Room for one bottom layer only: the speaker keeps it, the other track pauses.
        let a = allocate(200_000, &w);
        assert_eq!(spatial(&a), [None, Some(0)]);
        assert_eq!(a.used, 150_000);
        // Paused tracks still count in what probing aims at.
        assert_eq!(a.desired, 3_000_000);
        // Not even one bottom layer: everything pauses.
        assert_eq!(spatial(&allocate(100_000, &w)), [None, None]);
    }

    #[test]
    fn a_smaller_track_fits_where_a_larger_one_did_not() {
        let thumbnail = Want {
            requested: Some(0),
            rates: flat([60_000, 0, 0, 0]),
            priority: 0,
        };
        let a = allocate(
            220_000,
            &[camera(Some(2), 9), camera(Some(2), 5), thumbnail],
        );
        assert_eq!(spatial(&a), [Some(0), None, Some(0)]);
        assert_eq!(a.used, 210_000);
    }

    #[test]
    fn layers_not_sent_are_skipped_and_off_takes_nothing() {
        let no_middle = Want {
            requested: Some(2),
            rates: flat([150_000, 0, 1_500_000, 0]),
            priority: 0,
        };
        assert_eq!(spatial(&allocate(2_000_000, &[no_middle])), [Some(2)]);
        assert_eq!(spatial(&allocate(1_000_000, &[no_middle])), [Some(0)]);
        let a = allocate(1_000_000, &[camera(None, 0), camera(Some(0), 0)]);
        assert_eq!(spatial(&a), [None, Some(0)]);
        assert_eq!(a.used, 150_000);
    }

    #[test]
    fn a_track_not_measured_yet_gets_its_lowest_layer_at_no_cost() {
        let fresh = |requested| Want {
            requested,
            rates: [[0; MAX_TEMPORAL]; MAX_LAYERS],
            priority: 0,
        };
        let a = allocate(0, &[fresh(Some(2)), fresh(None)]);
        assert_eq!(spatial(&a), [Some(0), None]);
        assert_eq!(a.used, 0);
    }

    #[test]
    fn rates_are_measured_per_layer_and_drop_when_a_layer_stops() {
        let t0 = Instant::now();
        let mut r = LayerRates::new();
        for i in 0..100u32 {
            let t = t0 + Duration::from_millis(10 * u64::from(i));
            r.add(t, 0, 0, 125); // 100 kbps
            r.add(t, 2, (i % 2) as u8, 1250); // 1 Mbps, half in each of two temporal layers
        }
        r.update(t0 + Duration::from_secs(1), Duration::from_millis(500));
        // Half of the first window (smoothing from zero).
        let sum = |r: &LayerRates| r.bps().map(|t| t.iter().sum::<u64>());
        assert_eq!(sum(&r), [50_000, 0, 500_000, 0]);
        assert_eq!(r.bps()[2], [250_000, 250_000, 0]);
        r.add(t0 + Duration::from_millis(1500), 0, 0, 12_500); // 100 kbps over the next second
        r.update(t0 + Duration::from_secs(2), Duration::from_millis(500));
        assert_eq!(sum(&r), [75_000, 0, 0, 0], "layer 2 stopped");
    }

    #[test]
    fn cumulative_rates_add_lower_temporal_and_for_svc_lower_spatial_layers() {
        let raw = [[10, 5, 5], [40, 20, 20], [0; 3], [0; 3]];
        assert_eq!(
            cumulative(raw, false),
            [[10, 15, 20], [40, 60, 80], [0; 3], [0; 3]]
        );
        assert_eq!(
            cumulative(raw, true),
            [[10, 15, 20], [50, 75, 100], [0; 3], [0; 3]]
        );
    }

    #[test]
    fn a_short_link_lowers_the_frame_rate_of_the_smallest_layer_before_pausing() {
        // The bottom layer whole takes 160k: 80k for its base, 120k with the middle. Steps
        // go round by priority: both bases, both middles, then the speaker's whole layer.
        let w = [camera_l1t3(Some(2), 9), camera_l1t3(Some(2), 0)];
        let a = allocate(250_000, &w);
        assert_eq!(a.layers, [Some((0, 1)), Some((0, 1))]);
        assert_eq!(a.used, 240_000);
        let a = allocate(290_000, &w);
        assert_eq!(a.layers, [Some((0, ALL_TEMPORAL)), Some((0, 1))]);
        assert_eq!(a.used, 280_000);
        // Only one base layer fits: the speaker's; below it, nothing.
        assert_eq!(allocate(100_000, &w).layers, [Some((0, 0)), None]);
        assert_eq!(allocate(70_000, &w).layers, [None, None]);
        // Above the bottom layer, layers go whole: never a larger picture at a lower rate.
        let a = allocate(800_000, &w);
        assert_eq!(a.layers, [Some((1, ALL_TEMPORAL)), Some((0, ALL_TEMPORAL))]);
        // A stream without temporal layers has no such steps.
        assert_eq!(allocate(100_000, &[camera(Some(2), 0)]).layers, [None]);
    }
}
