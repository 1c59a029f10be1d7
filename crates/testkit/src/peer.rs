//! One WebRTC peer connection on str0m in RTP mode, driven by its own thread with its own
//! UDP socket on 127.0.0.1, recording everything it sends and receives.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use sfumato_core::peer::channel_configs;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::oneshot;

use crate::media::{AudioSource, VideoSource, SIMULCAST_RIDS, VP8_SIMULCAST_FIXTURES};
use crate::rtc_util::{negotiated_pt, random_u64};
use crate::wait::poll_until;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Audio (Opus).
    Audio,
    /// Video (VP8).
    Video,
}

impl Kind {
    /// The protocol's name for it: `"audio"` or `"video"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

impl From<MediaKind> for Kind {
    fn from(k: MediaKind) -> Self {
        if k.is_audio() {
            Kind::Audio
        } else {
            Kind::Video
        }
    }
}

/// An RTP packet this client sent (as handed to str0m).
#[derive(Debug, Clone)]
pub struct SentPacket {
    /// Media kind.
    pub kind: Kind,
    /// The mid of the transceiver it was sent on.
    pub mid: String,
    /// The simulcast layer's rid, `None` without simulcast.
    pub rid: Option<String>,
    /// Sending SSRC.
    pub ssrc: u32,
    /// Payload type.
    pub pt: u8,
    /// RTP sequence number (16 bits).
    pub seq: u16,
    /// Extended sequence number.
    pub ext_seq: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// The RTP payload.
    pub payload: Arc<[u8]>,
    /// When it was written.
    pub sent_at: Instant,
}

/// An RTP packet this client received (after SRTP, RTX repair and duplicate filtering).
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// Media kind of the receiving transceiver, if known.
    pub kind: Option<Kind>,
    /// The mid of the receiving transceiver, if known.
    pub mid: Option<String>,
    /// SSRC of the stream.
    pub ssrc: u32,
    /// Payload type.
    pub pt: u8,
    /// RTP sequence number (16 bits).
    pub seq: u16,
    /// Extended sequence number (str0m's rollover-extended value).
    pub ext_seq: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// The RTP payload.
    pub payload: Arc<[u8]>,
    /// Arrival time.
    pub arrival: Instant,
}

/// Counters of one peer connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounts {
    /// Audio packets sent.
    pub sent_audio: u64,
    /// Video packets sent.
    pub sent_video: u64,
    /// Video frames sent.
    pub sent_video_frames: u64,
    /// Audio packets received.
    pub received_audio: u64,
    /// Video packets received.
    pub received_video: u64,
    /// Packets received on a mid/ssrc the client could not map to a kind.
    pub received_unknown: u64,
    /// Keyframe requests (PLI/FIR) received from the server.
    pub keyframe_requests: u64,
    /// Per simulcast layer sent, lowest first (empty without simulcast).
    pub sent_layers: Vec<LayerCounts>,
}

/// Counters of one simulcast layer sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerCounts {
    /// The layer's rid.
    pub rid: String,
    /// The layer's SSRC.
    pub ssrc: u32,
    /// Frame width in pixels.
    pub width: u16,
    /// Frame height in pixels.
    pub height: u16,
    /// RTP packets sent.
    pub packets: u64,
    /// RTP payload bytes sent.
    pub bytes: u64,
    /// Frames sent.
    pub frames: u64,
    /// Key frames sent.
    pub keyframes: u64,
    /// Keyframe requests that restarted this layer (naming its rid, or no rid).
    pub keyframe_requests: u64,
}

/// Connection state of a peer connection.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// ICE+DTLS connected (str0m `Event::Connected`) at some point.
    pub connected: bool,
    /// The last ICE connection state seen.
    pub ice_state: Option<String>,
    /// ICE went `Disconnected` after connecting.
    pub disconnected: bool,
    /// The driving thread has ended.
    pub closed: bool,
    /// Errors str0m returned (the peer keeps running after input errors).
    pub errors: Vec<String>,
    /// The remote address of the last datagram sent.
    pub remote_addr: Option<SocketAddr>,
}

#[derive(Default)]
struct Shared {
    sent: Vec<SentPacket>,
    received: Vec<ReceivedPacket>,
    counts: PeerCounts,
    status: PeerStatus,
    /// Data channels announced open.
    channels_open: usize,
    /// Messages received on data channels.
    data: Vec<Vec<u8>>,
}

