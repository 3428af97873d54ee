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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal: {got} input given to a model with {want} encoder")]
    SourceMismatch {
        want: &'static str,
        got: &'static str,
    },
    #[error("internal: expected {expected} views of each source, got {got}")]
    ViewCount { expected: usize, got: usize },
    #[error("decoding.row_seeds: {got} seeds for {expected} inputs")]
    SeedCount { expected: usize, got: usize },
    #[error("data.format `{0:?}` is not a captioning format")]
    NotCaptions(crate::config::DataFormat),
    #[error("model.image_encoder.checkpoint: cannot load {path} ({source}); relative paths are resolved against the data directory")]
    Backbone {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("average: give at least two checkpoints (files or model directories), not {0}")]
    AverageTooFew(usize),
    #[error("average: {path} and {first} differ in tensor {tensor} ({what}): checkpoints of different models?")]
    AverageMismatch {
        path: PathBuf,
        first: PathBuf,
        tensor: String,
        what: String,
    },
    #[error("ensemble member {path}: {msg}")]
    EnsembleMember { path: PathBuf, msg: String },
    #[error(
        "{0} already holds a training run: pass --resume to continue it, or choose another --out"
    )]
    RunExists(PathBuf),
    #[error("device {0}")]
    Device(String),
    #[error("{flag}: {msg}")]
    Flag { flag: &'static str, msg: String },
    #[error("bench measures translation and captioning configs, not {0:?}")]
    BenchTask(crate::config::Task),
    #[error("the {0} split of this model's corpus is empty")]
    EmptySplit(&'static str),
    #[error("captioning corpus: {0}")]
    Image(seq2seq_image_encoder::preprocess::ImageError),
    #[error("internal: the image encoder skipped an image")]
    SkippedImage,
    #[error("internal: the captioning task's images are used before the model is built")]
    NotAttached,
    #[error("data.format `{0:?}` holds images and captions, not text pairs")]
    NotText(crate::config::DataFormat),
    #[error("training diverged: {count} batches in a row up to step {step} had a non-finite loss or gradient (train.max_nonfinite_steps); the last good resume checkpoint is {path} (try a lower train.learning_rate)")]
    Diverged {
        step: usize,
        count: usize,
        path: PathBuf,
    },
    #[error("{path}: refusing to write non-finite weights (tensor {tensor})")]
    NonFinite { path: PathBuf, tensor: String },
    #[error(transparent)]
    Plot(#[from] seq2seq_plot::PlotError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
