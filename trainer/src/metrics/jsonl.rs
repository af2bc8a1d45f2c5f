//! `metrics.jsonl`: one JSON object per line, `{"kind":"step",...}` or `{"kind":"eval",...}`,
//! appended and flushed as they happen (so `tail -f` and a killed run keep every finished line).
//!
//! On resume from step S the records with `step <= S` are kept and later ones dropped: they
//! belong to the part of a killed run after its last checkpoint, which the resumed run redoes.
//! A torn last line (the process died while writing it) is dropped too. The file is rewritten
//! atomically, so a crash during resume loses nothing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::MetricsError;

pub(crate) struct JsonlLog {
    path: PathBuf,
    file: File,
}

/// Parses `bytes` line by line; with `allow_torn_tail` a last line without its newline that does
/// not parse is dropped (a write cut short), otherwise every bad line is an error naming it.
fn parse(path: &Path, bytes: &[u8], allow_torn_tail: bool) -> Result<Vec<Value>, MetricsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| MetricsError::Json {
        path: path.into(),
        line: 0,
        what: format!("not UTF-8: {e}"),
    })?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => out.push(v),
            Ok(_) if allow_torn_tail && !complete && i + 1 == lines.len() => {}
            Ok(v) => {
                return Err(MetricsError::Json {
                    path: path.into(),
                    line: i + 1,
                    what: format!("not a JSON object: {v}"),
                })
            }
            Err(_) if allow_torn_tail && !complete && i + 1 == lines.len() => {
                tracing::warn!("{}: dropping the torn last line {}", path.display(), i + 1);
            }
            Err(e) => return Err(MetricsError::Json { path: path.into(), line: i + 1, what: e.to_string() }),
        }
    }
    Ok(out)
}

/// Every record of a JSONL file (strict: any bad line is an error naming file and line).
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>, MetricsError> {
    let bytes = std::fs::read(path).map_err(|e| MetricsError::io(path, e))?;
    parse(path, &bytes, false)
}

impl JsonlLog {
    /// Opens `path` for appending. Fresh run (`resume_from_step` None): an existing non-empty
    /// file is moved aside to `metrics.jsonl.prev`. Resume: records after the resume step are
    /// dropped. Returns the records kept.
    pub(crate) fn open(path: &Path, resume_from_step: Option<u64>) -> Result<(Self, Vec<Value>), MetricsError> {
        let existing = match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(MetricsError::io(path, e)),
        };
        let kept = match (resume_from_step, existing) {
            (Some(resume), Some(bytes)) => {
                let all = parse(path, &bytes, true)?;
                let mut kept = Vec::with_capacity(all.len());
                for (i, v) in all.into_iter().enumerate() {
                    let step = v.get("step").and_then(Value::as_u64).ok_or_else(|| MetricsError::Json {
                        path: path.into(),
                        line: i + 1,
                        what: "record without an integer \"step\"".into(),
                    })?;
                    if step <= resume {
                        kept.push(v);
                    }
                }
                let mut text = String::new();
                for v in &kept {
                    text.push_str(&v.to_string());
                    text.push('\n');
                }
                mamba_shards::fsutil::atomic_write(path, text.as_bytes())
                    .map_err(|e| MetricsError::Shared { what: e.to_string() })?;
                kept
            }
            (None, Some(bytes)) if !bytes.is_empty() => {
                let prev = path.with_extension("jsonl.prev");
                tracing::warn!("{} exists from an earlier run; moving it to {}", path.display(), prev.display());
                std::fs::rename(path, &prev).map_err(|e| MetricsError::io(path, e))?;
                Vec::new()
            }
            _ => Vec::new(),
        };
        let file = File::options().create(true).append(true).open(path).map_err(|e| MetricsError::io(path, e))?;
        Ok((JsonlLog { path: path.into(), file }, kept))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line (a single write, so lines never interleave).
    pub(crate) fn append(&mut self, record: &impl Serialize) -> Result<(), MetricsError> {
        let mut line = serde_json::to_string(record).map_err(|e| MetricsError::Json {
            path: self.path.clone(),
            line: 0,
            what: e.to_string(),
        })?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| MetricsError::io(&self.path, e))
    }

    pub(crate) fn sync(&mut self) -> Result<(), MetricsError> {
        self.file.sync_data().map_err(|e| MetricsError::io(&self.path, e))
    }
}
