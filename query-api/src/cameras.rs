//! `/api/v1/cameras`: the CCTV cameras an organization registered (the
//! `cameras` table), so the CCTV channel knows which cameras and stores
//! a brand has.
//!
//! Listing (`GET`, read scope) is a paged listing of [`crate::rest`]: the
//! caller's organization's rows only, ordered by `camera_id`. Registering
//! (`POST`) and removing (`DELETE …/{id}`) need the admin scope (an admin
//! key, or a signed-in admin or owner) and are in the audit log.
//!
//! A camera's id is the one its transcripts carry
//! (`raw_cctv_transcripts.camera_id`), so it is chosen by the organization,
//! not made here: 1 to [`MAX_ID`] letters, digits, `-`, `_` or `.`; the
//! store id likewise. An id is unique in its organization: registering it
//! twice is 409 `camera_exists`. A read answers the common case without
//! writing; the insert itself decides (a merge on `org_id` and `camera_id`
//! that never updates: Delta's conflict check makes a racing second insert
//! retry, match and insert nothing), so two registrations racing cannot
//! both succeed — a read alone would let them (the integration test races
//! three). Another organization's camera, or an id of the wrong shape, is
//! not found.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::{rows_to_batch, ts_micros};
use crow_schemas::CAMERAS;
use datafusion::prelude::{col, lit};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::owned::{body, clean_text, df_err, lake_err, ts};
use crate::ApiState;

/// Longest camera or store id, in characters.
pub const MAX_ID: usize = 64;
/// Longest name or location, in characters.
pub const MAX_TEXT: usize = 200;

/// One row of `cameras`.
#[derive(Debug, Clone, Serialize)]
struct CameraRow {
    org_id: String,
    camera_id: String,
    store_id: String,
    name: String,
    location: Option<String>,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
}

impl CameraRow {
    /// As `GET /api/v1/cameras` shows a row.
    fn json(&self) -> Value {
        json!({"org_id": self.org_id, "camera_id": self.camera_id, "store_id": self.store_id,
               "name": self.name, "location": self.location, "created_at": ts(self.created_at)})
    }
}

/// Body of `POST /api/v1/cameras`.
#[derive(Debug)]
struct NewCamera {
    camera_id: String,
    store_id: String,
    name: String,
    location: Option<String>,
}

/// The fields a body may have.
const FIELDS: &[&str] = &["camera_id", "store_id", "name", "location"];

impl NewCamera {
    /// Read from a JSON body, or 400 `invalid_body` naming the field that
    /// is missing, unknown or not text (serde's own message names no field
    /// for a value of the wrong type).
    fn parse(bytes: &[u8]) -> ApiResult<Self> {
        let invalid = |detail: String| {
            ApiError::bad_request("invalid_body", format!("{detail}; send JSON like {LIKE}"))
        };
        let v: Value = body(bytes, LIKE)?;
        let Value::Object(m) = v else {
            return Err(invalid("the body must be a JSON object".into()));
        };
        if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(invalid(format!("unknown field `{k}`")));
        }
        let text = |k: &str, required: bool| match m.get(k) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(invalid(format!("missing field `{k}`"))),
            Some(_) => Err(invalid(format!("`{k}` must be a string"))),
        };
        let need = |k: &str| text(k, true).map(Option::unwrap_or_default);
        Ok(Self {
            camera_id: need("camera_id")?,
            store_id: need("store_id")?,
            name: need("name")?,
            location: text("location", false)?,
        })
    }
}

/// What a request body looks like, in a 400.
const LIKE: &str = r#"{"camera_id": "entrance-1", "store_id": "store-12", "name": "Entrance", "location"?: "Main door, looking in"}"#;

/// Whether `id` is a camera or store id: 1 to [`MAX_ID`] letters, digits,
/// `-`, `_` or `.` (so it is also safe in a URL path).
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An id as sent (trimmed), or 400 `invalid_camera` naming `field`.
fn clean_id(value: &str, field: &str) -> ApiResult<String> {
    let v = value.trim();
    if !is_id(v) {
        return Err(ApiError::bad_request(
            "invalid_camera",
            format!("`{field}` must be 1 to {MAX_ID} letters, digits, `-`, `_` or `.` (as the camera's transcripts carry it)"),
        ));
    }
    Ok(v.to_string())
}

/// A camera as stored, or 400 naming the first field that is wrong.
fn clean(b: NewCamera, org_id: &str, now: DateTime<Utc>) -> ApiResult<CameraRow> {
    let location = match b.location.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(clean_text(l, "location", "invalid_camera", MAX_TEXT)?),
    };
    Ok(CameraRow {
        org_id: org_id.to_string(),
        camera_id: clean_id(&b.camera_id, "camera_id")?,
        store_id: clean_id(&b.store_id, "store_id")?,
        name: clean_text(&b.name, "name", "invalid_camera", MAX_TEXT)?,
        location,
        created_at: now,
    })
}

/// 409 `camera_exists`.
fn exists(camera_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "camera_exists",
        format!("the organization already has a camera `{camera_id}`: remove it first, or choose another id"),
    )
}

