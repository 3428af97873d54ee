//! The loop: epochs of steps, each booked and reported, with periodic validation and
//! checkpoints, until a budget, early stopping, the last epoch or a signal.

use std::sync::atomic::Ordering;
use std::time::Instant;

use seq2seq_data::{Batch, Example};

use crate::curves;
use crate::model_dir::{self, keep_checkpoint, BEST, LAST};
use crate::observer::{Observer, StepReport};
use crate::tasks::Split;
use crate::train::feed::Chunk;
use crate::train::run::Run;
use crate::train::schedule::{lr_at, record_validation, step_seed};
use crate::train::step::step;
use crate::train::validate::{score, validate};
use crate::{Error, Result};

/// Why the loop ended.
pub(crate) enum Stop {
    /// A budget, early stopping or the end of the epochs: the reason, for the log.
    Finished(String),
    /// A signal: the run is to be resumed.
    Interrupted(i32),
}

/// The running figures of the current `train.log_every` window.
struct Window {
    /// Loss and target tokens of the updates made.
    nll: f64,
    tokens: f64,
    since: Instant,
    /// Target tokens of every step, skipped ones too (the speed shown).
    all_tokens: usize,
}

impl Window {
    fn new() -> Self {
        Self {
            nll: 0.0,
            tokens: 0.0,
            since: Instant::now(),
            all_tokens: 0,
        }
    }

    fn tokens_per_s(&self) -> f64 {
        self.all_tokens as f64 / self.since.elapsed().as_secs_f64().max(1e-9)
    }

    fn loss(&self) -> f64 {
        self.nll / self.tokens.max(1.0)
    }
}

