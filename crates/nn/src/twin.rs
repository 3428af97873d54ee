//! What the fused ops' tests share: each holds a fused op to its op-by-op twin, in values and
//! in the gradient of every input and variable.

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};

use crate::init::SeededVarMap;

/// The largest absolute difference between two tensors of one shape.
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// A `(b, s)` source mask whose last row's last two positions are padding.
pub(crate) fn padded_mask(b: usize, s: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(
        (0..b * s)
            .map(|i| if i >= (b - 1) * s + s - 2 { 0f32 } else { 1.0 })
            .collect(),
        (b, s),
        dev,
    )
}

/// Asserts that the twin's gradients (`reference`) and the fused op's agree within `1e-4` for
/// each named input and every variable of `vm`; `label` names the case in a failure.
pub(crate) fn assert_same_gradients(
    label: &str,
    reference: &GradStore,
    fused: &GradStore,
    mut inputs: Vec<(String, Tensor)>,
    vm: &SeededVarMap,
) -> Result<()> {
    for (name, v) in vm.var_map().data().lock().unwrap().iter() {
        inputs.push((name.clone(), v.as_tensor().clone()));
    }
    for (name, v) in &inputs {
        let (Some(x), Some(y)) = (reference.get(v), fused.get(v)) else {
            panic!("{label}: no gradient for {name}");
        };
        let dd = max_diff(x, y)?;
        assert!(dd < 1e-4, "{label}: gradient of {name} differs by {dd}");
    }
    Ok(())
}
