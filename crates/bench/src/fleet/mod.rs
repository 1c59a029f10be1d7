//! Many WebRTC peers (str0m in RTP mode: full ICE, DTLS, SRTP) driven by a few OS threads,
//! with a handle for async code. Each peer has its own UDP socket; each thread polls its
//! peers' sockets with `mio`, sends every publisher's media on schedule once connected, and
//! measures what arrives (loss, one-way latency, join time) from the stamps in the payloads,
//! over the whole connection and within a measurement window ([`Fleet::set_window`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sfumato_bench::fleet::{Fleet, FleetConfig, OfferKind, PeerConfig};
//! use sfumato_bench::media::MediaConfig;
//! let fleet = Fleet::start(FleetConfig::default())?;
//! let alice = fleet.add_peer(PeerConfig::publisher("alice", MediaConfig::default()))?;
//! let offer = alice.create_offer(OfferKind::Publish).await?;
//! # let answer_from_server = offer.clone();
//! alice.accept_answer(&answer_from_server).await?;
//! alice.wait_connected(std::time::Duration::from_secs(5)).await?;
//! let report = alice.stats().await?;
//! println!("sent {} video packets", report.sent_video.packets);
//! # Ok(()) }
//! ```
//!
//! - [`Fleet`]: starts the threads, adds peers (round-robin), reads the threads' CPU time.
//! - [`PeerHandle`]: one peer connection's signaling (offer/answer either way, renegotiation
//!   by the remote), connection wait, statistics ([`PeerReport`]) and close.

mod cpu;
mod peer;
mod thread;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mio::{Poll, Waker};
use str0m::{Candidate, Rtc};
use tokio::sync::{oneshot, watch};

pub use cpu::FleetCpu;

use crate::media::{MediaConfig, StreamKind};
use crate::stats::{LatencyHistogram, LossSummary, LossTracker, Window, WindowedRx};
use peer::FleetPeer;
use thread::{FleetThread, WAKER};

/// How a fleet runs.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// OS threads driving the peers (default 1).
    pub threads: usize,
    /// The address every peer's UDP socket binds to, port 0 (default 127.0.0.1).
    pub bind_ip: IpAddr,
    /// The clock every stamp is measured on (default [`crate::media::process_epoch`]);
    /// fleets that measure each other must share it.
    pub epoch: Instant,
    /// How often str0m reports per-mid statistics (NACK/PLI/FIR counts; default 1 s).
    pub stats_interval: Duration,
    /// Requested socket send and receive buffer size in bytes (default 1 MiB; the kernel
    /// caps it at `net.core.{r,w}mem_max`).
    pub socket_buffer: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            threads: 1,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            epoch: crate::media::process_epoch(),
            stats_interval: Duration::from_secs(1),
            socket_buffer: 1 << 20,
        }
    }
}

/// One peer connection to add.
#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    /// A label for logs and reports.
    pub name: String,
    /// What it sends once connected, on the m-lines of an [`OfferKind::Publish`] offer.
    pub publish: Option<MediaConfig>,
    /// Be an ICE-lite agent (default: full ICE; the offerer, or the answerer of an ICE-lite
    /// offer, is controlling).
    pub ice_lite: bool,
    /// Keep the arrival of every received video frame (its first packet), up to
    /// [`FRAME_LOG_CAP`] frames: [`PeerHandle::frames`]. Off by default (memory).
    pub frame_log: bool,
}

/// The most video frames a peer's frame log keeps ([`PeerConfig::frame_log`]): 10 minutes
/// of one 30 fps stream; later frames are counted, not kept.
pub const FRAME_LOG_CAP: usize = 18_000;

/// One received video frame: the arrival of its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameArrival {
    /// The stamp's source (a simulcast layer's own: [`crate::media::base_source`] gives
    /// the publisher's).
    pub source: u32,
    /// A keyframe.
    pub keyframe: bool,
    /// Its send time (the stamp's: ns since the fleet's epoch).
    pub sent_ns: u64,
    pub at: Instant,
}

