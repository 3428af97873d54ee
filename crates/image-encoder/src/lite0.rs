//! EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-and-excitation, with
//! ReLU6 and a fixed stem and head), reading the EfficientNet-PyTorch checkpoint names
//! (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, …, `_conv_head`, `_bn1`, `_fc`).
//!
//! The network runs channels-last on the [`crate::nhwc`] kernels: 1×1 convolutions as one gemm,
//! depthwise ones as a direct per-channel filter (candle 0.11 runs a grouped convolution as one
//! convolution per group, candle#3389: ~1000 tiny convolutions per layer here), the stem as
//! blocked im2col + gemm, each with its ReLU6 in the same pass. Batch norm runs in inference form (eps
//! 1e-3; the backbone is frozen or fine-tuned with frozen statistics), folded into the weights:
//! once at load for frozen layers, on every call for fine-tuned ones.

use candle_core::{Result, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};

use crate::nhwc::{self, Act};

/// (expand ratio, kernel, stride, output channels, repeats) of the seven stages.
pub const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];
pub const FEATURES: usize = 1280;
/// MBConv blocks in the network.
pub const NUM_BLOCKS: usize = 16;
const BN_EPS: f64 = 1e-3;

/// How a convolution runs: its weight's layout for the [`crate::nhwc`] ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 1×1: one gemm, weight `(C_in, C_out)`.
    Pointwise,
    /// One k×k filter per channel, weight `(k², C)`.
    Depthwise,
    /// k×k over all input channels (the stem), weight `(k²·C_in, C_out)`.
    Dense,
}

/// A convolution's weight and its batch norm, as read from the checkpoint.
#[derive(Clone, Debug)]
struct BnParams {
    /// PyTorch's layout: `(C_out, C_in / groups, k, k)`.
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl BnParams {
    /// Batch norm folded into the convolution (inference form, eps 1e-3): the weight scaled per
    /// output channel in the layout of `kind`, and the bias `β − μ·γ/√(σ²+ε)`.
    fn fold(&self, kind: Kind) -> Result<(Tensor, Tensor)> {
        let scale = (&self.gamma / (&self.var + BN_EPS)?.sqrt()?)?;
        let bias = (&self.beta - (&self.mean * &scale)?)?;
        let (cout, cin, k, _) = self.weight.dims4()?;
        let scaled = self
            .weight
            .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let w = match kind {
            Kind::Pointwise => scaled.reshape((cout, cin))?.t()?,
            Kind::Depthwise => scaled.reshape((cout, k * k))?.t()?,
            Kind::Dense => scaled.permute((2, 3, 1, 0))?.reshape((k * k * cin, cout))?,
        };
        Ok((w.contiguous()?, bias))
    }
}

/// A convolution followed by batch norm in inference form and an optional ReLU6, channels-last.
#[derive(Clone, Debug)]
struct ConvBn {
    kind: Kind,
    kernel: usize,
    stride: usize,
    weights: Weights,
}

/// A frozen layer folds its batch norm once, at load; a fine-tuned one on every call, so that the
/// gradient reaches the convolution's weight and γ, β.
#[derive(Clone, Debug)]
enum Weights {
    Folded { w: Tensor, b: Tensor },
    Trainable(BnParams),
}

#[allow(clippy::too_many_arguments)]
fn conv_bn(
    conv: VarBuilder,
    bn: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    kind: Kind,
    frozen: bool,
) -> Result<ConvBn> {
    let weight = if kind == Kind::Depthwise {
        conv.get((cout, 1, k, k), "weight")?
    } else {
        conv.get((cout, cin, k, k), "weight")?
    };
    let params = BnParams {
        weight,
        gamma: bn.get(cout, "weight")?,
        beta: bn.get(cout, "bias")?,
        mean: bn.get(cout, "running_mean")?,
        var: bn.get(cout, "running_var")?,
    };
    let weights = if frozen {
        let (w, b) = params.fold(kind)?;
        Weights::Folded {
            w: w.detach(),
            b: b.detach(),
        }
    } else {
        Weights::Trainable(params)
    };
    Ok(ConvBn {
        kind,
        kernel: k,
        stride,
        weights,
    })
}

impl ConvBn {
    /// `(B, H, W, C_in)` → `(B, Ho, Wo, C_out)`.
    fn forward(&self, x: &Tensor, relu6: bool) -> Result<Tensor> {
        let (w, b) = match &self.weights {
            Weights::Folded { w, b } => (w.clone(), b.clone()),
            Weights::Trainable(p) => p.fold(self.kind)?,
        };
        let act = if relu6 { Act::Relu6 } else { Act::None };
        let rows = |t: &Tensor| -> Result<Tensor> {
            let (n, h, wd, c) = t.dims4()?;
            let y = nhwc::pointwise(&t.reshape((n * h * wd, c))?, &w, &b, act)?;
            y.reshape((n, h, wd, w.dim(1)?))
        };
        match self.kind {
            Kind::Pointwise => rows(x),
            Kind::Dense => nhwc::conv2d(x, &w, &b, self.kernel, self.stride, act),
            Kind::Depthwise => nhwc::depthwise(x, &w, &b, self.kernel, self.stride, act),
        }
    }
}

#[derive(Clone, Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(block) = self.frozen(x) {
            return block.forward(x);
        }
        let mut y = x.clone();
        if let Some(e) = &self.expand {
            y = e.forward(&y, true)?;
        }
        y = self.depthwise.forward(&y, true)?;
        y = self.project.forward(&y, false)?;
        if self.skip {
            y = (y + x)?;
        }
        Ok(y)
    }
}

