//! The `crow` CLI, run as a user would, on both backends.

use crate::support::{both_backends, Backend};

fn init_then_sql(b: Backend) {
    let created = b.crow_json(&["init"]);
    let rows = created.as_array().expect("array");
    assert_eq!(rows.len(), crow_schemas::ALL_TABLES.len());
    assert!(
        rows.iter().all(|r| r["status"] == "created"),
        "{}: {created}",
        b.name
    );
    let again = b.crow_json(&["init"]);
    assert!(
        again
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["status"] == "exists"),
        "{}: {again}",
        b.name
    );

    let n = b.crow_json(&["sql", "select count(*) as n from raw_web_events"]);
    assert_eq!(n, serde_json::json!([{"n": 0}]), "{}", b.name);
    let csv = b.crow_ok(&[
        "sql",
        "select count(*) as n from raw_web_events",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.trim(), "n\n0");

    let org = b.crow_json(&[
        "orgs",
        "create",
        "--name",
        "Acme Audio",
        "--domain",
        "acme.example",
    ]);
    assert!(
        org.is_object(),
        "a created object prints as one JSON object: {org}"
    );
    let org_id = org["org_id"].as_str().expect("org_id");
    let key = org["write_key"].as_str().expect("write_key");
    assert!(org_id.starts_with("org_") && key.starts_with("wk_"));
    let list = b.crow_json(&["orgs", "list"]);
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["org_id"], org_id);
    assert!(
        list[0].get("write_key").is_none(),
        "the write key is never shown again"
    );
    // Only a hash is stored.
    let stored = b.crow_ok(&["sql", "select * from organizations", "--format", "json"]);
    assert!(!stored.contains(key), "the write key must not be stored");

    let tables = b.crow_json(&["tables"]);
    let orgs = tables
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["table"] == "organizations")
        .expect("organizations listed")
        .clone();
    assert_eq!(orgs["rows"], 1);
    assert_eq!(orgs["version"], 1);
    assert!(
        orgs["files"].as_u64() == Some(1) && orgs["bytes"].as_u64() > Some(0),
        "{orgs}"
    );
}

both_backends!(sync init_then_sql => init_then_sql);

