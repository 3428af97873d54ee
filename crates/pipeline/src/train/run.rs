//! One training run: set up (fresh or resumed), the epochs of steps with periodic validation,
//! and the end (an interrupted run's resume checkpoint, or the final held-out evaluation).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use seq2seq_data::Batch;
use seq2seq_nn::SeededVarMap;

use crate::config::{Config, OptimizerKind};
use crate::model::{build_model, Seq2Seq};
use crate::model_dir::{self, keep_checkpoint, TrainerState, BEST, CONFIG, LAST};
use crate::observer::{hms, Observer, StepReport};
use crate::tasks::captioning::images::load_backbone;
use crate::tasks::{for_task, Prepared, Split, Task};
use crate::train::optim::Adam;
use crate::train::schedule::{record_validation, step_seed};
use crate::train::step::step;
use crate::train::validate::{score, validate};
use crate::train::weights::{finite, restore, seed_backbone, weights};
use crate::train::{HeldOut, TrainOptions, TrainSummary};
use crate::{Error, Result};

/// Why the loop ended.
pub(super) enum Stop {
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

pub(super) struct Run<'a> {
    cfg: Config,
    opts: &'a TrainOptions,
    out: PathBuf,
    dev: Device,
    state: TrainerState,
    task: Box<dyn Task>,
    p: Prepared,
    model: Seq2Seq,
    vm: SeededVarMap,
    /// Every variable, batch-norm statistics included (the optimizer leaves those out).
    all_vars: HashMap<String, Var>,
    opt: Adam,
    /// A pretrained backbone's frozen tensors, saved with the model.
    frozen: HashMap<String, Tensor>,
    /// Training time before this process (a resumed run's).
    elapsed_before: f64,
    started: Instant,
}

/// The run's config and state: a resumed run's own (its resolved config wins over the file given
/// on the command line, so that the model and data order are the ones the checkpoint was made
/// with), or a fresh state; with a resume checkpoint's weights and optimizer moments.
type Start = (
    Config,
    TrainerState,
    Option<(HashMap<String, Tensor>, HashMap<String, Tensor>)>,
);

fn start(mut cfg: Config, opts: &TrainOptions, dev: &Device) -> Result<Start> {
    let out = &opts.out;
    if opts.resume {
        let cfg = Config::from_file(&out.join(CONFIG))?;
        let (weights, moments, state) = model_dir::load_resume(out, dev)?;
        return Ok((cfg, state, Some((weights, moments))));
    }
    if out.join(model_dir::STATE).exists() {
        return Err(Error::RunExists(out.clone()));
    }
    if let Some(s) = opts.seed {
        cfg.seed = s;
    }
    let state = TrainerState {
        lr: cfg.train.learning_rate,
        ..Default::default()
    };
    Ok((cfg, state, None))
}

