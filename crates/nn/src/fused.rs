//! A whole GRU or LSTM recurrence over a sequence as one candle custom op, with a hand-written
//! backward pass (back-propagation through time inside the op).
//!
//! Why: run op by op, one time step is a dozen small tensor ops (each an allocation and, in the
//! backward pass, as many again), and slicing step `t` out of the `(T, B, G·H)` input projection
//! makes the backward pass build a zero-padded gradient of the whole projection per step, so the
//! cost grows with T². Here the forward pass is one recurrent matmul plus one fused loop over the
//! gate non-linearities per step, and the backward pass is one matmul per step plus a single
//! `(G·H, T·B) × (T·B, H)` matmul for the recurrent weights' gradient.
//!
//! The op takes three tensors (candle's custom ops take at most three):
//! - `gi` `(T, B, G·H)`: the input projection `x W_ihᵀ + b_ih` of every step, time-major;
//! - `w` `(G·H, H + 1)`: `[W_hh | b_hh]`, the recurrent weights with their bias as a last column;
//! - `s0m` `(B, S·H + T)`: `[h0 | c0 | maskᵀ]`, the initial state (`c0` for the LSTM only) and the
//!   `(B, T)` padding mask (1 = real token, 0 = padding; a padded step leaves the state unchanged).
//!
//! It returns `(T, B, K·H)`: per step the carried state and the activations the backward pass
//! needs — GRU `[h | r | z | n | W_hn h + b_hn]` (K = 5), LSTM `[h | c | i | f | g | o]` (K = 6).
//! Only the state parts (`h`, and `c` for the LSTM) may be used downstream: gradients arriving at
//! the activation parts are ignored. [`sequence`] wraps the op and returns just what a layer needs.
//!
//! Numerics equal the op-by-op [`crate::Cell::step`] path (tests below check values and gradients
//! against it, and the layer tests check both against PyTorch).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cell::{CellKind, CellState};
use crate::cpu::{cpu_slice, matmul, on_cpu_f32, to_vec, transpose, with_data, View};
use crate::gates::{gru_row, gru_row_bwd, lstm_row, lstm_row_bwd};

/// The op: which recurrence, its hidden size and its direction.
#[derive(Clone, Copy, Debug)]
struct FusedRecurrence {
    kind: CellKind,
    hidden: usize,
    /// Process time steps from last to first (the backward direction of a bidirectional layer).
    reverse: bool,
}

impl FusedRecurrence {
    /// State tensors carried per step: h (GRU), h and c (LSTM).
    fn states(&self) -> usize {
        if self.kind == CellKind::Lstm {
            2
        } else {
            1
        }
    }

    /// Width of one output row, in units of H.
    fn k(&self) -> usize {
        if self.kind == CellKind::Lstm {
            6
        } else {
            5
        }
    }

    /// Time index of the `s`-th processed step.
    fn time(&self, s: usize, t: usize) -> usize {
        if self.reverse {
            t - 1 - s
        } else {
            s
        }
    }
}

