//! The Bahdanau decoder's recurrence over a whole teacher-forced target as one candle custom op:
//! per step, the previous state queries the memory with additive attention, and the context
//! joins the embedding's input projection into a GRU or LSTM cell. Back-propagation through time
//! runs inside the op.
//!
//! Why: op by op, one step of this decoder is about twenty small tensor ops, and the backward
//! pass keeps each step's gradients (the `(B, S, A)` key gradient, the zero-padded gradient of the
//! narrowed embedding, the concatenations) alive until autograd reaches that step. That loop, not
//! the output layer, set the peak memory and most of the time of the attentive decoder. Here a
//! step is two matmuls (`h [W_hh; W_q]ᵀ` and `c W_icᵀ`) and two fused loops (attention, gates), the
//! backward pass is two matmuls per step, and the weight gradients are three matmuls over all
//! steps at once.
//!
//! The op takes three tensors (candle's custom ops take at most three):
//! - `gx` `(T, B, G·H)`: the embeddings' part of the input projection, `e W_ieᵀ + b_ih`;
//! - `w` (flat): `[W_hh; W_q]` `(G·H + A, H)`, `W_ic` `(G·H, C)`, `b_hh` `(G·H)`, `v` `(A)`, where
//!   `W_ih = [W_ie | W_ic]` splits the cell's input weights at the embedding size;
//! - `mk` `(B, ·)`: per batch row `[h0 | c0 | memory (S·C) | keys (S·A) | mask bias (S)]`, `c0`
//!   for the LSTM only, the bias 0 at real source positions and -1e9 at padding.
//!
//! It returns `(T, B, W)`: per step the cell's row as [`crate::fused`] lays it out (GRU
//! `[h | r | z | n | W_hn h + b_hn]`, LSTM `[h | c | i | f | g | o]`), then the context `(C)`, the
//! projected query `(A)` and the attention weights `(S)`. Only `h`, `c` and the context may be
//! used downstream: gradients arriving at the other parts are ignored. [`attentive_sequence`]
//! wraps the op. Numerics equal the op-by-op step (the test below checks values and gradients).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::attend::{attend_row, attend_row_bwd, pack_rows, MemoryRow, Score};
use crate::attention::{Attention, AttentionKeys};
use crate::cell::{CellKind, CellState};
use crate::cpu::{cpu_slice, matmul, on_cpu_f32, transpose, with_data, View};
use crate::gates::{cell_row, cell_row_bwd};
use crate::rnn::Cell;
use crate::unpack::batch_major;

#[derive(Clone, Copy, Debug)]
struct AttentiveRecurrence {
    kind: CellKind,
    /// H, C, A, S.
    hidden: usize,
    memory: usize,
    att: usize,
    src: usize,
}

/// Offsets derived from the sizes, shared by both passes.
#[derive(Clone, Copy)]
struct Dims {
    hs: usize,
    c: usize,
    a: usize,
    s: usize,
    /// G·H, the gate pre-activations per row.
    g: usize,
    /// Width of the cell's part of an output row (K·H).
    kh: usize,
    /// Width of an output row.
    wd: usize,
    /// Width of an `mk` row and where its memory starts (after the initial state).
    sw: usize,
    m0: usize,
    lstm: bool,
}

impl AttentiveRecurrence {
    fn dims(&self) -> Dims {
        let lstm = self.kind == CellKind::Lstm;
        let (hs, c, a, s) = (self.hidden, self.memory, self.att, self.src);
        let kh = if lstm { 6 * hs } else { 5 * hs };
        let m0 = if lstm { 2 * hs } else { hs };
        Dims {
            hs,
            c,
            a,
            s,
            g: self.kind.gates() * hs,
            kh,
            wd: kh + c + a + s,
            sw: m0 + s * (c + a + 1),
            m0,
            lstm,
        }
    }
}

impl Dims {
    fn w_len(&self) -> usize {
        (self.g + self.a) * self.hs + self.g * self.c + self.g + self.a
    }

    /// `(W_hq, W_ic, b_hh, v)` out of the flat weights.
    fn split_w<'a>(&self, w: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32], &'a [f32]) {
        let (whq, rest) = w.split_at((self.g + self.a) * self.hs);
        let (wic, rest) = rest.split_at(self.g * self.c);
        let (bhh, v) = rest.split_at(self.g);
        (whq, wic, bhh, v)
    }

    /// The layout of an `mk` row for the attention kernels.
    fn memory_row(&self) -> MemoryRow {
        MemoryRow {
            m0: self.m0,
            s: self.s,
            c: self.c,
            a: self.a,
        }
    }
}

