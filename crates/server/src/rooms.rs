//! The control plane's model of the node: rooms, participants, their peers and tracks, and
//! what the room's signaling says about them. It decides what should flow and tells the
//! media topology ([`Topology`], the one owner of who receives what); it never sees a media
//! packet.
//!
//! All methods are synchronous and run under one mutex that is never held across an await.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};
use sfumato_signal::Source;
use sfumato_worker::sfumato_core::api::Layers;
use sfumato_worker::sfumato_core::temporal::ALL_TEMPORAL;
use sfumato_worker::sfumato_core::{Event, Kind, MemberId, NodeId, PeerId, TrackId, WorkerId};
use sfumato_worker::Pool;
use tokio::sync::mpsc;

use crate::auth::Rights;
use crate::ids::{self, Ids};
use crate::limits::{Exceeded, Limit, Limits};
use crate::outbound::Outbound;
use crate::placement::{NoLiveWorker, Placement};
use crate::speaker::Speaker;
use crate::topology::Topology;

pub type ParticipantId = u64;

/// How a participant reaches us.
pub enum Client {
    /// A WebSocket client; messages to it go through this queue.
    Socket(Outbound),
    Whip,
    /// A WHEP viewer of one publisher.
    Whep {
        target: ParticipantId,
    },
    /// A participant of another node of the cluster (`websocket`, `whip` or `whep` there);
    /// its tracks come through the relay.
    Remote {
        node: NodeId,
        kind: String,
    },
}

impl Client {
    /// The kind of client, as the API shows it.
    pub fn kind(&self) -> &str {
        match self {
            Client::Socket(_) => "websocket",
            Client::Whip => "whip",
            Client::Whep { .. } => "whep",
            Client::Remote { kind, .. } => kind,
        }
    }

    /// The node a remote participant is on (`None`: this one).
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Client::Remote { node, .. } => Some(*node),
            _ => None,
        }
    }
}

pub struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub room: String,
    pub worker: WorkerId,
    pub client: Client,
    pub publisher: Option<PeerId>,
    pub subscriber: Option<PeerId>,
    /// The token of a WHIP or WHEP session's URL (its `Location`).
    pub session: Option<String>,
    /// The participant this one takes over from (a client moving between nodes keeps its old
    /// session until its new one carries media): it does not receive that one's tracks.
    pub replaces: Option<ParticipantId>,
    pub tracks: Vec<TrackId>,
    /// What its token allows (everything in development mode).
    pub rights: Rights,
    /// The worker's latest downlink estimate for this participant's subscriber and the layer
    /// each video track gets.
    pub downlink: Option<Downlink>,
}

/// A subscriber's downlink estimate (bits per second, if estimated) and the layer of each
/// video track.
pub type Downlink = (Option<u64>, Layers);

pub struct TrackInfo {
    pub owner: ParticipantId,
    pub kind: Kind,
    pub mid: String,
    pub muted: bool,
    /// What it carries, as its publisher said (`publish_offer`'s `sources`), else its
    /// kind's default (camera, microphone).
    pub source: Source,
}

#[derive(Default)]
pub struct Room {
    /// In join order.
    pub participants: Vec<ParticipantId>,
    pub speaker: Speaker,
}

/// Why a participant could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    NoLiveWorker(#[from] NoLiveWorker),
    #[error(transparent)]
    Limit(#[from] Exceeded),
}

/// Counts of what [`State`] holds ([`State::held`]).
pub struct Held {
    pub peers: usize,
    pub tracks: usize,
    /// WHIP and WHEP sessions.
    pub sessions: usize,
    pub topology_peers: usize,
    pub topology_tracks: usize,
    /// Participants taking part in data messages.
    pub topology_members: usize,
}

