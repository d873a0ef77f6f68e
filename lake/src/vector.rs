//! `cosine_similarity(a, b)`: the SQL function over float lists (the
//! `embeddings.vector` column, or literals like `[1.0, 0.0]`) registered in
//! every session the lake builds and in the query API's tenant sessions.
//!
//! Both arguments are cast to `List(Float64)`; the answer is a `DOUBLE`,
//! null when either side is null or has no length (a zero vector), and an
//! error when the two lists of a row differ in length.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder};
use arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function's SQL name.
pub const NAME: &str = "cosine_similarity";

/// `cosine_similarity(a, b)` as a DataFusion scalar function.
pub fn cosine_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CosineSimilarity {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CosineSimilarity {
    signature: Signature,
}

impl ScalarUDFImpl for CosineSimilarity {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        for t in arg_types {
            if !matches!(
                t,
                DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(_, _)
                    | DataType::Null
            ) {
                return exec_err!("{NAME}(a, b) takes two lists of numbers, not {t}");
            }
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b] = arrays.as_slice() else {
            return exec_err!("{NAME}(a, b) takes two arguments");
        };
        let out = cosine_arrays(a, b)?;
        if scalar {
            let v = datafusion::common::ScalarValue::try_from_array(&out, 0)?;
            return Ok(ColumnarValue::Scalar(v));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Row by row cosine similarity of two list arrays.
fn cosine_arrays(a: &ArrayRef, b: &ArrayRef) -> Result<Float64Array> {
    let list = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    let a = arrow::compute::cast(a, &list)?;
    let b = arrow::compute::cast(b, &list)?;
    let (a, b) = (a.as_list::<i32>(), b.as_list::<i32>());
    let mut out = Float64Builder::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        let (x, y) = (
            x.as_primitive::<Float64Type>(),
            y.as_primitive::<Float64Type>(),
        );
        if x.len() != y.len() {
            return exec_err!(
                "{NAME}: vectors of {} and {} elements (row {i})",
                x.len(),
                y.len()
            );
        }
        if x.null_count() > 0 || y.null_count() > 0 {
            out.append_null();
            continue;
        }
        out.append_option(cosine_f64(x.values(), y.values()));
    }
    Ok(out.finish())
}

/// The cosine similarity of two vectors of the same length; `None` when
/// either has no length.
pub fn cosine_f64(x: &[f64], y: &[f64]) -> Option<f64> {
    let (mut dot, mut nx, mut ny) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        dot += a * b;
        nx += a * a;
        ny += b * b;
    }
    (nx > 0.0 && ny > 0.0).then(|| dot / (nx.sqrt() * ny.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cosine_similarity_in_sql() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_udf(cosine_udf());
        let df = ctx
            .sql(
                "SELECT cosine_similarity([1.0, 0.0], [1.0, 1.0]) AS a, \
                 cosine_similarity([1, 2, 3], [1, 2, 3]) AS b, \
                 cosine_similarity([0.0, 0.0], [1.0, 0.0]) AS c",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = df.collect().await.unwrap_or_else(|e| panic!("{e}"));
        let col = |i: usize| b[0].column(i).as_primitive::<Float64Type>().clone();
        assert!((col(0).value(0) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert!((col(1).value(0) - 1.0).abs() < 1e-12);
        assert!(col(2).is_null(0));
        let err = ctx
            .sql("SELECT cosine_similarity([1.0], [1.0, 2.0])")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .collect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().contains("vectors of 1 and 2 elements"),
            "{err}"
        );
    }
}
