//! `/api/v1/chats`: a signed-in user's conversations with Ask CROW.
//!
//! A chat is a row of `chats` owned by one user of one organization; its
//! messages are rows of `chat_messages` (a question, then its answer with
//! the SQL, a summary of the result, the rows shown, the words, timing and
//! tokens, or the error that stopped it). Only the owner lists, opens,
//! continues, renames or deletes a chat: any other user, of the same
//! organization or another, gets 404 as for a chat that never existed.
//! An API key has no user, so no chats: 403 `user_required` (it asks with
//! `POST /api/v1/ask`, sending its earlier turns in `conversation`).
//!
//! Continuing a chat runs the ask pipeline ([`crate::ask::ask_streaming`])
//! with the chat's earlier turns (their questions and SQL) as the
//! conversation, so a follow-up ("and on mobile?") is read with the
//! questions before it. With `Accept: text/event-stream` the answer streams
//! as `/api/v1/ask`'s does; it is stored when it completes, whether or not
//! the client is still listening.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crow_lake::batch::{rows_to_batch, ts_micros};
use crow_lake::ids::new_id;
use crow_schemas::{CHATS, CHAT_MESSAGES};
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ask::{AskAnswer, AskRequest, Progress};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::owned::{body_or_empty, clean_text, lake_err, ts, Owned, OwnedRow};
use crate::ApiState;

/// Earlier answered turns sent along with a new question.
pub const CONTEXT_TURNS: usize = 10;
/// Longest title, in characters.
const MAX_TITLE: usize = 200;
/// A title taken from the first question is cut to this many characters.
const TITLE_FROM_QUESTION: usize = 80;
/// Messages one chat holds at most (a question and its answer are two).
const MAX_MESSAGES: i64 = 1000;

/// One row of `chats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChatRow {
    org_id: String,
    chat_id: String,
    user_id: String,
    title: String,
    message_count: i64,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    updated_at: DateTime<Utc>,
}

/// One row of `chat_messages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MessageRow {
    org_id: String,
    chat_id: String,
    message_id: String,
    seq: i64,
    role: String,
    question: String,
    sql: Option<String>,
    row_count: Option<i64>,
    columns: Option<Vec<String>>,
    truncated: Option<bool>,
    rows: Option<String>,
    chart: Option<String>,
    answer: Option<String>,
    answer_source: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    duration_ms: Option<i64>,
    error_code: Option<String>,
    error: Option<String>,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
}

impl ChatRow {
    fn json(&self) -> Value {
        json!({"id": self.chat_id, "title": self.title, "message_count": self.message_count,
               "created_at": ts(self.created_at), "updated_at": ts(self.updated_at)})
    }
}

impl OwnedRow for ChatRow {
    fn id(&self) -> &str {
        &self.chat_id
    }

    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

/// Chats as owned rows.
const CHAT: Owned = Owned {
    table: &CHATS,
    id_col: "chat_id",
    prefix: "cht",
    noun: "chat",
    plural: "chats",
    api_key_hint: "sign in, or ask with POST /api/v1/ask and send earlier turns in `conversation`",
    reading: "reading chats",
};

impl MessageRow {
    fn json(&self) -> Value {
        let parsed = |t: &Option<String>| {
            t.as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .unwrap_or(Value::Null)
        };
        let error = self
            .error_code
            .as_ref()
            .map(|c| json!({"code": c, "detail": self.error.clone().unwrap_or_default()}));
        json!({
            "id": self.message_id, "seq": self.seq, "role": self.role, "question": self.question,
            "sql": self.sql, "row_count": self.row_count, "columns": self.columns,
            "truncated": self.truncated, "rows": parsed(&self.rows), "chart": parsed(&self.chart),
            "answer": self.answer, "answer_source": self.answer_source,
            "provider": self.provider, "model": self.model,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "duration_ms": self.duration_ms, "error": error, "created_at": ts(self.created_at),
        })
    }

