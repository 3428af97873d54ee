//! Training end to end on tiny data: overfitting, exact resume, and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_same_weights, weights, Lines};

use seq2seq_decoder::Strategy;
use seq2seq_pipeline::config::{DecodingConfig, EarlyStopMetric};
use seq2seq_pipeline::{evaluate, model_dir, train, Config, Split, TrainOptions, Translator};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s2s-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny model on the data section `data_yaml`, then `edit` for the test's own settings.
fn tiny_with(data_yaml: &str, edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::from_yaml(&format!("seed: 3\n{data_yaml}")).unwrap();
    c.model.encoder.embedding_dim = 16;
    c.model.encoder.hidden_size = 16;
    c.model.decoder.embedding_dim = 16;
    c.model.decoder.hidden_size = 32;
    c.model.decoder.attention_dim = 16;
    c.train.batch_size = 8;
    c.train.learning_rate = 0.01;
    c.train.valid_every = 1000;
    c.train.log_every = 1000;
    c.train.patience = 0;
    c.decoding.max_length = 20;
    edit(&mut c);
    c.validate().unwrap();
    c
}

fn tiny(data_yaml: &str) -> Config {
    tiny_with(data_yaml, |_| {})
}

fn opts(out: &Path, data: &Path) -> TrainOptions {
    TrainOptions {
        data_dir: data.to_path_buf(),
        out: out.to_path_buf(),
        ..Default::default()
    }
}

const PAIRS: [(&str, &str); 6] = [
    ("a man rides a horse .", "ein mann reitet ein pferd ."),
    ("two dogs play .", "zwei hunde spielen ."),
    ("a woman sings .", "eine frau singt ."),
    ("a child runs .", "ein kind rennt ."),
    ("the man sleeps .", "der mann schläft ."),
    ("two women walk .", "zwei frauen gehen ."),
];

fn write_corpus(dir: &Path) {
    let c = dir.join("toy");
    std::fs::create_dir_all(&c).unwrap();
    let src: String = PAIRS.iter().map(|p| format!("{}\n", p.0)).collect();
    let tgt: String = PAIRS.iter().map(|p| format!("{}\n", p.1)).collect();
    for split in ["train", "val", "test"] {
        std::fs::write(c.join(format!("{split}.en")), &src).unwrap();
        std::fs::write(c.join(format!("{split}.de")), &tgt).unwrap();
    }
}

const PARALLEL: &str =
    "data: {format: parallel, root: toy, src_lang: en, tgt_lang: de, valid: val, test: test}";

