//! Batch norm in training form, its activation and 2×2 max pooling as one op on a channels-last
//! convolution output `y` `(B, H, W, C)`: `maxpool(act(ŷ·γ + β))`, `ŷ = (y − μ_B)/√(σ²_B + ε)`.
//!
//! The normalised and activated map is never stored: the forward pass writes only the pooled
//! quarter, and the backward pass recomputes each window from `y` and the batch statistics. Each
//! full-size tensor in candle's graph costs its gradient, a zeroed buffer and a sum in the
//! gradient store, so three ops here (norm, activation, pool) were nine full-size buffers of page
//! faults per layer in the backward pass; this is three.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, with_data};

use super::norm::{batch_stats, NormBackward};
use super::{add_into, par_uninit, Act};

/// Per-channel `z = act(y·scale + shift)`, the batch norm's affine form from the batch statistics.
struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
    inv_std: Vec<f32>,
    mean: Vec<f32>,
}

struct BnActPool {
    affine: Arc<Affine>,
    act: Act,
    /// Which element of each window the forward pass pooled, for the backward pass.
    argmax: Mutex<Vec<u8>>,
}

#[derive(Clone, Copy)]
struct Dims {
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(s: &Shape) -> Result<(usize, Self)> {
        let (b, h, w, c) = s.dims4()?;
        Ok((
            b,
            Self {
                h,
                w,
                c,
                ho: h / 2,
                wo: w / 2,
            },
        ))
    }
}

impl BnActPool {
    /// The gradient reaching `z` for one image's rows `2·oy, 2·oy + 1`: each window's pooled
    /// gradient goes to the maximum the forward pass chose (`argmax`, 0..4 in PyTorch's order:
    /// top-left, top-right, bottom-left, bottom-right), where the activation let it through
    /// (read from the pooled value). `dst` `(2, w, c)` is overwritten.
    fn window_grads(
        &self,
        d: &Dims,
        pooled: &[f32],
        argmax: &[u8],
        gout: &[f32],
        oy: usize,
        dst: &mut [f32],
    ) {
        let at = oy * d.wo * d.c..(oy + 1) * d.wo * d.c;
        let (p, a, g) = (&pooled[at.clone()], &argmax[at.clone()], &gout[at]);
        window_grad_rows(d, self.act, p, a, g, dst);
    }
}

avx2_dispatch!(fn window_grad_rows => window_grads_body(
    d: &Dims, act: Act, pooled: &[f32], argmax: &[u8], gout: &[f32], dst: &mut [f32]
));

/// [`BnActPool::window_grads`] for one line of windows (`pooled`, `argmax`, `gout`: `(wo, c)`):
/// each of a window's four positions gets the gradient where it was the maximum and zero
/// elsewhere, channel by channel without branches, so the loops run on vectors.
#[inline(always)]
fn window_grads_body(
    d: &Dims,
    act: Act,
    pooled: &[f32],
    argmax: &[u8],
    gout: &[f32],
    dst: &mut [f32],
) {
    let (w, c) = (d.w, d.c);
    // A last odd column belongs to no window.
    if w % 2 == 1 {
        for line in 0..2 {
            dst[(line * w + w - 1) * c..][..c].fill(0.0);
        }
    }
    for ox in 0..d.wo {
        let at = ox * c;
        let (p, a, g) = (&pooled[at..][..c], &argmax[at..][..c], &gout[at..][..c]);
        for (pos, line, col) in [
            (0u8, 0, 2 * ox),
            (1, 0, 2 * ox + 1),
            (2, 1, 2 * ox),
            (3, 1, 2 * ox + 1),
        ] {
            let out = &mut dst[(line * w + col) * c..][..c];
            for j in 0..c {
                let through = a[j] == pos && act.passes(p[j]);
                out[j] = if through { g[j] } else { 0.0 };
            }
        }
    }
}

avx2_dispatch!(fn pool_row => pool_row_body(
    d: &Dims, act: Act, affine: &Affine, top: &[f32], dst: &mut [f32], am: &mut [u8]
));

/// One line of windows of the forward pass: `top` holds the two input lines `(2, w, c)`; `dst`
/// and `am` `(wo, c)` get each window's maximum of `act(y·scale + shift)` and which position it
/// came from. Per activation, so the channel loop has no branch and runs on vectors.
#[inline(always)]
fn pool_row_body(d: &Dims, act: Act, affine: &Affine, top: &[f32], dst: &mut [f32], am: &mut [u8]) {
    match act {
        Act::None => pool_windows(d, |x| x, affine, top, dst, am),
        Act::Relu => pool_windows(d, |x| x.max(0.0), affine, top, dst, am),
        Act::Relu6 => pool_windows(d, |x| x.clamp(0.0, 6.0), affine, top, dst, am),
    }
}

#[inline(always)]
fn pool_windows(
    d: &Dims,
    act: impl Fn(f32) -> f32,
    affine: &Affine,
    top: &[f32],
    dst: &mut [f32],
    am: &mut [u8],
) {
    let (w, c) = (d.w, d.c);
    let (scale, shift) = (&affine.scale[..c], &affine.shift[..c]);
    for ox in 0..d.wo {
        let (l, r) = (2 * ox * c, (2 * ox + 1) * c);
        let window = [
            &top[l..][..c],
            &top[r..][..c],
            &top[w * c + l..][..c],
            &top[w * c + r..][..c],
        ];
        let (out, at) = (&mut dst[ox * c..][..c], &mut am[ox * c..][..c]);
        for j in 0..c {
            let z = |p: usize| act(window[p][j] * scale[j] + shift[j]);
            // The first maximum, as PyTorch's max pooling picks on ties.
            let (mut best, mut arg) = (z(0), 0u8);
            for p in 1..4 {
                let zp = z(p);
                let more = zp > best;
                best = if more { zp } else { best };
                arg = if more { p as u8 } else { arg };
            }
            out[j] = best;
            at[j] = arg;
        }
    }
}

