//! `GET /api/v1/search?q=…&kind=product|interaction|social_capture&limit=10`:
//! similarity search over the caller's organization's embeddings (read
//! scope, rate limited like every endpoint).
//!
//! The query text is embedded with `[ai.embeddings]`'s provider and
//! compared with every vector of that kind and model of the organization
//! (exact search: [`crow_jobs::embed::search`]). The vectors are read
//! through the caller's tenant session, so another organization's rows
//! are not even in the plan; the scoring runs on the query runtime.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use crow_jobs::ai::RetryPolicy;
use crow_jobs::embed::{self, Kind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::ApiState;

/// Longest query text, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most results per search.
pub const MAX_LIMIT: usize = 100;

/// The query string of a search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The text to search for.
    q: Option<String>,
    /// `product` (default), `interaction` or `social_capture`.
    kind: Option<String>,
    /// Results, 1 to [`MAX_LIMIT`] (default 10).
    limit: Option<usize>,
}

/// `GET /api/v1/search`.
pub async fn handler(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let p = auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Read).await?;
    let Query(params) = q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let (text, kind, limit) = check(params)?;
    let embedder = st.embedder();
    let (ctx, _schema) = st.latest_session(&p.org_id, false);
    let org = p.org_id.clone();
    let (e, t) = (embedder.clone(), text.clone());
    let mut task = st.query_rt.spawn(async move {
        embed::search(&ctx, e.as_ref(), &org, kind, &t, limit, RetryPolicy::new(2)).await
    });
    let hits = task
        .join()
        .await
        .map_err(|e| ApiError::internal("search", &e))?
        .map_err(search_err)?;
    let results: Vec<Value> = hits
        .into_iter()
        .map(|h| json!({"id": h.id, "score": h.score, "label": h.label}))
        .collect();
    Ok(Json(json!({
        "query": text,
        "kind": kind.as_str(),
        "provider": embedder.name(),
        "model": embedder.model(),
        "results": results,
    })))
}

/// The query's text, kind and limit, or a 400 naming the bad parameter.
fn check(p: SearchParams) -> ApiResult<(String, Kind, usize)> {
    let text = p.q.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "`q` is required: the text to search for",
        ));
    }
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`q` is longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    let kind_name = p.kind.unwrap_or_else(|| "product".into());
    let Some(kind) = Kind::parse(&kind_name) else {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`kind` must be product, interaction or social_capture, not `{kind_name}`"),
        ));
    };
    let limit = p.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`limit` must be 1–{MAX_LIMIT}"),
        ));
    }
    Ok((text, kind, limit))
}

fn search_err(e: crow_jobs::Error) -> ApiError {
    match e {
        crow_jobs::Error::Lake(l) => ApiError::from_lake("search", &l),
        crow_jobs::Error::Ai(m) => {
            tracing::warn!(error = %m, "search: embedding the query failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "embedding_unavailable",
                "the embedding provider could not embed the query; retry later",
            )
        }
        other => ApiError::internal("search", &other),
    }
}
