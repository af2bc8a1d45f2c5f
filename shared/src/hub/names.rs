//! Names that become parts of URLs or of paths on disk, checked before use: repo ids, file names,
//! revisions, commits, and paths from a listing. Nothing a server sends reaches a path unchecked.

use super::{HubError, Result};

/// `owner/name` of a Hub repo; both parts are single path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
}

impl RepoId {
    /// Accepts `owner/name` where each part is 1–96 of `A-Z a-z 0-9 . _ -`, not starting with
    /// `.` or `-` and without `..`.
    pub fn parse(text: &str) -> Result<RepoId> {
        let bad = || HubError::Invalid(format!("{text:?} is not a Hub repo id of the form owner/name"));
        let (owner, name) = text.split_once('/').ok_or_else(bad)?;
        if !is_plain_name(owner) || !is_plain_name(name) {
            return Err(bad());
        }
        Ok(RepoId { owner: owner.to_string(), name: name.to_string() })
    }

    /// `models--owner--name`: the repo's folder in the Hub cache layout.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A name that is safe as one path segment on any system: 1–96 of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` or `-`, no `..`.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && !s.starts_with(['.', '-'])
        && !s.contains("..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A git commit id as the Hub sends it: exactly 40 lowercase hex digits.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A revision (branch, tag, commit, `refs/pr/1`) as one path segment: every byte outside
/// `A-Z a-z 0-9 _ -` is written `%XX`, so `..` or `/` can never appear.
pub fn revision_segment(revision: &str) -> String {
    let mut out = String::with_capacity(revision.len());
    for b in revision.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path inside a repo as a listing names it: relative, `/`-separated, no empty, `.` or `..`
/// segment, no backslash or control character, at most 1024 bytes.
pub fn is_repo_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.chars().any(|c| c.is_control() || c == '\\')
        && p.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(RepoId::parse("state-spaces/mamba-130m-hf").is_ok());
        assert_eq!(
            RepoId::parse("openai-community/gpt2").map(|r| r.cache_folder()).ok().as_deref(),
            Some("models--openai-community--gpt2")
        );
        for bad in ["gpt2", "a/b/c", "../x", "a/..", "a/.hidden", "/abs", "a/", "a/b c", "a/b\\c", "-a/b"] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commits_and_revisions() {
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        for bad in ["../../../../tmp/x", "0123456789ABCDEF0123456789abcdef01234567", "0123", "/etc/passwd"] {
            assert!(!is_commit(bad), "{bad}");
        }
        assert_eq!(revision_segment("main"), "main");
        assert_eq!(revision_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(revision_segment(".."), "%2E%2E");
    }

    #[test]
    fn repo_paths() {
        assert!(is_repo_path("sample/10BT/000_00000.parquet"));
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/\n", "a\\b"] {
            assert!(!is_repo_path(bad), "{bad:?}");
        }
    }
}
