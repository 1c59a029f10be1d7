//! One fleet peer: a str0m `Rtc` in RTP mode with its own UDP socket, its media sources and
//! the statistics of what it receives. Its fleet thread calls it; it never blocks.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sfumato_testkit::{negotiated_pt, random_u64};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::watch;

use super::{
    FrameArrival, FrameLog, OfferKind, PeerReport, PeerState, SharedWindow, StreamReport,
    FRAME_LOG_CAP,
};
use crate::media::{
    layer_source, nanos_since, AudioSource, MediaConfig, Stamp, StreamKind, VideoSource,
    SIMULCAST_RIDS, SIMULCAST_SHARES,
};
use crate::stats::{JoinTimer, LatencyHistogram, LossTracker, WindowedRx};

/// Errors kept per peer, so a misbehaving remote cannot grow memory.
const MAX_ERRORS: usize = 32;

enum Source {
    Audio(AudioSource),
    Video(VideoSource),
}

struct SendTrack {
    mid: Mid,
    /// The simulcast layer's rid and index (0 = lowest), `None` without simulcast.
    layer: Option<(Rid, usize)>,
    /// The source id its stamps carry ([`crate::media::layer_source`] for a layer).
    source_id: u32,
    kind: StreamKind,
    pt: Pt,
    /// Next RTP sequence number (extended; starts below 2^16 so the SRTP ROC starts at 0).
    seq: u64,
    source: Option<Source>,
    /// Packets written whose send time falls in the fleet's window.
    sent_in_window: u64,
}

/// What a peer knows about one received source stream.
struct RxStream {
    packets: u64,
    bytes: u64,
    keyframes: u64,
    loss: LossTracker,
    latency: LatencyHistogram,
    first_at: Instant,
    last_at: Instant,
    first_keyframe_at: Option<Instant>,
    window: WindowedRx,
}

/// Feedback counters from str0m's per-mid stats events (cumulative values, latest wins).
#[derive(Default, Clone, Copy)]
struct Feedback {
    nacks: u64,
    plis: u64,
    firs: u64,
}

pub(crate) struct FleetPeer {
    pub(crate) name: String,
    pub(crate) rtc: Rtc,
    pub(crate) socket: mio::net::UdpSocket,
    local_addr: SocketAddr,
    epoch: Instant,
    window: Arc<SharedWindow>,
    source_id: u32,
    publish: Option<MediaConfig>,
    pending: Option<SdpPendingOffer>,
    /// m-lines this peer's own offers added to send on.
    offered_send: Vec<(Mid, StreamKind)>,
    senders: Vec<SendTrack>,
    rx: HashMap<(u32, StreamKind), RxStream>,
    ingress: HashMap<Mid, Feedback>,
    egress: HashMap<Mid, Feedback>,
    plis_received: u64,
    firs_received: u64,
    unstamped: u64,
    send_errors: u64,
    udp_datagrams_sent: u64,
    udp_bytes_sent: u64,
    send_lag: LatencyHistogram,
    rtt: Option<Duration>,
    errors: Vec<String>,
    created_at: Instant,
    connected_at: Option<Instant>,
    join: JoinTimer,
    state: watch::Sender<PeerState>,
    /// Every received video frame, if asked for ([`super::PeerConfig::frame_log`]).
    frames: Option<FrameLog>,
    /// str0m's next timeout.
    pub(crate) next_timeout: Instant,
}

