//! Request bodies of the API routes: read whole, within a size bound and a
//! time bound, before any handler runs, so a slow or oversized upload gets
//! a problem+json 408 or 413 and holds nothing past its deadline.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crow_schemas::config::ApiConfig;

use crate::error::ApiError;

/// Bounds of one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Longest time to receive it.
    pub read_timeout: Duration,
}

/// The largest body an API route accepts: a statement of
/// `api.max_sql_bytes` with room for its JSON envelope, and at least 2 MiB.
pub fn api_body_limit(cfg: &ApiConfig) -> usize {
    usize::try_from(cfg.max_sql_bytes.saturating_add(64 * 1024))
        .unwrap_or(usize::MAX)
        .max(2 * 1024 * 1024)
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {max} bytes"),
    )
    .into_response()
}

/// Middleware: read the body within `limits`, then hand it on.
pub async fn bounded_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return too_large(limits.max_bytes);
    }
    if declared == Some(0)
        || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING))
    {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(
        limits.read_timeout,
        axum::body::to_bytes(body, limits.max_bytes),
    )
    .await
    {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                limits.read_timeout.as_secs()
            ),
        )
        .into_response(),
        Ok(Err(e)) => {
            if over_limit(&e) {
                too_large(limits.max_bytes)
            } else {
                ApiError::bad_request(
                    "invalid_body",
                    format!("could not read the request body: {e}"),
                )
                .into_response()
            }
        }
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Whether reading stopped at the length limit (axum's `to_bytes` reports it
/// as an error whose cause says "length limit exceeded").
fn over_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("length limit exceeded") {
            return true;
        }
        cause = c.source();
    }
    false
}
