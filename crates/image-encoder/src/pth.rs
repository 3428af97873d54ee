//! Reading PyTorch checkpoints in both serialisation formats.
//!
//! candle reads the zip-based format (PyTorch ≥ 1.6). The shared EfficientNet-Lite0 checkpoint
//! is in the older "legacy" format: five concatenated pickles (magic number, protocol version,
//! system info, the state dict with persistent storage ids, the list of storage keys) followed by
//! each storage as a little-endian u64 element count and its raw bytes. The pickles are parsed
//! with candle's own pickle machine; only the framing is handled here.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{bail, Device, Result, Tensor};

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// All tensors of a `.pth` state dict, in either format.
pub fn load_pth(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(b"PK") {
        check_zip_records(&bytes)
            .map_err(|m| candle_core::Error::Msg(format!("{}: {m}", path.display())))?;
        return candle_core::pickle::read_all(path)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(dev)?)))
            .collect();
    }
    // Legacy: pickle 1 is the magic number (a long after PROTO and LONG1 opcodes).
    if bytes.len() < 15
        || bytes[..4] != [0x80, 0x02, 0x8a, 0x0a]
        || bytes[4..14] != LEGACY_MAGIC
        || bytes[14] != b'.'
    {
        bail!(
            "{} is neither a zip nor a legacy PyTorch checkpoint",
            path.display()
        );
    }
    let mut cur = Cursor::new(&bytes[..]);
    // Pickle 1, the magic number, was checked above byte for byte (PROTO 2, LONG1 of 10 bytes,
    // STOP: 15 bytes); it is skipped rather than parsed, since candle's LONG1 shifts a u64 past
    // its width for 10 bytes (an overflow panic where overflow checks are on; a fuzz finding).
    cur.set_position(15);
    let (infos, keys) = legacy_records(path, &mut cur)?;
    let storages = legacy_storages(path, &mut cur, &infos, keys)?;
    legacy_tensors(path, infos, &storages, dev)
}

/// Pickles 2 to 5 of a legacy checkpoint: the tensor records of its state dict and the storage
/// keys in the order their bytes follow.
fn legacy_records(path: &Path, cur: &mut Cursor<&[u8]>) -> Result<(Vec<TensorInfo>, Vec<String>)> {
    let read_pickle = |cur: &mut Cursor<&[u8]>| -> Result<Object> {
        let mut s = Stack::empty();
        s.read_loop(cur)?;
        s.finalize()
    };
    for _ in 0..2 {
        read_pickle(cur)?; // protocol version, system info
    }
    let state = read_pickle(cur)?;
    let keys = match read_pickle(cur)? {
        Object::List(k) => k
            .into_iter()
            .map(|k| k.unicode())
            .collect::<std::result::Result<Vec<_>, _>>()?,
        other => bail!("unexpected storage key list {other:?}"),
    };
    let Object::Dict(entries) = state else {
        bail!("{} does not hold a state dict", path.display());
    };
    let mut infos = Vec::new();
    for (name, value) in entries {
        if !tensor_record_ok(&value) {
            bail!(
                "{}: entry {name:?} is a malformed tensor record (corrupt checkpoint)",
                path.display()
            );
        }
        if let Some(info) = value.into_tensor_info(name, Path::new(""))? {
            infos.push(info);
        }
    }
    Ok((infos, keys))
}

/// The storages after the pickles, in the order of the key list: each a little-endian u64
/// element count and its bytes.
fn legacy_storages(
    path: &Path,
    cur: &mut Cursor<&[u8]>,
    infos: &[TensorInfo],
    keys: Vec<String>,
) -> Result<HashMap<String, (Vec<u8>, usize)>> {
    let total = cur.get_ref().len() as u64;
    let mut storages = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        cur.read_exact(&mut n)?;
        let count = u64::from_le_bytes(n) as usize;
        let elem = infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map(|i| i.dtype.size_in_bytes())
            .unwrap_or(4);
        // The count is the file's word: check it against the bytes that are left before
        // allocating, so a corrupt checkpoint is an error rather than an abort.
        let left = total - cur.position();
        let need = count.checked_mul(elem).filter(|&n| n as u64 <= left);
        let Some(need) = need else {
            bail!(
                "{}: storage {key} claims {count} elements of {elem} bytes, but only {left} bytes follow (truncated or corrupt checkpoint)",
                path.display()
            );
        };
        let mut data = vec![0u8; need];
        cur.read_exact(&mut data)?;
        storages.insert(key, (data, count));
    }
    Ok(storages)
}

