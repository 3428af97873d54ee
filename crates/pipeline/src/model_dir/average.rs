//! Checkpoint averaging (as fairseq's `average_checkpoints.py` and OpenNMT's `average_models.py`):
//! the element-wise mean of the weights of several checkpoints of one run, written as a model
//! directory that `translate`, `caption`, `generate` and `eval` load like any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::model_dir::{
    checkpoint_file, model_weights, save_tensors, write_atomic, BEST, CONFIG, SRC_TOKENIZER,
    TGT_TOKENIZER,
};
use crate::{Error, Result};

/// Averages `checkpoints` (at least two) into `out`/model.safetensors and copies the first
/// checkpoint's config and tokenizers beside it (unless `out` is that directory). Returns the
/// number of tensors averaged.
pub fn average(checkpoints: &[PathBuf], out: &Path) -> Result<usize> {
    if checkpoints.len() < 2 {
        return Err(Error::AverageTooFew(checkpoints.len()));
    }
    let files: Vec<(PathBuf, String)> = checkpoints.iter().map(|c| checkpoint_file(c)).collect();
    let (first_dir, first_name) = &files[0];
    let mut sum: HashMap<String, Tensor> = model_weights(first_dir, first_name)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F64)?)))
        .collect::<Result<_>>()?;
    for (dir, name) in &files[1..] {
        let w = model_weights(dir, name)?;
        let here = dir.join(name);
        let there = first_dir.join(first_name);
        let mismatch = |tensor: &str, what: String| Error::AverageMismatch {
            path: here.clone(),
            first: there.clone(),
            tensor: tensor.to_string(),
            what,
        };
        if let Some(k) = sum.keys().find(|k| !w.contains_key(*k)) {
            return Err(mismatch(k, "only the first has it".into()));
        }
        if let Some(k) = w.keys().find(|k| !sum.contains_key(*k)) {
            return Err(mismatch(k, "the first lacks it".into()));
        }
        for (k, acc) in sum.iter_mut() {
            let t = &w[k];
            if t.shape() != acc.shape() {
                return Err(mismatch(
                    k,
                    format!("shape {:?}, in the first {:?}", t.shape(), acc.shape()),
                ));
            }
            *acc = (&*acc + t.to_dtype(DType::F64)?)?;
        }
    }
    let n = files.len() as f64;
    let dtypes: HashMap<String, DType> = model_weights(first_dir, first_name)?
        .into_iter()
        .map(|(k, v)| (k, v.dtype()))
        .collect();
    let mean: HashMap<String, Tensor> = sum
        .into_iter()
        .map(|(k, v)| {
            let t = (v / n)?.to_dtype(dtypes[&k])?;
            Ok((k, t))
        })
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).map_err(|source| Error::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let same_dir = std::fs::canonicalize(out).ok() == std::fs::canonicalize(first_dir).ok();
    if !same_dir {
        for f in [CONFIG, SRC_TOKENIZER, TGT_TOKENIZER] {
            let src = first_dir.join(f);
            if src.exists() {
                let bytes = std::fs::read(&src).map_err(|e| Error::ModelDir {
                    path: first_dir.clone(),
                    msg: format!("cannot read {f}: {e}"),
                })?;
                write_atomic(&out.join(f), &bytes)?;
            }
        }
    }
    save_tensors(&out.join(BEST), &mean)?;
    Ok(mean.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_dir::{load_tensors, STATE_TENSOR};
    use candle_core::Device;

    fn write(dir: &Path, name: &str, tensors: &[(&str, Tensor)]) -> Result<()> {
        std::fs::create_dir_all(dir).unwrap();
        let map = tensors
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        save_tensors(&dir.join(name), &map)
    }

    #[test]
    fn averages_weights_and_refuses_mismatched_checkpoints() -> Result<()> {
        let tmp = std::env::temp_dir().join(format!("seq2seq-average-{}", std::process::id()));
        let dev = Device::Cpu;
        let a = tmp.join("a");
        write(&a, BEST, &[("w", Tensor::new(&[1f32, 2., 3.], &dev)?)])?;
        std::fs::write(a.join(CONFIG), "name: a\n").unwrap();
        // A resume checkpoint: its optimizer moments and trainer state are not weights.
        write(
            &a,
            "last.safetensors",
            &[
                ("w", Tensor::new(&[3f32, 4., 5.], &dev)?),
                ("optimizer.m.w", Tensor::new(&[9f32, 9., 9.], &dev)?),
                (STATE_TENSOR, Tensor::new(&[1u8, 2], &dev)?),
            ],
        )?;
        let out = tmp.join("avg");
        let n = average(&[a.clone(), a.join("last.safetensors")], &out)?;
        assert_eq!(n, 1);
        let w = load_tensors(&out, BEST, &dev)?;
        assert_eq!(w["w"].to_vec1::<f32>()?, vec![2., 3., 4.]);
        assert_eq!(
            std::fs::read_to_string(out.join(CONFIG)).unwrap(),
            "name: a\n"
        );
        // Different shapes, different names, too few inputs: clear errors.
        let b = tmp.join("b");
        write(&b, BEST, &[("w", Tensor::new(&[1f32, 2.], &dev)?)])?;
        let e = average(&[a.clone(), b.clone()], &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor w (shape [2], in the first [3])"), "{e}");
        write(&b, BEST, &[("v", Tensor::new(&[1f32, 2., 3.], &dev)?)])?;
        let e = average(&[a.clone(), b], &out).unwrap_err().to_string();
        assert!(e.contains("tensor w (only the first has it)"), "{e}");
        let e = average(std::slice::from_ref(&a), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least two"), "{e}");
        let e = average(&[a.clone(), tmp.join("missing")], &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&tmp).ok();
        Ok(())
    }
}
