//! The SQL result cache of `POST /api/v1/sql`: dashboards repeat the same
//! queries, and an answer whose inputs have not changed need not be
//! computed again.
//!
//! An answer is stored as the bytes of its response, under a key made of
//! everything the answer depends on:
//! - the statement, normalized (parsed and printed again: whitespace,
//!   comments and keyword case do not matter);
//! - the tenant: the organization and whether the session shows admin-only
//!   rows;
//! - the time travel asked for (`as_of`, `versions`) and the result format
//!   (media type and its parameters);
//! - the Delta version of **every table the planned query reads**, taken
//!   from the tenant session after planning ([`TenantSchema::versions_read`]):
//!   the very snapshots the plan scans. A commit to a table the query reads
//!   makes a new key, so a stale answer is never served; a commit to
//!   another table leaves the key alone. There is no time-to-live.
//!
//! Only deterministic queries are cached: a plan calling a function that is
//! not immutable (`now()`, `current_date`, `random()`, `uuid()`, …) is run
//! every time, and the answer says which function. The cache holds at most
//! `api.result_cache_mb` (0 turns it off), drops the least recently used
//! answers to make room, and does not keep an answer larger than
//! `api.result_cache_max_entry_mb`. Only complete answers are stored: one
//! cut short by an error, a limit, a timeout or a client that went away is
//! not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use crow_lake::AsOf;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility, WindowFunctionDefinition};
use serde::Serialize;

use crate::metrics::ApiMetrics;
use crate::tenant::{Pins, TenantSchema};

/// Bytes counted per entry beyond its key and answer (map and list slots).
const ENTRY_OVERHEAD: usize = 96;

/// What an answer depends on, serialized into its key.
#[derive(Serialize)]
struct KeyParts<'a> {
    org: &'a str,
    admin: bool,
    format: &'a str,
    as_of: String,
    pins: BTreeMap<&'a str, String>,
    versions: BTreeMap<String, Option<u64>>,
    sql: &'a str,
}

/// A cache key: an unambiguous text of everything an answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Arc<str>);

/// What a request asks for besides its statement: the parts of the key
/// known before planning.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The result format, with its parameters (e.g. `Arrow { plain: true }`).
    pub format: String,
    /// `as_of` of the request.
    pub as_of: AsOf,
    /// `versions` of the request.
    pub pins: Pins,
}

/// What the cache says about one planned query.
#[derive(Debug)]
pub enum Cached {
    /// Not looked up: the cache is off, or the protocol does not use it.
    Off,
    /// Not cacheable, and why.
    Bypass(String),
    /// Not in the cache: store the complete answer under this key.
    Miss(CacheKey),
    /// The answer.
    Hit(Bytes),
}

impl Cached {
    /// The `X-Crow-Cache` value of an answer.
    pub fn header(&self) -> &'static str {
        match self {
            Cached::Off | Cached::Bypass(_) => "bypass",
            Cached::Miss(_) => "miss",
            Cached::Hit(_) => "hit",
        }
    }
}

struct Entry {
    body: Bytes,
    size: usize,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, Entry>,
    /// Entries by last use, oldest first.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
}

/// The result cache: least recently used answers leave first.
pub struct ResultCache {
    capacity: usize,
    entry_cap: usize,
    inner: Mutex<Inner>,
    metrics: Arc<ApiMetrics>,
}

impl ResultCache {
    /// A cache of `capacity` bytes holding answers of at most `entry_cap`
    /// bytes; a capacity of 0 turns it off.
    pub fn new(capacity: usize, entry_cap: usize, metrics: Arc<ApiMetrics>) -> Self {
        Self {
            capacity,
            entry_cap: entry_cap.min(capacity),
            inner: Mutex::new(Inner::default()),
            metrics,
        }
    }

    /// Whether answers are cached at all.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The largest answer kept, in bytes.
    pub fn entry_cap(&self) -> usize {
        self.entry_cap
    }

    /// Look a planned query up: `sql` is its normalized statement, `plan`
    /// its logical plan and `schema` the tenant session it was planned in.
    pub fn probe(
        &self,
        lookup: &Lookup,
        sql: &str,
        plan: &LogicalPlan,
        schema: &TenantSchema,
    ) -> Cached {
        let cached = self.classify(lookup, sql, plan, schema);
        let c = &self.metrics.cache;
        match &cached {
            Cached::Off | Cached::Bypass(_) => c.bypasses.inc(),
            Cached::Miss(_) => c.misses.inc(),
            Cached::Hit(_) => c.hits.inc(),
        };
        cached
    }

