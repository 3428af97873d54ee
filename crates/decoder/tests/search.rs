//! Every strategy on a hand-built bigram model with known probabilities.

use candle_core::{Device, Result, Tensor};
use seq2seq_decoder::{search, DecodingOptions, Hypothesis, SpecialTokens, Stepper, Strategy};

const SP: SpecialTokens = SpecialTokens {
    pad: 0,
    unk: 1,
    bos: 2,
    eos: 3,
};
const A: u32 = 4;
const B: u32 = 5;
const C: u32 = 6;

/// Next-token log-probabilities depend only on the previous token. Pad has by far the largest
/// logit everywhere: a search that ever emits it is broken.
struct Bigram(Tensor);

fn bigram() -> Bigram {
    let ln = |p: f32| p.ln();
    let mut t = vec![vec![ln(1e-3); 7]; 7];
    let set = |row: &mut Vec<f32>, probs: &[(u32, f32)]| {
        for &(tok, p) in probs {
            row[tok as usize] = ln(p);
        }
        row[0] = 100.0; // pad
    };
    // From bos, A is the most likely first token, but every continuation of A is uncertain,
    // while B is almost always followed by eos: greedy takes A, beam search finds "B".
    set(&mut t[2], &[(A, 0.5), (B, 0.45), (C, 0.05)]);
    set(&mut t[A as usize], &[(A, 0.34), (C, 0.33), (3, 0.33)]);
    set(&mut t[B as usize], &[(3, 0.95), (A, 0.05)]);
    set(&mut t[C as usize], &[(3, 0.6), (A, 0.4)]);
    let flat: Vec<f32> = t.into_iter().flatten().collect();
    Bigram(Tensor::from_vec(flat, (7, 7), &Device::Cpu).unwrap())
}

