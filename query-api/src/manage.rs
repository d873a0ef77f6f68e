//! Managing an organization through the API: its members (users and
//! roles), its API keys and its settings — what the dashboard's settings
//! page and an admin's scripts use, with the same rules as the CLI.
//!
//! Every call needs the `admin` scope: an admin key, or a signed-in admin or
//! owner ([`crate::auth::authenticate`]). Owners are managed by owners only:
//! creating an owner, changing an owner's role or status, promoting someone
//! to owner and resetting an owner's password need a signed-in owner, and
//! the last active owner cannot be demoted or disabled. A caller only ever
//! sees and changes its own organization's users and keys (another's answer
//! 404, as if they did not exist). Every change is in the audit log.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::account::body;
use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::users::{self, Role, User};
use crate::ApiState;

async fn admin(st: &ApiState, headers: &HeaderMap) -> ApiResult<Principal> {
    auth::authenticate(&st.keys, &st.limiter, headers, Scope::Admin).await
}

fn lake_err(what: &'static str) -> impl Fn(crow_lake::Error) -> ApiError {
    move |e| ApiError::from_lake(what, &e)
}

fn owners_only() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "insufficient_role",
        "only a signed-in owner manages owners",
    )
}

fn is_owner(p: &Principal) -> bool {
    p.user.as_ref().is_some_and(|u| u.role == Role::Owner)
}

/// A change that succeeded, in the audit log.
async fn audit(st: &ApiState, p: &Principal, action: &str, target: &str, detail: Value) {
    crate::audit_call(st, p, action, target, true, detail).await;
}

/// The user `id` of the caller's organization (404 otherwise).
async fn member(st: &ApiState, p: &Principal, id: &str) -> ApiResult<User> {
    users::list(&st.lake, Some(&p.org_id))
        .await
        .map_err(lake_err("loading users"))?
        .into_iter()
        .find(|u| u.user_id == id)
        .ok_or_else(|| ApiError::not_found(format!("no user `{id}` in your organization")))
}

/// `GET /api/v1/users`: the organization's users, oldest first.
pub async fn list_users(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let all = users::list(&st.lake, Some(&p.org_id))
        .await
        .map_err(lake_err("listing users"))?;
    let data: Vec<Value> = all.iter().map(User::public_json).collect();
    Ok(Json(json!({ "data": data })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    role: String,
    display_name: Option<String>,
}

fn parse_role(role: &str) -> ApiResult<Role> {
    role.parse()
        .map_err(|e: crow_lake::Error| ApiError::bad_request("invalid_role", e.to_string()))
}

/// `POST /api/v1/users`: invite a user; the invitation token is in the
/// answer, once.
pub async fn create_user(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let req: NewUser = body(
        &bytes,
        r#"{"email": "…", "role": "viewer|analyst|admin|owner", "display_name"?: "…"}"#,
    )?;
    let role = parse_role(&req.role)?;
    if role == Role::Owner && !is_owner(&p) {
        return Err(owners_only());
    }
    let invited = users::create(
        &st.lake,
        &p.org_id,
        &req.email,
        role,
        req.display_name.as_deref(),
        None,
    )
    .await
    .map_err(lake_err("creating a user"))?;
    let u = &invited.user;
    audit(
        &st,
        &p,
        "user.create",
        &u.user_id,
        json!({"email": u.email, "role": u.role}),
    )
    .await;
    let mut out = u.public_json();
    out["invitation_token"] = json!(invited.token);
    out["token_expires_in_hours"] = json!(users::TOKEN_LIFETIME_HOURS);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    role: Option<String>,
    disabled: Option<bool>,
}

/// The organization's active owners other than `except`.
async fn other_owners(st: &ApiState, p: &Principal, except: &str) -> ApiResult<usize> {
    Ok(users::list(&st.lake, Some(&p.org_id))
        .await
        .map_err(lake_err("loading users"))?
        .iter()
        .filter(|u| u.user_id != except && u.role() == Role::Owner && u.status == "active")
        .count())
}

/// `PATCH /api/v1/users/{id}`: change a user's role and/or disable or
/// enable them (disabling ends their sessions).
pub async fn update_user(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let req: UserChange = body(&bytes, r#"{"role"?: "analyst", "disabled"?: true}"#)?;
    let target = member(&st, &p, &id).await?;
    let role = req.role.as_deref().map(parse_role).transpose()?;
    let touches_owner = target.role() == Role::Owner || role == Some(Role::Owner);
    if touches_owner && !is_owner(&p) {
        return Err(owners_only());
    }
    let demotes = role.is_some_and(|r| r != Role::Owner) || req.disabled == Some(true);
    if target.role() == Role::Owner && demotes && other_owners(&st, &p, &id).await? == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_owner",
            "this is the organization's last active owner: make someone else owner first",
        ));
    }
    if req.disabled == Some(true) && p.user.as_ref().is_some_and(|u| u.user_id == id) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "you cannot disable yourself",
        ));
    }
    let mut user = target;
    if let Some(r) = role {
        user = users::set_role(&st.lake, &id, r)
            .await
            .map_err(lake_err("changing a role"))?;
        audit(&st, &p, "user.role", &id, json!({"role": user.role})).await;
    }
    if let Some(d) = req.disabled {
        user = users::set_disabled(&st.lake, &id, d)
            .await
            .map_err(lake_err("changing a user's status"))?;
        let action = if d { "user.disable" } else { "user.enable" };
        audit(&st, &p, action, &id, json!({})).await;
    }
    // Role and status changes bite at once on this server.
    st.keys.invalidate().await;
    Ok(Json(user.public_json()).into_response())
}

