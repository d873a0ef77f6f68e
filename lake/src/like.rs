//! `LIKE` patterns with a `%` inside, matched without a regular expression.
//!
//! Arrow matches `LIKE 'abc'`, `'abc%'`, `'%abc'` and `'%abc%'` with plain
//! comparisons and memchr's substring search, but compiles every other
//! pattern into a regular expression and runs it on each row. Over 10 M
//! events `page_url LIKE '%/products/%ear%'` took 461 ms through the query
//! API against DuckDB's 61 ms (BENCHMARKS.md, Q18). A pattern whose only
//! wildcard is `%` needs no regular expression: its pieces between the
//! `%`s must appear in order without overlapping, the first at the very
//! start unless the pattern begins with `%` and the last at the very end
//! unless it ends with one. Taking each middle piece at its leftmost
//! occurrence leaves the most room for the pieces after it, so that
//! greedy search finds a match exactly when one exists.
//!
//! [`PiecesLike`], an analyzer rule after type coercion, replaces each such
//! `LIKE` / `NOT LIKE` with a function of the same meaning and the same
//! column name. Patterns with `_`, a backslash escape, an `ESCAPE` clause
//! or `ILIKE` are left to arrow, as are patterns arrow already matches
//! without a regular expression. In a `WHERE` clause a pattern that starts
//! with text also keeps `LIKE 'text%'` beside the function, so the file
//! and page statistics still prune by that prefix.

use std::cell::OnceCell;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, Like, ScalarFunction};
use datafusion::logical_expr::utils::{conjunction, split_conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    ColumnarValue, Expr, Filter, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use memchr::memmem::Finder;

/// The analyzer rule (module docs).
#[derive(Debug)]
pub struct PiecesLike {
    like: Arc<ScalarUDF>,
    not_like: Arc<ScalarUDF>,
}

impl Default for PiecesLike {
    fn default() -> Self {
        Self {
            like: Arc::new(ScalarUDF::new_from_impl(LikePieces::new(false))),
            not_like: Arc::new(ScalarUDF::new_from_impl(LikePieces::new(true))),
        }
    }
}

impl AnalyzerRule for PiecesLike {
    fn name(&self) -> &str {
        "crow_like_pieces"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let node = match node {
                LogicalPlan::Filter(filter) => keep_prefixes(filter)?,
                node => Transformed::no(node),
            };
            node.transform_data(|node| {
                node.map_expressions(|e| e.transform_up(|e| self.rewrite(e)))
            })
        })
        .map(|t| t.data)
    }
}

impl PiecesLike {
    fn rewrite(&self, e: Expr) -> Result<Transformed<Expr>> {
        let Expr::Like(like) = e else {
            return Ok(Transformed::no(e));
        };
        if pieces_pattern(&like).is_none() {
            return Ok(Transformed::no(Expr::Like(like)));
        }
        let udf = if like.negated {
            &self.not_like
        } else {
            &self.like
        };
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), vec![*like.expr, *like.pattern]),
        )))
    }
}

/// The pattern of a `LIKE` this module matches: a string constant whose
/// only wildcard is `%`, at least one of them between two characters, so
/// that arrow would have compiled a regular expression.
fn pieces_pattern(like: &Like) -> Option<&str> {
    if like.case_insensitive || like.escape_char.is_some() {
        return None;
    }
    let pattern = constant_text(&like.pattern)?;
    if pattern.contains(['_', '\\']) {
        return None;
    }
    let inner = pattern.strip_prefix('%').unwrap_or(pattern);
    let inner = inner.strip_suffix('%').unwrap_or(inner);
    inner.contains('%').then_some(pattern)
}

