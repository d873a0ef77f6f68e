//! REST resources under `/api/v1/`. Every read goes through the same tenant
//! session as SQL ([`crate::tenant`]): the key's organization only, secrets
//! removed. Listings are ordered and paged with an opaque cursor.
//!
//! Paging is the same on every listing: rows are ordered by the listing's
//! unique key (an id, or the day for usage); a page holds at most `limit`
//! rows (default [`DEFAULT_PAGE_SIZE`], at most `api.max_page_size`) and
//! `next_cursor` is set exactly when more rows follow. The cursor names the
//! listing and the last row's key, so a cursor of another listing or a
//! hand-made one is refused with 400 rather than silently restarting.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use datafusion::prelude::{col, lit, DataFrame, Expr, SessionContext};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::sql::df_error;
use crate::tenant::TenantSchema;
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
    /// Page size: 1 to `api.max_page_size` (parsed here, so a bad value gets
    /// a clear message).
    pub limit: Option<String>,
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Only the row with this id (its key column: `story_id`, …).
    pub id: Option<String>,
}

struct Listing {
    table: &'static str,
    /// The time column ranges filter on.
    time_col: Option<&'static str>,
    /// Whether the time column is a date (else a timestamp).
    time_is_date: bool,
    /// The unique key column rows are ordered and paged by.
    id_col: &'static str,
    /// Whether the key column is a date (else text).
    id_is_date: bool,
    channel: bool,
    product: ProductFilter,
    period_kind: bool,
    /// The scope the listing needs (admin listings also see admin-only
    /// tables).
    needs: Scope,
}

enum ProductFilter {
    /// The listing has no product filter.
    None,
    Column(&'static str),
    List(&'static str),
}

async fn context(
    st: &ApiState,
    headers: &HeaderMap,
    needs: Scope,
) -> ApiResult<(SessionContext, Arc<TenantSchema>)> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, headers, needs).await?;
    Ok(st.latest_session(&p.org_id, needs == Scope::Admin))
}

fn parse_time(name: &str, v: &str, as_date: bool) -> ApiResult<ScalarValue> {
    let t = crow_schemas::time::parse_time(name, v)
        .map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))?;
    Ok(crate::export::bound(t, as_date))
}

/// Page size when a request gives no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The page size asked for: an integer from 1 to `max`.
pub(crate) fn page_size(limit: Option<&str>, max: u32) -> ApiResult<usize> {
    let Some(v) = limit else {
        return Ok(DEFAULT_PAGE_SIZE.min(max) as usize);
    };
    match v.trim().parse::<i64>() {
        Ok(n) if (1..=i64::from(max)).contains(&n) => Ok(n as usize),
        _ => Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "`limit` {v:?} is not a page size: give an integer from 1 to {max} (api.max_page_size)"
            ),
        )),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::bad_request(
        "invalid_parameter",
        "`cursor` is not a cursor of this listing: pass the `next_cursor` of the previous page unchanged",
    )
}

/// A cursor: the listing's table and the last row's key, hex-encoded (so it
/// is opaque and URL-safe).
pub(crate) fn encode_cursor(table: &str, last: &str) -> String {
    use std::fmt::Write;
    let raw = format!("{table}:{last}");
    let mut out = String::with_capacity(raw.len() * 2);
    for b in raw.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The last row's key in a cursor of `table`'s listing.
pub(crate) fn decode_cursor(table: &str, cursor: &str) -> ApiResult<String> {
    if cursor.is_empty() || cursor.len() > MAX_CURSOR_LEN || !cursor.len().is_multiple_of(2) {
        return Err(bad_cursor());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad_cursor)?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    match text.split_once(':') {
        Some((t, last)) if t == table && !last.is_empty() => Ok(last.to_string()),
        _ => Err(bad_cursor()),
    }
}

/// Longest cursor accepted (a key of up to about 1,000 bytes).
pub const MAX_CURSOR_LEN: usize = 2048;

async fn list(
    st: &ApiState,
    headers: &HeaderMap,
    l: Listing,
    p: ListParams,
) -> ApiResult<Json<Value>> {
    let (ctx, schema) = context(st, headers, l.needs).await?;
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let mut df: DataFrame = ctx.table(l.table).await.map_err(fail)?;
    let limit = page_size(p.limit.as_deref(), st.cfg.max_page_size)?;
    let filters = filters(&l, &p)?;
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
            .map(|id| encode_cursor(l.table, id))
    } else {
        None
    };
    Ok(Json(json!({"data": rows, "next_cursor": next})))
}

