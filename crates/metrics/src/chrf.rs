//! chrF and chrF++ exactly as sacreBLEU 2.x computes them (character order 6, word order 0 or 2,
//! β = 2, whitespace removed, the best-scoring reference per segment, effective-order averaging).

use std::collections::HashMap;

use crate::{py_split, SACREBLEU_VERSION};

#[derive(Clone, Debug, PartialEq)]
pub struct Chrf {
    pub char_order: usize,
    /// 0 for chrF, 2 for chrF++.
    pub word_order: usize,
    pub beta: f64,
    pub lowercase: bool,
    /// Keep whitespace inside character n-grams.
    pub whitespace: bool,
    /// chrF++.py-style eps smoothing instead of sacreBLEU's effective order.
    pub eps_smoothing: bool,
}

impl Default for Chrf {
    fn default() -> Self {
        Self {
            char_order: 6,
            word_order: 0,
            beta: 2.0,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl Chrf {
    /// chrF++ (word order 2).
    pub fn plus_plus() -> Self {
        Self {
            word_order: 2,
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChrfScore {
    pub score: f64,
    pub signature: String,
}

impl std::fmt::Display for ChrfScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}", self.score)
    }
}

const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

type Counts = HashMap<String, usize>;

fn char_ngrams(line: &str, max: usize, whitespace: bool) -> Vec<Counts> {
    let line: String = if whitespace {
        line.to_string()
    } else {
        py_split(line).collect()
    };
    let chars: Vec<char> = line.chars().collect();
    (1..=max)
        .map(|n| {
            let mut c = Counts::new();
            for w in chars.windows(n) {
                *c.entry(w.iter().collect()).or_insert(0) += 1;
            }
            c
        })
        .collect()
}

/// sacreBLEU's `_remove_punctuation`: one leading or trailing punctuation mark is split off.
fn words(sent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let chars: Vec<char> = w.chars().collect();
        if chars.len() == 1 {
            out.push(w.to_string());
        } else if PUNCTS.contains(chars[chars.len() - 1]) {
            out.push(chars[..chars.len() - 1].iter().collect());
            out.push(chars[chars.len() - 1].to_string());
        } else if PUNCTS.contains(chars[0]) {
            out.push(chars[0].to_string());
            out.push(chars[1..].iter().collect());
        } else {
            out.push(w.to_string());
        }
    }
    out
}

fn word_ngrams(tokens: &[String], n: usize) -> Counts {
    let mut c = Counts::new();
    for w in tokens.windows(n) {
        *c.entry(w.join(" ")).or_insert(0) += 1;
    }
    c
}

impl Chrf {
    fn order(&self) -> usize {
        self.char_order + self.word_order
    }

    fn all_ngrams(&self, s: &str) -> Vec<Counts> {
        let mut g = char_ngrams(s, self.char_order, self.whitespace);
        if self.word_order > 0 {
            let w = words(s);
            g.extend((1..=self.word_order).map(|n| word_ngrams(&w, n)));
        }
        g
    }

    fn f_score(&self, stats: &[f64]) -> f64 {
        let eps = 1e-16;
        let factor = self.beta * self.beta;
        let (mut score, mut avg_p, mut avg_r, mut eff) = (0.0, 0.0, 0.0, 0usize);
        for i in 0..self.order() {
            let (h, r, m) = (stats[3 * i], stats[3 * i + 1], stats[3 * i + 2]);
            let p = if h > 0.0 { m / h } else { eps };
            let rc = if r > 0.0 { m / r } else { eps };
            let denom = factor * p + rc;
            score += if denom > 0.0 {
                (1.0 + factor) * p * rc / denom
            } else {
                eps
            };
            if h > 0.0 && r > 0.0 {
                avg_p += p;
                avg_r += rc;
                eff += 1;
            }
        }
        if self.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if eff == 0 {
            return 0.0;
        }
        avg_p /= eff as f64;
        avg_r /= eff as f64;
        if avg_p + avg_r > 0.0 {
            100.0 * (1.0 + factor) * avg_p * avg_r / (factor * avg_p + avg_r)
        } else {
            0.0
        }
    }

    fn segment(&self, hyp: &str, refs: &[&str]) -> Vec<f64> {
        let prep = |s: &str| {
            if self.lowercase {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let hyp_ngrams = self.all_ngrams(&prep(hyp));
        let mut best: (f64, Vec<f64>) = (-1.0, Vec::new());
        for r in refs {
            let ref_ngrams = self.all_ngrams(&prep(r));
            let mut stats = Vec::with_capacity(3 * self.order());
            for (h, r) in hyp_ngrams.iter().zip(&ref_ngrams) {
                let mut matches = 0;
                let mut hyp_count = 0;
                for (g, &c) in h {
                    hyp_count += c;
                    if let Some(&rc) = r.get(g) {
                        matches += c.min(rc);
                    }
                }
                // sacreBLEU does not count hypothesis n-grams when the reference has none.
                stats.push(if r.is_empty() { 0.0 } else { hyp_count as f64 });
                stats.push(r.values().sum::<usize>() as f64);
                stats.push(matches as f64);
            }
            let f = self.f_score(&stats);
            if f > best.0 {
                best = (f, stats);
            }
        }
        best.1
    }

    /// Corpus chrF: statistics are summed over segments, then scored once.
    pub fn corpus<S: AsRef<str>>(&self, hyps: &[S], refs: &[Vec<S>]) -> ChrfScore {
        let mut sum = vec![0.0; 3 * self.order()];
        for (h, r) in hyps.iter().zip(refs) {
            let r: Vec<&str> = r.iter().map(|x| x.as_ref()).collect();
            for (acc, v) in sum.iter_mut().zip(self.segment(h.as_ref(), &r)) {
                *acc += v;
            }
        }
        ChrfScore {
            score: self.f_score(&sum),
            signature: self.signature(crate::nrefs_of(refs)),
        }
    }

    pub fn sentence(&self, hyp: &str, refs: &[&str]) -> ChrfScore {
        let stats = self.segment(hyp, refs);
        let stats = if stats.is_empty() {
            vec![0.0; 3 * self.order()]
        } else {
            stats
        };
        ChrfScore {
            score: self.f_score(&stats),
            signature: self.signature(refs.len() as i64),
        }
    }

    pub fn signature(&self, nrefs: i64) -> String {
        let nrefs = crate::nrefs_label(nrefs);
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.eps_smoothing { "no" } else { "yes" },
            self.char_order,
            self.word_order,
            if self.whitespace { "yes" } else { "no" }
        )
    }
}
