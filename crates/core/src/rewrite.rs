//! Sequence number and timestamp rewriting for one outgoing stream. A subscriber's stream
//! outlives the sources that feed it (a publisher restarts, a WHEP viewer moves to another
//! track): the rewriter keeps the numbering continuous across every change of source, so
//! the receiver sees one stream with no gaps and no jumps back.
//!
//! A subscription that drops some packets of its source (the spatial layers above the one
//! it gets, `vp9`) says so with [`Rewriter::skip`]: the packets after them move down to
//! close the gap, and a reordered packet from before a skip keeps the number it would have
//! had.

use std::collections::VecDeque;
use std::time::Instant;

use crate::ids::TrackId;

/// Identifies the source that feeds an outgoing stream: a track and the publisher's SSRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub track: TrackId,
    pub ssrc: u32,
}

/// The rewritten numbers of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number for the subscriber (starts below 2^16: no out-of-band ROC).
    pub seq: u64,
    pub timestamp: u32,
}

#[derive(Debug, Default)]
pub struct Rewriter {
    state: Option<State>,
}

#[derive(Debug)]
struct State {
    source: Source,
    seq_offset: i64,
    ts_offset: u32,
    /// Packets of the current source that would map below this are from before a switch.
    floor: u64,
    max_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Instant,
    /// The latest skipped sequence numbers of this source, oldest first (each one moved
    /// every later packet down by one).
    skipped: VecDeque<u64>,
    /// Skips older than `skipped` holds were forgotten: a packet from before this one can
    /// no longer be numbered and is dropped.
    forgotten: u64,
    /// The next packet starts over as if from a new source ([`Rewriter::rebase`]).
    rebase: bool,
}

/// How many skips are remembered for reordered packets (about a second of a dropped layer).
const SKIP_MEMORY: usize = 64;

