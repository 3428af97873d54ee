//! The training split read as a stream (`data.streaming`), for corpora larger than memory.
//!
//! Preparing makes passes over the file, each holding one line at a time: the items are counted
//! and the held-out ones drawn by number (`tsv`, `lines`; a parallel corpus has its own held-out
//! files), the held-out items are read, and each vocabulary is learned from the training items.
//! Training then reads [`Buffer`]s of `data.shuffle_buffer` items from a [`StreamPos`], which the
//! training loop shuffles and buckets as it does a whole corpus, and whose start is saved in the
//! resume state.

use std::collections::HashSet;

use seq2seq_data::stream::{count_items, held_out as draw_held_out, read_items};
use seq2seq_data::{DataError, Example, Pair, PairStream, StreamPos, StreamSource, Vocab};

use crate::config::{Config, DataConfig, DataFormat};
use crate::model_dir::{self, SRC_TOKENIZER, TGT_TOKENIZER};
use crate::observer::Observer;
use crate::tasks::text::{
    held_out, parallel_files, parallel_split, root, vocab_desc, vocab_with, Keep, PairEncoding,
};
use crate::tasks::{Prepared, RunFiles};
use crate::{Error, Result};

/// The training split as a stream, and how its items become examples.
pub(crate) struct TrainStream {
    pub source: StreamSource,
    /// Held-out item numbers (`tsv`, `lines`): the training stream skips them.
    skip: HashSet<u64>,
    /// Items read per buffer (held-out ones not counted).
    pub buffer: usize,
    has_source: bool,
    keep: Keep,
}

/// One shuffle buffer of the training stream, encoded.
pub(crate) struct Buffer {
    pub examples: Vec<Example>,
    /// Where the next buffer starts.
    pub next: StreamPos,
}

/// Which side of a pair a vocabulary is learned from.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Target,
    Both,
}

impl TrainStream {
    /// The file (or files) read.
    fn describe(&self) -> String {
        match &self.source {
            StreamSource::Parallel { src, tgt } => {
                format!("{} + {}", src.display(), tgt.display())
            }
            StreamSource::Tsv { path, .. } | StreamSource::Lines { path } => {
                path.display().to_string()
            }
        }
    }

    /// The training items from the start, held-out ones skipped.
    fn items(
        &self,
    ) -> Result<impl Iterator<Item = std::result::Result<Pair, DataError>> + Send + '_> {
        let s = PairStream::open(&self.source, StreamPos::default())?;
        Ok(s.filter_map(|r| match r {
            Ok((n, _)) if self.skip.contains(&n) => None,
            Ok((_, p)) => Some(Ok(p)),
            Err(e) => Some(Err(e)),
        }))
    }

    /// A vocabulary learned from one side of the training items (or both), in one pass.
    fn learn(&self, spec: &seq2seq_data::VocabSpec, side: Side) -> Result<Vocab> {
        let texts = self.items()?.flat_map(move |r| {
            let texts: Vec<std::result::Result<String, DataError>> = match (r, side) {
                (Err(e), _) => vec![Err(e)],
                (Ok(p), Side::Source) => vec![Ok(p.src)],
                (Ok(p), Side::Target) => vec![Ok(p.tgt)],
                (Ok(p), Side::Both) => vec![Ok(p.src), Ok(p.tgt)],
            };
            texts
        });
        Ok(Vocab::train_stream(spec, texts)?)
    }

    /// The buffer that starts at `start`, encoded with the run's vocabularies; `None` at the end
    /// of the corpus.
    pub fn read(&self, src: &Vocab, tgt: &Vocab, start: StreamPos) -> Result<Option<Buffer>> {
        let mut s = PairStream::open(&self.source, start)?;
        let mut pairs = Vec::with_capacity(self.buffer.min(1 << 20));
        while pairs.len() < self.buffer {
            match s.next_item()? {
                None => break,
                Some((n, _)) if self.skip.contains(&n) => {}
                Some((_, p)) => pairs.push(p),
            }
        }
        if pairs.is_empty() {
            return Ok(None);
        }
        let enc = PairEncoding {
            src,
            tgt,
            has_source: self.has_source,
        };
        let e = enc.encode(&pairs, self.keep)?;
        Ok(Some(Buffer {
            examples: e.examples,
            next: s.pos(),
        }))
    }
}

/// A streamed corpus before training: what the training stream reads, the held-out pairs in
/// memory, and the held-out item numbers the training stream skips.
pub(crate) struct StreamedCorpus {
    pub source: StreamSource,
    pub valid: Vec<Pair>,
    pub test: Vec<Pair>,
    skip: HashSet<u64>,
}

/// The [`StreamedCorpus`] the config names, resolved against `data_dir`.
pub(crate) fn source_and_held_out(
    d: &DataConfig,
    data_dir: &std::path::Path,
) -> Result<StreamedCorpus> {
    let root = root(d, data_dir);
    let source = match d.format {
        DataFormat::Parallel => {
            let (src, tgt) = parallel_files(d, &root, &d.train);
            let source = StreamSource::Parallel { src, tgt };
            let valid = parallel_split(d, &root, &d.valid)?;
            let test = parallel_split(d, &root, &d.test)?;
            return Ok(StreamedCorpus {
                source,
                valid,
                test,
                skip: HashSet::new(),
            });
        }
        DataFormat::Tsv => StreamSource::Tsv {
            path: root.join(&d.file),
            src_col: d.src_column,
            tgt_col: d.tgt_column,
        },
        // The config check allows no other format.
        _ => StreamSource::Lines {
            path: root.join(&d.file),
        },
    };
    let n = count_items(&source)?;
    let (v, t) = draw_held_out(n, d.valid_size, d.test_size, d.split_seed);
    if n <= (v.len() + t.len()) as u64 {
        return Err(Error::Data(DataError::Empty {
            what: "the training set".into(),
            hint: format!(
                ": the corpus has {n} items, not more than data.valid_size + data.test_size = {}",
                d.valid_size + d.test_size
            ),
        }));
    }
    let skip = v.iter().chain(&t).copied().collect();
    let (valid, test) = (read_items(&source, &v)?, read_items(&source, &t)?);
    Ok(StreamedCorpus {
        source,
        valid,
        test,
        skip,
    })
}

