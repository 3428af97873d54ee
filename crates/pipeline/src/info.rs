//! `seq2seq info`: what a model directory holds, on one screen — task, architecture, parameters
//! per module, vocabularies, training, the best validation, and the files.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use seq2seq_data::Vocab;
use serde::Serialize;

use crate::config::{Config, Task};
use crate::model_dir::{self, BEST, CONFIG, METRICS, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::Result;

/// Everything `seq2seq info` shows.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub task: Task,
    /// One line per part: the encoder, the decoder, the attention.
    pub architecture: Vec<String>,
    /// Values of `model.safetensors` per module (the first two parts of the tensor names), and
    /// in all (a frozen backbone's weights and batch-norm statistics included).
    pub parameters: BTreeMap<String, usize>,
    pub total_parameters: usize,
    pub vocabularies: Vec<VocabInfo>,
    pub training: Option<TrainingInfo>,
    /// The validation record of the kept checkpoint (`metrics.jsonl`).
    pub best_validation: Option<serde_json::Value>,
    /// File name and size in bytes, by name.
    pub files: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VocabInfo {
    /// `source` or `target`.
    pub side: &'static str,
    pub level: String,
    pub size: usize,
    pub specials: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainingInfo {
    pub steps: usize,
    pub epochs: usize,
    pub elapsed_s: f64,
    pub target_tokens: u64,
    pub skipped_steps: usize,
    pub finished: bool,
    pub best_step: usize,
}

/// Reads a model directory's config, weights, vocabularies, trainer state and metrics.
pub fn model_info(dir: &Path) -> Result<ModelInfo> {
    let cfg = Config::from_file(&dir.join(CONFIG))?;
    let weights = model_dir::load_tensors(dir, BEST, &Device::Cpu)?;
    let mut parameters = BTreeMap::new();
    for (name, t) in &weights {
        let module: Vec<&str> = name.split('.').take(2).collect();
        *parameters.entry(module.join(".")).or_insert(0) += t.elem_count();
    }
    let training = model_dir::load_state(dir).ok().map(|s| TrainingInfo {
        steps: s.step,
        epochs: s.epoch,
        elapsed_s: s.elapsed_s,
        target_tokens: s.target_tokens,
        skipped_steps: s.skipped_steps,
        finished: s.finished,
        best_step: s.best_step,
    });
    let best_validation = training.as_ref().and_then(|t| {
        let text = std::fs::read_to_string(dir.join(METRICS)).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["step"].as_u64() == Some(t.best_step as u64) && v.get("valid_loss").is_some()
            })
    });
    Ok(ModelInfo {
        name: cfg.name.clone(),
        task: cfg.task,
        architecture: architecture(&cfg),
        total_parameters: parameters.values().sum(),
        parameters,
        vocabularies: vocabularies(dir, &cfg)?,
        training,
        best_validation,
        files: files(dir),
    })
}

/// The model in a few lines, in the order data flows through it.
fn architecture(cfg: &Config) -> Vec<String> {
    let m = &cfg.model;
    let mut lines = Vec::new();
    match cfg.task {
        Task::Translation => {
            let e = &m.encoder;
            lines.push(format!(
                "encoder: {}{:?} × {} layers, hidden {}, embedding {}",
                if e.bidirectional {
                    "bidirectional "
                } else {
                    ""
                },
                e.cell,
                e.num_layers,
                e.hidden_size,
                e.embedding_dim
            ));
        }
        Task::Captioning => {
            let ie = &m.image_encoder;
            lines.push(format!(
                "encoder: image, {:?} backbone ({} fine-tuned blocks), {}×{} pixels",
                ie.backbone, ie.fine_tune_blocks, cfg.data.image_size, cfg.data.image_size
            ));
        }
        Task::Generation => lines.push("encoder: none (a language model)".into()),
    }
    let d = &m.decoder;
    lines.push(format!(
        "decoder: {:?} style, {:?} × {} layers, hidden {}, embedding {}, bridge {:?}{}{}",
        d.style,
        d.cell,
        d.num_layers,
        d.hidden_size,
        d.embedding_dim,
        d.bridge,
        if d.input_feeding {
            ", input feeding"
        } else {
            ""
        },
        if d.tied_embeddings {
            ", tied embeddings"
        } else {
            ""
        }
    ));
    if cfg.task != Task::Generation {
        lines.push(format!(
            "attention: {:?}, dimension {}",
            d.attention, d.attention_dim
        ));
    }
    lines
}

fn vocabularies(dir: &Path, cfg: &Config) -> Result<Vec<VocabInfo>> {
    let mut out = Vec::new();
    let sides = [
        ("source", SRC_TOKENIZER, &cfg.data.src_vocab),
        ("target", TGT_TOKENIZER, &cfg.data.tgt_vocab),
    ];
    for (side, file, spec) in sides {
        if side == "source" && cfg.task != Task::Translation {
            continue;
        }
        let v = Vocab::load(&dir.join(file))?;
        out.push(VocabInfo {
            side,
            level: format!("{:?}", spec.level).to_lowercase(),
            size: v.len(),
            specials: v.tokens(&[v.pad, v.unk, v.bos, v.eos]),
        });
    }
    Ok(out)
}

/// The directory's files (not its temporary ones), by name.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            (m.is_file() && !name.starts_with('.')).then_some((name, m.len()))
        })
        .collect();
    files.sort();
    files
}
