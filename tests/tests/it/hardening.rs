//! Network hardening of `crow serve`: slow clients are timed out on every
//! route, open connections are capped, oversized API bodies get a
//! problem+json 413, `X-Forwarded-For` counts only from trusted proxies,
//! `/metrics` is not public, a read key cannot list admin keys, and keys
//! expire by default.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hostile::hostile_world;
use crate::ingest::{basic, create_org, query};
use crate::support::{metric_value, Backend, Server};

/// What a raw connection got back before the server closed it (or `wait`
/// passed).
struct Answer {
    text: String,
    closed: bool,
    after: Duration,
}

/// Send `request` (possibly incomplete) on a fresh connection and read
/// until the server closes it or `wait` passes.
async fn raw(addr: &str, request: &[u8], wait: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    if !request.is_empty() {
        s.write_all(request).await.expect("write");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = wait.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    Answer {
        text: String::from_utf8_lossy(&got).into_owned(),
        closed,
        after: start.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out_on_every_route() {
    let mut w = hostile_world(&[
        ("CROW_SERVER_HEADER_READ_TIMEOUT_SECONDS", "2"),
        ("CROW_SERVER_BODY_READ_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let addr = w.server.addr.clone();
    // Half a request head on an API route, and on a collector route.
    for head in [
        "GET /api/v1/health HTTP/1.1\r\nHost: crow\r\n".to_string(),
        "POST /v1/batch HTTP/1.1\r\nHost: crow\r\nContent-Type: appli".to_string(),
    ] {
        let a = raw(&addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            a.closed && a.after < Duration::from_secs(8),
            "a connection that never finishes its headers must be closed after the header timeout \
             (closed: {}, after {:?}, got {:?})",
            a.closed,
            a.after,
            a.text
        );
    }
    // A connection that says nothing at all.
    let a = raw(&addr, b"", Duration::from_secs(10)).await;
    assert!(a.closed, "a silent connection stays open: {:?}", a.after);

    // Headers, then a body that never arrives: 408 as problem+json.
    let head = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: crow\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"sql\": \"sel",
        w.key_a
    );
    let a = raw(&addr, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(
        a.text.starts_with("HTTP/1.1 408"),
        "a body that stalls gets 408 within the body timeout, got {:?} after {:?}",
        a.text,
        a.after
    );
    assert!(a.text.contains("application/problem+json"), "{}", a.text);
    assert!(a.text.contains("\"code\":\"body_timeout\""), "{}", a.text);
    assert!(a.after < Duration::from_secs(8), "{:?}", a.after);
    w.still_serving("slow clients").await;
}

/// The collector answers a request whose body stalls with 408
/// `request_timeout` after its fixed 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_body_gets_request_timeout() {
    let b = Backend::local();
    let (_, key) = crate::ingest::create_org(&b, "Slow Co");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[]);
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: crow\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"batch\": [",
        crate::ingest::basic(&key)
    );
    let a = raw(&server.addr, head.as_bytes(), Duration::from_secs(45)).await;
    assert!(
        a.text.starts_with("HTTP/1.1 408"),
        "got {:?} after {:?}",
        a.text,
        a.after
    );
    assert!(
        a.text.contains("\"code\":\"request_timeout\""),
        "{}",
        a.text
    );
    // Not before the 30 s (the 408 came from the timeout, not a parse error).
    assert!(a.after >= Duration::from_secs(29), "{:?}", a.after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_api_bodies_get_problem_json_413() {
    let mut w = hostile_world(&[]).await;
    let head = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: crow\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
        w.key_a
    );
    let a = raw(&w.server.addr, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(a.text.starts_with("HTTP/1.1 413"), "{:?}", a.text);
    assert!(a.text.contains("application/problem+json"), "{}", a.text);
    assert!(a.text.contains("\"code\":\"body_too_large\""), "{}", a.text);

    // Without a length (chunked), the bound holds while reading.
    let chunk = vec![b'x'; 1024 * 1024];
    let mut s = TcpStream::connect(&w.server.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/sql HTTP/1.1\r\nHost: crow\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        w.key_a
    );
    s.write_all(head.as_bytes()).await.expect("write");
    for _ in 0..4 {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if s.write_all(&c).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
    w.still_serving("oversized bodies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_and_freed_by_the_header_timeout() {
    let mut w = hostile_world(&[
        ("CROW_SERVER_MAX_CONNECTIONS", "3"),
        ("CROW_SERVER_HEADER_READ_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    // Three idle connections fill the server.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&w.server.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A real request waits for a slot and is served once the idle ones are
    // timed out, not never.
    let t = Instant::now();
    let r = w
        .http
        .get(w.server.url("/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("served once a slot frees");
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let metrics = w.server.metrics(&w.http).await;
    let at_capacity = metric_value(&metrics, "crow_http_connections_at_capacity_total");
    assert!(at_capacity >= 1.0, "{metrics}");
    drop(idle);
    w.still_serving("a full server").await;
}

/// An address of this machine that is not loopback, if it has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_this_machine_or_a_token() {
    let ip = non_loopback_ip().expect("this test needs a non-loopback address on the machine");
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let wal = tempfile::tempdir().expect("wal");
    let token = "metrics-secret-0123456789";
    let server = Server::start_on(
        &b,
        wal.path(),
        "0.0.0.0:0",
        &[("CROW_SERVER_METRICS_TOKEN", token)],
    );
    let port = server
        .addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .expect("port");
    let http = reqwest::Client::new();
    let local = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(local.status(), 200);
    let text = local.text().await.expect("text");
    // At least this very connection is open.
    assert!(
        metric_value(&text, "crow_http_connections_open") >= 1.0,
        "{text}"
    );
    let remote = format!("http://{ip}:{port}/metrics");
    let r = http.get(&remote).send().await.expect("metrics");
    assert_eq!(r.status(), 403, "metrics must not be public");
    let r = http
        .get(&remote)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 403);
    let r = http
        .get(&remote)
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("text").contains("crow_ingest_"));
    // The rest of the server is unaffected.
    let h = http
        .get(format!("http://{ip}:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    async fn ip_hashes(b: &Backend, env: &[(&str, &str)]) -> Vec<Option<String>> {
        let (_, key) = create_org(b, &format!("Proxy Co {}", env.len()));
        let wal = tempfile::tempdir().expect("wal");
        let mut all = vec![("CROW_INGEST_FLUSH_INTERVAL_MS", "200")];
        all.extend_from_slice(env);
        let mut server = Server::start(b, wal.path(), &all);
        let http = reqwest::Client::new();
        for (i, xff) in ["198.51.100.7", "203.0.113.99"].iter().enumerate() {
            let r = http
                .post(server.url("/v1/track"))
                .header("Authorization", basic(&key))
                .header("X-Forwarded-For", *xff)
                .json(&json!({"event": "Load", "anonymousId": "v", "messageId": format!("xff-{}-{i}", env.len())}))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 200);
        }
        server.stop();
        let lake = b.lake().await;
        let rows = query(
            &lake,
            &format!(
                "select ip_hash from raw_web_events where message_id like 'xff-{}-%' order by message_id",
                env.len()
            ),
        )
        .await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        rows.iter()
            .map(|r| r["ip_hash"].as_str().map(str::to_string))
            .collect()
    }
    let b = Backend::local();
    // Untrusted peer: whatever it claims, both requests hash to its own
    // address.
    let h = ip_hashes(&b, &[]).await;
    assert!(h[0].is_some());
    assert_eq!(
        h[0], h[1],
        "an untrusted client chose its ip_hash via X-Forwarded-For"
    );
    // Behind a trusted proxy: the forwarded addresses count.
    let h = ip_hashes(&b, &[("CROW_INGEST_TRUSTED_PROXIES", "127.0.0.1")]).await;
    assert!(h[0].is_some() && h[1].is_some());
    assert_ne!(
        h[0], h[1],
        "X-Forwarded-For from a trusted proxy is ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_keys_do_not_list_admin_keys_and_keys_expire_by_default() {
    let w = hostile_world(&[("CROW_API_KEY_CACHE_SECONDS", "1")]).await;
    let admin =
        w.b.crow_json(&["keys", "create", "--org", &w.org_a, "--scope", "admin"]);
    let admin_secret = admin["secret"].as_str().expect("secret").to_string();
    // Keys expire after api.key_default_expiry_days (90) unless told.
    let expires = admin["expires_at"].as_str().expect("a default expiry");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("time");
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "{admin}");
    let never =
        w.b.crow_json(&["keys", "create", "--org", &w.org_a, "--never-expires"]);
    assert_eq!(never["expires_at"], Value::Null, "{never}");
    // `--expires 7`: seven days from its creation (shown to the second).
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let short =
        w.b.crow_json(&["keys", "create", "--org", &w.org_a, "--expires", "7"]);
    let after = chrono::Utc::now();
    let short_expires = short["expires_at"].as_str().expect("an expiry");
    let short_expires = chrono::DateTime::parse_from_rfc3339(short_expires)
        .expect("time")
        .with_timezone(&chrono::Utc);
    let week = chrono::Duration::days(7);
    assert!(
        before + week <= short_expires && short_expires <= after + week,
        "{short}: not 7 days after {before}..{after}"
    );

    let (status, rows) = w.sql("select scope from api_keys order by scope").await;
    assert_eq!(status, 200, "{rows}");
    let scopes: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["scope"].as_str())
        .collect();
    assert!(
        !scopes.contains(&"admin"),
        "a read key lists admin keys: {scopes:?}"
    );
    assert!(scopes.contains(&"read"), "{scopes:?}");
    let r = w
        .http
        .post(w.server.url("/api/v1/sql"))
        .bearer_auth(&admin_secret)
        .json(&json!({"sql": "select count(*) as n from api_keys where scope = 'admin'"}))
        .send()
        .await
        .expect("sql");
    assert_eq!(r.status(), 200);
    let rows: Value = r.json().await.expect("json");
    assert_eq!(rows, json!([{"n": 1}]), "an admin key sees the admin keys");

    // A key past its expiry is refused, saying so. (Time passes in the
    // lake: the 7-day key's `expires_at` is moved 8 days back.)
    let short_secret = short["secret"].as_str().expect("secret").to_string();
    let ask = |secret: String| {
        let (http, url) = (w.http.clone(), w.server.url("/api/v1/organization"));
        async move {
            let r = http.get(url).bearer_auth(secret).send().await.expect("get");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(ask(short_secret.clone()).await.0, 200);
    let lake = w.b.lake().await;
    let (_, aged) = lake
        .sql(&format!(
            "SELECT * REPLACE (expires_at - INTERVAL '8 days' AS expires_at) FROM api_keys WHERE key_id = '{}'",
            short["id"].as_str().expect("id")
        ))
        .await
        .expect("aged key");
    lake.merge("api_keys", aged, &["key_id"])
        .await
        .expect("merge");
    // Servers see the new expiry when they reload keys (here within 1 s).
    let started = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = ask(short_secret.clone()).await;
        if status != 200 || started.elapsed() > std::time::Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
}
