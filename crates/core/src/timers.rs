//! The engine's deadlines in one min-heap (peers' next timeouts, deferred keyframe requests),
//! so that a turn touches only what is due and the next wake-up is read off the top. Entries
//! are invalidated lazily: one counts only while its owner still has that deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::ids::{PeerId, TrackId};

/// What a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A peer's next timeout (str0m's, or ours for a closed peer).
    Peer(PeerId),
    /// A keyframe request deferred by the throttle of a track's simulcast layer.
    Keyframe(TrackId, u8),
}

/// Stale entries tolerated beyond twice the live ones before the heap is rebuilt.
const SLACK: usize = 64;

/// Deadlines, earliest first. The owner of a deadline pushes a new entry whenever it
/// changes; the old entry stays until it is popped or tidied away, and the caller tells
/// which entries are still current. So a change costs one push (O(log n)) and nothing is
/// ever searched for.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline held; exact when the top is current (see [`Timers::tidy`]).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest entry if it is due at `now`, current or not: the caller checks.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Drops stale entries from the top, so that [`Timers::next`] is the earliest current
    /// deadline. When stale entries outnumber the `live` owners (an owner holds at most one
    /// current deadline), the heap is rebuilt from the current ones alone: amortised over
    /// the pushes that made them, so it stays O(log n) per change.
    pub fn tidy(&mut self, live: usize, current: impl Fn(Instant, Timer) -> bool) {
        while let Some(&Reverse((at, timer))) = self.heap.peek() {
            if current(at, timer) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * live + SLACK {
            let mut entries = std::mem::take(&mut self.heap).into_vec();
            entries.retain(|Reverse((at, timer))| current(*at, *timer));
            // An owner whose deadline went away and came back has two current entries.
            entries.sort_unstable();
            entries.dedup();
            self.heap = entries.into();
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_earliest_first_and_stale_ones_are_skipped() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut deadlines: HashMap<Timer, Instant> = HashMap::new();
        let mut timers = Timers::default();
        let mut set = |timers: &mut Timers, t: Timer, at| {
            deadlines.insert(t, at);
            timers.push(at, t);
        };
        let (a, b, c) = (
            Timer::Peer(PeerId(1)),
            Timer::Peer(PeerId(2)),
            Timer::Peer(PeerId(3)),
        );
        set(&mut timers, a, ms(30));
        set(&mut timers, b, ms(10));
        set(&mut timers, c, ms(20));
        // b moves later: its first entry is stale.
        set(&mut timers, b, ms(40));
        let current = |at, t| deadlines.get(&t) == Some(&at);
        timers.tidy(3, current);
        assert_eq!(timers.next(), Some(ms(20)));
        let mut due = Vec::new();
        while let Some((at, t)) = timers.pop_due(ms(35)) {
            if current(at, t) {
                due.push(t);
            }
        }
        assert_eq!(due, vec![c, a]);
        assert_eq!(timers.next(), Some(ms(40)));
        assert_eq!(timers.pop_due(ms(39)), None);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut latest = t0;
        // One owner whose deadline moves later a thousand times.
        for i in 0..1000 {
            latest = t0 + Duration::from_millis(i);
            timers.push(latest, Timer::Peer(PeerId(1)));
            timers.tidy(1, |at, _| at == latest);
        }
        assert!(timers.len() <= 2 + SLACK, "{} entries", timers.len());
        assert_eq!(timers.next(), Some(latest));
        // The same deadline pushed twice is kept once by a rebuild.
        for _ in 0..=2 + SLACK {
            timers.push(latest, Timer::Peer(PeerId(1)));
        }
        timers.tidy(1, |at, _| at == latest);
        assert_eq!(timers.len(), 1);
    }
}
