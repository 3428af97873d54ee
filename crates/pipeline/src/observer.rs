//! How the pipeline reports progress. A library never prints: training, data preparation and the
//! image feature cache tell an [`Observer`], which the CLI draws as a progress bar or plain log
//! lines, a server can turn into log records, and tests leave silent (`()`).

/// The running figures of a training step, averaged over the current `train.log_every` window.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Steps done, from 1.
    pub step: usize,
    /// The epoch, from 1.
    pub epoch: usize,
    /// Mean loss per target token over the window.
    pub loss: f64,
    pub tokens_per_s: f64,
    pub lr: f64,
    /// Training time in total, a resumed run's earlier time included.
    pub elapsed_s: f64,
    /// This step closes a `train.log_every` window: a line-per-window log writes it now.
    pub window_end: bool,
}

/// Receives a run's progress. Every method has an empty default.
pub trait Observer {
    /// A line of the run's log: data summaries, validation reports, warnings, the stop reason.
    fn line(&mut self, _msg: &str) {}
    /// The training loop starts (or resumes) at `step` of `total`.
    fn start(&mut self, _step: usize, _total: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// The training loop ended (what follows is the final evaluation).
    fn finish(&mut self) {}
}

/// Silence.
impl Observer for () {}

/// `hh:mm:ss`.
pub fn hms(seconds: f64) -> String {
    let s = seconds as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
