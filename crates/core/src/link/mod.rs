//! One node's ends of its relay links to the other nodes of a cluster, sans IO. Every
//! datagram is encrypted and authenticated (AES-256-GCM under a key per sending node, derived
//! from the cluster key and that node's start), refused when it comes from an address that is
//! not a member or replays one already seen, and media lost on the way is asked for again
//! (NACK) and resent from a short history, so that a packet lost between two nodes is not a
//! gap in every subscriber's stream on the far side.
//!
//! A datagram is `version u8 · sender node u32 · counter u64 · sealed(kind u8 · body) · tag`,
//! the header authenticated as associated data and (sender, counter) the nonce. Kinds: a
//! pipe message that needs no repair (control); media (`seq u64` then the message, in its
//! [`wire`](crate::wire) form); a NACK (the `seq`s missing); and data messages, cut into
//! fragments, reliable ones acknowledged and sent again until they are in ([`data`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use serde::Serialize;

use crate::ids::NodeId;
use crate::packet::PipeMsg;
use crate::wire::{self, ClusterClock};

pub mod data;

/// Length of the cluster key and of a node's start salt.
pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 8;
const TAG: usize = 16;
/// How long sent media is kept for a NACK, and how long a gap is asked for.
const HISTORY: Duration = Duration::from_secs(1);
/// At most this many sent packets are kept per link.
const HISTORY_PACKETS: usize = 8192;
/// A gap waits this long for a packet that is merely late before it is asked for.
const NACK_DELAY: Duration = Duration::from_millis(5);
/// Then it is asked for again this often, this many times.
const NACK_RETRY: Duration = Duration::from_millis(30);
const NACK_TRIES: u8 = 5;
/// The most gaps one link tracks; a larger hole is lost whole.
const MAX_MISSING: u64 = 1024;
/// The most sequence numbers in one NACK.
const NACK_BATCH: usize = 128;

const CONTROL: u8 = 1;
const MEDIA: u8 = 2;
const NACK: u8 = 3;
/// Nothing but a sign of life (sent every [`PING_INTERVAL`]).
const PING: u8 = 4;
/// A fragment of a reliable data message.
const DATA: u8 = 5;
/// What arrived of the reliable data messages.
const DATA_ACK: u8 = 6;
/// A fragment of a lossy data message.
const LOSSY: u8 = 7;

/// How often each member is sent a sign of life, so that a silent link means a dead node.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Counters of one node's relay links.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LinkStats {
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Media sent again after a NACK, and data fragments sent again.
    pub resent: u64,
    pub nacks_sent: u64,
    /// Media given up on after every NACK (or too far behind to ask for).
    pub lost: u64,
    /// Media that arrived twice (a resend that crossed the original).
    pub duplicates: u64,
    /// Datagrams from an address that is not a member of the cluster.
    pub not_member: u64,
    /// Datagrams that failed authentication.
    pub forged: u64,
    /// Datagrams whose counter was seen already.
    pub replayed: u64,
    /// Authentic datagrams whose content could not be read.
    pub malformed: u64,
    /// Reliable data messages not sent: the link's window was full ([`data::WINDOW`]).
    pub data_refused: u64,
}

/// What the links ask their runtime to do.
#[derive(Debug)]
pub enum LinkOutput {
    Transmit { to: SocketAddr, data: Vec<u8> },
    Message { from: NodeId, msg: PipeMsg },
}

/// The sending key of `node` in its start `salt`, derived from the cluster key.
fn node_key(cluster_key: &[u8; KEY_LEN], node: NodeId, salt: &[u8; KEY_LEN]) -> LessSafeKey {
    let mac = hmac::Key::new(hmac::HMAC_SHA256, cluster_key);
    let mut ctx = hmac::Context::with_key(&mac);
    ctx.update(b"sfumato relay v1");
    ctx.update(&node.0.to_be_bytes());
    ctx.update(salt);
    let tag = ctx.sign();
    // HMAC-SHA256 gives exactly the 32 bytes AES-256 takes.
    let key = UnboundKey::new(&AES_256_GCM, tag.as_ref()).unwrap_or_else(|_| unreachable!());
    LessSafeKey::new(key)
}

