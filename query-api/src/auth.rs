//! Authentication (`Authorization: Bearer SECRET`) and per-key rate limits.
//!
//! The whole `api_keys` table (small) is cached by hash and reloaded once it
//! is older than `api.key_cache_seconds` (at most 60 s), so a revocation is
//! enforced within that time. An unknown secret reloads the table (a
//! reload that began after the request came), at most ten times a second
//! in all, so a new key works at once and guessing keys costs few lake
//! reads (and each guess at least the wait for the next reload). Expiry is checked on every request against the
//! current time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use chrono::Utc;
use crow_lake::Lake;
use tokio::sync::RwLock;

use crate::error::{ApiError, ApiResult};
use crate::keys::{ApiKey, Scope};
use crate::users::{Role, User, UserSession};

/// Who is calling: a valid key of one organization, or a signed-in user.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The caller's organization: every read is filtered to it.
    pub org_id: String,
    /// The key id, or the user id of a signed-in user (rate limits and
    /// concurrency slots count per caller).
    pub key_id: String,
    /// What the caller may do on the data endpoints: the key's scope, or
    /// the scope of the user's role.
    pub scope: Scope,
    /// The signed-in user and their session, when authenticated by cookie.
    pub user: Option<SignedIn>,
}

/// A user authenticated by their session cookie.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user_id: String,
    /// Their role.
    pub role: Role,
    /// The session.
    pub session_id: String,
}

impl Principal {
    /// The actor as written in `audit_log`: `user:<id>` or `key:<id>`.
    pub fn actor(&self) -> String {
        match &self.user {
            Some(u) => format!("user:{}", u.user_id),
            None => format!("key:{}", self.key_id),
        }
    }
}

/// Name of the session cookie (HttpOnly).
pub const SESSION_COOKIE: &str = "crow_session";
/// Name of the CSRF cookie (readable by the page, sent back as a header).
pub const CSRF_COOKIE: &str = "crow_csrf";
/// Header that carries the CSRF token on cookie-authenticated mutations.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: derived from the cookie's secret, so it is
/// bound to the session and needs no storage.
pub fn csrf_token(session_secret: &str) -> String {
    let h = crow_lake::ids::sha256_hex(format!("crow-csrf:{session_secret}").as_bytes());
    h.chars().take(32).collect()
}

/// Constant-time equality of two secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Cached `api_keys` and sign-in sessions, by hash, with the users and the
/// disabled organizations they depend on.
pub struct KeyCache {
    lake: Lake,
    ttl: Duration,
    /// A session ends after this long without a request.
    pub session_idle: chrono::Duration,
    inner: RwLock<KeyMap>,
}

struct KeyMap {
    by_hash: HashMap<String, ApiKey>,
    /// Organizations that are disabled: their keys are refused.
    disabled_orgs: std::collections::HashSet<String>,
    sessions: HashMap<String, UserSession>,
    users: HashMap<String, User>,
    loaded: Option<Instant>,
}

impl KeyCache {
    /// A cache that reloads after `ttl`.
    pub fn new(lake: Lake, ttl: Duration) -> Self {
        Self {
            lake,
            ttl,
            session_idle: chrono::Duration::hours(12),
            inner: RwLock::new(KeyMap {
                by_hash: HashMap::new(),
                disabled_orgs: Default::default(),
                sessions: HashMap::new(),
                users: HashMap::new(),
                loaded: None,
            }),
        }
    }

    /// The key with this secret, and whether its organization is disabled.
    async fn lookup(&self, secret: &str) -> crow_lake::Result<Option<(ApiKey, bool)>> {
        let hash = crow_lake::ids::sha256_hex(secret.as_bytes());
        let arrived = Instant::now();
        let found = |m: &KeyMap| {
            m.by_hash
                .get(&hash)
                .map(|k| (k.clone(), m.disabled_orgs.contains(&k.org_id)))
        };
        {
            let m = self.inner.read().await;
            if m.loaded.is_some_and(|t| t.elapsed() < self.ttl) {
                if let Some(hit) = found(&m) {
                    return Ok(Some(hit));
                }
            }
        }
        self.reload_since(arrived).await?;
        Ok(found(&*self.inner.read().await))
    }

