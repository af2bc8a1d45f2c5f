//! The files of a dataset folder: `GET {endpoint}/api/datasets/{repo}/tree/{revision}/{folder}
//! ?recursive=true`, a JSON array per page, the next page in a `Link: <…>; rel="next"` header.
//!
//! Bounded: each page goes through the client's timeout, retries and deadline and is at most
//! `max_page_bytes`; at most `max_pages` pages and `max_files` files. A next page is only followed
//! on the endpoint's origin: a listing that points elsewhere is refused (the token would go there).

use reqwest::header::LINK;
use reqwest::Url;
use serde::Deserialize;

use super::client::HubClient;
use super::endpoint::display_url;
use super::names::{is_repo_path, RepoId};
use super::{HubError, Result};

/// A file of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Path inside the repo, e.g. `sample/10BT/000_00000.parquet`.
    pub path: String,
    pub size: u64,
}

/// Caps on one listing.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    pub max_pages: u32,
    pub max_page_bytes: u64,
    pub max_files: usize,
}

impl Default for ListLimits {
    /// 1000 pages, 32 MiB per page, a million files: far above FineWeb's (the Hub sends 1000
    /// entries per page), far below what fills memory.
    fn default() -> Self {
        ListLimits { max_pages: 1000, max_page_bytes: 32 << 20, max_files: 1_000_000 }
    }
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
}

/// Every file under `folder` of dataset `repo` at `revision`, sorted by path.
pub async fn list_dataset_files(
    client: &HubClient,
    repo: &RepoId,
    revision: &str,
    folder: &str,
    limits: ListLimits,
) -> Result<Vec<TreeFile>> {
    let folder = folder.trim_matches('/');
    if !folder.is_empty() && !is_repo_path(folder) {
        return Err(HubError::Invalid(format!("folder {folder:?} is not a relative path inside the repo")));
    }
    let mut segments = vec!["api", "datasets", repo.owner.as_str(), repo.name.as_str(), "tree", revision];
    segments.extend(folder.split('/').filter(|s| !s.is_empty()));
    let mut url = client.endpoint.join(segments);
    url.set_query(Some("recursive=true"));
    let first = display_url(&url);

    let mut files = Vec::new();
    let mut pages = 0u32;
    loop {
        pages += 1;
        if pages > limits.max_pages {
            return Err(HubError::Invalid(format!(
                "listing {first}: more than {} pages; refusing to read on",
                limits.max_pages
            )));
        }
        let (body, headers) = client.get_small(&url, limits.max_page_bytes).await?;
        let shown = display_url(&url);
        let entries: Vec<Entry> = serde_json::from_slice(&body)
            .map_err(|e| HubError::Invalid(format!("listing page {shown}: not a JSON array of tree entries: {e}")))?;
        for e in entries.into_iter().filter(|e| e.kind == "file") {
            if !is_repo_path(&e.path)
                || !(folder.is_empty() || e.path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/')))
            {
                return Err(HubError::Invalid(format!(
                    "listing page {shown}: entry {:?} is not a path under {folder:?}",
                    e.path
                )));
            }
            let size = e
                .size
                .ok_or_else(|| HubError::Invalid(format!("listing page {shown}: file {:?} has no size", e.path)))?;
            if files.len() >= limits.max_files {
                return Err(HubError::Invalid(format!(
                    "listing {first}: more than {} files; refusing to read on",
                    limits.max_files
                )));
            }
            files.push(TreeFile { path: e.path, size });
        }
        let Some(next) = next_link(&headers, &url)? else { break };
        if !client.endpoint.same_origin(&next) {
            return Err(HubError::Invalid(format!(
                "listing page {shown}: the next page {} is not on the endpoint {}; refusing to follow it",
                display_url(&next),
                client.endpoint
            )));
        }
        url = next;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(HubError::Invalid(format!("listing {first}: file {:?} is listed twice", w[0].path)));
    }
    Ok(files)
}

/// The `rel="next"` target of a `Link` header, resolved against the page's URL.
fn next_link(headers: &reqwest::header::HeaderMap, page: &Url) -> Result<Option<Url>> {
    for value in headers.get_all(LINK) {
        let text = value.to_str().map_err(|_| {
            HubError::Invalid(format!("listing page {}: a Link header that is not text", display_url(page)))
        })?;
        for link in text.split(',') {
            let mut parts = link.split(';');
            let target = parts.next().unwrap_or_default().trim();
            let is_next = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if !is_next {
                continue;
            }
            let target = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')).ok_or_else(|| {
                HubError::Invalid(format!("listing page {}: malformed Link header {text:?}", display_url(page)))
            })?;
            let url = page.join(target).map_err(|e| {
                HubError::Invalid(format!("listing page {}: bad next link {target:?}: {e}", display_url(page)))
            })?;
            return Ok(Some(url));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn the_next_link_is_found_and_resolved() {
        let page = Url::parse("http://127.0.0.1:9/api/datasets/o/n/tree/main/x?recursive=true").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(next_link(&h, &page).unwrap(), None);
        h.insert(LINK, HeaderValue::from_static("</api/next?cursor=2>; rel=\"next\", <http://a/prev>; rel=\"prev\""));
        assert_eq!(next_link(&h, &page).unwrap().unwrap().as_str(), "http://127.0.0.1:9/api/next?cursor=2");
        h.insert(LINK, HeaderValue::from_static("<http://127.0.0.2:9/x>; rel=next"));
        assert_eq!(next_link(&h, &page).unwrap().unwrap().host_str(), Some("127.0.0.2"));
        h.insert(LINK, HeaderValue::from_static("http://x; rel=\"next\""));
        assert!(next_link(&h, &page).is_err());
    }
}
