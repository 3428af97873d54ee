//! The Luong decoder's recurrence with input feeding over a whole teacher-forced target as one
//! candle custom op, back-propagation through time inside. Per step, in the order of the math:
//! ```text
//! h_t = cell([e_t ; ã_{t-1}], h_{t-1})
//! c_t = Σ_s α_s m_s,   α = softmax_s(score(h_t, k_s) + mask_s)
//! ã_t = tanh(W_c [h_t ; c_t] + b_c)            (fed to the next step's input)
//! ```
//! with the additive score `vᵀ tanh(W_q h_t + k_s)` (JoeyNMT) or the multiplicative `h_t · k_s`
//! (Luong `general`, keys `W_k m`, OpenNMT-py's default; `dot`, keys `m`).
//!
//! Why: input feeding makes every step depend on the previous step's attentional vector, so the
//! whole-sequence paths (the recurrence over all steps, then attention over all queries at once)
//! cannot run, and op by op a step is about twenty small tensor ops whose gradients autograd keeps
//! alive until it reaches them. JoeyNMT's and OpenNMT-py's RNN defaults use this decoder. Here a
//! step is four matmuls (`h W_hhᵀ`, `ã W_iaᵀ`, `h [W_q; W_ch]ᵀ`, `c W_ccᵀ`) and two fused loops
//! (gates, attention); the backward pass is four matmuls per step, and the weight gradients are
//! five matmuls over all steps at once.
//!
//! The op takes three tensors (candle's custom ops take at most three):
//! - `gx` `(T, B, G·H)`: the embeddings' part of the input projection, `e W_ieᵀ + b_ih`, where
//!   `W_ih = [W_ie | W_ia]` splits the cell's input weights at the embedding size;
//! - `w` (flat): `W_hh` `(G·H, H)`, `W_ia` `(G·H, H)`, `b_hh` `(G·H)`, `[W_q; W_ch]` `(A + H, H)`,
//!   `W_cc` `(H, C)`, `b_c` `(H)`, `v` `(A)`, where `W_c = [W_ch | W_cc]` splits the attentional
//!   layer's weight at the hidden size (the multiplicative score has no `W_q` and no `v`);
//! - `mk` `(B, ·)`: per batch row `[h0 | c0 | ã0 | memory | keys | mask bias]` (`c0` for the LSTM
//!   only), packed as [`crate::attend`] reads it.
//!
//! It returns `(T, B, W)`: per step the cell's row as [`crate::fused`] lays it out, then the
//! context `(C)`, the projected query `(A)`, the attention weights `(S)` and `ã_t` `(H)`. Only `h`,
//! `c` and `ã` may be used downstream: gradients arriving at the other parts are ignored.
//! [`feeding_sequence`] wraps the op; a test checks values and gradients against the op-by-op step.

mod backward;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::attend::{attend_row, pack_rows, MemoryRow, Score};
use crate::attention::{Attention, AttentionKeys};
use crate::cell::{CellKind, CellState};
use crate::cpu::{cpu_slice, matmul, on_cpu_f32, to_vec, transpose, with_data, View};
use crate::fastmath::tanh;
use crate::gates::cell_row;
use crate::rnn::Cell;
use crate::unpack::batch_major;
use backward::{previous_states, step_bwd, weight_grads, Grads};

#[derive(Clone, Copy, Debug)]
struct FeedingRecurrence {
    kind: CellKind,
    score: Score,
    /// H, C, A (H for the multiplicative score), S.
    hidden: usize,
    memory: usize,
    att: usize,
    src: usize,
}

/// Sizes and offsets shared by both passes.
#[derive(Clone, Copy)]
struct Dims {
    hs: usize,
    /// G·H, the gate pre-activations per row.
    g: usize,
    /// The width of `h [W_q; W_ch]ᵀ` (A + H), or of `h W_chᵀ` (H) for the multiplicative score,
    /// whose query is `h` itself; `W_ch h` starts at `o_ch` in it.
    aq: usize,
    o_ch: usize,
    score: Score,
    /// The length of `v` (A, or 0 for the multiplicative score).
    v_len: usize,
    /// Width of the cell's part of an output row (K·H); the context starts there.
    kh: usize,
    /// Where the query, the weights and ã start in an output row, and its width.
    o_q: usize,
    o_al: usize,
    o_att: usize,
    wd: usize,
    mem: MemoryRow,
    lstm: bool,
}

