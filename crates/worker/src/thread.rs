//! The loop of one worker thread: wait on its sockets, the pipes and the command queues; feed
//! the engines in batches; send what they produced; wake the threads they piped to.
//!
//! A thread hosts one worker ([`Seat`]), or two: in a cluster the relay worker shares the
//! thread of worker 0, its socket on the relay links ([`Relay`]) registered in the same poll.
//! What arrives from other nodes is fed to its engine, what its engine sends to them leaves
//! through the links, and a message piped between the two seats of one thread is taken in
//! the same loop turn (to the relay) or the next (from it), without a wake-up. (A relay
//! thread of its own cost two wake-ups and context switches per relayed datagram at each
//! end: 23–27 µs of CPU, against ~5 µs for the link's own work; docs/benchmarks.md.)

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};
use sfumato_core::link::{LinkOutput, Links};
use sfumato_core::wire::ClusterClock;
use sfumato_core::{Engine, Event, NodeId, Output, PipeMsg, ReplyBody, RequestId, WorkerId};
use str0m::net::{Protocol, Transmit};
use tokio::sync::mpsc;

use crate::send::BatchSender;
use crate::{Ctl, DataOut, Delivery, Member, RelayConfig, ReplySender, Report, RELAY_SILENCE};

/// The poll token of the thread's waker; a seat's socket has its index as token.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Inputs of one kind taken per turn, so that no source starves the others.
const BATCH: usize = 256;
const MAX_DATAGRAM: usize = 2048;

/// What a thread runs: its seats, and what they share.
pub(crate) struct Runtime {
    pub poll: Poll,
    pub seats: Vec<Seat>,
    /// Every worker's pipe and waker, by worker index (seats of one thread share a waker).
    pub pipe_out: Vec<Sender<PipeMsg>>,
    pub wakers: Vec<Arc<Waker>>,
    pub events: mpsc::Sender<Delivery>,
    pub data: mpsc::Sender<DataOut>,
    pub bandwidth_estimation: bool,
    /// Data messages a second per member (`Engine::set_data_rate`).
    pub data_rate: u32,
}

/// One worker as the pool hands it to a thread.
pub(crate) struct Seat {
    pub id: WorkerId,
    pub addr: SocketAddr,
    pub socket: mio::net::UdpSocket,
    pub commands: Receiver<Ctl>,
    pub pipe_in: Receiver<PipeMsg>,
    /// Set on the relay worker of a node in a cluster.
    pub relay: Option<Relay>,
}

/// A seat at work: its engine and what its turns keep.
struct Unit {
    seat: Seat,
    engine: Engine,
    pending: HashMap<RequestId, ReplySender>,
    pipe_dropped: u64,
    /// Data messages for WebSocket members dropped: the data queue was full.
    data_lost: u64,
    /// Time spent in this seat's turns (the event-loop's busy time; waiting is not in it).
    busy: std::time::Duration,
    // Built on the thread: its preallocated headers hold raw pointers and may not cross threads.
    sender: BatchSender,
    /// Whether the socket may hold datagrams: it said so, or the last read stopped before it
    /// was empty. A turn woken by a pipe or a command alone skips the read (a `recvfrom`
    /// that would only say "empty").
    readable: bool,
}

/// How a turn of one seat ended.
enum Turn {
    /// A source was left unemptied, or a seat of this thread was piped to.
    More,
    Idle,
    Stop,
}

/// The relay worker's links to the other nodes.
pub(crate) struct Relay {
    links: Links,
    addr: SocketAddr,
    /// Members reported silent ([`Report::NodeSilent`]) and not heard since.
    silent: HashSet<NodeId>,
}

impl Relay {
    pub fn new(config: &RelayConfig, addr: SocketAddr) -> Self {
        Relay {
            links: Links::new(config.node, &config.salt, &config.key),
            addr,
            silent: HashSet::new(),
        }
    }

    fn set_members(&mut self, now: Instant, members: Vec<Member>) {
        let keep: HashSet<NodeId> = members.iter().map(|m| m.node).collect();
        for m in members {
            self.links.set_member(now, m.node, m.relay, &m.salt);
        }
        let gone: Vec<NodeId> = self
            .links
            .silence(now)
            .map(|(n, _)| n)
            .filter(|n| !keep.contains(n))
            .collect();
        for n in gone {
            self.links.remove_member(n);
            self.silent.remove(&n);
        }
    }

    /// Moves what the links produced: messages into the engine, datagrams to the sender.
    fn drain(&mut self, now: Instant, engine: &mut Engine, sender: &mut BatchSender) {
        while let Some(out) = self.links.poll_output() {
            match out {
                LinkOutput::Transmit { to, data } => sender.push(Transmit {
                    proto: Protocol::Udp,
                    source: self.addr,
                    destination: to,
                    contents: data.into(),
                }),
                LinkOutput::Message { from, msg } => engine.handle_relay(now, from, msg),
            }
        }
    }

