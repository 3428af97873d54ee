//! 2×2 max pooling with stride 2 on channels-last images, `(B, H, W, C)` → `(B, H/2, W/2, C)`
//! (a last odd row or column is dropped, as PyTorch's `MaxPool2d(2)` does).
//!
//! Op by op (a reshape and two `max` reductions over non-last dimensions) it was candle's strided
//! reduction and its comparison masks; here one pass each way. The backward pass routes each
//! window's gradient to its first maximum (PyTorch's choice on ties), found again from the input
//! and the output.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::{cpu_slice, with_data};

use super::par_rows;

struct MaxPool2;

/// `(b, h, w, c)` of an input and the pooled `(h/2, w/2)`.
fn dims(s: &Shape) -> Result<(usize, usize, usize, usize, usize, usize)> {
    let (b, h, w, c) = s.dims4()?;
    Ok((b, h, w, c, h / 2, w / 2))
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c, ho, wo) = dims(l.shape())?;
        let x = cpu_slice(s, l, "x")?;
        let out = par_rows(b * ho, wo * c, |row, dst| {
            let (bi, oy) = (row / ho, row % ho);
            let top = &x[(bi * h + 2 * oy) * w * c..][..w * c];
            let bottom = &x[(bi * h + 2 * oy + 1) * w * c..][..w * c];
            for (ox, o) in dst.chunks_exact_mut(c).enumerate() {
                let at = 2 * ox * c;
                let (a, b2) = (&top[at..at + c], &top[at + c..at + 2 * c]);
                let (d, e) = (&bottom[at..at + c], &bottom[at + c..at + 2 * c]);
                for j in 0..c {
                    o[j] = a[j].max(b2[j]).max(d[j].max(e[j]));
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, c))))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, h, w, c, ho, wo) = dims(x.shape())?;
        let mut dx = vec![0f32; b * h * w * c];
        with_data(x, "x", |xd| {
            with_data(res, "pooled", |yd| {
                with_data(&grad.contiguous()?, "grad", |gd| {
                    dx.par_chunks_mut(h * w * c)
                        .enumerate()
                        .for_each(|(bi, dxb)| {
                            for oy in 0..ho {
                                let out = (bi * ho + oy) * wo * c;
                                let (top, bottom) = (2 * oy * w * c, (2 * oy + 1) * w * c);
                                let xb = &xd[bi * h * w * c..];
                                for ox in 0..wo {
                                    let (left, right) = (2 * ox * c, (2 * ox + 1) * c);
                                    // PyTorch's order: top-left, top-right, bottom-left, bottom-right.
                                    let window =
                                        [top + left, top + right, bottom + left, bottom + right];
                                    for j in 0..c {
                                        let (m, g) = (yd[out + ox * c + j], gd[out + ox * c + j]);
                                        if let Some(at) =
                                            window.iter().map(|a| a + j).find(|&a| xb[a] == m)
                                        {
                                            dxb[at] += g;
                                        }
                                    }
                                }
                            }
                        });
                    Ok(())
                })
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// 2×2 max pooling, stride 2, of `x` `(B, H, W, C)`.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    if !seq2seq_nn::cpu::on_cpu_f32(x) {
        return twin(x);
    }
    x.contiguous()?.apply_op1(MaxPool2)
}

/// The op by op form: the reference the fused op is tested against, and the path off the CPU.
pub(crate) fn twin(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    x.narrow(1, 0, 2 * h2)?
        .narrow(2, 0, 2 * w2)?
        .reshape((n, h2, 2, w2, 2, c))?
        .max(4)?
        .max(2)
}
