//! `GET /api/v1/invoice?month=YYYY-MM`: the caller's organization's invoice
//! of a month with its line items, the same as `crow billing report`
//! ([`crow_jobs::billing::invoices`], priced with the server's `[billing]`
//! price book). A month without usage is 404.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use crow_jobs::billing::{invoices, Prices};
use crow_schemas::config::BillingConfig;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::ApiState;

/// The handler.
pub async fn invoice(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Read).await?;
    let month = q.get("month").map(String::as_str).unwrap_or("");
    if crow_jobs::billing::month_range(month).is_err() || month.len() != 7 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`month` {month:?} is not a month like 2026-03"),
        ));
    }
    let prices = match st.prices.get() {
        Some(p) => p.clone(),
        None => Prices::from_config(&BillingConfig::default())
            .map_err(|e| ApiError::internal("invoice: prices", &e))?,
    };
    let found = invoices(&st.lake, month, Some(&p.org_id), &prices)
        .await
        .map_err(|e| ApiError::internal("invoice", &e))?;
    let inv = found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no usage in {month} yet")))?;
    serde_json::to_value(&inv)
        .map(Json)
        .map_err(|e| ApiError::internal("invoice", &e))
}
