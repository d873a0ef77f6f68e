//! Billing: usage per organization per UTC day → `usage_daily`, and the
//! monthly invoices built from it.
//!
//! What a day's row counts (each reconciles with one SQL query, see the
//! README's "Billing" section):
//! - **events**: raw rows of the three channels by their `event_date`
//!   (UTC day of `occurred_at` / `captured_at` / `segment_start`), counted
//!   once per id (`message_id`, `capture_id`, `segment_id`) per org and
//!   day: raw tables keep every copy as received, but a client's retried
//!   batch is not billed twice.
//! - **sessions**, **interactions**: rows of `sessions` / `interactions` by
//!   `session_date`.
//! - **patterns**: rows of `patterns` with `period_kind = 'day'` by
//!   `period_start`. Roll-ups (week, month, year, all time) summarise
//!   daily findings and are included at no charge; they are recomputed as
//!   their periods fill, so billing them would change closed invoices.
//! - **AI tokens**: `input_tokens` / `output_tokens` of the interactions in
//!   the table, by `session_date`: the tokens the answer behind each
//!   interaction cost (an answer served from `llm_cache` carries its
//!   original call's tokens). Retries, refused answers and re-runs that
//!   replace interactions are not passed through. The offline provider
//!   spends 0 tokens.
//!
//! Prices come from the price book (`[billing]`) and are held in integer
//! millionths of the currency (micros): a per-unit price `p` is
//! `round(p × 10⁶)` micros, a per-1,000 price `p` is `round(p × 10⁶)`
//! micros per 1,000 units, and a line's amount is `quantity × unit` (per
//! unit) or `round_half_up(quantity × unit / 1000)` (per 1,000). Amounts
//! are summed in integers only. A day's `amount_micros` prices that day's
//! quantities; an invoice prices the month's quantities line by line, so
//! its total can differ from the sum of daily amounts by the rounding of
//! per-1,000 lines.
//!
//! A run recomputes whole days and replaces exactly those days
//! (replace-where on `usage_date`, and `org_id` for one org). When the
//! recomputed rows equal the stored ones (apart from `computed_at`) nothing
//! is written: running billing twice changes nothing. The incremental
//! window runs from the earliest day anything changed since the last run
//! (raw events received, sessionize/enrich/patterns windows rewritten) to
//! the end of today; today is always recomputed.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::datafusion::prelude::{col, lit, Expr};
use crow_lake::{predicate, Lake};
use crow_schemas::config::BillingConfig;
use crow_schemas::rows::UsageRow;
use crow_schemas::time::days_from_date;
use crow_schemas::USAGE_DAILY;
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, Planned, Request, RunWindow, Split};
use crate::{runs, Error, Params, ProgressRef, Result, Trigger, Window};

/// Name of the job in the ledger.
pub const JOB: &str = crate::JobName::Billing.as_str();
/// How long before the previous run's start a received event still counts
/// as possibly unseen (collector flush delay).
const LATE_ALLOWANCE_MINUTES: i64 = 10;

/// The price book in integer micros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prices {
    /// ISO 4217 currency.
    pub currency: String,
    /// Micros per interaction.
    pub interaction: i64,
    /// Micros per (day) pattern.
    pub pattern: i64,
    /// Micros per 1,000 events.
    pub events_1000: i64,
    /// Micros per 1,000 AI input tokens.
    pub input_tokens_1000: i64,
    /// Micros per 1,000 AI output tokens.
    pub output_tokens_1000: i64,
}

fn to_micros(key: &str, price: f64) -> Result<i64> {
    let m = (price * 1_000_000.0).round();
    if !m.is_finite() || !(0.0..=1e15).contains(&m) {
        return Err(Error::Invalid(format!(
            "{key} = {price} is not a price between 0 and 1,000,000,000"
        )));
    }
    Ok(m as i64)
}

