//! One WebRTC peer connection: a str0m `Rtc` (ICE-lite, DTLS, SRTP, RTP mode) plus what the
//! SFU needs around it: the tracks it publishes, and the slots (outgoing m-lines) through
//! which it receives other peers' tracks. The peer turns str0m's events into [`PeerOut`]s
//! for the engine and never routes anything itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Rids};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{Extension, ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc, RtcConfig};

use str0m::bwe::{Bitrate, BweKind};

use crate::alloc::{allocate, cumulative, LayerRates, Want};
use crate::api::Layers;
use crate::dd::{self, DdBytes, DdExtension, Templates};
use crate::forward::{Action, Forwarder, HIGHEST_LAYER};
use crate::ids::{Kind, PeerId, TrackId, WorkerId};
use crate::keyframe::is_keyframe_start;
use crate::packet::{MediaPacket, ALL_LAYERS, MAX_LAYERS};
use crate::red;
use crate::rewrite::{Rewriter, Source};
use crate::svc::SvcLayer;
use crate::temporal::{TemporalLayer, ALL_TEMPORAL};
use crate::vp8::Vp8Rewriter;
use crate::vp9;
use crate::Error;

/// A peer that has not connected this long after it should have started to is closed
/// (`Peer::connect_from`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How far back a subscriber's NACK can be answered. str0m keeps 3 s by default, which is most
/// of a subscription's memory; a NACK older than a second is past any useful round trip
/// (Janus answers 500 ms by default).
const RTX_HISTORY: Duration = Duration::from_secs(1);
/// Upper bound on that history in packets (str0m's default).
const RTX_PACKETS: usize = 1024;
/// Queued resends are dropped when they pass this share of what is sent (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;
/// Our id for AV1's dependency descriptor extension (free in str0m's standard map).
const DD_EXTENSION_ID: u8 = 12;
/// The downlink estimate a subscribing peer starts from, before feedback refines it.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1_000);
/// How often a subscriber's layers are reallocated within its estimate.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(500);
/// Share of the estimate given to media; the rest is headroom for retransmissions and RTCP.
const ESTIMATE_USE: f64 = 0.9;
/// A track moved down for lack of bandwidth moves up again only after this long (no
/// flapping, no keyframe storms); moving down is immediate.
const UPGRADE_HOLD: Duration = Duration::from_secs(2);
/// A layer the subscriber just asked for is given at once and kept this long whatever the
/// estimate, while str0m probes for the bandwidth it needs: an estimate that followed a low
/// layer (measured down to 198 kbit/s) takes seconds to grow to a top layer's rate.
const REQUEST_GRACE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client offers and sends; we receive its tracks.
    Publisher,
    /// We offer and send; renegotiated as subscriptions change.
    Subscriber,
    /// The client offers recvonly m-lines (WHEP); we fill them, never renegotiate.
    Viewer,
}

