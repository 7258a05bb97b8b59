//! A stub Hugging Face hub on 127.0.0.1 for the hub tests (shared by `janus/tests/hub.rs`
//! and `janus-cli/tests/hub_cli.rs`).
//!
//! It answers what hf-hub's blocking client asks, the way huggingface.co does:
//! - `GET /api/models/{owner}/{name}/revision/{rev}`: `{"id", "sha", "siblings": [{"rfilename",
//!   "size", "lfs": {"sha256", "size"}}]}` (`lfs` for weight files only, as with `?blobs=true`);
//! - `GET /{owner}/{name}/resolve/{rev}/{file}`: small (git) files directly with `etag` (the
//!   git blob sha1) and `x-repo-commit`; weights (LFS) as a 302 to `/cdn/{etag}` with
//!   `x-linked-etag` (the sha256), the way the hub redirects to its CDN;
//! - `Range: bytes=a-` / `bytes=a-b` with 206 and `Content-Range` (hf-hub sizes a file by
//!   asking for `bytes=0-0`, and resumes with `bytes=n-`);
//! - 404s with `x-error-code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), 401 for a
//!   repo that wants a bearer token it was not sent;
//! - injected faults: a file's body cut off after some bytes (the connection then closes), or
//!   other bytes served than the listing and etag describe.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One repo the stub serves.
#[derive(Debug, Clone)]
pub struct StubRepo {
    /// `owner/name`.
    pub id: String,
    /// The commit `main` points to (also accepted as a revision itself).
    pub sha: String,
    /// Files by repo path.
    pub files: Vec<(String, Vec<u8>)>,
    /// A bearer token the repo requires (a private repo).
    pub token: Option<String>,
    /// Sizes the file listing states instead of the true ones (a lying listing).
    pub listed_sizes: Vec<(String, usize)>,
    /// Bytes served for a file instead of its contents, which the listing and etag still
    /// describe (a corrupted transfer).
    pub served: Vec<(String, Vec<u8>)>,
}

impl StubRepo {
    /// A repo without files.
    pub fn new(id: &str, sha: &str) -> Self {
        Self {
            id: id.to_string(),
            sha: sha.to_string(),
            files: Vec::new(),
            token: None,
            listed_sizes: Vec::new(),
            served: Vec::new(),
        }
    }

    /// A repo holding every file of a fixture directory.
    pub fn from_dir(id: &str, sha: &str, dir: &Path) -> Self {
        let mut repo = Self::new(id, sha);
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            repo.files.push((name, std::fs::read(&p).unwrap()));
        }
        repo
    }

    /// Adds (or replaces) a file.
    pub fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_string(), bytes.into()));
        self
    }

    /// Removes a file.
    pub fn without(mut self, name: &str) -> Self {
        self.files.retain(|(n, _)| n != name);
        self
    }

    /// Requires `Authorization: Bearer {token}`.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Makes the file listing state `size` for `name`.
    pub fn listing_size(mut self, name: &str, size: usize) -> Self {
        self.listed_sizes.push((name.to_string(), size));
        self
    }

    /// Serves `bytes` for `name` while the listing and etag describe its true contents.
    pub fn serving(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.served.push((name.to_string(), bytes.into()));
        self
    }

    /// What a download of `name` receives.
    fn served<'a>(&'a self, name: &str, bytes: &'a [u8]) -> &'a [u8] {
        self.served
            .iter()
            .find(|(n, _)| n == name)
            .map_or(bytes, |(_, b)| b.as_slice())
    }

    fn listed_size(&self, name: &str, bytes: &[u8]) -> usize {
        self.listed_sizes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(bytes.len(), |(_, s)| *s)
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }
}

/// Whether the hub stores a file with LFS (and redirects its downloads to the CDN).
fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

/// The hub's etag of a file: the LFS oid (sha256 of the contents) for LFS files, else the
/// git blob sha1 (of `blob {len}\0` and the contents).
pub fn etag(name: &str, bytes: &[u8]) -> String {
    if is_lfs(name) {
        sha256(bytes)
    } else {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(format!("blob {}\0", bytes.len()).as_bytes());
        ctx.update(bytes);
        hex(ctx.finish().as_ref())
    }
}

/// The SHA-256 of some bytes, lowercase hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub target: String,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

struct Fault {
    file: String,
    after: usize,
    times: usize,
}

struct State {
    repos: Vec<StubRepo>,
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
    stop: AtomicBool,
    endpoint: String,
}

