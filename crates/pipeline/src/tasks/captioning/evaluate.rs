//! `seq2seq eval` for captioning: a held-out split captioned and scored against all references
//! of each image (BLEU-1..4 and CIDEr-D as pycocoevalcap computes them), with the features of
//! training's cache used when they match the model's own backbone.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use image::RgbImage;
use seq2seq_data::Example;
use seq2seq_metrics::{caption_tokenize, cider_d, coco_bleu};

use crate::config::DecodingConfig;
use crate::decode::LoadedModel;
use crate::model::{held_out_loss, BatchTensors, Source};
use crate::tasks::captioning::cache::{
    backbone_checkpoint, cache_dir, read_cached, view_cache_file,
};
use crate::tasks::captioning::corpus::{image_limits, load_captions, CaptionRow, ImageRef};
use crate::tasks::captioning::images::{preprocess, view};
use crate::tasks::captioning::Captioner;
use crate::tasks::{Normalise, Split};
use crate::{Error, Result};

/// Captioning scores of a held-out split.
pub struct CaptionReport {
    pub split: Split,
    pub images: usize,
    /// BLEU-1..4 as pycocoevalcap computes them, in percent.
    pub bleu: [f64; 4],
    /// CIDEr-D on pycocoevalcap's scale (papers print it ×100).
    pub cider_d: f64,
    /// Share of images whose caption equals one of its references (after caption tokenisation).
    pub exact_match: f64,
    /// Loss per target token over every reference caption, and its exponent (of the images as
    /// they are, also with hflip averaging).
    pub loss: f64,
    pub ppl: f64,
    /// (image, caption) in split order.
    pub captions: Vec<(String, String)>,
    /// Images decoded per second (decoding + the image encoder on the images the feature cache
    /// did not hold; corpus loading and cache reads excluded).
    pub images_per_s: f64,
    /// Image views (an image and, with hflip averaging, its mirror) whose frozen-backbone
    /// features came from training's feature cache.
    pub cached_features: usize,
    /// The cache held features that this model's backbone does not reproduce, so none were used.
    pub cache_rejected: bool,
}

/// The frozen features of one view of the split's images (the images, or their mirrors): from
/// the cache where it holds them and can be trusted, else computed.
struct ViewFeatures {
    features: Vec<Tensor>,
    cached: usize,
    rejected: bool,
    encode_time: Duration,
}

/// The cache is keyed by the checkpoint file, while the model carries its own copy of the
/// backbone: one image's cached features must match the model's before any are trusted.
fn cache_rejected(
    c: &Captioner,
    cached: &[Option<Tensor>],
    load: impl Fn(usize) -> Result<RgbImage>,
) -> Result<bool> {
    let Some(i) = cached.iter().position(Option::is_some) else {
        return Ok(false);
    };
    let own = c.frozen_features(&[load(i)?], 1)?.remove(0);
    let f = cached[i]
        .as_ref()
        .map(|f| f.to_dtype(DType::F32))
        .transpose()?;
    Ok(match f {
        Some(f) if f.dims() == own.dims() => {
            let diff = (f - &own)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = own.abs()?.max_all()?.to_scalar::<f32>()?;
            // f16 storage: a relative error around 1e-3.
            diff > 1e-2 * scale.max(1e-6)
        }
        _ => true,
    })
}

