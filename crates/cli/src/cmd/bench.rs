//! `seq2seq bench`: training and decoding speed, memory and cold start of a translation config,
//! or image and caption throughput of a trained captioning model.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use seq2seq_pipeline::bench::{
    self, BenchOptions, BenchReport, CaptionBenchReport, ImageBenchReport,
};
use seq2seq_pipeline::config::Task;
use seq2seq_pipeline::{resolve_data_dir, Config};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The config (the PyTorch peer's architecture is configs/multi30k-en-de-bahdanau.yaml).
    config: PathBuf,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A trained model of this config for the decoding figures (default: runs/<name> if present).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Timed training steps (after 5 warm-up steps).
    #[arg(long, default_value_t = 60)]
    train_steps: usize,
    /// Test sentences (captioning: test images) decoded (0 = all).
    #[arg(long, default_value_t = 0)]
    decode_sentences: usize,
    /// Where it runs: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: seq2seq_pipeline::DeviceChoice,
    /// Captioning: images per batch of the image-encoder figures.
    #[arg(long, default_value_t = 32)]
    image_batch: usize,
    /// Captioning: timed batches of the image-encoder figures (the median is reported).
    #[arg(long, default_value_t = 5)]
    image_reps: usize,
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: BenchArgs) -> Result<()> {
    let cfg = Config::from_file(&a.config)?;
    let model = a
        .model
        .clone()
        .or_else(|| bench::default_model(&cfg, &a.config));
    let data_dir = resolve_data_dir(a.data_dir.as_deref());
    if cfg.task == Task::Captioning {
        return run_captioning(&cfg, model, &data_dir, &a);
    }
    let process_model = model.clone();
    let o = BenchOptions {
        config: cfg,
        data_dir,
        model,
        train_steps: a.train_steps,
        warmup_steps: 5,
        decode_sentences: a.decode_sentences,
        device: a.device,
    };
    let r = bench::bench(&o)?;
    let process_ms = process_model.as_deref().map(process_cold_start_ms);
    if a.json {
        print_json(&r, process_ms);
    } else {
        print_text(&r, process_ms);
    }
    Ok(())
}

/// The image encoder's figures (no model needed), then a trained model's captioning figures when
/// there is one.
fn run_captioning(
    cfg: &Config,
    model: Option<PathBuf>,
    data_dir: &Path,
    a: &BenchArgs,
) -> Result<()> {
    let image = bench::bench_image_encoder(cfg, data_dir, a.image_batch, a.image_reps)?;
    let captions = model
        .map(|m| bench::bench_captioning(&m, data_dir, a.decode_sentences, a.device))
        .transpose()?;
    if a.json {
        let mut v = image_json(&image);
        if let Some(r) = &captions {
            v["captioning"] = captioning_json(r);
        }
        println!("{v}");
        return Ok(());
    }
    print_image(&image);
    match &captions {
        Some(r) => print_captioning(r),
        None => println!("(no trained model: pass --model DIR for the captioning figures)"),
    }
    Ok(())
}

fn image_json(r: &ImageBenchReport) -> serde_json::Value {
    serde_json::json!({
        "threads": r.threads, "backbone": r.backbone, "image_size": r.image_size,
        "batch": r.batch, "fine_tune_blocks": r.fine_tune_blocks, "checkpoint": r.checkpoint,
        "forward_images_per_s": r.forward_images_per_s,
        "train_images_per_s": r.train_images_per_s,
        "peak_rss_mb": r.peak_rss_mb,
    })
}

fn print_image(r: &ImageBenchReport) {
    println!("threads                       {}", r.threads);
    let weights = if r.checkpoint { "checkpoint" } else { "random" };
    println!(
        "image encoder                 {} at {}x{}, batch {} ({weights} weights)",
        r.backbone, r.image_size, r.image_size, r.batch
    );
    println!(
        "encoder forward (inference)   {:.1} images/s",
        r.forward_images_per_s
    );
    match (r.train_images_per_s, r.backbone) {
        (Some(t), "lite0") => println!(
            "encoder training step         {t:.1} images/s ({} blocks + head fine-tuned)",
            r.fine_tune_blocks
        ),
        (Some(t), _) => println!("encoder training step         {t:.1} images/s"),
        (None, _) => println!("encoder training step         - (the backbone is frozen)"),
    }
}

fn captioning_json(r: &CaptionBenchReport) -> serde_json::Value {
    serde_json::json!({
                "threads": r.threads, "images": r.images,
                "decode_images_per_s": r.decode_images_per_s,
                "encoder_images_per_s": r.encoder_images_per_s,
                "greedy_captions_per_s": r.greedy_captions_per_s,
                "beam3_captions_per_s": r.beam3_captions_per_s,
                "peak_rss_mb": r.peak_rss_mb,
    })
}

