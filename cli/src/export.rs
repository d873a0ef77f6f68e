//! `crow export`: one table (one organization's rows, or all) for a time
//! range, to Parquet, CSV or JSON lines on a local path or an S3 URL, with a
//! progress bar.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use crow_lake::{AsOf, Lake};
use crow_query_api::export::{self, ExportFormat};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Table to export.
    table: String,
    /// Only this organization's rows (id or name). Default: every
    /// organization.
    #[arg(long)]
    org: Option<String>,
    /// Start of the time range (RFC 3339 or YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// End of the time range (RFC 3339 or YYYY-MM-DD), exclusive.
    #[arg(long)]
    to: Option<String>,
    /// File format: parquet, csv or jsonl.
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Output: a local path or s3://bucket/key.
    #[arg(long)]
    out: String,
}

fn time(flag: &str, v: &str) -> Result<DateTime<Utc>> {
    Ok(crow_schemas::time::parse_time(&format!("--{flag}"), v)?)
}

pub async fn run(lake: &Lake, a: ExportArgs) -> Result<()> {
    let format: ExportFormat = a.format.parse().map_err(|e: String| anyhow!(e))?;
    if crow_schemas::table(&a.table).is_none() {
        return Err(crow_lake::Error::UnknownTable(a.table.clone()).into());
    }
    let from = a.from.as_deref().map(|v| time("from", v)).transpose()?;
    let to = a.to.as_deref().map(|v| time("to", v)).transpose()?;
    let df = match &a.org {
        Some(o) => {
            let org = crow_query_api::keys::resolve_org(lake, o).await?;
            let runtime =
                Arc::new(crow_lake::datafusion::execution::runtime_env::RuntimeEnv::default());
            let (ctx, _schema) = crow_query_api::tenant::tenant_context(
                lake,
                runtime,
                &org.org_id,
                AsOf::Latest,
                Default::default(),
                8192,
            );
            ctx.table(a.table.as_str()).await?
        }
        None => export::all_orgs_frame(lake, &a.table).await?,
    };
    let df = export::in_range(df, &a.table, from, to)?;
    let url = if a.out.contains("://") {
        url::Url::parse(&a.out).with_context(|| format!("--out `{}` is not a URL", a.out))?
    } else {
        let p = std::path::Path::new(&a.out);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()?.join(p)
        };
        url::Url::from_file_path(&abs)
            .map_err(|_| anyhow!("--out `{}` is not a usable path", a.out))?
    };
    let (store, path) = lake.store_for(&url)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {human_pos} rows {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("→ {}", a.out));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let rows = export::write(df, format, Arc::from(store), &path, |n| bar.set_position(n))
        .await
        .map_err(|e| anyhow!("exporting {}: {e}", a.table))?;
    bar.finish_and_clear();
    eprintln!("exported {rows} rows of {} to {}", a.table, a.out);
    Ok(())
}
