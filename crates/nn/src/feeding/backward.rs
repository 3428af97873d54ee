//! The input-feeding recurrence's backward pass: back-propagation through time from the last
//! step to the first, then the weight gradients over all steps at once.

use rayon::prelude::*;

use super::{Dims, Weights};
use crate::attend::{attend_row_bwd, Score};
use crate::cpu::{matmul, View};
use crate::gates::cell_row_bwd;

/// The state before each step, `(T, B, H)` each: h, c (LSTM only) and ã.
pub(super) struct Previous {
    h: Vec<f32>,
    c: Vec<f32>,
    a: Vec<f32>,
}

pub(super) fn previous_states(d: &Dims, t: usize, b: usize, mk: &[f32], res: &[f32]) -> Previous {
    let (hs, sw, wd) = (d.hs, d.mem.width(), d.wd);
    let mut p = Previous {
        h: vec![0f32; t * b * hs],
        c: vec![0f32; if d.lstm { t * b * hs } else { 0 }],
        a: vec![0f32; t * b * hs],
    };
    for ti in 0..t {
        for bi in 0..b {
            let (buf, o, oa) = if ti == 0 {
                (mk, bi * sw, bi * sw + d.a0())
            } else {
                let o = ((ti - 1) * b + bi) * wd;
                (res, o, o + d.o_att)
            };
            let dst = (ti * b + bi) * hs;
            p.h[dst..dst + hs].copy_from_slice(&buf[o..o + hs]);
            if d.lstm {
                p.c[dst..dst + hs].copy_from_slice(&buf[o + hs..o + 2 * hs]);
            }
            p.a[dst..dst + hs].copy_from_slice(&buf[oa..oa + hs]);
        }
    }
    p
}

/// What the backward pass accumulates: per step the gradients of the gate pre-activations on
/// the input side (`dgi`, that of `gx`) and the recurrent side (`dgh`; they differ in the GRU's n
/// gate) and of `[q | W_ch h + W_cc c + b_c]` (`dqc`, the second part before the tanh); the
/// gradients carried into the step before (h, c, ã); those of the packed memory and of `v`.
pub(super) struct Grads {
    pub dgi: Vec<f32>,
    dgh: Vec<f32>,
    dqc: Vec<f32>,
    pub dmk: Vec<f32>,
    dv_rows: Vec<f32>,
    pub dh: Vec<f32>,
    pub dc: Vec<f32>,
    pub da: Vec<f32>,
}

impl Grads {
    pub fn new(d: &Dims, t: usize, b: usize) -> Self {
        let bh = vec![0f32; b * d.hs];
        Self {
            dgi: vec![0f32; t * b * d.g],
            dgh: vec![0f32; t * b * d.g],
            dqc: vec![0f32; t * b * d.aq],
            dmk: vec![0f32; b * d.mem.width()],
            dv_rows: vec![0f32; b * d.mem.a],
            dh: bh.clone(),
            dc: bh.clone(),
            da: bh,
        }
    }
}

