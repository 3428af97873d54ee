//! The typed YAML configuration: one struct per component, every key defaulted, unknown keys
//! rejected with their path and the nearest valid key. `configs/reference.yaml` documents
//! every key.

use seq2seq_data::{Level, VocabSpec};
use seq2seq_image_encoder::cnn::SmallCnnConfig;
use seq2seq_image_encoder::BackboneKind;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A name for the run (used for the default output directory `runs/<name>`).
    pub name: String,
    pub task: Task,
    /// Seeds initialisation, dropout and data order.
    pub seed: u64,
    /// Where training runs (`cpu`, `cuda`, `cuda:N`, `auto`); `--device` overrides it.
    pub device: crate::device::DeviceChoice,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub decoding: DecodingConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Text encoder → decoder (many-to-many).
    #[default]
    Translation,
    /// Decoder alone: a recurrent language model primed by a prompt.
    Generation,
    /// Image encoder → decoder (one-to-many).
    Captioning,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Line-aligned files `<root>/<split>.<src_lang>` and `<root>/<split>.<tgt_lang>`.
    #[default]
    Parallel,
    /// One tab-separated file `<root>/<file>`, split into train/valid/test with a seed.
    Tsv,
    /// The generated dates → ISO dates task (no files).
    Dates,
    /// Generation: one plain-text file `<root>/<file>` as one stream cut into windows of
    /// `window` tokens (held-out windows at the end).
    Text,
    /// Generation: one item per line of `<root>/<file>` (headlines), each with bos/eos.
    Lines,
    /// Generation: one item per record of the CSV file `<root>/<file>` (no header row), taken from
    /// column `tgt_column`; the records are split into train/valid/test, and the columns in
    /// `extra_train_columns` of the training records become further training items.
    Csv,
    /// Captioning: Flickr8k as it ships (`Flickr8k.token.txt`, `Flickr_8k.{train,dev,test}Images.txt`
    /// in `<root>`, images in `<root>/<images>`).
    Flickr8k,
    /// Captioning: a Karpathy split JSON `<root>/<file>` (`dataset_flickr8k.json`, …).
    Karpathy,
    /// Captioning: COCO captions JSON files `<root>/<train>`, `<root>/<valid>`, `<root>/<test>`.
    Coco,
    /// Captioning: generated images of coloured shapes with their descriptions (no files).
    Shapes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: DataFormat,
    /// Corpus folder, relative to the data directory (or absolute).
    pub root: String,
    pub src_lang: String,
    pub tgt_lang: String,
    /// Split names (file prefixes) for `parallel`.
    pub train: String,
    pub valid: String,
    pub test: String,
    /// File name for `tsv`, and its source and target columns (0-based).
    pub file: String,
    pub src_column: usize,
    pub tgt_column: usize,
    /// `csv`: further columns (0-based) of the training records to train on, never held out
    /// (AG News' descriptions beside the headlines).
    pub extra_train_columns: Vec<usize>,
    /// Held-out sizes when the corpus has no separate files (`tsv`, `dates`, `lines`, `csv`, `shapes`).
    pub valid_size: usize,
    pub test_size: usize,
    /// Training pairs generated for `dates`.
    pub train_size: usize,
    pub split_seed: u64,
    /// Tokens per training window (`text`).
    pub window: usize,
    /// One vocabulary trained on both sides (translation between related languages): it
    /// takes `tgt_vocab`'s settings, which `src_vocab` must then equal.
    pub joint_vocab: bool,
    /// Read the training split as a stream (corpora larger than memory): never held whole,
    /// shuffled and bucketed within buffers of `shuffle_buffer` items (`parallel`, `tsv`, `lines`).
    pub streaming: bool,
    pub shuffle_buffer: usize,
    pub lowercase: bool,
    /// Training pairs longer than this (in tokens) are dropped.
    pub max_src_len: usize,
    pub max_tgt_len: usize,
    pub src_vocab: VocabConfig,
    pub tgt_vocab: VocabConfig,
    /// Captioning: the images folder, relative to `root` (or absolute).
    pub images: String,
    /// Captioning: side of the square the images are resized (shorter side) and cropped to.
    pub image_size: u32,
    /// Captioning augmentation in training: random horizontal flips.
    pub hflip: bool,
    /// Captioning augmentation in training: resize to `image_size * (1 + crop_jitter)` and crop
    /// at a random offset (0 = centre crop only).
    pub crop_jitter: f64,
    /// Images larger than this file size or side are refused before decoding.
    pub max_image_bytes: u64,
    pub max_image_side: u32,
    /// Folder of the on-disk cache of a frozen backbone's features, keyed by image file and
    /// backbone (empty = no cache). Relative paths are relative to the working directory.
    pub feature_cache: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: DataFormat::Parallel,
            root: String::new(),
            src_lang: "src".into(),
            tgt_lang: "tgt".into(),
            train: "train".into(),
            valid: "val".into(),
            test: "test".into(),
            file: String::new(),
            src_column: 0,
            tgt_column: 1,
            extra_train_columns: Vec::new(),
            valid_size: 1000,
            test_size: 1000,
            train_size: 20000,
            split_seed: 1,
            window: 100,
            joint_vocab: false,
            streaming: false,
            shuffle_buffer: 100_000,
            lowercase: false,
            max_src_len: 50,
            max_tgt_len: 50,
            src_vocab: VocabConfig::default(),
            tgt_vocab: VocabConfig::default(),
            images: "images".into(),
            image_size: 224,
            hflip: false,
            crop_jitter: 0.0,
            max_image_bytes: 50 << 20,
            max_image_side: 10_000,
            feature_cache: "runs/feature-cache".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VocabConfig {
    pub level: Level,
    pub min_freq: u64,
    /// Maximum size including special tokens (0 = unlimited; the target size for BPE).
    pub max_size: usize,
}

