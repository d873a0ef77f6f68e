//! The collector's telemetry, rendered in Prometheus text format at
//! `/metrics`. One place per event counts it; labels are low-cardinality
//! (channel, reason code, table, status class).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::wal::WalStats;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with one label.
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<String, u64>>);

impl LabeledCounter {
    /// Add `n` to the series `label`.
    pub fn inc_by(&self, label: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_string()).or_default() += n;
        }
    }
    /// Value of one series.
    pub fn get(&self, label: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(label).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// A histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    /// Record one observation.
    pub fn observe(&self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every collector metric.
#[derive(Debug)]
pub struct Metrics {
    /// Events accepted, by channel.
    pub events_accepted: LabeledCounter,
    /// Events rejected, by reason code.
    pub events_rejected: LabeledCounter,
    /// Whole requests refused, by reason code.
    pub requests_refused: LabeledCounter,
    /// 503/429 answers because of backpressure.
    pub backpressure: Counter,
    /// Rows committed to the lake, by table.
    pub rows_committed: LabeledCounter,
    /// Segments flushed.
    pub segments_flushed: Counter,
    /// Segments set aside because they could not be decoded.
    pub segments_quarantined: Counter,
    /// Failed flush attempts (retried).
    pub flush_failures: Counter,
    /// Time to flush one segment.
    pub flush_seconds: Histogram,
    /// Time from request to durable ack.
    pub ack_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_accepted: LabeledCounter::default(),
            events_rejected: LabeledCounter::default(),
            requests_refused: LabeledCounter::default(),
            backpressure: Counter::default(),
            rows_committed: LabeledCounter::default(),
            segments_flushed: Counter::default(),
            segments_quarantined: Counter::default(),
            flush_failures: Counter::default(),
            flush_seconds: Histogram::new(LATENCY),
            ack_seconds: Histogram::new(LATENCY),
        }
    }
}

impl Metrics {
    /// Prometheus text exposition of every metric.
    pub fn render(&self, wal: &WalStats) -> String {
        let mut out = String::new();
        labeled(
            &mut out,
            "crow_ingest_events_accepted_total",
            "Events accepted (durable in the WAL).",
            "channel",
            &self.events_accepted,
        );
        labeled(
            &mut out,
            "crow_ingest_events_rejected_total",
            "Events rejected, by reason; each is in failed_events.",
            "reason",
            &self.events_rejected,
        );
        labeled(
            &mut out,
            "crow_ingest_requests_refused_total",
            "Whole requests refused, by reason.",
            "reason",
            &self.requests_refused,
        );
        counter(
            &mut out,
            "crow_ingest_backpressure_total",
            "Requests answered 503 with Retry-After because flushing fell behind.",
            self.backpressure.get(),
        );
        labeled(
            &mut out,
            "crow_ingest_rows_committed_total",
            "Rows committed to the lake, by table.",
            "table",
            &self.rows_committed,
        );
        counter(
            &mut out,
            "crow_ingest_segments_flushed_total",
            "WAL segments committed and retired.",
            self.segments_flushed.get(),
        );
        counter(
            &mut out,
            "crow_ingest_segments_quarantined_total",
            "WAL segments that could not be decoded, kept aside as <seq>.corrupt.",
            self.segments_quarantined.get(),
        );
        counter(
            &mut out,
            "crow_ingest_flush_failures_total",
            "Flush attempts that failed and were retried.",
            self.flush_failures.get(),
        );
        counter(
            &mut out,
            "crow_lake_commit_retries_total",
            "Commits retried after losing an optimistic-concurrency race.",
            crow_lake::commit_retries_total(),
        );
        gauge(
            &mut out,
            "crow_ingest_wal_pending_bytes",
            "WAL bytes not yet committed to the lake.",
            wal.pending_bytes.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "crow_ingest_wal_pending_segments",
            "WAL segments not yet committed to the lake.",
            wal.pending_segments.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "crow_ingest_wal_written_bytes_total",
            "Bytes written to the WAL.",
            wal.written_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "crow_ingest_wal_fsyncs_total",
            "WAL fsyncs (one per group commit).",
            wal.syncs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "crow_ingest_wal_records_total",
            "Records written to the WAL.",
            wal.records.load(Ordering::Relaxed),
        );
        self.flush_seconds.render(
            &mut out,
            "crow_ingest_flush_seconds",
            "Time to commit one WAL segment to the lake.",
        );
        self.ack_seconds.render(
            &mut out,
            "crow_ingest_ack_seconds",
            "Time from request to durable acknowledgement.",
        );
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn labeled(out: &mut String, name: &str, help: &str, label: &str, c: &LabeledCounter) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in c.snapshot() {
        let k = k.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}
