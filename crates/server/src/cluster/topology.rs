//! The media topology of a node in a cluster: [`LocalTopology`] for its own workers, plus the
//! relay worker that stands for every other node. A track published elsewhere has the relay
//! worker as its origin here (and subscribes like any local track); a local track that other
//! nodes receive has the relay worker as one more sink, which sends one copy per node.

use std::collections::{BTreeSet, HashMap};

use sfumato_worker::sfumato_core::{Command, Kind, MemberId, NodeId, PeerId, TrackId, WorkerId};

use crate::topology::{LocalTopology, Topology};

pub struct ClusterTopology {
    local: LocalTopology,
    relay: WorkerId,
    /// Tracks of other nodes relayed here, with their kind and node.
    remote: HashMap<TrackId, (Kind, NodeId)>,
    /// Local tracks sent to other nodes.
    outs: HashMap<TrackId, BTreeSet<NodeId>>,
}

impl ClusterTopology {
    pub fn new(local: LocalTopology, relay: WorkerId) -> Self {
        ClusterTopology {
            local,
            relay,
            remote: HashMap::new(),
            outs: HashMap::new(),
        }
    }

    fn send(&self, cmd: Command) {
        self.local.pool().send(self.relay, cmd);
    }
}

impl Topology for ClusterTopology {
    fn held(&self) -> (usize, usize, usize) {
        // Entries, not distinct tracks: a relayed track is in `remote` and the local map.
        let (peers, tracks, members) = self.local.held();
        (peers, tracks + self.remote.len() + self.outs.len(), members)
    }

    fn add_member(&mut self, member: MemberId, room: &str, worker: WorkerId, send: bool) {
        self.local.add_member(member, room, worker, send);
    }

    fn remove_member(&mut self, member: MemberId) -> bool {
        self.local.remove_member(member)
    }

    fn bind_member(&mut self, member: MemberId, peer: PeerId) {
        self.local.bind_member(member, peer);
    }

    fn add_peer(&mut self, peer: PeerId, worker: WorkerId, create: bool) {
        self.local.add_peer(peer, worker, create);
    }

    fn remove_peer(&mut self, peer: PeerId) {
        self.local.remove_peer(peer);
    }

    fn add_track(&mut self, track: TrackId, kind: Kind, origin: WorkerId) {
        self.local.add_track(track, kind, origin);
    }

    fn remove_track(&mut self, track: TrackId) -> Vec<PeerId> {
        if let Some((_, node)) = self.remote.remove(&track) {
            self.send(Command::RelayStop { track, node });
        }
        // A local track sent elsewhere: its origin worker's end reaches the relay worker,
        // which tells the nodes.
        self.outs.remove(&track);
        self.local.remove_track(track)
    }

    fn subscribe(&mut self, peer: PeerId, track: TrackId) -> bool {
        self.local.subscribe(peer, track)
    }

    fn unsubscribe(&mut self, peer: PeerId, track: TrackId) {
        self.local.unsubscribe(peer, track);
    }

    fn set_layer(&mut self, peer: PeerId, track: TrackId, layer: Option<u8>) {
        self.local.set_layer(peer, track, layer);
    }

    fn set_priority(&mut self, track: TrackId, priority: u8) {
        self.local.set_priority(track, priority);
    }

    fn subscriptions(&self, peer: PeerId) -> &[TrackId] {
        self.local.subscriptions(peer)
    }

    fn kind(&self, track: TrackId) -> Option<Kind> {
        self.local.kind(track)
    }

    fn has_subscribers(&self, track: TrackId) -> bool {
        self.local.has_subscribers(track)
    }

    fn reconcile(&self) {
        let mut plans = self.local.plans();
        if let Some(plan) = plans.get_mut(usize::from(self.relay.0)) {
            plan.relay_in = self
                .remote
                .iter()
                .map(|(&t, &(kind, node))| (t, kind, node))
                .collect();
            for (&track, nodes) in &self.outs {
                let (Some(kind), Some(origin)) = (self.local.kind(track), self.local.origin(track))
                else {
                    continue;
                };
                plan.relay_out
                    .extend(nodes.iter().map(|&node| (track, kind, origin, node)));
            }
        }
        for (i, plan) in plans.into_iter().enumerate() {
            self.local
                .pool()
                .send(WorkerId(i as u16), Command::Reconcile(plan));
        }
    }

    fn set_data_nodes(&mut self, room: &str, nodes: Vec<NodeId>) {
        self.local.set_data_nodes(room, self.relay, nodes);
    }

    fn add_remote_track(&mut self, track: TrackId, kind: Kind, node: NodeId) {
        if self.remote.insert(track, (kind, node)).is_some() {
            return;
        }
        self.local.add_track(track, kind, self.relay);
        self.send(Command::RelayIn { track, kind, node });
    }

    fn send_to_node(&mut self, track: TrackId, node: NodeId) {
        let (Some(kind), Some(origin)) = (self.local.kind(track), self.local.origin(track)) else {
            return;
        };
        if self.remote.contains_key(&track) || !self.outs.entry(track).or_default().insert(node) {
            return; // not ours to send, or sent already
        }
        self.local.add_sink(track, self.relay);
        self.send(Command::RelayOut {
            track,
            kind,
            origin,
            node,
        });
    }

    fn stop_sending(&mut self, track: TrackId, node: NodeId) {
        let Some(nodes) = self.outs.get_mut(&track) else {
            return;
        };
        if !nodes.remove(&node) {
            return;
        }
        if nodes.is_empty() {
            self.outs.remove(&track);
        }
        self.send(Command::RelayStop { track, node });
        self.local.release_sink(track, self.relay);
    }

    fn sent_to(&self, track: TrackId) -> Vec<NodeId> {
        self.outs
            .get(&track)
            .map(|n| n.iter().copied().collect())
            .unwrap_or_default()
    }
}
