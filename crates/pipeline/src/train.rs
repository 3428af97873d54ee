//! The training loop: Adam(W), gradient clipping, label smoothing, validation with samples,
//! best/last checkpoints, plateau learning-rate decay, early stopping, exact resume.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use indicatif::{ProgressBar, ProgressStyle};
use seq2seq_data::{bucket_batches, grouped_batches, Batch, Example, Pair, Vocab};
use seq2seq_nn::{loss::TokenLoss, Ctx, SeededVarMap};

use crate::captioning::{load_captions, ImageRef};
use crate::checkpoint::{self, TrainerState, BEST, CONFIG, LAST, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::config::{Config, DataFormat, EarlyStopMetric, OptimizerKind, Task};
use crate::dataset::{empty_after_filter, encode_pairs, load_splits};
use crate::images::{backbone_checkpoint, cache_dir, ImageBank};
use crate::inference::{decode_ids, decode_sources};
use crate::model::{build_model, held_out_loss, BatchTensors, Encoder, Seq2Seq, Source};
use crate::optim::Adam;
use crate::{Error, Result};
use seq2seq_image_encoder::BackboneKind;

/// Options of one `train` invocation (the CLI flags).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// Overrides `train.max_steps`.
    pub max_steps: Option<usize>,
    /// Overrides `train.max_time_s` (training time in total, a resumed run's earlier time included).
    pub max_time_s: Option<f64>,
    /// Overrides `seed`.
    pub seed: Option<u64>,
    /// No progress output at all (tests).
    pub quiet: bool,
}

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub best_score: Option<f64>,
    /// Exact-match share of greedy outputs on the test split (valid when there is none).
    pub exact_match: Option<f64>,
    /// Loss per target token on that split with the best weights.
    pub held_out_loss: Option<f64>,
    pub out: PathBuf,
}

/// One held-out input decoded in validation: its source ids (for captioning: the image index),
/// what to show for it, and its references.
#[derive(Clone, Debug)]
struct DecodeItem {
    src: Vec<u32>,
    label: String,
    refs: Vec<String>,
}

struct Prepared {
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    train: Vec<Example>,
    valid: Vec<Example>,
    valid_items: Vec<DecodeItem>,
    test: Vec<Example>,
    test_items: Vec<DecodeItem>,
    /// Captioning: every image of the corpus (examples' `src` is `[image index]`).
    images: Option<Vec<ImageRef>>,
    /// Captioning: which images are training images (augmented).
    train_images: Vec<bool>,
}

fn items_of(pairs: &[Pair], ex: &[Example]) -> Vec<DecodeItem> {
    pairs
        .iter()
        .zip(ex)
        .map(|(p, e)| DecodeItem {
            src: e.src.clone(),
            label: p.src.clone(),
            refs: vec![p.tgt.clone()],
        })
        .collect()
}

fn log(opts: &TrainOptions, msg: &str) {
    if !opts.quiet {
        eprintln!("{msg}");
    }
}

