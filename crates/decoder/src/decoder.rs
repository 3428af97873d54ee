//! The recurrent decoder (Luong-style attentional decoder with optional input feeding).
//!
//! One step, in the order of the math:
//! ```text
//! e_t   = dropout(embed(y_{t-1}))
//! x_t   = [e_t ; ã_{t-1}]            (input feeding, else e_t)
//! h_t   = RNN-stack(x_t, h_{t-1})
//! c_t   = attention(h_t, memory)       (skipped without attention)
//! ã_t   = tanh(W_c [h_t ; c_t])        (ã_t = h_t without attention)
//! p_t   = softmax(W_o dropout(ã_t))    (W_o tied to the embedding optionally)
//! ```

use std::sync::Arc;

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Embedding, Init, Linear, Module, VarBuilder};
use seq2seq_nn::attentive::{attentive_readout, attentive_supported};
use seq2seq_nn::feeding::{feeding_sequence, feeding_supported, AttentionalLayer};
use seq2seq_nn::project::project_transposed;
use seq2seq_nn::{
    attention, rnn, Attention, AttentionKeys, AttentionKind, CellKind, CellState, Ctx, Rnn,
    RnnConfig,
};

use crate::EncoderOutput;

/// How the decoder's initial state is made from the encoder's final states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    /// Start from zeros.
    Zero,
    /// Copy the encoder's final state (its size must equal the decoder's hidden size).
    Last,
    /// `tanh(W f + b)` of the encoder's top final state.
    Learned,
}

/// Where attention sits in the step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecoderStyle {
    /// Luong et al.: the RNN runs first, its output queries the memory, and the attentional
    /// vector `tanh(W_c [h; c])` feeds the output layer (optionally fed back: input feeding).
    #[default]
    Luong,
    /// Bahdanau et al.: the previous state queries the memory, the context joins the embedding
    /// as RNN input, and the output layer reads `[h; c; e]` ("deep output", as the PyTorch
    /// tutorial and the benchmark peer do).
    Bahdanau,
}

/// Everything the decoder needs to know; nothing here names an encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub cell: CellKind,
    pub vocab_size: usize,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub attention: Option<AttentionKind>,
    pub attention_dim: usize,
    pub input_feeding: bool,
    pub style: DecoderStyle,
    pub tied_embeddings: bool,
    pub bridge: Bridge,
    /// Dropout on the target embeddings.
    pub emb_dropout: f32,
    /// Probability of dropping a target input token's whole embedding in training.
    pub word_dropout: f32,
    /// Dropout between stacked recurrent layers.
    pub dropout: f32,
    /// Dropout on the attentional vector before the output projection.
    pub hidden_dropout: f32,
    /// Size C of the memory (B, S, C) it will attend over; 0 when there is none.
    pub memory_dim: usize,
    /// Size F of the encoder's final-state vectors; 0 when there are none.
    pub summary_dim: usize,
}

/// The decoder's recurrent state between steps.
#[derive(Clone, Debug)]
pub struct DecoderState {
    /// One state per recurrent layer.
    pub layers: Vec<CellState>,
    /// The previous attentional vector ã_{t-1} (B, H) for input feeding.
    pub prev_att: Option<Tensor>,
}

