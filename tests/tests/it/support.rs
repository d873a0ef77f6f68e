//! Shared test support: storage backends, the `crow` binary, Python readers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crow_lake::Lake;
use crow_schemas::config::LakeConfig;

/// One test on both lake backends, by construction: `both_backends!(name
/// => body)` makes the module `name` with the tests `local` (a temp folder)
/// and `s3` (a bucket of its own on the local S3-compatible server), each calling
/// `body(Backend)` of the enclosing module — `async fn body(b: Backend)`, or
/// with `sync`, a plain `fn` run as a `#[test]`. `cargo test ::s3` runs
/// every S3 case.
macro_rules! both_backends {
    ($name:ident => $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$body($crate::support::Backend::local()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$body($crate::support::Backend::s3()).await;
            }
        }
    };
    (sync $name:ident => $body:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$body($crate::support::Backend::local());
            }

            #[test]
            fn s3() {
                super::$body($crate::support::Backend::s3());
            }
        }
    };
}
pub(crate) use both_backends;

/// A lake location under test: a temp folder or a prefix on the local
/// S3-compatible server that the test command started.
pub struct Backend {
    pub name: &'static str,
    pub uri: String,
    pub env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// Creates `bucket` on the S3 server at `endpoint` (`http://host:port`):
/// one unsigned `PUT /bucket` over a plain socket, so that sync and async
/// tests alike can call it (the local server does not check signatures).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = std::net::TcpStream::connect(&host)
        .unwrap_or_else(|e| panic!("the S3 server at {endpoint}: {e}"));
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send the bucket request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .expect("read the bucket answer");
    let status = answer.lines().next().unwrap_or("");
    assert!(
        status.split_whitespace().nth(1) == Some("200"),
        "creating bucket {bucket} on {endpoint}: {status}\n{answer}"
    );
}

/// Copies the folder `from` (a local lake, say) to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

impl Backend {
    pub fn local() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        Backend {
            name: "local",
            uri: dir.path().join("lake").display().to_string(),
            env: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// A local lake at `path` (a folder the caller owns).
    pub fn at(path: &Path) -> Backend {
        Backend {
            name: "local",
            uri: path.display().to_string(),
            env: Vec::new(),
            _dir: None,
        }
    }

    /// A lake in a bucket of its own on an S3 server of
    /// `CROWTEST_S3_ENDPOINT` (started by `scripts/test.sh`), at a prefix.
    ///
    /// A bucket per test, not a prefix per test in one shared bucket: the
    /// local server (moto) answers a listing by scanning every key of the
    /// bucket, so in a shared bucket each test's listings grew with every
    /// test before it (BENCHMARKS.md, "CI"). The variable may list several
    /// servers (separated by spaces): each new lake takes the next one, so
    /// one server process (one core: moto is Python) does not queue the
    /// requests of every test running at once.
    pub fn s3() -> Backend {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let endpoints = std::env::var("CROWTEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("CROWTEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh, which starts a local S3 server")
        });
        let endpoints: Vec<&str> = endpoints.split_whitespace().collect();
        assert!(
            !endpoints.is_empty(),
            "CROWTEST_S3_ENDPOINT names no server"
        );
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = endpoints[n % endpoints.len()].to_string();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bucket = format!("crow-test-{}", &id[..16]);
        create_bucket(&endpoint, &bucket);
        // A lake on S3 keeps its collector's WAL in `./crow-wal` unless told
        // otherwise, and a WAL folder has one collector at a time: two
        // tests' `crow demo` at once on S3 would share the test process's
        // folder, and the second is refused. Each S3 lake gets its own.
        let wal = tempfile::tempdir().expect("a WAL folder");
        Backend {
            name: "s3",
            uri: format!("s3://{bucket}/{}", &id[16..]),
            env: vec![
                ("AWS_ENDPOINT_URL".into(), endpoint),
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
                ("CROW_WAL_DIR".into(), wal.path().display().to_string()),
            ],
            _dir: Some(wal),
        }
    }

