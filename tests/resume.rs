//! The binary's resume, across processes: a run stopped at step N/2 and continued with `--resume`
//! ends with the same weights and Adam moments, bit for bit, as one uninterrupted run of N steps.

use std::path::Path;
use std::process::Command;

use seq2seq::pipeline::checkpoint;

const CONFIG: &str = "name: resume-test
seed: 11
data:
  format: dates
  train_size: 600
  valid_size: 30
  test_size: 30
  max_src_len: 40
  max_tgt_len: 12
  src_vocab: {level: char}
  tgt_vocab: {level: char}
model:
  encoder: {embedding_dim: 8, hidden_size: 16, emb_dropout: 0.1}
  decoder: {embedding_dim: 8, hidden_size: 24, attention_dim: 16, dropout: 0.0}
train:
  learning_rate: 0.005
  batch_size: 16
  max_epochs: 0
  valid_every: 25
  log_every: 10
decoding:
  max_length: 12
";

fn train(cfg: &Path, out: &Path, steps: &str, resume: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seq2seq"));
    cmd.args([
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    cmd.args(["--max-steps", steps]);
    if resume {
        cmd.arg("--resume");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Weights and optimizer moments of a run's resume checkpoint, by name.
fn state(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let dev = candle_core::Device::Cpu;
    let (weights, moments, _) = checkpoint::load_resume(dir, &dev).unwrap();
    let moments = moments
        .into_iter()
        .map(|(k, v)| (format!("optimizer.{k}"), v));
    let mut all: Vec<(String, Vec<f32>)> = weights
        .into_iter()
        .chain(moments)
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn stopped_and_resumed_run_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (whole, halves) = (dir.path().join("whole"), dir.path().join("halves"));
    // 70 steps: past an epoch boundary (600 pairs / 16) and between validations in both halves.
    train(&cfg, &whole, "70", false);
    train(&cfg, &halves, "35", false);
    train(&cfg, &halves, "70", true);
    let (a, b) = (state(&whole), state(&halves));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(k, _)| k.starts_with("optimizer.")));
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        // Bit equality, not closeness: resume replays the data order, dropout masks and updates.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(va), bits(vb), "{na} differs after resume");
    }
}
