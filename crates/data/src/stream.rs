//! Corpora read as a stream, for training sets larger than memory: items from a byte position
//! onwards, one line at a time, never the whole file. A position can be saved and reopened, so
//! that a resumed run reads exactly what the interrupted one would have read next.
//!
//! Items are numbered from 0 in file order: every line pair of a parallel corpus, every
//! non-blank line of a TSV or line corpus (blank lines are skipped there, as the in-memory
//! readers skip them). Held-out items are chosen by number ([`held_out`]) without reading the
//! corpus into memory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::corpus::MAX_LINE_BYTES;
use crate::{DataError, Pair};

/// What a stream reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamSource {
    /// Two line-aligned files: line n of each is item n.
    Parallel { src: PathBuf, tgt: PathBuf },
    /// Tab-separated pairs, source and target from the given 0-based columns.
    Tsv {
        path: PathBuf,
        src_col: usize,
        tgt_col: usize,
    },
    /// One target-only item per line (a language model's corpus).
    Lines { path: PathBuf },
}

impl StreamSource {
    fn paths(&self) -> Vec<&Path> {
        match self {
            Self::Parallel { src, tgt } => vec![src, tgt],
            Self::Tsv { path, .. } | Self::Lines { path } => vec![path],
        }
    }
}

/// Where a stream stands: the number of the next item, the number of lines read, and the byte
/// offset of the next line in each file (the second is unused for single-file corpora).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    pub item: u64,
    pub line: u64,
    pub offsets: [u64; 2],
}

/// A reader of items from a [`StreamPos`] onwards.
pub struct PairStream {
    source: StreamSource,
    files: Vec<BufReader<File>>,
    pos: StreamPos,
    buf: Vec<u8>,
}

impl PairStream {
    /// Opens the source's files at `pos` (the default position is the start).
    pub fn open(source: &StreamSource, pos: StreamPos) -> Result<Self, DataError> {
        let mut files = Vec::new();
        for (i, path) in source.paths().into_iter().enumerate() {
            let io = |source| DataError::Io {
                path: path.to_path_buf(),
                source,
            };
            let mut f = File::open(path).map_err(io)?;
            f.seek(SeekFrom::Start(pos.offsets[i])).map_err(io)?;
            files.push(BufReader::with_capacity(1 << 16, f));
        }
        Ok(Self {
            source: source.clone(),
            files,
            pos,
            buf: Vec::new(),
        })
    }

    /// The position of the next item.
    pub fn pos(&self) -> StreamPos {
        self.pos
    }

    /// The next line of file `i` without its line break, or `None` at the end of the file.
    fn line(&mut self, i: usize) -> Result<Option<String>, DataError> {
        let path = self.source.paths()[i].to_path_buf();
        let line = self.pos.line as usize + 1;
        self.buf.clear();
        // One byte more than a line may hold (and its CR LF), so that a longer one is seen.
        let limit = (MAX_LINE_BYTES + 3) as u64;
        let n = (&mut self.files[i])
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.pos.offsets[i] += n as u64;
        let mut raw = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_LINE_BYTES {
            return Err(DataError::LineTooLong {
                path,
                line,
                bytes: raw.len(),
                max: MAX_LINE_BYTES,
            });
        }
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(DataError::Utf8 { path, line }),
        }
    }

    /// The next item and its number, or `None` at the end of the corpus.
    pub fn next_item(&mut self) -> Result<Option<(u64, Pair)>, DataError> {
        loop {
            let first = self.line(0)?;
            let second = match self.source {
                StreamSource::Parallel { .. } => self.line(1)?,
                _ => None,
            };
            let pair = match &self.source {
                StreamSource::Parallel { src, tgt } => match (first, second) {
                    (None, None) => return Ok(None),
                    (Some(src), Some(tgt)) => Some(Pair { src, tgt }),
                    (s, _) => {
                        let (short, long) = if s.is_none() { (src, tgt) } else { (tgt, src) };
                        return Err(DataError::StreamLineCount {
                            short: short.clone(),
                            lines: self.pos.line,
                            long: long.clone(),
                        });
                    }
                },
                StreamSource::Tsv {
                    path,
                    src_col,
                    tgt_col,
                } => match first {
                    None => return Ok(None),
                    Some(l) if l.trim().is_empty() => None,
                    Some(l) => Some(tsv_pair(path, self.pos.line + 1, &l, *src_col, *tgt_col)?),
                },
                StreamSource::Lines { .. } => match first {
                    None => return Ok(None),
                    Some(l) if l.trim().is_empty() => None,
                    Some(tgt) => Some(Pair {
                        src: String::new(),
                        tgt,
                    }),
                },
            };
            self.pos.line += 1;
            if let Some(p) = pair {
                let n = self.pos.item;
                self.pos.item += 1;
                return Ok(Some((n, p)));
            }
        }
    }
}

impl Iterator for PairStream {
    type Item = Result<(u64, Pair), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

/// The pair of one TSV line, or an error naming the line.
fn tsv_pair(
    path: &Path,
    line: u64,
    l: &str,
    src_col: usize,
    tgt_col: usize,
) -> Result<Pair, DataError> {
    let cols: Vec<&str> = l.split('\t').collect();
    let need = src_col.max(tgt_col) + 1;
    if cols.len() < need {
        return Err(DataError::Columns {
            path: path.to_path_buf(),
            line: line as usize,
            expected: need,
            found: cols.len(),
        });
    }
    Ok(Pair {
        src: cols[src_col].to_string(),
        tgt: cols[tgt_col].to_string(),
    })
}

/// The number of items of a corpus (one pass, holding one line at a time).
pub fn count_items(source: &StreamSource) -> Result<u64, DataError> {
    let mut s = PairStream::open(source, StreamPos::default())?;
    while s.next_item()?.is_some() {}
    Ok(s.pos().item)
}

/// Which of `n` items are held out: `valid` and `test` distinct item numbers drawn by `seed`
/// (Floyd's sampling: memory for the drawn numbers only, however large `n`). When the corpus
/// has no more than `valid + test` items every one is drawn and the training set is empty.
pub fn held_out(n: u64, valid: usize, test: usize, seed: u64) -> (Vec<u64>, Vec<u64>) {
    let want = ((valid + test) as u64).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<u64> = Vec::with_capacity(want as usize);
    let mut seen = HashSet::with_capacity(want as usize);
    for j in n - want..n {
        let t = rand::Rng::random_range(&mut rng, 0..=j);
        let pick = if seen.insert(t) { t } else { j };
        seen.insert(pick);
        chosen.push(pick);
    }
    // Floyd's draw is a uniform subset but not in a uniform order: shuffle before cutting it.
    rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), &mut rng);
    let valid_n = valid.min(chosen.len());
    let test_part = chosen.split_off(valid_n);
    (chosen, test_part)
}

/// The items of the given numbers, in the order of the numbers asked for (one pass).
pub fn read_items(source: &StreamSource, numbers: &[u64]) -> Result<Vec<Pair>, DataError> {
    let wanted: std::collections::HashMap<u64, usize> =
        numbers.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut out: Vec<Option<Pair>> = vec![None; numbers.len()];
    let mut left = numbers.len();
    let mut s = PairStream::open(source, StreamPos::default())?;
    while left > 0 {
        let Some((n, p)) = s.next_item()? else { break };
        if let Some(&i) = wanted.get(&n) {
            out[i] = Some(p);
            left -= 1;
        }
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests;
