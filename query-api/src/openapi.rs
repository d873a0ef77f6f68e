//! The OpenAPI 3 document served at `/api/v1/openapi.json`, built from the
//! code: row schemas come from the table contracts in `crow-schemas` (secret
//! columns removed, as the API removes them), result formats from
//! [`ResultFormat`], export formats and tables from [`crate::export`].
//!
//! (utoipa is the usual generator, but it turns on `indexmap/serde`, which
//! would change the features of crates under DataFusion; building the
//! document here keeps the dependency tree as it is.)

use serde_json::{json, Map, Value};

use crate::sql::ResultFormat;

fn column_schema(c: &crow_schemas::ColumnDef) -> Value {
    use crow_schemas::ColumnType as T;
    let mut s = match c.ty {
        T::Text => json!({"type": "string"}),
        T::Int64 | T::Int32 => json!({"type": "integer"}),
        T::Float64 => json!({"type": "number"}),
        T::Bool => json!({"type": "boolean"}),
        T::Timestamp => json!({"type": "string", "format": "date-time"}),
        T::Date => json!({"type": "string", "format": "date"}),
        T::TextList => json!({"type": "array", "items": {"type": "string"}}),
        T::Float32List => json!({"type": "array", "items": {"type": "number", "format": "float"}}),
    };
    if let Value::Object(m) = &mut s {
        m.insert("description".into(), json!(c.doc));
        if c.nullable {
            m.insert("nullable".into(), json!(true));
        }
    }
    s
}

/// JSON schema of one row of `table` as the API returns it.
fn row_schema(table: &str, only: Option<&[&str]>) -> Value {
    let Some(def) = crow_schemas::table(table) else {
        return json!({"type": "object"});
    };
    let mut props = Map::new();
    let mut required = Vec::new();
    for c in def.columns {
        if def.secret_columns.contains(&c.name) || only.is_some_and(|o| !o.contains(&c.name)) {
            continue;
        }
        props.insert(c.name.into(), column_schema(c));
        required.push(c.name);
    }
    json!({"type": "object", "description": def.doc, "properties": props, "required": required})
}

fn page(item: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
            "next_cursor": {"type": "string", "nullable": true,
                "description": "Pass as `cursor` for the next page; null on the last page."}
        }
    })
}

fn problem(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn errors(codes: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in codes {
        let d = match c {
            400 => "Invalid request (see `code`).",
            401 => "Missing, unknown, revoked or expired API key.",
            403 => "The key's scope does not allow this call.",
            404 => "Not found.",
            406 => "No supported result format in `Accept`.",
            408 => "The query ran past the timeout.",
            409 => "The export is not in a state that allows this (see `code`).",
            422 => "The question cannot be answered by the configured AI provider (question_not_supported).",
            429 => "Rate limit or concurrent-export limit exceeded; see Retry-After.",
            502 => "The AI provider failed or gave no usable query (ai_failed).",
            _ => "Error.",
        };
        let mut p = problem(d);
        if *c == 429 {
            p["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}});
        }
        m.insert(c.to_string(), p);
    }
    m
}

fn responses(ok_code: &str, ok: Value, errs: &[u16]) -> Value {
    let mut m = errors(errs);
    m.insert(ok_code.into(), ok);
    Value::Object(m)
}

fn json_ok(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

/// The answer of `/api/v1/ask`: JSON, or server-sent events with
/// `Accept: text/event-stream`.
fn ask_ok(schema: Value) -> Value {
    json!({"description": "The answer; with `Accept: text/event-stream`, events `sql`, `repair`, `rows` (a planned answer: one `step` per step instead), then `answer` (this object) or `error` (a problem).",
        "content": {"application/json": {"schema": schema}, "text/event-stream": {"schema": {"type": "string"}}}})
}

/// The `steps` of a planned `/api/v1/ask` answer.
fn ask_steps() -> Value {
    json!({"type": "array", "description": "A planned answer's steps, the week's findings last; absent for a single query.",
        "items": {"type": "object", "required": ["question", "sql", "by", "columns", "rows", "row_count", "truncated", "attempts"],
            "properties": {"question": {"type": "string"}, "sql": {"type": "string"},
                "by": {"type": "string", "enum": ["provider", "crow"]},
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": {"type": "object"}}, "row_count": {"type": "integer"},
                "truncated": {"type": "boolean"}, "attempts": {"type": "integer"},
                "error": {"type": "object", "description": "Why the step has no rows: `code` and `detail`."}}}})
}

fn qparam(name: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema})
}

fn listing(summary: &str, item: &str, params: &[&str]) -> Value {
    let mut ps = Vec::new();
    for p in params {
        ps.push(match *p {
            "from" => qparam(
                "from",
                "Start of the time range (RFC 3339 or YYYY-MM-DD), inclusive.",
                json!({"type": "string", "format": "date-time"}),
            ),
            "to" => qparam(
                "to",
                "End of the time range (RFC 3339 or YYYY-MM-DD), exclusive.",
                json!({"type": "string", "format": "date-time"}),
            ),
            "channel" => qparam(
                "channel",
                "Channel.",
                json!({"type": "string", "enum": ["web", "social", "cctv"]}),
            ),
            "product" => qparam(
                "product",
                "Only rows involving this product id.",
                json!({"type": "string"}),
            ),
            "period_kind" => qparam(
                "period_kind",
                "Period kind.",
                json!({"type": "string", "enum": ["day", "week", "month", "year", "all"]}),
            ),
            "id" => qparam(
                "id",
                "Only the row with this id.",
                json!({"type": "string", "minLength": 1}),
            ),
            "limit" => qparam(
                "limit",
                "Page size (default 100); outside 1..=api.max_page_size is a 400.",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
            _ => qparam(
                "cursor",
                "`next_cursor` of the previous page, unchanged (any other value is a 400).",
                json!({"type": "string", "minLength": 1, "maxLength": crate::rest::MAX_CURSOR_LEN}),
            ),
        });
    }
    json!({"get": {
        "summary": summary, "security": [{"bearer": []}], "parameters": ps,
        "responses": responses("200", json_ok("A page.", page(item)), &[400, 401, 429]),
    }})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (path, ops) in query_paths()
        .into_iter()
        .chain(export_paths())
        .chain(auth_paths())
        .chain(management_paths())
        .chain(chat_paths())
        .chain(saved_query_paths())
        .chain(query_history_paths())
        .chain(dashboard_paths())
        .chain(camera_paths())
    {
        match (paths.get_mut(&path), ops) {
            (Some(Value::Object(have)), Value::Object(more)) => have.extend(more),
            (_, ops) => {
                paths.insert(path, ops);
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "CROW query API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenant-isolated, read-only access to one organization's CROW tables."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "crow_session"}},
            "schemas": component_schemas(),
        },
        "paths": paths,
    })
}

