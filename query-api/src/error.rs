//! API errors as RFC 9457 problem details (`application/problem+json`) with
//! stable codes. Internal causes are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `statement_not_allowed`.
    pub code: &'static str,
    /// Human-readable explanation, safe to show.
    pub detail: String,
    /// Seconds to wait before retrying (429/503).
    pub retry_after: Option<u64>,
}

/// The body of an error response.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
}

impl ApiError {
    /// An error with a status, code and safe detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500: the cause is logged here with `context`, the client gets a
    /// generic message.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// Map a lake error by its kind; only invalid-input messages reach the
    /// client.
    pub fn from_lake(context: &str, e: &crow_lake::Error) -> Self {
        use crow_lake::ErrorKind as K;
        match e.kind() {
            K::InvalidInput if !matches!(e, crow_lake::Error::Delta { .. }) => {
                Self::bad_request("invalid_request", e.to_string())
            }
            K::Unavailable | K::Conflict => {
                tracing::warn!(error = %e, "{context}");
                // A write that lost every commit race it was allowed to
                // retry (`lake.commit_retries`) says so: the storage is up.
                let detail = if e.kind() == K::Conflict {
                    "the table kept changing under this write (concurrent writers); retry"
                } else {
                    "storage is unavailable; retry later"
                };
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
                err.retry_after = Some(1);
                err
            }
            _ => Self::internal(context, e),
        }
    }

    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::NOT_ACCEPTABLE => "Not acceptable",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable request",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "Timeout",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal error",
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("https://crow.dev/problems/{}", self.code.replace('_', "-")),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Result of an API handler.
pub type ApiResult<T> = Result<T, ApiError>;
