//! The MCP server's tools ([`crate::mcp`]). Each builds one read-only query
//! and runs it through the caller's tenant session
//! ([`crate::ask::tenant_rows`]); values from the arguments enter the SQL
//! only as checked numbers, parsed times, known names or quoted string
//! literals. Results are compact: rows are capped and `truncated` says when
//! more existed. Every call is audited (`mcp.tool_call`).

use std::sync::Arc;

use datafusion::common::{ParamValues, ScalarValue};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::keys::Scope;
use crate::ApiState;

/// Rows a tool returns when the call does not say.
const DEFAULT_ROWS: u64 = 50;
/// Rows a tool returns at most.
const MAX_ROWS: u64 = 500;

const INVALID_PARAMS: i64 = -32602;

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        },
        "annotations": {"readOnlyHint": true, "openWorldHint": false},
    })
}

fn limit_prop() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "description": format!("Rows to return (default {DEFAULT_ROWS}, at most {MAX_ROWS}).")})
}

fn time_prop(what: &str) -> Value {
    json!({"type": "string", "description": format!("{what}: an RFC 3339 time or a date (YYYY-MM-DD), UTC.")})
}

/// The tools a caller may use (all need the read scope every key has).
pub fn list(_p: &Principal) -> Vec<Value> {
    vec![
        tool("run_sql", "Run one read-only SQL query (Apache DataFusion dialect, PostgreSQL-like) over this organization's tables and get its rows as JSON. Every table holds only this organization's rows. Use list_tables and describe_table first to learn the columns. Aggregate or add LIMIT: at most max_rows rows come back and `truncated` says when there were more.",
            json!({"sql": {"type": "string", "description": "One SELECT (or WITH … SELECT) query."}, "max_rows": limit_prop()}), &["sql"]),
        tool("list_tables", "List the tables this organization can query, with what one row of each is. Use describe_table for a table's columns.", json!({}), &[]),
        tool("describe_table", "Describe one table: what a row is and every column with its type and meaning (Markdown).",
            json!({"table": {"type": "string", "description": "Table name from list_tables, e.g. 'interactions'."}}), &["table"]),
        tool("search_interactions", "Find interactions (one AI-written record per customer session: what happened, intent, sentiment, outcome, products) by words in their description, a product, a channel and a time range; newest first.",
            json!({"text": {"type": "string", "description": "Words the description contains (case-insensitive)."},
                   "product_id": {"type": "string", "description": "Only interactions involving this product id."},
                   "channel": {"type": "string", "enum": ["web", "social", "cctv"]},
                   "from": time_prop("Sessions starting at or after"), "to": time_prop("Sessions starting before"),
                   "limit": limit_prop()}), &[]),
        tool("get_patterns", "Get the statistically significant patterns (changes in volume, funnel steps, products, errors, by segment) found for periods of one kind, most significant first.",
            json!({"period_kind": {"type": "string", "enum": ["day", "week", "month", "year", "all"], "description": "Period kind (default week)."},
                   "from": time_prop("Periods starting on or after"), "to": time_prop("Periods starting before"), "limit": limit_prop()}), &[]),
        tool("list_products", "List catalog products (id, name, category, price), optionally only those whose name or category contains some text.",
            json!({"search": {"type": "string", "description": "Text the name or category contains (case-insensitive)."}, "limit": limit_prop()}), &[]),
        tool("get_product", "Get one product with its views, adds to cart and the interactions involving it.",
            json!({"product_id": {"type": "string", "description": "The product id (from list_products)."}}), &["product_id"]),
        tool("get_usage", "Get this organization's usage per day: events ingested, sessions, interactions, patterns, AI tokens and the priced amount.",
            json!({"from": time_prop("Days on or after"), "to": time_prop("Days before"), "limit": limit_prop()}), &[]),
        tool("ask", "Ask a question about this organization's data in plain language: CROW writes and runs one SQL query and answers with the SQL, the rows, a suggested chart and a short answer whose numbers all come from the rows.",
            json!({"question": {"type": "string", "description": "The question, e.g. 'conversion by device'."}}), &["question"]),
    ]
}

/// A tool's failure shown to the model (`isError`), or a protocol error.
enum Failure {
    Tool(String),
    Params(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Tool(format!("{} ({})", e.detail, e.code))
    }
}

/// `tools/call`.
pub async fn call(
    st: &Arc<ApiState>,
    p: &Principal,
    params: &Value,
) -> Result<Value, (i64, String)> {
    let name = params["name"].as_str().unwrap_or("");
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    if !list(p).iter().any(|t| t["name"] == name) {
        return Err((
            INVALID_PARAMS,
            format!("unknown tool {name:?} (see tools/list)"),
        ));
    }
    if !args.is_object() {
        return Err((INVALID_PARAMS, "`arguments` must be an object".into()));
    }
    let r = run(st, p, name, &args).await;
    let detail = json!({"arguments": args.to_string().chars().take(500).collect::<String>()});
    crate::audit_call(st, p, "mcp.tool_call", name, r.is_ok(), detail).await;
    match r {
        Ok(v) => Ok(json!({
            "content": [{"type": "text", "text": v.to_string()}],
            "structuredContent": v,
            "isError": false,
        })),
        Err(Failure::Tool(m)) => {
            Ok(json!({"content": [{"type": "text", "text": m}], "isError": true}))
        }
        Err(Failure::Params(m)) => Err((INVALID_PARAMS, m)),
    }
}

