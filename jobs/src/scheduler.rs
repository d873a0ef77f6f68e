//! The scheduler inside `crow serve`: cron schedules per job, one run at a
//! time per job across every server of a lake.
//!
//! Each tick (`schedule.tick_seconds`, with a little random jitter) the
//! scheduler looks at the jobs in chain order — social, sessionize, enrich,
//! patterns, billing, optimize, checkpoint — and runs those with a due
//! *slot* (the latest cron time not yet handled; missed slots collapse into
//! one, also those missed while the server was down: at start-up a job
//! whose lease shows an earlier slot runs its latest slot at once). To run a slot it takes the job's [`lease`](crate::lease) in the
//! lake:
//! - a lease held by another server (running, not expired) means wait;
//! - a lease whose state is for a later slot, or for this slot and
//!   `succeeded`, means the slot was run already (by any server): skip it;
//! - a `failed` attempt of this slot is retried after its backoff
//!   (`retry_base_seconds × 2^(attempt-1)`) up to `max_attempts`, by
//!   whichever server gets there first; an expired `running` lease (its
//!   server died) counts as a failed attempt.
//!
//! Taking, renewing (every third of `lease_seconds`) and finishing are
//! create-only writes of the lease's next state, so exactly one server runs
//! each slot and no two run the same job at once. A server that loses its
//! lease while running (it could not renew in time) abandons the run.
//! The ledger rows of an abandoned attempt, and of one whose server died,
//! are recorded `failed` by the server that gives it up or takes the
//! expired lease over.
//! Every run is in `job_runs` with trigger `schedule` and its attempt
//! number. Scheduled runs are incremental: each job starts from its
//! watermark.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use crow_lake::backoff::Backoff;
use crow_lake::Lake;
use crow_schemas::config::cron::Cron;
use crow_schemas::config::Config;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

use crate::job::{AnyJob, JobContext, Registry, Request};
use crate::lease::{LeaseState, Leases};
use crate::{runs, Result};

/// The scheduler of one server.
pub struct Scheduler {
    lake: Lake,
    cfg: Config,
    leases: Leases,
    holder: String,
    jobs: Vec<(Arc<dyn AnyJob>, Cron)>,
    shutdown: Option<watch::Receiver<bool>>,
}

enum Outcome {
    /// The slot is handled (run here or elsewhere, or given up).
    Done,
    /// Try again on a later tick.
    Wait,
}

