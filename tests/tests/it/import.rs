//! `crow import`: a Segment archive (gzip'd JSON lines) through the
//! collector's normaliser — bad lines to `failed_events` with their reason
//! and text, exactly once per file (again, and after a kill -9 part-way),
//! from a path or an http URL.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{crow_bin, Backend};

/// A gzip'd archive of `n` good events (ids `{tag}-{i}`) with three bad
/// lines among them and a blank line.
fn archive(tag: &str, n: usize) -> Vec<u8> {
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            json!({
                "type": "track",
                "event": "Product Viewed",
                "messageId": format!("{tag}-{i}"),
                "anonymousId": format!("{tag}-visitor-{}", i % 40),
                "timestamp": format!("2026-10-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60),
                "properties": {"product_id": "sku-1"},
                "context": {"page": {"url": "https://shop.example/p?email=x@y.z"}},
            })
            .to_string()
        })
        .collect();
    lines.insert(n / 3, "{not json".into());
    lines.insert(
        n / 2,
        json!({"type": "track", "messageId": format!("{tag}-no-event"), "userId": "u"}).to_string(),
    );
    lines.insert(n / 2 + 1, String::new());
    lines.insert(2 * n / 3, "[1, 2]".into());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.join("\n").as_bytes()).expect("gzip");
    gz.finish().expect("gzip")
}

