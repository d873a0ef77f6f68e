//! Tables written by CROW, read back by independent readers (the Python
//! `deltalake` package and polars) with identical rows.

use crow_lake::batch::{batches_to_json, rows_to_batch};
use serde_json::{json, Value};

use crate::lake::events;
use crate::support::{python_read, Backend};

const COLS: &[&str] = &[
    "message_id",
    "org_id",
    "type",
    "event",
    "occurred_at",
    "event_date",
    "product_id",
    "ip_hash",
    "context",
];

fn normalise(rows: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|mut r| {
            if let Some(m) = r.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            r.to_string()
        })
        .collect();
    out.sort();
    out
}

async fn readers(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    for day in [1, 2] {
        let rows = events("org_r", &format!("m{day}"), day, 40);
        lake.append(
            "raw_web_events",
            vec![rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows).expect("batch")],
        )
        .await
        .expect("append");
    }
    // A replaced window and a deleted row must be invisible to every reader.
    lake.delete_where(
        "raw_web_events",
        &crow_lake::datafusion::prelude::col("message_id")
            .eq(crow_lake::datafusion::prelude::lit("m1-1-0")),
    )
    .await
    .expect("delete");
    same_rows(&b, &lake, 79).await;
    // More small files in the same partitions, then compaction: the
    // compacted files (written with CROW's settings: ZSTD, dictionaries,
    // delta-encoded timestamps) read back identically everywhere.
    for batch in 0..3 {
        let rows = events("org_r", &format!("extra{batch}"), 1 + batch % 2, 10);
        lake.append(
            "raw_web_events",
            vec![rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows).expect("batch")],
        )
        .await
        .expect("append");
    }
    let m = lake.optimize("raw_web_events").await.expect("optimize");
    assert!(
        m.files_removed >= 4 && m.files_added >= 1 && m.files_added < m.files_removed,
        "{m:?}"
    );
    same_rows(&b, &lake, 109).await;
}

/// CROW and each Python reader see the same `n` rows.
async fn same_rows(b: &Backend, lake: &crow_lake::Lake, n: usize) {
    let (_, batches) = lake
        .sql(
            "select message_id, org_id, type, event, cast(occurred_at as bigint) as occurred_at, \
             cast(event_date as varchar) as event_date, product_id, ip_hash, context from raw_web_events",
        )
        .await
        .expect("crow read");
    let ours: Vec<Value> = batches_to_json(&batches)
        .expect("json")
        .into_iter()
        .map(Value::Object)
        .collect();
    assert_eq!(ours.len(), n);
    let ours = normalise(ours);
    for engine in ["deltalake", "polars"] {
        let theirs = normalise(python_read(b, engine, "raw_web_events", COLS));
        assert_eq!(theirs.len(), ours.len(), "{engine} on {}", b.name);
        assert_eq!(theirs, ours, "{engine} on {} reads different rows", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_readers_local() {
    readers(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_readers_s3() {
    readers(Backend::s3()).await;
}

/// Every table of a demo lake read without delta-rs: the log replayed from
/// the Delta protocol alone (checkpoint, then the JSON commits after it),
/// the live files read by pyarrow, DuckDB and polars' own Parquet reader
/// with the log's partition values (`tests/py/independent_delta.py`),
/// equal to CROW's own export of
/// each table — after a checkpoint, more writes (new small files in the
/// demo's partitions, a key), compaction and a vacuum that deleted the
/// replaced files.
#[test]
fn every_table_reads_the_same_without_delta_rs_after_checkpoint_optimize_and_vacuum() {
    let b = Backend::local();
    let clock = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    b.crow_ok(&[
        "demo",
        "--visitors",
        "3000",
        "--days",
        "35",
        "--now",
        clock.as_str(),
    ]);
    b.crow_ok(&["checkpoint"]);
    b.crow_ok(&["bench", "generate", "--events", "3000", "--days", "3"]);
    b.crow_ok(&[
        "keys",
        "create",
        "--org",
        "Northwind Audio",
        "--scope",
        "read",
    ]);
    b.crow_ok(&["optimize"]);
    b.crow_ok(&["vacuum", "--retention-hours", "0"]);
    let lake = std::path::Path::new(&b.uri);
    let out = tempfile::tempdir().expect("tmp");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/independent_delta.py");
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(lake).expect("lake folder") {
        let dir = entry.expect("entry").path();
        if !dir.join("_delta_log").is_dir() {
            continue;
        }
        let table = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("table name")
            .to_string();
        let file = out.path().join(format!("{table}.parquet"));
        b.crow_ok(&[
            "export",
            &table,
            "--format",
            "parquet",
            "--out",
            file.to_str().expect("path"),
        ]);
        let r = std::process::Command::new(crate::support::python())
            .arg(&script)
            .arg(&dir)
            .arg(&file)
            .output()
            .expect("python");
        assert!(
            r.status.success(),
            "{table}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let v: Value = serde_json::from_slice(&r.stdout).expect("summary");
        // The vacuum left exactly the live files.
        assert_eq!(v["files"], v["files_on_disk"], "{table}: {v}");
        assert_eq!(
            v["readers"],
            json!(["pyarrow", "duckdb", "polars"]),
            "{table}: {v}"
        );
        seen.insert(table, v);
    }
    assert_eq!(seen.len(), crow_schemas::ALL_TABLES.len(), "{seen:?}");
    for t in [
        "raw_web_events",
        "sessions",
        "interactions",
        "patterns",
        "stories",
        "daily_metrics",
        "products",
        "usage_daily",
        "job_runs",
        "organizations",
        "users",
        "api_keys",
        "audit_log",
    ] {
        assert!(seen[t]["rows"].as_u64() > Some(0), "{t}: {}", seen[t]);
    }
    // The log after the checkpoint was replayed too, and list columns read.
    assert!(
        seen["raw_web_events"]["commits_after_checkpoint"].as_u64() >= Some(2),
        "{}",
        seen["raw_web_events"]
    );
    for t in ["sessions", "stories", "daily_metrics"] {
        assert!(
            seen[t]["list_columns"]
                .as_array()
                .is_some_and(|l| !l.is_empty()),
            "{t}: {}",
            seen[t]
        );
    }
}
