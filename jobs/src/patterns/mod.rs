//! Patterns: what stands out and what changed, per day, week, month, year
//! and all time.
//!
//! **Days.** For each organization and day, metrics are computed from the
//! day's sessions (their timelines) and compared with a trailing baseline of
//! the previous 28 days:
//! - *volume*: sessions (overall and per segment), visitors, events by type;
//! - *funnel*: step-to-step conversion (product view → cart → checkout →
//!   payment → order, and view → order) per segment;
//! - *transition*: how often one event follows another, and loops (the same
//!   event three or more times in a row);
//! - *errors*: sessions hitting failure events per segment, and failure
//!   events by type;
//! - *product_trend*: product views rising or falling, products viewed but
//!   not bought (view → order conversion per product), products bought
//!   together more often than chance.
//!
//! Segments are device type, traffic source and new vs returning visitors.
//! New vs returning visitors are compared only against baselines that start
//! [`WARM_UP_DAYS`] or more after the organization's first data (earlier,
//! visitors whose first visits predate the data look new).
//! Counts are tested against the baseline's mean and spread (Poisson floor;
//! small counts with the exact Poisson tail); rates with a two-proportion
//! test against the baseline (with few hits or few misses, the exact
//! conditional binomial test of the rarer outcome). A product's views are a
//! share of the day's sessions, so more traffic is not a product trend.
//!
//! **Noise under control.** The many tests of one period (every metric in
//! every segment) are one family, corrected with Benjamini–Hochberg at the
//! false discovery rate `jobs.patterns.fdr` (default [`DEFAULT_FDR`], 1%):
//! a finding's p-value must be at most `fdr · rank / tests`, its |z| at
//! least [`Z_MIN`], and it needs enough sessions (20 on the day, 60 in the
//! baseline, or a count of 10) and a change that matters (30 % or more, and
//! 3 points for a rate). On the evaluation harness's quiet histories this
//! gives about half a finding per month (BENCHMARKS.md).
//!
//! **Weekdays.** A day is compared with its baseline adjusted to its
//! weekday: counts through weekday factors, rates through weekday rates,
//! both estimated from the baseline and shrunk toward no weekday effect as
//! far as noise explains the weekdays' differences (positive-part
//! James–Stein; 3 or more of each weekday needed). A span of days (a
//! roll-up's confirmation) is compared with the same weekday mix. Weeks
//! and months in progress compare the same elapsed weekdays (below).
//!
//! **Baselines without incidents.** A baseline day that had a finding for
//! the same metric and segment, or that is far from its weekday's typical
//! value (4 standard errors and the minimum effect), is left out of the
//! baseline (the evidence says how many): an incident last week must not
//! make this week's look normal, nor its end look like a recovery.
//!
//! **Ranking.** A period's findings are ordered by what they cost or added
//! at least (the 95% bound of their impact nearest zero, an order worth 10
//! sessions, a product view 0.3, an event 0.1), then by |z|; the evidence
//! carries the `impact` with its interval and the `multiple_testing`
//! correction.
//!
//! **Stories** (the `stories` module) group the day findings that share a cause
//! into one account with its start, end or "ongoing", the segments affected
//! and not, and its estimated impact; the `stories` table holds every
//! organization's stories, rewritten whole on every run.
//!
//! **Complete days only.** The job's *horizon* is the UTC midnight of the
//! run's clock or of the enrich watermark, whichever is earlier: every day
//! before it is complete (its sessions are closed and enriched), the day
//! at the horizon is still filling. A day still filling is never computed
//! and never part of any period's figure.
//!
//! **Days are counted once** (the `store` module). A day's figures are
//! counted from its sessions into `daily_metrics`, stamped with the
//! fingerprint of the day's `sessions` and `interactions` files; later runs
//! read them back and count again only a day whose files changed. So a
//! daily run reads one day of sessions, whatever the history.
//!
//! **Roll-ups.** A week is tested the same way from its complete days
//! pooled, against the same days of the four weeks before (a week in
//! progress on Monday–Wednesday against the previous Mondays–Wednesdays); a
//! month from its complete days pooled, against the same first days of the
//! three months before. Counts are compared as averages per complete day.
//! A period that is not over yet is *provisional* (`provisional = true`):
//! it is recomputed as it fills and becomes final on the first run after
//! its last day is complete.
//!
//! A parent period never copies its parts' findings. A finding of a part (a
//! week's day, a month's week, a year's month, all time's year) is carried
//! up only when the parent's own data confirms it: the days the finding
//! covers, tested against the parent's other complete days and the 28 days
//! before them, in the same direction. The parent's row then holds the
//! parent's own statistics, and "It stood out …" lists the parts it was
//! confirmed from. Running the job for a range computes its complete days
//! and every period above them that the range touches.
//!
//! **One fact, one row.** A transition between two consecutive funnel
//! events ("Payment Info Entered" → "Order Completed") measures the same
//! thing as the funnel step between them: when both are found for all
//! traffic, the funnel step is kept and the transition becomes its
//! supporting evidence (`same_fact` in the statistics). A segment that
//! explains a change of all traffic is the same fact too: when all traffic
//! and one segment moved the same way and the rest of the traffic (all
//! traffic without that segment, tested against its own baseline) stayed
//! flat (|z| < 2), the segment's row ("Mobile: … fell") is kept, with the
//! all-traffic finding as its evidence (`explains_whole`).
//!
//! **Failures name their cause.** A failure finding names the failing
//! events and the funnel step at which they occur (the last step reached
//! before the failure) in its title, description and evidence
//! (`failing_events`).
//!
//! The description is written from the statistics by the offline provider;
//! with Gemini or an OpenAI-compatible model, the model writes the title and
//! narrative from the same facts and every number it writes must be one of
//! the facts' numbers — otherwise the statistical text is kept and the
//! rejection is recorded in `failed_events`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc, Weekday};
use crow_lake::batch::{batches_to_rows, rows_to_batch};
use crow_lake::datafusion::prelude::{col, lit, Expr, SessionContext};
use crow_lake::ids::sha256_hex;
use crow_lake::{predicate, Lake};
use crow_schemas::metric::Metric;
use crow_schemas::rows::{FailedEventRow, FailureSource};
use crow_schemas::segment::SegmentEvent;
use crow_schemas::time::{date_from_days, days_from_date};
use crow_schemas::timeline::TimelineEntry;
use crow_schemas::{FAILED_EVENTS, PATTERNS, STORIES};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod calendar;
mod days;
#[cfg(test)]
mod eval;
mod findings;
mod metrics;
mod narratives;
mod rollup;
mod statistics;
mod store;
mod stories;
mod text;
#[cfg(test)]
mod thresholds;
mod trend;

