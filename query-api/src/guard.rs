//! Limits on a statement's shape, checked on its syntax tree before anything
//! is planned.
//!
//! Planning and running an expression walks it recursively, in DataFusion
//! and in the code around it, so an expression's depth is stack depth. A
//! small request (`1+1+…+1` with thousands of terms, thousands of `or`s) used
//! to overflow a server thread's stack and abort the whole process. The
//! parser bounds nesting of parentheses, but chains of binary operators are
//! parsed in a loop and come out as trees as deep as they are long. So every
//! statement is measured here first — its length, its deepest expression,
//! its widest `IN` list and its number of expressions — and refused with a
//! clear 400 when it is beyond [`Limits`]. The walk stops as soon as a limit
//! is passed, so it never goes deeper than the limit itself.
//!
//! This is one of three layers: the query runtime's threads also have large
//! stacks ([`crate::runtime`]), and a panic in a query fails only that query.

use std::ops::ControlFlow;

use crow_schemas::config::ApiConfig;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, ValueWithSpan, Visit, Visitor};

use crate::error::ApiError;

/// The shape limits of one statement.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest statement, in bytes.
    pub max_sql_bytes: usize,
    /// Deepest expression.
    pub max_depth: usize,
    /// Widest `IN (…)` list.
    pub max_in_list: usize,
    /// Most expressions in the statement.
    pub max_nodes: usize,
}

impl Limits {
    /// The limits configured for the API.
    pub fn from_config(cfg: &ApiConfig) -> Self {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            max_sql_bytes: n(cfg.max_sql_bytes),
            max_depth: n(cfg.max_expression_depth),
            max_in_list: n(cfg.max_in_list),
            max_nodes: n(cfg.max_expression_nodes),
        }
    }
}

