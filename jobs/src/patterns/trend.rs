//! Slow changes: a rate that creeps up or down a little every day never
//! stands out on one day against the 28 days before it (the baseline moves
//! along with it, and a small segment's day has too few sessions). The
//! trend test pools the week to a day — every weekday once — against the 28
//! days before that week, for the rates the day's own test did not find,
//! and estimates when the change began (its *onset*) from the cumulative
//! excess over the baseline rate. A story built from trend findings starts
//! at the onset, so its impact counts the change's early days too.

use std::collections::BTreeSet;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde_json::json;

use super::{
    benjamini_hochberg, is_count, one_fact, segment_explains_whole, test_metric, testable, Finder,
    Finding, Key, Period, Season, Stats, TestCtx, BASELINE_DAYS, MIN_CHANGE,
};

/// Days a trend test pools: the week to the day, so every weekday counts
/// once and a weekday effect cannot pass for a change.
pub const TREND_DAYS: u64 = 7;

/// What a trend finding's title adds: " over the 7 days to 2026-03-05".
pub(super) const TITLE_WINDOW: &str = " over the 7 days to ";

/// Days of the week that must not be incidents (days the day tests found
/// anything on, in any metric or segment): an abrupt incident the day tests
/// found is not a trend, nor is the week after it, nor its echo in other
/// segments.
const TREND_MIN_DAYS: usize = 4;

