//! Evaluation metrics that equal the community's reference implementations:
//! BLEU and chrF/chrF++ as sacreBLEU 2.x computes them (checked against stored sacreBLEU
//! outputs to 0.01), and CIDEr-D and captioning BLEU-1..4 as pycocoevalcap computes them.
//!
//! Inputs are plain strings: hypotheses, and for each hypothesis any number of references.

pub mod bleu;
pub mod chrf;
pub mod cider;
pub mod coco_bleu;
pub mod tokenize;

pub use bleu::{Bleu, BleuScore, Smoothing};
pub use chrf::{Chrf, ChrfScore};
pub use cider::{caption_tokenize, cider_d};
pub use coco_bleu::coco_bleu;
pub use tokenize::Tokenizer;

/// The sacreBLEU version whose numbers these implementations reproduce (used in signatures).
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// Python's `str.split()`: split on Unicode whitespace, which for Python also includes the
/// separators U+001C..U+001F.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
}

/// The `nrefs` field of a signature: the reference count, or `var` when it varies.
pub(crate) fn nrefs_label(nrefs: i64) -> String {
    if nrefs < 0 {
        "var".to_string()
    } else {
        nrefs.to_string()
    }
}

/// The number of references per hypothesis, or -1 when it varies.
pub(crate) fn nrefs_of<S>(refs: &[Vec<S>]) -> i64 {
    let counts: std::collections::BTreeSet<usize> = refs.iter().map(|r| r.len()).collect();
    match counts.len() {
        1 => *counts.first().unwrap() as i64,
        _ => -1,
    }
}
