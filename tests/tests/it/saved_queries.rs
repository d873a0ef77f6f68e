//! Saved queries (`/api/v1/saved-queries`) against a live `crow serve`:
//! a signed-in user saves, lists, opens, renames, changes and deletes their
//! queries; every other user — of the same organization (an admin too) or
//! another — gets 404; an API key gets 403 `user_required`; names and SQL
//! are checked and limited; through SQL only admins see the table, and
//! only their organization's rows; every write is in the audit log.

use reqwest::header::COOKIE;
use reqwest::Method as M;
use serde_json::{json, Value};

use crate::support::{Backend, Server};
use crate::users::{call_as, signed_in, Jar};

const PASSWORD: &str = "saved password 1";

pub(crate) struct World {
    pub(crate) b: Backend,
    _wal: tempfile::TempDir,
    pub(crate) server: Server,
    pub(crate) http: reqwest::Client,
}

impl World {
    /// `crow init`, then `crow serve` with `env` and no rate limit to speak of.
    pub(crate) fn start(b: Backend, env: &[(&str, &str)]) -> World {
        let wal = tempfile::tempdir().expect("wal");
        let mut env = env.to_vec();
        env.push(("CROW_API_RATE_LIMIT_BURST", "100000"));
        let server = Server::start(&b, wal.path(), &env);
        World {
            b,
            _wal: wal,
            server,
            http: reqwest::Client::new(),
        }
    }

    /// A signed-in user of `org`.
    pub(crate) async fn user(&self, org: &str, email: &str, role: &str) -> Jar {
        signed_in(
            &self.b,
            &self.http,
            &self.server,
            (org, email, role),
            PASSWORD,
        )
        .await
    }

    /// A request as the user of `jar` (with the CSRF token), or with `key`.
    pub(crate) async fn call(
        &self,
        who: Result<&Jar, &str>,
        method: M,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call_as(&self.http, &self.server, who, (method, path), body).await
    }

    /// The rows `sql` answers the caller.
    pub(crate) async fn sql(&self, who: Result<&Jar, &str>, sql: &str) -> Vec<Value> {
        let (s, v) = self
            .call(who, M::POST, "/api/v1/sql", Some(json!({ "sql": sql })))
            .await;
        assert_eq!(s, 200, "{sql}: {v}");
        v.as_array().expect("rows").clone()
    }
}

pub(crate) fn key(b: &Backend, org: &str, scope: &str) -> String {
    let k = b.crow_json(&["keys", "create", "--org", org, "--scope", scope]);
    k["secret"].as_str().expect("secret").to_string()
}

