//! The run ledger: one `job_runs` row per execution.
//!
//! A run is appended as `running` when it starts and updated (merge on
//! `run_id`) to `succeeded` or `failed` when it ends. A job's *watermark* is
//! the largest `window_end` of its succeeded incremental runs over all
//! organizations (`org_id = '*'`, trigger `cli` or `schedule`); explicit
//! windows (trigger `backfill`) replace their window without moving it.

use chrono::{DateTime, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::datafusion::functions_aggregate::expr_fn::max;
use crow_lake::datafusion::prelude::{col, lit, Expr};
use crow_lake::predicate::timestamp;
use crow_lake::Lake;
use crow_schemas::JOB_RUNS;
use serde::{Deserialize, Serialize};

use crate::{Result, Trigger, Window};

/// One row of `job_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RunRecord {
    pub org_id: String,
    pub run_id: String,
    pub job: String,
    #[serde(with = "ts_micros")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    pub window_end: DateTime<Utc>,
    pub status: String,
    pub trigger: String,
    pub attempt: i32,
    #[serde(with = "ts_micros")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "ts_micros::option", default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rows_in: Option<i64>,
    #[serde(default)]
    pub rows_out: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// A run in progress.
#[derive(Debug)]
pub struct Run {
    lake: Lake,
    /// Its ledger row.
    pub record: RunRecord,
}

/// Record the start of a run of `job` over `window` (`org` None: all
/// organizations).
pub async fn start(
    lake: &Lake,
    job: &str,
    org: Option<&str>,
    window: Window,
    trigger: Trigger,
    attempt: i32,
) -> Result<Run> {
    let record = RunRecord {
        org_id: org.unwrap_or("*").to_string(),
        run_id: crow_lake::ids::new_id("run"),
        job: job.to_string(),
        window_start: window.start,
        window_end: window.end,
        status: "running".into(),
        trigger: trigger.as_str().into(),
        attempt: crate::attempt_or(attempt),
        started_at: Utc::now(),
        finished_at: None,
        rows_in: None,
        rows_out: None,
        error: None,
        host: Some(crate::host()),
    };
    lake.append(
        JOB_RUNS.name,
        vec![rows_to_batch(&JOB_RUNS, std::slice::from_ref(&record))?],
    )
    .await?;
    Ok(Run {
        lake: lake.clone(),
        record,
    })
}

impl Run {
    /// The run id.
    pub fn id(&self) -> &str {
        &self.record.run_id
    }

    /// Change the window (incremental runs learn their end while running).
    pub fn set_window(&mut self, window: Window) {
        self.record.window_start = window.start;
        self.record.window_end = window.end;
    }

    /// Record success.
    pub async fn succeed(mut self, rows_in: u64, rows_out: u64) -> Result<RunRecord> {
        self.record.status = "succeeded".into();
        self.record.finished_at = Some(Utc::now());
        self.record.rows_in = Some(rows_in as i64);
        self.record.rows_out = Some(rows_out as i64);
        self.finish().await
    }

    /// Record the end of the run from its result: `succeeded` with the rows
    /// `rows` reports (in, out), or `failed` with the error, which is
    /// returned as it was.
    pub async fn record<T>(
        self,
        result: Result<T>,
        rows: impl FnOnce(&T) -> (u64, u64),
    ) -> Result<T> {
        match result {
            Ok(v) => {
                let (rows_in, rows_out) = rows(&v);
                self.succeed(rows_in, rows_out).await?;
                Ok(v)
            }
            Err(e) => {
                if let Err(le) = self.fail(&e.to_string()).await {
                    tracing::error!(error = %le, "could not record the failed run");
                }
                Err(e)
            }
        }
    }

    /// Record failure with its error.
    pub async fn fail(mut self, error: &str) -> Result<RunRecord> {
        self.record.status = "failed".into();
        self.record.finished_at = Some(Utc::now());
        self.record.error = Some(error.chars().take(4000).collect());
        self.finish().await
    }

    async fn finish(self) -> Result<RunRecord> {
        let batch = rows_to_batch(&JOB_RUNS, std::slice::from_ref(&self.record))?;
        self.lake
            .merge(JOB_RUNS.name, vec![batch], &["run_id"])
            .await?;
        Ok(self.record)
    }
}

/// Record as `failed`, with `error`, the runs of `job` that a scheduled
/// attempt left `running` when its lease ended without it: rows of trigger
/// `schedule` and attempt `attempt` started on `host` between `since` (the
/// attempt's slot) and `until` (when its lease expired: no other server can
/// have started a run before). Its server died, or gave the run up when it could not
/// renew the lease; the lease guarantees no such run is still under way.
/// Returns how many rows changed.
pub async fn fail_abandoned(
    lake: &Lake,
    job: &str,
    host: &str,
    attempt: i32,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    error: &str,
) -> Result<usize> {
    let cond = of_job(job)
        .and(col("status").eq(lit("running")))
        .and(col("trigger").eq(lit("schedule")))
        .and(col("host").eq(lit(host)))
        .and(col("attempt").eq(lit(attempt)))
        .and(col("started_at").between(timestamp(since), timestamp(until)));
    let now = Utc::now();
    let records: Vec<RunRecord> = query(lake, cond, 10_000)
        .await?
        .into_iter()
        .map(|mut r| {
            r.status = "failed".into();
            r.finished_at = Some(now);
            r.error = Some(error.chars().take(4000).collect());
            r
        })
        .collect();
    if !records.is_empty() {
        let batch = rows_to_batch(&JOB_RUNS, &records)?;
        lake.merge(JOB_RUNS.name, vec![batch], &["run_id"]).await?;
    }
    Ok(records.len())
}

/// Runs matching `condition` (an expression over `job_runs`' columns),
/// newest first.
pub async fn query(lake: &Lake, condition: Expr, limit: usize) -> Result<Vec<RunRecord>> {
    let batches = lake
        .dataframe(JOB_RUNS.name)
        .await?
        .filter(condition)?
        .sort(vec![col("started_at").sort(false, true)])?
        .limit(0, Some(limit))?
        .collect()
        .await?;
    Ok(batches_to_rows(&batches)?)
}

/// The rows of `job`.
fn of_job(job: &str) -> Expr {
    col("job").eq(lit(job))
}

/// The most recent runs of every job.
pub async fn recent(lake: &Lake, limit: usize) -> Result<Vec<RunRecord>> {
    query(lake, lit(true), limit).await
}

/// The latest `limit` runs of `job`, newest first.
pub async fn recent_for(lake: &Lake, job: &str, limit: usize) -> Result<Vec<RunRecord>> {
    query(lake, of_job(job), limit).await
}

/// The watermark of `job`: the end of its last succeeded incremental run
/// over all organizations.
pub async fn watermark(lake: &Lake, job: &str) -> Result<Option<DateTime<Utc>>> {
    let cond = of_job(job)
        .and(col("org_id").eq(lit("*")))
        .and(col("status").eq(lit("succeeded")))
        .and(col("trigger").in_list(vec![lit("cli"), lit("schedule")], false));
    let batches = lake
        .dataframe(JOB_RUNS.name)
        .await?
        .filter(cond)?
        .aggregate(vec![], vec![max(col("window_end")).alias("w")])?
        .collect()
        .await?;
    #[derive(Deserialize)]
    struct W {
        #[serde(with = "ts_micros::option", default)]
        w: Option<DateTime<Utc>>,
    }
    let rows: Vec<W> = batches_to_rows(&batches)?;
    Ok(rows.into_iter().next().and_then(|r| r.w))
}

/// Succeeded runs of `job` that finished after `since`.
pub async fn succeeded_since(
    lake: &Lake,
    job: &str,
    since: DateTime<Utc>,
) -> Result<Vec<RunRecord>> {
    let cond = of_job(job)
        .and(col("status").eq(lit("succeeded")))
        .and(col("finished_at").gt(timestamp(since)));
    query(lake, cond, 10_000).await
}

/// The last succeeded run of `job` (any trigger, any org).
pub async fn last_succeeded(lake: &Lake, job: &str) -> Result<Option<RunRecord>> {
    let cond = of_job(job).and(col("status").eq(lit("succeeded")));
    Ok(query(lake, cond, 1).await?.into_iter().next())
}
