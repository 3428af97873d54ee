//! The binary under faults: SIGTERM and SIGINT finish the step, write the resume checkpoint and
//! exit 143 / 130; a second signal exits at once; a full disk (a file-size limit) fails the
//! checkpoint write with the path and the cause and leaves the previous checkpoint intact.

use std::process::Command;
use std::time::Duration;

mod common;
use common::{all_checkpoints_load, digest, start, state_bits, CONFIG};

#[test]
fn sigterm_and_sigint_write_a_resume_checkpoint_that_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let whole = dir.path().join("whole");
    let (code, log) = start(&cfg, &whole, 90, false, &[]).finish();
    assert_eq!(code, Some(0), "{log}");
    let mut stopped_at = Vec::new();
    for (sig, code_want) in [("TERM", 143), ("INT", 130)] {
        let cut = dir.path().join(format!("cut-{sig}"));
        let mut run = start(&cfg, &cut, 90, false, &[]);
        assert!(
            run.wait_for("step 25 |", Duration::from_secs(120)),
            "{:?}",
            run.seen
        );
        run.signal(sig);
        let (code, log) = run.finish();
        assert_eq!(code, Some(code_want), "{log}");
        assert!(
            log.contains("the resume checkpoint is") && log.contains("--resume"),
            "{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
        all_checkpoints_load(&cut);
        let state = seq2seq::pipeline::model_dir::load_state(&cut).unwrap();
        stopped_at.push(format!(
            "SIG{sig} at step {} exited {code_want}",
            state.step
        ));
        let (code, log) = start(&cfg, &cut, 90, true, &[]).finish();
        assert_eq!(code, Some(0), "{log}");
        assert!(
            state_bits(&whole) == state_bits(&cut),
            "SIG{sig}: weights differ after resume"
        );
    }
    println!(
        "{}; both resumed, final weights identical: {}",
        stopped_at.join(", "),
        digest(&state_bits(&whole))
    );
}

#[test]
fn a_second_signal_exits_at_once_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.path().join("m");
    // Every write pauses between its complete temporary file and the rename: both signals land
    // inside a checkpoint write.
    let mut run = start(
        &cfg,
        &out,
        90,
        false,
        &[("SEQ2SEQ_TEST_WRITE_DELAY_MS", "2000")],
    );
    assert!(run.wait_for("test hook: writing", Duration::from_secs(120)));
    assert!(run.wait_for("test hook: writing", Duration::from_secs(120)));
    run.signal("INT");
    assert!(
        run.wait_for("signal 2", Duration::from_secs(10)),
        "{:?}",
        run.seen
    );
    run.signal("INT");
    let (code, log) = run.finish();
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("second signal"), "{log}");
    all_checkpoints_load(&out);
    // The interrupted write's temporary file is removed by the next run, which resumes.
    let (code, log) = start(&cfg, &out, 30, out.join("last.safetensors").exists(), &[]).finish();
    assert_eq!(code, Some(0), "{log}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint_and_names_the_file() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("skipped: no bash for `ulimit -f`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.path().join("m");
    let (code, log) = start(&cfg, &out, 40, false, &[]).finish();
    assert_eq!(code, Some(0), "{log}");
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    // Resume with a 16 KiB file-size limit (SIGXFSZ ignored, so a write fails with EFBIG the way
    // it fails with ENOSPC on a full disk): the first checkpoint write fails.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 16; exec '{}' train '{}' --out '{}' --max-steps 80 --resume",
            env!("CARGO_BIN_EXE_seq2seq"),
            cfg.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("cannot write") && err.contains(".safetensors") && err.contains("too large"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(out.join("last.safetensors")).unwrap(), before);
    all_checkpoints_load(&out);
    let tmp: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    // With the space back, the run resumes from the intact checkpoint.
    let (code, log) = start(&cfg, &out, 80, true, &[]).finish();
    assert_eq!(code, Some(0), "{log}");

    // `average` under the same limit: its weights file fails, named, and nothing is left that
    // looks like a model.
    let avg = dir.path().join("avg");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 16; exec '{}' average --out '{}' '{}'/checkpoint-step*.safetensors",
            env!("CARGO_BIN_EXE_seq2seq"),
            avg.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("cannot write") && err.contains("too large"),
        "{err}"
    );
    assert!(!avg.join("model.safetensors").exists());
    let left: Vec<_> = std::fs::read_dir(&avg)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.iter().all(|n| !n.contains(".tmp")), "{left:?}");
}
