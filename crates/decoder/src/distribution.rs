//! The next-token distribution after each of the sampler's filters, for showing what temperature,
//! top-k and top-p do.
//!
//! Sampling itself stays in candle-transformers' `LogitsProcessor`, which hides the distribution
//! it draws from. This module repeats its arithmetic step by step beside it — the same f32
//! softmax, the same partial sort for top-k, the same cumulative cut for top-p (which, after
//! top-k, compares p with the kept tokens' *unnormalised* mass, as candle does) — so that the
//! last stage is exactly the distribution a seeded sample is drawn from. A test holds the two
//! together: every sampled token lies in the last stage's support, at its frequency.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_transformers::generation::Sampling;

use crate::search::{constrained, forbidden_bias, sampling, SpecialTokens, Stepper};
use crate::DecodingOptions;

/// The probabilities of every token of the vocabulary, one vector per stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stages {
    /// The model's logits, with the forbidden tokens at -inf.
    pub logits: Vec<f32>,
    /// softmax(logits): the model's own distribution.
    pub p: Vec<f32>,
    /// softmax(logits / temperature) (one-hot on the argmax when temperature rounds to 0).
    pub temperature: Vec<f32>,
    /// After keeping the `top_k` most likely tokens, renormalised.
    pub top_k: Vec<f32>,
    /// After top-p, renormalised: what the next token is drawn from.
    pub top_p: Vec<f32>,
}

/// One token's probability through the stages.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub token: u32,
    pub logit: f32,
    pub p: f32,
    pub p_temperature: f32,
    pub p_top_k: f32,
    pub p_top_p: f32,
}

impl Stages {
    /// The `n` most likely tokens under the model's own distribution, most likely first (ties by
    /// token id), so that their order stays put as the filters change.
    pub fn top(&self, n: usize) -> Vec<Candidate> {
        let mut ids: Vec<usize> = (0..self.p.len()).collect();
        ids.sort_by(|&a, &b| self.p[b].total_cmp(&self.p[a]).then(a.cmp(&b)));
        ids.truncate(n);
        ids.into_iter()
            .map(|i| Candidate {
                token: i as u32,
                logit: self.logits[i],
                p: self.p[i],
                p_temperature: self.temperature[i],
                p_top_k: self.top_k[i],
                p_top_p: self.top_p[i],
            })
            .collect()
    }
}

/// The stages of one row of logits `(V)` under the options' temperature, top-k and top-p.
pub fn stages(logits: &Tensor, opts: &DecodingOptions) -> Result<Stages> {
    let logits = logits.to_dtype(DType::F32)?;
    let softmax = |t: f64| -> Result<Vec<f32>> {
        candle_nn::ops::softmax_last_dim(&(&logits / t)?)?.to_vec1()
    };
    let p = softmax(1.0)?;
    let (temperature, top_k, top_p) = match sampling(opts) {
        Sampling::ArgMax => {
            let mut one = vec![0f32; p.len()];
            one[logits.argmax(D::Minus1)?.to_scalar::<u32>()? as usize] = 1.0;
            (one.clone(), one.clone(), one)
        }
        Sampling::All { temperature } | Sampling::GumbelSoftmax { temperature } => {
            let pt = softmax(temperature)?;
            (pt.clone(), pt.clone(), pt)
        }
        Sampling::TopK { k, temperature } => {
            let pt = softmax(temperature)?;
            let tk = normalised(&keep(&pt, &top_k_ids(&pt, k)));
            (pt, tk.clone(), tk)
        }
        Sampling::TopP { p, temperature } => {
            let pt = softmax(temperature)?;
            let all: Vec<usize> = (0..pt.len()).collect();
            let tp = if p <= 0.0 || p >= 1.0 {
                pt.clone()
            } else {
                normalised(&keep(&pt, &top_p_ids(&pt, &all, p as f32)))
            };
            (pt.clone(), pt, tp)
        }
        Sampling::TopKThenTopP { k, p, temperature } => {
            let pt = softmax(temperature)?;
            let kept = top_k_ids(&pt, k);
            let tk = normalised(&keep(&pt, &kept));
            let mass: f32 = kept.iter().map(|&i| pt[i]).sum();
            let p = p as f32;
            // candle: with k below the vocabulary, a p at or above the kept mass keeps all k.
            let tp = if k < pt.len() && (p <= 0.0 || p >= mass) {
                tk.clone()
            } else {
                normalised(&keep(&pt, &top_p_ids(&pt, &kept, p)))
            };
            (pt, tk, tp)
        }
    };
    Ok(Stages {
        logits: logits.to_vec1()?,
        p,
        temperature,
        top_k,
        top_p,
    })
}

/// The ids top-k keeps: all when `k` reaches the vocabulary, else the k of candle's partial sort.
fn top_k_ids(prs: &[f32], k: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..prs.len()).collect();
    if k >= prs.len() {
        return ids;
    }
    let (first, _, _) = ids.select_nth_unstable_by(k, |&i, &j| prs[j].total_cmp(&prs[i]));
    first.to_vec()
}

