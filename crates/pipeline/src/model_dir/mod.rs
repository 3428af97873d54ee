//! The model directory: file names, atomic writes and the trainer state.
//!
//! ```text
//! config.yaml              resolved config (every default filled in)
//! src_tokenizer.json       source vocabulary (HF tokenizers format)
//! tgt_tokenizer.json       target vocabulary
//! model.safetensors        best weights (PyTorch-style names), used by translate
//! last.safetensors         the resume checkpoint: latest weights (same names), Adam moments
//!                          (`optimizer.m.*`, `optimizer.v.*`) and the trainer state (`trainer_state`,
//!                          JSON bytes) in one file, so they can never disagree after a crash
//! trainer_state.json       a readable copy of that state: step, epoch, position, lr, counters
//! metrics.jsonl            one JSON object per validation
//! ```
//! Every file is written to a temporary name in the same directory and renamed into place, so a
//! crash never leaves a half-written checkpoint.

mod average;
pub use average::average;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const CONFIG: &str = "config.yaml";
pub const SRC_TOKENIZER: &str = "src_tokenizer.json";
pub const TGT_TOKENIZER: &str = "tgt_tokenizer.json";
pub const BEST: &str = "model.safetensors";
pub const LAST: &str = "last.safetensors";
/// Prefix of the Adam moments inside `last.safetensors`.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Name of the trainer state (JSON as u8) inside `last.safetensors`.
pub const STATE_TENSOR: &str = "trainer_state";
pub const STATE: &str = "trainer_state.json";
pub const METRICS: &str = "metrics.jsonl";

/// Where training stopped, enough to continue exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Updates done.
    pub step: usize,
    pub epoch: usize,
    /// Batches of the current epoch (streamed: of the current buffer) already consumed.
    pub batch_in_epoch: usize,
    pub lr: f64,
    /// Best validation score so far (lower is better: loss, or 1 - exact match).
    pub best_score: Option<f64>,
    pub best_step: usize,
    /// Validations since the best one (early stopping).
    pub bad_validations: usize,
    /// Validations since the last improvement or lr decay (plateau schedule).
    pub plateau: usize,
    pub elapsed_s: f64,
    pub target_tokens: u64,
    pub finished: bool,
    /// Batches whose loss or gradients were not finite: consumed, but no update was made (so
    /// the optimizer has made `step - skipped_steps` updates).
    #[serde(default)]
    pub skipped_steps: usize,
    /// Non-finite batches in a row up to `step` (training stops at `train.max_nonfinite_steps`).
    #[serde(default)]
    pub nonfinite_in_a_row: usize,
    /// A streamed training split (`data.streaming`): the current shuffle buffer of the epoch;
    /// `None` at the start of an epoch, and for a corpus held in memory.
    #[serde(default)]
    pub stream: Option<StreamState>,
}

/// Where a streamed epoch stands: the buffer being trained on (`batch_in_epoch` counts its
/// consumed batches), by number and by the stream position it was read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub buffer: u64,
    pub start: seq2seq_data::StreamPos,
}

/// Removes the temporary files a killed process left in `dir` (`.<name>.tmp<pid>`): they were
/// never renamed into place, so nothing refers to them.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    finish_atomic(path, &tmp, written)
}

/// Saves named tensors as safetensors atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = tmp_path(path);
    let written = candle_core::safetensors::save(tensors, &tmp)
        .map_err(|e| match e {
            candle_core::Error::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all());
    finish_atomic(path, &tmp, written)
}

/// Renames a fully written temporary file into place; on a failed write (a full disk, a file
/// size limit) removes it instead, so the previous file stays as it was and nothing is left over.
fn finish_atomic(path: &Path, tmp: &Path, written: std::io::Result<()>) -> Result<()> {
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(write_err(path)(e));
    }
    test_hooks::before_rename(path);
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        write_err(path)(e)
    })
}

/// Hooks for the reliability tests, off unless their variable is set.
mod test_hooks {
    use std::path::Path;
    use std::sync::OnceLock;

