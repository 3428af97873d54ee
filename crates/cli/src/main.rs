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

/// Training frees and reallocates the same large tensors every step; glibc's allocator returns
/// them to the system and page-faults them back in (half the training time went to the kernel
/// with the CNN encoder). mimalloc, told to purge only memory unused for a second (see `main`),
/// keeps them from one step to the next.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 2's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Greedy,
    Sample,
    Beam,
}

/// The ensemble option of the subcommands that decode with a trained model.
#[derive(Args)]
struct EnsembleArgs {
    /// Ensemble members decoded together with --model (the mean of their next-token
    /// distributions): checkpoint files of the same run (`checkpoint-step*.safetensors`, kept by
    /// train.keep_checkpoints) or model directories with the same vocabularies. The list takes
    /// every following argument: end it with `--` when positional arguments follow.
    #[arg(long, num_args = 1.., value_name = "CHECKPOINT_OR_DIR")]
    ensemble: Vec<PathBuf>,
}

impl EnsembleArgs {
    /// The translation model in `model` with the ensemble members added.
    fn load(&self, model: &std::path::Path) -> Result<Translator> {
        let mut t = Translator::load(model)?;
        t.add_members(&self.ensemble)?;
        if !self.ensemble.is_empty() {
            eprintln!("ensemble of {} models", t.members().len());
        }
        Ok(t)
    }