impl Prices {
    /// The configured price book, in micros (rounded to the micro).
    pub fn from_config(cfg: &BillingConfig) -> Result<Prices> {
        Ok(Prices {
            currency: cfg.currency.clone(),
            interaction: to_micros("billing.per_interaction", cfg.per_interaction)?,
            pattern: to_micros("billing.per_pattern", cfg.per_pattern)?,
            events_1000: to_micros("billing.per_1000_events", cfg.per_1000_events)?,
            input_tokens_1000: to_micros(
                "billing.per_1000_input_tokens",
                cfg.per_1000_input_tokens,
            )?,
            output_tokens_1000: to_micros(
                "billing.per_1000_output_tokens",
                cfg.per_1000_output_tokens,
            )?,
        })
    }
}

/// Usage quantities of one org over some days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Usage {
    pub events: i64,
    pub sessions: i64,
    pub interactions: i64,
    pub patterns: i64,
    pub ai_input_tokens: i64,
    pub ai_output_tokens: i64,
}

impl Usage {
    fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// One priced line of an invoice or a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineItem {
    /// What is billed.
    pub item: &'static str,
    /// How many.
    pub quantity: i64,
    /// The unit the price is for: 1 or 1000.
    pub per: i64,
    /// Price per `per` units, in micros.
    pub unit_price_micros: i64,
    /// The line's amount, in micros.
    pub amount_micros: i64,
}

/// `quantity × unit_price / per`, rounded half up, in integers.
pub fn price(quantity: i64, unit_price_micros: i64, per: i64) -> i64 {
    let q = i128::from(quantity.max(0)) * i128::from(unit_price_micros);
    let per = i128::from(per.max(1));
    ((q + per / 2) / per).min(i128::from(i64::MAX)) as i64
}

/// The priced lines of `usage` (sessions are metered, not priced).
pub fn line_items(usage: &Usage, prices: &Prices) -> Vec<LineItem> {
    [
        ("events", usage.events, 1000, prices.events_1000),
        ("interactions", usage.interactions, 1, prices.interaction),
        ("patterns", usage.patterns, 1, prices.pattern),
        (
            "ai_input_tokens",
            usage.ai_input_tokens,
            1000,
            prices.input_tokens_1000,
        ),
        (
            "ai_output_tokens",
            usage.ai_output_tokens,
            1000,
            prices.output_tokens_1000,
        ),
    ]
    .into_iter()
    .map(|(item, quantity, per, unit)| LineItem {
        item,
        quantity,
        per,
        unit_price_micros: unit,
        amount_micros: price(quantity, unit, per),
    })
    .collect()
}

/// Total of lines, in micros.
pub fn total(lines: &[LineItem]) -> i64 {
    lines.iter().map(|l| l.amount_micros).sum()
}

/// Micros as a decimal amount (`1234567` → `1.234567`).
pub fn format_micros(m: i64) -> String {
    let sign = if m < 0 { "-" } else { "" };
    let a = m.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

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
    /// The price book.
    pub prices: Prices,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run and its window.
    #[serde(flatten)]
    pub run: RunWindow,
    /// Days recomputed.
    pub days: u64,
    /// `usage_daily` rows in the window (org × day with any usage).
    pub rows: u64,
    /// Whether the rows differed from the stored ones and were written.
    pub written: bool,
    /// Sum of the rows' amounts, in micros.
    pub amount_micros: i64,
    /// Currency.
    pub currency: String,
}

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

fn date_lit(t: DateTime<Utc>) -> String {
    format!("DATE '{}'", t.date_naive().format("%Y-%m-%d"))
}

/// The billing job, configured for one run.
#[derive(Debug)]
pub struct Billing {
    opts: Options,
}

#[async_trait::async_trait]
impl Job for Billing {
    const NAME: &'static str = JOB;
    const SPLIT: Option<Split> = Some(Split::Whole);
    const IDLE: &'static str = "there is no new activity to meter";
    type Plan = Window;
    type Report = Report;

    fn build(ctx: &JobContext, req: &Request) -> Result<Self> {
        Ok(Billing {
            opts: Options {
                org: req.org.clone(),
                window: req.window,
                trigger: req.trigger,
                now: ctx.now,
                prices: Prices::from_config(&ctx.config.billing)?,
            },
        })
    }