    /// Make sure the cache holds the tables as read by a reload that began
    /// at or after `arrived`: a key or session made before the request
    /// came is found, even one made a moment after another request
    /// reloaded. Reloads for unknown secrets are at most ten a second in
    /// all: a request waits out the rest of the 100 ms since the last
    /// reload began, then one reload serves every request waiting.
    async fn reload_since(&self, arrived: Instant) -> crow_lake::Result<()> {
        let miss_reload = self.ttl.min(Duration::from_millis(100));
        let last = self.inner.read().await.loaded;
        if let Some(since) = last.map(|t| t.elapsed()) {
            if since < miss_reload {
                tokio::time::sleep(miss_reload - since).await;
            }
        }
        let mut m = self.inner.write().await;
        if m.loaded.is_some_and(|t| t >= arrived) {
            return Ok(());
        }
        let started = Instant::now();
        let keys = crate::keys::list(&self.lake, None).await?;
        m.by_hash = keys.into_iter().map(|k| (k.key_hash.clone(), k)).collect();
        m.disabled_orgs = crow_lake::orgs::list(&self.lake)
            .await?
            .into_iter()
            .filter(|o| o.status != "active")
            .map(|o| o.org_id)
            .collect();
        m.sessions = crate::users::live_sessions(&self.lake)
            .await?
            .into_iter()
            .map(|s| (s.session_hash.clone(), s))
            .collect();
        m.users = crate::users::list(&self.lake, None)
            .await?
            .into_iter()
            .map(|u| (u.user_id.clone(), u))
            .collect();
        m.loaded = Some(started);
        Ok(())
    }

    /// The session whose cookie secret this is, its user, and whether the
    /// organization is disabled. Cached like keys: a revoked session or a
    /// disabled user is refused within `api.key_cache_seconds`.
    async fn lookup_session(
        &self,
        secret: &str,
    ) -> crow_lake::Result<Option<(UserSession, User, bool)>> {
        let hash = crow_lake::ids::sha256_hex(secret.as_bytes());
        let arrived = Instant::now();
        let found = |m: &KeyMap| {
            m.sessions.get(&hash).and_then(|s| {
                m.users
                    .get(&s.user_id)
                    .map(|u| (s.clone(), u.clone(), m.disabled_orgs.contains(&s.org_id)))
            })
        };
        {
            let m = self.inner.read().await;
            if m.loaded.is_some_and(|t| t.elapsed() < self.ttl) {
                if let Some(hit) = found(&m) {
                    return Ok(Some(hit));
                }
            }
        }
        self.reload_since(arrived).await?;
        Ok(found(&*self.inner.read().await))
    }

    /// Note in the cache that a session was used now.
    async fn seen(&self, session_hash: &str, at: chrono::DateTime<Utc>) {
        if let Some(s) = self.inner.write().await.sessions.get_mut(session_hash) {
            s.last_seen_at = at;
        }
    }

    /// Forget cached sessions and users (after a sign-out or a change made
    /// by this server, so it is refused here at once).
    pub async fn invalidate(&self) {
        self.inner.write().await.loaded = None;
    }

