//! Which worker a new participant goes to. `pack` fills a warm worker up to its watermark
//! before waking the next (fewer pipes, better cache use); `spread` deals round-robin.

use clap::ValueEnum;
use serde::Deserialize;
use sfumato_worker::sfumato_core::WorkerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Pack,
    Spread,
}

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

    pub fn choose(&mut self) -> WorkerId {
        let i = match self.policy {
            Policy::Spread => {
                let i = self.next % self.load.len();
                self.next = i + 1;
                i
            }
            Policy::Pack => match self.load.iter().position(|&l| l < self.watermark) {
                Some(i) => i,
                None => (0..self.load.len())
                    .min_by_key(|&i| self.load[i])
                    .unwrap_or(0),
            },
        };
        self.load[i] += 1;
        WorkerId(i as u16)
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

    #[test]
    fn pack_fills_the_first_worker_to_its_watermark() {
        let mut p = Placement::new(Policy::Pack, 3, 2);
        let got: Vec<u16> = (0..7).map(|_| p.choose().0).collect();
        assert_eq!(got, vec![0, 0, 1, 1, 2, 2, 0]);
        p.release(WorkerId(1));
        assert_eq!(p.choose(), WorkerId(1));
        assert_eq!(p.loads(), &[3, 2, 2]);
    }

    #[test]
    fn spread_deals_round_robin() {
        let mut p = Placement::new(Policy::Spread, 2, 100);
        let got: Vec<u16> = (0..5).map(|_| p.choose().0).collect();
        assert_eq!(got, vec![0, 1, 0, 1, 0]);
    }
}