pub struct State {
    /// The workers, asked only whether each is alive (for placement).
    pool: Arc<Pool>,
    pub(crate) topology: Box<dyn Topology>,
    placement: Placement,
    pub rooms: HashMap<String, Room>,
    pub participants: HashMap<ParticipantId, Participant>,
    peers: HashMap<PeerId, ParticipantId>,
    pub tracks: HashMap<TrackId, TrackInfo>,
    /// WHIP and WHEP sessions by the token of their URL.
    sessions: HashMap<String, ParticipantId>,
    ids: Ids,
    limits: Arc<Limits>,
    /// In a cluster: this node, and where to say that a room changed here (its record in
    /// Redis is rewritten).
    pub(crate) cluster: Option<(NodeId, mpsc::UnboundedSender<String>)>,
    /// In a cluster: the live nodes as clients see them (`joined`, `nodes`).
    pub nodes: Value,
    /// Per participant, the sources its last `publish_offer` named, by mid: read when the
    /// worker reports the track of that mid.
    offered_sources: HashMap<ParticipantId, HashMap<String, Source>>,
    /// Socket participants that joined with `auto_subscribe: false`: they receive only the
    /// tracks they `subscribe` to.
    manual: HashSet<ParticipantId>,
}

/// A participant's id as clients see it (the data plane's [`MemberId`] owns the form).
pub fn participant_key(id: ParticipantId) -> String {
    MemberId(id).to_string()
}

pub fn parse_participant_key(s: &str) -> Option<ParticipantId> {
    MemberId::parse(s).map(|m| m.0)
}

impl State {
    /// `ids` hands out participant and peer ids (unique across the cluster).
    pub fn new(
        pool: Arc<Pool>,
        topology: Box<dyn Topology>,
        placement: Placement,
        ids: Ids,
        limits: Arc<Limits>,
    ) -> Self {
        State {
            pool,
            topology,
            placement,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            peers: HashMap::new(),
            tracks: HashMap::new(),
            sessions: HashMap::new(),
            ids,
            limits,
            cluster: None,
            nodes: Value::Array(Vec::new()),
            offered_sources: HashMap::new(),
            manual: HashSet::new(),
        }
    }

    /// Makes this state a node of a cluster: room changes are announced on `changed`.
    pub fn join_cluster(&mut self, node: NodeId, changed: mpsc::UnboundedSender<String>) {
        self.cluster = Some((node, changed));
    }

    /// What the control plane holds, for `/metrics` and leak checks.
    pub fn held(&self) -> Held {
        let (topology_peers, topology_tracks, topology_members) = self.topology.held();
        Held {
            peers: self.peers.len(),
            tracks: self.tracks.len(),
            sessions: self.sessions.len(),
            topology_peers,
            topology_tracks,
            topology_members,
        }
    }

    /// Tells the cluster that this node's part of `room` changed.
    pub(crate) fn touch(&self, room: &str) {
        if let Some((_, changed)) = &self.cluster {
            let _ = changed.send(room.to_string());
        }
    }

    /// Sends every worker the plan of what it should hold (see [`Topology::reconcile`]).
    pub fn reconcile(&self) {
        self.topology.reconcile();
    }

    /// The participant of a WHIP or WHEP session, by the token of its URL.
    pub fn session(&self, token: &str) -> Option<ParticipantId> {
        self.sessions.get(token).copied()
    }

    /// Adds a participant to a room on a live worker chosen by the placement policy.
    pub fn join(
        &mut self,
        room: &str,
        name: &str,
        client: Client,
        rights: Rights,
    ) -> Result<ParticipantId, JoinError> {
        self.join_replacing(room, name, client, None, rights, true)
    }

