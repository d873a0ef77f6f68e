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
use crow_lake::ids::sha256_hex;
use crow_lake::Lake;
use crow_schemas::{FAILED_EVENTS, PATTERNS, STORIES};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod days;
#[cfg(test)]
mod eval;
mod stories;
#[cfg(test)]
mod thresholds;
mod trend;

use crate::ai::{call_validated, AiRequest, Provider, RetryPolicy};
use crate::job::{Job, JobContext, Planned, Request, Split};
use crate::{enrich, runs, str_lit, Error, ProgressRef, Result, Trigger, Window};
pub use days::{daily_metrics, is_daily_count, DayFigure};

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

const STEPS: [(&str, &str); 5] = [
    ("view", "Product Viewed"),
    ("cart", "Product Added"),
    ("checkout", "Checkout Started"),
    ("payment", "Payment Info Entered"),
    ("order", "Order Completed"),
];

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
    /// The run id (empty when there was nothing to do).
    pub run_id: String,
    /// Window start.
    pub window_start: Option<DateTime<Utc>>,
    /// Window end.
    pub window_end: Option<DateTime<Utc>>,
    /// Sessions read (window, its periods and baselines).
    pub sessions_read: u64,
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
        let report = compute(
            &ctx.lake,
            self.provider.clone(),
            &self.opts,
            window,
            &ctx.progress,
        )
        .await?;
        Ok((
            window,
            Report {
                run_id: run_id.to_string(),
                ..report
            },
        ))
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
            let (_, b) = lake
                .sql(&format!(
                    "SELECT CAST(min(session_date) AS VARCHAR) AS d FROM sessions WHERE TRUE {}",
                    org_filter(opts.org.as_deref())
                ))
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

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

fn org_filter(org: Option<&str>) -> String {
    org.map(|o| format!(" AND org_id = {}", str_lit(o)))
        .unwrap_or_default()
}

/// A period of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// 'day', 'week', 'month', 'year' or 'all'.
    pub kind: &'static str,
    /// First day.
    pub start: NaiveDate,
    /// Day after the last.
    pub end: NaiveDate,
}

impl Period {
    fn day(d: NaiveDate) -> Period {
        Period {
            kind: "day",
            start: d,
            end: d + Days::new(1),
        }
    }

    fn week(d: NaiveDate) -> Period {
        let start = d - Days::new(u64::from(d.weekday().num_days_from_monday()));
        Period {
            kind: "week",
            start,
            end: start + Days::new(7),
        }
    }

    fn month(d: NaiveDate) -> Period {
        let start = d.with_day(1).unwrap_or(d);
        Period {
            kind: "month",
            start,
            end: start + Months::new(1),
        }
    }

    fn year(d: NaiveDate) -> Period {
        let start = NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d);
        Period {
            kind: "year",
            start,
            end: start + Months::new(12),
        }
    }

    fn phrase(&self) -> String {
        match self.kind {
            "day" => format!("on {}", self.start),
            "week" => format!("in the week of {}", self.start),
            "month" => format!("in {}", self.start.format("%B %Y")),
            "year" => format!("in {}", self.start.year()),
            _ => "over all time".into(),
        }
    }

    /// The previous `n` periods of the same kind (nearest first).
    fn previous(&self, n: usize) -> Vec<Period> {
        let mut out = Vec::new();
        let mut cur = *self;
        for _ in 0..n {
            let p = match cur.kind {
                "day" => Period::day(cur.start - Days::new(1)),
                "week" => Period::week(cur.start - Days::new(7)),
                "month" => Period::month(cur.start - Months::new(1)),
                _ => return out,
            };
            out.push(p);
            cur = p;
        }
        out
    }
}

/// A session as the patterns job sees it.
#[derive(Debug, Clone)]
struct Sess {
    id: String,
    day: NaiveDate,
    visitor: Option<String>,
    segments: Vec<String>,
    kinds: Vec<String>,
    viewed: Vec<String>,
    bought: Vec<String>,
    steps: [bool; 5],
    /// Failure events with the funnel step reached before each (index
    /// into [`STEPS`]; None before the funnel).
    failures: Vec<(String, Option<usize>)>,
    /// Revenue of the session's orders, when they carried one.
    revenue: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct SessionIn {
    org_id: String,
    session_id: String,
    channel: String,
    session_date: String,
    visitor_id: Option<String>,
    device_type: Option<String>,
    traffic_source: Option<String>,
    is_returning: Option<bool>,
    timeline: String,
}

/// The funnel step a failure occurs at, as stored in `error_at:` metrics.
fn step_key(step: Option<usize>) -> &'static str {
    step.and_then(|i| STEPS.get(i)).map_or("start", |s| s.0)
}

/// "the payment step", "before the funnel".
fn step_phrase(key: &str) -> String {
    if key == "start" {
        "before the funnel".into()
    } else {
        format!("at the {} step", step_name(key))
    }
}

/// The failing events of a segment (or, with `only`, of one event) and the
/// steps they occur at, most sessions first.
fn failing_events(cur: &Stats, seg: &str, only: Option<&str>) -> Vec<(String, String, f64)> {
    let mut out: Vec<(String, String, f64)> = cur
        .cells
        .iter()
        .filter(|((_, s), _)| s == seg)
        .filter_map(|((m, _), c)| {
            let (event, step) = m.strip_prefix("error_at:")?.rsplit_once('@')?;
            only.is_none_or(|o| o == event)
                .then(|| (event.to_string(), step.to_string(), c.k))
        })
        .collect();
    out.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| a.1.cmp(&b.1))
    });
    out
}

fn is_failure(kind: &str) -> bool {
    let k = kind.to_lowercase();
    k.contains("fail") || k.contains("error") || k.contains("declin")
}

impl Sess {
    fn from_row(r: SessionIn) -> Option<Sess> {
        let day = NaiveDate::parse_from_str(&r.session_date, "%Y-%m-%d").ok()?;
        let timeline: Vec<(i64, String, String)> =
            serde_json::from_str(&r.timeline).unwrap_or_default();
        let mut segments = Vec::new();
        if r.channel == "web" {
            if let Some(d) = r.device_type.filter(|d| !d.is_empty()) {
                segments.push(format!("device_type={d}"));
            }
            if let Some(s) = r.traffic_source.filter(|s| !s.is_empty()) {
                segments.push(format!("traffic_source={s}"));
            }
            if let Some(ret) = r.is_returning {
                segments.push(format!(
                    "visitor_type={}",
                    if ret { "returning" } else { "new" }
                ));
            }
        } else {
            segments.push(format!("channel={}", r.channel));
        }
        let mut s = Sess {
            id: r.session_id,
            day,
            visitor: r.visitor_id,
            segments,
            kinds: Vec::with_capacity(timeline.len()),
            viewed: Vec::new(),
            bought: Vec::new(),
            steps: [false; 5],
            failures: Vec::new(),
            revenue: None,
        };
        let mut added = Vec::new();
        let mut reached: Option<usize> = None;
        for (_, kind, detail) in &timeline {
            let first = detail.split_whitespace().next().unwrap_or("").to_string();
            match kind.as_str() {
                "Product Viewed" if !first.is_empty() && !s.viewed.contains(&first) => {
                    s.viewed.push(first)
                }
                "Product Added" if !first.is_empty() && !added.contains(&first) => {
                    added.push(first)
                }
                _ => {}
            }
            for (i, (_, name)) in STEPS.iter().enumerate() {
                if kind == name {
                    s.steps[i] = true;
                    reached = Some(reached.map_or(i, |r| r.max(i)));
                }
            }
            if is_failure(kind) {
                s.failures.push((kind.clone(), reached));
            }
            // "order o-1 249.00": the order's revenue, when the event had one.
            if kind == "Order Completed" {
                if let Some(v) = detail
                    .strip_prefix("order ")
                    .and_then(|d| d.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                {
                    s.revenue = Some(s.revenue.unwrap_or(0.0) + v);
                }
            }
            s.kinds.push(kind.clone());
        }
        if s.steps[4] {
            s.bought = added;
        }
        Some(s)
    }

    fn loop_kind(&self) -> Option<&str> {
        let mut run = 1;
        for w in self.kinds.windows(2) {
            if w[0] == w[1] && w[0] != "page" && w[0] != "screen" {
                run += 1;
                if run >= 3 {
                    return Some(&w[1]);
                }
            } else {
                run = 1;
            }
        }
        None
    }
}

/// Counts (k) or rates (k of n) of one metric in one segment.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    k: f64,
    n: f64,
}

type Key = (String, String);

/// One period's metrics, with sample sessions (hits, misses) per metric.
#[derive(Debug, Default, Clone)]
struct Stats {
    cells: HashMap<Key, Cell>,
    samples: HashMap<Key, (Vec<String>, Vec<String>)>,
    sessions: u64,
    /// Days with data merged into these stats (counts are compared per day).
    days: f64,
    /// When set, only these metrics are kept (and only the work they need
    /// is done); when not, every metric.
    only: Option<Arc<Only>>,
}

/// The metrics [`Stats::of_day_only`] counts: the keys asked for (with what
/// they are computed from) and their families, so whole groups of metrics
/// nobody asked for are not even formed. Each metric is counted by the
/// same code either way, so its figures are the same.
#[derive(Debug, Default)]
struct Only {
    keys: HashSet<Key>,
    /// `event:`, `funnel:`, `sessions`, … (a metric's name up to its `:`).
    families: HashSet<String>,
    /// Whether any key is of a segment (else only all traffic is counted).
    segmented: bool,
}

/// A metric's family: its name up to and including the first `:`.
fn family(metric: &str) -> &str {
    metric.find(':').map_or(metric, |i| &metric[..=i])
}

impl Only {
    fn new(metrics: &[Key]) -> Only {
        let mut o = Only::default();
        for (m, seg) in metrics {
            // A transition is a rate of the transitions out of its source.
            if let Some((from, _)) = m
                .strip_prefix("transition:")
                .and_then(|r| r.split_once('>'))
            {
                o.keys
                    .insert((format!("transitions_from:{from}"), seg.clone()));
                o.families.insert("transitions_from:".into());
            }
            o.families.insert(family(m).to_string());
            o.segmented |= !seg.is_empty();
            o.keys.insert((m.clone(), seg.clone()));
        }
        o
    }
}

fn is_count(metric: &str) -> bool {
    metric == "sessions"
        || metric == "visitors"
        || metric.starts_with("event:")
        || metric.starts_with("error:")
}

