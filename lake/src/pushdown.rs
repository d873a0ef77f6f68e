//! Where a plain scan evaluates its filter: inside the Parquet decoder, or
//! above the scan — learned per table and filter from what the filter kept.
//!
//! DataFusion can push a scan's filter into the Parquet decoder: the filter
//! columns are decoded first, the filter turns into a selection of rows,
//! and the other columns are decoded for the selected rows only. That pays
//! when the filter keeps few rows: a visitor's or a user's events, an hour
//! of a day (5–15× faster than filtering above the scan on 10 M events
//! clustered by visitor, BENCHMARKS "Query API" Run 11). It costs when the
//! filter keeps many rows scattered through the file, as every filter on a
//! low-cardinality column does in files clustered by visitor (`event =
//! 'Product Viewed'` keeps 27 %, `type = 'page'` 44 %, even `event = 'Order
//! Completed'` 1.8 %): the Parquet reader then builds a selection of
//! hundreds of thousands of short runs, maps it onto every page of every
//! column, finds it too fragmented to skip anything (arrow-rs reads with a
//! mask when the selection's runs average fewer than 32 rows) and decodes
//! every row anyway — a third of the scan's time spent on bookkeeping that
//! saves nothing. Evaluated above the scan (DataFusion's own default), such
//! a filter is 10–40 % cheaper.
//!
//! Neither can be told from the plan: how many rows `event = …` keeps
//! depends on the value and the data. So the scan measures it: a scan that
//! pushes its filter down reads its files through a [`Measured`] reader
//! factory, which, once the query's plan is dropped, reads the decoder's
//! counters (rows the row filter matched and pruned, after row-group and
//! page pruning) and remembers for the table and filters what share was
//! kept — a flag per filter, nothing of the scan itself. Once a filter is
//! seen to keep more than [`MAX_KEPT`] of the rows it was evaluated on,
//! over at least [`MIN_ROWS`] rows, later scans of it evaluate it above the
//! scan; every [`REPROBE`]-th of them pushes it down again to measure anew,
//! so a filter that becomes selective (the data changed) goes back into the
//! decoder. A process learns this for its own scans; a new one starts by
//! pushing down, as before.
//!
//! What is learned is keyed by a 128-bit hash of the table and all the
//! scan's filters, the tenant filter included, so organizations never
//! share an entry; only filters learned to keep many rows are stored (at
//! most [`MAX_ENTRIES`], 24 bytes each), and scans whose filters print
//! longer than [`MAX_KEY_BYTES`] (a long `IN` list) are not learned.
//!
//! A filter on the tenant column (`org_id`) that the file statistics do not
//! decide keeps the filter in the decoder, whatever it keeps, as before
//! this module: there each condition is evaluated only on the rows the
//! conditions before it kept, whereas above the scan DataFusion evaluates
//! `a AND b` on whole batches when `a` keeps most rows, which would run a
//! query's expressions on more of another organization's rows. (The
//! decoder orders conditions by the size of their columns, not tenant
//! first, so error messages never quote a value either way: README,
//! "Hardening".) In a lake whose files each hold one organization (the
//! tenant filter decided by the statistics, as in the benchmarks) this
//! never applies.
//!
//! Two consequences of evaluating above the scan. SQL gives no order to
//! `AND`: a filter such as `x <> 0 AND 10 / x > 1` may pass in the
//! decoder (the division sees only rows the first condition kept) and
//! fail with a division by zero above it; `CASE WHEN x <> 0 THEN 10 / x
//! END > 1` holds either way. And a join's or a top-k's dynamic filter,
//! which DataFusion adds to the scan's predicate while it runs, counts in
//! the measure and is used for pruning only (not row by row) in a scan
//! learned to keep its filter above.
//!
//! The session setting `datafusion.execution.parquet.pushdown_filters`
//! (`DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true` for the server)
//! pushes every filter down whatever was learned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

/// A filter that keeps more than this share of the rows it is evaluated on
/// is evaluated above the scan. arrow-rs decodes every row once a
/// selection's runs average under 32 rows, which rows kept at random reach
/// at about 1 in 64; 1 in 100 leaves room for rows kept in short clusters.
pub const MAX_KEPT: f64 = 0.01;

/// Fewer rows evaluated than this (one batch) decide nothing.
pub const MIN_ROWS: usize = 8192;

/// Every this many scans of a filter evaluated above the scan, one pushes
/// it down again to measure what it keeps now.
pub const REPROBE: u32 = 32;

/// At most this many filters are remembered as keeping many rows; past it,
/// all are forgotten (each is measured again by its next scan).
pub const MAX_ENTRIES: usize = 100_000;

/// Scans whose filters print longer than this are not learned.
pub const MAX_KEY_BYTES: usize = 4096;

/// The filters learned to keep many rows: scans planned since they were
/// measured.
static LEARNED: LazyLock<Mutex<HashMap<Key, u32>>> = LazyLock::new(Default::default);

/// Scans with filters of their own evaluated in the decoder, and above it.
static IN_DECODER: AtomicU64 = AtomicU64::new(0);
static ABOVE: AtomicU64 = AtomicU64::new(0);

/// Scans of this process with filters of their own (not decided by
/// partition values or file statistics): how many evaluated them in the
/// Parquet decoder, and how many above the scan.
pub fn scans() -> (u64, u64) {
    (
        IN_DECODER.load(Ordering::Relaxed),
        ABOVE.load(Ordering::Relaxed),
    )
}

/// Count a scan with filters of its own, evaluated in the decoder or not.
pub fn count(in_decoder: bool) {
    let c = if in_decoder { &IN_DECODER } else { &ABOVE };
    c.fetch_add(1, Ordering::Relaxed);
}