impl Stepper for Bigram {
    type State = ();
    fn step(&self, prev: &Tensor, _: &()) -> Result<(Tensor, ())> {
        Ok((self.0.index_select(prev, 0)?, ()))
    }
    fn select(&self, _: &(), _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn vocab_size(&self) -> usize {
        7
    }
}

fn run(opts: &DecodingOptions, rows: usize, seeds: &[u64]) -> Vec<Vec<Hypothesis>> {
    search(
        &bigram(),
        (),
        &vec![SP.bos; rows],
        SP,
        opts,
        seeds,
        &Device::Cpu,
    )
    .unwrap()
}

fn best(opts: &DecodingOptions) -> Vec<u32> {
    run(opts, 1, &[opts.seed])[0][0].tokens.clone()
}

fn opts(strategy: Strategy) -> DecodingOptions {
    DecodingOptions {
        strategy,
        max_length: 5,
        length_penalty: 0.0,
        ..Default::default()
    }
}

#[test]
fn greedy_takes_the_argmax_and_never_pad() {
    assert_eq!(best(&opts(Strategy::Greedy)), vec![A, A, A, A, A]);
}

#[test]
fn zero_temperature_and_top_k_1_equal_greedy() {
    let greedy = best(&opts(Strategy::Greedy));
    for seed in 0..5 {
        let t0 = DecodingOptions {
            temperature: 0.0,
            seed,
            ..opts(Strategy::Sample)
        };
        assert_eq!(best(&t0), greedy);
        let k1 = DecodingOptions {
            top_k: 1,
            seed,
            ..opts(Strategy::Sample)
        };
        assert_eq!(best(&k1), greedy);
    }
}

fn first_tokens(o: &DecodingOptions, n: u64) -> Vec<u32> {
    let seeds: Vec<u64> = (0..n).collect();
    let o = DecodingOptions {
        max_length: 1,
        ..o.clone()
    };
    run(&o, n as usize, &seeds)
        .into_iter()
        .map(|h| h[0].tokens.first().copied().unwrap_or(SP.eos))
        .collect()
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // P(A) = .5, P(B) = .45, P(C) = .05: p = .6 needs {A, B}; p = .45 is reached by A alone.
    let toks = first_tokens(
        &DecodingOptions {
            top_p: 0.6,
            ..opts(Strategy::Sample)
        },
        300,
    );
    assert!(toks.iter().all(|&t| t == A || t == B), "{toks:?}");
    assert!(toks.contains(&A) && toks.contains(&B));
    let toks = first_tokens(
        &DecodingOptions {
            top_p: 0.45,
            ..opts(Strategy::Sample)
        },
        100,
    );
    assert!(toks.iter().all(|&t| t == A), "{toks:?}");
    // Plain sampling does reach C (P = .05) over 300 draws.
    let toks = first_tokens(&opts(Strategy::Sample), 300);
    assert!(toks.contains(&C));
}

#[test]
fn sampling_never_emits_pad_or_bos_and_is_seeded() {
    let hot = DecodingOptions {
        temperature: 5.0,
        ..opts(Strategy::Sample)
    };
    let seeds: Vec<u64> = (0..200).collect();
    let a = run(&hot, 200, &seeds);
    for h in &a {
        assert!(
            h[0].tokens
                .iter()
                .all(|&t| t != SP.pad && t != SP.bos && t != SP.eos),
            "{:?}",
            h[0].tokens
        );
    }
    assert_eq!(a, run(&hot, 200, &seeds));
    let other: Vec<u64> = (1000..1200).collect();
    assert_ne!(a, run(&hot, 200, &other));
    // Row i's result depends only on its seed, not on the batch around it.
    assert_eq!(run(&hot, 1, &[17])[0], a[17]);
}

#[test]
fn beam_finds_the_best_sequence_greedy_misses() {
    let beam = run(
        &DecodingOptions {
            beam_size: 3,
            n_best: 3,
            ..opts(Strategy::Beam)
        },
        2,
        &[],
    );
    for nbest in &beam {
        assert_eq!(nbest[0].tokens, vec![B]);
        // ln(.45 · .95), up to the small mass the table gives the other tokens
        assert!(
            (nbest[0].log_prob - (0.45f64 * 0.95).ln()).abs() < 0.01,
            "{:?}",
            nbest[0]
        );
        assert_eq!(nbest.len(), 3);
        assert!(nbest.windows(2).all(|w| w[0].score >= w[1].score));
    }
    let greedy = run(&opts(Strategy::Greedy), 1, &[]);
    assert!(greedy[0][0].log_prob < beam[0][0].log_prob);
}

#[test]
fn beam_of_one_equals_greedy() {
    let g = best(&opts(Strategy::Greedy));
    let b = best(&DecodingOptions {
        beam_size: 1,
        ..opts(Strategy::Beam)
    });
    assert_eq!(g, b);
}

#[test]
fn length_constraints_and_ngram_blocking() {
    // eos is impossible before min_length: the best hypothesis can no longer be "B".
    let b = run(
        &DecodingOptions {
            beam_size: 3,
            min_length: 2,
            ..opts(Strategy::Beam)
        },
        1,
        &[],
    );
    assert!(b[0][0].tokens.len() >= 2, "{:?}", b[0][0]);
    // With bigram blocking greedy cannot loop on "A A".
    let g = best(&DecodingOptions {
        no_repeat_ngram: 2,
        ..opts(Strategy::Greedy)
    });
    let bigrams: Vec<(u32, u32)> = g.windows(2).map(|w| (w[0], w[1])).collect();
    let mut uniq = bigrams.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), bigrams.len(), "{g:?}");
    assert_eq!(g[..2], [A, A]);
    // GNMT: ((5 + len) / 6)^α
    assert!((seq2seq_decoder::length_penalty(5, 0.6) - (10.0f64 / 6.0).powf(0.6)).abs() < 1e-12);
    assert_eq!(seq2seq_decoder::length_penalty(7, 0.0), 1.0);
}
