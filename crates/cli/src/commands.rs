//! The commands whose glue is more than a library call and a print: scoring hypothesis files,
//! captioning images with per-file errors, a captioning model's evaluation report, and the
//! cold-start figure of `bench`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use seq2seq_pipeline::resolve_data_dir;

use crate::args::DecodingArgs;

pub(crate) fn read_stdin_lines() -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (i, l) in std::io::stdin().lock().lines().enumerate() {
        lines.push(l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?);
    }
    Ok(lines)
}

fn read_text(path: &std::path::Path) -> Result<Vec<String>> {
    let lines = seq2seq_data::corpus::read_lines(path)?;
    anyhow::ensure!(!lines.is_empty(), "{} is empty", path.display());
    Ok(lines)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn score(
    refs: &[PathBuf],
    hyp: Option<&std::path::Path>,
    metrics: &str,
    lowercase: bool,
    tokenize: &str,
    smooth_method: &str,
    smooth_value: Option<f64>,
    json: bool,
) -> Result<()> {
    use seq2seq_metrics::{Bleu, Chrf, Smoothing, Tokenizer};
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
    for r in refs {
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
    let tokenizer = Tokenizer::parse(tokenize).ok_or_else(|| {
        anyhow::anyhow!(
            "--tokenize: unknown tokenizer `{tokenize}`; expected 13a, intl, char or none"
        )
    })?;
    let smoothing = Smoothing::parse(smooth_method, smooth_value).ok_or_else(|| {
        anyhow::anyhow!(
            "--smooth-method: unknown `{smooth_method}`; expected exp, floor, add-k or none"
        )
    })?;
    let mut out = serde_json::Map::new();
    let mut text = Vec::new();
    for m in metrics.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match m {
            "bleu" => {
                let b = Bleu {
                    lowercase,
                    tokenizer,
                    smoothing,
                    ..Bleu::default()
                }
                .corpus(&hyps, &per_hyp);
                text.push(format!("BLEU|{} = {}", b.signature, &b.to_string()[7..]));
                out.insert(
                    "bleu".into(),
                    serde_json::json!({
                        "score": b.score, "precisions": b.precisions, "bp": b.bp,
                        "sys_len": b.sys_len, "ref_len": b.ref_len, "signature": b.signature,
                    }),
                );
            }
            "chrf" | "chrf++" => {
                let c = if m == "chrf" {
                    Chrf::default()
                } else {
                    Chrf::plus_plus()
                };
                let c = Chrf { lowercase, ..c }.corpus(&hyps, &per_hyp);
                let name = if m == "chrf" { "chrF2" } else { "chrF2++" };
                text.push(format!("{name}|{} = {:.2}", c.signature, c.score));
                out.insert(
                    m.into(),
                    serde_json::json!({"score": c.score, "signature": c.signature}),
                );
            }
            other => {
                anyhow::bail!("--metrics: unknown metric `{other}`; expected bleu, chrf or chrf++")
            }
        }
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

/// Captions images; a file that cannot be used gets an error line on stderr and a non-zero exit
/// status, and the others are still captioned.
pub(crate) fn caption(
    c: &seq2seq_pipeline::Captioner,
    images: &[PathBuf],
    json: bool,
    decoding: &DecodingArgs,
) -> Result<()> {
    let opts = decoding.apply(&c.config().decoding)?;
    let files = seq2seq_pipeline::expand_inputs(images).context("cannot list an image folder")?;
    anyhow::ensure!(
        !files.is_empty(),
        "no image files found in the given folders"
    );
    let results = c.caption_files(&files, &opts)?;
    let mut failed = 0;
    let mut stdout = std::io::stdout().lock();
    for (path, r) in files.iter().zip(results) {
        let p = path.display().to_string();
        match r {
            Ok(nbest) => {
                for (text, score) in nbest.iter().take(opts.n_best.max(1)) {
                    if json {
                        writeln!(
                            stdout,
                            "{}",
                            serde_json::json!({"image": p, "caption": text, "score": score})
                        )?;
                    } else if opts.n_best > 1 {
                        writeln!(stdout, "{p}\t{score:.4}\t{text}")?;
                    } else {
                        writeln!(stdout, "{p}\t{text}")?;
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
                if json {
                    writeln!(stdout, "{}", serde_json::json!({"image": p, "error": e}))?;
                }
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} images could not be captioned",
        files.len()
    );
    Ok(())
}

pub(crate) fn eval_captions(
    c: &seq2seq_pipeline::Captioner,
    split: seq2seq_pipeline::Split,
    name: &str,
    data_dir: Option<PathBuf>,
    output: &std::path::Path,
    json: bool,
    decoding: &DecodingArgs,
) -> Result<()> {
    let opts = decoding.apply(&c.config().decoding)?;
    let r = seq2seq_pipeline::evaluate_captions(
        c,
        split,
        &resolve_data_dir(data_dir.as_deref()),
        &opts,
    )?;
    let mut text: String = r
        .captions
        .iter()
        .map(|(img, cap)| format!("{img}\t{cap}\n"))
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    seq2seq_pipeline::checkpoint::write_atomic(output, text.as_bytes())?;
    if r.cache_rejected {
        eprintln!("warning: data.feature_cache holds features this model's backbone does not reproduce (another checkpoint under the same name?); computed them instead");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "split": name, "images": r.images, "bleu1": r.bleu[0], "bleu2": r.bleu[1],
                "bleu3": r.bleu[2], "bleu4": r.bleu[3], "cider_d": r.cider_d,
                "exact_match": r.exact_match, "loss": r.loss, "ppl": r.ppl,
                "images_per_s": r.images_per_s, "cached_features": r.cached_features,
                "cache_rejected": r.cache_rejected, "hypotheses": output.display().to_string(),
            })
        );
    } else {
        println!(
            "{name}: {} images, captions in {}",
            r.images,
            output.display()
        );
        if r.cached_features > 0 {
            println!(
                "{} of {} backbone feature maps from the training feature cache",
                r.cached_features,
                r.images * c.views()
            );
        }
        println!(
            "BLEU-1 {:.2} | BLEU-2 {:.2} | BLEU-3 {:.2} | BLEU-4 {:.2} | CIDEr-D {:.3} (pycocoevalcap definitions, all references)",
            r.bleu[0], r.bleu[1], r.bleu[2], r.bleu[3], r.cider_d
        );
        println!(
            "exact match {:.1}% | loss {:.4} nats/token | ppl {:.2} | {:.1} images/s captioned",
            100.0 * r.exact_match,
            r.loss,
            r.ppl,
            r.images_per_s
        );
    }
    Ok(())
}

/// The median of five runs, so that one page-cache miss does not decide it; else why it could not run.
/// What a user waits for: a fresh `seq2seq translate` process loading the model and translating one
/// sentence (the in-process figure reuses pages the benchmark's training already faulted in).
pub(crate) fn process_cold_start_ms(model: &std::path::Path) -> Result<f64, String> {
    use std::io::Write as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(&exe)
            .arg("translate")
            .arg("--model")
            .arg(model)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(b"a man is walking a dog .\n")
                .map_err(|e| format!("cannot write to `seq2seq translate`: {e}"))?;
        }
        let status = child
            .wait()
            .map_err(|e| format!("`seq2seq translate` did not finish: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`seq2seq translate --model {}` failed ({status}); run it by hand to see why",
                model.display()
            ));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}