impl DecoderState {
    /// The batches of `parts` one after the other.
    pub fn cat(parts: &[&DecoderState]) -> Result<Self> {
        let cat = |f: &dyn Fn(&DecoderState) -> Option<Tensor>| -> Result<Option<Tensor>> {
            let ts: Option<Vec<Tensor>> = parts.iter().map(|p| f(p)).collect();
            ts.map(|ts| Tensor::cat(&ts, 0)).transpose()
        };
        let layers = (0..parts.first().map_or(0, |p| p.layers.len()))
            .map(|l| {
                Ok(CellState {
                    h: cat(&|p| Some(p.layers[l].h.clone()))?.expect("every part has h"),
                    c: cat(&|p| p.layers[l].c.clone())?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            prev_att: cat(&|p| p.prev_att.clone())?,
        })
    }

    /// Keeps (or repeats) the given batch rows.
    pub fn index_select(&self, rows: &Tensor) -> Result<Self> {
        Ok(Self {
            layers: self
                .layers
                .iter()
                .map(|s| {
                    Ok(CellState {
                        h: s.h.index_select(rows, 0)?,
                        c: s.c.as_ref().map(|c| c.index_select(rows, 0)).transpose()?,
                    })
                })
                .collect::<Result<_>>()?,
            prev_att: self
                .prev_att
                .as_ref()
                .map(|a| a.index_select(rows, 0))
                .transpose()?,
        })
    }
}

/// The memory with its attention keys precomputed once per batch, and for a search on the CPU
/// the output layer's weight transposed.
#[derive(Clone, Debug)]
pub struct PreparedMemory {
    keys: Option<AttentionKeys>,
    /// A search's step weights transposed (CPU, f32): see [`SearchWeights`].
    search: Option<Arc<SearchWeights>>,
}

/// The weights of a decoding step transposed, `Wᵀ` contiguous, made once per search: with them
/// a step's products `x Wᵀ` (few rows: the batch or the beams) go through
/// `nn::project::project_transposed`, which gemm computes reading the weight in place instead of
/// packing the few rows of `x` again for every block of columns (docs/results.md, "The
/// input-feeding decoder").
#[derive(Debug)]
struct SearchWeights {
    /// The output layer's `W_oᵀ` `(D, V)`.
    readout: Tensor,
    /// `(W_ihᵀ, W_hhᵀ)` per recurrent layer.
    cells: Vec<(Tensor, Tensor)>,
    /// The attentional layer's `W_cᵀ` (Luong style with attention).
    att_vector: Option<Tensor>,
}

impl PreparedMemory {
    pub fn index_select(&self, rows: &Tensor) -> Result<Self> {
        Ok(Self {
            keys: self
                .keys
                .as_ref()
                .map(|k| k.index_select(rows))
                .transpose()?,
            search: self.search.clone(),
        })
    }

    /// The batches of `parts` one after the other, memories padded to the longest (see
    /// `AttentionKeys::cat`); the first part's search weights serve all.
    pub fn cat(parts: &[&PreparedMemory]) -> Result<Self> {
        let keys: Option<Vec<&AttentionKeys>> = parts.iter().map(|p| p.keys.as_ref()).collect();
        Ok(Self {
            keys: keys.map(|k| AttentionKeys::cat(&k)).transpose()?,
            search: parts.iter().find_map(|p| p.search.clone()),
        })
    }

    /// Memory positions (0 without attention).
    pub fn memory_len(&self) -> Result<usize> {
        self.keys.as_ref().map_or(Ok(0), |k| k.len())
    }

    /// The first `len` memory positions.
    pub fn narrow(&self, len: usize) -> Result<Self> {
        Ok(Self {
            keys: self.keys.as_ref().map(|k| k.narrow(len)).transpose()?,
            search: self.search.clone(),
        })
    }

    /// These keys with the search weights of `other` (made once for a whole search).
    pub(crate) fn with_search_of(mut self, other: &PreparedMemory) -> Self {
        self.search = other.search.clone();
        self
    }
}

#[derive(Clone, Debug)]
pub struct Decoder {
    cfg: DecoderConfig,
    /// Bahdanau style with a memory to attend to.
    bahdanau: bool,
    /// Size of the vector the output layer reads.
    out_dim: usize,
    embed: Embedding,
    rnn: Rnn,
    attention: Option<Attention>,
    att_vector_layer: Option<Linear>,
    bridge_layer: Option<Linear>,
    output_layer: Linear,
}

/// The combinations of options that cannot be built, named.
fn check(cfg: &DecoderConfig, bahdanau: bool) -> Result<()> {
    if cfg.tied_embeddings && cfg.embedding_dim != cfg.hidden_size {
        candle_core::bail!(
            "tied embeddings need embedding_dim ({}) equal to hidden_size ({})",
            cfg.embedding_dim,
            cfg.hidden_size
        );
    }
    if cfg.bridge == Bridge::Last && cfg.summary_dim != 0 && cfg.summary_dim != cfg.hidden_size {
        candle_core::bail!(
            "bridge `last` needs the encoder's final state size ({}) to equal the decoder hidden size ({}); use `learned`",
            cfg.summary_dim,
            cfg.hidden_size
        );
    }
    if bahdanau && cfg.tied_embeddings {
        candle_core::bail!(
            "tied embeddings need the Luong style: the Bahdanau output layer reads [h; c; e]"
        );
    }
    Ok(())
}

/// The attention and, in the Luong style, the layer that makes the attentional vector.
fn attention_layers(
    cfg: &DecoderConfig,
    bahdanau: bool,
    vb: &VarBuilder,
) -> Result<(Option<Attention>, Option<Linear>)> {
    let Some(kind) = cfg.attention.filter(|_| cfg.memory_dim > 0) else {
        return Ok((None, None));
    };
    let attention = attention(
        kind,
        cfg.memory_dim,
        cfg.hidden_size,
        cfg.attention_dim,
        vb.pp("attention"),
    )?;
    let att_vector_layer = if bahdanau {
        None
    } else {
        Some(linear(
            cfg.hidden_size + cfg.memory_dim,
            cfg.hidden_size,
            vb.pp("att_vector_layer"),
        )?)
    };
    Ok((Some(attention), att_vector_layer))
}

pub fn decoder(cfg: DecoderConfig, vb: VarBuilder) -> Result<Decoder> {
    decoder_sharing(cfg, vb, None)
}

/// [`decoder`] whose embedding (and, with `tied_embeddings`, output projection) is `embedding`
/// (vocabulary × embedding_dim) instead of its own `embed.weight`: an encoder's, for a
/// translation model with one vocabulary for both sides (Press & Wolf's three-way tying).
pub fn decoder_sharing(
    cfg: DecoderConfig,
    vb: VarBuilder,
    embedding: Option<Tensor>,
) -> Result<Decoder> {
    let attn_on = cfg.attention.is_some() && cfg.memory_dim > 0;
    let bahdanau = attn_on && cfg.style == DecoderStyle::Bahdanau;
    check(&cfg, bahdanau)?;
    let e_init = Init::Uniform { lo: -0.1, up: 0.1 };
    let weight = match embedding {
        Some(w) if w.dims() == [cfg.vocab_size, cfg.embedding_dim] => w,
        Some(w) => candle_core::bail!(
            "the shared embedding is {:?}, the decoder needs [{}, {}]",
            w.dims(),
            cfg.vocab_size,
            cfg.embedding_dim
        ),
        None => {
            vb.pp("embed")
                .get_with_hints((cfg.vocab_size, cfg.embedding_dim), "weight", e_init)?
        }
    };
    let embed = Embedding::new(weight.clone(), cfg.embedding_dim);
    let feed = if bahdanau {
        cfg.memory_dim
    } else if cfg.input_feeding && attn_on {
        cfg.hidden_size
    } else {
        0
    };
    let out_dim = if bahdanau {
        cfg.hidden_size + cfg.memory_dim + cfg.embedding_dim
    } else {
        cfg.hidden_size
    };
    let rnn = rnn(
        RnnConfig {
            kind: cfg.cell,
            input_size: cfg.embedding_dim + feed,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            bidirectional: false,
            dropout: cfg.dropout,
        },
        vb.pp("rnn"),
    )?;
    let (attention, att_vector_layer) = attention_layers(&cfg, bahdanau, &vb)?;
    let bridge_layer = if cfg.bridge == Bridge::Learned && cfg.summary_dim > 0 {
        Some(linear(
            cfg.summary_dim,
            cfg.hidden_size,
            vb.pp("bridge_layer"),
        )?)
    } else {
        None
    };
    let output_layer = if cfg.tied_embeddings {
        Linear::new(weight, None)
    } else if bahdanau {
        linear(out_dim, cfg.vocab_size, vb.pp("output_layer"))?
    } else {
        linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb.pp("output_layer"))?
    };
    Ok(Decoder {
        bahdanau,
        out_dim,
        cfg,
        embed,
        rnn,
        attention,
        att_vector_layer,
        bridge_layer,
        output_layer,
    })
}

impl Decoder {
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Precomputes the attention keys of the encoder's memory.
    pub fn prepare(&self, enc: &EncoderOutput) -> Result<PreparedMemory> {
        let keys = match (&self.attention, &enc.memory) {
            (Some(a), Some(m)) => {
                let mask = match &enc.mask {
                    Some(mask) => mask.clone(),
                    None => Tensor::ones(m.dims()[..2].to_vec(), DType::F32, m.device())?,
                };
                Some(a.keys(m, &mask)?)
            }
            _ => None,
        };
        Ok(PreparedMemory { keys, search: None })
    }