/// What media a created offer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferSpec {
    /// Direction of an audio m-line, if any.
    pub audio: Option<Direction>,
    /// Direction of a video m-line, if any.
    pub video: Option<Direction>,
    /// A sending video m-line sends three simulcast layers ([`SIMULCAST_RIDS`], lowest
    /// first in `a=simulcast:send`), each looping its own fixture.
    pub simulcast: bool,
    /// An `m=application` section with the two data channels of docs/protocol.md
    /// ("Data messages"): streams 0 (reliable) and 1 (lossy), negotiated out of band.
    pub data: bool,
}

impl OfferSpec {
    /// `sendonly` audio + video (a publisher).
    pub fn publish() -> Self {
        Self {
            audio: Some(Direction::SendOnly),
            video: Some(Direction::SendOnly),
            simulcast: false,
            data: false,
        }
    }

    /// `sendonly` audio + video in three simulcast layers (a simulcast publisher).
    pub fn publish_simulcast() -> Self {
        Self {
            simulcast: true,
            ..Self::publish()
        }
    }

    /// `recvonly` audio + video (a player).
    pub fn play() -> Self {
        Self {
            audio: Some(Direction::RecvOnly),
            video: Some(Direction::RecvOnly),
            simulcast: false,
            data: false,
        }
    }

    /// The data channels alone (a participant that sends no media).
    pub fn data() -> Self {
        Self {
            audio: None,
            video: None,
            simulcast: false,
            data: true,
        }
    }
}

/// Which audio the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioPayload {
    /// Real Opus packets (a 440 Hz sine) from the committed fixture, looped.
    #[default]
    Fixture,
    /// The 3-byte Opus silence frame, repeated.
    Silence,
}

/// Options of a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// A label for logs.
    pub name: String,
    /// Which audio payloads to send.
    pub audio: AudioPayload,
    /// The local address to bind and announce as the host candidate (`None`: 127.0.0.1).
    /// Only loopback or an address of a namespace/veth pair the test created itself.
    pub bind_ip: Option<IpAddr>,
}

