//! The on-disk cache of a frozen backbone's features: keyed by image file and backbone (a
//! specified hash, versioned with the code that computes them), so that later runs and
//! ensemble members skip the CNN.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::model_dir;
use crate::tasks::captioning::corpus::ImageRef;
use crate::tasks::Backbone;
use crate::{Error, Result};

/// The version of the code that computes a frozen backbone's features. Bump it whenever the same
/// checkpoint and image can give other features (a new kernel, batch norm folded differently), so
/// that old cache entries are missed rather than silently reused. Version 2: channels-last
/// features from the `nhwc` kernels, batch norm folded into the weights at load.
pub const FEATURE_CODE_VERSION: u32 = 2;

/// The first 16 hex digits of a SHA-256: a specified hash, so cache hits do not depend on the
/// toolchain (std's `DefaultHasher` promises no stable output).
fn short_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The identity of a backbone's frozen part, for the feature cache: the feature code's version,
/// the checkpoint's name and contents, the input size and where the frozen part ends. Contents
/// rather than path and modification time, so that a copied or re-mounted data directory keeps its
/// cache (hashing the 18 MB checkpoint takes milliseconds; recomputing 8000 images' features
/// takes minutes). A checkpoint that cannot be read is an error, never the key of nothing.
pub fn backbone_key(checkpoint: &Path, image_size: u32, frozen_blocks: usize) -> Result<String> {
    let bytes = std::fs::read(checkpoint).map_err(|source| Error::Read {
        path: checkpoint.to_path_buf(),
        source,
    })?;
    let name = checkpoint
        .file_name()
        .unwrap_or_default()
        .as_encoded_bytes();
    let sum = short_sha256(&[name, &[0], &bytes]);
    Ok(format!(
        "lite0-v{FEATURE_CODE_VERSION}-{sum}-s{image_size}-b{frozen_blocks}"
    ))
}

/// The Lite0 checkpoint of a config: `model.image_encoder.checkpoint`, a relative path resolved
/// against the data directory.
pub fn backbone_checkpoint(cfg: &crate::Config, data_dir: &Path) -> PathBuf {
    crate::config::resolve_path(data_dir, &cfg.model.image_encoder.checkpoint)
}

/// The Lite0 checkpoint of a captioning config, resolved against the data directory; none for
/// other tasks and backbones.
pub(crate) fn load_backbone(
    cfg: &crate::Config,
    data_dir: &Path,
    dev: &Device,
) -> Result<Option<Backbone>> {
    let ie = &cfg.model.image_encoder;
    if cfg.task != crate::config::Task::Captioning
        || ie.backbone != seq2seq_image_encoder::BackboneKind::Lite0
    {
        return Ok(None);
    }
    let path = backbone_checkpoint(cfg, data_dir);
    let tensors =
        seq2seq_image_encoder::pth::load_pth(&path, dev).map_err(|source| Error::Backbone {
            path: path.clone(),
            source,
        })?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    Ok(Some(Backbone {
        checkpoint: path,
        tensors,
    }))
}

/// The cache folder of a config's frozen Lite0 part, its checkpoint resolved to `checkpoint`.
pub fn cache_dir(cfg: &crate::Config, checkpoint: &Path) -> Result<PathBuf> {
    let frozen =
        seq2seq_image_encoder::lite0::NUM_BLOCKS - cfg.model.image_encoder.fine_tune_blocks;
    let key = backbone_key(checkpoint, cfg.data.image_size, frozen)?;
    Ok(PathBuf::from(&cfg.data.feature_cache).join(key))
}

/// The cache file of image `r` in `cache` (none for an in-memory or unreadable image).
pub fn cache_file(cache: &Path, r: &ImageRef) -> Option<PathBuf> {
    view_cache_file(cache, r, false)
}

/// The cache file of image `r`, or of its horizontal mirror when `mirrored`.
pub fn view_cache_file(cache: &Path, r: &ImageRef, mirrored: bool) -> Option<PathBuf> {
    match r {
        ImageRef::File(p) => file_key(p, mirrored).map(|k| cache.join(k)),
        _ => None,
    }
}

/// The features stored in a cache file (f16 `(C, h, w)`), if it holds them.
pub fn read_cached(path: &Path, dev: &Device) -> Option<Tensor> {
    candle_core::safetensors::load(path, dev)
        .ok()?
        .remove("features")
}

/// Stores features in a cache file, atomically (a killed run leaves no half-written file).
pub fn write_cached(path: &Path, f: &Tensor) -> Result<()> {
    model_dir::save_tensors(
        path,
        &std::collections::HashMap::from([("features".to_string(), f.clone())]),
    )
}

/// The cache file of one image: its name and a hash of its bytes (an edited image misses the
/// cache; a moved or copied one still hits it). A mirror image's features get a `-hflip` suffix.
fn file_key(path: &Path, mirrored: bool) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let suffix = if mirrored { "-hflip" } else { "" };
    Some(format!(
        "{stem}-{}{suffix}.safetensors",
        short_sha256(&[&bytes])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbone_keys_are_specified_hashes_and_need_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("s2s-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ckpt = dir.join("x.pth");
        std::fs::write(&ckpt, b"abc").unwrap();
        // SHA-256("x.pth\0abc") = da691a9c9a1528a9…: the same key on every toolchain.
        assert_eq!(
            backbone_key(&ckpt, 224, 16).unwrap(),
            format!("lite0-v{FEATURE_CODE_VERSION}-da691a9c9a1528a9-s224-b16")
        );
        std::fs::write(&ckpt, b"abd").unwrap();
        assert!(!backbone_key(&ckpt, 224, 16)
            .unwrap()
            .contains("da691a9c9a1528a9"));
        let e = backbone_key(&dir.join("gone.pth"), 224, 16).unwrap_err();
        assert!(e.to_string().contains("gone.pth"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
