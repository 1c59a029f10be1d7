//! `sfumato-bench`: a load generator of real WebRTC participants (str0m: ICE, DTLS, SRTP) that
//! drives Sfumato or Janus VideoRoom through the same scenarios and reports, side by side,
//! forwarded packets/s, server CPU per forwarded packet, loss, latency and join time.
//!
//! Modules: [`stats`] (loss, latency, percentiles), [`media`] (packets shaped like real
//! audio and video, stamped with a sequence and a send time), [`fleet`] (many peers driven by a
//! few threads), [`janus`] (running and signaling Janus VideoRoom), [`target`] (Sfumato as a
//! target), [`procstat`] (the server's CPU and memory from /proc), [`report`] (tables, JSON,
//! charts), [`compare`] (pairing Sfumato's and Janus' runs by load, the `RESULT` line) and
//! [`cluster`] (a room over the nodes of a cluster: CPU, relay, joins, recovery, drain) and
//! [`soak`] (churn for minutes: memory over time, leak gauges, the loss of a steady pair).

pub mod cluster;
pub mod compare;
pub mod data;
pub mod fleet;
pub mod janus;
pub mod media;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod soak;
pub mod stats;
pub mod target;
