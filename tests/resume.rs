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
