//! Where each track's packets go on one worker: the local subscriptions (peer, slot) and,
//! at the track's origin, the other workers that need one copy each (sinks).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::alloc::{LayerRates, Rates};
use crate::ids::{Kind, NodeId, PeerId, TrackId, WorkerId};
use crate::packet::{Need, MAX_LAYERS};
use crate::throttle::KeyframeThrottle;

#[derive(Debug)]
pub struct Route {
    pub kind: Kind,
    pub origin: WorkerId,
    /// The publishing peer, when the origin is this worker.
    pub publisher: Option<PeerId>,
    /// On a node's relay worker, a track published on another node (`remote`): this worker
    /// is its origin here, fed by that node over the relay.
    pub remote: Option<NodeId>,
    /// On a node's relay worker, the other nodes that get one copy of each packet of this
    /// local track, with the layers they need (all until they say).
    pub nodes: Vec<(NodeId, Need)>,
    /// For a remote track: the layers last asked of its node, and when.
    pub asked: Option<(Need, Instant)>,
    /// Local subscriptions: the subscribing peer and the index of its slot.
    pub subs: Vec<(PeerId, usize)>,
    /// Other workers that get one copy of each packet (origin only), with the layers they
    /// need ([`PipeMsg::Layers`]; all until they say).
    ///
    /// [`PipeMsg::Layers`]: crate::packet::PipeMsg::Layers
    pub sinks: Vec<(WorkerId, Need)>,
    /// The layers the local subscriptions need, as last told to the origin (when the origin
    /// is another worker).
    pub wanted: Need,
    /// Where the publisher is here: its layers' bitrates as they arrive.
    pub measured: LayerRates,
    /// The layers' bitrates last measured (here) or heard from the origin: what the
    /// allocators of the subscriptions read.
    pub rates: Rates,
    /// At the origin: the layers the publisher was last told to send (see
    /// [`crate::engine::Engine`]'s demand announcements).
    pub demand: Demand,
    /// Keyframe requests merged towards the publisher (origin only).
    /// Simulcast layers the publisher negotiated (1 without simulcast; known at the origin).
    pub layers: u8,
    /// At the origin of an audio track: loudness (127 − the audio-level header's −dBov, so 0
    /// is silence) summed over the packets of the current reporting window, and their count.
    pub loudness: (u32, u32),
    /// Keyframe requests to the publisher, merged per simulcast layer.
    pub keyframes: [KeyframeThrottle; MAX_LAYERS],
}

impl Route {
    pub fn new(kind: Kind, origin: WorkerId, publisher: Option<PeerId>) -> Self {
        Route {
            kind,
            origin,
            publisher,
            remote: None,
            nodes: Vec::new(),
            asked: None,
            subs: Vec::new(),
            sinks: Vec::new(),
            wanted: Need::ALL,
            measured: LayerRates::new(),
            rates: Rates::default(),
            demand: Demand::default(),
            layers: 1,
            loudness: (0, 0),
            keyframes: Default::default(),
        }
    }

    /// A route that neither publishes here nor feeds anyone is dead weight.
    pub fn is_unused(&self) -> bool {
        self.publisher.is_none()
            && self.remote.is_none()
            && self.subs.is_empty()
            && self.sinks.is_empty()
            && self.nodes.is_empty()
    }
}

/// How long a layer nobody needs any more keeps being asked of the publisher: a subscriber
/// that moves between layers, or leaves and comes back, does not make the publisher's encoder
/// stop and restart (Chrome takes seconds to bring a restarted layer back to its resolution).
pub const DEMAND_HOLD: Duration = Duration::from_secs(1);

/// The layers of one published track that its publisher is asked to send: those any
/// subscription on any worker or node keeps ([`Need::keep`], every layer up to the highest
/// one it may forward, `Peer::demand`), as LiveKit's dynacast does. More layers are asked
/// for at once; fewer only after [`DEMAND_HOLD`].
#[derive(Debug, Default)]
pub struct Demand {
    /// The mask last announced; `None` until the first announcement: a publisher starts by
    /// sending every layer.
    announced: Option<u8>,
    /// Since when fewer layers than announced have been needed.
    lower_since: Option<Instant>,
}

