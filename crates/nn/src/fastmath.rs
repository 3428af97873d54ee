//! `tanh`, the logistic sigmoid and `exp` as inline approximations, for the fused CPU loops.
//!
//! Why: `f32::tanh` is a libm call, so a loop over it runs one element at a time; the additive
//! attention score alone takes `B·T·S·A` of them per training step (twice: forward and backward)
//! and they were ~8 % of a training profile of the Bahdanau benchmark. These are plain arithmetic,
//! so the loops that call them vectorise. The approximation is Eigen's (and so PyTorch's CPU
//! `tanh` on vectorised paths): a degree-13/6 rational function on `[-7.99, 7.99]`, exact to
//! within a few float ulps there, and ±1 to float precision outside. NaN stays NaN.
//!
//! `exp` is for the softmax over the vocabulary (`N·V` of them per training step: a libm call
//! each, `__expf_fma`, was 3 % of a training profile). It is Cephes' `expf`: `2^n · e^r` with
//! `|r| ≤ ln 2 / 2` and a degree-6 polynomial, 1–2 ulps from libm; the rounding and the `2^n`
//! are done with float and integer arithmetic so that the loop vectorises on plain SSE2.

/// `tanh(x)`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // Beyond this, tanh(x) rounds to ±1 in f32.
    const CLAMP: f32 = 7.998_811_7;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = x2 * A13 + A11;
    p = x2 * p + A9;
    p = x2 * p + A7;
    p = x2 * p + A5;
    p = x2 * p + A3;
    p = x2 * p + A1;
    p *= x;
    let mut q = x2 * B6 + B4;
    q = x2 * q + B2;
    q = x2 * q + B0;
    p / q
}

/// `1 / (1 + e^-x)`, as `(1 + tanh(x / 2)) / 2`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    0.5 + 0.5 * tanh(0.5 * x)
}

/// `e^x`. Inputs below -87.3 give ~1e-38 rather than 0 or a subnormal (harmless in a sum of
/// exponentials), inputs above 88.3 saturate at e^88.3 ≈ 2e38; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that `x - n ln 2` is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from n's bits: (n + 127) << 23, with n read back out of t's mantissa.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let pow2n = f32::from_bits(((n_int + 127) as u32) << 23);
    y * pow2n
}

/// Independent partial sums in the reductions below: one AVX-512 register, two AVX2 ones, four
/// SSE2 ones. The lane count, not the CPU, fixes the order of the additions, so every vector
/// width gives the same bits ([`crate::simd`]).
pub const LANES: usize = 16;

/// `Σ f(x)`, summed in [`LANES`] lanes so that it vectorises (a plain float sum is one long
/// dependency chain: the compiler may not reorder it).
#[inline(always)]
pub fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ x`, in [`LANES`] lanes ([`sum_by`]).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    sum_by(x, |v| v)
}

/// The largest element (−∞ for an empty slice; NaNs are skipped, as by `f32::max`), in
/// [`LANES`] lanes.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// `Σ_j a_j b_j` over the shorter length, summed in [`LANES`] lanes so that it vectorises.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xs, ys) in ac.zip(bc) {
        for (s, (x, y)) in acc.iter_mut().zip(xs.iter().zip(ys)) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ_j v_j tanh(q_j + k_j)`, the additive attention energy of one (query, key) pair, summed in
/// [`LANES`] lanes so that it vectorises.
#[inline(always)]
pub fn dot_tanh(q: &[f32], k: &[f32], v: &[f32]) -> f32 {
    let n = q.len().min(k.len()).min(v.len());
    let (q, k, v) = (&q[..n], &k[..n], &v[..n]);
    let mut acc = [0f32; LANES];
    let (qc, kc, vc) = (
        q.chunks_exact(LANES),
        k.chunks_exact(LANES),
        v.chunks_exact(LANES),
    );
    let tail: f32 = qc
        .remainder()
        .iter()
        .zip(kc.remainder())
        .zip(vc.remainder())
        .map(|((&x, &y), &w)| w * tanh(x + y))
        .sum();
    for ((qs, ks), vs) in qc.zip(kc).zip(vc) {
        for (a, ((&x, &y), &w)) in acc.iter_mut().zip(qs.iter().zip(ks).zip(vs)) {
            *a += w * tanh(x + y);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_and_sigmoid_match_libm() {
        let mut worst = (0f32, 0f32);
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let e = (tanh(x) - x.tanh()).abs();
            let s = (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs();
            worst = (worst.0.max(e), worst.1.max(s));
        }
        assert!(worst.0 < 1e-6, "tanh off by {}", worst.0);
        assert!(worst.1 < 1e-6, "sigmoid off by {}", worst.1);
        for x in [
            1e-30f32,
            -1e-8,
            1e-4,
            30.0,
            -30.0,
            1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert!((tanh(x) - x.tanh()).abs() <= 1e-7 * x.abs().max(1.0), "{x}");
        }
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -873_000..=883_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "exp off by a relative {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) < 1e-37 && exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(100.0) == exp(88.3) && exp(88.3).is_finite() && exp(f32::NAN).is_nan());
    }

    #[test]
    fn lane_sum_and_max_see_every_element() {
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 33, 100] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
            assert_eq!(sum(&x), x.iter().sum::<f32>(), "n = {n}");
            let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), want, "n = {n}");
            if n > 0 {
                let mut y = x.clone();
                y[n - 1] = 99.0;
                assert_eq!(max(&y), 99.0, "n = {n}: the largest element last");
            }
        }
    }

    #[test]
    fn dot_sums_every_lane_and_the_tail() {
        for n in [0, 3, 8, 13, 256] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n + 2).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f32 = (0..n).map(|i| a[i] * b[i]).sum();
            assert!((dot(&a, &b) - want).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn dot_tanh_sums_every_lane_and_the_tail() {
        for n in [0, 3, 8, 13, 256] {
            let q: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let k: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let v: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.01).collect();
            let want: f32 = (0..n).map(|i| v[i] * (q[i] + k[i]).tanh()).sum();
            assert!((dot_tanh(&q, &k, &v) - want).abs() < 1e-4, "n = {n}");
        }
    }
}
