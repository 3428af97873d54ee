//! Search strategies: greedy, sampling (temperature, top-k, top-p via candle-transformers'
//! `LogitsProcessor`) and batched beam search. They drive any [`Stepper`] — the [`Decoder`] through
//! [`DecoderStepper`], or a hand-built model in tests — and know nothing else about the model.

use candle_core::{Device, Result, Tensor, D};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use seq2seq_nn::Ctx;

use crate::{Decoder, DecoderState, DecodingOptions, EncoderOutput, PreparedMemory, Strategy};

/// The special token ids a search must know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

/// A model that maps previous tokens and a state to next-token logits.
pub trait Stepper {
    type State;
    /// `prev` (B) token ids → logits (B, V) and the next state.
    fn step(&self, prev: &Tensor, state: &Self::State) -> Result<(Tensor, Self::State)>;
    /// Keeps (or repeats) the given batch rows of a state.
    fn select(&self, state: &Self::State, rows: &Tensor) -> Result<Self::State>;
    fn vocab_size(&self) -> usize;
    /// The attention weights `(B, S)` of the step that produced `state`, for a model that
    /// attends over a memory of `S` positions; `None` for one that does not.
    fn attention(&self, _state: &Self::State) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The decoder's state during search: its recurrent state and the prepared memory.
#[derive(Clone, Debug)]
pub struct SearchState {
    pub state: DecoderState,
    pub mem: PreparedMemory,
    /// The last step's attention weights `(B, S)` (none before the first step).
    pub attention: Option<Tensor>,
}

/// Adapts a [`Decoder`] to [`Stepper`] (evaluation mode).
pub struct DecoderStepper<'a>(pub &'a Decoder);

impl DecoderStepper<'_> {
    /// The start of a search from an encoder's output: bridge state, prepared memory, bos.
    pub fn start(&self, enc: &EncoderOutput, batch: usize, dev: &Device) -> Result<SearchState> {
        Ok(SearchState {
            state: self.0.start(enc, batch, dev)?,
            mem: self.0.prepare_search(enc)?,
            attention: None,
        })
    }
}

impl Stepper for DecoderStepper<'_> {
    type State = SearchState;

    fn step(&self, prev: &Tensor, s: &SearchState) -> Result<(Tensor, SearchState)> {
        let (logits, state, attention) = self.0.step(prev, &s.state, &s.mem, &mut Ctx::eval())?;
        Ok((
            logits,
            SearchState {
                state,
                mem: s.mem.clone(),
                attention,
            },
        ))
    }

    fn select(&self, s: &SearchState, rows: &Tensor) -> Result<SearchState> {
        Ok(SearchState {
            state: s.state.index_select(rows)?,
            mem: s.mem.index_select(rows)?,
            attention: s
                .attention
                .as_ref()
                .map(|a| a.index_select(rows, 0))
                .transpose()?,
        })
    }

    fn vocab_size(&self) -> usize {
        self.0.config().vocab_size
    }

    fn attention(&self, s: &SearchState) -> Result<Option<Tensor>> {
        Ok(s.attention.clone())
    }
}

/// One output of a search.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without bos and eos.
    pub tokens: Vec<u32>,
    /// Sum of the model's log-probabilities of the tokens (and of eos when it ended with one).
    pub log_prob: f64,
    /// The ranking score: `log_prob` normalised by the GNMT length penalty (beam search), else
    /// `log_prob`.
    pub score: f64,
    /// With `DecodingOptions::attention`: the attention over the memory at each output step, one
    /// row per token (and one for eos when the hypothesis ended with it); else empty.
    pub attention: Vec<Vec<f32>>,
}

/// GNMT length penalty `((5 + len) / 6)^α`.
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// A (V) bias that is 0 for allowed tokens and -inf for the ones a search must never emit: pad and
/// bos always, unk when `forbid_unk`. Added to the logits it makes these tokens impossible rather
/// than unlikely, for every strategy.
pub fn forbidden_bias(
    vocab: usize,
    sp: SpecialTokens,
    forbid_unk: bool,
    dev: &Device,
) -> Result<Tensor> {
    let mut bias = vec![0f32; vocab];
    bias[sp.pad as usize] = f32::NEG_INFINITY;
    bias[sp.bos as usize] = f32::NEG_INFINITY;
    if forbid_unk {
        bias[sp.unk as usize] = f32::NEG_INFINITY;
    }
    Tensor::from_vec(bias, vocab, dev)
}

