//! `seq2seq bench`: the performance figures of the benchmark configuration, measured in one
//! process — training target tokens/s, peak resident memory, the share of the machine's matmul
//! rate used, greedy and beam decoding sentences/s, and cold start.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use seq2seq_data::{Batch, Example, Vocab};
use seq2seq_decoder::{DecodingOptions, Strategy};
use seq2seq_nn::SeededVarMap;

use crate::config::{AttentionType, Cell, Config, OptimizerKind, Style, Task};
use crate::model::{build_model, cell_kind, BatchTensors};
use crate::tasks::text::{load_splits, Keep, PairEncoding};
use crate::tasks::translation::Translator;
use crate::train::optim::Adam;
use crate::train::schedule::step_seed;
use crate::train::step::step;
use crate::{Error, Result};

mod captioning;
mod image;

pub use captioning::{bench_captioning, CaptionBenchReport};
pub use image::{bench_image_encoder, ImageBenchReport};

pub struct BenchOptions {
    pub config: Config,
    pub data_dir: PathBuf,
    /// A trained model of the same config, for the decoding figures.
    pub model: Option<PathBuf>,
    pub train_steps: usize,
    pub warmup_steps: usize,
    /// Test sentences decoded (0 = the whole test split).
    pub decode_sentences: usize,
    /// Where training and decoding run.
    pub device: crate::device::DeviceChoice,
}

