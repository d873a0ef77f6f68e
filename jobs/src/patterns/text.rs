//! Text rendering: how findings, segments, steps and spans are worded.

use super::*;

/// "the payment step", "before the funnel".
pub(super) fn step_phrase(key: &str) -> String {
    if key == "start" {
        "before the funnel".into()
    } else {
        format!("at the {} step", step_name(key))
    }
}

pub(super) fn pct(x: f64) -> String {
    let v = x * 100.0;
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}%")
    } else {
        format!("{v:.1}%")
    }
}

pub(super) fn seg_phrase(seg: &str) -> String {
    match seg.split_once('=') {
        Some(("device_type", d)) => format!(" on {d}"),
        Some(("traffic_source", "direct")) => " from direct traffic".into(),
        Some(("traffic_source", s)) => format!(" from {s}"),
        Some(("visitor_type", v)) => format!(" among {v} visitors"),
        Some(("channel", c)) => format!(" in the {c} channel"),
        _ => String::new(),
    }
}

pub(super) fn seg_title(seg: &str) -> String {
    match seg.split_once('=') {
        Some(("device_type", d)) => format!("{}: ", enrich_cap(d)),
        Some(("traffic_source", s)) => format!("From {s}: "),
        Some(("visitor_type", v)) => format!("{} visitors: ", enrich_cap(v)),
        Some(("channel", c)) => format!("{}: ", enrich_cap(c)),
        _ => String::new(),
    }
}

pub(super) fn enrich_cap(s: &str) -> String {
    crate::ai::offline::capitalize(s)
}

pub(super) fn step_name(s: &str) -> &str {
    match s {
        "view" => "product view",
        other => other,
    }
}

/// The failing events as evidence.
pub(super) fn failing_json(failing: &[(String, String, f64)]) -> Value {
    Value::Array(
        failing
            .iter()
            .take(5)
            .map(|(e, step, k)| json!({"event": e, "step": step, "sessions": k}))
            .collect(),
    )
}

/// A finding's description, led by its impact and the segment it hit when
/// the impact's 95% interval excludes no change ("About 23 fewer orders
/// than typical on mobile (95% interval: 12 to 34). Conversion from …").
pub(super) fn described(f: &Finding) -> String {
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

pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A part's label and direction, as its parent confirms it.
pub(super) struct ChildLabel {
    pub(super) label: String,
    pub(super) z: f64,
}

/// "on 2026-11-21 and 2026-11-22", "in the weeks of …", "in November 2026".
pub(super) fn parts_phrase(children: &[String]) -> String {
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
