//! A running text (`data.format: text`) cut into windows of `data.window` tokens; the last
//! windows are held out contiguously, so that no held-out text overlaps the training windows.

use seq2seq_data::{Example, Pair};

use crate::config::Config;
use crate::model_dir::TGT_TOKENIZER;
use crate::observer::Observer;
use crate::tasks::text::{items_of, load_splits, log_sizes, vocab};
use crate::tasks::Prepared;
use crate::tasks::RunFiles;
use crate::{Error, Result};

pub(crate) fn prepare_windows(
    cfg: &Config,
    files: RunFiles,
    obs: &mut dyn Observer,
) -> Result<Prepared> {
    let d = &cfg.data;
    let lines = load_splits(d, files.data_dir)?.train;
    if lines.is_empty() {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the training corpus".into(),
            hint: String::new(),
        }));
    }
    // The text is learned with its line breaks (a char model must know "\n").
    let text: Vec<&str> = lines.iter().map(|p| p.tgt.as_str()).collect();
    let text = text.join("\n");
    let vocab = vocab(
        files,
        TGT_TOKENIZER,
        &d.tgt_vocab,
        d.lowercase,
        &[text.as_str()],
    )?;
    let ids = vocab.encode(&text)?;
    let mut windows: Vec<Example> = ids
        .chunks(d.window)
        .filter(|c| c.len() > 1)
        .map(|c| Example {
            ends: false,
            ..Example::new(Vec::new(), c.to_vec())
        })
        .collect();
    let n = windows.len();
    if n <= d.valid_size + d.test_size {
        return Err(Error::Data(seq2seq_data::DataError::Empty {
            what: "the training set".into(),
            hint: format!(
                ": the text gives {n} windows of data.window={} tokens, not more than data.valid_size + data.test_size = {}",
                d.window,
                d.valid_size + d.test_size
            ),
        }));
    }
    let test = windows.split_off(n - d.test_size);
    let valid = windows.split_off(n - d.test_size - d.valid_size);
    let pairs = |w: &[Example]| -> Result<Vec<Pair>> {
        w.iter()
            .map(|e| {
                Ok(Pair {
                    src: String::new(),
                    tgt: vocab.decode(&e.tgt)?,
                })
            })
            .collect()
    };
    let p = Prepared {
        src_vocab: vocab.clone(),
        tgt_vocab: vocab.clone(),
        valid_items: items_of(&pairs(&valid)?, &valid),
        test_items: items_of(&pairs(&test)?, &test),
        train: windows.into(),
        stream: None,
        valid,
        test,
    };
    let desc = format!("vocab {} ({:?})", vocab.len(), d.tgt_vocab.level);
    log_sizes(obs, &p, "windows", &desc);
    Ok(p)
}