#[test]
fn errors_are_one_clear_line() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    for (args, needle) in [
        (vec!["sql", "select * from no_such_table"], "no_such_table"),
        (vec!["sql", "drop table raw_web_events"], "not supported"),
        (
            vec!["sql", "insert into organizations (org_id) values ('x')"],
            "not supported",
        ),
        (vec!["history", "nope"], "unknown table `nope`"),
        (vec!["orgs", "create", "--name", "  "], "non-empty"),
    ] {
        let out = b.crow(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line on stderr, got {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        assert!(lines[0].to_lowercase().contains(needle), "{args:?}: {err}");
    }
    // The tables are untouched by refused statements.
    assert_eq!(
        b.crow_json(&["sql", "select count(*) as n from organizations"]),
        serde_json::json!([{"n": 0}])
    );
}

#[test]
fn bad_config_names_the_key() {
    let b = Backend::local();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("crow.toml");
    std::fs::write(&cfg, "[ai]\nconcurrency = \"lots\"\n").expect("write");
    let out = b.crow(&["--config", cfg.to_str().expect("path"), "tables"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ai.concurrency"), "{err}");
    std::fs::write(&cfg, "[lake]\nuri = \"./x\"\ncomit_retries = 3\n").expect("write");
    let out = b.crow(&["--config", cfg.to_str().expect("path"), "tables"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("comit_retries"),
        "{err}"
    );
    let mut cmd = std::process::Command::new(crate::support::crow_bin());
    let out = cmd
        .args(["--lake", &b.uri, "tables"])
        .env("CROW_AI_PROVIDER", "skynet")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ai.provider"),
        "{err}"
    );
}

#[test]
fn demo_lands_a_week_exactly_once_and_maintenance_works() {
    let b = Backend::local();
    // One clock for both runs, so a test crossing midnight UTC replays the
    // same week (and the second run really is "the same demo").
    let clock = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let demo = [
        "demo",
        "--visitors",
        "120",
        "--days",
        "7",
        "--now",
        clock.as_str(),
    ];
    let out = b.crow_json(&demo);
    let days = out.as_array().expect("per-day rows");
    assert_eq!(days.len(), 7, "a week of activity: {out}");
    let events: i64 = days
        .iter()
        .map(|d| d["events"].as_i64().expect("events"))
        .sum();
    let orders: i64 = days
        .iter()
        .map(|d| d["orders"].as_i64().expect("orders"))
        .sum();
    assert!(events > 500 && orders > 0, "{out}");
    // The main job ran: every day has sessions, each with its interaction.
    assert!(
        days.iter()
            .all(|d| d["sessions"].as_i64() > Some(0) && d["interactions"] == d["sessions"]),
        "{out}"
    );
    let q = "select count(*) as n, count(distinct message_id) as d from raw_web_events";
    let first = b.crow_json(&["sql", q]);
    assert_eq!(first[0]["n"], events);
    assert_eq!(first[0]["n"], first[0]["d"]);
    // The generator's own numbers, not the lake's: the same options as the
    // demo's (seed 7, the week before the clock, no incidents under 21
    // days) give exactly the events the lake holds, by id, and its orders.
    let today = chrono::DateTime::parse_from_rfc3339(&clock)
        .expect("clock")
        .date_naive();
    let generated = crow_ingest::generate::events(&crow_ingest::generate::GenerateOptions {
        visitors: 120,
        first_day: today - chrono::Duration::days(7),
        days: 7,
        seed: 7,
        incidents: Vec::new(),
    });
    let generated_ids: std::collections::BTreeSet<String> = generated
        .iter()
        .map(|e| e["messageId"].as_str().expect("messageId").to_string())
        .collect();
    let lake_ids: std::collections::BTreeSet<String> = b
        .crow_json(&["sql", "select message_id from raw_web_events"])
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["message_id"].as_str().expect("message_id").to_string())
        .collect();
    assert_eq!(generated.len(), generated_ids.len());
    assert_eq!(events, generated.len() as i64, "the demo's daily events");
    assert!(
        lake_ids == generated_ids,
        "the lake holds exactly the generated events"
    );
    let generated_orders = generated
        .iter()
        .filter(|e| e["event"] == "Order Completed")
        .count();
    assert_eq!(orders, generated_orders as i64, "the demo's daily orders");
    // Again: the same demo lands exactly once.
    let shown = b.crow_ok(&demo);
    assert_eq!(b.crow_json(&["sql", q]), first);
    // It creates the brand's owner and says how to sign in.
    assert!(
        shown.contains("Sign in as the demo brand's owner")
            && shown.contains("\"email\": \"owner@northwind-audio.example\""),
        "{shown}"
    );
    let owner = b.crow_json(&["users", "list"]);
    assert_eq!(owner[0]["role"], "owner", "{owner}");
    assert_eq!(owner[0]["status"], "active", "{owner}");
    // It prints the invoice of every month its week touched.
    for back in [7, 1] {
        let month = (today - chrono::Duration::days(back))
            .format("%Y-%m")
            .to_string();
        assert!(
            shown.contains(&format!(
                "The invoice of {month} (crow billing report --month {month})"
            )),
            "{shown}"
        );
    }
    let products = b.crow_json(&["sql", "select count(*) as n from products"]);
    assert_eq!(products[0]["n"], crow_ingest::generate::catalog().len());
    let funnel = b.crow_json(&[
        "sql",
        "select sum(case when event = 'Product Viewed' then 1 else 0 end) as views, \
         sum(case when event = 'Order Completed' then 1 else 0 end) as orders, \
         count(distinct device_type) as devices, count(distinct user_id) as users from raw_web_events",
    ]);
    assert!(funnel[0]["views"].as_i64() > funnel[0]["orders"].as_i64());
    assert_eq!(funnel[0]["devices"], 3);
    assert!(
        funnel[0]["users"].as_i64() > Some(0),
        "buyers identify: {funnel}"
    );

    // Time travel from the CLI: version 0 is the empty table.
    let v0 = b.crow_json(&[
        "sql",
        "--table-version",
        "raw_web_events=0",
        "select count(*) as n from raw_web_events",
    ]);
    assert_eq!(v0[0]["n"], 0);
    let hist = b.crow_json(&["history", "raw_web_events"]);
    assert_eq!(hist[0]["operation"], "WRITE");
    // Three more imports leave the catalog in four small files; optimize
    // compacts them into one, leaving them for vacuum.
    let files = |b: &Backend| {
        let t = b.crow_json(&["tables"]);
        t.as_array()
            .expect("tables")
            .iter()
            .find(|r| r["table"] == "products")
            .map(|r| r["files"].clone())
            .expect("products")
    };
    let dir = tempfile::tempdir().expect("dir");
    for i in 1..=3 {
        let f = dir.path().join(format!("p{i}.jsonl"));
        std::fs::write(
            &f,
            format!("{{\"sku\":\"X-{i}\",\"name\":\"Extra {i}\",\"price\":{i}}}\n"),
        )
        .expect("write");
        b.crow_json(&[
            "products",
            "import",
            "--org",
            "Northwind Audio",
            &f.to_string_lossy(),
        ]);
    }
    assert_eq!(files(&b), 4);
    let catalog = b.crow_json(&["sql", "select count(*) as n from products"]);
    let opt = b.crow_json(&["optimize", "products"]);
    assert_eq!(
        (
            &opt[0]["table"],
            &opt[0]["files_removed"],
            &opt[0]["files_added"]
        ),
        (
            &serde_json::json!("products"),
            &serde_json::json!(4),
            &serde_json::json!(1)
        ),
        "{opt}"
    );
    assert_eq!(files(&b), 1);
    // A dry run lists each file it would delete; the vacuum deletes
    // exactly those, and nothing is left to delete after it.
    let would = b.crow_json(&["vacuum", "products", "--retention-hours", "0", "--dry-run"]);
    let would = would.as_array().expect("rows").clone();
    // Exactly the files the log removed (the four compacted files, and any
    // a catalog upsert replaced), read from the Delta log itself.
    let mut removed = std::collections::BTreeSet::new();
    let log = std::path::Path::new(&b.uri).join("products/_delta_log");
    for entry in std::fs::read_dir(&log).expect("log") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("commit");
            for line in text.lines() {
                let action: serde_json::Value = serde_json::from_str(line).expect("action");
                if let Some(p) = action["remove"]["path"].as_str() {
                    removed.insert(p.to_string());
                }
            }
        }
    }
    assert!(removed.len() >= 4, "{removed:?}");
    let listed: std::collections::BTreeSet<String> = would
        .iter()
        .map(|r| {
            assert_eq!(r["table"], "products", "{r}");
            r["file"].as_str().expect("file").to_string()
        })
        .collect();
    assert_eq!(listed.len(), would.len(), "each file once: {would:?}");
    assert_eq!(listed.len(), removed.len(), "{listed:?} vs {removed:?}");
    assert!(
        listed
            .iter()
            .all(|f| f.ends_with(".parquet") && removed.iter().any(|p| f.ends_with(p.as_str()))),
        "{listed:?} vs {removed:?}"
    );
    let vac = b.crow_json(&["vacuum", "products", "--retention-hours", "0"]);
    assert_eq!(vac[0]["table"], "products");
    assert_eq!(vac[0]["files_deleted"], would.len(), "{vac}");
    let again = b.crow_json(&["vacuum", "products", "--retention-hours", "0", "--dry-run"]);
    assert_eq!(again, serde_json::json!([]), "nothing left to delete");
    assert_eq!(
        b.crow_json(&["sql", "select count(*) as n from products"]),
        catalog
    );
    // A checkpoint writes its Parquet file at the table's version.
    let cp = b.crow_json(&["checkpoint", "raw_web_events"]);
    assert_eq!(cp[0]["table"], "raw_web_events");
    let v = cp[0]["checkpoint_version"].as_u64().expect("version");
    let log = std::path::Path::new(&b.uri).join("raw_web_events/_delta_log");
    assert!(
        log.join(format!("{v:020}.checkpoint.parquet")).exists(),
        "{}",
        log.display()
    );
    assert_eq!(
        b.crow_json(&["sql", q]),
        first,
        "maintenance never changes the rows"
    );
}

