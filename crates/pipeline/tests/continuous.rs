//! The server's continuous batch of a translator: lines that join a running greedy search at
//! different steps translate exactly as `translate_detailed` translates each alone.

mod common;

use std::collections::HashMap;

use common::small_model;

use seq2seq_decoder::Strategy;
use seq2seq_pipeline::{train, Config, TrainOptions, Translator};

#[test]
fn lines_joining_a_running_batch_translate_as_they_do_alone() {
    let dir = std::env::temp_dir().join(format!("s2s-continuous-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = Config::from_yaml(
        "seed: 2\ndata: {format: dates, train_size: 200, valid_size: 10, test_size: 10, max_src_len: 40, max_tgt_len: 12, src_vocab: {level: char}, tgt_vocab: {level: char}}",
    )
    .unwrap();
    small_model(&mut c);
    c.train.max_steps = 40;
    c.train.valid_every = 1000;
    c.train.learning_rate = 0.01;
    c.decoding.max_length = 14;
    let opts = TrainOptions {
        data_dir: dir.clone(),
        out: dir.join("run"),
        ..Default::default()
    };
    train(c, &opts, &mut ()).unwrap();
    let t = Translator::load(&dir.join("run")).unwrap();
    let lines: Vec<String> = [
        "3 march 1987",
        "tuesday, july 4, 1989",
        "",
        "the 21st of december 2001",
        "12/01/99",
        "sunday, 1 january 2023, at noon, more or less",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut d = t.config.decoding.clone();
    d.strategy = Strategy::Greedy;
    let alone: Vec<_> = lines
        .iter()
        .map(|l| t.translate_detailed(std::slice::from_ref(l), &d).unwrap().0[0][0].clone())
        .collect();
    let mut run = t.continuous(&d).unwrap().expect("greedy, one model");
    let mut got = HashMap::new();
    let joins: [(usize, &[usize]); 3] = [(0, &[0, 1]), (2, &[2, 3, 4]), (3, &[5])];
    let mut step = 0;
    while got.len() < lines.len() {
        for (at, rows) in joins {
            if at == step {
                let texts: Vec<String> = rows.iter().map(|&r| lines[r].clone()).collect();
                let ids: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
                run.admit(&texts, &ids).unwrap();
            }
        }
        for (id, tr) in run.step().unwrap() {
            got.insert(id, tr);
        }
        step += 1;
        assert!(step < 100);
    }
    for (i, want) in alone.iter().enumerate() {
        let tr = &got[&(i as u64)];
        assert_eq!(tr.text, want.text, "line {i}");
        assert_eq!(tr.tokens, want.tokens, "line {i}");
        assert_eq!(tr.source_tokens, want.source_tokens, "line {i}");
        assert!((tr.score - want.score).abs() < 1e-4, "line {i}");
    }
    // Where it does not apply, there is no continuous batch.
    d.strategy = Strategy::Beam;
    assert!(t.continuous(&d).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
