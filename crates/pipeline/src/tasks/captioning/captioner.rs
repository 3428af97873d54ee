//! Captioning images with a trained model: per-file errors, batched decoding with any strategy.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use image::RgbImage;
use seq2seq_image_encoder::preprocess::to_tensor;

use crate::config::{DecodingConfig, Task};
use crate::decode::{decode_views, load_dir, LoadedModel, NBest};
use crate::model::{held_out_loss, BatchTensors, Encoder, Source};
use crate::tasks::captioning::corpus::image_limits;
use crate::tasks::captioning::images::{
    backbone_checkpoint, cache_dir, preprocess, read_cached, view, view_cache_file,
};
use crate::{Error, Result};

/// File extensions taken from a directory argument.
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tiff"];

/// A captioning model loaded from its directory.
pub struct Captioner {
    t: LoadedModel,
    /// Average every caption over the image and its horizontal mirror.
    hflip_average: bool,
}

/// Expands directory arguments into their image files (by extension, sorted); files are kept as
/// given, in order, whatever their extension.
pub fn expand_inputs(args: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_lowercase().as_str()))
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

impl Captioner {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self {
            t: load_dir(dir, Task::Captioning)?,
            hflip_average: false,
        })
    }

    /// Test-time augmentation: each image is read as it is and mirrored left to right, and the
    /// next-token distribution is averaged over both views (and every ensemble member), at
    /// twice the decoding cost. A caption rarely depends on left and right, while the
    /// backbone's features of the two views differ, so the average smooths the model's errors.
    pub fn set_hflip_average(&mut self, on: bool) {
        self.hflip_average = on;
    }

    /// How many views of each image are captioned together (2 with hflip averaging).
    pub fn views(&self) -> usize {
        if self.hflip_average {
            2
        } else {
            1
        }
    }

    pub fn config(&self) -> &crate::Config {
        &self.t.config
    }

    /// Adds ensemble members ([`Translator::add_members`]); a member given as a model directory
    /// must have this model's frozen image encoder, so that one pass of it serves them all.
    pub fn add_members(&mut self, paths: &[PathBuf]) -> Result<()> {
        self.t.add_members(paths)
    }

    /// How many models caption together (1 without ensemble members).
    pub fn members(&self) -> usize {
        self.t.members().len()
    }

    /// Captions image files in order: each entry is the n-best list, or the reason the file could
    /// not be used (unreadable, not an image, over the size limits).
    pub fn caption_files(
        &self,
        paths: &[PathBuf],
        opts: &DecodingConfig,
    ) -> Result<Vec<std::result::Result<NBest, String>>> {
        let limits = image_limits(&self.t.config.data);
        let size = self.t.config.data.image_size;
        let mut images = Vec::new();
        let mut slots = Vec::with_capacity(paths.len());
        for p in paths {
            match seq2seq_image_encoder::preprocess::load_rgb(p, &limits) {
                Ok(img) => {
                    images.push(preprocess(&img, size));
                    slots.push(Ok(images.len() - 1));
                }
                Err(e) => slots.push(Err(e.to_string())),
            }
        }
        let mut captions = self.caption_images(&images, opts)?;
        Ok(slots
            .into_iter()
            .map(|s| s.map(|i| std::mem::take(&mut captions[i])))
            .collect())
    }

    fn image_encoder(&self) -> Result<&seq2seq_image_encoder::ImageEncoder> {
        match &self.t.model.encoder {
            Encoder::Image(e) => Ok(e),
            _ => Err(Error::Invalid("not a captioning model".into())),
        }
    }

    /// The output of the image encoder's frozen part for each image (the pixels themselves for
    /// an encoder that trains whole), computed `batch` images at a time.
    pub fn frozen_features(&self, images: &[RgbImage], batch: usize) -> Result<Vec<Tensor>> {
        let enc = self.image_encoder()?;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch.max(1)) {
            let px = chunk
                .iter()
                .map(|img| to_tensor(img, enc.normalization(), &self.t.device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let f = enc.frozen(&Tensor::stack(&px, 0)?)?;
            for r in 0..chunk.len() {
                out.push(f.get(r)?);
            }
        }
        Ok(out)
    }

    /// Runs the whole image encoder (frozen and trainable parts, inference) over the images,
    /// `batch` at a time, and discards the output: the encoder's throughput for `bench`.
    pub fn run_encoder(&self, images: &[RgbImage], batch: usize) -> Result<()> {
        let enc = self.image_encoder()?;
        for f in self.frozen_features(images, batch)?.chunks(batch.max(1)) {
            let rows: Vec<&Tensor> = f.iter().collect();
            let out = enc.trainable(&Tensor::stack(&rows, 0)?, &mut seq2seq_nn::Ctx::eval())?;
            drop(out);
        }
        Ok(())
    }

    /// Captions images already resized and cropped to the model's `data.image_size`.
    pub fn caption_images(&self, images: &[RgbImage], opts: &DecodingConfig) -> Result<Vec<NBest>> {
        let mut views = vec![self.frozen_features(images, opts.batch_size)?];
        if self.hflip_average {
            let mirrors: Vec<RgbImage> = images.iter().map(|i| view(i.clone(), true)).collect();
            views.push(self.frozen_features(&mirrors, opts.batch_size)?);
        }
        self.caption_features(&views, opts)
    }

    /// Captions images given as [`Self::frozen_features`]: one list per view ([`Self::views`]:
    /// the images, then their mirrors), in the same image order.
    pub fn caption_features(
        &self,
        views: &[Vec<Tensor>],
        opts: &DecodingConfig,
    ) -> Result<Vec<NBest>> {
        let m = &self.t;
        if views.len() != self.views() {
            return Err(Error::Invalid(format!(
                "expected {} views of the images, got {}",
                self.views(),
                views.len()
            )));
        }
        let n = views[0].len();
        let order: Vec<usize> = (0..n).collect();
        let source = |chunk: &[usize]| -> Result<Vec<Source>> {
            views
                .iter()
                .map(|feats| {
                    let rows: Vec<&Tensor> = chunk.iter().map(|&i| &feats[i]).collect();
                    Ok(Source::image(Tensor::stack(&rows, 0)?))
                })
                .collect()
        };
        let hyps = decode_views(
            &m.members(),
            views.len(),
            n,
            &order,
            source,
            &m.tgt_vocab,
            opts,
            &m.device,
        )?;
        hyps.into_iter()
            .map(|nbest| {
                nbest
                    .iter()
                    .map(|h| Ok((m.tgt_vocab.decode(&h.tokens)?, h.score)))
                    .collect()
            })
            .collect()
    }
}

