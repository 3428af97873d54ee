//! Adam / AdamW with moments that can be saved and restored (candle-nn's are private), and
//! global gradient-norm clipping (candle-nn has none).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use seq2seq_nn::adam::{adam_step_in_place, sum_of_squares, AdamStep};

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
    /// The clipping factor [`Adam::clip`] chose, applied by the next [`Adam::update`].
    grad_scale: f64,
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
        // Separate allocations: the moments are updated in place.
        let zeros = || {
            params
                .iter()
                .map(|(_, v)| v.zeros_like())
                .collect::<Result<Vec<_>>>()
        };
        let (m, v) = (zeros()?, zeros()?);
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
            grad_scale: 1.0,
        })
    }

    /// Global L2 norm of the gradients; scales them to `max_norm` when it is exceeded.
    /// Returns the norm before clipping.
    /// Global gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`): returns the norm and
    /// has the next [`Adam::update`] scale the gradients by `max_norm / (norm + 1e-6)` when the
    /// norm exceeds `max_norm`. The gradients themselves are left as they are.
    pub fn clip(&mut self, grads: &GradStore, max_norm: f64) -> Result<f64> {
        let mut sq = 0f64;
        for (_, p) in &self.params {
            if let Some(g) = grads.get(p) {
                sq += sum_of_squares(g)?;
            }
        }
        let norm = sq.sqrt();
        self.grad_scale = if max_norm > 0.0 && norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        Ok(norm)
    }

    pub fn update(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let [b1, b2] = self.betas;
        let h = AdamStep {
            lr: self.lr,
            beta1: b1,
            beta2: b2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
            grad_scale: std::mem::replace(&mut self.grad_scale, 1.0),
            bias1: 1.0 - b1.powi(self.step as i32),
            bias2: 1.0 - b2.powi(self.step as i32),
        };
        for (i, (_, p)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            if adam_step_in_place(p.as_tensor(), &self.m[i], &self.v[i], g, h)? {
                continue;
            }
            // The same update with tensor ops (other devices, SEQ2SEQ_FUSED=0).
            let mut g = (g.detach() * h.grad_scale)?;
            if self.weight_decay > 0.0 && !self.decoupled {
                g = (g + (p.as_tensor() * self.weight_decay)?)?;
            }
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?.detach();
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let m_hat = (&self.m[i] / h.bias1)?;
            let v_hat = (&self.v[i] / h.bias2)?;
            let mut delta = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            if self.weight_decay > 0.0 && self.decoupled {
                delta = (delta + (p.as_tensor() * self.weight_decay)?)?;
            }
            p.set(&(p.as_tensor() - (delta * self.lr)?)?)?;
        }
        Ok(())
    }

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
                // A private copy: the moments are updated in place.
                *slot = t.copy().map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Three clipped steps of Adam and AdamW against PyTorch 2.15:
    /// ```python
    /// grads = [torch.tensor([[0.3,-0.2,0.5],[1.5,-2.0,0.05]]),
    ///          torch.tensor([[-0.1,0.4,0.2],[0.7,0.3,-1.2]]),
    ///          torch.tensor([[0.2,0.2,-0.6],[-0.4,1.0,0.9]])]
    /// for cls in (torch.optim.Adam, torch.optim.AdamW):
    ///     p = torch.nn.Parameter(torch.tensor([[0.5,-1.0,2.0],[0.1,0.2,-0.3]]))
    ///     opt = cls([p], lr=0.1, betas=(0.9,0.999), eps=1e-8, weight_decay=0.01)
    ///     for g in grads:
    ///         p.grad = g.clone(); torch.nn.utils.clip_grad_norm_([p], 1.0); opt.step()
    ///     print(p.detach().flatten().tolist())
    /// ```
    #[test]
    fn clipped_adam_and_adamw_match_pytorch() -> Result<()> {
        let dev = Device::Cpu;
        let grads = [
            [[0.3f32, -0.2, 0.5], [1.5, -2.0, 0.05]],
            [[-0.1, 0.4, 0.2], [0.7, 0.3, -1.2]],
            [[0.2, 0.2, -0.6], [-0.4, 1.0, 0.9]],
        ];
        let expected: [(bool, [f32; 6]); 2] = [
            (
                false,
                [
                    0.316_298_2,
                    -1.009_291_2,
                    1.810_317_2,
                    -0.150_176_2,
                    0.333_204_1,
                    -0.318_137,
                ],
            ),
            (
                true,
                [
                    0.321_804,
                    -1.013_840_3,
                    1.812_227_4,
                    -0.150_273_8,
                    0.333_204_7,
                    -0.317_962,
                ],
            ),
        ];
        for (decoupled, want) in expected {
            let p = Var::new(&[[0.5f32, -1.0, 2.0], [0.1, 0.2, -0.3]], &dev)?;
            let vars = HashMap::from([("p".to_string(), p.clone())]);
            let mut opt = Adam::new(&vars, 0.1, [0.9, 0.999], 1e-8, 0.01, decoupled)?;
            for g in grads {
                // The gradient store of a loss whose gradient with respect to p is g.
                let loss = (p.as_tensor() * Tensor::new(&g, &dev)?)?.sum_all()?;
                let store = loss.backward()?;
                opt.clip(&store, 1.0)?;
                opt.update(&store)?;
            }
            let got = p.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() < 2e-6,
                    "decoupled={decoupled}: {got:?} vs {want:?}"
                );
            }
        }
        Ok(())
    }
}
