//! The lake's own commands: `init`, `tables`, `sql`, `history` and the
//! maintenance of `optimize`, `vacuum` and `checkpoint`.

use anyhow::{Context, Result};
use crow_lake::Lake;

use crate::output::{self, Format};

/// `crow init`: create every table that is missing.
pub async fn init(lake: &Lake, format: Format) -> Result<()> {
    let report = lake.init().await?;
    let rows: Vec<serde_json::Value> = report
        .iter()
        .map(|(t, created)| {
            serde_json::json!({"table": t, "status": if *created { "created" } else { "exists" }})
        })
        .collect();
    output::print_rows(format, &["table", "status"], &rows)
}

/// `crow tables`: each table's schema version, Delta version and size.
pub async fn tables(lake: &Lake, format: Format) -> Result<()> {
    let mut rows = Vec::new();
    for def in crow_schemas::ALL_TABLES {
        let s = lake.stats(def.name).await?;
        rows.push(serde_json::json!({
            "table": def.name, "schema_version": def.version, "version": s.version,
            "files": s.files, "rows": s.rows, "bytes": s.bytes,
        }));
    }
    output::print_rows(
        format,
        &[
            "table",
            "schema_version",
            "version",
            "files",
            "rows",
            "bytes",
        ],
        &rows,
    )
}

/// `crow sql`: one read-only query, at the latest versions, as of a time,
/// or with tables pinned to versions (`TABLE=VERSION`).
pub async fn sql(
    lake: &Lake,
    query: &str,
    as_of: Option<&str>,
    versions: &[String],
    format: Format,
) -> Result<()> {
    // Read as the query API reads (plain Parquet where the protocol
    // allows it, `lake.plain_parquet_scan`).
    let as_of = match as_of {
        Some(t) => crow_lake::AsOf::Timestamp(crow_schemas::time::parse_time("--as-of", t)?),
        None => crow_lake::AsOf::Latest,
    };
    let mut pins = Vec::new();
    for v in versions {
        let (t, n) = v
            .split_once('=')
            .and_then(|(t, n)| n.parse::<u64>().ok().map(|n| (t, n)))
            .with_context(|| format!("--table-version `{v}` is not TABLE=VERSION"))?;
        pins.push((t.to_string(), crow_lake::AsOf::Version(n)));
    }
    let ctx = lake
        .query_session(as_of, &pins, crow_lake::Scan::Auto)
        .await?;
    let (schema, batches) = crow_lake::run_read_only(&ctx, query).await?;
    output::print_batches(format, &schema, &batches)
}

/// `crow history`: a table's commits, newest first.
pub async fn history(lake: &Lake, table: &str, limit: usize, format: Format) -> Result<()> {
    let rows = lake.history(table, limit).await?;
    output::print_rows(
        format,
        &[
            "version",
            "timestamp",
            "operation",
            "rows_added",
            "files_added",
            "files_removed",
            "read_version",
            "retries",
        ],
        &rows,
    )
}

/// `crow optimize`: compact small files.
pub async fn optimize(lake: &Lake, table: Option<&str>, format: Format) -> Result<()> {
    let mut rows = Vec::new();
    for t in tables_arg(table)? {
        let m = lake.optimize(t).await?;
        rows.push(serde_json::json!({"table": t, "files_removed": m.files_removed, "files_added": m.files_added, "version": m.version}));
    }
    output::print_rows(
        format,
        &["table", "files_removed", "files_added", "version"],
        &rows,
    )
}

/// `crow vacuum`: delete files no version within the retention needs (or
/// list them, with `--dry-run`).
pub async fn vacuum(
    lake: &Lake,
    table: Option<&str>,
    retention_hours: u64,
    dry_run: bool,
    format: Format,
) -> Result<()> {
    let mut rows = Vec::new();
    for t in tables_arg(table)? {
        let files = lake.vacuum(t, retention_hours, dry_run).await?;
        if dry_run {
            // What would go, file by file, for a person to check.
            rows.extend(
                files
                    .iter()
                    .map(|f| serde_json::json!({"table": t, "file": f})),
            );
        } else {
            rows.push(serde_json::json!({"table": t, "files_deleted": files.len()}));
        }
    }
    if dry_run {
        output::print_rows(format, &["table", "file"], &rows)
    } else {
        output::print_rows(format, &["table", "files_deleted"], &rows)
    }
}

/// `crow checkpoint`: write a checkpoint at each table's version.
pub async fn checkpoint(lake: &Lake, table: Option<&str>, format: Format) -> Result<()> {
    let mut rows = Vec::new();
    for t in tables_arg(table)? {
        let v = lake.checkpoint(t).await?;
        rows.push(serde_json::json!({"table": t, "checkpoint_version": v}));
    }
    output::print_rows(format, &["table", "checkpoint_version"], &rows)
}

/// One named table (an unknown name is an error), or all of them.
fn tables_arg(table: Option<&str>) -> Result<Vec<&'static str>> {
    match table {
        Some(t) => {
            let def = crow_schemas::table(t)
                .ok_or_else(|| crow_lake::Error::UnknownTable(t.to_string()))?;
            Ok(vec![def.name])
        }
        None => Ok(crow_schemas::ALL_TABLES.iter().map(|d| d.name).collect()),
    }
}
