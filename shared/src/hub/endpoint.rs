//! Which server and which credential: `--endpoint` / `$HF_ENDPOINT` / the public Hub, and the
//! user's token. Both binaries resolve them here, the same way. The token is only ever attached
//! to requests for the endpoint's origin (scheme, host, port): see [`Endpoint::same_origin`].

use std::path::PathBuf;

use reqwest::Url;

use super::{HubError, Result};

/// The public Hub, when neither `--endpoint` nor `$HF_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A parsed endpoint: an http(s) URL without query, fragment or credentials.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint> {
        let bad = |what: &str| HubError::Invalid(format!("endpoint {text:?}: {what}"));
        let mut url = Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("not an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL are not accepted (use HF_TOKEN)"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not accepted"));
        }
        // A mirror may live under a path prefix: keep it, without a trailing slash.
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        Ok(Endpoint { url })
    }

    /// The endpoint as text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// `{endpoint}/{segments…}`, each segment percent-encoded (a `/` inside one becomes `%2F`).
    pub fn join<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Whether `url` has the endpoint's scheme, host and port: the only place the token goes.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.url.scheme()
            && url.host_str() == self.url.host_str()
            && url.port_or_known_default() == self.url.port_or_known_default()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `flag` (e.g. `--endpoint`), else `$HF_ENDPOINT`, else the public Hub.
pub fn endpoint_url(flag: Option<&str>) -> Result<Endpoint> {
    let from_env = std::env::var("HF_ENDPOINT").ok().filter(|s| !s.trim().is_empty());
    let text = flag.map(str::to_string).or(from_env).unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    Endpoint::parse(&text)
}

/// The user's Hub token: `$HF_TOKEN`, the file `$HF_TOKEN_PATH`, `$HF_HOME/token`,
/// `~/.cache/huggingface/token` (first one found). Never printed.
pub fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        if !t.trim().is_empty() {
            return Some(t.trim().to_string());
        }
    }
    let mut files = Vec::new();
    if let Ok(p) = std::env::var("HF_TOKEN_PATH") {
        files.push(PathBuf::from(p));
    }
    if let Ok(home) = std::env::var("HF_HOME") {
        files.push(PathBuf::from(home).join("token"));
    } else if let Ok(home) = std::env::var("HOME") {
        files.push(PathBuf::from(home).join(".cache/huggingface/token"));
    }
    files
        .into_iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// `url` without query and fragment, for messages (CDN redirects carry signatures there).
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_scheme_host_and_port() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(e.as_str(), "http://127.0.0.1:8080");
        let same = |u: &str| e.same_origin(&Url::parse(u).unwrap());
        assert!(same("http://127.0.0.1:8080/api/x?cursor=2"));
        assert!(!same("http://127.0.0.2:8080/api/x"));
        assert!(!same("http://127.0.0.1:8081/api/x"));
        assert!(!same("https://127.0.0.1:8080/api/x"));
        let hub = Endpoint::parse("https://huggingface.co").unwrap();
        assert!(hub.same_origin(&Url::parse("https://huggingface.co:443/x").unwrap()));
        assert!(!hub.same_origin(&Url::parse("https://cdn-lfs.huggingface.co/x").unwrap()));
    }

    #[test]
    fn join_encodes_each_segment() {
        let e = Endpoint::parse("https://mirror.example/hf").unwrap();
        let u = e.join(["api", "datasets", "o", "n", "tree", "refs/convert/parquet", "a b?#"]);
        assert_eq!(u.as_str(), "https://mirror.example/hf/api/datasets/o/n/tree/refs%2Fconvert%2Fparquet/a%20b%3F%23");
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["ftp://x", "file:///etc", "http://user:pw@host", "http://host/?a=1", "not a url"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
