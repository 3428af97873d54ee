//! Images ready for the image encoder during training: decoded once and kept in memory, or —
//! for a backbone with a frozen part — that part's output computed once per image and kept,
//! with an on-disk cache keyed by image file and backbone so that later runs skip the CNN.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seq2seq_image_encoder::preprocess::{crop, resize_shorter, to_tensor, Normalization};
use seq2seq_image_encoder::ImageEncoder;

use crate::config::DataConfig;
use crate::observer::Observer;
use crate::tasks::captioning::cache::{read_cached, view_cache_file, write_cached};
use crate::tasks::captioning::corpus::{image_limits, ImageRef};
use crate::{Error, Result};

/// Frozen-part outputs are computed this many images at a time.
const FEATURE_BATCH: usize = 16;

enum Store {
    /// Resized images (shorter side: the training load size, or the image size when held out).
    Pixels(Vec<RgbImage>),
    /// The frozen part's output per image, as f16 `(C, h, w)`, and of its mirror image for the
    /// training images when `data.hflip` is set.
    Features {
        plain: Vec<Tensor>,
        mirrored: Vec<Option<Tensor>>,
    },
}

pub struct ImageBank {
    store: Store,
    size: u32,
    hflip: bool,
    jitter: bool,
    norm: Normalization,
}

/// Decodes and resizes one image as the pipeline does at inference time: shorter side to
/// `size`, centre crop.
pub fn preprocess(img: &RgbImage, size: u32) -> RgbImage {
    crop(&resize_shorter(img, size), size, None, false)
}

