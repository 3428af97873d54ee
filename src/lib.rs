//! seq2seq: recurrent sequence-to-sequence models on candle, as one dependency.
//!
//! This facade re-exports the workspace's crates under short names, so an application depends on
//! `seq2seq` alone (with `default-features = false` to leave out the command line):
//!
//! * [`decoder`]: the shared attentional decoder, the [`decoder::EncoderOutput`] contract and the
//!   search strategies (greedy, sampling, beam) behind the [`decoder::Stepper`] trait;
//! * [`nn`]: recurrent layers, attention, losses and the fused CPU kernels;
//! * [`data`]: vocabularies, corpus readers and batching;
//! * [`text_encoder`] and [`image_encoder`]: the encoders that feed the decoder;
//! * [`datasets`]: the pinned corpus catalogue and its verifying, resuming downloader;
//! * [`metrics`]: BLEU and chrF as sacreBLEU computes them, CIDEr-D as pycocoevalcap does;
//! * [`pipeline`]: configs, model assembly, training, checkpoints, inference and evaluation.
//!
//! ```no_run
//! use seq2seq::pipeline::Translator;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let translator = Translator::load(std::path::Path::new("runs/quickstart"))?;
//! let options = translator.config.decoding.clone(); // the model's own decoding defaults
//! let (outputs, _warnings) = translator.translate(&["december 25, 2001".to_string()], &options)?;
//! println!("{}", outputs[0]);
//! # Ok(())
//! # }
//! ```

pub use seq2seq_data as data;
pub use seq2seq_datasets as datasets;
pub use seq2seq_decoder as decoder;
pub use seq2seq_image_encoder as image_encoder;
pub use seq2seq_metrics as metrics;
pub use seq2seq_nn as nn;
pub use seq2seq_pipeline as pipeline;
pub use seq2seq_plot as plot;
pub use seq2seq_text_encoder as text_encoder;
