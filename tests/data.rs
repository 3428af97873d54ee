//! `seq2seq data`: the shipped catalogue covers every shipped config's files, the binary fetches
//! through a mirror from a loopback server (and refuses a wrong checksum cleanly), and `verify`
//! passes on our working copy of the corpora when it is present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use seq2seq::datasets::Catalog;
use seq2seq::pipeline::config::{DataFormat, Task};
use seq2seq::pipeline::Config;

#[path = "../crates/datasets/tests/common/server.rs"]
mod server;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seq2seq"))
        .args(args)
        .env_remove("SEQ2SEQ_DATA_DIR")
        .env_remove("SEQ2SEQ_DATA_MIRROR")
        .output()
        .unwrap()
}

/// The files a config reads, relative to the data directory.
fn files_read(c: &Config) -> Vec<String> {
    let d = &c.data;
    let root = |f: &str| format!("{}/{f}", d.root);
    let mut v = match d.format {
        DataFormat::Parallel => [&d.train, &d.valid, &d.test]
            .iter()
            .flat_map(|s| {
                [
                    root(&format!("{s}.{}", d.src_lang)),
                    root(&format!("{s}.{}", d.tgt_lang)),
                ]
            })
            .collect(),
        DataFormat::Tsv | DataFormat::Text | DataFormat::Lines | DataFormat::Csv => {
            vec![root(&d.file)]
        }
        DataFormat::Flickr8k => vec![
            root("Flickr8k.token.txt"),
            root("Flickr_8k.trainImages.txt"),
            root("Flickr_8k.devImages.txt"),
            root("Flickr_8k.testImages.txt"),
            root(&d.images),
        ],
        DataFormat::Dates | DataFormat::Shapes => vec![],
        other => panic!("no rule for {other:?}: add one"),
    };
    if c.task == Task::Captioning && !c.model.image_encoder.checkpoint.is_empty() {
        v.push(c.model.image_encoder.checkpoint.clone());
    }
    v
}

#[test]
fn every_shipped_config_reads_files_the_catalogue_produces() {
    let cat = Catalog::shipped().unwrap();
    let outputs: Vec<_> = cat.corpora.values().flat_map(|c| c.outputs()).collect();
    let covered = |f: &str| {
        outputs
            .iter()
            .any(|o| o.path == f || (o.is_dir && Path::new(f).starts_with(&o.path)))
    };
    let mut checked = 0;
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == "reference.yaml" {
            continue;
        }
        let c = Config::from_file(&p).unwrap();
        for f in files_read(&c) {
            assert!(
                covered(&f),
                "{}: {f} comes from no catalogue entry",
                p.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} files checked");
}

#[test]
fn fetch_through_a_mirror_and_refuse_a_wrong_checksum() {
    let st = Arc::new(Mutex::new(server::Served::default()));
    let base = server::serve(st.clone());
    let text = b"line one\nline two\n".to_vec();
    let sum: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog.yaml");
    std::fs::write(
        &cat,
        format!("toy:\n  description: two lines\n  licence: test\n  files:\n    - {{url: https://example.org/toy.txt, sha256: {sum}, unpack: none, to: toy/toy.txt}}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (cat_s, data_s) = (cat.to_str().unwrap(), data.to_str().unwrap());
    let common = ["--catalog", cat_s, "--data-dir", data_s];

    // Offline with nothing present: a clean error naming what is missing.
    let out = run(&[&["data", "fetch", "toy", "--offline"][..], &common].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("toy/toy.txt is missing"),
        "{err}"
    );

    // Wrong bytes behind the mirror: the URL and both sums named, nothing left in place.
    st.lock()
        .unwrap()
        .files
        .insert("/example.org/toy.txt".into(), b"tampered\n".to_vec());
    let out = run(&[&["data", "fetch", "toy", "--mirror", &base][..], &common].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("example.org/toy.txt")
            && err.contains("sha256 mismatch")
            && err.contains(&sum),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!data.join("toy/toy.txt").exists());

    // The right bytes: fetched, then listed and verified.
    st.lock()
        .unwrap()
        .files
        .insert("/example.org/toy.txt".into(), text.clone());
    let out = run(&[&["data", "fetch", "toy", "--mirror", &base][..], &common].concat());
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && so.contains("toy: 1 verified"),
        "{so}{se}"
    );
    assert_eq!(std::fs::read(data.join("toy/toy.txt")).unwrap(), text);
    let out = run(&[&["data", "list", "--json"][..], &common].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["state"], "verified");
    let out = run(&[&["data", "verify", "toy"][..], &common].concat());
    assert!(out.status.success());
    // Unknown names are named.
    let out = run(&[&["data", "fetch", "toi"][..], &common].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no corpus named \"toi\""));
}

fn shared_datasets() -> Option<PathBuf> {
    let p = std::env::var_os("SEQ2SEQ_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")))
        .join("datasets");
    p.join("multi30k").is_dir().then_some(p)
}

#[test]
fn our_multi30k_copy_verifies_against_the_pinned_sums() {
    let Some(d) = shared_datasets() else {
        eprintln!("skipped: no ../shared/datasets (set SEQ2SEQ_SHARED_DIR to run it)");
        return;
    };
    let out = run(&[
        "data",
        "verify",
        "--data-dir",
        d.to_str().unwrap(),
        "multi30k",
        "alice",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("multi30k: 9 verified") && stdout.contains("alice: 1 verified"),
        "{stdout}"
    );
}
