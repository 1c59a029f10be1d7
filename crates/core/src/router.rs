//! Where each track's packets go on one worker: the local subscriptions (peer, slot) and,
//! at the track's origin, the other workers that need one copy each (sinks).

use std::collections::HashMap;

use crate::ids::{Kind, PeerId, TrackId, WorkerId};
use crate::packet::{ALL_LAYERS, MAX_LAYERS};
use crate::throttle::KeyframeThrottle;

#[derive(Debug)]
pub struct Route {
    pub kind: Kind,
    pub origin: WorkerId,
    /// The publishing peer, when the origin is this worker.
    pub publisher: Option<PeerId>,
    /// Local subscriptions: the subscribing peer and the index of its slot.
    pub subs: Vec<(PeerId, usize)>,
    /// Other workers that get one copy of each packet (origin only), with the simulcast
    /// layers they want ([`PipeMsg::Layers`]; all until they say).
    ///
    /// [`PipeMsg::Layers`]: crate::packet::PipeMsg::Layers
    pub sinks: Vec<(WorkerId, u8)>,
    /// The simulcast layers the local subscriptions may forward, as last told to the
    /// origin (when the origin is another worker).
    pub wanted: u8,
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
            subs: Vec::new(),
            sinks: Vec::new(),
            wanted: ALL_LAYERS,
            layers: 1,
            loudness: (0, 0),
            keyframes: Default::default(),
        }
    }

    /// A route that neither publishes here nor feeds anyone is dead weight.
    pub fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.subs.is_empty() && self.sinks.is_empty()
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

    pub fn pending_keyframes(&self) -> usize {
        self.routes
            .values()
            .filter(|r| r.keyframes.iter().any(KeyframeThrottle::is_pending))
            .count()
    }
}
