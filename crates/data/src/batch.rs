//! Length-bucketed, seeded batching of encoded examples into padded id matrices.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One encoded training example (ids without bos/eos).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub src: Vec<u32>,
    pub tgt: Vec<u32>,
    /// Whether the target ends the item, so that eos is a training target. A window cut from a
    /// running text does not end there: its eos position is masked out.
    pub ends: bool,
}

impl Example {
    pub fn new(src: Vec<u32>, tgt: Vec<u32>) -> Self {
        Self {
            src,
            tgt,
            ends: true,
        }
    }
}

/// A padded batch, row-major: `src` is (size, src_len), `tgt_in` = bos + y and
/// `tgt_out` = y + eos are (size, tgt_len); masks hold 1 for real tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub src_len: usize,
    pub tgt_len: usize,
    pub src: Vec<u32>,
    pub src_mask: Vec<f32>,
    pub tgt_in: Vec<u32>,
    pub tgt_out: Vec<u32>,
    pub tgt_mask: Vec<f32>,
    /// Indices of the examples in the order of the rows.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of real target tokens (eos included): the unit of throughput.
    pub fn target_tokens(&self) -> usize {
        self.tgt_mask.iter().filter(|m| **m > 0.0).count()
    }

    pub fn new(examples: &[Example], indices: &[usize], pad: u32, bos: u32, eos: u32) -> Self {
        let size = indices.len();
        let src_len = indices
            .iter()
            .map(|&i| examples[i].src.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let tgt_len = indices
            .iter()
            .map(|&i| examples[i].tgt.len() + 1)
            .max()
            .unwrap_or(1);
        let mut b = Batch {
            size,
            src_len,
            tgt_len,
            src: vec![pad; size * src_len],
            src_mask: vec![0.0; size * src_len],
            tgt_in: vec![pad; size * tgt_len],
            tgt_out: vec![pad; size * tgt_len],
            tgt_mask: vec![0.0; size * tgt_len],
            indices: indices.to_vec(),
        };
        for (r, &i) in indices.iter().enumerate() {
            let ex = &examples[i];
            for (j, &t) in ex.src.iter().enumerate() {
                b.src[r * src_len + j] = t;
                b.src_mask[r * src_len + j] = 1.0;
            }
            // An empty source still gets one (padding) position so attention has something to
            // look at; its mask stays 1 so the softmax is defined.
            if ex.src.is_empty() {
                b.src_mask[r * src_len] = 1.0;
            }
            let row = r * tgt_len;
            b.tgt_in[row] = bos;
            for (j, &t) in ex.tgt.iter().enumerate() {
                b.tgt_in[row + j + 1] = t;
                b.tgt_out[row + j] = t;
            }
            b.tgt_out[row + ex.tgt.len()] = eos;
            let scored = ex.tgt.len() + usize::from(ex.ends);
            for j in 0..scored {
                b.tgt_mask[row + j] = 1.0;
            }
        }
        b
    }
}

/// The epoch's example order (shuffled when asked) and the generator that goes on to shuffle its
/// batches, both seeded by `(seed, epoch)`.
fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> (Vec<usize>, ChaCha8Rng) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch));
    if shuffle {
        idx.shuffle(&mut rng);
    }
    (idx, rng)
}

/// Groups example indices into batches of at most `batch_size` with little padding.
///
/// The examples are shuffled with a generator seeded by `(seed, epoch)`, cut into pools of
/// 50 batches, each pool sorted by length and cut into batches, and the batch order shuffled:
/// similar lengths share a batch while the epoch order stays random and reproducible.
pub fn bucket_batches(
    examples: &[Example],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    let (mut idx, mut rng) = epoch_order(examples.len(), seed, epoch, shuffle);
    let batch_size = batch_size.max(1);
    let key = |&i: &usize| (examples[i].src.len(), examples[i].tgt.len());
    let mut batches = Vec::new();
    let pool = if shuffle {
        batch_size * 50
    } else {
        idx.len().max(1)
    };
    for chunk in idx.chunks_mut(pool) {
        chunk.sort_by_key(key);
        batches.extend(chunk.chunks(batch_size).map(|c| c.to_vec()));
    }
    if shuffle {
        batches.shuffle(&mut rng);
    }
    batches
}

