//! Who takes part in each room's data messages, on which worker and with which publishing
//! peer (whose data channels carry its messages once open), and in a cluster which other
//! nodes hold members of each room: the control plane's one owner of data membership (part
//! of [`crate::topology::LocalTopology`]). It tells each worker its members
//! ([`Command::DataJoin`]) and, for each room, where its messages go from there
//! ([`Command::DataRoute`]): the other workers holding members of it and, when other nodes
//! do, the relay worker, which alone is told those nodes. It fills in that part of every
//! worker's plan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sfumato_worker::sfumato_core::{
    Command, DataMember, DataRoute, MemberId, NodeId, PeerId, Plan, WorkerId,
};
use sfumato_worker::Pool;

struct Member {
    room: Arc<str>,
    worker: WorkerId,
    send: bool,
    peer: Option<PeerId>,
}

impl Member {
    fn command(&self, member: MemberId) -> DataMember {
        DataMember {
            member,
            room: self.room.clone(),
            send: self.send,
            peer: self.peer,
        }
    }
}

#[derive(Default)]
struct Room {
    /// Members per worker.
    workers: BTreeMap<WorkerId, usize>,
    /// The other nodes with members, and the relay worker that reaches them.
    nodes: Vec<NodeId>,
    relay: Option<WorkerId>,
}

impl Room {
    /// The workers its messages go to: those with members, and the relay worker if other
    /// nodes have some.
    fn workers(&self) -> Vec<WorkerId> {
        let mut w: Vec<WorkerId> = self.workers.keys().copied().collect();
        if let Some(relay) = self.relay.filter(|_| !self.nodes.is_empty()) {
            if !w.contains(&relay) {
                w.push(relay);
                w.sort_unstable();
            }
        }
        w
    }

    /// The route worker `w` holds.
    fn route(&self, room: &Arc<str>, workers: &[WorkerId], w: WorkerId) -> DataRoute {
        let relay = self.relay == Some(w);
        DataRoute {
            room: room.clone(),
            workers: workers.to_vec(),
            nodes: if relay {
                self.nodes.clone()
            } else {
                Vec::new()
            },
        }
    }

    fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.nodes.is_empty()
    }
}

#[derive(Default)]
pub struct Members {
    members: HashMap<MemberId, Member>,
    rooms: HashMap<Arc<str>, Room>,
}

impl Members {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// `member`, on `worker`, takes part in `room` (`send`: it may send).
    pub fn add(&mut self, pool: &Pool, member: MemberId, room: &str, worker: WorkerId, send: bool) {
        if self.members.contains_key(&member) {
            return;
        }
        let room: Arc<str> = room.into();
        let m = Member {
            room: room.clone(),
            worker,
            send,
            peer: None,
        };
        pool.send(worker, Command::DataJoin(m.command(member)));
        self.members.insert(member, m);
        self.change(pool, &room, |r| *r.workers.entry(worker).or_insert(0) += 1);
    }

    /// `member` publishes through `peer`, whose data channels carry its messages once open.
    pub fn bind(&mut self, pool: &Pool, member: MemberId, peer: PeerId) {
        if let Some(m) = self.members.get_mut(&member) {
            if m.peer != Some(peer) {
                m.peer = Some(peer);
                pool.send(m.worker, Command::DataJoin(m.command(member)));
            }
        }
    }

    /// Returns whether it was a member.
    pub fn remove(&mut self, pool: &Pool, member: MemberId) -> bool {
        let Some(m) = self.members.remove(&member) else {
            return false;
        };
        pool.send(m.worker, Command::DataLeave { member });
        self.change(pool, &m.room, |r| {
            if let Some(n) = r.workers.get_mut(&m.worker) {
                *n -= 1;
                if *n == 0 {
                    r.workers.remove(&m.worker);
                }
            }
        });
        true
    }

    /// The other nodes holding members of `room` are `nodes`, reached through worker `relay`.
    pub fn set_nodes(&mut self, pool: &Pool, room: &str, relay: WorkerId, mut nodes: Vec<NodeId>) {
        nodes.sort_unstable();
        nodes.dedup();
        let room: Arc<str> = room.into();
        self.change(pool, &room, |r| {
            r.nodes = nodes;
            r.relay = Some(relay);
        });
    }

    /// Applies `f` to `room`'s entry; when where its messages go changed, every worker
    /// concerned hears its new route (one that left it, an empty one).
    fn change(&mut self, pool: &Pool, room: &Arc<str>, f: impl FnOnce(&mut Room)) {
        let r = self.rooms.entry(room.clone()).or_default();
        let before = (r.workers(), r.nodes.clone());
        f(r);
        let after = r.workers();
        if (&after, &r.nodes) != (&before.0, &before.1) {
            for &w in &after {
                pool.send(w, Command::DataRoute(r.route(room, &after, w)));
            }
            for &w in before.0.iter().filter(|w| !after.contains(w)) {
                pool.send(
                    w,
                    Command::DataRoute(DataRoute {
                        room: room.clone(),
                        ..DataRoute::default()
                    }),
                );
            }
        }
        if r.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// Adds each worker's members and data routes to its plan.
    pub fn plan(&self, plans: &mut [Plan]) {
        for (&member, m) in &self.members {
            if let Some(plan) = plans.get_mut(usize::from(m.worker.0)) {
                plan.members.push(m.command(member));
            }
        }
        for (room, r) in &self.rooms {
            let workers = r.workers();
            for &w in &workers {
                if let Some(plan) = plans.get_mut(usize::from(w.0)) {
                    plan.data_routes.push(r.route(room, &workers, w));
                }
            }
        }
    }
}