impl FleetPeer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        rtc: Rtc,
        socket: mio::net::UdpSocket,
        local_addr: SocketAddr,
        epoch: Instant,
        window: Arc<SharedWindow>,
        source_id: u32,
        publish: Option<MediaConfig>,
        frame_log: bool,
        state: watch::Sender<PeerState>,
        now: Instant,
    ) -> Self {
        Self {
            name,
            rtc,
            socket,
            local_addr,
            epoch,
            window,
            source_id,
            publish,
            pending: None,
            offered_send: Vec::new(),
            senders: Vec::new(),
            rx: HashMap::new(),
            ingress: HashMap::new(),
            egress: HashMap::new(),
            plis_received: 0,
            firs_received: 0,
            unstamped: 0,
            send_errors: 0,
            udp_datagrams_sent: 0,
            udp_bytes_sent: 0,
            send_lag: LatencyHistogram::new(),
            rtt: None,
            errors: Vec::new(),
            created_at: now,
            connected_at: None,
            join: JoinTimer::new(now),
            state,
            frames: frame_log.then(|| FrameLog {
                frames: Vec::with_capacity(1024),
                dropped: 0,
            }),
            next_timeout: now,
        }
    }

    fn error(&mut self, msg: String) {
        tracing::debug!(peer = %self.name, "{msg}");
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(msg);
        }
    }

    /// When media is next due (None if nothing is being sent).
    pub(crate) fn media_due(&self) -> Option<Instant> {
        self.senders
            .iter()
            .filter_map(|t| match &t.source {
                Some(Source::Audio(a)) => Some(a.next_due()),
                Some(Source::Video(v)) => Some(v.next_due()),
                None => None,
            })
            .min()
    }

    /// Reads every datagram waiting on the socket (readiness is edge-triggered), feeding
    /// each to str0m and draining its output. Returns whether the socket may hold more.
    pub(crate) fn read_socket(&mut self, buf: &mut [u8], max: usize) -> bool {
        for _ in 0..max {
            match self.socket.recv_from(buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    let Ok(contents) = (&buf[..n]).try_into() else {
                        continue; // not STUN/DTLS/RTP/RTCP: ignore like a browser would
                    };
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
                    self.drain(now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP port unreachable once the remote went away: not fatal.
                    if e.kind() != ErrorKind::ConnectionRefused {
                        self.error(format!("recv_from: {e}"));
                    }
                }
            }
        }
        true
    }

    /// Writes every media packet due by `now`; returns whether anything was written. The
    /// packets leave at the next timeout pass.
    pub(crate) fn write_due_media(&mut self, now: Instant) -> bool {
        if !self.rtc.is_alive() {
            return false;
        }
        let mut wrote = false;
        let window = self.window.load();
        let Self {
            rtc,
            senders,
            send_lag,
            ..
        } = self;
        for t in senders.iter_mut() {
            let (mid, pt) = (t.mid, t.pt);
            let rid = t.layer.map(|(rid, _)| rid);
            let seq = &mut t.seq;
            let sent_in_window = &mut t.sent_in_window;
            let nackable = t.kind == StreamKind::Video;
            let mut write = |p: crate::media::MediaPacket<'_>| {
                send_lag.record(now.saturating_duration_since(p.due));
                let mut api = rtc.direct_api();
                let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
                    return;
                };
                let w = RtpWrite::new(pt, SeqNo::from(*seq), p.rtp_time, now, p.payload)
                    .marker(p.marker)
                    .nackable(nackable);
                stream.write_rtp(w);
                *seq += 1;
                if window.contains(p.stamp.sent_ns) {
                    *sent_in_window += 1;
                }
                wrote = true;
            };
            match &mut t.source {
                Some(Source::Audio(a)) => {
                    a.poll(now, &mut write);
                }
                Some(Source::Video(v)) => {
                    v.poll(now, &mut write);
                }
                None => {}
            }
        }
        wrote
    }

    /// One timeout pass: str0m sends what was queued and runs its timers.
    pub(crate) fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.error(format!("handle_input(timeout): {e}"));
        }
        self.drain(now);
    }

    /// Drains `poll_output` until str0m asks for a timeout.
    pub(crate) fn drain(&mut self, now: Instant) {
        loop {
            if !self.rtc.is_alive() {
                self.next_timeout = now + Duration::from_secs(3600);
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => match self.socket.send_to(&t.contents, t.destination) {
                    Ok(n) => {
                        self.udp_datagrams_sent += 1;
                        self.udp_bytes_sent += n as u64;
                    }
                    Err(e) => {
                        self.send_errors += 1;
                        if e.kind() != ErrorKind::WouldBlock {
                            self.error(format!("send_to {}: {e}", t.destination));
                        }
                    }
                },
                Ok(Output::Event(e)) => self.on_event(e, now),
                Err(e) => {
                    self.error(format!("poll_output: {e}"));
                    self.next_timeout = now + Duration::from_millis(10);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::RtpPacket(p) => self.on_rtp(&p),
            Event::Connected => {
                self.connected_at = Some(now);
                self.start_sources(now);
                self.state.send_modify(|s| {
                    s.connected = true;
                    s.connect_time = Some(now.saturating_duration_since(self.created_at));
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.state.send_modify(|s| s.disconnected = true);
            }
            Event::KeyframeRequest(req) => {
                match req.kind {
                    KeyframeRequestKind::Pli => self.plis_received += 1,
                    KeyframeRequestKind::Fir => self.firs_received += 1,
                }
                // A request naming a rid restarts that layer only; one without, all layers.
                for t in &mut self.senders {
                    let layer = t.layer.map(|(rid, _)| rid);
                    let ours = t.mid == req.mid && (req.rid.is_none() || req.rid == layer);
                    if let (true, Some(Source::Video(v))) = (ours, &mut t.source) {
                        v.request_keyframe();
                    }
                }
            }
            Event::MediaIngressStats(s) => {
                let f = self.ingress.entry(s.mid).or_default();
                *f = Feedback {
                    nacks: s.nacks,
                    plis: s.plis,
                    firs: s.firs,
                };
            }
            Event::MediaEgressStats(s) => {
                let f = self.egress.entry(s.mid).or_default();
                *f = Feedback {
                    nacks: s.nacks,
                    plis: s.plis,
                    firs: s.firs,
                };
                if s.rtt.is_some() {
                    self.rtt = s.rtt;
                }
            }
            Event::PeerStats(s) => {
                if let Some(rtt) = s.rtt.or_else(|| {
                    s.selected_candidate_pair
                        .and_then(|p| p.current_round_trip_time)
                }) {
                    self.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }

    /// The receive hot path: no allocation once a stream is known.
    fn on_rtp(&mut self, p: &RtpPacket) {
        let Some(stamp) = Stamp::parse(&p.payload) else {
            self.unstamped += 1;
            return;
        };
        let arrival = p.timestamp;
        self.join.media(arrival);
        let s = self
            .rx
            .entry((stamp.source, stamp.kind))
            .or_insert_with(|| RxStream {
                packets: 0,
                bytes: 0,
                keyframes: 0,
                loss: LossTracker::new(),
                latency: LatencyHistogram::new(),
                first_at: arrival,
                last_at: arrival,
                first_keyframe_at: None,
                window: WindowedRx::default(),
            });
        s.packets += 1;
        s.bytes += p.payload.len() as u64;
        s.last_at = arrival;
        if stamp.keyframe && stamp.frame_start {
            s.keyframes += 1;
            s.first_keyframe_at.get_or_insert(arrival);
        }
        if let (Some(log), StreamKind::Video, true) =
            (&mut self.frames, stamp.kind, stamp.frame_start)
        {
            if log.frames.len() < FRAME_LOG_CAP {
                log.frames.push(FrameArrival {
                    source: stamp.source,
                    keyframe: stamp.keyframe,
                    sent_ns: stamp.sent_ns,
                    at: arrival,
                });
            } else {
                log.dropped += 1;
            }
        }
        s.loss.record(stamp.seq);
        if let Some(ns) = stamp.latency_ns(self.epoch, arrival) {
            s.latency.record_ns(ns);
        }
        let arrival_ns = nanos_since(self.epoch, arrival);
        s.window
            .record(self.window.load(), stamp.seq, stamp.sent_ns, arrival_ns);
    }

    fn start_sources(&mut self, now: Instant) {
        let Some(cfg) = &self.publish else { return };
        for t in &mut self.senders {
            if t.source.is_none() {
                t.source = Some(match t.kind {
                    StreamKind::Audio => {
                        Source::Audio(AudioSource::new(t.source_id, cfg, self.epoch, now))
                    }
                    StreamKind::Video => {
                        let layer_cfg;
                        let cfg = match t.layer {
                            Some((_, i)) => {
                                layer_cfg = MediaConfig {
                                    video_bitrate: (f64::from(cfg.video_bitrate)
                                        * SIMULCAST_SHARES[i])
                                        as u32,
                                    ..cfg.clone()
                                };
                                &layer_cfg
                            }
                            None => cfg,
                        };
                        Source::Video(VideoSource::new(t.source_id, cfg, self.epoch, now))
                    }
                });
            }
        }
    }

    pub(crate) fn create_offer(&mut self, kind: OfferKind) -> anyhow::Result<String> {
        if self.pending.is_some() {
            bail!("an offer is already pending");
        }
        let (audio, video, dir, simulcast) = match kind {
            OfferKind::Publish => {
                let cfg = self
                    .publish
                    .as_ref()
                    .context("the peer has no media to publish (PeerConfig::publish)")?;
                (cfg.audio, cfg.video, Direction::SendOnly, cfg.simulcast)
            }
            OfferKind::RecvOnly { audio, video } => (audio, video, Direction::RecvOnly, false),
        };
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        if audio {
            added.push((
                api.add_media(MediaKind::Audio, dir, None, None, None),
                StreamKind::Audio,
            ));
        }
        if video {
            let layers = simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in SIMULCAST_RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            added.push((
                api.add_media(MediaKind::Video, dir, None, None, layers),
                StreamKind::Video,
            ));
        }
        let (offer, pending) = api.apply().context("the offer has no m-lines")?;
        if dir == Direction::SendOnly {
            self.offered_send.extend(added);
        }
        self.pending = Some(pending);
        Ok(offer.to_sdp_string())
    }

    pub(crate) fn accept_answer(&mut self, sdp: &str, now: Instant) -> anyhow::Result<()> {
        let pending = self.pending.take().context("no pending offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).context("parsing the SDP answer")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .context("accepting the SDP answer")?;
        self.setup_senders()?;
        if self.connected_at.is_some() {
            self.start_sources(now);
        }
        Ok(())
    }

    pub(crate) fn accept_offer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).context("parsing the SDP offer")?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .context("accepting the SDP offer")?;
        Ok(answer.to_sdp_string())
    }

    fn setup_senders(&mut self) -> anyhow::Result<()> {
        for &(mid, kind) in &self.offered_send {
            if self.senders.iter().any(|t| t.mid == mid) {
                continue;
            }
            let codec = match kind {
                StreamKind::Audio => Codec::Opus,
                StreamKind::Video => Codec::Vp8,
            };
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            if media.disabled() {
                continue;
            }
            let pt = negotiated_pt(&self.rtc, mid, codec)
                .with_context(|| format!("no {codec:?} payload type negotiated on mid {mid}"))?;
            let simulcast =
                kind == StreamKind::Video && self.publish.as_ref().is_some_and(|c| c.simulcast);
            let layers: Vec<Option<(Rid, usize)>> = if simulcast {
                SIMULCAST_RIDS
                    .iter()
                    .enumerate()
                    .map(|(i, rid)| Some((Rid::from(*rid), i)))
                    .collect()
            } else {
                vec![None]
            };
            for layer in layers {
                let rid = layer.map(|(rid, _)| rid);
                if self.rtc.direct_api().stream_tx_by_mid(mid, rid).is_none() {
                    bail!("no send stream for mid {mid} rid {rid:?}");
                }
                self.senders.push(SendTrack {
                    mid,
                    layer,
                    source_id: layer
                        .map_or(self.source_id, |(_, i)| layer_source(self.source_id, i)),
                    kind,
                    pt,
                    seq: random_u64() % 30_000 + 1,
                    source: None,
                    sent_in_window: 0,
                });
            }
        }
        Ok(())
    }

    /// Starts local shutdown and drains what str0m still has to send (RTCP BYE, DTLS
    /// close_notify).
    pub(crate) fn close(&mut self, now: Instant) {
        if self.rtc.is_alive() {
            if let Err(e) = self.rtc.close() {
                self.error(format!("close: {e}"));
            }
            for _ in 0..4 {
                self.drain(now);
                if !self.rtc.is_alive() {
                    break;
                }
                if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                    break;
                }
            }
            self.rtc.disconnect();
        }
        self.senders.clear();
        self.state.send_modify(|s| s.closed = true);
    }

    pub(crate) fn frame_log(&self) -> FrameLog {
        self.frames.clone().unwrap_or_default()
    }

    pub(crate) fn report(&self) -> PeerReport {
        let sum = |m: &HashMap<Mid, Feedback>| {
            m.values().fold(Feedback::default(), |a, f| Feedback {
                nacks: a.nacks + f.nacks,
                plis: a.plis + f.plis,
                firs: a.firs + f.firs,
            })
        };
        let ingress = sum(&self.ingress);
        let egress = sum(&self.egress);
        let mut received: Vec<StreamReport> = self
            .rx
            .iter()
            .map(|(&(source, kind), s)| StreamReport {
                source,
                kind,
                packets: s.packets,
                bytes: s.bytes,
                keyframes: s.keyframes,
                loss: s.loss.clone(),
                latency: s.latency.clone(),
                first_at: s.first_at,
                last_at: s.last_at,
                first_keyframe_at: s.first_keyframe_at,
                window: s.window.clone(),
            })
            .collect();
        received.sort_by_key(|s| (s.source, s.kind));
        let mut sent_audio = None;
        let mut sent_video = None;
        let (mut audio_in_window, mut video_in_window) = (0, 0);
        let mut sent_in_window_by_source = Vec::new();
        for t in &self.senders {
            match &t.source {
                Some(Source::Audio(a)) => sent_audio = Some(a.counts()),
                // Simulcast: the top layer's, the last one.
                Some(Source::Video(v)) => sent_video = Some(v.counts()),
                None => {}
            }
            sent_in_window_by_source.push((t.source_id, t.kind, t.sent_in_window));
            match t.kind {
                StreamKind::Audio => audio_in_window += t.sent_in_window,
                StreamKind::Video => video_in_window += t.sent_in_window,
            }
        }
        PeerReport {
            name: self.name.clone(),
            local_addr: self.local_addr,
            source_id: self.source_id,
            created_at: self.created_at,
            connect_time: self
                .connected_at
                .map(|t| t.saturating_duration_since(self.created_at)),
            first_media_at: self.join.first_media(),
            join_time: self.join.join_time(),
            received,
            sent_audio: sent_audio.unwrap_or_default(),
            sent_video: sent_video.unwrap_or_default(),
            sent_audio_in_window: audio_in_window,
            sent_video_in_window: video_in_window,
            sent_in_window_by_source,
            send_lag: self.send_lag.clone(),
            nacks_sent: ingress.nacks,
            plis_sent: ingress.plis,
            firs_sent: ingress.firs,
            nacks_received: egress.nacks,
            plis_received: self.plis_received.max(egress.plis),
            firs_received: self.firs_received.max(egress.firs),
            unstamped: self.unstamped,
            send_errors: self.send_errors,
            udp_datagrams_sent: self.udp_datagrams_sent,
            udp_bytes_sent: self.udp_bytes_sent,
            rtt: self.rtt,
            errors: self.errors.clone(),
        }
    }
}