/// How a batch is measured: `Sentences(n)` rows, or `Tokens(n)` padded target tokens (rows ×
/// the longest target with its end token, as fairseq's `--max-tokens` and OpenNMT-py's
/// `batch_type: tokens` count them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Sentences(usize),
    Tokens(usize),
}

/// Length-bucketed batches of either measure (see [`bucket_batches`] and [`token_batches`]).
pub fn batches(
    examples: &[Example],
    size: BatchSize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    match size {
        BatchSize::Sentences(n) => bucket_batches(examples, n, seed, epoch, shuffle),
        BatchSize::Tokens(n) => token_batches(examples, n, seed, epoch, shuffle),
    }
}

/// [`bucket_batches`] by tokens: each batch holds as many examples as keep rows × its longest
/// target (end token included) within `max_tokens`; an example longer than that is a batch of
/// its own. The pools that are sorted by length hold about 50 batches' worth of tokens.
pub fn token_batches(
    examples: &[Example],
    max_tokens: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    let (mut idx, mut rng) = epoch_order(examples.len(), seed, epoch, shuffle);
    let max_tokens = max_tokens.max(1);
    let len = |i: usize| examples[i].tgt.len() + 1;
    let key = |&i: &usize| (examples[i].src.len(), examples[i].tgt.len());
    let pool_tokens = if shuffle { max_tokens * 50 } else { usize::MAX };
    let mut batches = Vec::new();
    let mut start = 0;
    while start < idx.len() {
        let (mut end, mut sum) = (start, 0usize);
        while end < idx.len() && (end == start || sum < pool_tokens) {
            sum = sum.saturating_add(len(idx[end]));
            end += 1;
        }
        let pool = &mut idx[start..end];
        pool.sort_by_key(key);
        let mut cur: Vec<usize> = Vec::new();
        let mut longest = 0;
        for &i in pool.iter() {
            let l = longest.max(len(i));
            if !cur.is_empty() && (cur.len() + 1) * l > max_tokens {
                batches.push(std::mem::take(&mut cur));
                longest = 0;
            }
            longest = longest.max(len(i));
            cur.push(i);
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
        start = end;
    }
    if shuffle {
        batches.shuffle(&mut rng);
    }
    batches
}

/// Batches of examples that share their source (the captions of one image), so that each
/// source is encoded once per batch. Groups of identical sources are shuffled with a generator
/// seeded by `(seed, epoch)` and packed whole into batches of at most `batch_size` rows (a
/// larger group is split).
pub fn grouped_batches(
    examples: &[Example],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut groups: std::collections::BTreeMap<&[u32], Vec<usize>> = Default::default();
    for (i, e) in examples.iter().enumerate() {
        groups.entry(e.src.as_slice()).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch));
    groups.shuffle(&mut rng);
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::with_capacity(batch_size);
    for g in groups {
        for part in g.chunks(batch_size) {
            if cur.len() + part.len() > batch_size {
                batches.push(std::mem::take(&mut cur));
            }
            cur.extend_from_slice(part);
        }
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_batches_stay_within_the_budget_and_cover_every_example_once() {
        let ex: Vec<Example> = (0..300u32)
            .map(|i| {
                Example::new(
                    vec![1; 1 + (i % 13) as usize],
                    vec![5; 1 + (i * 7 % 23) as usize],
                )
            })
            .collect();
        for (budget, shuffle) in [(64, true), (64, false), (200, true), (10, true)] {
            let b = token_batches(&ex, budget, 3, 1, shuffle);
            let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..300).collect::<Vec<_>>());
            for batch in &b {
                let longest = batch.iter().map(|&i| ex[i].tgt.len() + 1).max().unwrap();
                // Over budget only when one example alone is.
                assert!(
                    batch.len() * longest <= budget || batch.len() == 1,
                    "{} rows × {longest} > {budget}",
                    batch.len()
                );
            }
            // Reproducible per (seed, epoch); another epoch, another order.
            assert_eq!(b, token_batches(&ex, budget, 3, 1, shuffle));
            if shuffle {
                assert_ne!(b, token_batches(&ex, budget, 3, 2, shuffle));
            }
        }
        // Batches fill up: short targets make wide batches.
        let short: Vec<Example> = (0..100)
            .map(|_| Example::new(vec![1], vec![5, 5, 5]))
            .collect();
        let sizes: Vec<usize> = token_batches(&short, 64, 0, 0, false)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![16, 16, 16, 16, 16, 16, 4]);
        assert_eq!(
            batches(&ex, BatchSize::Sentences(32), 3, 1, true),
            bucket_batches(&ex, 32, 3, 1, true)
        );
    }

    #[test]
    fn padding_and_shifted_targets() {
        let ex = vec![
            Example::new(vec![5, 6, 7], vec![8]),
            Example::new(vec![9], vec![10, 11]),
        ];
        let b = Batch::new(&ex, &[0, 1], 0, 2, 3);
        assert_eq!((b.src_len, b.tgt_len), (3, 3));
        assert_eq!(b.src, vec![5, 6, 7, 9, 0, 0]);
        assert_eq!(b.src_mask, vec![1., 1., 1., 1., 0., 0.]);
        assert_eq!(b.tgt_in, vec![2, 8, 0, 2, 10, 11]);
        assert_eq!(b.tgt_out, vec![8, 3, 0, 10, 11, 3]);
        assert_eq!(b.target_tokens(), 5);
        // A window of running text: its eos position is not a target.
        let open = vec![Example {
            ends: false,
            ..Example::new(vec![], vec![7, 8])
        }];
        let b = Batch::new(&open, &[0], 0, 2, 3);
        assert_eq!(b.tgt_in, vec![2, 7, 8]);
        assert_eq!(b.tgt_mask, vec![1., 1., 0.]);
    }

    #[test]
    fn grouped_batches_keep_a_source_together() {
        // 100 images with 3..=5 captions each.
        let ex: Vec<Example> = (0..100u32)
            .flat_map(|img| (0..3 + img % 3).map(move |c| Example::new(vec![img], vec![c + 1])))
            .collect();
        let a = grouped_batches(&ex, 16, 5, 0);
        assert_eq!(a, grouped_batches(&ex, 16, 5, 0));
        assert_ne!(a, grouped_batches(&ex, 16, 5, 1));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..ex.len()).collect::<Vec<_>>());
        for b in &a {
            assert!(b.len() <= 16);
            for &i in b {
                // every caption of this image is in the same batch
                let img = ex[i].src[0];
                assert_eq!(
                    b.iter().filter(|&&j| ex[j].src[0] == img).count(),
                    ex.iter().filter(|e| e.src[0] == img).count()
                );
            }
        }
        assert!(a.len() <= ex.len() / 12, "{} batches", a.len());
    }

    #[test]
    fn buckets_cover_everything_once_and_are_seeded() {
        let ex: Vec<Example> = (0..1000)
            .map(|i| Example::new(vec![1; 1 + (i * 7919) % 40], vec![1; 1 + i % 30]))
            .collect();
        let a = bucket_batches(&ex, 16, 3, 0, true);
        assert_eq!(a, bucket_batches(&ex, 16, 3, 0, true));
        assert_ne!(a, bucket_batches(&ex, 16, 3, 1, true));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // bucketing keeps source lengths within a batch close together
        let spread: usize = a
            .iter()
            .map(|b| {
                let l: Vec<usize> = b.iter().map(|&i| ex[i].src.len()).collect();
                l.iter().max().unwrap() - l.iter().min().unwrap()
            })
            .sum();
        assert!(spread / a.len() <= 2, "mean spread {}", spread / a.len());
    }
}