impl CustomOp3 for FusedRecurrence {
    fn name(&self) -> &'static str {
        "fused-recurrence"
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
        let (t, b, gh) = l1.shape().dims3()?;
        let hs = self.hidden;
        if self.kind == CellKind::Rnn
            || gh != self.kind.gates() * hs
            || l2.shape().dims2()? != (gh, hs + 1)
        {
            candle_core::bail!(
                "fused recurrence: {:?} with gi {:?}, w {:?}, hidden size {hs}",
                self.kind,
                l1.shape(),
                l2.shape()
            );
        }
        let sw = self.states() * hs + t;
        if l3.shape().dims2()? != (b, sw) {
            candle_core::bail!("fused recurrence: state/mask shape {:?}", l3.shape());
        }
        let gi = cpu_slice(s1, l1, "gi")?;
        let w = cpu_slice(s2, l2, "w")?;
        let s0m = cpu_slice(s3, l3, "state")?;
        let lstm = self.kind == CellKind::Lstm;
        let kw = self.k() * hs;
        let bias: Vec<f32> = (0..gh).map(|n| w[n * (hs + 1) + hs]).collect();
        // Wᵀ (H, G·H) row-major, the bias column left out: the per-step products take
        // `matmul`'s fast path for few rows.
        let w_t = transpose(w, gh, hs + 1);
        let w_t = View {
            data: &w_t[..hs * gh],
            rs: gh,
            cs: 1,
        };
        let mut out = crate::cpu::zeros(t * b * kw);
        let mut h = vec![0f32; b * hs];
        let mut c = vec![0f32; b * hs];
        for bi in 0..b {
            h[bi * hs..(bi + 1) * hs].copy_from_slice(&s0m[bi * sw..bi * sw + hs]);
            if lstm {
                c[bi * hs..(bi + 1) * hs].copy_from_slice(&s0m[bi * sw + hs..bi * sw + 2 * hs]);
            }
        }
        let mut ghb = vec![0f32; b * gh];
        let mask_col = self.states() * hs;
        for s in 0..t {
            let ti = self.time(s, t);
            let hv = View {
                data: &h,
                rs: hs,
                cs: 1,
            };
            matmul((b, gh, hs), &mut ghb, gh, false, hv, w_t);
            for (x, bv) in ghb.iter_mut().zip(bias.iter().cycle()) {
                *x += bv;
            }
            // The rows of one step are independent: in parallel.
            let ghb = &ghb;
            out[ti * b * kw..(ti + 1) * b * kw]
                .par_chunks_mut(kw)
                .zip(h.par_chunks_mut(hs).zip(c.par_chunks_mut(hs)))
                .enumerate()
                .for_each(|(bi, (row, (hrow, crow)))| {
                    let m = s0m[bi * sw + mask_col + ti];
                    let gir = &gi[(ti * b + bi) * gh..(ti * b + bi + 1) * gh];
                    let ghr = &ghb[bi * gh..(bi + 1) * gh];
                    if lstm {
                        lstm_row(hs, gir, ghr, hrow, crow, m, row);
                        crow.copy_from_slice(&row[hs..2 * hs]);
                    } else {
                        gru_row(hs, gir, ghr, hrow, m, row);
                    }
                    hrow.copy_from_slice(&row[..hs]);
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((t, b, kw))))
    }

    fn bwd(
        &self,
        gi: &Tensor,
        w: &Tensor,
        s0m: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (t, b, gh) = gi.dims3()?;
        let hs = self.hidden;
        // The inputs, the saved output and its gradient are read in place, not copied out.
        let grad_res = grad_res.contiguous()?;
        let (dgi, dw, ds0) = with_data(w, "w", |w| {
            with_data(s0m, "state", |s0m| {
                with_data(res, "res", |res| {
                    with_data(&grad_res, "grad", |gres| {
                        Ok(self.backward((t, b, gh), w, s0m, res, gres))
                    })
                })
            })
        })?;
        let dev = gi.device();
        Ok((
            Some(Tensor::from_vec(dgi, (t, b, gh), dev)?),
            Some(Tensor::from_vec(dw, (gh, hs + 1), dev)?),
            Some(Tensor::from_vec(ds0, s0m.dims(), dev)?),
        ))
    }
}

