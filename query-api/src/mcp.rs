//! `/mcp`: a Model Context Protocol server over streamable HTTP, so AI
//! clients (desktop assistants, agents) can read an organization's data.
//!
//! Two protocol revisions are spoken on the same endpoint:
//! - **2026-07-28** (stateless): no handshake and no session; every request
//!   carries its version in `_meta` (`io.modelcontextprotocol/protocolVersion`)
//!   and the `MCP-Protocol-Version` header; `server/discover` tells the
//!   client what the server supports.
//! - **2025-11-25** (and 2025-06-18, 2025-03-26): `initialize` opens a
//!   session whose id comes back as `Mcp-Session-Id`; later requests send it,
//!   `DELETE /mcp` ends it. Sessions live in this server's memory, belong to
//!   the key that opened them, and end after an hour without a request.
//!
//! Every request needs an API key (`Authorization: Bearer …`, read scope);
//! a request with an `Origin` other than the server's own host is refused
//! (DNS rebinding). Each tool runs its SQL through the caller's tenant
//! session ([`crate::ask::tenant_rows`], the path of `/api/v1/sql`), so a
//! key sees only its organization's rows, and every tool call is written to
//! the audit log (`mcp.tool_call`). Answers are JSON (no server-sent
//! events: no tool streams).
//!
//! Written by hand on axum rather than with the `rmcp` crate: the surface
//! is small (discovery, handshake, ping, tools, resources), the
//! authentication, tenant session and audit are CROW's own, and no new
//! dependency is needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::keys::Scope;
use crate::ApiState;

/// The stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Revisions reached through `initialize`, newest first.
pub const HANDSHAKE: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// The session header of the handshake revisions.
pub const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// Idle time after which a session ends.
const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Sessions kept at most (the oldest idle ones go first).
const MAX_SESSIONS: usize = 10_000;

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const UNSUPPORTED_VERSION: i64 = -32022;

#[derive(Debug, Clone)]
struct Session {
    key_id: String,
    last: Instant,
}

/// Open sessions of the handshake revisions.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn open(&self, key_id: &str) -> String {
        let id = crow_lake::ids::new_id("mcp");
        let Ok(mut m) = self.map.lock() else {
            return id;
        };
        m.retain(|_, s| s.last.elapsed() < SESSION_IDLE);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                key_id: key_id.to_string(),
                last: Instant::now(),
            },
        );
        id
    }

    /// Whether `id` is open and belongs to `key_id` (it counts as used).
    fn touch(&self, id: &str, key_id: &str) -> bool {
        self.touch_inner(id, key_id).is_some()
    }

    fn touch_inner(&self, id: &str, key_id: &str) -> Option<()> {
        let mut m = self.map.lock().ok()?;
        let s = m.get_mut(id)?;
        if s.key_id != key_id || s.last.elapsed() >= SESSION_IDLE {
            return None;
        }
        s.last = Instant::now();
        Some(())
    }

    fn close(&self, id: &str, key_id: &str) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        match m.get(id) {
            Some(s) if s.key_id == key_id => m.remove(id).is_some(),
            _ => false,
        }
    }
}

fn rpc_error(id: &Value, code: i64, message: impl Into<String>, data: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message.into()});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `GET /mcp`: no server-initiated stream is offered.
pub async fn get() -> Response {
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        "POST JSON-RPC requests to /mcp",
    )
        .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

/// `DELETE /mcp`: end a session.
pub async fn delete(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let p = match crate::auth::agent_caller(&st, &headers, "/mcp").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let id = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if st.mcp_sessions.close(id, &p.key_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found("no such MCP session").into_response()
    }
}

/// Which revision a request speaks, or the response refusing it.
enum Era {
    Modern,
    Legacy,
}

/// A refusal: its status and JSON-RPC error body.
type Refusal = (StatusCode, Value);

fn era_of(st: &ApiState, p: &Principal, headers: &HeaderMap, msg: &Value) -> Result<Era, Refusal> {
    let id = &msg["id"];
    let meta_version = msg["params"]["_meta"][VERSION_META].as_str();
    let header_version = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok());
    if msg["method"] == "initialize" {
        return Ok(Era::Legacy);
    }
    if let Some(v) = meta_version.or(if msg["method"] == "server/discover" {
        header_version
    } else {
        None
    }) {
        if v != MODERN || header_version.is_some_and(|h| h != v) {
            let supported: Vec<&str> = std::iter::once(MODERN)
                .chain(HANDSHAKE.iter().copied())
                .collect();
            return Err((
                StatusCode::BAD_REQUEST,
                rpc_error(
                    id,
                    UNSUPPORTED_VERSION,
                    format!("unsupported protocol version {v:?}"),
                    Some(json!({"supported": supported, "requested": v})),
                ),
            ));
        }
        return Ok(Era::Modern);
    }
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            rpc_error(
                id,
                INVALID_REQUEST,
                format!("send `initialize` first and then its Mcp-Session-Id, or use protocol version {MODERN} (`server/discover`)"),
                None,
            ),
        ));
    };
    if st.mcp_sessions.touch(sid, &p.key_id) {
        Ok(Era::Legacy)
    } else {
        Err((
            StatusCode::NOT_FOUND,
            rpc_error(
                id,
                INVALID_REQUEST,
                "unknown or ended MCP session: initialize again",
                None,
            ),
        ))
    }
}

