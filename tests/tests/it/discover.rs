//! AI-driven discovery (`discover` sources): the offline provider proposes
//! queries from the catalog's product names, a local server speaking
//! SearXNG's JSON API (and one speaking the Brave Search API) answers them,
//! and the result pages, served locally, are read like `web` sources:
//! exact queries, exact captures, dedupe across queries and runs before
//! fetching, robots.txt, a 429 with Retry-After, and failures recorded
//! while the other sources land.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::support::{Backend, Server};

/// What the search and page server saw.
#[derive(Default)]
struct Seen {
    /// SearXNG: (q, pageno) per request, in order.
    searches: Mutex<Vec<(String, String)>>,
    /// When each `"Nimbus Speaker" review` search came (the first is a 429).
    nimbus: Mutex<Vec<Instant>>,
    /// Brave: (q, count, offset, token) per request.
    brave: Mutex<Vec<(String, String, String, String)>>,
    /// Page path → GETs.
    pages: Mutex<HashMap<String, usize>>,
    /// OpenAI-compatible chat completions: the request bodies.
    chats: Mutex<Vec<Value>>,
}

type St = Arc<Seen>;

/// A review page: navigation and footer around an article.
fn page(title: &str, body: &str) -> String {
    let para = format!(
        "{body} I used it every day for three weeks, on the train, at my desk and on a long \
         flight, and wrote down what I noticed each evening so this review is not just a first \
         impression. "
    );
    format!(
        r#"<!doctype html><html lang="en"><head><title>{title}</title></head>
<body><nav><a href="/">Home</a> <a href="/deals">Deals of the week</a></nav>
<article><h1>{title}</h1><p>{para}{para}</p><p>{para}</p></article>
<footer>Subscribe to our newsletter.</footer></body></html>"#
    )
}

async fn serve_page(State(st): State<St>, uri: axum::http::Uri) -> Response {
    let path = uri.path().to_string();
    *st.pages
        .lock()
        .expect("pages")
        .entry(path.clone())
        .or_default() += 1;
    let html = match path.as_str() {
        "/reviews/aria" => page(
            "Aria Headphones review",
            "The Aria Headphones sound warm and clear.",
        ),
        "/reviews/nimbus" => page(
            "Nimbus Speaker review",
            "The Nimbus Speaker fills a room easily.",
        ),
        "/forum/aria" => page(
            "Aria Headphones thread",
            "Anyone else hear a hiss from the Aria Headphones?",
        ),
        "/private/aria" => page("Private notes", "Not for crawlers."),
        "/blog/zenith" => page(
            "Zenith Turntable diary",
            "The Zenith Turntable arrived well packed.",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    Html(html).into_response()
}

async fn robots() -> &'static str {
    "User-agent: *\nDisallow: /private/\n"
}

fn result(url: &str, title: &str) -> Value {
    json!({"url": url, "title": title, "content": format!("{title}…"), "engine": "duckduckgo",
           "engines": ["duckduckgo"], "score": 1.0, "category": "general"})
}

/// SearXNG's `GET /search?q=…&format=json&pageno=N`.
async fn searxng(
    State(st): State<St>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!(
        "http://{}",
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    );
    let query = q.get("q").cloned().unwrap_or_default();
    let pageno = q.get("pageno").cloned().unwrap_or_default();
    if q.get("format").map(String::as_str) != Some("json") {
        return StatusCode::FORBIDDEN.into_response();
    }
    st.searches
        .lock()
        .expect("searches")
        .push((query.clone(), pageno.clone()));
    let results = match (query.as_str(), pageno.as_str()) {
        ("\"Aria Headphones\" review", "1") => vec![
            result(&format!("{base}/reviews/aria"), "Aria review"),
            json!({"title": "a result without a link", "content": "?"}),
            result(&format!("{base}/private/aria"), "Private"),
        ],
        ("\"Aria Headphones\" review", "2") => vec![result(
            &format!("{base}/forum/aria?utm_source=searx#top"),
            "Aria thread",
        )],
        ("\"Nimbus Speaker\" review", "1") => {
            let first = {
                let mut n = st.nimbus.lock().expect("nimbus");
                n.push(Instant::now());
                n.len() == 1
            };
            if first {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "Too Many Requests",
                )
                    .into_response();
            }
            // The Aria review again: found by an earlier query of the run.
            vec![
                result(&format!("{base}/reviews/aria"), "Aria review"),
                result(&format!("{base}/reviews/nimbus"), "Nimbus review"),
            ]
        }
        _ => vec![],
    };
    axum::Json(
        json!({"query": query, "number_of_results": results.len(), "results": results,
                      "answers": [], "corrections": [], "infoboxes": [], "suggestions": [],
                      "unresponsive_engines": []}),
    )
    .into_response()
}

