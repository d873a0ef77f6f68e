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
//! Anything else gets an empty `sql` and a `reason` saying it needs a real
//! model (`ai.provider` = gemini or openai).

use serde_json::{json, Value};

use super::AiRequest;

/// The answer a provider gives for the SQL step.
pub fn sql_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "sql": {"type": "string", "description": "One read-only SQL query; empty when the question cannot be answered from the tables."},
            "reason": {"type": "string", "description": "Why the question cannot be answered, when `sql` is empty."},
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
\"x\": column, \"y\": [columns]}}; when the tables cannot answer, {\"sql\": \"\", \"reason\": …}.";

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
    match offline_sql(&offline_question(question, &earlier)) {
        Some((sql, chart)) => json!({"sql": sql, "chart": chart}),
        None => json!({
            "sql": "",
            "reason": "the offline provider answers only these question shapes: top products by views or orders, \
                       conversion by device or source, events or revenue over the last N days, interactions about a product, \
                       this week's patterns; this question needs a real model (set ai.provider to gemini or openai)"
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
        let term = product_term(&q)?;
        return Some((
            format!(
                "SELECT DISTINCT i.interaction_id, CAST(i.started_at AS VARCHAR) AS started_at, i.channel, i.outcome, \
                 i.sentiment, i.description FROM (SELECT interaction_id, started_at, channel, outcome, sentiment, \
                 description, unnest(product_ids) AS product_id FROM interactions) i \
                 JOIN products p ON p.product_id = i.product_id \
                 WHERE lower(p.name) LIKE '%{term}%' OR lower(p.product_id) = '{term}' \
                 ORDER BY started_at DESC, interaction_id LIMIT 50"
            ),
            json!({"kind": "table"}),
        ));
    }
    if has(&q, &["pattern"]) && has(&q, &["week"]) {
        return Some((
            "SELECT CAST(period_start AS VARCHAR) AS week, kind, segment, title, support, \
             round(significance, 2) AS significance FROM patterns WHERE period_kind = 'week' \
             AND period_start = (SELECT max(period_start) FROM patterns WHERE period_kind = 'week') \
             ORDER BY significance DESC NULLS LAST, pattern_id LIMIT 20"
                .to_string(),
            json!({"kind": "table"}),
        ));
    }
    let dev = device_filter(&q);
    if has(&q, &["conversion", "convert"]) {
        let sources: &[&str] = &["source", "traffic", "referr"];
        let dim = if has(&q, &["device"]) && !later(&q, sources, &["device"]) {
            "device_type"
        } else if has(&q, sources) {
            "traffic_source"
        } else {
            return None;
        };
        return Some((
            format!(
                "SELECT {dim}, count(*) AS sessions, sum(CASE WHEN converted THEN 1 ELSE 0 END) AS orders, \
                 round(100.0 * sum(CASE WHEN converted THEN 1 ELSE 0 END) / count(*), 2) AS conversion_pct \
                 FROM sessions WHERE channel = 'web'{dev} GROUP BY {dim} ORDER BY sessions DESC, {dim}"
            ),
            json!({"kind": "bar", "x": dim, "y": ["conversion_pct"]}),
        ));
    }
    if has(&q, &["trend", "over the last", "per day", "daily", "last "])
        && has(&q, &["day", "trend", "daily"])
    {
        let n = number_in(&q, 1, 366).unwrap_or(7);
        let events: &[&str] = &["event", "traffic", "activity"];
        if has(&q, &["revenue", "sales"]) && !later(&q, events, &["revenue", "sales"]) {
            return Some((
                format!(
                    "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS orders, round(sum(revenue), 2) AS revenue \
                     FROM raw_web_events WHERE event = 'Order Completed'{dev} \
                     AND event_date > current_date() - INTERVAL '{n} days' GROUP BY event_date ORDER BY day"
                ),
                json!({"kind": "line", "x": "day", "y": ["revenue"]}),
            ));
        }
        if has(&q, events) {
            return Some((
                format!(
                    "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS events FROM raw_web_events \
                     WHERE event_date > current_date() - INTERVAL '{n} days'{dev} GROUP BY event_date ORDER BY day"
                ),
                json!({"kind": "line", "x": "day", "y": ["events"]}),
            ));
        }
        return None;
    }
    if has(&q, &["product"]) && has(&q, &["top", "most", "best", "popular"]) {
        let n = number_in(&q, 1, 100).unwrap_or(10);
        let orders: &[&str] = &["order", "sold", "selling", "purchase", "bought"];
        let views: &[&str] = &["view", "popular", "seen"];
        if has(&q, orders) && !later(&q, views, orders) {
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
        if has(&q, views) {
            return Some((
                format!(
                    "SELECT product_id, max(product_name) AS name, count(*) AS views FROM raw_web_events \
                     WHERE event = 'Product Viewed'{dev} AND product_id IS NOT NULL \
                     GROUP BY product_id ORDER BY views DESC, product_id LIMIT {n}"
                ),
                json!({"kind": "bar", "x": "name", "y": ["views"]}),
            ));
        }
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
