//! Every pattern kind, and each threshold of a finding at its boundary:
//! just below is not a finding (or not notable), at or just above is.

use super::*;

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2).expect("date")
}

/// A day test against single baseline days, no weekday adjustment.
fn ctx(names: &HashMap<String, String>, min_base: usize) -> TestCtx<'_> {
    TestCtx {
        when: "on 2026-03-02".into(),
        baseline: "over the previous 28 days".into(),
        per_day: false,
        min_base,
        span: (day0(), day0() + Days::new(1)),
        names,
        visitor_type: true,
        season: None,
        flagged: None,
    }
}

/// Stats holding one cell.
fn stats(metric: &str, k: f64, n: f64) -> Stats {
    let mut s = Stats {
        sessions: 1000,
        days: 1.0,
        ..Stats::default()
    };
    s.add(metric.into(), "", k, n, None);
    s
}

/// `metric` tested with `k` of `n` today against `days` baseline days of
/// `bk` of `bn` each.
fn test(metric: &str, (k, n): (f64, f64), (bk, bn): (f64, f64), days: usize) -> Option<Finding> {
    let names = HashMap::new();
    let base: Vec<Stats> = (0..days).map(|_| stats(metric, bk, bn)).collect();
    let base: Vec<&Stats> = base.iter().collect();
    let key = (metric.to_string(), String::new());
    test_metric_on(&key, &stats(metric, k, n), &base, &ctx(&names, 28))
}

fn notable(f: Option<Finding>) -> bool {
    f.expect("tested").notable
}

#[test]
fn a_count_needs_a_change_of_min_change() {
    // 100 sessions a day: 129 is a 29 % rise, 130 is 30 %.
    assert_eq!(MIN_CHANGE, 0.3);
    assert!(!notable(test("sessions", (129.0, 0.0), (100.0, 0.0), 28)));
    assert!(notable(test("sessions", (130.0, 0.0), (100.0, 0.0), 28)));
    assert!(!notable(test("sessions", (71.0, 0.0), (100.0, 0.0), 28)));
    assert!(notable(test("sessions", (70.0, 0.0), (100.0, 0.0), 28)));
}

#[test]
fn a_count_needs_ten_and_a_full_baseline() {
    // Neither today nor the baseline reaches 10: not tested at all.
    assert!(test("event:Product Viewed", (9.0, 0.0), (6.0, 0.0), 28).is_none());
    assert!(test("event:Product Viewed", (10.0, 0.0), (6.0, 0.0), 28).is_some());
    // 27 baseline days are too few for a 28-day baseline.
    assert!(test("sessions", (300.0, 0.0), (100.0, 0.0), 27).is_none());
    assert!(test("sessions", (300.0, 0.0), (100.0, 0.0), 28).is_some());
}

#[test]
fn a_rate_needs_a_relative_change_of_min_change() {
    // Baseline 50 %: 64 % is a 28 % rise, 65 % is 30 %.
    assert!(!notable(test(
        "funnel:view>cart",
        (64.0, 100.0),
        (25.0, 50.0),
        28
    )));
    assert!(notable(test(
        "funnel:view>cart",
        (65.0, 100.0),
        (25.0, 50.0),
        28
    )));
}

#[test]
fn a_rate_needs_three_points() {
    // Baseline 6.25 %: +2.85 points is a 46 % change but under 3 points;
    // +3.15 points is a finding.
    assert!(!notable(test(
        "error_sessions",
        (91.0, 1000.0),
        (50.0, 800.0),
        28
    )));
    assert!(notable(test(
        "error_sessions",
        (94.0, 1000.0),
        (50.0, 800.0),
        28
    )));
}

#[test]
fn a_rate_needs_twenty_sessions_today_and_sixty_in_the_baseline() {
    let big = |n: f64| (n * 0.9).round();
    assert!(test("funnel:view>cart", (big(19.0), 19.0), (25.0, 50.0), 28).is_none());
    assert!(test("funnel:view>cart", (big(20.0), 20.0), (25.0, 50.0), 28).is_some());
    // One baseline day of 59 sessions is too few; 60 are enough.
    let names = HashMap::new();
    let key = ("funnel:view>cart".to_string(), String::new());
    let today = stats("funnel:view>cart", 90.0, 100.0);
    for (bn, tested) in [(59.0, false), (60.0, true)] {
        let base = [stats("funnel:view>cart", bn / 2.0, bn)];
        let base: Vec<&Stats> = base.iter().collect();
        assert_eq!(
            test_metric_on(&key, &today, &base, &ctx(&names, 1)).is_some(),
            tested,
            "baseline of {bn} sessions"
        );
    }
}

