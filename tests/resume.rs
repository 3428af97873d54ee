//! The binary's resume, across processes: a run stopped at step N/2 and continued with `--resume`
//! ends with the same weights and Adam moments, bit for bit, as one uninterrupted run of N steps.

mod common;
use common::{start, state_bits, CONFIG};

#[test]
fn stopped_and_resumed_run_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (whole, halves) = (dir.path().join("whole"), dir.path().join("halves"));
    // 70 steps: past an epoch boundary (400 pairs / 16) and between validations in both halves.
    for (out, steps, resume) in [
        (&whole, 70, false),
        (&halves, 35, false),
        (&halves, 70, true),
    ] {
        let (code, log) = start(&cfg, out, steps, resume, &[]).finish();
        assert_eq!(code, Some(0), "{log}");
    }
    let (a, b) = (state_bits(&whole), state_bits(&halves));
    assert!(a.iter().any(|(k, _)| k.starts_with("optimizer.")));
    // Bit equality, not closeness: resume replays the data order, dropout masks and updates.
    assert!(a == b, "the weights differ after resume");
}

/// The same under a warm-up and a cosine schedule, token batches and two batches per update:
/// the learning rate is a function of the step, so the resumed half continues the curve
/// (`metrics.jsonl` shows every step's rate), and the data order is replayed group by group.
#[test]
fn a_scheduled_run_resumes_on_its_curve() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    let config = CONFIG
        .replace(
            "  log_every: 5\n",
            "  log_every: 1\n  schedule: cosine\n  warmup_steps: 10\n  max_steps: 60\n  accumulate: 2\n",
        )
        .replace(
            "  batch_size: 16\n",
            "  batch_size: 150\n  batch_type: tokens\n",
        );
    assert!(config.contains("cosine") && config.contains("tokens"));
    std::fs::write(&cfg, config).unwrap();
    let (whole, halves) = (dir.path().join("whole"), dir.path().join("halves"));
    for (out, steps, resume) in [
        (&whole, 60, false),
        (&halves, 25, false),
        (&halves, 60, true),
    ] {
        let (code, log) = start(&cfg, out, steps, resume, &[]).finish();
        assert_eq!(code, Some(0), "{log}");
    }
    assert!(
        state_bits(&whole) == state_bits(&halves),
        "the weights differ after resume"
    );
    for out in [&whole, &halves] {
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let mut steps = 0;
        for line in log.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = r["step"].as_f64().unwrap();
            let want = if s <= 10.0 {
                0.005 * s / 10.0
            } else {
                let x = (s - 10.0) / 50.0;
                1e-5 + (0.005 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            };
            let got = r["lr"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "step {s}: lr {got}, the formula {want}"
            );
            steps += 1;
        }
        assert_eq!(
            steps, 60,
            "a record (train, or valid at a validation) per step"
        );
    }
}
