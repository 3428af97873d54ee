//! The catalogue: per corpus, the files to download (URL, size, SHA-256), how each is unpacked and
//! where every resulting file lands below the data directory, with its own SHA-256 where known.
//!
//! The shipped catalogue is `datasets/catalog.yaml`, compiled into the binary so that `seq2seq data`
//! works from any directory; `--catalog FILE` reads another one with the same checks.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Deserialize;

use crate::{Error, Result};

/// The catalogue shipped with the project.
pub const SHIPPED: &str = include_str!("../../../datasets/catalog.yaml");

/// Every corpus by name, in name order.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Catalog {
    pub corpora: BTreeMap<String, Corpus>,
}

/// One corpus: what it is, under which terms, and its downloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    pub description: String,
    pub licence: String,
    #[serde(default)]
    pub citation: String,
    /// Said by `data list` and `fetch`: what differs from the copies our figures were measured on.
    #[serde(default)]
    pub note: String,
    pub files: Vec<Download>,
}

/// How a downloaded file becomes the files a config reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unpack {
    /// Kept as it is, at `to`.
    None,
    /// One gzip stream, decompressed to `to`.
    Gz,
    /// A gzip-compressed tar archive; `extract` picks the members.
    TarGz,
    /// A zip archive (a Python wheel is one); `extract` picks the members.
    Zip,
}

/// One file to download.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Download {
    pub url: String,
    /// Bytes of the download, where known.
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-256 of the download as served, where known; when absent, `fetch` prints the sum it
    /// computed so that a user can pin it.
    #[serde(default)]
    pub sha256: Option<String>,
    pub unpack: Unpack,
    /// Where the file (`none`) or its decompressed stream (`gz`) lands, relative to the data dir.
    #[serde(default)]
    pub to: Option<String>,
    /// SHA-256 of the file at `to` (for `gz`: the decompressed bytes; for `none` it defaults to
    /// `sha256`).
    #[serde(default)]
    pub to_sha256: Option<String>,
    /// The archive members to keep (`tar-gz`, `zip`).
    #[serde(default)]
    pub extract: Vec<Member>,
}

/// Archive members that land below the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's path in the archive; ending in `/`, every file below that folder.
    pub from: String,
    /// Where it lands, relative to the data directory; a folder when `from` is one.
    pub to: String,
    /// SHA-256 of the member's bytes (single files only).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One file or folder that a corpus puts below the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Relative to the data directory.
    pub path: String,
    pub is_dir: bool,
    pub sha256: Option<String>,
}

impl Catalog {
    /// The catalogue compiled into the binary.
    pub fn shipped() -> Result<Self> {
        Self::parse(SHIPPED, "datasets/catalog.yaml")
    }

