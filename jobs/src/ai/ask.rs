//! Ask CROW: what a provider is asked to turn a question into one read-only
//! SQL query and, once it has run, to answer in words — and the offline
//! provider's deterministic writer for both.
//!
//! The query API runs the pipeline (tenant session, repairs, row caps, the
//! number check); this module only shapes the requests and answers.
//!
//! The offline provider understands these question shapes (case does not
//! matter; `N` is optional):
//!
//! | shape | e.g. |
//! |---|---|
//! | top products by views | "top 5 products by views", "most viewed products" |
//! | top products by orders | "top products by orders", "best selling products" |
//! | conversion by device or source | "conversion by device", "conversion rate by traffic source" |
//! | trend of events or revenue | "events over the last 14 days", "revenue trend last 7 days" |
//! | interactions about a product | "interactions about Aurora headphones" |
//! | this week's patterns | "this week's patterns", "what patterns this week" |
//!
//! And one broad shape it answers with a plan of several queries
//! ([`offline_plan`]): "why did orders drop last week?" — sessions, orders,
//! revenue (or sales) or conversion; drop, rise or "what changed".
//!
//! Anything else gets an empty `sql` and a `reason` saying it needs a real
//! model (`ai.provider` = gemini or openai).
//!
//! **Plans.** For a broad question the SQL step may answer
//! `{"sql": "", "plan": [{"question": …, "sql": …}, …]}` — 1 to
//! [`MAX_PLAN_STEPS`] sub-questions, each with one read-only query. CROW runs
//! each like a single question's query, adds [`WEEK_FINDINGS_SQL`] as a last
//! step, and asks the analyst step ([`analyst_request`]) for the answer.

use serde_json::{json, Value};

use super::AiRequest;

/// The answer a provider gives for the SQL step.
pub fn sql_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "sql": {"type": "string", "description": "One read-only SQL query; empty when the question cannot be answered from the tables."},
            "reason": {"type": "string", "description": "Why the question cannot be answered, when `sql` is empty."},
            "plan": {
                "type": "array",
                "description": "For a broad why/what-changed question instead of `sql`: 2 to 4 sub-questions, each with one read-only SQL query.",
                "items": {
                    "type": "object",
                    "properties": {"question": {"type": "string"}, "sql": {"type": "string"}},
                    "required": ["question", "sql"]
                }
            },
            "chart": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["bar", "line", "table", "number"]},
                    "x": {"type": "string"},
                    "y": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["kind"]
            }
        },
        "required": ["sql"]
    })
}

/// The answer a provider gives for the words step.
pub fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "answer": {"type": "string", "description": "Two or three sentences answering the question; every number copied from the rows."}
        },
        "required": ["answer"]
    })
}

const SQL_SYSTEM: &str =
    "You are CROW's analyst. Write ONE read-only SQL query (Apache DataFusion, \
PostgreSQL-like dialect) that answers the question from the organization's tables below. \
Every table already holds only this organization's rows: never filter on or mention other \
organizations. Only SELECT (WITH … SELECT) is allowed. Prefer aggregates with a LIMIT; \
name result columns plainly. Answer JSON {\"sql\": …, \"chart\": {\"kind\": bar|line|table|number, \
\"x\": column, \"y\": [columns]}}; when the tables cannot answer, {\"sql\": \"\", \"reason\": …}. \
For a broad question (why did something change, what changed) you may instead split it: \
{\"sql\": \"\", \"plan\": [{\"question\": …, \"sql\": …}, …]} with 2 to 4 sub-questions, each with one \
read-only query (e.g. the metric this week against last, by day, by device, by traffic source); \
this week's patterns and stories are added for you.";

const ANALYST_SYSTEM: &str = "You are CROW's analyst. A broad question was split into steps, each \
a query with its rows (a step may have failed). Answer the question in three to five plain sentences \
from the steps' rows only: what changed, where it changed most, and which of this week's patterns or \
stories may explain it. Copy every number exactly as it appears in the rows; do not compute, round or \
invent numbers. Answer JSON {\"answer\": …}.";

/// Most sub-questions in a plan (CROW adds one step: the week's findings).
pub const MAX_PLAN_STEPS: usize = 4;

