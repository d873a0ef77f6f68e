//! The plain Parquet scan (`crow_lake::scan`), on every backend: it answers
//! exactly as delta-rs's scan does — across appends, a delete, an overwrite,
//! a merge, optimize, a checkpoint and time travel, for every table of the
//! lake — falls back to delta-rs for a protocol it cannot honour, and keeps
//! tenants apart in the API.

use std::sync::Arc;

use crow_lake::batch::{batches_to_json, rows_to_batch};
use crow_lake::datafusion::catalog::TableProvider;
use crow_lake::datafusion::execution::session_state::SessionStateBuilder;
use crow_lake::datafusion::prelude::{col, lit, SessionContext};
use crow_lake::deltalake::kernel::TableFeatures;
use crow_lake::predicate::date;
use crow_lake::scan::{plain_scan_allowed, PlainParquetTable};
use crow_lake::{AsOf, Lake, Scan};
use crow_schemas::{TableDef, PRODUCTS, RAW_WEB_EVENTS};
use serde_json::{json, Value};

use crate::api::{row, DATA_TABLES};
use crate::support::{both_backends, Backend};

const ORG_A: &str = "org-alpha";
const ORG_B: &str = "org-beta";

/// Rows `0..n` of `def` for `org`, their text marked with `tag`
/// (`event_date` is 2026-11-18 plus `i` days).
fn batch(def: &TableDef, org: &str, tag: &str, n: usize) -> crow_lake::arrow::array::RecordBatch {
    let rows: Vec<Value> = (0..n).map(|i| row(def, Some(org), tag, i)).collect();
    rows_to_batch(def, &rows).expect("batch")
}

fn day(d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
}

/// The rows of `sql` as sorted JSON texts (order-free comparison).
async fn answer(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = ordered(ctx, sql)
        .await
        .iter()
        .map(Value::to_string)
        .collect();
    rows.sort();
    rows
}

/// The rows of `sql` in the order returned.
async fn ordered(ctx: &SessionContext, sql: &str) -> Vec<Value> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches_to_json(&batches)
        .expect("json")
        .into_iter()
        .map(Value::Object)
        .collect()
}

fn is_plain(p: &Arc<dyn TableProvider>) -> bool {
    p.as_ref().downcast_ref::<PlainParquetTable>().is_some()
}

