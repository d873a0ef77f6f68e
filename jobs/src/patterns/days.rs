//! A finding's metric day by day, as the patterns job counts it: the
//! dashboard draws a pattern's evidence over the days around its period
//! (issue 16). The same code reads the sessions and counts them
//! ([`Sess::from_row`], [`Stats::of_day`]), so a drawn day is the figure the
//! job compared. A day the job has counted is read from `daily_metrics`;
//! another (not counted yet, or changed since) is counted from its
//! sessions, only the metrics asked for ([`Stats::of_day_only`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use crow_lake::batch::batches_to_rows;
use crow_lake::Lake;
use futures::StreamExt;
use serde::Serialize;

use super::store::{read_days, Sources};
use super::{is_count, Only, Sess, SessionIn, Stats};
use crate::{Params, Result};
use crow_schemas::metric::Metric;

/// One day of a metric in one segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayFigure {
    /// The UTC day.
    pub date: NaiveDate,
    /// The count, or the hits of a rate.
    pub k: f64,
    /// A rate's trials (0 for a count).
    pub n: f64,
    /// What is drawn: the count, or `k / n` (None when `n` is 0).
    pub value: Option<f64>,
}

/// Whether a metric is drawn as a count per day (else as a rate, `k / n`).
pub fn is_daily_count(metric: &str) -> bool {
    is_count(metric)
        || matches!(
            metric.parse(),
            Ok(Metric::Orders | Metric::ErrorAt { .. } | Metric::Bought(_) | Metric::Pair(..))
        )
}

/// Metrics (metric, segment; "" for all traffic) of organization `org` on
/// every day from `from` to `to` (exclusive), days without sessions
/// included (a count of 0, a rate of none): one series per metric, in order.
/// A day whose figures `daily_metrics` holds (current with the day's
/// sessions) is read from there; any other day is counted from its
/// sessions, by the same code.
pub async fn daily_metrics(
    lake: &Lake,
    org: &str,
    metrics: &[(String, String)],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Vec<DayFigure>>> {
    let sources = Sources::load(lake).await?;
    let days = sources.days_in(lake, from, to).await?;
    let names: Vec<String> = metrics.iter().map(|(m, _)| m.clone()).collect();
    let mut kept = read_days(lake, (Some(from), to), Some(org), Some(&names))
        .await?
        .remove(org)
        .unwrap_or_default()
        .days;
    let to_count: Vec<NaiveDate> = days
        .iter()
        .filter(|(_, current)| !**current)
        .map(|(d, _)| *d)
        .collect();
    let counted = count_days(lake, org, metrics, &to_count).await?;
    let mut out = vec![Vec::new(); metrics.len()];
    let empty = Stats::default();
    let mut d = from;
    while d < to {
        let stats = match days.get(&d) {
            Some(true) => kept.remove(&d).unwrap_or_default(),
            Some(false) => counted.get(&d).cloned().unwrap_or_default(),
            None => empty.clone(),
        };
        for (series, key) in out.iter_mut().zip(metrics) {
            let cell = stats.cells.get(key).copied().unwrap_or_default();
            series.push(figure(d, &key.0, cell.k, cell.n));
        }
        d = d.succ_opt().unwrap_or(to);
    }
    Ok(out)
}

/// `metrics` of `org` on `days`, counted from their sessions.
async fn count_days(
    lake: &Lake,
    org: &str,
    metrics: &[(String, String)],
    days: &[NaiveDate],
) -> Result<BTreeMap<NaiveDate, Stats>> {
    if days.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut params = Params::default();
    let list: Vec<String> = days.iter().map(|d| format!("DATE '{d}'")).collect();
    let sql = format!(
        "SELECT org_id, session_id, channel, CAST(session_date AS VARCHAR) AS session_date, visitor_id,
                device_type, traffic_source, is_returning, timeline
         FROM sessions WHERE org_id = {} AND session_date IN ({})",
        params.text("org", org),
        list.join(", ")
    );
    let ctx = lake.session().await?;
    let mut by_day: BTreeMap<NaiveDate, Vec<Sess>> = BTreeMap::new();
    let mut stream = params.sql(&ctx, &sql).await?.execute_stream().await?;
    while let Some(b) = stream.next().await {
        for r in batches_to_rows::<SessionIn>(std::slice::from_ref(&b?))? {
            let s = Sess::from_row(r)?;
            by_day.entry(s.day).or_default().push(s);
        }
    }
    // Only the metrics asked for are counted (the job counts them all).
    let only = std::sync::Arc::new(Only::new(metrics));
    Ok(by_day
        .into_iter()
        .map(|(d, v)| {
            let sessions: Vec<&Sess> = v.iter().collect();
            (d, Stats::of_day_only(&sessions, Some(only.clone())))
        })
        .collect())
}

fn figure(date: NaiveDate, metric: &str, k: f64, n: f64) -> DayFigure {
    let count = is_daily_count(metric);
    let value = if count {
        Some(k)
    } else if n > 0.0 {
        Some(k / n)
    } else {
        None
    };
    DayFigure {
        date,
        k,
        n: if count { 0.0 } else { n },
        value,
    }
}
