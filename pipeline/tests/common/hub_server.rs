//! A minimal HTTP/1.1 server on loopback that serves files in the Hugging Face Hub layout:
//! `GET /api/datasets/{owner}/{name}/tree/{rev}/{path}` (JSON listing, paginated with a `Link`
//! header), `GET /datasets/{owner}/{name}/resolve/{rev}/{path}` with `Range` support and model
//! files at `GET /{owner}/{name}/resolve/{rev}/{file}`. It logs every request and can inject
//! faults: 503s, connections reset mid-body, truncated bodies, stalls, and hostile answers (a
//! stalled or endless listing, a next page on another origin, a trickling body, a wrong
//! `Content-Range`, redirects to another server, a virtual file with a lying footer).
//! One connection per request (`Connection: close`); requests are bounded to 16 KiB of headers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A model repo file's bytes and the extra headers of its response.
pub type ModelFile = (Vec<u8>, Vec<(String, String)>);

#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    /// The requested range as start..end (exclusive), if there was a Range header.
    pub range: Option<(u64, u64)>,
    pub status: u16,
    /// Body bytes actually sent.
    pub sent: u64,
    /// The Authorization header, if any.
    pub auth: Option<String>,
}

/// Faults for `resolve` requests, counted per request (the n-th resolve request, from 1).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every k-th resolve request answers 503.
    pub status_503_every: Option<u64>,
    /// Every k-th resolve request sends half of the body, then resets the connection (RST).
    pub reset_every: Option<u64>,
    /// Every k-th resolve request sends half of the body, then closes cleanly (truncated body).
    pub truncate_every: Option<u64>,
    /// Every k-th resolve request stalls this long after the headers (slow server).
    pub stall_every: Option<(u64, Duration)>,
    /// Resolve requests for paths containing this string always answer 503.
    pub always_503: Option<String>,
    /// Listing requests stall this long before answering anything.
    pub stall_listing: Option<Duration>,
    /// Every listing page links to a next one, forever.
    pub endless_listing: bool,
    /// Every resolve request sends the headers and this many body bytes, then stalls (60 s).
    pub trickle: Option<usize>,
    /// 206 answers announce a `Content-Range` starting one byte later than asked.
    pub shift_content_range: bool,
    /// Resolve requests answer `302` to the same path on this base URL (e.g. another server).
    pub redirect_resolve_to: Option<String>,
}

#[derive(Default)]
pub struct State {
    /// Repo path (e.g. `sample/10BT/000_00000.parquet`) → bytes.
    pub files: BTreeMap<String, Arc<Vec<u8>>>,
    pub log: Vec<Logged>,
    pub faults: Faults,
    /// Entries per page of the tree listing.
    pub page_size: usize,
    /// Base URL put in the listing's `Link` header instead of this server's own.
    pub next_page_base: Option<String>,
    /// Model repo files: `owner/name/file` → (bytes, extra response headers).
    pub model_files: BTreeMap<String, ModelFile>,
    /// Listed and served files whose content is zeros except a tail: path → (size, tail).
    pub virtual_files: BTreeMap<String, (u64, Vec<u8>)>,
    resolve_count: u64,
}

pub struct HubServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    _thread: std::thread::JoinHandle<()>,
}

impl HubServer {
    /// Serves `files` (repo path → bytes) for dataset `HuggingFaceFW/fineweb` at any revision.
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> HubServer {
        HubServer::start_on("127.0.0.1", files)
    }

    /// Like [`HubServer::start`], on another loopback address (e.g. `127.0.0.2`).
    pub fn start_on(ip: &'static str, files: BTreeMap<String, Vec<u8>>) -> HubServer {
        let state = Arc::new(Mutex::new(State {
            files: files.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            page_size: 2,
            ..State::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind((ip, 0)).await.expect("bind loopback");
                tx.send(listener.local_addr().expect("addr")).expect("send addr");
                loop {
                    let Ok((sock, _)) = listener.accept().await else { continue };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let _ = handle(sock, st).await;
                    });
                }
            });
        });
        let addr = rx.recv().expect("server address");
        HubServer { addr, state, _thread: thread }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_faults(&self, f: Faults) {
        self.state.lock().expect("lock").faults = f;
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock")
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().expect("lock").log.clone()
    }
}