/// What a peer hands to the engine.
#[derive(Debug)]
pub enum PeerOut {
    Transmit(Transmit),
    Media(Arc<MediaPacket>),
    TrackAdded {
        track: TrackId,
        kind: Kind,
        mid: Mid,
        /// Simulcast layers negotiated (1 without simulcast).
        layers: u8,
    },
    TrackRemoved(TrackId),
    /// A received RTP packet that could not be routed.
    Dropped,
    /// A subscriber of `track` on this peer needs a keyframe of simulcast layer `layer`.
    KeyframeWanted {
        track: TrackId,
        layer: u8,
    },
    Offer {
        sdp: String,
        slots: Vec<(String, TrackId)>,
    },
    Connected,
    /// A subscriber's downlink estimate (if estimated) and the layer each of its video
    /// tracks now gets.
    Allocated {
        estimate_bps: Option<u64>,
        layers: Layers,
    },
    Closed(&'static str),
}

/// A track this peer publishes.
#[derive(Debug)]
pub struct Published {
    pub track: TrackId,
    pub kind: Kind,
    pub mid: Mid,
    params: Vec<PayloadParams>,
    /// Simulcast layers by rid, lowest first (the order of the offer's `a=simulcast`, as
    /// browsers list `sendEncodings`); empty without simulcast.
    rids: Vec<Rid>,
    /// Spatial layers of a scalable (SVC) stream, from its latest scalability structure.
    spatial_layers: u8,
    /// Frame templates per simulcast layer (one stream each), from the latest dependency
    /// descriptor structure: AV1's layers, and the temporal layers of the other codecs
    /// when browsers describe them there (Chrome's VP8 carries no TID in its payload
    /// descriptor once the dependency descriptor is negotiated).
    templates: [Templates; MAX_LAYERS],
}

impl Published {
    /// Completes a scalable packet's layer fields with the stream's spatial layer count,
    /// learnt from the structures the publisher announces (or the highest layer seen).
    fn svc_layer(&mut self, mut l: SvcLayer) -> SvcLayer {
        let seen = l.spatial_layers.unwrap_or(l.spatial + 1);
        if l.spatial_layers.is_some() || seen > self.spatial_layers {
            self.spatial_layers = seen;
        }
        l.spatial_layers = Some(self.spatial_layers);
        l
    }
}

impl Published {
    /// The rid of `layer` (the highest one if there are fewer), `None` without simulcast.
    fn rid(&self, layer: u8) -> Option<Rid> {
        let last = self.rids.len().checked_sub(1)?;
        Some(self.rids[usize::from(layer).min(last)])
    }
}

/// An outgoing m-line of a subscribing peer and the track it carries.
#[derive(Debug)]
pub struct Slot {
    pub mid: Option<Mid>,
    pub kind: Kind,
    pub track: Option<TrackId>,
    pub origin: WorkerId,
    want_active: bool,
    negotiated_active: bool,
    rewriter: Rewriter,
    vp8: Vp8Rewriter,
    /// The best simulcast layer the subscriber asked for (`None`: off).
    requested: Option<u8>,
    /// Which packets of the track are forwarded; its `target` is the request, lowered to
    /// fit the downlink.
    forward: Forwarder,
    /// When `target` was last lowered for lack of bandwidth.
    lowered: Option<Instant>,
    /// When the subscriber last asked for a layer ([`Peer::set_layer`]).
    asked: Option<Instant>,
    /// Bitrates of the track's layers as they pass by (per spatial layer for SVC).
    rates: LayerRates,
    /// Whether the track is scalable (SVC): its layers add up instead of replacing each
    /// other.
    svc: bool,
    /// Allocation priority, higher first.
    priority: u8,
    /// How each source's payload is sent on this slot, cached per (track, payload type,
    /// RED or not).
    pt_map: Vec<PtMapping>,
    /// Whether the outgoing stream's retransmission history has been sized.
    rtx_history_set: bool,
}

impl Slot {
    /// A slot that carries nothing yet; `negotiated` when its m-line is already active.
    fn new(mid: Option<Mid>, kind: Kind, negotiated: bool) -> Self {
        Slot {
            mid,
            kind,
            track: None,
            origin: WorkerId(0),
            want_active: negotiated,
            negotiated_active: negotiated,
            rewriter: Rewriter::new(),
            vp8: Vp8Rewriter::new(),
            requested: Some(HIGHEST_LAYER),
            forward: Forwarder::default(),
            lowered: None,
            asked: None,
            rates: LayerRates::new(),
            svc: false,
            priority: 0,
            pt_map: Vec::new(),
            rtx_history_set: false,
        }
    }

    /// Nothing more is forwarded until a keyframe (the receiver has to start decoding over).
    fn restart(&mut self) {
        self.rewriter.rebase();
        self.forward.restart();
    }

    /// Whether this slot waits for a keyframe before it can forward anything.
    fn waiting_keyframe(&self) -> bool {
        self.kind == Kind::Video && self.forward.current.is_none()
    }
}

/// How one source payload type is sent to one subscriber.
#[derive(Debug, Clone, Copy)]
struct PtMapping {
    track: TrackId,
    /// The publisher's (primary) payload type, and whether its packets come as RED.
    from: Pt,
    red_in: bool,
    /// Our payload type for it (`None`: the subscriber cannot receive that codec) and
    /// whether that is RED (else a RED source is sent as its primary block).
    to: Option<Pt>,
    red_out: bool,
}

/// The result of offering one packet to a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    Forwarded,
    /// Written; the slot waits to move up to a higher layer of a scalable stream, and it is
    /// time to ask the origin for a keyframe again.
    ForwardedWantsKeyframe,
    /// Not written: the slot is not ready, or the packet cannot be sent to this peer.
    Dropped,
    /// Not written; the slot waits for a keyframe and it is time to ask the origin again.
    NeedKeyframe,
}

impl Write {
    fn not_forwarded(ask_keyframe: bool) -> Self {
        if ask_keyframe {
            Write::NeedKeyframe
        } else {
            Write::Dropped
        }
    }
}

