//! `crow jobs`: run a job now, show runs, watermarks and failures.

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{NaiveDate, SubsecRound, Utc};
use clap::{Args, Subcommand, ValueEnum};
use crow_jobs::{ai, enrich, runs, sessionize, ProgressRef, Trigger, Window};
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
    /// Recent runs, each job's watermark, and recent job failures.
    Status {
        /// Show this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobName {
    /// Raw events of all channels → sessions.
    Sessionize,
    /// Sessions → AI-written interactions.
    Enrich,
    /// Sessions and interactions → patterns per day, week, month, year, all.
    Patterns,
    /// Usage per organization per day → usage_daily (priced).
    Billing,
}

impl JobName {
    /// The job's name in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Sessionize => sessionize::JOB,
            JobName::Enrich => enrich::JOB,
            JobName::Patterns => crow_jobs::patterns::JOB,
            JobName::Billing => crow_jobs::billing::JOB,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job.
    #[arg(value_enum)]
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
    lake.init().await.context("preparing the lake")?;
    let org = resolve_org(lake, args.org.as_deref()).await?;
    let window = match (args.from, args.to) {
        (Some(f), Some(t)) => Some(Window::days(f, t)?),
        _ => None,
    };
    let trigger = if window.is_some() {
        Trigger::Backfill
    } else {
        Trigger::Cli
    };
    let now = args.now.unwrap_or_else(Utc::now).trunc_subsecs(6);
    let (progress, pb) = progress(args.quiet);
    let report = match args.job {
        JobName::Sessionize => {
            let opts = sessionize::Options {
                org,
                window,
                gap: chrono::Duration::minutes(i64::from(cfg.jobs.session_gap_minutes)),
                now,
                trigger,
            };
            serde_json::to_value(sessionize::run(lake, &opts, &progress).await?)?
        }
        JobName::Enrich => {
            let provider = ai::from_config(&cfg.ai)?;
            let opts = enrich::Options {
                org,
                window,
                trigger,
                policy: ai::RetryPolicy::new(cfg.ai.max_retries),
                concurrency: cfg.ai.concurrency,
                daily_token_budget: cfg.ai.daily_token_budget,
            };
            serde_json::to_value(enrich::run(lake, provider, &opts, &progress).await?)?
        }
        JobName::Patterns => {
            let provider = ai::from_config(&cfg.ai)?;
            let opts = crow_jobs::patterns::Options {
                org,
                window,
                trigger,
                now,
                fdr: cfg.jobs.patterns.fdr,
            };
            serde_json::to_value(crow_jobs::patterns::run(lake, provider, &opts, &progress).await?)?
        }
        JobName::Billing => {
            let opts = crow_jobs::billing::Options {
                org,
                window,
                trigger,
                now,
                prices: crow_jobs::billing::Prices::from_config(&cfg.billing)?,
            };
            serde_json::to_value(crow_jobs::billing::run(lake, &opts, &progress).await?)?
        }
    };
    pb.finish_and_clear();
    // Nothing to do (no run was started): a table of blanks would say
    // nothing, so say why instead. JSON and CSV keep the report's shape.
    let idle = report["run_id"].as_str() == Some("") && report["window_start"].is_null();
    if idle && args.format.format == Format::Table {
        println!("{}", nothing_to_do(args.job));
        return Ok(());
    }
    print_report(args.format.format, &report)
}

/// What `jobs run JOB` says when the job found nothing to do.
fn nothing_to_do(job: JobName) -> String {
    let why = match job {
        JobName::Sessionize => "there is no raw activity to sessionize yet",
        JobName::Enrich => "no session closed since its last run",
        JobName::Patterns => "no complete day since its last run",
        JobName::Billing => "there is no new activity to meter",
    };
    format!(
        "nothing to do: {} ran no window because {why} (see `crow jobs status`; --from/--to recomputes chosen days)",
        job.as_str()
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

pub async fn status(lake: &Lake, cfg: &Config, limit: usize, format: Format) -> Result<()> {
    lake.init().await.context("preparing the lake")?;
    let recent = runs::recent(lake, limit).await?;
    let fmt_t =
        |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let run_rows: Vec<serde_json::Value> = recent
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
    let mut marks = Vec::new();
    for job in crow_jobs::backfill::CHAIN {
        let w = runs::watermark(lake, job).await?;
        let last = runs::last_succeeded(lake, job).await?;
        marks.push(serde_json::json!({
            "job": job,
            "watermark": fmt_t(w),
            "last_success": last.as_ref().and_then(|r| fmt_t(r.finished_at)),
        }));
    }
    let (_, batches) = lake
        .sql(
            "SELECT source, reason_code, count(*) AS failures, CAST(max(failed_at) AS VARCHAR) AS last_failed_at
             FROM failed_events WHERE source LIKE 'job:%'
             GROUP BY source, reason_code ORDER BY failures DESC",
        )
        .await?;
    let failures = output::json_rows(&batches)?;
    let now = Utc::now();
    let schedule: Vec<serde_json::Value> = crow_jobs::scheduler::status(lake, cfg, now)
        .await?
        .into_iter()
        .map(|j| {
            let lease = j.lease.as_ref();
            serde_json::json!({
                "job": j.job,
                "schedule": j.schedule,
                "next_run": fmt_t(j.next_run),
                "last_slot": lease.map(|l| l.slot.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                "attempt": lease.map(|l| l.attempt),
                "state": lease.map(|l| if l.state == "running" && !l.held(now) { "expired".to_string() } else { l.state.clone() }),
                "holder": lease.filter(|l| l.held(now)).map(|l| l.holder.clone()),
                "retry_at": lease.and_then(|l| fmt_t(l.retry_at)),
            })
        })
        .collect();
    if format == Format::Json {
        let obj = serde_json::json!({
            "runs": run_rows, "watermarks": marks, "failures": failures,
            "schedule": schedule, "scheduler_enabled": cfg.schedule.enabled,
        });
        return output::print_object(format, &[], &obj);
    }
    output::line("Runs:")?;
    output::print_rows(
        format,
        &[
            "job",
            "org_id",
            "trigger",
            "attempt",
            "status",
            "window_start",
            "window_end",
            "started_at",
            "seconds",
            "rows_in",
            "rows_out",
            "error",
        ],
        &run_rows,
    )?;
    output::line("\nWatermarks:")?;
    output::print_rows(format, &["job", "watermark", "last_success"], &marks)?;
    output::line(format!(
        "\nSchedule (crow serve; {}):",
        if cfg.schedule.enabled {
            "enabled"
        } else {
            "disabled by schedule.enabled"
        }
    ))?;
    output::print_rows(
        format,
        &[
            "job",
            "schedule",
            "next_run",
            "last_slot",
            "attempt",
            "state",
            "holder",
            "retry_at",
        ],
        &schedule,
    )?;
    output::line("\nJob failures (sessions retried on the next run):")?;
    output::print_rows(
        format,
        &["source", "reason_code", "failures", "last_failed_at"],
        &failures,
    )
}
