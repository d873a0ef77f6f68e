//! API exports are bounded, against the real `crow serve`: a runaway query
//! (a recursive CTE without end) is stopped at `api.export_timeout_seconds`
//! and the server goes idle; row and byte caps; `DELETE` cancels a running
//! export (same organization only, through any server over the lake); the
//! per-organization concurrency limit answers 429 with Retry-After. Whenever
//! an export does not succeed, only its status file is left. Each on both
//! lake backends (the export area is a folder or an S3 prefix).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{both_backends, Backend, Server};

/// Never ends: one row per iteration, as fast as the engine can.
const RUNAWAY: &str =
    "with recursive t(n) as (select 1 union all select n+1 from t) select n, repeat('x',100) from t";

struct World {
    b: Backend,
    _wal: tempfile::TempDir,
    server: Server,
    org_a: String,
    key_a: String,
    key_b: String,
    http: reqwest::Client,
}

/// Two organizations with an export key each, and a server with `env`.
fn world(b: Backend, env: &[(&str, &str)]) -> World {
    b.crow_ok(&["init"]);
    let a = b.crow_json(&["orgs", "create", "--name", "Alpha"]);
    b.crow_json(&["orgs", "create", "--name", "Beta"]);
    let key = |org: &str| {
        let k = b.crow_json(&["keys", "create", "--org", org, "--scope", "export"]);
        k["secret"].as_str().expect("secret").to_string()
    };
    let (key_a, key_b) = (key("Alpha"), key("Beta"));
    let wal = tempfile::tempdir().expect("wal");
    let mut env = env.to_vec();
    env.push(("CROW_API_RATE_LIMIT_BURST", "100000"));
    let server = Server::start(&b, wal.path(), &env);
    World {
        org_a: a["org_id"].as_str().expect("org").to_string(),
        b,
        _wal: wal,
        server,
        key_a,
        key_b,
        http: reqwest::Client::new(),
    }
}

impl World {
    async fn start(&self, key: &str, body: Value) -> reqwest::Response {
        self.start_on(&self.server, key, body).await
    }

