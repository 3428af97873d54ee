//! GRU, LSTM and tanh-RNN: single cells with a step function, and a stacked, bidirectional,
//! padding-aware sequence layer with PyTorch's parameter names and gate order.
//!
//! candle-nn's own `GRU`/`LSTM` are one layer, one direction, with no sequence lengths; this module
//! adds what they lack while keeping their checkpoint layout (`weight_ih_l0` `[G·H, in]`,
//! `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `…_reverse`), so weights round-trip with
//! `torch.nn.GRU/LSTM/RNN(batch_first=True)`.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::ops::sigmoid;
use candle_nn::{Init, VarBuilder};

use crate::cell::{CellKind, CellState};
use crate::project::project_transposed;
use crate::{fused, Ctx};

/// One recurrent cell (one layer, one direction).
#[derive(Clone, Debug)]
pub struct Cell {
    kind: CellKind,
    hidden: usize,
    w_ih: Tensor,
    pub(crate) w_hh: Tensor,
    b_ih: Tensor,
    pub(crate) b_hh: Tensor,
}

/// Builds a cell whose parameters are named `weight_ih_{suffix}` etc. (suffix `l0`, `l1_reverse`).
/// Initialised like PyTorch: uniform in ±1/√H.
pub fn cell(
    kind: CellKind,
    input: usize,
    hidden: usize,
    suffix: &str,
    vb: VarBuilder,
) -> Result<Cell> {
    let k = 1.0 / (hidden as f64).sqrt();
    let init = Init::Uniform { lo: -k, up: k };
    let g = kind.gates() * hidden;
    Ok(Cell {
        kind,
        hidden,
        w_ih: vb.get_with_hints((g, input), &format!("weight_ih_{suffix}"), init)?,
        w_hh: vb.get_with_hints((g, hidden), &format!("weight_hh_{suffix}"), init)?,
        b_ih: vb.get_with_hints(g, &format!("bias_ih_{suffix}"), init)?,
        b_hh: vb.get_with_hints(g, &format!("bias_hh_{suffix}"), init)?,
    })
}

impl Cell {
    pub fn kind(&self) -> CellKind {
        self.kind
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub(crate) fn w_ih(&self) -> &Tensor {
        &self.w_ih
    }

    /// Input projection `x W_ihᵀ + b_ih` for any leading shape: computed for all time steps of a
    /// sequence in one matmul so that only the recurrent product remains per step.
    pub fn input_proj(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let last = *dims.last().unwrap();
        let rows = x.elem_count() / last;
        let y = x
            .reshape((rows, last))?
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(&self.b_ih)?;
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        y.reshape(out)
    }

    /// The input projection's part from the first `emb` input features, `e W_ih[:, :emb]ᵀ + b_ih`,
    /// for embeddings `e` `(B, T, emb)`, time-major `(T, B, G·H)`: the decoder recurrences' cells
    /// read `[e_t; y_t]` where only `y_t` depends on the step before.
    pub(crate) fn embedding_gates(&self, e: &Tensor) -> Result<Tensor> {
        let (b, t, emb) = e.dims3()?;
        e.transpose(0, 1)?
            .contiguous()?
            .reshape((t * b, emb))?
            .matmul(&self.w_ih.narrow(1, 0, emb)?.t()?)?
            .broadcast_add(&self.b_ih)?
            .reshape((t, b, ()))
    }

    /// `(W_ihᵀ, W_hhᵀ)` contiguous, for [`Cell::input_proj_transposed`] and
    /// [`Cell::step_transposed`]: a search transposes them once and steps with them.
    pub fn transposed_weights(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.w_ih.t()?.contiguous()?, self.w_hh.t()?.contiguous()?))
    }

    /// [`Cell::input_proj`] of one step's rows `(B, I)` from `W_ihᵀ`, through
    /// [`crate::project::project_transposed`]: for decoding only (it has no backward pass).
    pub fn input_proj_transposed(&self, x: &Tensor, w_ih_t: &Tensor) -> Result<Tensor> {
        project_transposed(x, w_ih_t, Some(&self.b_ih))
    }

    /// [`Cell::step`] with the recurrent product from `W_hhᵀ`: for decoding only.
    pub fn step_transposed(
        &self,
        gi: &Tensor,
        state: &CellState,
        w_hh_t: &Tensor,
    ) -> Result<CellState> {
        if fused::supported(self.kind, gi) {
            let gh = project_transposed(&state.h, w_hh_t, Some(&self.b_hh))?;
            return fused::step(self.kind, gi, &gh, state);
        }
        self.step(gi, state)
    }

    /// One step from a precomputed input projection `gi` (B, G·H).
    pub fn step(&self, gi: &Tensor, state: &CellState) -> Result<CellState> {
        if fused::supported(self.kind, gi) {
            let gh = state.h.matmul(&self.w_hh.t()?)?.broadcast_add(&self.b_hh)?;
            return fused::step(self.kind, gi, &gh, state);
        }
        self.step_ops(gi, state)
    }

    /// [`Cell::step`] op by op: the path for devices and cells the fused op does not cover, and
    /// the reference the fused op is tested against.
    pub(crate) fn step_ops(&self, gi: &Tensor, state: &CellState) -> Result<CellState> {
        let h = &state.h;
        let gh = h.matmul(&self.w_hh.t()?)?.broadcast_add(&self.b_hh)?;
        let n = self.hidden;
        match self.kind {
            CellKind::Gru => {
                let r = sigmoid(&(gi.narrow(1, 0, n)? + gh.narrow(1, 0, n)?)?)?;
                let z = sigmoid(&(gi.narrow(1, n, n)? + gh.narrow(1, n, n)?)?)?;
                let c = (gi.narrow(1, 2 * n, n)? + (r * gh.narrow(1, 2 * n, n)?)?)?.tanh()?;
                // h' = (1 - z) * n + z * h  =  n + z * (h - n)
                let h = (&c + (z * (h - &c)?)?)?;
                Ok(CellState { h, c: None })
            }
            CellKind::Lstm => {
                let g = (gi + gh)?;
                let i = sigmoid(&g.narrow(1, 0, n)?)?;
                let f = sigmoid(&g.narrow(1, n, n)?)?;
                let cand = g.narrow(1, 2 * n, n)?.tanh()?;
                let o = sigmoid(&g.narrow(1, 3 * n, n)?)?;
                let c_prev = match &state.c {
                    Some(c) => c.clone(),
                    None => h.zeros_like()?,
                };
                let c = ((f * c_prev)? + (i * cand)?)?;
                let h = (o * c.tanh()?)?;
                Ok(CellState { h, c: Some(c) })
            }
            CellKind::Rnn => Ok(CellState {
                h: (gi + gh)?.tanh()?,
                c: None,
            }),
        }
    }
}

