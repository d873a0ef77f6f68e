//! Embeddings (issue 20 item 6): semantic product matching, search and
//! the vector store, through the real `crow` binary and `crow serve`.
//!
//! - A social post that names a product only by a close paraphrase (no
//!   hyphen, singular, another word order) gets an interaction naming it
//!   after enrich (offline embedder and offline model).
//! - `GET /api/v1/search` returns the expected neighbours in order, and an
//!   organization never gets another's vectors (two orgs with the same
//!   product name); `cosine_similarity` answers in SQL.
//! - Re-running enrich embeds nothing again.
//! - The OpenAI-compatible and Gemini wire formats against local servers
//!   speaking them, a 429 with `Retry-After` first.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use crow_lake::batch::rows_to_batch;
use serde_json::{json, Value};

use crate::support::{crow_bin, sql_over_http, Backend, Server};

/// `crow … --format json --quiet` with extra settings, no AI settings or
/// keys inherited from the environment.
fn crow_env(b: &Backend, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(crow_bin());
    cmd.arg("--lake")
        .arg(&b.uri)
        .args(args)
        .args(["--format", "json", "--quiet"]);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    cmd.env_remove("CROW_CONFIG").env_remove("CROW_LAKE");
    for (k, _) in std::env::vars() {
        if k.starts_with("CROW_AI_") || k.ends_with("_API_KEY") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run crow");
    assert!(
        out.status.success(),
        "crow {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0)
        .single()
        .expect("time")
}

fn import(b: &Backend, org: &str, csv: &str) {
    let file = tempfile::NamedTempFile::with_suffix(".csv").expect("tmp");
    std::fs::write(file.path(), csv).expect("write");
    let r = b.crow_json(&[
        "products",
        "import",
        file.path().to_str().expect("path"),
        "--org",
        org,
    ]);
    assert!(r["inserted"].as_u64().unwrap_or(0) > 0, "{r}");
}

/// Land social captures `(capture id, run id, minute, text)` of `org`.
async fn land_posts(b: &Backend, org: &str, posts: &[(&str, &str, u32, &str)]) {
    let rows: Vec<_> = posts
        .iter()
        .map(|(id, run, m, text)| {
            crow_ingest::channels::social_row(
                org,
                None,
                &json!({"capture_id": id, "run_id": run, "platform": "mastodon",
                        "url": format!("https://social.example/@fan/{id}"), "author": "fan",
                        "text": text, "captured_at": t(14, *m).to_rfc3339()}),
                Utc::now(),
            )
            .expect("capture")
        })
        .collect();
    let batch = rows_to_batch(&crow_schemas::RAW_SOCIAL_CAPTURES, &rows).expect("batch");
    b.lake()
        .await
        .append("raw_social_captures", vec![batch])
        .await
        .expect("append");
}

fn org_id(b: &Backend, name: &str) -> String {
    let o = b.crow_json(&["orgs", "create", "--name", name]);
    o["org_id"].as_str().expect("org").to_string()
}

fn count(b: &Backend, sql: &str) -> i64 {
    b.sql_rows(sql)[0]["n"].as_i64().expect("count")
}

const NORTHWIND: &str = "sku,name,category,price,currency\n\
    AR-1,Aria Noise-Cancelling Headphones,Audio,199,USD\n\
    NI-2,Nimbus Bluetooth Speaker,Audio,99,USD\n\
    ZE-3,Zenith Turntable,Audio,499,USD\n\
    TR-4,Trail Runner Shoe,Outdoor,120,USD\n";

/// The paraphrase post, the search order and tenant isolation, SQL, and
/// idempotence, on the local folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraphrases_become_candidates_and_search_is_per_organization() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let a = org_id(&b, "Northwind");
    let other = org_id(&b, "Southwind");
    import(&b, "Northwind", NORTHWIND);
    // The other organization sells a product of the same name.
    import(
        &b,
        "Southwind",
        "sku,name,category,price,currency\nS-ARIA,Aria Noise-Cancelling Headphones,Audio,189,USD\nS-CO,Comet Espresso Machine,Kitchen,349,USD\n",
    );
    // Only a paraphrase: no hyphen, singular, another order.
    let post = "these aria noisecancelling headphone are incredible on long flights";
    land_posts(
        &b,
        &a,
        &[
            ("k1", "run-1", 0, post),
            ("k2", "run-1", 2, "the weather on the coast is lovely today"),
        ],
    )
    .await;
    land_posts(
        &b,
        &other,
        &[("k9", "run-9", 5, "comet espresso machines rule")],
    )
    .await;
    let r = crow_env(&b, &["jobs", "run", "sessionize"], &[]);
    assert_eq!(r["social_sessions"], 2, "{r}");

    let r = crow_env(&b, &["jobs", "run", "enrich"], &[]);
    assert_eq!(r["interactions"], 2, "{r}");
    assert!(r.get("embedding_error").is_none(), "{r}");
    // 6 products, 3 captures, 2 interactions.
    assert_eq!(r["embedded"], 11, "{r}");
    let rows = b.sql_rows(&format!(
        "SELECT product_ids, description FROM interactions WHERE org_id = '{a}'"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["product_ids"], json!(["AR-1"]), "{rows:?}");
    assert!(
        rows[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Aria Noise-Cancelling Headphones"),
        "{rows:?}"
    );
    let rows = b.sql_rows(&format!(
        "SELECT product_ids FROM interactions WHERE org_id = '{other}'"
    ));
    assert_eq!(rows[0]["product_ids"], json!(["S-CO"]), "{rows:?}");

    // Again over the same day: the same interactions, nothing embedded.
    let before = count(&b, "SELECT count(*) AS n FROM embeddings");
    assert_eq!(before, 11);
    let r = crow_env(
        &b,
        &[
            "jobs",
            "run",
            "enrich",
            "--from",
            "2026-03-10",
            "--to",
            "2026-03-11",
        ],
        &[],
    );
    assert_eq!(
        (r["interactions"].as_u64(), r["embedded"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(count(&b, "SELECT count(*) AS n FROM embeddings"), before);

    // cosine_similarity in `crow sql`.
    let c = b.sql_rows("SELECT cosine_similarity([1.0, 0.0], [1.0, 1.0]) AS c");
    let c = c[0]["c"].as_f64().expect("c");
    assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9, "{c}");

    search_over_http(&b, &a, &other).await;
}

async fn search_over_http(b: &Backend, a: &str, other: &str) {
    let key = |org: &str| {
        b.crow_json(&["keys", "create", "--org", org, "--scope", "read"])["secret"]
            .as_str()
            .expect("secret")
            .to_string()
    };
    let (ka, kb) = (key(a), key(other));
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(b, wal.path(), &[]);
    let http = reqwest::Client::new();
    let search = |k: &str, q: &[(&str, &str)]| {
        http.get(server.url("/api/v1/search"))
            .bearer_auth(k)
            .query(q)
            .send()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };
    // The speaker, then the audio products (the shorter name nearer),
    // not the shoe.
    let r = search(
        &ka,
        &[("q", "bluetooth speakers for audio"), ("limit", "3")],
    )
    .await
    .expect("search");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(ids(&v), ["NI-2", "ZE-3", "AR-1"], "{v}");
    assert_eq!(v["results"][0]["label"], "Nimbus Bluetooth Speaker");
    assert_eq!(
        (v["kind"].as_str(), v["provider"].as_str()),
        (Some("product"), Some("offline")),
        "{v}"
    );
    let (s0, s1) = (
        v["results"][0]["score"].as_f64(),
        v["results"][1]["score"].as_f64(),
    );
    assert!(s0 > s1, "{v}");
    // All of Northwind's products, none of Southwind's (same name there).
    let r = search(
        &ka,
        &[("q", "aria noise cancelling headphones"), ("limit", "100")],
    )
    .await
    .expect("search");
    let v: Value = r.json().await.expect("json");
    let got = ids(&v);
    assert_eq!(got.len(), 4, "{v}");
    assert_eq!(got[0], "AR-1");
    assert!(got.iter().all(|id| !id.starts_with("S-")), "{v}");
    let r = search(&kb, &[("q", "aria noise cancelling headphones")])
        .await
        .expect("search");
    let v: Value = r.json().await.expect("json");
    assert_eq!(ids(&v), ["S-ARIA", "S-CO"], "{v}");
    // Social captures: the paraphrase post first.
    let r = search(
        &ka,
        &[
            ("q", "noise cancelling headphones on a flight"),
            ("kind", "social_capture"),
        ],
    )
    .await
    .expect("search");
    let v: Value = r.json().await.expect("json");
    assert_eq!(ids(&v), ["k1", "k2"], "{v}");
    // Bad parameters are 400s naming them; no key is a 401.
    let r = search(&ka, &[("q", "x"), ("kind", "orders")])
        .await
        .expect("search");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "invalid_parameter");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("`kind`"),
        "{v}"
    );
    let r = search(&ka, &[("kind", "product")]).await.expect("search");
    assert_eq!(r.status(), 400);
    let r = http
        .get(server.url("/api/v1/search?q=aria"))
        .send()
        .await
        .expect("search");
    assert_eq!(r.status(), 401);
    // SQL over the API: the tenant sees its own vectors only, and the
    // function works on them.
    let rows = sql_over_http(
        &http,
        &server,
        &kb,
        "SELECT count(*) AS n, min(cosine_similarity(vector, vector)) AS s FROM embeddings",
    )
    .await;
    let row = &rows[0];
    // 2 products, 1 capture, 1 interaction.
    assert_eq!(row["n"], 4, "{rows}");
    assert!(
        (row["s"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-5,
        "{rows}"
    );
}

/// What a fake embedding server saw.
#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    headers: Vec<HeaderMap>,
    at: Vec<Instant>,
}

type Shared = Arc<Mutex<Seen>>;

/// A vector of `dims` for `text`, not normalised (CROW normalises).
fn fake_vector(text: &str, dims: usize) -> Vec<f64> {
    (0..dims)
        .map(|j| ((text.len() + j * 3) % 7) as f64 + 1.0)
        .collect()
}

/// Record a call; the first one is a 429 with `Retry-After: 1`.
fn record(st: &Shared, headers: HeaderMap, body: &Value) -> bool {
    let mut s = st.lock().expect("lock");
    s.bodies.push(body.clone());
    s.headers.push(headers);
    s.at.push(Instant::now());
    s.bodies.len() == 1
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "1")],
        Json(json!({"error": {"message": "rate limited"}})),
    )
        .into_response()
}

async fn openai_embeddings(
    State(st): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if record(&st, headers, &body) {
        return too_many();
    }
    let dims = body["dimensions"].as_u64().unwrap_or(4) as usize;
    let input = body["input"].as_array().cloned().unwrap_or_default();
    // Out of order on purpose: `index` says which input each one is.
    let data: Vec<Value> = input
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_vector(t.as_str().unwrap_or_default(), dims)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})).into_response()
}

