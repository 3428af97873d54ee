//! Vocabularies built with HF `tokenizers`: char-level, word-level and BPE, saved as
//! `tokenizer.json`, with the special tokens pad/unk/bos/eos at ids 0..=3.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Lowercase, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizedString, Normalizer, NormalizerWrapper,
    PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::detok::{capitalise_sentences, detokenize};
use crate::DataError;

pub const PAD: &str = "<pad>";
pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";

/// Token granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every Unicode character is a token (spaces included).
    Char,
    /// Words and punctuation marks split on `\w+|[^\w\s]+`.
    Word,
    /// Byte-pair encoding learned on the training split (SentencePiece-style `▁` word marks).
    Bpe,
}

/// How to build one vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct VocabSpec {
    pub level: Level,
    pub lowercase: bool,
    /// Keep tokens seen at least this often (word/char); minimum pair frequency for BPE.
    pub min_freq: u64,
    /// Maximum vocabulary size, special tokens included (the BPE target size).
    pub max_size: usize,
}

/// A trained tokenizer with the ids of its special tokens.
#[derive(Clone)]
pub struct Vocab {
    tok: Tokenizer,
    /// Whether the normaliser lowercases (then decoded text gets its sentence starts back).
    lowercase: bool,
    pub pad: u32,
    pub unk: u32,
    pub bos: u32,
    pub eos: u32,
}

fn specials() -> Vec<AddedToken> {
    [PAD, UNK, BOS, EOS]
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect()
}

fn terr(e: tokenizers::Error) -> DataError {
    DataError::Tokenizer(e.to_string())
}

/// The tokenizer of a level before training: model, normalisation (NFC, optionally lowercase),
/// pre-tokenisation and decoder.
fn untrained(spec: &VocabSpec) -> Result<Tokenizer, DataError> {
    let mut tok = match spec.level {
        Level::Char | Level::Word => Tokenizer::new(
            WordLevel::builder()
                .unk_token(UNK.to_string())
                .build()
                .map_err(terr)?,
        ),
        Level::Bpe => Tokenizer::new(
            BPE::builder()
                .unk_token(UNK.to_string())
                .build()
                .map_err(terr)?,
        ),
    };
    let mut norms = vec![NormalizerWrapper::NFC(NFC)];
    if spec.lowercase {
        norms.push(NormalizerWrapper::Lowercase(Lowercase));
    }
    tok.with_normalizer(Some(NormalizerWrapper::Sequence(NormSeq::new(norms))))
        .map_err(terr)?;
    match spec.level {
        Level::Char => {
            let split = Split::new(
                SplitPattern::Regex("(?s).".into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(terr)?;
            tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
            tok.with_decoder(Some(DecoderWrapper::Fuse(Fuse::new())));
        }
        Level::Word => {
            tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Whitespace(Whitespace {})));
        }
        Level::Bpe => {
            tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                '▁',
                PrependScheme::Always,
                true,
            ))));
            tok.with_decoder(Some(DecoderWrapper::Metaspace(MetaspaceDecoder::new(
                '▁',
                PrependScheme::Always,
                true,
            ))));
        }
    }
    Ok(tok)
}

/// The trainer of a level; `max_size` 0 is no limit (BPE: 8000 merges).
fn trainer(spec: &VocabSpec) -> Result<TrainerWrapper, DataError> {
    let max = if spec.max_size == 0 {
        usize::MAX
    } else {
        spec.max_size
    };
    Ok(match spec.level {
        Level::Char | Level::Word => TrainerWrapper::WordLevelTrainer(
            WordLevelTrainer::builder()
                .min_frequency(spec.min_freq)
                .vocab_size(max)
                .show_progress(false)
                .special_tokens(specials())
                .build()
                .map_err(|e| DataError::Tokenizer(e.to_string()))?,
        ),
        Level::Bpe => TrainerWrapper::BpeTrainer(
            BpeTrainerBuilder::new()
                .vocab_size(if spec.max_size == 0 {
                    8000
                } else {
                    spec.max_size
                })
                .min_frequency(spec.min_freq)
                .show_progress(false)
                .special_tokens(specials())
                .build(),
        ),
    })
}

