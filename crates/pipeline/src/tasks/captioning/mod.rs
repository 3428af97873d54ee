//! Captioning: images through a CNN encoder (or a pretrained backbone) into the same decoder.

mod captioner;
pub mod corpus;
pub mod images;

pub use captioner::{evaluate_captions, expand_inputs, CaptionReport, Captioner};
mod training;

pub(crate) use training::Captioning;