/// A session with `table` as of `as_of` registered twice: `p` through
/// [`Scan::Auto`] (asserted to be the plain scan), `d` through delta-rs.
async fn both_scans(lake: &Lake, table: &str, as_of: AsOf) -> SessionContext {
    let state = crow_lake::with_planner_rules(
        SessionStateBuilder::new()
            // Two partitions whatever the machine, as CI has.
            .with_config(crow_lake::session_config().with_target_partitions(2))
            .with_default_features(),
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    let vp = lake
        .register_scan(&ctx, "p", table, as_of, Scan::Auto)
        .await
        .expect("register plain");
    let vd = lake
        .register_scan(&ctx, "d", table, as_of, Scan::Delta)
        .await
        .expect("register delta");
    assert_eq!(vp, vd, "{table} {as_of:?}: both scans read one version");
    let p = ctx.table_provider("p").await.expect("p");
    let d = ctx.table_provider("d").await.expect("d");
    assert!(
        is_plain(&p),
        "{table} {as_of:?}: Scan::Auto is the plain scan"
    );
    assert!(!is_plain(&d), "{table} {as_of:?}: Scan::Delta is delta-rs");
    assert_eq!(p.schema(), d.schema(), "{table}: same schema");
    ctx
}

/// Every query in `queries` (`{t}` is the table) answers the same through
/// both scans; returns the answers of the plain scan.
async fn same_answers(ctx: &SessionContext, queries: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for q in queries {
        let plain = answer(ctx, &q.replace("{t}", "p")).await;
        let delta = answer(ctx, &q.replace("{t}", "d")).await;
        assert_eq!(
            plain, delta,
            "`{q}`: the plain scan differs from delta-rs's"
        );
        out.push(plain);
    }
    out
}

both_backends!(plain_scan_answers_as_delta_scan => plain_scan_answers_as_delta_scan);

async fn plain_scan_answers_as_delta_scan(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    // Three commits of several files over four days (18th to 21st).
    lake.append(
        t,
        vec![
            batch(&RAW_WEB_EVENTS, ORG_A, "one", 4),
            batch(&RAW_WEB_EVENTS, ORG_B, "two", 4),
        ],
    )
    .await
    .expect("append");
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_A, "three", 3)])
        .await
        .expect("append");
    let old = lake.stats(t).await.expect("stats").version;
    // Removed files: a delete of the 19th, an overwrite of the 20th, a
    // compaction of what remains, a checkpoint, then one more append.
    lake.delete_where(t, &col("event_date").eq(date(day(19))))
        .await
        .expect("delete");
    // Row 2 of each batch is on the 20th.
    let day20: Vec<Value> = (0..2)
        .map(|i| row(&RAW_WEB_EVENTS, Some(ORG_A), &format!("four{i}"), 2))
        .collect();
    lake.replace_where(
        t,
        &col("event_date").eq(date(day(20))),
        vec![rows_to_batch(&RAW_WEB_EVENTS, &day20).expect("batch")],
    )
    .await
    .expect("overwrite");
    lake.optimize(t).await.expect("optimize");
    lake.checkpoint(t).await.expect("checkpoint");
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_B, "five", 2)])
        .await
        .expect("append");

    let queries: Vec<String> = [
        "select * from {t}",
        "select event_date, org_id, count(*) as n from {t} group by event_date, org_id",
        "select * from {t} where event_date = DATE '2026-11-20'",
        "select message_id, event_date from {t} where event_date > DATE '2026-11-18' and org_id = 'org-alpha'",
        "select count(*) as n from {t} where event_date between DATE '2026-11-19' and DATE '2026-11-20'",
        "select max(occurred_at) as m, min(message_id) as f from {t} where org_id = 'org-beta'",
        "select message_id from {t} where event_date = DATE '2026-11-18' order by message_id limit 2",
        "select event_date, message_id from {t} where event_date >= DATE '2026-11-21' or message_id like 'two%'",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect();

    let latest = same_answers(&both_scans(&lake, t, AsOf::Latest).await, &queries).await;
    let before = same_answers(&both_scans(&lake, t, AsOf::Version(old)).await, &queries).await;
    // The answers are the table's, not merely equal: 4 + 4 + 3 rows before;
    // then the 19th deleted (3 rows), the 20th replaced by 2 rows, 2 more
    // (on the 18th and the 19th).
    assert_eq!(before[0].len(), 11, "{:?}", before[0]);
    assert_eq!(latest[0].len(), 11 - 3 - 3 + 2 + 2, "{:?}", latest[0]);
    assert_eq!(before[4], vec![json!({"n": 6}).to_string()]);
    assert_eq!(latest[4], vec![json!({"n": 3}).to_string()]);
    assert!(
        latest[2].iter().all(|r| r.contains("four")),
        "only the overwrite's rows on the 20th: {:?}",
        latest[2]
    );
    assert_eq!(latest[6].len(), 2);

    // Footers go to the runtime's file-metadata cache, one entry per file
    // read, and a second query over the same files reads none again.
    let ctx = SessionContext::new();
    lake.register_scan(&ctx, "p", t, AsOf::Latest, Scan::Auto)
        .await
        .expect("register");
    let files = ctx
        .table_provider("p")
        .await
        .expect("p")
        .as_ref()
        .downcast_ref::<PlainParquetTable>()
        .expect("plain")
        .num_files();
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    assert_eq!(cache.len(), 0);
    // (No filter: every file is read. `count(*)` alone would come from
    // the log's row counts.)
    answer(&ctx, "select max(occurred_at) from p").await;
    assert!(files > 1, "{files} files");
    assert_eq!(cache.len(), files, "one cached footer per file");
    answer(
        &ctx,
        "select max(message_id) from p where org_id = 'org-beta'",
    )
    .await;
    assert_eq!(cache.len(), files);

    // An unpartitioned table across a merge (an update of files in place).
    let p = "products";
    lake.append(p, vec![batch(&PRODUCTS, ORG_A, "one", 3)])
        .await
        .expect("append");
    let changed: Vec<Value> = (0..2)
        .map(|i| {
            let mut r = row(&PRODUCTS, Some(ORG_A), "one", i);
            r["name"] = json!("renamed");
            r
        })
        .collect();
    let changed = rows_to_batch(&PRODUCTS, &changed).expect("batch");
    lake.merge(p, vec![changed], &["org_id", "product_id"])
        .await
        .expect("merge");
    let queries: Vec<String> = [
        "select * from {t}",
        "select name, count(*) as n from {t} group by name",
        "select product_id from {t} where name = 'renamed'",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect();
    let answers = same_answers(&both_scans(&lake, p, AsOf::Latest).await, &queries).await;
    assert_eq!(answers[0].len(), 3);
    assert_eq!(answers[2].len(), 2);
}

both_backends!(every_table_answers_as_delta_scan => every_table_answers_as_delta_scan);

/// Every table of the lake (partitioned or not, with list and vector
/// columns) answers the same through the plain scan as through delta-rs:
/// two organizations' rows in two commits (two files at least), one
/// organization's deleted, the rest compacted and checkpointed; the latest
/// version and the one before the delete, whose files the later commits
/// removed.
async fn every_table_answers_as_delta_scan(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    for def in crow_schemas::ALL_TABLES {
        let t = def.name;
        let tenant = def.columns.iter().any(|c| c.name == "org_id");
        for (org, tag, n) in [(ORG_A, "one", 3), (ORG_B, "two", 2)] {
            lake.append(t, vec![batch(def, org, tag, n)])
                .await
                .unwrap_or_else(|e| panic!("{t}: append: {e}"));
        }
        let first = lake.stats(t).await.expect("stats").version;
        if tenant {
            lake.delete_where(t, &col("org_id").eq(lit(ORG_B)))
                .await
                .unwrap_or_else(|e| panic!("{t}: delete: {e}"));
        }
        lake.optimize(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: optimize: {e}"));
        lake.checkpoint(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: checkpoint: {e}"));
        let mut queries = vec!["select * from {t}".to_string()];
        if tenant {
            queries.push("select org_id, count(*) as n from {t} group by org_id".into());
        }
        let latest = same_answers(&both_scans(&lake, t, AsOf::Latest).await, &queries).await;
        let before =
            same_answers(&both_scans(&lake, t, AsOf::Version(first)).await, &queries).await;
        assert_eq!(before[0].len(), 5, "{t}: {:?}", before[0]);
        assert_eq!(
            latest[0].len(),
            if tenant { 3 } else { 5 },
            "{t}: {:?}",
            latest[0]
        );
        if tenant {
            assert_eq!(
                latest[1],
                vec![json!({"org_id": ORG_A, "n": 3}).to_string()],
                "{t}"
            );
        }
    }
}

/// The physical plan of `sql`, as EXPLAIN prints it.
async fn plan(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text = crow_lake::datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    text
}

both_backends!(
    filters_the_file_statistics_decide_are_not_evaluated
        => filters_the_file_statistics_decide_are_not_evaluated
);

/// The tenant filter `org_id = …` on files that each hold one organization
/// is decided by the Delta log's statistics: files of other organizations
/// are skipped, the filter is evaluated nowhere and `count(*)` comes from
/// the row counts. Once a file holds two organizations it is evaluated
/// again. Every answer equals delta-rs's.
async fn filters_the_file_statistics_decide_are_not_evaluated(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    // One organization per commit, so per file: 5 rows of A, 3 of B.
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_A, "one", 5)])
        .await
        .expect("append");
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_B, "two", 3)])
        .await
        .expect("append");
    let single = lake.stats(t).await.expect("stats").version;
    let queries: Vec<String> = [
        "select count(*) as n from {t} where org_id = 'org-alpha'",
        "select message_id, event_date from {t} where org_id = 'org-beta'",
        "select count(*) as n from {t} where org_id = 'org-gamma'",
        "select event_date, count(*) as n from {t} where 'org-alpha' = org_id group by event_date",
        "select count(*) as n from {t} where org_id = 'org-alpha' and event_date > DATE '2026-11-19'",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect();
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], vec![json!({"n": 5}).to_string()]);
    assert_eq!(answers[1].len(), 3, "{:?}", answers[1]);
    assert_eq!(answers[2], vec![json!({"n": 0}).to_string()]);
    assert_eq!(answers[4], vec![json!({"n": 3}).to_string()]);
    // Nothing reads or tests org_id: the count is the log's row counts (no
    // file is scanned at all), and the other scans read only what they
    // project, from org A's files only.
    let count = plan(&ctx, "select count(*) from p where org_id = 'org-alpha'").await;
    assert!(!count.contains("DataSourceExec"), "{count}");
    let rows = plan(&ctx, "select message_id from p where org_id = 'org-alpha'").await;
    assert!(
        rows.contains("DataSourceExec") && !rows.contains("org_id") && !rows.contains("Filter"),
        "{rows}"
    );
    let files_of_a = rows.matches(".parquet").count();
    assert_eq!(files_of_a, 5, "org A's five files only: {rows}");
    let none = plan(&ctx, "select message_id from p where org_id = 'org-gamma'").await;
    assert!(!none.contains("DataSourceExec"), "{none}");
    // The delta-rs scan still evaluates it (the comparison above is
    // between two different plans).
    let delta = plan(&ctx, "select message_id from d where org_id = 'org-alpha'").await;
    assert!(delta.contains("org_id"), "{delta}");

    // A commit whose files hold both organizations: the filter is
    // evaluated again, with the same answers.
    lake.append(
        t,
        vec![
            batch(&RAW_WEB_EVENTS, ORG_A, "mix", 2),
            batch(&RAW_WEB_EVENTS, ORG_B, "mix", 2),
        ],
    )
    .await
    .expect("append");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], vec![json!({"n": 7}).to_string()]);
    assert_eq!(answers[1].len(), 5, "{:?}", answers[1]);
    let mixed = plan(&ctx, "select message_id from p where org_id = 'org-alpha'").await;
    assert!(mixed.contains("org_id"), "evaluated again: {mixed}");
    // Org B's own three files are still skipped: A's five and the two
    // mixed ones are scanned.
    assert_eq!(mixed.matches(".parquet").count(), 5 + 2, "{mixed}");
    // The snapshot before it is still decided by its statistics.
    let ctx = both_scans(&lake, t, AsOf::Version(single)).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], vec![json!({"n": 5}).to_string()]);
    let count = plan(&ctx, "select count(*) from p where org_id = 'org-alpha'").await;
    assert!(!count.contains("DataSourceExec"), "{count}");
}