/// The Brave Search API's `GET /res/v1/web/search`.
async fn brave(
    State(st): State<St>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("x-subscription-token")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let base = format!("http://{host}");
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    st.brave
        .lock()
        .expect("brave")
        .push((get("q"), get("count"), get("offset"), token.clone()));
    if token != "brave-test-token" {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "status": 401}})),
        )
            .into_response();
    }
    let r = |path: &str, title: &str| {
        json!({"type": "search_result", "url": format!("{base}{path}"), "title": title,
               "description": format!("{title}…"), "language": "en"})
    };
    let (results, more) = match get("offset").as_str() {
        "0" => (
            vec![
                r("/reviews/aria", "Aria review"),
                json!({"type": "search_result", "title": "no url here"}),
            ],
            true,
        ),
        "1" => (vec![r("/blog/zenith", "Zenith diary")], false),
        _ => (vec![], false),
    };
    axum::Json(json!({"type": "search",
        "query": {"original": get("q"), "more_results_available": more},
        "web": {"type": "search", "results": results}}))
    .into_response()
}

/// An OpenAI-compatible `POST /v1/chat/completions` whose model proposes
/// blank, repeated, over-long and too many queries.
async fn chat(State(st): State<St>, axum::Json(body): axum::Json<Value>) -> Response {
    st.chats.lock().expect("chats").push(body);
    let queries = json!({"queries": ["aria hiss", "ARIA   hiss", "", "x".repeat(250),
                                     "aria battery", "aria case"]});
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_800_000, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": queries.to_string(), "refusal": null}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    }))
    .into_response()
}

async fn broken() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "engine down").into_response()
}

async fn server() -> (String, St) {
    let st: St = Arc::new(Seen::default());
    let app = Router::new()
        .route("/robots.txt", get(robots))
        .route("/search", get(searxng))
        .route("/res/v1/web/search", get(brave))
        .route("/broken/search", get(broken))
        .route("/v1/chat/completions", axum::routing::post(chat))
        .fallback(serve_page)
        .with_state(st.clone());
    (crate::support::serve_app(app).await, st)
}

/// `crow … --format json` with `env`, off the runtime's threads.
async fn crow(b: &Backend, env: &[(&str, &str)], args: &[&str]) -> Value {
    b.crow_json_env(env, args).await
}

/// `crow social add --kind discover --target auto` for `org`.
async fn add_discover(b: &Backend, org: &str) -> Value {
    let args = [
        "social", "add", "--org", org, "--kind", "discover", "--target", "auto",
    ];
    crow(b, &[], &args).await
}

fn import_catalog(b: &Backend, org: &str, rows: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("products.csv");
    std::fs::write(&csv, format!("sku,name,category,price,currency\n{rows}")).expect("csv");
    b.crow_json(&[
        "products",
        "import",
        csv.to_str().expect("path"),
        "--org",
        org,
    ]);
}

fn page_gets(st: &St, path: &str) -> usize {
    st.pages
        .lock()
        .expect("pages")
        .get(path)
        .copied()
        .unwrap_or(0)
}

