//! The captioning pipeline from the command line: train on generated shapes, caption files
//! (with unreadable, non-image and oversized files among them), decoding options, eval; and,
//! when ../shared is present, the frozen Lite0 backbone with its feature cache on Flickr8k images.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seq2seq"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SHAPES: &str = "name: caption-test
task: captioning
seed: 3
data:
  format: shapes
  train_size: 800
  valid_size: 40
  test_size: 40
  image_size: 32
  max_image_side: 1000
model:
  image_encoder:
    backbone: small_cnn
    cnn: {channels: [8, 16], kernel: 3}
  decoder: {embedding_dim: 16, hidden_size: 48, attention_dim: 24}
train:
  learning_rate: 0.005
  batch_size: 32
  valid_every: 40
  log_every: 20
decoding:
  max_length: 14
";

/// A small picture: a red disc on grey.
fn picture(path: &Path, w: u32, h: u32) {
    let mut img = RgbImage::from_pixel(w, h, Rgb([240, 240, 240]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
        if dx * dx + dy * dy < (w.min(h) as f32 / 4.0).powi(2) {
            *p = Rgb([220, 30, 30]);
        }
    }
    img.save(path).unwrap();
}

fn train_shapes(dir: &Path) -> PathBuf {
    let cfg = dir.join("shapes.yaml");
    std::fs::write(&cfg, SHAPES).unwrap();
    let model = dir.join("model");
    let out = run(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--max-steps",
        "80",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("data: 800 training captions of 800 images"),
        "{err}"
    );
    assert!(err.contains("validation at step 40"), "{err}");
    model
}

#[test]
fn caption_files_and_folders_with_bad_files_among_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = train_shapes(d);
    let model = model.to_str().unwrap();

    let imgs = d.join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    picture(&imgs.join("a.png"), 40, 40);
    picture(&imgs.join("b.jpg"), 64, 48);
    // A JPEG cut short, a text file, and a picture wider than data.max_image_side.
    let jpeg = std::fs::read(imgs.join("b.jpg")).unwrap();
    std::fs::write(d.join("corrupt.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    picture(&d.join("wide.png"), 1200, 8);
    // A photo-like JPEG cut to 30 % of its bytes: its header is whole, so the decoder used to
    // fill the rest with grey and caption it without a word.
    let photo = RgbImage::from_fn(96, 72, |x, y| {
        Rgb([(x * 3) as u8, (y * 7 % 256) as u8, ((x * y) % 253) as u8])
    });
    photo.save(d.join("photo.jpg")).unwrap();
    let bytes = std::fs::read(d.join("photo.jpg")).unwrap();
    std::fs::write(d.join("photo_cut.jpg"), &bytes[..bytes.len() * 3 / 10]).unwrap();

    let a = imgs.join("a.png");
    let b = imgs.join("b.jpg");
    let args = |extra: &[&str], files: &[&Path]| -> std::process::Output {
        let mut v: Vec<String> = ["caption", "--model", model]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(files.iter().map(|p| p.display().to_string()));
        let r: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        run(&r)
    };

    let corrupt = d.join("corrupt.jpg");
    let notes = imgs.join("notes.txt");
    let wide = d.join("wide.png");
    let photo_cut = d.join("photo_cut.jpg");
    let out = args(&[], &[&a, &corrupt, &notes, &wide, &photo_cut, &b]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "bad files must fail the run");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The good images are still captioned, in input order, `path<TAB>caption`.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}\t", a.display())),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{}\t", b.display())),
        "{stdout}"
    );
    for l in &lines {
        let cap = l.split('\t').nth(1).unwrap();
        assert!(cap.starts_with("a "), "{l}");
    }
    // Each bad file gets an error line naming it.
    for bad in [&corrupt, &notes, &wide, &photo_cut] {
        let name = bad.display().to_string();
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error:") && l.contains(&name)),
            "no error for {name}: {stderr}"
        );
    }
    assert!(
        stderr.contains("4 of 6 images could not be captioned"),
        "{stderr}"
    );

    // Attention strips: one per image that could be captioned, named by its input position,
    // a tile per word (the caption's words and eos) in rows of six.
    let att = d.join("att");
    let out = args(
        &["--attention", att.to_str().unwrap(), "--hflip-average"],
        &[&a, &notes, &b],
    );
    assert!(!out.status.success());
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&att)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names, ["0001.png", "0003.png"]);
    let strip = image::open(att.join("0001.png")).unwrap();
    let words = text(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .split(' ')
        .count()
        + 1;
    let (tile, gap, label, top) = (160, 8, 30, 34);
    assert_eq!(strip.width(), gap + words.min(6) as u32 * (tile + gap));
    assert_eq!(
        strip.height(),
        top + words.div_ceil(6) as u32 * (tile + label + gap)
    );

    // A folder: its image files by extension, in name order; the text file is not an image.
    let out = args(&[], &[&imgs]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let names: Vec<&str> = s.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(names, [a.display().to_string(), b.display().to_string()]);

    // JSON lines, and every decoding option.
    let out = args(&["--json"], &[&a, &notes]);
    let s = text(&out.stdout);
    let rows: Vec<serde_json::Value> = s
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["image"], a.display().to_string());
    assert!(rows[0]["caption"].as_str().unwrap().starts_with("a "));
    assert!(rows[1]["error"].as_str().unwrap().contains("notes.txt"));

    let out = args(
        &["--strategy", "beam", "--beam-size", "3", "--n-best", "2"],
        &[&a, &b],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 4, "{s}");
    let sample = |seed: &str| {
        text(
            &args(
                &[
                    "--strategy",
                    "sample",
                    "--temperature",
                    "1.5",
                    "--seed",
                    seed,
                ],
                &[&a, &b],
            )
            .stdout,
        )
    };
    assert_eq!(sample("7"), sample("7"));

    // eval: BLEU-1..4 and CIDEr-D against the generated test captions, captions written out.
    let out = run(&["eval", "--model", model, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["images"], 40);
    assert!(r["bleu1"].as_f64().unwrap() > 40.0, "{r}");
    assert!(r["cider_d"].as_f64().unwrap() > 0.0, "{r}");
    let hyps = std::fs::read_to_string(Path::new(model).join("hyp.test.txt")).unwrap();
    assert_eq!(hyps.lines().count(), 40);
    assert!(hyps.starts_with("shapes-test-0\ta "), "{hyps}");

    // An ensemble of the model with itself is the model: the same captions and scores.
    let out = run(&["eval", "--model", model, "--json", "--ensemble", model]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ensemble of 2 models"));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["bleu4", "cider_d", "exact_match"] {
        assert_eq!(e[key], r[key], "{key}: {e} vs {r}");
    }
    let (l1, l2) = (r["loss"].as_f64().unwrap(), e["loss"].as_f64().unwrap());
    assert!((l1 - l2).abs() < 1e-4, "{l1} vs {l2}");
    // A weights file in place of the directory: the same model, its hypotheses named after it.
    let weights = Path::new(model).join("model.safetensors");
    let out = run(&["eval", "--model", weights.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["bleu4", "cider_d", "exact_match"] {
        assert_eq!(f[key], r[key], "{key}: {f} vs {r}");
    }
    let lf = f["loss"].as_f64().unwrap();
    assert!((lf - l1).abs() < 1e-6, "{lf} vs {l1}");
    assert_eq!(
        std::fs::read_to_string(Path::new(model).join("hyp.model.test.txt")).unwrap(),
        hyps
    );
    let out = args(&["--ensemble", model, "--"], &[&a, &b]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&args(&[], &[&a, &b]).stdout));
    // hflip averaging reads each image and its mirror image together: a lopsided picture and
    // its mirror get the same caption and score (the two views swapped), which neither gets alone.
    let lop = d.join("lopsided.png");
    let mut img = RgbImage::from_pixel(32, 32, Rgb([240, 240, 240]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        if (x as i32 - 8).pow(2) + (y as i32 - 10).pow(2) < 36 {
            *p = Rgb([220, 30, 30]);
        } else if (18..30).contains(&x) && (16..28).contains(&y) {
            *p = Rgb([30, 30, 220]);
        }
    }
    img.save(&lop).unwrap();
    let mirror = d.join("mirror.png");
    image::imageops::flip_horizontal(&img)
        .save(&mirror)
        .unwrap();
    let scored = |extra: &[&str], f: &Path| -> (String, f64) {
        let mut a = vec!["--json", "--strategy", "beam", "--beam-size", "3"];
        a.extend_from_slice(extra);
        let out = args(&a, &[f]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["caption"].as_str().unwrap().to_string(),
            v["score"].as_f64().unwrap(),
        )
    };
    let (c1, s1) = scored(&["--hflip-average"], &lop);
    let (c2, s2) = scored(&["--hflip-average"], &mirror);
    assert_eq!(c1, c2);
    assert!((s1 - s2).abs() < 1e-4, "{s1} vs {s2}");
    let (_, plain) = scored(&[], &lop);
    let (_, plain_mirror) = scored(&[], &mirror);
    assert!(
        (plain - s1).abs() > 1e-4 && (plain_mirror - s1).abs() > 1e-4,
        "{plain} {plain_mirror} {s1}"
    );
    let out = run(&["eval", "--model", model, "--json", "--hflip-average"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["images"], 40);
    assert!(h["bleu1"].as_f64().unwrap() > 40.0, "{h}");
    // The loss is of the images as they are.
    let lh = h["loss"].as_f64().unwrap();
    assert!((lh - l1).abs() < 1e-6, "{lh} vs {l1}");
    // A member whose frozen image encoder differs (here its image size) is refused by name.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    for f in std::fs::read_dir(model).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
        }
    }
    let cfg = std::fs::read_to_string(other.join("config.yaml")).unwrap();
    std::fs::write(
        other.join("config.yaml"),
        cfg.replace("image_size: 32", "image_size: 40"),
    )
    .unwrap();
    let out = args(&["--ensemble", other.to_str().unwrap(), "--"], &[&a]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ensemble member") && err.contains("data.image_size"),
        "{err}"
    );

    // A captioning model is not a translation model.
    let out = run(&["translate", "--model", model, "x"]);
    assert!(
        text(&out.stderr).contains("use `seq2seq caption`"),
        "{}",
        text(&out.stderr)
    );
}

fn shared() -> PathBuf {
    std::env::var_os("SEQ2SEQ_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")))
}

