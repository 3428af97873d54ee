//! A small CNN trained from scratch: blocks of conv → (batch norm) → activation → 2×2 pooling,
//! channels-last on the [`crate::nhwc`] kernels.

use candle_core::{Result, Tensor, Var};
use candle_nn::init::{Init, DEFAULT_KAIMING_NORMAL};
use candle_nn::VarBuilder;
use seq2seq_decoder::EncoderOutput;
use seq2seq_nn::Ctx;
use serde::{Deserialize, Serialize};

use crate::nhwc::{self, Act};

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

/// A block's convolution: PyTorch's weight `(C_out, C_in, k, k)` and its bias (none before batch
/// norm).
#[derive(Clone, Debug)]
struct Block {
    weight: Tensor,
    bias: Option<Tensor>,
    bn: Option<Norm>,
}

/// Batch norm over the channels of a channels-last activation, PyTorch's: batch statistics in
/// training (running averages updated with momentum 0.1, the variance unbiased), the running
/// ones in evaluation.
#[derive(Clone, Debug)]
struct Norm {
    gamma: Tensor,
    beta: Tensor,
    mean: Var,
    var: Var,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl Norm {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        // candle-nn's batch_norm hints, so that a seeded model starts where it did before.
        Ok(Self {
            gamma: vb.get_with_hints(c, "weight", Init::Const(1.))?,
            beta: vb.get_with_hints(c, "bias", Init::Const(0.))?,
            mean: Var::from_tensor(&vb.get_with_hints(c, "running_mean", Init::Const(0.))?)?,
            var: Var::from_tensor(&vb.get_with_hints(c, "running_var", Init::Const(1.))?)?,
        })
    }

    /// Training form on rows `(N, C)`, with the activation `act` in the same op: normalised by
    /// the batch's statistics, which also move the running ones.
    fn forward_train(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let n = x.dim(0)? as f64;
        let (y, mean, var) = nhwc::batch_norm_train(x, &self.gamma, &self.beta, BN_EPS, act)?;
        self.update_running(&mean, &var, n)?;
        Ok(y)
    }

    /// [`Self::forward_train`], the activation and 2×2 max pooling in one op on `(B, H, W, C)`.
    fn forward_train_pool(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let (y, mean, var) =
            nhwc::batch_norm_act_max_pool(x, &self.gamma, &self.beta, BN_EPS, act)?;
        self.update_running(&mean, &var, (b * h * w) as f64)?;
        Ok(y)
    }

