//! `seq2seq train`: a config into a model directory, resumable, stopped cleanly by SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use seq2seq_pipeline::{default_out, resolve_data_dir, train, Config, TrainOptions};

use crate::progress::TrainProgress;
use crate::signals;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The config file (see configs/reference.yaml for every key).
    config: PathBuf,
    /// Where corpora are looked up (else $SEQ2SEQ_DATA_DIR, else ./datasets).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The model directory to write (default: runs/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many updates in total (overrides train.max_steps).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Stop after this many seconds of training in total, a resumed run's earlier time
    /// included (overrides train.max_time_s; 0 = no limit).
    #[arg(long)]
    max_time_s: Option<f64>,
    /// Random seed (overrides `seed`; ignored with --resume).
    #[arg(long)]
    seed: Option<u64>,
    /// Start from this model directory's best weights (or this checkpoint file) and its
    /// vocabularies: fine-tuning in a new run directory (OpenNMT-py's -train_from).
    #[arg(long, value_name = "MODEL_OR_CHECKPOINT")]
    init_from: Option<PathBuf>,
    /// With --init-from: fresh Adam moments even when the checkpoint has some (-reset_optim).
    #[arg(long, requires = "init_from")]
    reset_optimizer: bool,
    /// Where training runs: cpu, cuda, cuda:N or auto (overrides the config's `device`).
    #[arg(long, value_name = "DEVICE")]
    device: Option<seq2seq_pipeline::DeviceChoice>,
}

pub(crate) fn run(a: TrainArgs) -> Result<()> {
    let cfg = Config::from_file(&a.config)?;
    for w in cfg.warnings() {
        eprintln!("warning: {}: {w}", a.config.display());
    }
    let out = a.out.unwrap_or_else(|| default_out(&cfg, &a.config));
    let opts = TrainOptions {
        data_dir: resolve_data_dir(a.data_dir.as_deref()),
        out,
        resume: a.resume,
        max_steps: a.max_steps,
        max_time_s: a.max_time_s,
        seed: a.seed,
        init_from: a.init_from,
        reset_optimizer: a.reset_optimizer,
        device: a.device,
        stop: Some(signals::stop_on_interrupt()?),
        inject_nonfinite: Vec::new(),
    };
    let summary = train(cfg, &opts, &mut TrainProgress::stderr())?;
    if let Some(signal) = summary.interrupted {
        return Err(signals::Interrupted(signal).into());
    }
    if let Some(h) = &summary.held_out {
        let mut tail = String::new();
        if let Some(e) = h.exact {
            tail += &format!(" | exact match: {:.1}%", 100.0 * e);
        }
        if let Some(b) = h.bleu {
            tail += &format!(" | {} {b:.2}", h.bleu_name);
        }
        println!(
            "{} ({} items, checkpoint of step {}): loss {:.4} nats/token | ppl {:.2}{tail}",
            h.split, h.items, h.step, h.loss, h.ppl
        );
    }
    eprintln!("model written to {}", summary.out.display());
    Ok(())
}