/// What is learned about one scan's filters: a hash of the table and the
/// filters' text.
pub type Key = u128;

/// The key of a scan of `table` (its root URL) with `filters` (the text of
/// all of the scan's filters, in any order: with the tenant filter among
/// them, each organization learns from its own rows); `None` (not learned)
/// when they are longer than [`MAX_KEY_BYTES`].
pub fn key(table: &str, filters: &[String]) -> Option<Key> {
    use std::hash::{Hash, Hasher};
    if filters.iter().map(String::len).sum::<usize>() > MAX_KEY_BYTES {
        return None;
    }
    let mut sorted: Vec<&str> = filters.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let half = |seed: u8| {
        let mut h = std::hash::DefaultHasher::new();
        (seed, table, &sorted).hash(&mut h);
        h.finish()
    };
    Some((u128::from(half(0)) << 64) | u128::from(half(1)))
}

/// Whether the scan keyed `key` pushes its filter into the decoder, from
/// what earlier scans of it kept. Unknown filters are pushed down.
pub fn push_down(key: Key) -> bool {
    let Ok(mut learned) = LEARNED.lock() else {
        return true;
    };
    let Some(since) = learned.get_mut(&key) else {
        return true;
    };
    *since = since.saturating_add(1);
    *since % REPROBE == 0
}

/// Remember that a scan keyed `key` that pushed its filter down saw it
/// keep `matched` of `matched + pruned` rows. Fewer than [`MIN_ROWS`]
/// decide nothing.
pub fn record(key: Key, matched: usize, pruned: usize) {
    let evaluated = matched.saturating_add(pruned);
    if evaluated < MIN_ROWS {
        return;
    }
    #[allow(clippy::cast_precision_loss)] // a share: precision is not needed
    let above = matched as f64 / evaluated as f64 > MAX_KEPT;
    let Ok(mut learned) = LEARNED.lock() else {
        return;
    };
    if !above {
        learned.remove(&key);
        return;
    }
    if learned.len() >= MAX_ENTRIES && !learned.contains_key(&key) {
        learned.clear();
    }
    learned.insert(key, 0);
}

/// A Parquet reader factory that measures what a scan's row filter kept:
/// when the last plan holding it is dropped (the query has run, or was
/// only planned), the counters of the scan's metrics go to [`record`].
#[derive(Debug)]
pub struct Measured {
    inner: Arc<dyn ParquetFileReaderFactory>,
    key: Key,
    metrics: ExecutionPlanMetricsSet,
}

impl Measured {
    /// Read through `inner`, measuring into `key` from `metrics` (the
    /// scan's own, which its readers count into).
    pub fn new(
        inner: Arc<dyn ParquetFileReaderFactory>,
        key: Key,
        metrics: ExecutionPlanMetricsSet,
    ) -> Self {
        Self {
            inner,
            key,
            metrics,
        }
    }
}

impl ParquetFileReaderFactory for Measured {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let set = self.metrics.clone_inner();
        let sum = |name| set.sum_by_name(name).map_or(0, |v| v.as_usize());
        record(
            self.key,
            sum("pushdown_rows_matched"),
            sum("pushdown_rows_pruned"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
    use datafusion::physical_plan::metrics::MetricBuilder;
    use object_store::memory::InMemory;

    /// A scan of `key` that pushed its filter down and kept `matched` of
    /// `matched + pruned` rows, dropped (its query is over).
    fn scan_counting(key: Key, matched: usize, pruned: usize) {
        let m = ExecutionPlanMetricsSet::new();
        let factory = Measured::new(
            Arc::new(DefaultParquetFileReaderFactory::new(Arc::new(
                InMemory::new(),
            ))),
            key,
            m.clone(),
        );
        // Two files' counters, as the scan's readers add them.
        for file in 0..2 {
            MetricBuilder::new(&m)
                .with_new_label("filename", format!("f{file}"))
                .counter("pushdown_rows_matched", 0)
                .add(matched / 2);
            MetricBuilder::new(&m)
                .with_new_label("filename", format!("f{file}"))
                .counter("pushdown_rows_pruned", 0)
                .add(pruned / 2);
        }
        drop(factory);
    }

    #[test]
    fn filters_that_keep_many_rows_move_above_the_scan_and_are_measured_again() {
        let k = key("memory:///t1", &["b = 2".into(), "a = 1".into()]).unwrap();
        assert_eq!(
            Some(k),
            key("memory:///t1", &["a = 1".into(), "b = 2".into()])
        );
        assert_ne!(
            Some(k),
            key("memory:///t2", &["a = 1".into(), "b = 2".into()])
        );
        assert_ne!(
            Some(k),
            key("memory:///t1", &["a = 1".into(), "b = 3".into()])
        );
        assert_eq!(key("memory:///t1", &["x".repeat(MAX_KEY_BYTES + 1)]), None);
        // Unknown: pushed down.
        assert!(push_down(k));
        // Too few rows evaluated (a plan only planned counts none) decide
        // nothing.
        scan_counting(k, 4000, 4000);
        scan_counting(k, 0, 0);
        assert!(push_down(k));
        scan_counting(k, 30_000, 70_000);
        assert!(!push_down(k), "30 % kept: above the scan");
        for _ in 2..REPROBE {
            assert!(!push_down(k));
        }
        assert!(push_down(k), "every REPROBE-th scan measures again");
        // That scan finds it selective now: back into the decoder.
        scan_counting(k, 10, 99_990);
        assert!(push_down(k));
        assert!(push_down(k));

        let other = key("memory:///t2", &["a = 1".into()]).unwrap();
        scan_counting(other, 200, 9_800);
        assert!(!push_down(other), "2 % is more than MAX_KEPT");
        scan_counting(other, 50, 9_950);
        assert!(push_down(other), "0.5 % is not");
    }
}
