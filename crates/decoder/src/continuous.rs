//! Greedy search over a batch whose rows come and go (continuous batching, for a server): rows
//! join between steps with their own start state, and leave at the step they end, so that no
//! row waits for the longest of a batch before its successor can start.
//!
//! Each row decodes as [`crate::search`]'s greedy strategy decodes it alone: the same step, the
//! same constraints (min length, n-gram blocking, forbidden tokens) on its own tokens, its own
//! length limit. Memories of different lengths are padded with masked positions, whose attention
//! weight is exactly 0.

use candle_core::{Device, Result, Tensor, D};
use seq2seq_nn::Ctx;

use crate::search::constrained;
use crate::{
    forbidden_bias, Decoder, DecoderState, DecodingOptions, EncoderOutput, Hypothesis,
    PreparedMemory, SpecialTokens,
};

/// One row of the running batch: its caller's id, its memory length and its hypothesis so far.
struct Row {
    id: u64,
    memory_len: usize,
    hyp: Hypothesis,
}

/// The running batch of a continuous greedy search.
pub struct Continuous<'a> {
    decoder: &'a Decoder,
    sp: SpecialTokens,
    opts: DecodingOptions,
    /// The forbidden tokens' bias `(1, V)`.
    base: Tensor,
    /// The step weights, transposed once for the whole life of the batch.
    search: PreparedMemory,
    running: Option<(DecoderState, PreparedMemory)>,
    /// The previous token of each row.
    prev: Vec<u32>,
    rows: Vec<Row>,
    /// Rows that ended on joining (a length limit of 0), returned by the next step.
    done: Vec<(u64, Hypothesis)>,
    dev: Device,
}

impl<'a> Continuous<'a> {
    /// An empty batch decoding greedily with `opts` (its strategy, sampling and beam settings
    /// are not read).
    pub fn new(
        decoder: &'a Decoder,
        sp: SpecialTokens,
        opts: &DecodingOptions,
        dev: &Device,
    ) -> Result<Self> {
        let empty = EncoderOutput {
            memory: None,
            mask: None,
            final_states: Vec::new(),
        };
        Ok(Self {
            decoder,
            sp,
            opts: opts.clone(),
            base: forbidden_bias(decoder.config().vocab_size, sp, opts.forbid_unk, dev)?
                .unsqueeze(0)?,
            search: decoder.prepare_search(&empty)?,
            running: None,
            prev: Vec::new(),
            rows: Vec::new(),
            done: Vec::new(),
            dev: dev.clone(),
        })
    }

    /// Rows running (or ended and not yet returned).
    pub fn len(&self) -> usize {
        self.rows.len() + self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the rows of an encoder output (one per `ids` entry), starting from bos.
    pub fn admit(&mut self, enc: &EncoderOutput, ids: &[u64]) -> Result<()> {
        let empty = Hypothesis {
            tokens: Vec::new(),
            log_prob: 0.0,
            score: 0.0,
            attention: Vec::new(),
        };
        if self.opts.max_length == 0 {
            self.done.extend(ids.iter().map(|&id| (id, empty.clone())));
            return Ok(());
        }
        let state = self.decoder.start(enc, ids.len(), &self.dev)?;
        let mem = self.decoder.prepare(enc)?.with_search_of(&self.search);
        // Each row's real length, so that padding no row needs any more can be dropped.
        let lens: Vec<usize> = match &enc.mask {
            Some(m) => m
                .to_dtype(candle_core::DType::F32)?
                .sum(1)?
                .to_vec1::<f32>()?
                .iter()
                .map(|&l| l as usize)
                .collect(),
            None => vec![mem.memory_len()?; ids.len()],
        };
        self.running = Some(match self.running.take() {
            None => (state, mem),
            Some((s, m)) => (
                DecoderState::cat(&[&s, &state])?,
                PreparedMemory::cat(&[&m, &mem])?,
            ),
        });
        self.prev
            .extend(std::iter::repeat_n(self.sp.bos, ids.len()));
        for (&id, &memory_len) in ids.iter().zip(&lens) {
            self.rows.push(Row {
                id,
                memory_len,
                hyp: empty.clone(),
            });
        }
        Ok(())
    }

    /// One token for every running row; returns the rows that ended (eos, or the length limit)
    /// with their hypotheses, and drops them from the batch.
    pub fn step(&mut self) -> Result<Vec<(u64, Hypothesis)>> {
        let mut ended = std::mem::take(&mut self.done);
        let Some((state, mem)) = self.running.take() else {
            return Ok(ended);
        };
        let n = self.rows.len();
        let prev = Tensor::from_slice(&self.prev, n, &self.dev)?;
        let (logits, state, _) = self.decoder.step(&prev, &state, &mem, &mut Ctx::eval())?;
        let hyps: Vec<&[u32]> = self.rows.iter().map(|r| r.hyp.tokens.as_slice()).collect();
        let logits = constrained(&logits, &self.base, &hyps, self.sp, &self.opts)?;
        let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        let idx = Tensor::from_slice(&next, (n, 1), &self.dev)?;
        let logp: Vec<f32> = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&idx, 1)?
            .squeeze(1)?
            .to_vec1()?;
        let mut keep = Vec::with_capacity(n);
        let rows = std::mem::take(&mut self.rows);
        for (r, mut row) in rows.into_iter().enumerate() {
            row.hyp.log_prob += logp[r] as f64;
            let eos = next[r] == self.sp.eos;
            if !eos {
                row.hyp.tokens.push(next[r]);
            }
            // The step count is the tokens chosen, eos included.
            if eos || row.hyp.tokens.len() == self.opts.max_length {
                row.hyp.score = row.hyp.log_prob;
                ended.push((row.id, row.hyp));
            } else {
                keep.push((r as u32, row));
            }
        }
        if keep.is_empty() {
            self.prev.clear();
            return Ok(ended);
        }
        self.prev = keep.iter().map(|(r, _)| next[*r as usize]).collect();
        let (state, mem) = if keep.len() == n {
            (state, mem)
        } else {
            let idx: Vec<u32> = keep.iter().map(|(r, _)| *r).collect();
            let idx = Tensor::from_vec(idx, keep.len(), &self.dev)?;
            let longest = keep
                .iter()
                .map(|(_, row)| row.memory_len)
                .max()
                .unwrap_or(0);
            let mut mem = mem.index_select(&idx)?;
            if longest > 0 && longest < mem.memory_len()? {
                mem = mem.narrow(longest)?;
            }
            (state.index_select(&idx)?, mem)
        };
        self.running = Some((state, mem));
        self.rows = keep.into_iter().map(|(_, row)| row).collect();
        Ok(ended)
    }
}