impl Stats {
    fn add(&mut self, metric: String, seg: &str, k: f64, n: f64, sample: Option<(&str, bool)>) {
        let key = (metric, seg.to_string());
        if self.only.as_ref().is_some_and(|o| !o.keys.contains(&key)) {
            return;
        }
        let c = self.cells.entry(key.clone()).or_default();
        c.k += k;
        c.n += n;
        if let Some((id, hit)) = sample {
            let s = self.samples.entry(key).or_default();
            let v = if hit { &mut s.0 } else { &mut s.1 };
            if v.len() < 5 {
                v.push(id.to_string());
            }
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.sessions += other.sessions;
        self.days += other.days;
        for (k, c) in &other.cells {
            let e = self.cells.entry(k.clone()).or_default();
            e.k += c.k;
            e.n += c.n;
        }
        for (k, (h, m)) in &other.samples {
            let e = self.samples.entry(k.clone()).or_default();
            for x in h {
                if e.0.len() < 5 {
                    e.0.push(x.clone());
                }
            }
            for x in m {
                if e.1.len() < 5 {
                    e.1.push(x.clone());
                }
            }
        }
    }

    fn of_day(sessions: &[&Sess]) -> Stats {
        Self::of_day_only(sessions, None)
    }

    /// [`Stats::of_day`], keeping only the metrics of `only` (all when
    /// None) and skipping the work of the families it does not name.
    fn of_day_only(sessions: &[&Sess], only: Option<Arc<Only>>) -> Stats {
        let wants = |f: &str| only.as_ref().is_none_or(|o| o.families.contains(f));
        let segmented = only.as_ref().is_none_or(|o| o.segmented);
        let (funnel, errors_at, orders) = (wants("funnel:"), wants("error_at:"), wants("orders"));
        let (events, errors, loops) = (wants("event:"), wants("error:"), wants("loop:"));
        let transitions = wants("transition:") || wants("transitions_from:");
        let products = wants("product_views:") || wants("product_conversion:");
        let bought = wants("bought:") || wants("pair:");
        let revenue = wants("revenue") || wants("revenue_sq");
        let mut st = Stats {
            sessions: sessions.len() as u64,
            days: 1.0,
            only: only.clone(),
            ..Stats::default()
        };
        let mut visitors = BTreeSet::new();
        for s in sessions {
            if let Some(v) = &s.visitor {
                visitors.insert(v.as_str());
            }
            let segs: Vec<&str> = std::iter::once("")
                .chain(s.segments.iter().map(String::as_str).filter(|_| segmented))
                .collect();
            for seg in &segs {
                st.add("sessions".into(), seg, 1.0, 0.0, Some((&s.id, true)));
                // Funnel steps, step to step and view to order.
                for i in 0..4 {
                    if funnel && s.steps[i] {
                        let hit = s.steps[i + 1];
                        st.add(
                            format!("funnel:{}>{}", STEPS[i].0, STEPS[i + 1].0),
                            seg,
                            f64::from(u8::from(hit)),
                            1.0,
                            Some((&s.id, hit)),
                        );
                    }
                }
                if funnel && s.steps[0] {
                    let hit = s.steps[4];
                    st.add(
                        "funnel:view>order".into(),
                        seg,
                        f64::from(u8::from(hit)),
                        1.0,
                        Some((&s.id, hit)),
                    );
                }
                let failed = !s.failures.is_empty();
                st.add(
                    "error_sessions".into(),
                    seg,
                    f64::from(u8::from(failed)),
                    1.0,
                    Some((&s.id, failed)),
                );
                // Which failure, at which step: sessions per (event, step).
                let mut at: BTreeSet<String> = BTreeSet::new();
                for (f, step) in s.failures.iter().filter(|_| errors_at) {
                    at.insert(format!("error_at:{f}@{}", step_key(*step)));
                }
                for m in at {
                    st.add(m, seg, 1.0, 0.0, None);
                }
                if (orders || revenue) && s.steps[4] {
                    st.add("orders".into(), seg, 1.0, 0.0, None);
                    // Revenue of the orders that carried one (k: the sum,
                    // n: how many), and its squares (for the spread).
                    if let Some(r) = s.revenue {
                        st.add("revenue".into(), seg, r, 1.0, None);
                        st.add("revenue_sq".into(), seg, r * r, 1.0, None);
                    }
                }
            }
            // Overall only: events, failures, transitions, loops, products.
            let mut kinds_seen = BTreeSet::new();
            for k in s.kinds.iter().filter(|_| events || loops) {
                st.add(format!("event:{k}"), "", 1.0, 0.0, None);
                kinds_seen.insert(k.as_str());
            }
            for (f, _) in s.failures.iter().filter(|_| errors) {
                st.add(format!("error:{f}"), "", 1.0, 0.0, Some((&s.id, true)));
            }
            for w in s.kinds.windows(2).filter(|_| transitions) {
                if w[0] == w[1] {
                    continue;
                }
                // Every transition out of w[0] counts toward its base.
                st.add(
                    format!("transition:{}>{}", w[0], w[1]),
                    "",
                    1.0,
                    0.0,
                    Some((&s.id, true)),
                );
                st.add(format!("transitions_from:{}", w[0]), "", 1.0, 0.0, None);
            }
            let looped = if loops { s.loop_kind() } else { None };
            for k in kinds_seen.into_iter().filter(|_| loops) {
                if k == "page" || k == "screen" {
                    continue;
                }
                let hit = looped == Some(k);
                st.add(
                    format!("loop:{k}"),
                    "",
                    f64::from(u8::from(hit)),
                    1.0,
                    Some((&s.id, hit)),
                );
            }
            for p in s.viewed.iter().filter(|_| products) {
                st.add(
                    format!("product_views:{p}"),
                    "",
                    1.0,
                    0.0,
                    Some((&s.id, true)),
                );
                let hit = s.bought.contains(p);
                st.add(
                    format!("product_conversion:{p}"),
                    "",
                    f64::from(u8::from(hit)),
                    1.0,
                    Some((&s.id, hit)),
                );
            }
            for (i, a) in s.bought.iter().enumerate().filter(|_| bought) {
                st.add(format!("bought:{a}"), "", 1.0, 0.0, None);
                for b in s.bought.iter().skip(i + 1) {
                    let (x, y) = if a < b { (a, b) } else { (b, a) };
                    st.add(format!("pair:{x}|{y}"), "", 1.0, 0.0, Some((&s.id, true)));
                }
            }
        }
        st.add("visitors".into(), "", visitors.len() as f64, 0.0, None);
        // A product's views are a share of the day's sessions: more
        // traffic is not a product trend.
        for ((m, _), c) in st.cells.iter_mut() {
            if m.starts_with("product_views:") {
                c.n = st.sessions as f64;
            }
        }
        // Transitions become rates of their source event.
        let froms: Vec<(Key, Cell)> = st
            .cells
            .iter()
            .filter(|((m, _), _)| m.starts_with("transitions_from:"))
            .map(|(k, c)| (k.clone(), *c))
            .collect();
        let mut trans: Vec<(Key, Cell)> = Vec::new();
        for ((m, seg), c) in &st.cells {
            if let Some(rest) = m.strip_prefix("transition:") {
                if let Some((from, _)) = rest.split_once('>') {
                    let base = froms
                        .iter()
                        .find(|((fm, _), _)| fm == &format!("transitions_from:{from}"))
                        .map_or(0.0, |(_, c)| c.k);
                    trans.push(((m.clone(), seg.clone()), Cell { k: c.k, n: base }));
                }
            }
        }
        for (k, c) in trans {
            st.cells.insert(k, c);
        }
        st
    }
}

/// One finding before it is written.
#[derive(Debug, Clone)]
struct Finding {
    kind: &'static str,
    metric: String,
    segment: String,
    z: f64,
    support: i64,
    product_ids: Vec<String>,
    facts: Value,
    title: String,
    description: String,
    samples: Vec<String>,
    children: Vec<String>,
    /// Found by this period's own test (not confirmed from a part).
    own: bool,
    /// The complete days the finding's figures cover, `[start, end)`.
    span: (NaiveDate, NaiveDate),
    /// Two-sided p-value of `z`.
    p: f64,
    /// Large enough to matter (relative and absolute change), whatever its
    /// significance.
    notable: bool,
    /// Estimated difference from the baseline over the span, in `unit`
    /// (negative: lost), and its standard error.
    impact: f64,
    impact_se: f64,
    /// "orders", "sessions", "visitors", "product views", "events".
    unit: &'static str,
}

impl Finding {
    /// How much it matters, for ranking: the impact it had at least (the
    /// 95% interval's bound nearest zero), weighted by what its unit is
    /// worth (an order 10, a session or visitor 1, a product view 0.3, an
    /// event 0.1) — impact and confidence together, not |z| alone.
    fn rank_score(&self) -> f64 {
        (self.impact.abs() - 1.96 * self.impact_se).max(0.0) * unit_weight(self.unit)
    }
}

/// What one unit of an impact is worth when findings are ranked.
pub fn unit_weight(unit: &str) -> f64 {
    match unit {
        "orders" => 10.0,
        "sessions" | "visitors" => 1.0,
        "product views" => 0.3,
        _ => 0.1,
    }
}

/// The unit of a metric's impact.
fn unit_of(metric: &str) -> &'static str {
    if metric == "visitors" {
        "visitors"
    } else if metric.starts_with("event:")
        || metric.starts_with("error:")
        || metric.starts_with("transition:")
    {
        "events"
    } else if metric.starts_with("product_views:") {
        "product views"
    } else if metric.ends_with(">order")
        || metric.starts_with("product_conversion:")
        || metric.starts_with("pair:")
    {
        "orders"
    } else {
        "sessions"
    }
}

/// The weekdays of a baseline, and of the days the current figures cover,
/// for a baseline adjusted to the current span's weekday mix.
struct Season<'a> {
    /// Weekday of each baseline entry (aligned with the baseline).
    base: Vec<Weekday>,
    /// Date of each baseline entry (aligned with the baseline).
    base_days: Vec<NaiveDate>,
    /// The current span's days: weekday and statistics.
    cur: Vec<(Weekday, &'a Stats)>,
}

fn wd_index(w: Weekday) -> usize {
    w.num_days_from_monday() as usize
}

/// Weekday factors (1 = an average day) of a daily series, shrunk toward 1
/// by how much of the weekdays' differences noise explains (positive-part
/// James–Stein over the 7 weekdays); None unless every weekday has 3 days
/// or more, or when noise explains all of it.
fn weekday_factors(hist: &[f64], wds: &[Weekday]) -> Option<([f64; 7], f64)> {
    let n = hist.len() as f64;
    let mean = hist.iter().sum::<f64>() / n.max(1.0);
    if mean <= 0.0 || hist.len() != wds.len() {
        return None;
    }
    let (mut sum, mut cnt) = ([0.0f64; 7], [0usize; 7]);
    for (x, w) in hist.iter().zip(wds) {
        sum[wd_index(*w)] += x;
        cnt[wd_index(*w)] += 1;
    }
    if cnt.iter().any(|c| *c < 3) {
        return None;
    }
    let means: [f64; 7] = std::array::from_fn(|i| sum[i] / cnt[i] as f64);
    let within = hist
        .iter()
        .zip(wds)
        .map(|(x, w)| (x - means[wd_index(*w)]).powi(2))
        .sum::<f64>()
        / (n - 7.0).max(1.0);
    let noise = within.max(mean) / (n / 7.0);
    let between = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>();
    let lambda = if between > 0.0 {
        (1.0 - 4.0 * noise / between).max(0.0)
    } else {
        0.0
    };
    if lambda <= 0.0 {
        return None;
    }
    let factors = std::array::from_fn(|i| (1.0 + lambda * (means[i] / mean - 1.0)).max(0.05));
    Some((factors, lambda))
}

/// The baseline rate expected for the current span's weekday mix: each
/// weekday's pooled rate, shrunk toward the overall rate as noise explains
/// their differences, weighted by the current days' sizes. None unless
/// every weekday has 3 baseline days or more. With it, the inverse of the
/// estimate's effective sample size (a weekday's rate rests on fewer
/// sessions than the whole baseline).
fn weekday_rate(key: &Key, base: &[&Stats], season: &Season, p0: f64) -> Option<(f64, f64)> {
    let (mut k, mut n, mut days) = ([0.0f64; 7], [0.0f64; 7], [0usize; 7]);
    for (b, w) in base.iter().zip(&season.base) {
        days[wd_index(*w)] += 1;
        if let Some(c) = b.cells.get(key) {
            k[wd_index(*w)] += c.k;
            n[wd_index(*w)] += c.n;
        }
    }
    if days.iter().any(|d| *d < 3) || n.iter().any(|x| *x <= 0.0) {
        return None;
    }
    let rates: [f64; 7] = std::array::from_fn(|i| k[i] / n[i]);
    let noise = (0..7).map(|i| p0 * (1.0 - p0) / n[i]).sum::<f64>() / 7.0;
    let between = rates.iter().map(|r| (r - p0).powi(2)).sum::<f64>();
    let lambda = if between > 0.0 {
        (1.0 - 4.0 * noise / between).max(0.0)
    } else {
        0.0
    };
    if lambda <= 0.0 {
        return None;
    }
    let bn: f64 = n.iter().sum();
    let (mut num, mut inv, mut den) = (0.0, 0.0, 0.0);
    for (w, st) in &season.cur {
        let cn = st.cells.get(key).map_or(0.0, |c| c.n);
        let i = wd_index(*w);
        num += cn * (p0 + lambda * (rates[i] - p0));
        inv += cn * ((1.0 - lambda).powi(2) / bn + lambda * lambda / n[i]);
        den += cn;
    }
    (den > 0.0).then(|| (num / den, inv / den))
}

