//! `seq2seq translate`: lines (arguments or stdin) through a translation model or ensemble.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

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
    /// Sentences to translate; with none, read stdin.
    text: Vec<String>,
}

pub(crate) fn run(a: TranslateArgs) -> Result<()> {
    let t = a.ensemble.load(&a.model)?;
    let opts = a.decoding.apply(&t.config.decoding)?;
    let lines = if a.text.is_empty() {
        read_stdin_lines()?
    } else {
        a.text
    };
    let (outs, warnings) = t.translate_nbest(&lines, &opts)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut stdout = std::io::stdout().lock();
    for (i, nbest) in outs.iter().enumerate() {
        if opts.n_best > 1 {
            for (text, score) in nbest {
                writeln!(stdout, "{i}\t{score:.4}\t{text}")?;
            }
        } else {
            writeln!(stdout, "{}", nbest[0].0)?;
        }
    }
    Ok(())
}
