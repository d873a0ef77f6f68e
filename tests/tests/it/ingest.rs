//! The collector over real HTTP: Segment compatibility, hostile input,
//! durability under kill -9, backpressure, the other channels, metrics.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use crow_lake::batch::batches_to_json;
use crow_lake::Lake;
use serde_json::{json, Value};

use crate::support::{
    both_backends, metric_value, refused_with, strip_ansi, Backend, Relay, Server,
};

/// Create an organization with the CLI; returns (org_id, write_key).
pub fn create_org(b: &Backend, name: &str) -> (String, String) {
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", name]);
    (
        org["org_id"].as_str().expect("org_id").to_string(),
        org["write_key"].as_str().expect("write_key").to_string(),
    )
}

pub async fn query(lake: &Lake, sql: &str) -> Vec<Value> {
    let (_, batches) = lake.sql(sql).await.expect("query");
    batches_to_json(&batches)
        .expect("json")
        .into_iter()
        .map(Value::Object)
        .collect()
}

/// Poll until `sql`'s first column equals `want`; returns how long it took.
pub async fn wait_count(lake: &Lake, sql: &str, want: i64, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let rows = query(lake, sql).await;
        let n = rows[0]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        if n == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "`{sql}` is {n}, expected {want} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_speaks_segment() {
    let b = Backend::local();
    let (org, key) = create_org(&b, "Segment Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "500")]);
    let http = reqwest::Client::new();

    // Basic auth, application/json.
    let r = http
        .post(server.url("/v1/track"))
        .header("Authorization", basic(&key))
        .json(&json!({"userId": "u1", "event": "Product Viewed", "messageId": "t-1",
            "properties": {"product_id": "p1", "price": 12.5, "sku": "S-1"},
            "context": {"device": {"type": "mobile"}, "page": {"url": "https://shop.example/p1?email=x@y.z&ref=ad"}}}))
        .send()
        .await
        .expect("track");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // writeKey in the body, text/plain (sendBeacon).
    let r = http
        .post(server.url("/v1/page"))
        .header("Content-Type", "text/plain")
        .body(
            json!({"writeKey": key, "anonymousId": "a1", "name": "Home", "messageId": "t-2"})
                .to_string(),
        )
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    // gzip.
    let body = gzip(
        json!({"userId": "u1", "traits": {"plan": "pro"}, "messageId": "t-3"})
            .to_string()
            .as_bytes(),
    );
    let r = http
        .post(server.url("/v1/identify"))
        .header("Authorization", basic(&key))
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 200);
    // A batch whose client clock runs one hour behind.
    let now = chrono::Utc::now();
    let client_now = now - chrono::Duration::hours(1);
    let ts = |d: chrono::Duration| (client_now - d).to_rfc3339();
    let r = http
        .post(server.url("/v1/batch"))
        .header("Authorization", basic(&key))
        .json(&json!({"sentAt": client_now.to_rfc3339(), "batch": [
            {"type": "track", "event": "Product Added", "anonymousId": "a1", "messageId": "t-4", "timestamp": ts(chrono::Duration::seconds(10))},
            {"type": "screen", "name": "Cart", "anonymousId": "a1", "messageId": "t-5"},
            {"type": "group", "groupId": "g1", "userId": "u1", "messageId": "t-6"},
            {"type": "alias", "previousId": "a1", "userId": "u1", "messageId": "t-7"}
        ]}))
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    // CORS preflight.
    let r = http
        .request(reqwest::Method::OPTIONS, server.url("/v1/batch"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("")),
        Some("*")
    );
    // The SDK is served.
    let sdk = http
        .get(server.url("/sdk/crow.js"))
        .send()
        .await
        .expect("sdk");
    assert_eq!(sdk.status(), 200);
    assert!(sdk.text().await.expect("text").contains("sendBeacon"));

    let lake = b.lake().await;
    // (wait_count fails the test if the 7 rows have not landed in 20 s.)
    wait_count(
        &lake,
        "select count(*) from raw_web_events",
        7,
        Duration::from_secs(20),
    )
    .await;
    let rows = query(&lake, &format!(
        "select message_id, type, org_id, page_url, device_type, product_price, ip_hash, context, \
         cast(occurred_at as bigint) as occ, cast(received_at as bigint) as rec from raw_web_events where org_id = '{org}' order by message_id"
    ))
    .await;
    assert_eq!(rows.len(), 7);
    let t1 = &rows[0];
    assert_eq!(
        t1["page_url"], "https://shop.example/p1?ref=ad",
        "configured query parameters are stripped"
    );
    assert_eq!(t1["device_type"], "mobile");
    assert_eq!(t1["product_price"], 12.5);
    assert!(
        t1["ip_hash"].as_str().is_some_and(|h| h.len() == 64),
        "a salted IP hash is kept"
    );
    for r in &rows {
        assert!(
            !r.to_string().contains("127.0.0.1"),
            "the raw IP is never stored: {r}"
        );
    }
    // Skew: occurred ≈ received - 10 s, though the client's clock said an hour earlier.
    let t4 = rows.iter().find(|r| r["message_id"] == "t-4").expect("t-4");
    let lag = t4["rec"].as_i64().expect("rec") - t4["occ"].as_i64().expect("occ");
    assert!(
        (9_000_000..=12_000_000).contains(&lag),
        "skew corrected: lag {lag} µs"
    );
    let types: HashSet<&str> = rows.iter().filter_map(|r| r["type"].as_str()).collect();
    assert_eq!(types.len(), 6, "{types:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_nothing_is_lost() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Hostile Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, auth: Option<&str>| {
        let mut r = http
            .post(server.url(path))
            .body(body)
            .header("Content-Type", "application/json");
        if let Some(k) = auth {
            r = r.header("Authorization", basic(k));
        }
        r.send()
    };

    // A mixed batch: the good land, the bad are reported and kept.
    let r = post(
        "/v1/batch",
        json!({"batch": [
            {"type": "track", "event": "Good", "userId": "u", "messageId": "g-1"},
            {"type": "track", "userId": "u", "messageId": "bad-1"},
            {"type": "track", "event": "No identity", "messageId": "bad-2"},
            {"type": "page", "userId": "u", "timestamp": "not a time", "messageId": "bad-3"},
            "not an object",
            {"type": "track", "event": "Good", "anonymousId": "a", "messageId": "g-2"},
            {"event": "No type", "userId": "u", "messageId": "bad-4"},
            {"type": "purchase", "userId": "u", "messageId": "bad-5"},
            {"type": "track", "event": "x", "userId": "u", "properties": "not an object", "messageId": "bad-6"},
            {"type": "track", "event": "x", "userId": "u".repeat(513), "messageId": "bad-7"}
        ]})
        .to_string()
        .into_bytes(),
        Some(&key),
    )
    .await
    .expect("batch");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["accepted"], 2);
    let codes: Vec<&str> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "missing_field",
            "missing_identity",
            "invalid_timestamp",
            "not_an_object",
            "missing_type",
            "invalid_type",
            "invalid_field",
            "field_too_long"
        ]
    );

    // Whole-request errors, each with the stable code the README lists.
    let big_event = json!({"type": "track", "event": "x", "userId": "u", "properties": {"blob": "x".repeat(40_000)}});
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let not_gzip = {
        let mut b = vec![0x1f, 0x8b];
        b.extend_from_slice(b"not really gzip");
        b
    };
    let empty_batch = || json!({"batch": []}).to_string().into_bytes();
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "/v1/batch",
            b"{not json".to_vec(),
            Some(&key),
            400,
            "invalid_json",
        ),
        (
            "/v1/batch",
            vec![b'{', 0xff, 0xfe, b'}'],
            Some(&key),
            400,
            "invalid_utf8",
        ),
        ("/v1/batch", not_gzip, Some(&key), 400, "invalid_gzip"),
        (
            "/v1/batch",
            json!({"sentAt": "2026-01-01T00:00:00Z"})
                .to_string()
                .into_bytes(),
            Some(&key),
            400,
            "missing_batch",
        ),
        (
            "/v1/social/captures",
            json!({"run_id": "r"}).to_string().into_bytes(),
            Some(&key),
            400,
            "missing_items",
        ),
        ("/v1/batch", empty_batch(), None, 401, "missing_write_key"),
        (
            "/v1/batch",
            empty_batch(),
            Some("wk_wrong"),
            401,
            "invalid_write_key",
        ),
        (
            "/v1/track",
            big_event.to_string().into_bytes(),
            Some(&key),
            413,
            "event_too_large",
        ),
        (
            "/v1/batch",
            json!({"batch": [{"x": "y".repeat(600_000)}]})
                .to_string()
                .into_bytes(),
            Some(&key),
            413,
            "request_too_large",
        ),
        // An absurdly nested event: the batch is refused (nothing else in
        // it), the event kept in failed_events as `too_deep`.
        (
            "/v1/batch",
            format!("{{\"batch\": {deep}}}").into_bytes(),
            Some(&key),
            400,
            "invalid_events",
        ),
        // An absurdly nested request (read whole, as the other channels
        // read theirs): refused whole.
        (
            "/v1/social/captures",
            format!("{{\"captures\": {deep}}}").into_bytes(),
            Some(&key),
            400,
            "too_deep",
        ),
        (
            "/v1/track",
            json!({"event": "x"}).to_string().into_bytes(),
            Some(&key),
            400,
            "invalid_events",
        ),
        ("/v1/nope", b"{}".to_vec(), Some(&key), 404, "not_found"),
    ];
    for (path, body, auth, want, code) in cases {
        let r = post(path, body, auth).await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, want, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(v["code"], code, "{path}: {text}");
        assert!(v["message"].is_string(), "{text}");
    }

    // The SDK settings endpoint builds the library's apiHost from Host:
    // one that is no host name is refused, not echoed into the script.
    let r = http
        .get(server.url(&format!("/v1/projects/{key}/settings")))
        .header("Host", "evil host\"")
        .send()
        .await
        .expect("settings");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("a JSON error");
    assert_eq!(v["code"], "invalid_host", "{v}");

    // Still serving, and a good event still lands.
    let r = http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = post(
        "/v1/track",
        json!({"event": "After", "userId": "u", "messageId": "g-3"})
            .to_string()
            .into_bytes(),
        Some(&key),
    )
    .await
    .expect("track");
    assert_eq!(r.status(), 200);

    let lake = b.lake().await;
    wait_count(
        &lake,
        "select count(*) from raw_web_events",
        3,
        Duration::from_secs(20),
    )
    .await;
    // Rejected events of authenticated, parseable requests are in failed_events with
    // reason and payload: 8 from the mixed batch, the absurdly nested batch item, and
    // the single track without a user.
    wait_count(
        &lake,
        "select count(*) from failed_events",
        10,
        Duration::from_secs(20),
    )
    .await;
    let failed = query(
        &lake,
        "select message_id, reason_code, reason, payload from failed_events order by failed_at",
    )
    .await;
    assert!(failed
        .iter()
        .any(|f| f["message_id"] == "bad-1" && f["reason_code"] == "missing_field"));
    assert!(failed
        .iter()
        .all(|f| f["reason"].as_str().is_some_and(|r| !r.is_empty())));
    assert!(failed.iter().any(|f| f["payload"] == "\"not an object\""));
    assert!(failed.iter().any(|f| f["reason_code"] == "too_deep"));
    for (id, code) in [
        ("bad-4", "missing_type"),
        ("bad-5", "invalid_type"),
        ("bad-6", "invalid_field"),
        ("bad-7", "field_too_long"),
    ] {
        assert!(
            failed
                .iter()
                .any(|f| f["message_id"] == id && f["reason_code"] == code),
            "{id} kept as {code}: {failed:?}"
        );
    }

    // The flusher counts a segment once it is committed and retired, just
    // after its rows became visible: read the metrics once it has.
    let started = Instant::now();
    let metrics = loop {
        let m = server.metrics(&http).await;
        if m.contains("crow_ingest_rows_committed_total{table=\"failed_events\"} 10")
            && m.contains("crow_ingest_wal_pending_bytes 0")
        {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metrics.contains("crow_ingest_events_rejected_total{reason=\"missing_identity\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crow_ingest_events_accepted_total{channel=\"web\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("crow_ingest_requests_refused_total{reason=\"invalid_write_key\"} 1"),
        "{metrics}"
    );
    // Values that moved with this traffic, not just names: the 13 rows (3
    // accepted, 10 failed) went through the WAL and were committed, with at
    // least one fsync and one flush, and nothing is left pending.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(
        value("crow_ingest_rows_committed_total{table=\"raw_web_events\"}"),
        3.0
    );
    assert_eq!(value("crow_ingest_wal_records_total"), 13.0, "{metrics}");
    assert!(value("crow_ingest_wal_fsyncs_total") >= 1.0, "{metrics}");
    assert!(
        value("crow_ingest_wal_written_bytes_total") > 0.0,
        "{metrics}"
    );
    assert!(value("crow_ingest_flush_seconds_count") >= 1.0, "{metrics}");
    assert!(
        value("crow_ingest_segments_flushed_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        value("crow_ingest_segments_quarantined_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(value("crow_ingest_wal_pending_segments"), 0.0, "{metrics}");
    // One durable ack per request whose events (accepted or failed) went
    // to the WAL: the mixed batch, the too-deep batch, the track without a
    // user and the good track after the refusals. Every one is under the
    // histogram's last bucket and took some time.
    assert_eq!(value("crow_ingest_ack_seconds_count"), 4.0, "{metrics}");
    assert_eq!(
        value("crow_ingest_ack_seconds_bucket{le=\"+Inf\"}"),
        4.0,
        "{metrics}"
    );
    assert!(value("crow_ingest_ack_seconds_sum") > 0.0, "{metrics}");
    // Each new client is one accepted connection (reqwest keeps one open
    // per client): three fresh clients and the reader of the metrics add
    // exactly four.
    let connections = |m: &str| metric_value(m, "crow_http_connections_accepted_total");
    let before = connections(&metrics);
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
    }
    let after = server.metrics(&reqwest::Client::new()).await;
    assert_eq!(connections(&after) - before, 4.0, "{after}");

    // An oversized event in a batch is rejected with its messageId, so an
    // SDK can match the rejection.
    let r = post(
        "/v1/batch",
        json!({"batch": [
            {"type": "track", "event": "Good", "userId": "u", "messageId": "g-4"},
            {"type": "track", "event": "Huge", "userId": "u", "messageId": "big-1",
             "properties": {"blob": "x".repeat(40_000)}}
        ]})
        .to_string()
        .into_bytes(),
        Some(&key),
    )
    .await
    .expect("batch");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["rejected"][0]["code"], "event_too_large", "{body}");
    assert_eq!(body["rejected"][0]["messageId"], "big-1", "{body}");
    assert_eq!(body["rejected"][0]["index"], 1, "{body}");

    wait_count(
        &lake,
        "select count(*) from failed_events where message_id = 'big-1' and reason_code = 'event_too_large'",
        1,
        Duration::from_secs(20),
    )
    .await;
}