    /// [`Decoder::prepare`] for a search (step by step, evaluation mode): on the CPU in f32 the
    /// output layer's weight is also transposed once for the whole search.
    pub fn prepare_search(&self, enc: &EncoderOutput) -> Result<PreparedMemory> {
        let mut mem = self.prepare(enc)?;
        let w = self.output_layer.weight();
        if w.dtype() == DType::F32 && w.device().is_cpu() {
            let transposed = |l: &Linear| l.weight().t()?.contiguous();
            mem.search = Some(Arc::new(SearchWeights {
                readout: transposed(&self.output_layer)?,
                cells: self
                    .rnn
                    .cells()
                    .iter()
                    .map(|c| c.transposed_weights())
                    .collect::<Result<_>>()?,
                att_vector: self.att_vector_layer.as_ref().map(transposed).transpose()?,
            }));
        }
        Ok(mem)
    }

    /// The initial state from the bridge; `batch` is used when the encoder gives no state.
    pub fn start(
        &self,
        enc: &EncoderOutput,
        batch: usize,
        dev: &candle_core::Device,
    ) -> Result<DecoderState> {
        let h = self.cfg.hidden_size;
        let zero = CellState::zeros(self.cfg.cell, batch, h, dev)?;
        let layers = match (self.cfg.bridge, enc.final_states.last()) {
            (Bridge::Zero, _) | (_, None) => vec![zero; self.cfg.num_layers],
            (_, Some(top)) if top.dim(D::Minus1)? != self.cfg.summary_dim => {
                candle_core::bail!(
                    "the encoder's final states have size {}, but this decoder was built for summary_dim {}",
                    top.dim(D::Minus1)?,
                    self.cfg.summary_dim
                )
            }
            (Bridge::Last, Some(top)) => (0..self.cfg.num_layers)
                .map(|l| {
                    let src = if enc.final_states.len() == self.cfg.num_layers {
                        &enc.final_states[l]
                    } else {
                        top
                    };
                    Ok(CellState {
                        h: src.clone(),
                        c: zero.c.clone(),
                    })
                })
                .collect::<Result<_>>()?,
            (Bridge::Learned, Some(top)) => {
                let Some(bridge) = &self.bridge_layer else {
                    candle_core::bail!("bridge `learned` has no layer: summary_dim is 0")
                };
                let hb = bridge.forward(top)?.tanh()?;
                vec![
                    CellState {
                        h: hb,
                        c: zero.c.clone()
                    };
                    self.cfg.num_layers
                ]
            }
        };
        let prev_att = match self.attention.is_some() && self.cfg.input_feeding {
            true => Some(Tensor::zeros((batch, h), DType::F32, dev)?),
            false => None,
        };
        Ok(DecoderState { layers, prev_att })
    }

