//! Real S3 servers for tests, on loopback, each with a fresh bucket and known credentials:
//! `s3s-fs` (a Rust server over a directory that checks SigV4 signatures) and `moto` in server
//! mode (an independent implementation in Python, no authentication), both installed by
//! `scripts/install-s3-servers` into `~/.cache/pgsafe-test` (or `$PGSAFE_TEST_CACHE`). A missing
//! server fails the test with the command that installs it: a skipped object-storage test would
//! hide a broken setup behind a green run.
//!
//! [`FaultProxy`] sits between a client and a server and injects failures (503 SlowDown, 500,
//! connection resets, truncated answers, stalls) into chosen kinds of requests, a bounded number
//! of times.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsafe::storage::s3::{S3Config, S3Credentials, S3Settings};

/// The versions `scripts/install-s3-servers` installs (keep the two in step).
pub const S3S_FS_VERSION: &str = "0.14.1";
pub const MOTO_VERSION: &str = "5.1.18";

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    S3sFs,
    Moto,
}

impl S3Kind {
    pub const ALL: [S3Kind; 2] = [S3Kind::S3sFs, S3Kind::Moto];
}

/// Where the install script caches the servers.
pub fn s3_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGSAFE_TEST_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/pgsafe-test")
}

fn server_binary(kind: S3Kind) -> PathBuf {
    let (dir, bin, version) = match kind {
        S3Kind::S3sFs => ("s3s-fs", "s3s-fs", S3S_FS_VERSION),
        S3Kind::Moto => ("moto", "moto_server", MOTO_VERSION),
    };
    let folder = s3_cache_dir().join(format!("{dir}-{version}"));
    let stamp = std::fs::read_to_string(folder.join(".installed")).unwrap_or_default();
    let path = folder.join("bin").join(bin);
    assert!(
        stamp.trim() == version && path.is_file(),
        "{bin} {version} is not installed in {}: run scripts/install-s3-servers",
        folder.display()
    );
    path
}

/// A free port on loopback (the server binds it right after; a clash is retried by the caller).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn wait_listening(port: u16, child: &mut Child, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the S3 server did not listen on port {port}; its log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A running S3 server with one empty bucket. Stopped (and its data removed) when dropped;
/// when the test is failing, its folder and log are kept and their path printed.
pub struct S3Server {
    pub kind: S3Kind,
    pub port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
}

static SERVERS: AtomicU64 = AtomicU64::new(0);

impl S3Server {
    /// Starts a server of `kind` on a free loopback port and creates the bucket `pgsafe-test`.
    pub fn start(kind: S3Kind) -> S3Server {
        let bin = server_binary(kind);
        let dir = tempfile::Builder::new()
            .prefix("pgsafe-s3-")
            .tempdir_in(crate::scratch_root())
            .expect("a folder for the S3 server");
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let access_key = format!("pgsafe-test-key-{n}");
        let secret_key = format!("pgsafe-test-secret-{}-{n}", std::process::id());
        let bucket = "pgsafe-test".to_string();
        for _attempt in 0..5 {
            let port = free_port();
            let log_path = dir.path().join("server.log");
            let log = std::fs::File::create(&log_path).expect("server log");
            let mut cmd = Command::new(&bin);
            match kind {
                S3Kind::S3sFs => {
                    let data = dir.path().join("data");
                    std::fs::create_dir_all(data.join(&bucket)).expect("bucket folder");
                    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--access-key", &access_key, "--secret-key", &secret_key])
                        .arg(&data);
                }
                S3Kind::Moto => {
                    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                }
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            if !wait_listening(port, &mut child, &log_path) {
                // Lost the port to someone else: try another.
                let _ = child.wait();
                continue;
            }
            let server = S3Server {
                kind,
                port,
                bucket: bucket.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                child,
                dir: Some(dir),
            };
            if kind == S3Kind::Moto {
                // moto keeps buckets in memory: create it over HTTP (no authentication).
                let (status, body) = raw_request(port, "PUT", &format!("/{bucket}"), &[]);
                assert!(status == 200, "create bucket on moto: {status} {body}");
            }
            return server;
        }
        panic!("could not start {} on a free port", bin.display());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings that reach this server with its credentials.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: Some(true),
            allow_http: None,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            session_token: None,
            credentials: None,
            retry_budget: None,
        }
    }

