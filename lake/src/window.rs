//! Per-visitor windows in one pass over sorted runs.
//!
//! `lag(x) OVER (PARTITION BY anonymous_id ORDER BY occurred_at)` and
//! `row_number() OVER (…)` are how analysts measure the time between a
//! visitor's events and find a visitor's first touch. DataFusion runs them
//! in its `BoundedWindowAggExec`, which is general (any frame, any function)
//! and keeps per-partition state: on the query set's 1 M events its
//! bookkeeping for ~200,000 visitor partitions cost 237 ms of CPU, where
//! the sort below it cost 94 ms and the same `lag` without `PARTITION BY`
//! 87 ms (BENCHMARKS.md, "Query API", the windows' cost).
//!
//! Its input is sorted on the partition keys, so every partition is a run
//! of consecutive rows. For the functions whose value at a row depends
//! only on a fixed number of rows around it in its run — `row_number`,
//! `lag` and `lead` with a constant offset and a NULL default, and
//! `first_value` over a frame from the partition's start —
//! [`RunWindowExec`] computes each batch's column in a few vectorised
//! passes: the runs' bounds (arrow's `partition`, which compares
//! neighbouring rows), then a gather. It keeps from one batch to the next
//! only what the next batch's first run can need: the last key, that run's
//! row count, its first value and its last `offset` values; with a `lead`, a batch waits
//! for the `offset` rows after it (up to 1,024). Its memory is therefore
//! bounded, whatever the partitions' sizes.
//!
//! [`RunWindows`] swaps it in for a `BoundedWindowAggExec` in `Sorted`
//! mode whose every function is one of those (no `IGNORE NULLS`, not
//! planned reversed); the node keeps the replaced one's requirements
//! (input ordering and distribution) and output properties, so the plan
//! around it is unchanged. Anything else stays with DataFusion.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{interleave, partition};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::WindowFrameBound;
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::expressions::Literal;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// The largest `lag`/`lead` offset carried between batches (a larger one
/// stays with DataFusion).
const MAX_OFFSET: usize = 1024;

/// A window function [`RunWindowExec`] computes.
#[derive(Debug, Clone)]
enum RunFn {
    /// `row_number()`.
    RowNumber,
    /// `lag(expr, offset)` with a NULL default.
    Lag {
        expr: Arc<dyn PhysicalExpr>,
        offset: usize,
    },
    /// `lead(expr, offset)` with a NULL default: a batch is emitted once
    /// the `offset` rows after it have arrived (or the input has ended).
    Lead {
        expr: Arc<dyn PhysicalExpr>,
        offset: usize,
    },
    /// `first_value(expr)` over a frame from the partition's start to the
    /// current row or after it: the run's first value.
    FirstValue { expr: Arc<dyn PhysicalExpr> },
}

impl RunFn {
    /// How many rows after a batch its values can depend on.
    fn lookahead(&self) -> usize {
        match self {
            RunFn::Lead { offset, .. } => *offset,
            _ => 0,
        }
    }
}

/// The physical optimizer rule (see the module docs).
#[derive(Debug, Default)]
pub struct RunWindows;

