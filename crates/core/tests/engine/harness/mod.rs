//! A virtual network for scenario tests: worker engines and str0m client peers on a virtual
//! clock, in the spirit of quinn-proto's `Pair` and str0m's own test harness. No sockets, no
//! threads, no sleeps: datagrams are handed from `Transmit` to `handle_datagram` /
//! `Input::Receive` in memory, pipe messages from `Output::Pipe` to `handle_pipe`, and time
//! only moves when a test calls [`Net::step`].
//!
//! The harness plays the control plane too: it issues the commands, answers subscriber offers
//! on the clients' behalf, and records every event, reply and pipe message so that a test can
//! assert on them.

#![allow(dead_code)] // not every part of the harness is used by every story

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, Instant};

use sfumato_core::dd::{self, DdBytes, DdExtension};
use sfumato_core::peer::channel_configs;
use sfumato_core::{
    Command, Engine, Event, Kind, MemberId, NodeId, Output, PeerId, PipeMsg, ReplyBody, RequestId,
    TrackId, WorkerId,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event as RtcEvent, Input, Output as RtcOutput, Rtc};

/// The default step of virtual time.
pub const STEP: Duration = Duration::from_millis(5);

/// The fake address of worker `w`'s socket.
pub fn worker_addr(w: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000 + w as u16))
}

/// The fake address of client number `i`.
pub fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50000 + i as u16))
}

pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// One datagram in flight.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl Datagram {
    /// The SSRC of an RTP packet (SRTP leaves the header in the clear), `None` for anything
    /// else (STUN, DTLS, RTCP).
    pub fn rtp_ssrc(&self) -> Option<u32> {
        let c = &self.contents;
        if c.len() < 12 || c[0] >> 6 != 2 || (64..96).contains(&(c[1] & 0x7f)) {
            return None;
        }
        Some(u32::from_be_bytes([c[8], c[9], c[10], c[11]]))
    }

    /// The sequence number of an RTP packet.
    pub fn rtp_seq(&self) -> Option<u16> {
        self.rtp_ssrc()?;
        Some(u16::from_be_bytes([self.contents[2], self.contents[3]]))
    }
}

/// A pipe message as seen crossing between two workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeRecord {
    Media { track: TrackId, seq: u64, layer: u8 },
    KeyframeRequest(TrackId),
    Layers { track: TrackId, flow: u8 },
    TrackEnded(TrackId),
    Rates(TrackId),
    Data { from: MemberId },
}

impl PipeRecord {
    pub fn of(msg: &PipeMsg) -> Self {
        match msg {
            PipeMsg::Media(p) => PipeRecord::Media {
                track: p.track,
                seq: p.seq,
                layer: p.layer,
            },
            PipeMsg::KeyframeRequest(t, _) => PipeRecord::KeyframeRequest(*t),
            PipeMsg::TrackEnded(t) => PipeRecord::TrackEnded(*t),
            PipeMsg::Layers { track, need, .. } => PipeRecord::Layers {
                track: *track,
                flow: need.flow,
            },
            PipeMsg::Rates(t, _) => PipeRecord::Rates(*t),
            PipeMsg::Data(p) => PipeRecord::Data { from: p.from },
        }
    }
}

/// One RTP packet a client sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub kind: MediaKind,
    pub seq: u64,
    pub keyframe: bool,
    pub payload: Vec<u8>,
}

/// One RTP packet a client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub mid: Option<Mid>,
    pub kind: Option<MediaKind>,
    pub ssrc: u32,
    pub seq: u64,
    pub marker: bool,
    pub pt: u8,
    pub payload: Vec<u8>,
}

/// A str0m peer playing a browser: full ICE (controlling against our ICE-lite), RTP mode,
/// Opus and VP8 only, on its own fake address, talking to one worker.
pub struct Client {
    pub name: String,
    pub addr: SocketAddr,
    /// The id the control plane gave this client's peer connection.
    pub peer: PeerId,
    /// The worker that holds its peer.
    pub worker: usize,
    pub rtc: Rtc,
    /// Answer subscriber offers automatically (true by default).
    pub auto_answer: bool,
    pending: Option<SdpPendingOffer>,
    pub connected: bool,
    pub sent: Vec<Sent>,
    pub received: Vec<Received>,
    /// Keyframe requests (PLI/FIR) this client received, with their virtual time.
    pub keyframe_requests: Vec<(Instant, Mid)>,
    /// The simulcast layer (index into [`RIDS`]) of each keyframe request that named one.
    pub layer_keyframe_requests: Vec<(Instant, usize)>,
    /// Per simulcast layer: next sequence number, timestamp, PictureID and TL0PICIDX.
    layers: [LayerState; 3],
    /// Simulcast layers are sent with three temporal layers (`L1T3`): TIDs 0 2 1 2 from
    /// each keyframe on, the first layer-2 and layer-1 frames after a base frame are
    /// switching points (layer sync), TL0PICIDX counts base frames.
    pub temporal_layers: bool,
    /// Numbering of the VP9 scalable stream ([`Net::send_svc_picture`]).
    svc: LayerState,
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    /// The audio-level header extension value (−dBov) put on audio packets, if any.
    pub audio_level: Option<i8>,
    next_seq: [u64; 2],
    next_ts: [u32; 2],
    counter: u32,
    pub errors: Vec<String>,
    /// Every SDP the engine sent this client (answers and offers), in order.
    pub remote_sdp: Vec<String>,
    /// Its data channels ([`Net::open_data`]): reliable, lossy, lossy and ordered.
    pub channels: Option<[ChannelId; 3]>,
    /// Data channels announced open.
    pub channels_open: Vec<ChannelId>,
    /// Every message received on a data channel.
    pub data: Vec<Vec<u8>>,
    /// The channel each of `data` came on.
    pub data_channels: Vec<ChannelId>,
}