use crate::ai::{call_validated, AiRequest, Provider, RetryPolicy};
use crate::job::{Job, JobContext, Planned, Request, RunWindow, Split};
use crate::{enrich, runs, Error, Params, ProgressRef, Result, Trigger, Window};
pub use calendar::Period;
use calendar::*;
pub use days::{daily_metrics, is_daily_count, DayFigure};
use findings::*;
pub use metrics::unit_weight;
use metrics::*;
use narratives::*;
pub use narratives::{allowed_numbers, check_numbers, numbers, validate_narrative};
use rollup::*;
use statistics::*;
use text::*;

/// Name of the job in the ledger.
pub const JOB: &str = crate::JobName::Patterns.as_str();
/// Days in a day's baseline.
pub const BASELINE_DAYS: i64 = 28;
/// Minimum |z| of a finding, whatever the multiple-testing correction
/// allows (p < 0.0027).
pub const Z_MIN: f64 = 3.0;
/// Default false discovery rate of one period's tests (`jobs.patterns.fdr`).
pub const DEFAULT_FDR: f64 = 0.01;
/// Minimum relative change of a finding.
pub const MIN_CHANGE: f64 = 0.3;
/// Days after the first data before new vs returning visitors are compared.
pub const WARM_UP_DAYS: u64 = 28;
/// Findings kept per period (strongest first).
pub const MAX_PER_PERIOD: usize = 25;

