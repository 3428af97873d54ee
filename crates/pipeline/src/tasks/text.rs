//! The text corpora of translation and generation: the configured files read into
//! train/valid/test pairs, and pairs encoded into examples.

use std::path::{Path, PathBuf};

use seq2seq_data::corpus::read_lines;
use seq2seq_data::{
    read_csv, read_parallel, read_tsv, seeded_split, synthetic, Example, Pair, Vocab,
};

use crate::config::{resolve_path, Config, DataConfig, DataFormat, VocabConfig};
use crate::model_dir::{self, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::observer::Observer;
use crate::tasks::{stream, RunFiles};
use crate::tasks::{DecodeItem, Prepared};
use crate::{Error, Result};

pub struct Splits {
    pub train: Vec<Pair>,
    pub valid: Vec<Pair>,
    pub test: Vec<Pair>,
}

pub(crate) fn root(cfg: &DataConfig, data_dir: &Path) -> PathBuf {
    resolve_path(data_dir, &cfg.root)
}

/// Reads the corpus the config names, resolved against `data_dir`.
pub fn load_splits(cfg: &DataConfig, data_dir: &Path) -> Result<Splits> {
    let file = || root(cfg, data_dir).join(&cfg.file);
    match cfg.format {
        DataFormat::Parallel => parallel(cfg, &root(cfg, data_dir)),
        DataFormat::Tsv => {
            let pairs = read_tsv(&file(), cfg.src_column, cfg.tgt_column)?;
            Ok(split(cfg, pairs))
        }
        DataFormat::Dates => Ok(dates(cfg)),
        DataFormat::Lines => {
            let items = read_lines(&file())?
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .map(target_only)
                .collect();
            Ok(split(cfg, items))
        }
        DataFormat::Csv => csv(cfg, &file()),
        DataFormat::Flickr8k | DataFormat::Karpathy | DataFormat::Coco | DataFormat::Shapes => {
            Err(Error::NotText(cfg.format))
        }
        DataFormat::Text => {
            // The windows are cut after tokenisation (see `generation::corpus`); here the text
            // is its lines.
            let train = read_lines(&file())?.into_iter().map(target_only).collect();
            Ok(Splits {
                train,
                valid: Vec::new(),
                test: Vec::new(),
            })
        }
    }
}

/// The held-out splits (valid, test) of the corpus the config names: for a streamed corpus the
/// ones its training drew, by number, without reading its training split into memory.
pub fn load_held_out(cfg: &DataConfig, data_dir: &Path) -> Result<(Vec<Pair>, Vec<Pair>)> {
    if cfg.streaming {
        let c = stream::source_and_held_out(cfg, data_dir)?;
        return Ok((c.valid, c.test));
    }
    let s = load_splits(cfg, data_dir)?;
    Ok((s.valid, s.test))
}

/// An item of a corpus without sources (a language model's).
fn target_only(tgt: String) -> Pair {
    Pair {
        src: String::new(),
        tgt,
    }
}

/// Held-out sets drawn from one list by `data.split_seed`.
fn split(cfg: &DataConfig, items: Vec<Pair>) -> Splits {
    let (train, valid, test) = seeded_split(items, cfg.valid_size, cfg.test_size, cfg.split_seed);
    Splits { train, valid, test }
}

/// The files `{split}.{src_lang}` and `{split}.{tgt_lang}` of a parallel corpus.
pub(crate) fn parallel_files(cfg: &DataConfig, root: &Path, split: &str) -> (PathBuf, PathBuf) {
    let f = |lang: &str| root.join(format!("{split}.{lang}"));
    (f(&cfg.src_lang), f(&cfg.tgt_lang))
}

/// One split of a parallel corpus; an empty split name is an empty split.
pub(crate) fn parallel_split(cfg: &DataConfig, root: &Path, split: &str) -> Result<Vec<Pair>> {
    if split.is_empty() {
        return Ok(Vec::new());
    }
    let (src, tgt) = parallel_files(cfg, root, split);
    Ok(read_parallel(&src, &tgt)?)
}

/// `{split}.{lang}` files per split.
fn parallel(cfg: &DataConfig, root: &Path) -> Result<Splits> {
    let read = |split: &str| parallel_split(cfg, root, split);
    Ok(Splits {
        train: read(&cfg.train)?,
        valid: read(&cfg.valid)?,
        test: read(&cfg.test)?,
    })
}

/// The synthetic date corpus. Disjoint seeds per split; pairs of the held-out sets that also
/// occur in training are removed so that exact match measures generalisation.
fn dates(cfg: &DataConfig) -> Splits {
    let train = synthetic::dates(cfg.train_size, cfg.split_seed);
    let seen: std::collections::HashSet<&str> = train.iter().map(|p| p.src.as_str()).collect();
    let held = |n: usize, s: u64| -> Vec<Pair> {
        synthetic::dates(n, s)
            .into_iter()
            .filter(|p| !seen.contains(p.src.as_str()))
            .collect()
    };
    let valid = held(cfg.valid_size, cfg.split_seed.wrapping_add(1_000_001));
    let test = held(cfg.test_size, cfg.split_seed.wrapping_add(2_000_003));
    Splits { train, valid, test }
}

/// A CSV of records. Records are split, not items, so that nothing of a held-out record (AG
/// News: the description of a held-out headline's article) is trained on.
fn csv(cfg: &DataConfig, path: &Path) -> Result<Splits> {
    let need = cfg
        .extra_train_columns
        .iter()
        .copied()
        .fold(cfg.tgt_column, usize::max);
    let rows: Vec<Vec<String>> = read_csv(path, need)?
        .into_iter()
        .filter(|r| !r[cfg.tgt_column].trim().is_empty())
        .collect();
    let (train_rows, valid, test) =
        seeded_split(rows, cfg.valid_size, cfg.test_size, cfg.split_seed);
    // One item per non-empty field of column `c`.
    let column = |rows: &[Vec<String>], c: usize| -> Vec<Pair> {
        rows.iter()
            .filter(|r| !r[c].trim().is_empty())
            .map(|r| target_only(r[c].clone()))
            .collect()
    };
    let mut train = column(&train_rows, cfg.tgt_column);
    for &c in &cfg.extra_train_columns {
        train.extend(column(&train_rows, c));
    }
    Ok(Splits {
        train,
        valid: column(&valid, cfg.tgt_column),
        test: column(&test, cfg.tgt_column),
    })
}

/// Which pairs [`PairEncoding::encode`] keeps.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// Training: pairs that are empty or longer than the limits (in tokens) are dropped.
    Within { max_src: usize, max_tgt: usize },
    /// Validation: empty pairs are dropped, the others kept whole, so that every one is scored.
    NonEmpty,
    /// Evaluation: every pair, whole.
    All,
}

