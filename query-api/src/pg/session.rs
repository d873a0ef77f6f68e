//! SQL-level prepared statements (`PREPARE name AS …`, `EXECUTE name(…)`,
//! `DEALLOCATE`) and cursors (`DECLARE name CURSOR FOR …`, `FETCH n FROM
//! name`, `MOVE`, `CLOSE`) of one connection — what psql users type and
//! what psycopg's named (server-side) cursors send.
//!
//! They are kept per connection and hold no privilege of their own: a
//! prepared statement is its SQL, planned (and refused) in the caller's
//! tenant session at `PREPARE` and again at every `EXECUTE`; a cursor is a
//! query started at `DECLARE` exactly as any statement of the connection
//! is (key re-checked, concurrency slots, tenant session, timeout, row cap),
//! whose rows `FETCH` hands out. Cursors move forward only; one declared
//! `WITHOUT HOLD` (the default) is closed at the end of its transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use pgwire::error::PgWireResult;

use super::user_error;
use crate::slots::Permits;
use crate::sql::RunningQuery;

/// A statement about the connection's prepared statements or cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `PREPARE name [(types)] AS sql`.
    Prepare { name: String, sql: String },
    /// `EXECUTE name [(args)]`: each argument a literal, as written.
    Execute {
        name: String,
        args: Vec<Option<String>>,
    },
    /// `DEALLOCATE [PREPARE] name | ALL` (`None`: all).
    Deallocate(Option<String>),
    /// `DECLARE name … CURSOR [WITH[OUT] HOLD] FOR sql`.
    Declare {
        name: String,
        hold: bool,
        sql: String,
    },
    /// `FETCH`/`MOVE [FORWARD] [n | ALL | NEXT] [FROM | IN] name` (count
    /// `None`: all rows left; `skip`: MOVE, rows not sent).
    Fetch {
        name: String,
        count: Option<u64>,
        skip: bool,
    },
    /// `CLOSE name | ALL` (`None`: all).
    Close(Option<String>),
}

/// The next word of `s` (lower-cased) or quoted identifier (as written),
/// and the rest.
fn word(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if q[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                    continue;
                }
                return Some((out, &q[i + 1..]));
            }
            out.push(c);
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((s[..end].to_ascii_lowercase(), &s[end..]))
}

fn strip_end(s: &str) -> &str {
    s.trim().trim_end_matches(';').trim()
}

/// What `sql` is, if it is one of these statements; an error if it is
/// one written in a way CROW does not take.
pub fn parse(sql: &str) -> Option<PgWireResult<Command>> {
    let (first, rest) = word(sql)?;
    Some(match first.as_str() {
        "prepare" => parse_prepare(rest),
        "execute" => parse_execute(rest),
        "deallocate" => {
            let rest = strip_end(rest);
            let rest = match word(rest) {
                Some((w, r)) if w == "prepare" => r,
                _ => rest,
            };
            match word(rest) {
                Some((w, r)) if strip_end(r).is_empty() => Ok(Command::Deallocate(
                    (w != "all" || rest.trim_start().starts_with('"')).then_some(w),
                )),
                _ => Err(syntax("DEALLOCATE name")),
            }
        }
        "declare" => parse_declare(rest),
        "fetch" | "move" => parse_fetch(rest, first == "move"),
        "close" => match word(rest) {
            Some((w, r)) if strip_end(r).is_empty() => Ok(Command::Close(
                (w != "all" || rest.trim_start().starts_with('"')).then_some(w),
            )),
            _ => Err(syntax("CLOSE name")),
        },
        _ => return None,
    })
}

fn syntax(form: &str) -> pgwire::error::PgWireError {
    user_error("42601", format!("syntax error: CROW takes `{form}`"))
}

fn parse_prepare(rest: &str) -> PgWireResult<Command> {
    let (name, mut rest) = word(rest).ok_or_else(|| syntax("PREPARE name AS query"))?;
    if let Some(types) = rest.trim_start().strip_prefix('(') {
        // The declared types: the planner infers them from the query.
        let close = types
            .find(')')
            .ok_or_else(|| syntax("PREPARE name (types) AS query"))?;
        rest = &types[close + 1..];
    }
    match word(rest) {
        Some((w, sql)) if w == "as" && !strip_end(sql).is_empty() => Ok(Command::Prepare {
            name,
            sql: strip_end(sql).to_string(),
        }),
        _ => Err(syntax("PREPARE name AS query")),
    }
}

