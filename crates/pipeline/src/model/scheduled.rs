//! Scheduled sampling's first pass (`train.scheduled_sampling`, see its config for the why): the
//! decoder inputs of one batch with a share of them replaced by the model's own predictions.

use candle_core::{Tensor, D};
use candle_nn::Module;
use seq2seq_decoder::{DecoderState, PreparedMemory};
use seq2seq_nn::Ctx;

use super::Seq2Seq;
use crate::config::SampledTokens;
use crate::Result;

/// One update's scheduled sampling: the share of inputs replaced, and by which prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub rate: f64,
    pub tokens: SampledTokens,
}

impl Seq2Seq {
    /// `tgt_in` (B, T) with each real input past the start token replaced, with probability
    /// `s.rate`, by the model's prediction for it: the output of a teacher-forced pass (dropout
    /// on, as in training) at the position before. The pass's graph is dropped with it, so no
    /// gradient flows through the choice.
    pub(super) fn sampled_inputs(
        &self,
        tgt_in: &Tensor,
        tgt_mask: &Tensor,
        (state, mem): (&DecoderState, &PreparedMemory),
        s: Sampling,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let (b, t) = tgt_in.dims2()?;
        let real = tgt_mask.to_vec1::<f32>()?;
        let picked = replaced_positions(&real, t, s.rate, ctx);
        if picked.is_empty() {
            return Ok(tgt_in.clone());
        }
        let (x, _) = self
            .decoder
            .forward_teacher_readout(tgt_in, state, mem, ctx)?;
        let dev = tgt_in.device();
        // The input at position p is predicted by the output at p − 1 (same row: p % T ≥ 1).
        let before: Vec<u32> = picked.iter().map(|&p| (p - 1) as u32).collect();
        let rows = x
            .reshape((b * t, ()))?
            .index_select(&Tensor::new(before.as_slice(), dev)?, 0)?;
        let (weight, bias) = self.decoder.output_projection();
        let logits = candle_nn::Linear::new(weight.clone(), bias.cloned())
            .forward(&rows)?
            .detach();
        let predicted: Vec<u32> = match s.tokens {
            SampledTokens::Greedy => logits.argmax(D::Minus1)?.to_vec1()?,
            SampledTokens::Sample => candle_nn::ops::softmax_last_dim(&logits)?
                .to_vec2::<f32>()?
                .iter()
                .map(|probs| draw(probs, ctx.uniform()))
                .collect(),
        };
        let mut ids = tgt_in.flatten_all()?.to_vec1::<u32>()?;
        for (&p, tok) in picked.iter().zip(predicted) {
            ids[p] = tok;
        }
        Ok(Tensor::from_vec(ids, (b, t), dev)?)
    }
}

/// The flat positions (row · T + column) whose input is replaced: each real position past its
/// row's first is picked with probability `rate`, one draw from `ctx` per such position.
fn replaced_positions(real: &[f32], t: usize, rate: f64, ctx: &mut Ctx) -> Vec<usize> {
    if rate <= 0.0 {
        return Vec::new();
    }
    (0..real.len())
        .filter(|&p| p % t != 0 && real[p] > 0.0)
        .filter(|_| (ctx.uniform() as f64) < rate)
        .collect()
}

