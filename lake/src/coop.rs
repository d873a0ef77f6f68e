//! Joins that yield: a cancelled or timed-out query stops at once.
//!
//! A query runs as a task that is aborted when its caller leaves (a
//! Postgres cancel, an HTTP client gone, the query timeout), and an abort
//! takes effect when the task next yields. DataFusion's own cooperative
//! scheduling yields at the scans, but a join can emit thousands of
//! batches per batch it reads (a cross join of two 200,000-row ranges: 1.6
//! billion rows per input batch), and an aggregate above it polls it in a
//! loop that never returns: the aborted query kept both query threads for
//! seconds, and a client's next statement on a loaded machine waited out
//! its whole timeout behind it. [`CooperativeJoins`] puts DataFusion's
//! [`CooperativeExec`] over every join, so the join's output spends the
//! task's budget and the task yields every so many batches.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;

/// Wraps every join of a physical plan in a [`CooperativeExec`].
#[derive(Debug, Default)]
pub struct CooperativeJoins;

/// DataFusion's join operators, by their names.
fn is_join(plan: &dyn ExecutionPlan) -> bool {
    matches!(
        plan.name(),
        "NestedLoopJoinExec"
            | "CrossJoinExec"
            | "HashJoinExec"
            | "SortMergeJoinExec"
            | "SymmetricHashJoinExec"
            | "PiecewiseMergeJoinExec"
    )
}

impl PhysicalOptimizerRule for CooperativeJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if is_join(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "crow_cooperative_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_join_is_wrapped_once() {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx
            .sql(
                "select count(*) from range(0, 10) a cross join range(0, 10) b \
                 join range(0, 5) c on a.value = c.value",
            )
            .await
            .expect("plan");
        let plan = df.create_physical_plan().await.expect("physical plan");
        let plan = CooperativeJoins
            .optimize(plan, &ConfigOptions::default())
            .expect("rule");
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let joins = lines.iter().filter(|l| l.contains("JoinExec")).count();
        assert_eq!(joins, 2, "{text}");
        for (i, l) in lines.iter().enumerate() {
            if l.contains("JoinExec") {
                assert!(i > 0 && lines[i - 1] == "CooperativeExec", "{text}");
            }
        }
    }
}
