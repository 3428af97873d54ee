//! A minimal HTTP/1.1 file server on an ephemeral loopback port for the fetch tests (here and in
//! the top-level `tests/`): `Range: bytes=N-`, 404s, and answers cut short on request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Served {
    pub files: HashMap<String, Vec<u8>>,
    /// Paths whose next answer is cut after this many body bytes (then the connection closes).
    pub cut_once: HashMap<String, usize>,
    /// (path, Range header) of every request.
    pub log: Vec<(String, Option<String>)>,
}

/// A minimal HTTP/1.1 file server on an ephemeral loopback port, with `Range: bytes=N-`.
pub fn serve(state: Arc<Mutex<Served>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut range = None;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("range:") {
                    range = Some(v.trim().to_string());
                }
            }
            let mut st = state.lock().unwrap();
            st.log.push((path.clone(), range.clone()));
            let Some(body) = st.files.get(&path).cloned() else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let start: usize = range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            let rest = &body[start.min(body.len())..];
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    rest.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    rest.len()
                )
            };
            let cut = st.cut_once.remove(&path);
            drop(st);
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&rest[..cut.unwrap_or(rest.len()).min(rest.len())]);
            let _ = s.flush();
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    });
    format!("http://{addr}")
}
