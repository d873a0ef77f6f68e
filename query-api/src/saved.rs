//! `/api/v1/saved-queries`: a signed-in user's named SQL queries, kept for
//! the dashboard's SQL console.
//!
//! A saved query is a row of `saved_queries` owned by one user of one
//! organization. Only the owner lists, opens, changes or deletes one: any
//! other user, of the same organization or another (an admin too), gets
//! 404 as for a query that never existed. An API key has no user, so no
//! saved queries: 403 `user_required`, as for chats.
//!
//! Names are unique among a user's saved queries (409 `name_taken`), 1 to
//! [`MAX_NAME`] characters without control characters; the SQL is 1 to
//! [`MAX_SQL`] characters; a user keeps at most `api.max_saved_queries`
//! (200 by default). Saving
//! does not run the query: the console runs it through `POST /api/v1/sql`,
//! where the tenant's own rows are all it can read.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::ts_micros;
use crow_lake::ids::new_id;
use crow_schemas::SAVED_QUERIES;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::owned::{body, clean_text, lake_err, ts, Owned, OwnedRow};
use crate::ApiState;

/// Longest name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest SQL, in characters.
pub const MAX_SQL: usize = 20_000;

/// Store `row` and write `action` on it in the audit log.
async fn save_audited(
    st: &ApiState,
    p: &crate::auth::Principal,
    row: &SavedRow,
    action: &str,
) -> ApiResult<()> {
    SAVED.save(st, row, None, "saving the query").await?;
    crate::audit_call(
        st,
        p,
        action,
        &row.query_id,
        true,
        json!({"name": row.name}),
    )
    .await;
    Ok(())
}

/// One row of `saved_queries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedRow {
    org_id: String,
    query_id: String,
    user_id: String,
    name: String,
    sql: String,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    updated_at: DateTime<Utc>,
}

impl SavedRow {
    fn json(&self) -> Value {
        json!({"id": self.query_id, "name": self.name, "sql": self.sql,
               "created_at": ts(self.created_at), "updated_at": ts(self.updated_at)})
    }
}

impl OwnedRow for SavedRow {
    fn id(&self) -> &str {
        &self.query_id
    }

    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

/// Saved queries as owned rows.
const SAVED: Owned = Owned {
    table: &SAVED_QUERIES,
    id_col: "query_id",
    prefix: "sqy",
    noun: "saved query",
    plural: "saved queries",
    api_key_hint: "sign in to the dashboard, or keep the SQL in your program",
    reading: "reading saved queries",
};

/// A name as stored (trimmed), or 400 `invalid_name`.
fn clean_name(n: &str) -> ApiResult<String> {
    clean_text(n, "name", "invalid_name", MAX_NAME)
}

/// SQL as stored (as sent), or 400 `invalid_sql`.
fn clean_sql(s: &str) -> ApiResult<String> {
    let n = s.chars().count();
    if s.trim().is_empty() || n > MAX_SQL {
        return Err(ApiError::bad_request(
            "invalid_sql",
            format!("`sql` must be 1 to {MAX_SQL} characters (this is {n})"),
        ));
    }
    Ok(s.to_string())
}

/// The lock a user's saves take in this process, so that a save's checks
/// (the cap, a unique name) and its write happen as one: saves sent at once
/// cannot all pass the checks before any of them is written. (Servers that
/// share a lake don't share it: two of them can still each pass a check
/// with a save in flight on the other.)
fn user_lock(org_id: &str, user: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;
    static LOCKS: LazyLock<std::sync::Mutex<Locks>> = LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Only the locks someone holds or waits for are kept.
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks
        .entry((org_id.to_string(), user.to_string()))
        .or_default()
        .clone()
}

/// 409 `name_taken` when another of the user's saved queries has `name`.
fn check_unique(all: &[SavedRow], name: &str, except: Option<&str>) -> ApiResult<()> {
    let taken = all
        .iter()
        .any(|r| r.name == name && Some(r.query_id.as_str()) != except);
    if taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!("you already have a saved query named {name:?}: choose another name"),
        ));
    }
    Ok(())
}

/// `GET /api/v1/saved-queries`: the signed-in user's saved queries, most
/// recently changed first (all of them: a user keeps at most
/// `api.max_saved_queries`).
pub async fn list(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, user) = SAVED.owner(&st, &headers).await?;
    let data: Vec<Value> = SAVED
        .all_of::<SavedRow>(&st, &p, &user)
        .await?
        .iter()
        .map(SavedRow::json)
        .collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

