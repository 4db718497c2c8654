//! Learning-rate schedules: linear warm-up, then linear, cosine or constant (stepped per batch).

use serde::{Deserialize, Serialize};

use crate::config::{ScheduleConfig, ScheduleHorizon, ScheduleKind};

/// A learning-rate schedule as a pure function of the optimizer step.
///
/// Semantics of transformers' `get_{linear,cosine}_schedule_with_warmup` driven by a `LambdaLR`
/// that is stepped after every optimizer step: optimizer step `k` (0-based) uses
/// `base_lr · factor(k)`, so the very first step of a warm-up uses learning rate 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The curve after warm-up.
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub base_lr: f64,
    /// Warm-up steps (`int(warmup_prop · total_steps)`).
    pub warmup_steps: u64,
    /// The horizon `T`: where linear and cosine reach 0.
    pub total_steps: u64,
}

impl LrSchedule {
    /// The schedule for a run of `total_steps` optimizer steps.
    pub fn new(cfg: &ScheduleConfig, base_lr: f64, total_steps: u64) -> Self {
        // `int(warmup_prop * T)` in Python truncates toward 0.
        let warmup_steps = (cfg.warmup_prop * total_steps as f64).floor() as u64;
        Self { kind: cfg.kind, base_lr, warmup_steps, total_steps }
    }

    /// The horizon: the seed's `(samples · epochs) // (batch_size · accumulation)` or the number of
    /// steps really made (`epochs · steps_per_epoch`).
    pub fn horizon(
        horizon: ScheduleHorizon,
        samples: usize,
        epochs: u32,
        per_step: usize,
        steps_per_epoch: u64,
    ) -> u64 {
        match horizon {
            ScheduleHorizon::Seed => (samples as u64 * u64::from(epochs)) / per_step as u64,
            ScheduleHorizon::Steps => steps_per_epoch * u64::from(epochs),
        }
    }

    /// The multiplier of `base_lr` at optimizer step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        let (w, t) = (self.warmup_steps, self.total_steps);
        if step < w {
            return step as f64 / w.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                let left = t as f64 - step as f64;
                (left / t.saturating_sub(w).max(1) as f64).max(0.0)
            }
            ScheduleKind::Cosine => {
                let progress = (step - w) as f64 / t.saturating_sub(w).max(1) as f64;
                // num_cycles = 0.5: half a cosine period from 1 to 0.
                (0.5 * (1.0 + (std::f64::consts::PI * 2.0 * 0.5 * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup_prop: f64, t: u64) -> LrSchedule {
        let cfg = ScheduleConfig { kind, warmup_prop, horizon: ScheduleHorizon::Seed };
        LrSchedule::new(&cfg, 2e-4, t)
    }

    #[test]
    fn seed_horizon_uses_the_floor_of_all_samples() {
        // SEED.md §3.3: 482 images, 40 epochs, bs 4 → T = 4820, warm-up int(0.05·4820) = 241.
        let t = LrSchedule::horizon(ScheduleHorizon::Seed, 482, 40, 4, 120);
        assert_eq!(t, 4820);
        assert_eq!(sched(ScheduleKind::Linear, 0.05, t).warmup_steps, 241);
        assert_eq!(LrSchedule::horizon(ScheduleHorizon::Steps, 482, 40, 4, 120), 4800);
    }

    #[test]
    fn linear_warms_up_from_zero_and_decays_to_zero() {
        let s = sched(ScheduleKind::Linear, 0.1, 100);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.factor(5) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(10), 1.0);
        assert!((s.factor(55) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(150), 0.0);
    }

    #[test]
    fn cosine_is_half_at_mid_decay() {
        let s = sched(ScheduleKind::Cosine, 0.0, 100);
        assert_eq!(s.factor(0), 1.0);
        assert!((s.factor(50) - 0.5).abs() < 1e-12);
        assert!(s.factor(100).abs() < 1e-12);
    }

    proptest::proptest! {
        #[test]
        fn factor_stays_in_unit_interval(
            t in 1u64..10_000, prop in 0.0f64..1.0, step in 0u64..20_000, k in 0usize..3,
        ) {
            let kind = [ScheduleKind::Linear, ScheduleKind::Cosine, ScheduleKind::Constant][k];
            let f = sched(kind, prop, t).factor(step);
            proptest::prop_assert!((0.0..=1.0).contains(&f), "{f}");
        }
    }
}