    /// `s3://BUCKET/PREFIX` for a repository under `prefix` (may be empty).
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// The configuration of a repository under `prefix`, with short retry budgets for tests.
    pub fn config(&self, prefix: &str) -> S3Config {
        let mut c = S3Config::resolve(&self.url(prefix), &self.settings(), |_| None)
            .expect("S3 test configuration");
        c.retry_budget = Duration::from_secs(20);
        c.request_timeout = Duration::from_secs(30);
        c.credentials = Some(S3Credentials {
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
        });
        c
    }

    /// The environment variables that point pgsafe at this server (for CLI tests).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    /// The multipart uploads in progress in the bucket (ListMultipartUploads), as
    /// (key, upload id). moto answers without authentication; for s3s-fs the uploads are
    /// read from its folder.
    pub fn multipart_uploads(&self) -> Vec<String> {
        match self.kind {
            S3Kind::Moto => {
                let (status, body) =
                    raw_request(self.port, "GET", &format!("/{}?uploads", self.bucket), &[]);
                assert_eq!(status, 200, "list multipart uploads: {body}");
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split("</Key>").next())
                    .map(str::to_string)
                    .collect()
            }
            S3Kind::S3sFs => {
                // s3s-fs keeps an upload's parts as files named `.upload_id-…` in its root.
                let data = self.dir.as_ref().map(|d| d.path().join("data"));
                let mut out = Vec::new();
                if let Some(data) = data {
                    walk_uploads(&data, &mut out);
                }
                out
            }
        }
    }

    /// The folder s3s-fs keeps the bucket in (`None` for moto).
    pub fn bucket_dir(&self) -> Option<PathBuf> {
        match self.kind {
            S3Kind::S3sFs => self
                .dir
                .as_ref()
                .map(|d| d.path().join("data").join(&self.bucket)),
            S3Kind::Moto => None,
        }
    }
}

