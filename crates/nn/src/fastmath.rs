//! `tanh` and the logistic sigmoid as inline rational approximations, for the fused CPU loops.
//!
//! Why: `f32::tanh` is a libm call, so a loop over it runs one element at a time; the additive
//! attention score alone takes `B·T·S·A` of them per training step (twice: forward and backward)
//! and they were ~8 % of a training profile of the Bahdanau benchmark. These are plain arithmetic,
//! so the loops that call them vectorise. The approximation is Eigen's (and so PyTorch's CPU
//! `tanh` on vectorised paths): a degree-13/6 rational function on `[-7.99, 7.99]`, exact to
//! within a few float ulps there, and ±1 to float precision outside. NaN stays NaN.

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

/// `Σ_j v_j tanh(q_j + k_j)`, the additive attention energy of one (query, key) pair, summed in
/// eight lanes so that it vectorises.
#[inline]
pub fn dot_tanh(q: &[f32], k: &[f32], v: &[f32]) -> f32 {
    let n = q.len().min(k.len()).min(v.len());
    let (q, k, v) = (&q[..n], &k[..n], &v[..n]);
    let mut acc = [0f32; 8];
    let (qc, kc, vc) = (q.chunks_exact(8), k.chunks_exact(8), v.chunks_exact(8));
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
