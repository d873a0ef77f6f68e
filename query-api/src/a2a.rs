//! `/a2a` and `/.well-known/agent-card.json`: CROW as an Agent2Agent (A2A)
//! agent, so other organizations' agents can ask it about the caller's data.
//!
//! The card is public; every JSON-RPC call needs an API key
//! (`Authorization: Bearer …`, read scope) and sees only its organization's
//! tasks. A message's text is a question answered by Ask CROW
//! ([`crate::ask::ask_streaming`], the caller's tenant session); the answer
//! comes back as a task whose artifact holds the words (text part) and the
//! SQL, rows and chart (data part). Tasks are rows of `a2a_tasks`, so any
//! `crow serve` on the lake answers `GetTask`.
//!
//! Two protocol versions are spoken on the same endpoint, chosen by the
//! method name: **1.0** (`SendMessage`, `SendStreamingMessage`, `GetTask`,
//! `ListTasks`, `CancelTask`; ProtoJSON: `ROLE_USER`, `TASK_STATE_COMPLETED`,
//! results wrapped as `{"task": …}`) and **0.3** (`message/send`,
//! `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/list`; `kind`
//! discriminators, `user`, `completed`). Messages in one `contextId` form a
//! conversation: earlier answered questions are sent along to the ask
//! pipeline. A message without text opens a task that waits for input
//! (`TASK_STATE_INPUT_REQUIRED`); such a task, or one still working, can be
//! canceled.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::ids::new_id;
use crow_schemas::A2A_TASKS;
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ask::{AskAnswer, AskRequest, Progress};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// The JSON-RPC endpoint's path.
pub const PATH: &str = "/a2a";
/// Earlier questions of a context sent along with a new one.
const CONTEXT_TURNS: usize = 10;
/// Longest `contextId` or `messageId` a caller may choose.
const MAX_CONTEXT_ID: usize = 200;
/// Longest message text, in characters (Ask CROW's longest question).
const MAX_TEXT: usize = 2000;
/// Largest `pageSize` of `ListTasks`.
const MAX_PAGE: usize = 100;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL: i64 = -32603;
const TASK_NOT_FOUND: i64 = -32001;
const TASK_NOT_CANCELABLE: i64 = -32002;
const UNSUPPORTED: i64 = -32004;
const VERSION_NOT_SUPPORTED: i64 = -32009;
/// The header a 1.0 client names its protocol version in.
const VERSION_HEADER: &str = "a2a-version";

const WORKING: &str = "TASK_STATE_WORKING";
const INPUT_REQUIRED: &str = "TASK_STATE_INPUT_REQUIRED";
const COMPLETED: &str = "TASK_STATE_COMPLETED";
const FAILED: &str = "TASK_STATE_FAILED";
const REJECTED: &str = "TASK_STATE_REJECTED";
const CANCELED: &str = "TASK_STATE_CANCELED";
const TERMINAL: &[&str] = &[COMPLETED, FAILED, REJECTED, CANCELED];

/// What an empty message is answered with.
const ASK_FOR_INPUT: &str = "Ask a question about your organization's interactions, \
     e.g. \"top 5 products by views\" or \"weekly report\".";

/// A JSON-RPC error.
#[derive(Debug)]
struct RpcErr {
    code: i64,
    message: String,
}

fn rpc_err(code: i64, message: impl Into<String>) -> RpcErr {
    RpcErr {
        code,
        message: message.into(),
    }
}

fn lake_err(what: &str) -> impl Fn(crow_lake::Error) -> RpcErr + '_ {
    move |e| rpc_err(INTERNAL, ApiError::from_lake(what, &e).detail)
}

/// The protocol version a call speaks, from its method name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    V1,
    V03,
}

/// One row of `a2a_tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskRow {
    org_id: String,
    task_id: String,
    context_id: String,
    key_id: String,
    state: String,
    question: Option<String>,
    sql: Option<String>,
    task: String,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    updated_at: DateTime<Utc>,
}

impl TaskRow {
    fn value(&self) -> Value {
        serde_json::from_str(&self.task).unwrap_or_else(|_| json!({"id": self.task_id}))
    }