/// The `{id}` path parameter.
fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

/// The object of a `json!` literal (an empty map for anything else).
fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The media types `/api/v1/sql` answers in, with the schema of each.
fn sql_result_content() -> Map<String, Value> {
    let formats = [
        ResultFormat::Json,
        ResultFormat::Ndjson,
        ResultFormat::Csv,
        ResultFormat::Arrow { plain: false },
        ResultFormat::Parquet,
    ];
    let mut sql_ok = Map::new();
    for f in formats {
        let media = f
            .media_type()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let schema = if f == ResultFormat::Json {
            json!({"type": "array", "items": {"type": "object"}})
        } else {
            json!({"type": "string", "format": "binary"})
        };
        sql_ok.insert(media, json!({"schema": schema}));
    }
    sql_ok
}

/// `components.schemas`: the problem, request and row schemas.
fn component_schemas() -> Map<String, Value> {
    let tables: Vec<&str> = crow_schemas::ALL_TABLES.iter().map(|t| t.name).collect();
    let mut schemas = Map::new();
    schemas.insert(
        "Problem".into(),
        json!({"type": "object", "required": ["type", "title", "status", "detail", "code"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "code": {"type": "string", "description": "Stable machine-readable code."}}}),
    );
    schemas.insert(
        "SqlRequest".into(),
        json!({"type": "object", "required": ["sql"], "additionalProperties": false, "properties": {
            "sql": {"type": "string", "description": "One read-only query."},
            "as_of": {"type": "string", "format": "date-time", "description": "Time travel: every table as of this time."},
            "versions": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "Time travel: tables pinned to Delta versions."}}}),
    );
    schemas.insert(
        "Organization".into(),
        row_schema("organizations", Some(crate::rest::ORGANIZATION_COLUMNS)),
    );
    for (name, table) in [
        ("Product", "products"),
        ("Session", "sessions"),
        ("Interaction", "interactions"),
        ("Insight", "patterns"),
        ("Story", "stories"),
        ("Usage", "usage_daily"),
        ("SocialSource", "social_sources"),
        ("Camera", "cameras"),
        ("Audit", "audit_log"),
    ] {
        schemas.insert(name.into(), row_schema(table, None));
    }
    schemas.insert(
        "ExportRequest".into(),
        json!({"type": "object", "required": ["format"], "additionalProperties": false, "properties": {
            "table": {"type": "string", "enum": tables},
            "sql": {"type": "string"},
            "from": {"type": "string", "description": "Start of a table export's range, inclusive: an RFC 3339 time or a YYYY-MM-DD date (midnight UTC)."},
            "to": {"type": "string", "description": "End of the range, exclusive (same forms)."},
            "format": {"type": "string", "enum": ["parquet", "csv", "jsonl"]}},
            "description": "Exactly one of `table` or `sql`."}),
    );
    schemas.insert(
        "ExportStatus".into(),
        json!({"type": "object", "required": ["id", "status", "format", "created_at"], "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["running", "succeeded", "failed", "cancelled"]},
            "format": {"type": "string", "enum": ["parquet", "csv", "jsonl"]},
            "table": {"type": "string", "nullable": true},
            "rows": {"type": "integer", "nullable": true},
            "bytes": {"type": "integer", "nullable": true},
            "error": {"type": "string", "nullable": true,
                "description": "Why the export failed or was cancelled, e.g. the limit it reached."},
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": "string", "format": "date-time", "nullable": true},
            "download_url": {"type": "string", "nullable": true}}}),
    );
    schemas
}

