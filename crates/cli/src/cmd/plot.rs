//! `seq2seq plot`: training curves of one or more runs, overlaid, as PNG or SVG.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use seq2seq_pipeline::curves::{plot_runs, Metric};

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// Model directories (each with its metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// One panel of this figure instead of the loss, validation-metric and learning-rate panels:
    /// train_loss, valid_loss, valid_ppl, valid_bleu, valid_exact or lr.
    #[arg(long)]
    metric: Option<String>,
    /// The picture to write; its extension (.png or .svg) picks the format.
    #[arg(long, default_value = "curves.png")]
    out: PathBuf,
}

pub(crate) fn run(a: PlotArgs) -> Result<()> {
    let metric = match a.metric.as_deref() {
        None => None,
        Some(m) => Some(Metric::parse(m).ok_or_else(|| {
            anyhow!(
                "--metric {m}: not a recorded figure (one of {})",
                Metric::NAMES.join(", ")
            )
        })?),
    };
    plot_runs(&a.runs, metric, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
