//! Where a participant should be, across the cluster: a node that is full or draining sends a
//! joining client to the least loaded serving node that already holds the room (else the
//! least loaded one), and a draining node moves its participants there make-before-break
//! (`move`: the client joins the other node, and leaves this one once its media flows there),
//! then exits when it is empty, after `--drain-timeout`, or at once when no node serves.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::members::{NodeInfo, NodeState};
use super::Node;
use crate::rooms::{Client, ParticipantId};
use crate::App;

/// How often a draining node checks whether it is empty.
const DRAIN_POLL: Duration = Duration::from_millis(200);

impl Node {
    pub fn is_draining(&self) -> bool {
        Self::lock(&self.me).state == NodeState::Draining
    }

    /// Where to send someone joining `room` instead of here (`None`: here). Only a node that
    /// is full or draining sends anyone away; it picks the least loaded serving node that
    /// already holds the room, else the least loaded serving node with room to spare.
    pub fn redirect_for(&self, app: &App, room: &str) -> Option<String> {
        let me = Self::lock(&self.me).clone();
        let here = app.state().local_participants();
        let full = here >= me.capacity;
        if !full && me.state == NodeState::Serving {
            return None;
        }
        let holding = app.state().room_nodes(room);
        let candidates: Vec<NodeInfo> = self
            .others_serving()
            .into_iter()
            .filter(|n| n.participants < n.capacity)
            .collect();
        let least = |list: Vec<&NodeInfo>| {
            list.into_iter()
                .min_by(|a, b| a.load().total_cmp(&b.load()))
                .map(|n| n.url.clone())
        };
        least(
            candidates
                .iter()
                .filter(|n| holding.contains(&n.node()))
                .collect(),
        )
        .or_else(|| least(candidates.iter().collect()))
    }

    /// The other nodes that take participants.
    fn others_serving(&self) -> Vec<NodeInfo> {
        Self::lock(&self.members)
            .nodes
            .iter()
            .filter(|n| n.id != self.id.0 && n.state == NodeState::Serving)
            .cloned()
            .collect()
    }

    /// Whether a join into `room` may happen here: `Err(Some(url))` sends it to another
    /// node, `Err(None)` refuses it (draining with nowhere to send it).
    pub fn admit(&self, app: &App, room: &str) -> Result<(), Option<String>> {
        match self.redirect_for(app, room) {
            None if self.is_draining() => Err(None),
            None => Ok(()),
            Some(url) => Err(Some(url)),
        }
    }

    /// Resolves once a drain has ended (the node is empty, or its time is up).
    pub async fn drained(&self) {
        let mut rx = self.drained.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Starts draining: the lease says so (no node sends anyone here), each WebSocket
    /// participant is asked to move, and the node is empty in the end or gives up after
    /// `timeout`. Returns when it is empty or the time is up; twice is once.
    pub async fn drain(&self, app: &App, timeout: Duration) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return self.drained().await;
        }
        Self::lock(&self.me).state = NodeState::Draining;
        tracing::info!(node = %self.id, ?timeout, "draining: moving every participant to other nodes");
        let deadline = Instant::now() + timeout;
        let mut asked: HashSet<ParticipantId> = HashSet::new();
        loop {
            // Asked again as nodes come and go (a participant with nowhere to go yet waits).
            let movers: Vec<(ParticipantId, String)> = {
                let state = app.state();
                state
                    .participants
                    .values()
                    .filter(|p| matches!(p.client, Client::Socket(_)) && !asked.contains(&p.id))
                    .map(|p| (p.id, p.room.clone()))
                    .collect()
            };
            for (id, room) in movers {
                let Some(url) = self.redirect_for(app, &room) else {
                    continue;
                };
                app.state().send(
                    id,
                    json!({"type": "move", "url": url, "reason": "this node is draining"}),
                );
                asked.insert(id);
            }
            let left = app.state().local_participants();
            if left == 0 {
                tracing::info!(node = %self.id, "drained: nobody left");
                break;
            }
            // The whole cluster stops (every node drains): nobody can move, so waiting helps
            // no one (a rolling restart starts the new node first).
            if self.others_serving().is_empty() {
                tracing::warn!(node = %self.id, participants = left, "no serving node to move to: stopping now");
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(node = %self.id, participants = left, "drain timed out");
                break;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.drained.send_replace(true);
    }
}