both_backends!(
    counts_per_partition_value_come_from_the_file_list
        => counts_per_partition_value_come_from_the_file_list
);

/// `count(*) … GROUP BY event_date` (the partition column) is answered from
/// the snapshot's file list and row counts (`crow_lake::counts`): no file
/// is read, and the answer equals delta-rs's across appends, a delete, time
/// travel and the tenant filter. A filter the statistics do not decide, a
/// `count(column)` or a grouping by a file column reads the files.
async fn counts_per_partition_value_come_from_the_file_list(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    // Org A: two commits over the same four days (two files a day); org B:
    // three days, two of them shared with A.
    for tag in ["one", "two"] {
        lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_A, tag, 4)])
            .await
            .expect("append");
    }
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_B, "three", 3)])
        .await
        .expect("append");
    let before_delete = lake.stats(t).await.expect("stats").version;
    let queries: Vec<String> = [
        "select event_date, count(*) as n from {t} group by event_date",
        "select event_date, count(*) as n, count(1) as m from {t} group by event_date",
        "select event_date, count(*) as n from {t} where org_id = 'org-alpha' group by event_date",
        "select count(*) as n, event_date from {t} group by event_date having count(*) > 2",
        // The query API's row cap is such a limit: a TopK whose dynamic
        // filter is pushed into the scan.
        "select event_date, count(*) as n from {t} group by event_date order by event_date limit 3",
        "select event_date, count(*) as n from {t} where event <> 'nothing' group by event_date",
        "select event_date, count(event) as n from {t} group by event_date",
        "select org_id, event_date, count(*) as n from {t} group by org_id, event_date",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect();
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let answers = same_answers(&ctx, &queries).await;
    let per_day = |pairs: &[(u32, i64)]| {
        let mut rows: Vec<String> = pairs
            .iter()
            .map(|(d, n)| json!({"event_date": day(*d).to_string(), "n": n}).to_string())
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(answers[0], per_day(&[(18, 3), (19, 3), (20, 3), (21, 2)]));
    assert_eq!(answers[2], per_day(&[(18, 2), (19, 2), (20, 2), (21, 2)]));
    let reads = |plan: &str| plan.contains(".parquet");
    for (i, q) in queries.iter().enumerate() {
        let p = plan(&ctx, &q.replace("{t}", "p")).await;
        // The first five are answered from the log; a row filter, a count
        // of a column and a file column as a key read the files.
        assert_eq!(reads(&p), i >= 5, "`{q}`: {p}");
    }
    // A delete: the answer follows the snapshot, then and now.
    lake.delete_where(t, &col("event_date").eq(date(day(19))))
        .await
        .expect("delete");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], per_day(&[(18, 3), (20, 3), (21, 2)]));
    let ctx = both_scans(&lake, t, AsOf::Version(before_delete)).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], per_day(&[(18, 3), (19, 3), (20, 3), (21, 2)]));
    // Files that mix organizations: the tenant filter is evaluated, so the
    // per-tenant count reads the files; the unfiltered one still does not.
    lake.append(
        t,
        vec![
            batch(&RAW_WEB_EVENTS, ORG_A, "mix", 1),
            batch(&RAW_WEB_EVENTS, ORG_B, "mix", 1),
        ],
    )
    .await
    .expect("append");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let answers = same_answers(&ctx, &queries).await;
    assert_eq!(answers[0], per_day(&[(18, 5), (20, 3), (21, 2)]));
    assert_eq!(answers[2], per_day(&[(18, 3), (20, 2), (21, 2)]));
    assert!(!reads(&plan(&ctx, &queries[0].replace("{t}", "p")).await));
    assert!(reads(&plan(&ctx, &queries[2].replace("{t}", "p")).await));
}

