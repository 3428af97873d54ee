//! `seq2seq`: the command line. Parses flags and glues library calls; the work is in
//! `seq2seq-pipeline`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use seq2seq_decoder::{DecodingOptions, Strategy};
use seq2seq_pipeline::{
    default_out, diversity, resolve_data_dir, train, Config, Generator, TrainOptions, Translator,
};

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Greedy,
    Sample,
    Beam,
}

/// Decoding options shared by every subcommand that decodes; each overrides the model's own
/// `decoding` config section.
#[derive(Args, Default)]
struct DecodingArgs {
    /// greedy | sample | beam
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Softmax temperature for sampling (0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample within the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    beam_size: Option<usize>,
    /// GNMT length penalty alpha.
    #[arg(long)]
    length_penalty: Option<f64>,
    /// Hypotheses per input (beam search); above 1 the output is `index<TAB>score<TAB>text`.
    #[arg(long)]
    n_best: Option<usize>,
    /// Maximum output tokens.
    #[arg(long)]
    max_length: Option<usize>,
    /// eos is forbidden before this many tokens.
    #[arg(long)]
    min_length: Option<usize>,
    /// Block repeated n-grams of this size.
    #[arg(long)]
    no_repeat_ngram: Option<usize>,
    /// Sampling seed (input i uses seed + i).
    #[arg(long)]
    seed: Option<u64>,
    /// Inputs decoded together.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Never emit the unknown token.
    #[arg(long)]
    forbid_unk: bool,
}

impl DecodingArgs {
    fn apply(&self, base: &DecodingOptions) -> Result<DecodingOptions> {
        let mut o = base.clone();
        if let Some(s) = self.strategy {
            o.strategy = match s {
                StrategyArg::Greedy => Strategy::Greedy,
                StrategyArg::Sample => Strategy::Sample,
                StrategyArg::Beam => Strategy::Beam,
            };
        }
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { o.$f = v; })* };
        }
        set!(
            temperature,
            top_k,
            top_p,
            beam_size,
            length_penalty,
            n_best,
            max_length,
            min_length,
            no_repeat_ngram,
            seed,
            batch_size
        );
        o.forbid_unk |= self.forbid_unk;
        o.validate()
            .map_err(|e| anyhow::anyhow!("invalid decoding options:\n{e}"))?;
        Ok(o)
    }
}

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
        #[command(flatten)]
        decoding: DecodingArgs,
        /// Sentences to translate; with none, read stdin.
        text: Vec<String>,
    },
    /// Generate text with a language model (task: generation), primed by a prompt.
    Generate {
        /// The model directory written by `train`.
        #[arg(long)]
        model: PathBuf,
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
    },
}

fn read_stdin_lines() -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (i, l) in std::io::stdin().lock().lines().enumerate() {
        lines.push(l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?);
    }
    Ok(lines)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model,
            prompt,
            max_tokens,
            num,
            stats,
            decoding,
        } => {
            let g = Generator::load(&model)?;
            let mut opts = decoding.apply(&g.config().decoding)?;
            if let Some(m) = max_tokens {
                opts.max_length = m;
                opts.validate()
                    .map_err(|e| anyhow::anyhow!("invalid decoding options:\n{e}"))?;
            }
            anyhow::ensure!(num >= 1, "--num must be at least 1");
            let prompts = match prompt {
                Some(p) => vec![p],
                None => read_stdin_lines()?,
            };
            let mut stdout = std::io::stdout().lock();
            let mut all = Vec::new();
            for p in &prompts {
                for s in g.generate(p, num, &opts)? {
                    writeln!(stdout, "{}", s.text)?;
                    all.push(s);
                }
            }
            if stats {
                let toks: Vec<Vec<u32>> = all.iter().map(|s| s.tokens.clone()).collect();
                let (d2, r4) = diversity(&toks);
                let n: usize = toks.iter().map(|t| t.len()).sum();
                let lp: f64 = all.iter().map(|s| s.log_prob).sum::<f64>() / n.max(1) as f64;
                eprintln!(
                    "samples: {} | distinct-2: {d2:.3} | repeated-4-gram rate: {r4:.3} | mean log-prob/token: {lp:.3}",
                    all.len()
                );
            }
            Ok(())
        }
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
            decoding,
            text,
        } => {
            let t = Translator::load(&model)?;
            let opts = decoding.apply(&t.config.decoding)?;
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