impl Finder<'_> {
    /// The trend findings of day `p`: the week to it against the 28 days
    /// before the week, for every rate `found` (the day's own findings)
    /// does not hold, corrected together (Benjamini–Hochberg at the job's
    /// FDR). Each carries `statistics.trend` with its window and onset.
    pub(super) fn trend(&self, p: &Period, found: &[Finding]) -> Vec<Finding> {
        let d = p.start;
        let (Some(w0), true) = (
            d.checked_sub_days(Days::new(TREND_DAYS - 1)),
            d < self.horizon,
        ) else {
            return Vec::new();
        };
        let Some(b0) = w0.checked_sub_days(Days::new(BASELINE_DAYS as u64)) else {
            return Vec::new();
        };
        if b0 < self.first_data {
            return Vec::new();
        }
        let window: Vec<(NaiveDate, &Stats)> =
            self.day_stats.range(w0..=d).map(|(d, s)| (*d, s)).collect();
        if window.len() < TREND_DAYS as usize {
            return Vec::new();
        }
        let keys = trend_keys(&window, found);
        let flagged = self.flagged.borrow();
        let own = self.own_flagged.borrow();
        // Incidents (days the day tests found anything on, any metric or
        // segment) are neither the week's trend nor the baseline's normal:
        // the same days are left out for every key.
        let days: Vec<NaiveDate> = window
            .iter()
            .map(|(day, _)| *day)
            .filter(|day| !own.contains(day))
            .collect();
        if days.len() < TREND_MIN_DAYS {
            return Vec::new();
        }
        let (base, base_days): (Vec<&Stats>, Vec<NaiveDate>) = self
            .day_stats
            .range(b0..w0)
            .filter(|(day, _)| !own.contains(day))
            .map(|(d, s)| (s, *d))
            .unzip();
        let mut cur = Stats::default();
        for (day, s) in &window {
            if days.contains(day) {
                cur.merge(s);
            }
        }
        let cur_days: Vec<(Weekday, &Stats)> = window
            .iter()
            .filter(|(day, _)| days.contains(day))
            .map(|(day, s)| (day.weekday(), *s))
            .collect();
        let when = format!("over the {TREND_DAYS} days to {d}");
        let baseline = format!("over the {BASELINE_DAYS} days before them");
        let ctx = self.trend_ctx(&when, &baseline, (w0, d), &base_days, cur_days, &flagged);
        let mut tests = 0;
        let mut fs = Vec::new();
        for key in keys {
            tests += 1;
            let Some(mut f) = test_metric(key, &cur, &base, &ctx) else {
                continue;
            };
            f.notable = sustained_notable(&f);
            if still_going(key, &window, &f) {
                let onset = self.onset(key, (b0, d), &own);
                f.title = format!("{}{TITLE_WINDOW}{d}", f.title);
                if let Some(o) = f.facts.as_object_mut() {
                    o.insert(
                        "trend".into(),
                        json!({"window": {"start": w0.to_string(), "end": d.to_string()},
                               "days_left_out": TREND_DAYS as usize - days.len(),
                               "onset": onset.to_string(), "onset_method": "step or ramp, binomial likelihood"}),
                    );
                }
                fs.push(f);
            }
        }
        let fs = benjamini_hochberg(fs, self.fdr, tests);
        // The same equivalences as the day's own tests, over the same week
        // and baseline the trends were tested on.
        segment_explains_whole(one_fact(fs), &cur, &base, &ctx)
    }

    fn trend_ctx<'s>(
        &'s self,
        when: &str,
        baseline: &str,
        (w0, d): (NaiveDate, NaiveDate),
        base_days: &[NaiveDate],
        cur: Vec<(Weekday, &'s Stats)>,
        flagged: &'s super::Flagged,
    ) -> TestCtx<'s> {
        TestCtx {
            when: when.to_string(),
            baseline: baseline.to_string(),
            per_day: true,
            min_base: 14,
            span: (w0, d + Days::new(1)),
            names: self.names,
            visitor_type: self.visitor_type(base_days.first().copied().unwrap_or(w0)),
            season: Some(Season {
                base: base_days.iter().map(Datelike::weekday).collect(),
                base_days: base_days.to_vec(),
                cur,
            }),
            flagged: Some(flagged),
        }
    }

    /// When a change of `key` that shows on `[from, to]` began: the day
    /// that best splits the daily rates into "as before" and "changed",
    /// where the change is either a step or a steady ramp, whichever is
    /// likelier. Each day counts as the binomial trials it holds (its
    /// successes out of its sessions), so a day at a rate near 0 or 1, whose
    /// count varies little, weighs more than a day near one half: the early
    /// days of a drift away from a rare rate place its onset. Neither fit
    /// depends on the baseline's estimate of the old rate, so a baseline a
    /// little off does not move the onset. Incidents (`left_out`) are left
    /// out of the fit, as out of the test: a trend does not begin inside an
    /// incident the day tests found.
    pub(super) fn onset(
        &self,
        key: &Key,
        span: (NaiveDate, NaiveDate),
        left_out: &BTreeSet<NaiveDate>,
    ) -> NaiveDate {
        let (step, ramp) = self.change_fits(key, span, left_out);
        if ramp.0 < step.0 {
            ramp.1
        } else {
            step.1
        }
    }

    /// The likeliest step and the likeliest ramp of `key`'s daily rates on
    /// `[from, to]`, each as (deviance, first changed day); `to` with an
    /// infinite deviance when the days are too few to split.
    pub(super) fn change_fits(
        &self,
        key: &Key,
        (from, to): (NaiveDate, NaiveDate),
        left_out: &BTreeSet<NaiveDate>,
    ) -> ((f64, NaiveDate), (f64, NaiveDate)) {
        let days: Vec<Day> = self
            .day_stats
            .range(from..=to)
            .filter(|(d, _)| !left_out.contains(d))
            .filter_map(|(d, st)| {
                let c = st.cells.get(key).copied().unwrap_or_default();
                (c.n > 0.0).then_some(Day {
                    day: *d,
                    k: c.k,
                    n: c.n,
                })
            })
            .collect();
        let (mut step, mut ramp) = ((f64::INFINITY, to), (f64::INFINITY, to));
        // At least a week before the onset, and one day from it on.
        for t in 7..days.len() {
            let (before, after) = days.split_at(t);
            let s = flat_deviance(before) + flat_deviance(after);
            if s < step.0 {
                step = (s, days[t].day);
            }
            let r = ramp_deviance(&days, t);
            if r < ramp.0 {
                ramp = (r, days[t].day);
            }
        }
        (step, ramp)
    }
}

/// One day of a rate: `k` of `n` trials.
#[derive(Clone, Copy)]
struct Day {
    day: NaiveDate,
    k: f64,
    n: f64,
}

/// The rates a trend test asks about: every testable rate of the week's
/// days that the day's own findings `found` do not hold.
fn trend_keys<'w>(window: &[(NaiveDate, &'w Stats)], found: &[Finding]) -> BTreeSet<&'w Key> {
    let skip: BTreeSet<Key> = found
        .iter()
        .map(|f| (f.metric.clone(), f.segment.clone()))
        .collect();
    let mut keys: BTreeSet<&Key> = BTreeSet::new();
    for (_, st) in window {
        keys.extend(
            st.cells
                .keys()
                .filter(|k| !is_count(&k.0) && testable(&k.0) && !skip.contains(*k)),
        );
    }
    keys
}

