//! A seeded parameter store: candle's `VarMap` draws its initial values from an unseedable RNG.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A [`VarMap`] whose new variables are initialised from a generator seeded by
/// `(seed, parameter name)`: the same seed gives the same weights whatever order the model
/// builds its layers in.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(seed: u64) -> Self {
        Self {
            map: VarMap::new(),
            seed,
        }
    }

    /// The underlying variables (for the optimizer and for saving).
    pub fn var_map(&self) -> &VarMap {
        &self.map
    }

    /// A `VarBuilder` creating trainable variables in this store.
    pub fn var_builder(&self, device: &Device) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    fn draw(&self, shape: &Shape, name: &str, init: Init) -> Result<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ crate::siphash::name_hash(name));
        let n = shape.elem_count();
        let fan = |f: FanInOut| -> f64 {
            let dims = shape.dims();
            let receptive: usize = dims.iter().skip(2).product();
            match (f, dims.len()) {
                (_, 0) => 1.0,
                (_, 1) => dims[0] as f64,
                (FanInOut::FanIn, _) => (dims[1] * receptive) as f64,
                (FanInOut::FanOut, _) => (dims[0] * receptive) as f64,
            }
        };
        let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| {
            let z: f64 = StandardNormal.sample(rng);
            (mean + std * z) as f32
        };
        Ok(match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => (0..n).map(|_| normal(&mut rng, mean, stdev)).collect(),
            Init::Uniform { lo, up } => (0..n)
                .map(|_| rng.random_range(lo as f32..=up as f32))
                .collect(),
            Init::Kaiming {
                dist,
                fan: f,
                non_linearity,
            } => {
                let std = non_linearity.gain() / fan(f).sqrt();
                match dist {
                    NormalOrUniform::Normal => (0..n).map(|_| normal(&mut rng, 0.0, std)).collect(),
                    NormalOrUniform::Uniform => {
                        let bound = (3.0f64.sqrt() * std) as f32;
                        (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
                    }
                }
            }
        })
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(v) = self.map.data().lock().unwrap().get(name) {
            if v.shape() != &s {
                candle_core::bail!("parameter {name} has shape {:?}, expected {s:?}", v.shape());
            }
            return v.as_tensor().to_dtype(dtype);
        }
        let values = self.draw(&s, name, h)?;
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        self.map
            .data()
            .lock()
            .unwrap()
            .insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.map.data().lock().unwrap().get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no parameter named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().unwrap().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_regardless_of_order() -> Result<()> {
        let dev = Device::Cpu;
        let a = SeededVarMap::new(3);
        let vb = a.var_builder(&dev);
        let x1 = vb.get_with_hints((4, 5), "x", candle_nn::init::DEFAULT_KAIMING_UNIFORM)?;
        let y1 = vb.get_with_hints(7, "y", Init::Uniform { lo: -0.1, up: 0.1 })?;
        let b = SeededVarMap::new(3);
        let vb = b.var_builder(&dev);
        let y2 = vb.get_with_hints(7, "y", Init::Uniform { lo: -0.1, up: 0.1 })?;
        let x2 = vb.get_with_hints((4, 5), "x", candle_nn::init::DEFAULT_KAIMING_UNIFORM)?;
        assert_eq!(x1.to_vec2::<f32>()?, x2.to_vec2::<f32>()?);
        assert_eq!(y1.to_vec1::<f32>()?, y2.to_vec1::<f32>()?);
        assert!(y1.to_vec1::<f32>()?.iter().all(|v| v.abs() <= 0.1));
        let c = SeededVarMap::new(4);
        let x3 = c.var_builder(&dev).get_with_hints(
            (4, 5),
            "x",
            candle_nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        assert_ne!(x1.to_vec2::<f32>()?, x3.to_vec2::<f32>()?);
        Ok(())
    }
}
