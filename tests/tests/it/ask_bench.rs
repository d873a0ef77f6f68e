//! The answer-quality benchmark of Ask CROW (BENCHMARKS.md, "Ask CROW:
//! answer quality"): the questions of `tests/ask_bench/questions.json`
//! asked over the demo lake, each answer's rows compared with its
//! hand-written reference SQL's. The measurement is ignored (it measures,
//! it does not guard; every test run has it at a tiny size, offline only,
//! `ask_bench_runs_at_a_tiny_size`); run it with
//!
//! ```text
//! cargo test -p crow-tests --test it -- --ignored --nocapture ask_bench
//! ```
//!
//! The offline provider always runs. A real model runs too when
//! `CROWBENCH_PROVIDER` names one (`gemini` or `openai`, with its key and
//! optionally `CROW_AI_MODEL` in the environment), or else when
//! `GEMINI_API_KEY` or `OPENAI_API_KEY` is set. Questions a provider
//! refuses (422 `question_not_supported`) count as not answered.
//!
//! Rows are compared as results, not as text: each row becomes the sorted
//! list of its values (numbers to 2 decimals, so column names and order do
//! not matter), and the answer matches when its rows are the reference's
//! (in the same order when the reference has an ORDER BY, else as a
//! multiset). An answer cut at Ask CROW's 100 rows never matches a longer
//! reference.

use serde_json::{json, Value};

use crate::support::{Backend, Server};

fn norm_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| format!("{f:.2}"))
            .unwrap_or_else(|| n.to_string()),
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn norm_row(r: &Value) -> Vec<String> {
    let mut vals: Vec<String> = r
        .as_object()
        .map(|o| o.values().map(norm_value).collect())
        .unwrap_or_default();
    vals.sort();
    vals
}

/// Whether `got` has the reference's rows.
pub(crate) fn rows_match(got: &[Value], want: &[Value], ordered: bool) -> bool {
    let mut g: Vec<Vec<String>> = got.iter().map(norm_row).collect();
    let mut w: Vec<Vec<String>> = want.iter().map(norm_row).collect();
    if !ordered {
        g.sort();
        w.sort();
    }
    g == w
}

struct Run {
    provider: String,
    answered: usize,
    matched: usize,
    refused: usize,
    lines: Vec<String>,
}

