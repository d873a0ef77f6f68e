//! Pages that need a browser, and AI product refinement: a local shop and
//! blog whose content script builds are read through headless Chromium
//! (Debian's `chromium`) by `crow products crawl` and a `web` social
//! source; a page whose script never ends is cut at `browser.timeout_seconds`
//! while the others land; a product page without JSON-LD / OpenGraph becomes
//! a catalog product through AI refinement, with the offline provider and
//! through a stand-in speaking OpenAI's chat-completions format (whose
//! answer with a price not in the page is re-asked, or refused with the
//! reason).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Value};

use crate::jobs::Fake;
use crate::support::{crow_bin, Backend};

type Log = Arc<Mutex<Vec<(String, String)>>>;

/// The product the shop's script writes into the page as JSON-LD.
const JS_PRODUCT: &str = r#"<!doctype html><html><head><title>Loading…</title></head>
<body><div id="app"></div><script>
var p = {"@context": "https://schema.org", "@type": "Product", "name": "Orbit Smart Speaker",
  "sku": "OR-7", "offers": {"@type": "Offer", "price": "129.00", "priceCurrency": "EUR"}};
var s = document.createElement("script");
s.type = "application/ld+json"; s.textContent = JSON.stringify(p);
document.head.appendChild(s);
document.getElementById("app").innerHTML = "<h1>" + p.name + "</h1>";
</script></body></html>"#;

/// A product page with neither JSON-LD nor OpenGraph data, and no script.
const PLAIN_PRODUCT: &str = r#"<!doctype html><html><head><title>Nimbus Desk Lamp | Acme Home</title></head>
<body><nav><a href="/">Home</a> <a href="/cart">Cart (3 items)</a></nav>
<main><h1>Nimbus Desk Lamp</h1><p>A warm, dimmable lamp for late reading.</p>
<p>Now only £49.90, free delivery over £60.</p>
<p>Category: Lighting</p><p>Colour: Black</p></main>
<footer>© 2026 Acme Home, 12 Market Street</footer></body></html>"#;

/// A second plain product page (for the model stand-in).
const PLAIN_SPEAKER: &str = r#"<!doctype html><html><head><title>Boom Speaker</title></head>
<body><h1>Boom Speaker</h1><p>Price: 89.00 EUR</p></body></html>"#;

/// A page whose script never finishes.
const LOOPING: &str =
    "<!doctype html><html><body><div id=app></div><script>while (true) {}</script></body></html>";

/// A post whose text script writes (Readability needs a real article).
fn js_post() -> String {
    let para = "The Orbit Smart Speaker fills a living room without effort, and its voice \
                assistant understood every request on the first try during a week of testing. ";
    format!(
        r#"<!doctype html><html><head><title>Orbit, a week in</title></head>
<body><div id="root"></div><script>
var para = {para:?};
document.getElementById("root").innerHTML =
  "<article><h1>Orbit, a week in</h1><p>" + para + para + para + "</p><p>" + para + para + "</p></article>";
</script></body></html>"#
    )
}

