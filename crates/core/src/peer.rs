//! One WebRTC peer connection: a str0m `Rtc` (ICE-lite, DTLS, SRTP, RTP mode) plus what the
//! SFU needs around it: the tracks it publishes, and the slots (outgoing m-lines) through
//! which it receives other peers' tracks. The peer turns str0m's events into [`PeerOut`]s
//! for the engine and never routes anything itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::ids::{Kind, PeerId, TrackId, WorkerId};
use crate::keyframe::is_keyframe_start;
use crate::packet::MediaPacket;
use crate::rewrite::{Rewriter, Source};
use crate::Error;

/// A peer that has not connected this long after creation is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How far back a subscriber's NACK can be answered. str0m keeps 3 s by default, which is most
/// of a subscription's memory; a NACK older than a second is past any useful round trip
/// (Janus answers 500 ms by default).
const RTX_HISTORY: Duration = Duration::from_secs(1);
/// Upper bound on that history in packets (str0m's default).
const RTX_PACKETS: usize = 1024;
/// Queued resends are dropped when they pass this share of what is sent (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;
/// How often one slot may ask for a keyframe while it waits for one.
const SLOT_KEYFRAME_RETRY: Duration = Duration::from_millis(300);

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
    },
    TrackRemoved(TrackId),
    /// A subscriber of `track` on this peer needs a keyframe.
    KeyframeWanted(TrackId),
    Offer {
        sdp: String,
        slots: Vec<(String, TrackId)>,
    },
    Connected,
    Closed(&'static str),
}

/// A track this peer publishes.
#[derive(Debug)]
pub struct Published {
    pub track: TrackId,
    pub kind: Kind,
    pub mid: Mid,
    params: Vec<PayloadParams>,
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
    waiting_keyframe: bool,
    last_keyframe_ask: Option<Instant>,
    /// (source track, publisher's payload type) → ours; `None` if we cannot send that codec.
    pt_map: Vec<(TrackId, Pt, Option<Pt>)>,
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
            waiting_keyframe: false,
            last_keyframe_ask: None,
            pt_map: Vec::new(),
            rtx_history_set: false,
        }
    }

    /// Whether this slot, waiting for a keyframe, may ask again now (and records the ask).
    fn may_ask_keyframe(&mut self, now: Instant) -> bool {
        let due = self
            .last_keyframe_ask
            .is_none_or(|t| now >= t + SLOT_KEYFRAME_RETRY);
        if due {
            self.last_keyframe_ask = Some(now);
        }
        due
    }
}

/// The result of offering one packet to a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    Forwarded,
    /// Not written: the slot is not ready, or the packet cannot be sent to this peer.
    Dropped,
    /// Not written; the slot waits for a keyframe and it is time to ask the origin again.
    NeedKeyframe,
}

pub struct Peer {
    pub id: PeerId,
    pub role: Role,
    rtc: Rtc,
    created: Instant,
    next_timeout: Instant,
    connected: bool,
    closed: bool,
    /// Owned by the engine: the peer is in its list of peers to flush.
    pub queued: bool,
    pub local_ufrag: String,
    pub published: Vec<Published>,
    pub slots: Vec<Slot>,
    next_track_index: u16,
    /// Publisher SSRC → index into `published`.
    ssrc_map: Vec<(u32, usize)>,
    /// The offer awaiting an answer and, per slot, whether it offered the slot active.
    pending_offer: Option<(SdpPendingOffer, Vec<bool>)>,
    events: Vec<RtcEvent>,
}

