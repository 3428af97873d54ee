//! The captioning corpus: images (files or generated shapes) with all their reference captions,
//! split into train/valid/test, as the configured format gives them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use seq2seq_data::captions::{read_coco, read_flickr8k, read_karpathy, CaptionItem};
use seq2seq_image_encoder::preprocess::{load_rgb, ImageError, ImageLimits};
use seq2seq_image_encoder::shapes::shapes;

use crate::config::{resolve_path, DataConfig, DataFormat};
use crate::{Error, Result};

/// Where an image's pixels come from.
#[derive(Clone, Debug)]
pub enum ImageRef {
    File(PathBuf),
    /// A generated image, with a name for messages and outputs.
    Memory(String, Arc<RgbImage>),
}

impl ImageRef {
    /// The path or name shown to users.
    pub fn label(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Memory(name, _) => name.clone(),
        }
    }

    pub fn load(&self, limits: &ImageLimits) -> std::result::Result<RgbImage, ImageError> {
        match self {
            Self::File(p) => load_rgb(p, limits),
            Self::Memory(_, img) => Ok((**img).clone()),
        }
    }
}

/// One image of a split (an index into [`CaptionCorpus::images`]) and its references.
#[derive(Clone, Debug)]
pub struct CaptionRow {
    pub image: usize,
    pub captions: Vec<String>,
}

pub struct CaptionCorpus {
    pub images: Vec<ImageRef>,
    pub train: Vec<CaptionRow>,
    pub valid: Vec<CaptionRow>,
    pub test: Vec<CaptionRow>,
    /// Captions dropped because their image file does not exist.
    pub dropped_captions: usize,
}

pub fn image_limits(cfg: &DataConfig) -> ImageLimits {
    ImageLimits {
        max_file_bytes: cfg.max_image_bytes,
        max_width: cfg.max_image_side,
        max_height: cfg.max_image_side,
    }
}

/// Reads the caption corpus the config names, resolved against `data_dir`.
pub fn load_captions(cfg: &DataConfig, data_dir: &Path) -> Result<CaptionCorpus> {
    let root = resolve_path(data_dir, &cfg.root);
    let images_dir = resolve_path(&root, &cfg.images);
    let mut corpus = CaptionCorpus {
        images: Vec::new(),
        train: Vec::new(),
        valid: Vec::new(),
        test: Vec::new(),
        dropped_captions: 0,
    };
    match cfg.format {
        DataFormat::Flickr8k | DataFormat::Karpathy => {
            let s = if cfg.format == DataFormat::Flickr8k {
                read_flickr8k(&root, &images_dir)?
            } else {
                read_karpathy(&root.join(&cfg.file), &images_dir)?
            };
            corpus.dropped_captions = s.dropped_captions;
            for (which, items) in [s.train, s.valid, s.test].into_iter().enumerate() {
                *corpus.split_mut(which) = corpus.add_files(items);
            }
        }
        DataFormat::Coco => {
            for (which, name) in [&cfg.train, &cfg.valid, &cfg.test].into_iter().enumerate() {
                if !name.is_empty() {
                    let (items, dropped) = read_coco(&root.join(name), &images_dir)?;
                    corpus.dropped_captions += dropped;
                    *corpus.split_mut(which) = corpus.add_files(items);
                }
            }
        }
        DataFormat::Shapes => corpus.draw_shapes(cfg),
        other => return Err(Error::NotCaptions(other)),
    }
    if corpus.train.is_empty() {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the captioning training split".into(),
            hint: format!(" (images looked up in {})", images_dir.display()),
        }));
    }
    Ok(corpus)
}

impl CaptionCorpus {
    /// Split 0 (train), 1 (valid) or 2 (test).
    fn split_mut(&mut self, which: usize) -> &mut Vec<CaptionRow> {
        match which {
            0 => &mut self.train,
            1 => &mut self.valid,
            _ => &mut self.test,
        }
    }

    /// Registers the items' image files; their rows, in order.
    fn add_files(&mut self, items: Vec<CaptionItem>) -> Vec<CaptionRow> {
        items
            .into_iter()
            .map(|it| {
                self.images.push(ImageRef::File(it.image));
                CaptionRow {
                    image: self.images.len() - 1,
                    captions: it.captions,
                }
            })
            .collect()
    }

    /// The synthetic shapes corpus: disjoint seeds per split; the jittered drawing makes every
    /// image new.
    fn draw_shapes(&mut self, cfg: &DataConfig) {
        for (which, (n, seed)) in [
            (cfg.train_size, cfg.split_seed),
            (cfg.valid_size, cfg.split_seed.wrapping_add(1_000_001)),
            (cfg.test_size, cfg.split_seed.wrapping_add(2_000_003)),
        ]
        .into_iter()
        .enumerate()
        {
            let split = ["train", "valid", "test"][which];
            let mut rows = Vec::with_capacity(n);
            for (i, (img, cap)) in shapes(n, seed, cfg.image_size).into_iter().enumerate() {
                let name = format!("shapes-{split}-{i}");
                self.images.push(ImageRef::Memory(name, Arc::new(img)));
                rows.push(CaptionRow {
                    image: self.images.len() - 1,
                    captions: vec![cap],
                });
            }
            *self.split_mut(which) = rows;
        }
    }
}
