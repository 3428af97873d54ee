//! The text encoder: embedding (+ dropout) → stacked (bi)RNN → memory + final states, delivered
//! through the decoder's [`EncoderOutput`] contract.

use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Init, Module, VarBuilder};
use seq2seq_decoder::EncoderOutput;
use seq2seq_nn::{rnn, CellKind, Ctx, Rnn, RnnConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct TextEncoderConfig {
    pub cell: CellKind,
    pub vocab_size: usize,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub emb_dropout: f32,
    /// Probability of dropping a source token's whole embedding in training.
    pub word_dropout: f32,
    pub dropout: f32,
}

impl TextEncoderConfig {
    /// Size C of the memory and F of each final state (both directions concatenated).
    pub fn output_size(&self) -> usize {
        self.hidden_size * if self.bidirectional { 2 } else { 1 }
    }
}

#[derive(Clone, Debug)]
pub struct TextEncoder {
    cfg: TextEncoderConfig,
    embed: Embedding,
    rnn: Rnn,
}

/// Parameters: `embed.weight`, `rnn.weight_ih_l0`, `rnn.weight_ih_l0_reverse`, …
pub fn text_encoder(cfg: TextEncoderConfig, vb: VarBuilder) -> Result<TextEncoder> {
    let w = vb.pp("embed").get_with_hints(
        (cfg.vocab_size, cfg.embedding_dim),
        "weight",
        Init::Uniform { lo: -0.1, up: 0.1 },
    )?;
    let rnn = rnn(
        RnnConfig {
            kind: cfg.cell,
            input_size: cfg.embedding_dim,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            bidirectional: cfg.bidirectional,
            dropout: cfg.dropout,
        },
        vb.pp("rnn"),
    )?;
    Ok(TextEncoder {
        embed: Embedding::new(w, cfg.embedding_dim),
        cfg,
        rnn,
    })
}

impl TextEncoder {
    pub fn config(&self) -> &TextEncoderConfig {
        &self.cfg
    }

    /// `src` (B, S) token ids, `mask` (B, S) with 1 for real tokens (right-padded).
    pub fn forward(&self, src: &Tensor, mask: &Tensor, ctx: &mut Ctx) -> Result<EncoderOutput> {
        let e = ctx.word_dropout(&self.embed.forward(src)?, self.cfg.word_dropout)?;
        let e = ctx.dropout(&e, self.cfg.emb_dropout)?;
        let (memory, finals) = self.rnn.forward(&e, Some(mask), None, ctx)?;
        let dirs = if self.cfg.bidirectional { 2 } else { 1 };
        // One summary per layer: the forward direction's state after the last real token and the
        // backward direction's state after the first, concatenated.
        let final_states = finals
            .chunks(dirs)
            .map(|c| {
                let hs: Vec<&Tensor> = c.iter().map(|s| &s.h).collect();
                Tensor::cat(&hs, 1)
            })
            .collect::<Result<_>>()?;
        Ok(EncoderOutput {
            memory: Some(memory),
            mask: Some(mask.clone()),
            final_states,
        })
    }
}