async fn handle(mut sock: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    // Read the request head (bounded).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let auth = headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone());
    let range = headers
        .iter()
        .find(|(k, _)| k == "range")
        .and_then(|(_, v)| v.strip_prefix("bytes=").map(str::to_string))
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()? + 1))
        });
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.to_string();
    let query = query.to_string();

    AUTH.scope(auth, route(sock, state, path, query, range)).await
}

tokio::task_local! {
    static AUTH: Option<String>;
}

async fn route(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    path: String,
    query: String,
    range: Option<(u64, u64)>,
) -> std::io::Result<()> {
    if let Some(rest) = path.strip_prefix("/api/datasets/HuggingFaceFW/fineweb/tree/") {
        let (_rev, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        return listing(sock, &state, &path, prefix, &query).await;
    }
    if let Some(rest) = path.strip_prefix("/datasets/HuggingFaceFW/fineweb/resolve/") {
        let (_rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        return resolve(sock, &state, &path, file, range).await;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let [owner, name, "resolve", _rev, file] = parts[..] {
        let found = state.lock().expect("lock").model_files.get(&format!("{owner}/{name}/{file}")).cloned();
        if let Some((bytes, headers)) = found {
            log(&state, &path, range, 200, bytes.len() as u64);
            return respond(&mut sock, "200 OK", &headers, &bytes).await;
        }
    }
    log(&state, &path, range, 404, 0);
    respond(&mut sock, "404 Not Found", &[], b"not found").await
}

fn log(state: &Arc<Mutex<State>>, path: &str, range: Option<(u64, u64)>, status: u16, sent: u64) {
    let auth = AUTH.try_with(|a| a.clone()).ok().flatten();
    state.lock().expect("lock").log.push(Logged { path: path.to_string(), range, status, sent, auth });
}

async fn respond(sock: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}

async fn listing(
    mut sock: TcpStream,
    state: &Arc<Mutex<State>>,
    path: &str,
    prefix: &str,
    query: &str,
) -> std::io::Result<()> {
    let (stall, endless, next_base) = {
        let st = state.lock().expect("lock");
        (st.faults.stall_listing, st.faults.endless_listing, st.next_page_base.clone())
    };
    if let Some(d) = stall {
        log(state, path, None, 0, 0);
        tokio::time::sleep(d).await;
    }
    let (entries, page_size) = {
        let st = state.lock().expect("lock");
        let prefix = prefix.trim_end_matches('/');
        let mut entries: Vec<serde_json::Value> = Vec::new();
        // One directory entry (must be ignored by the client) plus every file under the prefix.
        entries.push(serde_json::json!({"type": "directory", "oid": "0", "path": prefix}));
        for (p, bytes) in &st.files {
            if p.starts_with(prefix) {
                entries.push(serde_json::json!({
                    "type": "file", "oid": "1", "size": bytes.len(), "path": p,
                    "lfs": {"oid": "2", "size": bytes.len(), "pointerSize": 133}
                }));
            }
        }
        for (p, (size, _)) in &st.virtual_files {
            entries.push(serde_json::json!({"type": "file", "oid": "4", "size": size, "path": p}));
        }
        // A file that is not parquet (ignored).
        entries.push(serde_json::json!({"type": "file", "oid": "3", "size": 5, "path": format!("{prefix}/README.md")}));
        (entries, st.page_size.max(1))
    };
    let cursor: usize =
        query.split('&').find_map(|kv| kv.strip_prefix("cursor=")).and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<_> = if endless {
        let prefix = prefix.trim_end_matches('/');
        (0..page_size).map(|i| serde_json::json!({"type": "file", "oid": "5", "size": 1, "path": format!("{prefix}/{:09}.parquet", cursor + i)})).collect()
    } else {
        entries.iter().skip(cursor).take(page_size).cloned().collect()
    };
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if endless || cursor + page_size < entries.len() {
        let base = next_base.unwrap_or(format!("http://{}", sock.local_addr()?));
        headers.push((
            "Link".into(),
            format!("<{base}{path}?recursive=true&cursor={}>; rel=\"next\"", cursor + page_size),
        ));
    }
    let body = serde_json::to_vec(&page).expect("json");
    log(state, path, None, 200, body.len() as u64);
    respond(&mut sock, "200 OK", &headers, &body).await
}

async fn resolve(
    mut sock: TcpStream,
    state: &Arc<Mutex<State>>,
    path: &str,
    file: &str,
    range: Option<(u64, u64)>,
) -> std::io::Result<()> {
    let (bytes, faults, n) = {
        let mut st = state.lock().expect("lock");
        st.resolve_count += 1;
        (st.files.get(file).cloned(), st.faults.clone(), st.resolve_count)
    };
    let virtual_file = state.lock().expect("lock").virtual_files.get(file).cloned();
    let bytes =
        bytes.or_else(|| virtual_file.map(|(size, tail)| Arc::new(VirtualFile { size, tail }.materialize(range))));
    if let Some(base) = &faults.redirect_resolve_to {
        log(state, path, range, 302, 0);
        return respond(&mut sock, "302 Found", &[("Location".into(), format!("{base}{path}"))], b"").await;
    }
    let Some(bytes) = bytes else {
        log(state, path, range, 404, 0);
        return respond(&mut sock, "404 Not Found", &[], b"no such file").await;
    };
    let every = |k: Option<u64>| k.is_some_and(|k| n % k == 0);
    if every(faults.status_503_every) || faults.always_503.as_deref().is_some_and(|s| file.contains(s)) {
        log(state, path, range, 503, 0);
        return respond(&mut sock, "503 Service Unavailable", &[], b"busy").await;
    }
    let size = state.lock().expect("lock").virtual_files.get(file).map_or(bytes.len() as u64, |(size, _)| *size);
    let (status, start, end) = match range {
        Some((a, b)) if a < size => ("206 Partial Content", a, b.min(size)),
        Some(_) => {
            log(state, path, range, 416, 0);
            return respond(&mut sock, "416 Range Not Satisfiable", &[], b"").await;
        }
        None => ("200 OK", 0, size),
    };
    // A virtual file holds only the asked range (materialized from its start).
    let offset = if bytes.len() as u64 == size { 0 } else { start };
    let body = &bytes[(start - offset) as usize..(end - offset) as usize];
    let mut h =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n", body.len());
    if range.is_some() {
        let shift = u64::from(faults.shift_content_range);
        h.push_str(&format!("Content-Range: bytes {}-{}/{size}\r\n", start + shift, end - 1 + shift));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await?;
    if let Some(n) = faults.trickle {
        log(state, path, range, 206, n.min(body.len()) as u64);
        sock.write_all(&body[..n.min(body.len())]).await?;
        sock.flush().await?;
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(());
    }
    if let Some((k, d)) = faults.stall_every {
        if n % k == 0 {
            tokio::time::sleep(d).await;
        }
    }
    let code = if range.is_some() { 206 } else { 200 };
    if every(faults.reset_every) || every(faults.truncate_every) {
        let half = body.len() / 2;
        log(state, path, range, code, half as u64);
        sock.write_all(&body[..half]).await?;
        sock.flush().await?;
        if every(faults.reset_every) {
            #[allow(deprecated)] // zero linger: the drop sends RST at once, nothing blocks
            sock.set_linger(Some(Duration::ZERO))?;
        }
        return Ok(());
    }
    // Logged before the body goes out: once the client has the body it may send its next
    // request on another connection, whose entry must not land before this one.
    log(state, path, range, code, body.len() as u64);
    sock.write_all(body).await?;
    sock.shutdown().await
}

/// A large file that is zeros except its last bytes (a footer); only asked ranges are built.
struct VirtualFile {
    size: u64,
    tail: Vec<u8>,
}

impl VirtualFile {
    /// The bytes of `range` (clipped to the file), or the whole file without a range.
    fn materialize(&self, range: Option<(u64, u64)>) -> Vec<u8> {
        let (a, b) = range.map_or((0, self.size), |(a, b)| (a.min(self.size), b.min(self.size)));
        let tail_start = self.size - self.tail.len() as u64;
        (a..b).map(|i| if i >= tail_start { self.tail[(i - tail_start) as usize] } else { 0 }).collect()
    }
}
