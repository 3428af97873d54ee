//! Forced decoding: the log-probability a translation model gives a given target for a given
//! source (OpenNMT-py's `translate -tgt`, fairseq's `--score-reference`), for reranking and
//! for filtering noisy pairs.

use candle_core::Tensor;
use seq2seq_data::{bucket_batches, Batch, Example};
use serde::Serialize;

use crate::model::BatchTensors;
use crate::tasks::translation::Translator;
use crate::Result;

/// One pair's score: the summed log-probability of its target tokens and end token under the
/// model (teacher-forced, eval mode, no label smoothing), how many there are, and the
/// per-token perplexity `exp(-log_prob / tokens)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PairScore {
    pub log_prob: f64,
    pub tokens: usize,
    pub ppl: f64,
}

impl Translator {
    /// Scores each (source, target) pair, in order. Sources longer than `data.max_src_len` are
    /// truncated as `translate` truncates them (1-based line numbers in the warnings); with
    /// ensemble members, the score is the mixture's, as `eval`'s loss and ensemble decoding use.
    pub fn score_pairs(
        &self,
        srcs: &[String],
        tgts: &[String],
        batch_size: usize,
    ) -> Result<(Vec<PairScore>, Vec<String>)> {
        let (ids, warnings) = self.encode_sources(srcs)?;
        let mut examples = Vec::with_capacity(srcs.len());
        for (src, t) in ids.into_iter().zip(tgts) {
            examples.push(Example::new(src, self.tgt_vocab.encode(t)?));
        }
        let mut out = vec![None; examples.len()];
        for idx in bucket_batches(&examples, batch_size.max(1), 0, 0, false) {
            let v = &self.tgt_vocab;
            let b = Batch::new(&examples, &idx, v.pad, v.bos, v.eos);
            let t = BatchTensors::new(&b, &self.device)?;
            for (row, (log_prob, tokens)) in self.row_log_probs(&t)?.into_iter().enumerate() {
                let ppl = (-log_prob / tokens.max(1) as f64).exp();
                out[idx[row]] = Some(PairScore {
                    log_prob,
                    tokens,
                    ppl,
                });
            }
        }
        Ok((out.into_iter().flatten().collect(), warnings))
    }

    /// Per batch row: the summed target log-probability and the number of target tokens.
    fn row_log_probs(&self, t: &BatchTensors) -> Result<Vec<(f64, usize)>> {
        let members = self.members();
        let mut log_probs = Vec::with_capacity(members.len());
        for m in &members {
            log_probs.push(m.target_log_probs(t)?);
        }
        // log((1/K) Σ_k p_k(y)) per position; one model is its own mixture.
        let k = members.len() as f64;
        let lp = (Tensor::stack(&log_probs, 0)?.log_sum_exp(0)? - k.ln())?;
        let (rows, len) = t.tgt_in.dims2()?;
        let mask = t.tgt_mask.reshape((rows, len))?;
        let lp = lp.reshape((rows, len))?;
        // Padding positions may hold any value: masked by selection, not multiplication.
        let zeros = lp.zeros_like()?;
        let lp = mask.ne(0f32)?.where_cond(&lp, &zeros)?;
        let sums: Vec<f32> = lp.sum(1)?.to_vec1()?;
        let counts: Vec<f32> = mask.sum(1)?.to_vec1()?;
        Ok(sums
            .into_iter()
            .zip(counts)
            .map(|(s, c)| (s as f64, c as usize))
            .collect())
    }
}