async fn kill9(b: Backend) {
    let (_, key) = create_org(&b, "Durable Co");
    let wal = tempfile::tempdir().expect("wal");
    let mut server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "400")]);
    let url = server.url("/v1/batch");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (url, key, acked, stop) = (url.clone(), key.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..10).map(|k| format!("c{c}-{i}-{k}")).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"type": "track", "event": "Load", "anonymousId": format!("v{c}"), "messageId": id}))
                    .collect();
                i += 1;
                match http.post(&url).header("Authorization", basic(&key)).json(&json!({"batch": batch})).send().await {
                    Ok(r) if r.status() == 200 => acked.lock().expect("acked").extend(ids),
                    _ => {}
                }
            }
        }));
    }
    // Kill once the load is well under way (several flushes' worth acked),
    // not after a fixed time: on a busy 2-core CI machine the first second
    // of an S3-backed server can be slow, and the point is to kill mid-load.
    let warmup = Instant::now();
    while acked.lock().expect("acked").len() < 400 && warmup.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 200,
        "{}: the load must get going ({} acked)",
        b.name,
        acked.len()
    );

    // Restart on the same WAL: recovery replays what was not committed.
    let mut server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "400")]);
    let lake = b.lake().await;
    let start = Instant::now();
    loop {
        let rows = query(&lake, "select message_id from raw_web_events").await;
        let ids: HashSet<String> = rows
            .iter()
            .filter_map(|r| r["message_id"].as_str().map(str::to_string))
            .collect();
        let missing = acked.iter().filter(|id| !ids.contains(*id)).count();
        if missing == 0 {
            assert_eq!(ids.len(), rows.len(), "{}: no event lands twice", b.name);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}: {missing} acknowledged events missing",
            b.name
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.stop();
    // After a clean stop, everything is committed and the WAL is empty.
    let dup = query(&lake, "select count(*) as n from (select message_id from raw_web_events group by message_id having count(*) > 1)").await;
    assert_eq!(dup[0]["n"], 0);
    let left: Vec<_> = std::fs::read_dir(wal.path())
        .expect("wal dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_string_lossy().ends_with(".sealed")
                || e.file_name().to_string_lossy().ends_with(".open")
        })
        .collect();
    assert!(
        left.is_empty(),
        "{}: segments left after a clean stop: {left:?}",
        b.name
    );
}

