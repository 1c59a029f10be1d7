//! The sans-IO state of one media worker: its peers, its share of every room's routing (media
//! and data messages), and the driving loop that joins them. Inputs are datagrams, pipe
//! messages from other workers, commands from the control plane and the passing of time;
//! outputs are datagrams to send, pipe messages and events. See the crate docs for the loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::Transmit;

use crate::alloc::Rates;
use crate::api::{Command, Event, Plan, ReplyBody, RequestId, WorkerStats};
use crate::bus::{Bus, Refused, Transport};
use crate::data::DataPacket;
use crate::demux::{Demux, Lookup};
use crate::ids::{Kind, MemberId, NodeId, PeerId, TrackId, WorkerId};
use crate::packet::{MediaPacket, Need, PipeMsg, ALL_LAYERS, MAX_LAYERS};
use crate::peer::{Peer, PeerCounts, PeerOut, Role, Sent, Write};
use crate::router::{Route, Router};
use crate::timers::{Timer, Timers};
use crate::Error;

/// Where a data message came from, which decides where it goes on ([`Engine::spread`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataSource {
    /// A member placed here: its origin.
    Member,
    /// Another worker of this node.
    Worker,
    /// Another node, over the relay.
    Node,
}

/// What the engine asks its runtime to do.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    Pipe {
        to: WorkerId,
        msg: PipeMsg,
    },
    /// To another node, over the relay (only the relay worker's engine says this).
    Relay {
        to: NodeId,
        msg: PipeMsg,
    },
    Event(Event),
}

/// How often the loudness of the audio tracks published here is reported.
pub const LEVEL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the origin of a track measures its layers' bitrates and passes them on
/// ([`PipeMsg::Rates`]), which subscriptions' allocators weigh.
pub const RATES_INTERVAL: Duration = Duration::from_millis(500);
/// How often a relayed track's demand is asked of its node again, in case one was lost.
const RELAY_DEMAND_REFRESH: Duration = Duration::from_secs(1);
/// A member whose data messages are refused hears of it at most this often.
const TELL_EVERY: Duration = Duration::from_secs(1);
/// How long a closed peer's id is remembered, so that a [`Plan`] built before the control
/// plane heard of the closing does not create it again.
const TOMBSTONE: Duration = Duration::from_secs(60);

pub struct Engine {
    worker: WorkerId,
    local_addr: SocketAddr,
    peers: HashMap<PeerId, Peer>,
    demux: Demux,
    router: Router,
    /// Data members and routes ([`crate::bus`]).
    bus: Bus,
    /// Scratch: the recipients of the data message being delivered.
    recipients: Vec<MemberId>,
    /// When each member was last told that a data message of its was refused.
    data_told: HashMap<MemberId, Instant>,
    /// Peers with queued work, each once, for the next flush.
    touched: Vec<PeerId>,
    /// Peers whose call panicked inside a loop over a route, to drop once it is done.
    failed: Vec<(PeerId, String)>,
    scratch: Vec<PeerOut>,
    outputs: VecDeque<Output>,
    /// Every peer's next timeout and every deferred keyframe request: a turn visits only
    /// what is due, however many peers sit idle.
    timers: Timers,
    stats: WorkerStats,
    /// When the next [`Event::AudioLevels`] is due.
    next_levels: Option<Instant>,
    /// When the layers' bitrates are next measured ([`RATES_INTERVAL`]).
    next_rates: Option<Instant>,
    /// Whether subscribing peers estimate their downlink (see [`Engine::set_bandwidth_estimation`]).
    bwe: bool,
    /// Peers closed here lately, and when ([`TOMBSTONE`]).
    closed: HashMap<PeerId, Instant>,
    /// Tracks that ended lately (here or at their origin), and when ([`TOMBSTONE`]).
    ended: HashMap<TrackId, Instant>,
}

impl Engine {
    /// `local_addr` is the address announced in ICE candidates and used as the destination
    /// of every received datagram.
    pub fn new(worker: WorkerId, local_addr: SocketAddr) -> Self {
        Engine {
            worker,
            local_addr,
            peers: HashMap::new(),
            demux: Demux::default(),
            router: Router::default(),
            bus: Bus::default(),
            recipients: Vec::new(),
            data_told: HashMap::new(),
            touched: Vec::new(),
            failed: Vec::new(),
            scratch: Vec::new(),
            outputs: VecDeque::new(),
            timers: Timers::default(),
            stats: WorkerStats {
                worker: worker.0,
                ..Default::default()
            },
            bwe: false,
            next_levels: None,
            next_rates: None,
            closed: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// Data messages a second each member may send (a second's worth at once; default
    /// [`crate::bus::DEFAULT_RATE`]).
    pub fn set_data_rate(&mut self, per_second: u32) {
        self.bus.set_rate(per_second);
    }

    /// Whether peers created from now on estimate their downlink and fit their layers to it
    /// (off unless set; the server sets it unless `--bandwidth-estimation false`: str0m's
    /// estimator paces and pads, docs/benchmarks.md). Off, every subscription gets the
    /// layer it asks for, unpaced.
    pub fn set_bandwidth_estimation(&mut self, on: bool) {
        self.bwe = on;
    }

    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// Tests only: peer `id` panics at its next call of kind `at`, as a bug in str0m would.
    #[cfg(feature = "fault-injection")]
    pub fn fail_peer_at(&mut self, id: PeerId, at: crate::peer::Fault) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.fail_at = Some(at);
        }
    }