/// `POST /api/v1/users/{id}/reset`: a one-time password-reset token for
/// the user (in the answer, once); their sessions end.
pub async fn reset_user(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let user = member(&st, &p, &id).await?;
    if user.role() == Role::Owner && !is_owner(&p) {
        return Err(owners_only());
    }
    if user.status == "disabled" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "user_disabled",
            "this user is disabled: enable them first",
        ));
    }
    let token = users::issue_token(&st.lake, &user, "reset")
        .await
        .map_err(lake_err("issuing a reset token"))?;
    audit(&st, &p, "user.reset_password", &id, json!({})).await;
    Ok(Json(json!({
        "id": user.user_id,
        "email": user.email,
        "reset_token": token,
        "token_expires_in_hours": users::TOKEN_LIFETIME_HOURS,
    }))
    .into_response())
}

/// `GET /api/v1/keys`: the organization's API keys (never their secrets or
/// hashes), oldest first.
pub async fn list_keys(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let all = crate::keys::list(&st.lake, Some(&p.org_id))
        .await
        .map_err(lake_err("listing keys"))?;
    let data: Vec<Value> = all.iter().map(crate::keys::ApiKey::public_json).collect();
    Ok(Json(json!({ "data": data })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scope: String,
    name: Option<String>,
    /// Days until it expires; absent: `api.key_default_expiry_days`; 0: never.
    expires_days: Option<u32>,
}

/// `POST /api/v1/keys`: create a key; its secret is in the answer, once.
pub async fn create_key(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let req: NewKey = body(
        &bytes,
        r#"{"scope": "read|export|admin", "name"?: "…", "expires_days"?: 90}"#,
    )?;
    let scope: Scope = req
        .scope
        .parse()
        .map_err(|e: crow_lake::Error| ApiError::bad_request("invalid_scope", e.to_string()))?;
    let days = match req.expires_days.unwrap_or(st.cfg.key_default_expiry_days) {
        0 => None,
        d => Some(d),
    };
    let created = crate::keys::create(&st.lake, &p.org_id, scope, days, req.name.as_deref())
        .await
        .map_err(lake_err("creating a key"))?;
    // The new key works at once on this server.
    st.keys.invalidate().await;
    let k = &created.key;
    audit(
        &st,
        &p,
        "key.create",
        &k.key_id,
        json!({"scope": k.scope, "name": k.name}),
    )
    .await;
    let mut out = k.public_json();
    out["secret"] = json!(created.secret);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `POST /api/v1/keys/{id}/revoke`: revoke a key of the organization
/// (refused everywhere within `api.key_cache_seconds`, here at once).
pub async fn revoke_key(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let ours = crate::keys::list(&st.lake, Some(&p.org_id))
        .await
        .map_err(lake_err("loading keys"))?
        .iter()
        .any(|k| k.key_id == id);
    if !ours {
        return Err(ApiError::not_found(format!(
            "no API key `{id}` in your organization"
        )));
    }
    let key = crate::keys::revoke(&st.lake, &id)
        .await
        .map_err(lake_err("revoking a key"))?;
    st.keys.invalidate().await;
    audit(&st, &p, "key.revoke", &id, json!({})).await;
    Ok(Json(key.public_json()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgChange {
    name: Option<String>,
    domain: Option<String>,
    context: Option<String>,
}

/// `PATCH /api/v1/organization`: change the organization's name, domain or
/// context text (the text given to the AI provider; `""` clears domain and
/// context).
pub async fn update_org(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let req: OrgChange = body(&bytes, r#"{"name"?: "…", "domain"?: "…", "context"?: "…"}"#)?;
    let change = crow_lake::orgs::OrgUpdate {
        name: req.name,
        domain: req.domain,
        context: req.context,
    };
    let org = crow_lake::orgs::update(&st.lake, &p.org_id, &change)
        .await
        .map_err(lake_err("changing the organization"))?;
    audit(
        &st,
        &p,
        "org.update",
        &p.org_id,
        json!({"name": org.name, "domain": org.domain, "context_chars": org.context.as_deref().map_or(0, |c| c.chars().count())}),
    )
    .await;
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(Json(json!({
        "org_id": org.org_id,
        "name": org.name,
        "domain": org.domain,
        "context": org.context,
        "status": org.status,
        "created_at": ts(org.created_at),
        "updated_at": ts(org.updated_at),
    }))
    .into_response())
}

/// Longest grace a rotated-out write key is given, in hours (30 days).
pub const MAX_GRACE_HOURS: u32 = 720;

/// The organization's write key as it can be shown: its first characters
/// and, while the key it replaced is still accepted, until when.
fn write_key_json(o: &crow_lake::orgs::Organization) -> Value {
    let now = chrono::Utc::now();
    let previous = o
        .previous_write_key_expires_at
        .filter(|until| o.previous_write_key_hash.is_some() && *until > now);
    json!({
        "prefix": o.write_key_prefix,
        "previous_key_valid_until": previous.map(crate::owned::ts),
    })
}

/// The caller's organization (404 if it no longer exists).
async fn own_org(st: &ApiState, p: &Principal) -> ApiResult<crow_lake::orgs::Organization> {
    crow_lake::orgs::get(&st.lake, &p.org_id)
        .await
        .map_err(lake_err("reading the organization"))?
        .ok_or_else(|| ApiError::not_found("your organization no longer exists"))
}

/// `GET /api/v1/organization/write-key`: the collector's write key of the
/// organization — its first characters only (the lake keeps a hash).
pub async fn write_key(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    Ok(Json(write_key_json(&own_org(&st, &p).await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// Hours the current key keeps working (absent: 24; 0: refused at once).
    grace_hours: Option<u32>,
}

/// `POST /api/v1/organization/write-key/rotate` `{"grace_hours"?}`: a new
/// write key for the collector, in the answer once; the current key keeps
/// working for the grace (24 hours unless given; 0 revokes it at once, as
/// soon as collectors refresh their key cache, within 30 s).
pub async fn rotate_write_key(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let p = admin(&st, &headers).await?;
    let req: Rotate = if bytes.iter().all(u8::is_ascii_whitespace) {
        Rotate { grace_hours: None }
    } else {
        body(&bytes, r#"{"grace_hours"?: 24}"#)?
    };
    let hours = req.grace_hours.unwrap_or(24);
    if hours > MAX_GRACE_HOURS {
        return Err(ApiError::bad_request(
            "invalid_grace",
            format!("`grace_hours` must be 0 to {MAX_GRACE_HOURS} (this is {hours})"),
        ));
    }
    let grace = chrono::Duration::hours(i64::from(hours));
    let key = crow_lake::orgs::rotate_write_key_with_grace(&st.lake, &p.org_id, grace)
        .await
        .map_err(lake_err("rotating the write key"))?;
    audit(
        &st,
        &p,
        "org.rotate_write_key",
        &p.org_id,
        json!({"grace_hours": hours}),
    )
    .await;
    let mut out = write_key_json(&own_org(&st, &p).await?);
    out["write_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
