//! Stories: the day findings that share a cause, told once.
//!
//! A day's findings are grouped into one story when they belong to the same
//! family of metrics (and, for traffic, point the same way), and lie on days
//! at most [`MAX_GAP_DAYS`] apart (a quiet day inside an incident does not
//! split it), whatever their segment:
//! - *conversion*: funnel steps, sessions with failures, failure events,
//!   loops and transitions of funnel or failure events ("worse" when a
//!   conversion fell or failures rose, "better" otherwise; a checkout whose
//!   conversion fell while its failures and retries rose is one story);
//! - *traffic*: sessions, visitors and the volume of other events, funnel
//!   steps' included ("fell" or "rose");
//! - *product*: one product's views and view → order conversion;
//! - anything else: its own metric.
//!
//! Products bought together are not changes and are never part of a story.
//!
//! A story starts on its first day with a finding and ends after its last,
//! or is *ongoing* when that last day is the last complete day or the one
//! before. Its segments are those with findings; the *unaffected* segments
//! are the other values of the same dimensions that had sessions on the
//! story's days and no finding ("mobile only; desktop unaffected").
//!
//! **Impact.** A story's impact is estimated on its main segment (the one
//! with the strongest findings; all traffic when no segment has any) over
//! every day from its start to its last day, against the
//! [`super::BASELINE_DAYS`] days before it started:
//! - conversion: orders, against the baseline's orders per session times
//!   the day's sessions;
//! - traffic and products: the lead metric's count (sessions, visitors,
//!   events, product views), against the baseline's mean per day, adjusted
//!   for the weekday when the baseline shows a weekday pattern;
//! - else the lead metric (a rate: its hits against the baseline rate).
//!
//! The 95% interval adds the days' own noise (binomial or the baseline's
//! daily spread, at least Poisson) to the baseline's uncertainty. Stories
//! are ranked by the impact they had at least (the interval's bound nearest
//! zero) times what the unit is worth ([`super::unit_weight`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, Days, NaiveDate, Utc};
use crow_lake::ids::sha256_hex;
use crow_schemas::metric::Metric;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    date_of, days_from_date, is_count, is_failure, is_pair, seg_phrase, unit_of, unit_weight,
    wd_index, weekday_factors, Finder, Key, PatternRow, Stats, BASELINE_DAYS, STEPS,
};

/// Days two findings may lie apart and still be one story (1: consecutive;
/// 2: one quiet day between them).
pub const MAX_GAP_DAYS: i64 = 2;

/// Baseline orders with a revenue needed to put a revenue on orders lost
/// or gained.
const MIN_VALUED_ORDERS: f64 = 10.0;

/// A `stories` row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoryRow {
    pub(crate) org_id: String,
    pub(crate) story_id: String,
    pub(crate) kind: String,
    pub(crate) direction: String,
    pub(crate) start_date: i32,
    pub(crate) last_date: i32,
    pub(crate) end_date: Option<i32>,
    pub(crate) ongoing: bool,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) segments_affected: Vec<String>,
    pub(crate) segments_unaffected: Vec<String>,
    pub(crate) product_ids: Vec<String>,
    pub(crate) metrics: Vec<String>,
    pub(crate) pattern_ids: Vec<String>,
    pub(crate) sample_session_ids: Vec<String>,
    pub(crate) sample_interaction_ids: Vec<String>,
    pub(crate) impact_unit: String,
    pub(crate) impact: f64,
    pub(crate) impact_low: f64,
    pub(crate) impact_high: f64,
    pub(crate) significance: f64,
    pub(crate) rank_score: f64,
    pub(crate) evidence: String,
    pub(crate) created_at: i64,
}

/// One day finding as a story sees it.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) day: NaiveDate,
    /// When a slow change the part found (a trend finding) began, as its
    /// cumulative excess tells.
    pub(crate) onset: Option<NaiveDate>,
    pub(crate) metric: String,
    pub(crate) segment: String,
    pub(crate) z: f64,
    pub(crate) title: String,
    pub(crate) pattern_id: String,
    pub(crate) product_ids: Vec<String>,
    pub(crate) sessions: Vec<String>,
    pub(crate) interactions: Vec<String>,
    /// The finding's own impact, weighted by its unit (for choosing the
    /// lead and the main segment).
    pub(crate) weight: f64,
}