impl Rewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites one packet; `None` drops it (a late packet from before the last switch).
    pub fn rewrite(
        &mut self,
        source: Source,
        seq: u64,
        timestamp: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Option<Rewritten> {
        let seq_i = seq as i64;
        let state = match &mut self.state {
            None => {
                let first = seq & 0xffff;
                self.state.insert(State {
                    source,
                    seq_offset: first as i64 - seq_i,
                    ts_offset: 0,
                    floor: first,
                    max_out_seq: first,
                    last_out_ts: timestamp,
                    last_out_at: now,
                    skipped: VecDeque::with_capacity(SKIP_MEMORY),
                    forgotten: 0,
                    rebase: false,
                })
            }
            Some(state) if state.source != source || state.rebase => {
                let base = state.max_out_seq + 1;
                let elapsed = now.saturating_duration_since(state.last_out_at);
                let ticks = (elapsed.as_secs_f64() * clock_rate as f64) as u32;
                let next_ts = state.last_out_ts.wrapping_add(ticks.max(1));
                state.source = source;
                state.seq_offset = base as i64 - seq_i;
                state.ts_offset = next_ts.wrapping_sub(timestamp);
                state.floor = base;
                state.max_out_seq = base;
                state.last_out_ts = next_ts;
                state.last_out_at = now;
                state.skipped.clear();
                state.forgotten = 0;
                state.rebase = false;
                state
            }
            Some(state) => state,
        };
        let mut out = seq_i + state.seq_offset;
        if state.skipped.back().is_some_and(|&s| seq < s) {
            // Reordered from before a skip: the skips after it did not move it.
            if seq < state.forgotten {
                return None;
            }
            out += state.skipped.iter().filter(|&&s| s > seq).count() as i64;
        }
        if out < state.floor as i64 {
            return None;
        }
        let out = out as u64;
        let out_ts = timestamp.wrapping_add(state.ts_offset);
        if out >= state.max_out_seq {
            state.max_out_seq = out;
            state.last_out_ts = out_ts;
            state.last_out_at = now;
        }
        Some(Rewritten {
            seq: out,
            timestamp: out_ts,
        })
    }

    /// The stream stopped and resumes at a keyframe (turned off and on): the next packet
    /// continues the numbering as a new source would, whatever was not sent in between.
    pub fn rebase(&mut self) {
        if let Some(state) = &mut self.state {
            state.rebase = true;
        }
    }

    /// Packet `seq` of `source` is not forwarded: the packets after it close the gap. A
    /// packet older than what was already sent leaves its gap (its number is taken).
    pub fn skip(&mut self, source: Source, seq: u64) {
        let Some(state) = self.state.as_mut().filter(|s| s.source == source) else {
            return; // nothing of this source was sent: there is no numbering to keep
        };
        let out = seq as i64 + state.seq_offset;
        if out <= state.max_out_seq as i64 || state.skipped.back().is_some_and(|&s| seq <= s) {
            return;
        }
        state.seq_offset -= 1;
        if state.skipped.len() == SKIP_MEMORY {
            if let Some(old) = state.skipped.pop_front() {
                state.forgotten = old;
            }
        }
        state.skipped.push_back(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerId;
    use std::time::Duration;

    fn src(peer: u64, ssrc: u32) -> Source {
        Source {
            track: TrackId {
                peer: PeerId(peer),
                index: 0,
            },
            ssrc,
        }
    }

    #[test]
    fn passes_a_single_source_through_with_low_start() {
        let t0 = Instant::now();
        let mut r = Rewriter::new();
        let a = r.rewrite(src(1, 10), 70_000, 5000, 90_000, t0).unwrap();
        assert_eq!(a.seq, 70_000 & 0xffff);
        assert_eq!(a.timestamp, 5000);
        let b = r.rewrite(src(1, 10), 70_001, 8000, 90_000, t0).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(b.timestamp, 8000);
        // A gap in the source stays a gap (so NACKs stay meaningful).
        let c = r.rewrite(src(1, 10), 70_005, 8000, 90_000, t0).unwrap();
        assert_eq!(c.seq, a.seq + 5);
        // A reordered packet is forwarded with its own number.
        let d = r.rewrite(src(1, 10), 70_003, 8000, 90_000, t0).unwrap();
        assert_eq!(d.seq, a.seq + 3);
    }

    #[test]
    fn publisher_restart_continues_numbering() {
        let t0 = Instant::now();
        let mut r = Rewriter::new();
        let mut last = None;
        for i in 0..10u64 {
            last = r.rewrite(
                src(1, 10),
                100 + i,
                1000 + i as u32 * 3000,
                90_000,
                t0 + Duration::from_millis(33 * i),
            );
        }
        let last = last.unwrap();
        // The publisher comes back 1 s later with a new SSRC and unrelated numbers.
        let t1 = t0 + Duration::from_millis(33 * 9) + Duration::from_secs(1);
        let first_new = r.rewrite(src(2, 99), 40_000, 123_456, 90_000, t1).unwrap();
        assert_eq!(first_new.seq, last.seq + 1);
        assert_eq!(first_new.timestamp, last.timestamp + 90_000);
        let next = r.rewrite(src(2, 99), 40_001, 126_456, 90_000, t1).unwrap();
        assert_eq!(next.seq, last.seq + 2);
        assert_eq!(next.timestamp, last.timestamp + 93_000);
        // A straggler of the new source from before its first forwarded packet is dropped.
        assert_eq!(r.rewrite(src(2, 99), 39_999, 120_456, 90_000, t1), None);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new();
        let s = src(1, 10);
        let seq = |r: &mut Rewriter, n: u64| r.rewrite(s, n, 0, 90_000, t0).map(|o| o.seq);
        assert_eq!(seq(&mut r, 100), Some(100));
        r.skip(s, 101);
        r.skip(s, 102);
        assert_eq!(seq(&mut r, 103), Some(101));
        // A loss (104) stays a gap; the packet after a later skip closes only the skip.
        r.skip(s, 106);
        assert_eq!(seq(&mut r, 105), Some(103), "105 came after 104's gap");
        assert_eq!(seq(&mut r, 107), Some(104));
        // 104 arrives late (a retransmission): it takes the number the gap kept for it.
        assert_eq!(seq(&mut r, 104), Some(102));
        // A late packet that is skipped leaves its number unused; nothing moves.
        r.skip(s, 99);
        assert_eq!(seq(&mut r, 108), Some(105));
        // Skipping the same packet twice counts once.
        r.skip(s, 109);
        r.skip(s, 109);
        assert_eq!(seq(&mut r, 110), Some(106));
    }

    #[test]
    fn a_packet_from_before_forgotten_skips_is_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::new();
        let s = src(1, 10);
        r.rewrite(s, 1000, 0, 90_000, t0).unwrap();
        // 1001 is lost; then many skips.
        for n in 0..SKIP_MEMORY as u64 + 1 {
            r.skip(s, 1002 + n);
        }
        assert_eq!(r.rewrite(s, 1001, 0, 90_000, t0), None);
        let next = 1002 + SKIP_MEMORY as u64 + 1;
        assert_eq!(r.rewrite(s, next, 0, 90_000, t0).unwrap().seq, 1002);
    }

    #[test]
    fn timestamps_wrap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new();
        r.rewrite(src(1, 1), 1, u32::MAX - 10, 48_000, t0).unwrap();
        let out = r
            .rewrite(src(2, 2), 500, 0, 48_000, t0 + Duration::from_millis(20))
            .unwrap();
        assert_eq!(out.timestamp, (u32::MAX - 10).wrapping_add(960));
        assert_eq!(out.seq, 2);
    }
}
