//! The decoder's contract: masking, teacher forcing equal to stepping, greedy search.

use candle_core::{DType, Device, Result, Tensor};
use seq2seq_decoder::{
    decoder, search, Bridge, DecoderConfig, DecoderStepper, DecoderStyle, DecodingOptions,
    EncoderOutput, SpecialTokens,
};
use seq2seq_nn::{attention, AttentionKind, CellKind, Ctx, SeededVarMap};

fn memory(dev: &Device) -> Result<(Tensor, Tensor)> {
    let m: Vec<f32> = (0..2 * 4 * 6).map(|k| (k as f32 * 0.3).sin()).collect();
    let memory = Tensor::from_vec(m, (2, 4, 6), dev)?;
    let mask = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 0., 0.]], dev)?;
    Ok((memory, mask))
}

#[test]
fn attention_ignores_padding() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    for kind in [
        AttentionKind::Bahdanau,
        AttentionKind::Luong,
        AttentionKind::Dot,
    ] {
        let vm = SeededVarMap::new(1);
        let att = attention(kind, 6, 6, 5, vm.var_builder(&dev))?;
        let q = Tensor::ones((2, 3, 6), DType::F32, &dev)?;
        let (ctx, alphas) = att.forward(&q, &att.keys(&mem, &mask)?)?;
        let a: Vec<Vec<Vec<f32>>> = alphas.to_vec3()?;
        for row in &a[1] {
            assert_eq!(row[2], 0.0, "{kind:?}");
            assert_eq!(row[3], 0.0, "{kind:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // Garbage in the padded positions must not change anything.
        let junk = Tensor::new(&[[0f32, 0., 0., 0.], [0., 0., 1., 1.]], &dev)?
            .unsqueeze(2)?
            .broadcast_mul(&Tensor::full(100f32, (2, 4, 6), &dev)?)?;
        let (ctx2, _) = att.forward(&q, &att.keys(&(&mem + junk)?, &mask)?)?;
        let diff = (ctx - ctx2)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{kind:?}: {diff}");
    }
    Ok(())
}

fn config(cell: CellKind, input_feeding: bool, attention: Option<AttentionKind>) -> DecoderConfig {
    DecoderConfig {
        style: DecoderStyle::Luong,
        cell,
        vocab_size: 11,
        embedding_dim: 5,
        hidden_size: 6,
        num_layers: 2,
        attention,
        attention_dim: 4,
        input_feeding,
        tied_embeddings: false,
        bridge: Bridge::Learned,
        emb_dropout: 0.0,
        word_dropout: 0.0,
        dropout: 0.0,
        hidden_dropout: 0.0,
        memory_dim: 6,
        summary_dim: 6,
    }
}

#[test]
fn teacher_forcing_equals_stepping() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    let summary = mem.mean(1)?;
    let enc = EncoderOutput {
        memory: Some(mem),
        mask: Some(mask),
        final_states: vec![summary],
    };
    for (cell, feed, att) in [
        (CellKind::Gru, false, Some(AttentionKind::Bahdanau)),
        (CellKind::Lstm, true, Some(AttentionKind::Luong)),
        (CellKind::Rnn, false, None),
    ] {
        let vm = SeededVarMap::new(2);
        let dec = decoder(config(cell, feed, att), vm.var_builder(&dev))?;
        check_teacher_forcing(&dec, &enc, &dev, &format!("{cell:?}"))?;
    }
    // One layer with input feeding: the fused input-feeding op (JoeyNMT's RNN decoder, with
    // additive scores), for both gated cells.
    // OpenNMT-py's (Luong `general` scores) too.
    for (cell, att) in [
        (CellKind::Gru, AttentionKind::Bahdanau),
        (CellKind::Lstm, AttentionKind::Bahdanau),
        (CellKind::Lstm, AttentionKind::Luong),
        (CellKind::Gru, AttentionKind::Dot),
    ] {
        let vm = SeededVarMap::new(3);
        let cfg = DecoderConfig {
            num_layers: 1,
            ..config(cell, true, Some(att))
        };
        let dec = decoder(cfg, vm.var_builder(&dev))?;
        check_teacher_forcing(&dec, &enc, &dev, &format!("{cell:?} {att:?} input feeding"))?;
    }
    // The Bahdanau style (attention before the step, deep output) too.
    let vm = SeededVarMap::new(4);
    let cfg = DecoderConfig {
        style: DecoderStyle::Bahdanau,
        ..config(CellKind::Gru, false, Some(AttentionKind::Bahdanau))
    };
    let dec = decoder(cfg, vm.var_builder(&dev))?;
    check_teacher_forcing(&dec, &enc, &dev, "bahdanau")?;
    Ok(())
}

