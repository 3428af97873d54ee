//! The output projection and the token loss as one CPU op: `x W_oᵀ + b` → masked, smoothed
//! cross-entropy.
//!
//! The logits `(N, V)` are the largest tensor of a training step (N = batch × target length,
//! V = vocabulary: 64 × 50 × 8000 floats = 100 MB for the longest Multi30k batch). As separate ops,
//! the matmul output, the bias sum, the loss's gradient and the gradients passing back through the
//! bias add each hold an `(N, V)` buffer at the peak. Here no `(N, V)` buffer exists: the op runs
//! over blocks of rows, and a block's logits become its softmax and then its gradient in place
//! while they are still in cache. In training the forward pass computes the gradients as it goes
//! (`∂x = ∂logits W`, `∂W += ∂logitsᵀ x`, `∂b`) for the upstream gradient the mean loss will send
//! (1 / tokens per row), and the backward pass hands them over; any other upstream gradient is
//! met by scaling them (a uniform one) or by a second pass over the blocks (the general case).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{cpu_slice, matmul, matmul_extend, on_cpu_f32, with_data, View};
use crate::loss::{
    host_targets, masked_cross_entropy, probs_minus_q, row_loss_to_probs, token_loss, TokenLoss,
};

/// Rows per block at most; a batch's rows are cut into blocks of equal height. The three gemms
/// of a block (`V` = 7900, `D` = 1280, 2 threads) ran at 215 GFLOP/s for 256 rows, 242 for 512,
/// 261 for 900 and 268 for 1024; a Multi30k batch has about 800 target tokens (at most 2560).
/// A block's logits (1024 × 8000 floats = 33 MB) are the op's largest buffer.
const BLOCK_ROWS: usize = 1024;

/// Inputs `x` `(N, D)`, `w` `(V, D)`, `b` `(V)`; output `(N, 2)`: per row the smoothed loss and
/// the plain negative log-likelihood, both times the row's mask (only column 0 is differentiable).
struct ProjectionLoss {
    targets: Vec<u32>,
    mask: Vec<f32>,
    eps: f32,
    block_rows: usize,
    /// In training, the upstream gradient each row is expected to get; the forward pass then
    /// computes the gradients for it.
    expected: Option<f32>,
    /// The forward pass's gradients, taken by the backward pass.
    grads: Mutex<Option<Grads>>,
}

/// `∂x` `(N, D)`, `∂W` `(V, D)`, `∂b` `(V)`.
struct Grads {
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl Grads {
    /// Empty buffers that [`accumulate_grads`] fills block by block: no `(N, D)` or `(V, D)`
    /// buffer is zeroed first only to be overwritten by the first product into it.
    fn for_blocks(n: usize, d: usize, v: usize) -> Self {
        Self {
            dx: Vec::with_capacity(n * d),
            dw: Vec::with_capacity(v * d),
            db: vec![0.0; v],
        }
    }

    /// The gradients after the last block; with no rows at all, `∂W` is zero.
    fn finished(mut self, d: usize) -> Self {
        if self.dw.len() < self.db.len() * d {
            self.dw = crate::cpu::zeros(self.db.len() * d);
        }
        self
    }

    fn scale(&mut self, s: f32) {
        for g in [&mut self.dx, &mut self.dw, &mut self.db] {
            g.par_chunks_mut(1 << 14)
                .for_each(|c| c.iter_mut().for_each(|x| *x *= s));
        }
    }

    fn into_tensors(self, n: usize, d: usize, dev: &candle_core::Device) -> Result<[Tensor; 3]> {
        let v = self.db.len();
        Ok([
            Tensor::from_vec(self.dx, (n, d), dev)?,
            Tensor::from_vec(self.dw, (v, d), dev)?,
            Tensor::from_vec(self.db, v, dev)?,
        ])
    }
}

/// The op's inputs as host slices, with their sizes.
struct Inputs<'a> {
    x: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    n: usize,
    d: usize,
    v: usize,
}

/// `logits (r, V) = x (r, D) wᵀ + b` in `buf`, which is reused from block to block and never
/// zeroed (the product writes every element).
fn project_into<'a>(x: &[f32], inp: &Inputs, r: usize, buf: &'a mut Vec<f32>) -> &'a mut [f32] {
    let (d, v) = (inp.d, inp.v);
    // wᵀ as a (D, V) view of the (V, D) matrix.
    let wt = View::transposed(inp.w, d);
    buf.clear();
    matmul_extend((r, v, d), buf, View::rows(x, d), wt);
    let logits = buf.as_mut_slice();
    logits.par_chunks_mut(v).for_each(|row| {
        for (l, bias) in row.iter_mut().zip(inp.b) {
            *l += bias;
        }
    });
    logits
}