    /// Reads a catalogue file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a catalogue; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let catalog: Catalog = serde_saphyr::from_str(text).map_err(|e| Error::Catalog {
            origin: origin.to_string(),
            msg: e.to_string(),
        })?;
        for (name, corpus) in &catalog.corpora {
            for (i, d) in corpus.files.iter().enumerate() {
                d.check().map_err(|msg| Error::Catalog {
                    origin: origin.to_string(),
                    msg: format!("{name}.files[{i}] ({}): {msg}", d.url),
                })?;
            }
        }
        Ok(catalog)
    }

    /// The corpus called `name`, or an error listing the names there are.
    pub fn get(&self, name: &str) -> Result<&Corpus> {
        self.corpora.get(name).ok_or_else(|| Error::UnknownCorpus {
            name: name.to_string(),
            known: self.corpora.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

impl Corpus {
    /// Everything this corpus puts below the data directory.
    pub fn outputs(&self) -> Vec<Output> {
        self.files.iter().flat_map(Download::outputs).collect()
    }
}

impl Download {
    /// The files or folders this download lands as.
    pub fn outputs(&self) -> Vec<Output> {
        match self.unpack {
            Unpack::None | Unpack::Gz => vec![Output {
                path: self.to.clone().unwrap_or_default(),
                is_dir: false,
                // A file kept as it is has the download's sum.
                sha256: match self.unpack {
                    Unpack::None => self.to_sha256.clone().or_else(|| self.sha256.clone()),
                    _ => self.to_sha256.clone(),
                },
            }],
            Unpack::TarGz | Unpack::Zip => self
                .extract
                .iter()
                .map(|m| Output {
                    path: m.to.trim_end_matches('/').to_string(),
                    is_dir: m.from.ends_with('/'),
                    sha256: m.sha256.clone(),
                })
                .collect(),
        }
    }

    /// The URL to fetch: the catalogue's, or with a mirror, `MIRROR/<host>/<path>`.
    pub fn url_via(&self, mirror: Option<&str>) -> String {
        match mirror {
            None => self.url.clone(),
            Some(m) => {
                let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
                format!("{}/{rest}", m.trim_end_matches('/'))
            }
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err("url must be http:// or https://".into());
        }
        for sum in [&self.sha256, &self.to_sha256].into_iter().flatten() {
            check_sum(sum)?;
        }
        match self.unpack {
            Unpack::None | Unpack::Gz => {
                let to = self
                    .to
                    .as_deref()
                    .ok_or("`to` is required for unpack none/gz")?;
                check_dest(to)?;
                if !self.extract.is_empty() {
                    return Err("`extract` is only for tar-gz and zip".into());
                }
            }
            Unpack::TarGz | Unpack::Zip => {
                if self.to.is_some() || self.to_sha256.is_some() {
                    return Err("archives name their members in `extract`, not `to`".into());
                }
                if self.extract.is_empty() {
                    return Err("an archive needs at least one `extract` member".into());
                }
                for m in &self.extract {
                    check_dest(&m.to)?;
                    if let Some(s) = &m.sha256 {
                        check_sum(s)?;
                    }
                    if m.from.ends_with('/') && m.sha256.is_some() {
                        return Err(format!("{}: a folder has no single sha256", m.from));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_sum(s: &str) -> std::result::Result<(), String> {
    let ok = s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    ok.then_some(())
        .ok_or_else(|| format!("{s:?} is not a lowercase hex SHA-256"))
}

/// A destination is relative; it may climb out of the data directory only through leading `..`
/// (the Lite0 weights sit beside it, in `../models`, as the shipped config expects).
fn check_dest(to: &str) -> std::result::Result<(), String> {
    let p = Path::new(to);
    let mut climbing = true;
    for c in p.components() {
        match c {
            Component::ParentDir if climbing => {}
            Component::Normal(_) => climbing = false,
            _ => return Err(format!("destination {to:?} must be a plain relative path")),
        }
    }
    if climbing {
        return Err(format!("destination {to:?} names no file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_parses_and_pins_multi30k() {
        let c = Catalog::shipped().unwrap();
        let m = c.get("multi30k").unwrap();
        let train_en = m
            .outputs()
            .into_iter()
            .find(|o| o.path == "multi30k/train.en");
        assert_eq!(
            train_en.unwrap().sha256.as_deref(),
            Some("460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6")
        );
        let e = c.get("multi31k").unwrap_err().to_string();
        assert!(e.contains("multi30k"), "{e}");
    }

    #[test]
    fn bad_entries_are_refused_with_their_place() {
        let bad = |yaml: &str| Catalog::parse(yaml, "t.yaml").unwrap_err().to_string();
        let e = bad("x:\n  description: d\n  licence: l\n  files:\n    - {url: ftp://a/b, unpack: none, to: x/b}\n");
        assert!(
            e.contains("t.yaml") && e.contains("x.files[0]") && e.contains("http"),
            "{e}"
        );
        let e = bad("x:\n  description: d\n  licence: l\n  files:\n    - {url: http://a/b, unpack: none, to: /etc/b}\n");
        assert!(e.contains("plain relative"), "{e}");
        let e = bad("x:\n  description: d\n  licence: l\n  files:\n    - {url: http://a/b, unpack: gz, to: a/../../b}\n");
        assert!(e.contains("plain relative"), "{e}");
        let e = bad("x:\n  description: d\n  licence: l\n  files:\n    - {url: http://a/b, unpack: none, to: b, sha256: XYZ}\n");
        assert!(e.contains("SHA-256"), "{e}");
        let e = bad(
            "x:\n  description: d\n  licence: l\n  files:\n    - {url: http://a/b, unpack: zip}\n",
        );
        assert!(e.contains("extract"), "{e}");
        let e = bad("x:\n  description: d\n  licence: l\n  colour: red\n  files: []\n");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_mirror_keeps_host_and_path() {
        let d = Download {
            url: "https://raw.githubusercontent.com/a/b/c.gz".into(),
            size: None,
            sha256: None,
            unpack: Unpack::Gz,
            to: Some("c".into()),
            to_sha256: None,
            extract: vec![],
        };
        assert_eq!(
            d.url_via(Some("http://127.0.0.1:9/cache/")),
            "http://127.0.0.1:9/cache/raw.githubusercontent.com/a/b/c.gz"
        );
        assert_eq!(d.url_via(None), d.url);
    }
}
