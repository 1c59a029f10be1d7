//! Sfumato's media runtime: one OS thread per worker, each owning a UDP socket and an
//! [`Engine`], joined by bounded pipes (one inbound queue per worker). The control plane
//! talks to the workers through a [`Pool`]: commands in, events out, replies resolved here,
//! and whether each worker still runs.
//!
//! [`Engine`]: sfumato_core::Engine

mod life;
mod send;
mod thread;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use mio::{Poll, Waker};
use sfumato_core::link::KEY_LEN;
use sfumato_core::{Command, Event, NodeId, ReplyBody, RequestId, WorkerId};
use tokio::sync::{mpsc, oneshot};

use crate::life::Life;

pub use sfumato_core;

/// Capacity of each worker's inbound pipe (packets from all other workers).
const PIPE_CAPACITY: usize = 16 * 1024;
/// Capacity of each worker's command queue.
const COMMAND_CAPACITY: usize = 4096;
/// Capacity of the event queue from all workers to the control plane.
const EVENT_CAPACITY: usize = 64 * 1024;
/// Data messages for WebSocket members, from every worker to the control plane. A queue of
/// their own, so that a flood of data never pushes out an event or a reply: when it is full,
/// deliveries are dropped and counted (`WorkerStats::data_lost`).
const DATA_CAPACITY: usize = 64 * 1024;

/// A data message for a member's signaling WebSocket ([`Event::Data`], which a worker sends
/// on [`Pool::take_data`]'s queue rather than with its other events).
#[derive(Debug)]
pub struct DataOut {
    pub member: sfumato_core::MemberId,
    pub frame: Arc<[u8]>,
    pub reliable: bool,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    /// Address the UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address put in ICE candidates.
    pub announce_ip: IpAddr,
    /// Worker i binds `base_port + i`; 0: every worker binds a port of the system's choice.
    pub base_port: u16,
    /// Subscribers' downlink estimation and layer allocation (`Engine::set_bandwidth_estimation`).
    pub bandwidth_estimation: bool,
    /// Data messages a second one participant may send (`Engine::set_data_rate`).
    pub data_rate: u32,
    /// In a cluster: the relay worker, one more after the others ([`Pool::relay`]).
    pub relay: Option<RelayConfig>,
}

/// The relay worker of a node in a cluster: its socket, and its identity in the cluster.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The port it binds (on `bind_ip`; 0: the system's choice).
    pub port: u16,
    pub node: NodeId,
    /// This start's salt and the cluster key (see `sfumato_core::link`).
    pub salt: [u8; KEY_LEN],
    pub key: [u8; KEY_LEN],
}

/// Another node, as the relay needs it.
#[derive(Debug, Clone)]
pub struct Member {
    pub node: NodeId,
    pub relay: SocketAddr,
    pub salt: [u8; KEY_LEN],
}

/// How long a node's relay may stay silent before it is reported ([`Report::NodeSilent`]):
/// three signs of life missed.
pub const RELAY_SILENCE: Duration = Duration::from_secs(3);

/// Why a request to a worker got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Engine(#[from] sfumato_core::Error),
    #[error("worker {0} is not running")]
    Gone(WorkerId),
    #[error("worker {0} died: {1}")]
    Dead(WorkerId, String),
    #[error("worker {0} did not answer in time")]
    Timeout(WorkerId),
}

/// What the workers hand to the control plane, in the order they produced it: a reply is
/// delivered after the events that preceded it (a publish answer after its tracks), a
/// worker's death after everything it sent.
pub enum Delivery {
    Report(Report),
    Reply(ReplySender, Result<ReplyBody, sfumato_core::Error>),
}

/// What the control plane applies, once replies are resolved.
#[derive(Debug)]
pub enum Report {
    Event(WorkerId, Event),
    /// A worker's thread ended without being told to stop: it panicked outside any peer, or
    /// its loop failed. Its peers are gone; the [`Pool`] refuses commands to it from now on.
    Died {
        worker: WorkerId,
        cause: String,
    },
    /// Nothing came from `node` over the relay for [`RELAY_SILENCE`].
    NodeSilent(NodeId),
    /// `node`, reported silent, was heard again.
    NodeHeard(NodeId),
}

impl Delivery {
    /// Resolves a reply; returns a report, if this is one.
    pub fn resolve(self) -> Option<Report> {
        match self {
            Delivery::Report(r) => Some(r),
            Delivery::Reply(tx, result) => {
                let _ = tx.send(result);
                None
            }
        }
    }
}

pub(crate) type ReplySender = oneshot::Sender<Result<ReplyBody, sfumato_core::Error>>;