impl ProjectionLoss {
    /// One pass over the blocks of rows: each row's `[loss, nll]` into `out`, and with `scale`,
    /// the gradients for the upstream gradient `scale[i]` of row i's loss.
    fn blocks(&self, inp: &Inputs, out: &mut [f32], scale: Option<&[f32]>) -> Option<Grads> {
        let (n, d, v) = (inp.n, inp.d, inp.v);
        // Blocks of equal height: a short last block runs the gemms well below their speed.
        let blocks = n.div_ceil(self.block_rows.max(1)).max(1);
        let rows = n.div_ceil(blocks).max(1);
        let mut grads = scale.map(|_| Grads::for_blocks(n, d, v));
        let mut buf = Vec::with_capacity(rows * v);
        for r0 in (0..n).step_by(rows) {
            let r = rows.min(n - r0);
            let x = &inp.x[r0 * d..(r0 + r) * d];
            let logits = project_into(x, inp, r, &mut buf);
            let scale = scale.map(|s| &s[r0..r0 + r]);
            out[r0 * 2..(r0 + r) * 2]
                .par_chunks_mut(2)
                .zip(logits.par_chunks_mut(v))
                .enumerate()
                .for_each(|(k, (o, row))| {
                    let i = r0 + k;
                    row_loss_to_probs(o, row, self.mask[i], self.targets[i], self.eps);
                    if let Some(s) = scale {
                        probs_minus_q(row, s[k] * self.mask[i], self.targets[i], self.eps);
                    }
                });
            if let Some(g) = grads.as_mut() {
                accumulate_grads(g, logits, x, inp, r);
            }
        }
        grads.map(|g| g.finished(d))
    }

    /// The gradients for the upstream gradient `g[i]` of row i's loss, by a second pass over the
    /// blocks.
    fn recompute(&self, x: &Tensor, w: &Tensor, b: &Tensor, g: &[f32]) -> Result<Grads> {
        let ((n, d), v) = (x.dims2()?, w.dim(0)?);
        let grads = with_data(x, "x", |x| {
            with_data(w, "w", |w| {
                with_data(b, "b", |b| {
                    let inp = Inputs { x, w, b, n, d, v };
                    Ok(self.blocks(&inp, &mut vec![0f32; n * 2], Some(g)))
                })
            })
        })?;
        grads.ok_or_else(|| candle_core::Error::Msg("projection loss: no gradients".into()))
    }
}

/// Adds the next block's share of the gradients (its `r` rows follow the rows already in
/// `∂x`): its rows of `∂x`, and its sums into `∂W` and `∂b` (blocks in row order, so the sums do
/// not depend on the thread count). The first block writes `∂W`; the others add into it.
fn accumulate_grads(g: &mut Grads, dl: &[f32], x: &[f32], inp: &Inputs, r: usize) {
    let (d, v) = (inp.d, inp.v);
    let (dlv, wv) = (View::rows(dl, v), View::rows(inp.w, d));
    matmul_extend((r, d, v), &mut g.dx, dlv, wv);
    // ∂logitsᵀ as a (V, r) view.
    let (dlt, xv) = (View::transposed(dl, v), View::rows(x, d));
    if g.dw.is_empty() {
        matmul_extend((v, d, r), &mut g.dw, dlt, xv);
    } else {
        matmul((v, d, r), &mut g.dw, d, true, dlt, xv);
    }
    // ∂b: column sums, columns split across threads.
    let chunk = v.div_ceil(rayon::current_num_threads().max(1)).max(1);
    g.db.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| {
        let cols = c * chunk..c * chunk + out.len();
        for row in dl.chunks(v) {
            for (o, x) in out.iter_mut().zip(&row[cols.clone()]) {
                *o += x;
            }
        }
    });
}