    /// Set the state (and the agent's message saying why) and keep the
    /// task JSON in step.
    fn set_status(&mut self, state: &str, say: Option<&str>) {
        let mut t = self.value();
        let mut status = json!({"state": state, "timestamp": now()});
        if let Some(text) = say {
            let m = agent_message(&self.context_id, &self.task_id, text);
            status["message"] = m.clone();
            push(&mut t, "history", m);
        }
        t["status"] = status;
        self.state = state.to_string();
        self.updated_at = Utc::now();
        self.task = t.to_string();
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn push(t: &mut Value, field: &str, v: Value) {
    match t[field].as_array_mut() {
        Some(a) => a.push(v),
        None => t[field] = json!([v]),
    }
}

fn agent_message(context_id: &str, task_id: &str, text: &str) -> Value {
    json!({"messageId": new_id("msg"), "role": "ROLE_AGENT", "parts": [{"text": text}],
           "contextId": context_id, "taskId": task_id})
}

async fn save(st: &ApiState, row: &TaskRow) -> Result<(), RpcErr> {
    let batch = rows_to_batch(&A2A_TASKS, std::slice::from_ref(row))
        .map_err(lake_err("saving the task"))?;
    st.lake
        .merge(A2A_TASKS.name, vec![batch], &["task_id"])
        .await
        .map_err(lake_err("saving the task"))?;
    Ok(())
}

/// Save a task unless it has ended meanwhile (an answer racing a cancel,
/// a cancel racing an answer, on this server or another): the update
/// applies only to a stored task that is still open, atomically with the
/// commit. False when the stored task had already ended.
async fn save_if_open(st: &ApiState, row: &TaskRow) -> Result<bool, RpcErr> {
    let batch = rows_to_batch(&A2A_TASKS, std::slice::from_ref(row))
        .map_err(lake_err("saving the task"))?;
    let ended = TERMINAL.iter().map(|s| lit(*s)).collect();
    let (inserted, updated) = st
        .lake
        .merge_if(
            A2A_TASKS.name,
            vec![batch],
            &["task_id"],
            Some(&col("target.state").in_list(ended, true)),
        )
        .await
        .map_err(lake_err("saving the task"))?;
    Ok(inserted + updated > 0)
}

/// The organization's tasks (of one context, when given), newest first.
async fn tasks_of(
    st: &ApiState,
    org_id: &str,
    context_id: Option<&str>,
) -> Result<Vec<TaskRow>, RpcErr> {
    let mut df = st
        .lake
        .dataframe(A2A_TASKS.name)
        .await
        .map_err(lake_err("reading tasks"))?
        .filter(col("org_id").eq(lit(org_id)))
        .map_err(|e| rpc_err(INTERNAL, e.to_string()))?;
    if let Some(c) = context_id {
        df = df
            .filter(col("context_id").eq(lit(c)))
            .map_err(|e| rpc_err(INTERNAL, e.to_string()))?;
    }
    let batches = df
        .collect()
        .await
        .map_err(|e| rpc_err(INTERNAL, e.to_string()))?;
    let mut rows: Vec<TaskRow> = batches_to_rows(&batches).map_err(lake_err("reading tasks"))?;
    rows.sort_by(|a, b| {
        b.updated_at
            .cmp(&a.updated_at)
            .then(b.task_id.cmp(&a.task_id))
    });
    Ok(rows)
}

/// The organization's task `id`; TaskNotFound for any other (another
/// organization's tasks are not found, like ones that never existed).
async fn task_of(st: &ApiState, org_id: &str, id: &str) -> Result<TaskRow, RpcErr> {
    let df = st
        .lake
        .dataframe(A2A_TASKS.name)
        .await
        .map_err(lake_err("reading tasks"))?
        .filter(
            col("org_id")
                .eq(lit(org_id))
                .and(col("task_id").eq(lit(id))),
        )
        .map_err(|e| rpc_err(INTERNAL, e.to_string()))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| rpc_err(INTERNAL, e.to_string()))?;
    let rows: Vec<TaskRow> = batches_to_rows(&batches).map_err(lake_err("reading tasks"))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| rpc_err(TASK_NOT_FOUND, format!("no task {id}")))
}

// ---- the wire: 1.0 is stored; 0.3 is derived ----

