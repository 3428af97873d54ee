//! `seq2seq serve`: trained models behind an HTTP API — `/v1/translate`, `/v1/caption`,
//! `/v1/generate` (streamed as Server-Sent Events on request), `/v1/next-token`, `/v1/models`,
//! `/health`, OpenNMT-py's `/translator/translate`, `/openapi.json` generated from the handler
//! types — and a web page at `/` that uses them.
//!
//! Invariants: models run on their own worker threads, never on the async runtime's; a result
//! never depends on what it was batched with (see [`worker`]); every failure is a JSON error
//! with its status, never a panic or a dropped connection. This crate depends on `pipeline`;
//! no library depends on it (only the CLI's `serve` command calls it). It never prints: the
//! caller learns the address through `ready`.

pub mod api;
pub mod app;
pub mod body;
pub mod caption;
mod continuous;
pub mod error;
pub mod generation;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use app::App;
pub use error::ApiError;
pub use routes::{router, ApiDoc};

/// The server's limits and batching; each is a `serve` flag of the same name.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Rows (texts or images) decoded together across concurrent requests.
    pub max_batch: usize,
    /// How long a request waits for others to batch with, in milliseconds.
    pub max_wait_ms: u64,
    /// Request body bytes.
    pub max_body: usize,
    /// Texts or images per request, and samples per generation request.
    pub max_texts: usize,
    /// Tokens of a generation prompt.
    pub max_prompt_tokens: usize,
    /// `max_length` (output tokens) a request may ask for.
    pub max_output_tokens: usize,
    /// `beam_size` and `n_best` a request may ask for.
    pub max_beam: usize,
    /// Seconds a request may take, queueing included.
    pub timeout_s: f64,
    /// Where the models run.
    pub device: seq2seq_pipeline::DeviceChoice,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait_ms: 5,
            max_body: 16 << 20,
            max_texts: 256,
            max_prompt_tokens: 2048,
            max_output_tokens: 1024,
            max_beam: 64,
            timeout_s: 60.0,
            device: seq2seq_pipeline::DeviceChoice::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--model {0}: {1}")]
    Load(PathBuf, Box<seq2seq_pipeline::Error>),
    #[error("--model: the name {0:?} is given twice")]
    DuplicateName(String),
    #[error("no --model given")]
    NoModels,
    #[error("--device: {0}")]
    Device(Box<seq2seq_pipeline::Error>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads the models, listens on `addr` (port 0: any free port), calls `ready` with the bound
/// address and the loaded models' cards, and serves until `shutdown` completes; then stops
/// accepting, finishes the requests in flight and stops the workers.
pub fn serve(
    models: &[(String, PathBuf)],
    addr: &str,
    limits: Limits,
    ready: impl FnOnce(SocketAddr, &[api::ModelCard]),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if models.is_empty() {
        return Err(ServeError::NoModels);
    }
    let app = Arc::new(App::load(models, limits)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let cards: Vec<api::ModelCard> = app.models.iter().map(|m| m.card.clone()).collect();
        ready(listener.local_addr()?, &cards);
        axum::serve(listener, router(app.clone()))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok::<_, ServeError>(())
    })?;
    drop(rt);
    // Every handler has finished; the last reference stops the workers.
    if let Ok(app) = Arc::try_unwrap(app) {
        app.shut_down();
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
