//! `seq2seq average`: the mean of several checkpoints' weights as a new model directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub(crate) struct AverageArgs {
    /// The model directory to write (config and tokenizers come from the first checkpoint's).
    #[arg(long)]
    out: PathBuf,
    /// Checkpoints: .safetensors files (model.safetensors, last.safetensors, …) or model
    /// directories (their model.safetensors).
    #[arg(required = true)]
    checkpoints: Vec<PathBuf>,
}

pub(crate) fn run(a: AverageArgs) -> Result<()> {
    let n = seq2seq_pipeline::model_dir::average(&a.checkpoints, &a.out)?;
    eprintln!(
        "averaged {n} tensors over {} checkpoints into {}",
        a.checkpoints.len(),
        a.out.display()
    );
    Ok(())
}
