//! Caption corpora: Flickr8k as it ships, the Karpathy split JSON, and COCO captions JSON.
//! Every image keeps all its reference captions.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::corpus::read_lines;
use crate::DataError;

/// One image with all its reference captions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionItem {
    pub image: PathBuf,
    pub captions: Vec<String>,
}

/// The splits of a caption corpus, and how many captions were dropped for a missing image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptionSplits {
    pub train: Vec<CaptionItem>,
    pub valid: Vec<CaptionItem>,
    pub test: Vec<CaptionItem>,
    pub dropped_captions: usize,
}

fn json_err(path: &Path, e: serde_json::Error) -> DataError {
    DataError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        msg: e.to_string(),
    }
}

/// Flickr8k: `Flickr8k.token.txt` (`<image>#<n>\t<caption>`) and the split lists
/// `Flickr_8k.{train,dev,test}Images.txt`, images under `images_dir`. Captions whose image file
/// does not exist are dropped and counted.
pub fn read_flickr8k(root: &Path, images_dir: &Path) -> Result<CaptionSplits, DataError> {
    let tokens = root.join("Flickr8k.token.txt");
    let mut caps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, line) in read_lines(&tokens)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((id, cap)) = line.split_once('\t') else {
            return Err(DataError::Columns {
                path: tokens.clone(),
                line: i + 1,
                expected: 2,
                found: 1,
            });
        };
        let image = id.split('#').next().unwrap_or(id).to_string();
        caps.entry(image).or_default().push(cap.trim().to_string());
    }
    let mut out = CaptionSplits::default();
    let exists: HashSet<String> = caps
        .keys()
        .filter(|k| images_dir.join(k).is_file())
        .cloned()
        .collect();
    for (k, v) in &caps {
        if !exists.contains(k) {
            out.dropped_captions += v.len();
        }
    }
    let split = |name: &str| -> Result<Vec<CaptionItem>, DataError> {
        Ok(read_lines(&root.join(name))?
            .into_iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && exists.contains(l))
            .map(|l| CaptionItem {
                image: images_dir.join(&l),
                captions: caps[&l].clone(),
            })
            .collect())
    };
    out.train = split("Flickr_8k.trainImages.txt")?;
    out.valid = split("Flickr_8k.devImages.txt")?;
    out.test = split("Flickr_8k.testImages.txt")?;
    Ok(out)
}

#[derive(Deserialize)]
struct Karpathy {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default)]
    filepath: Option<String>,
    split: String,
    sentences: Vec<KarpathySentence>,
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

