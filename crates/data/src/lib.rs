//! Data for the seq2seq pipelines: vocabularies on HF `tokenizers`, corpus readers with
//! file:line errors, the synthetic quickstart datasets, and length-bucketed batching.
//!
//! This crate knows nothing about tensors or models: batches are padded id matrices.

pub mod batch;
pub mod captions;
pub mod corpus;
pub mod detok;
pub mod error;
pub mod stream;
pub mod synthetic;
pub mod vocab;

pub use batch::{
    batches, bucket_batches, grouped_batches, token_batches, Batch, BatchSize, Example,
};
pub use corpus::{read_csv, read_parallel, read_tsv, seeded_split, Pair};
pub use detok::{capitalise_sentences, detokenize};
pub use error::DataError;
pub use stream::{PairStream, StreamPos, StreamSource};
pub use vocab::{Level, Vocab, VocabSpec};
