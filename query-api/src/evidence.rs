//! `GET /api/v1/insights/days?period_kind=week&period_start=2026-11-23`:
//! the metric of each pattern of one period day by day, over the days
//! around the period, for the dashboard's evidence charts (issue 16).
//!
//! The patterns are read through the caller's tenant session (the
//! strongest [`MAX_PATTERNS`], as the dashboard lists them; a period
//! without patterns of the caller's organization is 404), and their metrics
//! are counted per day by the patterns job's own code
//! ([`crow_jobs::patterns::daily_metrics`]) over the caller's
//! organization's sessions: from 28 days before the period (a day's
//! baseline) to 7 days after it, ending before today (today is still
//! filling), at most [`MAX_DAYS`] days (a year's or all time's patterns show
//! the period's last ones).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{Days, NaiveDate, Utc};
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::sql::df_error;
use crate::ApiState;

/// Days before the period that are drawn (the job's day baseline).
pub const DAYS_BEFORE: u64 = 28;
/// Days after the period that are drawn.
pub const DAYS_AFTER: u64 = 7;
/// The most days drawn.
pub const MAX_DAYS: u64 = 120;

/// The days drawn for a period `[start, end)` when today is `today`.
pub fn window(start: NaiveDate, end: NaiveDate, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let to = end
        .checked_add_days(Days::new(DAYS_AFTER))
        .unwrap_or(end)
        .min(today)
        .max(start.succ_opt().unwrap_or(start));
    let from = start
        .checked_sub_days(Days::new(DAYS_BEFORE))
        .unwrap_or(start)
        .max(to.checked_sub_days(Days::new(MAX_DAYS)).unwrap_or(to));
    (from, to)
}

/// The patterns drawn per period.
pub const MAX_PATTERNS: usize = 50;

/// The query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaysParams {
    /// day, week, month, year or all.
    pub period_kind: String,
    /// The period's first day.
    pub period_start: String,
}

/// The handler.
pub async fn days(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Result<Query<DaysParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Read).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let start = NaiveDate::parse_from_str(&q.period_start, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid_parameter",
            format!(
                "`period_start` {:?} is not a date like 2026-03-02",
                q.period_start
            ),
        )
    })?;
    let rows = period_patterns(&st, &p.org_id, &q.period_kind, start).await?;
    let Some(first) = rows.first() else {
        return Err(ApiError::not_found(format!(
            "no {} patterns from {start} in your organization",
            q.period_kind
        )));
    };
    let end = first["period_end"]
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(start);
    let (from, to) = window(start, end, Utc::now().date_naive());
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let ev: Value =
                serde_json::from_str(r["evidence"].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
            (
                ev["metric"].as_str().unwrap_or("").to_string(),
                ev["segment"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let series = crow_jobs::patterns::daily_metrics(&st.lake, &p.org_id, &keys, from, to)
        .await
        .map_err(|e| ApiError::internal("insight days", &e))?;
    let patterns: Vec<Value> = rows
        .iter()
        .zip(keys.iter().zip(series))
        .map(|(r, ((metric, segment), days))| {
            json!({
                "pattern_id": r["pattern_id"],
                "metric": metric,
                "segment": if segment.is_empty() { Value::Null } else { json!(segment) },
                "measure": if crow_jobs::patterns::is_daily_count(metric) { "count" } else { "rate" },
                "days": days,
            })
        })
        .collect();
    Ok(Json(json!({
        "period": {"kind": q.period_kind, "start": start.to_string(), "end": end.to_string()},
        "from": from.to_string(),
        "to": to.to_string(),
        "patterns": patterns,
    })))
}

/// The most significant patterns (at most [`MAX_PATTERNS`]) of the period
/// `period_kind` starting on `start`, as JSON rows.
async fn period_patterns(
    st: &ApiState,
    org_id: &str,
    period_kind: &str,
    start: NaiveDate,
) -> ApiResult<Vec<Value>> {
    let (ctx, schema) = st.latest_session(org_id, false);
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let batches = ctx
        .sql(
            "SELECT pattern_id, significance, CAST(period_end AS VARCHAR) AS period_end, evidence,
                    period_kind, CAST(period_start AS VARCHAR) AS period_start FROM patterns",
        )
        .await
        .map_err(fail)?
        .filter(
            col("period_kind")
                .eq(lit(period_kind))
                .and(col("period_start").eq(lit(start.to_string()))),
        )
        .map_err(fail)?
        .sort(vec![
            col("significance").sort(false, true),
            col("pattern_id").sort(true, true),
        ])
        .map_err(fail)?
        .limit(0, Some(MAX_PATTERNS))
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    crate::json_rows(&batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn windows_surround_the_period_and_end_before_today() {
        // A week long over: 28 days before, 7 after.
        assert_eq!(
            window(d("2026-10-05"), d("2026-10-12"), d("2026-12-01")),
            (d("2026-09-07"), d("2026-10-19"))
        );
        // The latest week: up to yesterday.
        assert_eq!(
            window(d("2026-11-23"), d("2026-11-30"), d("2026-12-01")),
            (d("2026-10-26"), d("2026-12-01"))
        );
        // A year: its last 120 days.
        assert_eq!(
            window(d("2025-01-01"), d("2026-01-01"), d("2026-12-01")),
            (d("2025-09-10"), d("2026-01-08"))
        );
    }
}
