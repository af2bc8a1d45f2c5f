//! Model files (`tokenizer.json`, `config.json`, `model.safetensors`) from
//! `{endpoint}/{owner}/{name}/resolve/{revision}/{file}` into the Hub cache, laid out as
//! `{cache}/models--{owner}--{name}/snapshots/{commit}/{file}` (what huggingface_hub reads too).
//!
//! Every part of that path is checked before use: the repo id and file name are plain names, the
//! commit comes from `X-Repo-Commit` only if it is 40 hex digits (the request fails otherwise);
//! without that header the folder is `revisions/{revision, %-escaped}` and nothing is reused. The
//! `ETag` is not used for anything. A file is written to a temporary beside its final name, its
//! size checked against `Content-Length` (and `X-Linked-Size`), fsynced and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::client::{check_status, error_chain, Answer, HubClient};
use super::endpoint::display_url;
use super::names::{is_commit, is_plain_name, revision_segment, RepoId};
use super::retry::{Attempt, Retrier};
use super::{HubError, Result};

/// One file of a model repo and the largest size accepted for it.
#[derive(Debug, Clone, Copy)]
pub struct ModelFileRequest<'a> {
    pub repo: &'a RepoId,
    pub revision: &'a str,
    pub file: &'a str,
    pub max_bytes: u64,
}

/// The Hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .ok_or_else(|| HubError::Invalid("no Hub cache folder: set HF_HOME (or HOME)".into()))
}

/// Downloads one file (or finds it in the cache at the commit the server names) and returns its
/// path. When the server cannot be reached, a copy cached for the same revision is used.
pub async fn download_model_file(client: &HubClient, cache: &Path, req: ModelFileRequest<'_>) -> Result<PathBuf> {
    if !is_plain_name(req.file) {
        return Err(HubError::Invalid(format!("{:?} is not a plain file name", req.file)));
    }
    let url =
        client.endpoint.join([req.repo.owner.as_str(), req.repo.name.as_str(), "resolve", req.revision, req.file]);
    let shown = display_url(&url);
    let repo_dir = cache.join(req.repo.cache_folder());
    let mut retrier = Retrier::new(client.retry, 0, shown.clone());
    loop {
        // The deadline grows once the size is known, so it is checked around each await inside.
        let what = match download_once(client, &url, &repo_dir, req, &mut retrier).await {
            Ok(path) => return Ok(path),
            Err(Attempt::Fatal(what)) => return Err(HubError::Request { url: shown, what }),
            Err(Attempt::Transient(what, delay)) => match retrier.failed(&what, delay, false).await {
                Ok(()) => continue,
                Err(what) => what,
            },
        };
        if let Some(path) = cached_for_revision(&repo_dir, req) {
            tracing::warn!("{shown}: {what}; using the copy cached for revision {}: {}", req.revision, path.display());
            return Ok(path);
        }
        return Err(HubError::Request { url: shown, what });
    }
}

async fn download_once(
    client: &HubClient,
    url: &reqwest::Url,
    repo_dir: &Path,
    req: ModelFileRequest<'_>,
    retrier: &mut Retrier,
) -> Result<PathBuf, Attempt> {
    let Answer { mut response, first_headers } = within(retrier, client.get(url, None)).await?;
    check_status(&response)?;
    if response.status() != StatusCode::OK {
        return Err(Attempt::Fatal(format!("HTTP {} (expected 200)", response.status())));
    }
    let commit = repo_commit(&first_headers)?;
    let size = expected_size(&response, &first_headers, req.max_bytes)?;
    retrier.set_bytes(size.unwrap_or(req.max_bytes));

    let dir = match &commit {
        Some(c) => repo_dir.join("snapshots").join(c),
        None => repo_dir.join("revisions").join(revision_segment(req.revision)),
    };
    let path = dir.join(req.file);
    if commit.is_some() {
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && size.is_none_or(|s| s == meta.len()) {
                tracing::info!("{}: cached at {}", req.file, path.display());
                return Ok(path);
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| Attempt::Fatal(format!("creating {}: {e}", dir.display())))?;
    tracing::info!(
        "downloading {} of {} ({} bytes) to {}",
        req.file,
        req.repo,
        size.map_or("unknown".into(), |s| s.to_string()),
        path.display()
    );
    let tmp = temporary_beside(&path);
    let result = write_body(&mut response, &tmp, size, req.max_bytes, retrier).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Attempt::Fatal(format!("renaming {} to {}: {e}", tmp.display(), path.display())))?;
    if let Some(c) = &commit {
        remember_ref(repo_dir, req.revision, c);
    }
    Ok(path)
}

/// `X-Repo-Commit` of the endpoint's answer: absent, or 40 hex digits (else the answer is refused).
fn repo_commit(headers: &HeaderMap) -> Result<Option<String>, Attempt> {
    let Some(v) = headers.get("x-repo-commit") else { return Ok(None) };
    match v.to_str() {
        Ok(c) if is_commit(c) => Ok(Some(c.to_string())),
        _ => Err(Attempt::Fatal(format!(
            "the server's X-Repo-Commit {:?} is not a commit id (40 hex digits); refusing the answer",
            String::from_utf8_lossy(v.as_bytes())
        ))),
    }
}