impl Default for VocabConfig {
    fn default() -> Self {
        Self {
            level: Level::Word,
            min_freq: 1,
            max_size: 0,
        }
    }
}

impl VocabConfig {
    pub fn spec(&self, lowercase: bool) -> VocabSpec {
        VocabSpec {
            level: self.level,
            lowercase,
            min_freq: self.min_freq,
            max_size: self.max_size,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    #[default]
    Gru,
    Lstm,
    Rnn,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionType {
    #[default]
    Bahdanau,
    Luong,
    Dot,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// Attention after the RNN step, attentional vector to the output (JoeyNMT, OpenNMT).
    #[default]
    Luong,
    /// Attention before the RNN step, context into the RNN, output from [h; c; e].
    Bahdanau,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeType {
    Zero,
    Last,
    #[default]
    Learned,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The text encoder (translation).
    pub encoder: EncoderSection,
    /// One embedding matrix for the source and target tokens (translation with
    /// `data.joint_vocab` and equal embedding sizes); with `decoder.tied_embeddings`, the output
    /// projection too.
    pub tied_source_target: bool,
    /// The image encoder (captioning).
    pub image_encoder: ImageEncoderSection,
    pub decoder: DecoderSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageEncoderSection {
    /// `small_cnn` (trained from scratch) or `lite0` (pretrained EfficientNet-Lite0).
    pub backbone: BackboneKind,
    /// The small CNN's layers.
    pub cnn: SmallCnnConfig,
    /// The Lite0 PyTorch checkpoint, relative to the data directory (or absolute). Only
    /// training reads it: the model directory keeps the backbone's weights.
    pub checkpoint: String,
    /// Lite0 MBConv blocks to fine-tune, counted from the top (0 = frozen; above 0 the head
    /// conv trains too). Batch-norm statistics stay frozen.
    pub fine_tune_blocks: usize,
    /// Dropout on Lite0's feature grid.
    pub dropout: f32,
}

impl Default for ImageEncoderSection {
    fn default() -> Self {
        Self {
            backbone: BackboneKind::SmallCnn,
            cnn: SmallCnnConfig::default(),
            checkpoint: String::new(),
            fine_tune_blocks: 0,
            dropout: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderSection {
    pub cell: Cell,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub emb_dropout: f32,
    pub word_dropout: f32,
    pub dropout: f32,
}

impl Default for EncoderSection {
    fn default() -> Self {
        Self {
            cell: Cell::Gru,
            embedding_dim: 256,
            hidden_size: 256,
            num_layers: 1,
            bidirectional: true,
            emb_dropout: 0.0,
            word_dropout: 0.0,
            dropout: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderSection {
    pub cell: Cell,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub attention: AttentionType,
    pub attention_dim: usize,
    pub style: Style,
    pub input_feeding: bool,
    pub tied_embeddings: bool,
    pub bridge: BridgeType,
    pub emb_dropout: f32,
    pub word_dropout: f32,
    pub dropout: f32,
    pub hidden_dropout: f32,
}

impl Default for DecoderSection {
    fn default() -> Self {
        Self {
            cell: Cell::Gru,
            embedding_dim: 256,
            hidden_size: 512,
            num_layers: 1,
            attention: AttentionType::Bahdanau,
            attention_dim: 256,
            style: Style::Luong,
            input_feeding: false,
            tied_embeddings: false,
            bridge: BridgeType::Learned,
            emb_dropout: 0.0,
            word_dropout: 0.0,
            dropout: 0.0,
            hidden_dropout: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Adamw,
}

/// What `train.batch_size` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchType {
    /// Sentences (examples) per batch.
    #[default]
    Sentences,
    /// Padded target tokens per batch (rows × the longest target), as fairseq's `--max-tokens`.
    Tokens,
}

/// How the learning rate moves with the update count (after `warmup_steps` of linear warm-up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `learning_rate`, multiplied by `lr_decay_factor` when validation stalls.
    #[default]
    Plateau,
    /// `learning_rate` throughout.
    Constant,
    /// Inverse square root (Vaswani et al.'s "Noam"): peaks at `learning_rate` at the end of the
    /// warm-up, then falls as `sqrt(warmup_steps / step)`.
    Noam,
    /// Half a cosine from `learning_rate` to `min_lr` between the end of the warm-up and update
    /// `decay_steps` (the config's `max_steps` when 0), then `min_lr`.
    Cosine,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStopMetric {
    /// Validation loss per token (lower is better).
    #[default]
    Loss,
    /// Exact-match accuracy of greedy outputs on the validation set (higher is better).
    Exact,
    /// Corpus BLEU (sacreBLEU's default, lowercased when `data.lowercase`) of greedy outputs
    /// on the validation set (higher is better).
    Bleu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Sentences per batch, or target tokens with `batch_type: tokens`.
    pub batch_size: usize,
    pub batch_type: BatchType,
    /// Batches per update: their gradients are summed (weighted by target tokens) before one
    /// optimizer step, as one batch of their union would give.
    pub accumulate: usize,
    /// Stop after this many updates (0 = no limit).
    pub max_steps: usize,
    /// Stop after this many epochs (0 = no limit).
    pub max_epochs: usize,
    /// Stop after this many seconds of training (0 = no limit).
    pub max_time_s: f64,
    /// Rescale gradients whose global L2 norm exceeds this (0 = off).
    pub clip_grad_norm: f64,
    pub label_smoothing: f64,
    /// λ of the doubly stochastic attention regularisation (Show, Attend and Tell): the loss
    /// gains λ · mean over memory positions of (1 − Σ_t α_t,i)² (0 = off; the fused decoder
    /// ops, which do not expose α, then give way to the step loop).
    pub attention_reg: f64,
    /// Scheduled sampling: a growing share of the decoder's inputs are its own predictions
    /// (None = teacher forcing throughout).
    pub scheduled_sampling: Option<ScheduledSampling>,
    /// Per-parameter learning-rate factors, keyed by a parameter-name prefix of whole
    /// components (`encoder.backbone` covers `encoder.backbone._blocks.15.…`); the longest
    /// matching prefix wins, parameters matched by none train at the schedule's rate. PyTorch's
    /// optimizer parameter groups, e.g. a fine-tuned backbone at a tenth of the decoder's rate.
    pub lr_multipliers: std::collections::BTreeMap<String, f64>,
    /// Multiply the learning rate by this after `lr_patience` validations without improvement.
    pub lr_decay_factor: f64,
    pub lr_patience: usize,
    pub min_lr: f64,
    /// How the learning rate moves with the step.
    pub schedule: Schedule,
    /// Linear warm-up from 0 to the schedule's rate over this many updates (0 = none).
    pub warmup_steps: usize,
    /// Where the cosine schedule reaches `min_lr` (0 = the config's `max_steps`; `--max-steps`
    /// stops a run without bending its curve).
    pub decay_steps: usize,
    /// Validate every this many steps.
    pub valid_every: usize,
    /// Sample translations printed at each validation.
    pub valid_samples: usize,
    /// Validation items decoded for exact match and BLEU (0 = all); loss always uses all.
    pub valid_decode_size: usize,
    /// How validation decodes (any decoding options, e.g. beam search, so that early stopping on
    /// BLEU follows the figure reported); greedy with the `decoding` section's limits when absent.
    pub valid_decoding: Option<DecodingConfig>,
    /// Metric for the best checkpoint, early stopping and learning-rate decay.
    pub early_stopping_metric: EarlyStopMetric,
    /// Stop after this many validations without improvement (0 = never).
    pub patience: usize,
    /// Keep the weights of the last N validations as `checkpoint-step<S>.safetensors`, for
    /// `seq2seq average` (0 = keep none).
    pub keep_checkpoints: usize,
    /// Plain log line every this many steps (when stderr is not a terminal).
    pub log_every: usize,
    /// A batch whose loss or gradient norm is not finite is skipped (no update); stop after this
    /// many in a row.
    pub max_nonfinite_steps: usize,
}

impl TrainConfig {
    /// `batch_size` in its unit.
    pub fn batch(&self) -> seq2seq_data::BatchSize {
        match self.batch_type {
            BatchType::Sentences => seq2seq_data::BatchSize::Sentences(self.batch_size),
            BatchType::Tokens => seq2seq_data::BatchSize::Tokens(self.batch_size),
        }
    }

    /// The update at which the cosine schedule reaches `min_lr`.
    pub fn cosine_end(&self) -> usize {
        if self.decay_steps > 0 {
            self.decay_steps
        } else {
            self.max_steps
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Adam,
            learning_rate: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            batch_size: 64,
            batch_type: BatchType::Sentences,
            accumulate: 1,
            max_steps: 0,
            max_epochs: 10,
            max_time_s: 0.0,
            clip_grad_norm: 1.0,
            label_smoothing: 0.0,
            attention_reg: 0.0,
            scheduled_sampling: None,
            lr_multipliers: Default::default(),
            lr_decay_factor: 0.5,
            lr_patience: 2,
            min_lr: 1e-5,
            schedule: Schedule::Plateau,
            warmup_steps: 0,
            decay_steps: 0,
            valid_every: 500,
            valid_samples: 3,
            valid_decode_size: 0,
            valid_decoding: None,
            early_stopping_metric: EarlyStopMetric::Loss,
            patience: 5,
            keep_checkpoints: 0,
            log_every: 100,
            max_nonfinite_steps: 10,
        }
    }
}

/// The `decoding` section: the decoder crate's options, shared with every CLI subcommand.
pub type DecodingConfig = seq2seq_decoder::DecodingOptions;

mod checks;
mod load;
mod scheduled;
pub use checks::ConfigError;
pub use load::{resolve_data_dir, resolve_path};
pub use scheduled::{SampledTokens, ScheduledSampling};