    /// One decoding step: previous tokens (B) → logits (B, V), the new state and the attention
    /// weights (B, S) when the decoder attends.
    pub fn step(
        &self,
        prev: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState, Option<Tensor>)> {
        let e = ctx.word_dropout(&self.embed.forward(prev)?, self.cfg.word_dropout)?;
        let e = ctx.dropout(&e, self.cfg.emb_dropout)?;
        let (att, state, alphas) = self.step_embedded(&e, state, mem, ctx)?;
        let logits = match &mem.search {
            Some(w) => self.logits_transposed(&att, &w.readout, ctx)?,
            None => self.logits(&att, ctx)?,
        };
        Ok((logits, state, alphas))
    }

    /// The step from an embedded input (B, E) to the attentional vector ã_t (B, H).
    fn step_embedded(
        &self,
        e: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState, Option<Tensor>)> {
        if self.bahdanau {
            return self.step_bahdanau(e, state, mem, ctx);
        }
        let x = match &state.prev_att {
            Some(a) => Tensor::cat(&[e, a], 1)?,
            None => e.clone(),
        };
        let (x, layers) = self.run_stack(x, state, mem, ctx)?;
        let (att, alphas) = self.attend(&x.unsqueeze(1)?, mem)?;
        let att = att.squeeze(1)?;
        let alphas = alphas.map(|a| a.squeeze(1)).transpose()?;
        let prev_att = state.prev_att.as_ref().map(|_| att.clone());
        Ok((att, DecoderState { layers, prev_att }, alphas))
    }

    /// One step of the recurrent stack from input `x`, dropout between layers: the top output
    /// and the new state of every layer.
    fn run_stack(
        &self,
        mut x: Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Vec<CellState>)> {
        let mut layers = Vec::with_capacity(state.layers.len());
        for (l, cell) in self.rnn.cells().iter().enumerate() {
            let s = match &mem.search {
                Some(w) => {
                    let (w_ih_t, w_hh_t) = &w.cells[l];
                    let gi = cell.input_proj_transposed(&x, w_ih_t)?;
                    cell.step_transposed(&gi, &state.layers[l], w_hh_t)?
                }
                None => cell.step(&cell.input_proj(&x)?, &state.layers[l])?,
            };
            x = if l + 1 < self.cfg.num_layers {
                ctx.dropout(&s.h, self.cfg.dropout)?
            } else {
                s.h.clone()
            };
            layers.push(s);
        }
        Ok((x, layers))
    }

