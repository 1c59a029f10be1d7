//! The state of one outgoing m-line of a peer and the track bound to it: its negotiation
//! flags, its forwarding state ([`Forwarder`]), what its layer control measures and
//! decides, and its sender ([`Sender`]).

use std::time::Instant;

use str0m::media::Mid;

use super::egress::Sender;
use crate::alloc::Rates;
use crate::forward::{Forwarder, HIGHEST_LAYER};
use crate::ids::{Kind, TrackId, WorkerId};

/// An outgoing m-line of a subscribing peer and the track it carries.
#[derive(Debug)]
pub struct Slot {
    pub mid: Option<Mid>,
    pub kind: Kind,
    pub track: Option<TrackId>,
    pub origin: WorkerId,
    /// Whether the slot should be active at the next negotiation (it carries a track).
    pub(super) want_active: bool,
    /// Whether the m-line is active as last negotiated: only then is anything sent.
    pub(super) negotiated_active: bool,
    /// Which packets of the track are forwarded; its `target` is the request, lowered to
    /// fit the downlink.
    pub(super) forward: Forwarder,
    /// How forwarded packets are numbered and written into str0m.
    pub(super) send: Sender,
    /// The best simulcast layer the subscriber asked for (`None`: off).
    pub(super) requested: Option<u8>,
    /// When `target` was last lowered for lack of bandwidth.
    pub(super) lowered: Option<Instant>,
    /// When the subscriber last asked for a layer (`Peer::set_layer`).
    pub(super) asked: Option<Instant>,
    /// Bitrates of the track's layers as its origin measures them (per spatial layer for
    /// SVC; [`Peer::set_rates`](super::Peer::set_rates)).
    pub(super) rates: Rates,
    /// Whether the track is scalable (SVC): its layers add up instead of replacing each
    /// other.
    pub(super) svc: bool,
    /// Allocation priority, higher first.
    pub(super) priority: u8,
}

impl Slot {
    /// A slot that carries nothing yet; `negotiated` when its m-line is already active.
    pub(super) fn new(mid: Option<Mid>, kind: Kind, negotiated: bool) -> Self {
        Slot {
            mid,
            kind,
            track: None,
            origin: WorkerId(0),
            want_active: negotiated,
            negotiated_active: negotiated,
            forward: Forwarder::default(),
            send: Sender::default(),
            requested: Some(HIGHEST_LAYER),
            lowered: None,
            asked: None,
            rates: Rates::default(),
            svc: false,
            priority: 0,
        }
    }

    /// Binds the slot to `track` from `origin`: the subscription starts as in a new slot (the
    /// layer asked for, priority, rates and forwarding state of a previous track do not carry
    /// over; the control plane sends only what differs from a new subscription), while the
    /// m-line and its sender's numbering carry on.
    pub(super) fn bind(&mut self, track: TrackId, origin: WorkerId) {
        let mut fresh = Slot::new(self.mid, self.kind, self.negotiated_active);
        fresh.send = std::mem::take(&mut self.send);
        fresh.track = Some(track);
        fresh.origin = origin;
        fresh.want_active = true;
        *self = fresh;
        self.restart();
    }

    /// Nothing more is forwarded until a keyframe (the receiver has to start decoding over).
    pub(super) fn restart(&mut self) {
        self.send.rewriter.rebase();
        self.forward.restart();
    }

    /// Whether this slot waits for a keyframe before it can forward anything.
    pub(super) fn waiting_keyframe(&self) -> bool {
        self.kind == Kind::Video && self.forward.current.is_none()
    }
}
