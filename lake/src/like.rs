//! `LIKE` patterns with inner `%`s, matched by substring search instead of
//! a regular expression.
//!
//! Arrow's `LIKE` kernel matches `abc`, `abc%`, `%abc` and `%abc%` with
//! string comparisons and a substring finder, but turns every other pattern
//! — `%/products/%ear%`, `https://%/checkout%` — into a regular expression,
//! compiled again for every batch and run on every row. An analyst's URL
//! filters are mostly of that second kind. Such a pattern, when `%` is its
//! only wildcard (no `_`, no escape), means: starts with the first piece,
//! then contains each middle piece in order, then ends with the last piece.
//! An analyzer rule ([`FastLike`]) replaces those `LIKE`s, and their `NOT
//! LIKE`s, with [`OrderedPieces`], which searches the pieces left to right
//! with SIMD substring finders built once per batch. Same answers (nulls
//! stay null), same column names, and a `LIKE` this does not cover (`_`,
//! escapes, `ILIKE`, a pattern from a column) is left to Arrow.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use memchr::memmem::Finder;

/// A `%`-only `LIKE` pattern split at its `%`s: `first%middle…%last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    first: String,
    middle: Vec<String>,
    last: String,
}

impl Pieces {
    /// The pieces of `pattern` when it is worth matching this way: `%` is
    /// its only wildcard (no `_`, no `\` escape) and it has a `%` between
    /// two other characters — the patterns Arrow would run as a regular
    /// expression. `None` otherwise.
    pub fn of(pattern: &str) -> Option<Self> {
        if pattern.contains(['_', '\\']) {
            return None;
        }
        let inner = pattern.strip_prefix('%').unwrap_or(pattern);
        let inner = inner.strip_suffix('%').unwrap_or(inner);
        if !inner.contains('%') {
            return None;
        }
        let mut parts: Vec<&str> = pattern.split('%').collect();
        let last = parts.pop().unwrap_or_default().to_string();
        let first = if parts.is_empty() {
            String::new()
        } else {
            parts.remove(0).to_string()
        };
        let middle = parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        Some(Self {
            first,
            middle,
            last,
        })
    }

    /// Whether `s` matches: the first piece at the start, each middle piece
    /// after the one before (leftmost), the last piece at the end after all
    /// of them. Bytes, not characters: the pieces are whole UTF-8 text, so
    /// a match never starts inside a character.
    fn matches(&self, s: &[u8], finders: &[Finder<'_>]) -> bool {
        if !s.starts_with(self.first.as_bytes()) {
            return false;
        }
        let mut at = self.first.len();
        for f in finders {
            match f.find(&s[at..]) {
                Some(i) => at += i + f.needle().len(),
                None => return false,
            }
        }
        s.len() - at >= self.last.len() && s.ends_with(self.last.as_bytes())
    }
}

/// `text LIKE pattern` (or `NOT LIKE`) for a pattern of [`Pieces`]: the
/// function an analyzer rule puts in place of such a `LIKE`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct OrderedPieces {
    negated: bool,
    signature: Signature,
}