/// Benjamini–Hochberg over one family of tests: the findings whose p-value
/// is at most `fdr · rank / tests` for the largest such rank, that are also
/// notable and reach [`Z_MIN`]. `tests` is the family's size (at least the
/// findings given; every test performed, notable or not, counts).
fn benjamini_hochberg(mut fs: Vec<Finding>, fdr: f64, tests: usize) -> Vec<Finding> {
    let m = tests.max(fs.len()).max(1);
    fs.sort_by(|a, b| {
        a.p.partial_cmp(&b.p)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.metric.cmp(&b.metric))
            .then_with(|| a.segment.cmp(&b.segment))
    });
    let mut keep = 0;
    for (i, f) in fs.iter().enumerate() {
        if f.p <= fdr * (i + 1) as f64 / m as f64 {
            keep = i + 1;
        }
    }
    fs.truncate(keep);
    let threshold = fdr * keep as f64 / m as f64;
    fs.retain(|f| f.notable && f.z.abs() >= Z_MIN);
    for f in &mut fs {
        if let Some(o) = f.facts.as_object_mut() {
            o.insert(
                "multiple_testing".into(),
                json!({"method": "benjamini-hochberg", "fdr": fdr, "tests": m,
                       "p_threshold": threshold}),
            );
        }
    }
    fs
}

/// Whether a metric is tested (the others are parts of other metrics).
fn testable(metric: &str) -> bool {
    !(metric.starts_with("transitions_from:")
        || metric.starts_with("bought:")
        || metric.starts_with("pair:")
        || metric.starts_with("error_at:")
        || metric == "orders"
        || metric == "revenue"
        || metric == "revenue_sq")
}

fn kind_of(metric: &str) -> &'static str {
    if metric == "sessions" || metric == "visitors" || metric.starts_with("event:") {
        "volume"
    } else if metric.starts_with("funnel:") {
        "funnel"
    } else if metric.starts_with("transition:") || metric.starts_with("loop:") {
        "transition"
    } else if metric.starts_with("error") {
        "errors"
    } else {
        "product_trend"
    }
}

/// Two-sided p-value of a z score.
fn p_value(z: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 for erfc(|z|/√2).
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (poly * (-x * x).exp()).clamp(0.0, 1.0)
}

fn pct(x: f64) -> String {
    let v = x * 100.0;
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}%")
    } else {
        format!("{v:.1}%")
    }
}

fn seg_phrase(seg: &str) -> String {
    match seg.split_once('=') {
        Some(("device_type", d)) => format!(" on {d}"),
        Some(("traffic_source", "direct")) => " from direct traffic".into(),
        Some(("traffic_source", s)) => format!(" from {s}"),
        Some(("visitor_type", v)) => format!(" among {v} visitors"),
        Some(("channel", c)) => format!(" in the {c} channel"),
        _ => String::new(),
    }
}

fn seg_title(seg: &str) -> String {
    match seg.split_once('=') {
        Some(("device_type", d)) => format!("{}: ", enrich_cap(d)),
        Some(("traffic_source", s)) => format!("From {s}: "),
        Some(("visitor_type", v)) => format!("{} visitors: ", enrich_cap(v)),
        Some(("channel", c)) => format!("{}: ", enrich_cap(c)),
        _ => String::new(),
    }
}

fn enrich_cap(s: &str) -> String {
    crate::ai::offline::capitalize(s)
}

fn step_name(s: &str) -> &str {
    match s {
        "view" => "product view",
        other => other,
    }
}

/// How a period (or the days a finding covers) is tested.
struct TestCtx<'a> {
    /// "on 2026-11-25", "in the week of 2026-11-23 (its 3 complete days so
    /// far)", "from 2026-11-25 to 2026-11-27".
    when: String,
    /// What the baseline is: "over the previous 28 days", "over the same
    /// weekdays of the previous 4 weeks", …
    baseline: String,
    /// Counts are compared as averages per day (any period longer than a
    /// day, and every span).
    per_day: bool,
    /// Baseline periods (or days) needed for a test.
    min_base: usize,
    /// The complete days the current figures cover, `[start, end)`.
    span: (NaiveDate, NaiveDate),
    /// Product names by id.
    names: &'a HashMap<String, String>,
    /// Whether new vs returning visitors can be compared: not while the
    /// baseline reaches into the lake's first [`WARM_UP_DAYS`] (a visitor's
    /// visits before the data began are unknown, so early visitors look
    /// new and "new visitors fell" would only say that history grew).
    visitor_type: bool,
    /// Weekdays of the baseline and the current days, when the baseline is
    /// made of single days (None: it is made of the same elapsed spans of
    /// earlier periods, whose weekdays already match).
    season: Option<Season<'a>>,
    /// Days with a finding, per metric and segment: left out of later
    /// baselines of the same metric and segment.
    flagged: Option<&'a Flagged>,
}

/// Days with a finding, per metric and segment.
type Flagged = HashMap<Key, BTreeSet<NaiveDate>>;

impl<'a> TestCtx<'a> {
    /// The same test over other weekdays and left-out days.
    fn with<'b>(&self, season: Option<Season<'b>>, flagged: Option<&'b Flagged>) -> TestCtx<'b>
    where
        'a: 'b,
    {
        TestCtx {
            when: self.when.clone(),
            baseline: self.baseline.clone(),
            per_day: self.per_day,
            min_base: self.min_base,
            span: self.span,
            names: self.names,
            visitor_type: self.visitor_type,
            season,
            flagged,
        }
    }
}

