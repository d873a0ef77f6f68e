//! Property: whatever mix of statements a key sends — writes, DDL, COPY,
//! file tables and table functions, `SET`, `PREPARE`, several statements
//! in one, nested in CTEs and subqueries, in any case and with comments —
//! the API's planner either refuses it or runs a read that changes nothing
//! in the lake, creates no file and reads no file outside CROW's tables.
//!
//! Bounded in time: `PROPTEST_CASES` (default 128) sets the number of cases.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crow_lake::{AsOf, Lake};
use crow_query_api::sql::plan_query;
use crow_query_api::tenant::{tenant_context, Pins};
use crow_query_api::ApiState;
use crow_schemas::config::{ApiConfig, LakeConfig};
use proptest::prelude::*;

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.insert((p, len));
            }
        }
    }
    out
}

struct World {
    rt: tokio::runtime::Runtime,
    root: tempfile::TempDir,
    lake: Lake,
    state: std::sync::Arc<ApiState>,
    victim: String,
    out: String,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    let lake_dir = root.path().join("lake");
    let victim = root.path().join("victim.csv");
    // A file outside the lake that no statement may read: its marker must
    // never come back.
    std::fs::write(&victim, "secret\nVICTIMMARK\n").expect("victim");
    let out = root.path().join("out");
    let (lake, state) = rt.block_on(async {
        let lake = Lake::open(&LakeConfig {
            uri: lake_dir.to_string_lossy().into_owned(),
            ..LakeConfig::default()
        })
        .await
        .expect("lake");
        lake.init().await.expect("init");
        let state = ApiState::new(lake.clone(), ApiConfig::default()).expect("state");
        (lake, state)
    });
    World {
        rt,
        lake,
        state,
        victim: victim.to_string_lossy().into_owned(),
        out: out.to_string_lossy().into_owned(),
        root,
    }
}

const TABLES: &[&str] = &[
    "raw_web_events",
    "sessions",
    "organizations",
    "api_keys",
    "patterns",
    "t",
    "information_schema.tables",
];

/// One statement from the hostile grammar; `{t}` a table, `{v}` the victim
/// file, `{o}` a path to write.
const TEMPLATES: &[&str] = &[
    "select * from {t}",
    "select count(*) from {t}",
    "insert into {t} values (1)",
    "insert into {t} select * from {t}",
    "update {t} set org_id = 'x'",
    "delete from {t}",
    "truncate table {t}",
    "drop table {t}",
    "create table x as select * from {t}",
    "create view x as select * from {t}",
    "create external table x stored as csv location '{v}'",
    "copy (select 1) to '{o}'",
    "copy {t} to '{o}' stored as parquet",
    "select * from '{v}'",
    "select * from read_csv('{v}')",
    "select * from read_parquet('{v}')",
    "select * from read_json('{v}')",
    "with x as (select * from {t}) insert into {t} select * from x",
    "with x as (select * from '{v}') select * from x",
    "select * from (select * from '{v}') s",
    "explain analyze copy (select 1) to '{o}'",
    "explain select * from {t}",
    "set datafusion.execution.batch_size = 1",
    "set datafusion.catalog.information_schema = false",
    "prepare p as select * from {t}",
    "execute p",
    "deallocate p",
    "begin",
    "commit",
    "show tables",
    "describe {t}",
    "select * from generate_series(1, 3)",
    "select * from {t} where org_id in (select org_id from {t})",
];

fn statement() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(TEMPLATES),
        prop::sample::select(TABLES),
        prop::sample::select(TEMPLATES),
        0u8..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, t, b, shape, upper, comment)| {
            let a = if upper {
                a.to_uppercase()
            } else {
                a.to_string()
            };
            let joined = match shape {
                0 => a,
                1 => format!("{a}; {b}"),
                2 => format!("select * from ({a}) q"),
                _ => format!("with q as ({a}) {b}"),
            };
            let s = if comment {
                joined.replacen(' ', " /* c */ ", 1)
            } else {
                joined
            };
            (s, t.to_string())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn no_statement_writes_or_reads_files(case in statement()) {
        thread_local! {
            static W: World = world();
        }
        let (template, table) = case;
        W.with(|w| -> Result<(), TestCaseError> {
            let sql = template
                .replace("{t}", &table)
                .replace("{T}", &table)
                .replace("{v}", &w.victim)
                .replace("{V}", &w.victim)
                .replace("{o}", &w.out)
                .replace("{O}", &w.out);
            let before = files(w.root.path());
            let result: Result<String, String> = w.rt.block_on(async {
                let (ctx, schema) = tenant_context(
                    &w.lake,
                    w.state.runtime.clone(),
                    "org_a",
                    AsOf::Latest,
                    Pins::new(),
                    8192,
                );
                let df = plan_query(&w.state, &ctx, &schema, &sql)
                    .await
                    .map_err(|e| e.to_string())?;
                let batches = df.collect().await.map_err(|e| e.to_string())?;
                Ok(arrow::util::pretty::pretty_format_batches(&batches)
                    .map(|t| t.to_string())
                    .unwrap_or_default())
            });
            if let Ok(text) = &result {
                prop_assert!(!text.contains("VICTIMMARK"), "{sql}: read a file: {text}");
            }
            // A commit, a COPY target or a spilled file would show here (the
            // lake lives under the same folder).
            prop_assert_eq!(files(w.root.path()), before, "{}: files changed ({:?})", sql, result);
            Ok(())
        })?;
    }
}
