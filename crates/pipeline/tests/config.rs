//! Config parsing and every bad-input case: each error names the file, line or key.

use seq2seq_pipeline::Config;

#[test]
fn reference_config_documents_exactly_the_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/reference.yaml"
    ))
    .unwrap();
    let parsed: Config = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(parsed, Config::default());
}

/// Every config in `configs/` (reference.yaml has its own test) parses, validates and warns
/// about nothing; a new file is covered without being listed.
#[test]
fn shipped_configs_parse_and_validate() {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.extension().is_some_and(|e| e == "yaml") && name != "reference" {
            let c = Config::from_file(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.warnings(), Vec::<String>::new(), "{name}");
            names.push(name);
        }
    }
    for shipped in [
        "quickstart",
        "multi30k-en-de",
        "multi30k-en-de-enc2",
        "flickr8k-lite0",
    ] {
        assert!(
            names.iter().any(|n| n == shipped),
            "{shipped} not found in {names:?}"
        );
    }
}

#[test]
fn dropout_between_layers_of_a_one_layer_stack_is_reported() {
    let mut c = Config::default();
    c.model.decoder.dropout = 0.5;
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("model.decoder.dropout: 0.5 has no effect"),
        "{}",
        w[0]
    );
    c.model.decoder.num_layers = 2;
    assert!(c.warnings().is_empty());
    c.model.encoder.dropout = 0.3;
    assert!(c.warnings()[0].starts_with("model.encoder.dropout"));
}

