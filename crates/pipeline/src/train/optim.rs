//! Adam / AdamW with moments that can be saved and restored (candle-nn's are private), and
//! global gradient-norm clipping (candle-nn has none).

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use seq2seq_nn::adam::{adam_step_host, host_update_applies, sum_of_squares, AdamStep};

/// The first and second moments of one parameter: host buffers where the fused CPU update
/// applies (it updates them in place, in the same pass as the parameter), tensors elsewhere.
enum Moments {
    Host(Vec<f32>, Vec<f32>),
    Tensors(Tensor, Tensor),
}

pub struct Adam {
    /// Parameters in name order, so updates and saved moments are deterministic.
    params: Vec<(String, Var)>,
    moments: Vec<Moments>,
    /// Each parameter's factor on `lr` (`train.lr_multipliers`; 1 for most).
    lr_scales: Vec<f64>,
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
        let moments = params
            .iter()
            .map(|(_, p)| {
                Ok(if host_update_applies(p) {
                    let n = p.elem_count();
                    Moments::Host(vec![0.0; n], vec![0.0; n])
                } else {
                    Moments::Tensors(p.zeros_like()?, p.zeros_like()?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            lr_scales: vec![1.0; params.len()],
            params,
            moments,
            lr,
            betas,
            eps,
            weight_decay,
            decoupled,
            step: 0,
            grad_scale: 1.0,
        })
    }

    /// Global gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`): returns the norm and
    /// has the next [`Adam::update`] scale the gradients by `max_norm / (norm + 1e-6)` when the
    /// norm exceeds `max_norm`. The gradients themselves are left as they are.
    /// The variables it updates.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.params.iter().map(|(_, v)| v)
    }

    /// Scales each parameter's rate by the factor of the longest prefix of whole name components
    /// that names it (`a.b` names `a.b` and `a.b.c`, not `a.bc`). Returns how many parameter
    /// tensors each prefix governs; a prefix that names no parameter is an error naming it and
    /// the parameters' top-level groups, so a misspelt key does not silently train at full rate.
    pub fn set_lr_multipliers(
        &mut self,
        multipliers: &BTreeMap<String, f64>,
    ) -> std::result::Result<Vec<(String, usize)>, String> {
        let names = |prefix: &str, name: &str| {
            name.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        let mut governed: BTreeMap<&str, usize> = BTreeMap::new();
        for ((name, _), scale) in self.params.iter().zip(&mut self.lr_scales) {
            let best = multipliers
                .iter()
                .filter(|(prefix, _)| names(prefix, name))
                .max_by_key(|(prefix, _)| prefix.len());
            *scale = best.map_or(1.0, |(_, f)| *f);
            if let Some((prefix, _)) = best {
                *governed.entry(prefix).or_default() += 1;
            }
        }
        for prefix in multipliers.keys() {
            if !self.params.iter().any(|(name, _)| names(prefix, name)) {
                let mut groups: Vec<String> = self
                    .params
                    .iter()
                    .map(|(n, _)| n.split('.').take(2).collect::<Vec<_>>().join("."))
                    .collect();
                groups.dedup();
                return Err(format!(
                    "`{prefix}` names no trained parameter (frozen backbone blocks have none); the trained groups are {}",
                    groups.join(", ")
                ));
            }
        }
        Ok(multipliers
            .keys()
            .map(|p| (p.clone(), governed.get(p.as_str()).copied().unwrap_or(0)))
            .collect())
    }

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
        let each = self
            .params
            .iter()
            .zip(&mut self.moments)
            .zip(&self.lr_scales);
        for (((_, p), moments), &scale) in each {
            let Some(g) = grads.get(p) else { continue };
            let lr = self.lr * scale;
            let (m, v) = match moments {
                Moments::Host(m, v) => {
                    adam_step_host(p.as_tensor(), g, m, v, AdamStep { lr, ..h })?;
                    continue;
                }
                Moments::Tensors(m, v) => (m, v),
            };
            // The same update with tensor ops (other devices, SEQ2SEQ_FUSED=0).
            let mut g = (g.detach() * h.grad_scale)?;
            if self.weight_decay > 0.0 && !self.decoupled {
                g = (g + (p.as_tensor() * self.weight_decay)?)?;
            }
            *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?.detach();
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let m_hat = (&*m / h.bias1)?;
            let v_hat = (&*v / h.bias2)?;
            let mut delta = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            if self.weight_decay > 0.0 && self.decoupled {
                delta = (delta + (p.as_tensor() * self.weight_decay)?)?;
            }
            p.set(&(p.as_tensor() - (delta * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as tensors named `m.<parameter>` and `v.<parameter>` (for resume checkpoints).
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((name, p), moments) in self.params.iter().zip(&self.moments) {
            let (m, v) = match moments {
                Moments::Host(m, v) => (
                    Tensor::from_slice(m, p.shape(), p.device())?,
                    Tensor::from_slice(v, p.shape(), p.device())?,
                ),
                Moments::Tensors(m, v) => (m.clone(), v.clone()),
            };
            out.insert(format!("m.{name}"), m);
            out.insert(format!("v.{name}"), v);
        }
        Ok(out)
    }

    pub fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
    ) -> std::result::Result<(), String> {
        for ((name, p), moments) in self.params.iter().zip(&mut self.moments) {
            let get = |prefix: &str| {
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
                Ok(t)
            };
            let (m, v) = (get("m")?, get("v")?);
            let err = |e: candle_core::Error| e.to_string();
            // Private copies: the moments are updated in place.
            *moments = match moments {
                Moments::Host(..) => Moments::Host(
                    m.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?,
                    v.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?,
                ),
                Moments::Tensors(..) => {
                    Moments::Tensors(m.copy().map_err(err)?, v.copy().map_err(err)?)
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
        // f32 takes the one-pass host kernel, f64 the tensor-op path.
        for dtype in [DType::F32, DType::F64] {
            for (decoupled, want) in expected {
                let p = Var::from_tensor(&Tensor::new(START, &dev)?.to_dtype(dtype)?)?;
                let vars = HashMap::from([("p".to_string(), p.clone())]);
                let mut opt = Adam::new(&vars, 0.1, [0.9, 0.999], 1e-8, 0.01, decoupled)?;
                for g in GRADS {
                    step(&mut opt, &p, g)?;
                }
                let got = p.as_tensor().flatten_all()?.to_dtype(DType::F32)?;
                let got = got.to_vec1::<f32>()?;
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g - w).abs() < 2e-6,
                        "{dtype:?}, decoupled={decoupled}: {got:?} vs {want:?}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Saving the moments after two steps and loading them into a fresh optimizer gives the
    /// third step of an uninterrupted run, bit for bit (host and tensor moments).
    #[test]
    fn moments_round_trip_through_state() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let run = |interrupt: bool| -> Result<Vec<f64>> {
                let p = Var::from_tensor(&Tensor::new(START, &dev)?.to_dtype(dtype)?)?;
                let vars = HashMap::from([("p".to_string(), p.clone())]);
                let new = || Adam::new(&vars, 0.1, [0.9, 0.999], 1e-8, 0.0, false);
                let mut opt = new()?;
                for g in &GRADS[..2] {
                    step(&mut opt, &p, *g)?;
                }
                if interrupt {
                    let state = opt.state()?;
                    let (lr, steps) = (opt.lr, opt.step);
                    opt = new()?;
                    opt.load_state(&state).map_err(candle_core::Error::msg)?;
                    (opt.lr, opt.step) = (lr, steps);
                }
                step(&mut opt, &p, GRADS[2])?;
                p.as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()
            };
            assert_eq!(run(false)?, run(true)?, "{dtype:?}");
            let p = Var::from_tensor(&Tensor::new(START, &dev)?.to_dtype(dtype)?)?;
            let mut opt = Adam::new(
                &HashMap::from([("p".to_string(), p)]),
                0.1,
                [0.9, 0.999],
                1e-8,
                0.0,
                false,
            )?;
            let err = opt.load_state(&HashMap::new()).unwrap_err();
            assert!(err.contains("missing tensor m.p"), "{err}");
        }
        Ok(())
    }

    /// A parameter under a multiplier moves exactly as it would alone at the scaled rate, on
    /// both update paths; a parameter outside every prefix keeps the full rate.
    #[test]
    fn lr_multipliers_scale_only_the_named_parameters() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let var = || Var::from_tensor(&Tensor::new(START, &dev)?.to_dtype(dtype)?);
            let run = |lr: f64, names: &[&str], mult: &[(&str, f64)]| -> Result<Vec<Vec<f64>>> {
                let vars: HashMap<String, Var> = names
                    .iter()
                    .map(|n| Ok((n.to_string(), var()?)))
                    .collect::<Result<_>>()?;
                let mut opt = Adam::new(&vars, lr, [0.9, 0.999], 1e-8, 0.0, false)?;
                let mult = mult.iter().map(|(k, f)| (k.to_string(), *f)).collect();
                opt.set_lr_multipliers(&mult)
                    .map_err(candle_core::Error::msg)?;
                for g in GRADS {
                    let g = Tensor::new(&g, &dev)?.to_dtype(dtype)?;
                    let loss = vars
                        .values()
                        .map(|p| (p.as_tensor() * &g)?.sum_all())
                        .reduce(|a, b| a? + b?)
                        .unwrap()?;
                    let store = loss.backward()?;
                    opt.clip(&store, 0.0)?;
                    opt.update(&store)?;
                }
                names
                    .iter()
                    .map(|n| {
                        vars[*n]
                            .as_tensor()
                            .flatten_all()?
                            .to_dtype(DType::F64)?
                            .to_vec1()
                    })
                    .collect()
            };
            let both = run(0.1, &["enc.backbone.w", "dec.w"], &[("enc.backbone", 0.25)])?;
            assert_eq!(both[0], run(0.025, &["w"], &[])?[0], "{dtype:?}");
            assert_eq!(both[1], run(0.1, &["w"], &[])?[0], "{dtype:?}");
        }
        Ok(())
    }

    /// Whole components match, the longest prefix wins, and a prefix naming nothing is refused.
    #[test]
    fn lr_multiplier_prefixes_match_whole_components() -> Result<()> {
        let names = [
            "enc.backbone",
            "enc.backbone.x",
            "enc.backbonex.y",
            "enc.z",
            "dec.w",
        ];
        let vars: HashMap<String, Var> = names
            .iter()
            .map(|n| Ok((n.to_string(), Var::zeros(2, DType::F32, &Device::Cpu)?)))
            .collect::<Result<_>>()?;
        let mut opt = Adam::new(&vars, 0.1, [0.9, 0.999], 1e-8, 0.0, false)?;
        let mult = BTreeMap::from([("enc".to_string(), 2.0), ("enc.backbone".to_string(), 0.1)]);
        let governed = opt.set_lr_multipliers(&mult).unwrap();
        assert_eq!(
            governed,
            vec![("enc".to_string(), 2), ("enc.backbone".to_string(), 2)]
        );
        let scale = |n: &str| {
            let i = opt.params.iter().position(|(k, _)| k == n).unwrap();
            opt.lr_scales[i]
        };
        assert_eq!(scale("enc.backbone"), 0.1);
        assert_eq!(scale("enc.backbone.x"), 0.1);
        assert_eq!(scale("enc.backbonex.y"), 2.0);
        assert_eq!(scale("enc.z"), 2.0);
        assert_eq!(scale("dec.w"), 1.0);
        let typo = BTreeMap::from([("enc.backbon".to_string(), 0.1)]);
        let err = opt.set_lr_multipliers(&typo).unwrap_err();
        assert!(
            err.contains("`enc.backbon` names no trained parameter"),
            "{err}"
        );
        assert!(
            err.contains("dec.w, enc.backbone, enc.backbonex, enc.z"),
            "{err}"
        );
        Ok(())
    }

    const START: &[[f32; 3]; 2] = &[[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]];
    const GRADS: [[[f32; 3]; 2]; 3] = [
        [[0.3, -0.2, 0.5], [1.5, -2.0, 0.05]],
        [[-0.1, 0.4, 0.2], [0.7, 0.3, -1.2]],
        [[0.2, 0.2, -0.6], [-0.4, 1.0, 0.9]],
    ];

    /// One clipped update with the gradient store of a loss whose gradient with respect to p is g.
    fn step(opt: &mut Adam, p: &Var, g: [[f32; 3]; 2]) -> Result<()> {
        let g = Tensor::new(&g, p.device())?.to_dtype(p.dtype())?;
        let store = (p.as_tensor() * g)?.sum_all()?.backward()?;
        opt.clip(&store, 1.0)?;
        opt.update(&store)
    }
}
