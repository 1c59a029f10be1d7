//! Keyframe request policy at a track's origin: requests from any number of subscribers are
//! merged, and at most one reaches the publisher per interval. A request that arrives inside
//! the interval is not lost: it is sent when the interval ends.

use std::time::{Duration, Instant};

/// Minimum spacing of keyframe requests sent to one publisher track.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct KeyframeThrottle {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeThrottle {
    /// Records a request; returns true when one must be sent to the publisher now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now < t + KEYFRAME_INTERVAL => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// When a deferred request is due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(t)) => Some(t + KEYFRAME_INTERVAL),
            _ => None,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// Returns true when a deferred request is due now (and marks it sent).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                self.pending = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_a_burst_into_two_requests() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::default();
        assert!(t.request(t0));
        for i in 1..100 {
            assert!(!t.request(t0 + Duration::from_millis(i)));
        }
        assert_eq!(t.deadline(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(!t.poll(t0 + Duration::from_millis(499)));
        assert!(t.poll(t0 + KEYFRAME_INTERVAL));
        assert!(!t.poll(t0 + Duration::from_secs(5)));
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn spaced_requests_all_pass() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::default();
        for i in 0..5 {
            assert!(t.request(t0 + KEYFRAME_INTERVAL * i));
        }
    }
}
