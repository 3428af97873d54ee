//! Text generation with a decoder-only model: prompt priming, then any decoding strategy.

use std::collections::HashSet;
use std::path::Path;

use candle_core::{Device, Tensor};
use seq2seq_data::Vocab;
use seq2seq_decoder::distribution::next_token;
use seq2seq_decoder::{
    search, DecoderStepper, EncoderOutput, SearchState, SpecialTokens, Stages, TokenHook,
};
use seq2seq_nn::Ctx;

use crate::config::{DecodingConfig, Task};
use crate::decode::{load_dir, LoadedModel};
use crate::model::Seq2Seq;
use crate::Result;

/// A language model loaded from its directory.
pub struct Generator(LoadedModel);

/// One generated sample: the full text (prompt + continuation) and the continuation's tokens.
#[derive(Clone, Debug)]
pub struct Sample {
    pub text: String,
    pub tokens: Vec<u32>,
    pub log_prob: f64,
}

impl Generator {
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// [`Self::load`] onto `device`.
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self> {
        Ok(Self(load_dir(dir, Task::Generation, device)?))
    }

    pub fn config(&self) -> &crate::Config {
        &self.0.config
    }

    /// The model's vocabulary (prompts are encoded with it).
    pub fn vocab(&self) -> &Vocab {
        &self.0.tgt_vocab
    }

    /// `num` continuations of `prompt`.
    ///
    /// The prompt is run through the network token by token (teacher-forced from bos) to build
    /// the state; generation then continues from that state. Sample i uses seed `opts.seed + i`.
    pub fn generate(&self, prompt: &str, num: usize, opts: &DecodingConfig) -> Result<Vec<Sample>> {
        let m = &self.0;
        let prompt_ids = m.tgt_vocab.encode(prompt)?;
        continue_from(&m.model, &m.tgt_vocab, &prompt_ids, num, opts, &m.device)
    }

    /// [`Self::generate`], calling `on_piece` as each token is chosen (greedy and sampling; beam
    /// search only returns): the samples are the same as without it, unless `on_piece` answers
    /// false (its listener has gone), which ends generation after that step.
    pub fn generate_streaming(
        &self,
        prompt: &str,
        num: usize,
        opts: &DecodingConfig,
        on_piece: impl Fn(Piece) -> bool + Send + Sync + 'static,
    ) -> Result<Vec<Sample>> {
        let m = &self.0;
        let prompt_ids = m.tgt_vocab.encode(prompt)?;
        let vocab = m.tgt_vocab.clone();
        let start = (prompt_ids.clone(), vocab.decode(&prompt_ids)?);
        let so_far = std::sync::Mutex::new(vec![start; num]);
        let mut opts = opts.clone();
        opts.on_token = Some(TokenHook::new(move |index, token| {
            let mut rows = so_far.lock().unwrap_or_else(|e| e.into_inner());
            let Some((ids, shown)) = rows.get_mut(index) else {
                return true;
            };
            ids.push(token);
            let Ok(text) = vocab.decode(ids) else {
                return true;
            };
            let delta = text.strip_prefix(shown.as_str()).map(str::to_string);
            *shown = text.clone();
            on_piece(Piece {
                index,
                token,
                text,
                delta,
            })
        }));
        continue_from(&m.model, &m.tgt_vocab, &prompt_ids, num, &opts, &m.device)
    }

    /// The distribution of the token after `prompt`, through the sampler's filters (see
    /// [`seq2seq_decoder::distribution`]).
    pub fn next_token(&self, prompt: &str, opts: &DecodingConfig) -> Result<Stages> {
        let m = &self.0;
        let prompt_ids = m.tgt_vocab.encode(prompt)?;
        let (start, last) = prime(&m.model, &m.tgt_vocab, &prompt_ids, 1, &m.device)?;
        let stepper = DecoderStepper(&m.model.decoder);
        let mut rows = next_token(
            &stepper,
            &start,
            &[last],
            special(&m.tgt_vocab),
            opts,
            &m.device,
        )?;
        Ok(rows.swap_remove(0))
    }
}

