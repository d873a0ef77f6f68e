//! Concurrency slots: how many queries one API key and one organization may
//! run at a time (`api.max_concurrent_queries_per_key` / `_per_org`).
//!
//! The request-rate bucket ([`crate::auth::RateLimiter`]) bounds how often a
//! key may ask; slots bound how much it may hold at once — a key that sends
//! slow queries within its rate would otherwise occupy every core and the
//! whole memory pool. A query holds its slots until its answer is sent (or
//! its export is written); beyond them the request gets 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Seconds a refused request is asked to wait.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Semaphores per key and per organization, created on first use.
#[derive(Debug)]
pub struct Slots {
    per_key: usize,
    per_org: usize,
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
    orgs: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The slots one running query holds; released when dropped.
#[derive(Debug, Default)]
pub struct Permits {
    _held: Vec<OwnedSemaphorePermit>,
}

impl Slots {
    /// Slots with these limits.
    pub fn new(per_key: u64, per_org: u64) -> Self {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX).max(1);
        Self {
            per_key: n(per_key),
            per_org: n(per_org),
            keys: Mutex::new(HashMap::new()),
            orgs: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(
        map: &Mutex<HashMap<String, Arc<Semaphore>>>,
        id: &str,
        n: usize,
    ) -> Arc<Semaphore> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone()
    }

    /// Take a slot of `key_id` and one of `org_id`, or answer 429.
    pub fn acquire(&self, key_id: &str, org_id: &str) -> Result<Permits, ApiError> {
        let busy = |what: &str, n: usize| {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_queries",
                format!("{what} already runs {n} queries at once; wait for one to finish"),
            );
            e.retry_after = Some(RETRY_AFTER_SECONDS);
            e
        };
        let key = Self::semaphore(&self.keys, key_id, self.per_key)
            .try_acquire_owned()
            .map_err(|_| busy("this API key", self.per_key))?;
        let org = Self::semaphore(&self.orgs, org_id, self.per_org)
            .try_acquire_owned()
            .map_err(|_| busy("this organization", self.per_org))?;
        Ok(Permits {
            _held: vec![key, org],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_key_and_per_org() {
        let s = Slots::new(2, 3);
        let a1 = s.acquire("k1", "o").expect("first");
        let _a2 = s.acquire("k1", "o").expect("second");
        let e = s.acquire("k1", "o").expect_err("third of one key");
        assert_eq!((e.status.as_u16(), e.code), (429, "too_many_queries"));
        assert_eq!(e.retry_after, Some(RETRY_AFTER_SECONDS));
        let _b1 = s.acquire("k2", "o").expect("another key, org has room");
        let e = s.acquire("k3", "o").expect_err("org full");
        assert!(e.detail.contains("organization"), "{}", e.detail);
        assert!(s.acquire("k4", "other").is_ok(), "other orgs unaffected");
        drop(a1);
        assert!(s.acquire("k1", "o").is_ok(), "released on drop");
    }
}
