//! The bodies of the fuzz targets: each feeds one reader of untrusted input and must see an
//! `Ok` or an `Err`, never a panic, a hang or an unbounded allocation. The top-level test
//! `tests/fuzz_regressions.rs` includes this file and replays every input in `fuzz/regressions/`
//! on stable Rust.
//!
//! Readers that take a path get the input written to a file in a fresh temporary folder; where
//! raw bytes would rarely get past the first check, `arbitrary` builds a structured input.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use candle_core::Device;
use seq2seq::data::captions::{read_coco, read_flickr8k, read_karpathy};
use seq2seq::data::corpus::{read_csv, read_lines, read_parallel, read_tsv};
use seq2seq::data::Vocab;
use seq2seq::datasets::unpack::unpack;
use seq2seq::datasets::{Catalog, Download, Member, Unpack};
use seq2seq::image_encoder::preprocess::{
    load_rgb, resize_crop, to_tensor, ImageLimits, Normalization,
};
use seq2seq::metrics::{cider_d, coco_bleu, Bleu, Chrf, Smoothing, Tokenizer};
use seq2seq::pipeline::{model_dir, Config, Translator};

fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("the temporary folder is writable");
    p
}

/// The YAML config loader with its cross-key checks; an accepted config must survive its own
/// resolved form (`config.yaml` of a model directory).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::from_yaml(text) {
        let again = Config::from_yaml(&cfg.to_yaml());
        assert!(
            again.is_ok(),
            "the resolved config does not load: {:?}",
            again.err()
        );
    }
}

#[derive(Arbitrary, Debug)]
struct CorpusInput {
    kind: u8,
    src_col: u8,
    tgt_col: u8,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Line-aligned parallel files, TSV pairs, CSV records, plain lines.
pub fn corpus(data: &[u8]) {
    let Ok(c) = CorpusInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = file_with(dir.path(), "a.txt", &c.a);
    let b = file_with(dir.path(), "b.txt", &c.b);
    let (s, t) = (usize::from(c.src_col % 5), usize::from(c.tgt_col % 5));
    let _ = match c.kind % 4 {
        0 => read_parallel(&a, &b).map(|_| ()),
        1 => read_tsv(&a, s, t).map(|_| ()),
        2 => read_csv(&a, s).map(|_| ()),
        _ => read_lines(&a).map(|_| ()),
    };
}

#[derive(Arbitrary, Debug)]
struct CaptionsInput {
    kind: u8,
    tokens: Vec<u8>,
    train: Vec<u8>,
    dev: Vec<u8>,
}

/// Flickr8k's token file and split lists, Karpathy's JSON, COCO's JSON.
pub fn captions(data: &[u8]) {
    let Ok(c) = CaptionsInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    file_with(&images, "1.jpg", b"present");
    let _ = match c.kind % 3 {
        0 => {
            file_with(dir.path(), "Flickr8k.token.txt", &c.tokens);
            file_with(dir.path(), "Flickr_8k.trainImages.txt", &c.train);
            file_with(dir.path(), "Flickr_8k.devImages.txt", &c.dev);
            file_with(dir.path(), "Flickr_8k.testImages.txt", &c.dev);
            read_flickr8k(dir.path(), &images).map(|_| ())
        }
        1 => read_karpathy(&file_with(dir.path(), "k.json", &c.tokens), &images).map(|_| ()),
        _ => read_coco(&file_with(dir.path(), "c.json", &c.tokens), &images).map(|_| ()),
    };
}

/// A vocabulary's `tokenizer.json`, then encoding and decoding with it.
pub fn tokenizer(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = file_with(dir.path(), "tokenizer.json", data);
    if let Ok(v) = Vocab::load(&p) {
        if let Ok(ids) = v.encode("A man rides a horse, 3 times.") {
            let _ = v.decode(&ids);
            let _ = v.tokens(&ids);
        }
        let _ = v.decode(&[0, 1, 2, 3, 4, 1000, u32::MAX]);
    }
}

/// Image decoding within tight limits, then the preprocessing every image goes through.
pub fn image(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = file_with(dir.path(), "img", data);
    let limits = ImageLimits {
        max_file_bytes: 1 << 20,
        max_width: 1024,
        max_height: 1024,
    };
    if let Ok(img) = load_rgb(&p, &limits) {
        let small = resize_crop(&img, 24, None);
        to_tensor(&small, Normalization::Lite, &Device::Cpu).expect("a 24x24 image converts");
    }
}

/// A safetensors checkpoint as every command reads it (memory-mapped).
pub fn safetensors(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    file_with(dir.path(), "model.safetensors", data);
    let _ = model_dir::load_tensors(dir.path(), "model.safetensors", &Device::Cpu);
    let _ = model_dir::load_resume(dir.path(), &Device::Cpu);
}

/// The committed tiny model directory the model-directory target mutates.
fn seed_model() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("seeds/model"), root.join("fuzz/seeds/model")]
        .into_iter()
        .find(|p| p.is_dir())
        .expect("fuzz/seeds/model is committed")
}