/// One streamed token: which sample it belongs to, and that sample's whole text so far.
#[derive(Clone, Debug)]
pub struct Piece {
    pub index: usize,
    pub token: u32,
    /// The prompt and the continuation up to this token, decoded.
    pub text: String,
    /// What this token appended to the previous `text` (the prompt's, for the first); `None`
    /// when decoding it changed what came before (a subword joining the previous one).
    pub delta: Option<String>,
}

fn special(vocab: &Vocab) -> SpecialTokens {
    SpecialTokens {
        pad: vocab.pad,
        bos: vocab.bos,
        eos: vocab.eos,
        unk: vocab.unk,
    }
}

/// The search state after the prompt (all but its last token teacher-forced from bos), repeated
/// for `num` rows, and the token the search starts from (the prompt's last, or bos).
fn prime(
    model: &Seq2Seq,
    vocab: &Vocab,
    prompt_ids: &[u32],
    num: usize,
    dev: &Device,
) -> Result<(SearchState, u32)> {
    let dec = &model.decoder;
    let enc = EncoderOutput::empty();
    let mut state = dec.start(&enc, 1, dev)?;
    let mem = dec.prepare_search(&enc)?;
    let last = match prompt_ids.split_last() {
        Some((&last, before)) => {
            let mut inputs = vec![vocab.bos];
            inputs.extend_from_slice(before);
            let x = Tensor::from_vec(inputs.clone(), (1, inputs.len()), dev)?;
            state = dec.forward_teacher(&x, &state, &mem, &mut Ctx::eval())?.1;
            last
        }
        None => vocab.bos,
    };
    let rows = Tensor::from_vec(vec![0u32; num], num, dev)?;
    let start = SearchState {
        state: state.index_select(&rows)?,
        mem: mem.index_select(&rows)?,
        attention: None,
    };
    Ok((start, last))
}

/// `num` continuations of the token prefix `prompt_ids` by a decoder-only model.
pub(crate) fn continue_from(
    model: &Seq2Seq,
    vocab: &Vocab,
    prompt_ids: &[u32],
    num: usize,
    opts: &DecodingConfig,
    dev: &Device,
) -> Result<Vec<Sample>> {
    let (start, last) = prime(model, vocab, prompt_ids, num, dev)?;
    let stepper = DecoderStepper(&model.decoder);
    let seeds: Vec<u64> = (0..num as u64).map(|i| opts.seed.wrapping_add(i)).collect();
    let hyps = search(
        &stepper,
        start,
        &vec![last; num],
        special(vocab),
        opts,
        &seeds,
        dev,
    )?;
    hyps.into_iter()
        .flat_map(|n| n.into_iter().take(1))
        .map(|h| {
            let mut all = prompt_ids.to_vec();
            all.extend_from_slice(&h.tokens);
            Ok(Sample {
                text: vocab.decode(&all)?,
                tokens: h.tokens,
                log_prob: h.log_prob,
            })
        })
        .collect()
}

/// Diversity of a set of samples: distinct-2 (unique bigrams / all bigrams over the set) and the
/// repeated-4-gram rate (share of 4-grams that already occurred earlier in the same sample).
pub fn diversity(samples: &[Vec<u32>]) -> (f64, f64) {
    let mut bigrams = HashSet::new();
    let mut n2 = 0usize;
    let (mut rep, mut n4) = (0usize, 0usize);
    for s in samples {
        for w in s.windows(2) {
            bigrams.insert((w[0], w[1]));
            n2 += 1;
        }
        let mut seen = HashSet::new();
        for w in s.windows(4) {
            n4 += 1;
            if !seen.insert(w) {
                rep += 1;
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (ratio(bigrams.len(), n2), ratio(rep, n4))
}

#[cfg(test)]
mod tests {
    use super::diversity;

    #[test]
    fn diversity_counts() {
        // "a b a b a b": bigrams ab, ba, ab, ba, ab -> 2 distinct of 5; 4-grams abab, baba, abab -> 1 repeat of 3
        let (d2, r4) = diversity(&[vec![1, 2, 1, 2, 1, 2]]);
        assert!(
            (d2 - 0.4).abs() < 1e-12 && (r4 - 1.0 / 3.0).abs() < 1e-12,
            "{d2} {r4}"
        );
        let (d2, r4) = diversity(&[vec![1, 2, 3, 4, 5], vec![6, 7]]);
        assert_eq!((d2, r4), (1.0, 0.0));
    }
}