/// Loads the corpus, builds or reloads the vocabularies and encodes every split.
fn prepare(cfg: &Config, opts: &TrainOptions) -> Result<Prepared> {
    if cfg.task == Task::Captioning {
        return prepare_captions(cfg, opts);
    }
    let d = &cfg.data;
    let gen = cfg.task == Task::Generation;
    let splits = load_splits(d, &opts.data_dir)?;
    if splits.train.is_empty() {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the training corpus".into(),
            hint: String::new(),
        }));
    }
    // A language model has one vocabulary; it serves as its (unused) source vocabulary too.
    let (src_vocab, tgt_vocab) = if opts.resume {
        let t = Vocab::load(&opts.out.join(TGT_TOKENIZER))?;
        let s = if gen {
            t.clone()
        } else {
            Vocab::load(&opts.out.join(SRC_TOKENIZER))?
        };
        (s, t)
    } else {
        let mut tgts: Vec<&str> = splits.train.iter().map(|p| p.tgt.as_str()).collect();
        // A running text is learned with its line breaks (a char model must know "\n").
        let joined = tgts.join("\n");
        if d.format == DataFormat::Text {
            tgts = vec![joined.as_str()];
        }
        let t = Vocab::train(&d.tgt_vocab.spec(d.lowercase), &tgts)?;
        checkpoint::write_atomic(&opts.out.join(TGT_TOKENIZER), t.to_json()?.as_bytes())?;
        let s = if gen {
            t.clone()
        } else {
            let srcs: Vec<&str> = splits.train.iter().map(|p| p.src.as_str()).collect();
            let s = Vocab::train(&d.src_vocab.spec(d.lowercase), &srcs)?;
            checkpoint::write_atomic(&opts.out.join(SRC_TOKENIZER), s.to_json()?.as_bytes())?;
            s
        };
        (s, t)
    };
    let p = if d.format == DataFormat::Text {
        text_windows(&splits.train, &tgt_vocab, d)?
    } else {
        let (train, _, dropped) = encode_pairs(
            &splits.train,
            &src_vocab,
            &tgt_vocab,
            d.max_src_len,
            d.max_tgt_len,
            true,
            gen,
        )?;
        if train.is_empty() {
            return Err(empty_after_filter(splits.train.len(), d));
        }
        if dropped > 0 {
            log(opts, &format!("data: {dropped} training items dropped (empty or longer than data.max_src_len / data.max_tgt_len)"));
        }
        // Held-out pairs are neither filtered by length nor truncated: every one is scored.
        let held_out = |pairs: &[Pair]| {
            encode_pairs(
                pairs,
                &src_vocab,
                &tgt_vocab,
                usize::MAX,
                usize::MAX,
                true,
                gen,
            )
        };
        let (valid, vk, _) = held_out(&splits.valid)?;
        let (test, tk, _) = held_out(&splits.test)?;
        let vp: Vec<Pair> = vk.iter().map(|&i| splits.valid[i].clone()).collect();
        let tp: Vec<Pair> = tk.iter().map(|&i| splits.test[i].clone()).collect();
        Prepared {
            src_vocab: src_vocab.clone(),
            tgt_vocab: tgt_vocab.clone(),
            train,
            valid_items: items_of(&vp, &valid),
            valid,
            test_items: items_of(&tp, &test),
            test,
            images: None,
            train_images: Vec::new(),
        }
    };
    let vocab = if gen {
        format!("vocab {} ({:?})", tgt_vocab.len(), d.tgt_vocab.level)
    } else {
        format!(
            "vocab src {} ({:?}), tgt {} ({:?})",
            src_vocab.len(),
            d.src_vocab.level,
            tgt_vocab.len(),
            d.tgt_vocab.level
        )
    };
    let unit = if d.format == DataFormat::Text {
        "windows"
    } else {
        "items"
    };
    log(
        opts,
        &format!(
            "data: {} training {unit}, {} valid, {} test; {vocab}",
            p.train.len(),
            p.valid.len(),
            p.test.len()
        ),
    );
    Ok(p)
}

/// A running text cut into windows of `data.window` tokens; the last windows are held out
/// (contiguously, so no held-out text overlaps the training windows).
fn text_windows(lines: &[Pair], vocab: &Vocab, d: &crate::config::DataConfig) -> Result<Prepared> {
    let text: Vec<&str> = lines.iter().map(|p| p.tgt.as_str()).collect();
    let ids = vocab.encode(&text.join("\n"))?;
    let mut windows: Vec<Example> = ids
        .chunks(d.window)
        .filter(|c| c.len() > 1)
        .map(|c| Example {
            ends: false,
            ..Example::new(Vec::new(), c.to_vec())
        })
        .collect();
    let n = windows.len();
    if n <= d.valid_size + d.test_size {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the training set".into(),
            hint: format!(
                ": the text gives {n} windows of data.window={} tokens, not more than data.valid_size + data.test_size = {}",
                d.window,
                d.valid_size + d.test_size
            ),
        }));
    }
    let test = windows.split_off(n - d.test_size);
    let valid = windows.split_off(n - d.test_size - d.valid_size);
    let pairs = |w: &[Example]| -> Result<Vec<Pair>> {
        w.iter()
            .map(|e| {
                Ok(Pair {
                    src: String::new(),
                    tgt: vocab.decode(&e.tgt)?,
                })
            })
            .collect()
    };
    Ok(Prepared {
        src_vocab: vocab.clone(),
        tgt_vocab: vocab.clone(),
        valid_items: items_of(&pairs(&valid)?, &valid),
        test_items: items_of(&pairs(&test)?, &test),
        train: windows,
        valid,
        test,
        images: None,
        train_images: Vec::new(),
    })
}

