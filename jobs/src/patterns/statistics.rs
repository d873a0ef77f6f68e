//! Statistics: one metric tested against its baseline (counts against the
//! baseline's mean and spread, rates with a two-proportion test, exact tails
//! for small numbers), weekday seasonality, baselines without incidents and
//! the Benjamini–Hochberg correction.

use super::*;

/// Weekday factors (1 = an average day) of a daily series, shrunk toward 1
/// by how much of the weekdays' differences noise explains (positive-part
/// James–Stein over the 7 weekdays); None unless every weekday has 3 days
/// or more, or when noise explains all of it.
pub(super) fn weekday_factors(hist: &[f64], wds: &[Weekday]) -> Option<([f64; 7], f64)> {
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
pub(super) fn benjamini_hochberg(mut fs: Vec<Finding>, fdr: f64, tests: usize) -> Vec<Finding> {
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

/// Two-sided p-value of a z score.
pub(super) fn p_value(z: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 for erfc(|z|/√2).
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (poly * (-x * x).exp()).clamp(0.0, 1.0)
}

/// How a period (or the days a finding covers) is tested.
pub(super) struct TestCtx<'a> {
    /// "on 2026-11-25", "in the week of 2026-11-23 (its 3 complete days so
    /// far)", "from 2026-11-25 to 2026-11-27".
    pub(super) when: String,
    /// What the baseline is: "over the previous 28 days", "over the same
    /// weekdays of the previous 4 weeks", …
    pub(super) baseline: String,
    /// Counts are compared as averages per day (any period longer than a
    /// day, and every span).
    pub(super) per_day: bool,
    /// Baseline periods (or days) needed for a test.
    pub(super) min_base: usize,
    /// The complete days the current figures cover, `[start, end)`.
    pub(super) span: (NaiveDate, NaiveDate),
    /// Product names by id.
    pub(super) names: &'a HashMap<String, String>,
    /// Whether new vs returning visitors can be compared: not while the
    /// baseline reaches into the lake's first [`WARM_UP_DAYS`] (a visitor's
    /// visits before the data began are unknown, so early visitors look
    /// new and "new visitors fell" would only say that history grew).
    pub(super) visitor_type: bool,
    /// Weekdays of the baseline and the current days, when the baseline is
    /// made of single days (None: it is made of the same elapsed spans of
    /// earlier periods, whose weekdays already match).
    pub(super) season: Option<Season<'a>>,
    /// Days with a finding, per metric and segment: left out of later
    /// baselines of the same metric and segment.
    pub(super) flagged: Option<&'a Flagged>,
}

/// Days with a finding, per metric and segment.
pub(super) type Flagged = HashMap<Key, BTreeSet<NaiveDate>>;

impl<'a> TestCtx<'a> {
    /// The same test over other weekdays and left-out days.
    pub(super) fn with<'b>(
        &self,
        season: Option<Season<'b>>,
        flagged: Option<&'b Flagged>,
    ) -> TestCtx<'b>
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
pub(super) fn test_metric(
    key: &Key,
    cur: &Stats,
    base: &[&Stats],
    ctx: &TestCtx,
) -> Option<Finding> {
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

pub(super) fn median(v: &[f64]) -> f64 {
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
pub(super) fn binomial_p(k: f64, m: f64, q: f64) -> f64 {
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
pub(super) fn poisson_p(k: f64, lambda: f64) -> f64 {
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
pub(super) fn ln_gamma(x: f64) -> f64 {
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
pub(super) fn binomial_tail_p(k: f64, n: f64, p: f64) -> f64 {
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
pub(super) fn z_of_p(p: f64) -> f64 {
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
pub(super) fn test_metric_on(
    key: &Key,
    cur: &Stats,
    base: &[&Stats],
    ctx: &TestCtx,
) -> Option<Finding> {
    let (metric, seg) = key;
    if !testable(metric) {
        return None;
    }
    if base.len() < ctx.min_base || (!ctx.visitor_type && seg.starts_with("visitor_type=")) {
        return None;
    }
    // The metric's identity, read once (None: a name that is no metric,
    // told by its text).
    let parsed: Option<Metric> = metric.parse().ok();
    if is_count(metric) {
        let t = count_test(key, cur, base, ctx)?;
        Some(count_finding(key, parsed.as_ref(), cur, ctx, &t))
    } else {
        let t = rate_test(key, cur, base, ctx)?;
        rate_finding(key, parsed.as_ref()?, cur, base, ctx, &t)
    }
}

/// What a test found, before it is a [`Finding`] of its metric.
struct Found {
    z: f64,
    /// The sessions (or count) the finding rests on.
    support: f64,
    notable: bool,
    /// The difference from the baseline over the span, and its standard
    /// error.
    impact: (f64, f64),
    title: String,
    description: String,
    product_ids: Vec<String>,
    facts: Value,
}

impl Found {
    /// The finding of `key` in `cur`: its kind and unit by its metric, the
    /// sample sessions of its direction.
    fn finding(self, key: &Key, cur: &Stats, ctx: &TestCtx) -> Finding {
        let (metric, seg) = key;
        let samples = cur.samples.get(key).cloned().unwrap_or_default();
        Finding {
            kind: kind_of(metric),
            metric: metric.clone(),
            segment: seg.clone(),
            z: self.z,
            support: self.support as i64,
            product_ids: self.product_ids,
            facts: self.facts,
            title: self.title,
            description: self.description,
            samples: if self.z > 0.0 { samples.0 } else { samples.1 },
            children: Vec::new(),
            own: true,
            span: ctx.span,
            p: p_value(self.z),
            notable: self.notable,
            impact: self.impact.0,
            impact_se: self.impact.1,
            unit: unit_of(metric),
        }
    }
}

/// A count tested against its baseline's mean and spread.
struct CountTest {
    /// The current count (per day for periods longer than a day).
    k: f64,
    /// The baseline's mean, scaled to the current days' weekdays.
    mean: f64,
    /// The baseline's variance.
    var: f64,
    /// The test's standard error.
    se: f64,
    z: f64,
    /// Baseline periods.
    periods: usize,
    /// Whether weekday factors adjusted the baseline.
    weekday_adjusted: bool,
}

/// The count test of `key` (None below a count of 10 on both sides).
fn count_test(key: &Key, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Option<CountTest> {
    let c = cur.cells.get(key).copied().unwrap_or_default();
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
    let k = per_day(cur, c.k);
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
                s.cur.iter().map(|(w, _)| f[wd_index(*w)]).sum::<f64>() / s.cur.len().max(1) as f64,
                1.0 + lambda * lambda / same.max(1.0),
            )
        }
        None => (hist, 1.0, 1.0),
    };
    let n = hist.len() as f64;
    let mean = hist.iter().sum::<f64>() / n * scale;
    let var = hist.iter().map(|x| (x * scale - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let se = (var.max(mean).max(1.0) * widen).sqrt();
    let z = (k - mean) / se;
    // Small counts in the Poisson regime: the exact tail, not the
    // normal one.
    let z = if !ctx.per_day && factors.is_none() && var <= mean && mean < 100.0 {
        z_of_p(poisson_p(k, mean)).copysign(z)
    } else {
        z
    };
    if k.max(mean) < 10.0 {
        return None;
    }
    Some(CountTest {
        k,
        mean,
        var,
        se,
        z,
        periods: hist.len(),
        weekday_adjusted: factors.is_some(),
    })
}

/// A count test as a finding: its title, description and facts.
fn count_finding(
    key: &Key,
    parsed: Option<&Metric>,
    cur: &Stats,
    ctx: &TestCtx,
    t: &CountTest,
) -> Finding {
    let (metric, seg) = key;
    let CountTest { k, mean, z, .. } = *t;
    let change = (k - mean).abs() / mean.max(1.0);
    let notable = change >= MIN_CHANGE;
    let span_days = if ctx.per_day { cur.days.max(1.0) } else { 1.0 };
    let dir = if z > 0.0 { "rose" } else { "fell" };
    let what = match parsed {
        Some(Metric::Sessions) => format!("Sessions{}", seg_phrase(seg)),
        Some(Metric::Visitors) => "Visitors".to_string(),
        Some(Metric::Event(k)) => format!("\"{k}\" events"),
        Some(Metric::Error(k)) => {
            let at = failing_events(cur, seg, Some(k))
                .into_iter()
                .next()
                .map(|(_, step, _)| format!(" {}", step_phrase(&step)))
                .unwrap_or_default();
            format!("\"{k}\" failures{at}")
        }
        _ => metric.clone(),
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
        k,
        mean
    );
    let adjusted = if t.weekday_adjusted {
        ", for the same weekdays"
    } else {
        ""
    };
    let description = format!(
        "{what} {dir} to {avg}{:.0}{unit} {}, against a typical {:.0} per day {}{adjusted} (z = {:.1}).",
        k, ctx.when, mean, ctx.baseline, z
    );
    let mut facts = json!({"value": (k * 10.0).round() / 10.0, "baseline_mean": (mean * 10.0).round() / 10.0,
                      "baseline_sd": (t.var.sqrt() * 10.0).round() / 10.0, "baseline_periods": t.periods,
                      "weekday_adjusted": t.weekday_adjusted});
    if let Some(Metric::Error(k)) = parsed {
        facts["failing_events"] = failing_json(&failing_events(cur, seg, Some(k)));
    }
    Found {
        z,
        support: k,
        notable,
        impact: ((k - mean) * span_days, t.se * span_days),
        title,
        description,
        product_ids: Vec::new(),
        facts,
    }
    .finding(key, cur, ctx)
}

/// A rate tested against the pooled baseline.
struct RateTest {
    /// The current hits and tries.
    c: Cell,
    /// The baseline's hits and tries.
    bk: f64,
    bn: f64,
    /// The current rate and the expected one.
    p1: f64,
    p0: f64,
    se: f64,
    z: f64,
    /// Whether the expected rate is the current days' weekdays' rate.
    seasonal: bool,
}

/// The rate test of `key`: a two-proportion z-test against the pooled
/// baseline, made exact where hits or misses are few (None with fewer than
/// 20 current or 60 baseline tries).
fn rate_test(key: &Key, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Option<RateTest> {
    let c = cur.cells.get(key).copied().unwrap_or_default();
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
    // Skew: the exact binomial tail of the current days at the baseline
    // rate; the test keeps the larger p-value of the two (the normal one
    // carries the baseline's own uncertainty).
    let z_exact = z_of_p(binomial_tail_p(c.k, c.n, p0)).copysign(z);
    let z = if z_exact.abs() < z.abs() { z_exact } else { z };
    let t = RateTest {
        c,
        bk,
        bn,
        p1,
        p0,
        se,
        z,
        seasonal: seasonal.is_some(),
    };
    Some(RateTest {
        z: rare_outcome_z(&t),
        ..t
    })
}

/// Few hits (or few misses): the exact conditional test of the rarer
/// outcome — given all of them, how many fell on the current days
/// (binomial with the current days' expected share); the smaller |z|.
fn rare_outcome_z(t: &RateTest) -> f64 {
    let RateTest {
        c, bk, bn, p0, z, ..
    } = *t;
    let (hits, misses) = (c.k + bk, (c.n - c.k) + (bn - bk));
    if hits.min(misses) > 300.0 {
        return z;
    }
    let (k, total, rate, base_k) = if hits <= misses {
        (c.k, hits, p0, bk)
    } else {
        (c.n - c.k, misses, 1.0 - p0, bn - bk)
    };
    let q = if t.seasonal && base_k > 0.0 && rate > 0.0 {
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
}

/// What a rate finding says, in the words of its test.
struct RateWords<'a> {
    seg: &'a str,
    cur: &'a Stats,
    t: &'a RateTest,
    dir: &'a str,
    when: &'a str,
    baseline: &'a str,
}

/// A rate test as a finding (None for a metric with no words).
fn rate_finding(
    key: &Key,
    metric: &Metric,
    cur: &Stats,
    base: &[&Stats],
    ctx: &TestCtx,
    t: &RateTest,
) -> Option<Finding> {
    let seg = &key.1;
    let RateTest { c, p1, p0, z, .. } = *t;
    let change = (p1 - p0).abs() / p0.max(0.02);
    let notable = change >= MIN_CHANGE && (p1 - p0).abs() >= 0.03;
    let baseline = if t.seasonal {
        format!("{}, for the same weekdays", ctx.baseline)
    } else {
        ctx.baseline.clone()
    };
    let w = RateWords {
        seg,
        cur,
        t,
        dir: if z > 0.0 { "rose" } else { "fell" },
        when: ctx.when.as_str(),
        baseline: baseline.as_str(),
    };
    let (title, description, products) = rate_words(metric, &w, ctx.names)?;
    let mut facts = json!({"value": {"k": c.k, "n": c.n, "rate": (p1 * 10000.0).round() / 10000.0},
                  "baseline": {"k": t.bk, "n": t.bn, "rate": (p0 * 10000.0).round() / 10000.0, "periods": base.len(),
                               "weekday_adjusted": t.seasonal}});
    if *metric == Metric::ErrorSessions {
        facts["failing_events"] = failing_json(&failing_events(cur, seg, None));
    }
    Some(
        Found {
            z,
            support: c.n,
            notable,
            impact: ((p1 - p0) * c.n, t.se * c.n),
            title,
            description,
            product_ids: products,
            facts,
        }
        .finding(key, cur, ctx),
    )
}

/// A rate finding's title, description and products, by its metric.
fn rate_words(
    metric: &Metric,
    w: &RateWords,
    names: &HashMap<String, String>,
) -> Option<(String, String, Vec<String>)> {
    let RateWords {
        seg,
        dir,
        when,
        baseline: baseline_label,
        ..
    } = *w;
    let RateTest { c, p1, p0, z, .. } = *w.t;
    Some(match metric {
        Metric::Funnel { from: a, to: b } => (
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
        ),
        Metric::ErrorSessions => error_words(w),
        Metric::Transition { from: a, to: b } => (
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
        ),
        Metric::Loop(k) => (
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
        ),
        _ => return product_words(metric, w, names),
    })
}

/// The words of `error_sessions`: the cause named (the failing events and
/// the step they occur at).
fn error_words(w: &RateWords) -> (String, String, Vec<String>) {
    let RateWords {
        seg,
        cur,
        dir,
        when,
        baseline: baseline_label,
        ..
    } = *w;
    let RateTest { c, p1, p0, z, .. } = *w.t;
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
}

/// The words of a product's views or conversion (None for any other
/// metric).
fn product_words(
    metric: &Metric,
    w: &RateWords,
    names: &HashMap<String, String>,
) -> Option<(String, String, Vec<String>)> {
    let RateWords {
        dir,
        when,
        baseline: baseline_label,
        ..
    } = *w;
    let RateTest { c, p1, p0, z, .. } = *w.t;
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let (Metric::ProductViews(pid) | Metric::ProductConversion(pid)) = metric else {
        return None;
    };
    let name = name_of(pid);
    if let Metric::ProductViews(_) = metric {
        return Some((
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
        ));
    }
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
    Some((
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
    ))
}

/// Products bought together more often than chance (no baseline needed).
pub(super) fn pairs(cur: &Stats, ctx: &TestCtx) -> Vec<Finding> {
    let names = ctx.names;
    let all_traffic = |m: Metric| {
        cur.cells
            .get(&(m.to_string(), String::new()))
            .map_or(0.0, |c| c.k)
    };
    let orders = all_traffic(Metric::Orders);
    let mut out = Vec::new();
    if orders < 20.0 {
        return out;
    }
    for (key, c) in &cur.cells {
        let Ok(Metric::Pair(a, b)) = key.0.parse() else {
            continue;
        };
        let bought = |p: &str| all_traffic(Metric::Bought(p.to_string()));
        let expected = bought(&a) * bought(&b) / orders;
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
            names.get(&a).cloned().unwrap_or_else(|| a.clone()),
            names.get(&b).cloned().unwrap_or_else(|| b.clone()),
        );
        // A pair's kind is a product trend, its unit orders; z > 0, so its
        // samples are the sessions that bought both.
        let found = Found {
            z,
            support: c.k,
            notable,
            impact: (c.k - expected, expected.sqrt()),
            title: format!("{na} and {nb} are bought together ({lift:.1}× chance)"),
            description: format!(
                "{na} and {nb} were bought together in {:.0} of {:.0} orders {}, {lift:.1} times more often than chance would give ({expected:.1}; z = {z:.1}).",
                c.k,
                orders,
                ctx.when
            ),
            product_ids: vec![a, b],
            facts: json!({"orders_with_both": c.k, "expected": (expected * 10.0).round() / 10.0,
                          "lift": (lift * 10.0).round() / 10.0, "orders": orders}),
        };
        out.push(found.finding(key, cur, ctx));
    }
    out
}
