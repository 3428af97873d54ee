//! The training loop: Adam(W), gradient clipping, label smoothing, validation with samples,
//! best/last checkpoints, plateau learning-rate decay, early stopping, exact resume.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use indicatif::{ProgressBar, ProgressStyle};
use seq2seq_data::{bucket_batches, grouped_batches, Batch};
use seq2seq_nn::{loss::TokenLoss, Ctx, SeededVarMap};

use crate::checkpoint::{self, keep_checkpoint, TrainerState, BEST, CONFIG, LAST};
use crate::config::{Config, OptimizerKind, Task, TrainConfig};
use crate::images::{cache_dir, load_backbone, ImageBank};
use crate::model::{build_model, Encoder};
use crate::optim::Adam;
use crate::prepare::{batch_tensors, prepare};
use crate::validate::{score, validate};
use crate::{Error, Result};

/// Options of one `train` invocation (the CLI flags).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
    /// Overrides `train.max_steps`.
    pub max_steps: Option<usize>,
    /// Overrides `train.max_time_s` (training time in total, a resumed run's earlier time included).
    pub max_time_s: Option<f64>,
    /// Overrides `seed`.
    pub seed: Option<u64>,
    /// No progress output at all (tests).
    pub quiet: bool,
    /// Set to a signal number (the CLI's SIGINT/SIGTERM handler does) to stop after the current
    /// step with the resume checkpoint written.
    pub stop: Option<Arc<AtomicI32>>,
    /// Test hook: the steps (numbered as logged, from 1) whose batch counts as non-finite.
    #[doc(hidden)]
    pub inject_nonfinite: Vec<usize>,
}

/// What a finished training run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub best_score: Option<f64>,
    /// Exact-match share of greedy outputs on the test split (valid when there is none).
    pub exact_match: Option<f64>,
    /// Loss per target token on that split with the best weights.
    pub held_out_loss: Option<f64>,
    pub out: PathBuf,
    /// The signal that stopped the run (its resume checkpoint is written; nothing was evaluated).
    pub interrupted: Option<i32>,
}

pub(crate) fn log(opts: &TrainOptions, msg: &str) {
    if !opts.quiet {
        eprintln!("{msg}");
    }
}

fn weights(vm: &SeededVarMap) -> HashMap<String, Tensor> {
    vm.var_map()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// The weights, if every value is finite: non-finite weights are never written.
fn finite(out: &Path, w: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    for (name, t) in &w {
        let m = t
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        if !m.is_finite() {
            return Err(Error::NonFinite {
                path: out.to_path_buf(),
                tensor: name.clone(),
            });
        }
    }
    Ok(w)
}

fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step as u64)
}