/// One preprocessed image, or its horizontal mirror.
pub fn view(mut img: RgbImage, mirrored: bool) -> RgbImage {
    if mirrored {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    img
}

/// The views whose frozen features a bank needs: every image as it is, and the training
/// images' mirrors when `data.hflip` is set; with what the cache already holds.
struct FeatureViews {
    /// (image, mirrored).
    views: Vec<(usize, bool)>,
    plain: Vec<Option<Tensor>>,
    mirrored: Vec<Option<Tensor>>,
    /// Where each computed view goes in the cache.
    keys: Vec<Option<PathBuf>>,
    /// Views to compute.
    todo: Vec<usize>,
    hits: usize,
}

impl FeatureViews {
    fn look_up(
        images: &[ImageRef],
        train: &[bool],
        hflip: bool,
        cache: Option<&Path>,
        dev: &Device,
    ) -> Self {
        let views: Vec<(usize, bool)> = (0..images.len())
            .map(|i| (i, false))
            .chain(
                (0..images.len())
                    .filter(|&i| hflip && train[i])
                    .map(|i| (i, true)),
            )
            .collect();
        let mut fv = FeatureViews {
            plain: vec![None; images.len()],
            mirrored: vec![None; images.len()],
            keys: vec![None; views.len()],
            todo: Vec::new(),
            hits: 0,
            views,
        };
        for v in 0..fv.views.len() {
            let (i, m) = fv.views[v];
            if let Some(path) = cache.and_then(|c| view_cache_file(c, &images[i], m)) {
                if let Some(f) = read_cached(&path, dev) {
                    fv.set(v, f);
                    fv.hits += 1;
                    continue;
                }
                fv.keys[v] = Some(path);
            }
            fv.todo.push(v);
        }
        fv
    }

    fn set(&mut self, v: usize, f: Tensor) {
        let (i, m) = self.views[v];
        *if m {
            &mut self.mirrored[i]
        } else {
            &mut self.plain[i]
        } = Some(f);
    }
}

impl ImageBank {
    /// Loads `images` for `encoder`. `train` marks the images augmented in training (they keep
    /// a margin for crop jitter); `cache` is the feature-cache folder for this backbone, if any.
    pub fn new(
        images: &[ImageRef],
        train: &[bool],
        encoder: &ImageEncoder,
        cfg: &DataConfig,
        cache: Option<PathBuf>,
        dev: &Device,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        if encoder.has_frozen_part() {
            Self::features(images, train, encoder, cfg, cache, dev, obs)
        } else {
            Self::pixels(images, train, encoder, cfg, obs)
        }
    }

    /// Resized images: training images keep a margin for crop jitter.
    fn pixels(
        images: &[ImageRef],
        train: &[bool],
        encoder: &ImageEncoder,
        cfg: &DataConfig,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let (limits, size, started) = (image_limits(cfg), cfg.image_size, Instant::now());
        let load_size = ((size as f64) * (1.0 + cfg.crop_jitter)).round() as u32;
        let mut pixels = Vec::with_capacity(images.len());
        for (i, r) in images.iter().enumerate() {
            let s = if train[i] { load_size } else { size };
            pixels.push(resize_shorter(&r.load(&limits).map_err(Error::Image)?, s));
        }
        obs.line(&format!(
            "images: {} decoded in {:.1} s",
            images.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(Self {
            store: Store::Pixels(pixels),
            size,
            hflip: cfg.hflip,
            jitter: cfg.crop_jitter > 0.0,
            norm: encoder.normalization(),
        })
    }

    /// The frozen part's output per view, from the cache or computed (and then cached).
    #[allow(clippy::too_many_arguments)]
    fn features(
        images: &[ImageRef],
        train: &[bool],
        encoder: &ImageEncoder,
        cfg: &DataConfig,
        cache: Option<PathBuf>,
        dev: &Device,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let started = Instant::now();
        if cfg.crop_jitter > 0.0 {
            obs.line("images: data.crop_jitter is ignored: the frozen backbone's features are computed once per image");
        }
        if cfg.hflip {
            obs.line("images: data.hflip with a frozen backbone: features of each training image and of its mirror are computed once; training draws one of the two per sample");
        }
        if let Some(c) = &cache {
            std::fs::create_dir_all(c).map_err(|source| Error::Write {
                path: c.clone(),
                source,
            })?;
        }
        let mut fv = FeatureViews::look_up(images, train, cfg.hflip, cache.as_deref(), dev);
        extract(&mut fv, images, encoder, cfg, dev, obs)?;
        obs.line(&format!(
            "features: {} images ready{} ({} from the cache{}) in {:.1} s",
            images.len(),
            if cfg.hflip {
                " with their training mirrors"
            } else {
                ""
            },
            fv.hits,
            cache
                .as_ref()
                .map(|c| format!(" {}", c.display()))
                .unwrap_or_default(),
            started.elapsed().as_secs_f64()
        ));
        let plain = fv
            .plain
            .into_iter()
            .map(|f| f.ok_or(Error::SkippedImage))
            .collect::<Result<_>>()?;
        Ok(Self {
            store: Store::Features {
                plain,
                mirrored: fv.mirrored,
            },
            size: cfg.image_size,
            hflip: cfg.hflip,
            jitter: false,
            norm: encoder.normalization(),
        })
    }

    /// The input of the encoder's trainable part for images `ids`; augmented (when configured)
    /// with a generator seeded by `seed` when `train`.
    pub fn batch(&self, ids: &[usize], train: bool, seed: u64, dev: &Device) -> Result<Tensor> {
        match &self.store {
            Store::Features { plain, mirrored } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let rows: Vec<&Tensor> = ids
                    .iter()
                    .map(|&i| match &mirrored[i] {
                        Some(m) if train && self.hflip && rng.random_bool(0.5) => m,
                        _ => &plain[i],
                    })
                    .collect();
                Ok(Tensor::stack(&rows, 0)?.to_dtype(DType::F32)?)
            }
            Store::Pixels(p) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let augment = train && (self.hflip || self.jitter);
                let rows = ids
                    .iter()
                    .map(|&i| {
                        let img = crop(&p[i], self.size, augment.then_some(&mut rng), self.hflip);
                        to_tensor(&img, self.norm, dev)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::stack(&rows, 0)?)
            }
        }
    }
}

/// Computes the views the cache did not hold, `FEATURE_BATCH` at a time, writing each to the
/// cache when it has a key there.
fn extract(
    fv: &mut FeatureViews,
    images: &[ImageRef],
    encoder: &ImageEncoder,
    cfg: &DataConfig,
    dev: &Device,
    obs: &mut dyn Observer,
) -> Result<()> {
    let (limits, norm, started) = (image_limits(cfg), encoder.normalization(), Instant::now());
    let todo = std::mem::take(&mut fv.todo);
    let mut done = 0;
    for chunk in todo.chunks(FEATURE_BATCH) {
        let batch = chunk
            .iter()
            .map(|&v| {
                let (i, m) = fv.views[v];
                let img = images[i].load(&limits).map_err(Error::Image)?;
                Ok(to_tensor(
                    &view(preprocess(&img, cfg.image_size), m),
                    norm,
                    dev,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = encoder.frozen(&Tensor::stack(&batch, 0)?)?;
        for (r, &v) in chunk.iter().enumerate() {
            let f = out.get(r)?.to_dtype(DType::F16)?;
            if let Some(path) = &fv.keys[v] {
                write_cached(path, &f)?;
            }
            fv.set(v, f);
        }
        done += chunk.len();
        if done % (FEATURE_BATCH * 32) < FEATURE_BATCH || done == todo.len() {
            obs.line(&format!(
                "features: {done}/{} images through the frozen backbone, {:.1} images/s",
                todo.len(),
                done as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
    Ok(())
}
