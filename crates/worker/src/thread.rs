//! The loop of one worker thread: wait on the socket, the pipe and the command queue; feed
//! the engine in batches; send what it produced; wake the workers it piped to. The relay
//! worker of a node in a cluster runs the same loop with its socket on the relay links
//! ([`Relay`]): what arrives from other nodes is fed to its engine, what its engine sends to
//! them leaves through the links.

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
use crate::{Ctl, Delivery, Member, RelayConfig, ReplySender, Report, RELAY_SILENCE};

const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
/// Inputs of one kind taken per turn, so that no source starves the others.
const BATCH: usize = 256;
const MAX_DATAGRAM: usize = 2048;

pub(crate) struct Runtime {
    pub id: WorkerId,
    pub addr: std::net::SocketAddr,
    pub poll: Poll,
    pub socket: mio::net::UdpSocket,
    pub commands: Receiver<Ctl>,
    pub pipe_in: Receiver<PipeMsg>,
    pub pipe_out: Vec<Sender<PipeMsg>>,
    pub wakers: Vec<Arc<Waker>>,
    pub events: mpsc::Sender<Delivery>,
    pub pending: HashMap<RequestId, ReplySender>,
    pub pipe_dropped: u64,
    pub bandwidth_estimation: bool,
    /// Set on the relay worker of a node in a cluster.
    pub relay: Option<Relay>,
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
    /// Runs until told to stop (`Ok`) or until the loop cannot go on (`Err`: why). A panic
    /// outside any peer unwinds out of here (see `life::supervise`).
    pub fn run(mut self) -> Result<(), String> {
        let mut engine = Engine::new(self.id, self.addr);
        engine.set_bandwidth_estimation(self.bandwidth_estimation);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut self.socket, SOCKET, Interest::READABLE)
        {
            return Err(format!("cannot register its socket: {e}"));
        }
        tracing::info!(worker = %self.id, addr = %self.addr, "worker started");
        let mut events = Events::with_capacity(16);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut woken = vec![false; self.pipe_out.len()];
        // Built here: its preallocated headers hold raw pointers and may not cross threads.
        let mut sender = BatchSender::new();
        // Set when a turn stopped before a source was empty: the next wait must not block,
        // since mio's readiness is edge-triggered.
        let mut more = true;
        // Whether the socket may hold datagrams: it said so, or the last read stopped before
        // it was empty. A turn woken by a pipe or a command alone skips the read (a
        // `recvfrom` that would only say "empty").
        let mut readable = true;
        loop {
            let now = Instant::now();
            let wake = match &self.relay {
                Some(relay) => relay
                    .links
                    .poll_timeout()
                    .map_or(engine.poll_timeout(now), |t| {
                        t.min(engine.poll_timeout(now))
                    }),
                None => engine.poll_timeout(now),
            };
            let timeout = if more {
                std::time::Duration::ZERO
            } else {
                wake.saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(format!("poll failed: {e}"));
                }
            }
            let now = Instant::now();
            // Read once a turn: the relay stamps and reads packets' times on it.
            let clock = ClusterClock::read();
            more = false;
            readable |= events.iter().any(|e| e.token() == SOCKET);

            let mut drained = !readable;
            let reads = if readable { BATCH } else { 0 };
            for _ in 0..reads {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, source)) => match &mut self.relay {
                        Some(relay) => {
                            relay.links.handle_datagram(now, source, &buf[..n], &clock);
                            relay.drain(now, &mut engine, &mut sender);
                        }
                        None => engine.handle_datagram(now, source, &buf[..n]),
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) => {
                        // ICMP errors (port unreachable) surface here on Linux: not fatal.
                        tracing::debug!(worker = %self.id, "recv: {e}");
                    }
                }
            }
            more |= !drained;
            readable = !drained;

            for _ in 0..BATCH {
                match self.pipe_in.try_recv() {
                    Ok(msg) => engine.handle_pipe(now, msg),
                    Err(_) => break,
                }
            }
            more |= !self.pipe_in.is_empty();

            for _ in 0..BATCH {
                match self.commands.try_recv() {
                    Ok(Ctl::Command(cmd)) => engine.handle_command(now, cmd),
                    Ok(Ctl::Call(req, cmd, reply)) => {
                        self.pending.insert(req, reply);
                        engine.handle_command(now, cmd);
                    }
                    Ok(Ctl::Stop) => {
                        tracing::info!(worker = %self.id, "worker stopped");
                        return Ok(());
                    }
                    Ok(Ctl::Members(members)) => {
                        if let Some(relay) = &mut self.relay {
                            relay.set_members(now, members);
                        }
                    }
                    #[cfg(feature = "fault-injection")]
                    Ok(Ctl::Fail) => panic!("injected failure"),
                    Err(_) => break,
                }
            }
            more |= !self.commands.is_empty();

            engine.handle_timeout(now);
            if let Some(relay) = &mut self.relay {
                relay.links.handle_timeout(now);
                relay.drain(now, &mut engine, &mut sender);
                relay.watch(now, &self.events);
            }
            self.drain(now, &clock, &mut engine, &mut sender, &mut woken);
        }
    }

    fn drain(
        &mut self,
        now: Instant,
        clock: &ClusterClock,
        engine: &mut Engine,
        sender: &mut BatchSender,
        woken: &mut [bool],
    ) {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Transmit(t) => sender.push(t),
                Output::Relay { to, msg } => {
                    if let Some(relay) = &mut self.relay {
                        relay.links.send(now, to, &msg, clock);
                        while let Some(LinkOutput::Transmit { to, data }) =
                            relay.links.poll_output()
                        {
                            sender.push(Transmit {
                                proto: Protocol::Udp,
                                source: relay.addr,
                                destination: to,
                                contents: data.into(),
                            });
                        }
                    }
                }
                Output::Pipe { to, msg } => {
                    let Some(pipe) = self.pipe_out.get(to.0 as usize) else {
                        continue;
                    };
                    match pipe.try_send(msg) {
                        Ok(()) => woken[to.0 as usize] = true,
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.pipe_dropped += 1;
                        }
                    }
                }
                Output::Event(Event::Reply { req, result }) => {
                    let result = result.map(|body| match body {
                        ReplyBody::Stats(mut s) => {
                            s.pipe_dropped = self.pipe_dropped;
                            s.datagrams_dropped += sender.dropped;
                            s.link = self
                                .relay
                                .as_ref()
                                .map(|r| Box::new(r.links.stats().clone()));
                            ReplyBody::Stats(s)
                        }
                        other => other,
                    });
                    if let Some(reply) = self.pending.remove(&req) {
                        if self
                            .events
                            .try_send(Delivery::Reply(reply, result))
                            .is_err()
                        {
                            tracing::error!(worker = %self.id, "control plane queue full: reply lost");
                        }
                    }
                }
                Output::Event(e) => {
                    let report = Delivery::Report(Report::Event(self.id, e));
                    if self.events.try_send(report).is_err() {
                        tracing::error!(worker = %self.id, "control plane event queue full: event lost");
                    }
                }
            }
        }
        sender.flush(&self.socket);
        for (i, w) in woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.wakers[i].wake();
            }
        }
    }
}