/// The shop and blog: robots.txt, a sitemap of four pages, the post; every
/// request logged with its user agent.
async fn site() -> (String, Log) {
    let log: Log = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    async fn handle(
        State((log, base)): State<(Log, String)>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Response {
        let ua = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        log.lock().expect("lock").push((uri.path().to_string(), ua));
        match uri.path() {
            "/robots.txt" => {
                format!("User-agent: *\nDisallow: /private/\nSitemap: {base}/sitemap.xml\n")
                    .into_response()
            }
            "/sitemap.xml" => {
                let urls: String = ["js-product", "plain", "looping", "about"]
                    .iter()
                    .map(|p| format!("<url><loc>{base}/p/{p}</loc></url>"))
                    .collect();
                format!("<urlset>{urls}</urlset>").into_response()
            }
            "/p/js-product" => Html(JS_PRODUCT).into_response(),
            "/p/plain" => Html(PLAIN_PRODUCT).into_response(),
            "/p/looping" => Html(LOOPING).into_response(),
            "/p/about" => Html("<html><body><h1>About us</h1><p>We sell lamps.</p></body></html>")
                .into_response(),
            "/p/speaker" => Html(PLAIN_SPEAKER).into_response(),
            "/post" => Html(js_post()).into_response(),
            _ => (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
        }
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state((log.clone(), base.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, log)
}

/// `crow …` with extra settings, off the runtime's threads: whether it
/// succeeded, its stdout as JSON (`Null` when not JSON) and its stderr.
async fn crow(b: &Backend, env: &[(&str, &str)], args: &[&str]) -> (bool, Value, String) {
    let mut cmd = std::process::Command::new(crow_bin());
    cmd.arg("--lake").arg(&b.uri).args(args);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("CROW_CONFIG").env_remove("CROW_LAKE");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run crow"))
        .await
        .expect("join");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn crawl(b: &Backend, base: &str, org: &str, env: &[(&str, &str)]) -> (Value, String) {
    let (ok, out, err) = crow(
        b,
        env,
        &[
            "products",
            "crawl",
            base,
            "--org",
            org,
            "--interval-ms",
            "10",
            "--concurrency",
            "1",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(ok, "crawl failed: {err}");
    (out, err)
}

/// An organization's id, from `orgs create`.
fn create_org(b: &Backend, name: &str) -> String {
    let o = b.crow_json(&["orgs", "create", "--name", name]);
    o["org_id"].as_str().expect("org_id").to_string()
}

fn products(b: &Backend, org_id: &str) -> Vec<Value> {
    b.crow_json(&[
        "sql",
        &format!(
            "SELECT name, sku, price, currency, category, description, source \
             FROM products WHERE org_id = '{org_id}' ORDER BY name"
        ),
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// The crawl reads the script-built product from Chromium's DOM and the
/// plain page through the offline provider's refinement; the looping page
/// is cut at the timeout and reported while the others land; with
/// rendering off the script-built page is no product. Another organization
/// sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_renders_script_pages_and_refines_plain_ones() {
    let (base, log) = site().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let shop = create_org(&b, "Shop");
    let other = create_org(&b, "Other");
    let env = [
        ("CROW_BROWSER_TIMEOUT_SECONDS", "6"),
        ("CROW_BROWSER_SCRIPT_BUDGET_MS", "1000"),
    ];
    let started = std::time::Instant::now();
    let (r, err) = crawl(&b, &base, "Shop", &env).await;
    assert_eq!(
        (r["inserted"].as_u64(), r["errors"].as_u64()),
        (Some(2), Some(1)),
        "{r} {err}"
    );
    assert!(
        err.contains(&format!("{base}/p/looping"))
            && err.contains("did not finish within 6 s (browser.timeout_seconds)"),
        "{err}"
    );
    assert!(err.contains("fetched 4; 1 rendered in Chromium;"), "{err}");
    assert!(err.contains("2 product(s), 1 by AI refinement;"), "{err}");
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    let ps = products(&b, &shop);
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert_eq!(ps[0]["name"], "Nimbus Desk Lamp");
    assert_eq!(ps[0]["price"], 49.9);
    assert_eq!(ps[0]["currency"], "GBP");
    assert_eq!(ps[0]["category"], "Lighting");
    assert_eq!(ps[0]["description"], "Colour: Black");
    assert_eq!(ps[0]["source"], "crawl+ai");
    assert_eq!(ps[1]["name"], "Orbit Smart Speaker");
    assert_eq!(ps[1]["sku"], "OR-7");
    assert_eq!(ps[1]["price"], 129.0);
    assert_eq!(ps[1]["currency"], "EUR");
    assert_eq!(ps[1]["source"], "crawl+browser");
    let seen = log.lock().expect("lock").clone();
    let renders: Vec<&(String, String)> =
        seen.iter().filter(|(p, _)| p == "/p/js-product").collect();
    assert_eq!(renders.len(), 2, "a static fetch and a render: {seen:?}");
    assert!(
        renders
            .iter()
            .all(|(_, ua)| ua.starts_with("CROW-catalog-crawler/")),
        "{renders:?}"
    );
    assert!(products(&b, &other).is_empty(), "tenants are apart");

    // Rendering off: the script-built page is fetched but is no product.
    let (r, err) = crawl(&b, &base, "Other", &[("CROW_BROWSER_RENDER", "never")]).await;
    assert_eq!(
        (r["inserted"].as_u64(), r["errors"].as_u64()),
        (Some(1), Some(0)),
        "{r} {err}"
    );
    assert!(err.contains("fetched 4; 0 rendered in Chromium;"), "{err}");
    let ps = products(&b, &other);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["name"], "Nimbus Desk Lamp");

    // A Chromium that is not there is named, and the static results stay.
    let (r, err) = crawl(
        &b,
        &base,
        "Other",
        &[("CROW_BROWSER_CHROMIUM", "/nonexistent/chromium")],
    )
    .await;
    assert_eq!(r["errors"].as_u64(), Some(2), "{r} {err}");
    assert!(
        err.contains("browser.chromium `/nonexistent/chromium` is not an executable file"),
        "{err}"
    );
    assert_eq!(products(&b, &other).len(), 1);
}

/// A `web` source whose post script writes is captured through Chromium
/// with the post's exact text; with rendering off it fails with the
/// documented `no main content at …`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_built_post_is_captured_through_the_browser() {
    let (base, log) = site().await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    for org in ["Northwind", "Contoso"] {
        b.crow_json(&["orgs", "create", "--name", org]);
        let target = format!("{base}/post");
        b.crow_json(&[
            "social", "add", "--org", org, "--kind", "web", "--target", &target,
        ]);
    }
    let env = [("CROW_SOCIAL_MIN_INTERVAL_MS", "10")];
    let (ok, r, err) = crow(
        &b,
        &env,
        &["social", "run", "--org", "Northwind", "--format", "json"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (r["captured"].as_i64(), r["failed_sources"].as_i64()),
        (Some(1), Some(0)),
        "{r:#} {err}"
    );
    let caps = b.crow_json(&["sql", "SELECT org_id, url, text FROM raw_social_captures"]);
    assert_eq!(caps.as_array().map(Vec::len), Some(1), "{caps}");
    let text = caps[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(
            "Orbit, a week in\nThe Orbit Smart Speaker fills a living room without effort"
        ),
        "{text}"
    );
    assert_eq!(caps[0]["url"], format!("{base}/post"));
    let renders = log
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, ua)| p == "/post" && ua.starts_with("CROW-social-collector/"))
        .count();
    assert_eq!(renders, 2, "a static fetch and a render");

    let (ok, r, err) = crow(
        &b,
        &[("CROW_BROWSER_RENDER", "never")],
        &["social", "run", "--org", "Contoso", "--format", "json"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (r["captured"].as_i64(), r["failed_sources"].as_i64()),
        (Some(0), Some(1)),
        "{r:#}"
    );
    let e = r["sources"][0]["error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&format!("no main content at {base}/post")),
        "{r:#}"
    );
    let caps = b.crow_json(&["sql", "SELECT count(*) AS n FROM raw_social_captures"]);
    assert_eq!(caps[0]["n"], 1, "Contoso captured nothing");
}

fn openai_ok(text: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340}
    })
    .to_string()
}

fn refined(name: &str, price: &str, currency: &str) -> String {
    json!({"is_product": true, "name": name, "price": price, "currency": currency,
           "category": "Lighting", "brand": "Acme", "attributes": [{"name": "Colour", "value": "Black"}]})
    .to_string()
}

/// Through OpenAI's wire format: an answer whose price is not in the page
/// is re-asked with the reason and the corrected answer lands; a model
/// that insists is refused, and the reason is reported with the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_refinement_through_openai_reasks_and_refuses_invented_prices() {
    let (base, _log) = site().await;
    let fake = Fake::default();
    let ai = fake.serve().await;
    fake.push(
        200,
        &[],
        &openai_ok(&refined("Nimbus Desk Lamp", "39.90", "GBP")),
    );
    fake.push(
        200,
        &[],
        &openai_ok(&refined("Nimbus Desk Lamp", "49.90", "gbp")),
    );
    fake.push(200, &[], &openai_ok(&refined("Boom Speaker", "999", "EUR")));
    fake.push(
        200,
        &[],
        &openai_ok(&refined("Boom Speaker", "999.00", "EUR")),
    );
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let shop = create_org(&b, "Shop");
    let ai_base = format!("{ai}/v1");
    let env = [
        ("CROW_AI_PROVIDER", "openai"),
        ("CROW_AI_BASE_URL", ai_base.as_str()),
        ("OPENAI_API_KEY", "sk-test"),
        ("CROW_AI_MAX_RETRIES", "1"),
        ("CROW_BROWSER_RENDER", "never"),
    ];
    // Only the two plain pages: a sitemap of them, served beside the shop.
    let pages = json!([format!("{base}/p/plain"), format!("{base}/p/speaker")]);
    let app = axum::Router::new().route(
        "/sitemap.xml",
        axum::routing::get(move || {
            let urls: String = pages
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|u| format!("<url><loc>{u}</loc></url>"))
                        .collect()
                })
                .unwrap_or_default();
            async move { format!("<urlset>{urls}</urlset>") }
        }),
    );
    let maps = crate::support::serve_app(app).await;
    let (r, err) = crawl(&b, &format!("{maps}/sitemap.xml"), "Shop", &env).await;
    assert_eq!(
        (r["inserted"].as_u64(), r["errors"].as_u64()),
        (Some(1), Some(1)),
        "{r} {err}"
    );
    assert!(
        err.contains(&format!("{base}/p/speaker"))
            && err.contains("AI refinement by openai failed (ai_malformed_output): `price` 999.00 does not appear in the page's text"),
        "{err}"
    );
    let ps = products(&b, &shop);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["name"], "Nimbus Desk Lamp");
    assert_eq!(ps[0]["price"], 49.9);
    assert_eq!(ps[0]["currency"], "GBP");
    assert_eq!(ps[0]["source"], "crawl+ai");
    let reqs = fake.requests.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.0 == "/v1/chat/completions"));
    let first = reqs[0].2["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.contains("Now only £49.90") && !first.contains("Cart (3 items)"),
        "{first}"
    );
    assert_eq!(reqs[0].2["response_format"]["json_schema"]["strict"], true);
    let again = reqs[1].2["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        again.contains("Your previous answer was not accepted: `price` 39.90 does not appear in the page's text"),
        "{again}"
    );
}