both_backends!(sorted_files_are_merged_not_sorted_again => sorted_files_are_merged_not_sorted_again);

/// Events of `org`'s visitors (`visitors`, whose ids are a permutation of
/// the numbers; visitor 0 anonymous: a null id), 8 each over two days, inserted out of order, with equal times per
/// visitor so the message id must break ties. `first_day` is the 18th plus
/// this many days.
fn visits(org: &str, tag: &str, first_day: i64, visitors: &[usize]) -> Vec<Value> {
    const BASE_MICROS: i64 = 1_794_960_000_000_000; // 2026-11-18T00:00:00Z
    let mut rows = Vec::new();
    for &v in visitors {
        for k in 0..8usize {
            let mut r = row(&RAW_WEB_EVENTS, Some(org), tag, k);
            let day = first_day + (k % 2) as i64;
            r["anonymous_id"] = if v == 0 {
                Value::Null
            } else {
                json!(format!("{org}-v{:02}", (v * 7) % 12))
            };
            r["event_date"] = json!(BASE_MICROS / 86_400_000_000 + day);
            r["occurred_at"] =
                json!(BASE_MICROS + day * 86_400_000_000 + ((k * 13 + v) % 3) as i64 * 60_000_000);
            r["message_id"] = json!(format!("m-{tag}-{}-{}", 7 - k, v));
            rows.push(r);
        }
    }
    rows
}

