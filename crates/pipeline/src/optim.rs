//! Adam / AdamW with moments that can be saved and restored (candle-nn's are private), and
//! global gradient-norm clipping (candle-nn has none).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

pub struct Adam {
    /// Parameters in name order, so updates and saved moments are deterministic.
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Decoupled weight decay (AdamW) rather than L2 added to the gradient (Adam).
    pub decoupled: bool,
    pub step: u64,
}

impl Adam {
    pub fn new(
        vars: &HashMap<String, Var>,
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> Result<Self> {
        let mut params: Vec<(String, Var)> =
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            params,
            m,
            v,
            lr,
            betas,
            eps,
            weight_decay,
            decoupled,
            step: 0,
        })
    }

    /// Global L2 norm of the gradients; scales them to `max_norm` when it is exceeded.
    /// Returns the norm before clipping.
    pub fn clip(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let mut sq = 0f64;
        for (_, p) in &self.params {
            if let Some(g) = grads.get(p) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for (_, p) in &self.params {
                if let Some(g) = grads.remove(p) {
                    grads.insert(p, (g * scale)?);
                }
            }
        }
        Ok(norm)
    }

    pub fn update(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let [b1, b2] = self.betas;
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for (i, (_, p)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            // A parameter's gradient can still reference the forward graph it came from (candle
            // detaches intermediate gradients, not the leaves'); the moments must not, or each
            // step's graph would stay alive through them.
            let mut g = g.detach();
            if self.weight_decay > 0.0 && !self.decoupled {
                g = (g + (p.as_tensor() * self.weight_decay)?)?;
            }
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?.detach();
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let m_hat = (&self.m[i] / c1)?;
            let v_hat = (&self.v[i] / c2)?;
            let mut delta = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            if self.weight_decay > 0.0 && self.decoupled {
                delta = (delta + (p.as_tensor() * self.weight_decay)?)?;
            }
            p.set(&(p.as_tensor() - (delta * self.lr)?)?)?;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.<param>`, `v.<param>`) for the checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
    ) -> std::result::Result<(), String> {
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let t = state
                    .get(&key)
                    .ok_or_else(|| format!("missing tensor {key}"))?;
                if t.shape() != p.shape() {
                    return Err(format!(
                        "{key} has shape {:?}, expected {:?}",
                        t.shape(),
                        p.shape()
                    ));
                }
                *slot = t.clone();
            }
        }
        Ok(())
    }
}
