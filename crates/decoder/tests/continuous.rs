//! Continuous batching: rows that join a running greedy search at different steps, with
//! memories of different lengths, decode exactly as each does alone.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use seq2seq_decoder::{
    decoder, search, Bridge, Continuous, DecoderConfig, DecoderStepper, DecoderStyle,
    DecodingOptions, EncoderOutput, Hypothesis, SpecialTokens,
};
use seq2seq_nn::{AttentionKind, CellKind, SeededVarMap};

const SP: SpecialTokens = SpecialTokens {
    pad: 0,
    unk: 1,
    bos: 2,
    eos: 3,
};

fn config(style: DecoderStyle, cell: CellKind, att: AttentionKind, feed: bool) -> DecoderConfig {
    DecoderConfig {
        style,
        cell,
        vocab_size: 13,
        embedding_dim: 5,
        hidden_size: 6,
        num_layers: 2,
        attention: Some(att),
        attention_dim: 4,
        input_feeding: feed,
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

/// Source `i`: a memory of `2 + (5 i mod 7)` positions and its summary.
fn source(i: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let len = 2 + (5 * i) % 7;
    let m: Vec<f32> = (0..len * 6)
        .map(|k| ((k * 7 + i * 13) as f32 * 0.37).sin())
        .collect();
    let f: Vec<f32> = (0..6).map(|k| ((k + i) as f32 * 0.9).cos()).collect();
    Ok((
        Tensor::from_vec(m, (len, 6), dev)?,
        Tensor::from_vec(f, 6, dev)?,
    ))
}

/// Sources `rows` padded into one encoder output (junk in the padding).
fn encoded(rows: &[usize], dev: &Device) -> Result<EncoderOutput> {
    let srcs: Vec<(Tensor, Tensor)> = rows
        .iter()
        .map(|&i| source(i, dev))
        .collect::<Result<_>>()?;
    let s = srcs.iter().map(|(m, _)| m.dim(0).unwrap()).max().unwrap();
    let (mut mems, mut masks, mut finals) = (Vec::new(), Vec::new(), Vec::new());
    for (m, f) in &srcs {
        let len = m.dim(0)?;
        let junk = (Tensor::ones((s - len, 6), m.dtype(), dev)? * 50.0)?;
        mems.push(Tensor::cat(&[m, &junk], 0)?);
        let mask: Vec<f32> = (0..s).map(|j| if j < len { 1.0 } else { 0.0 }).collect();
        masks.push(Tensor::from_vec(mask, s, dev)?);
        finals.push(f.clone());
    }
    Ok(EncoderOutput {
        memory: Some(Tensor::stack(&mems, 0)?),
        mask: Some(Tensor::stack(&masks, 0)?),
        final_states: vec![Tensor::stack(&finals, 0)?],
    })
}

#[test]
fn rows_joining_a_running_search_decode_as_they_do_alone() -> Result<()> {
    let dev = Device::Cpu;
    let cases = [
        (
            DecoderStyle::Bahdanau,
            CellKind::Gru,
            AttentionKind::Bahdanau,
            false,
        ),
        (
            DecoderStyle::Luong,
            CellKind::Lstm,
            AttentionKind::Luong,
            true,
        ),
        (
            DecoderStyle::Luong,
            CellKind::Gru,
            AttentionKind::Dot,
            false,
        ),
    ];
    let limits = [
        DecodingOptions {
            max_length: 9,
            ..Default::default()
        },
        DecodingOptions {
            max_length: 6,
            min_length: 3,
            no_repeat_ngram: 2,
            forbid_unk: true,
            ..Default::default()
        },
    ];
    for (style, cell, att, feed) in cases {
        let vm = SeededVarMap::new(5);
        let dec = decoder(config(style, cell, att, feed), vm.var_builder(&dev))?;
        for opts in &limits {
            // Alone: each source its own greedy search.
            let st = DecoderStepper(&dec);
            let alone: Vec<Hypothesis> = (0..7)
                .map(|i| {
                    let enc = encoded(&[i], &dev)?;
                    let mut h = search(
                        &st,
                        st.start(&enc, 1, &dev)?,
                        &[SP.bos],
                        SP,
                        opts,
                        &[0],
                        &dev,
                    )?;
                    Ok(h.remove(0).remove(0))
                })
                .collect::<Result<_>>()?;
            // Continuous: rows join at steps 0, 1, 3 and 4, in groups with padding.
            let mut run = Continuous::new(&dec, SP, opts, &dev)?;
            let joins: [(usize, &[usize]); 4] =
                [(0, &[0, 1]), (1, &[2]), (3, &[3, 4, 5]), (4, &[6])];
            let mut got: HashMap<u64, Hypothesis> = HashMap::new();
            let mut step = 0;
            while got.len() < 7 {
                for (at, rows) in joins {
                    if at == step {
                        let ids: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
                        run.admit(&encoded(rows, &dev)?, &ids)?;
                    }
                }
                for (id, h) in run.step()? {
                    assert!(got.insert(id, h).is_none(), "row {id} ended twice");
                }
                step += 1;
                assert!(step < 100, "the search does not end");
            }
            assert!(run.is_empty());
            for (i, want) in alone.iter().enumerate() {
                let h = &got[&(i as u64)];
                assert_eq!(h.tokens, want.tokens, "{style:?} {cell:?} {att:?}: row {i}");
                assert!(
                    (h.log_prob - want.log_prob).abs() < 1e-4,
                    "{style:?} {cell:?} {att:?}: row {i}: {} vs {}",
                    h.log_prob,
                    want.log_prob
                );
                assert_eq!(h.score, h.log_prob);
            }
        }
    }
    Ok(())
}