/// Pairs encoded into examples.
pub struct Encoded {
    pub examples: Vec<Example>,
    /// The index of each example's pair.
    pub kept: Vec<usize>,
    /// How many pairs were dropped.
    pub dropped: usize,
}

/// How pairs become examples: the vocabularies, and whether the pairs have a source (a
/// language model's source stays empty and is never encoded).
pub struct PairEncoding<'a> {
    pub src: &'a Vocab,
    pub tgt: &'a Vocab,
    pub has_source: bool,
}

impl PairEncoding<'_> {
    pub fn encode(&self, pairs: &[Pair], keep: Keep) -> Result<Encoded> {
        let (max_src, max_tgt) = match keep {
            Keep::Within { max_src, max_tgt } => (max_src, max_tgt),
            Keep::NonEmpty | Keep::All => (usize::MAX, usize::MAX),
        };
        let mut out = Encoded {
            examples: Vec::with_capacity(pairs.len()),
            kept: Vec::with_capacity(pairs.len()),
            dropped: 0,
        };
        for (i, p) in pairs.iter().enumerate() {
            let s = if self.has_source {
                self.src.encode(&p.src)?
            } else {
                Vec::new()
            };
            let t = self.tgt.encode(&p.tgt)?;
            let empty = t.is_empty() || (s.is_empty() && self.has_source);
            if !matches!(keep, Keep::All) && (empty || s.len() > max_src || t.len() > max_tgt) {
                out.dropped += 1;
                continue;
            }
            out.examples.push(Example::new(s, t));
            out.kept.push(i);
        }
        Ok(out)
    }
}

/// The error for a training set that filtering emptied.
pub fn empty_after_filter(n: usize, cfg: &DataConfig) -> Error {
    Error::Data(seq2seq_data::DataError::Empty {
        what: "the training set".into(),
        hint: format!(
            " after filtering ({n} pairs read, none within data.max_src_len={} and data.max_tgt_len={} tokens)",
            cfg.max_src_len, cfg.max_tgt_len
        ),
    })
}

/// A vocabulary of the run: on resume the one in the model directory, else trained on `texts`
/// and written there (atomically) as `file`.
pub(crate) fn vocab(
    files: RunFiles,
    file: &str,
    spec: &VocabConfig,
    lowercase: bool,
    texts: &[&str],
) -> Result<Vocab> {
    vocab_with(files, file, || {
        Ok(Vocab::train(&spec.spec(lowercase), texts)?)
    })
}

/// [`vocab`] with the training given: on resume the vocabulary in the model directory, else the
/// one `train` returns, written there (atomically) as `file`.
pub(crate) fn vocab_with(
    files: RunFiles,
    file: &str,
    train: impl FnOnce() -> Result<Vocab>,
) -> Result<Vocab> {
    let path = files.out.join(file);
    if files.resume {
        return Ok(Vocab::load(&path)?);
    }
    let v = train()?;
    model_dir::write_atomic(&path, v.to_json()?.as_bytes())?;
    Ok(v)
}

/// The items of held-out pairs: source text as the label, the target as the one reference.
pub(crate) fn items_of(pairs: &[Pair], ex: &[Example]) -> Vec<DecodeItem> {
    pairs
        .iter()
        .zip(ex)
        .map(|(p, e)| DecodeItem {
            src: e.src.clone(),
            label: p.src.clone(),
            refs: vec![p.tgt.clone()],
        })
        .collect()
}

