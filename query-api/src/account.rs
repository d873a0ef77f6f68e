//! Sign-in for people: `/api/v1/auth/*`.
//!
//! - `POST /api/v1/auth/accept` `{"token", "password"}`: set a password with
//!   a one-time invitation or reset token.
//! - `POST /api/v1/auth/login` `{"email", "password"}`: sets the session
//!   cookie (`crow_session`: opaque, HttpOnly, SameSite=Lax, Secure over
//!   TLS) and the CSRF cookie (`crow_csrf`), and answers the user and the
//!   CSRF token. A wrong password and an unknown e-mail get the same answer.
//!   Attempts are rate-limited per e-mail and per client address (429 with
//!   `Retry-After`).
//! - `POST /api/v1/auth/logout`, `GET /api/v1/auth/me`,
//!   `GET /api/v1/auth/sessions`, `POST /api/v1/auth/sessions/{id}/revoke`.
//!
//! Requests authenticated by the cookie that change something must carry
//! the CSRF token in `X-CSRF-Token` ([`csrf_guard`]); API-key requests need
//! none (a browser cannot attach a bearer key cross-site).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, csrf_token, ct_eq, Principal, CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::users::{self, Audit, TokenRefusal};
use crate::ApiState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
    password: String,
}

/// A JSON body, or 400 `invalid_body` showing the expected `shape`.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {shape}: {e}"),
        )
    })
}

/// The client address as a salted hash (for throttling and the audit log),
/// from the connection — the same address for every client behind one
/// proxy, so the per-address limit is generous.
fn client(headers: &HeaderMap, ext: &axum::http::Extensions) -> (String, Option<String>) {
    let ip = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        crow_lake::ids::sha256_hex(format!("crow-ip:{ip}").as_bytes()),
        ua,
    )
}

fn secure(st: &ApiState, headers: &HeaderMap) -> bool {
    st.cfg.cookie_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn too_many(wait: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many sign-in attempts; retry in {wait} s"),
    );
    e.retry_after = Some(wait);
    e
}