    /// Reports members that fell silent, or were heard again.
    fn watch(&mut self, now: Instant, events: &mpsc::Sender<Delivery>) {
        let mut reports = Vec::new();
        for (node, quiet) in self.links.silence(now) {
            let silent = quiet >= RELAY_SILENCE;
            if silent && self.silent.insert(node) {
                reports.push(Report::NodeSilent(node));
            } else if !silent && self.silent.remove(&node) {
                reports.push(Report::NodeHeard(node));
            }
        }
        for r in reports {
            if events.try_send(Delivery::Report(r)).is_err() {
                tracing::error!("control plane event queue full: relay report lost");
            }
        }
    }
}

impl Runtime {
    /// The workers this thread hosts.
    pub fn ids(&self) -> Vec<WorkerId> {
        self.seats.iter().map(|s| s.id).collect()
    }

    /// Runs until told to stop (`Ok`) or until the loop cannot go on (`Err`: why). A panic
    /// outside any peer unwinds out of here (see `life::supervise`).
    pub fn run(self) -> Result<(), String> {
        let Runtime {
            mut poll,
            seats,
            pipe_out,
            wakers,
            events: to_control,
            data,
            bandwidth_estimation,
            data_rate,
        } = self;
        let mut units = Vec::with_capacity(seats.len());
        for (i, mut seat) in seats.into_iter().enumerate() {
            if let Err(e) = poll
                .registry()
                .register(&mut seat.socket, Token(i), Interest::READABLE)
            {
                return Err(format!(
                    "worker {} cannot register its socket: {e}",
                    seat.id
                ));
            }
            let mut engine = Engine::new(seat.id, seat.addr);
            engine.set_bandwidth_estimation(bandwidth_estimation);
            engine.set_data_rate(data_rate);
            tracing::info!(worker = %seat.id, addr = %seat.addr, "worker started");
            units.push(Unit {
                seat,
                engine,
                pending: HashMap::new(),
                pipe_dropped: 0,
                data_lost: 0,
                busy: std::time::Duration::ZERO,
                sender: BatchSender::new(),
                readable: true,
            });
        }
        let mut shared = Shared {
            seat_of: (0..pipe_out.len())
                .map(|w| units.iter().position(|u| u.seat.id.0 as usize == w))
                .collect(),
            woken: vec![false; pipe_out.len()],
            pipe_out,
            wakers,
            events: to_control,
            data,
        };
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Set when a turn stopped before a source was empty: the next wait must not block,
        // since mio's readiness is edge-triggered.
        let mut more = true;
        loop {
            let now = Instant::now();
            let timeout = if more {
                std::time::Duration::ZERO
            } else {
                let wake = units
                    .iter()
                    .map(|u| u.poll_timeout(now))
                    .min()
                    .unwrap_or(now);
                wake.saturating_duration_since(now)
            };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(format!("poll failed: {e}"));
                }
            }
            let now = Instant::now();
            let mut started = now;
            // Read once a turn: the relay stamps and reads packets' times on it.
            let clock = ClusterClock::read();
            more = false;
            let mut stop = false;
            for (i, unit) in units.iter_mut().enumerate() {
                unit.readable |= events.iter().any(|e| e.token() == Token(i));
                let turn = unit.turn(i, now, &clock, &mut buf, &mut shared);
                let ended = Instant::now();
                unit.busy += ended.saturating_duration_since(started);
                started = ended;
                match turn {
                    Turn::More => more = true,
                    Turn::Idle => {}
                    Turn::Stop => stop = true,
                }
                if stop {
                    break;
                }
            }
            if stop {
                for u in &units {
                    tracing::info!(worker = %u.seat.id, "worker stopped");
                }
                return Ok(());
            }
            for (i, w) in shared.woken.iter_mut().enumerate() {
                if std::mem::take(w) {
                    let _ = shared.wakers[i].wake();
                }
            }
        }
    }
}

/// What the seats of a thread share.
struct Shared {
    pipe_out: Vec<Sender<PipeMsg>>,
    wakers: Vec<Arc<Waker>>,
    /// By worker index: its seat, if it sits on this thread (a pipe to it needs no wake-up).
    seat_of: Vec<Option<usize>>,
    /// By worker index: piped to this turn, to be woken at its end.
    woken: Vec<bool>,
    events: mpsc::Sender<Delivery>,
    data: mpsc::Sender<DataOut>,
}

impl Unit {
    fn poll_timeout(&self, now: Instant) -> Instant {
        let engine = self.engine.poll_timeout(now);
        match self
            .seat
            .relay
            .as_ref()
            .and_then(|r| r.links.poll_timeout())
        {
            Some(t) => t.min(engine),
            None => engine,
        }
    }

