//! A depthwise convolution on channels-last images: `y = act(Σ_{ky,kx} x[iy, ix, c] · w[ky, kx, c]
//! + b[c])`, one k×k filter per channel, stride 1 or 2, `k/2` zero padding.
//!
//! The inner loop runs over contiguous channels (32 to 1152 in Lite0), so one output row is
//! `Wo·k²` vector multiply-adds with no gather; rows run in parallel. Stride 2 is computed directly,
//! not subsampled from a stride-1 result (the shifted-slice form did 4× the work there).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, with_data};

use std::mem::MaybeUninit;

use super::{bias_grad, out_size, par_uninit, Act};

#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &Shape, k: usize, stride: usize) -> Result<Self> {
        let (b, h, w, c) = x.dims4()?;
        Ok(Self::of(b, h, w, c, k, stride))
    }

    /// A `(b, h, w, c)` input filtered by `k`×`k` at `stride`.
    pub(super) fn of(b: usize, h: usize, w: usize, c: usize, k: usize, stride: usize) -> Self {
        Self {
            b,
            h,
            w,
            c,
            k,
            stride,
            ho: out_size(h, k, stride),
            wo: out_size(w, k, stride),
        }
    }

    /// The input's lines and columns.
    pub(super) fn input_size(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    /// The output's lines and columns.
    pub(super) fn out(&self) -> (usize, usize) {
        (self.ho, self.wo)
    }

    /// The input lines `lo..hi` that output lines `oy0..oy1` read.
    pub(super) fn input_lines(&self, oy0: usize, oy1: usize) -> (usize, usize) {
        let p = self.k / 2;
        let lo = (oy0 * self.stride).saturating_sub(p);
        let hi = ((oy1 - 1) * self.stride + self.k - p).min(self.h);
        (lo, hi)
    }

    /// The input coordinate that tap `t` of output coordinate `o` reads, if inside the image.
    #[inline(always)]
    fn input(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.k / 2)
            .filter(|&i| i < size)
    }
}

/// The largest kernel side (Lite0's are 3 and 5).
const MAX_K: usize = 7;

struct Depthwise {
    k: usize,
    stride: usize,
    act: Act,
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv-nhwc"
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
        let g = Geometry::new(l1.shape(), self.k, self.stride)?;
        if l2.shape().dims() != [g.k * g.k, g.c] || l3.shape().dims() != [g.c] {
            candle_core::bail!(
                "depthwise: x {:?}, w {:?} (want ({}, {})), b {:?}",
                l1.shape(),
                l2.shape(),
                g.k * g.k,
                g.c,
                l3.shape()
            );
        }
        let (x, w, bias) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        let act = self.act;
        // SAFETY: forward_row writes every channel of every pixel of its row.
        let out = unsafe {
            par_uninit(g.b * g.ho * g.wo * g.c, g.wo * g.c, |row, dst| {
                let (bi, oy) = (row / g.ho, row % g.ho);
                let image = &x[bi * g.h * g.w * g.c..][..g.h * g.w * g.c];
                forward_row(&g, image, 0, w, bias, act, oy, dst)
            })
        };

        Ok((CpuStorage::F32(out), Shape::from((g.b, g.ho, g.wo, g.c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.shape(), self.k, self.stride)?;
        let gy = self.act.backward(res, grad)?.contiguous()?;
        let db = bias_grad(&gy)?;
        let (kk, c) = (g.k * g.k, g.c);
        let mut dx = vec![0f32; g.b * g.h * g.w * c];
        // One partial filter gradient per image, summed after the parallel loop.
        let mut dw_parts = vec![0f32; g.b * kk * c];
        with_data(x, "x", |xd| {
            with_data(w, "w", |wd| {
                with_data(&gy, "grad", |gd| {
                    dx.par_chunks_mut(g.h * g.w * c)
                        .zip(dw_parts.par_chunks_mut(kk * c))
                        .enumerate()
                        .for_each(|(bi, (dxb, dwb))| backward_image(&g, xd, wd, gd, bi, dxb, dwb));
                    Ok(())
                })
            })
        })?;
        let mut dw = vec![0f32; kk * c];
        for part in dw_parts.chunks(kk * c) {
            for (d, p) in dw.iter_mut().zip(part) {
                *d += p;
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, (kk, c), dev)?),
            Some(db),
        ))
    }
}

avx2_dispatch!(pub(super) fn forward_row => forward_row_body(
    g: &Geometry,
    lines: &[f32],
    first: usize,
    w: &[f32],
    bias: &[f32],
    act: Act,
    oy: usize,
    dst: &mut [MaybeUninit<f32>],
));

