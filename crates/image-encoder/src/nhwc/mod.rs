//! Convolution kernels on channels-last `(B, H, W, C)` tensors, the layout both backbones run in.
//!
//! Channels-last makes a 1×1 convolution one gemm over `(B·H·W, C)` rows with no im2col and no
//! transpose, lets a depthwise convolution run its inner loop over contiguous channels, and lets
//! the feature grid become the decoder's `(B, H·W, C)` memory by a reshape. Each op takes the
//! batch-norm-folded weights and a bias, and applies its activation in the same pass:
//!
//! * [`pointwise`]: `act(x W + b)` on rows, a gemm per block of rows (1×1 convolutions);
//! * [`conv2d`]: a dense k×k convolution, im2col and gemm a block of output pixels at a time
//!   (3×3 at stride 1 on 16 channels or more: Winograd's F(2×2, 3×3), `winograd`);
//! * [`depthwise`]: `act(dwconv(x) + b)`, a k×k filter per channel, stride 1 or 2, `k/2` padding;
//! * [`batch_norm_train`]: batch norm with the batch's statistics and an activation, in one op;
//! * [`max_pool2`]: 2×2 max pooling;
//! * [`batch_norm_act_max_pool`]: the last three in one op, the normalised map never stored;
//! * [`FrozenMbConv`]: a frozen MBConv block band by band, its expanded map never stored.
//!
//! Every op has a backward pass (the fine-tuned Lite0 blocks and the small CNN train through
//! them), and an op-by-op twin in candle's own ops checked against it in values and gradients
//! (`tests`). What this module must NOT know: checkpoint names, batch-norm statistics, configs.

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};
use rayon::prelude::*;
use seq2seq_nn::cpu::with_data;

/// The activation an op applies after its bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// `min(max(x, 0), 6)`, MobileNet's and EfficientNet-Lite's.
    Relu6,
}

impl Act {
    #[inline(always)]
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// Whether the activation let its input through, read from its output `y` (PyTorch's
    /// convention at the edges: no gradient where it clipped, at 0 and 6 included).
    #[inline(always)]
    fn passes(self, y: f32) -> bool {
        match self {
            Act::None => true,
            Act::Relu => y > 0.0,
            Act::Relu6 => y > 0.0 && y < 6.0,
        }
    }

    /// The gradient through the activation, from its output `y`: one pass, no masks.
    fn backward(self, y: &Tensor, grad: &Tensor) -> Result<Tensor> {
        if self == Act::None {
            return Ok(grad.clone());
        }
        if !seq2seq_nn::cpu::on_cpu_f32(y) {
            let inside = match self {
                Act::Relu6 => (y.gt(0f32)? * y.lt(6f32)?)?,
                _ => y.gt(0f32)?,
            };
            return grad.mul(&inside.to_dtype(grad.dtype())?);
        }
        const CHUNK: usize = 1 << 16;
        let (y, grad) = (y.contiguous()?, grad.contiguous()?);
        let n = y.elem_count();
        let mut out = with_data(&y, "y", |yd| {
            with_data(&grad, "grad", |gd| {
                Ok(par_rows(n.div_ceil(CHUNK), CHUNK, |r, dst| {
                    let (ys, gs) = (&yd[r * CHUNK..n.min((r + 1) * CHUNK)], &gd[r * CHUNK..]);
                    for ((d, &yv), &gv) in dst.iter_mut().zip(ys).zip(gs) {
                        *d = if self.passes(yv) { gv } else { 0.0 };
                    }
                }))
            })
        })?;
        out.truncate(n);
        Tensor::from_vec(out, y.shape(), y.device())
    }
}

/// Output side of a `k`-wide window at `stride` with `k/2` zero padding on each side (PyTorch's
/// `Conv2d(padding=k//2)`).
pub fn out_size(size: usize, k: usize, stride: usize) -> usize {
    (size + 2 * (k / 2) - k) / stride + 1
}

/// Whether the CPU runs AVX2: the kernels' inner loops are compiled for it as well as for
/// baseline x86-64 (whose SSE2 has half the lanes) and pick one at run time. The check is
/// `nn::simd`'s, so `SEQ2SEQ_SIMD=baseline` switches these kernels off too.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use seq2seq_nn::simd::{tier, Tier};
    matches!(tier(), Tier::Avx512 | Tier::Avx2)
}

