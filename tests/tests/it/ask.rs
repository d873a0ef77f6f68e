//! Ask CROW (`POST /api/v1/ask`, `crow ask`) and the MCP server (`/mcp`)
//! against a live `crow serve`: the demo brand (org A) and a second
//! organization (org B) whose rows carry a mark that must never reach org
//! A's key — through SQL, the MCP tools or ask.

use chrono::Utc;
use serde_json::{json, Value};

use crate::support::{land_web, post_json, Backend, Server};

/// Marks org B's rows.
pub(crate) const B_MARK: &str = "BETAMARK";

pub(crate) struct World {
    pub(crate) b: Backend,
    _wal: tempfile::TempDir,
    pub(crate) server: Server,
    pub(crate) org_a: String,
    pub(crate) org_b: String,
    pub(crate) key_a: String,
    pub(crate) key_b: String,
    pub(crate) admin_a: String,
    pub(crate) http: reqwest::Client,
}

fn key(b: &Backend, org: &str, scope: &str) -> String {
    let k = b.crow_json(&["keys", "create", "--org", org, "--scope", scope]);
    k["secret"].as_str().expect("secret").to_string()
}

/// The lake every [`World`] starts from, built once per test process: the
/// demo brand with four weeks of activity (patterns included), org B with a
/// few sessions of its own, sessionized and enriched, and the three keys.
/// Each world works on its own copy, so tests never share writes; building
/// it once saves a demo and two job runs per test.
struct Template {
    _dir: tempfile::TempDir,
    lake: std::path::PathBuf,
    org_a: String,
    org_b: String,
    key_a: String,
    key_b: String,
    admin_a: String,
}

static TEMPLATE: tokio::sync::OnceCell<Template> = tokio::sync::OnceCell::const_new();

async fn template() -> &'static Template {
    TEMPLATE.get_or_init(build_template).await
}

async fn build_template() -> Template {
    // Under the target's scratch folder, not /tmp: a static is never
    // dropped, so the folder outlives the test process.
    let dir = tempfile::Builder::new()
        .prefix("ask-world-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("template dir");
    let lake_dir = dir.path().join("lake");
    let b = Backend::at(&lake_dir);
    b.crow_json(&["demo", "--visitors", "4000", "--days", "28"]);
    let orgs = b.crow_json(&["sql", "select org_id from organizations"]);
    let org_a = orgs[0]["org_id"].as_str().expect("demo org").to_string();
    let bo = b.crow_json(&["orgs", "create", "--name", "Beta Bikes"]);
    let org_b = bo["org_id"].as_str().expect("org").to_string();
    let lake = b.lake().await;
    let at = Utc::now() - chrono::Duration::days(2);
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "type": "track",
                "event": "Product Viewed",
                "messageId": format!("beta-m{i}"),
                "userId": format!("beta-user-{}", i % 4),
                "timestamp": (at + chrono::Duration::minutes(i)).to_rfc3339(),
                "properties": {"product_id": format!("{B_MARK}-p{}", i % 3), "name": format!("{B_MARK} bike {}", i % 3)},
            })
        })
        .collect();
    land_web(&lake, &org_b, &events, Utc::now()).await;
    b.crow_json(&["jobs", "run", "sessionize", "--quiet"]);
    b.crow_json(&["jobs", "run", "enrich", "--quiet"]);
    Template {
        key_a: key(&b, &org_a, "read"),
        key_b: key(&b, &org_b, "read"),
        admin_a: key(&b, &org_a, "admin"),
        _dir: dir,
        lake: lake_dir,
        org_a,
        org_b,
    }
}

/// The demo brand and org B (see [`Template`]) on a lake of the test's own,
/// served by `crow serve`.
pub(crate) async fn world() -> World {
    world_with(&[]).await
}

/// [`world`] with extra settings for `crow serve`.
async fn world_with(env: &[(&str, &str)]) -> World {
    let t = template().await;
    let b = Backend::local();
    crate::support::copy_dir(&t.lake, std::path::Path::new(&b.uri));
    let wal = tempfile::tempdir().expect("wal");
    let mut all_env = vec![
        ("CROW_API_RATE_LIMIT_BURST", "100000"),
        ("CROW_API_RATE_LIMIT_PER_SECOND", "100000"),
    ];
    all_env.extend_from_slice(env);
    let server = Server::start(&b, wal.path(), &all_env);
    World {
        b,
        _wal: wal,
        server,
        org_a: t.org_a.clone(),
        org_b: t.org_b.clone(),
        key_a: t.key_a.clone(),
        key_b: t.key_b.clone(),
        admin_a: t.admin_a.clone(),
        http: reqwest::Client::new(),
    }
}

