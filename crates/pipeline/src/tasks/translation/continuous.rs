//! Greedy translation with continuous batching, for `seq2seq serve`: lines join a running
//! search between steps and leave it as soon as they end (see `seq2seq_decoder::Continuous`).
//! It applies to one model (no ensemble members), greedy decoding, and no attention rows or
//! token hook; each line is translated exactly as [`Translator::translate_detailed`] translates
//! it alone.

use std::collections::HashMap;

use seq2seq_decoder::{Continuous, SpecialTokens, Strategy};
use seq2seq_nn::Ctx;

use crate::config::DecodingConfig;
use crate::decode::text_source;
use crate::tasks::translation::{Translated, Translator};
use crate::Result;

/// A running greedy batch of a translator.
pub struct ContinuousTranslator<'a> {
    t: &'a Translator,
    run: Continuous<'a>,
    /// The source ids of each running line, by the caller's id.
    srcs: HashMap<u64, Vec<u32>>,
}

impl Translator {
    /// An empty continuous batch decoding with `opts`, or `None` where continuous batching does
    /// not apply (ensemble members, a strategy other than greedy, attention rows, a token hook).
    pub fn continuous(&self, opts: &DecodingConfig) -> Result<Option<ContinuousTranslator<'_>>> {
        if !self.ensemble.is_empty()
            || opts.strategy != Strategy::Greedy
            || opts.attention
            || opts.on_token.is_some()
        {
            return Ok(None);
        }
        let v = &self.tgt_vocab;
        let sp = SpecialTokens {
            pad: v.pad,
            bos: v.bos,
            eos: v.eos,
            unk: v.unk,
        };
        Ok(Some(ContinuousTranslator {
            t: self,
            run: Continuous::new(&self.model.decoder, sp, opts, &self.device)?,
            srcs: HashMap::new(),
        }))
    }
}

impl ContinuousTranslator<'_> {
    /// Lines joining the batch, one id each (sources over `data.max_src_len` are truncated, as
    /// `translate` truncates them).
    pub fn admit(&mut self, lines: &[String], ids: &[u64]) -> Result<()> {
        let (srcs, _) = self.t.encode_sources(lines)?;
        let rows: Vec<&[u32]> = srcs.iter().map(Vec::as_slice).collect();
        let source = text_source(&rows, self.t.src_vocab.pad, &self.t.device)?;
        let enc = self.t.model.encode(&source, &mut Ctx::eval())?;
        self.run.admit(&enc, ids)?;
        self.srcs.extend(ids.iter().copied().zip(srcs));
        Ok(())
    }

    /// One token for every running line; the lines that ended, translated.
    pub fn step(&mut self) -> Result<Vec<(u64, Translated)>> {
        let ended = self.run.step()?;
        ended
            .into_iter()
            .map(|(id, h)| {
                let src = self.srcs.remove(&id).unwrap_or_default();
                Ok((id, self.t.translated(&src, h)?))
            })
            .collect()
    }

    /// Lines in the batch.
    pub fn len(&self) -> usize {
        self.run.len()
    }

    pub fn is_empty(&self) -> bool {
        self.run.is_empty()
    }
}