/// The step CROW adds to every plan: this week's patterns and the stories
/// of the last seven days, stories first.
pub const WEEK_FINDINGS_QUESTION: &str = "this week's patterns and stories";

/// The query of [`WEEK_FINDINGS_QUESTION`].
pub const WEEK_FINDINGS_SQL: &str = "SELECT source, title FROM (\
SELECT 'pattern' AS source, title, significance AS score FROM patterns WHERE period_kind = 'week' \
AND period_start = (SELECT max(period_start) FROM patterns WHERE period_kind = 'week') \
UNION ALL SELECT 'story' AS source, title, rank_score AS score FROM stories \
WHERE last_date >= current_date() - INTERVAL '7 days') \
ORDER BY source DESC, score DESC NULLS LAST, title LIMIT 10";

const ANSWER_SYSTEM: &str = "You are CROW's analyst. Answer the question in two or three plain \
sentences from the query's rows only. Copy every number exactly as it appears in the rows; \
do not compute, round or invent numbers. Answer JSON {\"answer\": …}.";

/// The worked examples every provider sees (they are also the offline
/// provider's shapes).
pub fn examples() -> Vec<(&'static str, String)> {
    [
        "top 10 products by views",
        "conversion by device",
        "revenue over the last 7 days",
        "this week's patterns",
    ]
    .into_iter()
    .filter_map(|q| offline_sql(q).map(|(sql, _)| (q, sql)))
    .collect()
}

/// The request for the SQL step. `contracts` describes the tables,
/// `context` is the organization's own text, `conversation` the earlier
/// turns, `errors` what went wrong with earlier attempts at this question.
pub fn sql_request(
    question: &str,
    contracts: &str,
    context: &str,
    conversation: &[Value],
    errors: &[(String, String)],
) -> AiRequest {
    let mut prompt = format!("Tables:\n{contracts}\n");
    if !context.trim().is_empty() {
        prompt.push_str(&format!("About the organization:\n{context}\n\n"));
    }
    prompt.push_str("Examples:\n");
    for (q, sql) in examples() {
        prompt.push_str(&format!("Q: {q}\nSQL: {sql}\n"));
    }
    if !conversation.is_empty() {
        prompt.push_str("\nConversation so far:\n");
        for turn in conversation {
            prompt.push_str(&format!("{turn}\n"));
        }
    }
    for (sql, err) in errors {
        prompt.push_str(&format!(
            "\nAn earlier attempt failed.\nSQL: {sql}\nError: {err}\nFix it.\n"
        ));
    }
    prompt.push_str(&format!("\nQuestion: {question}\n"));
    AiRequest {
        system: SQL_SYSTEM.to_string(),
        prompt,
        schema: sql_schema(),
        input: json!({"task": "ask_sql", "question": question, "attempt": errors.len(),
                      "earlier": earlier_questions(conversation)}),
    }
}

/// The request for the words step.
pub fn answer_request(
    question: &str,
    sql: &str,
    columns: &[String],
    rows: &[Value],
    truncated: bool,
) -> AiRequest {
    let shown: Vec<&Value> = rows.iter().take(50).collect();
    let prompt = format!(
        "Question: {question}\nSQL: {sql}\nRows ({}{}):\n{}\n",
        rows.len(),
        if truncated { ", more were cut off" } else { "" },
        serde_json::to_string(&shown).unwrap_or_default()
    );
    AiRequest {
        system: ANSWER_SYSTEM.to_string(),
        prompt,
        schema: answer_schema(),
        input: json!({"task": "ask_answer", "question": question, "columns": columns, "rows": shown, "row_count": rows.len(), "truncated": truncated}),
    }
}