impl Part {
    /// A day row of the patterns table as a part (None for other periods
    /// and for products bought together).
    pub(crate) fn of_row(r: &PatternRow) -> Option<Part> {
        if r.period_kind != "day" {
            return None;
        }
        let ev: Value = serde_json::from_str(&r.evidence).ok()?;
        let metric = ev["metric"].as_str()?.to_string();
        if is_pair(&metric) {
            return None;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let im = &ev["impact"];
        let weight = match (
            im["estimate"].as_f64(),
            im["low"].as_f64(),
            im["high"].as_f64(),
        ) {
            (Some(e), Some(lo), Some(hi)) => {
                let at_least = if e < 0.0 { -hi } else { lo };
                at_least.max(0.0) * unit_weight(im["unit"].as_str().unwrap_or("events"))
            }
            _ => 0.0,
        };
        let day = date_of(r.period_start);
        let onset = ev["statistics"]["trend"]["onset"]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .filter(|d| *d <= day);
        Some(Part {
            day,
            onset,
            metric,
            segment: r.segment.clone().unwrap_or_default(),
            z: ev["z"].as_f64()?,
            title: r.title.clone(),
            pattern_id: r.pattern_id.clone(),
            product_ids: r.product_ids.clone(),
            sessions: strings(&ev["sample_session_ids"]),
            interactions: strings(&ev["sample_interaction_ids"]),
            weight,
        })
    }

    /// The first day the part's figures cover: its day, or the first of
    /// the week a trend finding pools.
    fn covers_from(&self) -> NaiveDate {
        if self.onset.is_some() {
            self.day - Days::new(super::trend::TREND_DAYS - 1)
        } else {
            self.day
        }
    }

    /// The cause family, which way the finding points for the brand, and
    /// whether that direction separates causes (traffic that rose and
    /// traffic that fell are two stories; a checkout whose conversion fell
    /// while its failures and retries rose is one).
    fn cause(&self) -> (String, &'static str, bool) {
        let (family, dir) = self.family();
        let split = !(family == "conversion" || family.starts_with("product:"));
        (family, dir, split)
    }

    fn family(&self) -> (String, &'static str) {
        let up = self.z > 0.0;
        let good = |better_when_up: bool| {
            if up == better_when_up {
                "better"
            } else {
                "worse"
            }
        };
        let rose = if up { "rose" } else { "fell" };
        let step_event = |e: &str| STEPS.iter().skip(2).any(|(_, name)| *name == e);
        let conversion = |dir: &'static str| ("conversion".to_string(), dir);
        // A name that is no metric is its own family.
        let own = || (format!("metric:{}", self.metric), rose);
        match self.metric.parse() {
            Ok(Metric::Funnel { .. }) => conversion(good(true)),
            Ok(Metric::ErrorSessions | Metric::Error(_) | Metric::ErrorAt { .. }) => {
                conversion(good(false))
            }
            Ok(Metric::Loop(k)) if is_failure(&k) || step_event(&k) => conversion(good(false)),
            Ok(Metric::Transition { from: a, to: b }) => {
                if is_failure(&b) {
                    conversion(good(false))
                } else if STEPS.windows(2).any(|w| w[0].1 == a && w[1].1 == b) {
                    conversion(good(true))
                } else if is_failure(&a) || step_event(&a) || step_event(&b) {
                    // A detour in the checkout (a retry, a step seen again).
                    conversion(rose)
                } else {
                    own()
                }
            }
            Ok(Metric::Event(k)) if is_failure(&k) => conversion(good(false)),
            Ok(Metric::Sessions | Metric::Visitors | Metric::Event(_)) => ("traffic".into(), rose),
            Ok(Metric::ProductViews(p)) => (format!("product:{p}"), rose),
            Ok(Metric::ProductConversion(p)) => (format!("product:{p}"), good(true)),
            _ => own(),
        }
    }
}

/// Group parts into stories: same cause (and direction, where it separates
/// causes), days at most [`MAX_GAP_DAYS`] apart (a trend finding counts
/// from the first day of its week). Each group is sorted by day, then
/// metric.
pub(crate) fn group(mut parts: Vec<Part>) -> Vec<(String, &'static str, Vec<Part>)> {
    // In order of the first day each covers (a trend finding covers the
    // week to its day), so a trend joins the days its week overlaps.
    parts.sort_by(|a, b| {
        (a.covers_from(), a.day, &a.metric, &a.segment).cmp(&(
            b.covers_from(),
            b.day,
            &b.metric,
            &b.segment,
        ))
    });
    let mut by_cause: BTreeMap<(String, &'static str), Vec<Part>> = BTreeMap::new();
    for p in parts {
        let (family, dir, split) = p.cause();
        by_cause
            .entry((family, if split { dir } else { "" }))
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for ((family, dir), ps) in by_cause {
        let mut cur: Vec<Part> = Vec::new();
        let mut last: Option<NaiveDate> = None;
        for p in ps {
            if last.is_some_and(|l| (p.covers_from() - l).num_days() > MAX_GAP_DAYS) {
                out.push((family.clone(), dir, std::mem::take(&mut cur)));
                last = None;
            }
            last = Some(last.map_or(p.day, |l| l.max(p.day)));
            cur.push(p);
        }
        if !cur.is_empty() {
            out.push((family, dir, cur));
        }
    }
    for (_, _, ps) in &mut out {
        ps.sort_by(|a, b| (a.day, &a.metric, &a.segment).cmp(&(b.day, &b.metric, &b.segment)));
    }
    out
}

/// An impact estimate.
#[derive(Debug, Clone, Copy)]
struct Impact {
    estimate: f64,
    se: f64,
}

impl Finder<'_> {
    /// Complete days `[from, to)` before `start`, at most
    /// [`BASELINE_DAYS`], with their statistics.
    fn baseline_days(&self, start: NaiveDate) -> Vec<(NaiveDate, &Stats)> {
        let from = start
            .checked_sub_days(Days::new(BASELINE_DAYS as u64))
            .unwrap_or(start);
        self.day_stats
            .range(from..start)
            .map(|(d, s)| (*d, s))
            .collect()
    }

    fn cell(st: &Stats, metric: &str, seg: &str) -> (f64, f64) {
        st.cells
            .get(&(metric.to_string(), seg.to_string()))
            .map_or((0.0, 0.0), |c| (c.k, c.n))
    }

    /// Orders of `seg` over `days`, against the baseline's orders per
    /// session times each day's sessions.
    fn orders_impact(
        &self,
        seg: &str,
        days: &[(NaiveDate, &Stats)],
        base: &[(NaiveDate, &Stats)],
    ) -> Option<(Impact, Value)> {
        let (orders, sessions) = (Metric::Orders.to_string(), Metric::Sessions.to_string());
        let (mut bo, mut bs) = (0.0, 0.0);
        for (_, st) in base {
            bo += Self::cell(st, &orders, seg).0;
            bs += Self::cell(st, &sessions, seg).0;
        }
        if bs < 60.0 {
            return None;
        }
        let r = bo / bs;
        let (mut est, mut var, mut day_sessions) = (0.0, 0.0, 0.0);
        let mut per_day = Vec::new();
        for (d, st) in days {
            let s = Self::cell(st, &sessions, seg).0;
            let o = Self::cell(st, &orders, seg).0;
            let expected = s * r;
            est += o - expected;
            var += expected * (1.0 - r);
            day_sessions += s;
            per_day.push(json!({"day": d.to_string(), "sessions": s, "orders": o,
                                "expected_orders": (expected * 10.0).round() / 10.0}));
        }
        var += day_sessions * day_sessions * r * (1.0 - r) / bs;
        let mut how = json!({"method": "orders per session", "baseline_orders": bo,
            "baseline_sessions": bs, "baseline_rate": (r * 10000.0).round() / 10000.0,
            "days": per_day});
        if let (Some(rev), Some(o)) = (
            self.revenue_impact(seg, base, est, var),
            how.as_object_mut(),
        ) {
            o.insert("revenue".into(), rev);
        }
        Some((
            Impact {
                estimate: est,
                se: var.sqrt(),
            },
            how,
        ))
    }

    /// The revenue of `orders` (± `var`) orders lost or gained: times the
    /// baseline's average order value, whose own uncertainty (the spread of
    /// order values over how many there were) adds to the interval. None
    /// when fewer than [`MIN_VALUED_ORDERS`] baseline orders carried a
    /// revenue.
    fn revenue_impact(
        &self,
        seg: &str,
        base: &[(NaiveDate, &Stats)],
        orders: f64,
        var: f64,
    ) -> Option<Value> {
        let (revenue, squares) = (Metric::Revenue.to_string(), Metric::RevenueSq.to_string());
        let (mut sum, mut n, mut sq) = (0.0, 0.0, 0.0);
        for (_, st) in base {
            let (k, m) = Self::cell(st, &revenue, seg);
            sum += k;
            n += m;
            sq += Self::cell(st, &squares, seg).0;
        }
        if n < MIN_VALUED_ORDERS {
            return None;
        }
        let aov = sum / n;
        let var_aov = ((sq / n - aov * aov).max(0.0)) / n;
        let (aov_shown, estimate) = revenue_estimate(orders, aov);
        let se = (var * aov * aov + orders * orders * var_aov).sqrt();
        let round0 = |x: f64| x.round();
        Some(json!({
            "estimate": round0(estimate),
            "low": round0(estimate - 1.96 * se),
            "high": round0(estimate + 1.96 * se),
            "average_order_value": aov_shown,
            "baseline_valued_orders": n,
            "currency": self.currency,
        }))
    }

    /// A count metric of `seg` over `days`, against the baseline's mean per
    /// day (weekday-adjusted when the baseline shows a weekday pattern).
    fn count_impact(
        &self,
        key: &Key,
        days: &[(NaiveDate, &Stats)],
        base: &[(NaiveDate, &Stats)],
    ) -> Option<(Impact, Value)> {
        if base.len() < 7 {
            return None;
        }
        let hist: Vec<f64> = base
            .iter()
            .map(|(_, st)| Self::cell(st, &key.0, &key.1).0)
            .collect();
        let wds: Vec<_> = base.iter().map(|(d, _)| d.weekday()).collect();
        let factors = weekday_factors(&hist, &wds);
        let f = |d: &NaiveDate| factors.map_or(1.0, |(f, _)| f[wd_index(d.weekday())]);
        let adj: Vec<f64> = hist.iter().zip(base).map(|(x, (d, _))| x / f(d)).collect();
        let n = adj.len() as f64;
        let mean = adj.iter().sum::<f64>() / n;
        let var_day = (adj.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).max(mean);
        let (mut est, mut var, mut expected_total) = (0.0, 0.0, 0.0);
        let mut per_day = Vec::new();
        for (d, st) in days {
            let x = Self::cell(st, &key.0, &key.1).0;
            let expected = mean * f(d);
            est += x - expected;
            var += var_day * f(d) * f(d);
            expected_total += expected;
            per_day.push(json!({"day": d.to_string(), "value": x, "expected": (expected * 10.0).round() / 10.0}));
        }
        // The baseline mean's own uncertainty, for every day at once.
        var += expected_total * expected_total * (var_day / n) / (mean * mean).max(1e-9);
        Some((
            Impact {
                estimate: est,
                se: var.sqrt(),
            },
            json!({"method": "count per day", "metric": key.0, "baseline_mean": (mean * 10.0).round() / 10.0,
                   "weekday_adjusted": factors.is_some(), "days": per_day}),
        ))
    }

    /// A rate metric: its hits over `days` against the baseline's rate.
    fn rate_impact(
        &self,
        key: &Key,
        days: &[(NaiveDate, &Stats)],
        base: &[(NaiveDate, &Stats)],
    ) -> Option<(Impact, Value)> {
        let (mut bk, mut bn) = (0.0, 0.0);
        for (_, st) in base {
            let (k, n) = Self::cell(st, &key.0, &key.1);
            bk += k;
            bn += n;
        }
        if bn < 60.0 {
            return None;
        }
        let p0 = bk / bn;
        let (mut est, mut var, mut total) = (0.0, 0.0, 0.0);
        for (_, st) in days {
            let (k, n) = Self::cell(st, &key.0, &key.1);
            est += k - n * p0;
            var += n * p0 * (1.0 - p0);
            total += n;
        }
        var += total * total * p0 * (1.0 - p0) / bn;
        Some((
            Impact {
                estimate: est,
                se: var.sqrt(),
            },
            json!({"method": "rate", "metric": key.0, "baseline_rate": (p0 * 10000.0).round() / 10000.0,
                   "baseline_n": bn, "n": total}),
        ))
    }

    /// The segments of the same dimensions as `affected` that had sessions
    /// on `days`, other than the affected ones.
    fn unaffected(&self, affected: &BTreeSet<String>, days: &[(NaiveDate, &Stats)]) -> Vec<String> {
        let dims: BTreeSet<&str> = affected
            .iter()
            .filter_map(|s| s.split_once('=').map(|(d, _)| d))
            .collect();
        let sessions = Metric::Sessions.to_string();
        let mut out = BTreeSet::new();
        for (_, st) in days {
            for ((m, seg), c) in &st.cells {
                if *m == sessions
                    && c.k > 0.0
                    && !affected.contains(seg)
                    && seg.split_once('=').is_some_and(|(d, _)| dims.contains(d))
                {
                    out.insert(seg.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// What a story cost or brought, on its main segment: orders for
    /// conversion, else its lead metric (a count or a rate); the unit, the
    /// estimate and how it was made.
    fn impact_of(
        &self,
        family: &str,
        lead: &Part,
        main: &str,
        days: &[(NaiveDate, &Stats)],
        base: &[(NaiveDate, &Stats)],
    ) -> (&'static str, Impact, Value) {
        let lead_key: Key = (lead.metric.clone(), main.to_string());
        let lead_key = if days.iter().any(|(_, st)| st.cells.contains_key(&lead_key)) {
            lead_key
        } else {
            (lead.metric.clone(), lead.segment.clone())
        };
        let (unit, estimate) = if family == "conversion" {
            ("orders", self.orders_impact(main, days, base))
        } else if is_count(&lead_key.0) {
            (
                unit_of(&lead_key.0),
                self.count_impact(&lead_key, days, base),
            )
        } else {
            (
                unit_of(&lead_key.0),
                self.rate_impact(&lead_key, days, base),
            )
        };
        let (impact, how) = estimate.unwrap_or((
            Impact {
                estimate: 0.0,
                se: 0.0,
            },
            json!({"method": "none: too little baseline"}),
        ));
        (unit, impact, how)
    }

    /// What a story of `parts` is about: its days, lead part and
    /// segments, the days' statistics and the baseline before them.
    fn scope<'p>(&self, parts: &'p [Part]) -> Option<Scope<'_, 'p>> {
        let last = parts.iter().map(|p| p.day).max()?;
        let start = self.story_start(parts, last)?;
        let ongoing = (self.horizon - last).num_days() <= MAX_GAP_DAYS;
        let lead = lead_of(parts)?;
        let main = heaviest_segment(parts);
        let affected: BTreeSet<String> = parts
            .iter()
            .filter(|p| !p.segment.is_empty())
            .map(|p| p.segment.clone())
            .collect();
        let days: Vec<(NaiveDate, &Stats)> = self
            .day_stats
            .range(start..=last)
            .map(|(d, s)| (*d, s))
            .collect();
        let base = self.baseline_days(start);
        let unaffected = self.unaffected(&affected, &days);
        // Every value of the main segment's dimension affected: not a
        // segment's story, all traffic's (when all traffic shows it too).
        let dim_of = |s: &str| s.split_once('=').map(|(d, _)| d.to_string());
        let main = if !main.is_empty()
            && parts.iter().any(|p| p.segment.is_empty())
            && !unaffected.iter().any(|u| dim_of(u) == dim_of(&main))
        {
            String::new()
        } else {
            main
        };
        Some(Scope {
            parts,
            start,
            last,
            ongoing,
            lead,
            main,
            affected,
            unaffected,
            days,
            base,
        })
    }

    /// The story of one group of parts.
    pub(crate) fn story(
        &self,
        org: &str,
        family: &str,
        direction: &str,
        parts: &[Part],
    ) -> Option<StoryRow> {
        let sc = self.scope(parts)?;
        let (unit, impact, how) = self.impact_of(family, sc.lead, &sc.main, &sc.days, &sc.base);
        let direction = if direction.is_empty() {
            sc.lead.cause().1
        } else {
            direction
        };
        let (low, high) = (
            round1(impact.estimate - 1.96 * impact.se),
            round1(impact.estimate + 1.96 * impact.se),
        );
        let at_least = if impact.estimate < 0.0 { -high } else { low };
        let rank_score = round1(at_least.max(0.0) * unit_weight(unit));
        let significance = parts.iter().map(|p| p.z.abs()).fold(0.0, f64::max);
        let amount = if estimate_ok(&how) {
            amount_words(impact.estimate, low, high, unit) + &revenue_words(&how["revenue"])
        } else {
            "impact not estimated (too little baseline)".to_string()
        };
        let (title, description) = sc.words(amount).title_and_description();
        let evidence = json!({
            "lead": {"metric": sc.lead.metric, "segment": sc.lead.segment, "day": sc.lead.day.to_string(), "z": sc.lead.z},
            "main_segment": if sc.main.is_empty() { Value::Null } else { json!(sc.main) },
            "days_with_findings": parts.iter().map(|p| p.day).collect::<BTreeSet<_>>().len(),
            "baseline_days": sc.base.len(),
            "impact": {"unit": unit, "estimate": round1(impact.estimate), "se": round1(impact.se),
                       "low": low, "high": high, "estimation": how},
        });
        let (sessions, interactions) = samples(parts, sc.lead, &sc.main);
        let mut pattern_ids: Vec<String> = parts.iter().map(|p| p.pattern_id.clone()).collect();
        pattern_ids.sort();
        pattern_ids.dedup();
        Some(StoryRow {
            org_id: org.to_string(),
            story_id: story_id(org, family, direction, sc.start),
            kind: family
                .split_once(':')
                .map_or(family, |(k, _)| k)
                .to_string(),
            direction: direction.to_string(),
            start_date: days_from_date(sc.start),
            last_date: days_from_date(sc.last),
            end_date: (!sc.ongoing).then(|| days_from_date(sc.last + Days::new(1))),
            ongoing: sc.ongoing,
            title,
            description,
            segments_affected: sc.affected.into_iter().collect(),
            segments_unaffected: sc.unaffected,
            product_ids: parts
                .iter()
                .flat_map(|p| p.product_ids.iter().cloned())
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
            metrics: parts
                .iter()
                .map(|p| p.metric.clone())
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
            pattern_ids,
            sample_session_ids: sessions,
            sample_interaction_ids: interactions,
            impact_unit: unit.to_string(),
            impact: round1(impact.estimate),
            impact_low: low,
            impact_high: high,
            significance: (significance * 100.0).round() / 100.0,
            rank_score,
            evidence: evidence.to_string(),
            created_at: Utc::now().timestamp_micros(),
        })
    }
}

/// A figure rounded to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The average order value as shown (to the cent) and the revenue of
/// `orders` orders at it: the product of the figures the reader is shown
/// (the orders to a tenth, as a story's impact states them), so the two
/// multiply out to the estimate. The interval around it keeps the
/// unrounded figures.
fn revenue_estimate(orders: f64, aov: f64) -> (f64, f64) {
    let aov_shown = (aov * 100.0).round() / 100.0;
    (aov_shown, round1(orders) * aov_shown)
}

/// What one story is about (see [`Finder::scope`]).
struct Scope<'s, 'p> {
    parts: &'p [Part],
    start: NaiveDate,
    last: NaiveDate,
    ongoing: bool,
    lead: &'p Part,
    /// The main segment ("" for all traffic).
    main: String,
    affected: BTreeSet<String>,
    unaffected: Vec<String>,
    days: Vec<(NaiveDate, &'s Stats)>,
    base: Vec<(NaiveDate, &'s Stats)>,
}

impl Scope<'_, '_> {
    /// The words of the story, with `amount` its impact in words.
    fn words(&self, amount: String) -> Words<'_> {
        Words {
            parts: self.parts,
            lead: self.lead,
            main: &self.main,
            affected: &self.affected,
            unaffected: &self.unaffected,
            when: when_words(self.start, self.last, self.ongoing),
            amount,
            base_days: self.base.len(),
            span_days: (self.last - self.start).num_days() + 1,
        }
    }
}

impl Finder<'_> {
    /// A story's first day. A change that grows shows on the day tests
    /// only once it is large, and each trend finding's own onset fits only
    /// the days up to it and leaves out the days the day tests found
    /// anything on (for a growing change, its clearest days). So the daily
    /// rate the story is about (the one most of its findings name) is
    /// fitted once over the baseline before its first finding and every day
    /// to its last, as a step and as a ramp (binomial likelihood): when a
    /// ramp fits better, the story starts where the ramp begins (never after
    /// its first finding), placed by all its evidence (BENCHMARKS.md,
    /// "Patterns: the evaluation harness"). Otherwise — a step, or a story
    /// of counts — it starts at its first finding, or at the earliest onset
    /// its trend findings estimated.
    fn story_start(&self, parts: &[Part], last: NaiveDate) -> Option<NaiveDate> {
        let found = parts.iter().map(|p| p.day).min()?;
        let mut keys: BTreeMap<Key, (usize, f64)> = BTreeMap::new();
        for p in parts.iter().filter(|p| !is_count(&p.metric)) {
            let e = keys
                .entry((p.metric.clone(), p.segment.clone()))
                .or_default();
            e.0 += 1;
            e.1 += p.weight;
        }
        let first = parts.iter().map(|p| p.onset.unwrap_or(p.day)).min();
        let Some((key, _)) = keys.into_iter().max_by(|a, b| {
            (a.1 .0, a.1 .1)
                .partial_cmp(&(b.1 .0, b.1 .1))
                .unwrap_or(std::cmp::Ordering::Equal)
        }) else {
            return first;
        };
        let from = found - Days::new((BASELINE_DAYS as u64) + super::trend::TREND_DAYS);
        let (step, ramp) = self.change_fits(&key, (from, last), &BTreeSet::new());
        if ramp.0 + RAMP_MARGIN < step.0 {
            Some(ramp.1.min(found))
        } else {
            first
        }
    }
}

/// How much likelier (in deviance: twice the log-likelihood ratio) a ramp
/// must be than a step before a story starts where the ramp begins: about
/// the 5% level of one degree of freedom, so an abrupt change whose days
/// happen to climb does not start early.
const RAMP_MARGIN: f64 = 4.0;

/// A story's id: the same organization, family, direction and first day
/// is the same story on every run (a re-run rewrites it in place).
fn story_id(org: &str, family: &str, direction: &str, start: NaiveDate) -> String {
    let key = format!("{org}\u{0}{family}\u{0}{direction}\u{0}{start}");
    format!("sto_{}", &sha256_hex(key.as_bytes())[..26])
}

/// What a story's title and description are made of.
struct Words<'a> {
    parts: &'a [Part],
    lead: &'a Part,
    main: &'a str,
    affected: &'a BTreeSet<String>,
    unaffected: &'a [String],
    /// "since 2026-11-25 (ongoing)".
    when: String,
    /// "about 134 orders lost (95% interval: …)".
    amount: String,
    base_days: usize,
    span_days: i64,
}

impl Words<'_> {
    /// The title names the segment, the change, when, and the impact; the
    /// description leads with the impact and the segment.
    fn title_and_description(self) -> (String, String) {
        let Words {
            parts,
            lead,
            main,
            affected,
            unaffected,
            when,
            amount,
            base_days,
            span_days,
        } = self;
        let who = if main.is_empty() {
            String::new()
        } else {
            let (dim, _) = main.split_once('=').unwrap_or(("", ""));
            let others_hit = affected
                .iter()
                .any(|s| s != main && s.split_once('=').is_some_and(|(d, _)| d == dim));
            let only = if others_hit { "" } else { " only" };
            format!("{}{only}", super::seg_title(main).trim_end_matches(": "))
        };
        let lead_part = parts
            .iter()
            .filter(|p| p.metric == lead.metric && p.segment == main)
            .min_by_key(|p| p.day)
            .unwrap_or(lead);
        // The segment is said once, in front.
        let prefix = super::seg_title(&lead_part.segment);
        let lead_title = lead_part
            .title
            .strip_prefix(prefix.as_str())
            .map_or(lead_part.title.clone(), super::enrich_cap);
        // A trend's window is the story's own span.
        let lead_title = lead_title
            .split(super::trend::TITLE_WINDOW)
            .next()
            .unwrap_or_default()
            .to_string();
        // The title and description name the main segment's dimension
        // ("desktop, tablet unaffected"); the column lists every dimension.
        let main_dim = main.split_once('=').map(|(d, _)| d);
        let unaffected_words: Vec<String> = unaffected
            .iter()
            .filter_map(|s| s.split_once('='))
            .filter(|(d, _)| Some(*d) == main_dim)
            .map(|(_, v)| v.to_string())
            .collect();
        let not_hit = if unaffected_words.is_empty() {
            String::new()
        } else {
            format!("; {} unaffected", unaffected_words.join(", "))
        };
        let title = if who.is_empty() {
            format!("{lead_title} {when}: {amount}")
        } else {
            format!("{who}: {lead_title} {when}: {amount}{not_hit}")
        };
        let metrics: BTreeSet<&str> = parts.iter().map(|p| p.metric.as_str()).collect();
        let n_days: BTreeSet<NaiveDate> = parts.iter().map(|p| p.day).collect();
        // The narrative leads with what it cost or brought, and for whom.
        let description = format!(
            "{}{} {when}, against the {} days before it: {lead_title}. Found on {} of its {} days \
             in {} finding{} ({}).{}",
            super::enrich_cap(&amount),
            seg_phrase(main),
            base_days,
            n_days.len(),
            span_days,
            parts.len(),
            if parts.len() == 1 { "" } else { "s" },
            metrics.iter().cloned().collect::<Vec<_>>().join(", "),
            if unaffected_words.is_empty() {
                String::new()
            } else {
                format!(" Not affected: {}.", unaffected_words.join(", "))
            }
        );
        (title, description)
    }
}

/// The part that matters most (then the strongest, then the first id).
fn lead_of(parts: &[Part]) -> Option<&Part> {
    parts.iter().max_by(|a, b| {
        a.weight
            .partial_cmp(&b.weight)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                a.z.abs()
                    .partial_cmp(&b.z.abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| b.pattern_id.cmp(&a.pattern_id))
    })
}

/// The segment whose findings weigh most ("" when none has a segment).
fn heaviest_segment(parts: &[Part]) -> String {
    let mut seg_weight: BTreeMap<&str, f64> = BTreeMap::new();
    for p in parts.iter().filter(|p| !p.segment.is_empty()) {
        *seg_weight.entry(p.segment.as_str()).or_default() += p.weight + p.z.abs() * 1e-6;
    }
    seg_weight
        .iter()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map_or(String::new(), |(s, _)| (*s).to_string())
}

/// "since D (ongoing)", "on D" or "from D to E".
fn when_words(start: NaiveDate, last: NaiveDate, ongoing: bool) -> String {
    if ongoing {
        format!("since {start} (ongoing)")
    } else if start == last {
        format!("on {start}")
    } else {
        format!("from {start} to {last}")
    }
}

/// "about N UNIT lost (95% interval: A to B lost)", and the like.
fn amount_words(estimate: f64, low: f64, high: f64, unit: &str) -> String {
    let lost = if estimate < 0.0 { "lost" } else { "gained" };
    let bound = |x: f64| {
        if x < 0.0 {
            format!("{:.0} lost", -x)
        } else {
            format!("{x:.0} gained")
        }
    };
    let interval = if low < 0.0 && high < 0.0 {
        format!("{:.0} to {:.0} lost", -high, -low)
    } else if low >= 0.0 {
        format!("{low:.0} to {high:.0} gained")
    } else {
        format!("{} to {}", bound(low), bound(high))
    };
    format!(
        "about {:.0} {unit} {lost} (95% interval: {interval})",
        estimate.abs()
    )
}

/// ", about 16,630 USD of revenue lost (95% interval: 13,100 to 20,160)": the
/// revenue of orders lost or gained, when it was estimated.
fn revenue_words(rev: &Value) -> String {
    let (Some(e), Some(lo), Some(hi)) = (
        rev["estimate"].as_f64(),
        rev["low"].as_f64(),
        rev["high"].as_f64(),
    ) else {
        return String::new();
    };
    let cur = rev["currency"]
        .as_str()
        .map_or(String::new(), |c| format!(" {c}"));
    let (lo, hi) = if e < 0.0 { (-hi, -lo) } else { (lo, hi) };
    format!(
        ", about {}{cur} of revenue {} (95% interval: {} to {})",
        thousands(e.abs()),
        if e < 0.0 { "lost" } else { "gained" },
        thousands(lo),
        thousands(hi)
    )
}

/// 16630.4 → "16,630"; -120 → "-120".
fn thousands(x: f64) -> String {
    let v = x.round() as i64;
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Up to five sample sessions and interactions, the lead metric in the
/// main segment's first.
fn samples(parts: &[Part], lead: &Part, main: &str) -> (Vec<String>, Vec<String>) {
    let mut sessions: Vec<String> = Vec::new();
    let mut interactions: Vec<String> = Vec::new();
    let mut ordered: Vec<&Part> = parts.iter().collect();
    ordered.sort_by_key(|p| (p.metric != lead.metric || p.segment != main, p.day));
    for p in &ordered {
        for s in &p.sessions {
            if sessions.len() < 5 && !sessions.contains(s) {
                sessions.push(s.clone());
            }
        }
        for s in &p.interactions {
            if interactions.len() < 5 && !interactions.contains(s) {
                interactions.push(s.clone());
            }
        }
    }
    (sessions, interactions)
}

fn estimate_ok(how: &Value) -> bool {
    !how["method"].as_str().unwrap_or("").starts_with("none")
}

/// Every story of one organization from its day findings, the ones that
/// matter most first.
pub(crate) fn stories(finder: &Finder, org: &str, parts: Vec<Part>) -> Vec<StoryRow> {
    let mut out: Vec<StoryRow> = group(parts)
        .iter()
        .filter_map(|(family, dir, ps)| finder.story(org, family, dir, ps))
        .collect();
    out.sort_by(|a, b| {
        b.rank_score
            .partial_cmp(&a.rank_score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                b.significance
                    .partial_cmp(&a.significance)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.story_id.cmp(&b.story_id))
    });
    out
}

/// Day rows of one organization for its stories: this run's where it
/// computed the day, else the table's.
pub(crate) fn day_parts(
    org: &str,
    existing: &[PatternRow],
    fresh: &HashMap<NaiveDate, Vec<PatternRow>>,
) -> Vec<Part> {
    let mut out: Vec<Part> = existing
        .iter()
        .filter(|r| r.org_id == org && r.period_kind == "day")
        .filter(|r| !fresh.contains_key(&date_of(r.period_start)))
        .filter_map(Part::of_row)
        .collect();
    for rows in fresh.values() {
        out.extend(rows.iter().filter_map(Part::of_row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revenue_estimate_is_the_shown_orders_times_the_shown_order_value() {
        // 36.73 orders at 178.004: shown as 36.7 orders at 178.00, so
        // 6,532.60, not the 6,538.08 of the unrounded figures (a reader
        // multiplying the story's numbers found 5 USD missing).
        let (aov, estimate) = revenue_estimate(-36.73, 178.004);
        assert_eq!(aov, 178.0);
        assert!((estimate - -6532.6).abs() < 1e-9, "{estimate}");
        assert_eq!(estimate.round(), (round1(-36.73) * aov).round());
        let (aov, estimate) = revenue_estimate(12.04, 100.004);
        assert_eq!((aov, estimate), (100.0, 1200.0));
    }
}
