//! Several cooperating steps for a broad question ("why did orders drop
//! last week?"): the provider's first reply to [`crate::ask`] may be a plan
//! — `{"sql": "", "plan": [{"question", "sql"}, …]}`, 1 to
//! [`prompts::MAX_PLAN_STEPS`] sub-questions — instead of one query.
//!
//! Each sub-query runs exactly like a single question's query: in the
//! caller's tenant session ([`tenant_rows`]), read-only, under the same
//! timeout, memory pool and slots, with at most [`MAX_REPAIRS`] repairs; a
//! refused statement (a write, DDL, SET) is never repaired and never runs,
//! and its step carries the error while the others are answered. CROW adds
//! a last step of its own, this week's patterns and stories. The whole plan
//! has [`PLAN_BUDGET`]; a step that does not finish within it fails. The
//! analyst step then writes the answer from all steps' rows, checked by the
//! same number validator (every number must appear in some step's rows or
//! the question); a rejected answer falls back to the rows in words.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use crow_jobs::ai::{ask as prompts, call_validated, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ask::{
    parse_plan, repairable, tenant_rows, AskAnswer, Progress, Rows, Spend, ASK_MAX_ROWS,
    MAX_REPAIRS,
};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Rows a step carries at most (`truncated` says when there were more).
pub const STEP_MAX_ROWS: usize = 50;
/// The time a plan's steps may take together (their repairs included;
/// the analyst step is not counted).
pub const PLAN_BUDGET: Duration = Duration::from_secs(120);

/// One sub-question of a plan, as the provider wrote it.
#[derive(Debug, Clone, Deserialize)]
pub struct SubQuery {
    /// What this step finds out.
    pub question: String,
    /// Its read-only query.
    pub sql: String,
}

/// One step of a planned answer.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What the step finds out.
    pub question: String,
    /// The query that ran (after repairs), or the one refused.
    pub sql: String,
    /// `provider` (the plan's) or `crow` (the week's findings CROW adds).
    pub by: &'static str,
    /// The rows' columns, in order.
    pub columns: Vec<String>,
    /// Its rows, at most [`STEP_MAX_ROWS`].
    pub rows: Vec<Value>,
    /// Rows shown.
    pub row_count: usize,
    /// Whether more rows existed than are shown.
    pub truncated: bool,
    /// Queries tried (1 + repairs).
    pub attempts: usize,
    /// Why the step has no rows: `{code, detail}` (refused, failed, timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// Tell `progress`, if any, of `event` with `data`.
pub(crate) fn send(progress: Option<&Progress>, event: &'static str, data: Value) {
    if let Some(tx) = progress {
        // A client that went away stops listening, not the question.
        let _ = tx.send((event, data));
    }
}

/// What every step needs.
pub(crate) struct PlanCtx<'a> {
    pub st: &'a Arc<ApiState>,
    pub p: &'a Principal,
    pub contracts: &'a str,
    pub context: &'a str,
    pub progress: Option<&'a Progress>,
}

fn budget_error() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "plan_time_exceeded",
        format!(
            "the plan's time budget ({} s) ran out before this step finished",
            PLAN_BUDGET.as_secs()
        ),
    )
}

/// The rows of one step's query `sql`, within the plan's `deadline`.
async fn step_rows(c: &PlanCtx<'_>, sql: &str, deadline: tokio::time::Instant) -> ApiResult<Rows> {
    if sql.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the step has no query",
        ));
    }
    match tokio::time::timeout_at(deadline, tenant_rows(c.st, c.p, sql, STEP_MAX_ROWS)).await {
        Ok(r) => r,
        Err(_) => Err(budget_error()),
    }
}

/// Run one step with at most `repairs` repairs; its error, when it failed.
async fn run_step(
    c: &PlanCtx<'_>,
    index: usize,
    sub: &SubQuery,
    by: &'static str,
    repairs: usize,
    deadline: tokio::time::Instant,
    spend: &mut Spend,
) -> (Step, Option<ApiError>) {
    let mut sql = sub.sql.trim().to_string();
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut step = Step {
        question: sub.question.clone(),
        sql: sql.clone(),
        by,
        columns: Vec::new(),
        rows: Vec::new(),
        row_count: 0,
        truncated: false,
        attempts: 0,
        error: None,
    };
    let err = loop {
        step.sql = sql.clone();
        step.attempts = errors.len() + 1;
        let e = match step_rows(c, &sql, deadline).await {
            Ok(found) => {
                step.row_count = found.rows.len();
                step.columns = found.columns;
                step.rows = found.rows;
                step.truncated = found.truncated;
                return (step, None);
            }
            Err(e) => e,
        };
        if !repairable(&e) || errors.len() >= repairs {
            break e;
        }
        send(
            c.progress,
            "repair",
            json!({"step": index, "error": e.detail}),
        );
        errors.push((sql.clone(), e.detail));
        let areq = prompts::sql_request(&sub.question, c.contracts, c.context, &[], &errors);
        let provider = c.st.ai();
        let call = call_validated(provider.as_ref(), &areq, RetryPolicy::new(1), parse_plan);
        let Ok(out) = tokio::time::timeout_at(deadline, call).await else {
            break budget_error();
        };
        spend.input += out.input_tokens;
        spend.output += out.output_tokens;
        match out.value {
            Ok(p) if !p.sql.trim().is_empty() => sql = p.sql.trim().to_string(),
            Ok(_) => {
                break ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "ai_failed",
                    "the AI provider wrote no query to repair this step",
                )
            }
            Err((_, why)) => {
                break ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "ai_failed",
                    format!("the AI provider gave no usable repair: {why}"),
                )
            }
        }
    };
    step.error = Some(json!({"code": err.code, "detail": err.detail}));
    (step, Some(err))
}

