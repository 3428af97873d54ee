//! The model assembled from the config in one place ([`build_model`]).

use candle_core::{Device, Tensor};
use candle_nn::{Module, VarBuilder};
use seq2seq_data::Batch;
use seq2seq_decoder::{
    decoder_sharing, Bridge, Decoder, DecoderConfig, DecoderStyle, EncoderOutput,
};
use seq2seq_image_encoder::{BackboneKind, ImageEncoder};
use seq2seq_nn::{
    doubly_stochastic_penalty, loss::TokenLoss, projection_cross_entropy, AttentionKind, CellKind,
    Ctx,
};
use seq2seq_text_encoder::{text_encoder, TextEncoder, TextEncoderConfig};

use crate::config::{
    AttentionType, BridgeType, Cell, DecoderSection, EncoderSection, ImageEncoderSection,
    ModelConfig, Style, Task,
};
use crate::Result;

mod scheduled;
pub use scheduled::Sampling;

/// What a training loss adds to plain teacher forcing (all off by default: the held-out loss).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossTerms {
    pub label_smoothing: f64,
    /// λ of the doubly stochastic attention penalty (0 = off).
    pub attention_reg: f64,
    /// Scheduled sampling's share of predicted inputs this update (None or rate 0 = off).
    pub sampling: Option<Sampling>,
}

/// A tiny translation config for unit tests: embeddings of 8, encoder 8, decoder 16, attention 8,
/// dropout off, gradients unclipped.
#[cfg(test)]
pub(crate) fn tiny_config(seed: u64) -> crate::config::Config {
    let mut cfg =
        crate::config::Config::from_yaml(&format!("seed: {seed}\ndata:\n  format: dates\n"))
            .unwrap();
    cfg.model.encoder.embedding_dim = 8;
    cfg.model.encoder.hidden_size = 8;
    cfg.model.decoder.embedding_dim = 8;
    cfg.model.decoder.hidden_size = 16;
    cfg.model.decoder.attention_dim = 8;
    cfg.train.clip_grad_norm = 0.0;
    cfg
}

/// What feeds the shared decoder.
pub enum Encoder {
    /// Nothing: a language model.
    None,
    Text(TextEncoder),
    Image(ImageEncoder),
}

impl Encoder {
    /// For error messages: "no", "a text" or "an image" (encoder).
    pub fn kind(&self) -> &'static str {
        match self {
            Encoder::None => "no",
            Encoder::Text(_) => "a text",
            Encoder::Image(_) => "an image",
        }
    }
}

/// An encoder feeding the shared decoder, or the decoder alone (a language model).
pub struct Seq2Seq {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

/// The encoder's input for one batch.
pub enum Source {
    /// Token ids `(B, S)` and their mask.
    Text { ids: Tensor, mask: Tensor },
    /// The input of the image encoder's trainable part for each distinct image: pixels
    /// `(N, 3, S, S)`, or the frozen backbone's (cached) output. With `rows`, batch row `i` is
    /// image `rows[i]` (the captions of one image share one pass through the CNN).
    Image { input: Tensor, rows: Option<Tensor> },
    /// No encoder input (a language model).
    None,
}

impl Source {
    /// For error messages: "text", "image" or "empty" (input).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Text { .. } => "text",
            Source::Image { .. } => "image",
            Source::None => "empty",
        }
    }
}

/// The recurrence of a configured cell.
pub(crate) fn cell_kind(c: Cell) -> CellKind {
    match c {
        Cell::Gru => CellKind::Gru,
        Cell::Lstm => CellKind::Lstm,
        Cell::Rnn => CellKind::Rnn,
    }
}