fn walk_uploads(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if p.is_dir() {
            walk_uploads(&p, out);
        } else if name.starts_with(".upload") {
            out.push(p.display().to_string());
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            let kept = d.keep();
            eprintln!(
                "S3 server {:?} on port {}: folder and log kept in {}",
                self.kind,
                self.port,
                kept.display()
            );
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the status and the body as text.
fn raw_request(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the S3 server");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("receive");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The kind of an S3 request, as the proxy tells it from the method and query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Any request.
    Any,
    /// PUT of a whole object.
    PutObject,
    /// POST `?uploads`.
    CreateMultipart,
    /// PUT with `partNumber`.
    UploadPart,
    /// POST with `uploadId`.
    CompleteMultipart,
    /// DELETE with `uploadId`.
    AbortMultipart,
    /// GET of an object.
    Get,
    /// HEAD of an object.
    Head,
    /// GET of the bucket (a listing).
    List,
    /// DELETE of an object, or POST `?delete` (bulk).
    Delete,
}

impl RequestKind {
    fn of(method: &str, target: &str) -> RequestKind {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let has = |k: &str| {
            query
                .split('&')
                .any(|p| p == k || p.starts_with(&format!("{k}=")))
        };
        // Path style: /bucket or /bucket/key...
        let is_bucket = path
            .trim_start_matches('/')
            .split_once('/')
            .is_none_or(|(_, k)| k.is_empty());
        match method {
            "PUT" if has("partNumber") => RequestKind::UploadPart,
            "PUT" => RequestKind::PutObject,
            "POST" if has("uploads") => RequestKind::CreateMultipart,
            "POST" if has("uploadId") => RequestKind::CompleteMultipart,
            "POST" if has("delete") => RequestKind::Delete,
            "DELETE" if has("uploadId") => RequestKind::AbortMultipart,
            "DELETE" => RequestKind::Delete,
            "HEAD" => RequestKind::Head,
            "GET" if is_bucket => RequestKind::List,
            "GET" => RequestKind::Get,
            _ => RequestKind::Any,
        }
    }
}

/// What the proxy does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 with S3's SlowDown error, without forwarding.
    SlowDown,
    /// Answer 500 InternalError, without forwarding.
    InternalError,
    /// Reset the connection before forwarding (the request never reaches the server).
    ResetBefore,
    /// Forward, then reset the connection instead of answering (done, but the answer is lost).
    ResetAfter,
    /// Forward, then send the answer's head and half its body and close.
    Truncate,
    /// Forward, then send the answer's head and half its body and end the connection cleanly
    /// (FIN, not a reset: the client surely reads the half before it sees the end).
    CutBody,
    /// Hold the connection open without answering for this long, then close it.
    Stall(Duration),
}

struct Rule {
    kind: RequestKind,
    fault: Fault,
    left: u32,
}

#[derive(Default)]
struct ProxyState {
    rules: Vec<Rule>,
    seen: Vec<(RequestKind, Option<Fault>)>,
}

/// A loopback HTTP proxy in front of an [`S3Server`] that injects [`Fault`]s. Every request is
/// forwarded on its own connection (`Connection: close`, a header SigV4 does not sign).
pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (a loopback port).
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &st);
                });
            }
        });
        FaultProxy { port, state, stop }
    }

    /// Injects `fault` into the next `count` requests of `kind`. Rules apply in the order
    /// they were added.
    pub fn inject(&self, kind: RequestKind, fault: Fault, count: u32) {
        self.lock().rules.push(Rule {
            kind,
            fault,
            left: count,
        });
    }

    /// Drops every rule that is left.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.lock().seen.iter().filter(|(_, f)| f.is_some()).count()
    }

    /// Requests seen so far, with the fault injected into each.
    pub fn seen(&self) -> Vec<(RequestKind, Option<Fault>)> {
        self.lock().seen.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one request of a client connection, then closes it (every answer says
/// `Connection: close`).
fn serve(mut client: TcpStream, upstream: u16, state: &Mutex<ProxyState>) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client)? else {
        return Ok(());
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let kind = RequestKind::of(method, target);
    let fault = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let f = st
            .rules
            .iter_mut()
            .find(|r| r.left > 0 && (r.kind == kind || r.kind == RequestKind::Any))
            .map(|r| {
                r.left -= 1;
                r.fault
            });
        st.seen.push((kind, f));
        f
    };
    match fault {
        Some(Fault::SlowDown) => error_answer(
            &mut client,
            503,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        Some(Fault::InternalError) => error_answer(
            &mut client,
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        Some(Fault::ResetBefore) => reset(client),
        Some(Fault::Stall(d)) => {
            std::thread::sleep(d);
            Ok(())
        }
        Some(Fault::ResetAfter) => {
            forward(upstream, &head, &body)?;
            reset(client)
        }
        Some(Fault::CutBody) => {
            let answer = forward(upstream, &head, &body)?;
            let cut = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len() / 2, |h| h + 4 + (answer.len() - h - 4) / 2);
            client.write_all(&answer[..cut])?;
            client.shutdown(Shutdown::Write)
        }
        Some(Fault::Truncate) => {
            let answer = forward(upstream, &head, &body)?;
            let cut = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len() / 2, |h| h + 4 + (answer.len() - h - 4) / 2);
            client.write_all(&answer[..cut])?;
            reset(client)
        }
        None => {
            let answer = forward(upstream, &head, &body)?;
            client.write_all(&answer)
        }
    }
}

fn reset(client: TcpStream) -> std::io::Result<()> {
    // SO_LINGER 0: close sends a reset instead of a clean end.
    let _ = nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(client);
    Ok(())
}

fn error_answer(client: &mut TcpStream, status: u16, code: &str, msg: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"
    );
    let reason = if status == 503 {
        "Service Unavailable"
    } else {
        "Internal Server Error"
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(resp.as_bytes())?;
    client.shutdown(Shutdown::Write)
}

/// Reads one request (head and a Content-Length body); `None` at the connection's end.
fn read_request(s: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut byte)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Ok(Some((head, body)))
}

/// Sends the request upstream on a new connection that the server closes after answering,
/// and returns the whole answer.
fn forward(upstream: u16, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], upstream));
    let mut up = TcpStream::connect(addr)?;
    let mut out = String::new();
    for (i, line) in head.trim_end_matches("\r\n").split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    Ok(answer)
}
