//! Times the fused output projection + token loss (`projection_cross_entropy`) in training, the
//! largest op of the benchmark config's step: forward (which computes the gradients), then
//! backward. Prints the median of the timed runs.
//!
//! cargo run --release -p seq2seq-nn --example projection_loss_bench -- [N] [D] [V] [REPS]
//! (defaults: 900 rows, 1280 inputs, 7882 classes, 15 runs; threads: RAYON_NUM_THREADS)

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use seq2seq_nn::projection_cross_entropy;

fn main() -> Result<()> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(Ok(default), |a| a.parse::<usize>())
            .map_err(|e| candle_core::Error::Msg(format!("argument {i}: {e}")))
    };
    let (n, d, v, reps) = (arg(1, 900)?, arg(2, 1280)?, arg(3, 7882)?, arg(4, 15)?);
    let dev = Device::Cpu;
    let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (n, d), &dev)? * 0.1)?)?;
    let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (v, d), &dev)? * 0.03)?)?;
    let b = Var::from_tensor(&Tensor::zeros(v, candle_core::DType::F32, &dev)?)?;
    let targets: Vec<u32> = (0..n).map(|i| (i * v / n.max(1)) as u32).collect();
    let targets = Tensor::from_vec(targets, n, &dev)?;
    let mask = Tensor::ones(n, candle_core::DType::F32, &dev)?;
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps + 2 {
        let t0 = Instant::now();
        let loss = projection_cross_entropy(&x, &w, Some(&b), &targets, &mask, 0.1, true)?;
        let grads = loss.loss.backward()?;
        assert!(grads.get(&w).is_some(), "no gradient for the weight");
        if rep >= 2 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let gflop = 3.0 * 2.0 * (n * d * v) as f64 / 1e9;
    let median = times[times.len() / 2];
    println!(
        "projection loss N={n} D={d} V={v} threads={}: median {median:.1} ms of {reps} \
         (min {:.1}, max {:.1}); {:.0} GFLOP/s",
        rayon::current_num_threads(),
        times[0],
        times[times.len() - 1],
        gflop / (median / 1e3)
    );
    Ok(())
}
