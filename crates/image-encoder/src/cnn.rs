//! A small CNN trained from scratch: blocks of conv → (batch norm) → activation → 2×2 pooling.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{
    batch_norm, conv2d, conv2d_no_bias, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig,
    VarBuilder,
};
use seq2seq_decoder::EncoderOutput;
use seq2seq_nn::Ctx;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Relu6,
    Gelu,
    Tanh,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    #[default]
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmallCnnConfig {
    /// Output channels of each block; every block halves the resolution.
    pub channels: Vec<usize>,
    pub kernel: usize,
    pub batch_norm: bool,
    pub activation: Activation,
    pub pool: Pool,
    /// Dropout on the output feature grid.
    pub dropout: f32,
}

impl Default for SmallCnnConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 128, 256],
            kernel: 3,
            batch_norm: true,
            activation: Activation::Relu,
            pool: Pool::Max,
            dropout: 0.0,
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

/// Parameters `blocks.{i}.conv.weight` (`.bias` without batch norm), `blocks.{i}.bn.*`.
#[derive(Clone, Debug)]
pub struct SmallCnn {
    cfg: SmallCnnConfig,
    blocks: Vec<Block>,
}

pub fn small_cnn(cfg: SmallCnnConfig, vb: VarBuilder) -> Result<SmallCnn> {
    let mut blocks = Vec::new();
    let mut input = 3;
    let conv_cfg = Conv2dConfig {
        padding: cfg.kernel / 2,
        ..Default::default()
    };
    for (i, &out) in cfg.channels.iter().enumerate() {
        let vb = vb.pp(format!("blocks.{i}"));
        let (conv, bn) = if cfg.batch_norm {
            (
                conv2d_no_bias(input, out, cfg.kernel, conv_cfg, vb.pp("conv"))?,
                Some(batch_norm(
                    out,
                    BatchNormConfig {
                        eps: 1e-5,
                        ..Default::default()
                    },
                    vb.pp("bn"),
                )?),
            )
        } else {
            (
                conv2d(input, out, cfg.kernel, conv_cfg, vb.pp("conv"))?,
                None,
            )
        };
        blocks.push(Block { conv, bn });
        input = out;
    }
    Ok(SmallCnn { cfg, blocks })
}

impl SmallCnn {
    pub fn output_channels(&self) -> usize {
        *self.cfg.channels.last().unwrap_or(&3)
    }

    /// `(B, 3, S, S)` → feature grid `(B, C, S/2ⁿ, S/2ⁿ)`.
    pub fn features(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = b.conv.forward(&x)?;
            if let Some(bn) = &b.bn {
                x = bn.forward_t(&x, ctx.is_train())?;
            }
            x = match self.cfg.activation {
                Activation::Relu => x.relu()?,
                Activation::Relu6 => x.clamp(0f32, 6f32)?,
                Activation::Gelu => x.gelu_erf()?,
                Activation::Tanh => x.tanh()?,
            };
            x = match self.cfg.pool {
                Pool::Max => x.max_pool2d(2)?,
                Pool::Avg => x.avg_pool2d(2)?,
            };
        }
        ctx.dropout(&x, self.cfg.dropout)
    }

    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<EncoderOutput> {
        crate::grid_to_encoder_output(&self.features(x, ctx)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use seq2seq_nn::SeededVarMap;

    #[test]
    fn grid_and_pooled_shapes() -> Result<()> {
        let vm = SeededVarMap::new(1);
        let cnn = small_cnn(SmallCnnConfig::default(), vm.var_builder(&Device::Cpu))?;
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 64), &Device::Cpu)?;
        let out = cnn.forward(&x, &mut Ctx::train(3))?;
        assert_eq!(out.memory.as_ref().unwrap().dims(), &[2, 16, 256]);
        assert_eq!(out.mask.as_ref().unwrap().dims(), &[2, 16]);
        assert_eq!(out.final_states[0].dims(), &[2, 256]);
        let cfg = SmallCnnConfig {
            channels: vec![8, 16],
            batch_norm: false,
            pool: Pool::Avg,
            activation: Activation::Tanh,
            ..Default::default()
        };
        let cnn = small_cnn(cfg, vm.var_builder(&Device::Cpu).pp("other"))?;
        let g = cnn.features(
            &Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?,
            &mut Ctx::eval(),
        )?;
        assert_eq!(g.dims(), &[1, 16, 8, 8]);
        Ok(())
    }
}
