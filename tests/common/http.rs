//! A `seq2seq serve` child on an ephemeral loopback port, and a small JSON client for it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
    agent: ureq::Agent,
    /// Everything the server wrote to stderr after its start-up lines.
    log: Arc<Mutex<String>>,
}

/// A status and the body parsed as JSON (`Value::Null` where it is not JSON).
pub type Reply = (u16, Value);

impl Server {
    /// Starts `seq2seq serve --port 0` with `--model NAME=DIR` for each model and `extra`
    /// flags, and waits for its "listening on" line.
    pub fn start(models: &[(&str, &Path)], extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seq2seq"));
        cmd.args(["serve", "--port", "0"]);
        for (name, dir) in models {
            cmd.arg("--model").arg(format!("{name}={}", dir.display()));
        }
        cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting seq2seq serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let base = loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                panic!("serve ended before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.strip_prefix("listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let log = Arc::new(Mutex::new(seen));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = lines.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Server {
            child,
            base,
            agent,
            log,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        let r = self.agent.get(format!("{}{path}", self.base)).call();
        reply(r)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string().as_bytes())
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .send(body);
        reply(r)
    }

    /// Posts JSON and returns the status, the content type and the body as text.
    pub fn post_text(&self, path: &str, body: &Value) -> (u16, String, String) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .expect("a response (not a dropped connection)");
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = r.body_mut().read_to_string().expect("a readable body");
        (r.status().as_u16(), kind, text)
    }

    /// GETs a path and returns the status, the response's headers and the body as text.
    pub fn get_text(&self, path: &str) -> (u16, ureq::http::HeaderMap, String) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("a response (not a dropped connection)");
        let text = r.body_mut().read_to_string().expect("a readable body");
        (r.status().as_u16(), r.headers().clone(), text)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (at most 60 s) for the exit.
    pub fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "serve did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("a response (not a dropped connection)");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("a readable body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts an error reply: its status, its `error.code`, and a message containing `needle`.
pub fn assert_error(r: &Reply, status: u16, code: &str, needle: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["error"]["code"], code, "{}", r.1);
    let msg = r.1["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
}

/// A multipart/form-data body of text fields then files; returns (content type, body).
pub fn multipart(fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "seq2seq-test-boundary-7MA4YWxk";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
            .bytes(),
        );
    }
    for (name, data) in files {
        body.extend(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).bytes());
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