/// What to compute.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this organization (None: all).
    pub org: Option<String>,
    /// Explicit window of whole days (None: incremental).
    pub window: Option<Window>,
    /// How the run was started.
    pub trigger: Trigger,
    /// The run's clock.
    pub now: DateTime<Utc>,
    /// False discovery rate of one period's tests (Benjamini–Hochberg).
    pub fdr: f64,
    /// Notify an organization's users of a new ongoing story at least this
    /// significant (0: never).
    pub notify_min_significance: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run and its window.
    #[serde(flatten)]
    pub run: RunWindow,
    /// Sessions read: the days counted in this run (`daily_metrics` keeps
    /// every other day's figures).
    pub sessions_read: u64,
    /// Days counted from their sessions (never counted before, or their
    /// sessions or interactions changed since).
    pub days_counted: u64,
    /// Days whose figures were read back from `daily_metrics`.
    pub days_kept: u64,
    /// Patterns written, all period kinds.
    pub patterns: u64,
    /// Per period kind.
    pub day: u64,
    /// Week patterns.
    pub week: u64,
    /// Month patterns.
    pub month: u64,
    /// Year patterns.
    pub year: u64,
    /// All-time patterns.
    pub all: u64,
    /// Stories written (every story of the organizations computed).
    pub stories: u64,
    /// Narratives the provider wrote.
    pub narratives: u64,
    /// Narratives rejected (statistical text kept).
    pub narrative_failures: u64,
}

/// The patterns job, configured for one run with its AI provider.
pub struct Patterns {
    provider: Arc<dyn Provider>,
    opts: Options,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("provider", &self.provider.name())
            .field("opts", &self.opts)
            .finish()
    }
}

#[async_trait::async_trait]
impl Job for Patterns {
    const NAME: &'static str = JOB;
    const SPLIT: Option<Split> = Some(Split::Whole);
    const IDLE: &'static str = "no complete day since its last run";
    type Plan = Window;
    type Report = Report;

    fn build(ctx: &JobContext, req: &Request) -> Result<Self> {
        let cfg = &ctx.config.jobs.patterns;
        Ok(Patterns {
            provider: ctx.provider()?,
            opts: Options {
                org: req.org.clone(),
                window: req.window,
                trigger: req.trigger,
                now: ctx.now,
                fdr: cfg.fdr,
                notify_min_significance: cfg.notify_min_significance,
            },
        })
    }

    async fn plan(&self, ctx: &JobContext, _req: &Request) -> Result<Planned<Window, Report>> {
        let incremental = async {
            let w = incremental_window(&ctx.lake, &self.opts).await;
            w.map(|w| w.map(|w| (w, w)))
        };
        Self::plan_window(
            self.opts.window.map(|w| (w, w)),
            incremental,
            Report::default(),
        )
        .await
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        window: Window,
        run_id: &str,
    ) -> Result<(Window, Report)> {
        let mut report = compute(
            &ctx.lake,
            self.provider.clone(),
            &self.opts,
            window,
            &ctx.progress,
        )
        .await?;
        report.run.run_id = run_id.to_string();
        Ok((window, report))
    }

    fn rows(r: &Report) -> (u64, u64) {
        (r.sessions_read, r.patterns)
    }
}

