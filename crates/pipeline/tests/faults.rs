//! Faults during training: non-finite batches are skipped and bounded, an absurd learning rate
//! stops with the last good checkpoint, a stop request writes a resume checkpoint that continues
//! bit-exactly, and the metrics log holds each validation once.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI32;
use std::sync::Arc;

use seq2seq_pipeline::{model_dir, train, Config, Error, TrainOptions};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s2s-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cfg(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::from_yaml(
        "seed: 4
data: {format: dates, train_size: 80, valid_size: 10, test_size: 10, max_src_len: 40, max_tgt_len: 12, src_vocab: {level: char}, tgt_vocab: {level: char}}
model:
  encoder: {embedding_dim: 8, hidden_size: 16, emb_dropout: 0.2}
  decoder: {embedding_dim: 8, hidden_size: 16, attention_dim: 8, hidden_dropout: 0.2}
train: {batch_size: 16, learning_rate: 0.01, valid_every: 4, log_every: 1000, patience: 0, max_steps: 12}
decoding: {max_length: 12}
",
    )
    .unwrap();
    edit(&mut c);
    c.validate().unwrap();
    c
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        data_dir: out.to_path_buf(),
        out: out.to_path_buf(),
        ..Default::default()
    }
}

/// Weights and moments of the resume checkpoint as bits, by name.
fn state_bits(dir: &Path) -> Vec<(String, Vec<u32>)> {
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

#[test]
fn a_non_finite_batch_is_skipped_without_touching_weights_or_optimizer() {
    let dir = tmp("skip");
    // 12 steps whose last batch is non-finite end where 11 clean steps end: the batch is
    // consumed and nothing else changes (the Adam step count included, or the moments differ).
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut o = opts(&a);
    o.inject_nonfinite = vec![12];
    let s = train(cfg(|_| {}), &o, &mut ()).unwrap();
    assert_eq!(s.steps, 12);
    let mut o = opts(&b);
    o.max_steps = Some(11);
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    assert_eq!(state_bits(&a), state_bits(&b));
    let st = model_dir::load_state(&a).unwrap();
    assert_eq!((st.skipped_steps, st.nonfinite_in_a_row), (1, 1));

    // Skipped batches in the middle, then resumed: still the one-run result.
    let (c, d) = (dir.join("c"), dir.join("d"));
    let mut o = opts(&c);
    o.inject_nonfinite = vec![5, 6, 9];
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    let mut o = opts(&d);
    o.inject_nonfinite = vec![5, 6, 9];
    o.max_steps = Some(6);
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    o.max_steps = None;
    o.resume = true;
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    assert_eq!(state_bits(&c), state_bits(&d));
    assert_eq!(model_dir::load_state(&d).unwrap().skipped_steps, 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn too_many_non_finite_batches_stop_with_the_last_good_checkpoint() {
    let dir = tmp("diverge");
    let mut o = opts(&dir);
    o.inject_nonfinite = (6..20).collect();
    let e = train(cfg(|c| c.train.max_nonfinite_steps = 3), &o, &mut ()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Diverged {
                step: 8,
                count: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("last.safetensors"), "{e}");
    // The resume checkpoint is the step-4 validation's, untouched.
    assert_eq!(model_dir::load_state(&dir).unwrap().step, 4);

    // An absurd learning rate: the weights blow up, every later batch is non-finite, and no
    // file on disk ever holds a non-finite value.
    let lr = dir.join("lr");
    let e = train(cfg(|c| c.train.learning_rate = 1e37), &opts(&lr), &mut ()).unwrap_err();
    assert!(matches!(e, Error::Diverged { .. }), "{e}");
    for f in std::fs::read_dir(&lr).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            for (k, t) in model_dir::load_tensors(&lr, &name, &candle_core::Device::Cpu).unwrap() {
                if t.dtype() == candle_core::DType::F32 {
                    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                    assert!(v.iter().all(|x| x.is_finite()), "{name}: {k}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stop_request_writes_a_resume_checkpoint_that_continues_exactly() {
    let dir = tmp("stop");
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    train(cfg(|_| {}), &opts(&whole), &mut ()).unwrap();
    // A signal already raised: the run stops after its first step (mid-epoch, between
    // validations) and says so.
    let mut o = opts(&cut);
    o.stop = Some(Arc::new(AtomicI32::new(15)));
    let s = train(cfg(|_| {}), &o, &mut ()).unwrap();
    assert_eq!((s.steps, s.interrupted), (1, Some(15)));
    assert!(!cut.join(model_dir::BEST).exists());
    let mut o = opts(&cut);
    o.resume = true;
    let s = train(cfg(|_| {}), &o, &mut ()).unwrap();
    assert_eq!((s.steps, s.interrupted), (12, None));
    assert_eq!(state_bits(&whole), state_bits(&cut));
    // Each validation once, in order, as in the uninterrupted run.
    let steps = |d: &Path| -> Vec<u64> {
        std::fs::read_to_string(d.join(model_dir::METRICS))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(steps(&whole), [4, 8, 12]);
    assert_eq!(steps(&cut), [4, 8, 12]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resumed_run_drops_validations_its_checkpoint_never_saw() {
    let dir = tmp("metrics");
    let mut o = opts(&dir);
    o.max_steps = Some(8);
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    // As if killed after logging a validation at step 12 but before its checkpoint, with a torn
    // line after it.
    let path = dir.join(model_dir::METRICS);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"step\": 12, \"valid_loss\": 1.0}\n{\"step\": 1");
    std::fs::write(&path, text).unwrap();
    let mut o = opts(&dir);
    o.resume = true;
    train(cfg(|_| {}), &o, &mut ()).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("\"valid_loss\":1.0")),
        "{lines:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_runs_metrics_and_curves_have_each_step_once() {
    let dir = tmp("curves");
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    let logged = |c: &mut Config| c.train.log_every = 2;
    train(cfg(logged), &opts(&whole), &mut ()).unwrap();
    // Stopped after step 3 (a training record at 2, no validation yet), then resumed.
    let mut o = opts(&cut);
    o.max_steps = Some(3);
    train(cfg(logged), &o, &mut ()).unwrap();
    let mut o = opts(&cut);
    o.resume = true;
    train(cfg(logged), &o, &mut ()).unwrap();
    let records = |d: &Path| -> Vec<(u64, String)> {
        seq2seq_pipeline::curves::read_records(d)
            .unwrap()
            .into_iter()
            .map(|r| (r.step, r.kind.unwrap_or_default()))
            .collect()
    };
    let expected: Vec<(u64, String)> = [2, 4, 6, 8, 10, 12]
        .into_iter()
        .map(|s| (s, if s % 4 == 0 { "valid" } else { "train" }.to_string()))
        .collect();
    assert_eq!(records(&whole), expected);
    assert_eq!(records(&cut), expected);
    // The curves were redrawn at the last validation: a dot per validation on the loss panel
    // and on the metric panel.
    let svg = std::fs::read_to_string(cut.join("curves.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 2 * 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
