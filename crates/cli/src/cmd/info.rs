//! `seq2seq info`: a model directory on one screen, or as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use seq2seq_pipeline::info::{model_info, ModelInfo};

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// The model directory.
    #[arg(long)]
    model: PathBuf,
    /// One JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: InfoArgs) -> Result<()> {
    let info = model_info(&a.model)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", render(&info));
    }
    Ok(())
}

fn render(i: &ModelInfo) -> String {
    let mut s = format!("{} ({:?})\n", i.name, i.task).to_string();
    for line in &i.architecture {
        s += &format!("  {line}\n");
    }
    s += &format!("parameters: {}\n", thousands(i.total_parameters as u64));
    for (module, n) in &i.parameters {
        s += &format!("  {module:<28} {:>12}\n", thousands(*n as u64));
    }
    s += "vocabularies:\n";
    for v in &i.vocabularies {
        s += &format!(
            "  {:<7} {:<5} {:>7} entries, specials {}\n",
            v.side,
            v.level,
            thousands(v.size as u64),
            v.specials.join(" ")
        );
    }
    if let Some(t) = &i.training {
        s += &format!(
            "training: {} steps, {} epochs, {}, {} target tokens{}{}\n",
            thousands(t.steps as u64),
            t.epochs,
            seq2seq_pipeline::observer::hms(t.elapsed_s),
            thousands(t.target_tokens),
            if t.skipped_steps > 0 {
                format!(", {} skipped non-finite steps", t.skipped_steps)
            } else {
                String::new()
            },
            if t.finished { "" } else { " (resumable)" }
        );
    }
    if let Some(v) = &i.best_validation {
        let figure = |k: &str| v[k].as_f64();
        let mut parts = vec![format!("step {}", v["step"])];
        if let Some(x) = figure("valid_loss") {
            parts.push(format!("loss {x:.4}"));
        }
        if let Some(x) = figure("valid_ppl") {
            parts.push(format!("ppl {x:.2}"));
        }
        if let Some(x) = figure("valid_bleu") {
            parts.push(format!("BLEU {x:.2}"));
        }
        if let Some(x) = figure("valid_exact") {
            parts.push(format!("exact match {:.1}%", 100.0 * x));
        }
        s += &format!("best validation: {}\n", parts.join(", "));
    }
    s += "files:\n";
    for (name, size) in &i.files {
        s += &format!("  {name:<36} {:>12} bytes\n", thousands(*size));
    }
    s
}

/// 1234567 → "1 234 567" (thin groups, as the rest of the output).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}