/// Complete days since the watermark: from the patterns watermark (or the
/// first session) to the midnight of the enrich watermark.
async fn incremental_window(lake: &Lake, opts: &Options) -> Result<Option<Window>> {
    let Some(enriched) = runs::watermark(lake, enrich::JOB).await? else {
        return Ok(None);
    };
    let end = midnight(enriched.min(opts.now));
    let start = match runs::watermark(lake, JOB).await? {
        Some(w) => midnight(w),
        None => {
            let mut params = Params::default();
            let org = params.org("org_id", opts.org.as_deref());
            let (_, b) = params
                .run(
                    lake,
                    &format!(
                        "SELECT CAST(min(session_date) AS VARCHAR) AS d FROM sessions WHERE TRUE {org}"
                    ),
                )
                .await?;
            #[derive(Deserialize)]
            struct D {
                d: Option<String>,
            }
            let first = batches_to_rows::<D>(&b)?
                .into_iter()
                .next()
                .and_then(|d| d.d)
                .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
            match first {
                Some(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
                None => return Ok(None),
            }
        }
    };
    // The last complete day is recomputed as its roll-ups fill.
    let start = start.min(end - chrono::Duration::days(1));
    Ok(Some(Window { start, end }).filter(|w| !w.is_empty()))
}

/// The first day that is not complete: the UTC midnight of the run's clock
/// or of the enrich watermark (sessions still open or not yet enriched
/// lie after it), whichever is earlier.
async fn horizon(lake: &Lake, now: DateTime<Utc>) -> Result<NaiveDate> {
    let t = match runs::watermark(lake, enrich::JOB).await? {
        Some(w) => w.min(now),
        None => now,
    };
    Ok(t.date_naive())
}

/// The job: the window's complete days and every period above them,
/// for every organization, replaced in one commit each of `patterns` and
/// `stories`.
async fn compute(
    lake: &Lake,
    provider: Arc<dyn Provider>,
    opts: &Options,
    window: Window,
    progress: &ProgressRef,
) -> Result<Report> {
    let first_day = window.start.date_naive();
    let last_day = (window.end - chrono::Duration::microseconds(1)).date_naive();
    if last_day < first_day {
        return Err(Error::Invalid("the patterns window holds no day".into()));
    }
    // Only complete days: a day still filling is never computed, and never
    // part of a period's figures.
    let horizon = horizon(lake, opts.now).await?;
    let days: Vec<NaiveDate> = first_day
        .iter_days()
        .take_while(|d| *d <= last_day && *d < horizon)
        .collect();
    let mut report = Report {
        run: RunWindow::of(window),
        ..Report::default()
    };
    if days.is_empty() {
        tracing::info!(%horizon, "patterns: no complete day in the window");
        return Ok(report);
    }
    let periods = Periods::of(days, first_day, horizon);
    let mut inputs = Inputs::read(lake, &periods, opts.org.as_deref(), progress).await?;
    report.sessions_read = inputs.kept.sessions_read;
    report.days_counted = inputs.kept.days_counted;
    report.days_kept = inputs.kept.days_kept;

    progress.phase("finding patterns", inputs.kept.by_org.len() as u64);
    let mut rows: Vec<PatternRow> = Vec::new();
    let mut story_rows: Vec<stories::StoryRow> = Vec::new();
    let mut orgs_done: Vec<String> = Vec::new();
    let by_org = std::mem::take(&mut inputs.kept.by_org);
    for (org, days) in by_org {
        orgs_done.push(org.clone());
        let (org_rows, org_stories) = find_org(&org, days, &inputs, &periods, opts.fdr);
        rows.extend(org_rows);
        story_rows.extend(org_stories);
        progress.inc(1);
    }
    let failed = write_narratives(&provider, &mut rows, &mut report, progress).await;
    // Replace exactly the periods this run computed, in one commit.
    progress.phase("writing patterns", 0);
    write(
        lake,
        opts,
        &periods,
        &orgs_done,
        rows,
        story_rows,
        &mut report,
    )
    .await?;
    if !failed.is_empty() {
        let b = rows_to_batch(&FAILED_EVENTS, &failed)?;
        lake.append(FAILED_EVENTS.name, vec![b]).await?;
    }
    Ok(report)
}

/// The periods a run computes: its complete days and the weeks, months and
/// years they touch.
struct Periods {
    first_day: NaiveDate,
    horizon: NaiveDate,
    days: Vec<NaiveDate>,
    weeks: BTreeSet<Period>,
    months: BTreeSet<Period>,
    years: BTreeSet<Period>,
}

impl Periods {
    fn of(days: Vec<NaiveDate>, first_day: NaiveDate, horizon: NaiveDate) -> Periods {
        Periods {
            first_day,
            horizon,
            weeks: days.iter().map(|d| Period::week(*d)).collect(),
            months: days.iter().map(|d| Period::month(*d)).collect(),
            years: days.iter().map(|d| Period::year(*d)).collect(),
            days,
        }
    }
}

/// What a run reads: every complete day's figures by organization (the
/// periods' baselines, and the parents' own evidence for their parts'
/// findings), and what the rows refer to.
struct Inputs {
    kept: store::Kept,
    /// Product names by id.
    names: HashMap<String, String>,
    /// Child patterns already in the table (parts this run does not
    /// recompute, for the roll-ups to re-test).
    existing: Vec<PatternRow>,
    /// Each organization's currency: its catalog's most common one (order
    /// events carry amounts, the catalog says in what).
    currencies: HashMap<String, String>,
}

impl Inputs {
    async fn read(
        lake: &Lake,
        periods: &Periods,
        org: Option<&str>,
        progress: &ProgressRef,
    ) -> Result<Inputs> {
        let horizon = periods.horizon;
        let mut params = Params::default();
        let org_cond = params.org("org_id", org);
        let kept = store::days_before(lake, horizon, org, progress).await?;
        let ctx = lake.session().await?;
        #[derive(Deserialize)]
        struct Name {
            product_id: String,
            name: String,
        }
        let names: HashMap<String, String> = batches_to_rows::<Name>(
            &params
                .sql(
                    &ctx,
                    &format!("SELECT product_id, name FROM products WHERE TRUE {org_cond}"),
                )
                .await?
                .collect()
                .await?,
        )?
        .into_iter()
        .map(|r| (r.product_id, r.name))
        .collect();
        let existing: Vec<PatternRow> = batches_to_rows(
            &params
                .sql(
                    &ctx,
                    &format!("SELECT * FROM patterns WHERE period_kind <> 'all' {org_cond}"),
                )
                .await?
                .collect()
                .await?,
        )?;
        let currencies = read_currencies(&ctx, (&org_cond, &params)).await?;
        Ok(Inputs {
            kept,
            names,
            existing,
            currencies,
        })
    }
}

/// Each organization's currency: its catalog's most common one.
/// `org_cond` is the organization filter whose value `params` binds.
async fn read_currencies(
    ctx: &SessionContext,
    (org_cond, params): (&str, &Params),
) -> Result<HashMap<String, String>> {
    #[derive(Deserialize)]
    struct Currency {
        org_id: String,
        currency: String,
    }
    Ok(batches_to_rows::<Currency>(
        &params
            .sql(
                ctx,
                &format!(
                    "SELECT org_id, currency FROM products WHERE currency IS NOT NULL {org_cond} \
             GROUP BY org_id, currency ORDER BY org_id, count(*) DESC, currency"
                ),
            )
            .await?
            .collect()
            .await?,
    )?
    .into_iter()
    .rev()
    .map(|r| (r.org_id, r.currency))
    .collect())
}

/// One organization's patterns of every period the run computes, and its
/// stories.
fn find_org(
    org: &str,
    days: store::OrgDays,
    inputs: &Inputs,
    periods: &Periods,
    fdr: f64,
) -> (Vec<PatternRow>, Vec<stories::StoryRow>) {
    let (first_day, horizon, existing) = (periods.first_day, periods.horizon, &inputs.existing);
    let first_data = days.days.keys().next().copied().unwrap_or(first_day);
    let interactions = &days.interactions;
    let mut finder = Finder::of_days(days.days, first_data, horizon, &inputs.names, fdr);
    finder.currency = inputs.currencies.get(org).cloned();
    // Days before this run's: their findings, from the table.
    let earlier: Vec<PatternRow> = existing
        .iter()
        .filter(|r| r.org_id == *org && date_of(r.period_start) < first_day)
        .cloned()
        .collect();
    finder.flag_rows(&earlier);
    let mut new_rows: BTreeMap<Period, Vec<PatternRow>> = BTreeMap::new();
    let row = |p: &Period, f: &Finding| to_row(org, p, f, interactions, p.end > horizon);
    // Days.
    for d in &periods.days {
        let p = Period::day(*d);
        let fs = finder.day(&p);
        new_rows.insert(p, fs.iter().map(|f| row(&p, f)).collect());
    }
    // Weeks and months: their own pooled tests, plus their parts'
    // findings where the period's own data confirms them.
    for (set, child_kind) in [(&periods.weeks, "day"), (&periods.months, "week")] {
        for p in set.iter() {
            let own = finder.own(p);
            let children = child_refs(org, p, child_kind, existing, &new_rows);
            let fs = finder.merge(p, own, &children);
            new_rows.insert(*p, fs.iter().map(|f| row(p, f)).collect());
        }
    }
    // Years from months, all time from years: confirmed parts only.
    for p in &periods.years {
        let children = child_refs(org, p, "month", existing, &new_rows);
        let fs = finder.merge(p, Vec::new(), &children);
        new_rows.insert(*p, fs.iter().map(|f| row(p, f)).collect());
    }
    let all = Period {
        kind: "all",
        start: first_data,
        end: horizon.max(first_data + Days::new(1)),
    };
    let children = child_refs(org, &all, "year", existing, &new_rows);
    let fs = finder.merge(&all, Vec::new(), &children);
    new_rows.insert(
        all,
        fs.iter()
            .map(|f| to_row(org, &all, f, interactions, false))
            .collect(),
    );
    // Stories from every day's findings (this run's, else the table's).
    let fresh: HashMap<NaiveDate, Vec<PatternRow>> = new_rows
        .iter()
        .filter(|(p, _)| p.kind == "day")
        .map(|(p, rs)| (p.start, rs.clone()))
        .collect();
    let parts = stories::day_parts(org, existing, &fresh);
    let story_rows = stories::stories(&finder, org, parts);
    (new_rows.into_values().flatten().collect(), story_rows)
}

/// Narratives by the provider (the offline one keeps the statistical
/// text): the rows' titles and descriptions rewritten; the rejections, as
/// `failed_events` rows.
async fn write_narratives(
    provider: &Arc<dyn Provider>,
    rows: &mut [PatternRow],
    report: &mut Report,
    progress: &ProgressRef,
) -> Vec<FailedEventRow> {
    let mut failed = Vec::new();
    if provider.name() == "offline" || rows.is_empty() {
        return failed;
    }
    progress.phase(
        &format!("writing narratives with {}", provider.name()),
        rows.len() as u64,
    );
    let mut policy = RetryPolicy::new(2);
    policy.base = std::time::Duration::from_millis(100);
    type Narrative = std::result::Result<(String, String), String>;
    // The calls are collected first: a lazy `map` closure over borrowed
    // rows would make the job's future not provably `Send`.
    let calls: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let provider = provider.clone();
            let req = narrative_request(r);
            async move {
                let allowed = allowed_numbers(&req.prompt);
                let out = call_validated(provider.as_ref(), &req, policy, |t| {
                    validate_narrative(t, &allowed)
                })
                .await;
                progress.inc(1);
                (i, out.value.map_err(|(_, why)| why))
            }
        })
        .collect();
    let results: Vec<(usize, Narrative)> = futures::stream::iter(calls)
        .buffer_unordered(4)
        .collect()
        .await;
    for (i, r) in results {
        match r {
            Ok((title, description)) => {
                rows[i].title = title;
                rows[i].description = description;
                rows[i].provider = provider.name().to_string();
                rows[i].model = provider.model().to_string();
                report.narratives += 1;
            }
            Err(why) => {
                report.narrative_failures += 1;
                failed.push(
                    FailedEventRow::new(
                        crow_lake::ids::new_id("fail"),
                        FailureSource::Job(crate::JobName::Patterns),
                        crow_schemas::rows::FailureCode::AiNarrativeRejected,
                        format!("kept the statistical description: {why}"),
                        Utc::now(),
                    )
                    .with_org(rows[i].org_id.clone())
                    .with_message_id(Some(rows[i].pattern_id.clone()))
                    .with_payload(rows[i].evidence.clone()),
                );
            }
        }
    }
    failed
}

