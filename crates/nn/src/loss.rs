//! Token-level cross-entropy with a padding mask and optional label smoothing.

use candle_core::{DType, Result, Tensor, D};

/// The training loss of one batch.
pub struct TokenLoss {
    /// Mean smoothed loss over real tokens (the value to back-propagate).
    pub loss: Tensor,
    /// Sum of the unsmoothed negative log-likelihood over real tokens (for perplexity).
    pub nll_sum: f64,
    /// Number of real (non-padding) target tokens.
    pub tokens: f64,
}

/// `logits` (N, V), `targets` (N) u32, `mask` (N) with 1 for real tokens.
///
/// candle's `cross_entropy` has no ignore-index, so the padding is masked here: log-softmax,
/// gather the targets, mask, sum, divide by the token count. Label smoothing ε mixes in the
/// uniform distribution over the vocabulary: `(1-ε)·nll + ε·mean(-log p)`.
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<TokenLoss> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?;
    let mask = mask.to_dtype(DType::F32)?;
    let tokens = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let nll_masked = (&nll * &mask)?;
    let nll_sum = nll_masked.sum_all()?.to_scalar::<f32>()? as f64;
    let per_token = if label_smoothing > 0.0 {
        let smooth = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - label_smoothing))? + (smooth * label_smoothing)?)?
    } else {
        nll
    };
    let loss = ((per_token * &mask)?.sum_all()? / tokens.max(1.0))?;
    Ok(TokenLoss {
        loss,
        nll_sum,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn padding_is_ignored_and_matches_pytorch() -> Result<()> {
        // PyTorch 2.15:
        //   F.cross_entropy(torch.tensor([[1.,2.,3.],[0.5,0.,-1.]]), torch.tensor([2,0]))
        //     -> 0.5058683; with label_smoothing=0.1 -> 0.5892016
        // The third row is padding and must not count.
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1f32, 2., 3.], [0.5, 0., -1.], [9., -9., 0.]], &dev)?;
        let targets = Tensor::new(&[2u32, 0, 1], &dev)?;
        let mask = Tensor::new(&[1f32, 1., 0.], &dev)?;
        let l = masked_cross_entropy(&logits, &targets, &mask, 0.0)?;
        let v = l.loss.to_scalar::<f32>()?;
        assert!((v - 0.505_868_3).abs() < 1e-5, "{v}");
        assert_eq!(l.tokens, 2.0);
        let s = masked_cross_entropy(&logits, &targets, &mask, 0.1)?;
        let v = s.loss.to_scalar::<f32>()?;
        assert!((v - 0.589_201_6).abs() < 1e-5, "{v}");
        Ok(())
    }
}
