//! One training run's state, and its setup: fresh or resumed, the task's data prepared, the
//! model built (a pretrained backbone seeded), the optimizer restored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use seq2seq_nn::SeededVarMap;

use crate::config::{Config, OptimizerKind};
use crate::model::{build_model, Seq2Seq};
use crate::model_dir::{self, TrainerState, CONFIG};
use crate::observer::Observer;
use crate::tasks::captioning::cache::load_backbone;
use crate::tasks::{for_task, Prepared, RunFiles, Task};
use crate::train::init::{apply, init_from};
use crate::train::optim::Adam;
use crate::train::weights::{finite, restore, seed_backbone, weights};
use crate::train::TrainOptions;
use crate::{Error, Result};

pub(super) struct Run<'a> {
    pub(super) cfg: Config,
    pub(super) opts: &'a TrainOptions,
    pub(super) out: PathBuf,
    pub(super) dev: Device,
    pub(super) state: TrainerState,
    pub(super) task: Box<dyn Task>,
    pub(super) p: Prepared,
    pub(super) model: Seq2Seq,
    pub(super) vm: SeededVarMap,
    /// Every variable, batch-norm statistics included (the optimizer leaves those out).
    pub(super) all_vars: HashMap<String, Var>,
    pub(super) opt: Adam,
    /// A pretrained backbone's frozen tensors, saved with the model.
    pub(super) frozen: HashMap<String, Tensor>,
    /// Training time before this process (a resumed run's).
    pub(super) elapsed_before: f64,
    pub(super) started: Instant,
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
        if opts.init_from.is_some() {
            return Err(Error::Flag {
                flag: "--init-from",
                msg: "starts a new run; --resume continues one: give one of them".into(),
            });
        }
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
        // A device that cannot be had is refused before anything is written.
        let dev = opts.device.unwrap_or(cfg.device).resolve()?;
        let out = opts.out.clone();
        std::fs::create_dir_all(&out).map_err(|source| Error::Write {
            path: out.clone(),
            source,
        })?;
        model_dir::remove_stale_temps(&out);
        let (mut cfg, state, resume) = start(cfg, opts, &dev)?;
        let init = match &opts.init_from {
            Some(src) => Some(init_from(src, &cfg, &out, opts.reset_optimizer, &dev)?),
            None => None,
        };
        let mut task = for_task(cfg.task);
        let files = RunFiles {
            data_dir: &opts.data_dir,
            out: &out,
            // A resumed run and one started from a checkpoint read their vocabularies back.
            resume: opts.resume || init.is_some(),
        };
        let p = task.prepare(&cfg, files, obs)?;
        if !opts.resume {
            // The saved config is the resolved one; max_steps stays the file's (the flag is per run).
            model_dir::write_atomic(&out.join(CONFIG), cfg.to_yaml().as_bytes())?;
        }
        apply_overrides(&mut cfg, opts)?;
        let vm = SeededVarMap::new(cfg.seed);
        let backbone = load_backbone(&cfg, &opts.data_dir, &dev)?;
        let backbone_vb = backbone
            .as_ref()
            .map(|b| VarBuilder::from_tensors(b.tensors.clone(), DType::F32, &dev));
        let model = build_model(
            &cfg.model,
            cfg.task,
            p.src_vocab.len(),
            p.tgt_vocab.len(),
            vm.var_builder(&dev),
            backbone_vb,
        )?;
        let frozen = match &backbone {
            Some(b) => seed_backbone(&vm, &b.tensors)?,
            None => HashMap::new(),
        };
        let all_vars = vm.var_map().data().lock().unwrap().clone();
        let mut opt = optimizer(&cfg, &all_vars, state.lr)?;
        lr_multipliers(&cfg, &mut opt, &out, obs)?;
        if let Some(init) = &init {
            apply(init, &all_vars, &mut opt)?;
            obs.line(&format!(
                "starting from {} ({})",
                init.file.display(),
                if init.moments.is_some() {
                    "weights and Adam moments"
                } else {
                    "weights; fresh Adam moments"
                }
            ));
        }
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
        // The schedule keeps the config's length: the flag only stops the run.
        cfg.train.decay_steps = cfg.train.cosine_end();
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

/// The variables an optimizer updates: all but batch-norm running statistics.
pub(crate) fn trainable<'a>(
    vars: impl Iterator<Item = (&'a String, &'a Var)>,
) -> HashMap<String, Var> {
    vars.filter(|(k, _)| !(k.ends_with(".running_mean") || k.ends_with(".running_var")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Adam(W) over the trainable variables: batch-norm statistics of a fine-tuned backbone stay as
/// they are.
fn optimizer(cfg: &Config, all_vars: &HashMap<String, Var>, lr: f64) -> Result<Adam> {
    let t = &cfg.train;
    let vars = trainable(all_vars.iter());
    Ok(Adam::new(
        &vars,
        lr,
        t.betas,
        t.eps,
        t.weight_decay,
        t.optimizer == OptimizerKind::Adamw,
    )?)
}

/// `train.lr_multipliers` applied to the optimizer, each prefix's reach reported; a prefix that
/// names no trained parameter is the config's error.
fn lr_multipliers(
    cfg: &Config,
    opt: &mut Adam,
    out: &std::path::Path,
    obs: &mut dyn Observer,
) -> Result<()> {
    let factors = &cfg.train.lr_multipliers;
    let governed = opt
        .set_lr_multipliers(factors)
        .map_err(|msg| Error::Config {
            path: out.join(CONFIG),
            msg: format!("train.lr_multipliers: {msg}"),
        })?;
    for (prefix, n) in governed {
        let f = factors[&prefix];
        obs.line(&format!(
            "learning rate ×{f} for {n} parameter tensors under {prefix}"
        ));
    }
    Ok(())
}

impl Run<'_> {
    /// Every weight of the model (frozen backbone included), checked finite.
    pub(super) fn all_weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut w = weights(&self.vm);
        w.extend(self.frozen.iter().map(|(k, v)| (k.clone(), v.clone())));
        finite(&self.out, w)
    }

    pub(super) fn save_last(&self) -> Result<()> {
        model_dir::save_resume(
            &self.out,
            self.all_weights()?,
            self.opt.state()?,
            &self.state,
        )
    }

    /// The step the run ends at: `train.max_steps`, else the end of `train.max_epochs`.
    pub(super) fn total_steps(&self) -> usize {
        let t = &self.cfg.train;
        if t.max_steps > 0 {
            return t.max_steps;
        }
        let per_epoch = self
            .task
            .epoch_batches(&self.p.train, t.batch(), self.cfg.seed, 0)
            .len()
            .div_ceil(t.accumulate.max(1));
        t.max_epochs.max(1) * per_epoch
    }

    /// Why the next step must not run, if a step or time budget is spent. Checked before the
    /// step, so that resuming a run whose budget is spent trains nothing more.
    pub(super) fn budget_spent(&self) -> Option<String> {
        let t = &self.cfg.train;
        if t.max_steps > 0 && self.state.step >= t.max_steps {
            return Some(format!("reached max_steps = {}", t.max_steps));
        }
        if t.max_time_s > 0.0 && self.state.elapsed_s >= t.max_time_s {
            return Some(format!("reached train.max_time_s = {}", t.max_time_s));
        }
        None
    }
}
