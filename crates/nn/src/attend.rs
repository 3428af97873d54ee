//! Attention for one batch row of a fused decoder recurrence, forward and backward: the kernels
//! of [`crate::attentive`] (Bahdanau style) and [`crate::feeding`] (Luong style with input
//! feeding) loop over steps and rows around these. Scores are additive, `vᵀ tanh(q + k_s)`, or
//! multiplicative, `q · k_s` (Luong `general` with the keys `W m` precomputed, and `dot`).
//!
//! Both ops pack a batch row's memory the same way, after a prefix of per-row state:
//! `[prefix (P) | memory (S·C) | keys (S·A) | mask bias (S)]`, the bias 0 at real source
//! positions and -1e9 at padding.

use candle_core::{Result, Tensor};

use crate::attention::AttentionKeys;
use crate::cell::{CellKind, CellState};
use crate::fastmath::{dot, dot_tanh, exp, tanh};
use crate::simd::simd_dispatch;

/// How a query is compared with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Score {
    /// `vᵀ tanh(q + k)` (Bahdanau).
    Additive,
    /// `q · k` (Luong `general` and `dot`).
    Multiplicative,
}

/// Where a packed row's parts lie.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemoryRow {
    /// Width of the prefix before the memory.
    pub m0: usize,
    /// Source positions S, memory size C, attention size A.
    pub s: usize,
    pub c: usize,
    pub a: usize,
}

impl MemoryRow {
    /// Width of a whole packed row.
    pub fn width(&self) -> usize {
        self.m0 + self.s * (self.c + self.a + 1)
    }

    /// `(memory, keys, bias)` of one packed row.
    pub fn split<'a>(&self, row: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32]) {
        let (mem, rest) = row[self.m0..].split_at(self.s * self.c);
        let (keys, bias) = rest.split_at(self.s * self.a);
        (mem, keys, &bias[..self.s])
    }
}

/// The packed rows `(B, ·)` of a decoder recurrence: the initial state (`h`, and `c` for the
/// LSTM), then `extra` (the input-feeding recurrence's ã0), then the memory, keys and mask bias.
pub(crate) fn pack_rows(
    kind: CellKind,
    init: &CellState,
    extra: Option<&Tensor>,
    keys: &AttentionKeys,
) -> Result<Tensor> {
    let memory = keys.memory();
    let (b, s, c) = memory.dims3()?;
    let a = keys.keys().dim(2)?;
    let mut parts = vec![init.h.clone()];
    if kind == CellKind::Lstm {
        parts.push(match &init.c {
            Some(c) => c.clone(),
            None => init.h.zeros_like()?,
        });
    }
    parts.extend(extra.cloned());
    parts.push(memory.reshape((b, s * c))?);
    parts.push(keys.keys().reshape((b, s * a))?);
    parts.push(keys.mask_bias().reshape((b, s))?);
    Tensor::cat(&parts, 1)
}

simd_dispatch!(
    /// Attention for one batch row: writes the weights `al` (S) and the context `ctx` (C) for
    /// the (projected) query `q` (A) against the packed row `mk`; `v` is the additive score's
    /// energy weight (unused by the multiplicative one).
    pub(crate) fn attend_row => attend_row_body(
        d: &MemoryRow,
        score: Score,
        q: &[f32],
        v: &[f32],
        mk: &[f32],
        ctx: &mut [f32],
        al: &mut [f32],
    )
);

#[inline(always)]
fn attend_row_body(
    d: &MemoryRow,
    score: Score,
    q: &[f32],
    v: &[f32],
    mk: &[f32],
    ctx: &mut [f32],
    al: &mut [f32],
) {
    let (mem, keys, bias) = d.split(mk);
    let mut mx = f32::NEG_INFINITY;
    for si in 0..d.s {
        let kr = &keys[si * d.a..(si + 1) * d.a];
        al[si] = bias[si]
            + match score {
                Score::Additive => dot_tanh(q, kr, v),
                Score::Multiplicative => dot(q, kr),
            };
        mx = mx.max(al[si]);
    }
    let mut z = 0.0;
    for x in al.iter_mut() {
        *x = exp(*x - mx);
        z += *x;
    }
    ctx.fill(0.0);
    for (si, x) in al.iter_mut().enumerate() {
        *x /= z;
        if *x != 0.0 {
            for (o, m) in ctx.iter_mut().zip(&mem[si * d.c..(si + 1) * d.c]) {
                *o += *x * m;
            }
        }
    }
}