#[derive(Debug, Default)]
pub struct BenchReport {
    pub threads: usize,
    /// Mean over all timed steps: target tokens / training time.
    pub train_tokens_per_s: f64,
    /// The peer's statistic (`torch_mt.py`): the median of the rates of consecutive 20-step
    /// windows, the first window left out. Less moved by a passing slowdown of the host than the
    /// mean; `None` with fewer than two windows after the first.
    pub train_tokens_per_s_median: Option<f64>,
    pub train_steps: usize,
    pub peak_rss_mb: f64,
    pub flops_per_token: f64,
    pub matmul_gflops: f64,
    pub greedy_sent_per_s: Option<f64>,
    pub beam5_sent_per_s: Option<f64>,
    pub decode_sentences: usize,
    pub cold_start_ms: Option<f64>,
    /// Shares of the timed training steps spent in the forward pass (loss included), the
    /// backward pass, and gradient clipping plus the optimizer update; they sum to 1.
    pub phase_shares: [f64; 3],
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Multiply-adds per target token of one training step's forward pass, from the config:
/// encoder per source token (scaled by the source/target length ratio), decoder recurrence,
/// attention over `src_len` positions, attentional vector and output projection.
fn macs_per_target_token(cfg: &Config, src_per_tgt: f64, src_len: f64, tgt_vocab: usize) -> f64 {
    let gates = |c: Cell| cell_kind(c).gates() as f64;
    let e = &cfg.model.encoder;
    let d = &cfg.model.decoder;
    let dirs = if e.bidirectional { 2.0 } else { 1.0 };
    let (eh, dh) = (e.hidden_size as f64, d.hidden_size as f64);
    let c = eh * dirs;
    let mut enc = 0.0;
    for l in 0..e.num_layers {
        let input = if l == 0 { e.embedding_dim as f64 } else { c };
        enc += dirs * gates(e.cell) * eh * (input + eh);
    }
    let attends = cfg.task == Task::Translation && d.attention != AttentionType::None;
    let bahdanau = attends && d.style == Style::Bahdanau;
    let emb = d.embedding_dim as f64;
    let mut dec = 0.0;
    for l in 0..d.num_layers {
        let input = match (l, bahdanau, d.input_feeding && attends) {
            (0, true, _) => emb + c,
            (0, false, true) => emb + dh,
            (0, false, false) => emb,
            _ => dh,
        };
        dec += gates(d.cell) * dh * (input + dh);
    }
    if attends {
        let a = d.attention_dim as f64;
        dec += match d.attention {
            AttentionType::Bahdanau => dh * a + src_len * a + c * a * src_per_tgt,
            AttentionType::Luong => src_len * dh + c * dh * src_per_tgt,
            _ => src_len * dh,
        };
        // the context, then the attentional vector (Luong only)
        dec += src_len * c + if bahdanau { 0.0 } else { (dh + c) * dh };
    }
    // the output layer reads [h; c; e] (Bahdanau) or the attentional vector (Luong)
    let out_in = if bahdanau { dh + c + emb } else { dh };
    dec += out_in * tgt_vocab as f64;
    dec + enc * src_per_tgt
}

/// The best f32 matmul rate candle reaches here on the shapes that dominate training.
fn matmul_gflops(dev: &Device, hidden: usize, vocab: usize) -> Result<f64> {
    let mut best = 0.0f64;
    for (m, k, n) in [
        (64 * 20, hidden, vocab),
        (64, hidden, 3 * hidden),
        (64 * 20, 256, 768),
    ] {
        let a = Tensor::ones((m, k), DType::F32, dev)?;
        let b = Tensor::ones((n, k), DType::F32, dev)?;
        let _ = a.matmul(&b.t()?)?;
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = a.matmul(&b.t()?)?;
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        best = best.max(2.0 * (m * k * n) as f64 / s / 1e9);
    }
    Ok(best)
}

/// Measures training with the real training step ([`crate::train::step`]), then decoding
/// with the trained model when there is one.
pub fn bench(o: &BenchOptions) -> Result<BenchReport> {
    let cfg = &o.config;
    if cfg.task != Task::Translation {
        return Err(Error::BenchTask(cfg.task));
    }
    let dev = o.device.resolve()?;
    let d = &cfg.data;
    let splits = load_splits(d, &o.data_dir)?;
    let srcs: Vec<&str> = splits.train.iter().map(|p| p.src.as_str()).collect();
    let tgts: Vec<&str> = splits.train.iter().map(|p| p.tgt.as_str()).collect();
    let sv = Vocab::train(&d.src_vocab.spec(d.lowercase), &srcs)?;
    let tv = Vocab::train(&d.tgt_vocab.spec(d.lowercase), &tgts)?;
    let train = PairEncoding {
        src: &sv,
        tgt: &tv,
        has_source: true,
    }
    .encode(
        &splits.train,
        Keep::Within {
            max_src: d.max_src_len,
            max_tgt: d.max_tgt_len,
        },
    )?
    .examples;
    let mut r = train_speed(o, &train, sv.len(), &tv, &dev)?;
    r.threads = rayon_threads();
    r.matmul_gflops = matmul_gflops(&dev, cfg.model.decoder.hidden_size, tv.len())?;
    if let Some(dir) = &o.model {
        let test: Vec<String> = splits.test.iter().map(|p| p.src.clone()).collect();
        decode_speed(dir, &test, o.decode_sentences, &dev, &mut r)?;
    }
    Ok(r)
}

/// `warmup_steps` then `train_steps` timed steps over the first batches of epoch 0 (cycled).
fn train_speed(
    o: &BenchOptions,
    train: &[Example],
    src_vocab: usize,
    tv: &Vocab,
    dev: &Device,
) -> Result<BenchReport> {
    let cfg = &o.config;
    let t = &cfg.train;
    let vm = SeededVarMap::new(cfg.seed);
    let model = build_model(
        &cfg.model,
        cfg.task,
        src_vocab,
        tv.len(),
        vm.var_builder(dev),
        None,
    )?;
    let vars = vm.var_map().data().lock().unwrap().clone();
    let mut opt = Adam::new(
        &vars,
        t.learning_rate,
        t.betas,
        t.eps,
        t.weight_decay,
        t.optimizer == OptimizerKind::Adamw,
    )?;
    let batches = seq2seq_data::batches(train, t.batch(), cfg.seed, 0, true);
    let (mut src_tokens, mut src_len_sum) = (0usize, 0usize);
    // (target tokens, seconds) of each timed step; seconds per phase (forward, backward, update).
    let mut per_step = Vec::new();
    let mut phases = [0.0f64; 3];
    for (i, idx) in batches
        .iter()
        .cycle()
        .take(o.warmup_steps + o.train_steps)
        .enumerate()
    {
        let b = Batch::new(train, idx, tv.pad, tv.bos, tv.eos);
        let start = Instant::now();
        let bt = BatchTensors::new(&b, dev)?;
        let tensors = start.elapsed().as_secs_f64();
        let s = step(
            &model,
            &mut opt,
            std::slice::from_ref(&bt),
            t,
            t.learning_rate,
            step_seed(cfg.seed, i),
            false,
        )?;
        if i >= o.warmup_steps {
            phases[0] += tensors + s.seconds[0];
            phases[1] += s.seconds[1];
            phases[2] += s.seconds[2];
            per_step.push((b.target_tokens(), tensors + s.seconds.iter().sum::<f64>()));
            src_tokens += b.src_mask.iter().filter(|m| **m > 0.0).count();
            src_len_sum += b.src_len;
        }
    }
    let timed: f64 = phases.iter().sum();
    let tokens: usize = per_step.iter().map(|(n, _)| n).sum();
    let steps = per_step.len();
    let src_per_tgt = src_tokens as f64 / tokens.max(1) as f64;
    let src_len = src_len_sum as f64 / steps.max(1) as f64;
    Ok(BenchReport {
        train_tokens_per_s: tokens as f64 / timed.max(1e-9),
        train_tokens_per_s_median: windowed_median_rate(&per_step, 20),
        train_steps: steps,
        peak_rss_mb: peak_rss_mb(),
        phase_shares: phases.map(|p| p / timed.max(1e-9)),
        flops_per_token: 6.0 * macs_per_target_token(cfg, src_per_tgt, src_len, tv.len()),
        ..Default::default()
    })
}

/// Cold start (load + one sentence), then greedy and beam-5 sentences/s on `test` sources.
fn decode_speed(
    dir: &Path,
    test: &[String],
    limit: usize,
    dev: &Device,
    r: &mut BenchReport,
) -> Result<()> {
    let started = Instant::now();
    let tr = Translator::load_on(dir, dev)?;
    let first = test.first().cloned().unwrap_or_else(|| "a".into());
    tr.translate(&[first], &tr.config.decoding)?;
    r.cold_start_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let n = if limit == 0 {
        test.len()
    } else {
        limit.min(test.len())
    };
    let lines = &test[..n];
    r.decode_sentences = n;
    let time = |opts: &DecodingOptions| -> Result<f64> {
        let s = Instant::now();
        tr.translate(lines, opts)?;
        Ok(n as f64 / s.elapsed().as_secs_f64())
    };
    let base = DecodingOptions {
        batch_size: 64,
        ..tr.config.decoding.clone()
    };
    r.greedy_sent_per_s = Some(time(&DecodingOptions {
        strategy: Strategy::Greedy,
        ..base.clone()
    })?);
    r.beam5_sent_per_s = Some(time(&DecodingOptions {
        strategy: Strategy::Beam,
        beam_size: 5,
        ..base
    })?);
    Ok(())
}

/// The median of the tokens/s of consecutive `window`-step windows of `steps` (tokens,
/// seconds), leaving out the first window (warm-up) and an incomplete last one, as the PyTorch
/// peer reports its training speed. `None` unless at least two windows remain.
fn windowed_median_rate(steps: &[(usize, f64)], window: usize) -> Option<f64> {
    let mut rates: Vec<f64> = steps
        .chunks_exact(window)
        .skip(1)
        .map(|w| {
            let (tokens, secs) = w
                .iter()
                .fold((0usize, 0f64), |(t, s), (n, d)| (t + n, s + d));
            tokens as f64 / secs.max(1e-9)
        })
        .collect();
    if rates.len() < 2 {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    // The upper median for an even count, as the peer's `rates[len // 2]`.
    Some(rates[rates.len() / 2])
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The default model path of a config, if it exists.
pub fn default_model(cfg: &Config, config_path: &Path) -> Option<PathBuf> {
    let p = crate::default_out(cfg, config_path);
    p.join(crate::model_dir::BEST).exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_median_leaves_out_the_first_window_like_the_peer() {
        // Windows of 2 steps: rates 10 (dropped: warm-up), 100, 50, 200; a lone last step is
        // incomplete and dropped. Sorted [50, 100, 200]: median 100.
        let steps = [
            (10, 1.0),
            (10, 1.0),
            (100, 1.0),
            (100, 1.0),
            (50, 1.0),
            (50, 1.0),
            (200, 0.5),
            (200, 1.5),
            (999, 0.001),
        ];
        assert_eq!(windowed_median_rate(&steps, 2), Some(100.0));
        // Even count: the upper median, as `rates[len // 2]` in torch_mt.py.
        assert_eq!(windowed_median_rate(&steps[..6], 2), Some(100.0));
        assert_eq!(windowed_median_rate(&steps[..4], 2), None);
    }

    #[test]
    fn analytic_flops_of_the_benchmark_architectures() {
        // Multi30k: target vocabulary 7892, ~1 source token per target token, ~14 source positions.
        let mut cfg = Config::default();
        cfg.model.encoder.hidden_size = 256;
        let luong = 6.0 * macs_per_target_token(&cfg, 1.0, 14.0, 7892);
        cfg.model.decoder.style = Style::Bahdanau;
        let bahdanau = 6.0 * macs_per_target_token(&cfg, 1.0, 14.0, 7892);
        // The output layer dominates: 512×V (Luong) against 1280×V (Bahdanau, the peer's ~80 MFLOP).
        assert!((40e6..42e6).contains(&luong), "{luong}");
        assert!((77e6..81e6).contains(&bahdanau), "{bahdanau}");
    }
}