impl PhysicalOptimizerRule for RunWindows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name() == "WindowAggExec" {
                return held_input(node);
            }
            let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            match RunWindowExec::try_from_bounded(w, Arc::clone(&node))? {
                Some(run) => Ok(Transformed::yes(Arc::new(run) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "crow_run_windows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` (a `WindowAggExec`) reading its input through [`HeldInput`].
fn held_input(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let children = node.children();
    let [input] = children.as_slice() else {
        return Ok(Transformed::no(node));
    };
    if input.name() == "HeldInput" {
        return Ok(Transformed::no(node));
    }
    let held: Arc<dyn ExecutionPlan> = Arc::new(HeldInput::new(Arc::clone(input)));
    #[allow(deprecated)] // rebuilding from new children is what is wanted
    let node = Arc::clone(&node).with_new_children(vec![held])?;
    Ok(Transformed::yes(node))
}

/// Its input's batches as they come, each counted against the query's
/// memory pool for as long as the stream lives.
///
/// DataFusion's `WindowAggExec` — the window operator for frames that
/// reach the partition's end (`sum(x) OVER (PARTITION BY anonymous_id)`,
/// `… ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING`) — keeps
/// every batch of its input until that input ends, and reserves none of it:
/// such a query grew past `api.memory_limit_mb` (1.6 GB of RSS for 10 M
/// events). Read through this node, the batches it holds are the node's
/// reservation (its stream is the operator's input, dropped with it), so
/// a query that needs more than the pool fails with "resources exhausted"
/// instead of taking the server's memory.
#[derive(Debug)]
pub struct HeldInput {
    input: Arc<dyn ExecutionPlan>,
}

impl HeldInput {
    /// `input`, held to the memory pool.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for HeldInput {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "HeldInput: counted in the memory pool")
    }
}

impl ExecutionPlan for HeldInput {
    fn name(&self) -> &str {
        "HeldInput"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(crate::only_child(
            children,
            "HeldInput",
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let reservation = datafusion::execution::memory_pool::MemoryConsumer::new(format!(
            "HeldInput[{partition}]"
        ))
        .register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let stream = input.map(move |batch| {
            let batch = batch?;
            reservation.try_grow(batch.get_array_memory_size())?;
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The function a window expression computes, if [`RunWindowExec`] can.
fn run_fn(
    expr: &Arc<dyn datafusion::physical_expr::window::WindowExpr>,
    input: &SchemaRef,
) -> Result<Option<RunFn>> {
    let Some(std) = expr.as_any().downcast_ref::<StandardWindowExpr>() else {
        return Ok(None);
    };
    let Some(udwf) = std
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()
    else {
        return Ok(None);
    };
    // Neither flag has an accessor: a function planned reversed (a `lag`
    // over input sorted the other way computes a `lead`) or with IGNORE
    // NULLS stays with DataFusion.
    let flags = format!("{udwf:?}");
    if !flags.contains("is_reversed: false") || !flags.contains("ignore_nulls: false") {
        return Ok(None);
    }
    let field = expr.field()?;
    match (udwf.fun().name(), udwf.args()) {
        ("row_number", []) if *field.data_type() == DataType::UInt64 => Ok(Some(RunFn::RowNumber)),
        ("first_value", [value]) => {
            // Every row's frame starts at its partition's first row and
            // holds at least the row itself.
            let frame = expr.get_window_frame();
            let from_start =
                matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null());
            let to_row = matches!(
                frame.end_bound,
                WindowFrameBound::CurrentRow | WindowFrameBound::Following(_)
            );
            Ok(
                (from_start && to_row && value.data_type(input)? == *field.data_type()).then(
                    || RunFn::FirstValue {
                        expr: Arc::clone(value),
                    },
                ),
            )
        }
        (name @ ("lag" | "lead"), [value, rest @ ..]) if rest.len() <= 2 => {
            let offset = match rest.first() {
                None => Some(1),
                Some(o) => o.downcast_ref::<Literal>().and_then(|l| match l.value() {
                    ScalarValue::Int64(Some(n)) => usize::try_from(*n).ok(),
                    _ => None,
                }),
            };
            let null_default = rest.get(1).is_none_or(|d| {
                d.downcast_ref::<Literal>()
                    .is_some_and(|l| l.value().is_null())
            });
            match offset {
                Some(offset @ 1..=MAX_OFFSET)
                    if null_default && value.data_type(input)? == *field.data_type() =>
                {
                    let expr = Arc::clone(value);
                    Ok(Some(if name == "lag" {
                        RunFn::Lag { expr, offset }
                    } else {
                        RunFn::Lead { expr, offset }
                    }))
                }
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// `row_number`, `lag`, `lead` and `first_value` over input sorted on the
/// partition keys, run by run (see the module docs).
#[derive(Debug)]
pub struct RunWindowExec {
    /// The `BoundedWindowAggExec` this node replaces: its requirements and
    /// output properties are this node's.
    replaced: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    fns: Vec<RunFn>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunWindowExec {
    /// The node computing `w`'s functions, if it can (`node` is `w`).
    fn try_from_bounded(
        w: &BoundedWindowAggExec,
        node: Arc<dyn ExecutionPlan>,
    ) -> Result<Option<Self>> {
        if w.input_order_mode != InputOrderMode::Sorted || w.window_expr().is_empty() {
            return Ok(None);
        }
        let partition_by = w.window_expr()[0].partition_by().to_vec();
        let input_schema = w.input().schema();
        let mut fns = Vec::new();
        for e in w.window_expr() {
            let same_keys = e.partition_by().len() == partition_by.len()
                && e.partition_by()
                    .iter()
                    .zip(&partition_by)
                    .all(|(a, b)| a.eq(b));
            match run_fn(e, &input_schema)? {
                Some(f) if same_keys => fns.push(f),
                _ => return Ok(None),
            }
        }
        Ok(Some(Self {
            input: Arc::clone(w.input()),
            replaced: node,
            partition_by,
            fns,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

impl DisplayAs for RunWindowExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let fns: Vec<String> = self
            .fns
            .iter()
            .map(|f| match f {
                RunFn::RowNumber => "row_number()".to_string(),
                RunFn::Lag { expr, offset } => format!("lag({expr}, {offset})"),
                RunFn::Lead { expr, offset } => format!("lead({expr}, {offset})"),
                RunFn::FirstValue { expr } => format!("first_value({expr})"),
            })
            .collect();
        let keys: Vec<String> = self.partition_by.iter().map(|k| k.to_string()).collect();
        write!(
            f,
            "RunWindowExec: [{}] by runs of [{}]",
            fns.join(", "),
            keys.join(", ")
        )
    }
}

impl ExecutionPlan for RunWindowExec {
    fn name(&self) -> &str {
        "RunWindowExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.replaced.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.replaced.apply_expressions(f)
    }

    fn input_distribution_requirements(
        &self,
    ) -> datafusion::physical_plan::InputDistributionRequirements {
        self.replaced.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.replaced.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.replaced.benefits_from_input_partitioning()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        #[allow(deprecated)] // rebuilding from new children is what is wanted
        let replaced = Arc::clone(&self.replaced).with_new_children(children)?;
        let Some(w) = replaced.downcast_ref::<BoundedWindowAggExec>() else {
            return Err(DataFusionError::Internal(
                "RunWindowExec replaces a BoundedWindowAggExec".into(),
            ));
        };
        match Self::try_from_bounded(w, Arc::clone(&replaced))? {
            Some(run) => Ok(Arc::new(run)),
            None => Ok(replaced),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let lookahead = self.fns.iter().map(RunFn::lookahead).max().unwrap_or(0);
        let stream = RunStream {
            input,
            runs: Runs::new(self.partition_by.clone(), self.fns.clone(), schema.clone()),
            pending: std::collections::VecDeque::new(),
            lookahead,
            input_done: false,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One output partition's stream: each input batch with its window
/// columns, in order; with a `lead`, a batch waits until the rows after it
/// that its values can depend on have arrived (or the input has ended), so
/// at most that many rows (and the batches holding them) are kept.
struct RunStream {
    input: SendableRecordBatchStream,
    runs: Runs,
    pending: std::collections::VecDeque<RecordBatch>,
    lookahead: usize,
    input_done: bool,
    metrics: BaselineMetrics,
}

impl futures::Stream for RunStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            if !self.pending.is_empty() {
                let after: usize = self.pending.iter().skip(1).map(RecordBatch::num_rows).sum();
                if self.input_done || after >= self.lookahead {
                    let this = &mut *self;
                    let Some(front) = this.pending.pop_front() else {
                        continue;
                    };
                    let timer = this.metrics.elapsed_compute().timer();
                    let out = this.runs.next(&front, &this.pending, this.lookahead);
                    timer.done();
                    if let Ok(b) = &out {
                        this.metrics.record_output(b.num_rows());
                    }
                    return Poll::Ready(Some(out));
                }
            } else if self.input_done {
                return Poll::Ready(None);
            }
            match futures::ready!(self.input.poll_next_unpin(cx)) {
                Some(Ok(b)) => self.pending.push_back(b),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.input_done = true,
            }
        }
    }
}

/// The rows after a batch a `lead` can reach: the first `lookahead` rows
/// of the batches after it, their keys and each `lead`'s values.
struct Ahead {
    keys: Vec<ArrayRef>,
    values: Vec<Option<ArrayRef>>,
    rows: usize,
}

impl Ahead {
    fn new(
        keys: &[Arc<dyn PhysicalExpr>],
        fns: &[RunFn],
        after: &std::collections::VecDeque<RecordBatch>,
        lookahead: usize,
    ) -> Result<Self> {
        let mut slices = Vec::new();
        let mut left = lookahead;
        for b in after {
            if left == 0 {
                break;
            }
            let take = left.min(b.num_rows());
            slices.push(b.slice(0, take));
            left -= take;
        }
        let rows = lookahead - left;
        let eval = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            let parts = slices
                .iter()
                .map(|b| e.evaluate(b)?.into_array(b.num_rows()))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(datafusion::arrow::compute::concat(&refs)?)
        };
        if slices.is_empty() {
            return Ok(Self {
                keys: Vec::new(),
                values: vec![None; fns.len()],
                rows: 0,
            });
        }
        Ok(Self {
            keys: keys.iter().map(eval).collect::<Result<_>>()?,
            values: fns
                .iter()
                .map(|f| match f {
                    RunFn::Lead { expr, .. } => eval(expr).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
            rows,
        })
    }

    /// How many of these rows go on with a run whose last row has the
    /// one-row `last` keys.
    fn continuing(&self, last: &[ArrayRef]) -> Result<usize> {
        if self.rows == 0 || !same_key(last, &self.keys)? {
            return Ok(0);
        }
        Ok(runs_of(&self.keys, self.rows)?
            .first()
            .map_or(0, |r| r.len()))
    }
}

/// What one output partition carries from batch to batch: the last row's
/// keys, how many rows its run has had, and each `lag`'s last values of
/// that run (at most its offset, oldest first).
struct Runs {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    fns: Vec<RunFn>,
    schema: SchemaRef,
    last_key: Option<Vec<ArrayRef>>,
    run_rows: u64,
    /// Per function: a `lag`'s last values, a `first_value`'s first one.
    tails: Vec<Option<ArrayRef>>,
}

impl Runs {
    fn new(keys: Vec<Arc<dyn PhysicalExpr>>, fns: Vec<RunFn>, schema: SchemaRef) -> Self {
        let tails = vec![None; fns.len()];
        Self {
            keys,
            fns,
            schema,
            last_key: None,
            run_rows: 0,
            tails,
        }
    }

    /// `batch` with the window columns after its own; `after` holds the
    /// batches that follow it so far (at least `lookahead` rows unless the
    /// input has ended).
    fn next(
        &mut self,
        batch: &RecordBatch,
        after: &std::collections::VecDeque<RecordBatch>,
        lookahead: usize,
    ) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        if n == 0 {
            for f in self.schema.fields().iter().skip(columns.len()) {
                columns.push(new_null_array(f.data_type(), 0));
            }
            return Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let runs = runs_of(&keys, n)?;
        // The first run goes on with the previous batch's last one.
        let continues = match &self.last_key {
            None => false,
            Some(last) => same_key(last, &keys)?,
        };
        let carried = if continues { self.run_rows } else { 0 };
        let last_run = runs.last().cloned().unwrap_or(0..n);
        // The last row's keys, copied (a kept slice would hold the batch).
        let last_key = keys
            .iter()
            .map(|k| Ok(interleave(&[k.as_ref()], &[(0, n - 1)])?))
            .collect::<Result<Vec<_>>>()?;
        let ahead = if lookahead > 0 {
            let ahead = Ahead::new(&self.keys, &self.fns, after, lookahead)?;
            let continuing = ahead.continuing(&last_key)?;
            Some((ahead, continuing))
        } else {
            None
        };
        for (i, f) in self.fns.iter().enumerate() {
            let column = match f {
                RunFn::RowNumber => {
                    let mut v = Vec::with_capacity(n);
                    for (r, run) in runs.iter().enumerate() {
                        let base = if r == 0 { carried } else { 0 };
                        v.extend((1..=run.len() as u64).map(|k| base + k));
                    }
                    Arc::new(UInt64Array::from(v)) as ArrayRef
                }
                RunFn::Lag { expr, offset } => {
                    let values = expr.evaluate(batch)?.into_array(n)?;
                    let tail = if continues {
                        self.tails[i].clone()
                    } else {
                        None
                    };
                    let column = lag(&values, tail.as_ref(), &runs, *offset)?;
                    // The last run's last `offset` values, for the next
                    // batch (with the carried ones if it is the first run).
                    let from_tail = if runs.len() == 1 {
                        tail.as_ref().map_or(0, |t| t.len())
                    } else {
                        0
                    };
                    let own = last_run.len();
                    let keep = (from_tail + own).min(*offset);
                    let mut idx = Vec::with_capacity(keep);
                    for j in (from_tail + own - keep)..(from_tail + own) {
                        idx.push(if j < from_tail {
                            (1, j)
                        } else {
                            (0, last_run.start + j - from_tail)
                        });
                    }
                    let mut sources: Vec<&dyn Array> = vec![values.as_ref()];
                    if let Some(t) = tail.as_ref() {
                        sources.push(t.as_ref());
                    }
                    self.tails[i] = Some(interleave(&sources, &idx)?);
                    column
                }
                RunFn::FirstValue { expr } => {
                    let values = expr.evaluate(batch)?.into_array(n)?;
                    let first = if continues {
                        self.tails[i].clone()
                    } else {
                        None
                    };
                    let mut idx = Vec::with_capacity(n);
                    for (r, run) in runs.iter().enumerate() {
                        let from = match (&first, r) {
                            (Some(_), 0) => (1, 0),
                            _ => (0, run.start),
                        };
                        idx.extend(std::iter::repeat_n(from, run.len()));
                    }
                    let mut sources: Vec<&dyn Array> = vec![values.as_ref()];
                    if let Some(f) = first.as_ref() {
                        sources.push(f.as_ref());
                    }
                    let column = interleave(&sources, &idx)?;
                    // The last run's first value, copied (one row).
                    self.tails[i] = Some(interleave(&[column.as_ref()], &[(0, n - 1)])?);
                    column
                }
                RunFn::Lead { expr, offset } => {
                    let values = expr.evaluate(batch)?.into_array(n)?;
                    let next = ahead
                        .as_ref()
                        .and_then(|(a, c)| a.values[i].clone().map(|v| (v, *c)));
                    lead(&values, next.as_ref(), &runs, *offset)?
                }
            };
            columns.push(column);
        }
        self.run_rows = if runs.len() == 1 {
            carried + n as u64
        } else {
            last_run.len() as u64
        };
        self.last_key = Some(last_key);
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The runs of equal `keys` in a batch of `n` rows (one run without keys).
fn runs_of(keys: &[ArrayRef], n: usize) -> Result<Vec<std::ops::Range<usize>>> {
    if keys.is_empty() {
        return Ok(std::iter::once(0..n).collect());
    }
    Ok(partition(keys)?.ranges())
}

/// Whether the one-row `last` keys equal `keys`' first row (NULLs equal,
/// as `PARTITION BY` groups them).
fn same_key(last: &[ArrayRef], keys: &[ArrayRef]) -> Result<bool> {
    for (a, b) in last.iter().zip(keys) {
        let cmp =
            datafusion::arrow::compute::kernels::cmp::distinct(&a.slice(0, 1), &b.slice(0, 1))?;
        if cmp.value(0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `lead(values, offset)` over `runs` of this batch, the last run going on
/// into the first `continuing` rows of `next` (the values after the batch).
fn lead(
    values: &ArrayRef,
    next: Option<&(ArrayRef, usize)>,
    runs: &[std::ops::Range<usize>],
    offset: usize,
) -> Result<ArrayRef> {
    let nulls = new_null_array(values.data_type(), 1);
    let (next_values, continuing) = match next {
        Some((v, c)) => (Arc::clone(v), *c),
        None => (Arc::clone(&nulls), 0),
    };
    let mut idx = Vec::with_capacity(values.len());
    for (r, run) in runs.iter().enumerate() {
        let last = r + 1 == runs.len();
        for row in run.clone() {
            let forward = run.end - 1 - row;
            idx.push(if offset <= forward {
                (0, row + offset)
            } else if last && offset - forward - 1 < continuing {
                (1, offset - forward - 1)
            } else {
                (2, 0)
            });
        }
    }
    let sources: [&dyn Array; 3] = [values.as_ref(), next_values.as_ref(), nulls.as_ref()];
    Ok(interleave(&sources, &idx)?)
}

/// `lag(values, offset)` over `runs` of this batch, the first run going on
/// from `tail` (the previous batch's last values of it, oldest first).
fn lag(
    values: &ArrayRef,
    tail: Option<&ArrayRef>,
    runs: &[std::ops::Range<usize>],
    offset: usize,
) -> Result<ArrayRef> {
    let nulls = new_null_array(values.data_type(), 1);
    let t = tail.map_or(0, |t| t.len());
    let mut idx = Vec::with_capacity(values.len());
    for (r, run) in runs.iter().enumerate() {
        for row in run.clone() {
            let back = row - run.start;
            idx.push(if back >= offset {
                (0, row - offset)
            } else if r == 0 && offset - back <= t {
                (1, t - (offset - back))
            } else {
                (2, 0)
            });
        }
    }
    let tail_or_nulls = tail.cloned().unwrap_or_else(|| Arc::clone(&nulls));
    let sources: [&dyn Array; 3] = [values.as_ref(), tail_or_nulls.as_ref(), nulls.as_ref()];
    Ok(interleave(&sources, &idx)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionConfig;

    /// Visitors of very different run lengths (one row, a few, hundreds),
    /// NULL visitors and NULL values, cut into small batches so runs cross
    /// batch bounds (a run longer than a batch, one that ends at a batch's
    /// last row), over two input partitions.
    fn partitions() -> Vec<Vec<RecordBatch>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("visitor", DataType::Utf8, true),
            Field::new("device", DataType::Utf8, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("n", DataType::Int64, true),
        ]));
        let mut rows = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for v in 0..400u64 {
            let len = match v % 7 {
                0 => 1,
                1 => 250,
                2 => 13,
                _ => 1 + next() % 6,
            };
            for _ in 0..len {
                let visitor = (v % 53 != 0).then(|| format!("v{}", v % 97));
                let device = ["mobile", "desktop"][(next() % 2) as usize].to_string();
                let at = (next() % 17 != 0).then(|| (next() % 1_000_000) as i64);
                let n = (next() % 11 != 0).then(|| next() as i64 % 1000);
                rows.push((visitor, device, at, n));
            }
        }
        type Row = (Option<String>, String, Option<i64>, Option<i64>);
        let make = |rows: &[Row]| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                    )) as ArrayRef,
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| Some(r.1.clone())).collect::<Vec<_>>(),
                    )),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("batch")
        };
        let half = rows.len() / 2;
        let (a, b) = rows.split_at(half);
        vec![
            a.chunks(37).map(&make).collect(),
            b.chunks(64).map(&make).collect(),
        ]
    }

    /// The rows (sorted, as text) and the physical plan of `sql`, with
    /// CROW's planner rules or DataFusion's alone, in batches of
    /// `batch_size`.
    async fn answer(rule: bool, sql: &str, batch_size: usize) -> (Vec<String>, String) {
        let mut builder = SessionStateBuilder::new()
            .with_config(
                SessionConfig::new()
                    .with_target_partitions(2)
                    .with_batch_size(batch_size),
            )
            .with_default_features();
        if rule {
            // As every session that runs users' SQL has it.
            builder = crate::with_planner_rules(builder);
        }
        let (text, plan) = crate::testing::answer(builder, partitions(), sql).await;
        let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
        rows.sort();
        (rows, plan)
    }

    /// A window over whole partitions (DataFusion's `WindowAggExec`, which
    /// holds its input) answers as DataFusion's when the pool is large
    /// enough, and fails with "resources exhausted" when it is not,
    /// instead of growing past it.
    #[tokio::test]
    async fn windows_that_hold_their_input_are_held_to_the_pool() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let sql = "SELECT visitor, at, n, sum(n) OVER (PARTITION BY visitor) AS total,
                          count(*) OVER (PARTITION BY device) AS per_device,
                          sum(n) OVER () AS all_n FROM t";
        let session = |pool: Option<usize>, rules: bool| {
            let mut builder = SessionStateBuilder::new()
                .with_config(SessionConfig::new().with_target_partitions(2))
                .with_default_features();
            if let Some(bytes) = pool {
                let runtime = RuntimeEnvBuilder::new()
                    .with_memory_pool(Arc::new(GreedyMemoryPool::new(bytes)))
                    .build_arc()
                    .expect("runtime");
                builder = builder.with_runtime_env(runtime);
            }
            if rules {
                builder = crate::with_planner_rules(builder);
            }
            builder
        };
        let (want, _) = crate::testing::answer(session(None, false), partitions(), sql).await;
        let (got, plan) =
            crate::testing::answer(session(Some(64 << 20), true), partitions(), sql).await;
        assert!(
            plan.contains("WindowAggExec") && plan.contains("HeldInput"),
            "{plan}"
        );
        let sorted = |t: &str| {
            let mut l: Vec<&str> = t.lines().collect();
            l.sort_unstable();
            l.join("\n")
        };
        assert_eq!(sorted(&got), sorted(&want));
        // The whole table (about 2,000 rows, no sort before the window)
        // does not fit in 20 KB: refused.
        let sql = "SELECT n, sum(n) OVER () AS total FROM t";
        let ctx = datafusion::prelude::SessionContext::new_with_state(
            session(Some(20 << 10), true).build(),
        );
        let parts = partitions();
        let table =
            datafusion::datasource::MemTable::try_new(parts[0][0].schema(), parts).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let err = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect_err("more than the pool");
        assert!(
            matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn run_windows_answer_as_datafusion() {
        // Every row of the table is an output row, with a unique ORDER BY
        // (the rows' own values tie; `n` and `device` break most ties and
        // the outputs are compared as sorted sets of whole rows, so a tie's
        // order cannot matter).
        for (sql, ours) in [
            (
                "SELECT visitor, at, n, lag(at) OVER (PARTITION BY visitor ORDER BY at, n, device) AS prev FROM t",
                true,
            ),
            (
                "SELECT visitor, at, n, lag(n, 3) OVER (PARTITION BY visitor ORDER BY at, n, device) AS p3,
                        row_number() OVER (PARTITION BY visitor ORDER BY at, n, device) AS rn,
                        lag(device, 2, NULL) OVER (PARTITION BY visitor ORDER BY at, n, device) AS d2
                 FROM t",
                true,
            ),
            (
                "SELECT visitor, device, at, n, lag(n) OVER (PARTITION BY visitor, device ORDER BY at DESC, n, device) AS prev,
                        row_number() OVER (PARTITION BY visitor, device ORDER BY at DESC, n, device) AS rn
                 FROM t",
                true,
            ),
            (
                "SELECT visitor, device, at, n, lag(n, 300) OVER (PARTITION BY visitor ORDER BY at, n, device) AS far FROM t",
                true,
            ),
            (
                "SELECT visitor, at, n, row_number() OVER (ORDER BY visitor, at, n, device) AS rn,
                        lag(n) OVER (ORDER BY visitor, at, n, device) AS prev FROM t",
                true,
            ),
            (
                "SELECT visitor, at, n FROM (SELECT visitor, at, n, row_number() OVER (PARTITION BY visitor ORDER BY at, n, device) AS rn FROM t) s WHERE rn = 1",
                true,
            ),
            (
                "SELECT visitor, device, at, n, first_value(device) OVER (PARTITION BY visitor ORDER BY at, n, device) AS first_device,
                        first_value(n) OVER (PARTITION BY visitor ORDER BY at, n, device ROWS BETWEEN UNBOUNDED PRECEDING AND 3 FOLLOWING) AS first_n,
                        row_number() OVER (PARTITION BY visitor ORDER BY at, n, device) AS rn
                 FROM t",
                true,
            ),
            (
                "SELECT visitor, device, at, n, first_value(at) OVER (PARTITION BY visitor ORDER BY at DESC, n, device) AS latest FROM t",
                true,
            ),
            // DataFusion's own: a default value, IGNORE NULLS, a running
            // sum, a frame that does not start at the partition's start.
            (
                "SELECT visitor, at, n, lag(n, 1, -1) OVER (PARTITION BY visitor ORDER BY at, n, device) AS prev FROM t",
                false,
            ),
            (
                "SELECT visitor, at, n, lag(n) IGNORE NULLS OVER (PARTITION BY visitor ORDER BY at, n, device) AS prev FROM t",
                false,
            ),
            (
                "SELECT visitor, at, n, lead(n, 1, 0) OVER (PARTITION BY visitor ORDER BY at, n, device) AS next FROM t",
                false,
            ),
            (
                "SELECT visitor, at, n, first_value(n) OVER (PARTITION BY visitor ORDER BY at, n, device ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS f FROM t",
                false,
            ),
            (
                "SELECT visitor, at, n, first_value(n) IGNORE NULLS OVER (PARTITION BY visitor ORDER BY at, n, device) AS f FROM t",
                false,
            ),
            (
                "SELECT visitor, at, n, lead(n) OVER (PARTITION BY visitor ORDER BY at, n, device) AS next FROM t",
                true,
            ),
            (
                "SELECT visitor, device, at, n, lead(at, 3) OVER (PARTITION BY visitor ORDER BY at, n, device) AS a3,
                        lag(n) OVER (PARTITION BY visitor ORDER BY at, n, device) AS prev,
                        row_number() OVER (PARTITION BY visitor ORDER BY at, n, device) AS rn,
                        lead(device, 300) OVER (PARTITION BY visitor ORDER BY at, n, device) AS far
                 FROM t",
                true,
            ),
            (
                "SELECT visitor, device, at, n, lead(n, 2) OVER (PARTITION BY visitor, device ORDER BY at DESC, n, device) AS next2
                 FROM t",
                true,
            ),
            (
                "SELECT visitor, at, n, lead(n) OVER (ORDER BY visitor, at, n, device) AS next FROM t",
                true,
            ),
            (
                "SELECT visitor, at, n, lag(n) OVER (PARTITION BY visitor ORDER BY at, n, device) AS prev,
                        sum(n) OVER (PARTITION BY visitor ORDER BY at, n, device) AS running FROM t",
                false,
            ),
        ] {
            for batch_size in [5, 64, 8192] {
                let (want, _) = answer(false, sql, batch_size).await;
                let (got, plan) = answer(true, sql, batch_size).await;
                assert_eq!(got, want, "{sql} in batches of {batch_size}\n{plan}");
                assert_eq!(plan.contains("RunWindowExec"), ours, "{sql}\n{plan}");
                assert_eq!(
                    plan.contains("BoundedWindowAggExec"),
                    !ours,
                    "{sql}\n{plan}"
                );
            }
            // Every visitor's first row (98 with the NULL one), or every row.
            assert!(answer(false, sql, 64).await.0.len() > 98, "{sql}");
        }
    }
}
