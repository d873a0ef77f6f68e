//! The job framework: what a job is, what it runs with, and the one runner
//! that runs every job.
//!
//! A job implements [`Job`]: it is built for one run from a [`JobContext`]
//! (lake, configuration, clock, AI provider, progress, shutdown) and a
//! [`Request`] (organization, explicit window or none, trigger, attempt);
//! [`Job::plan`] finds its window (the incremental window from the
//! watermarks, or the explicit one) or finds nothing to do; [`Job::compute`]
//! replaces that window's output and returns the job's typed report.
//!
//! [`run`] is the only code that writes the run ledger ([`runs`]) for a
//! job: it scopes the attempt number, records the run `running` once the
//! window is known, `succeeded` with the report's rows or `failed` with the
//! error, and — for scheduled runs — records a failure that happened before
//! a run could start (an AI provider that cannot be set up). The scheduler,
//! backfills, `crow jobs run` and `crow demo` all go through it: typed
//! ([`run`]) or through a [`Registry`] of [`AnyJob`]s, which report as JSON.
//!
//! Adding a job: one module with a type implementing [`Job`], one
//! [`JobName`] variant; the compiler then points at its `[schedule]` key
//! and at [`builtin`]. A job that is not built in (a test's toy job) is
//! registered with [`register`] and runs under the scheduler
//! ([`Scheduler::with_jobs`](crate::scheduler::Scheduler::with_jobs)),
//! backfills ([`backfill::run_with`](crate::backfill::run_with)) and the
//! runner unchanged.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use crow_lake::Lake;
use crow_schemas::config::Config;
use serde::Serialize;
use tokio::sync::watch;

/// The attribute [`Job`] implementations carry (`#[async_trait]`).
pub use async_trait::async_trait;
pub use crow_schemas::JobName;

use crate::ai::{self, Provider};
use crate::maintenance::{self, Maintenance};
use crate::{runs, Error, NoProgress, ProgressRef, Result, Trigger, Window};

/// Where a job's AI provider comes from.
#[derive(Clone)]
enum ProviderSource {
    /// `ai.*` of the configuration, set up when a job asks for it.
    Config,
    /// This provider (benchmarks, tests).
    Given(Arc<dyn Provider>),
}

/// What a job runs with: shared by every run of a scheduler, a backfill or
/// a command.
#[derive(Clone)]
pub struct JobContext {
    /// The lake.
    pub lake: Lake,
    /// The configuration the job's options are built from.
    pub config: Arc<Config>,
    /// The run's clock (whole microseconds): which sessions are closed,
    /// which days complete.
    pub now: DateTime<Utc>,
    /// Progress of the run (a bar in the CLI).
    pub progress: ProgressRef,
    /// Turns true when the process shuts down.
    pub shutdown: watch::Receiver<bool>,
    provider: ProviderSource,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("lake", &self.lake.uri())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// A context over `lake` with `config`, the current time, no progress,
    /// no shutdown signal and the configured AI provider.
    pub fn new(lake: Lake, config: Config) -> JobContext {
        let (_, shutdown) = watch::channel(false);
        JobContext {
            lake,
            config: Arc::new(config),
            now: Utc::now().trunc_subsecs(6),
            progress: Arc::new(NoProgress),
            shutdown,
            provider: ProviderSource::Config,
        }
    }

    /// The same context with the clock at `now`.
    pub fn at(mut self, now: DateTime<Utc>) -> JobContext {
        self.now = now.trunc_subsecs(6);
        self
    }

    /// The same context reporting progress to `progress`.
    pub fn with_progress(mut self, progress: ProgressRef) -> JobContext {
        self.progress = progress;
        self
    }