fn finding(metric: &str, z: f64, notable: bool) -> Finding {
    Finding {
        kind: kind_of(metric),
        metric: metric.into(),
        segment: String::new(),
        z,
        support: 100,
        product_ids: Vec::new(),
        facts: json!({}),
        title: String::new(),
        description: String::new(),
        samples: Vec::new(),
        children: Vec::new(),
        own: true,
        span: (day0(), day0() + Days::new(1)),
        p: p_value(z),
        notable,
        impact: 10.0,
        impact_se: 1.0,
        unit: unit_of(metric),
    }
}

fn kept(fs: Vec<Finding>, tests: usize) -> Vec<String> {
    benjamini_hochberg(fs, DEFAULT_FDR, tests)
        .into_iter()
        .map(|f| f.metric)
        .collect()
}

#[test]
fn a_finding_needs_z_min_whatever_the_correction_allows() {
    assert_eq!(Z_MIN, 3.0);
    // Alone in its family, p = 0.0028 passes the 1 % rate; |z| 2.99 does not.
    assert_eq!(
        kept(vec![finding("sessions", 2.99, true)], 1),
        [] as [&str; 0]
    );
    assert_eq!(kept(vec![finding("sessions", 3.0, true)], 1), ["sessions"]);
    assert_eq!(kept(vec![finding("sessions", -3.0, true)], 1), ["sessions"]);
    // Significant but not notable (too small a change): no finding.
    assert_eq!(
        kept(vec![finding("sessions", 8.0, false)], 1),
        [] as [&str; 0]
    );
}

#[test]
fn a_finding_needs_its_benjamini_hochberg_rank() {
    // |z| = 3 (p = 0.0027): within fdr · 1 / 3 = 0.0033 among 3 tests, not
    // within fdr · 1 / 4 = 0.0025 among 4.
    assert_eq!(kept(vec![finding("sessions", 3.0, true)], 3), ["sessions"]);
    assert_eq!(
        kept(vec![finding("sessions", 3.0, true)], 4),
        [] as [&str; 0]
    );
    // Rank 2 of 4 at fdr · 2 / 4 = 0.005: a stronger finding lifts it.
    assert_eq!(
        kept(
            vec![
                finding("sessions", 3.0, true),
                finding("visitors", 9.0, true)
            ],
            4
        ),
        ["visitors", "sessions"]
    );
}

/// Orders, products bought and a pair's orders for `pairs`.
fn basket(orders: f64, a: f64, b: f64, both: f64) -> Vec<Finding> {
    let mut s = Stats::default();
    s.add("orders".into(), "", orders, 0.0, None);
    s.add("bought:a".into(), "", a, 0.0, None);
    s.add("bought:b".into(), "", b, 0.0, None);
    s.add("pair:a|b".into(), "", both, 0.0, None);
    let names = HashMap::new();
    pairs(&s, &ctx(&names, 28))
}

#[test]
fn bought_together_needs_twenty_orders_five_together_and_twice_chance() {
    // Expected together by chance: 10 × 5 / 20 = 2.5; 5 together is 2×.
    assert!(basket(19.0, 10.0, 5.0, 5.0).is_empty(), "19 orders");
    let f = basket(20.0, 10.0, 5.0, 5.0);
    assert_eq!(f.len(), 1);
    assert!(f[0].notable, "lift 2.0");
    assert_eq!(f[0].kind, "product_trend");
    assert_eq!(f[0].product_ids, ["a", "b"]);
    // 4 together is too few, however unlikely.
    assert!(basket(200.0, 4.0, 4.0, 4.0).is_empty(), "4 orders together");
    // 10 × 5.5 / 20 = 2.75 expected: 5 together is a lift of 1.8.
    let f = basket(20.0, 10.0, 5.5, 5.0);
    assert_eq!(f.len(), 1);
    assert!(!f[0].notable, "lift 1.8");
}

