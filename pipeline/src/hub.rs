//! The Hugging Face Hub (or a mirror): endpoint and token discovery, listing a dataset folder's
//! parquet files with hf-hub, the `resolve` URL of a file, and downloading a tokenizer.json.
//! The token is sent as `Authorization: Bearer …` and never printed.

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use hf_hub::HFClient;

/// A parquet file of the dataset repo, as the tree API lists it.
#[derive(Debug, Clone)]
pub struct HubFile {
    /// Path inside the repo, e.g. `sample/10BT/000_00000.parquet`.
    pub path: String,
    pub size: u64,
}

/// `--endpoint`, else `$HF_ENDPOINT`, else the public Hub; no trailing slash.
pub fn endpoint(flag: Option<&str>) -> String {
    let e = flag
        .map(str::to_string)
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    e.trim_end_matches('/').to_string()
}

/// The user's Hub token, looked up like hf-hub does: `$HF_TOKEN`, the file `$HF_TOKEN_PATH`,
/// `$HF_HOME/token`, `~/.cache/huggingface/token`.
pub fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        if !t.trim().is_empty() {
            return Some(t.trim().to_string());
        }
    }
    let mut files = Vec::new();
    if let Ok(p) = std::env::var("HF_TOKEN_PATH") {
        files.push(std::path::PathBuf::from(p));
    }
    if let Ok(home) = std::env::var("HF_HOME") {
        files.push(std::path::Path::new(&home).join("token"));
    } else if let Ok(home) = std::env::var("HOME") {
        files.push(std::path::Path::new(&home).join(".cache/huggingface/token"));
    }
    files.into_iter().find_map(|f| std::fs::read_to_string(f).ok()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

fn client(endpoint: &str, token: Option<&str>) -> Result<HFClient> {
    let mut b = HFClient::builder().endpoint(endpoint).cache_enabled(true);
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().map_err(|e| anyhow!("creating the Hub client for {endpoint}: {e}"))
}

fn split_repo(repo: &str) -> Result<(&str, &str)> {
    repo.split_once('/').ok_or_else(|| anyhow!("repo {repo:?} is not of the form owner/name"))
}

/// Every `*.parquet` file under `subset` of dataset `repo` at `revision`, sorted by path.
/// hf-hub follows the listing's pagination (`Link: <…>; rel="next"`).
pub async fn list_parquet(endpoint: &str, token: Option<&str>, repo: &str, revision: &str, subset: &str) -> Result<Vec<HubFile>> {
    let client = client(endpoint, token)?;
    let (owner, name) = split_repo(repo)?;
    let ds = client.dataset(owner, name);
    let mut stream = std::pin::pin!(ds
        .list_tree()
        .revision(revision)
        .path_in_repo(subset)
        .recursive(true)
        .send()
        .map_err(|e| anyhow::Error::new(e).context(format!("listing {endpoint}/api/datasets/{repo}/tree/{revision}/{subset}")))?);
    let mut files = Vec::new();
    while let Some(entry) = stream.next().await {
        let entry = entry.map_err(|e| anyhow::Error::new(e).context(format!("listing {endpoint}/api/datasets/{repo}/tree/{revision}/{subset}")))?;
        if let hf_hub::repository::RepoTreeEntry::File { path, size, .. } = entry {
            if path.ends_with(".parquet") {
                files.push(HubFile { path, size });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(anyhow!("dataset {repo} has no parquet files under {subset:?} at revision {revision} ({endpoint})"));
    }
    Ok(files)
}

/// `{endpoint}/datasets/{repo}/resolve/{revision}/{path}`
pub fn resolve_url(endpoint: &str, repo: &str, revision: &str, path: &str) -> String {
    format!("{endpoint}/datasets/{repo}/resolve/{revision}/{path}")
}

/// Downloads (or finds in the hf-hub cache) one file of a model repo.
pub fn download_model_file(repo: &str, file: &str, endpoint_flag: Option<&str>) -> Result<std::path::PathBuf> {
    let endpoint = endpoint(endpoint_flag);
    let token = token();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        let client = client(&endpoint, token.as_deref())?;
        let (owner, name) = split_repo(repo)?;
        client
            .model(owner, name)
            .download_file()
            .filename(file)
            .send()
            .await
            .map_err(|e| anyhow!("downloading {file} from {endpoint}/{repo}: {e}"))
    })
}
