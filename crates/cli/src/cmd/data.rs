//! `seq2seq data list|fetch|verify`: the catalogue's corpora on this machine. The work is in
//! `seq2seq-datasets`; this draws the progress bar and the tables.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use seq2seq_datasets::{Catalog, Corpus, FetchOptions, FileState, FileStatus, Outcome, Progress};
use seq2seq_pipeline::resolve_data_dir;

/// `seq2seq data …`
#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Every corpus of the catalogue: its size, licence, and what of it is present and verified.
    List {
        #[command(flatten)]
        common: DataArgs,
        /// One JSON object per corpus.
        #[arg(long)]
        json: bool,
    },
    /// Download, verify (size and SHA-256) and unpack corpora into the data directory, resuming
    /// partial downloads; what is present and verified is not fetched again.
    Fetch {
        /// Corpus names (see `seq2seq data list`).
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        common: DataArgs,
        /// Fetch from MIRROR/<host>/<path> instead of each URL's host (else $SEQ2SEQ_DATA_MIRROR).
        #[arg(long)]
        mirror: Option<String>,
        /// Only check what is present; never touch the network.
        #[arg(long)]
        offline: bool,
    },
    /// Re-hash what is present against the catalogue (every corpus when no name is given).
    Verify {
        names: Vec<String>,
        #[command(flatten)]
        common: DataArgs,
    },
}

/// What every `data` subcommand shares.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// The data directory (else $SEQ2SEQ_DATA_DIR, else ./datasets).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Read this catalogue instead of the shipped datasets/catalog.yaml.
    #[arg(long)]
    pub(crate) catalog: Option<PathBuf>,
}