/// A caption corpus: one training example per (image, caption); held-out images are decoded
/// once each against all their captions.
fn prepare_captions(cfg: &Config, opts: &TrainOptions) -> Result<Prepared> {
    let d = &cfg.data;
    let corpus = load_captions(d, &opts.data_dir)?;
    if corpus.dropped_captions > 0 {
        log(
            opts,
            &format!(
                "data: {} captions dropped because their image file does not exist",
                corpus.dropped_captions
            ),
        );
    }
    let vocab = if opts.resume {
        Vocab::load(&opts.out.join(TGT_TOKENIZER))?
    } else {
        let caps: Vec<&str> = corpus
            .train
            .iter()
            .flat_map(|r| r.captions.iter().map(|c| c.as_str()))
            .collect();
        let v = Vocab::train(&d.tgt_vocab.spec(d.lowercase), &caps)?;
        checkpoint::write_atomic(&opts.out.join(TGT_TOKENIZER), v.to_json()?.as_bytes())?;
        v
    };
    let mut train = Vec::new();
    let mut dropped = 0;
    for row in &corpus.train {
        for c in &row.captions {
            let t = vocab.encode(c)?;
            if t.is_empty() || t.len() > d.max_tgt_len {
                dropped += 1;
                continue;
            }
            train.push(Example::new(vec![row.image as u32], t));
        }
    }
    if train.is_empty() {
        return Err(empty_after_filter(corpus.train.len(), d));
    }
    if dropped > 0 {
        log(
            opts,
            &format!(
                "data: {dropped} training captions dropped (empty or longer than data.max_tgt_len)"
            ),
        );
    }
    // Held-out captions are scored whole (loss), and each image decoded once.
    let held_out =
        |rows: &[crate::captioning::CaptionRow]| -> Result<(Vec<Example>, Vec<DecodeItem>)> {
            let mut ex = Vec::new();
            let mut items = Vec::new();
            for r in rows {
                for c in &r.captions {
                    let t = vocab.encode(c)?;
                    if !t.is_empty() {
                        ex.push(Example::new(vec![r.image as u32], t));
                    }
                }
                items.push(DecodeItem {
                    src: vec![r.image as u32],
                    label: corpus.images[r.image].label(),
                    refs: r.captions.clone(),
                });
            }
            Ok((ex, items))
        };
    let (valid, valid_items) = held_out(&corpus.valid)?;
    let (test, test_items) = held_out(&corpus.test)?;
    let mut train_images = vec![false; corpus.images.len()];
    for r in &corpus.train {
        train_images[r.image] = true;
    }
    log(
        opts,
        &format!(
            "data: {} training captions of {} images, {} valid images, {} test images; vocab {} ({:?})",
            train.len(),
            corpus.train.len(),
            valid_items.len(),
            test_items.len(),
            vocab.len(),
            d.tgt_vocab.level
        ),
    );
    Ok(Prepared {
        src_vocab: vocab.clone(),
        tgt_vocab: vocab,
        train,
        valid,
        valid_items,
        test,
        test_items,
        images: Some(corpus.images),
        train_images,
    })
}

/// The tensors of a batch: text ids, or the images' encoder input from the bank.
fn batch_tensors(
    b: &Batch,
    examples: &[Example],
    bank: Option<&ImageBank>,
    train: bool,
    seed: u64,
    dev: &Device,
) -> Result<BatchTensors> {
    match bank {
        None => BatchTensors::new(b, dev),
        Some(bank) => {
            let images: Vec<usize> = b
                .indices
                .iter()
                .map(|&i| examples[i].src[0] as usize)
                .collect();
            let src = Source::images(&images, |ids| bank.batch(ids, train, seed, dev), dev)?;
            BatchTensors::with_source(b, src, dev)
        }
    }
}