impl World {
    pub(crate) async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        post_json(&self.http, &self.server.url(path), key, body).await
    }

    pub(crate) async fn sql(&self, key: &str, sql: &str) -> Vec<Value> {
        let (s, v) = self
            .post("/api/v1/sql", Some(key), &json!({ "sql": sql }))
            .await;
        assert_eq!(s, 200, "{sql}: {v}");
        v.as_array().expect("rows").clone()
    }

    async fn ask(&self, key: &str, question: &str) -> (u16, Value) {
        self.post("/api/v1/ask", Some(key), &json!({ "question": question }))
            .await
    }

    /// `POST /api/v1/ask` as server-sent events: (event, data) in order.
    async fn ask_events(&self, question: &str) -> Vec<(String, Value)> {
        let r = self
            .http
            .post(self.server.url("/api/v1/ask"))
            .bearer_auth(&self.key_a)
            .header("Accept", "text/event-stream")
            .json(&json!({ "question": question }))
            .send()
            .await
            .expect("ask");
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream"));
        let text = r.text().await.expect("events");
        text.split("\n\n")
            .filter_map(|block| {
                let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((
                    event.to_string(),
                    serde_json::from_str(data).expect("event data"),
                ))
            })
            .collect()
    }

    /// Org A's answer must not carry org B's rows or id.
    pub(crate) fn assert_no_b(&self, what: &str, v: &impl std::fmt::Display) {
        let text = v.to_string();
        assert!(
            !text.contains(B_MARK) && !text.contains(&self.org_b),
            "{what}: org A sees org B's rows: {text}"
        );
    }

    /// Run tests/py/mcp_client.py: (exit code, its JSON).
    fn mcp_client(&self, key: &str, mode: &str, calls: &Value) -> (i32, Value) {
        let (url, calls) = (self.server.url("/mcp"), calls.to_string());
        crate::support::python_client("mcp_client.py", &[&url, key, mode, &calls])
    }
}