/// Shape of a stacked recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnConfig {
    pub kind: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last (as PyTorch's `dropout`).
    pub dropout: f32,
}

impl RnnConfig {
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    pub fn output_size(&self) -> usize {
        self.hidden_size * self.directions()
    }
}

/// A stacked, optionally bidirectional recurrent layer over batch-first sequences.
#[derive(Clone, Debug)]
pub struct Rnn {
    cfg: RnnConfig,
    /// `cells[layer * directions + direction]`, PyTorch's order.
    cells: Vec<Cell>,
}

pub fn rnn(cfg: RnnConfig, vb: VarBuilder) -> Result<Rnn> {
    let mut cells = Vec::new();
    for l in 0..cfg.num_layers {
        let input = if l == 0 {
            cfg.input_size
        } else {
            cfg.output_size()
        };
        for d in 0..cfg.directions() {
            let suffix = if d == 0 {
                format!("l{l}")
            } else {
                format!("l{l}_reverse")
            };
            cells.push(cell(cfg.kind, input, cfg.hidden_size, &suffix, vb.clone())?);
        }
    }
    Ok(Rnn { cfg, cells })
}

impl Rnn {
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Runs the stack over `x` (B, T, I).
    ///
    /// `mask` (B, T) holds 1 for real tokens and 0 for right padding; with it the layer behaves
    /// like PyTorch on a packed sequence: padded steps leave the state unchanged and output zeros,
    /// the backward direction starts at each sequence's own last token, and the final states are
    /// those at each sequence's true length. `init` gives one state per layer and direction
    /// (zeros when absent).
    ///
    /// Returns the top layer's outputs (B, T, D·H) and the final state of every layer and
    /// direction, in PyTorch's order (layer-major).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        init: Option<&[CellState]>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Vec<CellState>)> {
        let (b, t, _) = x.dims3()?;
        let dev = x.device();
        // Time-major so that each step's slice of the input projection is contiguous.
        let mut layer_in = x.transpose(0, 1)?.contiguous()?;
        let mask_tb = match mask {
            Some(m) => Some(m.to_dtype(DType::F32)?.t()?.contiguous()?), // (T, B)
            None => None,
        };
        let masks: Option<Vec<Tensor>> = match &mask_tb {
            Some(m) => Some(
                (0..t)
                    .map(|i| m.get(i)?.unsqueeze(1))
                    .collect::<Result<_>>()?,
            ),
            None => None,
        };
        let dirs = self.cfg.directions();
        let mut finals = Vec::with_capacity(self.cells.len());
        for l in 0..self.cfg.num_layers {
            let mut dir_outputs = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let cell = &self.cells[l * dirs + d];
                let gi = cell.input_proj(&layer_in)?; // (T, B, G·H)
                let mut state = match init {
                    Some(s) => s[l * dirs + d].clone(),
                    None => CellState::zeros(cell.kind, b, cell.hidden, dev)?,
                };
                if fused::supported(cell.kind, &gi) {
                    let (out, fin) = fused::sequence(
                        cell.kind,
                        &cell.w_hh,
                        &cell.b_hh,
                        &gi,
                        &state,
                        mask_tb.as_ref(),
                        d == 1,
                    )?;
                    dir_outputs.push(out);
                    finals.push(fin);
                    continue;
                }
                let mut outs: Vec<Option<Tensor>> = vec![None; t];
                let order: Box<dyn Iterator<Item = usize>> = if d == 0 {
                    Box::new(0..t)
                } else {
                    Box::new((0..t).rev())
                };
                for step in order {
                    let new = cell.step(&gi.get(step)?, &state)?;
                    match &masks {
                        Some(m) => {
                            outs[step] = Some(new.h.broadcast_mul(&m[step])?);
                            state = state.select(&new, &m[step])?;
                        }
                        None => {
                            outs[step] = Some(new.h.clone());
                            state = new;
                        }
                    }
                }
                let outs: Vec<Tensor> = outs.into_iter().map(|o| o.unwrap()).collect();
                dir_outputs.push(Tensor::stack(&outs, 0)?);
                finals.push(state);
            }
            let out = if dirs == 1 {
                dir_outputs.pop().unwrap()
            } else {
                Tensor::cat(&dir_outputs, D::Minus1)?
            };
            layer_in = if l + 1 < self.cfg.num_layers {
                ctx.dropout(&out, self.cfg.dropout)?
            } else {
                out
            };
        }
        Ok((layer_in.transpose(0, 1)?.contiguous()?, finals))
    }
}
