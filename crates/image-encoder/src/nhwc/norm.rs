//! Batch norm in training form with its activation, on channels-last rows `(N, C)`:
//! `act((y − μ_B) / √(σ²_B + ε) · γ + β)` with the batch's per-channel mean and biased variance.
//!
//! Op by op this is six full-size temporaries (centred, squared, scaled, shifted, activated and
//! their gradients), which at the small CNN's first layer (32 × 96 × 96 × 32 floats) made page
//! faults the largest cost of a training step. Here the statistics are one parallel pass, the
//! output one more, and the backward pass the textbook closed form in two passes.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, with_data};

use super::{add_into, channel_sums, par_rows, Act};

use super::CHUNK_ROWS;

/// The batch statistics the forward pass used, kept for the backward pass.
struct Stats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

struct BatchNormTrain {
    stats: Arc<Stats>,
    act: Act,
}

/// The batch mean and biased variance of each channel of `y` `(n, c)` (two passes: the
/// one-pass `E[y²] − E[y]²` loses the variance to cancellation when the mean is large).
pub(super) fn batch_stats(y: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (y.len() / c).max(1) as f32;
    let mut mean = channel_sums(y, c, |row, acc| {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v)
    });
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = channel_sums(y, c, |row, acc| {
        for ((a, v), m) in acc.iter_mut().zip(row).zip(&mean) {
            *a += (v - m) * (v - m);
        }
    });
    var.iter_mut().for_each(|v| *v /= n);
    (mean, var)
}

/// Batch norm's backward pass per channel, in closed form: with `ŷ = (y − μ)·inv_std`, the sums
/// `Σg` and `Σg·ŷ` over the batch, then `dy = γ·inv_std/N · (N·g − Σg − ŷ·Σg·ŷ)`.
pub(super) struct NormBackward<'a> {
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
}

impl NormBackward<'_> {
    /// Adds rows of `g` and `y` (`C` channels each) to `acc` `(2, C)`: `Σg`, then `Σg·ŷ`.
    pub fn accumulate(&self, acc: &mut [f32], g: &[f32], y: &[f32]) {
        accumulate_rows(self.mean, self.inv_std, acc, g, y);
    }

    /// Rows of `dy` from rows of `g` and `y`, the sums `acc` `(2, C)` over `n` values per
    /// channel, and `gamma`.
    pub fn input_grad(
        &self,
        dy: &mut [f32],
        g: &[f32],
        y: &[f32],
        sums: &[f32],
        n: f32,
        gamma: &[f32],
    ) {
        input_grad_rows(self.mean, self.inv_std, dy, g, y, sums, n, gamma);
    }

    /// [`Self::input_grad`] with `g` read from `dy` and overwritten.
    pub fn input_grad_in_place(
        &self,
        dy: &mut [f32],
        y: &[f32],
        sums: &[f32],
        n: f32,
        gamma: &[f32],
    ) {
        input_grad_in_place_rows(self.mean, self.inv_std, dy, y, sums, n, gamma);
    }
}

// The two passes over every activation of batch norm's backward: compiled for AVX2 where the
// CPU has it (8 channels an instruction rather than SSE's 4). Each channel's sums still run
// row by row, so the results do not change.
avx2_dispatch!(fn accumulate_rows => accumulate_body(
    mean: &[f32], inv_std: &[f32], acc: &mut [f32], g: &[f32], y: &[f32]
));

#[inline(always)]
fn accumulate_body(mean: &[f32], inv_std: &[f32], acc: &mut [f32], g: &[f32], y: &[f32]) {
    let c = mean.len();
    let (sum_g, sum_gy) = acc.split_at_mut(c);
    for (gr, yr) in g.chunks_exact(c).zip(y.chunks_exact(c)) {
        let sums = sum_g.iter_mut().zip(sum_gy.iter_mut());
        let stats = mean.iter().zip(inv_std);
        for (((sg, sgy), (&gv, &yv)), (&m, &is)) in sums.zip(gr.iter().zip(yr)).zip(stats) {
            *sg += gv;
            *sgy += gv * (yv - m) * is;
        }
    }
}

avx2_dispatch!(fn input_grad_rows => input_grad_body(
    mean: &[f32], inv_std: &[f32], dy: &mut [f32], g: &[f32], y: &[f32], sums: &[f32], n: f32,
    gamma: &[f32]
));

avx2_dispatch!(fn input_grad_in_place_rows => input_grad_in_place_body(
    mean: &[f32], inv_std: &[f32], dy: &mut [f32], y: &[f32], sums: &[f32], n: f32, gamma: &[f32]
));