impl FusedRecurrence {
    /// Back-propagation through time over the saved output `res` and its gradient `gres`: the
    /// gradients of `gi`, `w` and the initial state, flat.
    fn backward(
        &self,
        (t, b, gh): (usize, usize, usize),
        w: &[f32],
        s0m: &[f32],
        res: &[f32],
        gres: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let hs = self.hidden;
        let kw = self.k() * hs;
        let sw = self.states() * hs + t;
        let mask_col = self.states() * hs;
        let lstm = self.kind == CellKind::Lstm;
        // The state before processing time index ti, for every ti: the initial state for the
        // first processed step, else the carried state of the step processed just before.
        let mut h_prev = crate::cpu::zeros(t * b * hs);
        let mut c_prev = vec![0f32; if lstm { t * b * hs } else { 0 }];
        for s in 0..t {
            let ti = self.time(s, t);
            for bi in 0..b {
                let dst = (ti * b + bi) * hs;
                // (start of h, start of c) in the source buffer.
                let (buf, o) = if s == 0 {
                    (&s0m, bi * sw)
                } else {
                    (&res, (self.time(s - 1, t) * b + bi) * kw)
                };
                h_prev[dst..dst + hs].copy_from_slice(&buf[o..o + hs]);
                if lstm {
                    c_prev[dst..dst + hs].copy_from_slice(&buf[o + hs..o + 2 * hs]);
                }
            }
        }
        // W_hh as a (G·H, H) view of [W_hh | b_hh].
        let w_v = View {
            data: w,
            rs: hs + 1,
            cs: 1,
        };
        let mut dgi = crate::cpu::zeros(t * b * gh);
        // The gradient reaching the recurrent product; it differs from dgi in the GRU's n gate.
        let mut dgh = if lstm {
            Vec::new()
        } else {
            crate::cpu::zeros(t * b * gh)
        };
        let mut dh = vec![0f32; b * hs];
        let mut dc = vec![0f32; b * hs];
        let mut dh_next = vec![0f32; b * hs];
        let mut dc_next = vec![0f32; b * hs];
        for s in (0..t).rev() {
            let ti = self.time(s, t);
            // The rows of one step are independent: in parallel, each with its own dh, dc.
            let rows = |bi: usize| {
                let o = (ti * b + bi) * kw;
                let m = s0m[bi * sw + mask_col + ti];
                let pr = (ti * b + bi) * hs..(ti * b + bi + 1) * hs;
                (o, m, pr)
            };
            let step_rows = ti * b * gh..(ti + 1) * b * gh;
            if lstm {
                dgi[step_rows]
                    .par_chunks_mut(gh)
                    .zip(dh_next.par_chunks_mut(hs).zip(dc_next.par_chunks_mut(hs)))
                    .enumerate()
                    .for_each_init(
                        || (vec![0f32; hs], vec![0f32; hs]),
                        |(dht, dct), (bi, (dgi_r, (dhn, dcn)))| {
                            let (o, m, pr) = rows(bi);
                            for j in 0..hs {
                                dht[j] = gres[o + j] + dh[bi * hs + j];
                                dct[j] = gres[o + hs + j] + dc[bi * hs + j];
                            }
                            let row = &res[o..o + kw];
                            lstm_row_bwd(hs, row, &c_prev[pr], m, dht, dct, dgi_r, dhn, dcn);
                        },
                    );
            } else {
                dgi[step_rows.clone()]
                    .par_chunks_mut(gh)
                    .zip(dgh[step_rows].par_chunks_mut(gh))
                    .zip(dh_next.par_chunks_mut(hs))
                    .enumerate()
                    .for_each_init(
                        || vec![0f32; hs],
                        |dht, (bi, ((dgi_r, dgh_r), dhn))| {
                            let (o, m, pr) = rows(bi);
                            for j in 0..hs {
                                dht[j] = gres[o + j] + dh[bi * hs + j];
                            }
                            let row = &res[o..o + kw];
                            gru_row_bwd(hs, row, &h_prev[pr], m, dht, dgi_r, dgh_r, dhn);
                        },
                    );
            }
            // dh_prev += dgh_t W_hh
            let src = if lstm { &dgi } else { &dgh };
            let dg = View {
                data: &src[ti * b * gh..(ti + 1) * b * gh],
                rs: gh,
                cs: 1,
            };
            matmul((b, hs, gh), &mut dh_next, hs, true, dg, w_v);
            std::mem::swap(&mut dh, &mut dh_next);
            std::mem::swap(&mut dc, &mut dc_next);
        }
        // [dW_hh | db_hh] = Σ_t dgh_tᵀ [h_prev_t | 1]: one matmul over all steps.
        let src = if lstm { &dgi } else { &dgh };
        let mut dw = vec![0f32; gh * (hs + 1)];
        let rows = t * b;
        let dg_t = View {
            data: src,
            rs: 1,
            cs: gh,
        };
        let hp = View {
            data: &h_prev,
            rs: hs,
            cs: 1,
        };
        matmul((gh, hs, rows), &mut dw, hs + 1, false, dg_t, hp);
        for r in 0..rows {
            for n in 0..gh {
                dw[n * (hs + 1) + hs] += src[r * gh + n];
            }
        }
        let mut ds0 = vec![0f32; b * sw];
        for bi in 0..b {
            ds0[bi * sw..bi * sw + hs].copy_from_slice(&dh[bi * hs..(bi + 1) * hs]);
            if lstm {
                ds0[bi * sw + hs..bi * sw + 2 * hs].copy_from_slice(&dc[bi * hs..(bi + 1) * hs]);
            }
        }
        (dgi, dw, ds0)
    }
}

