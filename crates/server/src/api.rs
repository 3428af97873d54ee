//! The JSON the API reads and writes. The OpenAPI document (`GET /openapi.json`) is generated
//! from these types, so it cannot drift from what the handlers accept.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Decoding options, with the CLI's flag names (`--top-k` is `top_k`); any left out take the
/// model's `decoding:` section.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub struct Decoding {
    /// `greedy`, `sample` or `beam`.
    pub strategy: Option<StrategyName>,
    /// Softmax temperature for sampling (0: greedy).
    #[schema(minimum = 0)]
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[schema(minimum = 1)]
    pub beam_size: Option<usize>,
    /// GNMT length penalty α.
    pub length_penalty: Option<f64>,
    /// Hypotheses per input (beam search): at most `beam_size`.
    #[schema(minimum = 1)]
    pub n_best: Option<usize>,
    /// Maximum output tokens.
    #[schema(minimum = 1)]
    pub max_length: Option<usize>,
    /// No end of sequence before this many tokens: at most `max_length`.
    pub min_length: Option<usize>,
    pub no_repeat_ngram: Option<usize>,
    /// Sampling seed: input `i` of the request samples with `seed + i`, whatever it is batched with.
    pub seed: Option<u64>,
    pub forbid_unk: Option<bool>,
}

/// The keys [`Decoding`] reads (every request type checks its keys against its own and these).
pub const DECODING_KEYS: &[&str] = &[
    "strategy",
    "temperature",
    "top_k",
    "top_p",
    "beam_size",
    "length_penalty",
    "n_best",
    "max_length",
    "min_length",
    "no_repeat_ngram",
    "seed",
    "forbid_unk",
];

#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    Greedy,
    Sample,
    Beam,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TranslateRequest {
    /// A name from `GET /v1/models`; the first model when left out.
    pub model: Option<String>,
    pub texts: Vec<String>,
    /// Also return each translation's tokens, the source's, and the attention between them.
    #[serde(default)]
    pub attention: bool,
    #[serde(flatten)]
    pub decoding: Decoding,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TranslateResponse {
    /// One per text, in order.
    pub translations: Vec<Hypothesis>,
}

/// The best output, and the whole n-best list (best first) when `n_best` > 1.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Hypothesis {
    pub text: String,
    /// The search's score (log-probability, length-penalised under beam search).
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_best: Option<Vec<Scored>>,
    /// With `attention`: the best translation's attention (see [`Attention`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
}

/// What the decoder attended to while writing an output.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Attention {
    /// The output's tokens as the target vocabulary spells them (the end-of-sequence token
    /// last, when the output ended with it).
    pub tokens: Vec<String>,
    /// The source tokens (translation); absent for images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_tokens: Option<Vec<String>>,
    /// The image encoder's grid (rows, columns) the weights are laid over, row-major (captioning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<[usize; 2]>,
    /// `weights[i][j]`: output token `i`'s weight on source token (or grid cell) `j`.
    pub weights: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Scored {
    pub text: String,
    pub score: f64,
    /// With `attention`: this output's attention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
}

/// `POST /v1/caption` as JSON; the same fields work as a multipart form (image files as parts,
/// any options as text parts).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CaptionRequest {
    pub model: Option<String>,
    /// JPEG or PNG files, base64-encoded (standard alphabet, padding optional).
    pub images: Vec<String>,
    /// Also return each caption's tokens and their attention over the image grid.
    #[serde(default)]
    pub attention: bool,
    #[serde(flatten)]
    pub decoding: Decoding,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaptionResponse {
    /// One per image, in order: its caption, or why the image could not be used.
    pub captions: Vec<CaptionResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CaptionResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_best: Option<Vec<Scored>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GenerateRequest {
    pub model: Option<String>,
    /// The text to continue (may be empty).
    #[serde(default)]
    pub prompt: String,
    /// Samples to draw (sample `i` uses `seed + i`).
    #[schema(minimum = 1)]
    pub num: Option<usize>,
    /// Tokens to generate after the prompt (the CLI's `--max-tokens`; wins over `max_length`).
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    #[serde(flatten)]
    pub decoding: Decoding,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenerateResponse {
    pub samples: Vec<GeneratedSample>,
}

/// `POST /v1/generate?stream=true`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GenerateQuery {
    /// Answer with Server-Sent Events: a `token` event per generated token (greedy and
    /// sampling; beam search sends only the end), then `done` with the response `stream=false`
    /// would have sent, or `error`.
    #[serde(default)]
    pub stream: bool,
}

/// The data of one event of a streamed generation: a `token` event's [`StreamedToken`], the
/// `done` event's [`GenerateResponse`] or an `error` event's [`ErrorResponse`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StreamEvent {
    Token(StreamedToken),
    Done(GenerateResponse),
    Error(ErrorResponse),
}