/// `crow` with these arguments and environment on no particular lake.
fn crow_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::support::crow_bin());
    cmd.args(args)
        .env_remove("CROW_CONFIG")
        .env_remove("CROW_LAKE")
        .env_remove("CROW_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run crow")
}

/// The one line a failed command wrote on stderr, after checking that it is
/// one line, says `needle` exactly once and shows no DataFusion internals.
fn one_error_line(what: &str, out: &std::process::Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} must fail; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr, got:\n{err}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{what}: {line}");
    for internal in [
        "datafusion.public",
        "Error during planning",
        "ParserError",
        "sql parser error",
    ] {
        assert!(
            !line.contains(internal),
            "{what}: `{internal}` leaks: {line}"
        );
    }
    assert_eq!(
        line.matches(needle).count(),
        1,
        "{what}: `{needle}` said exactly once: {line}"
    );
    line.to_string()
}

/// A lake on a bucket that does not exist (a new user's first S3 mistake):
/// one line that says so and what to do; no log lines of the Delta kernel,
/// no XML, no panic of a thread the failed command left behind.
#[test]
fn a_missing_bucket_is_one_clear_line() {
    let s3 = Backend::s3();
    let env: Vec<(&str, &str)> = s3
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let bucket = format!(
        "crow-missing-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let uri = format!("s3://{bucket}/lake");
    for args in [vec!["--lake", &uri, "init"], vec!["--lake", &uri, "tables"]] {
        let out = crow_with(&args, &env);
        let line = one_error_line("a missing bucket", &out, "NoSuchBucket");
        assert!(
            line.contains(&format!("create the bucket `{bucket}` first")) && !line.contains('<'),
            "{line}"
        );
        // 1, not 75 ("retry later"): no retry creates the bucket.
        assert_eq!(out.status.code(), Some(1), "{line}");
    }
}

#[test]
fn errors_say_each_cause_once_in_crow_terms() {
    let b = Backend::local();
    b.crow_ok(&["init"]);

    let line = one_error_line(
        "unknown table",
        &b.crow(&["sql", "select * from nonexistent"]),
        "nonexistent",
    );
    assert!(
        line.starts_with("error: no table named nonexistent (tables: ")
            && line.contains("raw_web_events")
            && line.contains("organizations"),
        "{line}"
    );

    // A lake made by an older CROW lacks the tables added since: SQL over
    // one of them says which, and how to add them; SQL over the others
    // reads as before (a session loads only the tables a query names);
    // `crow init` adds the missing ones, and SQL reads them.
    let folder = std::path::Path::new(&b.uri).join("daily_metrics");
    std::fs::remove_dir_all(&folder).expect("remove a table's folder");
    let line = one_error_line(
        "a table missing",
        &b.crow(&["sql", "select count(*) from daily_metrics"]),
        "daily_metrics",
    );
    assert!(
        line.starts_with("error: table `daily_metrics` does not exist in the lake at ")
            && line.ends_with("(run `crow init`)"),
        "{line}"
    );
    assert_eq!(
        b.crow_json(&["sql", "select count(*) as n from organizations"]),
        serde_json::json!([{"n": 0}])
    );
    b.crow_ok(&["init"]);
    assert_eq!(
        b.crow_json(&["sql", "select count(*) as n from daily_metrics"]),
        serde_json::json!([{"n": 0}])
    );

    let line = one_error_line("syntax error", &b.crow(&["sql", "selec 1"]), "selec");
    assert_eq!(
        line,
        "error: SQL syntax: expected a statement at line 1, column 1, found \"selec\""
    );

    let line = one_error_line(
        "unknown column",
        &b.crow(&["sql", "select no_such_col from organizations"]),
        "no_such_col",
    );
    assert!(
        line.starts_with("error: no column named no_such_col in organizations (columns: ")
            && line.contains("org_id"),
        "{line}"
    );

    let line = one_error_line(
        "bad lake URI",
        &crow_with(&["--lake", "ftp://example.com/lake", "tables"], &[]),
        "ftp://",
    );
    assert!(line.contains("lake.uri"), "{line}");

    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("crow.toml");
    std::fs::write(&cfg, "[ai]\nconcurrency = \"lots\"\n").expect("write");
    let line = one_error_line(
        "bad config value in the file",
        &b.crow(&["--config", cfg.to_str().expect("path"), "tables"]),
        "lots",
    );
    assert!(line.contains("ai.concurrency"), "{line}");
    let line = one_error_line(
        "bad config value in the environment",
        &crow_with(
            &["--lake", &b.uri, "tables"],
            &[("CROW_AI_PROVIDER", "skynet")],
        ),
        "skynet",
    );
    assert!(line.contains("ai.provider"), "{line}");
    let line = one_error_line(
        "a CROW_* variable that is no setting",
        &crow_with(
            &["--lake", &b.uri, "tables"],
            &[("CROW_AI_PROVDER", "gemini")],
        ),
        "CROW_AI_PROVDER",
    );
    assert!(line.contains("did you mean CROW_AI_PROVIDER?"), "{line}");

    // A wrong argument: clap's error, its hint and where to read more, in
    // one line; help itself is still the full text on stdout.
    let out = crow_with(&["sql", "--format", "yaml", "select 1"], &[]);
    let line = one_error_line("bad --format", &out, "yaml");
    assert!(
        line.contains("json") && line.contains("crow sql --help"),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(2));
    let out = crow_with(&["sql", "--help"], &[]);
    assert!(out.status.success() && out.stderr.is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--table-version"));

    // The full chain only when asked for.
    let out = crow_with(
        &["--lake", &b.uri, "sql", "select * from nonexistent"],
        &[("CROW_LOG", "debug")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: no table named nonexistent") && err.contains("Error during planning"),
        "CROW_LOG=debug shows the full chain: {err}"
    );
}

/// `--format json` writes every column of every row, a null as `null`.
#[test]
fn json_output_writes_nulls() {
    let b = Backend::local();
    b.crow_ok(&["init"]);

    // A null of each kind of column a query can print.
    let rows = b.crow_json(&[
        "sql",
        "select cast(null as varchar) as a, 1 as b, cast(null as bigint) as i, \
         cast(null as double) as f, cast(null as boolean) as t, cast(null as date) as d, \
         cast(null as timestamp) as ts, cast(null as decimal(10, 2)) as m, \
         cast(null as int[]) as l, named_struct('x', cast(null as int)) as s",
    ]);
    assert_eq!(
        rows,
        serde_json::json!([{
            "a": null, "b": 1, "i": null, "f": null, "t": null, "d": null,
            "ts": null, "m": null, "l": null, "s": {"x": null},
        }])
    );

    // Rows of CROW's tables: every column of the table, nulls included.
    let org = b.crow_json(&["orgs", "create", "--name", "Acme"]);
    assert_eq!(org["domain"], serde_json::Value::Null, "{org}");
    let columns = |table: &str| -> Vec<String> {
        let mut c: Vec<String> = crow_schemas::table(table)
            .expect("table")
            .columns
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        c.sort();
        c
    };
    let keys = |row: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = row.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let orgs = b.crow_json(&["sql", "select * from organizations"]);
    assert_eq!(keys(&orgs[0]), columns("organizations"), "{orgs}");
    assert_eq!(orgs[0]["domain"], serde_json::Value::Null, "{orgs}");
    let listed = b.crow_json(&["orgs", "list"]);
    assert_eq!(listed[0]["domain"], serde_json::Value::Null, "{listed}");

    let file = tempfile::NamedTempFile::with_suffix(".csv").expect("tmp");
    std::fs::write(file.path(), "sku,name\nA-1,Widget\n").expect("write");
    b.crow_json(&[
        "products",
        "import",
        file.path().to_str().expect("path"),
        "--org",
        "Acme",
    ]);
    let products = b.crow_json(&["products", "list", "--org", "Acme"]);
    assert_eq!(products[0]["name"], "Widget", "{products}");
    for c in ["category", "price", "currency", "url"] {
        assert!(
            products[0].get(c) == Some(&serde_json::Value::Null),
            "products list keeps the null `{c}`: {products}"
        );
    }
}

/// `crow … | head`: the reader closes the pipe; crow stops quietly.
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::io::Read;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    // Far more than a pipe holds, so crow is still writing when the pipe
    // closes.
    let mut child = std::process::Command::new(crate::support::crow_bin())
        .args([
            "--lake",
            &b.uri,
            "sql",
            "--format",
            "csv",
            "select * from generate_series(1, 300000)",
        ])
        .env_remove("CROW_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn crow");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 16];
    stdout.read_exact(&mut head).expect("the first bytes");
    assert!(
        head.starts_with(b"value\n1\n"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().is_empty(),
        "nothing on stderr when the reader goes away: {err}"
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(141)),
        "{:?}",
        out.status
    );
    // Every command's output goes the same way, the benchmarks' too: a
    // reader gone before anything was written is no panic.
    let mut child = std::process::Command::new(crate::support::crow_bin())
        .args([
            "--lake", &b.uri, "bench", "generate", "--events", "200", "--days", "1",
        ])
        .env_remove("CROW_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn crow");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// A product re-import updates the fields its rows carry and keeps the
/// others; a field carried as null (or an empty CSV cell) is cleared.
#[test]
fn product_reimport_updates_only_the_fields_it_carries() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Acme"]);
    let dir = tempfile::tempdir().expect("tmp");
    let import = |name: &str, text: &str| -> serde_json::Value {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        b.crow_json(&[
            "products",
            "import",
            path.to_str().expect("path"),
            "--org",
            "Acme",
        ])
    };
    let stored = || -> serde_json::Value {
        let rows = b.crow_json(&[
            "sql",
            "select product_id, name, price, url, category, brand, currency, description \
             from products",
        ]);
        assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
        rows[0].clone()
    };
    import(
        "full.jsonl",
        r#"{"sku":"AC-SP-1","name":"Cube Speaker","url":"https://acme.example/p/cube","category":"Audio > Speakers","brand":"Acme","price":149,"currency":"eur","description":"A cube that sings."}"#,
    );
    let r = import(
        "v2.jsonl",
        r#"{"sku":"AC-SP-1","name":"Cube Speaker v2","price":159}"#,
    );
    assert_eq!(
        (r["inserted"].clone(), r["updated"].clone()),
        (0.into(), 1.into()),
        "{r}"
    );
    assert_eq!(
        stored(),
        serde_json::json!({
            "product_id": "AC-SP-1", "name": "Cube Speaker v2", "price": 159.0,
            "url": "https://acme.example/p/cube", "category": "Audio > Speakers",
            "brand": "Acme", "currency": "EUR", "description": "A cube that sings.",
        })
    );

    // Clearing on purpose: an explicit null in JSON, an empty cell in CSV.
    import(
        "clear.jsonl",
        r#"{"sku":"AC-SP-1","name":"Cube Speaker v2","description":null}"#,
    );
    import("v3.csv", "sku,name,brand\nAC-SP-1,Cube Speaker v3,\n");
    assert_eq!(
        stored(),
        serde_json::json!({
            "product_id": "AC-SP-1", "name": "Cube Speaker v3", "price": 159.0,
            "url": "https://acme.example/p/cube", "category": "Audio > Speakers",
            "brand": null, "currency": "EUR", "description": null,
        })
    );
}

/// Organization names are unique ignoring case; on a lake that already has
/// two organizations of one name, `--org NAME` is an error naming both ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_names_are_unique_and_an_ambiguous_org_is_an_error() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let first = b.crow_json(&["orgs", "create", "--name", "Acme Audio"]);
    let first_id = first["org_id"].as_str().expect("org_id").to_string();
    let line = one_error_line(
        "a duplicate name",
        &b.crow(&["orgs", "create", "--name", "  acme AUDIO "]),
        "already exists",
    );
    assert!(line.contains(&first_id), "{line}");
    assert_eq!(
        b.crow_json(&["orgs", "list"]).as_array().map(Vec::len),
        Some(1)
    );
    // A name resolves ignoring case while it is unique.
    let k = b.crow_json(&["keys", "create", "--org", "ACME audio"]);
    assert_eq!(k["org_id"], first_id.as_str());

    // A lake written before names were unique: a second "Acme Audio".
    let lake = b.lake().await;
    let mut twin = crow_lake::orgs::get(&lake, &first_id)
        .await
        .expect("read")
        .expect("org");
    twin.org_id = "org_twin_of_acme".into();
    twin.write_key_hash = crow_lake::ids::sha256_hex(b"another key");
    let batch =
        crow_lake::batch::rows_to_batch(&crow_schemas::ORGANIZATIONS, &[twin]).expect("batch");
    lake.append("organizations", vec![batch])
        .await
        .expect("append");
    for args in [
        vec!["keys", "create", "--org", "Acme Audio"],
        vec!["products", "list", "--org", "acme audio"],
    ] {
        let line = one_error_line("an ambiguous --org", &b.crow(&args), "org_twin_of_acme");
        assert!(
            line.contains(&first_id) && line.contains("2 organizations"),
            "{args:?}: {line}"
        );
    }
    // The id is never ambiguous.
    let k = b.crow_json(&["keys", "create", "--org", &first_id]);
    assert_eq!(k["org_id"], first_id.as_str());
}