/// Test one metric against a baseline of single days, leaving out the
/// baseline days that are outliers themselves (an incident a few days ago
/// must not hide one still going on): see [`robust_mask`].
fn test_metric(key: &Key, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Option<Finding> {
    let Some(season) = ctx.season.as_ref() else {
        return test_metric_on(key, cur, base, ctx);
    };
    let mut keep = robust_mask(key, base, &season.base);
    if let Some(days) = ctx.flagged.and_then(|f| f.get(key)) {
        for (k, d) in keep.iter_mut().zip(&season.base_days) {
            if days.contains(d) {
                *k = false;
            }
        }
    }
    let excluded = keep.iter().filter(|k| !**k).count();
    if excluded == 0 {
        return test_metric_on(key, cur, base, ctx);
    }
    let kept = |i: usize| keep[i];
    let ctx2 = ctx.with(
        Some(Season {
            base: (0..base.len())
                .filter(|i| kept(*i))
                .map(|i| season.base[i])
                .collect(),
            base_days: (0..base.len())
                .filter(|i| kept(*i))
                .map(|i| season.base_days[i])
                .collect(),
            cur: season.cur.clone(),
        }),
        None,
    );
    let base2: Vec<&Stats> = (0..base.len())
        .filter(|i| kept(*i))
        .map(|i| base[i])
        .collect();
    let mut f = test_metric_on(key, cur, &base2, &ctx2)?;
    if let Some(o) = f.facts.as_object_mut() {
        o.insert("baseline_days_left_out".into(), json!(excluded));
    }
    Some(f)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Baseline days to keep for one metric: a day is left out when it is far
/// from its weekday's typical value (counts: the median of the same
/// weekdays, with 3 or more of them, else of all days; rates: the other
/// same weekdays pooled) — beyond 4 Poisson/binomial standard errors *and*
/// by the minimum effect size. Fewer than half of the days are left out
/// (else all are kept).
fn robust_mask(key: &Key, base: &[&Stats], wds: &[Weekday]) -> Vec<bool> {
    let n = base.len();
    let mut keep = vec![true; n];
    if n < 7 || wds.len() != n {
        return keep;
    }
    let cells: Vec<Cell> = base
        .iter()
        .map(|b| b.cells.get(key).copied().unwrap_or_default())
        .collect();
    let same = |i: usize| -> Vec<usize> {
        let v: Vec<usize> = (0..n).filter(|j| wds[*j] == wds[i]).collect();
        if v.len() >= 3 {
            v
        } else {
            (0..n).collect()
        }
    };
    if is_count(&key.0) {
        let x: Vec<f64> = cells.iter().map(|c| c.k).collect();
        let reference: Vec<f64> = (0..n)
            .map(|i| median(&same(i).iter().map(|j| x[*j]).collect::<Vec<_>>()))
            .collect();
        for i in 0..n {
            let r = reference[i].max(1.0);
            let d = (x[i] - reference[i]).abs();
            if d > 4.0 * r.sqrt() && d > MIN_CHANGE * r {
                keep[i] = false;
            }
        }
    } else {
        for i in 0..n {
            let c = cells[i];
            if c.n <= 0.0 {
                continue;
            }
            let (k, m) = same(i)
                .iter()
                .filter(|j| **j != i)
                .fold((0.0, 0.0), |(k, m), j| (k + cells[*j].k, m + cells[*j].n));
            if m < 20.0 {
                continue;
            }
            let p = k / m;
            let se = (p * (1.0 - p) / c.n).sqrt().max(1e-9);
            let d = (c.k / c.n - p).abs();
            if d / se > 4.0 && d >= (MIN_CHANGE * p).max(0.03) {
                keep[i] = false;
            }
        }
    }
    if keep.iter().filter(|k| !**k).count() * 2 >= n {
        return vec![true; n];
    }
    keep
}

/// Two-sided p-value of `k` hits in `m` trials of probability `q`
/// (binomial, exact).
fn binomial_p(k: f64, m: f64, q: f64) -> f64 {
    let (k, m) = (k.round() as u64, m.round() as u64);
    if m == 0 {
        return 1.0;
    }
    let q = q.clamp(1e-12, 1.0 - 1e-12);
    let mut pmf = (m as f64 * (1.0 - q).ln()).exp();
    let (mut lower, mut upper) = (0.0, 0.0);
    for i in 0..=m {
        if i <= k {
            lower += pmf;
        }
        if i >= k {
            upper += pmf;
        }
        pmf *= (m - i) as f64 / (i + 1) as f64 * q / (1.0 - q);
    }
    (2.0 * lower.min(upper)).min(1.0)
}

/// Two-sided p-value of a count `k` where `lambda` is expected (Poisson,
/// exact).
fn poisson_p(k: f64, lambda: f64) -> f64 {
    let k = k.round() as u64;
    let lambda = lambda.max(1e-9);
    let mut pmf = (-lambda).exp();
    let mut below = 0.0;
    for i in 0..k {
        below += pmf;
        pmf *= lambda / (i + 1) as f64;
    }
    let lower = below + pmf;
    let upper = (1.0 - below).max(pmf);
    (2.0 * lower.min(upper)).min(1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Two-sided p-value of `k` hits in `n` trials of probability `p`
/// (binomial, exact, summed outward from `k` in log space).
fn binomial_tail_p(k: f64, n: f64, p: f64) -> f64 {
    let (k, n) = (k.round().max(0.0), n.round().max(0.0));
    if n <= 0.0 || k > n {
        return 1.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let ln_pmf = |i: f64| {
        ln_gamma(n + 1.0) - ln_gamma(i + 1.0) - ln_gamma(n - i + 1.0)
            + i * p.ln()
            + (n - i) * (1.0 - p).ln()
    };
    let at_k = ln_pmf(k).exp();
    let tail = |up: bool| {
        let mut sum = at_k;
        let mut pmf = at_k;
        let mut i = k;
        loop {
            // pmf(i+1)/pmf(i) = (n-i)/(i+1)·p/(1-p); pmf(i-1)/pmf(i) = i/(n-i+1)·(1-p)/p
            if up {
                if i >= n {
                    break;
                }
                pmf *= (n - i) / (i + 1.0) * p / (1.0 - p);
                i += 1.0;
            } else {
                if i <= 0.0 {
                    break;
                }
                pmf *= i / (n - i + 1.0) * (1.0 - p) / p;
                i -= 1.0;
            }
            sum += pmf;
            if pmf < sum * 1e-15 {
                break;
            }
        }
        sum
    };
    let one = if k >= n * p { tail(true) } else { tail(false) };
    (2.0 * one).min(1.0)
}

/// The |z| of a two-sided p-value.
fn z_of_p(p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if p_value(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// Test one metric of a period against its baseline: None when it cannot
/// be tested (too little support or baseline), else the test as a finding
/// (its p-value, and whether the change is large enough to matter); the
/// caller corrects the period's tests for multiple comparisons.
fn test_metric_on(key: &Key, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Option<Finding> {
    let (metric, seg) = key;
    let names = ctx.names;
    let min_base = ctx.min_base;
    let baseline_label = ctx.baseline.as_str();
    let c = cur.cells.get(key).copied().unwrap_or_default();
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let samples = cur.samples.get(key).cloned().unwrap_or_default();
    if !testable(metric) {
        return None;
    }
    if base.len() < min_base || (!ctx.visitor_type && seg.starts_with("visitor_type=")) {
        return None;
    }
    if is_count(metric) {
        // Periods longer than a day compare their average per complete day
        // (a period in progress: over its complete days only).
        let per_day = |st: &Stats, k: f64| {
            if ctx.per_day {
                k / st.days.max(1.0)
            } else {
                k
            }
        };
        let hist: Vec<f64> = base
            .iter()
            .map(|b| per_day(b, b.cells.get(key).map_or(0.0, |c| c.k)))
            .collect();
        let c = Cell {
            k: per_day(cur, c.k),
            n: c.n,
        };
        // Weekday seasonality: baseline days scaled to an average day, the
        // expectation scaled to the current days' weekdays.
        let factors = ctx
            .season
            .as_ref()
            .and_then(|s| weekday_factors(&hist, &s.base).map(|f| (s, f)));
        // The weekday factor is estimated from a few days of each weekday:
        // its own uncertainty widens the test (by λ² / days of the weekday).
        let (hist, scale, widen) = match factors {
            Some((s, (f, lambda))) => {
                let same: f64 = s
                    .cur
                    .iter()
                    .map(|(w, _)| s.base.iter().filter(|b| *b == w).count() as f64)
                    .sum::<f64>()
                    / s.cur.len().max(1) as f64;
                (
                    hist.iter()
                        .zip(&s.base)
                        .map(|(x, w)| x / f[wd_index(*w)])
                        .collect::<Vec<f64>>(),
                    s.cur.iter().map(|(w, _)| f[wd_index(*w)]).sum::<f64>()
                        / s.cur.len().max(1) as f64,
                    1.0 + lambda * lambda / same.max(1.0),
                )
            }
            None => (hist, 1.0, 1.0),
        };
        let n = hist.len() as f64;
        let mean = hist.iter().sum::<f64>() / n * scale;
        let var = hist.iter().map(|x| (x * scale - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let se = (var.max(mean).max(1.0) * widen).sqrt();
        let z = (c.k - mean) / se;
        // Small counts in the Poisson regime: the exact tail, not the
        // normal one.
        let z = if !ctx.per_day && factors.is_none() && var <= mean && mean < 100.0 {
            z_of_p(poisson_p(c.k, mean)).copysign(z)
        } else {
            z
        };
        let change = (c.k - mean).abs() / mean.max(1.0);
        if c.k.max(mean) < 10.0 {
            return None;
        }
        let notable = change >= MIN_CHANGE;
        let span_days = if ctx.per_day { cur.days.max(1.0) } else { 1.0 };
        let dir = if z > 0.0 { "rose" } else { "fell" };
        let (what, products) = if metric == "sessions" {
            (format!("Sessions{}", seg_phrase(seg)), Vec::new())
        } else if metric == "visitors" {
            ("Visitors".to_string(), Vec::new())
        } else if let Some(k) = metric.strip_prefix("event:") {
            (format!("\"{k}\" events"), Vec::new())
        } else if let Some(k) = metric.strip_prefix("error:") {
            let at = failing_events(cur, seg, Some(k))
                .into_iter()
                .next()
                .map(|(_, step, _)| format!(" {}", step_phrase(&step)))
                .unwrap_or_default();
            (format!("\"{k}\" failures{at}"), Vec::new())
        } else {
            (metric.clone(), Vec::new())
        };
        let (unit, avg) = if ctx.per_day {
            (" per day", "an average of ")
        } else {
            ("", "")
        };
        let title = format!(
            "{}{} {dir} to {:.0}{unit} (typically {:.0})",
            seg_title(seg),
            what,
            c.k,
            mean
        );
        let adjusted = if factors.is_some() {
            ", for the same weekdays"
        } else {
            ""
        };
        let description = format!(
            "{what} {dir} to {avg}{:.0}{unit} {}, against a typical {:.0} per day {}{adjusted} (z = {:.1}).",
            c.k, ctx.when, mean, baseline_label, z
        );
        let mut facts = json!({"value": (c.k * 10.0).round() / 10.0, "baseline_mean": (mean * 10.0).round() / 10.0,
                          "baseline_sd": (var.sqrt() * 10.0).round() / 10.0, "baseline_periods": hist.len(),
                          "weekday_adjusted": factors.is_some()});
        if let Some(k) = metric.strip_prefix("error:") {
            facts["failing_events"] = failing_json(&failing_events(cur, seg, Some(k)));
        }
        return Some(Finding {
            kind: kind_of(metric),
            metric: metric.clone(),
            segment: seg.clone(),
            z,
            support: c.k as i64,
            product_ids: products,
            facts,
            title,
            description,
            samples: if z > 0.0 { samples.0 } else { samples.1 },
            children: Vec::new(),
            own: true,
            span: ctx.span,
            p: p_value(z),
            notable,
            impact: (c.k - mean) * span_days,
            impact_se: se * span_days,
            unit: unit_of(metric),
        });
    }
    // Rates: two-proportion z-test against the pooled baseline.
    let (mut bk, mut bn) = (0.0, 0.0);
    for b in base {
        if let Some(x) = b.cells.get(key) {
            bk += x.k;
            bn += x.n;
        }
    }
    if c.n < 20.0 || bn < 60.0 {
        return None;
    }
    let p1 = c.k / c.n;
    let pooled = bk / bn;
    // Weekday seasonality: the rate expected for these days' weekdays.
    let seasonal = ctx
        .season
        .as_ref()
        .and_then(|s| weekday_rate(key, base, s, pooled));
    let seasonal_p0 = seasonal.map(|(p, _)| p);
    let (p0, se) = match seasonal {
        Some((p0, inv_bn)) => (p0, (p0 * (1.0 - p0) * (1.0 / c.n + inv_bn)).sqrt()),
        None => {
            let p = (c.k + bk) / (c.n + bn);
            (pooled, (p * (1.0 - p) * (1.0 / c.n + 1.0 / bn)).sqrt())
        }
    };
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let z = (p1 - p0) / se;
    // Few hits (or few misses): the exact conditional test of the rarer
    // outcome — given all of them, how many fell on the current days
    // (binomial with the current days' expected share).
    let (hits, misses) = (c.k + bk, (c.n - c.k) + (bn - bk));
    // Skew: the exact binomial tail of the current days at the baseline
    // rate; the test keeps the larger p-value of the two (the normal one
    // carries the baseline's own uncertainty).
    let z_exact = z_of_p(binomial_tail_p(c.k, c.n, p0)).copysign(z);
    let z = if z_exact.abs() < z.abs() { z_exact } else { z };
    let z = if hits.min(misses) <= 300.0 {
        let (k, total, rate, base_k) = if hits <= misses {
            (c.k, hits, p0, bk)
        } else {
            (c.n - c.k, misses, 1.0 - p0, bn - bk)
        };
        let q = if seasonal_p0.is_some() && base_k > 0.0 && rate > 0.0 {
            c.n * rate / (c.n * rate + base_k)
        } else {
            c.n / (c.n + bn)
        };
        let zc = z_of_p(binomial_p(k, total, q)).copysign(z);
        if zc.abs() < z.abs() {
            zc
        } else {
            z
        }
    } else {
        z
    };
    let change = (p1 - p0).abs() / p0.max(0.02);
    let notable = change >= MIN_CHANGE && (p1 - p0).abs() >= 0.03;
    let baseline_label = if seasonal.is_some() {
        format!("{baseline_label}, for the same weekdays")
    } else {
        baseline_label.to_string()
    };
    let baseline_label = baseline_label.as_str();
    let dir = if z > 0.0 { "rose" } else { "fell" };
    let when = ctx.when.as_str();
    let (title, description, products) = if let Some(rest) = metric.strip_prefix("funnel:") {
        let (a, b) = rest.split_once('>').unwrap_or((rest, ""));
        (
            format!(
                "{}{} → {} conversion {dir} to {} (from {})",
                seg_title(seg),
                enrich_cap(step_name(a)),
                step_name(b),
                pct(p1),
                pct(p0)
            ),
            format!(
                "Conversion from {} to {}{} {dir} to {} ({:.0} of {:.0} sessions) {when}, from {} {} (z = {:.1}).",
                step_name(a),
                step_name(b),
                seg_phrase(seg),
                pct(p1),
                c.k,
                c.n,
                pct(p0),
                baseline_label,
                z
            ),
            Vec::new(),
        )
    } else if metric == "error_sessions" {
        // Name the cause: the failing events and the step they occur at.
        let failing = failing_events(cur, seg, None);
        let named: Vec<String> = failing
            .iter()
            .take(2)
            .map(|(e, step, _)| format!("\"{e}\" {}", step_phrase(step)))
            .collect();
        let cause = if named.is_empty() {
            String::new()
        } else {
            format!(": {}", named.join(" and "))
        };
        let detail: Vec<String> = failing
            .iter()
            .take(3)
            .map(|(e, step, k)| format!("\"{e}\" {} in {k:.0} sessions", step_phrase(step)))
            .collect();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" The failures: {}.", detail.join(", "))
        };
        (
            format!(
                "{}Sessions with failures {dir} to {} (from {}){cause}",
                seg_title(seg),
                pct(p1),
                pct(p0)
            ),
            format!(
                "{} of sessions{} hit a failure ({:.0} of {:.0}) {when}, against {} {} (z = {:.1}).{detail}",
                pct(p1),
                seg_phrase(seg),
                c.k,
                c.n,
                pct(p0),
                baseline_label,
                z
            ),
            Vec::new(),
        )
    } else if let Some(rest) = metric.strip_prefix("transition:") {
        let (a, b) = rest.split_once('>').unwrap_or((rest, ""));
        (
            format!("\"{a}\" → \"{b}\" {dir} to {} (from {})", pct(p1), pct(p0)),
            format!(
                "\"{a}\" was followed by \"{b}\" in {} of cases ({:.0} of {:.0}) {when}, against {} {} (z = {:.1}).",
                pct(p1),
                c.k,
                c.n,
                pct(p0),
                baseline_label,
                z
            ),
            Vec::new(),
        )
    } else if let Some(k) = metric.strip_prefix("loop:") {
        (
            format!("\"{k}\" repeated in a loop in {} of sessions (from {})", pct(p1), pct(p0)),
            format!(
                "{} of sessions with \"{k}\" repeated it three or more times in a row ({:.0} of {:.0}) {when}, against {} {} (z = {:.1}).",
                pct(p1),
                c.k,
                c.n,
                pct(p0),
                baseline_label,
                z
            ),
            Vec::new(),
        )
    } else if let Some(pid) = metric.strip_prefix("product_views:") {
        let name = name_of(pid);
        (
            format!(
                "Views of {name} {dir} to {} of sessions (from {})",
                pct(p1),
                pct(p0)
            ),
            format!(
                "{name} was viewed in {:.0} of {:.0} sessions ({}) {when}, against {} {} (z = {:.1}).",
                c.k,
                c.n,
                pct(p1),
                pct(p0),
                baseline_label,
                z
            ),
            vec![pid.to_string()],
        )
    } else if let Some(pid) = metric.strip_prefix("product_conversion:") {
        let name = name_of(pid);
        let t = if z < 0.0 {
            format!(
                "{name}: viewed but not bought — conversion {dir} to {} (from {})",
                pct(p1),
                pct(p0)
            )
        } else {
            format!(
                "{name}: view → order conversion {dir} to {} (from {})",
                pct(p1),
                pct(p0)
            )
        };
        (
            t,
            format!(
                "{name} was viewed in {:.0} sessions and bought in {:.0} ({}) {when}, against {} {} (z = {:.1}).",
                c.n,
                c.k,
                pct(p1),
                pct(p0),
                baseline_label,
                z
            ),
            vec![pid.to_string()],
        )
    } else {
        return None;
    };
    let mut facts = json!({"value": {"k": c.k, "n": c.n, "rate": (p1 * 10000.0).round() / 10000.0},
                  "baseline": {"k": bk, "n": bn, "rate": (p0 * 10000.0).round() / 10000.0, "periods": base.len(),
                               "weekday_adjusted": seasonal.is_some()}});
    if metric == "error_sessions" {
        facts["failing_events"] = failing_json(&failing_events(cur, seg, None));
    }
    Some(Finding {
        kind: kind_of(metric),
        metric: metric.clone(),
        segment: seg.clone(),
        z,
        support: c.n as i64,
        product_ids: products,
        facts,
        title,
        description,
        samples: if z > 0.0 { samples.0 } else { samples.1 },
        children: Vec::new(),
        own: true,
        span: ctx.span,
        p: p_value(z),
        notable,
        impact: (p1 - p0) * c.n,
        impact_se: se * c.n,
        unit: unit_of(metric),
    })
}

/// The failing events as evidence.
fn failing_json(failing: &[(String, String, f64)]) -> Value {
    Value::Array(
        failing
            .iter()
            .take(5)
            .map(|(e, step, k)| json!({"event": e, "step": step, "sessions": k}))
            .collect(),
    )
}

/// Products bought together more often than chance (no baseline needed).
fn pairs(cur: &Stats, ctx: &TestCtx) -> Vec<Finding> {
    let names = ctx.names;
    let orders = cur
        .cells
        .get(&("orders".to_string(), String::new()))
        .map_or(0.0, |c| c.k);
    let mut out = Vec::new();
    if orders < 20.0 {
        return out;
    }
    for ((m, seg), c) in &cur.cells {
        let Some(rest) = m.strip_prefix("pair:") else {
            continue;
        };
        let Some((a, b)) = rest.split_once('|') else {
            continue;
        };
        let get = |p: &str| {
            cur.cells
                .get(&(format!("bought:{p}"), String::new()))
                .map_or(0.0, |c| c.k)
        };
        let expected = get(a) * get(b) / orders;
        if expected <= 0.0 || c.k < 5.0 {
            continue;
        }
        let z = (c.k - expected) / expected.sqrt();
        let lift = c.k / expected;
        if z <= 0.0 {
            continue;
        }
        let notable = lift >= 2.0;
        let (na, nb) = (
            names.get(a).cloned().unwrap_or_else(|| a.to_string()),
            names.get(b).cloned().unwrap_or_else(|| b.to_string()),
        );
        out.push(Finding {
            kind: "product_trend",
            metric: m.clone(),
            segment: seg.clone(),
            z,
            support: c.k as i64,
            product_ids: vec![a.to_string(), b.to_string()],
            facts: json!({"orders_with_both": c.k, "expected": (expected * 10.0).round() / 10.0,
                          "lift": (lift * 10.0).round() / 10.0, "orders": orders}),
            title: format!("{na} and {nb} are bought together ({lift:.1}× chance)"),
            description: format!(
                "{na} and {nb} were bought together in {:.0} of {:.0} orders {}, {lift:.1} times more often than chance would give ({expected:.1}; z = {z:.1}).",
                c.k,
                orders,
                ctx.when
            ),
            samples: cur.samples.get(&(m.clone(), seg.clone())).map(|s| s.0.clone()).unwrap_or_default(),
            children: Vec::new(),
            own: true,
            span: ctx.span,
            p: p_value(z),
            notable,
            impact: c.k - expected,
            impact_se: expected.sqrt(),
            unit: "orders",
        });
    }
    out
}

/// A `patterns` row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PatternRow {
    org_id: String,
    pattern_id: String,
    period_kind: String,
    #[serde(deserialize_with = "de_days")]
    period_start: i32,
    #[serde(deserialize_with = "de_days")]
    period_end: i32,
    kind: String,
    segment: Option<String>,
    title: String,
    description: String,
    product_ids: Vec<String>,
    support: i64,
    significance: Option<f64>,
    evidence: String,
    provider: String,
    model: String,
    #[serde(deserialize_with = "de_micros")]
    created_at: i64,
    /// The period is not over yet (null in rows written before the column
    /// existed).
    #[serde(default)]
    provisional: Option<bool>,
}

/// A date read back as days since the epoch (Arrow's JSON writes text).
fn de_days<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i32, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .map(|x| x as i32)
            .ok_or_else(|| serde::de::Error::custom("bad date")),
        Value::String(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .map(days_since_epoch)
            .map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("bad date {other}"))),
    }
}

/// A timestamp read back as microseconds.
fn de_micros<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(with = "crow_lake::batch::ts_micros")] DateTime<Utc>);
    W::deserialize(d).map(|w| w.0.timestamp_micros())
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(d))
        .num_days() as i32
}