/// Records which way a backward pass went, for the tests.
fn went(_way: &'static str) {
    #[cfg(test)]
    tests::WAYS.with(|w| w.borrow_mut().push(_way));
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
        let inp = Inputs {
            x: cpu_slice(s1, l1, "x")?,
            w: cpu_slice(s2, l2, "w")?,
            b: cpu_slice(s3, l3, "b")?,
            n,
            d,
            v,
        };
        let mut out = vec![0f32; n * 2];
        match self.expected {
            Some(e) => {
                let g = self.blocks(&inp, &mut out, Some(&vec![e; n]));
                *self.grads.lock().unwrap_or_else(|e| e.into_inner()) = g;
            }
            None => {
                self.blocks(&inp, &mut out, None);
            }
        }
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
        let g = grad_res.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let saved = self.grads.lock().unwrap_or_else(|e| e.into_inner()).take();
        let uniform = g.first().filter(|&&u| g.iter().all(|&x| x == u));
        let (grads, way) = match (saved, self.expected, uniform) {
            (Some(grads), Some(e), Some(&u)) if u == e => (grads, "saved"),
            (Some(mut grads), Some(e), Some(&u)) => {
                grads.scale(u / e);
                (grads, "scaled")
            }
            _ => (self.recompute(x, w, b, &g)?, "recomputed"),
        };
        went(way);
        let [dx, dw, db] = grads.into_tensors(n, d, x.device())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The loss of a batch from the output layer's input: `x` `(N, D)`, the output layer's `weight`
/// `(V, D)` and `bias` `(V)` (none: zero), `targets` `(N)`, `mask` `(N)` (1 = real token).
/// Equal to projecting and calling [`masked_cross_entropy`], which is what runs off the CPU.
///
/// `train`: the loss's own backward pass will follow, so the forward pass computes the
/// gradients as it goes (no `(N, V)` buffer waits for the backward pass). Without it, a backward
/// pass, if one comes, runs the projection again.
pub fn projection_cross_entropy(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
    train: bool,
) -> Result<TokenLoss> {
    let args = LossArgs {
        targets,
        mask,
        label_smoothing,
        train,
    };
    in_blocks(x, weight, bias, args, BLOCK_ROWS)
}

/// [`projection_cross_entropy`]'s arguments after the three tensors of the projection.
struct LossArgs<'a> {
    targets: &'a Tensor,
    mask: &'a Tensor,
    label_smoothing: f64,
    train: bool,
}