    /// Running statistics moved towards a batch's (`n` values per channel): momentum 0.1, the
    /// variance made unbiased.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: f64) -> Result<()> {
        let keep = 1.0 - BN_MOMENTUM;
        self.mean
            .set(&((self.mean.as_tensor() * keep)? + (mean * BN_MOMENTUM)?)?)?;
        let unbiased = BN_MOMENTUM * n / (n - 1.0).max(1.0);
        self.var
            .set(&((self.var.as_tensor() * keep)? + (var * unbiased)?)?)
    }

    /// Evaluation form as a per-channel `(scale, shift)`, to fold into the convolution.
    fn folded(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.gamma / (self.var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let shift = (&self.beta - (self.mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }
}

/// Parameters `blocks.{i}.conv.weight` (`.bias` without batch norm), `blocks.{i}.bn.*`.
#[derive(Clone, Debug)]
pub struct SmallCnn {
    cfg: SmallCnnConfig,
    blocks: Vec<Block>,
}

pub fn small_cnn(cfg: SmallCnnConfig, vb: VarBuilder) -> Result<SmallCnn> {
    if cfg.kernel.is_multiple_of(2) {
        candle_core::bail!("cnn.kernel must be odd (same padding), got {}", cfg.kernel);
    }
    let mut blocks = Vec::new();
    let mut input = 3;
    let k = cfg.kernel;
    for (i, &out) in cfg.channels.iter().enumerate() {
        let vb = vb.pp(format!("blocks.{i}"));
        let conv = vb.pp("conv");
        // candle-nn's conv2d hints (Kaiming-normal weight, uniform bias).
        let weight = conv.get_with_hints((out, input, k, k), "weight", DEFAULT_KAIMING_NORMAL)?;
        let (bias, bn) = if cfg.batch_norm {
            (None, Some(Norm::new(out, vb.pp("bn"))?))
        } else {
            let bound = 1. / (input as f64).sqrt();
            let hint = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            (Some(conv.get_with_hints(out, "bias", hint)?), None)
        };
        blocks.push(Block { weight, bias, bn });
        input = out;
    }
    Ok(SmallCnn { cfg, blocks })
}

impl SmallCnn {
    pub fn output_channels(&self) -> usize {
        *self.cfg.channels.last().unwrap_or(&3)
    }

    /// `(B, 3, S, S)` → channels-last feature grid `(B, S/2ⁿ, S/2ⁿ, C)`.
    pub fn features(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut x = x.permute((0, 2, 3, 1))?.contiguous()?;
        for b in &self.blocks {
            x = self.block(b, &x, ctx.is_train())?;
        }
        ctx.dropout(&x, self.cfg.dropout)
    }

    /// conv → batch norm → activation → 2×2 pooling, channels-last. Without batch-norm
    /// statistics to compute (evaluation, or no batch norm) the norm folds into the convolution
    /// and a ReLU runs in the gemm's pass.
    fn block(&self, b: &Block, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, h, w, cin) = x.dims4()?;
        let (cout, k) = (b.weight.dim(0)?, self.cfg.kernel);
        let mut filters = b
            .weight
            .permute((2, 3, 1, 0))?
            .reshape((k * k * cin, cout))?;
        // (B, H, W, C'): no reshape on the way to the fused norm-and-pool op, since candle's
        // backward pass gives every graph node a zeroed gradient buffer and a sum (two
        // full-size buffers per reshape, 38 MB each at the first layer of a 32-image batch).
        let conv = |f: &Tensor, bias: &Tensor, act: Act| -> Result<Tensor> {
            nhwc::conv2d(x, &f.contiguous()?, bias, k, 1, act)
        };
        let rows = |y: Tensor| y.reshape((n * h * w, cout));
        let zero = || Tensor::zeros(cout, x.dtype(), x.device());
        let fused = match self.cfg.activation {
            Activation::Relu => Act::Relu,
            Activation::Relu6 => Act::Relu6,
            Activation::Gelu | Activation::Tanh => Act::None,
        };
        let y = match (&b.bn, train) {
            (Some(bn), true) if self.cfg.pool == Pool::Max && fused != Act::None => {
                let y = conv(&filters, &zero()?, Act::None)?;
                return bn.forward_train_pool(&y, fused);
            }
            (Some(bn), true) => {
                let y = rows(conv(&filters, &zero()?, Act::None)?)?;
                let z = self.activate_rest(&bn.forward_train(&y, fused)?)?;
                z.reshape((n, h, w, cout))?
            }
            (Some(bn), false) => {
                let (scale, shift) = bn.folded()?;
                filters = filters.broadcast_mul(&scale)?;
                self.activate_rest(&conv(&filters, &shift, fused)?)?
            }
            (None, _) => {
                let bias = b.bias.clone().map_or_else(zero, Ok)?;
                self.activate_rest(&conv(&filters, &bias, fused)?)?
            }
        };
        self.pool(&y)
    }

    fn activate(&self, x: &Tensor) -> Result<Tensor> {
        match self.cfg.activation {
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.clamp(0f32, 6f32),
            Activation::Gelu => x.gelu_erf(),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The activations the gemm's pass does not apply.
    fn activate_rest(&self, x: &Tensor) -> Result<Tensor> {
        match self.cfg.activation {
            Activation::Gelu | Activation::Tanh => self.activate(x),
            Activation::Relu | Activation::Relu6 => Ok(x.clone()),
        }
    }

    /// 2×2 pooling with stride 2 (a last odd row or column is dropped, as PyTorch's).
    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (h2, w2) = (h / 2, w / 2);
        match self.cfg.pool {
            Pool::Max => nhwc::max_pool2(x),
            Pool::Avg => x
                .narrow(1, 0, 2 * h2)?
                .narrow(2, 0, 2 * w2)?
                .reshape((n, h2, 2, w2, 2, c))?
                .mean(4)?
                .mean(2),
        }
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
        assert_eq!(g.dims(), &[1, 8, 8, 16]);
        Ok(())
    }
}