    /// `SEQ2SEQ_TEST_WRITE_DELAY_MS=N`: say on stderr which file is being written, then wait N ms
    /// between its complete temporary file and the rename, so that a chaos test can kill the
    /// process inside a checkpoint write deterministically.
    pub(super) fn before_rename(path: &Path) {
        static DELAY: OnceLock<Option<u64>> = OnceLock::new();
        let delay = DELAY.get_or_init(|| {
            std::env::var("SEQ2SEQ_TEST_WRITE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        if let Some(ms) = delay {
            eprintln!("test hook: writing {}", path.display());
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

/// A checkpoint argument: a `.safetensors` file, or a model directory (its `model.safetensors`).
pub fn checkpoint_file(arg: &Path) -> (PathBuf, String) {
    if arg.is_dir() {
        (arg.to_path_buf(), BEST.to_string())
    } else {
        let dir = match arg.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = arg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (dir, name)
    }
}

/// The model weights of a checkpoint: resume checkpoints also hold optimizer moments and the
/// trainer state, which are left out.
pub fn model_weights(dir: &Path, name: &str) -> Result<HashMap<String, Tensor>> {
    let mut t = load_tensors(dir, name, &Device::Cpu)?;
    t.retain(|k, _| k != STATE_TENSOR && !k.starts_with(OPTIMIZER_PREFIX));
    Ok(t)
}

/// Loads a safetensors file, naming it when it is missing or corrupt.
pub fn load_tensors(dir: &Path, name: &str, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(Error::ModelDir {
            path: dir.to_path_buf(),
            msg: format!("{name} is missing"),
        });
    }
    let corrupt = |e: candle_core::Error| Error::ModelDir {
        path: dir.to_path_buf(),
        msg: format!("{name} is corrupt or not a safetensors file: {e}"),
    };
    // Mapped, not read: reading copies the file into a fresh buffer and then each tensor out of it,
    // and the kernel's zeroing of those fresh pages dominated `seq2seq translate`'s cold start
    // (docs/results.md, "Memory-mapped checkpoints"). SAFETY: the mapping is only read while this function runs,
    // and checkpoints are replaced by an atomic rename, never rewritten in place, so the mapped
    // file's contents do not change under it.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }.map_err(corrupt)?;
    st.tensors()
        .into_iter()
        .map(|(k, _)| {
            let t = st.load(&k, dev).map_err(corrupt)?;
            Ok((k, t))
        })
        .collect()
}

pub fn save_state(dir: &Path, state: &TrainerState) -> Result<()> {
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    write_atomic(&dir.join(STATE), json.as_bytes())
}

pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::ModelDir {
        path: dir.to_path_buf(),
        msg: format!("cannot read {STATE}: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::ModelDir {
        path: dir.to_path_buf(),
        msg: format!("{STATE} is corrupt: {e}"),
    })
}

/// Writes the resume checkpoint (one atomic file), then the readable state copy.
pub fn save_resume(
    dir: &Path,
    weights: HashMap<String, Tensor>,
    moments: HashMap<String, Tensor>,
    state: &TrainerState,
) -> Result<()> {
    let mut all = weights;
    for (k, v) in moments {
        all.insert(format!("{OPTIMIZER_PREFIX}{k}"), v);
    }
    let json = serde_json::to_vec(state).expect("state serialises");
    let n = json.len();
    all.insert(
        STATE_TENSOR.into(),
        Tensor::from_vec(json, n, &Device::Cpu)?,
    );
    save_tensors(&dir.join(LAST), &all)?;
    save_state(dir, state)
}

/// The resume checkpoint: weights, Adam moments (without their prefix) and the trainer state.
pub type Resume = (
    HashMap<String, Tensor>,
    HashMap<String, Tensor>,
    TrainerState,
);

/// A checkpoint's tensors split into weights and Adam moments (without their prefix).
pub fn split_moments(
    all: HashMap<String, Tensor>,
) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let mut moments = HashMap::new();
    let mut weights = HashMap::new();
    for (k, v) in all {
        match k.strip_prefix(OPTIMIZER_PREFIX) {
            Some(m) => moments.insert(m.to_string(), v),
            None => weights.insert(k, v),
        };
    }
    (weights, moments)
}

pub fn load_resume(dir: &Path, dev: &Device) -> Result<Resume> {
    let mut all = load_tensors(dir, LAST, dev)?;
    let corrupt = |msg: String| Error::ModelDir {
        path: dir.to_path_buf(),
        msg,
    };
    let state = all
        .remove(STATE_TENSOR)
        .ok_or_else(|| corrupt(format!("{LAST} lacks the trainer state")))?;
    let state: TrainerState = serde_json::from_slice(&state.to_vec1::<u8>()?)
        .map_err(|e| corrupt(format!("{LAST}: the trainer state is corrupt: {e}")))?;
    let (weights, moments) = split_moments(all);
    Ok((weights, moments, state))
}

/// The metrics log's records whose `step` is at most `upto` (unreadable lines dropped).
fn metrics_upto(dir: &Path, upto: u64) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(METRICS)).unwrap_or_default();
    text.lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= upto)
        })
        .map(str::to_string)
        .collect()
}

/// Adds one validation's record to the metrics log, replacing any record of that step or later
/// (left by a run killed after it validated and before its resume checkpoint): the log is
/// rewritten atomically, so a reader sees each validation once and never a torn line.
pub fn record_metrics(dir: &Path, record: &serde_json::Value) -> Result<()> {
    let step = record["step"].as_u64().unwrap_or(0);
    let mut lines = metrics_upto(dir, step.saturating_sub(1));
    lines.push(record.to_string());
    write_atomic(&dir.join(METRICS), (lines.join("\n") + "\n").as_bytes())
}

/// On resume: the metrics log as it was at the resume checkpoint's step.
pub fn trim_metrics(dir: &Path, step: usize) -> Result<()> {
    let path = dir.join(METRICS);
    if !path.exists() {
        return Ok(());
    }
    let lines = metrics_upto(dir, step as u64);
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    write_atomic(&path, text.as_bytes())
}

/// Saves this validation's weights as `checkpoint-step<step>.safetensors` and removes all but the
/// newest `keep` of them (by step).
pub fn keep_checkpoint(
    out: &Path,
    step: usize,
    keep: usize,
    weights: &HashMap<String, Tensor>,
) -> Result<()> {
    save_tensors(
        &out.join(format!("checkpoint-step{step}.safetensors")),
        weights,
    )?;
    let mut steps: Vec<usize> = std::fs::read_dir(out)
        .map_err(|source| Error::Write {
            path: out.to_path_buf(),
            source,
        })?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-step")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort_unstable();
    for s in steps.iter().take(steps.len().saturating_sub(keep)) {
        let old = out.join(format!("checkpoint-step{s}.safetensors"));
        std::fs::remove_file(&old).map_err(|source| Error::Write { path: old, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("s2s-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let e = load_tensors(&dir, "x.json", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json is corrupt"), "{e}");
        let e = load_tensors(&dir, "nope.safetensors", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.safetensors is missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
