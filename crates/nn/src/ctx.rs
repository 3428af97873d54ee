//! Forward-pass context: train/eval mode and the seeded random stream used by dropout.

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dropout::{apply_mask, draw_mask};

/// Carries the train/eval switch and a seeded random generator through a forward pass.
///
/// candle's CPU RNG cannot be seeded, so dropout masks are drawn here instead: a training run
/// that seeds one `Ctx` per step from `(seed, step)` is reproducible bit for bit, and resuming at
/// step N needs no RNG state beyond the step number.
pub struct Ctx {
    train: bool,
    rng: ChaCha8Rng,
}

impl Ctx {
    /// Evaluation mode: dropout is the identity.
    pub fn eval() -> Self {
        Self {
            train: false,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    /// Training mode with dropout masks drawn from a generator seeded by `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            train: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn is_train(&self) -> bool {
        self.train
    }

    /// A uniform draw in [0, 1) from the context's generator, for training-time choices other
    /// than dropout (scheduled sampling's); deterministic for the seed, like the masks.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    /// Inverted dropout: zero each element with probability `p`, scale the rest by `1/(1-p)`.
    pub fn dropout(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        self.masked(x, p, x.dims().to_vec())
    }

    /// Word dropout (Gal & Ghahramani 2016; Sennrich & Zhang 2019): zero whole embedding
    /// vectors — every feature of a token at once — with probability `p`, scaling the kept ones
    /// by `1/(1-p)`. `x` is `(…, E)`; one draw per position of the leading dimensions. Unlike
    /// element dropout this hides the token itself, so the network must lean on its context.
    pub fn word_dropout(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = 1;
        }
        self.masked(x, p, dims)
    }

    /// `x` times an inverted-dropout mask of shape `mask_dims` (broadcast over `x`): 0 with
    /// probability `p`, else `1/(1-p)`; the identity in evaluation.
    fn masked(&mut self, x: &Tensor, p: f32, mask_dims: Vec<usize>) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        if p >= 1.0 {
            return x.zeros_like();
        }
        let scale = 1.0 / (1.0 - p);
        let n: usize = mask_dims.iter().product();
        let mask = draw_mask(&mut self.rng, n, p, scale);
        apply_mask(x, mask, mask_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dropout_is_identity_in_eval_and_seeded_in_train() -> Result<()> {
        let x = Tensor::ones((4, 1000), candle_core::DType::F32, &Device::Cpu)?;
        let y = Ctx::eval().dropout(&x, 0.5)?;
        assert_eq!(y.sum_all()?.to_scalar::<f32>()?, 4000.0);
        let a = Ctx::train(7).dropout(&x, 0.3)?.to_vec2::<f32>()?;
        let b = Ctx::train(7).dropout(&x, 0.3)?.to_vec2::<f32>()?;
        let c = Ctx::train(8).dropout(&x, 0.3)?.to_vec2::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let zeros = a.iter().flatten().filter(|v| **v == 0.0).count() as f32 / 4000.0;
        assert!((zeros - 0.3).abs() < 0.03, "dropped share {zeros}");
        let kept: f32 = a.iter().flatten().copied().sum::<f32>() / 4000.0;
        assert!((kept - 1.0).abs() < 0.05, "mean after dropout {kept}");
        Ok(())
    }

    #[test]
    fn word_dropout_drops_whole_vectors() -> Result<()> {
        let x = Tensor::ones((20, 50, 8), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(
            Ctx::eval()
                .word_dropout(&x, 0.5)?
                .sum_all()?
                .to_scalar::<f32>()?,
            8000.0
        );
        let a = Ctx::train(3).word_dropout(&x, 0.25)?.to_vec3::<f32>()?;
        assert_eq!(a, Ctx::train(3).word_dropout(&x, 0.25)?.to_vec3::<f32>()?);
        let mut dropped = 0;
        for row in a.iter().flatten() {
            // Each token's vector is either all zero or all 1/(1-p): never partly dropped.
            assert!(
                row.iter().all(|v| *v == 0.0) || row.iter().all(|v| (*v - 4.0 / 3.0).abs() < 1e-6),
                "{row:?}"
            );
            dropped += usize::from(row[0] == 0.0);
        }
        let share = dropped as f32 / 1000.0;
        assert!((share - 0.25).abs() < 0.04, "dropped share {share}");
        Ok(())
    }
}
