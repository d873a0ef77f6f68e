//! `a || b` on text, bounded like the text functions ([`crate::bounded`]).
//!
//! The `||` operator is not a function, so wrapping functions left it
//! unbounded: each level of `with t1 as (select x || x as x from t0), …`
//! doubles a string, and twenty levels made one row of 1 GB (thirty would
//! abort the process on a failed allocation). After type coercion, an
//! analyzer rule replaces every text `||` with a bounded function of the
//! same meaning (null if either side is null) and the same column name.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// Text concatenation with `||`'s semantics: null when either side is null.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StringConcat {
    signature: Signature,
}

impl StringConcat {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for StringConcat {
    fn name(&self) -> &str {
        // Errors name it as the user wrote it.
        "||"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        // The name the `||` expression had, so result columns keep it.
        match args {
            [l, r] => Ok(format!("{} || {}", l.schema_name(), r.schema_name())),
            _ => Ok(self.name().to_string()),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        // The operator's own type: after coercion both sides share it.
        Ok(match arg_types.first() {
            Some(t @ (DataType::Utf8View | DataType::LargeUtf8)) => t.clone(),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let mut sides = Vec::with_capacity(2);
        for a in &args.args {
            let a = a.to_array(if all_scalar { 1 } else { rows })?;
            sides.push(arrow::compute::cast(&a, &DataType::Utf8)?);
        }
        let [l, r] = sides.as_slice() else {
            return Err(datafusion::common::DataFusionError::Internal(
                "|| takes two sides".into(),
            ));
        };
        let out = arrow::compute::kernels::concat_elements::concat_elements_dyn(l, r)?;
        let out = arrow::compute::cast(&out, args.return_type())?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&out, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// Replaces text `||` by the bounded [`StringConcat`].
#[derive(Debug)]
pub struct BoundStringConcat {
    udf: Arc<ScalarUDF>,
}

impl BoundStringConcat {
    /// The rule, with `||` producing at most `cap` bytes per call.
    pub fn new(cap: usize) -> Self {
        Self {
            udf: Arc::new(crate::bounded::Bounded::wrap(
                &ScalarUDF::new_from_impl(StringConcat::new()),
                cap,
            )),
        }
    }
}

impl AnalyzerRule for BoundStringConcat {
    fn name(&self) -> &str {
        "crow_bound_string_concat"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let t = node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr {
                        left,
                        op: Operator::StringConcat,
                        right,
                    }) => Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(self.udf.clone(), vec![*left, *right]),
                    ))),
                    e => Ok(Transformed::no(e)),
                })
            })?;
            if t.transformed {
                t.map_data(|p| p.recompute_schema())
            } else {
                Ok(t)
            }
        })
        .map(|t| t.data)
    }
}