/// Refuse `sql` (before parsing) if it is longer than the limit.
pub fn check_length(sql: &str, limits: &Limits) -> Result<(), ApiError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(ApiError::bad_request(
            "query_too_large",
            format!(
                "the statement is {} bytes; at most {} are accepted (api.max_sql_bytes)",
                sql.len(),
                limits.max_sql_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuse a parsed statement whose expressions are beyond `limits`.
pub fn check_statement(stmt: &DFStatement, limits: &Limits) -> Result<(), ApiError> {
    let mut m = Measure {
        limits: *limits,
        depth: 0,
        nodes: 0,
    };
    let flow = match stmt {
        DFStatement::Statement(s) => s.visit(&mut m),
        DFStatement::CopyTo(c) => match &c.source {
            CopyToSource::Query(q) => q.visit(&mut m),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(e) => return check_statement(&e.statement, limits),
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Bytes of all the literals in a statement (text, numbers, …), as written.
///
/// A literal in a projection is repeated once per row of every batch
/// (`select '<500 KB>' from big` builds 500 KB × rows per batch), outside
/// the memory pool; the caller sizes batches so that this stays bounded
/// ([`batch_rows_for`]).
pub fn literal_bytes(stmt: &DFStatement) -> usize {
    struct Sum(usize);
    impl Visitor for Sum {
        type Break = ();
        fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<()> {
            self.0 = self.0.saturating_add(v.value.to_string().len());
            ControlFlow::Continue(())
        }
    }
    let mut sum = Sum(0);
    let _ = match stmt {
        DFStatement::Statement(s) => s.visit(&mut sum),
        DFStatement::CopyTo(c) => match &c.source {
            CopyToSource::Query(q) => q.visit(&mut sum),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(e) => return literal_bytes(&e.statement),
        _ => ControlFlow::Continue(()),
    };
    sum.0
}

/// Rows per batch for a statement whose literals take `literal_bytes`:
/// at most `default_rows`, and few enough that repeating every literal
/// once per row stays within `budget` bytes per batch (at least one row).
pub fn batch_rows_for(literal_bytes: usize, budget: usize, default_rows: usize) -> usize {
    if literal_bytes == 0 {
        return default_rows;
    }
    (budget / literal_bytes).clamp(1, default_rows.max(1))
}

struct Measure {
    limits: Limits,
    depth: usize,
    nodes: usize,
}

impl Measure {
    fn enter(&mut self) -> ControlFlow<ApiError> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > self.limits.max_depth {
            return ControlFlow::Break(ApiError::bad_request(
                "query_too_complex",
                format!(
                    "an expression is nested or chained more than {} levels deep \
                     (api.max_expression_depth); split long chains of operators, \
                     e.g. use IN (…) instead of many ORs",
                    self.limits.max_depth
                ),
            ));
        }
        if self.nodes > self.limits.max_nodes {
            return ControlFlow::Break(ApiError::bad_request(
                "query_too_complex",
                format!(
                    "the statement has more than {} expressions (api.max_expression_nodes)",
                    self.limits.max_nodes
                ),
            ));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Measure {
    type Break = ApiError;

    fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<ApiError> {
        // A subquery nests like an expression.
        self.enter()
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<ApiError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<ApiError> {
        self.enter()?;
        if let Expr::InList { list, .. } = e {
            if list.len() > self.limits.max_in_list {
                return ControlFlow::Break(ApiError::bad_request(
                    "query_too_complex",
                    format!(
                        "an IN list has {} values; at most {} are accepted (api.max_in_list): \
                         join against a table or split the query",
                        list.len(),
                        self.limits.max_in_list
                    ),
                ));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _e: &Expr) -> ControlFlow<ApiError> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParserBuilder;

    fn limits() -> Limits {
        Limits {
            max_sql_bytes: 1 << 20,
            max_depth: 100,
            max_in_list: 1000,
            max_nodes: 5000,
        }
    }

    fn check(sql: &str) -> Result<(), ApiError> {
        check_with(sql, &limits())
    }

    fn check_with(sql: &str, limits: &Limits) -> Result<(), ApiError> {
        check_length(sql, limits)?;
        let mut stmts = DFParserBuilder::new(sql)
            .build()
            .and_then(|mut p| p.parse_statements())
            .expect("parses");
        let s = stmts.pop_front().expect("one statement");
        check_statement(&s, limits)
    }

    fn chain(op: &str, n: usize) -> String {
        vec!["1"; n].join(op)
    }

    #[test]
    fn chains_are_measured_by_length() {
        assert!(check(&format!("select {}", chain("+", 99))).is_ok());
        let e = check(&format!("select {}", chain("+", 101))).expect_err("too deep");
        assert_eq!(e.code, "query_too_complex");
        assert!(e.detail.contains("100 levels"), "{}", e.detail);
        let e = check(&format!("select 1 where {}", chain(" or true or ", 60))).expect_err("ors");
        assert_eq!(e.code, "query_too_complex");
    }

    #[test]
    fn subqueries_count_as_depth() {
        let nest = |n: usize| {
            let mut sql = "select 1".to_string();
            for _ in 0..n {
                sql = format!("select ({sql}) + 1");
            }
            sql
        };
        let shallow = Limits {
            max_depth: 20,
            ..limits()
        };
        // Each level is a query, a `+` and a subquery expression.
        assert!(check_with(&nest(5), &shallow).is_ok());
        assert_eq!(
            check_with(&nest(8), &shallow).expect_err("deep").code,
            "query_too_complex"
        );
    }

    #[test]
    fn in_lists_are_bounded_by_width_not_depth() {
        let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(check(&format!("select 1 where 5 in ({})", list(1000))).is_ok());
        let e = check(&format!("select 1 where 5 in ({})", list(1001))).expect_err("wide");
        assert!(e.detail.contains("1001 values"), "{}", e.detail);
    }

    #[test]
    fn node_count_and_length_are_bounded() {
        let cols = vec!["1"; 5001].join(",");
        assert_eq!(
            check(&format!("select {cols}")).expect_err("many").code,
            "query_too_complex"
        );
        let small = Limits {
            max_sql_bytes: 10,
            ..limits()
        };
        assert_eq!(
            check_length("select 12345", &small).expect_err("long").code,
            "query_too_large"
        );
    }

    #[test]
    fn copy_and_explain_sources_are_measured() {
        let deep = chain("+", 150);
        assert!(check(&format!("copy (select {deep}) to 'x.csv'")).is_err());
        assert!(check(&format!("explain select {deep}")).is_err());
    }

    #[test]
    fn batches_shrink_with_large_literals() {
        assert_eq!(batch_rows_for(0, 64 << 20, 8192), 8192);
        assert_eq!(batch_rows_for(100, 64 << 20, 8192), 8192);
        assert_eq!(batch_rows_for(500_000, 64 << 20, 8192), 134);
        assert_eq!(batch_rows_for(1 << 30, 64 << 20, 8192), 1);
        let stmt = |sql: &str| {
            datafusion::sql::parser::DFParser::parse_sql(sql)
                .expect("parse")
                .pop_front()
                .expect("one statement")
        };
        assert_eq!(literal_bytes(&stmt("select a from t")), 0);
        assert!(literal_bytes(&stmt(&format!("select '{}' from t", "x".repeat(1000)))) >= 1000);
    }
}
