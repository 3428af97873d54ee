//! The endpoints: health, models, translate, caption, generate, OpenNMT-py's translate, and the
//! OpenAPI document generated from the handlers' annotations.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use seq2seq_decoder::DecodingOptions;
use seq2seq_image_encoder::preprocess::decode_rgb;
use seq2seq_pipeline::config::Task;
use utoipa::OpenApi;

use crate::api::*;
use crate::app::App;
use crate::body::{parse, read_body, too_large, whole_numbers_as_integers, JsonBody};
use crate::error::ApiError;
use crate::worker::{Output, Stats, Work};
use seq2seq_pipeline::tasks::captioning::Captioned;
use seq2seq_pipeline::tasks::translation::Translated;

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
        caption,
        crate::generation::generate,
        crate::generation::next_token,
        onmt_translate,
        onmt_models
    ),
    components(schemas(CaptionForm))
)]
pub struct ApiDoc;

pub fn router(app: Arc<App>) -> Router {
    let max_body = app.limits.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/translate", post(translate))
        .route("/v1/caption", post(caption))
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

/// The multipart form of `POST /v1/caption`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CaptionForm {
    model: Option<String>,
    /// One part per image file (JPEG or PNG); any part name other than the options'.
    #[schema(value_type = Vec<String>, format = Binary, required = false)]
    image: Vec<Vec<u8>>,
    /// Decoding options as text parts, by their JSON names (`strategy`, `beam_size`, …).
    strategy: Option<StrategyName>,
}

/// Captions images (base64 JSON or multipart files); an image that cannot be used gets its own
/// error in its place, the others their captions.
#[utoipa::path(post, path = "/v1/caption",
    request_body(content(
        (CaptionRequest = "application/json"),
        (CaptionForm = "multipart/form-data")
    )),
    responses(
        (status = 200, body = CaptionResponse),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 413, body = ErrorResponse),
        (status = 422, body = ErrorResponse),
        (status = 504, body = ErrorResponse),
))]
async fn caption(
    State(app): State<Arc<App>>,
    req: Request,
) -> Result<Json<CaptionResponse>, ApiError> {
    let (model, files, decoding, attention) = caption_inputs(req, &app).await?;
    let m = app.model(model.as_deref(), Task::Captioning)?;
    app.check_count("images", files.len())?;
    let mut opts = app.options(m, &decoding)?;
    opts.attention = attention;
    let limits = m.images;
    // Decoding pictures is heavy: off the async threads.
    let decoded = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(name, bytes)| {
                let data = bytes?;
                decode_rgb(&data, &PathBuf::from(&name), &limits)
                    .map_err(|e| ApiError::unprocessable("bad_image", e.to_string()))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let good: Vec<_> = decoded
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut captions = if good.is_empty() {
        Vec::new()
    } else {
        match app.submit(m, Work::Caption(good), opts).await? {
            Output::Captioned(c) => c,
            _ => {
                return Err(ApiError::internal(
                    "a captioner answered with something else",
                ))
            }
        }
    }
    .into_iter();
    let results = decoded
        .into_iter()
        .map(|r| match r {
            Ok(_) => captioned(captions.next().unwrap_or_default(), attention),
            Err(e) => CaptionResult {
                text: None,
                score: None,
                n_best: None,
                attention: None,
                error: Some(e.body()),
            },
        })
        .collect();
    Ok(Json(CaptionResponse { captions: results }))
}

/// An image's name and its bytes (or why they could not be read).
type File = (String, Result<Vec<u8>, ApiError>);

/// The model, images, options and attention flag of a caption request, from JSON or a
/// multipart form.
async fn caption_inputs(
    req: Request,
    app: &Arc<App>,
) -> Result<(Option<String>, Vec<File>, Decoding, bool), ApiError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let bytes = read_body(req, app).await?;
        let r: CaptionRequest = parse(&bytes)?;
        let files = r
            .images
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("images[{i}]"), base64_image(b)))
            .collect();
        return Ok((r.model, files, r.decoding, r.attention));
    }
    let mut form = Multipart::from_request(req, app)
        .await
        .map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    let (mut model, mut files, mut fields) = (None, Vec::new(), serde_json::Map::new());
    let mut attention = false;
    let mut seen = std::collections::HashSet::new();
    let read_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(app)
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    };
    while let Some(field) = form.next_field().await.map_err(read_error)? {
        let name = field.name().unwrap_or("").to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(read_error)?;
        let option = file.is_none() && (name == "model" || name == "attention");
        let option = option || (file.is_none() && DECODING_KEYS.contains(&name.as_str()));
        if option && !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(
                "bad_body",
                format!("{name}: given twice (one value per option)"),
            ));
        }
        if name == "model" {
            model = Some(String::from_utf8_lossy(&bytes).into_owned());
        } else if name == "attention" && file.is_none() {
            attention = match &bytes[..] {
                b"true" => true,
                b"false" => false,
                _ => {
                    return Err(ApiError::bad_request(
                        "bad_body",
                        "attention: expected true or false",
                    ))
                }
            };
        } else if DECODING_KEYS.contains(&name.as_str()) && file.is_none() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            // Numbers and booleans arrive as text: read them as JSON where they parse.
            let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            fields.insert(name, v);
        } else if let Some(file) = file {
            files.push((file, Ok(bytes.to_vec())));
        } else {
            return Err(ApiError::bad_request(
                "bad_body",
                format!(
                    "{name:?}: neither an option ({}) nor a file part (images are sent as files)",
                    DECODING_KEYS.join(", ")
                ),
            ));
        }
    }
    let mut fields = serde_json::Value::Object(fields);
    whole_numbers_as_integers(&mut fields);
    let decoding = serde_path_to_error::deserialize(fields)
        .map_err(|e| ApiError::bad_request("bad_body", format!("{}: {}", e.path(), e.inner())))?;
    Ok((model, files, decoding, attention))
}

/// Standard base64 (padding optional), or a `data:` URL holding it.
fn base64_image(text: &str) -> Result<Vec<u8>, ApiError> {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let payload = match text.strip_prefix("data:") {
        Some(url) => url.split_once(',').map_or(url, |(_, b)| b),
        None => text,
    };
    engine
        .decode(payload.trim())
        .map_err(|e| ApiError::unprocessable("bad_image", format!("not base64: {e}")))
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
type Ranked = (String, f64, Option<Attention>);

/// The best of an n-best list, with the whole list when it holds more than one.
fn hypothesis(list: Vec<Ranked>) -> Hypothesis {
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

fn captioned(list: Vec<Captioned>, attention: bool) -> CaptionResult {
    let h = hypothesis(
        list.into_iter()
            .map(|c| {
                let a = attention.then_some(Attention {
                    tokens: c.tokens,
                    source_tokens: None,
                    grid: Some([c.grid.0, c.grid.1]),
                    weights: c.attention,
                });
                (c.text, c.score, a)
            })
            .collect(),
    );
    CaptionResult {
        text: Some(h.text),
        score: Some(h.score),
        n_best: h.n_best,
        attention: h.attention,
        error: None,
    }
}