/// One GRU or LSTM step from both pre-activations, as one op: `gi` and `gh` `(B, G·H)` (the
/// recurrent product `h W_hhᵀ + b_hh` is computed outside, by candle, so its backward is
/// candle's) and the previous `h` (GRU) or `c` (LSTM) `(B, H)`. Returns `(B, K·H)` laid out as
/// the sequence op's rows; only the state parts may be used downstream.
#[derive(Clone, Copy, Debug)]
struct FusedStep {
    kind: CellKind,
    hidden: usize,
}

impl CustomOp3 for FusedStep {
    fn name(&self) -> &'static str {
        "fused-step"
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
        let (b, gh) = l1.shape().dims2()?;
        let hs = self.hidden;
        if self.kind == CellKind::Rnn
            || gh != self.kind.gates() * hs
            || l2.shape().dims2()? != (b, gh)
            || l3.shape().dims2()? != (b, hs)
        {
            candle_core::bail!(
                "fused step: {:?} with gi {:?}, gh {:?}, state {:?}",
                self.kind,
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let gi = cpu_slice(s1, l1, "gi")?;
        let ghs = cpu_slice(s2, l2, "gh")?;
        let st = cpu_slice(s3, l3, "state")?;
        let kw = if self.kind == CellKind::Lstm { 6 } else { 5 } * hs;
        let mut out = vec![0f32; b * kw];
        // The LSTM's h only enters through gh; the row function wants one anyway (m = 1 ignores it).
        let unused = vec![0f32; hs];
        for bi in 0..b {
            let (g, r) = (bi * gh..(bi + 1) * gh, bi * hs..(bi + 1) * hs);
            let row = &mut out[bi * kw..(bi + 1) * kw];
            if self.kind == CellKind::Lstm {
                lstm_row(hs, &gi[g.clone()], &ghs[g], &unused, &st[r], 1.0, row);
            } else {
                gru_row(hs, &gi[g.clone()], &ghs[g], &st[r], 1.0, row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, kw))))
    }

    fn bwd(
        &self,
        gi: &Tensor,
        _gh: &Tensor,
        st: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, gh) = gi.dims2()?;
        let hs = self.hidden;
        let lstm = self.kind == CellKind::Lstm;
        let kw = if lstm { 6 } else { 5 } * hs;
        let st = to_vec(st)?;
        let res = to_vec(res)?;
        let gres = to_vec(grad_res)?;
        let mut dgi = vec![0f32; b * gh];
        let mut dgh = if lstm { Vec::new() } else { vec![0f32; b * gh] };
        let mut dst = vec![0f32; b * hs];
        let mut scratch = vec![0f32; hs];
        for bi in 0..b {
            let (g, r, o) = (bi * gh..(bi + 1) * gh, bi * hs..(bi + 1) * hs, bi * kw);
            let row = &res[o..o + kw];
            if lstm {
                lstm_row_bwd(
                    hs,
                    row,
                    &st[r.clone()],
                    1.0,
                    &gres[o..o + hs],
                    &gres[o + hs..o + 2 * hs],
                    &mut dgi[g],
                    &mut scratch,
                    &mut dst[r],
                );
            } else {
                gru_row_bwd(
                    hs,
                    row,
                    &st[r.clone()],
                    1.0,
                    &gres[o..o + hs],
                    &mut dgi[g.clone()],
                    &mut dgh[g],
                    &mut dst[r],
                );
            }
        }
        let dev = gi.device();
        let dgi = Tensor::from_vec(dgi, (b, gh), dev)?;
        let dgh = if lstm {
            dgi.clone()
        } else {
            Tensor::from_vec(dgh, (b, gh), dev)?
        };
        Ok((
            Some(dgi),
            Some(dgh),
            Some(Tensor::from_vec(dst, (b, hs), dev)?),
        ))
    }
}