/// `crow jobs run` with nothing to do says so rather than printing a table
/// of blanks; JSON still prints the (empty) report.
#[test]
fn a_job_with_nothing_to_do_says_so() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let out = b.crow_ok(&["jobs", "run", "sessionize", "--quiet"]);
    assert!(
        out.starts_with("nothing to do: sessionize") && out.lines().count() == 1,
        "{out}"
    );
    let report = b.crow_json(&["jobs", "run", "sessionize", "--quiet"]);
    assert_eq!(report["run_id"], "", "{report}");
    // A patterns run that finds nothing says why, not just "0".
    let out = b.crow_ok(&[
        "jobs",
        "run",
        "patterns",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
        "--quiet",
    ]);
    assert!(
        out.contains("no patterns: nothing in [2026-01-01, 2026-01-03) stood out")
            && out.contains("28 days"),
        "{out}"
    );
}

/// JSON output lists each record's fields in the order the table shows
/// them (not alphabetically), for listings and for created objects.
#[test]
fn json_fields_come_in_column_order() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = b.crow_ok(&["orgs", "create", "--name", "Order Co", "--format", "json"]);
    let pos = |text: &str, k: &str| {
        text.find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    assert!(
        pos(&org, "org_id") < pos(&org, "name") && pos(&org, "name") < pos(&org, "write_key"),
        "{org}"
    );
    let tables = b.crow_ok(&["tables", "--format", "json"]);
    let first = tables.split('}').next().unwrap_or_default();
    let order: Vec<usize> = [
        "table",
        "schema_version",
        "version",
        "files",
        "rows",
        "bytes",
    ]
    .iter()
    .map(|k| pos(first, k))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
    let v: serde_json::Value = serde_json::from_str(&tables).expect("valid JSON");
    assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{tables}");
    b.crow_ok(&["keys", "create", "--org", "Order Co"]);
    let keys = b.crow_ok(&["keys", "list", "--format", "json"]);
    assert!(
        pos(&keys, "id") < pos(&keys, "org_id") && pos(&keys, "scope") < pos(&keys, "created_at"),
        "{keys}"
    );
    let v: serde_json::Value = serde_json::from_str(&keys).expect("valid JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{keys}");
    let empty = b.crow_ok(&["sql", "--format", "json", "select 1 as x where false"]);
    let v: serde_json::Value = serde_json::from_str(&empty).expect("valid JSON");
    assert_eq!(v, serde_json::json!([]));
}