/// Answer `question` from `plan`: run its steps and the week's findings,
/// then the analyst step.
pub(crate) async fn answer(
    c: &PlanCtx<'_>,
    question: &str,
    plan: &[SubQuery],
    mut spend: Spend,
) -> ApiResult<AskAnswer> {
    let deadline = tokio::time::Instant::now() + PLAN_BUDGET;
    let findings = SubQuery {
        question: prompts::WEEK_FINDINGS_QUESTION.to_string(),
        sql: prompts::WEEK_FINDINGS_SQL.to_string(),
    };
    let todo = plan
        .iter()
        .map(|s| (s, "provider", MAX_REPAIRS))
        .chain(std::iter::once((&findings, "crow", 0)));
    let mut steps: Vec<Step> = Vec::new();
    let mut first_error: Option<ApiError> = None;
    for (index, (sub, by, repairs)) in todo.enumerate() {
        let (step, err) = run_step(c, index, sub, by, repairs, deadline, &mut spend).await;
        let mut data = serde_json::to_value(&step).unwrap_or_default();
        data["index"] = json!(index);
        send(c.progress, "step", data);
        if by == "provider" && first_error.is_none() {
            first_error = err;
        }
        steps.push(step);
    }
    let Some(lead) = steps
        .iter()
        .find(|s| s.by == "provider" && s.error.is_none())
        .cloned()
    else {
        // Not one of the provider's steps ran: the first one's error.
        let mut e = first_error.unwrap_or_else(budget_error);
        e.detail = format!("no step of the plan could be answered: {}", e.detail);
        return Err(e);
    };
    let (answer, answer_source, answer_note) = analyst(c.st, question, &steps, &mut spend).await;
    let provider = c.st.ai();
    let mut rows = lead.rows;
    rows.truncate(ASK_MAX_ROWS);
    Ok(AskAnswer {
        question: question.to_string(),
        chart: crate::ask::chart(None, &rows),
        sql: lead.sql,
        columns: lead.columns,
        truncated: lead.truncated,
        answer,
        answer_source,
        answer_note,
        attempts: steps.iter().map(|s| s.attempts).sum(),
        provider: provider.name().to_string(),
        model: provider.model().to_string(),
        input_tokens: spend.input,
        output_tokens: spend.output,
        rows,
        steps,
    })
}

/// The analyst's answer, checked against every step's rows; the steps'
/// rows in words when it is rejected.
async fn analyst(
    st: &Arc<ApiState>,
    question: &str,
    steps: &[Step],
    spend: &mut Spend,
) -> (String, &'static str, Option<String>) {
    let mut facts = question.to_string();
    for s in steps {
        facts.push_str(&format!(
            " {} {}",
            serde_json::to_string(&s.rows).unwrap_or_default(),
            s.row_count
        ));
    }
    let allowed: BTreeSet<String> = crow_jobs::patterns::allowed_numbers(&facts);
    let values: Vec<Value> = steps
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    let areq = prompts::analyst_request(question, &values);
    let check = |text: &str| crate::ask::checked_answer(text, &allowed);
    let out = call_validated(st.ai().as_ref(), &areq, RetryPolicy::new(1), check).await;
    spend.input += out.input_tokens;
    spend.output += out.output_tokens;
    match out.value {
        Ok(a) => (a, "model", None),
        Err((_, why)) => {
            let text: Vec<String> = steps
                .iter()
                .filter(|s| s.error.is_none())
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.question,
                        prompts::render_rows(&s.columns, &s.rows, s.truncated)
                    )
                })
                .collect();
            (
                text.join(" "),
                "rows",
                Some(format!("the provider's answer was rejected: {why}")),
            )
        }
    }
}
