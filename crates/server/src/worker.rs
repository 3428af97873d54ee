//! One worker thread per model. It owns the model, takes jobs from a channel and decodes the
//! jobs that wait for the same model with the same options together (dynamic batching): it
//! gathers up to `max_batch` rows, waiting at most `max_wait` after the first job.
//!
//! Batching never changes a result by design: each row samples with its own request's seed
//! (`seed + i`, through `DecodingOptions::row_seeds`), and every other option is part of the
//! key that decides which jobs may share a batch. The async runtime never decodes: a handler
//! sends its job and awaits the reply.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use seq2seq_data::Vocab;
use seq2seq_decoder::{Candidate, DecodingOptions, TokenHook};
use seq2seq_pipeline::tasks::captioning::images::preprocess;
use seq2seq_pipeline::tasks::captioning::Captioned;
use seq2seq_pipeline::tasks::translation::{ContinuousTranslator, Translated};
use seq2seq_pipeline::{Captioner, Generator, Piece, Sample, Translator};
use tokio::sync::oneshot;

use crate::continuous;
use crate::error::ApiError;

/// A loaded model of any task.
pub enum Loaded {
    Translator(Translator),
    Captioner(Captioner),
    Generator(Generator),
}

/// What a request asks of its model.
pub enum Work {
    Translate(Vec<String>),
    /// Decoded pictures, not yet resized to the model's input size.
    Caption(Vec<RgbImage>),
    Generate {
        prompt: String,
        num: usize,
        /// Called with each token as it is chosen (streaming).
        stream: Option<PieceSink>,
    },
    /// The distribution of the token after `prompt`: its `top` most likely tokens.
    NextToken {
        prompt: String,
        top: usize,
    },
}

/// Takes each streamed piece; false when nobody listens any more (generation then stops).
pub type PieceSink = Box<dyn Fn(Piece) -> bool + Send + Sync>;

pub enum Output {
    /// Per text, its n-best list.
    Translated(Vec<Vec<Translated>>),
    /// Per image, its n-best list.
    Captioned(Vec<Vec<Captioned>>),
    Samples(Vec<Sample>),
    /// The candidates with the vocabulary's spelling of each.
    NextToken(Vec<(Candidate, String)>),
}

pub type Reply = oneshot::Sender<Result<Output, ApiError>>;

pub struct Job {
    pub work: Work,
    pub opts: DecodingOptions,
    pub reply: Reply,
    /// Set when nobody awaits the reply any more (the client left, or `--timeout-s` passed):
    /// a generation still running stops at its next token.
    pub abandoned: Arc<AtomicBool>,
    /// [`Job::key`], computed once when the job is made (it serialises the options).
    key: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Rows (texts or images) decoded together at most; one larger request still runs, alone.
    pub max_batch: usize,
    /// How long the first job of a batch waits for others.
    pub max_wait: Duration,
    /// The longest prompt a language model is primed with.
    pub max_prompt_tokens: usize,
}

impl Job {
    pub(crate) fn rows(&self) -> usize {
        match &self.work {
            Work::Translate(t) => t.len(),
            Work::Caption(i) => i.len(),
            Work::Generate { num, .. } => *num,
            Work::NextToken { .. } => 1,
        }
    }

    /// A job, its batching key computed once (every pass over the queue compares keys).
    pub fn new(
        work: Work,
        opts: DecodingOptions,
        reply: Reply,
        abandoned: Arc<AtomicBool>,
    ) -> Self {
        let key = batch_key(&work, &opts);
        Self {
            work,
            opts,
            reply,
            abandoned,
            key,
        }
    }

    /// Jobs with equal keys may share a batch; generation (a prompt each) never does.
    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// The batching key of a job: its kind and every option that can change an output.
fn batch_key(work: &Work, opts: &DecodingOptions) -> Option<String> {
    let kind = match work {
        Work::Translate(_) => "translate",
        Work::Caption(_) => "caption",
        Work::Generate { .. } | Work::NextToken { .. } => return None,
    };
    let mut o = opts.clone();
    o.seed = 0;
    o.row_seeds = None;
    // Every option that can change an output is serialised (the seed is per row), and the one
    // that changes what is returned.
    let attention = opts.attention;
    Some(format!(
        "{kind}{attention}{}",
        serde_json::to_string(&o).ok()?
    ))
}

/// What a worker has done, for `GET /health`.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub batches: AtomicU64,
}

