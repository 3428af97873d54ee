//! `caption --attention DIR`: per image, the strip of its best caption's attention (the
//! picture as the model saw it, once per word), named `0001.png`, … in input order and written
//! atomically.

use std::path::{Path, PathBuf};

use image::RgbImage;
use seq2seq_plot::{caption_strip, Strip};

use crate::model_dir::write_atomic;
use crate::tasks::captioning::Captioned;
use crate::{Error, Result};

/// Writes one strip per `(index, title, picture, caption)` into `dir` (created); the index
/// (0-based input position) names the file. Returns the files written.
pub fn write_strips(
    dir: &Path,
    items: &[(usize, String, &RgbImage, &Captioned)],
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::with_capacity(items.len());
    for (i, title, image, c) in items {
        let bytes = caption_strip(&Strip {
            title,
            image,
            words: &c.tokens,
            weights: &c.attention,
            grid: c.grid,
        })?;
        let path = dir.join(format!("{:04}.png", i + 1));
        write_atomic(&path, &bytes)?;
        files.push(path);
    }
    Ok(files)
}
