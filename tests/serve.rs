//! `seq2seq serve` end to end: every endpoint and error of the HTTP API against a server on an
//! ephemeral loopback port, with a dates translator, a shapes captioner and a word-level
//! language model trained here; batching that never changes a result; graceful shutdown.

#[path = "serve/browser.rs"]
mod browser;
#[path = "common/http.rs"]
mod http;
#[path = "serve/page_api.rs"]
mod page_api;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Barrier, OnceLock};

use base64::Engine;
use http::{assert_error, multipart, Server};
use image::{Rgb, RgbImage};
use serde_json::{json, Value};

struct Models {
    dates: PathBuf,
    shapes: PathBuf,
    lm: PathBuf,
}

const DATES: &str = "name: serve-dates
seed: 5
data: {format: dates, train_size: 2000, valid_size: 40, test_size: 40, max_src_len: 40, max_tgt_len: 12,
       src_vocab: {level: char}, tgt_vocab: {level: char}}
model:
  encoder: {embedding_dim: 16, hidden_size: 32}
  decoder: {embedding_dim: 16, hidden_size: 48, attention_dim: 24}
train: {learning_rate: 0.005, batch_size: 32, max_epochs: 0, max_steps: 150, valid_every: 150}
decoding: {max_length: 12}
";

const SHAPES: &str = "name: serve-shapes
task: captioning
seed: 3
data: {format: shapes, train_size: 400, valid_size: 20, test_size: 20, image_size: 32, max_image_side: 500}
model:
  image_encoder: {backbone: small_cnn, cnn: {channels: [8, 16], kernel: 3}}
  decoder: {embedding_dim: 16, hidden_size: 48, attention_dim: 24}
train: {learning_rate: 0.005, batch_size: 32, max_steps: 60, valid_every: 60}
decoding: {max_length: 14}
";

const LM: &str = "task: generation
data: {format: lines, root: ., file: items.txt, valid_size: 20, test_size: 0, tgt_vocab: {level: word}}
model:
  decoder: {cell: gru, embedding_dim: 16, hidden_size: 32, attention: none, bridge: zero}
train: {batch_size: 16, learning_rate: 0.01, max_steps: 60, valid_every: 30}
decoding: {strategy: sample, temperature: 0.8, max_length: 10}
";

fn seq2seq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seq2seq"))
        .args(args)
        .output()
        .unwrap()
}

fn train(dir: &Path, name: &str, config: &str) -> PathBuf {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, config).unwrap();
    let out_dir = dir.join(name);
    let out = seq2seq(&[
        "train",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_dir
}

/// The three models, trained once per test run (in parallel) under the target's temp folder.
fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-models");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String = (0..200)
            .map(|i| format!("item {} is {}\n", i % 7, ["red", "blue", "green"][i % 3]))
            .collect();
        std::fs::write(dir.join("items.txt"), lines).unwrap();
        std::thread::scope(|s| {
            let d = s.spawn(|| train(&dir, "dates", DATES));
            let c = s.spawn(|| train(&dir, "shapes", SHAPES));
            let l = s.spawn(|| train(&dir, "lm", LM));
            Models {
                dates: d.join().unwrap(),
                shapes: c.join().unwrap(),
                lm: l.join().unwrap(),
            }
        })
    })
}

/// The three models under their names; the translator is id 0.
fn serve(extra: &[&str]) -> Server {
    let m = models();
    Server::start(
        &[("dates", &m.dates), ("lm", &m.lm), ("shapes", &m.shapes)],
        extra,
    )
}

const DATES_IN: [&str; 6] = [
    "march 3, 2011",
    "Sunday 14 July 1987",
    "12/25/99",
    "the 1st of may 2020",
    "Oct 9 1901",
    "2 feb 2002",
];