/// One step of back-propagation through time, from ã_t back to the state before the step.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_bwd(
    d: &Dims,
    ti: usize,
    b: usize,
    w: &Weights,
    mk: &[f32],
    res: &[f32],
    gres: &[f32],
    prev: &Previous,
    gr: &mut Grads,
) {
    let (hs, g, aq, wd, sw) = (d.hs, d.g, d.aq, d.wd, d.mem.width());
    let (a, c, och) = (d.mem.a, d.mem.c, d.o_ch);
    let base = ti * b * wd;
    let dqc = &mut gr.dqc[ti * b * aq..(ti + 1) * b * aq];
    // dpre = (dã from downstream + from the next step's input) · (1 - ã²)
    for bi in 0..b {
        let o = base + bi * wd + d.o_att;
        let dpre = &mut dqc[bi * aq + och..(bi + 1) * aq];
        for j in 0..hs {
            let at = res[o + j];
            dpre[j] = (gres[o + j] + gr.da[bi * hs + j]) * (1.0 - at * at);
        }
    }
    // dctx = (its gradient from downstream) + dpre W_cc, then attention backward into dq.
    let mut dctx = vec![0f32; b * c];
    for bi in 0..b {
        let o = base + bi * wd + d.kh;
        dctx[bi * c..(bi + 1) * c].copy_from_slice(&gres[o..o + c]);
    }
    let dpre = View {
        data: &dqc[och..],
        rs: aq,
        cs: 1,
    };
    matmul((b, c, hs), &mut dctx, c, true, dpre, View::rows(w.wcc, c));
    let mut dq = vec![0f32; b * a];
    dq.par_chunks_mut(a)
        .zip(gr.dmk.par_chunks_mut(sw))
        .zip(gr.dv_rows.par_chunks_mut(a))
        .enumerate()
        .for_each(|(bi, ((dq_row, dmk_row), dv))| {
            let o = base + bi * wd;
            attend_row_bwd(
                &d.mem,
                d.score,
                &res[o + d.o_q..o + d.o_q + a],
                &res[o + d.o_al..o + d.o_al + d.mem.s],
                w.v,
                &mk[bi * sw..(bi + 1) * sw],
                &dctx[bi * c..(bi + 1) * c],
                dmk_row,
                dq_row,
                dv,
            );
        });
    // The query's gradient: through W_q (additive, as part of dqc), or h's own (multiplicative).
    if d.score == Score::Additive {
        for (row, x) in dqc.chunks_mut(aq).zip(dq.chunks(a)) {
            row[..a].copy_from_slice(x);
        }
    }
    // dh_t = (from downstream) + (carried from step t+1) + [dq | dpre] [W_q; W_ch]
    let mut dht = vec![0f32; b * hs];
    for bi in 0..b {
        let o = base + bi * wd;
        for j in 0..hs {
            dht[bi * hs + j] = gres[o + j] + gr.dh[bi * hs + j];
        }
    }
    if d.score == Score::Multiplicative {
        for (x, y) in dht.iter_mut().zip(&dq) {
            *x += y;
        }
    }
    matmul(
        (b, hs, aq),
        &mut dht,
        hs,
        true,
        View::rows(dqc, aq),
        View::rows(w.wqc, hs),
    );
    // The cell, row by row; then the recurrent and fed inputs' parts of the carried gradients.
    let gsl = ti * b * g..(ti + 1) * b * g;
    let (dgi, dgh) = (&mut gr.dgi[gsl.clone()], &mut gr.dgh[gsl]);
    let (mut dh_prev, mut dc_prev) = (vec![0f32; b * hs], vec![0f32; b * hs]);
    // The rows are independent: in parallel, each with its own scratch for dc.
    let dc_next = &gr.dc;
    dgi.par_chunks_mut(g)
        .zip(dgh.par_chunks_mut(g))
        .zip(dh_prev.par_chunks_mut(hs).zip(dc_prev.par_chunks_mut(hs)))
        .enumerate()
        .for_each_init(
            || vec![0f32; hs],
            |dct, (bi, ((dgi_r, dgh_r), dprev))| {
                let o = base + bi * wd;
                let pr = (ti * b + bi) * hs..(ti * b + bi + 1) * hs;
                let cp: &[f32] = if d.lstm {
                    for j in 0..hs {
                        dct[j] = gres[o + hs + j] + dc_next[bi * hs + j];
                    }
                    &prev.c[pr.clone()]
                } else {
                    &[]
                };
                let dh_in = &dht[bi * hs..(bi + 1) * hs];
                let row = &res[o..o + d.kh];
                let (prev_hc, din) = ((&prev.h[pr], cp), (dh_in, &dct[..]));
                cell_row_bwd(d.lstm, hs, row, prev_hc, din, dgi_r, dgh_r, dprev);
            },
        );
    matmul(
        (b, hs, g),
        &mut dh_prev,
        hs,
        true,
        View::rows(dgh, g),
        View::rows(w.whh, hs),
    );
    matmul(
        (b, hs, g),
        &mut gr.da,
        hs,
        false,
        View::rows(dgi, g),
        View::rows(w.wia, hs),
    );
    gr.dh = dh_prev;
    gr.dc = dc_prev;
}

/// The weight gradients over all steps at once, in the flat layout of `w`:
/// `dW_hh = Σ dghᵀ h_prev`, `dW_ia = Σ dgiᵀ ã_prev`, `db_hh = Σ dgh`,
/// `d[W_q; W_ch] = Σ dqcᵀ h_t` (`dW_ch` alone for the multiplicative score), `dW_cc = Σ dpreᵀ c_t`,
/// `db_c = Σ dpre`, `dv` from the rows (additive only).
pub(super) fn weight_grads(
    d: &Dims,
    rows: usize,
    prev: &Previous,
    res: &[f32],
    gr: &Grads,
) -> Vec<f32> {
    let (hs, g, aq, a, c, och) = (d.hs, d.g, d.aq, d.mem.a, d.mem.c, d.o_ch);
    let mut dw = vec![0f32; d.w_len()];
    let (dwhh, rest) = dw.split_at_mut(g * hs);
    let (dwia, rest) = rest.split_at_mut(g * hs);
    let (dbhh, rest) = rest.split_at_mut(g);
    let (dwqc, rest) = rest.split_at_mut(aq * hs);
    let (dwcc, rest) = rest.split_at_mut(hs * c);
    let (dbc, dv) = rest.split_at_mut(hs);
    matmul(
        (g, hs, rows),
        dwhh,
        hs,
        false,
        View::transposed(&gr.dgh, g),
        View::rows(&prev.h, hs),
    );
    matmul(
        (g, hs, rows),
        dwia,
        hs,
        false,
        View::transposed(&gr.dgi, g),
        View::rows(&prev.a, hs),
    );
    let ht = View::rows(res, d.wd);
    matmul(
        (aq, hs, rows),
        dwqc,
        hs,
        false,
        View::transposed(&gr.dqc, aq),
        ht,
    );
    let ctx = View::rows(&res[d.kh..], d.wd);
    matmul(
        (hs, c, rows),
        dwcc,
        c,
        false,
        View::transposed(&gr.dqc[och..], aq),
        ctx,
    );
    for r in 0..rows {
        for (o, x) in dbhh.iter_mut().zip(&gr.dgh[r * g..(r + 1) * g]) {
            *o += x;
        }
        for (o, x) in dbc.iter_mut().zip(&gr.dqc[r * aq + och..(r + 1) * aq]) {
            *o += x;
        }
    }
    for row in gr.dv_rows.chunks(a) {
        for (o, x) in dv.iter_mut().zip(row) {
            *o += x;
        }
    }
    dw
}
