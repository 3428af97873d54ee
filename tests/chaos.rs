//! Chaos: `kill -9` at random moments of a training run (a quarter of them inside a checkpoint
//! write, held open by the test hook), resuming after each, ends with the weights and optimizer
//! moments of an uninterrupted run, bit for bit; after every kill every checkpoint loads.
//!
//! Always on with 4 kills; `bench/chaos.sh` runs it with 20 (`SEQ2SEQ_CHAOS_KILLS`,
//! `SEQ2SEQ_CHAOS_SEED`).

use std::time::Duration;

mod common;
use common::{all_checkpoints_load, digest, start, state_bits, CONFIG};

const STEPS: usize = 160;

/// A small seeded generator (SplitMix64): the kill schedule repeats for a seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn killed_and_resumed_runs_end_bit_identical() {
    let kills = env("SEQ2SEQ_CHAOS_KILLS", 4) as usize;
    let mut rng = Rng(env("SEQ2SEQ_CHAOS_SEED", 1));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let whole = dir.path().join("whole");
    let (code, log) = start(&cfg, &whole, STEPS, false, &[]).finish();
    assert_eq!(code, Some(0), "{log}");

    let chaos = dir.path().join("chaos");
    let (mut landed, mut in_writes) = (0, 0);
    for k in 0..kills {
        let resume = chaos.join("last.safetensors").exists();
        let from = if resume {
            seq2seq::pipeline::model_dir::load_resume(&chaos, &candle_core::Device::Cpu)
                .unwrap()
                .2
                .step
        } else {
            0
        };
        // Near the end there is no step left to aim at: kill inside a write instead.
        let inside_write = k % 4 == 0 || from + 15 > STEPS;
        let hook = [("SEQ2SEQ_TEST_WRITE_DELAY_MS", "600")];
        let mut run = start(
            &cfg,
            &chaos,
            STEPS,
            resume,
            if inside_write { &hook } else { &[] },
        );
        let hit = if inside_write {
            // The 1st to 3rd checkpoint write of this run.
            let nth = 1 + rng.below(3);
            (0..nth).all(|_| run.wait_for(".safetensors", Duration::from_secs(120)))
        } else {
            let first = from / 5 + 1;
            let step = 5 * (first + rng.below((STEPS / 5 - 1 - first) as u64) as usize);
            run.wait_for(&format!("step {step} |"), Duration::from_secs(120))
        };
        if hit {
            run.signal("KILL");
            landed += 1;
            in_writes += usize::from(inside_write);
        }
        let (code, log) = run.finish();
        if hit {
            assert_eq!(code, None, "kill {k} did not land: {log}");
        }
        all_checkpoints_load(&chaos);
    }
    let resume = chaos.join("last.safetensors").exists();
    let (code, log) = start(&cfg, &chaos, STEPS, resume, &[]).finish();
    assert_eq!(code, Some(0), "{log}");
    let (a, b) = (state_bits(&whole), state_bits(&chaos));
    println!("uninterrupted run: {}", digest(&a));
    println!("killed run:        {}", digest(&b));
    assert!(a == b, "the final weights differ");
    println!(
        "{landed}/{kills} kills resumed ({in_writes} inside a checkpoint write), final weights identical: {}",
        digest(&b)
    );
    assert!(
        landed * 4 >= kills * 3,
        "only {landed} of {kills} kills landed"
    );
}
