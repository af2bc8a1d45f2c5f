//! The Hugging Face Hub (or a mirror) as the pipeline uses it, on top of `mamba_shards::hub`
//! (shared with the trainer): the endpoint, the parquet files of a dataset folder, the `resolve`
//! URL of a file, and a model repo's tokenizer.json. The token goes only to the endpoint's
//! origin and is never printed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mamba_shards::hub::{self, Endpoint, ListLimits, RepoId, RetryPolicy, TreeFile};
use reqwest::Url;

use crate::range_reader::Http;

/// Largest tokenizer.json accepted (GPT-2's is 1.4 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// `--endpoint`, else `$HF_ENDPOINT`, else the public Hub.
pub fn endpoint(flag: Option<&str>) -> Result<Endpoint> {
    Ok(hub::endpoint_url(flag)?)
}

/// The user's Hub token (`$HF_TOKEN`, `$HF_TOKEN_PATH`, `$HF_HOME/token`, ~/.cache/huggingface/token).
pub fn token() -> Option<String> {
    hub::token()
}

/// Every `*.parquet` file under `subset` of dataset `repo` at `revision`, sorted by path; the
/// listing is bounded in time (the `--http-timeout` / `--retries` policy), size and pages.
pub async fn list_parquet(http: &Http, repo: &RepoId, revision: &str, subset: &str) -> Result<Vec<TreeFile>> {
    let all = hub::list_dataset_files(&http.hub, repo, revision, subset, ListLimits::default())
        .await
        .with_context(|| format!("listing dataset {repo} @ {revision} under {subset:?} ({})", http.hub.endpoint))?;
    let files: Vec<TreeFile> = all.into_iter().filter(|f| f.path.ends_with(".parquet")).collect();
    if files.is_empty() {
        bail!("dataset {repo} has no parquet files under {subset:?} at revision {revision} ({})", http.hub.endpoint);
    }
    Ok(files)
}

/// `{endpoint}/datasets/{repo}/resolve/{revision}/{path}`, each segment percent-encoded.
pub fn resolve_url(endpoint: &Endpoint, repo: &RepoId, revision: &str, path: &str) -> Url {
    let mut segments = vec!["datasets", repo.owner.as_str(), repo.name.as_str(), "resolve", revision];
    segments.extend(path.split('/'));
    endpoint.join(segments)
}

/// Downloads (or finds in the Hub cache) `file` of model repo `repo` at `main`.
pub fn download_model_file(repo: &str, file: &str, endpoint_flag: Option<&str>) -> Result<PathBuf> {
    let agent = concat!("mamba-pipeline/", env!("CARGO_PKG_VERSION"));
    let paths = hub::fetch_model_files(
        endpoint_flag,
        repo,
        "main",
        &[(file, MAX_TOKENIZER_BYTES)],
        RetryPolicy::default(),
        agent,
    )?;
    paths.into_iter().next().context("no path for the downloaded file")
}
