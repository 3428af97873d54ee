//! The three tasks. What differs between them in training and validation (how the corpus is
//! read and encoded, how a batch's source tensors are made, how a batch of items is decoded and
//! its outputs scored) is the [`Task`] trait; [`for_task`] is the one place that matches on the
//! configured task. Everything else (the loop, checkpoints, the model) is shared.

use candle_core::{Device, Tensor};
use seq2seq_data::{batches, Batch, BatchSize, Example, Vocab};
use seq2seq_decoder::Hypothesis;

use crate::config::{self, Config, DecodingConfig};
use crate::decode::decode_ids;
use crate::model::{BatchTensors, Seq2Seq};
use crate::observer::Observer;
use crate::Result;

pub mod captioning;
pub mod generation;
pub(crate) mod stream;
pub mod text;
pub mod translation;

/// Which held-out split to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Valid,
    Test,
}

impl Split {
    /// "valid" or "test".
    pub fn name(self) -> &'static str {
        match self {
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// One held-out input decoded in validation: its source ids (for captioning: the image index),
/// what to show for it, and its references.
#[derive(Clone, Debug)]
pub(crate) struct DecodeItem {
    pub src: Vec<u32>,
    pub label: String,
    pub refs: Vec<String>,
}

/// Every split of a training corpus, encoded, with the vocabularies (a model without a source
/// vocabulary has its target vocabulary in both places).
pub(crate) struct Prepared {
    pub src_vocab: Vocab,
    pub tgt_vocab: Vocab,
    /// The training examples (none when they are streamed).
    pub train: std::sync::Arc<Vec<Example>>,
    /// The training split read as a stream (`data.streaming`), one shuffle buffer at a time.
    pub stream: Option<stream::TrainStream>,
    pub valid: Vec<Example>,
    pub valid_items: Vec<DecodeItem>,
    pub test: Vec<Example>,
    pub test_items: Vec<DecodeItem>,
}

/// Validation figures that compare outputs with references.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Scores {
    pub exact: Option<f64>,
    pub bleu: Option<f64>,
}

/// What [`Task::prepare`] needs of a run's options: where the corpus is, and where the
/// vocabularies are written (or, on resume, read back). Not `TrainOptions`, so that the tasks do
/// not depend on the training loop that drives them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunFiles<'a> {
    pub data_dir: &'a std::path::Path,
    pub out: &'a std::path::Path,
    /// Read the vocabularies back from `out` (a resumed run, or one started from a checkpoint
    /// whose vocabularies were copied there) instead of training them.
    pub resume: bool,
}

/// A frozen backbone's checkpoint, read for training.
pub(crate) struct Backbone {
    /// Its file: the feature cache is keyed by its contents.
    pub checkpoint: std::path::PathBuf,
    pub tensors: std::collections::HashMap<String, Tensor>,
}

/// What a task does in training and validation. One value per run: `prepare` may keep what the
/// task needs later (the captioning corpus's images), `attach` sees the built model.
pub(crate) trait Task {
    /// Loads the corpus, builds the vocabularies (or reloads them when resuming) and encodes
    /// every split.
    fn prepare(
        &mut self,
        cfg: &Config,
        files: RunFiles,
        obs: &mut dyn Observer,
    ) -> Result<Prepared>;

    /// Called once the model is built (captioning readies its images for the image encoder).
    fn attach(
        &mut self,
        _cfg: &Config,
        _model: &Seq2Seq,
        _backbone: Option<&Backbone>,
        _obs: &mut dyn Observer,
    ) -> Result<()> {
        Ok(())
    }

    /// The batches of one epoch, as indices into the training examples.
    fn epoch_batches(
        &self,
        train: &[Example],
        size: BatchSize,
        seed: u64,
        epoch: u64,
    ) -> Vec<Vec<usize>> {
        batches(train, size, seed, epoch, true)
    }

    /// A batch's tensors; `train` turns on augmentation, drawn from `seed`.
    fn batch(
        &self,
        b: &Batch,
        _examples: &[Example],
        _train: bool,
        _seed: u64,
        dev: &Device,
    ) -> Result<BatchTensors> {
        BatchTensors::new(b, dev)
    }

