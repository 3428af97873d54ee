//! Training data: the corpus of a config loaded, its vocabularies built (or reloaded on resume)
//! and every split encoded, for text pairs, a running text cut into windows, or captioned images.

use seq2seq_data::{Batch, Example, Pair, Vocab};

use candle_core::Device;

use crate::captioning::{load_captions, ImageRef};
use crate::checkpoint::{self, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::config::{Config, DataFormat, Task};
use crate::dataset::{empty_after_filter, encode_pairs, load_splits};
use crate::images::ImageBank;
use crate::model::{BatchTensors, Source};
use crate::train::{log, TrainOptions};
use crate::{Error, Result};

/// One held-out input decoded in validation: its source ids (for captioning: the image index),
/// what to show for it, and its references.
#[derive(Clone, Debug)]
pub(crate) struct DecodeItem {
    pub src: Vec<u32>,
    pub label: String,
    pub refs: Vec<String>,
}

/// Every split of a training corpus, encoded, with the vocabularies.
pub(crate) struct Prepared {
    pub src_vocab: Vocab,
    pub tgt_vocab: Vocab,
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    pub valid_items: Vec<DecodeItem>,
    pub test: Vec<Example>,
    pub test_items: Vec<DecodeItem>,
    /// Captioning: every image of the corpus (examples' `src` is `[image index]`).
    pub images: Option<Vec<ImageRef>>,
    /// Captioning: which images are training images (augmented).
    pub train_images: Vec<bool>,
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

/// Loads the corpus, builds or reloads the vocabularies and encodes every split.
pub(crate) fn prepare(cfg: &Config, opts: &TrainOptions) -> Result<Prepared> {
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
pub(crate) fn batch_tensors(
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
