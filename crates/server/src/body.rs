//! Request bodies: JSON read within `--max-body`, unknown keys refused, and every error naming
//! the field (`texts[2]: invalid type …`) or the place in the text (line and column).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::api::{
    CaptionRequest, Decoding, GenerateRequest, NextTokenRequest, OnmtInput, TranslateRequest,
    DECODING_KEYS,
};
use crate::app::App;
use crate::error::ApiError;

/// The top-level keys a request type reads (beyond the decoding options where it takes them).
pub trait Keys {
    /// `None` for a body that is not an object (OpenNMT's list).
    const OWN: Option<&'static [&'static str]>;
    const DECODING: bool = true;
}

impl Keys for TranslateRequest {
    const OWN: Option<&'static [&'static str]> = Some(&["model", "texts", "attention"]);
}
impl Keys for CaptionRequest {
    const OWN: Option<&'static [&'static str]> = Some(&["model", "images", "attention"]);
}
impl Keys for GenerateRequest {
    const OWN: Option<&'static [&'static str]> = Some(&["model", "prompt", "num", "max_tokens"]);
}
impl Keys for NextTokenRequest {
    const OWN: Option<&'static [&'static str]> = Some(&[
        "model",
        "prompt",
        "top",
        "temperature",
        "top_k",
        "top_p",
        "forbid_unk",
    ]);
    const DECODING: bool = false;
}
impl Keys for Vec<OnmtInput> {
    const OWN: Option<&'static [&'static str]> = None;
}

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Keys> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let bytes = read_body(req, app).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The whole body, or the error naming `--max-body` when it is larger.
pub async fn read_body(req: Request, app: &Arc<App>) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, app).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(app)
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })
}

pub fn too_large(app: &App) -> ApiError {
    ApiError::too_large(
        "body_too_large",
        format!(
            "the request body is over the limit of {} bytes (--max-body)",
            app.limits.max_body
        ),
    )
}

/// Parses `bytes` as `T`, checking the keys first so that a misspelt option is an error rather
/// than silently ignored.
pub fn parse<T: DeserializeOwned + Keys>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not JSON: {e}")))?;
    whole_numbers_as_integers(&mut value);
    if let Some(own) = T::OWN {
        let Some(obj) = value.as_object() else {
            return Err(ApiError::bad_request(
                "bad_json",
                "the body must be a JSON object",
            ));
        };
        let known = |k: &str| own.contains(&k) || (T::DECODING && DECODING_KEYS.contains(&k));
        if let Some(k) = obj.keys().find(|k| !known(k)) {
            let mut all: Vec<&str> = own.to_vec();
            all.extend(DECODING_KEYS.iter().filter(|_| T::DECODING));
            return Err(ApiError::bad_request(
                "bad_json",
                format!("{k}: unknown key (known: {})", all.join(", ")),
            ));
        }
    }
    if T::OWN.is_some() && T::DECODING {
        // Flattened fields lose their path in serde's errors: check the options on their own.
        let options: serde_json::Map<_, _> = value
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| DECODING_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        deserialize::<Decoding>(serde_json::Value::Object(options))?;
    }
    deserialize(value)
}

/// `value` as `T`, an error naming the field where it does not fit.
fn deserialize<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        ApiError::bad_request("bad_json", format!("{field}{}", e.inner()))
    })
}

/// `3.0` as `3`: JSON (and JSON Schema) do not tell them apart, serde's integers do.
pub fn whole_numbers_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Exactly representable whole numbers only (|f| < 2^53).
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                *v = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(o) => o.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_become_integers_and_others_stay() {
        let mut v = serde_json::json!({"id": 3.0, "t": 0.5, "n": [-2.0, 1e300], "s": "4.0"});
        whole_numbers_as_integers(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"id": 3, "t": 0.5, "n": [-2, 1e300], "s": "4.0"})
        );
        assert!(v["id"].is_u64() && v["n"][0].is_i64() && v["n"][1].is_f64());
    }

    #[test]
    fn errors_name_the_field_even_inside_flattened_options() {
        let e =
            parse::<TranslateRequest>(br#"{"texts": ["a"], "strategy": "nucleus"}"#).unwrap_err();
        assert!(
            e.message.starts_with("strategy: unknown variant"),
            "{}",
            e.message
        );
        let e = parse::<TranslateRequest>(br#"{"texts": ["a", 7]}"#).unwrap_err();
        assert!(
            e.message.starts_with("texts[1]: invalid type"),
            "{}",
            e.message
        );
        let e = parse::<TranslateRequest>(br#"{"texts": [], "beam": 2}"#).unwrap_err();
        assert!(e.message.starts_with("beam: unknown key"), "{}", e.message);
        let ok = parse::<TranslateRequest>(br#"{"texts": [], "beam_size": 2.0}"#).unwrap();
        assert_eq!(ok.decoding.beam_size, Some(2));
    }
}