impl CustomOp3 for BnActPool {
    fn name(&self) -> &'static str {
        "batch-norm-act-max-pool-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, d) = Dims::new(l1.shape())?;
        let y = cpu_slice(s1, l1, "y")?;
        let (w, c) = (d.w, d.c);
        let n = b * d.ho * d.wo * c;
        let (mut out, mut argmax) = (vec![0f32; n], vec![0u8; n]);
        out.par_chunks_mut(d.wo * c)
            .zip(argmax.par_chunks_mut(d.wo * c))
            .enumerate()
            .for_each(|(row, (dst, am))| {
                let (bi, oy) = (row / d.ho, row % d.ho);
                let top = &y[(bi * d.h + 2 * oy) * w * c..][..2 * w * c];
                pool_row(&d, self.act, &self.affine, top, dst, am);
            });
        *self.argmax.lock().expect("argmax lock") = argmax;
        Ok((CpuStorage::F32(out), Shape::from((b, d.ho, d.wo, c))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, d) = Dims::new(y.shape())?;
        let argmax = self.argmax.lock().expect("argmax lock");
        let res = res.contiguous()?;
        let (image_len, c) = (d.h * d.w * d.c, d.c);
        let gamma = gamma.to_vec1::<f32>()?;
        let Affine { mean, inv_std, .. } = &*self.affine;
        let n = (b * d.h * d.w) as f32;
        let row = d.w * c;
        let per_image = d.ho * d.wo * c;
        let per_image_sums: Vec<Mutex<Vec<f32>>> = (0..b).map(|_| Mutex::default()).collect();
        let dy = with_data(y, "y", |yd| {
            with_data(&grad.contiguous()?, "grad", |gd| {
                with_data(&res, "pooled", |pd| {
                    let nb = NormBackward { mean, inv_std };
                    // Pass 1: the gradient reaching z, written once into dy (every element: the
                    // windows' four positions, zeros outside any window), and per image
                    // Σ g_z and Σ g_z·ŷ per channel.
                    let fill = |bi: usize, dyb: &mut [MaybeUninit<f32>]| {
                        // SAFETY: f32 has no invalid values; every element is written below
                        // (window lines by `window_grads`, a last odd line by `fill`) before
                        // anything reads it.
                        let dyb = unsafe { &mut *(dyb as *mut [MaybeUninit<f32>] as *mut [f32]) };
                        let image = &yd[bi * image_len..][..image_len];
                        let at = bi * per_image..(bi + 1) * per_image;
                        let (p, a, g) = (&pd[at.clone()], &argmax[at.clone()], &gd[at]);
                        let mut acc = vec![0f32; 2 * c];
                        for oy in 0..d.ho {
                            let lines = 2 * oy * row..2 * (oy + 1) * row;
                            self.window_grads(&d, p, a, g, oy, &mut dyb[lines.clone()]);
                            nb.accumulate(&mut acc, &dyb[lines.clone()], &image[lines]);
                        }
                        dyb[2 * d.ho * row..].fill(0.0);
                        *per_image_sums[bi].lock().unwrap_or_else(|e| e.into_inner()) = acc;
                    };
                    // SAFETY: `fill` writes every element of its image.
                    let mut dy = unsafe { par_uninit(b * image_len, image_len, fill) };
                    // Added in image order: the same bits however the threads split the work.
                    let sums = per_image_sums
                        .into_iter()
                        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
                        .reduce(add_into)
                        .unwrap_or_else(|| vec![0f32; 2 * c]);
                    // Pass 2: dy from g_z in place.
                    dy.par_chunks_mut(image_len)
                        .zip(yd.par_chunks(image_len))
                        .for_each(|(dyb, image)| {
                            nb.input_grad_in_place(dyb, image, &sums, n, &gamma)
                        });
                    Ok((dy, sums))
                })
            })
        })?;
        let (dy, sums) = dy;
        let (db, dg) = (sums[..c].to_vec(), sums[c..].to_vec());
        let dev = y.device();
        Ok((
            Some(Tensor::from_vec(dy, y.shape(), dev)?),
            Some(Tensor::from_vec(dg, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// `maxpool2(act(batch_norm(y)))` with the batch's statistics, `y` `(B, H, W, C)` →
/// `(B, H/2, W/2, C)`; also returns the batch's mean and biased variance `(C)`.
pub fn batch_norm_act_max_pool(
    y: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, _, _, c) = y.dims4()?;
    let y = y.contiguous()?;
    if !seq2seq_nn::cpu::on_cpu_f32(&y) {
        return twin(&y, gamma, beta, eps, act);
    }
    let (mean, var) = with_data(&y, "y", |d| Ok(batch_stats(d, c)))?;
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
    let (g, bt) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
    let scale: Vec<f32> = g.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift = bt
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let dev = y.device();
    let (mean_t, var_t) = (
        Tensor::from_slice(&mean, c, dev)?,
        Tensor::from_vec(var, c, dev)?,
    );
    let op = BnActPool {
        affine: Arc::new(Affine {
            scale,
            shift,
            inv_std,
            mean,
        }),
        act,
        argmax: Mutex::new(Vec::new()),
    };
    let out = y.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((out, mean_t, var_t))
}

/// The op by op form: batch norm's twin, then the pool's.
pub(crate) fn twin(
    y: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, h, w, c) = y.dims4()?;
    let (z, mean, var) = super::norm::twin(&y.reshape((n * h * w, c))?, gamma, beta, eps, act)?;
    Ok((super::pool::twin(&z.reshape((n, h, w, c))?)?, mean, var))
}
