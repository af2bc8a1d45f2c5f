//! The Hugging Face Hub (or a mirror) as both binaries use it: which endpoint and token
//! ([`endpoint`]), one HTTP client that sends the token only to the endpoint's origin and follows
//! redirects itself ([`client`]), bounded retries ([`retry`]), the tree listing of a dataset folder
//! ([`listing`]) and model files downloaded into a cache whose paths are built from validated
//! names only ([`download`], [`names`]).
//!
//! Everything a server sends is treated as hostile: every request has a time budget, every body a
//! size cap, and no header or listing entry becomes part of a path on disk unchecked. See
//! docs/security.md.

pub mod client;
pub mod download;
pub mod endpoint;
pub mod listing;
pub mod names;
pub mod retry;

pub use client::HubClient;
pub use download::{download_model_file, fetch_model_files, hub_cache_dir, ModelFileRequest};
pub use endpoint::{endpoint_url, token, Endpoint};
pub use listing::{list_dataset_files, ListLimits, TreeFile};
pub use names::RepoId;
pub use retry::RetryPolicy;

use std::path::PathBuf;

/// Errors of the Hub client. URLs in messages never carry a query string (signed CDN URLs).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A request that failed for good (after its retries, or at once for a fatal answer).
    #[error("{url}: {what}")]
    Request { url: String, what: String },
    /// Something the user or the server gave that is not acceptable (names, headers, listings).
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;