    /// The S3 server of an S3 lake (`http://host:port`).
    pub fn s3_endpoint(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL")
            .map(|(_, v)| v.as_str())
            .expect("an S3 lake has an endpoint")
    }

    /// Another lake beside this one, on the same backend: `<uri>-<suffix>`
    /// (in the same temp folder or bucket; it lives as long as `self`).
    pub fn beside(&self, suffix: &str) -> Backend {
        Backend {
            name: self.name,
            uri: format!("{}-{suffix}", self.uri),
            env: self.env.clone(),
            _dir: None,
        }
    }

    pub fn lake_config(&self) -> LakeConfig {
        let mut cfg = LakeConfig {
            uri: self.uri.clone(),
            ..LakeConfig::default()
        };
        for (k, v) in &self.env {
            match k.as_str() {
                "AWS_ENDPOINT_URL" => cfg.s3.endpoint = v.clone(),
                "AWS_ACCESS_KEY_ID" => cfg.s3.access_key_id = v.as_str().into(),
                "AWS_SECRET_ACCESS_KEY" => cfg.s3.secret_access_key = v.as_str().into(),
                "AWS_REGION" => cfg.s3.region = v.clone(),
                "AWS_ALLOW_HTTP" => cfg.s3.allow_http = true,
                _ => {}
            }
        }
        cfg
    }

    pub async fn lake(&self) -> Lake {
        Lake::open(&self.lake_config()).await.expect("open lake")
    }

    /// Run the `crow` binary against this lake.
    pub fn crow(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(crow_bin());
        cmd.arg("--lake").arg(&self.uri).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env_remove("CROW_CONFIG").env_remove("CROW_LAKE");
        cmd.output().expect("run crow")
    }

    /// Run `crow`, assert success, return stdout.
    pub fn crow_ok(&self, args: &[&str]) -> String {
        let out = self.crow(args);
        assert!(
            out.status.success(),
            "crow {args:?} on {} failed: {}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run `crow ... --format json`, parse stdout.
    pub fn crow_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.crow_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crow {a:?}: not JSON ({e}): {out}"))
    }

    /// `crow … --format json` with extra settings in its environment, off
    /// the async runtime's threads (for tests that serve HTTP to it).
    pub async fn crow_json_env<K, V>(&self, env: &[(K, V)], args: &[&str]) -> serde_json::Value
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(crow_bin());
        cmd.arg("--lake")
            .arg(&self.uri)
            .args(args)
            .args(["--format", "json"]);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env_remove("CROW_CONFIG").env_remove("CROW_LAKE");
        let a = format!("{args:?}");
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run crow"))
            .await
            .expect("join");
        assert!(
            out.status.success(),
            "crow {a} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("crow {a}: not JSON ({e})"))
    }

    /// The rows `crow sql` answers `sql` (as JSON objects).
    pub fn sql_rows(&self, sql: &str) -> Vec<serde_json::Value> {
        match self.crow_json(&["sql", sql]) {
            serde_json::Value::Array(rows) => rows,
            other => panic!("crow sql {sql}: not a list of rows: {other}"),
        }
    }
}

/// The `crow` binary built beside this test binary, with `crow bench`
/// (`cargo build --workspace --all-targets` first, which turns on
/// crow-cli's `bench` feature; scripts/test.sh does).
pub fn crow_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CROWTEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-xxxx → target/<profile>/crow
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("crow{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build --workspace --all-targets` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The Python interpreter of the test virtualenv (scripts/test-deps.sh).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CROWTEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test-deps.sh (scripts/test.sh does)",
        venv.display()
    );
    venv
}

