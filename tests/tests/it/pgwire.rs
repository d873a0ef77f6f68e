//! The Postgres wire protocol (`crow serve --pg-listen`) with real clients:
//! Debian's `psql` and psycopg 3 (tests/py/pg_client.py). Results equal
//! `/api/v1/sql`'s; the tenant boundary, refusals, revocation, cancel and
//! parameters hold as on the HTTP path.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{world, World};
use crate::support::python;

/// The Postgres address `crow serve` printed.
fn pg_addr(w: &World) -> (String, String) {
    let logs = w.server.logs.lock().expect("logs");
    let addr = logs
        .iter()
        .find_map(|l| l.split("Postgres wire on postgresql://").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Postgres listener in the log: {logs:?}"))
        .to_string();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host.to_string(), port.to_string())
}

fn dsn(w: &World, user: &str, password: &str) -> String {
    let (host, port) = pg_addr(w);
    format!("host={host} port={port} user={user} password={password} dbname=crow sslmode=disable")
}

/// `psql -c SQL` as `user` with `password`: (success, stdout, stderr).
fn psql(w: &World, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    let (host, port) = pg_addr(w);
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .arg(format!(
            "host={host} port={port} user={user} dbname=crow sslmode=disable"
        ))
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql (postgresql-client; scripts/test-deps.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `psql -q` with one `-c` per statement, on one connection.
fn psql_many(w: &World, user: &str, password: &str, sqls: &[&str]) -> (bool, String, String) {
    let (host, port) = pg_addr(w);
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(format!(
            "host={host} port={port} user={user} dbname=crow sslmode=disable"
        ))
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    for sql in sqls {
        cmd.args(["-c", sql]);
    }
    let out = cmd.output().expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// tests/py/pg_client.py COMMAND DSN ARGS…: its JSON output.
fn client(dsn: &str, cmd: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pg_client.py");
    let out = Command::new(python())
        .arg(script)
        .args([cmd, dsn])
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "pg_client.py {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from pg_client.py")
}

/// HTTP JSON values as psycopg's are printed: timestamps as micros.
fn normalise(v: &Value) -> Value {
    match v {
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => json!({"micros": t.timestamp_micros()}),
            Err(_) => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        _ => v.clone(),
    }
}

/// Assert no answer (rows, messages) leaks org B or a secret; the echoed
/// statements themselves are left out (some name org B on purpose).
fn assert_no_leak(w: &World, what: &str, v: &Value) {
    let mut v = v.clone();
    if let Some(results) = v.as_array_mut() {
        for r in results {
            if let Some(o) = r.as_object_mut() {
                o.remove("sql");
            }
        }
    }
    let text = v.to_string();
    for f in &w.forbidden {
        assert!(!text.contains(f.as_str()), "{what} leaks `{f}`: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_wire_matches_http_and_keeps_the_tenant_boundary() {
    let w = world(&[
        ("CROW_API_KEY_CACHE_SECONDS", "2"),
        ("CROW_API_RATE_LIMIT_BURST", "100000"),
        ("CROW_API_RATE_LIMIT_PER_SECOND", "100000"),
        ("CROW_API_QUERY_TIMEOUT_SECONDS", "30"),
        ("CROW_SERVER_PG_LISTEN", "127.0.0.1:0"),
    ])
    .await;

    psql_checks(&w);
    psycopg_matches_http(&w).await;
    hostile_sql_replayed(&w);
    prepared_statements_and_cursors(&w).await;
    hostile_sessions(&w);
    revoked_while_open(&w);
}

/// psql: sign-in, `\dt`, a query, `version()`, refusals and SQLSTATEs.
fn psql_checks(w: &World) {
    // psql: the organization as user name, the API key as password.
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "select count(*) from interactions");
    assert!(ok, "{err}");
    assert_eq!(out, w.a_rows.to_string());
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "select version()");
    assert!(ok && out.starts_with("PostgreSQL 16"), "{out} {err}");
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\dt");
    assert!(ok, "{err}");
    let listed: Vec<&str> = out.lines().collect();
    assert!(listed.contains(&"public|interactions|table|crow"), "{out}");
    assert_eq!(listed.len(), crow_schemas::ALL_TABLES.len(), "{out}");
    // `\d TABLE`: the tenant view's columns, their Postgres types and
    // nullability (psql's catalog queries through pg_catalog).
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\d interactions");
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    let def = crow_schemas::table("interactions").expect("interactions");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.split('|').next().unwrap_or(""))
        .collect();
    let want: Vec<&str> = def
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| !def.secret_columns.contains(c))
        .collect();
    assert_eq!(names, want, "{out}");
    for row in [
        "org_id|text||not null|",
        "started_at|timestamp with time zone||not null|",
        "confidence|double precision|||",
        "input_tokens|bigint||not null|",
        "product_ids|json||not null|",
        "session_date|date||not null|",
    ] {
        assert!(
            rows.contains(&row),
            "`{row}` not in \\d interactions: {out}"
        );
    }
    // `\dt+`: the table's documentation as its description.
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\dt+ interactions");
    assert!(ok && out.contains(def.doc), "{out} {err}");
    // `\d+ TABLE`: also each column's storage and documentation.
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\d+ interactions");
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    let plus: Vec<&str> = rows
        .iter()
        .map(|r| r.split('|').next().unwrap_or(""))
        .collect();
    assert_eq!(plus, want, "{out}");
    for c in def.columns.iter().filter(|c| want.contains(&c.name)) {
        let row = rows
            .iter()
            .find(|r| r.split('|').next() == Some(c.name))
            .unwrap_or_else(|| panic!("{}: {out}", c.name));
        assert!(row.ends_with(&format!("|{}", c.doc)), "{row}");
    }
    let started = def
        .columns
        .iter()
        .find(|c| c.name == "started_at")
        .expect("started_at");
    let row = format!(
        "started_at|timestamp with time zone||not null||plain|||{}",
        started.doc
    );
    assert!(rows.contains(&row.as_str()), "`{row}` not in {out}");
    let org = def
        .columns
        .iter()
        .find(|c| c.name == "org_id")
        .expect("org_id");
    let row = format!("org_id|text||not null||extended|||{}", org.doc);
    assert!(rows.contains(&row.as_str()), "`{row}` not in {out}");
    // `\dn`: the schemas as Postgres lists them (its own hidden).
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\dn");
    assert!(ok, "{err}");
    assert_eq!(out, "public|crow");
    // Secret columns are not described; unknown tables are not found.
    let (ok, out, err) = psql(w, &w.org_a, &w.key_a, "\\d api_keys");
    assert!(ok, "{err}");
    let keys = crow_schemas::table("api_keys").expect("api_keys");
    let described: Vec<&str> = out
        .lines()
        .map(|r| r.split('|').next().unwrap_or(""))
        .collect();
    assert_eq!(
        described.len(),
        keys.columns.len() - keys.secret_columns.len()
    );
    for secret in keys.secret_columns {
        assert!(!described.contains(secret), "{secret}: {out}");
    }
    let (_, out, err) = psql(w, &w.org_a, &w.key_a, "\\d no_such_table");
    assert!(
        err.contains("Did not find any relation named \"no_such_table\""),
        "{out} {err}"
    );
    let (ok, _, err) = psql(w, &w.org_a, "crow_wrong_secret", "select 1");
    assert!(!ok && err.contains("unknown API key"), "{err}");
    let (ok, _, err) = psql(w, &w.org_b, &w.key_a, "select 1");
    assert!(
        !ok && err.contains("user name must be"),
        "another org's name: {err}"
    );
    for (sql, state) in [
        ("drop table products", "42501"),
        ("insert into products (org_id) values ('x')", "42501"),
        ("select * from no_such_table", "42P01"),
    ] {
        let (ok, _, err) = psql(w, &w.org_a, &w.key_a, sql);
        assert!(
            !ok && err.contains(state),
            "`{sql}` must fail with {state}: {err}"
        );
    }
}

