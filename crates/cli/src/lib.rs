//! The `seq2seq` command line as a library: [`main`] parses the flags and dispatches to one
//! function per subcommand (`cmd/<name>.rs`); the work is in `seq2seq-pipeline`. The binary (the
//! root package's `src/main.rs`) only installs the allocator and calls [`main`].

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

mod args;
mod cmd;
mod progress;
mod signals;

use args::{Cli, Command};

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Translate(a) => cmd::translate::run(a),
        Command::Caption(a) => cmd::caption::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::ScoreModel(a) => cmd::score_model::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Average(a) => cmd::average::run(a),
        Command::Plot(a) => cmd::plot::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Data { action } => cmd::data::run(action),
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
