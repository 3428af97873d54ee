//! The language-model endpoints: `POST /v1/generate` (whole samples, or streamed as
//! Server-Sent Events with `?stream=true`) and `POST /v1/next-token` (the next token's
//! distribution before and after each sampling filter, for showing what they do).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use seq2seq_decoder::DecodingOptions;
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::Piece;
use tokio::sync::mpsc;

use crate::api::*;
use crate::app::{App, Served, MAX_TOP_K};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::worker::{Output, Work};

/// Continues a prompt with a language model (`num` samples, sample `i` seeded `seed + i`).
/// With `?stream=true` the answer is `text/event-stream`: a `token` event per generated token
/// ([`StreamedToken`]), then one `done` event holding this response, or an `error` event
/// holding an [`ErrorResponse`].
#[utoipa::path(post, path = "/v1/generate", params(GenerateQuery), request_body = GenerateRequest,
    responses(
        (status = 200, description = "the samples; with `stream=true`, the events", content(
            (GenerateResponse = "application/json"),
            (StreamEvent = "text/event-stream")
        )),
        (status = 400, body = ErrorResponse),
        (status = 404, body = ErrorResponse),
        (status = 413, body = ErrorResponse),
        (status = 422, body = ErrorResponse),
        (status = 504, body = ErrorResponse),
))]
pub async fn generate(
    State(app): State<Arc<App>>,
    query: Result<Query<GenerateQuery>, QueryRejection>,
    JsonBody(req): JsonBody<GenerateRequest>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let m = app.model(req.model.as_deref(), Task::Generation)?;
    let (num, opts) = generation_options(&app, m, &req)?;
    if !query.stream {
        let work = Work::Generate {
            prompt: req.prompt,
            num,
            stream: None,
        };
        let out = app.submit(m, work, opts).await?;
        return Ok(Json(samples(out)?).into_response());
    }
    Ok(stream(app.clone(), m.card.name.clone(), req.prompt, num, opts).into_response())
}

/// The sample count and decoding options of a generation request (`max_tokens` wins over
/// `max_length`).
fn generation_options(
    app: &App,
    m: &Served,
    req: &GenerateRequest,
) -> Result<(usize, DecodingOptions), ApiError> {
    let num = req.num.unwrap_or(1);
    if num == 0 {
        return Err(ApiError::unprocessable(
            "invalid_options",
            "num: must be at least 1",
        ));
    }
    app.check_count("num", num)?;
    let opts = app.options(m, &req.decoding)?;
    if req.max_tokens.is_none() {
        return Ok((num, opts));
    }
    // Both are checked: `max_tokens` wins, but a bad `max_length` is still an error.
    let mut decoding = req.decoding.clone();
    decoding.max_length = req.max_tokens;
    Ok((num, app.options(m, &decoding)?))
}

fn samples(out: Output) -> Result<GenerateResponse, ApiError> {
    let Output::Samples(samples) = out else {
        return Err(ApiError::internal(
            "a generator answered with something else",
        ));
    };
    Ok(GenerateResponse {
        samples: samples
            .into_iter()
            .map(|s| GeneratedSample {
                text: s.text,
                log_prob: s.log_prob,
                tokens: s.tokens.len(),
            })
            .collect(),
    })
}

/// What the worker and the request's task send to the event stream.
enum Streamed {
    Piece(Piece),
    Done(Result<GenerateResponse, ApiError>),
}

/// The event stream of one generation: the worker sends each token as the search chooses it;
/// a task awaits the whole result (within `--timeout-s`) and sends it last.
fn stream(
    app: Arc<App>,
    model: String,
    prompt: String,
    num: usize,
    opts: DecodingOptions,
) -> Sse<impl futures_util::Stream<Item = Result<Event, axum::Error>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let pieces = tx.clone();
    let work = Work::Generate {
        prompt,
        num,
        // A client that went away stops the generation at the next token.
        stream: Some(Box::new(move |p| pieces.send(Streamed::Piece(p)).is_ok())),
    };
    tokio::spawn(async move {
        let m = match app.model(Some(&model), Task::Generation) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Streamed::Done(Err(e)));
                return;
            }
        };
        // Dropping the submission when the client has gone takes a queued job off the worker
        // (its reply is closed); a running one stops through the sink above.
        let result = tokio::select! {
            r = app.submit(m, work, opts) => r.and_then(samples),
            _ = tx.closed() => return,
        };
        let _ = tx.send(Streamed::Done(result));
    });
    let events = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let event = match rx.recv().await? {
            Streamed::Piece(p) => Event::default().event("token").json_data(StreamedToken {
                index: p.index,
                token: p.token,
                text: p.text,
                delta: p.delta,
            }),
            Streamed::Done(Ok(r)) => {
                return Some((Event::default().event("done").json_data(r), (rx, true)))
            }
            Streamed::Done(Err(e)) => {
                let body = ErrorResponse { error: e.body() };
                return Some((Event::default().event("error").json_data(body), (rx, true)));
            }
        };
        Some((event, (rx, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The distribution of the token after a prompt: the `top` most likely tokens, each with its
/// probability under the model, after temperature, after top-k and after top-p (the last is
/// what `POST /v1/generate` samples from with the same options).
#[utoipa::path(post, path = "/v1/next-token", request_body = NextTokenRequest, responses(
    (status = 200, body = NextTokenResponse),
    (status = 400, body = ErrorResponse),
    (status = 404, body = ErrorResponse),
    (status = 413, body = ErrorResponse),
    (status = 422, body = ErrorResponse),
    (status = 504, body = ErrorResponse),
))]
pub async fn next_token(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<NextTokenRequest>,
) -> Result<Json<NextTokenResponse>, ApiError> {
    let m = app.model(req.model.as_deref(), Task::Generation)?;
    let top = req.top.unwrap_or(10);
    if top == 0 {
        return Err(ApiError::unprocessable(
            "invalid_options",
            "top: must be at least 1",
        ));
    }
    if top > MAX_TOP_K {
        return Err(ApiError::unprocessable(
            "over_limit",
            format!("top: {top} tokens, over the limit of {MAX_TOP_K} (the largest vocabulary)"),
        ));
    }
    let opts = app.options(m, &req.decoding())?;
    let work = Work::NextToken {
        prompt: req.prompt,
        top,
    };
    let Output::NextToken(candidates) = app.submit(m, work, opts).await? else {
        return Err(ApiError::internal(
            "a generator answered with something else",
        ));
    };
    Ok(Json(NextTokenResponse {
        candidates: candidates
            .into_iter()
            .map(|(c, text)| NextCandidate {
                token: c.token,
                text,
                logit: c.logit.is_finite().then_some(c.logit),
                p: c.p,
                p_temperature: c.p_temperature,
                p_top_k: c.p_top_k,
                p_top_p: c.p_top_p,
            })
            .collect(),
    }))
}
