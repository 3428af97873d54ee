//! The fused op against the op-by-op decoder step, in values and gradients.

use super::*;
use crate::attention::{attention, AttentionKind};
use crate::init::SeededVarMap;
use crate::rnn::cell;
use crate::twin::{assert_same_gradients, max_diff, padded_mask};
use candle_core::{Device, Var};
use candle_nn::{linear, Module};

/// Values and gradients of every input against the op-by-op loop the decoder runs otherwise:
/// `Cell::step_ops` on `[e; ã]`, attention with the new state, then the attentional layer.
fn check(kind: CellKind, att_kind: AttentionKind) -> Result<()> {
    let dev = Device::Cpu;
    let (b, t, s, emb, hs, a) = (3, 4, 5, 6, 8, 9);
    // `dot` compares the state with the memory itself: their sizes agree.
    let c = if att_kind == AttentionKind::Dot {
        hs
    } else {
        7
    };
    let vm = SeededVarMap::new(13);
    let vb = vm.var_builder(&dev);
    let cl = cell(kind, emb + hs, hs, "l0", vb.pp("rnn"))?;
    let att = attention(att_kind, c, hs, a, vb.pp("attention"))?;
    let layer = linear(hs + c, hs, vb.pp("att_vector_layer"))?;
    let randn = |sd: f64, shape: &[usize]| -> Result<Var> {
        Var::from_tensor(&Tensor::randn(0f32, sd as f32, shape, &dev)?)
    };
    let e = randn(1.0, &[b, t, emb])?;
    let mem = randn(1.0, &[b, s, c])?;
    let (h0, c0, a0) = (
        randn(0.5, &[b, hs])?,
        randn(0.5, &[b, hs])?,
        randn(0.5, &[b, hs])?,
    );
    let mask = padded_mask(b, s, &dev)?;
    let init = CellState {
        h: h0.as_tensor().clone(),
        c: (kind == CellKind::Lstm).then(|| c0.as_tensor().clone()),
    };
    let keys = att.keys(mem.as_tensor(), &mask)?;
    let (mut state, mut prev) = (init.clone(), a0.as_tensor().clone());
    let mut atts = Vec::new();
    for i in 0..t {
        let et = e.as_tensor().narrow(1, i, 1)?.squeeze(1)?;
        let x = Tensor::cat(&[&et, &prev], 1)?;
        state = cl.step_ops(&cl.input_proj(&x)?, &state)?;
        let (ctx, _) = att.forward(&state.h.unsqueeze(1)?, &keys)?;
        let hc = Tensor::cat(&[&state.h, &ctx.squeeze(1)?], 1)?;
        prev = layer.forward(&hc)?.tanh()?;
        atts.push(prev.clone());
    }
    let att_ref = Tensor::stack(&atts, 1)?;
    let fused_layer = AttentionalLayer {
        weight: layer.weight(),
        bias: layer.bias(),
    };
    let (att_f, last) = feeding_sequence(
        &cl,
        &att,
        fused_layer,
        e.as_tensor(),
        &keys,
        &init,
        a0.as_tensor(),
    )?;
    assert!(
        max_diff(&att_f, &att_ref)? < 1e-5,
        "attentional vectors differ"
    );
    assert!(max_diff(&last.h, &state.h)? < 1e-5, "final state differs");
    if kind == CellKind::Lstm {
        let (x, y) = (last.c.as_ref().unwrap(), state.c.as_ref().unwrap());
        assert!(max_diff(x, y)? < 1e-5, "final cell differs");
    }
    // A loss that reaches every output: weighted attentional vectors and the final state.
    let wa = Tensor::randn(0f32, 1.0, (b, t, hs), &dev)?;
    let wh = Tensor::randn(0f32, 1.0, (b, hs), &dev)?;
    let loss = |at: &Tensor, st: &CellState| -> Result<Tensor> {
        let mut l = ((at * &wa)?.sum_all()? + (&st.h * &wh)?.sum_all()?)?;
        if let Some(cc) = &st.c {
            l = (l + cc.sum_all()?)?;
        }
        Ok(l)
    };
    let gr = loss(&att_ref, &state)?.backward()?;
    let gf = loss(&att_f, &last)?.backward()?;
    let mut vars: Vec<(String, Tensor)> = vec![
        ("e".into(), e.as_tensor().clone()),
        ("memory".into(), mem.as_tensor().clone()),
        ("h0".into(), h0.as_tensor().clone()),
        ("att0".into(), a0.as_tensor().clone()),
    ];
    if kind == CellKind::Lstm {
        vars.push(("c0".into(), c0.as_tensor().clone()));
    }
    assert_same_gradients(&format!("{kind:?}, {att_kind:?}"), &gr, &gf, vars, &vm)
}

#[test]
fn gru_matches_the_op_by_op_decoder_loop_in_values_and_gradients() -> Result<()> {
    check(CellKind::Gru, AttentionKind::Bahdanau)
}

#[test]
fn lstm_matches_the_op_by_op_decoder_loop_in_values_and_gradients() -> Result<()> {
    check(CellKind::Lstm, AttentionKind::Bahdanau)
}

/// OpenNMT-py's RNN default: Luong `general` attention with input feeding.
#[test]
fn the_multiplicative_scores_match_the_op_by_op_loop_too() -> Result<()> {
    check(CellKind::Lstm, AttentionKind::Luong)?;
    check(CellKind::Gru, AttentionKind::Luong)?;
    check(CellKind::Gru, AttentionKind::Dot)?;
    check(CellKind::Lstm, AttentionKind::Dot)
}
