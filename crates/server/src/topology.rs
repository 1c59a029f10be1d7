//! The media topology of the node: where each track originates, who subscribes to what (with
//! the layer asked for and the priority), and which worker pipes that needs. It is the
//! control plane's one owner of "who receives what": the rest of the control plane asks it,
//! and the workers are told through idempotent commands plus a periodic [`Plan`] per worker
//! that repairs whatever a lost command left different.
//!
//! [`Topology`] is the interface; [`LocalTopology`] drives this node's workers, and
//! `cluster::ClusterTopology` adds the relay to other nodes on top of it.

use std::collections::HashMap;
use std::sync::Arc;

use sfumato_worker::sfumato_core::api::DEFAULT_LAYER;
use sfumato_worker::sfumato_core::{
    Command, Kind, MemberId, NodeId, PeerId, Plan, Subscription, TrackId, WorkerId,
};
use sfumato_worker::Pool;

use crate::members::Members;

/// What the control plane asks of the media topology. Every method is idempotent.
pub trait Topology: Send {
    /// A peer on `worker`; a subscribing one (`create`) is created there now, the others are
    /// created by the call that carries their first offer.
    fn add_peer(&mut self, peer: PeerId, worker: WorkerId, create: bool);
    /// Closes a peer and drops its subscriptions and layer choices.
    fn remove_peer(&mut self, peer: PeerId);
    /// A track published on `origin`.
    fn add_track(&mut self, track: TrackId, kind: Kind, origin: WorkerId);
    /// A track is gone; its subscribers let go of it. Returns them.
    fn remove_track(&mut self, track: TrackId) -> Vec<PeerId>;
    /// Forwards `track` to subscribing `peer`. Returns false if either is unknown.
    fn subscribe(&mut self, peer: PeerId, track: TrackId) -> bool;
    fn unsubscribe(&mut self, peer: PeerId, track: TrackId);
    /// The layer `peer` asks of `track` (`None`: off), now and for a later subscription.
    fn set_layer(&mut self, peer: PeerId, track: TrackId, layer: Option<u8>);
    /// The allocation priority of `track` at every subscriber (the active speaker's video).
    fn set_priority(&mut self, track: TrackId, priority: u8);
    /// The tracks `peer` subscribes to, in subscription order.
    fn subscriptions(&self, peer: PeerId) -> &[TrackId];
    /// The kind of a known track.
    fn kind(&self, track: TrackId) -> Option<Kind>;
    /// Sends every worker the plan of what it should hold.
    fn reconcile(&self);
    /// What it holds, for `/metrics` and leak checks: (peers, track entries, data members).
    fn held(&self) -> (usize, usize, usize);
    /// A participant placed on `worker` takes part in `room`'s data messages (`send`: its
    /// token grants `data`).
    fn add_member(&mut self, member: MemberId, room: &str, worker: WorkerId, send: bool);
    /// Returns whether it was a member.
    fn remove_member(&mut self, member: MemberId) -> bool;
    /// `member` publishes through `peer`, whose data channels carry its data messages once
    /// they are open.
    fn bind_member(&mut self, member: MemberId, peer: PeerId);

    /// In a cluster: `track`, published on `node`, is relayed here (its origin here is the
    /// relay worker). Alone, there is no other node.
    fn add_remote_track(&mut self, _track: TrackId, _kind: Kind, _node: NodeId) {}
    /// In a cluster: `node` has subscribers of local `track`; the relay sends it one copy.
    fn send_to_node(&mut self, _track: TrackId, _node: NodeId) {}
    /// In a cluster: `node` no longer has subscribers of local `track`.
    fn stop_sending(&mut self, _track: TrackId, _node: NodeId) {}
    /// In a cluster: the other nodes with data members in `room` (its messages are sent to
    /// each of them once).
    fn set_data_nodes(&mut self, _room: &str, _nodes: Vec<NodeId>) {}
    /// In a cluster: the nodes each local track is sent to.
    fn sent_to(&self, _track: TrackId) -> Vec<NodeId> {
        Vec::new()
    }
    /// Whether some peer here subscribes to `track`.
    fn has_subscribers(&self, track: TrackId) -> bool;
}

