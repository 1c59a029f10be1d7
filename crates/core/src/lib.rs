//! Sfumato's media engine, sans IO: it owns no thread, no socket and no clock.
//!
//! One [`Engine`] is the state of one media worker. Its runtime drives it like this:
//!
//! ```text
//! loop {
//!     wait for the socket, the pipes or the command queue, at most until
//!         engine.poll_timeout(now)
//!     for each received datagram:  engine.handle_datagram(now, source, bytes)
//!     for each pipe message:       engine.handle_pipe(now, msg)
//!     for each command:            engine.handle_command(now, cmd)
//!     engine.handle_timeout(now)   // one timeout pass per touched peer: queued RTP leaves
//!     while let Some(out) = engine.poll_output() {
//!         Output::Transmit(t)     => send t.contents to t.destination (batched)
//!         Output::Pipe { to, msg } => push msg into worker `to`'s pipe
//!         Output::Event(e)        => hand e to the control plane
//!     }
//! }
//! ```
//!
//! Routing a batch first and sending once per touched peer is what keeps the per-packet
//! cost low: str0m's `write_rtp` only queues, and a packet leaves on the next timeout pass.
//!
//! Modules: [`peer`] wraps one str0m `Rtc`; [`router`] knows where each track goes;
//! [`forward`] decides which packets each subscription forwards (pure, table-tested);
//! [`rewrite`] keeps outgoing numbering continuous; [`keyframe`] finds keyframes;
//! [`throttle`] merges keyframe requests; [`timers`] holds the deadlines, so a turn visits
//! only what is due; [`vp8`] keeps descriptors continuous; [`svc`] selects scalable layers,
//! read by [`vp9`] and [`dd`]; [`temporal`] selects temporal layers; [`alloc`] fits layers
//! to a downlink estimate; [`demux`] maps datagrams to peers; [`dtls`] shares one DTLS
//! setup between all peers; [`wire`] is the form in which a pipe message crosses a socket,
//! and [`link`] carries it between nodes, sealed and repaired.

pub mod alloc;
pub mod answer;
pub mod api;
pub mod bus;
pub mod data;
pub mod dd;
pub mod demux;
pub mod dtls;
pub mod engine;
pub mod forward;
pub mod ids;
pub mod keyframe;
pub mod link;
pub mod packet;
pub mod peer;
pub mod red;
pub mod rewrite;
pub mod router;
pub mod svc;
pub mod temporal;
pub mod throttle;
pub mod timers;
pub mod vp8;
pub mod vp9;
pub mod wire;

pub use api::{
    Command, DataMember, DataRoute, Event, Plan, ReplyBody, RequestId, Subscription, TrackStats,
    WorkerStats,
};
pub use engine::{Engine, Output};
pub use ids::{Kind, MemberId, NodeId, PeerId, TrackId, WorkerId};
pub use packet::{MediaPacket, PipeMsg};

/// Why a command failed. Every variant is an answer to the caller, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the SDP could not be parsed: {0}")]
    BadSdp(String),
    #[error("the SDP could not be negotiated: {0}")]
    Negotiation(String),
    #[error("no such peer")]
    NoSuchPeer,
    #[error("wrong kind of peer: {0}")]
    WrongRole(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}
