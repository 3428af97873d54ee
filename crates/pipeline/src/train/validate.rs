//! Validation: held-out loss, greedy decoding of held-out items, exact match and BLEU (BLEU-4 as
//! pycocoevalcap computes it for captions, sacreBLEU for translation); samples for a language model.

use candle_core::Device;
use seq2seq_decoder::{DecodingOptions, Strategy};

use crate::config::{Config, EarlyStopMetric};
use crate::model::{held_out_loss, Seq2Seq};
use crate::tasks::{DecodeItem, Prepared, Split, Task};
use crate::Result;

/// Validation figures.
pub(crate) struct Validation {
    pub loss: f64,
    pub ppl: f64,
    pub exact: Option<f64>,
    pub bleu: Option<f64>,
    pub hyps: Vec<String>,
}

impl Validation {
    /// The log entry of a validation during training: its figures, then the first `samples`
    /// outputs beside their inputs and first references (a language model's continuations alone).
    pub fn report(
        &self,
        step: usize,
        improved: bool,
        bleu_name: &str,
        items: &[DecodeItem],
        samples: usize,
        generation: bool,
    ) -> String {
        let mut msg = format!(
            "validation at step {step}: loss {:.4} | ppl {:.2}",
            self.loss, self.ppl
        );
        if let Some(e) = self.exact {
            msg.push_str(&format!(" | exact match {:.1}%", 100.0 * e));
        }
        if let Some(b) = self.bleu {
            msg.push_str(&format!(" | {bleu_name} {b:.2}"));
        }
        if improved {
            msg.push_str(" | new best, saved");
        }
        for (i, hyp) in self.hyps.iter().take(samples).enumerate() {
            if generation {
                msg.push_str(&format!("\n  sample: {hyp}"));
            } else {
                msg.push_str(&format!(
                    "\n  src: {}\n  ref: {}\n  hyp: {hyp}",
                    items[i].label, items[i].refs[0]
                ));
            }
        }
        msg
    }
}

/// Validates `model` on a held-out `split` of the prepared corpus: the loss over every example,
/// then greedy outputs for the first `decode_limit` items (0: all) scored by the task.
pub(crate) fn validate(
    task: &dyn Task,
    model: &Seq2Seq,
    p: &Prepared,
    cfg: &Config,
    split: Split,
    decode_limit: usize,
    dev: &Device,
) -> Result<Validation> {
    let (examples, items) = match split {
        Split::Valid => (&p.valid, &p.valid_items),
        Split::Test => (&p.test, &p.test_items),
    };
    let loss = held_out_loss(&[model], examples, cfg.train.batch(), &p.tgt_vocab, |b| {
        task.batch(b, examples, false, 0, dev)
    })?;
    let n = if decode_limit == 0 {
        items.len()
    } else {
        decode_limit.min(items.len())
    };
    let items = &items[..n];
    // Unless told otherwise, validation decodes greedily whatever the configured strategy:
    // fast and comparable.
    let opts = cfg
        .train
        .valid_decoding
        .clone()
        .unwrap_or_else(|| DecodingOptions {
            strategy: Strategy::Greedy,
            ..cfg.decoding.clone()
        });
    let hyps = task.outputs(model, p, examples, items, &opts, dev)?;
    let scores = task.score(cfg, &hyps, items);
    Ok(Validation {
        loss,
        ppl: loss.exp(),
        exact: scores.exact,
        bleu: scores.bleu,
        hyps,
    })
}

/// The early-stopping score of a validation: lower is better.
pub(crate) fn score(v: &Validation, metric: EarlyStopMetric) -> f64 {
    match metric {
        EarlyStopMetric::Loss => v.loss,
        EarlyStopMetric::Exact => 1.0 - v.exact.unwrap_or(0.0),
        EarlyStopMetric::Bleu => 100.0 - v.bleu.unwrap_or(0.0),
    }
}