/// `$vis fn $name(args)` calling the `#[inline(always)]` function `$body(args)`, compiled twice
/// (for AVX2 and for baseline x86-64) and picked at run time: the kernels' channel loops then
/// run 8 lanes wide where the CPU can.
macro_rules! avx2_dispatch {
    ($vis:vis fn $name:ident => $body:ident($($a:ident: $t:ty),* $(,)?)) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) {
                    $body($($a),*)
                }
                if $crate::nhwc::has_avx2() {
                    // SAFETY: the CPU has AVX2 (checked at run time).
                    return unsafe { avx2($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

/// A new `(rows × row_len)` buffer whose rows `fill(row, scratch)` computes in parallel, each
/// into a per-thread scratch row that is then copied out. The output is never zeroed first: at
/// Lite0's early layers (150 MB a tensor) zeroing and the copies into it cost ~12 % of a forward.
fn par_rows(rows: usize, row_len: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let n = rows * row_len;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    if row_len > 0 {
        out.spare_capacity_mut()[..n]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each_init(
                || vec![0f32; row_len],
                |scratch, (r, dst)| {
                    fill(r, scratch);
                    for (d, &v) in dst.iter_mut().zip(scratch.iter()) {
                        d.write(v);
                    }
                },
            );
    }
    // SAFETY: every one of the `n` elements was written above (the chunks cover `..n`).
    unsafe { out.set_len(n) };
    out
}

/// A new buffer of `len` elements whose chunks of `chunk_len` (the last one may be shorter)
/// `fill(i, chunk)` writes in parallel, straight into the allocation: no zeroing first, no copy
/// from a scratch buffer.
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
unsafe fn par_uninit(
    len: usize,
    chunk_len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk_len.max(1))
        .enumerate()
        .for_each(|(i, chunk)| fill(i, chunk));
    // SAFETY: the chunks cover `..len`, and the caller's `fill` wrote each of them whole.
    unsafe { out.set_len(len) };
    out
}

/// Rows per parallel chunk of the per-channel reductions.
const CHUNK_ROWS: usize = 1024;

/// Per-channel sums of `f(row)` over the rows of `y` `(n, c)`, chunks of rows in parallel, the
/// chunks' sums added in order (the same bits however rayon splits the work).
pub(super) fn channel_sums(y: &[f32], c: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    y.par_chunks(CHUNK_ROWS * c)
        .map(|chunk| {
            let mut acc = vec![0f32; c];
            for row in chunk.chunks_exact(c) {
                f(row, &mut acc);
            }
            acc
        })
        .collect::<Vec<_>>()
        .into_iter()
        .reduce(add_into)
        .unwrap_or_else(|| vec![0f32; c])
}

/// A row-major or transposed operand of [`seq2seq_nn::cpu::matmul_with`]: element `(i, j)` at
/// `data[i·rs + j·cs]`.
fn view(data: &[f32], rs: usize, cs: usize) -> seq2seq_nn::cpu::View<'_> {
    seq2seq_nn::cpu::View { data, rs, cs }
}

/// `a + b`, elementwise: the reduction of per-thread partial sums.
fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// The `k`×`k` shifted views of `x` `(B, H, W, C)` padded by `k/2` (stride 1, tap-major): what
/// the twins of the k×k ops combine.
fn shifted_taps(x: &Tensor, k: usize) -> Result<Vec<Tensor>> {
    let (_, h, w, _) = x.dims4()?;
    let p = k / 2;
    let xp = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
    let (h1, w1) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            taps.push(xp.narrow(1, ky, h1)?.narrow(2, kx, w1)?);
        }
    }
    Ok(taps)
}

/// Every second line and column of `t` `(B, H, W, C)`, from the first: a stride-1 result made
/// stride 2.
fn every_second(t: &Tensor) -> Result<Tensor> {
    let (_, h, w, _) = t.dims4()?;
    let every2 = |n: usize| Tensor::arange_step(0u32, n as u32, 2, t.device());
    t.contiguous()?
        .index_select(&every2(h)?, 1)?
        .contiguous()?
        .index_select(&every2(w)?, 2)
}

/// The sum over every leading dimension of `t` `(…, C)` → `(C)`: a bias's gradient. candle's
/// reduction over leading dimensions walks the tensor with strides, and took 16 % of a
/// fine-tuned Lite0 step.
fn bias_grad(t: &Tensor) -> Result<Tensor> {
    let c = t.dims().last().copied().unwrap_or(1);
    if !seq2seq_nn::cpu::on_cpu_f32(t) {
        return t.reshape(((), c))?.sum(0);
    }
    let t = t.contiguous()?;
    let sums = with_data(&t, "grad", |d| {
        Ok(channel_sums(d, c, |row, acc| {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v)
        }))
    })?;
    Tensor::from_vec(sums, c, t.device())
}

/// `v = act(v + bias[channel])` over rows of `bias.len()` channels: the last pass of every op,
/// on a row still in cache.
#[inline(always)]
fn bias_act(rows: &mut [f32], bias: &[f32], act: Act) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = act.apply(*v + b);
        }
    }
}

mod bn_pool;
mod conv;
mod depthwise;
mod mbconv;
mod norm;
mod pointwise;
mod pool;
#[cfg(test)]
mod tests;
mod winograd;

pub use bn_pool::batch_norm_act_max_pool;
pub use conv::conv2d;
pub use depthwise::depthwise;
pub use mbconv::FrozenMbConv;
pub use norm::batch_norm_train;
pub use pointwise::pointwise;
pub use pool::max_pool2;

/// An activation op by op (the twins' form).
pub(crate) fn act_twin(x: &Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::None => Ok(x.clone()),
        Act::Relu => x.relu(),
        Act::Relu6 => x.clamp(0f32, 6f32),
    }
}