/// The conditions `p` asks of listing `l`: time range, channel, product,
/// period kind, id and the cursor's keyset; 400 for a filter `l` has not.
fn filters(l: &Listing, p: &ListParams) -> ApiResult<Vec<Expr>> {
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
        (Some(_), ProductFilter::None) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "this resource has no `product` filter",
            ))
        }
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
    if let Some(id) = &p.id {
        let id = if l.id_is_date {
            parse_time("id", id, true)?
        } else {
            ScalarValue::Utf8(Some(id.clone()))
        };
        filters.push(col(l.id_col).eq(lit(id)));
    }
    // Keyset paging: the cursor holds the last row's key; rows are ordered
    // by it (ids are time-ordered where the table has time).
    if let Some(c) = &p.cursor {
        let last = decode_cursor(l.table, c)?;
        let last = if l.id_is_date {
            parse_time("cursor", &last, true).map_err(|_| bad_cursor())?
        } else {
            ScalarValue::Utf8(Some(last))
        };
        filters.push(col(l.id_col).gt(lit(last)));
    }
    Ok(filters)
}

/// The columns of `organizations` `GET /api/v1/organization` answers (and
/// the OpenAPI document's `Organization` describes).
pub(crate) const ORGANIZATION_COLUMNS: &[&str] = &[
    "org_id",
    "name",
    "domain",
    "context",
    "status",
    "created_at",
    "updated_at",
];

/// `GET /api/v1/organization`: the key's own organization.
pub async fn organization(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (ctx, schema) = context(&st, &headers, Scope::Read).await?;
    let fail = |e: datafusion::error::DataFusionError| df_error(&e, Some(&schema));
    let df = ctx.table("organizations").await.map_err(fail)?;
    let batches = df
        .select_columns(ORGANIZATION_COLUMNS)
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
        id_is_date: false,
        channel: false,
        product: ProductFilter::Column("product_id"),
        period_kind: false,
        needs: Scope::Read,
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
        id_is_date: false,
        channel: true,
        product: ProductFilter::List("product_ids"),
        period_kind: false,
        needs: Scope::Read,
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
        id_is_date: false,
        channel: true,
        product: ProductFilter::List("product_ids"),
        period_kind: false,
        needs: Scope::Read,
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
        id_is_date: false,
        channel: false,
        product: ProductFilter::List("product_ids"),
        period_kind: true,
        needs: Scope::Read,
    }
);

listing!(
    stories,
    "`GET /api/v1/stories`: stories (findings that share a cause) by start day.",
    Listing {
        table: "stories",
        time_col: Some("start_date"),
        time_is_date: true,
        id_col: "story_id",
        id_is_date: false,
        channel: false,
        product: ProductFilter::List("product_ids"),
        period_kind: false,
        needs: Scope::Read,
    }
);

listing!(
    usage,
    "`GET /api/v1/usage`: daily usage and its priced amount, by day.",
    Listing {
        table: "usage_daily",
        time_col: Some("usage_date"),
        time_is_date: true,
        id_col: "usage_date",
        id_is_date: true,
        channel: false,
        product: ProductFilter::None,
        period_kind: false,
        needs: Scope::Read,
    }
);

listing!(
    audit,
    "`GET /api/v1/audit`: the organization's audit log, oldest first (admins only).",
    Listing {
        table: "audit_log",
        time_col: Some("at"),
        time_is_date: false,
        id_col: "audit_id",
        id_is_date: false,
        channel: false,
        product: ProductFilter::None,
        period_kind: false,
        needs: Scope::Admin,
    }
);

listing!(
    social_sources,
    "`GET /api/v1/social/sources`: the social sources the collector reads, by id.",
    Listing {
        table: "social_sources",
        time_col: None,
        time_is_date: false,
        id_col: "source_id",
        id_is_date: false,
        channel: false,
        product: ProductFilter::None,
        period_kind: false,
        needs: Scope::Read,
    }
);

listing!(
    cameras,
    "`GET /api/v1/cameras`: the CCTV cameras the organization registered, by camera id.",
    Listing {
        table: "cameras",
        time_col: None,
        time_is_date: false,
        id_col: "camera_id",
        id_is_date: false,
        channel: false,
        product: ProductFilter::None,
        period_kind: false,
        needs: Scope::Read,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_name_their_listing() {
        let c = encode_cursor("sessions", "ses_01J:x");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            decode_cursor("sessions", &c).ok().as_deref(),
            Some("ses_01J:x")
        );
        for bad in ["", "zz", "abc", "deadbeef", &c[..16], &c[1..]] {
            assert!(decode_cursor("sessions", bad).is_err(), "{bad}");
        }
        assert!(decode_cursor("products", &c).is_err());
    }

    #[test]
    fn page_sizes_are_checked() {
        assert_eq!(page_size(None, 1000).ok(), Some(100));
        assert_eq!(page_size(Some("2"), 1000).ok(), Some(2));
        assert_eq!(page_size(Some("1000"), 1000).ok(), Some(1000));
        for bad in ["0", "-1", "1001", "99999999999999999999", "two", ""] {
            assert!(page_size(Some(bad), 1000).is_err(), "{bad}");
        }
    }
}
