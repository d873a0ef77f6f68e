//! Row predicates for writes — the window a replace-where rewrites, the rows
//! a delete removes, a merge's update condition — as DataFusion expressions
//! the caller builds (`col("org_id").eq(lit(org))`), never SQL text spliced
//! together with quotes by hand.
//!
//! delta-rs takes a predicate either as an expression, used as given (no
//! type coercion, and its scans see partition columns as dictionaries), or
//! as SQL text, which it parses and coerces against the table's schema. So
//! [`to_delta_sql`] prints the expression with DataFusion's unparser, which
//! quotes every literal it prints, after turning its date and timestamp
//! literals into the ISO text delta-rs coerces to the column's type. The
//! text is an implementation detail of this crate: callers only build
//! expressions.

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{lit, Expr};

use crate::{Error, Result};

/// A literal comparable with CROW's `DATE` columns.
pub fn date(d: NaiveDate) -> Expr {
    lit(ScalarValue::Date32(Some(
        crow_schemas::time::days_from_date(d),
    )))
}

/// A literal comparable with CROW's timestamp columns (microseconds, UTC).
pub fn timestamp(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some("UTC".into()),
    ))
}

/// `expr` as the SQL text delta-rs parses and coerces (see the module doc).
pub fn to_delta_sql(expr: &Expr) -> Result<String> {
    let invalid = |e: &dyn std::fmt::Display| Error::Invalid(format!("predicate {expr}: {e}"));
    let text_literals = expr
        .clone()
        .transform(|e| {
            let text = match &e {
                Expr::Literal(ScalarValue::Date32(Some(d)), _) => {
                    crow_schemas::time::date_from_days(*d).map(|d| d.format("%Y-%m-%d").to_string())
                }
                Expr::Literal(ScalarValue::TimestampMicrosecond(Some(us), _), _) => {
                    DateTime::<Utc>::from_timestamp_micros(*us)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                }
                _ => None,
            };
            Ok(match text {
                Some(t) => Transformed::yes(lit(t)),
                None => Transformed::no(e),
            })
        })
        .map_err(|e| invalid(&e))?
        .data;
    datafusion::sql::unparser::expr_to_sql(&text_literals)
        .map(|sql| sql.to_string())
        .map_err(|e| invalid(&e))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::col;

    use super::*;

    #[test]
    fn literals_are_quoted_and_temporal_values_printed_as_iso_text() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
        let at = day.and_hms_micro_opt(10, 5, 0, 42).expect("time").and_utc();
        let p = col("session_date")
            .gt_eq(date(day))
            .and(col("started_at").lt(timestamp(at)))
            .and(col("org_id").eq(lit("o'; DROP TABLE x; --")));
        assert_eq!(
            to_delta_sql(&p).expect("sql"),
            "(((session_date >= '2026-11-25') AND (started_at < '2026-11-25T10:05:00.000042Z')) \
             AND (org_id = 'o''; DROP TABLE x; --'))"
        );
    }

    #[test]
    fn lists_and_qualified_columns_print_as_sql() {
        let p = col("target.state").in_list(vec![lit("completed"), lit("failed")], true);
        assert_eq!(
            to_delta_sql(&p).expect("sql"),
            "\"target\".state NOT IN ('completed', 'failed')"
        );
        let day = NaiveDate::from_ymd_opt(1969, 12, 31).expect("date");
        assert_eq!(
            to_delta_sql(&col("d").eq(date(day))).expect("sql"),
            "(d = '1969-12-31')"
        );
    }
}
