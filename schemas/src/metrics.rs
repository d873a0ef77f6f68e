//! The metric types every part of `crow serve` registers into its one
//! Prometheus registry ([`Registry`], from the Prometheus org's
//! `prometheus-client`), and the `/metrics` text it encodes.
//!
//! The exposition is the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]),
//! as CROW served it before the crate: counter names end in `_total` on
//! every line (the crate appends the suffix, so [`register`] takes the name
//! as it reads on `/metrics` and hands the crate the stem), help texts end
//! with one period, and a labelled counter prints its `# HELP`/`# TYPE`
//! lines even before its first series.
//!
//! Hot paths stay lock-free: [`Counter`] and [`Gauge`] are atomics, and
//! [`Histogram`] is too (the crate's own histogram takes a mutex per
//! observation, one per request here). A [`LabeledCounter`] series is
//! looked up under a shared read lock, as the crate's `Family` does.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

pub use prometheus_client;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::registry::Registry;

/// A monotonically increasing counter (an atomic).
pub type Counter = prometheus_client::metrics::counter::Counter;

/// A value that goes up and down (an atomic).
pub type Gauge = prometheus_client::metrics::gauge::Gauge<u64, AtomicU64>;

/// The `Content-Type` of `/metrics`: Prometheus text 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Register `metric` under `name` as it reads on `/metrics` (a counter's
/// with its `_total`), with `help` as it reads there (one final period).
pub fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    let stem = match metric.metric_type() {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    // The crate ends every help text with a period of its own.
    let help = help.strip_suffix('.').unwrap_or(help);
    registry.register(stem, help, metric);
}

/// The registry in Prometheus text 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail, nor can CROW's metrics' encoders:
    // were one to, the text so far is still served.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// One label's value.
type LabelSet = [(&'static str, String); 1];

/// A counter with one label (a family of counters, one per label value).
#[derive(Debug, Clone)]
pub struct LabeledCounter {
    label: &'static str,
    family: Family<LabelSet, Counter>,
}

impl LabeledCounter {
    /// A counter whose series are told apart by `label`.
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            family: Family::default(),
        }
    }

    /// Add `n` to the series `value`.
    pub fn inc_by(&self, value: &str, n: u64) {
        self.family
            .get_or_create(&[(self.label, value.to_string())])
            .inc_by(n);
    }

    /// Value of one series (0 before its first count).
    pub fn get(&self, value: &str) -> u64 {
        self.family
            .get(&[(self.label, value.to_string())])
            .map_or(0, |c| c.get())
    }
}

impl EncodeMetric for LabeledCounter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.family.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }

    /// Never empty: the `# HELP`/`# TYPE` lines come before any series,
    /// as they always did.
    fn is_empty(&self) -> bool {
        false
    }
}

/// A metric (a family) whose `# HELP`/`# TYPE` lines are encoded before its
/// first series, as CROW's always were (the crate leaves out an empty
/// family's).
#[derive(Debug, Clone)]
pub struct NeverEmpty<M>(pub M);

impl<M: EncodeMetric> EncodeMetric for NeverEmpty<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// A histogram of seconds whose observations are lock-free atomics; a
/// clone shares the counts (as the crate's metrics do).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the encoder adds them up),
    /// one more than `bounds` for those above the last bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }))
    }

    /// Record one observation.
    pub fn observe(&self, secs: f64) {
        let h = &self.0;
        let bucket = h.bounds.partition_point(|b| *b < secs);
        if let Some(c) = h.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .zip(&h.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        let above = h.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>() + above;
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A counter or gauge read at scrape time from a value kept elsewhere (the
/// WAL's own atomics, the lake's commit retries).
pub struct Reading {
    kind: MetricType,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Reading {
    /// A counter whose value `read` returns.
    pub fn counter(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            kind: MetricType::Counter,
            read: Box::new(read),
        }
    }

    /// A gauge whose value `read` returns.
    pub fn gauge(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            kind: MetricType::Gauge,
            read: Box::new(read),
        }
    }
}

impl Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reading")
            .field("kind", &self.kind)
            .field("value", &(self.read)())
            .finish()
    }
}

impl EncodeMetric for Reading {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let v = (self.read)();
        match self.kind {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&v, None),
            _ => encoder.encode_gauge(&v),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_as_before_the_crate() {
        let mut r = Registry::default();
        let c = Counter::default();
        let l = LabeledCounter::new("reason");
        let empty = LabeledCounter::new("table");
        let h = Histogram::new(&[0.001, 0.5, 1.0, 10.0]);
        register(&mut r, "x_things_total", "Things.", c.clone());
        register(&mut r, "x_refused_total", "Refused, by reason.", l.clone());
        register(&mut r, "x_rows_total", "Rows.", empty.clone());
        register(&mut r, "x_pending", "Pending.", Reading::gauge(|| 7));
        register(&mut r, "x_seconds", "Time.", h);
        c.inc();
        c.inc_by(2);
        l.inc_by("bad \"key\"", 2);
        assert_eq!(l.get("bad \"key\""), 2);
        assert_eq!(l.get("other"), 0);
        let text = encode(&r);
        assert_eq!(
            text,
            "# HELP x_things_total Things.\n# TYPE x_things_total counter\nx_things_total 3\n\
             # HELP x_refused_total Refused, by reason.\n# TYPE x_refused_total counter\n\
             x_refused_total{reason=\"bad \\\"key\\\"\"} 2\n\
             # HELP x_rows_total Rows.\n# TYPE x_rows_total counter\n\
             # HELP x_pending Pending.\n# TYPE x_pending gauge\nx_pending 7\n\
             # HELP x_seconds Time.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 0\nx_seconds_bucket{le=\"0.5\"} 0\n\
             x_seconds_bucket{le=\"1\"} 0\nx_seconds_bucket{le=\"10\"} 0\n\
             x_seconds_bucket{le=\"+Inf\"} 0\nx_seconds_sum 0.0\nx_seconds_count 0\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_le_inclusive() {
        let mut r = Registry::default();
        let h = Histogram::new(&[0.001, 0.5, 1.0]);
        register(&mut r, "t_seconds", "Time.", h.clone());
        for s in [0.001, 0.2, 0.5, 0.75, 3.0] {
            h.observe(s);
        }
        assert_eq!(h.count(), 5);
        let text = encode(&r);
        for line in [
            "t_seconds_bucket{le=\"0.001\"} 1\n",
            "t_seconds_bucket{le=\"0.5\"} 3\n",
            "t_seconds_bucket{le=\"1\"} 4\n",
            "t_seconds_bucket{le=\"+Inf\"} 5\n",
            "t_seconds_sum 4.451\n",
            "t_seconds_count 5\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
