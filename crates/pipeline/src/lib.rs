//! The seq2seq pipelines: config, model assembly ([`model::build_model`]), training with
//! checkpoints and resume, and inference. The CLI is a thin layer over this crate.

pub mod average;
pub mod bench;
pub mod bench_caption;
pub mod caption;
pub mod captioning;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod generate;
pub mod images;
pub mod inference;
pub mod model;
pub mod optim;
mod prepare;
pub mod train;
mod validate;

pub use caption::{evaluate_captions, expand_inputs, CaptionReport, Captioner};
pub use config::{resolve_data_dir, Config};
pub use error::{Error, Result};
pub use evaluate::{evaluate, EvalReport, Split};
pub use generate::{diversity, Generator, Sample};
pub use inference::Translator;
pub use train::{default_out, train, TrainOptions, TrainSummary};