    async fn start_on(&self, server: &Server, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(server.url("/api/v1/exports"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("POST /api/v1/exports")
    }

    /// Start an export that must be accepted; its id.
    async fn started(&self, key: &str, body: Value) -> String {
        let r = self.start(key, body.clone()).await;
        let s = r.status().as_u16();
        let v: Value = r.json().await.expect("status JSON");
        assert_eq!(s, 202, "{body}: {v}");
        assert_eq!(v["status"], "running", "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn status(&self, key: &str, id: &str) -> Value {
        let r = self
            .http
            .get(self.server.url(&format!("/api/v1/exports/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET export");
        assert_eq!(r.status(), 200);
        r.json().await.expect("status JSON")
    }

    async fn delete_on(
        &self,
        server: &Server,
        key: &str,
        id: &str,
    ) -> (u16, Option<String>, Value) {
        let r = self
            .http
            .delete(server.url(&format!("/api/v1/exports/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("DELETE export");
        let s = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = r.text().await.expect("body");
        (
            s,
            ct,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn delete(&self, key: &str, id: &str) -> (u16, Option<String>, Value) {
        self.delete_on(&self.server, key, id).await
    }

    /// Poll until the export is no longer running; panics after `within`.
    async fn finished(&self, id: &str, within: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let s = self.status(&self.key_a, id).await;
            if s["status"] != "running" {
                return s;
            }
            assert!(
                t0.elapsed() < within,
                "export {id} still running after {within:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Files in org A's export area (a folder, or a prefix on S3).
    async fn files(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let lake = self.b.lake().await;
        let url = lake
            .url_of(&format!("_exports/{}/", self.org_a))
            .expect("the export area's URL");
        let (store, prefix) = lake.store_for(&url).expect("store");
        let mut names: Vec<String> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Only the status file of `id` (and other exports' files) is left.
    async fn only_status_left(&self, id: &str) {
        let mine: Vec<String> = self
            .files()
            .await
            .into_iter()
            .filter(|f| f.starts_with(id))
            .collect();
        assert_eq!(mine, vec![format!("{id}.json")], "partial data left behind");
    }

    /// The server answers health quickly and burns (almost) no CPU.
    async fn idle(&self, server: &Server) {
        let t0 = Instant::now();
        let r = self
            .http
            .get(server.url("/api/v1/health"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("health");
        assert_eq!(r.status(), 200);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "health took {:?}",
            t0.elapsed()
        );
        let Some(before) = cpu_seconds(server.child.id()) else {
            return; // no /proc: nothing more to measure
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_seconds(server.child.id()).expect("cpu") - before;
        assert!(
            used < 0.5,
            "the server used {used:.2} s of CPU in 2 s after the export ended"
        );
    }
}

/// User + system CPU time of a process, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3rd.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some(ticks / hz)
}

fn problem(ct: Option<&str>, body: &Value, status: u16, code: &str) {
    assert_eq!(ct, Some("application/problem+json"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

both_backends!(runaway_export_times_out_and_the_server_goes_idle => runaway_export_times_out_and_the_server_goes_idle);

async fn runaway_export_times_out_and_the_server_goes_idle(b: Backend) {
    let w = world(b, &[("CROW_API_EXPORT_TIMEOUT_SECONDS", "3")]);
    let t0 = Instant::now();
    let id = w
        .started(&w.key_a, json!({"sql": RUNAWAY, "format": "csv"}))
        .await;
    // 3 s timeout + 5 s grace for a writer that does not stop + slack.
    let s = w.finished(&id, Duration::from_secs(15)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let why = s["error"].as_str().expect("reason");
    assert!(why.contains("api.export_timeout_seconds"), "{why}");
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "stopped before its timeout"
    );
    assert!(s["rows"].is_null() && s["download_url"].is_null(), "{s}");
    w.only_status_left(&id).await;
    w.idle(&w.server).await;
    // Terminal for good: nothing overwrites it later.
    assert_eq!(w.status(&w.key_a, &id).await, s);
    w.only_status_left(&id).await;
}

both_backends!(row_and_byte_caps_fail_the_export => row_and_byte_caps_fail_the_export);

async fn row_and_byte_caps_fail_the_export(b: Backend) {
    let w = world(
        b,
        &[
            ("CROW_API_EXPORT_MAX_ROWS", "1000"),
            ("CROW_API_EXPORT_MAX_BYTES", "100000"),
            ("CROW_API_MAX_CONCURRENT_EXPORTS_PER_ORG", "5"),
        ],
    );
    let rows = w
        .started(
            &w.key_a,
            json!({"sql": "select value from generate_series(1, 5000)", "format": "jsonl"}),
        )
        .await;
    let bytes = w
        .started(
            &w.key_a,
            json!({"sql": "select repeat('x', 1000) as s from generate_series(1, 500)", "format": "csv"}),
        )
        .await;
    let parquet = w
        .started(
            &w.key_a,
            json!({"sql": "select value, repeat(cast(value as varchar), 300) as s from generate_series(1, 900)", "format": "parquet"}),
        )
        .await;
    let fits = w
        .started(
            &w.key_a,
            json!({"sql": "select value from generate_series(1, 1000)", "format": "jsonl"}),
        )
        .await;
    let s = w.finished(&rows, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "failed", "{s}");
    let why = s["error"].as_str().expect("reason");
    assert!(
        why.contains("1000 rows") && why.contains("api.export_max_rows"),
        "{why}"
    );
    for id in [&bytes, &parquet] {
        let s = w.finished(id, Duration::from_secs(30)).await;
        assert_eq!(s["status"], "failed", "{s}");
        let why = s["error"].as_str().expect("reason");
        assert!(
            why.contains("100000 bytes") && why.contains("api.export_max_bytes"),
            "{why}"
        );
    }
    let s = w.finished(&fits, Duration::from_secs(30)).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["rows"], 1000, "{s}");
    for id in [&rows, &bytes, &parquet] {
        w.only_status_left(id).await;
    }
    assert!(w.files().await.contains(&format!("{fits}.jsonl")));
}

both_backends!(delete_cancels_a_running_export_of_its_own_org_only => delete_cancels_a_running_export_of_its_own_org_only);

async fn delete_cancels_a_running_export_of_its_own_org_only(b: Backend) {
    let w = world(b, &[]);
    let id = w
        .started(&w.key_a, json!({"sql": RUNAWAY, "format": "jsonl"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.status(&w.key_a, &id).await["status"], "running");

    // Another organization's key: not found, and the export runs on.
    let (s, ct, body) = w.delete(&w.key_b, &id).await;
    assert_eq!(s, 404, "{body}");
    problem(ct.as_deref(), &body, 404, "not_found");
    assert_eq!(w.status(&w.key_a, &id).await["status"], "running");

    let t0 = Instant::now();
    let (s, _, body) = w.delete(&w.key_a, &id).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "cancel took {:?}",
        t0.elapsed()
    );
    let st = w.status(&w.key_a, &id).await;
    assert_eq!(st["status"], "cancelled", "{st}");
    assert!(
        st["error"].as_str().is_some_and(|e| e.contains("DELETE")),
        "{st}"
    );
    w.only_status_left(&id).await;
    w.idle(&w.server).await;
    assert_eq!(w.status(&w.key_a, &id).await["status"], "cancelled");

    // Again: still cancelled. A download: not ready.
    let (s, _, body) = w.delete(&w.key_a, &id).await;
    assert_eq!((s, &body["status"]), (200, &json!("cancelled")), "{body}");
    let r = w
        .http
        .get(w.server.url(&format!("/api/v1/exports/{id}/download")))
        .bearer_auth(&w.key_a)
        .send()
        .await
        .expect("download");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = r.json().await.expect("problem");
    problem(ct.as_deref(), &body, 409, "export_not_ready");

    // A finished export cannot be cancelled; its file stays.
    let done = w
        .started(&w.key_a, json!({"sql": "select 1 as one", "format": "csv"}))
        .await;
    assert_eq!(
        w.finished(&done, Duration::from_secs(30)).await["status"],
        "succeeded"
    );
    let (s, ct, body) = w.delete(&w.key_a, &done).await;
    assert_eq!(s, 409, "{body}");
    problem(ct.as_deref(), &body, 409, "export_finished");
    assert!(w.files().await.contains(&format!("{done}.csv")));
}

both_backends!(delete_through_another_server_stops_the_export => delete_through_another_server_stops_the_export);

async fn delete_through_another_server_stops_the_export(b: Backend) {
    let w = world(b, &[]);
    let wal2 = tempfile::tempdir().expect("wal");
    let other = Server::start(
        &w.b,
        wal2.path(),
        &[("CROW_API_RATE_LIMIT_BURST", "100000")],
    );
    let id = w
        .started(&w.key_a, json!({"sql": RUNAWAY, "format": "jsonl"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, _, body) = w.delete_on(&other, &w.key_a, &id).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    // The server running it notices within its status poll (2 s) and stops.
    tokio::time::sleep(Duration::from_secs(4)).await;
    w.idle(&w.server).await;
    w.only_status_left(&id).await;
    assert_eq!(w.status(&w.key_a, &id).await["status"], "cancelled");
}

both_backends!(concurrent_exports_per_org_are_limited => concurrent_exports_per_org_are_limited);

async fn concurrent_exports_per_org_are_limited(b: Backend) {
    let w = world(
        b,
        &[
            ("CROW_API_MAX_CONCURRENT_EXPORTS_PER_ORG", "1"),
            ("CROW_API_EXPORT_RETRY_AFTER_SECONDS", "7"),
        ],
    );
    let first = w
        .started(&w.key_a, json!({"sql": RUNAWAY, "format": "csv"}))
        .await;
    let r = w
        .start(&w.key_a, json!({"sql": RUNAWAY, "format": "csv"}))
        .await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = r.json().await.expect("problem");
    problem(ct.as_deref(), &body, 429, "too_many_exports");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("api.max_concurrent_exports_per_org")),
        "{body}"
    );

    // The limit is per organization.
    let other_org = w
        .started(&w.key_b, json!({"sql": RUNAWAY, "format": "csv"}))
        .await;

    // Cancelling frees the place at once.
    let (s, _, body) = w.delete(&w.key_a, &first).await;
    assert_eq!(s, 200, "{body}");
    let again = w
        .started(&w.key_a, json!({"sql": RUNAWAY, "format": "csv"}))
        .await;
    for (key, id) in [(&w.key_a, &again), (&w.key_b, &other_org)] {
        let (s, _, body) = w.delete(key, id).await;
        assert_eq!(s, 200, "{body}");
    }
    w.idle(&w.server).await;
}

both_backends!(csv_and_jsonl_exports_hold_exactly_the_rows => csv_and_jsonl_exports_hold_exactly_the_rows);

/// The rows of a CSV and a JSON-lines export are exactly the query's, read
/// back the way a user's tools read them (Python's `csv` and `json`):
/// commas, quotes, line breaks and non-ASCII text survive, nulls are empty
/// CSV fields and JSON nulls (or absent keys), and numbers keep their values.
async fn csv_and_jsonl_exports_hold_exactly_the_rows(b: Backend) {
    let w = world(b, &[]);
    let sql = "select id, s, f, n from (values \
        (1, 'plain', 1.5, cast(null as varchar)), \
        (2, 'a,b \"quoted\"', -2.25, 'x'), \
        (3, concat('line', chr(10), 'break é'), 0.0, cast(null as varchar))) as t(id, s, f, n) \
        order by id";
    let mut bodies = Vec::new();
    for format in ["csv", "jsonl"] {
        let id = w
            .started(&w.key_a, json!({"sql": sql, "format": format}))
            .await;
        let s = w.finished(&id, Duration::from_secs(30)).await;
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["rows"], 3, "{s}");
        let r = w
            .http
            .get(w.server.url(&format!("/api/v1/exports/{id}/download")))
            .bearer_auth(&w.key_a)
            .send()
            .await
            .expect("download");
        assert_eq!(r.status(), 200);
        bodies.push(r.text().await.expect("body"));
    }
    // CSV through Python's csv module: a header, then the rows as text.
    let parsed = python_reads(
        "import csv, io, json, sys; print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))",
        &bodies[0],
    );
    assert_eq!(
        parsed,
        json!([
            ["id", "s", "f", "n"],
            ["1", "plain", "1.5", ""],
            ["2", "a,b \"quoted\"", "-2.25", "x"],
            ["3", "line\nbreak é", "0.0", ""]
        ]),
        "{}",
        bodies[0]
    );
    // JSON lines: one object per line, values typed.
    let parsed = python_reads(
        "import json, sys; print(json.dumps([json.loads(l) for l in sys.stdin.read().splitlines() if l.strip()]))",
        &bodies[1],
    );
    let rows = parsed.as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{}", bodies[1]);
    let want = [
        (1, "plain", 1.5, None),
        (2, "a,b \"quoted\"", -2.25, Some("x")),
        (3, "line\nbreak é", 0.0, None),
    ];
    for (row, (id, s, f, n)) in rows.iter().zip(want) {
        assert_eq!(row["id"], id, "{row}");
        assert_eq!(row["s"], s, "{row}");
        assert_eq!(row["f"].as_f64(), Some(f), "{row}");
        assert_eq!(row.get("n").and_then(Value::as_str), n, "{row}");
        assert!(
            row.get("n").is_none_or(|v| v.is_null() || v.is_string()),
            "{row}"
        );
    }
}

/// What a Python program printing JSON makes of `input` on its stdin.
fn python_reads(program: &str, input: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::python())
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}
