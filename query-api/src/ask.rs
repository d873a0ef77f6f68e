//! `POST /api/v1/ask` (and `crow ask`): a question in plain language,
//! answered from the caller's own rows.
//!
//! The AI provider ([`crow_jobs::ai`]) gets the question, the table
//! contracts, the organization's context text, worked examples and the
//! conversation so far, and writes one SQL query. The query runs exactly
//! like `/api/v1/sql` — in the caller's tenant session, read-only, under the
//! same timeout, memory pool and concurrency slots ([`tenant_rows`]).
//! Planning and running errors go back to the provider for at most
//! [`MAX_REPAIRS`] repairs; a refused statement (a write, DDL, SET) is never
//! repaired and never runs. The answer in words is checked like the pattern
//! narratives: every number in it must appear in the rows (or the question);
//! a rejected answer is replaced by a plain rendering of the rows.
//!
//! A broad question may be answered by a plan of several queries and an
//! analyst step instead ([`crate::ask_plan`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crow_jobs::ai::{ask as prompts, call_validated, RetryPolicy};
use crow_lake::AsOf;
use crow_schemas::TableDef;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::tenant::{Pins, ADMIN_ONLY_TABLES};
use crate::ApiState;

/// Rows an answer carries at most (`truncated` says when there were more).
pub const ASK_MAX_ROWS: usize = 100;
/// Repairs after a query fails to plan or run.
pub const MAX_REPAIRS: usize = 2;
/// Longest question, in characters.
const MAX_QUESTION_CHARS: usize = 2000;
/// Most earlier turns sent along.
const MAX_TURNS: usize = 20;

/// Body of `POST /api/v1/ask`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// Earlier turns, oldest first (e.g. `{"question": …, "sql": …}`).
    #[serde(default)]
    pub conversation: Vec<Value>,
}

/// The answer to a question.
#[derive(Debug, Serialize)]
pub struct AskAnswer {
    /// The question.
    pub question: String,
    /// The query that ran.
    pub sql: String,
    /// The rows' columns, in order.
    pub columns: Vec<String>,
    /// Its rows, at most [`ASK_MAX_ROWS`].
    pub rows: Vec<Value>,
    /// Whether more rows existed than are shown.
    pub truncated: bool,
    /// A suggested chart: `kind` (bar, line, table, number), `x`, `y`.
    pub chart: Value,
    /// The answer in words; every number in it appears in the rows.
    pub answer: String,
    /// `model` (the provider's words, checked) or `rows` (rendered from
    /// the rows, when the provider's words were rejected).
    pub answer_source: &'static str,
    /// Why the provider's words were rejected, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_note: Option<String>,
    /// Queries tried (1 + repairs).
    pub attempts: usize,
    /// The provider and model.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Prompt tokens spent.
    pub input_tokens: u64,
    /// Completion tokens spent.
    pub output_tokens: u64,
    /// For a planned answer ([`crate::ask_plan`]): its steps, the week's
    /// findings last; the fields above are then the first answered step's.
    /// Absent for a single query.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::ask_plan::Step>,
}

/// The provider when the configured one cannot be built (e.g. a missing
/// API key): every question is answered 502 `ai_failed` with the reason, and
/// the rest of the server keeps working.
#[derive(Debug)]
pub struct Unavailable(pub String);

#[async_trait::async_trait]
impl crow_jobs::ai::Provider for Unavailable {
    fn name(&self) -> &str {
        "unavailable"
    }

    fn model(&self) -> &str {
        ""
    }

    async fn generate(
        &self,
        _req: &crow_jobs::ai::AiRequest,
    ) -> Result<crow_jobs::ai::AiAnswer, crow_jobs::ai::AiError> {
        Err(crow_jobs::ai::AiError::Fatal(self.0.clone()))
    }
}

/// The tables a caller can read: admin-only tables only for admins.
pub fn visible_tables(admin: bool) -> impl Iterator<Item = &'static TableDef> {
    crow_schemas::ALL_TABLES
        .iter()
        .filter(move |t| admin || !ADMIN_ONLY_TABLES.contains(&t.name))
}

/// One table's contract as Markdown: what a row is, its readable columns.
pub fn contract_markdown(t: &TableDef) -> String {
    let mut s = format!(
        "## {}\n{}\n\n| column | type | meaning |\n|---|---|---|\n",
        t.name, t.doc
    );
    for c in t.columns {
        if t.secret_columns.contains(&c.name) {
            continue;
        }
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            c.name,
            c.ty.doc_name(),
            c.doc
        ));
    }
    s
}

