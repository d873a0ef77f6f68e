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
pub mod browser;
pub mod catalog;
pub mod embed;
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
use crow_lake::arrow::array::RecordBatch;
use crow_lake::datafusion::common::ScalarValue;
use crow_lake::datafusion::prelude::{col, lit, DataFrame, Expr, SessionContext};
use crow_lake::Lake;
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
    /// A stored row or object that does not read as what it must be (a
    /// lease object, a stored day, a session's timeline).
    #[error("{0}")]
    Corrupt(String),
    /// Other writers kept changing what this one had to read first (a
    /// lease under contention): running again can succeed.
    #[error("{0}")]
    Conflict(String),
    /// This server could not renew the job's lease in time, so another may
    /// take the slot over: the run was abandoned.
    #[error("lost the lease of {job} (could not renew it in time); run abandoned")]
    LeaseLost {
        /// The job.
        job: String,
    },
    /// A backfill step failed; the steps before it are done. Its kind is
    /// its cause's (a storage outage stays retryable).
    #[error(
        "backfill stopped at {step} (the steps before it are done; run the same backfill again to finish): {source}"
    )]
    BackfillStopped {
        /// The job and window of the step.
        step: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// A broken invariant or a task that died: a bug in CROW.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is: what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The arguments, configuration or input are not usable: fix them.
    InvalidInput,
    /// A table, version or object does not exist.
    NotFound,
    /// A concurrent writer won a race: running again can succeed.
    Conflict,
    /// Storage or a service is unreachable, throttled or out of memory for
    /// now: running again later can succeed.
    Unavailable,
    /// The job's lease was lost; the scheduler retries the slot.
    LeaseLost,
    /// Stored data does not read.
    Corrupt,
    /// A bug or a broken invariant.
    Internal,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Lake(e) => lake_kind(e.kind()),
            Error::Query(e) => query_kind(e),
            Error::Invalid(_) | Error::Ai(_) | Error::Input(_) => ErrorKind::InvalidInput,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::BackfillStopped { source, .. } => source.kind(),
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether running the same thing again, unchanged, can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::LeaseLost
        )
    }
}

fn lake_kind(k: crow_lake::ErrorKind) -> ErrorKind {
    match k {
        crow_lake::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
        crow_lake::ErrorKind::NotFound => ErrorKind::NotFound,
        crow_lake::ErrorKind::Conflict => ErrorKind::Conflict,
        crow_lake::ErrorKind::Unavailable => ErrorKind::Unavailable,
        crow_lake::ErrorKind::Internal => ErrorKind::Internal,
    }
}