/// The teacher-forced logits of a target prefix equal those of stepping through it.
fn check_teacher_forcing(
    dec: &seq2seq_decoder::Decoder,
    enc: &EncoderOutput,
    dev: &Device,
    what: &str,
) -> Result<()> {
    {
        let tgt = Tensor::new(&[[2u32, 5, 7, 4], [2, 9, 9, 6]], dev)?;
        let state = dec.start(enc, 2, dev)?;
        let mem = dec.prepare(enc)?;
        let (full, _) = dec.forward_teacher(&tgt, &state, &mem, &mut Ctx::eval())?;
        // The readout projected by the output layer gives the same logits (training fuses
        // that projection with its loss).
        let (x, _) = dec.forward_teacher_readout(&tgt, &state, &mem, &mut Ctx::eval())?;
        let (w, b) = dec.output_projection();
        let mut projected = x.broadcast_matmul(&w.t()?)?;
        if let Some(b) = b {
            projected = projected.broadcast_add(b)?;
        }
        let diff = (projected - &full)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{what} readout: {diff}");
        // Stepping with the memory as `step` gets it and as a search prepares it (the output
        // layer's weight transposed).
        for (mem, how) in [
            (mem, "prepare"),
            (dec.prepare_search(enc)?, "prepare_search"),
        ] {
            let mut s = state.clone();
            for t in 0..4 {
                let (logits, next, _) = dec.step(
                    &tgt.narrow(1, t, 1)?.squeeze(1)?,
                    &s,
                    &mem,
                    &mut Ctx::eval(),
                )?;
                let want = full.narrow(1, t, 1)?.squeeze(1)?;
                let diff = (logits - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{what} step {t} after {how}: {diff}");
                s = next;
            }
        }
    }
    Ok(())
}

#[test]
fn greedy_follows_argmax_and_never_emits_pad_or_bos() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    let enc = EncoderOutput {
        memory: Some(mem),
        mask: Some(mask),
        final_states: vec![],
    };
    let vm = SeededVarMap::new(3);
    let dec = decoder(
        config(CellKind::Gru, false, Some(AttentionKind::Bahdanau)),
        vm.var_builder(&dev),
    )?;
    let sp = SpecialTokens {
        pad: 0,
        unk: 1,
        bos: 2,
        eos: 3,
    };
    let opts = DecodingOptions {
        max_length: 7,
        forbid_unk: true,
        ..Default::default()
    };
    let st = DecoderStepper(&dec);
    let out: Vec<Vec<u32>> = search(&st, st.start(&enc, 2, &dev)?, &[2, 2], sp, &opts, &[], &dev)?
        .into_iter()
        .map(|mut h| h.remove(0).tokens)
        .collect();
    // Replay: each emitted token is the argmax over the allowed tokens.
    for (row, hyp) in out.iter().enumerate() {
        let one = enc.index_select(&Tensor::new(&[row as u32], &dev)?)?;
        let mut state = dec.start(&one, 1, &dev)?;
        let m = dec.prepare(&one)?;
        let mut prev = 2u32;
        for &tok in hyp {
            assert!(tok > 3, "special token {tok} emitted");
            let (logits, next, _) =
                dec.step(&Tensor::new(&[prev], &dev)?, &state, &m, &mut Ctx::eval())?;
            let l: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            let best = (3..11).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap();
            assert_eq!(tok as usize, best);
            state = next;
            prev = tok;
        }
        assert!(hyp.len() <= 7);
    }
    Ok(())
}

#[test]
fn final_states_of_the_wrong_size_are_an_error_not_a_panic() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    let enc = EncoderOutput {
        memory: Some(mem.clone()),
        mask: Some(mask),
        final_states: vec![mem.mean(1)?],
    };
    // A learned bridge built without a summary (summary_dim 0) has no bridge layer.
    for (bridge, summary_dim) in [
        (Bridge::Learned, 0),
        (Bridge::Last, 0),
        (Bridge::Learned, 9),
    ] {
        let vm = SeededVarMap::new(3);
        let cfg = DecoderConfig {
            bridge,
            summary_dim,
            ..config(CellKind::Gru, false, Some(AttentionKind::Luong))
        };
        let dec = decoder(cfg, vm.var_builder(&dev))?;
        let Err(e) = dec.start(&enc, 2, &dev) else {
            panic!("{bridge:?}, summary_dim {summary_dim}: started")
        };
        assert!(e.to_string().contains("summary_dim"), "{bridge:?}: {e}");
    }
    Ok(())
}

/// The attention rows of teacher-forcing `tokens` (then eos, when `ended`) one step at a time:
/// what a search's kept attention must equal.
fn rescored_attention(
    dec: &seq2seq_decoder::Decoder,
    enc: &EncoderOutput,
    tokens: &[u32],
    ended: bool,
    dev: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut state = dec.start(enc, 1, dev)?;
    let m = dec.prepare(enc)?;
    let mut rows = Vec::new();
    let mut prev = 2u32;
    let steps = tokens.len() + usize::from(ended);
    for i in 0..steps {
        let (_, next, alphas) =
            dec.step(&Tensor::new(&[prev], dev)?, &state, &m, &mut Ctx::eval())?;
        rows.push(alphas.expect("attends").squeeze(0)?.to_vec1()?);
        state = next;
        prev = tokens.get(i).copied().unwrap_or(3);
    }
    Ok(rows)
}

