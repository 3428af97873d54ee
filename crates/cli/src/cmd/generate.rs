//! `seq2seq generate`: samples from a language model, primed by a prompt or by each stdin line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use seq2seq_pipeline::{diversity, Generator, Sample};

use crate::args::DecodingArgs;
use crate::cmd::read_stdin_lines;

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// The model directory written by `train`, or one checkpoint file in it
    /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
    /// config and vocabularies.
    #[arg(long)]
    model: PathBuf,
    /// Where the model runs: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: seq2seq_pipeline::DeviceChoice,
    /// The text to continue; without it, each stdin line is a prompt. Empty = from scratch.
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate after the prompt (default: the model's decoding.max_length).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    num: usize,
    /// Also print distinct-2, the repeated-4-gram rate and the mean log-probability per
    /// token of the samples (on stderr).
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    decoding: DecodingArgs,
}

pub(crate) fn run(a: GenerateArgs) -> Result<()> {
    let g = Generator::load_on(&a.model, &a.device.resolve()?)?;
    let mut opts = a.decoding.apply(&g.config().decoding)?;
    if let Some(m) = a.max_tokens {
        opts.max_length = m;
        opts.validate()
            .map_err(|e| anyhow::anyhow!("invalid decoding options:\n{e}"))?;
    }
    anyhow::ensure!(a.num >= 1, "--num must be at least 1");
    let prompts = match a.prompt {
        Some(p) => vec![p],
        None => read_stdin_lines()?,
    };
    let mut stdout = std::io::stdout().lock();
    let mut all = Vec::new();
    for p in &prompts {
        warn_unknown(&g, p)?;
        for s in g.generate(p, a.num, &opts)? {
            writeln!(stdout, "{}", s.text)?;
            all.push(s);
        }
    }
    if a.stats {
        print_stats(&all);
    }
    Ok(())
}

/// A prompt's words the vocabulary does not know are read as `<unk>` and lost from the
/// output: say which, on stderr (a cased vocabulary knows "Alice", not "alice").
fn warn_unknown(g: &Generator, prompt: &str) -> Result<()> {
    let unknown = g.vocab().unknown_words(prompt)?;
    if !unknown.is_empty() {
        let case = if g.vocab().lowercases() {
            ""
        } else {
            " (the vocabulary is cased)"
        };
        eprintln!(
            "warning: the prompt's {} not in the model's vocabulary{case}, read as <unk>: {}",
            if unknown.len() == 1 {
                "word is"
            } else {
                "words are"
            },
            unknown.join(" ")
        );
    }
    Ok(())
}

/// The diversity figures of the lesson's temperature experiment, on stderr.
fn print_stats(all: &[Sample]) {
    let toks: Vec<Vec<u32>> = all.iter().map(|s| s.tokens.clone()).collect();
    let (d2, r4) = diversity(&toks);
    let n: usize = toks.iter().map(|t| t.len()).sum();
    let lp: f64 = all.iter().map(|s| s.log_prob).sum::<f64>() / n.max(1) as f64;
    eprintln!(
        "samples: {} | distinct-2: {d2:.3} | repeated-4-gram rate: {r4:.3} | mean log-prob/token: {lp:.3}",
        all.len()
    );
}
