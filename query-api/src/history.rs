//! `/api/v1/query-history`: the SQL a signed-in user ran in the dashboard's
//! console, kept on the server so it follows them to any browser.
//!
//! An entry is an owned row ([`crate::owned`]) of `query_history`: one user
//! of one organization, one entry per distinct SQL text. Running the same
//! SQL again moves its entry to the top (its `ran_at` changes) and keeps
//! the latest outcome: a failed run is recorded with its error, a later
//! successful one clears it. A user keeps the [`MAX_PER_USER`] most
//! recently run; recording one more drops the oldest. Only the owner lists
//! or clears their history: any other user (an admin too, of any
//! organization) sees only their own, and an API key has no history (403
//! `user_required`, as for saved queries). Recording does not run the
//! query: the console runs it through `POST /api/v1/sql` first and records
//! it with the answer's error, if any.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::ts_micros;
use crow_lake::ids::new_id;
use crow_schemas::QUERY_HISTORY;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::owned::{body, lake_err, ts, Owned, OwnedRow};
use crate::ApiState;

/// Longest SQL kept, in characters (as for saved queries).
pub const MAX_SQL: usize = crate::saved::MAX_SQL;
/// Longest error kept, in characters: a longer one is cut, ending in `…`.
pub const MAX_ERROR: usize = 2_000;
/// Entries one user keeps at most: the most recently run.
pub const MAX_PER_USER: usize = 50;

/// One row of `query_history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    org_id: String,
    entry_id: String,
    user_id: String,
    sql: String,
    error: Option<String>,
    #[serde(with = "ts_micros")]
    ran_at: DateTime<Utc>,
}

impl Entry {
    fn json(&self) -> Value {
        json!({"id": self.entry_id, "sql": self.sql, "ok": self.error.is_none(),
               "error": self.error, "ran_at": ts(self.ran_at)})
    }
}

impl OwnedRow for Entry {
    fn id(&self) -> &str {
        &self.entry_id
    }

    fn updated_at(&self) -> DateTime<Utc> {
        self.ran_at
    }
}

/// History entries as owned rows.
const HISTORY: Owned = Owned {
    table: &QUERY_HISTORY,
    id_col: "entry_id",
    prefix: "qhe",
    noun: "history entry",
    plural: "query histories",
    api_key_hint: "sign in to the dashboard, or keep the SQL in your program",
    reading: "reading the query history",
};

/// `GET /api/v1/query-history`: the signed-in user's queries, most
/// recently run first (all of them: at most [`MAX_PER_USER`]).
pub async fn list(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, user) = HISTORY.owner(&st, &headers).await?;
    let data: Vec<Value> = HISTORY
        .all_of::<Entry>(&st, &p, &user)
        .await?
        .iter()
        .map(Entry::json)
        .collect();
    Ok(axum::Json(json!({ "data": data })).into_response())
}

/// Body of `POST /api/v1/query-history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    sql: String,
    /// The run's error; absent or null when it answered.
    #[serde(default)]
    error: Option<String>,
}

/// The SQL as kept (as sent), or 400 `invalid_sql`.
fn clean_sql(s: &str) -> ApiResult<String> {
    let n = s.chars().count();
    if s.trim().is_empty() || n > MAX_SQL {
        return Err(crate::error::ApiError::bad_request(
            "invalid_sql",
            format!("`sql` must be 1 to {MAX_SQL} characters (this is {n})"),
        ));
    }
    Ok(s.to_string())
}

/// The error as kept: trimmed, at most [`MAX_ERROR`] characters (a longer
/// one cut and ending in `…`); an empty one is an error all the same.
fn clean_error(e: Option<&str>) -> Option<String> {
    let e = e?.trim();
    if e.is_empty() {
        return Some("(no message)".to_string());
    }
    if e.chars().count() <= MAX_ERROR {
        return Some(e.to_string());
    }
    let mut cut: String = e.chars().take(MAX_ERROR - 1).collect();
    cut.push('…');
    Some(cut)
}

/// `POST /api/v1/query-history` `{"sql", "error"?}`: record that the user
/// ran this SQL now, and how it ended. An entry with the same SQL moves to
/// the top; past [`MAX_PER_USER`] the oldest are dropped. 201 with the
/// entry.
pub async fn record(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = HISTORY.owner(&st, &headers).await?;
    let b: RecordBody = body(&bytes, r#"{"sql": "SELECT …", "error": null}"#)?;
    let sql = clean_sql(&b.sql)?;
    let all = HISTORY.all_of::<Entry>(&st, &p, &user).await?;
    let entry = Entry {
        org_id: p.org_id.clone(),
        entry_id: all
            .iter()
            .find(|e| e.sql == sql)
            .map_or_else(|| new_id(HISTORY.prefix), |e| e.entry_id.clone()),
        user_id: user,
        sql,
        error: clean_error(b.error.as_deref()),
        ran_at: Utc::now(),
    };
    HISTORY
        .save(&st, &entry, None, "recording the query")
        .await?;
    // The entries now past the cap: the oldest of the others (newest
    // first, so all after the first MAX_PER_USER - 1).
    let dropped: Vec<&str> = all
        .iter()
        .filter(|e| e.entry_id != entry.entry_id)
        .skip(MAX_PER_USER - 1)
        .map(|e| e.entry_id.as_str())
        .collect();
    if !dropped.is_empty() {
        st.lake
            .delete_where(
                QUERY_HISTORY.name,
                &HISTORY.rows_predicate(&p.org_id, &dropped),
            )
            .await
            .map_err(lake_err("trimming the query history"))?;
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"entry": entry.json()})),
    )
        .into_response())
}

/// `DELETE /api/v1/query-history`: forget every query the user ran. 204.
pub async fn clear(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let (p, user) = HISTORY.owner(&st, &headers).await?;
    let all = HISTORY.all_of::<Entry>(&st, &p, &user).await?;
    let ids: Vec<&str> = all.iter().map(|e| e.entry_id.as_str()).collect();
    if !ids.is_empty() {
        st.lake
            .delete_where(QUERY_HISTORY.name, &HISTORY.rows_predicate(&p.org_id, &ids))
            .await
            .map_err(lake_err("clearing the query history"))?;
    }
    crate::audit_call(
        &st,
        &p,
        "query_history.clear",
        &p.org_id,
        true,
        json!({"entries": ids.len()}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_and_errors_are_checked() {
        assert!(clean_sql("  \n").is_err());
        assert!(clean_sql(&"x".repeat(MAX_SQL)).is_ok());
        assert!(clean_sql(&"x".repeat(MAX_SQL + 1)).is_err());
        assert_eq!(clean_error(None), None);
        assert_eq!(clean_error(Some(" no table ")).as_deref(), Some("no table"));
        assert_eq!(clean_error(Some(" ")).as_deref(), Some("(no message)"));
        let long = clean_error(Some(&"é".repeat(MAX_ERROR + 5))).unwrap_or_default();
        assert_eq!(long.chars().count(), MAX_ERROR);
        assert!(long.ends_with('…'));
    }
}