/// Builds the model of a task; parameters are named `encoder.*` and `decoder.*`. A generation
/// model has no encoder: its decoder attends to nothing and starts from zeros. A captioning
/// model with the Lite0 backbone reads the backbone's frozen layers from `backbone` when given
/// (the ImageNet checkpoint, in training) and from `encoder.backbone.*` otherwise.
pub fn build_model(
    cfg: &ModelConfig,
    task: Task,
    src_vocab: usize,
    tgt_vocab: usize,
    vb: VarBuilder,
    backbone: Option<VarBuilder>,
) -> Result<Seq2Seq> {
    let dec_cfg = decoder_config(&cfg.decoder, tgt_vocab);
    let (encoder, dec_cfg) = match task {
        Task::Translation => {
            let enc_cfg = text_encoder_config(&cfg.encoder, src_vocab);
            let dim = enc_cfg.output_size();
            let encoder = Encoder::Text(text_encoder(enc_cfg, vb.pp("encoder"))?);
            (encoder, with_memory(dec_cfg, dim))
        }
        Task::Captioning => {
            let encoder = image_encoder(&cfg.image_encoder, &vb, backbone)?;
            let dim = encoder.output_channels();
            (Encoder::Image(encoder), with_memory(dec_cfg, dim))
        }
        Task::Generation => {
            let dec_cfg = DecoderConfig {
                attention: None,
                ..with_memory(dec_cfg, 0)
            };
            (Encoder::None, dec_cfg)
        }
    };
    // Shared source and target embeddings: the encoder's matrix, which alone is saved.
    let shared = match (&encoder, cfg.tied_source_target) {
        (Encoder::Text(_), true) => Some(
            vb.pp("encoder")
                .pp("embed")
                .get((src_vocab, cfg.encoder.embedding_dim), "weight")?,
        ),
        _ => None,
    };
    Ok(Seq2Seq {
        encoder,
        decoder: decoder_sharing(dec_cfg, vb.pp("decoder"), shared)?,
    })
}

/// The decoder reads a memory (and its summary, for the bridge) of the encoder's width.
fn with_memory(d: DecoderConfig, dim: usize) -> DecoderConfig {
    DecoderConfig {
        memory_dim: dim,
        summary_dim: dim,
        ..d
    }
}

fn text_encoder_config(e: &EncoderSection, src_vocab: usize) -> TextEncoderConfig {
    TextEncoderConfig {
        cell: cell_kind(e.cell),
        vocab_size: src_vocab,
        embedding_dim: e.embedding_dim,
        hidden_size: e.hidden_size,
        num_layers: e.num_layers,
        bidirectional: e.bidirectional,
        emb_dropout: e.emb_dropout,
        word_dropout: e.word_dropout,
        dropout: e.dropout,
    }
}

/// The decoder of a config section; its memory width is set by [`with_memory`].
fn decoder_config(d: &DecoderSection, tgt_vocab: usize) -> DecoderConfig {
    DecoderConfig {
        cell: cell_kind(d.cell),
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
        word_dropout: d.word_dropout,
        dropout: d.dropout,
        hidden_dropout: d.hidden_dropout,
        memory_dim: 0,
        summary_dim: 0,
    }
}

fn image_encoder(
    ie: &ImageEncoderSection,
    vb: &VarBuilder,
    backbone: Option<VarBuilder>,
) -> Result<ImageEncoder> {
    Ok(match ie.backbone {
        BackboneKind::SmallCnn => ImageEncoder::small_cnn(ie.cnn.clone(), vb.pp("encoder.cnn"))?,
        BackboneKind::Lite0 => {
            let trainable = vb.pp("encoder.backbone");
            let frozen = backbone.unwrap_or_else(|| trainable.clone());
            ImageEncoder::lite0(frozen, trainable, ie.fine_tune_blocks, ie.dropout)?
        }
    })
}

/// A teacher-forced pass's attention weights (B, T, S) and the memory's mask (B, S; `None` for
/// an image grid, whose positions are all real).
type Attending = (Tensor, Option<Tensor>);

/// A batch as tensors.
pub struct BatchTensors {
    pub src: Source,
    pub tgt_in: Tensor,
    pub tgt_out: Tensor,
    pub tgt_mask: Tensor,
}

impl BatchTensors {
    /// A text batch (its source ids are the encoder input).
    pub fn new(b: &Batch, dev: &Device) -> Result<Self> {
        let src = Source::Text {
            ids: Tensor::from_slice(&b.src, (b.size, b.src_len), dev)?,
            mask: Tensor::from_slice(&b.src_mask, (b.size, b.src_len), dev)?,
        };
        Self::with_source(b, src, dev)
    }

