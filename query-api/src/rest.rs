//! REST resources under `/api/v1/`. Every read goes through the same tenant
//! session as SQL ([`crate::tenant`]): the key's organization only, secrets
//! removed. Listings are ordered and paged with an opaque cursor.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use crow_lake::AsOf;
use datafusion::prelude::{col, lit, DataFrame, Expr, SessionContext};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::sql::df_error;
use crate::tenant::{tenant_context, Pins, TenantSchema};
use crate::ApiState;

/// Query parameters of the listings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Start of the time range (RFC 3339 time or a date), inclusive.
    pub from: Option<String>,
    /// End of the time range, exclusive.
    pub to: Option<String>,
    /// Channel: web, social or cctv.
    pub channel: Option<String>,
    /// Only rows that involve this product id.
    pub product: Option<String>,
    /// Insights: day, week, month, year or all.
    pub period_kind: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

struct Listing {
    table: &'static str,
    /// The time column ranges filter on.
    time_col: Option<&'static str>,
    /// Whether the time column is a date (else a timestamp).
    time_is_date: bool,
    /// The unique id column (last ordering key).
    id_col: &'static str,
    channel: bool,
    product: ProductFilter,
    period_kind: bool,
}

enum ProductFilter {
    Column(&'static str),
    List(&'static str),
}

async fn context(
    st: &ApiState,
    headers: &HeaderMap,
) -> ApiResult<(SessionContext, Arc<TenantSchema>)> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, headers, Scope::Read).await?;
    Ok(tenant_context(
        &st.lake,
        st.runtime.clone(),
        &p.org_id,
        AsOf::Latest,
        Pins::new(),
        8192,
    ))
}

fn parse_time(name: &str, v: &str, as_date: bool) -> ApiResult<ScalarValue> {
    let bad = || {
        ApiError::bad_request(
            "invalid_parameter",
            format!("`{name}` {v:?} is not an RFC 3339 time or a YYYY-MM-DD date"),
        )
    };
    let t: DateTime<Utc> = match DateTime::parse_from_rfc3339(v) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| bad())?
            .and_hms_opt(0, 0, 0)
            .ok_or_else(bad)?
            .and_utc(),
    };
    Ok(if as_date {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(bad)?;
        ScalarValue::Date32(Some(
            i32::try_from(t.date_naive().signed_duration_since(epoch).num_days())
                .map_err(|_| bad())?,
        ))
    } else {
        ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
    })
}

async fn list(
    st: &ApiState,
    headers: &HeaderMap,
    l: Listing,
    p: ListParams,
) -> ApiResult<Json<Value>> {
    let (ctx, schema) = context(st, headers).await?;
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let mut df: DataFrame = ctx.table(l.table).await.map_err(fail)?;
    let limit = p.limit.unwrap_or(100).clamp(1, st.cfg.max_page_size) as usize;
    let mut filters: Vec<Expr> = Vec::new();
    if let Some(tc) = l.time_col {
        if let Some(f) = &p.from {
            filters.push(col(tc).gt_eq(lit(parse_time("from", f, l.time_is_date)?)));
        }
        if let Some(t) = &p.to {
            filters.push(col(tc).lt(lit(parse_time("to", t, l.time_is_date)?)));
        }
    } else if p.from.is_some() || p.to.is_some() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "this resource has no time range",
        ));
    }
    match (&p.channel, l.channel) {
        (Some(c), true) => filters.push(col("channel").eq(lit(c.as_str()))),
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "this resource has no `channel` filter",
            ))
        }
        _ => {}
    }
    match (&p.product, &l.product) {
        (Some(pid), ProductFilter::Column(c)) => filters.push(col(*c).eq(lit(pid.as_str()))),
        (Some(pid), ProductFilter::List(c)) => filters.push(
            datafusion::functions_nested::expr_fn::array_has(col(*c), lit(pid.as_str())),
        ),
        _ => {}
    }
    match (&p.period_kind, l.period_kind) {
        (Some(k), true) => {
            if !matches!(k.as_str(), "day" | "week" | "month" | "year" | "all") {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "`period_kind` must be day, week, month, year or all",
                ));
            }
            filters.push(col("period_kind").eq(lit(k.as_str())));
        }
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "this resource has no `period_kind` filter",
            ))
        }
        _ => {}
    }
    // Keyset paging: the cursor is the last row's id; rows are ordered by id
    // (ids are time-ordered where the table has time).
    if let Some(c) = &p.cursor {
        if c.is_empty() || c.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "invalid `cursor`",
            ));
        }
        filters.push(col(l.id_col).gt(lit(c.as_str())));
    }
    for f in filters {
        df = df.filter(f).map_err(fail)?;
    }
    let df = df
        .sort(vec![col(l.id_col).sort(true, false)])
        .map_err(fail)?
        .limit(0, Some(limit + 1))
        .map_err(fail)?;
    let batches = df.collect().await.map_err(fail)?;
    let mut rows = crate::json_rows(&batches)?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .and_then(|r| r.get(l.id_col))
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    Ok(Json(json!({"data": rows, "next_cursor": next})))
}

