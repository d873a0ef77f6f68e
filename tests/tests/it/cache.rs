//! The result cache of `POST /api/v1/sql` against the real `crow serve`: a
//! repeated query is a hit with the same body; a commit to a table the
//! query reads is never answered from the cache (the new rows appear), one
//! to another table leaves the hit alone; organizations and visibilities
//! never share an answer; a query calling `now()` or `random()` is never
//! cached; the metrics move by exactly what happened; and with the cache
//! off by configuration every answer is a bypass.

use crow_lake::batch::rows_to_batch;
use serde_json::{json, Value};

use crate::api::{row, world, World, B_MARK};
use crate::support::{metric_value, Server};

/// One answer: status, `X-Crow-Cache`, `X-Crow-Cache-Reason`, body.
struct Answer {
    status: u16,
    cache: String,
    reason: String,
    body: String,
}

async fn ask(w: &World, server: &Server, key: &str, body: Value, accept: Option<&str>) -> Answer {
    let mut r = w
        .http
        .post(server.url("/api/v1/sql"))
        .bearer_auth(key)
        .json(&body);
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().await.expect("POST /api/v1/sql");
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, cache, reason) = (
        r.status().as_u16(),
        header("x-crow-cache"),
        header("x-crow-cache-reason"),
    );
    let body = r.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    Answer {
        status,
        cache,
        reason,
        body,
    }
}

/// The result cache's metrics: hits, misses, bypasses, evictions, bytes.
async fn counters(w: &World, server: &Server) -> [u64; 5] {
    let text = server.metrics(&w.http).await;
    let value = |name: &str| metric_value(&text, &format!("crow_api_result_cache_{name}")) as u64;
    [
        value("hits_total"),
        value("misses_total"),
        value("bypass_total"),
        value("evictions_total"),
        value("bytes"),
    ]
}

fn delta(before: [u64; 5], after: [u64; 5]) -> [u64; 4] {
    [0, 1, 2, 3].map(|i| after[i] - before[i])
}

/// Append rows of org A tagged `tag` to `table`, as another process would
/// (a new Delta version the server has not seen).
async fn commit(w: &World, table: &str, tag: &str) {
    let def = crow_schemas::table(table).expect("table");
    let rows = vec![row(def, Some(&w.org_a), tag, 7)];
    let batch = rows_to_batch(def, &rows).expect("batch");
    w.b.lake()
        .await
        .append(table, vec![batch])
        .await
        .expect("append");
}

