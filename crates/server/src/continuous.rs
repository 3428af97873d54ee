//! Continuous batching of greedy translation jobs: a job's lines join the running search at the
//! next step, and each job is answered as soon as its last line ends, so that no request waits
//! for the longest sentence of a batch it happened to share (docs/results.md, Serving). Jobs
//! with other options wait until the running batch drains; while one waits, no new line joins.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use seq2seq_pipeline::tasks::translation::{ContinuousTranslator, Translated};

use crate::error::ApiError;
use crate::worker::{Batching, Job, Output, Stats, Work};

/// A job in the running batch and the translations of its lines so far.
struct Pending {
    job: Job,
    lines: Vec<Option<Translated>>,
    left: usize,
}

/// The running batch: its translator and the jobs whose lines are in it.
struct Running<'a> {
    run: ContinuousTranslator<'a>,
    jobs: HashMap<u64, Pending>,
    next: u64,
    key: Option<String>,
}

/// A line's id: its job's number and its index in the job.
const LINE_BITS: u32 = 24;

impl Running<'_> {
    /// Adds jobs' lines to the batch in one encoder pass (a job without lines is answered at
    /// once; an error answers every job of the call).
    fn admit(&mut self, jobs: Vec<Job>) {
        let (mut texts, mut ids) = (Vec::new(), Vec::new());
        let mut joining = Vec::new();
        for job in jobs {
            let lines = match &job.work {
                Work::Translate(t) => t.clone(),
                _ => Vec::new(),
            };
            if lines.is_empty() {
                let _ = job.reply.send(Ok(Output::Translated(Vec::new())));
                continue;
            }
            let n = self.next;
            self.next += 1;
            ids.extend((0..lines.len() as u64).map(|i| (n << LINE_BITS) | i));
            let left = lines.len();
            texts.extend(lines);
            joining.push((
                n,
                Pending {
                    job,
                    lines: vec![None; left],
                    left,
                },
            ));
        }
        if joining.is_empty() {
            return;
        }
        if let Err(e) = self.run.admit(&texts, &ids) {
            let e = ApiError::from(e);
            for (_, p) in joining {
                let _ = p.job.reply.send(Err(e.clone()));
            }
            return;
        }
        self.jobs.extend(joining);
    }

    /// One step; answers the jobs whose last line ended. An error answers every job.
    fn step(&mut self) -> bool {
        let ended = match self.run.step() {
            Ok(e) => e,
            Err(e) => {
                let e = ApiError::from(e);
                for (_, p) in self.jobs.drain() {
                    let _ = p.job.reply.send(Err(e.clone()));
                }
                return false;
            }
        };
        for (id, t) in ended {
            let n = id >> LINE_BITS;
            let Some(p) = self.jobs.get_mut(&n) else {
                continue;
            };
            p.lines[(id & ((1 << LINE_BITS) - 1)) as usize] = Some(t);
            p.left -= 1;
            if p.left == 0 {
                let p = self.jobs.remove(&n).expect("present");
                let rows = p.lines.into_iter().flatten().map(|t| vec![t]).collect();
                let _ = p.job.reply.send(Ok(Output::Translated(rows)));
            }
        }
        true
    }
}

/// Runs `first` (jobs of one key) and every job of the same key that arrives while the batch
/// runs, until it drains. `admissible` filters a job before it joins (limits, a client gone).
pub(crate) fn serve(
    run: ContinuousTranslator<'_>,
    first: Vec<Job>,
    rx: &Receiver<Job>,
    waiting: &mut VecDeque<Job>,
    b: Batching,
    stats: &Stats,
    admissible: &dyn Fn(Job) -> Option<Job>,
) {
    let key = first.first().and_then(|j| j.key().map(str::to_owned));
    let mut r = Running {
        run,
        jobs: HashMap::new(),
        next: 0,
        key,
    };
    r.admit(first);
    loop {
        let joined = join(&mut r, rx, waiting, b, admissible);
        if joined > 0 {
            stats.requests.fetch_add(joined as u64, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        if r.run.is_empty() || !r.step() {
            return;
        }
    }
}

/// Admits the queued and newly arrived jobs of the batch's key while there is room and no job
/// of another kind waits; returns how many joined. New lines join only once a quarter of the
/// batch is free: each joining costs an encoder pass and a copy of the running memory, which a
/// few rows at every step would pay too often.
fn join(
    r: &mut Running,
    rx: &Receiver<Job>,
    waiting: &mut VecDeque<Job>,
    b: Batching,
    admissible: &dyn Fn(Job) -> Option<Job>,
) -> usize {
    let running = r.run.len();
    let free = b.max_batch.saturating_sub(running);
    if running > 0 && free < b.max_batch / 4 {
        return 0;
    }
    let mut rows = running;
    let mut jobs = Vec::new();
    loop {
        if waiting.iter().any(|j| j.key() != r.key.as_deref()) {
            break;
        }
        let job = match waiting.pop_front() {
            Some(j) => j,
            None => match rx.try_recv() {
                Ok(j) => j,
                Err(_) => break,
            },
        };
        let fits = rows + job.rows() <= b.max_batch || rows == 0;
        if job.key() != r.key.as_deref() || !fits {
            waiting.push_front(job);
            break;
        }
        if let Some(job) = admissible(job) {
            rows += job.rows();
            jobs.push(job);
        }
    }
    let joined = jobs.len();
    r.admit(jobs);
    joined
}