#[test]
fn resolved_config_round_trips() {
    let mut c = Config::default();
    c.data.root = "x".into();
    c.model.decoder.attention = seq2seq_pipeline::config::AttentionType::Luong;
    let back = Config::from_yaml(&c.to_yaml()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn resolved_config_holds_only_the_tasks_model_sections() {
    use seq2seq_pipeline::config::DataFormat;
    use seq2seq_pipeline::config::Task;
    for (task, format, text, image) in [
        (Task::Translation, DataFormat::Parallel, true, false),
        (Task::Generation, DataFormat::Text, false, false),
        (Task::Captioning, DataFormat::Shapes, false, true),
    ] {
        let mut c = Config {
            task,
            ..Config::default()
        };
        c.data.root = "x".into();
        c.data.format = format;
        c.data.file = "x.txt".into();
        let yaml = c.to_yaml();
        let has = |key: &str| yaml.lines().any(|l| l.trim_start() == key);
        assert_eq!(has("encoder:"), text, "{task:?}:\n{yaml}");
        assert_eq!(has("image_encoder:"), image, "{task:?}:\n{yaml}");
        assert!(has("decoder:"), "{task:?}");
        assert_eq!(Config::from_yaml(&yaml).unwrap(), c, "{task:?}");
    }
}

fn err(yaml: &str) -> String {
    Config::from_yaml(yaml).unwrap_err().to_string()
}

#[test]
fn misspelled_key_gets_its_path_line_and_nearest_key() {
    let e = err("data:\n  root: x\nmodel:\n  encoder:\n    hiden_size: 3\n");
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("model.encoder.hiden_size"), "{e}");
    assert!(e.contains("did you mean `hidden_size`"), "{e}");
}

#[test]
fn unknown_top_level_key_lists_valid_keys() {
    let e = err("trian:\n  batch_size: 3\n");
    assert!(
        e.contains("`trian`") && e.contains("did you mean `train`"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let e = err("data:\n  root: x\ntrain:\n  batch_size: many\n");
    assert!(
        e.contains("line 4") && e.contains("train.batch_size"),
        "{e}"
    );
}

#[test]
fn flow_mappings_name_the_key_inside_them_and_what_was_expected() {
    let e = err("data:\n  format: dates\nmodel:\n  encoder: {hiden_size: 16}\n");
    assert!(
        e.contains("line 4") && e.contains("unknown key `model.encoder.hiden_size`"),
        "{e}"
    );
    assert!(e.contains("did you mean `hidden_size`"), "{e}");
    let e = err("model:\n  encoder: {embedding_dim: 8, hidden_size: big}\n");
    assert!(
        e.contains("key `model.encoder.hidden_size`: expected a whole number ≥ 0, got \"big\""),
        "{e}"
    );
    let e = err("data: {format: dates, src_vocab: {level: char, min_freqq: 2}}\n");
    assert!(e.contains("unknown key `data.src_vocab.min_freqq`"), "{e}");
    let e = err("train: {learning_rate: fast}\n");
    assert!(
        e.contains("key `train.learning_rate`: expected a number, got \"fast\""),
        "{e}"
    );
    // Block style says the same.
    let e = err("train:\n  batch_size: many\n");
    assert!(
        e.contains("key `train.batch_size`: expected a whole number ≥ 0, got \"many\""),
        "{e}"
    );
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let e = err("data:\n  root: x\nmodel:\n  decoder:\n    attention: cosine\n");
    assert!(e.contains("cosine") && e.contains("bahdanau"), "{e}");
}

#[test]
fn malformed_yaml_is_located() {
    let e = err("data:\n  root: [x\n  format: tsv\n");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn out_of_range_values_name_their_keys() {
    let e = err("data:\n  root: x\nmodel:\n  encoder:\n    dropout: 1.5\n  decoder:\n    hidden_size: 0\ntrain:\n  learning_rate: -1\n");
    assert!(
        e.contains("model.encoder.dropout") && e.contains("1.5"),
        "{e}"
    );
    assert!(e.contains("model.decoder.hidden_size"), "{e}");
    assert!(e.contains("train.learning_rate"), "{e}");
}

#[test]
fn inconsistent_sizes_are_refused() {
    let e = err("data:\n  root: x\nmodel:\n  decoder:\n    hidden_size: 100\n    bridge: last\n    tied_embeddings: true\n    embedding_dim: 3\n");
    assert!(e.contains("model.decoder.bridge"), "{e}");
    assert!(e.contains("model.decoder.tied_embeddings"), "{e}");
    let e = err("data:\n  format: tsv\n  root: x\n");
    assert!(e.contains("data.file"), "{e}");
    let e = err("task: generation\ndata:\n  format: csv\n  root: x\n");
    assert!(e.contains("data.file: required"), "{e}");
    let e = err("task: generation\ndata:\n  format: csv\n  file: a.csv\n  tgt_column: 1\n  extra_train_columns: [2, 1]\n");
    assert!(
        e.contains("data.extra_train_columns: must not contain data.tgt_column (1)"),
        "{e}"
    );
    let e = err("data:\n  format: csv\n  file: a.csv\n");
    assert!(e.contains("does not fit task `translation`"), "{e}");
    let e = err("model:\n  encoder:\n    word_dropout: 1.0\n  decoder:\n    word_dropout: -0.1\n");
    assert!(e.contains("model.encoder.word_dropout"), "{e}");
    assert!(e.contains("model.decoder.word_dropout"), "{e}");
}

#[test]
fn config_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("s2s-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.yaml");
    std::fs::write(&p, b"name: \xff\xfe\n").unwrap();
    let e = Config::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("UTF-8"), "{e}");
    let e = Config::from_file(&dir.join("none.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.yaml"), "{e}");
    let big = dir.join("big.yaml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    let e = Config::from_file(&big).unwrap_err().to_string();
    assert!(e.contains("big.yaml") && e.contains("limit"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Opt-in on the real corpus: runs when `../shared/datasets` (or $SEQ2SEQ_DATA_DIR) holds
/// Multi30k, and says why it skips otherwise.
#[test]
fn multi30k_config_reads_the_real_corpus_when_present() {
    let root = std::env::var_os("SEQ2SEQ_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/datasets"
            ))
        });
    if !root.join("multi30k/train.en").exists() {
        eprintln!(
            "skipped: no Multi30k under {} (set SEQ2SEQ_DATA_DIR)",
            root.display()
        );
        return;
    }
    let p = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/multi30k-en-de.yaml"
    ));
    let cfg = Config::from_file(&p).unwrap();
    let s = seq2seq_pipeline::tasks::text::load_splits(&cfg.data, &root).unwrap();
    assert_eq!(
        (s.train.len(), s.valid.len(), s.test.len()),
        (29000, 1014, 1000)
    );
    assert!(
        s.train[0].src.starts_with("Two young, White males"),
        "{:?}",
        s.train[0]
    );
}

#[test]
fn captioning_keys_are_checked() {
    let e = err("task: captioning\ndata: {root: x}\n");
    assert!(
        e.contains("data.format: `parallel` does not fit task `captioning`"),
        "{e}"
    );
    let e = err(
        "task: captioning\ndata: {format: shapes}\nmodel: {image_encoder: {backbone: lite0}}\n",
    );
    assert!(
        e.contains("model.image_encoder.checkpoint: required for backbone `lite0`"),
        "{e}"
    );
    let e = err("task: captioning\ndata: {format: shapes}\nmodel: {image_encoder: {backbone: lite0, checkpoint: a.pth, fine_tune_blocks: 17}}\n");
    assert!(
        e.contains(
            "model.image_encoder.fine_tune_blocks: EfficientNet-Lite0 has 16 blocks, got 17"
        ),
        "{e}"
    );
    let e = err("task: captioning\ndata: {format: shapes, image_size: 8}\nmodel: {image_encoder: {cnn: {kernel: 4}}}\n");
    assert!(
        e.contains("model.image_encoder.cnn.kernel: must be odd, got 4"),
        "{e}"
    );
    assert!(
        e.contains("data.image_size: 8 pixels cannot be halved by 4 CNN blocks; use at least 16"),
        "{e}"
    );
    let e = err("task: captioning\ndata: {format: shapes, crop_jitter: 2}\n");
    assert!(
        e.contains("data.crop_jitter: must be in [0, 1], got 2"),
        "{e}"
    );
    let e = err("task: captioning\ndata: {format: karpathy}\n");
    assert!(
        e.contains("data.file: required for data.format `karpathy`"),
        "{e}"
    );
    let e = err("task: captioning\ndata: {format: shapes}\nmodel:\n  image_encoder:\n    cnn:\n      chanels: [8]\n");
    assert!(e.contains("line 6 column 7: unknown key `model.image_encoder.cnn.chanels` (did you mean `channels`?)"), "{e}");
    let e = err(
        "task: captioning\ndata: {format: shapes}\nmodel: {image_encoder: {backbone: resnet}}\n",
    );
    assert!(e.contains("small_cnn") && e.contains("lite0"), "{e}");
    // A decoder bridge `last` must match the image features.
    let e = err("task: captioning\ndata: {format: shapes}\nmodel: {decoder: {bridge: last}}\n");
    assert!(
        e.contains("needs the encoder output size (256) == decoder hidden_size (512)"),
        "{e}"
    );
}

#[test]
fn a_schedule_without_what_it_needs_is_refused() {
    let e = err("data:\n  root: x\ntrain:\n  schedule: noam\n");
    assert!(e.contains("train.warmup_steps"), "{e}");
    let e =
        err("data:\n  root: x\ntrain:\n  schedule: cosine\n  warmup_steps: 100\n  max_steps: 50\n");
    assert!(e.contains("train.decay_steps") && e.contains("100"), "{e}");
    let e = err("data:\n  root: x\ntrain:\n  schedule: linear\n");
    assert!(e.contains("train.schedule") && e.contains("cosine"), "{e}");
    Config::from_yaml("data:\n  root: x\ntrain:\n  schedule: cosine\n  decay_steps: 500\n")
        .unwrap();
}

#[test]
fn attention_reg_needs_attention_and_a_sane_weight() {
    let e = err("data:\n  root: x\ntrain:\n  attention_reg: -1\n");
    assert!(e.contains("train.attention_reg") && e.contains("-1"), "{e}");
    let e = err(
        "data:\n  root: x\nmodel:\n  decoder:\n    attention: none\ntrain:\n  attention_reg: 1\n",
    );
    assert!(
        e.contains("train.attention_reg") && e.contains("none"),
        "{e}"
    );
    let e = err("task: generation\ndata:\n  format: text\n  root: x\ntrain:\n  attention_reg: 1\n");
    assert!(e.contains("train.attention_reg"), "{e}");
    let c = Config::from_yaml(
        "task: captioning\ndata:\n  format: shapes\ntrain:\n  attention_reg: 1\n",
    )
    .unwrap();
    assert_eq!(c.train.attention_reg, 1.0);
}

#[test]
fn scheduled_sampling_is_parsed_and_checked() {
    let c = Config::from_yaml(
        "data:\n  root: x\ntrain:\n  scheduled_sampling: {max_rate: 0.25, ramp_steps: 100, tokens: sample}\n",
    )
    .unwrap();
    let s = c.train.scheduled_sampling.unwrap();
    assert_eq!((s.max_rate, s.start_step, s.ramp_steps), (0.25, 0, 100));
    assert_eq!(s.tokens, seq2seq_pipeline::config::SampledTokens::Sample);
    let e = err("data:\n  root: x\ntrain:\n  scheduled_sampling: {max_rate: 2}\n");
    assert!(
        e.contains("train.scheduled_sampling.max_rate") && e.contains('2'),
        "{e}"
    );
    let e = err(
        "data:\n  root: x\ntrain:\n  scheduled_sampling:\n    max_rate: 0.1\n    tokens: beam\n",
    );
    assert!(e.contains("line 6") && e.contains("greedy"), "{e}");
    let e = err("data:\n  root: x\ntrain:\n  scheduled_sampling:\n    max_rat: 0.1\n");
    assert!(
        e.contains("train.scheduled_sampling.max_rat") && e.contains("max_rate"),
        "{e}"
    );
}

#[test]
fn lr_multipliers_are_parsed_and_checked() {
    let c = Config::from_yaml(
        "data:\n  root: x\ntrain:\n  lr_multipliers: {encoder.backbone: 0.1, decoder: 2}\n",
    )
    .unwrap();
    assert_eq!(c.train.lr_multipliers["encoder.backbone"], 0.1);
    assert_eq!(c.train.lr_multipliers["decoder"], 2.0);
    let e = err("data:\n  root: x\ntrain:\n  lr_multipliers: {encoder: 0}\n");
    assert!(
        e.contains("train.lr_multipliers.encoder: must be a finite factor > 0"),
        "{e}"
    );
    let e = err("data:\n  root: x\ntrain:\n  lr_multipliers: {encoder.: 0.5}\n");
    assert!(
        e.contains("`encoder.` is not a parameter-name prefix"),
        "{e}"
    );
    let e = err("data:\n  root: x\ntrain:\n  lr_multipliers: {encoder: fast}\n");
    assert!(e.contains("line 4"), "{e}");
}

#[test]
fn token_batches_and_accumulation_are_checked() {
    let e = err("task: captioning\ndata:\n  format: shapes\ntrain:\n  batch_type: tokens\n");
    assert!(e.contains("train.batch_type"), "{e}");
    let e = err("data:\n  root: x\ntrain:\n  accumulate: 0\n");
    assert!(e.contains("train.accumulate"), "{e}");
    let e = err("data:\n  root: x\ntrain:\n  batch_type: words\n");
    assert!(
        e.contains("train.batch_type") && e.contains("tokens"),
        "{e}"
    );
}

#[test]
fn valid_decoding_is_checked_like_decoding() {
    let e = err(
        "data:\n  root: x\ntrain:\n  valid_decoding: {strategy: beam, beam_size: 2, n_best: 3}\n",
    );
    assert!(e.contains("train.valid_decoding.n_best"), "{e}");
    let e = err("data:\n  root: x\ntrain:\n  valid_decoding:\n    beam_sise: 4\n");
    assert!(e.contains("line 5") && e.contains("beam_sise"), "{e}");
    let c = Config::from_yaml(
        "data:\n  root: x\ntrain:\n  valid_decoding: {strategy: beam, beam_size: 5}\n",
    )
    .unwrap();
    assert_eq!(c.train.valid_decoding.unwrap().beam_size, 5);
}
