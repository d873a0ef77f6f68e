//! The API's telemetry in Prometheus text format (appended to `/metrics`).
//! Labels are low-cardinality: the route template and the status code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every API metric.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    query_buckets: Vec<AtomicU64>,
    query_sum_micros: AtomicU64,
    query_count: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    spill_files: AtomicU64,
    spilled_bytes: AtomicU64,
    /// The SQL result cache's counters ([`crate::cache`]).
    pub cache: CacheStats,
}

/// Counters and gauges of the SQL result cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Answers served from the cache.
    pub hits: AtomicU64,
    /// Cacheable queries not in the cache (run, then stored if they fit).
    pub misses: AtomicU64,
    /// Queries not looked up: the cache is off or the query is not
    /// deterministic.
    pub bypasses: AtomicU64,
    /// Entries dropped to make room.
    pub evictions: AtomicU64,
    /// Bytes held (answers and keys).
    pub bytes: AtomicU64,
    /// Answers held.
    pub entries: AtomicU64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            query_buckets: LATENCY.iter().map(|_| AtomicU64::new(0)).collect(),
            query_sum_micros: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            spill_files: AtomicU64::new(0),
            spilled_bytes: AtomicU64::new(0),
            cache: CacheStats::default(),
        }
    }
}

impl ApiMetrics {
    /// Count one answered request.
    pub fn request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    /// Count one refused SQL statement by code.
    pub fn refused(&self, code: &str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(code.to_string()).or_default() += 1;
        }
    }

    /// Count what one query spilled to disk past its memory pool.
    pub fn spilled(&self, files: u64, bytes: u64) {
        self.spill_files.fetch_add(files, Ordering::Relaxed);
        self.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Record how long a query took until its first result batch.
    pub fn query_seconds(&self, secs: f64) {
        for (b, c) in LATENCY.iter().zip(&self.query_buckets) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.query_sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.query_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP crow_api_requests_total API requests answered, by route and status.\n# TYPE crow_api_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "crow_api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP crow_api_sql_refused_total SQL statements refused, by code.\n# TYPE crow_api_sql_refused_total counter\n");
        if let Ok(m) = self.refused.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(out, "crow_api_sql_refused_total{{code=\"{code}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP crow_api_query_spill_files_total Files queries spilled to disk past the memory pool (api.memory_limit_mb).\n# TYPE crow_api_query_spill_files_total counter\ncrow_api_query_spill_files_total {}",
            self.spill_files.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP crow_api_query_spilled_bytes_total Bytes queries spilled to disk past the memory pool.\n# TYPE crow_api_query_spilled_bytes_total counter\ncrow_api_query_spilled_bytes_total {}",
            self.spilled_bytes.load(Ordering::Relaxed)
        );
        let name = "crow_api_query_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} SQL query latency until the first result batch.\n# TYPE {name} histogram"
        );
        for (b, c) in LATENCY.iter().zip(&self.query_buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.query_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.query_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
        self.render_cache(&mut out);
        out
    }

    fn render_cache(&self, out: &mut String) {
        let c = &self.cache;
        for (name, kind, help, v) in [
            (
                "hits_total",
                "counter",
                "SQL answers served from the result cache.",
                &c.hits,
            ),
            (
                "misses_total",
                "counter",
                "Cacheable SQL queries not found in the result cache.",
                &c.misses,
            ),
            (
                "bypass_total",
                "counter",
                "SQL queries that skipped the result cache (cache off, or not deterministic).",
                &c.bypasses,
            ),
            (
                "evictions_total",
                "counter",
                "Result cache entries dropped to make room.",
                &c.evictions,
            ),
            (
                "bytes",
                "gauge",
                "Bytes held by the result cache.",
                &c.bytes,
            ),
            (
                "entries",
                "gauge",
                "Answers held by the result cache.",
                &c.entries,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP crow_api_result_cache_{name} {help}\n# TYPE crow_api_result_cache_{name} {kind}\ncrow_api_result_cache_{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}