/// `GET /api/v1/organization`: the key's own organization.
pub async fn organization(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (ctx, schema) = context(&st, &headers).await?;
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let df = ctx.table("organizations").await.map_err(fail)?;
    let batches = df
        .select_columns(&[
            "org_id",
            "name",
            "domain",
            "status",
            "created_at",
            "updated_at",
        ])
        .map_err(fail)?
        .limit(0, Some(1))
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    crate::json_rows(&batches)?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("the key's organization no longer exists"))
}

macro_rules! listing {
    ($fn:ident, $doc:literal, $listing:expr) => {
        #[doc = $doc]
        pub async fn $fn(
            State(st): State<Arc<ApiState>>,
            headers: HeaderMap,
            q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
        ) -> ApiResult<Json<Value>> {
            let Query(p) =
                q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
            list(&st, &headers, $listing, p).await
        }
    };
}

listing!(
    products,
    "`GET /api/v1/products`: the catalog.",
    Listing {
        table: "products",
        time_col: None,
        time_is_date: false,
        id_col: "product_id",
        channel: false,
        product: ProductFilter::Column("product_id"),
        period_kind: false,
    }
);
listing!(
    sessions,
    "`GET /api/v1/sessions`: sessions by start time, channel, product.",
    Listing {
        table: "sessions",
        time_col: Some("started_at"),
        time_is_date: false,
        id_col: "session_id",
        channel: true,
        product: ProductFilter::List("product_ids"),
        period_kind: false,
    }
);
listing!(
    interactions,
    "`GET /api/v1/interactions`: interactions by start time, channel, product.",
    Listing {
        table: "interactions",
        time_col: Some("started_at"),
        time_is_date: false,
        id_col: "interaction_id",
        channel: true,
        product: ProductFilter::List("product_ids"),
        period_kind: false,
    }
);
listing!(
    insights,
    "`GET /api/v1/insights`: patterns by period kind and period start.",
    Listing {
        table: "patterns",
        time_col: Some("period_start"),
        time_is_date: true,
        id_col: "pattern_id",
        channel: false,
        product: ProductFilter::List("product_ids"),
        period_kind: true,
    }
);

/// `GET /api/v1/usage`: daily usage and its priced amount.
pub async fn usage(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let (ctx, schema) = context(&st, &headers).await?;
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let mut df = ctx.table("usage_daily").await.map_err(fail)?;
    if let Some(f) = &p.from {
        df = df
            .filter(col("usage_date").gt_eq(lit(parse_time("from", f, true)?)))
            .map_err(fail)?;
    }
    if let Some(t) = &p.to {
        df = df
            .filter(col("usage_date").lt(lit(parse_time("to", t, true)?)))
            .map_err(fail)?;
    }
    let limit = p.limit.unwrap_or(366).clamp(1, st.cfg.max_page_size) as usize;
    let batches = df
        .sort(vec![col("usage_date").sort(true, false)])
        .map_err(fail)?
        .limit(0, Some(limit))
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    Ok(Json(
        json!({"data": crate::json_rows(&batches)?, "next_cursor": null}),
    ))
}
