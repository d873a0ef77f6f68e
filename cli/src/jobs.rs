//! `crow jobs`: run a job now, show runs, watermarks and failures.

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{NaiveDate, SubsecRound, Utc};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use crow_jobs::job::{self, JobContext, JobName, Request};
use crow_jobs::{runs, ProgressRef, Window};
use crow_lake::Lake;
use crow_schemas::config::Config;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run one job now: incrementally from its watermark, or over an
    /// explicit window of UTC days [--from, --to).
    Run(RunArgs),
    /// One row per job: its schedule, next run and lease, its watermark
    /// (data time) and last success (wall-clock time), its latest run and
    /// the failures it recorded.
    Status(FormatArg),
    /// The latest runs, newest first (trigger, attempt, window, rows,
    /// error).
    Runs {
        /// Only this job's runs.
        #[arg(long, value_parser = chain_job())]
        job: Option<JobName>,
        /// Show this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        format: FormatArg,
    },
    /// What the jobs recorded in `failed_events`, by job and reason.
    Failures(FormatArg),
}

/// Parses a job of the chain (the jobs `crow jobs run` and `crow backfill`
/// run): crow-jobs' [`JobName`], each shown with what it does.
pub fn chain_job() -> impl TypedValueParser<Value = JobName> {
    PossibleValuesParser::new(
        crow_jobs::job::chain()
            .into_iter()
            .map(|j| PossibleValue::new(j.as_str()).help(j.about())),
    )
    .try_map(|s| s.parse::<JobName>())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job.
    #[arg(value_parser = chain_job())]
    pub job: JobName,
    /// First UTC day of the window (inclusive), YYYY-MM-DD.
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Day after the window (exclusive), YYYY-MM-DD.
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Only this organization (id or name).
    #[arg(long)]
    pub org: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The run's clock, RFC 3339 (default: the current time). Replays a
    /// run "as of" a moment: which sessions are closed, which days are
    /// complete, which periods are still in progress.
    #[arg(long)]
    pub now: Option<chrono::DateTime<Utc>>,
    #[command(flatten)]
    pub format: FormatArg,
}

/// A progress bar for job phases.
struct Bar(ProgressBar);

impl crow_jobs::Progress for Bar {
    fn phase(&self, name: &str, len: u64) {
        if len > 0 {
            self.0.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        } else {
            self.0.set_style(
                ProgressStyle::with_template("{spinner} {msg} {pos}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
        }
        self.0.set_length(len);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }

    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn message(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
}

pub fn progress(quiet: bool) -> (ProgressRef, ProgressBar) {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    pb.enable_steady_tick(std::time::Duration::from_millis(150));
    (Arc::new(Bar(pb.clone())), pb)
}

pub async fn resolve_org(lake: &Lake, org: Option<&str>) -> Result<Option<String>> {
    Ok(match org {
        Some(o) => Some(crow_query_api::keys::resolve_org(lake, o).await?.org_id),
        None => None,
    })
}

pub async fn run(lake: &Lake, cfg: &Config, args: RunArgs) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    let org = resolve_org(lake, args.org.as_deref()).await?;
    let window = match (args.from, args.to) {
        (Some(f), Some(t)) => Some(Window::days(f, t)?),
        _ => None,
    };
    let now = args.now.unwrap_or_else(Utc::now).trunc_subsecs(6);
    let (progress, pb) = progress(args.quiet);
    let ctx = JobContext::new(lake.clone(), cfg.clone())
        .at(now)
        .with_progress(progress);
    let report = job::builtin(args.job)
        .run(&ctx, &Request::new(org, window))
        .await?;
    pb.finish_and_clear();
    // Nothing to do (no run was started): a table of blanks would say
    // nothing, so say why instead. JSON and CSV keep the report's shape.
    let idle = report["run_id"].as_str() == Some("") && report["window_start"].is_null();
    if idle && args.format.format == Format::Table {
        crate::output::line(format_args!("{}", nothing_to_do(args.job)))?;
        return Ok(());
    }
    print_report(args.format.format, &report)?;
    if args.job == JobName::Patterns
        && args.format.format == Format::Table
        && report["patterns"].as_u64() == Some(0)
    {
        output::line(format!(
            "no patterns: nothing in {} stood out. A finding compares a day with the {} days before it (a week or month with the same days of the periods before) and needs enough sessions in its segment and a large, significant change; a lake with less history or little traffic gives none (see README, `patterns`).",
            match (report["window_start"].as_str(), report["window_end"].as_str()) {
                (Some(a), Some(b)) => {
                    format!("[{}, {})", a.get(..10).unwrap_or(a), b.get(..10).unwrap_or(b))
                }
                _ => "the window".to_string(),
            },
            crow_jobs::patterns::BASELINE_DAYS
        ))?;
    }
    Ok(())
}

/// What `jobs run JOB` says when the job found nothing to do.
fn nothing_to_do(job: JobName) -> String {
    format!(
        "nothing to do: {job} ran no window because {} (see `crow jobs status`; --from/--to recomputes chosen days)",
        job::builtin(job).idle()
    )
}

/// A report as key/value rows (table/csv) or one JSON object.
pub fn print_report(format: Format, report: &serde_json::Value) -> Result<()> {
    if format == Format::Json {
        return output::print_object(format, &[], report);
    }
    let rows: Vec<serde_json::Value> = report
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    serde_json::json!({"field": k, "value": v})
                })
                .collect()
        })
        .unwrap_or_default();
    output::print_rows(format, &["field", "value"], &rows)
}

