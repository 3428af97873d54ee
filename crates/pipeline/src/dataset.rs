//! Loading the configured corpus into train/valid/test pairs and encoding them.

use std::path::{Path, PathBuf};

use seq2seq_data::corpus::read_lines;
use seq2seq_data::{
    read_csv, read_parallel, read_tsv, seeded_split, synthetic, Example, Pair, Vocab,
};

use crate::config::{DataConfig, DataFormat};
use crate::{Error, Result};

pub struct Splits {
    pub train: Vec<Pair>,
    pub valid: Vec<Pair>,
    pub test: Vec<Pair>,
}

fn root(cfg: &DataConfig, data_dir: &Path) -> PathBuf {
    let r = Path::new(&cfg.root);
    if r.is_absolute() {
        r.to_path_buf()
    } else {
        data_dir.join(r)
    }
}

/// Reads the corpus the config names, resolved against `data_dir`.
pub fn load_splits(cfg: &DataConfig, data_dir: &Path) -> Result<Splits> {
    match cfg.format {
        DataFormat::Parallel => {
            let root = root(cfg, data_dir);
            let read = |split: &str| -> Result<Vec<Pair>> {
                if split.is_empty() {
                    return Ok(Vec::new());
                }
                let f = |lang: &str| root.join(format!("{split}.{lang}"));
                Ok(read_parallel(&f(&cfg.src_lang), &f(&cfg.tgt_lang))?)
            };
            Ok(Splits {
                train: read(&cfg.train)?,
                valid: read(&cfg.valid)?,
                test: read(&cfg.test)?,
            })
        }
        DataFormat::Tsv => {
            let path = root(cfg, data_dir).join(&cfg.file);
            let pairs = read_tsv(&path, cfg.src_column, cfg.tgt_column)?;
            let (train, valid, test) =
                seeded_split(pairs, cfg.valid_size, cfg.test_size, cfg.split_seed);
            Ok(Splits { train, valid, test })
        }
        DataFormat::Dates => {
            // Disjoint seeds per split; pairs of the held-out sets that also occur in training
            // are removed so that exact match measures generalisation.
            let train = synthetic::dates(cfg.train_size, cfg.split_seed);
            let seen: std::collections::HashSet<&str> =
                train.iter().map(|p| p.src.as_str()).collect();
            let held = |n: usize, s: u64| -> Vec<Pair> {
                synthetic::dates(n, s)
                    .into_iter()
                    .filter(|p| !seen.contains(p.src.as_str()))
                    .collect()
            };
            let valid = held(cfg.valid_size, cfg.split_seed.wrapping_add(1_000_001));
            let test = held(cfg.test_size, cfg.split_seed.wrapping_add(2_000_003));
            Ok(Splits { train, valid, test })
        }
        DataFormat::Lines => {
            let path = root(cfg, data_dir).join(&cfg.file);
            let items: Vec<Pair> = read_lines(&path)?
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Pair {
                    src: String::new(),
                    tgt: l,
                })
                .collect();
            let (train, valid, test) =
                seeded_split(items, cfg.valid_size, cfg.test_size, cfg.split_seed);
            Ok(Splits { train, valid, test })
        }
        DataFormat::Csv => {
            // Records are split, not items, so that nothing of a held-out record (AG News: the
            // description of a held-out headline's article) is trained on.
            let path = root(cfg, data_dir).join(&cfg.file);
            let need = cfg
                .extra_train_columns
                .iter()
                .copied()
                .fold(cfg.tgt_column, usize::max);
            let rows: Vec<Vec<String>> = read_csv(&path, need)?
                .into_iter()
                .filter(|r| !r[cfg.tgt_column].trim().is_empty())
                .collect();
            let (train_rows, valid, test) =
                seeded_split(rows, cfg.valid_size, cfg.test_size, cfg.split_seed);
            // One item per non-empty field of column `c`.
            let column = |rows: &[Vec<String>], c: usize| -> Vec<Pair> {
                rows.iter()
                    .filter(|r| !r[c].trim().is_empty())
                    .map(|r| Pair {
                        src: String::new(),
                        tgt: r[c].clone(),
                    })
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
        DataFormat::Flickr8k | DataFormat::Karpathy | DataFormat::Coco | DataFormat::Shapes => {
            Err(Error::Invalid(format!(
                "data.format `{:?}` holds images and captions, not text pairs",
                cfg.format
            )))
        }
        DataFormat::Text => {
            // The windows are cut after tokenisation (see `train`); here the text is its lines.
            let path = root(cfg, data_dir).join(&cfg.file);
            let train = read_lines(&path)?
                .into_iter()
                .map(|l| Pair {
                    src: String::new(),
                    tgt: l,
                })
                .collect();
            Ok(Splits {
                train,
                valid: Vec::new(),
                test: Vec::new(),
            })
        }
    }
}

/// Encodes pairs; with `filter`, drops pairs longer than the limits or empty (an empty source
/// only when `!src_optional`) and returns how many; kept pairs' indices come second.
pub fn encode_pairs(
    pairs: &[Pair],
    src: &Vocab,
    tgt: &Vocab,
    max_src: usize,
    max_tgt: usize,
    filter: bool,
    src_optional: bool,
) -> Result<(Vec<Example>, Vec<usize>, usize)> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut kept = Vec::with_capacity(pairs.len());
    let mut dropped = 0;
    for (i, p) in pairs.iter().enumerate() {
        let mut s = if src_optional && p.src.is_empty() {
            Vec::new()
        } else {
            src.encode(&p.src)?
        };
        let mut t = tgt.encode(&p.tgt)?;
        if filter
            && (s.len() > max_src
                || t.len() > max_tgt
                || (s.is_empty() && !src_optional)
                || t.is_empty())
        {
            dropped += 1;
            continue;
        }
        s.truncate(max_src);
        t.truncate(max_tgt);
        out.push(Example::new(s, t));
        kept.push(i);
    }
    Ok((out, kept, dropped))
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
