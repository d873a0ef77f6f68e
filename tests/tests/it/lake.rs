//! The lake suite, run on every backend (local folder and S3-compatible).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crow_ingest::normalize::{normalize, NormalizeContext, RawWebEventRow};
use crow_lake::batch::{batches_to_json, rows_to_batch};
use crow_lake::datafusion::prelude::{col, lit, Expr};
use crow_lake::{AsOf, Lake};
use crow_schemas::RAW_WEB_EVENTS;
use serde_json::json;

use crate::support::{both_backends, Backend};

/// The rows of one `event_date` (YYYY-MM-DD).
fn on_day(day: &str) -> Expr {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a day");
    col("event_date").eq(crow_lake::predicate::date(d))
}

pub fn events(org: &str, prefix: &str, day: u32, n: usize) -> Vec<RawWebEventRow<'static>> {
    let received: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 3, day, 12, 0, 0)
        .single()
        .expect("date");
    let ctx = NormalizeContext {
        org_id: org,
        received_at: received,
        ip_hash: None,
        strip_query_params: &[],
        ip_salt: "s",
    };
    (0..n)
        .map(|i| {
            let e = json!({"type": "track", "event": "Product Viewed", "anonymousId": format!("a{}", i % 7),
                "messageId": format!("{prefix}-{day}-{i}"), "properties": {"product_id": format!("p{}", i % 3)}});
            normalize(&e, None, &ctx).expect("valid event")
        })
        .collect()
}

pub async fn count(lake: &Lake, sql: &str) -> i64 {
    let (_, batches) = lake.sql(sql).await.expect("query");
    let rows = batches_to_json(&batches).expect("json");
    rows[0]
        .values()
        .next()
        .and_then(serde_json::Value::as_i64)
        .expect("a count")
}