    /// [`State::join`] for a client that takes over from participant `replaces` (its own
    /// session on another node, which it leaves once this one carries media). Without
    /// `auto_subscribe`, a socket client receives only the tracks it asks for
    /// ([`State::subscribe_by_name`]).
    pub fn join_replacing(
        &mut self,
        room: &str,
        name: &str,
        client: Client,
        replaces: Option<ParticipantId>,
        rights: Rights,
        auto_subscribe: bool,
    ) -> Result<ParticipantId, JoinError> {
        let present = self.rooms.get(room).map(|r| r.participants.len());
        self.limits
            .check_join(self.rooms.len(), present, replaces.is_some())?;
        let pool = &self.pool;
        let worker = self.placement.choose(|w| pool.is_alive(w))?;
        let id = self.ids.next();
        let subscriber = matches!(client, Client::Socket(_) | Client::Whep { .. })
            .then(|| PeerId(self.ids.next()));
        let socket = matches!(client, Client::Socket(_));
        let session = (!socket).then(ids::token);
        if let Some(token) = &session {
            self.sessions.insert(token.clone(), id);
        }
        let p = Participant {
            id,
            name: name.to_string(),
            room: room.to_string(),
            worker,
            client,
            publisher: None,
            subscriber,
            session,
            replaces,
            tracks: Vec::new(),
            rights,
            downlink: None,
        };
        let receives = p.rights.subscribe;
        if let (Some(peer), true) = (subscriber, socket) {
            self.peers.insert(peer, id);
            self.topology.add_peer(peer, worker, true);
        }
        if socket {
            // A socket client takes part in the room's data messages (docs/protocol.md).
            self.topology
                .add_member(MemberId(id), room, worker, p.rights.data);
        }
        let announce = self.participant_json(&p);
        self.participants.insert(id, p);
        if socket && !auto_subscribe {
            self.manual.insert(id);
        }
        let room_entry = self.rooms.entry(room.to_string()).or_default();
        room_entry.participants.push(id);
        self.broadcast(
            room,
            id,
            json!({"type": "participant_joined", "participant": announce}),
        );
        if socket && receives && auto_subscribe {
            // A socket client receives every track already in the room.
            let existing: Vec<TrackId> = self
                .room_tracks(room)
                .into_iter()
                .filter(|t| self.tracks[t].owner != id)
                .collect();
            for t in existing {
                self.subscribe(id, t);
            }
        }
        self.touch(room);
        tracing::info!(participant = id, room, name, worker = %worker, "joined");
        Ok(id)
    }

    /// The peer a participant publishes with, created on first use.
    pub fn publisher_peer(&mut self, id: ParticipantId) -> Option<(WorkerId, PeerId)> {
        let p = self.participants.get_mut(&id)?;
        let worker = p.worker;
        if let Some(peer) = p.publisher {
            return Some((worker, peer));
        }
        let peer = PeerId(self.ids.next());
        p.publisher = Some(peer);
        self.peers.insert(peer, id);
        self.topology.add_peer(peer, worker, false);
        // Its data channels (if the offer has any) carry its data messages.
        self.topology.bind_member(MemberId(id), peer);
        Some((worker, peer))
    }

    /// The peer a WHEP viewer plays through.
    pub fn viewer_peer(&mut self, id: ParticipantId) -> Option<(WorkerId, PeerId)> {
        let p = self.participants.get(&id)?;
        let (peer, worker) = (p.subscriber?, p.worker);
        self.peers.insert(peer, id);
        self.topology.add_peer(peer, worker, false);
        Some((worker, peer))
    }