fn print_captioning(r: &CaptionBenchReport) {
    println!("test images                   {}", r.images);
    println!(
        "image decode + resize         {:.1} images/s",
        r.decode_images_per_s
    );
    println!(
        "image encoder (inference)     {:.1} images/s (batch 32)",
        r.encoder_images_per_s
    );
    println!(
        "greedy captioning             {:.1} images/s (encoder + search)",
        r.greedy_captions_per_s
    );
    println!(
        "beam-3 captioning             {:.1} images/s",
        r.beam3_captions_per_s
    );
    println!("peak resident memory          {:.0} MiB", r.peak_rss_mb);
}

/// The share of the best matmul throughput that training reaches.
fn flop_share(r: &BenchReport) -> f64 {
    r.flops_per_token * r.train_tokens_per_s / (r.matmul_gflops * 1e9)
}

fn print_json(r: &BenchReport, process_ms: Option<Result<f64, String>>) {
    println!(
        "{}",
        serde_json::json!({
            "threads": r.threads, "train_tokens_per_s": r.train_tokens_per_s, "train_steps": r.train_steps,
            "train_tokens_per_s_median": r.train_tokens_per_s_median,
            "peak_rss_mb": r.peak_rss_mb, "flops_per_token": r.flops_per_token,
            "matmul_gflops": r.matmul_gflops, "flop_share": flop_share(r),
            "phase_shares": {"forward": r.phase_shares[0], "backward": r.phase_shares[1], "clip_update": r.phase_shares[2]},
            "greedy_sent_per_s": r.greedy_sent_per_s, "beam5_sent_per_s": r.beam5_sent_per_s,
            "decode_sentences": r.decode_sentences, "cold_start_ms": r.cold_start_ms,
            "process_cold_start_ms": process_ms.as_ref().and_then(|p| p.as_ref().ok()),
            "process_cold_start_error": process_ms.as_ref().and_then(|p| p.as_ref().err()),
        })
    );
}

fn print_text(r: &BenchReport, process_ms: Option<Result<f64, String>>) {
    println!("threads                      {}", r.threads);
    println!(
        "training target tokens/s     {:.0} ({} timed steps)",
        r.train_tokens_per_s, r.train_steps
    );
    if let Some(m) = r.train_tokens_per_s_median {
        println!("  median of 20-step windows  {m:.0} (the first left out: the peer's statistic)");
    }
    let [fw, bw, up] = r.phase_shares.map(|p| 100.0 * p);
    println!(
        "  of a step                  forward {fw:.0} %, backward {bw:.0} %, clip + update {up:.0} %"
    );
    println!("peak resident memory         {:.0} MiB", r.peak_rss_mb);
    println!(
        "training FLOPs per token     {:.1} M (analytic, forward + backward)",
        r.flops_per_token / 1e6
    );
    println!(
        "best candle matmul           {:.1} GFLOP/s",
        r.matmul_gflops
    );
    println!(
        "share of matmul peak used    {:.1} %",
        100.0 * flop_share(r)
    );
    let (Some(g), Some(b), Some(c)) = (r.greedy_sent_per_s, r.beam5_sent_per_s, r.cold_start_ms)
    else {
        println!("decoding figures: no trained model (pass --model DIR)");
        return;
    };
    println!(
        "greedy decoding sentences/s  {g:.1} ({} test sentences, batch 64)",
        r.decode_sentences
    );
    println!("beam-5 decoding sentences/s  {b:.1}");
    println!("cold start (load + 1 sent.)  {c:.0} ms (in this process)");
    match process_ms {
        Some(Ok(p)) => {
            println!("`seq2seq translate`, 1 sent. {p:.0} ms (new process, median of 5)")
        }
        Some(Err(why)) => println!("`seq2seq translate`, 1 sent. not measured: {why}"),
        None => {}
    }
}

/// The median of five runs, so that one page-cache miss does not decide it; else why it could not run.
/// What a user waits for: a fresh `seq2seq translate` process loading the model and translating one
/// sentence (the in-process figure reuses pages the benchmark's training already faulted in).
fn process_cold_start_ms(model: &Path) -> Result<f64, String> {
    use std::io::Write as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(&exe)
            .arg("translate")
            .arg("--model")
            .arg(model)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(b"a man is walking a dog .\n")
                .map_err(|e| format!("cannot write to `seq2seq translate`: {e}"))?;
        }
        let status = child
            .wait()
            .map_err(|e| format!("`seq2seq translate` did not finish: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`seq2seq translate --model {}` failed ({status}); run it by hand to see why",
                model.display()
            ));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}