/// The request for the analyst step of a plan: the question and each
/// step's question, columns and rows (at most 20 a step) or error.
pub fn analyst_request(question: &str, steps: &[Value]) -> AiRequest {
    let shown: Vec<Value> = steps
        .iter()
        .map(|s| {
            let rows: Vec<&Value> = s["rows"]
                .as_array()
                .map(|r| r.iter().take(20).collect())
                .unwrap_or_default();
            json!({"question": s["question"], "sql": s["sql"], "columns": s["columns"],
                   "rows": rows, "row_count": s["row_count"], "truncated": s["truncated"],
                   "error": s.get("error").and_then(|e| e.get("detail")).cloned()})
        })
        .collect();
    let mut prompt = format!("Question: {question}\n");
    for (i, s) in shown.iter().enumerate() {
        prompt.push_str(&format!(
            "\nStep {}: {}\nSQL: {}\n{}\n",
            i + 1,
            s["question"].as_str().unwrap_or(""),
            s["sql"].as_str().unwrap_or(""),
            match s["error"].as_str() {
                Some(e) => format!("Failed: {e}"),
                None => format!("Rows: {}", s["rows"]),
            }
        ));
    }
    AiRequest {
        system: ANALYST_SYSTEM.to_string(),
        prompt,
        schema: answer_schema(),
        input: json!({"task": "ask_analyst", "question": question, "steps": shown}),
    }
}

/// Which way a broad question looks.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Drop,
    Rise,
    Change,
}

fn direction(q: &str) -> Direction {
    if has(
        q,
        &[
            "drop", "fall", "fell", "down", "declin", "decreas", "lower", "worse",
        ],
    ) {
        Direction::Drop
    } else if has(
        q,
        &[
            "rise", "rose", " up", "increas", "grow", "higher", "jump", "better",
        ],
    ) {
        Direction::Rise
    } else {
        Direction::Change
    }
}

/// A metric the offline planner knows: its column name, table, date
/// column, value over the rows matching `{w}`, source column and filter.
struct Metric {
    name: &'static str,
    table: &'static str,
    date: &'static str,
    value: &'static str,
    source: &'static str,
    filter: &'static str,
}

const SESSIONS: Metric = Metric {
    name: "sessions",
    table: "sessions",
    date: "session_date",
    value: "count(*) FILTER (WHERE {w})",
    source: "traffic_source",
    filter: "channel = 'web'",
};
const ORDERS: Metric = Metric {
    name: "orders",
    value: "count(*) FILTER (WHERE converted AND {w})",
    ..SESSIONS
};
const CONVERSION: Metric = Metric {
    name: "conversion_pct",
    value: "round(100.0 * count(*) FILTER (WHERE converted AND {w}) / nullif(count(*) FILTER (WHERE {w}), 0), 2)",
    ..SESSIONS
};
const REVENUE: Metric = Metric {
    name: "revenue",
    table: "raw_web_events",
    date: "event_date",
    value: "round(sum(revenue) FILTER (WHERE {w}), 2)",
    source: "coalesce(campaign_source, 'direct')",
    filter: "event = 'Order Completed'",
};

/// The offline planner's sub-questions for "why did <metric> drop/rise
/// last week?" (or "what changed in <metric>?"): the metric over the last
/// seven complete days against the seven before, by day, by device and by
/// traffic source (largest fall first for a drop, largest rise for a rise,
/// largest change either way otherwise). `None` for any other question.
pub fn offline_plan(question: &str) -> Option<Vec<(String, String)>> {
    let q = question.to_lowercase();
    if !has(&q, &["why", "what changed", "what happened", "explain"]) {
        return None;
    }
    let m = if has(&q, &["conversion", "convert"]) {
        CONVERSION
    } else if has(&q, &["revenue", "sales"]) {
        REVENUE
    } else if has(&q, &["order", "purchase"]) {
        ORDERS
    } else if has(&q, &["session", "traffic", "visit"]) {
        SESSIONS
    } else {
        return None;
    };
    let weeks = Weeks::new(m, direction(&q));
    let name = weeks.m.name.trim_end_matches("_pct");
    Some(vec![
        (
            format!("{name} in the last seven complete days against the seven before"),
            weeks.compare("", ""),
        ),
        (
            format!("{name} by day over the last two weeks"),
            weeks.by_day(),
        ),
        (
            format!("{name} by device, this week against last"),
            weeks.compare("device_type", "device_type"),
        ),
        (
            format!("{name} by traffic source, this week against last"),
            weeks.compare(weeks.m.source, "traffic_source"),
        ),
    ])
}