/// A capped query result.
#[derive(Debug)]
pub struct Rows {
    /// Column names in order.
    pub columns: Vec<String>,
    /// At most the cap of rows, as JSON objects.
    pub rows: Vec<Value>,
    /// Whether more rows existed.
    pub truncated: bool,
}

/// Run one read-only query in the caller's tenant session — the path of
/// `/api/v1/sql`: its concurrency slots, timeout and memory pool — and
/// return at most `cap` rows.
pub async fn tenant_rows(
    st: &Arc<ApiState>,
    p: &Principal,
    sql: &str,
    cap: usize,
) -> ApiResult<Rows> {
    tenant_rows_with(st, p, sql, None, cap).await
}

/// [`tenant_rows`] with values for the statement's placeholders (`$1` or
/// `$name`), bound as typed values rather than spliced into the text.
pub async fn tenant_rows_with(
    st: &Arc<ApiState>,
    p: &Principal,
    sql: &str,
    params: Option<crow_lake::datafusion::common::ParamValues>,
    cap: usize,
) -> ApiResult<Rows> {
    let started = std::time::Instant::now();
    let _permits = st.slots.acquire(&p.key_id, &p.org_id)?;
    let (ctx, schema) = st.tenant_session(p, AsOf::Latest, Pins::new());
    let deadline = tokio::time::Instant::from_std(started) + st.query_timeout();
    let mut query = crate::sql::RunningQuery::start_with_params(
        st,
        ctx,
        schema,
        sql.to_string(),
        params,
        Some(cap.saturating_add(1)),
        deadline,
    )
    .await?;
    let mut batches = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, query.next()).await {
            Err(_) => return Err(crate::sql::query_timeout(st)),
            Ok(None) => break,
            Ok(Some(b)) => batches.push(b?),
        }
    }
    st.metrics.query_seconds(started.elapsed().as_secs_f64());
    let columns = query
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = crate::json_rows(&batches)?;
    let truncated = rows.len() > cap;
    rows.truncate(cap);
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

/// The organization's context text ('' when it has none).
async fn org_context(st: &Arc<ApiState>, p: &Principal) -> String {
    match tenant_rows(st, p, "SELECT name, context FROM organizations", 1).await {
        Ok(r) => r
            .rows
            .first()
            .map(|r| {
                let name = r["name"].as_str().unwrap_or("");
                let ctx = r["context"].as_str().unwrap_or("");
                format!("{name}. {ctx}").trim().to_string()
            })
            .unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e.detail, "no organization context for ask");
            String::new()
        }
    }
}

/// The provider's reply to the SQL step: one query, a plan of
/// sub-queries, or an empty `sql` with the reason.
#[derive(Debug, Deserialize)]
pub(crate) struct SqlPlan {
    #[serde(default)]
    pub sql: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    chart: Option<Value>,
    #[serde(default)]
    plan: Vec<crate::ask_plan::SubQuery>,
}

pub(crate) fn parse_plan(text: &str) -> Result<SqlPlan, String> {
    let p: SqlPlan =
        serde_json::from_str(text.trim()).map_err(|e| format!("not the expected JSON: {e}"))?;
    let max = prompts::MAX_PLAN_STEPS;
    if p.plan.len() > max {
        return Err(format!(
            "a plan has at most {max} steps, not {}",
            p.plan.len()
        ));
    }
    if p.plan.iter().any(|s| s.sql.trim().is_empty()) {
        return Err("every step of a plan needs a query".into());
    }
    Ok(p)
}

/// Errors the provider may repair: the query did not plan or failed while
/// running. Refusals (writes, DDL, SET), limits and timeouts are final.
pub(crate) fn repairable(e: &ApiError) -> bool {
    matches!(e.code, "invalid_query" | "query_failed")
}

/// Tokens and the provider, kept across the steps of one question.
pub(crate) struct Spend {
    pub input: u64,
    pub output: u64,
}

