//! A verified download becomes the files a config reads: copied, gunzipped, or picked out of a tar
//! or zip archive. Everything is written under a `.partial` name and hashed on the way; the caller
//! renames the lot into place once every file of the download checked out.
//!
//! An archive with any entry that is absolute or climbs with `..` (zip-slip), or whose picked
//! members are links, is refused whole: the destination is always computed from the catalogue.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::catalog::{Download, Member, Unpack};
use crate::{io_err, Error, Result};

/// One unpacked output: written at `partial`, to be renamed to `target`.
#[derive(Debug)]
pub struct Staged {
    pub partial: PathBuf,
    pub target: PathBuf,
}

/// The name an output is written under before it is verified.
pub fn partial_of(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_os_string();
    s.push(".partial");
    PathBuf::from(s)
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = BufReader::new(File::open(path).map_err(io_err(path))?);
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `r` into `path` (parents created), syncs it, and returns its SHA-256.
fn write_hashed(mut r: impl Read, path: &Path, url: &str) -> Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut f = File::create(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // A read error here is the archive's (truncated gzip, corrupt deflate), not the disk's.
            Err(e) => return Err(archive(url, format!("{}: {e}", path.display()))),
        };
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(io_err(path))?;
    }
    f.sync_all().map_err(io_err(path))?;
    Ok(hex(&h.finalize()))
}

fn archive(url: &str, msg: impl Into<String>) -> Error {
    Error::Archive {
        url: url.to_string(),
        msg: msg.into(),
    }
}