/// SQL, ask, the organization and the table listings.
fn query_paths() -> Map<String, Value> {
    let sql_ok = sql_result_content();
    let mut audit = listing(
        "The organization's audit log (admin keys, admin and owner users).",
        "Audit",
        &["from", "to", "limit", "cursor"],
    );
    audit["get"]["responses"]["403"] =
        problem("Needs an admin key, or a signed-in admin or owner (insufficient_scope, insufficient_role).");
    into_map(json!({
        "/api/v1/sql": {"post": {
            "summary": "Run one read-only SQL query over the key's organization's rows.",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SqlRequest"}}}},
            "responses": responses("200", json!({"description": "The result, in the format `Accept` asks for.", "content": sql_ok,
                "headers": {"X-Crow-Cache": {"schema": {"type": "string", "enum": ["hit", "miss", "bypass"]},
                    "description": "Whether the answer came from the result cache (`hit`), was computed and may be kept (`miss`), or is not cached (`bypass`: the cache is off, or the query calls a function like now() or random(); X-Crow-Cache-Reason says which)."}}}),
                &[400, 401, 403, 406, 408, 429]),
        }},
        "/api/v1/ask": {"post": {
            "summary": "Ask a question in plain language: the AI provider (`ai.provider`) writes one read-only SQL query, which runs like /api/v1/sql in the key's organization; failed queries are repaired at most twice. The answer carries the SQL, its rows (at most 100; `truncated` says when there were more), a suggested chart and a short answer whose every number appears in the rows (else the rows rendered in words, `answer_source` = rows). A broad question may instead be answered by a plan: the provider writes 1 to 4 sub-questions, each run like a single query (a refused step carries its error, the others run), CROW adds this week's patterns and stories, and an analyst step answers from all steps' rows (`steps`; `sql`, `columns` and `rows` are then the first answered step's). The offline provider answers a fixed set of question shapes (and plans \"why did orders/sessions/revenue/conversion drop or rise last week?\") and answers 422 `question_not_supported` for others.",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                "required": ["question"], "additionalProperties": false,
                "properties": {"question": {"type": "string"},
                               "conversation": {"type": "array", "items": {}, "description": "Earlier turns, oldest first (at most 20)."}}}}}},
            "responses": responses("200", ask_ok(json!({"type": "object",
                "required": ["question", "sql", "columns", "rows", "truncated", "chart", "answer", "answer_source"],
                "properties": {"question": {"type": "string"}, "sql": {"type": "string"},
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "rows": {"type": "array", "items": {"type": "object"}}, "truncated": {"type": "boolean"},
                    "chart": {"type": "object"}, "answer": {"type": "string"},
                    "answer_source": {"type": "string", "enum": ["model", "rows"]},
                    "steps": ask_steps()}})),
                &[400, 401, 403, 408, 422, 429, 502]),
        }},
        "/api/v1/organization": {"get": {
            "summary": "The key's organization.", "security": [{"bearer": []}],
            "responses": responses("200", json_ok("The organization.", json!({"$ref": "#/components/schemas/Organization"})), &[401, 404, 429]),
        }},
        "/api/v1/products": listing("The product catalog.", "Product", &["id", "product", "limit", "cursor"]),
        "/api/v1/search": {"get": {
            "summary": "Similarity search over the organization's embeddings (needs scope read): `q` is embedded with [ai.embeddings]'s provider and compared with every vector of `kind` (exact cosine), best first.",
            "security": [{"bearer": []}],
            "parameters": [{"name": "q", "in": "query", "required": true, "schema": {"type": "string", "maxLength": crate::search::MAX_QUERY_CHARS}, "description": "The text to search for."},
                qparam("kind", "product (default), interaction or social_capture.", json!({"type": "string", "enum": ["product", "interaction", "social_capture"]})),
                qparam("limit", "Results (default 10).", json!({"type": "integer", "minimum": 1, "maximum": crate::search::MAX_LIMIT}))],
            "responses": responses("200", json_ok("The nearest entities.", json!({"type": "object", "required": ["query", "kind", "provider", "model", "results"],
                "properties": {"query": {"type": "string"}, "kind": {"type": "string"}, "provider": {"type": "string"}, "model": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object", "required": ["id", "score"],
                        "properties": {"id": {"type": "string"}, "score": {"type": "number"}, "label": {"type": "string", "nullable": true}}}}}})),
                &[400, 401, 403, 429, 502]),
        }},
        "/api/v1/sessions": listing("Sessions.", "Session", &["id", "from", "to", "channel", "product", "limit", "cursor"]),
        "/api/v1/interactions": listing("Interactions.", "Interaction", &["id", "from", "to", "channel", "product", "limit", "cursor"]),
        "/api/v1/insights": listing("Patterns by period.", "Insight", &["id", "period_kind", "from", "to", "product", "limit", "cursor"]),
        "/api/v1/stories": listing("Stories: findings that share a cause, with their start, end or ongoing, segments and estimated impact (`from`/`to` on the start day).", "Story", &["id", "from", "to", "product", "limit", "cursor"]),
        "/api/v1/usage": listing("Daily usage and its priced amount, by day.", "Usage", &["from", "to", "limit", "cursor"]),
        "/api/v1/audit": audit,
    }))
}

