//! Tables written by CROW, read back by independent readers (the Python
//! `deltalake` package and polars) with identical rows.

use crow_lake::batch::{batches_to_json, rows_to_batch};
use serde_json::Value;

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
    lake.delete_where("raw_web_events", "message_id = 'm1-1-0'")
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
