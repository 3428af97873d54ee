//! `seq2seq eval`: decode a held-out split of the model's own corpus, write the hypotheses
//! (atomically) and report BLEU and chrF (translation) or BLEU-1..4 and CIDEr-D (captioning).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::model_dir::{checkpoint_file, write_atomic};
use seq2seq_pipeline::{resolve_data_dir, CaptionReport, Config, EvalReport, Split};

use crate::args::{DecodingArgs, EnsembleArgs};

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// The model directory written by `train`, or one checkpoint file in it
    /// (`checkpoint-step<S>.safetensors`, `last.safetensors`): the directory supplies the
    /// config and vocabularies.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    ensemble: EnsembleArgs,
    /// valid | test
    #[arg(long, default_value = "test")]
    split: String,
    /// Where corpora are looked up (else $SEQ2SEQ_DATA_DIR, else ./datasets).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the hypotheses (default: <model>/hyp.<split>.txt).
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    /// Captioning models: caption each image and its left-right mirror together (the mean
    /// of the two next-token distributions), at twice the decoding cost.
    #[arg(long)]
    hflip_average: bool,
    #[command(flatten)]
    decoding: DecodingArgs,
}

pub(crate) fn run(a: EvalArgs) -> Result<()> {
    let split = match a.split.as_str() {
        "valid" => Split::Valid,
        "test" => Split::Test,
        other => anyhow::bail!("--split: expected valid or test, got `{other}`"),
    };
    // A checkpoint file names its hypotheses after itself, beside it.
    let (dir, weights) = checkpoint_file(&a.model);
    let output = a.output.clone().unwrap_or_else(|| {
        if a.model.is_dir() {
            a.model.join(format!("hyp.{}.txt", a.split))
        } else {
            let stem = weights.strip_suffix(".safetensors").unwrap_or(&weights);
            dir.join(format!("hyp.{stem}.{}.txt", a.split))
        }
    });
    let data_dir = resolve_data_dir(a.data_dir.as_deref());
    let task = Config::from_file(&dir.join("config.yaml")).map(|c| c.task);
    if let Ok(Task::Captioning) = task {
        let mut c = a.ensemble.load_captioner(&a.model)?;
        c.set_hflip_average(a.hflip_average);
        let opts = a.decoding.apply(&c.config().decoding)?;
        let r = seq2seq_pipeline::evaluate_captions(&c, split, &data_dir, &opts)?;
        let mut text: String = r
            .captions
            .iter()
            .map(|(i, c)| format!("{i}\t{c}\n"))
            .collect();
        if text.is_empty() {
            text.push('\n');
        }
        write_atomic(&output, text.as_bytes())?;
        print_captioning(&r, &a.split, &output, c.views(), a.json);
        return Ok(());
    }
    anyhow::ensure!(
        !a.hflip_average,
        "--hflip-average: applies to captioning models only"
    );
    let t = a.ensemble.load(&a.model)?;
    let opts = a.decoding.apply(&t.config.decoding)?;
    let r = seq2seq_pipeline::evaluate(&t, split, &data_dir, &opts)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let mut text = r.hypotheses.join("\n");
    text.push('\n');
    write_atomic(&output, text.as_bytes())?;
    print_translation(&r, &a.split, &output, a.json);
    Ok(())
}

fn print_translation(r: &EvalReport, name: &str, output: &Path, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "split": name, "items": r.items, "bleu": r.bleu.score, "bleu_lc": r.bleu_lc.score,
                "chrf": r.chrf.score, "chrf_lc": r.chrf_lc.score, "exact_match": r.exact_match, "loss": r.loss, "ppl": r.ppl,
                "bleu_signature": r.bleu.signature, "chrf_signature": r.chrf.signature,
                "hypotheses": output.display().to_string(),
            })
        );
        return;
    }
    println!(
        "{name}: {} sentences, hypotheses in {}",
        r.items,
        output.display()
    );
    println!("BLEU|{} = {}", r.bleu.signature, &r.bleu.to_string()[7..]);
    println!(
        "BLEU|{} = {}",
        r.bleu_lc.signature,
        &r.bleu_lc.to_string()[7..]
    );
    println!("chrF2|{} = {:.2}", r.chrf.signature, r.chrf.score);
    println!("chrF2|{} = {:.2}", r.chrf_lc.signature, r.chrf_lc.score);
    println!(
        "exact match {:.1}% | loss {:.4} nats/token | ppl {:.2}",
        100.0 * r.exact_match,
        r.loss,
        r.ppl
    );
}

fn print_captioning(r: &CaptionReport, name: &str, output: &Path, views: usize, json: bool) {
    if r.cache_rejected {
        eprintln!("warning: data.feature_cache holds features this model's backbone does not reproduce (another checkpoint under the same name?); computed them instead");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "split": name, "images": r.images, "bleu1": r.bleu[0], "bleu2": r.bleu[1],
                "bleu3": r.bleu[2], "bleu4": r.bleu[3], "cider_d": r.cider_d,
                "exact_match": r.exact_match, "loss": r.loss, "ppl": r.ppl,
                "images_per_s": r.images_per_s, "cached_features": r.cached_features,
                "cache_rejected": r.cache_rejected, "hypotheses": output.display().to_string(),
            })
        );
        return;
    }
    println!(
        "{name}: {} images, captions in {}",
        r.images,
        output.display()
    );
    if r.cached_features > 0 {
        println!(
            "{} of {} backbone feature maps from the training feature cache",
            r.cached_features,
            r.images * views
        );
    }
    println!(
        "BLEU-1 {:.2} | BLEU-2 {:.2} | BLEU-3 {:.2} | BLEU-4 {:.2} | CIDEr-D {:.3} (pycocoevalcap definitions, all references)",
        r.bleu[0], r.bleu[1], r.bleu[2], r.bleu[3], r.cider_d
    );
    println!(
        "exact match {:.1}% | loss {:.4} nats/token | ppl {:.2} | {:.1} images/s captioned",
        100.0 * r.exact_match,
        r.loss,
        r.ppl,
        r.images_per_s
    );
}