/// The ids top-p keeps among `among` (in that order, as candle's sort sees them): most likely
/// first, while the mass before each token is below `p`.
fn top_p_ids(prs: &[f32], among: &[usize], p: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..among.len()).collect();
    order.sort_by(|&i, &j| prs[among[j]].total_cmp(&prs[among[i]]));
    let mut cumsum = 0f32;
    let mut out = Vec::new();
    for i in order {
        if cumsum >= p {
            break;
        }
        cumsum += prs[among[i]];
        out.push(among[i]);
    }
    out
}

fn keep(prs: &[f32], ids: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; prs.len()];
    for &i in ids {
        out[i] = prs[i];
    }
    out
}

fn normalised(prs: &[f32]) -> Vec<f32> {
    let sum: f32 = prs.iter().sum();
    prs.iter().map(|&x| x / sum).collect()
}

/// The next token's stages for each row of a search about to start from `state` and `prev`:
/// the model's logits with the same forbidden tokens and bans (eos before `min_length`) as the
/// search's first step.
pub fn next_token<S: Stepper>(
    model: &S,
    state: &S::State,
    prev: &[u32],
    sp: SpecialTokens,
    opts: &DecodingOptions,
    dev: &Device,
) -> Result<Vec<Stages>> {
    let prev_t = Tensor::from_slice(prev, prev.len(), dev)?;
    let (logits, _) = model.step(&prev_t, state)?;
    let base = forbidden_bias(model.vocab_size(), sp, opts.forbid_unk, dev)?.unsqueeze(0)?;
    let empty: Vec<&[u32]> = vec![&[]; prev.len()];
    let logits = constrained(&logits, &base, &empty, sp, opts)?;
    (0..prev.len())
        .map(|r| stages(&logits.get(r)?, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use candle_transformers::generation::LogitsProcessor;

    fn opts(temperature: f64, top_k: usize, top_p: f64) -> DecodingOptions {
        DecodingOptions {
            strategy: Strategy::Sample,
            temperature,
            top_k,
            top_p,
            ..Default::default()
        }
    }

    /// Logits with ties and a forbidden token, as real ones have.
    fn logits() -> Tensor {
        let v = [
            2.0f32,
            1.5,
            1.5,
            0.3,
            -0.2,
            f32::NEG_INFINITY,
            0.9,
            -1.0,
            0.3,
            1.1,
        ];
        Tensor::from_slice(&v, v.len(), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_last_stage_is_what_candle_samples_from() {
        let cases = [
            opts(1.0, 0, 1.0),
            opts(0.5, 0, 1.0),
            opts(2.0, 3, 1.0),
            opts(1.0, 0, 0.6),
            opts(0.7, 4, 0.5),
            opts(1.3, 5, 0.95),
            opts(1.0, 20, 0.4),
            opts(1.0, 2, 0.999),
        ];
        let x = logits();
        for o in &cases {
            let s = stages(&x, o).unwrap();
            let n = 20_000;
            let mut counts = vec![0usize; s.p.len()];
            let mut proc = LogitsProcessor::from_sampling(7, sampling(o));
            for _ in 0..n {
                counts[proc.sample(&x).unwrap() as usize] += 1;
            }
            for (t, &c) in counts.iter().enumerate() {
                let want = s.top_p[t] as f64;
                let got = c as f64 / n as f64;
                assert!(
                    c == 0 || want > 0.0,
                    "{o:?}: token {t} sampled outside the shown support"
                );
                // 20 000 draws: a binomial's standard deviation is at most 0.0036.
                assert!(
                    (got - want).abs() < 0.015,
                    "{o:?}: token {t}: sampled {got:.4}, shown {want:.4}"
                );
            }
            let sum: f32 = s.top_p.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{o:?}: sums to {sum}");
        }
    }

    #[test]
    fn each_filter_does_what_it_says() {
        let x = logits();
        let s = stages(&x, &opts(1.0, 3, 1.0)).unwrap();
        assert_eq!(s.p, s.temperature);
        assert_eq!(s.top_k.iter().filter(|&&p| p > 0.0).count(), 3);
        assert_eq!(s.top_k, s.top_p);
        // Temperature sharpens below 1 and flattens above, keeping the order.
        let cold = stages(&x, &opts(0.5, 0, 1.0)).unwrap();
        let hot = stages(&x, &opts(2.0, 0, 1.0)).unwrap();
        assert!(cold.temperature[0] > s.p[0] && hot.temperature[0] < s.p[0]);
        assert_eq!(
            cold.temperature[5], 0.0,
            "a forbidden token stays impossible"
        );
        // Top-p 0.5: the 2.0 logit holds 0.29 of the mass, the first 1.5 brings it to 0.46,
        // the second (kept: the mass before it is under p) past 0.5.
        let tp = stages(&x, &opts(1.0, 0, 0.5)).unwrap();
        assert_eq!(tp.top_p.iter().filter(|&&p| p > 0.0).count(), 3);
        // Temperature 0 is greedy: all mass on the argmax.
        let g = stages(&x, &opts(0.0, 0, 1.0)).unwrap();
        assert_eq!(g.top_p[0], 1.0);
        let top = s.top(3);
        assert_eq!(
            top.iter().map(|c| c.token).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}
