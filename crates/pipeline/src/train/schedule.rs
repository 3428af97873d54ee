//! The learning-rate schedule and early stopping, driven by validation scores, and the
//! per-step seed.

use crate::config::{Schedule, TrainConfig};
use crate::model_dir::TrainerState;

/// The learning rate of update `step` (1-based). `base` is the run's current rate, which only
/// the plateau schedule lowers (at validations); every other schedule is a function of the step
/// alone, so a resumed run continues the same curve.
pub(crate) fn lr_at(t: &TrainConfig, base: f64, step: usize) -> f64 {
    let (s, w) = (step.max(1) as f64, t.warmup_steps as f64);
    let warm = if t.warmup_steps > 0 {
        (s / w).min(1.0)
    } else {
        1.0
    };
    match t.schedule {
        Schedule::Plateau => base * warm,
        Schedule::Constant => t.learning_rate * warm,
        // Checked at load: warmup_steps > 0.
        Schedule::Noam => t.learning_rate * (s / w).min((w / s).sqrt()),
        Schedule::Cosine => {
            if s <= w {
                return t.learning_rate * warm;
            }
            // Checked at load: the end is after the warm-up.
            let progress = ((s - w) / (t.cosine_end() as f64 - w).max(1.0)).min(1.0);
            let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            t.min_lr + (t.learning_rate - t.min_lr) * cos
        }
    }
}

/// The seed of a step's dropout masks and augmentation: a function of the run's seed and the
/// step, so that a resumed run draws what the uninterrupted one would have.
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step as u64)
}

/// Books one validation's score (lower is better) into the run's state: a new best resets the
/// patience counters; otherwise, after `lr_patience` validations without one, the learning rate
/// is multiplied by `lr_decay_factor` (not below `min_lr`) under the plateau schedule. Returns
/// whether the score is a new best.
pub(crate) fn record_validation(state: &mut TrainerState, score: f64, t: &TrainConfig) -> bool {
    // A tie is not progress: early stopping must end a run whose score has stopped moving.
    let improved = state.best_score.is_none_or(|b| score < b - 1e-9);
    if improved {
        state.best_score = Some(score);
        state.best_step = state.step;
        state.bad_validations = 0;
        state.plateau = 0;
    } else {
        state.bad_validations += 1;
        state.plateau += 1;
        let decays = t.schedule == Schedule::Plateau;
        if decays && state.plateau >= t.lr_patience && state.lr > t.min_lr {
            state.lr = (state.lr * t.lr_decay_factor).max(t.min_lr);
            state.plateau = 0;
        }
    }
    improved
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lr_patience: usize) -> TrainConfig {
        TrainConfig {
            lr_patience,
            lr_decay_factor: 0.5,
            min_lr: 1e-4,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn every_schedule_follows_its_formula() {
        let t = |schedule, warmup_steps, max_steps| TrainConfig {
            schedule,
            warmup_steps,
            max_steps,
            learning_rate: 2e-3,
            min_lr: 1e-5,
            ..TrainConfig::default()
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 + 1e-12 * b.abs();
        // Plateau: the run's (decayed) rate, after the warm-up.
        let p = t(Schedule::Plateau, 4, 0);
        for s in 1..=10 {
            let want = 5e-4 * (s as f64 / 4.0).min(1.0);
            assert!(close(lr_at(&p, 5e-4, s), want), "plateau step {s}");
        }
        assert_eq!(lr_at(&t(Schedule::Plateau, 0, 0), 5e-4, 1), 5e-4);
        // Constant ignores the run's rate.
        let c = t(Schedule::Constant, 0, 0);
        assert!((1..100).all(|s| lr_at(&c, 1.0, s) == 2e-3));
        // Noam: linear to the peak at the warm-up's end, then 1/sqrt.
        let n = t(Schedule::Noam, 100, 0);
        for s in 1..=1000 {
            let sf = s as f64;
            let want = 2e-3 * (sf / 100.0).min((100.0 / sf).sqrt());
            assert!(close(lr_at(&n, 0.0, s), want), "noam step {s}");
        }
        assert!(close(lr_at(&n, 0.0, 100), 2e-3));
        assert!(close(lr_at(&n, 0.0, 400), 1e-3));
        // Cosine: warm-up, then half a cosine down to min_lr at max_steps, then min_lr.
        let k = t(Schedule::Cosine, 10, 110);
        for s in 1..=200 {
            let sf = s as f64;
            let want = if s <= 10 {
                2e-3 * sf / 10.0
            } else {
                let x = ((sf - 10.0) / 100.0).min(1.0);
                1e-5 + (2e-3 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            };
            assert!(close(lr_at(&k, 0.0, s), want), "cosine step {s}");
        }
        assert!(close(lr_at(&k, 0.0, 60), 1e-5 + (2e-3 - 1e-5) / 2.0));
        assert!(close(lr_at(&k, 0.0, 110), 1e-5));
        // decay_steps, when set, ends the curve instead of max_steps.
        let d = TrainConfig {
            decay_steps: 60,
            ..t(Schedule::Cosine, 10, 110)
        };
        assert!(close(lr_at(&d, 0.0, 35), 1e-5 + (2e-3 - 1e-5) / 2.0));
        assert!(close(lr_at(&d, 0.0, 60), 1e-5));
    }

    #[test]
    fn only_the_plateau_schedule_decays_at_validations() {
        let t = TrainConfig {
            schedule: Schedule::Cosine,
            max_steps: 100,
            lr_patience: 1,
            ..cfg(1)
        };
        let mut s = TrainerState {
            lr: 1e-3,
            ..Default::default()
        };
        record_validation(&mut s, 3.0, &t);
        record_validation(&mut s, 4.0, &t);
        record_validation(&mut s, 5.0, &t);
        assert_eq!((s.lr, s.bad_validations), (1e-3, 2));
    }

    #[test]
    fn plateau_decay_and_patience_counters() {
        let t = cfg(2);
        let mut s = TrainerState {
            lr: 1e-3,
            ..Default::default()
        };
        s.step = 100;
        assert!(record_validation(&mut s, 3.0, &t));
        assert_eq!((s.best_score, s.best_step), (Some(3.0), 100));
        s.step = 200;
        // A tie is not an improvement.
        assert!(!record_validation(&mut s, 3.0, &t));
        assert_eq!((s.bad_validations, s.plateau, s.lr), (1, 1, 1e-3));
        s.step = 300;
        assert!(!record_validation(&mut s, 3.5, &t));
        // The second bad validation in a row halves the rate and restarts the plateau count,
        // while the early-stopping count keeps going.
        assert_eq!((s.bad_validations, s.plateau, s.lr), (2, 0, 5e-4));
        s.step = 400;
        assert!(record_validation(&mut s, 2.9, &t));
        assert_eq!((s.best_score, s.best_step), (Some(2.9), 400));
        assert_eq!((s.bad_validations, s.plateau, s.lr), (0, 0, 5e-4));
        // The rate stops at min_lr.
        for _ in 0..10 {
            record_validation(&mut s, 5.0, &t);
        }
        assert_eq!(s.lr, 1e-4);
        assert_eq!(s.bad_validations, 10);
    }
}
