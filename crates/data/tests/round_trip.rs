//! A cased BPE vocabulary trained on Multi30k's German gives every reference back exactly:
//! what the cased translation config relies on to write text like the references.
//! Needs `../shared/datasets/multi30k` (or `SEQ2SEQ_DATA_DIR`); skips with a reason without it.

use std::path::PathBuf;

use seq2seq_data::{Level, Vocab, VocabSpec};

fn multi30k() -> Option<PathBuf> {
    let base = std::env::var_os("SEQ2SEQ_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets")
        });
    let dir = base.join("multi30k");
    dir.join("train.de").exists().then_some(dir)
}

fn lines(path: PathBuf) -> Vec<String> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn cased_bpe_decodes_the_multi30k_references_exactly() {
    let Some(dir) = multi30k() else {
        eprintln!("skipped: no multi30k under ../shared/datasets (set SEQ2SEQ_DATA_DIR)");
        return;
    };
    for lang in ["de", "en"] {
        let spec = VocabSpec {
            level: Level::Bpe,
            lowercase: false,
            min_freq: 2,
            max_size: 8000,
        };
        let vocab = Vocab::train(&spec, &lines(dir.join(format!("train.{lang}")))).unwrap();
        for split in ["val", "test2016"] {
            let refs = lines(dir.join(format!("{split}.{lang}")));
            let changed: Vec<(usize, String, String)> = refs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let back = vocab.decode(&vocab.encode(r).unwrap()).unwrap();
                    (&back != r).then(|| (i + 1, r.clone(), back))
                })
                .collect();
            assert!(
                changed.is_empty(),
                "{split}.{lang}: {} of {} references change, first (line, reference, decoded): {:?}",
                changed.len(),
                refs.len(),
                changed.first()
            );
        }
    }
}
