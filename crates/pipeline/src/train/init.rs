//! `train --init-from`: a new run that starts from another model's weights and vocabularies
//! (OpenNMT-py's `-train_from`, a fine-tuning start), and from its Adam moments when it has
//! them unless `--reset-optimizer` (`-reset_optim`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};

use crate::config::{Config, VocabConfig};
use crate::model_dir::{self, TrainerState, CONFIG, SRC_TOKENIZER, STATE_TENSOR, TGT_TOKENIZER};
use crate::train::optim::Adam;
use crate::{Error, Result};

/// What a run starts from: the source checkpoint's weights, and its moments and optimizer step
/// when it has them and they are kept.
pub(crate) struct Init {
    pub file: PathBuf,
    pub weights: HashMap<String, Tensor>,
    pub moments: Option<(HashMap<String, Tensor>, u64)>,
}

fn flag(msg: String) -> Error {
    Error::Flag {
        flag: "--init-from",
        msg,
    }
}

/// Reads `source` (a model directory, its best weights; or one checkpoint file in one), checks
/// that `cfg` would build the same vocabularies, and copies them into `out`.
pub(crate) fn init_from(
    source: &Path,
    cfg: &Config,
    out: &Path,
    reset_optimizer: bool,
    dev: &Device,
) -> Result<Init> {
    let (dir, name) = model_dir::checkpoint_file(source);
    let theirs = Config::from_file(&dir.join(CONFIG))?;
    let differences = vocab_differences(&theirs, cfg);
    if !differences.is_empty() {
        return Err(flag(format!(
            "{} was trained with other vocabularies than this config would build: {}",
            dir.display(),
            differences.join("; ")
        )));
    }
    for file in [SRC_TOKENIZER, TGT_TOKENIZER] {
        let from = dir.join(file);
        if from.exists() {
            let bytes = std::fs::read(&from).map_err(|source| Error::Read {
                path: from.clone(),
                source,
            })?;
            model_dir::write_atomic(&out.join(file), &bytes)?;
        }
    }
    let mut all = model_dir::load_tensors(&dir, &name, dev)?;
    let state = all.remove(STATE_TENSOR);
    let (weights, moments) = model_dir::split_moments(all);
    let moments = match (reset_optimizer || moments.is_empty(), state) {
        (false, Some(s)) => {
            let s: TrainerState = serde_json::from_slice(&s.to_vec1::<u8>()?).map_err(|e| {
                flag(format!(
                    "{}: the trainer state is corrupt: {e}",
                    source.display()
                ))
            })?;
            Some((moments, (s.step - s.skipped_steps) as u64))
        }
        _ => None,
    };
    Ok(Init {
        file: dir.join(name),
        weights,
        moments,
    })
}

/// The vocabulary settings that differ between the source model's config and this one.
fn vocab_differences(theirs: &Config, ours: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if theirs.task != ours.task {
        out.push(format!(
            "task is {:?} there, {:?} here",
            theirs.task, ours.task
        ));
    }
    if theirs.data.lowercase != ours.data.lowercase {
        out.push(format!(
            "data.lowercase is {} there, {} here",
            theirs.data.lowercase, ours.data.lowercase
        ));
    }
    let mut side = |key: &str, a: &VocabConfig, b: &VocabConfig| {
        if a.level != b.level {
            out.push(format!(
                "{key}.level is {:?} there, {:?} here",
                a.level, b.level
            ));
        }
        if a.min_freq != b.min_freq {
            out.push(format!(
                "{key}.min_freq is {} there, {} here",
                a.min_freq, b.min_freq
            ));
        }
        if a.max_size != b.max_size {
            out.push(format!(
                "{key}.max_size is {} there, {} here",
                a.max_size, b.max_size
            ));
        }
    };
    side(
        "data.src_vocab",
        &theirs.data.src_vocab,
        &ours.data.src_vocab,
    );
    side(
        "data.tgt_vocab",
        &theirs.data.tgt_vocab,
        &ours.data.tgt_vocab,
    );
    out
}

/// The source weights into the freshly built model (every variable must be there, with its
/// shape), then its moments into the optimizer.
pub(crate) fn apply(init: &Init, vars: &HashMap<String, Var>, opt: &mut Adam) -> Result<()> {
    let file = init.file.display();
    for (name, var) in vars {
        let w = init.weights.get(name).ok_or_else(|| {
            flag(format!(
                "{file} has no {name}: the config's model differs from the checkpoint's"
            ))
        })?;
        if w.dims() != var.dims() {
            return Err(flag(format!(
                "{file}: {name} is {:?} there, {:?} in the config's model",
                w.dims(),
                var.dims()
            )));
        }
        var.set(w)?;
    }
    if let Some((moments, step)) = &init.moments {
        opt.load_state(moments)
            .map_err(|msg| flag(format!("{file}: {msg}")))?;
        opt.step = *step;
    }
    Ok(())
}
