//! Reading a config: YAML parsed into the typed structs, checked across keys, and every error
//! placed at its line and key path with the nearest valid key when one is misspelt.

use std::path::{Path, PathBuf};

use super::*;
use crate::Error;

/// The largest config file read (the reference config with every key is ~10 KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Parses and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        if let Ok(m) = std::fs::metadata(path) {
            if m.len() > MAX_CONFIG_BYTES {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    msg: format!(
                        "{} bytes: larger than any config can be (the limit is {MAX_CONFIG_BYTES})",
                        m.len()
                    ),
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: if e.kind() == std::io::ErrorKind::InvalidData {
                "not valid UTF-8".into()
            } else {
                e.to_string()
            },
        })?;
        Self::from_yaml(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
    }

    /// Settings that are valid but do nothing, so a user who set them is told rather than
    /// left believing they regularise (PyTorch's `nn.GRU` warns the same way about `dropout`
    /// with one layer).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stacked = |key: &str, p: f32, layers: usize, instead: &str| {
            if p > 0.0 && layers == 1 {
                out.push(format!(
                    "{key}: {p} has no effect with num_layers: 1 (it drops between stacked layers); \
                     {instead}"
                ));
            }
        };
        let (e, d) = (&self.model.encoder, &self.model.decoder);
        if self.task == Task::Translation {
            stacked(
                "model.encoder.dropout",
                e.dropout,
                e.num_layers,
                "emb_dropout and word_dropout act on a one-layer encoder",
            );
        }
        stacked(
            "model.decoder.dropout",
            d.dropout,
            d.num_layers,
            "hidden_dropout drops the attentional vector before the output projection",
        );
        out
    }

    /// Parses and validates YAML text; the error says where and what was expected.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError(vec![describe_yaml_error(&e, text)]))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as written beside a model: every key resolved, but only the model sections
    /// of its task (a translation model has no `image_encoder`, a language model no encoder).
    pub fn to_yaml(&self) -> String {
        let m = &self.model;
        let resolved = Resolved {
            name: &self.name,
            task: self.task,
            seed: self.seed,
            device: self.device,
            data: &self.data,
            model: ResolvedModel {
                encoder: (self.task == Task::Translation).then_some(&m.encoder),
                image_encoder: (self.task == Task::Captioning).then_some(&m.image_encoder),
                decoder: &m.decoder,
                tied_source_target: m.tied_source_target,
            },
            train: &self.train,
            decoding: &self.decoding,
        };
        serde_saphyr::to_string(&resolved).expect("a config always serialises")
    }
}

/// [`Config`]'s fields, in its order, with the model sections of other tasks left out.
#[derive(Serialize)]
struct Resolved<'a> {
    name: &'a str,
    task: Task,
    seed: u64,
    device: crate::device::DeviceChoice,
    data: &'a DataConfig,
    model: ResolvedModel<'a>,
    train: &'a TrainConfig,
    decoding: &'a DecodingConfig,
}

#[derive(Serialize)]
struct ResolvedModel<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder: Option<&'a EncoderSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_encoder: Option<&'a ImageEncoderSection>,
    decoder: &'a DecoderSection,
    tied_source_target: bool,
}

/// `p` if it is absolute, else `p` under `base` (every relative path of a config is resolved
/// against the data directory).
pub fn resolve_path(base: &Path, p: impl AsRef<Path>) -> PathBuf {
    let p = p.as_ref();
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The data directory: the flag, else `SEQ2SEQ_DATA_DIR`, else `datasets/`.
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SEQ2SEQ_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("datasets")),
    }
}

