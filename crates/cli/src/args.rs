//! The command line's flags (clap): the subcommand list (each subcommand's own flags are in its
//! file under `cmd/`), and the decoding and ensemble flags that translation, captioning,
//! generation and evaluation share.

use std::path::PathBuf;

use crate::cmd;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use seq2seq_decoder::{DecodingOptions, Strategy};
use seq2seq_pipeline::{DeviceChoice, Translator};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StrategyArg {
    Greedy,
    Sample,
    Beam,
}

/// How the subcommands that decode with a trained model load it: ensemble members and device.
#[derive(Args)]
pub(crate) struct EnsembleArgs {
    /// Where the model runs: cpu, cuda, cuda:N or auto (a GPU when this binary has CUDA and
    /// one is visible, else the CPU).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub(crate) device: DeviceChoice,
    /// Ensemble members decoded together with --model (the mean of their next-token
    /// distributions): checkpoint files of the same run (`checkpoint-step*.safetensors`, kept by
    /// train.keep_checkpoints) or model directories with the same vocabularies. The list takes
    /// every following argument: end it with `--` when positional arguments follow.
    #[arg(long, num_args = 1.., value_name = "CHECKPOINT_OR_DIR")]
    pub(crate) ensemble: Vec<PathBuf>,
}

impl EnsembleArgs {
    /// The translation model in `model` with the ensemble members added.
    pub(crate) fn load(&self, model: &std::path::Path) -> Result<Translator> {
        let mut t = Translator::load_on(model, &self.device.resolve()?)?;
        t.add_members(&self.ensemble)?;
        if !self.ensemble.is_empty() {
            eprintln!("ensemble of {} models", t.members().len());
        }
        Ok(t)
    }

    /// The captioning model in `model` with the ensemble members added.
    pub(crate) fn load_captioner(
        &self,
        model: &std::path::Path,
    ) -> Result<seq2seq_pipeline::Captioner> {
        let mut c = seq2seq_pipeline::Captioner::load_on(model, &self.device.resolve()?)?;
        c.add_members(&self.ensemble)?;
        if !self.ensemble.is_empty() {
            eprintln!("ensemble of {} models", c.members());
        }
        Ok(c)
    }
}

/// Decoding options shared by every subcommand that decodes; each overrides the model's own
/// `decoding` config section.
#[derive(Args, Default)]
pub(crate) struct DecodingArgs {
    /// greedy | sample | beam
    #[arg(long, value_enum)]
    pub(crate) strategy: Option<StrategyArg>,
    /// Softmax temperature for sampling (0 = greedy).
    #[arg(long)]
    pub(crate) temperature: Option<f64>,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    pub(crate) top_k: Option<usize>,
    /// Sample within the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub(crate) top_p: Option<f64>,
    #[arg(long)]
    pub(crate) beam_size: Option<usize>,
    /// GNMT length penalty alpha.
    #[arg(long)]
    pub(crate) length_penalty: Option<f64>,
    /// Hypotheses per input (beam search); above 1 the output is `index<TAB>score<TAB>text`.
    #[arg(long)]
    pub(crate) n_best: Option<usize>,
    /// Maximum output tokens.
    #[arg(long)]
    pub(crate) max_length: Option<usize>,
    /// eos is forbidden before this many tokens.
    #[arg(long)]
    pub(crate) min_length: Option<usize>,
    /// Block repeated n-grams of this size.
    #[arg(long)]
    pub(crate) no_repeat_ngram: Option<usize>,
    /// Sampling seed (input i uses seed + i).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Inputs decoded together.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Never emit the unknown token.
    #[arg(long)]
    pub(crate) forbid_unk: bool,
}

impl DecodingArgs {
    pub(crate) fn apply(&self, base: &DecodingOptions) -> Result<DecodingOptions> {
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
    about = "Recurrent sequence-to-sequence models on candle: train, translate, caption, generate"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Train a model from a YAML config.
    Train(cmd::train::TrainArgs),
    /// Translate TEXT arguments, or stdin line by line (one output line per input line).
    Translate(cmd::translate::TranslateArgs),
    /// Caption images: one `path<TAB>caption` line per image, in input order.
    Caption(cmd::caption::CaptionArgs),
    /// Generate text with a language model (task: generation), primed by a prompt.
    Generate(cmd::generate::GenerateArgs),
    /// Decode a held-out split of the model's own corpus and report BLEU, chrF and perplexity.
    Eval(cmd::eval::EvalArgs),
    /// Score hypotheses against references, like the sacrebleu command line.
    Score(cmd::score::ScoreArgs),
    /// Each (source, target) pair's log-probability and perplexity under a translation model
    /// (forced decoding), for reranking and data filtering.
    ScoreModel(cmd::score_model::ScoreModelArgs),
    /// Measure training and decoding speed, memory and cold start for a translation config, or
    /// image and caption throughput of a trained captioning model.
    Bench(cmd::bench::BenchArgs),
    /// Average the weights of several checkpoints of one run into a new model directory.
    Average(cmd::average::AverageArgs),
    /// Describe a model directory: task, architecture, parameters, vocabularies, training, files.
    Info(cmd::info::InfoArgs),
    /// Serve models over HTTP: /v1/translate, /v1/caption, /v1/generate, OpenNMT-py's
    /// /translator/translate, /openapi.json.
    Serve(cmd::serve::ServeArgs),
    /// Plot the training curves of one or more runs (their metrics.jsonl) as PNG or SVG.
    Plot(cmd::plot::PlotArgs),
    /// Real corpora: list the catalogue, fetch and verify (datasets/README.md, datasets/catalog.yaml).
    Data {
        #[command(subcommand)]
        action: cmd::data::DataCommand,
    },
}
