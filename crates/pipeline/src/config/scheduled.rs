//! `train.scheduled_sampling`: how often training feeds the decoder its own predictions instead
//! of the reference's previous token (Bengio et al. 2015), and how that share grows.
//!
//! Teacher forcing trains every step on the true prefix, but decoding runs on the model's own:
//! scheduled sampling narrows that gap (exposure bias) by replacing a growing share of the
//! decoder's input tokens with its predictions. It runs in the two-pass form of Duckworth et al.
//! 2019 and Mihaylova & Martins 2019: a teacher-forced pass predicts every position, a share of
//! the inputs is replaced by those predictions, and the loss is the second pass's. Both passes
//! keep the decoder's whole-sequence paths; the first pass carries no gradient.

use serde::{Deserialize, Serialize};

/// Which of the model's predictions replaces a reference token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampledTokens {
    /// The most likely token.
    #[default]
    Greedy,
    /// A token drawn from the model's next-token distribution (Bengio et al.'s choice).
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledSampling {
    /// The share of decoder inputs (past the start token) replaced once the ramp is over.
    pub max_rate: f64,
    /// Updates trained on the reference alone before the first replacement: the model must
    /// predict something worth feeding back first.
    #[serde(default)]
    pub start_step: usize,
    /// Updates over which the share rises linearly from 0 to `max_rate` (0 = at once).
    #[serde(default)]
    pub ramp_steps: usize,
    #[serde(default)]
    pub tokens: SampledTokens,
}

impl ScheduledSampling {
    /// The share of inputs replaced in update `step` (1-based, as the learning-rate schedule
    /// counts): 0 up to `start_step`, then a linear ramp to `max_rate` over `ramp_steps`.
    pub fn rate(&self, step: u64) -> f64 {
        let past = step.saturating_sub(self.start_step as u64);
        if past == 0 {
            return 0.0;
        }
        if self.ramp_steps == 0 {
            return self.max_rate;
        }
        self.max_rate * (past as f64 / self.ramp_steps as f64).min(1.0)
    }

    /// The config errors of this section, each naming its key.
    pub(crate) fn errors(&self) -> Vec<String> {
        let r = self.max_rate;
        if (0.0..=1.0).contains(&r) {
            Vec::new()
        } else {
            vec![format!(
                "train.scheduled_sampling.max_rate: a share of the decoder's inputs, so it must be in [0, 1]; got {r}"
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(start_step: usize, ramp_steps: usize) -> ScheduledSampling {
        ScheduledSampling {
            max_rate: 0.4,
            start_step,
            ramp_steps,
            tokens: SampledTokens::Greedy,
        }
    }

    #[test]
    fn the_rate_waits_for_start_step_then_ramps_linearly_to_max_rate() {
        let s = section(100, 200);
        for (step, want) in [
            (1, 0.0),
            (100, 0.0),
            (101, 0.002),
            (200, 0.2),
            (300, 0.4),
            (9999, 0.4),
        ] {
            assert!(
                (s.rate(step) - want).abs() < 1e-12,
                "step {step}: {}",
                s.rate(step)
            );
        }
        // No ramp: the whole share from the first update past the start.
        assert_eq!(section(10, 0).rate(10), 0.0);
        assert_eq!(section(10, 0).rate(11), 0.4);
        assert_eq!(section(0, 0).rate(1), 0.4);
    }

    #[test]
    fn max_rate_outside_zero_to_one_is_an_error_naming_the_key() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let mut s = section(0, 0);
            s.max_rate = bad;
            let e = s.errors();
            assert_eq!(e.len(), 1, "{bad}");
            assert!(
                e[0].starts_with("train.scheduled_sampling.max_rate:"),
                "{}",
                e[0]
            );
        }
        for ok in [0.0, 0.25, 1.0] {
            let mut s = section(0, 0);
            s.max_rate = ok;
            assert!(s.errors().is_empty());
        }
    }
}