fn describe_yaml_error(e: &serde_saphyr::Error, text: &str) -> String {
    let loc = e.location();
    let at = loc
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let (path, in_flow) = loc
        .map(|l| key_path_at(text, l.line() as usize, l.column() as usize))
        .unwrap_or_default();
    let mut msg = e.to_string().lines().next().unwrap_or_default().to_string();
    // Drop the location prefixes the message repeats; `at` carries it once.
    msg = msg.trim_start_matches("error: ").to_string();
    if let Some(l) = loc {
        msg = msg
            .trim_start_matches(&format!("line {} column {}: ", l.line(), l.column()))
            .to_string();
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail
                .trim_start_matches(", expected one of ")
                .trim_start_matches(", there are no fields")
                .split(", ")
                .map(|k| k.trim_matches('`'))
                .filter(|k| !k.is_empty())
                .collect();
            // In block style the error's line is the key's own; inside a flow mapping the path
            // ends at the mapping, and the key is the field.
            let key = match (path.is_empty(), in_flow) {
                (true, _) => field.to_string(),
                (false, true) => format!("{path}.{field}"),
                (false, false) => path.clone(),
            };
            let mut out = format!("{at}unknown key `{key}`");
            if let Some(n) = nearest(field, &expected) {
                out.push_str(&format!(" (did you mean `{n}`?)"));
            }
            out.push_str(&format!("; valid keys here: {}", expected.join(", ")));
            return out;
        }
    }
    if let (Some(ty), Some(l)) = (msg.strip_prefix("invalid "), loc) {
        if let Some(want) = expected_words(ty) {
            let got = scalar_at(text, l.line() as usize, l.column() as usize);
            msg = format!("expected {want}, got {got:?}");
        }
    }
    if path.is_empty() {
        format!("{at}{msg}")
    } else {
        format!("{at}key `{path}`: {msg}")
    }
}

/// What a Rust type named in a parse error means to someone writing YAML.
fn expected_words(ty: &str) -> Option<&'static str> {
    Some(match ty.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number ≥ 0",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" | "floating point" => "a number",
        "boolean" => "true or false",
        "bool" => "true or false",
        _ => return None,
    })
}

/// The scalar written at 1-based `line` and `column` (up to a flow delimiter or comment).
fn scalar_at(text: &str, line: usize, column: usize) -> String {
    let l = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    let rest: String = l.chars().skip(column.saturating_sub(1)).collect();
    let end = rest.find([',', '}', ']', '#']).unwrap_or(rest.len());
    rest[..end].trim().trim_matches(['"', '\'']).to_string()
}

/// The keys of the flow mappings (`{a: {b: …}}`) open at 1-based `column` of `line`, outermost
/// first; empty outside any.
fn flow_keys(line: &str, column: usize) -> (Vec<String>, bool) {
    let upto: String = line.chars().take(column.saturating_sub(1)).collect();
    let Some(open) = upto.find('{') else {
        return (Vec::new(), false);
    };
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut token = String::new();
    for c in upto[open..].chars() {
        match c {
            '{' => stack.push(None),
            '}' => {
                stack.pop();
            }
            ',' => {
                if let Some(k) = stack.last_mut() {
                    *k = None;
                }
            }
            ':' => {
                if let Some(k) = stack.last_mut() {
                    *k = Some(token.trim().to_string());
                }
            }
            _ => {
                token.push(c);
                continue;
            }
        }
        token.clear();
    }
    let inside = !stack.is_empty();
    (stack.into_iter().flatten().collect(), inside)
}

/// The dotted key path at 1-based `line` and `column`: the block keys from indentation, then the
/// keys of any flow mappings open there; and whether the position is inside a flow mapping.
fn key_path_at(text: &str, line: usize, column: usize) -> (String, bool) {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return (String::new(), false);
    }
    let block = block_path_at(&lines, line);
    let (flow, inside) = flow_keys(lines[line - 1], column);
    let parts: Vec<String> = std::iter::once(block)
        .filter(|b| !b.is_empty())
        .chain(flow)
        .collect();
    (parts.join("."), inside)
}

/// The dotted key path of the mapping key on 1-based `line`, from indentation.
fn block_path_at(lines: &[&str], line: usize) -> String {
    let key_of = |l: &str| -> Option<(usize, String)> {
        let trimmed = l.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            return None;
        }
        let indent = l.len() - trimmed.len();
        let key = trimmed
            .split(':')
            .next()?
            .trim()
            .trim_start_matches("- ")
            .to_string();
        trimmed.contains(':').then_some((indent, key))
    };
    let Some((mut indent, key)) = key_of(lines[line - 1]) else {
        return String::new();
    };
    let mut parts = vec![key];
    for l in lines[..line - 1].iter().rev() {
        if let Some((i, k)) = key_of(l) {
            if i < indent {
                parts.push(k);
                indent = i;
                if i == 0 {
                    break;
                }
            }
        }
    }
    parts.reverse();
    parts.join(".")
}

/// The expected key closest to `got` by edit distance, if it is plausibly a typo.
fn nearest<'a>(got: &str, expected: &[&'a str]) -> Option<&'a str> {
    let dist = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    };
    expected
        .iter()
        .map(|e| (dist(got, e), *e))
        .min()
        .filter(|(d, _)| *d <= got.len().max(3) / 2)
        .map(|(_, e)| e)
}