fn nonce(sender: NodeId, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&sender.0.to_be_bytes());
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Counters seen from one sender: the highest, and a window of the 128 below it.
#[derive(Debug, Default)]
struct Replay {
    top: u64,
    window: u128,
}

impl Replay {
    fn fresh(&self, c: u64) -> bool {
        c > self.top || (self.top - c < 128 && self.window & (1 << (self.top - c)) == 0)
    }

    fn mark(&mut self, c: u64) {
        if c > self.top {
            let shift = c - self.top;
            self.window = if shift >= 128 {
                0
            } else {
                self.window << shift
            };
            self.top = c;
        }
        self.window |= 1 << (self.top - c);
    }
}

struct Gap {
    due: Instant,
    since: Instant,
    tries: u8,
}

struct Member {
    addr: SocketAddr,
    salt: [u8; KEY_LEN],
    key: LessSafeKey,
    replay: Replay,
    /// Media sent to it: (seq, when, wire form), oldest first.
    history: VecDeque<(u64, Instant, Vec<u8>)>,
    next_send: u64,
    /// The next media seq expected from it (`None` before the first).
    next_recv: Option<u64>,
    missing: BTreeMap<u64, Gap>,
    /// When an authentic datagram last came from it.
    heard: Option<Instant>,
    /// When it became a member here.
    since: Instant,
    data_out: data::Outbound,
    data_in: data::Inbound,
}

/// This node's relay links to every other member of the cluster.
pub struct Links {
    me: NodeId,
    cluster_key: [u8; KEY_LEN],
    key: LessSafeKey,
    counter: u64,
    members: HashMap<NodeId, Member>,
    by_addr: HashMap<SocketAddr, NodeId>,
    out: VecDeque<LinkOutput>,
    scratch: Vec<u8>,
    /// The buffer a received datagram is opened in.
    opened: Vec<u8>,
    stats: LinkStats,
    next_ping: Option<Instant>,
}

impl Links {
    /// This node, `me`, in the start salted `salt` (random at each start, told to the other
    /// members with its address), in the cluster keyed `cluster_key`.
    pub fn new(me: NodeId, salt: &[u8; KEY_LEN], cluster_key: &[u8; KEY_LEN]) -> Self {
        Links {
            me,
            cluster_key: *cluster_key,
            key: node_key(cluster_key, me, salt),
            counter: 0,
            members: HashMap::new(),
            by_addr: HashMap::new(),
            out: VecDeque::new(),
            scratch: Vec::new(),
            opened: Vec::new(),
            stats: LinkStats::default(),
            next_ping: None,
        }
    }

    /// Adds or updates a member (its relay address and start salt, from its lease) at
    /// `now`. A member that restarted (another salt) starts afresh.
    pub fn set_member(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: SocketAddr,
        salt: &[u8; KEY_LEN],
    ) {
        if node == self.me {
            return;
        }
        if let Some(m) = self.members.get(&node) {
            if m.addr == addr && m.salt == *salt {
                return;
            }
            self.by_addr.remove(&m.addr);
        }
        self.by_addr.insert(addr, node);
        self.members.insert(
            node,
            Member {
                addr,
                salt: *salt,
                key: node_key(&self.cluster_key, node, salt),
                replay: Replay::default(),
                history: VecDeque::new(),
                next_send: 0,
                next_recv: None,
                missing: BTreeMap::new(),
                heard: None,
                since: now,
                data_out: data::Outbound::default(),
                data_in: data::Inbound::default(),
            },
        );
    }

