//! The pipeline's [`Observer`] for a terminal or a log: a progress bar with the running loss,
//! speed and learning rate when stderr is a terminal, else one line per `train.log_every` steps.
//! Log lines go above the bar.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use seq2seq_pipeline::observer::hms;
use seq2seq_pipeline::{Observer, StepReport};

pub(crate) struct TrainProgress {
    terminal: bool,
    bar: Option<ProgressBar>,
}

impl TrainProgress {
    pub(crate) fn stderr() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            bar: None,
        }
    }
}

impl Observer for TrainProgress {
    fn line(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn start(&mut self, step: usize, total: usize) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_position(step as u64);
        self.bar = Some(bar);
    }

    fn step(&mut self, r: &StepReport) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.step as u64);
                bar.set_message(format!(
                    "loss {:.3} | {:.0} tok/s | lr {:.1e}",
                    r.loss, r.tokens_per_s, r.lr
                ));
            }
            None if r.window_end => eprintln!(
                "step {} | epoch {} | loss {:.4} | {:.0} tok/s | lr {:.2e} | elapsed {}",
                r.step,
                r.epoch,
                r.loss,
                r.tokens_per_s,
                r.lr,
                hms(r.elapsed_s)
            ),
            None => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
