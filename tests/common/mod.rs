//! What the binary-level fault tests share: a tiny training config, a child `seq2seq train`
//! whose stderr is read line by line, and the resume checkpoint's contents as bits.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use seq2seq::pipeline::model_dir;

/// A small dates model: a few hundred steps of a few milliseconds each, validating often.
pub const CONFIG: &str = "name: faults
seed: 9
data:
  format: dates
  train_size: 400
  valid_size: 20
  test_size: 20
  max_src_len: 40
  max_tgt_len: 12
  src_vocab: {level: char}
  tgt_vocab: {level: char}
model:
  encoder: {embedding_dim: 8, hidden_size: 16, emb_dropout: 0.1}
  decoder: {embedding_dim: 8, hidden_size: 24, attention_dim: 16, hidden_dropout: 0.1}
train:
  learning_rate: 0.005
  batch_size: 16
  max_epochs: 0
  valid_every: 20
  valid_decode_size: 8
  log_every: 5
  keep_checkpoints: 2
decoding:
  max_length: 12
";

/// A running `seq2seq train` and its stderr lines.
pub struct Run {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

pub fn start(cfg: &Path, out: &Path, steps: usize, resume: bool, envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seq2seq"));
    cmd.args([
        "train",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    cmd.args(["--max-steps", &steps.to_string()]);
    if resume {
        cmd.arg("--resume");
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Run {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

impl Run {
    /// Waits for a stderr line containing `needle` (false if the process ended first).
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the exit; returns the status code and every stderr line.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"))
    }
}

/// The resume checkpoint's weights and optimizer moments as bits, by name.
pub fn state_bits(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let (w, m, _) = model_dir::load_resume(dir, &candle_core::Device::Cpu).unwrap();
    let mut all: Vec<(String, Vec<u32>)> = w
        .into_iter()
        .chain(m.into_iter().map(|(k, v)| (format!("optimizer.{k}"), v)))
        .map(|(k, v)| {
            let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    all.sort();
    all
}

/// A short hex digest of [`state_bits`], to print.
pub fn digest(bits: &[(String, Vec<u32>)]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (k, v) in bits {
        h.update(k.as_bytes());
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every safetensors file in `dir` loads.
pub fn all_checkpoints_load(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !name.starts_with('.') {
            model_dir::load_tensors(dir, &name, &candle_core::Device::Cpu)
                .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            n += 1;
        }
    }
    n
}