/// Translation's text pairs: [`prepare_text`] with a source vocabulary.
pub(crate) fn prepare_pairs(
    cfg: &Config,
    files: RunFiles,
    obs: &mut dyn Observer,
) -> Result<Prepared> {
    prepare_text(cfg, files, obs, true)
}

/// A language model's items (lines, CSV fields): [`prepare_text`] with one vocabulary.
pub(crate) fn prepare_lines(
    cfg: &Config,
    files: RunFiles,
    obs: &mut dyn Observer,
) -> Result<Prepared> {
    prepare_text(cfg, files, obs, false)
}

/// Text pairs (translation), or lines for a language model (`has_source` false, one
/// vocabulary): the vocabularies, then every split encoded. Training pairs are filtered by
/// length; held-out pairs are neither filtered by length nor truncated, so every one is scored.
fn prepare_text(
    cfg: &Config,
    files: RunFiles,
    obs: &mut dyn Observer,
    has_source: bool,
) -> Result<Prepared> {
    let d = &cfg.data;
    if d.streaming {
        return stream::prepare_stream(cfg, files, obs, has_source);
    }
    let splits = load_splits(d, files.data_dir)?;
    if splits.train.is_empty() {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the training corpus".into(),
            hint: String::new(),
        }));
    }
    let tgts: Vec<&str> = splits.train.iter().map(|p| p.tgt.as_str()).collect();
    if has_source && d.joint_vocab {
        // One vocabulary for both sides, written under both names (loaders stay unaware).
        let both: Vec<&str> = splits
            .train
            .iter()
            .flat_map(|p| [p.src.as_str(), p.tgt.as_str()])
            .collect();
        let v = vocab(files, TGT_TOKENIZER, &d.tgt_vocab, d.lowercase, &both)?;
        if !files.resume {
            model_dir::write_atomic(&files.out.join(SRC_TOKENIZER), v.to_json()?.as_bytes())?;
        }
        return prepared(cfg, &splits, v.clone(), v, has_source, obs);
    }
    let tgt_vocab = vocab(files, TGT_TOKENIZER, &d.tgt_vocab, d.lowercase, &tgts)?;
    let src_vocab = if has_source {
        let srcs: Vec<&str> = splits.train.iter().map(|p| p.src.as_str()).collect();
        vocab(files, SRC_TOKENIZER, &d.src_vocab, d.lowercase, &srcs)?
    } else {
        tgt_vocab.clone()
    };
    prepared(cfg, &splits, src_vocab, tgt_vocab, has_source, obs)
}

/// The splits encoded with the run's vocabularies: training pairs within the length limits,
/// held-out ones whole.
fn prepared(
    cfg: &Config,
    splits: &Splits,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    has_source: bool,
    obs: &mut dyn Observer,
) -> Result<Prepared> {
    let d = &cfg.data;
    let enc = PairEncoding {
        src: &src_vocab,
        tgt: &tgt_vocab,
        has_source,
    };
    let keep = Keep::Within {
        max_src: d.max_src_len,
        max_tgt: d.max_tgt_len,
    };
    let train = enc.encode(&splits.train, keep)?;
    if train.examples.is_empty() {
        return Err(empty_after_filter(splits.train.len(), d));
    }
    if train.dropped > 0 {
        obs.line(&format!("data: {} training items dropped (empty or longer than data.max_src_len / data.max_tgt_len)", train.dropped));
    }
    let (valid, valid_items) = held_out(&enc, &splits.valid)?;
    let (test, test_items) = held_out(&enc, &splits.test)?;
    let p = Prepared {
        src_vocab,
        tgt_vocab,
        train: train.examples.into(),
        stream: None,
        valid,
        valid_items,
        test,
        test_items,
    };
    log_sizes(obs, &p, "items", &vocab_desc(d, &p, has_source));
    Ok(p)
}

/// Held-out pairs encoded whole (the empty ones dropped), with their items.
pub(crate) fn held_out(
    enc: &PairEncoding,
    pairs: &[Pair],
) -> Result<(Vec<Example>, Vec<DecodeItem>)> {
    let e = enc.encode(pairs, Keep::NonEmpty)?;
    let kept: Vec<Pair> = e.kept.iter().map(|&i| pairs[i].clone()).collect();
    let items = items_of(&kept, &e.examples);
    Ok((e.examples, items))
}

/// The vocabularies' sizes and levels, for the data summary line.
pub(crate) fn vocab_desc(d: &DataConfig, p: &Prepared, has_source: bool) -> String {
    if has_source {
        format!(
            "vocab src {} ({:?}), tgt {} ({:?})",
            p.src_vocab.len(),
            d.src_vocab.level,
            p.tgt_vocab.len(),
            d.tgt_vocab.level
        )
    } else {
        format!("vocab {} ({:?})", p.tgt_vocab.len(), d.tgt_vocab.level)
    }
}

/// The data summary line of a prepared corpus.
pub(crate) fn log_sizes(obs: &mut dyn Observer, p: &Prepared, unit: &str, vocab: &str) {
    obs.line(&format!(
        "data: {} training {unit}, {} valid, {} test; {vocab}",
        p.train.len(),
        p.valid.len(),
        p.test.len()
    ));
}
