//! The image encoder of the captioning pipeline: a backbone split into a part that never trains
//! (whose output may therefore be computed once and cached) and a trainable part that ends in
//! the decoder contract.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use seq2seq_decoder::EncoderOutput;
use seq2seq_nn::Ctx;
use serde::{Deserialize, Serialize};

use crate::cnn::{small_cnn, SmallCnn, SmallCnnConfig};
use crate::lite0::{efficientnet_lite0_split, EfficientNetLite0, FEATURES, NUM_BLOCKS};
use crate::preprocess::Normalization;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// A small CNN trained from scratch with the decoder.
    #[default]
    SmallCnn,
    /// The ImageNet-trained EfficientNet-Lite0, frozen except its last `fine_tune_blocks`.
    Lite0,
}

/// A CNN image encoder: `(B, 3, S, S)` pixels → memory `(B, h·w, C)` and a pooled state.
pub enum ImageEncoder {
    Cnn(SmallCnn),
    Lite0 {
        net: EfficientNetLite0,
        /// Blocks `first_trainable..` and the head train; `NUM_BLOCKS` means nothing does.
        first_trainable: usize,
        dropout: f32,
    },
}

impl ImageEncoder {
    pub fn small_cnn(cfg: SmallCnnConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self::Cnn(small_cnn(cfg, vb)?))
    }

    /// EfficientNet-Lite0 with its last `fine_tune_blocks` MBConv blocks and the head conv
    /// (when `fine_tune_blocks > 0`) read from `trainable`, the rest from `frozen`. Both use the
    /// EfficientNet-PyTorch names (`_conv_stem.weight`, `_blocks.15._bn2.running_var`, …).
    pub fn lite0(
        frozen: VarBuilder,
        trainable: VarBuilder,
        fine_tune_blocks: usize,
        dropout: f32,
    ) -> Result<Self> {
        if fine_tune_blocks > NUM_BLOCKS {
            candle_core::bail!(
                "fine_tune_blocks: EfficientNet-Lite0 has {NUM_BLOCKS} blocks, got {fine_tune_blocks}"
            );
        }
        let first_trainable = NUM_BLOCKS - fine_tune_blocks;
        Ok(Self::Lite0 {
            net: efficientnet_lite0_split(frozen, trainable, first_trainable)?,
            first_trainable,
            dropout,
        })
    }

    /// The pixel normalisation the backbone expects.
    pub fn normalization(&self) -> Normalization {
        match self {
            Self::Cnn(_) => Normalization::ImageNet,
            Self::Lite0 { .. } => Normalization::Lite,
        }
    }

    /// Channels of the memory and of the pooled state.
    pub fn output_channels(&self) -> usize {
        match self {
            Self::Cnn(c) => c.output_channels(),
            Self::Lite0 { .. } => FEATURES,
        }
    }

    /// Whether part of the network is frozen, so that [`Self::frozen`]'s output can be cached.
    pub fn has_frozen_part(&self) -> bool {
        matches!(self, Self::Lite0 { .. })
    }

    /// The frozen part: pixels → its output (the pixels themselves when everything trains).
    pub fn frozen(&self, pixels: &Tensor) -> Result<Tensor> {
        match self {
            Self::Cnn(_) => Ok(pixels.clone()),
            Self::Lite0 {
                net,
                first_trainable,
                ..
            } if *first_trainable == NUM_BLOCKS => net.features(pixels),
            Self::Lite0 {
                net,
                first_trainable,
                ..
            } => net.prefix(pixels, *first_trainable),
        }
    }

    /// The trainable part: [`Self::frozen`]'s output → the decoder contract.
    pub fn trainable(&self, x: &Tensor, ctx: &mut Ctx) -> Result<EncoderOutput> {
        let grid = match self {
            Self::Cnn(c) => c.features(x, ctx)?,
            Self::Lite0 {
                net,
                first_trainable,
                dropout,
            } => {
                let g = if *first_trainable == NUM_BLOCKS {
                    x.clone()
                } else {
                    net.suffix(x, *first_trainable)?
                };
                ctx.dropout(&g, *dropout)?
            }
        };
        crate::grid_to_encoder_output(&grid)
    }

    /// Pixels → the decoder contract.
    pub fn forward(&self, pixels: &Tensor, ctx: &mut Ctx) -> Result<EncoderOutput> {
        self.trainable(&self.frozen(pixels)?, ctx)
    }
}