/// Whether [`sequence`] can run this recurrence (GRU or LSTM, f32, on the CPU); otherwise the
/// caller steps op by op.
///
/// `SEQ2SEQ_FUSED=0` in the environment turns the fused ops off, so that a benchmark can measure
/// both paths in one binary.
pub fn supported(kind: CellKind, gi: &Tensor) -> bool {
    kind != CellKind::Rnn && on_cpu_f32(gi)
}

/// Runs one cell over a whole sequence.
///
/// `gi` `(T, B, G·H)` is the input projection, `mask` `(T, B)` marks real tokens (1) and padding
/// (0). Returns the outputs `(T, B, H)` — zero at padded steps — and the final state, the one at
/// each sequence's true length (for `reverse`, after its first token).
pub fn sequence(
    kind: CellKind,
    w_hh: &Tensor,
    b_hh: &Tensor,
    gi: &Tensor,
    init: &CellState,
    mask: Option<&Tensor>,
    reverse: bool,
) -> Result<(Tensor, CellState)> {
    let (t, b, _) = gi.dims3()?;
    let hs = w_hh.dim(1)?;
    let op = FusedRecurrence {
        kind,
        hidden: hs,
        reverse,
    };
    let w = Tensor::cat(&[w_hh, &b_hh.unsqueeze(1)?], 1)?;
    let mask_bt = match mask {
        Some(m) => m.t()?.to_dtype(DType::F32)?,
        None => Tensor::ones((b, t), DType::F32, gi.device())?,
    };
    let mut parts = vec![init.h.clone()];
    if kind == CellKind::Lstm {
        match &init.c {
            Some(c) => parts.push(c.clone()),
            None => parts.push(init.h.zeros_like()?),
        }
    }
    parts.push(mask_bt);
    let s0m = Tensor::cat(&parts, 1)?;
    let res = gi
        .contiguous()?
        .apply_op3(&w.contiguous()?, &s0m.contiguous()?, op)?;
    let h_all = res.narrow(2, 0, hs)?;
    let last = if reverse { 0 } else { t - 1 };
    let h_final = h_all.get(last)?;
    let c_final = if kind == CellKind::Lstm {
        Some(res.narrow(2, hs, hs)?.get(last)?)
    } else {
        None
    };
    let outs = match mask {
        Some(m) => h_all.broadcast_mul(&m.to_dtype(DType::F32)?.unsqueeze(2)?)?,
        None => h_all,
    };
    Ok((
        outs,
        CellState {
            h: h_final,
            c: c_final,
        },
    ))
}

/// One step of a cell from its input projection `gi` and recurrent product `gh` (`h W_hhᵀ +
/// b_hh`), both `(B, G·H)`: the new state.
pub fn step(kind: CellKind, gi: &Tensor, gh: &Tensor, state: &CellState) -> Result<CellState> {
    let hs = state.h.dim(1)?;
    let op = FusedStep { kind, hidden: hs };
    let prev = match (kind, &state.c) {
        (CellKind::Lstm, Some(c)) => c.clone(),
        (CellKind::Lstm, None) => state.h.zeros_like()?,
        _ => state.h.clone(),
    };
    let res = gi
        .contiguous()?
        .apply_op3(&gh.contiguous()?, &prev.contiguous()?, op)?;
    // Contiguous copies, so that the next step's matmul reads plain rows.
    let h = res.narrow(1, 0, hs)?.contiguous()?;
    let c = if kind == CellKind::Lstm {
        Some(res.narrow(1, hs, hs)?.contiguous()?)
    } else {
        None
    };
    Ok(CellState { h, c })
}

