//! SIGINT and SIGTERM during training: the first asks the loop to finish its step and write the
//! resume checkpoint; a second ends the process at once (every file is written under a temporary
//! name and renamed, so even then nothing is left half-written under its real name).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The run stopped on this signal after writing its resume checkpoint; exit with 128 + it.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handlers; the returned flag holds the first signal's number once one arrives.
pub(crate) fn stop_on_interrupt() -> std::io::Result<Arc<AtomicI32>> {
    let flag = Arc::new(AtomicI32::new(0));
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let seen = flag.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if seen.swap(sig, Ordering::SeqCst) != 0 {
                eprintln!("second signal: stopping now");
                std::process::exit(128 + sig);
            }
            eprintln!(
                "signal {sig}: finishing this step and writing the resume checkpoint (send it again to stop at once)"
            );
        }
    });
    Ok(flag)
}
