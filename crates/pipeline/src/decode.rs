//! Decoding for every task: a model directory loaded (with its ensemble members) as a
//! [`LoadedModel`], and the search over batches of sources ([`decode_views`]). The tasks'
//! front ends (translator, captioner, generator) wrap a `LoadedModel`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use seq2seq_data::Vocab;
use seq2seq_decoder::{row_seeds, search, DecoderStepper, Ensemble, Hypothesis, SpecialTokens};
use seq2seq_nn::Ctx;

use crate::config::{Config, DecodingConfig, Task};
use crate::model::{build_model, Seq2Seq, Source};
use crate::model_dir::{checkpoint_file, model_weights, CONFIG, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::{Error, Result};

/// Decodes `n` inputs with the configured strategy, `opts.batch_size` at a time in the given
/// `order`; `source` builds the encoder input of a chunk of input indices. With several `models`
/// (which share the target vocabulary) the search runs on their ensemble: each encodes the input
/// with its own encoder, and the next-token distribution is the mean of theirs. The hypotheses
/// (n-best for beam search) come back in input order.
pub fn decode_sources(
    models: &[&Seq2Seq],
    n: usize,
    order: &[usize],
    mut source: impl FnMut(&[usize]) -> Result<Source>,
    tgt: &Vocab,
    opts: &DecodingConfig,
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    decode_views(
        models,
        Views::one(),
        n,
        order,
        |c| Ok(vec![source(c)?]),
        tgt,
        opts,
        dev,
    )
}

/// How many versions of each source [`decode_views`] reads, and how a view's memory positions
/// map onto the first view's (for the attention of a mirrored image, say).
#[derive(Clone, Copy)]
pub struct Views<'a> {
    pub count: usize,
    /// `(view, memory length)` → for each shared position, the view's position; `None` where
    /// the view's positions are the shared ones.
    pub order: Option<&'a dyn Fn(usize, usize) -> Option<Vec<u32>>>,
}

impl Views<'_> {
    pub fn one() -> Self {
        Self {
            count: 1,
            order: None,
        }
    }
}

/// [`decode_sources`] with `views` versions of each source (an image and its mirror, say):
/// every model reads every view, and the `models.len() * views` encodings decode as one
/// ensemble, so that the next-token distribution is averaged over models and views alike.
#[allow(clippy::too_many_arguments)]
pub fn decode_views(
    models: &[&Seq2Seq],
    views: Views,
    n: usize,
    order: &[usize],
    mut source: impl FnMut(&[usize]) -> Result<Vec<Source>>,
    tgt: &Vocab,
    opts: &DecodingConfig,
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    let sp = SpecialTokens {
        pad: tgt.pad,
        bos: tgt.bos,
        eos: tgt.eos,
        unk: tgt.unk,
    };
    let mut out = vec![Vec::new(); n];
    let count = views.count.max(1);
    let steppers = (0..count)
        .flat_map(|_| models.iter().map(|m| DecoderStepper(&m.decoder)))
        .collect();
    let mut ensemble = Ensemble::new(steppers)?;
    for chunk in order.chunks(opts.batch_size.max(1)) {
        let srcs = source(chunk)?;
        if srcs.len() != count {
            return Err(Error::ViewCount {
                expected: count,
                got: srcs.len(),
            });
        }
        let mut starts = Vec::with_capacity(models.len() * srcs.len());
        let mut orders = Vec::new();
        for (v, src) in srcs.iter().enumerate() {
            for (j, m) in models.iter().enumerate() {
                let member = v * models.len() + j;
                let enc = m.encode(src, &mut Ctx::eval())?;
                starts.push(DecoderStepper(&m.decoder).start(&enc, chunk.len(), dev)?);
                let len = enc.memory.as_ref().map_or(Ok(0), |mem| mem.dim(1))?;
                if let Some(order) = views
                    .order
                    .filter(|_| opts.attention)
                    .and_then(|f| f(v, len))
                {
                    orders.push((member, Tensor::from_vec(order, len, dev)?));
                }
            }
        }
        for (member, order) in orders {
            ensemble.set_attention_order(member, order);
        }
        let bos = vec![tgt.bos; chunk.len()];
        let hyps = search(
            &ensemble,
            starts,
            &bos,
            sp,
            opts,
            &seeds_of(opts, chunk, n)?,
            dev,
        )?;
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = h;
        }
    }
    Ok(out)
}