/// This process's holder id: host, process id and a random suffix.
pub fn holder_id() -> String {
    format!(
        "{}/{}/{:06x}",
        crate::host(),
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl Scheduler {
    /// A scheduler over `lake` running the built-in jobs on
    /// `cfg.schedule`'s crons.
    pub fn new(lake: Lake, cfg: Config) -> Result<Scheduler> {
        let registry = Registry::builtin();
        let mut jobs = Vec::new();
        for (name, cron) in cfg
            .schedule
            .jobs()
            .map_err(|e| crate::Error::Invalid(e.to_string()))?
        {
            if let (Some(job), Some(cron)) = (registry.get(name.as_str()), cron) {
                jobs.push((job.clone(), cron));
            }
        }
        Scheduler::with_jobs(lake, cfg, jobs)
    }

    /// A scheduler over `lake` running `jobs` (in this order when several
    /// are due) on their crons, with `cfg.schedule`'s tick, leases and
    /// retries.
    pub fn with_jobs(
        lake: Lake,
        cfg: Config,
        jobs: Vec<(Arc<dyn AnyJob>, Cron)>,
    ) -> Result<Scheduler> {
        Ok(Scheduler {
            leases: Leases::open(&lake)?,
            lake,
            cfg,
            holder: holder_id(),
            jobs,
            shutdown: None,
        })
    }

    /// Run until `shutdown` turns true. A run in progress is finished first.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.shutdown = Some(shutdown.clone());
        let start = Utc::now();
        let names: Vec<&str> = self.jobs.iter().map(|j| j.0.name()).collect();
        tracing::info!(holder = %self.holder, jobs = ?names, "scheduler started");
        let mut next: HashMap<&'static str, Option<DateTime<Utc>>> = self
            .jobs
            .iter()
            .map(|(j, c)| (j.name(), c.next_after(start)))
            .collect();
        let mut pending: HashMap<&'static str, DateTime<Utc>> = HashMap::new();
        // Slots missed while no server ran the scheduler collapse into one
        // too: a job that ran on this lake before runs its latest slot
        // since then at once. (A job never run waits for its first slot.)
        for (job, cron) in &self.jobs {
            let job = job.name();
            match self.leases.current(job).await {
                Ok(Some(l)) => {
                    if let Some(slot) = latest_slot(cron, l.slot, start) {
                        tracing::info!(job, last = %l.slot, slot = %slot, "scheduler: slots missed while down, running the latest");
                        pending.insert(job, slot);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job, error = %e, "scheduler: could not read the lease; waiting for the next slot")
                }
            }
        }
        let tick = StdDuration::from_secs(self.cfg.schedule.tick_seconds.max(1));
        loop {
            for (job, cron) in &self.jobs {
                if *shutdown.borrow() {
                    break;
                }
                let name = job.name();
                let now = Utc::now();
                if let Some(Some(n)) = next.get(name).copied() {
                    if now >= n {
                        let slot = cron.last_in(n - Duration::seconds(1), now).unwrap_or(n);
                        if let Some(old) = pending.insert(name, slot) {
                            tracing::info!(job = name, missed = %old, slot = %slot, "scheduler: slot missed, running the latest");
                        }
                        next.insert(name, cron.next_after(now));
                    }
                }
                let Some(slot) = pending.get(name).copied() else {
                    continue;
                };
                match self.try_slot(job.as_ref(), slot).await {
                    Ok(Outcome::Done) => {
                        pending.remove(name);
                    }
                    Ok(Outcome::Wait) => {}
                    Err(e) => {
                        tracing::warn!(job = name, error = %e, "scheduler: could not check the lease; trying again")
                    }
                }
            }
            // Jitter so servers started together do not always race in the
            // same order.
            let jitter = StdDuration::from_millis(rand::random_range(0..=250));
            tokio::select! {
                _ = tokio::time::sleep(tick + jitter) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                tracing::info!("scheduler stopped");
                return;
            }
        }
    }

    /// Handle `slot` of `runner`'s job once: take the lease when the slot
    /// is due (a first attempt, a retry after its backoff, an expired
    /// lease), run the job holding it, and record how the attempt ended.
    async fn try_slot(&self, runner: &dyn AnyJob, slot: DateTime<Utc>) -> Result<Outcome> {
        let job = runner.name();
        let s = &self.cfg.schedule;
        let max = s.max_attempts.max(1) as i32;
        let now = Utc::now();
        let cur = self.leases.current(job).await?;
        let (seq, attempt) = match next_attempt(cur.as_ref(), job, slot, now, max) {
            Ok(next) => next,
            Err(outcome) => return Ok(outcome),
        };
        let ttl = Duration::seconds(s.lease_seconds.max(3) as i64);
        let state = LeaseState {
            seq,
            job: job.to_string(),
            holder: self.holder.clone(),
            state: "running".into(),
            slot,
            attempt,
            expires_at: now + ttl,
            written_at: now,
            retry_at: None,
            error: None,
        };
        if !self.leases.write(&state).await? {
            tracing::debug!(job, %slot, "scheduler: another server took the lease first");
            return Ok(Outcome::Wait);
        }
        if let Some(l) = cur.as_ref().filter(|l| l.state == "running") {
            // The lease expired under a run (held() was false): its server
            // died or gave the run up. Its ledger rows say so.
            let error = format!(
                "abandoned: the lease of {} expired during attempt {} (its server died or could not renew it)",
                l.holder, l.attempt
            );
            self.fail_abandoned(l, &error).await;
        }
        tracing::info!(job, slot = %slot.format("%Y-%m-%dT%H:%M:%SZ"), attempt, holder = %self.holder, "scheduler: run started");
        let started = std::time::Instant::now();
        let state = Arc::new(Mutex::new(state));
        let (result, lost) = self.run_holding(runner, &state, ttl).await;
        let mut st = state.lock().await;
        let now = Utc::now();
        st.seq += 1;
        st.written_at = now;
        st.expires_at = now;
        let outcome = match &result {
            Ok(summary) => {
                tracing::info!(job, slot = %slot.format("%Y-%m-%dT%H:%M:%SZ"), attempt, seconds = started.elapsed().as_secs_f64(), %summary, "scheduler: run succeeded");
                st.state = "succeeded".into();
                Outcome::Done
            }
            Err(e) => {
                let retry_at = retry_at(now, s.retry_base_seconds, attempt);
                tracing::error!(job, slot = %slot.format("%Y-%m-%dT%H:%M:%SZ"), attempt, error = %e, kind = ?e.kind(), retry_at = %retry_at, "scheduler: run failed");
                st.state = "failed".into();
                st.retry_at = Some(retry_at);
                st.error = Some(e.to_string().chars().take(2000).collect());
                if attempt >= max {
                    self.notify_given_up(job, slot, attempt).await;
                    Outcome::Done
                } else {
                    Outcome::Wait
                }
            }
        };
        if !lost {
            self.release(&st).await;
        }
        Ok(outcome)
    }

    /// Run the slot of the lease in `state`, renewing the lease while the
    /// job runs; the job's summary or error, and whether the lease was lost
    /// (the run is then abandoned, and its ledger rows say so).
    async fn run_holding(
        &self,
        runner: &dyn AnyJob,
        state: &Arc<Mutex<LeaseState>>,
        ttl: Duration,
    ) -> (Result<String>, bool) {
        let (slot, attempt) = {
            let st = state.lock().await;
            (st.slot, st.attempt)
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            self.leases.clone(),
            state.clone(),
            ttl,
            stop_rx,
            lost_tx,
        ));
        let result = tokio::select! {
            r = self.run_job(runner, slot, attempt) => r,
            _ = lost_rx.wait_for(|l| *l) => Err(crate::Error::LeaseLost { job: runner.name().to_string() }),
        };
        let _ = stop_tx.send(true);
        let _ = renewer.await;
        let lost = *lost_rx.borrow();
        if lost {
            if let Err(e) = &result {
                let mine = state.lock().await.clone();
                self.fail_abandoned(&mine, &e.to_string()).await;
            }
        }
        (result, lost)
    }

    /// Write the attempt's final state (best effort: a lease not released
    /// expires on its own).
    async fn release(&self, st: &LeaseState) {
        let job = st.job.as_str();
        match self.leases.write(st).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    job,
                    "scheduler: the lease changed hands before the run ended"
                )
            }
            Err(e) => {
                tracing::warn!(job, error = %e, "scheduler: could not release the lease; it expires on its own")
            }
        }
    }

    /// Record the runs of the attempt of `lease` that its end left
    /// `running` as failed (best effort: a warning if the ledger cannot be
    /// written).
    async fn fail_abandoned(&self, lease: &LeaseState, error: &str) {
        // holder is host/pid/random.
        let host = lease.holder.rsplitn(3, '/').nth(2).unwrap_or_default();
        match runs::fail_abandoned(
            &self.lake,
            &lease.job,
            host,
            lease.attempt,
            lease.slot,
            lease.expires_at,
            error,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(job = %lease.job, holder = %lease.holder, attempt = lease.attempt, runs = n, "scheduler: recorded an abandoned run as failed")
            }
            Err(e) => {
                tracing::warn!(job = %lease.job, error = %e, "scheduler: could not record an abandoned run")
            }
        }
    }

    /// Out of retries: tell the organizations' admins (the error itself
    /// stays with operators, in `job_runs`).
    async fn notify_given_up(&self, job: &str, slot: DateTime<Utc>, attempt: i32) {
        let notice = crow_lake::notify::Notice {
            kind: "job_failed",
            title: format!("The scheduled {job} job failed {attempt} times"),
            body: Some(format!(
                "Its run for {} was given up after {attempt} attempts; data it produces may be late until the next slot succeeds. Operators see the error with `crow jobs runs --job {job}`.",
                slot.format("%Y-%m-%d %H:%M UTC")
            )),
            link: None,
        };
        match crow_lake::notify::notify_role(&self.lake, None, "admin", &notice).await {
            Ok(n) => tracing::info!(
                job,
                users = n,
                "scheduler: gave up on the slot; admins notified"
            ),
            Err(e) => {
                tracing::warn!(job, error = %e, "could not write the job failure notification")
            }
        }
    }

    /// Run `job` once, incrementally, through the job runner (which records
    /// the run with its attempt); a short summary.
    async fn run_job(&self, job: &dyn AnyJob, slot: DateTime<Utc>, attempt: i32) -> Result<String> {
        let mut ctx = JobContext::new(self.lake.clone(), self.cfg.clone());
        if let Some(shutdown) = &self.shutdown {
            ctx = ctx.with_shutdown(shutdown.clone());
        }
        let report = job.run(&ctx, &Request::scheduled(slot, attempt)).await?;
        Ok(summary(&report))
    }
}

