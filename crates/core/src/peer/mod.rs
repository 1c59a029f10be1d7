//! One WebRTC peer connection: the life of its str0m `Rtc` (ICE-lite, DTLS, SRTP, RTP mode)
//! from creation to close, its inputs (datagrams, time) and the events it turns into
//! [`PeerOut`]s for the engine. The peer never routes anything itself.
//!
//! Around the `Rtc`, one file per job: `negotiate` (offers, answers, slots bound to
//! tracks), `ingress` (published tracks, received RTP → [`MediaPacket`]), `layers` (which
//! layer each slot should get: requests, downlink allocation, demand), `egress` (a
//! forwarded packet → str0m's send stream), `slot` (the state of one outgoing m-line),
//! `meter` (counters and per-stream measures), `channels` (the data channels of a
//! publishing peer).
//! Which packets a slot forwards is decided outside, in [`crate::forward`].

mod channels;
mod egress;
mod ingress;
mod layers;
mod meter;
mod negotiate;
mod slot;

pub use channels::{configs as channel_configs, Sent};
pub use egress::Write;
pub use ingress::Published;
pub use meter::PeerCounts;
pub use slot::Slot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpPendingOffer;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::Extension;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::api::Layers;
use crate::dd::{self, DdExtension};
use crate::ids::{Kind, PeerId, TrackId};
use crate::packet::MediaPacket;
use crate::Error;

/// A peer that has not connected this long after it should have started to is closed
/// (`Peer::connect_from`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Our id for AV1's dependency descriptor extension (free in str0m's standard map).
const DD_EXTENSION_ID: u8 = 12;
/// The downlink estimate a subscribing peer starts from, before feedback refines it.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1_000);

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
    /// A data message (a send frame, unread) arrived on one of its data channels.
    Data(Vec<u8>),
    /// Its reliable data channel opened (true) or closed (false).
    DataChannel(bool),
    /// A message on a channel that is not one of ours.
    DataIgnored,
}

/// Tests only: the calls into a peer that a test can make panic, as a bug in str0m would.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Receive,
    Write,
    Subscribe,
    Unsubscribe,
    KeyframeRequest,
    Close,
}

pub struct Peer {
    pub id: PeerId,
    pub role: Role,
    /// Tests only: the next call of this kind panics (`Engine::fail_peer_at`).
    #[cfg(feature = "fault-injection")]
    pub fail_at: Option<Fault>,
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
    /// Counters for the worker's stats, taken by the engine after each drain.
    counts: PeerCounts,
    /// Each str0m stream as last measured (`meter`).
    meters: Vec<meter::StreamMeter>,
    /// The peer's latest round-trip time (str0m's peer stats), for streams without their own.
    rtt: Option<Duration>,
    /// A publishing peer's data channels.
    channels: Option<channels::Channels>,
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
            .set_stats_interval(Some(meter::STATS_INTERVAL))
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
        let mut rtc = channels::configure(config).build(now);
        let channels = (role == Role::Publisher).then(|| channels::Channels::create(&mut rtc));
        let candidate = Candidate::host(local_addr, Protocol::Udp)
            .map_err(|e| Error::Internal(format!("candidate {local_addr}: {e}")))?;
        rtc.add_local_candidate(candidate);
        let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok(Peer {
            id,
            role,
            #[cfg(feature = "fault-injection")]
            fail_at: None,
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
            counts: PeerCounts::default(),
            meters: Vec::new(),
            rtt: None,
            channels,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
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
        self.inject(Fault::Receive);
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
        self.allocate_if_due(now, out);
    }

    /// Tests only: panics if this call is the one [`Peer::fail_at`] names.
    #[cfg(feature = "fault-injection")]
    fn inject(&self, at: Fault) {
        if self.fail_at == Some(at) {
            panic!("injected failure in {at:?}");
        }
    }

    /// Writes a deliver frame on its data channel ([`Sent::Closed`] without one open).
    pub fn write_data(&mut self, reliable: bool, ordered: bool, frame: &[u8]) -> Sent {
        #[cfg(feature = "fault-injection")]
        self.inject(Fault::Write);
        match &self.channels {
            Some(c) if c.is_open() => c.write(&mut self.rtc, reliable, ordered, frame),
            _ => Sent::Closed,
        }
    }

    pub fn close(&mut self, out: &mut Vec<PeerOut>, reason: &'static str) {
        #[cfg(feature = "fault-injection")]
        self.inject(Fault::Close);
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
                self.on_track_stopped(m.mid, out);
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
                match req.kind {
                    KeyframeRequestKind::Pli => self.counts.plis_in += 1,
                    KeyframeRequestKind::Fir => self.counts.firs_in += 1,
                }
                self.on_keyframe_request(req.mid, out)
            }
            RtcEvent::MediaEgressStats(s) => self.on_egress_stats(s),
            RtcEvent::MediaIngressStats(s) => self.on_ingress_stats(s),
            RtcEvent::PeerStats(s) => self.on_peer_stats(s),
            RtcEvent::ChannelOpen(id, _)
                if self.channels.as_mut().is_some_and(|c| c.opened(id)) =>
            {
                out.push(PeerOut::DataChannel(true));
            }
            RtcEvent::ChannelClose(id) if self.channels.as_mut().is_some_and(|c| c.closed(id)) => {
                out.push(PeerOut::DataChannel(false));
            }
            RtcEvent::ChannelData(d) => {
                if self.channels.as_ref().is_some_and(|c| c.owns(d.id)) {
                    out.push(PeerOut::Data(d.data));
                } else {
                    out.push(PeerOut::DataIgnored);
                }
            }
            _ => {}
        }
    }
}