#[test]
fn every_strategy_keeps_the_attention_of_its_hypotheses() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    let enc = EncoderOutput {
        memory: Some(mem),
        mask: Some(mask),
        final_states: vec![],
    };
    let sp = SpecialTokens {
        pad: 0,
        unk: 1,
        bos: 2,
        eos: 3,
    };
    for style in [DecoderStyle::Luong, DecoderStyle::Bahdanau] {
        let vm = SeededVarMap::new(5);
        let cfg = DecoderConfig {
            style,
            ..config(CellKind::Gru, false, Some(AttentionKind::Bahdanau))
        };
        let dec = decoder(cfg, vm.var_builder(&dev))?;
        let st = DecoderStepper(&dec);
        for strategy in [
            seq2seq_decoder::Strategy::Greedy,
            seq2seq_decoder::Strategy::Sample,
            seq2seq_decoder::Strategy::Beam,
        ] {
            let opts = DecodingOptions {
                strategy,
                max_length: 6,
                beam_size: 3,
                n_best: 2,
                attention: true,
                ..Default::default()
            };
            let hyps = search(
                &st,
                st.start(&enc, 2, &dev)?,
                &[2, 2],
                sp,
                &opts,
                &[7, 8],
                &dev,
            )?;
            for (row, nbest) in hyps.iter().enumerate() {
                let one = enc.index_select(&Tensor::new(&[row as u32], &dev)?)?;
                for h in nbest {
                    let ended = h.tokens.len() < 6;
                    assert_eq!(h.attention.len(), h.tokens.len() + usize::from(ended));
                    for a in &h.attention {
                        // Row 1 has two real positions: the padding gets nothing.
                        let real = if row == 1 { 2 } else { 4 };
                        assert!((a[..real].iter().sum::<f32>() - 1.0).abs() < 1e-5, "{a:?}");
                        assert!(a[real..].iter().all(|&w| w == 0.0), "{a:?}");
                    }
                    // The same weights as teacher-forcing the hypothesis's own tokens (beam
                    // search: through its back-pointers, not the last beam row's history).
                    let want = rescored_attention(&dec, &one, &h.tokens, ended, &dev)?;
                    for (got, want) in h.attention.iter().zip(&want) {
                        for (g, w) in got.iter().zip(&want[..got.len()]) {
                            assert!((g - w).abs() < 1e-5, "{style:?} {strategy:?}: {g} vs {w}");
                        }
                    }
                }
            }
            // Without the option nothing is kept.
            let plain = DecodingOptions {
                attention: false,
                ..opts
            };
            let hyps = search(
                &st,
                st.start(&enc, 2, &dev)?,
                &[2, 2],
                sp,
                &plain,
                &[7, 8],
                &dev,
            )?;
            assert!(hyps.iter().flatten().all(|h| h.attention.is_empty()));
        }
    }
    Ok(())
}

#[test]
fn an_ensembles_attention_is_the_mean_in_the_shared_order() -> Result<()> {
    let dev = Device::Cpu;
    let (mem, mask) = memory(&dev)?;
    let one = EncoderOutput {
        memory: Some(mem.get(0)?.unsqueeze(0)?),
        mask: Some(mask.get(0)?.unsqueeze(0)?),
        final_states: vec![],
    };
    // The second member reads the memory reversed; its order maps it back.
    let reversed = EncoderOutput {
        memory: Some(one.memory.as_ref().unwrap().flip(&[1])?),
        ..one.clone()
    };
    let vm = SeededVarMap::new(9);
    let dec = decoder(
        config(CellKind::Lstm, true, Some(AttentionKind::Luong)),
        vm.var_builder(&dev),
    )?;
    let sp = SpecialTokens {
        pad: 0,
        unk: 1,
        bos: 2,
        eos: 3,
    };
    let opts = DecodingOptions {
        max_length: 4,
        attention: true,
        ..Default::default()
    };
    let st = DecoderStepper(&dec);
    let single = search(&st, st.start(&one, 1, &dev)?, &[2], sp, &opts, &[], &dev)?;
    let mut ens = seq2seq_decoder::Ensemble::new(vec![DecoderStepper(&dec), DecoderStepper(&dec)])?;
    ens.set_attention_order(1, Tensor::new(&[3u32, 2, 1, 0], &dev)?);
    let starts = vec![st.start(&one, 1, &dev)?, st.start(&reversed, 1, &dev)?];
    let both = search(&ens, starts, &[2], sp, &opts, &[], &dev)?;
    let (a, b) = (&single[0][0], &both[0][0]);
    assert!(!a.attention.is_empty());
    assert_eq!(a.attention.len(), b.attention.len());
    // Step one reads identical states in both members: the mean equals the single model's.
    for (x, y) in a.attention[0].iter().zip(&b.attention[0]) {
        assert!(
            (x - y).abs() < 1e-5,
            "{:?} vs {:?}",
            a.attention[0],
            b.attention[0]
        );
    }
    for row in &b.attention {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    Ok(())
}