enum Cmd {
    CreateOffer {
        spec: OfferSpec,
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    StopSending {
        reply: oneshot::Sender<anyhow::Result<Option<String>>>,
    },
    AcceptAnswer {
        sdp: String,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    AcceptOffer {
        sdp: String,
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    RequestKeyframe {
        mid: String,
        rid: Option<String>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Inject {
        datagrams: Vec<Vec<u8>>,
        reply: oneshot::Sender<anyhow::Result<usize>>,
    },
    WriteData {
        reliable: bool,
        frame: Vec<u8>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Close,
}

/// A WebRTC peer connection (str0m, RTP mode) with its own UDP socket on 127.0.0.1 and its
/// own driving thread. Dropping it closes it.
pub struct Peer {
    name: String,
    local_addr: SocketAddr,
    cmd: mpsc::Sender<Cmd>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Peer {
    /// Binds a UDP socket on 127.0.0.1:0 (or `options.bind_ip`) and starts the driving thread.
    pub fn new(options: PeerOptions) -> anyhow::Result<Self> {
        crate::init_crypto();
        let ip = options.bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding the client UDP socket on {ip}"))?;
        let local_addr = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let candidate =
            Candidate::host(local_addr, "udp").map_err(|e| anyhow!("host candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = mpsc::channel();
        let driver = Driver {
            name: options.name.clone(),
            rtc,
            socket,
            local_addr,
            cmds: rx,
            shared: shared.clone(),
            next_timeout: now,
            pending: None,
            channels: None,
            added: Vec::new(),
            senders: Vec::new(),
            rx_map: HashMap::new(),
            audio_payload: options.audio,
            connected: false,
            remote: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("peer-{}", options.name))
            .spawn(move || driver.run())
            .context("spawning the peer thread")?;
        Ok(Self {
            name: options.name,
            local_addr,
            cmd: tx,
            shared,
            thread: Some(thread),
        })
    }

    /// The peer's label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local UDP address (127.0.0.1:port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Cmd,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .map_err(|_| anyhow!("peer {} has stopped", self.name))?;
        rx.await
            .map_err(|_| anyhow!("peer {} stopped before answering", self.name))?
    }

    /// Creates an SDP offer with the given m-lines (only once per peer; later changes go
    /// through [`Peer::stop_sending`]).
    pub async fn create_offer(&self, spec: OfferSpec) -> anyhow::Result<String> {
        self.call(|reply| Cmd::CreateOffer { spec, reply }).await
    }

    /// Re-offers with every sending m-line stopped (unpublish). `None` if nothing was sent.
    pub async fn stop_sending(&self) -> anyhow::Result<Option<String>> {
        self.call(|reply| Cmd::StopSending { reply }).await
    }

    /// Applies the remote answer to the pending offer. Sending m-lines start sending media
    /// once ICE and DTLS are up.
    pub async fn accept_answer(&self, sdp: &str) -> anyhow::Result<()> {
        let sdp = sdp.to_string();
        self.call(|reply| Cmd::AcceptAnswer { sdp, reply }).await
    }

    /// Accepts a remote offer and returns the answer.
    pub async fn accept_offer(&self, sdp: &str) -> anyhow::Result<String> {
        let sdp = sdp.to_string();
        self.call(|reply| Cmd::AcceptOffer { sdp, reply }).await
    }

    /// Sends a PLI for the stream received on `mid`.
    pub async fn request_keyframe(&self, mid: &str) -> anyhow::Result<()> {
        let mid = mid.to_string();
        self.call(|reply| Cmd::RequestKeyframe {
            mid,
            rid: None,
            reply,
        })
        .await
    }

    /// Sends a PLI for simulcast layer `rid` of the stream received on `mid`.
    pub async fn request_layer_keyframe(&self, mid: &str, rid: &str) -> anyhow::Result<()> {
        let (mid, rid) = (mid.to_string(), Some(rid.to_string()));
        self.call(|reply| Cmd::RequestKeyframe { mid, rid, reply })
            .await
    }

    /// Sends raw datagrams from this peer's own socket to the remote address ICE selected
    /// (for robustness tests: garbage from a known 5-tuple). Returns how many were sent.
    /// Writes `frame` on the reliable or the lossy data channel (an error if it is not
    /// open, or its send buffer is full).
    pub async fn write_data(&self, reliable: bool, frame: Vec<u8>) -> anyhow::Result<()> {
        self.call(|reply| Cmd::WriteData {
            reliable,
            frame,
            reply,
        })
        .await
    }

    /// How many of its data channels are open.
    pub fn channels_open(&self) -> usize {
        lock(&self.shared).channels_open
    }

    /// Every message received on its data channels.
    pub fn data_received(&self) -> Vec<Vec<u8>> {
        lock(&self.shared).data.clone()
    }

    pub async fn inject(&self, datagrams: Vec<Vec<u8>>) -> anyhow::Result<usize> {
        self.call(|reply| Cmd::Inject { datagrams, reply }).await
    }

    /// The remote address the peer last sent to (the server's worker socket), if any.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared).status.remote_addr
    }

    /// Connection state.
    pub fn status(&self) -> PeerStatus {
        lock(&self.shared).status.clone()
    }

    /// Whether ICE+DTLS came up.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared).status.connected
    }

    /// Waits (polling) until connected, or fails after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        poll_until(timeout, || self.is_connected())
            .await
            .with_context(|| {
                format!(
                    "peer {} did not connect within {timeout:?}: {:?}",
                    self.name,
                    self.status()
                )
            })
    }

    /// The counters.
    pub fn counts(&self) -> PeerCounts {
        lock(&self.shared).counts.clone()
    }

    /// Packets received of `kind`.
    pub fn received_count(&self, kind: Kind) -> u64 {
        let s = lock(&self.shared);
        match kind {
            Kind::Audio => s.counts.received_audio,
            Kind::Video => s.counts.received_video,
        }
    }

    /// Packets sent of `kind`.
    pub fn sent_count(&self, kind: Kind) -> u64 {
        let s = lock(&self.shared);
        match kind {
            Kind::Audio => s.counts.sent_audio,
            Kind::Video => s.counts.sent_video,
        }
    }

    /// All packets sent so far, in order.
    pub fn sent(&self) -> Vec<SentPacket> {
        lock(&self.shared).sent.clone()
    }

    /// Packets sent of `kind`, in order.
    pub fn sent_of(&self, kind: Kind) -> Vec<SentPacket> {
        lock(&self.shared)
            .sent
            .iter()
            .filter(|p| p.kind == kind)
            .cloned()
            .collect()
    }

    /// All packets received so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedPacket> {
        lock(&self.shared).received.clone()
    }

    /// Packets received of `kind`, in arrival order.
    pub fn received_of(&self, kind: Kind) -> Vec<ReceivedPacket> {
        lock(&self.shared)
            .received
            .iter()
            .filter(|p| p.kind == Some(kind))
            .cloned()
            .collect()
    }

    /// Packets received on transceiver `mid`, in arrival order.
    pub fn received_on(&self, mid: &str) -> Vec<ReceivedPacket> {
        lock(&self.shared)
            .received
            .iter()
            .filter(|p| p.mid.as_deref() == Some(mid))
            .cloned()
            .collect()
    }

    /// Stops the driving thread (sending DTLS close_notify / RTCP BYE first) and waits for it.
    pub fn close(&mut self) {
        let _ = self.cmd.send(Cmd::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.close();
    }
}

/// One stream sent: a track, or one simulcast layer of it.
struct SendTrack {
    mid: Mid,
    /// The simulcast layer's rid and its index in `PeerCounts::sent_layers`.
    layer: Option<(Rid, usize)>,
    kind: Kind,
    pt: Pt,
    ssrc: Ssrc,
    seq: u64,
    video: Option<VideoSource>,
    audio: Option<AudioSource>,
    stopped: bool,
}

struct Driver {
    name: String,
    rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    cmds: mpsc::Receiver<Cmd>,
    shared: Arc<Mutex<Shared>>,
    next_timeout: Instant,
    pending: Option<SdpPendingOffer>,
    /// The data channels (reliable, lossy; the third, lossy and ordered, is offered and not
    /// written on), once offered.
    channels: Option<(ChannelId, ChannelId)>,
    /// Media added by our offers.
    added: Vec<AddedMedia>,
    senders: Vec<SendTrack>,
    rx_map: HashMap<Ssrc, (Option<Mid>, Option<Kind>)>,
    audio_payload: AudioPayload,
    connected: bool,
    remote: Option<SocketAddr>,
}

/// An m-line added by one of our offers.
#[derive(Debug, Clone, Copy)]
struct AddedMedia {
    mid: Mid,
    kind: Kind,
    dir: Direction,
    /// Sends the [`SIMULCAST_RIDS`] layers.
    simulcast: bool,
}

/// The longest the driving loop blocks, so commands are picked up promptly.
const COMMAND_POLL: Duration = Duration::from_millis(5);

impl Driver {
    fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        self.drain();
        loop {
            let mut closing = false;
            loop {
                match self.cmds.try_recv() {
                    Ok(Cmd::Close) => {
                        closing = true;
                        break;
                    }
                    Ok(cmd) => self.handle_cmd(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                }
            }
            if closing {
                self.shutdown();
                break;
            }
            let now = Instant::now();
            if now >= self.next_timeout {
                self.timeout(now);
            }
            self.send_media(now);

            let mut deadline = self.next_timeout.min(now + COMMAND_POLL);
            if let Some(due) = self.next_media_due(now) {
                deadline = deadline.min(due);
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if self.socket.set_read_timeout(Some(wait)).is_err() {
                self.error("set_read_timeout failed".into());
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    match (&buf[..n]).try_into() {
                        Ok(contents) => {
                            let input = Input::Receive(
                                now,
                                Receive {
                                    proto: Protocol::Udp,
                                    source,
                                    destination: self.local_addr,
                                    contents,
                                },
                            );
                            if let Err(e) = self.rtc.handle_input(input) {
                                self.error(format!("handle_input: {e}"));
                            }
                            self.drain();
                        }
                        Err(_) => {
                            // Not STUN/DTLS/RTP: ignore, like a browser would.
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => {
                    // ICMP port unreachable after the server went away, etc.
                    if e.kind() != ErrorKind::ConnectionRefused {
                        self.error(format!("recv_from: {e}"));
                    }
                }
            }
        }
        lock(&self.shared).status.closed = true;
    }

    fn error(&self, msg: String) {
        tracing::debug!(peer = %self.name, "{msg}");
        let mut s = lock(&self.shared);
        if s.status.errors.len() < 100 {
            s.status.errors.push(msg);
        }
    }

    fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.error(format!("handle_input(timeout): {e}"));
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            if !self.rtc.is_alive() {
                self.next_timeout = Instant::now() + Duration::from_secs(3600);
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                    if self.remote != Some(t.destination) {
                        self.remote = Some(t.destination);
                        lock(&self.shared).status.remote_addr = Some(t.destination);
                    }
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    self.error(format!("poll_output: {e}"));
                    self.next_timeout = Instant::now() + Duration::from_millis(10);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                lock(&self.shared).status.connected = true;
            }
            Event::IceConnectionStateChange(state) => {
                let mut s = lock(&self.shared);
                s.status.ice_state = Some(format!("{state:?}"));
                if state == IceConnectionState::Disconnected && s.status.connected {
                    s.status.disconnected = true;
                }
            }
            Event::KeyframeRequest(req) => {
                let mut s = lock(&self.shared);
                s.counts.keyframe_requests += 1;
                // A request naming a rid restarts that layer only; one without, all layers.
                for t in &mut self.senders {
                    let rid = t.layer.map(|(rid, _)| rid);
                    if t.mid != req.mid || (req.rid.is_some() && req.rid != rid) {
                        continue;
                    }
                    if let Some(v) = &mut t.video {
                        v.request_keyframe();
                    }
                    if let Some(c) = t.layer.and_then(|(_, i)| s.counts.sent_layers.get_mut(i)) {
                        c.keyframe_requests += 1;
                    }
                }
            }
            Event::ChannelOpen(..) => lock(&self.shared).channels_open += 1,
            Event::ChannelData(d) => lock(&self.shared).data.push(d.data),
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let (mid, kind) = match self.rx_map.get(&ssrc) {
                    Some(v) if v.0.is_some() => *v,
                    _ => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let kind = mid
                            .and_then(|m| self.rtc.media(m))
                            .map(|m| Kind::from(m.kind()));
                        self.rx_map.insert(ssrc, (mid, kind));
                        (mid, kind)
                    }
                };
                let rec = ReceivedPacket {
                    kind,
                    mid: mid.map(|m| m.to_string()),
                    ssrc: *ssrc,
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    ext_seq: *p.seq_no,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    payload: p.payload.clone(),
                    arrival: p.timestamp,
                };
                let mut s = lock(&self.shared);
                match kind {
                    Some(Kind::Audio) => s.counts.received_audio += 1,
                    Some(Kind::Video) => s.counts.received_video += 1,
                    None => s.counts.received_unknown += 1,
                }
                s.received.push(rec);
            }
            _ => {}
        }
    }

    fn handle_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::CreateOffer { spec, reply } => {
                let r = self.create_offer(spec);
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::StopSending { reply } => {
                let r = self.stop_sending();
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::AcceptAnswer { sdp, reply } => {
                let r = self.accept_answer(&sdp);
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::AcceptOffer { sdp, reply } => {
                let r = self.accept_offer(&sdp);
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::RequestKeyframe { mid, rid, reply } => {
                let r = match self
                    .rtc
                    .direct_api()
                    .stream_rx_by_mid(mid.as_str().into(), rid.as_deref().map(Rid::from))
                {
                    Some(s) => {
                        s.request_keyframe(KeyframeRequestKind::Pli);
                        Ok(())
                    }
                    None => Err(anyhow!("no receive stream on mid {mid} rid {rid:?}")),
                };
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::Inject { datagrams, reply } => {
                let r = match self.remote {
                    Some(dest) => Ok(datagrams
                        .iter()
                        .filter(|d| self.socket.send_to(d, dest).is_ok())
                        .count()),
                    None => Err(anyhow!("no remote address yet")),
                };
                let _ = reply.send(r);
            }
            Cmd::WriteData {
                reliable,
                frame,
                reply,
            } => {
                let r = match self.channels {
                    Some((r, l)) => {
                        let id = if reliable { r } else { l };
                        match self.rtc.channel(id) {
                            Some(mut ch) => match ch.write(true, &frame) {
                                Ok(true) => Ok(()),
                                Ok(false) => Err(anyhow!("the data channel's buffer is full")),
                                Err(e) => Err(anyhow!("data channel write: {e}")),
                            },
                            None => Err(anyhow!("the data channel is not open")),
                        }
                    }
                    None => Err(anyhow!("no data channels offered")),
                };
                self.drain();
                let _ = reply.send(r);
            }
            Cmd::Close => {}
        }
    }

    fn create_offer(&mut self, spec: OfferSpec) -> anyhow::Result<String> {
        if self.pending.is_some() {
            bail!("an offer is already pending");
        }
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        if let Some(dir) = spec.audio {
            added.push(AddedMedia {
                mid: api.add_media(MediaKind::Audio, dir, None, None, None),
                kind: Kind::Audio,
                dir,
                simulcast: false,
            });
        }
        if let Some(dir) = spec.video {
            let simulcast = spec.simulcast && dir.is_sending();
            let layers = simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in SIMULCAST_RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            added.push(AddedMedia {
                mid: api.add_media(MediaKind::Video, dir, None, None, layers),
                kind: Kind::Video,
                dir,
                simulcast,
            });
        }
        if spec.data && self.channels.is_none() {
            let [reliable, lossy, _] = channel_configs().map(|c| api.add_channel_with_config(c));
            self.channels = Some((reliable, lossy));
        }
        let (offer, pending) = api.apply().context("the offer has no changes")?;
        self.added.extend(added);
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    fn stop_sending(&mut self) -> anyhow::Result<Option<String>> {
        if self.pending.is_some() {
            bail!("an offer is already pending");
        }
        let mids: Vec<Mid> = self
            .added
            .iter()
            .filter(|a| a.dir.is_sending())
            .map(|a| a.mid)
            .collect();
        for t in &mut self.senders {
            t.stopped = true;
        }
        if mids.is_empty() {
            return Ok(None);
        }
        let mut api = self.rtc.sdp_api();
        for m in mids {
            api.stop_media(m);
        }
        match api.apply() {
            Some((offer, pending)) => {
                self.pending = Some(pending);
                Ok(Some(offer.to_sdp_string()))
            }
            None => Ok(None),
        }
    }

    fn accept_answer(&mut self, sdp: &str) -> anyhow::Result<()> {
        let pending = self.pending.take().context("no pending offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).context("parsing the SDP answer")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("accepting the SDP answer")?;
        self.setup_senders()
    }

    fn accept_offer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).context("parsing the SDP offer")?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .context("accepting the SDP offer")?;
        Ok(answer.to_sdp_string())
    }

    fn setup_senders(&mut self) -> anyhow::Result<()> {
        for a in self.added.clone() {
            if !a.dir.is_sending() || self.senders.iter().any(|t| t.mid == a.mid) {
                continue;
            }
            let codec = match a.kind {
                Kind::Audio => Codec::Opus,
                Kind::Video => Codec::Vp8,
            };
            let Some(media) = self.rtc.media(a.mid) else {
                continue;
            };
            if media.disabled() {
                continue;
            }
            let mid = a.mid;
            let pt = negotiated_pt(&self.rtc, mid, codec)
                .or_else(|| {
                    let cfg = self.rtc.codec_config();
                    cfg.find(|p| p.spec().codec == codec).map(|p| p.pt())
                })
                .with_context(|| format!("no {codec:?} payload type negotiated on mid {mid}"))?;
            if a.simulcast {
                for (rid, ivf) in SIMULCAST_RIDS.into_iter().zip(VP8_SIMULCAST_FIXTURES) {
                    self.add_layer_sender(mid, pt, Rid::from(rid), ivf)?;
                }
                continue;
            }
            let ssrc = self.tx_ssrc(mid, None)?;
            let r = random_u64();
            let seq = r % 20_000 + 1;
            let ts_base = (r >> 16) as u32;
            let (video, audio) = match a.kind {
                Kind::Video => (
                    Some(VideoSource::from_fixture((r >> 48) as u16, ts_base)?),
                    None,
                ),
                Kind::Audio => (
                    None,
                    Some(match self.audio_payload {
                        AudioPayload::Fixture => AudioSource::from_fixture(ts_base)?,
                        AudioPayload::Silence => AudioSource::silence(ts_base),
                    }),
                ),
            };
            self.senders.push(SendTrack {
                mid,
                layer: None,
                kind: a.kind,
                pt,
                ssrc,
                seq,
                video,
                audio,
                stopped: false,
            });
        }
        Ok(())
    }

    /// The SSRC of the send stream of `mid` (and simulcast layer `rid`).
    fn tx_ssrc(&mut self, mid: Mid, rid: Option<Rid>) -> anyhow::Result<Ssrc> {
        let mut api = self.rtc.direct_api();
        match api.stream_tx_by_mid(mid, rid) {
            Some(stream) => Ok(stream.ssrc()),
            None => match rid {
                Some(rid) => bail!("no send stream for mid {mid} rid {rid}"),
                None => bail!("no send stream for mid {mid}"),
            },
        }
    }

    /// Adds the sender of one simulcast layer: its own SSRC, sequence numbers, timestamps
    /// and PictureIDs, looping the VP8 frames of `ivf`.
    fn add_layer_sender(&mut self, mid: Mid, pt: Pt, rid: Rid, ivf: &[u8]) -> anyhow::Result<()> {
        let ssrc = self.tx_ssrc(mid, Some(rid))?;
        let r = random_u64();
        let video = VideoSource::from_ivf(ivf, (r >> 48) as u16, (r >> 16) as u32)?;
        let (width, height) = video.size();
        let index = {
            let mut s = lock(&self.shared);
            s.counts.sent_layers.push(LayerCounts {
                rid: rid.to_string(),
                ssrc: *ssrc,
                width,
                height,
                ..Default::default()
            });
            s.counts.sent_layers.len() - 1
        };
        self.senders.push(SendTrack {
            mid,
            layer: Some((rid, index)),
            kind: Kind::Video,
            pt,
            ssrc,
            seq: r % 20_000 + 1,
            video: Some(video),
            audio: None,
            stopped: false,
        });
        Ok(())
    }

    fn next_media_due(&self, now: Instant) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        self.senders
            .iter()
            .filter(|t| !t.stopped)
            .filter_map(|t| {
                t.video
                    .as_ref()
                    .map(|v| v.next_due(now))
                    .or_else(|| t.audio.as_ref().map(|a| a.next_due(now)))
            })
            .min()
    }

    fn send_media(&mut self, now: Instant) {
        if !self.connected || !self.rtc.is_alive() {
            return;
        }
        let mut wrote = false;
        for i in 0..self.senders.len() {
            if self.senders[i].stopped {
                continue;
            }
            // Bounded: at most a few frames per pass even after a stall.
            for _ in 0..8 {
                let t = &mut self.senders[i];
                let mut batch: Vec<(u32, bool, Arc<[u8]>)> = Vec::new();
                let mut keyframe = false;
                if let Some(v) = &mut t.video {
                    let Some((ts, key, chunks)) = v.poll(now) else {
                        break;
                    };
                    keyframe = key;
                    for c in chunks {
                        batch.push((ts, c.marker, c.payload));
                    }
                } else if let Some(a) = &mut t.audio {
                    let Some((ts, payload)) = a.poll(now) else {
                        break;
                    };
                    batch.push((ts, false, payload));
                } else {
                    break;
                }
                let (mid, layer, pt, ssrc, kind) = (t.mid, t.layer, t.pt, t.ssrc, t.kind);
                let rid = layer.map(|(rid, _)| rid);
                let mut records = Vec::with_capacity(batch.len());
                for (ts, marker, payload) in batch {
                    let seq = self.senders[i].seq;
                    self.senders[i].seq += 1;
                    let mut api = self.rtc.direct_api();
                    let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
                        break;
                    };
                    let w = RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload.clone())
                        .marker(marker)
                        .nackable(kind == Kind::Video);
                    stream.write_rtp(w);
                    self.drain();
                    wrote = true;
                    records.push(SentPacket {
                        kind,
                        mid: mid.to_string(),
                        rid: rid.map(|r| r.to_string()),
                        ssrc: *ssrc,
                        pt: *pt,
                        seq: seq as u16,
                        ext_seq: seq,
                        timestamp: ts,
                        marker,
                        payload,
                        sent_at: now,
                    });
                }
                let mut s = lock(&self.shared);
                match kind {
                    Kind::Audio => s.counts.sent_audio += records.len() as u64,
                    Kind::Video => {
                        s.counts.sent_video += records.len() as u64;
                        s.counts.sent_video_frames += 1;
                    }
                }
                if let Some(c) = layer.and_then(|(_, l)| s.counts.sent_layers.get_mut(l)) {
                    c.packets += records.len() as u64;
                    c.bytes += records.iter().map(|r| r.payload.len() as u64).sum::<u64>();
                    c.frames += 1;
                    c.keyframes += u64::from(keyframe);
                }
                s.sent.extend(records);
            }
        }
        if wrote {
            // write_rtp only queues: a timeout pass sends the packets.
            self.timeout(Instant::now());
        }
    }

    fn shutdown(&mut self) {
        if self.rtc.is_alive() {
            if let Err(e) = self.rtc.close() {
                self.error(format!("close: {e}"));
            }
            for _ in 0..4 {
                self.drain();
                if !self.rtc.is_alive() {
                    break;
                }
                if let Err(_e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                    break;
                }
            }
            self.rtc.disconnect();
        }
    }
}