impl<'a> Run<'a> {
    pub(super) fn setup(
        cfg: Config,
        opts: &'a TrainOptions,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let out = opts.out.clone();
        std::fs::create_dir_all(&out).map_err(|source| Error::Write {
            path: out.clone(),
            source,
        })?;
        model_dir::remove_stale_temps(&out);
        let dev = Device::Cpu;
        let (mut cfg, state, resume) = start(cfg, opts, &dev)?;
        let mut task = for_task(cfg.task);
        let p = task.prepare(&cfg, opts, obs)?;
        if !opts.resume {
            // The saved config is the resolved one; max_steps stays the file's (the flag is per run).
            model_dir::write_atomic(&out.join(CONFIG), cfg.to_yaml().as_bytes())?;
        }
        apply_overrides(&mut cfg, opts)?;
        let vm = SeededVarMap::new(cfg.seed);
        let backbone = load_backbone(&cfg, &opts.data_dir, &dev)?;
        let backbone_vb = backbone
            .as_ref()
            .map(|(_, t)| VarBuilder::from_tensors(t.clone(), DType::F32, &dev));
        let model = build_model(
            &cfg.model,
            cfg.task,
            p.src_vocab.len(),
            p.tgt_vocab.len(),
            vm.var_builder(&dev),
            backbone_vb,
        )?;
        let frozen = match &backbone {
            Some((_, tensors)) => seed_backbone(&vm, tensors)?,
            None => HashMap::new(),
        };
        let all_vars = vm.var_map().data().lock().unwrap().clone();
        let mut opt = optimizer(&cfg, &all_vars, state.lr)?;
        if let Some((w, moments)) = &resume {
            restore(&out, &all_vars, &mut opt, w, moments)?;
            opt.step = (state.step - state.skipped_steps) as u64;
            model_dir::trim_metrics(&out, state.step)?;
            obs.line(&format!(
                "resuming at step {} (epoch {}, batch {})",
                state.step,
                state.epoch + 1,
                state.batch_in_epoch
            ));
        }
        let n_params: usize = opt.vars().map(|v| v.elem_count()).sum();
        obs.line(&format!(
            "model: {n_params} parameters; output: {}",
            out.display()
        ));
        task.attach(&cfg, &model, backbone.as_ref(), obs)?;
        Ok(Self {
            elapsed_before: state.elapsed_s,
            cfg,
            opts,
            out,
            dev,
            state,
            task,
            p,
            model,
            vm,
            all_vars,
            opt,
            frozen,
            started: Instant::now(),
        })
    }
}

/// The flags that override the config for this invocation only.
fn apply_overrides(cfg: &mut Config, opts: &TrainOptions) -> Result<()> {
    if let Some(m) = opts.max_steps {
        cfg.train.max_steps = m;
    }
    if let Some(s) = opts.max_time_s {
        if !(s >= 0.0 && s.is_finite()) {
            return Err(Error::Flag {
                flag: "--max-time-s",
                msg: format!("must be a number of seconds >= 0 (0 = no limit), got {s}"),
            });
        }
        cfg.train.max_time_s = s;
    }
    Ok(())
}

