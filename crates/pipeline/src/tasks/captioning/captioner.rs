//! Captioning images with a trained model: per-file errors, batched decoding with any strategy.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::RgbImage;
use seq2seq_decoder::Hypothesis;
use seq2seq_image_encoder::preprocess::{to_tensor, ImageError};
use serde::Serialize;

use crate::config::{DecodingConfig, Task};
use crate::decode::{decode_views, load_dir, LoadedModel, NBest, Views};
use crate::model::{Encoder, Source};
use crate::tasks::captioning::corpus::image_limits;
use crate::tasks::captioning::images::{preprocess, view};
use crate::{Error, Result};

/// File extensions taken from a directory argument.
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tiff"];

/// One caption with its tokens and attention (see [`Captioner::caption_images_detailed`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Captioned {
    pub text: String,
    pub score: f64,
    pub tokens: Vec<String>,
    /// `attention[i]`: word `i`'s weights over the encoder's grid cells, row-major (empty
    /// unless asked for); with hflip averaging, the mean of the image's and the mirror's
    /// (flipped back).
    pub attention: Vec<Vec<f32>>,
    /// The grid's (rows, columns).
    pub grid: (usize, usize),
}

/// A captioning model loaded from its directory.
pub struct Captioner {
    pub(super) t: LoadedModel,
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
        Self::load_on(dir, &candle_core::Device::Cpu)
    }

    /// [`Self::load`] onto `device`.
    pub fn load_on(dir: &Path, device: &candle_core::Device) -> Result<Self> {
        Ok(Self {
            t: load_dir(dir, Task::Captioning, device)?,
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
    ) -> Result<Vec<std::result::Result<NBest, ImageError>>> {
        Ok(self
            .caption_files_detailed(paths, opts)?
            .into_iter()
            .map(|r| r.map(|(_, c)| c.into_iter().map(|c| (c.text, c.score)).collect()))
            .collect())
    }

    /// [`Self::caption_files`] with each file's picture as the model saw it (resized and
    /// cropped) and the captions' tokens and attention (with `opts.attention`).
    #[allow(clippy::type_complexity)]
    pub fn caption_files_detailed(
        &self,
        paths: &[PathBuf],
        opts: &DecodingConfig,
    ) -> Result<Vec<std::result::Result<(RgbImage, Vec<Captioned>), ImageError>>> {
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
                Err(e) => slots.push(Err(e)),
            }
        }
        let mut captions = self.caption_images_detailed(&images, opts)?;
        Ok(slots
            .into_iter()
            .map(|s| s.map(|i| (images[i].clone(), std::mem::take(&mut captions[i]))))
            .collect())
    }

    pub(super) fn image_encoder(&self) -> Result<&seq2seq_image_encoder::ImageEncoder> {
        match &self.t.model.encoder {
            Encoder::Image(e) => Ok(e),
            other => Err(Error::SourceMismatch {
                want: other.kind(),
                got: "image",
            }),
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
        Ok(self
            .caption_images_detailed(images, opts)?
            .into_iter()
            .map(|c| c.into_iter().map(|c| (c.text, c.score)).collect())
            .collect())
    }

    /// [`Self::caption_images`] with the captions' tokens and attention over the image grid.
    pub fn caption_images_detailed(
        &self,
        images: &[RgbImage],
        opts: &DecodingConfig,
    ) -> Result<Vec<Vec<Captioned>>> {
        let mut views = vec![self.frozen_features(images, opts.batch_size)?];
        if self.hflip_average {
            let mirrors: Vec<RgbImage> = images.iter().map(|i| view(i.clone(), true)).collect();
            views.push(self.frozen_features(&mirrors, opts.batch_size)?);
        }
        let eos = self.t.tgt_vocab.tokens(&[self.t.tgt_vocab.eos]);
        self.hypotheses(&views, opts)?
            .into_iter()
            .map(|nbest| nbest.into_iter().map(|h| self.captioned(h, &eos)).collect())
            .collect()
    }

    fn captioned(&self, h: Hypothesis, eos: &[String]) -> Result<Captioned> {
        let mut tokens = self.t.tgt_vocab.tokens(&h.tokens);
        if h.attention.len() > h.tokens.len() {
            tokens.extend(eos.iter().cloned());
        }
        let len = h.attention.first().map_or(0, Vec::len);
        let side = (len as f64).sqrt().round() as usize;
        Ok(Captioned {
            text: self.t.tgt_vocab.decode(&h.tokens)?,
            score: h.score,
            tokens,
            grid: (side, len / side.max(1)),
            attention: h.attention,
        })
    }

    /// Captions images given as [`Self::frozen_features`]: one list per view ([`Self::views`]:
    /// the images, then their mirrors), in the same image order.
    pub fn caption_features(
        &self,
        views: &[Vec<Tensor>],
        opts: &DecodingConfig,
    ) -> Result<Vec<NBest>> {
        let m = &self.t;
        self.hypotheses(views, opts)?
            .into_iter()
            .map(|nbest| {
                nbest
                    .iter()
                    .map(|h| Ok((m.tgt_vocab.decode(&h.tokens)?, h.score)))
                    .collect()
            })
            .collect()
    }

    /// The search over the views of each image (see [`Self::caption_features`]).
    fn hypotheses(
        &self,
        views: &[Vec<Tensor>],
        opts: &DecodingConfig,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let m = &self.t;
        if views.len() != self.views() {
            return Err(Error::ViewCount {
                expected: self.views(),
                got: views.len(),
            });
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
        let views_of = Views {
            count: views.len(),
            order: Some(&mirror_order),
        };
        decode_views(
            &m.members(),
            views_of,
            n,
            &order,
            source,
            &m.tgt_vocab,
            opts,
            &m.device,
        )
    }
}

/// View 1 is the mirror image: its square grid's columns run right to left, so shared position
/// (r, c) is its position (r, side − 1 − c).
fn mirror_order(view: usize, len: usize) -> Option<Vec<u32>> {
    let side = (len as f64).sqrt().round() as usize;
    if view != 1 || side * side != len {
        return None;
    }
    Some(
        (0..len)
            .map(|p| ((p / side) * side + side - 1 - p % side) as u32)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::mirror_order;

    #[test]
    fn the_mirrors_grid_is_flipped_back_column_by_column() {
        // 3×3: shared (r, c) reads the mirror's (r, 2 − c).
        assert_eq!(mirror_order(1, 9), Some(vec![2, 1, 0, 5, 4, 3, 8, 7, 6]));
        assert_eq!(
            mirror_order(0, 9),
            None,
            "the image itself is the shared order"
        );
        assert_eq!(mirror_order(1, 8), None, "not a square grid");
    }
}