async fn run(st: &Arc<ApiState>, p: &Principal, name: &str, a: &Value) -> Result<Value, Failure> {
    match name {
        "run_sql" => {
            let sql =
                text_arg(a, "sql")?.ok_or_else(|| Failure::Params("`sql` is required".into()))?;
            rows(st, p, &sql, limit(a, "max_rows")?).await
        }
        "list_tables" => Ok(
            json!({"tables": crate::ask::visible_tables(p.scope == Scope::Admin)
            .map(|t| json!({"name": t.name, "row": t.doc}))
            .collect::<Vec<_>>()}),
        ),
        "describe_table" => {
            let t = text_arg(a, "table")?.unwrap_or_default();
            let def = crate::ask::visible_tables(p.scope == Scope::Admin)
                .find(|d| d.name == t)
                .ok_or_else(|| Failure::Tool(format!("no table {t:?}: see list_tables")))?;
            Ok(json!({"table": def.name, "contract": crate::ask::contract_markdown(def)}))
        }
        "search_interactions" => search_interactions(st, p, a).await,
        "get_patterns" => get_patterns(st, p, a).await,
        "list_products" => {
            let (mut w, mut v) = (Vec::new(), Binds::default());
            if let Some(s) = text_arg(a, "search")? {
                let l = v.text("search", &format!("%{}%", s.to_lowercase()));
                w.push(format!(
                    "(lower(name) LIKE {l} OR lower(category) LIKE {l})"
                ));
            }
            let sql = format!(
                "SELECT product_id, name, category, brand, price, currency FROM products{} ORDER BY product_id",
                where_clause(&w)
            );
            rows_with(st, p, &sql, v, limit(a, "limit")?).await
        }
        "get_product" => get_product(st, p, a).await,
        "get_usage" => {
            let mut w = Vec::new();
            range(a, "usage_date", true, &mut w)?;
            let sql = format!(
                "SELECT CAST(usage_date AS VARCHAR) AS day, events, sessions, interactions, patterns, \
                 ai_input_tokens, ai_output_tokens, amount_micros, currency FROM usage_daily{} ORDER BY usage_date DESC",
                where_clause(&w)
            );
            rows(st, p, &sql, limit(a, "limit")?).await
        }
        "ask" => {
            let question = text_arg(a, "question")?
                .ok_or_else(|| Failure::Params("`question` is required".into()))?;
            let req = crate::ask::AskRequest {
                question,
                conversation: Vec::new(),
            };
            let r = crate::ask::ask(st, p, &req).await;
            crate::ask::audit_ask(st, p, "ask", &req.question, &r).await;
            let a = r?;
            Ok(
                json!({"answer": a.answer, "sql": a.sql, "rows": a.rows, "row_count": a.rows.len(),
                      "truncated": a.truncated, "chart": a.chart, "answer_source": a.answer_source}),
            )
        }
        _ => Err(Failure::Params(format!("unknown tool {name:?}"))),
    }
}

async fn rows(st: &Arc<ApiState>, p: &Principal, sql: &str, cap: u64) -> Result<Value, Failure> {
    rows_with(st, p, sql, Binds::default(), cap).await
}

/// [`rows`] of `sql` with the values `binds` holds for its placeholders.
async fn rows_with(
    st: &Arc<ApiState>,
    p: &Principal,
    sql: &str,
    binds: Binds,
    cap: u64,
) -> Result<Value, Failure> {
    let r = crate::ask::tenant_rows_with(st, p, sql, binds.values(), cap as usize).await?;
    let mut v = json!({"columns": r.columns, "row_count": r.rows.len(), "truncated": r.truncated, "rows": r.rows});
    if r.truncated {
        v["note"] = json!(format!(
            "only the first {cap} rows are shown; aggregate, filter or raise the limit"
        ));
    }
    Ok(v)
}

/// A string argument; absent and empty are `None`.
fn text_arg(a: &Value, name: &str) -> Result<Option<String>, Failure> {
    match a.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= 100_000 => Ok(Some(s.trim().to_string())),
        Some(_) => Err(Failure::Params(format!(
            "`{name}` must be a string (at most 100000 bytes)"
        ))),
    }
}

fn limit(a: &Value, name: &str) -> Result<u64, Failure> {
    match a.get(name) {
        None | Some(Value::Null) => Ok(DEFAULT_ROWS),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_ROWS).contains(n))
            .ok_or_else(|| {
                Failure::Params(format!("`{name}` must be an integer from 1 to {MAX_ROWS}"))
            }),
    }
}

