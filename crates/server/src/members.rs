//! Who takes part in each room's data messages, on which worker and with which publishing
//! peer (whose data channels carry its messages once open): the control plane's one owner
//! of data membership (part of [`crate::topology::LocalTopology`]). It tells each worker its
//! members ([`Command::DataJoin`]) and, for each room, the other workers holding members of
//! it ([`Command::DataRoute`]), and fills in that part of every worker's plan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sfumato_worker::sfumato_core::{Command, DataMember, MemberId, PeerId, Plan, WorkerId};
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
pub struct Members {
    members: HashMap<MemberId, Member>,
    /// Per room: members per worker.
    rooms: HashMap<Arc<str>, BTreeMap<WorkerId, usize>>,
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
        let workers = self.rooms.entry(room.clone()).or_default();
        let n = workers.entry(worker).or_insert(0);
        *n += 1;
        let first = *n == 1;
        self.members.insert(member, m);
        if first {
            self.announce(pool, &room, None);
        }
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
        let Some(workers) = self.rooms.get_mut(&m.room) else {
            return true;
        };
        let last = workers.get_mut(&m.worker).is_some_and(|n| {
            *n -= 1;
            *n == 0
        });
        if last {
            workers.remove(&m.worker);
            self.announce(pool, &m.room, Some(m.worker));
            if self.rooms.get(&m.room).is_some_and(|w| w.is_empty()) {
                self.rooms.remove(&m.room);
            }
        }
        true
    }

    /// The workers of `room` changed: each hears the new list (and `gone`, which left it,
    /// an empty one).
    fn announce(&self, pool: &Pool, room: &Arc<str>, gone: Option<WorkerId>) {
        let workers: Vec<WorkerId> = self
            .rooms
            .get(room)
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default();
        for &w in &workers {
            pool.send(
                w,
                Command::DataRoute {
                    room: room.clone(),
                    workers: workers.clone(),
                },
            );
        }
        if let Some(w) = gone {
            pool.send(
                w,
                Command::DataRoute {
                    room: room.clone(),
                    workers: Vec::new(),
                },
            );
        }
    }

    /// Adds each worker's members and data routes to its plan.
    pub fn plan(&self, plans: &mut [Plan]) {
        for (&member, m) in &self.members {
            if let Some(plan) = plans.get_mut(usize::from(m.worker.0)) {
                plan.members.push(m.command(member));
            }
        }
        for (room, workers) in &self.rooms {
            let list: Vec<WorkerId> = workers.keys().copied().collect();
            for &w in &list {
                if let Some(plan) = plans.get_mut(usize::from(w.0)) {
                    plan.data_routes.push((room.clone(), list.clone()));
                }
            }
        }
    }
}
