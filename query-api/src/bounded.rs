//! Text, binary and list functions whose output is bounded before they
//! allocate.
//!
//! The memory pool (`api.memory_limit_mb`) counts what operators hold —
//! hash tables, sort buffers — but not what a scalar function allocates for
//! its result. `length(repeat('x', 1000000000))` took the server to 4 GB, at
//! planning time even (constant folding calls the function). In an API
//! session every text, binary and list function is wrapped in [`Bounded`]:
//! before the inner function runs, an upper bound of its output for the
//! batch is computed from its arguments (the sizes of the argument arrays,
//! the counts of `repeat`, `lpad`, `array_repeat`, `range`, …), and a call
//! whose bound is above `api.max_function_output_mb` fails with a clear
//! error instead of allocating. A call whose arguments are all constants is
//! bounded by its value times the rows of the batch it is evaluated for,
//! because that is what a projection makes of it: so wrapped functions are
//! not folded into constants at planning time (their signature is
//! volatile), they are evaluated with the batch they belong to.
//!
//! Everything else about a wrapped function (name, signature, types,
//! simplification, ordering) is the inner function's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, ExprSchema, Result, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping, Volatility,
};

/// How a function's output grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Growth {
    /// At most `factor` times the bytes of its arguments.
    Linear(u8),
    /// `repeat(text, n)`, `array_repeat(value, n)`: the first argument `n`
    /// times.
    Repeat,
    /// `lpad`/`rpad(text, n, …)`, `array_resize(list, n, …)`: `n` elements.
    Pad,
    /// `range`/`generate_series(start, stop, step)`: one element per step.
    Range,
    /// `replace(text, from, to)`, `regexp_replace(text, pattern, to, …)`:
    /// every position of the text may become `to`.
    Replace,
}

/// The growth of the function called `name`, if it is one to bound.
fn growth(name: &str) -> Growth {
    match name {
        "repeat" | "array_repeat" | "list_repeat" => Growth::Repeat,
        "lpad" | "rpad" | "array_resize" | "list_resize" => Growth::Pad,
        "range" | "generate_series" => Growth::Range,
        "replace" | "regexp_replace" | "array_replace" | "array_replace_all"
        | "array_replace_n" | "list_replace" | "list_replace_all" | "list_replace_n" => {
            Growth::Replace
        }
        // Splitting text into a list costs a view and an offset per element.
        "string_to_array" | "string_to_list" | "regexp_match" | "split_part" => Growth::Linear(32),
        // Case mapping can grow a character (ß → SS); encodings grow bytes.
        "upper" | "lower" | "initcap" | "encode" | "to_hex" => Growth::Linear(4),
        // The text operator `||` ([`crate::concat_op`]): exactly its sides.
        "||" => Growth::Linear(1),
        _ => Growth::Linear(2),
    }
}

/// A function whose output size is checked against a cap before it runs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: ScalarUDF,
    signature: Signature,
    growth: Growth,
    cap: usize,
}

impl Bounded {
    /// Wrap `inner` with an output cap of `cap` bytes per call.
    pub fn wrap(inner: &ScalarUDF, cap: usize) -> ScalarUDF {
        let mut signature = inner.signature().clone();
        signature.volatility = Volatility::Volatile;
        ScalarUDF::new_from_impl(Bounded {
            signature,
            growth: growth(inner.name()),
            inner: inner.clone(),
            cap,
        })
    }

    fn imp(&self) -> &Arc<dyn ScalarUDFImpl> {
        self.inner.inner()
    }

    /// An upper bound of the bytes this call produces.
    fn bound(&self, args: &ScalarFunctionArgs) -> u128 {
        // A constant result is repeated over the batch by a projection.
        let rows = args.number_rows.max(1) as u128;
        // A fixed-width result (`length`, `strpos`, `ascii`, …) is at most
        // a few bytes a row, whatever its input.
        if let Some(w) = args.return_type().primitive_width() {
            return rows.saturating_mul(w as u128);
        }
        if matches!(args.return_type(), DataType::Boolean | DataType::Null) {
            return rows;
        }
        let a = &args.args;
        let total = |i: usize| a.get(i).map_or(0, |v| bytes(v, rows));
        let per_row_max = |i: usize| a.get(i).map_or(0, max_len);
        let count = |i: usize| a.get(i).map_or(0, |v| int_sum(v, rows));
        match self.growth {
            Growth::Linear(f) => u128::from(f) * a.iter().map(|v| bytes(v, rows)).sum::<u128>(),
            Growth::Repeat => {
                // Σ len_i · n_i ≤ (max len) · (Σ n_i), and ≤ (Σ len) · (max n).
                let by_count = per_row_max(0).saturating_mul(count(1));
                let by_len = total(0).saturating_mul(a.get(1).map_or(0, int_max));
                by_count.min(by_len).max(total(0))
            }
            Growth::Pad => {
                // n characters (at most 4 bytes each) or n list elements of
                // at most the widest element.
                let elem = per_row_max(2).max(per_row_max(0)).clamp(4, 1 << 20);
                count(1).saturating_mul(elem).saturating_add(total(0))
            }
            Growth::Range => range_len(a, rows).saturating_mul(16),
            Growth::Replace => {
                let to = per_row_max(2).max(1);
                // Every byte of the text, and every gap, may be replaced.
                total(0)
                    .saturating_add(total(0).saturating_add(rows).saturating_mul(to))
                    .saturating_add(total(1))
            }
        }
    }
}