/// The offline provider's question shapes and hand-written reference SQL.
pub(crate) const SHAPES: &[(&str, &str, &str)] = &[
    (
        "Top 5 products by views",
        "bar",
        "SELECT product_id, max(product_name) AS name, count(*) AS views FROM raw_web_events \
         WHERE event = 'Product Viewed' AND product_id IS NOT NULL GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 5",
    ),
    (
        "best selling products",
        "bar",
        "SELECT s.product_id, p.name, count(*) AS orders FROM \
         (SELECT unnest(product_ids) AS product_id FROM sessions WHERE converted = true) s \
         LEFT JOIN products p ON s.product_id = p.product_id GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 10",
    ),
    (
        "conversion by device",
        "bar",
        "SELECT device_type, count(*) AS sessions, count(*) FILTER (WHERE converted) AS orders, \
         round(100.0 * count(*) FILTER (WHERE converted) / count(*), 2) AS conversion_pct \
         FROM sessions WHERE channel = 'web' GROUP BY device_type ORDER BY 2 DESC, 1",
    ),
    (
        "What is the conversion rate by traffic source?",
        "bar",
        "SELECT traffic_source, count(*) AS sessions, count(*) FILTER (WHERE converted) AS orders, \
         round(100.0 * count(*) FILTER (WHERE converted) / count(*), 2) AS conversion_pct \
         FROM sessions WHERE channel = 'web' GROUP BY traffic_source ORDER BY 2 DESC, 1",
    ),
    (
        "events over the last 14 days",
        "line",
        "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS events FROM raw_web_events \
         WHERE event_date >= current_date() - INTERVAL '13 days' GROUP BY 1 ORDER BY 1",
    ),
    (
        "revenue trend over the last 7 days",
        "line",
        "SELECT CAST(event_date AS VARCHAR) AS day, count(*) AS orders, round(sum(revenue), 2) AS revenue \
         FROM raw_web_events WHERE event = 'Order Completed' AND event_date >= current_date() - INTERVAL '6 days' \
         GROUP BY 1 ORDER BY 1",
    ),
    (
        "Show me interactions about Aria",
        "table",
        "SELECT DISTINCT i.interaction_id, CAST(i.started_at AS VARCHAR) AS started_at, i.channel, i.outcome, \
         i.sentiment, i.description FROM (SELECT *, unnest(product_ids) AS pid FROM interactions) i \
         JOIN products p ON p.product_id = i.pid WHERE lower(p.name) LIKE '%aria%' OR lower(p.product_id) = 'aria' \
         ORDER BY 2 DESC, 1 LIMIT 50",
    ),
    (
        "what are this week's patterns?",
        "table",
        "WITH w AS (SELECT max(period_start) AS s FROM patterns WHERE period_kind = 'week') \
         SELECT CAST(period_start AS VARCHAR) AS week, kind, segment, title, support, round(significance, 2) AS significance \
         FROM patterns, w WHERE period_kind = 'week' AND period_start = w.s \
         ORDER BY significance DESC NULLS LAST, pattern_id LIMIT 20",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn ask_answers_every_offline_shape_with_its_reference_rows() {
    let w = world().await;
    for (question, chart, reference) in SHAPES {
        let (s, a) = w.ask(&w.key_a, question).await;
        assert_eq!(s, 200, "{question}: {a}");
        let expected = w.sql(&w.key_a, reference).await;
        assert!(!expected.is_empty(), "{question}: the demo has rows for it");
        assert_eq!(a["rows"], json!(expected), "{question}: {}", a["sql"]);
        assert_eq!(a["truncated"], false, "{question}");
        assert_eq!(a["chart"]["kind"], *chart, "{question}: {a}");
        assert_eq!(a["answer_source"], "model", "{question}: {a}");
        let answer = a["answer"].as_str().expect("answer");
        let allowed = crow_jobs::patterns::allowed_numbers(&format!("{} {question}", a["rows"]));
        assert!(
            crow_jobs::patterns::check_numbers(answer, &allowed).is_ok(),
            "{question}: {answer}"
        );
        w.assert_no_b(question, &a);
    }
    // The CLI answers the same from the lake, in the organization's tenant.
    let cli =
        w.b.crow_json(&["ask", "conversion by device", "--org", &w.org_a]);
    let (_, api) = w.ask(&w.key_a, "conversion by device").await;
    assert_eq!(cli["rows"], api["rows"]);
    assert_eq!(
        cli["columns"],
        json!(["device_type", "sessions", "orders", "conversion_pct"])
    );
    // Org B's key gets org B's products, and org A's never does.
    let (_, beta) = w.ask(&w.key_b, "top 5 products by views").await;
    assert!(beta["rows"].to_string().contains(B_MARK), "{beta}");
    // Streamed: the query, the rows, then the same answer.
    let events = w.ask_events("conversion by device").await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["sql", "rows", "answer"], "{events:?}");
    assert_eq!(events[1].1["rows"], api["rows"]);
    assert_eq!(events[2].1["rows"], api["rows"]);
    let events = w.ask_events("what is the meaning of life?").await;
    assert_eq!(
        events.last().map(|(e, v)| (e.as_str(), v["code"].clone())),
        Some(("error", json!("question_not_supported"))),
        "{events:?}"
    );
    // A question outside the offline shapes is refused plainly.
    let (s, e) = w.ask(&w.key_a, "what is the meaning of life?").await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["code"], "question_not_supported");
    assert!(
        e["detail"].as_str().unwrap_or("").contains("real model"),
        "{e}"
    );
    check_offline_plan(&w).await;
    // Bad input and no key.
    let (s, e) = w
        .post("/api/v1/ask", Some(&w.key_a), &json!({"q": "x"}))
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid_body")), "{e}");
    let (s, e) = w.ask(&w.key_a, "   ").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_question")),
        "{e}"
    );
    let (s, _) = w
        .post(
            "/api/v1/ask",
            None,
            &json!({"question": "conversion by device"}),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = w
        .post(
            "/api/v1/ask",
            Some("ck_not_a_key"),
            &json!({"question": "conversion by device"}),
        )
        .await;
    assert_eq!(s, 401);
    // Every question is audited.
    let audited = w
        .sql(
            &w.admin_a,
            "select count(*) as n from audit_log where action = 'ask'",
        )
        .await;
    assert!(
        audited[0]["n"].as_i64() >= Some(SHAPES.len() as i64 + 1),
        "{audited:?}"
    );
}

/// Every number of `answer` appears in some step's rows or the question.
fn numbers_from_steps(question: &str, a: &Value) -> Result<(), String> {
    let mut facts = question.to_string();
    for s in a["steps"].as_array().into_iter().flatten() {
        facts.push_str(&format!(" {} {}", s["rows"], s["row_count"]));
    }
    let allowed = crow_jobs::patterns::allowed_numbers(&facts);
    crow_jobs::patterns::check_numbers(a["answer"].as_str().unwrap_or(""), &allowed)
}