const MODEL_FILES: [&str; 5] = [
    "config.yaml",
    "src_tokenizer.json",
    "tgt_tokenizer.json",
    "model.safetensors",
    "last.safetensors",
];

#[derive(Arbitrary, Debug)]
struct ModelDirInput {
    which: u8,
    bytes: Vec<u8>,
}

/// A model directory with one of its files replaced: load it and translate one sentence.
pub fn model_dir(data: &[u8]) {
    let Ok(m) = ModelDirInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for f in MODEL_FILES {
        // libFuzzer's timer signal can interrupt the copy (EINTR): retry, it is not a finding.
        let copy = || std::fs::copy(seed_model().join(f), dir.path().join(f));
        while let Err(e) = copy() {
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "{f}: {e}");
        }
    }
    let name = MODEL_FILES[usize::from(m.which) % MODEL_FILES.len()];
    file_with(dir.path(), name, &m.bytes);
    let model = if name == "last.safetensors" {
        Translator::load(&dir.path().join(name))
    } else {
        Translator::load(dir.path())
    };
    if let Ok(t) = model {
        let mut opts = t.config.decoding.clone();
        opts.max_length = opts.max_length.min(8);
        let _ = t.translate(&["1 may 2001".to_string()], &opts);
    }
}

/// The legacy (and zip) PyTorch checkpoint reader.
pub fn pth(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = file_with(dir.path(), "w.pth", data);
    let _ = seq2seq::image_encoder::pth::load_pth(&p, &Device::Cpu);
}

#[derive(Arbitrary, Debug)]
struct ScoreInput {
    lowercase: bool,
    tokenizer: u8,
    smoothing: u8,
    max_order: u8,
    lines: Vec<(String, String, String)>,
}

/// `score`'s inputs (hypotheses against one or two references, every metric and option) and the
/// captioning metrics on the same strings.
pub fn score(data: &[u8]) {
    let Ok(s) = ScoreInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let hyps: Vec<&str> = s.lines.iter().map(|l| l.0.as_str()).collect();
    let refs: Vec<Vec<&str>> = s
        .lines
        .iter()
        .map(|l| vec![l.1.as_str(), l.2.as_str()])
        .collect();
    let tokenizer = [
        Tokenizer::None,
        Tokenizer::Thirteen,
        Tokenizer::Intl,
        Tokenizer::Char,
    ][usize::from(s.tokenizer % 4)];
    let smoothing = [
        Smoothing::Exp,
        Smoothing::Floor(0.1),
        Smoothing::AddK(1.0),
        Smoothing::None,
    ][usize::from(s.smoothing % 4)];
    let bleu = Bleu {
        lowercase: s.lowercase,
        tokenizer,
        smoothing,
        max_order: 1 + usize::from(s.max_order % 6),
        effective_order: s.max_order % 2 == 0,
    };
    let score = bleu.corpus(&hyps, &refs);
    assert!(score.score.is_finite(), "BLEU {:?}", score.score);
    for chrf in [Chrf::default(), Chrf::plus_plus()] {
        assert!(chrf.corpus(&hyps, &refs).score.is_finite());
    }
    if !hyps.is_empty() {
        let (c, _) = cider_d(&hyps, &refs);
        assert!(c.is_finite());
        assert!(coco_bleu(&hyps, &refs).iter().all(|b| b.is_finite()));
    }
}

/// The corpus catalogue (a `--catalog FILE`).
pub fn catalog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Catalog::parse(text, "fuzz.yaml") {
        for corpus in c.corpora.values() {
            for d in &corpus.files {
                let _ = d.url_via(Some("http://127.0.0.1:1"));
            }
            let _ = corpus.outputs();
        }
    }
}

/// A downloaded archive (gz, tar.gz, zip) unpacked: an error or files inside the data folder,
/// never anything outside it.
pub fn archive(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let file = file_with(dir.path(), "download", bytes);
    let members = vec![
        Member {
            from: "a/".into(),
            to: "x/".into(),
            sha256: None,
        },
        Member {
            from: "f.txt".into(),
            to: "y.txt".into(),
            sha256: None,
        },
    ];
    let unpack_kind = [Unpack::Gz, Unpack::TarGz, Unpack::Zip][usize::from(kind % 3)];
    let d = Download {
        url: "http://fuzz/download".into(),
        size: None,
        sha256: None,
        unpack: unpack_kind,
        to: (unpack_kind == Unpack::Gz).then(|| "g.txt".into()),
        to_sha256: None,
        extract: if unpack_kind == Unpack::Gz {
            vec![]
        } else {
            members
        },
    };
    let _ = unpack(&d, &file, &data_dir, &d.url);
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "data" && n != "download")
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the data folder: {outside:?}"
    );
}
