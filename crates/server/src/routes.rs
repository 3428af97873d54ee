//! The endpoints: health, models, translate, OpenNMT-py's translate, and the OpenAPI document
//! generated from the handlers' annotations (caption, generation and the page have their own
//! files).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use seq2seq_decoder::DecodingOptions;
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::tasks::translation::Translated;
use utoipa::OpenApi;

use crate::api::*;
use crate::app::App;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::worker::{Output, Stats, Work};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "seq2seq serve",
        description = "Translation, captioning and generation with recurrent models trained by seq2seq."
    ),
    paths(
        health,
        models,
        translate,
        crate::caption::caption,
        crate::generation::generate,
        crate::generation::next_token,
        onmt_translate,
        onmt_models
    ),
    components(schemas(crate::caption::CaptionForm))
)]
pub struct ApiDoc;

pub fn router(app: Arc<App>) -> Router {
    let max_body = app.limits.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/translate", post(translate))
        .route("/v1/caption", post(crate::caption::caption))
        .route("/v1/generate", post(crate::generation::generate))
        .route("/v1/next-token", post(crate::generation::next_token))
        .route("/", get(crate::page::index))
        .route("/page.js", get(crate::page::script))
        .route("/page.css", get(crate::page::style))
        .route("/translator/translate", post(onmt_translate))
        .route("/translator/models", get(onmt_models))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// The OpenAPI document, generated from the handlers' types and completed with the served
/// models and limits (see [`crate::openapi`]).
async fn openapi(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(crate::openapi::document(&app))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see GET /openapi.json)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (see GET /openapi.json)",
    )
}

/// Liveness, and how many models are served.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(app): State<Arc<App>>) -> Json<Health> {
    let sum = |f: fn(&Stats) -> &AtomicU64| {
        app.models
            .iter()
            .map(|m| f(&m.stats).load(Ordering::Relaxed))
            .sum()
    };
    Json(Health {
        status: "ok".into(),
        models: app.models.len(),
        requests: sum(|s| &s.requests),
        batches: sum(|s| &s.batches),
    })
}

/// The served models: task, architecture, parameters, vocabularies, best validation.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelsResponse)))]
async fn models(State(app): State<Arc<App>>) -> Json<ModelsResponse> {
    Json(ModelsResponse {
        models: app.models.iter().map(|m| m.card.clone()).collect(),
    })
}

/// Translates texts; concurrent requests with the same options are decoded together.
#[utoipa::path(post, path = "/v1/translate", request_body = TranslateRequest, responses(
    (status = 200, body = TranslateResponse),
    (status = 400, description = "bad JSON, naming the field", body = ErrorResponse),
    (status = 404, description = "unknown model", body = ErrorResponse),
    (status = 413, description = "over a limit, naming it", body = ErrorResponse),
    (status = 422, description = "invalid options or a model of another task", body = ErrorResponse),
    (status = 504, description = "over --timeout-s", body = ErrorResponse),
))]
async fn translate(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<TranslateRequest>,
) -> Result<Json<TranslateResponse>, ApiError> {
    let m = app.model(req.model.as_deref(), Task::Translation)?;
    app.check_count("texts", req.texts.len())?;
    let mut opts = app.options(m, &req.decoding)?;
    opts.attention = req.attention;
    let translations = match app.submit(m, Work::Translate(req.texts), opts).await? {
        Output::Translated(t) => t,
        _ => {
            return Err(ApiError::internal(
                "a translator answered with something else",
            ))
        }
    };
    Ok(Json(TranslateResponse {
        translations: translations
            .into_iter()
            .map(|list| translated(list, req.attention))
            .collect(),
    }))
}

/// OpenNMT-py's REST translation: `[{"src", "id"}]` → `[[{"src", "tgt", "n_best",
/// "pred_score"}]]`, the outer list by rank in the n-best list, the inner by input. `id` is the
/// model's position in the `--model` order; one request uses one model.
#[utoipa::path(post, path = "/translator/translate", request_body = Vec<OnmtInput>, responses(
    (status = 200, body = Vec<Vec<OnmtOutput>>),
    (status = 400, body = ErrorResponse),
    (status = 404, body = ErrorResponse),
    (status = 413, body = ErrorResponse),
    (status = 422, body = ErrorResponse),
))]
async fn onmt_translate(
    State(app): State<Arc<App>>,
    JsonBody(inputs): JsonBody<Vec<OnmtInput>>,
) -> Result<Json<Vec<Vec<OnmtOutput>>>, ApiError> {
    let id = inputs.first().map_or(0, |i| i.id);
    if let Some((k, i)) = inputs.iter().enumerate().find(|(_, i)| i.id != id) {
        return Err(ApiError::bad_request(
            "mixed_models",
            format!(
                "[{k}].id: {} differs from [0].id {id}; one request uses one model",
                i.id
            ),
        ));
    }
    let name = app
        .models
        .get(id)
        .map(|m| m.card.name.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                format!("[0].id: no model {id} (ids 0..{})", app.models.len()),
            )
        })?;
    let m = app.model(Some(&name), Task::Translation)?;
    app.check_count("inputs", inputs.len())?;
    let opts: DecodingOptions = m.decoding.clone();
    let srcs: Vec<String> = inputs.into_iter().map(|i| i.src).collect();
    let nbest: Vec<Vec<(String, f64)>> =
        match app.submit(m, Work::Translate(srcs.clone()), opts).await? {
            Output::Translated(t) => t
                .into_iter()
                .map(|l| l.into_iter().map(|t| (t.text, t.score)).collect())
                .collect(),
            _ => {
                return Err(ApiError::internal(
                    "a translator answered with something else",
                ))
            }
        };
    let ranks = nbest.iter().map(Vec::len).max().unwrap_or(1);
    let mut out: Vec<Vec<OnmtOutput>> = (0..ranks).map(|_| Vec::new()).collect();
    for (src, list) in srcs.iter().zip(&nbest) {
        for (rank, (tgt, score)) in list.iter().enumerate() {
            out[rank].push(OnmtOutput {
                src: src.clone(),
                tgt: tgt.clone(),
                n_best: list.len(),
                pred_score: *score,
            });
        }
    }
    Ok(Json(out))
}

/// OpenNMT-py's model list: each served model with its `id`.
#[utoipa::path(get, path = "/translator/models", responses((status = 200, body = Vec<ModelCard>)))]
async fn onmt_models(State(app): State<Arc<App>>) -> Json<Vec<ModelCard>> {
    Json(app.models.iter().map(|m| m.card.clone()).collect())
}

/// One output of an n-best list: text, score and (when asked for) attention.
pub(crate) type Ranked = (String, f64, Option<Attention>);

/// The best of an n-best list, with the whole list when it holds more than one.
pub(crate) fn hypothesis(list: Vec<Ranked>) -> Hypothesis {
    let (text, score, attention) = list.first().cloned().unwrap_or_default();
    let n_best = (list.len() > 1).then(|| {
        list.into_iter()
            .map(|(text, score, attention)| Scored {
                text,
                score,
                attention,
            })
            .collect()
    });
    Hypothesis {
        text,
        score,
        n_best,
        attention,
    }
}

fn translated(list: Vec<Translated>, attention: bool) -> Hypothesis {
    hypothesis(
        list.into_iter()
            .map(|t| {
                let a = attention.then_some(Attention {
                    tokens: t.tokens,
                    source_tokens: Some(t.source_tokens),
                    grid: None,
                    weights: t.attention,
                });
                (t.text, t.score, a)
            })
            .collect(),
    )
}
