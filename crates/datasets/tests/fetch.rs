//! `fetch` against fixture corpora served from a loopback HTTP server made here: success, resume
//! after a cut connection and across runs, wrong checksum, 404, truncated gzip, zip-slip and
//! tar-slip entries, already present, corrupt files, unpinned sums and `--offline`.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use seq2seq_datasets::{fetch, verify, Catalog, Error, FetchOptions, FileState, Outcome, Progress};
use sha2::{Digest, Sha256};

mod common;
use common::server::{serve, Served};

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A tar.gz; names are written raw, so `../x` can be made for the slip test.
fn tar_gz_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    gz(&b.into_inner().unwrap())
}

/// Counts bytes and keeps notes.
#[derive(Default)]
struct Record {
    notes: Mutex<Vec<String>>,
    bytes: Mutex<u64>,
}

impl Progress for Record {
    fn begin(&self, _: &str, _: Option<u64>, _: u64) {}
    fn advance(&self, n: u64) {
        *self.bytes.lock().unwrap() += n;
    }
    fn end(&self) {}
    fn note(&self, l: &str) {
        self.notes.lock().unwrap().push(l.to_string());
    }
}

fn opts<'a>(dir: &Path, p: &'a Record, offline: bool) -> FetchOptions<'a> {
    FetchOptions {
        data_dir: dir.to_path_buf(),
        mirror: None,
        offline,
        progress: p,
    }
}