/// The sampling seeds of a chunk of inputs: `opts.row_seeds` where given, else `seed + i`.
fn seeds_of(opts: &DecodingConfig, chunk: &[usize], n: usize) -> Result<Vec<u64>> {
    match &opts.row_seeds {
        None => Ok(row_seeds(opts.seed, chunk)),
        Some(s) if s.len() == n => Ok(chunk.iter().map(|&i| s[i]).collect()),
        Some(s) => Err(Error::SeedCount {
            expected: n,
            got: s.len(),
        }),
    }
}

/// Decodes source id sequences in length-sorted batches with the configured strategy; the
/// hypotheses (n-best for beam search) keep the input order.
pub fn decode_ids(
    models: &[&Seq2Seq],
    srcs: &[Vec<u32>],
    tgt: &Vocab,
    pad: u32,
    opts: &DecodingConfig,
    dev: &Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    let mut order: Vec<usize> = (0..srcs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(srcs[i].len()));
    let source = |chunk: &[usize]| -> Result<Source> {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| srcs[i].as_slice()).collect();
        text_source(&rows, pad, dev)
    };
    decode_sources(models, srcs.len(), &order, source, tgt, opts, dev)
}

/// Source id sequences as one padded text source (ids and mask).
pub(crate) fn text_source(rows: &[&[u32]], pad: u32, dev: &Device) -> Result<Source> {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad; rows.len() * len];
    let mut mask = vec![0f32; rows.len() * len];
    for (r, row) in rows.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            ids[r * len + j] = t;
            mask[r * len + j] = 1.0;
        }
        mask[r * len] = 1.0; // an empty line still has one position to attend to
    }
    Ok(Source::Text {
        ids: Tensor::from_vec(ids, (rows.len(), len), dev)?,
        mask: Tensor::from_vec(mask, (rows.len(), len), dev)?,
    })
}

/// The n-best list of one input: (text, score), best first.
pub type NBest = Vec<(String, f64)>;

/// A trained model loaded from its directory.
pub struct LoadedModel {
    pub config: Config,
    pub src_vocab: Vocab,
    pub tgt_vocab: Vocab,
    pub model: Seq2Seq,
    /// Further ensemble members searched together with `model` ([`Self::add_members`]).
    pub ensemble: Vec<Seq2Seq>,
    pub device: Device,
}

/// For captioning models, the first setting that makes their frozen image encoders (and so their
/// image features) differ; `None` where one pass of the first serves both.
fn frozen_image_mismatch(a: &Config, b: &Config) -> Option<&'static str> {
    if a.task != Task::Captioning {
        return None;
    }
    let (x, y) = (&a.model.image_encoder, &b.model.image_encoder);
    if a.data.image_size != b.data.image_size {
        Some("data.image_size")
    } else if x.backbone != y.backbone {
        Some("model.image_encoder.backbone")
    } else if x.checkpoint != y.checkpoint {
        Some("model.image_encoder.checkpoint")
    } else if x.fine_tune_blocks != y.fine_tune_blocks {
        Some("model.image_encoder.fine_tune_blocks")
    } else {
        None
    }
}