fn parse_execute(rest: &str) -> PgWireResult<Command> {
    let (name, rest) = word(rest).ok_or_else(|| syntax("EXECUTE name (values)"))?;
    let rest = strip_end(rest);
    if rest.is_empty() {
        return Ok(Command::Execute { name, args: vec![] });
    }
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| syntax("EXECUTE name (values)"))?;
    let args = literals(inner)?;
    Ok(Command::Execute { name, args })
}

/// The literal values of `EXECUTE`'s list: numbers, strings, booleans,
/// NULL, with optional casts (the statement's parameter types decide).
fn literals(list: &str) -> PgWireResult<Vec<Option<String>>> {
    use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let exprs = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(list)
        .and_then(|mut p| p.parse_comma_separated(Parser::parse_expr))
        .map_err(|e| user_error("42601", format!("EXECUTE's values: {e}")))?;
    fn literal(e: &Expr) -> PgWireResult<Option<String>> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Ok(Some(n.clone())),
                Value::SingleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::DollarQuotedString(
                    datafusion::sql::sqlparser::ast::DollarQuotedString { value: s, .. },
                ) => Ok(Some(s.clone())),
                Value::Boolean(b) => Ok(Some(b.to_string())),
                Value::Null => Ok(None),
                _ => Err(not_literal(e)),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => Ok(literal(expr)?.map(|v| format!("-{v}"))),
            Expr::Cast { expr, .. } | Expr::Nested(expr) => literal(expr),
            Expr::TypedString(t) => literal(&Expr::Value(t.value.clone())),
            _ => Err(not_literal(e)),
        }
    }
    fn not_literal(e: &Expr) -> pgwire::error::PgWireError {
        user_error(
            "0A000",
            format!("EXECUTE takes literal values; `{e}` is not one"),
        )
    }
    exprs.iter().map(literal).collect()
}

fn parse_declare(rest: &str) -> PgWireResult<Command> {
    let form = "DECLARE name [NO SCROLL] CURSOR [WITH | WITHOUT HOLD] FOR query";
    let (name, mut rest) = word(rest).ok_or_else(|| syntax(form))?;
    loop {
        let (w, r) = word(rest).ok_or_else(|| syntax(form))?;
        rest = r;
        match w.as_str() {
            "cursor" => break,
            "no" | "scroll" | "asensitive" | "insensitive" => {}
            "binary" => {
                return Err(user_error(
                    "0A000",
                    "binary cursors are not supported: fetch in binary format instead",
                ))
            }
            _ => return Err(syntax(form)),
        }
    }
    let mut hold = false;
    let (mut w, mut r) = word(rest).ok_or_else(|| syntax(form))?;
    if w == "with" || w == "without" {
        hold = w == "with";
        let (h, r2) = word(r).ok_or_else(|| syntax(form))?;
        if h != "hold" {
            return Err(syntax(form));
        }
        (w, r) = word(r2).ok_or_else(|| syntax(form))?;
    }
    if w != "for" || strip_end(r).is_empty() {
        return Err(syntax(form));
    }
    Ok(Command::Declare {
        name,
        hold,
        sql: strip_end(r).to_string(),
    })
}

fn parse_fetch(rest: &str, skip: bool) -> PgWireResult<Command> {
    let form = "FETCH [FORWARD] [count | ALL | NEXT] [FROM] name";
    let mut words = Vec::new();
    let mut rest = strip_end(rest);
    while !rest.trim().is_empty() {
        let quoted = rest.trim_start().starts_with('"');
        let (w, r) = word(rest).ok_or_else(|| syntax(form))?;
        words.push((w, quoted));
        rest = r;
    }
    let (name, _) = words.pop().ok_or_else(|| syntax(form))?;
    if words
        .last()
        .is_some_and(|(w, q)| !q && (w == "from" || w == "in"))
    {
        words.pop();
    }
    let words: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
    let count = match words.as_slice() {
        [] | ["next"] | ["forward"] => Some(1),
        ["all"] | ["forward", "all"] => None,
        [n] | ["forward", n] => Some(
            n.parse::<u64>()
                .map_err(|_| user_error("0A000", "cursors move forward only"))?,
        ),
        _ => return Err(user_error("0A000", "cursors move forward only")),
    };
    Ok(Command::Fetch { name, count, skip })
}