fn date_of(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .unwrap_or_default()
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
        .unwrap_or_default()
}

/// The statistical finding as a pattern row (description not yet by the
/// provider).
fn to_row(
    org: &str,
    period: &Period,
    f: &Finding,
    sid_to_iid: &HashMap<String, String>,
    provisional: bool,
) -> PatternRow {
    let samples: Vec<&String> = f
        .samples
        .iter()
        .filter_map(|s| sid_to_iid.get(s))
        .take(5)
        .collect();
    let evidence = json!({
        "metric": f.metric,
        "segment": if f.segment.is_empty() { Value::Null } else { json!(f.segment) },
        "period": {"kind": period.kind, "start": period.start.to_string(), "end": period.end.to_string()},
        "provisional": provisional,
        "span": {"start": f.span.0.to_string(), "end": f.span.1.to_string()},
        "complete_days": (f.span.1 - f.span.0).num_days(),
        "statistics": f.facts,
        "z": (f.z * 100.0).round() / 100.0,
        "p_value": p_value(f.z),
        "impact": {"unit": f.unit, "estimate": (f.impact * 10.0).round() / 10.0,
                   "low": ((f.impact - 1.96 * f.impact_se) * 10.0).round() / 10.0,
                   "high": ((f.impact + 1.96 * f.impact_se) * 10.0).round() / 10.0},
        "sample_interaction_ids": samples,
        "sample_session_ids": f.samples.iter().take(5).collect::<Vec<_>>(),
        "from_periods": f.children,
    });
    PatternRow {
        org_id: org.to_string(),
        pattern_id: format!(
            "pat_{}",
            &sha256_hex(
                format!(
                    "{org}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
                    period.kind, period.start, f.metric, f.segment
                )
                .as_bytes()
            )[..26]
        ),
        period_kind: period.kind.to_string(),
        period_start: days_since_epoch(period.start),
        period_end: days_since_epoch(period.end),
        kind: f.kind.to_string(),
        segment: (!f.segment.is_empty()).then(|| f.segment.clone()),
        title: f.title.clone(),
        description: described(f),
        product_ids: f.product_ids.clone(),
        support: f.support,
        significance: Some((f.z.abs() * 100.0).round() / 100.0),
        evidence: evidence.to_string(),
        provider: "offline".into(),
        model: crate::ai::offline::MODEL.into(),
        created_at: Utc::now().timestamp_micros(),
        provisional: Some(provisional),
    }
}

/// A finding's description, led by its impact and the segment it hit when
/// the impact's 95% interval excludes no change ("About 23 fewer orders
/// than typical on mobile (95% interval: 12 to 34). Conversion from …").
fn described(f: &Finding) -> String {
    let (low, high) = (f.impact - 1.96 * f.impact_se, f.impact + 1.96 * f.impact_se);
    if f.impact == 0.0 || (low < 0.0) != (high < 0.0) {
        return f.description.clone();
    }
    let (more, a, b) = if f.impact > 0.0 {
        ("more", low, high)
    } else {
        ("fewer", -high, -low)
    };
    format!(
        "About {:.0} {more} {} than typical{} (95% interval: {a:.0} to {b:.0}). {}",
        f.impact.abs(),
        f.unit,
        seg_phrase(&f.segment),
        f.description
    )
}

/// A finding of a part (child period), as its parent re-tests it: which
/// metric and segment, over which days, in which direction.
#[derive(Debug, Clone)]
struct ChildRef {
    metric: String,
    segment: String,
    span: (NaiveDate, NaiveDate),
    z: f64,
    /// "day:2026-11-25", "week:2026-11-23", …
    label: String,
    /// A trend finding (the week to a day), not the period's own test.
    trend: bool,
}

impl ChildRef {
    fn of_row(r: &PatternRow) -> Option<ChildRef> {
        let ev: Value = serde_json::from_str(&r.evidence).ok()?;
        let metric = ev["metric"].as_str()?.to_string();
        let z = ev["z"].as_f64()?;
        let (ps, pe) = (date_of(r.period_start), date_of(r.period_end));
        let day = |v: &Value| {
            v.as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        };
        // Rows written before spans existed cover their whole period.
        let span = (
            day(&ev["span"]["start"]).unwrap_or(ps),
            day(&ev["span"]["end"]).unwrap_or(pe),
        );
        Some(ChildRef {
            metric,
            segment: r.segment.clone().unwrap_or_default(),
            span,
            z,
            label: format!("{}:{}", r.period_kind, ps),
            trend: ev["statistics"]["trend"].is_object(),
        })
    }
}

