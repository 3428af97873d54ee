//! The recurrence's types: which cell ([`CellKind`]) and its state ([`CellState`]). The fused
//! kernels and the layers (`rnn`, `attentive`) depend on this module; it depends on none of them.

use candle_core::{DType, Result, Tensor};

/// Which recurrence a cell computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// Gated recurrent unit, gates (r, z, n) as in PyTorch.
    Gru,
    /// Long short-term memory, gates (i, f, g, o) as in PyTorch.
    Lstm,
    /// Elman RNN with tanh non-linearity.
    Rnn,
}

impl CellKind {
    /// Number of stacked gate blocks in `weight_ih`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
            CellKind::Rnn => 1,
        }
    }
}

/// The recurrent state of one cell: `h` is `(B, H)`; `c` is the LSTM cell state.
#[derive(Clone, Debug)]
pub struct CellState {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

impl CellState {
    pub fn zeros(
        kind: CellKind,
        batch: usize,
        hidden: usize,
        dev: &candle_core::Device,
    ) -> Result<Self> {
        let h = Tensor::zeros((batch, hidden), DType::F32, dev)?;
        let c = (kind == CellKind::Lstm).then(|| h.clone());
        Ok(Self { h, c })
    }

    /// Keep `self` where `mask` (B, 1) is 0 and take `new` where it is 1: padded time steps do
    /// not change the state, so a sequence's final state is the one at its true length.
    pub(crate) fn select(&self, new: &CellState, mask: &Tensor) -> Result<CellState> {
        let blend = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
            old + (new - old)?.broadcast_mul(mask)?
        };
        Ok(CellState {
            h: blend(&self.h, &new.h)?,
            c: match (&self.c, &new.c) {
                (Some(o), Some(n)) => Some(blend(o, n)?),
                _ => None,
            },
        })
    }
}
