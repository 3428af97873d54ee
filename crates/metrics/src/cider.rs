//! CIDEr-D as pycocoevalcap (coco-caption) computes it: n = 1..4, tf-idf vectors with document
//! frequencies over the reference sets, clipped cosine similarity, a Gaussian length penalty
//! (σ = 6), the mean over orders and references, ×10.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::py_split;

// Ordered maps: the norms and dot products sum over n-grams in a fixed order, so one input gives
// bit-identical scores in every process (a HashMap's per-process seed changed the last digit).
type Counts<'a> = BTreeMap<&'a [&'a str], f64>;

fn precook<'a>(words: &'a [&'a str], n: usize) -> Counts<'a> {
    let mut c = Counts::new();
    for k in 1..=n {
        for w in words.windows(k) {
            *c.entry(w).or_insert(0.0) += 1.0;
        }
    }
    c
}

/// Lowercases and strips punctuation the way captioning evaluation tokenises captions
/// (an approximation of the Stanford PTB tokenizer pycocoevalcap calls through Java: punctuation
/// marks are removed, words are split on whitespace).
pub fn caption_tokenize(s: &str) -> String {
    let cleaned: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    py_split(&cleaned).collect::<Vec<_>>().join(" ")
}

/// Corpus CIDEr-D and the per-item scores. `hyps[i]` is one tokenised caption, `refs[i]` its
/// tokenised references (space-separated words, as pycocoevalcap receives them after its
/// tokenizer).
pub fn cider_d<S: AsRef<str>>(hyps: &[S], refs: &[Vec<S>]) -> (f64, Vec<f64>) {
    const N: usize = 4;
    const SIGMA: f64 = 6.0;
    let hyp_words: Vec<Vec<&str>> = hyps
        .iter()
        .map(|h| py_split(h.as_ref()).collect())
        .collect();
    let ref_words: Vec<Vec<Vec<&str>>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| py_split(r.as_ref()).collect()).collect())
        .collect();
    let ctest: Vec<Counts> = hyp_words.iter().map(|w| precook(w, N)).collect();
    let crefs: Vec<Vec<Counts>> = ref_words
        .iter()
        .map(|rs| rs.iter().map(|w| precook(w, N)).collect())
        .collect();
    let mut df: HashMap<&[&str], f64> = HashMap::new();
    for rs in &crefs {
        let set: HashSet<&[&str]> = rs.iter().flat_map(|r| r.keys().copied()).collect();
        for g in set {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let ref_len = (crefs.len() as f64).ln();
    let mut scores = Vec::with_capacity(ctest.len());
    for (test, rs) in ctest.iter().zip(&crefs) {
        let (vh, nh, lh) = tf_idf(test, &df, ref_len);
        let mut total = [0.0f64; N];
        for r in rs {
            let (vr, nr, lr) = tf_idf(r, &df, ref_len);
            let delta = lh - lr;
            for n in 0..N {
                let mut val = 0.0;
                for (g, &h) in &vh[n] {
                    let rv = vr[n].get(g).copied().unwrap_or(0.0);
                    val += h.min(rv) * rv;
                }
                if nh[n] != 0.0 && nr[n] != 0.0 {
                    val /= nh[n] * nr[n];
                }
                val *= (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                total[n] += val;
            }
        }
        let mean = total.iter().sum::<f64>() / N as f64;
        scores.push(if rs.is_empty() {
            0.0
        } else {
            mean / rs.len() as f64 * 10.0
        });
    }
    let corpus = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    (corpus, scores)
}

type Vectors<'a> = (Vec<BTreeMap<&'a [&'a str], f64>>, [f64; 4], f64);

/// tf-idf vectors per order, their norms, and the "length" pycocoevalcap uses: the number of
/// bigrams (its `if n == 1` counts order index 1), kept as it is to give the same numbers.
fn tf_idf<'a>(c: &Counts<'a>, df: &HashMap<&[&str], f64>, ref_len: f64) -> Vectors<'a> {
    let mut vec: Vec<BTreeMap<&'a [&'a str], f64>> = vec![BTreeMap::new(); 4];
    let mut norm = [0.0f64; 4];
    let mut length = 0.0;
    for (&g, &tf) in c {
        let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
        let n = g.len() - 1;
        let v = tf * (ref_len - d);
        vec[n].insert(g, v);
        norm[n] += v * v;
        if n == 1 {
            length += tf;
        }
    }
    (vec, norm.map(f64::sqrt), length)
}
