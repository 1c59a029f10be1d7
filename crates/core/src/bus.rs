//! Per worker, where data messages go: the members placed on this worker, by room, and for
//! each room the other workers of the node that hold members of it and (on the relay
//! worker) the other nodes that do. A message read here (its origin) reaches the local
//! members it is for and one copy goes to each of those workers, which deliver it to their
//! own members; the relay worker also sends one copy to each of those nodes, whose relay
//! worker delivers it and pipes it to its node's workers. No copy is passed further. A member receives
//! over its peer's data channels while they are open, else over its WebSocket. The control
//! plane owns membership and routes ([`crate::Command::DataJoin`],
//! [`crate::Command::DataRoute`], repaired by the plan); this is the worker's copy. Each
//! member sends at most [`Bus::set_rate`] messages a second (a second's worth at once),
//! whatever its transport: the rest is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{DataMember, DataRoute};
use crate::data::{DataError, DataPacket};
use crate::ids::{MemberId, NodeId, PeerId, WorkerId};

#[derive(Debug)]
struct Member {
    room: Arc<str>,
    /// May send (the token's `data` grant).
    send: bool,
    peer: Option<PeerId>,
    /// Messages it may send now (a token bucket), as of `filled`.
    tokens: f64,
    filled: Option<Instant>,
}

/// Messages a second one member may send unless told otherwise ([`Bus::set_rate`]).
pub const DEFAULT_RATE: u32 = 500;

#[derive(Debug, Default)]
struct Room {
    /// Local members, in join order.
    members: Vec<MemberId>,
    /// The other workers with members of this room.
    workers: Vec<WorkerId>,
    /// The other nodes with members of this room (on the relay worker).
    nodes: Vec<NodeId>,
}

/// Why a frame from a member is not routed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a member here (it left, or never joined).
    Unknown,
    /// Its token does not grant `data`.
    NotAllowed,
    /// Over its rate.
    RateLimited,
    Malformed(DataError),
}

impl Refused {
    /// The error code its client is told (docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Unknown => "not_joined",
            Refused::NotAllowed => "forbidden",
            Refused::RateLimited => "rate_limited",
            Refused::Malformed(e) => e.code(),
        }
    }
}

/// Where a member receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Its peer's data channels.
    Channel(PeerId),
    WebSocket,
}

#[derive(Debug)]
pub struct Bus {
    members: HashMap<MemberId, Member>,
    rooms: HashMap<Arc<str>, Room>,
    /// Peers whose data channels are open, and whose member they are (if known).
    open: HashMap<PeerId, Option<MemberId>>,
    /// Messages a second per member.
    rate: f64,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            members: HashMap::new(),
            rooms: HashMap::new(),
            open: HashMap::new(),
            rate: f64::from(DEFAULT_RATE),
        }
    }
}

impl Bus {
    /// Messages a second each member may send (at least 1).
    pub fn set_rate(&mut self, per_second: u32) {
        self.rate = f64::from(per_second.max(1));
    }

    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Adds a member, or updates its grant and peer. Returns whether anything changed.
    pub fn join(&mut self, m: DataMember) -> bool {
        if let Some(old) = self.members.get_mut(&m.member) {
            if old.room == m.room {
                let changed = old.send != m.send || old.peer != m.peer;
                old.send = m.send;
                if old.peer != m.peer {
                    let before = std::mem::replace(&mut old.peer, m.peer);
                    self.bind(m.member, before, m.peer);
                }
                return changed;
            }
            self.leave(m.member);
        }
        self.rooms
            .entry(m.room.clone())
            .or_default()
            .members
            .push(m.member);
        self.members.insert(
            m.member,
            Member {
                room: m.room,
                send: m.send,
                peer: m.peer,
                tokens: self.rate,
                filled: None,
            },
        );
        self.bind(m.member, None, m.peer);
        true
    }

    /// `member`'s peer changed from `before` to `after`.
    fn bind(&mut self, member: MemberId, before: Option<PeerId>, after: Option<PeerId>) {
        if let Some(owner) = before.and_then(|p| self.open.get_mut(&p)) {
            *owner = None;
        }
        if let Some(owner) = after.and_then(|p| self.open.get_mut(&p)) {
            *owner = Some(member);
        }
    }

    /// Returns whether it was a member.
    pub fn leave(&mut self, member: MemberId) -> bool {
        let Some(m) = self.members.remove(&member) else {
            return false;
        };
        self.bind(member, m.peer, None);
        if let Some(room) = self.rooms.get_mut(&*m.room) {
            room.members.retain(|x| *x != member);
        }
        self.prune(&m.room);
        true
    }

    /// The data channels of `peer` opened or closed (or the peer went).
    pub fn channels(&mut self, peer: PeerId, open: bool) {
        if open {
            let owner = self
                .members
                .iter()
                .find(|(_, m)| m.peer == Some(peer))
                .map(|(id, _)| *id);
            self.open.insert(peer, owner);
        } else {
            self.open.remove(&peer);
        }
    }