    pub fn leave(&mut self, id: ParticipantId) {
        let Some(p) = self.participants.remove(&id) else {
            return;
        };
        for peer in [p.publisher, p.subscriber].into_iter().flatten() {
            self.peers.remove(&peer);
            self.topology.remove_peer(peer);
        }
        self.topology.remove_member(MemberId(id));
        self.offered_sources.remove(&id);
        self.manual.remove(&id);
        if let Some(token) = &p.session {
            self.sessions.remove(token);
        }
        for t in p.tracks.clone() {
            self.unpublish(t);
        }
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.participants.retain(|x| *x != id);
            room.speaker.forget(id);
            if room.participants.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        if p.client.node().is_some() && p.client.kind() == "websocket" {
            self.sync_data_nodes(&p.room);
        }
        if p.client.node().is_none() {
            self.placement.release(p.worker);
            self.touch(&p.room);
        }
        self.broadcast(
            &p.room,
            id,
            json!({"type": "participant_left", "participant": participant_key(id)}),
        );
        // WHEP viewers of a publisher that left have nothing more to play.
        let orphans: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|v| matches!(v.client, Client::Whep { target } if target == id))
            .map(|v| v.id)
            .collect();
        for v in orphans {
            self.leave(v);
        }
        tracing::info!(participant = id, room = p.room, "left");
        // A room with nobody of this node in it is not followed here any more.
        let others: Vec<ParticipantId> = self
            .rooms
            .get(&p.room)
            .filter(|r| {
                r.participants.iter().all(|x| {
                    self.participants
                        .get(x)
                        .is_some_and(|o| o.client.node().is_some())
                })
            })
            .map(|r| r.participants.clone())
            .unwrap_or_default();
        for o in others {
            self.leave(o);
        }
    }

    /// The track a client names by `name`, if `ok` accepts it.
    fn find_track(&self, name: &str, ok: impl Fn(&TrackInfo) -> bool) -> Option<TrackId> {
        self.tracks
            .iter()
            .find(|(t, i)| ok(i) && t.to_string() == name)
            .map(|(t, _)| *t)
    }

    pub fn set_muted(&mut self, id: ParticipantId, track: &str, muted: bool) -> bool {
        let Some(tid) = self.find_track(track, |i| i.owner == id) else {
            return false;
        };
        if let Some(info) = self.tracks.get_mut(&tid) {
            info.muted = muted;
        }
        let room = self.participants[&id].room.clone();
        self.broadcast(
            &room,
            id,
            json!({"type": "track_muted", "track": track, "participant": participant_key(id), "muted": muted}),
        );
        self.touch(&room);
        true
    }

    /// Worker `worker` died with its peers: everyone placed on it is told to reconnect (a
    /// socket client, whose session then ends; a new join lands on a live worker) or, for
    /// WHIP and WHEP, ended. The rooms see them leave as usual.
    pub fn worker_died(&mut self, worker: WorkerId) {
        let stranded: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.worker == worker && p.client.node().is_none())
            .map(|p| p.id)
            .collect();
        tracing::warn!(%worker, participants = stranded.len(), "worker died: its participants go");
        for id in stranded {
            self.send(
                id,
                json!({"type": "reconnect", "reason": "the server lost this session's media"}),
            );
            self.leave(id);
        }
    }

    /// Reacts to what a worker reports.
    pub fn on_event(&mut self, worker: WorkerId, event: Event) {
        match event {
            Event::TrackPublished {
                peer,
                track,
                kind,
                mid,
            } => {
                let Some(&owner) = self.peers.get(&peer) else {
                    return;
                };
                let room = self.participants[&owner].room.clone();
                let source = self
                    .offered_sources
                    .get(&owner)
                    .and_then(|m| m.get(&mid))
                    .copied()
                    .unwrap_or(Source::default_for(kind == Kind::Video));
                self.tracks.insert(
                    track,
                    TrackInfo {
                        owner,
                        kind,
                        mid,
                        muted: false,
                        source,
                    },
                );
                self.topology.add_track(track, kind, worker);
                if let Some(p) = self.participants.get_mut(&owner) {
                    p.tracks.push(track);
                }
                let info = self.track_json(track);
                self.broadcast(
                    &room,
                    owner,
                    json!({"type": "track_published", "track": info}),
                );
                self.subscribe_audience(&room, owner, track, kind);
                self.touch(&room);
            }
            Event::TrackUnpublished { track, .. } => self.unpublish(track),
            Event::SubscriberOffer { peer, sdp, slots } => {
                let Some(&id) = self.peers.get(&peer) else {
                    return;
                };
                let tracks: Vec<Value> = slots
                    .iter()
                    .filter_map(|(mid, t)| {
                        let info = self.tracks.get(t)?;
                        Some(json!({"mid": mid, "track": t.to_string(), "participant": participant_key(info.owner), "kind": info.kind.as_str()}))
                    })
                    .collect();
                self.send(
                    id,
                    json!({"type": "subscribe_offer", "sdp": sdp, "tracks": tracks}),
                );
            }
            Event::PeerConnected { peer } => tracing::debug!(%peer, "peer connected"),
            Event::AudioLevels { levels } => self.on_levels(&levels),
            Event::Allocated {
                peer,
                estimate_bps,
                layers,
            } => {
                let id = self.peers.get(&peer).copied();
                if let Some(p) = id.and_then(|id| self.participants.get_mut(&id)) {
                    tracing::debug!(%peer, ?estimate_bps, ?layers, "downlink allocation");
                    let changed = p.downlink.as_ref().is_none_or(|(_, old)| *old != layers);
                    let msg = changed.then(|| received_layers_json(&layers));
                    p.downlink = Some((estimate_bps, layers));
                    if let (Some(msg), Some(id)) = (msg, id) {
                        // The subscriber's SDK reports which layer each video it gets is.
                        self.send(id, msg);
                    }
                }
            }
            Event::LayerDemand { track, mask } => {
                // The engine decides which layers are needed; the publisher's SDK stops
                // encoding and sending the others.
                if let Some(info) = self.tracks.get(&track) {
                    let active: Vec<bool> = (0..3).map(|l| mask & (1 << l) != 0).collect();
                    self.send(
                        info.owner,
                        json!({"type": "layers", "track": track.to_string(), "active": active}),
                    );
                }
            }
            Event::PeerClosed { peer, reason } => {
                let Some(&id) = self.peers.get(&peer) else {
                    return;
                };
                tracing::info!(participant = id, %peer, reason, "peer closed");
                // WHIP and WHEP sessions have nothing but their peer: they end with it.
                if self
                    .participants
                    .get(&id)
                    .is_some_and(|p| !matches!(p.client, Client::Socket(_)))
                {
                    self.leave(id);
                }
            }
            // Workers send these on the data queue (`deliver_data`); one here came the
            // general way and is delivered all the same.
            Event::Data {
                member,
                frame,
                reliable,
            } => self.deliver_data(member, frame, reliable),
            Event::DataRefused {
                member,
                code,
                message,
            } => {
                if code == "rate_limited" {
                    self.limits.count(Limit::DataRate);
                }
                self.send(
                    member.0,
                    json!({"type": "error", "code": code, "message": message}),
                );
            }
            Event::DataOverflow { member } => {
                // It does not keep up with the room's reliable messages: rather than lose
                // some silently or grow the server's memory, it is taken out of the room's
                // data messages, and told; its media carries on.
                if self.topology.remove_member(member) {
                    self.limits.count(Limit::DataQueue);
                    tracing::info!(
                        participant = member.0,
                        "data channel does not keep up: out of the room's data messages"
                    );
                    self.send(
                        member.0,
                        json!({"type": "error", "code": "data_overflow", "message": "the data channel does not keep up with the room's reliable messages: no more data messages in this session"}),
                    );
                }
            }
            Event::Reply { .. } => {}
        }
    }

    /// A data message for a WebSocket member: into its socket's queue (a lossy one that finds
    /// it full is dropped and counted; a reliable one makes the client a slow reader).
    pub fn deliver_data(&self, member: MemberId, frame: Arc<[u8]>, reliable: bool) {
        if let Some(Client::Socket(tx)) = self.participants.get(&member.0).map(|p| &p.client) {
            if !tx.send_data(frame, reliable) {
                self.limits.count(Limit::DataQueue);
            }
        }
    }

    /// Loudness reports: update each room's dominant speaker; announce a change and give the
    /// new speaker's video the first share of everyone's downlink.
    fn on_levels(&mut self, levels: &[(TrackId, u8)]) {
        let mut touched: Vec<String> = Vec::new();
        for (track, loudness) in levels {
            let Some(owner) = self.tracks.get(track).map(|t| t.owner) else {
                continue;
            };
            let Some(room_name) = self.participants.get(&owner).map(|p| p.room.clone()) else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(&room_name) {
                room.speaker.level(owner, *loudness);
                if !touched.contains(&room_name) {
                    touched.push(room_name);
                }
            }
        }
        for name in touched {
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            let before = room.speaker.current();
            let Some(now) = room.speaker.decide() else {
                continue;
            };
            tracing::debug!(room = name, speaker = now, "active speaker");
            for (who, priority) in before.into_iter().map(|b| (b, 0)).chain([(now, 1)]) {
                self.prioritize(who, priority);
            }
            self.broadcast(
                &name,
                ParticipantId::MAX,
                json!({"type": "active_speaker", "participant": participant_key(now)}),
            );
        }
    }

    /// Sets the allocation priority of `who`'s video at every subscriber.
    fn prioritize(&mut self, who: ParticipantId, priority: u8) {
        let Some(p) = self.participants.get(&who) else {
            return;
        };
        for &track in &p.tracks {
            if self
                .tracks
                .get(&track)
                .is_some_and(|i| i.kind == Kind::Video)
            {
                self.topology.set_priority(track, priority);
            }
        }
    }

    /// Whether participant `p` should receive `owner`'s tracks of `kind` without asking.
    fn wants(&self, p: ParticipantId, owner: ParticipantId, kind: Kind) -> bool {
        !self.manual.contains(&p) && self.may_receive(p, owner, kind)
    }

    /// Whether participant `p` may receive `owner`'s tracks of `kind` (asked for or not).
    fn may_receive(&self, p: ParticipantId, owner: ParticipantId, kind: Kind) -> bool {
        let Some(part) = self.participants.get(&p) else {
            return false;
        };
        // A client moving between nodes: neither of its two sessions receives the other.
        if part.replaces == Some(owner)
            || self.participants.get(&owner).and_then(|o| o.replaces) == Some(p)
        {
            return false;
        }
        match part.client {
            Client::Socket(_) => part.rights.subscribe,
            Client::Whip | Client::Remote { .. } => false,
            Client::Whep { target } => {
                target == owner
                    && !part.subscriber.is_some_and(|peer| {
                        self.topology
                            .subscriptions(peer)
                            .iter()
                            .any(|&t| self.topology.kind(t) == Some(kind))
                    })
            }
        }
    }

    /// Subscribes everyone of `room` who should receive `owner`'s new `track`.
    pub(crate) fn subscribe_audience(
        &mut self,
        room: &str,
        owner: ParticipantId,
        track: TrackId,
        kind: Kind,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let audience: Vec<ParticipantId> = r
            .participants
            .iter()
            .copied()
            .filter(|&p| p != owner && self.wants(p, owner, kind))
            .collect();
        for p in audience {
            self.subscribe(p, track);
        }
    }

    /// Subscribes a WHEP viewer to its target's tracks (one per kind).
    pub fn subscribe_viewer(&mut self, id: ParticipantId) {
        let Some(Client::Whep { target }) = self.participants.get(&id).map(|p| &p.client) else {
            return;
        };
        let target = *target;
        let tracks = self
            .participants
            .get(&target)
            .map(|p| p.tracks.clone())
            .unwrap_or_default();
        for t in tracks {
            if self.wants(id, target, self.tracks[&t].kind) {
                self.subscribe(id, t);
            }
        }
    }

    pub(crate) fn subscribe(&mut self, id: ParticipantId, track: TrackId) {
        let Some((peer, room)) = self
            .participants
            .get(&id)
            .and_then(|p| Some((p.subscriber?, p.room.clone())))
        else {
            return;
        };
        let first = !self.topology.has_subscribers(track);
        self.topology.subscribe(peer, track);
        let remote = self
            .tracks
            .get(&track)
            .and_then(|i| self.participants.get(&i.owner))
            .is_some_and(|o| o.client.node().is_some());
        if first && remote {
            self.touch(&room); // the origin node is to send it here
        }
    }

    /// The sources named by participant `id`'s publish offer (mid → source), for the tracks
    /// that offer adds.
    pub fn offer_sources(&mut self, id: ParticipantId, sources: Vec<(String, Source)>) {
        if self.participants.contains_key(&id) {
            self.offered_sources
                .insert(id, sources.into_iter().collect());
        }
    }

    /// Another participant's track of this room named `track`, if `id` may receive it.
    fn receivable(&self, id: ParticipantId, track: &str) -> Result<TrackId, &'static str> {
        let Some(room) = self.participants.get(&id).map(|p| p.room.clone()) else {
            return Err("participant is gone");
        };
        let tid = self
            .find_track(track, |i| {
                i.owner != id
                    && self
                        .participants
                        .get(&i.owner)
                        .is_some_and(|o| o.room == room)
            })
            .ok_or("not a track of another participant of this room")?;
        let info = &self.tracks[&tid];
        if !self.may_receive(id, info.owner, info.kind) {
            return Err("not a track this participant can receive");
        }
        Ok(tid)
    }

    /// Participant `id` asks to receive the track named `track` (`subscribe`).
    pub fn subscribe_by_name(
        &mut self,
        id: ParticipantId,
        track: &str,
    ) -> Result<(), &'static str> {
        let tid = self.receivable(id, track)?;
        self.subscribe(id, tid);
        Ok(())
    }

    /// Participant `id` stops receiving the track named `track` (`unsubscribe`); nothing
    /// if it did not receive it.
    pub fn unsubscribe_by_name(
        &mut self,
        id: ParticipantId,
        track: &str,
    ) -> Result<(), &'static str> {
        let tid = self.receivable(id, track)?;
        let Some((peer, room)) = self
            .participants
            .get(&id)
            .and_then(|p| Some((p.subscriber?, p.room.clone())))
        else {
            return Err("participant receives nothing");
        };
        self.topology.unsubscribe(peer, tid);
        let remote = self
            .participants
            .get(&self.tracks[&tid].owner)
            .is_some_and(|o| o.client.node().is_some());
        if remote && !self.topology.has_subscribers(tid) {
            self.touch(&room); // the origin node may stop sending it here
        }
        Ok(())
    }

    /// Participant `id` wants simulcast layer `layer` (`None`: nothing) of the video track
    /// named `track` of someone in its room. Kept for later subscriptions too.
    pub fn set_layer(
        &mut self,
        id: ParticipantId,
        track: &str,
        layer: Option<u8>,
    ) -> Result<(), &'static str> {
        let Some(room) = self.participants.get(&id).map(|p| p.room.clone()) else {
            return Err("participant is gone");
        };
        let Some(tid) = self.find_track(track, |i| {
            i.kind == Kind::Video
                && i.owner != id
                && self
                    .participants
                    .get(&i.owner)
                    .is_some_and(|o| o.room == room)
        }) else {
            return Err("not a video track of another participant of this room");
        };
        let Some(peer) = self.participants.get(&id).and_then(|p| p.subscriber) else {
            return Err("participant receives nothing");
        };
        self.topology.set_layer(peer, tid, layer);
        Ok(())
    }

    /// A track is gone: its subscribers let go, its pipes close, the room hears of it.
    pub(crate) fn unpublish(&mut self, track: TrackId) {
        let Some(info) = self.tracks.get(&track) else {
            return;
        };
        let owner = info.owner;
        self.topology.remove_track(track);
        self.tracks.remove(&track);
        let room = self.participants.get_mut(&owner).map(|p| {
            p.tracks.retain(|t| *t != track);
            p.room.clone()
        });
        if let Some(room) = room {
            self.broadcast(
                &room,
                owner,
                json!({"type": "track_unpublished", "track": track.to_string(), "participant": participant_key(owner)}),
            );
            self.touch(&room);
        }
    }

    fn room_tracks(&self, room: &str) -> Vec<TrackId> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.participants
            .iter()
            .filter_map(|p| self.participants.get(p))
            .flat_map(|p| p.tracks.iter().copied())
            .collect()
    }

    /// Sends a message to one socket participant.
    pub fn send(&self, id: ParticipantId, msg: Value) {
        if let Some(Participant {
            client: Client::Socket(tx),
            ..
        }) = self.participants.get(&id)
        {
            tx.send(msg.to_string());
        }
    }

    /// Sends a message to every socket participant of a room but `except`.
    pub(crate) fn broadcast(&self, room: &str, except: ParticipantId, msg: Value) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let text = msg.to_string();
        for id in &r.participants {
            if *id == except {
                continue;
            }
            if let Some(Participant {
                client: Client::Socket(tx),
                ..
            }) = self.participants.get(id)
            {
                tx.send(text.clone());
            }
        }
    }

    pub fn track_json(&self, t: TrackId) -> Value {
        match self.tracks.get(&t) {
            Some(i) => json!({
                "id": t.to_string(),
                "participant": participant_key(i.owner),
                "kind": i.kind.as_str(),
                "source": i.source.as_str(),
                "mid": i.mid,
                "muted": i.muted,
            }),
            None => Value::Null,
        }
    }

    pub fn participant_json(&self, p: &Participant) -> Value {
        let tracks: Vec<Value> = p.tracks.iter().map(|t| self.track_json(*t)).collect();
        let mut v = json!({"id": participant_key(p.id), "name": p.name, "tracks": tracks});
        if let Some(old) = p.replaces {
            // A participant moving between nodes: clients may show both as one.
            v["replaces"] = json!(participant_key(old));
        }
        v
    }

    /// The room as the admin API shows it, including each participant's worker.
    pub fn room_json(&self, room: &str) -> Option<Value> {
        let r = self.rooms.get(room)?;
        let participants: Vec<Value> = r
            .participants
            .iter()
            .filter_map(|id| self.participants.get(id))
            .map(|p| {
                let mut v = self.participant_json(p);
                v["worker"] = json!(p.worker.0);
                if let Some((estimate, layers)) = &p.downlink {
                    let spatial: serde_json::Map<String, Value> = layers
                        .iter()
                        .map(|(t, l, _)| (t.to_string(), json!(l)))
                        .collect();
                    // Only the tracks sent at a lower frame rate (fewer temporal layers).
                    let temporal: serde_json::Map<String, Value> = layers
                        .iter()
                        .filter(|(_, l, tl)| l.is_some() && *tl != ALL_TEMPORAL)
                        .map(|(t, _, tl)| (t.to_string(), json!(tl)))
                        .collect();
                    v["downlink"] =
                        json!({"estimate_bps": estimate, "layers": spatial, "temporal": temporal});
                }
                v["kind"] = json!(p.client.kind());
                if let Some(node) = p.client.node().or(self.cluster.as_ref().map(|c| c.0)) {
                    v["node"] = json!(node.to_string());
                }
                v
            })
            .collect();
        Some(json!({"room": room, "participants": participants}))
    }

    /// The earliest participant of a room that publishes at least one track.
    pub fn first_publisher(&self, room: &str) -> Option<ParticipantId> {
        let r = self.rooms.get(room)?;
        r.participants.iter().copied().find(|p| {
            self.participants
                .get(p)
                .is_some_and(|p| !p.tracks.is_empty())
        })
    }
}

/// The `received_layers` message: the layer each video track a subscriber receives gets
/// (`null`: none), and the highest temporal layer for those it gets at a lower frame rate.
fn received_layers_json(layers: &Layers) -> Value {
    let tracks: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(t, l, tl)| {
            let temporal = (l.is_some() && *tl != ALL_TEMPORAL).then_some(*tl);
            (t.to_string(), json!({"layer": l, "temporal": temporal}))
        })
        .collect();
    json!({"type": "received_layers", "tracks": tracks})
}
