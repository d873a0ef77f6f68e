//! The collector's telemetry, registered into `crow serve`'s one Prometheus
//! registry ([`Metrics::register`]) and encoded at `/metrics`. One place per
//! event counts it; labels are low-cardinality (channel, reason code, table).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crow_schemas::metrics::{register, Reading, Registry};
pub use crow_schemas::metrics::{Counter, Histogram, LabeledCounter};

use crate::wal::WalStats;

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
            events_accepted: LabeledCounter::new("channel"),
            events_rejected: LabeledCounter::new("reason"),
            requests_refused: LabeledCounter::new("reason"),
            backpressure: Counter::default(),
            rows_committed: LabeledCounter::new("table"),
            segments_flushed: Counter::default(),
            segments_quarantined: Counter::default(),
            flush_failures: Counter::default(),
            flush_seconds: Histogram::new(LATENCY),
            ack_seconds: Histogram::new(LATENCY),
        }
    }
}

impl Metrics {
    /// Register every collector metric, and the WAL's counters read from
    /// `wal` at scrape time, into `registry`.
    pub fn register(&self, registry: &mut Registry, wal: &Arc<WalStats>) {
        let r = registry;
        register(
            r,
            "crow_ingest_events_accepted_total",
            "Events accepted (durable in the WAL).",
            self.events_accepted.clone(),
        );
        register(
            r,
            "crow_ingest_events_rejected_total",
            "Events rejected, by reason; each is in failed_events.",
            self.events_rejected.clone(),
        );
        register(
            r,
            "crow_ingest_requests_refused_total",
            "Whole requests refused, by reason.",
            self.requests_refused.clone(),
        );
        register(
            r,
            "crow_ingest_backpressure_total",
            "Requests answered 503 with Retry-After because flushing fell behind.",
            self.backpressure.clone(),
        );
        register(
            r,
            "crow_ingest_rows_committed_total",
            "Rows committed to the lake, by table.",
            self.rows_committed.clone(),
        );
        register(
            r,
            "crow_ingest_segments_flushed_total",
            "WAL segments committed and retired.",
            self.segments_flushed.clone(),
        );
        register(
            r,
            "crow_ingest_segments_quarantined_total",
            "WAL segments that could not be decoded, kept aside as <seq>.corrupt.",
            self.segments_quarantined.clone(),
        );
        register(
            r,
            "crow_ingest_flush_failures_total",
            "Flush attempts that failed and were retried.",
            self.flush_failures.clone(),
        );
        register_wal(r, wal);
        register(
            r,
            "crow_ingest_flush_seconds",
            "Time to commit one WAL segment to the lake.",
            self.flush_seconds.clone(),
        );
        register(
            r,
            "crow_ingest_ack_seconds",
            "Time from request to durable acknowledgement.",
            self.ack_seconds.clone(),
        );
    }
}

/// The WAL's gauges and counters, read from its own atomics.
fn register_wal(r: &mut Registry, wal: &Arc<WalStats>) {
    let read = |field: fn(&WalStats) -> &std::sync::atomic::AtomicU64| {
        let wal = wal.clone();
        move || field(&wal).load(Ordering::Relaxed)
    };
    register(
        r,
        "crow_ingest_wal_pending_bytes",
        "WAL bytes not yet committed to the lake.",
        Reading::gauge(read(|w| &w.pending_bytes)),
    );
    register(
        r,
        "crow_ingest_wal_pending_segments",
        "WAL segments not yet committed to the lake.",
        Reading::gauge(read(|w| &w.pending_segments)),
    );
    register(
        r,
        "crow_ingest_wal_written_bytes_total",
        "Bytes written to the WAL.",
        Reading::counter(read(|w| &w.written_bytes)),
    );
    register(
        r,
        "crow_ingest_wal_fsyncs_total",
        "WAL fsyncs (one per group commit).",
        Reading::counter(read(|w| &w.syncs)),
    );
    register(
        r,
        "crow_ingest_wal_records_total",
        "Records written to the WAL.",
        Reading::counter(read(|w| &w.records)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every collector metric on `/metrics`, by the name, type and help it
    /// always had, with the value counted.
    #[test]
    fn registers_every_metric_by_its_name() {
        let m = Metrics::default();
        let wal = Arc::new(WalStats::default());
        let mut r = Registry::default();
        m.register(&mut r, &wal);
        m.events_accepted.inc_by("web", 3);
        m.rows_committed.inc_by("raw_web_events", 2);
        m.backpressure.inc();
        m.ack_seconds.observe(0.002);
        wal.pending_bytes.store(42, Ordering::Relaxed);
        wal.records.store(9, Ordering::Relaxed);
        let text = crow_schemas::metrics::encode(&r);
        for line in [
            "# HELP crow_ingest_events_accepted_total Events accepted (durable in the WAL).\n",
            "# TYPE crow_ingest_events_accepted_total counter\n",
            "crow_ingest_events_accepted_total{channel=\"web\"} 3\n",
            "# TYPE crow_ingest_events_rejected_total counter\n",
            "crow_ingest_rows_committed_total{table=\"raw_web_events\"} 2\n",
            "crow_ingest_backpressure_total 1\n",
            "crow_ingest_segments_quarantined_total 0\n",
            "# TYPE crow_ingest_wal_pending_bytes gauge\ncrow_ingest_wal_pending_bytes 42\n",
            "crow_ingest_wal_records_total 9\n",
            "# TYPE crow_ingest_ack_seconds histogram\n",
            "crow_ingest_ack_seconds_bucket{le=\"0.001\"} 0\n",
            "crow_ingest_ack_seconds_bucket{le=\"0.0025\"} 1\n",
            "crow_ingest_ack_seconds_bucket{le=\"+Inf\"} 1\n",
            "crow_ingest_ack_seconds_count 1\n",
            "crow_ingest_flush_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line:?} not in {text}");
        }
    }
}