both_backends!(kill9_loses_no_acknowledged_event => kill9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn social_and_cctv_land() {
    let b = Backend::local();
    let (org, key) = create_org(&b, "Stores Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let http = reqwest::Client::new();
    let r = http
        .post(server.url("/v1/social/captures"))
        .header("Authorization", basic(&key))
        .json(&json!({"run_id": "run-1", "captures": [
            {"platform": "instagram", "url": "https://instagram.example/p/1", "author": "@fan", "text": "Love my Aria headphones",
             "published_at": "2026-11-01T10:00:00Z", "metrics": {"likes": 12}},
            {"platform": "x", "text": "no url"}
        ]}))
        .send()
        .await
        .expect("social");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["code"], "missing_field");
    let r = http
        .post(server.url("/v1/cctv/transcripts"))
        .header("Authorization", basic(&key))
        .json(&json!({"segments": [
            {"store_id": "s1", "camera_id": "c1", "segment_start": "2026-11-01T10:00:00Z", "segment_end": "2026-11-01T10:05:00Z",
             "text": "A shopper picks up the Boom speaker and asks staff about battery life.", "observations": {"people": 1}, "model": "whisper-x"},
            {"store_id": "s1", "camera_id": "c1", "segment_start": "2026-11-01T10:10:00Z", "segment_end": "2026-11-01T10:05:00Z", "text": "backwards"}
        ]}))
        .send()
        .await
        .expect("cctv");
    assert_eq!(r.status(), 200);
    let lake = b.lake().await;
    wait_count(
        &lake,
        "select count(*) from raw_social_captures",
        1,
        Duration::from_secs(20),
    )
    .await;
    wait_count(
        &lake,
        "select count(*) from raw_cctv_transcripts",
        1,
        Duration::from_secs(20),
    )
    .await;
    wait_count(
        &lake,
        "select count(*) from failed_events",
        2,
        Duration::from_secs(20),
    )
    .await;
    let s = query(
        &lake,
        "select org_id, run_id, platform, metrics from raw_social_captures",
    )
    .await;
    assert_eq!(s[0]["org_id"], org.as_str());
    assert_eq!(s[0]["run_id"], "run-1");
    assert_eq!(s[0]["metrics"], "{\"likes\":12}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_answers_503_with_retry_after() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Busy Co");
    let wal = tempfile::tempdir().expect("wal");
    // Flushing "never" happens and almost nothing may wait: the second request must be refused.
    let server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_INGEST_FLUSH_INTERVAL_MS", "600000"),
            ("CROW_INGEST_MAX_PENDING_BYTES", "100"),
        ],
    );
    let http = reqwest::Client::new();
    let send = || {
        http.post(server.url("/v1/track"))
            .header("Authorization", basic(&key))
            .json(&json!({"event": "x", "userId": "u"}))
            .send()
    };
    assert_eq!(send().await.expect("first").status(), 200);
    let r = send().await.expect("second");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "backpressure clears as the flusher catches up: retry in a second"
    );
    let body: Value = r.json().await.expect("JSON body");
    assert_eq!(
        (&body["success"], body["code"].as_str()),
        (&json!(false), Some("backpressure")),
        "{body}"
    );
    let m = server.metrics(&http).await;
    assert!(m.contains("crow_ingest_backpressure_total 1"), "{m}");
    let ready = http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
}