/// Whether a physical plan sorts anywhere.
fn sorts(plan: &str) -> bool {
    plan.contains("SortExec")
}

/// Files `crow optimize` wrote sorted by (organization, visitor, time,
/// message id) are declared sorted to DataFusion, each its own partition:
/// a window or `ORDER BY` per visitor merges them instead of sorting, and
/// answers exactly as delta-rs's scan (which declares no order) and as the
/// unsorted files did. A leading organization that is one value per file
/// is left out of the order; where files mix organizations the tenant
/// filter supplies it. A file not written by optimize turns it off.
async fn sorted_files_are_merged_not_sorted_again(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    let append = |rows: Vec<Value>| {
        let lake = lake.clone();
        async move {
            let batch = rows_to_batch(&RAW_WEB_EVENTS, &rows).expect("batch");
            lake.append(t, vec![batch]).await.expect("append");
        }
    };
    // Org A on the 18th and 19th in two commits, org B on the 20th and 21st.
    append(visits(ORG_A, "a1", 0, &[5, 0, 9, 2, 11, 7])).await;
    append(visits(ORG_A, "a2", 0, &[3, 10, 1, 8, 4, 6])).await;
    append(visits(ORG_B, "b1", 2, &[4, 1, 0, 6])).await;
    let window = "select anonymous_id, message_id, \
        lag(message_id) over (partition by anonymous_id order by occurred_at, message_id) as prev, \
        row_number() over (partition by anonymous_id order by occurred_at, message_id) as rn \
        from {t} where org_id = 'org-alpha'";
    let queries: Vec<String> = [
        window,
        "select anonymous_id, message_id from (select anonymous_id, message_id, \
         row_number() over (partition by anonymous_id order by occurred_at, message_id) as rn \
         from {t}) where rn = 1",
        "select anonymous_id, count(*) as n, min(occurred_at) as first from {t} \
         where org_id = 'org-beta' group by anonymous_id",
        "select event_date, count(distinct anonymous_id) as visitors from {t} \
         where org_id = 'org-alpha' group by event_date",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect();
    let in_order = "select anonymous_id, message_id from {t} where org_id = 'org-alpha' \
        order by anonymous_id, occurred_at, message_id";

    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let unsorted = same_answers(&ctx, &queries).await;
    // 96 events of org A's 12 visitors (one anonymous): 84 have a
    // previous one. Over both organizations the anonymous rows are one
    // partition: 11 + 3 visitors with an id, and one without.
    assert_eq!(unsorted[0].len(), 96);
    let firsts = |rows: &[String]| rows.iter().filter(|r| !r.contains(r#""prev""#)).count();
    assert_eq!(firsts(&unsorted[0]), 12);
    assert_eq!(unsorted[1].len(), 11 + 3 + 1, "{:?}", unsorted[1]);
    let before = ordered(&ctx, &in_order.replace("{t}", "p")).await;
    assert_eq!(before, ordered(&ctx, &in_order.replace("{t}", "d")).await);
    assert_eq!(before.len(), 96);
    assert!(
        sorts(&plan(&ctx, &window.replace("{t}", "p")).await),
        "files as appended are not sorted"
    );

    // Optimize: a sorted file per day, each of one organization.
    lake.optimize(t).await.expect("optimize");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    assert_eq!(same_answers(&ctx, &queries).await, unsorted);
    assert_eq!(ordered(&ctx, &in_order.replace("{t}", "p")).await, before);
    // Visitors per day groups by day and visitor, sorted by visitor only:
    // that aggregate hashes (`crow_lake::order`) rather than emit each
    // visitor's group early.
    let per_day = plan(&ctx, &queries[3].replace("{t}", "p")).await;
    assert!(
        per_day.contains("Unordered") && !per_day.contains("PartiallySorted"),
        "{per_day}"
    );
    // Over both organizations (four files, each sorted; two partitions):
    // where nothing then uses the order, the files are spread over the
    // partitions again; a window and an aggregate per visitor keep one
    // sorted partition per file.
    let spread = [
        "select event_date, count(distinct anonymous_id) as v from {t} group by event_date",
        "select event, count(*) as n from {t} group by event",
    ];
    let kept = [
        queries[1].as_str(),
        "select anonymous_id, count(*) as n from {t} group by anonymous_id",
    ];
    for q in spread {
        let p = plan(&ctx, &q.replace("{t}", "p")).await;
        assert!(
            !p.contains("output_ordering") && p.contains("file_groups={2 groups"),
            "{q}\n{p}"
        );
    }
    for q in kept {
        let p = plan(&ctx, &q.replace("{t}", "p")).await;
        assert!(
            p.contains("output_ordering") && p.contains("file_groups={4 groups"),
            "{q}\n{p}"
        );
    }
    let both: Vec<String> = spread.iter().chain(&kept).map(|q| q.to_string()).collect();
    same_answers(&ctx, &both).await;
    assert_eq!(
        unsorted[3],
        vec![
            json!({"event_date": "2026-11-18", "visitors": 11}).to_string(),
            json!({"event_date": "2026-11-19", "visitors": 11}).to_string(),
        ]
    );
    for q in queries[..3].iter().chain([&in_order.to_string()]) {
        let p = plan(&ctx, &q.replace("{t}", "p")).await;
        assert!(
            !sorts(&p),
            "optimized files are merged, not sorted: {q}\n{p}"
        );
        assert!(p.matches(".parquet").count() > 1, "{p}");
    }
    // delta-rs's scan declares no order: the same queries sort there.
    assert!(sorts(&plan(&ctx, &window.replace("{t}", "d")).await));

    // A day holding both organizations: files are sorted by organization
    // first. The tenant filter makes it one value, so those queries still
    // merge; a window over every organization sorts.
    append(visits(ORG_B, "b2", 0, &[2, 3])).await;
    lake.optimize(t).await.expect("optimize");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let mixed = same_answers(&ctx, &queries).await;
    assert_eq!(mixed[0], unsorted[0], "org A's rows did not change");
    assert_eq!(mixed[1].len(), 11 + 3 + 2 + 1, "{:?}", mixed[1]);
    assert_eq!(ordered(&ctx, &in_order.replace("{t}", "p")).await, before);
    assert!(!sorts(&plan(&ctx, &window.replace("{t}", "p")).await));
    assert!(sorts(&plan(&ctx, &queries[1].replace("{t}", "p")).await));

    // A file the collector appended since is not sorted: no order declared.
    append(visits(ORG_A, "a3", 1, &[12])).await;
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let appended = same_answers(&ctx, &queries).await;
    assert_eq!(appended[0].len(), 96 + 8);
    assert_eq!(firsts(&appended[0]), 13);
    assert!(sorts(&plan(&ctx, &window.replace("{t}", "p")).await));
    let after = ordered(&ctx, &in_order.replace("{t}", "p")).await;
    assert_eq!(after, ordered(&ctx, &in_order.replace("{t}", "d")).await);

    // Only a table's current key is taken as an order: files of an older
    // key (written nulls first) are rewritten by the next optimize.
    assert_eq!(
        crow_lake::cluster::sorted_by("org_id,anonymous_id,occurred_at,message_id"),
        crow_lake::cluster::cluster_keys(t)
    );
    assert_eq!(
        crow_lake::cluster::sorted_by("org_id,anonymous_id,occurred_at"),
        None
    );
}

both_backends!(unknown_protocol_falls_back_to_delta => unknown_protocol_falls_back_to_delta);

async fn unknown_protocol_falls_back_to_delta(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_A, "one", 3)])
        .await
        .expect("append");
    lake.append(t, vec![batch(&RAW_WEB_EVENTS, ORG_B, "two", 2)])
        .await
        .expect("append");
    let plain_version = lake.stats(t).await.expect("stats").version;
    let table = lake.table(t).await.expect("table");
    assert_eq!(plain_scan_allowed(&table), Ok(()));

    // Deletion vectors on: a reader feature the plain scan cannot honour.
    table
        .add_feature()
        .with_feature(TableFeatures::DeletionVectors)
        .with_allow_protocol_versions_increase(true)
        .await
        .expect("add deletion vectors");
    let table = lake.table(t).await.expect("table");
    let why = plain_scan_allowed(&table).expect_err("deletion vectors refuse the plain scan");
    assert!(why.contains("deletionVectors"), "{why}");
    let provider = lake
        .provider_for(&table, Scan::Auto)
        .await
        .expect("provider");
    assert!(!is_plain(&provider), "deletion vectors: delta-rs reads it");
    // It still reads correctly, through delta-rs.
    let ctx = SessionContext::new();
    lake.register_scan(&ctx, "t", t, AsOf::Latest, Scan::Auto)
        .await
        .expect("register");
    let rows = answer(&ctx, "select org_id, count(*) as n from t group by org_id").await;
    let mut want = vec![
        json!({"org_id": ORG_A, "n": 3}).to_string(),
        json!({"org_id": ORG_B, "n": 2}).to_string(),
    ];
    want.sort();
    assert_eq!(rows, want);
    // The version before the feature is still read as plain Parquet.
    let old = lake
        .table_as_of(t, AsOf::Version(plain_version))
        .await
        .expect("old");
    assert!(is_plain(
        &lake.provider_for(&old, Scan::Auto).await.expect("provider")
    ));

    // `lake.plain_parquet_scan = false` turns it off.
    let mut cfg = b.lake_config();
    cfg.plain_parquet_scan = false;
    let off = Lake::open(&cfg).await.expect("lake");
    assert!(!is_plain(
        &off.provider_for(&old, Scan::Auto).await.expect("provider")
    ));
}

