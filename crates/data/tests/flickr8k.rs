//! Opt-in: the real Flickr8k under ../shared (or $SEQ2SEQ_DATA_DIR); skips with a reason otherwise.

use std::path::PathBuf;

#[test]
fn flickr8k_as_it_ships() {
    let root = std::env::var_os("SEQ2SEQ_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/datasets"
            ))
        })
        .join("flickr8k");
    if !root.join("Flickr8k.token.txt").exists() {
        eprintln!("skipped: no Flickr8k under {}", root.display());
        return;
    }
    let s = seq2seq_data::captions::read_flickr8k(&root, &root.join("images")).unwrap();
    assert_eq!(
        (s.train.len(), s.valid.len(), s.test.len()),
        (6000, 1000, 1000)
    );
    assert!(s.test.iter().all(|i| i.captions.len() == 5));
    eprintln!(
        "captions dropped for a missing image: {}",
        s.dropped_captions
    );
}