fn batch(rows: &[RawWebEventRow<'_>]) -> arrow::array::RecordBatch {
    rows_to_batch(&RAW_WEB_EVENTS, rows).expect("batch")
}

async fn suite(b: Backend) {
    let lake = b.lake().await;
    let created = lake.init().await.expect("init");
    assert!(
        created.iter().all(|(_, c)| *c),
        "{}: first init creates every table",
        b.name
    );
    assert_eq!(created.len(), crow_schemas::ALL_TABLES.len());
    let again = lake.init().await.expect("init again");
    assert!(
        again.iter().all(|(_, c)| !*c),
        "{}: second init changes nothing",
        b.name
    );
    assert_eq!(
        lake.stats("raw_web_events").await.expect("stats").version,
        0
    );

    // append
    let v1 = lake
        .append("raw_web_events", vec![batch(&events("o1", "a", 1, 50))])
        .await
        .expect("append");
    let v2 = lake
        .append("raw_web_events", vec![batch(&events("o1", "a", 2, 30))])
        .await
        .expect("append");
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        80
    );
    let before_replace = Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // exactly-once append
    let rows = batch(&events("o1", "x", 3, 10));
    assert!(lake
        .append_once("raw_web_events", vec![rows.clone()], "wal-test", 1)
        .await
        .expect("once"));
    assert!(!lake
        .append_once("raw_web_events", vec![rows.clone()], "wal-test", 1)
        .await
        .expect("twice"));
    assert!(!lake
        .append_once("raw_web_events", vec![rows], "wal-test", 0)
        .await
        .expect("older"));
    assert_eq!(
        lake.app_version("raw_web_events", "wal-test")
            .await
            .expect("txn"),
        Some(1)
    );
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        90
    );

    // replace-where: exactly one day's rows change
    lake.replace_where(
        "raw_web_events",
        &on_day("2026-03-01"),
        vec![batch(&events("o1", "r", 1, 5))],
    )
    .await
    .expect("replace");
    assert_eq!(
        count(
            &lake,
            "select count(*) from raw_web_events where event_date = '2026-03-01'"
        )
        .await,
        5
    );
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events where event_date = '2026-03-01' and message_id like 'r-%'").await,
        5
    );
    assert_eq!(
        count(
            &lake,
            "select count(*) from raw_web_events where event_date = '2026-03-02'"
        )
        .await,
        30
    );
    // A row outside the window is refused, and nothing changes.
    let bad = lake
        .replace_where(
            "raw_web_events",
            &on_day("2026-03-01"),
            vec![batch(&events("o1", "z", 2, 1))],
        )
        .await;
    assert!(
        bad.is_err(),
        "{}: rows outside the window must be refused",
        b.name
    );
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        45
    );

    // delete-where
    let deleted = lake
        .delete_where("raw_web_events", &col("message_id").like(lit("x-%")))
        .await
        .expect("delete");
    assert_eq!(deleted, 10);
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        35
    );

    // time travel: by version and by timestamp
    let ctx = lake
        .session_with(&[("raw_web_events".to_string(), AsOf::Version(2))])
        .await
        .expect("as of v2");
    let (_, bs) = crow_lake::run_read_only(&ctx, "select count(*) as n from raw_web_events")
        .await
        .expect("q");
    assert_eq!(batches_to_json(&bs).expect("json")[0]["n"], 80);
    let ctx = lake
        .session_as_of(AsOf::Timestamp(before_replace))
        .await
        .expect("as of time");
    let (_, bs) = crow_lake::run_read_only(&ctx, "select count(*) as n from raw_web_events")
        .await
        .expect("q");
    assert_eq!(
        batches_to_json(&bs).expect("json")[0]["n"],
        80,
        "{}: timestamp travel",
        b.name
    );
    // Before the lake existed, every table is empty.
    let ctx = lake
        .session_as_of(AsOf::Timestamp(Utc::now() - chrono::Duration::days(1)))
        .await
        .expect("before");
    let (_, bs) = crow_lake::run_read_only(&ctx, "select count(*) as n from raw_web_events")
        .await
        .expect("q");
    assert_eq!(batches_to_json(&bs).expect("json")[0]["n"], 0);
    assert!(lake
        .session_with(&[("raw_web_events".to_string(), AsOf::Version(999))])
        .await
        .is_err());

    // history, newest first
    let h = lake.history("raw_web_events", 100).await.expect("history");
    assert_eq!(
        h[0]["version"],
        lake.stats("raw_web_events").await.expect("stats").version
    );
    assert_eq!(h.last().expect("first commit")["version"], 0);

    // merge / upsert
    let product = |id: &str, name: &str| crow_lake::products::Product {
        org_id: "o1".into(),
        product_id: id.into(),
        sku: None,
        name: name.into(),
        url: None,
        category: None,
        brand: None,
        price: Some(10.0),
        currency: None,
        description: None,
        image_url: None,
        source: "import".into(),
    };
    let r = crow_lake::products::upsert(&lake, &[product("p1", "One"), product("p2", "Two")])
        .await
        .expect("merge");
    assert_eq!(r, (2, 0));
    let (_, bs) = lake
        .sql("select created_at from products where product_id = 'p1'")
        .await
        .expect("q");
    let created_p1 = batches_to_json(&bs).expect("json")[0]["created_at"].clone();
    let r = crow_lake::products::upsert(&lake, &[product("p1", "One v2"), product("p3", "Three")])
        .await
        .expect("merge");
    assert_eq!(r, (1, 1));
    assert_eq!(count(&lake, "select count(*) from products").await, 3);
    let (_, bs) = lake
        .sql("select name, created_at from products where product_id = 'p1'")
        .await
        .expect("q");
    let p1 = &batches_to_json(&bs).expect("json")[0];
    assert_eq!(p1["name"], "One v2");
    assert_eq!(
        p1["created_at"], created_p1,
        "created_at survives an update"
    );

    // optimize compacts, rows unchanged; vacuum removes the replaced files
    for i in 0..4 {
        lake.append(
            "raw_web_events",
            vec![batch(&events("o2", &format!("o{i}"), 4, 3))],
        )
        .await
        .expect("append");
    }
    let before = lake.stats("raw_web_events").await.expect("stats");
    let m = lake.optimize("raw_web_events").await.expect("optimize");
    assert!(
        m.files_removed >= 4 && m.files_added >= 1,
        "{}: {m:?}",
        b.name
    );
    let after = lake.stats("raw_web_events").await.expect("stats");
    assert_eq!(after.rows, before.rows);
    assert!(after.files < before.files);
    let would = lake
        .vacuum("raw_web_events", 0, true)
        .await
        .expect("dry run");
    assert!(
        would.len() >= 4 && would.iter().all(|f| f.ends_with(".parquet")),
        "{}: vacuum dry run lists the compacted files ({would:?})",
        b.name
    );
    let deleted = lake
        .vacuum("raw_web_events", 0, false)
        .await
        .expect("vacuum");
    assert_eq!(deleted, would);
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        after.rows as i64
    );

    // checkpoint, then the table still loads at the same version
    let v = lake.checkpoint("raw_web_events").await.expect("checkpoint");
    assert_eq!(
        lake.stats("raw_web_events").await.expect("stats").version,
        v
    );
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        after.rows as i64
    );
}

