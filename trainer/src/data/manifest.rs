//! What follow mode needs from the pipeline's `manifest.json`: only whether the pipeline has
//! finished (published its last shard). The pipeline writes the manifest atomically, after the
//! last shard's rename, so "finished" plus a listing taken *after* reading it sees every shard.
//!
//! Only the top-level boolean `finished` is read (through `serde_json::Value`), so this does not
//! depend on the rest of the pipeline's manifest type. A missing file or field means "not finished".

use std::path::Path;

use mamba_shards::ring::MANIFEST_FILE;

use super::error::DataError;

/// `true` once the pipeline in `dir` says it has published everything it will publish.
pub(crate) fn pipeline_finished(dir: &Path) -> Result<bool, DataError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(DataError::Manifest { path, what: format!("cannot read: {e}") }),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| DataError::Manifest { path: path.clone(), what: format!("not valid JSON: {e}") })?;
    match value.get("finished") {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(DataError::Manifest { path, what: format!("\"finished\" is {other}, expected true or false") }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_finished_flag() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!pipeline_finished(dir.path()).unwrap());
        let path = dir.path().join(MANIFEST_FILE);
        std::fs::write(&path, r#"{"shards": [], "finished": false}"#).unwrap();
        assert!(!pipeline_finished(dir.path()).unwrap());
        std::fs::write(&path, r#"{"finished": true, "other": 1}"#).unwrap();
        assert!(pipeline_finished(dir.path()).unwrap());
        std::fs::write(&path, r#"{"finished": "yes"}"#).unwrap();
        let e = pipeline_finished(dir.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("finished"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(pipeline_finished(dir.path()).unwrap_err().to_string().contains("manifest.json"));
    }
}