/// Nothing under `dir` may look complete except what is listed: no `.partial` names anywhere.
fn no_partials(dir: &Path) {
    for e in walk(dir) {
        assert!(!e.ends_with(".partial"), "left behind: {e}");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path().display().to_string());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

const TEXT: &[u8] = b"a man rides a horse .\na dog runs .\n";

fn corpus_yaml(base: &str) -> String {
    format!(
        "toy:
  description: every unpack kind
  licence: test
  files:
    - {{url: {base}/t/train.en.gz, size: {gz_len}, sha256: {gz_sha}, unpack: gz, to: toy/train.en, to_sha256: {txt_sha}}}
    - {{url: {base}/t/raw.txt, sha256: {txt_sha}, unpack: none, to: toy/raw.txt}}
    - url: {base}/t/pack.tar.gz
      unpack: tar-gz
      extract:
        - {{from: pack/a.txt, to: toy/a.txt, sha256: {txt_sha}}}
        - {{from: pack/imgs/, to: toy/imgs/}}
    - url: {base}/t/w.zip
      unpack: zip
      extract:
        - {{from: inner/w.bin, to: ../models/toy/w.bin}}
",
        gz_len = gz(TEXT).len(),
        gz_sha = sha(&gz(TEXT)),
        txt_sha = sha(TEXT),
    )
}

fn toy_server() -> (Arc<Mutex<Served>>, String) {
    let st = Arc::new(Mutex::new(Served::default()));
    let base = serve(st.clone());
    let mut s = st.lock().unwrap();
    s.files.insert("/t/train.en.gz".into(), gz(TEXT));
    s.files.insert("/t/raw.txt".into(), TEXT.to_vec());
    let tar = tar_gz_of(&[
        ("pack/a.txt", TEXT),
        ("pack/imgs/1.jpg", b"one"),
        ("pack/imgs/sub/2.jpg", b"two"),
        ("pack/other.txt", b"not picked"),
    ]);
    s.files.insert("/t/pack.tar.gz".into(), tar);
    let z = zip_of(&[
        ("inner/w.bin", &[7u8; 3000]),
        ("__MACOSX/inner/._w.bin", b"x"),
    ]);
    s.files.insert("/t/w.zip".into(), z);
    drop(s);
    (st, base)
}

#[test]
fn fetches_every_kind_then_finds_it_present() {
    let (st, base) = toy_server();
    let cat = Catalog::parse(&corpus_yaml(&base), "toy.yaml").unwrap();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let rec = Record::default();
    let out = fetch("toy", cat.get("toy").unwrap(), &opts(&data, &rec, false)).unwrap();
    assert!(
        out.iter()
            .all(|(_, o)| matches!(o, Outcome::Fetched { .. })),
        "{out:?}"
    );
    assert_eq!(std::fs::read(data.join("toy/train.en")).unwrap(), TEXT);
    assert_eq!(std::fs::read(data.join("toy/raw.txt")).unwrap(), TEXT);
    assert_eq!(std::fs::read(data.join("toy/a.txt")).unwrap(), TEXT);
    assert_eq!(
        std::fs::read(data.join("toy/imgs/sub/2.jpg")).unwrap(),
        b"two"
    );
    assert!(!data.join("toy/other.txt").exists());
    assert_eq!(
        std::fs::read(root.path().join("models/toy/w.bin")).unwrap(),
        [7u8; 3000]
    );
    no_partials(root.path());
    // Unpinned archives: their computed sums are told, so that they can be pinned.
    let notes = rec.notes.lock().unwrap().join("\n");
    assert!(
        notes.contains("pack.tar.gz") && notes.contains("sha256"),
        "{notes}"
    );

    // Present and verified: nothing is requested again; verify agrees, the zip member by its
    // recorded sum.
    let n = st.lock().unwrap().log.len();
    let again = fetch("toy", cat.get("toy").unwrap(), &opts(&data, &rec, false)).unwrap();
    assert!(again.iter().all(|(_, o)| *o == Outcome::Present));
    assert_eq!(st.lock().unwrap().log.len(), n);
    let v = verify("toy", cat.get("toy").unwrap(), &data).unwrap();
    let state = |p: &str| v.iter().find(|s| s.output.path == p).unwrap().state.clone();
    assert_eq!(state("toy/train.en"), FileState::Verified);
    assert_eq!(state("../models/toy/w.bin"), FileState::Recorded);
    assert_eq!(state("toy/imgs"), FileState::Unchecked);

    // A damaged file is reported by verify and fetched again.
    std::fs::write(data.join("toy/train.en"), b"damaged").unwrap();
    let v = verify("toy", cat.get("toy").unwrap(), &data).unwrap();
    assert!(matches!(v[0].state, FileState::Corrupt { .. }), "{v:?}");
    fetch("toy", cat.get("toy").unwrap(), &opts(&data, &rec, false)).unwrap();
    assert_eq!(std::fs::read(data.join("toy/train.en")).unwrap(), TEXT);

    // --offline checks without the network.
    let n = st.lock().unwrap().log.len();
    fetch("toy", cat.get("toy").unwrap(), &opts(&data, &rec, true)).unwrap();
    std::fs::remove_file(data.join("toy/raw.txt")).unwrap();
    let e = fetch("toy", cat.get("toy").unwrap(), &opts(&data, &rec, true)).unwrap_err();
    assert!(
        matches!(e, Error::Offline(_)) && e.to_string().contains("toy/raw.txt is missing"),
        "{e}"
    );
    assert_eq!(st.lock().unwrap().log.len(), n);
}

#[test]
fn resumes_a_cut_connection_and_an_earlier_partial_download() {
    let (st, base) = toy_server();
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let yaml = format!(
        "big:\n  description: d\n  licence: l\n  files:\n    - {{url: {base}/t/big.bin, size: {}, sha256: {}, unpack: none, to: big/big.bin}}\n",
        big.len(),
        sha(&big)
    );
    {
        let mut s = st.lock().unwrap();
        s.files.insert("/t/big.bin".into(), big.clone());
        s.cut_once.insert("/t/big.bin".into(), 300_000);
    }
    let cat = Catalog::parse(&yaml, "big.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = Record::default();
    fetch(
        "big",
        cat.get("big").unwrap(),
        &opts(dir.path(), &rec, false),
    )
    .unwrap();
    assert_eq!(std::fs::read(dir.path().join("big/big.bin")).unwrap(), big);
    let log = st.lock().unwrap().log.clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].1.as_deref(), Some("bytes=300000-"));
    // Every byte crossed the wire once.
    assert_eq!(*rec.bytes.lock().unwrap(), big.len() as u64);

    // A `.part` left by an interrupted run is continued, not restarted.
    std::fs::remove_file(dir.path().join("big/big.bin")).unwrap();
    let part = dir.path().join(".downloads/big/big.bin.part");
    std::fs::write(&part, &big[..123_456]).unwrap();
    fetch(
        "big",
        cat.get("big").unwrap(),
        &opts(dir.path(), &rec, false),
    )
    .unwrap();
    assert_eq!(std::fs::read(dir.path().join("big/big.bin")).unwrap(), big);
    assert_eq!(
        st.lock().unwrap().log.last().unwrap().1.as_deref(),
        Some("bytes=123456-")
    );
    assert!(!part.exists());
}

/// Fetches a one-download corpus and expects an error containing every needle, with nothing
/// left at the target or under a `.partial` name.
fn fails(yaml: &str, target: &str, needles: &[&str]) {
    let cat = Catalog::parse(yaml, "bad.yaml").unwrap();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let rec = Record::default();
    let e = fetch("bad", cat.get("bad").unwrap(), &opts(&data, &rec, false)).unwrap_err();
    for n in needles {
        assert!(e.to_string().contains(n), "{e} lacks {n:?}");
    }
    assert!(
        !data.join(target).exists(),
        "{target} looks complete after: {e}"
    );
    no_partials(root.path());
    assert!(!root.path().join("evil.txt").exists() && !data.join("evil.txt").exists());
}