impl MbConv {
    /// The block as one band-by-band pass, where that applies: frozen (folded) weights, on the
    /// CPU, and at least one image per thread (the pass runs images in parallel; a smaller batch
    /// is faster op by op, whose ops split each image).
    fn frozen(&self, x: &Tensor) -> Option<nhwc::FrozenMbConv<'_>> {
        fn folded(c: &ConvBn) -> Option<(&Tensor, &Tensor)> {
            match &c.weights {
                Weights::Folded { w, b } => Some((w, b)),
                Weights::Trainable(_) => None,
            }
        }
        let images = x.dim(0).ok()?;
        if !seq2seq_nn::cpu::on_cpu_f32(x)
            || x.track_op()
            || images < candle_core::utils::get_num_threads()
        {
            return None;
        }
        let expand = match &self.expand {
            Some(e) => Some(folded(e)?),
            None => None,
        };
        Some(nhwc::FrozenMbConv {
            expand,
            depthwise: folded(&self.depthwise)?,
            k: self.depthwise.kernel,
            stride: self.depthwise.stride,
            project: folded(&self.project)?,
            skip: self.skip,
        })
    }
}

/// The backbone with its ImageNet classifier.
#[derive(Clone, Debug)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc: Option<Linear>,
}

/// Builds the network from EfficientNet-PyTorch names (e.g. `VarBuilder::from_pth` on
/// `efficientnet-lite0-57934424.pth`).
pub fn efficientnet_lite0(vb: VarBuilder) -> Result<EfficientNetLite0> {
    efficientnet_lite0_split(vb.clone(), vb, NUM_BLOCKS)
}

/// Builds the network with the stem and blocks `0..first_trainable` from `frozen`, and the
/// remaining blocks, the head and the classifier from `trainable` (same names in both).
pub fn efficientnet_lite0_split(
    frozen: VarBuilder,
    trainable: VarBuilder,
    first_trainable: usize,
) -> Result<EfficientNetLite0> {
    let vb = &frozen;
    let stem = conv_bn(
        vb.pp("_conv_stem"),
        vb.pp("_bn0"),
        3,
        32,
        3,
        2,
        Kind::Dense,
        first_trainable > 0,
    )?;
    let mut blocks = Vec::new();
    let mut cin = 32;
    for &(e, k, s, cout, repeats) in &STAGES {
        for r in 0..repeats {
            let stride = if r == 0 { s } else { 1 };
            let is_frozen = blocks.len() < first_trainable;
            let src = if is_frozen { &frozen } else { &trainable };
            let b = src.pp(format!("_blocks.{}", blocks.len()));
            let mid = cin * e;
            let expand = if e != 1 {
                Some(conv_bn(
                    b.pp("_expand_conv"),
                    b.pp("_bn0"),
                    cin,
                    mid,
                    1,
                    1,
                    Kind::Pointwise,
                    is_frozen,
                )?)
            } else {
                None
            };
            let depthwise = conv_bn(
                b.pp("_depthwise_conv"),
                b.pp("_bn1"),
                mid,
                mid,
                k,
                stride,
                Kind::Depthwise,
                is_frozen,
            )?;
            let project = conv_bn(
                b.pp("_project_conv"),
                b.pp("_bn2"),
                mid,
                cout,
                1,
                1,
                Kind::Pointwise,
                is_frozen,
            )?;
            blocks.push(MbConv {
                expand,
                depthwise,
                project,
                skip: stride == 1 && cin == cout,
            });
            cin = cout;
        }
    }
    let head_frozen = first_trainable >= NUM_BLOCKS;
    let vb = if head_frozen { &frozen } else { &trainable };
    let head = conv_bn(
        vb.pp("_conv_head"),
        vb.pp("_bn1"),
        320,
        FEATURES,
        1,
        1,
        Kind::Pointwise,
        head_frozen,
    )?;
    // The ImageNet classifier only where the source has it (a captioning model does not keep it).
    let fc = if frozen.contains_tensor("_fc.weight") {
        Some(linear(FEATURES, 1000, frozen.pp("_fc"))?)
    } else {
        None
    };
    Ok(EfficientNetLite0 {
        stem,
        blocks,
        head,
        fc,
    })
}

impl EfficientNetLite0 {
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// `(B, 3, 224, 224)` normalised as `(x - 127) / 128` → channels-last features
    /// `(B, 7, 7, 1280)`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.suffix(&self.prefix(x, NUM_BLOCKS)?, NUM_BLOCKS)
    }

    /// The stem and blocks `0..n`: pixels `(B, 3, S, S)` → the input of block `n`, channels-last
    /// `(B, h, w, C)`.
    pub fn prefix(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let mut x = self
            .stem
            .forward(&x.permute((0, 2, 3, 1))?.contiguous()?, true)?;
        for b in &self.blocks[..n.min(NUM_BLOCKS)] {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    /// Blocks `n..` and the head: the input of block `n` → features `(B, h, w, 1280)`.
    pub fn suffix(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks[n.min(NUM_BLOCKS)..] {
            x = b.forward(&x)?;
        }
        self.head.forward(&x, true)
    }

    /// ImageNet logits `(B, 1000)` from features.
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        let fc = self.fc.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "this EfficientNet-Lite0 was loaded without its classifier".into(),
            )
        })?;
        fc.forward(&features.mean((1, 2))?)
    }
}
