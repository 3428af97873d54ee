//! Stacked, bidirectional, padded GRU/LSTM/RNN against PyTorch's packed-sequence results.
//!
//! Reference values from PyTorch 2.15 (CPU), produced by this snippet:
//! ```python
//! import torch, math
//! torch.set_printoptions(precision=7)
//! def fill(t, off):
//!     n = t.numel()
//!     v = torch.tensor([math.sin(0.37 * k + off) * 0.5 for k in range(n)], dtype=torch.float64)
//!     return v.reshape(t.shape).float()
//! B, T, I, H, L = 2, 4, 3, 2, 2
//! x = torch.tensor([[math.cos(0.11 * k) for k in range(B * T * I)]]).reshape(B, T, I).float()
//! lengths = torch.tensor([4, 2])
//! for name, cls in [("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM), ("rnn", torch.nn.RNN)]:
//!     m = cls(I, H, num_layers=L, bidirectional=True, batch_first=True)
//!     with torch.no_grad():
//!         for i, (pn, p) in enumerate(sorted(m.named_parameters())):
//!             p.copy_(fill(p, i))
//!     packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
//!     out, st = m(packed)
//!     out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
//!     h = st[0] if name == "lstm" else st
//!     print(name, "out", [round(v, 6) for v in out.flatten().tolist()])
//!     print(name, "h", [round(v, 6) for v in h.flatten().tolist()])
//!     if name == "lstm":
//!         print(name, "c", [round(v, 6) for v in st[1].flatten().tolist()])
//!     print(name, "names", [pn for pn, _ in sorted(m.named_parameters())])
//! ```

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use seq2seq_nn::{rnn, CellKind, Ctx, RnnConfig};

const B: usize = 2;
const T: usize = 4;
const I: usize = 3;
const H: usize = 2;
const L: usize = 2;

/// The same deterministic weights as the snippet: parameter i in sorted-name order holds
/// sin(0.37 k + i) / 2 for its flattened index k.
fn weights(kind: CellKind) -> HashMap<String, Tensor> {
    let g = kind.gates() * H;
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    for l in 0..L {
        for suf in ["", "_reverse"] {
            let input = if l == 0 { I } else { 2 * H };
            shapes.push((format!("bias_hh_l{l}{suf}"), vec![g]));
            shapes.push((format!("bias_ih_l{l}{suf}"), vec![g]));
            shapes.push((format!("weight_hh_l{l}{suf}"), vec![g, H]));
            shapes.push((format!("weight_ih_l{l}{suf}"), vec![g, input]));
        }
    }
    shapes.sort();
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|k| ((0.37 * k as f64 + i as f64).sin() * 0.5) as f32)
                .collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect()
}

fn check(kind: CellKind, out_ref: &[f32], h_ref: &[f32], c_ref: Option<&[f32]>) -> Result<()> {
    let dev = Device::Cpu;
    let vb = VarBuilder::from_tensors(weights(kind), DType::F32, &dev);
    let cfg = RnnConfig {
        kind,
        input_size: I,
        hidden_size: H,
        num_layers: L,
        bidirectional: true,
        dropout: 0.0,
    };
    let layer = rnn(cfg, vb)?;
    let x: Vec<f32> = (0..B * T * I)
        .map(|k| (0.11 * k as f64).cos() as f32)
        .collect();
    let x = Tensor::from_vec(x, (B, T, I), &dev)?;
    let mask = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 0., 0.]], &dev)?;
    let (out, finals) = layer.forward(&x, Some(&mask), None, &mut Ctx::eval())?;
    assert_eq!(out.dims(), &[B, T, 2 * H]);
    let close = |got: Vec<f32>, want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 2e-5,
                "{kind:?} {what}[{i}]: got {g}, PyTorch {w}"
            );
        }
    };
    close(out.flatten_all()?.to_vec1()?, out_ref, "output");
    let h: Vec<Tensor> = finals.iter().map(|s| s.h.clone()).collect();
    close(
        Tensor::stack(&h, 0)?.flatten_all()?.to_vec1()?,
        h_ref,
        "h_n",
    );
    if let Some(c_ref) = c_ref {
        let c: Vec<Tensor> = finals.iter().map(|s| s.c.clone().unwrap()).collect();
        close(
            Tensor::stack(&c, 0)?.flatten_all()?.to_vec1()?,
            c_ref,
            "c_n",
        );
    }
    Ok(())
}

#[test]
fn gru_matches_pytorch() -> Result<()> {
    check(
        CellKind::Gru,
        &[
            0.008453, 0.048713, -0.193809, 0.129688, -0.012154, 0.065582, -0.195502, 0.151772,
            -0.031561, 0.068, -0.157328, 0.137691, -0.032802, 0.07554, -0.089746, 0.089974,
            0.152447, 0.075289, 0.062538, -0.078903, 0.312325, 0.179348, 0.072522, -0.063836, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
        &[
            -0.523738, -0.456073, 0.014239, 0.040055, -0.542425, 0.469216, 0.114194, 0.209607,
            -0.032802, 0.07554, 0.312325, 0.179348, -0.193809, 0.129688, 0.062538, -0.078903,
        ],
        None,
    )
}

#[test]
fn lstm_matches_pytorch() -> Result<()> {
    check(
        CellKind::Lstm,
        &[
            -0.021882, 0.007606, -0.247696, -0.040828, -0.042208, 0.0031, -0.213595, -0.036496,
            -0.03, 0.000127, -0.144082, -0.043623, 0.021053, 0.014483, -0.06325, -0.0382, 0.117491,
            0.032188, -0.022529, -0.137043, 0.192635, 0.08236, 0.001048, -0.081399, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ],
        &[
            -0.165542, -0.245558, 0.083751, 0.095624, -0.566195, 0.407375, 0.138888, 0.186326,
            0.021053, 0.014483, 0.192635, 0.08236, -0.247696, -0.040828, -0.022529, -0.137043,
        ],
        Some(&[
            -0.28207, -0.372654, 0.147888, 0.179538, -0.814591, 0.577358, 0.216999, 0.303849,
            0.039236, 0.028923, 0.425488, 0.178011, -0.549625, -0.108768, -0.055721, -0.317588,
        ]),
    )
}

#[test]
fn rnn_matches_pytorch() -> Result<()> {
    check(
        CellKind::Rnn,
        &[
            0.724549, -0.221946, 0.21841, -0.509762, 0.62622, -0.408712, 0.251398, -0.411105,
            0.587355, -0.211799, 0.080892, -0.319613, 0.311607, -0.181666, 0.101159, 0.015891,
            0.129925, 0.210653, -0.259489, 0.151682, -0.484266, 0.313955, 0.147683, 0.762439, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
        &[
            -0.569925, 0.083046, -0.56666, -0.594967, 0.813613, 0.789893, -0.001868, 0.366031,
            0.311607, -0.181666, -0.484266, 0.313955, 0.21841, -0.509762, -0.259489, 0.151682,
        ],
        None,
    )
}