    /// An explicit window widened to whole days; else from the earliest
    /// changed day to the end of today (billing always has a window).
    async fn plan(&self, ctx: &JobContext, _req: &Request) -> Result<Planned<Window, Report>> {
        // Billing meters whole days: an explicit window grows to them, and
        // the incremental window always ends with today.
        let explicit = self.opts.window.map(|w| {
            let days = Window {
                start: midnight(w.start),
                end: midnight(w.end - Duration::microseconds(1)) + Duration::days(1),
            };
            (days, days)
        });
        let incremental = async {
            let w = incremental_window(&ctx.lake, self.opts.org.as_deref(), self.opts.now).await;
            w.map(|w| Some((w, w)))
        };
        Self::plan_window(explicit, incremental, Report::default()).await
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        window: Window,
        run_id: &str,
    ) -> Result<(Window, Report)> {
        let mut report = compute(&ctx.lake, &self.opts, window, &ctx.progress).await?;
        report.run.run_id = run_id.to_string();
        Ok((window, report))
    }

    fn rows(r: &Report) -> (u64, u64) {
        (r.days, r.rows)
    }
}

/// From the earliest day that changed since the last run (or the earliest
/// raw activity, on a first run) to the end of today.
async fn incremental_window(lake: &Lake, org: Option<&str>, now: DateTime<Utc>) -> Result<Window> {
    let today = midnight(now);
    let end = today + Duration::days(1);
    let mut params = Params::default();
    let org_cond = params.org("org_id", org);
    let last = runs::last_succeeded(lake, JOB).await?;
    let mut start = today;
    let raw_cond = match &last {
        Some(r) => format!(
            "received_at >= {}",
            params.ts(
                "since",
                r.started_at - Duration::minutes(LATE_ALLOWANCE_MINUTES)
            )
        ),
        None => "TRUE".to_string(),
    };
    let sql = format!(
        "SELECT CAST(min(d) AS VARCHAR) AS d FROM (
           SELECT min(event_date) AS d FROM raw_web_events WHERE {raw_cond} {org_cond}
           UNION ALL SELECT min(event_date) FROM raw_social_captures WHERE {raw_cond} {org_cond}
           UNION ALL SELECT min(event_date) FROM raw_cctv_transcripts WHERE {raw_cond} {org_cond})"
    );
    if let Some(d) = first_day(lake, &params, &sql).await? {
        start = start.min(d);
    }
    if let Some(last) = &last {
        let since = last.started_at - Duration::minutes(LATE_ALLOWANCE_MINUTES);
        for job in [
            crate::sessionize::JOB,
            crate::enrich::JOB,
            crate::patterns::JOB,
        ] {
            for r in runs::succeeded_since(lake, job, since).await? {
                start = start.min(midnight(r.window_start));
            }
        }
    } else {
        // First run: everything derived that exists.
        let sql = format!(
            "SELECT CAST(min(d) AS VARCHAR) AS d FROM (
               SELECT min(session_date) AS d FROM sessions WHERE TRUE {org_cond}
               UNION ALL SELECT min(period_start) FROM patterns WHERE period_kind = 'day' {org_cond})"
        );
        if let Some(d) = first_day(lake, &params, &sql).await? {
            start = start.min(d);
        }
    }
    Ok(Window { start, end })
}

/// The midnight of the day `sql` answers (one row, a column `d` of
/// `YYYY-MM-DD` text); None when it answers no day.
async fn first_day(lake: &Lake, params: &Params, sql: &str) -> Result<Option<DateTime<Utc>>> {
    #[derive(Deserialize)]
    struct D {
        d: Option<String>,
    }
    let (_, batches) = params.run(lake, sql).await?;
    Ok(batches_to_rows::<D>(&batches)?
        .into_iter()
        .next()
        .and_then(|d| d.d)
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()))
}

#[derive(Debug, Deserialize)]
struct Count {
    org_id: String,
    d: String,
    n: Option<i64>,
    #[serde(default)]
    i: Option<i64>,
    #[serde(default)]
    o: Option<i64>,
}

