//! The job framework is open: a job that is not built in, registered
//! through `crow_jobs::job`, runs under the runner (the ledger records it),
//! under backfills and under the scheduler (lease, ledger, attempt) without
//! a line of theirs knowing it.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use crow_jobs::job::{self, async_trait, Job, JobContext, Planned, Registry, Request, Split};
use crow_jobs::{runs, Result, Window};
use crow_schemas::config::cron::Cron;
use crow_schemas::config::Config;
use serde::Serialize;

use crate::support::Backend;

/// A toy job: it covers time from its watermark (or two days back) to the
/// run's clock, and writes nothing but its report.
struct Toy;

#[derive(Debug, Default, Serialize)]
struct ToyReport {
    run_id: String,
    window_start: Option<DateTime<Utc>>,
    window_end: Option<DateTime<Utc>>,
    slot: Option<DateTime<Utc>>,
}

#[async_trait]
impl Job for Toy {
    const NAME: &'static str = "toy";
    const SPLIT: Option<Split> = Some(Split::Days);
    type Plan = Window;
    type Report = ToyReport;

    fn build(_ctx: &JobContext, _req: &Request) -> Result<Self> {
        Ok(Toy)
    }

    async fn plan(&self, ctx: &JobContext, req: &Request) -> Result<Planned<Window, ToyReport>> {
        let window = match req.window {
            Some(w) => w,
            None => {
                let start = match runs::watermark(&ctx.lake, Self::NAME).await? {
                    Some(w) => w,
                    None => ctx.now - chrono::Duration::days(2),
                };
                Window {
                    start,
                    end: ctx.now,
                }
            }
        };
        if window.is_empty() {
            return Ok(Planned::Nothing(ToyReport::default()));
        }
        Ok(Planned::Run {
            window,
            plan: window,
        })
    }

    async fn compute(
        &self,
        _ctx: &JobContext,
        req: &Request,
        window: Window,
        run_id: &str,
    ) -> Result<(Window, ToyReport)> {
        let report = ToyReport {
            run_id: run_id.to_string(),
            window_start: Some(window.start),
            window_end: Some(window.end),
            slot: req.slot,
        };
        Ok((window, report))
    }

    fn rows(_: &ToyReport) -> (u64, u64) {
        (1, 1)
    }
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toy_job_runs_under_the_runner_backfill_and_scheduler() {
    let b = Backend::local();
    let lake = b.lake().await;
    lake.init().await.expect("init");
    let mut cfg = Config::default();
    // The scheduler's built-in jobs know the collector's WAL folder; keep it
    // out of the working directory.
    let wal = tempfile::tempdir().expect("wal folder");
    cfg.ingest.wal_dir = wal.path().display().to_string();
    cfg.schedule.tick_seconds = 1;
    cfg.schedule.lease_seconds = 6;
    let ctx = JobContext::new(lake.clone(), cfg.clone());
    let registry = Registry::builtin().with(job::register::<Toy>());
    let toy = registry.get("toy").expect("registered");

    // The runner: an incremental run is recorded, and moves the watermark,
    // so the next one at the same clock has nothing to do.
    let report = toy.run(&ctx, &Request::incremental()).await.expect("run");
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    assert!(run_id.starts_with("run"), "{report}");
    let ledger = runs::recent_for(&lake, "toy", 10).await.expect("ledger");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let r = &ledger[0];
    assert_eq!(
        (
            r.run_id.as_str(),
            r.status.as_str(),
            r.trigger.as_str(),
            r.attempt
        ),
        (run_id.as_str(), "succeeded", "cli", 1)
    );
    assert_eq!(r.window_end, ctx.now);
    assert_eq!(
        runs::watermark(&lake, "toy").await.expect("wm"),
        Some(ctx.now)
    );
    let idle = toy.run(&ctx, &Request::incremental()).await.expect("run");
    assert_eq!(idle["run_id"], "", "{idle}");
    assert_eq!(
        runs::recent_for(&lake, "toy", 10)
            .await
            .expect("ledger")
            .len(),
        1
    );

    // Backfills: the toy is in the chain (after the built-in jobs) and
    // split by day like sessionize.
    let opts = crow_jobs::backfill::Options {
        job: "toy",
        from: d("2026-03-10"),
        to: d("2026-03-13"),
        org: None,
        cascade: true,
    };
    let steps = crow_jobs::backfill::run_with(&registry, &ctx, &opts)
        .await
        .expect("backfill");
    let days: Vec<(String, String)> = steps
        .iter()
        .map(|s| (s.job.clone(), s.window_start.format("%Y-%m-%d").to_string()))
        .collect();
    assert_eq!(
        days,
        [
            ("toy".to_string(), "2026-03-10".to_string()),
            ("toy".to_string(), "2026-03-11".to_string()),
            ("toy".to_string(), "2026-03-12".to_string())
        ]
    );
    let backfilled = runs::recent_for(&lake, "toy", 10).await.expect("ledger");
    assert_eq!(
        backfilled
            .iter()
            .filter(|r| r.trigger == "backfill" && r.status == "succeeded")
            .count(),
        3,
        "{backfilled:?}"
    );
    // Built-in backfills do not know it.
    let builtin = Registry::builtin();
    let e = crow_jobs::backfill::run_with(&builtin, &ctx, &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot backfill `toy`"), "{e}");

    // The scheduler: every two seconds, under a lease, recorded with trigger
    // `schedule` and its attempt.
    let every2 = Cron::parse("*/2 * * * * *").expect("cron");
    let scheduler =
        crow_jobs::scheduler::Scheduler::with_jobs(lake.clone(), cfg, vec![(toy.clone(), every2)])
            .expect("scheduler");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(scheduler.run(shutdown));
    let mut scheduled = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        scheduled = runs::recent_for(&lake, "toy", 100)
            .await
            .expect("ledger")
            .into_iter()
            .filter(|r| r.trigger == "schedule" && r.status == "succeeded")
            .collect();
        if !scheduled.is_empty() {
            break;
        }
    }
    stop.send(true).expect("stop");
    task.await.expect("scheduler stopped");
    assert!(!scheduled.is_empty(), "no scheduled toy run");
    assert_eq!(scheduled[0].attempt, 1);
    let lease = crow_jobs::lease::Leases::open(&lake)
        .expect("leases")
        .current("toy")
        .await
        .expect("lease")
        .expect("a lease of the toy job");
    assert_eq!(lease.state, "succeeded", "{lease:?}");
}