/// Captioning scores of a held-out split.
pub struct CaptionReport {
    pub split: crate::Split,
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

/// Captions `split` of the corpus the model was trained on (resolved against `data_dir`) with
/// `opts` and scores it against all references of each image.
pub fn evaluate_captions(
    c: &Captioner,
    split: crate::Split,
    data_dir: &Path,
    opts: &DecodingConfig,
) -> Result<CaptionReport> {
    use seq2seq_data::Example;
    use seq2seq_metrics::{caption_tokenize, cider_d, coco_bleu};

    let m = &c.t;
    let cfg = &m.config;
    let corpus = crate::tasks::captioning::corpus::load_captions(&cfg.data, data_dir)?;
    let rows = match split {
        crate::Split::Valid => &corpus.valid,
        crate::Split::Test => &corpus.test,
    };
    if rows.is_empty() {
        return Err(Error::Invalid(
            format!("the {split:?} split of this model's corpus is empty").to_lowercase(),
        ));
    }
    let limits = image_limits(&cfg.data);
    let size = cfg.data.image_size;
    let load = |i: usize, mirrored: bool| {
        corpus.images[rows[i].image]
            .load(&limits)
            .map(|img| view(preprocess(&img, size), mirrored))
            .map_err(|e| Error::Invalid(format!("captioning corpus: {e}")))
    };
    // Training's feature cache, when the backbone has a frozen part and its checkpoint is at hand.
    let cache = (c.image_encoder()?.has_frozen_part() && !cfg.data.feature_cache.is_empty())
        .then(|| backbone_checkpoint(cfg, data_dir))
        .filter(|ckpt| ckpt.is_file())
        .map(|ckpt| cache_dir(cfg, &ckpt))
        .transpose()?;
    let mut cached_features = 0;
    let mut cache_rejected = false;
    let mut views = Vec::with_capacity(c.views());
    let mut encode_time = std::time::Duration::ZERO;
    for mirrored in [false, true].into_iter().take(c.views()) {
        let mut cached: Vec<Option<Tensor>> = rows
            .iter()
            .map(|r| {
                let path = view_cache_file(cache.as_ref()?, &corpus.images[r.image], mirrored)?;
                read_cached(&path, &m.device)
            })
            .collect();
        // The cache is keyed by the checkpoint file, while the model carries its own copy of the
        // backbone: one image's cached features must match the model's before any are trusted.
        let rejected = match cached.iter().position(Option::is_some) {
            Some(i) => {
                let own = c.frozen_features(&[load(i, mirrored)?], 1)?.remove(0);
                let f = cached[i]
                    .as_ref()
                    .map(|f| f.to_dtype(DType::F32))
                    .transpose()?;
                match f {
                    Some(f) if f.dims() == own.dims() => {
                        let diff = (f - &own)?.abs()?.max_all()?.to_scalar::<f32>()?;
                        let scale = own.abs()?.max_all()?.to_scalar::<f32>()?;
                        // f16 storage: a relative error around 1e-3.
                        diff > 1e-2 * scale.max(1e-6)
                    }
                    _ => true,
                }
            }
            None => false,
        };
        if rejected {
            cached.fill(None);
        }
        cache_rejected |= rejected;
        cached_features += cached.iter().flatten().count();
        let misses: Vec<usize> = (0..rows.len()).filter(|&i| cached[i].is_none()).collect();
        let images = misses
            .iter()
            .map(|&i| load(i, mirrored))
            .collect::<Result<Vec<_>>>()?;
        let started = std::time::Instant::now();
        for (&i, f) in misses
            .iter()
            .zip(c.frozen_features(&images, opts.batch_size)?)
        {
            cached[i] = Some(f);
        }
        encode_time += started.elapsed();
        views.push(
            cached
                .into_iter()
                .map(|f| {
                    let f = f.ok_or_else(|| {
                        Error::Invalid("the image encoder skipped an image".into())
                    })?;
                    Ok(f.to_dtype(DType::F32)?)
                })
                .collect::<Result<Vec<_>>>()?,
        );
    }
    let started = std::time::Instant::now();
    let nbest = c.caption_features(&views, opts)?;
    let images_per_s =
        rows.len() as f64 / (started.elapsed() + encode_time).as_secs_f64().max(1e-9);
    let feats = &views[0];
    let hyps: Vec<String> = nbest.iter().map(|n| n[0].0.clone()).collect();
    let h: Vec<String> = hyps.iter().map(|s| caption_tokenize(s)).collect();
    let r: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.captions.iter().map(|c| caption_tokenize(c)).collect())
        .collect();
    let bleu = coco_bleu(&h, &r).map(|b| 100.0 * b);
    let (cider, _) = cider_d(&h, &r);
    let exact = h.iter().zip(&r).filter(|(h, rs)| rs.contains(h)).count() as f64 / h.len() as f64;
    // Perplexity over every reference caption.
    let mut examples = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        for cap in &row.captions {
            let t = m.tgt_vocab.encode(cap)?;
            if !t.is_empty() {
                examples.push(Example::new(vec![i as u32], t));
            }
        }
    }
    let loss = held_out_loss(
        &m.members(),
        &examples,
        cfg.train.batch_size,
        &m.tgt_vocab,
        |b| {
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
        },
    )?;
    Ok(CaptionReport {
        split,
        images: rows.len(),
        bleu,
        cider_d: cider,
        exact_match: exact,
        loss,
        ppl: loss.exp(),
        captions: rows
            .iter()
            .map(|r| corpus.images[r.image].label())
            .zip(hyps)
            .collect(),
        images_per_s,
        cached_features,
        cache_rejected,
    })
}
