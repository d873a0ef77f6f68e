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
//! [`MAX_SQL`] characters; a user keeps at most [`MAX_PER_USER`]. Saving
//! does not run the query: the console runs it through `POST /api/v1/sql`,
//! where the tenant's own rows are all it can read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::ids::new_id;
use crow_schemas::SAVED_QUERIES;
use datafusion::prelude::{col, lit, Expr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::ApiState;

/// Longest name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest SQL, in characters.
pub const MAX_SQL: usize = 20_000;
/// Saved queries one user keeps at most.
pub const MAX_PER_USER: usize = 200;

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

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SavedRow {
    fn json(&self) -> Value {
        json!({"id": self.query_id, "name": self.name, "sql": self.sql,
               "created_at": ts(self.created_at), "updated_at": ts(self.updated_at)})
    }
}

fn lake_err(what: &'static str) -> impl Fn(crow_lake::Error) -> ApiError {
    move |e| ApiError::from_lake(what, &e)
}

fn df_err(what: &'static str) -> impl Fn(datafusion::error::DataFusionError) -> ApiError {
    move |e| ApiError::internal(what, &e)
}

fn not_found() -> ApiError {
    ApiError::not_found("no saved query of yours has this id")
}

/// The caller and their user id: a signed-in user (any role). An API key
/// is authenticated but owns no saved queries: 403 `user_required`.
async fn owner(st: &ApiState, headers: &HeaderMap) -> ApiResult<(Principal, String)> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, headers, Scope::Read).await?;
    match p.user.as_ref().map(|u| u.user_id.clone()) {
        Some(user) => Ok((p, user)),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_required",
            "saved queries belong to signed-in users and an API key has none: sign in to \
             the dashboard, or keep the SQL in your program",
        )),
    }
}

/// Whether `id` can be a saved query id (so it is safe inside a predicate).
fn valid_id(id: &str) -> bool {
    id.strip_prefix("sqy_").is_some_and(|rest| {
        rest.len() == 26
            && rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

async fn read(st: &ApiState, filter: Expr) -> ApiResult<Vec<SavedRow>> {
    let batches = st
        .lake
        .dataframe(SAVED_QUERIES.name)
        .await
        .map_err(lake_err("reading saved queries"))?
        .filter(filter)
        .map_err(df_err("reading saved queries"))?
        .collect()
        .await
        .map_err(df_err("reading saved queries"))?;
    batches_to_rows(&batches).map_err(lake_err("reading saved queries"))
}

fn mine(p: &Principal, user: &str) -> Expr {
    col("org_id")
        .eq(lit(p.org_id.as_str()))
        .and(col("user_id").eq(lit(user)))
}

/// The user's saved queries, most recently changed first.
async fn all_of(st: &ApiState, p: &Principal, user: &str) -> ApiResult<Vec<SavedRow>> {
    let mut rows = read(st, mine(p, user)).await?;
    rows.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then(b.query_id.cmp(&a.query_id))
    });
    Ok(rows)
}

/// The user's saved query `id`; 404 for any other.
async fn one_of(st: &ApiState, p: &Principal, user: &str, id: &str) -> ApiResult<SavedRow> {
    if !valid_id(id) {
        return Err(not_found());
    }
    let rows = read(st, mine(p, user).and(col("query_id").eq(lit(id)))).await?;
    rows.into_iter().next().ok_or_else(not_found)
}

async fn save(st: &ApiState, row: &SavedRow) -> ApiResult<()> {
    let batch =
        rows_to_batch(&SAVED_QUERIES, std::slice::from_ref(row)).map_err(lake_err("saving"))?;
    st.lake
        .merge_if(SAVED_QUERIES.name, vec![batch], &["query_id"], None)
        .await
        .map_err(lake_err("saving the query"))?;
    Ok(())
}

/// The JSON body of a request, or 400 `invalid_body` saying what to send.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, like: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {like}: {e}"),
        )
    })
}

/// A name as stored (trimmed), or 400 `invalid_name`.
fn clean_name(n: &str) -> ApiResult<String> {
    let n = n.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("`name` must be 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    Ok(n.to_string())
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
/// [`MAX_PER_USER`]).
pub async fn list(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, user) = owner(&st, &headers).await?;
    let data: Vec<Value> = all_of(&st, &p, &user)
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
    let (p, user) = owner(&st, &headers).await?;
    let b: CreateBody = body(&bytes, r#"{"name": "Orders by day", "sql": "SELECT …"}"#)?;
    let name = clean_name(&b.name)?;
    let sql = clean_sql(&b.sql)?;
    let all = all_of(&st, &p, &user).await?;
    if all.len() >= MAX_PER_USER {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_saved_queries",
            format!("you keep at most {MAX_PER_USER} saved queries: delete one first"),
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
    save(&st, &row).await?;
    crate::audit_call(
        &st,
        &p,
        "saved_query.create",
        &row.query_id,
        true,
        json!({"name": row.name}),
    )
    .await;
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
    let (p, user) = owner(&st, &headers).await?;
    let row = one_of(&st, &p, &user, &id).await?;
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
    let (p, user) = owner(&st, &headers).await?;
    let mut row = one_of(&st, &p, &user, &id).await?;
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
    if let Some(n) = &b.name {
        let name = clean_name(n)?;
        check_unique(&all_of(&st, &p, &user).await?, &name, Some(&row.query_id))?;
        row.name = name;
    }
    if let Some(s) = &b.sql {
        row.sql = clean_sql(s)?;
    }
    row.updated_at = Utc::now();
    save(&st, &row).await?;
    crate::audit_call(
        &st,
        &p,
        "saved_query.update",
        &row.query_id,
        true,
        json!({"name": row.name}),
    )
    .await;
    Ok(axum::Json(json!({"saved_query": row.json()})).into_response())
}

/// `DELETE /api/v1/saved-queries/{id}`: gone. 204.
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, user) = owner(&st, &headers).await?;
    let row = one_of(&st, &p, &user, &id).await?;
    // `valid_id` made the id safe inside the predicate; the org id is ours.
    let pred = format!(
        "org_id = '{}' AND query_id = '{}'",
        row.org_id.replace('\'', "''"),
        row.query_id
    );
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
        assert!(valid_id(&new_id("sqy")));
        for bad in ["sqy_x", &new_id("cht"), "sqy_0123456789abcdefghjkmnpq'r"] {
            assert!(!valid_id(bad), "{bad}");
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