/// [`projection_cross_entropy`] with blocks of `block_rows` rows (tests use small blocks).
fn in_blocks(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: LossArgs,
    block_rows: usize,
) -> Result<TokenLoss> {
    if !on_cpu_f32(x) || x.rank() != 2 {
        let logits = x.matmul(&weight.t()?)?;
        let logits = match bias {
            Some(b) => logits.broadcast_add(b)?,
            None => logits,
        };
        return masked_cross_entropy(&logits, a.targets, a.mask, a.label_smoothing);
    }
    let v = weight.dim(0)?;
    let (targets, mask, tokens) = host_targets(a.targets, a.mask, v)?;
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
        eps: a.label_smoothing as f32,
        block_rows,
        // token_loss divides the rows' sum by the token count: candle's backward pass sends
        // each row that factor as an f32.
        expected: a.train.then_some((1.0 / tokens.max(1.0)) as f32),
        grads: Mutex::new(None),
    };
    let rows = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    token_loss(&rows, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};
    use std::cell::RefCell;

    thread_local! {
        pub(super) static WAYS: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// Per row: `m · ((1-ε) nll + ε mean(-log p))`, op by op.
    fn reference_rows(logits: &Tensor, t: &Tensor, m: &Tensor, eps: f64) -> Result<Tensor> {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let nll = logp.gather(&t.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        let smooth = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - eps))? + (smooth * eps)?)? * m
    }

    struct Case {
        x: Var,
        w: Var,
        b: Var,
        targets: Tensor,
        mask: Tensor,
    }

    impl Case {
        fn new(n: usize, d: usize, v: usize) -> Result<Self> {
            let dev = Device::Cpu;
            let var = |s: &[usize]| Var::from_tensor(&Tensor::randn(0f32, 1.0, s, &dev)?);
            let targets: Vec<u32> = (0..n).map(|i| ((i * 7 + 1) % v) as u32).collect();
            let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 2 { 0.0 } else { 1.0 }).collect();
            Ok(Self {
                x: var(&[n, d])?,
                w: var(&[v, d])?,
                b: var(&[v])?,
                targets: Tensor::new(targets.as_slice(), &dev)?,
                mask: Tensor::new(mask.as_slice(), &dev)?,
            })
        }

        fn logits(&self) -> Result<Tensor> {
            let (x, w) = (self.x.as_tensor(), self.w.as_tensor());
            x.matmul(&w.t()?)?.broadcast_add(self.b.as_tensor())
        }

        fn fused(&self, eps: f64, train: bool, block_rows: usize) -> Result<TokenLoss> {
            let a = LossArgs {
                targets: &self.targets,
                mask: &self.mask,
                label_smoothing: eps,
                train,
            };
            let (x, w, b) = (self.x.as_tensor(), self.w.as_tensor(), self.b.as_tensor());
            in_blocks(x, w, Some(b), a, block_rows)
        }

        fn assert_grads(
            &self,
            want: &candle_core::backprop::GradStore,
            got: &candle_core::backprop::GradStore,
            what: &str,
        ) -> Result<()> {
            for (name, t) in [("x", &self.x), ("w", &self.w), ("b", &self.b)] {
                let dd = max_diff(
                    want.get(t.as_tensor()).unwrap(),
                    got.get(t.as_tensor()).unwrap(),
                )?;
                assert!(dd < 1e-5, "{what}: gradient of {name} differs by {dd}");
            }
            Ok(())
        }
    }

    #[test]
    fn equals_projection_then_loss_in_values_and_gradients() -> Result<()> {
        // 11 rows in blocks of at most 4 (4, 4 and 3 rows) and in one block.
        let c = Case::new(11, 5, 9)?;
        for (eps, train, block) in [
            (0.0, true, 4),
            (0.1, true, 4),
            (0.1, false, 4),
            (0.1, true, 256),
        ] {
            let what = format!("eps {eps}, train {train}, blocks of {block}");
            let r = masked_cross_entropy(&c.logits()?, &c.targets, &c.mask, eps)?;
            let f = c.fused(eps, train, block)?;
            let (rv, fv) = (r.loss.to_scalar::<f32>()?, f.loss.to_scalar::<f32>()?);
            assert!((rv - fv).abs() < 1e-5, "{what}: {rv} vs {fv}");
            assert!((r.nll_sum - f.nll_sum).abs() < 1e-4);
            assert_eq!(f.tokens, 9.0);
            WAYS.with(|w| w.borrow_mut().clear());
            c.assert_grads(&r.loss.backward()?, &f.loss.backward()?, &what)?;
            // The same graph again, at twice the upstream gradient: the saved gradients are
            // gone, so this pass runs the blocks again.
            let r2 = (&r.loss * 2.0)?.backward()?;
            c.assert_grads(&r2, &(&f.loss * 2.0)?.backward()?, &what)?;
            // A fresh graph at twice the gradient: the saved gradients, scaled.
            let f = c.fused(eps, train, block)?;
            c.assert_grads(&r2, &(&f.loss * 2.0)?.backward()?, &what)?;
            let ways = WAYS.with(|w| w.take());
            let want = if train {
                ["saved", "recomputed", "scaled"]
            } else {
                ["recomputed"; 3]
            };
            assert_eq!(ways, want, "{what}");
        }
        Ok(())
    }

    #[test]
    fn a_different_gradient_per_row_runs_the_blocks_again() -> Result<()> {
        let c = Case::new(7, 4, 6)?;
        let (n, eps) = (7, 0.1);
        let weights = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
        let want = (reference_rows(&c.logits()?, &c.targets, &c.mask, eps)? * &weights)?
            .sum_all()?
            .backward()?;
        let (targets, mask, _) = host_targets(&c.targets, &c.mask, 6)?;
        let op = ProjectionLoss {
            targets,
            mask,
            eps: eps as f32,
            block_rows: 3,
            expected: Some(1.0),
            grads: Mutex::new(None),
        };
        let (x, w, b) = (c.x.as_tensor(), c.w.as_tensor(), c.b.as_tensor());
        let rows = x.apply_op3(w, b, op)?;
        WAYS.with(|w| w.borrow_mut().clear());
        let got = (rows.narrow(1, 0, 1)?.squeeze(1)? * &weights)?
            .sum_all()?
            .backward()?;
        assert_eq!(WAYS.with(|w| w.take()), ["recomputed"]);
        c.assert_grads(&want, &got, "per-row gradients")
    }

    /// A batch of padding only: no row is projected, and every gradient is zero (the first
    /// block writes `∂W` otherwise; here there is none).
    #[test]
    fn a_batch_of_padding_has_zero_gradients() -> Result<()> {
        let c = Case::new(3, 4, 5)?;
        let mask = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
        let a = LossArgs {
            targets: &c.targets,
            mask: &mask,
            label_smoothing: 0.1,
            train: true,
        };
        let (x, w, b) = (c.x.as_tensor(), c.w.as_tensor(), c.b.as_tensor());
        let l = in_blocks(x, w, Some(b), a, 2)?;
        assert_eq!(l.tokens, 0.0);
        let g = l.loss.backward()?;
        for (t, what) in [(x, "x"), (w, "w"), (b, "b")] {
            let d = g.get(t).map(|d| d.abs()?.sum_all()?.to_scalar::<f32>());
            assert!(matches!(d, None | Some(Ok(0.0))), "∂{what}: {d:?}");
        }
        Ok(())
    }
}