/// Usage per (org, day) over whole days `[window.start, window.end)`.
pub async fn usage(
    lake: &Lake,
    org: Option<&str>,
    window: Window,
) -> Result<BTreeMap<(String, NaiveDate), Usage>> {
    let mut params = Params::default();
    let org_cond = params.org("org_id", org);
    let range = |col: &str| {
        format!(
            "{col} >= {} AND {col} < {}{org_cond}",
            date_lit(window.start),
            date_lit(window.end)
        )
    };
    let ctx = lake.session().await?;
    let mut out: BTreeMap<(String, NaiveDate), Usage> = BTreeMap::new();
    let queries = [
        (
            "events",
            format!(
                "SELECT org_id, CAST(d AS VARCHAR) AS d, CAST(sum(n) AS BIGINT) AS n FROM (
                   SELECT org_id, event_date AS d, count(DISTINCT message_id) AS n
                     FROM raw_web_events WHERE {w} GROUP BY org_id, event_date
                   UNION ALL SELECT org_id, event_date, count(DISTINCT capture_id)
                     FROM raw_social_captures WHERE {w} GROUP BY org_id, event_date
                   UNION ALL SELECT org_id, event_date, count(DISTINCT segment_id)
                     FROM raw_cctv_transcripts WHERE {w} GROUP BY org_id, event_date)
                 GROUP BY org_id, d",
                w = range("event_date")
            ),
        ),
        (
            "sessions",
            format!(
                "SELECT org_id, CAST(session_date AS VARCHAR) AS d, count(*) AS n
                 FROM sessions WHERE {} GROUP BY org_id, session_date",
                range("session_date")
            ),
        ),
        (
            "interactions",
            format!(
                "SELECT org_id, CAST(session_date AS VARCHAR) AS d, count(*) AS n,
                        CAST(sum(input_tokens) AS BIGINT) AS i, CAST(sum(output_tokens) AS BIGINT) AS o
                 FROM interactions WHERE {} GROUP BY org_id, session_date",
                range("session_date")
            ),
        ),
        (
            "patterns",
            format!(
                "SELECT org_id, CAST(period_start AS VARCHAR) AS d, count(*) AS n
                 FROM patterns WHERE period_kind = 'day' AND {} GROUP BY org_id, period_start",
                range("period_start")
            ),
        ),
    ];
    for (what, sql) in queries {
        let batches = params.sql(&ctx, &sql).await?.collect().await?;
        for c in batches_to_rows::<Count>(&batches)? {
            let day = NaiveDate::parse_from_str(&c.d, "%Y-%m-%d")
                .map_err(|e| Error::Corrupt(format!("{what}: day `{}`: {e}", c.d)))?;
            let u = out.entry((c.org_id, day)).or_default();
            let n = c.n.unwrap_or(0);
            match what {
                "events" => u.events += n,
                "sessions" => u.sessions += n,
                "interactions" => {
                    u.interactions += n;
                    u.ai_input_tokens += c.i.unwrap_or(0);
                    u.ai_output_tokens += c.o.unwrap_or(0);
                }
                _ => u.patterns += n,
            }
        }
    }
    out.retain(|_, u| !u.is_zero());
    Ok(out)
}

/// Meter the whole days of `window` and replace them in `usage_daily`
/// unless the rows are the stored ones already.
async fn compute(
    lake: &Lake,
    opts: &Options,
    window: Window,
    progress: &ProgressRef,
) -> Result<Report> {
    let org = opts.org.as_deref();
    progress.phase("metering usage", 0);
    let usage = usage(lake, org, window).await?;
    let rows = usage_rows(&usage, &opts.prices, opts.now.timestamp_micros());
    let predicate = col("usage_date")
        .gt_eq(predicate::date(window.start.date_naive()))
        .and(col("usage_date").lt(predicate::date(window.end.date_naive())));
    let predicate = match org {
        Some(o) => predicate.and(col("org_id").eq(lit(o))),
        None => predicate,
    };
    // Unchanged usage is not rewritten: a second run changes nothing.
    let existing = stored_rows(lake, predicate.clone()).await?;
    let same = existing.len() == rows.len()
        && existing
            .iter()
            .zip(&rows)
            .all(|(a, b)| same_but_computed_at(a, b));
    let days = (window.end - window.start).num_days().max(0) as u64;
    let report = Report {
        run: RunWindow::of(window),
        days,
        rows: rows.len() as u64,
        written: !same,
        amount_micros: rows.iter().map(|r| r.amount_micros).sum(),
        currency: opts.prices.currency.clone(),
    };
    if !same {
        progress.phase("writing usage_daily", 0);
        let batch = rows_to_batch(&USAGE_DAILY, &rows)?;
        lake.replace_where(USAGE_DAILY.name, &predicate, vec![batch])
            .await?;
    } else {
        tracing::info!(%window, "billing: usage unchanged, nothing written");
    }
    Ok(report)
}