/// The SQL of an [`offline_plan`]: one metric over the last seven complete
/// days (`this`) against the seven before (`last`), over the rows of both
/// that the metric counts (`both`).
struct Weeks {
    m: Metric,
    dir: Direction,
    this: String,
    last: String,
    both: String,
}

impl Weeks {
    fn new(m: Metric, dir: Direction) -> Self {
        let this = format!(
            "{d} >= current_date() - INTERVAL '7 days' AND {d} < current_date()",
            d = m.date
        );
        let last = format!(
            "{d} >= current_date() - INTERVAL '14 days' AND {d} < current_date() - INTERVAL '7 days'",
            d = m.date
        );
        let both = format!(
            "{} AND {d} >= current_date() - INTERVAL '14 days' AND {d} < current_date()",
            m.filter,
            d = m.date
        );
        Weeks {
            m,
            dir,
            this,
            last,
            both,
        }
    }

    fn value(&self, w: &str) -> String {
        self.m.value.replace("{w}", w)
    }

    /// This week against last with the change in percent: in total (`dim`
    /// empty) or by `dim`, shown as `label`, the segments that moved the
    /// asked way first.
    fn compare(&self, dim: &str, label: &str) -> String {
        let (sel, group, order) = if dim.is_empty() {
            (String::new(), String::new(), String::new())
        } else {
            let order = match self.dir {
                Direction::Drop => "change_pct ASC NULLS LAST",
                Direction::Rise => "change_pct DESC NULLS LAST",
                Direction::Change => "abs(change_pct) DESC NULLS LAST",
            };
            (
                format!("{dim} AS {label}, "),
                format!(" GROUP BY {dim}"),
                format!(" ORDER BY {order}, {label} LIMIT 10"),
            )
        };
        let lab = if label.is_empty() {
            String::new()
        } else {
            format!("{label}, ")
        };
        format!(
            "SELECT {lab}this_week, last_week, round(100.0 * (this_week - last_week) / nullif(last_week, 0), 1) AS change_pct \
             FROM (SELECT {sel}{} AS this_week, {} AS last_week FROM {} WHERE {}{group}){order}",
            self.value(&self.this),
            self.value(&self.last),
            self.m.table,
            self.both
        )
    }

    /// The metric by day over both weeks.
    fn by_day(&self) -> String {
        let m = &self.m;
        format!(
            "SELECT CAST({d} AS VARCHAR) AS day, {} AS {} FROM {} WHERE {} GROUP BY {d} ORDER BY day",
            self.value("true"),
            m.name,
            m.table,
            self.both,
            d = m.date
        )
    }
}

/// A value as the rows show it (strings bare, null as "none").
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