/// Run `tests/node/SCRIPT` with Node, the npm packages of
/// scripts/test-deps.sh on its module path; its stdout.
pub fn node(script: &str, args: &[&str]) -> String {
    let modules = python()
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("node/node_modules"))
        .expect("the venv folder");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/test-deps.sh (scripts/test.sh does)",
        modules.display()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join(script);
    let out = Command::new("node")
        .arg(&path)
        .args(args)
        .env("NODE_PATH", &modules)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node {script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Read a table with an independent Python reader; rows as JSON objects.
pub fn python_read(
    backend: &Backend,
    engine: &str,
    table: &str,
    cols: &[&str],
) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/read_table.py");
    let uri = if backend.uri.starts_with("s3://") {
        format!("{}/{table}", backend.uri)
    } else {
        Path::new(&backend.uri).join(table).display().to_string()
    };
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(engine).arg(&uri).arg(cols.join(","));
    for (k, v) in &backend.env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "{engine} failed to read {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// A refusal answered with `status` and `Retry-After`: its JSON body (a
/// problem document or the collector's error), after checking its `code`.
pub async fn refused_with(
    r: reqwest::Response,
    status: u16,
    code: &str,
    retry_after: &str,
) -> serde_json::Value {
    assert_eq!(r.status().as_u16(), status);
    let after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = r.json().await.expect("a JSON error");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(after.as_deref(), Some(retry_after), "{body}");
    body
}

/// A TCP relay to an S3 server that can be cut and restored: storage that
/// stops answering, for whoever reaches it through the relay (open
/// connections are dropped, new ones refused), then answers again at the
/// same address.
pub struct Relay {
    pub url: String,
    addr: std::net::SocketAddr,
    target: String,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// A relay to the S3 server of `b` (an S3 lake): its processes reach
    /// the lake through the relay when given `AWS_ENDPOINT_URL = url`.
    pub async fn for_lake(b: &Backend) -> Relay {
        Self::start(b.s3_endpoint()).await
    }

    /// A relay to `target` (`http://host:port`) on a free local port.
    pub async fn start(target: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        Self::serve(listener, target)
    }

    fn serve(listener: tokio::net::TcpListener, target: &str) -> Relay {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let addr = listener.local_addr().expect("relay address");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let to = target.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Dropping the listener refuses new connections.
                    _ = stopped.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let to = to.clone();
                        let mut stopped = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await
                            else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = stopped.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Relay {
            url: format!("http://{addr}"),
            addr,
            target,
            stop,
        }
    }

    /// Storage stops answering.
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }

    /// Storage answers again, at the same address (after [`Relay::cut`]).
    pub async fn restore(&self) -> Relay {
        let started = std::time::Instant::now();
        loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => return Self::serve(l, &self.target),
                Err(e) => {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(10),
                        "rebinding the relay at {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A running `crow serve` child process.
pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Disconnected when the thread reading the server's log has read it
    /// all (waited for after a failing test stops the server, so the
    /// server's last lines are in the dump).
    log_read: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Server {
    /// Start `crow serve` on a free port against `backend`, with extra
    /// environment variables, and wait until it listens.
    pub fn start(backend: &Backend, wal_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_on(backend, wal_dir, "127.0.0.1:0", env)
    }

    /// [`Server::start`] listening on `listen`.
    pub fn start_on(
        backend: &Backend,
        wal_dir: &Path,
        listen: &str,
        env: &[(&str, &str)],
    ) -> Server {
        use std::io::BufRead;
        let mut cmd = Command::new(crow_bin());
        cmd.args([
            "--lake",
            &backend.uri,
            "serve",
            "--listen",
            listen,
            "--wal-dir",
        ])
        .arg(wal_dir)
        .env_remove("CROW_CONFIG")
        .env_remove("CROW_LAKE")
        .env("CROW_LOG", "info")
        // Tests that want the scheduler turn it on (tests/it/schedule.rs):
        // their `env` below overrides this.
        .env("CROW_SCHEDULE_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        for (k, v) in &backend.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn crow serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = logs.clone();
        let (read_tx, log_read) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _read = read_tx;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                }
                l.lock().expect("logs").push(line);
            }
        });
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("crow serve did not start: {:?}", logs.lock().expect("logs"));
            }
        };
        Server {
            child,
            addr,
            logs,
            log_read: std::sync::Mutex::new(log_read),
        }
    }

    /// The Prometheus text the server's `/metrics` answers (from this
    /// machine, so no token is needed).
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The server is gone, so its log's pipe ends: every line it
            // wrote up to the panic is read before the dump (a few seconds
            // at most, should something else hold the pipe open).
            if let Ok(read) = self.log_read.lock() {
                let _ = read.recv_timeout(std::time::Duration::from_secs(5));
            }
            if let Ok(logs) = self.logs.lock() {
                eprintln!("--- crow serve log ---\n{}", logs.join("\n"));
            }
        }
    }
}

