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

use candle_core::pickle::{Object, Stack};
use candle_core::{bail, Device, Result, Tensor};

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// All tensors of a `.pth` state dict, in either format.
pub fn load_pth(path: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(b"PK") {
        return candle_core::pickle::read_all(path)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(dev)?)))
            .collect();
    }
    // Legacy: pickle 1 is the magic number (a long after PROTO and LONG1 opcodes).
    if bytes.len() < 14 || bytes[4..14] != LEGACY_MAGIC {
        bail!(
            "{} is neither a zip nor a legacy PyTorch checkpoint",
            path.display()
        );
    }
    let mut cur = Cursor::new(&bytes[..]);
    let read_pickle = |cur: &mut Cursor<&[u8]>| -> Result<Object> {
        let mut s = Stack::empty();
        s.read_loop(cur)?;
        s.finalize()
    };
    for _ in 0..3 {
        read_pickle(&mut cur)?; // magic number, protocol version, system info
    }
    let state = read_pickle(&mut cur)?;
    let keys = match read_pickle(&mut cur)? {
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
        if let Some(info) = value.into_tensor_info(name, Path::new(""))? {
            infos.push(info);
        }
    }
    // Storages follow in the order of the key list.
    let mut storages: HashMap<String, (Vec<u8>, usize)> = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        cur.read_exact(&mut n)?;
        let count = u64::from_le_bytes(n) as usize;
        let elem = infos
            .iter()
            .find(|i| i.path.trim_start_matches('/') == key)
            .map(|i| i.dtype.size_in_bytes())
            .unwrap_or(4);
        let mut data = vec![0u8; count * elem];
        cur.read_exact(&mut data)?;
        storages.insert(key, (data, count));
    }
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

/// Gathers a strided (e.g. transposed) f32 view out of a flat storage.
fn strided_f32(storage: &Tensor, start: usize, dims: &[usize], stride: &[usize]) -> Result<Tensor> {
    let flat: Vec<f32> = storage.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let off: usize = start + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(
            *flat
                .get(off)
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
