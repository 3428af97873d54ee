//! `translate --attention DIR`: one attention heat-map per input, named by its 1-based position
//! (`0001.png`, …), each written atomically.

use std::path::{Path, PathBuf};

use seq2seq_plot::{heatmap, Format, Heatmap};

use crate::model_dir::write_atomic;
use crate::tasks::translation::Translated;
use crate::{Error, Result};

/// Draws the heat-map of each translation (source tokens across, output tokens down) into
/// `dir`, creating it; returns the files written.
pub fn write_heatmaps(dir: &Path, best: &[&Translated], format: Format) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ext = match format {
        Format::Png => "png",
        Format::Svg => "svg",
    };
    let mut files = Vec::with_capacity(best.len());
    for (i, t) in best.iter().enumerate() {
        let title = format!("{}: {}", i + 1, t.text);
        let bytes = heatmap(
            &Heatmap {
                title: &title,
                columns: &visible(&t.source_tokens),
                rows: &visible(&t.tokens),
                weights: &t.attention,
            },
            format,
        )?;
        let path = dir.join(format!("{:04}.{ext}", i + 1));
        write_atomic(&path, &bytes)?;
        files.push(path);
    }
    Ok(files)
}

/// Tokens as labels: a space (a character-level vocabulary's) shown as "␣".
fn visible(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| {
            if t.trim().is_empty() {
                "␣".repeat(t.chars().count().max(1))
            } else {
                t.clone()
            }
        })
        .collect()
}