/// psycopg: rows and types equal to HTTP's (text and binary), parameters,
/// a streamed large result, cancel.
async fn psycopg_matches_http(w: &World) {
    // psycopg: the same rows and values as the HTTP API, text and binary.
    let d = dsn(w, &w.org_a, &w.key_a);
    let sql = "select * from interactions order by interaction_id";
    let http: Vec<Value> = w
        .post_sql(&w.key_a, json!({ "sql": sql }), None)
        .await
        .json()
        .await
        .expect("rows");
    assert_eq!(http.len(), w.a_rows);
    let want: Vec<Value> = http.iter().map(normalise).collect();
    for cmd in ["query", "binary"] {
        let got = client(&d, cmd, &[sql]);
        assert_no_leak(w, cmd, &got);
        let rows = got["rows"].as_array().expect("rows");
        assert_eq!(rows, &want, "{cmd}: pg rows differ from HTTP's");
        let oid = |c: &str| {
            let i = got["columns"]
                .as_array()
                .and_then(|cs| cs.iter().position(|x| x == c))
                .expect("column");
            got["oids"][i].as_u64().expect("oid")
        };
        // timestamptz, int8, float8, text, json (lists), date.
        assert_eq!(
            [
                oid("started_at"),
                oid("input_tokens"),
                oid("confidence"),
                oid("description"),
                oid("product_ids"),
                oid("session_date")
            ],
            [1184, 20, 701, 25, 114, 1082],
            "{cmd}"
        );
    }

    // Parameters ($1, $2) of the extended protocol.
    let got = client(
        &d,
        "query",
        &[
            "select interaction_id, input_tokens from interactions \
             where input_tokens >= %s and channel = %s order by input_tokens",
            "[2, \"web\"]",
        ],
    );
    let tokens: Vec<i64> = got["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["input_tokens"].as_i64())
        .collect();
    assert_eq!(tokens, vec![2, 3]);

    // A large result streams through.
    let got = client(&d, "stream", &["select value from range(0, 300000)"]);
    assert_eq!(got["rows"], 300_000);
    assert_eq!(got["sum"], 300_000u64 * 299_999 / 2);

    // Cancel a long query; the connection stays usable.
    let got = client(
        &d,
        "cancel",
        &["select sum(a.value * b.value) as s from range(0, 200000) a cross join range(0, 200000) b"],
    );
    assert_eq!(got["sqlstate"], "57014", "{got}");
    assert!(got["seconds"].as_f64().expect("seconds") < 10.0, "{got}");
    assert_eq!(got["after"], 42);
}

/// The HTTP suite's hostile SQL through psycopg.
fn hostile_sql_replayed(w: &World) {
    let d = dsn(w, &w.org_a, &w.key_a);
    // The HTTP suite's hostile reads: only org A's rows.
    let reads = [
        "select a.org_id, b.message_id from raw_web_events a cross join raw_web_events b".to_string(),
        "select * from products union all select * from products".to_string(),
        "with x as (select * from sessions), y as (select * from x) select * from y".to_string(),
        "select * from datafusion.public.raw_web_events".to_string(),
        format!("select * from raw_web_events where org_id = '{}' or 1 = 1", w.org_b),
        "select * from failed_events where org_id is null".to_string(),
        "select * from organizations".to_string(),
        "select * from api_keys".to_string(),
        "select table_name from information_schema.tables".to_string(),
        // Grafana's $__timeFilter(started_at).
        "select count(*) from interactions where started_at BETWEEN '2026-11-01T00:00:00Z' AND '2026-12-01T00:00:00Z'".to_string(),
        // psql's \dt.
        "SELECT n.nspname as \"Schema\", c.relname as \"Name\", CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\", pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' AND n.nspname <> 'information_schema' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2".to_string(),
    ];
    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
    let got = client(&d, "refused", &reads);
    assert_no_leak(w, "hostile reads", &got);
    for r in got.as_array().expect("results") {
        assert!(r["sqlstate"].is_null(), "a read failed: {r}");
    }
    // Writes, files and statements are refused, with their SQLSTATE.
    let lake_dir = w.b.uri.clone();
    let stolen = Path::new(&lake_dir).join("stolen.csv");
    let writes = [
        (
            format!(
                "create external table x stored as parquet location '{lake_dir}/raw_web_events'"
            ),
            "42501",
        ),
        ("create table t as select 1".to_string(), "42501"),
        ("drop table products".to_string(), "42501"),
        (
            format!(
                "copy (select * from raw_web_events) to '{}'",
                stolen.display()
            ),
            "42501",
        ),
        ("delete from products".to_string(), "42501"),
        ("explain select * from raw_web_events".to_string(), "42501"),
        (
            format!("select * from read_parquet('{lake_dir}/x.parquet')"),
            "42",
        ),
        (
            format!("select * from '{lake_dir}/raw_web_events'"),
            "42P01",
        ),
    ];
    let sqls: Vec<&str> = writes.iter().map(|(s, _)| s.as_str()).collect();
    let got = client(&d, "refused", &sqls);
    assert_no_leak(w, "refusals", &got);
    for ((sql, state), r) in writes.iter().zip(got.as_array().expect("results")) {
        let s = r["sqlstate"]
            .as_str()
            .unwrap_or_else(|| panic!("`{sql}` ran: {r}"));
        assert!(s.starts_with(state), "`{sql}`: {s}, want {state}: {r}");
    }
    assert!(!stolen.exists(), "COPY must not write");
    let got = client(&d, "query", &["select count(*) as n from products"]);
    assert_eq!(got["rows"], json!([{ "n": w.a_rows }]));
}

fn revoked_while_open(w: &World) {
    // A key revoked while its connection is open is refused at its next
    // statement within the key cache's TTL (2 s here). The key id works as
    // the user name too.
    let kc = w.b.crow_json(&["keys", "create", "--org", &w.org_a]);
    let id = kc["id"].as_str().expect("id");
    let secret = kc["secret"].as_str().expect("secret");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pg_client.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(["revoke", &dsn(w, id, secret)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    w.b.crow_json(&["keys", "revoke", id]);
    let revoked = Instant::now();
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin).expect("go");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("result");
    let _ = child.wait();
    let got: Value = serde_json::from_str(rest.trim()).expect("JSON");
    assert_eq!(got["sqlstate"], "28000", "{got}");
    assert!(
        got["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{got}"
    );
    assert!(revoked.elapsed() < Duration::from_secs(2 + 5), "{got}");
    let (ok, _, err) = psql(w, id, secret, "select 1");
    assert!(!ok && err.contains("revoked"), "{err}");
}

/// With `server.pg_tls_cert`/`_key`, clients connect over TLS (and verify
/// the certificate); a bad path is a startup error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_wire_over_tls() {
    let certs = tempfile::tempdir().expect("dir");
    let folder = certs.path().display().to_string();
    client("-", "selfsigned", &[&folder]);
    let cert = certs.path().join("cert.pem").display().to_string();
    let key = certs.path().join("key.pem").display().to_string();
    let w = world(&[
        ("CROW_SERVER_PG_LISTEN", "127.0.0.1:0"),
        ("CROW_SERVER_PG_TLS_CERT", &cert),
        ("CROW_SERVER_PG_TLS_KEY", &key),
    ])
    .await;
    let (host, port) = pg_addr(&w);
    let d = format!(
        "host={host} port={port} user={} password={} dbname=crow sslmode=verify-full sslrootcert={cert}",
        w.org_a, w.key_a
    );
    let got = client(&d, "tls", &[]);
    assert_eq!(got, json!({"ssl_in_use": true, "answer": 42}));

    // Bad settings fail at startup, naming the key.
    for (env, named) in [
        (
            vec![
                ("CROW_SERVER_PG_TLS_CERT", "/nonexistent/cert.pem"),
                ("CROW_SERVER_PG_TLS_KEY", key.as_str()),
            ],
            "server.pg_tls_cert",
        ),
        (
            vec![("CROW_SERVER_PG_TLS_CERT", cert.as_str())],
            "server.pg_tls_key",
        ),
        (
            vec![("CROW_SERVER_PG_LISTEN", "nowhere")],
            "server.pg_listen",
        ),
    ] {
        crate::support::serve_refuses(&w.b, ("CROW_SERVER_PG_LISTEN", "127.0.0.1:0"), &env, named);
    }
}

/// SQL-level `PREPARE`/`EXECUTE`/`DEALLOCATE` (psql) and cursors (psql's
/// `DECLARE`/`FETCH`/`CLOSE`, psycopg's named cursors): the same rows as
/// the HTTP API.
async fn prepared_statements_and_cursors(w: &World) {
    let web: Vec<Value> = w
        .post_sql(
            &w.key_a,
            json!({ "sql": "select count(*) as n from interactions where channel = 'web'" }),
            None,
        )
        .await
        .json()
        .await
        .expect("rows");
    let web = web[0]["n"].as_i64().expect("n");
    assert!(web > 0);
    let (ok, out, err) = psql_many(
        w,
        &w.org_a,
        &w.key_a,
        &[
            "PREPARE by_channel (text) AS select count(*) from interactions where channel = $1",
            "EXECUTE by_channel('web')",
            "EXECUTE by_channel ( 'no such channel' );",
            "DEALLOCATE by_channel",
            "PREPARE by_channel AS select $1::bigint + 1",
            "EXECUTE by_channel(41)",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, format!("{web}\n0\n42"));
    let (ok, _, err) = psql_many(
        w,
        &w.org_a,
        &w.key_a,
        &["PREPARE p AS select 1", "DEALLOCATE p", "EXECUTE p"],
    );
    assert!(!ok && err.contains("\"p\" does not exist"), "{err}");
    // psql: a cursor in a transaction, fetched in pieces.
    let (ok, out, err) = psql_many(
        w,
        &w.org_a,
        &w.key_a,
        &[
            "BEGIN",
            "DECLARE c CURSOR FOR select value from range(0, 10) order by value",
            "FETCH 3 FROM c",
            "MOVE FORWARD 2 IN c",
            "FETCH NEXT FROM c",
            "FETCH ALL FROM c",
            "FETCH 5 FROM c",
            "CLOSE c",
            "COMMIT",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "0\n1\n2\n5\n6\n7\n8\n9");

    // psycopg's named cursor: DECLARE (extended protocol, a described
    // portal), FETCH FORWARD n; text and binary; parameters.
    let d = dsn(w, &w.org_a, &w.key_a);
    let sql = "select * from interactions order by interaction_id";
    let http: Vec<Value> = w
        .post_sql(&w.key_a, json!({ "sql": sql }), None)
        .await
        .json()
        .await
        .expect("rows");
    let want: Vec<Value> = http.iter().map(normalise).collect();
    for mode in ["text", "binary"] {
        let got = client(&d, "cursor", &[sql, "2", mode]);
        assert_no_leak(w, "cursor", &got);
        assert_eq!(got["rows"].as_array().expect("rows"), &want, "{mode}");
        // Two rows a FETCH, and one more that comes back empty.
        assert_eq!(got["fetches"], want.len().div_ceil(2) + 1, "{mode}");
    }
    let got = client(
        &d,
        "cursor",
        &[
            "select input_tokens from interactions where input_tokens >= %s and channel = %s order by 1",
            "1",
            "text",
            "[2, \"web\"]",
        ],
    );
    assert_eq!(
        got["rows"],
        json!([{ "input_tokens": 2 }, { "input_tokens": 3 }])
    );
    let got = client(
        &d,
        "cursor",
        &["select value from range(0, 25000)", "1000", "binary"],
    );
    let values: Vec<i64> = got["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["value"].as_i64())
        .collect();
    assert_eq!(values, (0..25_000).collect::<Vec<i64>>());
    assert_eq!(got["fetches"], 26);
}

/// The hostile cases through prepared statements and cursors: another
/// organization's rows never come back, writes and files are refused.
fn hostile_sessions(w: &World) {
    let d = dsn(w, &w.org_a, &w.key_a);
    let org_b = format!("EXECUTE by_org('{}')", w.org_b);
    let org_a = format!("EXECUTE by_org('{}')", w.org_a);
    let lake_dir = w.b.uri.clone();
    let stolen = Path::new(&lake_dir).join("stolen2.csv");
    let copy = format!(
        "DECLARE w CURSOR FOR copy (select * from raw_web_events) to '{}'",
        stolen.display()
    );
    let steps = [
        ("PREPARE by_org AS select org_id from raw_web_events where org_id = $1", None),
        (org_b.as_str(), None),
        ("EXECUTE by_org('x'' or ''1''=''1')", None),
        (org_a.as_str(), None),
        ("PREPARE w AS delete from products", Some("42501")),
        ("PREPARE w AS drop table products", Some("42501")),
        ("PREPARE w AS select * from api_keys_secret", Some("42P01")),
        (
            "DECLARE c CURSOR WITH HOLD FOR select a.org_id from raw_web_events a cross join raw_web_events b",
            None,
        ),
        ("FETCH ALL FROM c", None),
        ("CLOSE c", None),
        ("FETCH 1 FROM c", Some("34000")),
        ("DECLARE w CURSOR FOR delete from products", Some("42501")),
        ("DECLARE w CURSOR FOR create table t as select 1", Some("42501")),
        (copy.as_str(), Some("42501")),
        ("DECLARE w CURSOR FOR select * from organizations", None),
        ("FETCH ALL IN w", None),
        ("FETCH BACKWARD 1 FROM w", Some("0A000")),
        ("EXECUTE never_prepared", Some("26000")),
        ("EXECUTE by_org(now())", Some("0A000")),
    ];
    let sqls: Vec<&str> = steps.iter().map(|(s, _)| *s).collect();
    let got = client(&d, "steps", &sqls);
    assert_no_leak(w, "sessions", &got);
    let got = got.as_array().expect("results");
    for ((sql, state), r) in steps.iter().zip(got) {
        match state {
            None => assert!(r["sqlstate"].is_null(), "`{sql}` failed: {r}"),
            Some(s) => assert_eq!(r["sqlstate"], *s, "`{sql}`: {r}"),
        }
    }
    assert_eq!(got[1]["rows"], json!([]), "org B's rows by parameter");
    assert_eq!(got[2]["rows"], json!([]), "a parameter is a value, not SQL");
    let own = got[3]["rows"].as_array().expect("rows");
    assert!(!own.is_empty());
    let fetched = got[8]["rows"].as_array().expect("rows");
    assert!(!fetched.is_empty());
    for r in own.iter().chain(fetched) {
        assert_eq!(r[0], json!(w.org_a), "{r}");
    }
    // The tenant view of organizations: only org A's row.
    let orgs = got[15]["rows"].as_array().expect("rows");
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    assert!(!stolen.exists(), "COPY must not write");
}

/// SQLAlchemy's Postgres type of a column `information_schema.columns`
/// reports as the Arrow type `t`.
fn sqlalchemy_type(t: &str) -> &'static str {
    match t {
        "Boolean" => "BOOLEAN",
        "Int8" | "Int16" => "SMALLINT",
        "Int32" => "INTEGER",
        "Int64" => "BIGINT",
        "Float32" => "REAL",
        "Float64" => "DOUBLE PRECISION",
        "Utf8" | "LargeUtf8" | "Utf8View" => "TEXT",
        // Partition columns, read dictionary-encoded: text on the wire.
        t if t.starts_with("Dictionary(") && t.ends_with(", Utf8)") => "TEXT",
        "Date32" => "DATE",
        t if t.starts_with("Timestamp(") && t.contains("UTC") => "TIMESTAMP WITH TIME ZONE",
        t if t.starts_with("Timestamp(") => "TIMESTAMP WITHOUT TIME ZONE",
        t if t.starts_with("List(") || t.starts_with("Struct(") || t.starts_with("Map(") => "JSON",
        _ => "unmapped",
    }
}

/// SQLAlchemy's PostgreSQL dialect reflects every table of the tenant
/// session as Superset-style tools do — the inspector's per-table calls,
/// `MetaData.reflect()`, an autoloaded `Table` queried through — with the
/// names and types `information_schema.columns` reports over HTTP, the
/// tables' and columns' documentation as comments, no keys or indexes,
/// no secret column and nothing of another organization. Its schema
/// listing is Postgres' (`pg_catalog` hidden).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_wire_reflects_through_sqlalchemy() {
    let w = &world(&[
        ("CROW_API_RATE_LIMIT_BURST", "100000"),
        ("CROW_API_RATE_LIMIT_PER_SECOND", "100000"),
        ("CROW_SERVER_PG_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    let d = dsn(w, &w.org_a, &w.key_a);
    let got = client(&d, "reflect", &[]);
    assert_no_leak(w, "reflection", &got);
    assert_eq!(got["default_schema"], "public");
    let mut want: Vec<&str> = crow_schemas::ALL_TABLES.iter().map(|t| t.name).collect();
    want.sort_unstable();
    let mut tables: Vec<&str> = got["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tables.sort_unstable();
    assert_eq!(tables, want);
    assert_eq!(got["views"], json!([]));

    // Each table's columns: names and types as information_schema's.
    let http: Vec<Value> = w
        .post_sql(
            &w.key_a,
            json!({ "sql": "select table_name, column_name, data_type from information_schema.columns where table_schema = 'public' order by table_name, ordinal_position" }),
            None,
        )
        .await
        .json()
        .await
        .expect("rows");
    let unmapped: Vec<&Value> = http
        .iter()
        .filter(|r| sqlalchemy_type(r["data_type"].as_str().unwrap_or("")) == "unmapped")
        .collect();
    assert!(unmapped.is_empty(), "{unmapped:?}");
    let mut expected: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for r in &http {
        let table = r["table_name"].as_str().expect("table").to_string();
        let ty = sqlalchemy_type(r["data_type"].as_str().expect("type"));
        expected
            .entry(table)
            .or_default()
            .push(json!([r["column_name"], ty]));
    }
    assert_eq!(expected.len(), want.len(), "{http:?}");
    let detail = &got["tables_detail"];
    for (table, columns) in &expected {
        let t = &detail[table.as_str()];
        let reflected: Vec<Value> = t["columns"]
            .as_array()
            .unwrap_or_else(|| panic!("{table}: {t}"))
            .iter()
            .map(|c| json!([c["name"], c["type"]]))
            .collect();
        assert_eq!(&reflected, columns, "{table}");
        assert_eq!(&got["metadata"][table.as_str()], &json!(columns), "{table}");
        // CROW has no keys, indexes, constraints or defaults.
        assert_eq!(t["pk"]["constrained_columns"], json!([]), "{table}: {t}");
        assert!(t["pk"]["name"].is_null(), "{table}: {t}");
        for none in ["fks", "indexes", "unique", "checks"] {
            assert_eq!(t[none], json!([]), "{table} {none}");
        }
        let def = crow_schemas::table(table).expect("a CROW table");
        let doc = (!def.doc.is_empty()).then_some(def.doc);
        assert_eq!(t["comment"], json!({ "text": doc }), "{table}");
        let docs: Vec<Value> = def
            .columns
            .iter()
            .filter(|c| !def.secret_columns.contains(&c.name))
            .map(|c| json!((!c.doc.is_empty()).then_some(c.doc)))
            .collect();
        let comments: Vec<Value> = t["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["comment"].clone())
            .collect();
        assert_eq!(comments, docs, "{table}");
        for c in t["columns"].as_array().expect("columns") {
            assert!(c["default"].is_null(), "{table}: {c}");
        }
    }
    let started = detail["interactions"]["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "started_at")
        .cloned()
        .expect("started_at");
    assert_eq!(started["type"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(started["nullable"], false);
    // The secret column is not reflected.
    let keys: Vec<&str> = detail["api_keys"]["columns"]
        .as_array()
        .expect("api_keys")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(!keys.is_empty() && !keys.contains(&"key_hash"), "{keys:?}");
    assert!(!got.to_string().contains("key_hash"));
    // The autoloaded table, and a query through it: org A's rows only.
    assert_eq!(got["autoload"], json!(expected["interactions"]));
    assert_eq!(got["count"], w.a_rows);
    assert_eq!(got["orgs"], json!([w.org_a]));
    assert_eq!(got["has_table"], true);
    assert_eq!(got["has_no_table"], false);
    // Schemas as Postgres lists them to SQLAlchemy: `pg_catalog` hidden.
    assert_eq!(got["schemas"], json!(["information_schema", "public"]));
}
