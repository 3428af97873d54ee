//! `seq2seq bench` on a captioning config, without a trained model: the image encoder's forward
//! and training step in images/s, the figures `bench/torch_image.py` prints for PyTorch.
//!
//! The encoder is built as training builds it ([`build_model`], the Lite0 checkpoint when the data
//! directory has it, random weights otherwise: the speed does not depend on the values). A training
//! step is what a captioning step spends in the encoder: the trainable part's forward from the
//! frozen part's output (pixels for the small CNN, the cached prefix for Lite0), loss
//! `mean(features²)`, backward, and Adam on the encoder's trainable variables.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use seq2seq_image_encoder::{BackboneKind, ImageEncoder};
use seq2seq_nn::{Ctx, SeededVarMap};

use crate::config::Task;
use crate::model::{build_model, Encoder};
use crate::tasks::captioning::cache::load_backbone;
use crate::train::optim::Adam;
use crate::train::run::trainable;
use crate::train::weights::seed_backbone;
use crate::{Config, Error, Result};

#[derive(Debug, Default)]
pub struct ImageBenchReport {
    pub threads: usize,
    pub backbone: &'static str,
    pub image_size: u32,
    pub batch: usize,
    /// Trainable blocks of Lite0 (0 for the small CNN, which trains whole).
    pub fine_tune_blocks: usize,
    /// Whether Lite0's weights came from the checkpoint (random otherwise).
    pub checkpoint: bool,
    /// Pixels → features, inference (the median of the timed repetitions).
    pub forward_images_per_s: f64,
    /// Forward, backward and update of the trainable part; `None` when nothing trains.
    pub train_images_per_s: Option<f64>,
    pub peak_rss_mb: f64,
}

/// The median rate of `reps` timed calls after two warm-ups, in images/s.
fn median_rate(reps: usize, batch: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        rates.push(batch as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Times a captioning config's image encoder at `batch` random images.
pub fn bench_image_encoder(
    cfg: &Config,
    data_dir: &Path,
    batch: usize,
    reps: usize,
) -> Result<ImageBenchReport> {
    if cfg.task != Task::Captioning {
        return Err(Error::BenchTask(cfg.task));
    }
    let dev = Device::Cpu;
    let ie = &cfg.model.image_encoder;
    let vm = SeededVarMap::new(cfg.seed);
    // A missing checkpoint only changes the weights' values, not the work.
    let backbone = load_backbone(cfg, data_dir, &dev).ok().flatten();
    let backbone_vb = backbone
        .as_ref()
        .map(|b| VarBuilder::from_tensors(b.tensors.clone(), DType::F32, &dev));
    let model = build_model(
        &cfg.model,
        cfg.task,
        0,
        8,
        vm.var_builder(&dev),
        backbone_vb,
    )?;
    if let Some(b) = &backbone {
        seed_backbone(&vm, &b.tensors)?;
    }
    let Encoder::Image(enc) = &model.encoder else {
        unreachable!("a captioning model has an image encoder");
    };
    let size = cfg.data.image_size as usize;
    let pixels = Tensor::randn(0f32, 1., (batch, 3, size, size), &dev)?;
    let forward_images_per_s = median_rate(reps, batch, || {
        enc.forward(&pixels, &mut Ctx::eval())?;
        Ok(())
    })?;
    let vars = trainable(
        vm.var_map()
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("encoder.")),
    );
    let train_images_per_s = if vars.is_empty() {
        None
    } else {
        Some(train_rate(enc, &pixels, &vars, reps, batch, cfg.seed)?)
    };
    Ok(ImageBenchReport {
        threads: candle_core::utils::get_num_threads(),
        backbone: match ie.backbone {
            BackboneKind::SmallCnn => "small_cnn",
            BackboneKind::Lite0 => "lite0",
        },
        image_size: cfg.data.image_size,
        batch,
        fine_tune_blocks: match ie.backbone {
            BackboneKind::SmallCnn => 0,
            BackboneKind::Lite0 => ie.fine_tune_blocks,
        },
        checkpoint: backbone.is_some(),
        forward_images_per_s,
        train_images_per_s,
        peak_rss_mb: super::peak_rss_mb(),
    })
}

/// Training steps of the encoder's trainable part from the frozen part's output (computed once,
/// as the feature cache does in training).
fn train_rate(
    enc: &ImageEncoder,
    pixels: &Tensor,
    vars: &HashMap<String, Var>,
    reps: usize,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let input = enc.frozen(pixels)?.detach();
    let mut opt = Adam::new(vars, 1e-3, [0.9, 0.999], 1e-8, 0.0, false)?;
    let mut ctx = Ctx::train(seed);
    median_rate(reps, batch, || {
        let out = enc.trainable(&input, &mut ctx)?;
        let memory = out.memory.expect("an image encoder has a memory");
        let loss = memory.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        opt.update(&grads)?;
        Ok(())
    })
}
