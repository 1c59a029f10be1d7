//! What the control plane tells a worker engine ([`Command`]) and what the engine reports
//! back ([`Event`]). Requests that need an answer carry a [`RequestId`]; the answer is an
//! [`Event::Reply`] with the same id.

use serde::Serialize;

use std::sync::Arc;

use crate::ids::{Kind, MemberId, NodeId, PeerId, TrackId, WorkerId};

pub type RequestId = u64;

/// The layer each video track of a subscriber gets (`None`: off or paused) and the highest
/// temporal layer of it (`temporal::ALL_TEMPORAL`: every one).
pub type Layers = Vec<(TrackId, Option<u8>, u8)>;

#[derive(Debug)]
pub enum Command {
    /// Create a peer that publishes (the client offers; we only receive), or apply a new
    /// offer from an existing publishing peer. Replies with the SDP answer.
    Publish {
        req: RequestId,
        peer: PeerId,
        offer: String,
    },
    /// Create a peer that only receives media from us and that we offer to (renegotiating as
    /// subscriptions come and go). Its offers arrive as [`Event::SubscriberOffer`].
    CreateSubscriber {
        peer: PeerId,
    },
    /// The client's answer to the last [`Event::SubscriberOffer`]. Replies with an empty body.
    SubscriberAnswer {
        req: RequestId,
        peer: PeerId,
        answer: String,
    },
    /// Create a peer from a client's recvonly offer (WHEP). Replies with the SDP answer; its
    /// m-lines are then free slots that [`Command::Subscribe`] fills.
    CreateViewer {
        req: RequestId,
        peer: PeerId,
        offer: String,
    },
    /// Forward `track` (origin on worker `origin`) to subscribing `peer` on this worker.
    Subscribe {
        peer: PeerId,
        track: TrackId,
        kind: Kind,
        origin: WorkerId,
    },
    Unsubscribe {
        peer: PeerId,
        track: TrackId,
    },
    /// Which simulcast layer (0 the lowest; clamped to what the track has) `peer`'s
    /// subscription to `track` receives; `None` turns it off (no packets at all). A switch
    /// happens at a keyframe of the new layer, which is asked for; until then the current
    /// layer keeps flowing.
    SetLayer {
        peer: PeerId,
        track: TrackId,
        layer: Option<u8>,
    },
    /// Allocation priority of `peer`'s subscription to `track` within its downlink, higher
    /// first (the control plane raises the active speaker's video).
    SetPriority {
        peer: PeerId,
        track: TrackId,
        priority: u8,
    },
    /// At the origin of `track`: send one copy of each of its packets to `worker`.
    AddSink {
        track: TrackId,
        worker: WorkerId,
    },
    RemoveSink {
        track: TrackId,
        worker: WorkerId,
    },
    ClosePeer {
        peer: PeerId,
    },
    /// On the relay worker: `track`, published on `node`, arrives over the relay; this
    /// worker is its origin on this node (other workers become its sinks).
    RelayIn {
        track: TrackId,
        kind: Kind,
        node: NodeId,
    },
    /// On the relay worker: send one copy of `track` (origin on worker `origin`, which must
    /// have this worker as a sink) to `node`, the layers it asks for.
    RelayOut {
        track: TrackId,
        kind: Kind,
        origin: WorkerId,
        node: NodeId,
    },
    /// On the relay worker: `node` no longer gets `track`, or (a track of `node`) it no
    /// longer comes here.
    RelayStop {
        track: TrackId,
        node: NodeId,
    },
    /// A participant placed on this worker takes part in its room's data messages, or
    /// (joined already) its grant or peer changed.
    DataJoin(DataMember),
    DataLeave {
        member: MemberId,
    },
    /// Where the room's data messages go from this worker.
    DataRoute(DataRoute),
    /// A send frame ([`crate::data`]) from `member`, which came over the signaling WebSocket.
    DataIn {
        member: MemberId,
        frame: Vec<u8>,
    },
    /// What the control plane wants this worker to hold. The commands above are
    /// fire-and-forget and one can be lost (a full queue); this one, sent periodically,
    /// repairs every difference and counts each repair in [`WorkerStats::repairs`].
    Reconcile(Plan),
    /// Replies with [`ReplyBody::Stats`].
    Stats {
        req: RequestId,
    },
}

