//! Random access to one parquet file, local or over HTTP Range requests, as parquet's
//! `AsyncFileReader`: the footer first, then only the column chunks that are asked for. Nothing
//! is downloaded whole and nothing is kept on disk.
//!
//! HTTP failures that may pass (connection reset or timeout mid-body, 5xx, 429, a body shorter
//! than asked) are retried with exponential backoff, and a broken body resumes at the byte where it
//! stopped. A range fails after `retries` attempts in a row that brought no byte, or when its
//! deadline passes (`mamba_shards::hub::retry`: progress cannot postpone it), naming the byte it
//! stopped at. Every 206 must carry the `Content-Range` asked for; the footer's length is checked
//! against the file size and [`MAX_FOOTER`] before it is fetched.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt};
use mamba_shards::hub::client::{check_status, error_chain, Answer};
use mamba_shards::hub::endpoint::display_url;
use mamba_shards::hub::retry::{Attempt, Retrier};
use mamba_shards::hub::{Endpoint, HubClient};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use reqwest::Url;

pub use mamba_shards::hub::RetryPolicy;

/// The largest parquet footer (file metadata) accepted: 64 MiB, far above real files' (FineWeb's
/// are well under 1 MiB), so a lying length cannot make us fetch gigabytes into memory.
pub const MAX_FOOTER: u64 = 64 << 20;

/// Bytes fetched from the end of a file in the first request; normally the whole footer.
const FOOTER_PREFETCH: u64 = 64 * 1024;

/// The Hub client every range request goes through (token only to the endpoint's origin).
#[derive(Clone)]
pub struct Http {
    pub hub: HubClient,
}

impl Http {
    pub fn new(endpoint: Endpoint, token: Option<String>, retry: RetryPolicy) -> anyhow::Result<Http> {
        let hub = HubClient::new(endpoint, token, retry, concat!("mamba-pipeline/", env!("CARGO_PKG_VERSION")))?;
        Ok(Http { hub })
    }
}

#[derive(Clone)]
enum Location {
    Local(Arc<std::fs::File>),
    /// The client is boxed: it is large beside a file handle.
    Http {
        http: Box<Http>,
        url: Url,
    },
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
        Ok(RangeReader {
            name: path.display().to_string(),
            size,
            location: Location::Local(Arc::new(file)),
            bytes_read,
        })
    }

    pub fn http(http: Http, url: Url, size: u64, bytes_read: Arc<AtomicU64>) -> RangeReader {
        RangeReader {
            name: display_url(&url),
            size,
            location: Location::Http { http: Box::new(http), url },
            bytes_read,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes `range` of the file.
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes, RangeError> {
        let fail =
            |what: String| RangeError::Failed { name: self.name.clone(), start: range.start, end: range.end, what };
        if range.end > self.size || range.start > range.end {
            return Err(fail(format!("outside the file of {} bytes", self.size)));
        }
        let bytes = match &self.location {
            Location::Local(file) => {
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                std::os::unix::fs::FileExt::read_exact_at(file.as_ref(), &mut buf, range.start)
                    .map_err(|e| fail(e.to_string()))?;
                Bytes::from(buf)
            }
            Location::Http { http, url } => {
                fetch_with_retries(http, url, range.clone(), self.size).await.map_err(fail)?
            }
        };
        self.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// Bytes `range` of the file at `url` (of `size` bytes), resuming after breaks; the error
/// names the byte it stopped at.
async fn fetch_with_retries(http: &Http, url: &Url, range: Range<u64>, size: u64) -> Result<Bytes, String> {
    let want = (range.end - range.start) as usize;
    // Grown as bytes arrive: a range is only as large in memory as what the server really sent.
    let mut buf = BytesMut::with_capacity(want.min(1 << 20));
    let mut retrier = Retrier::new(http.hub.retry, want as u64, display_url(url));
    while buf.len() < want {
        let start = range.start + buf.len() as u64;
        let before = buf.len();
        let attempt =
            tokio::time::timeout_at(retrier.deadline(), fetch_once(http, url, start..range.end, size, &mut buf)).await;
        let at = range.start + buf.len() as u64;
        let (what, delay) = match attempt {
            Ok(Ok(())) if buf.len() >= want => break,
            Ok(Ok(())) => (format!("body ended after {} of {} bytes", buf.len() - before, range.end - start), None),
            Ok(Err(Attempt::Transient(what, delay))) => (what, delay),
            Ok(Err(Attempt::Fatal(what))) => return Err(format!("{what} (at byte {at})")),
            Err(_) => return Err(format!("{}; stopped at byte {at}", retrier.deadline_message())),
        };
        retrier.failed(&what, delay, buf.len() > before).await.map_err(|e| format!("{e}; stopped at byte {at}"))?;
    }
    Ok(buf.freeze())
}

/// One GET with a Range header; appends what arrives to `buf` (even when the body breaks).
async fn fetch_once(http: &Http, url: &Url, range: Range<u64>, size: u64, buf: &mut BytesMut) -> Result<(), Attempt> {
    let Answer { mut response, .. } = http.hub.get(url, Some(range.clone())).await?;
    check_status(&response)?;
    let status = response.status();
    if status == reqwest::StatusCode::OK {
        return Err(Attempt::Fatal(
            "the server ignored the Range header (HTTP 200): refusing to download the whole file".into(),
        ));
    }
    if status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(Attempt::Fatal(format!("HTTP {status}")));
    }
    let sent = check_content_range(response.headers(), &range, size).map_err(Attempt::Fatal)?;
    if response.content_length().is_some_and(|n| n != sent) {
        return Err(Attempt::Fatal(format!(
            "Content-Length {:?} disagrees with Content-Range ({sent} bytes)",
            response.content_length()
        )));
    }
    let want = (range.end - range.start) as usize;
    let start_len = buf.len();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() - start_len + chunk.len() > want {
                    return Err(Attempt::Fatal(format!("the server sent more than the {want} bytes asked for")));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(Attempt::Transient(
                    format!("body broke after {} bytes: {}", buf.len() - start_len, error_chain(&e.without_url())),
                    None,
                ))
            }
        }
    }
}

