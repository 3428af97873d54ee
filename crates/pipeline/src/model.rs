//! The model assembled from the config in one place ([`build_model`]).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use seq2seq_data::Batch;
use seq2seq_decoder::{decoder, Bridge, Decoder, DecoderConfig, DecoderStyle, EncoderOutput};
use seq2seq_nn::{loss::TokenLoss, masked_cross_entropy, AttentionKind, CellKind, Ctx};
use seq2seq_text_encoder::{text_encoder, TextEncoder, TextEncoderConfig};

use crate::config::{AttentionType, BridgeType, Cell, ModelConfig, Style, Task};
use crate::Result;

/// A text encoder feeding the shared decoder, or the decoder alone (a language model).
pub struct Seq2Seq {
    pub encoder: Option<TextEncoder>,
    pub decoder: Decoder,
}

fn cell(c: Cell) -> CellKind {
    match c {
        Cell::Gru => CellKind::Gru,
        Cell::Lstm => CellKind::Lstm,
        Cell::Rnn => CellKind::Rnn,
    }
}

/// Builds the model of a task; parameters are named `encoder.*` and `decoder.*`. A generation
/// model has no encoder: its decoder attends to nothing and starts from zeros.
pub fn build_model(
    cfg: &ModelConfig,
    task: Task,
    src_vocab: usize,
    tgt_vocab: usize,
    vb: VarBuilder,
) -> Result<Seq2Seq> {
    let e = &cfg.encoder;
    let enc_cfg = TextEncoderConfig {
        cell: cell(e.cell),
        vocab_size: src_vocab,
        embedding_dim: e.embedding_dim,
        hidden_size: e.hidden_size,
        num_layers: e.num_layers,
        bidirectional: e.bidirectional,
        emb_dropout: e.emb_dropout,
        dropout: e.dropout,
    };
    let d = &cfg.decoder;
    let dec_cfg = DecoderConfig {
        cell: cell(d.cell),
        vocab_size: tgt_vocab,
        embedding_dim: d.embedding_dim,
        hidden_size: d.hidden_size,
        num_layers: d.num_layers,
        attention: match d.attention {
            AttentionType::Bahdanau => Some(AttentionKind::Bahdanau),
            AttentionType::Luong => Some(AttentionKind::Luong),
            AttentionType::Dot => Some(AttentionKind::Dot),
            AttentionType::None => None,
        },
        attention_dim: d.attention_dim,
        input_feeding: d.input_feeding,
        style: match d.style {
            Style::Luong => DecoderStyle::Luong,
            Style::Bahdanau => DecoderStyle::Bahdanau,
        },
        tied_embeddings: d.tied_embeddings,
        bridge: match d.bridge {
            BridgeType::Zero => Bridge::Zero,
            BridgeType::Last => Bridge::Last,
            BridgeType::Learned => Bridge::Learned,
        },
        emb_dropout: d.emb_dropout,
        dropout: d.dropout,
        hidden_dropout: d.hidden_dropout,
        memory_dim: enc_cfg.output_size(),
        summary_dim: enc_cfg.output_size(),
    };
    if task == Task::Generation {
        let dec_cfg = DecoderConfig {
            memory_dim: 0,
            summary_dim: 0,
            attention: None,
            ..dec_cfg
        };
        return Ok(Seq2Seq {
            encoder: None,
            decoder: decoder(dec_cfg, vb.pp("decoder"))?,
        });
    }
    Ok(Seq2Seq {
        encoder: Some(text_encoder(enc_cfg, vb.pp("encoder"))?),
        decoder: decoder(dec_cfg, vb.pp("decoder"))?,
    })
}

/// A batch as tensors.
pub struct BatchTensors {
    pub src: Tensor,
    pub src_mask: Tensor,
    pub tgt_in: Tensor,
    pub tgt_out: Tensor,
    pub tgt_mask: Tensor,
}

impl BatchTensors {
    pub fn new(b: &Batch, dev: &Device) -> Result<Self> {
        Ok(Self {
            src: Tensor::from_slice(&b.src, (b.size, b.src_len), dev)?,
            src_mask: Tensor::from_slice(&b.src_mask, (b.size, b.src_len), dev)?,
            tgt_in: Tensor::from_slice(&b.tgt_in, (b.size, b.tgt_len), dev)?,
            tgt_out: Tensor::from_slice(&b.tgt_out, b.size * b.tgt_len, dev)?,
            tgt_mask: Tensor::from_slice(&b.tgt_mask, b.size * b.tgt_len, dev)?,
        })
    }
}

impl Seq2Seq {
    pub fn encode(&self, src: &Tensor, src_mask: &Tensor, ctx: &mut Ctx) -> Result<EncoderOutput> {
        match &self.encoder {
            Some(e) => Ok(e.forward(src, src_mask, ctx)?),
            None => Ok(EncoderOutput::empty()),
        }
    }

    /// Teacher-forced loss of a batch; the output projection and the loss run over all target
    /// positions in one matmul.
    pub fn loss(&self, b: &BatchTensors, label_smoothing: f64, ctx: &mut Ctx) -> Result<TokenLoss> {
        let enc = self.encode(&b.src, &b.src_mask, ctx)?;
        let (batch, _) = b.src.dims2()?;
        let state = self.decoder.start(&enc, batch, b.src.device())?;
        let mem = self.decoder.prepare(&enc)?;
        let (logits, _) = self.decoder.forward_teacher(&b.tgt_in, &state, &mem, ctx)?;
        let v = logits.dim(2)?;
        let logits = logits.reshape(((), v))?;
        Ok(masked_cross_entropy(
            &logits,
            &b.tgt_out,
            &b.tgt_mask,
            label_smoothing,
        )?)
    }
}