/// Replace exactly the periods this run computed, in one commit, and the
/// organizations' stories (rewritten whole from their day findings); tell
/// users of strong stories.
async fn write(
    lake: &Lake,
    opts: &Options,
    periods: &Periods,
    orgs_done: &[String],
    rows: Vec<PatternRow>,
    story_rows: Vec<stories::StoryRow>,
    report: &mut Report,
) -> Result<()> {
    count_rows(&rows, report);
    let span = |set: &BTreeSet<Period>, kind: &str| -> Expr {
        let kind_is = col("period_kind").eq(lit(kind));
        match (set.iter().next(), set.iter().last()) {
            (Some(a), Some(b)) => kind_is.and(
                col("period_start").between(predicate::date(a.start), predicate::date(b.start)),
            ),
            _ => kind_is.and(lit(false)),
        }
    };
    let day_set: BTreeSet<Period> = periods.days.iter().map(|d| Period::day(*d)).collect();
    // Organizations without sessions in range keep their patterns.
    let orgs = match &opts.org {
        Some(o) => col("org_id").eq(lit(o.as_str())),
        None if orgs_done.is_empty() => lit(false),
        None => col("org_id").in_list(orgs_done.iter().map(|o| lit(o.as_str())).collect(), false),
    };
    let predicate = span(&day_set, "day")
        .or(span(&periods.weeks, "week"))
        .or(span(&periods.months, "month"))
        .or(span(&periods.years, "year"))
        .or(col("period_kind").eq(lit("all")))
        .and(orgs.clone());
    let batch = rows_to_batch(&PATTERNS, &rows)?;
    lake.replace_where_if_changed(PATTERNS.name, &predicate, vec![batch], &["created_at"])
        .await?;
    // An organization's stories are rewritten whole from its day findings.
    report.stories = story_rows.len() as u64;
    let batch = rows_to_batch(&STORIES, &story_rows)?;
    lake.replace_where_if_changed(STORIES.name, &orgs, vec![batch], &["created_at"])
        .await?;
    notify_strong_stories(lake, &story_rows, opts.notify_min_significance).await;
    Ok(())
}