/// The values of a tool's query, bound to `$name` placeholders as typed
/// values: an argument is never spliced into the SQL text.
#[derive(Default)]
struct Binds(Vec<(String, ScalarValue)>);

impl Binds {
    /// Bind `name` to the string `value`; its placeholder.
    fn text(&mut self, name: &str, value: &str) -> String {
        self.0
            .push((name.to_string(), ScalarValue::Utf8(Some(value.to_string()))));
        format!("${name}")
    }

    fn values(self) -> Option<ParamValues> {
        (!self.0.is_empty()).then(|| self.0.into())
    }
}

fn where_clause(w: &[String]) -> String {
    if w.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", w.join(" AND "))
    }
}

/// `from`/`to` as conditions on `col` (a date column when `date`).
fn range(a: &Value, col: &str, date: bool, w: &mut Vec<String>) -> Result<(), Failure> {
    for (arg, op) in [("from", ">="), ("to", "<")] {
        if let Some(v) = text_arg(a, arg)? {
            let t = crow_schemas::time::parse_time(arg, &v)
                .map_err(|e| Failure::Params(e.to_string()))?;
            let lit = if date {
                format!("DATE '{}'", t.format("%Y-%m-%d"))
            } else {
                format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
            };
            w.push(format!("{col} {op} {lit}"));
        }
    }
    Ok(())
}

async fn search_interactions(
    st: &Arc<ApiState>,
    p: &Principal,
    a: &Value,
) -> Result<Value, Failure> {
    let (mut w, mut v) = (Vec::new(), Binds::default());
    if let Some(t) = text_arg(a, "text")? {
        w.push(format!(
            "lower(description) LIKE {}",
            v.text("text", &format!("%{}%", t.to_lowercase()))
        ));
    }
    if let Some(id) = text_arg(a, "product_id")? {
        w.push(format!(
            "array_has(product_ids, {})",
            v.text("product", &id)
        ));
    }
    if let Some(c) = text_arg(a, "channel")? {
        if !["web", "social", "cctv"].contains(&c.as_str()) {
            return Err(Failure::Params(
                "`channel` must be web, social or cctv".into(),
            ));
        }
        w.push(format!("channel = {}", v.text("channel", &c)));
    }
    range(a, "started_at", false, &mut w)?;
    let sql = format!(
        "SELECT interaction_id, session_id, channel, CAST(started_at AS VARCHAR) AS started_at, description, \
         intent, sentiment, outcome, product_ids FROM interactions{} ORDER BY started_at DESC, interaction_id",
        where_clause(&w)
    );
    rows_with(st, p, &sql, v, limit(a, "limit")?).await
}

async fn get_patterns(st: &Arc<ApiState>, p: &Principal, a: &Value) -> Result<Value, Failure> {
    let kind = text_arg(a, "period_kind")?.unwrap_or_else(|| "week".into());
    if !["day", "week", "month", "year", "all"].contains(&kind.as_str()) {
        return Err(Failure::Params(
            "`period_kind` must be day, week, month, year or all".into(),
        ));
    }
    let mut v = Binds::default();
    let mut w = vec![format!("period_kind = {}", v.text("kind", &kind))];
    range(a, "period_start", true, &mut w)?;
    let sql = format!(
        "SELECT pattern_id, CAST(period_start AS VARCHAR) AS period_start, CAST(period_end AS VARCHAR) AS period_end, \
         kind, segment, title, description, support, significance, product_ids FROM patterns{} \
         ORDER BY period_start DESC, significance DESC NULLS LAST, pattern_id",
        where_clause(&w)
    );
    rows_with(st, p, &sql, v, limit(a, "limit")?).await
}

async fn get_product(st: &Arc<ApiState>, p: &Principal, a: &Value) -> Result<Value, Failure> {
    let id = text_arg(a, "product_id")?
        .ok_or_else(|| Failure::Params("`product_id` is required".into()))?;
    let mut v = Binds::default();
    let q = v.text("id", &id);
    let sql = format!(
        "SELECT product_id, sku, name, category, brand, price, currency, url, description, \
         (SELECT count(*) FROM raw_web_events WHERE product_id = {q} AND event = 'Product Viewed') AS views, \
         (SELECT count(*) FROM raw_web_events WHERE product_id = {q} AND event = 'Product Added') AS adds_to_cart, \
         (SELECT count(*) FROM interactions WHERE array_has(product_ids, {q})) AS interactions \
         FROM products WHERE product_id = {q}"
    );
    let found = crate::ask::tenant_rows_with(st, p, &sql, v.values(), 1).await?;
    match found.rows.into_iter().next() {
        Some(row) => Ok(json!({"product": row})),
        None => Err(Failure::Tool(format!(
            "no product {id:?}: see list_products"
        ))),
    }
}