both_backends!(lake_suite => suite);

/// A long-running reader (the API, the scheduler) keeps snapshots; it must
/// still see every commit other writers make, including optimize/vacuum.
async fn cached_reader(b: Backend) {
    let reader = b.lake().await;
    reader.init().await.expect("init");
    let writer = b.lake().await;
    let q = "select count(*) from raw_web_events";
    assert_eq!(count(&reader, q).await, 0);
    for day in 1..=3 {
        writer
            .append(
                "raw_web_events",
                vec![batch(&events("o", "cache", day, 10))],
            )
            .await
            .expect("append");
        assert_eq!(count(&reader, q).await, 10 * i64::from(day), "{}", b.name);
    }
    writer.optimize("raw_web_events").await.expect("optimize");
    writer
        .checkpoint("raw_web_events")
        .await
        .expect("checkpoint");
    writer
        .delete_where("raw_web_events", &on_day("2026-03-01"))
        .await
        .expect("delete");
    assert_eq!(count(&reader, q).await, 20, "{}", b.name);
    writer
        .append("raw_web_events", vec![batch(&events("o", "cache", 4, 5))])
        .await
        .expect("append");
    assert_eq!(count(&reader, q).await, 25, "{}", b.name);
}

both_backends!(cached_reader_sees_every_commit => cached_reader);

const CHILD_BATCHES: usize = 8;
const CHILD_ROWS: usize = 25;

/// Two processes append to one table at the same time: both land.
async fn concurrent(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let exe = std::env::current_exe().expect("exe");
    // The writers start appending together: each says it is ready (lake
    // open, table loaded), then waits for the word.
    let sync = tempfile::tempdir().expect("sync folder");
    let children: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|id| {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args([
                "--exact",
                "lake::writer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CROWTEST_CHILD_LAKE", &b.uri)
            .env("CROWTEST_CHILD_SYNC", sync.path())
            .env("CROWTEST_CHILD_ID", id);
            for (k, v) in &b.env {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn writer")
        })
        .collect();
    let started = std::time::Instant::now();
    while !["w1", "w2"]
        .iter()
        .all(|id| sync.path().join(format!("ready-{id}")).exists())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writers did not get ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(sync.path().join("go"), b"").expect("the word");
    for c in children {
        let out = c.wait_with_output().expect("writer");
        assert!(out.status.success(), "{}: a writer process failed", b.name);
    }
    let expected = (2 * CHILD_BATCHES * CHILD_ROWS) as i64;
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        expected,
        "{}",
        b.name
    );
    assert_eq!(
        count(
            &lake,
            "select count(distinct message_id) from raw_web_events"
        )
        .await,
        expected
    );
    assert_eq!(
        lake.stats("raw_web_events").await.expect("stats").version,
        (2 * CHILD_BATCHES) as u64
    );
    // And the writers did race: a commit planned against a version older
    // than the one before it met the other writer's commits on the way,
    // was checked against them and landed after them (`read_version` in
    // `crow history`); appends never conflict, so every one landed.
    let history = lake.history("raw_web_events", 100).await.expect("history");
    let raced: Vec<(u64, u64)> = history
        .iter()
        .filter_map(|c| Some((c["version"].as_u64()?, c["read_version"].as_u64()?)))
        .filter(|(v, read)| read + 1 < *v)
        .collect();
    assert!(
        !raced.is_empty(),
        "{}: no commit met the other writer's: {:?}",
        b.name,
        history
            .iter()
            .map(|c| (&c["version"], &c["read_version"], &c["retries"]))
            .collect::<Vec<_>>()
    );
}

both_backends!(concurrent_writers => concurrent);

/// The writer process of `concurrent_writers_*` (run by them, not alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of concurrent_writers_*"]
async fn writer_child() {
    let uri = std::env::var("CROWTEST_CHILD_LAKE").expect("CROWTEST_CHILD_LAKE");
    let id = std::env::var("CROWTEST_CHILD_ID").expect("CROWTEST_CHILD_ID");
    let mut cfg = crow_schemas::config::LakeConfig {
        uri,
        ..Default::default()
    };
    if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
        cfg.s3.endpoint = e;
        cfg.s3.allow_http = true;
    }
    let lake = Lake::open(&cfg).await.expect("open");
    lake.stats("raw_web_events").await.expect("load the table");
    let sync = std::path::PathBuf::from(std::env::var("CROWTEST_CHILD_SYNC").expect("sync"));
    std::fs::write(sync.join(format!("ready-{id}")), b"").expect("ready");
    let started = std::time::Instant::now();
    while !sync.join("go").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no word");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for i in 0..CHILD_BATCHES {
        let rows = events("o1", &format!("{id}-{i}"), 5, CHILD_ROWS);
        lake.append("raw_web_events", vec![batch(&rows)])
            .await
            .expect("append");
    }
}