/// Steps of a question as they happen: (`sql` | `repair` | `rows`, data).
pub type Progress = tokio::sync::mpsc::UnboundedSender<(&'static str, Value)>;

/// Answer `req` for `p`.
pub async fn ask(st: &Arc<ApiState>, p: &Principal, req: &AskRequest) -> ApiResult<AskAnswer> {
    ask_streaming(st, p, req, None).await
}

/// [`ask`], telling `progress` each step: the query about to run, a
/// repair and why, the rows — or, for a planned answer, each `step` as it
/// finishes (and its repairs).
pub async fn ask_streaming(
    st: &Arc<ApiState>,
    p: &Principal,
    req: &AskRequest,
    progress: Option<&Progress>,
) -> ApiResult<AskAnswer> {
    let emit = |event: &'static str, data: Value| crate::ask_plan::send(progress, event, data);
    let question = checked_question(req)?;
    let provider = st.ai();
    let admin = p.scope == Scope::Admin;
    let contracts: String = visible_tables(admin).map(contract_markdown).collect();
    let context = org_context(st, p).await;
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut spend = Spend {
        input: 0,
        output: 0,
    };
    let (plan, found) = loop {
        let areq = prompts::sql_request(question, &contracts, &context, &req.conversation, &errors);
        let out = call_validated(provider.as_ref(), &areq, RetryPolicy::new(1), parse_plan).await;
        spend.input += out.input_tokens;
        spend.output += out.output_tokens;
        let plan = out.value.map_err(|(_, why)| no_usable_query(&why))?;
        if !plan.plan.is_empty() {
            let c = crate::ask_plan::PlanCtx {
                st,
                p,
                contracts: &contracts,
                context: &context,
                progress,
            };
            return crate::ask_plan::answer(&c, question, &plan.plan, spend).await;
        }
        if plan.sql.trim().is_empty() {
            return Err(not_supported(plan.reason));
        }
        emit("sql", json!({"sql": plan.sql, "attempt": errors.len() + 1}));
        match tenant_rows(st, p, &plan.sql, ASK_MAX_ROWS).await {
            Ok(found) => break (plan, found),
            Err(e) if repairable(&e) && errors.len() < MAX_REPAIRS => {
                emit("repair", json!({"error": e.detail}));
                errors.push((plan.sql.clone(), e.detail));
            }
            Err(mut e) => {
                e.detail = format!("{} (the query was: {})", e.detail, plan.sql);
                return Err(e);
            }
        }
    };
    let Rows {
        columns,
        rows,
        truncated,
    } = found;
    emit(
        "rows",
        json!({"columns": columns, "rows": rows, "truncated": truncated}),
    );
    let (answer, answer_source, answer_note) = words(
        st, question, &plan.sql, &columns, &rows, truncated, &mut spend,
    )
    .await;
    Ok(AskAnswer {
        question: question.to_string(),
        chart: chart(plan.chart.as_ref(), &rows),
        sql: plan.sql,
        columns,
        truncated,
        answer,
        answer_source,
        answer_note,
        attempts: errors.len() + 1,
        provider: provider.name().to_string(),
        model: provider.model().to_string(),
        input_tokens: spend.input,
        output_tokens: spend.output,
        rows,
        steps: Vec::new(),
    })
}

/// `req`'s question, trimmed, once it and the conversation are within
/// bounds.
fn checked_question(req: &AskRequest) -> ApiResult<&str> {
    let question = req.question.trim();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::bad_request(
            "invalid_question",
            format!("`question` must be 1 to {MAX_QUESTION_CHARS} characters"),
        ));
    }
    if req.conversation.len() > MAX_TURNS {
        return Err(ApiError::bad_request(
            "invalid_conversation",
            format!("send at most {MAX_TURNS} earlier turns in `conversation`"),
        ));
    }
    Ok(question)
}

/// The 422 for a question the provider wrote no query for (`reason`: its
/// own words).
fn not_supported(reason: Option<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "question_not_supported",
        reason.unwrap_or_else(|| "the AI provider wrote no query for this question".into()),
    )
}

/// The 502 for a provider that wrote no usable query (`why`).
fn no_usable_query(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "ai_failed",
        format!("the AI provider gave no usable query: {why}"),
    )
}

/// The answer in words, checked; the rows rendered when it is rejected.
async fn words(
    st: &Arc<ApiState>,
    question: &str,
    sql: &str,
    columns: &[String],
    rows: &[Value],
    truncated: bool,
    spend: &mut Spend,
) -> (String, &'static str, Option<String>) {
    let facts = format!(
        "{} {question} {}",
        serde_json::to_string(rows).unwrap_or_default(),
        rows.len()
    );
    let allowed: BTreeSet<String> = crow_jobs::patterns::allowed_numbers(&facts);
    let areq = prompts::answer_request(question, sql, columns, rows, truncated);
    let check = |text: &str| checked_answer(text, &allowed);
    let out = call_validated(st.ai().as_ref(), &areq, RetryPolicy::new(1), check).await;
    spend.input += out.input_tokens;
    spend.output += out.output_tokens;
    match out.value {
        Ok(a) => (a, "model", None),
        Err((_, why)) => (
            prompts::render_rows(columns, rows, truncated),
            "rows",
            Some(format!("the provider's answer was rejected: {why}")),
        ),
    }
}

