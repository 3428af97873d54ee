//! The learning-rate schedule and early stopping, driven by validation scores, and the
//! per-step seed.

use crate::config::TrainConfig;
use crate::model_dir::TrainerState;

/// The seed of a step's dropout masks and augmentation: a function of the run's seed and the
/// step, so that a resumed run draws what the uninterrupted one would have.
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step as u64)
}

/// Books one validation's score (lower is better) into the run's state: a new best resets the
/// patience counters; otherwise, after `lr_patience` validations without one, the learning rate
/// is multiplied by `lr_decay_factor` (not below `min_lr`). Returns whether the score is a new best.
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
        if state.plateau >= t.lr_patience && state.lr > t.min_lr {
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