    /// The same context with a shutdown signal.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> JobContext {
        self.shutdown = shutdown;
        self
    }

    /// The same context with this AI provider instead of the configured one.
    pub fn with_provider(mut self, provider: Arc<dyn Provider>) -> JobContext {
        self.provider = ProviderSource::Given(provider);
        self
    }

    /// The AI provider (set up from `ai.*` unless one was given).
    pub fn provider(&self) -> Result<Arc<dyn Provider>> {
        match &self.provider {
            ProviderSource::Config => ai::from_config(&self.config.ai),
            ProviderSource::Given(p) => Ok(p.clone()),
        }
    }
}

/// What one run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Only this organization (None: all).
    pub org: Option<String>,
    /// An explicit window, replaced without moving the watermark; None: the
    /// incremental window from the watermark.
    pub window: Option<Window>,
    /// How the run was started.
    pub trigger: Trigger,
    /// The attempt number recorded in the ledger (the scheduler's retries).
    pub attempt: i32,
    /// The scheduled slot the run is for (the scheduler's runs).
    pub slot: Option<DateTime<Utc>>,
}

impl Request {
    /// An incremental run (trigger `cli`) of every organization.
    pub fn incremental() -> Request {
        Request {
            org: None,
            window: None,
            trigger: Trigger::Cli,
            attempt: 1,
            slot: None,
        }
    }

    /// A run over `window`, or incremental; trigger `backfill` when a
    /// window is given, else `cli`.
    pub fn new(org: Option<String>, window: Option<Window>) -> Request {
        Request {
            org,
            trigger: if window.is_some() {
                Trigger::Backfill
            } else {
                Trigger::Cli
            },
            window,
            attempt: 1,
            slot: None,
        }
    }

    /// Attempt `attempt` of the scheduled slot `slot` (trigger `schedule`).
    pub fn scheduled(slot: DateTime<Utc>, attempt: i32) -> Request {
        Request {
            org: None,
            window: None,
            trigger: Trigger::Schedule,
            attempt,
            slot: Some(slot),
        }
    }
}

/// How a backfill splits a range of days for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One step per day.
    Days,
    /// One step over the whole range.
    Whole,
}

/// What [`Job::plan`] found.
#[derive(Debug)]
pub enum Planned<P, R> {
    /// Run over `window` (the ledger's window when the run starts).
    Run {
        /// The window.
        window: Window,
        /// What the job found while planning, for [`Job::compute`].
        plan: P,
    },
    /// Nothing to do: no run is recorded; this is the report.
    Nothing(R),
}

/// The run and the window a report is about: the first fields of the
/// jobs' reports, which flatten it (`#[serde(flatten)]`), so their JSON
/// starts with `run_id`, `window_start` and `window_end`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunWindow {
    /// The run id (empty when there was nothing to do).
    pub run_id: String,
    /// Window start.
    pub window_start: Option<DateTime<Utc>>,
    /// Window end.
    pub window_end: Option<DateTime<Utc>>,
}

impl RunWindow {
    /// A run over `window`, its id not yet given.
    pub fn of(window: Window) -> RunWindow {
        RunWindow {
            run_id: String::new(),
            window_start: Some(window.start),
            window_end: Some(window.end),
        }
    }
}