/// The text of a string constant, also through a cast between string
/// types (type coercion casts a `Utf8` pattern to the column's type).
fn constant_text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten(),
        Expr::Cast(Cast { expr, field }) if is_text(field.data_type()) => constant_text(expr),
        _ => None,
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The same constant expression with other text (same type, same casts).
fn with_text(e: &Expr, text: String) -> Option<Expr> {
    match e {
        Expr::Literal(v, meta) => {
            let v = match v {
                ScalarValue::Utf8(_) => ScalarValue::Utf8(Some(text)),
                ScalarValue::LargeUtf8(_) => ScalarValue::LargeUtf8(Some(text)),
                ScalarValue::Utf8View(_) => ScalarValue::Utf8View(Some(text)),
                _ => return None,
            };
            Some(Expr::Literal(v, meta.clone()))
        }
        Expr::Cast(Cast { expr, field }) => Some(Expr::Cast(Cast::new_from_field(
            Box::new(with_text(expr, text)?),
            field.clone(),
        ))),
        _ => None,
    }
}

/// A filter whose conjuncts include `column LIKE 'text%…'` (a pattern this
/// module matches, starting with text) also gets `column LIKE 'text%'`,
/// which arrow matches as a prefix and the statistics can prune by. Only
/// for a column (or a cast of one): any other expression would be
/// evaluated twice, which changes the answer of a volatile one. The
/// prefixes come after the conjuncts as written, so a guard written first
/// still runs first.
fn keep_prefixes(filter: Filter) -> Result<Transformed<LogicalPlan>> {
    let prefixes: Vec<Expr> = split_conjunction(&filter.predicate)
        .into_iter()
        .filter_map(prefix_of)
        .collect();
    if prefixes.is_empty() {
        return Ok(Transformed::no(LogicalPlan::Filter(filter)));
    }
    let conjuncts = split_conjunction_owned(filter.predicate);
    let Some(predicate) = conjunction(conjuncts.into_iter().chain(prefixes)) else {
        return Err(DataFusionError::Internal(
            "a filter with conjuncts has a predicate".into(),
        ));
    };
    Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
        predicate,
        filter.input,
    )?)))
}

/// `column LIKE 'text%'` for a conjunct `column LIKE 'text%…'` that this
/// module matches.
fn prefix_of(conjunct: &Expr) -> Option<Expr> {
    let Expr::Like(like) = conjunct else {
        return None;
    };
    if like.negated || !is_column(&like.expr) {
        return None;
    }
    let prefix = pieces_pattern(like)?.split('%').next().unwrap_or_default();
    if prefix.is_empty() {
        return None;
    }
    let pattern = with_text(&like.pattern, format!("{prefix}%"))?;
    Some(Expr::Like(Like::new(
        false,
        like.expr.clone(),
        Box::new(pattern),
        None,
        false,
    )))
}

fn is_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Cast(Cast { expr, .. }) => is_column(expr),
        _ => false,
    }
}

/// `LIKE` (or `NOT LIKE`) with a `%`-only pattern: `f(value, pattern)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LikePieces {
    negated: bool,
    signature: Signature,
}

impl LikePieces {
    fn new(negated: bool) -> Self {
        Self {
            negated,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LikePieces {
    fn name(&self) -> &str {
        if self.negated {
            "not_like"
        } else {
            "like"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        // The name the `LIKE` had, so result columns keep it.
        let [value, pattern] = args else {
            return Ok(self.name().to_string());
        };
        let like = Like::new(
            self.negated,
            Box::new(value.clone()),
            Box::new(pattern.clone()),
            None,
            false,
        );
        Ok(Expr::Like(like).schema_name().to_string())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // Null exactly where `LIKE` is: when the value or pattern is.
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Boolean,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return Err(DataFusionError::Internal("LIKE takes two arguments".into()));
        };
        let ColumnarValue::Scalar(pattern) = pattern else {
            return Err(DataFusionError::Internal(
                "the LIKE pattern must be a constant".into(),
            ));
        };
        let Some(text) = pattern.try_as_str() else {
            return Err(DataFusionError::Internal(format!(
                "the LIKE pattern must be text, not {}",
                pattern.data_type()
            )));
        };
        let Some(text) = text else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let pieces = Pieces::new(text);
        match value {
            ColumnarValue::Scalar(v) => {
                let out = v
                    .try_as_str()
                    .flatten()
                    .map(|s| pieces.matches(s.as_bytes()) != self.negated);
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(out)))
            }
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(self.matches(a, &pieces, pattern)?)),
        }
    }
}