/// Starting, watching, cancelling and downloading exports.
fn export_paths() -> Map<String, Value> {
    let id_param = id_param();
    into_map(json!({
        "/api/v1/exports": {"post": {
            "summary": "Start an export of a table or query (needs scope export). Bounded by api.export_timeout_seconds, api.export_max_rows and api.export_max_bytes; beyond api.max_concurrent_exports_per_org running exports, 429.", "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}},
            "responses": responses("202", json_ok("Started.", json!({"$ref": "#/components/schemas/ExportStatus"})), &[400, 401, 403, 408, 429]),
        }},
        "/api/v1/exports/{id}": {"get": {
            "summary": "An export's status.", "security": [{"bearer": []}], "parameters": id_param,
            "responses": responses("200", json_ok("Status.", json!({"$ref": "#/components/schemas/ExportStatus"})), &[401, 403, 404, 429]),
        }, "delete": {
            "summary": "Cancel a running export: it stops, its data is removed, its status becomes `cancelled` (409 `export_finished` once it succeeded or failed).",
            "security": [{"bearer": []}], "parameters": id_param,
            "responses": responses("200", json_ok("The cancelled export's status.", json!({"$ref": "#/components/schemas/ExportStatus"})), &[401, 403, 404, 409, 429]),
        }},
        "/api/v1/exports/{id}/download": {"get": {
            "summary": "Download a finished export.", "security": [{"bearer": []}], "parameters": id_param,
            "responses": responses("200", json!({"description": "The file.", "content": {
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}}}}), &[401, 403, 404, 409, 429]),
        }},
    }))
}

