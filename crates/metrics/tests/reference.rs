//! Our BLEU, chrF and CIDEr-D against numbers computed by sacreBLEU 2.6.0 and pycocoevalcap 1.2
//! on the same fixtures (`reference.py` produced `data/expected.rs`; the fixtures here are
//! the same strings). Every score must agree to 0.01.

use seq2seq_metrics::{cider_d, coco_bleu, Bleu, Chrf, Smoothing, Tokenizer};

include!("data/expected.rs");

type Fixture = (&'static str, Vec<&'static str>, Vec<Vec<&'static str>>);

/// (name, hypotheses, reference streams) — streams as sacreBLEU takes them.
fn fixtures() -> Vec<Fixture> {
    vec![
        (
            "multi30k_like",
            vec![
                "Ein Mann fährt auf einem Fahrrad die Straße entlang.",
                "Zwei Hunde spielen im Schnee.",
                "Eine Frau in einem roten Kleid singt auf einer Bühne.",
                "Kinder spielen Fußball auf einem Feld.",
                "Ein Junge springt in den See",
            ],
            vec![vec![
                "Ein Mann fährt mit dem Fahrrad eine Straße entlang.",
                "Zwei Hunde spielen im Schnee.",
                "Eine Frau im roten Kleid singt auf der Bühne.",
                "Ein paar Kinder spielen auf einem Feld Fußball.",
                "Ein Junge springt in einen See.",
            ]],
        ),
        (
            "punctuation",
            vec![
                "\"Hello,\" she said -- (quietly)... isn't it?!",
                "Wait: A & B; C/D [x] {y} <z>",
                "e-mail: a.b@c.com, 3-4 p.m.",
            ],
            vec![vec![
                "\"Hello\", she said (quietly) -- is it not?",
                "Wait : A &amp; B ; C / D [x] {y} <z>",
                "email: a.b@c.com , 3 - 4 pm",
            ]],
        ),
        (
            "numbers",
            vec![
                "It costs $3.50, not 1,000.",
                "Call 555-1234 at 10:30.",
                "Pi is 3.14159 and e is 2.71828",
            ],
            vec![vec![
                "It costs 3.50 dollars, not 1,000.",
                "Call 555-1234 at 10.30.",
                "Pi equals 3.14159, e is 2.71828.",
            ]],
        ),
        (
            "unicode",
            vec![
                "Über den Wolken muß die Freiheit grenzenlos sein.",
                "C'est l'été à Paris — très chaud !",
                "東京は大きい都市です。",
                "I ❤ naïve café crème 😀",
            ],
            vec![vec![
                "Über den Wolken muss die Freiheit grenzenlos sein.",
                "C’est l’été à Paris, très chaud !",
                "東京は大都市です。",
                "I ❤ naive café creme 😀",
            ]],
        ),
        (
            "empty_hypotheses",
            vec!["", "A man is walking.", ""],
            vec![vec!["Someone walks.", "A man is walking.", "Nothing here."]],
        ),
        (
            "multiple_references",
            vec![
                "The cat is on the mat.",
                "There is a dog in the garden.",
                "He read the book quickly",
            ],
            vec![
                vec![
                    "The cat sits on the mat.",
                    "A dog is in the garden.",
                    "He quickly read the book.",
                ],
                vec![
                    "There is a cat on the mat.",
                    "There is a dog in the garden.",
                    "He read the book fast.",
                ],
                vec![
                    "A cat on a mat.",
                    "The garden has a dog.",
                    "The book was read quickly by him.",
                ],
            ],
        ),
        (
            "single_sentence",
            vec!["the quick brown fox jumps over the lazy dog"],
            vec![vec!["the fast brown fox jumped over the lazy dog"]],
        ),
    ]
}

fn ours(metric: &str, hyps: &[&str], streams: &[Vec<&str>]) -> f64 {
    // sacreBLEU takes reference streams; our API takes the references of each hypothesis.
    let refs: Vec<Vec<&str>> = (0..hyps.len())
        .map(|i| streams.iter().map(|s| s[i]).collect())
        .collect();
    let first: Vec<&str> = refs[0].clone();
    let bleu = |b: Bleu| b.corpus(hyps, &refs).score;
    match metric {
        "bleu_default" => bleu(Bleu::default()),
        "bleu_lowercase" => bleu(Bleu {
            lowercase: true,
            ..Bleu::default()
        }),
        "bleu_intl" => bleu(Bleu {
            tokenizer: Tokenizer::Intl,
            ..Bleu::default()
        }),
        "bleu_char" => bleu(Bleu {
            tokenizer: Tokenizer::Char,
            ..Bleu::default()
        }),
        "bleu_none" => bleu(Bleu {
            tokenizer: Tokenizer::None,
            ..Bleu::default()
        }),
        "bleu_floor" => bleu(Bleu {
            smoothing: Smoothing::Floor(0.1),
            ..Bleu::default()
        }),
        "bleu_addk" => bleu(Bleu {
            smoothing: Smoothing::AddK(1.0),
            ..Bleu::default()
        }),
        "bleu_nosmooth" => bleu(Bleu {
            smoothing: Smoothing::None,
            ..Bleu::default()
        }),
        "chrf" => Chrf::default().corpus(hyps, &refs).score,
        "chrf_pp" => Chrf::plus_plus().corpus(hyps, &refs).score,
        "chrf_lc" => {
            Chrf {
                lowercase: true,
                ..Chrf::default()
            }
            .corpus(hyps, &refs)
            .score
        }
        "sentence_bleu0" => {
            Bleu {
                effective_order: true,
                ..Bleu::default()
            }
            .sentence(hyps[0], &first)
            .score
        }
        "sentence_chrf0" => Chrf::default().sentence(hyps[0], &first).score,
        other => panic!("unknown metric {other}"),
    }
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let fx = fixtures();
    let mut checked = 0;
    for (name, metric, want) in EXPECTED {
        let (_, hyps, streams) = fx.iter().find(|f| f.0 == *name).unwrap();
        let got = ours(metric, hyps, streams);
        assert!(
            (got - want).abs() < 0.01,
            "{name} {metric}: ours {got}, sacreBLEU {want}"
        );
        checked += 1;
    }
    assert_eq!(checked, 7 * 13);
}

#[test]
fn cider_d_equals_pycocoevalcap() {
    let hyps = [
        "a dog runs on the grass",
        "a man rides a bike",
        "two children play in the water",
        "a woman",
    ];
    let refs: Vec<Vec<&str>> = vec![
        vec![
            "a dog is running on the grass",
            "a brown dog runs across a field",
            "the dog runs",
            "a dog plays outside",
            "dog running on grass",
        ],
        vec![
            "a man is riding a bicycle",
            "a person rides a bike down the street",
            "a cyclist on a road",
            "man on a bike",
            "a man riding his bike",
        ],
        vec![
            "two kids are playing in the water",
            "children splash in a pool",
            "two children swim",
            "kids play in the lake",
            "two young children in the water",
        ],
        vec![
            "a woman is standing in front of a building",
            "a lady waits outside",
            "a woman in a red coat",
            "woman standing",
            "a woman near a wall",
        ],
    ];
    let bleu = coco_bleu(&hyps, &refs);
    for (n, (a, b)) in bleu.iter().zip(COCO_BLEU).enumerate() {
        assert!(
            (a - b).abs() < 1e-9,
            "BLEU-{}: ours {a}, pycocoevalcap {b}",
            n + 1
        );
    }
    let (score, each) = cider_d(&hyps, &refs);
    assert!(
        (score - CIDER_D).abs() < 1e-6,
        "ours {score}, pycocoevalcap {CIDER_D}"
    );
    for (a, b) in each.iter().zip(CIDER_D_EACH) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // The same input gives the same bits every time: sums run in a fixed n-gram order, not in
    // a hash map's per-instance random order (which once changed eval's last digit).
    // A larger corpus, so that many n-grams of unequal weight are summed.
    let words = [
        "a", "dog", "man", "red", "runs", "on", "the", "grass", "woman", "blue", "jumps", "over",
        "wall", "child", "plays", "in", "water", "two", "people", "sit",
    ];
    let sentence = |seed: usize, len: usize| -> String {
        (0..len)
            .map(|k| words[(seed * 7 + k * k * 3 + k * seed) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let hyps: Vec<String> = (0..60).map(|i| sentence(i, 6 + i % 7)).collect();
    let refs: Vec<Vec<String>> = (0..60)
        .map(|i| {
            (1..=5)
                .map(|r| sentence(i + 13 * r, 5 + (i + r) % 9))
                .collect()
        })
        .collect();
    let first = cider_d(&hyps, &refs).0;
    for _ in 0..20 {
        assert_eq!(cider_d(&hyps, &refs).0.to_bits(), first.to_bits());
    }
}

#[test]
fn coco_bleu_brevity_penalty_and_missing_orders() {
    let hyps = ["a dog", "people sit bench park"];
    let refs = vec![
        vec!["a black dog runs through the tall grass", "a dog running"],
        vec!["two men sit on a bench in the park", "men on a bench"],
    ];
    for (n, (a, b)) in coco_bleu(&hyps, &refs)
        .iter()
        .zip(COCO_BLEU_SHORT)
        .enumerate()
    {
        assert!(
            (a - b).abs() < 1e-12 + 1e-9 * b.abs(),
            "BLEU-{}: ours {a}, pycocoevalcap {b}",
            n + 1
        );
    }
}

#[test]
fn signatures_look_like_sacrebleu() {
    let b = Bleu::default().corpus(&["a b c d"], &[vec!["a b c d"]]);
    assert_eq!(
        b.signature,
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    );
    assert!((b.score - 100.0).abs() < 1e-9);
    let c = Chrf::plus_plus().corpus(&["a b"], &[vec!["a b"]]);
    assert_eq!(
        c.signature,
        "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"
    );
    let f = Bleu {
        smoothing: Smoothing::Floor(0.1),
        lowercase: true,
        ..Bleu::default()
    };
    assert!(f.signature(2).contains("case:lc") && f.signature(2).contains("smooth:floor[0.10]"));
}