    /// Whether the key table can be read.
    pub async fn ready(&self) -> bool {
        self.inner.read().await.loaded.is_some() || self.lookup("").await.is_ok()
    }
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 50_000;

/// Token buckets, one per key.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `key`; `Err(seconds)` says how long until one is
    /// available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        // Forget buckets that have refilled (they would start full anyway),
        // so many callers — hostile ones with many addresses too — cannot
        // grow the map without bound.
        if b.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            b.retain(|_, (t, l)| *t + now.duration_since(*l).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = b.entry(key.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The bearer secret of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let s = secret.trim();
    (!s.is_empty()).then_some(s)
}

/// Authenticate a request, check its scope and rate limit.
pub async fn authenticate(
    keys: &KeyCache,
    limiter: &RateLimiter,
    headers: &HeaderMap,
    needed: Scope,
) -> ApiResult<Principal> {
    let Some(secret) = bearer(headers) else {
        return match cookie(headers, SESSION_COOKIE) {
            Some(secret) => session_principal(keys, limiter, secret, needed).await,
            None => Err(ApiError::unauthorized(
                "send an API key as `Authorization: Bearer SECRET`, or sign in",
            )),
        };
    };
    authenticate_key(keys, limiter, secret, needed).await
}

/// Authenticate an API key's secret (given as a Bearer token, or as the
/// password of a Postgres-wire connection): known, not revoked or expired,
/// its organization enabled, within its rate limit and of scope `needed`.
pub async fn authenticate_key(
    keys: &KeyCache,
    limiter: &RateLimiter,
    secret: &str,
    needed: Scope,
) -> ApiResult<Principal> {
    let key = keys
        .lookup(secret)
        .await
        .map_err(|e| ApiError::from_lake("loading API keys", &e))?
        .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
    let (key, org_disabled) = key;
    if org_disabled {
        return Err(ApiError::unauthorized(
            "this API key's organization is disabled",
        ));
    }
    if key.revoked_at.is_some() {
        return Err(ApiError::unauthorized("this API key has been revoked"));
    }
    if !key.is_valid_at(Utc::now()) {
        return Err(ApiError::unauthorized("this API key has expired"));
    }
    limiter
        .check(&key.key_id)
        .map_err(|wait| rate_limited("of this API key", wait))?;
    let scope = key.scope();
    if scope < needed {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "this API key has scope `{}`; this call needs `{}`",
                scope.as_str(),
                needed.as_str()
            ),
        ));
    }
    Ok(Principal {
        org_id: key.org_id,
        key_id: key.key_id,
        scope,
        user: None,
    })
}

/// 429 `rate_limited` with `Retry-After`.
pub(crate) fn rate_limited(whose: &str, wait: u64) -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("rate limit {whose} exceeded; retry in {wait} s"),
    );
    e.retry_after = Some(wait);
    e
}

/// A signed-in user's principal from their session cookie.
async fn session_principal(
    keys: &KeyCache,
    limiter: &RateLimiter,
    secret: &str,
    needed: Scope,
) -> ApiResult<Principal> {
    let ended = || ApiError::unauthorized("your session has ended: sign in again");
    let (session, user, org_disabled) = keys
        .lookup_session(secret)
        .await
        .map_err(|e| ApiError::from_lake("loading sessions", &e))?
        .ok_or_else(ended)?;
    let now = Utc::now();
    if !session.is_live(now, keys.session_idle) || user.status != "active" || org_disabled {
        return Err(ended());
    }
    limiter
        .check(&user.user_id)
        .map_err(|wait| rate_limited("of this user", wait))?;
    let role = user.role();
    let scope = role.scope();
    if scope < needed {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_role",
            format!(
                "your role `{}` does not allow this (it needs the `{}` scope)",
                role.as_str(),
                needed.as_str()
            ),
        ));
    }
    // Idle time counts from the last request; the lake copy is refreshed at
    // most every five minutes per session.
    if now - session.last_seen_at > chrono::Duration::minutes(5) {
        keys.seen(&session.session_hash, now).await;
        let lake = keys.lake.clone();
        let s = session.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::users::touch_session(&lake, &s).await {
                tracing::warn!(error = %e, "could not record a session's last request");
            }
        });
    }
    Ok(Principal {
        org_id: user.org_id.clone(),
        key_id: user.user_id.clone(),
        scope,
        user: Some(SignedIn {
            user_id: user.user_id,
            role,
            session_id: session.session_id,
        }),
    })
}