    fn classify(
        &self,
        lookup: &Lookup,
        sql: &str,
        plan: &LogicalPlan,
        schema: &TenantSchema,
    ) -> Cached {
        if !self.enabled() {
            return Cached::Off;
        }
        if let Some(f) = not_deterministic(plan) {
            return Cached::Bypass(format!("calls {f}, which is not deterministic"));
        }
        let Some(versions) = schema.versions_read() else {
            return Cached::Bypass("the versions read are unknown".into());
        };
        let parts = KeyParts {
            org: schema.org_id(),
            admin: schema.admin(),
            format: &lookup.format,
            as_of: format!("{:?}", lookup.as_of),
            pins: lookup
                .pins
                .iter()
                .map(|(t, a)| (t.as_str(), format!("{a:?}")))
                .collect(),
            versions,
            sql,
        };
        let key = match serde_json::to_string(&parts) {
            Ok(k) => CacheKey(k.into()),
            Err(e) => return Cached::Bypass(format!("no key: {e}")),
        };
        match self.get(&key) {
            Some(body) => Cached::Hit(body),
            None => Cached::Miss(key),
        }
    }

    fn get(&self, key: &CacheKey) -> Option<Bytes> {
        let mut inner = self.inner.lock().ok()?;
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.map.get_mut(key)?;
        let old = std::mem::replace(&mut e.tick, tick);
        let body = e.body.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, key.clone());
        Some(body)
    }

    /// Keep `body` as the answer of `key`, dropping the least recently used
    /// answers to make room; an answer above the entry cap is not kept.
    pub fn put(&self, key: CacheKey, body: Bytes) {
        let size = body.len() + key.0.len() + ENTRY_OVERHEAD;
        if size > self.entry_cap {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let c = &self.metrics.cache;
        if let Some(old) = inner.map.remove(&key) {
            inner.order.remove(&old.tick);
            inner.bytes -= old.size;
        }
        while inner.bytes + size > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.size;
                c.evictions.inc();
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key.clone());
        inner.map.insert(key, Entry { body, size, tick });
        inner.bytes += size;
        c.bytes.set(inner.bytes as u64);
        c.entries.set(inner.map.len() as u64);
    }
}

/// The first function of `plan` (its subqueries included) whose result may
/// change between runs with the same inputs: volatile (`random()`,
/// `uuid()`) or stable within one query only (`now()`, `current_date`).
pub fn not_deterministic(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (name, v) = match e {
                    Expr::ScalarFunction(f) => (f.func.name(), crate::bounded::volatility(&f.func)),
                    Expr::AggregateFunction(f) => (f.func.name(), f.func.signature().volatility),
                    Expr::WindowFunction(w) => match &w.fun {
                        WindowFunctionDefinition::AggregateUDF(f) => {
                            (f.name(), f.signature().volatility)
                        }
                        WindowFunctionDefinition::WindowUDF(f) => {
                            (f.name(), f.signature().volatility)
                        }
                    },
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if v == Volatility::Immutable {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    found = Some(format!("{name}()"));
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, entry: usize) -> (ResultCache, Arc<ApiMetrics>) {
        let m = Arc::new(ApiMetrics::default());
        (ResultCache::new(capacity, entry, m.clone()), m)
    }

    fn key(s: &str) -> CacheKey {
        CacheKey(s.into())
    }

    #[test]
    fn least_recently_used_leaves_first_within_the_bound() {
        let per = 100 + 1 + ENTRY_OVERHEAD;
        let (c, m) = cache(3 * per, per);
        for k in ["a", "b", "c"] {
            c.put(key(k), Bytes::from(vec![0u8; 100]));
        }
        assert!(c.get(&key("a")).is_some());
        c.put(key("d"), Bytes::from(vec![0u8; 100]));
        assert!(c.get(&key("b")).is_none(), "b was the least recently used");
        for k in ["a", "c", "d"] {
            assert!(c.get(&key(k)).is_some(), "{k} must stay");
        }
        assert_eq!(m.cache.evictions.get(), 1);
        assert_eq!(m.cache.bytes.get(), 3 * per as u64);
        assert_eq!(m.cache.entries.get(), 3);
        // Above the entry cap: not kept, nothing evicted.
        c.put(key("e"), Bytes::from(vec![0u8; 101]));
        assert!(c.get(&key("e")).is_none());
        assert_eq!(m.cache.evictions.get(), 1);
    }

    #[test]
    fn replacing_an_entry_counts_its_bytes_once() {
        let (c, m) = cache(10_000, 10_000);
        c.put(key("a"), Bytes::from_static(b"one"));
        c.put(key("a"), Bytes::from_static(b"three"));
        assert_eq!(c.get(&key("a")).as_deref(), Some(&b"three"[..]));
        assert_eq!(m.cache.bytes.get(), (5 + 1 + ENTRY_OVERHEAD) as u64);
    }
}