/// Bytes of an argument over `rows` rows.
fn bytes(v: &ColumnarValue, rows: u128) -> u128 {
    match v {
        ColumnarValue::Array(a) => array_bytes(a),
        ColumnarValue::Scalar(s) => scalar_bytes(s).saturating_mul(rows),
    }
}

/// Bytes of one value: the text or bytes themselves, or the value's size.
fn scalar_bytes(s: &ScalarValue) -> u128 {
    match s {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => v.len() as u128,
        ScalarValue::Binary(Some(v))
        | ScalarValue::LargeBinary(Some(v))
        | ScalarValue::BinaryView(Some(v)) => v.len() as u128,
        s if s.is_null() => 0,
        s => s.size() as u128,
    }
}

fn array_bytes(a: &ArrayRef) -> u128 {
    a.to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| a.get_array_memory_size()) as u128
}

/// The largest value of an argument, in bytes.
fn max_len(v: &ColumnarValue) -> u128 {
    match v {
        ColumnarValue::Scalar(s) => scalar_bytes(s),
        ColumnarValue::Array(a) if a.is_empty() => 0,
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().flatten().map(str::len).max(),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().flatten().map(str::len).max(),
            DataType::Utf8View => a.as_string_view().iter().flatten().map(str::len).max(),
            _ => Some(usize::try_from(array_bytes(a) / a.len() as u128).unwrap_or(usize::MAX)),
        }
        .unwrap_or(0) as u128,
    }
}

/// An integer argument as u128 (negative counts are 0).
fn int_of(s: &ScalarValue) -> u128 {
    match s.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) => n.max(0) as u128,
        _ => 0,
    }
}

fn int_array(a: &ArrayRef) -> Option<arrow::array::Int64Array> {
    arrow::compute::cast(a, &DataType::Int64)
        .ok()
        .map(|c| c.as_primitive::<Int64Type>().clone())
}

/// The sum of an integer argument over `rows` rows.
fn int_sum(v: &ColumnarValue, rows: u128) -> u128 {
    match v {
        ColumnarValue::Scalar(s) => int_of(s).saturating_mul(rows),
        ColumnarValue::Array(a) => int_array(a).map_or(0, |a| {
            a.iter()
                .flatten()
                .map(|n| n.max(0) as u128)
                .fold(0u128, u128::saturating_add)
        }),
    }
}

/// The largest value of an integer argument.
fn int_max(v: &ColumnarValue) -> u128 {
    match v {
        ColumnarValue::Scalar(s) => int_of(s),
        ColumnarValue::Array(a) => int_array(a).map_or(0, |a| {
            a.iter()
                .flatten()
                .map(|n| n.max(0) as u128)
                .max()
                .unwrap_or(0)
        }),
    }
}

/// Elements `range(start, stop, step)` yields over `rows` rows (an upper
/// bound): the span divided by the step, each as i128 nanoseconds or units.
fn range_len(a: &[ColumnarValue], rows: u128) -> u128 {
    // range(stop) counts from 0.
    let (start, stop, step) = match a.len() {
        1 => (None, &a[0], None),
        2 => (Some(&a[0]), &a[1], None),
        _ => (Some(&a[0]), &a[1], a.get(2)),
    };
    let n = a.iter().fold(1usize, |n, v| match v {
        ColumnarValue::Array(arr) => n.max(arr.len()),
        ColumnarValue::Scalar(_) => n,
    });
    let mut total = 0u128;
    for i in 0..n {
        let s = start.map_or(Some(0), |v| unit_at(v, i));
        let e = unit_at(stop, i);
        let st = step.map_or(Some(1), |v| step_at(v, i));
        let (Some(s), Some(e), Some(st)) = (s, e, st) else {
            continue;
        };
        let span = (e - s).unsigned_abs();
        let st = st.unsigned_abs().max(1);
        total = total.saturating_add(span / st + 1);
    }
    if a.iter().all(|v| matches!(v, ColumnarValue::Scalar(_))) {
        total = total.saturating_mul(rows);
    }
    total
}