/// `POST /api/v1/cameras`: register a camera. 201 with the camera; 409
/// `camera_exists` when the organization has one with this id.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Admin).await?;
    let b = NewCamera::parse(&bytes)?;
    let row = clean(b, &p.org_id, Utc::now())?;
    // The common case of a duplicate, answered without writing; the insert
    // below decides a race.
    let existing = st
        .lake
        .dataframe(CAMERAS.name)
        .await
        .map_err(lake_err("reading cameras"))?
        .filter(
            col("org_id")
                .eq(lit(row.org_id.as_str()))
                .and(col("camera_id").eq(lit(row.camera_id.as_str()))),
        )
        .map_err(df_err("reading cameras"))?
        .count()
        .await
        .map_err(df_err("reading cameras"))?;
    if existing > 0 {
        return Err(exists(&row.camera_id));
    }
    let batch = rows_to_batch(&CAMERAS, std::slice::from_ref(&row)).map_err(lake_err("saving"))?;
    // Insert only: a matched row is never updated, so nothing is written
    // for an id the organization already has.
    let (inserted, _) = st
        .lake
        .merge_if(
            CAMERAS.name,
            vec![batch],
            &["org_id", "camera_id"],
            Some(&lit(false)),
        )
        .await
        .map_err(lake_err("registering the camera"))?;
    if inserted == 0 {
        return Err(exists(&row.camera_id));
    }
    crate::audit_call(
        &st,
        &p,
        "camera.create",
        &row.camera_id,
        true,
        json!({"store_id": row.store_id, "name": row.name, "location": row.location}),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(row.json())).into_response())
}

/// `DELETE /api/v1/cameras/{id}`: remove a camera (the transcripts it sent
/// stay). 204; another organization's camera is not found.
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Admin).await?;
    let not_found = || ApiError::not_found(format!("no camera `{id}` in your organization"));
    if !is_id(&id) {
        return Err(not_found());
    }
    let removed = st
        .lake
        .delete_where(
            CAMERAS.name,
            &col("org_id")
                .eq(lit(p.org_id.as_str()))
                .and(col("camera_id").eq(lit(id.as_str()))),
        )
        .await
        .map_err(lake_err("removing the camera"))?;
    if removed == 0 {
        return Err(not_found());
    }
    crate::audit_call(&st, &p, "camera.delete", &id, true, json!({})).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(camera_id: &str, store_id: &str, name: &str, location: Option<&str>) -> NewCamera {
        NewCamera {
            camera_id: camera_id.into(),
            store_id: store_id.into(),
            name: name.into(),
            location: location.map(Into::into),
        }
    }

    fn refused_field(b: NewCamera) -> String {
        match clean(b, "org_1", Utc::now()) {
            Ok(r) => panic!("accepted {r:?}"),
            Err(e) => {
                assert_eq!(
                    (e.status, e.code),
                    (StatusCode::BAD_REQUEST, "invalid_camera")
                );
                e.detail
            }
        }
    }

    #[test]
    fn ids_and_fields_are_checked_and_named() {
        let ok = clean(
            new(" entrance-1 ", "store_12.a", " Entrance ", Some("  ")),
            "org_1",
            Utc::now(),
        );
        let ok = ok.expect("a good camera");
        assert_eq!(
            (
                ok.camera_id.as_str(),
                ok.store_id.as_str(),
                ok.name.as_str()
            ),
            ("entrance-1", "store_12.a", "Entrance")
        );
        assert_eq!(ok.location, None, "a blank location is none");
        assert!(is_id(&"c".repeat(MAX_ID)) && !is_id(&"c".repeat(MAX_ID + 1)));
        for (raw, field) in [
            (r#"{"store_id": "s", "name": "n"}"#, "`camera_id`"),
            (
                r#"{"camera_id": 7, "store_id": "s", "name": "n"}"#,
                "`camera_id`",
            ),
            (
                r#"{"camera_id": "c", "store_id": "s", "name": "n", "zoom": 2}"#,
                "`zoom`",
            ),
            (
                r#"{"camera_id": "c", "store_id": "s", "name": ["n"]}"#,
                "`name`",
            ),
            (r#"["c"]"#, "object"),
            ("not json", "JSON"),
        ] {
            match NewCamera::parse(raw.as_bytes()) {
                Ok(b) => panic!("{raw}: accepted {b:?}"),
                Err(e) => {
                    assert_eq!(e.code, "invalid_body", "{raw}");
                    assert!(e.detail.contains(field), "{raw}: {}", e.detail);
                }
            }
        }
        let parsed = NewCamera::parse(
            br#"{"camera_id": "c", "store_id": "s", "name": "n", "location": null}"#,
        )
        .expect("a camera without a location");
        assert_eq!(parsed.location, None);
        for (b, field) in [
            (new("", "s", "n", None), "`camera_id`"),
            (new("cam 1", "s", "n", None), "`camera_id`"),
            (new("cam/1", "s", "n", None), "`camera_id`"),
            (new("c", "s'1", "n", None), "`store_id`"),
            (new("c", "s", " ", None), "`name`"),
            (new("c", "s", "a\nb", None), "`name`"),
            (
                new("c", "s", "n", Some(&"l".repeat(MAX_TEXT + 1))),
                "`location`",
            ),
        ] {
            let detail = refused_field(b);
            assert!(detail.contains(field), "{field}: {detail}");
        }
    }
}
