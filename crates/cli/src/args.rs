//! The command line's flags (clap): the subcommands, and the decoding and ensemble flags that
//! translation, captioning, generation and evaluation share.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use seq2seq_decoder::{DecodingOptions, Strategy};
use seq2seq_pipeline::Translator;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StrategyArg {
    Greedy,
    Sample,
    Beam,
}

/// The ensemble option of the subcommands that decode with a trained model.
#[derive(Args)]
pub(crate) struct EnsembleArgs {
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
        let mut t = Translator::load(model)?;
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
        let mut c = seq2seq_pipeline::Captioner::load(model)?;
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
        /// Stop after this many seconds of training in total, a resumed run's earlier time
        /// included (overrides train.max_time_s; 0 = no limit).
        #[arg(long)]
        max_time_s: Option<f64>,
        /// Random seed (overrides `seed`; ignored with --resume).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Translate TEXT arguments, or stdin line by line (one output line per input line).
    Translate {
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
    },
    /// Caption images: one `path<TAB>caption` line per image, in input order.
    Caption {
        /// The model directory written by `train`, or one checkpoint file in it
        /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
        /// config and vocabularies; task: captioning.
        #[arg(long)]
        model: PathBuf,
        /// Print one JSON object per line (`{"image", "caption", "score"}`, or `"error"`).
        #[arg(long)]
        json: bool,
        /// Test-time augmentation: caption each image and its left-right mirror together (the
        /// mean of the two next-token distributions), at twice the decoding cost.
        #[arg(long)]
        hflip_average: bool,
        #[command(flatten)]
        ensemble: EnsembleArgs,
        #[command(flatten)]
        decoding: DecodingArgs,
        /// Image files, or folders whose image files (by extension) are captioned in name order.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Measure training and decoding speed, memory and cold start for a translation config, or
    /// image and caption throughput of a trained captioning model.
    Bench {
        /// The config (the PyTorch peer's architecture is configs/multi30k-en-de-bahdanau.yaml).
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A trained model of this config for the decoding figures (default: runs/<name> if present).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Timed training steps (after 5 warm-up steps).
        #[arg(long, default_value_t = 60)]
        train_steps: usize,
        /// Test sentences (captioning: test images) decoded (0 = all).
        #[arg(long, default_value_t = 0)]
        decode_sentences: usize,
        #[arg(long)]
        json: bool,
    },
    /// Average the weights of several checkpoints of one run into a new model directory.
    Average {
        /// The model directory to write (config and tokenizers come from the first checkpoint's).
        #[arg(long)]
        out: PathBuf,
        /// Checkpoints: .safetensors files (model.safetensors, last.safetensors, …) or model
        /// directories (their model.safetensors).
        #[arg(required = true)]
        checkpoints: Vec<PathBuf>,
    },
    /// Score hypotheses against references, like the sacrebleu command line.
    Score {
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
    },
    /// Decode a held-out split of the model's own corpus and report BLEU, chrF and perplexity.
    Eval {
        /// The model directory written by `train`, or one checkpoint file in it
        /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
        /// config and vocabularies.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        ensemble: EnsembleArgs,
        /// valid | test
        #[arg(long, default_value = "test")]
        split: String,
        /// Where corpora are looked up (else $SEQ2SEQ_DATA_DIR, else ./datasets).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the hypotheses (default: <model>/hyp.<split>.txt).
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Captioning models: caption each image and its left-right mirror together (the mean
        /// of the two next-token distributions), at twice the decoding cost.
        #[arg(long)]
        hflip_average: bool,
        #[command(flatten)]
        decoding: DecodingArgs,
    },
    /// Generate text with a language model (task: generation), primed by a prompt.
    Generate {
        /// The model directory written by `train`, or one checkpoint file in it
        /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
        /// config and vocabularies.
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
    /// Real corpora: list the catalogue, fetch and verify (datasets/README.md, datasets/catalog.yaml).
    Data {
        #[command(subcommand)]
        action: DataCommand,
    },
}

/// `seq2seq data …`
#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Every corpus of the catalogue: its size, licence, and what of it is present and verified.
    List {
        #[command(flatten)]
        common: DataArgs,
        /// One JSON object per corpus.
        #[arg(long)]
        json: bool,
    },
    /// Download, verify (size and SHA-256) and unpack corpora into the data directory, resuming
    /// partial downloads; what is present and verified is not fetched again.
    Fetch {
        /// Corpus names (see `seq2seq data list`).
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        common: DataArgs,
        /// Fetch from MIRROR/<host>/<path> instead of each URL's host (else $SEQ2SEQ_DATA_MIRROR).
        #[arg(long)]
        mirror: Option<String>,
        /// Only check what is present; never touch the network.
        #[arg(long)]
        offline: bool,
    },
    /// Re-hash what is present against the catalogue (every corpus when no name is given).
    Verify {
        names: Vec<String>,
        #[command(flatten)]
        common: DataArgs,
    },
}

/// What every `data` subcommand shares.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// The data directory (else $SEQ2SEQ_DATA_DIR, else ./datasets).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Read this catalogue instead of the shipped datasets/catalog.yaml.
    #[arg(long)]
    pub(crate) catalog: Option<PathBuf>,
}
