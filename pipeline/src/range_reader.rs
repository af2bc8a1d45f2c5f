//! Random access to one parquet file, local or over HTTP Range requests, as parquet's
//! `AsyncFileReader`: the footer first, then only the column chunks that are asked for. Nothing
//! is downloaded whole and nothing is kept on disk.
//!
//! HTTP failures that may pass (connection reset or timeout mid-body, 5xx, 429, a body shorter
//! than asked) are retried with exponential backoff, and a broken body resumes at the byte where it
//! stopped. A range only fails after `retries` attempts in a row that brought no byte.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// How HTTP requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl RetryPolicy {
    fn backoff(&self, failure: u32) -> Duration {
        let d = self.first_backoff.saturating_mul(1u32 << failure.min(16));
        d.min(Duration::from_secs(30))
    }
}

/// An HTTP client plus what every request needs.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub token: Option<Arc<str>>,
    pub retry: RetryPolicy,
}

impl Http {
    pub fn new(token: Option<String>, retry: RetryPolicy, timeout: Duration) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(timeout)
            .user_agent(concat!("mamba-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client, token: token.map(Arc::from), retry })
    }
}

#[derive(Clone)]
enum Location {
    Local(Arc<std::fs::File>),
    Http { http: Http, url: String },
}

/// One source file; cheap to clone (the parquet stream builder takes it by value).
#[derive(Clone)]
pub struct RangeReader {
    /// Name used in messages (path or URL).
    name: String,
    size: u64,
    location: Location,
    /// Bytes read from the file so far, shared with the progress display.
    bytes_read: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("{name}: reading bytes {start}..{end}: {what}")]
    Failed { name: String, start: u64, end: u64, what: String },
}

impl RangeReader {
    pub fn local(path: &std::path::Path, bytes_read: Arc<AtomicU64>) -> std::io::Result<RangeReader> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Ok(RangeReader { name: path.display().to_string(), size, location: Location::Local(Arc::new(file)), bytes_read })
    }

    pub fn http(http: Http, url: String, size: u64, bytes_read: Arc<AtomicU64>) -> RangeReader {
        RangeReader { name: url.clone(), size, location: Location::Http { http, url }, bytes_read }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes `range` of the file.
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes, RangeError> {
        let fail = |what: String| RangeError::Failed { name: self.name.clone(), start: range.start, end: range.end, what };
        if range.end > self.size || range.start > range.end {
            return Err(fail(format!("outside the file of {} bytes", self.size)));
        }
        let bytes = match &self.location {
            Location::Local(file) => {
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                std::os::unix::fs::FileExt::read_exact_at(file.as_ref(), &mut buf, range.start).map_err(|e| fail(e.to_string()))?;
                Bytes::from(buf)
            }
            Location::Http { http, url } => fetch_with_retries(http, url, range.clone()).await.map_err(fail)?,
        };
        self.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// Why one HTTP attempt stopped.
enum Attempt {
    /// Worth retrying (what, server-requested delay).
    Transient(String, Option<Duration>),
    Fatal(String),
}

async fn fetch_with_retries(http: &Http, url: &str, range: Range<u64>) -> Result<Bytes, String> {
    let want = (range.end - range.start) as usize;
    let mut buf = BytesMut::with_capacity(want);
    let mut failures = 0u32;
    while buf.len() < want {
        let start = range.start + buf.len() as u64;
        let before = buf.len();
        match fetch_once(http, url, start..range.end, &mut buf).await {
            Ok(()) if buf.len() >= want => break,
            Ok(()) => {
                let what = format!("body ended after {} of {} bytes", buf.len() - before, range.end - start);
                failures = retry_or_give_up(http, url, &what, None, &mut failures, buf.len() > before).await?;
            }
            Err(Attempt::Transient(what, delay)) => {
                failures = retry_or_give_up(http, url, &what, delay, &mut failures, buf.len() > before).await?;
            }
            Err(Attempt::Fatal(what)) => return Err(what),
        }
    }
    Ok(buf.freeze())
}

/// Counts a failure (a failure that still brought bytes starts the count again), sleeps the
/// backoff, and gives up after `attempts` failures in a row.
async fn retry_or_give_up(http: &Http, url: &str, what: &str, delay: Option<Duration>, failures: &mut u32, progressed: bool) -> Result<u32, String> {
    if progressed {
        *failures = 0;
    }
    *failures += 1;
    if *failures >= http.retry.attempts {
        return Err(format!("{what} (giving up after {} failed attempts in a row)", *failures));
    }
    let wait = delay.unwrap_or_else(|| http.retry.backoff(*failures - 1)).min(Duration::from_secs(60));
    tracing::warn!("{url}: {what}; retry {} in {:.1}s", *failures, wait.as_secs_f64());
    tokio::time::sleep(wait).await;
    Ok(*failures)
}

/// One GET with a Range header; appends what arrives to `buf` (even when the body breaks).
async fn fetch_once(http: &Http, url: &str, range: Range<u64>, buf: &mut BytesMut) -> Result<(), Attempt> {
    let mut req = http.client.get(url).header(reqwest::header::RANGE, format!("bytes={}-{}", range.start, range.end - 1));
    if let Some(t) = &http.token {
        req = req.bearer_auth(t);
    }
    let mut resp = req.send().await.map_err(|e| Attempt::Transient(format!("request failed: {}", error_chain(&e)), None))?;
    let status = resp.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Attempt::Transient(format!("HTTP {status}"), retry_after));
    }
    if status == reqwest::StatusCode::OK {
        return Err(Attempt::Fatal("the server ignored the Range header (HTTP 200): refusing to download the whole file".into()));
    }
    if status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(Attempt::Fatal(format!("HTTP {status}")));
    }
    let want = (range.end - range.start) as usize;
    let start_len = buf.len();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() - start_len + chunk.len() > want {
                    return Err(Attempt::Fatal(format!("the server sent more than the {want} bytes asked for")));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(Attempt::Transient(format!("body broke after {} bytes: {}", buf.len() - start_len, error_chain(&e)), None)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.read(range).await.map_err(|e| ParquetError::External(Box::new(e))) }.boxed()
    }

    fn get_metadata<'a>(&'a mut self, options: Option<&'a ArrowReaderOptions>) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            // One request for the last 64 KiB normally brings the whole footer.
            let reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(64 * 1024)).with_arrow_reader_options(options);
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}
