//! The social collector: each organization's sources (`social_sources`),
//! read by platform [`adapters`], deduplicated against what was captured
//! before (`social_seen`), landed in `raw_social_captures`.
//!
//! - **One run is one session.** A run reads some of an organization's
//!   sources and lands their new captures under one `run_id`; the
//!   sessionizer makes that run one social session, which enrichment turns
//!   into an interaction naming the products.
//! - **Exactly once.** A run's captures, its `social_seen` rows and its
//!   failures are each committed with the application transaction
//!   `crow-social:<run_id>`, so a retried commit (or a retried scheduled
//!   slot, whose run id is derived from the organization and the slot)
//!   never lands twice. Captures commit before `social_seen`: a crash
//!   between the two re-captures on the next run rather than losing.
//! - **Dedupe.** An item is identified by its [`canon::canonical_url`] and
//!   its [`canon::content_hash`]: a link already seen with the same content
//!   is skipped; with different content (an edited post) it is captured
//!   again as version n+1, linked to the first capture.
//! - **Nothing dropped silently.** A failing source does not stop the
//!   others: its error is its `last_error` in `social_sources` and a
//!   `failed_events` row; a malformed item is skipped with its reason, also
//!   a `failed_events` row, and the rest of the source lands.

pub mod adapters;
pub mod canon;
pub mod discover;
pub mod feed;
pub mod fetch;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::datafusion::prelude::{col, lit};
use crow_lake::Lake;
use crow_schemas::config::cron::Cron;
use crow_schemas::config::{Config, SocialConfig};
use crow_schemas::{FAILED_EVENTS, RAW_SOCIAL_CAPTURES, SOCIAL_SEEN, SOCIAL_SOURCES};
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, Planned, Request};
use crate::{runs, Error, Result, Trigger, Window};
use crow_schemas::rows::{FailedEventRow, FailureSource, SocialCaptureRow};
use crow_schemas::time::days_from_time;

/// The job's name in the run ledger and the scheduler.
pub const JOB: &str = crate::JobName::Social.as_str();
/// A new source's schedule unless one is given: hourly.
pub const DEFAULT_SCHEDULE: &str = "0 * * * *";

/// One row of `social_sources`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct Source {
    pub org_id: String,
    pub source_id: String,
    pub kind: String,
    pub target: String,
    pub enabled: bool,
    pub schedule: String,
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "ts_micros::option")]
    pub last_run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_run_id: Option<String>,
    #[serde(default)]
    pub last_status: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_captured: Option<i64>,
}

impl Source {
    /// As the CLI and the API show it (times in RFC 3339).
    pub fn to_json(&self) -> serde_json::Value {
        let t = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        serde_json::json!({
            "source_id": self.source_id,
            "kind": self.kind,
            "target": self.target,
            "enabled": self.enabled,
            "schedule": self.schedule,
            "created_at": t(&self.created_at),
            "updated_at": t(&self.updated_at),
            "last_run_at": self.last_run_at.as_ref().map(t),
            "last_run_id": self.last_run_id,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_captured": self.last_captured,
        })
    }
}

/// The columns of [`Source::to_json`], in the order tables show them.
pub const SOURCE_COLUMNS: &[&str] = &[
    "source_id",
    "kind",
    "target",
    "enabled",
    "schedule",
    "last_run_at",
    "last_status",
    "last_captured",
    "last_error",
    "last_run_id",
    "created_at",
    "updated_at",
];

/// Parse a source's schedule: a cron expression, or `off`.
pub fn parse_schedule(expr: &str) -> Result<Option<Cron>> {
    let e = expr.trim();
    if e.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Cron::parse(e)
        .map(Some)
        .map_err(|m| Error::Invalid(format!("schedule `{e}`: {m}")))
}

/// The organization's sources, oldest first.
pub async fn list(lake: &Lake, org_id: &str) -> Result<Vec<Source>> {
    let batches = lake
        .dataframe(SOCIAL_SOURCES.name)
        .await?
        .filter(col("org_id").eq(lit(org_id)))?
        .sort(vec![
            col("created_at").sort(true, false),
            col("source_id").sort(true, false),
        ])?
        .collect()
        .await?;
    Ok(batches_to_rows(&batches)?)
}

