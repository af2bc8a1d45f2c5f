//! The ordered list of source files: local `--input` parquet (sorted) or a Hub dataset folder
//! (sorted by path), then this worker's share (file i goes to worker i % workers).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::range_reader::{Http, RangeReader};

#[derive(Debug, Clone)]
pub enum SourceFile {
    Local(PathBuf),
    Remote { path: String, url: reqwest::Url, size: u64 },
}

impl SourceFile {
    /// The name recorded in the manifest: the local path, or the path inside the Hub repo.
    pub fn name(&self) -> String {
        match self {
            SourceFile::Local(p) => p.display().to_string(),
            SourceFile::Remote { path, .. } => path.clone(),
        }
    }

    pub fn open(&self, http: Option<&Http>, bytes_read: Arc<AtomicU64>) -> Result<RangeReader> {
        match self {
            SourceFile::Local(p) => {
                RangeReader::local(p, bytes_read).with_context(|| format!("opening {}", p.display()))
            }
            SourceFile::Remote { url, size, .. } => {
                let http = http.context("no HTTP client for a remote file")?;
                Ok(RangeReader::http(http.clone(), url.clone(), *size, bytes_read))
            }
        }
    }
}

/// Local parquet files: files as given, folders searched recursively for `*.parquet`; sorted.
pub fn local_files(inputs: &[PathBuf]) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("--input {}", input.display()))?;
        if meta.is_dir() {
            collect_parquet(input, &mut files)?;
        } else {
            files.push(input.clone());
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!(
            "--input {}: no parquet files found",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(files.into_iter().map(SourceFile::Local).collect())
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading folder {}", dir.display()))?.path();
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// The Hub dataset's parquet files under `subset`, with their `resolve` URLs. A stop request
/// abandons the listing at once (`Interrupted`).
pub fn hub_files(
    rt: &tokio::runtime::Runtime,
    http: &Http,
    repo: &str,
    revision: &str,
    subset: &str,
    stop: &AtomicBool,
) -> Result<Vec<SourceFile>> {
    let repo = mamba_shards::hub::RepoId::parse(repo).context("--dataset")?;
    // The root cause names the URL: say it once, and what to do.
    let listed = rt
        .block_on(crate::cancel::unless_stopped(stop, crate::hub::list_parquet(http, &repo, revision, subset)))?
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list the parquet files of dataset {repo}: {}. \
             Without Hub access, read local parquet with --input DIR (e.g. --input pipeline/assets/sample-corpus, the \
             sample corpus of the repository), or use a mirror: HF_ENDPOINT=URL or --endpoint URL",
                e.root_cause()
            )
        })?;
    Ok(listed
        .into_iter()
        .map(|f| SourceFile::Remote {
            url: crate::hub::resolve_url(&http.hub.endpoint, &repo, revision, &f.path),
            path: f.path,
            size: f.size,
        })
        .collect())
}

/// File i of the full sorted list belongs to worker i % workers.
pub fn worker_share(files: Vec<SourceFile>, workers: u32, worker_index: u32) -> Result<Vec<SourceFile>> {
    let total = files.len();
    let mine: Vec<SourceFile> = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 % workers as u64 == worker_index as u64)
        .map(|(_, f)| f)
        .collect();
    if mine.is_empty() {
        bail!("worker {worker_index} of {workers} gets none of the {total} source files");
    }
    Ok(mine)
}
