//! Learning rate as a function of the optimizer step: linear warm-up, then constant, cosine or step decay.

use serde::{Deserialize, Serialize};

/// The learning rate of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// Rate after warm-up.
    pub base: f64,
    /// Decay after warm-up.
    pub decay: LrDecay,
    /// Warm-up steps.
    pub warmup: u64,
    /// Steps in all.
    pub total: u64,
    /// Step decay: steps between decays.
    pub step_every: u64,
    /// Step decay: factor per decay.
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

/// Learning-rate decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    #[default]
    /// No decay.
    Constant,
    /// Cosine to zero over the run.
    Cosine,
    /// Multiplied by `step_gamma` every `step_every` steps.
    Step,
}

/// Schedule section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Passes over the training split.
    pub epochs: u32,
    /// Stop after this many optimizer steps, if set (overrides `epochs`).
    pub max_steps: Option<u64>,
    /// Per-rank batch size.
    pub batch_size: usize,
    /// Batches per optimizer step.
    pub grad_accum: usize,
    /// Learning-rate decay.
    pub decay: LrDecay,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Step decay only: multiply by `step_gamma` every `step_every` steps.
    pub step_every: u64,
    /// Step decay: factor per decay.
    pub step_gamma: f64,
    /// Validate every N steps (0: once per epoch).
    pub valid_every: u64,
    /// Keep the last K checkpoints (plus the best).
    pub keep_last: usize,
    /// Stop when the valid metric has not improved for this many validations.
    pub early_stop_patience: Option<u32>,
    /// Write a training row to metrics.csv every N optimizer steps.
    pub log_every: u64,
    /// Also checkpoint every N steps between validations (0: only at validations and at the end).
    pub checkpoint_every: u64,
    /// Training-time augmentation (`[schedule.augment]`; off by default).
    pub augment: crate::data::augment::AugmentConfig,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            epochs: 3,
            max_steps: None,
            batch_size: 16,
            grad_accum: 1,
            decay: LrDecay::Constant,
            warmup_steps: 0,
            step_every: 1000,
            step_gamma: 0.1,
            valid_every: 0,
            keep_last: 2,
            early_stop_patience: None,
            log_every: 10,
            checkpoint_every: 0,
            augment: crate::data::augment::AugmentConfig::default(),
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
