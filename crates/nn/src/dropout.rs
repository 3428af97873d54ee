//! Inverted dropout's two halves on the CPU: drawing the mask from the context's stream in
//! parallel, and multiplying by it as one op whose backward pass is the same product.
//!
//! Why: op by op a dropout was a serial draw, a mask tensor and `broadcast_mul`, whose backward
//! pass computed the mask's gradient too (`grad · x`, a full-size product candle cannot skip),
//! all on the main thread while rayon's workers waited: about 30 ms of a 600 ms training step
//! of the benchmark config. The masks are the serial draw's bit for bit: each parallel chunk
//! reads the ChaCha stream from its own word position, and the stream ends where the serial
//! draw would have left it.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cpu::{cpu_slice, on_cpu_f32};

/// Mask values per parallel task: large enough that the ChaCha set-up per task is noise.
const CHUNK: usize = 1 << 14;

/// `n` mask values, 0 with probability `p` and `scale` otherwise, drawn from `rng` as `n`
/// successive `random::<f32>()` calls would draw them; `rng` is left after the last.
pub(crate) fn draw_mask(rng: &mut ChaCha8Rng, n: usize, p: f32, scale: f32) -> Vec<f32> {
    let start = rng.get_word_pos();
    let base = rng.clone();
    let mut mask = Vec::with_capacity(n);
    mask.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(j, chunk)| {
            let mut r = base.clone();
            // One 32-bit word per f32 draw (rand's `StandardUniform` for f32 reads `next_u32`).
            r.set_word_pos(start + (j * CHUNK) as u128);
            for m in chunk {
                m.write(if r.random::<f32>() < p { 0.0 } else { scale });
            }
        });
    // SAFETY: the chunks cover all n elements, and each element of a chunk was written.
    unsafe { mask.set_len(n) };
    rng.set_word_pos(start + n as u128);
    mask
}

/// `x · mask`, one mask value for each `repeat` consecutive elements of `x` (1 for dropout, the
/// feature size for word dropout).
#[derive(Clone)]
struct MaskMul {
    mask: Arc<Vec<f32>>,
    repeat: usize,
}

impl CustomOp1 for MaskMul {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "dropout input")?;
        if x.len() != self.mask.len() * self.repeat {
            candle_core::bail!(
                "dropout: {} elements against a mask of {} × {}",
                x.len(),
                self.mask.len(),
                self.repeat
            );
        }
        let mut out = Vec::with_capacity(x.len());
        let per_task = CHUNK.div_ceil(self.repeat) * self.repeat;
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(per_task)
            .zip(x.par_chunks(per_task))
            .enumerate()
            .for_each(|(j, (o, x))| {
                let m0 = j * per_task / self.repeat;
                for (i, (o, x)) in o.iter_mut().zip(x).enumerate() {
                    o.write(x * self.mask[m0 + i / self.repeat]);
                }
            });
        // SAFETY: the output chunks pair with x's chunks of the same lengths, and each element
        // was written.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d(x · m)/dx = m: the same product on the gradient, and nothing for the mask.
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// `x` times `mask` (`mask_dims`, equal to `x`'s or with a last dimension of 1 that broadcasts):
/// the CPU op for f32 on the CPU, candle's `broadcast_mul` elsewhere.
pub(crate) fn apply_mask(x: &Tensor, mask: Vec<f32>, mask_dims: Vec<usize>) -> Result<Tensor> {
    let (dims, r) = (x.dims(), x.rank());
    // Element masks, or masks whose last dimension of 1 repeats over `x`'s last.
    let fits = r > 0
        && mask_dims.len() == r
        && mask_dims[..r - 1] == dims[..r - 1]
        && (mask_dims[r - 1] == dims[r - 1] || mask_dims[r - 1] == 1);
    if on_cpu_f32(x) && fits && !mask.is_empty() {
        let repeat = x.elem_count() / mask.len();
        let op = MaskMul {
            mask: Arc::new(mask),
            repeat,
        };
        return x.contiguous()?.apply_op1(op);
    }
    let mask = Tensor::from_vec(mask, mask_dims, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::max_diff;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    #[test]
    fn the_parallel_draw_is_the_serial_one_and_leaves_the_stream_where_it_would() {
        for n in [0, 5, CHUNK, 3 * CHUNK + 17] {
            let mut serial = ChaCha8Rng::seed_from_u64(9);
            let mut parallel = serial.clone();
            let _: u32 = serial.random();
            let _: u32 = parallel.random();
            let want: Vec<f32> = (0..n)
                .map(|_| {
                    if serial.random::<f32>() < 0.3 {
                        0.0
                    } else {
                        2.0
                    }
                })
                .collect();
            assert_eq!(draw_mask(&mut parallel, n, 0.3, 2.0), want, "n = {n}");
            assert_eq!(serial.random::<u64>(), parallel.random::<u64>(), "n = {n}");
        }
    }

    /// Values and the input's gradient against `broadcast_mul`, for element and word masks, on
    /// a strided input.
    #[test]
    fn matches_broadcast_mul_in_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 2 * CHUNK / 3 + 1, 5), &dev)?)?;
        let xt = x.transpose(0, 1)?;
        let dims = xt.dims().to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for mask_dims in [dims.clone(), vec![dims[0], dims[1], 1]] {
            let n = mask_dims.iter().product();
            let mask = draw_mask(&mut rng, n, 0.4, 1.0 / 0.6);
            let m = Tensor::from_vec(mask.clone(), mask_dims.clone(), &dev)?;
            let want = xt.broadcast_mul(&m)?;
            let got = apply_mask(&xt, mask, mask_dims)?;
            assert_eq!(max_diff(&got, &want)?, 0.0);
            let wts = Tensor::randn(0f32, 1.0, want.dims(), &dev)?;
            let gw = (want * &wts)?.sum_all()?.backward()?;
            let gg = (got * &wts)?.sum_all()?.backward()?;
            assert_eq!(max_diff(gw.get(&x).unwrap(), gg.get(&x).unwrap())?, 0.0);
        }
        Ok(())
    }
}