pub struct Peer {
    pub id: PeerId,
    pub role: Role,
    /// Tests only: the next datagram's handling panics (`Engine::fail_peer_on_next_input`).
    #[cfg(feature = "fault-injection")]
    pub fail_next_input: bool,
    rtc: Rtc,
    /// Since when the peer should be connecting (it closes if not connected
    /// `CONNECT_TIMEOUT` later): its creation for a peer that answers the client's offer,
    /// the first offer sent for a subscribing one (with nothing to receive yet, it has no
    /// connection to make).
    connect_from: Option<Instant>,
    /// A subscribing peer has sent its first offer.
    offered: bool,
    next_timeout: Instant,
    connected: bool,
    closed: bool,
    /// Owned by the engine: the peer is in its list of peers to flush.
    pub queued: bool,
    pub local_ufrag: String,
    pub published: Vec<Published>,
    pub slots: Vec<Slot>,
    next_track_index: u16,
    /// Publisher SSRC → index into `published` and the stream's simulcast layer.
    ssrc_map: Vec<(u32, usize, u8)>,
    /// The offer awaiting an answer and, per slot, whether it offered the slot active.
    pending_offer: Option<(SdpPendingOffer, Vec<bool>)>,
    events: Vec<RtcEvent>,
    /// Downlink estimate in bits per second (TWCC, else REMB), for subscribing roles.
    estimate: Option<u64>,
    /// Whether this peer estimates its downlink (and so measures its slots' layer rates).
    estimating: bool,
    /// Whether the estimate comes from transport-wide feedback (else REMB, if any).
    twcc: bool,
    /// What was last reported in [`PeerOut::Allocated`].
    reported: Option<(Option<u64>, Layers)>,
    next_allocation: Instant,
}

