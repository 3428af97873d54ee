//! BLEU-1..4 as the captioning papers report them: pycocoevalcap's `Bleu(4)` scorer (the
//! coco-caption toolkit), which differs from sacreBLEU: no smoothing (an order without a match
//! gives ~0 through `tiny` and `small` guards), the "closest" reference length per hypothesis,
//! and BLEU-n as the geometric mean of the first n precisions.

use std::collections::HashMap;

use crate::py_split;

/// Corpus BLEU-1..4 (in 0..1, as pycocoevalcap returns them) of tokenised captions: `hyps[i]`
/// is one caption, `refs[i]` its references, all space-separated words (see
/// [`crate::caption_tokenize`]).
pub fn coco_bleu<S: AsRef<str>>(hyps: &[S], refs: &[Vec<S>]) -> [f64; 4] {
    const N: usize = 4;
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let mut guess = [0f64; N];
    let mut correct = [0f64; N];
    let (mut testlen, mut reflen) = (0f64, 0f64);
    for (h, rs) in hyps.iter().zip(refs) {
        let hw: Vec<&str> = py_split(h.as_ref()).collect();
        let mut maxref: HashMap<&[&str], usize> = HashMap::new();
        let mut lens = Vec::with_capacity(rs.len());
        let ref_words: Vec<Vec<&str>> = rs.iter().map(|r| py_split(r.as_ref()).collect()).collect();
        for rw in &ref_words {
            lens.push(rw.len());
            let mut c: HashMap<&[&str], usize> = HashMap::new();
            for k in 1..=N {
                for g in rw.windows(k) {
                    *c.entry(g).or_default() += 1;
                }
            }
            for (g, n) in c {
                let e = maxref.entry(g).or_default();
                *e = (*e).max(n);
            }
        }
        let tl = hw.len();
        // "closest": the reference length nearest the hypothesis, the shorter one on a tie.
        if let Some(&rl) = lens
            .iter()
            .min_by_key(|&&l| ((l as i64 - tl as i64).abs(), l))
        {
            reflen += rl as f64;
        }
        testlen += tl as f64;
        for k in 1..=N {
            guess[k - 1] += tl.saturating_sub(k - 1) as f64;
            let mut c: HashMap<&[&str], usize> = HashMap::new();
            for g in hw.windows(k) {
                *c.entry(g).or_default() += 1;
            }
            for (g, n) in c {
                correct[k - 1] += n.min(*maxref.get(g).unwrap_or(&0)) as f64;
            }
        }
    }
    let mut out = [0f64; N];
    let mut prod = 1.0;
    for k in 0..N {
        prod *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = prod.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (testlen + TINY) / (reflen + SMALL);
    if ratio < 1.0 {
        for b in &mut out {
            *b *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}
