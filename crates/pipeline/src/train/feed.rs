//! The training examples of an epoch, a part at a time: the whole epoch at once for a corpus
//! held in memory, one shuffle buffer at a time for a streamed one (`data.streaming`). The
//! state says which part: a resumed run reads the buffer it was in again, from the stream
//! position saved, and skips the batches already consumed.

use std::sync::Arc;

use seq2seq_data::{Example, StreamPos};

use crate::model_dir::StreamState;
use crate::train::run::Run;
use crate::Result;

/// A part of an epoch: its examples and their batches (as indices into them).
pub(super) struct Chunk {
    pub examples: Arc<Vec<Example>>,
    pub batches: Vec<Vec<usize>>,
    /// Streamed: where the next buffer starts.
    next: Option<StreamPos>,
}

impl Run<'_> {
    /// The part of the epoch the state is in; `None` when a streamed epoch's corpus has ended.
    pub(super) fn chunk(&self) -> Result<Option<Chunk>> {
        let (size, seed) = (self.cfg.train.batch(), self.cfg.seed);
        let epoch = self.state.epoch as u64;
        let Some(ts) = &self.p.stream else {
            let batches = self.task.epoch_batches(&self.p.train, size, seed, epoch);
            return Ok(Some(Chunk {
                examples: self.p.train.clone(),
                batches,
                next: None,
            }));
        };
        let at = self.state.stream.unwrap_or_default();
        let Some(buf) = ts.read(&self.p.src_vocab, &self.p.tgt_vocab, at.start)? else {
            return Ok(None);
        };
        // Each buffer is shuffled and bucketed as a whole corpus is, by a seed of its own; the
        // first by the run's, so that a corpus within one buffer trains as if read whole.
        let buffer_seed = seed ^ at.buffer.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let batches = self
            .task
            .epoch_batches(&buf.examples, size, buffer_seed, epoch);
        Ok(Some(Chunk {
            examples: Arc::new(buf.examples),
            batches,
            next: Some(buf.next),
        }))
    }

    /// Moves the state past a finished part; false when the epoch ends with it (a streamed
    /// epoch ends when the next buffer finds the corpus's end).
    pub(super) fn chunk_done(&mut self, c: &Chunk) -> bool {
        self.state.batch_in_epoch = 0;
        let Some(start) = c.next else {
            return false;
        };
        let buffer = self.state.stream.map_or(0, |s| s.buffer) + 1;
        self.state.stream = Some(StreamState { buffer, start });
        true
    }

    /// Starts the next epoch.
    pub(super) fn next_epoch(&mut self) {
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.stream = None;
    }
}