impl LikePieces {
    fn matches(&self, a: &ArrayRef, pieces: &Pieces, pattern: &ScalarValue) -> Result<ArrayRef> {
        let flip = self.negated;
        let values = match a.data_type() {
            DataType::Utf8 => {
                let a = a.as_string::<i32>();
                BooleanBuffer::collect_bool(a.len(), |i| {
                    pieces.matches(a.value(i).as_bytes()) != flip
                })
            }
            DataType::LargeUtf8 => {
                let a = a.as_string::<i64>();
                BooleanBuffer::collect_bool(a.len(), |i| {
                    pieces.matches(a.value(i).as_bytes()) != flip
                })
            }
            DataType::Utf8View => {
                // Parquet's dictionary pages decode into views that repeat
                // (one view per dictionary entry): match each view once.
                let a = a.as_string_view();
                let views = a.views();
                let mut memo = ViewMemo::default();
                BooleanBuffer::collect_bool(a.len(), |i| {
                    memo.get_or(views[i], || pieces.matches(a.value(i).as_bytes())) != flip
                })
            }
            _ => {
                // Any other type LIKE accepts (a dictionary of text):
                // arrow's own kernel, as before the rewrite.
                let pattern = pattern.to_scalar()?;
                let out = if flip {
                    arrow::compute::kernels::comparison::nlike(a, &pattern)?
                } else {
                    arrow::compute::kernels::comparison::like(a, &pattern)?
                };
                return Ok(Arc::new(out));
            }
        };
        Ok(Arc::new(BooleanArray::new(values, a.logical_nulls())))
    }
}

/// The answers for the views of one batch, direct-mapped by a hash of the
/// view. Two equal views are equal strings: a view holds the length and
/// either the whole string (up to 12 bytes) or its first four bytes, buffer
/// and offset. A page of `page_url` over a handful of pages then costs a
/// handful of matches; views that never repeat cost one slot check each.
struct ViewMemo {
    views: [u128; 256],
    answers: [u8; 256],
}

impl Default for ViewMemo {
    fn default() -> Self {
        Self {
            views: [0; 256],
            answers: [EMPTY; 256],
        }
    }
}

const EMPTY: u8 = 2;

impl ViewMemo {
    fn get_or(&mut self, view: u128, answer: impl FnOnce() -> bool) -> bool {
        let mixed = (view as u64) ^ ((view >> 64) as u64);
        let slot = (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        if self.answers[slot] != EMPTY && self.views[slot] == view {
            return self.answers[slot] == 1;
        }
        let a = answer();
        self.views[slot] = view;
        self.answers[slot] = u8::from(a);
        a
    }
}

/// A `%`-only pattern split at its `%`s. The first [`KEPT_SEARCHERS`]
/// middle pieces each get a searcher, built when a value first gets that
/// far; the pieces after them are found by their text, one search each,
/// when a value gets to them. Making one costs the length of its first and
/// last pieces and of the first middle ones, not of the whole pattern: the
/// query API cuts the batches of a query with a large literal to a few rows
/// ([`datafusion`] calls the function once per batch), and a 20,000-piece
/// pattern split whole for every batch of 56 rows never finished.
struct Pieces<'a> {
    first: &'a [u8],
    kept: Vec<(&'a [u8], OnceCell<Finder<'a>>)>,
    /// The middle pieces after the kept ones, still joined by `%`.
    rest: &'a [u8],
    last: &'a [u8],
}

/// Middle pieces of a pattern whose searchers are kept for a batch.
const KEPT_SEARCHERS: usize = 16;

