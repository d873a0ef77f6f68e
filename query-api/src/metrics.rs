//! The API's telemetry, registered into `crow serve`'s one Prometheus
//! registry ([`ApiMetrics::register`]) and encoded at `/metrics`. Labels are
//! low-cardinality: the route template and the status code.

use crow_schemas::metrics::{
    register, Counter, Family, Gauge, Histogram, LabeledCounter, NeverEmpty, Registry,
};

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A request's route template and status code.
type RouteStatus = [(&'static str, String); 2];

/// Every API metric.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RouteStatus, Counter>,
    query_seconds: Histogram,
    refused: LabeledCounter,
    spill_files: Counter,
    spilled_bytes: Counter,
    /// The SQL result cache's counters ([`crate::cache`]).
    pub cache: CacheStats,
}

/// Counters and gauges of the SQL result cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers served from the cache.
    pub hits: Counter,
    /// Cacheable queries not in the cache (run, then stored if they fit).
    pub misses: Counter,
    /// Queries not looked up: the cache is off or the query is not
    /// deterministic.
    pub bypasses: Counter,
    /// Entries dropped to make room.
    pub evictions: Counter,
    /// Bytes held (answers and keys).
    pub bytes: Gauge,
    /// Answers held.
    pub entries: Gauge,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            query_seconds: Histogram::new(LATENCY),
            refused: LabeledCounter::new("code"),
            spill_files: Counter::default(),
            spilled_bytes: Counter::default(),
            cache: CacheStats::default(),
        }
    }
}

impl ApiMetrics {
    /// Count one answered request.
    pub fn request(&self, route: &str, status: u16) {
        let labels = [("route", route.to_string()), ("status", status.to_string())];
        self.requests.get_or_create(&labels).inc();
    }

    /// Count one refused SQL statement by code.
    pub fn refused(&self, code: &str) {
        self.refused.inc_by(code, 1);
    }

    /// Count what one query spilled to disk past its memory pool.
    pub fn spilled(&self, files: u64, bytes: u64) {
        self.spill_files.inc_by(files);
        self.spilled_bytes.inc_by(bytes);
    }

    /// Record how long a query took until its first result batch.
    pub fn query_seconds(&self, secs: f64) {
        self.query_seconds.observe(secs);
    }

    /// Register every API metric into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        register(
            r,
            "crow_api_requests_total",
            "API requests answered, by route and status.",
            // Never empty, so its help and type are there before the
            // first request, as they always were.
            NeverEmpty(self.requests.clone()),
        );
        register(
            r,
            "crow_api_sql_refused_total",
            "SQL statements refused, by code.",
            self.refused.clone(),
        );
        register(
            r,
            "crow_api_query_spill_files_total",
            "Files queries spilled to disk past the memory pool (api.memory_limit_mb).",
            self.spill_files.clone(),
        );
        register(
            r,
            "crow_api_query_spilled_bytes_total",
            "Bytes queries spilled to disk past the memory pool.",
            self.spilled_bytes.clone(),
        );
        register(
            r,
            "crow_api_query_seconds",
            "SQL query latency until the first result batch.",
            self.query_seconds.clone(),
        );
        self.cache.register(r);
    }
}

impl CacheStats {
    fn register(&self, r: &mut Registry) {
        register(
            r,
            "crow_api_result_cache_hits_total",
            "SQL answers served from the result cache.",
            self.hits.clone(),
        );
        register(
            r,
            "crow_api_result_cache_misses_total",
            "Cacheable SQL queries not found in the result cache.",
            self.misses.clone(),
        );
        register(
            r,
            "crow_api_result_cache_bypass_total",
            "SQL queries that skipped the result cache (cache off, or not deterministic).",
            self.bypasses.clone(),
        );
        register(
            r,
            "crow_api_result_cache_evictions_total",
            "Result cache entries dropped to make room.",
            self.evictions.clone(),
        );
        register(
            r,
            "crow_api_result_cache_bytes",
            "Bytes held by the result cache.",
            self.bytes.clone(),
        );
        register(
            r,
            "crow_api_result_cache_entries",
            "Answers held by the result cache.",
            self.entries.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every API metric on `/metrics`, by the name, type and help it always
    /// had, with the value counted.
    #[test]
    fn registers_every_metric_by_its_name() {
        let m = ApiMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.request("/api/v1/sql", 200);
        m.request("/api/v1/sql", 200);
        m.request("/api/v1/sql", 401);
        m.refused("statement_not_allowed");
        m.spilled(2, 4096);
        m.query_seconds(0.007);
        m.cache.hits.inc();
        m.cache.bytes.set(300);
        let text = crow_schemas::metrics::encode(&r);
        for line in [
            "# HELP crow_api_requests_total API requests answered, by route and status.\n",
            "# TYPE crow_api_requests_total counter\n",
            "crow_api_requests_total{route=\"/api/v1/sql\",status=\"200\"} 2\n",
            "crow_api_requests_total{route=\"/api/v1/sql\",status=\"401\"} 1\n",
            "crow_api_sql_refused_total{code=\"statement_not_allowed\"} 1\n",
            "crow_api_query_spill_files_total 2\n",
            "crow_api_query_spilled_bytes_total 4096\n",
            "# TYPE crow_api_query_seconds histogram\n",
            "crow_api_query_seconds_bucket{le=\"0.005\"} 0\n",
            "crow_api_query_seconds_bucket{le=\"0.01\"} 1\n",
            "crow_api_query_seconds_count 1\n",
            "crow_api_result_cache_hits_total 1\n",
            "crow_api_result_cache_misses_total 0\n",
            "crow_api_result_cache_bypass_total 0\n",
            "crow_api_result_cache_evictions_total 0\n",
            "# TYPE crow_api_result_cache_bytes gauge\ncrow_api_result_cache_bytes 300\n",
            "crow_api_result_cache_entries 0\n",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
    }
}
