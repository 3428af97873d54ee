//! `seq2seq bench` for a captioning model: image decoding, the image encoder's throughput
//! (frozen + trainable parts, inference), and greedy and beam captions/s, on the test images.

use std::path::Path;
use std::time::Instant;

use seq2seq_decoder::{DecodingOptions, Strategy};

use crate::bench::peak_rss_mb;
use crate::tasks::captioning::corpus::{image_limits, load_captions};
use crate::tasks::captioning::images::preprocess;
use crate::tasks::captioning::Captioner;
use crate::tasks::Split;
use crate::{Error, Result};

#[derive(Debug, Default)]
pub struct CaptionBenchReport {
    pub threads: usize,
    pub images: usize,
    /// JPEG/PNG decoding + resize + crop.
    pub decode_images_per_s: f64,
    /// Through the whole image encoder (pixels → features), batch 32.
    pub encoder_images_per_s: f64,
    /// Images → captions (encoder + search), batch 32.
    pub greedy_captions_per_s: f64,
    pub beam3_captions_per_s: f64,
    pub peak_rss_mb: f64,
}

/// Measures a trained captioning model on the first `n` test images of its corpus (0 = all).
pub fn bench_captioning(
    model: &Path,
    data_dir: &Path,
    n: usize,
    device: crate::device::DeviceChoice,
) -> Result<CaptionBenchReport> {
    let c = Captioner::load_on(model, &device.resolve()?)?;
    let cfg = c.config().clone();
    let corpus = load_captions(&cfg.data, data_dir)?;
    let rows = if corpus.test.is_empty() {
        &corpus.valid
    } else {
        &corpus.test
    };
    let n = if n == 0 {
        rows.len()
    } else {
        n.min(rows.len())
    };
    if n == 0 {
        let split = if corpus.test.is_empty() {
            Split::Valid
        } else {
            Split::Test
        };
        return Err(Error::EmptySplit(split.name()));
    }
    let limits = image_limits(&cfg.data);
    let t = Instant::now();
    let images = rows[..n]
        .iter()
        .map(|r| {
            corpus.images[r.image]
                .load(&limits)
                .map(|img| preprocess(&img, cfg.data.image_size))
                .map_err(Error::Image)
        })
        .collect::<Result<Vec<_>>>()?;
    let decode = n as f64 / t.elapsed().as_secs_f64();
    let batch = 32;
    c.run_encoder(&images[..batch.min(n)], batch)?; // warm-up
    let t = Instant::now();
    c.run_encoder(&images, batch)?;
    let encoder = n as f64 / t.elapsed().as_secs_f64();
    let captions = |strategy: Strategy, beam: usize| -> Result<f64> {
        let opts = DecodingOptions {
            strategy,
            beam_size: beam,
            batch_size: batch,
            ..cfg.decoding.clone()
        };
        let t = Instant::now();
        c.caption_images(&images, &opts)?;
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    Ok(CaptionBenchReport {
        threads: candle_core::utils::get_num_threads(),
        images: n,
        decode_images_per_s: decode,
        encoder_images_per_s: encoder,
        greedy_captions_per_s: captions(Strategy::Greedy, 1)?,
        beam3_captions_per_s: captions(Strategy::Beam, 3)?,
        peak_rss_mb: peak_rss_mb(),
    })
}
