//! Rows a signed-in user owns: the REST plumbing that chats
//! ([`crate::chats`]) and saved queries ([`crate::saved`]) share.
//!
//! An owned row belongs to one user of one organization. Only its owner
//! lists, reads, changes or deletes it: any other caller, of the same
//! organization or another (an admin too), gets 404 as for a row that never
//! existed ([`Owned::not_found`]). An API key is authenticated but has no
//! user, so it owns no rows: 403 `user_required` ([`Owned::owner`]). Ids
//! are checked against their shape ([`Owned::valid_id`]) before they are
//! used, so an id is always safe inside a predicate.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch};
use crow_schemas::TableDef;
use datafusion::prelude::{col, lit, Expr};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::ApiState;

/// One kind of owned row: its table and how the API speaks of it.
#[derive(Debug)]
pub(crate) struct Owned {
    /// The table of the rows (keyed by `org_id`, `user_id` and `id_col`).
    pub table: &'static TableDef,
    /// The id column (`chat_id`, `query_id`).
    pub id_col: &'static str,
    /// The prefix of the ids [`crow_lake::ids::new_id`] makes (`cht`, `sqy`).
    pub prefix: &'static str,
    /// One row, as a 404 names it ("chat").
    pub noun: &'static str,
    /// The rows, as a 403 names them ("chats").
    pub plural: &'static str,
    /// What an API key should do instead, in its 403.
    pub api_key_hint: &'static str,
    /// What a failed read was doing, in the log ("reading chats").
    pub reading: &'static str,
}

/// A row of an [`Owned`] table.
pub(crate) trait OwnedRow: DeserializeOwned {
    /// Its id.
    fn id(&self) -> &str;
    /// When it last changed.
    fn updated_at(&self) -> DateTime<Utc>;
}

/// A lake error while doing `what`, mapped by its kind.
pub(crate) fn lake_err(what: &'static str) -> impl Fn(crow_lake::Error) -> ApiError {
    move |e| ApiError::from_lake(what, &e)
}

/// A query error while doing `what`: 500, logged.
pub(crate) fn df_err(
    what: &'static str,
) -> impl Fn(datafusion::error::DataFusionError) -> ApiError {
    move |e| ApiError::internal(what, &e)
}

/// A time as the API shows it (RFC 3339, milliseconds, `Z`).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The JSON body of a request, or 400 `invalid_body` saying what to send
/// (`like`).
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], like: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {like}: {e}"),
        )
    })
}

/// As [`body`], an empty (or all white space) body read as `{}`.
pub(crate) fn body_or_empty<T: DeserializeOwned>(bytes: &Bytes, like: &str) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return body(b"{}", like);
    }
    body(bytes, like)
}

/// A short text as stored (trimmed): 1 to `max` characters without control
/// characters, else 400 `code` naming `field`.
pub(crate) fn clean_text(
    value: &str,
    field: &str,
    code: &'static str,
    max: usize,
) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            code,
            format!("`{field}` must be 1 to {max} characters, without control characters"),
        ));
    }
    Ok(v.to_string())
}

impl Owned {
    /// 404 for a row that is not the caller's (or does not exist).
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(format!("no {} of yours has this id", self.noun))
    }

    /// The caller and their user id: a signed-in user (any role). An API
    /// key is authenticated but owns no rows: 403 `user_required`.
    pub async fn owner(
        &self,
        st: &ApiState,
        headers: &HeaderMap,
    ) -> ApiResult<(Principal, String)> {
        let p = crate::auth::authenticate(&st.keys, &st.limiter, headers, Scope::Read).await?;
        match p.user.as_ref().map(|u| u.user_id.clone()) {
            Some(user) => Ok((p, user)),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "user_required",
                format!(
                    "{} belong to signed-in users and an API key has none: {}",
                    self.plural, self.api_key_hint
                ),
            )),
        }
    }

    /// Whether `id` can be an id of these rows (so it is safe inside a
    /// predicate).
    pub fn valid_id(&self, id: &str) -> bool {
        id.strip_prefix(self.prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| {
                rest.len() == 26
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
    }

    /// The rows of `table` that `filter` keeps.
    pub async fn read<T: DeserializeOwned>(
        &self,
        st: &ApiState,
        table: &str,
        filter: Expr,
    ) -> ApiResult<Vec<T>> {
        let batches = st
            .lake
            .dataframe(table)
            .await
            .map_err(lake_err(self.reading))?
            .filter(filter)
            .map_err(df_err(self.reading))?
            .collect()
            .await
            .map_err(df_err(self.reading))?;
        batches_to_rows(&batches).map_err(lake_err(self.reading))
    }

    /// The user's rows: their organization and their user id.
    fn mine(p: &Principal, user: &str) -> Expr {
        col("org_id")
            .eq(lit(p.org_id.as_str()))
            .and(col("user_id").eq(lit(user)))
    }

    /// The user's rows, most recently changed first (then by id, last
    /// first).
    pub async fn all_of<T: OwnedRow>(
        &self,
        st: &ApiState,
        p: &Principal,
        user: &str,
    ) -> ApiResult<Vec<T>> {
        let mut rows: Vec<T> = self.read(st, self.table.name, Self::mine(p, user)).await?;
        rows.sort_by(|a, b| b.updated_at().cmp(&a.updated_at()).then(b.id().cmp(a.id())));
        Ok(rows)
    }

    /// The user's row `id`; 404 for any other.
    pub async fn one_of<T: OwnedRow>(
        &self,
        st: &ApiState,
        p: &Principal,
        user: &str,
        id: &str,
    ) -> ApiResult<T> {
        if !self.valid_id(id) {
            return Err(self.not_found());
        }
        let filter = Self::mine(p, user).and(col(self.id_col).eq(lit(id)));
        let rows: Vec<T> = self.read(st, self.table.name, filter).await?;
        rows.into_iter().next().ok_or_else(|| self.not_found())
    }

    /// Insert or replace `row` (by id); with `update_if`, an existing row is
    /// replaced only when the condition holds on it. Whether a row was
    /// written.
    pub async fn save<T: Serialize>(
        &self,
        st: &ApiState,
        row: &T,
        update_if: Option<&Expr>,
        what: &'static str,
    ) -> ApiResult<bool> {
        let batch =
            rows_to_batch(self.table, std::slice::from_ref(row)).map_err(lake_err("saving"))?;
        let (ins, upd) = st
            .lake
            .merge_if(self.table.name, vec![batch], &[self.id_col], update_if)
            .await
            .map_err(lake_err(what))?;
        Ok(ins + upd > 0)
    }

    /// The delete predicate of row `id` of `org_id`.
    pub fn row_predicate(&self, org_id: &str, id: &str) -> Expr {
        self.rows_predicate(org_id, &[id])
    }

    /// The delete predicate of rows `ids` of `org_id`.
    pub fn rows_predicate(&self, org_id: &str, ids: &[&str]) -> Expr {
        col("org_id")
            .eq(lit(org_id))
            .and(col(self.id_col).in_list(ids.iter().map(|i| lit(*i)).collect(), false))
    }
}