/// The token whose cumulative probability first exceeds `u` (inverse-CDF sampling); the last one
/// when rounding leaves the total below `u`.
fn draw(probs: &[f32], u: f32) -> u32 {
    let mut acc = 0.0f32;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    probs.len().saturating_sub(1) as u32
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use seq2seq_data::{Batch, Example};
    use seq2seq_nn::SeededVarMap;

    use super::*;
    use crate::config::Task;
    use crate::model::{build_model, tiny_config, BatchTensors, LossTerms};

    /// An untrained tiny translation model (dropout off) and a padded batch of 16 pairs.
    fn model_and_batch() -> (Seq2Seq, Batch) {
        let cfg = tiny_config(3);
        let vm = SeededVarMap::new(cfg.seed);
        let vb = vm.var_builder(&Device::Cpu);
        let m = build_model(&cfg.model, Task::Translation, 12, 14, vb, None).unwrap();
        let examples: Vec<Example> = (0..16u32)
            .map(|i| {
                let src = (0..2 + i % 5).map(|j| 4 + (i + j) % 8).collect();
                Example::new(src, (0..1 + i % 6).map(|j| 4 + (i * j) % 10).collect())
            })
            .collect();
        let all: Vec<usize> = (0..16).collect();
        (m, Batch::new(&examples, &all, 0, 2, 3))
    }

    fn loss(m: &Seq2Seq, b: &BatchTensors, sampling: Option<Sampling>, ctx: &mut Ctx) -> f32 {
        let terms = LossTerms {
            sampling,
            ..LossTerms::default()
        };
        m.loss(b, terms, ctx).unwrap().loss.to_scalar().unwrap()
    }

    fn sampling(rate: f64, tokens: SampledTokens) -> Option<Sampling> {
        Some(Sampling { rate, tokens })
    }

    /// At rate 1 every real input past the start is the model's most likely token at the
    /// position before, as a teacher-forced pass computed by hand gives it; at rate 0 the loss
    /// is teacher forcing's, bit for bit.
    #[test]
    fn greedy_sampling_feeds_the_previous_positions_argmax() {
        let (m, b) = model_and_batch();
        let dev = Device::Cpu;
        let bt = BatchTensors::new(&b, &dev).unwrap();
        let forced = loss(&m, &bt, None, &mut Ctx::eval());
        let greedy = SampledTokens::Greedy;
        assert_eq!(
            loss(&m, &bt, sampling(0.0, greedy), &mut Ctx::eval()),
            forced
        );

        let x = m.readout(&bt, &mut Ctx::eval()).unwrap();
        let (w, bias) = m.decoder.output_projection();
        let logits = candle_nn::Linear::new(w.clone(), bias.cloned())
            .forward(&x)
            .unwrap();
        let argmax = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        let mut fed = b.tgt_in.clone();
        for p in 0..fed.len() {
            if p % b.tgt_len != 0 && b.tgt_mask[p] > 0.0 {
                fed[p] = argmax[p - 1];
            }
        }
        assert_ne!(
            fed, b.tgt_in,
            "the untrained model should mispredict some inputs"
        );
        let by_hand = BatchTensors {
            tgt_in: Tensor::from_slice(&fed, (b.size, b.tgt_len), &dev).unwrap(),
            ..BatchTensors::new(&b, &dev).unwrap()
        };
        let want = loss(&m, &by_hand, None, &mut Ctx::eval());
        assert_ne!(want, forced);
        assert_eq!(loss(&m, &bt, sampling(1.0, greedy), &mut Ctx::eval()), want);
    }

    /// Drawn tokens follow the seed: the same seed gives the same loss, another seed another.
    #[test]
    fn sampled_tokens_are_drawn_from_the_contexts_generator() {
        let (m, b) = model_and_batch();
        let bt = BatchTensors::new(&b, &Device::Cpu).unwrap();
        let s = sampling(0.5, SampledTokens::Sample);
        let a = loss(&m, &bt, s, &mut Ctx::train(1));
        assert_eq!(a, loss(&m, &bt, s, &mut Ctx::train(1)));
        assert_ne!(a, loss(&m, &bt, s, &mut Ctx::train(2)));
        assert_ne!(a, loss(&m, &bt, None, &mut Ctx::train(1)));
    }

    #[test]
    fn draw_inverts_the_cumulative_distribution() {
        let probs = [0.1, 0.2, 0.7];
        for (u, want) in [
            (0.0, 0),
            (0.05, 0),
            (0.1, 1),
            (0.29, 1),
            (0.31, 2),
            (0.999, 2),
        ] {
            assert_eq!(draw(&probs, u), want, "u = {u}");
        }
        // Probabilities that round to just under 1 still give a token.
        assert_eq!(draw(&[0.5, 0.4999], 0.99995), 1);
    }

    #[test]
    fn only_real_positions_past_the_start_are_replaced_at_about_the_rate() {
        // Two rows of 4: the second has one padding position at its end.
        let real = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let all = replaced_positions(&real, 4, 1.0, &mut Ctx::train(1));
        assert_eq!(all, vec![1, 2, 3, 5, 6]);
        assert!(replaced_positions(&real, 4, 0.0, &mut Ctx::train(1)).is_empty());
        // 100 rows of 11: 1000 candidates; a 0.3 share is picked, the same for the same seed.
        let real = vec![1.0; 1100];
        let a = replaced_positions(&real, 11, 0.3, &mut Ctx::train(5));
        assert_eq!(a, replaced_positions(&real, 11, 0.3, &mut Ctx::train(5)));
        assert!(a.iter().all(|p| p % 11 != 0));
        assert!((260..=340).contains(&a.len()), "{} of 1000 picked", a.len());
    }
}