/// A `patterns` table written by CROW before schema v2 (no `provisional`
/// column) gains the column on `init`: old rows read it as null, new rows
/// carry it, and a second `init` commits nothing.
async fn older_schema_evolves(b: Backend) {
    use crow_lake::deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    use crow_lake::deltalake::kernel::StructType;
    use crow_lake::deltalake::protocol::SaveMode;
    use crow_lake::deltalake::DeltaTable;
    use crow_schemas::PATTERNS;

    let lake = b.lake().await;
    let full = PATTERNS.schema();
    let keep: Vec<usize> = (0..full.fields().len())
        .filter(|i| full.field(*i).name() != "provisional")
        .collect();
    let v1 = full.project(&keep).expect("v1 schema");
    let kernel: StructType = (&v1).try_into_kernel().expect("kernel schema");
    let url = lake.table_url("patterns").expect("url");
    if let Ok(p) = url.to_file_path() {
        std::fs::create_dir_all(p).expect("dir");
    }
    let t = DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
        .await
        .expect("table");
    let t = t
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(["period_kind"])
        .with_raise_if_key_not_exists(false)
        .with_configuration([("crow.schema.version", Some("1"))])
        .await
        .expect("create v1");
    let row = |id: &str, provisional: Option<bool>| {
        json!({"org_id": "o1", "pattern_id": id, "period_kind": "week",
               "period_start": 20_000, "period_end": 20_007, "kind": "volume", "title": "t",
               "description": "d", "product_ids": [], "support": 10, "evidence": "{}",
               "provider": "offline", "model": "m", "created_at": 0, "provisional": provisional})
    };
    let old = rows_to_batch(&PATTERNS, &[row("old", None)])
        .expect("batch")
        .project(&keep)
        .expect("v1 batch");
    t.write(vec![old])
        .with_save_mode(SaveMode::Append)
        .await
        .expect("write v1 row");

    lake.init().await.expect("init evolves");
    let version = lake.stats("patterns").await.expect("stats").version;
    lake.append(
        "patterns",
        vec![rows_to_batch(&PATTERNS, &[row("new", Some(true))]).expect("batch")],
    )
    .await
    .expect("append v2 row");
    let (_, batches) = lake
        .sql("SELECT pattern_id, provisional FROM patterns ORDER BY pattern_id")
        // (nulls are omitted from the JSON rows)
        .await
        .expect("query");
    assert_eq!(
        serde_json::Value::Array(
            batches_to_json(&batches)
                .expect("json")
                .into_iter()
                .map(serde_json::Value::Object)
                .collect()
        ),
        json!([{"pattern_id": "new", "provisional": true}, {"pattern_id": "old"}]),
        "{}",
        b.name
    );
    lake.init().await.expect("init again");
    assert_eq!(
        lake.stats("patterns").await.expect("stats").version,
        version + 1,
        "{}: a second init commits nothing (only the append landed)",
        b.name
    );
    // The table made before CROW set checkpoint intervals got its table's.
    let t = lake.table("patterns").await.expect("patterns");
    let snap = t.snapshot().expect("snapshot");
    assert_eq!(
        snap.metadata()
            .configuration()
            .get(crow_lake::CHECKPOINT_INTERVAL_KEY)
            .map(String::as_str),
        Some("100"),
        "{}",
        b.name
    );
}

/// Delete every file of table `name`, as by hand (on either backend).
async fn remove_table_by_hand(lake: &Lake, name: &str) {
    use crow_lake::object_store::ObjectStoreExt;
    use futures::TryStreamExt;
    let (store, prefix) = lake
        .store_for(&lake.table_url(name).expect("url"))
        .expect("store");
    let paths: Vec<_> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    assert!(!paths.is_empty(), "{name} has files");
    for p in paths {
        store.delete(&p).await.expect("delete");
    }
}

