//! Backfills: recompute a range of days, cascading downstream.
//!
//! The job chain is sessionize → enrich → patterns → billing. A backfill of
//! a job recomputes the range with it and then (unless cascading is off)
//! with every job after it, each over explicit windows (trigger
//! `backfill`): sessionize and enrich day by day, patterns and billing once
//! over the whole range (patterns computes the days and every period above
//! them the range touches; billing meters whole days). Every step replaces
//! exactly its window, so a backfill run twice yields the same tables, and
//! a backfill that stopped half-way is finished by running it again.
//! Watermarks are left alone.

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use crow_lake::Lake;
use crow_schemas::config::Config;
use serde::Serialize;
use std::sync::Arc;

use crate::{
    ai, billing, enrich, patterns, sessionize, Error, NoProgress, ProgressRef, Result, Trigger,
    Window,
};

/// The jobs in dependency order.
pub const CHAIN: [&str; 4] = [sessionize::JOB, enrich::JOB, patterns::JOB, billing::JOB];

/// Run one job of the chain (or `optimize` / `checkpoint` through the
/// scheduler) with the configured settings; its report as JSON.
pub async fn run_job(
    lake: &Lake,
    cfg: &Config,
    job: &str,
    org: Option<String>,
    window: Option<Window>,
    trigger: Trigger,
    progress: &ProgressRef,
) -> Result<serde_json::Value> {
    let now = Utc::now().trunc_subsecs(6);
    match job {
        sessionize::JOB => {
            let opts = sessionize::Options {
                org,
                window,
                gap: Duration::minutes(i64::from(cfg.jobs.session_gap_minutes)),
                now,
                trigger,
                memory_limit_mb: cfg.jobs.memory_limit_mb,
            };
            json(&sessionize::run(lake, &opts, progress).await?)
        }
        enrich::JOB => {
            let provider = ai::from_config(&cfg.ai)?;
            let opts = enrich::Options {
                org,
                window,
                trigger,
                policy: ai::RetryPolicy::new(cfg.ai.max_retries),
                concurrency: cfg.ai.concurrency,
                daily_token_budget: cfg.ai.daily_token_budget,
            };
            json(&enrich::run(lake, provider, &opts, progress).await?)
        }
        patterns::JOB => {
            let provider = ai::from_config(&cfg.ai)?;
            let opts = patterns::Options {
                org,
                window,
                trigger,
                now,
                fdr: cfg.jobs.patterns.fdr,
                notify_min_significance: cfg.jobs.patterns.notify_min_significance,
            };
            json(&patterns::run(lake, provider, &opts, progress).await?)
        }
        billing::JOB => {
            let opts = billing::Options {
                org,
                window,
                trigger,
                now,
                prices: billing::Prices::from_config(&cfg.billing)?,
            };
            json(&billing::run(lake, &opts, progress).await?)
        }
        other => Err(Error::Invalid(format!(
            "unknown job `{other}` (one of {})",
            CHAIN.join(", ")
        ))),
    }
}

fn json<T: Serialize>(report: &T) -> Result<serde_json::Value> {
    serde_json::to_value(report).map_err(|e| Error::Invalid(format!("job report: {e}")))
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first job.
    pub job: String,
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

/// The steps a backfill runs: (job, window), in order.
pub fn plan(opts: &Options) -> Result<Vec<(&'static str, Window)>> {
    let whole = Window::days(opts.from, opts.to)?;
    let first = CHAIN.iter().position(|j| *j == opts.job).ok_or_else(|| {
        Error::Invalid(format!(
            "cannot backfill `{}`: one of {}",
            opts.job,
            CHAIN.join(", ")
        ))
    })?;
    let jobs: Vec<&'static str> = if opts.cascade {
        CHAIN[first..].to_vec()
    } else {
        vec![CHAIN[first]]
    };
    let mut steps = Vec::new();
    for job in jobs {
        if job == sessionize::JOB || job == enrich::JOB {
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

/// Run a backfill; `progress` counts steps.
pub async fn run(
    lake: &Lake,
    cfg: &Config,
    opts: &Options,
    progress: &ProgressRef,
) -> Result<Vec<Step>> {
    let steps = plan(opts)?;
    progress.phase("backfill", steps.len() as u64);
    let quiet: ProgressRef = Arc::new(NoProgress);
    let mut done = Vec::new();
    for (job, window) in steps {
        progress.message(&format!("{job} {window}"));
        let report = run_job(
            lake,
            cfg,
            job,
            opts.org.clone(),
            Some(window),
            Trigger::Backfill,
            &quiet,
        )
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "backfill stopped at {job} {window} (the steps before it are done; run the same backfill again to finish): {e}"
            ))
        })?;
        tracing::info!(job, %window, "backfill step done");
        done.push(Step {
            job: job.to_string(),
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
            job: "sessionize".into(),
            from: d("2026-03-10"),
            to: d("2026-03-13"),
            org: None,
            cascade: true,
        };
        let p = plan(&o).unwrap();
        let jobs: Vec<&str> = p.iter().map(|s| s.0).collect();
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
        o.job = "patterns".into();
        o.cascade = false;
        assert_eq!(plan(&o).unwrap().len(), 1);
        o.job = "optimize".into();
        assert!(plan(&o)
            .unwrap_err()
            .to_string()
            .contains("cannot backfill"));
        o.job = "billing".into();
        o.to = o.from;
        assert!(plan(&o).is_err());
    }
}
