//! `seq2seq data list|fetch|verify`: what a corpus puts below the data directory, whether it is
//! there and intact, and getting it there.
//!
//! A file is checked against the catalogue's SHA-256 where it pins one, else against the sum
//! `fetch` recorded when it wrote the file (`<data>/.downloads/<corpus>.sums.json`). A corpus
//! whose files are all present and intact is not fetched again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::{Corpus, Download, Output};
use crate::unpack::{partial_of, sha256_file, unpack};
use crate::{http, io_err, Error, Progress, Result};

/// Where `fetch` keeps its partial downloads and recorded sums, below the data directory.
pub const WORK_DIR: &str = ".downloads";

/// How `fetch` reaches the files.
pub struct FetchOptions<'a> {
    pub data_dir: PathBuf,
    /// Replaces every URL's scheme and host: `MIRROR/<host>/<path>`.
    pub mirror: Option<String>,
    /// Check what is present; never touch the network.
    pub offline: bool,
    pub progress: &'a dyn Progress,
}

/// The state of one output below the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Missing,
    /// Present, and its SHA-256 is the catalogue's.
    Verified,
    /// Present; the catalogue pins no sum, and it matches the one `fetch` recorded.
    Recorded,
    /// Present, with nothing to check it against (a folder, or a file put there by hand).
    Unchecked,
    /// Present with another SHA-256 than the catalogue's or the recorded one.
    Corrupt {
        expected: String,
        got: String,
    },
}

impl FileState {
    /// Present and not known to be wrong.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Verified | Self::Recorded | Self::Unchecked)
    }
}

/// One output and its state; `bytes` is what is on disk (a folder: its files' total).
#[derive(Debug, Clone)]
pub struct FileStatus {
    pub output: Output,
    pub state: FileState,
    pub bytes: u64,
    pub files: usize,
}

fn sums_path(data_dir: &Path, corpus: &str) -> PathBuf {
    data_dir.join(WORK_DIR).join(format!("{corpus}.sums.json"))
}

fn read_sums(data_dir: &Path, corpus: &str) -> BTreeMap<String, String> {
    std::fs::read(sums_path(data_dir, corpus))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_sums(data_dir: &Path, corpus: &str, sums: &BTreeMap<String, String>) -> Result<()> {
    let path = sums_path(data_dir, corpus);
    let tmp = partial_of(&path);
    let text = serde_json::to_string_pretty(sums).expect("a map of strings serialises");
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Files and bytes below a folder.
fn dir_size(dir: &Path) -> (usize, u64) {
    let mut n = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (f, b) = dir_size(&p);
                n = (n.0 + f, n.1 + b);
            } else if let Ok(m) = e.metadata() {
                n = (n.0 + 1, n.1 + m.len());
            }
        }
    }
    n
}

fn output_status(
    o: &Output,
    data_dir: &Path,
    recorded: &BTreeMap<String, String>,
) -> Result<FileStatus> {
    let path = data_dir.join(&o.path);
    let status = |state, files, bytes| FileStatus {
        output: o.clone(),
        state,
        bytes,
        files,
    };
    if o.is_dir {
        let (files, bytes) = dir_size(&path);
        let state = if files == 0 {
            FileState::Missing
        } else {
            FileState::Unchecked
        };
        return Ok(status(state, files, bytes));
    }
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(status(FileState::Missing, 0, 0));
    };
    let expected = o.sha256.as_ref().or_else(|| recorded.get(&o.path));
    let state = match expected {
        None => FileState::Unchecked,
        Some(e) => {
            let got = sha256_file(&path)?;
            match (&got == e, o.sha256.is_some()) {
                (true, true) => FileState::Verified,
                (true, false) => FileState::Recorded,
                (false, _) => FileState::Corrupt {
                    expected: e.clone(),
                    got,
                },
            }
        }
    };
    Ok(status(state, 1, meta.len()))
}