async fn gemini_embeddings(
    State(st): State<Shared>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some("test-key") {
        return (StatusCode::FORBIDDEN, "bad key").into_response();
    }
    if action != "embed-test:batchEmbedContents" {
        return (StatusCode::NOT_FOUND, action).into_response();
    }
    if record(&st, headers, &body) {
        return too_many();
    }
    let embeddings: Vec<Value> = body["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let text = r["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let dims = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
            json!({"values": fake_vector(text, dims)})
        })
        .collect();
    Json(json!({ "embeddings": embeddings })).into_response()
}

/// Enrich one social session with `provider`'s embeddings from a local
/// server; what the server saw.
async fn enrich_with(provider: &str) -> (Backend, Seen) {
    let st: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1beta/models/{action}", post(gemini_embeddings))
        .with_state(st.clone());
    let base = crate::support::serve_app(app).await;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = org_id(&b, "Northwind");
    import(
        &b,
        "Northwind",
        "sku,name,category,price,currency\nAR-1,Aria Headphones,Audio,199,USD\nNI-2,Nimbus Speaker,Audio,99,USD\n",
    );
    land_posts(
        &b,
        &org,
        &[("k1", "run-1", 0, "my aria headphones arrived")],
    )
    .await;
    crow_env(&b, &["jobs", "run", "sessionize"], &[]);
    let url = if provider == "openai" {
        format!("{base}/v1")
    } else {
        base.clone()
    };
    let env = [
        ("CROW_AI_EMBEDDINGS_PROVIDER", provider),
        ("CROW_AI_EMBEDDINGS_BASE_URL", url.as_str()),
        ("CROW_AI_EMBEDDINGS_MODEL", "embed-test"),
        ("CROW_AI_EMBEDDINGS_DIMS", "8"),
        ("OPENAI_API_KEY", "sk-test"),
        ("GEMINI_API_KEY", "test-key"),
    ];
    let r = crow_env(&b, &["jobs", "run", "enrich"], &env);
    assert!(r.get("embedding_error").is_none(), "{r}");
    assert_eq!(r["interactions"], 1, "{r}");
    // 2 products, 1 capture, 1 interaction.
    assert_eq!(r["embedded"], 4, "{r}");
    let rows = b.sql_rows(
        "SELECT entity_kind, entity_id, provider, model, dims, vector FROM embeddings \
         WHERE entity_kind = 'product' ORDER BY entity_id",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(
            (
                r["provider"].as_str(),
                r["model"].as_str(),
                r["dims"].as_i64()
            ),
            (Some(provider), Some("embed-test"), Some(8)),
            "{r}"
        );
    }
    // The stored vector is the server's, in the right order, normalised.
    let want = fake_vector("Aria Headphones | Audio", 8);
    let norm = want.iter().map(|x| x * x).sum::<f64>().sqrt();
    let got: Vec<f64> = rows[0]["vector"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().expect("float"))
        .collect();
    assert_eq!(got.len(), 8);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w / norm).abs() < 1e-5, "{got:?} vs {want:?}");
    }
    // Again: nothing is sent.
    let calls = st.lock().expect("lock").bodies.len();
    crow_env(
        &b,
        &[
            "jobs",
            "run",
            "enrich",
            "--from",
            "2026-03-10",
            "--to",
            "2026-03-11",
        ],
        &env,
    );
    let seen = std::mem::take(&mut *st.lock().expect("lock"));
    // The second run embedded the session's text for its candidates, and
    // nothing to store.
    assert_eq!(seen.bodies.len(), calls + 1, "{:?}", seen.bodies);
    assert_eq!(count(&b, "SELECT count(*) AS n FROM embeddings"), 4);
    (b, seen)
}

fn retried_after(seen: &Seen) {
    // The first call was a 429; the same request came again a second later.
    assert_eq!(seen.bodies[0], seen.bodies[1]);
    let waited = seen.at[1] - seen.at[0];
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_embeddings_wire_format() {
    let (_b, seen) = enrich_with("openai").await;
    retried_after(&seen);
    let first = &seen.bodies[0];
    assert_eq!(first["model"], "embed-test");
    assert_eq!(first["dimensions"], 8);
    assert_eq!(
        first["input"],
        json!(["Aria Headphones | Audio", "Nimbus Speaker | Audio"]),
        "{first}"
    );
    let auth = seen.headers[0]
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    assert_eq!(auth, Some("Bearer sk-test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_embeddings_wire_format() {
    let (_b, seen) = enrich_with("gemini").await;
    retried_after(&seen);
    let first = &seen.bodies[0];
    let requests = first["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 2, "{first}");
    assert_eq!(
        requests[0],
        json!({"model": "models/embed-test", "content": {"parts": [{"text": "Aria Headphones | Audio"}]}, "outputDimensionality": 8})
    );
}