/// A peer's frame log ([`PeerConfig::frame_log`]).
#[derive(Debug, Clone, Default)]
pub struct FrameLog {
    /// In arrival order.
    pub frames: Vec<FrameArrival>,
    /// Frames not kept once the log was full.
    pub dropped: u64,
}

impl PeerConfig {
    /// A peer that only receives.
    pub fn receiver(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// A peer that publishes `media`.
    pub fn publisher(name: impl Into<String>, media: MediaConfig) -> Self {
        Self {
            name: name.into(),
            publish: Some(media),
            ..Self::default()
        }
    }
}

/// What an offer this peer creates asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// `sendonly` audio and/or video, as the peer's [`MediaConfig`] says.
    Publish,
    /// `recvonly` m-lines.
    RecvOnly {
        /// An audio m-line.
        audio: bool,
        /// A video m-line.
        video: bool,
    },
}

/// Connection state, as a peer's thread last published it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// ICE and DTLS came up.
    pub connected: bool,
    /// From `add_peer` to connected.
    pub connect_time: Option<Duration>,
    /// ICE went `Disconnected` at some point.
    pub disconnected: bool,
    /// The peer was closed (or its fleet stopped).
    pub closed: bool,
}

/// One received source stream (a publisher's audio or video, however the SFU rewrote it).
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// The publisher's source id ([`PeerHandle::source_id`]).
    pub source: u32,
    /// Audio or video.
    pub kind: StreamKind,
    /// Packets received, duplicates included.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Keyframes received (their first packets).
    pub keyframes: u64,
    /// Loss from the stamp's sequence numbers.
    pub loss: LossTracker,
    /// One-way latency, send stamp to arrival at this peer's socket.
    pub latency: LatencyHistogram,
    /// First packet's arrival.
    pub first_at: Instant,
    /// Last packet's arrival.
    pub last_at: Instant,
    /// Arrival of the first packet of the first keyframe (video: the first decodable frame).
    pub first_keyframe_at: Option<Instant>,
    /// What arrived within the fleet's window, and what of the packets sent in it.
    pub window: WindowedRx,
}

/// A peer's statistics at one moment.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// The peer's label.
    pub name: String,
    /// Its UDP socket.
    pub local_addr: SocketAddr,
    /// The source id of the streams it publishes.
    pub source_id: u32,
    /// When it was added.
    pub created_at: Instant,
    /// Added → ICE+DTLS connected.
    pub connect_time: Option<Duration>,
    /// When the first stamped media packet arrived.
    pub first_media_at: Option<Instant>,
    /// Added → first stamped media packet (the join time of a receiving peer).
    pub join_time: Option<Duration>,
    /// Per received source stream, by (source, kind).
    pub received: Vec<StreamReport>,
    /// What its audio source sent.
    pub sent_audio: crate::media::SourceCounts,
    /// What its video source sent (simulcast: the top layer).
    pub sent_video: crate::media::SourceCounts,
    /// Audio packets it sent within the fleet's window.
    pub sent_audio_in_window: u64,
    /// Video packets it sent within the fleet's window (every simulcast layer).
    pub sent_video_in_window: u64,
    /// Packets it sent within the fleet's window by stamp source and kind: one entry per
    /// stream, each simulcast layer its own ([`crate::media::layer_source`]).
    pub sent_in_window_by_source: Vec<(u32, StreamKind, u64)>,
    /// How late media was written relative to its schedule (the generator's own lag).
    pub send_lag: LatencyHistogram,
    /// NACKs this peer sent (str0m ingress stats).
    pub nacks_sent: u64,
    /// PLIs this peer sent.
    pub plis_sent: u64,
    /// FIRs this peer sent.
    pub firs_sent: u64,
    /// NACKs this peer received (str0m egress stats).
    pub nacks_received: u64,
    /// PLIs this peer received.
    pub plis_received: u64,
    /// FIRs this peer received.
    pub firs_received: u64,
    /// RTP packets without a stamp.
    pub unstamped: u64,
    /// Datagrams the socket refused (full buffer, etc.).
    pub send_errors: u64,
    /// Datagrams its socket sent (media, RTCP, STUN, DTLS), whole run.
    pub udp_datagrams_sent: u64,
    /// Their UDP payload bytes (what crosses the wire to the server, less IP/UDP headers).
    pub udp_bytes_sent: u64,
    /// The latest round-trip time str0m measured.
    pub rtt: Option<Duration>,
    /// Errors str0m or the socket returned (the first 32).
    pub errors: Vec<String>,
}