/// Add a source. The kind must be known, the target one its adapter
/// reads, the schedule a cron expression or `off`; the same kind and
/// target twice is refused.
pub async fn add(
    lake: &Lake,
    org_id: &str,
    kind: &str,
    target: &str,
    schedule: Option<&str>,
) -> Result<Source> {
    let kind = kind.trim().to_ascii_lowercase();
    let target = target.trim();
    let adapter = adapters::adapter(&kind).map_err(Error::Invalid)?;
    adapter.check(target).map_err(Error::Invalid)?;
    if target.len() > 2000 {
        return Err(Error::Invalid(
            "the target is longer than 2000 characters".into(),
        ));
    }
    let schedule = schedule.unwrap_or(DEFAULT_SCHEDULE).trim().to_string();
    parse_schedule(&schedule)?;
    if list(lake, org_id)
        .await?
        .iter()
        .any(|s| s.kind == kind && s.target == target)
    {
        return Err(Error::Invalid(format!(
            "the organization already has the {kind} source `{target}`"
        )));
    }
    let now = Utc::now();
    let src = Source {
        org_id: org_id.to_string(),
        source_id: crow_lake::ids::new_id("src"),
        kind,
        target: target.to_string(),
        enabled: true,
        schedule,
        created_at: now,
        updated_at: now,
        last_run_at: None,
        last_run_id: None,
        last_status: None,
        last_error: None,
        last_captured: None,
    };
    save(lake, std::slice::from_ref(&src)).await?;
    Ok(src)
}

/// Remove one of the organization's sources; whether it existed.
pub async fn remove(lake: &Lake, org_id: &str, source_id: &str) -> Result<bool> {
    let n = lake
        .delete_where(
            SOCIAL_SOURCES.name,
            &col("org_id")
                .eq(lit(org_id))
                .and(col("source_id").eq(lit(source_id))),
        )
        .await?;
    Ok(n > 0)
}

async fn save(lake: &Lake, sources: &[Source]) -> Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    let batch = rows_to_batch(&SOCIAL_SOURCES, sources)?;
    lake.merge(SOCIAL_SOURCES.name, vec![batch], &["org_id", "source_id"])
        .await?;
    Ok(())
}

/// How one source went in a run.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The source.
    pub source_id: String,
    /// Its kind.
    pub kind: String,
    /// Its target.
    pub target: String,
    /// 'ok', 'partial' or 'failed'.
    pub status: String,
    /// Why it failed or skipped items.
    pub error: Option<String>,
    /// Items read.
    pub fetched: usize,
    /// New captures (first versions and edits).
    pub captured: usize,
    /// Items skipped as malformed.
    pub skipped: usize,
}

/// One organization's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The organization.
    pub org_id: String,
    /// The run, which is the session's `source_ref`.
    pub run_id: String,
    /// Items read over all sources.
    pub fetched: usize,
    /// Captures landed.
    pub captured: usize,
    /// Of those, new versions of edited posts.
    pub versions: usize,
    /// Items already captured with the same content.
    pub unchanged: usize,
    /// Malformed items skipped.
    pub skipped: usize,
    /// Sources that failed.
    pub failed_sources: usize,
    /// Every source.
    pub sources: Vec<SourceReport>,
}

/// A `social_seen` row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenRow {
    org_id: String,
    canonical_url: String,
    content_hash: String,
    capture_id: String,
    first_capture_id: String,
    version: i32,
    run_id: String,
    #[serde(with = "ts_micros")]
    seen_at: DateTime<Utc>,
}

/// A `failed_events` row about one source of the run.
fn failed(
    run: &RunCtx<'_>,
    source: &Source,
    code: crow_schemas::rows::FailureCode,
    reason: &str,
    payload: &str,
) -> FailedEventRow {
    FailedEventRow::new(
        crow_lake::ids::new_id("fail"),
        FailureSource::Job(crate::JobName::Social),
        code,
        reason.chars().take(2000).collect::<String>(),
        run.now,
    )
    .with_org(run.org_id)
    .with_channel("social")
    .with_message_id(Some(source.source_id.clone()))
    .with_payload(payload)
}

/// What the organization captured before: canonical URL → (first capture,
/// latest version, content hashes seen).
type Seen = HashMap<String, (String, i32, HashSet<String>)>;

