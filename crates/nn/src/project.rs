//! `x Wᵀ + b` for a decoding step, from the weight stored transposed: an inference-only CPU op.
//!
//! A search step's products have only the batch's (or beams') rows. gemm packs its left operand
//! again for every block of columns, so `x Wᵀ` with a vocabulary-wide `W` spent most of its time
//! packing `x`; with `Wᵀ` stored row-major, [`crate::cpu`]'s `matmul` computes the product
//! transposed and gemm reads the weight in place, writing the `(N, V)` result row-major directly.
//! The op has no backward pass: candle refuses to differentiate through it, so it cannot cut a
//! gradient silently.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu::{cpu_slice, matmul, on_cpu_f32, View};

struct Project;

impl CustomOp2 for Project {
    fn name(&self) -> &'static str {
        "project-transposed"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let (d2, v) = l2.shape().dims2()?;
        if d != d2 {
            candle_core::bail!("project: x {:?} against Wᵀ {:?}", l1.shape(), l2.shape());
        }
        let x = cpu_slice(s1, l1, "x")?;
        let w_t = cpu_slice(s2, l2, "w_t")?;
        let mut out = vec![0f32; n * v];
        let lhs = View {
            data: x,
            rs: d,
            cs: 1,
        };
        let rhs = View {
            data: w_t,
            rs: v,
            cs: 1,
        };
        matmul((n, v, d), &mut out, v, false, lhs, rhs);
        Ok((CpuStorage::F32(out), Shape::from((n, v))))
    }
}

/// `x W + b` for `x` `(N, D)` and `w_t` = `Wᵀ` `(D, V)` contiguous (so `x (Wᵀ)` = a linear layer
/// with weight `W` `(V, D)`): through the CPU op where both are f32 on the CPU, else candle's
/// matmul. Not differentiable on the CPU path: for decoding only.
pub fn project_transposed(x: &Tensor, w_t: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = if on_cpu_f32(x) && on_cpu_f32(w_t) {
        x.contiguous()?.apply_op2(&w_t.contiguous()?, Project)?
    } else {
        x.matmul(w_t)?
    };
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_a_linear_layer_for_few_and_many_rows() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (300, 24), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 300, &dev)?;
        let w_t = w.t()?.contiguous()?;
        for rows in [1, 5, 64, 700] {
            let x = Tensor::randn(0f32, 1.0, (rows, 24), &dev)?;
            let want = x.matmul(&w.t()?)?.broadcast_add(&b)?;
            let got = project_transposed(&x, &w_t, Some(&b))?;
            let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{rows} rows: {diff}");
        }
        Ok(())
    }

    #[test]
    fn refuses_to_be_differentiated_rather_than_cutting_the_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4), &dev)?)?;
        let w_t = Tensor::randn(0f32, 1.0, (4, 5), &dev)?;
        let y = project_transposed(x.as_tensor(), &w_t, None)?;
        assert!(y.sum_all()?.backward().is_err());
        Ok(())
    }
}
