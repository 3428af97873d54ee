//! Corpus- and sentence-level BLEU, computed exactly as sacreBLEU 2.x does: tokenise, clip
//! n-gram counts against the maximum count over all references, closest reference length
//! (ties to the shorter), brevity penalty, smoothing, and the same floor for log 0.

use std::collections::HashMap;

use crate::{py_split, Tokenizer, SACREBLEU_VERSION};

/// Smoothing of zero n-gram precisions (Chen & Cherry, 2014).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smoothing {
    /// No smoothing.
    None,
    /// Method 1: a zero count becomes `value` (default 0.1).
    Floor(f64),
    /// Method 2: add `value` (default 1) to counts and totals of orders above 1.
    AddK(f64),
    /// Method 3, NIST's geometric smoothing (sacreBLEU's default).
    Exp,
}

impl Smoothing {
    pub fn parse(method: &str, value: Option<f64>) -> Option<Self> {
        Some(match method {
            "none" => Self::None,
            "floor" => Self::Floor(value.unwrap_or(0.1)),
            "add-k" => Self::AddK(value.unwrap_or(1.0)),
            "exp" => Self::Exp,
            _ => return None,
        })
    }

    fn signature(self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Exp => "exp".into(),
            Self::Floor(v) => format!("floor[{v:.2}]"),
            Self::AddK(v) => format!("add-k[{v:.2}]"),
        }
    }
}

/// BLEU settings; `Bleu::default()` is sacreBLEU's default.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    pub lowercase: bool,
    pub tokenizer: Tokenizer,
    pub smoothing: Smoothing,
    pub max_order: usize,
    /// Stop at the highest order with matches (sacreBLEU's sentence-level default).
    pub effective_order: bool,
}

impl Default for Bleu {
    fn default() -> Self {
        Self {
            lowercase: false,
            tokenizer: Tokenizer::Thirteen,
            smoothing: Smoothing::Exp,
            max_order: 4,
            effective_order: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    pub score: f64,
    pub counts: Vec<f64>,
    pub totals: Vec<f64>,
    /// Precisions in percent, per order.
    pub precisions: Vec<f64>,
    pub bp: f64,
    pub sys_len: usize,
    pub ref_len: usize,
    pub signature: String,
}

impl std::fmt::Display for BleuScore {
    /// `BLEU = 34.12 65.4/41.2/27.9/19.3 (BP = 1.000 ratio = 1.012 hyp_len = 12345 ref_len = 12200)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        write!(
            f,
            "BLEU = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p.join("/"),
            self.bp,
            self.sys_len as f64 / self.ref_len.max(1) as f64,
            self.sys_len,
            self.ref_len
        )
    }
}

/// Sufficient statistics of one segment: hyp length, closest ref length, matches and totals.
struct Stats {
    hyp_len: usize,
    ref_len: usize,
    correct: Vec<usize>,
    total: Vec<usize>,
}