simd_dispatch!(
    /// Backward of [`attend_row`]: from the context's gradient `dctx`, accumulates the memory's
    /// and keys' gradients into the packed gradient row `dmk` and (additive) into `dv`, and
    /// writes the query's gradient `dq`.
    pub(crate) fn attend_row_bwd => attend_row_bwd_body(
        d: &MemoryRow,
        score: Score,
        q: &[f32],
        al: &[f32],
        v: &[f32],
        mk: &[f32],
        dctx: &[f32],
        dmk: &mut [f32],
        dq: &mut [f32],
        dv: &mut [f32],
    )
);

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_row_bwd_body(
    d: &MemoryRow,
    score: Score,
    q: &[f32],
    al: &[f32],
    v: &[f32],
    mk: &[f32],
    dctx: &[f32],
    dmk: &mut [f32],
    dq: &mut [f32],
    dv: &mut [f32],
) {
    let (mem, keys, _) = d.split(mk);
    let (dmem, dkeys) = dmk[d.m0..].split_at_mut(d.s * d.c);
    let mut da = vec![0f32; d.s];
    for si in 0..d.s {
        let mr = &mem[si * d.c..(si + 1) * d.c];
        da[si] = dot(mr, dctx);
        if al[si] != 0.0 {
            for (o, g) in dmem[si * d.c..(si + 1) * d.c].iter_mut().zip(dctx) {
                *o += al[si] * g;
            }
        }
    }
    // Softmax backward: dscore = α (da - Σ α da).
    let mean: f32 = al.iter().zip(&da).map(|(a, g)| a * g).sum();
    dq.fill(0.0);
    for si in 0..d.s {
        let ds = al[si] * (da[si] - mean);
        if ds == 0.0 {
            continue;
        }
        let kr = &keys[si * d.a..(si + 1) * d.a];
        let dk = &mut dkeys[si * d.a..(si + 1) * d.a];
        if score == Score::Multiplicative {
            for ((dqj, dkj), (&qj, &kj)) in dq.iter_mut().zip(dk.iter_mut()).zip(q.iter().zip(kr)) {
                *dqj += ds * kj;
                *dkj += ds * qj;
            }
            continue;
        }
        let lanes = dq.iter_mut().zip(dk.iter_mut()).zip(dv.iter_mut());
        for (((dqj, dkj), dvj), ((&qj, &kj), &vj)) in lanes.zip(q.iter().zip(kr).zip(v)) {
            let u = tanh(qj + kj);
            let du = ds * vj * (1.0 - u * u);
            *dqj += du;
            *dkj += du;
            *dvj += ds * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type BackwardRow = fn(
        &MemoryRow,
        Score,
        &[f32],
        &[f32],
        &[f32],
        &[f32],
        &[f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
    );

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The dispatched kernels (AVX-512 or AVX2 where the CPU has them) and the baseline build of
    /// the same source give the same bits, forward and backward, for both scores.
    #[test]
    fn every_vector_width_computes_the_same_bits() {
        let d = MemoryRow {
            m0: 3,
            s: 7,
            c: 37,
            a: 21,
        };
        let mut mk = data(d.width(), 1);
        // One padded source position.
        mk[d.width() - 1] = -1e9;
        let (q, v, dctx) = (data(d.a, 2), data(d.a, 3), data(d.c, 4));
        for score in [Score::Additive, Score::Multiplicative] {
            let q = if score == Score::Additive {
                &q[..]
            } else {
                &data(d.a, 5)[..]
            };
            let (mut c1, mut a1, mut c2, mut a2) = (
                vec![0f32; d.c],
                vec![0f32; d.s],
                vec![0f32; d.c],
                vec![0f32; d.s],
            );
            attend_row(&d, score, q, &v, &mk, &mut c1, &mut a1);
            attend_row_body(&d, score, q, &v, &mk, &mut c2, &mut a2);
            assert_eq!((&c1, &a1), (&c2, &a2), "{score:?} forward");
            let run = |f: BackwardRow| {
                let (mut dmk, mut dq, mut dv) = (data(d.width(), 6), vec![0f32; d.a], data(d.a, 7));
                f(
                    &d, score, q, &a1, &v, &mk, &dctx, &mut dmk, &mut dq, &mut dv,
                );
                (dmk, dq, dv)
            };
            assert_eq!(
                run(attend_row_bwd),
                run(attend_row_bwd_body),
                "{score:?} backward"
            );
        }
    }
}
