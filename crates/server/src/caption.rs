//! `POST /v1/caption`: images as base64 JSON or multipart files, each decoded off the async
//! threads within the image limits; an image that cannot be used gets its own error in its
//! place, the others their captions.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use seq2seq_image_encoder::preprocess::decode_rgb;
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::tasks::captioning::Captioned;

use crate::api::*;
use crate::app::App;
use crate::body::{parse, read_body, too_large, whole_numbers_as_integers};
use crate::error::ApiError;
use crate::routes::hypothesis;
use crate::worker::{Output, Work};

/// The multipart form of `POST /v1/caption`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct CaptionForm {
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
pub(crate) async fn caption(
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
