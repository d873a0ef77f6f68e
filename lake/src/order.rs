//! Where a sorted input costs more than it saves.
//!
//! Files `crow optimize` clustered are declared sorted to DataFusion
//! ([`crate::scan`]): a window or a `GROUP BY` per visitor then merges them
//! instead of sorting or hashing every row. An aggregate whose input is
//! sorted on only *some* of its group keys — `GROUP BY event_date,
//! anonymous_id`, which is what DataFusion makes of `count(DISTINCT
//! anonymous_id) … GROUP BY event_date` — runs in DataFusion's
//! `PartiallySorted` mode instead: it emits every finished group early, in
//! small batches, and the repartition above it hashes them batch by batch.
//! On 10 M events in 29 clustered files that made "distinct visitors per
//! day" twice as slow as hashing (BENCHMARKS.md, run 7).
//! [`SortedScans`] gives such an aggregate its input
//! without the order, so it hashes as it would over unsorted files.
//!
//! Declaring the order costs something too: each sorted file is its own
//! partition, read without the work stealing DataFusion does between
//! partitions of unsorted files, and every aggregate above is fed by as
//! many producers. So when nothing in the final plan uses the order — no
//! window, no aggregate over sorted input, no merge of sorted streams — the
//! same rule spreads those files over the session's partitions again and
//! drops the declared order, as for unsorted files.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};

/// CROW's physical optimizer rules, after DataFusion's own.
pub fn with_rules(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.with_physical_optimizer_rule(Arc::new(SortedScans))
}

/// A physical optimizer rule over plans that read sorted files (see the
/// module docs). First, every aggregate DataFusion planned in
/// `PartiallySorted` mode reads its input through [`Unordered`], which
/// hides the order, so it hashes instead. Then, if no node uses the order,
/// the sorted scans are spread over the session's partitions. The nodes
/// above a change are rebuilt from their new inputs (a repartition that
/// merged in order no longer does). Each rewrite is kept only if it passes
/// DataFusion's own sanity check — every node's required ordering and
/// distribution still holds — otherwise the plan is left as it was.
#[derive(Debug, Default)]
pub struct SortedScans;

impl PhysicalOptimizerRule for SortedScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = hash_partially_sorted(plan, config)?;
        spread_unused_order(plan, config)
    }

    fn name(&self) -> &str {
        "crow_sorted_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with every aggregate in `PartiallySorted` mode reading its input
/// through [`Unordered`], if the result passes the sanity check.
fn hash_partially_sorted(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    let rewritten = Arc::clone(&plan).transform_up(|node| {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        if !matches!(agg.input_order_mode(), InputOrderMode::PartiallySorted(_)) {
            return Ok(Transformed::no(node));
        }
        let input: Arc<dyn ExecutionPlan> = Arc::new(Unordered::new(Arc::clone(agg.input())));
        #[allow(deprecated)] // rebuilding from new children is what is wanted
        let node = Arc::clone(&node).with_new_children(vec![input])?;
        Ok(Transformed::yes(node))
    })?;
    checked(plan, rewritten, config)
}

/// `plan` with its sorted file scans spread over the session's partitions
/// without a declared order, when no node uses the order (see the module
/// docs) and the result passes the sanity check.
fn spread_unused_order(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut uses_order = false;
    plan.apply(|node| {
        let sorted_aggregate = node
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.input_order_mode() == InputOrderMode::Sorted);
        let ordered_repartition = node
            .downcast_ref::<RepartitionExec>()
            .is_some_and(RepartitionExec::preserve_order);
        // Nodes that rely on their input's order without declaring it as a
        // requirement the sanity check would see, or whose mode depends on
        // it.
        let by_name = matches!(
            node.name(),
            "BoundedWindowAggExec" | "WindowAggExec" | "RunWindowExec" | "PartialSortExec"
        );
        uses_order |= sorted_aggregate || ordered_repartition || by_name;
        Ok(if uses_order {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if uses_order {
        return Ok(plan);
    }
    let partitions = config.execution.target_partitions;
    let rewritten = Arc::clone(&plan).transform_up(|node| {
        let Some(scan) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        if scan.output_ordering.is_empty() || scan.file_groups.len() <= partitions {
            return Ok(Transformed::no(node));
        }
        let files = scan
            .file_groups
            .iter()
            .flat_map(|g| g.files().iter().cloned())
            .collect();
        let spread = FileScanConfigBuilder::from(scan.clone())
            .with_file_groups(crate::scan::balanced_groups(files, partitions))
            .with_output_ordering(Vec::new())
            .with_preserve_order(false)
            .build();
        let node: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(spread);
        Ok(Transformed::yes(node))
    })?;
    checked(plan, rewritten, config)
}

/// `rewritten` if it changed anything and passes DataFusion's sanity check
/// (every node's required ordering and distribution holds), else `plan`.
fn checked(
    plan: Arc<dyn ExecutionPlan>,
    rewritten: Transformed<Arc<dyn ExecutionPlan>>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !rewritten.transformed {
        return Ok(plan);
    }
    match SanityCheckPlan::new().optimize(Arc::clone(&rewritten.data), config) {
        Ok(checked) => Ok(checked),
        Err(e) => {
            tracing::debug!(error = %e, "kept the plan over sorted files as it was");
            Ok(plan)
        }
    }
}

/// Its input's rows as they come, declared in no order (same schema and
/// partitioning).
#[derive(Debug)]
pub struct Unordered {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl Unordered {
    /// `input`, declared in no order.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let p = input.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            p.output_partitioning().clone(),
            p.emission_type,
            p.boundedness,
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for Unordered {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Unordered")
    }
}

impl ExecutionPlan for Unordered {
    fn name(&self) -> &str {
        "Unordered"
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
        Ok(Arc::new(Self::new(crate::only_child(
            children,
            "Unordered",
        )?)))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
