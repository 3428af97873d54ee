//! The additive (Bahdanau) attention score `vᵀ tanh(q + k)` as one CPU op.
//!
//! Op by op, the score materialises `(B, Tq, S, A)` tensors — the broadcast sum, its tanh, and
//! their gradients — for every query of a teacher-forced batch: the largest activations of an
//! attentive decoder after the logits. The fused op keeps nothing but its inputs and recomputes
//! the tanh in the backward pass, so the memory of the score is that of its `(B, Tq, S)` output.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{cpu_slice as f32_slice, with_data};
use crate::fastmath::{dot_tanh, tanh};

/// Scores `(B, Tq, S)` from projected queries `q` `(B, Tq, A)`, projected keys `k` `(B, S, A)`
/// and the energy weights `v` `(1, A)`.
struct AdditiveScore;

impl CustomOp3 for AdditiveScore {
    fn name(&self) -> &'static str {
        "additive-attention-score"
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
        let (b, tq, a) = l1.shape().dims3()?;
        let (b2, s, a2) = l2.shape().dims3()?;
        if b2 != b || a2 != a || l3.shape().elem_count() != a {
            candle_core::bail!(
                "additive attention: q {:?}, k {:?}, v {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let (q, k, v) = (
            f32_slice(s1, l1, "q")?,
            f32_slice(s2, l2, "k")?,
            f32_slice(s3, l3, "v")?,
        );
        let mut out = vec![0f32; b * tq * s];
        out.par_chunks_mut(s).enumerate().for_each(|(bt, row)| {
            let bi = bt / tq;
            let qr = &q[bt * a..(bt + 1) * a];
            for (si, o) in row.iter_mut().enumerate() {
                let kr = &k[(bi * s + si) * a..(bi * s + si + 1) * a];
                *o = dot_tanh(qr, kr, v);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, tq, s))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, tq, a) = q.dims3()?;
        let s = k.dim(1)?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let v_data = v.flatten_all()?.to_vec1::<f32>()?;
        let mut dq = vec![0f32; b * tq * a];
        let mut dk = vec![0f32; b * s * a];
        // One partial dv per batch row, summed after the parallel loop.
        let mut dv_rows = vec![0f32; b * a];
        with_data(q, "q", |qd| {
            with_data(k, "k", |kd| {
                dq.par_chunks_mut(tq * a)
                    .zip(dk.par_chunks_mut(s * a))
                    .zip(dv_rows.par_chunks_mut(a))
                    .enumerate()
                    .for_each(|(bi, ((dqb, dkb), dvb))| {
                        for t in 0..tq {
                            let qr = &qd[(bi * tq + t) * a..(bi * tq + t + 1) * a];
                            for si in 0..s {
                                let gv = g[(bi * tq + t) * s + si];
                                if gv == 0.0 {
                                    continue;
                                }
                                let kr = &kd[(bi * s + si) * a..(bi * s + si + 1) * a];
                                let dqr = &mut dqb[t * a..(t + 1) * a];
                                let dkr = &mut dkb[si * a..(si + 1) * a];
                                let lanes = dqr.iter_mut().zip(dkr.iter_mut()).zip(dvb.iter_mut());
                                let inputs = qr.iter().zip(kr).zip(&v_data);
                                for (((dq, dk), dv), ((&x, &y), &w)) in lanes.zip(inputs) {
                                    let u = tanh(x + y);
                                    let du = gv * w * (1.0 - u * u);
                                    *dq += du;
                                    *dk += du;
                                    *dv += gv * u;
                                }
                            }
                        }
                    });
                Ok(())
            })
        })?;
        let mut dv = vec![0f32; a];
        for row in dv_rows.chunks(a) {
            for (d, x) in dv.iter_mut().zip(row) {
                *d += x;
            }
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, (b, tq, a), dev)?),
            Some(Tensor::from_vec(dk, (b, s, a), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `vᵀ tanh(q + k)` for every query and key: `q` `(B, Tq, A)`, `k` `(B, S, A)`, `v` the energy
/// layer's weight `(1, A)`; returns `(B, Tq, S)`.
pub fn additive_score(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, AdditiveScore)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    #[test]
    fn matches_the_op_by_op_score_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (b, tq, s, a) = (2, 3, 4, 5);
        let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, tq, a), &dev)?)?;
        let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, s, a), &dev)?)?;
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, a), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (b, tq, s), &dev)?;
        let reference = q
            .as_tensor()
            .unsqueeze(2)?
            .broadcast_add(&k.as_tensor().unsqueeze(1)?)?
            .tanh()?
            .broadcast_mul(&v.as_tensor().reshape((1, 1, 1, a))?)?
            .sum(D::Minus1)?;
        let fused = additive_score(q.as_tensor(), k.as_tensor(), v.as_tensor())?;
        let diff = |x: &Tensor, y: &Tensor| -> Result<f32> {
            (x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        assert!(diff(&reference, &fused)? < 1e-5);
        let rg = (&reference * &w)?.sum_all()?.backward()?;
        let fg = (&fused * &w)?.sum_all()?.backward()?;
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let d = diff(
                rg.get(x.as_tensor()).unwrap(),
                fg.get(x.as_tensor()).unwrap(),
            )?;
            assert!(d < 1e-4, "gradient of {name} differs by {d}");
        }
        Ok(())
    }
}