async fn seen_of(lake: &Lake, org_id: &str) -> Result<Seen> {
    let batches = lake
        .dataframe(SOCIAL_SEEN.name)
        .await?
        .filter(col("org_id").eq(lit(org_id)))?
        .collect()
        .await?;
    let rows: Vec<SeenRow> = batches_to_rows(&batches)?;
    let mut seen: Seen = HashMap::new();
    for r in rows {
        let e = seen
            .entry(r.canonical_url)
            .or_insert_with(|| (r.first_capture_id.clone(), 0, HashSet::new()));
        e.1 = e.1.max(r.version);
        e.2.insert(r.content_hash);
    }
    Ok(seen)
}

/// A run's rows to land.
#[derive(Default)]
struct Landing {
    captures: Vec<SocialCaptureRow>,
    seen: Vec<SeenRow>,
    failures: Vec<FailedEventRow>,
}

/// Who and when of a run.
struct RunCtx<'a> {
    org_id: &'a str,
    run_id: &'a str,
    now: DateTime<Utc>,
    /// The lake, for what `discover` sources read (the org's catalog).
    lake: &'a Lake,
    /// `discover` sources' search provider and AI settings.
    discovery: &'a discover::Discovery,
}

impl Landing {
    /// Keep `item` unless it was captured before with the same content;
    /// returns whether it is a new capture (a first version or an edit).
    fn admit(
        &mut self,
        run: &RunCtx<'_>,
        seen: &mut Seen,
        report: &mut RunReport,
        platform: &str,
        item: adapters::Item,
    ) -> bool {
        let (org_id, run_id, now) = (run.org_id, run.run_id, run.now);
        let canonical = canon::canonical_url(&item.url);
        let hash = canon::content_hash(&item.text);
        let (first, version) = match seen.get(&canonical) {
            Some((_, _, hashes)) if hashes.contains(&hash) => {
                report.unchanged += 1;
                return false;
            }
            Some((first, v, _)) => {
                report.versions += 1;
                (Some(first.clone()), v + 1)
            }
            None => (None, 1),
        };
        let key = format!("{org_id}|{run_id}|{canonical}|{hash}");
        let capture_id = format!("cap_{}", &crow_lake::ids::sha256_hex(key.as_bytes())[..26]);
        let first = first.unwrap_or_else(|| capture_id.clone());
        let e = seen
            .entry(canonical.clone())
            .or_insert_with(|| (first.clone(), 0, HashSet::new()));
        e.1 = e.1.max(version);
        e.2.insert(hash.clone());
        let mut metrics = item.metrics;
        if version > 1 {
            metrics.insert("version".into(), version.into());
            metrics.insert("first_capture_id".into(), first.clone().into());
        }
        self.captures.push(SocialCaptureRow {
            org_id: org_id.to_string(),
            capture_id: capture_id.clone(),
            run_id: run_id.to_string(),
            platform: platform.to_string(),
            url: item.url,
            canonical_url: Some(canonical.clone()),
            author: item.author,
            published_at: item.published_at.map(|t| t.timestamp_micros()),
            captured_at: now.timestamp_micros(),
            text: Some(item.text).filter(|t| !t.is_empty()),
            content_hash: hash.clone(),
            metrics: (!metrics.is_empty()).then(|| serde_json::Value::Object(metrics).to_string()),
            received_at: now.timestamp_micros(),
            event_date: days_from_time(now),
        });
        self.seen.push(SeenRow {
            org_id: org_id.to_string(),
            canonical_url: canonical,
            content_hash: hash,
            capture_id,
            first_capture_id: first,
            version,
            run_id: run_id.to_string(),
            seen_at: now,
        });
        true
    }
}