/// `config default` is a complete file that loads back to the defaults;
/// `config show` reflects the environment and masks secrets.
#[test]
fn config_default_round_trips_and_show_masks_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let default = crow_with(&["config", "default"], &[]);
    assert!(default.status.success());
    let file = dir.path().join("crow.toml");
    std::fs::write(&file, &default.stdout).expect("write");
    let shown_default = crow_with(&["config", "show"], &[]);
    let shown_file = crow_with(
        &["--config", &file.to_string_lossy(), "config", "show"],
        &[],
    );
    assert!(shown_default.status.success() && shown_file.status.success());
    assert_eq!(
        String::from_utf8_lossy(&shown_file.stdout),
        String::from_utf8_lossy(&shown_default.stdout),
        "the default file loads back to the defaults"
    );
    let shown = crow_with(
        &["config", "show"],
        &[
            ("CROW_API_RATE_LIMIT_BURST", "7"),
            ("CROW_LAKE_S3_SECRET_ACCESS_KEY", "s3cr3t-never-shown"),
        ],
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains("rate_limit_burst = 7"), "{text}");
    assert!(!text.contains("s3cr3t-never-shown"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("secret_access_key = ") && l != "secret_access_key = \"\""),
        "the secret is shown as set, masked: {text}"
    );
}