/// "on 2026-11-25", "from 2026-11-25 to 2026-11-27" (`[a, b)`).
fn span_phrase(a: NaiveDate, b: NaiveDate) -> String {
    let last = b.pred_opt().unwrap_or(a);
    if last <= a {
        format!("on {a}")
    } else {
        format!("from {a} to {last}")
    }
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
        window_start: Some(window.start),
        window_end: Some(window.end),
        ..Report::default()
    };
    if days.is_empty() {
        tracing::info!(%horizon, "patterns: no complete day in the window");
        return Ok(report);
    }
    let weeks: BTreeSet<Period> = days.iter().map(|d| Period::week(*d)).collect();
    let months: BTreeSet<Period> = days.iter().map(|d| Period::month(*d)).collect();
    let years: BTreeSet<Period> = days.iter().map(|d| Period::year(*d)).collect();
    // Every complete day: the periods' baselines, and the parents' own
    // evidence for their parts' findings (a year's, all time's).
    let org_cond = org_filter(opts.org.as_deref());
    let ctx = lake.session().await?;
    progress.phase("reading sessions", 0);
    let sql = format!(
        "SELECT org_id, session_id, channel, CAST(session_date AS VARCHAR) AS session_date, visitor_id,
                device_type, traffic_source, is_returning, timeline
         FROM sessions WHERE session_date < DATE '{horizon}' {org_cond}"
    );
    let mut by_org: BTreeMap<String, Vec<Sess>> = BTreeMap::new();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut sessions_read = 0u64;
    while let Some(b) = stream.next().await {
        let b = b?;
        sessions_read += b.num_rows() as u64;
        progress.inc(b.num_rows() as u64);
        for r in batches_to_rows::<SessionIn>(std::slice::from_ref(&b))? {
            let org = r.org_id.clone();
            if let Some(s) = Sess::from_row(r) {
                by_org.entry(org).or_default().push(s);
            }
        }
    }
    // The scan's order is not stable; samples must be (re-runs are
    // idempotent).
    for v in by_org.values_mut() {
        v.sort_by(|a, b| (a.day, &a.id).cmp(&(b.day, &b.id)));
    }
    report.sessions_read = sessions_read;
    #[derive(Deserialize)]
    struct Ids {
        session_id: String,
        interaction_id: String,
    }
    let sid_to_iid: HashMap<String, String> = batches_to_rows::<Ids>(
        &ctx.sql(&format!(
            "SELECT session_id, interaction_id FROM interactions
             WHERE session_date < DATE '{horizon}' {org_cond}"
        ))
        .await?
        .collect()
        .await?,
    )?
    .into_iter()
    .map(|r| (r.session_id, r.interaction_id))
    .collect();
    #[derive(Deserialize)]
    struct Name {
        product_id: String,
        name: String,
    }
    let names: HashMap<String, String> = batches_to_rows::<Name>(
        &ctx.sql(&format!(
            "SELECT product_id, name FROM products WHERE TRUE {org_cond}"
        ))
        .await?
        .collect()
        .await?,
    )?
    .into_iter()
    .map(|r| (r.product_id, r.name))
    .collect();
    // Child patterns already in the table (parts this run does not
    // recompute, for the roll-ups to re-test).
    let existing: Vec<PatternRow> = batches_to_rows(
        &ctx.sql(&format!(
            "SELECT * FROM patterns WHERE period_kind <> 'all' {org_cond}"
        ))
        .await?
        .collect()
        .await?,
    )?;

    // Each organization's currency: its catalog's most common one (order
    // events carry amounts, the catalog says in what).
    #[derive(Deserialize)]
    struct Currency {
        org_id: String,
        currency: String,
    }
    let currencies: HashMap<String, String> = batches_to_rows::<Currency>(
        &ctx.sql(&format!(
            "SELECT org_id, currency FROM products WHERE currency IS NOT NULL {org_cond} \
             GROUP BY org_id, currency ORDER BY org_id, count(*) DESC, currency"
        ))
        .await?
        .collect()
        .await?,
    )?
    .into_iter()
    .rev()
    .map(|r| (r.org_id, r.currency))
    .collect();

    progress.phase("finding patterns", by_org.len() as u64);
    let mut rows: Vec<PatternRow> = Vec::new();
    let mut story_rows: Vec<stories::StoryRow> = Vec::new();
    let mut orgs_done: Vec<String> = Vec::new();
    for (org, sessions) in &by_org {
        orgs_done.push(org.clone());
        let first_data = sessions.iter().map(|s| s.day).min().unwrap_or(first_day);
        let mut finder = Finder::new(sessions, first_data, horizon, &names, opts.fdr);
        finder.currency = currencies.get(org).cloned();
        // Days before this run's: their findings, from the table.
        let earlier: Vec<PatternRow> = existing
            .iter()
            .filter(|r| r.org_id == *org && date_of(r.period_start) < first_day)
            .cloned()
            .collect();
        finder.flag_rows(&earlier);
        let mut new_rows: BTreeMap<Period, Vec<PatternRow>> = BTreeMap::new();
        let row = |p: &Period, f: &Finding| to_row(org, p, f, &sid_to_iid, p.end > horizon);
        // Days.
        for d in &days {
            let p = Period::day(*d);
            let fs = finder.day(&p);
            new_rows.insert(p, fs.iter().map(|f| row(&p, f)).collect());
        }
        // Weeks and months: their own pooled tests, plus their parts'
        // findings where the period's own data confirms them.
        for (set, child_kind) in [(&weeks, "day"), (&months, "week")] {
            for p in set.iter() {
                let own = finder.own(p);
                let children = child_refs(org, p, child_kind, &existing, &new_rows);
                let fs = finder.merge(p, own, &children);
                new_rows.insert(*p, fs.iter().map(|f| row(p, f)).collect());
            }
        }
        // Years from months, all time from years: confirmed parts only.
        for p in &years {
            let children = child_refs(org, p, "month", &existing, &new_rows);
            let fs = finder.merge(p, Vec::new(), &children);
            new_rows.insert(*p, fs.iter().map(|f| row(p, f)).collect());
        }
        let all = Period {
            kind: "all",
            start: first_data,
            end: horizon.max(first_data + Days::new(1)),
        };
        let children = child_refs(org, &all, "year", &existing, &new_rows);
        let fs = finder.merge(&all, Vec::new(), &children);
        new_rows.insert(
            all,
            fs.iter()
                .map(|f| to_row(org, &all, f, &sid_to_iid, false))
                .collect(),
        );
        // Stories from every day's findings (this run's, else the table's).
        let fresh: HashMap<NaiveDate, Vec<PatternRow>> = new_rows
            .iter()
            .filter(|(p, _)| p.kind == "day")
            .map(|(p, rs)| (p.start, rs.clone()))
            .collect();
        let parts = stories::day_parts(org, &existing, &fresh);
        story_rows.extend(stories::stories(&finder, org, parts));
        for (_, rs) in new_rows {
            rows.extend(rs);
        }
        progress.inc(1);
    }

    // Narratives by the provider (the offline one keeps the statistical text).
    let mut failed = Vec::new();
    if provider.name() != "offline" && !rows.is_empty() {
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
                    let now = Utc::now();
                    failed.push(json!({
                        "org_id": rows[i].org_id,
                        "failure_id": crow_lake::ids::new_id("fail"),
                        "source": format!("job:{JOB}"),
                        "channel": Value::Null,
                        "message_id": rows[i].pattern_id,
                        "reason_code": "ai_narrative_rejected",
                        "reason": format!("kept the statistical description: {why}"),
                        "payload": rows[i].evidence,
                        "failed_at": now.timestamp_micros(),
                        "event_date": days_since_epoch(now.date_naive()),
                    }));
                }
            }
        }
    }

    // Replace exactly the periods this run computed, in one commit.
    progress.phase("writing patterns", 0);
    for r in &rows {
        match r.period_kind.as_str() {
            "day" => report.day += 1,
            "week" => report.week += 1,
            "month" => report.month += 1,
            "year" => report.year += 1,
            _ => report.all += 1,
        }
    }
    report.patterns = rows.len() as u64;
    let span = |set: &BTreeSet<Period>, kind: &str| -> String {
        match (set.iter().next(), set.iter().last()) {
            (Some(a), Some(b)) => format!(
                "(period_kind = '{kind}' AND period_start >= DATE '{}' AND period_start <= DATE '{}')",
                a.start, b.start
            ),
            _ => format!("(period_kind = '{kind}' AND FALSE)"),
        }
    };
    let day_set: BTreeSet<Period> = days.iter().map(|d| Period::day(*d)).collect();
    // Organizations without sessions in range keep their patterns.
    let org_pred = match &opts.org {
        Some(o) => format!(" AND org_id = {}", str_lit(o)),
        None if orgs_done.is_empty() => " AND FALSE".to_string(),
        None => format!(
            " AND org_id IN ({})",
            orgs_done
                .iter()
                .map(|o| str_lit(o))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let predicate = format!(
        "({} OR {} OR {} OR {} OR period_kind = 'all'){org_pred}",
        span(&day_set, "day"),
        span(&weeks, "week"),
        span(&months, "month"),
        span(&years, "year"),
    );
    let batch = rows_to_batch(&PATTERNS, &rows)?;
    lake.replace_where_if_changed(PATTERNS.name, &predicate, vec![batch], &["created_at"])
        .await?;
    // An organization's stories are rewritten whole from its day findings.
    report.stories = story_rows.len() as u64;
    let batch = rows_to_batch(&STORIES, &story_rows)?;
    lake.replace_where_if_changed(
        STORIES.name,
        &format!("TRUE{org_pred}"),
        vec![batch],
        &["created_at"],
    )
    .await?;
    notify_strong_stories(lake, &story_rows, opts.notify_min_significance).await;
    if !failed.is_empty() {
        let b = rows_to_batch(&FAILED_EVENTS, &failed)?;
        lake.append(FAILED_EVENTS.name, vec![b]).await?;
    }
    Ok(report)
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

/// The findings that matter most first (their impact at least, by what
/// its unit is worth, then |z|), at most [`MAX_PER_PERIOD`].
fn top(mut fs: Vec<Finding>) -> Vec<Finding> {
    fs.sort_by(|a, b| {
        b.rank_score()
            .partial_cmp(&a.rank_score())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                b.z.abs()
                    .partial_cmp(&a.z.abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.metric.cmp(&b.metric))
            .then_with(|| a.segment.cmp(&b.segment))
    });
    fs.truncate(MAX_PER_PERIOD);
    fs
}

/// The findings of `parent`'s parts (`child_kind` periods inside it): this
/// run's where it computed them, else the table's.
fn child_refs(
    org: &str,
    parent: &Period,
    child_kind: &str,
    existing: &[PatternRow],
    new_rows: &BTreeMap<Period, Vec<PatternRow>>,
) -> Vec<ChildRef> {
    let (ps, pe) = (days_since_epoch(parent.start), days_since_epoch(parent.end));
    let fresh: Vec<&Period> = new_rows
        .keys()
        .filter(|p| p.kind == child_kind && p.start < parent.end && p.end > parent.start)
        .collect();
    let mut out = Vec::new();
    for r in existing {
        if r.org_id == org
            && r.period_kind == child_kind
            && r.period_start < pe
            && r.period_end > ps
            && !fresh
                .iter()
                .any(|p| days_since_epoch(p.start) == r.period_start)
        {
            out.extend(ChildRef::of_row(r));
        }
    }
    for p in fresh {
        out.extend(new_rows[p].iter().filter_map(ChildRef::of_row));
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The transition that states the same fact as a funnel step (the two
/// consecutive funnel events), as that step's metric.
fn funnel_of_transition(rest: &str) -> Option<String> {
    let (a, b) = rest.split_once('>')?;
    STEPS
        .windows(2)
        .find(|w| w[0].1 == a && w[1].1 == b)
        .map(|w| format!("funnel:{}>{}", w[0].0, w[1].0))
}

/// One fact, one row (all traffic): a transition between consecutive
/// funnel events found together with that funnel step, and a failure
/// event's volume found together with its failures (which name the step),
/// are dropped and kept as the surviving row's supporting evidence
/// (`same_fact`).
fn one_fact(fs: Vec<Finding>) -> Vec<Finding> {
    let funnels: BTreeSet<String> = fs
        .iter()
        .filter(|f| {
            f.segment.is_empty()
                && (f.metric.starts_with("funnel:") || f.metric.starts_with("error:"))
        })
        .map(|f| f.metric.clone())
        .collect();
    let mut same: BTreeMap<String, Value> = BTreeMap::new();
    let mut out = Vec::with_capacity(fs.len());
    for f in fs {
        let equivalent = f
            .metric
            .strip_prefix("transition:")
            .and_then(funnel_of_transition)
            .or_else(|| {
                f.metric
                    .strip_prefix("event:")
                    .map(|k| format!("error:{k}"))
            })
            .filter(|m| f.segment.is_empty() && funnels.contains(m));
        match equivalent {
            Some(m) => {
                same.insert(
                    m,
                    json!({"metric": f.metric, "z": (f.z * 100.0).round() / 100.0, "statistics": f.facts}),
                );
            }
            None => out.push(f),
        }
    }
    for f in &mut out {
        if f.segment.is_empty() {
            if let (Some(v), Some(obj)) = (same.remove(&f.metric), f.facts.as_object_mut()) {
                obj.insert("same_fact".into(), v);
            }
        }
    }
    out
}

/// The segment label of "all traffic except one segment" (never stored).
const REST: &str = "rest";

/// The rest of the traffic "did not move" when its own test's |z| stays
/// under this: not even nominally significant (5%, two-sided), far below a
/// finding's bar, so a whole change is put on one segment only when the
/// rest is plainly flat.
const REST_MAX_Z: f64 = 2.0;

/// One fact, one row, across segments: when all traffic and one segment
/// moved the same way on a metric, and the rest of the traffic (all traffic
/// without that segment, tested like any segment against its own baseline)
/// did not move, the segment explains the whole change. The segment's row
/// is the clearer statement ("Mobile: … fell"), so it stays, with the
/// all-traffic finding as its supporting evidence (`explains_whole`); the
/// all-traffic row is dropped. A segment explains the whole only when it is
/// the one finding of its dimension for that metric: two devices that both
/// moved are a change of the whole.
fn segment_explains_whole(
    fs: Vec<Finding>,
    cur: &Stats,
    base: &[&Stats],
    ctx: &TestCtx,
) -> Vec<Finding> {
    let dim = |seg: &str| seg.split('=').next().unwrap_or_default().to_string();
    let mut explained: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for w in fs
        .iter()
        .filter(|f| f.segment.is_empty() && !f.metric.starts_with("pair:"))
    {
        let mut segs: Vec<&Finding> = fs
            .iter()
            .filter(|s| s.metric == w.metric && !s.segment.is_empty())
            .collect();
        segs.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
        let explains = segs.iter().find(|s| {
            s.z.signum() == w.z.signum()
                && segs
                    .iter()
                    .filter(|o| dim(&o.segment) == dim(&s.segment))
                    .count()
                    == 1
                && rest_unchanged(&w.metric, &s.segment, cur, base, ctx)
        });
        if let Some(s) = explains {
            let whole = json!({"metric": w.metric, "title": w.title,
                "z": (w.z * 100.0).round() / 100.0, "statistics": w.facts});
            explained.insert(w.metric.clone(), (s.segment.clone(), whole));
        }
    }
    if explained.is_empty() {
        return fs;
    }
    fs.into_iter()
        .filter(|f| !(f.segment.is_empty() && explained.contains_key(&f.metric)))
        .map(|mut f| {
            if let Some((seg, whole)) = explained.get(&f.metric) {
                if *seg == f.segment {
                    if let Some(o) = f.facts.as_object_mut() {
                        o.insert("explains_whole".into(), whole.clone());
                    }
                }
            }
            f
        })
        .collect()
}

/// Whether all traffic without `seg` shows no change on `metric`: the rest,
/// tested against its own baseline like any segment, stays under
/// [`REST_MAX_Z`].
fn rest_unchanged(metric: &str, seg: &str, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> bool {
    let key: Key = (metric.to_string(), REST.to_string());
    let whole_key: Key = (metric.to_string(), String::new());
    let seg_key: Key = (metric.to_string(), seg.to_string());
    let rest = |st: &Stats| -> Stats {
        let mut out = Stats {
            sessions: st.sessions,
            days: st.days,
            ..Stats::default()
        };
        if let Some(w) = st.cells.get(&whole_key) {
            let s = st.cells.get(&seg_key).copied().unwrap_or_default();
            out.cells.insert(
                key.clone(),
                Cell {
                    k: (w.k - s.k).max(0.0),
                    n: (w.n - s.n).max(0.0),
                },
            );
        }
        out
    };
    let cur_rest = rest(cur);
    let base_rest: Vec<Stats> = base.iter().map(|b| rest(b)).collect();
    let base_refs: Vec<&Stats> = base_rest.iter().collect();
    let season_cur: Vec<(Weekday, Stats)> = ctx
        .season
        .as_ref()
        .map(|s| s.cur.iter().map(|(w, st)| (*w, rest(st))).collect())
        .unwrap_or_default();
    // The days left out of the whole's baseline (earlier incidents) are
    // left out of the rest's too.
    let flagged: Flagged = ctx
        .flagged
        .and_then(|f| f.get(&whole_key))
        .map(|days| HashMap::from([(key.clone(), days.clone())]))
        .unwrap_or_default();
    let ctx2 = ctx.with(
        ctx.season.as_ref().map(|s| Season {
            base: s.base.clone(),
            base_days: s.base_days.clone(),
            cur: season_cur.iter().map(|(w, st)| (*w, st)).collect(),
        }),
        Some(&flagged),
    );
    test_metric(&key, &cur_rest, &base_refs, &ctx2).is_none_or(|f| f.z.abs() < REST_MAX_Z)
}

/// One organization's complete days, and the tests over them.
struct Finder<'a> {
    day_stats: BTreeMap<NaiveDate, Stats>,
    first_data: NaiveDate,
    horizon: NaiveDate,
    names: &'a HashMap<String, String>,
    /// False discovery rate of one period's tests.
    fdr: f64,
    /// The organization's currency (revenue impacts), when its catalog
    /// names one.
    currency: Option<String>,
    /// Days with a finding, per metric and segment (days are computed in
    /// order; earlier days' findings come from the table).
    flagged: std::cell::RefCell<Flagged>,
    /// Days with a finding of the day's own test (not a trend's), in any
    /// metric or segment: incidents, left out of a trend test's week and
    /// baseline (an incident seen in one segment echoes in others).
    own_flagged: std::cell::RefCell<BTreeSet<NaiveDate>>,
}

impl<'a> Finder<'a> {
    /// Per-day statistics of every complete day from the first day with
    /// data (a day without sessions is a complete day with none).
    fn new(
        sessions: &[Sess],
        first_data: NaiveDate,
        horizon: NaiveDate,
        names: &'a HashMap<String, String>,
        fdr: f64,
    ) -> Finder<'a> {
        let mut per_day: BTreeMap<NaiveDate, Vec<&Sess>> = BTreeMap::new();
        for s in sessions.iter().filter(|s| s.day < horizon) {
            per_day.entry(s.day).or_default().push(s);
        }
        let day_stats = first_data
            .iter_days()
            .take_while(|d| *d < horizon)
            .map(|d| {
                let st = per_day.get(&d).map_or_else(
                    || Stats {
                        days: 1.0,
                        ..Stats::default()
                    },
                    |v| Stats::of_day(v),
                );
                (d, st)
            })
            .collect();
        Finder {
            day_stats,
            first_data,
            horizon,
            names,
            fdr,
            currency: None,
            flagged: std::cell::RefCell::new(HashMap::new()),
            own_flagged: std::cell::RefCell::new(BTreeSet::new()),
        }
    }

    /// Whether a baseline starting on `from` can compare new vs returning
    /// visitors.
    fn visitor_type(&self, from: NaiveDate) -> bool {
        from >= self.first_data + Days::new(WARM_UP_DAYS)
    }

    /// The complete days `[a, b)` pooled; None unless every one of them is
    /// complete and on or after the first day with data.
    fn span(&self, a: NaiveDate, b: NaiveDate) -> Option<Stats> {
        if a < self.first_data || b > self.horizon || a >= b {
            return None;
        }
        let mut st = Stats::default();
        for (_, s) in self.day_stats.range(a..b) {
            st.merge(s);
        }
        Some(st)
    }

    /// Every metric of `cur` (and every count of the baseline) tested, the
    /// tests corrected together (Benjamini–Hochberg at the job's FDR).
    fn findings(&self, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Vec<Finding> {
        let mut keys: BTreeSet<&Key> = cur.cells.keys().collect();
        for b in base {
            for k in b.cells.keys() {
                if is_count(&k.0) {
                    keys.insert(k);
                }
            }
        }
        let mut fs: Vec<Finding> = keys
            .into_iter()
            .filter_map(|k| test_metric(k, cur, base, ctx))
            .collect();
        fs.extend(pairs(cur, ctx));
        let tests = fs.len();
        let fs = benjamini_hochberg(fs, self.fdr, tests);
        segment_explains_whole(one_fact(fs), cur, base, ctx)
    }

    /// A complete day against the 28 days before it.
    fn day(&self, p: &Period) -> Vec<Finding> {
        let Some(cur) = self.day_stats.get(&p.start) else {
            return Vec::new();
        };
        let (base, base_days): (Vec<&Stats>, Vec<NaiveDate>) = p
            .previous(BASELINE_DAYS as usize)
            .iter()
            .filter_map(|b| Some((self.day_stats.get(&b.start)?, b.start)))
            .unzip();
        let flagged = self.flagged.borrow();
        let ctx = TestCtx {
            when: p.phrase(),
            baseline: format!("over the previous {BASELINE_DAYS} days"),
            per_day: false,
            min_base: 7,
            span: (p.start, p.end),
            names: self.names,
            visitor_type: self.visitor_type(p.start - Days::new(BASELINE_DAYS as u64)),
            season: Some(Season {
                base: base_days.iter().map(Datelike::weekday).collect(),
                base_days,
                cur: vec![(p.start.weekday(), cur)],
            }),
            flagged: Some(&flagged),
        };
        let mut fs = self.findings(cur, &base, &ctx);
        drop(flagged);
        // Slow changes the day alone does not show: the week to the day
        // (a day with findings of its own is an incident, not part of it).
        if !fs.is_empty() {
            self.own_flagged.borrow_mut().insert(p.start);
        }
        let trend = self.trend(p, &fs);
        fs.extend(trend);
        let fs = top(fs);
        // Exactly the findings written: a later run that reads this day
        // from the table leaves out the same baseline days.
        self.flag(p.start, &fs);
        fs
    }

    /// Remember the day's findings: their metric and segment leave this
    /// day out of later baselines (an incident is not what is normal).
    fn flag(&self, day: NaiveDate, fs: &[Finding]) {
        let mut flagged = self.flagged.borrow_mut();
        let mut own = self.own_flagged.borrow_mut();
        for f in fs {
            if f.facts.get("trend").is_none() {
                own.insert(day);
            }
            flagged
                .entry((f.metric.clone(), f.segment.clone()))
                .or_default()
                .insert(day);
        }
    }

    /// Remember a day's findings already in the table (days this run does
    /// not compute).
    fn flag_rows(&self, rows: &[PatternRow]) {
        let mut flagged = self.flagged.borrow_mut();
        let mut own = self.own_flagged.borrow_mut();
        for r in rows.iter().filter(|r| r.period_kind == "day") {
            if let Some(c) = ChildRef::of_row(r) {
                let day = date_of(r.period_start);
                if !c.trend {
                    own.insert(day);
                }
                flagged
                    .entry((c.metric, c.segment))
                    .or_default()
                    .insert(day);
            }
        }
    }

    /// A week's or month's own test: its complete days pooled against the
    /// same elapsed days (the same weekdays, the same first days of the
    /// month) of the periods before it.
    fn own(&self, p: &Period) -> Vec<Finding> {
        let end = p.end.min(self.horizon);
        let elapsed = (end - p.start).num_days();
        if p.start < self.first_data || elapsed <= 0 {
            return Vec::new();
        }
        let Some(cur) = self.span(p.start, end) else {
            return Vec::new();
        };
        let (n, min_base, unit) = match p.kind {
            "week" => (4, 2, "week"),
            _ => (3, 1, "month"),
        };
        let mut earliest = p.start;
        let base: Vec<Stats> = p
            .previous(n)
            .iter()
            .filter_map(|b| {
                let st = self.span(b.start, (b.start + Days::new(elapsed as u64)).min(b.end))?;
                earliest = earliest.min(b.start);
                Some(st)
            })
            .collect();
        let base_refs: Vec<&Stats> = base.iter().collect();
        let complete = end >= p.end;
        let previous = plural(base.len(), unit);
        let last = end.pred_opt().unwrap_or(p.start);
        let baseline = match (unit, complete) {
            (_, true) => format!("over the previous {previous}"),
            ("week", false) => format!(
                "over the same weekdays ({}–{}) of the previous {previous}",
                p.start.format("%A"),
                last.format("%A")
            ),
            _ => format!("over the same first {elapsed} days of the previous {previous}"),
        };
        let when = if complete {
            p.phrase()
        } else {
            format!(
                "{} (its {} so far)",
                p.phrase(),
                plural(elapsed as usize, "complete day")
            )
        };
        let ctx = TestCtx {
            when,
            baseline,
            per_day: true,
            min_base,
            span: (p.start, end),
            names: self.names,
            visitor_type: self.visitor_type(earliest),
            season: None,
            flagged: None,
        };
        self.findings(&cur, &base_refs, &ctx)
    }

    /// The parent's own evidence for the days `[a, b)` of its part: these
    /// days against the parent's other complete days and the 28 days before
    /// them (the baseline, and the test's context).
    fn confirm_ctx<'s>(
        &'s self,
        p: &Period,
        (a, b): (NaiveDate, NaiveDate),
        flagged: &'s Flagged,
    ) -> (Vec<&'s Stats>, TestCtx<'s>) {
        // The parent's own evidence: these days against the parent's
        // other complete days and the 28 days before them.
        let from = a
            .checked_sub_days(Days::new(BASELINE_DAYS as u64))
            .unwrap_or(a)
            .max(self.first_data);
        let to = p.end.min(self.horizon);
        let (base, base_days): (Vec<&Stats>, Vec<NaiveDate>) = self
            .day_stats
            .range(from..to)
            .filter(|(d, _)| **d < a || **d >= b)
            .map(|(d, s)| (s, *d))
            .unzip();
        let cur_days: Vec<(Weekday, &Stats)> = self
            .day_stats
            .range(a..b)
            .map(|(d, s)| (d.weekday(), s))
            .collect();
        let ctx = TestCtx {
            when: span_phrase(a, b),
            baseline: format!(
                "over the other complete days from {from} to {}",
                to.pred_opt().unwrap_or(to)
            ),
            per_day: true,
            min_base: 7,
            span: (a, b),
            names: self.names,
            visitor_type: self.visitor_type(from),
            season: Some(Season {
                base: base_days.iter().map(Datelike::weekday).collect(),
                base_days,
                cur: cur_days,
            }),
            flagged: Some(flagged),
        };
        (base, ctx)
    }

    /// One fact, one row, in a roll-up: an all-traffic finding and one
    /// segment's finding of the same metric, both carried up (from
    /// different parts, or one the period's own and one a part's), are told
    /// once when the rest of the traffic was flat over the all-traffic
    /// finding's days (see [`segment_explains_whole`]).
    fn explain_wholes(&self, p: &Period, fs: Vec<Finding>) -> Vec<Finding> {
        let wholes: Vec<(String, (NaiveDate, NaiveDate))> = fs
            .iter()
            .filter(|f| f.segment.is_empty() && !f.metric.starts_with("pair:"))
            .map(|f| (f.metric.clone(), f.span))
            .collect();
        let mut fs = fs;
        let flagged = self.flagged.borrow();
        for (metric, span) in wholes {
            let Some(cur) = self.span(span.0, span.1) else {
                continue;
            };
            let (base, ctx) = self.confirm_ctx(p, span, &flagged);
            let (same, rest): (Vec<Finding>, Vec<Finding>) = fs
                .into_iter()
                .partition(|f| f.metric == metric && !f.metric.starts_with("pair:"));
            let mut same = segment_explains_whole(same, &cur, &base, &ctx);
            same.extend(rest);
            fs = same;
        }
        fs
    }

    /// The period's own findings, plus its parts' findings that the
    /// period's own data confirms (per metric and segment: the own test if
    /// it found it, else the strongest confirmation), strongest first.
    fn merge(&self, p: &Period, own: Vec<Finding>, children: &[ChildRef]) -> Vec<Finding> {
        let mut by_key: BTreeMap<Key, Finding> = BTreeMap::new();
        for f in own {
            by_key.insert((f.metric.clone(), f.segment.clone()), f);
        }
        let mut by_span: BTreeMap<(NaiveDate, NaiveDate), Vec<&ChildRef>> = BTreeMap::new();
        for c in children {
            let a = c.span.0.max(p.start).max(self.first_data);
            let b = c.span.1.min(p.end).min(self.horizon);
            if a < b && !c.metric.starts_with("pair:") {
                by_span.entry((a, b)).or_default().push(c);
            }
        }
        let flagged = self.flagged.borrow();
        for ((a, b), cs) in by_span {
            let Some(cur) = self.span(a, b) else {
                continue;
            };
            let (base, ctx) = self.confirm_ctx(p, (a, b), &flagged);
            // The confirmations are one family with every metric these
            // days could test.
            let tests = cur.cells.keys().filter(|k| testable(&k.0)).count();
            let mut tested: Vec<(Finding, &ChildRef)> = Vec::new();
            for c in cs {
                let key = (c.metric.clone(), c.segment.clone());
                if let Some(f) = test_metric(&key, &cur, &base, &ctx) {
                    tested.push((f, c));
                }
            }
            let refs: Vec<(String, String, String, f64)> = tested
                .iter()
                .map(|(f, c)| (f.metric.clone(), f.segment.clone(), c.label.clone(), c.z))
                .collect();
            let kept = benjamini_hochberg(
                tested.into_iter().map(|(f, _)| f).collect(),
                self.fdr,
                tests,
            );
            for mut f in kept {
                let Some(c) = refs
                    .iter()
                    .find(|r| r.0 == f.metric && r.1 == f.segment)
                    .map(|r| ChildLabel {
                        label: r.2.clone(),
                        z: r.3,
                    })
                else {
                    continue;
                };
                let key = (f.metric.clone(), f.segment.clone());
                if (f.z > 0.0) != (c.z > 0.0) {
                    continue;
                }
                f.own = false;
                f.children = vec![c.label.clone()];
                match by_key.get_mut(&key) {
                    Some(e) => {
                        let mut labels = std::mem::take(&mut e.children);
                        if !labels.contains(&c.label) {
                            labels.push(c.label.clone());
                        }
                        if !e.own && f.z.abs() > e.z.abs() {
                            *e = f;
                        }
                        e.children = labels;
                    }
                    None => {
                        by_key.insert(key, f);
                    }
                }
            }
        }
        let mut out: Vec<Finding> = by_key.into_values().collect();
        for f in &mut out {
            f.children.sort();
            f.children.dedup();
            if !f.children.is_empty() {
                f.description = format!(
                    "{} It stood out {}.",
                    f.description,
                    parts_phrase(&f.children)
                );
            }
        }
        top(self.explain_wholes(p, one_fact(out)))
    }
}

/// A part's label and direction, as its parent confirms it.
struct ChildLabel {
    label: String,
    z: f64,
}

/// "on 2026-11-21 and 2026-11-22", "in the weeks of …", "in November 2026".
fn parts_phrase(children: &[String]) -> String {
    let kind = children
        .first()
        .and_then(|c| c.split(':').next())
        .unwrap_or("day");
    let dates: Vec<NaiveDate> = children
        .iter()
        .filter_map(|c| c.split(':').nth(1))
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .collect();
    let list = |v: Vec<String>| match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        _ => format!("{} and {}", v[..v.len() - 1].join(", "), v[v.len() - 1]),
    };
    match kind {
        "day" => format!("on {}", list(dates.iter().map(|d| d.to_string()).collect())),
        "week" if dates.len() == 1 => format!("in the week of {}", dates[0]),
        "week" => format!(
            "in the weeks of {}",
            list(dates.iter().map(|d| d.to_string()).collect())
        ),
        "month" => format!(
            "in {}",
            list(
                dates
                    .iter()
                    .map(|d| d.format("%B %Y").to_string())
                    .collect()
            )
        ),
        _ => format!(
            "in {}",
            list(dates.iter().map(|d| d.year().to_string()).collect())
        ),
    }
}

/// The request for a pattern's narrative: the facts, as text.
fn narrative_request(r: &PatternRow) -> AiRequest {
    let system = "You write one finding of an analytics report for a brand: a short title and \
                  one or two plain sentences. Use only the facts given. Every number you write \
                  must appear in the facts exactly as written there; do not compute new numbers."
        .to_string();
    let prompt = format!(
        "Period: {} starting {}\nSegment: {}\nStatistical title: {}\nStatistical description: {}\nEvidence: {}\n",
        r.period_kind,
        date_of(r.period_start),
        r.segment.as_deref().unwrap_or("all traffic"),
        r.title,
        r.description,
        r.evidence
    );
    AiRequest {
        system,
        prompt,
        schema: json!({
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"}
            },
            "required": ["title", "description"],
            "additionalProperties": false
        }),
        input: json!({"task": "pattern", "title": r.title, "description": r.description}),
    }
}

/// Numbers as written in a text (digits with inner `.`/`,`), normalised.
pub fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let inner = (*c == '.' || *c == ',')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || inner {
            cur.push(*c);
        } else if !cur.is_empty() {
            out.push(normalise_number(&cur));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(normalise_number(&cur));
    }
    out
}

fn normalise_number(s: &str) -> String {
    let s = s.replace(',', "");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The numbers a text may cite: every number written in `facts`.
pub fn allowed_numbers(facts: &str) -> BTreeSet<String> {
    numbers(facts).into_iter().collect()
}

/// Every number written in `text` is one of `allowed` (see [`numbers`]).
pub fn check_numbers(text: &str, allowed: &BTreeSet<String>) -> std::result::Result<(), String> {
    match numbers(text).into_iter().find(|x| !allowed.contains(x)) {
        Some(x) => Err(format!("the number {x} is not in the evidence")),
        None => Ok(()),
    }
}

/// A narrative is valid when it is the expected JSON and every number in it
/// is one of the facts' numbers.
pub fn validate_narrative(
    text: &str,
    allowed: &BTreeSet<String>,
) -> std::result::Result<(String, String), String> {
    #[derive(Deserialize)]
    struct N {
        title: String,
        description: String,
    }
    let n: N =
        serde_json::from_str(text.trim()).map_err(|e| format!("not the expected JSON: {e}"))?;
    if n.title.trim().is_empty() || n.description.trim().is_empty() {
        return Err("empty title or description".into());
    }
    check_numbers(&n.title, allowed)?;
    check_numbers(&n.description, allowed)?;
    Ok((n.title, n.description))
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
        .filter_map(Sess::from_row)
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