    /// A batch whose encoder input is given (images).
    pub fn with_source(b: &Batch, src: Source, dev: &Device) -> Result<Self> {
        Ok(Self {
            src,
            tgt_in: Tensor::from_slice(&b.tgt_in, (b.size, b.tgt_len), dev)?,
            tgt_out: Tensor::from_slice(&b.tgt_out, b.size * b.tgt_len, dev)?,
            tgt_mask: Tensor::from_slice(&b.tgt_mask, b.size * b.tgt_len, dev)?,
        })
    }
}

impl Source {
    /// Images, one per batch row.
    pub fn image(input: Tensor) -> Self {
        Self::Image { input, rows: None }
    }

    /// The images of batch rows `images` (an image index per row): `fetch` gets each distinct
    /// image once, and rows of the same image share its encoder pass.
    pub fn images(
        images: &[usize],
        fetch: impl FnOnce(&[usize]) -> Result<Tensor>,
        dev: &Device,
    ) -> Result<Self> {
        let mut distinct: Vec<usize> = Vec::new();
        let mut slot = std::collections::HashMap::new();
        let rows: Vec<u32> = images
            .iter()
            .map(|&img| {
                *slot.entry(img).or_insert_with(|| {
                    distinct.push(img);
                    distinct.len() as u32 - 1
                })
            })
            .collect();
        let input = fetch(&distinct)?;
        let rows = (distinct.len() < rows.len())
            .then(|| Tensor::new(rows.as_slice(), dev))
            .transpose()?;
        Ok(Self::Image { input, rows })
    }
}

