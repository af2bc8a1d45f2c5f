//! `--init-from owner/name` against a Hub endpoint on loopback (`$HF_ENDPOINT`, as the pipeline
//! resolves it): files land in `$HF_HOME/hub/models--owner--name/snapshots/{commit}/`, the token
//! goes only to the endpoint (not to the server a redirect points at), and a hostile
//! `X-Repo-Commit` or `ETag` never decides a path. One test: it sets process environment.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// (path, Authorization header) of each request.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A one-thread HTTP server on `ip`: `route(path)` gives (status line, headers, body).
fn serve(ip: &str, route: impl Fn(&str) -> (String, Vec<String>, Vec<u8>) + Send + 'static) -> (SocketAddr, Log) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")))
                .map(str::to_string);
            log2.lock().unwrap().push((path.clone(), auth));
            let (status, headers, body) = route(&path);
            let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for h in headers {
                out.push_str(&h);
                out.push_str("\r\n");
            }
            out.push_str("\r\n");
            let _ = sock.write_all(out.as_bytes()).and_then(|_| sock.write_all(&body));
        }
    });
    (addr, log)
}

#[test]
fn init_from_a_hub_repo_downloads_safely_into_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let (config, model) = (b"{\"d_model\": 8}".to_vec(), vec![7u8; 3000]);
    // The "CDN": serves the model file the endpoint redirects to.
    let m = model.clone();
    let (cdn, cdn_log) = serve("127.0.0.2", move |_| ("200 OK".into(), vec![], m.clone()));
    let hostile = Arc::new(Mutex::new(false));
    let h = hostile.clone();
    let (hub, hub_log) = serve("127.0.0.1", move |path| {
        let commit_header = if *h.lock().unwrap() {
            "X-Repo-Commit: ../../../../escaped".to_string()
        } else {
            format!("X-Repo-Commit: {commit}")
        };
        match path {
            "/owner/mamba/resolve/main/config.json" => {
                ("200 OK".into(), vec![commit_header, "ETag: \"/tmp/etag-escape\"".into()], config.clone())
            }
            "/owner/mamba/resolve/main/model.safetensors" => (
                "302 Found".into(),
                vec![commit_header, format!("Location: http://{cdn}/blob?sig=1"), "X-Linked-Size: 3000".into()],
                vec![],
            ),
            _ => ("404 Not Found".into(), vec![], vec![]),
        }
    });
    std::env::set_var("HF_ENDPOINT", format!("http://{hub}"));
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_TOKEN", "hf_trainer_secret");

    let dir = mamba_trainer::checkpoint::resolve_init_from("owner/mamba").unwrap();
    assert_eq!(dir, home.join(format!("hub/models--owner--mamba/snapshots/{commit}")));
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{\"d_model\": 8}");
    assert!(hub_log.lock().unwrap().iter().all(|(_, auth)| auth.as_deref() == Some("Bearer hf_trainer_secret")));
    let cdn_log = cdn_log.lock().unwrap().clone();
    assert_eq!(cdn_log.len(), 1);
    assert_eq!(cdn_log[0], ("/blob?sig=1".to_string(), None), "the token went to the redirect's host");

    // A hostile commit header: refused, nothing written outside the cache.
    *hostile.lock().unwrap() = true;
    std::fs::remove_dir_all(&home).unwrap();
    let err = format!("{:#}", mamba_trainer::checkpoint::resolve_init_from("owner/mamba").unwrap_err());
    assert!(err.contains("X-Repo-Commit") && err.contains("not a commit id"), "{err}");
    assert!(!tmp.path().join("escaped").exists() && !std::path::Path::new("/tmp/etag-escape").exists());
    // Not a repo id: refused before any request.
    let n = hub_log.lock().unwrap().len();
    assert!(mamba_trainer::checkpoint::resolve_init_from("../owner/mamba").is_err());
    assert_eq!(hub_log.lock().unwrap().len(), n);
}