/// The next non-empty piece of `rest` (pieces joined by `%`) and what
/// follows it; `None` when only empty pieces are left.
fn next_piece(mut rest: &[u8]) -> Option<(&[u8], &[u8])> {
    while !rest.is_empty() {
        let (piece, after) = match memchr::memchr(b'%', rest) {
            Some(k) => (&rest[..k], &rest[k + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if !piece.is_empty() {
            return Some((piece, after));
        }
        rest = after;
    }
    None
}

impl<'a> Pieces<'a> {
    fn new(pattern: &'a str) -> Self {
        Self::keeping(pattern, KEPT_SEARCHERS)
    }

    /// The pieces of `pattern`, a searcher kept for the first `searchers`
    /// middle ones.
    fn keeping(pattern: &'a str, searchers: usize) -> Self {
        let p = pattern.as_bytes();
        // With no `%` at all the pattern is one piece that must equal the
        // whole value; the rule never sends such a pattern here.
        let (Some(i), Some(j)) = (memchr::memchr(b'%', p), memchr::memrchr(b'%', p)) else {
            return Self {
                first: p,
                kept: Vec::new(),
                rest: &[],
                last: &[],
            };
        };
        let mut rest = if i < j { &p[i + 1..j] } else { &[][..] };
        let mut kept = Vec::new();
        while kept.len() < searchers {
            let Some((piece, after)) = next_piece(rest) else {
                rest = &[];
                break;
            };
            kept.push((piece, OnceCell::new()));
            rest = after;
        }
        Self {
            first: &p[..i],
            kept,
            rest,
            last: &p[j + 1..],
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        if s.len() < self.first.len() + self.last.len()
            || !s.starts_with(self.first)
            || !s.ends_with(self.last)
        {
            return false;
        }
        let end = s.len() - self.last.len();
        let mut at = self.first.len();
        for (piece, finder) in &self.kept {
            match finder.get_or_init(|| Finder::new(*piece)).find(&s[at..end]) {
                Some(i) => at += i + piece.len(),
                None => return false,
            }
        }
        let mut rest = self.rest;
        while let Some((piece, after)) = next_piece(rest) {
            match memchr::memmem::find(&s[at..end], piece) {
                Some(i) => at += i + piece.len(),
                None => return false,
            }
            rest = after;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, StringViewArray, StringViewBuilder};
    use arrow::record_batch::RecordBatch;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// Every string of up to `n` characters over `alphabet`.
    fn words(alphabet: &[char], n: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..n {
            last = last
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn pieces_agree_with_arrows_like_on_every_short_pattern_and_value() {
        // Patterns over {a, b, %} up to 5 characters, values over {a, b, c}
        // up to 5 (364 values): every pattern arrow would compile into a
        // regular expression gives the same answer from the pieces.
        let values = words(&['a', 'b', 'c'], 5);
        let array = StringArray::from(values.clone());
        // The values three times over, each string stored once: its views
        // repeat (longer strings than 12 bytes too, with a common prefix).
        let mut builder = StringViewBuilder::new().with_deduplicate_strings();
        for _ in 0..3 {
            for v in &values {
                builder.append_value(v);
                builder.append_value(v.repeat(4));
            }
        }
        let repeated: ArrayRef = Arc::new(builder.finish());
        let mut checked = 0;
        for pattern in words(&['a', 'b', '%'], 5) {
            let like = Like::new(
                false,
                Box::new(Expr::Literal(ScalarValue::Utf8(None), None)),
                Box::new(Expr::Literal(
                    ScalarValue::Utf8(Some(pattern.clone())),
                    None,
                )),
                None,
                false,
            );
            if pieces_pattern(&like).is_none() {
                continue;
            }
            let expected = arrow::compute::kernels::comparison::like(
                &array,
                &StringArray::new_scalar(pattern.as_str()),
            )
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
            // With searchers kept for every middle piece, for the first
            // only, and for none (the pieces past the kept ones of a long
            // pattern are found by their text).
            for searchers in [KEPT_SEARCHERS, 1, 0] {
                let pieces = Pieces::keeping(&pattern, searchers);
                for (i, v) in values.iter().enumerate() {
                    assert_eq!(
                        pieces.matches(v.as_bytes()),
                        expected.value(i),
                        "{v:?} LIKE {pattern:?} ({searchers} searchers)"
                    );
                }
            }
            let pieces = Pieces::new(&pattern);
            // The same through the function on views that repeat, as a
            // dictionary page decodes, and on the negation.
            let scalar = ScalarValue::Utf8View(Some(pattern.clone()));
            let want = arrow::compute::kernels::comparison::like(
                &repeated,
                &StringViewArray::new_scalar(pattern.as_str()),
            )
            .unwrap_or_else(|e| panic!("{pattern}: {e}"));
            for negated in [false, true] {
                let got = LikePieces::new(negated)
                    .matches(&repeated, &pieces, &scalar)
                    .expect("matches");
                let got = got.as_boolean();
                for i in 0..got.len() {
                    let v = repeated.as_string_view().value(i);
                    assert_eq!(
                        got.value(i),
                        want.value(i) != negated,
                        "{v:?} LIKE {pattern:?} (negated: {negated})"
                    );
                }
            }
            checked += 1;
        }
        // a%b, %a%b, a%b%, %a%b%, a%%b, ... — not a handful.
        assert!(checked > 100, "only {checked} patterns were checked");
    }

    /// A pattern of 20,000 pieces: made without splitting it whole (only
    /// the first pieces are kept apart), and matched through the pieces
    /// after them, in order.
    #[test]
    fn a_long_pattern_is_matched_past_its_kept_searchers() {
        let pieces: Vec<String> = (0..20_000).map(|i| format!("p{i}")).collect();
        let pattern = format!("start%{}%end", pieces.join("%%"));
        let p = Pieces::new(&pattern);
        assert_eq!(p.kept.len(), KEPT_SEARCHERS);
        let all = format!("start-{}-end", pieces.join("-"));
        assert!(p.matches(all.as_bytes()));
        // The last middle piece missing, or two pieces out of order.
        let short = format!("start-{}-end", pieces[..19_999].join("-"));
        assert!(!p.matches(short.as_bytes()));
        let mut swapped = pieces.clone();
        swapped.swap(10_000, 10_001);
        assert!(!p.matches(format!("start-{}-end", swapped.join("-")).as_bytes()));
        // A piece may only be found after the one before it ends.
        let p = Pieces::keeping("%ab%ba%", 0);
        assert!(!p.matches(b"aba"));
        assert!(p.matches(b"abba"));
    }

    #[test]
    fn only_regex_patterns_are_taken() {
        let like = |p: &str, ci: bool, esc: Option<char>| {
            Like::new(
                false,
                Box::new(Expr::Literal(ScalarValue::Utf8(None), None)),
                Box::new(Expr::Literal(ScalarValue::Utf8(Some(p.into())), None)),
                esc,
                ci,
            )
        };
        for taken in [
            "%a%b%",
            "a%b",
            "%/products/%ear%",
            "a%%",
            "%%a",
            "https://x/%/p%",
        ] {
            assert!(
                pieces_pattern(&like(taken, false, None)).is_some(),
                "{taken}"
            );
        }
        for left in [
            "abc", "abc%", "%abc", "%abc%", "%", "%%", "a_b%c", "a\\%b%c", "",
        ] {
            assert!(pieces_pattern(&like(left, false, None)).is_none(), "{left}");
        }
        assert!(pieces_pattern(&like("a%b", true, None)).is_none(), "ILIKE");
        assert!(
            pieces_pattern(&like("a%b", false, Some('!'))).is_none(),
            "ESCAPE"
        );
    }

    /// The column names, the rows (pretty-printed) and the physical plan
    /// of `sql` over a small table of URLs, with or without the rule.
    async fn answer(rule: bool, sql: &str) -> (Vec<String>, String, String) {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if rule {
            builder = builder.with_analyzer_rule(Arc::new(PiecesLike::default()));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let urls: Vec<Option<&str>> = vec![
            Some("https://shop.example/products/earbuds"),
            Some("https://shop.example/products/bear"),
            Some("https://shop.example/products/shoes"),
            Some("https://shop.example/cart/earbuds"),
            None,
            Some("https://other.example/products/year"),
            Some(""),
        ];
        let batch = RecordBatch::try_from_iter([
            (
                "url",
                Arc::new(StringViewArray::from(urls.clone())) as ArrayRef,
            ),
            ("u8", Arc::new(StringArray::from(urls)) as ArrayRef),
        ])
        .expect("batch");
        ctx.register_batch("t", batch).expect("register");
        let show = |rows: &[RecordBatch]| {
            arrow::util::pretty::pretty_format_batches(rows)
                .expect("format")
                .to_string()
        };
        let df = ctx.sql(sql).await.expect("plan");
        let names = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows = show(&df.collect().await.expect("rows"));
        let explain = ctx.sql(&format!("EXPLAIN {sql}")).await.expect("explain");
        let plan = show(&explain.collect().await.expect("explain rows"));
        (names, rows, plan)
    }

    /// `sql` answers the same, under the same column names, with the rule
    /// as without it; the plan with the rule.
    async fn same(sql: &str) -> (String, String) {
        let (names, rows, plan) = answer(true, sql).await;
        let (names_before, rows_before, _) = answer(false, sql).await;
        assert_eq!(names, names_before, "column names of {sql}");
        assert_eq!(rows, rows_before, "rows of {sql}");
        (rows, plan)
    }

    #[tokio::test]
    async fn rewritten_queries_answer_as_arrows_like() {
        let (rows, plan) = same(
            "SELECT url, url LIKE '%/products/%ear%', url NOT LIKE '%/products/%ear%', \
             u8 LIKE 'https://%ear%', url LIKE NULL FROM t ORDER BY url",
        )
        .await;
        assert!(
            rows.contains("url LIKE Utf8(\"%/products/%ear%\")"),
            "{rows}"
        );
        assert!(
            rows.contains("url NOT LIKE Utf8(\"%/products/%ear%\")"),
            "{rows}"
        );
        assert!(
            plan.contains("not_like(") && plan.contains(" like("),
            "{plan}"
        );

        let (rows, plan) =
            same("SELECT url FROM t WHERE url LIKE '%/products/%ear%' ORDER BY url").await;
        for hit in ["products/bear", "products/earbuds", "products/year"] {
            assert!(rows.contains(hit), "{hit} in {rows}");
        }
        for miss in ["cart/earbuds", "shoes"] {
            assert!(!rows.contains(miss), "{miss} in {rows}");
        }
        assert!(!plan.contains(" LIKE "), "arrow's LIKE is gone: {plan}");

        // A pattern that starts with text keeps that prefix as a LIKE the
        // statistics can prune by.
        let (_, plan) =
            same("SELECT url FROM t WHERE url LIKE 'https://shop%/products/%' ORDER BY url").await;
        assert!(plan.contains("LIKE https://shop%"), "{plan}");

        for sql in [
            "SELECT url FROM t WHERE url NOT LIKE '%/products/%ear%' ORDER BY url",
            "SELECT u8 FROM t WHERE u8 LIKE 'https://shop%ear%' AND u8 <> '' ORDER BY u8",
            "SELECT count(*) FROM t WHERE url LIKE '%/cart/%ear%' OR url LIKE '%z%y%'",
            "SELECT count(*) FROM t WHERE url IN (SELECT url FROM t WHERE url LIKE '%shop%shoes')",
            "SELECT url LIKE u8 FROM t ORDER BY url",
        ] {
            same(sql).await;
        }
    }
}