fn ngrams<'a>(tokens: &'a [&'a str], max: usize) -> HashMap<&'a [&'a str], usize> {
    let mut out = HashMap::new();
    for n in 1..=max {
        for w in tokens.windows(n) {
            *out.entry(w).or_insert(0) += 1;
        }
    }
    out
}

impl Bleu {
    fn preprocess(&self, s: &str) -> String {
        let s = if self.lowercase {
            s.to_lowercase()
        } else {
            s.to_string()
        };
        self.tokenizer.tokenize(s.trim_end())
    }

    fn segment(&self, hyp: &str, refs: &[&str]) -> Stats {
        let refs: Vec<String> = refs.iter().map(|r| self.preprocess(r)).collect();
        let ref_toks: Vec<Vec<&str>> = refs.iter().map(|r| py_split(r).collect()).collect();
        let mut ref_ngrams: HashMap<&[&str], usize> = HashMap::new();
        for toks in &ref_toks {
            for (g, c) in ngrams(toks, self.max_order) {
                let e = ref_ngrams.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let hyp = self.preprocess(hyp);
        let hyp_toks: Vec<&str> = py_split(&hyp).collect();
        let hyp_len = hyp_toks.len();
        // Closest reference length, ties to the shorter one.
        let mut closest: Option<(usize, usize)> = None;
        for t in &ref_toks {
            let diff = hyp_len.abs_diff(t.len());
            closest = match closest {
                Some((d, l)) if d < diff || (d == diff && l <= t.len()) => Some((d, l)),
                _ => Some((diff, t.len())),
            };
        }
        let mut correct = vec![0; self.max_order];
        let mut total = vec![0; self.max_order];
        for (g, c) in ngrams(&hyp_toks, self.max_order) {
            total[g.len() - 1] += c;
            if let Some(r) = ref_ngrams.get(g) {
                correct[g.len() - 1] += c.min(*r);
            }
        }
        Stats {
            hyp_len,
            ref_len: closest.map(|c| c.1).unwrap_or(0),
            correct,
            total,
        }
    }

    /// Corpus BLEU: `refs[i]` holds the references of hypothesis `i` (any number each).
    pub fn corpus<S: AsRef<str>>(&self, hyps: &[S], refs: &[Vec<S>]) -> BleuScore {
        let mut sys_len = 0;
        let mut ref_len = 0;
        let mut correct = vec![0usize; self.max_order];
        let mut total = vec![0usize; self.max_order];
        for (h, r) in hyps.iter().zip(refs) {
            let r: Vec<&str> = r.iter().map(|x| x.as_ref()).collect();
            let s = self.segment(h.as_ref(), &r);
            sys_len += s.hyp_len;
            ref_len += s.ref_len;
            for n in 0..self.max_order {
                correct[n] += s.correct[n];
                total[n] += s.total[n];
            }
        }
        self.compute(correct, total, sys_len, ref_len, crate::nrefs_of(refs))
    }

    /// Sentence BLEU (use `effective_order: true`, as sacreBLEU recommends).
    pub fn sentence(&self, hyp: &str, refs: &[&str]) -> BleuScore {
        let s = self.segment(hyp, refs);
        self.compute(s.correct, s.total, s.hyp_len, s.ref_len, refs.len() as i64)
    }

    pub fn signature(&self, nrefs: i64) -> String {
        let nrefs = crate::nrefs_label(nrefs);
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{}|smooth:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.signature(),
            self.smoothing.signature()
        )
    }

    fn compute(
        &self,
        correct: Vec<usize>,
        total: Vec<usize>,
        sys_len: usize,
        ref_len: usize,
        nrefs: i64,
    ) -> BleuScore {
        let mut correct: Vec<f64> = correct.into_iter().map(|c| c as f64).collect();
        let mut total: Vec<f64> = total.into_iter().map(|c| c as f64).collect();
        let bp = if sys_len < ref_len {
            if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = vec![0.0; self.max_order];
        let signature = self.signature(nrefs);
        let done =
            |score: f64, correct: Vec<f64>, total: Vec<f64>, precisions: Vec<f64>| BleuScore {
                score,
                counts: correct,
                totals: total,
                precisions,
                bp,
                sys_len,
                ref_len,
                signature: signature.clone(),
            };
        if correct.iter().all(|&c| c == 0.0) {
            return done(0.0, correct, total, precisions);
        }
        let mut smooth_mteval = 1.0;
        let mut eff_order = self.max_order;
        for n in 1..=self.max_order {
            if let Smoothing::AddK(k) = self.smoothing {
                if n > 1 {
                    correct[n - 1] += k;
                    total[n - 1] += k;
                }
            }
            if total[n - 1] == 0.0 {
                break;
            }
            if self.effective_order {
                eff_order = n;
            }
            if correct[n - 1] == 0.0 {
                match self.smoothing {
                    Smoothing::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
                    }
                    Smoothing::Floor(v) => precisions[n - 1] = 100.0 * v / total[n - 1],
                    _ => {}
                }
            } else {
                precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
            }
        }
        let my_log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let score = bp
            * (precisions[..eff_order]
                .iter()
                .map(|&p| my_log(p))
                .sum::<f64>()
                / eff_order as f64)
                .exp();
        done(score, correct, total, precisions)
    }
}