fn names(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|q| q["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_queries_are_checked_and_stay_with_their_owner() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org_a = b.crow_json(&["orgs", "create", "--name", "Alpha"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let org_b = b.crow_json(&["orgs", "create", "--name", "Beta"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let read_key = key(&b, &org_a, "read");
    let admin_key = key(&b, &org_a, "admin");
    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[]);
    let w = World {
        b,
        _wal: wal,
        server,
        http: reqwest::Client::new(),
    };
    let alice = w.user(&org_a, "alice@alpha.example", "analyst").await;
    let bob = w.user(&org_a, "bob@alpha.example", "admin").await;
    let carol = w.user(&org_b, "carol@beta.example", "owner").await;
    let base = "/api/v1/saved-queries";

    // Saved, listed and opened by its owner.
    let sql = "SELECT 41 + 1 AS answer";
    let (s, v) = w
        .call(
            Ok(&alice),
            M::POST,
            base,
            Some(json!({"name": "  The answer ", "sql": sql})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let q = &v["saved_query"];
    let id = q["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("sqy_"), "{id}");
    assert_eq!(
        (q["name"].as_str(), q["sql"].as_str()),
        (Some("The answer"), Some(sql))
    );
    let (s, one) = w
        .call(Ok(&alice), M::GET, &format!("{base}/{id}"), None)
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["saved_query"], *q);
    let (s, v) = w
        .call(
            Ok(&alice),
            M::POST,
            base,
            Some(json!({"name": "Orgs", "sql": "SELECT name FROM organizations"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, list) = w.call(Ok(&alice), M::GET, base, None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(names(&list), ["Orgs", "The answer"], "newest first");

    // Nobody else: the same org's admin and another org's owner get 404 and
    // an empty list; changing or deleting it fails the same way.
    for other in [&bob, &carol] {
        let (s, v) = w.call(Ok(other), M::GET, base, None).await;
        assert_eq!((s, names(&v).len()), (200, 0), "{v}");
        let path = format!("{base}/{id}");
        for (m, body) in [
            (M::GET, None),
            (M::PATCH, Some(json!({"name": "mine now"}))),
            (M::DELETE, None),
        ] {
            let (s, v) = w.call(Ok(other), m.clone(), &path, body).await;
            assert_eq!(s, 404, "{m} {path}: {v}");
            assert_eq!(v["code"], "not_found", "{v}");
        }
    }

    // An API key, read or admin, has no saved queries.
    for k in [&read_key, &admin_key] {
        for (m, path, body) in [
            (M::GET, base.to_string(), None),
            (
                M::POST,
                base.to_string(),
                Some(json!({"name": "k", "sql": "SELECT 1"})),
            ),
            (M::GET, format!("{base}/{id}"), None),
            (M::DELETE, format!("{base}/{id}"), None),
        ] {
            let (s, v) = w.call(Err(k.as_str()), m.clone(), &path, body).await;
            assert_eq!(s, 403, "{m} {path}: {v}");
            assert_eq!(v["code"], "user_required", "{v}");
        }
    }

    // Without the CSRF token a cookie session cannot write.
    let r = w
        .http
        .post(w.server.url(base))
        .header(COOKIE, alice.header())
        .json(&json!({"name": "no csrf", "sql": "SELECT 1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);

    // Checked input, with a code that says what is wrong.
    let long_name = "n".repeat(201);
    let long_sql = format!("SELECT '{}'", "x".repeat(20_000));
    for (body, status, code) in [
        (json!({"name": "", "sql": "SELECT 1"}), 400, "invalid_name"),
        (
            json!({"name": long_name, "sql": "SELECT 1"}),
            400,
            "invalid_name",
        ),
        (
            json!({"name": "tab\there", "sql": "SELECT 1"}),
            400,
            "invalid_name",
        ),
        (json!({"name": "blank", "sql": "  \n "}), 400, "invalid_sql"),
        (json!({"name": "long", "sql": long_sql}), 400, "invalid_sql"),
        (json!({"name": "x"}), 400, "invalid_body"),
        (
            json!({"name": "x", "sql": "SELECT 1", "owner": "bob"}),
            400,
            "invalid_body",
        ),
        (
            json!({"name": "Orgs", "sql": "SELECT 2"}),
            409,
            "name_taken",
        ),
    ] {
        let (s, v) = w.call(Ok(&alice), M::POST, base, Some(body.clone())).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
    }
    let at = format!("{base}/{id}");
    for (body, status, code) in [
        (json!({}), 400, "invalid_body"),
        (json!({"name": "Orgs"}), 409, "name_taken"),
        (json!({"sql": ""}), 400, "invalid_sql"),
    ] {
        let (s, v) = w.call(Ok(&alice), M::PATCH, &at, Some(body.clone())).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
    }
    let (s, v) = w
        .call(Ok(&alice), M::GET, &format!("{base}/sqy_x'--"), None)
        .await;
    assert_eq!(s, 404, "{v}");

    // Renamed, then its SQL changed: kept, and now the newest.
    let (s, v) = w
        .call(Ok(&alice), M::PATCH, &at, Some(json!({"name": "Answer"})))
        .await;
    assert_eq!(
        (s, v["saved_query"]["sql"].as_str()),
        (200, Some(sql)),
        "{v}"
    );
    let (s, v) = w
        .call(
            Ok(&alice),
            M::PATCH,
            &at,
            Some(json!({"sql": "SELECT 42 AS answer"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, list) = w.call(Ok(&alice), M::GET, base, None).await;
    assert_eq!(names(&list), ["Answer", "Orgs"], "{list}");
    assert_eq!(list["data"][0]["sql"], "SELECT 42 AS answer");

    // Through SQL: an analyst sees the table empty, her admin sees her
    // organization's rows only, another organization's owner only theirs.
    let (s, v) = w
        .call(
            Ok(&carol),
            M::POST,
            base,
            Some(json!({"name": "Orgs", "sql": "SELECT 1"})),
        )
        .await;
    assert_eq!(s, 201, "the same name in another user's list: {v}");
    assert!(w
        .sql(Ok(&alice), "SELECT * FROM saved_queries")
        .await
        .is_empty());
    let seen = w
        .sql(
            Ok(&bob),
            "SELECT name, sql FROM saved_queries ORDER BY name",
        )
        .await;
    assert_eq!(
        seen,
        [
            json!({"name": "Answer", "sql": "SELECT 42 AS answer"}),
            json!({"name": "Orgs", "sql": "SELECT name FROM organizations"})
        ]
    );
    let seen = w
        .sql(Ok(&carol), "SELECT name, sql FROM saved_queries")
        .await;
    assert_eq!(seen, [json!({"name": "Orgs", "sql": "SELECT 1"})]);

    // Deleted: gone for its owner too.
    let (s, v) = w.call(Ok(&alice), M::DELETE, &at, None).await;
    assert_eq!(s, 204, "{v}");
    let (s, _) = w.call(Ok(&alice), M::GET, &at, None).await;
    assert_eq!(s, 404);
    let (_, list) = w.call(Ok(&alice), M::GET, base, None).await;
    assert_eq!(names(&list), ["Orgs"]);

    // Every write is in the audit log, with the user who made it.
    let audited = w
        .sql(
            Err(&admin_key),
            "SELECT action, actor, target FROM audit_log WHERE action LIKE 'saved_query.%' ORDER BY at",
        )
        .await;
    let actions: Vec<&str> = audited
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "saved_query.create",
            "saved_query.create",
            "saved_query.update",
            "saved_query.update",
            "saved_query.delete"
        ],
        "{audited:?}"
    );
    assert!(
        audited
            .iter()
            .all(|r| r["actor"].as_str().is_some_and(|a| a.starts_with("user:"))),
        "{audited:?}"
    );
    assert_eq!(audited[4]["target"], json!(id));
}

/// A user keeps at most `api.max_saved_queries` saved queries (200 by
/// default): one more is refused with 409 `too_many_saved_queries` and
/// saves nothing; another user of the same organization is not limited by
/// hers; after deleting one she saves again. The server here keeps 12, so
/// the test makes 12 saves, not 200 (each is two commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_at_most_the_configured_saved_queries() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Alpha"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    // The default, as `crow config default` prints it.
    let default = std::process::Command::new(crate::support::crow_bin())
        .args(["config", "default"])
        .output()
        .expect("crow config default");
    let default = String::from_utf8_lossy(&default.stdout);
    assert!(
        default
            .lines()
            .any(|l| l.trim() == "max_saved_queries = 200"),
        "{default}"
    );
    let w = World::start(b, &[("CROW_API_MAX_SAVED_QUERIES", "12")]);
    let alice = w.user(&org, "alice@alpha.example", "analyst").await;
    let bob = w.user(&org, "bob@alpha.example", "analyst").await;
    let base = "/api/v1/saved-queries";
    for i in 0..12 {
        let body = json!({"name": format!("q{i:03}"), "sql": format!("SELECT {i}")});
        let (s, v) = w.call(Ok(&alice), M::POST, base, Some(body)).await;
        assert_eq!(s, 201, "query {i}: {v}");
    }
    let over = json!({"name": "one too many", "sql": "SELECT 12"});
    let (s, v) = w.call(Ok(&alice), M::POST, base, Some(over.clone())).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("too_many_saved_queries")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 12 saved queries")),
        "{v}"
    );
    let (_, list) = w.call(Ok(&alice), M::GET, base, None).await;
    let have = names(&list);
    assert_eq!(have.len(), 12, "{list}");
    assert!(!have.iter().any(|n| n == "one too many"));
    // Hers, not the organization's: Bob saves his first.
    let (s, v) = w.call(Ok(&bob), M::POST, base, Some(over.clone())).await;
    assert_eq!(s, 201, "{v}");
    // One deleted: room for one more.
    let id = list["data"][0]["id"].as_str().expect("id").to_string();
    let (s, v) = w
        .call(Ok(&alice), M::DELETE, &format!("{base}/{id}"), None)
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = w.call(Ok(&alice), M::POST, base, Some(over)).await;
    assert_eq!(s, 201, "{v}");
}

/// A server started with `env` on a new lake with one organization: Alice,
/// an analyst, and Bob, an admin, signed in.
async fn alpha(env: &[(&str, &str)]) -> (World, Jar, Jar) {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Alpha"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let w = World::start(b, env);
    let alice = w.user(&org, "alice@alpha.example", "analyst").await;
    let bob = w.user(&org, "bob@alpha.example", "admin").await;
    (w, alice, bob)
}

/// [`alpha`], with one saved query of Alice's, whose id is returned.
async fn one_saved_query(env: &[(&str, &str)]) -> (World, Jar, Jar, String) {
    let (w, alice, bob) = alpha(env).await;
    let (s, v) = w
        .call(
            Ok(&alice),
            M::POST,
            "/api/v1/saved-queries",
            Some(json!({"name": "raced", "sql": "SELECT 1"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["saved_query"]["id"].as_str().expect("id").to_string();
    (w, alice, bob, id)
}

/// Eight changes of saved query `id`'s SQL at once, numbered after
/// `round`: each change's SQL, status, `Retry-After` and answer.
async fn edits_at_once(
    w: &World,
    alice: &Jar,
    id: &str,
    round: usize,
) -> Vec<(String, u16, Option<String>, Value)> {
    let url = w.server.url(&format!("/api/v1/saved-queries/{id}"));
    let edits = (0..8).map(|i| {
        let sql = format!("SELECT {}", round * 10 + i);
        let url = &url;
        async move {
            let r = w
                .http
                .patch(url)
                .header(COOKIE, alice.header())
                .header("X-CSRF-Token", &alice.csrf)
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .expect("patch");
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (sql, status, retry_after, body)
        }
    });
    futures::future::join_all(edits.collect::<Vec<_>>()).await
}

/// After the changes, saved query `id` is one row — in the API and in the
/// table — with one of the SQL texts in `written`, and exactly the changes
/// in `written` are in the audit log.
async fn edited_by_one_of(w: &World, (alice, bob): (&Jar, &Jar), id: &str, written: &[String]) {
    let (s, list) = w
        .call(Ok(alice), M::GET, "/api/v1/saved-queries", None)
        .await;
    assert_eq!(s, 200, "{list}");
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{list}");
    let sql = data[0]["sql"].as_str().expect("sql").to_string();
    assert!(written.contains(&sql), "{sql} is none of {written:?}");
    let rows = w
        .sql(
            Ok(bob),
            &format!("SELECT sql FROM saved_queries WHERE query_id = '{id}'"),
        )
        .await;
    assert_eq!(rows, [json!({ "sql": sql })], "one row per saved query");
    let audited = w
        .sql(
            Ok(bob),
            &format!(
                "SELECT count(*) AS n FROM audit_log \
                 WHERE action = 'saved_query.update' AND target = '{id}'"
            ),
        )
        .await;
    assert_eq!(audited, [json!({ "n": written.len() })], "{written:?}");
}

/// Changes of one saved query's SQL sent at once: each is a merge that
/// rewrites the row's file, so the commits race and all but one lose. The
/// server's lake retries the losers (re-reading the row), so every change
/// answers 200, the query stays one row with one of the changes' SQL, every
/// change is audited, and the server's `crow_lake_commit_retries_total`
/// counts the lost races (the metric the README tells operators to watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_at_once_lose_races_that_the_server_retries() {
    let (w, alice, bob, id) = one_saved_query(&[]).await;
    let retries = |m: &str| crate::support::metric_value(m, "crow_lake_commit_retries_total");
    let before = retries(&w.server.metrics(&w.http).await);
    // Rounds until one race was lost (the first round nearly always has
    // one; a round where every commit happened to find the table as it
    // left it proves nothing).
    let mut written = Vec::new();
    let mut after = before;
    for round in 0..5 {
        for (sql, status, _, body) in edits_at_once(&w, &alice, &id, round).await {
            assert_eq!(
                status, 200,
                "a change that lost a race is retried, not refused: {body}"
            );
            written.push(sql);
        }
        after = retries(&w.server.metrics(&w.http).await);
        if after > before {
            break;
        }
    }
    assert!(
        after > before,
        "40 changes of one row at once and no commit retried: {before} → {after}"
    );
    edited_by_one_of(&w, (&alice, &bob), &id, &written).await;
}

/// With no retries allowed (`lake.commit_retries = 0`), a change that loses
/// the race is refused — 503 `unavailable`, `Retry-After: 1`, a detail that
/// names concurrent writers — and writes nothing: the changes that answered
/// 200 are exactly the ones audited, and the query stays one row named by
/// one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_retries_a_lost_race_is_refused_and_writes_nothing() {
    let (w, alice, bob, id) = one_saved_query(&[("CROW_LAKE_COMMIT_RETRIES", "0")]).await;
    let mut written = Vec::new();
    let mut refused = 0;
    for round in 0..5 {
        for (sql, status, retry_after, body) in edits_at_once(&w, &alice, &id, round).await {
            match status {
                200 => written.push(sql),
                503 => {
                    refused += 1;
                    assert_eq!(body["code"], "unavailable", "{body}");
                    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                    assert!(
                        body["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("concurrent writers")),
                        "{body}"
                    );
                }
                _ => panic!("{sql}: {status} {body}"),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(
        refused > 0,
        "40 changes of one row at once and none lost a race"
    );
    edited_by_one_of(&w, (&alice, &bob), &id, &written).await;
}

/// Saves sent at once cannot pass the checks together (a user's saves
/// take turns in the server): with a cap of 3,
/// eight different saves at once create exactly 3 (the others 409
/// `too_many_saved_queries`); after deleting them, four saves of one name
/// at once create exactly one (the others 409 `name_taken`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_at_once_keep_the_cap_and_unique_names() {
    let (w, alice, _) = alpha(&[("CROW_API_MAX_SAVED_QUERIES", "3")]).await;
    let base = "/api/v1/saved-queries";
    let saves = |names: Vec<String>| {
        let (w, alice) = (&w, &alice);
        futures::future::join_all(names.into_iter().map(move |name| async move {
            let body = json!({"name": name, "sql": "SELECT 1"});
            w.call(Ok(alice), M::POST, base, Some(body)).await
        }))
    };
    let codes = |answers: &[(u16, Value)]| {
        let mut c: Vec<String> = answers
            .iter()
            .map(|(s, v)| format!("{s} {}", v["code"].as_str().unwrap_or("")))
            .collect();
        c.sort();
        c
    };

    let answers = saves((0..8).map(|i| format!("query {i}")).collect()).await;
    let mut want = vec!["201 ".to_string(); 3];
    want.extend(vec!["409 too_many_saved_queries".to_string(); 5]);
    assert_eq!(codes(&answers), want, "{answers:?}");
    let (_, list) = w.call(Ok(&alice), M::GET, base, None).await;
    assert_eq!(names(&list).len(), 3, "{list}");

    for q in list["data"].as_array().expect("data") {
        let id = q["id"].as_str().expect("id");
        let (s, v) = w
            .call(Ok(&alice), M::DELETE, &format!("{base}/{id}"), None)
            .await;
        assert_eq!(s, 204, "{v}");
    }
    let answers = saves(vec!["the same name".to_string(); 4]).await;
    let mut want = vec!["201 ".to_string()];
    want.extend(vec!["409 name_taken".to_string(); 3]);
    assert_eq!(codes(&answers), want, "{answers:?}");
    let (_, list) = w.call(Ok(&alice), M::GET, base, None).await;
    assert_eq!(names(&list), ["the same name"], "{list}");
}
