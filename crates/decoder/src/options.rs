//! The decoding options shared by every pipeline, the config's `decoding` section and every CLI
//! subcommand.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The most likely token at each step.
    #[default]
    Greedy,
    /// Sampling from the (temperature-scaled, top-k / top-p filtered) distribution.
    Sample,
    /// Beam search with GNMT length normalisation.
    Beam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodingOptions {
    pub strategy: Strategy,
    /// Softmax temperature for sampling (→ 0 approaches greedy).
    pub temperature: f64,
    /// Sample only among the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Sample only within the smallest set of tokens whose probability reaches p (1 = off).
    pub top_p: f64,
    pub beam_size: usize,
    /// GNMT length penalty α: hypotheses are ranked by log p / ((5 + len) / 6)^α.
    pub length_penalty: f64,
    /// Hypotheses returned per input (beam search; at most beam_size).
    pub n_best: usize,
    /// eos is forbidden before this many tokens.
    pub min_length: usize,
    /// Hard cap on generated tokens.
    pub max_length: usize,
    /// Forbid repeating any n-gram of this size within a hypothesis (0 = off).
    pub no_repeat_ngram: usize,
    /// Seed for sampling; input i of a request uses seed + i, so results do not depend on batching.
    pub seed: u64,
    /// Never emit the unknown token.
    pub forbid_unk: bool,
    /// Inputs decoded together.
    pub batch_size: usize,
    /// Keep the attention weights of every output step in the hypotheses (a request option,
    /// never part of a config).
    #[serde(skip)]
    pub attention: bool,
    /// The sampling seed of each input, in input order, in place of `seed + i` (a request
    /// option: a server decoding several requests together gives each row its own request's
    /// seed, so that the result does not depend on what it was batched with).
    #[serde(skip)]
    pub row_seeds: Option<Vec<u64>>,
    /// Called with (input index, token) as greedy or sampling search chooses each token, eos
    /// excepted (a request option, for streaming; beam search knows its outputs only at the
    /// end and never calls it). Returning false ends the search after this step: whoever
    /// listened has gone.
    #[serde(skip)]
    pub on_token: Option<TokenHook>,
}

/// A per-step callback of the token-by-token strategies. The search only calls it: what it does
/// with a token (print it, send it over HTTP) is the caller's business; its answer says whether
/// to go on.
#[derive(Clone)]
pub struct TokenHook(pub Arc<dyn Fn(usize, u32) -> bool + Send + Sync>);

impl TokenHook {
    pub fn new(f: impl Fn(usize, u32) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for TokenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHook")
    }
}

/// Two hooks are equal when they are the same closure.
impl PartialEq for TokenHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for DecodingOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Greedy,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            beam_size: 5,
            length_penalty: 1.0,
            n_best: 1,
            min_length: 0,
            max_length: 100,
            no_repeat_ngram: 0,
            seed: 0,
            forbid_unk: false,
            batch_size: 64,
            attention: false,
            row_seeds: None,
            on_token: None,
        }
    }
}

/// The decoding options out of range, one line each, naming the option.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct InvalidOptions(pub Vec<String>);

impl DecodingOptions {
    /// Range checks, naming the option.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        let mut e = Vec::new();
        if self.max_length == 0 {
            e.push("max_length: must be at least 1".to_string());
        }
        if self.batch_size == 0 {
            e.push("batch_size: must be at least 1".to_string());
        }
        if self.beam_size == 0 {
            e.push("beam_size: must be at least 1".to_string());
        }
        if self.n_best == 0 || (self.strategy == Strategy::Beam && self.n_best > self.beam_size) {
            e.push(format!(
                "n_best: must be between 1 and beam_size ({}), got {}",
                self.beam_size, self.n_best
            ));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            e.push(format!(
                "temperature: must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            e.push(format!("top_p: must be in (0, 1], got {}", self.top_p));
        }
        if !self.length_penalty.is_finite() {
            e.push("length_penalty: must be finite".to_string());
        }
        if self.min_length > self.max_length {
            e.push(format!(
                "min_length ({}) exceeds max_length ({})",
                self.min_length, self.max_length
            ));
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(InvalidOptions(e))
        }
    }
}