/// [`crate::tasks::text`]'s preparation for a streamed training split: held-out splits in
/// memory, the vocabularies learned in passes over the stream, no training example held.
pub(crate) fn prepare_stream(
    cfg: &Config,
    files: RunFiles,
    obs: &mut dyn Observer,
    has_source: bool,
) -> Result<Prepared> {
    let d = &cfg.data;
    let corpus = source_and_held_out(d, files.data_dir)?;
    let (valid_pairs, test_pairs) = (corpus.valid, corpus.test);
    let ts = TrainStream {
        source: corpus.source,
        skip: corpus.skip,
        buffer: d.shuffle_buffer,
        has_source,
        keep: Keep::Within {
            max_src: d.max_src_len,
            max_tgt: d.max_tgt_len,
        },
    };
    let (src_vocab, tgt_vocab) = if has_source && d.joint_vocab {
        let spec = d.tgt_vocab.spec(d.lowercase);
        let v = vocab_with(files, TGT_TOKENIZER, || ts.learn(&spec, Side::Both))?;
        if !files.resume {
            model_dir::write_atomic(&files.out.join(SRC_TOKENIZER), v.to_json()?.as_bytes())?;
        }
        (v.clone(), v)
    } else {
        let spec = d.tgt_vocab.spec(d.lowercase);
        let tgt = vocab_with(files, TGT_TOKENIZER, || ts.learn(&spec, Side::Target))?;
        let src = if has_source {
            let spec = d.src_vocab.spec(d.lowercase);
            vocab_with(files, SRC_TOKENIZER, || ts.learn(&spec, Side::Source))?
        } else {
            tgt.clone()
        };
        (src, tgt)
    };
    let enc = PairEncoding {
        src: &src_vocab,
        tgt: &tgt_vocab,
        has_source,
    };
    let (valid, valid_items) = held_out(&enc, &valid_pairs)?;
    let (test, test_items) = held_out(&enc, &test_pairs)?;
    let p = Prepared {
        src_vocab,
        tgt_vocab,
        train: Default::default(),
        stream: Some(ts),
        valid,
        valid_items,
        test,
        test_items,
    };
    obs.line(&format!(
        "data: training items streamed from {} in buffers of {} (data.shuffle_buffer), {} valid, {} test; {}",
        p.stream.as_ref().map_or(String::new(), |s| s.describe()),
        d.shuffle_buffer,
        p.valid.len(),
        p.test.len(),
        vocab_desc(d, &p, has_source)
    ));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epochs_buffers_hold_every_training_item_once_and_no_held_out_one() {
        let dir = std::env::temp_dir().join(format!("s2s-stream-epoch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 100 distinct lines, and blank ones that are not items.
        let text: String = (0..100)
            .map(|i| {
                format!(
                    "w{i} x{}\n{}",
                    i % 7,
                    if i % 30 == 0 { "\n \n" } else { "" }
                )
            })
            .collect();
        std::fs::write(dir.join("lm.txt"), text).unwrap();
        let cfg = Config::from_yaml(
            "task: generation\ndata: {format: lines, file: lm.txt, streaming: true, shuffle_buffer: 16, valid_size: 10, test_size: 5, tgt_vocab: {level: word}}\ntrain: {max_steps: 1}",
        )
        .unwrap();
        let files = RunFiles {
            data_dir: &dir,
            out: &dir,
            resume: false,
        };
        let p = prepare_stream(&cfg, files, &mut (), false).unwrap();
        assert!(p.train.is_empty());
        let ts = p.stream.as_ref().unwrap();
        let mut seen: Vec<String> = Vec::new();
        let mut at = StreamPos::default();
        let mut sizes = Vec::new();
        while let Some(b) = ts.read(&p.src_vocab, &p.tgt_vocab, at).unwrap() {
            sizes.push(b.examples.len());
            for e in &b.examples {
                seen.push(p.tgt_vocab.decode(&e.tgt).unwrap());
            }
            at = b.next;
        }
        assert_eq!(sizes, [16, 16, 16, 16, 16, 5]);
        let held: Vec<&String> = p
            .valid_items
            .iter()
            .chain(&p.test_items)
            .map(|it| &it.refs[0])
            .collect();
        assert_eq!((p.valid.len(), p.test.len()), (10, 5));
        let mut all: Vec<String> = seen
            .iter()
            .cloned()
            .chain(held.iter().map(|s| s.to_string()))
            .collect();
        all.sort();
        let mut want: Vec<String> = (0..100).map(|i| format!("w{i} x{}", i % 7)).collect();
        want.sort();
        assert_eq!(all, want, "every item once, in training or held out");
        assert!(held.iter().all(|h| !seen.contains(h)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