#[test]
fn bad_downloads_leave_nothing_that_looks_complete() {
    let (st, base) = toy_server();
    let head = "bad:\n  description: d\n  licence: l\n  files:\n";
    // A wrong checksum names the URL and both sums.
    fails(
        &format!(
            "{head}    - {{url: {base}/t/raw.txt, sha256: {}, unpack: none, to: x/raw.txt}}\n",
            "0".repeat(64)
        ),
        "x/raw.txt",
        &["/t/raw.txt", "sha256 mismatch", &"0".repeat(64)],
    );
    // A 404 is not retried.
    let n = st.lock().unwrap().log.len();
    fails(
        &format!("{head}    - {{url: {base}/t/nope.gz, unpack: gz, to: x/nope}}\n"),
        "x/nope",
        &["/t/nope.gz", "HTTP 404"],
    );
    assert_eq!(st.lock().unwrap().log.len(), n + 1);
    // A truncated gzip: the download itself verifies (its sum is pinned), unpacking fails.
    let full = gz(&TEXT.repeat(500));
    let cut = full[..full.len() / 2].to_vec();
    st.lock()
        .unwrap()
        .files
        .insert("/t/cut.gz".into(), cut.clone());
    fails(
        &format!(
            "{head}    - {{url: {base}/t/cut.gz, sha256: {}, unpack: gz, to: x/cut.txt}}\n",
            sha(&cut)
        ),
        "x/cut.txt",
        &["/t/cut.gz"],
    );
    // A truncated zip.
    let z = zip_of(&[("a.txt", &TEXT.repeat(50))]);
    st.lock()
        .unwrap()
        .files
        .insert("/t/cut.zip".into(), z[..z.len() - 30].to_vec());
    fails(
        &format!("{head}    - url: {base}/t/cut.zip\n      unpack: zip\n      extract: [{{from: a.txt, to: x/a.txt}}]\n"),
        "x/a.txt",
        &["/t/cut.zip", "not a readable zip"],
    );
    // Zip-slip and tar-slip: an entry climbing out is refused, even beside a good member.
    let z = zip_of(&[
        ("a.txt", TEXT),
        ("../evil.txt", b"pwned"),
        ("../../evil.txt", b"pwned"),
    ]);
    st.lock().unwrap().files.insert("/t/slip.zip".into(), z);
    fails(
        &format!("{head}    - url: {base}/t/slip.zip\n      unpack: zip\n      extract: [{{from: a.txt, to: x/a.txt}}]\n"),
        "x/a.txt",
        &["/t/slip.zip", "refusing entry ../evil.txt"],
    );
    let t = tar_gz_of(&[("d/a.txt", TEXT), ("d/../../evil.txt", b"pwned")]);
    st.lock().unwrap().files.insert("/t/slip.tar.gz".into(), t);
    fails(
        &format!("{head}    - url: {base}/t/slip.tar.gz\n      unpack: tar-gz\n      extract: [{{from: d/, to: x/d/}}]\n"),
        "x/d",
        &["/t/slip.tar.gz", "refusing entry", "escapes"],
    );
    // A member the archive lacks.
    fails(
        &format!("{head}    - url: {base}/t/w.zip\n      unpack: zip\n      extract: [{{from: inner/w.bin, to: x/w.bin}}, {{from: inner/gone.bin, to: x/gone.bin}}]\n"),
        "x/w.bin",
        &["/t/w.zip", "no member inner/gone.bin"],
    );
}

#[test]
fn a_mirror_replaces_the_host() {
    let st = Arc::new(Mutex::new(Served::default()));
    let base = serve(st.clone());
    st.lock()
        .unwrap()
        .files
        .insert("/example.org/c/raw.txt".into(), TEXT.to_vec());
    let yaml = format!(
        "m:\n  description: d\n  licence: l\n  files:\n    - {{url: https://example.org/c/raw.txt, sha256: {}, unpack: none, to: m/raw.txt}}\n",
        sha(TEXT)
    );
    let cat = Catalog::parse(&yaml, "m.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rec = Record::default();
    let mut o = opts(dir.path(), &rec, false);
    o.mirror = Some(format!("{base}/"));
    fetch("m", cat.get("m").unwrap(), &o).unwrap();
    let mut got = Vec::new();
    std::fs::File::open(dir.path().join("m/raw.txt"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, TEXT);
}
