//! A dense k×k convolution on channels-last images, `act(conv(x, W) + b)`: `x` `(B, H, W, C)`,
//! `W` `(k²·C, M)` (tap-major rows: `[ky][kx][c]`), stride 1 or 2, `k/2` zero padding.
//!
//! The patches (im2col) are built one block of output pixels at a time into a scratch buffer and
//! multiplied there, never as a whole `(B·Ho·Wo, k²·C)` tensor: at the small CNN's second layer
//! that tensor is 85 MB, and its gradient went through candle's gradient store (a zeroed copy and
//! an add each time) three times per step. The backward pass rebuilds each block's patches for
//! `dW += patchesᵀ·g`, and adds `g·Wᵀ` back onto the pixels (col2im) image by image, so that no
//! two threads write the same pixel.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, matmul_with, with_data, Parallelism};

use super::{add_into, bias_act, out_size, par_rows, view, Act};

/// Output pixels per block: a block's patches (≤ 128 × 1152 floats) stay in L2.
const BLOCK: usize = 128;

/// Input channels from which a 3×3, stride-1 convolution runs as Winograd's F(2×2, 3×3)
/// (`super::winograd`). Measured forward and backward on one thread against this im2col: 1.15×
/// at 32 channels (48×48), 1.55× at 64, 1.9× at 128, but 0.85× at 3 (the RGB stem), whose
/// gemms are too thin for the transforms to pay.
const WINOGRAD_MIN_CHANNELS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Geometry {
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &Shape, k: usize, stride: usize) -> Result<(usize, Self)> {
        let (b, h, w, c) = x.dims4()?;
        let (ho, wo) = (out_size(h, k, stride), out_size(w, k, stride));
        Ok((
            b,
            Self {
                h,
                w,
                c,
                k,
                stride,
                ho,
                wo,
            },
        ))
    }

    fn patch(&self) -> usize {
        self.k * self.k * self.c
    }

    /// The input coordinate that tap `t` of output coordinate `o` reads, if inside the image.
    #[inline(always)]
    fn input(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.k / 2)
            .filter(|&i| i < size)
    }
}

/// The patches of one image's output pixels `first..first + rows` into `cols` `(rows, k²·c)`.
fn gather(g: &Geometry, image: &[f32], first: usize, cols: &mut [f32]) {
    let (c, k, patch) = (g.c, g.k, g.patch());
    cols.fill(0.0);
    for (r, p) in cols.chunks_exact_mut(patch).enumerate() {
        let (oy, ox) = ((first + r) / g.wo, (first + r) % g.wo);
        for ky in 0..k {
            let Some(iy) = g.input(oy, ky, g.h) else {
                continue;
            };
            for kx in 0..k {
                if let Some(ix) = g.input(ox, kx, g.w) {
                    let (at, from) = ((ky * k + kx) * c, (iy * g.w + ix) * c);
                    if c == 3 {
                        // RGB: a fixed-size copy, not a call to memcpy per tap.
                        p[at..at + 3].copy_from_slice(&image[from..from + 3]);
                    } else {
                        p[at..at + c].copy_from_slice(&image[from..from + c]);
                    }
                }
            }
        }
    }
}

avx2_dispatch!(fn scatter => scatter_body(g: &Geometry, cols: &[f32], first: usize, dx: &mut [f32]));

