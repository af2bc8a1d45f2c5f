//! One HTTP client for everything the binaries fetch from the Hub. It follows redirects itself
//! (at most [`MAX_REDIRECTS`], http and https only) so that the token rule holds on every hop:
//! `Authorization: Bearer …` goes with a request only when its URL has the endpoint's origin. A
//! redirect to a CDN or any other host gets no token; a hop back to the endpoint gets it again.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::endpoint::{display_url, Endpoint};
use super::retry::{Attempt, Retrier, RetryPolicy};
use super::{HubError, Result};

/// Redirect hops followed per request.
pub const MAX_REDIRECTS: usize = 10;

#[derive(Clone)]
pub struct HubClient {
    pub endpoint: Endpoint,
    token: Option<Arc<str>>,
    pub retry: RetryPolicy,
    client: reqwest::Client,
}

/// An answer after its redirects, with the headers of the first hop (the endpoint's own answer:
/// `X-Repo-Commit`, `X-Linked-Size` live there when the file itself is on a CDN).
pub struct Answer {
    pub response: reqwest::Response,
    pub first_headers: HeaderMap,
}

impl HubClient {
    pub fn new(endpoint: Endpoint, token: Option<String>, retry: RetryPolicy, user_agent: &str) -> Result<HubClient> {
        let client = reqwest::Client::builder()
            .connect_timeout(retry.timeout.min(Duration::from_secs(20)))
            .read_timeout(retry.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .build()
            .map_err(|e| HubError::Invalid(format!("creating the HTTP client: {}", error_chain(&e))))?;
        Ok(HubClient { endpoint, token: token.map(Arc::from), retry, client })
    }

    /// One GET of `url` (with `Range: bytes=a-(b-1)` when given), following redirects. Errors are
    /// sorted into worth retrying or not; the status of the final answer is left to the caller.
    pub async fn get(&self, url: &Url, range: Option<std::ops::Range<u64>>) -> Result<Answer, Attempt> {
        let mut url = url.clone();
        let mut first_headers = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.get(url.clone());
            if let Some(r) = &range {
                req = req.header(RANGE, format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
            }
            if let Some(t) = self.token.as_deref().filter(|_| self.endpoint.same_origin(&url)) {
                req = req.bearer_auth(t);
            }
            let response = req
                .send()
                .await
                .map_err(|e| Attempt::Transient(format!("request failed: {}", error_chain(&e.without_url())), None))?;
            let headers = first_headers.get_or_insert_with(|| response.headers().clone());
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                let first_headers = std::mem::take(headers);
                return Ok(Answer { response, first_headers });
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Attempt::Fatal(format!("HTTP {status} without a usable Location header")))?;
            let next = url
                .join(location)
                .map_err(|e| Attempt::Fatal(format!("HTTP {status} to an invalid Location {location:?}: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Attempt::Fatal(format!(
                    "redirected to a {} URL, only http and https are followed",
                    next.scheme()
                )));
            }
            tracing::debug!("{}: HTTP {status} to {}", display_url(&url), display_url(&next));
            url = next;
        }
        Err(Attempt::Fatal(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// The whole body of a small answer (a listing page) of at most `max_bytes`, with retries.
    /// Returns the body and the final answer's headers.
    pub async fn get_small(&self, url: &Url, max_bytes: u64) -> Result<(Bytes, HeaderMap)> {
        let shown = display_url(url);
        let mut retrier = Retrier::new(self.retry, max_bytes, shown.clone());
        loop {
            let attempt = tokio::time::timeout_at(retrier.deadline(), self.get_small_once(url, max_bytes)).await;
            let (what, delay) = match attempt {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(Attempt::Fatal(what))) => return Err(HubError::Request { url: shown, what }),
                Ok(Err(Attempt::Transient(what, delay))) => (what, delay),
                Err(_) => return Err(HubError::Request { url: shown, what: retrier.deadline_message() }),
            };
            if let Err(what) = retrier.failed(&what, delay, false).await {
                return Err(HubError::Request { url: shown, what });
            }
        }
    }

    async fn get_small_once(&self, url: &Url, max_bytes: u64) -> Result<(Bytes, HeaderMap), Attempt> {
        let Answer { mut response, .. } = self.get(url, None).await?;
        check_status(&response)?;
        if response.status() != StatusCode::OK {
            return Err(Attempt::Fatal(format!("HTTP {} (expected 200)", response.status())));
        }
        let too_big = || Attempt::Fatal(format!("the answer is larger than the {max_bytes} bytes accepted"));
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(too_big());
        }
        let headers = response.headers().clone();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Attempt::Transient(
                format!("body broke after {} bytes: {}", body.len(), error_chain(&e.without_url())),
                None,
            )
        })? {
            if body.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), headers))
    }
}

/// 429 and 5xx are worth retrying (after `Retry-After` seconds when the server says so); other
/// errors are not. 2xx passes.
pub fn check_status(response: &reqwest::Response) -> Result<(), Attempt> {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Attempt::Transient(format!("HTTP {status}"), retry_after));
    }
    match status.as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(Attempt::Fatal(format!("HTTP {status} (a private or gated repo needs HF_TOKEN with access)"))),
        _ => Err(Attempt::Fatal(format!("HTTP {status}"))),
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
