//! `seq2seq score-model`: each (source, target) pair's log-probability and perplexity under a
//! translation model (forced decoding), for reranking and for filtering noisy pairs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::args::EnsembleArgs;

#[derive(Args)]
pub(crate) struct ScoreModelArgs {
    /// The model directory written by `train`, or one checkpoint file in it.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    ensemble: EnsembleArgs,
    /// Source sentences, one per line.
    #[arg(long)]
    src: PathBuf,
    /// Their targets, line-aligned with --src.
    #[arg(long)]
    tgt: PathBuf,
    /// Pairs scored together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// One JSON object per pair (`line`, `log_prob`, `tokens`, `ppl`) instead of
    /// `log_prob<TAB>tokens<TAB>ppl`.
    #[arg(long)]
    json: bool,
}

fn read(path: &Path) -> Result<Vec<String>> {
    Ok(seq2seq_data::corpus::read_lines(path)?)
}

pub(crate) fn run(a: ScoreModelArgs) -> Result<()> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size: must be at least 1");
    let t = a.ensemble.load(&a.model)?;
    let (srcs, tgts) = (read(&a.src)?, read(&a.tgt)?);
    anyhow::ensure!(
        srcs.len() == tgts.len(),
        "{} has {} lines but {} has {}: sources and targets must be line-aligned",
        a.src.display(),
        srcs.len(),
        a.tgt.display(),
        tgts.len()
    );
    let (scores, warnings) = t.score_pairs(&srcs, &tgts, a.batch_size)?;
    for w in &warnings {
        eprintln!("warning: {}: {w}", a.src.display());
    }
    let mut out = std::io::stdout().lock();
    for (i, s) in scores.iter().enumerate() {
        if a.json {
            let line = serde_json::json!({
                "line": i + 1, "log_prob": s.log_prob, "tokens": s.tokens, "ppl": s.ppl,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{:.6}\t{}\t{:.4}", s.log_prob, s.tokens, s.ppl)?;
        }
    }
    let (lp, n): (f64, usize) = scores
        .iter()
        .fold((0.0, 0), |(lp, n), s| (lp + s.log_prob, n + s.tokens));
    eprintln!(
        "{} pairs, {n} target tokens: {:.4} nats/token, perplexity {:.4}",
        scores.len(),
        -lp / n.max(1) as f64,
        (-lp / n.max(1) as f64).exp()
    );
    Ok(())
}