    /// The turn the provider sees: the question and, when it was
    /// answered, the query that answered it.
    fn turn(&self) -> Value {
        match &self.sql {
            Some(sql) => json!({"question": self.question, "sql": sql}),
            None => json!({"question": self.question}),
        }
    }
}

/// A chat's messages, in order.
async fn messages_of(st: &ApiState, chat: &ChatRow) -> ApiResult<Vec<MessageRow>> {
    let mut rows: Vec<MessageRow> = CHAT
        .read(
            st,
            CHAT_MESSAGES.name,
            col("org_id")
                .eq(lit(chat.org_id.as_str()))
                .and(col("chat_id").eq(lit(chat.chat_id.as_str()))),
        )
        .await?;
    rows.sort_by(|a, b| {
        a.seq
            .cmp(&b.seq)
            .then(a.created_at.cmp(&b.created_at))
            .then(a.message_id.cmp(&b.message_id))
    });
    Ok(rows)
}

async fn save_chat(st: &ApiState, chat: &ChatRow, if_count: Option<i64>) -> ApiResult<bool> {
    let cond = if_count.map(|n| col("target.message_count").eq(lit(n)));
    CHAT.save(st, chat, cond.as_ref(), "saving the chat").await
}

fn clean_title(t: &str) -> ApiResult<String> {
    clean_text(t, "title", "invalid_title", MAX_TITLE)
}

fn title_from(question: &str) -> String {
    let q: String = question
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if q.chars().count() <= TITLE_FROM_QUESTION {
        return q;
    }
    let cut: String = q.chars().take(TITLE_FROM_QUESTION - 1).collect();
    format!("{}…", cut.trim_end())
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Query parameters of `GET /api/v1/chats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/chats`: the signed-in user's chats, most recently changed
/// first, paged (`limit`, `cursor`).
pub async fn list(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let limit = crate::rest::page_size(q.limit.as_deref(), st.cfg.max_page_size)?;
    // The cursor is the last chat shown: its change time and id.
    let after = match &q.cursor {
        Some(c) => {
            let last = crate::rest::decode_cursor("chats", c)?;
            let parsed = last
                .split_once('/')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())));
            Some(parsed.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "`cursor` is not a cursor of this listing",
                )
            })?)
        }
        None => None,
    };
    let all: Vec<ChatRow> = CHAT.all_of(&st, &p, &user).await?;
    let rest: Vec<&ChatRow> = all
        .iter()
        .filter(|c| match &after {
            Some((t, id)) => {
                (c.updated_at.timestamp_micros(), c.chat_id.as_str()) < (*t, id.as_str())
            }
            None => true,
        })
        .collect();
    let page: Vec<Value> = rest.iter().take(limit).map(|c| c.json()).collect();
    let next = (rest.len() > limit).then(|| {
        let last = rest[limit - 1];
        let key = format!("{}/{}", last.updated_at.timestamp_micros(), last.chat_id);
        crate::rest::encode_cursor("chats", &key)
    });
    Ok(axum::Json(json!({"data": page, "next_cursor": next})).into_response())
}

/// Body of `POST /api/v1/chats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    question: Option<String>,
}

/// `POST /api/v1/chats`: a new chat (`title`, optional), answering its
/// first `question` when one is given (streamed with `Accept:
/// text/event-stream`). 201 with the chat and its messages.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let b: CreateBody =
        body_or_empty(&bytes, r#"{"title": "…", "question": "…"} (both optional)"#)?;
    let question = b
        .question
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty());
    if let Some(q) = question {
        check_question(q)?;
    }
    let title = match (&b.title, question) {
        (Some(t), _) => clean_title(t)?,
        (None, Some(q)) => title_from(q),
        (None, None) => "New chat".to_string(),
    };
    let now = Utc::now();
    let chat = ChatRow {
        org_id: p.org_id.clone(),
        chat_id: new_id("cht"),
        user_id: user,
        title,
        message_count: 0,
        created_at: now,
        updated_at: now,
    };
    save_chat(&st, &chat, None).await?;
    crate::audit_call(&st, &p, "chat.create", &chat.chat_id, true, json!({})).await;
    let Some(q) = question.map(str::to_string) else {
        return Ok((
            StatusCode::CREATED,
            axum::Json(json!({"chat": chat.json(), "messages": []})),
        )
            .into_response());
    };
    if wants_stream(&headers) {
        return Ok(stream(st, p, chat, q));
    }
    let turn = answer_in(&st, &p, chat, q, None).await?;
    Ok((StatusCode::CREATED, axum::Json(turn.json())).into_response())
}

/// `GET /api/v1/chats/{id}`: the chat and all its messages, in order.
pub async fn open(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let chat = CHAT.one_of::<ChatRow>(&st, &p, &user, &id).await?;
    let messages: Vec<Value> = messages_of(&st, &chat)
        .await?
        .iter()
        .map(MessageRow::json)
        .collect();
    Ok(axum::Json(json!({"chat": chat.json(), "messages": messages})).into_response())
}

/// Body of `PATCH /api/v1/chats/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    title: String,
}