struct TrackRoute {
    kind: Kind,
    origin: WorkerId,
    priority: u8,
    /// Subscribing peers and their workers.
    subs: HashMap<PeerId, WorkerId>,
    /// Subscribers per worker other than the origin: its pipe lives while > 0.
    sinks: HashMap<WorkerId, usize>,
}

struct PeerEntry {
    worker: WorkerId,
    /// Created by [`Command::CreateSubscriber`] (and by a plan, if that was lost).
    create: bool,
    /// Its subscriptions, in order.
    tracks: Vec<TrackId>,
    /// Layers asked for, by track (kept for a later subscription too).
    layers: HashMap<TrackId, Option<u8>>,
}

/// The topology of this node alone: every track's origin is one of its workers.
pub struct LocalTopology {
    pool: Arc<Pool>,
    tracks: HashMap<TrackId, TrackRoute>,
    peers: HashMap<PeerId, PeerEntry>,
    members: Members,
}

impl LocalTopology {
    pub fn new(pool: Arc<Pool>) -> Self {
        LocalTopology {
            pool,
            tracks: HashMap::new(),
            peers: HashMap::new(),
            members: Members::default(),
        }
    }

    fn layer(&self, peer: PeerId, track: TrackId) -> Option<u8> {
        self.peers
            .get(&peer)
            .and_then(|p| p.layers.get(&track).copied())
            .unwrap_or(Some(DEFAULT_LAYER))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The other nodes with data members in `room`, reached through worker `relay`.
    pub fn set_data_nodes(&mut self, room: &str, relay: WorkerId, nodes: Vec<NodeId>) {
        self.members.set_nodes(&self.pool, room, relay, nodes);
    }

    /// The origin worker of a known track.
    pub fn origin(&self, track: TrackId) -> Option<WorkerId> {
        self.tracks.get(&track).map(|r| r.origin)
    }

    /// One subscriber more on `worker` for `track`: the first opens the pipe from the origin.
    pub fn add_sink(&mut self, track: TrackId, worker: WorkerId) {
        let Some(route) = self.tracks.get_mut(&track) else {
            return;
        };
        if worker == route.origin {
            return;
        }
        let n = route.sinks.entry(worker).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.pool
                .send(route.origin, Command::AddSink { track, worker });
        }
    }

    /// One subscriber fewer on `worker` for `track`: the pipe goes with the last one.
    pub fn release_sink(&mut self, track: TrackId, worker: WorkerId) {
        let Some(route) = self.tracks.get_mut(&track) else {
            return;
        };
        if let Some(n) = route.sinks.get_mut(&worker) {
            *n -= 1;
            if *n == 0 {
                route.sinks.remove(&worker);
                self.pool
                    .send(route.origin, Command::RemoveSink { track, worker });
            }
        }
    }

    /// What each worker should hold, built from this topology alone.
    pub fn plans(&self) -> Vec<Plan> {
        let mut plans = vec![Plan::default(); self.pool.len()];
        for (&id, p) in &self.peers {
            let Some(plan) = plans.get_mut(usize::from(p.worker.0)) else {
                continue;
            };
            plan.peers.push(id);
            if p.create {
                plan.subscribers.push(id);
            }
            for &track in &p.tracks {
                let Some(route) = self.tracks.get(&track) else {
                    continue;
                };
                plan.subscriptions.push(Subscription {
                    peer: id,
                    track,
                    kind: route.kind,
                    origin: route.origin,
                    layer: self.layer(id, track),
                    priority: route.priority,
                });
            }
        }
        for (&track, route) in &self.tracks {
            if let Some(plan) = plans.get_mut(usize::from(route.origin.0)) {
                plan.sinks.extend(route.sinks.keys().map(|&w| (track, w)));
            }
        }
        self.members.plan(&mut plans);
        plans
    }
}

impl Topology for LocalTopology {
    fn held(&self) -> (usize, usize, usize) {
        (self.peers.len(), self.tracks.len(), self.members.len())
    }

    fn add_member(&mut self, member: MemberId, room: &str, worker: WorkerId, send: bool) {
        self.members.add(&self.pool, member, room, worker, send);
    }

    fn remove_member(&mut self, member: MemberId) -> bool {
        self.members.remove(&self.pool, member)
    }

    fn bind_member(&mut self, member: MemberId, peer: PeerId) {
        self.members.bind(&self.pool, member, peer);
    }

