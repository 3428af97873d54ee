//! The output projection and the token loss as one CPU op: `x W_oᵀ + b` → masked, smoothed
//! cross-entropy.
//!
//! The logits `(N, V)` are the largest tensor of a training step (N = batch × target length,
//! V = vocabulary: 64 × 50 × 8000 floats = 100 MB for the longest Multi30k batch). As separate ops,
//! the matmul output, the bias sum, the loss's gradient and the gradients passing back through the
//! bias add each hold an `(N, V)` buffer at the peak. Here the op keeps one: the logits, turned
//! into their softmax in place at the forward pass (so the backward pass needs no second `exp`)
//! and into their own gradient in place at the backward pass, which then runs the two matmuls of
//! the projection's backward (`∂x = ∂logits W`, `∂W = ∂logitsᵀ x`) directly.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{cpu_slice, matmul, on_cpu_f32, with_data, View};
use crate::loss::{
    host_targets, masked_cross_entropy, probs_minus_q, row_loss_to_probs, softmax_minus_q,
    token_loss, TokenLoss,
};

/// Inputs `x` `(N, D)`, `w` `(V, D)`, `b` `(V)`; output `(N, 2)`: per row the smoothed loss and
/// the plain negative log-likelihood, both times the row's mask (only column 0 is differentiable).
struct ProjectionLoss {
    targets: Vec<u32>,
    mask: Vec<f32>,
    eps: f32,
    /// The softmax of the forward pass's logits, taken by the backward pass (recomputed if
    /// absent).
    probs: Mutex<Option<Vec<f32>>>,
}

/// `logits (N, V) = x (N, D) wᵀ + b`.
fn project(x: &[f32], w: &[f32], b: &[f32], n: usize, d: usize, v: usize) -> Vec<f32> {
    let mut logits = vec![0f32; n * v];
    let xv = View {
        data: x,
        rs: d,
        cs: 1,
    };
    // wᵀ as a (D, V) view of the (V, D) matrix.
    let wt = View {
        data: w,
        rs: 1,
        cs: d,
    };
    matmul((n, v, d), &mut logits, v, false, xv, wt);
    logits.par_chunks_mut(v).for_each(|row| {
        for (l, bias) in row.iter_mut().zip(b) {
            *l += bias;
        }
    });
    logits
}

impl CustomOp3 for ProjectionLoss {
    fn name(&self) -> &'static str {
        "projection-loss"
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
        let (n, d) = l1.shape().dims2()?;
        let (v, d2) = l2.shape().dims2()?;
        if d2 != d || l3.shape().dims1()? != v || self.targets.len() != n {
            candle_core::bail!(
                "projection loss: x {:?}, w {:?}, b {:?}, {} targets",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.targets.len()
            );
        }
        let (x, w, b) = (
            cpu_slice(s1, l1, "x")?,
            cpu_slice(s2, l2, "w")?,
            cpu_slice(s3, l3, "b")?,
        );
        let mut probs = project(x, w, b, n, d, v);
        let mut out = vec![0f32; n * 2];
        out.par_chunks_mut(2)
            .zip(probs.par_chunks_mut(v))
            .enumerate()
            .for_each(|(i, (o, row))| {
                row_loss_to_probs(o, row, self.mask[i], self.targets[i], self.eps)
            });
        *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = Some(probs);
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, d) = x.dims2()?;
        let v = w.dim(0)?;
        let g = grad_res.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let saved = self.probs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let dl = match saved {
            Some(mut p) => {
                p.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
                    probs_minus_q(row, g[i] * self.mask[i], self.targets[i], self.eps)
                });
                p
            }
            None => {
                let mut l = with_data(x, "x", |xd| {
                    with_data(w, "w", |wd| {
                        with_data(b, "b", |bd| Ok(project(xd, wd, bd, n, d, v)))
                    })
                })?;
                l.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
                    softmax_minus_q(row, g[i] * self.mask[i], self.targets[i], self.eps)
                });
                l
            }
        };
        let dlv = View {
            data: &dl,
            rs: v,
            cs: 1,
        };
        let mut dx = vec![0f32; n * d];
        let mut dw = vec![0f32; v * d];
        with_data(w, "w", |wd| {
            let wv = View {
                data: wd,
                rs: d,
                cs: 1,
            };
            matmul((n, d, v), &mut dx, d, false, dlv, wv);
            Ok(())
        })?;
        with_data(x, "x", |xd| {
            // ∂logitsᵀ as a (V, N) view.
            let dlt = View {
                data: &dl,
                rs: 1,
                cs: v,
            };
            let xv = View {
                data: xd,
                rs: d,
                cs: 1,
            };
            matmul((v, d, n), &mut dw, d, false, dlt, xv);
            Ok(())
        })?;
        // ∂b: column sums, columns split across threads.
        let mut db = vec![0f32; v];
        let chunk = v.div_ceil(rayon::current_num_threads().max(1)).max(1);
        db.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
            let cols = c * chunk..c * chunk + out.len();
            for row in dl.chunks(v) {
                for (o, x) in out.iter_mut().zip(&row[cols.clone()]) {
                    *o += x;
                }
            }
        });
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, d), dev)?),
            Some(Tensor::from_vec(dw, (v, d), dev)?),
            Some(Tensor::from_vec(db, v, dev)?),
        ))
    }
}