/// A 206's `Content-Range: bytes a-b/total` must start where asked, end no later than asked, and
/// name the file's size (or `*`). Returns the number of bytes it announces.
fn check_content_range(headers: &reqwest::header::HeaderMap, asked: &Range<u64>, size: u64) -> Result<u64, String> {
    let raw = headers.get(reqwest::header::CONTENT_RANGE).ok_or("HTTP 206 without a Content-Range header")?;
    let text = raw.to_str().unwrap_or_default().trim();
    let parsed = (|| {
        let (span, total) = text.strip_prefix("bytes ")?.split_once('/')?;
        let (a, b) = span.split_once('-')?;
        let total = if total == "*" { None } else { Some(total.parse::<u64>().ok()?) };
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?, total))
    })();
    let (a, b, total) = parsed.ok_or_else(|| format!("malformed Content-Range {raw:?}"))?;
    if a != asked.start || b < a || b >= asked.end || total.is_some_and(|t| t != size) {
        return Err(format!(
            "Content-Range {text:?} does not match the range asked for (bytes {}-{}/{size})",
            asked.start,
            asked.end.saturating_sub(1)
        ));
    }
    Ok(b - a + 1)
}

/// Checks the last 8 bytes of a parquet file (`tail`, the end of a file of `size` bytes): the
/// `PAR1` magic, and a metadata length that fits in the file and under [`MAX_FOOTER`]. Returns
/// that length.
fn check_footer(tail: &[u8], size: u64) -> Result<u64, String> {
    let Some(last8) = tail.len().checked_sub(8).map(|i| &tail[i..]) else {
        return Err(format!("a file of {size} bytes is too small to be parquet"));
    };
    if &last8[4..] != b"PAR1" {
        return Err(format!(
            "not a parquet file: its last 4 bytes are {:?}, not \"PAR1\"",
            String::from_utf8_lossy(&last8[4..])
        ));
    }
    let len = u64::from(u32::from_le_bytes([last8[0], last8[1], last8[2], last8[3]]));
    // Leading magic + metadata + length + trailing magic.
    if len + 12 > size {
        return Err(format!("the footer claims {len} bytes of metadata, more than the file's {size} bytes hold"));
    }
    if len > MAX_FOOTER {
        return Err(format!("the footer claims {len} bytes of metadata, more than the {MAX_FOOTER} accepted"));
    }
    Ok(len)
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.read(range).await.map_err(|e| ParquetError::External(Box::new(e))) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let external = |e: RangeError| ParquetError::External(Box::new(e));
            let footer_error = |what: String| {
                let start = size.saturating_sub(8);
                ParquetError::External(Box::new(RangeError::Failed { name: self.name.clone(), start, end: size, what }))
            };
            // One request for the last 64 KiB normally brings the whole footer; its length is
            // checked before anything more is fetched.
            let tail_len = size.min(FOOTER_PREFETCH);
            let mut tail = self.read(size - tail_len..size).await.map_err(external)?;
            let needed = check_footer(&tail, size).map_err(footer_error)? + 8;
            if needed > tail_len {
                let head = self.read(size - needed..size - tail_len).await.map_err(external)?;
                let mut all = BytesMut::with_capacity(needed as usize);
                all.extend_from_slice(&head);
                all.extend_from_slice(&tail);
                tail = all.freeze();
            }
            let mut reader = ParquetMetaDataReader::new().with_arrow_reader_options(options);
            reader.try_parse_sized(&tail, size)?;
            Ok(Arc::new(reader.finish()?))
        }
        .boxed()
    }
}