    /// The members, each with how long it has been silent at `now` (since its last
    /// datagram, or since it became a member if none came).
    pub fn silence(&self, now: Instant) -> impl Iterator<Item = (NodeId, Duration)> + '_ {
        self.members.iter().map(move |(n, m)| {
            (
                *n,
                now.saturating_duration_since(m.heard.unwrap_or(m.since)),
            )
        })
    }

    pub fn remove_member(&mut self, node: NodeId) {
        if let Some(m) = self.members.remove(&node) {
            self.by_addr.remove(&m.addr);
        }
    }

    pub fn is_member(&self, node: NodeId) -> bool {
        self.members.contains_key(&node)
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Sends `msg` to member `to` (dropped if it is not one). Media is kept for a NACK.
    pub fn send(&mut self, now: Instant, to: NodeId, msg: &PipeMsg, clock: &ClusterClock) {
        let Some(m) = self.members.get_mut(&to) else {
            return;
        };
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        if let PipeMsg::Data(p) = msg {
            let mut bodies = Vec::new();
            if wire::encode(msg, clock, &mut body).is_ok() {
                let (kind, sent) = if p.reliable {
                    (DATA, m.data_out.reliable(now, &body, &mut bodies))
                } else {
                    (LOSSY, m.data_out.lossy(&body, &mut bodies))
                };
                if !sent {
                    self.stats.data_refused += 1;
                }
                self.scratch = body;
                self.seal_all(to, kind, bodies);
            } else {
                self.scratch = body;
            }
            return;
        }
        if matches!(msg, PipeMsg::Media(_)) {
            let seq = m.next_send;
            m.next_send += 1;
            body.push(MEDIA);
            body.extend_from_slice(&seq.to_be_bytes());
            if wire::encode(msg, clock, &mut body).is_err() {
                self.scratch = body;
                return;
            }
            // The oldest entry's buffer, once it is dropped, holds the new one.
            let mut spare = None;
            while m.history.len() >= HISTORY_PACKETS
                || m.history
                    .front()
                    .is_some_and(|(_, t, _)| now >= *t + HISTORY)
            {
                spare = m.history.pop_front().map(|(_, _, b)| b);
            }
            let mut kept = spare.unwrap_or_default();
            kept.clear();
            kept.extend_from_slice(&body[9..]);
            m.history.push_back((seq, now, kept));
        } else {
            body.push(CONTROL);
            if wire::encode(msg, clock, &mut body).is_err() {
                self.scratch = body;
                return;
            }
        }
        self.seal(to, &body);
        self.scratch = body;
    }

    /// Fuzzing only: seals any `body` (kind byte first) to member `to`, as a member that
    /// holds the cluster key could, so that a fuzzer reaches what lies behind the AEAD.
    #[cfg(feature = "fuzzing")]
    pub fn seal_body(&mut self, to: NodeId, body: &[u8]) {
        self.seal(to, body);
    }

    /// Seals each of `bodies` to member `to`, with `kind` before it.
    fn seal_all(&mut self, to: NodeId, kind: u8, bodies: Vec<Vec<u8>>) {
        for mut b in bodies {
            b.insert(0, kind);
            self.seal(to, &b);
        }
    }

    /// Encrypts `body` to member `to` and queues it.
    fn seal(&mut self, to: NodeId, body: &[u8]) {
        let Some(addr) = self.members.get(&to).map(|m| m.addr) else {
            return;
        };
        self.counter += 1;
        let mut header = [0u8; HEADER];
        header[0] = VERSION;
        header[1..5].copy_from_slice(&self.me.0.to_be_bytes());
        header[5..].copy_from_slice(&self.counter.to_be_bytes());
        let mut data = Vec::with_capacity(HEADER + body.len() + TAG);
        data.extend_from_slice(&header);
        data.extend_from_slice(body);
        let Ok(tag) = self.key.seal_in_place_separate_tag(
            nonce(self.me, self.counter),
            Aad::from(&header),
            &mut data[HEADER..],
        ) else {
            return;
        };
        data.extend_from_slice(tag.as_ref());
        self.stats.sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        self.out.push_back(LinkOutput::Transmit { to: addr, data });
    }

    /// One datagram from the relay socket. Anything not from a member, not authentic, seen
    /// before or unreadable is dropped and counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        data: &[u8],
        clock: &ClusterClock,
    ) {
        let Some(&node) = self.by_addr.get(&source) else {
            self.stats.not_member += 1;
            return;
        };
        if data.len() < HEADER + TAG || data[0] != VERSION {
            self.stats.malformed += 1;
            return;
        }
        let sender = NodeId(u32::from_be_bytes([data[1], data[2], data[3], data[4]]));
        let mut c = [0u8; 8];
        c.copy_from_slice(&data[5..HEADER]);
        let counter = u64::from_be_bytes(c);
        let Some(m) = self.members.get_mut(&node) else {
            return;
        };
        if sender != node {
            self.stats.forged += 1;
            return;
        }
        if !m.replay.fresh(counter) {
            self.stats.replayed += 1;
            return;
        }
        // Opened in the receive buffer, which is handed back below.
        let mut body = std::mem::take(&mut self.opened);
        body.clear();
        body.extend_from_slice(&data[HEADER..]);
        let aad = Aad::from(&data[..HEADER]);
        let Ok(plain) = m.key.open_in_place(nonce(sender, counter), aad, &mut body) else {
            self.stats.forged += 1;
            self.opened = body;
            return;
        };
        m.replay.mark(counter);
        m.heard = Some(now);
        self.stats.received += 1;
        self.stats.bytes_received += data.len() as u64;
        let plain_len = plain.len();
        body.truncate(plain_len);
        self.open_body(now, node, &body, clock);
        self.opened = body;
    }

    /// The opened body of an authentic datagram from `node`.
    fn open_body(&mut self, now: Instant, node: NodeId, body: &[u8], clock: &ClusterClock) {
        match body.split_first() {
            Some((&CONTROL, rest)) => self.deliver(node, rest, clock),
            Some((&MEDIA, rest)) if rest.len() >= 8 => {
                let mut s = [0u8; 8];
                s.copy_from_slice(&rest[..8]);
                if self.on_media_seq(now, node, u64::from_be_bytes(s)) {
                    self.deliver(node, &rest[8..], clock);
                }
            }
            Some((&NACK, rest)) if rest.len() % 8 == 0 => {
                let seqs: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                self.resend(node, &seqs);
            }
            Some((&PING, [])) => {}
            Some((&DATA, rest)) => {
                let done = self.on_data(node, |m, out| m.data_in.on_data(now, rest, out));
                for msg in done {
                    self.deliver(node, &msg, clock);
                }
            }
            Some((&LOSSY, rest)) => {
                let done = self.on_data(node, |m, out| m.data_in.on_lossy(now, rest, out));
                for msg in done {
                    self.deliver(node, &msg, clock);
                }
            }
            Some((&DATA_ACK, rest)) => {
                let again = self.on_data(node, |m, out| m.data_out.on_ack(now, rest, out));
                self.stats.resent += again.len() as u64;
                self.seal_all(node, DATA, again);
            }
            _ => self.stats.malformed += 1,
        }
    }

    /// Reads a data body of member `node` with `read`, which appends what it yields (whole
    /// messages, or fragments to send again); an unreadable one is counted.
    fn on_data(
        &mut self,
        node: NodeId,
        read: impl FnOnce(&mut Member, &mut Vec<Vec<u8>>) -> Result<(), data::Malformed>,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let ok = self
            .members
            .get_mut(&node)
            .is_none_or(|m| read(m, &mut out).is_ok());
        if !ok {
            self.stats.malformed += 1;
        }
        out
    }

    fn deliver(&mut self, from: NodeId, bytes: &[u8], clock: &ClusterClock) {
        match wire::decode(bytes, clock) {
            Ok(msg) => self.out.push_back(LinkOutput::Message { from, msg }),
            Err(e) => {
                tracing::debug!(%from, "unreadable relay message: {e}");
                self.stats.malformed += 1;
            }
        }
    }

    /// Accounts for media `seq` from `node`; returns whether to deliver it (not a
    /// duplicate).
    fn on_media_seq(&mut self, now: Instant, node: NodeId, seq: u64) -> bool {
        // A sender counts from 0: the last value is never sent, and would overflow below.
        let Some(after) = seq.checked_add(1) else {
            self.stats.malformed += 1;
            return false;
        };
        let Some(m) = self.members.get_mut(&node) else {
            return false;
        };
        let Some(next) = m.next_recv else {
            m.next_recv = Some(after);
            return true;
        };
        if seq >= next {
            // Packets in between are missing: asked for unless the hole is too large.
            let first = next.max(seq.saturating_sub(MAX_MISSING));
            self.stats.lost += first - next;
            for s in first..seq {
                m.missing.insert(
                    s,
                    Gap {
                        due: now + NACK_DELAY,
                        since: now,
                        tries: 0,
                    },
                );
            }
            while m.missing.len() as u64 > MAX_MISSING {
                m.missing.pop_first();
                self.stats.lost += 1;
            }
            m.next_recv = Some(after);
            true
        } else if m.missing.remove(&seq).is_some() {
            true
        } else {
            self.stats.duplicates += 1;
            false
        }
    }

    fn resend(&mut self, to: NodeId, seqs: &[u64]) {
        let mut bodies = Vec::new();
        if let Some(m) = self.members.get(&to) {
            for seq in seqs {
                // The history is in seq order.
                if let Ok(i) = m.history.binary_search_by_key(seq, |(s, _, _)| *s) {
                    let mut body = Vec::with_capacity(9 + m.history[i].2.len());
                    body.push(MEDIA);
                    body.extend_from_slice(&seq.to_be_bytes());
                    body.extend_from_slice(&m.history[i].2);
                    bodies.push(body);
                }
            }
        }
        for body in bodies {
            self.stats.resent += 1;
            self.seal(to, &body);
        }
    }

    /// Asks again for what is missing and is due, forgets what is too old, and sends every
    /// member its sign of life when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_ping.is_none_or(|t| now >= t) {
            self.next_ping = Some(now + PING_INTERVAL);
            let members: Vec<NodeId> = self.members.keys().copied().collect();
            for node in members {
                self.seal(node, &[PING]);
            }
        }
        let mut nacks: Vec<(NodeId, Vec<u64>)> = Vec::new();
        let mut data: Vec<(NodeId, u8, Vec<Vec<u8>>)> = Vec::new();
        for (&node, m) in &mut self.members {
            let mut again = Vec::new();
            m.data_out.on_timeout(now, &mut again);
            if !again.is_empty() {
                self.stats.resent += again.len() as u64;
                data.push((node, DATA, again));
            }
            if let Some(ack) = m.data_in.ack(now) {
                data.push((node, DATA_ACK, vec![ack]));
            }
            while m
                .history
                .front()
                .is_some_and(|(_, t, _)| now >= *t + HISTORY)
            {
                m.history.pop_front();
            }
            let before = m.missing.len();
            m.missing
                .retain(|_, g| g.tries < NACK_TRIES && now < g.since + HISTORY);
            self.stats.lost += (before - m.missing.len()) as u64;
            let mut due = Vec::new();
            for (&seq, g) in m.missing.iter_mut().filter(|(_, g)| g.due <= now) {
                g.tries += 1;
                g.due = now + NACK_RETRY;
                due.push(seq);
            }
            if !due.is_empty() {
                nacks.push((node, due));
            }
        }
        for (node, kind, bodies) in data {
            self.seal_all(node, kind, bodies);
        }
        for (node, due) in nacks {
            for chunk in due.chunks(NACK_BATCH) {
                let mut body = Vec::with_capacity(1 + 8 * chunk.len());
                body.push(NACK);
                for seq in chunk {
                    body.extend_from_slice(&seq.to_be_bytes());
                }
                self.stats.nacks_sent += 1;
                self.seal(node, &body);
            }
        }
    }

    /// When [`Links::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let data = self.members.values().flat_map(|m| {
            [m.data_out.next_timeout(), m.data_in.next_timeout()]
                .into_iter()
                .flatten()
        });
        self.next_nack()
            .into_iter()
            .chain(self.next_ping.filter(|_| !self.members.is_empty()))
            .chain(data)
            .min()
    }

    /// When a missing packet is next asked for, if any is missing.
    pub fn next_nack(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| m.missing.values().map(|g| g.due))
            .min()
    }

    pub fn poll_output(&mut self) -> Option<LinkOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::{PeerId, TrackId, WorkerId};

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + n))
    }

    fn clock(at: Instant) -> ClusterClock {
        ClusterClock {
            at,
            unix_micros: 1_800_000_000_000_000,
        }
    }

    fn track() -> TrackId {
        TrackId {
            peer: PeerId(42),
            index: 1,
        }
    }

    /// Node 1 and node 2, each a member of the other's links.
    fn pair(now: Instant) -> (Links, Links) {
        let (s1, s2) = ([1; KEY_LEN], [2; KEY_LEN]);
        let mut a = Links::new(NodeId(1), &s1, &KEY);
        let mut b = Links::new(NodeId(2), &s2, &KEY);
        a.set_member(now, NodeId(2), addr(2), &s2);
        b.set_member(now, NodeId(1), addr(1), &s1);
        (a, b)
    }

    fn media(seq: u64, now: Instant) -> PipeMsg {
        use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
        use str0m::media::{Frequency, Pt};
        let spec = CodecSpec {
            codec: Codec::Opus,
            clock_rate: Frequency::FORTY_EIGHT_KHZ,
            channels: Some(2),
            format: FormatParams::default(),
        };
        PipeMsg::Media(Arc::new(crate::packet::MediaPacket {
            track: track(),
            kind: crate::ids::Kind::Audio,
            ssrc: 1,
            seq,
            timestamp: seq as u32 * 960,
            marker: false,
            params: PayloadParams::new(Pt::from(111), None, spec),
            keyframe: true,
            layer: 0,
            layers: 1,
            vp8: None,
            svc: None,
            temporal: None,
            dd: None,
            red_primary: None,
            audio_level: None,
            voice_activity: None,
            received: now,
            payload: Arc::from(&seq.to_be_bytes()[..]),
        }))
    }

    /// Everything `from` wants to transmit, as (destination, bytes).
    fn transmits(from: &mut Links) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(o) = from.poll_output() {
            if let LinkOutput::Transmit { to, data } = o {
                v.push((to, data));
            }
        }
        v
    }

    /// The media seqs `to` delivered, in order.
    fn delivered(to: &mut Links) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(o) = to.poll_output() {
            if let LinkOutput::Message {
                msg: PipeMsg::Media(p),
                ..
            } = o
            {
                v.push(p.seq);
            }
        }
        v
    }

    #[test]
    fn messages_cross_sealed_and_arrive_whole() {
        let now = Instant::now();
        let c = clock(now);
        let (mut a, mut b) = pair(c.at);
        a.send(now, NodeId(2), &media(10, now), &c);
        a.send(
            now,
            NodeId(2),
            &PipeMsg::Layers {
                track: track(),
                worker: WorkerId(0),
                need: crate::packet::Need { flow: 1, keep: 1 },
            },
            &c,
        );
        a.send(now, NodeId(9), &media(11, now), &c); // not a member: nothing
        let out = transmits(&mut a);
        assert_eq!(out.len(), 2);
        assert!(
            !out[0].1.windows(8).any(|w| w == 10u64.to_be_bytes()),
            "the payload is not in the clear"
        );
        for (_, d) in &out {
            b.handle_datagram(now, addr(1), d, &c);
        }
        let got: Vec<String> = std::iter::from_fn(|| b.poll_output())
            .map(|o| match o {
                LinkOutput::Message { from, msg } => format!("{from} {msg:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 2);
        assert!(
            got[0].starts_with("n1 Media") && got[1].starts_with("n1 Layers"),
            "{got:?}"
        );
    }

    #[test]
    fn strangers_forgeries_and_replays_are_dropped_and_counted() {
        let now = Instant::now();
        let c = clock(now);
        let (mut a, mut b) = pair(c.at);
        a.send(now, NodeId(2), &media(1, now), &c);
        let (_, good) = transmits(&mut a).remove(0);

        b.handle_datagram(now, addr(3), &good, &c);
        assert_eq!(b.stats().not_member, 1, "from an address that is no member");

        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        b.handle_datagram(now, addr(1), &tampered, &c);
        let mut claimed = good.clone();
        claimed[4] ^= 1; // another sender id
        b.handle_datagram(now, addr(1), &claimed, &c);
        // Sealed under another cluster's key.
        let mut other = Links::new(NodeId(1), &[1; KEY_LEN], &[8; KEY_LEN]);
        other.set_member(now, NodeId(2), addr(2), &[2; KEY_LEN]);
        other.send(now, NodeId(2), &media(1, now), &c);
        let (_, foreign) = transmits(&mut other).remove(0);
        b.handle_datagram(now, addr(1), &foreign, &c);
        assert_eq!(b.stats().forged, 3);

        b.handle_datagram(now, addr(1), &good, &c);
        b.handle_datagram(now, addr(1), &good, &c);
        assert_eq!(b.stats().replayed, 1);
        for junk in [&[][..], &[1u8][..], &[1u8; 20][..], &good[..good.len() - 1]] {
            b.handle_datagram(now, addr(1), junk, &c);
        }
        assert_eq!(delivered(&mut b), [1], "only the genuine datagram, once");
    }

    #[test]
    fn a_member_sending_the_last_sequence_number_is_dropped_not_a_panic() {
        // Found by fuzz/ (target `link`): `seq + 1` overflowed.
        let now = Instant::now();
        let c = clock(now);
        let (mut a, mut b) = pair(c.at);
        let mut body = vec![MEDIA];
        body.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut msg = Vec::new();
        wire::encode(&media(1, now), &c, &mut msg).expect("encodes");
        body.extend_from_slice(&msg);
        for _ in 0..2 {
            a.seal(NodeId(2), &body);
        }
        for (_, d) in transmits(&mut a) {
            b.handle_datagram(now, addr(1), &d, &c);
        }
        assert_eq!(b.stats().malformed, 2);
        assert!(delivered(&mut b).is_empty());
        a.send(now, NodeId(2), &media(0, now), &c);
        for (_, d) in transmits(&mut a) {
            b.handle_datagram(now, addr(1), &d, &c);
        }
        assert_eq!(delivered(&mut b), [0], "the link carries on");
    }

    #[test]
    fn lost_media_is_asked_for_and_resent() {
        let start = Instant::now();
        let c = clock(start);
        let (mut a, mut b) = pair(c.at);
        for seq in 0..10 {
            a.send(start, NodeId(2), &media(seq, start), &c);
        }
        // The third and fourth datagrams are lost on the way.
        for (i, (_, d)) in transmits(&mut a).into_iter().enumerate() {
            if i != 2 && i != 3 {
                b.handle_datagram(start, addr(1), &d, &c);
            }
        }
        assert_eq!(delivered(&mut b), [0, 1, 4, 5, 6, 7, 8, 9]);
        let due = b.next_nack().expect("a NACK is scheduled");
        assert_eq!(due, start + NACK_DELAY);
        b.handle_timeout(due);
        assert_eq!(b.stats().nacks_sent, 1);
        // The NACK is lost too: it is sent again.
        transmits(&mut b);
        let retry = b.next_nack().expect("asked again");
        b.handle_timeout(retry);
        for (_, d) in transmits(&mut b) {
            a.handle_datagram(retry, addr(2), &d, &c);
        }
        for (_, d) in transmits(&mut a) {
            b.handle_datagram(retry, addr(1), &d, &c);
        }
        assert_eq!(delivered(&mut b), [2, 3], "resent");
        assert_eq!(b.next_nack(), None, "nothing missing any more");
        assert_eq!((a.stats().resent, b.stats().nacks_sent), (2, 2));
        assert_eq!(b.stats().lost, 0);
    }

    #[test]
    fn a_gap_never_filled_is_given_up_after_its_tries() {
        let start = Instant::now();
        let c = clock(start);
        let (mut a, mut b) = pair(c.at);
        for seq in 0..3 {
            a.send(start, NodeId(2), &media(seq, start), &c);
        }
        for (i, (_, d)) in transmits(&mut a).into_iter().enumerate() {
            if i != 1 {
                b.handle_datagram(start, addr(1), &d, &c);
            }
        }
        let mut now = start;
        while let Some(t) = b.next_nack() {
            now = t;
            b.handle_timeout(now);
            transmits(&mut b); // every NACK is lost
            assert!(now < start + HISTORY, "gave up in time");
        }
        assert_eq!(b.stats().nacks_sent, u64::from(NACK_TRIES));
        assert_eq!(b.stats().lost, 1);
        assert!(now >= start + NACK_DELAY);
    }

    #[test]
    fn a_member_that_sends_nothing_grows_silent_and_pings_keep_one_heard() {
        let start = Instant::now();
        let c = clock(start);
        let (mut a, mut b) = pair(c.at);
        let mut now = start;
        for _ in 0..5 {
            now += PING_INTERVAL;
            a.handle_timeout(now);
            for (_, d) in transmits(&mut a) {
                b.handle_datagram(now, addr(1), &d, &c);
            }
            b.handle_timeout(now); // b's pings are all lost
            transmits(&mut b);
        }
        let silence = |l: &Links, n| l.silence(now).find(|(m, _)| *m == n).map(|(_, d)| d);
        assert_eq!(
            silence(&b, NodeId(1)),
            Some(Duration::ZERO),
            "a pings: heard"
        );
        assert!(
            silence(&a, NodeId(2)) >= Some(5 * PING_INTERVAL),
            "b's pings never arrive: silent since it became a member"
        );
        assert_eq!(b.stats().malformed, 0, "a ping is no garbage");
    }

    #[test]
    fn a_restarted_member_is_keyed_afresh() {
        let now = Instant::now();
        let c = clock(now);
        let (mut a, mut b) = pair(c.at);
        a.send(now, NodeId(2), &media(1, now), &c);
        let (_, old) = transmits(&mut a).remove(0);
        // Node 1 restarts at the same address with a new salt: its old datagrams no longer
        // authenticate, its new ones do.
        let mut a2 = Links::new(NodeId(1), &[9; KEY_LEN], &KEY);
        a2.set_member(now, NodeId(2), addr(2), &[2; KEY_LEN]);
        b.set_member(now, NodeId(1), addr(1), &[9; KEY_LEN]);
        b.handle_datagram(now, addr(1), &old, &c);
        assert_eq!(b.stats().forged, 1);
        a2.send(now, NodeId(2), &media(5, now), &c);
        for (_, d) in transmits(&mut a2) {
            b.handle_datagram(now, addr(1), &d, &c);
        }
        assert_eq!(delivered(&mut b), [5]);
    }

    fn data_msg(seq: u32, reliable: bool, len: usize) -> PipeMsg {
        let frame = crate::data::encode_send(
            if reliable { crate::data::RELIABLE } else { 0 },
            seq,
            "t",
            &[],
            &vec![seq as u8; len],
        );
        let pkt = crate::data::DataPacket::read("room".into(), crate::ids::MemberId(1), &frame)
            .expect("a good frame");
        PipeMsg::Data(Arc::new(pkt))
    }

    /// The data seqs `to` delivered, in order.
    fn data_delivered(to: &mut Links) -> Vec<u32> {
        std::iter::from_fn(|| to.poll_output())
            .filter_map(|o| match o {
                LinkOutput::Message {
                    msg: PipeMsg::Data(p),
                    ..
                } => crate::data::parse_deliver(&p.frame).ok().map(|d| d.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reliable_data_crosses_whole_and_in_order_through_loss() {
        let t0 = Instant::now();
        let c = clock(t0);
        let (mut a, mut b) = pair(t0);
        let big = crate::data::MAX_PAYLOAD;
        for seq in 0..3 {
            a.send(t0, NodeId(2), &data_msg(seq, true, big), &c);
        }
        a.send(t0, NodeId(2), &data_msg(9, false, 3000), &c);
        let out = transmits(&mut a);
        assert!(out.len() > 3 * (big / data::FRAGMENT));
        assert!(
            out.iter().all(|(_, d)| d.len() <= 1250),
            "each fits a datagram"
        );
        // The tenth datagram (of the first message) is lost, and so the lossy one.
        let n = out.len();
        for (i, (_, d)) in out.iter().enumerate() {
            if i != 10 && i != n - 1 {
                b.handle_datagram(t0, addr(1), d, &c);
            }
        }
        assert!(
            data_delivered(&mut b).is_empty(),
            "held until the gap fills"
        );
        // b acknowledges with the gap; a sends it again; everything is delivered.
        let mut now = t0;
        let mut got = Vec::new();
        for _ in 0..10 {
            now = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            a.handle_timeout(now);
            b.handle_timeout(now);
            for (_, d) in transmits(&mut b) {
                a.handle_datagram(now, addr(2), &d, &c);
            }
            for (_, d) in transmits(&mut a) {
                b.handle_datagram(now, addr(1), &d, &c);
            }
            got.extend(data_delivered(&mut b));
            if b.members[&NodeId(1)].data_in.next_timeout().is_none()
                && a.members[&NodeId(2)].data_out.unacked() == 0
            {
                break;
            }
        }
        assert!(
            now < t0 + data::RTO_MIN,
            "repaired by the gap report, not a timeout"
        );
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(
            a.members[&NodeId(2)].data_out.unacked(),
            0,
            "all acknowledged"
        );
        assert_eq!(a.stats().resent, 1);
        // A lossy message that arrives whole is delivered.
        a.send(now, NodeId(2), &data_msg(10, false, 3000), &c);
        for (_, d) in transmits(&mut a) {
            b.handle_datagram(now, addr(1), &d, &c);
        }
        assert_eq!(data_delivered(&mut b), [10]);
    }
}