impl Client {
    fn new(
        name: &str,
        index: usize,
        peer: PeerId,
        worker: usize,
        now: Instant,
        red: bool,
        twcc: bool,
    ) -> Self {
        let addr = client_addr(index);
        let mut builder = Rtc::builder();
        if !twcc {
            // str0m's standard extensions without transport-wide sequence numbers: the
            // client gives no TWCC feedback, only REMB when asked to.
            let mut exts = ExtensionMap::empty();
            exts.set(1, Extension::AudioLevel);
            exts.set(2, Extension::AbsoluteSendTime);
            exts.set(4, Extension::RtpMid);
            exts.set(10, Extension::RtpStreamId);
            exts.set(11, Extension::RepairedRtpStreamId);
            builder = builder.set_extension_map(exts);
        }
        let mut rtc = builder
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, red)
            .enable_vp8(true)
            .enable_vp9(true)
            .enable_av1(true)
            .set_extension(12, Extension::with_serializer(dd::URI, DdExtension))
            .build(now);
        let candidate = Candidate::host(addr, Protocol::Udp).expect("host candidate");
        rtc.add_local_candidate(candidate);
        // Start numbering somewhere arbitrary, different per client.
        let base = 1000 + 7919 * index as u64 % 30_000;
        Client {
            name: name.to_string(),
            addr,
            peer,
            worker,
            rtc,
            auto_answer: true,
            pending: None,
            connected: false,
            sent: Vec::new(),
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            layer_keyframe_requests: Vec::new(),
            // Far apart per layer, the top one about to wrap its 15-bit PictureID.
            layers: [
                LayerState::new(base + 20_000, 100, 3),
                LayerState::new(base + 30_000, 20_000, 90),
                LayerState::new(base + 40_000, 0x7ff0, 250),
            ],
            temporal_layers: false,
            svc: LayerState::new(base + 50_000, 0x7ffe, 7),
            audio_mid: None,
            video_mid: None,
            audio_level: None,
            next_seq: [base, base + 10_000],
            next_ts: [base as u32 * 960, base as u32 * 3000],
            counter: 0,
            errors: Vec::new(),
            remote_sdp: Vec::new(),
            channels: None,
            channels_open: Vec::new(),
            data: Vec::new(),
            data_channels: Vec::new(),
        }
    }

    /// Writes `frame` on its reliable (or lossy) data channel. Returns whether it was taken.
    pub fn write_data(&mut self, reliable: bool, frame: &[u8]) -> bool {
        let Some([r, l, _]) = self.channels else {
            return false;
        };
        let id = if reliable { r } else { l };
        self.rtc
            .channel(id)
            .is_some_and(|mut ch| ch.write(true, frame).unwrap_or(false))
    }

    /// Drains str0m's output until it asks for a timeout.
    fn drain(&mut self, now: Instant, out: &mut VecDeque<Datagram>) {
        loop {
            match self.rtc.poll_output() {
                Ok(RtcOutput::Timeout(_)) => break,
                Ok(RtcOutput::Transmit(t)) => out.push_back(Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Ok(RtcOutput::Event(e)) => self.on_event(now, e),
                Err(e) => {
                    self.errors.push(format!("poll_output: {e}"));
                    break;
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: RtcEvent) {
        match e {
            RtcEvent::Connected => self.connected = true,
            RtcEvent::ChannelOpen(id, _) => self.channels_open.push(id),
            RtcEvent::ChannelData(d) => {
                self.data_channels.push(d.id);
                self.data.push(d.data);
            }
            RtcEvent::KeyframeRequest(req) => {
                self.keyframe_requests.push((now, req.mid));
                if let Some(layer) = req.rid.and_then(|r| RIDS.iter().position(|x| *x == &*r)) {
                    self.layer_keyframe_requests.push((now, layer));
                }
            }
            RtcEvent::RtpPacket(p) => {
                let mid = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let kind = mid.and_then(|m| self.rtc.media(m)).map(|m| m.kind());
                self.received.push(Received {
                    at: now,
                    mid,
                    kind,
                    ssrc: *p.header.ssrc,
                    seq: *p.seq_no,
                    marker: p.header.marker,
                    pt: *p.header.payload_type,
                    payload: p.payload.to_vec(),
                });
            }
            _ => {}
        }
    }

    fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.errors.push(format!("timeout: {e}"));
        }
    }

    fn receive(&mut self, now: Instant, d: &Datagram) {
        let r = match Receive::new(Protocol::Udp, d.source, d.destination, &d.contents) {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(format!("receive: {e}"));
                return;
            }
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            self.errors.push(format!("handle_input: {e}"));
        }
    }

    fn pt(&self, codec: Codec) -> str0m::media::Pt {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec configured")
    }

    /// Queues one RTP packet on `mid` and records it.
    fn write(&mut self, now: Instant, kind: MediaKind, keyframe: bool) -> Vec<u8> {
        let (mid, codec, k, ts_step) = match kind {
            MediaKind::Audio => (self.audio_mid, Codec::Opus, 0, 960),
            MediaKind::Video => (self.video_mid, Codec::Vp8, 1, 3000),
        };
        let mid = mid.expect("the client publishes this kind");
        let mut pt = self.pt(codec);
        self.counter += 1;
        let mut payload = payload(kind, keyframe, self.peer, self.counter);
        // With RED negotiated, audio goes as RED: the previous frame's 3 first bytes as the
        // redundant block, then this frame.
        let red = self.red_pt().filter(|_| kind == MediaKind::Audio);
        if let Some(red) = red {
            pt = red;
            let primary = *self.pt(Codec::Opus);
            let mut p = vec![0x80 | primary, 0x03, 0xc0, 0x03, primary, 0xaa, 0xbb, 0xcc];
            p.extend_from_slice(&payload);
            payload = p;
        }
        let seq = self.next_seq[k];
        self.next_seq[k] += 1;
        let ts = self.next_ts[k];
        self.next_ts[k] = ts.wrapping_add(ts_step);
        let ext = ExtensionValues {
            audio_level: self.audio_level.filter(|_| kind == MediaKind::Audio),
            // str0m writes the extension only with both values.
            voice_activity: self.audio_level.map(|_| true),
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("send stream");
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload.clone())
                .marker(kind == MediaKind::Video)
                .nackable(kind == MediaKind::Video)
                .ext_vals(ext),
        );
        self.sent.push(Sent {
            kind,
            seq,
            keyframe,
            payload: payload.clone(),
        });
        payload
    }

    /// The RED payload type negotiated for Opus, if any.
    pub fn red_pt(&self) -> Option<str0m::media::Pt> {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .and_then(|p| p.red())
    }

    /// The payload type negotiated for `codec`.
    pub fn pt_of(&self, codec: Codec) -> u8 {
        *self.pt(codec)
    }

    /// The payload type negotiated for `codec`, as str0m names it.
    pub fn payload_type(&self, codec: Codec) -> str0m::media::Pt {
        self.pt(codec)
    }

    /// Queues one packet (a one-packet frame) of simulcast layer `layer` and records it.
    fn write_layer(&mut self, now: Instant, layer: usize, keyframe: bool) -> Vec<u8> {
        let mid = self.video_mid.expect("the client publishes video");
        let pt = self.pt(Codec::Vp8);
        self.counter += 1;
        let st = &mut self.layers[layer];
        if keyframe {
            st.frame = 0;
        }
        let (tid, sync) = match (self.temporal_layers, st.frame % 4) {
            (false, _) | (true, 0) => (0, !self.temporal_layers),
            (true, 1) => (2, true),
            (true, 2) => (1, true),
            (true, _) => (2, false),
        };
        // A frame above the base carries the TL0PICIDX of the base frame before it.
        let tl0 = if tid == 0 {
            st.tl0
        } else {
            st.tl0.wrapping_sub(1)
        };
        let fields = Vp8Fields {
            picture_id: st.picture_id,
            tl0,
            tid,
            sync,
        };
        let payload = simulcast_payload_with(layer, keyframe, fields, self.counter);
        let (seq, ts) = (st.seq, st.ts);
        st.advance(tid);
        let mut api = self.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, Some(RIDS[layer].into()))
            .expect("a send stream per rid");
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload.clone())
                .marker(true)
                .nackable(true),
        );
        self.sent.push(Sent {
            kind: MediaKind::Video,
            seq,
            keyframe,
            payload: payload.clone(),
        });
        payload
    }

    /// Queues one VP9 picture of `spatial_layers` layers (one packet each, lowest first,
    /// the marker on the last) and records its packets.
    fn write_svc_picture(
        &mut self,
        now: Instant,
        codec: SvcCodec,
        spatial_layers: u8,
        keyframe: bool,
    ) {
        let mid = self.video_mid.expect("the client publishes video");
        let pt = self.pt(match codec {
            SvcCodec::Vp9 => Codec::Vp9,
            SvcCodec::Av1 => Codec::Av1,
        });
        for spatial in 0..spatial_layers {
            self.counter += 1;
            let st = self.svc;
            // VP9's scalability structure or AV1's template structure, on keyframes.
            let structure = (keyframe && spatial == 0).then_some(spatial_layers);
            let mut ext = ExtensionValues::default();
            let payload = match codec {
                SvcCodec::Vp9 => svc_payload(
                    spatial,
                    keyframe,
                    st.picture_id,
                    st.tl0,
                    structure,
                    self.counter,
                ),
                SvcCodec::Av1 => {
                    let dd = dependency_descriptor(spatial, st.picture_id, structure);
                    ext.user_values.set(DdBytes(dd.into()));
                    av1_payload(spatial, keyframe, st.picture_id, self.counter)
                }
            };
            let seq = self.svc.seq;
            self.svc.seq += 1;
            let mut api = self.rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, None).expect("send stream");
            tx.write_rtp(
                RtpWrite::new(pt, SeqNo::from(seq), st.ts, now, payload.clone())
                    .marker(spatial + 1 == spatial_layers)
                    .ext_vals(ext)
                    .nackable(true),
            );
            self.sent.push(Sent {
                kind: MediaKind::Video,
                seq,
                keyframe: keyframe && spatial == 0,
                payload,
            });
        }
        // One picture: the sequence number moved per packet, the rest once.
        let seq = self.svc.seq;
        self.svc.advance(0);
        self.svc.seq = seq;
    }

    /// Payloads received on media of `kind`, in arrival order.
    pub fn received_payloads(&self, kind: MediaKind) -> Vec<&[u8]> {
        self.received
            .iter()
            .filter(|r| r.kind == Some(kind))
            .map(|r| r.payload.as_slice())
            .collect()
    }

    /// Payloads sent on media of `kind`, in order.
    pub fn sent_payloads(&self, kind: MediaKind) -> Vec<&[u8]> {
        self.sent
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.payload.as_slice())
            .collect()
    }

    /// Received sequence numbers of `kind`, in arrival order.
    pub fn received_seqs(&self, kind: MediaKind) -> Vec<u64> {
        self.received
            .iter()
            .filter(|r| r.kind == Some(kind))
            .map(|r| r.seq)
            .collect()
    }

    /// Asks the sender of the media on `mid` for a keyframe (as a browser would on loss).
    pub fn request_keyframe(&mut self, mid: Mid) -> bool {
        match self.rtc.direct_api().stream_rx_by_mid(mid, None) {
            Some(rx) => {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                true
            }
            None => false,
        }
    }

    /// The engine's ICE username fragment for this client's peer, from its SDP.
    pub fn engine_ufrag(&self) -> Option<String> {
        self.remote_sdp
            .last()?
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:").map(|u| u.to_string()))
    }
}

