//! One training step, shared by the loop and `bench` (which times this very function): the
//! teacher-forced loss, its gradients, clipping, and the update when the loss and the gradient
//! norm are finite.

use std::time::Instant;

use seq2seq_nn::loss::TokenLoss;
use seq2seq_nn::Ctx;

use crate::config::TrainConfig;
use crate::model::{BatchTensors, Seq2Seq};
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

/// Runs one step on `bt` with learning rate `lr`; dropout masks come from `seed`.
pub(crate) fn step(
    model: &Seq2Seq,
    opt: &mut Adam,
    bt: &BatchTensors,
    t: &TrainConfig,
    lr: f64,
    seed: u64,
    skip: bool,
) -> Result<StepResult> {
    let start = Instant::now();
    let l = model.loss(bt, t.label_smoothing, &mut Ctx::train(seed))?;
    let forward = start.elapsed().as_secs_f64();
    let grads = l.loss.backward()?;
    // The forward graph (every activation of the batch) goes before the update runs.
    let TokenLoss {
        nll_sum, tokens, ..
    } = l;
    let backward = start.elapsed().as_secs_f64();
    let grad_norm = opt.clip(&grads, t.clip_grad_norm)?;
    let applied = nll_sum.is_finite() && grad_norm.is_finite() && !skip;
    if applied {
        opt.lr = lr;
        opt.update(&grads)?;
    }
    drop(grads);
    let total = start.elapsed().as_secs_f64();
    Ok(StepResult {
        nll_sum,
        tokens,
        grad_norm,
        applied,
        seconds: [forward, backward - forward, total - backward],
    })
}