/// Each record's view of its storage as a tensor.
fn legacy_tensors(
    path: &Path,
    infos: Vec<TensorInfo>,
    storages: &HashMap<String, (Vec<u8>, usize)>,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for info in infos {
        let key = info.path.trim_start_matches('/');
        let Some((data, count)) = storages.get(key) else {
            bail!(
                "{}: tensor {} refers to a missing storage {key}",
                path.display(),
                info.name
            );
        };
        let storage = Tensor::from_raw_buffer(data, info.dtype, &[*count], dev)?;
        let layout = &info.layout;
        let start = layout.start_offset() / info.dtype.size_in_bytes();
        let t = if layout.is_contiguous() {
            storage
                .narrow(0, start, layout.shape().elem_count())?
                .reshape(layout.shape())?
        } else {
            strided_f32(&storage, start, layout.dims(), layout.stride()).map_err(|e| {
                candle_core::Error::Msg(format!("{}: tensor {}: {e}", path.display(), info.name))
            })?
        };
        out.insert(info.name, t);
    }
    Ok(out)
}

/// The zip format's `data.pkl`, parsed once here so that candle's reader, which trusts its tensor
/// records, only ever sees well-formed ones.
fn check_zip_records(bytes: &[u8]) -> std::result::Result<(), String> {
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip: {e}"))?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned());
    let Some(name) = name else {
        return Err("no data.pkl in the zip".into());
    };
    let mut pkl = Vec::new();
    zip.by_name(&name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| format!("{name}: {e}"))?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut Cursor::new(&pkl[..]))
        .map_err(|e| format!("{name}: {e}"))?;
    let obj = stack.finalize().map_err(|e| format!("{name}: {e}"))?;
    if records_ok(&obj, 0) {
        Ok(())
    } else {
        Err(format!(
            "{name} holds a malformed tensor record (corrupt checkpoint)"
        ))
    }
}

/// Every reduce record in `o` (to a bounded depth) is well formed.
fn records_ok(o: &Object, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    let all = |v: &[Object]| v.iter().all(|x| records_ok(x, depth + 1));
    match o {
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            tensor_record_ok(o) && records_ok(callable, depth + 1) && records_ok(args, depth + 1)
        }
        Object::Tuple(v) | Object::List(v) => all(v),
        Object::Dict(kv) => kv
            .iter()
            .all(|(k, v)| records_ok(k, depth + 1) && records_ok(v, depth + 1)),
        Object::PersistentLoad(x) => records_ok(x, depth + 1),
        _ => true,
    }
}