impl CustomOp3 for AttentiveRecurrence {
    fn name(&self) -> &'static str {
        "attentive-recurrence"
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
        let d = self.dims();
        let (t, b, g) = l1.shape().dims3()?;
        if self.kind == CellKind::Rnn
            || g != d.g
            || l2.shape().elem_count() != d.w_len()
            || l3.shape().dims2()? != (b, d.sw)
        {
            candle_core::bail!(
                "attentive recurrence: {self:?} with gx {:?}, w {:?}, mk {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let gx = cpu_slice(s1, l1, "gx")?;
        let w = cpu_slice(s2, l2, "w")?;
        let mk = cpu_slice(s3, l3, "mk")?;
        let (whq, wic, bhh, v) = d.split_w(w);
        let (hs, wd, gq) = (d.hs, d.wd, d.g + d.a);
        // [W_hh; W_q]ᵀ and W_icᵀ row-major: the per-step products take `matmul`'s fast path
        // for few rows.
        let (whq_t, wic_t) = (transpose(whq, gq, hs), transpose(wic, d.g, d.c));
        let mut out = crate::cpu::zeros(t * b * wd);
        let mut ghq = vec![0f32; b * gq];
        let mut gc = vec![0f32; b * g];
        for ti in 0..t {
            let (done, cur) = out.split_at_mut(ti * b * wd);
            let done: &[f32] = done;
            let cur = &mut cur[..b * wd];
            // The previous state: h0 from `mk`, else the h of the step before.
            let hp = if ti == 0 {
                View {
                    data: mk,
                    rs: d.sw,
                    cs: 1,
                }
            } else {
                View {
                    data: &done[(ti - 1) * b * wd..],
                    rs: wd,
                    cs: 1,
                }
            };
            // [h W_hhᵀ | q] = h [W_hh; W_q]ᵀ
            let whq_t = View {
                data: &whq_t,
                rs: gq,
                cs: 1,
            };
            matmul((b, gq, hs), &mut ghq, gq, false, hp, whq_t);
            cur.par_chunks_mut(wd).enumerate().for_each(|(bi, row)| {
                let q = &ghq[bi * gq + g..(bi + 1) * gq];
                let (ctx, rest) = row[d.kh..].split_at_mut(d.c);
                let (qs, al) = rest.split_at_mut(d.a);
                qs.copy_from_slice(q);
                attend_row(
                    &d.memory_row(),
                    Score::Additive,
                    q,
                    v,
                    &mk[bi * d.sw..(bi + 1) * d.sw],
                    ctx,
                    al,
                );
            });
            let ctx = View {
                data: &cur[d.kh..],
                rs: wd,
                cs: 1,
            };
            let wic_t = View {
                data: &wic_t,
                rs: g,
                cs: 1,
            };
            matmul((b, g, d.c), &mut gc, g, false, ctx, wic_t);
            let (ghq, gc) = (&ghq, &gc);
            cur.par_chunks_mut(wd).enumerate().for_each(|(bi, row)| {
                let o = (ti * b + bi) * g;
                let prev = if ti == 0 {
                    &mk[bi * d.sw..bi * d.sw + d.m0]
                } else {
                    let p = ((ti - 1) * b + bi) * wd;
                    &done[p..p + 2 * hs]
                };
                let (gy, gh) = (&gc[bi * g..(bi + 1) * g], &ghq[bi * gq..bi * gq + g]);
                cell_row(
                    d.lstm,
                    hs,
                    &gx[o..o + g],
                    gy,
                    gh,
                    bhh,
                    prev,
                    &mut row[..d.kh],
                );
            });
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
        let (t, b, g) = gx.dims3()?;
        // The inputs, the saved output and its gradient are read in place: copying them out cost
        // large allocations and copies on the main thread every training step.
        let grad_res = grad_res.contiguous()?;
        let (dgi, dw, dmk) = with_data(w, "w", |w| {
            with_data(mk, "mk", |mk| {
                with_data(res, "res", |res| {
                    with_data(&grad_res, "grad", |gres| {
                        Ok(self.backward((t, b, g), w, mk, res, gres))
                    })
                })
            })
        })?;
        let dev = gx.device();
        Ok((
            Some(Tensor::from_vec(dgi, (t, b, g), dev)?),
            Some(Tensor::from_vec(dw, self.dims().w_len(), dev)?),
            Some(Tensor::from_vec(dmk, (b, self.dims().sw), dev)?),
        ))
    }
}

impl AttentiveRecurrence {
    /// Back-propagation through time over the saved output `res` and its gradient `gres`: the
    /// gradients of `gx`, `w` and `mk`, flat.
    fn backward(
        &self,
        (t, b, g): (usize, usize, usize),
        w: &[f32],
        mk: &[f32],
        res: &[f32],
        gres: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = self.dims();
        let (hs, wd, gq) = (d.hs, d.wd, d.g + d.a);
        let (whq, wic, _, v) = d.split_w(w);
        // The state before each step, (T, B, H) for h and c.
        let mut h_prev = crate::cpu::zeros(t * b * hs);
        let mut c_prev = vec![0f32; if d.lstm { t * b * hs } else { 0 }];
        for ti in 0..t {
            for bi in 0..b {
                let (buf, o) = if ti == 0 {
                    (&mk, bi * d.sw)
                } else {
                    (&res, ((ti - 1) * b + bi) * wd)
                };
                let dst = (ti * b + bi) * hs;
                h_prev[dst..dst + hs].copy_from_slice(&buf[o..o + hs]);
                if d.lstm {
                    c_prev[dst..dst + hs].copy_from_slice(&buf[o + hs..o + 2 * hs]);
                }
            }
        }
        // Gradients of the gate pre-activations from the input side (that of gx) and of
        // [h W_hhᵀ + b_hh | q]: they differ in the GRU's n gate.
        let mut dgi = crate::cpu::zeros(t * b * g);
        let mut dghq = crate::cpu::zeros(t * b * gq);
        let mut dmk = vec![0f32; b * d.sw];
        let mut dv_rows = vec![0f32; b * d.a];
        let mut dh = vec![0f32; b * hs];
        let mut dc = vec![0f32; b * hs];
        let mut dh_next = vec![0f32; b * hs];
        let mut dc_next = vec![0f32; b * hs];
        let mut dctx = vec![0f32; b * d.c];
        for ti in (0..t).rev() {
            // The rows of one step are independent: in parallel, each with its own dh, dc.
            dgi[ti * b * g..(ti + 1) * b * g]
                .par_chunks_mut(g)
                .zip(dghq[ti * b * gq..(ti + 1) * b * gq].par_chunks_mut(gq))
                .zip(dh_next.par_chunks_mut(hs).zip(dc_next.par_chunks_mut(hs)))
                .enumerate()
                .for_each_init(
                    || (vec![0f32; hs], vec![0f32; hs]),
                    |(dht, dct), (bi, ((dgi_r, dghq_r), (dhn, dcn)))| {
                        let o = (ti * b + bi) * wd;
                        let row = &res[o..o + d.kh];
                        let pr = (ti * b + bi) * hs..(ti * b + bi + 1) * hs;
                        for j in 0..hs {
                            dht[j] = gres[o + j] + dh[bi * hs + j];
                        }
                        let cp: &[f32] = if d.lstm {
                            for j in 0..hs {
                                dct[j] = gres[o + hs + j] + dc[bi * hs + j];
                            }
                            &c_prev[pr.clone()]
                        } else {
                            &[]
                        };
                        cell_row_bwd(
                            d.lstm,
                            hs,
                            row,
                            (&h_prev[pr], cp),
                            (dht, dct),
                            dgi_r,
                            &mut dghq_r[..g],
                            (dhn, dcn),
                        );
                    },
                );
            // dctx = (its gradient from downstream) + dgi W_ic
            for bi in 0..b {
                let o = (ti * b + bi) * wd + d.kh;
                dctx[bi * d.c..(bi + 1) * d.c].copy_from_slice(&gres[o..o + d.c]);
            }
            let dgi_t = View {
                data: &dgi[ti * b * g..(ti + 1) * b * g],
                rs: g,
                cs: 1,
            };
            let wic_v = View {
                data: wic,
                rs: d.c,
                cs: 1,
            };
            matmul((b, d.c, g), &mut dctx, d.c, true, dgi_t, wic_v);
            let (res, mk, dctx) = (&res, &mk, &dctx);
            dghq[ti * b * gq..(ti + 1) * b * gq]
                .par_chunks_mut(gq)
                .zip(dmk.par_chunks_mut(d.sw))
                .zip(dv_rows.par_chunks_mut(d.a))
                .enumerate()
                .for_each(|(bi, ((dghq_row, dmk_row), dv))| {
                    let o = (ti * b + bi) * wd + d.kh + d.c;
                    attend_row_bwd(
                        &d.memory_row(),
                        Score::Additive,
                        &res[o..o + d.a],
                        &res[o + d.a..o + d.a + d.s],
                        v,
                        &mk[bi * d.sw..(bi + 1) * d.sw],
                        &dctx[bi * d.c..(bi + 1) * d.c],
                        dmk_row,
                        &mut dghq_row[g..],
                        dv,
                    );
                });
            // dh_prev += [dgh | dq] [W_hh; W_q]
            let dghq_t = View {
                data: &dghq[ti * b * gq..(ti + 1) * b * gq],
                rs: gq,
                cs: 1,
            };
            let whq_v = View {
                data: whq,
                rs: hs,
                cs: 1,
            };
            matmul((b, hs, gq), &mut dh_next, hs, true, dghq_t, whq_v);
            std::mem::swap(&mut dh, &mut dh_next);
            std::mem::swap(&mut dc, &mut dc_next);
        }
        // Weight gradients over all steps at once: [dW_hh; dW_q] = Σ [dgh | dq]ᵀ h_prev,
        // dW_ic = Σ dgiᵀ ctx, db_hh = Σ dgh, dv from the rows.
        let rows = t * b;
        let mut dw = crate::cpu::zeros(d.w_len());
        {
            let (dwhq, rest) = dw.split_at_mut(gq * hs);
            let (dwic, rest) = rest.split_at_mut(g * d.c);
            let (dbhh, dvv) = rest.split_at_mut(g);
            let dghq_t = View {
                data: &dghq,
                rs: 1,
                cs: gq,
            };
            let hp = View {
                data: &h_prev,
                rs: hs,
                cs: 1,
            };
            matmul((gq, hs, rows), dwhq, hs, false, dghq_t, hp);
            let dgi_t = View {
                data: &dgi,
                rs: 1,
                cs: g,
            };
            let ctx = View {
                data: &res[d.kh..],
                rs: wd,
                cs: 1,
            };
            matmul((g, d.c, rows), dwic, d.c, false, dgi_t, ctx);
            for r in 0..rows {
                for (o, x) in dbhh.iter_mut().zip(&dghq[r * gq..r * gq + g]) {
                    *o += x;
                }
            }
            for row in dv_rows.chunks(d.a) {
                for (o, x) in dvv.iter_mut().zip(row) {
                    *o += x;
                }
            }
        }
        for bi in 0..b {
            let o = bi * d.sw;
            dmk[o..o + hs].copy_from_slice(&dh[bi * hs..(bi + 1) * hs]);
            if d.lstm {
                dmk[o + hs..o + 2 * hs].copy_from_slice(&dc[bi * hs..(bi + 1) * hs]);
            }
        }
        (dgi, dw, dmk)
    }
}

/// Whether [`attentive_sequence`] runs for this cell, attention and input.
pub fn attentive_supported(cell: &Cell, attention: &Attention, e: &Tensor) -> bool {
    cell.kind() != CellKind::Rnn && attention.additive_weights().is_some() && on_cpu_f32(e)
}

/// The Bahdanau-style recurrence over a teacher-forced sequence: embeddings `e` `(B, T, E)`, the
/// prepared memory `keys` and the initial state; the cell's input is `[e_t; c_t]` where `c_t`
/// attends with the previous state. Returns the states `(B, T, H)`, the contexts `(B, T, C)`
/// and the final state.
pub fn attentive_sequence(
    cell: &Cell,
    attention: &Attention,
    e: &Tensor,
    keys: &AttentionKeys,
    init: &CellState,
) -> Result<(Tensor, Tensor, CellState)> {
    let (res, d, last) = packed(cell, attention, e, keys, init)?;
    let h = res.narrow(2, 0, d.hs)?;
    let context = res.narrow(2, d.kh, d.c)?;
    Ok((h.transpose(0, 1)?, context.transpose(0, 1)?, last))
}

/// [`attentive_sequence`]'s outputs as the Bahdanau readout's input `[h; c; e]` `(B, T, H + C +
/// E)`, contiguous, and the final state: one op from the packed rows (`crate::unpack`), where
/// narrowing, transposing and concatenating cost a fifth of a training step.
pub fn attentive_readout(
    cell: &Cell,
    attention: &Attention,
    e: &Tensor,
    keys: &AttentionKeys,
    init: &CellState,
) -> Result<(Tensor, CellState)> {
    let (res, d, last) = packed(cell, attention, e, keys, init)?;
    let readout = batch_major(&res, &[(0, d.hs), (d.kh, d.c)], Some(e))?;
    Ok((readout, last))
}

/// The op's packed rows `(T, B, W)`, their layout, and the final state.
fn packed(
    cell: &Cell,
    attention: &Attention,
    e: &Tensor,
    keys: &AttentionKeys,
    init: &CellState,
) -> Result<(Tensor, Dims, CellState)> {
    let Some((w_q, v)) = attention.additive_weights() else {
        candle_core::bail!("the attentive recurrence needs additive (Bahdanau) attention");
    };
    let (_, t, emb) = e.dims3()?;
    let memory = keys.memory();
    let (_, s, c) = memory.dims3()?;
    let (a, hs) = w_q.dims2()?;
    let kind = cell.kind();
    let w_ih = cell.w_ih();
    let gx = cell.embedding_gates(e)?;
    let w = Tensor::cat(
        &[
            cell.w_hh.flatten_all()?,
            w_q.flatten_all()?,
            w_ih.narrow(1, emb, c)?.contiguous()?.flatten_all()?,
            cell.b_hh.flatten_all()?,
            v.flatten_all()?,
        ],
        0,
    )?;
    let mk = pack_rows(kind, init, None, keys)?;
    let op = AttentiveRecurrence {
        kind,
        hidden: hs,
        memory: c,
        att: a,
        src: s,
    };
    let res = gx
        .contiguous()?
        .apply_op3(&w.contiguous()?, &mk.contiguous()?, op)?;
    let h = res.narrow(2, 0, hs)?;
    let last = CellState {
        h: h.get(t - 1)?,
        c: match kind {
            CellKind::Lstm => Some(res.narrow(2, hs, hs)?.get(t - 1)?),
            _ => None,
        },
    };
    Ok((res, op.dims(), last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{attention, AttentionKind};
    use crate::init::SeededVarMap;
    use crate::rnn::cell;
    use crate::twin::{assert_same_gradients, max_diff, padded_mask};
    use candle_core::{Device, Var};

    /// Values and gradients of every input against the op-by-op loop the decoder runs otherwise:
    /// attention on the previous state, then `Cell::step_ops` on `[e; c]`.
    fn check(kind: CellKind) -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, s, emb, c, hs, a) = (3, 4, 5, 6, 7, 8, 9);
        let vm = SeededVarMap::new(11);
        let vb = vm.var_builder(&dev);
        let cl = cell(kind, emb + c, hs, "l0", vb.pp("rnn"))?;
        let att = attention(AttentionKind::Bahdanau, c, hs, a, vb.pp("attention"))?;
        let e = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, emb), &dev)?)?;
        let mem = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, s, c), &dev)?)?;
        let h0 = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, hs), &dev)?)?;
        let c0 = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, hs), &dev)?)?;
        let mask = padded_mask(b, s, &dev)?;
        let init = CellState {
            h: h0.as_tensor().clone(),
            c: (kind == CellKind::Lstm).then(|| c0.as_tensor().clone()),
        };
        let keys = att.keys(mem.as_tensor(), &mask)?;
        let mut state = init.clone();
        let (mut hs_ref, mut cs_ref) = (Vec::new(), Vec::new());
        for i in 0..t {
            let et = e.as_tensor().narrow(1, i, 1)?.squeeze(1)?;
            let (ctx, _) = att.forward(&state.h.unsqueeze(1)?, &keys)?;
            let ctx = ctx.squeeze(1)?;
            let x = Tensor::cat(&[&et, &ctx], 1)?;
            state = cl.step_ops(&cl.input_proj(&x)?, &state)?;
            hs_ref.push(state.h.clone());
            cs_ref.push(ctx);
        }
        let (h_ref, c_ref) = (Tensor::stack(&hs_ref, 1)?, Tensor::stack(&cs_ref, 1)?);
        let (h, ctx, last) = attentive_sequence(&cl, &att, e.as_tensor(), &keys, &init)?;
        assert!(max_diff(&h, &h_ref)? < 1e-5, "states differ");
        assert!(max_diff(&ctx, &c_ref)? < 1e-5, "contexts differ");
        assert!(max_diff(&last.h, &state.h)? < 1e-5, "final state differs");
        if kind == CellKind::Lstm {
            let (x, y) = (last.c.as_ref().unwrap(), state.c.as_ref().unwrap());
            assert!(max_diff(x, y)? < 1e-5, "final cell differs");
        }
        // A loss that reaches every output: weighted states, contexts and the final cell.
        let wh = Tensor::randn(0f32, 1.0, (b, t, hs), &dev)?;
        let wc = Tensor::randn(0f32, 1.0, (b, t, c), &dev)?;
        let loss = |h: &Tensor, ctx: &Tensor, st: &CellState| -> Result<Tensor> {
            let mut l = ((h * &wh)?.sum_all()? + (ctx * &wc)?.sum_all()?)?;
            if let Some(cc) = &st.c {
                l = (l + cc.sum_all()?)?;
            }
            Ok(l)
        };
        let gr = loss(&h_ref, &c_ref, &state)?.backward()?;
        let gf = loss(&h, &ctx, &last)?.backward()?;
        let mut vars: Vec<(String, Tensor)> = vec![
            ("e".into(), e.as_tensor().clone()),
            ("memory".into(), mem.as_tensor().clone()),
            ("h0".into(), h0.as_tensor().clone()),
        ];
        if kind == CellKind::Lstm {
            vars.push(("c0".into(), c0.as_tensor().clone()));
        }
        assert_same_gradients(&format!("{kind:?}"), &gr, &gf, vars, &vm)
    }

    /// The readout `[h; c; e]` against concatenating [`attentive_sequence`]'s outputs, in values
    /// and in the gradients of the embeddings, the memory and every weight.
    #[test]
    fn readout_matches_the_concatenated_outputs() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, s, emb, c, hs, a) = (3, 4, 5, 6, 7, 8, 9);
        let vm = SeededVarMap::new(12);
        let vb = vm.var_builder(&dev);
        let cl = cell(CellKind::Gru, emb + c, hs, "l0", vb.pp("rnn"))?;
        let att = attention(AttentionKind::Bahdanau, c, hs, a, vb.pp("attention"))?;
        let e = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, emb), &dev)?)?;
        let mem = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, s, c), &dev)?)?;
        let init = CellState {
            h: Tensor::randn(0f32, 0.5, (b, hs), &dev)?,
            c: None,
        };
        let keys = att.keys(mem.as_tensor(), &padded_mask(b, s, &dev)?)?;
        let (h, ctx, _) = attentive_sequence(&cl, &att, e.as_tensor(), &keys, &init)?;
        let want = Tensor::cat(&[&h, &ctx, e.as_tensor()], 2)?;
        let (got, _) = attentive_readout(&cl, &att, e.as_tensor(), &keys, &init)?;
        assert!(got.is_contiguous());
        assert_eq!(max_diff(&got, &want)?, 0.0);
        let wts = Tensor::randn(0f32, 1.0, want.dims(), &dev)?;
        let gw = (want * &wts)?.sum_all()?.backward()?;
        let gg = (got * &wts)?.sum_all()?.backward()?;
        let vars = vec![
            ("e".into(), e.as_tensor().clone()),
            ("memory".into(), mem.as_tensor().clone()),
        ];
        assert_same_gradients("readout", &gw, &gg, vars, &vm)
    }

    #[test]
    fn gru_matches_the_op_by_op_decoder_loop_in_values_and_gradients() -> Result<()> {
        check(CellKind::Gru)
    }

    #[test]
    fn lstm_matches_the_op_by_op_decoder_loop_in_values_and_gradients() -> Result<()> {
        check(CellKind::Lstm)
    }
}
