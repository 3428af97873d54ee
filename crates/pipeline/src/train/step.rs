//! One training step, shared by the loop and `bench` (which times this very function): the
//! teacher-forced loss, its gradients, clipping, and the update when the loss and the gradient
//! norm are finite.

use std::time::Instant;

use candle_core::backprop::GradStore;
use seq2seq_nn::loss::TokenLoss;
use seq2seq_nn::Ctx;

use crate::config::TrainConfig;
use crate::model::{BatchTensors, LossTerms, Sampling, Seq2Seq};
use crate::train::optim::Adam;
use crate::Result;

/// What a step did.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    /// Sum of the unsmoothed negative log-likelihood over the batch's target tokens.
    pub nll_sum: f64,
    pub tokens: f64,
    pub grad_norm: f64,
    /// False when the batch was skipped: its loss or gradient norm was not finite (or a test
    /// asked for a skip); the weights and the optimizer's step count are unchanged.
    pub applied: bool,
    /// Seconds in the forward pass (loss included), the backward pass, and clip + update.
    pub seconds: [f64; 3],
}

/// Runs one update on the batches `bts` (one, or `train.accumulate` of them) with learning rate
/// `lr`; batch `j`'s dropout masks come from `seed + j`.
///
/// Several batches are one update over their union: each batch's gradient of its mean loss is
/// weighted by its share of the target tokens, so N batches of B sentences give the gradient of
/// one batch of N·B (up to float rounding), while only one batch's activations are alive at a
/// time. One batch takes the direct path, unchanged.
pub(crate) fn step(
    model: &Seq2Seq,
    opt: &mut Adam,
    bts: &[BatchTensors],
    t: &TrainConfig,
    lr: f64,
    seed: u64,
    skip: bool,
) -> Result<StepResult> {
    // On one of rayon's workers, each parallel op of the step starts on this thread at once;
    // from outside the pool every op was handed over, the workers woken, and this thread slept
    // (docs/results.md, "The main thread's serial work taken off the step").
    rayon::join(|| step_here(model, opt, bts, t, lr, seed, skip), || ()).0
}

/// [`step`]'s body, on whichever thread calls it.
fn step_here(
    model: &Seq2Seq,
    opt: &mut Adam,
    bts: &[BatchTensors],
    t: &TrainConfig,
    lr: f64,
    seed: u64,
    skip: bool,
) -> Result<StepResult> {
    let (mut nll_sum, mut tokens, mut forward, mut backward) = (0.0, 0.0, 0.0, 0.0);
    let mut sum: Option<GradStore> = None;
    let terms = loss_terms(t, opt.step + 1);
    for (j, bt) in bts.iter().enumerate() {
        let t0 = Instant::now();
        let l = model.loss(bt, terms, &mut Ctx::train(seed.wrapping_add(j as u64)))?;
        forward += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let TokenLoss {
            loss,
            nll_sum: n,
            tokens: k,
        } = l;
        // The backward pass consumes the forward graph, freeing each activation once the last
        // node that reads it has run: the step's peak memory is not every activation plus every
        // gradient at once.
        let grads = loss.backward_releasing()?;
        (nll_sum, tokens) = (nll_sum + n, tokens + k);
        sum = Some(match sum {
            None if bts.len() == 1 => grads,
            acc => weighted_sum(opt, acc, &grads, k)?,
        });
        backward += t1.elapsed().as_secs_f64();
    }
    let Some(mut grads) = sum else {
        return Err(candle_core::Error::Msg("a training step got no batch".into()).into());
    };
    let t2 = Instant::now();
    if bts.len() > 1 {
        // Σ tokens_j · ∇mean_j / Σ tokens_j: the gradient of the mean over all target tokens.
        for p in opt.vars() {
            if let Some(g) = grads.remove(p.as_tensor()) {
                grads.insert(p.as_tensor(), (g / tokens.max(1.0))?);
            }
        }
    }
    let grad_norm = opt.clip(&grads, t.clip_grad_norm)?;
    let applied = nll_sum.is_finite() && grad_norm.is_finite() && !skip;
    if applied {
        opt.lr = lr;
        opt.update(&grads)?;
    }
    drop(grads);
    let update = t2.elapsed().as_secs_f64();
    Ok(StepResult {
        nll_sum,
        tokens,
        grad_norm,
        applied,
        seconds: [forward, backward, update],
    })
}