/// `PATCH /api/v1/chats/{id}` `{"title": …}`: rename it.
pub async fn rename(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let mut chat = CHAT.one_of::<ChatRow>(&st, &p, &user, &id).await?;
    let b: RenameBody = body_or_empty(&bytes, r#"{"title": "Conversion questions"}"#)?;
    chat.title = clean_title(&b.title)?;
    chat.updated_at = Utc::now();
    save_chat(&st, &chat, None).await?;
    Ok(axum::Json(json!({"chat": chat.json()})).into_response())
}

/// `DELETE /api/v1/chats/{id}`: the chat and its messages, gone. 204.
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let chat = CHAT.one_of::<ChatRow>(&st, &p, &user, &id).await?;
    let pred = CHAT.row_predicate(&chat.org_id, &chat.chat_id);
    st.lake
        .delete_where(CHAT_MESSAGES.name, &pred)
        .await
        .map_err(lake_err("deleting the chat"))?;
    st.lake
        .delete_where(CHATS.name, &pred)
        .await
        .map_err(lake_err("deleting the chat"))?;
    crate::audit_call(&st, &p, "chat.delete", &chat.chat_id, true, json!({})).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /api/v1/chats/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    question: String,
}

/// `POST /api/v1/chats/{id}/messages` `{"question": …}`: answer it with
/// the chat's earlier turns as the conversation and store both messages.
/// 200 with the chat, the question and the reply (whose `error` says why
/// there is no answer, e.g. `question_not_supported`); streamed with
/// `Accept: text/event-stream`.
pub async fn post_message(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult<Response> {
    let (p, user) = CHAT.owner(&st, &headers).await?;
    let chat = CHAT.one_of::<ChatRow>(&st, &p, &user, &id).await?;
    let b: MessageBody = body_or_empty(&bytes, r#"{"question": "and on mobile?"}"#)?;
    let question = b.question.trim().to_string();
    check_question(&question)?;
    if chat.message_count + 2 > MAX_MESSAGES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "chat_full",
            format!("a chat holds at most {MAX_MESSAGES} messages: start a new chat"),
        ));
    }
    if wants_stream(&headers) {
        return Ok(stream(st, p, chat, question));
    }
    let turn = answer_in(&st, &p, chat, question, None).await?;
    Ok(axum::Json(turn.json()).into_response())
}

/// What the ask pipeline refuses before any work: checked here too, so a
/// bad question is a 400 and stores nothing.
fn check_question(q: &str) -> ApiResult<()> {
    let n = q.trim().chars().count();
    if n == 0 || n > 2000 {
        return Err(ApiError::bad_request(
            "invalid_question",
            "`question` must be 1 to 2000 characters",
        ));
    }
    Ok(())
}

/// One answered turn: the chat after it, the two stored messages and
/// the ask answer (or the problem that stopped it).
struct Turn {
    chat: ChatRow,
    question: MessageRow,
    reply: MessageRow,
    answer: Result<AskAnswer, ApiError>,
}

impl Turn {
    fn json(&self) -> Value {
        json!({"chat": self.chat.json(), "messages": [self.question.json(), self.reply.json()]})
    }
}

/// Answer `question` in `chat` and store it: the earlier turns go to the
/// pipeline as the conversation. Errors that say the question could not be
/// answered are stored on the reply; being over a limit (429) or a server
/// failure stores nothing and is returned.
async fn answer_in(
    st: &Arc<ApiState>,
    p: &Principal,
    chat: ChatRow,
    question: String,
    progress: Option<&Progress>,
) -> ApiResult<Turn> {
    let earlier = messages_of(st, &chat).await?;
    let conversation: Vec<Value> = earlier
        .iter()
        .filter(|m| m.role == "assistant")
        .map(MessageRow::turn)
        .collect();
    let skip = conversation.len().saturating_sub(CONTEXT_TURNS);
    let req = AskRequest {
        question: question.clone(),
        conversation: conversation[skip..].to_vec(),
    };
    let started = std::time::Instant::now();
    let r = crate::ask::ask_streaming(st, p, &req, progress).await;
    crate::ask::audit_ask(st, p, "ask", &question, &r).await;
    let r = match r {
        Err(e) if !stored_error(&e) => return Err(e),
        r => r,
    };
    let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = Utc::now();
    let mut q = MessageRow {
        org_id: chat.org_id.clone(),
        chat_id: chat.chat_id.clone(),
        message_id: new_id("cmg"),
        role: "user".into(),
        question: question.clone(),
        created_at: now,
        ..Default::default()
    };
    let mut reply = reply_row(&q, &r, ms, now);
    let chat = reserve(st, chat, &mut q, &mut reply).await?;
    let batch = rows_to_batch(&CHAT_MESSAGES, &[q.clone(), reply.clone()])
        .map_err(lake_err("saving the messages"))?;
    st.lake
        .append(CHAT_MESSAGES.name, vec![batch])
        .await
        .map_err(lake_err("saving the messages"))?;
    Ok(Turn {
        chat,
        question: q,
        reply,
        answer: r,
    })
}

