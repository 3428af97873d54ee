//! Every committed fuzz input, on stable Rust: the seed corpora (`fuzz/seeds/<target>/`) and every
//! input that once crashed, hung or over-allocated a target (`fuzz/regressions/<target>/`), run
//! through the same target bodies as `cargo fuzz` (`fuzz/src/lib.rs`).

use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "config" => targets::config,
        "corpus" => targets::corpus,
        "captions" => targets::captions,
        "tokenizer" => targets::tokenizer,
        "image" => targets::image,
        "safetensors" => targets::safetensors,
        "model_dir" => targets::model_dir,
        "pth" => targets::pth,
        "score" => targets::score,
        "catalog" => targets::catalog,
        "archive" => targets::archive,
        _ => return None,
    })
}

/// Runs every file of `<dir>/<target>/`; returns how many ran.
fn replay(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for t in rd {
        let t = t.unwrap();
        let Some(run) = target(&t.file_name().to_string_lossy()) else {
            continue; // seeds/model is the model directory's seed, not a corpus
        };
        for f in std::fs::read_dir(t.path()).unwrap() {
            let p = f.unwrap().path();
            let input = std::fs::read(&p).unwrap();
            eprintln!("{}", p.display());
            run(&input);
            n += 1;
        }
    }
    n
}

#[test]
fn seed_corpora_and_fuzz_findings_are_handled() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = replay(&fuzz.join("seeds"));
    assert!(seeds >= 25, "only {seeds} seed inputs");
    replay(&fuzz.join("regressions"));
}
