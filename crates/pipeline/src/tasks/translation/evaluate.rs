//! `seq2seq eval`: decode a split of the model's own corpus and score it with the community's
//! metrics (sacreBLEU-equal BLEU and chrF) and the model's perplexity.

use std::path::Path;

use seq2seq_metrics::{Bleu, BleuScore, Chrf, ChrfScore};

use crate::config::DecodingConfig;
use crate::model::{held_out_loss, BatchTensors};
use crate::tasks::text::{load_held_out, Keep, PairEncoding};
use crate::tasks::translation::Translator;
use crate::tasks::{Normalise, Split};
use crate::{Error, Result};

pub struct EvalReport {
    pub split: Split,
    pub items: usize,
    /// Cased BLEU against the raw references.
    pub bleu: BleuScore,
    /// Lowercased BLEU.
    pub bleu_lc: BleuScore,
    pub chrf: ChrfScore,
    /// Lowercased chrF.
    pub chrf_lc: ChrfScore,
    pub exact_match: f64,
    /// Loss per target token (eos included) and its exponent; of the ensemble's mixture when the
    /// translator has ensemble members.
    pub loss: f64,
    pub ppl: f64,
    pub hypotheses: Vec<String>,
    pub warnings: Vec<String>,
}

/// Decodes `split` of the corpus the model was trained on (resolved against `data_dir`) with
/// `opts`, and scores the first hypotheses.
pub fn evaluate(
    t: &Translator,
    split: Split,
    data_dir: &Path,
    opts: &DecodingConfig,
) -> Result<EvalReport> {
    let cfg = &t.config;
    let (valid, test) = load_held_out(&cfg.data, data_dir)?;
    let pairs = match split {
        Split::Valid => valid,
        Split::Test => test,
    };
    if pairs.is_empty() {
        return Err(Error::EmptySplit(split.name()));
    }
    let srcs: Vec<String> = pairs.iter().map(|p| p.src.clone()).collect();
    let (hyps, warnings) = t.translate(&srcs, opts)?;
    let refs: Vec<Vec<String>> = pairs.iter().map(|p| vec![p.tgt.clone()]).collect();
    let bleu = Bleu::default().corpus(&hyps, &refs);
    let bleu_lc = Bleu {
        lowercase: true,
        ..Bleu::default()
    }
    .corpus(&hyps, &refs);
    let chrf = Chrf::default().corpus(&hyps, &refs);
    let chrf_lc = Chrf {
        lowercase: true,
        ..Chrf::default()
    }
    .corpus(&hyps, &refs);
    let exact = Normalise::Text {
        lowercase: cfg.data.lowercase,
    }
    .exact_match(&hyps, &refs)
    .unwrap_or(0.0);
    // Perplexity over every pair, none filtered or truncated.
    let examples = PairEncoding {
        src: &t.src_vocab,
        tgt: &t.tgt_vocab,
        has_source: true,
    }
    .encode(&pairs, Keep::All)?
    .examples;
    let loss = held_out_loss(
        &t.members(),
        &examples,
        cfg.train.batch(),
        &t.tgt_vocab,
        |b| BatchTensors::new(b, &t.device),
    )?;
    Ok(EvalReport {
        split,
        items: pairs.len(),
        bleu,
        bleu_lc,
        chrf,
        chrf_lc,
        exact_match: exact,
        loss,
        ppl: loss.exp(),
        hypotheses: hyps,
        warnings,
    })
}