async fn post(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .timeout(std::time::Duration::from_secs(180))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn run(b: &Backend, key: &str, provider: &str, questions: &[Value]) -> Run {
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(
        b,
        wal.path(),
        &[
            ("CROW_AI_PROVIDER", provider),
            ("CROW_API_RATE_LIMIT_BURST", "100000"),
        ],
    );
    let http = reqwest::Client::new();
    let mut out = Run {
        provider: provider.to_string(),
        answered: 0,
        matched: 0,
        refused: 0,
        lines: Vec::new(),
    };
    for q in questions {
        let (id, question) = (
            q["id"].as_str().unwrap_or(""),
            q["question"].as_str().unwrap_or(""),
        );
        let reference = q["reference"].as_str().unwrap_or("");
        let (s1, want) = post(&http, &s, key, "/api/v1/sql", json!({"sql": reference})).await;
        assert_eq!(s1, 200, "{id}: the reference runs: {want}");
        let want = want.as_array().cloned().unwrap_or_default();
        assert!(
            !want.is_empty(),
            "{id}: the demo has rows for the reference"
        );
        let (status, a) = post(&http, &s, key, "/api/v1/ask", json!({"question": question})).await;
        let verdict = match status {
            200 => {
                out.answered += 1;
                let got = a["rows"].as_array().cloned().unwrap_or_default();
                let ordered = reference.to_uppercase().contains("ORDER BY");
                if rows_match(&got, &want, ordered) && a["truncated"] != true {
                    out.matched += 1;
                    "match".to_string()
                } else {
                    format!(
                        "WRONG ({} rows, reference {}): {}",
                        got.len(),
                        want.len(),
                        a["sql"]
                    )
                }
            }
            422 => {
                out.refused += 1;
                "needs a real model (422)".to_string()
            }
            other => format!("FAILED {other} {}: {}", a["code"], a["detail"]),
        };
        out.lines.push(format!("| {id} | {question} | {verdict} |"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run with --ignored (BENCHMARKS.md)"]
async fn ask_bench() {
    bench("4000", true).await;
}

/// The benchmark at a tiny size with the offline provider only, in every
/// test run, so that it cannot rot: every question still has its
/// reference, and the offline shapes are still answered with the
/// reference's rows.
#[tokio::test(flavor = "multi_thread")]
async fn ask_bench_runs_at_a_tiny_size() {
    bench("1500", false).await;
}

/// The benchmark over a demo lake of `visitors` (28 days); a real model
/// too when `real_models` and one is configured (see above).
async fn bench(visitors: &str, real_models: bool) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ask_bench/questions.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).expect("questions.json"))
        .expect("questions.json is JSON");
    let questions = doc["questions"].as_array().cloned().unwrap_or_default();
    assert!(questions.len() >= 30, "at least 30 questions");
    let b = Backend::local();
    b.crow_json(&["demo", "--visitors", visitors, "--days", "28"]);
    let orgs = b.crow_json(&["sql", "select org_id from organizations"]);
    let org = orgs[0]["org_id"].as_str().expect("demo org").to_string();
    let k = b.crow_json(&["keys", "create", "--org", &org, "--scope", "read"]);
    let key = k["secret"].as_str().expect("secret").to_string();

    let mut providers = vec!["offline".to_string()];
    let real = std::env::var("CROWBENCH_PROVIDER").ok().or_else(|| {
        if std::env::var_os("GEMINI_API_KEY").is_some() {
            Some("gemini".into())
        } else if std::env::var_os("OPENAI_API_KEY").is_some() {
            Some("openai".into())
        } else {
            None
        }
    });
    providers.extend(real.filter(|_| real_models));
    let mut summary = Vec::new();
    for p in &providers {
        let r = run(&b, &key, p, &questions).await;
        println!(
            "\n### {}\n\n| id | question | result |\n|---|---|---|",
            r.provider
        );
        for l in &r.lines {
            println!("{l}");
        }
        let shapes = questions.iter().filter(|q| q["shape"] == true).count();
        summary.push(format!(
            "{}: {} of {} questions answered with the reference's rows ({} answered, {} wrong, {} refused as needing a real model; {} questions are in the offline shapes)",
            r.provider,
            r.matched,
            questions.len(),
            r.answered,
            r.answered - r.matched,
            r.refused,
            shapes
        ));
        if p == "offline" {
            // The offline provider's documented shapes are its promise.
            let missed: Vec<&String> = r
                .lines
                .iter()
                .zip(&questions)
                .filter(|(l, q)| q["shape"] == true && !l.ends_with("| match |"))
                .map(|(l, _)| l)
                .collect();
            assert!(
                missed.is_empty(),
                "offline shapes not answered: {missed:#?}"
            );
        }
    }
    println!("\n{}", summary.join("\n"));
}

#[test]
fn rows_compare_as_results() {
    let a = [
        json!({"d": "mobile", "n": 3}),
        json!({"d": "desktop", "n": 2.0}),
    ];
    let renamed = [
        json!({"n": 3, "device": "mobile"}),
        json!({"count": 2, "x": "desktop"}),
    ];
    assert!(rows_match(&renamed, &a, true));
    let swapped = [a[1].clone(), a[0].clone()];
    assert!(!rows_match(&swapped, &a, true));
    assert!(rows_match(&swapped, &a, false));
    assert!(!rows_match(&a[..1], &a, false));
    assert!(!rows_match(
        &[json!({"d": "mobile", "n": 4})],
        &a[..1],
        true
    ));
}
