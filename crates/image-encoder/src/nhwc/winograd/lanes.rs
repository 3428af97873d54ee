//! The values the Winograd transforms compute on: one channel (`f32`) or eight adjacent channels
//! ([`L8`]). The transforms are written once over [`Lane`], and the channel loops run eight
//! channels at a time ([`by_lanes!`]), then one at a time for the rest. Left to itself, the
//! compiler kept the per-channel loops scalar (a 16-element array gathered per channel, one
//! channel per iteration).

use std::ops::{Add, Neg, Sub};

/// A value of one or more adjacent channels, loaded from and stored to a channel row at `k`.
pub(super) trait Lane:
    Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self>
{
    fn zero() -> Self;
    /// Channels `k..k + width` of `row`.
    fn load(row: &[f32], k: usize) -> Self;
    /// Writes channels `k..k + width` of `row`.
    fn store(self, row: &mut [f32], k: usize);

    /// Adds onto channels `k..k + width` of `row`.
    #[inline(always)]
    fn add_to(self, row: &mut [f32], k: usize) {
        (Self::load(row, k) + self).store(row, k);
    }
}

impl Lane for f32 {
    #[inline(always)]
    fn zero() -> Self {
        0.0
    }

    #[inline(always)]
    fn load(row: &[f32], k: usize) -> Self {
        row[k]
    }

    #[inline(always)]
    fn store(self, row: &mut [f32], k: usize) {
        row[k] = self;
    }
}

/// Lanes per [`L8`]: one AVX2 register of `f32`.
pub(super) const WIDTH: usize = 8;

/// Eight adjacent channels; the element-wise loops compile to single vector instructions.
#[derive(Clone, Copy)]
pub(super) struct L8([f32; WIDTH]);

impl Lane for L8 {
    #[inline(always)]
    fn zero() -> Self {
        L8([0.0; WIDTH])
    }

    #[inline(always)]
    fn load(row: &[f32], k: usize) -> Self {
        let mut v = [0.0; WIDTH];
        v.copy_from_slice(&row[k..k + WIDTH]);
        L8(v)
    }

    #[inline(always)]
    fn store(self, row: &mut [f32], k: usize) {
        row[k..k + WIDTH].copy_from_slice(&self.0);
    }
}

macro_rules! lanewise {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for L8 {
            type Output = Self;
            #[inline(always)]
            fn $method(mut self, rhs: Self) -> Self {
                for (a, b) in self.0.iter_mut().zip(rhs.0) {
                    *a $op b;
                }
                self
            }
        }
    };
}
lanewise!(Add, add, +=);
lanewise!(Sub, sub, -=);

impl Neg for L8 {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        for a in self.0.iter_mut() {
            *a = -*a;
        }
        self
    }
}

/// `N` rows' channels `k..` as lanes: `[T::load(rows[0], k), …]`.
#[inline(always)]
pub(super) fn gather<T: Lane, const N: usize>(rows: &[&[f32]; N], k: usize) -> [T; N] {
    let mut out = [T::zero(); N];
    for (o, row) in out.iter_mut().zip(rows) {
        *o = T::load(row, k);
    }
    out
}

/// Runs `$body` for the channels `0..$c`: with `$k` stepping by [`WIDTH`] and `$t` = [`L8`]
/// while a whole lane fits, then one channel at a time with `$t` = `f32`.
macro_rules! by_lanes {
    ($c:expr, |$k:ident, $t:ident| $body:block) => {{
        let c: usize = $c;
        let split = c - c % $crate::nhwc::winograd::lanes::WIDTH;
        {
            type $t = $crate::nhwc::winograd::lanes::L8;
            for $k in (0..split).step_by($crate::nhwc::winograd::lanes::WIDTH) $body
        }
        {
            type $t = f32;
            for $k in split..c $body
        }
    }};
}
pub(super) use by_lanes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_compute_what_single_channels_do() {
        let row: Vec<f32> = (0..20).map(|i| i as f32 * 0.5 - 3.0).collect();
        let other: Vec<f32> = (0..20).map(|i| (i * i) as f32 * 0.25).collect();
        let (x, y) = (L8::load(&row, 3), L8::load(&other, 3));
        let mut out = vec![0f32; 20];
        (x + y - (-x)).store(&mut out, 5);
        x.add_to(&mut out, 5);
        for i in 0..WIDTH {
            let (a, b) = (row[3 + i], other[3 + i]);
            assert_eq!(out[5 + i], (a + b - (-a)) + a);
        }
        assert!(out[..5].iter().chain(&out[13..]).all(|&v| v == 0.0));
        let mut seen = Vec::new();
        by_lanes!(19, |k, T| {
            seen.push((k, std::mem::size_of::<T>() / 4));
        });
        assert_eq!(seen[..2], [(0, 8), (8, 8)]);
        assert_eq!(seen[2..], [(16, 1), (17, 1), (18, 1)]);
    }
}