/// A batch job. See the [module documentation](self).
#[async_trait]
pub trait Job: Sized + Send + Sync + 'static {
    /// The job's name in the ledger, its lease and its schedule.
    const NAME: &'static str;
    /// How `crow backfill` splits a range for it; None: the job is not part
    /// of the backfill chain (nor of `crow jobs run`).
    const SPLIT: Option<Split> = None;
    /// Why an incremental run found nothing to do (`crow jobs run`).
    const IDLE: &'static str = "there was nothing new to process";
    /// What planning hands to computing.
    type Plan: Send;
    /// The job's report; as JSON, what `crow jobs run` prints.
    type Report: Serialize + Send + Sync;

    /// The job configured for one run (options from `ctx.config`; the AI
    /// provider, if it needs one). An error here fails the run before it
    /// starts.
    fn build(ctx: &JobContext, req: &Request) -> Result<Self>;

    /// The window to run over, or nothing to do. A job over windows of
    /// time builds this on [`Job::plan_window`].
    async fn plan(
        &self,
        ctx: &JobContext,
        req: &Request,
    ) -> Result<Planned<Self::Plan, Self::Report>>;

    /// Replace the planned window's output. Returns the window actually
    /// covered (a run may learn its end while running) and the report.
    async fn compute(
        &self,
        ctx: &JobContext,
        req: &Request,
        plan: Self::Plan,
        run_id: &str,
    ) -> Result<(Window, Self::Report)>;

    /// Rows in and out, recorded in the ledger.
    fn rows(report: &Self::Report) -> (u64, u64);

    /// After the run was recorded as succeeded (notifications).
    async fn finished(&self, _ctx: &JobContext, _report: &Self::Report) {}

    /// The planning the jobs over windows of time share: the run's
    /// `explicit` window (and its plan) when it has one, else the
    /// incremental window from the watermarks that `incremental` finds —
    /// awaited only then. When it finds none there is nothing to do: logged
    /// with [`Job::IDLE`] and reported as `idle`. A job's [`Job::plan`]
    /// keeps only what differs: how it finds its incremental window and
    /// what it hands to [`Job::compute`].
    fn plan_window<I>(
        explicit: Option<(Window, Self::Plan)>,
        incremental: I,
        idle: Self::Report,
    ) -> impl Future<Output = Result<Planned<Self::Plan, Self::Report>>> + Send
    where
        I: Future<Output = Result<Option<(Window, Self::Plan)>>> + Send,
    {
        async move {
            let found = match explicit {
                Some(e) => Some(e),
                None => incremental.await?,
            };
            Ok(match found {
                Some((window, plan)) => Planned::Run { window, plan },
                None => {
                    tracing::info!(job = Self::NAME, "nothing to do: {}", Self::IDLE);
                    Planned::Nothing(idle)
                }
            })
        }
    }
}

/// Run `J` once: the one runner (see the [module documentation](self)).
pub async fn run<J: Job>(ctx: &JobContext, req: &Request) -> Result<J::Report> {
    crate::with_attempt(req.attempt, async {
        let mut started = false;
        let result = run_recorded::<J>(ctx, req, &mut started).await;
        if let Err(e) = &result {
            if !started {
                record_early_failure(ctx, J::NAME, req, e).await;
            }
        }
        result
    })
    .await
}

async fn run_recorded<J: Job>(
    ctx: &JobContext,
    req: &Request,
    started: &mut bool,
) -> Result<J::Report> {
    let job = J::build(ctx, req)?;
    let (window, plan) = match job.plan(ctx, req).await? {
        Planned::Run { window, plan } => (window, plan),
        Planned::Nothing(report) => return Ok(report),
    };
    let mut run = runs::start(
        &ctx.lake,
        J::NAME,
        req.org.as_deref(),
        window,
        req.trigger,
        req.attempt,
    )
    .await?;
    *started = true;
    let result = job.compute(ctx, req, plan, run.id()).await;
    if let Ok((covered, _)) = &result {
        run.set_window(*covered);
    }
    let (_, report) = run.record(result, |(_, r)| J::rows(r)).await?;
    job.finished(ctx, &report).await;
    Ok(report)
}

/// A scheduled run that failed before it could start its run (an AI
/// provider that cannot be set up) is recorded as a failed run of its slot,
/// so operators see it in `job_runs`; lake and query errors are not (the
/// ledger is in the lake). Other triggers report the error to the caller.
async fn record_early_failure(ctx: &JobContext, job: &str, req: &Request, e: &Error) {
    if req.trigger != Trigger::Schedule || matches!(e, Error::Lake(_) | Error::Query(_)) {
        return;
    }
    let slot = req.slot.unwrap_or(ctx.now);
    let w = Window {
        start: slot,
        end: slot,
    };
    match runs::start(
        &ctx.lake,
        job,
        req.org.as_deref(),
        w,
        req.trigger,
        req.attempt,
    )
    .await
    {
        Ok(run) => {
            if let Err(le) = run.fail(&e.to_string()).await {
                tracing::error!(job, error = %le, "could not record the failed run");
            }
        }
        Err(le) => tracing::error!(job, error = %le, "could not record the failed run"),
    }
}