/// Output line `oy` of one image into `dst` `(wo, c)`, reading input lines `first..` from `lines`
/// (`(·, w, c)`, every line the output line's taps reach): per output pixel,
/// channel blocks of 32 (then 8, then 1) accumulate every tap in registers and are written once,
/// biased and activated (for 32 channels, four AVX2 registers; the output is not reloaded per tap).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_row_body(
    g: &Geometry,
    x: &[f32],
    first: usize,
    w: &[f32],
    bias: &[f32],
    act: Act,
    oy: usize,
    dst: &mut [MaybeUninit<f32>],
) {
    let c = g.c;
    // The taps inside the image: (input line offset, first tap index) per ky, (column offset, kx)
    // per kx; no allocation per pixel (`depthwise` allows k ≤ MAX_K).
    let mut lines = [(0usize, 0usize); MAX_K];
    let mut nl = 0;
    for ky in 0..g.k {
        if let Some(iy) = g.input(oy, ky, g.h) {
            lines[nl] = ((iy - first) * g.w * c, ky * g.k);
            nl += 1;
        }
    }
    let lines = &lines[..nl];
    for (ox, o) in dst.chunks_exact_mut(c).enumerate() {
        let mut cols = [(0usize, 0usize); MAX_K];
        let mut nc = 0;
        for kx in 0..g.k {
            if let Some(ix) = g.input(ox, kx, g.w) {
                cols[nc] = (ix * c, kx);
                nc += 1;
            }
        }
        let cols = &cols[..nc];
        let mut cb = 0;
        cb = channel_blocks::<32>(x, w, bias, act, c, lines, cols, cb, o);
        cb = channel_blocks::<8>(x, w, bias, act, c, lines, cols, cb, o);
        channel_blocks::<1>(x, w, bias, act, c, lines, cols, cb, o);
    }
}

/// Channels `from..` of one output pixel `o`, `B` at a time while `B` fit; returns where it stopped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_blocks<const B: usize>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Act,
    c: usize,
    lines: &[(usize, usize)],
    cols: &[(usize, usize)],
    from: usize,
    o: &mut [MaybeUninit<f32>],
) -> usize {
    let mut cb = from;
    while cb + B <= c {
        let mut acc = [0f32; B];
        for &(line, t0) in lines {
            for &(col, kx) in cols {
                let xs: &[f32; B] = x[line + col + cb..][..B].try_into().unwrap();
                let ws: &[f32; B] = w[(t0 + kx) * c + cb..][..B].try_into().unwrap();
                for j in 0..B {
                    acc[j] += xs[j] * ws[j];
                }
            }
        }
        let out: &mut [MaybeUninit<f32>; B] = (&mut o[cb..cb + B]).try_into().unwrap();
        for j in 0..B {
            out[j].write(act.apply(acc[j] + bias[cb + j]));
        }
        cb += B;
    }
    cb
}

avx2_dispatch!(fn backward_image => backward_image_body(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    bi: usize,
    dxb: &mut [f32],
    dwb: &mut [f32],
));

/// Image `bi`'s input gradient `dxb` `(h, w, c)` and its share `dwb` `(k², c)` of the filters'.
#[inline(always)]
fn backward_image_body(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    bi: usize,
    dxb: &mut [f32],
    dwb: &mut [f32],
) {
    let c = g.c;
    let xb = &x[bi * g.h * g.w * c..(bi + 1) * g.h * g.w * c];
    let gb = &gy[bi * g.ho * g.wo * c..(bi + 1) * g.ho * g.wo * c];
    for oy in 0..g.ho {
        for ky in 0..g.k {
            let Some(iy) = g.input(oy, ky, g.h) else {
                continue;
            };
            for kx in 0..g.k {
                let t = ky * g.k + kx;
                let wt = &w[t * c..(t + 1) * c];
                for ox in 0..g.wo {
                    let Some(ix) = g.input(ox, kx, g.w) else {
                        continue;
                    };
                    let go = &gb[(oy * g.wo + ox) * c..(oy * g.wo + ox + 1) * c];
                    let at = (iy * g.w + ix) * c;
                    let xin = &xb[at..at + c];
                    for ((d, &gv), &wv) in dxb[at..at + c].iter_mut().zip(go).zip(wt) {
                        *d += gv * wv;
                    }
                    for ((d, &gv), &xv) in dwb[t * c..(t + 1) * c].iter_mut().zip(go).zip(xin) {
                        *d += gv * xv;
                    }
                }
            }
        }
    }
}

/// `act(depthwise(x, w) + b)`: `x` `(B, H, W, C)` channels-last, `w` `(k², C)` (tap-major, row by
/// row), `b` `(C)`; stride 1 or 2 with `k/2` zero padding → `(B, Ho, Wo, C)`.
pub fn depthwise(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    k: usize,
    stride: usize,
    act: Act,
) -> Result<Tensor> {
    if k.is_multiple_of(2) || k > MAX_K || !(1..=2).contains(&stride) {
        candle_core::bail!(
            "depthwise: odd kernels up to {MAX_K} and strides 1 or 2 only, got k {k}, stride {stride}"
        );
    }
    if !seq2seq_nn::cpu::on_cpu_f32(x) {
        return twin(x, w, b, k, stride, act);
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        Depthwise { k, stride, act },
    )
}

/// The op by op form (a sum of k² shifted slices scaled per channel, subsampled for stride 2):
/// the reference the fused op is tested against, and the path off the CPU.
pub(crate) fn twin(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    k: usize,
    stride: usize,
    act: Act,
) -> Result<Tensor> {
    let c = x.dim(3)?;
    let mut acc = b.reshape((1, 1, 1, c))?;
    for (t, shifted) in super::shifted_taps(x, k)?.iter().enumerate() {
        let tap = w.get(t)?.reshape((1, 1, 1, c))?;
        acc = shifted.broadcast_mul(&tap)?.broadcast_add(&acc)?;
    }
    if stride == 2 {
        acc = super::every_second(&acc)?;
    }
    super::act_twin(&acc, act)
}
