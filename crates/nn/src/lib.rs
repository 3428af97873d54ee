//! Neural-network building blocks for recurrent sequence models on candle.
//!
//! Every layer follows candle-nn's conventions: a struct holding private tensors, a lowercase
//! constructor taking its weights from a [`candle_nn::VarBuilder`], PyTorch parameter names so that
//! checkpoints round-trip with PyTorch. Layers do no I/O and know nothing about configs or files.
//!
//! Randomness (initialisation, dropout) is seeded and owned by the caller: candle's CPU backend
//! cannot be seeded, so [`init::SeededVarMap`] and [`Ctx`] provide reproducible replacements.

pub mod adam;
pub mod additive;
mod attend;
pub mod attention;
pub mod attention_reg;
pub mod attentive;
pub mod cell;
pub mod cpu;
pub mod ctx;
mod dropout;
pub mod fastmath;
pub mod feeding;
pub mod fused;
mod gates;
pub mod init;
pub mod loss;
pub mod project;
pub mod projection_loss;
pub mod rnn;
pub mod simd;
pub mod siphash;
#[cfg(test)]
mod twin;
pub mod unpack;

pub use attention::{attention, Attention, AttentionKeys, AttentionKind};
pub use attention_reg::doubly_stochastic_penalty;
pub use cell::{CellKind, CellState};
pub use ctx::Ctx;
pub use init::SeededVarMap;
pub use loss::masked_cross_entropy;
pub use projection_loss::projection_cross_entropy;
pub use rnn::{cell, rnn, Cell, Rnn, RnnConfig};
