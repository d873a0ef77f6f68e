//! The `crow` CLI, run as a user would, on both backends.

use crate::support::Backend;

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

#[test]
fn init_then_sql_local() {
    init_then_sql(Backend::local());
}

#[test]
fn init_then_sql_s3() {
    init_then_sql(Backend::s3());
}

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
    let out = b.crow_json(&["demo", "--visitors", "120", "--days", "7"]);
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
    // Again: the same demo lands exactly once.
    b.crow_ok(&["demo", "--visitors", "120", "--days", "7"]);
    assert_eq!(b.crow_json(&["sql", q]), first);
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
    let opt = b.crow_json(&["optimize", "products"]);
    assert_eq!(opt[0]["table"], "products");
    let vac = b.crow_json(&["vacuum", "products", "--retention-hours", "0"]);
    assert_eq!(vac[0]["table"], "products");
    let cp = b.crow_json(&["checkpoint", "raw_web_events"]);
    assert_eq!(cp[0]["table"], "raw_web_events");
    assert_eq!(
        b.crow_json(&["sql", q]),
        first,
        "maintenance never changes the rows"
    );
}
