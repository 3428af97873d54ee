//! Token-level cross-entropy with a padding mask and optional label smoothing.
//!
//! On the CPU the loss is one custom op: log-softmax, target gather, smoothing and masking per
//! row in one pass, and a backward pass that writes `softmax − q` straight into the logits'
//! gradient. Op by op, the same loss keeps four or five `(N, V)` tensors alive for the backward
//! pass and runs a dozen passes over them; `(N, V)` is the largest tensor of a training step
//! (N = batch × target length, V = vocabulary).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{cpu_slice, on_cpu_f32, with_data};
use crate::fastmath::{self, exp};
use crate::simd::simd_dispatch;

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
    if on_cpu_f32(logits) && logits.rank() == 2 {
        return fused_cross_entropy(logits, targets, mask, label_smoothing);
    }
    cross_entropy_ops(logits, targets, mask, label_smoothing)
}

/// The op-by-op loss: other devices, and the reference of the fused op's tests.
fn cross_entropy_ops(
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

/// The fused loss over `(N, V)` logits. Returns `(N, 2)` per row: the smoothed loss and the plain
/// negative log-likelihood, both times the row's mask. Only column 0 is differentiable.
struct FusedCrossEntropy {
    targets: Vec<u32>,
    mask: Vec<f32>,
    eps: f32,
}

/// `logsumexp` of a row.
pub(crate) fn lse(row: &[f32]) -> f32 {
    let max = fastmath::max(row);
    max + fastmath::sum_by(row, |x| exp(x - max)).ln()
}

/// Turns a row of logits into its softmax in place; returns the row's `logsumexp`.
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) -> f32 {
    let max = fastmath::max(row);
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    let sum = fastmath::sum(row);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|p| *p *= inv);
    max + sum.ln()
}

/// One row's loss into `o`: `[m · ((1-ε) nll + ε mean(-log p)), m · nll]` (zeros where m = 0).
pub(crate) fn row_loss(o: &mut [f32], row: &[f32], m: f32, target: u32, eps: f32) {
    if m == 0.0 {
        return;
    }
    let lse = lse(row);
    let nll = lse - row[target as usize];
    // mean over the vocabulary of -log p = lse - mean(x)
    let smooth = lse - fastmath::sum(row) / row.len() as f32;
    o[0] = m * ((1.0 - eps) * nll + eps * smooth);
    o[1] = m * nll;
}

simd_dispatch!(
    /// [`row_loss`], leaving the row's softmax in place of its logits for [`probs_minus_q`]:
    /// the backward pass then needs no second `exp` over the row. A masked row (m = 0) is left
    /// as it is: its gradient is zero whatever it holds.
    pub(crate) fn row_loss_to_probs => row_loss_to_probs_body(
        o: &mut [f32],
        row: &mut [f32],
        m: f32,
        target: u32,
        eps: f32,
    )
);

#[inline(always)]
fn row_loss_to_probs_body(o: &mut [f32], row: &mut [f32], m: f32, target: u32, eps: f32) {
    if m == 0.0 {
        return;
    }
    let (mean, at_target) = (fastmath::sum(row) / row.len() as f32, row[target as usize]);
    let lse = softmax_in_place(row);
    let nll = lse - at_target;
    // mean over the vocabulary of -log p = lse - mean(x)
    o[0] = m * ((1.0 - eps) * nll + eps * (lse - mean));
    o[1] = m * nll;
}

/// The gradient of one row's smoothed loss times `scale`, computed in place over the row's
/// logits: d/dx_j [(1-ε)(-log p_y) + ε mean(-log p)] = p_j - (1-ε)[j = y] - ε/V.
pub(crate) fn softmax_minus_q(row: &mut [f32], scale: f32, target: u32, eps: f32) {
    if scale == 0.0 {
        row.fill(0.0);
        return;
    }
    softmax_in_place(row);
    probs_minus_q(row, scale, target, eps);
}

simd_dispatch!(
    /// [`softmax_minus_q`] from the row's softmax `p` (as [`row_loss_to_probs`] leaves it).
    pub(crate) fn probs_minus_q => probs_minus_q_body(
        row: &mut [f32],
        scale: f32,
        target: u32,
        eps: f32,
    )
);

#[inline(always)]
fn probs_minus_q_body(row: &mut [f32], scale: f32, target: u32, eps: f32) {
    if scale == 0.0 {
        row.fill(0.0);
        return;
    }
    let uniform = eps / row.len() as f32;
    for p in row.iter_mut() {
        *p = scale * (*p - uniform);
    }
    row[target as usize] -= scale * (1.0 - eps);
}