/// A recognisable payload: for video an RFC 7741 descriptor (S=1, PID=0) and a VP8 payload
/// header whose low bit is 0 on keyframes; then who sent it and a counter, so that every
/// payload of a test is unique.
pub fn payload(kind: MediaKind, keyframe: bool, peer: PeerId, counter: u32) -> Vec<u8> {
    let mut p = match kind {
        MediaKind::Video => vec![0x10, if keyframe { 0x00 } else { 0x01 }, 0x9d, 0x01, 0x2a],
        MediaKind::Audio => vec![0xfc],
    };
    p.extend_from_slice(&(peer.0 as u32).to_be_bytes());
    p.extend_from_slice(&counter.to_be_bytes());
    p.resize(p.len() + 40 + (counter as usize % 23), 0x5a);
    p
}

/// The rids of a simulcast publisher, lowest layer first.
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// Numbering of one simulcast layer's stream.
#[derive(Debug, Clone, Copy)]
struct LayerState {
    seq: u64,
    ts: u32,
    picture_id: u16,
    tl0: u8,
    /// Frames since the last keyframe.
    frame: u32,
}

impl LayerState {
    fn new(seq: u64, picture_id: u16, tl0: u8) -> Self {
        LayerState {
            seq,
            ts: seq as u32 * 3000,
            picture_id,
            tl0,
            frame: 0,
        }
    }

    /// After a frame of temporal layer `tid`.
    fn advance(&mut self, tid: u8) {
        self.seq += 1;
        self.ts = self.ts.wrapping_add(3000);
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        if tid == 0 {
            self.tl0 = self.tl0.wrapping_add(1);
        }
        self.frame += 1;
    }
}