/// Loads a model directory written by `train`, or one weights file in it
/// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
/// config and vocabularies, the file the weights in place of `model.safetensors`.
pub(crate) fn load_dir(path: &Path, task: Task, device: &Device) -> Result<LoadedModel> {
    let (dir, weights) = checkpoint_file(path);
    if !path.is_dir() && !path.is_file() {
        return Err(Error::ModelDir {
            path: path.to_path_buf(),
            msg: "not a model directory or a checkpoint file in one".into(),
        });
    }
    let dir = dir.as_path();
    let missing = |name: &str| Error::ModelDir {
        path: dir.to_path_buf(),
        msg: format!("{name} is missing"),
    };
    let cfg_path = dir.join(CONFIG);
    if !cfg_path.exists() {
        return Err(missing(CONFIG));
    }
    let config = Config::from_file(&cfg_path)?;
    if config.task != task {
        let cmd = match config.task {
            Task::Translation => "translate",
            Task::Generation => "generate",
            Task::Captioning => "caption",
        };
        return Err(Error::ModelDir {
            path: dir.to_path_buf(),
            msg: format!("holds a {:?} model: use `seq2seq {cmd}`", config.task).to_lowercase(),
        });
    }
    // Only translation has a source vocabulary.
    let no_source = task != Task::Translation;
    for name in [SRC_TOKENIZER, TGT_TOKENIZER, &weights] {
        let optional = no_source && name == SRC_TOKENIZER;
        if !optional && !dir.join(name).exists() {
            return Err(missing(name));
        }
    }
    let tgt_vocab = Vocab::load(&dir.join(TGT_TOKENIZER))?;
    let src_vocab = if no_source {
        tgt_vocab.clone()
    } else {
        Vocab::load(&dir.join(SRC_TOKENIZER))?
    };
    let device = device.clone();
    // A resume checkpoint also holds optimizer moments: only the model's tensors are kept.
    let tensors = model_weights(dir, &weights)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let model = build_model(
        &config.model,
        config.task,
        src_vocab.len(),
        tgt_vocab.len(),
        vb,
        None,
    )
    .map_err(|e| Error::ModelDir {
        path: dir.to_path_buf(),
        msg: format!("{weights} does not match {CONFIG}: {e}"),
    })?;
    Ok(LoadedModel {
        config,
        src_vocab,
        tgt_vocab,
        model,
        ensemble: Vec::new(),
        device,
    })
}

impl LoadedModel {
    /// The models a search runs on: this one, then the ensemble members.
    pub fn members(&self) -> Vec<&Seq2Seq> {
        std::iter::once(&self.model).chain(&self.ensemble).collect()
    }

    /// Adds ensemble members: `.safetensors` checkpoints of this model's own config (the weights
    /// of other validations, `train.keep_checkpoints`, or `last.safetensors`), or model
    /// directories, whose configs may differ but whose vocabularies must be this model's.
    pub fn add_members(&mut self, paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            let member = |msg: String| Error::EnsembleMember {
                path: p.clone(),
                msg,
            };
            if !p.exists() {
                return Err(member("no such file or directory".into()));
            }
            let model = if p.is_dir() {
                let other = load_dir(p, self.config.task, &self.device)?;
                if let Some(why) = frozen_image_mismatch(&self.config, &other.config) {
                    return Err(member(format!(
                        "its {why} differs from the first model's: captioning ensemble members \
                         must share the frozen image encoder (its features are computed once)"
                    )));
                }
                for (name, a, b) in [
                    (SRC_TOKENIZER, &self.src_vocab, &other.src_vocab),
                    (TGT_TOKENIZER, &self.tgt_vocab, &other.tgt_vocab),
                ] {
                    if a.to_json()? != b.to_json()? {
                        return Err(member(format!(
                            "its {name} differs from the first model's: ensemble members must \
                             share the vocabularies"
                        )));
                    }
                }
                other.model
            } else {
                let (dir, name) = checkpoint_file(p);
                let vb =
                    VarBuilder::from_tensors(model_weights(&dir, &name)?, DType::F32, &self.device);
                build_model(
                    &self.config.model,
                    self.config.task,
                    self.src_vocab.len(),
                    self.tgt_vocab.len(),
                    vb,
                    None,
                )
                .map_err(|e| {
                    member(format!(
                        "does not fit the first model's {CONFIG} ({e}); a checkpoint file must \
                         come from a run of the same config (else give its model directory)"
                    ))
                })?
            };
            self.ensemble.push(model);
        }
        Ok(())
    }
}