#[test]
fn tiny_model_overfits_a_handful_of_pairs() {
    let dir = tmp("overfit");
    write_corpus(&dir);
    let cfg = tiny_with(PARALLEL, |c| {
        c.train.batch_size = 6;
        c.train.max_steps = 150;
        c.train.max_epochs = 0;
        c.train.valid_every = 50;
    });
    let s = train(cfg, &opts(&dir.join("run"), &dir), &mut ()).unwrap();
    assert_eq!(s.steps, 150);
    assert!(
        s.best_score.unwrap() < 0.05,
        "validation loss {:?}",
        s.best_score
    );
    assert_eq!(s.exact_match(), Some(1.0));
    let t = Translator::load(&dir.join("run")).unwrap();
    let lines: Vec<String> = PAIRS.iter().rev().map(|p| p.0.to_string()).collect();
    let (outs, warnings) = t.translate(&lines, &t.config.decoding).unwrap();
    // Word-level output comes back as text: no space before the full stop.
    let want: Vec<String> = PAIRS.iter().rev().map(|p| p.1.replace(" .", ".")).collect();
    assert_eq!(outs, want);
    assert!(warnings.is_empty());
    // An over-long line is truncated with a warning, not refused.
    let long = vec!["a ".repeat(80)];
    let (_, warnings) = t.translate(&long, &t.config.decoding).unwrap();
    assert!(
        warnings[0].contains("line 1") && warnings[0].contains("truncated"),
        "{warnings:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_gives_the_same_weights_as_one_run() {
    let dir = tmp("resume");
    // Dropout on, several epochs, validation and lr decay inside the window: all must replay.
    let data = "data: {format: dates, train_size: 60, valid_size: 10, test_size: 10, max_src_len: 40, max_tgt_len: 12, src_vocab: {level: char}, tgt_vocab: {level: char}}";
    let cfg = || {
        tiny_with(data, |c| {
            c.model.encoder.emb_dropout = 0.2;
            c.model.decoder.hidden_dropout = 0.3;
            c.model.decoder.input_feeding = true;
            c.model.decoder.cell = seq2seq_pipeline::config::Cell::Lstm;
            c.train.batch_size = 16;
            c.train.valid_every = 3;
            c.train.lr_patience = 1;
            c.train.max_steps = 14;
            c.train.keep_checkpoints = 2;
        })
    };
    let full = dir.join("full");
    train(cfg(), &opts(&full, &dir), &mut ()).unwrap();
    // Validations at steps 3, 6, 9, 12: the last two are kept, and they average into a model.
    let mut kept: Vec<String> = std::fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-step"))
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "checkpoint-step12.safetensors",
            "checkpoint-step9.safetensors"
        ]
    );
    let avg = dir.join("avg");
    let n = seq2seq_pipeline::model_dir::average(
        &[
            full.join("checkpoint-step9.safetensors"),
            full.join("checkpoint-step12.safetensors"),
        ],
        &avg,
    )
    .unwrap();
    assert!(n > 0);
    assert!(avg.join(model_dir::CONFIG).exists() && avg.join(model_dir::BEST).exists());
    let half = dir.join("half");
    let mut o = opts(&half, &dir);
    o.max_steps = Some(7);
    train(cfg(), &o, &mut ()).unwrap();
    assert_eq!(model_dir::load_state(&half).unwrap().step, 7);
    let mut o = opts(&half, &dir);
    o.resume = true;
    let s = train(cfg(), &o, &mut ()).unwrap();
    assert_eq!(s.steps, 14);
    assert_same_weights(&full, &half);
    assert_eq!(model_dir::load_state(&full).unwrap(), {
        let mut s = model_dir::load_state(&half).unwrap();
        s.elapsed_s = model_dir::load_state(&full).unwrap().elapsed_s;
        s
    });
    // A second run into the same directory without --resume is refused, not clobbered.
    let e = train(cfg(), &opts(&full, &dir), &mut ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    // A run stopped by its time budget goes on when resumed with a larger one (--max-time-s).
    let timed = dir.join("timed");
    let mut o = opts(&timed, &dir);
    o.max_time_s = Some(1e-9);
    assert_eq!(train(cfg(), &o, &mut ()).unwrap().steps, 1);
    let mut o = opts(&timed, &dir);
    o.resume = true;
    o.max_time_s = Some(1e-9);
    assert_eq!(
        train(cfg(), &o, &mut ()).unwrap().steps,
        1,
        "a spent budget trains nothing more"
    );
    o.max_time_s = Some(0.0);
    assert_eq!(train(cfg(), &o, &mut ()).unwrap().steps, 14);
    o.max_time_s = Some(f64::NAN);
    let e = train(cfg(), &o, &mut ()).unwrap_err().to_string();
    assert!(e.contains("--max-time-s"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_corpora_are_reported_with_file_and_line() {
    let dir = tmp("bad");
    write_corpus(&dir);
    let run = |extra: &str| {
        train(tiny(extra), &opts(&dir.join("run-x"), &dir), &mut ())
            .unwrap_err()
            .to_string()
    };
    // missing file
    let e = run("data: {format: parallel, root: nowhere, src_lang: en, tgt_lang: de}");
    assert!(e.contains("nowhere/train.en"), "{e}");
    // different line counts
    std::fs::write(dir.join("toy/train.de"), "eins\n").unwrap();
    let e = run(PARALLEL);
    assert!(
        e.contains("train.en has 6 lines") && e.contains("train.de has 1"),
        "{e}"
    );
    // invalid UTF-8
    std::fs::write(dir.join("toy/train.de"), b"a\nb\nc\nd\n\xc3\x28\nf\n").unwrap();
    let e = run(PARALLEL);
    assert!(e.contains("train.de:5: invalid UTF-8"), "{e}");
    // empty after filtering
    write_corpus(&dir);
    let e = run("data: {format: parallel, root: toy, src_lang: en, tgt_lang: de, valid: val, test: test, max_src_len: 2}");
    assert!(e.contains("empty") && e.contains("max_src_len=2"), "{e}");
    // empty corpus
    std::fs::write(dir.join("toy/train.en"), "").unwrap();
    std::fs::write(dir.join("toy/train.de"), "").unwrap();
    let e = run(PARALLEL);
    assert!(e.contains("training corpus is empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn broken_model_directories_are_named() {
    let dir = tmp("modeldir");
    write_corpus(&dir);
    let run = dir.join("run");
    train(
        tiny_with(PARALLEL, |c| c.train.max_steps = 2),
        &opts(&run, &dir),
        &mut (),
    )
    .unwrap();
    assert!(Translator::load(&run).is_ok());
    let err = |d: &Path| Translator::load(d).err().unwrap().to_string();
    let e = err(&dir.join("absent"));
    assert!(
        e.contains("absent") && e.contains("not a model directory"),
        "{e}"
    );
    let e = err(&run.join("checkpoint-step9.safetensors"));
    assert!(
        e.contains("checkpoint-step9.safetensors: not a model directory"),
        "{e}"
    );
    std::fs::write(run.join(model_dir::BEST), b"garbage").unwrap();
    let e = err(&run);
    assert!(e.contains("model.safetensors is corrupt"), "{e}");
    // An empty file maps to nothing: still an error naming the file, not a panic.
    std::fs::write(run.join(model_dir::BEST), b"").unwrap();
    let e = err(&run);
    assert!(e.contains("model.safetensors is corrupt"), "{e}");
    std::fs::remove_file(run.join(model_dir::TGT_TOKENIZER)).unwrap();
    let e = err(&run);
    assert!(e.contains("tgt_tokenizer.json is missing"), "{e}");
    std::fs::write(run.join(model_dir::CONFIG), "model: {encoder: {hiden: 1}}").unwrap();
    let e = err(&run);
    assert!(
        e.contains("config.yaml") && e.contains("hidden_size"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoint_ensembles_decode_and_score_as_a_mixture() {
    let dir = tmp("ensemble");
    write_corpus(&dir);
    let run = dir.join("run");
    let cfg = tiny_with(PARALLEL, |c| {
        c.train.batch_size = 6;
        c.train.max_steps = 60;
        c.train.max_epochs = 0;
        c.train.valid_every = 20;
        c.train.keep_checkpoints = 3;
    });
    train(cfg, &opts(&run, &dir), &mut ()).unwrap();
    let eval = |t: &Translator| {
        seq2seq_pipeline::evaluate(t, seq2seq_pipeline::Split::Test, &dir, &t.config.decoding)
            .unwrap()
    };
    let single = Translator::load(&run).unwrap();
    let alone = eval(&single);

    // A model ensembled with itself is the model: same outputs, same loss.
    let mut twice = Translator::load(&run).unwrap();
    twice.add_members(std::slice::from_ref(&run)).unwrap();
    assert_eq!(twice.members().len(), 2);
    let r = eval(&twice);
    assert_eq!(r.hypotheses, alone.hypotheses);
    assert!(
        (r.loss - alone.loss).abs() < 1e-5,
        "{} vs {}",
        r.loss,
        alone.loss
    );

    // The first validation's weights (step 20) are a different model. The mixture's loss is
    // below the mean of the members' losses (-log is strictly convex); a geometric mean of the
    // distributions would give exactly the mean.
    let early = run.join("checkpoint-step20.safetensors");
    assert!(early.exists());
    // The early checkpoint alone: loaded as a member, then made the only model.
    let mut first = Translator::load(&run).unwrap();
    first.add_members(std::slice::from_ref(&early)).unwrap();
    first.model = first.ensemble.pop().unwrap();
    let loss_early = eval(&first).loss;
    // The same checkpoint given in place of the model directory is the same model; a resume
    // checkpoint (`last.safetensors`, with optimizer moments) loads as its weights alone.
    assert_eq!(
        eval(&Translator::load(&early).unwrap()).loss.to_bits(),
        loss_early.to_bits()
    );
    assert!(Translator::load(&run.join("last.safetensors")).is_ok());
    let mut pair = Translator::load(&run).unwrap();
    pair.add_members(std::slice::from_ref(&early)).unwrap();
    let mixed = eval(&pair);
    let mean = (alone.loss + loss_early) / 2.0;
    assert!(
        (loss_early - alone.loss).abs() > 1e-3 && mixed.loss < mean - 1e-4,
        "mixture {} vs members {} and {}",
        mixed.loss,
        alone.loss,
        loss_early
    );
    assert_eq!(mixed.hypotheses.len(), PAIRS.len());

    // Members that cannot join are named.
    let mut t = Translator::load(&run).unwrap();
    let e = t
        .add_members(&[dir.join("absent.safetensors")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.safetensors: no such file"), "{e}");
    let other = dir.join("other");
    train(
        tiny_with(PARALLEL, |c| {
            c.model.decoder.hidden_size = 24;
            c.train.max_steps = 1;
        }),
        &opts(&other, &dir),
        &mut (),
    )
    .unwrap();
    let e = t
        .add_members(&[other.join(model_dir::BEST)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ensemble member") && e.contains("same config"),
        "{e}"
    );
    // As a directory it may join: same data, so the same vocabularies.
    t.add_members(std::slice::from_ref(&other)).unwrap();
    // Same size, one token spelled differently.
    let tok = std::fs::read_to_string(other.join(model_dir::TGT_TOKENIZER)).unwrap();
    assert!(tok.contains("\"mann\""));
    std::fs::write(
        other.join(model_dir::TGT_TOKENIZER),
        tok.replace("\"mann\"", "\"maNN\""),
    )
    .unwrap();
    let e = t.add_members(&[other]).unwrap_err().to_string();
    assert!(e.contains("tgt_tokenizer.json differs"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Trains a small LSTM language model on `text` repeated 60 times as `dir/book/book.txt`;
/// `data` holds the data section's keys beyond the file's (window, vocabulary, …).
fn train_book_lm(
    dir: &Path,
    text: &str,
    data: &str,
    max_length: usize,
) -> seq2seq_pipeline::TrainSummary {
    std::fs::create_dir_all(dir.join("book")).unwrap();
    std::fs::write(dir.join("book/book.txt"), text.repeat(60)).unwrap();
    let cfg = Config::from_yaml(&format!(
        "task: generation
seed: 2
data: {{format: text, root: book, file: book.txt, valid_size: 4, test_size: 4, {data}}}
model:
  decoder: {{cell: lstm, embedding_dim: 16, hidden_size: 64, attention: none, bridge: zero}}
train: {{batch_size: 16, learning_rate: 0.01, max_steps: 250, max_epochs: 0, valid_every: 50, patience: 0}}
decoding: {{max_length: {max_length}}}
"
    ))
    .unwrap();
    train(cfg, &opts(&dir.join("run"), dir), &mut ()).unwrap()
}

#[test]
fn language_model_learns_a_text_and_continues_a_prompt() {
    let dir = tmp("lm");
    let text = "the quick brown fox jumps over the lazy dog.\n";
    let s = train_book_lm(&dir, text, "window: 30, tgt_vocab: {level: char}", 40);
    assert!(
        s.held_out.as_ref().unwrap().loss < 0.1,
        "held-out loss {:?}",
        s.held_out.as_ref().map(|h| h.loss)
    );
    assert!(!dir.join("run").join(model_dir::SRC_TOKENIZER).exists());
    let g = seq2seq_pipeline::Generator::load(&dir.join("run")).unwrap();
    let out = g.generate("the lazy ", 2, &g.config().decoding).unwrap();
    assert_eq!(out.len(), 2);
    assert!(
        out[0].text.starts_with("the lazy dog.\nthe quick brown"),
        "{:?}",
        out[0].text
    );
    // The translation entry point refuses a language model, naming the right command.
    let e = Translator::load(&dir.join("run"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("seq2seq generate"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A word-level model's output comes back as text: punctuation leans on its word, contractions
/// are joined, and a lowercased vocabulary gets its sentence starts back.
#[test]
fn word_level_generation_reads_as_text() {
    let dir = tmp("lm-word");
    let text = "The cat sat , and the dog ran . It ' s late .\n";
    let data = "window: 12, lowercase: true, tgt_vocab: {level: word}";
    train_book_lm(&dir, text, data, 12);
    let g = seq2seq_pipeline::Generator::load(&dir.join("run")).unwrap();
    let out = g.generate("the dog", 1, &g.config().decoding).unwrap();
    assert!(
        out[0]
            .text
            .starts_with("The dog ran. It's late. The cat sat, and"),
        "{:?}",
        out[0].text
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_records_are_held_out_whole_and_extra_columns_only_train() {
    let dir = tmp("csv");
    std::fs::create_dir_all(dir.join("news")).unwrap();
    // 40 articles: headline `h<i>`, description `d<i> , "quoted"`; a description is held out
    // exactly when its headline is.
    let csv: String = (0..40)
        .map(|i| format!("\"{}\",\"h{i}\",\"d{i} , \"\"quoted\"\"\"\n", i % 4 + 1))
        .collect();
    std::fs::write(dir.join("news/news.csv"), csv).unwrap();
    let cfg = Config::from_yaml(
        "task: generation
data: {format: csv, root: news, file: news.csv, tgt_column: 1, extra_train_columns: [2], valid_size: 6, test_size: 4, split_seed: 5}
model:
  decoder: {attention: none, bridge: zero}
",
    )
    .unwrap();
    cfg.validate().unwrap();
    let s = seq2seq_pipeline::tasks::text::load_splits(&cfg.data, &dir).unwrap();
    assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (60, 6, 4));
    let heads: Vec<&str> = s
        .train
        .iter()
        .map(|p| p.tgt.as_str())
        .filter(|t| t.starts_with('h'))
        .collect();
    assert_eq!(heads.len(), 30);
    for p in &s.train[30..] {
        assert!(
            p.tgt.starts_with('d') && p.tgt.ends_with(", \"quoted\""),
            "{:?}",
            p.tgt
        );
        let id = &p.tgt[1..p.tgt.find(' ').unwrap()];
        assert!(
            heads.contains(&format!("h{id}").as_str()),
            "description of a held-out article: {:?}",
            p.tgt
        );
    }
    for p in s.valid.iter().chain(&s.test) {
        assert!(
            p.tgt.starts_with('h') && !heads.contains(&p.tgt.as_str()),
            "{:?}",
            p.tgt
        );
    }
    // The same seed and record count hold out the same items as a `lines` file of the headlines.
    let lines: String = (0..40).map(|i| format!("h{i}\n")).collect();
    std::fs::write(dir.join("news/heads.txt"), lines).unwrap();
    let mut l = cfg.data.clone();
    l.format = seq2seq_pipeline::config::DataFormat::Lines;
    l.file = "heads.txt".into();
    let sl = seq2seq_pipeline::tasks::text::load_splits(&l, &dir).unwrap();
    assert_eq!(sl.valid, s.valid);
    assert_eq!(sl.test, s.test);
    // A record without the extra column is named with its line.
    std::fs::write(
        dir.join("news/news.csv"),
        "\"1\",\"a\",\"b\"\n\"2\",\"c\"\n",
    )
    .unwrap();
    let e = seq2seq_pipeline::tasks::text::load_splits(&cfg.data, &dir)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("news.csv:2: expected at least 3 comma-separated fields"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn captioning_resume_replays_augmentation_and_batch_norm() {
    let dir = tmp("caption-resume");
    // Flips, crop jitter, batch norm (running statistics are state too) and dropout.
    let cfg = || {
        let mut c = Config::from_yaml(
            "seed: 4
task: captioning
data: {format: shapes, train_size: 60, valid_size: 8, test_size: 8, image_size: 24, hflip: true, crop_jitter: 0.2}
model:
  image_encoder: {cnn: {channels: [4, 8], dropout: 0.1}}
  decoder: {embedding_dim: 8, hidden_size: 16, attention_dim: 8, hidden_dropout: 0.2}
train: {batch_size: 16, valid_every: 3, lr_patience: 1, max_steps: 10, log_every: 1000, patience: 0}
decoding: {max_length: 12}
",
        )
        .unwrap();
        c.train.learning_rate = 0.01;
        c
    };
    let full = dir.join("full");
    train(cfg(), &opts(&full, &dir), &mut ()).unwrap();
    let half = dir.join("half");
    let mut o = opts(&half, &dir);
    o.max_steps = Some(5);
    train(cfg(), &o, &mut ()).unwrap();
    let mut o = opts(&half, &dir);
    o.resume = true;
    assert_eq!(train(cfg(), &o, &mut ()).unwrap().steps, 10);
    assert!(weights(&full)
        .iter()
        .any(|(k, _)| k.ends_with("bn.running_mean")));
    assert_same_weights(&full, &half);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `train.valid_decoding` is what validation decodes with: its recorded BLEU is `evaluate`'s on
/// the valid split with the same (beam) options, for the checkpoint it validated.
#[test]
fn validation_decodes_with_valid_decoding() {
    let dir = tmp("valid-decoding");
    let beam = DecodingConfig {
        strategy: Strategy::Beam,
        beam_size: 4,
        max_length: 12,
        ..DecodingConfig::default()
    };
    let cfg = tiny_with(
        "data: {format: dates, train_size: 300, valid_size: 30, test_size: 10, src_vocab: {level: char}, tgt_vocab: {level: char}}",
        |c| {
            c.train.max_steps = 60;
            c.train.max_epochs = 0;
            c.train.valid_every = 60;
            c.train.early_stopping_metric = EarlyStopMetric::Bleu;
            c.train.valid_decoding = Some(beam.clone());
        },
    );
    train(cfg, &opts(&dir.join("run"), &dir), &mut ()).unwrap();
    let log = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let valid: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["kind"] == "valid")
        .unwrap();
    let t = Translator::load(&dir.join("run")).unwrap();
    let r = evaluate(&t, Split::Valid, &dir, &beam).unwrap();
    let recorded = valid["valid_bleu"].as_f64().unwrap();
    let bleu = if t.config.data.lowercase {
        r.bleu_lc.score
    } else {
        r.bleu.score
    };
    assert!(
        (bleu - recorded).abs() < 1e-9,
        "validation recorded BLEU {recorded}, beam evaluation {bleu}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Forced decoding (`score-model`) agrees with the held-out loss `eval` reports on the same
/// pairs, keeps the input order through its length-sorted batches, and prefers a pair's own
/// target to another's.
#[test]
fn forced_decoding_scores_pairs_in_order() {
    let dir = tmp("forced");
    write_corpus(&dir);
    let cfg = tiny_with(PARALLEL, |c| {
        c.train.batch_size = 6;
        c.train.max_steps = 120;
        c.train.max_epochs = 0;
        c.train.valid_every = 120;
    });
    train(cfg, &opts(&dir.join("run"), &dir), &mut ()).unwrap();
    let t = Translator::load(&dir.join("run")).unwrap();
    let srcs: Vec<String> = PAIRS.iter().map(|p| p.0.to_string()).collect();
    let tgts: Vec<String> = PAIRS.iter().map(|p| p.1.to_string()).collect();
    let (scores, warnings) = t.score_pairs(&srcs, &tgts, 4).unwrap();
    assert!(warnings.is_empty());
    let (lp, n) = scores
        .iter()
        .fold((0.0, 0), |(lp, n), s| (lp + s.log_prob, n + s.tokens));
    let report = evaluate(&t, Split::Test, &dir, &t.config.decoding).unwrap();
    assert!(
        (-lp / n as f64 - report.loss).abs() < 1e-5,
        "forced decoding {} nats/token, eval's loss {}",
        -lp / n as f64,
        report.loss
    );
    for (i, s) in scores.iter().enumerate() {
        let (alone, _) = t.score_pairs(&srcs[i..=i], &tgts[i..=i], 1).unwrap();
        assert!((alone[0].log_prob - s.log_prob).abs() < 1e-4, "pair {i}");
        assert_eq!(s.tokens, t.tgt_vocab.encode(&tgts[i]).unwrap().len() + 1);
        assert!((s.ppl - (-s.log_prob / s.tokens as f64).exp()).abs() < 1e-9);
        // Another pair's target is less likely for this source.
        let other = [tgts[(i + 1) % tgts.len()].clone()];
        let (wrong, _) = t.score_pairs(&srcs[i..=i], &other, 1).unwrap();
        assert!(wrong[0].log_prob < s.log_prob, "pair {i}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--init-from`: a new run starts from another model's weights, vocabularies and (from a resume
/// checkpoint) Adam moments; a config whose vocabularies or model would differ is refused,
/// naming what differs.
#[test]
fn a_run_starts_from_another_models_weights() {
    let dir = tmp("init-from");
    write_corpus(&dir);
    let base = |steps: usize| {
        tiny_with(PARALLEL, |c| {
            c.train.batch_size = 6;
            c.train.max_steps = steps;
            c.train.max_epochs = 0;
            c.train.valid_every = steps;
        })
    };
    let a = dir.join("a");
    let first = train(base(80), &opts(&a, &dir), &mut ()).unwrap();
    let a_loss = first.best_score.unwrap();
    // One step at a negligible rate: the new run's first validation is the old model's.
    let mut cfg = base(1);
    cfg.train.learning_rate = 1e-12;
    let b = dir.join("b");
    let o = TrainOptions {
        init_from: Some(a.clone()),
        ..opts(&b, &dir)
    };
    let second = train(cfg.clone(), &o, &mut ()).unwrap();
    let b_loss = second.best_score.unwrap();
    assert!((a_loss - b_loss).abs() < 1e-4, "{a_loss} then {b_loss}");
    for f in [model_dir::SRC_TOKENIZER, model_dir::TGT_TOKENIZER] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap()
        );
    }
    // A fresh model of the same config is far from it.
    let fresh = train(cfg.clone(), &opts(&dir.join("fresh"), &dir), &mut ()).unwrap();
    assert!(fresh.best_score.unwrap() > a_loss + 0.5);

    // From the resume checkpoint, its moments come too (unless reset).
    let with_moments = TrainOptions {
        init_from: Some(a.join(model_dir::LAST)),
        ..opts(&dir.join("c"), &dir)
    };
    let mut lines = Vec::new();
    train(cfg.clone(), &with_moments, &mut Lines(&mut lines)).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("weights and Adam moments")),
        "{lines:?}"
    );
    let reset = TrainOptions {
        init_from: Some(a.join(model_dir::LAST)),
        reset_optimizer: true,
        ..opts(&dir.join("d"), &dir)
    };
    lines.clear();
    train(cfg.clone(), &reset, &mut Lines(&mut lines)).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("fresh Adam moments")),
        "{lines:?}"
    );

    // Refusals name what differs.
    let mut other_vocab = cfg.clone();
    other_vocab.data.tgt_vocab.level = seq2seq_data::Level::Char;
    let e = train(
        other_vocab,
        &TrainOptions {
            init_from: Some(a.clone()),
            ..opts(&dir.join("e"), &dir)
        },
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--init-from") && e.contains("data.tgt_vocab.level"),
        "{e}"
    );
    let mut other_model = cfg.clone();
    other_model.model.decoder.hidden_size = 48;
    let e = train(
        other_model,
        &TrainOptions {
            init_from: Some(a.clone()),
            ..opts(&dir.join("f"), &dir)
        },
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("decoder.") && e.contains("in the config's model"),
        "{e}"
    );
    let e = train(
        cfg,
        &TrainOptions {
            init_from: Some(a.clone()),
            resume: true,
            ..opts(&b, &dir)
        },
        &mut (),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--resume"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `data.joint_vocab` + `model.tied_source_target`: one vocabulary for both sides, one embedding
/// matrix (saved once) that the decoder trains too.
/// `train.lr_multipliers` slows exactly the parameters it names: with the encoder's factor at
/// 1e-9 the encoder ends where a run at a negligible rate ends, while the decoder trains; a
/// prefix naming no parameter stops the run before it trains.
#[test]
fn lr_multipliers_slow_only_the_named_parameters() {
    let dir = tmp("lr-mult");
    write_corpus(&dir);
    let run = |name: &str, edit: &dyn Fn(&mut Config)| {
        let cfg = tiny_with(PARALLEL, |c| {
            c.train.max_steps = 20;
            c.train.max_epochs = 0;
            edit(c);
        });
        let mut lines = Vec::new();
        let r = train(cfg, &opts(&dir.join(name), &dir), &mut Lines(&mut lines));
        (r.map(|_| weights(&dir.join(name))), lines)
    };
    let factor = |prefix: &str, f: f64| {
        let prefix = prefix.to_string();
        move |c: &mut Config| {
            c.train.lr_multipliers = [(prefix.clone(), f)].into();
        }
    };
    let (slowed, lines) = run("slowed", &factor("encoder", 1e-9));
    let slowed = slowed.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("learning rate ×0.000000001")
                && l.contains("parameter tensors under encoder")),
        "{lines:?}"
    );
    let (still, _) = run("still", &|c: &mut Config| c.train.learning_rate = 1e-12);
    let still = still.unwrap();
    let (mut encoder, mut decoder) = (0, 0);
    for ((name, a), (_, b)) in slowed.iter().zip(&still) {
        let moved = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        if name.starts_with("encoder.") {
            assert!(moved < 1e-6, "{name} moved by {moved}");
            encoder += 1;
        } else if name.starts_with("decoder.") {
            decoder += usize::from(moved > 1e-3);
        }
    }
    assert!(
        encoder > 0 && decoder > 3,
        "{encoder} encoder tensors, {decoder} decoder tensors moved"
    );
    let (err, _) = run("typo", &factor("encoder.rnnn", 0.1));
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("train.lr_multipliers: `encoder.rnnn` names no trained parameter")
            && err.contains("encoder.rnn"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_joint_vocabulary_shares_one_embedding() {
    let dir = tmp("joint");
    write_corpus(&dir);
    let cfg = tiny_with(PARALLEL, |c| {
        c.data.joint_vocab = true;
        c.model.tied_source_target = true;
        c.model.decoder.embedding_dim = 16;
        c.train.batch_size = 6;
        c.train.max_steps = 40;
        c.train.max_epochs = 0;
        c.train.valid_every = 40;
    });
    let run = dir.join("run");
    train(cfg.clone(), &opts(&run, &dir), &mut ()).unwrap();
    assert_eq!(
        std::fs::read(run.join(model_dir::SRC_TOKENIZER)).unwrap(),
        std::fs::read(run.join(model_dir::TGT_TOKENIZER)).unwrap()
    );
    let dev = candle_core::Device::Cpu;
    let saved = model_dir::load_tensors(&run, model_dir::BEST, &dev).unwrap();
    assert!(saved.contains_key("encoder.embed.weight"));
    assert!(!saved.contains_key("decoder.embed.weight"), "saved once");
    let t = Translator::load(&run).unwrap();
    let (out, _) = t
        .translate(&["a man rides a horse .".to_string()], &t.config.decoding)
        .unwrap();
    assert_eq!(out.len(), 1);
    // A target-only word's row is trained through the decoder alone.
    let id = t.tgt_vocab.encode("pferd").unwrap()[0] as usize;
    assert_eq!(t.src_vocab.encode("pferd").unwrap()[0] as usize, id);
    let vm = seq2seq_nn::SeededVarMap::new(cfg.seed);
    let fresh = seq2seq_pipeline::model::build_model(
        &cfg.model,
        cfg.task,
        t.src_vocab.len(),
        t.tgt_vocab.len(),
        vm.var_builder(&dev),
        None,
    )
    .unwrap();
    drop(fresh);
    let init = vm.var_map().data().lock().unwrap()["encoder.embed.weight"]
        .as_tensor()
        .get(id)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let trained = saved["encoder.embed.weight"]
        .get(id)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(
        init, trained,
        "the shared row of a target-only word did not move"
    );
    assert!(!vm
        .var_map()
        .data()
        .lock()
        .unwrap()
        .contains_key("decoder.embed.weight"));
    // Refused where it cannot hold.
    let mut bad = cfg.clone();
    bad.model.decoder.embedding_dim = 8;
    bad.data.src_vocab.min_freq = 3;
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("model.tied_source_target") && e.contains("data.src_vocab"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
