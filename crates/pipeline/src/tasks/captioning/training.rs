//! Captioning in training: one example per (image, caption), batched with the other captions of
//! their image (one encoder pass per image); held-out images are decoded once each and scored
//! against all their captions with BLEU-4 as pycocoevalcap computes it.

use candle_core::Device;
use seq2seq_data::{grouped_batches, Batch, BatchSize, Example, Vocab};

use crate::config::{Config, DecodingConfig};
use crate::decode::decode_sources;
use crate::model::{BatchTensors, Encoder, Seq2Seq, Source};
use crate::model_dir::TGT_TOKENIZER;
use crate::observer::Observer;
use crate::tasks::captioning::cache::cache_dir;
use crate::tasks::captioning::corpus::{load_captions, CaptionCorpus, CaptionRow, ImageRef};
use crate::tasks::captioning::images::ImageBank;
use crate::tasks::text::{empty_after_filter, vocab};
use crate::tasks::RunFiles;
use crate::tasks::{best_texts, Backbone, DecodeItem, Normalise, Prepared, Scores, Task};
use crate::{Error, Result};

/// The corpus's images from `prepare`, then, once the model is built, the bank that feeds them
/// to its image encoder.
#[derive(Default)]
pub(crate) struct Captioning {
    images: Vec<ImageRef>,
    /// Which images are training images (augmented).
    train_images: Vec<bool>,
    bank: Option<ImageBank>,
}

impl Captioning {
    fn bank(&self) -> Result<&ImageBank> {
        self.bank.as_ref().ok_or(Error::NotAttached)
    }
}

/// The training examples of a corpus, and how many captions were dropped (empty or too long).
fn training_examples(
    corpus: &CaptionCorpus,
    vocab: &Vocab,
    max_len: usize,
) -> Result<(Vec<Example>, usize)> {
    let mut train = Vec::new();
    let mut dropped = 0;
    for row in &corpus.train {
        for c in &row.captions {
            let t = vocab.encode(c)?;
            if t.is_empty() || t.len() > max_len {
                dropped += 1;
                continue;
            }
            train.push(Example::new(vec![row.image as u32], t));
        }
    }
    Ok((train, dropped))
}

/// Held-out captions are scored whole (loss), and each image decoded once.
fn held_out(
    corpus: &CaptionCorpus,
    rows: &[CaptionRow],
    vocab: &Vocab,
) -> Result<(Vec<Example>, Vec<DecodeItem>)> {
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
}

impl Task for Captioning {
    fn prepare(
        &mut self,
        cfg: &Config,
        files: RunFiles,
        obs: &mut dyn Observer,
    ) -> Result<Prepared> {
        let d = &cfg.data;
        let corpus = load_captions(d, files.data_dir)?;
        if corpus.dropped_captions > 0 {
            obs.line(&format!(
                "data: {} captions dropped because their image file does not exist",
                corpus.dropped_captions
            ));
        }
        let caps: Vec<&str> = corpus
            .train
            .iter()
            .flat_map(|r| r.captions.iter().map(|c| c.as_str()))
            .collect();
        let vocab = vocab(files, TGT_TOKENIZER, &d.tgt_vocab, d.lowercase, &caps)?;
        let (train, dropped) = training_examples(&corpus, &vocab, d.max_tgt_len)?;
        if train.is_empty() {
            return Err(empty_after_filter(corpus.train.len(), d));
        }
        if dropped > 0 {
            obs.line(&format!(
                "data: {dropped} training captions dropped (empty or longer than data.max_tgt_len)"
            ));
        }
        let (valid, valid_items) = held_out(&corpus, &corpus.valid, &vocab)?;
        let (test, test_items) = held_out(&corpus, &corpus.test, &vocab)?;
        self.train_images = vec![false; corpus.images.len()];
        for r in &corpus.train {
            self.train_images[r.image] = true;
        }
        obs.line(&format!(
            "data: {} training captions of {} images, {} valid images, {} test images; vocab {} ({:?})",
            train.len(),
            corpus.train.len(),
            valid_items.len(),
            test_items.len(),
            vocab.len(),
            d.tgt_vocab.level
        ));
        self.images = corpus.images;
        Ok(Prepared {
            src_vocab: vocab.clone(),
            tgt_vocab: vocab,
            train: train.into(),
            stream: None,
            valid,
            valid_items,
            test,
            test_items,
        })
    }

