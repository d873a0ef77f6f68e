//! Authentication (`Authorization: Bearer SECRET`) and per-key rate limits.
//!
//! The whole `api_keys` table (small) is cached by hash and reloaded once it
//! is older than `api.key_cache_seconds` (at most 60 s), so a revocation is
//! enforced within that time. An unknown secret reloads the table, at most
//! ten times a second in all, so a new key works at once and guessing keys
//! costs few lake reads. Expiry is checked on every request against the
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

/// Who is calling: a valid key of one organization.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's organization: every read is filtered to it.
    pub org_id: String,
    /// The key id.
    pub key_id: String,
    /// The key's scope.
    pub scope: Scope,
}

/// Cached `api_keys`, by hash.
pub struct KeyCache {
    lake: Lake,
    ttl: Duration,
    inner: RwLock<KeyMap>,
}

struct KeyMap {
    by_hash: HashMap<String, ApiKey>,
    /// Organizations that are disabled: their keys are refused.
    disabled_orgs: std::collections::HashSet<String>,
    loaded: Option<Instant>,
}

impl KeyCache {
    /// A cache that reloads after `ttl`.
    pub fn new(lake: Lake, ttl: Duration) -> Self {
        Self {
            lake,
            ttl,
            inner: RwLock::new(KeyMap {
                by_hash: HashMap::new(),
                disabled_orgs: Default::default(),
                loaded: None,
            }),
        }
    }

    /// The key with this secret, and whether its organization is disabled.
    async fn lookup(&self, secret: &str) -> crow_lake::Result<Option<(ApiKey, bool)>> {
        let hash = crow_lake::ids::sha256_hex(secret.as_bytes());
        let miss_reload = self.ttl.min(Duration::from_millis(100));
        {
            let m = self.inner.read().await;
            if let Some(loaded) = m.loaded {
                match m.by_hash.get(&hash) {
                    Some(k) if loaded.elapsed() < self.ttl => {
                        return Ok(Some((k.clone(), m.disabled_orgs.contains(&k.org_id))))
                    }
                    None if loaded.elapsed() < miss_reload => return Ok(None),
                    _ => {}
                }
            }
        }
        let mut m = self.inner.write().await;
        let stale = m.loaded.is_none_or(|t| {
            t.elapsed() >= self.ttl
                || (!m.by_hash.contains_key(&hash) && t.elapsed() >= miss_reload)
        });
        if stale {
            let keys = crate::keys::list(&self.lake, None).await?;
            m.by_hash = keys.into_iter().map(|k| (k.key_hash.clone(), k)).collect();
            m.disabled_orgs = crow_lake::orgs::list(&self.lake)
                .await?
                .into_iter()
                .filter(|o| o.status != "active")
                .map(|o| o.org_id)
                .collect();
            m.loaded = Some(Instant::now());
        }
        Ok(m.by_hash
            .get(&hash)
            .map(|k| (k.clone(), m.disabled_orgs.contains(&k.org_id))))
    }

    /// Whether the key table can be read.
    pub async fn ready(&self) -> bool {
        self.inner.read().await.loaded.is_some() || self.lookup("").await.is_ok()
    }
}

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
fn bearer(headers: &HeaderMap) -> Option<&str> {
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
    let secret = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("send an API key as `Authorization: Bearer SECRET`")
    })?;
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
    if let Err(wait) = limiter.check(&key.key_id) {
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit of this API key exceeded; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refuses_past_the_burst_then_refills() {
        let l = RateLimiter::new(1000.0, 2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("b").is_ok(), "buckets are per key");
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.check("a").is_ok(), "refilled");
        let slow = RateLimiter::new(0.1, 1);
        assert!(slow.check("a").is_ok());
        assert_eq!(slow.check("a"), Err(10));
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