impl Peer {
    /// `bwe`: estimate the downlink of a subscribing peer and fit its layers to it (str0m's
    /// GoogCC, which also paces what is sent to the peer).
    pub fn new(
        id: PeerId,
        role: Role,
        now: Instant,
        local_addr: SocketAddr,
        bwe: bool,
    ) -> Result<Self, Error> {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_stats_interval(None)
            .set_crypto_provider(crate::dtls::provider())
            // Opus with RED, for the peers that offer or accept it (passed through, `red`).
            .enable_opus(true, true)
            // AV1's dependency descriptor, read for scalable streams and passed through.
            .set_extension(
                DD_EXTENSION_ID,
                Extension::with_serializer(dd::URI, DdExtension),
            );
        let estimating = bwe && role != Role::Publisher;
        if estimating {
            // Estimate what we can send to this peer (TWCC feedback, GoogCC).
            config = config.enable_bwe(Some(INITIAL_ESTIMATE));
        }
        let mut rtc = config.build(now);
        let candidate = Candidate::host(local_addr, Protocol::Udp)
            .map_err(|e| Error::Internal(format!("candidate {local_addr}: {e}")))?;
        rtc.add_local_candidate(candidate);
        let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok(Peer {
            id,
            role,
            #[cfg(feature = "fault-injection")]
            fail_next_input: false,
            rtc,
            connect_from: (role != Role::Subscriber).then_some(now),
            offered: false,
            next_timeout: now,
            connected: false,
            closed: false,
            queued: false,
            local_ufrag,
            published: Vec::new(),
            slots: Vec::new(),
            next_track_index: 0,
            ssrc_map: Vec::new(),
            pending_offer: None,
            events: Vec::new(),
            estimate: None,
            estimating,
            twcc: false,
            reported: None,
            next_allocation: now,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// Applies a client's offer (publisher or viewer) and returns our answer. The tracks (or
    /// slots) of the offer are known from here on; str0m only announces them once DTLS is up.
    pub fn accept_offer(&mut self, sdp: &str, out: &mut Vec<PeerOut>) -> Result<String, Error> {
        if self.role == Role::Subscriber {
            return Err(Error::WrongRole(
                "a subscribing peer takes answers, not offers",
            ));
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| Error::BadSdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| Error::Negotiation(e.to_string()))?;
        let mut answer = answer.to_sdp_string();
        if self.role == Role::Publisher {
            answer = crate::answer::for_publisher(sdp, &answer);
        }
        for line in answer.lines() {
            let Some(mid) = line.strip_prefix("a=mid:") else {
                continue;
            };
            let mid = Mid::from(mid.trim());
            if let Some((kind, dir)) = self.rtc.media(mid).map(|m| (m.kind(), m.direction())) {
                self.on_media_added(mid, kind, dir, out);
            }
        }
        Ok(answer)
    }

    /// Applies the client's answer to our last offer.
    pub fn accept_answer(
        &mut self,
        now: Instant,
        sdp: &str,
        out: &mut Vec<PeerOut>,
    ) -> Result<(), Error> {
        let Some((pending, offered)) = self.pending_offer.take() else {
            return Err(Error::Negotiation("no offer is pending".into()));
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                self.pending_offer = Some((pending, offered));
                return Err(Error::BadSdp(e.to_string()));
            }
        };
        // str0m consumes the pending offer even on failure: a failed answer leaves the
        // session where it was, and the next renegotiation offers everything again.
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| Error::Negotiation(e.to_string()))?;
        for (slot, active) in self.slots.iter_mut().zip(offered) {
            let was = slot.negotiated_active;
            slot.negotiated_active = active && slot.mid.is_some();
            if slot.negotiated_active && !was {
                slot.restart();
            }
        }
        self.ask_keyframes(now, out);
        self.renegotiate(out);
        Ok(())
    }

    /// Binds `track` to a slot. Returns false if the peer has no room for it.
    pub fn subscribe(
        &mut self,
        track: TrackId,
        kind: Kind,
        origin: WorkerId,
        out: &mut Vec<PeerOut>,
    ) -> bool {
        if self.slots.iter().any(|s| s.track == Some(track)) {
            return true;
        }
        let free = match self.role {
            Role::Publisher => return false,
            Role::Viewer => self
                .slots
                .iter()
                .position(|s| s.kind == kind && s.track.is_none() && s.negotiated_active),
            Role::Subscriber => self.slots.iter().position(|s| {
                s.kind == kind && s.track.is_none() && !s.want_active && !s.negotiated_active
            }),
        };
        let index = match (free, self.role) {
            (Some(i), _) => i,
            (None, Role::Subscriber) => {
                self.slots.push(Slot::new(None, kind, false));
                self.slots.len() - 1
            }
            (None, _) => return false,
        };
        let slot = &mut self.slots[index];
        slot.track = Some(track);
        slot.origin = origin;
        slot.want_active = true;
        slot.restart();
        // A reused slot measures its new track from scratch.
        slot.rates = LayerRates::new();
        slot.svc = false;
        slot.forward.temporal_target = ALL_TEMPORAL;
        slot.forward.temporal = ALL_TEMPORAL;
        let layer = slot.forward.target.unwrap_or(0);
        if self.role == Role::Subscriber {
            self.renegotiate(out);
        } else if self.connected && kind == Kind::Video {
            out.push(PeerOut::KeyframeWanted { track, layer });
        }
        true
    }

    pub fn unsubscribe(&mut self, track: TrackId, out: &mut Vec<PeerOut>) {
        for slot in self.slots.iter_mut().filter(|s| s.track == Some(track)) {
            slot.track = None;
            if self.role == Role::Subscriber {
                slot.want_active = false;
            }
        }
        if self.role == Role::Subscriber {
            self.renegotiate(out);
        }
    }

    /// Offers the pending slot changes, unless an offer already awaits its answer.
    fn renegotiate(&mut self, out: &mut Vec<PeerOut>) {
        if self.role != Role::Subscriber || self.pending_offer.is_some() || self.closed {
            return;
        }
        let mut api = self.rtc.sdp_api();
        for slot in &mut self.slots {
            match slot.mid {
                None if slot.want_active => {
                    let (stream, track) = match slot.track {
                        Some(t) => (format!("p{}", t.peer), t.to_string()),
                        None => ("-".to_string(), "-".to_string()),
                    };
                    let kind = match slot.kind {
                        Kind::Audio => MediaKind::Audio,
                        Kind::Video => MediaKind::Video,
                    };
                    slot.mid = Some(api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(stream),
                        Some(track),
                        None,
                    ));
                }
                None => {}
                Some(mid) => {
                    let dir = if slot.want_active {
                        Direction::SendOnly
                    } else {
                        Direction::Inactive
                    };
                    api.set_direction(mid, dir);
                }
            }
        }
        if let Some((offer, pending)) = api.apply() {
            let offered: Vec<bool> = self
                .slots
                .iter()
                .map(|s| s.want_active && s.mid.is_some())
                .collect();
            let slots = self
                .slots
                .iter()
                .filter(|s| s.want_active)
                .filter_map(|s| Some((s.mid?.to_string(), s.track?)))
                .collect();
            self.pending_offer = Some((pending, offered));
            self.offered = true;
            out.push(PeerOut::Offer {
                sdp: offer.to_sdp_string(),
                slots,
            });
        }
    }