/// Tokens banned for one hypothesis: eos before `min_length`, and every token that would repeat an
/// n-gram of size `no_repeat_ngram`.
fn bans(tokens: &[u32], sp: SpecialTokens, opts: &DecodingOptions) -> Vec<u32> {
    let mut out = Vec::new();
    if tokens.len() < opts.min_length {
        out.push(sp.eos);
    }
    let n = opts.no_repeat_ngram;
    if n > 0 && tokens.len() >= n {
        let prefix = &tokens[tokens.len() + 1 - n..];
        for i in 0..=tokens.len() - n {
            if tokens[i..i + n - 1] == *prefix {
                out.push(tokens[i + n - 1]);
            }
        }
    }
    out
}

/// Logits plus the forbidden-token bias and the per-row bans.
pub(crate) fn constrained(
    logits: &Tensor,
    base: &Tensor,
    hyps: &[&[u32]],
    sp: SpecialTokens,
    opts: &DecodingOptions,
) -> Result<Tensor> {
    let logits = logits.broadcast_add(base)?;
    if opts.min_length == 0 && opts.no_repeat_ngram == 0 {
        return Ok(logits);
    }
    let v = logits.dim(1)?;
    let mut extra = vec![0f32; hyps.len() * v];
    let mut any = false;
    for (r, h) in hyps.iter().enumerate() {
        for t in bans(h, sp, opts) {
            extra[r * v + t as usize] = f32::NEG_INFINITY;
            any = true;
        }
    }
    if !any {
        return Ok(logits);
    }
    let extra = Tensor::from_vec(extra, (hyps.len(), v), logits.device())?;
    logits + extra
}

/// Runs the configured strategy from `state` with `prev` (one token per row, usually bos) and
/// returns, per row, one hypothesis (greedy, sampling) or the n best (beam search).
///
/// Row `i` samples with seed `seeds[i]`: a request's results do not depend on how it was batched.
pub fn search<S: Stepper>(
    model: &S,
    state: S::State,
    prev: &[u32],
    sp: SpecialTokens,
    opts: &DecodingOptions,
    seeds: &[u64],
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    match opts.strategy {
        Strategy::Beam => beam(model, state, prev, sp, opts, dev),
        Strategy::Greedy => token_by_token(model, state, prev, sp, opts, None, dev),
        Strategy::Sample => token_by_token(model, state, prev, sp, opts, Some(seeds), dev),
    }
}

/// The candle sampler's settings for the options (also what [`crate::distribution`] mirrors).
pub(crate) fn sampling(opts: &DecodingOptions) -> Sampling {
    // Above 1e30 every distribution is already uniform; beyond f32's range, 1/t would round to 0
    // and turn the -inf of pad and bos into NaN.
    let t = opts.temperature.min(1e30);
    if t < 1e-7 {
        return Sampling::ArgMax;
    }
    // candle compares p as f32: a p that rounds to 0 there would keep no token at all.
    let p = opts.top_p.max(f64::from(f32::MIN_POSITIVE));
    match (opts.top_k, opts.top_p < 1.0) {
        (0, false) => Sampling::All { temperature: t },
        (k, false) => Sampling::TopK { k, temperature: t },
        (0, true) => Sampling::TopP { p, temperature: t },
        (k, true) => Sampling::TopKThenTopP {
            k,
            p,
            temperature: t,
        },
    }
}

/// The attention rows of a step's state, when the options ask for them and the model has them.
fn attention_rows<S: Stepper>(
    model: &S,
    state: &S::State,
    opts: &DecodingOptions,
) -> Result<Option<Vec<Vec<f32>>>> {
    if !opts.attention {
        return Ok(None);
    }
    model
        .attention(state)?
        .map(|a| a.to_dtype(candle_core::DType::F32)?.to_vec2())
        .transpose()
}