/// Starts the worker of one model; it ends when every sender is dropped.
pub fn spawn(
    name: &str,
    model: Loaded,
    batching: Batching,
    stats: Arc<Stats>,
) -> std::io::Result<(Sender<Job>, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("model {name}"))
        .spawn(move || run(model, rx, batching, &stats))?;
    Ok((tx, handle))
}

fn run(model: Loaded, rx: Receiver<Job>, b: Batching, stats: &Stats) {
    let mut waiting = VecDeque::new();
    loop {
        let first = match waiting.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let batch = gather(first, &rx, &mut waiting, b);
        // A client that timed out or went away no longer waits for its result.
        let admissible = |j: Job| {
            (!j.reply.is_closed())
                .then_some(j)
                .and_then(|j| within_limits(&model, j, b.max_prompt_tokens))
        };
        let batch: Vec<Job> = batch.into_iter().filter_map(admissible).collect();
        if batch.is_empty() {
            continue;
        }
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        // A panic in a model must not take the worker down with it: the batch's requests are
        // answered by `App::submit` (their replies are dropped), the next batch runs.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match continuous_batch(&model, &batch) {
                Some(run) => {
                    continuous::serve(run, batch, &rx, &mut waiting, b, stats, &admissible)
                }
                None => decode(&model, batch, b.max_batch),
            }
        }));
    }
}

/// The running batch greedy translation jobs continue in, where it applies (see
/// [`continuous`]); `None` for everything else, which decodes batch by batch.
fn continuous_batch<'a>(model: &'a Loaded, batch: &[Job]) -> Option<ContinuousTranslator<'a>> {
    let (Loaded::Translator(t), Some(first)) = (model, batch.first()) else {
        return None;
    };
    if !matches!(first.work, Work::Translate(_)) {
        return None;
    }
    t.continuous(&first.opts).ok().flatten()
}

/// The job, or `None` after answering it with the error of its first input longer than the
/// model takes (a translation source over `data.max_src_len` tokens, a prompt over
/// `--max-prompt-tokens`). Tokenizing needs the model's vocabulary, so it happens here.
fn within_limits(model: &Loaded, job: Job, max_prompt: usize) -> Option<Job> {
    let check = |field: String, text: &str, vocab: &Vocab, max: usize, flag: &str| {
        let n = vocab
            .encode(text)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .len();
        if n > max {
            return Err(ApiError::unprocessable(
                "text_too_long",
                format!("{field}: {n} tokens, over the model's limit of {max} ({flag})"),
            ));
        }
        Ok(())
    };
    let verdict = match (model, &job.work) {
        (Loaded::Translator(t), Work::Translate(texts)) => {
            let max = t.config.data.max_src_len;
            texts.iter().enumerate().try_for_each(|(i, text)| {
                check(
                    format!("texts[{i}]"),
                    text,
                    &t.src_vocab,
                    max,
                    "data.max_src_len",
                )
            })
        }
        (Loaded::Generator(g), Work::Generate { prompt, .. } | Work::NextToken { prompt, .. }) => {
            check(
                "prompt".into(),
                prompt,
                g.vocab(),
                max_prompt,
                "--max-prompt-tokens",
            )
        }
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => Some(job),
        Err(e) => {
            let _ = job.reply.send(Err(e));
            None
        }
    }
}

/// The first job and the jobs that can join it, queued ones first; others wait their turn.
fn gather(first: Job, rx: &Receiver<Job>, waiting: &mut VecDeque<Job>, b: Batching) -> Vec<Job> {
    let Some(key) = first.key().map(str::to_owned) else {
        return vec![first];
    };
    let mut rows = first.rows();
    let mut batch = vec![first];
    let fits =
        |j: &Job, rows: usize| rows + j.rows() <= b.max_batch && j.key() == Some(key.as_str());
    let mut i = 0;
    while i < waiting.len() && rows < b.max_batch {
        if fits(&waiting[i], rows) {
            let j = waiting.remove(i).expect("index checked");
            rows += j.rows();
            batch.push(j);
        } else {
            i += 1;
        }
    }
    // Wait the whole window unless the batch fills, so that the clients answered by the previous
    // batch can join this one (docs/results.md, Serving: full batches at 64 connections).
    let deadline = Instant::now() + b.max_wait;
    while rows < b.max_batch {
        let job = match rx.try_recv() {
            Ok(j) => j,
            Err(_) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            },
        };
        if fits(&job, rows) {
            rows += job.rows();
            batch.push(job);
        } else {
            waiting.push_back(job);
        }
    }
    batch
}