/// The media topology one worker should hold, as the control plane sees it.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Every peer the control plane knows on this worker; any other peer is closed.
    pub peers: Vec<PeerId>,
    /// Subscribing peers that should exist ([`Command::CreateSubscriber`]); a peer closed
    /// on this worker is never created again.
    pub subscribers: Vec<PeerId>,
    /// Every subscription of a peer of this worker; any other is removed.
    pub subscriptions: Vec<Subscription>,
    /// For the tracks published on this worker: the other workers each one feeds
    /// ([`Command::AddSink`]); any other sink is removed.
    pub sinks: Vec<(TrackId, WorkerId)>,
    /// On the relay worker: the tracks received from other nodes ([`Command::RelayIn`]).
    pub relay_in: Vec<(TrackId, Kind, NodeId)>,
    /// On the relay worker: the tracks sent to other nodes ([`Command::RelayOut`]), as
    /// (track, kind, origin worker, node).
    pub relay_out: Vec<(TrackId, Kind, WorkerId, NodeId)>,
    /// The data members on this worker ([`Command::DataJoin`]).
    pub members: Vec<DataMember>,
    /// For each room with members here: where its data messages go
    /// ([`Command::DataRoute`]).
    pub data_routes: Vec<DataRoute>,
}

/// Where a room's data messages go from one worker: a message read here is piped to each
/// of `workers` (the workers of the node holding members of the room, this one ignored)
/// and, on the relay worker, sent to each of `nodes` (the other nodes holding members of
/// it), which pass it on to their own workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataRoute {
    pub room: Arc<str>,
    pub workers: Vec<WorkerId>,
    pub nodes: Vec<NodeId>,
}

/// A participant taking part in its room's data messages: it receives them (over its
/// peer's data channels once they are open, else as [`Event::Data`] for its WebSocket) and,
/// with `send` (its token's `data` grant), may send ([`Command::DataIn`], or on those
/// channels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMember {
    pub member: MemberId,
    pub room: Arc<str>,
    pub send: bool,
    /// Its publishing peer, whose data channels carry its messages once open.
    pub peer: Option<PeerId>,
}

/// One subscription as the control plane wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub peer: PeerId,
    pub track: TrackId,
    pub kind: Kind,
    pub origin: WorkerId,
    /// The layer asked for ([`Command::SetLayer`]; [`DEFAULT_LAYER`] unless the subscriber
    /// chose).
    pub layer: Option<u8>,
    /// [`Command::SetPriority`].
    pub priority: u8,
}

/// The layer a subscription asks for until told otherwise: the best the publisher sends.
pub const DEFAULT_LAYER: u8 = crate::packet::MAX_LAYERS as u8 - 1;

#[derive(Debug)]
pub enum Event {
    Reply {
        req: RequestId,
        result: Result<ReplyBody, crate::Error>,
    },
    TrackPublished {
        peer: PeerId,
        track: TrackId,
        kind: Kind,
        mid: String,
    },
    TrackUnpublished {
        peer: PeerId,
        track: TrackId,
    },
    /// A new offer for a subscribing peer; `slots` maps each active mid to its track.
    SubscriberOffer {
        peer: PeerId,
        sdp: String,
        slots: Vec<(String, TrackId)>,
    },
    PeerConnected {
        peer: PeerId,
    },
    /// Every [`LEVEL_INTERVAL`](crate::engine::LEVEL_INTERVAL), per audio track published on
    /// this worker: its mean loudness over the interval, 0 (silence, or no packets: DTX) to
    /// 127, from the audio-level header extension.
    AudioLevels {
        levels: Vec<(TrackId, u8)>,
    },
    /// A subscribing peer's downlink estimate and the simulcast layer each of its video
    /// tracks gets (`None`: off); sent when either changes.
    Allocated {
        peer: PeerId,
        /// `None` without bandwidth estimation.
        estimate_bps: Option<u64>,
        layers: Layers,
    },
    /// The simulcast layers of video `track`, published on this worker, that its publisher
    /// should send (bit l: layer l; 0: none, nobody watches); sent when that changes. Every
    /// layer up to the highest one a subscription anywhere may forward: the engine is the one
    /// owner of layer demand, the control plane only passes it to the publisher.
    LayerDemand {
        track: TrackId,
        mask: u8,
    },
    /// The peer is gone (ICE timed out, DTLS closed, or [`Command::ClosePeer`]).
    /// A data message for `member` (a deliver frame, [`crate::data`]), to go out on its
    /// signaling WebSocket.
    Data {
        member: MemberId,
        frame: Arc<[u8]>,
        reliable: bool,
    },
    /// A data message from `member` was refused (at most one of these a second per member):
    /// `code` and `message` for its client (docs/protocol.md, error codes).
    DataRefused {
        member: MemberId,
        code: &'static str,
        message: String,
    },
    /// A reliable data message for `member` found its data channel's send buffer full: it
    /// does not keep up, and the message is lost to it (said at most once a second per
    /// member).
    DataOverflow {
        member: MemberId,
    },
    PeerClosed {
        peer: PeerId,
        reason: &'static str,
    },
}

