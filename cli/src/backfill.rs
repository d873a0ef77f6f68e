//! `crow backfill`: recompute a range of days, cascading downstream.

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::Args;
use crow_lake::Lake;
use crow_schemas::config::Config;

use crow_jobs::{JobContext, JobName};

use crate::jobs::{chain_job, progress, resolve_org};
use crate::FormatArg;

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The first job to recompute; the jobs after it (sessionize → enrich →
    /// patterns → billing) follow unless --no-cascade.
    #[arg(value_parser = chain_job())]
    pub job: JobName,
    /// First UTC day (inclusive), YYYY-MM-DD.
    #[arg(long)]
    pub from: NaiveDate,
    /// Day after the last (exclusive), YYYY-MM-DD.
    #[arg(long)]
    pub to: NaiveDate,
    /// Only this organization (id or name).
    #[arg(long)]
    pub org: Option<String>,
    /// Recompute only JOB, not the jobs downstream of it.
    #[arg(long)]
    pub no_cascade: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

pub async fn run(lake: &Lake, cfg: &Config, args: BackfillArgs) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    let org = resolve_org(lake, args.org.as_deref()).await?;
    let opts = crow_jobs::backfill::Options {
        job: args.job,
        from: args.from,
        to: args.to,
        org,
        cascade: !args.no_cascade,
    };
    let (progress, pb) = progress(args.quiet);
    let ctx = JobContext::new(lake.clone(), cfg.clone()).with_progress(progress);
    let result = crow_jobs::backfill::run(&ctx, &opts).await;
    pb.finish_and_clear();
    let steps = result?;
    let rows: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| {
            let r = &s.report;
            // The headline count of each job's report.
            let rows_out = ["sessions", "interactions", "patterns", "rows"]
                .iter()
                .find_map(|k| r.get(*k).and_then(|v| v.as_u64()));
            serde_json::json!({
                "job": s.job,
                "window_start": s.window_start.format("%Y-%m-%d").to_string(),
                "window_end": s.window_end.format("%Y-%m-%d").to_string(),
                "run_id": s.run_id,
                "rows_out": rows_out,
            })
        })
        .collect();
    crate::output::print_rows(
        args.format.format,
        &["job", "window_start", "window_end", "run_id", "rows_out"],
        &rows,
    )
}
