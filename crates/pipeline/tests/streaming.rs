//! Training on a streamed corpus (`data.streaming`): exact resume from the stream position, the
//! same run as a whole-corpus one when the corpus fits one buffer, and the config's rules.

use std::path::{Path, PathBuf};

mod common;

use common::{assert_same_weights, small_model, weights, Lines};
use seq2seq_data::synthetic;
use seq2seq_pipeline::{model_dir, train, Config, TrainOptions};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s2s-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The date corpus as a parallel corpus `dates/{train,val,test}.{src,tgt}`.
fn write_dates(dir: &Path, n: usize) {
    let c = dir.join("dates");
    std::fs::create_dir_all(&c).unwrap();
    for (split, n, seed) in [("train", n, 1), ("val", 12, 2), ("test", 12, 3)] {
        let pairs = synthetic::dates(n, seed);
        let src: String = pairs.iter().map(|p| format!("{}\n", p.src)).collect();
        let tgt: String = pairs.iter().map(|p| format!("{}\n", p.tgt)).collect();
        std::fs::write(c.join(format!("{split}.src")), src).unwrap();
        std::fs::write(c.join(format!("{split}.tgt")), tgt).unwrap();
    }
}

fn cfg(streaming: bool, buffer: usize, max_steps: usize) -> Config {
    let mut c = Config::from_yaml(&format!(
        "seed: 5\ndata: {{format: parallel, root: dates, valid: val, streaming: {streaming}, shuffle_buffer: {buffer}, max_src_len: 40, max_tgt_len: 12, src_vocab: {{level: char}}, tgt_vocab: {{level: char}}}}\ntrain: {{max_steps: {max_steps}}}"
    ))
    .unwrap();
    small_model(&mut c);
    c.model.decoder.hidden_dropout = 0.2;
    c.train.batch_size = 8;
    c.train.learning_rate = 0.01;
    c.train.valid_every = 9;
    c.train.log_every = 1000;
    c.train.patience = 0;
    c.train.max_steps = max_steps;
    c.decoding.max_length = 12;
    c.validate().unwrap();
    c
}

fn opts(out: &Path, data: &Path) -> TrainOptions {
    TrainOptions {
        data_dir: data.to_path_buf(),
        out: out.to_path_buf(),
        ..Default::default()
    }
}

