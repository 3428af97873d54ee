//! Real corpora on a fresh machine: the pinned catalogue ([`catalog`]), a downloader that resumes
//! and verifies ([`http`]), safe unpacking ([`unpack`]) and the three operations behind
//! `seq2seq data`: [`status`] (list), [`fetch`] and [`verify`] ([`fetch`] module).
//!
//! Nothing that looks complete is ever left behind: downloads go to `*.part` files under
//! `<data>/.downloads/`, unpacked files to `*.partial` names, and a file takes its final name only
//! after its size and SHA-256 matched. The crate never prints: progress goes through [`Progress`].

pub mod catalog;
pub mod fetch;
pub mod http;
pub mod unpack;

use std::path::PathBuf;

pub use catalog::{Catalog, Corpus, Download, Member, Output, Unpack};
pub use fetch::{fetch, status, verify, FetchOptions, FileState, FileStatus, Outcome};

/// Errors of the catalogue, the network and the disk; each names the URL or file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalogue {origin}: {msg}")]
    Catalog { origin: String, msg: String },
    #[error("no corpus named {name:?} in the catalogue (known: {known})")]
    UnknownCorpus { name: String, known: String },
    #[error("{url}: {msg}")]
    Http { url: String, msg: String },
    #[error("{url}: {what} mismatch: expected {expected}, got {got}")]
    Mismatch {
        url: String,
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("{url}: {msg}")]
    Archive { url: String, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("offline: {0}")]
    Offline(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where a long download reports its progress (the CLI draws a bar; a test can count).
pub trait Progress {
    /// A transfer starts; `done` bytes are already on disk from an earlier attempt.
    fn begin(&self, url: &str, total: Option<u64>, done: u64);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended (successfully or not).
    fn end(&self);
    /// A line worth telling the user (a resumed transfer, a computed sum to pin, a skipped file).
    fn note(&self, line: &str);
}

/// A [`Progress`] that reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: Option<u64>, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
    fn note(&self, _: &str) {}
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