#[test]
fn lite0_features_are_cached_per_image_and_backbone() {
    let shared = shared();
    let ckpt = shared.join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth");
    let flickr = shared.join("datasets/flickr8k");
    if !ckpt.exists() || !flickr.join("Flickr8k.token.txt").exists() {
        eprintln!(
            "skipped: {} or Flickr8k not found (set SEQ2SEQ_SHARED_DIR)",
            ckpt.display()
        );
        return;
    }
    // A Flickr8k-format fixture of 6 real images (4 train, 1 dev, 1 test), one missing.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("f8k");
    std::fs::create_dir_all(root.join("images")).unwrap();
    let tokens = std::fs::read_to_string(flickr.join("Flickr8k.token.txt")).unwrap();
    let mut names: Vec<&str> = Vec::new();
    for l in tokens.lines() {
        let n = l.split('#').next().unwrap();
        if !names.contains(&n) {
            names.push(n);
        }
        if names.len() == 6 {
            break;
        }
    }
    let mut token_lines = String::new();
    for n in &names {
        std::fs::copy(flickr.join("images").join(n), root.join("images").join(n)).unwrap();
        for l in tokens.lines().filter(|l| l.starts_with(&format!("{n}#"))) {
            token_lines.push_str(l);
            token_lines.push('\n');
        }
    }
    token_lines.push_str("missing.jpg#0\ta caption of an image that is not there .\n");
    std::fs::write(root.join("Flickr8k.token.txt"), token_lines).unwrap();
    std::fs::write(
        root.join("Flickr_8k.trainImages.txt"),
        names[..4].join("\n") + "\nmissing.jpg\n",
    )
    .unwrap();
    std::fs::write(root.join("Flickr_8k.devImages.txt"), names[4]).unwrap();
    std::fs::write(root.join("Flickr_8k.testImages.txt"), names[5]).unwrap();
    let cache = dir.path().join("cache");
    let cfg = dir.path().join("lite0.yaml");
    std::fs::write(
        &cfg,
        format!(
            "task: captioning
data:
  format: flickr8k
  root: f8k
  lowercase: true
  feature_cache: {}
model:
  image_encoder: {{backbone: lite0, checkpoint: {}}}
  decoder: {{embedding_dim: 16, hidden_size: 32, attention_dim: 16}}
train: {{batch_size: 10, valid_every: 2}}
decoding: {{max_length: 5}}
",
            cache.display(),
            ckpt.display()
        ),
    )
    .unwrap();
    let train = |out: &str| {
        let o = run(&[
            "train",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--out",
            dir.path().join(out).to_str().unwrap(),
            "--max-steps",
            "2",
        ]);
        let err = text(&o.stderr);
        assert!(o.status.success(), "{err}");
        err
    };
    let first = train("m1");
    assert!(
        first.contains("1 captions dropped because their image file does not exist"),
        "{first}"
    );
    assert!(
        first.contains("features: 6 images ready (0 from the cache"),
        "{first}"
    );
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "one folder per backbone");
    let folder = cached[0].as_ref().unwrap().path();
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 6);
    let second = train("m2");
    assert!(
        second.contains("features: 6 images ready (6 from the cache"),
        "{second}"
    );
    // The cache is keyed by contents: rewritten files (new modification times, as after a copy
    // or a re-mount of the data directory) still hit it.
    for n in &names {
        let p = root.join("images").join(n);
        std::fs::write(&p, std::fs::read(&p).unwrap()).unwrap();
    }
    let third = train("m3");
    assert!(
        third.contains("features: 6 images ready (6 from the cache"),
        "{third}"
    );
    // data.hflip: the mirrors of the 4 training images join the cache (held-out images are
    // never flipped in training), and the next run reads all 10 back.
    let plain_cfg = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        plain_cfg.replace("  lowercase: true\n", "  lowercase: true\n  hflip: true\n"),
    )
    .unwrap();
    let flipped = train("m4");
    assert!(
        flipped.contains("features: 4/4 images through the frozen backbone")
            && flipped
                .contains("features: 6 images ready with their training mirrors (6 from the cache"),
        "{flipped}"
    );
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 10);
    let again = train("m5");
    assert!(
        again.contains("features: 6 images ready with their training mirrors (10 from the cache"),
        "{again}"
    );
    std::fs::write(&cfg, plain_cfg).unwrap();
    // Eval with hflip averaging: the test image from the cache, its mirror computed.
    let o = run(&[
        "eval",
        "--model",
        dir.path().join("m4").to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--strategy",
        "greedy",
        "--json",
        "--hflip-average",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(v["cached_features"], 1, "{v}");
    assert_eq!(v["images"], 1, "{v}");
    // The model directory stands alone: it captions without the checkpoint.
    let img = root.join("images").join(names[5]);
    let o = run(&[
        "caption",
        "--model",
        dir.path().join("m2").to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with(&format!("{}\t", img.display())));

    // `eval` takes the test image's features from training's cache, and they are what the
    // model's own backbone computes, up to f16 storage.
    let eval = || -> (serde_json::Value, String) {
        let o = run(&[
            "eval",
            "--model",
            dir.path().join("m2").to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--strategy",
            "greedy",
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        (
            serde_json::from_str(text(&o.stdout).trim()).unwrap(),
            text(&o.stderr),
        )
    };
    let (hit, _) = eval();
    assert_eq!(hit["cached_features"], 1, "{hit}");
    assert_eq!(hit["cache_rejected"], false, "{hit}");
    let aside = dir.path().join("cache-aside");
    std::fs::rename(&folder, &aside).unwrap();
    let (computed, _) = eval();
    assert_eq!(computed["cached_features"], 0, "{computed}");
    let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
    assert!(
        (loss(&hit) - loss(&computed)).abs() < 1e-2,
        "{hit} vs {computed}"
    );
    std::fs::rename(&aside, &folder).unwrap();
    // An entry the model's backbone does not reproduce (here another image's features under the
    // test image's name) makes eval ignore the cache rather than score the wrong features.
    let entry = |n: &str| {
        let stem = format!("{}-", Path::new(n).file_stem().unwrap().to_str().unwrap());
        std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&stem))
            .unwrap()
    };
    std::fs::copy(entry(names[0]), entry(names[5])).unwrap();
    let (refused, err) = eval();
    assert!(err.contains("does not reproduce"), "{err}");
    assert_eq!(refused["cached_features"], 0, "{refused}");
    assert_eq!(refused["cache_rejected"], true, "{refused}");
    assert_eq!(loss(&refused), loss(&computed), "{refused} vs {computed}");
}