/// The training loss's terms for update `step` (1-based; the optimizer's count, which a resumed
/// run restores, so the sampling schedule resumes where it was).
fn loss_terms(t: &TrainConfig, step: u64) -> LossTerms {
    LossTerms {
        label_smoothing: t.label_smoothing,
        attention_reg: t.attention_reg,
        sampling: t.scheduled_sampling.map(|s| Sampling {
            rate: s.rate(step),
            tokens: s.tokens,
        }),
    }
}

/// `acc` (or nothing) plus `weight` times the optimizer's variables' gradients in `grads`; only
/// the variables' gradients are kept, so the batch's other gradients can be freed.
fn weighted_sum(
    opt: &Adam,
    acc: Option<GradStore>,
    grads: &GradStore,
    weight: f64,
) -> Result<GradStore> {
    let mut acc = acc.unwrap_or_default();
    for p in opt.vars() {
        let Some(g) = grads.get(p.as_tensor()) else {
            continue;
        };
        let g = (g * weight)?.detach();
        let total = match acc.remove(p.as_tensor()) {
            Some(a) => (a + g)?.detach(),
            None => g,
        };
        acc.insert(p.as_tensor(), total);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use candle_core::{Device, Tensor};
    use seq2seq_data::{Batch, Example};
    use seq2seq_nn::SeededVarMap;

    use super::*;
    use crate::config::{Config, Task};
    use crate::model::build_model;

    /// A model (dropout off) and its optimizer, the same for every call.
    fn model(cfg: &Config) -> (Seq2Seq, Adam) {
        let vm = SeededVarMap::new(cfg.seed);
        let dev = Device::Cpu;
        let m = build_model(
            &cfg.model,
            Task::Translation,
            12,
            14,
            vm.var_builder(&dev),
            None,
        )
        .unwrap();
        let vars = vm.var_map().data().lock().unwrap().clone();
        let t = &cfg.train;
        let opt = Adam::new(&vars, t.learning_rate, t.betas, t.eps, 0.0, false).unwrap();
        (m, opt)
    }

    fn weights(opt: &Adam) -> Vec<f32> {
        opt.vars()
            .flat_map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    /// A tiny translation config without clipping.
    fn tiny() -> Config {
        crate::model::tiny_config(4)
    }

    /// Sources and targets of different lengths (padding on both sides of a batch).
    fn examples() -> Vec<Example> {
        (0..24u32)
            .map(|i| {
                let src = (0..3 + i % 7).map(|j| 4 + (i + j) % 8).collect();
                let tgt = (0..1 + i % 5).map(|j| 4 + (i * j) % 10).collect();
                Example::new(src, tgt)
            })
            .collect()
    }

    #[test]
    fn accumulated_batches_are_one_batch_of_their_union() {
        let cfg = tiny();
        // The batches hold different token counts, so an unweighted mean of their gradients
        // would not be the union's.
        let examples = examples();
        let dev = Device::Cpu;
        let tensors =
            |idx: &[usize]| BatchTensors::new(&Batch::new(&examples, idx, 0, 2, 3), &dev).unwrap();
        let all: Vec<usize> = (0..24).collect();
        let (m1, mut o1) = model(&cfg);
        let one = step(&m1, &mut o1, &[tensors(&all)], &cfg.train, 1e-3, 1, false).unwrap();
        let (m2, mut o2) = model(&cfg);
        let parts = [
            tensors(&all[..5]),
            tensors(&all[5..16]),
            tensors(&all[16..]),
        ];
        let acc = step(&m2, &mut o2, &parts, &cfg.train, 1e-3, 1, false).unwrap();
        assert_eq!(one.tokens, acc.tokens);
        assert!(
            (one.nll_sum - acc.nll_sum).abs() < 1e-4 * one.nll_sum,
            "{one:?} {acc:?}"
        );
        let rel = (one.grad_norm - acc.grad_norm).abs() / one.grad_norm;
        assert!(
            rel < 1e-5,
            "gradient norms {} and {}",
            one.grad_norm,
            acc.grad_norm
        );
        let (w1, w2) = (weights(&o1), weights(&o2));
        let worst = w1
            .iter()
            .zip(&w2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "weights differ by up to {worst} after one update"
        );
    }

    /// The loss (eval mode, no smoothing) with attention weight λ, and its data part.
    fn loss_at(m: &Seq2Seq, b: &BatchTensors, lambda: f64) -> (f64, f64) {
        let terms = LossTerms {
            attention_reg: lambda,
            ..LossTerms::default()
        };
        let l = m.loss(b, terms, &mut Ctx::eval()).unwrap();
        (l.loss.to_scalar::<f32>().unwrap() as f64, l.nll_sum)
    }

    /// With λ > 0 the fused whole-sequence ops give way to the step loop: the data's loss is
    /// the same either way, and λ adds λ times one penalty, for every decoder style.
    #[test]
    fn attention_reg_adds_lambda_times_the_penalty_to_the_same_data_loss() {
        use crate::config::Style;
        let examples = examples();
        let all: Vec<usize> = (0..24).collect();
        let b = BatchTensors::new(&Batch::new(&examples, &all, 0, 2, 3), &Device::Cpu).unwrap();
        for (style, feeding) in [
            (Style::Bahdanau, false),
            (Style::Luong, true),
            (Style::Luong, false),
        ] {
            let mut cfg = tiny();
            cfg.model.decoder.style = style;
            cfg.model.decoder.input_feeding = feeding;
            let (m, _) = model(&cfg);
            let (l0, nll0) = loss_at(&m, &b, 0.0);
            let (l1, nll1) = loss_at(&m, &b, 1.0);
            let (l3, nll3) = loss_at(&m, &b, 3.0);
            let case = format!("{style:?}, input feeding {feeding}");
            for nll in [nll1, nll3] {
                assert!((nll - nll0).abs() < 1e-5 * nll0, "{case}: {nll} vs {nll0}");
            }
            let p = l1 - l0;
            assert!(p > 1e-3, "{case}: penalty {p}");
            assert!(
                ((l3 - l0) - 3.0 * p).abs() < 1e-4,
                "{case}: {l3} − {l0} ≠ 3 × {p}"
            );
        }
    }

    /// Training with λ > 0 brings each source position's attention, summed over the target
    /// steps, closer to one than training without it from the same start. The target repeats
    /// the first source token once per source token: the data alone pulls every step's
    /// attention onto the first position, while as many steps as positions could cover each
    /// position once.
    #[test]
    fn attention_reg_trains_attention_toward_coverage() {
        let examples: Vec<Example> = (0..24u32)
            .map(|i| {
                let src: Vec<u32> = (0..4 + i % 3).map(|j| 4 + (i * 3 + j * 5) % 8).collect();
                Example::new(src.clone(), vec![src[0]; src.len()])
            })
            .collect();
        let all: Vec<usize> = (0..24).collect();
        let b = BatchTensors::new(&Batch::new(&examples, &all, 0, 2, 3), &Device::Cpu).unwrap();
        let mut penalties = Vec::new();
        for lambda in [0.0, 5.0] {
            let mut cfg = tiny();
            cfg.train.attention_reg = lambda;
            let (m, mut opt) = model(&cfg);
            for s in 0..60 {
                step(
                    &m,
                    &mut opt,
                    std::slice::from_ref(&b),
                    &cfg.train,
                    1e-2,
                    s,
                    false,
                )
                .unwrap();
            }
            penalties.push(loss_at(&m, &b, 1.0).0 - loss_at(&m, &b, 0.0).0);
        }
        assert!(
            penalties[1] < 0.5 * penalties[0],
            "penalty after training without and with λ: {penalties:?}"
        );
    }

    /// Scheduled sampling follows the optimizer's update count: up to `start_step` the updates
    /// are teacher forcing's, bit for bit; the first one past it feeds predictions and differs.
    #[test]
    fn scheduled_sampling_starts_after_start_step() {
        use crate::config::{SampledTokens, ScheduledSampling};
        let examples = examples();
        let all: Vec<usize> = (0..24).collect();
        let b = BatchTensors::new(&Batch::new(&examples, &all, 0, 2, 3), &Device::Cpu).unwrap();
        let run = |sampling: Option<ScheduledSampling>, steps: u64| {
            let mut cfg = tiny();
            cfg.train.scheduled_sampling = sampling;
            let (m, mut opt) = model(&cfg);
            for s in 0..steps {
                let one = std::slice::from_ref(&b);
                step(&m, &mut opt, one, &cfg.train, 1e-2, s, false).unwrap();
            }
            weights(&opt)
        };
        let sampling = Some(ScheduledSampling {
            max_rate: 1.0,
            start_step: 3,
            ramp_steps: 0,
            tokens: SampledTokens::Greedy,
        });
        assert_eq!(run(sampling, 3), run(None, 3));
        assert_ne!(run(sampling, 4), run(None, 4));
    }

    /// What a [`Probe`] saw at its backward pass: whether the other op's flag was up.
    type Seen = Arc<Mutex<Option<bool>>>;

    /// An identity op that flags its own drop (`dropped`) or, at its backward pass, records
    /// whether another op's flag was already up (`watch`).
    struct Probe {
        dropped: Option<Arc<AtomicBool>>,
        watch: Option<(Arc<AtomicBool>, Seen)>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some(d) = &self.dropped {
                d.store(true, Ordering::SeqCst);
            }
        }
    }

    impl candle_core::CustomOp1 for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }

        fn cpu_fwd(
            &self,
            s: &candle_core::CpuStorage,
            l: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            use candle_core::backend::BackendStorage;
            Ok((s.try_clone(l)?, l.shape().clone()))
        }

        fn bwd(&self, _: &Tensor, _: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
            if let Some((flag, seen)) = &self.watch {
                *seen.lock().unwrap() = Some(flag.load(Ordering::SeqCst));
            }
            Ok(Some(g.clone()))
        }
    }

    /// The step's backward pass (candle's, patched in `crates/vendor`) drops each node once it
    /// has run: by the time the gradient reaches an op, the op that read its output is gone.
    /// `backward`, with the graph still held by its root, keeps every node to the end.
    #[test]
    fn the_releasing_backward_pass_frees_the_graph_as_it_goes() {
        for releasing in [false, true] {
            let x = candle_core::Var::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
            let (later_dropped, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
            let first = Probe {
                dropped: None,
                watch: Some((later_dropped.clone(), Arc::clone(&seen))),
            };
            let later = Probe {
                dropped: Some(later_dropped),
                watch: None,
            };
            let a = x.as_tensor().apply_op1(first).unwrap();
            let loss = a
                .sqr()
                .unwrap()
                .apply_op1(later)
                .unwrap()
                .sum_all()
                .unwrap();
            drop(a);
            let g = match releasing {
                true => loss.backward_releasing().unwrap(),
                false => loss.backward().unwrap(),
            };
            assert_eq!(*seen.lock().unwrap(), Some(releasing));
            let dx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(dx, [2., -4., 6.]);
        }
    }

    /// On a model's loss, the releasing pass's gradients are `backward`'s, bit for bit.
    #[test]
    fn the_releasing_backward_pass_keeps_the_gradients() {
        let examples = examples();
        let all: Vec<usize> = (0..24).collect();
        let b = BatchTensors::new(&Batch::new(&examples, &all, 0, 2, 3), &Device::Cpu).unwrap();
        let (m, opt) = model(&tiny());
        let loss = || {
            m.loss(&b, LossTerms::default(), &mut Ctx::train(7))
                .unwrap()
                .loss
        };
        let (kept, released) = (
            loss().backward().unwrap(),
            loss().backward_releasing().unwrap(),
        );
        for v in opt.vars() {
            let [k, r] = [&kept, &released].map(|g| {
                let t = g
                    .get(v.as_tensor())
                    .expect("a gradient for every parameter");
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            });
            assert_eq!(k, r);
        }
    }
}

#[cfg(test)]
mod reduce_tests {
    use candle_core::{Device, Tensor, Var};

    /// A bias broadcast over rows (and over two leading dimensions) gets, through candle's
    /// patched sum over leading dimensions, the row-by-row sum of its gradient bit for bit.
    #[test]
    fn a_broadcast_bias_gradient_is_the_row_order_sum() {
        let (n, d) = (37, 11);
        let w = Tensor::randn(0f32, 1.0, (n, d), &Device::Cpu).unwrap();
        let rows = w.to_vec2::<f32>().unwrap();
        let mut want = vec![0f32; d];
        for row in &rows {
            for (s, x) in want.iter_mut().zip(row) {
                *s += x;
            }
        }
        let bias = Var::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::zeros((n, d), candle_core::DType::F32, &Device::Cpu).unwrap();
        for shape in [vec![n, d], vec![1, n, d]] {
            let y = x
                .reshape(shape.clone())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let loss = (y * w.reshape(shape).unwrap()).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            assert_eq!(g.get(&bias).unwrap().to_vec1::<f32>().unwrap(), want);
        }
    }
}
