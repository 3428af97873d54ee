//! The end of a run: an interrupted run's resume checkpoint, or the last and best checkpoints
//! and the final evaluation of the best weights on held-out data.

use crate::model_dir::{self, BEST, LAST};
use crate::observer::{hms, Observer};
use crate::tasks::Split;
use crate::train::run::Run;
use crate::train::validate::validate;
use crate::train::{HeldOut, TrainSummary};
use crate::Result;

impl Run<'_> {
    /// Only the resume checkpoint: a resumed run then ends exactly as an uninterrupted one.
    pub(super) fn interrupted(self, signal: i32, obs: &mut dyn Observer) -> Result<TrainSummary> {
        self.save_last()?;
        obs.line(&format!(
            "interrupted by signal {signal} after step {}: the resume checkpoint is {}; continue with `seq2seq train CONFIG --out {} --resume`",
            self.state.step,
            self.out.join(LAST).display(),
            self.out.display()
        ));
        Ok(TrainSummary {
            steps: self.state.step,
            best_score: self.state.best_score,
            out: self.out,
            interrupted: Some(signal),
            held_out: None,
        })
    }

    /// Saves the last checkpoint (and the best, if never validated), then evaluates the best
    /// weights on the test split (the valid split when there is none).
    pub(super) fn finish(mut self, reason: &str, obs: &mut dyn Observer) -> Result<TrainSummary> {
        if !self.out.join(BEST).exists() {
            // Never validated: the final weights are the only (and so the best) checkpoint.
            self.state.best_step = self.state.step;
            model_dir::save_tensors(&self.out.join(BEST), &self.all_weights()?)?;
        }
        self.save_last()?;
        obs.line(&format!(
            "stopped after {} steps ({reason}), {} target tokens in {}",
            self.state.step,
            self.state.target_tokens,
            hms(self.state.elapsed_s)
        ));
        let best = model_dir::load_tensors(&self.out, BEST, &self.dev)?;
        for (name, var) in &self.all_vars {
            if let Some(v) = best.get(name) {
                var.set(v)?;
            }
        }
        let (split, name) = if self.p.test.is_empty() {
            (Split::Valid, "valid")
        } else {
            (Split::Test, "test")
        };
        let items = match split {
            Split::Valid => self.p.valid.len(),
            Split::Test => self.p.test.len(),
        };
        let held_out = if items == 0 {
            None
        } else {
            let v = validate(
                &*self.task,
                &self.model,
                &self.p,
                &self.cfg,
                split,
                0,
                &self.dev,
            )?;
            Some(HeldOut {
                split: name,
                items,
                step: self.state.best_step,
                loss: v.loss,
                ppl: v.ppl,
                exact: v.exact,
                bleu: v.bleu,
                bleu_name: self.task.bleu_name(),
            })
        };
        Ok(TrainSummary {
            steps: self.state.step,
            best_score: self.state.best_score,
            out: self.out,
            interrupted: None,
            held_out,
        })
    }
}