/// Whether a week's change of a rate is large enough to matter: by at
/// least [`MIN_CHANGE`] of its rarer side (a checkout converting 76% instead
/// of 84% lost half again as many buyers: the misses grew by 50%; failures
/// in 0.9% of sessions instead of 0.1% grew ninefold) and by half a
/// percentage point. A day's test asks for 30% of the rate itself and 3
/// points, which only a large change on one day's few sessions can show; a
/// week that held a smaller change all along is worth telling.
pub(super) fn sustained_notable(f: &Finding) -> bool {
    let rate = |v: &serde_json::Value| v["rate"].as_f64();
    let (Some(p1), Some(p0)) = (rate(&f.facts["value"]), rate(&f.facts["baseline"])) else {
        return f.notable;
    };
    let d = (p1 - p0).abs();
    d >= 0.005 && d / p0.min(1.0 - p0).max(0.02) >= MIN_CHANGE
}

/// Days at the end of the week that must still show the change.
pub(super) const RECENT_DAYS: usize = 2;

/// Whether the last [`RECENT_DAYS`] of the week still show the change the
/// week does (the same direction, |z| ≥ 2 against the week's baseline
/// rate): the week after an incident ended still holds its days, but its
/// last days no longer move.
pub(super) fn still_going(key: &Key, window: &[(NaiveDate, &Stats)], f: &Finding) -> bool {
    let p0 = f.facts["baseline"]["rate"].as_f64().unwrap_or(0.0);
    let (mut k, mut n) = (0.0, 0.0);
    for (_, st) in window.iter().rev().take(RECENT_DAYS) {
        let c = st.cells.get(key).copied().unwrap_or_default();
        k += c.k;
        n += c.n;
    }
    if n <= 0.0 || p0 <= 0.0 || p0 >= 1.0 {
        return false;
    }
    let z = (k / n - p0) / (p0 * (1.0 - p0) / n).sqrt();
    z.abs() >= 2.0 && (z > 0.0) == (f.z > 0.0)
}

/// Binomial deviance (minus twice the log-likelihood, up to a constant)
/// of `k` successes in `n` trials at rate `p`, kept off 0 and 1.
fn deviance(k: f64, n: f64, p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    -2.0 * (k * p.ln() + (n - k) * (1.0 - p).ln())
}

/// Deviance of days at one common rate (its maximum-likelihood estimate).
fn flat_deviance(days: &[Day]) -> f64 {
    let (k, n) = days.iter().fold((0.0, 0.0), |(k, n), d| (k + d.k, n + d.n));
    if n <= 0.0 {
        return 0.0;
    }
    days.iter().map(|d| deviance(d.k, d.n, k / n)).sum()
}

/// Deviance of the likeliest "flat, then a straight ramp from day `t` on"
/// fit: rate = a + b·max(0, days since day `t`), fitted by iteratively
/// reweighted least squares (each day weighted by its trials over the
/// binomial variance at the current fit).
fn ramp_deviance(days: &[Day], t: usize) -> f64 {
    let x = |i: usize| (days[i].day - days[t].day).num_days().max(0) as f64;
    let (k, n) = days.iter().fold((0.0, 0.0), |(k, n), d| (k + d.k, n + d.n));
    if n <= 0.0 {
        return f64::INFINITY;
    }
    let (mut a, mut b) = (k / n, 0.0);
    for _ in 0..4 {
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, d) in days.iter().enumerate() {
            let p = (a + b * x(i)).clamp(0.01, 0.99);
            let w = d.n / (p * (1.0 - p));
            let y = d.k / d.n;
            sw += w;
            sx += w * x(i);
            sy += w * y;
            sxx += w * x(i) * x(i);
            sxy += w * x(i) * y;
        }
        let det = sw * sxx - sx * sx;
        if sw <= 0.0 || det.abs() < 1e-12 {
            return f64::INFINITY;
        }
        b = (sw * sxy - sx * sy) / det;
        a = (sy - b * sx) / sw;
    }
    days.iter()
        .enumerate()
        .map(|(i, d)| deviance(d.k, d.n, a + b * x(i)))
        .sum()
}
