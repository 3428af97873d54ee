//! The `seq2seq` command line as a library: [`main`] parses the flags and dispatches to one
//! function per mode; the work is in `seq2seq-pipeline`. The binary (the root package's
//! `src/main.rs`) only installs the allocator and calls [`main`].

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use seq2seq_pipeline::{
    default_out, diversity, resolve_data_dir, train, Config, Generator, TrainOptions,
};

mod args;
mod commands;
mod data;
mod signals;

use args::{Cli, Command};
use commands::{caption, eval_captions, process_cold_start_ms, read_stdin_lines, score};

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Caption {
            model,
            json,
            hflip_average,
            ensemble,
            decoding,
            images,
        } => {
            let mut c = ensemble.load_captioner(&model)?;
            c.set_hflip_average(hflip_average);
            caption(&c, &images, json, &decoding)
        }
        Command::Bench {
            config,
            data_dir,
            model,
            train_steps,
            decode_sentences,
            json,
        } => {
            let cfg = Config::from_file(&config)?;
            let model = model.or_else(|| seq2seq_pipeline::bench::default_model(&cfg, &config));
            if cfg.task == seq2seq_pipeline::config::Task::Captioning {
                let model = model.ok_or_else(|| {
                    anyhow::anyhow!("a captioning bench needs a trained model: pass --model DIR")
                })?;
                let r = seq2seq_pipeline::bench_caption::bench_captioning(
                    &model,
                    &resolve_data_dir(data_dir.as_deref()),
                    decode_sentences,
                )?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "threads": r.threads, "images": r.images,
                            "decode_images_per_s": r.decode_images_per_s,
                            "encoder_images_per_s": r.encoder_images_per_s,
                            "greedy_captions_per_s": r.greedy_captions_per_s,
                            "beam3_captions_per_s": r.beam3_captions_per_s,
                            "peak_rss_mb": r.peak_rss_mb,
                        })
                    );
                } else {
                    println!("threads                       {}", r.threads);
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
                return Ok(());
            }
            let process_model = model.clone();
            let o = seq2seq_pipeline::bench::BenchOptions {
                config: cfg,
                data_dir: resolve_data_dir(data_dir.as_deref()),
                model,
                train_steps,
                warmup_steps: 5,
                decode_sentences,
            };
            let r = seq2seq_pipeline::bench::bench(&o)?;
            let share = r.flops_per_token * r.train_tokens_per_s / (r.matmul_gflops * 1e9);
            let process_ms = process_model.as_deref().map(process_cold_start_ms);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "threads": r.threads, "train_tokens_per_s": r.train_tokens_per_s, "train_steps": r.train_steps,
                        "train_tokens_per_s_median": r.train_tokens_per_s_median,
                        "peak_rss_mb": r.peak_rss_mb, "flops_per_token": r.flops_per_token,
                        "matmul_gflops": r.matmul_gflops, "flop_share": share,
                        "phase_shares": {"forward": r.phase_shares[0], "backward": r.phase_shares[1], "clip_update": r.phase_shares[2]},
                        "greedy_sent_per_s": r.greedy_sent_per_s, "beam5_sent_per_s": r.beam5_sent_per_s,
                        "decode_sentences": r.decode_sentences, "cold_start_ms": r.cold_start_ms,
                        "process_cold_start_ms": process_ms.as_ref().and_then(|p| p.as_ref().ok()),
                        "process_cold_start_error": process_ms.as_ref().and_then(|p| p.as_ref().err()),
                    })
                );
            } else {
                println!("threads                      {}", r.threads);
                println!(
                    "training target tokens/s     {:.0} ({} timed steps)",
                    r.train_tokens_per_s, r.train_steps
                );
                if let Some(m) = r.train_tokens_per_s_median {
                    println!(
                        "  median of 20-step windows  {m:.0} (the first left out: the peer's statistic)"
                    );
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
                println!("share of matmul peak used    {:.1} %", 100.0 * share);
                match (r.greedy_sent_per_s, r.beam5_sent_per_s, r.cold_start_ms) {
                    (Some(g), Some(b), Some(c)) => {
                        println!(
                            "greedy decoding sentences/s  {g:.1} ({} test sentences, batch 64)",
                            r.decode_sentences
                        );
                        println!("beam-5 decoding sentences/s  {b:.1}");
                        println!("cold start (load + 1 sent.)  {c:.0} ms (in this process)");
                        match process_ms {
                            Some(Ok(p)) => println!(
                                "`seq2seq translate`, 1 sent. {p:.0} ms (new process, median of 5)"
                            ),
                            Some(Err(why)) => {
                                println!("`seq2seq translate`, 1 sent. not measured: {why}")
                            }
                            None => {}
                        }
                    }
                    _ => println!("decoding figures: no trained model (pass --model DIR)"),
                }
            }
            Ok(())
        }
        Command::Average { out, checkpoints } => {
            let n = seq2seq_pipeline::average::average(&checkpoints, &out)?;
            eprintln!(
                "averaged {n} tensors over {} checkpoints into {}",
                checkpoints.len(),
                out.display()
            );
            Ok(())
        }
        Command::Score {
            refs,
            hyp,
            metrics,
            lowercase,
            tokenize,
            smooth_method,
            smooth_value,
            json,
        } => score(
            &refs,
            hyp.as_deref(),
            &metrics,
            lowercase,
            &tokenize,
            &smooth_method,
            smooth_value,
            json,
        ),
        Command::Eval {
            model,
            ensemble,
            split,
            data_dir,
            output,
            json,
            hflip_average,
            decoding,
        } => {
            let split = match split.as_str() {
                "valid" => seq2seq_pipeline::Split::Valid,
                "test" => seq2seq_pipeline::Split::Test,
                other => anyhow::bail!("--split: expected valid or test, got `{other}`"),
            };
            let name = if split == seq2seq_pipeline::Split::Valid {
                "valid"
            } else {
                "test"
            };
            // A checkpoint file names its hypotheses after itself, beside it.
            let (dir, weights) = seq2seq_pipeline::checkpoint::checkpoint_file(&model);
            let output = output.unwrap_or_else(|| {
                if model.is_dir() {
                    model.join(format!("hyp.{name}.txt"))
                } else {
                    let stem = weights.strip_suffix(".safetensors").unwrap_or(&weights);
                    dir.join(format!("hyp.{stem}.{name}.txt"))
                }
            });
            let task = Config::from_file(&dir.join("config.yaml")).map(|c| c.task);
            if let Ok(seq2seq_pipeline::config::Task::Captioning) = task {
                let mut c = ensemble.load_captioner(&model)?;
                c.set_hflip_average(hflip_average);
                return eval_captions(&c, split, name, data_dir, &output, json, &decoding);
            }
            if hflip_average {
                anyhow::bail!("--hflip-average: applies to captioning models only");
            }
            let t = ensemble.load(&model)?;
            let opts = decoding.apply(&t.config.decoding)?;
            let r = seq2seq_pipeline::evaluate(
                &t,
                split,
                &resolve_data_dir(data_dir.as_deref()),
                &opts,
            )?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let mut text = r.hypotheses.join("\n");
            text.push('\n');
            seq2seq_pipeline::checkpoint::write_atomic(&output, text.as_bytes())?;
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
            } else {
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
            Ok(())
        }
        Command::Data { action } => data::run(action),
        Command::Generate {
            model,
            prompt,
            max_tokens,
            num,
            stats,
            decoding,
        } => {
            let g = Generator::load(&model)?;
            let mut opts = decoding.apply(&g.config().decoding)?;
            if let Some(m) = max_tokens {
                opts.max_length = m;
                opts.validate()
                    .map_err(|e| anyhow::anyhow!("invalid decoding options:\n{e}"))?;
            }
            anyhow::ensure!(num >= 1, "--num must be at least 1");
            let prompts = match prompt {
                Some(p) => vec![p],
                None => read_stdin_lines()?,
            };
            let mut stdout = std::io::stdout().lock();
            let mut all = Vec::new();
            for p in &prompts {
                for s in g.generate(p, num, &opts)? {
                    writeln!(stdout, "{}", s.text)?;
                    all.push(s);
                }
            }
            if stats {
                let toks: Vec<Vec<u32>> = all.iter().map(|s| s.tokens.clone()).collect();
                let (d2, r4) = diversity(&toks);
                let n: usize = toks.iter().map(|t| t.len()).sum();
                let lp: f64 = all.iter().map(|s| s.log_prob).sum::<f64>() / n.max(1) as f64;
                eprintln!(
                    "samples: {} | distinct-2: {d2:.3} | repeated-4-gram rate: {r4:.3} | mean log-prob/token: {lp:.3}",
                    all.len()
                );
            }
            Ok(())
        }
        Command::Train {
            config,
            data_dir,
            out,
            resume,
            max_steps,
            max_time_s,
            seed,
        } => {
            let cfg = Config::from_file(&config)?;
            for w in cfg.warnings() {
                eprintln!("warning: {}: {w}", config.display());
            }
            let out = out.unwrap_or_else(|| default_out(&cfg, &config));
            let opts = TrainOptions {
                data_dir: resolve_data_dir(data_dir.as_deref()),
                out,
                resume,
                max_steps,
                max_time_s,
                seed,
                quiet: false,
                stop: Some(signals::stop_on_interrupt()?),
                inject_nonfinite: Vec::new(),
            };
            let summary = train(cfg, &opts)?;
            if let Some(signal) = summary.interrupted {
                return Err(signals::Interrupted(signal).into());
            }
            eprintln!("model written to {}", summary.out.display());
            Ok(())
        }
        Command::Translate {
            model,
            ensemble,
            decoding,
            text,
        } => {
            let t = ensemble.load(&model)?;
            let opts = decoding.apply(&t.config.decoding)?;
            let lines = if text.is_empty() {
                let mut lines = Vec::new();
                for (i, l) in std::io::stdin().lock().lines().enumerate() {
                    lines
                        .push(l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?);
                }
                lines
            } else {
                text
            };
            let (outs, warnings) = t.translate_nbest(&lines, &opts)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let mut stdout = std::io::stdout().lock();
            for (i, nbest) in outs.iter().enumerate() {
                if opts.n_best > 1 {
                    for (text, score) in nbest {
                        writeln!(stdout, "{i}\t{score:.4}\t{text}")?;
                    }
                } else {
                    writeln!(stdout, "{}", nbest[0].0)?;
                }
            }
            Ok(())
        }
    }
}

/// Parses the process's arguments, runs the command, and renders an error as its chain of
/// causes (no backtrace: these are user-facing messages).
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The run said where its resume checkpoint is; the status is the shell's for the signal.
        Err(e) if e.downcast_ref::<signals::Interrupted>().is_some() => {
            let signals::Interrupted(s) = e.downcast_ref().expect("checked");
            ExitCode::from(128u8.saturating_add(*s as u8))
        }
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