/// Signing in and out, the signed-in user's sessions and notifications,
/// and health.
fn auth_paths() -> Map<String, Value> {
    let id_param = id_param();
    into_map(json!({
        "/api/v1/auth/login": {"post": {
            "summary": "Sign in with e-mail and password: sets the `crow_session` (HttpOnly) and `crow_csrf` cookies and answers the CSRF token to send as `X-CSRF-Token` on cookie-authenticated mutations. A wrong password and an unknown e-mail get the same 401; attempts are limited per e-mail and per address (429).",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                "required": ["email", "password"], "additionalProperties": false,
                "properties": {"email": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": responses("200", json_ok("Signed in.", json!({"type": "object"})), &[400, 401, 429]),
        }},
        "/api/v1/auth/accept": {"post": {
            "summary": "Set a password with a one-time invitation or reset token (`crow users create`, `crow users reset-password`).",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                "required": ["token", "password"], "additionalProperties": false,
                "properties": {"token": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": responses("200", json_ok("The user, now active.", json!({"type": "object"})), &[400, 429]),
        }},
        "/api/v1/auth/logout": {"post": {
            "summary": "End the signed-in session (needs `X-CSRF-Token`).", "security": [{"cookie": []}],
            "responses": {"204": {"description": "Signed out; cookies cleared."},
                          "401": problem("Not signed in."), "403": problem("No or wrong CSRF token.")},
        }},
        "/api/v1/auth/me": {"get": {
            "summary": "The signed-in user, their organization and session.", "security": [{"cookie": []}],
            "responses": responses("200", json_ok("The user.", json!({"type": "object"})), &[401, 429]),
        }},
        "/api/v1/auth/sessions": {"get": {
            "summary": "The signed-in user's sessions.", "security": [{"cookie": []}],
            "responses": responses("200", json_ok("Sessions.", json!({"type": "object"})), &[401, 429]),
        }},
        "/api/v1/auth/sessions/{id}/revoke": {"post": {
            "summary": "End one of the signed-in user's sessions (needs `X-CSRF-Token`).", "security": [{"cookie": []}],
            "parameters": id_param,
            "responses": {"204": {"description": "Revoked."}, "401": problem("Not signed in."),
                          "403": problem("No or wrong CSRF token."), "404": problem("No open session of yours has this id."),
                          "429": problem("Rate limited.")},
        }},
        "/api/v1/notifications": {"get": {
            "summary": "The signed-in user's notifications, unread first, then newest first.", "security": [{"cookie": []}],
            "parameters": [qparam("limit", "Page size.", json!({"type": "string"})), qparam("cursor", "The previous page's next_cursor.", json!({"type": "string"}))],
            "responses": responses("200", json_ok("Notifications.", json!({"type": "object"})), &[400, 401, 429]),
        }},
        "/api/v1/notifications/{id}/read": {"post": {
            "summary": "Mark a notification read (`all`: every one). Needs `X-CSRF-Token`.", "security": [{"cookie": []}],
            "parameters": id_param,
            "responses": responses("200", json_ok("How many were marked.", json!({"type": "object"})), &[401, 403, 404, 429]),
        }},
        "/api/v1/health": {"get": {
            "summary": "Whether the API can read the lake.",
            "responses": {"200": json_ok("Healthy.", json!({"type": "object"})),
                          "503": problem("The lake is unreachable.")},
        }},
    }))
}

/// Members, keys and settings (`crate::manage`): admin keys, signed-in
/// admins and owners.
// Long on purpose: one declarative block of the document (the paths of one
// area, each a JSON literal); splitting it would only scatter the literal.
fn management_paths() -> Map<String, Value> {
    let admin = json!([{"bearer": []}, {"cookie": []}]);
    let obj = |props: Value, required: &[&str]| {
        json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": false, "required": required, "properties": props}}}})
    };
    let id_param = id_param();
    let any = json!({"type": "object"});
    let role = json!({"type": "string", "enum": ["viewer", "analyst", "admin", "owner"]});
    let list = |what: &str| {
        json_ok(
            what,
            json!({"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}}),
        )
    };
    let paths = json!({
        "/api/v1/organization": {"patch": {
            "summary": "Change the organization's name, domain or context text (the text given to the AI provider; \"\" clears domain and context). Needs admin.",
            "security": admin,
            "requestBody": obj(json!({"name": {"type": "string"}, "domain": {"type": "string"}, "context": {"type": "string"}}), &[]),
            "responses": responses("200", json_ok("The organization.", any.clone()), &[400, 401, 403, 429]),
        }},
        "/api/v1/users": {"get": {
            "summary": "The organization's users (never password hashes). Needs admin.", "security": admin,
            "responses": responses("200", list("Users."), &[401, 403, 429]),
        }, "post": {
            "summary": "Invite a user: the answer carries the one-time `invitation_token`, once. Owners are invited by owners only.",
            "security": admin,
            "requestBody": obj(json!({"email": {"type": "string"}, "role": role, "display_name": {"type": "string"}}), &["email", "role"]),
            "responses": responses("201", json_ok("The user, invited.", any.clone()), &[400, 401, 403, 429]),
        }},
        "/api/v1/users/{id}": {"patch": {
            "summary": "Change a user's role and/or disable (ending their sessions) or enable them. Owners are managed by owners only; the last active owner stays (409 `last_owner`).",
            "security": admin, "parameters": id_param,
            "requestBody": obj(json!({"role": role, "disabled": {"type": "boolean"}}), &[]),
            "responses": responses("200", json_ok("The user.", any.clone()), &[400, 401, 403, 404, 409, 429]),
        }},
        "/api/v1/users/{id}/reset": {"post": {
            "summary": "A one-time password-reset token for the user (`reset_token`, once); their sessions end.",
            "security": admin, "parameters": id_param,
            "responses": responses("200", json_ok("The token.", any.clone()), &[401, 403, 404, 409, 429]),
        }},
        "/api/v1/keys": {"get": {
            "summary": "The organization's API keys (never secrets or hashes). Needs admin.", "security": admin,
            "responses": responses("200", list("Keys."), &[401, 403, 429]),
        }, "post": {
            "summary": "Create an API key: the answer carries its `secret`, once. `expires_days` absent: api.key_default_expiry_days; 0: never.",
            "security": admin,
            "requestBody": obj(json!({"scope": {"type": "string", "enum": ["read", "export", "admin"]}, "name": {"type": "string"},
                "expires_days": {"type": "integer", "minimum": 0, "maximum": 36500}}), &["scope"]),
            "responses": responses("201", json_ok("The key and its secret.", any.clone()), &[400, 401, 403, 429]),
        }},
        "/api/v1/social/sources": {
            "get": listing("The social sources the collector reads (needs scope read).", "SocialSource", &["id", "limit", "cursor"])["get"].clone(),
            "post": {
                "summary": "Add a social source (needs admin). kind: rss (a feed URL), youtube (a channel or playlist id), mastodon (`#tag` or `@account`), reddit (`r/sub` or a query), hackernews (a query), bluesky (`@handle`, or a query: needs social.bluesky_identifier and an app password), web (a page URL, reduced to its main text), discover (`auto` or a topic: the AI provider proposes web searches from the catalog, `[discovery]` runs them, result pages are read like web); schedule: a cron expression (UTC) or `off`, default hourly. The same kind and target twice is a 400.",
                "security": admin,
                "requestBody": obj(json!({"kind": {"type": "string", "enum": crow_jobs::social::adapters::KINDS},
                    "target": {"type": "string"}, "schedule": {"type": "string"}}), &["kind", "target"]),
                "responses": responses("201", json_ok("The source.", any.clone()), &[400, 401, 403, 429]),
            },
        },
        "/api/v1/social/sources/{id}": {"delete": {
            "summary": "Remove a social source of the organization (what it captured stays). Needs admin.", "security": admin, "parameters": id_param,
            "responses": responses("200", json_ok("Removed.", any.clone()), &[401, 403, 404, 429]),
        }},
        "/api/v1/keys/{id}/revoke": {"post": {
            "summary": "Revoke an API key of the organization.", "security": admin, "parameters": id_param,
            "responses": responses("200", json_ok("The key, revoked.", any.clone()), &[401, 403, 404, 429]),
        }},
        "/api/v1/organization/write-key": {"get": {
            "summary": "The collector's write key of the organization: its first characters (`prefix`) and, while the key it replaced is still accepted, `previous_key_valid_until`. Needs admin.",
            "security": admin,
            "responses": responses("200", json_ok("The write key, without its secret.", any.clone()), &[401, 403, 404, 429]),
        }},
        "/api/v1/organization/write-key/rotate": {"post": {
            "summary": format!("A new write key for the collector: the answer carries it in `write_key`, once. The current key keeps working for `grace_hours` (absent: 24; 0: refused at once, within the collector's 30 s key cache; at most {}). Needs admin.", crate::manage::MAX_GRACE_HOURS),
            "security": admin,
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                "properties": {"grace_hours": {"type": "integer", "minimum": 0, "maximum": crate::manage::MAX_GRACE_HOURS}}}}}},
            "responses": responses("201", json_ok("The new write key, once.", any), &[400, 401, 403, 404, 429]),
        }},
    });
    into_map(paths)
}