const PRODUCTS: &str = "select product_id, org_id from products order by product_id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_is_never_stale_nor_shared() {
    let w = world(&[]).await;
    let s = &w.server;
    let q = json!({ "sql": PRODUCTS });
    let m0 = counters(&w, s).await;

    // The same query twice (spelled differently): a miss, then a hit with
    // the identical body.
    let first = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!(first.cache, "miss");
    let spelled = "SELECT  product_id, org_id\n FROM products -- again\n ORDER BY product_id";
    let second = ask(&w, s, &w.key_a, json!({ "sql": spelled }), None).await;
    assert_eq!(second.cache, "hit");
    assert_eq!(second.body, first.body);
    let rows: Vec<Value> = serde_json::from_str(&first.body).expect("rows");
    assert_eq!(rows.len(), w.a_rows, "{}", first.body);
    let m1 = counters(&w, s).await;
    assert_eq!(delta(m0, m1), [1, 1, 0, 0], "one hit, one miss");
    assert!(
        m1[4] > m0[4] + first.body.len() as u64,
        "bytes held grow by the answer"
    );

    // Another organization with the same SQL gets its own rows, never A's.
    let b1 = ask(&w, s, &w.key_b, q.clone(), None).await;
    assert_eq!(b1.cache, "miss", "org B must not hit org A's entry");
    assert!(
        b1.body.contains(B_MARK) && !b1.body.contains("alpha"),
        "{}",
        b1.body
    );
    let b2 = ask(&w, s, &w.key_b, q.clone(), None).await;
    assert_eq!((b2.cache.as_str(), &b2.body), ("hit", &b1.body));
    let a3 = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!((a3.cache.as_str(), &a3.body), ("hit", &first.body));

    // Another format is another entry.
    let csv = ask(&w, s, &w.key_a, q.clone(), Some("text/csv")).await;
    assert_eq!(csv.cache, "miss");
    assert!(csv.body.starts_with("product_id,org_id"), "{}", csv.body);
    let csv2 = ask(&w, s, &w.key_a, q.clone(), Some("text/csv")).await;
    assert_eq!((csv2.cache.as_str(), &csv2.body), ("hit", &csv.body));

    // A commit to a table the query does not read: still a hit.
    commit(&w, "sessions", "other").await;
    let a4 = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!((a4.cache.as_str(), &a4.body), ("hit", &first.body));

    // A commit to the table it reads: never the old answer.
    commit(&w, "products", "fresh").await;
    let a5 = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!(a5.cache, "miss", "a commit to products must change the key");
    assert!(a5.body.contains("fresh-prod-7"), "the new row: {}", a5.body);
    let rows: Vec<Value> = serde_json::from_str(&a5.body).expect("rows");
    assert_eq!(rows.len(), w.a_rows + 1);
    let a6 = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!((a6.cache.as_str(), &a6.body), ("hit", &a5.body));
    // Org B's entry was for the old version too: its answer is recomputed.
    let b3 = ask(&w, s, &w.key_b, q.clone(), None).await;
    assert_eq!((b3.cache.as_str(), &b3.body), ("miss", &b1.body));

    // A join reads both tables: a commit to either changes its key.
    let join = json!({ "sql": "select count(*) as n from products p join sessions s on p.org_id = s.org_id" });
    assert_eq!(ask(&w, s, &w.key_a, join.clone(), None).await.cache, "miss");
    assert_eq!(ask(&w, s, &w.key_a, join.clone(), None).await.cache, "hit");
    commit(&w, "sessions", "later").await;
    let j = ask(&w, s, &w.key_a, join.clone(), None).await;
    assert_eq!(
        j.cache, "miss",
        "a commit to sessions must change the join's key"
    );

    // Time travel to the version before the commit: the old rows, cached
    // apart from the latest.
    let v =
        w.b.lake()
            .await
            .table("products")
            .await
            .expect("products")
            .version()
            .expect("a version");
    let old = json!({ "sql": PRODUCTS, "versions": { "products": v - 1 } });
    let o1 = ask(&w, s, &w.key_a, old.clone(), None).await;
    assert_eq!((o1.cache.as_str(), &o1.body), ("miss", &first.body));
    let o2 = ask(&w, s, &w.key_a, old.clone(), None).await;
    assert_eq!((o2.cache.as_str(), &o2.body), ("hit", &first.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_follows_visibility_and_configuration() {
    let w = world(&[]).await;
    let admin =
        w.b.crow_json(&["keys", "create", "--org", &w.org_a, "--scope", "admin"]);
    let admin = admin["secret"].as_str().expect("secret").to_string();
    let s = &w.server;
    // Admin keys see admin keys in `api_keys`; others do not: one
    // organization, two answers.
    let q =
        json!({ "sql": "select scope, count(*) as n from api_keys group by scope order by scope" });
    let by_admin = ask(&w, s, &admin, q.clone(), None).await;
    assert_eq!(by_admin.cache, "miss");
    assert!(by_admin.body.contains("\"admin\""), "{}", by_admin.body);
    let by_reader = ask(&w, s, &w.key_a, q.clone(), None).await;
    assert_eq!(
        by_reader.cache, "miss",
        "a non-admin must not hit the admin's entry"
    );
    assert!(!by_reader.body.contains("\"admin\""), "{}", by_reader.body);
    assert_eq!(
        ask(&w, s, &admin, q.clone(), None).await.body,
        by_admin.body
    );

    // With the cache off: always a bypass, nothing held.
    let wal = tempfile::tempdir().expect("wal");
    let off = Server::start(&w.b, wal.path(), &[("CROW_API_RESULT_CACHE_MB", "0")]);
    for _ in 0..3 {
        let a = ask(&w, &off, &w.key_a, json!({ "sql": PRODUCTS }), None).await;
        assert_eq!((a.status, a.cache.as_str()), (200, "bypass"));
        assert!(
            a.reason.is_empty(),
            "off is not about the query: {}",
            a.reason
        );
    }
    assert_eq!(counters(&w, &off).await, [0, 0, 3, 0, 0]);

    // A malformed setting names its field.
    let out = std::process::Command::new(crate::support::crow_bin())
        .args(["config", "show"])
        .env_remove("CROW_CONFIG")
        .env("CROW_API_RESULT_CACHE_MAX_ENTRY_MB", "0")
        .output()
        .expect("crow config show");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("api.result_cache_max_entry_mb"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_is_bounded_and_keeps_only_complete_answers() {
    let w = world(&[]).await;
    // A small cache: the least recently used answer leaves to make room,
    // bytes stay within the bound, an answer above the entry cap is not
    // kept.
    let wal = tempfile::tempdir().expect("wal");
    let small = Server::start(
        &w.b,
        wal.path(),
        &[
            ("CROW_API_RESULT_CACHE_MB", "1"),
            ("CROW_API_RESULT_CACHE_MAX_ENTRY_MB", "1"),
        ],
    );
    // About 700 KB of JSON each: one fits, two do not.
    let series = |i: u32| json!({ "sql": format!("select value + {i} as v from generate_series(1, 60000)") });
    for i in 0..3 {
        assert_eq!(
            ask(&w, &small, &w.key_a, series(i), None).await.cache,
            "miss"
        );
        assert_eq!(
            ask(&w, &small, &w.key_a, series(i), None).await.cache,
            "hit"
        );
    }
    let m = counters(&w, &small).await;
    assert_eq!(&m[..4], &[3, 3, 0, 2], "two evictions: {m:?}");
    assert!(m[4] <= 1024 * 1024, "bytes held within 1 MiB: {m:?}");
    let text = small.metrics(&w.http).await;
    assert_eq!(
        metric_value(&text, "crow_api_result_cache_entries"),
        1.0,
        "one answer held: {text}"
    );
    assert_eq!(
        ask(&w, &small, &w.key_a, series(0), None).await.cache,
        "miss",
        "evicted"
    );
    let big = json!({ "sql": "select value from generate_series(1, 300000)" });
    for _ in 0..2 {
        assert_eq!(
            ask(&w, &small, &w.key_a, big.clone(), None).await.cache,
            "miss"
        );
    }

    // An answer cut short mid-stream (past api.max_result_rows after the
    // first 4 MB went out) is never stored: the next ask runs again and
    // fails again, never a hit with the partial body.
    let wal = tempfile::tempdir().expect("wal");
    let capped = Server::start(&w.b, wal.path(), &[("CROW_API_MAX_RESULT_ROWS", "50000")]);
    let long =
        json!({ "sql": "select value, repeat('x', 100) as pad from generate_series(1, 60000)" });
    for _ in 0..2 {
        let r = w
            .http
            .post(capped.url("/api/v1/sql"))
            .bearer_auth(&w.key_a)
            .json(&long)
            .send()
            .await
            .expect("POST");
        assert_eq!(
            r.status().as_u16(),
            200,
            "the cap is passed after the answer started"
        );
        let cache = r
            .headers()
            .get("x-crow-cache")
            .map(|v| v.as_bytes().to_vec());
        assert_eq!(cache.as_deref(), Some(&b"miss"[..]));
        assert!(r.bytes().await.is_err(), "the answer must be cut short");
    }
    assert_eq!(counters(&w, &capped).await[..2], [0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_cache_skips_queries_that_are_not_deterministic() {
    let w = world(&[]).await;
    let s = &w.server;
    // Text functions (bounded in API sessions) are deterministic.
    let upper = json!({ "sql": "select upper(product_id) || '!' as u from products order by u" });
    assert_eq!(
        ask(&w, s, &w.key_a, upper.clone(), None).await.cache,
        "miss"
    );
    assert_eq!(ask(&w, s, &w.key_a, upper.clone(), None).await.cache, "hit");

    // Queries whose answer may change without a commit are never cached.
    let m2 = counters(&w, s).await;
    for (sql, f) in [
        ("select count(*) as n, now() as t from products", "now()"),
        (
            "select product_id from products where random() < 2",
            "random()",
        ),
        ("select current_date as d", "current_date()"),
        ("select uuid() as u", "uuid()"),
        (
            "select (select max(product_id) || uuid() from products) as x",
            "uuid()",
        ),
    ] {
        for _ in 0..2 {
            let a = ask(&w, s, &w.key_a, json!({ "sql": sql }), None).await;
            assert_eq!(a.cache, "bypass", "{sql}");
            assert!(
                a.reason.contains(f),
                "{sql}: reason `{}` names {f}",
                a.reason
            );
        }
    }
    let m3 = counters(&w, s).await;
    assert_eq!(delta(m2, m3), [0, 0, 10, 0], "ten bypasses, nothing else");
}