impl CustomOp1 for FusedCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l.shape().dims2()?;
        if self.targets.len() != n || self.mask.len() != n {
            candle_core::bail!(
                "fused cross-entropy: {n} rows, {} targets",
                self.targets.len()
            );
        }
        let x = cpu_slice(s, l, "logits")?;
        let mut out = vec![0f32; n * 2];
        out.par_chunks_mut(2)
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each(|(i, (o, row))| row_loss(o, row, self.mask[i], self.targets[i], self.eps));
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, v) = arg.dims2()?;
        let g = grad_res.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let mut d = vec![0f32; n * v];
        with_data(arg, "logits", |x| {
            d.par_chunks_mut(v)
                .zip(x.par_chunks(v))
                .enumerate()
                .for_each(|(i, (drow, row))| {
                    drow.copy_from_slice(row);
                    softmax_minus_q(drow, g[i] * self.mask[i], self.targets[i], self.eps);
                });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(d, (n, v), arg.device())?))
    }
}

/// Targets and mask of the fused losses as host vectors (targets checked against the vocabulary
/// size `v`), and the number of real tokens.
pub(crate) fn host_targets(
    targets: &Tensor,
    mask: &Tensor,
    v: usize,
) -> Result<(Vec<u32>, Vec<f32>, f64)> {
    let targets = targets
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    let mask = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross-entropy: target id {bad} outside the vocabulary of {v}");
    }
    let tokens = mask.iter().map(|&m| m as f64).sum();
    Ok((targets, mask, tokens))
}

/// The batch loss from a fused op's `(N, 2)` rows `[smoothed loss, nll]` (both masked).
pub(crate) fn token_loss(rows: &Tensor, tokens: f64) -> Result<TokenLoss> {
    // Column sums first: a column narrowed out of a tensor with no rows starts past the end of
    // its (empty) storage, which candle's sum cannot read. The rows are added in the same order.
    let sums = rows.sum(0)?;
    let nll_sum = sums.narrow(0, 1, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
    let loss = (sums.narrow(0, 0, 1)?.sum_all()? / tokens.max(1.0))?;
    Ok(TokenLoss {
        loss,
        nll_sum,
        tokens,
    })
}

fn fused_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<TokenLoss> {
    let v = logits.dim(1)?;
    let (targets, mask, tokens) = host_targets(targets, mask, v)?;
    let op = FusedCrossEntropy {
        targets,
        mask,
        eps: label_smoothing as f32,
    };
    let rows = logits.contiguous()?.apply_op1(op)?;
    token_loss(&rows, tokens)
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
        // The op-by-op path gives the same values.
        let o = cross_entropy_ops(&logits, &targets, &mask, 0.1)?;
        assert!((o.loss.to_scalar::<f32>()? - v).abs() < 1e-6);
        assert!((o.nll_sum - s.nll_sum).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn fused_gradient_equals_the_op_by_op_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let (n, v) = (7, 11);
        let logits = candle_core::Var::from_tensor(&(Tensor::randn(0f32, 3.0, (n, v), &dev)?))?;
        let targets = Tensor::new(&[3u32, 0, 10, 5, 5, 1, 2], &dev)?;
        let mask = Tensor::new(&[1f32, 1., 1., 1., 0., 1., 0.], &dev)?;
        for eps in [0.0, 0.1] {
            let f = fused_cross_entropy(logits.as_tensor(), &targets, &mask, eps)?;
            let o = cross_entropy_ops(logits.as_tensor(), &targets, &mask, eps)?;
            let (fv, ov) = (f.loss.to_scalar::<f32>()?, o.loss.to_scalar::<f32>()?);
            assert!((fv - ov).abs() < 1e-5, "eps {eps}: {fv} vs {ov}");
            assert!((f.nll_sum - o.nll_sum).abs() < 1e-4);
            assert_eq!(f.tokens, 5.0);
            // A scaled loss, so that the incoming gradient is not 1.
            let fg = (f.loss * 3.0)?.backward()?;
            let og = (o.loss * 3.0)?.backward()?;
            let d = (fg.get(logits.as_tensor()).unwrap() - og.get(logits.as_tensor()).unwrap())?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(d < 1e-5, "eps {eps}: gradient differs by {d}");
        }
        Ok(())
    }

    /// The dispatched row kernels (AVX-512 or AVX2 where the CPU has them) and the baseline
    /// build of the same source give the same bits.
    #[test]
    fn every_vector_width_computes_the_same_bits() {
        let row: Vec<f32> = (0..1037)
            .map(|i| ((i * 7919 % 2003) as f32 / 100.0) - 10.0)
            .collect();
        let (mut o1, mut o2) = ([0f32; 2], [0f32; 2]);
        let (mut r1, mut r2) = (row.clone(), row.clone());
        row_loss_to_probs(&mut o1, &mut r1, 0.5, 17, 0.1);
        row_loss_to_probs_body(&mut o2, &mut r2, 0.5, 17, 0.1);
        assert_eq!((o1, &r1), (o2, &r2));
        probs_minus_q(&mut r1, 0.25, 17, 0.1);
        probs_minus_q_body(&mut r2, 0.25, 17, 0.1);
        assert_eq!(r1, r2);
    }
}
