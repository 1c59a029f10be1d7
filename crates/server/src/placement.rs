//! Which worker a new participant goes to. `pack` fills a warm worker up to its watermark
//! before waking the next (fewer pipes, better cache use); `spread` deals round-robin. Both
//! choose among the live workers only.

use clap::ValueEnum;
use serde::Deserialize;
use sfumato_worker::sfumato_core::WorkerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Pack,
    Spread,
}

/// Why nobody can join.
#[derive(Debug, thiserror::Error)]
#[error("no media worker is running")]
pub struct NoLiveWorker;

pub struct Placement {
    policy: Policy,
    watermark: usize,
    load: Vec<usize>,
    next: usize,
}

impl Placement {
    pub fn new(policy: Policy, workers: usize, watermark: usize) -> Self {
        Placement {
            policy,
            watermark: watermark.max(1),
            load: vec![0; workers.max(1)],
            next: 0,
        }
    }

    /// A worker for one more participant, among those `alive` says run.
    pub fn choose(&mut self, alive: impl Fn(WorkerId) -> bool) -> Result<WorkerId, NoLiveWorker> {
        let n = self.load.len();
        let live = |i: &usize| alive(WorkerId(*i as u16));
        let i = match self.policy {
            Policy::Spread => {
                let i = (self.next..self.next + n)
                    .map(|i| i % n)
                    .find(live)
                    .ok_or(NoLiveWorker)?;
                self.next = i + 1;
                i
            }
            Policy::Pack => match (0..n).filter(live).find(|&i| self.load[i] < self.watermark) {
                Some(i) => i,
                None => (0..n)
                    .filter(live)
                    .min_by_key(|&i| self.load[i])
                    .ok_or(NoLiveWorker)?,
            },
        };
        self.load[i] += 1;
        Ok(WorkerId(i as u16))
    }

    pub fn release(&mut self, worker: WorkerId) {
        if let Some(l) = self.load.get_mut(worker.0 as usize) {
            *l = l.saturating_sub(1);
        }
    }

    pub fn loads(&self) -> &[usize] {
        &self.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: WorkerId) -> bool {
        true
    }

    /// `n` choices with the workers of `dead` down.
    fn choices(p: &mut Placement, n: usize, dead: &[u16]) -> Vec<u16> {
        let alive = |w: WorkerId| !dead.contains(&w.0);
        (0..n)
            .map(|_| p.choose(alive).expect("a live worker").0)
            .collect()
    }

    #[test]
    fn pack_fills_the_first_worker_to_its_watermark() {
        let mut p = Placement::new(Policy::Pack, 3, 2);
        assert_eq!(choices(&mut p, 7, &[]), vec![0, 0, 1, 1, 2, 2, 0]);
        p.release(WorkerId(1));
        assert_eq!(p.choose(all).ok(), Some(WorkerId(1)));
        assert_eq!(p.loads(), &[3, 2, 2]);
    }

    #[test]
    fn spread_deals_round_robin() {
        let mut p = Placement::new(Policy::Spread, 2, 100);
        assert_eq!(choices(&mut p, 5, &[]), vec![0, 1, 0, 1, 0]);
    }

    #[test]
    fn pack_skips_dead_workers_and_still_fills_to_the_watermark() {
        let mut p = Placement::new(Policy::Pack, 3, 2);
        assert_eq!(choices(&mut p, 2, &[]), vec![0, 0]);
        // Worker 0 dies: the next warm-up goes to 1, then 2; past every watermark, the
        // least loaded live one, never 0 even though it is the emptiest after release.
        p.release(WorkerId(0));
        p.release(WorkerId(0));
        assert_eq!(choices(&mut p, 6, &[0]), vec![1, 1, 2, 2, 1, 2]);
    }

    #[test]
    fn spread_deals_round_robin_over_the_live_workers() {
        let mut p = Placement::new(Policy::Spread, 3, 100);
        assert_eq!(choices(&mut p, 2, &[]), vec![0, 1]);
        assert_eq!(choices(&mut p, 4, &[1]), vec![2, 0, 2, 0]);
        assert_eq!(choices(&mut p, 3, &[0, 2]), vec![1, 1, 1]);
    }

    #[test]
    fn nobody_can_join_when_every_worker_is_dead() {
        for policy in [Policy::Pack, Policy::Spread] {
            let mut p = Placement::new(policy, 2, 1);
            assert!(p.choose(|_| false).is_err(), "{policy:?}");
            assert_eq!(p.loads(), &[0, 0], "{policy:?}: a refusal adds no load");
        }
    }
}