    /// Validation's outputs as text: the best hypothesis for each of `items`, decoded with
    /// `opts` (a language model continues the first tokens of a few of `examples` instead).
    fn outputs(
        &self,
        model: &Seq2Seq,
        p: &Prepared,
        _examples: &[Example],
        items: &[DecodeItem],
        opts: &DecodingConfig,
        dev: &Device,
    ) -> Result<Vec<String>> {
        let srcs: Vec<Vec<u32>> = items.iter().map(|e| e.src.clone()).collect();
        let hyps = decode_ids(&[model], &srcs, &p.tgt_vocab, p.src_vocab.pad, opts, dev)?;
        best_texts(&p.tgt_vocab, &hyps)
    }

    /// Validation outputs against the items' references.
    fn score(&self, cfg: &Config, hyps: &[String], items: &[DecodeItem]) -> Scores;

    /// The BLEU its literature reports, as validation logs name it.
    fn bleu_name(&self) -> &'static str {
        "BLEU"
    }

    /// False for a language model: validation shows continuations instead of scoring outputs.
    fn has_references(&self) -> bool {
        true
    }
}

/// The task of a config: the one match on the task in training.
pub(crate) fn for_task(kind: config::Task) -> Box<dyn Task> {
    match kind {
        config::Task::Translation => Box::new(translation::Translation),
        config::Task::Generation => Box::new(generation::Generation { samples: 0 }),
        config::Task::Captioning => Box::<captioning::Captioning>::default(),
    }
}

/// How an output is compared with its references for exact match.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Normalise {
    /// sacreBLEU's `intl` tokenisation (punctuation split off, so that spacing around it does
    /// not count: references may be tokenised, outputs are detokenised), and lowercased when the
    /// model's data is (`data.lowercase`).
    Text { lowercase: bool },
    /// pycocoevalcap's caption tokenisation.
    Caption,
}

/// `s` tokenised as sacreBLEU's `intl` does, words separated by single spaces.
fn words(s: &str) -> String {
    seq2seq_metrics::Tokenizer::Intl.tokenize(s)
}

impl Normalise {
    pub fn apply(self, s: &str) -> String {
        match self {
            Self::Text { lowercase: true } => words(&s.to_lowercase()),
            Self::Text { lowercase: false } => words(s),
            Self::Caption => seq2seq_metrics::caption_tokenize(s),
        }
    }

    /// The share of outputs equal to one of their references; `None` without outputs.
    pub fn exact_match<R: AsRef<str>>(self, hyps: &[String], refs: &[Vec<R>]) -> Option<f64> {
        if hyps.is_empty() {
            return None;
        }
        let hits = hyps
            .iter()
            .zip(refs)
            .filter(|(h, rs)| {
                let h = self.apply(h);
                rs.iter().any(|r| self.apply(r.as_ref()) == h)
            })
            .count();
        Some(hits as f64 / hyps.len() as f64)
    }
}

/// The text of each input's best hypothesis.
pub(crate) fn best_texts(vocab: &Vocab, hyps: &[Vec<Hypothesis>]) -> Result<Vec<String>> {
    hyps.iter()
        .map(|h| Ok(vocab.decode(&h[0].tokens)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_ignores_spacing_around_punctuation_only() {
        let n = Normalise::Text { lowercase: false };
        assert_eq!(n.apply(" ein kind rennt . "), n.apply("ein kind rennt."));
        assert_eq!(n.apply("“Hi,” she said"), n.apply("“ Hi , ” she said"));
        assert_eq!(n.apply("don’t"), n.apply("don ’ t"));
        assert_ne!(n.apply("Ein Kind"), n.apply("ein kind"));
        assert_ne!(n.apply("einkind"), n.apply("ein kind"));
        let lc = Normalise::Text { lowercase: true };
        assert_eq!(lc.apply("Ein Kind."), lc.apply("ein kind ."));
    }
}
