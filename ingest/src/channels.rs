//! Social captures and CCTV transcripts: their JSON contracts, read into
//! the rows of `crow_schemas::rows`.
//!
//! `POST /v1/social/captures`:
//! `{"run_id": "…", "captures": [{"platform": "instagram", "url": "…",
//! "canonical_url"?, "author"?, "published_at"?, "captured_at"?, "text"?,
//! "metrics"?: {…}, "capture_id"?}]}` — one collector run is one session.
//!
//! `POST /v1/cctv/transcripts`:
//! `{"segments": [{"store_id": "…", "camera_id": "…", "segment_start": "…",
//! "segment_end": "…", "text": "…", "observations"?: any, "model"?,
//! "segment_id"?}]}` — each camera-hour becomes one session.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::normalize::{parse_time, Rejection};
use crow_schemas::rows::{CctvTranscriptRow, FailureCode, SocialCaptureRow};
use crow_schemas::time::days_from_time;

fn reject(code: FailureCode, reason: impl Into<String>) -> Rejection {
    Rejection {
        code,
        reason: reason.into(),
    }
}

fn text(item: &Value, key: &str, required: bool) -> Result<Option<String>, Rejection> {
    match item.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) | Some(Value::String(_)) if !required => Ok(None),
        None | Some(Value::Null) | Some(Value::String(_)) => Err(reject(
            FailureCode::MissingField,
            format!("`{key}` is required"),
        )),
        Some(_) => Err(reject(
            FailureCode::InvalidField,
            format!("`{key}` must be a string"),
        )),
    }
}

fn time(item: &Value, key: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
    match text(item, key, false)? {
        None => Ok(None),
        Some(s) => parse_time(&s).map(Some).ok_or_else(|| {
            reject(
                FailureCode::InvalidTimestamp,
                format!("`{key}` is not an ISO-8601 time"),
            )
        }),
    }
}

/// Validate one social capture.
pub fn social_row(
    org: &str,
    run_id: Option<&Value>,
    item: &Value,
    now: DateTime<Utc>,
) -> Result<SocialCaptureRow, Rejection> {
    if !item.is_object() {
        return Err(reject(
            FailureCode::NotAnObject,
            "a capture must be a JSON object",
        ));
    }
    let run_id = match run_id {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => text(item, "run_id", true)?.unwrap_or_default(),
    };
    let platform = text(item, "platform", true)?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let url = text(item, "url", true)?.unwrap_or_default();
    let body = text(item, "text", false)?;
    let captured = time(item, "captured_at")?.unwrap_or(now);
    let metrics = match item.get("metrics") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.to_string()),
        Some(_) => {
            return Err(reject(
                FailureCode::InvalidField,
                "`metrics` must be an object",
            ))
        }
    };
    let content_hash = crow_lake::ids::sha256_hex(body.as_deref().unwrap_or(&url).as_bytes());
    Ok(SocialCaptureRow {
        org_id: org.to_string(),
        capture_id: text(item, "capture_id", false)?
            .unwrap_or_else(|| crow_lake::ids::new_id("cap")),
        run_id,
        platform,
        url,
        canonical_url: text(item, "canonical_url", false)?,
        author: text(item, "author", false)?,
        published_at: time(item, "published_at")?.map(|t| t.timestamp_micros()),
        captured_at: captured.timestamp_micros(),
        text: body,
        content_hash,
        metrics,
        received_at: now.timestamp_micros(),
        event_date: days_from_time(captured),
    })
}

/// Validate one CCTV transcript segment.
pub fn cctv_row(
    org: &str,
    item: &Value,
    now: DateTime<Utc>,
) -> Result<CctvTranscriptRow, Rejection> {
    if !item.is_object() {
        return Err(reject(
            FailureCode::NotAnObject,
            "a segment must be a JSON object",
        ));
    }
    let store_id = text(item, "store_id", true)?.unwrap_or_default();
    let camera_id = text(item, "camera_id", true)?.unwrap_or_default();
    let start = time(item, "segment_start")?
        .ok_or_else(|| reject(FailureCode::MissingField, "`segment_start` is required"))?;
    let end = time(item, "segment_end")?
        .ok_or_else(|| reject(FailureCode::MissingField, "`segment_end` is required"))?;
    if end < start {
        return Err(reject(
            FailureCode::InvalidField,
            "`segment_end` is before `segment_start`",
        ));
    }
    let body = text(item, "text", true)?.unwrap_or_default();
    Ok(CctvTranscriptRow {
        org_id: org.to_string(),
        segment_id: text(item, "segment_id", false)?
            .unwrap_or_else(|| crow_lake::ids::new_id("seg")),
        store_id,
        camera_id,
        segment_start: start.timestamp_micros(),
        segment_end: end.timestamp_micros(),
        text: body,
        observations: item
            .get("observations")
            .filter(|v| !v.is_null())
            .map(Value::to_string),
        model: text(item, "model", false)?,
        received_at: now.timestamp_micros(),
        event_date: days_from_time(start),
    })
}
