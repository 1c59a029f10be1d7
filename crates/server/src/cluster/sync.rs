//! A room across nodes, as the control plane's state sees it: this node's record of a room,
//! and what the other nodes' records say, applied as joins, leaves, tracks published and
//! unpublished, mutes, and which local tracks each node receives. Everything here runs under
//! the state's lock, like the rest of the state.

use serde_json::json;
use sfumato_worker::sfumato_core::{NodeId, TrackId, WorkerId};

use super::members::NodeInfo;
use super::records::{RecordParticipant, RecordTrack, Remote, RemoteTrack, RoomRecord};
use crate::rooms::{participant_key, Client, Participant, ParticipantId, State, TrackInfo};

impl State {
    /// The rooms this node follows: those with a participant of its own.
    pub fn followed_rooms(&self) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(_, r)| {
                r.participants.iter().any(|id| {
                    self.participants
                        .get(id)
                        .is_some_and(|p| p.client.node().is_none())
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// This node's record of `room`, generation `gen` (`None`: not in a cluster). With
    /// nobody of this node left in the room it is empty, and says so: a missing record says
    /// nothing (Redis may have lost it), so it is no way to tell that everyone left.
    pub fn room_record(&self, room: &str, gen: u64) -> Option<RoomRecord> {
        let (node, _) = self.cluster.as_ref()?;
        let mut participants = Vec::new();
        let mut wants = Vec::new();
        let members = self
            .rooms
            .get(room)
            .map_or(&[][..], |r| &r.participants[..]);
        for p in members.iter().filter_map(|id| self.participants.get(id)) {
            if p.client.node().is_some() {
                // Another node's participant: its tracks that someone here receives.
                wants.extend(
                    p.tracks
                        .iter()
                        .filter(|t| self.topology.has_subscribers(**t))
                        .map(|t| t.to_string()),
                );
                continue;
            }
            participants.push(RecordParticipant {
                id: participant_key(p.id),
                name: p.name.clone(),
                kind: p.client.kind().to_string(),
                worker: p.worker.0,
                tracks: p
                    .tracks
                    .iter()
                    .filter_map(|t| {
                        let info = self.tracks.get(t)?;
                        Some(RecordTrack {
                            id: t.to_string(),
                            kind: info.kind.as_str().to_string(),
                            muted: info.muted,
                            source: Some(info.source.as_str().to_string()),
                        })
                    })
                    .collect(),
                replaces: p.replaces.map(participant_key),
            });
        }
        Some(RoomRecord {
            node: node.0,
            gen,
            participants,
            wants,
        })
    }

    /// Applies what the other live nodes' records of `room` say (this node's own excluded).
    /// A node without a readable record is no news: what was known of it stays (a Redis
    /// that restarted empty, or garbage in a record, makes nobody leave); its participants
    /// leave when its record no longer lists them, or when the node is gone
    /// ([`State::node_gone`]). Only for a room this node follows, unless `joining`: someone
    /// is about to join it here.
    pub fn apply_remote(&mut self, room: &str, remotes: &[Remote], joining: bool) {
        let followed = self.followed_rooms().iter().any(|r| r == room);
        let anyone = remotes.iter().any(|r| !r.participants.is_empty());
        if !(followed || (joining && anyone)) {
            return;
        }
        self.rooms.entry(room.to_string()).or_default();
        for remote in remotes {
            self.apply_node(room, remote);
        }
        self.sync_data_nodes(room);
    }

    /// Tells the topology which other nodes hold data members of `room`: those with a
    /// participant on a WebSocket there (every one takes part in data messages). Called
    /// when remote participants join ([`State::apply_remote`]) or leave ([`State::leave`]).
    pub(crate) fn sync_data_nodes(&mut self, room: &str) {
        let nodes = self.nodes_with(room, |p| p.client.kind() == "websocket");
        self.topology.set_data_nodes(room, nodes);
    }

    /// The other nodes with a participant in `room` that `which` accepts, sorted, once each.
    fn nodes_with(&self, room: &str, which: impl Fn(&Participant) -> bool) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.participants
                    .iter()
                    .filter_map(|id| self.participants.get(id))
                    .filter(|p| which(p))
                    .filter_map(|p| p.client.node())
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// One other node's record of `room`.
    fn apply_node(&mut self, room: &str, remote: &Remote) {
        let node = remote.node;
        // Who left that node's part of the room.
        let listed: Vec<ParticipantId> = remote.participants.iter().map(|p| p.id).collect();
        let gone: Vec<ParticipantId> = self.rooms[room]
            .participants
            .iter()
            .filter_map(|id| self.participants.get(id))
            .filter(|p| p.client.node() == Some(node) && !listed.contains(&p.id))
            .map(|p| p.id)
            .collect();
        for id in gone {
            self.leave(id);
        }
        for rp in &remote.participants {
            if let Some(p) = self.participants.get(&rp.id) {
                if p.client.node() != Some(node) || p.room != room {
                    continue; // an id this node knows otherwise: never taken over
                }
            } else {
                let p = Participant {
                    id: rp.id,
                    name: rp.name.clone(),
                    room: room.to_string(),
                    worker: WorkerId(rp.worker),
                    client: Client::Remote {
                        node,
                        kind: rp.kind.clone(),
                    },
                    publisher: None,
                    subscriber: None,
                    session: None,
                    replaces: rp.replaces,
                    tracks: Vec::new(),
                    rights: crate::auth::Rights::none(),
                    downlink: None,
                };
                let announce = self.participant_json(&p);
                self.participants.insert(rp.id, p);
                if let Some(r) = self.rooms.get_mut(room) {
                    r.participants.push(rp.id);
                }
                self.broadcast(
                    room,
                    rp.id,
                    json!({"type": "participant_joined", "participant": announce}),
                );
            }
            self.apply_tracks(room, node, rp.id, &rp.tracks);
        }
        // Which of this node's tracks that node receives.
        let ours: Vec<TrackId> = self.rooms[room]
            .participants
            .iter()
            .filter_map(|id| self.participants.get(id))
            .filter(|p| p.client.node().is_none())
            .flat_map(|p| p.tracks.iter().copied())
            .collect();
        for t in ours {
            let wanted = remote.wants.contains(&t);
            let sent = self.topology.sent_to(t).contains(&node);
            if wanted && !sent {
                self.topology.send_to_node(t, node);
            } else if !wanted && sent {
                self.topology.stop_sending(t, node);
            }
        }
    }

    /// A remote participant's tracks as its node lists them.
    fn apply_tracks(
        &mut self,
        room: &str,
        node: NodeId,
        owner: ParticipantId,
        tracks: &[RemoteTrack],
    ) {
        let had: Vec<TrackId> = self.participants[&owner].tracks.clone();
        for t in had.iter().filter(|t| !tracks.iter().any(|x| x.id == **t)) {
            self.unpublish(*t);
        }
        for &RemoteTrack {
            id: track,
            kind,
            muted,
            source,
        } in tracks
        {
            if let Some(info) = self.tracks.get_mut(&track) {
                if info.owner == owner && info.muted != muted {
                    info.muted = muted;
                    self.broadcast(
                        room,
                        owner,
                        json!({"type": "track_muted", "track": track.to_string(), "participant": participant_key(owner), "muted": muted}),
                    );
                }
                continue;
            }
            self.tracks.insert(
                track,
                TrackInfo {
                    owner,
                    kind,
                    mid: String::new(),
                    muted,
                    source,
                },
            );
            self.topology.add_remote_track(track, kind, node);
            if let Some(p) = self.participants.get_mut(&owner) {
                p.tracks.push(track);
            }
            let info = self.track_json(track);
            self.broadcast(
                room,
                owner,
                json!({"type": "track_published", "track": info}),
            );
            self.subscribe_audience(room, owner, track, kind);
        }
    }

    /// Everyone of node `node` leaves, and it gets nothing more from here (its lease expired
    /// and its relay fell silent: it is gone).
    pub fn node_gone(&mut self, node: NodeId) {
        let theirs: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.client.node() == Some(node))
            .map(|p| p.id)
            .collect();
        tracing::warn!(%node, participants = theirs.len(), "node gone: its participants leave");
        for id in theirs {
            self.leave(id);
        }
        let ours: Vec<TrackId> = self.tracks.keys().copied().collect();
        for t in ours {
            if self.topology.sent_to(t).contains(&node) {
                self.topology.stop_sending(t, node);
            }
        }
    }
}

impl State {
    /// Rooms that nobody of this node is in any more (a join that was prepared and did not
    /// happen) are not followed: their remote participants are forgotten.
    pub fn drop_unfollowed(&mut self) {
        let followed = self.followed_rooms();
        let stale: Vec<ParticipantId> = self
            .rooms
            .iter()
            .filter(|(name, _)| !followed.contains(name))
            .flat_map(|(_, r)| r.participants.iter().copied())
            .collect();
        for id in stale {
            self.leave(id);
        }
        self.rooms
            .retain(|name, r| followed.contains(name) || !r.participants.is_empty());
    }

    /// The other nodes with participants in `room`.
    pub fn room_nodes(&self, room: &str) -> Vec<NodeId> {
        self.nodes_with(room, |_| true)
    }

    /// Participants of this node (for its lease's load).
    pub fn local_participants(&self) -> usize {
        self.participants
            .values()
            .filter(|p| p.client.node().is_none())
            .count()
    }

    /// The live nodes changed: every socket client of this node hears where else it can go
    /// (the SDK reconnects to one of them if its own node is lost).
    pub fn announce_nodes(&mut self, nodes: &[NodeInfo]) {
        self.nodes = nodes_json(nodes);
        let msg = json!({"type": "nodes", "nodes": self.nodes}).to_string();
        for p in self.participants.values() {
            if let Client::Socket(tx) = &p.client {
                tx.send(msg.clone());
            }
        }
    }
}

/// The live nodes as clients see them: id, URL, and whether it takes participants.
pub fn nodes_json(nodes: &[NodeInfo]) -> serde_json::Value {
    json!(nodes
        .iter()
        .map(|n| json!({"id": n.node().to_string(), "url": n.url, "state": n.state}))
        .collect::<Vec<_>>())
}
