//! The unit that moves through a room: one received RTP packet, shared by reference count
//! between every subscription and every worker pipe that forwards it.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::rtp::Vp8Descriptor;

use crate::alloc::Rates;
use crate::data::DataPacket;
use crate::dd::DdBytes;
use crate::forward::PacketView;
use crate::ids::{Kind, TrackId, WorkerId};
use crate::svc::SvcLayer;
use crate::temporal::TemporalLayer;

/// Most simulcast layers a track may have (browsers send at most three, RFC 8853 allows
/// more: the rest are not forwarded).
pub const MAX_LAYERS: usize = 4;

/// One RTP packet of a published track, as received at the track's origin worker.
#[derive(Debug)]
pub struct MediaPacket {
    pub track: TrackId,
    pub kind: Kind,
    /// SSRC of the publisher's stream; a change marks a new source (publisher restart).
    pub ssrc: u32,
    /// Extended (rollover-free) sequence number from the publisher.
    pub seq: u64,
    /// RTP timestamp from the publisher.
    pub timestamp: u32,
    pub marker: bool,
    /// The publisher's negotiated payload parameters for this packet's payload type; each
    /// subscriber maps them to its own payload type.
    pub params: PayloadParams,
    /// Whether this packet starts a keyframe (always true for audio).
    pub keyframe: bool,
    /// Simulcast layer of this packet's stream, 0 the lowest (0 without simulcast).
    pub layer: u8,
    /// How many simulcast layers the publisher announced for the track (1 without).
    pub layers: u8,
    /// The VP8 payload descriptor, parsed once at the origin (VP8 only).
    pub vp8: Option<Vp8Descriptor>,
    /// The layer fields of a scalable (SVC) stream (VP9 descriptor, AV1 dependency
    /// descriptor), read once at the origin; its `spatial_layers` is the stream's latest
    /// count, on every packet.
    pub svc: Option<SvcLayer>,
    /// The temporal layer fields (VP8 with a TID, VP9, AV1 with a dependency descriptor).
    pub temporal: Option<TemporalLayer>,
    /// AV1's dependency descriptor as received, forwarded unchanged.
    pub dd: Option<Arc<DdBytes>>,
    /// For a RED packet (`payload` is RFC 2198 RED, `params` its primary codec's), the
    /// primary block alone: what subscribers without RED get.
    pub red_primary: Option<Arc<[u8]>>,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// When the origin worker received it.
    pub received: Instant,
    pub payload: Arc<[u8]>,
}

impl MediaPacket {
    /// What a subscription's forwarding decision reads of this packet.
    pub fn view(&self) -> PacketView {
        PacketView {
            layer: self.layer,
            layers: self.layers,
            keyframe: self.keyframe,
            marker: self.marker,
            svc: self.svc,
            temporal: self.temporal,
        }
    }
}

/// What travels through a pipe from one worker to another.
#[derive(Debug, Clone)]
pub enum PipeMsg {
    /// A packet of a track whose origin is the sending worker.
    Media(Arc<MediaPacket>),
    /// A subscriber on the sending worker needs a keyframe of a layer of a track whose
    /// origin is the receiving worker.
    KeyframeRequest(TrackId, u8),
    /// The simulcast layers of `track` that worker `worker` needs ([`Need`]): the origin
    /// pipes it only those it forwards, and asks the publisher for those it keeps.
    Layers {
        track: TrackId,
        worker: WorkerId,
        need: Need,
    },
    /// The bitrates of `track`'s layers as its origin measures them, every
    /// [`RATES_INTERVAL`](crate::engine::RATES_INTERVAL): a subscription's allocator reads
    /// them, since only the layers it forwards reach its worker.
    Rates(TrackId, Box<Rates>),
    /// A track whose origin is the sending worker ended: its subscribers on the receiving
    /// worker let go of it now, before the control plane hears of it.
    TrackEnded(TrackId),
    /// A data message read on the sending worker, for its members of the room here.
    Data(Arc<DataPacket>),
}

/// A layer mask that lets every layer through.
pub const ALL_LAYERS: u8 = u8::MAX;

/// The simulcast layers of one track that a subscription, a worker or a node needs (bit l:
/// layer l). Two masks, since the publisher's encoder and the pipes answer to different
/// costs: an encoding the publisher stops takes the browser seconds to bring back, while a
/// pipe or a relay starts carrying a layer within the same turn, ahead of the keyframe that
/// a switch to it waits for anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The layers forwarded or being switched to: the only ones piped or relayed.
    pub flow: u8,
    /// The layers the publisher keeps sending: every one up to the highest forwarded,
    /// switched to, or (with downlink estimation) asked for, so that a switch down or an
    /// upgrade finds its layer already encoded. Always covers `flow`.
    pub keep: u8,
}

impl Need {
    /// Every layer, as assumed of a worker or node until it says.
    pub const ALL: Need = Need {
        flow: ALL_LAYERS,
        keep: ALL_LAYERS,
    };
    pub const NONE: Need = Need { flow: 0, keep: 0 };
}

impl std::ops::BitOr for Need {
    type Output = Need;
    fn bitor(self, o: Need) -> Need {
        Need {
            flow: self.flow | o.flow,
            keep: self.keep | o.keep,
        }
    }
}