/// The report's counts of rows by period kind.
fn count_rows(rows: &[PatternRow], report: &mut Report) {
    for r in rows {
        match r.period_kind.as_str() {
            "day" => report.day += 1,
            "week" => report.week += 1,
            "month" => report.month += 1,
            "year" => report.year += 1,
            _ => report.all += 1,
        }
    }
    report.patterns = rows.len() as u64;
}

/// Tell every user of an organization about each ongoing story at least
/// `min` significant, once per story (its link is its identity, so a
/// recomputed day tells no one twice). A backfill of old days notifies
/// nothing: only ongoing stories are news. Failures are logged, never fail
/// the run (the patterns are written already).
async fn notify_strong_stories(lake: &Lake, stories: &[stories::StoryRow], min: f64) {
    if min <= 0.0 {
        return;
    }
    for s in stories
        .iter()
        .filter(|s| s.ongoing && s.significance >= min)
    {
        let notice = crow_lake::notify::Notice {
            kind: "strong_pattern",
            title: s.title.clone(),
            body: Some(s.description.clone()),
            link: Some(format!("/api/v1/stories?id={}", s.story_id)),
        };
        if let Err(e) =
            crow_lake::notify::notify_role_once(lake, &s.org_id, "viewer", &notice).await
        {
            tracing::warn!(story = %s.story_id, error = %e, "patterns: could not notify the story");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_numbers_are_rejected() {
        let allowed = allowed_numbers(
            "rate 12% of 75 sessions, from 61% (z = -6.1) in the week of 2026-11-16",
        );
        assert!(validate_narrative(r#"{"title":"Mobile checkout fell to 12%","description":"Only 12% of 75 sessions, down from 61%."}"#, &allowed).is_ok());
        let err = validate_narrative(
            r#"{"title":"Fell","description":"Down 49 points."}"#,
            &allowed,
        )
        .unwrap_err();
        assert!(err.contains("49"), "{err}");
    }

    #[test]
    fn exact_tails_match_their_distributions() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-9);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-9);
        // 10 heads of 10: 2 / 1024 two-sided.
        assert!((binomial_tail_p(10.0, 10.0, 0.5) - 2.0 / 1024.0).abs() < 1e-9);
        assert!((binomial_tail_p(5.0, 10.0, 0.5) - 1.0).abs() < 1e-9);
        // 0 of 10 at 0.1: 0.9^10 one-sided.
        assert!((binomial_tail_p(0.0, 10.0, 0.1) - 2.0 * 0.9f64.powi(10)).abs() < 1e-9);
        // Large n stays finite (no underflow at the start).
        let p = binomial_tail_p(1700.0, 3000.0, 0.5);
        assert!(p > 0.0 && p < 1e-10, "{p}");
        // Poisson: 0 events where 3 are expected, e^-3 one-sided.
        assert!((poisson_p(0.0, 3.0) - 2.0 * (-3f64).exp()).abs() < 1e-9);
        assert!((binomial_p(10.0, 10.0, 0.5) - 2.0 / 1024.0).abs() < 1e-9);
        assert!((z_of_p(0.05) - 1.96).abs() < 0.01);
    }

    /// Sessions of every kind the metrics look at: funnels, failures,
    /// loops, transitions, products bought together, revenue, segments.
    fn day_sessions() -> Vec<Sess> {
        let t = |events: &[(&str, &str)]| {
            let v: Vec<(i64, String, String)> = events
                .iter()
                .enumerate()
                .map(|(i, (k, d))| (i as i64, k.to_string(), d.to_string()))
                .collect();
            serde_json::to_string(&v).unwrap()
        };
        let row = |id: &str, channel: &str, device: &str, ret: bool, timeline: String| SessionIn {
            org_id: "org".into(),
            session_id: id.into(),
            channel: channel.into(),
            session_date: "2026-11-20".into(),
            visitor_id: Some(format!("v-{}", id.len() % 3)),
            device_type: Some(device.into()),
            traffic_source: Some("search".into()),
            is_returning: Some(ret),
            timeline,
        };
        let buy = [
            ("page", "/"),
            ("Product Viewed", "p1 Headphones"),
            ("Product Viewed", "p2 Cable"),
            ("Product Added", "p1"),
            ("Product Added", "p2"),
            ("Checkout Started", ""),
            ("Payment Info Entered", ""),
            ("Order Completed", "order o-1 249.00"),
        ];
        let fail = [
            ("Product Viewed", "p1 Headphones"),
            ("Product Added", "p1"),
            ("Checkout Started", ""),
            ("Payment Failed", "card"),
            ("Payment Failed", "card"),
            ("Payment Failed", "card"),
        ];
        let browse = [
            ("page", "/"),
            ("Product Viewed", "p3 Stand"),
            ("page", "/b"),
        ];
        vec![
            row("s1", "web", "mobile", false, t(&buy)),
            row("s22", "web", "desktop", true, t(&fail)),
            row("s333", "web", "mobile", true, t(&browse)),
            row("s4444", "cctv", "", false, t(&browse)),
            row("s5", "web", "tablet", false, t(&buy)),
        ]
        .into_iter()
        .map(|r| Sess::from_row(r).expect("a valid test row"))
        .collect()
    }

    #[test]
    fn a_metric_counted_alone_is_counted_as_among_all() {
        let sessions = day_sessions();
        let refs: Vec<&Sess> = sessions.iter().collect();
        let all = Stats::of_day(&refs);
        assert!(all.cells.len() > 40, "{}", all.cells.len());
        for (key, want) in &all.cells {
            let only = Arc::new(Only::new(std::slice::from_ref(key)));
            let alone = Stats::of_day_only(&refs, Some(only));
            let got = alone.cells.get(key).copied().unwrap_or_default();
            assert_eq!((got.k, got.n), (want.k, want.n), "{key:?}");
        }
        // A few asked together: each as among all, nothing else kept.
        let keys: Vec<Key> = all.cells.keys().take(7).cloned().collect();
        let some = Stats::of_day_only(&refs, Some(Arc::new(Only::new(&keys))));
        for k in &keys {
            let (got, want) = (some.cells[k], all.cells[k]);
            assert_eq!((got.k, got.n), (want.k, want.n), "{k:?}");
        }
        assert!(some
            .cells
            .keys()
            .all(|k| keys.contains(k) || k.0.starts_with("transitions_from:")));
    }

    #[test]
    fn p_values_match_the_normal_distribution() {
        assert!((p_value(1.96) - 0.05).abs() < 0.001);
        assert!((p_value(-3.0) - 0.0027).abs() < 0.0002);
    }

    #[test]
    fn periods_nest() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 18).unwrap();
        assert_eq!(
            Period::week(d).start,
            NaiveDate::from_ymd_opt(2026, 11, 16).unwrap()
        );
        assert_eq!(
            Period::month(d).end,
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
        );
        assert_eq!(
            Period::year(d).start,
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
        );
        assert_eq!(
            Period::month(d).previous(2)[1].start,
            NaiveDate::from_ymd_opt(2026, 9, 1).unwrap()
        );
    }
}