    fn attach(
        &mut self,
        cfg: &Config,
        model: &Seq2Seq,
        backbone: Option<&Backbone>,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let Encoder::Image(enc) = &model.encoder else {
            return Err(Error::NotAttached);
        };
        // The cache is keyed by the backbone checkpoint's contents: without one, no cache.
        let cache = match backbone {
            Some(b) if enc.has_frozen_part() && !cfg.data.feature_cache.is_empty() => {
                Some(cache_dir(cfg, &b.checkpoint)?)
            }
            _ => None,
        };
        let bank = ImageBank::new(
            &self.images,
            &self.train_images,
            enc,
            &cfg.data,
            cache,
            // The model's own device: the frozen layers run there.
            model.decoder.output_projection().0.device(),
            obs,
        )?;
        self.bank = Some(bank);
        Ok(())
    }

    fn epoch_batches(
        &self,
        train: &[Example],
        size: BatchSize,
        seed: u64,
        epoch: u64,
    ) -> Vec<Vec<usize>> {
        // The config refuses token batches for captioning: a size is a number of captions.
        let (BatchSize::Sentences(n) | BatchSize::Tokens(n)) = size;
        grouped_batches(train, n, seed, epoch)
    }

    fn batch(
        &self,
        b: &Batch,
        examples: &[Example],
        train: bool,
        seed: u64,
        dev: &Device,
    ) -> Result<BatchTensors> {
        let bank = self.bank()?;
        let images: Vec<usize> = b
            .indices
            .iter()
            .map(|&i| examples[i].src[0] as usize)
            .collect();
        let src = Source::images(&images, |ids| bank.batch(ids, train, seed, dev), dev)?;
        BatchTensors::with_source(b, src, dev)
    }

    fn outputs(
        &self,
        model: &Seq2Seq,
        p: &Prepared,
        _examples: &[Example],
        items: &[DecodeItem],
        opts: &DecodingConfig,
        dev: &Device,
    ) -> Result<Vec<String>> {
        let bank = self.bank()?;
        let order: Vec<usize> = (0..items.len()).collect();
        let source = |chunk: &[usize]| -> Result<Source> {
            let ids: Vec<usize> = chunk.iter().map(|&i| items[i].src[0] as usize).collect();
            Ok(Source::image(bank.batch(&ids, false, 0, dev)?))
        };
        let hyps = decode_sources(
            &[model],
            items.len(),
            &order,
            source,
            &p.tgt_vocab,
            opts,
            dev,
        )?;
        best_texts(&p.tgt_vocab, &hyps)
    }

    fn score(&self, _cfg: &Config, hyps: &[String], items: &[DecodeItem]) -> Scores {
        let refs: Vec<&[String]> = items.iter().map(|it| it.refs.as_slice()).collect();
        let refs: Vec<Vec<&str>> = refs
            .iter()
            .map(|r| r.iter().map(|s| s.as_str()).collect())
            .collect();
        Scores {
            exact: Normalise::Caption.exact_match(hyps, &refs),
            bleu: (!hyps.is_empty()).then(|| 100.0 * coco_bleu4(hyps, &refs)),
        }
    }

    fn bleu_name(&self) -> &'static str {
        "BLEU-4"
    }
}

/// BLEU-4 as the captioning papers report it (pycocoevalcap), as a fraction.
fn coco_bleu4(hyps: &[String], refs: &[Vec<&str>]) -> f64 {
    let n = |s: &str| Normalise::Caption.apply(s);
    let h: Vec<String> = hyps.iter().map(|h| n(h)).collect();
    let r: Vec<Vec<String>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| n(r)).collect())
        .collect();
    seq2seq_metrics::coco_bleu(&h, &r)[3]
}