fn is_class(o: &Object, module: &str, class: &str) -> bool {
    matches!(o, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

/// Whether a state-dict value that candle's `into_tensor_info` would take apart has the tuple
/// lengths it assumes: it indexes them unchecked and panics on a short one (a fuzz finding).
/// Values that are no tensor record at all pass (candle skips them).
fn tensor_record_ok(value: &Object) -> bool {
    let Object::Reduce { callable, args } = value else {
        return true;
    };
    let tuple = |o: &Object, n: usize| matches!(o, Object::Tuple(t) if t.len() >= n);
    let (callable, args): (&Object, &Object) =
        if is_class(callable, "torch._tensor", "_rebuild_from_type_v2") {
            match &**args {
                Object::Tuple(t) if t.len() >= 2 => (&t[0], &t[1]),
                _ => return false,
            }
        } else if is_class(callable, "torch._utils", "_rebuild_parameter") {
            match &**args {
                Object::Tuple(t) if !t.is_empty() => match &t[0] {
                    Object::Reduce { callable, args } => (callable, args),
                    _ => return false,
                },
                _ => return false,
            }
        } else {
            (callable, args)
        };
    if !is_class(callable, "torch._utils", "_rebuild_tensor_v2") {
        return true;
    }
    match args {
        Object::Tuple(t) if t.len() >= 4 => {
            matches!(&t[0], Object::PersistentLoad(s) if tuple(s, 5))
        }
        _ => false,
    }
}

/// Gathers a strided (e.g. transposed) f32 view out of a flat storage.
fn strided_f32(storage: &Tensor, start: usize, dims: &[usize], stride: &[usize]) -> Result<Tensor> {
    let flat: Vec<f32> = storage.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    // A stored view never holds more elements than its storage; a larger claim is corruption.
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= flat.len());
    let Some(n) = n else {
        bail!(
            "a view of shape {dims:?} is larger than its storage of {}",
            flat.len()
        );
    };
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let off = idx
            .iter()
            .zip(stride)
            .try_fold(start, |a, (i, s)| a.checked_add(i.checked_mul(*s)?));
        out.push(
            *off.and_then(|o| flat.get(o))
                .ok_or_else(|| candle_core::Error::Msg("view out of its storage".into()))?,
        );
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_vec(out, dims, storage.device())?.to_dtype(storage.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy checkpoint holding one f32 tensor `w` of 4 elements, with the storage's element
    /// count written as `count` (4 when honest), as `torch.save(..., _use_new_zipfile_serialization
    /// =False)` frames it: five protocol-2 pickles, then the storage.
    fn legacy(count: u64) -> Vec<u8> {
        let s = |t: &str| {
            let mut v = vec![b'X'];
            v.extend_from_slice(&(t.len() as u32).to_le_bytes());
            v.extend_from_slice(t.as_bytes());
            v
        };
        let mut f = vec![0x80, 0x02, 0x8a, 0x0a];
        f.extend_from_slice(&LEGACY_MAGIC);
        f.push(b'.');
        f.extend_from_slice(&[0x80, 0x02, b'M', 0xe9, 0x03, b'.']); // protocol 1001
        f.extend_from_slice(&[0x80, 0x02, b'}', b'.']); // system info
                                                        // {'w': _rebuild_tensor_v2(persistent('storage', FloatStorage, '0', 'cpu', 4), 0, (4,), (1,), False, OrderedDict())}
        f.extend_from_slice(&[0x80, 0x02, b'}', b'(']);
        f.extend(s("w"));
        f.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        f.push(b'(');
        f.extend(s("storage"));
        f.extend_from_slice(b"ctorch\nFloatStorage\n");
        f.extend(s("0"));
        f.extend(s("cpu"));
        f.extend_from_slice(&[b'K', 4, b't', b'Q']);
        f.extend_from_slice(&[b'K', 0, b'K', 4, 0x85, b'K', 1, 0x85, 0x89]);
        f.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        f.extend_from_slice(b"tRu.");
        f.extend_from_slice(&[0x80, 0x02, b']', b'(']);
        f.extend(s("0"));
        f.extend_from_slice(b"e.");
        f.extend_from_slice(&count.to_le_bytes());
        for x in [1.0f32, 2.0, 3.0, 4.0] {
            f.extend_from_slice(&x.to_le_bytes());
        }
        f
    }

    #[test]
    fn legacy_checkpoints_load_and_lying_counts_are_errors() {
        let dir = std::env::temp_dir().join(format!("s2s-pth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.pth");
        std::fs::write(&ok, legacy(4)).unwrap();
        let t = load_pth(&ok, &Device::Cpu).unwrap();
        assert_eq!(t["w"].to_vec1::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        for count in [5, 1 << 40, u64::MAX] {
            let bad = dir.join(format!("bad{count}.pth"));
            std::fs::write(&bad, legacy(count)).unwrap();
            let e = load_pth(&bad, &Device::Cpu).unwrap_err().to_string();
            assert!(
                e.contains(&format!("bad{count}.pth")) && e.contains("claims"),
                "{e}"
            );
        }
        let cut = dir.join("cut.pth");
        let b = legacy(4);
        std::fs::write(&cut, &b[..b.len() - 5]).unwrap();
        assert!(load_pth(&cut, &Device::Cpu).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