impl PeerReport {
    /// Every received stream's latency, merged.
    pub fn latency(&self, kind: Option<StreamKind>) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for s in self
            .received
            .iter()
            .filter(|s| kind.is_none_or(|k| s.kind == k))
        {
            h.merge(&s.latency);
        }
        h
    }

    /// Every received stream's loss, added up.
    pub fn loss(&self, kind: Option<StreamKind>) -> LossSummary {
        let mut total = LossSummary::default();
        for s in self
            .received
            .iter()
            .filter(|s| kind.is_none_or(|k| s.kind == k))
        {
            total.add(&s.loss.summary());
        }
        total
    }

    /// Packets received over all streams.
    pub fn packets_received(&self) -> u64 {
        self.received.iter().map(|s| s.packets).sum()
    }

    /// Packets sent (audio + video).
    pub fn packets_sent(&self) -> u64 {
        self.sent_audio.packets + self.sent_video.packets
    }

    /// Packets of `kind` it sent within the fleet's window.
    pub fn sent_in_window(&self, kind: StreamKind) -> u64 {
        match kind {
            StreamKind::Audio => self.sent_audio_in_window,
            StreamKind::Video => self.sent_video_in_window,
        }
    }

    /// Packets that arrived within the fleet's window, over all streams.
    pub fn arrived_in_window(&self) -> u64 {
        self.received.iter().map(|s| s.window.arrived).sum()
    }

    /// Latency of the packets sent within the fleet's window, over all streams.
    pub fn window_latency(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for s in &self.received {
            h.merge(&s.window.latency);
        }
        h
    }

    /// Loss of the packets sent within the fleet's window, over all streams. `sent(source,
    /// kind)`: how many its publisher sent in the window, if known (see
    /// [`WindowedRx::loss`]).
    pub fn window_loss(&self, sent: impl Fn(u32, StreamKind) -> Option<u64>) -> LossSummary {
        let mut total = LossSummary::default();
        for s in &self.received {
            total.add(&s.window.loss(sent(s.source, s.kind)));
        }
        total
    }
}

/// The fleet's measurement window, shared with every peer: two atomics read per packet.
#[derive(Debug)]
pub(crate) struct SharedWindow {
    start_ns: AtomicU64,
    end_ns: AtomicU64,
}

impl SharedWindow {
    fn new() -> Self {
        Self {
            start_ns: AtomicU64::new(Window::NONE.start_ns),
            end_ns: AtomicU64::new(Window::NONE.end_ns),
        }
    }

    pub(crate) fn load(&self) -> Window {
        Window {
            start_ns: self.start_ns.load(Ordering::Relaxed),
            end_ns: self.end_ns.load(Ordering::Relaxed),
        }
    }

    fn store(&self, w: Window) {
        // The end first: a reader between the two stores sees a window that starts later
        // than it should (nothing yet), never one that ends later.
        self.end_ns.store(w.end_ns, Ordering::Relaxed);
        self.start_ns.store(w.start_ns, Ordering::Relaxed);
    }
}

pub(crate) enum Cmd {
    Add(usize, Box<FleetPeer>),
    Peer(usize, PeerCmd),
    Shutdown,
}

type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

pub(crate) enum PeerCmd {
    CreateOffer(OfferKind, Reply<String>),
    AcceptAnswer(String, Reply<()>),
    AcceptOffer(String, Reply<String>),
    Stats(oneshot::Sender<PeerReport>),
    Frames(oneshot::Sender<FrameLog>),
    Close(Option<oneshot::Sender<()>>),
}

