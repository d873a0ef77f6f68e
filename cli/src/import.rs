//! `crow import --org ORG FILE_OR_URL…`: historical events in Segment's
//! archive format (JSON lines, gzip'd or not) or Parquet with Segment's
//! column names, through the collector's normaliser, exactly once per file,
//! with a progress bar.

use anyhow::{Context, Result};
use crow_ingest::import::{import_bytes, ImportOptions, ImportReport};
use crow_lake::Lake;
use crow_schemas::config::Config;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output;
use crate::FormatArg;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The organization the events belong to (id or name).
    #[arg(long)]
    org: String,
    /// Files to import: local paths or http(s) URLs, one Segment event per
    /// line (JSON lines; gzip'd files are recognised by their content), or
    /// Parquet with Segment's column names (also recognised by content).
    #[arg(required = true)]
    files: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
}

const COLUMNS: &[&str] = &[
    "file",
    "lines",
    "imported",
    "failed",
    "already_imported",
    "seconds",
    "events_per_second",
    "sha256",
];

pub async fn run(lake: &Lake, cfg: &Config, a: ImportArgs) -> Result<()> {
    let org = crow_query_api::keys::resolve_org(lake, &a.org).await?;
    let now = chrono::Utc::now();
    // The collector's salt, so an IP hashes the same whichever way its
    // events came in.
    let wal_dir = crow_ingest::service::wal_dir(&cfg.ingest, lake);
    let salt = crow_ingest::service::ip_salt(&cfg.ingest, &wal_dir)
        .with_context(|| format!("reading the IP salt in {}", wal_dir.display()))?;
    let opts = ImportOptions {
        org_id: &org.org_id,
        strip_query_params: &cfg.ingest.strip_query_params,
        ip_salt: &salt,
        now,
        chunk_events: cfg.ingest.import_chunk_events,
    };
    let mut rows = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let data = read(file).await?;
        let bar = ProgressBar::new(data.len() as u64).with_style(
            ProgressStyle::with_template(
                "{spinner} importing {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(file.clone());
        let progress = |n: u64| bar.set_position(n);
        let r = import_bytes(lake, &opts, file, &data, &progress).await?;
        bar.finish_and_clear();
        rows.push(row(&r));
    }
    output::print_rows(a.format.format, COLUMNS, &rows)
}

fn row(r: &ImportReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "events_per_second".into(),
            serde_json::json!(
                ((r.lines - r.already_imported) as f64 / r.seconds.max(1e-9)).round()
            ),
        );
        o.insert(
            "seconds".into(),
            serde_json::json!((r.seconds * 100.0).round() / 100.0),
        );
    }
    v
}

/// A file's bytes: a local path, or an http(s) URL.
async fn read(file: &str) -> Result<Vec<u8>> {
    if file.starts_with("http://") || file.starts_with("https://") {
        let r = reqwest::get(file)
            .await
            .with_context(|| format!("fetching {file}"))?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "fetching {file}: HTTP {status}");
        return Ok(r
            .bytes()
            .await
            .with_context(|| format!("fetching {file}"))?
            .to_vec());
    }
    tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {file}"))
}
