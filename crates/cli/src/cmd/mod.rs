//! One file per subcommand: its flags (a clap `Args` struct) and its `run`, which calls the
//! pipeline and prints. Nothing here trains, decodes or scores by itself.

use std::io::BufRead;

use anyhow::{Context, Result};

pub(crate) mod average;
pub(crate) mod bench;
pub(crate) mod caption;
pub(crate) mod data;
pub(crate) mod eval;
pub(crate) mod generate;
pub(crate) mod info;
pub(crate) mod plot;
pub(crate) mod score;
pub(crate) mod score_model;
pub(crate) mod serve;
pub(crate) mod train;
pub(crate) mod translate;

/// Every line of stdin, an invalid one named by its number.
pub(crate) fn read_stdin_lines() -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (i, l) in std::io::stdin().lock().lines().enumerate() {
        lines.push(l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?);
    }
    Ok(lines)
}
