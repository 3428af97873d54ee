//! What the training tests share: a small model, and a run's resume checkpoint read back for
//! comparison. (Each test file uses part of it.)
#![allow(dead_code)]

use std::path::Path;

use seq2seq_pipeline::{model_dir, Config};

/// Makes `c`'s model small enough to train in a test in about a second: embeddings 8, encoder
/// 8 per direction, decoder 16, attention 8.
pub fn small_model(c: &mut Config) {
    c.model.encoder.embedding_dim = 8;
    c.model.encoder.hidden_size = 8;
    c.model.decoder.embedding_dim = 8;
    c.model.decoder.hidden_size = 16;
    c.model.decoder.attention_dim = 8;
}

/// Weights and Adam moments (`optimizer.*`) of the resume checkpoint, by name.
pub fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (weights, moments, _) = model_dir::load_resume(dir, &candle_core::Device::Cpu).unwrap();
    let mut w: Vec<(String, Vec<f32>)> = weights
        .into_iter()
        .chain(
            moments
                .into_iter()
                .map(|(k, v)| (format!("optimizer.{k}"), v)),
        )
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Asserts that two runs' resume checkpoints hold bit-equal weights and moments.
pub fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na} differs");
    }
}

/// An observer that keeps the run's log lines.
pub struct Lines<'a>(pub &'a mut Vec<String>);

impl seq2seq_pipeline::Observer for Lines<'_> {
    fn line(&mut self, l: &str) {
        self.0.push(l.to_string());
    }
}
