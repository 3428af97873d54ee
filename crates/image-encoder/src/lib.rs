//! Image encoders for captioning, behind the same [`seq2seq_decoder::EncoderOutput`] contract as
//! the text encoder: a spatial feature grid `(B, H'·W', C)` as the attention memory (Show, Attend
//! and Tell) and a pooled vector as the final state.
//!
//! * [`cnn::SmallCnn`]: a configurable CNN trained from scratch.
//! * [`lite0::EfficientNetLite0`]: the ImageNet-trained EfficientNet-Lite0, read from its PyTorch
//!   checkpoint (EfficientNet-PyTorch tensor names).
//! * [`encoder::ImageEncoder`]: either backbone split into a frozen part (cacheable) and a
//!   trainable part ending in the decoder contract.
//! * [`nhwc`]: the channels-last convolution kernels both backbones run on.
//! * [`preprocess`]: decoding with size limits, aspect-preserving resize, centre crop, augmentation
//!   and per-backbone normalisation.

pub mod cnn;
pub mod encoder;
pub mod lite0;
pub mod nhwc;
pub mod preprocess;
pub mod pth;
pub mod shapes;

use candle_core::{Result, Tensor};
use seq2seq_decoder::EncoderOutput;

pub use encoder::{BackboneKind, ImageEncoder};

/// Turns a channels-last feature map `(B, H, W, C)` into the decoder contract: memory
/// `(B, H·W, C)` (a reshape, no copy) with an all-ones mask, and the spatially averaged `(B, C)`
/// vector as the single final state.
pub fn grid_to_encoder_output(features: &Tensor) -> Result<EncoderOutput> {
    let (b, h, w, c) = features.dims4()?;
    let memory = features.reshape((b, h * w, c))?;
    let pooled = memory.mean(1)?;
    let mask = Tensor::ones((b, h * w), candle_core::DType::F32, features.device())?;
    Ok(EncoderOutput {
        memory: Some(memory),
        mask: Some(mask),
        final_states: vec![pooled],
    })
}