    /// The captioning model in `model` with the ensemble members added.
    fn load_captioner(&self, model: &std::path::Path) -> Result<seq2seq_pipeline::Captioner> {
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
    about = "Recurrent sequence-to-sequence models on candle: train, translate, caption, generate"
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
}

fn read_stdin_lines() -> Result<Vec<String>> {
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
fn score(
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
fn caption(
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

fn eval_captions(
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
    std::fs::write(output, text).with_context(|| format!("cannot write {}", output.display()))?;
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Caption {
            model,
            json,
            hflip_average,
            ensemble,
            decoding,
            images,
        } => {
            let mut c = ensemble.load_captioner(&model)?;
            c.set_hflip_average(hflip_average);
            caption(&c, &images, json, &decoding)
        }
        Command::Bench {
            config,
            data_dir,
            model,
            train_steps,
            decode_sentences,
            json,
        } => {
            let cfg = Config::from_file(&config)?;
            let model = model.or_else(|| seq2seq_pipeline::bench::default_model(&cfg, &config));
            if cfg.task == seq2seq_pipeline::config::Task::Captioning {
                let model = model.ok_or_else(|| {
                    anyhow::anyhow!("a captioning bench needs a trained model: pass --model DIR")
                })?;
                let r = seq2seq_pipeline::bench_caption::bench_captioning(
                    &model,
                    &resolve_data_dir(data_dir.as_deref()),
                    decode_sentences,
                )?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "threads": r.threads, "images": r.images,
                            "decode_images_per_s": r.decode_images_per_s,
                            "encoder_images_per_s": r.encoder_images_per_s,
                            "greedy_captions_per_s": r.greedy_captions_per_s,
                            "beam3_captions_per_s": r.beam3_captions_per_s,
                            "peak_rss_mb": r.peak_rss_mb,
                        })
                    );
                } else {
                    println!("threads                       {}", r.threads);
                    println!("test images                   {}", r.images);
                    println!(
                        "image decode + resize         {:.1} images/s",
                        r.decode_images_per_s
                    );
                    println!(
                        "image encoder (inference)     {:.1} images/s (batch 32)",
                        r.encoder_images_per_s
                    );
                    println!(
                        "greedy captioning             {:.1} images/s (encoder + search)",
                        r.greedy_captions_per_s
                    );
                    println!(
                        "beam-3 captioning             {:.1} images/s",
                        r.beam3_captions_per_s
                    );
                    println!("peak resident memory          {:.0} MiB", r.peak_rss_mb);
                }
                return Ok(());
            }
            let process_model = model.clone();
            let o = seq2seq_pipeline::bench::BenchOptions {
                config: cfg,
                data_dir: resolve_data_dir(data_dir.as_deref()),
                model,
                train_steps,
                warmup_steps: 5,
                decode_sentences,
            };
            let r = seq2seq_pipeline::bench::bench(&o)?;
            let share = r.flops_per_token * r.train_tokens_per_s / (r.matmul_gflops * 1e9);
            let process_ms = process_model.as_deref().map(process_cold_start_ms);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "threads": r.threads, "train_tokens_per_s": r.train_tokens_per_s, "train_steps": r.train_steps,
                        "train_tokens_per_s_median": r.train_tokens_per_s_median,
                        "peak_rss_mb": r.peak_rss_mb, "flops_per_token": r.flops_per_token,
                        "matmul_gflops": r.matmul_gflops, "flop_share": share,
                        "phase_shares": {"forward": r.phase_shares[0], "backward": r.phase_shares[1], "clip_update": r.phase_shares[2]},
                        "greedy_sent_per_s": r.greedy_sent_per_s, "beam5_sent_per_s": r.beam5_sent_per_s,
                        "decode_sentences": r.decode_sentences, "cold_start_ms": r.cold_start_ms,
                        "process_cold_start_ms": process_ms.as_ref().and_then(|p| p.as_ref().ok()),
                        "process_cold_start_error": process_ms.as_ref().and_then(|p| p.as_ref().err()),
                    })
                );
            } else {
                println!("threads                      {}", r.threads);
                println!(
                    "training target tokens/s     {:.0} ({} timed steps)",
                    r.train_tokens_per_s, r.train_steps
                );
                if let Some(m) = r.train_tokens_per_s_median {
                    println!(
                        "  median of 20-step windows  {m:.0} (the first left out: the peer's statistic)"
                    );
                }
                let [fw, bw, up] = r.phase_shares.map(|p| 100.0 * p);
                println!(
                    "  of a step                  forward {fw:.0} %, backward {bw:.0} %, clip + update {up:.0} %"
                );
                println!("peak resident memory         {:.0} MiB", r.peak_rss_mb);
                println!(
                    "training FLOPs per token     {:.1} M (analytic, forward + backward)",
                    r.flops_per_token / 1e6
                );
                println!(
                    "best candle matmul           {:.1} GFLOP/s",
                    r.matmul_gflops
                );
                println!("share of matmul peak used    {:.1} %", 100.0 * share);
                match (r.greedy_sent_per_s, r.beam5_sent_per_s, r.cold_start_ms) {
                    (Some(g), Some(b), Some(c)) => {
                        println!(
                            "greedy decoding sentences/s  {g:.1} ({} test sentences, batch 64)",
                            r.decode_sentences
                        );
                        println!("beam-5 decoding sentences/s  {b:.1}");
                        println!("cold start (load + 1 sent.)  {c:.0} ms (in this process)");
                        match process_ms {
                            Some(Ok(p)) => println!(
                                "`seq2seq translate`, 1 sent. {p:.0} ms (new process, median of 5)"
                            ),
                            Some(Err(why)) => {
                                println!("`seq2seq translate`, 1 sent. not measured: {why}")
                            }
                            None => {}
                        }
                    }
                    _ => println!("decoding figures: no trained model (pass --model DIR)"),
                }
            }
            Ok(())
        }
        Command::Average { out, checkpoints } => {
            let n = seq2seq_pipeline::average::average(&checkpoints, &out)?;
            eprintln!(
                "averaged {n} tensors over {} checkpoints into {}",
                checkpoints.len(),
                out.display()
            );
            Ok(())
        }
        Command::Score {
            refs,
            hyp,
            metrics,
            lowercase,
            tokenize,
            smooth_method,
            smooth_value,
            json,
        } => score(
            &refs,
            hyp.as_deref(),
            &metrics,
            lowercase,
            &tokenize,
            &smooth_method,
            smooth_value,
            json,
        ),
        Command::Eval {
            model,
            ensemble,
            split,
            data_dir,
            output,
            json,
            hflip_average,
            decoding,
        } => {
            let split = match split.as_str() {
                "valid" => seq2seq_pipeline::Split::Valid,
                "test" => seq2seq_pipeline::Split::Test,
                other => anyhow::bail!("--split: expected valid or test, got `{other}`"),
            };
            let name = if split == seq2seq_pipeline::Split::Valid {
                "valid"
            } else {
                "test"
            };
            // A checkpoint file names its hypotheses after itself, beside it.
            let (dir, weights) = seq2seq_pipeline::checkpoint::checkpoint_file(&model);
            let output = output.unwrap_or_else(|| {
                if model.is_dir() {
                    model.join(format!("hyp.{name}.txt"))
                } else {
                    let stem = weights.strip_suffix(".safetensors").unwrap_or(&weights);
                    dir.join(format!("hyp.{stem}.{name}.txt"))
                }
            });
            let task = Config::from_file(&dir.join("config.yaml")).map(|c| c.task);
            if let Ok(seq2seq_pipeline::config::Task::Captioning) = task {
                let mut c = ensemble.load_captioner(&model)?;
                c.set_hflip_average(hflip_average);
                return eval_captions(&c, split, name, data_dir, &output, json, &decoding);
            }
            if hflip_average {
                anyhow::bail!("--hflip-average: applies to captioning models only");
            }
            let t = ensemble.load(&model)?;
            let opts = decoding.apply(&t.config.decoding)?;
            let r = seq2seq_pipeline::evaluate(
                &t,
                split,
                &resolve_data_dir(data_dir.as_deref()),
                &opts,
            )?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let mut text = r.hypotheses.join("\n");
            text.push('\n');
            std::fs::write(&output, text)
                .with_context(|| format!("cannot write {}", output.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "split": name, "items": r.items, "bleu": r.bleu.score, "bleu_lc": r.bleu_lc.score,
                        "chrf": r.chrf.score, "chrf_lc": r.chrf_lc.score, "exact_match": r.exact_match, "loss": r.loss, "ppl": r.ppl,
                        "bleu_signature": r.bleu.signature, "chrf_signature": r.chrf.signature,
                        "hypotheses": output.display().to_string(),
                    })
                );
            } else {
                println!(
                    "{name}: {} sentences, hypotheses in {}",
                    r.items,
                    output.display()
                );
                println!("BLEU|{} = {}", r.bleu.signature, &r.bleu.to_string()[7..]);
                println!(
                    "BLEU|{} = {}",
                    r.bleu_lc.signature,
                    &r.bleu_lc.to_string()[7..]
                );
                println!("chrF2|{} = {:.2}", r.chrf.signature, r.chrf.score);
                println!("chrF2|{} = {:.2}", r.chrf_lc.signature, r.chrf_lc.score);
                println!(
                    "exact match {:.1}% | loss {:.4} nats/token | ppl {:.2}",
                    100.0 * r.exact_match,
                    r.loss,
                    r.ppl
                );
            }
            Ok(())
        }
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
            max_time_s,
            seed,
        } => {
            let cfg = Config::from_file(&config)?;
            for w in cfg.warnings() {
                eprintln!("warning: {}: {w}", config.display());
            }
            let out = out.unwrap_or_else(|| default_out(&cfg, &config));
            let opts = TrainOptions {
                data_dir: resolve_data_dir(data_dir.as_deref()),
                out,
                resume,
                max_steps,
                max_time_s,
                seed,
                quiet: false,
            };
            let summary = train(cfg, &opts)?;
            eprintln!("model written to {}", summary.out.display());
            Ok(())
        }
        Command::Translate {
            model,
            ensemble,
            decoding,
            text,
        } => {
            let t = ensemble.load(&model)?;
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
    // Freed memory is returned to the system once unused for 1 s rather than mimalloc's 10 ms,
    // so the buffers of one training step are reused by the next, unless the user chose otherwise
    // with mimalloc's own variable. Never purging (-1) was as fast but kept ~50 MiB more at the
    // peak of the benchmark config (842 / 820 against 792 / 776 MiB, 2026-12-03).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
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

/// What a user waits for: a fresh `seq2seq translate` process loading the model and translating one
/// sentence (the in-process figure reuses pages the benchmark's training already faulted in).
/// The median of five runs, so that one page-cache miss does not decide it; else why it could not run.
fn process_cold_start_ms(model: &std::path::Path) -> Result<f64, String> {
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