/// `/api/v1/insights/days` ([`crate::evidence`]) and `/api/v1/invoice`
/// ([`crate::invoice`]): reads the dashboard draws.
fn dashboard_paths() -> Map<String, Value> {
    let insight_days = json!({"get": {
        "summary": "The metric of each pattern of one period (the 50 most significant) day by day, as the patterns job counts it, from 28 days before the period to 7 days after it (ending before today; at most 120 days): `measure` count (`value` = `k`) or rate (`value` = `k` / `n`, null without trials). 404 when the period has no patterns.",
        "security": [{"bearer": []}],
        "parameters": [{"name": "period_kind", "in": "query", "required": true, "schema": {"type": "string"}, "description": "day, week, month, year or all."},
                       {"name": "period_start", "in": "query", "required": true, "schema": {"type": "string", "format": "date"}}],
        "responses": responses("200", json_ok("The days.", json!({"type": "object", "required": ["period", "from", "to", "patterns"],
            "properties": {"period": {"type": "object"}, "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
                "patterns": {"type": "array", "items": {"type": "object", "required": ["pattern_id", "metric", "measure", "days"],
                    "properties": {"pattern_id": {"type": "string"}, "metric": {"type": "string"},
                        "segment": {"type": "string", "nullable": true}, "measure": {"type": "string", "enum": ["count", "rate"]},
                        "days": {"type": "array", "items": {"type": "object", "required": ["date", "k", "n", "value"],
                            "properties": {"date": {"type": "string", "format": "date"}, "k": {"type": "number"}, "n": {"type": "number"},
                                "value": {"type": "number", "nullable": true}}}}}}}}})), &[400, 401, 403, 404, 429]),
    }});
    let invoice = json!({"get": {
        "summary": "The organization's invoice of a month with its line items, as `crow billing report --month` prices it (the server's [billing] price book); 404 for a month without usage.",
        "security": [{"bearer": []}],
        "parameters": [{"name": "month", "in": "query", "required": true, "schema": {"type": "string"}, "description": "YYYY-MM."}],
        "responses": responses("200", json_ok("The invoice.", json!({"type": "object",
            "required": ["org_id", "month", "currency", "usage", "days", "lines", "total_micros"],
            "properties": {"org_id": {"type": "string"}, "month": {"type": "string"}, "currency": {"type": "string"},
                "usage": {"type": "object"}, "days": {"type": "integer"}, "total_micros": {"type": "integer"},
                "lines": {"type": "array", "items": {"type": "object", "required": ["item", "quantity", "per", "unit_price_micros", "amount_micros"],
                    "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}, "per": {"type": "integer"},
                        "unit_price_micros": {"type": "integer"}, "amount_micros": {"type": "integer"}}}}}})), &[400, 401, 403, 404, 429]),
    }});
    let mut m = Map::new();
    m.insert("/api/v1/insights/days".into(), insight_days);
    m.insert("/api/v1/invoice".into(), invoice);
    m
}