#[test]
fn every_metric_family_is_a_pattern_kind() {
    let rise = |m: &str, count: bool| {
        let f = if count {
            test(m, (300.0, 0.0), (100.0, 0.0), 28)
        } else {
            test(m, (80.0, 100.0), (20.0, 100.0), 28)
        };
        let f = f.unwrap_or_else(|| panic!("{m} is tested"));
        assert!(f.notable && f.z >= Z_MIN, "{m}: {f:?}");
        assert!(!f.title.is_empty() && !f.description.is_empty(), "{m}");
        f.kind
    };
    assert_eq!(rise("sessions", true), "volume");
    assert_eq!(rise("visitors", true), "volume");
    assert_eq!(rise("event:Product Viewed", true), "volume");
    assert_eq!(rise("funnel:view>cart", false), "funnel");
    assert_eq!(
        rise("transition:Product Viewed>Product Added", false),
        "transition"
    );
    assert_eq!(rise("loop:Product Viewed", false), "transition");
    assert_eq!(rise("error:Payment Failed", true), "errors");
    assert_eq!(rise("error_sessions", false), "errors");
    assert_eq!(rise("product_views:p1", false), "product_trend");
    assert_eq!(rise("product_conversion:p1", false), "product_trend");
    // Parts of other metrics are never tested on their own.
    for m in [
        "transitions_from:Product Viewed",
        "bought:p1",
        "pair:a|b",
        "orders",
        "revenue",
    ] {
        assert!(test(m, (300.0, 0.0), (100.0, 0.0), 28).is_none(), "{m}");
    }
}

/// A week's rate finding: `p1` this week against `p0` in the baseline, its
/// z of sign `z`.
fn week(p1: f64, p0: f64, z: f64) -> Finding {
    let mut f = finding("funnel:payment>order", z, true);
    f.facts = json!({"value": {"rate": p1}, "baseline": {"rate": p0}});
    f
}

#[test]
fn a_trend_needs_thirty_percent_of_the_rarer_side() {
    use super::trend::sustained_notable;
    assert_eq!(MIN_CHANGE, 0.3);
    // Converting 84%: the rarer side is the 16% who do not; 30% of it is
    // 4.8 points (exactly 4.8 sits on floating-point rounding either way).
    assert!(!sustained_notable(&week(0.793, 0.84, -3.0)), "4.7 points");
    assert!(sustained_notable(&week(0.791, 0.84, -3.0)), "4.9 points");
    assert!(!sustained_notable(&week(0.887, 0.84, 3.0)), "4.7 points up");
    assert!(sustained_notable(&week(0.889, 0.84, 3.0)), "4.9 points up");
    // A rare rate: the rarer side counts as 2% at least, so 0.1% of
    // sessions failing must reach 0.7% (0.6 points; the half-point floor
    // is below it, so it never decides).
    assert!(!sustained_notable(&week(0.0069, 0.001, 3.0)), "0.59 points");
    assert!(sustained_notable(&week(0.0071, 0.001, 3.0)), "0.61 points");
}

#[test]
fn a_trend_must_still_move_on_its_last_two_days() {
    use super::trend::{still_going, RECENT_DAYS};
    assert_eq!(RECENT_DAYS, 2);
    let key: Key = ("funnel:payment>order".into(), String::new());
    // A week whose first five days moved a lot and whose last two hold
    // `k` of 200 against a baseline rate of 10%: |z| ≥ 2 needs 29
    // (z = 2.12); 28 gives z = 1.89.
    let window_with = |k: f64| -> Vec<Stats> {
        (0..7)
            .map(|d| {
                let mut s = Stats::default();
                let (k, n) = if d < 5 {
                    (60.0, 100.0)
                } else {
                    (k / 2.0, 100.0)
                };
                s.add(key.0.clone(), "", k, n, None);
                s
            })
            .collect()
    };
    let going = |k: f64, z: f64| {
        let stats = window_with(k);
        let window: Vec<(NaiveDate, &Stats)> = stats
            .iter()
            .enumerate()
            .map(|(i, s)| (day0() + Days::new(i as u64), s))
            .collect();
        still_going(&key, &window, &week(0.3, 0.1, z))
    };
    assert!(going(29.0, 4.0), "z 2.12, the week's direction");
    assert!(!going(28.0, 4.0), "z 1.89");
    assert!(!going(29.0, -4.0), "the other direction");
}
