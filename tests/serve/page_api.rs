//! What the web page needs from the API: streamed generation, the next token's distribution
//! through the sampler's filters, attention in translations and captions, and the page itself.

use serde_json::{json, Value};

use super::http::{assert_error, multipart, Server};
use super::{models, png, serve};

/// The (event, data) pairs of a Server-Sent Events body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_string();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data.join("\n")).unwrap()))
        })
        .collect()
}

#[test]
fn streamed_generation_is_the_same_generation() {
    let s = serve(&[]);
    for opts in [
        json!({"prompt": "item 3", "strategy": "greedy", "max_tokens": 8}),
        json!({"prompt": "item", "strategy": "sample", "temperature": 1.5, "seed": 11, "num": 3,
               "max_tokens": 9}),
        json!({"prompt": "", "strategy": "sample", "top_k": 3, "top_p": 0.8, "seed": 2, "num": 2}),
    ] {
        let (st, whole) = s.post("/v1/generate", &opts);
        assert_eq!(st, 200, "{whole}");
        let (st, kind, body) = s.post_text("/v1/generate?stream=true", &opts);
        assert_eq!(st, 200, "{body}");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        let ev = events(&body);
        let (last, data) = ev.last().expect("events");
        assert_eq!(last, "done", "{body}");
        assert_eq!(data, &whole, "the done event is the non-streamed answer");
        assert_eq!(ev.iter().filter(|(e, _)| e == "done").count(), 1, "{body}");
        for (i, sample) in whole["samples"].as_array().unwrap().iter().enumerate() {
            let mine: Vec<&Value> = ev
                .iter()
                .filter(|(e, d)| e == "token" && d["index"] == i)
                .map(|(_, d)| d)
                .collect();
            assert_eq!(
                mine.len() as u64,
                sample["tokens"].as_u64().unwrap(),
                "{body}"
            );
            // Each token extends the text by its delta, and the last text is the sample's.
            let mut text: Option<String> = None;
            for d in &mine {
                let now = d["text"].as_str().unwrap();
                let delta = d["delta"].as_str().expect("word-level text only grows");
                assert!(now.ends_with(delta), "{d}");
                if let Some(before) = &text {
                    assert_eq!(format!("{before}{delta}"), now, "{body}");
                }
                text = Some(now.to_string());
            }
            if let Some(t) = text {
                assert_eq!(t, sample["text"].as_str().unwrap());
            }
        }
    }
    assert_error(
        &s.post("/v1/generate?stream=perhaps", &json!({"prompt": "item"})),
        400,
        "bad_query",
        "stream",
    );
}

#[test]
fn a_streamed_error_is_an_error_event() {
    let m = models();
    let s = Server::start(&[("lm", &m.lm)], &["--max-prompt-tokens", "2"]);
    let (st, _, body) = s.post_text(
        "/v1/generate?stream=true",
        &json!({"prompt": "item 3 is red"}),
    );
    assert_eq!(st, 200);
    let ev = events(&body);
    assert_eq!(ev.len(), 1, "{body}");
    assert_eq!(ev[0].0, "error");
    assert_eq!(ev[0].1["error"]["code"], "text_too_long", "{body}");
    // What can be refused before streaming starts is refused with a status.
    assert_error(
        &s.post("/v1/generate?stream=true", &json!({"temperature": -1})),
        422,
        "invalid_options",
        "temperature",
    );
}

fn probs(c: &[Value], key: &str) -> Vec<f64> {
    c.iter().map(|x| x[key].as_f64().unwrap()).collect()
}

#[test]
fn the_next_token_through_each_filter() {
    let s = serve(&[]);
    let ask = |extra: Value| {
        let mut body = json!({"prompt": "item 3", "top": 40});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (st, r) = s.post("/v1/next-token", &body);
        assert_eq!(st, 200, "{r}");
        r["candidates"].as_array().unwrap().clone()
    };
    let plain = ask(json!({}));
    let p = probs(&plain, "p");
    assert!(
        p.windows(2).all(|w| w[0] >= w[1]),
        "most likely first: {p:?}"
    );
    // 40 candidates cover the whole (small) vocabulary: each stage sums to 1.
    for key in ["p", "p_temperature", "p_top_k", "p_top_p"] {
        let sum: f64 = probs(&plain, key).iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{key} sums to {sum}");
    }
    let hot = ask(json!({"temperature": 2.0, "top_k": 3, "top_p": 0.5}));
    assert_eq!(probs(&hot, "p"), p, "the model's own column does not move");
    let pt = probs(&hot, "p_temperature");
    assert!(
        pt[0] < p[0],
        "temperature 2 flattens: {} vs {}",
        pt[0],
        p[0]
    );
    let kept = |key| probs(&hot, key).iter().filter(|&&x| x > 0.0).count();
    assert_eq!(kept("p_top_k"), 3);
    assert!(kept("p_top_p") <= 3 && kept("p_top_p") >= 1);
    // Sampling draws only from the last column's support.
    let support: Vec<&Value> = hot
        .iter()
        .filter(|c| c["p_top_p"].as_f64().unwrap() > 0.0)
        .map(|c| &c["text"])
        .collect();
    let (st, g) = s.post(
        "/v1/generate",
        &json!({"prompt": "item 3", "strategy": "sample", "temperature": 2.0, "top_k": 3,
                "top_p": 0.5, "num": 24, "max_tokens": 1, "seed": 5}),
    );
    assert_eq!(st, 200, "{g}");
    for sample in g["samples"].as_array().unwrap() {
        let text = sample["text"].as_str().unwrap();
        let next = text.strip_prefix("item 3").unwrap().trim();
        assert!(
            next.is_empty() || support.contains(&&json!(next)),
            "sampled {next:?} outside {support:?}"
        );
    }
    let greedy = ask(json!({"temperature": 0}));
    assert_eq!(greedy[0]["p_top_p"], 1.0, "temperature 0 is greedy");
    assert_error(
        &s.post("/v1/next-token", &json!({"top": 0})),
        422,
        "invalid_options",
        "top",
    );
    assert_error(
        &s.post("/v1/next-token", &json!({"prompt": "x", "topp": 3})),
        400,
        "bad_json",
        "topp",
    );
}

