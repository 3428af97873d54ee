//! Captioning: images through a CNN encoder (or a pretrained backbone) into the same decoder.

pub mod cache;
mod captioner;
pub mod corpus;
mod evaluate;
pub mod images;
pub mod strips;

pub use captioner::{expand_inputs, Captioned, Captioner};
pub use evaluate::{evaluate_captions, CaptionReport};
mod training;

pub(crate) use training::Captioning;
