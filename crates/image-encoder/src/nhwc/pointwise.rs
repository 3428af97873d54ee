//! `act(x W + b)` on the rows of a channels-last activation: a 1×1 convolution with its batch
//! norm folded into `W` and `b`.
//!
//! Rows run in blocks, each block a single-threaded gemm started from the bias and finished by
//! the activation while it is still in cache: one pass over the output instead of three (gemm,
//! bias, clamp), and no `(C, H·W)` transposes around it.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::mem::MaybeUninit;

use seq2seq_nn::cpu::{cpu_slice, matmul_uninit, Parallelism, View};

use super::{bias_act, bias_grad, par_uninit, Act};

/// Rows per block: the block's output and input stay in L2 (≤ 256 × 1152 floats).
const BLOCK_ROWS: usize = 256;

avx2_dispatch!(fn finish => bias_act(rows: &mut [f32], bias: &[f32], act: Act));

struct Pointwise {
    act: Act,
}

impl CustomOp3 for Pointwise {
    fn name(&self) -> &'static str {
        "pointwise-conv"
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
        let (n, k) = l1.shape().dims2()?;
        let (k2, m) = l2.shape().dims2()?;
        if k2 != k || l3.shape().dims() != [m] {
            candle_core::bail!(
                "pointwise: x {:?}, w {:?}, b {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (x, w, bias) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        let act = self.act;
        let rhs = View {
            data: w,
            rs: m,
            cs: 1,
        };
        // SAFETY: each block's gemm writes all of its `rows × m` elements.
        let out = unsafe {
            par_uninit(n * m, BLOCK_ROWS * m, |blk, dst| {
                let rows = dst.len() / m;
                let first = blk * BLOCK_ROWS;
                let lhs = View {
                    data: &x[first * k..(first + rows) * k],
                    rs: k,
                    cs: 1,
                };
                matmul_uninit(Parallelism::None, (rows, m, k), dst, m, lhs, rhs);
                // SAFETY: written whole by the product above.
                let dst = &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]);
                finish(dst, bias, act);
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((n, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gy = self.act.backward(res, grad)?;
        // No input gradient where nothing before needs it (pixels' patches, cached features).
        let dx = if x.track_op() {
            Some(gy.matmul(&w.t()?)?)
        } else {
            None
        };
        Ok((dx, Some(x.t()?.matmul(&gy)?), Some(bias_grad(&gy)?)))
    }
}

/// `act(x w + b)`: `x` `(N, K)`, `w` `(K, M)`, `b` `(M)` → `(N, M)`. On other devices than the
/// CPU (or other dtypes) the same ops one by one.
pub fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    if !seq2seq_nn::cpu::on_cpu_f32(x) {
        return twin(x, w, b, act);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Pointwise { act })
}

/// The op by op form: the reference the fused op is tested against, and the path off the CPU.
pub(crate) fn twin(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    super::act_twin(&x.matmul(w)?.broadcast_add(b)?, act)
}