    /// One turn of the seat at `index`: the socket, the pipe and the commands, each up to
    /// [`BATCH`], then timers, then what the engine produced.
    fn turn(
        &mut self,
        index: usize,
        now: Instant,
        clock: &ClusterClock,
        buf: &mut [u8],
        shared: &mut Shared,
    ) -> Turn {
        let mut more = false;
        let seat = &mut self.seat;
        let mut drained = !self.readable;
        let reads = if self.readable { BATCH } else { 0 };
        for _ in 0..reads {
            match seat.socket.recv_from(buf) {
                Ok((n, source)) => match &mut seat.relay {
                    Some(relay) => {
                        relay.links.handle_datagram(now, source, &buf[..n], clock);
                        relay.drain(now, &mut self.engine, &mut self.sender);
                    }
                    None => self.engine.handle_datagram(now, source, &buf[..n]),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // ICMP errors (port unreachable) surface here on Linux: not fatal.
                    tracing::debug!(worker = %seat.id, "recv: {e}");
                }
            }
        }
        more |= !drained;
        self.readable = !drained;

        for _ in 0..BATCH {
            match seat.pipe_in.try_recv() {
                Ok(msg) => self.engine.handle_pipe(now, msg),
                Err(_) => break,
            }
        }
        more |= !seat.pipe_in.is_empty();

        for _ in 0..BATCH {
            match seat.commands.try_recv() {
                Ok(Ctl::Command(cmd)) => self.engine.handle_command(now, cmd),
                Ok(Ctl::Call(req, cmd, reply)) => {
                    self.pending.insert(req, reply);
                    self.engine.handle_command(now, cmd);
                }
                Ok(Ctl::Stop) => return Turn::Stop,
                Ok(Ctl::Members(members)) => {
                    if let Some(relay) = &mut seat.relay {
                        relay.set_members(now, members);
                    }
                }
                #[cfg(feature = "fault-injection")]
                Ok(Ctl::Fail) => panic!("injected failure"),
                Err(_) => break,
            }
        }
        more |= !seat.commands.is_empty();

        self.engine.handle_timeout(now);
        if let Some(relay) = &mut seat.relay {
            relay.links.handle_timeout(now);
            relay.drain(now, &mut self.engine, &mut self.sender);
            relay.watch(now, &shared.events);
        }
        more |= self.drain(index, now, clock, shared);
        if more {
            Turn::More
        } else {
            Turn::Idle
        }
    }

    /// Moves what the engine produced; true if a seat of this thread that has had its turn
    /// (this one, `index`, or one before it) was piped to: a later one reads its pipe in this
    /// same loop turn.
    fn drain(
        &mut self,
        index: usize,
        now: Instant,
        clock: &ClusterClock,
        shared: &mut Shared,
    ) -> bool {
        let mut again = false;
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit(t) => self.sender.push(t),
                Output::Relay { to, msg } => {
                    if let Some(relay) = &mut self.seat.relay {
                        relay.links.send(now, to, &msg, clock);
                        while let Some(LinkOutput::Transmit { to, data }) =
                            relay.links.poll_output()
                        {
                            self.sender.push(Transmit {
                                proto: Protocol::Udp,
                                source: relay.addr,
                                destination: to,
                                contents: data.into(),
                            });
                        }
                    }
                }
                Output::Pipe { to, msg } => {
                    let i = to.0 as usize;
                    let Some(pipe) = shared.pipe_out.get(i) else {
                        continue;
                    };
                    match pipe.try_send(msg) {
                        Ok(()) => match shared.seat_of[i] {
                            Some(s) => again |= s <= index,
                            None => shared.woken[i] = true,
                        },
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.pipe_dropped += 1;
                        }
                    }
                }
                Output::Event(Event::Reply { req, result }) => {
                    let result = result.map(|body| match body {
                        ReplyBody::Stats(mut s) => {
                            s.pipe_dropped = self.pipe_dropped;
                            s.data_lost = self.data_lost;
                            s.datagrams_dropped += self.sender.dropped;
                            s.send_failed = self.sender.dropped;
                            s.busy_ns = self.busy.as_nanos() as u64;
                            s.link = self
                                .seat
                                .relay
                                .as_ref()
                                .map(|r| Box::new(r.links.stats().clone()));
                            ReplyBody::Stats(s)
                        }
                        other => other,
                    });
                    if let Some(reply) = self.pending.remove(&req) {
                        if shared
                            .events
                            .try_send(Delivery::Reply(reply, result))
                            .is_err()
                        {
                            tracing::error!(worker = %self.seat.id, "control plane queue full: reply lost");
                        }
                    }
                }
                Output::Event(Event::Data {
                    member,
                    frame,
                    reliable,
                }) => {
                    let out = DataOut {
                        member,
                        frame,
                        reliable,
                    };
                    if shared.data.try_send(out).is_err() {
                        self.data_lost += 1;
                    }
                }
                Output::Event(e) => {
                    let report = Delivery::Report(Report::Event(self.seat.id, e));
                    if shared.events.try_send(report).is_err() {
                        tracing::error!(worker = %self.seat.id, "control plane event queue full: event lost");
                    }
                }
            }
        }
        self.sender.flush(&self.seat.socket);
        again
    }
}
