//! Training: Adam(W), gradient clipping, label smoothing, validation with samples, best/last
//! checkpoints, plateau learning-rate decay, early stopping, exact resume, and a clean stop on a
//! signal. The loop ([`run`]) is task-agnostic: what differs between the tasks is behind
//! [`crate::tasks::Task`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;
use std::sync::Arc;

use crate::config::Config;
use crate::observer::Observer;
use crate::Result;

mod epochs;
mod feed;
mod finish;
mod init;
pub(crate) mod optim;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod step;
pub(crate) mod validate;
pub(crate) mod weights;

/// Options of one `train` invocation (the CLI flags).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// Overrides `train.max_steps`.
    pub max_steps: Option<usize>,
    /// Overrides `train.max_time_s` (training time in total, a resumed run's earlier time included).
    pub max_time_s: Option<f64>,
    /// Overrides `seed`.
    pub seed: Option<u64>,
    /// Start a new run from this model directory's best weights, or this checkpoint file, and
    /// its vocabularies (fine-tuning).
    pub init_from: Option<PathBuf>,
    /// With `init_from`: fresh Adam moments even where the checkpoint has some.
    pub reset_optimizer: bool,
    /// Overrides the config's `device`.
    pub device: Option<crate::device::DeviceChoice>,
    /// Set to a signal number (the CLI's SIGINT/SIGTERM handler does) to stop after the current
    /// step with the resume checkpoint written.
    pub stop: Option<Arc<AtomicI32>>,
    /// Test hook: the steps (numbered as logged, from 1) whose batch counts as non-finite.
    #[doc(hidden)]
    pub inject_nonfinite: Vec<usize>,
}

/// The final figures on held-out data (the test split, else the valid split) with the best
/// weights.
#[derive(Clone, Debug)]
pub struct HeldOut {
    /// "test" or "valid".
    pub split: &'static str,
    pub items: usize,
    /// The step whose weights were evaluated (the best validation's).
    pub step: usize,
    /// Loss per target token, and its exponent.
    pub loss: f64,
    pub ppl: f64,
    /// Exact-match share of greedy outputs (none for a language model).
    pub exact: Option<f64>,
    pub bleu: Option<f64>,
    /// "BLEU" (sacreBLEU) or "BLEU-4" (pycocoevalcap, captioning).
    pub bleu_name: &'static str,
}

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub best_score: Option<f64>,
    pub out: PathBuf,
    /// The signal that stopped the run (its resume checkpoint is written; nothing was evaluated).
    pub interrupted: Option<i32>,
    /// `None` when interrupted or when the corpus has no held-out data.
    pub held_out: Option<HeldOut>,
}

impl TrainSummary {
    /// The held-out exact-match share.
    pub fn exact_match(&self) -> Option<f64> {
        self.held_out.as_ref().and_then(|h| h.exact)
    }
}

/// Trains a model from `cfg` into `opts.out` (or continues the run there with `resume`),
/// reporting progress to `obs`.
pub fn train(cfg: Config, opts: &TrainOptions, obs: &mut dyn Observer) -> Result<TrainSummary> {
    let mut run = run::Run::setup(cfg, opts, obs)?;
    match run.epochs(obs)? {
        epochs::Stop::Interrupted(signal) => run.interrupted(signal, obs),
        epochs::Stop::Finished(reason) => run.finish(&reason, obs),
    }
}

/// Default output directory of a config: `runs/<name>` (or `runs/<file stem>`).
pub fn default_out(cfg: &Config, config_path: &Path) -> PathBuf {
    let name = if cfg.name.is_empty() {
        config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    } else {
        cfg.name.clone()
    };
    PathBuf::from("runs").join(name)
}