#[inline(always)]
fn input_grad_in_place_body(
    mean: &[f32],
    inv_std: &[f32],
    dy: &mut [f32],
    y: &[f32],
    sums: &[f32],
    n: f32,
    gamma: &[f32],
) {
    let c = mean.len();
    for (dr, yr) in dy.chunks_exact_mut(c).zip(y.chunks_exact(c)) {
        input_grad_row(mean, inv_std, (dr, None), yr, sums, n, gamma);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn input_grad_body(
    mean: &[f32],
    inv_std: &[f32],
    dy: &mut [f32],
    g: &[f32],
    y: &[f32],
    sums: &[f32],
    n: f32,
    gamma: &[f32],
) {
    let c = mean.len();
    let rows = dy
        .chunks_exact_mut(c)
        .zip(g.chunks_exact(c).zip(y.chunks_exact(c)));
    for (dr, (gr, yr)) in rows {
        input_grad_row(mean, inv_std, (dr, Some(gr)), yr, sums, n, gamma);
    }
}

/// One row of `dy = γ·inv_std/N · (N·g − Σg − ŷ·Σg·ŷ)`, with `g` from its own row or, if none,
/// read from `dy`'s row before it is overwritten.
#[inline(always)]
fn input_grad_row(
    mean: &[f32],
    inv_std: &[f32],
    (dr, g): (&mut [f32], Option<&[f32]>),
    yr: &[f32],
    sums: &[f32],
    n: f32,
    gamma: &[f32],
) {
    let c = mean.len();
    let (db, dg) = sums.split_at(c);
    let (dr, yr, db, dg, gamma) = (&mut dr[..c], &yr[..c], &db[..c], &dg[..c], &gamma[..c]);
    let g = g.map(|g| &g[..c]);
    for j in 0..c {
        let gj = match g {
            Some(g) => g[j],
            None => dr[j],
        };
        let yhat = (yr[j] - mean[j]) * inv_std[j];
        dr[j] = gamma[j] * inv_std[j] / n * (n * gj - db[j] - yhat * dg[j]);
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train-nhwc"
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
        let (n, c) = l1.shape().dims2()?;
        let (y, gamma, beta) = (
            cpu_slice(s1, l1, "y")?,
            cpu_slice(s2, l2, "gamma")?,
            cpu_slice(s3, l3, "beta")?,
        );
        // y·scale + shift, per channel.
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&self.stats.inv_std)
            .map(|(g, s)| g * s)
            .collect();
        let shift: Vec<f32> = beta
            .iter()
            .zip(&self.stats.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let act = self.act;
        let rows = n.div_ceil(CHUNK_ROWS);
        let mut out = par_rows(rows, CHUNK_ROWS * c, |r, dst| {
            let src = &y[r * CHUNK_ROWS * c..((r + 1) * CHUNK_ROWS).min(n) * c];
            for (o, i) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                for (((o, &v), &s), &t) in o.iter_mut().zip(i).zip(&scale).zip(&shift) {
                    *o = act.apply(v * s + t);
                }
            }
        });
        out.truncate(n * c);
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = y.dims2()?;
        let g = self.act.backward(res, grad)?.contiguous()?;
        let gamma = gamma.to_vec1::<f32>()?;
        let Stats { mean, inv_std } = &*self.stats;
        let mut dy = vec![0f32; n * c];
        let (dbeta, dgamma) = with_data(y, "y", |yd| {
            with_data(&g, "grad", |gd| {
                let nb = NormBackward { mean, inv_std };
                let sums = gd
                    .par_chunks(CHUNK_ROWS * c)
                    .zip(yd.par_chunks(CHUNK_ROWS * c))
                    .map(|(gc, yc)| {
                        let mut acc = vec![0f32; 2 * c];
                        nb.accumulate(&mut acc, gc, yc);
                        acc
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .reduce(add_into)
                    .unwrap_or_else(|| vec![0f32; 2 * c]);
                let chunks = gd
                    .par_chunks(CHUNK_ROWS * c)
                    .zip(yd.par_chunks(CHUNK_ROWS * c));
                dy.par_chunks_mut(CHUNK_ROWS * c)
                    .zip(chunks)
                    .for_each(|(dc, (gc, yc))| nb.input_grad(dc, gc, yc, &sums, n as f32, &gamma));
                let (db, dg) = sums.split_at(c);
                Ok((db.to_vec(), dg.to_vec()))
            })
        })?;
        let dev = y.device();
        Ok((
            Some(Tensor::from_vec(dy, (n, c), dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

/// Batch norm in training form and `act` on rows `y` `(N, C)`; returns the output and the batch's
/// mean and biased variance `(C)` (for the running statistics, without gradient).
pub fn batch_norm_train(
    y: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c) = y.dims2()?;
    let y = y.contiguous()?;
    if !seq2seq_nn::cpu::on_cpu_f32(&y) {
        return twin(&y, gamma, beta, eps, act);
    }
    let (mean, var) = with_data(&y, "y", |d| Ok(batch_stats(d, c)))?;
    let inv_std = var.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
    let dev = y.device();
    let (mean_t, var_t) = (
        Tensor::from_slice(&mean, c, dev)?,
        Tensor::from_vec(var, c, dev)?,
    );
    let op = BatchNormTrain {
        stats: Arc::new(Stats { mean, inv_std }),
        act,
    };
    let out = y.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((out, mean_t, var_t))
}

/// The op by op form: the reference the fused op is tested against, and the path off the CPU.
pub(crate) fn twin(
    y: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = y.mean_keepdim(0)?;
    let centred = y.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(0)?;
    let out = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)?;
    Ok((
        super::act_twin(&out, act)?,
        mean.flatten_all()?.detach(),
        var.flatten_all()?.detach(),
    ))
}
