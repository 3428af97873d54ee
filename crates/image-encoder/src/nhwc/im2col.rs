//! The k×k patches of a channels-last image as rows, `(B, H, W, C)` → `(B, Ho, Wo, k²·C)`
//! (tap-major: `[ky][kx][c]`), stride 1 or 2 with `k/2` zero padding. A dense convolution is then
//! one [`super::pointwise`] gemm with the filters laid out `(k²·C, C_out)`.
//!
//! The backward pass (col2im) adds every patch's gradient back onto the pixels it was read from.
//! candle's own `conv2d` backward runs a transposed convolution that took ~85 % of the small
//! CNN's training step.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, with_data};

use super::{out_size, par_rows};

struct Im2col {
    k: usize,
    stride: usize,
}

impl Im2col {
    /// `(b, h, w, c, ho, wo)` of an input shape.
    fn dims(&self, s: &Shape) -> Result<(usize, usize, usize, usize, usize, usize)> {
        let (b, h, w, c) = s.dims4()?;
        let (ho, wo) = (
            out_size(h, self.k, self.stride),
            out_size(w, self.k, self.stride),
        );
        Ok((b, h, w, c, ho, wo))
    }

    /// The input coordinate that tap `t` of output coordinate `o` reads, if inside the image.
    #[inline(always)]
    fn input(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.k / 2)
            .filter(|&i| i < size)
    }
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c, ho, wo) = self.dims(l.shape())?;
        let x = cpu_slice(s, l, "x")?;
        let k = self.k;
        let patch = k * k * c;
        let out = par_rows(b * ho, wo * patch, |row, dst| {
            let (bi, oy) = (row / ho, row % ho);
            // The padding's taps stay 0.
            dst.fill(0.0);
            for ky in 0..k {
                let Some(iy) = self.input(oy, ky, h) else {
                    continue;
                };
                let line = &x[(bi * h + iy) * w * c..(bi * h + iy + 1) * w * c];
                for (ox, p) in dst.chunks_exact_mut(patch).enumerate() {
                    for kx in 0..k {
                        if let Some(ix) = self.input(ox, kx, w) {
                            let at = (ky * k + kx) * c;
                            p[at..at + c].copy_from_slice(&line[ix * c..(ix + 1) * c]);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, patch))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, h, w, c, ho, wo) = self.dims(x.shape())?;
        let k = self.k;
        let patch = k * k * c;
        let mut dx = vec![0f32; b * h * w * c];
        with_data(&grad.contiguous()?, "grad", |g| {
            let per_image = ho * wo * patch;
            dx.par_chunks_mut(h * w * c)
                .enumerate()
                .for_each(|(bi, dxb)| {
                    col2im(self, (h, w, c), &g[bi * per_image..][..per_image], dxb)
                });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// The `k`×`k` patches of `x` `(B, H, W, C)` at `stride` (1 or 2), `k/2` zero padding →
/// `(B, Ho, Wo, k²·C)`.
pub fn im2col(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    if k.is_multiple_of(2) || !(1..=2).contains(&stride) {
        candle_core::bail!(
            "im2col: odd kernels and strides 1 or 2 only, got k {k}, stride {stride}"
        );
    }
    if !seq2seq_nn::cpu::on_cpu_f32(x) {
        return twin(x, k, stride);
    }
    x.contiguous()?.apply_op1(Im2col { k, stride })
}

/// The op by op form (shifted slices concatenated along the channels, subsampled for stride 2).
pub(crate) fn twin(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let p = k / 2;
    let xp = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
    let (h1, w1) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            taps.push(xp.narrow(1, ky, h1)?.narrow(2, kx, w1)?);
        }
    }
    let cols = Tensor::cat(&taps, 3)?;
    if stride == 1 {
        return Ok(cols);
    }
    let every2 = |n: usize| Tensor::arange_step(0u32, n as u32, 2, x.device());
    cols.contiguous()?
        .index_select(&every2(h1)?, 1)?
        .contiguous()?
        .index_select(&every2(w1)?, 2)
}

avx2_dispatch!(fn col2im => col2im_body(
    op: &Im2col,
    dims: (usize, usize, usize),
    cols: &[f32],
    dx: &mut [f32],
));

/// One image's patch gradients `cols` `(ho, wo, k²·c)` added back onto its pixels `dx` `(h, w, c)`.
#[inline(always)]
fn col2im_body(op: &Im2col, (h, w, c): (usize, usize, usize), cols: &[f32], dx: &mut [f32]) {
    let k = op.k;
    let patch = k * k * c;
    let (ho, wo) = (out_size(h, k, op.stride), out_size(w, k, op.stride));
    for oy in 0..ho {
        for ox in 0..wo {
            let p = &cols[(oy * wo + ox) * patch..][..patch];
            for ky in 0..k {
                let Some(iy) = op.input(oy, ky, h) else {
                    continue;
                };
                for kx in 0..k {
                    let Some(ix) = op.input(ox, kx, w) else {
                        continue;
                    };
                    let at = (iy * w + ix) * c;
                    let src = &p[(ky * k + kx) * c..][..c];
                    for (d, s) in dx[at..at + c].iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}