fn check_attention(a: &Value, width: usize) {
    let tokens = a["tokens"].as_array().unwrap();
    let rows = a["weights"].as_array().unwrap();
    assert_eq!(tokens.len(), rows.len(), "{a}");
    for r in rows {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), width, "{a}");
        let sum: f64 = r.iter().map(|w| w.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-3, "a row sums to {sum}");
    }
}

#[test]
fn attention_in_translations_and_captions() {
    let s = serve(&[]);
    let (st, r) = s.post(
        "/v1/translate",
        &json!({"texts": ["march 3, 2011"], "attention": true, "strategy": "beam",
                "beam_size": 3, "n_best": 2}),
    );
    assert_eq!(st, 200, "{r}");
    let t = &r["translations"][0];
    let src = t["attention"]["source_tokens"].as_array().unwrap();
    assert_eq!(src.len(), "march 3, 2011".chars().count(), "{t}");
    check_attention(&t["attention"], src.len());
    assert_eq!(t["n_best"][0]["attention"], t["attention"]);
    check_attention(&t["n_best"][1]["attention"], src.len());
    let (_, plain) = s.post("/v1/translate", &json!({"texts": ["march 3, 2011"]}));
    assert!(
        plain["translations"][0].get("attention").is_none(),
        "{plain}"
    );

    let (kind, body) = multipart(
        &[("attention", "true")],
        &[("a.png", &png(40, 40, [200, 30, 30]))],
    );
    let (st, r) = s.post_raw("/v1/caption", &kind, &body);
    assert_eq!(st, 200, "{r}");
    let a = &r["captions"][0]["attention"];
    let grid = a["grid"].as_array().unwrap();
    let cells = (grid[0].as_u64().unwrap() * grid[1].as_u64().unwrap()) as usize;
    assert!(cells > 1, "{a}");
    check_attention(a, cells);
    assert!(a.get("source_tokens").is_none());
    let (kind, body) = multipart(
        &[("attention", "maybe")],
        &[("a.png", &png(8, 8, [0, 0, 0]))],
    );
    assert_error(
        &s.post_raw("/v1/caption", &kind, &body),
        400,
        "bad_body",
        "attention",
    );
    // A form cannot tell a list from a repeated scalar: a repeated option is refused.
    let (kind, body) = multipart(
        &[("beam_size", "2"), ("beam_size", "3")],
        &[("a.png", &png(8, 8, [0, 0, 0]))],
    );
    assert_error(
        &s.post_raw("/v1/caption", &kind, &body),
        400,
        "bad_body",
        "beam_size: given twice",
    );
}

#[test]
fn the_page_and_its_assets() {
    let s = serve(&[]);
    for (path, kind, needle) in [
        ("/", "text/html", "<title>seq2seq</title>"),
        ("/page.js", "text/javascript", "/v1/next-token"),
        ("/page.css", "text/css", ".heatmap"),
    ] {
        let (st, headers, body) = s.get_text(path);
        assert_eq!(st, 200, "{path}");
        let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
        assert!(
            h("content-type").starts_with(kind),
            "{path}: {}",
            h("content-type")
        );
        assert!(h("content-security-policy").contains("default-src 'self'"));
        assert!(body.contains(needle), "{path} lacks {needle}");
        // Nothing is fetched from elsewhere.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path}"
        );
    }
}

/// A client that leaves a stream, or a request past `--timeout-s`, stops its generation: the
/// model is free for the next request at once, not after the abandoned one has run its course.
#[test]
fn an_abandoned_stream_stops_generating() {
    use std::io::{Read, Write};
    let m = models();
    let s = Server::start(
        &[("lm", &m.lm)],
        &["--max-output-tokens", "200000", "--timeout-s", "5"],
    );
    // Minutes of work if it ran to the end: 64 samples of 200 000 tokens, the end token forbidden.
    let body = json!({"prompt": "item", "num": 64, "max_tokens": 200000, "min_length": 200000,
                      "strategy": "sample"})
    .to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /v1/generate?stream=true HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: token") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before a token");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(c);
    let (st, r) = s.post("/v1/generate", &json!({"prompt": "item", "max_tokens": 3}));
    assert_eq!(
        st, 200,
        "the abandoned generation still held the model: {r}"
    );
    // The same for a request that ran out of time: 504, and the model free again.
    let long: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_error(
        &s.post("/v1/generate", &long),
        504,
        "timeout",
        "--timeout-s",
    );
    let (st, r) = s.post("/v1/generate", &json!({"prompt": "item", "max_tokens": 3}));
    assert_eq!(
        st, 200,
        "the timed-out generation still held the model: {r}"
    );
}