/// The Karpathy split JSON (`dataset_flickr8k.json`, `dataset_coco.json`): `images[]` with
/// `filename`, optional `filepath`, `split` (`train`, `restval` → train, `val`, `test`) and
/// `sentences[].raw`.
pub fn read_karpathy(path: &Path, images_dir: &Path) -> Result<CaptionSplits, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let k: Karpathy = serde_json::from_str(&text).map_err(|e| json_err(path, e))?;
    let mut out = CaptionSplits::default();
    for img in k.images {
        let rel = match &img.filepath {
            Some(fp) => Path::new(fp).join(&img.filename),
            None => PathBuf::from(&img.filename),
        };
        let image = images_dir.join(rel);
        let captions: Vec<String> = img
            .sentences
            .into_iter()
            .map(|s| s.raw.trim().to_string())
            .collect();
        if !image.is_file() {
            out.dropped_captions += captions.len();
            continue;
        }
        let item = CaptionItem { image, captions };
        match img.split.as_str() {
            "train" | "restval" => out.train.push(item),
            "val" => out.valid.push(item),
            "test" => out.test.push(item),
            _ => {}
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Coco {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

/// COCO captions JSON (`captions_train2014.json`): `images[]` (`id`, `file_name`) and
/// `annotations[]` (`image_id`, `caption`). One file is one split.
pub fn read_coco(path: &Path, images_dir: &Path) -> Result<(Vec<CaptionItem>, usize), DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let c: Coco = serde_json::from_str(&text).map_err(|e| json_err(path, e))?;
    let mut caps: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for a in c.annotations {
        caps.entry(a.image_id)
            .or_default()
            .push(a.caption.trim().to_string());
    }
    let mut items = Vec::new();
    let mut dropped = 0;
    for img in c.images {
        let captions = caps.remove(&img.id).unwrap_or_default();
        let image = images_dir.join(&img.file_name);
        if !image.is_file() {
            dropped += captions.len();
            continue;
        }
        if !captions.is_empty() {
            items.push(CaptionItem { image, captions });
        }
    }
    Ok((items, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own per test: tests run in parallel.
    fn fixture(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("s2s-captions-{name}-{}", std::process::id()));
        std::fs::create_dir_all(d.join("images")).unwrap();
        for f in ["a.jpg", "b.jpg", "c.jpg"] {
            std::fs::write(d.join("images").join(f), b"x").unwrap();
        }
        d
    }

    #[test]
    fn flickr8k_keeps_all_captions_and_counts_missing_images() {
        let d = fixture("flickr8k");
        std::fs::write(
            d.join("Flickr8k.token.txt"),
            "a.jpg#0\tA dog runs .\na.jpg#1\tA brown dog .\nb.jpg#0\tTwo kids .\nz.jpg#0\tGone .\nz.jpg#1\tStill gone .\nc.jpg#0\tA cat .\n",
        )
        .unwrap();
        std::fs::write(d.join("Flickr_8k.trainImages.txt"), "a.jpg\nz.jpg\n").unwrap();
        std::fs::write(d.join("Flickr_8k.devImages.txt"), "b.jpg\n").unwrap();
        std::fs::write(d.join("Flickr_8k.testImages.txt"), "c.jpg\n").unwrap();
        let s = read_flickr8k(&d, &d.join("images")).unwrap();
        assert_eq!(s.train.len(), 1);
        assert_eq!(s.train[0].captions, vec!["A dog runs .", "A brown dog ."]);
        assert_eq!((s.valid.len(), s.test.len(), s.dropped_captions), (1, 1, 2));
        std::fs::write(d.join("Flickr8k.token.txt"), "a.jpg#0 no tab here\n").unwrap();
        let e = read_flickr8k(&d, &d.join("images"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Flickr8k.token.txt:1"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn karpathy_and_coco_json() {
        let d = fixture("json");
        let k = d.join("dataset_flickr8k.json");
        std::fs::write(
            &k,
            r#"{"images": [
              {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A dog ."}, {"raw": "A pet ."}]},
              {"filename": "b.jpg", "split": "restval", "sentences": [{"raw": "Kids ."}]},
              {"filename": "c.jpg", "split": "test", "sentences": [{"raw": "A cat ."}]},
              {"filename": "z.jpg", "split": "val", "sentences": [{"raw": "Gone ."}]}
            ], "dataset": "flickr8k"}"#,
        )
        .unwrap();
        let s = read_karpathy(&k, &d.join("images")).unwrap();
        assert_eq!(
            (
                s.train.len(),
                s.valid.len(),
                s.test.len(),
                s.dropped_captions
            ),
            (2, 0, 1, 1)
        );
        assert_eq!(s.train[0].captions.len(), 2);
        let c = d.join("captions.json");
        std::fs::write(
            &c,
            r#"{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "z.jpg"}],
               "annotations": [{"image_id": 1, "caption": "A dog."}, {"image_id": 1, "caption": "Dog."},
                               {"image_id": 2, "caption": "Gone."}]}"#,
        )
        .unwrap();
        let (items, dropped) = read_coco(&c, &d.join("images")).unwrap();
        assert_eq!((items.len(), items[0].captions.len(), dropped), (1, 2, 1));
        std::fs::write(&c, "{ broken").unwrap();
        let e = read_coco(&c, &d.join("images")).unwrap_err().to_string();
        assert!(
            e.contains("captions.json") && e.contains("invalid JSON"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
