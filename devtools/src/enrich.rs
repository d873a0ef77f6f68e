//! `crow bench enrich`: enrichment throughput against the [fake
//! provider](crate::fake_provider), compared with the ideal
//! `concurrency / latency`, and a cached re-run of the same window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crow_ingest::generate::{self, GenerateOptions};
use crow_ingest::normalize::{normalize, NormalizeContext};
use crow_jobs::job::run as run_job;
use crow_jobs::{ai, enrich, sessionize, JobContext, Request};
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::fake_provider::FakeProvider;

/// `crow bench enrich`: about `sessions_wanted` sessions in a temp lake,
/// enriched through a local OpenAI-compatible server that answers after
/// `latency_ms`, `concurrency` calls at once; prints one Markdown row.
pub(crate) async fn run(
    cfg: Config,
    sessions_wanted: usize,
    latency_ms: u64,
    concurrency: usize,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg;
    cfg.lake.uri = tmp.path().join("lake").display().to_string();
    let lake = Lake::open(&cfg.lake).await?;
    lake.init().await?;
    land_activity(&lake, sessions_wanted).await?;
    // The bench's own settings: hour-long sessions, the default memory,
    // two retries per call, `concurrency` calls at once, no token budget.
    cfg.jobs.session_gap_minutes = 60;
    cfg.jobs.memory_limit_mb = crow_schemas::config::JobsConfig::default().memory_limit_mb;
    cfg.ai.max_retries = 2;
    cfg.ai.concurrency = concurrency;
    cfg.ai.daily_token_budget = 0;
    let s = run_job::<sessionize::Sessionize>(
        &JobContext::new(lake.clone(), cfg.clone()),
        &Request::incremental(),
    )
    .await?;

    let fake = FakeProvider::start(Duration::from_millis(latency_ms)).await?;
    let provider: Arc<dyn ai::Provider> = Arc::new(ai::openai::OpenAi::new(
        &fake.base_url(),
        "bench-model",
        None,
        Duration::from_secs(30),
    )?);
    let ctx = JobContext::new(lake.clone(), cfg.clone()).with_provider(provider);
    let started = Instant::now();
    let r = run_job::<enrich::Enrich>(&ctx, &Request::incremental()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let ideal = r.sessions as f64 * latency_ms as f64 / 1000.0 / concurrency as f64;
    let calls_first = fake.calls();
    // Again over the same window: every answer comes from the cache.
    let window = crow_jobs::Window {
        start: r.run.window_start.context("window")?,
        end: r.run.window_end.context("window")?,
    };
    let started = Instant::now();
    let again = run_job::<enrich::Enrich>(&ctx, &Request::new(None, Some(window))).await?;
    let cached_s = started.elapsed().as_secs_f64();
    let (max_in_flight, calls_again) = (fake.max_in_flight(), fake.calls() - calls_first);
    drop(fake);
    crate::output::line(format_args!("| sessions | latency ms | concurrency | max in flight | seconds | ideal seconds | efficiency | sessions/s | cached re-run s | provider calls on re-run |"))?;
    crate::output::line(format_args!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ))?;
    crate::output::line(format_args!(
        "| {} | {latency_ms} | {concurrency} | {max_in_flight} | {elapsed:.2} | {ideal:.2} | {:.0}% | {:.1} | {cached_s:.2} | {calls_again} |",
        r.sessions,
        100.0 * ideal / elapsed,
        r.sessions as f64 / elapsed,
    ))?;
    eprintln!(
        "sessionized {} sessions; enrich wrote {} interactions ({} failures); the re-run hit the cache {} times",
        s.sessions, r.interactions, r.failures, again.cache_hits
    );
    Ok(())
}

/// Land a week of generated activity of `visitors` visitors (about 1.1
/// sessions each) for a new organization "Bench Co".
async fn land_activity(lake: &Lake, visitors: usize) -> Result<()> {
    let org = crow_lake::orgs::create(lake, "Bench Co", None, None).await?;
    let ctx = NormalizeContext {
        org_id: &org.org.org_id,
        received_at: chrono::Utc::now(),
        ip_hash: None,
        strip_query_params: &[],
        ip_salt: "bench",
    };
    let today = chrono::Utc::now().date_naive();
    let events = generate::events(&GenerateOptions {
        visitors,
        first_day: today
            .checked_sub_days(chrono::Days::new(7))
            .context("date")?,
        days: 7,
        seed: 11,
        incidents: Vec::new(),
    });
    let rows = events
        .iter()
        .map(|e| normalize(e, None, &ctx))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.reason))?;
    let batch = crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows)?;
    lake.append(crow_schemas::RAW_WEB_EVENTS.name, vec![batch])
        .await?;
    Ok(())
}
