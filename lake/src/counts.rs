//! `count(*)` grouped by partition columns, answered from the files' row
//! counts.
//!
//! "Events per day" — `SELECT event_date, count(*) … GROUP BY event_date` —
//! is the first chart of every dashboard. `event_date` is the partition
//! column of the event tables: every file holds one value of it, and the
//! Delta log records each file's row count. DataFusion still opens every
//! file, produces one row per event holding the file's constant and hashes
//! ten million of them (32 ms over 10 M events against DuckDB's 10 ms,
//! BENCHMARKS.md Q04). [`CountsFromStatistics`] replaces such an aggregate
//! with its answer, read from the scan's file list: one row per distinct
//! partition value, the sum of its files' row counts.
//!
//! It applies only where that answer is exact: an aggregate in partial or
//! single mode, grouping by plain columns with no grouping sets, whose
//! aggregates are all `count` of a non-null constant (`count(*)`, `count(1)`)
//! with no `DISTINCT`, `FILTER` or `ORDER BY`; reading directly a Parquet
//! scan that projects only partition columns, evaluates no filter (but the
//! dynamic bounds of a `TopK` or join above, which only skip rows that
//! operator drops anyway) and has no limit; every file with an exact row count (a file split into byte
//! ranges is counted once). A filter left to evaluate — the tenant filter
//! on a file that mixes organizations, a `WHERE` on any column the file
//! statistics do not decide — keeps the scan as it was. The rewrite is kept
//! only if DataFusion's sanity check of the plan passes.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringViewArray, UInt32Array,
};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, DynamicFilterPhysicalExpr, Literal,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// The physical optimizer rule (module docs).
#[derive(Debug, Default)]
pub struct CountsFromStatistics;

impl PhysicalOptimizerRule for CountsFromStatistics {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_aggregates(plan, config, "counting plan", counted)
    }

    fn name(&self) -> &str {
        "crow_counts_from_statistics"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each aggregate that `replace` has a replacement for replaced
/// (bottom up), kept only if DataFusion's sanity check of the plan's
/// orderings and distributions passes; otherwise `plan` as it was (`what`
/// names the rewrite in the debug log).
fn replace_aggregates(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
    what: &str,
    replace: impl Fn(&AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let rewritten = Arc::clone(&plan).transform_up(|node| {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        match replace(agg)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(node)),
        }
    })?;
    if !rewritten.transformed {
        return Ok(plan);
    }
    match SanityCheckPlan::new().optimize(Arc::clone(&rewritten.data), config) {
        Ok(checked) => Ok(checked),
        Err(e) => {
            tracing::debug!(error = %e, "kept the {what} as it was");
            Ok(plan)
        }
    }
}