fn v03_state(s: &str) -> String {
    s.strip_prefix("TASK_STATE_")
        .unwrap_or(s)
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn v03_parts(parts: &Value) -> Value {
    let mapped: Vec<Value> = parts
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    if let Some(t) = p.get("text") {
                        json!({"kind": "text", "text": t})
                    } else if let Some(d) = p.get("data") {
                        json!({"kind": "data", "data": d})
                    } else {
                        p.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(mapped)
}

fn v03_message(m: &Value) -> Value {
    let mut m = m.clone();
    m["kind"] = json!("message");
    m["role"] = json!(if m["role"] == "ROLE_AGENT" {
        "agent"
    } else {
        "user"
    });
    m["parts"] = v03_parts(&m["parts"]);
    m
}

fn v03_status(s: &Value) -> Value {
    let mut s = s.clone();
    s["state"] = json!(v03_state(s["state"].as_str().unwrap_or("")));
    if s.get("message").is_some() {
        s["message"] = v03_message(&s["message"]);
    }
    s
}

/// A stored task as the caller's version shows it, with at most
/// `history` messages of history (the latest) and, unless `artifacts`,
/// no artifacts.
fn shown(t: &Value, wire: Wire, history: Option<usize>, artifacts: bool) -> Value {
    let mut t = t.clone();
    if let (Some(n), Some(h)) = (history, t.get_mut("history").and_then(Value::as_array_mut)) {
        let drop = h.len().saturating_sub(n);
        h.drain(..drop);
    }
    if !artifacts {
        if let Some(o) = t.as_object_mut() {
            o.remove("artifacts");
        }
    }
    if wire == Wire::V1 {
        return t;
    }
    t["kind"] = json!("task");
    t["status"] = v03_status(&t["status"]);
    if let Some(h) = t.get_mut("history").and_then(Value::as_array_mut) {
        for m in h.iter_mut() {
            *m = v03_message(m);
        }
    }
    if let Some(a) = t.get_mut("artifacts").and_then(Value::as_array_mut) {
        for art in a.iter_mut() {
            art["parts"] = v03_parts(&art["parts"]);
        }
    }
    t
}

// ---- the agent card ----

/// `GET /.well-known/agent-card.json`: who the agent is, its skills, where
/// and how to call it. Public. The 1.0 card, with the 0.3 fields (`url`,
/// `preferredTransport`, `protocolVersion`) that older clients look for.
pub async fn card(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    let url = format!("{proto}://{host}{PATH}");
    let card = json!({
        "name": "CROW",
        "description": "Answers questions about your organization's customer interactions \
            (web sessions, social captures, in-store transcripts), products and weekly \
            patterns, with numbers taken from your own rows. Each answer carries the SQL \
            that produced it and the rows.",
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
        ],
        "provider": {"organization": "CROW", "url": format!("{proto}://{host}")},
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "securitySchemes": {
            "crowApiKey": {"httpAuthSecurityScheme": {
                "scheme": "Bearer",
                "description": "A CROW API key (read scope or higher) of your organization: \
                    `Authorization: Bearer crow_…`. It decides whose data is answered."
            }}
        },
        "securityRequirements": [{"schemes": {"crowApiKey": {"list": []}}}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [
            {"id": "ask", "name": "Answer questions about interactions and patterns",
             "description": "A question in plain language about the organization's interactions, \
                sessions, products, conversion or patterns, answered from its rows: the answer \
                in words (every number from the rows), the SQL and the rows (JSON).",
             "tags": ["analytics", "sql", "interactions", "patterns"],
             "examples": ["Top 5 products by views", "conversion by device",
                          "revenue trend over the last 7 days", "Show me interactions about Aria"],
             "inputModes": ["text/plain"], "outputModes": ["text/plain", "application/json"]},
            {"id": "weekly-report", "name": "Weekly report",
             "description": "This week's patterns (what changed, for which segment, how \
                significant): send the text \"weekly report\".",
             "tags": ["report", "patterns", "weekly"],
             "examples": ["weekly report", "what are this week's patterns?"],
             "inputModes": ["text/plain"], "outputModes": ["text/plain", "application/json"]}
        ],
        "url": url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0"
    });
    axum::Json(card).into_response()
}

// ---- JSON-RPC ----

fn rpc_reply(id: &Value, r: Result<Value, RpcErr>) -> Value {
    match r {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id,
                         "error": {"code": e.code, "message": e.message}}),
    }
}