fn fmt_t(t: Option<chrono::DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Columns of `crow jobs status`, in the order printed.
const STATUS_COLUMNS: &[&str] = &[
    "job",
    "schedule",
    "next_run",
    "last_slot",
    "watermark",
    "last_success",
    "last_run",
    "last_status",
    "state",
    "attempt",
    "holder",
    "retry_at",
    "failures",
];

/// `crow jobs status`: one row per job — its schedule and lease, its
/// watermark (data time) and last success (wall-clock time), its latest
/// run and the failures it has recorded.
pub async fn status(lake: &Lake, cfg: &Config, format: Format) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    let now = Utc::now();
    let (_, batches) = lake
        .sql(
            "SELECT substr(source, 5) AS job, count(*) AS failures
             FROM failed_events WHERE source LIKE 'job:%' GROUP BY source",
        )
        .await?;
    let failures = output::json_rows(&batches)?;
    let mut rows = Vec::new();
    for j in crow_jobs::scheduler::status(lake, cfg, now).await? {
        let lease = j.lease.as_ref();
        let chained = job::chain().iter().any(|c| c.as_str() == j.job);
        let (watermark, last_success) = if chained {
            let w = runs::watermark(lake, &j.job).await?;
            let last = runs::last_succeeded(lake, &j.job).await?;
            (fmt_t(w), last.and_then(|r| fmt_t(r.finished_at)))
        } else {
            (None, None)
        };
        let latest = runs::recent_for(lake, &j.job, 1).await?.into_iter().next();
        let failed = failures
            .iter()
            .find(|f| f["job"] == j.job.as_str())
            .map(|f| f["failures"].clone())
            .unwrap_or(serde_json::json!(0));
        rows.push(serde_json::json!({
            "job": j.job,
            "schedule": j.schedule,
            "next_run": fmt_t(j.next_run),
            "last_slot": lease.map(|l| l.slot.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "watermark": watermark,
            "last_success": last_success,
            "last_run": latest.as_ref().and_then(|r| fmt_t(Some(r.started_at))),
            "last_status": latest.as_ref().map(|r| r.status.clone()),
            "state": lease.map(|l| if l.state == "running" && !l.held(now) { "expired".to_string() } else { l.state.clone() }),
            "attempt": lease.map(|l| l.attempt),
            "holder": lease.filter(|l| l.held(now)).map(|l| l.holder.clone()),
            "retry_at": lease.and_then(|l| fmt_t(l.retry_at)),
            "failures": failed,
        }));
    }
    output::print_rows(format, STATUS_COLUMNS, &rows)
}

/// `crow jobs runs`: the latest runs, newest first.
pub async fn list_runs(
    lake: &Lake,
    job: Option<JobName>,
    limit: usize,
    format: Format,
) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    let recent = match job {
        Some(j) => runs::recent_for(lake, j.as_str(), limit).await?,
        None => runs::recent(lake, limit).await?,
    };
    let rows: Vec<serde_json::Value> = recent
        .iter()
        .map(|r| {
            serde_json::json!({
                "job": r.job,
                "org_id": r.org_id,
                "trigger": r.trigger,
                "attempt": r.attempt,
                "host": r.host,
                "status": r.status,
                "window_start": fmt_t(Some(r.window_start)),
                "window_end": fmt_t(Some(r.window_end)),
                "started_at": fmt_t(Some(r.started_at)),
                "seconds": r.finished_at.map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
                "rows_in": r.rows_in,
                "rows_out": r.rows_out,
                "error": r.error,
            })
        })
        .collect();
    output::print_rows(
        format,
        &[
            "job",
            "org_id",
            "trigger",
            "attempt",
            "host",
            "status",
            "window_start",
            "window_end",
            "started_at",
            "seconds",
            "rows_in",
            "rows_out",
            "error",
        ],
        &rows,
    )
}

/// `crow jobs failures`: what the jobs recorded in `failed_events`, by job
/// and reason (sessions whose enrichment failed are retried on the next
/// run; notes are kept beside written rows).
pub async fn failures(lake: &Lake, format: Format) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    let (_, batches) = lake
        .sql(
            "SELECT substr(source, 5) AS job, reason_code, count(*) AS failures,
                    CAST(max(failed_at) AS VARCHAR) AS last_failed_at
             FROM failed_events WHERE source LIKE 'job:%'
             GROUP BY source, reason_code ORDER BY failures DESC, job, reason_code",
        )
        .await?;
    let rows = output::json_rows(&batches)?;
    output::print_rows(
        format,
        &["job", "reason_code", "failures", "last_failed_at"],
        &rows,
    )
}
