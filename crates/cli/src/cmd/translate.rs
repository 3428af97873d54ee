//! `seq2seq translate`: lines (arguments or stdin) through a translation model or ensemble.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use seq2seq_pipeline::config::DecodingConfig;
use seq2seq_pipeline::tasks::translation::heatmaps::write_heatmaps;
use seq2seq_pipeline::Translated;
use seq2seq_plot::Format;

use crate::args::{DecodingArgs, EnsembleArgs};
use crate::cmd::read_stdin_lines;

#[derive(Args)]
pub(crate) struct TranslateArgs {
    /// The model directory written by `train`, or one checkpoint file in it
    /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
    /// config and vocabularies.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    ensemble: EnsembleArgs,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Write an attention heat-map per input into this folder (0001.png, … in input order; the
    /// best hypothesis): source tokens across, output tokens down.
    #[arg(long, value_name = "DIR")]
    attention: Option<PathBuf>,
    /// The heat-maps' format.
    #[arg(long, value_enum, default_value = "png")]
    attention_format: PictureFormat,
    /// One JSON object per input: text and score (and the n-best list with --n-best; the
    /// tokens and attention matrix with --attention).
    #[arg(long)]
    json: bool,
    /// Sentences to translate; with none, read stdin.
    text: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PictureFormat {
    Png,
    Svg,
}

impl From<PictureFormat> for Format {
    fn from(f: PictureFormat) -> Self {
        match f {
            PictureFormat::Png => Format::Png,
            PictureFormat::Svg => Format::Svg,
        }
    }
}

pub(crate) fn run(a: TranslateArgs) -> Result<()> {
    let t = a.ensemble.load(&a.model)?;
    let opts = a.decoding.apply(&t.config.decoding)?;
    let lines = if a.text.is_empty() {
        read_stdin_lines()?
    } else {
        a.text
    };
    let opts = DecodingConfig {
        attention: a.attention.is_some(),
        ..opts
    };
    let (outs, warnings) = t.translate_detailed(&lines, &opts)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if let Some(dir) = &a.attention {
        let best: Vec<&Translated> = outs.iter().map(|n| &n[0]).collect();
        let files = write_heatmaps(dir, &best, a.attention_format.into())?;
        eprintln!(
            "wrote {} attention heat-map{} to {}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            dir.display()
        );
    }
    let mut stdout = std::io::stdout().lock();
    for (i, nbest) in outs.iter().enumerate() {
        if a.json {
            writeln!(
                stdout,
                "{}",
                json_line(nbest, opts.n_best > 1, a.attention.is_some())
            )?;
        } else if opts.n_best > 1 {
            for h in nbest {
                writeln!(stdout, "{i}\t{:.4}\t{}", h.score, h.text)?;
            }
        } else {
            writeln!(stdout, "{}", nbest[0].text)?;
        }
    }
    Ok(())
}

/// One input's JSON line: the best text and score, the n-best list when asked for, and the
/// best hypothesis's tokens and attention matrix with --attention.
fn json_line(nbest: &[Translated], with_nbest: bool, attention: bool) -> serde_json::Value {
    let best = &nbest[0];
    let mut v = serde_json::json!({"text": best.text, "score": best.score});
    if with_nbest {
        v["nbest"] = nbest
            .iter()
            .map(|h| serde_json::json!({"text": h.text, "score": h.score}))
            .collect();
    }
    if attention {
        v["source_tokens"] = serde_json::json!(best.source_tokens);
        v["tokens"] = serde_json::json!(best.tokens);
        v["attention"] = serde_json::json!(best.attention);
    }
    v
}