impl FeedingRecurrence {
    fn dims(&self) -> Dims {
        let lstm = self.kind == CellKind::Lstm;
        let (hs, c, a, s) = (self.hidden, self.memory, self.att, self.src);
        let kh = if lstm { 6 * hs } else { 5 * hs };
        let (o_q, o_al, o_att) = (kh + c, kh + c + a, kh + c + a + s);
        let o_ch = match self.score {
            Score::Additive => a,
            Score::Multiplicative => 0,
        };
        Dims {
            hs,
            g: self.kind.gates() * hs,
            aq: o_ch + hs,
            o_ch,
            score: self.score,
            v_len: o_ch,
            kh,
            o_q,
            o_al,
            o_att,
            wd: o_att + hs,
            mem: MemoryRow {
                m0: if lstm { 3 * hs } else { 2 * hs },
                s,
                c,
                a,
            },
            lstm,
        }
    }
}

/// The flat weights, split.
struct Weights<'a> {
    whh: &'a [f32],
    wia: &'a [f32],
    bhh: &'a [f32],
    wqc: &'a [f32],
    wcc: &'a [f32],
    bc: &'a [f32],
    v: &'a [f32],
}

impl Dims {
    fn w_len(&self) -> usize {
        let (hs, c) = (self.hs, self.mem.c);
        2 * self.g * hs + self.g + self.aq * hs + hs * c + hs + self.v_len
    }

    fn split_w<'a>(&self, w: &'a [f32]) -> Weights<'a> {
        let hs = self.hs;
        let (whh, rest) = w.split_at(self.g * hs);
        let (wia, rest) = rest.split_at(self.g * hs);
        let (bhh, rest) = rest.split_at(self.g);
        let (wqc, rest) = rest.split_at(self.aq * hs);
        let (wcc, rest) = rest.split_at(hs * self.mem.c);
        let (bc, v) = rest.split_at(hs);
        Weights {
            whh,
            wia,
            bhh,
            wqc,
            wcc,
            bc,
            v,
        }
    }

    /// Where ã0 sits in an `mk` row.
    fn a0(&self) -> usize {
        self.mem.m0 - self.hs
    }
}

/// The forward pass's per-step weights transposed once per call, `Wᵀ` row-major, so that the
/// per-step products `x Wᵀ` take [`matmul`]'s fast path for few rows.
struct StepWeights {
    whh: Vec<f32>,
    wia: Vec<f32>,
    wqc: Vec<f32>,
    wcc: Vec<f32>,
}

impl StepWeights {
    fn new(d: &Dims, w: &Weights) -> Self {
        Self {
            whh: transpose(w.whh, d.g, d.hs),
            wia: transpose(w.wia, d.g, d.hs),
            wqc: transpose(w.wqc, d.aq, d.hs),
            wcc: transpose(w.wcc, d.hs, d.mem.c),
        }
    }
}

