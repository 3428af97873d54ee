//! Corpus readers: two line-aligned files, or tab-separated pairs; a seeded split.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::DataError;

/// One source/target sentence pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub src: String,
    pub tgt: String,
}

/// Reads a UTF-8 text file into lines (LF or CRLF), naming the first invalid line.
/// The longest line a corpus reader accepts: no sentence, headline or caption comes near it, and
/// a file without line breaks (a binary given by mistake) is refused rather than tokenised whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;

pub fn read_lines(path: &Path) -> Result<Vec<String>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Ok(lines);
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_LINE_BYTES {
            return Err(DataError::LineTooLong {
                path: path.to_path_buf(),
                line: i + 1,
                bytes: raw.len(),
                max: MAX_LINE_BYTES,
            });
        }
        let s = std::str::from_utf8(raw).map_err(|_| DataError::Utf8 {
            path: path.to_path_buf(),
            line: i + 1,
        })?;
        lines.push(s.to_string());
    }
    Ok(lines)
}

/// Two line-aligned files (Multi30k's `train.en` + `train.de`).
pub fn read_parallel(src: &Path, tgt: &Path) -> Result<Vec<Pair>, DataError> {
    let s = read_lines(src)?;
    let t = read_lines(tgt)?;
    if s.len() != t.len() {
        return Err(DataError::LineCount {
            src_path: src.to_path_buf(),
            src_lines: s.len(),
            tgt_path: tgt.to_path_buf(),
            tgt_lines: t.len(),
        });
    }
    Ok(s.into_iter()
        .zip(t)
        .map(|(src, tgt)| Pair { src, tgt })
        .collect())
}

/// Tab-separated pairs (Tatoeba/manythings `fra.txt`: `english<TAB>french[<TAB>attribution]`),
/// taking the source and target from the given 0-based columns.
pub fn read_tsv(path: &Path, src_col: usize, tgt_col: usize) -> Result<Vec<Pair>, DataError> {
    let need = src_col.max(tgt_col) + 1;
    read_lines(path)?
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cols: Vec<&str> = l.split('\t').collect();
            if cols.len() < need {
                return Err(DataError::Columns {
                    path: path.to_path_buf(),
                    line: i + 1,
                    expected: need,
                    found: cols.len(),
                });
            }
            Ok(Pair {
                src: cols[src_col].to_string(),
                tgt: cols[tgt_col].to_string(),
            })
        })
        .collect()
}

/// A CSV file without a header row (RFC 4180 quoting, as AG News' `test.csv`), one `Vec` of
/// fields per record; every record must have more than `need_column` fields. Errors name the
/// file and the line.
pub fn read_csv(path: &Path, need_column: usize) -> Result<Vec<Vec<String>>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| DataError::Csv {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            msg: match e.kind() {
                csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
                _ => e.to_string(),
            },
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() <= need_column {
            return Err(DataError::Csv {
                path: path.to_path_buf(),
                line,
                msg: format!(
                    "expected at least {} comma-separated fields, found {}",
                    need_column + 1,
                    record.len()
                ),
            });
        }
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok(rows)
}

/// Splits items into (train, valid, test) after a seeded shuffle; `valid` and `test` are counts.
pub fn seeded_split<T>(
    mut items: Vec<T>,
    valid: usize,
    test: usize,
    seed: u64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let test_part = items.split_off(items.len().saturating_sub(test));
    let valid_part = items.split_off(items.len().saturating_sub(valid));
    (items, valid_part, test_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn readers_and_their_errors() {
        let dir = std::env::temp_dir().join(format!("s2s-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write(&dir, "a.en", b"one\r\ntwo\n");
        let b = write(&dir, "a.de", b"eins\nzwei");
        let c = write(&dir, "c.de", b"eins\n");
        let bad = write(&dir, "bad.de", b"eins\nzw\xffei\n");
        let pairs = read_parallel(&a, &b).unwrap();
        assert_eq!(
            pairs[1],
            Pair {
                src: "two".into(),
                tgt: "zwei".into()
            }
        );
        let e = read_parallel(&a, &c).unwrap_err().to_string();
        assert!(e.contains("has 2 lines") && e.contains("has 1"), "{e}");
        let mut long = b"short\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        let long = write(&dir, "long.en", &long);
        let e = read_lines(&long).unwrap_err().to_string();
        assert!(
            e.contains("long.en:2") && e.contains("limit of 1048576 bytes"),
            "{e}"
        );
        let e = read_parallel(&a, &bad).unwrap_err().to_string();
        assert!(e.ends_with("bad.de:2: invalid UTF-8"), "{e}");
        let e = read_parallel(&a, &dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let t = write(&dir, "fra.txt", b"Go.\tVa !\tCC-BY\nHi.\tSalut !\n\nOops\n");
        let e = read_tsv(&t, 0, 1).unwrap_err().to_string();
        assert!(e.contains("fra.txt:4: expected at least 2"), "{e}");
        let t = write(&dir, "fra2.txt", b"Go.\tVa !\tCC-BY\nHi.\tSalut !\n");
        let p = read_tsv(&t, 1, 0).unwrap();
        assert_eq!(
            p[0],
            Pair {
                src: "Va !".into(),
                tgt: "Go.".into()
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csv_reader_quotes_and_errors() {
        let dir = std::env::temp_dir().join(format!("s2s-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // AG News' shape: class, title, description; quoted fields with commas, doubled quotes,
        // backslashes and a line break inside quotes.
        let ok = write(
            &dir,
            "news.csv",
            b"\"3\",\"Fears for T N pension\",\"Unions say, \"\"disappointed\"\"\"\r\n\"4\",\"A\\B\",\"two\nlines\"\n",
        );
        let rows = read_csv(&ok, 2).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], "Fears for T N pension");
        assert_eq!(rows[0][2], "Unions say, \"disappointed\"");
        assert_eq!(rows[1][1], "A\\B");
        assert_eq!(rows[1][2], "two\nlines");
        let short = write(&dir, "short.csv", b"\"1\",\"a\",\"b\"\n\"2\",\"c\"\n");
        let e = read_csv(&short, 2).unwrap_err().to_string();
        assert!(
            e.contains("short.csv:2: expected at least 3 comma-separated fields, found 2"),
            "{e}"
        );
        let bad = write(
            &dir,
            "bad.csv",
            b"\"1\",\"a\",\"b\"\n\"2\",\"z\xff\",\"c\"\n",
        );
        let e = read_csv(&bad, 2).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2: invalid UTF-8"), "{e}");
        let e = read_csv(&dir.join("missing.csv"), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.csv"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let (tr, va, te) = seeded_split((0..100).collect::<Vec<_>>(), 10, 5, 1);
        assert_eq!((tr.len(), va.len(), te.len()), (85, 10, 5));
        let (tr2, _, _) = seeded_split((0..100).collect::<Vec<_>>(), 10, 5, 1);
        assert_eq!(tr, tr2);
        let mut all: Vec<_> = tr.iter().chain(&va).chain(&te).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }
}
