//! `seq2seq caption`: image files and folders through a captioning model; a file that cannot be
//! used gets an error line and a non-zero exit status, and the others are still captioned.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use seq2seq_pipeline::config::DecodingConfig;
use seq2seq_pipeline::tasks::captioning::strips::write_strips;

use crate::args::{DecodingArgs, EnsembleArgs};

#[derive(Args)]
pub(crate) struct CaptionArgs {
    /// The model directory written by `train`, or one checkpoint file in it
    /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
    /// config and vocabularies; task: captioning.
    #[arg(long)]
    model: PathBuf,
    /// Print one JSON object per line (`{"image", "caption", "score"}`, or `"error"`).
    #[arg(long)]
    json: bool,
    /// Test-time augmentation: caption each image and its left-right mirror together (the
    /// mean of the two next-token distributions), at twice the decoding cost.
    #[arg(long)]
    hflip_average: bool,
    /// Write, per image, a strip of its best caption's attention into this folder (0001.png, …
    /// in input order): the picture once per word, lit where the word attends.
    #[arg(long, value_name = "DIR")]
    attention: Option<PathBuf>,
    #[command(flatten)]
    ensemble: EnsembleArgs,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Image files, or folders whose image files (by extension) are captioned in name order.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub(crate) fn run(a: CaptionArgs) -> Result<()> {
    let mut c = a.ensemble.load_captioner(&a.model)?;
    c.set_hflip_average(a.hflip_average);
    let opts = a.decoding.apply(&c.config().decoding)?;
    let opts = DecodingConfig {
        attention: a.attention.is_some(),
        ..opts
    };
    let files =
        seq2seq_pipeline::expand_inputs(&a.images).context("cannot list an image folder")?;
    anyhow::ensure!(
        !files.is_empty(),
        "no image files found in the given folders"
    );
    let results = c.caption_files_detailed(&files, &opts)?;
    if let Some(dir) = &a.attention {
        let items: Vec<_> = files
            .iter()
            .zip(&results)
            .enumerate()
            .filter_map(|(i, (path, r))| {
                let (img, caps) = r.as_ref().ok()?;
                let title = format!("{}: {}", path.display(), caps[0].text);
                Some((i, title, img, &caps[0]))
            })
            .collect();
        let written = write_strips(dir, &items)?;
        eprintln!(
            "wrote {} attention strip{} to {}",
            written.len(),
            if written.len() == 1 { "" } else { "s" },
            dir.display()
        );
    }
    let mut failed = 0;
    let mut stdout = std::io::stdout().lock();
    for (path, r) in files.iter().zip(results) {
        let p = path.display().to_string();
        match r {
            Ok((_, nbest)) => {
                for cap in nbest.iter().take(opts.n_best.max(1)) {
                    let (text, score) = (&cap.text, cap.score);
                    if a.json {
                        let line = serde_json::json!({"image": p, "caption": text, "score": score});
                        writeln!(stdout, "{line}")?;
                    } else if opts.n_best > 1 {
                        writeln!(stdout, "{p}\t{score:.4}\t{text}")?;
                    } else {
                        writeln!(stdout, "{p}\t{text}")?;
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
                if a.json {
                    writeln!(
                        stdout,
                        "{}",
                        serde_json::json!({"image": p, "error": e.to_string()})
                    )?;
                }
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} images could not be captioned",
        files.len()
    );
    Ok(())
}
