//! `GET /openapi.json`: the document utoipa generates from the handlers and the types in `api`,
//! completed with what only the running server knows — the served models' names per task and
//! the limits — so that a client generated from it (or schemathesis) sends what is accepted.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::app::{task_name, App, MAX_TOP_K};
use crate::routes::ApiDoc;
use seq2seq_pipeline::config::Task;

/// The request bodies whose decoding options are flattened into them.
const REQUESTS: [(&str, Task); 3] = [
    ("TranslateRequest", Task::Translation),
    ("CaptionRequest", Task::Captioning),
    ("GenerateRequest", Task::Generation),
];

pub fn document(app: &App) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    let decoding = schemas["Decoding"]["properties"].clone();
    let max_out = app.limits.max_output_tokens;
    let max_items = app.limits.max_texts;
    for (name, task) in REQUESTS {
        let s = &mut schemas[name];
        *s = merged(s);
        // Unknown keys are refused (a misspelt option must not be ignored).
        s["additionalProperties"] = json!(false);
        let props = &mut s["properties"];
        if let (Some(p), Value::Object(d)) = (props.as_object_mut(), &decoding) {
            p.extend(d.clone());
        }
        props["model"] = model_names(app, task);
        for key in ["max_length", "min_length", "no_repeat_ngram"] {
            props[key]["maximum"] = json!(max_out);
        }
        for key in ["beam_size", "n_best"] {
            props[key]["maximum"] = json!(app.limits.max_beam);
        }
        props["top_k"]["maximum"] = json!(MAX_TOP_K);
        // Any u64: not the int64 utoipa says.
        props["seed"] = json!({"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX,
            "description": props["seed"]["description"]});
        match task {
            Task::Translation => props["texts"]["maxItems"] = json!(max_items),
            Task::Captioning => props["images"]["maxItems"] = json!(max_items),
            Task::Generation => {
                props["num"]["maximum"] = json!(max_items);
                props["max_tokens"]["maximum"] = json!(max_out);
            }
        }
    }
    let next = &mut schemas["NextTokenRequest"];
    next["properties"]["top"]["maximum"] = json!(MAX_TOP_K);
    next["additionalProperties"] = json!(false);
    next["properties"]["model"] = model_names(app, Task::Generation);
    next["properties"]["top_k"]["maximum"] = json!(MAX_TOP_K);
    // The multipart form takes the JSON request's fields, with files for `images`.
    let mut form_props = schemas["CaptionRequest"]["properties"].clone();
    if let Some(p) = form_props.as_object_mut() {
        p.remove("images");
        p.insert(
            "image".into(),
            schemas["CaptionForm"]["properties"]["image"].clone(),
        );
    }
    let form = &mut schemas["CaptionForm"];
    form["properties"] = form_props;
    form["required"] = json!([]);
    form["additionalProperties"] = json!(false);
    let ids: Vec<usize> = app
        .models
        .iter()
        .filter(|m| m.task == Task::Translation)
        .map(|m| m.card.id)
        .collect();
    schemas["OnmtInput"]["properties"]["id"]["enum"] = json!(ids);
    let onmt = &mut doc["paths"]["/translator/translate"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    onmt["maxItems"] = json!(max_items);
    // Each Server-Sent Event is {event, data}, its data one JSON document.
    doc["paths"]["/v1/generate"]["post"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"] = json!({
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": ["token", "done", "error"]},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"$ref": "#/components/schemas/StreamEvent"}},
        },
        "required": ["event", "data"],
    });
    without_float_formats(&mut doc);
    doc
}

/// Drops `format: double` / `float` (utoipa's names for f64 and f32): JSON numbers have no
/// width, and some clients read the formats as range constraints the server does not have.
fn without_float_formats(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if matches!(
                o.get("format").and_then(Value::as_str),
                Some("double" | "float")
            ) {
                o.remove("format");
            }
            o.values_mut().for_each(without_float_formats);
        }
        Value::Array(a) => a.iter_mut().for_each(without_float_formats),
        _ => {}
    }
}

/// One object schema from an `allOf` of objects (utoipa's rendering of `#[serde(flatten)]`),
/// so that `additionalProperties: false` can apply to all of its properties.
fn merged(s: &Value) -> Value {
    let Some(parts) = s["allOf"].as_array() else {
        return s.clone();
    };
    let (mut props, mut required) = (Map::new(), Vec::new());
    for p in parts {
        if let Some(o) = p["properties"].as_object() {
            props.extend(o.clone());
        }
        if let Some(r) = p["required"].as_array() {
            required.extend(r.iter().cloned());
        }
    }
    let mut out = json!({"type": "object", "properties": props, "required": required});
    if let Some(d) = s.get("description") {
        out["description"] = d.clone();
    }
    out
}

/// A `model` property: the names of the served models of `task`, or none.
fn model_names(app: &App, task: Task) -> Value {
    let mut names: Vec<Value> = app
        .models
        .iter()
        .filter(|m| m.task == task)
        .map(|m| json!(m.card.name))
        .collect();
    names.push(Value::Null);
    json!({
        "type": ["string", "null"],
        "enum": names,
        "description": format!(
            "A served {} model (GET /v1/models); the first model when left out.",
            task_name(task)
        ),
    })
}
