use std::path::PathBuf;

/// Everything that can go wrong reading data, each naming the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: a line of {bytes} bytes is longer than the limit of {max} bytes", path.display())]
    LineTooLong {
        path: PathBuf,
        line: usize,
        bytes: usize,
        max: usize,
    },
    #[error("{path}:{line}: invalid UTF-8")]
    Utf8 { path: PathBuf, line: usize },
    #[error("{src_path} has {src_lines} lines but {tgt_path} has {tgt_lines}: parallel files must be line-aligned")]
    LineCount {
        src_path: PathBuf,
        src_lines: usize,
        tgt_path: PathBuf,
        tgt_lines: usize,
    },
    #[error("{} ends after {lines} lines but {} has more: parallel files must be line-aligned", short.display(), long.display())]
    StreamLineCount {
        short: PathBuf,
        lines: u64,
        long: PathBuf,
    },
    #[error("{path}:{line}: expected at least {expected} tab-separated columns, found {found}")]
    Columns {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{path}:{line}: {msg}")]
    Csv {
        path: PathBuf,
        line: u64,
        msg: String,
    },
    #[error("{what} is empty{hint}")]
    Empty { what: String, hint: String },
    #[error("{path}:{line}: invalid JSON: {msg}")]
    Json {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("tokenizer file {path}: {msg}")]
    TokenizerFile { path: PathBuf, msg: String },
}