/// `POST /a2a`: one JSON-RPC request.
pub async fn post(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match crate::auth::agent_caller(&st, &headers, "/a2a").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let e = rpc_err(PARSE_ERROR, format!("the body is not JSON: {e}"));
            return axum::Json(rpc_reply(&Value::Null, Err(e))).into_response();
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let (Some(method), true) = (
        req["method"].as_str(),
        req["jsonrpc"] == "2.0" && (id.is_string() || id.is_number() || id.is_null()),
    ) else {
        let e = rpc_err(
            INVALID_REQUEST,
            "send one JSON-RPC 2.0 request: {\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"SendMessage\", \"params\": {…}}",
        );
        return axum::Json(rpc_reply(&id, Err(e))).into_response();
    };
    let version = headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("?").trim().to_string());
    let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if let Some(v) =
        version.filter(|v| !v.is_empty() && !["1.0", "0.3"].contains(&major_minor(v).as_str()))
    {
        let e = rpc_err(
            VERSION_NOT_SUPPORTED,
            format!("A2A-Version {v} is not supported; this agent speaks 1.0 and 0.3"),
        );
        return axum::Json(rpc_reply(&id, Err(e))).into_response();
    }
    let params = req.get("params").cloned().unwrap_or(json!({}));
    let r = match method {
        "SendMessage" => send(&st, &p, &params, Wire::V1).await,
        "message/send" => send(&st, &p, &params, Wire::V03).await,
        "SendStreamingMessage" => return stream(st, p, id, params, Wire::V1).await,
        "message/stream" => return stream(st, p, id, params, Wire::V03).await,
        "GetTask" => get_task(&st, &p, &params, Wire::V1).await,
        "tasks/get" => get_task(&st, &p, &params, Wire::V03).await,
        "ListTasks" => list_tasks(&st, &p, &params, Wire::V1).await,
        "tasks/list" => list_tasks(&st, &p, &params, Wire::V03).await,
        "CancelTask" => cancel(&st, &p, &params, Wire::V1).await,
        "tasks/cancel" => cancel(&st, &p, &params, Wire::V03).await,
        other => Err(rpc_err(
            METHOD_NOT_FOUND,
            format!(
                "no method {other}; this agent answers SendMessage, SendStreamingMessage, GetTask, \
                 ListTasks, CancelTask (and the 0.3 names message/send, message/stream, tasks/get, \
                 tasks/list, tasks/cancel)"
            ),
        )),
    };
    axum::Json(rpc_reply(&id, r)).into_response()
}

fn task_id_param(params: &Value) -> Result<&str, RpcErr> {
    params["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| rpc_err(INVALID_PARAMS, "`id` (the task id) is required"))
}

fn history_param(params: &Value) -> Result<Option<usize>, RpcErr> {
    match &params["historyLength"] {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| rpc_err(INVALID_PARAMS, "`historyLength` must be a whole number")),
    }
}

async fn get_task(
    st: &ApiState,
    p: &Principal,
    params: &Value,
    wire: Wire,
) -> Result<Value, RpcErr> {
    let id = task_id_param(params)?;
    let history = history_param(params)?;
    let row = task_of(st, &p.org_id, id).await?;
    Ok(shown(&row.value(), wire, history, true))
}

async fn list_tasks(
    st: &ApiState,
    p: &Principal,
    params: &Value,
    wire: Wire,
) -> Result<Value, RpcErr> {
    let history = history_param(params)?;
    let size = match &params["pageSize"] {
        Value::Null => 50,
        v => v
            .as_u64()
            .filter(|n| (1..=MAX_PAGE as u64).contains(n))
            .ok_or_else(|| {
                rpc_err(
                    INVALID_PARAMS,
                    format!("`pageSize` must be 1 to {MAX_PAGE}"),
                )
            })? as usize,
    };
    let start = match params["pageToken"].as_str().filter(|s| !s.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| rpc_err(INVALID_PARAMS, "`pageToken` is not a token of this listing"))?,
    };
    let state = params["status"].as_str().map(|s| {
        if s.starts_with("TASK_STATE_") {
            s.to_string()
        } else {
            format!("TASK_STATE_{}", s.to_ascii_uppercase().replace('-', "_"))
        }
    });
    let artifacts = params["includeArtifacts"].as_bool().unwrap_or(false);
    let rows: Vec<TaskRow> = tasks_of(st, &p.org_id, params["contextId"].as_str())
        .await?
        .into_iter()
        .filter(|r| state.as_ref().is_none_or(|s| r.state == *s))
        .collect();
    let tasks: Vec<Value> = rows
        .iter()
        .skip(start)
        .take(size)
        .map(|r| shown(&r.value(), wire, history, artifacts))
        .collect();
    let next = if start + size < rows.len() {
        (start + size).to_string()
    } else {
        String::new()
    };
    Ok(json!({"tasks": tasks, "nextPageToken": next, "pageSize": size, "totalSize": rows.len()}))
}

