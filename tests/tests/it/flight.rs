//! Arrow Flight SQL (`crow serve --flight-listen`) through the ADBC Flight
//! SQL driver and pyarrow.flight (tests/py/flight_client.py): the same
//! answers as `POST /api/v1/sql`, prepared statements, metadata, the
//! handshake, and the query API's isolation and refusals.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::support::{land_web, python, Backend, Server};

/// Marks org B's rows: it must never reach org A's key.
const B_MARK: &str = "BETAMARK";

/// Run tests/py/flight_client.py: its JSON report (panics if it failed).
fn client(mode: &str, cfg: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/flight_client.py");
    let out = Command::new(python())
        .arg(script)
        .args([mode, &cfg.to_string()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flight_client.py {mode} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("flight_client.py printed no JSON ({e}): {stdout}"))
}

/// The Flight SQL address `crow serve` printed.
fn flight_addr(server: &Server) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = server.logs.lock().expect("logs").clone();
        if let Some(a) = logs
            .iter()
            .find_map(|l| l.split("Arrow Flight SQL on ").nth(1))
        {
            return a.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Flight SQL address in {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(tag: &str) -> Vec<Value> {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .single()
        .expect("time");
    (0..20)
        .map(|i| {
            json!({
                "type": "track",
                "event": format!("{tag} event"),
                "messageId": format!("{tag}-m{i:02}"),
                "userId": format!("{tag}-user-{i}"),
                "timestamp": (at + chrono::Duration::minutes(i)).to_rfc3339(),
                "properties": {"note": format!("{tag}-note-{i}"), "n": i},
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_like_the_http_api_and_keeps_tenants_apart() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = |name: &str| {
        b.crow_json(&["orgs", "create", "--name", name])["org_id"]
            .as_str()
            .expect("org")
            .to_string()
    };
    let (org_a, org_b) = (org("Alpha Audio"), org("Beta Bikes"));
    let lake = b.lake().await;
    let at = Utc::now();
    land_web(&lake, &org_a, &events("alpha"), at).await;
    land_web(&lake, &org_b, &events(B_MARK), at).await;
    let key = |org: &str| b.crow_json(&["keys", "create", "--org", org, "--scope", "read"]);
    let (ka, kb, kr) = (key(&org_a), key(&org_b), key(&org_a));
    let secret = |k: &Value| k["secret"].as_str().expect("secret").to_string();
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_SERVER_FLIGHT_LISTEN", "127.0.0.1:0"),
            ("CROW_API_KEY_CACHE_SECONDS", "2"),
            ("CROW_API_RATE_LIMIT_BURST", "100000"),
            ("CROW_API_RATE_LIMIT_PER_SECOND", "100000"),
        ],
    );
    let flight = format!(
        "grpc://{}",
        flight_addr(&server).trim_start_matches("grpc://")
    );
    let lake_dir = b.uri.clone();
    let tables: Vec<&str> = crow_schemas::ALL_TABLES.iter().map(|t| t.name).collect();
    let hostile = [
        "select a.org_id, b.message_id from raw_web_events a cross join raw_web_events b"
            .to_string(),
        "select org_id from raw_web_events union select org_id from sessions union select org_id from organizations".to_string(),
        "with x as (select * from raw_web_events), y as (select * from x) select * from y"
            .to_string(),
        "select * from datafusion.public.raw_web_events".to_string(),
        format!("select * from raw_web_events where org_id = '{org_b}' or 1 = 1"),
        "select * from organizations".to_string(),
        "select * from api_keys".to_string(),
        "select table_name, column_name from information_schema.columns".to_string(),
    ];
    let copy_target = Path::new(&lake_dir).join("stolen.csv");
    let refused = [
        format!("create external table x stored as parquet location '{lake_dir}/raw_web_events'"),
        "create table t as select 1".to_string(),
        "drop table products".to_string(),
        format!(
            "copy (select * from raw_web_events) to '{}'",
            copy_target.display()
        ),
        "insert into products (org_id) values ('x')".to_string(),
        "delete from products".to_string(),
        "set datafusion.execution.batch_size = 1".to_string(),
        "explain select * from raw_web_events".to_string(),
        format!("select * from '{lake_dir}/raw_web_events'"),
        format!("select * from read_parquet('{lake_dir}/raw_web_events')"),
        "select nonsense from".to_string(),
    ];
    let cfg = json!({
        "flight": flight,
        "http": server.url(""),
        "key_a_id": ka["id"],
        "key_a": secret(&ka),
        "key_b": secret(&kb),
        "b_marks": [B_MARK, org_b],
        "b_user": format!("{B_MARK}-user-1"),
        "tables": tables,
        "hostile": hostile,
        "refused": refused,
    });
    let report = client("main", &cfg);

    assert_eq!(report["rows"], 20, "{report}");
    assert_eq!(report["prepared_rows"], 20, "{report}");
    assert_eq!(report["polars_count"], 20, "{report}");
    assert_eq!(report["vendor"], "CROW");
    assert_eq!(report["hostile"], hostile.len());
    // Bound parameters: the literal query's rows; a value is never SQL and
    // never reaches org B; writes and multi-row binds are refused.
    assert_eq!(report["bound_rows"], 2, "{report}");
    assert_eq!(report["bound_counts"], json!([1, 0, 0]), "{report}");
    let e = report["bound_write"].as_str().unwrap_or("");
    assert!(e.contains("not allowed"), "{e}");
    assert!(report["bound_two_rows"].is_string(), "{report}");
    let why = |q: &str| report["refused"][q].as_str().unwrap_or("").to_string();
    for q in &refused[..8] {
        let e = why(q);
        assert!(
            e.contains("Unauthorized")
                || e.contains("PermissionDenied")
                || e.contains("UNAUTHORIZED"),
            "`{q}` must be refused as PermissionDenied: {e}"
        );
        assert!(
            e.contains("not allowed") || e.contains("not available"),
            "`{q}`: {e}"
        );
    }
    for q in &refused[8..] {
        let e = why(q);
        assert!(
            e.contains("InvalidArgument") || e.contains("INVALID_ARGUMENT"),
            "`{q}`: {e}"
        );
    }
    assert!(why(&refused[8]).contains("there is no table"), "{report}");
    assert!(!copy_target.exists(), "COPY must not write");
    let foreign = report["foreign_ticket"].as_str().expect("foreign ticket");
    assert!(foreign.contains("another organization"), "{foreign}");
    let no_key = report["no_key"].as_str().expect("no key");
    assert!(
        no_key.contains("Unauthenticated") || no_key.contains("UNAUTHENTICATED"),
        "{no_key}"
    );
    // Every call is authenticated before anything is decoded: without a
    // key (or with an unknown one) unknown commands, garbage tickets and
    // unimplemented methods all answer Unauthenticated, and tell nothing.
    for who in ["probes_no_key", "probes_bad_key"] {
        let probes = report[who].as_object().expect("probes");
        assert_eq!(probes.len(), 11, "{report}");
        for (call, e) in probes {
            let e = e.as_str().unwrap_or("");
            assert!(
                e.contains("Flight returned unauthenticated error")
                    && !e.contains("request is invalid")
                    && !e.contains("implemented")
                    && !e.contains("DecodeError"),
                "{who} {call} must be Unauthenticated and say nothing else: {e}"
            );
        }
    }
    // With a key, each keeps its own answer.
    for (call, want) in [
        ("info_unknown_command", "unimplemented error"),
        ("info_garbage", "invalid argument error"),
        ("get_garbage_ticket", "invalid argument error"),
        ("get_unknown_command", "unimplemented error"),
        ("action_unknown", "invalid argument error"),
        ("put_update", "read-only"),
        ("put_unknown_command", "unimplemented error"),
        ("list_flights", "unimplemented error"),
        ("list_actions", "ok"),
        ("get_schema", "unimplemented error"),
        ("exchange", "unimplemented error"),
    ] {
        let got = report["probes_key"][call].as_str().unwrap_or("");
        assert!(got.contains(want), "{call} with a key: {got}, want {want}");
    }
    assert!(
        report["wrong_user"]
            .as_str()
            .unwrap_or("")
            .contains("not this API key's id"),
        "{report}"
    );

    // Requests are counted in the API's metrics, by call.
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for call in [
        "CreatePreparedStatement",
        "ClosePreparedStatement",
        "Handshake",
    ] {
        assert!(
            metrics.contains(&format!("route=\"flight_sql:{call}\",status=\"200\"")),
            "{call} not counted: {metrics}"
        );
    }
    // Calls refused before the service are counted too.
    for call in ["ListFlights", "DoPut", "DoExchange"] {
        assert!(
            metrics.contains(&format!("route=\"flight_sql:{call}\",status=\"401\"")),
            "{call} refusal not counted: {metrics}"
        );
    }

    // Time travel: `x-crow-as-of` answers as /api/v1/sql's `as_of`.
    let before_more = Utc::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    land_web(&lake, &org_a, &events("later"), Utc::now()).await;
    let travel = client(
        "travel",
        &json!({"flight": flight, "http": server.url(""), "key_a": secret(&ka),
                "as_of": before_more.to_rfc3339()}),
    );
    assert_eq!(travel["latest"], 40, "{travel}");
    assert_eq!(travel["as_of"], 20, "{travel}");
    assert_eq!(travel["as_of_prepared"], 20, "{travel}");
    let bad = travel["bad_as_of"].as_str().unwrap_or("");
    assert!(bad.contains("as_of"), "{bad}");

    // An unknown key, and a revoked one (within api.key_cache_seconds).
    let unknown = client(
        "refused",
        &json!({"flight": flight, "key_id": "key_nobody", "key": "ck_not_a_key"}),
    );
    assert!(
        unknown["adbc"]
            .as_str()
            .unwrap_or("")
            .contains("unknown API key"),
        "{unknown}"
    );
    let revoked_cfg = json!({"flight": flight, "key_id": kr["id"], "key": secret(&kr)});
    b.crow_ok(&["keys", "revoke", kr["id"].as_str().expect("id")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoked = client("refused", &revoked_cfg);
    for (how, e) in revoked.as_object().expect("report") {
        let e = e.as_str().unwrap_or("");
        assert!(e.contains("revoked"), "{how}: {e}");
    }
}

#[test]
fn flight_listen_must_be_an_address() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let out = b.crow(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--flight-listen",
        "nowhere",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.flight_listen") && err.contains("nowhere"),
        "{err}"
    );
}

/// With `server.flight_tls_cert`/`_key` the listener speaks TLS only:
/// ADBC and pyarrow verify the certificate; a client that does not trust
/// it, or one without TLS, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_over_tls() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Alpha Audio"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let key = b.crow_json(&["keys", "create", "--org", &org, "--scope", "read"]);
    let certs = tempfile::tempdir().expect("dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pg_client.py");
    let made = Command::new(python())
        .arg(script)
        .args(["selfsigned", "-", &certs.path().display().to_string()])
        .output()
        .expect("python");
    assert!(made.status.success(), "{made:?}");
    let cert = certs.path().join("cert.pem").display().to_string();
    let pem_key = certs.path().join("key.pem").display().to_string();
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_SERVER_FLIGHT_LISTEN", "127.0.0.1:0"),
            ("CROW_SERVER_FLIGHT_TLS_CERT", &cert),
            ("CROW_SERVER_FLIGHT_TLS_KEY", &pem_key),
        ],
    );
    let addr = flight_addr(&server);
    assert!(addr.starts_with("grpc+tls://"), "{addr}");
    let got = client(
        "tls",
        &json!({"flight": addr, "key_a": key["secret"], "cert": cert}),
    );
    assert_eq!(got["answer"], 42, "{got}");
    assert_eq!(got["pyarrow"], 1, "{got}");
    for how in ["untrusted", "plaintext"] {
        assert!(got[how].is_string(), "{how} must fail: {got}");
    }
    // Half a TLS setting, or a bad file, is a startup error naming it.
    for (env, named) in [
        (
            vec![("CROW_SERVER_FLIGHT_TLS_CERT", cert.as_str())],
            "server.flight_tls_key",
        ),
        (
            vec![
                ("CROW_SERVER_FLIGHT_TLS_CERT", "/nonexistent/cert.pem"),
                ("CROW_SERVER_FLIGHT_TLS_KEY", pem_key.as_str()),
            ],
            "server.flight_tls_cert",
        ),
    ] {
        crate::support::serve_refuses(
            &b,
            ("CROW_SERVER_FLIGHT_LISTEN", "127.0.0.1:0"),
            &env,
            named,
        );
    }
}