/// `social_seen` rows for the pages `ids` (one per id), as one batch.
fn social_seen(ids: std::ops::Range<u32>) -> Vec<arrow::array::RecordBatch> {
    let rows: Vec<_> = ids
        .map(|i| {
            json!({"org_id": "o1", "canonical_url": format!("https://example.com/{i}"),
                   "content_hash": "h", "capture_id": format!("c{i}"),
                   "first_capture_id": format!("c{i}"), "version": 1, "run_id": "r",
                   "seen_at": 1_700_000_000_000_000i64})
        })
        .collect();
    vec![rows_to_batch(&crow_schemas::SOCIAL_SEEN, &rows).expect("batch")]
}

/// Every table carries its checkpoint interval: the small, often-committed
/// tables checkpoint every 10 commits, so reading one replays at most 9
/// commits after its checkpoint; the partitioned event and fact tables keep
/// 100.
async fn checkpoint_intervals(b: Backend) {
    use crow_lake::object_store::ObjectStoreExt;
    let lake = b.lake().await;
    lake.init().await.expect("init");
    for def in crow_schemas::ALL_TABLES {
        let t = lake.table(def.name).await.expect("table");
        let snap = t.snapshot().expect("snapshot");
        let want = if def.partition_by.is_empty() {
            "10"
        } else {
            "100"
        };
        assert_eq!(
            snap.metadata()
                .configuration()
                .get(crow_lake::CHECKPOINT_INTERVAL_KEY)
                .map(String::as_str),
            Some(want),
            "{}: {}",
            b.name,
            def.name
        );
    }
    // `social_seen` is at version 0 after init; the ninth append is version
    // 9, the tenth commit, and delta-rs checkpoints it.
    for i in 0..9 {
        lake.append("social_seen", social_seen(i..i + 1))
            .await
            .expect("append");
    }
    let t = lake.table("social_seen").await.expect("table");
    assert_eq!(t.version(), Some(9), "{}", b.name);
    let store = t.log_store().object_store(None);
    for file in [
        "_delta_log/00000000000000000009.checkpoint.parquet",
        "_delta_log/_last_checkpoint",
    ] {
        store
            .head(&crow_lake::object_store::path::Path::from(file))
            .await
            .unwrap_or_else(|e| panic!("{}: {file}: {e}", b.name));
    }
    assert_eq!(
        count(&lake, "select count(*) from social_seen").await,
        9,
        "{}",
        b.name
    );

    // Expired log files go at a checkpoint, not at every commit (which
    // would list the whole log each time). On a local lake the commits'
    // times can be set back past the 30-day `delta.logRetentionDuration`.
    let Some(root) = lake.local_path() else {
        return;
    };
    let log = root.join("social_seen/_delta_log");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
    for v in 0..=9 {
        std::fs::File::options()
            .write(true)
            .open(log.join(format!("{v:020}.json")))
            .and_then(|f| f.set_modified(old))
            .expect("set the commit's time back");
    }
    lake.append("social_seen", social_seen(9..10))
        .await
        .expect("append");
    let first = log.join(format!("{:020}.json", 0));
    assert!(first.exists(), "a commit cleaned the log up");
    assert_eq!(
        lake.checkpoint("social_seen").await.expect("checkpoint"),
        10
    );
    assert!(!first.exists(), "the checkpoint left expired commits");
    assert!(log.join(format!("{:020}.json", 10)).exists());
    assert!(log.join(format!("{:020}.checkpoint.parquet", 10)).exists());
    assert_eq!(count(&lake, "select count(*) from social_seen").await, 10);
}

both_backends!(small_tables_checkpoint_every_ten_commits => checkpoint_intervals);

