//! One file over HTTP(S) into a `.part` file that survives interruptions: a later attempt asks for
//! the missing bytes only (`Range: bytes=N-`), and a server that ignores the range restarts it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::{io_err, Error, Progress, Result};

/// Attempts per file before giving up; each resumes where the last one stopped.
const ATTEMPTS: u32 = 4;

enum Failure {
    /// Worth another attempt: a cut connection, a timeout, a 5xx.
    Retry(Error),
    /// Not: a 404, a file larger than the catalogue says, a full disk.
    Fatal(Error),
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("seq2seq/", env!("CARGO_PKG_VERSION")))
        .build();
    config.into()
}

/// Downloads `url` into `part`, continuing the bytes already there. With `size`, the file must
/// end with exactly that many bytes.
pub fn download(url: &str, part: &Path, size: Option<u64>, progress: &dyn Progress) -> Result<()> {
    let agent = agent();
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt - 1)));
        }
        progress.begin(url, size, current_len(part));
        let r = attempt_once(&agent, url, part, size, progress);
        progress.end();
        match r {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => {
                if attempt < ATTEMPTS {
                    progress.note(&format!(
                        "{e}; retrying (attempt {} of {ATTEMPTS})",
                        attempt + 1
                    ));
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one attempt ran"))
}

fn current_len(part: &Path) -> u64 {
    std::fs::metadata(part).map(|m| m.len()).unwrap_or(0)
}

fn http(url: &str, msg: impl Into<String>) -> Error {
    Error::Http {
        url: url.to_string(),
        msg: msg.into(),
    }
}

fn attempt_once(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    size: Option<u64>,
    progress: &dyn Progress,
) -> std::result::Result<(), Failure> {
    let mut done = current_len(part);
    if size.is_some_and(|s| done > s) {
        done = 0; // longer than the file can be: not ours to continue
    }
    if size == Some(done) && done > 0 {
        return Ok(());
    }
    let mut req = agent.get(url);
    if done > 0 {
        req = req.header("Range", format!("bytes={done}-"));
    }
    let resp = req
        .call()
        .map_err(|e| Failure::Retry(http(url, e.to_string())))?;
    let status = resp.status().as_u16();
    let start = match status {
        200 => 0,
        206 => content_range_start(&resp).unwrap_or(u64::MAX),
        // Nothing past what we hold: with no size to go by, the checksum decides; with one (which
        // `done` does not match), start over.
        416 if done > 0 && size.is_none() => return Ok(()),
        416 if done > 0 => {
            let _ = std::fs::remove_file(part);
            return Err(Failure::Retry(http(
                url,
                "the server refused the resumed range",
            )));
        }
        500..=599 => return Err(Failure::Retry(http(url, format!("HTTP {status}")))),
        _ => return Err(Failure::Fatal(http(url, format!("HTTP {status}")))),
    };
    if start != 0 && start != done {
        let _ = std::fs::remove_file(part);
        return Err(Failure::Retry(http(
            url,
            "the server resumed at the wrong offset",
        )));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(start != 0)
        .truncate(start == 0)
        .open(part)
        .map_err(|e| Failure::Fatal(io_err(part)(e)))?;
    if start == 0 && done > 0 {
        progress.note(&format!(
            "{url}: the server ignored the range; starting over"
        ));
    }
    append_body(resp, &mut file, url, part, progress)?;
    check_size(url, part, size)
}

/// Streams the answer's body to the end of `file`; a broken connection keeps what arrived.
fn append_body(
    resp: ureq::http::Response<ureq::Body>,
    file: &mut std::fs::File,
    url: &str,
    part: &Path,
    progress: &dyn Progress,
) -> std::result::Result<(), Failure> {
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.sync_all();
                return Err(Failure::Retry(http(
                    url,
                    format!("connection broke off: {e}"),
                )));
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| Failure::Fatal(io_err(part)(e)))?;
        progress.advance(n as u64);
    }
    file.sync_all().map_err(|e| Failure::Fatal(io_err(part)(e)))
}

/// A short file is retried; a file longer than the catalogue's size is removed.
fn check_size(url: &str, part: &Path, size: Option<u64>) -> std::result::Result<(), Failure> {
    let got = current_len(part);
    match size {
        Some(s) if got < s => Err(Failure::Retry(http(
            url,
            format!("the transfer ended at {got} of {s} bytes"),
        ))),
        Some(s) if got > s => {
            let _ = std::fs::remove_file(part);
            Err(Failure::Fatal(Error::Mismatch {
                url: url.to_string(),
                what: "size",
                expected: format!("{s} bytes"),
                got: format!("{got} bytes"),
            }))
        }
        _ => Ok(()),
    }
}

/// The first byte's offset in a 206 answer's `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