both_backends!(tenants_stay_apart_with_the_plain_scan => tenants_stay_apart_with_the_plain_scan);

async fn tenants_stay_apart_with_the_plain_scan(b: Backend) {
    let w = crate::api::world_on(
        b,
        &[
            ("CROW_LAKE_PLAIN_PARQUET_SCAN", "true"),
            ("CROW_LOG", "info,crow_lake=debug"),
            ("CROW_API_RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    // Every table: org A's rows only (each answer is checked for org B's
    // marks and org ids by `rows`).
    for t in DATA_TABLES {
        let rows = w.rows(&format!("select * from {t}")).await;
        assert_eq!(rows.len(), w.a_rows, "{t}: {rows:?}");
    }
    let b_id = w.org_b.clone();
    for q in [
        "select * from raw_web_events where event_date >= DATE '2000-01-01'".to_string(),
        "select org_id, event_date, count(*) as n from raw_web_events group by org_id, event_date"
            .to_string(),
        format!("select * from raw_web_events where org_id = '{b_id}'"),
        format!(
            "select * from sessions where org_id = '{b_id}' or session_date > DATE '2000-01-01'"
        ),
        format!("select * from patterns where period_kind = 'day' or org_id <> '{b_id}'"),
        "select a.org_id from raw_web_events a join sessions s on a.org_id <> s.org_id".to_string(),
    ] {
        let rows = w.rows(&q).await;
        for r in &rows {
            if let Some(o) = r.get("org_id").and_then(Value::as_str) {
                assert_eq!(o, w.org_a, "{q}: {r}");
            }
        }
    }
    assert!(w
        .rows(&format!(
            "select * from raw_web_events where org_id = '{b_id}'"
        ))
        .await
        .is_empty());
    // The API read the partitioned tables as plain Parquet.
    let logs = w.server.logs.lock().expect("logs").join("\n");
    for t in ["raw_web_events", "sessions", "patterns"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("plain Parquet scan") && l.contains(&format!("{t}/"))),
            "{t} was not read by the plain scan: {logs}"
        );
    }
}

both_backends!(
    filters_that_keep_many_rows_are_evaluated_above_the_scan
        => filters_that_keep_many_rows_are_evaluated_above_the_scan
);

/// A filter seen to keep many of the rows it is evaluated on
/// (`crow_lake::pushdown`) is evaluated above the scan from the next scan
/// on; one that keeps few stays in the Parquet decoder; a filter on the
/// tenant column the statistics do not decide keeps it in the decoder, and
/// the session setting pushes every filter down. Every answer, before and
/// after, equals delta-rs's.
async fn filters_that_keep_many_rows_are_evaluated_above_the_scan(b: Backend) {
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let t = "raw_web_events";
    // 20,000 events of one organization on one day: half of them `common`,
    // ten `rare`.
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("date");
    let event_day = (day(18) - epoch).num_days();
    // 20,000 events of `org` on one day, the `i`-th named `event(i)`.
    let one_day = |org: &str, tag: &str, event: fn(usize) -> &'static str| {
        let rows: Vec<Value> = (0..20_000)
            .map(|i| {
                let mut r = row(&RAW_WEB_EVENTS, Some(org), tag, i);
                r["event_date"] = json!(event_day);
                r["event"] = json!(event(i));
                r
            })
            .collect();
        rows_to_batch(&RAW_WEB_EVENTS, &rows).expect("batch")
    };
    let events_a: fn(usize) -> &'static str = |i| match i {
        0..10 => "rare",
        _ if i % 2 == 0 => "common",
        _ => "other",
    };
    lake.append(t, vec![one_day(ORG_A, "pd", events_a)])
        .await
        .expect("append");
    let common = "select count(*) as n, count(distinct anonymous_id) as v from {t} \
                  where event = 'common'";
    let rare = "select anonymous_id, occurred_at from {t} where event = 'rare'";
    let above = |plan: &str| plan.contains("FilterExec");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let on_p = |q: &str| q.replace("{t}", "p");

    // First seen: in the decoder. Once run, it has kept half its rows.
    let first = plan(&ctx, &on_p(common)).await;
    assert!(!above(&first), "an unknown filter is pushed down: {first}");
    let answers = same_answers(&ctx, &[common.to_string()]).await;
    assert_eq!(
        answers[0],
        vec![json!({"n": 9_995, "v": 9_995}).to_string()]
    );
    let counted = crow_lake::pushdown::scans().1;
    let learned = plan(&ctx, &on_p(common)).await;
    assert!(
        crow_lake::pushdown::scans().1 > counted,
        "counted on /metrics"
    );
    assert!(
        above(&learned),
        "50 % kept: evaluated above the scan: {learned}"
    );
    assert_eq!(same_answers(&ctx, &[common.to_string()]).await, answers);

    // Ten rows of 20,000 stay in the decoder.
    let answers = same_answers(&ctx, &[rare.to_string()]).await;
    assert_eq!(answers[0].len(), 10, "{answers:?}");
    let selective = plan(&ctx, &on_p(rare)).await;
    assert!(
        !above(&selective),
        "0.05 % kept: in the decoder: {selective}"
    );
    assert_eq!(same_answers(&ctx, &[rare.to_string()]).await, answers);

    // The session setting pushes down what was learned to keep above.
    let state = crow_lake::with_planner_rules(
        SessionStateBuilder::new()
            .with_config(
                crow_lake::session_config()
                    .with_target_partitions(2)
                    .set_bool("datafusion.execution.parquet.pushdown_filters", true),
            )
            .with_default_features(),
    )
    .build();
    let forced = SessionContext::new_with_state(state);
    lake.register_scan(&forced, "p", t, AsOf::Latest, Scan::Auto)
        .await
        .expect("register");
    let pushed = plan(&forced, &on_p(common)).await;
    assert!(!above(&pushed), "pushdown_filters = true: {pushed}");

    // Organization B's own file, where `common` is rare: with the tenant
    // filter decided by the statistics, each organization learns from its
    // own rows.
    let events_b: fn(usize) -> &'static str = |i| if i < 10 { "common" } else { "other" };
    lake.append(t, vec![one_day(ORG_B, "pdb", events_b)])
        .await
        .expect("append");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let of = |org: &str| {
        format!("select anonymous_id from {{t}} where org_id = '{org}' and event = 'common'")
    };
    for (org, kept, learned_above) in [(ORG_A, 9_995, true), (ORG_B, 10, false)] {
        let q = of(org);
        let answers = same_answers(&ctx, std::slice::from_ref(&q)).await;
        assert_eq!(answers[0].len(), kept, "{org}");
        let p = plan(&ctx, &on_p(&q)).await;
        assert!(!p.contains("org_id"), "decided by the statistics: {p}");
        assert_eq!(above(&p), learned_above, "{org}: {p}");
    }

    // Files holding two organizations: the tenant filter is evaluated, and
    // with it the whole filter stays in the decoder, however many rows it
    // keeps.
    lake.append(
        t,
        vec![
            batch(&RAW_WEB_EVENTS, ORG_A, "mix", 2),
            batch(&RAW_WEB_EVENTS, ORG_B, "mix", 2),
        ],
    )
    .await
    .expect("append");
    let ctx = both_scans(&lake, t, AsOf::Latest).await;
    let tenant = "select count(*) as n from {t} where org_id = 'org-alpha' and event = 'common'";
    for _ in 0..3 {
        let answers = same_answers(&ctx, &[tenant.to_string()]).await;
        assert_eq!(answers[0], vec![json!({"n": 9_995}).to_string()]);
        let p = plan(&ctx, &on_p(tenant)).await;
        assert!(p.contains("org_id") && !above(&p), "{p}");
    }
}
