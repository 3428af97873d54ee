//! The checks of a parsed config: ranges of single keys, and the cross-key rules (what a task
//! reads, what an encoder's output size allows the decoder). Every problem names its key; all
//! are reported at once.

use super::*;

/// What is wrong with a config: one line per problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Every check; the error lists each problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        self.check_ranges(&mut errs);
        self.check_schedule(&mut errs);
        self.check_sharing(&mut errs);
        self.check_streaming(&mut errs);
        self.check_model(&mut errs);
        self.check_task_format(&mut errs);
        if self.task == Task::Captioning {
            self.check_images(&mut errs);
        }
        self.check_files(&mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errs))
        }
    }

    /// What a joint vocabulary and shared embeddings need of the other keys.
    fn check_sharing(&self, errs: &mut Vec<String>) {
        let d = &self.data;
        if d.joint_vocab && self.task != Task::Translation {
            errs.push(
                "data.joint_vocab: only translation has two sides to share a vocabulary".into(),
            );
        }
        if d.joint_vocab && d.src_vocab != d.tgt_vocab {
            errs.push(format!(
                "data.src_vocab: with data.joint_vocab one vocabulary is trained with data.tgt_vocab's settings; give data.src_vocab the same ({:?}) or leave them equal",
                d.tgt_vocab
            ));
        }
        let m = &self.model;
        if m.tied_source_target {
            if !d.joint_vocab {
                errs.push("model.tied_source_target: needs data.joint_vocab: true (one vocabulary, so that a token has one embedding)".into());
            }
            if m.encoder.embedding_dim != m.decoder.embedding_dim {
                errs.push(format!(
                    "model.tied_source_target: model.encoder.embedding_dim ({}) must equal model.decoder.embedding_dim ({})",
                    m.encoder.embedding_dim, m.decoder.embedding_dim
                ));
            }
        }
    }

    /// What reading the training split as a stream needs of the other keys.
    fn check_streaming(&self, errs: &mut Vec<String>) {
        let d = &self.data;
        if !d.streaming {
            return;
        }
        if !matches!(
            d.format,
            DataFormat::Parallel | DataFormat::Tsv | DataFormat::Lines
        ) {
            errs.push(format!(
                "data.streaming: streams the formats parallel, tsv and lines; data.format {} is read whole (a running text for windows: use format lines, one item per line)",
                format!("{:?}", d.format).to_lowercase()
            ));
        }
        if d.shuffle_buffer == 0 {
            errs.push("data.shuffle_buffer: must be at least 1 item".into());
        }
        if self.train.max_steps == 0 {
            errs.push("train.max_steps: a streamed epoch's length is not known in advance; with data.streaming give the run a step budget (> 0)".into());
        }
    }

    /// What the learning-rate schedule and the batching need of the other keys.
    fn check_schedule(&self, errs: &mut Vec<String>) {
        let t = &self.train;
        if t.batch_type == BatchType::Tokens && self.task == Task::Captioning {
            errs.push(
                "train.batch_type: tokens batches text by length; captioning batches the captions of an image together (use sentences)".into(),
            );
        }
        match t.schedule {
            Schedule::Noam if t.warmup_steps == 0 => errs.push(
                "train.warmup_steps: the noam schedule peaks at the end of the warm-up; give it at least 1 step".into(),
            ),
            Schedule::Cosine if t.cosine_end() <= t.warmup_steps => errs.push(format!(
                "train.decay_steps: the cosine schedule ends at decay_steps (or max_steps when 0), which must exceed train.warmup_steps ({}), got {}",
                t.warmup_steps,
                t.cosine_end()
            )),
            _ => {}
        }
    }

    fn check_ranges(&self, errs: &mut Vec<String>) {
        let mut positive = |key: &str, v: usize| {
            if v == 0 {
                errs.push(format!("{key}: must be at least 1, got 0"));
            }
        };
        let (e, d, t) = (&self.model.encoder, &self.model.decoder, &self.train);
        positive("model.encoder.embedding_dim", e.embedding_dim);
        positive("model.encoder.hidden_size", e.hidden_size);
        positive("model.encoder.num_layers", e.num_layers);
        positive("model.decoder.embedding_dim", d.embedding_dim);
        positive("model.decoder.hidden_size", d.hidden_size);
        positive("model.decoder.num_layers", d.num_layers);
        positive("model.decoder.attention_dim", d.attention_dim);
        positive("train.batch_size", t.batch_size);
        positive("train.accumulate", t.accumulate);
        positive("train.valid_every", t.valid_every);
        positive("train.log_every", t.log_every);
        positive("train.max_nonfinite_steps", t.max_nonfinite_steps);

        positive("data.max_src_len", self.data.max_src_len);
        positive("data.max_tgt_len", self.data.max_tgt_len);
        dropouts(
            errs,
            &[
                ("model.encoder.emb_dropout", e.emb_dropout),
                ("model.encoder.word_dropout", e.word_dropout),
                ("model.encoder.dropout", e.dropout),
                ("model.decoder.emb_dropout", d.emb_dropout),
                ("model.decoder.word_dropout", d.word_dropout),
                ("model.decoder.dropout", d.dropout),
                ("model.decoder.hidden_dropout", d.hidden_dropout),
            ],
        );
        if let Err(e) = self.decoding.validate() {
            errs.extend(e.0.iter().map(|l| format!("decoding.{l}")));
        }
        if let Some(Err(e)) = self.train.valid_decoding.as_ref().map(|d| d.validate()) {
            errs.extend(e.0.iter().map(|l| format!("train.valid_decoding.{l}")));
        }
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errs.push(msg);
            }
        };
        let lr = t.learning_rate;
        check(
            lr > 0.0 && lr.is_finite(),
            format!("train.learning_rate: must be positive, got {lr}"),
        );
        check(
            (0.0..1.0).contains(&t.label_smoothing),
            format!(
                "train.label_smoothing: must be in [0, 1), got {}",
                t.label_smoothing
            ),
        );
        check(
            t.betas.iter().all(|b| (0.0..1.0).contains(b)),
            format!("train.betas: each must be in [0, 1), got {:?}", t.betas),
        );
        check(
            t.lr_decay_factor > 0.0 && t.lr_decay_factor <= 1.0,
            format!(
                "train.lr_decay_factor: must be in (0, 1], got {}",
                t.lr_decay_factor
            ),
        );
        check(
            t.clip_grad_norm >= 0.0,
            format!(
                "train.clip_grad_norm: must be >= 0, got {}",
                t.clip_grad_norm
            ),
        );
        check(
            self.data.window >= 2,
            format!("data.window: must be at least 2, got {}", self.data.window),
        );
    }

    /// The size of what the encoder hands the decoder per position.
    fn encoder_output_size(&self) -> usize {
        let e = &self.model.encoder;
        if self.task != Task::Captioning {
            return e.hidden_size * if e.bidirectional { 2 } else { 1 };
        }
        match self.model.image_encoder.backbone {
            BackboneKind::SmallCnn => *self.model.image_encoder.cnn.channels.last().unwrap_or(&0),
            BackboneKind::Lite0 => seq2seq_image_encoder::lite0::FEATURES,
        }
    }

    fn check_model(&self, errs: &mut Vec<String>) {
        let d = &self.model.decoder;
        if d.tied_embeddings && d.embedding_dim != d.hidden_size {
            errs.push(format!(
                "model.decoder.tied_embeddings: needs embedding_dim ({}) == hidden_size ({})",
                d.embedding_dim, d.hidden_size
            ));
        }
        let enc_out = self.encoder_output_size();
        if d.bridge == BridgeType::Last && enc_out != d.hidden_size {
            errs.push(format!(
                "model.decoder.bridge: `last` needs the encoder output size ({enc_out}) == decoder hidden_size ({}); use `learned`",
                d.hidden_size
            ));
        }
        if d.style == Style::Bahdanau && d.tied_embeddings {
            errs.push("model.decoder.tied_embeddings: not available with style `bahdanau` (its output layer reads [h; c; e])".into());
        }
        let reg = self.train.attention_reg;
        if !(reg >= 0.0 && reg.is_finite()) {
            errs.push(format!(
                "train.attention_reg: must be a finite number >= 0, got {reg}"
            ));
        } else if reg > 0.0 && (d.attention == AttentionType::None || self.task == Task::Generation)
        {
            errs.push(
                "train.attention_reg: regularises attention weights, but this decoder attends to nothing (attention: none, or a generation task); set it to 0".into(),
            );
        }
        if let Some(s) = &self.train.scheduled_sampling {
            errs.extend(s.errors());
        }
        for (prefix, f) in &self.train.lr_multipliers {
            let parts_ok = !prefix.is_empty() && prefix.split('.').all(|c| !c.is_empty());
            if !parts_ok {
                errs.push(format!(
                    "train.lr_multipliers: `{prefix}` is not a parameter-name prefix (dot-separated names such as encoder.backbone)"
                ));
            }
            if !(*f > 0.0 && f.is_finite()) {
                errs.push(format!(
                    "train.lr_multipliers.{prefix}: must be a finite factor > 0, got {f} (freeze a backbone with model.image_encoder.fine_tune_blocks instead)"
                ));
            }
        }
        if d.attention == AttentionType::Dot && enc_out != d.hidden_size {
            errs.push(format!(
                "model.decoder.attention: `dot` needs the encoder output size ({enc_out}) == decoder hidden_size ({}); use `luong` or `bahdanau`",
                d.hidden_size
            ));
        }
    }

    /// Each data format belongs to one task.
    fn check_task_format(&self, errs: &mut Vec<String>) {
        let format_task = match self.data.format {
            DataFormat::Text | DataFormat::Lines | DataFormat::Csv => Task::Generation,
            DataFormat::Flickr8k | DataFormat::Karpathy | DataFormat::Coco | DataFormat::Shapes => {
                Task::Captioning
            }
            DataFormat::Parallel | DataFormat::Tsv | DataFormat::Dates => Task::Translation,
        };
        if self.task != format_task {
            errs.push(format!(
                "data.format: `{:?}` does not fit task `{:?}` (generation reads `text`, `lines` or `csv`; translation reads `parallel`, `tsv` or `dates`; captioning reads `flickr8k`, `karpathy`, `coco` or `shapes`)",
                self.data.format, self.task
            ).to_lowercase());
        }
    }

    /// The image encoder and the image settings of a captioning config.
    fn check_images(&self, errs: &mut Vec<String>) {
        let ie = &self.model.image_encoder;
        let size = self.data.image_size;
        match ie.backbone {
            BackboneKind::SmallCnn => {
                let blocks = ie.cnn.channels.len() as u32;
                if ie.cnn.channels.is_empty() || ie.cnn.channels.contains(&0) {
                    errs.push(format!(
                        "model.image_encoder.cnn.channels: needs at least one block, each with at least 1 channel, got {:?}",
                        ie.cnn.channels
                    ));
                } else if size >> blocks.min(31) == 0 {
                    errs.push(format!(
                        "data.image_size: {size} pixels cannot be halved by {blocks} CNN blocks; use at least {}",
                        1u64 << blocks
                    ));
                }
                if ie.cnn.kernel.is_multiple_of(2) {
                    errs.push(format!(
                        "model.image_encoder.cnn.kernel: must be odd, got {}",
                        ie.cnn.kernel
                    ));
                }
            }
            BackboneKind::Lite0 => {
                let blocks = seq2seq_image_encoder::lite0::NUM_BLOCKS;
                if ie.checkpoint.is_empty() {
                    errs.push("model.image_encoder.checkpoint: required for backbone `lite0` (the EfficientNet-Lite0 .pth file)".into());
                }
                if ie.fine_tune_blocks > blocks {
                    errs.push(format!(
                        "model.image_encoder.fine_tune_blocks: EfficientNet-Lite0 has {blocks} blocks, got {}",
                        ie.fine_tune_blocks
                    ));
                }
                if size < 32 {
                    errs.push(format!(
                        "data.image_size: Lite0 needs at least 32 pixels, got {size}"
                    ));
                }
            }
        }
        dropouts(
            errs,
            &[
                ("model.image_encoder.dropout", ie.dropout),
                ("model.image_encoder.cnn.dropout", ie.cnn.dropout),
            ],
        );
        if !(0.0..=1.0).contains(&self.data.crop_jitter) {
            errs.push(format!(
                "data.crop_jitter: must be in [0, 1], got {}",
                self.data.crop_jitter
            ));
        }
        if size == 0 {
            errs.push("data.image_size: must be at least 1, got 0".into());
        }
    }

    /// The files and columns each data format needs.
    fn check_files(&self, errs: &mut Vec<String>) {
        let d = &self.data;
        let need_root =
            "data.root: required for this data.format (a folder under the data directory)";
        match d.format {
            DataFormat::Text | DataFormat::Lines | DataFormat::Csv if d.file.is_empty() => {
                errs.push("data.file: required for data.format `text`, `lines` and `csv`".into())
            }
            DataFormat::Csv if d.extra_train_columns.contains(&d.tgt_column) => errs.push(format!(
                "data.extra_train_columns: must not contain data.tgt_column ({}), the column that is held out",
                d.tgt_column
            )),
            DataFormat::Parallel | DataFormat::Tsv if d.root.is_empty() => errs.push(need_root.into()),
            DataFormat::Tsv if d.file.is_empty() => {
                errs.push("data.file: required for data.format `tsv`".into())
            }
            DataFormat::Tsv if d.src_column == d.tgt_column => {
                errs.push("data.src_column / data.tgt_column: must differ".into())
            }
            DataFormat::Flickr8k | DataFormat::Coco if d.root.is_empty() => errs.push(need_root.into()),
            DataFormat::Karpathy if d.file.is_empty() => errs.push(
                "data.file: required for data.format `karpathy` (the split JSON under data.root)".into(),
            ),
            _ => {}
        }
    }
}

/// Each probability in [0, 1).
fn dropouts(errs: &mut Vec<String>, keys: &[(&str, f32)]) {
    for (key, p) in keys {
        if !(0.0..1.0).contains(p) {
            errs.push(format!(
                "{key}: a dropout probability must be in [0, 1), got {p}"
            ));
        }
    }
}