fn view_features(
    c: &Captioner,
    images: &[&ImageRef],
    cache: Option<&Path>,
    load: impl Fn(usize) -> Result<RgbImage>,
    mirrored: bool,
    batch: usize,
) -> Result<ViewFeatures> {
    let dev = &c.t.device;
    let mut cached: Vec<Option<Tensor>> = images
        .iter()
        .map(|r| read_cached(&view_cache_file(cache?, r, mirrored)?, dev))
        .collect();
    let rejected = cache_rejected(c, &cached, &load)?;
    if rejected {
        cached.fill(None);
    }
    let hits = cached.iter().flatten().count();
    let misses: Vec<usize> = (0..images.len()).filter(|&i| cached[i].is_none()).collect();
    let pixels = misses
        .iter()
        .map(|&i| load(i))
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    for (&i, f) in misses.iter().zip(c.frozen_features(&pixels, batch)?) {
        cached[i] = Some(f);
    }
    let encode_time = started.elapsed();
    let features = cached
        .into_iter()
        .map(|f| Ok(f.ok_or(Error::SkippedImage)?.to_dtype(DType::F32)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(ViewFeatures {
        features,
        cached: hits,
        rejected,
        encode_time,
    })
}

/// Loss per target token over every reference caption of `rows`, the images given by `feats`.
fn reference_loss(
    m: &LoadedModel,
    rows: &[CaptionRow],
    feats: &[Tensor],
    batch: usize,
) -> Result<f64> {
    let mut examples = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for cap in &row.captions {
            let t = m.tgt_vocab.encode(cap)?;
            if !t.is_empty() {
                examples.push(Example::new(vec![i as u32], t));
            }
        }
    }
    let batch = seq2seq_data::BatchSize::Sentences(batch);
    held_out_loss(&m.members(), &examples, batch, &m.tgt_vocab, |b| {
        let images: Vec<usize> = b
            .indices
            .iter()
            .map(|&e| examples[e].src[0] as usize)
            .collect();
        let fetch = |ids: &[usize]| -> Result<Tensor> {
            let rows: Vec<&Tensor> = ids.iter().map(|&i| &feats[i]).collect();
            Ok(Tensor::stack(&rows, 0)?)
        };
        let src = Source::images(&images, fetch, &m.device)?;
        BatchTensors::with_source(b, src, &m.device)
    })
}

/// Captions `split` of the corpus the model was trained on (resolved against `data_dir`) with
/// `opts` and scores it against all references of each image.
pub fn evaluate_captions(
    c: &Captioner,
    split: Split,
    data_dir: &Path,
    opts: &DecodingConfig,
) -> Result<CaptionReport> {
    let cfg = &c.t.config;
    let corpus = load_captions(&cfg.data, data_dir)?;
    let rows = match split {
        Split::Valid => &corpus.valid,
        Split::Test => &corpus.test,
    };
    if rows.is_empty() {
        return Err(Error::EmptySplit(split.name()));
    }
    let images: Vec<&ImageRef> = rows.iter().map(|r| &corpus.images[r.image]).collect();
    let (limits, size) = (image_limits(&cfg.data), cfg.data.image_size);
    // Training's feature cache, when the backbone has a frozen part and its checkpoint is at hand.
    let cache = (c.image_encoder()?.has_frozen_part() && !cfg.data.feature_cache.is_empty())
        .then(|| backbone_checkpoint(cfg, data_dir))
        .filter(|ckpt| ckpt.is_file())
        .map(|ckpt| cache_dir(cfg, &ckpt))
        .transpose()?;
    let (mut views, mut cached_features, mut cache_rejected) = (Vec::new(), 0, false);
    let mut encode_time = Duration::ZERO;
    for mirrored in [false, true].into_iter().take(c.views()) {
        let load = |i: usize| -> Result<RgbImage> {
            let img = images[i].load(&limits).map_err(Error::Image)?;
            Ok(view(preprocess(&img, size), mirrored))
        };
        let v = view_features(
            c,
            &images,
            cache.as_deref(),
            load,
            mirrored,
            opts.batch_size,
        )?;
        cached_features += v.cached;
        cache_rejected |= v.rejected;
        encode_time += v.encode_time;
        views.push(v.features);
    }
    let started = Instant::now();
    let nbest = c.caption_features(&views, opts)?;
    let images_per_s =
        rows.len() as f64 / (started.elapsed() + encode_time).as_secs_f64().max(1e-9);
    let hyps: Vec<String> = nbest.iter().map(|n| n[0].0.clone()).collect();
    let refs: Vec<&Vec<String>> = rows.iter().map(|r| &r.captions).collect();
    let h: Vec<String> = hyps.iter().map(|s| caption_tokenize(s)).collect();
    let r: Vec<Vec<String>> = refs
        .iter()
        .map(|rs| rs.iter().map(|c| caption_tokenize(c)).collect())
        .collect();
    let refs: Vec<Vec<&str>> = refs
        .iter()
        .map(|rs| rs.iter().map(|s| s.as_str()).collect())
        .collect();
    let loss = reference_loss(&c.t, rows, &views[0], cfg.train.batch_size)?;
    Ok(CaptionReport {
        split,
        images: rows.len(),
        bleu: coco_bleu(&h, &r).map(|b| 100.0 * b),
        cider_d: cider_d(&h, &r).0,
        exact_match: Normalise::Caption.exact_match(&hyps, &refs).unwrap_or(0.0),
        loss,
        ppl: loss.exp(),
        captions: images.iter().map(|i| i.label()).zip(hyps).collect(),
        images_per_s,
        cached_features,
        cache_rejected,
    })
}