fn scalar_at(v: &ColumnarValue, i: usize) -> Option<ScalarValue> {
    match v {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) if i < a.len() => ScalarValue::try_from_array(a, i).ok(),
        ColumnarValue::Array(_) => None,
    }
}

/// An integer, date (in nanoseconds) or timestamp (in nanoseconds).
fn unit_at(v: &ColumnarValue, i: usize) -> Option<i128> {
    let s = scalar_at(v, i)?;
    let nanos_per = match s.data_type() {
        DataType::Date32 => 86_400_000_000_000i128,
        DataType::Date64 => 1_000_000,
        DataType::Timestamp(u, _) => match u {
            arrow::datatypes::TimeUnit::Second => 1_000_000_000,
            arrow::datatypes::TimeUnit::Millisecond => 1_000_000,
            arrow::datatypes::TimeUnit::Microsecond => 1_000,
            arrow::datatypes::TimeUnit::Nanosecond => 1,
        },
        _ => 1,
    };
    let raw = match s.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
            let t = match s.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) => n,
                _ => return None,
            };
            t as i128
        }
        _ => match s.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) => n as i128,
            _ => return None,
        },
    };
    Some(raw * nanos_per)
}

/// A step: an integer, or an interval in nanoseconds (a month counts as 28
/// days, the shortest, so the bound stays an upper bound).
fn step_at(v: &ColumnarValue, i: usize) -> Option<i128> {
    let s = scalar_at(v, i)?;
    Some(match s {
        ScalarValue::IntervalYearMonth(Some(m)) => m as i128 * 28 * 86_400_000_000_000,
        ScalarValue::IntervalDayTime(Some(d)) => {
            d.days as i128 * 86_400_000_000_000 + d.milliseconds as i128 * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(Some(d)) => {
            d.months as i128 * 28 * 86_400_000_000_000
                + d.days as i128 * 86_400_000_000_000
                + d.nanoseconds as i128
        }
        other
            if matches!(
                other.data_type(),
                DataType::Interval(IntervalUnit::YearMonth)
            ) =>
        {
            return None
        }
        other => match other.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) => n as i128,
            _ => return None,
        },
    })
}

fn mib(b: u128) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.imp().name()
    }

    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.imp().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.imp().return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[allow(deprecated)]
        self.imp().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.imp().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bound = self.bound(&args);
        if bound > self.cap as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}(…) would produce up to {} for {} rows, above the limit of {} per call \
                 (api.max_function_output_mb)",
                self.name(),
                mib(bound),
                args.number_rows,
                mib(self.cap as u128)
            )));
        }
        self.imp().invoke_with_args(args)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.imp()
            .with_updated_config(config)
            .map(|u| Bounded::wrap(&u, self.cap))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.imp().simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.imp().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.imp().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.imp().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.imp().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.imp().propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.imp().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.imp().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.imp().placement(args)
    }
}

/// The functions an API session bounds: every text, binary and list
/// function DataFusion registers.
fn bounded_names() -> Vec<String> {
    let mut fns = datafusion::functions::string::functions();
    fns.extend(datafusion::functions::unicode::functions());
    fns.extend(datafusion::functions::regex::functions());
    fns.extend(datafusion::functions::encoding::functions());
    fns.extend(datafusion::functions_nested::all_default_nested_functions());
    fns.iter().map(|f| f.name().to_string()).collect()
}

/// The volatility of `f` as the function it computes: a [`Bounded`]
/// wrapper's own signature says volatile (so it is not folded at planning
/// time), but it computes its inner function.
pub fn volatility(f: &ScalarUDF) -> Volatility {
    match f.inner().downcast_ref::<Bounded>() {
        Some(b) => b.inner.signature().volatility,
        None => f.signature().volatility,
    }
}

/// Replace the text, binary and list functions of a session being built by
/// bounded ones (output at most `cap` bytes per call).
pub fn bound_functions(builder: &mut SessionStateBuilder, cap: usize) {
    let names = bounded_names();
    if let Some(udfs) = builder.scalar_functions() {
        for f in udfs.iter_mut() {
            if names.iter().any(|n| n == f.name()) {
                *f = Arc::new(Bounded::wrap(f, cap));
            }
        }
    }
}