/// The offline analyst: from the steps of [`offline_plan`] (recognised by
/// their columns), the totals, the segment that moved most in each
/// comparison, and the week's findings — every number copied from a row.
/// It does not reason about causes: it lists the findings beside the
/// figures and leaves the reading to the person.
pub fn offline_analyst(input: &Value) -> Value {
    let question = input["question"].as_str().unwrap_or("").to_lowercase();
    let most = match direction(&question) {
        Direction::Drop => "the lowest change",
        Direction::Rise => "the highest change",
        Direction::Change => "the largest change",
    };
    let empty = Vec::new();
    let steps = input["steps"].as_array().unwrap_or(&empty);
    let mut out: Vec<String> = Vec::new();
    let mut failed = false;
    for s in steps {
        if !s["error"].is_null() {
            failed = true;
            continue;
        }
        let cols: Vec<&str> = s["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let rows = s["rows"].as_array().unwrap_or(&empty);
        let what = s["question"].as_str().unwrap_or("");
        if cols == ["source", "title"] {
            let titles: Vec<String> = rows.iter().take(5).map(|r| shown(&r["title"])).collect();
            out.push(if titles.is_empty() {
                "No patterns or stories were found this week.".into()
            } else {
                format!("This week's findings: {}.", titles.join("; "))
            });
        } else if cols == ["this_week", "last_week", "change_pct"] {
            if let Some(r) = rows.first() {
                out.push(format!(
                    "{what}: {} against {} (change {}%).",
                    shown(&r["this_week"]),
                    shown(&r["last_week"]),
                    shown(&r["change_pct"])
                ));
            }
        } else if cols.len() == 4 && cols[1..] == ["this_week", "last_week", "change_pct"] {
            // The rows come ordered by the change the question asks about.
            if let Some(r) = rows.first() {
                out.push(format!(
                    "By {}, {most} was {} ({} against {}, change {}%).",
                    cols[0].replace('_', " "),
                    shown(&r[cols[0]]),
                    shown(&r["this_week"]),
                    shown(&r["last_week"]),
                    shown(&r["change_pct"])
                ));
            }
        }
    }
    if failed {
        out.push("Some steps could not be answered (see the steps).".into());
    }
    if out.is_empty() {
        out.push("The steps found no rows to answer from.".into());
    }
    json!({"answer": out.join(" ")})
}

/// The rows in plain words, columns in order: the fallback answer, and
/// the offline provider's answer. Numbers appear exactly as in the rows.
pub fn render_rows(columns: &[String], rows: &[Value], truncated: bool) -> String {
    if rows.is_empty() {
        return "No rows match.".to_string();
    }
    let shown: Vec<String> = rows
        .iter()
        .take(5)
        .map(|r| {
            columns
                .iter()
                .map(|k| match &r[k.as_str()] {
                    Value::String(s) => format!("{k} {s}"),
                    Value::Null => format!("{k} none"),
                    other => format!("{k} {other}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    let more = if rows.len() > shown.len() || truncated {
        " (first rows shown; see the table for all)"
    } else {
        ""
    };
    format!("{}{more}.", shown.join("; "))
}

/// The questions of earlier turns (`{"question": …}`), oldest first.
fn earlier_questions(conversation: &[Value]) -> Vec<String> {
    conversation
        .iter()
        .filter_map(|t| t.get("question").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// How a follow-up question starts ("and on mobile?").
const FOLLOW_UPS: &[&str] = &["and ", "what about ", "how about ", "same for "];

fn is_follow_up(q: &str) -> bool {
    let q = q.trim().to_lowercase();
    FOLLOW_UPS.iter().any(|f| q.starts_with(f))
}

/// The question as the offline provider reads it: a follow-up ("and on
/// mobile?", "what about the last 30 days?") is read after the earlier
/// questions back to the last one that was not a follow-up, and where they
/// disagree the later words win ("conversion by device" then "and by
/// traffic source?" is conversion by traffic source).
pub fn offline_question(question: &str, earlier: &[String]) -> String {
    if !is_follow_up(question) || earlier.is_empty() {
        return question.to_string();
    }
    let mut chain: Vec<&str> = Vec::new();
    for q in earlier.iter().rev() {
        chain.push(q);
        if !is_follow_up(q) {
            break;
        }
    }
    chain.reverse();
    chain.push(question);
    chain.join(" ")
}

/// The offline provider's answer to an `ask_sql` request.
pub fn offline_sql_answer(input: &Value) -> Value {
    let question = input.get("question").and_then(Value::as_str).unwrap_or("");
    let earlier: Vec<String> = input
        .get("earlier")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let read = offline_question(question, &earlier);
    if let Some(plan) = offline_plan(&read) {
        let plan: Vec<Value> = plan
            .into_iter()
            .map(|(question, sql)| json!({"question": question, "sql": sql}))
            .collect();
        return json!({"sql": "", "plan": plan});
    }
    match offline_sql(&read) {
        Some((sql, chart)) => json!({"sql": sql, "chart": chart}),
        None => json!({
            "sql": "",
            "reason": "the offline provider answers only these question shapes: top products by views or orders, \
                       conversion by device or source, events or revenue over the last N days, interactions about a product, \
                       this week's patterns, why orders, sessions, revenue or conversion dropped or rose last week; this question needs a real model (set ai.provider to gemini or openai)"
        }),
    }
}

/// The offline provider's answer to an `ask_answer` request.
pub fn offline_words(input: &Value) -> Value {
    let columns: Vec<String> = input
        .get("columns")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let rows = input
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let truncated = input
        .get("truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    json!({"answer": render_rows(&columns, &rows, truncated)})
}

/// The last whole number in `q` (a follow-up's number wins), within
/// `lo..=hi`.
fn number_in(q: &str, lo: u32, hi: u32) -> Option<u32> {
    q.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|s| s.parse::<u32>().ok())
        .map(|n| n.clamp(lo, hi))
}

fn has(q: &str, words: &[&str]) -> bool {
    words.iter().any(|w| q.contains(w))
}

/// Whether the last of `a`'s words comes after the last of `b`'s (a word
/// absent from `q` comes nowhere).
fn later(q: &str, a: &[&str], b: &[&str]) -> bool {
    let last = |ws: &[&str]| ws.iter().filter_map(|w| q.rfind(w)).max();
    match (last(a), last(b)) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        _ => false,
    }
}

/// A device named in a question ("on mobile"), as an SQL condition.
fn device_filter(q: &str) -> String {
    ["mobile", "desktop", "tablet"]
        .into_iter()
        .rfind(|d| q.contains(d))
        .map(|d| format!(" AND device_type = '{d}'"))
        .unwrap_or_default()
}

/// A product named in a question, reduced to characters that are safe in
/// a SQL string literal.
fn product_term(q: &str) -> Option<String> {
    let (_, rest) = q.split_once(" about ")?;
    let term: String = rest
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '.'))
        .collect();
    let term = term.trim().trim_end_matches('.').trim().to_string();
    (!term.is_empty()).then_some(term)
}

/// SQL and a chart for a question the offline provider understands.
pub fn offline_sql(question: &str) -> Option<(String, Value)> {
    let q = question.to_lowercase();
    if has(&q, &["interaction"]) {
        return interactions_about(&q);
    }
    if has(&q, &["pattern"]) && has(&q, &["week"]) {
        return Some(this_weeks_patterns());
    }
    let dev = device_filter(&q);
    if has(&q, &["conversion", "convert"]) {
        return conversion_by(&q, &dev);
    }
    if has(&q, &["trend", "over the last", "per day", "daily", "last "])
        && has(&q, &["day", "trend", "daily"])
    {
        return daily(&q, &dev);
    }
    if has(&q, &["product"]) && has(&q, &["top", "most", "best", "popular"]) {
        return top_products(&q, &dev);
    }
    None
}

/// "Interactions about <product>": the interactions naming it.
fn interactions_about(q: &str) -> Option<(String, Value)> {
    let term = product_term(q)?;
    Some((
        format!(
            "SELECT DISTINCT i.interaction_id, CAST(i.started_at AS VARCHAR) AS started_at, i.channel, i.outcome, \
             i.sentiment, i.description FROM (SELECT interaction_id, started_at, channel, outcome, sentiment, \
             description, unnest(product_ids) AS product_id FROM interactions) i \
             JOIN products p ON p.product_id = i.product_id \
             WHERE lower(p.name) LIKE '%{term}%' OR lower(p.product_id) = '{term}' \
             ORDER BY started_at DESC, interaction_id LIMIT 50"
        ),
        json!({"kind": "table"}),
    ))
}

/// "This week's patterns": the latest week's patterns.
fn this_weeks_patterns() -> (String, Value) {
    (
        "SELECT CAST(period_start AS VARCHAR) AS week, kind, segment, title, support, \
         round(significance, 2) AS significance FROM patterns WHERE period_kind = 'week' \
         AND period_start = (SELECT max(period_start) FROM patterns WHERE period_kind = 'week') \
         ORDER BY significance DESC NULLS LAST, pattern_id LIMIT 20"
            .to_string(),
        json!({"kind": "table"}),
    )
}

/// "Conversion by device" or "by traffic source" (the later word wins),
/// on the device `dev` names.
fn conversion_by(q: &str, dev: &str) -> Option<(String, Value)> {
    let sources: &[&str] = &["source", "traffic", "referr"];
    let dim = if has(q, &["device"]) && !later(q, sources, &["device"]) {
        "device_type"
    } else if has(q, sources) {
        "traffic_source"
    } else {
        return None;
    };
    Some((
        format!(
            "SELECT {dim}, count(*) AS sessions, sum(CASE WHEN converted THEN 1 ELSE 0 END) AS orders, \
             round(100.0 * sum(CASE WHEN converted THEN 1 ELSE 0 END) / count(*), 2) AS conversion_pct \
             FROM sessions WHERE channel = 'web'{dev} GROUP BY {dim} ORDER BY sessions DESC, {dim}"
        ),
        json!({"kind": "bar", "x": dim, "y": ["conversion_pct"]}),
    ))
}

/// "Revenue" or "events over the last N days" (the later word wins), by
/// day, on the device `dev` names.
fn daily(q: &str, dev: &str) -> Option<(String, Value)> {
    let n = number_in(q, 1, 366).unwrap_or(7);
    let events: &[&str] = &["event", "traffic", "activity"];
    if has(q, &["revenue", "sales"]) && !later(q, events, &["revenue", "sales"]) {
        return Some((
            format!(
                "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS orders, round(sum(revenue), 2) AS revenue \
                 FROM raw_web_events WHERE event = 'Order Completed'{dev} \
                 AND event_date > current_date() - INTERVAL '{n} days' GROUP BY event_date ORDER BY day"
            ),
            json!({"kind": "line", "x": "day", "y": ["revenue"]}),
        ));
    }
    if has(q, events) {
        return Some((
            format!(
                "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS events FROM raw_web_events \
                 WHERE event_date > current_date() - INTERVAL '{n} days'{dev} GROUP BY event_date ORDER BY day"
            ),
            json!({"kind": "line", "x": "day", "y": ["events"]}),
        ));
    }
    None
}

/// "Top N products by orders" or "by views" (the later word wins), on the
/// device `dev` names.
fn top_products(q: &str, dev: &str) -> Option<(String, Value)> {
    let n = number_in(q, 1, 100).unwrap_or(10);
    let orders: &[&str] = &["order", "sold", "selling", "purchase", "bought"];
    let views: &[&str] = &["view", "popular", "seen"];
    if has(q, orders) && !later(q, views, orders) {
        return Some((
            format!(
                "SELECT s.product_id, p.name, count(*) AS orders FROM \
                 (SELECT unnest(product_ids) AS product_id FROM sessions WHERE converted{dev}) s \
                 LEFT JOIN products p ON p.product_id = s.product_id \
                 GROUP BY s.product_id, p.name ORDER BY orders DESC, s.product_id LIMIT {n}"
            ),
            json!({"kind": "bar", "x": "name", "y": ["orders"]}),
        ));
    }
    if has(q, views) {
        return Some((
            format!(
                "SELECT product_id, max(product_name) AS name, count(*) AS views FROM raw_web_events \
                 WHERE event = 'Product Viewed'{dev} AND product_id IS NOT NULL \
                 GROUP BY product_id ORDER BY views DESC, product_id LIMIT {n}"
            ),
            json!({"kind": "bar", "x": "name", "y": ["views"]}),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_shape_has_sql_and_others_need_a_model() {
        for q in [
            "top 5 products by views",
            "Most viewed products",
            "best selling products",
            "conversion by device",
            "conversion rate by traffic source",
            "events over the last 14 days",
            "revenue trend last 7 days",
            "interactions about Aurora headphones",
            "this week's patterns",
        ] {
            assert!(offline_sql(q).is_some(), "{q}");
        }
        for q in ["why did sales drop?", "conversion", "interactions"] {
            assert!(offline_sql(q).is_none(), "{q}");
        }
        let (sql, _) = offline_sql("interactions about x'; drop table products; --").unwrap();
        assert!(!sql.contains("x'"), "{sql}");
        let (sql, _) = offline_sql("top 5 products by views").unwrap();
        assert!(sql.ends_with("LIMIT 5"), "{sql}");
        // A device narrows every shape with its own condition.
        let (sql, _) = offline_sql("events over the last 7 days on mobile").unwrap();
        assert!(
            sql.contains("INTERVAL '7 days' AND device_type = 'mobile' GROUP BY"),
            "{sql}"
        );
    }

    #[test]
    fn a_follow_up_is_read_with_the_questions_before_it() {
        let earlier = ["conversion by device".to_string()];
        let q = offline_question("and by traffic source?", &earlier);
        let (sql, _) = offline_sql(&q).unwrap();
        assert!(sql.starts_with("SELECT traffic_source"), "{sql}");
        let earlier = [
            "top 5 products by views".to_string(),
            "and on mobile?".to_string(),
        ];
        let (sql, _) = offline_sql(&offline_question("what about 3?", &earlier)).unwrap();
        assert!(
            sql.contains("device_type = 'mobile'") && sql.ends_with("LIMIT 3"),
            "{sql}"
        );
        assert!(sql.contains("views"), "{sql}");
        // Not a follow-up, or nothing before it: the question alone.
        assert_eq!(
            offline_question("conversion by device", &earlier),
            "conversion by device"
        );
        assert!(offline_sql(&offline_question("and on mobile?", &[])).is_none());
        // The earlier words stay in force unless later ones change them.
        let earlier = ["revenue trend over the last 7 days".to_string()];
        let (sql, _) =
            offline_sql(&offline_question("and over the last 30 days?", &earlier)).unwrap();
        assert!(
            sql.contains("revenue") && sql.contains("'30 days'"),
            "{sql}"
        );
    }

    #[test]
    fn broad_questions_get_a_plan_and_the_analyst_cites_only_rows() {
        for q in [
            "why did orders drop last week?",
            "Why did sales fall last week",
            "why did conversion rise?",
            "what changed in sessions last week?",
        ] {
            let plan = offline_plan(q).unwrap_or_else(|| panic!("{q}"));
            assert_eq!(plan.len(), MAX_PLAN_STEPS, "{q}");
            assert!(
                matches!(offline_sql_answer(&json!({"question": q}))["plan"].as_array(), Some(p) if p.len() == 4),
                "{q}"
            );
        }
        for q in [
            "why is the sky blue?",
            "orders last week",
            "top products by orders",
        ] {
            assert!(offline_plan(q).is_none(), "{q}");
        }
        let plan = offline_plan("why did orders rise last week?").unwrap();
        assert!(plan[2].1.contains("change_pct DESC"), "{}", plan[2].1);
        assert!(
            plan[3].1.contains("GROUP BY traffic_source"),
            "{}",
            plan[3].1
        );
        let steps = json!([
            {"question": "orders in the last seven complete days against the seven before",
             "columns": ["this_week", "last_week", "change_pct"],
             "rows": [{"this_week": 80, "last_week": 100, "change_pct": -20.0}]},
            {"question": "orders by device", "columns": ["device_type", "this_week", "last_week", "change_pct"],
             "rows": [{"device_type": "mobile", "this_week": 30, "last_week": 50, "change_pct": -40.0}]},
            {"question": "broken", "columns": [], "rows": [], "error": "failed after 30 s"},
            {"question": WEEK_FINDINGS_QUESTION, "columns": ["source", "title"],
             "rows": [{"source": "story", "title": "Mobile checkout failures cost 12 orders"}]},
        ]);
        let input = json!({"question": "why did orders drop last week?", "steps": steps});
        let text = offline_analyst(&input)["answer"]
            .as_str()
            .unwrap()
            .to_string();
        let allowed = crate::patterns::allowed_numbers(&steps.to_string());
        assert!(
            crate::patterns::check_numbers(&text, &allowed).is_ok(),
            "{text}"
        );
        for part in [
            "80 against 100",
            "the lowest change was mobile",
            "Mobile checkout",
            "could not be answered",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }

    #[test]
    fn rendered_rows_only_cite_their_numbers() {
        let rows = vec![json!({"name": "Aurora", "views": 57, "rate": 12.5})];
        let cols = ["name", "views", "rate"].map(String::from);
        let text = render_rows(&cols, &rows, false);
        let allowed = crate::patterns::allowed_numbers(&serde_json::to_string(&rows).unwrap());
        assert!(
            crate::patterns::check_numbers(&text, &allowed).is_ok(),
            "{text}"
        );
        assert!(text.contains("57") && text.contains("12.5"), "{text}");
    }
}