/// The control side of one fleet thread.
struct ThreadLink {
    commands: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    tid: Option<u32>,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl ThreadLink {
    fn send(&self, cmd: Cmd) -> anyhow::Result<()> {
        self.commands
            .send(cmd)
            .map_err(|_| anyhow!("the fleet thread has stopped"))?;
        self.waker.wake().context("waking the fleet thread")
    }
}

struct FleetInner {
    config: FleetConfig,
    threads: Vec<Arc<ThreadLink>>,
    next_thread: AtomicUsize,
    next_peer: AtomicUsize,
    next_source: AtomicU32,
    window: Arc<SharedWindow>,
}

impl Drop for FleetInner {
    fn drop(&mut self) {
        for t in &self.threads {
            let _ = t.send(Cmd::Shutdown);
        }
        for t in &self.threads {
            let handle = t.join.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }
}

/// A running fleet. Cloning shares it; the threads stop (closing their peers) when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<FleetInner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("threads", &self.inner.threads.len())
            .field("bind_ip", &self.inner.config.bind_ip)
            .finish()
    }
}

impl Fleet {
    /// Starts `config.threads` threads (at least one).
    pub fn start(config: FleetConfig) -> anyhow::Result<Fleet> {
        sfumato_testkit::init_crypto();
        let mut threads = Vec::new();
        for i in 0..config.threads.max(1) {
            let poll = Poll::new().context("creating a mio poll")?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating a waker")?);
            let (tx, rx) = mpsc::channel();
            let (tid_tx, tid_rx) = mpsc::channel();
            let runner = FleetThread {
                poll,
                commands: rx,
                peers: Default::default(),
            };
            let join = std::thread::Builder::new()
                .name(format!("fleet-{i}"))
                .spawn(move || {
                    let _ = tid_tx.send(cpu::current_tid());
                    runner.run();
                })
                .context("spawning a fleet thread")?;
            let tid = tid_rx.recv().ok().flatten();
            threads.push(Arc::new(ThreadLink {
                commands: tx,
                waker,
                tid,
                join: Mutex::new(Some(join)),
            }));
        }
        Ok(Fleet {
            inner: Arc::new(FleetInner {
                config,
                threads,
                next_thread: AtomicUsize::new(0),
                next_peer: AtomicUsize::new(0),
                next_source: AtomicU32::new(1),
                window: Arc::new(SharedWindow::new()),
            }),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }

    /// Sets the measurement window `[start, end)` of every peer, present and future: what
    /// the [`StreamReport::window`] figures and [`PeerReport::sent_in_window`] count. Set it
    /// before `start` (a packet sent while it changes may be counted by one side only).
    pub fn set_window(&self, start: Instant, end: Instant) {
        self.inner
            .window
            .store(Window::new(self.inner.config.epoch, start, end));
    }

    /// The measurement window ([`Window::NONE`] until one is set).
    pub fn window(&self) -> Window {
        self.inner.window.load()
    }

    /// Adds a peer connection: binds its socket, builds its str0m `Rtc` (this generates a
    /// DTLS certificate: ~ms of CPU on the calling thread) and hands it to a fleet thread
    /// (round-robin).
    pub fn add_peer(&self, config: PeerConfig) -> anyhow::Result<PeerHandle> {
        let fc = &self.inner.config;
        let socket = bind_socket(fc.bind_ip, fc.socket_buffer)?;
        let local_addr = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(config.ice_lite)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(fc.stats_interval))
            .build(now);
        let candidate =
            Candidate::host(local_addr, "udp").map_err(|e| anyhow!("host candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let source_id = self.inner.next_source.fetch_add(1, Ordering::Relaxed);
        let id = self.inner.next_peer.fetch_add(1, Ordering::Relaxed);
        let (state_tx, state_rx) = watch::channel(PeerState::default());
        let peer = FleetPeer::new(
            config.name.clone(),
            rtc,
            mio::net::UdpSocket::from_std(socket),
            local_addr,
            fc.epoch,
            self.inner.window.clone(),
            source_id,
            config.publish,
            config.frame_log,
            state_tx,
            now,
        );
        let n = self.inner.next_thread.fetch_add(1, Ordering::Relaxed) % self.inner.threads.len();
        let thread = self.inner.threads[n].clone();
        thread.send(Cmd::Add(id, Box::new(peer)))?;
        Ok(PeerHandle {
            name: config.name,
            id,
            local_addr,
            source_id,
            thread,
            state: state_rx,
            closed: false,
        })
    }

    /// CPU time each fleet thread has used so far (sample before and after a run; see
    /// [`FleetCpu::busiest_since`]).
    pub fn cpu_time(&self) -> FleetCpu {
        FleetCpu {
            per_thread: self
                .inner
                .threads
                .iter()
                .map(|t| t.tid.and_then(cpu::thread_cpu_time).unwrap_or_default())
                .collect(),
        }
    }
}

fn bind_socket(ip: IpAddr, buffer: usize) -> anyhow::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("creating a UDP socket")?;
    // Best effort: the kernel caps these at its maximum.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding a UDP socket on {addr}"))?;
    Ok(socket.into())
}

/// One peer connection in a fleet. Dropping it closes the peer (without waiting).
pub struct PeerHandle {
    name: String,
    id: usize,
    local_addr: SocketAddr,
    source_id: u32,
    thread: Arc<ThreadLink>,
    state: watch::Receiver<PeerState>,
    closed: bool,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .field("source_id", &self.source_id)
            .finish()
    }
}

impl PeerHandle {
    /// Its label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its UDP socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The source id in the stamps of everything it publishes.
    pub fn source_id(&self) -> u32 {
        self.source_id
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> PeerCmd) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.thread.send(Cmd::Peer(self.id, make(tx)))?;
        rx.await
            .map_err(|_| anyhow!("peer {} is closed", self.name))?
    }