fn fmt_time(s: f64) -> String {
    let s = s as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Books one validation's score (lower is better) into the run's state: a new best resets the
/// patience counters; otherwise, after `lr_patience` validations without one, the learning rate
/// is multiplied by `lr_decay_factor` (not below `min_lr`). Returns whether the score is a new best.
fn record_validation(state: &mut TrainerState, score: f64, t: &TrainConfig) -> bool {
    // A tie is not progress: early stopping must end a run whose score has stopped moving.
    let improved = state.best_score.is_none_or(|b| score < b - 1e-9);
    if improved {
        state.best_score = Some(score);
        state.best_step = state.step;
        state.bad_validations = 0;
        state.plateau = 0;
    } else {
        state.bad_validations += 1;
        state.plateau += 1;
        if state.plateau >= t.lr_patience && state.lr > t.min_lr {
            state.lr = (state.lr * t.lr_decay_factor).max(t.min_lr);
            state.plateau = 0;
        }
    }
    improved
}

/// A pretrained backbone's checkpoint into a freshly built model: its fine-tuned layers start
/// from the checkpoint, and its frozen layers are returned, to be saved with the model so that
/// the model directory stands alone.
fn seed_backbone(
    vm: &SeededVarMap,
    tensors: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let vars = vm.var_map().data().lock().unwrap();
    let mut frozen = HashMap::new();
    for (name, t) in tensors {
        // The ImageNet head is not part of the encoder.
        if name.starts_with("_fc.") || name.ends_with("num_batches_tracked") {
            continue;
        }
        let full = format!("encoder.backbone.{name}");
        match vars.get(&full) {
            Some(v) => v.set(t)?,
            None => {
                frozen.insert(full, t.clone());
            }
        }
    }
    Ok(frozen)
}

/// A resumed run's weights and optimizer moments (from `last.safetensors`) into the model.
fn restore(
    out: &Path,
    vars: &HashMap<String, candle_core::Var>,
    opt: &mut Adam,
    weights: &HashMap<String, Tensor>,
    moments: &HashMap<String, Tensor>,
) -> Result<()> {
    for (name, var) in vars {
        let v = weights.get(name).ok_or_else(|| Error::ModelDir {
            path: out.to_path_buf(),
            msg: format!("{LAST} lacks {name}"),
        })?;
        var.set(v)?;
    }
    opt.load_state(moments).map_err(|msg| Error::ModelDir {
        path: out.to_path_buf(),
        msg: format!("{LAST}: {msg}"),
    })
}

/// Trains a model from `cfg` into `opts.out` (or continues the run there with `resume`).
pub fn train(mut cfg: Config, opts: &TrainOptions) -> Result<TrainSummary> {
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.clone(),
        source,
    })?;
    checkpoint::remove_stale_temps(out);
    let dev = Device::Cpu;
    let mut resume = None;
    let mut state = if opts.resume {
        // The run's own resolved config wins over the file given on the command line, so that
        // the model and data order are the ones the checkpoint was made with.
        cfg = Config::from_file(&out.join(CONFIG))?;
        let (weights, moments, state) = checkpoint::load_resume(out, &dev)?;
        resume = Some((weights, moments));
        state
    } else {
        if out.join(checkpoint::STATE).exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a training run: pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        if let Some(s) = opts.seed {
            cfg.seed = s;
        }
        TrainerState {
            lr: cfg.train.learning_rate,
            ..Default::default()
        }
    };
    let p = prepare(&cfg, opts)?;
    if !opts.resume {
        // The saved config is the resolved one; max_steps stays the file's (the flag is per run).
        checkpoint::write_atomic(&out.join(CONFIG), cfg.to_yaml().as_bytes())?;
    }
    if let Some(m) = opts.max_steps {
        cfg.train.max_steps = m;
    }
    if let Some(s) = opts.max_time_s {
        if !(s >= 0.0 && s.is_finite()) {
            return Err(Error::Invalid(format!(
                "--max-time-s: must be a number of seconds >= 0 (0 = no limit), got {s}"
            )));
        }
        cfg.train.max_time_s = s;
    }
    let vm = SeededVarMap::new(cfg.seed);
    let backbone = load_backbone(&cfg, &opts.data_dir, &dev)?;
    let model = build_model(
        &cfg.model,
        cfg.task,
        p.src_vocab.len(),
        p.tgt_vocab.len(),
        vm.var_builder(&dev),
        backbone
            .as_ref()
            .map(|(_, t)| VarBuilder::from_tensors(t.clone(), DType::F32, &dev)),
    )?;
    let frozen_weights = match &backbone {
        Some((_, tensors)) => seed_backbone(&vm, tensors)?,
        None => HashMap::new(),
    };
    let t = &cfg.train;
    let all_vars = vm.var_map().data().lock().unwrap().clone();
    // Batch-norm statistics of a fine-tuned backbone stay as they are.
    let vars: HashMap<String, candle_core::Var> = all_vars
        .iter()
        .filter(|(k, _)| !(k.ends_with(".running_mean") || k.ends_with(".running_var")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let n_params: usize = vars.values().map(|v| v.elem_count()).sum();
    let mut opt = Adam::new(
        &vars,
        state.lr,
        t.betas,
        t.eps,
        t.weight_decay,
        t.optimizer == OptimizerKind::Adamw,
    )?;
    if let Some((w, moments)) = &resume {
        restore(out, &all_vars, &mut opt, w, moments)?;
        opt.step = (state.step - state.skipped_steps) as u64;
        checkpoint::trim_metrics(out, state.step)?;
        log(
            opts,
            &format!(
                "resuming at step {} (epoch {}, batch {})",
                state.step,
                state.epoch + 1,
                state.batch_in_epoch
            ),
        );
    }
    log(
        opts,
        &format!("model: {n_params} parameters; output: {}", out.display()),
    );

    let all_weights = || {
        let mut w = weights(&vm);
        w.extend(frozen_weights.iter().map(|(k, v)| (k.clone(), v.clone())));
        finite(out, w)
    };
    let save_last = |state: &TrainerState, opt: &Adam| -> Result<()> {
        checkpoint::save_resume(out, all_weights()?, opt.state()?, state)
    };
    let bank = match (&p.images, &model.encoder) {
        (Some(images), Encoder::Image(enc)) => {
            // The cache is keyed by the backbone checkpoint's contents: without one, no cache.
            let cache = match &backbone {
                Some((ckpt, _)) if enc.has_frozen_part() && !cfg.data.feature_cache.is_empty() => {
                    Some(cache_dir(&cfg, ckpt)?)
                }
                _ => None,
            };
            Some(ImageBank::new(
                images,
                &p.train_images,
                enc,
                &cfg.data,
                cache,
                &dev,
                &mut |m: &str| log(opts, m),
            )?)
        }
        _ => None,
    };
    let bank = bank.as_ref();
    // Captioning reports the captioning papers' BLEU-4 (pycocoevalcap), translation sacreBLEU.
    let bleu_name = if cfg.task == Task::Captioning {
        "BLEU-4"
    } else {
        "BLEU"
    };

    // Captions are batched with the other captions of their image (one encoder pass per image).
    let epoch_batches = |epoch: u64| {
        if cfg.task == Task::Captioning {
            grouped_batches(&p.train, t.batch_size, cfg.seed, epoch)
        } else {
            bucket_batches(&p.train, t.batch_size, cfg.seed, epoch, true)
        }
    };
    let batches_per_epoch = epoch_batches(0).len();
    let total = if t.max_steps > 0 {
        t.max_steps
    } else {
        t.max_epochs.max(1) * batches_per_epoch
    };
    let tty = !opts.quiet && std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        b.set_position(state.step as u64);
        b
    });
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut window = (0.0f64, 0.0f64, Instant::now(), 0usize); // (nll, tokens, since, tokens for speed)
    let mut stop_reason = None;
    let mut interrupted = None;
    'epochs: while !state.finished {
        if t.max_epochs > 0 && state.epoch >= t.max_epochs {
            stop_reason = Some(format!("reached train.max_epochs = {}", t.max_epochs));
            break;
        }
        let batches = epoch_batches(state.epoch as u64);
        while state.batch_in_epoch < batches.len() {
            if t.max_steps > 0 && state.step >= t.max_steps {
                stop_reason = Some(format!("reached max_steps = {}", t.max_steps));
                break 'epochs;
            }
            // Checked before the step, so that resuming a run whose budget is spent trains
            // nothing more.
            if t.max_time_s > 0.0 && state.elapsed_s >= t.max_time_s {
                stop_reason = Some(format!("reached train.max_time_s = {}", t.max_time_s));
                break 'epochs;
            }
            let b = Batch::new(
                &p.train,
                &batches[state.batch_in_epoch],
                p.tgt_vocab.pad,
                p.tgt_vocab.bos,
                p.tgt_vocab.eos,
            );
            let seed = step_seed(cfg.seed, state.step);
            let bt = batch_tensors(&b, &p.train, bank, true, seed, &dev)?;
            let mut ctx = Ctx::train(seed);
            let l = model.loss(&bt, t.label_smoothing, &mut ctx)?;
            let grads = l.loss.backward()?;
            // The forward graph (every activation of the batch) goes before the update runs.
            let l = TokenLoss {
                loss: l.loss.detach(),
                ..l
            };
            let norm = opt.clip(&grads, t.clip_grad_norm)?;
            let injected = opts.inject_nonfinite.contains(&(state.step + 1));
            if l.nll_sum.is_finite() && norm.is_finite() && !injected {
                opt.lr = state.lr;
                opt.update(&grads)?;
                state.nonfinite_in_a_row = 0;
                window.0 += l.nll_sum;
                window.1 += l.tokens;
            } else {
                // The batch is consumed, the weights and the optimizer's step stay as they were.
                state.skipped_steps += 1;
                state.nonfinite_in_a_row += 1;
                let msg = format!(
                    "warning: step {}: the loss ({}) or the gradient norm ({norm}) is not finite; update skipped ({} in a row, the limit is train.max_nonfinite_steps = {})",
                    state.step + 1,
                    if injected { f64::NAN } else { l.nll_sum },
                    state.nonfinite_in_a_row,
                    t.max_nonfinite_steps
                );
                match &bar {
                    Some(bar) => bar.println(msg),
                    None => log(opts, &msg),
                }
                if state.nonfinite_in_a_row >= t.max_nonfinite_steps {
                    // The resume checkpoint on disk is the last good one: it is not overwritten.
                    return Err(Error::Diverged {
                        step: state.step + 1,
                        count: state.nonfinite_in_a_row,
                        path: out.join(LAST),
                    });
                }
            }
            drop(grads);
            state.step += 1;
            state.batch_in_epoch += 1;
            state.target_tokens += l.tokens as u64;
            window.3 += l.tokens as usize;
            let elapsed = elapsed_before + started.elapsed().as_secs_f64();
            state.elapsed_s = elapsed;
            let speed = window.3 as f64 / window.2.elapsed().as_secs_f64().max(1e-9);
            if let Some(bar) = &bar {
                bar.set_position(state.step as u64);
                bar.set_message(format!(
                    "loss {:.3} | {:.0} tok/s | lr {:.1e}",
                    window.0 / window.1.max(1.0),
                    speed,
                    state.lr
                ));
            } else if state.step % t.log_every == 0 {
                log(
                    opts,
                    &format!(
                        "step {} | epoch {} | loss {:.4} | {:.0} tok/s | lr {:.2e} | elapsed {}",
                        state.step,
                        state.epoch + 1,
                        window.0 / window.1.max(1.0),
                        speed,
                        state.lr,
                        fmt_time(elapsed)
                    ),
                );
            }
            if state.step % t.valid_every == 0 {
                let v = validate(
                    &model,
                    &p,
                    bank,
                    &cfg,
                    &p.valid,
                    &p.valid_items,
                    t.valid_decode_size,
                    &dev,
                )?;
                if t.keep_checkpoints > 0 {
                    keep_checkpoint(out, state.step, t.keep_checkpoints, &all_weights()?)?;
                }
                let improved = record_validation(&mut state, score(&v, t.early_stopping_metric), t);
                if improved {
                    checkpoint::save_tensors(&out.join(BEST), &all_weights()?)?;
                }
                let msg = v.report(
                    state.step,
                    improved,
                    bleu_name,
                    &p.valid_items,
                    t.valid_samples,
                    cfg.task == Task::Generation,
                );
                match &bar {
                    Some(bar) => bar.println(msg),
                    None => log(opts, &msg),
                }
                checkpoint::record_metrics(
                    out,
                    &serde_json::json!({
                        "step": state.step, "epoch": state.epoch + 1,
                        "train_loss": window.0 / window.1.max(1.0),
                        "valid_loss": v.loss, "valid_ppl": v.ppl, "valid_exact": v.exact, "valid_bleu": v.bleu,
                        "lr": state.lr, "tokens_per_s": speed, "elapsed_s": elapsed,
                    }),
                )?;
                save_last(&state, &opt)?;
                if t.patience > 0 && state.bad_validations >= t.patience {
                    stop_reason = Some(format!(
                        "early stopping: {} validations without improvement",
                        t.patience
                    ));
                    state.finished = true;
                    break 'epochs;
                }
            }
            // Loss and speed are over the last `log_every` steps, on the bar as in the log (reset
            // after validation, which records the training loss of the same window).
            if state.step % t.log_every == 0 {
                window = (0.0, 0.0, Instant::now(), 0);
            }
            let signal = opts.stop.as_ref().map_or(0, |s| s.load(Ordering::SeqCst));
            if signal != 0 {
                interrupted = Some(signal);
                stop_reason = Some(format!("interrupted by signal {signal}"));
                // The step's batch is consumed: a resumed run starts at the next one.
                if state.batch_in_epoch >= batches.len() {
                    state.epoch += 1;
                    state.batch_in_epoch = 0;
                }
                break 'epochs;
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(signal) = interrupted {
        // Only the resume checkpoint: a resumed run then ends exactly as an uninterrupted one.
        save_last(&state, &opt)?;
        log(
            opts,
            &format!(
                "interrupted by signal {signal} after step {}: the resume checkpoint is {}; continue with `seq2seq train CONFIG --out {} --resume`",
                state.step,
                out.join(LAST).display(),
                out.display()
            ),
        );
        return Ok(TrainSummary {
            steps: state.step,
            best_score: state.best_score,
            exact_match: None,
            held_out_loss: None,
            out: out.clone(),
            interrupted: Some(signal),
        });
    }
    if !out.join(BEST).exists() {
        // Never validated: the final weights are the only (and so the best) checkpoint.
        state.best_step = state.step;
        checkpoint::save_tensors(&out.join(BEST), &all_weights()?)?;
    }
    save_last(&state, &opt)?;
    log(
        opts,
        &format!(
            "stopped after {} steps ({}), {} target tokens in {}",
            state.step,
            stop_reason.unwrap_or_else(|| "done".into()),
            state.target_tokens,
            fmt_time(state.elapsed_s)
        ),
    );
    // Final figure on held-out data with the best weights.
    let best = checkpoint::load_tensors(out, BEST, &dev)?;
    for (name, var) in &all_vars {
        if let Some(v) = best.get(name) {
            var.set(v)?;
        }
    }
    let (examples, pairs, split) = if p.test.is_empty() {
        (&p.valid, &p.valid_items, "valid")
    } else {
        (&p.test, &p.test_items, "test")
    };
    let (exact, held_out_loss) = if examples.is_empty() {
        (None, None)
    } else {
        let v = validate(&model, &p, bank, &cfg, examples, pairs, 0, &dev)?;
        if !opts.quiet {
            let tail = v
                .exact
                .map(|e| format!(" | exact match: {:.1}%", 100.0 * e))
                .unwrap_or_default()
                + &v.bleu
                    .map(|b| format!(" | {bleu_name} {b:.2}"))
                    .unwrap_or_default();
            println!(
                "{split} ({} items, checkpoint of step {}): loss {:.4} nats/token | ppl {:.2}{tail}",
                examples.len(),
                state.best_step,
                v.loss,
                v.ppl,
            );
        }
        (v.exact, Some(v.loss))
    };
    Ok(TrainSummary {
        steps: state.step,
        best_score: state.best_score,
        exact_match: exact,
        held_out_loss,
        out: out.clone(),
        interrupted: None,
    })
}

/// Default output directory of a config: `runs/<name>` (or `runs/<file stem>`).
pub fn default_out(cfg: &Config, config_path: &Path) -> PathBuf {
    let name = if cfg.name.is_empty() {
        config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    } else {
        cfg.name.clone()
    };
    PathBuf::from("runs").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lr_patience: usize) -> TrainConfig {
        TrainConfig {
            lr_patience,
            lr_decay_factor: 0.5,
            min_lr: 1e-4,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn plateau_decay_and_patience_counters() {
        let t = cfg(2);
        let mut s = TrainerState {
            lr: 1e-3,
            ..Default::default()
        };
        s.step = 100;
        assert!(record_validation(&mut s, 3.0, &t));
        assert_eq!((s.best_score, s.best_step), (Some(3.0), 100));
        s.step = 200;
        // A tie is not an improvement.
        assert!(!record_validation(&mut s, 3.0, &t));
        assert_eq!((s.bad_validations, s.plateau, s.lr), (1, 1, 1e-3));
        s.step = 300;
        assert!(!record_validation(&mut s, 3.5, &t));
        // The second bad validation in a row halves the rate and restarts the plateau count,
        // while the early-stopping count keeps going.
        assert_eq!((s.bad_validations, s.plateau, s.lr), (2, 0, 5e-4));
        s.step = 400;
        assert!(record_validation(&mut s, 2.9, &t));
        assert_eq!((s.best_score, s.best_step), (Some(2.9), 400));
        assert_eq!((s.bad_validations, s.plateau, s.lr), (0, 0, 5e-4));
        // The rate stops at min_lr.
        for _ in 0..10 {
            record_validation(&mut s, 5.0, &t);
        }
        assert_eq!(s.lr, 1e-4);
        assert_eq!(s.bad_validations, 10);
    }
}