    /// Bahdanau step: attend with the previous top state, feed `[e; c]`, read out `[h; c; e]`.
    fn step_bahdanau(
        &self,
        e: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState, Option<Tensor>)> {
        let (Some(a), Some(k)) = (&self.attention, &mem.keys) else {
            candle_core::bail!("a Bahdanau-style decoder needs a memory to attend to");
        };
        let query = &state.layers[self.cfg.num_layers - 1].h;
        let (context, alphas) = a.forward(&query.unsqueeze(1)?, k)?;
        let (context, alphas) = (context.squeeze(1)?, alphas.squeeze(1)?);
        let (x, layers) = self.run_stack(Tensor::cat(&[e, &context], 1)?, state, mem, ctx)?;
        let out = Tensor::cat(&[&x, &context, e], 1)?;
        Ok((
            out,
            DecoderState {
                layers,
                prev_att: None,
            },
            Some(alphas),
        ))
    }

    /// Queries (B, T, H) → attentional vectors (B, T, H) and weights (B, T, S).
    fn attend(&self, h: &Tensor, mem: &PreparedMemory) -> Result<(Tensor, Option<Tensor>)> {
        match (&self.attention, &mem.keys) {
            (Some(a), Some(k)) => {
                let (context, alphas) = a.forward(h, k)?;
                let layer = self.att_vector_layer.as_ref().unwrap();
                let hc = Tensor::cat(&[h, &context], D::Minus1)?;
                let att = match mem.search.as_ref().and_then(|w| w.att_vector.as_ref()) {
                    // One step's single query: (B, 1, H + C) → (B, H + C).
                    Some(w_t) if hc.dim(1)? == 1 => {
                        project_transposed(&hc.squeeze(1)?, w_t, layer.bias())?.unsqueeze(1)?
                    }
                    _ => layer.forward(&hc)?,
                };
                Ok((att.tanh()?, Some(alphas)))
            }
            _ => Ok((h.clone(), None)),
        }
    }

    /// Output projection of attentional vectors of any leading shape.
    pub fn logits(&self, att: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let att = self.readout(att, ctx)?;
        let dims = att.dims().to_vec();
        let rows = att.elem_count() / self.out_dim;
        let y = self
            .output_layer
            .forward(&att.reshape((rows, self.out_dim))?)?;
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.vocab_size;
        y.reshape(out)
    }

    /// [`Decoder::logits`] of one step's vectors `(B, D)` from the transposed weight `(D, V)`.
    fn logits_transposed(&self, att: &Tensor, w_t: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let x = self.readout(att, ctx)?;
        project_transposed(&x, w_t, self.output_layer.bias())
    }

    /// The output layer's input: the attentional vectors after the hidden dropout.
    fn readout(&self, att: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        ctx.dropout(att, self.cfg.hidden_dropout)
    }

    /// The output layer's weight (V, D) and bias: with [`Decoder::forward_teacher_readout`], a
    /// training loop can fuse the projection with its loss (`nn::projection_cross_entropy`).
    pub fn output_projection(&self) -> (&Tensor, Option<&Tensor>) {
        (self.output_layer.weight(), self.output_layer.bias())
    }

    /// [`Decoder::forward_teacher`] up to the output layer's input (B, T, D), dropout applied:
    /// projecting it with [`Decoder::output_projection`] gives the same logits.
    pub fn forward_teacher_readout(
        &self,
        tgt_in: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState)> {
        let (att, last, _) = self.teacher_att(tgt_in, state, mem, false, ctx)?;
        Ok((self.readout(&att, ctx)?, last))
    }

    /// [`Decoder::forward_teacher_readout`] that also returns the attention weights (B, T, S) of
    /// every step, differentiable (for a loss on them, such as Show, Attend and Tell's doubly
    /// stochastic regularisation); `None` when the decoder does not attend. The fused
    /// whole-sequence ops do not expose the weights, so where they would apply the step loop
    /// runs instead: same values, slower.
    pub fn forward_teacher_attending(
        &self,
        tgt_in: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState, Option<Tensor>)> {
        let (att, last, alphas) = self.teacher_att(tgt_in, state, mem, true, ctx)?;
        Ok((self.readout(&att, ctx)?, last, alphas))
    }

