//! SIGINT and SIGTERM, handled the same way by both binaries. The first one raises a stop flag
//! that every wait of the program watches (network reads, retry backoff, a full ring, a trainer
//! waiting for shards), so the program winds down within a moment, leaves its directory
//! consistent and exits with status 128 + the signal's number (130 for SIGINT, 143 for SIGTERM),
//! as a shell or a job scheduler expects of a process a signal stopped. A second signal exits at
//! once, with 128 + that signal.
//!
//! The signals are received on a thread of their own (signal-hook's self-pipe), so the handler
//! itself only writes to a pipe, and printing and exiting happen in ordinary code.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

pub use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Runs the blocking `work` (a model-file download, say) on a thread of its own and waits for it,
/// or for `stop`, whichever comes first: `None` when `stop` was raised first (the thread is left
/// to end with the process; a download then leaves at most a temporary `.part` file in its cache).
/// A panic of `work` is passed on.
pub fn run_unless_stopped<T: Send + 'static>(
    stop: &AtomicBool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let worker = std::thread::spawn(work);
    while !worker.is_finished() {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// The stop request of a process; see the module doc.
#[derive(Debug, Clone)]
pub struct StopSignals {
    stop: Arc<AtomicBool>,
    /// The first signal received; 0 = none yet.
    first: Arc<AtomicI32>,
}

impl StopSignals {
    /// Installs the SIGINT/SIGTERM handling. `on_first` is printed (on stderr) after the name of
    /// the first signal, e.g. "finishing the current step, then saving a checkpoint".
    pub fn install(on_first: &'static str) -> std::io::Result<StopSignals> {
        let s = StopSignals { stop: Arc::new(AtomicBool::new(false)), first: Arc::new(AtomicI32::new(0)) };
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let (stop, first) = (s.stop.clone(), s.first.clone());
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                if first.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                    eprintln!("{}: second stop signal, exiting now (status {})", name(sig), exit_status(sig));
                    std::process::exit(i32::from(exit_status(sig)));
                }
                stop.store(true, Ordering::SeqCst);
                eprintln!("{}: {on_first} (a second signal exits at once)", name(sig));
            }
        })?;
        Ok(s)
    }

    /// The flag the program's waits watch. Raising it by hand stops the program like a signal,
    /// without a signal being recorded.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<i32> {
        Some(self.first.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }

    /// 128 + the first signal received, for the process's exit status; `None` before any.
    pub fn exit_status(&self) -> Option<u8> {
        self.received().map(exit_status)
    }
}

/// 128 + `signal`: the exit status of a process that a signal stopped.
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(u8::MAX)
}

fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_unless_stopped_gives_the_result_or_returns_at_once_on_a_stop() {
        let stop = AtomicBool::new(false);
        assert_eq!(run_unless_stopped(&stop, || 7), Some(7));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let t = std::time::Instant::now();
        let out = run_unless_stopped(&stop, || std::thread::sleep(std::time::Duration::from_secs(60)));
        assert!(out.is_none() && t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn exit_status_is_128_plus_the_signal() {
        assert_eq!((exit_status(SIGINT), exit_status(SIGTERM)), (130, 143));
    }
}
