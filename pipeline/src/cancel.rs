//! Network waits that a stop request (SIGINT/SIGTERM, `mamba_shards::stop_signal`) cuts short: a
//! request, a body that stalls, a retry backoff. The future doing the work is raced against the
//! stop flag and dropped when the flag wins, which abandons its connection or sleep at once
//! instead of when a timeout would end it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Interrupted;

/// How often the stop flag is looked at while a network wait is in progress.
const POLL: Duration = Duration::from_millis(50);

/// Resolves once `stop` is raised.
pub async fn stop_requested(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(POLL).await;
    }
}

/// The output of `work`, or `Interrupted` as soon as `stop` is raised (`work` is then dropped).
pub async fn unless_stopped<F: Future>(stop: &AtomicBool, work: F) -> Result<F::Output, Interrupted> {
    tokio::select! {
        biased;
        () = stop_requested(stop) => Err(Interrupted),
        out = work => Ok(out),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_stop_cuts_a_long_wait_short_and_work_that_ends_first_wins() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        assert_eq!(rt.block_on(unless_stopped(&stop, async { 7 })).unwrap(), 7);
        let flag = stop.clone();
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let t = Instant::now();
        let out = rt.block_on(unless_stopped(&stop, async { tokio::time::sleep(Duration::from_secs(60)).await }));
        assert!(out.is_err() && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        raiser.join().unwrap();
    }
}