/// One lake object reads each commit file once (the lake's store keeps them,
/// `crow_lake::logcache`), and a table deleted by hand and made again under
/// the same name is read as the new table, not from the kept commits of the
/// old one.
async fn remade_table(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    lake.append("social_seen", social_seen(0..1))
        .await
        .expect("append");
    let files = |t: &crow_lake::deltalake::DeltaTable| -> Vec<String> {
        t.get_file_uris().expect("files").collect()
    };
    let mut first = None;
    for _ in 0..3 {
        let t = lake.table("social_seen").await.expect("table");
        let id = t.snapshot().expect("snapshot").metadata().id().to_string();
        first = Some((id, files(&t)));
    }
    let (first_id, first_files) = first.expect("loaded");
    assert_eq!(first_files.len(), 1);
    let (hits, misses) = lake.log_reads();
    assert!(
        hits > misses && misses > 0,
        "{}: commit reads from memory {hits}, from the store {misses}",
        b.name
    );

    // Delete the table's folder by hand, make it again, write other rows:
    // the same commit names now hold other commits.
    remove_table_by_hand(&lake, "social_seen").await;
    lake.init().await.expect("init again");
    lake.append("social_seen", social_seen(0..3))
        .await
        .expect("append");
    let t = lake.table("social_seen").await.expect("table");
    assert_eq!(t.version(), Some(1), "{}", b.name);
    let id = t.snapshot().expect("snapshot").metadata().id().to_string();
    assert_ne!(id, first_id, "{}: the old table's metadata", b.name);
    let now = files(&t);
    assert_eq!(now.len(), 1, "{}", b.name);
    assert_ne!(now, first_files, "{}: the old table's files", b.name);
    // (A process's SQL sessions keep each table's snapshot and bring it up
    // to date by the commits after it, so a table made again under a
    // running process is seen by a new one: `crow init` is run without a
    // server, as README "Storage" says.)
}

both_backends!(a_table_made_again_is_not_read_from_kept_commits => remade_table);

both_backends!(older_schema_evolves => older_schema_evolves);

both_backends!(prepare_checks_the_tables_once_per_schema => prepare_once);

/// `Lake::prepare` (what every writing command runs first) makes a new lake
/// like `init`, then trusts the tables marker: with the marker current it
/// reads nothing else, so a table removed afterwards stays missing until
/// `crow init`; a marker of other schema versions (an older or newer CROW)
/// or an unreadable one makes it check every table again.
async fn prepare_once(b: Backend) {
    use crow_lake::object_store::ObjectStoreExt;
    let lake = b.lake().await;
    let (store, marker) = lake
        .store_for(&lake.url_of(crow_lake::TABLES_MARKER).expect("marker url"))
        .expect("store");
    let read_marker = || async {
        let got = store.get(&marker).await.expect("the marker is written");
        serde_json::from_slice::<serde_json::Value>(&got.bytes().await.expect("bytes"))
            .expect("the marker is JSON")
    };
    lake.prepare().await.expect("prepare a new lake");
    for def in crow_schemas::ALL_TABLES {
        lake.table(def.name)
            .await
            .unwrap_or_else(|e| panic!("{}: prepare creates {}: {e}", b.name, def.name));
    }
    let current = read_marker().await;
    assert_eq!(current["marker"], 1, "{}", b.name);
    assert_eq!(
        current["tables"].as_object().map(|t| t.len()),
        Some(crow_schemas::ALL_TABLES.len()),
        "{}",
        b.name
    );
    assert_eq!(
        current["tables"]["raw_web_events"],
        serde_json::json!(crow_schemas::RAW_WEB_EVENTS.version),
        "{}",
        b.name
    );

    // Remove a table by hand: with the marker current, prepare does not
    // look (fresh handles, so no snapshot is cached).
    let missing = || async {
        matches!(
            b.lake().await.table("daily_metrics").await,
            Err(crow_lake::Error::TableMissing { .. })
        )
    };
    remove_table_by_hand(&lake, "daily_metrics").await;
    assert!(missing().await, "{}: the table is gone", b.name);
    b.lake().await.prepare().await.expect("prepare");
    assert!(
        missing().await,
        "{}: a current marker means no table is checked",
        b.name
    );

    // A marker of another CROW's schema versions, or one that cannot be
    // read (it counts as none): every table is checked (the missing one
    // made again) and the marker rewritten.
    let mut older = current.clone();
    older["tables"]["raw_web_events"] = serde_json::json!(0);
    for written in [
        serde_json::to_vec(&older).expect("json"),
        b"{not json".to_vec(),
    ] {
        if !missing().await {
            remove_table_by_hand(&lake, "daily_metrics").await;
        }
        store
            .put(&marker, written.into())
            .await
            .expect("write another marker");
        b.lake().await.prepare().await.expect("prepare");
        assert!(!missing().await, "{}: init ran again", b.name);
        assert_eq!(read_marker().await, current, "{}", b.name);
    }

    // And `init` always checks every table.
    remove_table_by_hand(&lake, "daily_metrics").await;
    b.lake().await.init().await.expect("init");
    assert!(!missing().await, "{}: init makes it again", b.name);
}

both_backends!(lost_commit_races_are_retried_and_exhaustion_is_an_error => lost_races);