    /// Creates an SDP offer (one pending at a time).
    pub async fn create_offer(&self, kind: OfferKind) -> anyhow::Result<String> {
        self.call(|r| PeerCmd::CreateOffer(kind, r)).await
    }

    /// Applies the answer to the pending offer. A publisher starts sending once connected.
    pub async fn accept_answer(&self, sdp: &str) -> anyhow::Result<()> {
        let sdp = sdp.to_string();
        self.call(|r| PeerCmd::AcceptAnswer(sdp, r)).await
    }

    /// Accepts a remote offer (first or renegotiated) and returns the answer.
    pub async fn accept_offer(&self, sdp: &str) -> anyhow::Result<String> {
        let sdp = sdp.to_string();
        self.call(|r| PeerCmd::AcceptOffer(sdp, r)).await
    }

    /// The latest connection state.
    pub fn state(&self) -> PeerState {
        self.state.borrow().clone()
    }

    /// Waits until ICE and DTLS are up; fails after `timeout` or if the peer closes first.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let mut rx = self.state.clone();
        let state = tokio::time::timeout(timeout, rx.wait_for(|s| s.connected || s.closed))
            .await
            .map_err(|_| anyhow!("peer {} did not connect within {timeout:?}", self.name))?
            .map_err(|_| anyhow!("peer {} stopped", self.name))?
            .clone();
        if !state.connected {
            return Err(anyhow!("peer {} closed before connecting", self.name));
        }
        Ok(state.connect_time.unwrap_or_default())
    }

    /// A snapshot of its statistics.
    pub async fn stats(&self) -> anyhow::Result<PeerReport> {
        let (tx, rx) = oneshot::channel();
        self.thread.send(Cmd::Peer(self.id, PeerCmd::Stats(tx)))?;
        rx.await
            .map_err(|_| anyhow!("peer {} is closed", self.name))
    }

    /// Its frame log so far (empty unless [`PeerConfig::frame_log`]).
    pub async fn frames(&self) -> anyhow::Result<FrameLog> {
        let (tx, rx) = oneshot::channel();
        self.thread.send(Cmd::Peer(self.id, PeerCmd::Frames(tx)))?;
        rx.await
            .map_err(|_| anyhow!("peer {} is closed", self.name))
    }

    /// Closes it (RTCP BYE, DTLS close_notify) and waits until its thread has let it go.
    pub async fn close(mut self) {
        self.closed = true;
        let (tx, rx) = oneshot::channel();
        if self
            .thread
            .send(Cmd::Peer(self.id, PeerCmd::Close(Some(tx))))
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.thread.send(Cmd::Peer(self.id, PeerCmd::Close(None)));
        }
    }
}