/// `crow config show` prints no secret, whether it came from the file or
/// from a `CROW_*` variable (nor do its logs at debug level), while every
/// other setting shows as set.
#[test]
fn config_show_prints_no_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("crow.toml");
    let text = "[lake.s3]\n\
                endpoint = \"http://file-endpoint.example\"\n\
                access_key_id = \"FILEACCESSKEYID\"\n\
                secret_access_key = \"file-s3-secret-value\"\n\
                [lake.options]\n\
                aws_session_token = \"file-session-token-value\"\n\
                [ingest]\n\
                ip_salt = \"file-ip-salt-value\"\n\
                [ai]\n\
                model = \"file-model-name\"\n\
                [social]\n\
                bluesky_identifier = \"file-handle.example\"\n\
                bluesky_app_password = \"overridden-by-env-value\"\n";
    std::fs::write(&file, text).expect("write");
    let secrets_env = [
        ("CROW_SERVER_METRICS_TOKEN", "env-metrics-token-value-0123"),
        ("CROW_SOCIAL_BLUESKY_APP_PASSWORD", "env-app-password-value"),
        (
            "CROW_LAKE_OPTIONS_GOOGLE_SERVICE_ACCOUNT_KEY",
            "env-gcs-key-value",
        ),
        ("CROW_LAKE_S3_SECRET_ACCESS_KEY", "env-s3-secret-value"),
    ];
    let mut env = secrets_env.to_vec();
    env.extend([("CROW_API_RATE_LIMIT_BURST", "7"), ("CROW_LOG", "debug")]);
    let out = crow_with(
        &["--config", &file.to_string_lossy(), "config", "show"],
        &env,
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}{logs}");
    let file_secrets = [
        "FILEACCESSKEYID",
        "file-s3-secret-value",
        "file-session-token-value",
        "file-ip-salt-value",
        "overridden-by-env-value",
    ];
    for secret in file_secrets
        .iter()
        .chain(secrets_env.iter().map(|(_, v)| v))
    {
        assert!(!shown.contains(secret), "{secret} in the output: {shown}");
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
    for line in [
        "access_key_id = \"***\"",
        "secret_access_key = \"***\"",
        "aws_session_token = \"***\"",
        "google_service_account_key = \"***\"",
        "ip_salt = \"***\"",
        "metrics_token = \"***\"",
        "bluesky_app_password = \"***\"",
        // Everything else shows as it is.
        "endpoint = \"http://file-endpoint.example\"",
        "model = \"file-model-name\"",
        "bluesky_identifier = \"file-handle.example\"",
        "rate_limit_burst = 7",
        "provider = \"offline\"",
    ] {
        assert!(shown.lines().any(|l| l == line), "no `{line}` in: {shown}");
    }
}

/// `crow sql --as-of` reads every table as it was at that time.
#[test]
fn sql_as_of_reads_the_past() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "First"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let then = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.crow_json(&["orgs", "create", "--name", "Second"]);
    let q = "select count(*) as n from organizations";
    assert_eq!(b.crow_json(&["sql", q]), serde_json::json!([{"n": 2}]));
    assert_eq!(
        b.crow_json(&["sql", "--as-of", &then, q]),
        serde_json::json!([{"n": 1}])
    );
    // A table pinned to a version reads that version, the others the time
    // asked for (the pin is not ignored beside --as-of).
    let latest = b.crow_json(&["history", "organizations", "--limit", "1"]);
    let v = latest[0]["version"].as_u64().expect("version");
    assert_eq!(
        b.crow_json(&[
            "sql",
            "--as-of",
            &then,
            "--table-version",
            &format!("organizations={v}"),
            q
        ]),
        serde_json::json!([{"n": 2}])
    );
}