/// Loss per target token over `examples` (teacher-forced, eval mode, no smoothing), in
/// length-bucketed batches whose tensors `tensors` builds. With several `models` it is the loss of
/// their ensemble: of the mean of their next-token distributions, as ensemble decoding searches it.
pub fn held_out_loss(
    models: &[&Seq2Seq],
    examples: &[seq2seq_data::Example],
    batch_size: seq2seq_data::BatchSize,
    vocab: &seq2seq_data::Vocab,
    mut tensors: impl FnMut(&Batch) -> Result<BatchTensors>,
) -> Result<f64> {
    let (mut nll, mut tokens) = (0.0, 0.0);
    for idx in seq2seq_data::batches(examples, batch_size, 0, 0, false) {
        let b = Batch::new(examples, &idx, vocab.pad, vocab.bos, vocab.eos);
        let t = tensors(&b)?;
        if let [m] = models {
            let l = m.loss(&t, LossTerms::default(), &mut Ctx::eval())?;
            nll += l.nll_sum;
            tokens += l.tokens;
            continue;
        }
        let mut log_probs = Vec::with_capacity(models.len());
        for m in models {
            log_probs.push(m.target_log_probs(&t)?);
        }
        // log((1/K) Σ_k p_k(y)) per target position, then the masked sum.
        let k = models.len() as f64;
        let mixture = (Tensor::stack(&log_probs, 0)?.log_sum_exp(0)? - k.ln())?;
        nll -= (mixture * &t.tgt_mask)?.sum_all()?.to_scalar::<f32>()? as f64;
        tokens += t.tgt_mask.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(nll / tokens.max(1.0))
}

impl Seq2Seq {
    pub fn encode(&self, src: &Source, ctx: &mut Ctx) -> Result<EncoderOutput> {
        let (out, rows) = self.encode_distinct(src, ctx)?;
        Ok(match rows {
            Some(r) => out.index_select(r)?,
            None => out,
        })
    }

    /// The encoder output per distinct input, and which one each batch row uses (images whose
    /// captions share a batch are encoded once).
    fn encode_distinct<'a>(
        &self,
        src: &'a Source,
        ctx: &mut Ctx,
    ) -> Result<(EncoderOutput, Option<&'a Tensor>)> {
        Ok(match (&self.encoder, src) {
            (Encoder::Text(e), Source::Text { ids, mask }) => (e.forward(ids, mask, ctx)?, None),
            (Encoder::Image(e), Source::Image { input, rows }) => {
                (e.trainable(input, ctx)?, rows.as_ref())
            }
            (Encoder::None, _) => (EncoderOutput::empty(), None),
            (e, s) => {
                return Err(crate::Error::SourceMismatch {
                    want: e.kind(),
                    got: s.kind(),
                })
            }
        })
    }

    /// Teacher-forced loss of a batch; the output projection and the loss run over all target
    /// positions at once, as one fused op on the CPU (`nn::projection_cross_entropy`).
    ///
    /// `terms.attention_reg` > 0 adds λ times the doubly stochastic attention penalty
    /// (`nn::doubly_stochastic_penalty`) to the back-propagated loss; `nll_sum` stays the data's
    /// alone, so perplexities do not move with λ. `terms.sampling` feeds the decoder a share of
    /// its own predictions (scheduled sampling) instead of the reference's previous tokens.
    pub fn loss(&self, b: &BatchTensors, terms: LossTerms, ctx: &mut Ctx) -> Result<TokenLoss> {
        let reg = terms.attention_reg;
        let (x, attention) = self.readout_attending(b, reg > 0.0, terms.sampling, ctx)?;
        let (weight, bias) = self.decoder.output_projection();
        let smoothing = terms.label_smoothing;
        let train = ctx.is_train();
        let (targets, mask) = (&b.tgt_out, &b.tgt_mask);
        let mut l = projection_cross_entropy(&x, weight, bias, targets, mask, smoothing, train)?;
        if let Some((alphas, mem_mask)) = attention {
            let tgt_mask = b.tgt_mask.reshape(b.tgt_in.dims2()?)?;
            let p = doubly_stochastic_penalty(&alphas, &tgt_mask, mem_mask.as_ref())?;
            l.loss = (l.loss + (p * reg)?)?;
        }
        Ok(l)
    }

    /// `log p(y_t | y_<t, x)` of every target position (flattened like `tgt_out`; padding
    /// included), teacher-forced in eval mode.
    pub fn target_log_probs(&self, b: &BatchTensors) -> Result<Tensor> {
        let x = self.readout(b, &mut Ctx::eval())?;
        let (weight, bias) = self.decoder.output_projection();
        let logits = candle_nn::Linear::new(weight.clone(), bias.cloned()).forward(&x)?;
        Ok(
            candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?
                .gather(&b.tgt_out.unsqueeze(1)?, 1)?
                .squeeze(1)?,
        )
    }

    /// The decoder's readout vectors (the output projection's input), one row per target position.
    fn readout(&self, b: &BatchTensors, ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.readout_attending(b, false, None, ctx)?.0)
    }

    /// [`Self::readout`] and, when `with_alphas` and the decoder attends, its [`Attending`];
    /// with `sampling`, over inputs partly replaced by the model's predictions.
    fn readout_attending(
        &self,
        b: &BatchTensors,
        with_alphas: bool,
        sampling: Option<Sampling>,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Attending>)> {
        let (enc, rows) = self.encode_distinct(&b.src, ctx)?;
        let (batch, _) = b.tgt_in.dims2()?;
        // Attention keys are computed once per distinct input, then shared by its rows.
        let (state, mem) = match rows {
            Some(r) => (
                self.decoder
                    .start(&enc.index_select(r)?, batch, b.tgt_in.device())?,
                self.decoder.prepare(&enc)?.index_select(r)?,
            ),
            None => (
                self.decoder.start(&enc, batch, b.tgt_in.device())?,
                self.decoder.prepare(&enc)?,
            ),
        };
        let tgt_in = match sampling {
            Some(s) if s.rate > 0.0 => {
                self.sampled_inputs(&b.tgt_in, &b.tgt_mask, (&state, &mem), s, ctx)?
            }
            _ => b.tgt_in.clone(),
        };
        let d = &self.decoder;
        let (x, alphas) = if with_alphas {
            let (x, _, alphas) = d.forward_teacher_attending(&tgt_in, &state, &mem, ctx)?;
            (x, alphas)
        } else {
            (
                d.forward_teacher_readout(&tgt_in, &state, &mem, ctx)?.0,
                None,
            )
        };
        let attending = match alphas {
            Some(alphas) => {
                let mem_mask = match (&enc.mask, rows) {
                    (Some(m), Some(r)) => Some(m.index_select(r, 0)?),
                    (m, _) => m.clone(),
                };
                Some((alphas, mem_mask))
            }
            None => None,
        };
        let d = x.dim(2)?;
        Ok((x.reshape(((), d))?, attending))
    }
}
