//! Learning rate as a function of the optimizer step: linear warm-up, then constant, cosine or step decay.

use crate::config::{LrDecay, ScheduleConfig};

/// The learning rate of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub decay: LrDecay,
    pub warmup: u64,
    pub total: u64,
    pub step_every: u64,
    pub step_gamma: f64,
}

impl LrSchedule {
    /// The schedule of a config over `total` optimizer steps, with the base rate already scaled for the world.
    pub fn new(base: f64, s: &ScheduleConfig, total: u64) -> Self {
        LrSchedule {
            base,
            decay: s.decay,
            warmup: s.warmup_steps,
            total: total.max(1),
            step_every: s.step_every.max(1),
            step_gamma: s.step_gamma,
        }
    }

    /// Learning rate for optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        match self.decay {
            LrDecay::Constant => self.base,
            LrDecay::Cosine => {
                let span = self.total.saturating_sub(self.warmup).max(1) as f64;
                let t = ((step - self.warmup) as f64 / span).min(1.0);
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrDecay::Step => {
                self.base
                    * self
                        .step_gamma
                        .powi(((step - self.warmup) / self.step_every) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(decay: LrDecay, warmup: u64) -> LrSchedule {
        LrSchedule {
            base: 1.0,
            decay,
            warmup,
            total: 110,
            step_every: 10,
            step_gamma: 0.5,
        }
    }

    #[test]
    fn warmup_then_decay() {
        let c = sched(LrDecay::Cosine, 10);
        assert_eq!(c.at(0), 0.1);
        assert_eq!(c.at(9), 1.0);
        assert_eq!(c.at(10), 1.0);
        assert!((c.at(60) - 0.5).abs() < 1e-12);
        assert!(c.at(110).abs() < 1e-12 && c.at(500).abs() < 1e-12);
        let s = sched(LrDecay::Step, 0);
        assert_eq!((s.at(9), s.at(10), s.at(25)), (1.0, 0.5, 0.25));
        assert_eq!(sched(LrDecay::Constant, 0).at(1000), 1.0);
    }
}