    /// Feeds one datagram. Returns false if str0m did not accept it.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.fail_next_input {
            panic!("injected failure");
        }
        let Ok(contents) = Receive::new(Protocol::Udp, source, destination, data) else {
            return false;
        };
        match self.rtc.handle_input(Input::Receive(now, contents)) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(peer = %self.id, "input rejected: {e}");
                false
            }
        }
    }

    /// Lets time pass: sends what is queued, retransmits, reports.
    pub fn timeout(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        if self.offered && self.connect_from.is_none() {
            self.connect_from = Some(now);
        }
        let overdue = self
            .connect_from
            .is_some_and(|t| now >= t + CONNECT_TIMEOUT);
        if !self.connected && !self.closed && overdue {
            self.close(out, "ice timeout");
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(peer = %self.id, "timeout failed: {e}");
        }
        if self.estimating && now >= self.next_allocation {
            self.next_allocation = now + ALLOCATION_INTERVAL;
            self.allocate(now, out);
        }
    }

    /// Gives each video track the best layer that fits the downlink estimate (see `alloc`).
    fn allocate(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        for slot in &mut self.slots {
            slot.rates.update(now, ALLOCATION_INTERVAL / 2);
        }
        let Some(estimate) = self.estimate else {
            return;
        };
        let live = |s: &Slot| s.track.is_some() && s.negotiated_active;
        let audio: u64 = self
            .slots
            .iter()
            .filter(|s| live(s) && s.kind == Kind::Audio)
            .map(|s| s.rates.layer_bps()[0])
            .sum();
        let video: Vec<usize> = (0..self.slots.len())
            .filter(|&i| live(&self.slots[i]) && self.slots[i].kind == Kind::Video)
            .collect();
        let wants: Vec<Want> = video
            .iter()
            .map(|&i| {
                let s = &self.slots[i];
                Want {
                    requested: s.requested,
                    rates: cumulative(s.rates.bps(), s.svc),
                    priority: s.priority,
                }
            })
            .collect();
        let budget = ((estimate as f64 * ESTIMATE_USE) as u64).saturating_sub(audio);
        let result = allocate(budget, &wants);
        tracing::debug!(peer = %self.id, estimate, audio, ?wants, ?result, "allocation");
        for (&i, &given) in video.iter().zip(&result.layers) {
            let s = &self.slots[i];
            let now_given = s.forward.target.map(|l| (l, s.forward.temporal_target));
            if given == now_given {
                continue;
            }
            let up = given > now_given;
            if up && s.lowered.is_some_and(|t| now < t + UPGRADE_HOLD) {
                continue;
            }
            if !up && s.asked.is_some_and(|t| now < t + REQUEST_GRACE) {
                continue;
            }
            // Lowered below the request: the link, not the subscriber, decided.
            if !up && given < s.requested.map(|l| (l, ALL_TEMPORAL)) {
                self.slots[i].lowered = Some(now);
            }
            let layer = given.map(|(l, _)| l);
            self.slots[i].forward.temporal_target = given.map_or(ALL_TEMPORAL, |(_, t)| t);
            if layer != self.slots[i].forward.target {
                self.retarget(now, i, layer, out);
            }
        }
        // Probe towards what everyone asked for; keep sustaining what is sent.
        let used = Bitrate::bps(result.used + audio);
        let desired = Bitrate::bps(result.desired.max(result.used) + audio);
        self.rtc.bwe().set_bitrate(used, desired);
        self.report(out);
    }

    /// Reports the estimate and the video layers if they changed (the estimate by > 10%).
    fn report(&mut self, out: &mut Vec<PeerOut>) {
        let layers: Layers = self
            .slots
            .iter()
            .filter(|s| s.kind == Kind::Video && s.negotiated_active)
            .filter_map(|s| Some((s.track?, s.forward.target, s.forward.temporal_target)))
            .collect();
        let estimate = self.estimate;
        let changed = match &self.reported {
            None => true,
            Some((e, l)) => {
                *l != layers
                    || match (estimate, *e) {
                        (Some(a), Some(b)) => a.abs_diff(b) * 10 > b,
                        (a, b) => a != b,
                    }
            }
        };
        if changed {
            self.reported = Some((estimate, layers.clone()));
            out.push(PeerOut::Allocated {
                estimate_bps: estimate,
                layers,
            });
        }
    }

    /// Points slot `i` at `layer` (`None`: no packets), asking for the keyframe a switch
    /// needs; the current layer keeps flowing until it arrives.
    fn retarget(&mut self, now: Instant, i: usize, layer: Option<u8>, out: &mut Vec<PeerOut>) {
        let connected = self.connected;
        let slot = &mut self.slots[i];
        slot.forward.target = layer;
        match layer {
            // Resuming needs a keyframe: the decoder missed everything in between.
            None => slot.restart(),
            Some(layer) => {
                if let (true, true, Kind::Video, Some(track)) =
                    (connected, slot.negotiated_active, slot.kind, slot.track)
                {
                    if slot.forward.current != Some(layer) {
                        slot.forward.last_keyframe_ask = Some(now);
                        out.push(PeerOut::KeyframeWanted { track, layer });
                    }
                }
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<PeerOut>, reason: &'static str) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect();
            out.push(PeerOut::Closed(reason));
        }
    }

    /// Drains str0m's output until it asks for a timeout; must follow every input.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => out.push(PeerOut::Transmit(t)),
                Ok(Output::Event(e)) => self.events.push(e),
                Err(e) => {
                    tracing::debug!(peer = %self.id, "poll_output failed: {e}");
                    self.close(out, "rtc error");
                    break;
                }
            }
        }
        // Taken out while the events are handled, then put back: the buffer is reused.
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            self.on_event(now, e, out);
        }
        self.events = events;
        if !self.closed && !self.rtc.is_alive() {
            self.close(out, "closed");
        }
        if self.closed {
            self.next_timeout = now + Duration::from_secs(3600);
        }
    }

    fn on_event(&mut self, now: Instant, e: RtcEvent, out: &mut Vec<PeerOut>) {
        match e {
            RtcEvent::Connected => {
                self.connected = true;
                out.push(PeerOut::Connected);
                for slot in &mut self.slots {
                    if slot.track.is_some() {
                        slot.restart();
                    }
                }
                self.ask_keyframes(now, out);
            }
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.close(out, "ice disconnected");
            }
            RtcEvent::Closed => self.close(out, "closed by remote"),
            RtcEvent::MediaAdded(m) => self.on_media_added(m.mid, m.kind, m.direction, out),
            RtcEvent::MediaChanged(m)
                if self.role == Role::Publisher && !m.direction.is_receiving() =>
            {
                if let Some(i) = self.published.iter().position(|p| p.mid == m.mid) {
                    let p = self.published.remove(i);
                    self.ssrc_map.clear();
                    out.push(PeerOut::TrackRemoved(p.track));
                }
            }
            RtcEvent::RtpPacket(pkt) => self.on_rtp(pkt, out),
            RtcEvent::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe: true,
            }) => {
                self.twcc = true;
                self.estimate = Some(estimate.as_u64());
            }
            // Only for peers without transport-wide feedback.
            RtcEvent::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) if !self.twcc => {
                self.estimate = Some(estimate.as_u64());
            }
            RtcEvent::KeyframeRequest(req) => {
                if let Some(slot) = self.slots.iter().find(|s| s.mid == Some(req.mid)) {
                    if let (Some(track), Some(layer)) =
                        (slot.track, slot.forward.current.or(slot.forward.target))
                    {
                        out.push(PeerOut::KeyframeWanted { track, layer });
                    }
                }
            }
            _ => {}
        }
    }

    fn on_media_added(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        dir: Direction,
        out: &mut Vec<PeerOut>,
    ) {
        if self.published.iter().any(|p| p.mid == mid)
            || self.slots.iter().any(|s| s.mid == Some(mid))
        {
            return;
        }
        let kind = match kind {
            MediaKind::Audio => Kind::Audio,
            MediaKind::Video => Kind::Video,
        };
        match self.role {
            Role::Publisher if dir.is_receiving() => {
                let track = TrackId {
                    peer: self.id,
                    index: self.next_track_index,
                };
                self.next_track_index = self.next_track_index.wrapping_add(1);
                self.published.push(Published {
                    track,
                    kind,
                    mid,
                    params: Vec::new(),
                    rids: Vec::new(),
                    spatial_layers: 1,
                    templates: Default::default(),
                });
                let i = self.published.len() - 1;
                self.learn_rids(i);
                let layers = self.published[i].rids.len().max(1) as u8;
                out.push(PeerOut::TrackAdded {
                    track,
                    kind,
                    mid,
                    layers,
                });
            }
            Role::Viewer if dir.is_sending() => self.slots.push(Slot::new(Some(mid), kind, true)),
            _ => {}
        }
    }

    /// A received packet of a published track; one that cannot be routed (an unknown
    /// stream or payload type, a malformed RED payload) is reported dropped.
    fn on_rtp(&mut self, pkt: RtpPacket, out: &mut Vec<PeerOut>) {
        match self.media_packet(pkt) {
            Some(m) => out.push(PeerOut::Media(Arc::new(m))),
            None => out.push(PeerOut::Dropped),
        }
    }

    fn media_packet(&mut self, pkt: RtpPacket) -> Option<MediaPacket> {
        let ssrc = *pkt.header.ssrc;
        let (index, layer) = match self.ssrc_map.iter().find(|(s, _, _)| *s == ssrc) {
            Some(&(_, i, layer)) => (i, layer),
            None => {
                let (mid, rid) = self
                    .rtc
                    .direct_api()
                    .stream_rx(&pkt.header.ssrc)
                    .map(|s| (s.mid(), s.rid()))?;
                let i = self.published.iter().position(|p| p.mid == mid)?;
                self.learn_rids(i);
                let layer = match rid {
                    Some(rid) => match self.published[i].rids.iter().position(|r| *r == rid) {
                        Some(l) => l as u8,
                        None => return None, // a rid beyond the layers we forward
                    },
                    None => 0,
                };
                self.ssrc_map.push((ssrc, i, layer));
                (i, layer)
            }
        };
        let pt = pkt.header.payload_type;
        let published = &mut self.published[index];
        // The payload type's parameters; a RED payload type stands for its primary codec's.
        let of_pt = |p: &PayloadParams| p.pt() == pt || p.red() == Some(pt);
        let params = match published.params.iter().find(|p| of_pt(p)) {
            Some(p) => *p,
            None => {
                let p = self.rtc.codec_config().find(|p| of_pt(p)).copied()?;
                published.params.push(p);
                p
            }
        };
        let red_primary = if params.red() == Some(pt) {
            // Taken out once here for the subscribers without RED; a malformed one is dropped.
            Some(Arc::from(red::primary(&pkt.payload)?))
        } else {
            None
        };
        let codec = params.spec().codec;
        let keyframe = is_keyframe_start(codec, &pkt.payload);
        let vp8 = match codec {
            Codec::Vp8 => Vp8Descriptor::parse(&pkt.payload).ok(),
            _ => None,
        };
        let dd = pkt.header.ext_vals.user_values.get_arc::<DdBytes>();
        let svc = match (codec, &dd) {
            (Codec::Vp9, _) => vp9::parse(&pkt.payload),
            (Codec::Av1, Some(dd)) => published.templates[0].read(&dd.0),
            _ => None,
        }
        .map(|l| published.svc_layer(l));
        let temporal = match (&svc, &dd, codec) {
            (Some(l), _, _) => Some(l.temporal(keyframe)),
            (None, Some(dd), _) => published
                .templates
                .get_mut(usize::from(layer))
                .and_then(|t| t.read(&dd.0))
                .map(|l| l.temporal(keyframe)),
            (None, None, Codec::Vp8) => TemporalLayer::vp8(&pkt.payload, keyframe),
            _ => None,
        };
        let layers = published.rids.len().max(1) as u8;
        Some(MediaPacket {
            track: published.track,
            kind: published.kind,
            ssrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            params,
            keyframe,
            layer,
            layers,
            vp8,
            svc,
            temporal,
            dd,
            red_primary,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            received: pkt.timestamp,
            payload: pkt.payload,
        })
    }

    /// Asks for keyframes for every slot that waits for one (throttled per slot).
    fn ask_keyframes(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        if !self.connected {
            return;
        }
        for slot in &mut self.slots {
            if let (true, true, Some(track), Some(layer)) = (
                slot.waiting_keyframe(),
                slot.negotiated_active,
                slot.track,
                slot.forward.target,
            ) {
                if slot.forward.may_ask_keyframe(now) {
                    out.push(PeerOut::KeyframeWanted { track, layer });
                }
            }
        }
    }

    /// Asks the publisher of `track` (on this peer) for a keyframe of simulcast `layer`.
    pub fn request_keyframe(&mut self, track: TrackId, layer: u8) -> bool {
        let Some(i) = self.published.iter().position(|p| p.track == track) else {
            return false;
        };
        self.learn_rids(i);
        let p = &self.published[i];
        let (mid, rid) = (p.mid, p.rid(layer));
        let mut api = self.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, rid) else {
            return false;
        };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        true
    }

    /// Reads the simulcast layers negotiated for published track `i`, once.
    fn learn_rids(&mut self, i: usize) {
        let p = &mut self.published[i];
        if !p.rids.is_empty() {
            return;
        }
        if let Some(Rids::Specific(rids)) = self.rtc.media(p.mid).map(|m| m.rids_rx()) {
            p.rids = rids.iter().take(MAX_LAYERS).copied().collect();
        }
    }

    /// The simulcast layers slot `slot` needs (bit l: layer l), which its worker pipes and
    /// its publisher sends: those up to the higher of the one it forwards and the one it
    /// moves to (the lower ones are its fallback), and with an estimate up to the one
    /// requested, whose rates the allocator measures to move up; every layer for audio; none
    /// when the slot is off or carries nothing.
    pub fn demand(&self, slot: usize) -> u8 {
        let Some(s) = self.slots.get(slot).filter(|s| s.track.is_some()) else {
            return 0;
        };
        if s.kind == Kind::Audio {
            return ALL_LAYERS;
        }
        let top = s.forward.target.max(s.forward.current);
        let top = if self.estimating {
            top.max(s.requested)
        } else {
            top
        };
        match top {
            None => 0,
            Some(top) => ((2u16 << top.min(7)) - 1) as u8,
        }
    }

    /// The layer asked for and the priority of the subscription to `track`, if there is one.
    pub fn subscription(&self, track: TrackId) -> Option<(Option<u8>, u8)> {
        let s = self.slots.iter().find(|s| s.track == Some(track))?;
        Some((s.requested, s.priority))
    }

    /// Sets the allocation priority of the subscription to `track` (applied at the next
    /// allocation).
    pub fn set_priority(&mut self, track: TrackId, priority: u8) {
        for slot in self.slots.iter_mut().filter(|s| s.track == Some(track)) {
            slot.priority = priority;
        }
    }

    /// Sets the best layer the subscription to `track` may receive; `None` turns it off.
    /// Within the downlink estimate, it gets that layer or the best one that fits.
    pub fn set_layer(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: Option<u8>,
        out: &mut Vec<PeerOut>,
    ) {
        let Some(i) = self.slots.iter().position(|s| s.track == Some(track)) else {
            return;
        };
        if self.slots[i].requested == layer {
            return;
        }
        self.slots[i].requested = layer;
        self.slots[i].forward.temporal_target = ALL_TEMPORAL;
        self.retarget(now, i, layer, out);
        if self.estimate.is_some() {
            // Given at once; the allocation lowers it only if the estimate has not grown
            // to it after the grace (and probes towards it meanwhile).
            self.slots[i].lowered = None;
            self.slots[i].asked = Some(now);
            self.allocate(now, out);
        } else {
            self.report(out);
        }
    }

    /// Offers one packet to one slot of this peer.
    pub fn write(&mut self, now: Instant, slot: usize, pkt: &MediaPacket) -> Write {
        if !self.connected || self.closed {
            return Write::Dropped;
        }
        let Some(s) = self.slots.get_mut(slot) else {
            return Write::Dropped;
        };
        let Some(mid) = s.mid else {
            return Write::Dropped;
        };
        if !s.negotiated_active || s.track != Some(pkt.track) {
            return Write::Dropped;
        }
        let source = Source {
            track: pkt.track,
            ssrc: pkt.ssrc,
        };
        if self.estimating {
            let layer = pkt.svc.map_or(pkt.layer, |l| l.spatial);
            let tid = pkt.temporal.map_or(0, |t| t.tid);
            s.rates.add(now, layer, tid, pkt.payload.len());
        }
        // Learnt from what a slot that is on receives.
        if pkt.svc.is_some() && s.forward.target.is_some() {
            s.svc = true;
        }
        let decision = s.forward.decide(&pkt.view(), now);
        let marker = match decision.action {
            Action::Forward { marker } => marker,
            Action::Skip => {
                // Part of the stream this slot sends: no gap in its numbering.
                s.rewriter.skip(source, pkt.seq);
                if let Some(d) = &pkt.vp8 {
                    s.vp8.skip(source, d, &pkt.payload);
                }
                return Write::not_forwarded(decision.ask_keyframe);
            }
            Action::Drop => return Write::not_forwarded(decision.ask_keyframe),
        };
        // The payload type this peer negotiated for the publisher's codec, cached per source.
        let (from, red_in) = (pkt.params.pt(), pkt.red_primary.is_some());
        let found = s
            .pt_map
            .iter()
            .find(|m| m.track == pkt.track && m.from == from && m.red_in == red_in)
            .copied();
        let mapping = match found {
            Some(m) => m,
            None => {
                let ours = self.rtc.codec_config().match_params(pkt.params);
                let red = ours.and_then(|p| p.red()).filter(|_| red_in);
                let m = PtMapping {
                    track: pkt.track,
                    from,
                    red_in,
                    to: red.or(ours.map(|p| p.pt())),
                    red_out: red.is_some(),
                };
                s.pt_map.push(m);
                m
            }
        };
        let Some(pt) = mapping.to else {
            return Write::Dropped;
        };
        let clock_rate = pkt.params.spec().clock_rate.get();
        let Some(out) = s
            .rewriter
            .rewrite(source, pkt.seq, pkt.timestamp, clock_rate, now)
        else {
            return Write::Dropped;
        };
        let mut ext = ExtensionValues {
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            ..Default::default()
        };
        if let Some(dd) = &pkt.dd {
            // str0m keeps user extension values in a map: one small allocation (its
            // table) per packet with a dependency descriptor (AV1, Chromium's VP8); the
            // descriptor itself is shared.
            ext.user_values.set_arc(dd.clone());
        }
        let vp8_patch = pkt
            .vp8
            .as_ref()
            .and_then(|d| s.vp8.rewrite(source, d, &pkt.payload).patch(d));
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Write::Dropped;
        };
        if !s.rtx_history_set {
            tx.set_rtx_cache(RTX_PACKETS, RTX_HISTORY, Some(RTX_RATIO_CAP));
            s.rtx_history_set = true;
        }
        // A RED source to a subscriber without RED: its primary block alone.
        let payload = match (&pkt.red_primary, mapping.red_out) {
            (Some(primary), false) => primary.clone(),
            _ => pkt.payload.clone(),
        };
        let mut write = RtpWrite::new(pt, out.seq.into(), out.timestamp, pkt.received, payload)
            .marker(marker)
            .ext_vals(ext)
            .nackable(pkt.kind == Kind::Video);
        if let Some(patch) = vp8_patch {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        if decision.ask_keyframe {
            Write::ForwardedWantsKeyframe
        } else {
            Write::Forwarded
        }
    }
}