/// Writers that replace the same day at once conflict (each read the table
/// before the others committed): the losers re-read and retry, so every
/// write lands whole and the day ends as exactly one writer's rows. With no
/// retries allowed, a lost race is an error, never a silent loss.
async fn lost_races(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let race = |lake: Lake, round: &'static str| async move {
        let tasks: Vec<_> = (0..6)
            .map(|w| {
                let lake = lake.clone();
                tokio::spawn(async move {
                    let rows = events("o1", &format!("{round}{w}"), 2, 10 + w);
                    lake.replace_where("raw_web_events", &on_day("2026-03-02"), vec![batch(&rows)])
                        .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    };
    // This lake's count (the process's would also count the other
    // backend's run of this test, at the same time).
    let results = race(lake.clone(), "w").await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        lake.commit_retries() > 0,
        "{}: six writers replacing one day at once: at least one lost a race and retried",
        b.name
    );
    // The day holds one writer's rows, whole: 10 + w rows, all of prefix w<w>.
    let rows = query_rows(
        &lake,
        "select count(*) as n, count(distinct split_part(message_id, '-', 1)) as writers \
         from raw_web_events where event_date = '2026-03-02'",
    )
    .await;
    assert_eq!(rows[0]["writers"], 1, "{rows:?}");
    let n = rows[0]["n"].as_i64().unwrap_or(0);
    assert!((10..16).contains(&n), "{rows:?}");

    // No retries: some of the racing writers fail with a conflict.
    let mut cfg = b.lake_config();
    cfg.commit_retries = 0;
    let strict = Lake::open(&cfg).await.expect("open");
    let results = race(strict.clone(), "s").await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        !failed.is_empty(),
        "{}: with no retries a lost race fails",
        b.name
    );
    // As a conflict: the error a caller (the scheduler, `crow`'s exit
    // status 75) retries.
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.kind(), crow_lake::ErrorKind::Conflict, "{e}");
            assert!(e.is_retryable(), "{e}");
        }
    }
    assert!(
        results.iter().any(Result::is_ok),
        "one writer wins: {failed:?}"
    );

    // Blind appends can only lose their version number, never a conflict:
    // even with no retries allowed, six at once all land, every row once
    // (an audit entry after a committed change must not be lost).
    let appends: Vec<_> = (0..6)
        .map(|w| {
            let lake = strict.clone();
            tokio::spawn(async move {
                let rows = events("o1", &format!("a{w}"), 2, 3);
                lake.append("raw_web_events", vec![batch(&rows)]).await
            })
        })
        .collect();
    for t in appends {
        let r = t.await.expect("task");
        assert!(r.is_ok(), "{}: a blind append was refused: {r:?}", b.name);
    }
    let rows = query_rows(
        &strict,
        "select count(*) as n from raw_web_events where message_id like 'a_-%'",
    )
    .await;
    assert_eq!(rows[0]["n"], 18, "{}: {rows:?}", b.name);
}

async fn query_rows(lake: &Lake, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let (_, batches) = lake.sql(sql).await.expect("query");
    batches_to_json(&batches).expect("json")
}

/// The live data files of `raw_web_events`: (tags, bytes) each.
async fn live_files(
    lake: &Lake,
) -> Vec<(
    std::collections::HashMap<String, Option<String>>,
    bytes::Bytes,
)> {
    use crow_lake::object_store::ObjectStoreExt;
    let t = lake.table("raw_web_events").await.expect("table");
    let snap = t.snapshot().expect("snapshot");
    let mut out = Vec::new();
    for view in snap.log_data().iter() {
        // The tags are only on the file's Add action.
        #[allow(deprecated)]
        let tags = view.add_action().tags.unwrap_or_default();
        let data = t
            .object_store()
            .get(&view.object_store_path())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.push((tags, data));
    }
    out
}

