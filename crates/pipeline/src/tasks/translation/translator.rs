//! The translation front end: lines of text into n-best lists, with the length limit the model
//! was trained with.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use crate::config::{DecodingConfig, Task};
use crate::decode::{decode_ids, load_dir, LoadedModel, NBest};
use crate::Result;

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
        Ok(Self(load_dir(dir, Task::Translation)?))
    }

    /// Translates lines into their n-best lists (one entry unless beam search asks for more);
    /// sources longer than `data.max_src_len` tokens are truncated to it and reported in the
    /// returned warnings (1-based line numbers).
    pub fn translate_nbest(
        &self,
        lines: &[String],
        opts: &DecodingConfig,
    ) -> Result<(Vec<NBest>, Vec<String>)> {
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
        let hyps = decode_ids(
            &self.members(),
            &srcs,
            &self.tgt_vocab,
            self.src_vocab.pad,
            opts,
            &self.device,
        )?;
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