pub fn python(script: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let out = std::process::Command::new(crate::support::python())
        .arg(path)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_rudderstack_sdks_work_unchanged() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "SDK Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let host = format!("http://{}", server.addr);
    let sent = python("segment_sdks.py", &[&host, &key]);
    let ids: Vec<&str> = sent.lines().collect();
    assert_eq!(ids.len(), 5);
    let lake = b.lake().await;
    wait_count(
        &lake,
        "select count(*) from raw_web_events",
        5,
        Duration::from_secs(20),
    )
    .await;
    let rows = query(&lake, "select message_id, type, event, user_id, product_id, revenue from raw_web_events order by message_id").await;
    let got: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["message_id"].as_str())
        .collect();
    assert_eq!(got, ["rs-1", "rs-2", "seg-1", "seg-2", "seg-3"]);
    assert_eq!(rows[0]["revenue"], 42.0, "RudderStack's gzip batch decoded");
    assert_eq!(rows[2]["product_id"], "nw-1001");
    assert_eq!(rows[2]["user_id"], "seg-user");
}

/// The README's Node snippets, run as written: the official Segment and
/// RudderStack Node SDKs pointed at CROW by host and write key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_sdks_send_to_crow() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Node Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let host = format!("http://{}", server.addr);
    let sent = crate::support::node("segment_sdks.js", &[&host, &key]);
    assert_eq!(
        sent.lines().collect::<Vec<_>>(),
        ["node-seg", "node-rudder"]
    );
    let lake = b.lake().await;
    wait_count(
        &lake,
        "select count(*) from raw_web_events",
        5,
        Duration::from_secs(20),
    )
    .await;
    let rows = query(
        &lake,
        "select user_id, type, event, product_id, revenue, campaign_source from raw_web_events \
         order by user_id, type",
    )
    .await;
    let got: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{}:{}",
                r["user_id"].as_str().unwrap_or(""),
                r["type"].as_str().unwrap_or(""),
                r["event"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "node-rudder:identify:",
            "node-rudder:track:Order Completed",
            "node-seg:identify:",
            "node-seg:page:",
            "node-seg:track:Product Viewed",
        ]
    );
    assert_eq!(rows[1]["revenue"], 99.0);
    assert_eq!(
        rows[3]["campaign_source"], "news",
        "utm_source of the page URL"
    );
    assert_eq!(rows[4]["product_id"], "nw-1001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdk_in_chromium() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Browser Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let anon = python(
        "browser_sdk.py",
        &[&format!("http://{}", server.addr), &key],
    );
    assert!(!anon.is_empty());
    let lake = b.lake().await;
    let q = format!("select count(*) from raw_web_events where anonymous_id = '{anon}'");
    wait_count(&lake, &q, 5, Duration::from_secs(20)).await;
    let rows = query(
        &lake,
        // In the order the browser made them: its own clock. `occurred_at`
        // corrects each batch for the client's clock skew as measured when
        // that batch arrived, so events milliseconds apart in different
        // batches may swap there.
        &format!("select type, event, page_path, product_id, device_type, user_agent from raw_web_events where anonymous_id = '{anon}' order by original_timestamp, received_at"),
    )
    .await;
    let kinds: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["type"].as_str().unwrap_or(""),
                r["event"]
                    .as_str()
                    .or(r["page_path"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "page:/product/aria",
            "track:Product Viewed",
            "track:Product Added",
            "page:/cart",
            "track:Checkout Abandoned"
        ],
        "page view, product view, add to cart, SPA navigation, and the page-hide beacon"
    );
    assert_eq!(rows[1]["product_id"], "nw-1001");
    assert!(rows[0]["user_agent"]
        .as_str()
        .is_some_and(|ua| ua.contains("Chrome")));
    assert_eq!(
        rows[0]["device_type"], "desktop",
        "the device class comes from the browser's User-Agent"
    );
}