/// `Content-Length`, which must agree with the endpoint's `X-Linked-Size` when both are given and
/// be at most `max_bytes`.
fn expected_size(
    response: &reqwest::Response,
    first_headers: &HeaderMap,
    max_bytes: u64,
) -> Result<Option<u64>, Attempt> {
    let linked = match first_headers.get("x-linked-size") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Attempt::Fatal(format!("malformed X-Linked-Size {v:?}")))?,
        ),
    };
    let size = response.content_length().or(linked);
    if let (Some(a), Some(b)) = (response.content_length(), linked) {
        if a != b {
            return Err(Attempt::Fatal(format!("Content-Length {a} differs from the endpoint's X-Linked-Size {b}")));
        }
    }
    if let Some(s) = size.filter(|&s| s > max_bytes) {
        return Err(Attempt::Fatal(format!("the file has {s} bytes, more than the {max_bytes} accepted")));
    }
    Ok(size)
}

/// Streams the body into `tmp` (created new), at most `max_bytes` and exactly `size` if known.
async fn write_body(
    response: &mut reqwest::Response,
    tmp: &Path,
    size: Option<u64>,
    max_bytes: u64,
    retrier: &Retrier,
) -> Result<(), Attempt> {
    let io = |e: std::io::Error| Attempt::Fatal(format!("writing {}: {e}", tmp.display()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp).map_err(io)?;
    let mut written = 0u64;
    loop {
        let chunk = match tokio::time::timeout_at(retrier.deadline(), response.chunk()).await {
            Err(_) => return Err(Attempt::Fatal(retrier.deadline_message())),
            Ok(Err(e)) => {
                return Err(Attempt::Transient(
                    format!("body broke after {written} bytes: {}", error_chain(&e.without_url())),
                    None,
                ))
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        written += chunk.len() as u64;
        if written > size.unwrap_or(max_bytes) {
            return Err(Attempt::Fatal(format!(
                "the server sent more than the {} bytes announced",
                size.unwrap_or(max_bytes)
            )));
        }
        file.write_all(&chunk).map_err(io)?;
    }
    if let Some(s) = size.filter(|&s| s != written) {
        return Err(Attempt::Transient(format!("body ended after {written} of {s} bytes"), None));
    }
    file.sync_all().map_err(io)
}

/// `fut`, unless the transfer's deadline passes first (then the transfer fails for good).
async fn within<T>(
    retrier: &Retrier,
    fut: impl std::future::Future<Output = Result<T, Attempt>>,
) -> Result<T, Attempt> {
    tokio::time::timeout_at(retrier.deadline(), fut)
        .await
        .unwrap_or_else(|_| Err(Attempt::Fatal(retrier.deadline_message())))
}

/// `.{name}.{pid}.{n}.part` in the same folder (the rename stays on one filesystem).
fn temporary_beside(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{}.part", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// Records `refs/{revision}` → commit, for the offline fallback (best effort).
fn remember_ref(repo_dir: &Path, revision: &str, commit: &str) {
    let refs = repo_dir.join("refs");
    let path = refs.join(revision_segment(revision));
    let tmp = temporary_beside(&path);
    let ok = std::fs::create_dir_all(&refs).is_ok()
        && std::fs::write(&tmp, commit).is_ok()
        && std::fs::rename(&tmp, &path).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("could not record {}", path.display());
    }
}

/// The file cached for `refs/{revision}`, if that ref holds a valid commit and the file exists.
fn cached_for_revision(repo_dir: &Path, req: ModelFileRequest<'_>) -> Option<PathBuf> {
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision_segment(req.revision))).ok()?;
    let commit = commit.trim();
    let path = repo_dir.join("snapshots").join(commit).join(req.file);
    (is_commit(commit) && path.is_file()).then_some(path)
}

/// For the binaries: downloads `files` (name, largest size accepted) of model repo `repo` at
/// `revision` from the endpoint (`endpoint_flag`, else `$HF_ENDPOINT`, else the Hub) with the
/// user's token, into the Hub cache. Blocking (runs its own small runtime).
pub fn fetch_model_files(
    endpoint_flag: Option<&str>,
    repo: &str,
    revision: &str,
    files: &[(&str, u64)],
    retry: super::RetryPolicy,
    user_agent: &str,
) -> Result<Vec<PathBuf>> {
    let repo = RepoId::parse(repo)?;
    let endpoint = super::endpoint_url(endpoint_flag)?;
    let client = HubClient::new(endpoint, super::token(), retry, user_agent)?;
    let cache = hub_cache_dir()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HubError::io("tokio runtime", e))?;
    rt.block_on(async {
        let mut paths = Vec::with_capacity(files.len());
        for &(file, max_bytes) in files {
            paths.push(
                download_model_file(&client, &cache, ModelFileRequest { repo: &repo, revision, file, max_bytes })
                    .await?,
            );
        }
        Ok(paths)
    })
}
