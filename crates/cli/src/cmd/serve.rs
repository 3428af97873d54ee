//! `seq2seq serve`: trained models behind an HTTP API (the `seq2seq-server` crate does the work).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use seq2seq_server::{serve, signal, Limits};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// A model directory, or NAME=DIR to name it (the default name is the directory's own);
    /// repeat for several models of any task. OpenNMT-py clients pick one by its position
    /// here (`id`, from 0).
    #[arg(long = "model", required = true, value_name = "[NAME=]DIR")]
    models: Vec<String>,
    /// The address to listen on; anything but loopback exposes the models to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Rows (texts or images) of concurrent requests decoded together.
    #[arg(long, default_value_t = Limits::default().max_batch)]
    max_batch: usize,
    /// How long a request waits for others to batch with, in milliseconds.
    #[arg(long, default_value_t = Limits::default().max_wait_ms)]
    max_wait_ms: u64,
    /// Request body bytes.
    #[arg(long, default_value_t = Limits::default().max_body)]
    max_body: usize,
    /// Seconds a request may take, waiting in the queue included.
    #[arg(long, default_value_t = Limits::default().timeout_s)]
    timeout_s: f64,
    /// Texts or images per request, and samples per generation request.
    #[arg(long, default_value_t = Limits::default().max_texts)]
    max_texts: usize,
    /// Tokens of a generation prompt.
    #[arg(long, default_value_t = Limits::default().max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// Output tokens (`max_length`, `max_tokens`) a request may ask for.
    #[arg(long, default_value_t = Limits::default().max_output_tokens)]
    max_output_tokens: usize,
    /// Beam size and n-best list length a request may ask for.
    #[arg(long, default_value_t = Limits::default().max_beam)]
    max_beam: usize,
    /// Where the models run: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: seq2seq_pipeline::DeviceChoice,
}

pub(crate) fn run(a: ServeArgs) -> Result<()> {
    let models = a
        .models
        .iter()
        .map(|m| named_model(m))
        .collect::<Result<Vec<_>>>()?;
    if !(a.timeout_s > 0.0 && a.timeout_s.is_finite()) {
        return Err(anyhow!(
            "--timeout-s {}: must be a positive number of seconds",
            a.timeout_s
        ));
    }
    let limits = Limits {
        max_batch: a.max_batch,
        max_wait_ms: a.max_wait_ms,
        max_body: a.max_body,
        max_texts: a.max_texts,
        max_prompt_tokens: a.max_prompt_tokens,
        max_output_tokens: a.max_output_tokens,
        max_beam: a.max_beam,
        timeout_s: a.timeout_s,
        device: a.device,
    };
    let addr = format!("{}:{}", a.host, a.port);
    serve(&models, &addr, limits, announce, signal())?;
    eprintln!("stopped");
    Ok(())
}

/// `NAME=DIR`, or `DIR` named by its last component.
fn named_model(arg: &str) -> Result<(String, PathBuf)> {
    if let Some((name, dir)) = arg.split_once('=') {
        if !name.is_empty() && !name.contains('/') {
            return Ok((name.to_string(), PathBuf::from(dir)));
        }
    }
    let dir = PathBuf::from(arg);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("--model {arg}: give NAME=DIR (this path has no name to use)"))?;
    Ok((name, dir))
}

fn announce(addr: std::net::SocketAddr, cards: &[seq2seq_server::api::ModelCard]) {
    for c in cards {
        eprintln!(
            "model {:?} (id {}): {}, {} parameters",
            c.name, c.id, c.task, c.parameters
        );
    }
    eprintln!("listening on http://{addr} (API description: /openapi.json; Ctrl-C stops)");
}