/// A one-packet VP8 frame of a simulcast layer: an RFC 7741 descriptor with a 15-bit
/// PictureID, TL0PICIDX and TID/KEYIDX, the VP8 payload header, then the layer and a
/// counter so that every payload of a test is recognisable, padded by layer.
pub fn simulcast_payload(
    layer: usize,
    keyframe: bool,
    picture_id: u16,
    tl0: u8,
    counter: u32,
) -> Vec<u8> {
    let fields = Vp8Fields {
        picture_id,
        tl0,
        tid: 0,
        sync: true,
    };
    simulcast_payload_with(layer, keyframe, fields, counter)
}

/// The VP8 descriptor fields of a harness frame.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Fields {
    pub picture_id: u16,
    pub tl0: u8,
    /// Temporal layer.
    pub tid: u8,
    /// Layer sync (Y): the frame needs only base-layer frames.
    pub sync: bool,
}

/// [`simulcast_payload`] with any temporal layer fields.
pub fn simulcast_payload_with(layer: usize, keyframe: bool, f: Vp8Fields, counter: u32) -> Vec<u8> {
    let Vp8Fields {
        picture_id,
        tl0,
        tid,
        sync,
    } = f;
    let mut p = vec![
        0x90,
        0xf0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        tl0,
        tid << 6 | if sync { 0x20 } else { 0 },
        if keyframe { 0x00 } else { 0x01 },
        0x9d,
        0x01,
        0x2a,
        layer as u8,
    ];
    p.extend_from_slice(&counter.to_be_bytes());
    // Higher layers are bigger, as real ones are: 40, 160, 640 bytes of padding.
    p.resize(p.len() + (40 << (2 * layer)), 0x5a);
    p
}

/// The temporal layer of a payload made by [`simulcast_payload_with`].
pub fn simulcast_tid(p: &[u8]) -> u8 {
    p[5] >> 6
}

/// The layer, PictureID and TL0PICIDX of a payload made by [`simulcast_payload`].
pub fn simulcast_fields(p: &[u8]) -> (usize, u16, u8) {
    (
        p[10] as usize,
        u16::from(p[2] & 0x7f) << 8 | u16::from(p[3]),
        p[4],
    )
}

/// A scalable video codec of the harness: VP9 (layers in the payload descriptor) or AV1
/// (layers in the dependency descriptor extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcCodec {
    Vp9,
    Av1,
}

/// Every payload of a scalable picture ends with its spatial layer and picture id.
fn svc_trailer(p: &mut Vec<u8>, spatial: u8, picture_id: u16, counter: u32) {
    p.extend_from_slice(&counter.to_be_bytes());
    p.resize(p.len() + 40, 0x5a);
    p.push(spatial);
    p.extend_from_slice(&picture_id.to_be_bytes());
}

/// A one-packet VP9 layer frame of a scalable stream (RFC 9628, non-flexible mode): B and E
/// set, a 15-bit picture id, the layer byte (spatial layer, temporal 0), TL0PICIDX, a
/// scalability structure of `ss` spatial layers if given; then the trailer.
pub fn svc_payload(
    spatial: u8,
    keyframe: bool,
    picture_id: u16,
    tl0: u8,
    ss: Option<u8>,
    counter: u32,
) -> Vec<u8> {
    let mut b0 = 0xac; // I, L, B, E
    if !keyframe {
        b0 |= 0x40; // P: inter-picture predicted
    }
    if ss.is_some() {
        b0 |= 0x02; // V
    }
    let mut p = vec![
        b0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        spatial << 1,
        tl0,
    ];
    if let Some(n) = ss {
        p.push((n - 1) << 5);
    }
    svc_trailer(&mut p, spatial, picture_id, counter);
    p
}

/// A one-packet AV1 layer frame: the aggregation header (one OBU; N on a keyframe's first
/// packet), an OBU stand-in, then the trailer.
pub fn av1_payload(spatial: u8, keyframe: bool, picture_id: u16, counter: u32) -> Vec<u8> {
    let n = if keyframe && spatial == 0 { 0x08 } else { 0 };
    let mut p = vec![0x10 | n, 0x32, 0x00];
    svc_trailer(&mut p, spatial, picture_id, counter);
    p
}

/// The dependency descriptor of a one-packet frame of `spatial` (template `spatial`, one
/// temporal layer), with a template structure of `structure` spatial layers if given.
pub fn dependency_descriptor(spatial: u8, frame: u16, structure: Option<u8>) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    let mut put = |v: u32, n: u32| {
        for i in (0..n).rev() {
            bits.push(v >> i & 1 == 1);
        }
    };
    put(1, 1); // start of frame
    put(1, 1); // end of frame
    put(u32::from(spatial), 6); // template id (offset 0: template index = spatial layer)
    put(u32::from(frame), 16);
    if let Some(layers) = structure {
        put(1, 1); // template structure present
        put(0, 4);
        put(0, 6); // template id offset
        put(u32::from(layers) - 1, 5); // one decode target per spatial layer
        for s in 0..layers {
            put(if s + 1 < layers { 2 } else { 3 }, 2); // next spatial layer, or the end
        }
        // Decode target indications, no frame diffs, no chains, no resolutions.
        put(0, 2 * u32::from(layers) * u32::from(layers));
        put(0, u32::from(layers));
        put(0, 2);
        put(0, 1);
    }
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, &x)| b | u8::from(x) << (7 - i))
        })
        .collect()
}

/// The spatial layer and picture id of a payload made by [`svc_payload`] or
/// [`av1_payload`].
pub fn svc_fields(p: &[u8]) -> (u8, u16) {
    let n = p.len();
    (p[n - 3], u16::from_be_bytes([p[n - 2], p[n - 1]]))
}

/// Decides whether a datagram is lost on the way (true: drop it).
pub type LossFn = Box<dyn FnMut(&Datagram) -> bool>;

/// The tracks one publisher's offer produced.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub audio: TrackId,
    pub video: TrackId,
    pub worker: usize,
}

