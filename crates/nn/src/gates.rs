//! The gate arithmetic of one GRU or LSTM step for one batch row, forward and backward, in the
//! order of the PyTorch equations; the fused recurrence and the fused attentive decoder loop over
//! rows and time steps around these.

use crate::fastmath::{sigmoid, tanh};

/// GRU forward for one batch row: `gi`, `gh` (with `b_hh`) are its 3H gate pre-activations, `hp`
/// the previous state, `m` its mask. Writes `[h | r | z | n | W_hn h + b_hn]` into `row`.
pub(crate) fn gru_row(hs: usize, gi: &[f32], gh: &[f32], hp: &[f32], m: f32, row: &mut [f32]) {
    for j in 0..hs {
        let r = sigmoid(gi[j] + gh[j]);
        let z = sigmoid(gi[hs + j] + gh[hs + j]);
        let ghn = gh[2 * hs + j];
        let n = tanh(gi[2 * hs + j] + r * ghn);
        // h' = (1 - z) n + z h; a padded step (m = 0) carries h over.
        let hn = n + z * (hp[j] - n);
        row[j] = hp[j] + (hn - hp[j]) * m;
        row[hs + j] = r;
        row[2 * hs + j] = z;
        row[3 * hs + j] = n;
        row[4 * hs + j] = ghn;
    }
}

/// GRU backward for one row: `dh` is the whole gradient reaching the carried state. Writes the
/// gradients of the input and recurrent pre-activations and the direct part of the previous
/// state's gradient (the part through `W_hh` is added by the caller's matmul).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gru_row_bwd(
    hs: usize,
    row: &[f32],
    hp: &[f32],
    m: f32,
    dh: &[f32],
    dgi: &mut [f32],
    dgh: &mut [f32],
    dhp: &mut [f32],
) {
    for j in 0..hs {
        let (r, z, n, ghn) = (
            row[hs + j],
            row[2 * hs + j],
            row[3 * hs + j],
            row[4 * hs + j],
        );
        let dnew = dh[j] * m;
        let dan = dnew * (1.0 - z) * (1.0 - n * n);
        let dar = dan * ghn * r * (1.0 - r);
        let daz = dnew * (hp[j] - n) * z * (1.0 - z);
        dgi[j] = dar;
        dgi[hs + j] = daz;
        dgi[2 * hs + j] = dan;
        dgh[j] = dar;
        dgh[hs + j] = daz;
        dgh[2 * hs + j] = dan * r;
        dhp[j] = dh[j] * (1.0 - m) + dnew * z;
    }
}

/// LSTM forward for one row: pre-activations `gi + gh` (4H, biases included), previous `hp`,
/// `cp`, mask `m`. Writes `[h | c | i | f | g | o]` into `row`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lstm_row(
    hs: usize,
    gi: &[f32],
    gh: &[f32],
    hp: &[f32],
    cp: &[f32],
    m: f32,
    row: &mut [f32],
) {
    for j in 0..hs {
        let a = |q: usize| gi[q * hs + j] + gh[q * hs + j];
        let (i, f, g, o) = (sigmoid(a(0)), sigmoid(a(1)), tanh(a(2)), sigmoid(a(3)));
        let cn = f * cp[j] + i * g;
        let hn = o * tanh(cn);
        row[j] = hp[j] + (hn - hp[j]) * m;
        row[hs + j] = cp[j] + (cn - cp[j]) * m;
        row[2 * hs + j] = i;
        row[3 * hs + j] = f;
        row[4 * hs + j] = g;
        row[5 * hs + j] = o;
    }
}

/// LSTM backward for one row: `dh`, `dc` reach the carried state; writes the pre-activation
/// gradient `dg` (the same for the input and the recurrent product) and the direct parts of the
/// previous state's gradients.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lstm_row_bwd(
    hs: usize,
    row: &[f32],
    cp: &[f32],
    m: f32,
    dh: &[f32],
    dc: &[f32],
    dg: &mut [f32],
    dhp: &mut [f32],
    dcp: &mut [f32],
) {
    for j in 0..hs {
        let (c, i, f, g, o) = (
            row[hs + j],
            row[2 * hs + j],
            row[3 * hs + j],
            row[4 * hs + j],
            row[5 * hs + j],
        );
        let dhn = dh[j] * m;
        // Where m = 1 the carried c is the new one; where m = 0 every gate gradient is zero.
        let tc = tanh(c);
        let dcn = dc[j] * m + dhn * o * (1.0 - tc * tc);
        dg[j] = dcn * g * i * (1.0 - i);
        dg[hs + j] = dcn * cp[j] * f * (1.0 - f);
        dg[2 * hs + j] = dcn * i * (1.0 - g * g);
        dg[3 * hs + j] = dhn * tc * o * (1.0 - o);
        dhp[j] = dh[j] * (1.0 - m);
        dcp[j] = dc[j] * (1.0 - m) + dcn * f;
    }
}

/// The forward row of a decoder recurrence's cell: the input side's pre-activations are the sum
/// `gx + gy` of the embeddings' part and the step's other input's part, the recurrent side's
/// `gh + b_hh`; `prev` is `[h | c]` (the LSTM's) or starts with `h`. Writes the row `row` as
/// [`gru_row`] or [`lstm_row`] lays it out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cell_row(
    lstm: bool,
    hs: usize,
    gx: &[f32],
    gy: &[f32],
    gh: &[f32],
    bhh: &[f32],
    prev: &[f32],
    row: &mut [f32],
) {
    let gi: Vec<f32> = gx.iter().zip(gy).map(|(x, y)| x + y).collect();
    let gh: Vec<f32> = gh.iter().zip(bhh).map(|(x, y)| x + y).collect();
    if lstm {
        lstm_row(hs, &gi, &gh, &prev[..hs], &prev[hs..2 * hs], 1.0, row);
    } else {
        gru_row(hs, &gi, &gh, &prev[..hs], 1.0, row);
    }
}

/// The backward row of a decoder recurrence's cell (every step real: no mask): `dh` and `dc`
/// (LSTM) reach the new state, `hp` and `cp` (LSTM; empty for the GRU) are the state before the
/// step. Writes the input side's gate gradients `dgi`, the recurrent side's `dgh` (they differ
/// only in the GRU's n gate) and the direct parts of the previous state's gradients.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cell_row_bwd(
    lstm: bool,
    hs: usize,
    row: &[f32],
    (hp, cp): (&[f32], &[f32]),
    (dh, dc): (&[f32], &[f32]),
    dgi: &mut [f32],
    dgh: &mut [f32],
    (dhp, dcp): (&mut [f32], &mut [f32]),
) {
    if lstm {
        lstm_row_bwd(hs, row, cp, 1.0, dh, dc, dgi, dhp, dcp);
        dgh.copy_from_slice(dgi);
    } else {
        gru_row_bwd(hs, row, hp, 1.0, dh, dgi, dgh, dhp);
    }
}