/// The loss of a batch from the output layer's input: `x` `(N, D)`, the output layer's `weight`
/// `(V, D)` and `bias` `(V)` (none: zero), `targets` `(N)`, `mask` `(N)` (1 = real token).
/// Equal to projecting and calling [`masked_cross_entropy`], which is what runs off the CPU.
pub fn projection_cross_entropy(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<TokenLoss> {
    if !on_cpu_f32(x) || x.rank() != 2 {
        let logits = x.matmul(&weight.t()?)?;
        let logits = match bias {
            Some(b) => logits.broadcast_add(b)?,
            None => logits,
        };
        return masked_cross_entropy(&logits, targets, mask, label_smoothing);
    }
    let v = weight.dim(0)?;
    let (targets, mask, tokens) = host_targets(targets, mask, v)?;
    // Padding rows contribute nothing: project only the real ones (bucketing leaves a few
    // percent of padding, and the projection is most of a training step's FLOPs).
    let keep: Vec<u32> = (0..mask.len() as u32)
        .filter(|&i| mask[i as usize] != 0.0)
        .collect();
    let (x, targets, mask) = if keep.len() < mask.len() {
        let rows = Tensor::new(keep.as_slice(), x.device())?;
        (
            x.index_select(&rows, 0)?,
            keep.iter().map(|&i| targets[i as usize]).collect(),
            keep.iter().map(|&i| mask[i as usize]).collect(),
        )
    } else {
        (x.clone(), targets, mask)
    };
    let bias = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(v, DType::F32, x.device())?,
    };
    let op = ProjectionLoss {
        targets,
        mask,
        eps: label_smoothing as f32,
        probs: Mutex::new(None),
    };
    let rows = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    token_loss(&rows, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn equals_projection_then_loss_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d, v) = (6, 5, 9);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (v, d), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, v, &dev)?)?;
        let targets = Tensor::new(&[1u32, 8, 0, 4, 4, 2], &dev)?;
        let mask = Tensor::new(&[1f32, 1., 0., 1., 1., 0.], &dev)?;
        for eps in [0.0, 0.1] {
            let logits = x
                .as_tensor()
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let r = masked_cross_entropy(&logits, &targets, &mask, eps)?;
            let f = projection_cross_entropy(
                x.as_tensor(),
                w.as_tensor(),
                Some(b.as_tensor()),
                &targets,
                &mask,
                eps,
            )?;
            let (rv, fv) = (r.loss.to_scalar::<f32>()?, f.loss.to_scalar::<f32>()?);
            assert!((rv - fv).abs() < 1e-5, "eps {eps}: {rv} vs {fv}");
            assert!((r.nll_sum - f.nll_sum).abs() < 1e-4);
            assert_eq!(f.tokens, 4.0);
            let rg = (r.loss * 2.0)?.backward()?;
            let fg = (&f.loss * 2.0)?.backward()?;
            // A second backward pass finds the saved softmax taken and recomputes the logits.
            let fg2 = (&f.loss * 2.0)?.backward()?;
            for (name, t) in [("x", &x), ("w", &w), ("b", &b)] {
                for (pass, g) in [("saved", &fg), ("recomputed", &fg2)] {
                    let dd = (rg.get(t.as_tensor()).unwrap() - g.get(t.as_tensor()).unwrap())?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_scalar::<f32>()?;
                    assert!(
                        dd < 1e-5,
                        "eps {eps}, {pass}: gradient of {name} differs by {dd}"
                    );
                }
            }
        }
        Ok(())
    }
}