/// Engines, clients and the network between them, on virtual time.
pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub engines: Vec<Engine>,
    pub clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, Node>,
    queue: VecDeque<Datagram>,
    pipes: VecDeque<(usize, PipeMsg)>,
    commands: VecDeque<(usize, Command)>,
    /// Every event the engines emitted (replies excepted), with the worker that emitted it.
    pub events: Vec<(usize, Event)>,
    replies: HashMap<RequestId, Result<ReplyBody, sfumato_core::Error>>,
    /// Every pipe message: (from worker, to worker, what).
    pub pipe_log: Vec<(usize, usize, PipeRecord)>,
    /// Decides whether a datagram is lost on the way (true: drop it).
    pub loss: Option<LossFn>,
    pub lost: Vec<Datagram>,
    /// Datagrams addressed to nobody.
    pub undeliverable: usize,
    /// When set, every delivered datagram is kept in `delivered` (for replaying garbage).
    pub record: bool,
    pub delivered: Vec<Datagram>,
    /// Wall-clock time spent inside the engines (inputs, timeouts, output polling), for the
    /// engine benchmark; the clients' and the network's work is not in it.
    pub engine_busy: Duration,
    /// When set, every pipe message crosses in its wire form (`sfumato_core::wire`), encoded
    /// and decoded as a relay between nodes would: what arrives must serve as well.
    pub wire_pipes: bool,
    /// With `wire_pipes`: every pipe message's wire form, kept (seeds for fuzz/).
    pub wire_log: Option<Vec<Vec<u8>>>,
    /// In a cluster ([`Net::cluster`]): the workers per node (the relay worker is one more,
    /// the last of each node's engines); 0 for a single node without a relay.
    pub node_workers: usize,
    /// Relay messages in flight: (to engine, from node, message), in wire form and back.
    relays: VecDeque<(usize, NodeId, PipeMsg)>,
    /// Every relay message: (from node, to node, what).
    pub relay_log: Vec<(usize, usize, PipeRecord)>,
    next_req: RequestId,
    next_peer: u64,
}

#[derive(Clone, Copy)]
enum Node {
    Engine(usize),
    Client(usize),
}

impl Net {
    /// `workers` engines, worker `w` on 127.0.0.1:4000w.
    pub fn new(workers: usize) -> Self {
        init_crypto();
        let now = Instant::now();
        let mut by_addr = HashMap::new();
        let engines = (0..workers)
            .map(|w| {
                by_addr.insert(worker_addr(w), Node::Engine(w));
                Engine::new(WorkerId(w as u16), worker_addr(w))
            })
            .collect();
        Net {
            start: now,
            now,
            engines,
            clients: Vec::new(),
            by_addr,
            queue: VecDeque::new(),
            pipes: VecDeque::new(),
            commands: VecDeque::new(),
            events: Vec::new(),
            replies: HashMap::new(),
            pipe_log: Vec::new(),
            loss: None,
            lost: Vec::new(),
            undeliverable: 0,
            record: false,
            delivered: Vec::new(),
            engine_busy: Duration::ZERO,
            wire_pipes: false,
            wire_log: None,
            node_workers: 0,
            relays: VecDeque::new(),
            relay_log: Vec::new(),
            next_req: 1,
            next_peer: 1,
        }
    }

    /// `nodes` nodes of `workers` workers each, plus each node's relay worker: node `n`'s
    /// worker `w` is engine `n * (workers + 1) + w` (local `WorkerId(w)`), its relay worker
    /// engine `n * (workers + 1) + workers`; node `n` is `NodeId(n + 1)`. Messages between
    /// relay workers cross in their wire form.
    pub fn cluster(nodes: usize, workers: usize) -> Self {
        let mut net = Net::new(nodes * (workers + 1));
        for (i, e) in net.engines.iter_mut().enumerate() {
            *e = Engine::new(WorkerId((i % (workers + 1)) as u16), worker_addr(i));
        }
        net.node_workers = workers;
        net
    }

    /// The engine index of node `node`'s worker `worker` (its relay: `worker == workers`).
    pub fn engine(&self, node: usize, worker: usize) -> usize {
        node * (self.node_workers + 1) + worker
    }

    /// The engine index of node `node`'s relay worker.
    pub fn relay(&self, node: usize) -> usize {
        self.engine(node, self.node_workers)
    }

    /// The node of engine `e` (0 on a single node).
    pub fn node_of(&self, e: usize) -> usize {
        if self.node_workers == 0 {
            0
        } else {
            e / (self.node_workers + 1)
        }
    }

    /// The local worker id of engine `e`.
    pub fn local_worker(&self, e: usize) -> WorkerId {
        if self.node_workers == 0 {
            WorkerId(e as u16)
        } else {
            WorkerId((e % (self.node_workers + 1)) as u16)
        }
    }

    /// What a cluster's control planes do when a subscriber on `to_node` needs `track`
    /// (published on engine `origin` of another node): relay it from there to here.
    pub fn relay_track(&mut self, track: TrackId, kind: Kind, origin: usize, to_node: usize) {
        let from_node = self.node_of(origin);
        let (from_relay, to_relay) = (self.relay(from_node), self.relay(to_node));
        let relay_id = self.local_worker(from_relay);
        self.command(
            origin,
            Command::AddSink {
                track,
                worker: relay_id,
            },
        );
        self.command(
            from_relay,
            Command::RelayOut {
                track,
                kind,
                origin: self.local_worker(origin),
                node: NodeId(to_node as u32 + 1),
            },
        );
        self.command(
            to_relay,
            Command::RelayIn {
                track,
                kind,
                node: NodeId(from_node as u32 + 1),
            },
        );
    }