/// Body of `POST /api/v1/saved-queries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    sql: String,
}

/// `POST /api/v1/saved-queries` `{"name", "sql"}`: save a query. 201.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = SAVED.owner(&st, &headers).await?;
    let b: CreateBody = body(&bytes, r#"{"name": "Orders by day", "sql": "SELECT …"}"#)?;
    let name = clean_name(&b.name)?;
    let sql = clean_sql(&b.sql)?;
    let _one_at_a_time = user_lock(&p.org_id, &user).lock_owned().await;
    let all = SAVED.all_of::<SavedRow>(&st, &p, &user).await?;
    let max = st.cfg.max_saved_queries;
    if all.len() >= max as usize {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_saved_queries",
            format!("you keep at most {max} saved queries: delete one first"),
        ));
    }
    check_unique(&all, &name, None)?;
    let now = Utc::now();
    let row = SavedRow {
        org_id: p.org_id.clone(),
        query_id: new_id("sqy"),
        user_id: user,
        name,
        sql,
        created_at: now,
        updated_at: now,
    };
    save_audited(&st, &p, &row, "saved_query.create").await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"saved_query": row.json()})),
    )
        .into_response())
}

/// `GET /api/v1/saved-queries/{id}`: one of the user's saved queries.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, user) = SAVED.owner(&st, &headers).await?;
    let row = SAVED.one_of::<SavedRow>(&st, &p, &user, &id).await?;
    Ok(axum::Json(json!({"saved_query": row.json()})).into_response())
}

/// Body of `PATCH /api/v1/saved-queries/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    sql: Option<String>,
}

/// `PATCH /api/v1/saved-queries/{id}` `{"name"?, "sql"?}`: rename it,
/// change its SQL, or both.
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = SAVED.owner(&st, &headers).await?;
    let mut row = SAVED.one_of::<SavedRow>(&st, &p, &user, &id).await?;
    let b: UpdateBody = body(
        &bytes,
        r#"{"name": "Orders by day"} or {"sql": "SELECT …"}"#,
    )?;
    if b.name.is_none() && b.sql.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "send `name`, `sql` or both",
        ));
    }
    // A new name is checked against the others: one rename at a time.
    let _one_at_a_time = match b.name {
        Some(_) => Some(user_lock(&p.org_id, &user).lock_owned().await),
        None => None,
    };
    if let Some(n) = &b.name {
        let name = clean_name(n)?;
        check_unique(
            &SAVED.all_of::<SavedRow>(&st, &p, &user).await?,
            &name,
            Some(&row.query_id),
        )?;
        row.name = name;
    }
    if let Some(s) = &b.sql {
        row.sql = clean_sql(s)?;
    }
    row.updated_at = Utc::now();
    save_audited(&st, &p, &row, "saved_query.update").await?;
    Ok(axum::Json(json!({"saved_query": row.json()})).into_response())
}

/// `DELETE /api/v1/saved-queries/{id}`: gone. 204.
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, user) = SAVED.owner(&st, &headers).await?;
    let row = SAVED.one_of::<SavedRow>(&st, &p, &user, &id).await?;
    let pred = SAVED.row_predicate(&row.org_id, &row.query_id);
    st.lake
        .delete_where(SAVED_QUERIES.name, &pred)
        .await
        .map_err(lake_err("deleting the saved query"))?;
    crate::audit_call(
        &st,
        &p,
        "saved_query.delete",
        &row.query_id,
        true,
        json!({"name": row.name}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_sql() {
        assert!(SAVED.valid_id(&new_id("sqy")));
        for bad in ["sqy_x", &new_id("cht"), "sqy_0123456789abcdefghjkmnpq'r"] {
            assert!(!SAVED.valid_id(bad), "{bad}");
        }
        assert_eq!(
            clean_name("  Orders by day ").ok().as_deref(),
            Some("Orders by day")
        );
        assert!(clean_name(" ").is_err() && clean_name("a\nb").is_err());
        assert!(clean_name(&"n".repeat(MAX_NAME)).is_ok());
        assert!(clean_name(&"n".repeat(MAX_NAME + 1)).is_err());
        assert!(clean_sql("  \n").is_err());
        assert!(clean_sql(&"x".repeat(MAX_SQL)).is_ok());
        assert!(clean_sql(&"x".repeat(MAX_SQL + 1)).is_err());
    }
}