/// "Why did orders drop last week?" offline: a plan of four queries and
/// the week's findings, each step's rows those of its SQL through
/// /api/v1/sql, an answer citing only their numbers, in the caller's
/// organization only; streamed as one `step` event a step.
async fn check_offline_plan(w: &World) {
    let q = "why did orders drop last week?";
    let (s, a) = w.ask(&w.key_a, q).await;
    assert_eq!(s, 200, "{a}");
    let steps = a["steps"].as_array().expect("steps").clone();
    assert_eq!(steps.len(), 5, "{a}");
    assert_eq!(steps[4]["by"], "crow");
    assert_eq!(steps[4]["question"], "this week's patterns and stories");
    for st in &steps {
        assert!(st.get("error").is_none(), "{st}");
        let sql = st["sql"].as_str().expect("sql");
        let expected = w.sql(&w.key_a, sql).await;
        assert_eq!(st["rows"], json!(expected), "{sql}");
        assert_eq!(st["row_count"], expected.len(), "{sql}");
        assert_eq!(st["truncated"], false);
    }
    for st in &steps[..4] {
        assert!(!st["rows"].as_array().expect("rows").is_empty(), "{st}");
    }
    assert_eq!(
        steps[0]["rows"][0].as_object().map(|o| o.len()),
        Some(3),
        "this week, last week, change: {}",
        steps[0]
    );
    assert_eq!(steps[2]["columns"][0], "device_type");
    assert_eq!(steps[3]["columns"][0], "traffic_source");
    // The old fields are the first step's; the answer cites the steps.
    assert_eq!(a["sql"], steps[0]["sql"]);
    assert_eq!(a["rows"], steps[0]["rows"]);
    assert_eq!(a["answer_source"], "model", "{a}");
    numbers_from_steps(q, &a).unwrap_or_else(|e| panic!("{e}: {a}"));
    let this_week = steps[0]["rows"][0]["this_week"].to_string();
    let answer = a["answer"].as_str().unwrap_or("");
    assert!(answer.contains(&this_week), "{answer}");
    assert!(answer.contains("By device type"), "{answer}");
    w.assert_no_b(q, &a);
    // Org B's key: the same plan over org B's rows only.
    let (s, bq) = w.ask(&w.key_b, "why did sessions drop last week?").await;
    assert_eq!(s, 200, "{bq}");
    let (_, aq) = w.ask(&w.key_a, "why did sessions drop last week?").await;
    let b0 = &bq["steps"][0];
    let sql = b0["sql"].as_str().expect("sql");
    assert_eq!(b0["rows"], json!(w.sql(&w.key_b, sql).await));
    assert_eq!(aq["steps"][0]["rows"], json!(w.sql(&w.key_a, sql).await));
    assert_ne!(
        b0["rows"], aq["steps"][0]["rows"],
        "org B's figures are its own"
    );
    w.assert_no_b("sessions", &aq);
    // Streamed: one `step` event a step, then the same answer.
    let events = w.ask_events(q).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["step", "step", "step", "step", "step", "answer"],
        "{events:?}"
    );
    for (i, (_, data)) in events[..5].iter().enumerate() {
        assert_eq!(data["index"], i);
        assert_eq!(data["rows"], steps[i]["rows"]);
    }
    assert_eq!(events[5].1["steps"], json!(steps));
    // The CLI plans the same.
    let cli = w.b.crow_json(&["ask", q, "--org", &w.org_a]);
    assert_eq!(cli["steps"], json!(steps));
}

const TOOLS: &[&str] = &[
    "run_sql",
    "list_tables",
    "describe_table",
    "search_interactions",
    "get_patterns",
    "list_products",
    "get_product",
    "get_usage",
    "ask",
];

fn calls(org_b: &str) -> Value {
    json!([
        ["run_sql", {"sql": "select count(*) as n from raw_web_events"}],
        ["list_tables", {}],
        ["describe_table", {"table": "interactions"}],
        ["search_interactions", {"text": "headphones", "channel": "web", "limit": 5}],
        ["get_patterns", {"period_kind": "week", "limit": 3}],
        ["list_products", {"search": "aria"}],
        ["get_product", {"product_id": "nw-1001"}],
        ["get_usage", {"limit": 3}],
        ["ask", {"question": "conversion by device"}],
        // Hostile SQL: other organizations stay out of reach.
        ["run_sql", {"sql": format!("select * from raw_web_events where org_id = '{org_b}'")}],
        ["run_sql", {"sql": "select count(*) as n from organizations"}],
        ["run_sql", {"sql": "with x as (select org_id, product_name from raw_web_events) select distinct org_id from x union select org_id from sessions"}],
        ["run_sql", {"sql": "select table_name from information_schema.tables where table_name = 'raw_web_events'"}],
        ["run_sql", {"sql": "delete from sessions"}],
        ["run_sql", {"sql": "select * from products", "max_rows": 3}],
        ["search_interactions", {}],
        ["describe_table", {"table": "audit_log"}],
    ])
}

