//! Generation: a language model (the decoder with no encoder) primed by a prompt. It trains on
//! lines or on windows of a running text, and has no references: validation shows greedy
//! continuations of held-out items' first tokens instead of scoring outputs.

mod corpus;
mod generator;

use candle_core::Device;
use seq2seq_data::Example;

pub(crate) use generator::continue_from;
pub use generator::{diversity, Generator, Piece, Sample};

use crate::config::{Config, DataFormat, DecodingConfig};
use crate::model::Seq2Seq;
use crate::observer::Observer;
use crate::tasks::RunFiles;
use crate::tasks::{text, DecodeItem, Prepared, Scores, Task};
use crate::Result;

/// Tokens of a held-out item that prime a validation sample.
const PROMPT_TOKENS: usize = 10;

pub(crate) struct Generation {
    /// Validation samples (`train.valid_samples`).
    pub samples: usize,
}

impl Task for Generation {
    fn prepare(
        &mut self,
        cfg: &Config,
        files: RunFiles,
        obs: &mut dyn Observer,
    ) -> Result<Prepared> {
        self.samples = cfg.train.valid_samples;
        if cfg.data.format == DataFormat::Text {
            corpus::prepare_windows(cfg, files, obs)
        } else {
            text::prepare_lines(cfg, files, obs)
        }
    }

    /// Greedy continuations of the first tokens of the first `train.valid_samples` examples.
    fn outputs(
        &self,
        model: &Seq2Seq,
        p: &Prepared,
        examples: &[Example],
        _items: &[DecodeItem],
        opts: &DecodingConfig,
        dev: &Device,
    ) -> Result<Vec<String>> {
        let opts = DecodingConfig {
            max_length: opts.max_length.min(100),
            ..opts.clone()
        };
        let mut out = Vec::new();
        for e in examples.iter().take(self.samples) {
            let prompt = &e.tgt[..e.tgt.len().min(PROMPT_TOKENS)];
            let s = continue_from(model, &p.tgt_vocab, prompt, 1, &opts, dev)?;
            out.push(s[0].text.clone());
        }
        Ok(out)
    }

    fn score(&self, _cfg: &Config, _hyps: &[String], _items: &[DecodeItem]) -> Scores {
        Scores::default()
    }

    fn has_references(&self) -> bool {
        false
    }
}