    /// The member whose data channels are on `peer`.
    pub fn member_of(&self, peer: PeerId) -> Option<MemberId> {
        self.open.get(&peer).copied().flatten()
    }

    /// Where `member` receives.
    pub fn transport(&self, member: MemberId) -> Transport {
        match self.members.get(&member).and_then(|m| m.peer) {
            Some(p) if self.open.contains_key(&p) => Transport::Channel(p),
            _ => Transport::WebSocket,
        }
    }

    /// Where messages of the route's room go from here (this worker is not among its
    /// workers). Returns whether that changed.
    pub fn set_route(&mut self, route: DataRoute) -> bool {
        let DataRoute {
            room,
            mut workers,
            mut nodes,
        } = route;
        workers.sort_unstable();
        workers.dedup();
        nodes.sort_unstable();
        nodes.dedup();
        let entry = self.rooms.entry(room.clone()).or_default();
        let changed = entry.workers != workers || entry.nodes != nodes;
        entry.workers = workers;
        entry.nodes = nodes;
        self.prune(&room);
        changed
    }

    fn prune(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.is_empty() && r.workers.is_empty() && r.nodes.is_empty())
        {
            self.rooms.remove(room);
        }
    }

    /// Reads a send frame from a local member, at `now`.
    pub fn read(
        &mut self,
        now: Instant,
        member: MemberId,
        frame: &[u8],
    ) -> Result<DataPacket, Refused> {
        let rate = self.rate;
        let m = self.members.get_mut(&member).ok_or(Refused::Unknown)?;
        if !m.send {
            return Err(Refused::NotAllowed);
        }
        let elapsed = m
            .filled
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        m.tokens = (m.tokens + elapsed * rate).min(rate);
        m.filled = Some(now);
        if m.tokens < 1.0 {
            return Err(Refused::RateLimited);
        }
        m.tokens -= 1.0;
        DataPacket::read(m.room.clone(), member, frame).map_err(Refused::Malformed)
    }

    /// The local members `pkt` is for, appended to `out`.
    pub fn recipients(&self, pkt: &DataPacket, out: &mut Vec<MemberId>) {
        if let Some(r) = self.rooms.get(&*pkt.room) {
            out.extend(r.members.iter().copied().filter(|m| pkt.is_for(*m)));
        }
    }

    /// The other workers a message of `room` read here is piped to.
    pub fn workers(&self, room: &str) -> &[WorkerId] {
        self.rooms.get(room).map_or(&[], |r| &r.workers)
    }

    /// The other nodes a message of `room` read on this node is sent to.
    pub fn nodes(&self, room: &str) -> &[NodeId] {
        self.rooms.get(room).map_or(&[], |r| &r.nodes)
    }

    /// Whether this worker has members of `room` or passes its messages on.
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Brings the bus to the plan: these members and these routes (this worker not among
    /// their workers), nothing else. Returns what it repaired.
    pub fn reconcile(
        &mut self,
        members: Vec<DataMember>,
        routes: Vec<DataRoute>,
        fixed: &mut Vec<String>,
    ) {
        let planned: HashMap<MemberId, DataMember> =
            members.into_iter().map(|m| (m.member, m)).collect();
        let strays: Vec<MemberId> = self
            .members
            .keys()
            .filter(|m| !planned.contains_key(m))
            .copied()
            .collect();
        for m in strays {
            self.leave(m);
            fixed.push(format!("dropped data member {m}"));
        }
        for (id, m) in planned {
            let room = m.room.clone();
            if self.join(m) {
                fixed.push(format!("data member {id} in {room}"));
            }
        }
        let routed: HashMap<Arc<str>, DataRoute> =
            routes.into_iter().map(|r| (r.room.clone(), r)).collect();
        let unrouted: Vec<Arc<str>> = self
            .rooms
            .iter()
            .filter(|(room, r)| {
                (!r.workers.is_empty() || !r.nodes.is_empty()) && !routed.contains_key(*room)
            })
            .map(|(room, _)| room.clone())
            .collect();
        for room in unrouted {
            self.set_route(DataRoute {
                room: room.clone(),
                ..DataRoute::default()
            });
            fixed.push(format!("dropped the data route of {room}"));
        }
        for (room, route) in routed {
            if self.set_route(route) {
                fixed.push(format!("data route of {room}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::encode_send;

    fn send(to: &[MemberId]) -> Vec<u8> {
        encode_send(0, 1, "t", to, b"hi")
    }

    fn member(id: u64, room: &str, send: bool) -> DataMember {
        DataMember {
            member: MemberId(id),
            room: room.into(),
            send,
            peer: None,
        }
    }

    fn route(room: &str, workers: &[u16], nodes: &[u32]) -> DataRoute {
        DataRoute {
            room: room.into(),
            workers: workers.iter().map(|w| WorkerId(*w)).collect(),
            nodes: nodes.iter().map(|n| NodeId(*n)).collect(),
        }
    }

    fn recipients(bus: &Bus, pkt: &DataPacket) -> Vec<MemberId> {
        let mut out = Vec::new();
        bus.recipients(pkt, &mut out);
        out
    }

    #[test]
    fn a_message_reaches_the_members_of_its_room_it_is_for() {
        let t0 = Instant::now();
        let mut bus = Bus::default();
        bus.join(member(1, "a", true));
        bus.join(member(2, "a", true));
        bus.join(member(3, "a", false));
        bus.join(member(4, "b", true));
        bus.set_route(route("a", &[2, 1, 2], &[]));
        let pkt = bus.read(t0, MemberId(1), &send(&[])).unwrap();
        assert_eq!(recipients(&bus, &pkt), [MemberId(2), MemberId(3)]);
        assert_eq!(bus.workers("a"), [WorkerId(1), WorkerId(2)]);
        assert_eq!(bus.workers("b"), []);
        // Named recipients only, and never one of another room.
        let pkt = bus
            .read(t0, MemberId(1), &send(&[MemberId(3), MemberId(4)]))
            .unwrap();
        assert_eq!(recipients(&bus, &pkt), [MemberId(3)]);
        assert_eq!(
            bus.read(t0, MemberId(3), &send(&[])).unwrap_err(),
            Refused::NotAllowed
        );
        assert_eq!(
            bus.read(t0, MemberId(9), &send(&[])).unwrap_err(),
            Refused::Unknown
        );
        assert!(matches!(
            bus.read(t0, MemberId(1), b"\x01"),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn a_member_sends_at_its_rate_a_seconds_worth_at_once() {
        let t0 = Instant::now();
        let mut bus = Bus::default();
        bus.set_rate(10);
        bus.join(member(1, "a", true));
        let burst = (0..100)
            .take_while(|_| bus.read(t0, MemberId(1), &send(&[])).is_ok())
            .count();
        assert_eq!(burst, 10);
        assert_eq!(
            bus.read(t0, MemberId(1), &send(&[])).unwrap_err(),
            Refused::RateLimited
        );
        // One more every 100 ms, never more than a second's worth.
        let t = t0 + std::time::Duration::from_millis(100);
        assert!(bus.read(t, MemberId(1), &send(&[])).is_ok());
        assert!(bus.read(t, MemberId(1), &send(&[])).is_err());
        let later = t0 + std::time::Duration::from_secs(3600);
        let n = (0..100)
            .take_while(|_| bus.read(later, MemberId(1), &send(&[])).is_ok())
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn leaving_and_moving_leave_nothing_behind() {
        let mut bus = Bus::default();
        assert!(bus.join(member(1, "a", true)));
        assert!(!bus.join(member(1, "a", true)));
        assert!(bus.join(member(1, "b", true)));
        assert_eq!(bus.rooms(), 1);
        assert!(bus.leave(MemberId(1)));
        assert!(!bus.leave(MemberId(1)));
        assert_eq!((bus.members(), bus.rooms()), (0, 0));
        bus.set_route(route("a", &[1], &[3]));
        assert_eq!(bus.nodes("a"), [NodeId(3)]);
        bus.set_route(route("a", &[], &[]));
        assert_eq!(bus.rooms(), 0);
    }

    #[test]
    fn a_member_receives_over_its_peers_channels_while_they_are_open() {
        let mut bus = Bus::default();
        let peer = PeerId(7);
        bus.channels(peer, true); // open before the control plane bound it
        assert_eq!(bus.member_of(peer), None);
        bus.join(DataMember {
            peer: Some(peer),
            ..member(1, "a", true)
        });
        assert_eq!(bus.member_of(peer), Some(MemberId(1)));
        assert_eq!(bus.transport(MemberId(1)), Transport::Channel(peer));
        bus.channels(peer, false);
        assert_eq!(bus.transport(MemberId(1)), Transport::WebSocket);
        bus.channels(peer, true);
        assert_eq!(
            bus.member_of(peer),
            Some(MemberId(1)),
            "bound when it opens"
        );
        bus.leave(MemberId(1));
        assert_eq!(bus.member_of(peer), None);
    }

    #[test]
    fn a_plan_repairs_members_and_routes() {
        let mut bus = Bus::default();
        bus.join(member(1, "a", true));
        bus.set_route(route("a", &[1], &[]));
        let mut fixed = Vec::new();
        bus.reconcile(
            vec![member(2, "a", true), member(1, "a", true)],
            vec![route("a", &[1], &[])],
            &mut fixed,
        );
        assert_eq!(fixed, ["data member p2 in a"]);
        fixed.clear();
        bus.reconcile(
            vec![member(2, "a", true), member(1, "a", true)],
            vec![route("a", &[1], &[4])],
            &mut fixed,
        );
        assert_eq!(fixed, ["data route of a"], "a node the route lacked");
        assert_eq!(bus.nodes("a"), [NodeId(4)]);
        fixed.clear();
        bus.reconcile(vec![member(2, "a", true)], vec![], &mut fixed);
        assert_eq!(
            fixed,
            ["dropped data member p1", "dropped the data route of a"]
        );
        assert_eq!(bus.workers("a"), []);
        assert_eq!(bus.members(), 1);
    }
}
