//! `/api/v1/social/sources`: an organization's social sources. Listing
//! (`GET`, read scope) is a paged listing of [`crate::rest`]; adding
//! (`POST`) and removing (`DELETE …/{id}`) need the admin scope and are in
//! the audit log, with the same checks as `crow social add|remove`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crow_jobs::social;
use serde::Deserialize;
use serde_json::json;

use crate::account::body;
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::ApiState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSource {
    kind: String,
    target: String,
    schedule: Option<String>,
}

fn job_err(e: crow_jobs::Error) -> ApiError {
    match e {
        crow_jobs::Error::Invalid(m) => ApiError::bad_request("invalid_source", m),
        crow_jobs::Error::Lake(l) => ApiError::from_lake("social sources", &l),
        other => {
            tracing::error!(error = %other, "social sources");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the social sources could not be read or changed",
            )
        }
    }
}

/// `POST /api/v1/social/sources`: add a source.
pub async fn add_source(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Admin).await?;
    let req: NewSource = body(
        &bytes,
        r#"{"kind": "rss|youtube|mastodon|reddit|hackernews|bluesky|web|discover", "target": "…", "schedule"?: "0 * * * *"}"#,
    )?;
    let src = social::add(
        &st.lake,
        &p.org_id,
        &req.kind,
        &req.target,
        req.schedule.as_deref(),
    )
    .await
    .map_err(job_err)?;
    crate::audit_call(
        &st,
        &p,
        "social_source.create",
        &src.source_id,
        true,
        json!({"kind": src.kind, "target": src.target, "schedule": src.schedule}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(src.to_json())).into_response())
}

/// `DELETE /api/v1/social/sources/{id}`: remove a source (what it
/// captured stays). Another organization's source is not found.
pub async fn remove_source(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Admin).await?;
    if !social::remove(&st.lake, &p.org_id, &id)
        .await
        .map_err(job_err)?
    {
        return Err(ApiError::not_found(format!(
            "no social source `{id}` in your organization"
        )));
    }
    crate::audit_call(&st, &p, "social_source.remove", &id, true, json!({})).await;
    Ok(Json(json!({"source_id": id, "removed": true})).into_response())
}
