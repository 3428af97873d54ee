//! `seq2seq score`: hypotheses against one or more references, like the sacrebleu command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use seq2seq_metrics::{Bleu, Chrf, Smoothing, Tokenizer};

use crate::cmd::read_stdin_lines;

#[derive(Args)]
pub(crate) struct ScoreArgs {
    /// A reference file (repeat for several references per line).
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// The hypothesis file; stdin when absent.
    #[arg(long)]
    hyp: Option<PathBuf>,
    /// Comma-separated: bleu, chrf, chrf++.
    #[arg(long, default_value = "bleu,chrf")]
    metrics: String,
    #[arg(long)]
    lowercase: bool,
    /// BLEU tokenizer: 13a | intl | char | none.
    #[arg(long, default_value = "13a")]
    tokenize: String,
    /// BLEU smoothing: exp | floor | add-k | none.
    #[arg(long, default_value = "exp")]
    smooth_method: String,
    /// Value for floor (default 0.1) or add-k (default 1).
    #[arg(long)]
    smooth_value: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn read_text(path: &std::path::Path) -> Result<Vec<String>> {
    let lines = seq2seq_data::corpus::read_lines(path)?;
    anyhow::ensure!(!lines.is_empty(), "{} is empty", path.display());
    Ok(lines)
}

pub(crate) fn run(a: ScoreArgs) -> Result<()> {
    let ScoreArgs {
        refs,
        hyp,
        metrics,
        lowercase,
        tokenize,
        smooth_method,
        smooth_value,
        json,
    } = a;
    let hyp = hyp.as_deref();
    let hyps = match hyp {
        Some(p) => read_text(p)?,
        None => {
            let l = read_stdin_lines()?;
            anyhow::ensure!(!l.is_empty(), "no hypotheses on stdin");
            l
        }
    };
    let hyp_name = hyp
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdin".into());
    let mut streams = Vec::new();
    for r in &refs {
        let lines = read_text(r)?;
        anyhow::ensure!(
            lines.len() == hyps.len(),
            "{} has {} lines but {hyp_name} has {}: references and hypotheses must be line-aligned",
            r.display(),
            lines.len(),
            hyps.len()
        );
        streams.push(lines);
    }
    let per_hyp: Vec<Vec<String>> = (0..hyps.len())
        .map(|i| streams.iter().map(|s| s[i].clone()).collect())
        .collect();
    let tokenizer = Tokenizer::parse(&tokenize).ok_or_else(|| {
        anyhow::anyhow!(
            "--tokenize: unknown tokenizer `{tokenize}`; expected 13a, intl, char or none"
        )
    })?;
    let smoothing = Smoothing::parse(&smooth_method, smooth_value).ok_or_else(|| {
        anyhow::anyhow!(
            "--smooth-method: unknown `{smooth_method}`; expected exp, floor, add-k or none"
        )
    })?;
    let bleu = Bleu {
        lowercase,
        tokenizer,
        smoothing,
        ..Bleu::default()
    };
    let mut out = serde_json::Map::new();
    let mut text = Vec::new();
    for m in metrics.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (line, value) = one_metric(m, &bleu, &hyps, &per_hyp)?;
        text.push(line);
        out.insert(m.into(), value);
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        for t in text {
            println!("{t}");
        }
    }
    Ok(())
}

/// One metric's text line (sacrebleu's format) and JSON value.
fn one_metric(
    m: &str,
    bleu: &Bleu,
    hyps: &[String],
    refs: &[Vec<String>],
) -> Result<(String, serde_json::Value)> {
    match m {
        "bleu" => {
            let b = bleu.corpus(hyps, refs);
            let json = serde_json::json!({
                "score": b.score, "precisions": b.precisions, "bp": b.bp,
                "sys_len": b.sys_len, "ref_len": b.ref_len, "signature": b.signature,
            });
            Ok((
                format!("BLEU|{} = {}", b.signature, &b.to_string()[7..]),
                json,
            ))
        }
        "chrf" | "chrf++" => {
            let (c, name) = if m == "chrf" {
                (Chrf::default(), "chrF2")
            } else {
                (Chrf::plus_plus(), "chrF2++")
            };
            let c = Chrf {
                lowercase: bleu.lowercase,
                ..c
            }
            .corpus(hyps, refs);
            let json = serde_json::json!({"score": c.score, "signature": c.signature});
            Ok((format!("{name}|{} = {:.2}", c.signature, c.score), json))
        }
        other => {
            anyhow::bail!("--metrics: unknown metric `{other}`; expected bleu, chrf or chrf++")
        }
    }
}