/// The official Segment browser library, given only `cdnURL`, loads its
/// settings from the collector and sends its events there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_analytics_js_in_chromium() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Analytics.js Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let base = format!("http://{}", server.addr);
    // The settings endpoint refuses a key it does not know.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/v1/projects/wk_nobody/settings"))
        .send()
        .await
        .expect("settings");
    assert_eq!(r.status(), 401);
    let out = python("segment_browser.py", &[&base, &key]);
    let out: Value = serde_json::from_str(&out).expect("the script prints JSON");
    let anon = out["anonymousId"]
        .as_str()
        .expect("anonymousId")
        .to_string();
    assert!(!anon.is_empty());
    let lake = b.lake().await;
    let q = format!("select count(*) from raw_web_events where anonymous_id = '{anon}'");
    wait_count(&lake, &q, 3, Duration::from_secs(20)).await;
    let rows = query(
        &lake,
        &format!("select type, event, user_id, page_path, product_id, device_type, strpos(context, '\"analytics.js\"') > 0 as from_ajs from raw_web_events where anonymous_id = '{anon}' order by original_timestamp, received_at"),
    )
    .await;
    let got: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["type"].as_str().unwrap_or(""),
                r["event"]
                    .as_str()
                    .or(r["user_id"].as_str())
                    .or(r["page_path"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "page:/product/aria",
            "track:Product Viewed",
            "identify:shopper-7"
        ]
    );
    assert_eq!(rows[1]["product_id"], "nw-1001");
    assert_eq!(rows[0]["device_type"], "desktop");
    assert_eq!(
        rows[0]["from_ajs"], true,
        "context.library.name is the library's"
    );
}

