//! The model's weights as the loop saves and restores them: every variable plus a pretrained
//! backbone's frozen tensors, checked finite before any write.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use seq2seq_nn::SeededVarMap;

use crate::model_dir::LAST;
use crate::train::optim::Adam;
use crate::{Error, Result};

/// Every variable's current value.
pub(crate) fn weights(vm: &SeededVarMap) -> HashMap<String, Tensor> {
    vm.var_map()
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// The weights, if every value is finite: non-finite weights are never written.
pub(crate) fn finite(out: &Path, w: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    for (name, t) in &w {
        let m = t
            .abs()?
            .max_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        if !m.is_finite() {
            return Err(Error::NonFinite {
                path: out.to_path_buf(),
                tensor: name.clone(),
            });
        }
    }
    Ok(w)
}

/// A pretrained backbone's checkpoint into a freshly built model: its fine-tuned layers start
/// from the checkpoint, and its frozen layers are returned, to be saved with the model so that
/// the model directory stands alone.
pub(crate) fn seed_backbone(
    vm: &SeededVarMap,
    tensors: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let vars = vm.var_map().data().lock().unwrap();
    let mut frozen = HashMap::new();
    for (name, t) in tensors {
        // The ImageNet head is not part of the encoder.
        if name.starts_with("_fc.") || name.ends_with("num_batches_tracked") {
            continue;
        }
        let full = format!("encoder.backbone.{name}");
        match vars.get(&full) {
            Some(v) => v.set(t)?,
            None => {
                frozen.insert(full, t.clone());
            }
        }
    }
    Ok(frozen)
}

/// A resumed run's weights and optimizer moments (from `last.safetensors`) into the model.
pub(crate) fn restore(
    out: &Path,
    vars: &HashMap<String, Var>,
    opt: &mut Adam,
    weights: &HashMap<String, Tensor>,
    moments: &HashMap<String, Tensor>,
) -> Result<()> {
    for (name, var) in vars {
        let v = weights.get(name).ok_or_else(|| Error::ModelDir {
            path: out.to_path_buf(),
            msg: format!("{LAST} lacks {name}"),
        })?;
        var.set(v)?;
    }
    opt.load_state(moments).map_err(|msg| Error::ModelDir {
        path: out.to_path_buf(),
        msg: format!("{LAST}: {msg}"),
    })
}