#[derive(Debug)]
pub enum ReplyBody {
    Sdp(String),
    Done,
    /// Boxed: it is asked for rarely and larger than every other event.
    Stats(Box<WorkerStats>),
}

/// Counters and gauges of one worker, for the API, metrics and leak checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerStats {
    pub worker: u16,
    pub peers: usize,
    pub tracks: usize,
    pub subscriptions: usize,
    pub sinks: usize,
    pub pending_keyframe_requests: usize,
    /// 5-tuples the demux has bound to a peer.
    pub addresses: usize,
    /// Local ICE ufrags the demux knows (one per peer).
    pub ufrags: usize,
    /// Tracks this worker routes: published here, piped in from another worker or relayed.
    pub routes: usize,
    /// Entries in the timer heap, current or not yet tidied away.
    pub timers: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Every datagram dropped; by reason in the four fields after `bytes_out`.
    pub datagrams_dropped: u64,
    /// Bytes of the datagrams received and of those handed to the socket to send.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams from an address no peer owns, without a STUN username of ours.
    pub datagrams_unknown: u64,
    /// Datagrams a peer (str0m) refused, or whose peer was gone.
    pub datagrams_rejected: u64,
    /// Datagrams the socket refused to send (filled in by the worker thread).
    pub send_failed: u64,
    pub packets_in: u64,
    pub packets_forwarded: u64,
    /// Every RTP packet dropped before any routing; by reason below.
    pub packets_dropped: u64,
    /// Packets of a track this worker has no route for (ended, or not yet announced).
    pub packets_no_route: u64,
    /// Packets a publisher sent on a stream it has not negotiated as a track.
    pub packets_unknown_stream: u64,
    pub pipe_in: u64,
    pub pipe_out: u64,
    pub pipe_dropped: u64,
    pub keyframe_requests_in: u64,
    pub keyframe_requests_sent: u64,
    /// RTCP PLIs and FIRs received from subscribers (before merging).
    pub plis_in: u64,
    pub firs_in: u64,
    /// NACKs received from subscribers, and sent to publishers (str0m's counts, read once a
    /// second).
    pub nacks_in: u64,
    pub nacks_out: u64,
    /// Packets sent to subscribers beyond those forwarded: retransmissions answering NACKs,
    /// and the resends str0m uses as probing padding (its send count less ours, read once
    /// a second).
    pub rtx_out: u64,
    /// Layer switches that the downlink estimate decided (not the subscriber), up and down.
    pub layer_ups: u64,
    pub layer_downs: u64,
    /// Nanoseconds the worker's loop spent working rather than waiting (filled in by the
    /// worker thread).
    pub busy_ns: u64,
    /// Peers dropped because handling them panicked (`Event::PeerClosed` "internal error").
    pub peers_failed: u64,
    /// Differences between the control plane's [`Plan`] and this worker that reconciling
    /// repaired: each one a command that was lost (0 in a healthy node).
    pub repairs: u64,
    /// Plans applied ([`Command::Reconcile`]).
    pub plans: u64,
    /// On the relay worker: tracks received from other nodes, and (track, node) pairs sent.
    pub relayed_in: usize,
    pub relayed_out: usize,
    /// Data messages read here from members (sent), deliveries to members here (each
    /// recipient once), and messages refused: malformed, from a member whose token does not
    /// grant `data`, or from one that is not a member here.
    pub data_in: u64,
    pub data_out: u64,
    pub data_dropped: u64,
    /// Of `data_dropped`: over the sender's rate.
    pub data_rate_limited: u64,
    /// Of `data_out`: deliveries to WebSocket members lost on the way, because the queue to
    /// the control plane was full (filled in by the worker thread).
    pub data_lost: u64,
    /// Data members placed here, and rooms they belong to.
    pub data_members: usize,
    pub data_rooms: usize,
    /// Relay messages for a track this worker does not relay (late, or from a node that is
    /// not the track's origin or receiver).
    pub relay_dropped: u64,
    /// The relay worker's links to the other nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<Box<crate::link::LinkStats>>,
    /// Every track each peer here sends or receives, as measured in the last second (for the
    /// dashboard; not in the workers' API).
    #[serde(skip)]
    pub media: Vec<TrackStats>,
}

/// One track of one peer over the last second: a track the peer publishes (`published`),
/// or one it receives through a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    pub peer: PeerId,
    pub track: TrackId,
    pub kind: Kind,
    pub published: bool,
    /// Published: the simulcast layers received (1 without simulcast). Received: the layer
    /// forwarded (`None`: none yet, or off).
    pub layers: u8,
    pub layer: Option<u8>,
    pub bitrate_bps: u64,
    /// Fraction lost (0–1) from the latest receiver report: ours for a published track,
    /// the subscriber's for a received one.
    pub loss: Option<f32>,
    pub rtt_ms: Option<f32>,
}