impl Vocab {
    /// Learns a vocabulary from training texts.
    pub fn train<S: AsRef<str> + Send + Sync>(
        spec: &VocabSpec,
        texts: &[S],
    ) -> Result<Self, DataError> {
        let mut tok = untrained(spec)?;
        let mut trainer = trainer(spec)?;
        tok.train(&mut trainer, texts.iter()).map_err(terr)?;
        Self::from_tokenizer(tok).map_err(DataError::Tokenizer)
    }

    /// Learns a vocabulary from texts read one at a time (a streamed corpus): only the
    /// trainer's counts are held. The first read error stops the stream and is returned.
    pub fn train_stream<I>(spec: &VocabSpec, texts: I) -> Result<Self, DataError>
    where
        I: Iterator<Item = Result<String, DataError>> + Send,
    {
        let failed: std::sync::Mutex<Option<DataError>> = Default::default();
        let ok = texts.map_while(|t| match t {
            Ok(t) => Some(t),
            Err(e) => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                None
            }
        });
        let mut tok = untrained(spec)?;
        let mut trainer = trainer(spec)?;
        let trained = tok.train(&mut trainer, ok).map(|_| ()).map_err(terr);
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        trained?;
        Self::from_tokenizer(tok).map_err(DataError::Tokenizer)
    }

    fn from_tokenizer(tok: Tokenizer) -> Result<Self, String> {
        let id = |s: &str| {
            tok.token_to_id(s)
                .ok_or_else(|| format!("the vocabulary lacks the special token {s}"))
        };
        let lowercase = tok.get_normalizer().is_some_and(|n| {
            let mut probe = NormalizedString::from("A");
            n.normalize(&mut probe).is_ok() && probe.get() == "a"
        });
        Ok(Self {
            lowercase,
            pad: id(PAD)?,
            unk: id(UNK)?,
            bos: id(BOS)?,
            eos: id(EOS)?,
            tok,
        })
    }

    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let err = |msg: String| DataError::TokenizerFile {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => err("file not found".into()),
            _ => err(e.to_string()),
        })?;
        // tokenizers 0.23 panics (`expect("Helper")` in its decoder deserialiser) on JSON that
        // does not parse, rather than returning an error: check the syntax first (fuzz finding).
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| err(format!("not valid JSON: {e}")))?;
        let tok = text.parse::<Tokenizer>().map_err(|e| err(e.to_string()))?;
        Self::from_tokenizer(tok).map_err(err)
    }

    /// The tokenizer as JSON (the content of `tokenizer.json`).
    pub fn to_json(&self) -> Result<String, DataError> {
        self.tok
            .to_string(true)
            .map_err(|e| DataError::Tokenizer(e.to_string()))
    }

    pub fn len(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of a text, without bos/eos.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        Ok(self
            .tok
            .encode(text, false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The pieces of `text` that encode to the unknown token, in order (a prompt's words a
    /// cased vocabulary never saw in that case, say), so that a caller can say what was lost.
    pub fn unknown_words(&self, text: &str) -> Result<Vec<String>, DataError> {
        let enc = self
            .tok
            .encode(text, false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .filter(|(&id, _)| id == self.unk)
            .map(|(_, &(a, b))| text.get(a..b).unwrap_or(UNK).to_string())
            .collect())
    }

    /// Text of token ids, special tokens skipped: the tokenizer's own decoder where it has one
    /// (char level and BPE restore the text exactly), else the word level's rule-based
    /// [`detokenize`]; sentence starts capitalised when the vocabulary is lowercased.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        let text = if self.tok.get_decoder().is_some() {
            self.tok
                .decode(ids, true)
                .map_err(|e| DataError::Tokenizer(e.to_string()))?
        } else {
            let special = [self.pad, self.unk, self.bos, self.eos];
            let words: Vec<String> = ids
                .iter()
                .filter(|i| !special.contains(i))
                .filter_map(|&i| self.tok.id_to_token(i))
                .collect();
            detokenize(&words)
        };
        Ok(if self.lowercase {
            capitalise_sentences(&text)
        } else {
            text
        })
    }

    /// Whether the vocabulary lowercases its text.
    pub fn lowercases(&self) -> bool {
        self.lowercase
    }

    /// The surface form of each token (for inspection and attention plots).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.tok.id_to_token(i).unwrap_or_else(|| UNK.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = [
        "A man is riding a horse.",
        "A woman is riding a bike.",
        "Two dogs play in the snow.",
        "a man sleeps.",
    ];

    fn spec(level: Level, lowercase: bool) -> VocabSpec {
        VocabSpec {
            level,
            lowercase,
            min_freq: 1,
            max_size: 0,
        }
    }

    #[test]
    fn unknown_words_are_named_as_written() {
        let cased = Vocab::train(&spec(Level::Word, false), &TEXTS).unwrap();
        assert_eq!(
            cased.unknown_words("a Man is riding a zebra.").unwrap(),
            ["Man", "zebra"]
        );
        let lc = Vocab::train(&spec(Level::Word, true), &TEXTS).unwrap();
        assert_eq!(
            lc.unknown_words("A MAN is riding").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn specials_come_first_for_every_level() {
        for level in [Level::Char, Level::Word, Level::Bpe] {
            let v = Vocab::train(
                &VocabSpec {
                    max_size: 60,
                    ..spec(level, false)
                },
                &TEXTS,
            )
            .unwrap();
            assert_eq!((v.pad, v.unk, v.bos, v.eos), (0, 1, 2, 3), "{level:?}");
        }
    }

    #[test]
    fn char_round_trip_keeps_spaces_and_maps_unknowns() {
        let v = Vocab::train(&spec(Level::Char, false), &TEXTS).unwrap();
        let ids = v.encode("A dog is riding.").unwrap();
        assert_eq!(ids.len(), 16);
        assert_eq!(v.decode(&ids).unwrap(), "A dog is riding.");
        let ids = v.encode("Qz").unwrap();
        assert_eq!(ids, vec![v.unk, v.unk]);
    }

    #[test]
    fn word_level_lowercases_and_respects_min_freq() {
        let v = Vocab::train(
            &VocabSpec {
                min_freq: 2,
                ..spec(Level::Word, true)
            },
            &TEXTS,
        )
        .unwrap();
        let ids = v.encode("A MAN is riding a cat .").unwrap();
        // Rule-based spacing, and the sentence start a lowercased vocabulary lost.
        assert_eq!(v.decode(&ids).unwrap(), "A man is riding a.");
        assert_eq!(ids[5], v.unk);
        // 4 specials + words seen twice or more: a, man, is, riding, .
        assert_eq!(v.len(), 9);
    }

    #[test]
    fn every_level_gives_text_back() {
        let text = "A man, riding. “Two dogs” play in the snow!";
        let texts = [text, "A woman is riding a bike."];
        for (level, lowercase, want) in [
            (Level::Char, false, text),
            (Level::Bpe, false, text),
            (Level::Word, false, text),
            (
                Level::Char,
                true,
                "A man, riding. “Two dogs” play in the snow!",
            ),
            (
                Level::Bpe,
                true,
                "A man, riding. “Two dogs” play in the snow!",
            ),
            (
                Level::Word,
                true,
                "A man, riding. “Two dogs” play in the snow!",
            ),
        ] {
            let v = Vocab::train(&spec(level, lowercase), &texts).unwrap();
            assert_eq!(v.lowercases(), lowercase);
            let ids = v.encode(text).unwrap();
            assert_eq!(
                v.decode(&ids).unwrap(),
                want,
                "{level:?} lowercase {lowercase}"
            );
            // A saved and reloaded vocabulary decodes the same way.
            let again = Vocab::from_tokenizer(v.to_json().unwrap().parse().unwrap()).unwrap();
            assert_eq!(again.decode(&ids).unwrap(), want);
        }
        // Lowercased, only sentence starts come back.
        let v = Vocab::train(&spec(Level::Bpe, true), &texts).unwrap();
        let ids = v.encode("a Woman is riding. Two dogs").unwrap();
        assert_eq!(v.decode(&ids).unwrap(), "A woman is riding. Two dogs");
    }

    #[test]
    fn bpe_round_trip_and_json_reload() {
        let v = Vocab::train(
            &VocabSpec {
                max_size: 50,
                ..spec(Level::Bpe, false)
            },
            &TEXTS,
        )
        .unwrap();
        let s = "A man is riding a bike.";
        let ids = v.encode(s).unwrap();
        assert_eq!(v.decode(&ids).unwrap(), s);
        let dir = std::env::temp_dir().join(format!("s2s-vocab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, v.to_json().unwrap()).unwrap();
        let w = Vocab::load(&p).unwrap();
        assert_eq!(w.encode(s).unwrap(), ids);
        std::fs::write(&p, "{ not json").unwrap();
        let e = Vocab::load(&p).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