/// col2im: the patch gradients `cols` of output pixels `first..` added onto the image's `dx`.
#[inline(always)]
fn scatter_body(g: &Geometry, cols: &[f32], first: usize, dx: &mut [f32]) {
    let (c, k, patch) = (g.c, g.k, g.patch());
    for (r, p) in cols.chunks_exact(patch).enumerate() {
        let (oy, ox) = ((first + r) / g.wo, (first + r) % g.wo);
        for ky in 0..k {
            let Some(iy) = g.input(oy, ky, g.h) else {
                continue;
            };
            for kx in 0..k {
                let Some(ix) = g.input(ox, kx, g.w) else {
                    continue;
                };
                let at = (iy * g.w + ix) * c;
                let src = &p[(ky * k + kx) * c..][..c];
                for (d, s) in dx[at..at + c].iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
}

struct Conv {
    k: usize,
    stride: usize,
    act: Act,
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "conv2d-nhwc"
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
        let (b, g) = Geometry::new(l1.shape(), self.k, self.stride)?;
        let (kk, m) = l2.shape().dims2()?;
        if kk != g.patch() || l3.shape().dims() != [m] {
            candle_core::bail!(
                "conv: x {:?}, w {:?} (want {} rows), b {:?}",
                l1.shape(),
                l2.shape(),
                g.patch(),
                l3.shape()
            );
        }
        let (x, w, bias) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        let (pixels, act) = (g.ho * g.wo, self.act);
        let blocks_per_image = pixels.div_ceil(BLOCK);
        let image_len = g.h * g.w * g.c;
        // Blocks never straddle two images; each image's last block may be short.
        let mut out = par_rows(b * blocks_per_image, BLOCK * m, |blk, dst| {
            let (bi, first) = (blk / blocks_per_image, (blk % blocks_per_image) * BLOCK);
            let rows = BLOCK.min(pixels - first);
            let mut cols = vec![0f32; rows * kk];
            gather(&g, &x[bi * image_len..][..image_len], first, &mut cols);
            let dst = &mut dst[..rows * m];
            let (lhs, rhs) = (view(&cols, kk, 1), view(w, m, 1));
            matmul_with(Parallelism::None, (rows, m, kk), dst, m, false, lhs, rhs);
            bias_act(dst, bias, act);
        });
        // Drop the short blocks' unused tails, image by image.
        if pixels % BLOCK != 0 {
            let mut packed = Vec::with_capacity(b * pixels * m);
            for image in out.chunks(blocks_per_image * BLOCK * m) {
                packed.extend_from_slice(&image[..pixels * m]);
            }
            out = packed;
        }
        Ok((CpuStorage::F32(out), Shape::from((b, g.ho, g.wo, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, g) = Geometry::new(x.shape(), self.k, self.stride)?;
        let (kk, m) = w.dims2()?;
        let gy = self.act.backward(res, grad)?.contiguous()?;
        let want_dx = x.track_op();
        let (pixels, image_len) = (g.ho * g.wo, g.h * g.w * g.c);
        let mut dx = vec![0f32; if want_dx { b * image_len } else { 0 }];
        let dw = with_data(x, "x", |xd| {
            with_data(w, "w", |wd| {
                with_data(&gy, "grad", |gd| {
                    // Each image's share of dW (k²·C × M) and, after it, of db (M).
                    let image = |bi: usize, dxb: &mut [f32], dw: &mut [f32]| {
                        let mut cols = vec![0f32; BLOCK * kk];
                        for first in (0..pixels).step_by(BLOCK) {
                            let rows = BLOCK.min(pixels - first);
                            let cols = &mut cols[..rows * kk];
                            let gb = &gd[(bi * pixels + first) * m..][..rows * m];
                            gather(&g, &xd[bi * image_len..][..image_len], first, cols);
                            // dW += patchesᵀ · g
                            let (lhs, rhs) = (view(cols, 1, kk), view(gb, m, 1));
                            matmul_with(Parallelism::None, (kk, m, rows), dw, m, true, lhs, rhs);
                            let db = &mut dw[kk * m..];
                            for g in gb.chunks_exact(m) {
                                db.iter_mut().zip(g).for_each(|(d, v)| *d += v);
                            }
                            if !dxb.is_empty() {
                                // patch gradients g · Wᵀ, then onto the pixels
                                let (lhs, rhs) = (view(gb, m, 1), view(wd, 1, m));
                                matmul_with(
                                    Parallelism::None,
                                    (rows, kk, m),
                                    cols,
                                    kk,
                                    false,
                                    lhs,
                                    rhs,
                                );
                                scatter(&g, cols, first, dxb);
                            }
                        }
                    };
                    // One group of images per thread, each summed in image order, the groups' sums
                    // added in group order: the same bits however rayon splits and steals the
                    // work (a parallel `reduce` was not, and a resumed run drifted from the
                    // straight one).
                    let per = b
                        .div_ceil(rayon::current_num_threads().clamp(1, b.max(1)))
                        .max(1);
                    let group = |gi: usize, dxg: &mut [f32]| {
                        let mut dw = vec![0f32; kk * m + m];
                        for bi in gi * per..((gi + 1) * per).min(b) {
                            let dxb = match dxg.is_empty() {
                                true => &mut [][..],
                                false => &mut dxg[(bi - gi * per) * image_len..][..image_len],
                            };
                            image(bi, dxb, &mut dw);
                        }
                        dw
                    };
                    let partial: Vec<Vec<f32>> = if want_dx {
                        dx.par_chunks_mut(per * image_len)
                            .enumerate()
                            .map(|(gi, dxg)| group(gi, dxg))
                            .collect()
                    } else {
                        (0..b.div_ceil(per))
                            .into_par_iter()
                            .map(|gi| group(gi, &mut []))
                            .collect()
                    };
                    Ok(partial
                        .into_iter()
                        .reduce(add_into)
                        .unwrap_or_else(|| vec![0f32; kk * m + m]))
                })
            })
        })?;
        let dev = x.device();
        let dx = if want_dx {
            Some(Tensor::from_vec(dx, x.shape(), dev)?)
        } else {
            None
        };
        let db = Tensor::from_slice(&dw[kk * m..], m, dev)?;
        let dw = Tensor::from_slice(&dw[..kk * m], (kk, m), dev)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `act(conv(x, w) + b)`: `x` `(B, H, W, C)`, `w` `(k²·C, M)` with rows `[ky][kx][c]`, `b` `(M)`,
/// stride 1 or 2 with `k/2` zero padding → `(B, Ho, Wo, M)`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    k: usize,
    stride: usize,
    act: Act,
) -> Result<Tensor> {
    if k.is_multiple_of(2) || !(1..=2).contains(&stride) {
        candle_core::bail!(
            "conv2d: odd kernels and strides 1 or 2 only, got k {k}, stride {stride}"
        );
    }
    if !seq2seq_nn::cpu::on_cpu_f32(x) {
        return twin(x, w, b, k, stride, act);
    }
    if k == 3 && stride == 1 && x.dim(3)? >= WINOGRAD_MIN_CHANNELS {
        return super::winograd::conv3x3(x, w, b, act);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv { k, stride, act })
}

/// The op by op form (shifted slices concatenated along the channels, subsampled for stride 2,
/// then one matmul): the reference the fused op is tested against, and the path off the CPU.
pub(crate) fn twin(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    k: usize,
    stride: usize,
    act: Act,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let mut cols = Tensor::cat(&super::shifted_taps(x, k)?, 3)?;
    if stride == 2 {
        cols = super::every_second(&cols)?;
    }
    let (_, ho, wo, patch) = cols.dims4()?;
    let y = cols
        .reshape((n * ho * wo, patch))?
        .matmul(w)?
        .broadcast_add(b)?;
    super::act_twin(&y, act)?.reshape((n, ho, wo, w.dim(1)?))
}