/// The lease sequence number and attempt with which to run `slot` of
/// `job`, given its lease `cur` at `now`; or why not now: the slot is
/// handled (run already, by any server, or given up after `max`
/// attempts), or it must wait (the lease is held, or a failed attempt's
/// backoff has not passed).
fn next_attempt(
    cur: Option<&LeaseState>,
    job: &str,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    max: i32,
) -> std::result::Result<(u64, i32), Outcome> {
    match cur {
        None => Ok((0, 1)),
        Some(l) if l.slot > slot => Err(Outcome::Done),
        Some(l) if l.held(now) => Err(Outcome::Wait),
        Some(l) if l.slot == slot => {
            if l.state == "succeeded" {
                return Err(Outcome::Done);
            }
            if l.attempt >= max {
                tracing::error!(job, %slot, attempts = l.attempt, "scheduler: giving up on this slot");
                return Err(Outcome::Done);
            }
            if l.state == "failed" && l.retry_at.is_some_and(|r| now < r) {
                return Err(Outcome::Wait);
            }
            Ok((l.seq + 1, l.attempt + 1))
        }
        Some(l) => Ok((l.seq + 1, 1)),
    }
}

/// The latest slot of `cron` in `(after, t]`, looking back from `t` in
/// widening windows (an hour, a day, 35 days, a year) so that a frequent
/// schedule does not walk every slot since `after`.
fn latest_slot(cron: &Cron, after: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    for back in [
        Duration::hours(1),
        Duration::days(1),
        Duration::days(35),
        Duration::days(366),
    ] {
        if let Some(slot) = cron.last_in(after.max(t - back), t) {
            return Some(slot);
        }
        if after >= t - back {
            return None;
        }
    }
    None
}