fn check_a_calls(w: &World, mode: &str, out: &Value, events_a: &Value) {
    let c = &out["calls"];
    let ok = |i: usize| {
        assert_eq!(c[i]["is_error"], false, "{mode} call {i}: {}", c[i]);
        &c[i]["structured"]
    };
    assert_eq!(ok(0)["rows"][0]["n"], *events_a, "{mode}: run_sql");
    assert!(
        ok(1)["tables"].as_array().is_some_and(|t| t.len() > 5),
        "{mode}"
    );
    assert!(
        ok(2)["contract"]
            .as_str()
            .unwrap_or("")
            .contains("| description |"),
        "{mode}"
    );
    let found = ok(3)["rows"].as_array().expect("rows");
    assert!(!found.is_empty() && found.len() <= 5, "{mode}: {found:?}");
    assert!(found.iter().all(|r| r["description"]
        .as_str()
        .unwrap_or("")
        .to_lowercase()
        .contains("headphones")));
    assert!(
        ok(4)["rows"].as_array().is_some_and(|r| r.len() == 3),
        "{mode}: patterns"
    );
    assert!(
        ok(5)["rows"].as_array().is_some_and(|r| !r.is_empty()),
        "{mode}: products"
    );
    assert_eq!(ok(6)["product"]["product_id"], "nw-1001", "{mode}");
    assert!(ok(6)["product"]["views"].as_i64() > Some(0), "{mode}");
    assert!(
        ok(7)["rows"].as_array().is_some_and(|r| !r.is_empty()),
        "{mode}: usage"
    );
    assert!(
        ok(8)["rows"].as_array().is_some_and(|r| !r.is_empty()) && ok(8)["answer"].is_string(),
        "{mode}"
    );
    assert_eq!(
        ok(9)["row_count"],
        0,
        "{mode}: another org's id finds nothing"
    );
    assert_eq!(ok(10)["rows"][0]["n"], 1, "{mode}: one organization");
    assert_eq!(ok(11)["rows"], json!([{"org_id": w.org_a}]), "{mode}");
    assert_eq!(ok(12)["row_count"], 1, "{mode}");
    assert_eq!(c[13]["is_error"], true, "{mode}: a write is refused");
    assert!(
        c[13]["text"].as_str().unwrap_or("").contains("read-only"),
        "{mode}"
    );
    assert_eq!(ok(14)["truncated"], true, "{mode}: capped rows say so");
    assert_eq!(ok(14)["row_count"], 3, "{mode}");
    assert!(ok(15)["row_count"].as_i64() > Some(0), "{mode}");
    assert_eq!(
        c[16]["is_error"], true,
        "{mode}: admin tables are hidden from a read key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_official_client_both_revisions_tools_isolated_and_audited() {
    let w = world().await;
    let events_a = w
        .sql(&w.key_a, "select count(*) as n from raw_web_events")
        .await[0]["n"]
        .clone();
    for (mode, version) in [
        ("legacy", "2025-11-25"),
        ("2026-07-28", "2026-07-28"),
        ("auto", "2026-07-28"),
    ] {
        let (code, out) = w.mcp_client(&w.key_a, mode, &calls(&w.org_b));
        assert_eq!(code, 0, "{mode}: {out}");
        assert_eq!(out["protocol_version"], version, "{mode}");
        let names: Vec<&str> = out["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, TOOLS, "{mode}");
        for t in out["tools"].as_array().expect("tools") {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert!(
                t["description"].as_str().is_some_and(|d| d.len() > 40),
                "{t}"
            );
        }
        let resources = out["resources"].as_array().expect("resources");
        assert!(
            resources.contains(&json!("crow://tables/interactions")),
            "{mode}"
        );
        assert!(
            !resources.contains(&json!("crow://tables/audit_log")),
            "{mode}: admin only"
        );
        assert!(out["resource_text"]
            .as_str()
            .unwrap_or("")
            .starts_with("## organizations"));
        check_a_calls(&w, mode, &out, &events_a);
        w.assert_no_b(mode, &out);
    }
    // Org B's key sees its own interactions; org A's key cannot reach them.
    let (code, out) = w.mcp_client(&w.key_b, "auto", &json!([["search_interactions", {}]]));
    assert_eq!(code, 0, "{out}");
    let ids: Vec<String> = out["calls"][0]["structured"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| format!("'{}'", r["interaction_id"].as_str().expect("id")))
        .collect();
    assert!(!ids.is_empty(), "org B has interactions: {out}");
    let probe = format!(
        "select count(*) as n from interactions where interaction_id in ({})",
        ids.join(",")
    );
    let (_, out) = w.mcp_client(&w.key_a, "auto", &json!([["run_sql", {"sql": probe}]]));
    assert_eq!(out["calls"][0]["structured"]["rows"][0]["n"], 0, "{out}");
    // A bad or missing key is refused, in both revisions.
    for mode in ["legacy", "2026-07-28"] {
        for key in ["", "ck_not_a_key"] {
            let (code, out) = w.mcp_client(key, mode, &json!([]));
            assert_eq!(code, 3, "{mode} {key:?}: {out}");
        }
    }
    // Every tool call is audited under the key's organization.
    let audited = w
        .sql(
            &w.admin_a,
            "select count(*) as n, count(distinct target) as tools from audit_log where action = 'mcp.tool_call'",
        )
        .await;
    assert!(audited[0]["n"].as_i64() >= Some(3 * 17), "{audited:?}");
    assert_eq!(audited[0]["tools"], TOOLS.len(), "{audited:?}");
}

/// One raw JSON-RPC request to /mcp.
async fn rpc(
    w: &World,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = w.http.post(w.server.url("/mcp")).json(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().await.expect("body");
    (
        status,
        h,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_sessions_versions_origins_and_keys_over_raw_json_rpc() {
    let w = world().await;
    let modern = |method: &str, id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": method,
               "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    };
    // Discovery names both revisions.
    let (s, _, v) = rpc(
        &w,
        Some(&w.key_a),
        &[("MCP-Protocol-Version", "2026-07-28")],
        &modern("server/discover", 1),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let supported = v["result"]["supportedVersions"]
        .as_array()
        .expect("versions");
    assert!(
        supported.contains(&json!("2026-07-28")) && supported.contains(&json!("2025-11-25")),
        "{v}"
    );
    assert_eq!(v["result"]["resultType"], "complete");
    // An unknown revision: -32022 with the supported ones.
    let mut bad = modern("tools/list", 2);
    bad["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let (s, _, v) = rpc(&w, Some(&w.key_a), &[], &bad).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32022)), "{v}");
    assert!(v["error"]["data"]["supported"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("2026-07-28"))));
    // The Mcp-Method header must name the body's method.
    let (s, _, v) = rpc(
        &w,
        Some(&w.key_a),
        &[("Mcp-Method", "tools/call")],
        &modern("tools/list", 2),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)), "{v}");
    // No key, a bad key, a foreign origin: refused.
    let (s, h, _) = rpc(&w, None, &[], &modern("tools/list", 3)).await;
    assert_eq!(s, 401);
    assert_eq!(
        h.get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let (s, _, _) = rpc(&w, Some("ck_not_a_key"), &[], &modern("tools/list", 3)).await;
    assert_eq!(s, 401);
    let (s, _, _) = rpc(
        &w,
        Some(&w.key_a),
        &[("Origin", "http://evil.example")],
        &modern("tools/list", 4),
    )
    .await;
    assert_eq!(s, 403, "a foreign origin is refused");
    let own = format!("http://{}", w.server.addr);
    let (s, _, v) = rpc(
        &w,
        Some(&w.key_a),
        &[("Origin", own.as_str())],
        &modern("tools/list", 4),
    )
    .await;
    assert_eq!(s, 200, "the server's own origin is fine: {v}");
    legacy_sessions(&w).await;
}

/// 2025-11-25: sessions opened by `initialize`, bound to their key.
async fn legacy_sessions(w: &World) {
    // 2025-11-25: initialize opens a session that belongs to its key.
    let init = json!({"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (s, h, v) = rpc(w, Some(&w.key_a), &[], &init).await;
    assert_eq!(
        (s, v["result"]["protocolVersion"].as_str()),
        (200, Some("2025-11-25")),
        "{v}"
    );
    let sid = h
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("session id")
        .to_string();
    let list = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"});
    let with_sid = [
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let (s, _, v) = rpc(w, Some(&w.key_a), &with_sid, &list).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["tools"].as_array().map(Vec::len),
        Some(TOOLS.len())
    );
    let (s, _, _) = rpc(w, Some(&w.key_b), &with_sid, &list).await;
    assert_eq!(s, 404, "another key cannot use the session");
    let (s, _, _) = rpc(w, Some(&w.key_a), &[], &list).await;
    assert_eq!(s, 400, "no session and no revision");
    // Org B's key reading through its own session never sees org A's rows.
    let (_, hb, _) = rpc(w, Some(&w.key_b), &[], &init).await;
    let sid_b = hb
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("session")
        .to_string();
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "run_sql", "arguments": {"sql": "select distinct org_id from raw_web_events"}}});
    let (s, _, v) = rpc(
        w,
        Some(&w.key_b),
        &[("Mcp-Session-Id", sid_b.as_str())],
        &call,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["result"]["structuredContent"]["rows"],
        json!([{"org_id": w.org_b}])
    );
    // Unknown tools and methods are JSON-RPC errors.
    let unknown = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "drop_tables", "arguments": {}}});
    let (_, _, v) = rpc(w, Some(&w.key_a), &with_sid, &unknown).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let (_, _, v) = rpc(
        w,
        Some(&w.key_a),
        &with_sid,
        &json!({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage"}),
    )
    .await;
    assert_eq!(v["error"]["code"], -32601, "{v}");
    // Notifications are accepted without an answer; DELETE ends the session.
    let (s, _, _) = rpc(
        w,
        Some(&w.key_a),
        &with_sid,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(s, 202);
    let del = |key: &str| {
        w.http
            .delete(w.server.url("/mcp"))
            .bearer_auth(key)
            .header("Mcp-Session-Id", sid.as_str())
            .send()
    };
    assert_eq!(del(&w.key_b).await.expect("delete").status().as_u16(), 404);
    assert_eq!(del(&w.key_a).await.expect("delete").status().as_u16(), 204);
    let (s, _, _) = rpc(w, Some(&w.key_a), &with_sid, &list).await;
    assert_eq!(s, 404, "an ended session is gone");
    let get = w
        .http
        .get(w.server.url("/mcp"))
        .bearer_auth(&w.key_a)
        .send()
        .await
        .expect("get");
    assert_eq!(get.status().as_u16(), 405);
}

/// A local server speaking Gemini's `generateContent` returns scripted
/// answers: a query with a wrong column is repaired from the error, a write
/// is refused before anything runs, a query naming another organization
/// finds nothing, and an answer inventing a number is replaced by the rows.
#[tokio::test(flavor = "multi_thread")]
async fn ask_with_a_scripted_gemini_repairs_refuses_and_checks_numbers() {
    use crate::jobs::{gemini_ok, Fake};
    let fake = Fake::default();
    let base = fake.serve().await;
    let w = world_with(&[
        ("CROW_AI_PROVIDER", "gemini"),
        ("CROW_AI_MODEL", "gemini-test"),
        ("CROW_AI_BASE_URL", base.as_str()),
        ("GEMINI_API_KEY", "test-key"),
    ])
    .await;
    let good = "SELECT device_type, count(*) AS sessions FROM sessions WHERE channel = 'web' \
                GROUP BY device_type ORDER BY device_type";
    let sql_answer = |sql: &str| {
        gemini_ok(
            &json!({"sql": sql, "chart": {"kind": "bar", "x": "device_type", "y": ["sessions"]}})
                .to_string(),
        )
    };
    fake.push(
        200,
        &[],
        &sql_answer("SELECT device, count(*) AS sessions FROM sessions GROUP BY device"),
    );
    fake.push(200, &[], &sql_answer(good));
    fake.push(
        200,
        &[],
        &gemini_ok(&json!({"answer": "Mobile had 987654 sessions."}).to_string()),
    );
    fake.push(
        200,
        &[],
        &gemini_ok(&json!({"answer": "Desktop had 123457 sessions."}).to_string()),
    );
    let (s, a) = w.ask(&w.key_a, "sessions per device").await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["sql"], good);
    assert_eq!(a["attempts"], 2, "the wrong column was repaired: {a}");
    assert_eq!(a["rows"], json!(w.sql(&w.key_a, good).await));
    assert_eq!(a["provider"], "gemini");
    assert_eq!(
        a["answer_source"], "rows",
        "the invented number is rejected: {a}"
    );
    assert!(
        a["answer_note"].as_str().unwrap_or("").contains("123457"),
        "{a}"
    );
    assert!(
        !a["answer"].as_str().unwrap_or("").contains("987654"),
        "{a}"
    );
    let requests = fake.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 4);
    let first = requests[0].2.to_string();
    assert!(
        first.contains("## interactions") && first.contains("Northwind"),
        "contracts and context are sent"
    );
    let repair = requests[1].2.to_string();
    assert!(
        repair.contains("An earlier attempt failed") && repair.contains("device"),
        "{repair}"
    );
    // A write is refused before it runs, and not repaired.
    let before = w.sql(&w.key_a, "select count(*) as n from sessions").await;
    fake.push(200, &[], &sql_answer("DELETE FROM sessions"));
    let (s, e) = w.ask(&w.key_a, "remove every session").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("dml_not_allowed")),
        "{e}"
    );
    assert_eq!(
        w.sql(&w.key_a, "select count(*) as n from sessions").await,
        before
    );
    assert_eq!(
        fake.requests.lock().expect("lock").len(),
        5,
        "no repair of a refusal"
    );
    // Another organization's id finds nothing: the tenant session filters.
    let cross = format!("SELECT * FROM raw_web_events WHERE org_id = '{}'", w.org_b);
    fake.push(200, &[], &sql_answer(&cross));
    fake.push(
        200,
        &[],
        &gemini_ok(&json!({"answer": "No rows match."}).to_string()),
    );
    let (s, a) = w.ask(&w.key_a, "show Beta Bikes' events").await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["rows"], json!([]), "{a}");
    assert!(!a["rows"].to_string().contains(B_MARK));
    scripted_plan(&w, &fake, good, &before).await;
}

