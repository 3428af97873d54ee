use std::path::PathBuf;

/// Errors of the pipeline library; each names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error(transparent)]
    Data(#[from] seq2seq_data::DataError),
    #[error("model directory {path}: {msg}")]
    ModelDir { path: PathBuf, msg: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