impl Peer {
    pub fn new(
        id: PeerId,
        role: Role,
        now: Instant,
        local_addr: SocketAddr,
    ) -> Result<Self, Error> {
        let mut rtc = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_stats_interval(None)
            .set_crypto_provider(crate::dtls::provider())
            .build(now);
        let candidate = Candidate::host(local_addr, Protocol::Udp)
            .map_err(|e| Error::Internal(format!("candidate {local_addr}: {e}")))?;
        rtc.add_local_candidate(candidate);
        let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok(Peer {
            id,
            role,
            rtc,
            created: now,
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
        let answer = answer.to_sdp_string();
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
            if slot.negotiated_active && !was && slot.kind == Kind::Video {
                slot.waiting_keyframe = true;
                slot.last_keyframe_ask = None;
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
        slot.waiting_keyframe = kind == Kind::Video;
        slot.last_keyframe_ask = None;
        if self.role == Role::Subscriber {
            self.renegotiate(out);
        } else if self.connected && kind == Kind::Video {
            out.push(PeerOut::KeyframeWanted(track));
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
        if !self.connected && !self.closed && now >= self.created + CONNECT_TIMEOUT {
            self.close(out, "ice timeout");
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(peer = %self.id, "timeout failed: {e}");
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
                    if slot.kind == Kind::Video && slot.track.is_some() {
                        slot.waiting_keyframe = true;
                        slot.last_keyframe_ask = None;
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
            RtcEvent::KeyframeRequest(req) => {
                if let Some(track) = self
                    .slots
                    .iter()
                    .find(|s| s.mid == Some(req.mid))
                    .and_then(|s| s.track)
                {
                    out.push(PeerOut::KeyframeWanted(track));
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
                });
                out.push(PeerOut::TrackAdded { track, kind, mid });
            }
            Role::Viewer if dir.is_sending() => self.slots.push(Slot::new(Some(mid), kind, true)),
            _ => {}
        }
    }

    fn on_rtp(&mut self, pkt: RtpPacket, out: &mut Vec<PeerOut>) {
        let ssrc = *pkt.header.ssrc;
        let index = match self.ssrc_map.iter().find(|(s, _)| *s == ssrc) {
            Some((_, i)) => *i,
            None => {
                let Some(mid) = self
                    .rtc
                    .direct_api()
                    .stream_rx(&pkt.header.ssrc)
                    .map(|s| s.mid())
                else {
                    return;
                };
                let Some(i) = self.published.iter().position(|p| p.mid == mid) else {
                    return;
                };
                self.ssrc_map.push((ssrc, i));
                i
            }
        };
        let pt = pkt.header.payload_type;
        let published = &mut self.published[index];
        let params = match published.params.iter().find(|p| p.pt() == pt) {
            Some(p) => *p,
            None => {
                let Some(p) = self.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
                    return;
                };
                published.params.push(p);
                p
            }
        };
        let keyframe = is_keyframe_start(params.spec().codec, &pkt.payload);
        out.push(PeerOut::Media(Arc::new(MediaPacket {
            track: published.track,
            kind: published.kind,
            ssrc,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            params,
            keyframe,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            received: pkt.timestamp,
            payload: pkt.payload,
        })));
    }

    /// Asks for keyframes for every slot that waits for one (throttled per slot).
    fn ask_keyframes(&mut self, now: Instant, out: &mut Vec<PeerOut>) {
        if !self.connected {
            return;
        }
        for slot in &mut self.slots {
            if let (true, true, Some(track)) =
                (slot.waiting_keyframe, slot.negotiated_active, slot.track)
            {
                if slot.may_ask_keyframe(now) {
                    out.push(PeerOut::KeyframeWanted(track));
                }
            }
        }
    }

    /// Asks the publisher of `track` (on this peer) for a keyframe.
    pub fn request_keyframe(&mut self, track: TrackId) -> bool {
        let Some(mid) = self
            .published
            .iter()
            .find(|p| p.track == track)
            .map(|p| p.mid)
        else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, None) else {
            return false;
        };
        rx.request_keyframe(KeyframeRequestKind::Pli);
        true
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
        if s.waiting_keyframe {
            if !pkt.keyframe {
                if s.may_ask_keyframe(now) {
                    return Write::NeedKeyframe;
                }
                return Write::Dropped;
            }
            s.waiting_keyframe = false;
        }
        // The payload type this peer negotiated for the publisher's codec, cached per source.
        let key = (pkt.track, pkt.params.pt());
        let pt = match s.pt_map.iter().find(|(t, p, _)| (*t, *p) == key) {
            Some(&(_, _, pt)) => pt,
            None => {
                let pt = self
                    .rtc
                    .codec_config()
                    .match_params(pkt.params)
                    .map(|p| p.pt());
                s.pt_map.push((key.0, key.1, pt));
                pt
            }
        };
        let Some(pt) = pt else { return Write::Dropped };
        let source = Source {
            track: pkt.track,
            ssrc: pkt.ssrc,
        };
        let clock_rate = pkt.params.spec().clock_rate.get();
        let Some(out) = s
            .rewriter
            .rewrite(source, pkt.seq, pkt.timestamp, clock_rate, now)
        else {
            return Write::Dropped;
        };
        let ext = ExtensionValues {
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            ..Default::default()
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Write::Dropped;
        };
        if !s.rtx_history_set {
            tx.set_rtx_cache(RTX_PACKETS, RTX_HISTORY, Some(RTX_RATIO_CAP));
            s.rtx_history_set = true;
        }
        tx.write_rtp(
            RtpWrite::new(
                pt,
                out.seq.into(),
                out.timestamp,
                pkt.received,
                pkt.payload.clone(),
            )
            .marker(pkt.marker)
            .ext_vals(ext)
            .nackable(pkt.kind == Kind::Video),
        );
        Write::Forwarded
    }
}
