//! The fused recurrences' packed, time-major outputs `(T, B, W)` as the batch-major rows the
//! readout reads: chosen column spans side by side, then optionally a batch-major tail `(B, T, E)`
//! (the embeddings of the Bahdanau readout `[h; c; e]`), in one parallel pass each way.
//!
//! Why: op by op this is narrow, transpose and cat, and candle's `cat` along the last dimension of
//! non-contiguous pieces transposes each to the front, concatenates and transposes back: an
//! element-by-element strided copy on one thread, whose result is strided too. The backward pass
//! was dearer: each narrow's gradient became a zero-padded `(T, B, W)` buffer (20 MB for 64
//! sentences of 23 words at the Bahdanau decoder's W = 3345), one per span, then summed, and each
//! transposed gradient was copied element by element. Here the gradient of `(T, B, W)` is written
//! once, in parallel.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{cpu_slice, on_cpu_f32};

/// Rows per parallel task: a row is a few KB, so smaller tasks cost more to hand out than to run.
const ROWS_PER_TASK: usize = 16;

#[derive(Clone, Debug)]
struct Unpack {
    /// `(start, len)` column spans of a packed row, in output order.
    spans: Vec<(usize, usize)>,
    /// Width of the tail's rows (0: no tail).
    tail: usize,
}

impl Unpack {
    fn span_width(&self) -> usize {
        self.spans.iter().map(|s| s.1).sum()
    }

    fn check(&self, packed: &Layout) -> Result<(usize, usize, usize)> {
        let (t, b, w) = packed.shape().dims3()?;
        if self.spans.iter().any(|&(s, l)| s + l > w) {
            candle_core::bail!("unpack: spans {:?} outside rows of {w}", self.spans);
        }
        Ok((t, b, w))
    }

    /// `(B, T, Σ spans + tail)` from the packed rows and the tail.
    fn forward(&self, packed: &[f32], tail: &[f32], (t, b, w): (usize, usize, usize)) -> Vec<f32> {
        let n = self.span_width() + self.tail;
        let mut out = Vec::with_capacity(b * t * n);
        out.spare_capacity_mut()[..b * t * n]
            .par_chunks_mut(n)
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(r, row)| {
                let (bi, ti) = (r / t, r % t);
                let src = &packed[(ti * b + bi) * w..][..w];
                let mut at = 0;
                for &(s, l) in &self.spans {
                    write(&mut row[at..at + l], &src[s..s + l]);
                    at += l;
                }
                write(&mut row[at..], &tail[r * self.tail..(r + 1) * self.tail]);
            });
        // SAFETY: every row of the b·t rows was written in full above.
        unsafe { out.set_len(b * t * n) };
        out
    }

    /// The gradients of the packed rows `(T, B, W)` (zero outside the spans) and of the tail
    /// `(B, T, E)`, from the output's gradient `(B, T, Σ spans + tail)`.
    fn backward(&self, grad: &[f32], (t, b, w): (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
        let n = self.span_width() + self.tail;
        let spans = self.by_start();
        let mut g_packed = Vec::with_capacity(t * b * w);
        g_packed.spare_capacity_mut()[..t * b * w]
            .par_chunks_mut(w)
            .with_min_len(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(q, row)| {
                let (ti, bi) = (q / b, q % b);
                let src = &grad[(bi * t + ti) * n..][..n];
                let mut filled = 0;
                for &(s, l, from) in &spans {
                    row[filled..s].fill(MaybeUninit::new(0.0));
                    write(&mut row[s..s + l], &src[from..from + l]);
                    filled = s + l;
                }
                row[filled..].fill(MaybeUninit::new(0.0));
            });
        // SAFETY: every packed row was written in full: zeros up to each span, the span, zeros
        // after the last one.
        unsafe { g_packed.set_len(t * b * w) };
        let sw = self.span_width();
        let g_tail: Vec<f32> = grad
            .par_chunks(n)
            .with_min_len(ROWS_PER_TASK)
            .flat_map_iter(|row| row[sw..].iter().copied())
            .collect();
        (g_packed, g_tail)
    }

    /// The spans as `(start, len, column in an output row)`, in packed order.
    fn by_start(&self) -> Vec<(usize, usize, usize)> {
        let mut at = 0;
        let mut v: Vec<_> = self
            .spans
            .iter()
            .map(|&(s, l)| {
                at += l;
                (s, l, at - l)
            })
            .collect();
        v.sort_unstable();
        v
    }
}

fn write(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
    }
}

fn storage(v: Vec<f32>, shape: impl Into<Shape>) -> (CpuStorage, Shape) {
    (CpuStorage::F32(v), shape.into())
}