/// `/api/v1/chats` ([`crate::chats`]): signed-in users only; an API key
/// is answered 403 `user_required`.
fn chat_paths() -> Map<String, Value> {
    let user = json!([{"cookie": []}]);
    let id_param = id_param();
    let chat = json!({"type": "object", "required": ["id", "title", "message_count", "created_at", "updated_at"],
        "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "message_count": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}});
    let message = json!({"type": "object", "required": ["id", "seq", "role", "question"],
        "description": "A question (`role` user) or its answer (`role` assistant: `sql`, `row_count`, `columns`, `truncated`, `rows`, `chart`, `answer`, tokens and `duration_ms`, or `error` {code, detail} when it could not be answered).",
        "properties": {"id": {"type": "string"}, "seq": {"type": "integer"}, "role": {"type": "string", "enum": ["user", "assistant"]},
            "question": {"type": "string"}}});
    let with_messages = json!({"type": "object", "required": ["chat", "messages"],
        "properties": {"chat": chat, "messages": {"type": "array", "items": message}}});
    let turn_ok = |desc: &str| {
        json!({"description": format!("{desc} With `Accept: text/event-stream`: events `chat`, `sql`, `repair`, `rows`, then `answer` (as /api/v1/ask) or `error` (a problem), then `message` (this object, once stored)."),
            "content": {"application/json": {"schema": with_messages.clone()}, "text/event-stream": {"schema": {"type": "string"}}}})
    };
    let errs = |ok: &str, body: Value, codes: &[u16]| {
        let mut r = responses(ok, body, codes);
        r["403"] = problem("An API key has no chats (user_required), or no or wrong CSRF token.");
        r["404"] = problem("No chat of yours has this id.");
        r
    };
    let body = |props: Value, required: &[&str]| {
        json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": false, "required": required, "properties": props}}}})
    };
    let paths = json!({
        "/api/v1/chats": {
            "get": {
                "summary": "The signed-in user's chats, most recently changed first.", "security": user,
                "parameters": [qparam("limit", "Page size.", json!({"type": "string"})), qparam("cursor", "The previous page's next_cursor.", json!({"type": "string"}))],
                "responses": errs("200", json_ok("Chats.", json!({"type": "object", "required": ["data", "next_cursor"],
                    "properties": {"data": {"type": "array", "items": chat}, "next_cursor": {"type": "string", "nullable": true}}})), &[400, 401, 403, 429]),
            },
            "post": {
                "summary": "Start a chat, answering its first `question` when given (its title is the question unless `title` is given). Needs `X-CSRF-Token`.", "security": user,
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "properties": {"title": {"type": "string"}, "question": {"type": "string"}}}}}},
                "responses": errs("201", turn_ok("The chat and its messages."), &[400, 401, 403, 429]),
            }
        },
        "/api/v1/chats/{id}": {
            "get": {
                "summary": "One of the signed-in user's chats with all its messages, in order.", "security": user, "parameters": id_param,
                "responses": errs("200", json_ok("The chat.", with_messages.clone()), &[401, 403, 404, 429]),
            },
            "patch": {
                "summary": "Rename a chat. Needs `X-CSRF-Token`.", "security": user, "parameters": id_param,
                "requestBody": body(json!({"title": {"type": "string"}}), &["title"]),
                "responses": errs("200", json_ok("The chat.", json!({"type": "object", "properties": {"chat": chat}})), &[400, 401, 403, 404, 429]),
            },
            "delete": {
                "summary": "Delete a chat and its messages. Needs `X-CSRF-Token`.", "security": user, "parameters": id_param,
                "responses": errs("204", json!({"description": "Deleted."}), &[401, 403, 404, 429]),
            }
        },
        "/api/v1/chats/{id}/messages": {"post": {
            "summary": "Ask a question in a chat: answered like /api/v1/ask with the chat's earlier turns as the conversation (a follow-up such as \"and on mobile?\" uses them); the question and its answer are stored. A question that cannot be answered is stored too, its reply's `error` saying why. Needs `X-CSRF-Token`.",
            "security": user, "parameters": id_param,
            "requestBody": body(json!({"question": {"type": "string"}}), &["question"]),
            "responses": errs("200", turn_ok("The chat, the question and its answer."), &[400, 401, 403, 404, 409, 429]),
        }},
    });
    into_map(paths)
}

/// `/api/v1/saved-queries` ([`crate::saved`]): signed-in users only; an
/// API key is answered 403 `user_required`.
fn saved_query_paths() -> Map<String, Value> {
    let user = json!([{"cookie": []}]);
    let id_param = id_param();
    let saved = json!({"type": "object", "required": ["id", "name", "sql", "created_at", "updated_at"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "sql": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}});
    let one = json!({"type": "object", "required": ["saved_query"], "properties": {"saved_query": saved}});
    let errs = |ok: &str, body: Value, codes: &[u16]| {
        let mut r = responses(ok, body, codes);
        r["403"] =
            problem("An API key has no saved queries (user_required), or no or wrong CSRF token.");
        if codes.contains(&404) {
            r["404"] = problem("No saved query of yours has this id.");
        }
        if codes.contains(&409) {
            r["409"] = problem("You already have a saved query of this name (name_taken), or keep the most allowed (too_many_saved_queries).");
        }
        r
    };
    let limits = format!(
        "`name`: 1 to {} characters, unique among yours (400 invalid_name, 409 name_taken); `sql`: 1 to {} characters (400 invalid_sql).",
        crate::saved::MAX_NAME,
        crate::saved::MAX_SQL
    );
    let paths = json!({
        "/api/v1/saved-queries": {
            "get": {
                "summary": "The signed-in user's saved queries, most recently changed first (all of them: at most `api.max_saved_queries`, 200 by default).",
                "security": user,
                "responses": errs("200", json_ok("Saved queries.", json!({"type": "object", "required": ["data"],
                    "properties": {"data": {"type": "array", "items": saved}}})), &[401, 403, 429]),
            },
            "post": {
                "summary": format!("Save a query under a name. {limits} Needs `X-CSRF-Token`."), "security": user,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "required": ["name", "sql"], "properties": {"name": {"type": "string"}, "sql": {"type": "string"}}}}}},
                "responses": errs("201", json_ok("The saved query.", one.clone()), &[400, 401, 403, 409, 429]),
            }
        },
        "/api/v1/saved-queries/{id}": {
            "get": {
                "summary": "One of the signed-in user's saved queries.", "security": user, "parameters": id_param,
                "responses": errs("200", json_ok("The saved query.", one.clone()), &[401, 403, 404, 429]),
            },
            "patch": {
                "summary": format!("Rename a saved query, change its SQL, or both. {limits} Needs `X-CSRF-Token`."), "security": user, "parameters": id_param,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "sql": {"type": "string"}}}}}},
                "responses": errs("200", json_ok("The saved query.", one), &[400, 401, 403, 404, 409, 429]),
            },
            "delete": {
                "summary": "Delete a saved query. Needs `X-CSRF-Token`.", "security": user, "parameters": id_param,
                "responses": errs("204", json!({"description": "Deleted."}), &[401, 403, 404, 429]),
            }
        },
    });
    into_map(paths)
}