impl Run<'_> {
    /// Runs epochs of steps until a budget, early stopping, the last epoch or a signal.
    pub(crate) fn epochs(&mut self, obs: &mut dyn Observer) -> Result<Stop> {
        obs.start(self.state.step, self.total_steps());
        let stop = self.epochs_inner(obs);
        obs.finish();
        stop
    }

    fn epochs_inner(&mut self, obs: &mut dyn Observer) -> Result<Stop> {
        let mut window = Window::new();
        while !self.state.finished {
            let max_epochs = self.cfg.train.max_epochs;
            if max_epochs > 0 && self.state.epoch >= max_epochs {
                return Ok(Stop::Finished(format!(
                    "reached train.max_epochs = {max_epochs}"
                )));
            }
            // A streamed corpus whose every item the length limits drop would loop for ever.
            let (from_start, steps_before) = (self.state.stream.is_none(), self.state.step);
            while let Some(chunk) = self.chunk()? {
                if let Some(stop) = self.chunk_steps(&chunk, &mut window, obs)? {
                    return Ok(stop);
                }
                if !self.chunk_done(&chunk) {
                    break;
                }
            }
            if from_start && self.state.batch_in_epoch == 0 && self.state.step == steps_before {
                return Err(Error::Data(seq2seq_data::DataError::Empty {
                    what: "the training set".into(),
                    hint: format!(
                        " after filtering (no item of the stream within data.max_src_len={} and data.max_tgt_len={} tokens)",
                        self.cfg.data.max_src_len, self.cfg.data.max_tgt_len
                    ),
                }));
            }
            self.next_epoch();
        }
        Ok(Stop::Finished("done".into()))
    }

    /// The steps over a part of the epoch, from the state's batch on; why to stop, if the run
    /// ends within it.
    fn chunk_steps(
        &mut self,
        chunk: &Chunk,
        window: &mut Window,
        obs: &mut dyn Observer,
    ) -> Result<Option<Stop>> {
        let (log_every, valid_every) = (self.cfg.train.log_every, self.cfg.train.valid_every);
        let batches = &chunk.batches;
        while self.state.batch_in_epoch < batches.len() {
            if let Some(reason) = self.budget_spent() {
                return Ok(Some(Stop::Finished(reason)));
            }
            // One update per `train.accumulate` batches (fewer at the end of a part).
            let from = self.state.batch_in_epoch;
            let to = (from + self.cfg.train.accumulate.max(1)).min(batches.len());
            self.train_step(&chunk.examples, &batches[from..to], window, obs)?;
            let validates = self.state.step.is_multiple_of(valid_every);
            if validates {
                if let Some(reason) = self.validate_and_save(window, obs)? {
                    self.state.finished = true;
                    return Ok(Some(Stop::Finished(reason)));
                }
            }
            // Loss and speed are over the last `log_every` steps, on the bar as in the log
            // (reset after validation, which records the training loss of the same window;
            // other windows get a training record of their own, for the curves).
            if self.state.step.is_multiple_of(log_every) {
                if !validates {
                    self.record_window(window)?;
                }
                *window = Window::new();
            }
            let signal = self
                .opts
                .stop
                .as_ref()
                .map_or(0, |s| s.load(Ordering::SeqCst));
            if signal != 0 {
                // The step's batch is consumed: a resumed run starts at the next one.
                if self.state.batch_in_epoch >= batches.len() && !self.chunk_done(chunk) {
                    self.next_epoch();
                }
                return Ok(Some(Stop::Interrupted(signal)));
            }
        }
        Ok(None)
    }

    /// One update on the batches `group` (their example indices), booked into the state and the
    /// window, and reported.
    fn train_step(
        &mut self,
        examples: &[Example],
        group: &[Vec<usize>],
        window: &mut Window,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let (p, t) = (&self.p, &self.cfg.train);
        let seed = step_seed(self.cfg.seed, self.state.step);
        let mut bts = Vec::with_capacity(group.len());
        for (j, idx) in group.iter().enumerate() {
            let (pad, bos, eos) = (p.tgt_vocab.pad, p.tgt_vocab.bos, p.tgt_vocab.eos);
            let b = Batch::new(examples, idx, pad, bos, eos);
            let batch_seed = seed.wrapping_add(j as u64);
            bts.push(self.task.batch(&b, examples, true, batch_seed, &self.dev)?);
        }
        let injected = self.opts.inject_nonfinite.contains(&(self.state.step + 1));
        let r = step(
            &self.model,
            &mut self.opt,
            &bts,
            t,
            lr_at(t, self.state.lr, self.state.step + 1),
            seed,
            injected,
        )?;
        let s = &mut self.state;
        if r.applied {
            s.nonfinite_in_a_row = 0;
            window.nll += r.nll_sum;
            window.tokens += r.tokens;
        } else {
            // The batch is consumed, the weights and the optimizer's step stay as they were.
            s.skipped_steps += 1;
            s.nonfinite_in_a_row += 1;
            obs.line(&format!(
                "warning: step {}: the loss ({}) or the gradient norm ({}) is not finite; update skipped ({} in a row, the limit is train.max_nonfinite_steps = {})",
                s.step + 1,
                if injected { f64::NAN } else { r.nll_sum },
                r.grad_norm,
                s.nonfinite_in_a_row,
                t.max_nonfinite_steps
            ));
            if s.nonfinite_in_a_row >= t.max_nonfinite_steps {
                // The resume checkpoint on disk is the last good one: it is not overwritten.
                return Err(Error::Diverged {
                    step: s.step + 1,
                    count: s.nonfinite_in_a_row,
                    path: self.out.join(LAST),
                });
            }
        }
        s.step += 1;
        s.batch_in_epoch += group.len();
        s.target_tokens += r.tokens as u64;
        window.all_tokens += r.tokens as usize;
        s.elapsed_s = self.elapsed_before + self.started.elapsed().as_secs_f64();
        obs.step(&StepReport {
            step: s.step,
            epoch: s.epoch + 1,
            loss: window.loss(),
            tokens_per_s: window.tokens_per_s(),
            lr: lr_at(t, s.lr, s.step),
            elapsed_s: s.elapsed_s,
            window_end: s.step.is_multiple_of(t.log_every),
        });
        Ok(())
    }

    /// A training record in the metrics log: the window's loss, the learning rate and speed.
    fn record_window(&self, window: &Window) -> Result<()> {
        let s = &self.state;
        model_dir::record_metrics(
            &self.out,
            &serde_json::json!({
                "kind": "train", "step": s.step, "epoch": s.epoch + 1,
                "train_loss": (window.tokens > 0.0).then(|| window.loss()),
                "lr": lr_at(&self.cfg.train, s.lr, s.step), "tokens_per_s": window.tokens_per_s(), "elapsed_s": s.elapsed_s,
            }),
        )
    }

    /// Validates on the valid split, keeps and saves checkpoints, logs the report and the metrics
    /// record, and writes the resume checkpoint; returns why to stop when patience ran out.
    fn validate_and_save(
        &mut self,
        window: &Window,
        obs: &mut dyn Observer,
    ) -> Result<Option<String>> {
        let t = &self.cfg.train;
        let v = validate(
            &*self.task,
            &self.model,
            &self.p,
            &self.cfg,
            Split::Valid,
            t.valid_decode_size,
            &self.dev,
        )?;
        if t.keep_checkpoints > 0 {
            keep_checkpoint(
                &self.out,
                self.state.step,
                t.keep_checkpoints,
                &self.all_weights()?,
            )?;
        }
        let improved = record_validation(&mut self.state, score(&v, t.early_stopping_metric), t);
        if improved {
            model_dir::save_tensors(&self.out.join(BEST), &self.all_weights()?)?;
        }
        obs.line(&v.report(
            self.state.step,
            improved,
            self.task.bleu_name(),
            &self.p.valid_items,
            t.valid_samples,
            !self.task.has_references(),
        ));
        let s = &self.state;
        model_dir::record_metrics(
            &self.out,
            &serde_json::json!({
                "kind": "valid", "step": s.step, "epoch": s.epoch + 1, "train_loss": window.loss(),
                "valid_loss": v.loss, "valid_ppl": v.ppl, "valid_exact": v.exact, "valid_bleu": v.bleu,
                "lr": lr_at(&self.cfg.train, s.lr, s.step), "tokens_per_s": window.tokens_per_s(), "elapsed_s": s.elapsed_s,
            }),
        )?;
        self.save_last()?;
        // The pictures are for people: one that cannot be drawn or written is reported, and
        // training goes on.
        if let Err(e) = curves::write_run_curves(&self.out, &self.cfg.name) {
            obs.line(&format!("warning: training curves not written: {e}"));
        }
        Ok(
            (t.patience > 0 && s.bad_validations >= t.patience).then(|| {
                format!(
                    "early stopping: {} validations without improvement",
                    t.patience
                )
            }),
        )
    }
}
