//! The fused kernels' inner loops compiled for the widest vectors the CPU has.
//!
//! Why: the binary is built for baseline x86-64, whose SSE2 runs four `f32` lanes, so loops such
//! as the attention rows' `tanh` ran at a quarter of what an AVX-512 CPU does (a division per
//! element on four lanes). The same source compiled with `#[target_feature]` runs eight or
//! sixteen lanes. Rust never fuses a multiply and an add on its own, and these loops spell out
//! any reordered sums ([`crate::fastmath::LANES`] lanes), so every tier computes the same
//! bits: results do not depend on the CPU.

/// Which vector extension the CPU runs, checked once (the image encoder's kernels read it too).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Avx512,
    Avx2,
    Baseline,
}

/// The widest tier the CPU runs; `SEQ2SEQ_SIMD=baseline` forces [`Tier::Baseline`].
#[cfg(target_arch = "x86_64")]
pub fn tier() -> Tier {
    static TIER: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();
    *TIER.get_or_init(|| {
        if std::env::var("SEQ2SEQ_SIMD").is_ok_and(|v| v == "baseline") {
            Tier::Baseline
        } else if is_x86_feature_detected!("avx512f") {
            Tier::Avx512
        } else if is_x86_feature_detected!("avx2") {
            Tier::Avx2
        } else {
            Tier::Baseline
        }
    })
}

/// `$vis fn $name(args)` calling the `#[inline(always)]` function `$body(args)`, compiled for
/// AVX-512, for AVX2 and for baseline x86-64, and picked at run time.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $body:ident($($a:ident: $t:ty),* $(,)?)) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($a: $t),*) {
                    $body($($a),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) {
                    $body($($a),*)
                }
                match $crate::simd::tier() {
                    // SAFETY: the CPU has AVX-512F (checked at run time).
                    $crate::simd::Tier::Avx512 => return unsafe { avx512($($a),*) },
                    // SAFETY: the CPU has AVX2 (checked at run time).
                    $crate::simd::Tier::Avx2 => return unsafe { avx2($($a),*) },
                    $crate::simd::Tier::Baseline => {}
                }
            }
            $body($($a),*)
        }
    };
}

pub(crate) use simd_dispatch;