fn png(w: u32, h: u32, color: [u8; 3]) -> Vec<u8> {
    let mut img = RgbImage::from_pixel(w, h, Rgb([240, 240, 240]));
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
        if dx * dx + dy * dy < (w.min(h) as f32 / 4.0).powi(2) {
            *p = Rgb(color);
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn texts(r: &Value, list: &str) -> Vec<String> {
    r[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {r}"))
        .iter()
        .map(|t| t["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn health_models_and_openapi() {
    let s = serve(&[]);
    let (st, h) = s.get("/health");
    assert_eq!(
        (st, &h["status"], &h["models"]),
        (200, &json!("ok"), &json!(3))
    );
    let (st, m) = s.get("/v1/models");
    assert_eq!(st, 200);
    let cards = m["models"].as_array().unwrap();
    let names: Vec<_> = cards.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dates", "lm", "shapes"]);
    let tasks: Vec<_> = cards.iter().map(|c| c["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["translation", "generation", "captioning"]);
    assert_eq!(cards[2]["id"], 2);
    assert!(cards[0]["parameters"].as_u64().unwrap() > 1000);
    assert_eq!(cards[0]["vocabularies"].as_array().unwrap().len(), 2);
    assert!(cards[0]["best_validation"].is_object(), "{}", cards[0]);
    let (st, onmt) = s.get("/translator/models");
    assert_eq!((st, onmt.as_array().unwrap().len()), (200, 3));

    let (st, doc) = s.get("/openapi.json");
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for p in [
        "/health",
        "/v1/models",
        "/v1/translate",
        "/v1/caption",
        "/v1/generate",
        "/translator/translate",
        "/translator/models",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi.json lacks {p}");
    }
    for schema in [
        "TranslateRequest",
        "CaptionRequest",
        "GenerateRequest",
        "ErrorResponse",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema}"
        );
    }
    // Completed by the running server: its models per task, its limits, no unknown keys.
    let schemas = &doc["components"]["schemas"];
    let req = &schemas["TranslateRequest"];
    assert_eq!(req["properties"]["model"]["enum"], json!(["dates", null]));
    assert_eq!(
        schemas["GenerateRequest"]["properties"]["model"]["enum"],
        json!(["lm", null])
    );
    assert_eq!(req["additionalProperties"], false);
    assert_eq!(req["properties"]["texts"]["maxItems"], 256);
    assert_eq!(req["properties"]["beam_size"]["maximum"], 64);
    assert_eq!(schemas["OnmtInput"]["properties"]["id"]["enum"], json!([0]));
    assert_error(&s.get("/v2/nothing"), 404, "not_found", "no such endpoint");
    assert_error(&s.get("/v1/translate"), 405, "method_not_allowed", "method");
}

#[test]
fn translate_matches_the_cli_and_opennmt_clients_work() {
    let m = models();
    let s = serve(&[]);
    let mut args = vec!["translate", "--model", m.dates.to_str().unwrap()];
    args.extend(DATES_IN);
    let cli = seq2seq(&args);
    assert!(cli.status.success());
    let cli: Vec<String> = String::from_utf8(cli.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();

    let (st, r) = s.post(
        "/v1/translate",
        &json!({"model": "dates", "texts": DATES_IN}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(texts(&r, "translations"), cli);
    assert!(r["translations"][0]["score"].as_f64().unwrap() <= 0.0);
    assert!(r["translations"][0].get("n_best").is_none());
    // The first model is the default.
    let (_, r2) = s.post("/v1/translate", &json!({"texts": DATES_IN}));
    assert_eq!(r2, r);

    let beam = json!({"model": "dates", "texts": DATES_IN[..2], "strategy": "beam",
                      "beam_size": 4, "n_best": 3});
    let (st, b) = s.post("/v1/translate", &beam);
    assert_eq!(st, 200, "{b}");
    let list = b["translations"][1]["n_best"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["text"], b["translations"][1]["text"]);

    // OpenNMT-py's shape: outer list by n-best rank, inner by input; id 0 is "dates".
    let inputs: Vec<Value> = DATES_IN[..3]
        .iter()
        .map(|t| json!({"src": t, "id": 0}))
        .collect();
    let (st, o) = s.post("/translator/translate", &json!(inputs));
    assert_eq!(st, 200, "{o}");
    let rank0 = o.as_array().unwrap()[0].as_array().unwrap();
    assert_eq!(rank0.len(), 3);
    for (k, out) in rank0.iter().enumerate() {
        assert_eq!(out["src"], DATES_IN[k]);
        assert_eq!(out["tgt"].as_str().unwrap(), cli[k]);
        assert_eq!(out["n_best"], 1);
        assert!(out["pred_score"].is_number());
    }
    let bad = |id: usize| json!([{"src": "march 3, 2011", "id": id}]);
    assert_error(
        &s.post("/translator/translate", &bad(1)),
        422,
        "wrong_task",
        "generation",
    );
    assert_error(
        &s.post("/translator/translate", &bad(9)),
        404,
        "unknown_model",
        "no model 9",
    );
    let mixed = json!([{"src": "a", "id": 0}, {"src": "b", "id": 2}]);
    assert_error(
        &s.post("/translator/translate", &mixed),
        400,
        "mixed_models",
        "[1].id",
    );
}

#[test]
fn captions_from_json_and_multipart_with_per_image_errors() {
    let m = models();
    let s = serve(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (red, blue) = (png(40, 40, [220, 30, 30]), png(64, 48, [30, 30, 220]));
    std::fs::write(dir.path().join("red.png"), &red).unwrap();
    let cli = seq2seq(&[
        "caption",
        "--model",
        m.shapes.to_str().unwrap(),
        dir.path().join("red.png").to_str().unwrap(),
    ]);
    let cli = String::from_utf8(cli.stdout).unwrap();
    let cli_caption = cli.trim_end().split('\t').nth(1).unwrap().to_string();

    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let wide = png(800, 20, [0, 200, 0]); // wider than data.max_image_side (500)
    let images = json!([
        b64(&red),
        format!("data:image/png;base64,{}", b64(&blue)),
        "not base64!",
        b64(b"GIF89a but not really"),
        b64(&wide),
    ]);
    let (st, r) = s.post("/v1/caption", &json!({"model": "shapes", "images": images}));
    assert_eq!(st, 200, "{r}");
    let caps = r["captions"].as_array().unwrap();
    assert_eq!(caps.len(), 5);
    assert_eq!(caps[0]["text"].as_str().unwrap(), cli_caption);
    assert!(caps[1]["text"].is_string() && caps[1]["error"].is_null());
    for (k, needle) in [(2, "base64"), (3, "images[3]"), (4, "500")] {
        assert_eq!(caps[k]["error"]["code"], "bad_image", "{}", caps[k]);
        let msg = caps[k]["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{k}: {msg}");
        assert!(caps[k]["text"].is_null());
    }

    let (ct, body) = multipart(
        &[
            ("model", "shapes"),
            ("strategy", "beam"),
            ("beam_size", "3"),
        ],
        &[("red.png", &red), ("bad.jpg", b"\xff\xd8\xff truncated")],
    );
    let (st, f) = s.post_raw("/v1/caption", &ct, &body);
    assert_eq!(st, 200, "{f}");
    assert!(f["captions"][0]["text"].is_string(), "{f}");
    assert_eq!(f["captions"][1]["error"]["code"], "bad_image");
    assert!(f["captions"][1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad.jpg"));
    // No image: an empty answer, as for JSON's `"images": []`.
    let (ct, body) = multipart(&[("model", "shapes")], &[]);
    let empty = s.post_raw("/v1/caption", &ct, &body);
    assert_eq!(empty, (200, json!({"captions": []})));
    // Images are file parts; a text part that is not an option is refused, naming it.
    let (ct, body) = multipart(&[("image", "{}")], &[]);
    assert_error(
        &s.post_raw("/v1/caption", &ct, &body),
        400,
        "bad_body",
        "\"image\": neither an option",
    );
    let (ct, body) = multipart(&[("beam", "3")], &[("red.png", &red)]);
    assert_error(
        &s.post_raw("/v1/caption", &ct, &body),
        400,
        "bad_body",
        "\"beam\": neither an option",
    );
    let (ct, body) = multipart(&[("beam_size", "many")], &[("red.png", &red)]);
    assert_error(
        &s.post_raw("/v1/caption", &ct, &body),
        400,
        "bad_body",
        "beam_size",
    );
    let (ct, body) = multipart(
        &[
            ("model", "shapes"),
            ("beam_size", "0"),
            ("strategy", "beam"),
        ],
        &[("red.png", &red)],
    );
    assert_error(
        &s.post_raw("/v1/caption", &ct, &body),
        422,
        "invalid_options",
        "beam_size",
    );
}

#[test]
fn generation_is_seeded_and_bounded() {
    let s = serve(&["--max-prompt-tokens", "6", "--max-texts", "8"]);
    let req = json!({"model": "lm", "prompt": "item", "num": 4, "seed": 5, "temperature": 1.0});
    let (st, a) = s.post("/v1/generate", &req);
    assert_eq!(st, 200, "{a}");
    let samples = a["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for x in samples {
        assert!(x["text"].as_str().unwrap().starts_with("item"), "{x}");
        assert!(x["log_prob"].as_f64().unwrap() <= 0.0);
        assert!(x["tokens"].as_u64().unwrap() <= 10);
    }
    assert_eq!(s.post("/v1/generate", &req).1, a, "same seed, same samples");
    let other = json!({"model": "lm", "prompt": "item", "num": 4, "seed": 6, "temperature": 1.0});
    assert_ne!(
        s.post("/v1/generate", &other).1,
        a,
        "another seed, other samples"
    );
    // Without `model`, the first model of the endpoint's task.
    let (st, d) = s.post(
        "/v1/generate",
        &json!({"prompt": "item", "num": 4, "seed": 5, "temperature": 1.0}),
    );
    assert_eq!((st, &d), (200, &a));
    let short = json!({"model": "lm", "prompt": "item", "max_tokens": 2, "seed": 1});
    let (_, r) = s.post("/v1/generate", &short);
    assert!(r["samples"][0]["tokens"].as_u64().unwrap() <= 2, "{r}");

    let long = json!({"model": "lm", "prompt": "item 1 is red item 2 is blue"});
    assert_error(
        &s.post("/v1/generate", &long),
        422,
        "text_too_long",
        "--max-prompt-tokens",
    );
    let many = json!({"model": "lm", "prompt": "item", "num": 9});
    assert_error(
        &s.post("/v1/generate", &many),
        422,
        "too_many_texts",
        "--max-texts",
    );
    let hot = json!({"model": "lm", "prompt": "item", "top_p": 1.5});
    assert_error(
        &s.post("/v1/generate", &hot),
        422,
        "invalid_options",
        "top_p",
    );
    let wrong = json!({"model": "dates", "prompt": "item"});
    assert_error(
        &s.post("/v1/generate", &wrong),
        422,
        "wrong_task",
        "translation",
    );
}

#[test]
fn every_limit_and_bad_request_is_a_json_error() {
    let s = serve(&[
        "--max-texts",
        "4",
        "--max-body",
        "4096",
        "--max-output-tokens",
        "30",
        "--max-beam",
        "8",
    ]);
    let t = "/v1/translate";
    assert_error(
        &s.post_raw(t, "application/json", b"{\"texts\": [\"a\""),
        400,
        "bad_json",
        "line 1",
    );
    assert_error(&s.post(t, &json!({"texts": 5})), 400, "bad_json", "texts");
    assert_error(
        &s.post(t, &json!({"texts": ["a", 7]})),
        400,
        "bad_json",
        "texts[1]",
    );
    assert_error(
        &s.post(t, &json!({"texts": ["a"], "beam": 3})),
        400,
        "bad_json",
        "beam",
    );
    assert_error(
        &s.post(t, &json!({"model": "x", "texts": ["a"]})),
        404,
        "unknown_model",
        "dates, lm, shapes",
    );
    assert_error(
        &s.post(t, &json!({"model": "shapes", "texts": ["a"]})),
        422,
        "wrong_task",
        "captioning",
    );
    assert_error(
        &s.post(t, &json!({"texts": ["a"], "temperature": -1})),
        422,
        "invalid_options",
        "temperature",
    );
    assert_error(
        &s.post(t, &json!({"texts": ["a"], "strategy": "nucleus"})),
        400,
        "bad_json",
        "strategy",
    );
    assert_error(
        &s.post(t, &json!({"texts": vec!["a"; 5]})),
        422,
        "too_many_texts",
        "--max-texts",
    );
    assert_error(
        &s.post(t, &json!({"texts": ["a"], "max_length": 31})),
        422,
        "over_limit",
        "max_length: 31 output tokens, over the limit of 30 (--max-output-tokens)",
    );
    for (key, v, flag) in [
        ("no_repeat_ngram", 31, "--max-output-tokens"),
        ("beam_size", 9, "--max-beam"),
        ("n_best", 9, "--max-beam"),
    ] {
        let mut r = json!({"texts": ["a"]});
        r[key] = json!(v);
        assert_error(&s.post(t, &r), 422, "over_limit", flag);
    }
    let long = "1".repeat(41);
    assert_error(
        &s.post(t, &json!({"texts": ["a", long]})),
        422,
        "text_too_long",
        "texts[1]: 41 tokens",
    );
    let big = json!({"texts": ["x".repeat(5000)]});
    assert_error(&s.post(t, &big), 413, "body_too_large", "--max-body");
    let big_caption = json!({"images": ["A".repeat(5000)]});
    assert_error(
        &s.post("/v1/caption", &big_caption),
        413,
        "body_too_large",
        "--max-body",
    );
    // An empty list is a valid request with an empty answer.
    assert_eq!(
        s.post(t, &json!({"texts": []})),
        (200, json!({"translations": []}))
    );
    // After all that, the server still answers.
    assert_eq!(s.post(t, &json!({"texts": ["march 3, 2011"]})).0, 200);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[test]
fn a_request_over_the_timeout_gets_504() {
    let s = serve(&["--timeout-s", "0.005"]);
    // 256 beam searches of 12 steps take far longer than 5 ms.
    let heavy = json!({"texts": vec!["march 3, 2011"; 256], "strategy": "beam", "beam_size": 16});
    let r = s.post("/v1/translate", &heavy);
    assert_error(&r, 504, "timeout", "longer than 0.005 s (--timeout-s)");
    // The server goes on (the late result is dropped).
    assert_eq!(s.get("/health").0, 200);
}

/// The same texts (and n-best lists) and the same scores up to f32 rounding: a matmul over
/// more rows may sum in another order, which moves a log-probability in its 7th digit.
fn same_result(a: &Value, b: &Value, what: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "{what}: score {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: {a} vs {b}");
            x.iter().zip(y).for_each(|(x, y)| same_result(x, y, what));
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{what}"
            );
            x.iter().for_each(|(k, v)| same_result(v, &y[k], what));
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}

/// Each request's result, sent one at a time and then all at once.
fn alone_and_together(s: &Server, reqs: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let alone: Vec<Value> = reqs.iter().map(|r| s.post("/v1/translate", r).1).collect();
    let gate = Barrier::new(reqs.len());
    let together = std::thread::scope(|sc| {
        let hs: Vec<_> = reqs
            .iter()
            .map(|r| {
                let gate = &gate;
                sc.spawn(move || {
                    gate.wait();
                    s.post("/v1/translate", r).1
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (alone, together)
}

#[test]
fn batching_never_changes_a_result() {
    let s = serve(&["--max-batch", "16", "--max-wait-ms", "200"]);
    let strategies = [
        json!({}),
        json!({"strategy": "beam", "beam_size": 3, "n_best": 2}),
        json!({"strategy": "sample", "temperature": 1.0, "seed": 11}),
    ];
    for (k, opts) in strategies.iter().enumerate() {
        let reqs: Vec<Value> = (0..12)
            .map(|i| {
                let mut r = opts.clone();
                let n = 1 + i % 3;
                r["texts"] = json!((0..n).map(|j| DATES_IN[(i + j) % 6]).collect::<Vec<_>>());
                if k == 2 {
                    r["seed"] = json!(11 + i);
                }
                r
            })
            .collect();
        let before = s.get("/health").1;
        let (alone, together) = alone_and_together(&s, &reqs);
        let after = s.get("/health").1;
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert!(a["translations"].is_array(), "{a}");
            same_result(
                a,
                t,
                &format!("strategy {k}, request {i}: alone vs batched"),
            );
        }
        let n = |h: &Value, f: &str| h[f].as_u64().unwrap();
        let requests = n(&after, "requests") - n(&before, "requests");
        let batches = n(&after, "batches") - n(&before, "batches");
        assert_eq!(requests, 24, "{before} {after}");
        // 12 alone, then the 12 concurrent ones in fewer batches than requests.
        assert!(batches < 24, "no request was batched: {before} {after}");
    }
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    use std::io::{Read, Write};
    let mut s = serve(&[]);
    // A request whose body is still arriving when the signal comes.
    let body = json!({"texts": ["march 3, 2011"]}).to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /v1/translate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.sigterm();
    std::thread::sleep(std::time::Duration::from_millis(300));
    conn.write_all(&body.as_bytes()[5..]).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"translations\""), "{answer}");
    let status = s.wait();
    assert!(status.success(), "{status:?}: {}", s.log());
    assert!(s.log().contains("stopped"), "{}", s.log());
    // Stopped means stopped: nothing listens any more.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}