/// The data of a `token` event of a streamed generation.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StreamedToken {
    /// Which sample (0 .. num) the token belongs to.
    pub index: usize,
    pub token: u32,
    /// The sample's whole text so far (prompt included).
    pub text: String,
    /// What the token added to `text`; null when decoding it changed earlier characters (a
    /// subword merging with the one before), in which case `text` replaces what was shown.
    pub delta: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NextTokenRequest {
    pub model: Option<String>,
    /// The text whose next token is asked for (may be empty).
    #[serde(default)]
    pub prompt: String,
    /// How many of the most likely tokens to return (default 10).
    #[schema(minimum = 1)]
    pub top: Option<usize>,
    /// Softmax temperature (0: greedy); the model's `decoding:` value when left out.
    #[schema(minimum = 0)]
    pub temperature: Option<f64>,
    /// Keep the k most likely tokens (0: all).
    pub top_k: Option<usize>,
    /// Keep the most likely tokens until their mass reaches p (1: all).
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// The unknown token gets no probability.
    pub forbid_unk: Option<bool>,
}

impl NextTokenRequest {
    /// The sampling options as decoding options (the rest from the model).
    pub fn decoding(&self) -> Decoding {
        Decoding {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            forbid_unk: self.forbid_unk,
            ..Decoding::default()
        }
    }
}

/// The next token's most likely candidates, with their probability before and after each of
/// the sampler's filters. `p_top_p` is what a seeded sample is drawn from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NextTokenResponse {
    /// Most likely first under the model (`p`); their order does not move with the filters.
    pub candidates: Vec<NextCandidate>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct NextCandidate {
    pub token: u32,
    /// The vocabulary's spelling of the token.
    pub text: String,
    /// The model's logit; null for a token the search may never emit (padding, start).
    pub logit: Option<f32>,
    /// softmax(logits): the model's distribution.
    pub p: f32,
    /// After temperature.
    pub p_temperature: f32,
    /// After temperature and top-k, renormalised.
    pub p_top_k: f32,
    /// After temperature, top-k and top-p, renormalised.
    pub p_top_p: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GeneratedSample {
    /// The prompt and its continuation.
    pub text: String,
    /// The continuation's log-probability under the model.
    pub log_prob: f64,
    /// Tokens generated after the prompt.
    pub tokens: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelCard>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// What requests name it by (`--model NAME=DIR`, or the directory's name).
    pub name: String,
    /// `translation`, `captioning` or `generation`.
    pub task: String,
    /// Its OpenNMT `id`: the position in the `--model` order, from 0.
    pub id: usize,
    pub architecture: Vec<String>,
    pub parameters: usize,
    pub vocabularies: Vec<VocabCard>,
    /// The validation record of the kept checkpoint (its `metrics.jsonl` line).
    #[schema(value_type = Option<Object>)]
    pub best_validation: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct VocabCard {
    /// `source` or `target`.
    pub side: String,
    /// `char`, `word` or `bpe`.
    pub level: String,
    pub size: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub models: usize,
    /// Requests decoded so far (all models).
    pub requests: u64,
    /// Batches they were decoded in: fewer than `requests` when dynamic batching joined some.
    pub batches: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ErrorBody {
    /// A stable name: `bad_json`, `unknown_model`, `wrong_task`, `invalid_options`,
    /// `body_too_large`, `too_many_texts`, `text_too_long`, `bad_image`, `timeout`, …
    pub code: String,
    pub message: String,
}

/// One input of OpenNMT-py's `POST /translator/translate`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OnmtInput {
    pub src: String,
    /// The model: its position in the `--model` order, from 0 (as OpenNMT's `conf.json` ids).
    #[serde(default)]
    pub id: usize,
}

/// One output of OpenNMT-py's `POST /translator/translate`.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct OnmtOutput {
    pub src: String,
    pub tgt: String,
    pub n_best: usize,
    pub pred_score: f64,
}