async fn audit(st: &ApiState, a: Audit<'_>) {
    if let Err(e) = users::audit(&st.lake, a).await {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// A user's own successful `action` on `target` in the audit log.
async fn audit_user(
    st: &ApiState,
    user: &users::User,
    action: &str,
    target: &str,
    ip_hash: &str,
    user_agent: Option<&str>,
) {
    audit(
        st,
        Audit {
            org_id: &user.org_id,
            actor: &format!("user:{}", user.user_id),
            action,
            target: Some(target),
            outcome: "ok",
            ip_hash: Some(ip_hash),
            user_agent,
            detail: None,
        },
    )
    .await;
}

/// Tell `user` of a sign-in from a device (User-Agent `ua`) they never
/// signed in from before (a failure to write it is logged).
async fn notify_new_device(st: &ApiState, user: &users::User, ua: Option<&str>) {
    let notice = crow_lake::notify::Notice {
        kind: "new_sign_in",
        title: "New sign-in to your account".into(),
        body: Some(format!(
            "A sign-in from a new device ({}). If it was not you, revoke it in your sessions and reset your password.",
            ua.unwrap_or("unknown browser")
        )),
        link: Some("/api/v1/auth/sessions".into()),
    };
    let to = [(user.org_id.clone(), user.user_id.clone())];
    if let Err(e) = crow_lake::notify::notify_users(&st.lake, &to, &notice).await {
        tracing::warn!(error = %e, "could not write a sign-in notification");
    }
}

/// `POST /api/v1/auth/login`.
pub async fn login(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    bytes: Bytes,
) -> Response {
    match do_login(&st, &headers, &ext, &bytes).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn do_login(
    st: &ApiState,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    bytes: &[u8],
) -> ApiResult<Response> {
    let req: Login = body(bytes, r#"{"email": "…", "password": "…"}"#)?;
    let (ip_hash, ua) = client(headers, ext);
    let email = req.email.trim().to_lowercase();
    st.login_by_ip.check(&ip_hash).map_err(too_many)?;
    st.login_by_email.check(&email).map_err(too_many)?;
    let user = users::check_login(&st.lake, &email, &req.password)
        .await
        .map_err(|e| ApiError::from_lake("checking a sign-in", &e))?;
    let Some(user) = user else {
        let known = users::find(&st.lake, &email).await.ok();
        audit(
            st,
            Audit {
                org_id: known.as_ref().map_or("", |u| u.org_id.as_str()),
                actor: "anonymous",
                action: "auth.login",
                target: Some(&email),
                outcome: "failed",
                ip_hash: Some(&ip_hash),
                user_agent: ua.as_deref(),
                detail: None,
            },
        )
        .await;
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    };
    let org = crow_lake::orgs::get(&st.lake, &user.org_id)
        .await
        .map_err(|e| ApiError::from_lake("checking a sign-in", &e))?;
    if org.is_none_or(|o| o.status != "active") {
        return Err(ApiError::unauthorized("wrong e-mail or password"));
    }
    // A sign-in from a device (User-Agent) this user never signed in from
    // before is worth telling them about (not the very first sign-in).
    let earlier = users::sessions(&st.lake, Some(&user.user_id))
        .await
        .map_err(|e| ApiError::from_lake("checking a sign-in", &e))?;
    if !earlier.is_empty() && !earlier.iter().any(|s| s.user_agent == ua) {
        notify_new_device(st, &user, ua.as_deref()).await;
    }
    let lifetime = chrono::Duration::hours(i64::try_from(st.cfg.session_max_hours).unwrap_or(168));
    let (session, secret) =
        users::open_session(&st.lake, &user, lifetime, Some(ip_hash.clone()), ua.clone())
            .await
            .map_err(|e| ApiError::from_lake("opening a session", &e))?;
    audit_user(
        st,
        &user,
        "auth.login",
        &session.session_id,
        &ip_hash,
        ua.as_deref(),
    )
    .await;
    Ok(signed_in_response(st, headers, &user, &session, &secret))
}

/// The answer to a sign-in: the user, session and CSRF token, with the
/// session and CSRF cookies set.
fn signed_in_response(
    st: &ApiState,
    headers: &HeaderMap,
    user: &users::User,
    session: &users::UserSession,
    secret: &str,
) -> Response {
    let csrf = csrf_token(secret);
    let max_age = st.cfg.session_max_hours.saturating_mul(3600);
    let sec = if secure(st, headers) { "; Secure" } else { "" };
    let mut resp = Json(json!({
        "user": user.public_json(),
        "session_id": session.session_id,
        "csrf_token": csrf,
        "expires_at": session.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response();
    let cookies = [
        format!(
            "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{sec}"
        ),
        format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={max_age}{sec}"),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /api/v1/auth/accept`: set a password with a one-time token.
pub async fn accept(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    bytes: Bytes,
) -> ApiResult<Response> {
    let req: Accept = body(&bytes, r#"{"token": "…", "password": "…"}"#)?;
    let (ip_hash, ua) = client(&headers, &ext);
    st.login_by_ip.check(&ip_hash).map_err(too_many)?;
    let done = users::set_password_with_token(&st.lake, &req.token, &req.password)
        .await
        .map_err(|e| match e {
            crow_lake::Error::Invalid(m) => ApiError::bad_request("invalid_password", m),
            other => ApiError::from_lake("setting a password", &other),
        })?;
    match done {
        Ok(user) => {
            st.keys.invalidate().await;
            audit_user(
                &st,
                &user,
                "user.password_set",
                &user.user_id,
                &ip_hash,
                ua.as_deref(),
            )
            .await;
            Ok(Json(json!({"user": user.public_json()})).into_response())
        }
        Err(why) => Err(ApiError::bad_request(
            "invalid_token",
            match why {
                TokenRefusal::Expired => "this link has expired: ask for a new one",
                TokenRefusal::Used => "this link has been used already: ask for a new one",
                TokenRefusal::Unknown => "this link is not valid",
            },
        )),
    }
}

async fn signed_in(st: &ApiState, headers: &HeaderMap) -> ApiResult<Principal> {
    let p = auth::authenticate(&st.keys, &st.limiter, headers, Scope::Read).await?;
    if p.user.is_none() {
        return Err(ApiError::unauthorized(
            "this needs a signed-in user, not an API key",
        ));
    }
    Ok(p)
}

/// `GET /api/v1/auth/me`.
pub async fn me(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let p = signed_in(&st, &headers).await?;
    let user = p
        .user
        .as_ref()
        .map(|u| u.user_id.clone())
        .unwrap_or_default();
    let user = users::find(&st.lake, &user)
        .await
        .map_err(|e| ApiError::from_lake("reading the user", &e))?;
    let org = crow_lake::orgs::get(&st.lake, &p.org_id)
        .await
        .map_err(|e| ApiError::from_lake("reading the organization", &e))?;
    Ok(Json(json!({
        "user": user.public_json(),
        "organization": org.map(|o| json!({"id": o.org_id, "name": o.name})),
        "session_id": p.user.map(|u| u.session_id),
    })))
}

/// `POST /api/v1/auth/logout`: end this session, clear the cookies.
pub async fn logout(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let p = signed_in(&st, &headers).await?;
    let Some(u) = &p.user else {
        return Err(ApiError::unauthorized("not signed in"));
    };
    users::revoke_sessions(&st.lake, &u.user_id, Some(&u.session_id))
        .await
        .map_err(|e| ApiError::from_lake("ending the session", &e))?;
    st.keys.invalidate().await;
    audit(
        &st,
        Audit {
            org_id: &p.org_id,
            actor: &p.actor(),
            action: "auth.logout",
            target: Some(&u.session_id),
            outcome: "ok",
            ..Audit::default()
        },
    )
    .await;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    for c in [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// `GET /api/v1/auth/sessions`: the signed-in user's sessions.
pub async fn my_sessions(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let p = signed_in(&st, &headers).await?;
    let user = p.user.map(|u| u.user_id).unwrap_or_default();
    let list = users::sessions(&st.lake, Some(&user))
        .await
        .map_err(|e| ApiError::from_lake("listing sessions", &e))?;
    let now = chrono::Utc::now();
    Ok(Json(json!({
        "data": list.iter().map(|s| s.public_json(now, st.keys.session_idle)).collect::<Vec<_>>(),
    })))
}

/// `POST /api/v1/auth/sessions/{id}/revoke`: end one of the user's sessions.
pub async fn revoke_session(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = signed_in(&st, &headers).await?;
    let user = p
        .user
        .as_ref()
        .map(|u| u.user_id.clone())
        .unwrap_or_default();
    let n = users::revoke_sessions(&st.lake, &user, Some(&id))
        .await
        .map_err(|e| ApiError::from_lake("revoking a session", &e))?;
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no open session of yours has this id",
        ));
    }
    st.keys.invalidate().await;
    audit(
        &st,
        Audit {
            org_id: &p.org_id,
            actor: &p.actor(),
            action: "auth.session_revoke",
            target: Some(&id),
            outcome: "ok",
            ..Audit::default()
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// CSRF for cookie sessions: a request that may change something (not
/// GET/HEAD/OPTIONS), carries the session cookie and no bearer key, must send
/// the session's CSRF token in `X-CSRF-Token`. Sign-in and accepting a
/// token have no session yet and are exempt.
pub async fn csrf_guard(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    let exempt = path == "/api/v1/auth/login" || path == "/api/v1/auth/accept";
    let headers = req.headers();
    // Exactly the requests `authenticate` admits by cookie: those without
    // a bearer key (any other Authorization header does not exempt one).
    if !safe && !exempt && auth::bearer(headers).is_none() {
        if let Some(secret) = auth::cookie(headers, SESSION_COOKIE) {
            let want = csrf_token(secret);
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct_eq(sent.as_bytes(), want.as_bytes()) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_token_missing",
                    "a request signed in by cookie must send the session's CSRF token in X-CSRF-Token",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Query parameters of `GET /api/v1/notifications`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/notifications`: the signed-in user's notifications, unread
/// first then newest first, paged (`limit`, `cursor`).
pub async fn notifications(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Result<axum::extract::Query<NotificationParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let p = signed_in(&st, &headers).await?;
    let user = p.user.map(|u| u.user_id).unwrap_or_default();
    let limit = crate::rest::page_size(q.limit.as_deref(), st.cfg.max_page_size)?;
    let start = match &q.cursor {
        Some(c) => crate::rest::decode_cursor("notifications", c)?
            .parse::<usize>()
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "`cursor` is not a cursor of this listing",
                )
            })?,
        None => 0,
    };
    let all = crow_lake::notify::for_user(&st.lake, &user)
        .await
        .map_err(|e| ApiError::from_lake("reading notifications", &e))?;
    let unread = all.iter().filter(|n| n.read_at.is_none()).count();
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|n| {
            json!({"id": n.notification_id, "kind": n.kind, "title": n.title, "body": n.body,
                   "link": n.link, "created_at": ts(n.created_at), "read_at": n.read_at.map(ts)})
        })
        .collect();
    let next = (start + limit < all.len())
        .then(|| crate::rest::encode_cursor("notifications", &(start + limit).to_string()));
    Ok(Json(
        json!({"data": page, "unread": unread, "next_cursor": next}),
    ))
}

/// `POST /api/v1/notifications/{id}/read` (`all` marks every one read).
pub async fn notification_read(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = signed_in(&st, &headers).await?;
    let user = p.user.map(|u| u.user_id).unwrap_or_default();
    let which = (id != "all").then_some(id.as_str());
    let n = crow_lake::notify::mark_read(&st.lake, &user, which)
        .await
        .map_err(|e| ApiError::from_lake("marking notifications read", &e))?;
    if n == 0 && which.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no unread notification of yours has this id",
        ));
    }
    Ok(Json(json!({"marked_read": n})).into_response())
}