/// The `usage_daily` rows of metered usage, priced, in (day, org) order.
fn usage_rows(
    usage: &BTreeMap<(String, NaiveDate), Usage>,
    prices: &Prices,
    computed_at: i64,
) -> Vec<UsageRow> {
    let mut rows: Vec<UsageRow> = usage
        .iter()
        .map(|((org_id, day), u)| UsageRow {
            org_id: org_id.clone(),
            usage_date: days_from_date(*day),
            events: u.events,
            sessions: u.sessions,
            interactions: u.interactions,
            patterns: u.patterns,
            ai_input_tokens: u.ai_input_tokens,
            ai_output_tokens: u.ai_output_tokens,
            amount_micros: total(&line_items(u, prices)),
            currency: prices.currency.clone(),
            computed_at,
        })
        .collect();
    rows.sort_by(|a, b| (a.usage_date, &a.org_id).cmp(&(b.usage_date, &b.org_id)));
    rows
}

/// The stored `usage_daily` rows that `predicate` selects, in (day, org)
/// order.
async fn stored_rows(lake: &Lake, predicate: Expr) -> Result<Vec<UsageRow>> {
    #[derive(Deserialize)]
    struct Stored {
        org_id: String,
        usage_date: String,
        events: i64,
        sessions: i64,
        interactions: i64,
        patterns: i64,
        ai_input_tokens: i64,
        ai_output_tokens: i64,
        amount_micros: i64,
        currency: String,
        #[serde(with = "ts_micros")]
        computed_at: DateTime<Utc>,
    }
    let batches = lake
        .dataframe(USAGE_DAILY.name)
        .await?
        .filter(predicate)?
        .select_exprs(&[
            "org_id",
            "CAST(usage_date AS VARCHAR) AS usage_date",
            "events",
            "sessions",
            "interactions",
            "patterns",
            "ai_input_tokens",
            "ai_output_tokens",
            "amount_micros",
            "currency",
            "computed_at",
        ])?
        .collect()
        .await?;
    let mut v = Vec::new();
    for s in batches_to_rows::<Stored>(&batches)? {
        let d = NaiveDate::parse_from_str(&s.usage_date, "%Y-%m-%d")
            .map_err(|e| Error::Corrupt(format!("usage_daily: day `{}`: {e}", s.usage_date)))?;
        v.push(UsageRow {
            org_id: s.org_id,
            usage_date: days_from_date(d),
            events: s.events,
            sessions: s.sessions,
            interactions: s.interactions,
            patterns: s.patterns,
            ai_input_tokens: s.ai_input_tokens,
            ai_output_tokens: s.ai_output_tokens,
            amount_micros: s.amount_micros,
            currency: s.currency,
            computed_at: s.computed_at.timestamp_micros(),
        });
    }
    v.sort_by(|a, b| (a.usage_date, &a.org_id).cmp(&(b.usage_date, &b.org_id)));
    Ok(v)
}

/// Whether two rows are equal apart from when they were computed.
fn same_but_computed_at(a: &UsageRow, b: &UsageRow) -> bool {
    UsageRow {
        computed_at: 0,
        ..a.clone()
    } == UsageRow {
        computed_at: 0,
        ..b.clone()
    }
}

/// One organization's invoice for a month.
#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    /// Organization id.
    pub org_id: String,
    /// Organization name.
    pub org_name: Option<String>,
    /// `YYYY-MM`.
    pub month: String,
    /// First day.
    pub period_start: NaiveDate,
    /// Day after the last day.
    pub period_end: NaiveDate,
    /// Currency.
    pub currency: String,
    /// Metered usage of the month.
    pub usage: Usage,
    /// Days with usage.
    pub days: i64,
    /// Priced lines.
    pub lines: Vec<LineItem>,
    /// Sum of the lines, in micros.
    pub total_micros: i64,
}

