//! The seq2seq pipelines: config, model assembly ([`model::build_model`]), training with
//! checkpoints and resume, and decoding for the three tasks (translation, captioning,
//! generation). The CLI is a thin layer over this crate; this crate never prints: it reports
//! progress through an [`Observer`] and returns typed errors.

pub mod bench;
pub mod config;
pub mod curves;
pub mod decode;
pub mod device;
pub mod error;
pub mod info;
pub mod model;
pub mod model_dir;
pub mod observer;
pub mod tasks;
pub mod train;

pub use config::{resolve_data_dir, Config};
pub use decode::LoadedModel;
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use observer::{Observer, StepReport};
pub use tasks::captioning::{evaluate_captions, expand_inputs, CaptionReport, Captioner};
pub use tasks::generation::{diversity, Generator, Piece, Sample};
pub use tasks::translation::{evaluate, EvalReport, Split, Translated, Translator};
pub use train::{default_out, train, HeldOut, TrainOptions, TrainSummary};
