//! The encoder → decoder contract.

use candle_core::{Result, Tensor};

/// What any encoder hands to the decoder.
///
/// * `memory` (B, S, C): the sequence the decoder attends over (source tokens, image regions);
///   `None` for a pipeline without an encoder (a language model).
/// * `mask` (B, S): 1 for real positions, 0 for padding.
/// * `final_states`: one summary vector (B, F) per encoder layer, bottom to top (the last token's
///   state of a text encoder with both directions concatenated, the pooled features of an image
///   encoder); the decoder's bridge turns them into its initial state.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    pub memory: Option<Tensor>,
    pub mask: Option<Tensor>,
    pub final_states: Vec<Tensor>,
}

impl EncoderOutput {
    /// No encoder: the decoder starts from its zero (or learned) state and attends to nothing.
    pub fn empty() -> Self {
        Self {
            memory: None,
            mask: None,
            final_states: Vec::new(),
        }
    }

    /// Keeps only the given batch rows.
    pub fn index_select(&self, rows: &Tensor) -> Result<Self> {
        Ok(Self {
            memory: self
                .memory
                .as_ref()
                .map(|m| m.index_select(rows, 0))
                .transpose()?,
            mask: self
                .mask
                .as_ref()
                .map(|m| m.index_select(rows, 0))
                .transpose()?,
            final_states: self
                .final_states
                .iter()
                .map(|f| f.index_select(rows, 0))
                .collect::<Result<_>>()?,
        })
    }
}