/// Greedy (`seeds` = None) or sampling: one token per row per step; rows that emit eos leave the
/// batch so later steps only compute the rows still running.
fn token_by_token<S: Stepper>(
    model: &S,
    mut state: S::State,
    prev: &[u32],
    sp: SpecialTokens,
    opts: &DecodingOptions,
    seeds: Option<&[u64]>,
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    let batch = prev.len();
    let base = forbidden_bias(model.vocab_size(), sp, opts.forbid_unk, dev)?.unsqueeze(0)?;
    let mut procs: Vec<LogitsProcessor> = match seeds {
        Some(s) => (0..batch)
            .map(|i| {
                LogitsProcessor::from_sampling(
                    s.get(i).copied().unwrap_or(opts.seed + i as u64),
                    sampling(opts),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let mut out: Vec<Hypothesis> = vec![
        Hypothesis {
            tokens: Vec::new(),
            log_prob: 0.0,
            score: 0.0,
            attention: Vec::new(),
        };
        batch
    ];
    let mut active: Vec<usize> = (0..batch).collect();
    let mut prev = Tensor::from_slice(prev, batch, dev)?;
    for step in 0..opts.max_length {
        let (logits, next_state) = model.step(&prev, &state)?;
        if let Some(rows) = attention_rows(model, &next_state, opts)? {
            for (r, row) in rows.into_iter().enumerate() {
                out[active[r]].attention.push(row);
            }
        }
        let hyps: Vec<&[u32]> = active.iter().map(|&i| out[i].tokens.as_slice()).collect();
        let logits = constrained(&logits, &base, &hyps, sp, opts)?;
        let next: Vec<u32> = if seeds.is_none() {
            logits.argmax(D::Minus1)?.to_vec1()?
        } else {
            let mut v = Vec::with_capacity(active.len());
            for (r, &i) in active.iter().enumerate() {
                v.push(procs[i].sample(&logits.get(r)?)?);
            }
            v
        };
        let idx = Tensor::from_slice(&next, (next.len(), 1), dev)?;
        let logp: Vec<f32> = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&idx, 1)?
            .squeeze(1)?
            .to_vec1()?;
        let mut keep = Vec::with_capacity(active.len());
        let mut listened = true;
        for (r, &tok) in next.iter().enumerate() {
            let h = &mut out[active[r]];
            h.log_prob += logp[r] as f64;
            if tok == sp.eos {
                continue;
            }
            h.tokens.push(tok);
            if let Some(hook) = &opts.on_token {
                listened &= (hook.0)(active[r], tok);
            }
            keep.push(r as u32);
        }
        if keep.is_empty() || step + 1 == opts.max_length || !listened {
            break;
        }
        if keep.len() == active.len() {
            state = next_state;
            prev = Tensor::from_vec(next, active.len(), dev)?;
        } else {
            let rows = Tensor::from_slice(&keep, keep.len(), dev)?;
            state = model.select(&next_state, &rows)?;
            prev = Tensor::from_vec(
                keep.iter().map(|&r| next[r as usize]).collect::<Vec<_>>(),
                keep.len(),
                dev,
            )?;
            active = keep.iter().map(|&r| active[r as usize]).collect();
        }
    }
    Ok(out
        .into_iter()
        .map(|mut h| {
            h.score = h.log_prob;
            vec![h]
        })
        .collect())
}

/// A partial hypothesis of beam search: its tokens and, when kept, their attention rows.
#[derive(Clone, Default)]
struct Path {
    tokens: Vec<u32>,
    attention: Vec<Vec<f32>>,
}

impl Path {
    /// This path one step on: token `t` (none for eos) read with attention `att` (if kept).
    fn extend(&self, t: Option<u32>, att: Option<&Vec<f32>>) -> Path {
        let mut p = self.clone();
        p.tokens.extend(t);
        p.attention.extend(att.cloned());
        p
    }
}

/// Batched beam search: `beam_size` rows per input; inputs whose beam is complete leave the batch.
fn beam<S: Stepper>(
    model: &S,
    state: S::State,
    prev: &[u32],
    sp: SpecialTokens,
    opts: &DecodingOptions,
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    let k = opts.beam_size;
    let batch = prev.len();
    let base = forbidden_bias(model.vocab_size(), sp, opts.forbid_unk, dev)?.unsqueeze(0)?;
    // Row r*k + j is beam j of input r; only beam 0 is alive at the start.
    let rep: Vec<u32> = (0..batch as u32)
        .flat_map(|r| std::iter::repeat_n(r, k))
        .collect();
    let mut state = model.select(&state, &Tensor::from_slice(&rep, rep.len(), dev)?)?;
    let mut prev: Vec<u32> = rep.iter().map(|&r| prev[r as usize]).collect();
    let mut scores: Vec<f64> = (0..batch * k)
        .map(|i| if i % k == 0 { 0.0 } else { f64::NEG_INFINITY })
        .collect();
    let mut paths: Vec<Path> = vec![Path::default(); batch * k];
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
    let mut active: Vec<usize> = (0..batch).collect();
    for step in 0..opts.max_length {
        let (logits, next_state) =
            model.step(&Tensor::from_slice(&prev, prev.len(), dev)?, &state)?;
        let att = attention_rows(model, &next_state, opts)?;
        let hyps: Vec<&[u32]> = paths.iter().map(|p| p.tokens.as_slice()).collect();
        let logp: Vec<Vec<f32>> =
            candle_nn::ops::log_softmax(&constrained(&logits, &base, &hyps, sp, opts)?, D::Minus1)?
                .to_vec2()?;
        let last = step + 1 == opts.max_length;
        let mut next = Next::default();
        for (a, &input) in active.iter().enumerate() {
            let mut open = Vec::with_capacity(k);
            for (rank, (s, row, t)) in best_continuations(&logp, &scores, a, k)
                .into_iter()
                .enumerate()
            {
                let att = att.as_ref().map(|a| &a[row]);
                if t == sp.eos {
                    // Like fairseq, only an eos ranked within the k best ends a hypothesis:
                    // beam size 1 is then exactly greedy.
                    if rank < k {
                        finished[input].push(finish(paths[row].extend(None, att), s, true, opts));
                    }
                } else if open.len() < k {
                    open.push((s, row, paths[row].extend(Some(t), att)));
                }
            }
            let done = finished[input].len() >= k || open.is_empty();
            if last || done {
                if !done || finished[input].is_empty() {
                    for (s, _, path) in open {
                        finished[input].push(finish(path, s, false, opts));
                    }
                }
                continue;
            }
            next.push(input, open, k);
        }
        if next.active.is_empty() {
            break;
        }
        let rows = Tensor::from_slice(&next.rows, next.rows.len(), dev)?;
        state = model.select(&next_state, &rows)?;
        prev = next
            .paths
            .iter()
            .map(|p| p.tokens[p.tokens.len() - 1])
            .collect();
        (scores, paths, active) = (next.scores, next.paths, next.active);
    }
    Ok(finished
        .into_iter()
        .map(|mut f| {
            f.sort_by(|x, y| y.score.total_cmp(&x.score));
            f.truncate(opts.n_best);
            f
        })
        .collect())
}

/// A finished hypothesis, ranked by its length-normalised score.
fn finish(p: Path, log_prob: f64, ended: bool, opts: &DecodingOptions) -> Hypothesis {
    let len = p.tokens.len() + usize::from(ended);
    Hypothesis {
        tokens: p.tokens,
        log_prob,
        score: log_prob / length_penalty(len, opts.length_penalty),
        attention: p.attention,
    }
}

/// The beams of the next step: the source row of each, its score and path, per active input.
#[derive(Default)]
struct Next {
    rows: Vec<u32>,
    scores: Vec<f64>,
    paths: Vec<Path>,
    active: Vec<usize>,
}

impl Next {
    /// Input `input` continues with `open` (at most `k` beams; padded to `k` with dead copies).
    fn push(&mut self, input: usize, mut open: Vec<(f64, usize, Path)>, k: usize) {
        while open.len() < k {
            let (_, row, path) = open[0].clone();
            open.push((f64::NEG_INFINITY, row, path));
        }
        for (s, row, path) in open {
            self.rows.push(row as u32);
            self.scores.push(s);
            self.paths.push(path);
        }
        self.active.push(input);
    }
}

/// The 2k best (score, row, token) continuations over the k beams of active input `a`, best
/// first (2k: up to k of them may end in eos and still leave k to continue).
fn best_continuations(
    logp: &[Vec<f32>],
    scores: &[f64],
    a: usize,
    k: usize,
) -> Vec<(f64, usize, u32)> {
    let mut cand: Vec<(f64, usize, u32)> = Vec::with_capacity(k * logp[0].len());
    for row in a * k..(a + 1) * k {
        if scores[row] == f64::NEG_INFINITY {
            continue;
        }
        for (t, &lp) in logp[row].iter().enumerate() {
            if lp > f32::NEG_INFINITY {
                cand.push((scores[row] + lp as f64, row, t as u32));
            }
        }
    }
    let take = (2 * k).min(cand.len());
    if take < cand.len() {
        cand.select_nth_unstable_by(take, |x, y| y.0.total_cmp(&x.0));
        cand.truncate(take);
    }
    cand.sort_by(|x, y| y.0.total_cmp(&x.0));
    cand
}

/// Per-row seeds `seed + offset + i`, so that input i of a request samples the same way whatever
/// batch it lands in.
pub fn row_seeds(seed: u64, offsets: &[usize]) -> Vec<u64> {
    offsets
        .iter()
        .map(|&i| seed.wrapping_add(i as u64))
        .collect()
}