/// `crow serve` with no `CROW_LOG` logs CROW's own crates at info and every
/// library at warn: the Delta and DataFusion libraries' info lines (every
/// commit, every scan) stay out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_only_crow_at_info_by_default() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Quiet Co");
    let api_key = b.crow_json(&["keys", "create", "--org", "Quiet Co"]);
    let api_key = api_key["secret"].as_str().expect("secret").to_string();
    let wal = tempfile::tempdir().expect("wal");
    // An empty CROW_LOG is the same as none: the default filter.
    let mut server = Server::start(
        &b,
        wal.path(),
        &[("CROW_LOG", ""), ("CROW_INGEST_FLUSH_INTERVAL_MS", "200")],
    );
    let http = reqwest::Client::new();
    for round in 0..3 {
        let batch: Vec<Value> = (0..5)
            .map(|i| json!({"type": "track", "event": "Viewed", "userId": "u", "messageId": format!("q-{round}-{i}")}))
            .collect();
        let r = http
            .post(server.url("/v1/batch"))
            .header("Authorization", basic(&key))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let lake = b.lake().await;
    wait_count(
        &lake,
        "select count(*) from raw_web_events",
        15,
        Duration::from_secs(20),
    )
    .await;
    let r = http
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&api_key)
        .json(&json!({"sql": "select count(*) as n from raw_web_events"}))
        .send()
        .await
        .expect("sql");
    assert_eq!(r.status(), 200);
    server.stop();
    let logs = server.logs.lock().expect("logs").clone();
    let mut crow_info = 0;
    for line in &logs {
        let plain = strip_ansi(line);
        let words: Vec<&str> = plain.split_whitespace().collect();
        if let [_, level, target, ..] = words.as_slice() {
            if matches!(*level, "INFO" | "DEBUG" | "TRACE") {
                assert!(
                    target.starts_with("crow"),
                    "a library logs below warn by default: {plain}\n(all: {logs:#?})"
                );
                crow_info += 1;
            }
        }
    }
    assert!(crow_info > 0, "CROW's own info lines are kept: {logs:#?}");
    assert!(logs.len() < 60, "a few lines, not a flood: {logs:#?}");
}

