//! What the training tests share: a run's resume checkpoint read back for comparison.

use std::path::Path;

use seq2seq_pipeline::model_dir;

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