/// Bytes, rate and ETA on a terminal; a plain line per transfer in a pipe or a CI log.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl Progress for Bar {
    fn begin(&self, url: &str, total: Option<u64>, done: u64) {
        let resumed = if done > 0 {
            format!(" (resuming at {done} bytes)")
        } else {
            String::new()
        };
        if !self.terminal {
            eprintln!("fetching {url}{resumed}");
            return;
        }
        let bar = ProgressBar::new(total.unwrap_or(0));
        let template = if total.is_some() {
            "{msg}\n[{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        } else {
            "{msg}\n{spinner} {bytes} {bytes_per_sec}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_message(format!("{url}{resumed}"));
        bar.set_position(done);
        *self.bar.lock().unwrap() = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &*self.bar.lock().unwrap() {
            b.inc(bytes);
        }
    }
    fn end(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
    fn note(&self, line: &str) {
        match &*self.bar.lock().unwrap() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

pub(crate) fn run(action: DataCommand) -> Result<()> {
    match action {
        DataCommand::List { common, json } => list(&common, json),
        DataCommand::Fetch {
            names,
            common,
            mirror,
            offline,
        } => fetch(&names, &common, mirror, offline),
        DataCommand::Verify { names, common } => verify(&names, &common),
    }
}

fn catalog(a: &DataArgs) -> Result<Catalog> {
    Ok(match &a.catalog {
        Some(p) => Catalog::from_file(p)?,
        None => Catalog::shipped()?,
    })
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// "9 verified, 3 recorded, 1 unchecked, 2 missing, 1 corrupt" (the counts that are not zero).
fn summary(states: &[FileStatus]) -> String {
    let count = |f: fn(&FileState) -> bool| states.iter().filter(|s| f(&s.state)).count();
    let parts = [
        (count(|s| *s == FileState::Verified), "verified"),
        (count(|s| *s == FileState::Recorded), "recorded"),
        (count(|s| *s == FileState::Unchecked), "unchecked"),
        (count(|s| *s == FileState::Missing), "missing"),
        (count(|s| matches!(s, FileState::Corrupt { .. })), "corrupt"),
    ];
    let p: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect();
    p.join(", ")
}

fn download_size(c: &Corpus) -> String {
    let sizes: Vec<Option<u64>> = c.files.iter().map(|d| d.size).collect();
    match sizes.iter().copied().sum::<Option<u64>>() {
        Some(total) => human(total),
        None => "unknown".into(),
    }
}

fn list(a: &DataArgs, json: bool) -> Result<()> {
    let cat = catalog(a)?;
    let dir = resolve_data_dir(a.data_dir.as_deref());
    if !json {
        println!("data directory: {}", dir.display());
        println!(
            "{:<20} {:>10} {:>10}  files",
            "corpus", "download", "on disk"
        );
    }
    for (name, c) in &cat.corpora {
        let st = seq2seq_datasets::status(name, c, &dir)?;
        let on_disk: u64 = st.iter().map(|s| s.bytes).sum();
        if json {
            let v = serde_json::json!({
                "name": name, "description": c.description, "licence": c.licence,
                "citation": c.citation, "note": c.note,
                "download_bytes": c.files.iter().map(|d| d.size).sum::<Option<u64>>(),
                "bytes_present": on_disk,
                "files": st.iter().map(|s| serde_json::json!({
                    "path": s.output.path, "state": state_word(&s.state), "bytes": s.bytes,
                })).collect::<Vec<_>>(),
            });
            println!("{v}");
        } else {
            let size = download_size(c);
            println!(
                "{name:<20} {size:>10} {:>10}  {}",
                human(on_disk),
                summary(&st)
            );
            println!("{:<20} {}", "", c.description);
            println!("{:<20} licence: {}", "", c.licence);
        }
    }
    Ok(())
}

fn state_word(s: &FileState) -> &'static str {
    match s {
        FileState::Missing => "missing",
        FileState::Verified => "verified",
        FileState::Recorded => "recorded",
        FileState::Unchecked => "unchecked",
        FileState::Corrupt { .. } => "corrupt",
    }
}

fn fetch(names: &[String], a: &DataArgs, mirror: Option<String>, offline: bool) -> Result<()> {
    let cat = catalog(a)?;
    let corpora = names
        .iter()
        .map(|n| Ok((n.as_str(), cat.get(n)?)))
        .collect::<Result<Vec<_>>>()?;
    let bar = Bar {
        bar: Mutex::new(None),
        terminal: std::io::stderr().is_terminal(),
    };
    let o = FetchOptions {
        data_dir: resolve_data_dir(a.data_dir.as_deref()),
        mirror: mirror.or_else(|| std::env::var("SEQ2SEQ_DATA_MIRROR").ok()),
        offline,
        progress: &bar,
    };
    for (name, corpus) in corpora {
        if !corpus.note.is_empty() {
            eprintln!("{name}: {}", corpus.note);
        }
        let outcomes = seq2seq_datasets::fetch(name, corpus, &o)?;
        let fetched = outcomes
            .iter()
            .filter(|(_, x)| matches!(x, Outcome::Fetched { .. }))
            .count();
        let st = seq2seq_datasets::status(name, corpus, &o.data_dir)?;
        println!(
            "{name}: {} ({fetched} of {} downloads fetched, the rest already present) in {}",
            summary(&st),
            outcomes.len(),
            o.data_dir.display()
        );
    }
    Ok(())
}

fn verify(names: &[String], a: &DataArgs) -> Result<()> {
    let cat = catalog(a)?;
    let dir = resolve_data_dir(a.data_dir.as_deref());
    let mut bad = 0;
    for (name, c) in &cat.corpora {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        let st = seq2seq_datasets::verify(name, c, &dir)?;
        // Unnamed corpora of which nothing is here were never fetched: not a failure.
        if names.is_empty() && st.iter().all(|s| s.state == FileState::Missing) {
            continue;
        }
        bad += report(name, &st, &dir);
    }
    for n in names {
        cat.get(n)?;
    }
    if bad > 0 {
        bail!("{bad} file(s) missing or corrupt in {}", dir.display());
    }
    Ok(())
}

/// Prints one line per file; returns how many are missing or corrupt.
fn report(name: &str, st: &[FileStatus], dir: &Path) -> usize {
    let mut bad = 0;
    for s in st {
        let path = dir.join(&s.output.path);
        match &s.state {
            FileState::Corrupt { expected, got } => {
                bad += 1;
                println!(
                    "CORRUPT  {}: sha256 {got}, expected {expected}",
                    path.display()
                );
            }
            FileState::Missing => {
                bad += 1;
                println!("MISSING  {}", path.display());
            }
            ok => println!("ok       {} ({})", path.display(), state_word(ok)),
        }
    }
    println!("{name}: {}", summary(st));
    bad
}
