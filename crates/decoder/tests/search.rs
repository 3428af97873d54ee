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

/// From bos, A is the most likely first token, but every continuation of A is uncertain, while B
/// is almost always followed by eos: greedy takes A, beam search finds "B".
const FIRST: [(u32, f32); 3] = [(A, 0.5), (B, 0.45), (C, 0.05)];

fn bigram() -> Bigram {
    bigram_from(&FIRST)
}

/// The bigram model with `first` as the distribution after bos; every other row as in
/// [`bigram`], and every unlisted token at probability 1e-3.
fn bigram_from(first: &[(u32, f32)]) -> Bigram {
    Bigram(Tensor::from_vec(table(first), (7, 7), &Device::Cpu).unwrap())
}

fn table(first: &[(u32, f32)]) -> Vec<f32> {
    let ln = |p: f32| p.ln();
    let mut t = vec![vec![ln(1e-3); 7]; 7];
    let set = |row: &mut Vec<f32>, probs: &[(u32, f32)]| {
        for &(tok, p) in probs {
            row[tok as usize] = ln(p);
        }
        row[0] = 100.0; // pad
    };
    set(&mut t[2], first);
    set(&mut t[A as usize], &[(A, 0.34), (C, 0.33), (3, 0.33)]);
    set(&mut t[B as usize], &[(3, 0.95), (A, 0.05)]);
    set(&mut t[C as usize], &[(3, 0.6), (A, 0.4)]);
    t.into_iter().flatten().collect()
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
        self.0.dim(1).unwrap()
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
fn a_temperature_beyond_f32_samples_uniformly() {
    // 1/7e307 is 0 in f32, and 0 * -inf (pad's logit) is NaN: candle refused the weights.
    let o = DecodingOptions {
        temperature: 7e307,
        ..opts(Strategy::Sample)
    };
    let toks = first_tokens(&o, 300);
    assert!(toks.contains(&A) && toks.contains(&C), "{toks:?}");
}

#[test]
fn a_top_p_too_small_for_f32_keeps_the_most_likely_token() {
    // 5e-324 is a valid p; as f32 it is 0, which once made candle drop every token and fail.
    for (top_p, top_k) in [(5e-324, 0), (1e-300, 2)] {
        let o = DecodingOptions {
            top_p,
            top_k,
            ..opts(Strategy::Sample)
        };
        let toks = first_tokens(&o, 20);
        assert!(toks.iter().all(|&t| t == A), "{toks:?}");
    }
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

/// An ensemble's searches see the mean of its members' distributions.
mod ensemble {
    use super::*;
    use seq2seq_decoder::Ensemble;

    fn run_on(e: &Ensemble<Bigram>, o: &DecodingOptions, rows: usize) -> Vec<Vec<Hypothesis>> {
        let states = vec![(); e.members().len()];
        let seeds: Vec<u64> = (0..rows as u64).collect();
        search(e, states, &vec![SP.bos; rows], SP, o, &seeds, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_model_ensembled_with_itself_searches_as_the_model() {
        let twice = Ensemble::new(vec![bigram(), bigram()]).unwrap();
        let once = Ensemble::new(vec![bigram()]).unwrap();
        for o in [
            opts(Strategy::Greedy),
            DecodingOptions {
                beam_size: 3,
                n_best: 3,
                ..opts(Strategy::Beam)
            },
            DecodingOptions {
                temperature: 1.5,
                ..opts(Strategy::Sample)
            },
        ] {
            let plain = run(&o, 4, &[0, 1, 2, 3]);
            for e in [&twice, &once] {
                let got = run_on(e, &o, 4);
                for (g, p) in got.iter().flatten().zip(plain.iter().flatten()) {
                    assert_eq!(g.tokens, p.tokens, "{:?}", o.strategy);
                    assert!((g.log_prob - p.log_prob).abs() < 1e-4, "{g:?} vs {p:?}");
                }
            }
        }
    }

    /// p(token) under the mixture of the two tables' rows after bos, with pad and bos forbidden
    /// (as the search forbids them), computed in f64.
    fn mixture(a: &[f32], b: &[f32], row: usize, tok: usize) -> f64 {
        let softmax = |t: &[f32]| -> Vec<f64> {
            let r: Vec<f64> = t[row * 7..row * 7 + 7].iter().map(|&x| x as f64).collect();
            let m = r.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = r.iter().map(|x| (x - m).exp()).sum();
            r.iter().map(|x| (x - m).exp() / z).collect()
        };
        let (pa, pb) = (softmax(a), softmax(b));
        let mix: Vec<f64> = (0..7).map(|j| (pa[j] + pb[j]) / 2.0).collect();
        let allowed: f64 = (0..7).filter(|&j| j != 0 && j != 2).map(|j| mix[j]).sum();
        mix[tok] / allowed
    }

    #[test]
    fn greedy_on_a_mixture_takes_what_neither_member_would() {
        // Alone, one member starts with A and the other with C; their mean puts B first
        // (.45 against .275 each), and B is followed by eos.
        let mirrored = [(C, 0.5), (B, 0.45), (A, 0.05)];
        let g = opts(Strategy::Greedy);
        let first = |e: Ensemble<Bigram>| run_on(&e, &g, 1)[0][0].clone();
        assert_eq!(first(Ensemble::new(vec![bigram()]).unwrap()).tokens[0], A);
        assert_eq!(
            first(Ensemble::new(vec![bigram_from(&mirrored)]).unwrap()).tokens[0],
            C
        );
        let h = first(Ensemble::new(vec![bigram(), bigram_from(&mirrored)]).unwrap());
        assert_eq!(h.tokens, vec![B]);
        let (ta, tb) = (table(&FIRST), table(&mirrored));
        let want = mixture(&ta, &tb, 2, B as usize).ln() + mixture(&ta, &tb, B as usize, 3).ln();
        assert!((h.log_prob - want).abs() < 1e-4, "{} vs {want}", h.log_prob);
    }

    #[test]
    fn members_must_share_the_vocabulary() {
        let wide = Bigram(Tensor::zeros((8, 8), candle_core::DType::F32, &Device::Cpu).unwrap());
        let e = Ensemble::new(vec![bigram(), wide])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("member 1 has 8 output tokens, member 0 has 7"),
            "{e}"
        );
        assert!(Ensemble::<Bigram>::new(vec![]).is_err());
    }
}
