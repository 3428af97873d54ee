//! The Adam/AdamW parameter update as one in-place CPU pass.
//!
//! Written with tensor ops, one update allocates and sweeps about a dozen temporaries the size of
//! the parameter; for a 17 M-parameter translation model that is more memory traffic per step
//! than some of the model's own matmuls. Here the moments are plain host buffers owned by the
//! optimizer, so one parallel pass reads the parameter, its gradient and both moments once and
//! writes the parameter and the moments: seven words per parameter, the least an Adam step can
//! move. (Three passes with the moments as tensors — candle's in-place ops mutate one tensor each —
//! moved twelve, and the division and square root ran one element at a time.)

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::cpu::{cpu_slice, on_cpu_f32};

/// The hyper-parameters of one update. `grad_scale` multiplies the gradient first (global norm
/// clipping); `bias1`, `bias2` are the bias corrections `1 − β₁ᵗ`, `1 − β₂ᵗ`.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: weight decay applied to the parameter, not added to the gradient.
    pub decoupled: bool,
    pub grad_scale: f64,
    pub bias1: f64,
    pub bias2: f64,
}

const CHUNK: usize = 1 << 14;

/// Whether [`adam_step_host`] can update `p`: f32, contiguous, on the CPU, fused ops not turned
/// off with `SEQ2SEQ_FUSED=0`. The optimizer keeps host moments for such parameters and tensor
/// moments for the others.
pub fn host_update_applies(p: &Tensor) -> bool {
    on_cpu_f32(p) && p.is_contiguous()
}

/// The update's constants in f32, hoisted out of the element loop.
#[derive(Clone, Copy)]
struct Consts {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    wd: f32,
    scale: f32,
    c1: f32,
    c2: f32,
}

/// One chunk of the update. `L2`: coupled weight decay (added to the gradient); `DECOUPLED`:
/// AdamW's decay of the parameter. Both are compile-time so the loop has no branch and
/// vectorises. The arithmetic, in its order, is the tensor path's.
#[inline(always)]
fn update_chunk<const L2: bool, const DECOUPLED: bool>(
    k: Consts,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let lanes = p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
    for ((p, &g), (m, v)) in lanes {
        let mut g = g * k.scale;
        if L2 {
            g += k.wd * *p;
        }
        *m = k.b1 * *m + (1.0 - k.b1) * g;
        *v = k.b2 * *v + (1.0 - k.b2) * (g * g);
        let mut delta = (*m / k.c1) / ((*v / k.c2).sqrt() + k.eps);
        if DECOUPLED {
            delta += k.wd * *p;
        }
        *p -= delta * k.lr;
    }
}

/// `m ← β₁ m + (1 − β₁) ĝ`, `v ← β₂ v + (1 − β₂) ĝ²`, `p ← p − lr (m̂ / (√v̂ + ε) [+ wd p])`,
/// applied to the parameter with the moments borrowed from the optimizer.
struct FusedAdam<'a> {
    h: AdamStep,
    /// Behind a lock because candle runs the op through `&self`; never contended.
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl InplaceOp2 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let p = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => candle_core::bail!("adam: the parameter must be contiguous f32"),
        };
        let g = cpu_slice(s2, l2, "gradient")?;
        let mut guard = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        let (m, v) = &mut *guard;
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "adam: parameter {}, gradient {}, moments {} and {} elements",
                p.len(),
                g.len(),
                m.len(),
                v.len()
            );
        }
        let h = &self.h;
        let k = Consts {
            lr: h.lr as f32,
            b1: h.beta1 as f32,
            b2: h.beta2 as f32,
            eps: h.eps as f32,
            wd: h.weight_decay as f32,
            scale: h.grad_scale as f32,
            c1: h.bias1 as f32,
            c2: h.bias2 as f32,
        };
        let decay = h.weight_decay > 0.0;
        let f = match (decay && !h.decoupled, decay && h.decoupled) {
            (true, _) => update_chunk::<true, false>,
            (_, true) => update_chunk::<false, true>,
            _ => update_chunk::<false, false>,
        };
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| f(k, p, g, m, v));
        Ok(())
    }
}

/// Updates `p` in place from its gradient `g` and the host moments `m`, `v` (updated in place
/// too). `p` must satisfy [`host_update_applies`].
pub fn adam_step_host(
    p: &Tensor,
    g: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    h: AdamStep,
) -> Result<()> {
    let g = g.contiguous()?;
    p.inplace_op2(
        &g,
        &FusedAdam {
            h,
            moments: Mutex::new((m, v)),
        },
    )
}

/// `Σ x²` over a tensor, in f64: one pass and no temporary on the CPU (global norm clipping
/// reads every gradient once per step). Eight running sums, so that the loop vectorises (one
/// sum is a chain of dependent additions).
pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
    if on_cpu_f32(t) && t.is_contiguous() {
        return crate::cpu::with_data(t, "tensor", |x| {
            Ok(x.par_chunks(CHUNK)
                .map(|c| {
                    let mut acc = [0f64; 8];
                    let lanes = c.chunks_exact(8);
                    let tail: f64 = lanes.remainder().iter().map(|&v| (v as f64).powi(2)).sum();
                    for l in lanes {
                        for (a, &v) in acc.iter_mut().zip(l) {
                            *a += (v as f64) * (v as f64);
                        }
                    }
                    acc.iter().sum::<f64>() + tail
                })
                // Collected, then added in chunk order: the same bits however rayon splits the
                // work (a parallel sum is not), so a resumed run clips as the straight one did.
                .collect::<Vec<f64>>()
                .iter()
                .sum())
        });
    }
    t.sqr()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sum_of_squares_matches_the_tensor_ops() -> Result<()> {
        // 8·CHUNK + 13 elements: several chunks, and a tail that is not a multiple of the lanes.
        let n = 8 * CHUNK + 13;
        let t = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
        let want = t
            .to_dtype(candle_core::DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
        let got = sum_of_squares(&t)?;
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        Ok(())
    }
}