    /// One datagram from the socket. Unknown or malformed datagrams are counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let (id, verified) = match self.demux.lookup(source, data) {
            Some(Lookup::Known(id)) => (id, true),
            Some(Lookup::Unverified(id)) => (id, false),
            None => {
                self.stats.datagrams_dropped += 1;
                self.stats.datagrams_unknown += 1;
                return;
            }
        };
        let local = self.local_addr;
        match self.on_peer(now, id, |p| p.receive(now, source, local, data)) {
            Some(true) => {}
            Some(false) => {
                self.stats.datagrams_dropped += 1;
                self.stats.datagrams_rejected += 1;
            }
            None => {
                self.stats.datagrams_dropped += 1;
                self.stats.datagrams_rejected += 1;
                return;
            }
        }
        let before = self.outputs.len();
        self.drive(now, id);
        // str0m answers only a STUN check whose integrity holds: that answer proves the address.
        if !verified
            && self
                .outputs
                .range(before..)
                .any(|o| matches!(o, Output::Transmit(t) if t.destination == source))
        {
            self.demux.learn(source, id);
        }
        self.tidy_timers();
    }

    /// One message from another worker's pipe.
    pub fn handle_pipe(&mut self, now: Instant, msg: PipeMsg) {
        self.stats.pipe_in += 1;
        match msg {
            PipeMsg::Media(pkt) => self.route(now, pkt),
            PipeMsg::KeyframeRequest(track, layer) => self.keyframe_request(now, track, layer),
            PipeMsg::Layers {
                track,
                worker,
                need,
            } => {
                if let Some(route) = self.router.get_mut(&track) {
                    for sink in route.sinks.iter_mut().filter(|(w, _)| *w == worker) {
                        sink.1 = need;
                    }
                }
                self.update_demand(now, track);
            }
            PipeMsg::TrackEnded(track) => self.remove_track(now, track),
            PipeMsg::Rates(track, rates) => self.spread_rates(now, track, Some(&rates)),
            PipeMsg::Data(pkt) => self.spread(now, &pkt, DataSource::Worker),
        }
        self.tidy_timers();
    }

    /// One message from another node, over the relay (the relay worker's engine only). A
    /// node is heard only about the tracks it relays here or receives from here; the rest
    /// is dropped and counted.
    pub fn handle_relay(&mut self, now: Instant, from: NodeId, msg: PipeMsg) {
        let track = match &msg {
            PipeMsg::Media(p) => p.track,
            PipeMsg::Data(pkt) => {
                // Any node of the cluster may send to a room with members here: the one
                // that learnt of them first need not wait for this one to learn of it.
                if self.bus.has_room(&pkt.room) {
                    self.spread(now, pkt, DataSource::Node);
                } else {
                    self.stats.relay_dropped += 1;
                }
                self.tidy_timers();
                return;
            }
            PipeMsg::KeyframeRequest(t, _)
            | PipeMsg::Layers { track: t, .. }
            | PipeMsg::TrackEnded(t)
            | PipeMsg::Rates(t, _) => *t,
        };
        let Some(route) = self.router.routes.get_mut(&track) else {
            self.stats.relay_dropped += 1;
            return;
        };
        let from_origin = route.remote == Some(from);
        let to_receiver = route.nodes.iter().any(|(n, _)| *n == from);
        match msg {
            PipeMsg::Media(pkt) if from_origin => {
                route.layers = pkt.layers.clamp(1, MAX_LAYERS as u8);
                self.route(now, pkt);
            }
            PipeMsg::TrackEnded(track) if from_origin => self.remove_track(now, track),
            PipeMsg::Rates(track, rates) if from_origin => {
                self.spread_rates(now, track, Some(&rates))
            }
            PipeMsg::KeyframeRequest(track, layer) if to_receiver => {
                self.keyframe_request(now, track, layer)
            }
            PipeMsg::Layers { track, need, .. } if to_receiver => {
                for n in route.nodes.iter_mut().filter(|(n, _)| *n == from) {
                    n.1 = need;
                }
                self.update_demand(now, track);
            }
            _ => self.stats.relay_dropped += 1,
        }
        self.flush(now);
        self.tidy_timers();
    }

    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Publish { req, peer, offer } => {
                self.offer_in(now, req, peer, offer, Role::Publisher)
            }
            Command::CreateViewer { req, peer, offer } => {
                self.offer_in(now, req, peer, offer, Role::Viewer)
            }
            Command::CreateSubscriber { peer } => {
                self.create_subscriber(now, peer);
            }
            Command::SubscriberAnswer { req, peer, answer } => {
                let mut outs = Vec::new();
                let result = self
                    .on_peer(now, peer, |p| p.accept_answer(now, &answer, &mut outs))
                    .unwrap_or(Err(Error::NoSuchPeer))
                    .map(|()| ReplyBody::Done);
                self.handle_outs(now, peer, &mut outs);
                self.mark(peer);
                self.reply(req, result);
            }
            Command::Subscribe {
                peer,
                track,
                kind,
                origin,
            } => self.subscribe(now, peer, track, kind, origin),
            Command::Unsubscribe { peer, track } => self.unsubscribe(now, peer, track),
            Command::SetPriority {
                peer,
                track,
                priority,
            } => {
                self.on_peer(now, peer, |p| p.set_priority(track, priority));
            }
            Command::SetLayer { peer, track, layer } => {
                let mut outs = Vec::new();
                if self
                    .on_peer(now, peer, |p| p.set_layer(now, track, layer, &mut outs))
                    .is_some()
                {
                    self.handle_outs(now, peer, &mut outs);
                }
            }
            Command::AddSink { track, worker } => {
                if let Some(route) = self.router.get_mut(&track) {
                    if worker != self.worker && !route.sinks.iter().any(|(w, _)| *w == worker) {
                        route.sinks.push((worker, Need::ALL));
                    }
                }
            }
            Command::RemoveSink { track, worker } => {
                if let Some(route) = self.router.get_mut(&track) {
                    route.sinks.retain(|(w, _)| *w != worker);
                }
                self.router.prune(&track);
            }
            Command::ClosePeer { peer } => self.close_peer(now, peer),
            Command::RelayIn { track, kind, node } => {
                self.relay_in(track, kind, node);
            }
            Command::RelayOut {
                track,
                kind,
                origin,
                node,
            } => {
                self.relay_out(track, kind, origin, node);
            }
            Command::RelayStop { track, node } => {
                self.relay_stop(now, track, node);
            }
            Command::DataJoin(member) => {
                self.bus.join(member);
            }
            Command::DataLeave { member } => {
                self.bus.leave(member);
            }
            Command::DataRoute(mut route) => {
                let me = self.worker;
                route.workers.retain(|w| *w != me);
                self.bus.set_route(route);
            }
            Command::DataIn { member, frame } => self.data_in(now, member, &frame),
            Command::Reconcile(plan) => self.reconcile(now, plan),
            Command::Stats { req } => {
                let stats = self.stats();
                self.reply(req, Ok(ReplyBody::Stats(Box::new(stats))));
            }
        }
        self.announce_layers(now);
        self.flush(now);
        self.tidy_timers();
    }

    /// A track of `node` arrives here over the relay. Returns whether anything changed.
    fn relay_in(&mut self, track: TrackId, kind: Kind, node: NodeId) -> bool {
        if self.ended.contains_key(&track) {
            return false;
        }
        let me = self.worker;
        let route = self
            .router
            .routes
            .entry(track)
            .or_insert_with(|| Route::new(kind, me, None));
        if route.remote == Some(node) && route.origin == me {
            return false;
        }
        route.origin = me;
        route.remote = Some(node);
        true
    }

    /// `node` gets `track` (from origin worker `origin`). Returns whether anything changed.
    fn relay_out(&mut self, track: TrackId, kind: Kind, origin: WorkerId, node: NodeId) -> bool {
        if self.ended.contains_key(&track) {
            return false;
        }
        let route = self
            .router
            .routes
            .entry(track)
            .or_insert_with(|| Route::new(kind, origin, None));
        if route.nodes.iter().any(|(n, _)| *n == node) {
            return false;
        }
        route.nodes.push((node, Need::ALL));
        true
    }

    /// `node` no longer gets `track`, or `track` no longer comes from `node` (its subscribers
    /// here let go of it). Returns whether anything changed.
    fn relay_stop(&mut self, now: Instant, track: TrackId, node: NodeId) -> bool {
        let Some(route) = self.router.get_mut(&track) else {
            return false;
        };
        if route.remote == Some(node) {
            self.remove_track(now, track);
            return true;
        }
        let before = route.nodes.len();
        route.nodes.retain(|(n, _)| *n != node);
        let changed = route.nodes.len() != before;
        self.router.prune(&track);
        changed
    }

    /// Creates a subscribing peer unless it exists or was closed (ids are never reused).
    /// Returns whether it created one.
    fn create_subscriber(&mut self, now: Instant, peer: PeerId) -> bool {
        if self.peers.contains_key(&peer) || self.closed.contains_key(&peer) {
            return false;
        }
        match Peer::new(peer, Role::Subscriber, now, self.local_addr, self.bwe) {
            Ok(p) => {
                self.insert_peer(p);
                true
            }
            Err(e) => {
                tracing::warn!(%peer, "cannot create subscriber: {e}");
                false
            }
        }
    }

    fn close_peer(&mut self, now: Instant, peer: PeerId) {
        let mut outs = Vec::new();
        if self
            .on_peer(now, peer, |p| p.close(&mut outs, "closed by server"))
            .is_some()
        {
            self.handle_outs(now, peer, &mut outs);
        }
    }

    /// Brings this worker to the control plane's [`Plan`]: whatever a lost command left
    /// different is repaired and counted. Every step is idempotent, so that a plan that
    /// crossed an event on its way (a track that just ended here, a peer that just closed)
    /// changes nothing that the next plan would not undo.
    fn reconcile(&mut self, now: Instant, plan: Plan) {
        // What was repaired, for the log (every RECONCILE_INTERVAL at most, off the hot path).
        let mut fixed: Vec<String> = Vec::new();
        self.stats.plans += 1;
        self.closed.retain(|_, at| now < *at + TOMBSTONE);
        self.data_told.retain(|_, at| now < *at + TELL_EVERY);
        self.ended.retain(|_, at| now < *at + TOMBSTONE);
        let known: HashSet<PeerId> = plan.peers.iter().copied().collect();
        let strays: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| !known.contains(p))
            .copied()
            .collect();
        for peer in strays {
            tracing::warn!(%peer, "closing a peer the control plane does not know");
            self.close_peer(now, peer);
            fixed.push(format!("closed stray peer {peer}"));
        }
        for peer in plan.subscribers {
            if self.create_subscriber(now, peer) {
                fixed.push(format!("created subscriber {peer}"));
            }
        }

        let planned: HashSet<(PeerId, TrackId)> = plan
            .subscriptions
            .iter()
            .map(|s| (s.peer, s.track))
            .collect();
        let unplanned: Vec<(PeerId, TrackId)> = self
            .router
            .routes
            .iter()
            .flat_map(|(t, r)| r.subs.iter().map(move |(p, _)| (*p, *t)))
            .filter(|s| !planned.contains(s))
            .collect();
        for (peer, track) in unplanned {
            self.unsubscribe(now, peer, track);
            fixed.push(format!("unsubscribed {peer} from {track}"));
        }
        for s in plan.subscriptions {
            let Some(peer) = self.peers.get(&s.peer) else {
                continue;
            };
            let (layer, priority) = match peer.subscription(s.track) {
                Some(current) => current,
                None => {
                    self.subscribe(now, s.peer, s.track, s.kind, s.origin);
                    match self
                        .peers
                        .get(&s.peer)
                        .and_then(|p| p.subscription(s.track))
                    {
                        Some(current) => {
                            fixed.push(format!("subscribed {} to {}", s.peer, s.track));
                            current
                        }
                        None => continue, // the track is gone, or the peer is full
                    }
                }
            };
            if layer != s.layer {
                self.handle_command(
                    now,
                    Command::SetLayer {
                        peer: s.peer,
                        track: s.track,
                        layer: s.layer,
                    },
                );
                fixed.push(format!(
                    "layer of {} on {}: {layer:?} -> {:?}",
                    s.peer, s.track, s.layer
                ));
            }
            if priority != s.priority {
                self.on_peer(now, s.peer, |p| p.set_priority(s.track, s.priority));
                fixed.push(format!(
                    "priority of {} on {}: {priority} -> {}",
                    s.peer, s.track, s.priority
                ));
            }
        }

        let planned: HashSet<(TrackId, WorkerId)> = plan.sinks.iter().copied().collect();
        let me = self.worker;
        for (track, route) in self.router.routes.iter_mut() {
            if route.origin != me {
                continue;
            }
            route.sinks.retain(|(w, _)| {
                let keep = planned.contains(&(*track, *w));
                if !keep {
                    fixed.push(format!("dropped sink {w} of {track}"));
                }
                keep
            });
        }
        for (track, worker) in plan.sinks {
            let Some(route) = self.router.get_mut(&track) else {
                continue; // ended here; the plan has not heard yet
            };
            if route.origin == me && worker != me && !route.sinks.iter().any(|(w, _)| *w == worker)
            {
                route.sinks.push((worker, Need::ALL));
                fixed.push(format!("added sink {worker} of {track}"));
            }
        }
        // The relay worker: tracks in from other nodes, tracks out to them.
        let planned_in: HashSet<(TrackId, NodeId)> =
            plan.relay_in.iter().map(|&(t, _, n)| (t, n)).collect();
        let planned_out: HashSet<(TrackId, NodeId)> =
            plan.relay_out.iter().map(|&(t, _, _, n)| (t, n)).collect();
        let stale_in: Vec<TrackId> = self
            .router
            .routes
            .iter()
            .filter(|(t, r)| r.remote.is_some_and(|n| !planned_in.contains(&(**t, n))))
            .map(|(t, _)| *t)
            .collect();
        for track in stale_in {
            self.remove_track(now, track);
            fixed.push(format!("dropped relayed-in {track}"));
        }
        let stale_out: Vec<(TrackId, NodeId)> = self
            .router
            .routes
            .iter()
            .flat_map(|(t, r)| r.nodes.iter().map(move |(n, _)| (*t, *n)))
            .filter(|p| !planned_out.contains(p))
            .collect();
        for (track, node) in stale_out {
            self.relay_stop(now, track, node);
            fixed.push(format!("stopped relaying {track} to {node}"));
        }
        for (track, kind, node) in plan.relay_in {
            if self.relay_in(track, kind, node) {
                fixed.push(format!("relaying in {track} from {node}"));
            }
        }
        for (track, kind, origin, node) in plan.relay_out {
            if self.relay_out(track, kind, origin, node) {
                fixed.push(format!("relaying {track} out to {node}"));
            }
        }
        let tracks: Vec<TrackId> = self.router.routes.keys().copied().collect();
        for track in tracks {
            self.router.prune(&track);
        }
        let me = self.worker;
        let routes = plan
            .data_routes
            .into_iter()
            .map(|mut r| {
                r.workers.retain(|w| *w != me);
                r
            })
            .collect();
        self.bus.reconcile(plan.members, routes, &mut fixed);
        let repairs = fixed.len() as u64;
        if repairs > 0 {
            tracing::warn!(worker = %self.worker, repairs, what = ?fixed, "reconciled with the control plane");
        }
        self.stats.repairs += repairs;
    }

    /// Passes layer demand on, for every track, when it changed: after every command (a new
    /// subscription, a quality asked for, an answer) and every [`LEVEL_INTERVAL`] (a finished
    /// switch down, the end of a [`DEMAND_HOLD`](crate::router::DEMAND_HOLD)).
    fn announce_layers(&mut self, now: Instant) {
        let tracks: Vec<TrackId> = self.router.routes.keys().copied().collect();
        for track in tracks {
            self.update_demand(now, track);
        }
    }

    /// Layer demand has one owner and one rule (`Peer::demand` per subscription, a
    /// [`Need`]): a worker tells the origin of each remote track which simulcast layers its
    /// subscriptions need, and the origin pipes only those they forward; at the origin, the
    /// layers its own subscriptions and its sinks keep are what the publisher is asked to
    /// send ([`Event::LayerDemand`]).
    fn update_demand(&mut self, now: Instant, track: TrackId) {
        let Some(route) = self.router.routes.get_mut(&track) else {
            return;
        };
        let local = route
            .subs
            .iter()
            .filter_map(|(peer, slot)| Some(self.peers.get(peer)?.demand(*slot)))
            .chain(route.nodes.iter().map(|(_, need)| *need))
            .fold(Need::NONE, |m, w| m | w);
        if route.origin != self.worker {
            if local != route.wanted {
                route.wanted = local;
                self.outputs.push_back(Output::Pipe {
                    to: route.origin,
                    msg: PipeMsg::Layers {
                        track,
                        worker: self.worker,
                        need: local,
                    },
                });
            }
            return;
        }
        let needed = route.sinks.iter().fold(local, |m, (_, need)| m | *need);
        if let Some(node) = route.remote {
            // A track of another node: what the workers here need is asked of it, again
            // every second (the relay does not repeat a lost control message).
            let stale = route
                .asked
                .is_none_or(|(m, at)| m != needed || now >= at + RELAY_DEMAND_REFRESH);
            if stale {
                route.asked = Some((needed, now));
                self.outputs.push_back(Output::Relay {
                    to: node,
                    msg: PipeMsg::Layers {
                        track,
                        worker: self.worker,
                        need: needed,
                    },
                });
            }
            return;
        }
        if route.kind != Kind::Video || route.publisher.is_none() {
            return;
        }
        let all = ((1u16 << route.layers.clamp(1, MAX_LAYERS as u8)) - 1) as u8;
        if let Some(mask) = route.demand.update(now, needed.keep, all) {
            self.outputs
                .push_back(Output::Event(Event::LayerDemand { track, mask }));
        }
    }

    /// Time passes: due peers and due keyframe requests run, and every touched peer sends.
    /// Call after each batch of inputs too.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Peer(id) => {
                    if self.peers.get(&id).is_some_and(|p| p.next_timeout() == at) {
                        self.mark(id);
                    }
                }
                Timer::Keyframe(track, layer) => {
                    let Some(route) = self.router.routes.get_mut(&track) else {
                        continue;
                    };
                    let throttle = &mut route.keyframes[usize::from(layer)];
                    if throttle.deadline() == Some(at) && throttle.poll(now) {
                        self.send_keyframe_request(now, track, layer);
                    }
                }
            }
        }
        let due = *self.next_levels.get_or_insert(now + LEVEL_INTERVAL);
        if now >= due {
            self.next_levels = Some(now + LEVEL_INTERVAL);
            self.report_levels();
            self.announce_layers(now);
        }
        let due = *self.next_rates.get_or_insert(now + RATES_INTERVAL);
        if now >= due {
            self.next_rates = Some(now + RATES_INTERVAL);
            self.measure_rates(now);
        }
        self.flush(now);
        self.tidy_timers();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant at which [`Engine::handle_timeout`] must run: O(1), read off the
    /// top of the timers (current after every `handle_*`).
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.timers
            .next()
            .into_iter()
            .chain(self.next_levels)
            .min()
            .unwrap_or(now + Duration::from_secs(1))
    }

    /// Whether a timer entry still holds its owner's deadline.
    fn timer_is_current(
        peers: &HashMap<PeerId, Peer>,
        router: &Router,
        at: Instant,
        timer: Timer,
    ) -> bool {
        match timer {
            Timer::Peer(id) => peers.get(&id).is_some_and(|p| p.next_timeout() == at),
            Timer::Keyframe(track, layer) => router.routes.get(&track).is_some_and(|r| {
                r.keyframes
                    .get(usize::from(layer))
                    .is_some_and(|k| k.deadline() == Some(at))
            }),
        }
    }

    /// Ends every `handle_*`: the top of the timers is current, so that
    /// [`Engine::poll_timeout`] is exact.
    fn tidy_timers(&mut self) {
        let (peers, router) = (&self.peers, &self.router);
        let live = peers.len() + router.routes.len() * MAX_LAYERS;
        self.timers.tidy(live, |at, timer| {
            Self::timer_is_current(peers, router, at, timer)
        });
    }

    /// A peer was drained: if its next timeout moved, or its entry may have been taken by
    /// the timeout pass (it was due), it gets an entry for the new one. Every peer always
    /// has a current entry.
    fn reschedule(&mut self, now: Instant, id: PeerId, before: Instant, after: Instant) {
        if after != before || before <= now {
            self.timers.push(after, Timer::Peer(id));
        }
    }

    /// The worker's counters and gauges, and every track of every peer as last measured.
    pub fn stats(&self) -> WorkerStats {
        let mut media = Vec::new();
        for p in self.peers.values() {
            p.track_stats(&mut media);
        }
        WorkerStats {
            media,
            peers: self.peers.len(),
            tracks: self.router.published(),
            subscriptions: self.router.subscriptions(),
            sinks: self.router.sinks(),
            pending_keyframe_requests: self.router.pending_keyframes(),
            relayed_in: self.router.relayed_in(),
            relayed_out: self.router.relayed_out(),
            addresses: self.demux.addresses(),
            ufrags: self.demux.ufrags(),
            routes: self.router.routes.len(),
            timers: self.timers.len(),
            data_members: self.bus.members(),
            data_rooms: self.bus.rooms(),
            ..self.stats.clone()
        }
    }

    fn offer_in(&mut self, now: Instant, req: RequestId, id: PeerId, offer: String, role: Role) {
        let created = !self.peers.contains_key(&id);
        if created {
            match Peer::new(id, role, now, self.local_addr, self.bwe) {
                Ok(p) => self.insert_peer(p),
                Err(e) => return self.reply(req, Err(e)),
            }
        }
        let mut outs = Vec::new();
        let result = match self.peers.get(&id).map(|p| p.role) {
            Some(r) if r == role => self
                .on_peer(now, id, |p| p.accept_offer(&offer, &mut outs))
                .unwrap_or(Err(Error::NoSuchPeer)),
            Some(_) => Err(Error::WrongRole(
                "this peer does not take offers of that kind",
            )),
            None => Err(Error::NoSuchPeer),
        };
        match result {
            Ok(answer) => {
                // The tracks of the offer are announced before the answer.
                self.handle_outs(now, id, &mut outs);
                self.drive(now, id);
                self.reply(req, Ok(ReplyBody::Sdp(answer)));
            }
            Err(e) => {
                if created {
                    self.peers.remove(&id);
                    self.demux.remove_peer(id);
                }
                self.reply(req, Err(e));
            }
        }
    }

    fn insert_peer(&mut self, peer: Peer) {
        self.demux.add_peer(peer.id, &peer.local_ufrag);
        let id = peer.id;
        self.timers.push(peer.next_timeout(), Timer::Peer(id));
        self.peers.insert(id, peer);
        self.mark(id);
    }

    fn reply(&mut self, req: RequestId, result: Result<ReplyBody, Error>) {
        self.outputs
            .push_back(Output::Event(Event::Reply { req, result }));
    }

    fn mark(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(&id) {
            if !p.queued {
                p.queued = true;
                self.touched.push(id);
            }
        }
    }

    /// Runs one timeout pass and drain for every touched peer, until none is left.
    fn flush(&mut self, now: Instant) {
        while let Some(id) = self.touched.pop() {
            let mut outs = std::mem::take(&mut self.scratch);
            let ran = self.on_peer(now, id, |p| {
                let before = p.next_timeout();
                p.queued = false;
                p.timeout(now, &mut outs);
                p.drain(now, &mut outs);
                (before, p.next_timeout(), p.take_counts())
            });
            if let Some((before, after, counts)) = ran {
                self.add_counts(counts);
                self.reschedule(now, id, before, after);
                self.handle_outs(now, id, &mut outs);
            }
            outs.clear();
            self.scratch = outs;
        }
    }

    /// Drains one peer right away (after it received a datagram or an offer).
    fn drive(&mut self, now: Instant, id: PeerId) {
        let mut outs = std::mem::take(&mut self.scratch);
        let ran = self.on_peer(now, id, |p| {
            let before = p.next_timeout();
            p.drain(now, &mut outs);
            (before, p.next_timeout(), p.take_counts())
        });
        if let Some((before, after, counts)) = ran {
            self.add_counts(counts);
            self.reschedule(now, id, before, after);
            self.handle_outs(now, id, &mut outs);
        }
        outs.clear();
        self.scratch = outs;
    }

    /// Runs `f` on peer `id` (`None`: no such peer). Every call into a peer goes through
    /// here, or through [`guard`] where a loop over a route holds the engine borrowed. A
    /// panic inside it, from str0m on some input nobody foresaw, stays with that peer: it is
    /// dropped as failed (its tracks and subscriptions go, `Event::PeerClosed` says
    /// "internal error") and the rest of the worker carries on.
    fn on_peer<R>(
        &mut self,
        now: Instant,
        id: PeerId,
        f: impl FnOnce(&mut Peer) -> R,
    ) -> Option<R> {
        let peer = self.peers.get_mut(&id)?;
        match guard(|| f(peer)) {
            Ok(r) => Some(r),
            Err(what) => {
                self.fail_peer(now, id, &what);
                None
            }
        }
    }

    /// Drops the peers that failed under [`guard`] in a loop that could not drop them.
    fn drop_failed(&mut self, now: Instant) {
        while let Some((id, what)) = self.failed.pop() {
            self.fail_peer(now, id, &what);
        }
    }

    fn fail_peer(&mut self, now: Instant, id: PeerId, what: &str) {
        if !self.peers.contains_key(&id) {
            return; // failed twice in one loop
        }
        tracing::error!(peer = %id, "peer failed, dropping it: {what}");
        self.stats.peers_failed += 1;
        self.remove_peer(now, id, "internal error");
    }

    /// Adds what a peer counted since it was last drained here (taken inside the calls that
    /// drain it, where the peer is at hand: no extra lookup per drain).
    fn add_counts(&mut self, c: PeerCounts) {
        let s = &mut self.stats;
        s.nacks_in += c.nacks_in;
        s.nacks_out += c.nacks_out;
        s.rtx_out += c.rtx_out;
        s.plis_in += c.plis_in;
        s.firs_in += c.firs_in;
        s.layer_ups += c.layer_ups;
        s.layer_downs += c.layer_downs;
    }

    fn handle_outs(&mut self, now: Instant, from: PeerId, outs: &mut Vec<PeerOut>) {
        let mut closed = None;
        for out in outs.drain(..) {
            match out {
                PeerOut::Transmit(t) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += t.contents.len() as u64;
                    self.outputs.push_back(Output::Transmit(t));
                }
                PeerOut::Media(pkt) => self.route(now, pkt),
                PeerOut::TrackAdded {
                    track,
                    kind,
                    mid,
                    layers,
                } => {
                    let mut route = Route::new(kind, self.worker, Some(from));
                    route.layers = layers;
                    self.router.routes.insert(track, route);
                    self.event(Event::TrackPublished {
                        peer: from,
                        track,
                        kind,
                        mid: mid.to_string(),
                    });
                }
                PeerOut::TrackRemoved(track) => self.remove_track(now, track),
                PeerOut::Dropped => {
                    self.stats.packets_dropped += 1;
                    self.stats.packets_unknown_stream += 1;
                }
                PeerOut::KeyframeWanted { track, layer } => {
                    // A switch: the layer it waits for must be on its way (ahead of the
                    // keyframe request, in the same pipe) before the keyframe is sent.
                    self.update_demand(now, track);
                    self.keyframe_request(now, track, layer)
                }
                PeerOut::Offer { sdp, slots } => self.event(Event::SubscriberOffer {
                    peer: from,
                    sdp,
                    slots,
                }),
                PeerOut::Connected => self.event(Event::PeerConnected { peer: from }),
                PeerOut::Allocated {
                    estimate_bps,
                    layers,
                } => self.event(Event::Allocated {
                    peer: from,
                    estimate_bps,
                    layers,
                }),
                PeerOut::Closed(reason) => closed = Some(reason),
                PeerOut::Data(frame) => match self.bus.member_of(from) {
                    Some(member) => self.data_in(now, member, &frame),
                    None => self.stats.data_dropped += 1,
                },
                PeerOut::DataChannel(open) => self.bus.channels(from, open),
                PeerOut::DataIgnored => self.stats.data_dropped += 1,
            }
        }
        if let Some(reason) = closed {
            self.remove_peer(now, from, reason);
        }
    }

    /// A send frame from a member placed here: read and stamped once, delivered to the
    /// local members it is for and piped to the room's other workers.
    fn data_in(&mut self, now: Instant, member: MemberId, frame: &[u8]) {
        let pkt = match self.bus.read(now, member, frame) {
            Ok(pkt) => Arc::new(pkt),
            Err(why) => {
                self.stats.data_dropped += 1;
                if why == Refused::RateLimited {
                    self.stats.data_rate_limited += 1;
                }
                let due = self
                    .data_told
                    .get(&member)
                    .is_none_or(|t| now >= *t + TELL_EVERY);
                if due && why != Refused::Unknown {
                    self.data_told.insert(member, now);
                    let message = match &why {
                        Refused::RateLimited => {
                            format!("over {} data messages a second: dropped", self.bus.rate())
                        }
                        Refused::NotAllowed => "the token does not grant `data`".to_string(),
                        Refused::Malformed(e) => format!("data message refused: {e}"),
                        Refused::Unknown => String::new(),
                    };
                    self.event(Event::DataRefused {
                        member,
                        code: why.code(),
                        message,
                    });
                }
                return;
            }
        };
        self.stats.data_in += 1;
        self.spread(now, &pkt, DataSource::Member);
    }

    /// A data message to the members here it is for, and on: from a member here to the
    /// room's other workers and nodes, from another worker of this node to the room's
    /// nodes (on the relay worker), from another node to this node's other workers.
    fn spread(&mut self, now: Instant, pkt: &Arc<DataPacket>, from: DataSource) {
        self.deliver(now, pkt);
        if from != DataSource::Worker {
            for &to in self.bus.workers(&pkt.room) {
                self.stats.pipe_out += 1;
                self.outputs.push_back(Output::Pipe {
                    to,
                    msg: PipeMsg::Data(pkt.clone()),
                });
            }
        }
        if from != DataSource::Node {
            for &to in self.bus.nodes(&pkt.room) {
                self.outputs.push_back(Output::Relay {
                    to,
                    msg: PipeMsg::Data(pkt.clone()),
                });
            }
        }
    }

    /// A data message to the members here that it is for: on its data channels where they
    /// are open, else to its WebSocket.
    fn deliver(&mut self, now: Instant, pkt: &Arc<DataPacket>) {
        let mut recipients = std::mem::take(&mut self.recipients);
        self.bus.recipients(pkt, &mut recipients);
        for member in recipients.drain(..) {
            if let Transport::Channel(peer) = self.bus.transport(member) {
                let sent = self.on_peer(now, peer, |p| {
                    p.write_data(pkt.reliable, pkt.ordered, &pkt.frame)
                });
                match sent {
                    Some(Sent::Yes) => {
                        self.stats.data_out += 1;
                        self.mark(peer);
                        continue;
                    }
                    Some(Sent::Full) => {
                        self.stats.data_dropped += 1;
                        let due = self
                            .data_told
                            .get(&member)
                            .is_none_or(|t| now >= *t + TELL_EVERY);
                        if pkt.reliable && due {
                            self.data_told.insert(member, now);
                            self.event(Event::DataOverflow { member });
                        }
                        continue;
                    }
                    // Closed under us (its close is on its way): the WebSocket.
                    Some(Sent::Closed) | None => {}
                }
            }
            self.stats.data_out += 1;
            self.outputs.push_back(Output::Event(Event::Data {
                member,
                frame: pkt.frame.clone(),
                reliable: pkt.reliable,
            }));
        }
        self.recipients = recipients;
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    /// Reports the loudness of the audio tracks published here and starts a new window.
    fn report_levels(&mut self) {
        let mut levels = Vec::new();
        for (track, r) in self.router.routes.iter_mut() {
            let sourced = r.publisher.is_some() || r.remote.is_some();
            if r.kind != Kind::Audio || r.origin != self.worker || !sourced {
                continue;
            }
            let (sum, n) = std::mem::take(&mut r.loudness);
            levels.push((*track, sum.checked_div(n).unwrap_or(0) as u8));
        }
        if !levels.is_empty() {
            self.event(Event::AudioLevels { levels });
        }
    }

    /// Closes the window of every track published here: its layers' bitrates go to its
    /// subscriptions, sinks and nodes.
    fn measure_rates(&mut self, now: Instant) {
        let tracks: Vec<TrackId> = self
            .router
            .routes
            .iter_mut()
            .filter(|(_, r)| r.publisher.is_some())
            .map(|(t, r)| {
                r.measured.update(now, RATES_INTERVAL / 2);
                r.rates = r.measured.bps();
                *t
            })
            .collect();
        for track in tracks {
            self.spread_rates(now, track, None);
        }
    }

    /// Gives `track`'s layers' bitrates (`rates`, heard from its origin, or else those of
    /// the route) to its subscriptions here and passes them on to the workers and nodes it
    /// feeds.
    fn spread_rates(&mut self, now: Instant, track: TrackId, rates: Option<&Rates>) {
        let Some(route) = self.router.routes.get_mut(&track) else {
            return;
        };
        if let Some(rates) = rates {
            route.rates = *rates;
        }
        for &(peer, slot) in &route.subs {
            if let Some(p) = self.peers.get_mut(&peer) {
                if let Err(what) = guard(|| p.set_rates(slot, &route.rates)) {
                    self.failed.push((peer, what));
                }
            }
        }
        if route.origin == self.worker {
            for &(to, _) in &route.sinks {
                self.outputs.push_back(Output::Pipe {
                    to,
                    msg: PipeMsg::Rates(track, Box::new(route.rates)),
                });
            }
        }
        for &(to, _) in &route.nodes {
            self.outputs.push_back(Output::Relay {
                to,
                msg: PipeMsg::Rates(track, Box::new(route.rates)),
            });
        }
        self.drop_failed(now);
    }

    /// Fans one packet out to the local subscriptions and, at the origin, to the sinks.
    fn route(&mut self, now: Instant, pkt: Arc<MediaPacket>) {
        self.stats.packets_in += 1;
        let Some(route) = self.router.routes.get_mut(&pkt.track) else {
            self.stats.packets_dropped += 1;
            self.stats.packets_no_route += 1;
            return;
        };
        if let (Some(level), true) = (pkt.audio_level, route.origin == self.worker) {
            route.loudness.0 += 127 - u32::from(level.unsigned_abs().min(127));
            route.loudness.1 += 1;
        }
        if route.publisher.is_some() {
            let layer = pkt.svc.map_or(pkt.layer, |l| l.spatial);
            let tid = pkt.temporal.map_or(0, |t| t.tid);
            route.measured.add(now, layer, tid, pkt.payload.len());
        }
        let route = &*route;
        // Simulcast layers are separate streams: a sink gets only those it may forward.
        // (A scalable stream's layers share one numbering, which a sink needs whole.)
        let bit = if pkt.layers > 1 {
            1 << pkt.layer
        } else {
            ALL_LAYERS
        };
        for &(to, need) in &route.sinks {
            if need.flow & bit == 0 {
                continue;
            }
            self.stats.pipe_out += 1;
            self.outputs.push_back(Output::Pipe {
                to,
                msg: PipeMsg::Media(pkt.clone()),
            });
        }
        for &(to, need) in &route.nodes {
            if need.flow & bit != 0 {
                self.outputs.push_back(Output::Relay {
                    to,
                    msg: PipeMsg::Media(pkt.clone()),
                });
            }
        }
        let mut need_keyframe = false; // of this packet's layer
        for &(sub, slot) in &route.subs {
            let Some(peer) = self.peers.get_mut(&sub) else {
                continue;
            };
            let written = match guard(|| peer.write(now, slot, &pkt)) {
                Ok(w) => w,
                Err(what) => {
                    self.failed.push((sub, what));
                    continue;
                }
            };
            match written {
                w @ (Write::Forwarded | Write::ForwardedWantsKeyframe) => {
                    need_keyframe |= w == Write::ForwardedWantsKeyframe;
                    self.stats.packets_forwarded += 1;
                    if !peer.queued {
                        peer.queued = true;
                        self.touched.push(sub);
                    }
                }
                Write::Dropped => {}
                Write::NeedKeyframe => need_keyframe = true,
            }
        }
        self.drop_failed(now);
        if need_keyframe {
            self.keyframe_request(now, pkt.track, pkt.layer);
        }
        if pkt.keyframe && pkt.layers > 1 {
            // A simulcast keyframe may have finished a switch here: the layer left behind
            // stops flowing now rather than at the next demand pass.
            self.update_demand(now, pkt.track);
        }
    }

    /// A subscriber here needs a keyframe of `track`'s simulcast `layer`: merge at the
    /// origin (per layer), or pipe it there.
    fn keyframe_request(&mut self, now: Instant, track: TrackId, layer: u8) {
        let layer = layer.min(MAX_LAYERS as u8 - 1);
        self.stats.keyframe_requests_in += 1;
        let Some(route) = self.router.get_mut(&track) else {
            return;
        };
        if route.origin != self.worker {
            let to = route.origin;
            self.outputs.push_back(Output::Pipe {
                to,
                msg: PipeMsg::KeyframeRequest(track, layer),
            });
            return;
        }
        // Subscribers ask for the layer they want; the publisher may send fewer.
        let layer = layer.min(route.layers.saturating_sub(1));
        let throttle = &mut route.keyframes[usize::from(layer)];
        let deferred = throttle.deadline();
        if throttle.request(now) {
            self.send_keyframe_request(now, track, layer);
        } else if let Some(at) = throttle.deadline().filter(|at| Some(*at) != deferred) {
            self.timers.push(at, Timer::Keyframe(track, layer));
        }
    }

    /// Asks the source of `track` (origin here) for a keyframe of `layer`: its publishing
    /// peer, or the node it comes from.
    fn send_keyframe_request(&mut self, now: Instant, track: TrackId, layer: u8) {
        let Some(route) = self.router.routes.get(&track) else {
            return;
        };
        if let Some(node) = route.remote {
            self.stats.keyframe_requests_sent += 1;
            self.outputs.push_back(Output::Relay {
                to: node,
                msg: PipeMsg::KeyframeRequest(track, layer),
            });
            return;
        }
        let Some(id) = route.publisher else { return };
        tracing::debug!(%track, layer, "keyframe asked of the publisher");
        if self.on_peer(now, id, |p| p.request_keyframe(track, layer)) == Some(true) {
            self.stats.keyframe_requests_sent += 1;
            self.mark(id);
        }
    }

    fn subscribe(
        &mut self,
        now: Instant,
        id: PeerId,
        track: TrackId,
        kind: crate::ids::Kind,
        origin: WorkerId,
    ) {
        if self.ended.contains_key(&track)
            || (origin == self.worker && !self.router.routes.contains_key(&track))
        {
            return; // already unpublished
        }
        let mut outs = Vec::new();
        if self.on_peer(now, id, |p| p.subscribe(track, kind, origin, &mut outs)) != Some(true) {
            return;
        }
        let Some(slot) = self
            .peers
            .get(&id)
            .and_then(|p| p.slots.iter().position(|s| s.track == Some(track)))
        else {
            return;
        };
        let route = self
            .router
            .routes
            .entry(track)
            .or_insert_with(|| Route::new(kind, origin, None));
        if !route.subs.contains(&(id, slot)) {
            route.subs.push((id, slot));
        }
        let rates = route.rates;
        if self
            .on_peer(now, id, |p| p.set_rates(slot, &rates))
            .is_some()
        {
            self.handle_outs(now, id, &mut outs);
            self.mark(id);
        }
    }

    fn unsubscribe(&mut self, now: Instant, id: PeerId, track: TrackId) {
        if let Some(route) = self.router.get_mut(&track) {
            route.subs.retain(|(p, _)| *p != id);
        }
        self.router.prune(&track);
        let mut outs = Vec::new();
        if self
            .on_peer(now, id, |p| p.unsubscribe(track, &mut outs))
            .is_some()
        {
            self.handle_outs(now, id, &mut outs);
            self.mark(id);
        }
    }

    /// A track is gone (published here, or at its origin, which piped
    /// [`PipeMsg::TrackEnded`]): its local subscribers let go of it, and the other workers it
    /// fed hear of it.
    fn remove_track(&mut self, now: Instant, track: TrackId) {
        self.ended.insert(track, now);
        let Some(route) = self.router.routes.remove(&track) else {
            return;
        };
        for &(to, _) in &route.sinks {
            self.outputs.push_back(Output::Pipe {
                to,
                msg: PipeMsg::TrackEnded(track),
            });
        }
        for &(to, _) in &route.nodes {
            self.outputs.push_back(Output::Relay {
                to,
                msg: PipeMsg::TrackEnded(track),
            });
        }
        let published_here = route.publisher.is_some();
        for (sub, _) in route.subs {
            let mut outs = Vec::new();
            if self
                .on_peer(now, sub, |p| p.unsubscribe(track, &mut outs))
                .is_some()
            {
                self.handle_outs(now, sub, &mut outs);
                self.mark(sub);
            }
        }
        if published_here {
            self.event(Event::TrackUnpublished {
                peer: track.peer,
                track,
            });
        }
    }

    fn remove_peer(&mut self, now: Instant, id: PeerId, reason: &'static str) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        self.closed.insert(id, now);
        self.bus.channels(id, false);
        self.demux.remove_peer(id);
        self.touched.retain(|p| *p != id);
        for p in &peer.published {
            self.remove_track(now, p.track);
        }
        for slot in &peer.slots {
            if let Some(track) = slot.track {
                if let Some(route) = self.router.get_mut(&track) {
                    route.subs.retain(|(p, _)| *p != id);
                }
                self.router.prune(&track);
            }
        }
        self.event(Event::PeerClosed { peer: id, reason });
    }
}

/// Runs `f`; a panic inside it becomes its message. No cost unless it panics.
fn guard<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|cause| {
        cause
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| cause.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string())
    })
}