fn summary(report: &serde_json::Value) -> String {
    report
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| {
                    v.is_number() && !k.starts_with("window") && !k.ends_with("micros")
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

async fn renew(
    leases: Leases,
    state: Arc<Mutex<LeaseState>>,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
) {
    let every = (ttl / 3).to_std().unwrap_or(StdDuration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let mut st = state.lock().await;
        let now = Utc::now();
        let mut next = st.clone();
        next.seq += 1;
        next.written_at = now;
        next.expires_at = now + ttl;
        match leases.write(&next).await {
            Ok(true) => *st = next,
            Ok(false) => {
                tracing::error!(job = %st.job, "scheduler: lease lost to another server");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                // Try again at the next renewal; the lease is still ours
                // until it expires.
                tracing::warn!(job = %st.job, error = %e, "scheduler: could not renew the lease");
                if st.expires_at <= now {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

/// A job's schedule as `crow jobs status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSchedule {
    /// The job.
    pub job: String,
    /// Its cron expression (`off` when disabled).
    pub schedule: String,
    /// Its next slot after `now`.
    pub next_run: Option<DateTime<Utc>>,
    /// The lease's current state.
    pub lease: Option<LeaseState>,
}

/// Every schedulable job with its schedule, next slot and lease.
pub async fn status(lake: &Lake, cfg: &Config, now: DateTime<Utc>) -> Result<Vec<JobSchedule>> {
    let leases = Leases::open(lake)?;
    let jobs = cfg
        .schedule
        .jobs()
        .map_err(|e| crate::Error::Invalid(e.to_string()))?;
    let mut out = Vec::new();
    for (job, cron) in jobs {
        out.push(JobSchedule {
            job: job.as_str().to_string(),
            schedule: if cron.is_some() {
                cfg.schedule.expr(job).to_string()
            } else {
                "off".into()
            },
            next_run: cron
                .as_ref()
                .filter(|_| cfg.schedule.enabled)
                .and_then(|c| c.next_after(now)),
            lease: leases.current(job.as_str()).await?,
        });
    }
    Ok(out)
}

/// When a failed attempt of a slot is tried again: `retry_base_seconds ×
/// 2^(attempt-1)` after `now`, at most a day.
fn retry_at(now: DateTime<Utc>, base_seconds: u64, attempt: i32) -> DateTime<Utc> {
    let wait = Backoff::new(
        StdDuration::from_secs(base_seconds),
        StdDuration::from_secs(86_400),
    )
    .delay(u32::try_from(attempt - 1).unwrap_or(0));
    now + Duration::seconds(wait.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn latest_slot_looks_back_from_t() {
        let t = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 5).unwrap();
        let every2 = Cron::parse("*/2 * * * * *").unwrap();
        // Down for two days: the latest slot, found without walking them all.
        assert_eq!(
            latest_slot(&every2, t - Duration::days(2), t),
            Some(Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 4).unwrap())
        );
        // The last slot run is the latest: nothing missed.
        assert_eq!(latest_slot(&every2, t - Duration::seconds(1), t), None);
        // Weekly (Sundays 04:00), last run eight days ago: the Sunday since.
        let weekly = Cron::parse("0 4 * * 0").unwrap();
        assert_eq!(
            latest_slot(&weekly, t - Duration::days(8), t),
            Some(Utc.with_ymd_and_hms(2026, 3, 8, 4, 0, 0).unwrap())
        );
        assert_eq!(latest_slot(&weekly, t - Duration::days(2), t), None);
    }
}
