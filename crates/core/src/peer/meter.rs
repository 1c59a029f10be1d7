//! What a peer measures: counters the engine adds into its worker's stats (NACKs,
//! retransmissions, PLIs/FIRs, estimate-driven layer switches) and, once a second from
//! str0m's stats events, each stream's bitrate, loss and round-trip time for the dashboard.

use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use super::Peer;
use crate::api::TrackStats;

/// How often str0m reports its stats (one pass over the peer's streams, no per-packet cost).
pub(super) const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Counters the engine takes (and zeroes) when it drains the peer after a datagram or a
/// timeout pass (what other calls count waits for the next one).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerCounts {
    pub nacks_in: u64,
    pub nacks_out: u64,
    pub rtx_out: u64,
    pub plis_in: u64,
    pub firs_in: u64,
    pub layer_ups: u64,
    pub layer_downs: u64,
}

/// One str0m stream (an m-line and rid, one direction) as last measured.
#[derive(Debug)]
pub(super) struct StreamMeter {
    mid: Mid,
    rid: Option<Rid>,
    egress: bool,
    /// str0m's cumulative counts at the last report.
    bytes: u64,
    packets: u64,
    nacks: u64,
    /// Packets we had written into the stream at the last report (egress).
    written: u64,
    at: Option<Instant>,
    bitrate_bps: u64,
    loss: Option<f32>,
    rtt: Option<Duration>,
}

impl StreamMeter {
    fn new(mid: Mid, rid: Option<Rid>, egress: bool) -> Self {
        StreamMeter {
            mid,
            rid,
            egress,
            bytes: 0,
            packets: 0,
            nacks: 0,
            written: 0,
            at: None,
            bitrate_bps: 0,
            loss: None,
            rtt: None,
        }
    }

    /// Takes a new cumulative report; returns the growth of (packets, NACKs).
    fn update(&mut self, at: Instant, bytes: u64, packets: u64, nacks: u64) -> (u64, u64) {
        let span = self.at.map(|t| at.saturating_duration_since(t));
        let grown = bytes.saturating_sub(self.bytes);
        self.bitrate_bps = match span {
            Some(d) if !d.is_zero() => (grown as f64 * 8.0 / d.as_secs_f64()) as u64,
            _ => 0,
        };
        let delta = (
            packets.saturating_sub(self.packets),
            nacks.saturating_sub(self.nacks),
        );
        (self.at, self.bytes, self.packets, self.nacks) = (Some(at), bytes, packets, nacks);
        delta
    }
}

impl Peer {
    fn meter(&mut self, mid: Mid, rid: Option<Rid>, egress: bool) -> &mut StreamMeter {
        let at = self
            .meters
            .iter()
            .position(|m| m.mid == mid && m.rid == rid && m.egress == egress);
        let i = match at {
            Some(i) => i,
            None => {
                self.meters.push(StreamMeter::new(mid, rid, egress));
                self.meters.len() - 1
            }
        };
        &mut self.meters[i]
    }

    /// A stream we send to this peer: bitrate, the subscriber's loss and RTT, its NACKs, and
    /// what str0m sent beyond what we wrote (retransmissions).
    pub(super) fn on_egress_stats(&mut self, s: MediaEgressStats) {
        let written = self
            .slots
            .iter()
            .find(|slot| slot.mid == Some(s.mid))
            .map_or(0, |slot| slot.send.written);
        let m = self.meter(s.mid, s.rid, true);
        let (packets, nacks) = m.update(s.timestamp, s.bytes, s.packets, s.nacks);
        let ours = written.saturating_sub(m.written);
        m.written = written;
        m.loss = s.loss.or(m.loss);
        m.rtt = s.rtt.or(m.rtt);
        self.counts.nacks_in += nacks;
        self.counts.rtx_out += packets.saturating_sub(ours);
    }

    /// A stream this peer publishes: bitrate, the loss we report, and the NACKs we sent.
    pub(super) fn on_ingress_stats(&mut self, s: MediaIngressStats) {
        let m = self.meter(s.mid, s.rid, false);
        let (_, nacks) = m.update(s.timestamp, s.bytes, s.packets, s.nacks);
        m.loss = s.loss.or(m.loss);
        m.rtt = s.rtt.or(m.rtt);
        self.counts.nacks_out += nacks;
    }

    pub(super) fn on_peer_stats(&mut self, s: PeerStats) {
        self.rtt = s.rtt.or(self.rtt);
    }

    /// Takes the counters gathered since the last call.
    pub fn take_counts(&mut self) -> PeerCounts {
        std::mem::take(&mut self.counts)
    }

    /// Appends every track this peer publishes or receives, as last measured.
    pub fn track_stats(&self, out: &mut Vec<TrackStats>) {
        let rtt_ms = |r: Option<Duration>| r.or(self.rtt).map(|d| d.as_secs_f32() * 1000.0);
        for p in &self.published {
            let streams = || self.meters.iter().filter(|m| !m.egress && m.mid == p.mid);
            out.push(TrackStats {
                peer: self.id,
                track: p.track,
                kind: p.kind,
                published: true,
                layers: p.layers(),
                layer: None,
                bitrate_bps: streams().map(|m| m.bitrate_bps).sum(),
                loss: streams().filter_map(|m| m.loss).reduce(f32::max),
                rtt_ms: rtt_ms(streams().find_map(|m| m.rtt)),
            });
        }
        for s in &self.slots {
            let (Some(track), Some(mid)) = (s.track, s.mid) else {
                continue;
            };
            let m = self.meters.iter().find(|m| m.egress && m.mid == mid);
            out.push(TrackStats {
                peer: self.id,
                track,
                kind: s.kind,
                published: false,
                layers: 1,
                layer: s.forward.current,
                bitrate_bps: m.map_or(0, |m| m.bitrate_bps),
                loss: m.and_then(|m| m.loss),
                rtt_ms: rtt_ms(m.and_then(|m| m.rtt)),
            });
        }
    }
}