/// A job behind a trait object: what the scheduler and backfills hold.
#[async_trait]
pub trait AnyJob: Send + Sync {
    /// The job's name in the ledger, its lease and its schedule.
    fn name(&self) -> &'static str;
    /// How a backfill splits a range (None: not in the chain).
    fn split(&self) -> Option<Split>;
    /// Why an incremental run found nothing to do.
    fn idle(&self) -> &'static str;
    /// Run it once through [`run`]; its report as JSON.
    async fn run(&self, ctx: &JobContext, req: &Request) -> Result<serde_json::Value>;
}

struct Registered<J>(PhantomData<fn() -> J>);

#[async_trait]
impl<J: Job> AnyJob for Registered<J> {
    fn name(&self) -> &'static str {
        J::NAME
    }

    fn split(&self) -> Option<Split> {
        J::SPLIT
    }

    fn idle(&self) -> &'static str {
        J::IDLE
    }

    async fn run(&self, ctx: &JobContext, req: &Request) -> Result<serde_json::Value> {
        let report = crate::job::run::<J>(ctx, req).await?;
        serde_json::to_value(&report).map_err(|e| Error::Internal(format!("job report: {e}")))
    }
}

/// `J` as a trait object.
pub fn register<J: Job>() -> Arc<dyn AnyJob> {
    Arc::new(Registered::<J>(PhantomData))
}

/// The built-in job of `name`.
pub fn builtin(name: JobName) -> Arc<dyn AnyJob> {
    match name {
        JobName::Social => register::<crate::social::SocialJob>(),
        JobName::Sessionize => register::<crate::sessionize::Sessionize>(),
        JobName::Enrich => register::<crate::enrich::Enrich>(),
        JobName::Patterns => register::<crate::patterns::Patterns>(),
        JobName::Billing => register::<crate::billing::Billing>(),
        JobName::Optimize => register::<Maintenance<maintenance::Optimize>>(),
        JobName::Checkpoint => register::<Maintenance<maintenance::Checkpoint>>(),
        JobName::Vacuum => register::<Maintenance<maintenance::Vacuum>>(),
    }
}

/// Jobs by name, in chain order.
#[derive(Clone)]
pub struct Registry {
    jobs: Vec<Arc<dyn AnyJob>>,
}

impl Registry {
    /// Every built-in job, in [`JobName::ALL`]'s order.
    pub fn builtin() -> Registry {
        Registry {
            jobs: JobName::ALL.into_iter().map(builtin).collect(),
        }
    }

    /// The same registry with `job` added at the end (replacing a job of
    /// the same name).
    pub fn with(mut self, job: Arc<dyn AnyJob>) -> Registry {
        self.jobs.retain(|j| j.name() != job.name());
        self.jobs.push(job);
        self
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn AnyJob>> {
        self.jobs.iter().find(|j| j.name() == name)
    }

    /// Every job, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AnyJob>> {
        self.jobs.iter()
    }

    /// The backfill chain: the jobs with a [`Split`], in order.
    pub fn chain(&self) -> Vec<&Arc<dyn AnyJob>> {
        self.jobs.iter().filter(|j| j.split().is_some()).collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.jobs.iter().map(|j| j.name()))
            .finish()
    }
}

/// The jobs `crow backfill` and `crow jobs run` accept, in chain order.
pub fn chain() -> Vec<JobName> {
    JobName::ALL
        .into_iter()
        .filter(|n| builtin(*n).split().is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_jobs_carry_their_names() {
        for n in JobName::ALL {
            assert_eq!(builtin(n).name(), n.as_str());
        }
        assert_eq!(
            chain(),
            [
                JobName::Sessionize,
                JobName::Enrich,
                JobName::Patterns,
                JobName::Billing
            ]
        );
    }
}