    fn add_peer(&mut self, peer: PeerId, worker: WorkerId, create: bool) {
        if self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(
            peer,
            PeerEntry {
                worker,
                create,
                tracks: Vec::new(),
                layers: HashMap::new(),
            },
        );
        if create {
            self.pool.send(worker, Command::CreateSubscriber { peer });
        }
    }

    fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for track in p.tracks {
            if let Some(route) = self.tracks.get_mut(&track) {
                route.subs.remove(&peer);
            }
            self.release_sink(track, p.worker);
        }
        self.pool.send(p.worker, Command::ClosePeer { peer });
    }

    fn add_track(&mut self, track: TrackId, kind: Kind, origin: WorkerId) {
        self.tracks.entry(track).or_insert(TrackRoute {
            kind,
            origin,
            priority: 0,
            subs: HashMap::new(),
            sinks: HashMap::new(),
        });
    }

    fn remove_track(&mut self, track: TrackId) -> Vec<PeerId> {
        // The origin's route (and its pipes) end with the track on the worker itself.
        let Some(route) = self.tracks.remove(&track) else {
            return Vec::new();
        };
        let mut gone = Vec::with_capacity(route.subs.len());
        for (peer, worker) in route.subs {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.tracks.retain(|t| *t != track);
            }
            self.pool.send(worker, Command::Unsubscribe { peer, track });
            gone.push(peer);
        }
        for p in self.peers.values_mut() {
            p.layers.remove(&track);
        }
        gone
    }

    fn subscribe(&mut self, peer: PeerId, track: TrackId) -> bool {
        let layer = self.layer(peer, track);
        let (Some(p), Some(route)) = (self.peers.get_mut(&peer), self.tracks.get_mut(&track))
        else {
            return false;
        };
        if route.subs.contains_key(&peer) {
            return true;
        }
        p.tracks.push(track);
        route.subs.insert(peer, p.worker);
        let (worker, kind, origin, priority) = (p.worker, route.kind, route.origin, route.priority);
        self.add_sink(track, worker);
        self.pool.send(
            worker,
            Command::Subscribe {
                peer,
                track,
                kind,
                origin,
            },
        );
        if layer != Some(DEFAULT_LAYER) {
            self.pool
                .send(worker, Command::SetLayer { peer, track, layer });
        }
        if priority != 0 {
            self.pool.send(
                worker,
                Command::SetPriority {
                    peer,
                    track,
                    priority,
                },
            );
        }
        true
    }

    fn unsubscribe(&mut self, peer: PeerId, track: TrackId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if !p.tracks.contains(&track) {
            return;
        }
        p.tracks.retain(|t| *t != track);
        let worker = p.worker;
        if let Some(route) = self.tracks.get_mut(&track) {
            route.subs.remove(&peer);
        }
        self.release_sink(track, worker);
        self.pool.send(worker, Command::Unsubscribe { peer, track });
    }

    fn set_layer(&mut self, peer: PeerId, track: TrackId, layer: Option<u8>) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.layers.insert(track, layer);
        if p.tracks.contains(&track) {
            self.pool
                .send(p.worker, Command::SetLayer { peer, track, layer });
        }
    }

    fn set_priority(&mut self, track: TrackId, priority: u8) {
        let Some(route) = self.tracks.get_mut(&track) else {
            return;
        };
        if route.priority == priority {
            return;
        }
        route.priority = priority;
        for (&peer, &worker) in &route.subs {
            self.pool.send(
                worker,
                Command::SetPriority {
                    peer,
                    track,
                    priority,
                },
            );
        }
    }

    fn subscriptions(&self, peer: PeerId) -> &[TrackId] {
        self.peers.get(&peer).map_or(&[], |p| p.tracks.as_slice())
    }

    fn kind(&self, track: TrackId) -> Option<Kind> {
        self.tracks.get(&track).map(|r| r.kind)
    }

    fn has_subscribers(&self, track: TrackId) -> bool {
        self.tracks.get(&track).is_some_and(|r| !r.subs.is_empty())
    }

    fn reconcile(&self) {
        for (i, plan) in self.plans().into_iter().enumerate() {
            self.pool.send(WorkerId(i as u16), Command::Reconcile(plan));
        }
    }
}