/// The answer of `agg` from its scan's file list, as a one-batch memory
/// source of `agg`'s own schema; `None` where it would not be exact.
fn counted(agg: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if !matches!(agg.mode(), AggregateMode::Partial | AggregateMode::Single) {
        return Ok(None);
    }
    if !counts_only(agg) {
        return Ok(None);
    }
    let group = agg.group_expr();
    if group.has_grouping_set() || group.expr().is_empty() {
        // No groups: DataFusion's own `AggregateStatistics` answers that.
        return Ok(None);
    }
    let Some(scan) = agg
        .input()
        .downcast_ref::<DataSourceExec>()
        .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
    else {
        return Ok(None);
    };
    if scan.limit.is_some()
        || scan
            .file_source
            .filter()
            .is_some_and(|f| !only_dynamic(f.as_ref()))
        || scan.file_source.file_type() != "parquet"
    {
        return Ok(None);
    }
    // The scan's output columns, each as an index into the partition values.
    let Some(projection) = scan.file_source.projection() else {
        return Ok(None);
    };
    let file_columns = scan.file_schema().fields().len();
    let mut output_partition = vec![];
    for p in projection.iter() {
        let Some(c) = p.expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let Some(i) = c.index().checked_sub(file_columns) else {
            return Ok(None);
        };
        if i >= scan.table_partition_cols().len() {
            return Ok(None);
        }
        output_partition.push(i);
    }
    // Each group key as an index into the partition values.
    let mut keys = vec![];
    for (e, _) in group.expr() {
        let Some(c) = e.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let Some(&i) = output_partition.get(c.index()) else {
            return Ok(None);
        };
        keys.push(i);
    }
    // Sum each distinct key's row counts, each file once.
    let mut seen = HashSet::new();
    let mut index: HashMap<Vec<ScalarValue>, usize> = HashMap::new();
    let mut groups: Vec<(Vec<ScalarValue>, i64)> = vec![];
    for file in scan.file_groups.iter().flat_map(|g| g.iter()) {
        // A file read through an access plan or other extension may not be
        // read whole.
        if !file.extensions.is_empty() {
            return Ok(None);
        }
        if !seen.insert(file.object_meta.location.clone()) {
            continue;
        }
        let Some(Precision::Exact(rows)) = file.statistics.as_ref().map(|s| s.num_rows) else {
            return Ok(None);
        };
        let Ok(rows) = i64::try_from(rows) else {
            return Ok(None);
        };
        // An empty file makes no group (as scanning it would not).
        if rows == 0 {
            continue;
        }
        let mut key = Vec::with_capacity(keys.len());
        for &i in &keys {
            let Some(v) = file.partition_values.get(i) else {
                return Ok(None);
            };
            key.push(v.clone());
        }
        match index.entry(key) {
            Entry::Occupied(g) => {
                let Some(sum) = groups[*g.get()].1.checked_add(rows) else {
                    return Ok(None);
                };
                groups[*g.get()].1 = sum;
            }
            Entry::Vacant(slot) => {
                groups.push((slot.key().clone(), rows));
                slot.insert(groups.len() - 1);
            }
        }
    }
    // `agg`'s schema: the group columns, then one Int64 per count (its
    // partial state and its final value alike).
    let schema = agg.schema();
    let aggregates = agg.aggr_expr().len();
    if schema.fields().len() != keys.len() + aggregates
        || schema.fields()[keys.len()..]
            .iter()
            .any(|f| f.data_type() != &DataType::Int64)
    {
        return Ok(None);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (k, field) in schema.fields()[..keys.len()].iter().enumerate() {
        let values = groups.iter().map(|(key, _)| key[k].clone());
        let array = if groups.is_empty() {
            arrow::array::new_empty_array(field.data_type())
        } else {
            let Ok(array) = ScalarValue::iter_to_array(values) else {
                return Ok(None);
            };
            array
        };
        if array.data_type() != field.data_type() {
            return Ok(None);
        }
        columns.push(array);
    }
    let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(groups.iter().map(|g| g.1)));
    columns.extend(std::iter::repeat_n(counts, aggregates));
    // Anything the schema refuses (a null in a non-nullable key) leaves the
    // plan as it was.
    let Ok(batch) = RecordBatch::try_new(Arc::clone(&schema), columns) else {
        return Ok(None);
    };
    let exec: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None)?;
    Ok(Some(exec))
}

/// Whether a scan's filter holds only dynamic filters: the bounds a `TopK`
/// (`ORDER BY … LIMIT`, as the query API's row cap adds) or a hash join
/// pushes into the scan while it runs, to skip rows the operator above
/// would drop anyway. The operator still does its own work, so an answer
/// computed without reading the rows stays exact.
fn only_dynamic(filter: &dyn PhysicalExpr) -> bool {
    if filter.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() {
        return true;
    }
    filter.downcast_ref::<BinaryExpr>().is_some_and(|b| {
        *b.op() == Operator::And
            && only_dynamic(b.left().as_ref())
            && only_dynamic(b.right().as_ref())
    })
}

/// The physical optimizer rule for `count(*)` grouped by text columns
/// (`GROUP BY event`, `GROUP BY product_id, product_name`): the partial
/// aggregate is replaced by [`ViewCounts`], which counts each batch's rows
/// per tuple of string *views* instead of hashing every row's strings.
///
/// A Parquet dictionary page decodes into views that repeat (one per
/// dictionary entry), so a batch of 8,192 events over ten event names is ten
/// distinct views; DataFusion's partial aggregate hashed the 8,192 strings
/// (over 10 M events, 171 ms of CPU of Q03's 290). Equal views are equal
/// strings (a view holds the length and either the whole string or its
/// prefix, buffer and offset), so counting by view is exact; unequal views
/// of equal strings (values written out plainly) only give the final
/// aggregate two partial counts of one group to add, which it does anyway
/// across batches and partitions. Each batch is counted on its own
/// (memory bounded by the batch); once the first 65,536 rows or more made
/// more groups than half as many, the rest of the stream passes through as
/// one row per event with a count of 1, as DataFusion's own partial
/// aggregate does when it stops aggregating.
///
/// It applies to a partial aggregate whose keys are one to four `Utf8View`
/// columns, whose aggregates are all `count` of a non-null constant (no
/// `DISTINCT`, `FILTER` or `ORDER BY`) and whose input arrives in no
/// particular order; the rewrite is kept only if DataFusion's sanity check
/// of the plan passes.
#[derive(Debug, Default)]
pub struct CountsByView;