/// One collector per WAL folder, end to end: a second `crow serve` on a
/// folder in use exits with a clear error (and the first keeps serving);
/// the folder's IP salt survives a restart (the same address hashes the
/// same); a gzip bomb is refused by its decompressed size; `/v1/import` is
/// `/v1/batch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_folder_is_one_collectors_and_keeps_its_salt() {
    let b = Backend::local();
    let (_, key) = create_org(&b, "Salted");
    let wal = tempfile::tempdir().expect("wal");
    let env = [("CROW_INGEST_FLUSH_INTERVAL_MS", "200")];
    let mut first = Server::start(&b, wal.path(), &env);
    let http = reqwest::Client::new();
    let send = |server: &Server, path: &str, id: &str| {
        let (http, url, key) = (http.clone(), server.url(path), key.clone());
        let body = json!({"batch": [{"type": "track", "event": "Ping", "anonymousId": "salt-visitor", "messageId": id}]});
        async move {
            http.post(url)
                .header("Authorization", basic(&key))
                .json(&body)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(&first, "/v1/batch", "salt-1").await, 200);

    // A second collector on the same folder is refused, by name.
    let out = std::process::Command::new(crate::support::crow_bin())
        .args([
            "--lake",
            &b.uri,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--wal-dir",
        ])
        .arg(wal.path())
        .env("CROW_SCHEDULE_ENABLED", "false")
        .output()
        .expect("second serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("another collector is using this WAL folder"),
        "{err}"
    );
    assert_eq!(
        send(&first, "/v1/import", "salt-2").await,
        200,
        "the first still serves"
    );

    // A gzip bomb: small on the wire, past the request limit unpacked.
    let bomb = gzip(&vec![b' '; 2 * 1024 * 1024]);
    assert!(bomb.len() < 50_000);
    let r = http
        .post(first.url("/v1/batch"))
        .header("Authorization", basic(&key))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("bomb");
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "request_too_large", "{v}");

    // Restart on the same folder: the same address hashes the same.
    first.stop();
    let second = Server::start(&b, wal.path(), &env);
    assert_eq!(send(&second, "/v1/batch", "salt-3").await, 200);
    let lake = b.lake().await;
    let q = "select count(*) from raw_web_events where anonymous_id = 'salt-visitor'";
    wait_count(&lake, q, 3, Duration::from_secs(20)).await;
    let hashes = query(
        &lake,
        "select message_id, ip_hash from raw_web_events where anonymous_id = 'salt-visitor' order by message_id",
    )
    .await;
    let ids: Vec<&str> = hashes
        .iter()
        .map(|r| r["message_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["salt-1", "salt-2", "salt-3"]);
    let h: HashSet<&str> = hashes
        .iter()
        .filter_map(|r| r["ip_hash"].as_str())
        .collect();
    assert_eq!(
        h.len(),
        1,
        "one address, one hash across restarts: {hashes:?}"
    );
}

/// Storage that stops answering does not stop the collector: events of a
/// write key it knows are still acknowledged (durable in its WAL), and land
/// in the lake once storage answers again, none lost; a key it cannot check
/// without storage is refused with 503 `unavailable` and a Retry-After, not
/// taken for an unknown key (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_while_storage_is_down_land_when_it_is_back() {
    let b = Backend::s3();
    let (_, key) = create_org(&b, "Outage Co");
    let relay = Relay::for_lake(&b).await;
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(
        &b,
        wal.path(),
        &[
            ("AWS_ENDPOINT_URL", &relay.url),
            ("CROW_INGEST_FLUSH_INTERVAL_MS", "200"),
        ],
    );
    let http = reqwest::Client::new();
    let track = |id: String, key: String| {
        http.post(server.url("/v1/track"))
            .header("Authorization", basic(&key))
            .json(&json!({"event": "Outage", "userId": "u", "messageId": id}))
            .send()
    };
    let r = track("before".into(), key.clone()).await.expect("track");
    assert_eq!(r.status(), 200);
    let lake = b.lake().await;
    let sql = "select count(*) as n from raw_web_events";
    wait_count(&lake, sql, 1, Duration::from_secs(30)).await;

    relay.cut();
    for i in 0..3 {
        let r = track(format!("during-{i}"), key.clone())
            .await
            .expect("track");
        assert_eq!(
            r.status(),
            200,
            "a known key's events are still acknowledged"
        );
    }
    // The key list is re-read for a key not seen in the last second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = track("stranger".into(), "wk_not_checkable".into())
        .await
        .expect("track");
    refused_with(r, 503, "unavailable", "5").await;
    // Nothing of the outage reached the lake yet.
    assert_eq!(query(&lake, sql).await[0]["n"], 1);

    let _back = relay.restore().await;
    wait_count(&lake, sql, 4, Duration::from_secs(60)).await;
    let ids = query(
        &lake,
        "select message_id from raw_web_events order by message_id",
    )
    .await;
    let ids: Vec<&str> = ids
        .iter()
        .filter_map(|r| r["message_id"].as_str())
        .collect();
    assert_eq!(ids, ["before", "during-0", "during-1", "during-2"]);
}