/// Validation figures.
struct Validation {
    loss: f64,
    ppl: f64,
    exact: Option<f64>,
    bleu: Option<f64>,
    hyps: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn validate(
    model: &Seq2Seq,
    p: &Prepared,
    bank: Option<&ImageBank>,
    cfg: &Config,
    examples: &[Example],
    items: &[DecodeItem],
    decode_limit: usize,
    dev: &Device,
) -> Result<Validation> {
    let loss = held_out_loss(
        &[model],
        examples,
        cfg.train.batch_size,
        &p.tgt_vocab,
        |b| batch_tensors(b, examples, bank, false, 0, dev),
    )?;
    if cfg.task == Task::Generation {
        // A language model has no reference output: show greedy continuations of the first
        // tokens of a few held-out items instead of an exact-match rate.
        let opts = seq2seq_decoder::DecodingOptions {
            strategy: seq2seq_decoder::Strategy::Greedy,
            max_length: cfg.decoding.max_length.min(100),
            ..cfg.decoding.clone()
        };
        let mut hyps = Vec::new();
        for e in examples.iter().take(cfg.train.valid_samples) {
            let prompt = &e.tgt[..e.tgt.len().min(10)];
            let s = crate::generate::continue_from(model, &p.tgt_vocab, prompt, 1, &opts, dev)?;
            hyps.push(s[0].text.clone());
        }
        return Ok(Validation {
            loss,
            ppl: loss.exp(),
            exact: None,
            bleu: None,
            hyps,
        });
    }
    let n = if decode_limit == 0 {
        items.len()
    } else {
        decode_limit.min(items.len())
    };
    let items = &items[..n];
    let srcs: Vec<Vec<u32>> = items.iter().map(|e| e.src.clone()).collect();
    // Validation decodes greedily whatever the configured strategy: fast and comparable.
    let opts = seq2seq_decoder::DecodingOptions {
        strategy: seq2seq_decoder::Strategy::Greedy,
        ..cfg.decoding.clone()
    };
    let hyps = match bank {
        None => decode_ids(&[model], &srcs, &p.tgt_vocab, p.src_vocab.pad, &opts, dev)?,
        Some(bank) => {
            let order: Vec<usize> = (0..n).collect();
            let source = |chunk: &[usize]| -> Result<Source> {
                let ids: Vec<usize> = chunk.iter().map(|&i| srcs[i][0] as usize).collect();
                Ok(Source::image(bank.batch(&ids, false, 0, dev)?))
            };
            decode_sources(&[model], n, &order, source, &p.tgt_vocab, &opts, dev)?
        }
    };
    let hyps: Vec<String> = hyps
        .iter()
        .map(|h| p.tgt_vocab.decode(&h[0].tokens))
        .collect::<std::result::Result<_, _>>()?;
    let captioning = cfg.task == Task::Captioning;
    let norm = |s: &str| {
        if captioning {
            seq2seq_metrics::caption_tokenize(s)
        } else if cfg.data.lowercase {
            s.trim().to_lowercase()
        } else {
            s.trim().to_string()
        }
    };
    let exact = (!hyps.is_empty()).then(|| {
        let hits = hyps
            .iter()
            .zip(items)
            .filter(|(h, it)| it.refs.iter().any(|r| norm(h) == norm(r)))
            .count();
        hits as f64 / hyps.len() as f64
    });
    let bleu = (!hyps.is_empty()).then(|| {
        if captioning {
            // BLEU-4 as the captioning papers report it (pycocoevalcap), in percent.
            let h: Vec<String> = hyps.iter().map(|h| norm(h)).collect();
            let r: Vec<Vec<String>> = items
                .iter()
                .map(|it| it.refs.iter().map(|r| norm(r)).collect())
                .collect();
            100.0 * seq2seq_metrics::coco_bleu(&h, &r)[3]
        } else {
            let refs: Vec<Vec<&str>> = items.iter().map(|it| vec![it.refs[0].as_str()]).collect();
            let b = seq2seq_metrics::Bleu {
                lowercase: cfg.data.lowercase,
                ..Default::default()
            };
            b.corpus(&hyps.iter().map(|h| h.as_str()).collect::<Vec<_>>(), &refs)
                .score
        }
    });
    Ok(Validation {
        loss,
        ppl: loss.exp(),
        exact,
        bleu,
        hyps,
    })
}

fn score(v: &Validation, metric: EarlyStopMetric) -> f64 {
    match metric {
        EarlyStopMetric::Loss => v.loss,
        EarlyStopMetric::Exact => 1.0 - v.exact.unwrap_or(0.0),
        EarlyStopMetric::Bleu => 100.0 - v.bleu.unwrap_or(0.0),
    }
}

fn weights(vm: &SeededVarMap) -> HashMap<String, Tensor> {
    vm.var_map()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step as u64)
}

