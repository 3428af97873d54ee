//! Translation: parallel text into a text encoder and the attentive decoder. Validation scores
//! greedy outputs with sacreBLEU's BLEU and exact match.

mod continuous;
mod evaluate;
mod forced;
pub mod heatmaps;
mod translator;

pub use continuous::ContinuousTranslator;
pub use evaluate::{evaluate, EvalReport};
pub use forced::PairScore;
pub use translator::{Translated, Translator};

use crate::config::Config;
use crate::observer::Observer;
use crate::tasks::RunFiles;
use crate::tasks::{text, DecodeItem, Normalise, Prepared, Scores, Task};
use crate::Result;

pub use crate::tasks::Split;

pub(crate) struct Translation;

impl Task for Translation {
    fn prepare(
        &mut self,
        cfg: &Config,
        files: RunFiles,
        obs: &mut dyn Observer,
    ) -> Result<Prepared> {
        text::prepare_pairs(cfg, files, obs)
    }

    fn score(&self, cfg: &Config, hyps: &[String], items: &[DecodeItem]) -> Scores {
        let refs: Vec<Vec<&str>> = items.iter().map(|it| vec![it.refs[0].as_str()]).collect();
        let bleu = seq2seq_metrics::Bleu {
            lowercase: cfg.data.lowercase,
            ..Default::default()
        };
        Scores {
            exact: Normalise::Text {
                lowercase: cfg.data.lowercase,
            }
            .exact_match(hyps, &refs),
            bleu: (!hyps.is_empty()).then(|| {
                let h: Vec<&str> = hyps.iter().map(|h| h.as_str()).collect();
                bleu.corpus(&h, &refs).score
            }),
        }
    }
}
