//! The translation front end: lines of text into n-best lists, with the length limit the model
//! was trained with.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use seq2seq_decoder::Hypothesis;
use serde::Serialize;

use crate::config::{DecodingConfig, Task};
use crate::decode::{decode_ids, load_dir, LoadedModel, NBest};
use crate::Result;

/// One hypothesis with its tokens and attention (see [`Translator::translate_detailed`]).
#[derive(Clone, Debug, Serialize)]
pub struct Translated {
    pub text: String,
    pub score: f64,
    pub source_tokens: Vec<String>,
    pub tokens: Vec<String>,
    /// `attention[i][j]`: output token `i`'s weight on source token `j` (empty unless asked).
    pub attention: Vec<Vec<f32>>,
}

/// A translation model loaded from its directory (with any ensemble members).
pub struct Translator(LoadedModel);

impl Deref for Translator {
    type Target = LoadedModel;
    fn deref(&self) -> &LoadedModel {
        &self.0
    }
}

impl DerefMut for Translator {
    fn deref_mut(&mut self) -> &mut LoadedModel {
        &mut self.0
    }
}

impl Translator {
    /// Loads a translation model directory written by `train`, or one checkpoint file in it.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &candle_core::Device::Cpu)
    }

    /// [`Self::load`] onto `device`.
    pub fn load_on(dir: &Path, device: &candle_core::Device) -> Result<Self> {
        Ok(Self(load_dir(dir, Task::Translation, device)?))
    }

    /// Translates lines into their n-best lists (one entry unless beam search asks for more);
    /// sources longer than `data.max_src_len` tokens are truncated to it and reported in the
    /// returned warnings (1-based line numbers).
    pub fn translate_nbest(
        &self,
        lines: &[String],
        opts: &DecodingConfig,
    ) -> Result<(Vec<NBest>, Vec<String>)> {
        let (_, hyps, warnings) = self.search(lines, opts)?;
        let mut outs = Vec::with_capacity(hyps.len());
        for nbest in hyps {
            outs.push(
                nbest
                    .iter()
                    .map(|h| Ok((self.tgt_vocab.decode(&h.tokens)?, h.score)))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok((outs, warnings))
    }

    /// [`Self::translate_nbest`] with what produced each hypothesis: the source and output
    /// tokens as the vocabularies spell them, and (with `opts.attention`) one attention row per
    /// output step over the source tokens (eos included when the hypothesis ended with it).
    pub fn translate_detailed(
        &self,
        lines: &[String],
        opts: &DecodingConfig,
    ) -> Result<(Vec<Vec<Translated>>, Vec<String>)> {
        let (srcs, hyps, warnings) = self.search(lines, opts)?;
        let mut outs = Vec::with_capacity(hyps.len());
        for (src, nbest) in srcs.iter().zip(hyps) {
            let list = nbest
                .into_iter()
                .map(|h| self.translated(src, h))
                .collect::<Result<Vec<_>>>()?;
            outs.push(list);
        }
        Ok((outs, warnings))
    }

    /// A hypothesis of source `src` as text, with its tokens and attention rows.
    pub(crate) fn translated(&self, src: &[u32], h: Hypothesis) -> Result<Translated> {
        // An empty line still has one (padding) position the decoder attended to.
        let width = src.len().max(1);
        let pad = [self.src_vocab.pad];
        let source_tokens = self
            .src_vocab
            .tokens(if src.is_empty() { &pad } else { src });
        let mut tokens = self.tgt_vocab.tokens(&h.tokens);
        if h.attention.len() > h.tokens.len() {
            tokens.extend(self.tgt_vocab.tokens(&[self.tgt_vocab.eos]));
        }
        Ok(Translated {
            text: self.tgt_vocab.decode(&h.tokens)?,
            score: h.score,
            source_tokens,
            tokens,
            attention: h
                .attention
                .into_iter()
                .map(|mut row| {
                    row.truncate(width);
                    row
                })
                .collect(),
        })
    }

    /// The lines' source token ids, each truncated to `data.max_src_len` with a warning naming
    /// its (1-based) line.
    pub(crate) fn encode_sources(&self, lines: &[String]) -> Result<(Vec<Vec<u32>>, Vec<String>)> {
        let max = self.config.data.max_src_len;
        let mut warnings = Vec::new();
        let mut srcs = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let mut ids = self.src_vocab.encode(l)?;
            if ids.len() > max {
                warnings.push(format!(
                    "input line {}: {} tokens, truncated to the model's maximum of {max} (data.max_src_len)",
                    i + 1,
                    ids.len()
                ));
                ids.truncate(max);
            }
            srcs.push(ids);
        }
        Ok((srcs, warnings))
    }

    /// Encodes the lines (truncating the long ones, with a warning each) and searches.
    #[allow(clippy::type_complexity)]
    fn search(
        &self,
        lines: &[String],
        opts: &DecodingConfig,
    ) -> Result<(Vec<Vec<u32>>, Vec<Vec<Hypothesis>>, Vec<String>)> {
        let (srcs, warnings) = self.encode_sources(lines)?;
        let hyps = decode_ids(
            &self.members(),
            &srcs,
            &self.tgt_vocab,
            self.src_vocab.pad,
            opts,
            &self.device,
        )?;
        Ok((srcs, hyps, warnings))
    }

    /// Translates lines to their best hypothesis (see [`Self::translate_nbest`]).
    pub fn translate(
        &self,
        lines: &[String],
        opts: &DecodingConfig,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let (nbest, warnings) = self.translate_nbest(lines, opts)?;
        Ok((
            nbest.into_iter().map(|mut n| n.swap_remove(0).0).collect(),
            warnings,
        ))
    }
}