fn fmt_time(s: f64) -> String {
    let s = s as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Trains a model from `cfg` into `opts.out` (or continues the run there with `resume`).
pub fn train(mut cfg: Config, opts: &TrainOptions) -> Result<TrainSummary> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.clone(),
        source,
    })?;
    let dev = Device::Cpu;
    let mut resume = None;
    let mut state = if opts.resume {
        // The run's own resolved config wins over the file given on the command line, so that
        // the model and data order are the ones the checkpoint was made with.
        cfg = Config::from_file(&out.join(CONFIG))?;
        let (weights, moments, state) = checkpoint::load_resume(out, &dev)?;
        resume = Some((weights, moments));
        state
    } else {
        if out.join(checkpoint::STATE).exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a training run: pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        if let Some(s) = opts.seed {
            cfg.seed = s;
        }
        TrainerState {
            lr: cfg.train.learning_rate,
            ..Default::default()
        }
    };
    let p = prepare(&cfg, opts)?;
    if !opts.resume {
        // The saved config is the resolved one; max_steps stays the file's (the flag is per run).
        checkpoint::write_atomic(&out.join(CONFIG), cfg.to_yaml().as_bytes())?;
    }
    if let Some(m) = opts.max_steps {
        cfg.train.max_steps = m;
    }
    if let Some(s) = opts.max_time_s {
        if !(s >= 0.0 && s.is_finite()) {
            return Err(Error::Invalid(format!(
                "--max-time-s: must be a number of seconds >= 0 (0 = no limit), got {s}"
            )));
        }
        cfg.train.max_time_s = s;
    }
    let vm = SeededVarMap::new(cfg.seed);
    let backbone = load_backbone(&cfg, &opts.data_dir, &dev)?;
    let model = build_model(
        &cfg.model,
        cfg.task,
        p.src_vocab.len(),
        p.tgt_vocab.len(),
        vm.var_builder(&dev),
        backbone
            .as_ref()
            .map(|(_, t)| VarBuilder::from_tensors(t.clone(), DType::F32, &dev)),
    )?;
    // A pretrained backbone: its fine-tuned layers start from the checkpoint, and its frozen
    // layers are saved with the model so that the model directory stands alone.
    let mut frozen_weights = HashMap::new();
    if let Some((_, tensors)) = &backbone {
        let vars = vm.var_map().data().lock().unwrap();
        for (name, t) in tensors {
            if name.starts_with("_fc.") || name.ends_with("num_batches_tracked") {
                continue;
            }
            let full = format!("encoder.backbone.{name}");
            match vars.get(&full) {
                Some(v) => v.set(t)?,
                None => {
                    frozen_weights.insert(full, t.clone());
                }
            }
        }
    }
    let t = &cfg.train;
    let all_vars = vm.var_map().data().lock().unwrap().clone();
    // Batch-norm statistics of a fine-tuned backbone stay as they are.
    let vars: HashMap<String, candle_core::Var> = all_vars
        .iter()
        .filter(|(k, _)| !(k.ends_with(".running_mean") || k.ends_with(".running_var")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let n_params: usize = vars.values().map(|v| v.elem_count()).sum();
    let mut opt = Adam::new(
        &vars,
        state.lr,
        t.betas,
        t.eps,
        t.weight_decay,
        t.optimizer == OptimizerKind::Adamw,
    )?;
    if let Some((w, moments)) = &resume {
        for (name, var) in &all_vars {
            let v = w.get(name).ok_or_else(|| Error::ModelDir {
                path: out.clone(),
                msg: format!("{LAST} lacks {name}"),
            })?;
            var.set(v)?;
        }
        opt.load_state(moments).map_err(|msg| Error::ModelDir {
            path: out.clone(),
            msg: format!("{LAST}: {msg}"),
        })?;
        opt.step = state.step as u64;
        log(
            opts,
            &format!(
                "resuming at step {} (epoch {}, batch {})",
                state.step,
                state.epoch + 1,
                state.batch_in_epoch
            ),
        );
    }
    log(
        opts,
        &format!("model: {n_params} parameters; output: {}", out.display()),
    );

    let all_weights = || {
        let mut w = weights(&vm);
        w.extend(frozen_weights.iter().map(|(k, v)| (k.clone(), v.clone())));
        w
    };
    let save_last = |state: &TrainerState, opt: &Adam| -> Result<()> {
        checkpoint::save_resume(out, all_weights(), opt.state()?, state)
    };
    let bank = match (&p.images, &model.encoder) {
        (Some(images), Encoder::Image(enc)) => {
            let cache = (enc.has_frozen_part() && !cfg.data.feature_cache.is_empty()).then(|| {
                let ckpt = backbone
                    .as_ref()
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default();
                cache_dir(&cfg, &ckpt)
            });
            Some(ImageBank::new(
                images,
                &p.train_images,
                enc,
                &cfg.data,
                cache,
                &dev,
                &mut |m: &str| log(opts, m),
            )?)
        }
        _ => None,
    };
    let bank = bank.as_ref();
    // Captioning reports the captioning papers' BLEU-4 (pycocoevalcap), translation sacreBLEU.
    let bleu_name = if cfg.task == Task::Captioning {
        "BLEU-4"
    } else {
        "BLEU"
    };

    // Captions are batched with the other captions of their image (one encoder pass per image).
    let epoch_batches = |epoch: u64| {
        if cfg.task == Task::Captioning {
            grouped_batches(&p.train, t.batch_size, cfg.seed, epoch)
        } else {
            bucket_batches(&p.train, t.batch_size, cfg.seed, epoch, true)
        }
    };
    let batches_per_epoch = epoch_batches(0).len();
    let total = if t.max_steps > 0 {
        t.max_steps
    } else {
        t.max_epochs.max(1) * batches_per_epoch
    };
    let tty = !opts.quiet && std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        b.set_position(state.step as u64);
        b
    });
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut window = (0.0f64, 0.0f64, Instant::now(), 0usize); // (nll, tokens, since, tokens for speed)
    let mut stop_reason = None;
    'epochs: while !state.finished {
        if t.max_epochs > 0 && state.epoch >= t.max_epochs {
            stop_reason = Some(format!("reached train.max_epochs = {}", t.max_epochs));
            break;
        }
        let batches = epoch_batches(state.epoch as u64);
        while state.batch_in_epoch < batches.len() {
            if t.max_steps > 0 && state.step >= t.max_steps {
                stop_reason = Some(format!("reached max_steps = {}", t.max_steps));
                break 'epochs;
            }
            // Checked before the step, so that resuming a run whose budget is spent trains
            // nothing more.
            if t.max_time_s > 0.0 && state.elapsed_s >= t.max_time_s {
                stop_reason = Some(format!("reached train.max_time_s = {}", t.max_time_s));
                break 'epochs;
            }
            let b = Batch::new(
                &p.train,
                &batches[state.batch_in_epoch],
                p.tgt_vocab.pad,
                p.tgt_vocab.bos,
                p.tgt_vocab.eos,
            );
            let seed = step_seed(cfg.seed, state.step);
            let bt = batch_tensors(&b, &p.train, bank, true, seed, &dev)?;
            let mut ctx = Ctx::train(seed);
            let l = model.loss(&bt, t.label_smoothing, &mut ctx)?;
            let grads = l.loss.backward()?;
            // The forward graph (every activation of the batch) goes before the update runs.
            let l = TokenLoss {
                loss: l.loss.detach(),
                ..l
            };
            opt.clip(&grads, t.clip_grad_norm)?;
            opt.lr = state.lr;
            opt.update(&grads)?;
            drop(grads);
            state.step += 1;
            state.batch_in_epoch += 1;
            state.target_tokens += l.tokens as u64;
            window.0 += l.nll_sum;
            window.1 += l.tokens;
            window.3 += l.tokens as usize;
            let elapsed = elapsed_before + started.elapsed().as_secs_f64();
            state.elapsed_s = elapsed;
            let speed = window.3 as f64 / window.2.elapsed().as_secs_f64().max(1e-9);
            if let Some(bar) = &bar {
                bar.set_position(state.step as u64);
                bar.set_message(format!(
                    "loss {:.3} | {:.0} tok/s | lr {:.1e}",
                    window.0 / window.1.max(1.0),
                    speed,
                    state.lr
                ));
            } else if state.step % t.log_every == 0 {
                log(
                    opts,
                    &format!(
                        "step {} | epoch {} | loss {:.4} | {:.0} tok/s | lr {:.2e} | elapsed {}",
                        state.step,
                        state.epoch + 1,
                        window.0 / window.1.max(1.0),
                        speed,
                        state.lr,
                        fmt_time(elapsed)
                    ),
                );
            }
            if state.step % t.valid_every == 0 {
                let v = validate(
                    &model,
                    &p,
                    bank,
                    &cfg,
                    &p.valid,
                    &p.valid_items,
                    t.valid_decode_size,
                    &dev,
                )?;
                if t.keep_checkpoints > 0 {
                    keep_checkpoint(out, state.step, t.keep_checkpoints, &all_weights())?;
                }
                let s = score(&v, t.early_stopping_metric);
                let improved = state.best_score.is_none_or(|b| s < b - 1e-9);
                if improved {
                    state.best_score = Some(s);
                    state.best_step = state.step;
                    state.bad_validations = 0;
                    state.plateau = 0;
                    checkpoint::save_tensors(&out.join(BEST), &all_weights())?;
                } else {
                    state.bad_validations += 1;
                    state.plateau += 1;
                    if state.plateau >= t.lr_patience && state.lr > t.min_lr {
                        state.lr = (state.lr * t.lr_decay_factor).max(t.min_lr);
                        state.plateau = 0;
                    }
                }
                let mut msg = format!(
                    "validation at step {}: loss {:.4} | ppl {:.2}{}{}",
                    state.step,
                    v.loss,
                    v.ppl,
                    v.exact
                        .map(|e| format!(" | exact match {:.1}%", 100.0 * e))
                        .unwrap_or_default()
                        + &v.bleu
                            .map(|b| format!(" | {bleu_name} {b:.2}"))
                            .unwrap_or_default(),
                    if improved { " | new best, saved" } else { "" }
                );
                for i in 0..t.valid_samples.min(v.hyps.len()) {
                    if cfg.task == Task::Generation {
                        msg.push_str(&format!("\n  sample: {}", v.hyps[i]));
                    } else {
                        msg.push_str(&format!(
                            "\n  src: {}\n  ref: {}\n  hyp: {}",
                            p.valid_items[i].label, p.valid_items[i].refs[0], v.hyps[i]
                        ));
                    }
                }
                match &bar {
                    Some(bar) => bar.println(msg),
                    None => log(opts, &msg),
                }
                checkpoint::append_metrics(
                    out,
                    &serde_json::json!({
                        "step": state.step, "epoch": state.epoch + 1,
                        "train_loss": window.0 / window.1.max(1.0),
                        "valid_loss": v.loss, "valid_ppl": v.ppl, "valid_exact": v.exact, "valid_bleu": v.bleu,
                        "lr": state.lr, "tokens_per_s": speed, "elapsed_s": elapsed,
                    }),
                )?;
                save_last(&state, &opt)?;
                if t.patience > 0 && state.bad_validations >= t.patience {
                    stop_reason = Some(format!(
                        "early stopping: {} validations without improvement",
                        t.patience
                    ));
                    state.finished = true;
                    break 'epochs;
                }
            }
            // Loss and speed are over the last `log_every` steps, on the bar as in the log (reset
            // after validation, which records the training loss of the same window).
            if state.step % t.log_every == 0 {
                window = (0.0, 0.0, Instant::now(), 0);
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if !out.join(BEST).exists() {
        // Never validated: the final weights are the only (and so the best) checkpoint.
        state.best_step = state.step;
        checkpoint::save_tensors(&out.join(BEST), &all_weights())?;
    }
    save_last(&state, &opt)?;
    log(
        opts,
        &format!(
            "stopped after {} steps ({}), {} target tokens in {}",
            state.step,
            stop_reason.unwrap_or_else(|| "done".into()),
            state.target_tokens,
            fmt_time(state.elapsed_s)
        ),
    );
    // Final figure on held-out data with the best weights.
    let best = checkpoint::load_tensors(out, BEST, &dev)?;
    for (name, var) in &all_vars {
        if let Some(v) = best.get(name) {
            var.set(v)?;
        }
    }
    let (examples, pairs, split) = if p.test.is_empty() {
        (&p.valid, &p.valid_items, "valid")
    } else {
        (&p.test, &p.test_items, "test")
    };
    let (exact, held_out_loss) = if examples.is_empty() {
        (None, None)
    } else {
        let v = validate(&model, &p, bank, &cfg, examples, pairs, 0, &dev)?;
        if !opts.quiet {
            let tail = v
                .exact
                .map(|e| format!(" | exact match: {:.1}%", 100.0 * e))
                .unwrap_or_default()
                + &v.bleu
                    .map(|b| format!(" | {bleu_name} {b:.2}"))
                    .unwrap_or_default();
            println!(
                "{split} ({} items, checkpoint of step {}): loss {:.4} nats/token | ppl {:.2}{tail}",
                examples.len(),
                state.best_step,
                v.loss,
                v.ppl,
            );
        }
        (v.exact, Some(v.loss))
    };
    Ok(TrainSummary {
        steps: state.step,
        best_score: state.best_score,
        exact_match: exact,
        held_out_loss,
        out: out.clone(),
    })
}

/// The Lite0 checkpoint of a captioning config (path and tensors), resolved against the data
/// directory.
fn load_backbone(
    cfg: &Config,
    data_dir: &Path,
    dev: &Device,
) -> Result<Option<(PathBuf, HashMap<String, Tensor>)>> {
    let ie = &cfg.model.image_encoder;
    if cfg.task != Task::Captioning || ie.backbone != BackboneKind::Lite0 {
        return Ok(None);
    }
    let path = backbone_checkpoint(cfg, data_dir);
    let tensors = seq2seq_image_encoder::pth::load_pth(&path, dev).map_err(|e| {
        Error::Invalid(format!(
            "model.image_encoder.checkpoint: cannot load {} ({e}); relative paths are resolved against the data directory",
            path.display()
        ))
    })?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    Ok(Some((path, tensors)))
}

/// Default output directory of a config: `runs/<name>` (or `runs/<file stem>`).
pub fn default_out(cfg: &Config, config_path: &Path) -> PathBuf {
    let name = if cfg.name.is_empty() {
        config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    } else {
        cfg.name.clone()
    };
    PathBuf::from("runs").join(name)
}

/// Saves this validation's weights as `checkpoint-step<step>.safetensors` and removes all but the
/// newest `keep` of them (by step).
fn keep_checkpoint(
    out: &Path,
    step: usize,
    keep: usize,
    weights: &HashMap<String, Tensor>,
) -> Result<()> {
    checkpoint::save_tensors(
        &out.join(format!("checkpoint-step{step}.safetensors")),
        weights,
    )?;
    let mut steps: Vec<usize> = std::fs::read_dir(out)
        .map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        })?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-step")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    for s in steps.iter().take(steps.len().saturating_sub(keep)) {
        let old = out.join(format!("checkpoint-step{s}.safetensors"));
        std::fs::remove_file(&old).map_err(|source| Error::Write { path: old, source })?;
    }
    Ok(())
}