/// The provider's chart when its columns exist, else one chosen from the
/// rows: a line over a day column, bars of a number by a label, a table.
pub(crate) fn chart(suggested: Option<&Value>, rows: &[Value]) -> Value {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return json!({"kind": "table"});
    };
    if let Some(c) = suggested {
        let kind = c["kind"].as_str().unwrap_or("");
        let cols_exist = c["x"].as_str().is_none_or(|x| first.contains_key(x))
            && c["y"].as_array().is_none_or(|ys| {
                ys.iter()
                    .all(|y| y.as_str().is_some_and(|y| first.contains_key(y)))
            });
        if matches!(kind, "bar" | "line" | "table" | "number") && cols_exist {
            return c.clone();
        }
    }
    let numeric: Vec<&String> = first
        .iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, _)| k)
        .collect();
    let label = first.iter().find(|(_, v)| v.is_string()).map(|(k, _)| k);
    match (label, numeric.first()) {
        (_, Some(n)) if rows.len() == 1 && first.len() == 1 => json!({"kind": "number", "y": [n]}),
        (Some(l), Some(_)) if ["day", "date", "week", "event_date"].contains(&l.as_str()) => {
            json!({"kind": "line", "x": l, "y": numeric})
        }
        (Some(l), Some(_)) => json!({"kind": "bar", "x": l, "y": numeric}),
        _ => json!({"kind": "table"}),
    }
}

/// `POST /api/v1/ask`; with `Accept: text/event-stream`, as events
/// ([`stream`]).
pub async fn handler(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Read).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let req: AskRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(
                "invalid_body",
                format!(
                    "the body must be JSON like {{\"question\": \"top products by views\"}}: {e}"
                ),
            )
            .into_response()
        }
    };
    let streams = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if streams {
        return stream(st, p, req);
    }
    let r = ask(&st, &p, &req).await;
    audit_ask(&st, &p, "ask", &req.question, &r).await;
    match r {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The answer as server-sent events: `sql` (the query about to run),
/// `repair` (why it is asked again), `rows` — or for a planned answer one
/// `step` per step (with its `index`) — then `answer` (the whole answer, as
/// without streaming) or `error` (a problem document).
fn stream(st: Arc<ApiState>, p: Principal, req: AskRequest) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let r = ask_streaming(&st, &p, &req, Some(&tx)).await;
        audit_ask(&st, &p, "ask", &req.question, &r).await;
        let last = match r {
            Ok(a) => ("answer", serde_json::to_value(&a).unwrap_or_default()),
            Err(e) => (
                "error",
                serde_json::to_value(e.problem()).unwrap_or_default(),
            ),
        };
        let _ = tx.send(last);
    });
    event_stream(rx)
}

/// Server-sent events, one per (event, data) received from `rx`, until
/// every sender is gone.
pub(crate) fn event_stream(
    rx: tokio::sync::mpsc::UnboundedReceiver<(&'static str, Value)>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let (event, data) = rx.recv().await?;
        let e = Event::default().event(event).data(data.to_string());
        Some((Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `ask` (or an MCP tool call) in the audit log; a failure to write it is
/// logged.
pub async fn audit_ask(
    st: &ApiState,
    p: &Principal,
    action: &str,
    target: &str,
    r: &ApiResult<AskAnswer>,
) {
    let target: String = target.chars().take(200).collect();
    let detail = match r {
        Ok(a) => {
            json!({"sql": a.sql, "rows": a.rows.len(), "attempts": a.attempts, "steps": a.steps.len()})
        }
        Err(e) => json!({"code": e.code}),
    };
    crate::audit_call(st, p, action, &target, r.is_ok(), detail).await;
}

/// The words of a provider's `{"answer": …}` reply, if every number in them
/// is one of `allowed` (the rows' and the question's): the check of a single
/// answer and of a planned one's analyst step alike.
pub(crate) fn checked_answer(text: &str, allowed: &BTreeSet<String>) -> Result<String, String> {
    let v: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not the expected JSON: {e}"))?;
    let answer = v["answer"].as_str().unwrap_or("").trim().to_string();
    if answer.is_empty() {
        return Err("empty answer".into());
    }
    crow_jobs::patterns::check_numbers(&answer, allowed)?;
    Ok(answer)
}