/// The running stub; stops on drop.
pub struct StubHub {
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl StubHub {
    /// Starts serving `repos` on a free port of 127.0.0.1.
    pub fn start(repos: Vec<StubRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the stub hub");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State {
            repos,
            seen: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            endpoint: format!("http://{addr}"),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        conns.push(std::thread::spawn(move || serve(stream, &st)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            for c in conns {
                let _ = c.join();
            }
        });
        Self {
            state,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:port`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.state.endpoint.clone()
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Cuts the next `times` full downloads of `file` off after `after` bytes of body.
    pub fn truncate(&self, file: &str, after: usize, times: usize) {
        self.state.faults.lock().unwrap().push(Fault {
            file: file.to_string(),
            after,
            times,
        });
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StubHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address nothing listens on.
pub fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Body bytes to send before closing the connection (a cut-off transfer).
    cut_after: Option<usize>,
}

impl Response {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }

    fn error(status: u16, code: &str) -> Self {
        let body = format!("{{\"error\":\"{code}\"}}");
        Self::new(status, body).header("x-error-code", code)
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// Serves one keep-alive connection until it closes or the stub stops.
fn serve(mut stream: TcpStream, st: &State) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if st.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut lines = head.lines();
        let target = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
            .to_string();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let seen = Seen {
            target: target.clone(),
            range: header("range"),
            authorization: header("authorization"),
        };
        st.seen.lock().unwrap().push(seen.clone());
        let resp = route(st, &seen);
        let mut out = format!("HTTP/1.1 {} X\r\n", resp.status).into_bytes();
        for (k, v) in &resp.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", resp.body.len()).as_bytes());
        let body = match resp.cut_after {
            Some(n) => &resp.body[..n.min(resp.body.len())],
            None => &resp.body[..],
        };
        out.extend_from_slice(body);
        if stream.write_all(&out).is_err() || resp.cut_after.is_some() {
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn route(st: &State, req: &Seen) -> Response {
    let path = req.target.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "models", owner, name, "revision", rev] => {
            let repo = match find_repo(st, owner, name, req) {
                Ok(r) => r,
                Err(resp) => return resp,
            };
            if *rev != "main" && *rev != repo.sha {
                return Response::error(404, "RevisionNotFound");
            }
            let siblings: Vec<String> = repo
                .files
                .iter()
                .map(|(n, b)| {
                    let size = repo.listed_size(n, b);
                    let lfs = if is_lfs(n) {
                        let sha = sha256(b);
                        format!(",\"lfs\":{{\"sha256\":\"{sha}\",\"size\":{size}}}")
                    } else {
                        String::new()
                    };
                    format!("{{\"rfilename\":\"{n}\",\"size\":{size}{lfs}}}")
                })
                .collect();
            let body = format!(
                "{{\"id\":\"{}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
                repo.id,
                repo.sha,
                siblings.join(",")
            );
            Response::new(200, body).header("content-type", "application/json")
        }
        ["cdn", tag] => {
            let file = st.repos.iter().find_map(|r| {
                let (name, bytes) = r.files.iter().find(|(n, b)| etag(n, b) == *tag)?;
                Some((name, r.served(name, bytes)))
            });
            match file {
                Some((name, bytes)) => serve_bytes(st, name, bytes, req),
                None => Response::error(404, "EntryNotFound"),
            }
        }
        [owner, name, "resolve", rev, file @ ..] => {
            let repo = match find_repo(st, owner, name, req) {
                Ok(r) => r,
                Err(resp) => return resp,
            };
            if *rev != "main" && *rev != repo.sha {
                return Response::error(404, "RevisionNotFound");
            }
            let file = file.join("/");
            let Some(bytes) = repo.get(&file) else {
                return Response::error(404, "EntryNotFound");
            };
            let tag = etag(&file, bytes);
            if is_lfs(&file) {
                Response::new(302, Vec::new())
                    .header("location", format!("{}/cdn/{tag}", st.endpoint))
                    .header("x-repo-commit", &repo.sha)
                    .header("x-linked-etag", format!("\"{tag}\""))
                    .header("x-linked-size", bytes.len().to_string())
            } else {
                serve_bytes(st, &file, repo.served(&file, bytes), req)
                    .header("x-repo-commit", &repo.sha)
                    .header("etag", format!("\"{tag}\""))
            }
        }
        _ => Response::error(404, "NotFound"),
    }
}

fn find_repo<'a>(
    st: &'a State,
    owner: &str,
    name: &str,
    req: &Seen,
) -> Result<&'a StubRepo, Response> {
    let id = format!("{owner}/{name}");
    let repo = st
        .repos
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Response::error(404, "RepoNotFound"))?;
    if let Some(token) = &repo.token {
        if req.authorization.as_deref() != Some(&format!("Bearer {token}")) {
            return Err(Response::error(401, "RepoNotFound"));
        }
    }
    Ok(repo)
}

/// A file's bytes, honouring `Range`, with the injected cut-offs applied to full transfers.
fn serve_bytes(st: &State, name: &str, bytes: &[u8], req: &Seen) -> Response {
    let size = bytes.len();
    let (start, end) = match req.range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(size).min(size);
            if a >= size || a >= b {
                return Response::new(416, Vec::new())
                    .header("content-range", format!("bytes */{size}"));
            }
            (a, b)
        }
        None => (0, size),
    };
    let mut resp = if req.range.is_some() {
        Response::new(206, bytes[start..end].to_vec())
            .header("content-range", format!("bytes {start}-{}/{size}", end - 1))
    } else {
        Response::new(200, bytes.to_vec())
    };
    // hf-hub sizes files with `bytes=0-0`; only real transfers are cut.
    if end - start > 1 {
        let mut faults = st.faults.lock().unwrap();
        if let Some(f) = faults.iter_mut().find(|f| f.file == name && f.times > 0) {
            f.times -= 1;
            resp.cut_after = Some(f.after.saturating_sub(start));
        }
    }
    resp
}