/// A query of a job is CROW's own SQL: a plan error is a bug, storage and
/// memory errors pass.
fn query_kind(e: &crow_lake::datafusion::error::DataFusionError) -> ErrorKind {
    use crow_lake::datafusion::error::DataFusionError as D;
    match e {
        D::ObjectStore(_) | D::IoError(_) | D::ResourcesExhausted(_) => ErrorKind::Unavailable,
        D::External(inner) => inner
            .downcast_ref::<crow_lake::Error>()
            .map_or(ErrorKind::Internal, |l| lake_kind(l.kind())),
        D::Context(_, inner) | D::Diagnostic(_, inner) => query_kind(inner),
        D::Shared(inner) => query_kind(inner),
        _ => ErrorKind::Internal,
    }
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

/// The values of a job's read SQL, bound by name (`$org`, `$since`, …) as
/// typed values: never spliced into the text, so nothing is quoted by hand
/// and an organization id cannot change what a query means.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, ScalarValue)>);

impl Params {
    /// Bind `name` to a string; its placeholder.
    pub(crate) fn text(&mut self, name: &str, value: &str) -> String {
        self.bind(name, ScalarValue::Utf8(Some(value.to_string())))
    }

    /// Bind `name` to a timestamp (microseconds, UTC, as CROW's timestamp
    /// columns); its placeholder.
    pub(crate) fn ts(&mut self, name: &str, t: DateTime<Utc>) -> String {
        let micros =
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()));
        self.bind(name, micros)
    }

    /// ` AND {column} = $org` for one organization, nothing for all of them.
    pub(crate) fn org(&mut self, column: &str, org: Option<&str>) -> String {
        org.map(|o| format!(" AND {column} = {}", self.text("org", o)))
            .unwrap_or_default()
    }

    fn bind(&mut self, name: &str, value: ScalarValue) -> String {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
        format!("${name}")
    }

    /// `sql` planned in `ctx` with these values bound.
    pub(crate) async fn sql(&self, ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
        let df = ctx.sql(sql).await?;
        if self.0.is_empty() {
            return Ok(df);
        }
        Ok(df.with_param_values(self.0.clone())?)
    }

    /// `sql` run read-only on `lake` with these values bound.
    pub(crate) async fn run(
        &self,
        lake: &Lake,
        sql: &str,
    ) -> Result<(crow_lake::arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
        Ok(lake.sql_with(sql, self.0.clone()).await?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crow_lake::datafusion::error::DataFusionError;

    fn unavailable() -> Error {
        let gone = crow_lake::object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        crow_lake::Error::from(gone).into()
    }

    #[test]
    fn a_backfill_step_keeps_its_causes_kind() {
        let e = unavailable();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let stopped = Error::BackfillStopped {
            step: "enrich [2026-02-02T00:00:00Z, 2026-02-03T00:00:00Z)".into(),
            source: Box::new(e),
        };
        assert_eq!(stopped.kind(), ErrorKind::Unavailable);
        assert!(stopped.is_retryable());
        assert!(stopped.to_string().starts_with(
            "backfill stopped at enrich [2026-02-02T00:00:00Z, 2026-02-03T00:00:00Z) (the steps before it are done"
        ));
        let bad = Error::BackfillStopped {
            step: "billing".into(),
            source: Box::new(Error::Invalid(
                "month `x` is not a month like 2026-03".into(),
            )),
        };
        assert_eq!(bad.kind(), ErrorKind::InvalidInput);
        assert!(!bad.is_retryable());
    }

    #[test]
    fn kinds_say_what_a_caller_can_do() {
        assert_eq!(
            Error::LeaseLost {
                job: "enrich".into()
            }
            .kind(),
            ErrorKind::LeaseLost
        );
        assert!(Error::LeaseLost {
            job: "enrich".into()
        }
        .is_retryable());
        assert_eq!(Error::Corrupt("lease".into()).kind(), ErrorKind::Corrupt);
        assert!(!Error::Internal("x".into()).is_retryable());
        // A query's storage error passes through DataFusion's wrapping.
        let lake = crow_lake::Error::from(crow_lake::object_store::Error::Generic {
            store: "S3",
            source: "503 Slow Down".into(),
        });
        let q: Error = DataFusionError::Context(
            "scan".into(),
            Box::new(DataFusionError::External(Box::new(lake))),
        )
        .into();
        assert_eq!(q.kind(), ErrorKind::Unavailable);
        let plan: Error = DataFusionError::Plan("no column x".into()).into();
        assert_eq!(plan.kind(), ErrorKind::Internal);
        let oom: Error = DataFusionError::ResourcesExhausted("pool".into()).into();
        assert!(oom.is_retryable());
    }

    /// Bound values are data, never SQL: an organization id with quotes and
    /// comment marks matches only itself, one name bound twice keeps the
    /// last value, and a timestamp compares with CROW's timestamp columns.
    #[tokio::test]
    async fn params_bind_values_never_text() {
        use crow_lake::arrow::array::{StringArray, TimestampMicrosecondArray};
        use crow_lake::arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("org_id", crow_lake::arrow::datatypes::DataType::Utf8, false),
            Field::new("at", crow_schemas::timestamp_type(), false),
        ]));
        let hostile = "o' OR '1'='1 --";
        let t = |s: i64| s * 1_000_000;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", hostile, hostile])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![t(10), t(20), t(30)]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        let count = |params: Params, sql: String| {
            let ctx = ctx.clone();
            async move {
                let rows = params
                    .sql(&ctx, &sql)
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                rows.iter().map(|b| b.num_rows()).sum::<usize>()
            }
        };
        let mut p = Params::default();
        let sql = format!(
            "SELECT * FROM t WHERE TRUE{}",
            p.org("org_id", Some(hostile))
        );
        assert_eq!(sql, "SELECT * FROM t WHERE TRUE AND org_id = $org");
        assert_eq!(count(p, sql).await, 2);
        let mut p = Params::default();
        let sql = format!("SELECT * FROM t WHERE TRUE{}", p.org("org_id", None));
        assert_eq!(count(p, sql).await, 3, "no organization: every row");
        let mut p = Params::default();
        p.text("org", "nobody");
        let sql = format!("SELECT * FROM t WHERE org_id = {}", p.text("org", "a"));
        assert_eq!(
            count(p, sql).await,
            1,
            "the last value bound to a name wins"
        );
        let mut p = Params::default();
        let since = DateTime::from_timestamp(20, 0).unwrap();
        let sql = format!("SELECT * FROM t WHERE at >= {}", p.ts("since", since));
        assert_eq!(count(p, sql).await, 2);
    }
}
