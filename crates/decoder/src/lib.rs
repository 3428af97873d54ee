//! The shared recurrent decoder: embedding → recurrent stack → attention → output projection.
//!
//! Every pipeline (translation, captioning, language modelling) ends here. The decoder is built
//! from its own [`DecoderConfig`] and consumes an [`EncoderOutput`]: it never learns which encoder
//! (text, image or none) produced its memory. Search strategies drive it through
//! [`Decoder::start`] and one [`Decoder::step`].
//!
//! To reuse the decoder in a pipeline of your own, produce an [`EncoderOutput`] (or
//! [`EncoderOutput::empty`] for a language model), build the decoder from a [`DecoderConfig`], and
//! decode with [`search`] through [`DecoderStepper`]: `examples/custom_encoder.rs` does exactly this
//! with greedy, sampling and beam search.

pub mod continuous;
pub mod contract;
pub mod decoder;
pub mod distribution;
pub mod ensemble;
pub mod options;
pub mod search;

pub use continuous::Continuous;
pub use contract::EncoderOutput;
pub use decoder::{
    decoder, decoder_sharing, Bridge, Decoder, DecoderConfig, DecoderState, DecoderStyle,
    PreparedMemory,
};
pub use distribution::{Candidate, Stages};
pub use ensemble::Ensemble;
pub use options::{DecodingOptions, InvalidOptions, Strategy, TokenHook};
pub use search::{
    forbidden_bias, length_penalty, row_seeds, search, DecoderStepper, Hypothesis, SearchState,
    SpecialTokens, Stepper,
};
