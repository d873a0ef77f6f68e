//! The organization lifecycle over real HTTP: a rotated write key keeps
//! working for its grace period beside the new one (and not without one),
//! a disabled organization's write keys and API keys are refused and
//! enabling it restores them, its context and fields are edited in place,
//! and deleting it removes its rows from every table and nobody else's.

use std::time::Duration;

use serde_json::{json, Value};

use crate::ingest::{basic, create_org};
use crate::support::{Backend, Server};

async fn track(http: &reqwest::Client, server: &Server, key: &str, id: &str) -> u16 {
    http.post(server.url("/v1/track"))
        .header("Authorization", basic(key))
        .json(&json!({"userId": "u1", "event": "Product Viewed", "messageId": id}))
        .send()
        .await
        .expect("track")
        .status()
        .as_u16()
}

async fn sql_status(http: &reqwest::Client, server: &Server, secret: &str) -> (u16, Value) {
    let r = http
        .post(server.url("/api/v1/sql"))
        .bearer_auth(secret)
        .json(&json!({"sql": "select count(*) as n from raw_web_events"}))
        .send()
        .await
        .expect("sql");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll until `f` gives `want` (the collector's key cache refreshes a
/// miss within a second, a hit within 30 s).
async fn eventually<F, Fut>(what: &str, want: u16, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let start = std::time::Instant::now();
    loop {
        let got = f().await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "{what}: {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_lifecycle_rotate_disable_update_delete() {
    let b = Backend::local();
    let (org, first_key) = create_org(&b, "Lifecycle Co");
    let (other, other_key) = {
        let o = b.crow_json(&["orgs", "create", "--name", "Bystander"]);
        (
            o["org_id"].as_str().expect("id").to_string(),
            o["write_key"].as_str().expect("key").to_string(),
        )
    };
    // Rotation without grace: the first key is refused at once.
    let r = b.crow_json(&["orgs", "rotate-key", &org, "--grace-hours", "0"]);
    let second_key = r["write_key"].as_str().expect("key").to_string();
    assert_eq!(r["previous_key_valid_until"], Value::Null, "{r}");
    let secret = b.crow_json(&["keys", "create", "--org", &org, "--scope", "read"]);
    let secret = secret["secret"].as_str().expect("secret").to_string();

    let wal = tempfile::tempdir().expect("wal");
    let mut server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_INGEST_FLUSH_INTERVAL_MS", "300"),
            ("CROW_API_KEY_CACHE_SECONDS", "1"),
            ("CROW_SCHEDULE_ENABLED", "false"),
        ],
    );
    let http = reqwest::Client::new();
    assert_eq!(track(&http, &server, &first_key, "m-1").await, 401);
    assert_eq!(track(&http, &server, &second_key, "m-2").await, 200);

    // Rotation with the default grace (24 h): old and new both work.
    let r = b.crow_json(&["orgs", "rotate-key", "Lifecycle Co"]);
    let third_key = r["write_key"].as_str().expect("key").to_string();
    assert!(r["previous_key_valid_until"].is_string(), "{r}");
    eventually("the new key", 200, || {
        track(&http, &server, &third_key, "m-3")
    })
    .await;
    assert_eq!(
        track(&http, &server, &second_key, "m-4").await,
        200,
        "grace"
    );
    let shown = b.crow_json(&["orgs", "show", &org]);
    assert!(shown["previous_key_valid_until"].is_string(), "{shown}");
    assert_eq!(
        shown["write_key_prefix"].as_str(),
        Some(&third_key[..8]),
        "{shown}"
    );

    // Context and fields are edited in place; unknown fields stay.
    let shown = b.crow_json(&[
        "orgs",
        "update",
        &org,
        "--context",
        "Sells speakers.\nNever call them \"boxes\".",
        "--domain",
        "lifecycle.example",
    ]);
    assert_eq!(
        shown["context"],
        "Sells speakers.\nNever call them \"boxes\"."
    );
    assert_eq!(shown["domain"], "lifecycle.example");
    assert_eq!(shown["name"], "Lifecycle Co");
    let out = b.crow(&["orgs", "update", &org, "--name", "bystander"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "names stay unique: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = b.crow_json(&["orgs", "update", &org, "--domain", ""]);
    assert_eq!(
        shown["domain"],
        Value::Null,
        "an empty value clears: {shown}"
    );

    // Disabled: write keys and API keys refused; enabled: back.
    let (status, _) = sql_status(&http, &server, &secret).await;
    assert_eq!(status, 200);
    let shown = b.crow_json(&["orgs", "disable", &org]);
    assert_eq!(shown["status"], "disabled");
    eventually("a disabled org's new key", 401, || {
        track(&http, &server, &third_key, "m-5")
    })
    .await;
    assert_eq!(track(&http, &server, &second_key, "m-6").await, 401);
    assert_eq!(
        track(&http, &server, &other_key, "o-1").await,
        200,
        "others unaffected"
    );
    let start = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = sql_status(&http, &server, &secret).await;
        if status != 200 || start.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("disabled"), "{body}");
    b.crow_json(&["orgs", "enable", &org]);
    eventually("an enabled org's key", 200, || {
        track(&http, &server, &third_key, "m-7")
    })
    .await;

    // Delete: refused while active, then every row of it goes, nobody
    // else's.
    let lake = b.lake().await;
    crate::ingest::wait_count(
        &lake,
        &format!(
            "select count(distinct message_id) from raw_web_events \
             where org_id = '{org}' and message_id in ('m-2', 'm-3', 'm-4', 'm-7')"
        ),
        4,
        Duration::from_secs(20),
    )
    .await;
    crate::ingest::wait_count(
        &lake,
        &format!("select count(*) from raw_web_events where org_id = '{other}'"),
        1,
        Duration::from_secs(20),
    )
    .await;
    server.stop();
    let out = b.crow(&["orgs", "delete", &org, "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("disable it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.crow_json(&["orgs", "disable", &org]);
    let out = b.crow(&["orgs", "delete", &org]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "deleting asks for confirmation"
    );
    let mine = b.crow_json(&[
        "sql",
        &format!("select count(*) as n from raw_web_events where org_id = '{org}'"),
    ]);
    let deleted = b.crow_json(&["orgs", "delete", &org, "--yes"]);
    let by_table = |t: &str| {
        deleted
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["table"] == t)
            .map(|r| r["rows_deleted"].clone())
    };
    assert_eq!(
        by_table("raw_web_events"),
        Some(mine[0]["n"].clone()),
        "{deleted}"
    );
    assert_eq!(by_table("api_keys"), Some(json!(1)), "{deleted}");
    assert_eq!(by_table("organizations"), Some(json!(1)), "{deleted}");
    let left = b.crow_json(&[
        "sql",
        &format!(
            "select (select count(*) from raw_web_events where org_id = '{org}') as mine, \
                    (select count(*) from raw_web_events where org_id = '{other}') as theirs, \
                    (select count(*) from organizations) as orgs"
        ),
    ]);
    assert_eq!(left, json!([{"mine": 0, "theirs": 1, "orgs": 1}]));
}

/// The write key through the API (what the dashboard's Settings use): an
/// admin reads its prefix, rotates it without grace (the new key is in the
/// answer once and works; the old one is refused) and with one (both
/// work); a read key is refused; another organization's key is untouched;
/// the rotations are audited. Viewers are refused in the users matrix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_key_rotates_through_the_api_for_admins_only() {
    let b = Backend::local();
    let (org, first_key) = create_org(&b, "Keys Co");
    let other = b.crow_json(&["orgs", "create", "--name", "Other Co"]);
    let other_key = other["write_key"].as_str().expect("key").to_string();
    let admin = b.crow_json(&["keys", "create", "--org", &org, "--scope", "admin"]);
    let admin = admin["secret"].as_str().expect("secret").to_string();
    let read = b.crow_json(&["keys", "create", "--org", &org, "--scope", "read"]);
    let read = read["secret"].as_str().expect("secret").to_string();
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_INGEST_FLUSH_INTERVAL_MS", "300"),
            ("CROW_SCHEDULE_ENABLED", "false"),
        ],
    );
    let http = reqwest::Client::new();
    let call = |key: &str, path: &str, body: Option<Value>| {
        let r = match body {
            Some(b) => http.post(server.url(path)).json(&b),
            None => http.get(server.url(path)),
        }
        .bearer_auth(key);
        async move {
            let r = r.send().await.expect("request");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = call(&admin, "/api/v1/organization/write-key", None).await;
    assert_eq!(
        (s, v["prefix"].as_str()),
        (200, Some(&first_key[..8])),
        "{v}"
    );
    assert_eq!(v["previous_key_valid_until"], Value::Null, "{v}");
    assert_eq!(track(&http, &server, &first_key, "w-1").await, 200);

    // A read key may not; a grace past 30 days is refused; nothing changed.
    let rotate = "/api/v1/organization/write-key/rotate";
    let (s, v) = call(&read, rotate, Some(json!({"grace_hours": 0}))).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("insufficient_scope")),
        "{v}"
    );
    let (s, v) = call(&admin, rotate, Some(json!({"grace_hours": 721}))).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_grace")), "{v}");
    let (s, v) = call(&admin, rotate, Some(json!({"grace": 1}))).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_body")), "{v}");
    assert_eq!(track(&http, &server, &first_key, "w-2").await, 200);

    // Without grace: the new key works, the old one is refused.
    let (s, v) = call(&admin, rotate, Some(json!({"grace_hours": 0}))).await;
    assert_eq!(s, 201, "{v}");
    let second = v["write_key"].as_str().expect("write_key").to_string();
    assert!(second.starts_with("wk") && second != first_key, "{v}");
    assert_eq!(v["prefix"].as_str(), Some(&second[..8]), "{v}");
    eventually("the new key", 200, || track(&http, &server, &second, "w-3")).await;
    eventually("the revoked key", 401, || {
        track(&http, &server, &first_key, "w-4")
    })
    .await;
    assert_eq!(track(&http, &server, &other_key, "w-5").await, 200);

    // With the default grace (24 h): both work; the grace is shown.
    let (s, v) = call(&admin, rotate, Some(json!({}))).await;
    assert_eq!(s, 201, "{v}");
    let third = v["write_key"].as_str().expect("write_key").to_string();
    assert!(v["previous_key_valid_until"].is_string(), "{v}");
    eventually("the third key", 200, || {
        track(&http, &server, &third, "w-6")
    })
    .await;
    assert_eq!(track(&http, &server, &second, "w-7").await, 200, "grace");
    let (_, v) = call(&admin, "/api/v1/organization/write-key", None).await;
    assert_eq!(v["prefix"].as_str(), Some(&third[..8]), "{v}");
    assert!(v["write_key"].is_null(), "never shown again: {v}");

    let (s, v) = call(
        &admin,
        "/api/v1/sql",
        Some(json!({"sql": "SELECT detail FROM audit_log WHERE action = 'org.rotate_write_key' ORDER BY at"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert!(org.starts_with("org_"), "{org}");
}