impl OrderedPieces {
    fn new(negated: bool) -> Self {
        Self {
            negated,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for OrderedPieces {
    fn name(&self) -> &str {
        if self.negated {
            "not like"
        } else {
            "like"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        // The name the `LIKE` had, so result columns keep it.
        match args {
            [e, p] => Ok(format!(
                "{} {}LIKE {}",
                e.schema_name(),
                if self.negated { "NOT " } else { "" },
                p.schema_name()
            )),
            _ => Ok(self.name().to_string()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [text, pattern] = args.args.as_slice() else {
            return Err(DataFusionError::Internal("LIKE takes two arguments".into()));
        };
        let pattern = match pattern {
            ColumnarValue::Scalar(p) => p.try_as_str().flatten().map(str::to_string),
            ColumnarValue::Array(_) => None,
        };
        let pieces = pattern.as_deref().and_then(Pieces::of).ok_or_else(|| {
            DataFusionError::Internal("LIKE's pattern changed after planning".into())
        })?;
        let finders: Vec<Finder<'_>> = pieces
            .middle
            .iter()
            .map(|m| Finder::new(m.as_bytes()))
            .collect();
        let test = |s: &str| pieces.matches(s.as_bytes(), &finders) != self.negated;
        let out = match text {
            ColumnarValue::Scalar(s) => {
                let v = s.try_as_str().ok_or_else(|| {
                    DataFusionError::Internal(format!("LIKE on {}", s.data_type()))
                })?;
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(v.map(test))));
            }
            ColumnarValue::Array(a) => like_array(a, &test)?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn like_array(a: &ArrayRef, test: &dyn Fn(&str) -> bool) -> Result<ArrayRef> {
    let out: BooleanArray = match a.data_type() {
        DataType::Utf8View => a.as_string_view().iter().map(|v| v.map(test)).collect(),
        DataType::Utf8 => a.as_string::<i32>().iter().map(|v| v.map(test)).collect(),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().map(|v| v.map(test)).collect(),
        t => return Err(DataFusionError::Internal(format!("LIKE on {t}"))),
    };
    Ok(Arc::new(out))
}

/// Replaces each `LIKE` / `NOT LIKE` on text with a literal [`Pieces`]
/// pattern by [`OrderedPieces`] (after type coercion: the pattern is a
/// literal of the text's type by then).
#[derive(Debug)]
pub struct FastLike {
    like: Arc<ScalarUDF>,
    not_like: Arc<ScalarUDF>,
}

impl Default for FastLike {
    fn default() -> Self {
        Self {
            like: Arc::new(ScalarUDF::new_from_impl(OrderedPieces::new(false))),
            not_like: Arc::new(ScalarUDF::new_from_impl(OrderedPieces::new(true))),
        }
    }
}

impl AnalyzerRule for FastLike {
    fn name(&self) -> &str {
        "crow_fast_like"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Like(Like {
                        negated,
                        expr,
                        pattern,
                        escape_char: None,
                        case_insensitive: false,
                    }) => match literal_pieces(&pattern) {
                        Some(literal) => {
                            let udf = if negated { &self.not_like } else { &self.like };
                            Ok(Transformed::yes(Expr::ScalarFunction(
                                ScalarFunction::new_udf(udf.clone(), vec![*expr, literal]),
                            )))
                        }
                        None => Ok(Transformed::no(Expr::Like(Like {
                            negated,
                            expr,
                            pattern,
                            escape_char: None,
                            case_insensitive: false,
                        }))),
                    },
                    e => Ok(Transformed::no(e)),
                })
            })
        })
        .map(|t| t.data)
    }
}

/// The literal pattern of a `LIKE` (through the cast type coercion puts
/// around it) when it is of [`Pieces`].
fn literal_pieces(pattern: &Expr) -> Option<Expr> {
    match pattern {
        Expr::Literal(v, _) => v
            .try_as_str()
            .flatten()
            .and_then(Pieces::of)
            .map(|_| pattern.clone()),
        Expr::Cast(c) => literal_pieces(&c.expr),
        Expr::TryCast(c) => literal_pieces(&c.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(pattern: &str, s: &str) -> bool {
        let p = Pieces::of(pattern).expect("pieces");
        let finders: Vec<Finder<'_>> = p.middle.iter().map(|m| Finder::new(m.as_bytes())).collect();
        p.matches(s.as_bytes(), &finders)
    }

    /// The reference: LIKE with `%` as its only wildcard, by definition
    /// (a regular expression, as Arrow builds one).
    fn reference(pattern: &str, s: &str) -> bool {
        let re = format!(
            "(?s)^{}$",
            pattern
                .split('%')
                .map(regex_escape)
                .collect::<Vec<_>>()
                .join(".*")
        );
        regex_lite_match(&re, s)
    }

    fn regex_escape(s: &str) -> String {
        s.chars()
            .map(|c| {
                if "\\.+*?()|[]{}^$#&-~".contains(c) {
                    format!("\\{c}")
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    fn regex_lite_match(re: &str, s: &str) -> bool {
        // A backtracking matcher over `.*` and literals (what `reference`
        // builds): enough for the tests, independent of the code under test.
        fn m(p: &[Tok], s: &[char]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((Tok::Any, rest)) => (0..=s.len()).any(|i| m(rest, &s[i..])),
                Some((Tok::Ch(c), rest)) => s.first() == Some(c) && m(rest, &s[1..]),
            }
        }
        #[derive(Debug)]
        enum Tok {
            Any,
            Ch(char),
        }
        let body = re
            .strip_prefix("(?s)^")
            .and_then(|r| r.strip_suffix('$'))
            .expect("anchored");
        let mut toks = Vec::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => toks.push(Tok::Ch(chars.next().expect("escaped"))),
                '.' if chars.peek() == Some(&'*') => {
                    chars.next();
                    toks.push(Tok::Any);
                }
                c => toks.push(Tok::Ch(c)),
            }
        }
        let s: Vec<char> = s.chars().collect();
        m(&toks, &s)
    }

    #[test]
    fn only_the_patterns_arrow_would_run_as_a_regex() {
        for p in [
            "abc", "abc%", "%abc", "%abc%", "%", "%%", "a_c%d", "a\\%b%c", "",
        ] {
            assert_eq!(Pieces::of(p), None, "{p}");
        }
        for p in ["a%b", "%a%b%", "a%b%", "%a%b", "a%%b", "%/products/%ear%"] {
            assert!(Pieces::of(p).is_some(), "{p}");
        }
    }

    #[test]
    fn matches_as_like_does() {
        let patterns = [
            "%/products/%ear%",
            "a%b",
            "a%b%",
            "%a%b",
            "ab%ba",
            "a%%b",
            "%aa%aa%",
            "héé%ü%",
            "%b%a%",
            "x%y%z",
        ];
        let texts = [
            "",
            "a",
            "ab",
            "aba",
            "abba",
            "ba",
            "aab",
            "abab",
            "aaaa",
            "aaa",
            "héé ü",
            "hé ü",
            "x-y-z",
            "xyz",
            "xzy",
            "https://shop.example/products/wireless-earbuds",
            "https://shop.example/products/speaker",
            "https://shop.example/ear/products/",
        ];
        for p in patterns {
            for s in texts {
                assert_eq!(like(p, s), reference(p, s), "`{s}` LIKE `{p}`");
            }
        }
        // The suffix may not overlap what the middle pieces matched.
        assert!(!like("ab%ba", "aba"));
        assert!(like("ab%ba", "abba"));
        assert!(like(
            "%/products/%ear%",
            "https://x/products/wireless-earbuds"
        ));
        assert!(!like("%/products/%ear%", "https://x/ear/products/"));
    }
}