impl Demand {
    /// Takes the layers needed now, of the track's layers `all`; returns the mask to
    /// announce, if it changes.
    pub fn update(&mut self, now: Instant, needed: u8, all: u8) -> Option<u8> {
        let needed = needed & all;
        let before = self.announced.unwrap_or(all);
        let mut announced = before;
        if needed & !before != 0 {
            // More is needed: asked for at once; what is no longer needed stays on for the hold.
            announced = before | needed;
        }
        if needed == announced {
            self.lower_since = None;
        } else {
            let since = *self.lower_since.get_or_insert(now);
            if now >= since + DEMAND_HOLD {
                announced = needed;
                self.lower_since = None;
            }
        }
        self.announced = Some(announced);
        (announced != before).then_some(announced)
    }
}

#[derive(Debug, Default)]
pub struct Router {
    pub routes: HashMap<TrackId, Route>,
}

impl Router {
    pub fn get_mut(&mut self, track: &TrackId) -> Option<&mut Route> {
        self.routes.get_mut(track)
    }

    /// Drops the route of `track` if nothing uses it any more.
    pub fn prune(&mut self, track: &TrackId) {
        if self.routes.get(track).is_some_and(Route::is_unused) {
            self.routes.remove(track);
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.routes.values().map(|r| r.subs.len()).sum()
    }

    pub fn sinks(&self) -> usize {
        self.routes.values().map(|r| r.sinks.len()).sum()
    }

    pub fn published(&self) -> usize {
        self.routes
            .values()
            .filter(|r| r.publisher.is_some())
            .count()
    }

    /// Tracks received from other nodes (relay worker).
    pub fn relayed_in(&self) -> usize {
        self.routes.values().filter(|r| r.remote.is_some()).count()
    }

    /// (track, node) pairs sent to other nodes (relay worker).
    pub fn relayed_out(&self) -> usize {
        self.routes.values().map(|r| r.nodes.len()).sum()
    }

    pub fn pending_keyframes(&self) -> usize {
        self.routes
            .values()
            .filter(|r| r.keyframes.iter().any(KeyframeThrottle::is_pending))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ALL_LAYERS;

    impl Demand {
        fn update3(&mut self, now: Instant, needed: u8) -> Option<u8> {
            self.update(now, needed, 0b111)
        }
    }

    #[test]
    fn demand_rises_at_once_and_falls_after_the_hold() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Demand::default();
        // A track with three layers; the layers kept are every one up to the highest.
        // Nobody yet: the publisher's initial "everything" stays for the hold.
        assert_eq!(d.update3(ms(0), 0), None);
        assert_eq!(d.update3(ms(500), 0), None);
        // Someone arrives within the hold: nothing to say.
        assert_eq!(d.update3(ms(600), 0b111), None);
        assert_eq!(d.update3(ms(1700), 0b111), None);
        // Down to the lowest layer: only after a hold of its own.
        assert_eq!(d.update3(ms(2000), 0b001), None);
        assert_eq!(d.update3(ms(2999), 0b001), None);
        assert_eq!(d.update3(ms(3000), 0b001), Some(0b001));
        // Up again: at once.
        assert_eq!(d.update3(ms(3001), 0b011), Some(0b011));
        // A dip shorter than the hold changes nothing.
        assert_eq!(d.update3(ms(3100), 0b001), None);
        assert_eq!(d.update3(ms(3500), 0b011), None);
        assert_eq!(d.update3(ms(4600), 0b011), None);
        // Nobody: everything off after the hold.
        assert_eq!(d.update3(ms(5000), 0), None);
        assert_eq!(d.update3(ms(6000), 0), Some(0));
        // Layers the track does not have are never asked for (audio and sinks say "all").
        assert_eq!(d.update3(ms(6001), ALL_LAYERS), Some(0b111));
    }
}