impl CustomOp1 for Unpack {
    fn name(&self) -> &'static str {
        "unpack"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (t, b, w) = self.check(l)?;
        let packed = cpu_slice(s, l, "packed rows")?;
        let out = self.forward(packed, &[], (t, b, w));
        Ok(storage(out, (b, t, self.span_width())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let grad = grad.contiguous()?;
        let (g, _) =
            crate::cpu::with_data(&grad, "unpack gradient", |g| Ok(self.backward(g, dims)))?;
        Ok(Some(Tensor::from_vec(g, dims, arg.device())?))
    }
}

impl CustomOp2 for Unpack {
    fn name(&self) -> &'static str {
        "unpack-with-tail"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (t, b, w) = self.check(l1)?;
        if l2.shape().dims3()? != (b, t, self.tail) {
            candle_core::bail!(
                "unpack: tail {:?} for ({b}, {t}, {})",
                l2.shape(),
                self.tail
            );
        }
        let packed = cpu_slice(s1, l1, "packed rows")?;
        let tail = cpu_slice(s2, l2, "tail")?;
        let out = self.forward(packed, tail, (t, b, w));
        Ok(storage(out, (b, t, self.span_width() + self.tail)))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        arg2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = arg1.dims3()?;
        let grad = grad.contiguous()?;
        let (g1, g2) =
            crate::cpu::with_data(&grad, "unpack gradient", |g| Ok(self.backward(g, dims)))?;
        Ok((
            Some(Tensor::from_vec(g1, dims, arg1.device())?),
            Some(Tensor::from_vec(g2, arg2.dims(), arg2.device())?),
        ))
    }
}

/// Columns `spans` (`(start, len)`, non-overlapping) of the time-major packed rows `packed`
/// `(T, B, W)`, side by side, then `tail`'s `(B, T, E)` when given: `(B, T, Σ len + E)`,
/// contiguous. One CPU op each way for f32 on the CPU; narrow, transpose and cat elsewhere.
pub fn batch_major(
    packed: &Tensor,
    spans: &[(usize, usize)],
    tail: Option<&Tensor>,
) -> Result<Tensor> {
    let fused = on_cpu_f32(packed) && tail.is_none_or(on_cpu_f32) && !overlapping(spans);
    if !fused {
        let mut parts = spans
            .iter()
            .map(|&(s, l)| packed.narrow(2, s, l)?.transpose(0, 1))
            .collect::<Result<Vec<_>>>()?;
        parts.extend(tail.cloned());
        return Tensor::cat(&parts, 2);
    }
    let op = Unpack {
        spans: spans.to_vec(),
        tail: match tail {
            Some(x) => x.dim(2)?,
            None => 0,
        },
    };
    let packed = packed.contiguous()?;
    match tail {
        Some(x) => packed.apply_op2(&x.contiguous()?, op),
        None => packed.apply_op1(op),
    }
}

fn overlapping(spans: &[(usize, usize)]) -> bool {
    let mut s = spans.to_vec();
    s.sort_unstable();
    s.windows(2).any(|p| p[0].0 + p[0].1 > p[1].0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::max_diff;
    use candle_core::{Device, Var};

    /// Values and gradients against narrow, transpose and cat, with spans out of order, a gap
    /// and columns after the last span, with and without a tail.
    #[test]
    fn matches_narrow_transpose_and_cat_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (t, b, w, e) = (5, 3, 11, 4);
        let packed = Var::from_tensor(&Tensor::randn(0f32, 1.0, (t, b, w), &dev)?)?;
        let tail = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, e), &dev)?)?;
        let spans = [(6, 3), (0, 2)];
        for with_tail in [false, true] {
            let tl = with_tail.then(|| tail.as_tensor());
            let mut parts = spans
                .iter()
                .map(|&(s, l)| packed.narrow(2, s, l)?.transpose(0, 1))
                .collect::<Result<Vec<_>>>()?;
            parts.extend(tl.cloned());
            let want = Tensor::cat(&parts, 2)?;
            let got = batch_major(packed.as_tensor(), &spans, tl)?;
            assert_eq!(got.dims(), want.dims());
            assert!(got.is_contiguous());
            assert_eq!(max_diff(&got, &want)?, 0.0);
            let wts = Tensor::randn(0f32, 1.0, want.dims(), &dev)?;
            let gw = (want * &wts)?.sum_all()?.backward()?;
            let gg = (got * &wts)?.sum_all()?.backward()?;
            let (a, z) = (gw.get(&packed).unwrap(), gg.get(&packed).unwrap());
            assert_eq!(max_diff(a, z)?, 0.0, "packed gradient, tail {with_tail}");
            if with_tail {
                let (a, z) = (gw.get(&tail).unwrap(), gg.get(&tail).unwrap());
                assert_eq!(max_diff(a, z)?, 0.0, "tail gradient");
            }
        }
        Ok(())
    }
}
