//! How long a request may take, and when it is retried.
//!
//! A transfer (one listing page, one model file, one byte range of a parquet file) is retried with
//! exponential backoff after a failure that may pass (connection refused or reset, a stall longer
//! than the timeout, 5xx, 429, a body cut short). Two budgets bound it, whatever the server does:
//! - `attempts` failures in a row that brought no byte end it;
//! - a deadline for the whole transfer, retries and waits included, that progress cannot move:
//!   the time `attempts` stalled attempts may take plus the bytes at [`MIN_THROUGHPUT`]. A server
//!   that sends 10 bytes and then stalls, every time, fails at that deadline.

use std::time::Duration;

use tokio::time::Instant;

/// The slowest transfer rate a transfer's deadline allows for (64 KiB/s).
pub const MIN_THROUGHPUT: u64 = 64 * 1024;

/// Longest wait between two attempts (the server's `Retry-After` included).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How requests are timed out and retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Failures in a row (without a byte of progress) before a transfer fails.
    pub attempts: u32,
    /// Wait after the first failure; doubles per failure, capped at 30 s.
    pub first_backoff: Duration,
    /// Longest wait for the server: to connect, for the headers, between two reads of a body.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// The binaries' defaults: 8 attempts, 500 ms first backoff, 60 s timeout.
    fn default() -> Self {
        RetryPolicy { attempts: 8, first_backoff: Duration::from_millis(500), timeout: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// The wait after failure number `failure` (from 0).
    pub fn backoff(&self, failure: u32) -> Duration {
        self.first_backoff.saturating_mul(1u32 << failure.min(16)).min(Duration::from_secs(30))
    }

    /// The most a transfer of `bytes` may take, all attempts and waits included.
    pub fn budget(&self, bytes: u64) -> Duration {
        let stalls: Duration = (0..self.attempts.max(1))
            .map(|i| self.timeout.saturating_add(self.backoff(i)))
            .fold(Duration::ZERO, Duration::saturating_add);
        stalls.saturating_add(Duration::from_secs(bytes / MIN_THROUGHPUT))
    }
}

/// Why one attempt stopped.
#[derive(Debug)]
pub enum Attempt {
    /// Worth retrying (what happened, the server's requested delay).
    Transient(String, Option<Duration>),
    /// Retrying cannot help (a 404, a malformed answer, a cap exceeded).
    Fatal(String),
}

/// The retry state of one transfer: failures in a row and the deadline.
pub struct Retrier {
    policy: RetryPolicy,
    start: Instant,
    deadline: Instant,
    budget: Duration,
    failures: u32,
    /// Where, for the warning logged before each retry.
    what: String,
}

impl Retrier {
    /// A transfer of `bytes` (its expected or its largest size) starting now.
    pub fn new(policy: RetryPolicy, bytes: u64, what: String) -> Retrier {
        let budget = policy.budget(bytes);
        let start = Instant::now();
        Retrier { policy, start, deadline: start + budget, budget, failures: 0, what }
    }

    /// Once the size is known (`Content-Length`): the deadline becomes that of `bytes`, still
    /// counted from the start.
    pub fn set_bytes(&mut self, bytes: u64) {
        self.budget = self.policy.budget(bytes);
        self.deadline = self.start + self.budget;
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The message when the deadline passes.
    pub fn deadline_message(&self) -> String {
        format!("not done within its time budget of {:.0} s ({} attempts of --http-timeout {} s plus the bytes at 64 KiB/s)", self.budget.as_secs_f64(), self.policy.attempts, self.policy.timeout.as_secs())
    }

    /// Counts a failed attempt (one that brought bytes starts the count again) and waits before
    /// the next one. Err(message) when the transfer must give up.
    pub async fn failed(&mut self, what: &str, delay: Option<Duration>, progressed: bool) -> Result<(), String> {
        if progressed {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures >= self.policy.attempts {
            return Err(format!("{what} (giving up after {} failed attempts in a row)", self.failures));
        }
        let wait = delay.unwrap_or_else(|| self.policy.backoff(self.failures - 1)).min(MAX_WAIT);
        if Instant::now() + wait >= self.deadline {
            return Err(format!("{what}; {}", self.deadline_message()));
        }
        tracing::warn!("{}: {what}; retry {} in {:.1}s", self.what, self.failures, wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_with_size_and_attempts_only() {
        let p = RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(100), timeout: Duration::from_secs(1) };
        // 3 × 1 s + 0.1 + 0.2 + 0.4 s of backoff, plus 1 s per 64 KiB.
        assert_eq!(p.budget(0), Duration::from_millis(3700));
        assert_eq!(p.budget(10 * MIN_THROUGHPUT), Duration::from_millis(13700));
        assert_eq!(RetryPolicy { attempts: 0, ..p }.budget(0), Duration::from_millis(1100));
    }
}
