//! A 3×3, stride-1, zero-padded convolution on channels-last images by Winograd's minimal
//! filtering F(2×2, 3×3) (Lavin & Gray 2016): `act(conv(x, W) + b)` with the same operands as
//! [`super::conv2d`], 2.25× fewer multiplications in the gemms.
//!
//! Each 2×2 block of output pixels (a tile) reads a 4×4 input patch `d`. With the 4×4 transforms
//! `V = Bᵀ d B` of the patch and `U = G g Gᵀ` of each 3×3 filter, the tile is `Aᵀ (U ⊙ V) A`; summed
//! over the input channels, the 16 elementwise products become 16 gemms `(tiles × C)·(C × M)`, one
//! per transform point ξ. The backward pass is the same algebra transposed: with `Ĝ = A g Aᵀ` of
//! each output-gradient tile, `dU[ξ] = V[ξ]ᵀ Ĝ[ξ]` (then `dW = Gᵀ dU G`) and the patch gradient is
//! `B (Σ_m Ĝ ⊙ U) Bᵀ`, added onto the overlapping 4×4 patches. Everything runs a block of tiles
//! (part of one image, or a group of small images) at a time, so the transformed tiles stay in
//! cache and are never a tensor; the transforms themselves are in `tiles`.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, matmul_with, with_data, Parallelism};

use super::{add_into, bias_act, par_uninit, view, Act};
use tiles::{
    filter_transform, filter_transform_grad, plane, scatter_patches, transform_grad,
    transform_input, transform_output, Tiles, XI,
};

mod lanes;
mod tiles;

struct Winograd {
    act: Act,
}

/// The operands' sizes: batch, the image's tiles, input and output channels.
fn sizes(x: &Shape, w: &Shape) -> Result<(usize, Tiles, usize, usize)> {
    let (n, h, wd, c) = x.dims4()?;
    let (kk, m) = w.dims2()?;
    if kk != 9 * c {
        candle_core::bail!("winograd conv: x {x:?}, w {w:?} (want {} rows)", 9 * c);
    }
    Ok((n, Tiles::new(h, wd), c, m))
}

impl CustomOp3 for Winograd {
    fn name(&self) -> &'static str {
        "conv3x3-winograd-nhwc"
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
        let (n, tiles, c, m) = sizes(l1.shape(), l2.shape())?;
        if l3.shape().dims() != [m] {
            candle_core::bail!("winograd conv: bias {:?}, want ({m})", l3.shape());
        }
        let (x, w, bias) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        let u = filter_transform(w, c * m);
        let (pixels, act) = (tiles.h * tiles.w, self.act);
        let (images, block) = tiles.blocking();
        let zero = vec![0f32; c];
        let fill = |gi: usize, dst: &mut [MaybeUninit<f32>]| {
            // SAFETY: f32 has no invalid values; every element is written below before it is
            // read (each output pixel belongs to exactly one tile).
            let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
            let imgs = dst.len() / (pixels * m);
            let xs = &x[gi * images * pixels * c..][..imgs * pixels * c];
            let total = imgs * tiles.count();
            with_scratch(XI * plane(block, c), XI * plane(block, m), |v, mb| {
                for first in (0..total).step_by(block) {
                    let nb = block.min(total - first);
                    let (v, mb) = (&mut v[..XI * plane(nb, c)], &mut mb[..XI * plane(nb, m)]);
                    transform_input(&tiles, xs, c, first, nb, &zero, v);
                    for xi in 0..XI {
                        let (lhs, rhs) = (
                            view(&v[xi * plane(nb, c)..], c, 1),
                            view(&u[xi * c * m..], m, 1),
                        );
                        let dst = &mut mb[xi * plane(nb, m)..][..nb * m];
                        matmul_with(Parallelism::None, (nb, m, c), dst, m, false, lhs, rhs);
                    }
                    transform_output(&tiles, mb, m, first, nb, dst);
                }
            });
            bias_act(dst, bias, act);
        };
        // SAFETY: `fill` writes every element of its chunk (whole images).
        let out = unsafe { par_uninit(n * pixels * m, images * pixels * m, fill) };
        Ok((CpuStorage::F32(out), Shape::from((n, tiles.h, tiles.w, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, tiles, c, m) = sizes(x.shape(), w.shape())?;
        let gy = self.act.backward(res, grad)?.contiguous()?;
        let want_dx = x.track_op();
        let pixels = tiles.h * tiles.w;
        let (images, block) = tiles.blocking();
        let mut dx = vec![0f32; if want_dx { n * pixels * c } else { 0 }];
        let acc = with_data(x, "x", |xd| {
            with_data(w, "w", |wd| {
                with_data(&gy, "grad", |gd| {
                    let u = filter_transform(wd, c * m);
                    let group = |gi: usize, dxg: &mut [f32], acc: &mut [f32]| {
                        let (first, imgs) = (gi * images, images.min(n - gi * images));
                        let xs = &xd[first * pixels * c..][..imgs * pixels * c];
                        let g = &gd[first * pixels * m..][..imgs * pixels * m];
                        let shape = (imgs * tiles.count(), block, c);
                        with_scratch(XI * plane(block, c), XI * plane(block, m), |v, gh| {
                            grad_group(&tiles, shape, xs, g, &u, acc, dxg, (v, gh))
                        });
                    };
                    // One partial sum per group, added in group order: the same bits on every
                    // run, however the threads split the work.
                    let zero = || vec![0f32; XI * c * m + m];
                    let partial: Vec<Vec<f32>> = if want_dx {
                        dx.par_chunks_mut(images * pixels * c)
                            .enumerate()
                            .map(|(gi, dxg)| {
                                let mut acc = zero();
                                group(gi, dxg, &mut acc);
                                acc
                            })
                            .collect()
                    } else {
                        (0..n.div_ceil(images))
                            .into_par_iter()
                            .map(|gi| {
                                let mut acc = zero();
                                group(gi, &mut [], &mut acc);
                                acc
                            })
                            .collect()
                    };
                    Ok(partial.into_iter().reduce(add_into).unwrap_or_else(zero))
                })
            })
        })?;
        let dev = x.device();
        let dw = filter_transform_grad(&acc[..XI * c * m], c * m);
        let dx = if want_dx {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dw, (9 * c, m), dev)?),
            Some(Tensor::from_slice(&acc[XI * c * m..], m, dev)?),
        ))
    }
}