impl FeedingRecurrence {
    fn check(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> Result<(usize, usize)> {
        let d = self.dims();
        let (t, b, g) = l1.shape().dims3()?;
        if self.kind == CellKind::Rnn
            || g != d.g
            || l2.shape().elem_count() != d.w_len()
            || l3.shape().dims2()? != (b, d.mem.width())
        {
            candle_core::bail!(
                "input-feeding recurrence: {self:?} with gx {:?}, w {:?}, mk {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        Ok((t, b))
    }
}

impl CustomOp3 for FeedingRecurrence {
    fn name(&self) -> &'static str {
        "input-feeding-recurrence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (t, b) = self.check(l1, l2, l3)?;
        let d = self.dims();
        let gx = cpu_slice(s1, l1, "gx")?;
        let w = d.split_w(cpu_slice(s2, l2, "w")?);
        let mk = cpu_slice(s3, l3, "mk")?;
        let wt = StepWeights::new(&d, &w);
        let (hs, g, wd, sw) = (d.hs, d.g, d.wd, d.mem.width());
        let mut out = vec![0f32; t * b * wd];
        let (mut gh, mut ga) = (vec![0f32; b * g], vec![0f32; b * g]);
        let (mut qc, mut pre) = (vec![0f32; b * d.aq], vec![0f32; b * hs]);
        for ti in 0..t {
            let (done, cur) = out.split_at_mut(ti * b * wd);
            let done: &[f32] = done;
            let cur = &mut cur[..b * wd];
            // The previous h and ã: from `mk` at the first step, else from the step before.
            let (hp, ap) = if ti == 0 {
                let at = |o: usize| View {
                    data: &mk[o..],
                    rs: sw,
                    cs: 1,
                };
                (at(0), at(d.a0()))
            } else {
                let at = |o: usize| View {
                    data: &done[(ti - 1) * b * wd + o..],
                    rs: wd,
                    cs: 1,
                };
                (at(0), at(d.o_att))
            };
            matmul((b, g, hs), &mut gh, g, false, hp, View::rows(&wt.whh, g));
            matmul((b, g, hs), &mut ga, g, false, ap, View::rows(&wt.wia, g));
            let (ghr, gar) = (&gh, &ga);
            cur.par_chunks_mut(wd).enumerate().for_each(|(bi, row)| {
                let o = (ti * b + bi) * g;
                let prev = if ti == 0 {
                    &mk[bi * sw..bi * sw + 2 * hs]
                } else {
                    let p = ((ti - 1) * b + bi) * wd;
                    &done[p..p + 2 * hs]
                };
                let (gy, gh) = (&gar[bi * g..(bi + 1) * g], &ghr[bi * g..(bi + 1) * g]);
                cell_row(
                    d.lstm,
                    hs,
                    &gx[o..o + g],
                    gy,
                    gh,
                    w.bhh,
                    prev,
                    &mut row[..d.kh],
                );
            });
            // [q | W_ch h] = h_t [W_q; W_ch]ᵀ, then attention with q.
            let ht = View::rows(cur, wd);
            matmul(
                (b, d.aq, hs),
                &mut qc,
                d.aq,
                false,
                ht,
                View::rows(&wt.wqc, d.aq),
            );
            let qcr = &qc;
            cur.par_chunks_mut(wd).enumerate().for_each(|(bi, row)| {
                let (h, rest) = row.split_at_mut(d.kh);
                let (ctx, rest) = rest.split_at_mut(d.mem.c);
                let (qs, al) = rest.split_at_mut(d.mem.a);
                match d.score {
                    Score::Additive => qs.copy_from_slice(&qcr[bi * d.aq..bi * d.aq + d.mem.a]),
                    Score::Multiplicative => qs.copy_from_slice(&h[..hs]),
                }
                let mkr = &mk[bi * sw..(bi + 1) * sw];
                attend_row(&d.mem, d.score, qs, w.v, mkr, ctx, &mut al[..d.mem.s]);
            });
            // ã_t = tanh(W_ch h + W_cc c + b_c)
            for (bi, p) in pre.chunks_mut(hs).enumerate() {
                let wch_h = &qc[bi * d.aq + d.o_ch..(bi + 1) * d.aq];
                for ((o, x), y) in p.iter_mut().zip(wch_h).zip(w.bc) {
                    *o = x + y;
                }
            }
            let ctx = View::rows(&cur[d.kh..], wd);
            matmul(
                (b, hs, d.mem.c),
                &mut pre,
                hs,
                true,
                ctx,
                View::rows(&wt.wcc, hs),
            );
            for (row, p) in cur.chunks_mut(wd).zip(pre.chunks(hs)) {
                for (o, x) in row[d.o_att..].iter_mut().zip(p) {
                    *o = tanh(*x);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((t, b, wd))))
    }

    fn bwd(
        &self,
        gx: &Tensor,
        w: &Tensor,
        mk: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims();
        let (t, b, g) = gx.dims3()?;
        let w = to_vec(w)?;
        let mk = to_vec(mk)?;
        // The saved output and its gradient are read in place (each is T·B rows of the full
        // width): copying them out cost two large allocations per training step.
        let grad_res = grad_res.contiguous()?;
        let (grads, dw) = with_data(res, "res", |res| {
            with_data(&grad_res, "grad", |gres| {
                let prev = previous_states(&d, t, b, &mk, res);
                let mut grads = Grads::new(&d, t, b);
                for ti in (0..t).rev() {
                    let w = d.split_w(&w);
                    step_bwd(&d, ti, b, &w, &mk, res, gres, &prev, &mut grads);
                }
                let dw = weight_grads(&d, t * b, &prev, res, &grads);
                Ok((grads, dw))
            })
        })?;
        let Grads {
            dgi,
            mut dmk,
            dh,
            dc,
            da,
            ..
        } = grads;
        let sw = d.mem.width();
        let hs = d.hs;
        for bi in 0..b {
            let o = bi * sw;
            dmk[o..o + hs].copy_from_slice(&dh[bi * hs..(bi + 1) * hs]);
            if d.lstm {
                dmk[o + hs..o + 2 * hs].copy_from_slice(&dc[bi * hs..(bi + 1) * hs]);
            }
            let a0 = o + d.a0();
            dmk[a0..a0 + hs].copy_from_slice(&da[bi * hs..(bi + 1) * hs]);
        }
        let dev = gx.device();
        Ok((
            Some(Tensor::from_vec(dgi, (t, b, g), dev)?),
            Some(Tensor::from_vec(dw, d.w_len(), dev)?),
            Some(Tensor::from_vec(dmk, (b, sw), dev)?),
        ))
    }
}

/// Whether [`feeding_sequence`] runs for this cell, attention and input.
pub fn feeding_supported(cell: &Cell, _attention: &Attention, e: &Tensor) -> bool {
    cell.kind() != CellKind::Rnn && on_cpu_f32(e)
}

/// The attentional layer `ã = tanh(W_c [h; c] + b_c)`: weight `(H, H + C)` and bias `(H)`.
pub struct AttentionalLayer<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
}

/// The Luong-style recurrence with input feeding over a teacher-forced sequence: embeddings `e`
/// `(B, T, E)`, the prepared memory `keys`, the initial state and attentional vector `att0`
/// `(B, H)`; the cell's input is `[e_t; ã_{t-1}]`. Returns the attentional vectors `(B, T, H)`
/// and the final state.
pub fn feeding_sequence(
    cell: &Cell,
    attention: &Attention,
    layer: AttentionalLayer,
    e: &Tensor,
    keys: &AttentionKeys,
    init: &CellState,
    att0: &Tensor,
) -> Result<(Tensor, CellState)> {
    let (_, t, emb) = e.dims3()?;
    let memory = keys.memory();
    let (_, s, c) = memory.dims3()?;
    let hs = cell.hidden_size();
    // The additive score projects the query (`W_q`, then `v`); the multiplicative ones compare
    // `h` itself with the keys (`W_k m` for `general`, the memory for `dot`).
    let (score, q_parts, a) = match attention.additive_weights() {
        Some((w_q, _)) => (Score::Additive, vec![w_q.clone()], w_q.dim(0)?),
        None => (Score::Multiplicative, vec![], hs),
    };
    let v = attention.additive_weights().map(|(_, v)| v.clone());
    if keys.keys().dim(2)? != a {
        candle_core::bail!(
            "the input-feeding recurrence: keys of size {} for queries of size {a}",
            keys.keys().dim(2)?
        );
    }
    let kind = cell.kind();
    let w_ih = cell.w_ih();
    let gx = cell.embedding_gates(e)?;
    let flat = |x: Tensor| x.contiguous()?.flatten_all();
    let b_c = match layer.bias {
        Some(bias) => bias.clone(),
        None => Tensor::zeros(hs, e.dtype(), e.device())?,
    };
    let w = Tensor::cat(
        &[
            flat(cell.w_hh.clone())?,
            flat(w_ih.narrow(1, emb, hs)?)?,
            flat(cell.b_hh.clone())?,
        ]
        .into_iter()
        .chain(q_parts.into_iter().map(flat).collect::<Result<Vec<_>>>()?)
        .chain([
            flat(layer.weight.narrow(1, 0, hs)?)?,
            flat(layer.weight.narrow(1, hs, c)?)?,
            flat(b_c)?,
        ])
        .chain(v.map(flat).transpose()?)
        .collect::<Vec<_>>(),
        0,
    )?;
    let mk = pack_rows(kind, init, Some(att0), keys)?;
    let op = FeedingRecurrence {
        kind,
        score,
        hidden: hs,
        memory: c,
        att: a,
        src: s,
    };
    let res = gx
        .contiguous()?
        .apply_op3(&w.contiguous()?, &mk.contiguous()?, op)?;
    let o_att = op.dims().o_att;
    let last = CellState {
        h: res.narrow(2, 0, hs)?.get(t - 1)?,
        c: match kind {
            CellKind::Lstm => Some(res.narrow(2, hs, hs)?.get(t - 1)?),
            _ => None,
        },
    };
    let att = batch_major(&res, &[(o_att, hs)], None)?;
    Ok((att, last))
}

#[cfg(test)]
mod tests;
