//! The server's state: the models by name, each with its worker, the limits, and the two steps
//! every handler shares (resolving the decoding options, submitting a job and awaiting it).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::StatusCode;
use seq2seq_decoder::{DecodingOptions, Strategy};
use seq2seq_image_encoder::preprocess::ImageLimits;
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::info::model_info;
use seq2seq_pipeline::tasks::captioning::corpus::image_limits;
use seq2seq_pipeline::{Captioner, Config, Generator, Translator};
use tokio::sync::oneshot;

use crate::api::{Decoding, ModelCard, StrategyName, VocabCard};
use crate::error::ApiError;
use crate::worker::{self, Batching, Job, Loaded, Output, Stats, Work};
use crate::{Limits, ServeError};

/// One served model.
pub struct Served {
    pub card: ModelCard,
    pub task: Task,
    /// The model's own `decoding:` section: what a request's options start from.
    pub decoding: DecodingOptions,
    /// The longest source a translation model was trained for (`data.max_src_len`).
    pub max_src_tokens: usize,
    pub images: ImageLimits,
    jobs: Sender<Job>,
    pub stats: Arc<Stats>,
}

pub struct App {
    pub models: Vec<Served>,
    pub limits: Limits,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl App {
    /// Loads every model (name, directory) and starts its worker.
    pub fn load(models: &[(String, PathBuf)], limits: Limits) -> Result<Self, ServeError> {
        let batching = Batching {
            max_batch: limits.max_batch.max(1),
            max_wait: Duration::from_millis(limits.max_wait_ms),
            max_prompt_tokens: limits.max_prompt_tokens,
        };
        let device = limits
            .device
            .resolve()
            .map_err(|e| ServeError::Device(Box::new(e)))?;
        let mut served = Vec::with_capacity(models.len());
        let mut workers = Vec::with_capacity(models.len());
        for (id, (name, dir)) in models.iter().enumerate() {
            if served.iter().any(|s: &Served| &s.card.name == name) {
                return Err(ServeError::DuplicateName(name.clone()));
            }
            let load = |e| ServeError::Load(dir.clone(), Box::new(e));
            let (card, cfg) = card(name, id, dir).map_err(load)?;
            let loaded = match cfg.task {
                Task::Translation => {
                    Loaded::Translator(Translator::load_on(dir, &device).map_err(load)?)
                }
                Task::Captioning => {
                    Loaded::Captioner(Captioner::load_on(dir, &device).map_err(load)?)
                }
                Task::Generation => {
                    Loaded::Generator(Generator::load_on(dir, &device).map_err(load)?)
                }
            };
            let stats = Arc::new(Stats::default());
            let (jobs, handle) = worker::spawn(name, loaded, batching, stats.clone())?;
            workers.push(handle);
            served.push(Served {
                card,
                task: cfg.task,
                decoding: cfg.decoding.clone(),
                max_src_tokens: cfg.data.max_src_len,
                images: image_limits(&cfg.data),
                jobs,
                stats,
            });
        }
        Ok(Self {
            models: served,
            limits,
            workers: Mutex::new(workers),
        })
    }

    /// The model a request names (the first of `task` when it names none), which must do `task`.
    pub fn model(&self, name: Option<&str>, task: Task) -> Result<&Served, ApiError> {
        let m = match name {
            None => self.models.iter().find(|m| m.task == task).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_model",
                    format!("model: no {} model is served", task_name(task)),
                )
            })?,
            Some(n) => self
                .models
                .iter()
                .find(|m| m.card.name == n)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        self.models.iter().map(|m| m.card.name.as_str()).collect();
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_model",
                        format!(
                            "model: no model named {:?} (served: {})",
                            n,
                            names.join(", ")
                        ),
                    )
                })?,
        };
        if m.task != task {
            return Err(ApiError::unprocessable(
                "wrong_task",
                format!(
                    "model: {:?} is a {} model; this endpoint needs a {} model",
                    m.card.name,
                    m.card.task,
                    task_name(task)
                ),
            ));
        }
        Ok(m)
    }

    /// Refuses more than `--max-texts` inputs in one request.
    pub fn check_count(&self, field: &str, n: usize) -> Result<(), ApiError> {
        if n > self.limits.max_texts {
            return Err(ApiError::unprocessable(
                "too_many_texts",
                format!(
                    "{field}: {n} items, over the limit of {} per request (--max-texts)",
                    self.limits.max_texts
                ),
            ));
        }
        Ok(())
    }

    /// The model's decoding section with the request's options over it, range-checked.
    pub fn options(&self, m: &Served, d: &Decoding) -> Result<DecodingOptions, ApiError> {
        let mut o = m.decoding.clone();
        if let Some(s) = d.strategy {
            o.strategy = match s {
                StrategyName::Greedy => Strategy::Greedy,
                StrategyName::Sample => Strategy::Sample,
                StrategyName::Beam => Strategy::Beam,
            };
        }
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = d.$f { o.$f = v; })* };
        }
        set!(
            temperature,
            top_k,
            top_p,
            beam_size,
            length_penalty,
            n_best,
            max_length,
            min_length,
            no_repeat_ngram,
            seed,
            forbid_unk
        );
        let l = &self.limits;
        let out = l.max_output_tokens;
        let checks = [
            (
                "max_length",
                o.max_length,
                out,
                "output tokens",
                "--max-output-tokens",
            ),
            (
                "min_length",
                o.min_length,
                out,
                "output tokens",
                "--max-output-tokens",
            ),
            (
                "no_repeat_ngram",
                o.no_repeat_ngram,
                out,
                "tokens",
                "--max-output-tokens",
            ),
            (
                "beam_size",
                o.beam_size,
                l.max_beam,
                "hypotheses",
                "--max-beam",
            ),
            ("n_best", o.n_best, l.max_beam, "hypotheses", "--max-beam"),
            (
                "top_k",
                o.top_k,
                MAX_TOP_K,
                "tokens",
                "the largest vocabulary",
            ),
        ];
        for (field, v, max, what, flag) in checks {
            if v > max {
                return Err(ApiError::unprocessable(
                    "over_limit",
                    format!("{field}: {v} {what}, over the limit of {max} ({flag})"),
                ));
            }
        }
        // As in Transformers and OpenNMT-py, a minimum above the maximum means the maximum.
        o.min_length = o.min_length.min(o.max_length);
        o.validate()
            .map_err(|e| ApiError::unprocessable("invalid_options", e.to_string()))?;
        Ok(o)
    }

    /// Hands the work to the model's worker and awaits the result within `--timeout-s`.
    pub async fn submit(
        &self,
        m: &Served,
        work: Work,
        opts: DecodingOptions,
    ) -> Result<Output, ApiError> {
        let (reply, answer) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        // Dropped when this future ends (answered, timed out, or its client gone): whatever is
        // still running for it may stop.
        let _guard = Abandon(abandoned.clone());
        m.jobs
            .send(Job::new(work, opts, reply, abandoned))
            .map_err(|_| stopped())?;
        let limit = Duration::from_secs_f64(self.limits.timeout_s);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            // The worker dropped the reply: it failed on this batch, or it has stopped.
            Ok(Err(_)) => Err(ApiError::internal(
                "the model failed on this request (the server goes on; see its log)",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {} s (--timeout-s)",
                    self.limits.timeout_s
                ),
            )),
        }
    }

    /// Stops the workers once no request can reach them any more (after the server stopped).
    pub fn shut_down(self) {
        let App {
            models, workers, ..
        } = self;
        drop(models);
        for w in workers.into_inner().unwrap_or_default() {
            let _ = w.join();
        }
    }
}

/// Marks a job abandoned when dropped.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// No vocabulary is larger; a bound the OpenAPI document can state.
pub const MAX_TOP_K: usize = u32::MAX as usize;

fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the model's worker has stopped",
    )
}

pub fn task_name(t: Task) -> &'static str {
    match t {
        Task::Translation => "translation",
        Task::Captioning => "captioning",
        Task::Generation => "generation",
    }
}

/// What `GET /v1/models` says of a model, and its config.
fn card(name: &str, id: usize, dir: &Path) -> seq2seq_pipeline::Result<(ModelCard, Config)> {
    let info = model_info(dir)?;
    let cfg = Config::from_file(&dir.join(seq2seq_pipeline::model_dir::CONFIG))?;
    let card = ModelCard {
        name: name.to_string(),
        task: task_name(info.task).to_string(),
        id,
        architecture: info.architecture,
        parameters: info.total_parameters,
        vocabularies: info
            .vocabularies
            .into_iter()
            .map(|v| VocabCard {
                side: v.side.to_string(),
                level: v.level,
                size: v.size,
            })
            .collect(),
        best_validation: info.best_validation,
    };
    Ok((card, cfg))
}
