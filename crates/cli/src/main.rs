//! `seq2seq`: the command line. Parses flags and glues library calls; the work is in
//! `seq2seq-pipeline`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use seq2seq_pipeline::{default_out, resolve_data_dir, train, Config, TrainOptions, Translator};

#[derive(Parser)]
#[command(
    name = "seq2seq",
    version,
    about = "Recurrent sequence-to-sequence models on candle: train, translate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a YAML config.
    Train {
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
        /// Random seed (overrides `seed`; ignored with --resume).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Translate TEXT arguments, or stdin line by line (one output line per input line).
    Translate {
        /// The model directory written by `train`.
        #[arg(long)]
        model: PathBuf,
        /// Maximum output length in tokens (default: the model's decoding.max_length).
        #[arg(long)]
        max_length: Option<usize>,
        /// Sentences decoded together.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Sentences to translate; with none, read stdin.
        text: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            data_dir,
            out,
            resume,
            max_steps,
            seed,
        } => {
            let cfg = Config::from_file(&config)?;
            let out = out.unwrap_or_else(|| default_out(&cfg, &config));
            let opts = TrainOptions {
                data_dir: resolve_data_dir(data_dir.as_deref()),
                out,
                resume,
                max_steps,
                seed,
                quiet: false,
            };
            let summary = train(cfg, &opts)?;
            eprintln!("model written to {}", summary.out.display());
            Ok(())
        }
        Command::Translate {
            model,
            max_length,
            batch_size,
            text,
        } => {
            let t = Translator::load(&model)?;
            let mut opts = t.config.decoding.clone();
            if let Some(m) = max_length {
                opts.max_length = m;
            }
            if let Some(b) = batch_size {
                opts.batch_size = b;
            }
            let lines = if text.is_empty() {
                let mut lines = Vec::new();
                for (i, l) in std::io::stdin().lock().lines().enumerate() {
                    lines
                        .push(l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?);
                }
                lines
            } else {
                text
            };
            let (outs, warnings) = t.translate(&lines, &opts)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let mut stdout = std::io::stdout().lock();
            for o in outs {
                writeln!(stdout, "{o}")?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Plain chain of causes, no backtrace: these are user-facing messages.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