#[test]
fn a_streamed_run_resumes_bit_exactly_from_its_stream_position() {
    let dir = tmp("resume");
    // 150 pairs in buffers of 37: five buffers an epoch (the last of 2 pairs), batches of 8;
    // 44 steps cross two epoch ends, and the stop at step 17 is inside a buffer.
    write_dates(&dir, 150);
    let full = dir.join("full");
    let s = train(cfg(true, 37, 44), &opts(&full, &dir), &mut ()).unwrap();
    assert_eq!(s.steps, 44);
    let state = model_dir::load_state(&full).unwrap();
    assert!(state.epoch >= 2, "{state:?}");
    let half = dir.join("half");
    let mut o = opts(&half, &dir);
    o.max_steps = Some(17);
    train(cfg(true, 37, 44), &o, &mut ()).unwrap();
    let mid = model_dir::load_state(&half).unwrap();
    let at = mid.stream.expect("the stream position is saved");
    assert!(
        at.buffer >= 1 && at.start.item > 0 && mid.batch_in_epoch > 0,
        "{mid:?}"
    );
    let mut o = opts(&half, &dir);
    o.resume = true;
    assert_eq!(train(cfg(true, 37, 44), &o, &mut ()).unwrap().steps, 44);
    assert_same_weights(&full, &half);
    assert_eq!(state, {
        let mut s = model_dir::load_state(&half).unwrap();
        s.elapsed_s = state.elapsed_s;
        s
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corpus_within_one_buffer_trains_as_if_read_whole() {
    let dir = tmp("whole");
    write_dates(&dir, 60);
    let (streamed, whole) = (dir.join("streamed"), dir.join("whole"));
    train(cfg(true, 1000, 20), &opts(&streamed, &dir), &mut ()).unwrap();
    train(cfg(false, 1000, 20), &opts(&whole, &dir), &mut ()).unwrap();
    assert_same_weights(&streamed, &whole);
    for f in [model_dir::SRC_TOKENIZER, model_dir::TGT_TOKENIZER] {
        assert_eq!(
            std::fs::read_to_string(streamed.join(f)).unwrap(),
            std::fs::read_to_string(whole.join(f)).unwrap(),
            "{f}: the vocabulary learned from the stream differs"
        );
    }
    // One vocabulary for both sides, learned from the stream in one pass over both.
    let joint = |streaming: bool| {
        let mut c = cfg(streaming, 1000, 2);
        c.data.joint_vocab = true;
        c
    };
    let (js, jw) = (dir.join("joint-streamed"), dir.join("joint-whole"));
    train(joint(true), &opts(&js, &dir), &mut ()).unwrap();
    train(joint(false), &opts(&jw, &dir), &mut ()).unwrap();
    assert_same_weights(&js, &jw);
    let read = |d: &Path| std::fs::read_to_string(d.join(model_dir::SRC_TOKENIZER)).unwrap();
    assert_eq!(read(&js), read(&jw));
    assert_ne!(
        read(&js),
        read(&whole),
        "the joint vocabulary has both sides' characters"
    );
    // A buffer smaller than the corpus shuffles within buffers: another run, still training.
    let small = dir.join("small");
    let s = train(cfg(true, 16, 20), &opts(&small, &dir), &mut ()).unwrap();
    assert_eq!(s.steps, 20);
    assert_ne!(weights(&small), weights(&whole));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_streamed_tsv_corpus_holds_out_the_items_that_training_skips_and_eval_scores() {
    let dir = tmp("tsv");
    let pairs = synthetic::dates(80, 9);
    let tsv: String = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{}\t{}\n{}",
                p.src,
                p.tgt,
                if i % 10 == 0 { "\n" } else { "" }
            )
        })
        .collect();
    std::fs::create_dir_all(dir.join("tsv")).unwrap();
    std::fs::write(dir.join("tsv/pairs.tsv"), tsv).unwrap();
    let mut c = cfg(true, 25, 12);
    c.data.format = seq2seq_pipeline::config::DataFormat::Tsv;
    c.data.root = "tsv".into();
    c.data.file = "pairs.tsv".into();
    c.data.valid_size = 7;
    c.data.test_size = 5;
    let out = dir.join("run");
    let mut lines = Vec::new();
    let s = train(c.clone(), &opts(&out, &dir), &mut Lines(&mut lines)).unwrap();
    assert_eq!(s.steps, 12);
    let held = s.held_out.expect("a test split is evaluated");
    assert_eq!((held.split, held.items), ("test", 5));
    // `eval` scores the test items training held out, not another draw that overlaps training.
    let t = seq2seq_pipeline::Translator::load(&out).unwrap();
    let report =
        seq2seq_pipeline::evaluate(&t, seq2seq_pipeline::Split::Test, &dir, &t.config.decoding)
            .unwrap();
    assert_eq!(report.items, 5);
    assert!(
        (report.loss - held.loss).abs() < 1e-4,
        "{} vs {}",
        report.loss,
        held.loss
    );
    assert!(
        lines.iter().any(
            |l| l.contains("pairs.tsv in buffers of 25 (data.shuffle_buffer), 7 valid, 5 test")
        ),
        "{lines:?}"
    );
    // Too few items for the held-out sets: refused, naming the keys.
    c.data.valid_size = 70;
    c.data.test_size = 10;
    let e = train(c, &opts(&dir.join("few"), &dir), &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("80 items") && e.contains("data.valid_size"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn streaming_is_refused_where_it_cannot_apply() {
    let base = "data: {format: text, file: t.txt, streaming: true, shuffle_buffer: 0}\ntrain: {max_steps: 0}\ntask: generation";
    let e = Config::from_yaml(base).unwrap_err().to_string();
    assert!(
        e.contains("data.streaming: streams the formats parallel, tsv and lines; data.format text"),
        "{e}"
    );
    assert!(e.contains("data.shuffle_buffer: must be at least 1"), "{e}");
    assert!(
        e.contains("train.max_steps: a streamed epoch's length is not known"),
        "{e}"
    );
    // A corpus whose every item the length limits drop is an error, not an endless loop.
    let dir = tmp("empty");
    write_dates(&dir, 30);
    let mut c = cfg(true, 10, 5);
    c.data.max_tgt_len = 2;
    let e = train(c, &opts(&dir.join("run"), &dir), &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the training set is empty after filtering"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
