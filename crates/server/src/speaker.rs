//! The dominant speaker of one room, from the loudness the workers report every 200 ms for
//! each published audio track (mean of the audio-level header extension, 0 = silence).
//!
//! Hysteresis in two places, so that the highlight does not flicker between people talking
//! over each other or on a cough: loudness is smoothed per participant, and someone takes
//! over only after being the loudest, clearly above the current speaker, in
//! [`TAKEOVER_REPORTS`] consecutive reports. When everyone is silent the last speaker stays
//! (what conferencing UIs show).

use std::collections::HashMap;

use crate::rooms::ParticipantId;

/// Smoothed loudness from which someone counts as speaking (speech measures ~60–100 with
/// Chrome's level extension; background noise and DTX far below).
const SPEECH: f32 = 30.0;
/// How much louder than the current speaker a challenger must be.
const MARGIN: f32 = 6.0;
/// Consecutive reports (of 200 ms) a challenger must lead before it takes over.
const TAKEOVER_REPORTS: u32 = 3;
/// Weight of a new report in the smoothed loudness.
const ALPHA: f32 = 0.5;

#[derive(Debug, Default)]
pub struct Speaker {
    smoothed: HashMap<ParticipantId, f32>,
    current: Option<ParticipantId>,
    challenger: Option<(ParticipantId, u32)>,
}

impl Speaker {
    /// One report for `who`.
    pub fn level(&mut self, who: ParticipantId, loudness: u8) {
        let s = self.smoothed.entry(who).or_insert(0.0);
        *s = *s * (1.0 - ALPHA) + f32::from(loudness) * ALPHA;
    }

    pub fn forget(&mut self, who: ParticipantId) {
        self.smoothed.remove(&who);
        if self.current == Some(who) {
            self.current = None;
        }
        if self.challenger.is_some_and(|(c, _)| c == who) {
            self.challenger = None;
        }
    }

    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Decides after a round of reports; returns the new dominant speaker if it changed.
    pub fn decide(&mut self) -> Option<ParticipantId> {
        let (&loudest, &level) = self
            .smoothed
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))?;
        if Some(loudest) == self.current || level < SPEECH {
            self.challenger = None;
            return None;
        }
        let current = self
            .current
            .and_then(|c| self.smoothed.get(&c))
            .copied()
            .unwrap_or(0.0);
        if level < current + MARGIN {
            self.challenger = None;
            return None;
        }
        let count = match self.challenger {
            Some((c, n)) if c == loudest => n + 1,
            _ => 1,
        };
        if count >= TAKEOVER_REPORTS {
            self.current = Some(loudest);
            self.challenger = None;
            Some(loudest)
        } else {
            self.challenger = Some((loudest, count));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &mut Speaker, levels: &[(ParticipantId, u8)]) -> Option<ParticipantId> {
        for &(p, l) in levels {
            s.level(p, l);
        }
        s.decide()
    }

    #[test]
    fn a_speaker_takes_over_after_leading_three_reports() {
        let mut s = Speaker::default();
        assert_eq!(round(&mut s, &[(1, 80), (2, 0)]), None);
        assert_eq!(round(&mut s, &[(1, 80), (2, 0)]), None);
        assert_eq!(round(&mut s, &[(1, 80), (2, 0)]), Some(1));
        assert_eq!(round(&mut s, &[(1, 80), (2, 0)]), None, "no repeat");
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn a_cough_does_not_take_over_and_silence_keeps_the_last_speaker() {
        let mut s = Speaker::default();
        for _ in 0..5 {
            round(&mut s, &[(1, 70), (2, 0)]);
        }
        assert_eq!(s.current(), Some(1));
        // Participant 2 coughs for one report while 1 pauses.
        assert_eq!(round(&mut s, &[(1, 0), (2, 100)]), None);
        assert_eq!(round(&mut s, &[(1, 70), (2, 0)]), None);
        // Everyone silent: 1 stays.
        for _ in 0..10 {
            assert_eq!(round(&mut s, &[(1, 0), (2, 0)]), None);
        }
        assert_eq!(s.current(), Some(1));
        // 2 starts talking for real.
        let changes: Vec<_> = (0..6)
            .filter_map(|_| round(&mut s, &[(1, 0), (2, 80)]))
            .collect();
        assert_eq!(changes, [2]);
    }

    #[test]
    fn talking_over_each_other_at_the_same_level_does_not_flicker() {
        let mut s = Speaker::default();
        for _ in 0..5 {
            round(&mut s, &[(1, 70)]);
        }
        let changes: Vec<_> = (0..20)
            .filter_map(|i| round(&mut s, &[(1, 70 + (i % 3) as u8), (2, 72)]))
            .collect();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_speaker_who_leaves_is_forgotten() {
        let mut s = Speaker::default();
        for _ in 0..3 {
            round(&mut s, &[(1, 80)]);
        }
        s.forget(1);
        assert_eq!(s.current(), None);
        assert_eq!(round(&mut s, &[(2, 60)]), None);
    }
}
