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
//! pushes its filter down keeps a handle on the decoder's counters (rows
//! the row filter matched and pruned, after row-group and page pruning),
//! and the next scan of the same table with the same filters reads them.
//! Once a filter is seen to keep more than [`MAX_KEPT`] of the rows it was
//! evaluated on, over at least [`MIN_ROWS`] rows, later scans of it
//! evaluate it above the scan; every [`REPROBE`]-th of them pushes it down
//! again to measure anew, so a filter that becomes selective (the data
//! changed) goes back into the decoder. A process learns this for its own
//! scans; a new one starts by pushing down, as before.
//!
//! A filter on the tenant column (`org_id`) that the file statistics do not
//! decide keeps the filter in the decoder, whatever it keeps: there the row
//! filter evaluates the tenant comparison (the cheapest) before any other
//! condition, so no expression of a query is evaluated on another
//! organization's rows. Above the scan, DataFusion evaluates `a AND b` on
//! whole batches when `a` keeps most rows. In a lake whose files each hold
//! one organization (the tenant filter decided by the statistics, as in the
//! benchmarks) this never applies.
//!
//! The session setting `datafusion.execution.parquet.pushdown_filters`
//! (`DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true` for the server)
//! pushes every filter down whatever was learned.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

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

/// At most this many filters are remembered; past it, all are forgotten.
const MAX_ENTRIES: usize = 10_000;

/// Counters of scans not read yet, per filter.
const MAX_PENDING: usize = 8;

#[derive(Default)]
struct Entry {
    /// The decoder counters of earlier scans that pushed this filter down,
    /// read (and dropped) by the next scan once they have counted rows.
    pending: Vec<ExecutionPlanMetricsSet>,
    /// The last measure said: evaluate above the scan.
    above: bool,
    /// Scans planned since `above` was last set.
    since: u32,
}

static LEARNED: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);

/// The key of a scan of `table` (its root URL) with `filters` (the filters
/// the scan itself evaluates, in any order).
pub fn key(table: &str, filters: &[String]) -> String {
    let mut sorted: Vec<&str> = filters.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    format!("{table}\n{}", sorted.join("\n"))
}

/// Rows the decoder's row filter matched and pruned in a scan's counters.
fn counted(metrics: &ExecutionPlanMetricsSet) -> (usize, usize) {
    let set = metrics.clone_inner();
    let sum = |name| set.sum_by_name(name).map_or(0, |v| v.as_usize());
    (sum("pushdown_rows_matched"), sum("pushdown_rows_pruned"))
}

/// Whether the scan keyed `key` pushes its filter into the decoder, from
/// what earlier scans of it kept. Unknown filters are pushed down.
pub fn push_down(key: &str) -> bool {
    let Ok(mut learned) = LEARNED.lock() else {
        return true;
    };
    let Some(entry) = learned.get_mut(key) else {
        return true;
    };
    let (mut matched, mut pruned) = (0, 0);
    entry.pending.retain(|m| {
        let (m, p) = counted(m);
        matched += m;
        pruned += p;
        // Scans that counted nothing may not have run yet.
        m + p == 0
    });
    let evaluated = matched + pruned;
    if evaluated >= MIN_ROWS {
        #[allow(clippy::cast_precision_loss)] // a share: precision is not needed
        let kept = matched as f64 / evaluated as f64;
        entry.above = kept > MAX_KEPT;
        entry.since = 0;
    }
    if !entry.above {
        return true;
    }
    entry.since = entry.since.saturating_add(1);
    entry.since % REPROBE == 0
}

/// Remember the counters of a scan keyed `key` that pushes its filter down,
/// for [`push_down`] to read at the next scan of it.
pub fn watch(key: String, metrics: ExecutionPlanMetricsSet) {
    let Ok(mut learned) = LEARNED.lock() else {
        return;
    };
    if learned.len() >= MAX_ENTRIES && !learned.contains_key(&key) {
        learned.clear();
    }
    let entry = learned.entry(key).or_default();
    if entry.pending.len() >= MAX_PENDING {
        entry.pending.remove(0);
    }
    entry.pending.push(metrics);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::metrics::MetricBuilder;

    fn scan_counting(matched: usize, pruned: usize) -> ExecutionPlanMetricsSet {
        let m = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&m)
            .counter("pushdown_rows_matched", 0)
            .add(matched);
        MetricBuilder::new(&m)
            .counter("pushdown_rows_pruned", 0)
            .add(pruned);
        m
    }

    #[test]
    fn filters_that_keep_many_rows_move_above_the_scan_and_are_measured_again() {
        let k = key("memory:///t1", &["b = 2".into(), "a = 1".into()]);
        assert_eq!(k, key("memory:///t1", &["a = 1".into(), "b = 2".into()]));
        // Unknown: pushed down.
        assert!(push_down(&k));
        // Too few rows evaluated decide nothing.
        watch(k.clone(), scan_counting(4000, 4000));
        assert!(push_down(&k));
        // A scan planned but not run yet counts nothing and stays pending.
        let not_run = ExecutionPlanMetricsSet::new();
        watch(k.clone(), not_run.clone());
        watch(k.clone(), scan_counting(30_000, 70_000));
        assert!(!push_down(&k), "30 % kept: above the scan");
        for _ in 2..REPROBE {
            assert!(!push_down(&k));
        }
        assert!(push_down(&k), "every REPROBE-th scan measures again");
        // The scan planned earlier runs now; with the measuring scan it
        // shows the filter keeps few rows now.
        MetricBuilder::new(&not_run)
            .counter("pushdown_rows_pruned", 0)
            .add(5_000_000);
        watch(k.clone(), scan_counting(10, 99_990));
        assert!(push_down(&k), "selective now: back into the decoder");
        assert!(push_down(&k));

        let other = key("memory:///t2", &["a = 1".into()]);
        watch(other.clone(), scan_counting(200, 9_800));
        assert!(!push_down(&other), "2 % is more than MAX_KEPT");
    }
}