/// `optimize` clusters `raw_web_events`: each day's files become one file
/// sorted by organization, visitor, time and message id, with a bloom filter on the
/// visitor, holding exactly the rows it had; a day already clustered is not
/// rewritten, and a day that got a new file is, alone.
async fn clustered(b: Backend) {
    use crow_lake::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use crow_lake::deltalake::parquet::file::properties::ReaderProperties;
    use crow_lake::deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
    use crow_lake::deltalake::parquet::file::serialized_reader::ReadOptionsBuilder;

    let lake = b.lake().await;
    lake.init().await.expect("init");
    for (org, prefix) in [("o2", "x"), ("o1", "y"), ("o2", "z")] {
        for day in [1, 2] {
            lake.append("raw_web_events", vec![batch(&events(org, prefix, day, 40))])
                .await
                .expect("append");
        }
    }
    let all = "select * from raw_web_events order by message_id";
    let rows = |lake: &Lake| {
        let lake = lake.clone();
        async move { batches_to_json(&lake.sql(all).await.expect("q").1).expect("json") }
    };
    let before = rows(&lake).await;
    // The appended files are cheap to write (Snappy) but dictionary-encoded;
    // the clustered rewrite is ZSTD (README, "Storage layout").
    let codecs = |lake: &Lake| {
        let lake = lake.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for (_, data) in live_files(&lake).await {
                let file = SerializedFileReader::new(data).expect("file");
                for rg in file.metadata().row_groups() {
                    for c in rg.columns() {
                        let dict = c.dictionary_page_offset().is_some();
                        let name = c.column_path().string();
                        if ["context", "event", "occurred_at"].contains(&name.as_str()) {
                            // The codec only: a file does not record ZSTD's level.
                            let codec = format!("{:?}", c.compression());
                            let codec = codec.split('(').next().unwrap_or_default();
                            seen.insert(format!("{name} {codec} dict={dict}"));
                        }
                    }
                }
            }
            seen.into_iter().collect::<Vec<_>>()
        }
    };
    assert_eq!(
        codecs(&lake).await,
        [
            "context SNAPPY dict=true",
            "event SNAPPY dict=true",
            "occurred_at SNAPPY dict=false"
        ],
        "{}",
        b.name
    );
    let m = lake.optimize("raw_web_events").await.expect("optimize");
    assert_eq!((m.files_removed, m.files_added), (6, 2), "{}", b.name);
    assert_eq!(
        codecs(&lake).await,
        [
            "context ZSTD dict=true",
            "event ZSTD dict=true",
            "occurred_at ZSTD dict=false"
        ],
        "{}",
        b.name
    );
    assert_eq!(rows(&lake).await, before, "{}: the same rows", b.name);
    let files = live_files(&lake).await;
    assert_eq!(files.len(), 2, "{}", b.name);
    for (tags, data) in files {
        assert_eq!(
            tags.get("crow.clusteredBy"),
            Some(&Some(
                "org_id,anonymous_id,occurred_at,message_id".to_string()
            )),
            "{}",
            b.name
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(data.clone())
            .expect("parquet")
            .build()
            .expect("reader");
        let mut keys: Vec<(String, String, String, String)> = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let json = batches_to_json(&[batch]).expect("json");
            keys.extend(json.iter().map(|r| {
                (
                    r["org_id"].to_string(),
                    r["anonymous_id"].to_string(),
                    r["occurred_at"].to_string(),
                    r["message_id"].to_string(),
                )
            }));
        }
        assert_eq!(keys.len(), 120, "{}: a day's rows in one file", b.name);
        assert!(
            keys.windows(2).all(|w| w[0] <= w[1]),
            "{}: sorted by org, visitor, time, message id: {keys:?}",
            b.name
        );
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let file = SerializedFileReader::new_with_options(data, options).expect("file");
        let rg = file.get_row_group(0).expect("row group");
        let idx = rg
            .metadata()
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "anonymous_id")
            .expect("anonymous_id column");
        let bloom = rg
            .get_column_bloom_filter(idx)
            .expect("a bloom filter on anonymous_id");
        assert!(bloom.check(&"a3"), "{}", b.name);
        assert!(!bloom.check(&"no-such-visitor"), "{}", b.name);
    }
    // Again: nothing to do.
    let v = lake.stats("raw_web_events").await.expect("stats").version;
    let again = lake.optimize("raw_web_events").await.expect("optimize");
    assert_eq!(
        (again.files_removed, again.files_added),
        (0, 0),
        "{}",
        b.name
    );
    assert_eq!(
        lake.stats("raw_web_events").await.expect("stats").version,
        v
    );
    // A new file on day 2: that day alone is rewritten.
    lake.append("raw_web_events", vec![batch(&events("o1", "w", 2, 10))])
        .await
        .expect("append");
    let third = lake.optimize("raw_web_events").await.expect("optimize");
    assert_eq!(
        (third.files_removed, third.files_added),
        (2, 1),
        "{}",
        b.name
    );
    assert_eq!(
        count(&lake, "select count(*) from raw_web_events").await,
        250,
        "{}",
        b.name
    );
}

both_backends!(optimize_clusters_raw_web_events => clustered);