/// A scripted plan: a good step, a write (refused, never run, not
/// repaired), another organization's rows (filtered away); the others
/// answered, and an analyst inventing a number is replaced by the rows.
async fn scripted_plan(w: &World, fake: &crate::jobs::Fake, good: &str, before: &[Value]) {
    use crate::jobs::gemini_ok;
    let cross = format!(
        "SELECT count(*) AS events FROM raw_web_events WHERE org_id = '{}' OR product_id LIKE '{B_MARK}%'",
        w.org_b
    );
    let plan = json!({"sql": "", "plan": [
        {"question": "sessions by device", "sql": good},
        {"question": "clean up", "sql": "DELETE FROM sessions"},
        {"question": "Beta Bikes' events", "sql": cross},
    ]});
    let calls = fake.requests.lock().expect("lock").len();
    fake.push(200, &[], &gemini_ok(&plan.to_string()));
    for _ in 0..2 {
        fake.push(
            200,
            &[],
            &gemini_ok(&json!({"answer": "Mobile fell by 4242 sessions."}).to_string()),
        );
    }
    let q = "why did sessions drop last week?";
    let (s, a) = w.ask(&w.key_a, q).await;
    assert_eq!(s, 200, "{a}");
    let steps = a["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{a}");
    assert_eq!(steps[0]["rows"], json!(w.sql(&w.key_a, good).await));
    assert_eq!(steps[1]["error"]["code"], "dml_not_allowed", "{a}");
    assert_eq!(steps[1]["rows"], json!([]));
    assert_eq!(steps[1]["attempts"], 1, "a refusal is not repaired");
    assert_eq!(steps[2]["rows"], json!([{"events": 0}]), "{a}");
    assert_eq!(steps[3]["by"], "crow");
    assert_eq!(
        w.sql(&w.key_a, "select count(*) as n from sessions").await,
        before,
        "the write never ran"
    );
    assert_eq!(a["answer_source"], "rows", "{a}");
    assert!(
        a["answer_note"].as_str().unwrap_or("").contains("4242"),
        "{a}"
    );
    assert!(!a["answer"].as_str().unwrap_or("").contains("4242"), "{a}");
    numbers_from_steps(q, &a).unwrap_or_else(|e| panic!("{e}: {a}"));
    for st in steps {
        w.assert_no_b("a step's rows", &st["rows"]);
    }
    w.assert_no_b("the answer", &a["answer"]);
    let requests = fake.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), calls + 3, "plan, analyst, one re-ask");
    let analyst = requests[calls + 1].2.to_string();
    assert!(
        analyst.contains("Step 2: clean up") && analyst.contains("Failed:"),
        "{analyst}"
    );
}

/// A provider that cannot be built (Gemini without its key) does not stop
/// the server: SQL still works and ask answers 502 with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn ask_without_a_usable_provider_says_why_and_the_server_runs() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Keyless"]);
    let key = key(&b, org["org_id"].as_str().expect("org"), "read");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(
        &b,
        wal.path(),
        &[("CROW_AI_PROVIDER", "gemini"), ("GEMINI_API_KEY", "")],
    );
    let http = reqwest::Client::new();
    let r = http
        .post(server.url("/api/v1/ask"))
        .bearer_auth(&key)
        .json(&json!({"question": "conversion by device"}))
        .send()
        .await
        .expect("ask");
    assert_eq!(r.status().as_u16(), 502);
    let e: Value = r.json().await.expect("problem");
    assert_eq!(e["code"], "ai_failed", "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("GEMINI_API_KEY"),
        "{e}"
    );
    let r = http
        .post(server.url("/api/v1/sql"))
        .bearer_auth(&key)
        .json(&json!({"sql": "select count(*) as n from organizations"}))
        .send()
        .await
        .expect("sql");
    assert_eq!(r.status().as_u16(), 200);
}
