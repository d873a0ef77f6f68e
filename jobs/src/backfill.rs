//! Backfills: recompute a range of days, cascading downstream.
//!
//! The job chain is sessionize → enrich → patterns → billing: the jobs
//! with a [`Split`], in [`JobName`](crate::JobName) order. A backfill of
//! a job recomputes the range with it and then (unless cascading is off)
//! with every job after it, each over explicit windows (trigger
//! `backfill`): sessionize and enrich day by day, patterns and billing once
//! over the whole range (patterns computes the days and every period above
//! them the range touches; billing meters whole days). Every step replaces
//! exactly its window, so a backfill run twice yields the same tables, and
//! a backfill that stopped half-way is finished by running it again.
//! Watermarks are left alone.

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use serde::Serialize;
use std::sync::Arc;

use crate::job::{AnyJob, JobContext, Registry, Request, Split};
use crate::{Error, JobName, NoProgress, ProgressRef, Result, Trigger, Window};

/// What to backfill. `J` names the first job: a built-in [`JobName`]
/// (what `crow backfill` parses, and all [`run`] knows), or — over a
/// registry of one's own ([`run_with`]) — a registered job's name (`&str`).
#[derive(Debug, Clone)]
pub struct Options<J = JobName> {
    /// The first job.
    pub job: J,
    /// First day (inclusive).
    pub from: NaiveDate,
    /// Day after the last (exclusive).
    pub to: NaiveDate,
    /// Only this organization.
    pub org: Option<String>,
    /// Also run the jobs after `job`.
    pub cascade: bool,
}

/// One step of a backfill.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The job.
    pub job: String,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Window end.
    pub window_end: DateTime<Utc>,
    /// The run id in `job_runs`.
    pub run_id: String,
    /// The job's report.
    pub report: serde_json::Value,
}

/// The steps a backfill runs over `registry`'s chain: (job, window), in
/// order.
pub fn plan<'r, J: AsRef<str>>(
    registry: &'r Registry,
    opts: &Options<J>,
) -> Result<Vec<(&'r Arc<dyn AnyJob>, Window)>> {
    let first_job = opts.job.as_ref();
    let whole = Window::days(opts.from, opts.to)?;
    let chain = registry.chain();
    let first = chain
        .iter()
        .position(|j| j.name() == first_job)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "cannot backfill `{first_job}`: one of {}",
                chain
                    .iter()
                    .map(|j| j.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let jobs = if opts.cascade {
        &chain[first..]
    } else {
        &chain[first..=first]
    };
    let mut steps = Vec::new();
    for &job in jobs {
        if job.split() == Some(Split::Days) {
            let mut d = opts.from;
            while d < opts.to {
                let next = d + Duration::days(1);
                steps.push((job, Window::days(d, next)?));
                d = next;
            }
        } else {
            steps.push((job, whole));
        }
    }
    Ok(steps)
}

/// Run a backfill of the built-in jobs; `ctx.progress` counts steps.
pub async fn run(ctx: &JobContext, opts: &Options) -> Result<Vec<Step>> {
    run_with(&Registry::builtin(), ctx, opts).await
}

/// Run a backfill over `registry`'s chain; `ctx.progress` counts steps.
/// Every step runs through the job runner with trigger `backfill`, its own
/// clock and no progress of its own.
pub async fn run_with<J: AsRef<str>>(
    registry: &Registry,
    ctx: &JobContext,
    opts: &Options<J>,
) -> Result<Vec<Step>> {
    let steps = plan(registry, opts)?;
    let progress = ctx.progress.clone();
    progress.phase("backfill", steps.len() as u64);
    let quiet: ProgressRef = Arc::new(NoProgress);
    let mut done = Vec::new();
    for (job, window) in steps {
        let name = job.name();
        progress.message(&format!("{name} {window}"));
        let step_ctx = ctx
            .clone()
            .at(Utc::now().trunc_subsecs(6))
            .with_progress(quiet.clone());
        let req = Request {
            org: opts.org.clone(),
            window: Some(window),
            trigger: Trigger::Backfill,
            attempt: 1,
            slot: None,
        };
        let report = job
            .run(&step_ctx, &req)
            .await
            .map_err(|e| Error::BackfillStopped {
                step: format!("{name} {window}"),
                source: Box::new(e),
            })?;
        tracing::info!(job = name, %window, "backfill step done");
        done.push(Step {
            job: name.to_string(),
            window_start: window.start,
            window_end: window.end,
            run_id: report["run_id"].as_str().unwrap_or_default().to_string(),
            report,
        });
        progress.inc(1);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn plans_cascade_day_by_day() {
        let mut o = Options {
            job: JobName::Sessionize,
            from: d("2026-03-10"),
            to: d("2026-03-13"),
            org: None,
            cascade: true,
        };
        let registry = Registry::builtin();
        let p = plan(&registry, &o).unwrap();
        let jobs: Vec<&str> = p.iter().map(|s| s.0.name()).collect();
        assert_eq!(
            jobs,
            [
                "sessionize",
                "sessionize",
                "sessionize",
                "enrich",
                "enrich",
                "enrich",
                "patterns",
                "billing"
            ]
        );
        assert_eq!(
            p[1].1,
            Window::days(d("2026-03-11"), d("2026-03-12")).unwrap()
        );
        assert_eq!(
            p[7].1,
            Window::days(d("2026-03-10"), d("2026-03-13")).unwrap()
        );
        o.job = JobName::Patterns;
        o.cascade = false;
        assert_eq!(plan(&registry, &o).unwrap().len(), 1);
        o.job = JobName::Optimize;
        let e = plan(&registry, &o).map(|p| p.len()).unwrap_err();
        assert!(e.to_string().contains("cannot backfill"), "{e}");
        o.job = JobName::Billing;
        o.to = o.from;
        assert!(plan(&registry, &o).map(|p| p.len()).is_err());
    }
}