/// Land web events (normalised as the collector does) straight into the
/// lake, received at `received`.
pub async fn land_web(
    lake: &Lake,
    org: &str,
    events: &[serde_json::Value],
    received: chrono::DateTime<chrono::Utc>,
) {
    let strip: Vec<String> = Vec::new();
    let ctx = crow_ingest::normalize::NormalizeContext {
        org_id: org,
        received_at: received,
        ip_hash: None,
        strip_query_params: &strip,
        ip_salt: "salt",
    };
    let rows: Vec<_> = events
        .iter()
        .map(|e| crow_ingest::normalize::normalize(e, None, &ctx).expect("valid event"))
        .collect();
    let batch =
        crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows).expect("batch");
    lake.append("raw_web_events", vec![batch])
        .await
        .expect("append");
}

/// The value of `series` (a metric's name with its labels, as `/metrics`
/// prints them) in the Prometheus `text`; panics, quoting the text, when the
/// series is not there.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("/metrics lacks {series}: {text}"))
}

/// A response's status and body: the body as JSON, or as a JSON string when
/// it is not JSON.
pub async fn answer(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// POST `body` as JSON to `url`, with the API key `key` when given (two
/// minutes at most): see [`answer`].
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut r = http.post(url).json(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .expect("request");
    answer(r).await
}

/// A log line without its colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `crow serve --only api` on `b`, with `listener` (a protocol's listen
/// setting) and then the settings `env`, fails at startup with an error
/// naming `named`.
pub fn serve_refuses(b: &Backend, listener: (&str, &str), env: &[(&str, &str)], named: &str) {
    let mut cmd = Command::new(crow_bin());
    cmd.args([
        "--lake",
        &b.uri,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--only",
        "api",
    ])
    .env_remove("CROW_CONFIG")
    .env_remove("CROW_LAKE")
    .env(listener.0, listener.1);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("crow serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(named),
        "{env:?}: {err}"
    );
}

/// The rows `sql` answers over `POST /api/v1/sql` of `server` with the API
/// key `key`, as JSON.
pub async fn sql_over_http(
    http: &reqwest::Client,
    server: &Server,
    key: &str,
    sql: &str,
) -> serde_json::Value {
    http.post(server.url("/api/v1/sql"))
        .bearer_auth(key)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .expect("POST /api/v1/sql")
        .json()
        .await
        .expect("rows as JSON")
}

/// Run the client `tests/py/SCRIPT` with `args`: its exit code and the JSON
/// it printed (the clients print one JSON document, an `{"error": …}` one
/// with exit code 3 when the server refused them).
pub fn python_client(script: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// Serve `app` on a free local port for the rest of the test: its base URL
/// (`http://127.0.0.1:PORT`).
pub async fn serve_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The Retry-After values a token bucket can answer when its next token was
/// `refill_s` seconds away at the first request and the requests took
/// `elapsed` (measured around them, so at least the server's own time): the
/// remaining wait rounded up, never under a second. One value, `refill_s`
/// rounded up, while `elapsed` is under a second.
pub fn retry_after_range(
    refill_s: f64,
    elapsed: std::time::Duration,
) -> std::ops::RangeInclusive<u64> {
    let hi = refill_s.ceil() as u64;
    let lo = (refill_s - elapsed.as_secs_f64()).ceil().max(1.0) as u64;
    lo.min(hi)..=hi
}