    /// Subscribes client `c` to a track relayed to its node (origin: its node's relay).
    pub fn subscribe_relayed(&mut self, c: usize, track: TrackId, kind: Kind) {
        let (e, peer) = (self.clients[c].worker, self.clients[c].peer);
        let relay = self.relay(self.node_of(e));
        let worker = self.local_worker(e);
        self.command(relay, Command::AddSink { track, worker });
        self.command(
            e,
            Command::Subscribe {
                peer,
                track,
                kind,
                origin: self.local_worker(relay),
            },
        );
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A new client whose peer lives on `worker`. Returns its index.
    pub fn add_client(&mut self, name: &str, worker: usize) -> usize {
        self.add_client_with(name, worker, false, true)
    }

    /// A client whose audio is Opus with RED (RFC 2198), sent and received, as browsers do.
    pub fn add_client_with_red(&mut self, name: &str, worker: usize) -> usize {
        self.add_client_with(name, worker, true, true)
    }

    /// A client without transport-wide congestion control feedback: its downlink estimate
    /// reaches the engine as REMB ([`Net::send_remb`]) only.
    pub fn add_client_remb_only(&mut self, name: &str, worker: usize) -> usize {
        self.add_client_with(name, worker, false, false)
    }

    fn add_client_with(&mut self, name: &str, worker: usize, red: bool, twcc: bool) -> usize {
        let index = self.clients.len();
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let c = Client::new(name, index, peer, worker, self.now, red, twcc);
        self.by_addr.insert(c.addr, Node::Client(index));
        self.clients.push(c);
        index
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    pub fn client_mut(&mut self, i: usize) -> &mut Client {
        &mut self.clients[i]
    }

    /// Sends a command to `worker` right away and lets everything settle.
    pub fn command(&mut self, worker: usize, cmd: Command) {
        self.commands.push_back((worker, cmd));
        self.pump();
    }

    /// Sends a command that expects a reply and returns the reply.
    pub fn request(
        &mut self,
        worker: usize,
        make: impl FnOnce(RequestId) -> Command,
    ) -> Result<ReplyBody, sfumato_core::Error> {
        let req = self.next_req;
        self.next_req += 1;
        self.command(worker, make(req));
        self.replies.remove(&req).expect("the engine replies")
    }

    /// Client `c` publishes sendonly Opus audio and VP8 video: offer, `Command::Publish`,
    /// answer. Returns the tracks announced in `Event::TrackPublished`.
    pub fn publish(&mut self, c: usize) -> Published {
        self.publish_with(c, false)
    }

    /// Like [`Net::publish`], the video in three simulcast layers ([`RIDS`]).
    pub fn publish_simulcast(&mut self, c: usize) -> Published {
        self.publish_with(c, true)
    }

    fn publish_with(&mut self, c: usize, simulcast: bool) -> Published {
        let (offer, pending, audio_mid, video_mid) = {
            let client = &mut self.clients[c];
            let mut api = client.rtc.sdp_api();
            let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let layers = simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let video_mid =
                api.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers);
            let (offer, pending) = api.apply().expect("an offer");
            (offer.to_sdp_string(), pending, audio_mid, video_mid)
        };
        {
            let client = &mut self.clients[c];
            client.audio_mid = Some(audio_mid);
            client.video_mid = Some(video_mid);
            client.pending = Some(pending);
        }
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        let first_event = self.events.len();
        self.offer_publish(c, offer);
        let mut audio = None;
        let mut video = None;
        for (_, e) in &self.events[first_event..] {
            if let Event::TrackPublished {
                peer: p,
                track,
                kind,
                ..
            } = e
            {
                if *p == peer {
                    match kind {
                        Kind::Audio => audio = Some(*track),
                        Kind::Video => video = Some(*track),
                    }
                }
            }
        }
        Published {
            audio: audio.expect("audio track published"),
            video: video.expect("video track published"),
            worker,
        }
    }

    /// Sends client `c`'s pending `offer` as its publishing peer's (`Command::Publish`) and
    /// applies the engine's answer.
    fn offer_publish(&mut self, c: usize, offer: String) {
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        let reply = self.request(worker, |req| Command::Publish { req, peer, offer });
        let Ok(ReplyBody::Sdp(answer)) = reply else {
            panic!("publish failed: {reply:?}");
        };
        let client = &mut self.clients[c];
        client.remote_sdp.push(answer.clone());
        let answer = SdpAnswer::from_sdp_string(&answer).expect("a parsable answer");
        let pending = client.pending.take().expect("pending offer");
        client
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let now = self.now;
        client.drain(now, &mut self.queue);
        self.pump();
    }

    /// Client `c` offers the three pre-negotiated data channels (streams 0 reliable, 1 lossy,
    /// 2 lossy and ordered),
    /// alone on its publishing peer, and applies the engine's answer.
    pub fn open_data(&mut self, c: usize) {
        let (offer, pending, channels) = {
            let mut api = self.clients[c].rtc.sdp_api();
            let ids = channel_configs().map(|cfg| api.add_channel_with_config(cfg));
            let (offer, pending) = api.apply().expect("an offer");
            (offer.to_sdp_string(), pending, ids)
        };
        self.clients[c].channels = Some(channels);
        self.clients[c].pending = Some(pending);
        self.offer_publish(c, offer);
    }

    /// Creates the subscribing peer of client `c` (`Command::CreateSubscriber`).
    pub fn create_subscriber(&mut self, c: usize) {
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        self.command(worker, Command::CreateSubscriber { peer });
    }

    /// Subscribes client `c` to `track` published on worker `origin`; for a remote origin,
    /// the origin first adds the client's worker as a sink.
    pub fn subscribe(&mut self, c: usize, track: TrackId, kind: Kind, origin: usize) {
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        if origin != worker {
            self.command(
                origin,
                Command::AddSink {
                    track,
                    worker: WorkerId(worker as u16),
                },
            );
        }
        self.command(
            worker,
            Command::Subscribe {
                peer,
                track,
                kind,
                origin: WorkerId(origin as u16),
            },
        );
    }

    /// Client `c` asks for simulcast or spatial `layer` of `track` (`None`: off).
    pub fn set_layer(&mut self, c: usize, track: TrackId, layer: Option<u8>) {
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        self.command(worker, Command::SetLayer { peer, track, layer });
    }

    /// The opening of most stories: Alice on engine `alice_worker` publishes audio and
    /// video, Bob on `bob_worker` subscribes to both, and everyone connects. Returns
    /// (alice, bob, alice's tracks).
    pub fn alice_to_bob(
        &mut self,
        alice_worker: usize,
        bob_worker: usize,
    ) -> (usize, usize, Published) {
        let alice = self.add_client("alice", alice_worker);
        let bob = self.add_client("bob", bob_worker);
        let tracks = self.publish(alice);
        self.create_subscriber(bob);
        self.subscribe_all(bob, tracks);
        self.connect_all();
        (alice, bob, tracks)
    }

    /// Subscribes client `c` to both tracks of a publisher.
    pub fn subscribe_all(&mut self, c: usize, p: Published) {
        self.subscribe(c, p.audio, Kind::Audio, p.worker);
        self.subscribe(c, p.video, Kind::Video, p.worker);
    }

    /// Client `c` sends one audio packet; it leaves right away.
    pub fn send_audio(&mut self, c: usize) -> Vec<u8> {
        self.send(c, MediaKind::Audio, false)
    }

    /// Client `c` sends one single-packet frame on simulcast layer `layer`.
    pub fn send_layer(&mut self, c: usize, layer: usize, keyframe: bool) -> Vec<u8> {
        let now = self.now;
        let client = &mut self.clients[c];
        let payload = client.write_layer(now, layer, keyframe);
        client.timeout(now);
        client.drain(now, &mut self.queue);
        self.pump();
        payload
    }

    /// Client `c` sends one picture of `spatial_layers` spatial layers in `codec` on its
    /// video m-line (published with [`Net::publish`]); it leaves right away.
    pub fn send_svc_picture(
        &mut self,
        c: usize,
        codec: SvcCodec,
        spatial_layers: u8,
        keyframe: bool,
    ) {
        let now = self.now;
        let client = &mut self.clients[c];
        client.write_svc_picture(now, codec, spatial_layers, keyframe);
        client.timeout(now);
        client.drain(now, &mut self.queue);
        self.pump();
    }

    /// Client `c` sends one packet of `kind` with payload type `pt`, `payload` and, if
    /// given, a dependency descriptor, whatever they hold (not recorded as sent).
    pub fn send_raw(
        &mut self,
        c: usize,
        kind: MediaKind,
        pt: str0m::media::Pt,
        payload: Vec<u8>,
        dd: Option<Vec<u8>>,
    ) {
        let now = self.now;
        let client = &mut self.clients[c];
        let (mid, k) = match kind {
            MediaKind::Audio => (client.audio_mid, 0),
            MediaKind::Video => (client.video_mid, 1),
        };
        let seq = client.next_seq[k];
        client.next_seq[k] += 1;
        let ts = client.next_ts[k];
        let mut ext = ExtensionValues::default();
        if let Some(dd) = dd {
            ext.user_values.set(DdBytes(dd.into()));
        }
        let mut api = client.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid.expect("the client publishes this kind"), None)
            .expect("send stream");
        tx.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), ts, now, payload).ext_vals(ext));
        client.timeout(now);
        client.drain(now, &mut self.queue);
        self.pump();
    }

    /// Client `c` tells the engine, by REMB on the stream carrying `track`, that it can
    /// receive `bps`.
    pub fn send_remb(&mut self, c: usize, track: TrackId, bps: u64) {
        let mid = self.slot_mid(c, track).expect("a negotiated slot");
        let now = self.now;
        let client = &mut self.clients[c];
        let mut api = client.rtc.direct_api();
        let rx = api.stream_rx_by_mid(mid, None).expect("a receive stream");
        rx.request_remb(str0m::bwe::Bitrate::bps(bps));
        client.timeout(now);
        client.drain(now, &mut self.queue);
        self.pump();
    }

    /// Client `c` sends one single-packet video frame; it leaves right away.
    pub fn send_video(&mut self, c: usize, keyframe: bool) -> Vec<u8> {
        self.send(c, MediaKind::Video, keyframe)
    }

    fn send(&mut self, c: usize, kind: MediaKind, keyframe: bool) -> Vec<u8> {
        let payload = self.queue_media(c, kind, keyframe);
        self.pump();
        payload
    }

    /// Client `c` sends one single-packet frame of `kind` that waits in the network until
    /// the next [`Net::pump`]: packets queued together reach the engine in one batch, and
    /// the engine runs one timeout pass per touched peer for all of them, as a loaded
    /// worker does.
    pub fn queue_media(&mut self, c: usize, kind: MediaKind, keyframe: bool) -> Vec<u8> {
        let now = self.now;
        let client = &mut self.clients[c];
        let payload = client.write(now, kind, keyframe);
        // write_rtp only queues: a timeout pass sends it.
        client.timeout(now);
        client.drain(now, &mut self.queue);
        payload
    }

    /// Advances virtual time by `dt`: every engine and every client runs its timers, and the
    /// network delivers until nothing moves.
    pub fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        let busy = Instant::now();
        for e in &mut self.engines {
            e.handle_timeout(now);
        }
        self.engine_busy += busy.elapsed();
        for c in &mut self.clients {
            c.timeout(now);
            c.drain(now, &mut self.queue);
        }
        self.pump();
    }

    /// Runs for `d` of virtual time in steps of [`STEP`].
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(STEP);
        }
    }

    /// Runs until `done` holds; panics with `what` after `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(
                self.now < end,
                "timed out after {limit:?} of virtual time waiting for: {what}"
            );
            self.step(STEP);
        }
    }

    /// Runs until every client and its engine peer are connected.
    pub fn connect_all(&mut self) {
        let all: Vec<usize> = (0..self.clients.len()).collect();
        self.connect(&all);
    }

    /// Runs until the given clients and their engine peers are connected.
    pub fn connect(&mut self, clients: &[usize]) {
        self.run_until(Duration::from_secs(10), "peers connected", |net| {
            clients.iter().all(|&i| {
                let c = &net.clients[i];
                c.connected
                    && net.saw(
                        c.worker,
                        |e| matches!(e, Event::PeerConnected { peer } if *peer == c.peer),
                    )
            })
        });
    }

    /// Pushes everything queued through engines, pipes and clients until nothing moves.
    pub fn pump(&mut self) {
        for _round in 0..100_000 {
            let mut moved = false;
            let now = self.now;
            for w in 0..self.engines.len() {
                loop {
                    let busy = Instant::now();
                    let out = self.engines[w].poll_output();
                    self.engine_busy += busy.elapsed();
                    let Some(out) = out else { break };
                    moved = true;
                    self.on_output(w, out);
                }
            }
            for c in &mut self.clients {
                c.drain(now, &mut self.queue);
            }
            while let Some((w, cmd)) = self.commands.pop_front() {
                moved = true;
                self.engines[w].handle_command(now, cmd);
            }
            let mut touched = vec![false; self.engines.len()];
            let batch = std::mem::take(&mut self.queue);
            for d in batch {
                moved = true;
                if let Some(loss) = &mut self.loss {
                    if loss(&d) {
                        self.lost.push(d);
                        continue;
                    }
                }
                if self.record {
                    self.delivered.push(d.clone());
                }
                match self.by_addr.get(&d.destination) {
                    Some(Node::Engine(w)) => {
                        let busy = Instant::now();
                        self.engines[*w].handle_datagram(now, d.source, &d.contents);
                        self.engine_busy += busy.elapsed();
                        touched[*w] = true;
                    }
                    Some(Node::Client(i)) => {
                        let c = &mut self.clients[*i];
                        c.receive(now, &d);
                        c.drain(now, &mut self.queue);
                    }
                    None => self.undeliverable += 1,
                }
            }
            let pipes = std::mem::take(&mut self.pipes);
            let busy = Instant::now();
            for (to, msg) in pipes {
                moved = true;
                self.engines[to].handle_pipe(now, msg);
                touched[to] = true;
            }
            let relays = std::mem::take(&mut self.relays);
            for (to, from, msg) in relays {
                moved = true;
                self.engines[to].handle_relay(now, from, msg);
                touched[to] = true;
            }
            // A worker runs one timeout pass after each batch of inputs: queued RTP leaves.
            for (w, t) in touched.into_iter().enumerate() {
                if t {
                    self.engines[w].handle_timeout(now);
                }
            }
            self.engine_busy += busy.elapsed();
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    fn on_output(&mut self, w: usize, out: Output) {
        match out {
            Output::Transmit(t) => self.queue.push_back(Datagram {
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Output::Pipe { to, msg } => {
                // A worker id is local to its node.
                let to = self.engine(self.node_of(w), to.0 as usize);
                self.pipe_log.push((w, to, PipeRecord::of(&msg)));
                let msg = if self.wire_pipes {
                    // Each side reads the shared clock at its own instant, as nodes do.
                    let clock = |at| sfumato_core::wire::ClusterClock {
                        at,
                        unix_micros: 1_800_000_000_000_000 + (at - self.start).as_micros() as u64,
                    };
                    let mut bytes = Vec::new();
                    sfumato_core::wire::encode(&msg, &clock(self.now), &mut bytes)
                        .expect("a pipe message has a wire form");
                    if let Some(log) = &mut self.wire_log {
                        log.push(bytes.clone());
                    }
                    sfumato_core::wire::decode(&bytes, &clock(self.now))
                        .expect("the wire form decodes")
                } else {
                    msg
                };
                self.pipes.push_back((to, msg));
            }
            Output::Event(Event::Reply { req, result }) => {
                self.replies.insert(req, result);
            }
            Output::Relay { to, msg } => {
                assert!(
                    self.node_workers > 0,
                    "only a relay worker sends to other nodes"
                );
                let from = self.node_of(w);
                let to_node = to.0 as usize - 1;
                self.relay_log.push((from, to_node, PipeRecord::of(&msg)));
                let clock = sfumato_core::wire::ClusterClock {
                    at: self.now,
                    unix_micros: 1_800_000_000_000_000 + (self.now - self.start).as_micros() as u64,
                };
                let mut bytes = Vec::new();
                sfumato_core::wire::encode(&msg, &clock, &mut bytes)
                    .expect("a relay message has a wire form");
                let msg = sfumato_core::wire::decode(&bytes, &clock).expect("it decodes");
                let relay = self.relay(to_node);
                self.relays.push_back((relay, NodeId(from as u32 + 1), msg));
            }
            Output::Event(e) => {
                if let Event::SubscriberOffer { peer, sdp, .. } = &e {
                    self.answer_offer(w, *peer, sdp);
                }
                self.events.push((w, e));
            }
        }
    }

    /// Plays the client's side of a subscriber offer: accept it and send the answer back.
    fn answer_offer(&mut self, w: usize, peer: PeerId, sdp: &str) {
        let Some(i) = self
            .clients
            .iter()
            .position(|c| c.peer == peer && c.worker == w)
        else {
            return;
        };
        self.clients[i].remote_sdp.push(sdp.to_string());
        if self.clients[i].auto_answer {
            self.send_answer(i, sdp);
        }
    }

    /// Client `c` answers the latest offer it was sent (held back with `auto_answer` off:
    /// the subscriptions made meanwhile come in one offer after it).
    pub fn answer_latest_offer(&mut self, c: usize) {
        let sdp = self.clients[c]
            .remote_sdp
            .last()
            .cloned()
            .expect("an offer");
        self.send_answer(c, &sdp);
        self.pump();
    }

    /// Client `i` accepts subscriber offer `sdp` and sends the answer back.
    fn send_answer(&mut self, i: usize, sdp: &str) {
        let now = self.now;
        let c = &mut self.clients[i];
        let (w, peer) = (c.worker, c.peer);
        let offer = SdpOffer::from_sdp_string(sdp).expect("a parsable subscriber offer");
        let answer = c
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("the client accepts the offer");
        c.drain(now, &mut self.queue);
        let req = self.next_req;
        self.next_req += 1;
        self.commands.push_back((
            w,
            Command::SubscriberAnswer {
                req,
                peer,
                answer: answer.to_sdp_string(),
            },
        ));
    }

    /// A datagram from anywhere lands on `worker`'s socket; the worker runs its pass.
    pub fn inject(&mut self, worker: usize, source: SocketAddr, contents: &[u8]) {
        let now = self.now;
        self.engines[worker].handle_datagram(now, source, contents);
        self.engines[worker].handle_timeout(now);
        self.pump();
    }

    /// Takes the reply to `req`, if it came.
    pub fn take_reply(&mut self, req: RequestId) -> Option<Result<ReplyBody, sfumato_core::Error>> {
        self.replies.remove(&req)
    }

    /// Whether `worker` emitted an event matching `f`.
    pub fn saw(&self, worker: usize, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(w, e)| *w == worker && f(e))
    }

    /// The mid on which client `c` receives `track`, from the last subscriber offer naming it.
    pub fn slot_mid(&self, c: usize, track: TrackId) -> Option<Mid> {
        let (worker, peer) = (self.clients[c].worker, self.clients[c].peer);
        self.events.iter().rev().find_map(|(w, e)| match e {
            Event::SubscriberOffer { peer: p, slots, .. } if *w == worker && *p == peer => slots
                .iter()
                .find(|(_, t)| *t == track)
                .map(|(m, _)| Mid::from(m.as_str())),
            _ => None,
        })
    }

    /// Pipe media messages that crossed from `from` to `to` for `track`.
    pub fn pipe_media(&self, from: usize, to: usize, track: TrackId) -> Vec<u64> {
        self.piped(from, to, track).map(|(seq, _)| seq).collect()
    }

    /// The simulcast layer of each packet of `track` piped from worker `from` to `to`.
    pub fn pipe_layers(&self, from: usize, to: usize, track: TrackId) -> Vec<u8> {
        self.piped(from, to, track)
            .map(|(_, layer)| layer)
            .collect()
    }

    fn piped(
        &self,
        from: usize,
        to: usize,
        track: TrackId,
    ) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.pipe_log.iter().filter_map(move |(f, t, r)| match r {
            PipeRecord::Media {
                track: tr,
                seq,
                layer,
            } if *f == from && *t == to && *tr == track => Some((*seq, *layer)),
            _ => None,
        })
    }
}

/// Asserts that `seqs` has no gap and no step back.
pub fn assert_continuous(who: &str, seqs: &[u64]) {
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{who}: sequence numbers jump from {} to {}",
            w[0],
            w[1]
        );
    }
}
