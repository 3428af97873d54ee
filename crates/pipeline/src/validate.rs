//! Validation: held-out loss, greedy decoding of held-out items, exact match and BLEU (BLEU-4 as
//! pycocoevalcap computes it for captions, sacreBLEU for translation); samples for a language model.

use candle_core::Device;
use seq2seq_data::Example;

use crate::config::{Config, EarlyStopMetric, Task};
use crate::images::ImageBank;
use crate::inference::{decode_ids, decode_sources};
use crate::model::{held_out_loss, Seq2Seq, Source};
use crate::prepare::{batch_tensors, DecodeItem, Prepared};
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn validate(
    model: &Seq2Seq,
    p: &Prepared,
    bank: Option<&ImageBank>,
    cfg: &Config,
    examples: &[Example],
    items: &[DecodeItem],
    decode_limit: usize,
    dev: &Device,
) -> Result<Validation> {
    let loss = held_out_loss(
        &[model],
        examples,
        cfg.train.batch_size,
        &p.tgt_vocab,
        |b| batch_tensors(b, examples, bank, false, 0, dev),
    )?;
    if cfg.task == Task::Generation {
        // A language model has no reference output: show greedy continuations of the first
        // tokens of a few held-out items instead of an exact-match rate.
        let opts = seq2seq_decoder::DecodingOptions {
            strategy: seq2seq_decoder::Strategy::Greedy,
            max_length: cfg.decoding.max_length.min(100),
            ..cfg.decoding.clone()
        };
        let mut hyps = Vec::new();
        for e in examples.iter().take(cfg.train.valid_samples) {
            let prompt = &e.tgt[..e.tgt.len().min(10)];
            let s = crate::generate::continue_from(model, &p.tgt_vocab, prompt, 1, &opts, dev)?;
            hyps.push(s[0].text.clone());
        }
        return Ok(Validation {
            loss,
            ppl: loss.exp(),
            exact: None,
            bleu: None,
            hyps,
        });
    }
    let n = if decode_limit == 0 {
        items.len()
    } else {
        decode_limit.min(items.len())
    };
    let items = &items[..n];
    let srcs: Vec<Vec<u32>> = items.iter().map(|e| e.src.clone()).collect();
    // Validation decodes greedily whatever the configured strategy: fast and comparable.
    let opts = seq2seq_decoder::DecodingOptions {
        strategy: seq2seq_decoder::Strategy::Greedy,
        ..cfg.decoding.clone()
    };
    let hyps = match bank {
        None => decode_ids(&[model], &srcs, &p.tgt_vocab, p.src_vocab.pad, &opts, dev)?,
        Some(bank) => {
            let order: Vec<usize> = (0..n).collect();
            let source = |chunk: &[usize]| -> Result<Source> {
                let ids: Vec<usize> = chunk.iter().map(|&i| srcs[i][0] as usize).collect();
                Ok(Source::image(bank.batch(&ids, false, 0, dev)?))
            };
            decode_sources(&[model], n, &order, source, &p.tgt_vocab, &opts, dev)?
        }
    };
    let hyps: Vec<String> = hyps
        .iter()
        .map(|h| p.tgt_vocab.decode(&h[0].tokens))
        .collect::<std::result::Result<_, _>>()?;
    let captioning = cfg.task == Task::Captioning;
    let norm = |s: &str| {
        if captioning {
            seq2seq_metrics::caption_tokenize(s)
        } else if cfg.data.lowercase {
            s.trim().to_lowercase()
        } else {
            s.trim().to_string()
        }
    };
    let exact = (!hyps.is_empty()).then(|| {
        let hits = hyps
            .iter()
            .zip(items)
            .filter(|(h, it)| it.refs.iter().any(|r| norm(h) == norm(r)))
            .count();
        hits as f64 / hyps.len() as f64
    });
    let bleu = (!hyps.is_empty()).then(|| {
        if captioning {
            // BLEU-4 as the captioning papers report it (pycocoevalcap), in percent.
            let h: Vec<String> = hyps.iter().map(|h| norm(h)).collect();
            let r: Vec<Vec<String>> = items
                .iter()
                .map(|it| it.refs.iter().map(|r| norm(r)).collect())
                .collect();
            100.0 * seq2seq_metrics::coco_bleu(&h, &r)[3]
        } else {
            let refs: Vec<Vec<&str>> = items.iter().map(|it| vec![it.refs[0].as_str()]).collect();
            let b = seq2seq_metrics::Bleu {
                lowercase: cfg.data.lowercase,
                ..Default::default()
            };
            b.corpus(&hyps.iter().map(|h| h.as_str()).collect::<Vec<_>>(), &refs)
                .score
        }
    });
    Ok(Validation {
        loss,
        ppl: loss.exp(),
        exact,
        bleu,
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