/// Read one source; its report.
async fn read_source(
    http: &fetch::Fetcher,
    cfg: &SocialConfig,
    run: &RunCtx<'_>,
    src: &Source,
    seen: &mut Seen,
    report: &mut RunReport,
    landing: &mut Landing,
) -> SourceReport {
    let mut sr = SourceReport {
        source_id: src.source_id.clone(),
        kind: src.kind.clone(),
        target: src.target.clone(),
        status: "ok".into(),
        error: None,
        fetched: 0,
        captured: 0,
        skipped: 0,
    };
    let collected = if src.kind == discover::KIND {
        let known = |c: &str| seen.contains_key(c);
        let (d, org) = (run.discovery, run.org_id);
        discover::collect(run.lake, http, cfg, d, org, &src.target, &known)
            .await
            .map(|c| (discover::PLATFORM, c))
    } else {
        match adapters::adapter(&src.kind) {
            Ok(a) => a
                .collect(http, cfg, &src.target)
                .await
                .map(|c| (a.platform(), c)),
            Err(e) => Err(e),
        }
    };
    let (platform, c) = match collected {
        Ok(pc) => pc,
        Err(e) => {
            tracing::warn!(org = run.org_id, source = %src.source_id, error = %e, "social: source failed");
            report.failed_sources += 1;
            sr.status = "failed".into();
            sr.error = Some(e.clone());
            let payload = serde_json::json!({"kind": src.kind, "target": src.target}).to_string();
            landing.failures.push(failed(
                run,
                src,
                crow_schemas::rows::FailureCode::SourceFailed,
                &e,
                &payload,
            ));
            return sr;
        }
    };
    sr.fetched = c.items.len();
    sr.skipped = c.skipped.len();
    for s in &c.skipped {
        landing.failures.push(failed(
            run,
            src,
            crow_schemas::rows::FailureCode::MalformedItem,
            &s.reason,
            &s.payload,
        ));
    }
    if let Some(first) = c.skipped.first() {
        sr.status = "partial".into();
        sr.error = Some(format!(
            "{} item(s) skipped: {}",
            c.skipped.len(),
            first.reason
        ));
    }
    for item in c.items {
        if landing.admit(run, seen, report, platform, item) {
            sr.captured += 1;
        }
    }
    sr
}

/// Read `sources` (of `org_id`) now as run `run_id`, land the new
/// captures, and record each source's outcome.
///
/// `discovery` runs `discover` sources' searches; `browser` renders `web`
/// pages whose content script builds.
pub async fn run_org(
    lake: &Lake,
    cfg: &SocialConfig,
    discovery: &discover::Discovery,
    browser: &crate::browser::Browser,
    org_id: &str,
    sources: Vec<Source>,
    run_id: &str,
) -> Result<RunReport> {
    let http = fetch::Fetcher::new(cfg)
        .map_err(Error::Input)?
        .with_browser(browser.clone());
    let mut seen = seen_of(lake, org_id).await?;
    let run = RunCtx {
        org_id,
        run_id,
        now: Utc::now(),
        lake,
        discovery,
    };
    let mut report = RunReport {
        org_id: org_id.to_string(),
        run_id: run_id.to_string(),
        fetched: 0,
        captured: 0,
        versions: 0,
        unchanged: 0,
        skipped: 0,
        failed_sources: 0,
        sources: Vec::new(),
    };
    let mut landing = Landing::default();
    let mut updated = Vec::new();
    for mut src in sources {
        let sr = read_source(&http, cfg, &run, &src, &mut seen, &mut report, &mut landing).await;
        report.fetched += sr.fetched;
        report.skipped += sr.skipped;
        report.captured += sr.captured;
        src.last_run_at = Some(run.now);
        src.last_run_id = Some(run_id.to_string());
        src.last_status = Some(sr.status.clone());
        src.last_error = sr.error.clone();
        src.last_captured = Some(sr.captured as i64);
        src.updated_at = run.now;
        updated.push(src);
        report.sources.push(sr);
    }
    land(lake, run_id, &landing).await?;
    save(lake, &updated).await?;
    Ok(report)
}

/// Commit a run's rows, each table once per run.
async fn land(lake: &Lake, run_id: &str, rows: &Landing) -> Result<()> {
    let app = format!("crow-social:{run_id}");
    let (captures, seen, failures) = (
        rows.captures.as_slice(),
        rows.seen.as_slice(),
        rows.failures.as_slice(),
    );
    if !captures.is_empty() {
        let b = rows_to_batch(&RAW_SOCIAL_CAPTURES, captures)?;
        lake.append_once(RAW_SOCIAL_CAPTURES.name, vec![b], &app, 1)
            .await?;
    }
    if !seen.is_empty() {
        let b = rows_to_batch(&SOCIAL_SEEN, seen)?;
        lake.append_once(SOCIAL_SEEN.name, vec![b], &app, 1).await?;
    }
    if !failures.is_empty() {
        let b = rows_to_batch(&FAILED_EVENTS, failures)?;
        lake.append_once(FAILED_EVENTS.name, vec![b], &app, 1)
            .await?;
    }
    Ok(())
}

