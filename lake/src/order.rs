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
//! [`HashPartiallySortedAggregates`] gives such an aggregate its input
//! without the order, so it hashes as it would over unsorted files.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};

/// CROW's physical optimizer rules, after DataFusion's own.
pub fn with_rules(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.with_physical_optimizer_rule(Arc::new(HashPartiallySortedAggregates))
}

/// A physical optimizer rule: every aggregate DataFusion planned in
/// `PartiallySorted` mode reads its input through [`Unordered`], which
/// hides the order, so it hashes instead (see the module docs). The nodes
/// above are rebuilt from their new inputs (a repartition that merged in
/// order no longer does). The rewritten plan is kept only if it passes
/// DataFusion's own sanity check — every node's required ordering and
/// distribution still holds — otherwise the plan is left as it was.
#[derive(Debug, Default)]
pub struct HashPartiallySortedAggregates;

impl PhysicalOptimizerRule for HashPartiallySortedAggregates {
    fn optimize(
        &self,
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
        if !rewritten.transformed {
            return Ok(plan);
        }
        match SanityCheckPlan::new().optimize(Arc::clone(&rewritten.data), config) {
            Ok(checked) => Ok(checked),
            Err(e) => {
                tracing::debug!(error = %e, "kept the partially sorted aggregate");
                Ok(plan)
            }
        }
    }

    fn name(&self) -> &str {
        "hash_partially_sorted_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
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
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self::new(input))),
            _ => Err(datafusion::error::DataFusionError::Internal(
                "Unordered takes one input".to_string(),
            )),
        }
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