fn import(b: &Backend, files: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let out = std::process::Command::new(crow_bin())
        .args([
            "--lake",
            &b.uri,
            "import",
            "--org",
            "Archive Co",
            "--format",
            "json",
        ])
        .args(files)
        .envs(env.iter().copied())
        .output()
        .expect("crow import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("json")
        .as_array()
        .expect("rows")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_archive_imports_exactly_once_with_bad_lines_kept() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_ok(&["orgs", "create", "--name", "Archive Co"]);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("2026-10.jsonl.gz");
    std::fs::write(&file, archive("a", 900)).expect("write");
    let path = file.to_str().expect("path");
    let r = import(&b, &[path], &[]);
    assert_eq!(r[0]["lines"], 903, "{r:?}");
    assert_eq!(r[0]["imported"], 900, "{r:?}");
    assert_eq!(r[0]["failed"], 3, "{r:?}");
    let events = b.crow_json(&[
        "sql",
        "select count(*) as n, count(distinct message_id) as d, count(distinct event_date) as days, \
         max(case when page_url like '%email=%' then 1 else 0 end) as leaked \
         from raw_web_events",
    ]);
    assert_eq!(
        events,
        json!([{"n": 900, "d": 900, "days": 28, "leaked": 0}]),
        "the collector's rules: one row per event on its own day, query parameters stripped"
    );
    let failed = b.crow_json(&[
        "sql",
        "select source, reason_code, message_id, payload from failed_events order by reason_code, payload",
    ]);
    assert_eq!(
        failed,
        json!([
            {"source": "import", "reason_code": "invalid_json", "message_id": null, "payload": "{not json"},
            {"source": "import", "reason_code": "missing_field", "message_id": "a-no-event",
             "payload": json!({"type": "track", "messageId": "a-no-event", "userId": "u"}).to_string()},
            {"source": "import", "reason_code": "not_an_object", "message_id": null, "payload": "[1, 2]"},
        ]),
        "{failed}"
    );
    // Again: nothing new lands.
    let again = import(&b, &[path], &[]);
    assert_eq!(again[0]["imported"], 0, "{again:?}");
    assert_eq!(again[0]["failed"], 0, "{again:?}");
    assert_eq!(again[0]["already_imported"], 903, "{again:?}");
    let n =
        |t: &str| b.crow_json(&["sql", &format!("select count(*) as n from {t}")])[0]["n"].clone();
    assert_eq!(n("raw_web_events"), 900);
    assert_eq!(n("failed_events"), 3);

    // From an http URL, another file: its own events land.
    let body = archive("u", 100);
    let app = axum::Router::new().route(
        "/archive.jsonl.gz",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let base = crate::support::serve_app(app).await;
    let url = format!("{base}/archive.jsonl.gz");
    let missing = format!("{base}/nope.gz");
    let b2 = Backend::at(std::path::Path::new(&b.uri));
    let r = tokio::task::spawn_blocking(move || import(&b2, &[&url], &[]))
        .await
        .expect("import");
    assert_eq!(r[0]["imported"], 100, "{r:?}");
    assert_eq!(n("raw_web_events"), 1000);
    // A URL that answers 404 is an error that names it.
    let out = std::process::Command::new(crow_bin())
        .args(["--lake", &b.uri, "import", "--org", "Archive Co", &missing])
        .output()
        .expect("crow import");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.gz") && err.contains("404"), "{err}");
}

/// Killed with -9 part-way (chunks of 50 lines, so some have committed),
/// then run again: every event exactly once, and the second run says it
/// found the committed chunks.
#[test]
fn an_import_killed_part_way_finishes_exactly_once() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_ok(&["orgs", "create", "--name", "Archive Co"]);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("big.jsonl.gz");
    // 30 chunks of 50: the kill lands a few chunks in, before the first bad
    // line (line 500), with most of the file still to go.
    std::fs::write(&file, archive("k", 1500)).expect("write");
    let path = file.to_str().expect("path");
    let env = [("CROW_INGEST_IMPORT_CHUNK_EVENTS", "50")];
    let log = std::path::Path::new(&b.uri).join("raw_web_events/_delta_log");
    let commits = || {
        std::fs::read_dir(&log).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
    };
    let before = commits();
    let mut child = std::process::Command::new(crow_bin())
        .args(["--lake", &b.uri, "import", "--org", "Archive Co", path])
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crow import");
    let t = Instant::now();
    while commits() < before + 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no commit");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let r = import(&b, &[path], &env);
    let already = r[0]["already_imported"].as_u64().expect("already");
    assert!((50..1503).contains(&already), "{r:?}");
    let events = b.crow_json(&[
        "sql",
        "select count(*) as n, count(distinct message_id) as d from raw_web_events",
    ]);
    assert_eq!(events, json!([{"n": 1500, "d": 1500}]));
    let failed = b.crow_json(&["sql", "select count(*) as n from failed_events"]);
    assert_eq!(failed, json!([{"n": 3}]));
}

/// A Parquet file as Segment's warehouse export writes it (pyarrow, not
/// CROW, writes it): each row lands as the event it records, through the
/// collector's rules, exactly once; a row with no identity lands in
/// `failed_events`; a file that only looks like Parquet is an error that
/// names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_parquet_imports_like_the_archive() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_ok(&["orgs", "create", "--name", "Archive Co"]);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tracks.parquet");
    let path = file.to_str().expect("path");
    let (code, wrote) = crate::support::python_client("segment_parquet.py", &[path, "pq", "40"]);
    assert_eq!((code, wrote), (0, json!({"rows": 41})));
    let r = import(&b, &[path], &[]);
    assert_eq!(
        (&r[0]["lines"], &r[0]["imported"], &r[0]["failed"]),
        (&json!(41), &json!(40), &json!(1)),
        "{r:?}"
    );
    let events = b.crow_json(&[
        "sql",
        "select count(*) as n, count(distinct message_id) as ids, count(distinct anonymous_id) as visitors, \
         count(distinct event_date) as days, min(event) as event, min(\"type\") as type, \
         min(page_url) as url, min(user_agent) like '%iPhone OS 18_0%' as agent, \
         min(campaign_source) as source, \
         min(product_id) as product, sum(revenue) as revenue, \
         min(occurred_at) = timestamp '2026-10-01 12:00:00' as first_time \
         from raw_web_events",
    ]);
    assert_eq!(
        events,
        json!([{"n": 40, "ids": 40, "visitors": 5, "days": 10, "event": "Order Completed",
                "type": "track", "url": "https://shop.example/checkout", "agent": true,
                "source": "newsletter", "product": "sku-7", "revenue": 780.0, "first_time": true}]),
        "the columns are the event's fields, its context and its properties"
    );
    let failed = b.crow_json(&[
        "sql",
        "select source, reason_code, message_id from failed_events",
    ]);
    assert_eq!(
        failed,
        json!([{"source": "import", "reason_code": "missing_identity", "message_id": "pq-anonymous"}])
    );
    let again = import(&b, &[path], &[]);
    assert_eq!(
        (&again[0]["imported"], &again[0]["already_imported"]),
        (&json!(0), &json!(41)),
        "{again:?}"
    );
    // Starts and ends like Parquet, is not: an error naming the file, and
    // nothing lands.
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, b"PAR1 not a parquet file PAR1").expect("write");
    let out = std::process::Command::new(crow_bin())
        .args(["--lake", &b.uri, "import", "--org", "Archive Co"])
        .arg(&fake)
        .output()
        .expect("crow import");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("fake.parquet") && err.contains("as Parquet"),
        "{err}"
    );
    let n = b.crow_json(&["sql", "select count(*) as n from raw_web_events"]);
    assert_eq!(n, json!([{"n": 40}]));
}