/// Whether a request's `Origin`, when it sends one, is this server's own
/// host: the agent endpoints (`/mcp`, `/a2a`) refuse calls made from another
/// site's pages (DNS rebinding, a browser carrying a stored key).
fn origin_ok(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The caller of an agent endpoint (`/mcp`, `/a2a`): a bearer API key with
/// read scope, from a request that no other site's page sent. Refusals are
/// whole responses (403 `forbidden_origin`; 401 with `WWW-Authenticate`).
pub async fn agent_caller(
    st: &crate::ApiState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Principal, axum::response::Response> {
    use axum::response::IntoResponse;
    if !origin_ok(headers) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden_origin",
            format!("requests to {endpoint} from another site's pages are refused"),
        )
        .into_response());
    }
    if bearer(headers).is_none() {
        let mut r = ApiError::unauthorized("send an API key as `Authorization: Bearer SECRET`")
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return Err(r);
    }
    authenticate(&st.keys, &st.limiter, headers, Scope::Read)
        .await
        .map_err(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key made right after another request reloaded the cache is found
    /// at once (the reload that answers it began after the request came),
    /// and unknown secrets reload at most once per 100 ms.
    #[tokio::test]
    async fn a_new_key_works_at_once_and_misses_reload_ten_times_a_second() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = crow_schemas::config::LakeConfig {
            uri: dir.path().join("lake").display().to_string(),
            ..Default::default()
        };
        let lake = Lake::open(&cfg).await.expect("open");
        lake.init().await.expect("init");
        let org = crow_lake::orgs::create(&lake, "Shop", None, None)
            .await
            .expect("org")
            .org
            .org_id;
        let new_key = || crate::keys::create(&lake, &org, Scope::Read, None, None);
        let cache = KeyCache::new(lake.clone(), Duration::from_secs(60));
        let first = new_key().await.expect("key");
        let (k, disabled) = cache
            .lookup(&first.secret)
            .await
            .expect("lookup")
            .expect("the first key");
        assert_eq!(
            (k.key_id.as_str(), disabled),
            (first.key.key_id.as_str(), false)
        );
        for _ in 0..3 {
            let made = Instant::now();
            let next = new_key().await.expect("key");
            let found = cache.lookup(&next.secret).await.expect("lookup");
            assert_eq!(
                found.map(|(k, _)| k.key_id),
                Some(next.key.key_id),
                "a key made {:?} after the last reload",
                made.elapsed()
            );
        }
        let before = cache.inner.read().await.loaded.expect("loaded");
        let t = Instant::now();
        assert!(cache.lookup("ck_guess_1").await.expect("lookup").is_none());
        assert!(cache.lookup("ck_guess_2").await.expect("lookup").is_none());
        let after = cache.inner.read().await.loaded.expect("loaded");
        assert!(after > before, "an unknown secret reloads");
        assert!(
            after.duration_since(before) >= Duration::from_millis(100),
            "at most one reload per 100 ms ({:?} apart)",
            after.duration_since(before)
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn token_bucket_refuses_past_the_burst_then_refills() {
        let l = RateLimiter::new(1000.0, 2);
        assert_eq!(l.check("a"), Ok(()));
        assert_eq!(l.check("a"), Ok(()));
        assert_eq!(l.check("b"), Ok(()), "buckets are per key");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.check("a"), Ok(()), "refilled");
        let slow = RateLimiter::new(0.1, 1);
        assert_eq!(slow.check("a"), Ok(()));
        // Empty: one token takes 10 s at 0.1 per second.
        assert_eq!(slow.check("a"), Err(10));
        assert_eq!(slow.check("b"), Ok(()));
        let burst = RateLimiter::new(0.1, 3);
        let got: Vec<_> = (0..4).map(|_| burst.check("k")).collect();
        assert_eq!(got, [Ok(()), Ok(()), Ok(()), Err(10)], "exactly the burst");
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ck_abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("ck_abc"));
        h.insert(header::AUTHORIZATION, "Basic ck_abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