/// An open cursor: its running query and the rows not yet fetched.
pub struct Cursor {
    /// The result's schema.
    pub schema: SchemaRef,
    /// Kept past the end of its transaction.
    pub hold: bool,
    pub(super) query: RunningQuery,
    pub(super) pending: VecDeque<RecordBatch>,
    pub(super) rows: u64,
    pub(super) max_rows: u64,
    pub(super) deadline: tokio::time::Instant,
    pub(super) timeout: u64,
    pub(super) done: bool,
    pub(super) _permits: Permits,
}

impl Cursor {
    /// The next `count` rows (`None`: all that are left), as batches.
    pub async fn fetch(&mut self, count: Option<u64>) -> PgWireResult<Vec<RecordBatch>> {
        let mut want = count.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        while want > 0 {
            if let Some(b) = self.pending.pop_front() {
                let n = b.num_rows() as u64;
                if n <= want {
                    want -= n;
                    out.push(b);
                } else {
                    let take = usize::try_from(want).unwrap_or(usize::MAX);
                    out.push(b.slice(0, take));
                    self.pending.push_front(b.slice(take, b.num_rows() - take));
                    want = 0;
                }
                continue;
            }
            if self.done {
                break;
            }
            match tokio::time::timeout_at(self.deadline, self.query.next()).await {
                Err(_) => {
                    self.done = true;
                    return Err(super::exec::timed_out(self.timeout));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Err(super::exec::api_error(&e));
                }
                Ok(Some(Ok(b))) => {
                    self.rows += b.num_rows() as u64;
                    if self.rows > self.max_rows {
                        self.done = true;
                        return Err(user_error(
                            "54000",
                            format!(
                                "the result has more than {} rows; aggregate, add a LIMIT, or use an export",
                                self.max_rows
                            ),
                        ));
                    }
                    self.pending.push_back(b);
                }
            }
        }
        Ok(out)
    }
}

/// A prepared statement of `PREPARE`: its SQL and parameters' types.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<DataType>,
}

/// One connection's prepared statements and cursors.
#[derive(Default)]
pub struct Conn {
    pub statements: std::sync::Mutex<HashMap<String, Statement>>,
    pub cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
}

/// The connection state of `client`.
pub fn conn(client: &(impl pgwire::api::ClientInfo + ?Sized)) -> Arc<Conn> {
    client
        .session_extensions()
        .get_or_insert_with(Conn::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sql: &str) -> Command {
        match parse(sql) {
            Some(Ok(c)) => c,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn parses_what_psql_and_psycopg_send() {
        assert_eq!(
            p("PREPARE q (int, text) AS select * from t where a = $1;"),
            Command::Prepare {
                name: "q".into(),
                sql: "select * from t where a = $1".into()
            }
        );
        assert_eq!(
            p("execute Q(2, 'it''s', -1.5, null, '2026-01-01'::date)"),
            Command::Execute {
                name: "q".into(),
                args: vec![
                    Some("2".into()),
                    Some("it's".into()),
                    Some("-1.5".into()),
                    None,
                    Some("2026-01-01".into())
                ]
            }
        );
        assert_eq!(
            p("DECLARE \"My cur\" CURSOR WITHOUT HOLD FOR select 1"),
            Command::Declare {
                name: "My cur".into(),
                hold: false,
                sql: "select 1".into()
            }
        );
        assert_eq!(
            p("FETCH FORWARD 100 FROM \"c\""),
            Command::Fetch {
                name: "c".into(),
                count: Some(100),
                skip: false
            }
        );
        assert_eq!(
            p("fetch all in c"),
            Command::Fetch {
                name: "c".into(),
                count: None,
                skip: false
            }
        );
        assert_eq!(p("close all"), Command::Close(None));
        assert_eq!(
            p("deallocate prepare x"),
            Command::Deallocate(Some("x".into()))
        );
        assert!(matches!(parse("fetch backward 2 from c"), Some(Err(_))));
        assert!(matches!(parse("execute q(now())"), Some(Err(_))));
        assert!(parse("select 1").is_none());
    }
}