async fn cancel(st: &ApiState, p: &Principal, params: &Value, wire: Wire) -> Result<Value, RpcErr> {
    let id = task_id_param(params)?;
    let mut row = task_of(st, &p.org_id, id).await?;
    if TERMINAL.contains(&row.state.as_str()) {
        return Err(rpc_err(
            TASK_NOT_CANCELABLE,
            format!("task {id} is already {}", v03_state(&row.state)),
        ));
    }
    row.set_status(CANCELED, Some("Canceled at the client's request."));
    if !save_if_open(st, &row).await? {
        let now = task_of(st, &p.org_id, id).await?;
        return Err(rpc_err(
            TASK_NOT_CANCELABLE,
            format!("task {id} is already {}", v03_state(&now.state)),
        ));
    }
    crate::audit_call(
        st,
        p,
        "a2a.cancel",
        id,
        true,
        json!({"context_id": row.context_id}),
    )
    .await;
    Ok(shown(&row.value(), wire, None, true))
}

// ---- messages ----

/// A task about to be answered: its row (with the user's message in its
/// history) and the question with the conversation before it; `None` when
/// the task needs no answer (it waits for input).
struct Prepared {
    row: TaskRow,
    ask: Option<AskRequest>,
}

/// The text of a message's text parts (both versions carry `text`).
fn message_text(m: &Value) -> String {
    m["parts"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What a message without `parts` is told, with an example message.
const MESSAGE_REQUIRED: &str = "`message` with `parts` is required, e.g. {\"message\": {\"messageId\": \"1\", \"role\": \"ROLE_USER\", \"parts\": [{\"text\": \"top 5 products by views\"}]}}";

/// Open (or continue) the task of the message in `params`.
async fn prepare(st: &ApiState, p: &Principal, params: &Value) -> Result<Prepared, RpcErr> {
    let m = &params["message"];
    let text = checked_text(m)?;
    let mut row = open_task(st, p, m).await?;
    let user = json!({
        "messageId": m["messageId"].as_str().map(str::to_string).unwrap_or_else(|| new_id("msg")),
        "role": "ROLE_USER", "parts": [{"text": text}],
        "contextId": row.context_id, "taskId": row.task_id,
    });
    let mut t = row.value();
    push(&mut t, "history", user);
    row.task = t.to_string();
    if text.is_empty() {
        row.set_status(INPUT_REQUIRED, Some(ASK_FOR_INPUT));
        return Ok(Prepared { row, ask: None });
    }
    let question = if text.eq_ignore_ascii_case("weekly report") {
        "what are this week's patterns?".to_string()
    } else {
        text
    };
    let conversation = earlier_turns(st, &p.org_id, &row).await?;
    row.question = Some(question.clone());
    row.set_status(WORKING, None);
    Ok(Prepared {
        row,
        ask: Some(AskRequest {
            question,
            conversation,
        }),
    })
}

/// The text of message `m`, once its shape, its text's length and its
/// `messageId`'s length are checked.
fn checked_text(m: &Value) -> Result<String, RpcErr> {
    if !m.is_object() || !m["parts"].is_array() {
        return Err(rpc_err(INVALID_PARAMS, MESSAGE_REQUIRED));
    }
    let text = message_text(m);
    if text.chars().count() > MAX_TEXT {
        return Err(rpc_err(
            INVALID_PARAMS,
            format!("a message's text must be at most {MAX_TEXT} characters"),
        ));
    }
    if m["messageId"]
        .as_str()
        .is_some_and(|id| id.chars().count() > MAX_CONTEXT_ID)
    {
        return Err(rpc_err(
            INVALID_PARAMS,
            format!("`messageId` must be at most {MAX_CONTEXT_ID} characters"),
        ));
    }
    Ok(text)
}

/// The task message `m` continues (`taskId`: it must be waiting for input),
/// or a new one in its `contextId` (or a new context).
async fn open_task(st: &ApiState, p: &Principal, m: &Value) -> Result<TaskRow, RpcErr> {
    let Some(id) = m["taskId"].as_str().filter(|s| !s.is_empty()) else {
        return new_row(p, m["contextId"].as_str());
    };
    let row = task_of(st, &p.org_id, id).await?;
    if row.state != INPUT_REQUIRED {
        return Err(rpc_err(
            UNSUPPORTED,
            format!(
                "task {id} is {} and takes no more messages; send a new message with \
                 contextId {} to follow up",
                v03_state(&row.state),
                row.context_id
            ),
        ));
    }
    Ok(row)
}

/// The last completed turns of `row`'s context (other tasks, at most
/// [`CONTEXT_TURNS`]), oldest first, as the question and SQL of each.
async fn earlier_turns(st: &ApiState, org_id: &str, row: &TaskRow) -> Result<Vec<Value>, RpcErr> {
    let mut earlier: Vec<Value> = tasks_of(st, org_id, Some(&row.context_id))
        .await?
        .into_iter()
        .filter(|r| r.state == COMPLETED && r.task_id != row.task_id)
        .take(CONTEXT_TURNS)
        .map(|r| json!({"question": r.question, "sql": r.sql}))
        .collect();
    earlier.reverse();
    Ok(earlier)
}

fn new_row(p: &Principal, context_id: Option<&str>) -> Result<TaskRow, RpcErr> {
    let context_id = match context_id.filter(|c| !c.is_empty()) {
        Some(c) if c.chars().count() > MAX_CONTEXT_ID || c.chars().any(char::is_control) => {
            return Err(rpc_err(
                INVALID_PARAMS,
                format!("`contextId` must be at most {MAX_CONTEXT_ID} printable characters"),
            ))
        }
        Some(c) => c.to_string(),
        None => new_id("ctx"),
    };
    let task_id = new_id("tsk");
    let now = Utc::now();
    let task = json!({"id": task_id, "contextId": context_id,
                      "status": {"state": WORKING, "timestamp": now_text(now)}, "history": []});
    Ok(TaskRow {
        org_id: p.org_id.clone(),
        task_id,
        context_id,
        key_id: p.key_id.clone(),
        state: WORKING.into(),
        question: None,
        sql: None,
        task: task.to_string(),
        created_at: now,
        updated_at: now,
    })
}

fn now_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The answer's artifact: the words, then the SQL, rows and chart.
fn answer_artifact(a: &AskAnswer) -> Value {
    json!({
        "artifactId": new_id("art"),
        "name": "answer",
        "description": "The answer in words, then the query, its rows and a suggested chart.",
        "parts": [
            {"text": a.answer},
            {"data": {"question": a.question, "sql": a.sql, "columns": a.columns, "rows": a.rows,
                      "truncated": a.truncated, "chart": a.chart, "answer_source": a.answer_source,
                      "attempts": a.attempts, "provider": a.provider, "model": a.model},
             "mediaType": "application/json"}
        ]
    })
}

/// Answer a prepared task: run the question, record the outcome (unless
/// the task was canceled meanwhile), audit. Returns the final row.
async fn answer(
    st: &Arc<ApiState>,
    p: &Principal,
    mut row: TaskRow,
    req: &AskRequest,
    progress: Option<&Progress>,
) -> Result<TaskRow, RpcErr> {
    let r: ApiResult<AskAnswer> = crate::ask::ask_streaming(st, p, req, progress).await;
    match &r {
        Ok(a) => {
            let mut t = row.value();
            push(&mut t, "artifacts", answer_artifact(a));
            row.task = t.to_string();
            row.sql = Some(a.sql.clone());
            row.set_status(COMPLETED, Some(&a.answer));
        }
        Err(e) if e.status.is_client_error() => {
            row.set_status(REJECTED, Some(&e.detail));
        }
        Err(e) => row.set_status(FAILED, Some(&e.detail)),
    }
    if !save_if_open(st, &row).await? {
        // Canceled meanwhile: the cancel stands.
        return task_of(st, &p.org_id, &row.task_id).await;
    }
    let detail = json!({"task_id": row.task_id, "context_id": row.context_id, "state": row.state,
                        "sql": row.sql});
    crate::audit_call(
        st,
        p,
        "a2a.message",
        row.question.as_deref().unwrap_or(""),
        r.is_ok(),
        detail,
    )
    .await;
    Ok(row)
}

/// `SendMessage` / `message/send`: answer, then return the task. With
/// `configuration.returnImmediately` (1.0) or `configuration.blocking:
/// false` (0.3) the working task comes back at once and is answered in the
/// background (poll it with `GetTask`).
async fn send(
    st: &Arc<ApiState>,
    p: &Principal,
    params: &Value,
    wire: Wire,
) -> Result<Value, RpcErr> {
    let history = history_param(&params["configuration"])?;
    let at_once = params["configuration"]["returnImmediately"] == true
        || params["configuration"]["blocking"] == false;
    let Prepared { row, ask } = prepare(st, p, params).await?;
    let row = match ask {
        None => {
            save(st, &row).await?;
            row
        }
        Some(req) if at_once => {
            save(st, &row).await?;
            let (st2, p2, r2) = (st.clone(), p.clone(), row.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(&st2, &p2, r2, &req, None).await {
                    tracing::warn!(error = %e.message, "answering an A2A task");
                }
            });
            row
        }
        Some(req) => answer(st, p, row, &req, None).await?,
    };
    let t = shown(&row.value(), wire, history, true);
    Ok(if wire == Wire::V1 {
        json!({"task": t})
    } else {
        t
    })
}

/// One event of a stream, as the caller's version shapes it.
fn event(wire: Wire, kind: &str, row: &TaskRow, payload: Value) -> Value {
    let last = TERMINAL.contains(&row.state.as_str()) || row.state == INPUT_REQUIRED;
    match (wire, kind) {
        (Wire::V1, "task") => json!({"task": payload}),
        (Wire::V03, "task") => payload,
        (Wire::V1, "status") => json!({"statusUpdate": {"taskId": row.task_id,
            "contextId": row.context_id, "status": payload}}),
        (Wire::V03, "status") => json!({"kind": "status-update", "taskId": row.task_id,
            "contextId": row.context_id, "status": v03_status(&payload), "final": last}),
        (Wire::V1, _) => json!({"artifactUpdate": {"taskId": row.task_id,
            "contextId": row.context_id, "artifact": payload, "lastChunk": true}}),
        (Wire::V03, _) => json!({"kind": "artifact-update", "taskId": row.task_id,
            "contextId": row.context_id, "lastChunk": true,
            "artifact": {"artifactId": payload["artifactId"], "name": payload["name"],
                         "parts": v03_parts(&payload["parts"])}}),
    }
}

/// `SendStreamingMessage` / `message/stream`: server-sent events, each a
/// JSON-RPC response: the task (working), a status update per query tried,
/// the answer's artifact, the final status.
async fn stream(st: Arc<ApiState>, p: Principal, id: Value, params: Value, wire: Wire) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let prepared = match prepare(&st, &p, &params).await {
        Ok(x) => x,
        Err(e) => return axum::Json(rpc_reply(&id, Err(e))).into_response(),
    };
    if let Err(e) = save(&st, &prepared.row).await {
        return axum::Json(rpc_reply(&id, Err(e))).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let first = shown(&prepared.row.value(), wire, None, true);
    let _ = tx.send(rpc_reply(
        &id,
        Ok(event(wire, "task", &prepared.row, first)),
    ));
    tokio::spawn(async move {
        let Prepared { row, ask } = prepared;
        let Some(req) = ask else { return };
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Value)>();
        let working = row.clone();
        let (tx2, id2) = (tx.clone(), id.clone());
        let forward = tokio::spawn(async move {
            while let Some((step, data)) = prx.recv().await {
                let text = match step {
                    "sql" => format!("Running: {}", data["sql"].as_str().unwrap_or("")),
                    "repair" => format!("Repairing: {}", data["error"].as_str().unwrap_or("")),
                    "step" => format!("Answered: {}", data["question"].as_str().unwrap_or("")),
                    _ => continue,
                };
                let m = agent_message(&working.context_id, &working.task_id, &text);
                let status = json!({"state": WORKING, "message": m, "timestamp": now()});
                let _ = tx2.send(rpc_reply(&id2, Ok(event(wire, "status", &working, status))));
            }
        });
        let done = answer(&st, &p, row, &req, Some(&ptx)).await;
        drop(ptx);
        let _ = forward.await;
        match done {
            Ok(row) => {
                let t = row.value();
                for art in t["artifacts"].as_array().into_iter().flatten() {
                    let _ = tx.send(rpc_reply(
                        &id,
                        Ok(event(wire, "artifact", &row, art.clone())),
                    ));
                }
                let _ = tx.send(rpc_reply(
                    &id,
                    Ok(event(wire, "status", &row, t["status"].clone())),
                ));
            }
            Err(e) => {
                let _ = tx.send(rpc_reply(&id, Err(e)));
            }
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(v.to_string())),
            rx,
        ))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
