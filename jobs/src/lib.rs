//! CROW's batch jobs.
//!
//! Every job processes a *window* of time and replaces exactly that window's
//! output (Delta replace-where), so running it twice, or backfilling it,
//! yields the same tables. The run ledger ([`runs`], table `job_runs`)
//! records every execution and derives the watermarks that incremental runs
//! start from.
//!
//! - [`job`]: the job framework — [`JobName`], the [`Job`] trait, the
//!   [`JobContext`] jobs run with and the one runner that records every run.
//! - [`sessionize`]: raw events of all channels → `sessions`.
//! - [`enrich`]: sessions → AI-written `interactions`, through [`ai`].
//! - [`billing`]: usage per org per day → `usage_daily`, monthly invoices.
//! - [`scheduler`]: cron schedules inside `crow serve`, one run at a time
//!   per job across servers through a [`lease`] in the lake.
//! - [`maintenance`]: optimize, checkpoint and vacuum every table.
//! - [`backfill`]: recompute a range of days, cascading downstream.
//! - [`social`]: the social collector: sources, platform adapters, dedupe,
//!   one run = one session.
//! - [`catalog`]: the product catalog: import from CSV / JSON lines, crawl
//!   a site's sitemap for schema.org products.
#![warn(missing_docs)]

pub mod ai;
pub mod backfill;
pub mod billing;
pub mod catalog;
pub mod enrich;
pub mod html;
pub mod job;
pub mod lease;
pub mod maintenance;
pub mod patterns;
pub mod runs;
pub mod scheduler;
pub mod sessionize;
pub mod social;

pub use job::{AnyJob, Job, JobContext, JobName, Registry, Request};

use chrono::{DateTime, NaiveDate, Utc};
use crow_lake::datafusion::prelude::{col, lit, Expr};
use std::sync::Arc;

/// What can go wrong in a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake failed (storage, Delta, query).
    #[error(transparent)]
    Lake(#[from] crow_lake::Error),
    /// A DataFusion query failed.
    #[error("query failed: {0}")]
    Query(Box<crow_lake::datafusion::error::DataFusionError>),
    /// The arguments or configuration are not usable.
    #[error("{0}")]
    Invalid(String),
    /// An AI provider could not be set up.
    #[error("AI provider: {0}")]
    Ai(String),
    /// Input that could not be read (a file, a site).
    #[error("{0}")]
    Input(String),
}

impl From<crow_lake::datafusion::error::DataFusionError> for Error {
    fn from(e: crow_lake::datafusion::error::DataFusionError) -> Self {
        Error::Query(Box::new(e))
    }
}

impl From<crow_lake::arrow::error::ArrowError> for Error {
    fn from(e: crow_lake::arrow::error::ArrowError) -> Self {
        Error::Query(Box::new(e.into()))
    }
}

/// Result of a job operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A half-open time window `[start, end)`, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window of whole UTC days `[from, to)`.
    pub fn days(from: NaiveDate, to: NaiveDate) -> Result<Window> {
        if to <= from {
            return Err(Error::Invalid(format!(
                "--to {to} must be after --from {from} (from is inclusive, to exclusive)"
            )));
        }
        Ok(Window {
            start: from.and_time(chrono::NaiveTime::MIN).and_utc(),
            end: to.and_time(chrono::NaiveTime::MIN).and_utc(),
        })
    }

    /// Whether the window holds no time at all.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}, {})",
            self.start.format("%Y-%m-%dT%H:%M:%SZ"),
            self.end.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// How a run was started; recorded in `job_runs.trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `crow jobs run` without a window: incremental, moves the watermark.
    Cli,
    /// The scheduler inside `crow serve`: incremental.
    Schedule,
    /// An explicit window (`--from/--to`, `crow backfill`): replaces that
    /// window and leaves the watermark alone.
    Backfill,
}

impl Trigger {
    /// The ledger's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Schedule => "schedule",
            Trigger::Backfill => "backfill",
        }
    }
}

/// Progress of a long run, shown by the CLI as a progress bar.
pub trait Progress: Send + Sync {
    /// A new phase with `len` steps (0 when unknown).
    fn phase(&self, name: &str, len: u64);
    /// `n` more steps done.
    fn inc(&self, n: u64);
    /// What the current step is (shown beside the bar).
    fn message(&self, _msg: &str) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn inc(&self, _: u64) {}
}

/// Shared progress handle.
pub type ProgressRef = Arc<dyn Progress>;

tokio::task_local! {
    /// The attempt number of the scheduled run executing in this task.
    static ATTEMPT: i32;
}

/// Run `f` as attempt `attempt` of a run: every `job_runs` row started
/// inside records that attempt number (the scheduler's retries).
pub async fn with_attempt<F: std::future::Future>(attempt: i32, f: F) -> F::Output {
    ATTEMPT.scope(attempt, f).await
}

/// The attempt set by [`with_attempt`], else `default`.
pub(crate) fn attempt_or(default: i32) -> i32 {
    ATTEMPT.try_with(|a| *a).unwrap_or(default)
}

/// SQL literal for a timestamp, comparable with CROW's timestamp columns.
pub(crate) fn ts_lit(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// SQL string literal (single quotes doubled).
pub(crate) fn str_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The rows of a job's window in a table partitioned by `session_date`:
/// `session_date` from `first_day` to `last_day` (the partitions, so a
/// write touches only those) and `started_at` in `[window.start,
/// window.end)`, of one organization or all.
pub(crate) fn window_predicate(
    first_day: NaiveDate,
    last_day: NaiveDate,
    window: Window,
    org: Option<&str>,
) -> Expr {
    use crow_lake::predicate::{date, timestamp};
    let p = col("session_date")
        .between(date(first_day), date(last_day))
        .and(col("started_at").gt_eq(timestamp(window.start)))
        .and(col("started_at").lt(timestamp(window.end)));
    match org {
        Some(o) => p.and(col("org_id").eq(lit(o))),
        None => p,
    }
}

/// The host name recorded with runs.
pub(crate) fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