/// `crow social run`: every enabled source of the organization, now, as
/// one run (one session), recorded in the run ledger.
pub async fn run_now(lake: &Lake, cfg: &Config, org_id: &str) -> Result<RunReport> {
    let now = Utc::now();
    let run = runs::start(
        lake,
        JOB,
        Some(org_id),
        Window {
            start: now,
            end: now,
        },
        Trigger::Cli,
        1,
    )
    .await?;
    let sources: Vec<Source> = list(lake, org_id)
        .await?
        .into_iter()
        .filter(|s| s.enabled)
        .collect();
    let run_id = crow_lake::ids::new_id("srun");
    let discovery = discover::Discovery::from_config(cfg);
    let browser = crate::browser::Browser::from_config(&cfg.browser);
    let result = run_org(
        lake,
        &cfg.social,
        &discovery,
        &browser,
        org_id,
        sources,
        &run_id,
    )
    .await;
    run.record(result, |r| (r.fetched as u64, r.captured as u64))
        .await
}

/// Whether `src` has a schedule slot in `(last run (or creation), slot]`.
fn due(src: &Source, slot: DateTime<Utc>) -> bool {
    let Ok(Some(cron)) = parse_schedule(&src.schedule) else {
        return false;
    };
    let since = src.last_run_at.unwrap_or(src.created_at);
    src.enabled && cron.last_in(since, slot).is_some()
}

/// What a scheduled `social` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduledReport {
    /// Organizations with a due source.
    pub organizations: u64,
    /// Due sources collected.
    pub sources: u64,
    /// Captures landed.
    pub captured: u64,
    /// Sources that failed (absent when nothing was due).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_sources: Option<u64>,
}

/// The scheduler's `social` job: for each active organization, its due
/// sources as one run. The run id derives from the organization and the
/// slot, so a retried slot lands nothing twice. A slot with no due source
/// is not recorded in the run ledger (like any run with nothing to do).
#[derive(Debug)]
pub struct SocialJob {
    cfg: SocialConfig,
    discovery: discover::Discovery,
    browser: crate::browser::Browser,
}

/// Organizations with their due sources.
type Due = Vec<(String, Vec<Source>)>;

#[async_trait::async_trait]
impl Job for SocialJob {
    const NAME: &'static str = JOB;
    const IDLE: &'static str = "no social source was due";
    type Plan = (DateTime<Utc>, Due);
    type Report = ScheduledReport;

    fn build(ctx: &JobContext, _req: &Request) -> Result<Self> {
        Ok(SocialJob {
            cfg: ctx.config.social.clone(),
            discovery: discover::Discovery::from_config(&ctx.config),
            browser: crate::browser::Browser::from_config(&ctx.config.browser),
        })
    }

    async fn plan(
        &self,
        ctx: &JobContext,
        req: &Request,
    ) -> Result<Planned<Self::Plan, ScheduledReport>> {
        let slot = req.slot.unwrap_or(ctx.now);
        let mut work = Vec::new();
        for org in crow_lake::orgs::list(&ctx.lake).await? {
            if org.status != "active" {
                continue;
            }
            let due: Vec<Source> = list(&ctx.lake, &org.org_id)
                .await?
                .into_iter()
                .filter(|s| due(s, slot))
                .collect();
            if !due.is_empty() {
                work.push((org.org_id, due));
            }
        }
        if work.is_empty() {
            return Ok(Planned::Nothing(ScheduledReport::default()));
        }
        Ok(Planned::Run {
            window: Window {
                start: slot,
                end: slot,
            },
            plan: (slot, work),
        })
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        (slot, work): Self::Plan,
        _run_id: &str,
    ) -> Result<(Window, ScheduledReport)> {
        let mut report = ScheduledReport {
            organizations: work.len() as u64,
            failed_sources: Some(0),
            ..ScheduledReport::default()
        };
        for (org_id, due) in work {
            let key = format!("{org_id}|{}", slot.timestamp_micros());
            let run_id = format!("srun_{}", &crow_lake::ids::sha256_hex(key.as_bytes())[..26]);
            report.sources += due.len() as u64;
            let r = run_org(
                &ctx.lake,
                &self.cfg,
                &self.discovery,
                &self.browser,
                &org_id,
                due,
                &run_id,
            )
            .await?;
            report.captured += r.captured as u64;
            report.failed_sources =
                Some(report.failed_sources.unwrap_or(0) + r.failed_sources as u64);
        }
        let window = Window {
            start: slot,
            end: slot,
        };
        Ok((window, report))
    }

    fn rows(r: &ScheduledReport) -> (u64, u64) {
        (r.sources, r.captured)
    }
}