/// Runs one generation job (never batched).
fn generate(g: &Generator, mut job: Job) {
    let abandoned = job.abandoned.clone();
    let out = match job.work {
        Work::Generate {
            prompt,
            num,
            stream: None,
        } => {
            job.opts.on_token = Some(TokenHook::new(move |_, _| {
                !abandoned.load(Ordering::Relaxed)
            }));
            g.generate(&prompt, num, &job.opts).map(Output::Samples)
        }
        Work::Generate {
            prompt,
            num,
            stream: Some(sink),
        } => {
            let go_on = move |p| !abandoned.load(Ordering::Relaxed) && sink(p);
            g.generate_streaming(&prompt, num, &job.opts, go_on)
                .map(Output::Samples)
        }
        Work::NextToken { prompt, top } => g.next_token(&prompt, &job.opts).map(|s| {
            let top = s.top(top);
            let names = g
                .vocab()
                .tokens(&top.iter().map(|c| c.token).collect::<Vec<_>>());
            Output::NextToken(top.into_iter().zip(names).collect())
        }),
        Work::Translate(_) | Work::Caption(_) => {
            return;
        }
    };
    let _ = job.reply.send(out.map_err(ApiError::from));
}

/// Runs one batch and answers each job with its own rows.
fn decode(model: &Loaded, mut batch: Vec<Job>, max_batch: usize) {
    if let Loaded::Generator(g) = model {
        if let Some(job) = batch.pop() {
            generate(g, job);
        }
        return;
    }
    let mut seeds = Vec::new();
    let mut spans: Vec<Range<usize>> = Vec::new();
    for j in &batch {
        let start = seeds.len();
        seeds.extend((0..j.rows() as u64).map(|i| j.opts.seed.wrapping_add(i)));
        spans.push(start..seeds.len());
    }
    let mut opts = batch[0].opts.clone();
    opts.row_seeds = Some(seeds);
    opts.batch_size = max_batch.max(1);
    let result = match model {
        Loaded::Translator(t) => {
            let texts: Vec<String> = batch.iter().flat_map(|j| texts(&j.work)).collect();
            t.translate_detailed(&texts, &opts)
                .map(|(n, _)| Output::Translated(n))
        }
        Loaded::Captioner(c) => {
            let size = c.config().data.image_size;
            let images: Vec<RgbImage> = batch
                .iter()
                .flat_map(|j| pictures(&j.work))
                .map(|img| preprocess(img, size))
                .collect();
            c.caption_images_detailed(&images, &opts)
                .map(Output::Captioned)
        }
        Loaded::Generator(_) => unreachable!("generation jobs are never batched"),
    };
    match result {
        Ok(Output::Translated(mut all)) => {
            for (job, span) in batch.into_iter().zip(spans).rev() {
                let rows = all.split_off(span.start);
                let _ = job.reply.send(Ok(Output::Translated(rows)));
            }
        }
        Ok(Output::Captioned(mut all)) => {
            for (job, span) in batch.into_iter().zip(spans).rev() {
                let rows = all.split_off(span.start);
                let _ = job.reply.send(Ok(Output::Captioned(rows)));
            }
        }
        Ok(_) => unreachable!("translators and captioners answer with n-best lists"),
        Err(e) => {
            let e = ApiError::from(e);
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

fn texts(w: &Work) -> impl Iterator<Item = String> + '_ {
    match w {
        Work::Translate(t) => t.as_slice(),
        _ => &[],
    }
    .iter()
    .cloned()
}

fn pictures(w: &Work) -> impl Iterator<Item = &RgbImage> {
    match w {
        Work::Caption(i) => i.as_slice(),
        _ => &[],
    }
    .iter()
}