/// Whether a problem of the pipeline is an answer to store ("this needs a
/// real model", a query that failed, the provider failing) rather than the
/// caller being over a limit (429) or the server failing.
fn stored_error(e: &ApiError) -> bool {
    e.status != StatusCode::TOO_MANY_REQUESTS
        && (!e.status.is_server_error() || e.code == "ai_failed")
}

fn reply_row(q: &MessageRow, r: &ApiResult<AskAnswer>, ms: i64, now: DateTime<Utc>) -> MessageRow {
    let mut m = MessageRow {
        message_id: new_id("cmg"),
        role: "assistant".into(),
        duration_ms: Some(ms),
        created_at: now,
        ..q.clone()
    };
    match r {
        Ok(a) => {
            let tokens = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
            m.sql = Some(a.sql.clone());
            m.row_count = Some(a.rows.len() as i64);
            m.columns = Some(a.columns.clone());
            m.truncated = Some(a.truncated);
            m.rows = serde_json::to_string(&a.rows).ok();
            m.chart = Some(a.chart.to_string());
            m.answer = Some(a.answer.clone());
            m.answer_source = Some(a.answer_source.to_string());
            m.provider = Some(a.provider.clone());
            m.model = Some(a.model.clone());
            m.input_tokens = tokens(a.input_tokens);
            m.output_tokens = tokens(a.output_tokens);
        }
        Err(e) => {
            m.error_code = Some(e.code.to_string());
            m.error = Some(e.detail.clone());
        }
    }
    m
}

/// Take the next two places in the chat (a compare-and-set on its message
/// count, so two turns answered at once on any server get distinct places)
/// and number the messages.
async fn reserve(
    st: &ApiState,
    mut chat: ChatRow,
    q: &mut MessageRow,
    reply: &mut MessageRow,
) -> ApiResult<ChatRow> {
    for _ in 0..5 {
        let seen = chat.message_count;
        let mut next = chat.clone();
        next.message_count = seen + 2;
        next.updated_at = Utc::now();
        if save_chat(st, &next, Some(seen)).await? {
            q.seq = seen + 1;
            reply.seq = seen + 2;
            return Ok(next);
        }
        let again: Vec<ChatRow> = CHAT
            .read(
                st,
                CHATS.name,
                col("chat_id").eq(lit(chat.chat_id.as_str())),
            )
            .await?;
        chat = again.into_iter().next().ok_or_else(|| CHAT.not_found())?;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "chat_busy",
        "the chat changed under this message several times: send it again",
    ))
}

/// The turn as server-sent events: `sql`, `repair`, `rows`, then `answer`
/// or `error` (as `/api/v1/ask`), then `message` (the chat and the two
/// stored messages) once stored.
fn stream(st: Arc<ApiState>, p: Principal, chat: ChatRow, question: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(("chat", json!({"chat": chat.json()})));
    tokio::spawn(async move {
        let problem = |e: &ApiError| serde_json::to_value(e.problem()).unwrap_or_default();
        match answer_in(&st, &p, chat, question, Some(&tx)).await {
            Ok(turn) => {
                let last = match &turn.answer {
                    Ok(a) => ("answer", serde_json::to_value(a).unwrap_or_default()),
                    Err(e) => ("error", problem(e)),
                };
                let _ = tx.send(last);
                let _ = tx.send(("message", turn.json()));
            }
            Err(e) => {
                let _ = tx.send(("error", problem(&e)));
            }
        }
    });
    crate::ask::event_stream(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_titles_and_turns() {
        assert!(CHAT.valid_id(&new_id("cht")));
        for bad in [
            "cht_x",
            "tsk_0123456789abcdefghjkmnpqrs",
            "cht_0123456789abcdefghjkmnpq'r",
        ] {
            assert!(!CHAT.valid_id(bad), "{bad}");
        }
        assert_eq!(
            title_from("  conversion by device "),
            "conversion by device"
        );
        let long = "why ".repeat(40);
        let t = title_from(&long);
        assert!(
            t.chars().count() <= TITLE_FROM_QUESTION && t.ends_with('…'),
            "{t}"
        );
        assert!(clean_title("  ").is_err() && clean_title("a\nb").is_err());
        let m = MessageRow {
            question: "conversion by device".into(),
            sql: Some("SELECT 1".into()),
            ..Default::default()
        };
        assert_eq!(
            m.turn(),
            json!({"question": "conversion by device", "sql": "SELECT 1"})
        );
    }
}