/// `/api/v1/cameras` ([`crate::cameras`]): listed with the read scope,
/// registered and removed by admins.
fn camera_paths() -> Map<String, Value> {
    let admin = json!([{"bearer": []}, {"cookie": []}]);
    let max_id = crate::cameras::MAX_ID;
    let max_text = crate::cameras::MAX_TEXT;
    let id = json!({"type": "string", "minLength": 1, "maxLength": max_id, "pattern": "^[A-Za-z0-9._-]+$"});
    let text = json!({"type": "string", "minLength": 1, "maxLength": max_text});
    let mut post = responses(
        "201",
        json_ok(
            "The camera, registered.",
            json!({"$ref": "#/components/schemas/Camera"}),
        ),
        &[400, 401, 403, 409, 429],
    );
    post["400"] =
        problem("A field is missing or wrong; `detail` names it (invalid_body, invalid_camera).");
    post["409"] = problem("The organization already has a camera with this id (camera_exists).");
    let paths = json!({
        "/api/v1/cameras": {
            "get": listing("The CCTV cameras the organization registered, by camera id (needs scope read).", "Camera", &["id", "limit", "cursor"])["get"].clone(),
            "post": {
                "summary": format!("Register a CCTV camera (needs admin). `camera_id` and `store_id` are the ids its transcripts carry (1 to {max_id} letters, digits, `-`, `_` or `.`); `name` and `location` are 1 to {max_text} characters. A camera id the organization already has is a 409 `camera_exists`."),
                "security": admin,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "required": ["camera_id", "store_id", "name"],
                    "properties": {"camera_id": id, "store_id": id, "name": text, "location": text}}}}},
                "responses": post,
            },
        },
        "/api/v1/cameras/{id}": {"delete": {
            "summary": "Remove a camera of the organization (the transcripts it sent stay). Needs admin.", "security": admin,
            "parameters": [{"name": "id", "in": "path", "required": true, "description": "The camera id.", "schema": {"type": "string"}}],
            "responses": responses("204", json!({"description": "Removed."}), &[401, 403, 404, 429]),
        }},
    });
    into_map(paths)
}

/// `/api/v1/query-history` ([`crate::history`]): signed-in users only; an
/// API key is answered 403 `user_required`.
fn query_history_paths() -> Map<String, Value> {
    let user = json!([{"cookie": []}]);
    let entry = json!({"type": "object", "required": ["id", "sql", "ok", "error", "ran_at"],
        "properties": {"id": {"type": "string"}, "sql": {"type": "string"},
            "ok": {"type": "boolean"}, "error": {"type": "string", "nullable": true},
            "ran_at": {"type": "string", "format": "date-time"}}});
    let errs = |ok: &str, body: Value, codes: &[u16]| {
        let mut r = responses(ok, body, codes);
        r["403"] =
            problem("An API key has no query history (user_required), or no or wrong CSRF token.");
        r
    };
    let paths = json!({
        "/api/v1/query-history": {
            "get": {
                "summary": format!("The SQL the signed-in user ran in the dashboard's console, most recently run first, one entry per distinct SQL (at most {}).", crate::history::MAX_PER_USER),
                "security": user,
                "responses": errs("200", json_ok("The history.", json!({"type": "object", "required": ["data"],
                    "properties": {"data": {"type": "array", "items": entry}}})), &[401, 403, 429]),
            },
            "post": {
                "summary": format!("Record that the user ran this SQL now and how it ended (it is not run): `error` is the failed run's message (cut to {} characters), absent or null when it answered; the same SQL moves to the top with this outcome; past {} entries the oldest is dropped. `sql`: 1 to {} characters (400 invalid_sql). Needs `X-CSRF-Token`.", crate::history::MAX_ERROR, crate::history::MAX_PER_USER, crate::history::MAX_SQL),
                "security": user,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false,
                    "required": ["sql"], "properties": {"sql": {"type": "string"}, "error": {"type": "string", "nullable": true}}}}}},
                "responses": errs("201", json_ok("The entry.", json!({"type": "object", "required": ["entry"], "properties": {"entry": entry}})), &[400, 401, 403, 429]),
            },
            "delete": {
                "summary": "Forget every query the user ran. Needs `X-CSRF-Token`.", "security": user,
                "responses": errs("204", json!({"description": "Cleared."}), &[401, 403, 429]),
            }
        },
    });
    into_map(paths)
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_names_every_route_and_no_secret() {
        let d = super::document();
        let text = d.to_string();
        for p in [
            "/api/v1/sql",
            "/api/v1/ask",
            "/api/v1/insights/days",
            "/api/v1/invoice",
            "/api/v1/interactions",
            "/api/v1/exports/{id}/download",
            "/api/v1/auth/login",
            "/api/v1/auth/me",
            "/api/v1/cameras",
            "/api/v1/cameras/{id}",
        ] {
            assert!(d["paths"].get(p).is_some(), "{p}");
        }
        assert!(d["paths"]["/api/v1/exports/{id}"].get("delete").is_some());
        assert!(d["paths"]["/api/v1/cameras"].get("post").is_some());
        assert_eq!(
            d["components"]["schemas"]["Camera"]["properties"]["location"]["nullable"],
            true
        );
        assert!(!text.contains("key_hash") && !text.contains("write_key_hash"));
        assert_eq!(
            d["components"]["schemas"]["Session"]["properties"]["product_ids"]["type"],
            "array"
        );
    }
}