impl PhysicalOptimizerRule for CountsByView {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_aggregates(plan, config, "partial count", |agg| {
            Ok(ViewCounts::for_aggregate(agg).map(|e| Arc::new(e) as Arc<dyn ExecutionPlan>))
        })
    }

    fn name(&self) -> &str {
        "crow_counts_by_view"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// At most this many key columns (a row's key is one fixed-size value).
const MAX_VIEW_KEYS: usize = 4;

/// A partial `count(*) … GROUP BY` text columns, by string view
/// ([`CountsByView`]): its output is the partial aggregate's (the keys,
/// then one Int64 count per aggregate).
#[derive(Debug)]
pub struct ViewCounts {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    counts: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ViewCounts {
    /// The replacement for `agg`, where it applies (see [`CountsByView`]).
    fn for_aggregate(agg: &AggregateExec) -> Option<Self> {
        if !matches!(agg.mode(), AggregateMode::Partial)
            || !matches!(agg.input_order_mode(), InputOrderMode::Linear)
            || !counts_only(agg)
        {
            return None;
        }
        let group = agg.group_expr();
        if group.has_grouping_set() || group.expr().is_empty() || group.expr().len() > MAX_VIEW_KEYS
        {
            return None;
        }
        let input_schema = agg.input().schema();
        let schema = agg.schema();
        let mut keys = vec![];
        for (k, (e, _)) in group.expr().iter().enumerate() {
            let c = e.downcast_ref::<Column>()?;
            let field = input_schema.fields().get(c.index())?;
            let out = schema.fields().get(k)?;
            if field.data_type() != &DataType::Utf8View || out.data_type() != &DataType::Utf8View {
                return None;
            }
            keys.push(c.index());
        }
        let counts = agg.aggr_expr().len();
        if schema.fields().len() != keys.len() + counts
            || schema.fields()[keys.len()..]
                .iter()
                .any(|f| f.data_type() != &DataType::Int64)
        {
            return None;
        }
        Some(Self::new(Arc::clone(agg.input()), keys, counts, schema))
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        counts: usize,
        schema: SchemaRef,
    ) -> Self {
        let p = input.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(p.output_partitioning().partition_count()),
            p.emission_type,
            p.boundedness,
        );
        Self {
            input,
            keys,
            counts,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// Whether every aggregate of `agg` is `count` of a non-null constant, with
/// no `DISTINCT`, `ORDER BY` or `FILTER`, and there is at least one.
fn counts_only(agg: &AggregateExec) -> bool {
    !agg.aggr_expr().is_empty()
        && agg.filter_expr().iter().all(Option::is_none)
        && agg.aggr_expr().iter().all(|a| {
            a.fun().name() == "count"
                && !a.is_distinct()
                && a.order_bys().is_empty()
                && a.expressions().iter().all(|e| {
                    e.downcast_ref::<Literal>()
                        .is_some_and(|l| !l.value().is_null())
                })
        })
}

impl DisplayAs for ViewCounts {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .take(self.keys.len())
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "ViewCounts: gby=[{}], counts={}",
            names.join(", "),
            self.counts
        )
    }
}

impl ExecutionPlan for ViewCounts {
    fn name(&self) -> &str {
        "ViewCounts"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            crate::only_child(children, "ViewCounts")?,
            self.keys.clone(),
            self.counts,
            Arc::clone(&self.schema),
        )))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let mut counter = BatchCounter {
            keys: self.keys.clone(),
            counts: self.counts,
            schema: Arc::clone(&self.schema),
            seen_rows: 0,
            seen_groups: 0,
            pass_through: false,
        };
        let stream = input.map(move |batch| {
            let _timer = baseline.elapsed_compute().timer();
            let out = counter.count(&batch?)?;
            baseline.record_output(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// One partition's counting ([`ViewCounts`]).
struct BatchCounter {
    keys: Vec<usize>,
    counts: usize,
    schema: SchemaRef,
    /// Rows counted so far, and the groups they made (summed per batch).
    seen_rows: usize,
    seen_groups: usize,
    /// Set once, after at least [`PROBE_ROWS`] rows, the groups were more
    /// than half the rows.
    pass_through: bool,
}

/// Rows seen before deciding to pass the rest through (a small batch at a
/// file's end proves nothing).
const PROBE_ROWS: usize = 65_536;

/// A row's key: its views in the key columns, and which are null.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
struct ViewKey {
    views: [u128; MAX_VIEW_KEYS],
    nulls: u8,
}

/// A row's key in [`group_rows`], with a cheap hash for its direct-mapped
/// table.
trait RowKey: Copy + Eq + std::hash::Hash {
    fn slot(&self) -> usize;
}

fn mix(h: u64, v: u128) -> u64 {
    (h ^ (v as u64) ^ ((v >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl RowKey for ViewKey {
    fn slot(&self) -> usize {
        let h = self
            .views
            .iter()
            .fold(u64::from(self.nulls), |h, v| mix(h, *v));
        (h >> 56) as usize
    }
}

/// One key column's view, `None` for a null.
impl RowKey for Option<u128> {
    fn slot(&self) -> usize {
        (self.map_or(1, |v| mix(0, v)) >> 56) as usize
    }
}

/// The groups of `rows` rows by `key_of` (each group's first row and row
/// count, in order of first appearance): a direct-mapped table of recent
/// keys first, then a map of the batch's.
fn group_rows<K: RowKey>(rows: usize, key_of: impl Fn(usize) -> K) -> (Vec<u32>, Vec<i64>) {
    let mut recent: [Option<(K, u32)>; 256] = [None; 256];
    let mut groups: HashMap<K, u32> = HashMap::new();
    let mut first_rows: Vec<u32> = vec![];
    let mut counts: Vec<i64> = vec![];
    for i in 0..rows {
        let key = key_of(i);
        let slot = key.slot();
        let g = match recent[slot] {
            Some((k, g)) if k == key => g,
            _ => {
                let next = first_rows.len() as u32;
                let g = *groups.entry(key).or_insert(next);
                if g == next {
                    first_rows.push(i as u32);
                    counts.push(0);
                }
                recent[slot] = Some((key, g));
                g
            }
        };
        counts[g as usize] += 1;
    }
    (first_rows, counts)
}

impl BatchCounter {
    fn count(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut key_columns = Vec::with_capacity(self.keys.len());
        for &k in &self.keys {
            key_columns.push(Arc::clone(batch.column(k)));
        }
        if self.pass_through {
            let ones: ArrayRef = Arc::new(Int64Array::from_value(1, rows));
            return self.output(key_columns, ones);
        }
        let views: Vec<&StringViewArray> = key_columns.iter().map(|c| c.as_string_view()).collect();
        let (first_rows, counts) = match views.as_slice() {
            // One key column (GROUP BY event): the key is the view itself.
            [a] => {
                let (vs, nulls) = (a.views(), a.nulls());
                group_rows(rows, |i| {
                    (!nulls.is_some_and(|n| n.is_null(i))).then(|| vs[i])
                })
            }
            _ => group_rows(rows, |i| {
                let mut key = ViewKey::default();
                for (j, a) in views.iter().enumerate() {
                    if a.is_null(i) {
                        key.nulls |= 1 << j;
                    } else {
                        key.views[j] = a.views()[i];
                    }
                }
                key
            }),
        };
        self.seen_rows += rows;
        self.seen_groups += first_rows.len();
        if self.seen_rows >= PROBE_ROWS && self.seen_groups * 2 > self.seen_rows {
            self.pass_through = true;
        }
        let take = UInt32Array::from(first_rows);
        let mut out_keys = Vec::with_capacity(key_columns.len());
        for c in &key_columns {
            out_keys.push(arrow::compute::take(c.as_ref(), &take, None)?);
        }
        let counts: ArrayRef = Arc::new(Int64Array::from(counts));
        self.output(out_keys, counts)
    }

    fn output(&self, mut columns: Vec<ArrayRef>, counts: ArrayRef) -> Result<RecordBatch> {
        columns.extend(std::iter::repeat_n(counts, self.counts));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringViewBuilder;
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionConfig;

    /// A batch of `(k1, k2)` text keys; `dedup` stores each string once (the
    /// views repeat, as a dictionary page decodes), otherwise every value is
    /// its own copy (equal strings, different views).
    fn batch(rows: &[(Option<&str>, Option<&str>)], dedup: bool) -> RecordBatch {
        let column = |values: Vec<Option<&str>>| {
            let mut b = StringViewBuilder::new();
            if dedup {
                b = b.with_deduplicate_strings();
            }
            for v in values {
                b.append_option(v);
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k1", DataType::Utf8View, true),
            Field::new("k2", DataType::Utf8View, true),
        ]));
        let k1 = column(rows.iter().map(|r| r.0).collect());
        let k2 = column(rows.iter().map(|r| r.1).collect());
        RecordBatch::try_new(schema, vec![k1, k2]).expect("batch")
    }

    /// Two partitions: low-cardinality batches (deduplicated and plain, long
    /// and short strings, nulls, an empty string), and a partition whose
    /// first batch has a distinct key on each of more rows than the probe
    /// (so it passes the rest through).
    fn partitions() -> Vec<Vec<RecordBatch>> {
        let names = [
            Some("Product Viewed"),
            Some("Order Completed"),
            Some("page"),
            None,
            Some("Product Added to Cart"),
            // An empty string's view is all zeros, like a null slot's.
            Some(""),
        ];
        let low: Vec<(Option<&str>, Option<&str>)> = (0..3000)
            .map(|i| (names[i % 6], names[(i / 7) % 6]))
            .collect();
        // More distinct keys than the probe: that partition passes through.
        let unique: Vec<String> = (0..PROBE_ROWS + 500)
            .map(|i| format!("visitor-{i:06}-of-many"))
            .collect();
        let high: Vec<(Option<&str>, Option<&str>)> = unique
            .iter()
            .map(|u| (Some(u.as_str()), Some("x")))
            .collect();
        vec![
            vec![
                batch(&low, true),
                batch(&low, false),
                batch(&low[..10], true),
            ],
            vec![batch(&high, false), batch(&low, true), batch(&high, true)],
        ]
    }

    async fn answer(rule: bool, sql: &str) -> (String, String) {
        let mut builder = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(CountsByView));
        }
        crate::testing::answer(builder, partitions(), sql).await
    }

    #[tokio::test]
    async fn counts_by_view_answer_as_the_hash_aggregate() {
        for (sql, rewritten) in [
            ("SELECT k1, count(*) AS n FROM t GROUP BY k1 ORDER BY k1", true),
            (
                "SELECT k1, k2, count(*) AS n, count(1) AS m FROM t GROUP BY k1, k2 ORDER BY k1, k2",
                true,
            ),
            ("SELECT k2, count(*) AS n FROM t WHERE k1 <> 'page' GROUP BY k2 ORDER BY k2", true),
            ("SELECT k1, count(k2) AS n FROM t GROUP BY k1 ORDER BY k1", false),
            ("SELECT k1, count(DISTINCT k2) AS n FROM t GROUP BY k1 ORDER BY k1", false),
        ] {
            let (rows, plan) = answer(true, sql).await;
            let (expected, before) = answer(false, sql).await;
            assert!(!before.contains("ViewCounts"), "{before}");
            assert_eq!(plan.contains("ViewCounts"), rewritten, "{sql}: {plan}");
            assert_eq!(rows, expected, "{sql}");
        }
        // The counts themselves, not only their agreement.
        let (rows, _) = answer(true, "SELECT count(*) AS n FROM (SELECT k1, count(*) AS c FROM t GROUP BY k1) WHERE k1 LIKE 'visitor-%'").await;
        let unique = PROBE_ROWS + 500;
        assert!(
            rows.contains(&format!("| {unique} |")),
            "each of the {unique} unique keys is one group: {rows}"
        );
    }

    #[test]
    fn distinct_keys_switch_to_pass_through_after_the_probe() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k1", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let mut counter = BatchCounter {
            keys: vec![0],
            counts: 1,
            schema,
            seen_rows: 0,
            seen_groups: 0,
            pass_through: false,
        };
        let ab: Vec<(Option<&str>, Option<&str>)> =
            (0..100).map(|i| (Some(["a", "b"][i % 2]), None)).collect();
        let names: Vec<String> = (0..PROBE_ROWS).map(|i| format!("{i}")).collect();
        let distinct = |n: usize| -> Vec<(Option<&str>, Option<&str>)> {
            names[..n]
                .iter()
                .map(|n| (Some(n.as_str()), None))
                .collect()
        };
        // A small batch of distinct keys (a file's last rows) decides nothing.
        let out = counter.count(&batch(&distinct(3), true)).expect("count");
        assert_eq!(out.num_rows(), 3);
        let out = counter.count(&batch(&ab, true)).expect("count");
        assert_eq!(out.num_rows(), 2);
        assert!(!counter.pass_through);
        // Past the probe with more groups than half the rows: pass through.
        let out = counter
            .count(&batch(&distinct(PROBE_ROWS), true))
            .expect("count");
        assert_eq!(out.num_rows(), PROBE_ROWS);
        assert!(counter.pass_through);
        // From now on one row per event, each counted once.
        let out = counter.count(&batch(&ab, true)).expect("count");
        assert_eq!(out.num_rows(), 100);
        let ones = out.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        assert!(ones.iter().all(|v| v == Some(1)));
    }
}