/// Every output of `corpus` and its state (hashing every file that has a sum to check).
pub fn status(name: &str, corpus: &Corpus, data_dir: &Path) -> Result<Vec<FileStatus>> {
    let recorded = read_sums(data_dir, name);
    corpus
        .outputs()
        .iter()
        .map(|o| output_status(o, data_dir, &recorded))
        .collect()
}

/// The same as [`status`]: `data verify` re-hashes everything present against the catalogue.
pub fn verify(name: &str, corpus: &Corpus, data_dir: &Path) -> Result<Vec<FileStatus>> {
    status(name, corpus, data_dir)
}

/// What `fetch` did with one download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its files were present and intact.
    Present,
    /// Downloaded, verified and unpacked; `sha256` of the download as served.
    Fetched { sha256: String, bytes: u64 },
}

/// Fetches whatever of `corpus` is missing or corrupt; returns each download's outcome.
pub fn fetch(name: &str, corpus: &Corpus, o: &FetchOptions) -> Result<Vec<(String, Outcome)>> {
    let mut recorded = read_sums(&o.data_dir, name);
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    for d in &corpus.files {
        let states: Vec<FileStatus> = d
            .outputs()
            .iter()
            .map(|out| output_status(out, &o.data_dir, &recorded))
            .collect::<Result<_>>()?;
        if states.iter().all(|s| s.state.is_ok()) {
            outcomes.push((d.url.clone(), Outcome::Present));
            continue;
        }
        if o.offline {
            missing.extend(states.iter().filter(|s| !s.state.is_ok()).map(describe));
            continue;
        }
        let outcome = fetch_one(name, d, o, &mut recorded)?;
        write_sums(&o.data_dir, name, &recorded)?;
        outcomes.push((d.url.clone(), outcome));
    }
    if !missing.is_empty() {
        return Err(Error::Offline(format!(
            "{name} is incomplete: {}",
            missing.join("; ")
        )));
    }
    Ok(outcomes)
}

fn describe(s: &FileStatus) -> String {
    match &s.state {
        FileState::Corrupt { expected, got } => {
            format!("{} has sha256 {got}, expected {expected}", s.output.path)
        }
        _ => format!("{} is missing", s.output.path),
    }
}

fn fetch_one(
    name: &str,
    d: &Download,
    o: &FetchOptions,
    recorded: &mut BTreeMap<String, String>,
) -> Result<Outcome> {
    let url = d.url_via(o.mirror.as_deref());
    let work = o.data_dir.join(WORK_DIR).join(name);
    std::fs::create_dir_all(&work).map_err(io_err(&work))?;
    let base = url
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or("download");
    let part = work.join(format!("{base}.part"));
    http::download(&url, &part, d.size, o.progress)?;
    let sha = sha256_file(&part)?;
    let bytes = std::fs::metadata(&part).map_err(io_err(&part))?.len();
    if let Some(expected) = &d.sha256 {
        if expected != &sha {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Mismatch {
                url,
                what: "sha256",
                expected: expected.clone(),
                got: sha,
            });
        }
    } else {
        o.progress.note(&format!(
            "{url}: {bytes} bytes, sha256 {sha} (the catalogue pins none: add `size: {bytes}` and `sha256: {sha}` to pin it)"
        ));
    }
    for out in d.outputs() {
        let p = partial_of(&o.data_dir.join(&out.path));
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_dir_all(&p);
    }
    let staged = unpack(d, &part, &o.data_dir, &url)?;
    for out in d
        .outputs()
        .iter()
        .filter(|x| !x.is_dir && x.sha256.is_none())
    {
        let p = partial_of(&o.data_dir.join(&out.path));
        recorded.insert(out.path.clone(), sha256_file(&p)?);
    }
    for s in &staged {
        if s.target.is_dir() {
            std::fs::remove_dir_all(&s.target).map_err(io_err(&s.target))?;
        }
        std::fs::rename(&s.partial, &s.target).map_err(io_err(&s.target))?;
    }
    let _ = std::fs::remove_file(&part);
    Ok(Outcome::Fetched { sha256: sha, bytes })
}