/// Checks the op against the op-by-op cell, values and gradients.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SeededVarMap;
    use crate::rnn::cell;
    use crate::twin::max_diff;
    use candle_core::{Device, Var};

    /// The reference: `Cell::step` per time step with the layer's masking, as `Rnn::forward`
    /// does it without the fused op.
    fn reference(
        c: &crate::Cell,
        gi: &Tensor,
        init: &CellState,
        mask: &Tensor,
        reverse: bool,
    ) -> Result<(Tensor, CellState)> {
        let t = gi.dim(0)?;
        let mut state = init.clone();
        let mut outs = vec![None; t];
        let order: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for i in order {
            let m = mask.get(i)?.unsqueeze(1)?;
            let new = c.step_ops(&gi.get(i)?, &state)?;
            outs[i] = Some(new.h.broadcast_mul(&m)?);
            let blend =
                |o: &Tensor, n: &Tensor| -> Result<Tensor> { o + (n - o)?.broadcast_mul(&m)? };
            state = CellState {
                h: blend(&state.h, &new.h)?,
                c: match (&state.c, &new.c) {
                    (Some(o), Some(n)) => Some(blend(o, n)?),
                    _ => None,
                },
            };
        }
        let outs: Vec<Tensor> = outs.into_iter().map(|o| o.unwrap()).collect();
        Ok((Tensor::stack(&outs, 0)?, state))
    }

    fn check(kind: CellKind, reverse: bool) -> Result<()> {
        let dev = Device::Cpu;
        let (t, b, i, h) = (5, 3, 4, 6);
        let vm = SeededVarMap::new(7);
        let c = cell(kind, i, h, "l0", vm.var_builder(&dev))?;
        let g = kind.gates() * h;
        let gi = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (t, b, g), &dev)?))?;
        let h0 = Var::from_tensor(&(Tensor::randn(0f32, 0.5, (b, h), &dev)?))?;
        let c0 = Var::from_tensor(&(Tensor::randn(0f32, 0.5, (b, h), &dev)?))?;
        // Lengths 5, 3 and 1: right padding, as the batches have it.
        let mask = Tensor::new(
            &[
                [1f32, 1., 1.],
                [1., 1., 0.],
                [1., 1., 0.],
                [1., 0., 0.],
                [1., 0., 0.],
            ],
            &dev,
        )?;
        let init = CellState {
            h: h0.as_tensor().clone(),
            c: (kind == CellKind::Lstm).then(|| c0.as_tensor().clone()),
        };
        // A loss that weighs every output and both final states differently.
        let weights = Tensor::randn(0f32, 1.0, (t, b, h), &dev)?;
        let loss = |outs: &Tensor, fin: &CellState| -> Result<Tensor> {
            let mut l = (outs * &weights)?.sum_all()?;
            l = (l + (fin.h.sqr()?.sum_all()? * 0.7)?)?;
            if let Some(cf) = &fin.c {
                l = (l + (cf.sqr()?.sum_all()? * 0.3)?)?;
            }
            Ok(l)
        };
        let (ro, rs) = reference(&c, gi.as_tensor(), &init, &mask, reverse)?;
        let (fo, fs) = sequence(
            kind,
            &c.w_hh,
            &c.b_hh,
            gi.as_tensor(),
            &init,
            Some(&mask),
            reverse,
        )?;
        assert!(max_diff(&ro, &fo)? < 1e-5, "{kind:?} outputs");
        assert!(max_diff(&rs.h, &fs.h)? < 1e-5, "{kind:?} final h");
        if let (Some(a), Some(b)) = (&rs.c, &fs.c) {
            assert!(max_diff(a, b)? < 1e-5, "{kind:?} final c");
        }
        let rg = loss(&ro, &rs)?.backward()?;
        let fg = loss(&fo, &fs)?.backward()?;
        let mut wrt: Vec<(&str, &Tensor)> = vec![
            ("gi", gi.as_tensor()),
            ("h0", h0.as_tensor()),
            ("w_hh", &c.w_hh),
            ("b_hh", &c.b_hh),
        ];
        if kind == CellKind::Lstm {
            wrt.push(("c0", c0.as_tensor()));
        }
        for (name, x) in wrt {
            let (a, b) = (rg.get(x).unwrap(), fg.get(x).unwrap());
            let d = max_diff(a, b)?;
            assert!(
                d < 1e-4,
                "{kind:?} reverse={reverse} grad {name}: max diff {d}"
            );
        }
        Ok(())
    }

    /// The fused single step (what the decoder runs per time step) against the op-by-op step.
    fn check_step(kind: CellKind) -> Result<()> {
        let dev = Device::Cpu;
        let (b, i, h) = (3, 4, 6);
        let vm = SeededVarMap::new(11);
        let c = cell(kind, i, h, "l0", vm.var_builder(&dev))?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, i), &dev)?)?;
        let h0 = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, h), &dev)?)?;
        let c0 = Var::from_tensor(&Tensor::randn(0f32, 0.5, (b, h), &dev)?)?;
        let init = CellState {
            h: h0.as_tensor().clone(),
            c: (kind == CellKind::Lstm).then(|| c0.as_tensor().clone()),
        };
        let wh = Tensor::randn(0f32, 1.0, (b, h), &dev)?;
        let wc = Tensor::randn(0f32, 1.0, (b, h), &dev)?;
        let run = |fused: bool| -> Result<(CellState, candle_core::backprop::GradStore)> {
            let gi = c.input_proj(x.as_tensor())?;
            // Two steps, so that the gradient also flows through a fused step's output state.
            let mut s = init.clone();
            for _ in 0..2 {
                s = if fused {
                    let gh = s.h.matmul(&c.w_hh.t()?)?.broadcast_add(&c.b_hh)?;
                    step(kind, &gi, &gh, &s)?
                } else {
                    c.step_ops(&gi, &s)?
                };
            }
            let mut l = (&s.h * &wh)?.sum_all()?;
            if let Some(cs) = &s.c {
                l = (l + (cs * &wc)?.sum_all()?)?;
            }
            let g = l.backward()?;
            Ok((s, g))
        };
        let (rs, rg) = run(false)?;
        let (fs, fg) = run(true)?;
        assert!(max_diff(&rs.h, &fs.h)? < 1e-6, "{kind:?} step h");
        if let (Some(a), Some(b)) = (&rs.c, &fs.c) {
            assert!(max_diff(a, b)? < 1e-6, "{kind:?} step c");
        }
        let mut wrt: Vec<(&str, &Tensor)> = vec![
            ("x", x.as_tensor()),
            ("h0", h0.as_tensor()),
            ("w_hh", &c.w_hh),
            ("b_hh", &c.b_hh),
        ];
        if kind == CellKind::Lstm {
            wrt.push(("c0", c0.as_tensor()));
        }
        for (name, t) in wrt {
            let d = max_diff(rg.get(t).unwrap(), fg.get(t).unwrap())?;
            assert!(d < 1e-5, "{kind:?} step grad {name}: max diff {d}");
        }
        Ok(())
    }

    #[test]
    fn fused_steps_match_the_op_by_op_step() -> Result<()> {
        check_step(CellKind::Gru)?;
        check_step(CellKind::Lstm)
    }

    #[test]
    fn gru_matches_the_op_by_op_cell_in_values_and_gradients() -> Result<()> {
        check(CellKind::Gru, false)?;
        check(CellKind::Gru, true)
    }

    #[test]
    fn lstm_matches_the_op_by_op_cell_in_values_and_gradients() -> Result<()> {
        check(CellKind::Lstm, false)?;
        check(CellKind::Lstm, true)
    }
}