/// A `discover` source against SearXNG: the offline provider's queries
/// from Northwind's catalog only (not the other organization's), paging,
/// a 429 honoured, result pages read once even when two queries find them,
/// robots.txt and malformed results skipped with their reasons; a second
/// run fetches no page again and captures nothing; a broken search
/// provider fails the source while a `web` source still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_searches_searxng_and_captures_each_page_once() {
    let (base, st) = server().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Northwind"]);
    b.crow_json(&["orgs", "create", "--name", "Other"]);
    import_catalog(
        &b,
        "Northwind",
        "NIM-2,Nimbus Speaker,Audio,99,USD\nARIA-1,Aria Headphones,Audio,199,USD\nZEN-3,Zenith Turntable,Audio,499,USD\n",
    );
    import_catalog(&b, "Other", "GAD-9,Secret Gadget,Toys,5,USD\n");
    let src = add_discover(&b, "Northwind").await;
    assert_eq!(
        (src["kind"].as_str(), src["target"].as_str()),
        (Some("discover"), Some("auto"))
    );
    let env = [
        ("CROW_DISCOVERY_URL", base.as_str()),
        ("CROW_DISCOVERY_RESULTS_PER_QUERY", "3"),
        ("CROW_SOCIAL_MIN_INTERVAL_MS", "10"),
        ("CROW_SOCIAL_MAX_RETRY_AFTER_SECONDS", "5"),
    ];

    let r = crow(&b, &env, &["social", "run", "--org", "Northwind"]).await;
    let aria = "\"Aria Headphones\" review";
    let nimbus = "\"Nimbus Speaker\" review";
    let zenith = "\"Zenith Turntable\" review";
    let searches = st.searches.lock().expect("searches").clone();
    // Each query pages until it has 3 results or a page adds none: the
    // first Nimbus page (after its 429) has 2, so page 2 is asked too.
    let want: Vec<(String, String)> = [
        (aria, "1"),
        (aria, "2"),
        (nimbus, "1"),
        (nimbus, "1"),
        (nimbus, "2"),
        (zenith, "1"),
    ]
    .iter()
    .map(|(q, p)| (q.to_string(), p.to_string()))
    .collect();
    assert_eq!(searches, want, "{r:#}");
    let nimbus_at = st.nimbus.lock().expect("nimbus").clone();
    assert!(
        nimbus_at[1] - nimbus_at[0] >= std::time::Duration::from_millis(900),
        "Retry-After 1 s honoured: {:?}",
        nimbus_at[1] - nimbus_at[0]
    );
    assert_eq!(
        (
            r["captured"].as_i64(),
            r["skipped"].as_i64(),
            r["failed_sources"].as_i64()
        ),
        (Some(3), Some(2), Some(0)),
        "{r:#}"
    );
    assert_eq!(r["sources"][0]["status"], "partial", "{r:#}");
    // Found by two queries, fetched once; the disallowed page never.
    assert_eq!(page_gets(&st, "/reviews/aria"), 1);
    assert_eq!(page_gets(&st, "/private/aria"), 0);

    let caps = b.crow_json(&[
        "sql",
        "SELECT o.name AS org, c.platform, c.url, c.canonical_url, c.text, c.metrics \
         FROM raw_social_captures c JOIN organizations o ON o.org_id = c.org_id ORDER BY c.canonical_url",
    ]);
    let caps = caps.as_array().expect("rows");
    let got: Vec<(String, String, String, String)> = caps
        .iter()
        .map(|c| {
            let m: Value =
                serde_json::from_str(c["metrics"].as_str().unwrap_or("{}")).expect("metrics");
            (
                c["org"].as_str().unwrap_or_default().to_string(),
                c["canonical_url"].as_str().unwrap_or_default().to_string(),
                m["discovery"]["query"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["discovery"]["provider"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let row = |path: &str, q: &str| {
        (
            "Northwind".to_string(),
            format!("{base}{path}"),
            q.to_string(),
            "searxng".to_string(),
        )
    };
    assert_eq!(
        got,
        vec![
            row("/forum/aria", aria),
            row("/reviews/aria", aria),
            row("/reviews/nimbus", nimbus)
        ]
    );
    for (c, title, phrase) in [
        (&caps[0], "Aria Headphones thread", "hear a hiss"),
        (&caps[1], "Aria Headphones review", "warm and clear"),
        (&caps[2], "Nimbus Speaker review", "fills a room"),
    ] {
        assert_eq!(c["platform"], "web");
        let text = c["text"].as_str().unwrap_or_default();
        assert!(text.starts_with(&format!("{title}\n")), "{text}");
        assert!(text.contains(phrase), "{text}");
        assert!(
            !text.contains("Deals of the week") && !text.contains("newsletter"),
            "{text}"
        );
    }
    let skipped = b.crow_json(&[
        "sql",
        "SELECT reason FROM failed_events WHERE reason_code = 'malformed_item' ORDER BY reason",
    ]);
    let reasons: Vec<&str> = skipped
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{skipped}");
    assert_eq!(reasons[0], "a search result without an http(s) url");
    assert!(
        reasons[1].starts_with(&format!("result {base}/private/aria: robots.txt disallows")),
        "{reasons:?}"
    );

    // Second run: the same queries, no page fetched again, nothing new.
    let r = crow(&b, &env, &["social", "run", "--org", "Northwind"]).await;
    assert_eq!(
        (r["captured"].as_i64(), r["fetched"].as_i64()),
        (Some(0), Some(0)),
        "{r:#}"
    );
    // aria p1, p2; nimbus p1 (no 429 now), p2; zenith p1.
    assert_eq!(st.searches.lock().expect("searches").len(), 11);
    for path in ["/reviews/aria", "/reviews/nimbus", "/forum/aria"] {
        assert_eq!(page_gets(&st, path), 1, "{path} fetched again");
    }

    // A broken search provider: the discover source fails with the
    // reason, a web source of the same run still lands.
    crow(
        &b,
        &[],
        &[
            "social",
            "add",
            "--org",
            "Northwind",
            "--kind",
            "web",
            "--target",
            &format!("{base}/blog/zenith"),
        ],
    )
    .await;
    let broken = format!("{base}/broken");
    let mut env_broken = env.to_vec();
    env_broken[0] = ("CROW_DISCOVERY_URL", broken.as_str());
    let r = crow(&b, &env_broken, &["social", "run", "--org", "Northwind"]).await;
    assert_eq!(
        (r["captured"].as_i64(), r["failed_sources"].as_i64()),
        (Some(1), Some(1)),
        "{r:#}"
    );
    let list = crow(&b, &[], &["social", "list", "--org", "Northwind"]).await;
    let disc = list
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["kind"] == "discover")
        .expect("discover source");
    assert_eq!(disc["last_status"], "failed");
    let e = disc["last_error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with(
            "3 of 3 search queries failed; first: search `\"Aria Headphones\" review` failed: GET "
        ),
        "{e}"
    );
    assert!(e.contains("HTTP 500"), "{e}");
    let failed = b.crow_json(&[
        "sql",
        "SELECT count(*) AS n FROM failed_events WHERE reason_code = 'source_failed' AND reason LIKE '%HTTP 500%'",
    ]);
    assert_eq!(failed[0]["n"], 1, "{failed}");
    let other = b.crow_json(&[
        "sql",
        "SELECT count(*) AS n FROM raw_social_captures c JOIN organizations o ON o.org_id = c.org_id WHERE o.name = 'Other'",
    ]);
    assert_eq!(other[0]["n"], 0);
    let all: Vec<String> = st
        .searches
        .lock()
        .expect("searches")
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert!(!all.iter().any(|q| q.contains("Secret Gadget")), "{all:?}");
}

/// A `discover` source against the Brave Search API: the token goes in
/// `X-Subscription-Token` (a wrong one fails the source with the HTTP
/// status), `count` is the per-query bound, `offset` pages while more
/// results are available, and a result without a url is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_through_brave_search_pages_with_the_subscription_token() {
    let (base, st) = server().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Northwind"]);
    import_catalog(
        &b,
        "Northwind",
        "ARIA-1,Aria Headphones,Audio,199,USD\nZEN-3,Zenith Turntable,Audio,499,USD\n",
    );
    crow(
        &b,
        &[],
        &[
            "social",
            "add",
            "--org",
            "Northwind",
            "--kind",
            "discover",
            "--target",
            "auto",
            "--schedule",
            "off",
        ],
    )
    .await;
    let mut env = vec![
        ("CROW_DISCOVERY_PROVIDER", "brave"),
        ("CROW_DISCOVERY_URL", base.as_str()),
        ("CROW_DISCOVERY_API_KEY", "wrong-token"),
        ("CROW_DISCOVERY_RESULTS_PER_QUERY", "5"),
        ("CROW_DISCOVERY_MAX_QUERIES", "1"),
        ("CROW_SOCIAL_MIN_INTERVAL_MS", "10"),
    ];
    let r = crow(&b, &env, &["social", "run", "--org", "Northwind"]).await;
    assert_eq!(
        (r["captured"].as_i64(), r["failed_sources"].as_i64()),
        (Some(0), Some(1)),
        "{r:#}"
    );
    let e = r["sources"][0]["error"].as_str().unwrap_or_default();
    assert!(e.contains("HTTP 401"), "{e}");

    env[2] = ("CROW_DISCOVERY_API_KEY", "brave-test-token");
    let r = crow(&b, &env, &["social", "run", "--org", "Northwind"]).await;
    assert_eq!(
        (
            r["captured"].as_i64(),
            r["skipped"].as_i64(),
            r["failed_sources"].as_i64()
        ),
        (Some(2), Some(1), Some(0)),
        "{r:#}"
    );
    let q = "\"Aria Headphones\" review".to_string();
    let calls = st.brave.lock().expect("brave").clone();
    let t = |s: &str| s.to_string();
    assert_eq!(
        calls,
        vec![
            (q.clone(), t("5"), t("0"), t("wrong-token")),
            (q.clone(), t("5"), t("0"), t("brave-test-token")),
            (q.clone(), t("5"), t("1"), t("brave-test-token")),
        ]
    );
    let caps = b.crow_json(&[
        "sql",
        "SELECT canonical_url, metrics FROM raw_social_captures ORDER BY canonical_url",
    ]);
    let got: Vec<(String, Value)> = caps
        .as_array()
        .expect("rows")
        .iter()
        .map(|c| {
            let m: Value =
                serde_json::from_str(c["metrics"].as_str().unwrap_or("{}")).expect("metrics");
            (
                c["canonical_url"].as_str().unwrap_or_default().to_string(),
                m["discovery"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                format!("{base}/blog/zenith"),
                json!({"provider": "brave", "query": q, "rank": 2,
                       "result_url": format!("{base}/blog/zenith"), "result_title": "Zenith diary"})
            ),
            (
                format!("{base}/reviews/aria"),
                json!({"provider": "brave", "query": q, "rank": 1,
                       "result_url": format!("{base}/reviews/aria"), "result_title": "Aria review"})
            ),
        ]
    );
}

/// With an OpenAI-compatible provider the prompt carries the organization's
/// context and catalog; an answer with blank, repeated, over-long and too
/// many queries is asked again once, then kept repaired: exactly the first
/// `max_queries` usable queries are searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_proposes_the_queries_from_context_and_catalog_validated() {
    let (base, st) = server().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&[
        "orgs",
        "create",
        "--name",
        "Northwind",
        "--context",
        "Northwind sells headphones to commuters.",
    ]);
    import_catalog(&b, "Northwind", "ARIA-1,Aria Headphones,Audio,199,USD\n");
    add_discover(&b, "Northwind").await;
    let ai = format!("{base}/v1");
    let env = [
        ("CROW_DISCOVERY_URL", base.as_str()),
        ("CROW_DISCOVERY_MAX_QUERIES", "2"),
        ("CROW_AI_PROVIDER", "openai"),
        ("CROW_AI_MODEL", "gpt-test"),
        ("CROW_AI_BASE_URL", ai.as_str()),
        ("OPENAI_API_KEY", "test-key"),
        ("CROW_SOCIAL_MIN_INTERVAL_MS", "10"),
    ];
    let r = crow(&b, &env, &["social", "run", "--org", "Northwind"]).await;
    assert_eq!(
        (
            r["failed_sources"].as_i64(),
            r["sources"][0]["status"].as_str()
        ),
        (Some(0), Some("ok")),
        "{r:#}"
    );
    let searches: Vec<(String, String)> = st.searches.lock().expect("searches").clone();
    let t = |q: &str| (q.to_string(), "1".to_string());
    assert_eq!(searches, vec![t("aria hiss"), t("aria battery")]);
    let chats = st.chats.lock().expect("chats").clone();
    assert_eq!(chats.len(), 2, "asked again once, then kept repaired");
    let user = chats[0]["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(user.starts_with("Organization: Northwind\n"), "{user}");
    assert!(
        user.contains("About the organization:\nNorthwind sells headphones to commuters.\n"),
        "{user}"
    );
    assert!(user.contains("Aria Headphones | Audio\n"), "{user}");
    assert!(user.contains("at most 2 search queries"), "{user}");
    assert_eq!(
        chats[0]["response_format"]["json_schema"]["schema"]["required"],
        json!(["queries"])
    );
    let again = chats[1]["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        again.contains("Your previous answer was not accepted"),
        "{again}"
    );
}

/// Under `crow serve`: a `discover` source added through `POST
/// /api/v1/social/sources` (a bad target is a 400) is collected by the
/// scheduler on its cron, as one run; later slots capture nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_a_discover_source_added_over_rest() {
    let (base, st) = server().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Northwind"]);
    import_catalog(
        &b,
        "Northwind",
        "ARIA-1,Aria Headphones,Audio,199,USD\nNIM-2,Nimbus Speaker,Audio,99,USD\n",
    );
    let admin = b.crow_json(&["keys", "create", "--org", "Northwind", "--scope", "admin"])
        ["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let env = [
        ("CROW_DISCOVERY_URL", base.as_str()),
        ("CROW_DISCOVERY_RESULTS_PER_QUERY", "3"),
        ("CROW_SOCIAL_MIN_INTERVAL_MS", "10"),
        ("CROW_SOCIAL_MAX_RETRY_AFTER_SECONDS", "5"),
        ("CROW_SCHEDULE_ENABLED", "true"),
        ("CROW_SCHEDULE_TICK_SECONDS", "1"),
        ("CROW_SCHEDULE_SOCIAL", "*/2 * * * * *"),
        ("CROW_SCHEDULE_SESSIONIZE", "off"),
        ("CROW_SCHEDULE_ENRICH", "off"),
        ("CROW_SCHEDULE_PATTERNS", "off"),
        ("CROW_SCHEDULE_BILLING", "off"),
        ("CROW_SCHEDULE_OPTIMIZE", "off"),
        ("CROW_SCHEDULE_CHECKPOINT", "off"),
        ("CROW_SCHEDULE_VACUUM", "off"),
    ];
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &env);
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(s.url("/api/v1/social/sources"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let bad = post(json!({"kind": "discover", "target": "  "}))
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    let ok = post(json!({"kind": "discover", "target": "auto", "schedule": "*/2 * * * * *"}))
        .await
        .expect("post");
    assert_eq!(ok.status(), 201);
    let count = || {
        b.crow_json(&[
            "sql",
            "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM raw_social_captures",
        ])
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let c = count();
        if c[0]["n"].as_i64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no discovered capture in time: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    // Let a few more slots run: they search again and capture nothing.
    let searched = st.searches.lock().expect("searches").len();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while st.searches.lock().expect("searches").len() < searched + 4 {
        assert!(Instant::now() < deadline, "no later scheduled run");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let c = count();
    assert_eq!(
        (c[0]["n"].as_i64(), c[0]["runs"].as_i64()),
        (Some(3), Some(1)),
        "{c}"
    );
    for path in ["/reviews/aria", "/reviews/nimbus", "/forum/aria"] {
        assert_eq!(page_gets(&st, path), 1, "{path}");
    }
    // A run records its ledger row when it ends, after its searches: a
    // busy machine can be between the two.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ledger = b.crow_json(&[
            "sql",
            "SELECT count(*) AS n FROM job_runs WHERE job = 'social' AND \"trigger\" = 'schedule' AND status = 'succeeded'",
        ]);
        if ledger[0]["n"].as_i64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{ledger}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