/// Adam(W) over the trainable variables: batch-norm statistics of a fine-tuned backbone stay as
/// they are.
fn optimizer(cfg: &Config, all_vars: &HashMap<String, Var>, lr: f64) -> Result<Adam> {
    let t = &cfg.train;
    let vars: HashMap<String, Var> = all_vars
        .iter()
        .filter(|(k, _)| !(k.ends_with(".running_mean") || k.ends_with(".running_var")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Adam::new(
        &vars,
        lr,
        t.betas,
        t.eps,
        t.weight_decay,
        t.optimizer == OptimizerKind::Adamw,
    )?)
}

impl Run<'_> {
    /// Every weight of the model (frozen backbone included), checked finite.
    fn all_weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut w = weights(&self.vm);
        w.extend(self.frozen.iter().map(|(k, v)| (k.clone(), v.clone())));
        finite(&self.out, w)
    }

    fn save_last(&self) -> Result<()> {
        model_dir::save_resume(
            &self.out,
            self.all_weights()?,
            self.opt.state()?,
            &self.state,
        )
    }

    /// The step the run ends at: `train.max_steps`, else the end of `train.max_epochs`.
    fn total_steps(&self) -> usize {
        let t = &self.cfg.train;
        if t.max_steps > 0 {
            return t.max_steps;
        }
        let per_epoch = self
            .task
            .epoch_batches(&self.p.train, t.batch_size, self.cfg.seed, 0)
            .len();
        t.max_epochs.max(1) * per_epoch
    }

    /// Why the next step must not run, if a step or time budget is spent. Checked before the
    /// step, so that resuming a run whose budget is spent trains nothing more.
    fn budget_spent(&self) -> Option<String> {
        let t = &self.cfg.train;
        if t.max_steps > 0 && self.state.step >= t.max_steps {
            return Some(format!("reached max_steps = {}", t.max_steps));
        }
        if t.max_time_s > 0.0 && self.state.elapsed_s >= t.max_time_s {
            return Some(format!("reached train.max_time_s = {}", t.max_time_s));
        }
        None
    }

    /// Runs epochs of steps until a budget, early stopping, the last epoch or a signal.
    pub(super) fn epochs(&mut self, obs: &mut dyn Observer) -> Result<Stop> {
        obs.start(self.state.step, self.total_steps());
        let stop = self.epochs_inner(obs);
        obs.finish();
        stop
    }

    fn epochs_inner(&mut self, obs: &mut dyn Observer) -> Result<Stop> {
        let (batch_size, seed) = (self.cfg.train.batch_size, self.cfg.seed);
        let (log_every, valid_every) = (self.cfg.train.log_every, self.cfg.train.valid_every);
        let mut window = Window::new();
        while !self.state.finished {
            let max_epochs = self.cfg.train.max_epochs;
            if max_epochs > 0 && self.state.epoch >= max_epochs {
                return Ok(Stop::Finished(format!(
                    "reached train.max_epochs = {max_epochs}"
                )));
            }
            let batches =
                self.task
                    .epoch_batches(&self.p.train, batch_size, seed, self.state.epoch as u64);
            while self.state.batch_in_epoch < batches.len() {
                if let Some(reason) = self.budget_spent() {
                    return Ok(Stop::Finished(reason));
                }
                self.train_step(&batches[self.state.batch_in_epoch], &mut window, obs)?;
                if self.state.step.is_multiple_of(valid_every) {
                    if let Some(reason) = self.validate_and_save(&window, obs)? {
                        self.state.finished = true;
                        return Ok(Stop::Finished(reason));
                    }
                }
                // Loss and speed are over the last `log_every` steps, on the bar as in the log
                // (reset after validation, which records the training loss of the same window).
                if self.state.step.is_multiple_of(log_every) {
                    window = Window::new();
                }
                let signal = self
                    .opts
                    .stop
                    .as_ref()
                    .map_or(0, |s| s.load(Ordering::SeqCst));
                if signal != 0 {
                    // The step's batch is consumed: a resumed run starts at the next one.
                    if self.state.batch_in_epoch >= batches.len() {
                        self.state.epoch += 1;
                        self.state.batch_in_epoch = 0;
                    }
                    return Ok(Stop::Interrupted(signal));
                }
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
        Ok(Stop::Finished("done".into()))
    }

    /// One step on the batch `idx`, booked into the state and the window, and reported.
    fn train_step(
        &mut self,
        idx: &[usize],
        window: &mut Window,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let (p, t) = (&self.p, &self.cfg.train);
        let b = Batch::new(
            &p.train,
            idx,
            p.tgt_vocab.pad,
            p.tgt_vocab.bos,
            p.tgt_vocab.eos,
        );
        let seed = step_seed(self.cfg.seed, self.state.step);
        let bt = self.task.batch(&b, &p.train, true, seed, &self.dev)?;
        let injected = self.opts.inject_nonfinite.contains(&(self.state.step + 1));
        let r = step(
            &self.model,
            &mut self.opt,
            &bt,
            t,
            self.state.lr,
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
        s.batch_in_epoch += 1;
        s.target_tokens += r.tokens as u64;
        window.all_tokens += r.tokens as usize;
        s.elapsed_s = self.elapsed_before + self.started.elapsed().as_secs_f64();
        obs.step(&StepReport {
            step: s.step,
            epoch: s.epoch + 1,
            loss: window.loss(),
            tokens_per_s: window.tokens_per_s(),
            lr: s.lr,
            elapsed_s: s.elapsed_s,
            window_end: s.step.is_multiple_of(t.log_every),
        });
        Ok(())
    }
}

impl Run<'_> {
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
                "step": s.step, "epoch": s.epoch + 1, "train_loss": window.loss(),
                "valid_loss": v.loss, "valid_ppl": v.ppl, "valid_exact": v.exact, "valid_bleu": v.bleu,
                "lr": s.lr, "tokens_per_s": window.tokens_per_s(), "elapsed_s": s.elapsed_s,
            }),
        )?;
        self.save_last()?;
        Ok(
            (t.patience > 0 && s.bad_validations >= t.patience).then(|| {
                format!(
                    "early stopping: {} validations without improvement",
                    t.patience
                )
            }),
        )
    }

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
