//! EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-and-excitation, with
//! ReLU6 and a fixed stem and head), reading the EfficientNet-PyTorch checkpoint names
//! (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, …, `_conv_head`, `_bn1`, `_fc`).
//!
//! Batch norm runs in inference form (folded into a per-channel scale and shift, eps 1e-3) since
//! the backbone is frozen or fine-tuned with frozen statistics. Depthwise convolutions are
//! computed as a sum of k×k shifted slices scaled per channel: candle 0.11 runs a grouped
//! convolution as one convolution per group (candle#3389), ~1000 tiny convolutions per layer here.

use candle_core::{Result, Tensor, D};
use candle_nn::{linear, Linear, Module, VarBuilder};

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

/// Symmetric `k/2` zero padding, as the checkpoint's PyTorch model used (`nn.Conv2d(padding=k//2)`):
/// TensorFlow-style asymmetric "same" padding misclassifies 3 of 12 Flickr8k dog photos where
/// this gets at most 1 wrong (see the opt-in test).
fn same_pad(x: &Tensor, k: usize, _stride: usize) -> Result<Tensor> {
    x.pad_with_zeros(2, k / 2, k / 2)?
        .pad_with_zeros(3, k / 2, k / 2)
}

/// Keeps every second row and column (stride 2 from a stride-1 result).
fn subsample2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let x = if h % 2 == 1 {
        x.pad_with_zeros(2, 0, 1)?
    } else {
        x.clone()
    };
    let x = if w % 2 == 1 {
        x.pad_with_zeros(3, 0, 1)?
    } else {
        x
    };
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    x.reshape((b, c, h2, 2, w2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, h2, w2))
}

/// A convolution (no bias) followed by batch norm in inference form.
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    kernel: usize,
    stride: usize,
    depthwise: bool,
}

fn conv_bn(
    conv: VarBuilder,
    bn: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> Result<ConvBn> {
    let weight = if depthwise {
        conv.get((cout, 1, k, k), "weight")?
    } else {
        conv.get((cout, cin, k, k), "weight")?
    };
    Ok(ConvBn {
        weight,
        gamma: bn.get(cout, "weight")?,
        beta: bn.get(cout, "bias")?,
        mean: bn.get(cout, "running_mean")?,
        var: bn.get(cout, "running_var")?,
        kernel: k,
        stride,
        depthwise,
    })
}

impl ConvBn {
    fn forward(&self, x: &Tensor, relu6: bool) -> Result<Tensor> {
        let k = self.kernel;
        let y = if self.depthwise {
            let xp = same_pad(x, k, self.stride)?;
            let c = x.dim(1)?;
            let (hp, wp) = (xp.dim(2)?, xp.dim(3)?);
            let (ho, wo) = (hp - k + 1, wp - k + 1);
            let mut acc: Option<Tensor> = None;
            for i in 0..k {
                for j in 0..k {
                    let wij = self
                        .weight
                        .narrow(2, i, 1)?
                        .narrow(3, j, 1)?
                        .reshape((1, c, 1, 1))?;
                    let term = xp.narrow(2, i, ho)?.narrow(3, j, wo)?.broadcast_mul(&wij)?;
                    acc = Some(match acc {
                        Some(a) => (a + term)?,
                        None => term,
                    });
                }
            }
            let y = acc.unwrap();
            if self.stride == 2 {
                subsample2(&y)?
            } else {
                y
            }
        } else if k == 1 {
            x.conv2d(&self.weight, 0, self.stride, 1, 1)?
        } else {
            same_pad(x, k, self.stride)?.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        // Folded per call rather than once: a fine-tuned layer's gamma and beta change.
        let c = self.gamma.dim(0)?;
        let scale = (&self.gamma / (&self.var + BN_EPS)?.sqrt()?)?;
        let shift = (&self.beta - (&self.mean * &scale)?)?;
        let y = y
            .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
        if relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
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
    let stem = conv_bn(vb.pp("_conv_stem"), vb.pp("_bn0"), 3, 32, 3, 2, false)?;
    let mut blocks = Vec::new();
    let mut cin = 32;
    for &(e, k, s, cout, repeats) in &STAGES {
        for r in 0..repeats {
            let stride = if r == 0 { s } else { 1 };
            let src = if blocks.len() < first_trainable {
                &frozen
            } else {
                &trainable
            };
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
                    false,
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
                true,
            )?;
            let project = conv_bn(b.pp("_project_conv"), b.pp("_bn2"), mid, cout, 1, 1, false)?;
            blocks.push(MbConv {
                expand,
                depthwise,
                project,
                skip: stride == 1 && cin == cout,
            });
            cin = cout;
        }
    }
    let vb = if first_trainable < NUM_BLOCKS {
        &trainable
    } else {
        &frozen
    };
    let head = conv_bn(
        vb.pp("_conv_head"),
        vb.pp("_bn1"),
        320,
        FEATURES,
        1,
        1,
        false,
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

    /// `(B, 3, 224, 224)` normalised as `(x - 127) / 128` → `(B, 1280, 7, 7)`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.suffix(&self.prefix(x, NUM_BLOCKS)?, NUM_BLOCKS)
    }

    /// The stem and blocks `0..n`: pixels → the input of block `n`.
    pub fn prefix(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let mut x = self.stem.forward(x, true)?;
        for b in &self.blocks[..n.min(NUM_BLOCKS)] {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    /// Blocks `n..` and the head: the input of block `n` → features `(B, 1280, h, w)`.
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
        fc.forward(&features.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}