/// One group of images' share of the gradients: `dU` (16 × C × M) and `db` (M) added into `acc`,
/// and the input gradient into `dx` (empty when not wanted). `shape` is the group's tiles, the
/// tiles per block and the input channels; `u` is the transformed filters; `v` and `gh` are the
/// transform buffers for a block (any contents: every element read is written first).
#[allow(clippy::too_many_arguments)]
fn grad_group(
    tiles: &Tiles,
    (total, block, c): (usize, usize, usize),
    xs: &[f32],
    g: &[f32],
    u: &[f32],
    acc: &mut [f32],
    dx: &mut [f32],
    (v, gh): (&mut [f32], &mut [f32]),
) {
    let m = u.len() / (XI * c);
    let (zero_c, zero_m) = (&vec![0f32; c][..], &vec![0f32; m][..]);
    let (du, db) = acc.split_at_mut(XI * c * m);
    for row in g.chunks_exact(m) {
        db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
    }
    for first in (0..total).step_by(block) {
        let nb = block.min(total - first);
        let (v, gh) = (&mut v[..XI * plane(nb, c)], &mut gh[..XI * plane(nb, m)]);
        transform_input(tiles, xs, c, first, nb, zero_c, v);
        transform_grad(tiles, g, m, first, nb, zero_m, gh);
        for xi in 0..XI {
            let vx = &v[xi * plane(nb, c)..][..nb * c];
            let gx = &gh[xi * plane(nb, m)..][..nb * m];
            // dU[ξ] (C × M) += V[ξ]ᵀ · Ĝ[ξ]
            let dst = &mut du[xi * c * m..][..c * m];
            let (lhs, rhs) = (view(vx, 1, c), view(gx, m, 1));
            matmul_with(Parallelism::None, (c, m, nb), dst, m, true, lhs, rhs);
        }
        if dx.is_empty() {
            continue;
        }
        // S[ξ] (tiles × C) = Ĝ[ξ] · U[ξ]ᵀ, written over V (no longer needed).
        for xi in 0..XI {
            let gx = &gh[xi * plane(nb, m)..][..nb * m];
            let (lhs, rhs) = (view(gx, m, 1), view(&u[xi * c * m..], 1, m));
            let dst = &mut v[xi * plane(nb, c)..][..nb * c];
            matmul_with(Parallelism::None, (nb, c, m), dst, c, false, lhs, rhs);
        }
        scatter_patches(tiles, v, c, first, nb, dx);
    }
}

thread_local! {
    /// Each thread's two transform buffers, kept across blocks, groups and calls: allocated per
    /// group of images, their zeroing was ~6 % of the small CNN's training step.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = RefCell::default();
}

/// Runs `f` on this thread's scratch buffers cut to `a` and `b` floats. Their contents are
/// whatever an earlier call left: `f` must write every element it reads.
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (x, y) = &mut *bufs;
            for (buf, len) in [(&mut *x, a), (&mut *y, b)] {
                if buf.len() < len {
                    // NaN under test: an element read before it is written shows in the results.
                    buf.resize(len, if cfg!(test) { f32::NAN } else { 0.0 });
                }
            }
            f(&mut x[..a], &mut y[..b])
        }
        // Only if `f` ever ran a nested parallel job that landed on this thread.
        Err(_) => f(&mut vec![0f32; a], &mut vec![0f32; b]),
    })
}

/// `act(conv3x3(x, w) + b)` with stride 1 and zero padding 1 by Winograd's F(2×2, 3×3): the
/// operands and result of [`super::conv2d`] with `k = 3`, on the CPU in f32.
pub(crate) fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Winograd { act })
}
