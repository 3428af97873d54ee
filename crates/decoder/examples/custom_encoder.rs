//! Plugging an encoder of your own into the shared decoder, and decoding with every strategy.
//!
//! Run with `cargo run --release -p seq2seq-decoder --example custom_encoder`.
//!
//! The decoder only ever sees an [`EncoderOutput`]: a memory `(B, S, C)` to attend over, its mask
//! `(B, S)`, and summary vectors for the initial state. Here the "encoder" is a fixed random
//! projection of a bag of features (think: sensor readings, a CNN grid, an audio frame sequence);
//! with `EncoderOutput::empty()` the same decoder is a language model.

use candle_core::{Device, Result, Tensor};
use seq2seq_decoder::{
    decoder, search, Bridge, DecoderConfig, DecoderStepper, DecoderStyle, DecodingOptions,
    EncoderOutput, SpecialTokens, Strategy,
};
use seq2seq_nn::{AttentionKind, CellKind, SeededVarMap};

/// Your encoder: anything that produces the contract.
fn my_encoder(batch: usize, dev: &Device) -> Result<EncoderOutput> {
    let memory = Tensor::randn(0f32, 1., (batch, 6, 32), dev)?; // 6 positions of 32 features
    let mask = Tensor::ones((batch, 6), candle_core::DType::F32, dev)?;
    let summary = memory.mean(1)?; // (B, 32): one final state for the bridge
    Ok(EncoderOutput {
        memory: Some(memory),
        mask: Some(mask),
        final_states: vec![summary],
    })
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = DecoderConfig {
        cell: CellKind::Gru,
        vocab_size: 20,
        embedding_dim: 16,
        hidden_size: 32,
        num_layers: 1,
        attention: Some(AttentionKind::Bahdanau),
        attention_dim: 16,
        input_feeding: false,
        style: DecoderStyle::Luong,
        tied_embeddings: false,
        bridge: Bridge::Learned,
        emb_dropout: 0.0,
        word_dropout: 0.0,
        dropout: 0.0,
        hidden_dropout: 0.0,
        memory_dim: 32,  // C of the memory
        summary_dim: 32, // size of each final state
    };
    // Untrained weights: train them with your own loop (forward_teacher + a loss), or load a
    // checkpoint with candle_nn::VarBuilder::from_mmaped_safetensors.
    let params = SeededVarMap::new(0);
    let dec = decoder(cfg, params.var_builder(&dev))?;
    let sp = SpecialTokens {
        pad: 0,
        unk: 1,
        bos: 2,
        eos: 3,
    };
    let enc = my_encoder(2, &dev)?;
    let stepper = DecoderStepper(&dec);
    for (name, opts) in [
        (
            "greedy",
            DecodingOptions {
                max_length: 8,
                ..Default::default()
            },
        ),
        (
            "sample T=0.8 top-p 0.9",
            DecodingOptions {
                strategy: Strategy::Sample,
                temperature: 0.8,
                top_p: 0.9,
                max_length: 8,
                ..Default::default()
            },
        ),
        (
            "beam 4, 2-best",
            DecodingOptions {
                strategy: Strategy::Beam,
                beam_size: 4,
                n_best: 2,
                max_length: 8,
                ..Default::default()
            },
        ),
    ] {
        let start = stepper.start(&enc, 2, &dev)?;
        let hyps = search(&stepper, start, &[sp.bos, sp.bos], sp, &opts, &[7, 8], &dev)?;
        for (i, nbest) in hyps.iter().enumerate() {
            for h in nbest {
                println!(
                    "{name:>24} | input {i} | score {:7.3} | tokens {:?}",
                    h.score, h.tokens
                );
            }
        }
    }
    Ok(())
}