/// The first day of month `YYYY-MM` and the first day of the next.
pub fn month_range(month: &str) -> Result<(NaiveDate, NaiveDate)> {
    let bad = || Error::Invalid(format!("month `{month}` is not a month like 2026-03"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let start = NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)?;
    let end = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((start, end))
}

/// The invoices of `month` (`YYYY-MM`) from `usage_daily`: one per org
/// with usage, priced with `prices`.
pub async fn invoices(
    lake: &Lake,
    month: &str,
    org: Option<&str>,
    prices: &Prices,
) -> Result<Vec<Invoice>> {
    let (start, end) = month_range(month)?;
    let mut params = Params::default();
    let org_cond = params.org("u.org_id", org);
    let sql = format!(
        "SELECT u.org_id, CAST(count(*) AS BIGINT) AS days,
                CAST(sum(u.events) AS BIGINT) AS events, CAST(sum(u.sessions) AS BIGINT) AS sessions,
                CAST(sum(u.interactions) AS BIGINT) AS interactions, CAST(sum(u.patterns) AS BIGINT) AS patterns,
                CAST(sum(u.ai_input_tokens) AS BIGINT) AS ai_input_tokens,
                CAST(sum(u.ai_output_tokens) AS BIGINT) AS ai_output_tokens
         FROM usage_daily u
         WHERE u.usage_date >= DATE '{}' AND u.usage_date < DATE '{}' {org_cond}
         GROUP BY u.org_id ORDER BY u.org_id",
        start.format("%Y-%m-%d"),
        end.format("%Y-%m-%d")
    );
    #[derive(Deserialize)]
    struct Row {
        org_id: String,
        days: i64,
        #[serde(flatten)]
        usage: Usage,
    }
    let (_, batches) = params.run(lake, &sql).await?;
    let rows: Vec<Row> = batches_to_rows(&batches)?;
    let names: BTreeMap<String, String> = crow_lake::orgs::list(lake)
        .await?
        .into_iter()
        .map(|o| (o.org_id, o.name))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let usage = r.usage;
            let lines = line_items(&usage, prices);
            Invoice {
                org_name: names.get(&r.org_id).cloned(),
                org_id: r.org_id,
                month: start.format("%Y-%m").to_string(),
                period_start: start,
                period_end: end,
                currency: prices.currency.clone(),
                usage,
                days: r.days,
                total_micros: total(&lines),
                lines,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pricing_is_integer_and_rounds_half_up() {
        let p = Prices::from_config(&BillingConfig::default()).unwrap();
        assert_eq!(p.interaction, 2_000);
        assert_eq!(p.events_1000, 10_000);
        assert_eq!(p.input_tokens_1000, 300);
        assert_eq!(price(3, 2_000, 1), 6_000);
        assert_eq!(price(1_234, 10_000, 1000), 12_340);
        assert_eq!(price(5, 300, 1000), 2, "1.5 rounds up");
        assert_eq!(price(4, 300, 1000), 1, "1.2 rounds down");
        // Ten million small lines never drift: integers all the way.
        let u = Usage {
            events: 10_000_001,
            interactions: 3,
            patterns: 2,
            ai_input_tokens: 1_000_000,
            ai_output_tokens: 999,
            sessions: 5,
        };
        let lines = line_items(&u, &p);
        assert_eq!(
            lines.iter().map(|l| l.amount_micros).collect::<Vec<_>>(),
            vec![100_000_010, 6_000, 100_000, 300_000, 2_498]
        );
        assert_eq!(total(&lines), 100_408_508);
        assert_eq!(format_micros(100_408_508), "100.408508");
        assert_eq!(format_micros(5), "0.000005");
        let bad = BillingConfig {
            per_pattern: f64::NAN,
            ..BillingConfig::default()
        };
        let e = Prices::from_config(&bad).unwrap_err().to_string();
        assert!(e.contains("billing.per_pattern"), "{e}");
    }

    #[test]
    fn months() {
        assert_eq!(
            month_range("2026-12").unwrap(),
            (
                NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
            )
        );
        assert!(month_range("2026-13").is_err());
        assert!(month_range("March").is_err());
    }
}