/// `POST /mcp`: one JSON-RPC message.
pub async fn post(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = match crate::auth::agent_caller(&st, &headers, "/mcp").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let msg = match request_of(&headers, &body) {
        Ok(m) => m,
        Err((status, Some(error))) => return reply(status, &error),
        Err((status, None)) => return status.into_response(),
    };
    let era = match era_of(&st, &p, &headers, &msg) {
        Ok(e) => e,
        Err((status, body)) => return reply(status, &body),
    };
    let id = msg["id"].clone();
    let method = msg["method"].as_str().unwrap_or("");
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    let modern = matches!(era, Era::Modern);
    if method == "initialize" {
        return initialize(&st, &p, &id, &params);
    }
    let result = match method {
        "ping" => Ok(json!({})),
        "server/discover" if modern => Ok(discover()),
        "tools/list" => Ok(cacheable(
            json!({"tools": crate::mcp_tools::list(&p)}),
            modern,
        )),
        "tools/call" => crate::mcp_tools::call(&st, &p, &params).await,
        "resources/list" => Ok(cacheable(resources(&p), modern)),
        "resources/templates/list" => Ok(cacheable(json!({"resourceTemplates": []}), modern)),
        "resources/read" => read_resource(&p, &params),
        _ => Err((
            METHOD_NOT_FOUND,
            format!("method {method:?} is not offered"),
        )),
    };
    match result {
        Ok(mut r) => {
            if modern {
                r["resultType"] = json!("complete");
                r["_meta"] = json!({"io.modelcontextprotocol/serverInfo": server_info()});
            }
            reply(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "result": r}),
            )
        }
        Err((code, m)) => reply(StatusCode::OK, &rpc_error(&id, code, m, None)),
    }
}

/// The JSON-RPC request in `body`, or the status (and JSON-RPC error) to
/// answer when there is none to run: 400 for a body that is not one
/// request (or whose `Mcp-Method` header disagrees), 202 with no body for a
/// notification or a response.
fn request_of(headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, Option<Value>)> {
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Err((
                StatusCode::BAD_REQUEST,
                Some(rpc_error(
                    &Value::Null,
                    PARSE_ERROR,
                    format!("not JSON: {e}"),
                    None,
                )),
            ))
        }
    };
    if !msg.is_object() || msg["jsonrpc"] != "2.0" || !msg["method"].is_string() {
        if msg.get("result").is_some() || msg.get("error").is_some() {
            // A response to a request we never send.
            return Err((StatusCode::ACCEPTED, None));
        }
        return Err((
            StatusCode::BAD_REQUEST,
            Some(rpc_error(
                &msg["id"],
                INVALID_REQUEST,
                "send one JSON-RPC 2.0 request object",
                None,
            )),
        ));
    }
    if msg.get("id").is_none() {
        // Notifications (initialized, cancelled, …) need no answer.
        return Err((StatusCode::ACCEPTED, None));
    }
    let header_method = headers.get("mcp-method").and_then(|v| v.to_str().ok());
    if header_method.is_some_and(|m| msg["method"] != m) {
        return Err((
            StatusCode::BAD_REQUEST,
            Some(rpc_error(
                &msg["id"],
                INVALID_REQUEST,
                "the Mcp-Method header does not match the body's method",
                None,
            )),
        ));
    }
    Ok(msg)
}

fn cacheable(mut v: Value, modern: bool) -> Value {
    if modern {
        v["ttlMs"] = json!(0);
        v["cacheScope"] = json!("private");
    }
    v
}

fn server_info() -> Value {
    json!({"name": "crow", "title": "CROW interaction analytics", "version": env!("CARGO_PKG_VERSION")})
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}, "resources": {"listChanged": false, "subscribe": false}})
}

const INSTRUCTIONS: &str = "CROW holds one organization's customer interactions (web events, \
sessions, AI-written interactions, weekly/daily patterns, products, usage). Start with \
list_tables or ask; use run_sql for precise questions. Every result is this organization's only.";

fn discover() -> Value {
    let supported: Vec<&str> = std::iter::once(MODERN)
        .chain(HANDSHAKE.iter().copied())
        .collect();
    json!({
        "supportedVersions": supported,
        "capabilities": capabilities(),
        "instructions": INSTRUCTIONS,
        "ttlMs": 0,
        "cacheScope": "private",
    })
}

fn initialize(st: &ApiState, p: &Principal, id: &Value, params: &Value) -> Response {
    let asked = params["protocolVersion"].as_str().unwrap_or("");
    let version = if HANDSHAKE.contains(&asked) {
        asked
    } else {
        HANDSHAKE[0]
    };
    let sid = st.mcp_sessions.open(&p.key_id);
    let body = json!({"jsonrpc": "2.0", "id": id, "result": {
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }});
    let mut r = reply(StatusCode::OK, &body);
    if let Ok(v) = HeaderValue::from_str(&sid) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

const RESOURCE_PREFIX: &str = "crow://tables/";

fn resources(p: &Principal) -> Value {
    let list: Vec<Value> = crate::ask::visible_tables(p.scope == Scope::Admin)
        .map(|t| {
            json!({
                "uri": format!("{RESOURCE_PREFIX}{}", t.name),
                "name": t.name,
                "title": format!("Table contract: {}", t.name),
                "description": t.doc,
                "mimeType": "text/markdown",
            })
        })
        .collect();
    json!({"resources": list})
}

fn read_resource(p: &Principal, params: &Value) -> Result<Value, (i64, String)> {
    let uri = params["uri"].as_str().unwrap_or("");
    let t = uri
        .strip_prefix(RESOURCE_PREFIX)
        .and_then(|name| {
            crate::ask::visible_tables(p.scope == Scope::Admin).find(|t| t.name == name)
        })
        .ok_or_else(|| {
            (
                INVALID_PARAMS,
                format!("no such resource: {uri:?} (see resources/list)"),
            )
        })?;
    Ok(json!({"contents": [{
        "uri": uri,
        "mimeType": "text/markdown",
        "text": crate::ask::contract_markdown(t),
    }]}))
}
