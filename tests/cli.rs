//! The `seq2seq` binary: train → translate on the synthetic task, and user-facing errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seq2seq"))
}

/// Runs the binary with `args` to completion.
fn run(args: &[&str]) -> std::process::Output {
    bin().args(args).output().unwrap()
}

const CONFIG: &str = "name: cli-test
seed: 5
data:
  format: dates
  train_size: 3000
  valid_size: 50
  test_size: 50
  max_src_len: 40
  max_tgt_len: 12
  src_vocab: {level: char}
  tgt_vocab: {level: char}
model:
  encoder: {embedding_dim: 16, hidden_size: 32}
  decoder: {embedding_dim: 16, hidden_size: 64, attention_dim: 32}
train:
  learning_rate: 0.005
  batch_size: 32
  max_epochs: 0
  valid_every: 100
  log_every: 20
decoding:
  max_length: 12
";

fn assert_clean_error(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
}

#[test]
fn train_then_translate_args_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let model = dir.path().join("model");
    let out = run(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--max-steps",
        "300",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Not a terminal: plain progress lines, and the exact-match figure at the end.
    assert!(stderr.contains("step 20 | epoch 1 | loss"), "{stderr}");
    assert!(stderr.contains("validation at step 100"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("exact match:"), "{stdout}");
    for f in [
        "config.yaml",
        "src_tokenizer.json",
        "tgt_tokenizer.json",
        "model.safetensors",
        "last.safetensors",
        "trainer_state.json",
        "metrics.jsonl",
        "curves.png",
        "curves.svg",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(model.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kind = |k: &'static str| records.iter().filter(move |v| v["kind"] == k);
    // Validation every 100 steps, log every 20: three validations, which record the training
    // loss of their window, and a training record for each of the twelve other windows.
    assert_eq!(kind("valid").count(), 3, "{metrics}");
    assert_eq!(kind("train").count(), 12, "{metrics}");
    let steps: Vec<u64> = records
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=15).map(|i| i * 20).collect::<Vec<u64>>());
    for v in &records {
        assert!(v["train_loss"].as_f64().unwrap() > 0.0, "{v}");
    }
    for v in kind("valid") {
        assert!(v["valid_bleu"].as_f64().is_some(), "{v}");
    }
    // The curves: one validation dot per validation on each of the two validation panels.
    let svg = std::fs::read_to_string(model.join("curves.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 2 * 3);
    let png = image::open(model.join("curves.png")).unwrap();
    assert_eq!(png.width(), 900);
    // `plot` overlays runs (here the same run twice, under its directory name) and picks the
    // format from the extension; a single metric is one panel.
    let m = model.to_str().unwrap();
    let svg_out = model.with_extension("overlay.svg");
    let out = run(&["plot", m, m, "--out", svg_out.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&svg_out).unwrap();
    // Two runs: three validation dots each on the valid-loss and BLEU panels.
    assert_eq!(svg.matches("<circle").count(), 2 * 2 * 3);
    let png_out = model.with_extension("bleu.png");
    let out = run(&[
        "plot",
        m,
        "--metric",
        "valid_bleu",
        "--out",
        png_out.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(image::open(&png_out).is_ok());
    assert_clean_error(
        &run(&["plot", m, "--metric", "bleu"]),
        "not a recorded figure",
    );
    assert_clean_error(
        &run(&["plot", m, "--out", "x.jpg"]),
        "must end in .png or .svg",
    );

    // `info` counts the values the checkpoint holds, per module and in all.
    let out = run(&["info", "--model", m, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let weights =
        candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let total: usize = weights.values().map(|t| t.elem_count()).sum();
    assert_eq!(info["total_parameters"].as_u64(), Some(total as u64));
    let per_module: u64 = info["parameters"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_module, total as u64);
    assert_eq!(info["task"], "translation");
    assert_eq!(info["training"]["steps"], 300);
    assert_eq!(info["vocabularies"][0]["specials"][0], "<pad>");
    assert!(
        info["best_validation"]["valid_bleu"].as_f64().is_some(),
        "{info}"
    );
    let text = run(&["info", "--model", m]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("parameters:") && text.contains("decoder.rnn"),
        "{text}"
    );

    let m = model.to_str().unwrap();
    let out = run(&[
        "translate",
        "--model",
        m,
        "3 march 1987",
        "december 25, 2001",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l.len() == 10 && l.as_bytes()[4] == b'-'),
        "{lines:?}"
    );

    // Attention: a heat-map per input, and with --json the matrix, one row per output token
    // (eos included) over the source tokens, each row a distribution.
    let att = dir.path().join("att");
    let out = run(&[
        "translate",
        "--model",
        m,
        "--attention",
        att.to_str().unwrap(),
        "--json",
        "--strategy",
        "beam",
        "--n-best",
        "2",
        "3 march 1987",
        "december 25, 2001",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["0001.png", "0002.png"] {
        assert!(image::open(att.join(f)).is_ok(), "{f}");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["nbest"].as_array().unwrap().len(), 2);
        let src = v["source_tokens"].as_array().unwrap().len();
        let tokens = v["tokens"].as_array().unwrap();
        let rows = v["attention"].as_array().unwrap();
        assert_eq!(rows.len(), tokens.len());
        assert_eq!(tokens.last().unwrap(), "</s>");
        for r in rows {
            let r: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(r.len(), src);
            assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{r:?}");
        }
    }
    let svg = dir.path().join("att-svg");
    let out = run(&[
        "translate",
        "--model",
        m,
        "--attention",
        svg.to_str().unwrap(),
        "--attention-format",
        "svg",
        "3 march 1987",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(svg.join("0001.svg")).unwrap();
    assert!(text.starts_with("<svg"), "{text}");

    // stdin: one output line per input line, in order, empty lines included.
    let input = "3 march 1987\n\n1999/12/31\n3 march 1987\n";
    let mut child = bin()
        .args(["translate", "--model", m, "--batch-size", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], got[3]);
    assert_eq!(got[0], lines[0]);

    // Beam search with an n-best list: `index<TAB>score<TAB>text`, best first.
    let out = run(&[
        "translate",
        "--model",
        m,
        "--strategy",
        "beam",
        "--beam-size",
        "4",
        "--n-best",
        "3",
        "3 march 1987",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nbest: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    assert_eq!(nbest.len(), 3, "{nbest:?}");
    assert!(nbest.iter().all(|f| f.len() == 3 && f[0] == "0"));
    let scores: Vec<f64> = nbest.iter().map(|f| f[1].parse().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Sampling is reproducible for a seed.
    let sample = |seed: &str| {
        let o = bin()
            .args([
                "translate",
                "--model",
                m,
                "--strategy",
                "sample",
                "--temperature",
                "1.5",
                "--seed",
                seed,
            ])
            .args(["3 march 1987", "4 april 1988", "5 may 1989", "6 june 1990"])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(sample("7"), sample("7"));
    let out = run(&["translate", "--model", m, "--top-p", "1.5", "x"]);
    assert_clean_error(&out, "top_p: must be in (0, 1], got 1.5");

    // --device cpu is the default's choice on this CPU-only build: the same output.
    let on = |d: &str| run(&["translate", "--model", m, "--device", d, "3 march 1987"]).stdout;
    assert_eq!(on("cpu"), on("auto"));
    assert!(!on("cpu").is_empty());

    // score-model: forced decoding of given pairs, one line each in input order.
    let (src, tgt) = (dir.path().join("pairs.src"), dir.path().join("pairs.tgt"));
    std::fs::write(&src, "3 march 1987\n4 april 1988\n5 may 1989\n").unwrap();
    std::fs::write(&tgt, "1987-03-03\n1988-04-04\n1999-12-31\n").unwrap();
    let (src, tgt) = (src.to_str().unwrap(), tgt.to_str().unwrap());
    let out = run(&["score-model", "--model", m, "--src", src, "--tgt", tgt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r.len() == 3 && r[1] == "11"),
        "{rows:?}"
    );
    let lp = |r: &Vec<String>| r[0].parse::<f64>().unwrap();
    assert!(
        lp(&rows[2]) < lp(&rows[0]),
        "a wrong date scores lower: {rows:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 pairs, 33 target tokens"));
    let out = run(&[
        "score-model",
        "--model",
        m,
        "--src",
        src,
        "--tgt",
        tgt,
        "--json",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["line"].as_u64(), first["tokens"].as_u64()),
        (Some(1), Some(11))
    );
    let short = dir.path().join("short.tgt");
    std::fs::write(&short, "1987-03-03\n").unwrap();
    let out = run(&[
        "score-model",
        "--model",
        m,
        "--src",
        src,
        "--tgt",
        short.to_str().unwrap(),
    ]);
    assert_clean_error(&out, "has 3 lines but");

    // eval: decodes the model's own test split, writes the hypotheses, reports sacreBLEU-style
    // figures; JSON for machines.
    let out = run(&["eval", "--model", m, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["items"].as_u64().unwrap() as usize;
    assert!(items > 40, "{v}");
    let bleu = v["bleu"].as_f64().unwrap();
    assert!(
        (0.0..=100.0).contains(&bleu) && v["ppl"].as_f64().unwrap() >= 1.0,
        "{v}"
    );
    let hyp = std::fs::read_to_string(model.join("hyp.test.txt")).unwrap();
    assert_eq!(hyp.lines().count(), items);
    // Scoring the written hypotheses against themselves is a perfect score.
    let h = model.join("hyp.test.txt");
    let out = run(&[
        "score",
        "--ref",
        h.to_str().unwrap(),
        "--hyp",
        h.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        (v["bleu"]["score"].as_f64().unwrap() - 100.0).abs() < 1e-9,
        "{v}"
    );

    // --ensemble: the model with itself translates as the model alone (the list ends at `--`);
    // eval takes the resume checkpoint as a second member.
    let out = run(&[
        "translate",
        "--model",
        m,
        "--ensemble",
        m,
        "--",
        "3 march 1987",
        "december 25, 2001",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ensemble of 2 models"));
    let twice: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(twice, lines);
    let last = model.join("last.safetensors");
    let out = run(&[
        "eval",
        "--model",
        m,
        "--json",
        "--ensemble",
        last.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"].as_u64().unwrap() as usize, items);
    let out = run(&[
        "translate",
        "--model",
        m,
        "--ensemble",
        "no-such.safetensors",
        "--",
        "x",
    ]);
    assert_clean_error(&out, "no-such.safetensors: no such file");

    // bench prints every figure as JSON.
    let out = run(&[
        "bench",
        cfg.to_str().unwrap(),
        "--model",
        m,
        "--train-steps",
        "3",
        "--decode-sentences",
        "10",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "train_tokens_per_s",
        "peak_rss_mb",
        "flops_per_token",
        "matmul_gflops",
        "greedy_sent_per_s",
        "beam5_sent_per_s",
        "cold_start_ms",
        "process_cold_start_ms",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert!(v["process_cold_start_error"].is_null(), "{v}");
    // Three timed steps make no complete 20-step window after the first: no median.
    assert!(v["train_tokens_per_s_median"].is_null(), "{v}");
    // The step's time split: three positive shares that add up to the whole.
    let shares: Vec<f64> = ["forward", "backward", "clip_update"]
        .iter()
        .map(|k| v["phase_shares"][k].as_f64().unwrap())
        .collect();
    assert!(shares.iter().all(|s| *s > 0.0), "{v}");
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{v}");

    // --resume continues the same run; without it the directory is protected.
    let out = run(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        m,
        "--max-steps",
        "320",
        "--resume",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming at step 300"));
    let out = run(&["train", cfg.to_str().unwrap(), "--out", m]);
    assert_clean_error(&out, "--resume");
}

#[test]
fn user_errors_are_clean_messages() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("typo.yaml");
    std::fs::write(&cfg, "data:\n  format: dates\ntrain:\n  batch_sise: 3\n").unwrap();
    let out = run(&["train", cfg.to_str().unwrap()]);
    assert_clean_error(
        &out,
        "typo.yaml: line 4 column 3: unknown key `train.batch_sise` (did you mean `batch_size`?)",
    );

    let out = run(&["train", "no-such.yaml"]);
    assert_clean_error(&out, "no-such.yaml");

    // Devices: a GPU this CPU-only build cannot have is a clear error, a bad name lists them.
    let dates = dir.path().join("dates.yaml");
    std::fs::write(&dates, "data:\n  format: dates\n").unwrap();
    if !seq2seq::pipeline::device::has_cuda() {
        let out = run(&["train", dates.to_str().unwrap(), "--device", "cuda"]);
        assert_clean_error(&out, "cuda:0: this seq2seq was built without CUDA");
        let gpu = dir.path().join("gpu.yaml");
        std::fs::write(&gpu, "device: cuda:1\ndata:\n  format: dates\n").unwrap();
        let out = run(&["train", gpu.to_str().unwrap()]);
        assert_clean_error(&out, "cuda:1: this seq2seq was built without CUDA");
        assert!(!Path::new("runs/gpu").exists(), "nothing is written");
    }
    let out = run(&["train", dates.to_str().unwrap(), "--device", "tpu"]);
    assert_clean_error(&out, "expected cpu, cuda, cuda:N or auto");
    let bad = dir.path().join("tpu.yaml");
    std::fs::write(&bad, "data:\n  format: dates\ndevice: tpu\n").unwrap();
    let out = run(&["train", bad.to_str().unwrap()]);
    assert_clean_error(&out, "line 3");

    let out = run(&["translate", "--model", dir.path().to_str().unwrap(), "x"]);
    assert_clean_error(&out, "config.yaml is missing");

    let cfg = dir.path().join("m30k.yaml");
    std::fs::write(&cfg, "data: {root: multi30k, src_lang: en, tgt_lang: de}\n").unwrap();
    let out = bin()
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--out",
        ])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert_clean_error(
        &out,
        &format!(
            "{}",
            Path::new(dir.path()).join("multi30k/train.en").display()
        ),
    );
}

#[test]
fn generate_from_a_tiny_language_model() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..200)
        .map(|i| format!("item {} is {}\n", i % 7, ["red", "blue", "green"][i % 3]))
        .collect();
    std::fs::write(dir.path().join("items.txt"), lines).unwrap();
    let cfg = dir.path().join("lm.yaml");
    std::fs::write(
        &cfg,
        "task: generation
data: {format: lines, root: ., file: items.txt, valid_size: 20, test_size: 0, tgt_vocab: {level: word}}
model:
  decoder: {cell: gru, embedding_dim: 16, hidden_size: 32, attention: none, bridge: zero}
train: {batch_size: 16, learning_rate: 0.01, max_steps: 60, valid_every: 30}
decoding: {strategy: sample, temperature: 0.8, max_length: 10}
",
    )
    .unwrap();
    let model = dir.path().join("m");
    let out = run(&[
        "train",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = model.to_str().unwrap();
    let out = run(&[
        "generate", "--model", m, "--prompt", "item", "--num", "4", "--seed", "3", "--stats",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(samples.len(), 4);
    assert!(samples.iter().all(|s| s.starts_with("item")), "{samples:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("distinct-2:"));
    // Greedy, with prompts from stdin: one line per prompt, deterministic.
    let greedy_from_stdin = || {
        let mut child = bin()
            .args([
                "generate",
                "--model",
                m,
                "--strategy",
                "greedy",
                "--max-tokens",
                "6",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"item 3\nitem 5 is\n")
            .unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    let a = greedy_from_stdin();
    assert_eq!(a.lines().count(), 2);
    assert_eq!(a, greedy_from_stdin());
    // A translation subcommand on a language model is a clean error.
    let out = run(&["translate", "--model", m, "x"]);
    assert_clean_error(&out, "use `seq2seq generate`");
}

#[test]
fn score_matches_sacrebleu_and_reports_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let hyp = w(
        "h.txt",
        b"The cat is on the mat.\nThere is a dog in the garden.\nHe read the book quickly\n",
    );
    let r1 = w(
        "r1.txt",
        b"The cat sits on the mat.\nA dog is in the garden.\nHe quickly read the book.\n",
    );
    let r2 = w(
        "r2.txt",
        b"There is a cat on the mat.\nThere is a dog in the garden.\nHe read the book fast.\n",
    );
    // sacrebleu r1.txt r2.txt -i h.txt -m bleu chrf  (sacreBLEU 2.6.0): BLEU 74.40, chrF2 81.38
    let out = run(&["score", "--ref", &r1, "--ref", &r2, "--hyp", &hyp]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BLEU|nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 74.40 "),
        "{text}"
    );
    assert!(
        text.contains("chrF2|nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 81.38"),
        "{text}"
    );
    // stdin hypotheses
    let mut child = bin()
        .args(["score", "--ref", &r1, "--metrics", "bleu", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&hyp).unwrap())
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert!(v["bleu"]["score"].as_f64().unwrap() > 0.0);

    let short = w("short.txt", b"one line\n");
    let out = run(&["score", "--ref", &short, "--hyp", &hyp]);
    assert_clean_error(&out, "short.txt has 1 lines but");
    assert_clean_error(&out, "h.txt has 3");
    let empty = w("empty.txt", b"");
    let out = run(&["score", "--ref", &r1, "--hyp", &empty]);
    assert_clean_error(&out, "empty.txt is empty");
    let bad = w("bad.txt", b"fine\nbro\xffken\nfine\n");
    let out = run(&["score", "--ref", &bad, "--hyp", &hyp]);
    assert_clean_error(&out, "bad.txt:2: invalid UTF-8");
    let out = run(&["score", "--ref", &r1, "--hyp", &hyp, "--metrics", "meteor"]);
    assert_clean_error(&out, "unknown metric `meteor`");
}
