//! Show, Attend and Tell's doubly stochastic attention regularisation (Xu et al. 2015, §4.2.1).
//!
//! Softmax makes each step's weights sum to one over the memory; the regulariser asks the
//! other sum, over the output steps, to be about one for every memory position too:
//! `(1 − Σₜ αₜᵢ)²` per position i, so that over a caption the decoder looks at every region of
//! the image rather than at a few. The paper found it improved BLEU and the captions' richness.

use candle_core::{Result, Tensor};

/// The mean over batch rows and their real memory positions of `(1 − Σₜ αₜᵢ)²`, the sum
/// running over real target steps only: `alphas` (B, T, S), `tgt_mask` (B, T) and `mem_mask`
/// (B, S) with 1 for real positions (`None`: every memory position is real, as for an image
/// grid). Differentiable; multiply by the weight λ and add it to the loss.
///
/// The mean (not the paper's sum over positions) keeps λ's scale independent of the memory
/// size: λ = 1 with a mean over a 7×7 grid is what the widely used PyTorch reimplementation runs.
pub fn doubly_stochastic_penalty(
    alphas: &Tensor,
    tgt_mask: &Tensor,
    mem_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, t, s) = alphas.dims3()?;
    let steps = tgt_mask.to_dtype(alphas.dtype())?.reshape((b, t, 1))?;
    let received = alphas.broadcast_mul(&steps)?.sum(1)?; // (B, S)
    let gap = (1.0 - received)?.sqr()?;
    match mem_mask {
        None => gap.mean_all(),
        Some(m) => {
            let m = m.to_dtype(alphas.dtype())?.reshape((b, s))?;
            let real = m.sum_all()?;
            (gap * m)?
                .sum_all()?
                .broadcast_div(&real.clamp(1.0, f64::MAX)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn penalty(alphas: &[f32], tgt: &[f32], mem: Option<&[f32]>) -> Result<f32> {
        let dev = Device::Cpu;
        let a = Tensor::from_slice(alphas, (1, 2, 2), &dev)?;
        let t = Tensor::from_slice(tgt, (1, 2), &dev)?;
        let m = mem
            .map(|m| Tensor::from_slice(m, (1, 2), &dev))
            .transpose()?;
        doubly_stochastic_penalty(&a, &t, m.as_ref())?.to_scalar::<f32>()
    }

    /// Hand-computed values: the column sums of α over real steps, their squared gaps to one,
    /// averaged over real memory positions.
    #[test]
    fn penalty_counts_real_steps_and_positions_only() -> Result<()> {
        let alphas = [0.75, 0.25, 0.5, 0.5];
        // Both steps: sums (1.25, 0.75), gaps² (0.0625, 0.0625).
        assert!((penalty(&alphas, &[1.0, 1.0], None)? - 0.0625).abs() < 1e-6);
        // The second step is padding: sums (0.75, 0.25), gaps² (0.0625, 0.5625).
        assert!((penalty(&alphas, &[1.0, 0.0], None)? - 0.3125).abs() < 1e-6);
        // The second memory position is padding: only the first one's gap counts.
        assert!((penalty(&alphas, &[1.0, 0.0], Some(&[1.0, 0.0]))? - 0.0625).abs() < 1e-6);
        // Weights that give every position exactly one unit cost nothing.
        assert!(penalty(&[1.0, 0.0, 0.0, 1.0], &[1.0, 1.0], None)?.abs() < 1e-7);
        Ok(())
    }

    /// The gradient is the analytic one: ∂/∂αₜᵢ = −2 (1 − Σₜ αₜᵢ) mₜ / (real positions).
    #[test]
    fn penalty_gradient_is_analytic() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[[[0.75f32, 0.25], [0.5, 0.5]]], &dev)?)?;
        let t = Tensor::new(&[[1f32, 0.0]], &dev)?;
        let g = doubly_stochastic_penalty(a.as_tensor(), &t, None)?.backward()?;
        let g = g
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Sums (0.75, 0.25) over the one real step: −2·(0.25)/2, −2·(0.75)/2; padding step 0.
        let want = [-0.25, -0.75, 0.0, 0.0];
        for (g, w) in g.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        Ok(())
    }
}