fn check_sum(url: &str, what: &str, expected: Option<&str>, got: &str) -> Result<()> {
    match expected {
        Some(e) if e != got => Err(Error::Mismatch {
            url: url.to_string(),
            what: "sha256",
            expected: format!("{e} for {what}"),
            got: got.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Unpacks the verified download at `file` below `data_dir`. On error, whatever was staged is
/// removed again.
pub fn unpack(d: &Download, file: &Path, data_dir: &Path, url: &str) -> Result<Vec<Staged>> {
    let mut staged = Vec::new();
    let r = unpack_into(d, file, data_dir, url, &mut staged);
    if r.is_err() {
        for s in &staged {
            let _ = std::fs::remove_file(&s.partial);
            let _ = std::fs::remove_dir_all(&s.partial);
        }
    }
    r.map(|()| staged)
}

fn unpack_into(
    d: &Download,
    file: &Path,
    data_dir: &Path,
    url: &str,
    staged: &mut Vec<Staged>,
) -> Result<()> {
    let open = || File::open(file).map_err(io_err(file));
    match d.unpack {
        Unpack::None | Unpack::Gz => {
            let to = d.to.as_deref().unwrap_or_default();
            let target = data_dir.join(to);
            let partial = partial_of(&target);
            staged.push(Staged {
                partial: partial.clone(),
                target,
            });
            let reader: Box<dyn Read> = match d.unpack {
                Unpack::Gz => Box::new(flate2::read::GzDecoder::new(BufReader::new(open()?))),
                _ => Box::new(BufReader::new(open()?)),
            };
            let sum = write_hashed(reader, &partial, url)?;
            check_sum(url, to, d.to_sha256.as_deref(), &sum)
        }
        Unpack::TarGz | Unpack::Zip => {
            let x = Extract {
                members: &d.extract,
                data_dir,
                url,
                staged,
            };
            if d.unpack == Unpack::TarGz {
                x.tar(open()?)
            } else {
                x.zip(open()?)
            }
        }
    }
}

/// Where an archive entry lands: the member it belongs to and its target, if it is picked.
fn place<'m>(members: &'m [Member], name: &str, data_dir: &Path) -> Option<(&'m Member, PathBuf)> {
    members.iter().find_map(|m| {
        if m.from.ends_with('/') {
            let rest = name.strip_prefix(&m.from)?;
            (!rest.is_empty()).then(|| (m, data_dir.join(&m.to).join(rest)))
        } else {
            (name == m.from).then(|| (m, data_dir.join(&m.to)))
        }
    })
}

/// The staging name of an entry: a folder member is staged as a whole folder `<to>.partial/`.
fn stage_path(m: &Member, target: &Path, data_dir: &Path) -> PathBuf {
    if m.from.ends_with('/') {
        let dir = data_dir.join(m.to.trim_end_matches('/'));
        partial_of(&dir).join(target.strip_prefix(&dir).unwrap_or(target))
    } else {
        partial_of(target)
    }
}

fn safe_entry(name: &Path) -> bool {
    name.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Records a member's staging; a folder member once, however many files it holds.
fn note_staged(staged: &mut Vec<Staged>, m: &Member, target: &Path, data_dir: &Path) {
    let (partial, target) = if m.from.ends_with('/') {
        let dir = data_dir.join(m.to.trim_end_matches('/'));
        (partial_of(&dir), dir)
    } else {
        (partial_of(target), target.to_path_buf())
    };
    if !staged.iter().any(|s| s.partial == partial) {
        staged.push(Staged { partial, target });
    }
}

fn all_found(members: &[Member], staged: &[Staged], data_dir: &Path, url: &str) -> Result<()> {
    for m in members {
        let target = data_dir.join(m.to.trim_end_matches('/'));
        if !staged.iter().any(|s| s.target == target) {
            return Err(archive(
                url,
                format!("the archive has no member {}", m.from),
            ));
        }
    }
    Ok(())
}

/// The members of one archive being picked out into their staging names.
struct Extract<'a> {
    members: &'a [Member],
    data_dir: &'a Path,
    url: &'a str,
    staged: &'a mut Vec<Staged>,
}

impl Extract<'_> {
    /// Writes one picked entry to its staging name and checks its sum.
    fn entry(&mut self, r: impl Read, m: &Member, target: &Path, name: &str) -> Result<()> {
        note_staged(self.staged, m, target, self.data_dir);
        let out = stage_path(m, target, self.data_dir);
        let sum = write_hashed(r, &out, self.url)?;
        check_sum(self.url, name, m.sha256.as_deref(), &sum)
    }

    fn escapes(&self, name: &str) -> Error {
        archive(
            self.url,
            format!("refusing entry {name}: it escapes the archive"),
        )
    }

    fn tar(mut self, file: File) -> Result<()> {
        let url = self.url;
        let bad = |e: std::io::Error| archive(url, format!("not a readable tar.gz: {e}"));
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        for entry in tar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let path = entry.path().map_err(bad)?.into_owned();
            let name = path.to_string_lossy().replace('\\', "/");
            if !safe_entry(&path) {
                return Err(self.escapes(&name));
            }
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let Some((m, target)) = place(self.members, &name, self.data_dir) else {
                continue;
            };
            if !kind.is_file() {
                return Err(archive(
                    url,
                    format!("refusing entry {name}: not a regular file"),
                ));
            }
            self.entry(&mut entry, m, &target, &name)?;
        }
        all_found(self.members, self.staged, self.data_dir, url)
    }

    fn zip(mut self, file: File) -> Result<()> {
        let url = self.url;
        let bad = |e: zip::result::ZipError| archive(url, format!("not a readable zip: {e}"));
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(bad)?;
        // Every entry is checked before anything is written.
        for i in 0..zip.len() {
            let e = zip.by_index_raw(i).map_err(bad)?;
            let name = e.name().map_err(bad)?.into_owned();
            if e.enclosed_name().is_none() || !safe_entry(Path::new(&name)) {
                return Err(self.escapes(&name));
            }
        }
        for i in 0..zip.len() {
            let mut e = zip.by_index(i).map_err(bad)?;
            let name = e.name().map_err(bad)?.into_owned();
            if e.is_dir() {
                continue;
            }
            let Some((m, target)) = place(self.members, &name, self.data_dir) else {
                continue;
            };
            if e.is_symlink() {
                return Err(archive(url, format!("refusing entry {name}: a link")));
            }
            self.entry(&mut e, m, &target, &name)?;
        }
        all_found(self.members, self.staged, self.data_dir, url)
    }
}