pub(crate) enum Ctl {
    Command(Command),
    Call(RequestId, Command, ReplySender),
    Stop,
    /// The relay worker: the other nodes of the cluster, all of them.
    Members(Vec<Member>),
    /// Tests only: the worker's loop panics, outside any peer ([`Pool::fail_worker`]).
    #[cfg(feature = "fault-injection")]
    Fail,
}

struct Handle {
    commands: Sender<Ctl>,
    /// The other end of `commands`, to empty it once the worker is dead.
    queued: Receiver<Ctl>,
    waker: Arc<Waker>,
    addr: SocketAddr,
    life: Arc<Life>,
}

/// The running workers.
pub struct Pool {
    handles: Vec<Handle>,
    /// The relay worker (the last handle), in a cluster.
    relay: Option<WorkerId>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_req: AtomicU64,
    /// The receiving end of the data queue, until the control plane takes it.
    data: Mutex<Option<mpsc::Receiver<DataOut>>>,
}

impl Pool {
    /// Binds every worker's socket and starts the threads. Events and replies of all workers
    /// arrive on the returned receiver; the control plane must [`Delivery::resolve`] each.
    pub fn start(config: &PoolConfig) -> io::Result<(Pool, mpsc::Receiver<Delivery>)> {
        let workers = config.workers.max(1);
        // The relay worker, in a cluster, is one more worker: the others pipe to it. It sits
        // on worker 0's thread (see `thread`).
        let n = workers + usize::from(config.relay.is_some());
        let thread_of = |i: usize| if i < workers { i } else { 0 };
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let (data_tx, data_rx) = mpsc::channel(DATA_CAPACITY);
        let mut polls = Vec::with_capacity(workers);
        let mut thread_wakers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = Poll::new()?;
            thread_wakers.push(Arc::new(Waker::new(poll.registry(), thread::WAKER)?));
            polls.push(poll);
        }
        let wakers: Vec<_> = (0..n)
            .map(|i| thread_wakers[thread_of(i)].clone())
            .collect();
        let pipes: Vec<_> = (0..n).map(|_| bounded(PIPE_CAPACITY)).collect();
        let pipe_senders: Vec<_> = pipes.iter().map(|(s, _)| s.clone()).collect();
        let mut handles = Vec::with_capacity(n);
        let mut seats: Vec<Vec<(thread::Seat, Arc<Life>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (i, (_, pipe_rx)) in pipes.into_iter().enumerate() {
            let port = match (&config.relay, config.base_port) {
                (Some(r), _) if i == workers => r.port,
                (_, 0) => 0,
                (_, base) => base.checked_add(i as u16).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "rtc port range overflows")
                })?,
            };
            let socket = UdpSocket::bind(SocketAddr::new(config.bind_ip, port))?;
            socket.set_nonblocking(true)?;
            size_buffers(&socket);
            let id = WorkerId(i as u16);
            let addr = SocketAddr::new(config.announce_ip, socket.local_addr()?.port());
            let (cmd_tx, cmd_rx) = bounded(COMMAND_CAPACITY);
            let life = Arc::new(Life::default());
            handles.push(Handle {
                commands: cmd_tx,
                queued: cmd_rx.clone(),
                waker: wakers[i].clone(),
                addr,
                life: life.clone(),
            });
            let seat = thread::Seat {
                id,
                addr,
                socket: mio::net::UdpSocket::from_std(socket),
                commands: cmd_rx,
                pipe_in: pipe_rx,
                relay: config
                    .relay
                    .as_ref()
                    .filter(|_| i == workers)
                    .map(|r| thread::Relay::new(r, addr)),
            };
            seats[thread_of(i)].push((seat, life));
        }
        let mut threads = Vec::with_capacity(workers);
        for (i, (poll, seats)) in polls.into_iter().zip(seats).enumerate() {
            let (seats, lives): (Vec<_>, Vec<_>) = seats.into_iter().unzip();
            let queues = seats.iter().map(|s| s.commands.clone()).collect();
            let runtime = thread::Runtime {
                poll,
                seats,
                pipe_out: pipe_senders.clone(),
                wakers: wakers.clone(),
                events: event_tx.clone(),
                data: data_tx.clone(),
                bandwidth_estimation: config.bandwidth_estimation,
                data_rate: config.data_rate,
            };
            let events = event_tx.clone();
            let join = std::thread::Builder::new()
                .name(format!("sfumato-worker-{i}"))
                .spawn(move || life::supervise(runtime, lives, queues, events))?;
            threads.push(join);
        }
        Ok((
            Pool {
                handles,
                relay: config.relay.as_ref().map(|_| WorkerId(workers as u16)),
                threads: Mutex::new(threads),
                next_req: AtomicU64::new(1),
                data: Mutex::new(Some(data_rx)),
            },
            event_rx,
        ))
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// The queue of data messages for WebSocket members (once; `None` after).
    pub fn take_data(&self) -> Option<mpsc::Receiver<DataOut>> {
        self.data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The relay worker, in a cluster: the origin here of other nodes' tracks, and a sink of
    /// the local tracks that other nodes receive. It holds no peers.
    pub fn relay(&self) -> Option<WorkerId> {
        self.relay
    }

    /// The media workers, which hold peers (the relay worker excepted).
    pub fn media_workers(&self) -> usize {
        self.handles.len() - usize::from(self.relay.is_some())
    }

    /// Tells the relay worker who the other nodes are (all of them; the rest are dropped).
    pub fn set_members(&self, members: Vec<Member>) {
        if let Some(relay) = self.relay {
            if let Err(e) = self.push(relay, Ctl::Members(members)) {
                tracing::warn!("cluster members not given to the relay: {e}");
            }
        }
    }

    /// The ICE candidate address of a worker (for the relay worker: its relay address).
    pub fn addr(&self, worker: WorkerId) -> Option<SocketAddr> {
        self.handles.get(worker.0 as usize).map(|h| h.addr)
    }

    /// Whether worker `worker` runs (false for one that does not exist).
    pub fn is_alive(&self, worker: WorkerId) -> bool {
        self.handles
            .get(worker.0 as usize)
            .is_some_and(|h| h.life.is_alive())
    }

    /// Why worker `worker` does not run any more, if it does not.
    pub fn cause_of_death(&self, worker: WorkerId) -> Option<&str> {
        self.handles.get(worker.0 as usize)?.life.cause()
    }

    /// Tests only: worker `worker`'s loop panics, outside any peer, as a bug would make it.
    #[cfg(feature = "fault-injection")]
    pub fn fail_worker(&self, worker: WorkerId) {
        let _ = self.push(worker, Ctl::Fail);
    }

    fn push(&self, worker: WorkerId, ctl: Ctl) -> Result<(), CallError> {
        let h = self
            .handles
            .get(worker.0 as usize)
            .ok_or(CallError::Gone(worker))?;
        let dead = |cause: &str| CallError::Dead(worker, cause.to_string());
        if let Some(cause) = h.life.cause() {
            return Err(dead(cause));
        }
        h.commands
            .try_send(ctl)
            .map_err(|_| CallError::Gone(worker))?;
        if let Some(cause) = h.life.cause() {
            // It died meanwhile, and may have emptied its queue before this landed: empty it
            // again, which answers this caller (and any other) with `Gone`.
            while h.queued.try_recv().is_ok() {}
            return Err(dead(cause));
        }
        let _ = h.waker.wake();
        Ok(())
    }

    /// Sends a command that needs no answer.
    pub fn send(&self, worker: WorkerId, cmd: Command) {
        match self.push(worker, Ctl::Command(cmd)) {
            Ok(()) => {}
            // Known and reported already: the control plane is letting go of its peers.
            Err(e @ CallError::Dead(..)) => tracing::debug!("command to worker {worker} lost: {e}"),
            Err(e) => tracing::warn!("command to worker {worker} lost: {e}"),
        }
    }

    /// Sends a command built around a fresh request id and waits for its reply.
    pub async fn call(
        &self,
        worker: WorkerId,
        build: impl FnOnce(RequestId) -> Command,
    ) -> Result<ReplyBody, CallError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.push(worker, Ctl::Call(req, build(req), tx))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(CallError::Gone(worker)),
            Err(_) => Err(CallError::Timeout(worker)),
        }
    }

    /// Stops every worker and waits for its thread.
    pub fn shutdown(&self) {
        for (i, _) in self.handles.iter().enumerate() {
            let _ = self.push(WorkerId(i as u16), Ctl::Stop);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// Gives a worker socket room for the bursts it sees: while a worker fans one keyframe out
/// to hundreds of subscribers (tens of milliseconds), its subscribers' RTCP and its
/// publishers' media keep arriving. With Linux's default 208 KiB receive buffer those were
/// dropped at 1→500 (`RcvbufErrors` in /proc/net/snmp; docs/benchmarks.md).
fn size_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    for (name, result) in [
        (
            "receive",
            setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER),
        ),
        ("send", setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::warn!("cannot size the worker socket's {name} buffer: {e}");
        }
    }
    let got = nix::sys::socket::getsockopt(socket, sockopt::RcvBuf).unwrap_or(0);
    if got < SOCKET_BUFFER {
        tracing::info!(
            "worker socket receive buffer is {got} bytes; raise net.core.rmem_max to {} for bursts",
            SOCKET_BUFFER
        );
    }
}