    /// Teacher-forced pass over a whole target prefix `tgt_in` (B, T): logits (B, T, V).
    ///
    /// Without input feeding the recurrent stack runs over the whole sequence and attention is
    /// batched over all T queries at once; with it the steps are sequential (one fused op on the
    /// CPU for one GRU or LSTM layer). Either way the output projection is one matmul
    /// over all steps.
    pub fn forward_teacher(
        &self,
        tgt_in: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState)> {
        let (att, last, _) = self.teacher_att(tgt_in, state, mem, false, ctx)?;
        Ok((self.logits(&att, ctx)?, last))
    }

    /// The Bahdanau-style teacher-forced pass as one fused op (one layer, additive attention,
    /// GRU or LSTM, f32 on the CPU): `[h; c; e]` for every step and the final state, or `None`
    /// where the op does not apply and the step loop runs instead.
    fn fused_bahdanau(
        &self,
        e: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
    ) -> Result<Option<(Tensor, DecoderState)>> {
        let (Some(a), Some(k)) = (&self.attention, &mem.keys) else {
            return Ok(None);
        };
        let cell = &self.rnn.cells()[0];
        if !self.bahdanau || self.cfg.num_layers != 1 || !attentive_supported(cell, a, e) {
            return Ok(None);
        }
        let (out, last) = attentive_readout(cell, a, e, k, &state.layers[0])?;
        let last = DecoderState {
            layers: vec![last],
            prev_att: None,
        };
        Ok(Some((out, last)))
    }

    /// The Luong-style teacher-forced pass with input feeding as one fused op (one layer, GRU or
    /// LSTM, any attention score, f32 on the CPU): the attentional vectors for every step
    /// and the final state, or `None` where the op does not apply and the step loop runs instead.
    fn fused_feeding(
        &self,
        e: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
    ) -> Result<Option<(Tensor, DecoderState)>> {
        let (Some(a), Some(k), Some(layer), Some(att0)) = (
            &self.attention,
            &mem.keys,
            &self.att_vector_layer,
            &state.prev_att,
        ) else {
            return Ok(None);
        };
        let cell = &self.rnn.cells()[0];
        if self.bahdanau
            || self.cfg.num_layers != 1
            || e.dim(1)? == 0
            || !feeding_supported(cell, a, e)
        {
            return Ok(None);
        }
        let layer = AttentionalLayer {
            weight: layer.weight(),
            bias: layer.bias(),
        };
        let (att, last) = feeding_sequence(cell, a, layer, e, k, &state.layers[0], att0)?;
        let prev_att = Some(att.narrow(1, att.dim(1)? - 1, 1)?.squeeze(1)?);
        let last = DecoderState {
            layers: vec![last],
            prev_att,
        };
        Ok(Some((att, last)))
    }

    /// The attentional vectors (B, T, D) of a teacher-forced pass, the final state and, when
    /// `with_alphas` and the decoder attends, the attention weights (B, T, S).
    fn teacher_att(
        &self,
        tgt_in: &Tensor,
        state: &DecoderState,
        mem: &PreparedMemory,
        with_alphas: bool,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, DecoderState, Option<Tensor>)> {
        let e = ctx.word_dropout(&self.embed.forward(tgt_in)?, self.cfg.word_dropout)?;
        let e = ctx.dropout(&e, self.cfg.emb_dropout)?;
        if state.prev_att.is_none() && !self.bahdanau {
            let (h, finals) = self.rnn.forward(&e, None, Some(&state.layers), ctx)?;
            let (att, alphas) = self.attend(&h, mem)?;
            let last = DecoderState {
                layers: finals,
                prev_att: None,
            };
            return Ok((att, last, alphas.filter(|_| with_alphas)));
        }
        if !with_alphas {
            if let Some((att, last)) = self.fused_bahdanau(&e, state, mem)? {
                return Ok((att, last, None));
            }
            if let Some((att, last)) = self.fused_feeding(&e, state, mem)? {
                return Ok((att, last, None));
            }
        }
        let t = e.dim(1)?;
        let mut state = state.clone();
        let (mut atts, mut alphas) = (Vec::with_capacity(t), Vec::with_capacity(t));
        for i in 0..t {
            let (a, s, al) =
                self.step_embedded(&e.narrow(1, i, 1)?.squeeze(1)?, &state, mem, ctx)?;
            atts.push(a);
            alphas.extend(al.filter(|_| with_alphas));
            state = s;
        }
        let alphas = (!alphas.is_empty() && alphas.len() == t)
            .then(|| Tensor::stack(&alphas, 1))
            .transpose()?;
        Ok((Tensor::stack(&atts, 1)?, state, alphas))
    }
}
