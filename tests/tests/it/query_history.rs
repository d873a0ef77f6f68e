//! The SQL console's query history (`/api/v1/query-history`) against a live
//! `crow serve`: a signed-in user's runs are kept on the server, one entry
//! per distinct SQL, most recently run first, the 50 most recent; what the
//! API lists is what `query_history` holds (SQL over the lake); nobody
//! else — the same organization's admin or another organization — lists
//! them; an API key has none (403 `user_required`); the input is checked;
//! clearing forgets the user's entries only, and is audited.

use reqwest::header::COOKIE;
use reqwest::Method as M;
use serde_json::{json, Value};

use crate::saved_queries::{key, World};
use crate::support::Backend;

const BASE: &str = "/api/v1/query-history";

fn sqls(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["sql"].as_str().expect("sql").to_string())
        .collect()
}

async fn record(w: &World, jar: &crate::users::Jar, sql: &str) -> Value {
    let (s, v) = w
        .call(Ok(jar), M::POST, BASE, Some(json!({ "sql": sql })))
        .await;
    assert_eq!(s, 201, "{sql}: {v}");
    v["entry"].clone()
}

/// Alice's history as `query_history` holds it, newest first, read with
/// SQL by an admin of her organization.
async fn in_lake(w: &World, admin: &crate::users::Jar, user_id: &str) -> Vec<String> {
    let rows = w
        .sql(
            Ok(admin),
            &format!(
                "SELECT sql FROM query_history WHERE user_id = '{user_id}' \
                 ORDER BY ran_at DESC, entry_id DESC"
            ),
        )
        .await;
    rows.iter()
        .map(|r| r["sql"].as_str().expect("sql").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_history_is_per_user_deduplicated_capped_and_equal_to_the_lake() {
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
    let w = World::start(b, &[]);
    let alice = w.user(&org_a, "alice@alpha.example", "analyst").await;
    let bob = w.user(&org_a, "bob@alpha.example", "admin").await;
    let carol = w.user(&org_b, "carol@beta.example", "owner").await;
    let (s, me) = w.call(Ok(&alice), M::GET, "/api/v1/auth/me", None).await;
    assert_eq!(s, 200, "{me}");
    let alice_id = me["user"]["id"].as_str().expect("user id").to_string();

    // Run twice, the same SQL: one entry, moved to the top, same id.
    let first = record(&w, &alice, "SELECT 1 AS one").await;
    assert!(
        first["id"].as_str().is_some_and(|i| i.starts_with("qhe_")),
        "{first}"
    );
    record(&w, &alice, "SELECT 2 AS two").await;
    let again = record(&w, &alice, "SELECT 1 AS one").await;
    assert_eq!(again["id"], first["id"]);
    assert!(
        again["ran_at"].as_str() > first["ran_at"].as_str(),
        "{again}"
    );
    let (s, list) = w.call(Ok(&alice), M::GET, BASE, None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(sqls(&list), ["SELECT 1 AS one", "SELECT 2 AS two"]);
    assert_eq!(sqls(&list), in_lake(&w, &bob, &alice_id).await);
    assert_eq!(
        (&list["data"][0]["ok"], &list["data"][0]["error"]),
        (&json!(true), &Value::Null)
    );

    // A failed run is kept with its error (as the console sends it, the
    // SQL endpoint's message); run again and answered, the error is gone.
    let bad = "SELECT * FROM no_such_table";
    let (s, failed) = w
        .call(
            Ok(&alice),
            M::POST,
            "/api/v1/sql",
            Some(json!({ "sql": bad })),
        )
        .await;
    assert!((400..500).contains(&s), "{s}: {failed}");
    let message = failed["detail"].as_str().expect("detail").to_string();
    let (s, v) = w
        .call(
            Ok(&alice),
            M::POST,
            BASE,
            Some(json!({"sql": bad, "error": message})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["entry"]["ok"], &v["entry"]["error"]),
        (&json!(false), &json!(message))
    );
    let (_, list) = w.call(Ok(&alice), M::GET, BASE, None).await;
    assert_eq!(sqls(&list)[0], bad);
    assert_eq!(list["data"][0]["error"], json!(message), "{list}");
    let errors = w
        .sql(
            Ok(&bob),
            &format!("SELECT error FROM query_history WHERE user_id = '{alice_id}' AND error IS NOT NULL"),
        )
        .await;
    assert_eq!(errors, [json!({ "error": message })]);
    let long = "e".repeat(5_000);
    let (_, v) = w
        .call(
            Ok(&alice),
            M::POST,
            BASE,
            Some(json!({"sql": bad, "error": long})),
        )
        .await;
    assert_eq!(
        v["entry"]["error"].as_str().map(|e| e.chars().count()),
        Some(2_000),
        "{v}"
    );
    record(&w, &alice, bad).await;
    let (_, list) = w.call(Ok(&alice), M::GET, BASE, None).await;
    assert_eq!(sqls(&list).len(), 3, "{list}");
    assert_eq!(
        (&list["data"][0]["ok"], &list["data"][0]["error"]),
        (&json!(true), &Value::Null)
    );

    // Nobody else lists it: her admin and another organization's owner see
    // their own (empty) history; through SQL she sees the table empty and
    // the other organization's owner none of her rows.
    record(&w, &bob, "SELECT 'bob' AS who").await;
    let (_, v) = w.call(Ok(&bob), M::GET, BASE, None).await;
    assert_eq!(sqls(&v), ["SELECT 'bob' AS who"]);
    let (_, v) = w.call(Ok(&carol), M::GET, BASE, None).await;
    assert!(sqls(&v).is_empty(), "{v}");
    assert!(w
        .sql(Ok(&alice), "SELECT * FROM query_history")
        .await
        .is_empty());
    assert!(w
        .sql(Ok(&carol), "SELECT * FROM query_history")
        .await
        .is_empty());

    // An API key has no history; a cookie session without its CSRF token
    // cannot write.
    for k in [&read_key, &admin_key] {
        for (m, body) in [
            (M::GET, None),
            (M::POST, Some(json!({"sql": "SELECT 1"}))),
            (M::DELETE, None),
        ] {
            let (s, v) = w.call(Err(k.as_str()), m.clone(), BASE, body).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (403, Some("user_required")),
                "{m}: {v}"
            );
        }
    }
    let r = w
        .http
        .post(w.server.url(BASE))
        .header(COOKIE, alice.header())
        .json(&json!({"sql": "SELECT 'no csrf'"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);

    // Checked input.
    let long_sql = format!("SELECT '{}'", "x".repeat(20_000));
    for (body, code) in [
        (json!({"sql": " \n "}), "invalid_sql"),
        (json!({ "sql": long_sql }), "invalid_sql"),
        (json!({}), "invalid_body"),
        (json!({"sql": "SELECT 1", "user_id": "bob"}), "invalid_body"),
    ] {
        let (s, v) = w.call(Ok(&alice), M::POST, BASE, Some(body.clone())).await;
        assert_eq!((s, v["code"].as_str()), (400, Some(code)), "{body}: {v}");
    }

    // The 50 most recent are kept: 53 more runs drop the oldest, from the
    // lake too.
    for i in 0..53 {
        record(&w, &alice, &format!("SELECT {i} AS n")).await;
    }
    let (_, list) = w.call(Ok(&alice), M::GET, BASE, None).await;
    let want: Vec<String> = (3..53).rev().map(|i| format!("SELECT {i} AS n")).collect();
    assert_eq!(sqls(&list), want);
    assert_eq!(in_lake(&w, &bob, &alice_id).await, want);

    // Cleared: hers are gone, Bob's stay; the clearing is audited.
    let (s, v) = w.call(Ok(&alice), M::DELETE, BASE, None).await;
    assert_eq!(s, 204, "{v}");
    let (_, list) = w.call(Ok(&alice), M::GET, BASE, None).await;
    assert!(sqls(&list).is_empty(), "{list}");
    assert!(in_lake(&w, &bob, &alice_id).await.is_empty());
    let (_, v) = w.call(Ok(&bob), M::GET, BASE, None).await;
    assert_eq!(sqls(&v), ["SELECT 'bob' AS who"]);
    let audited = w
        .sql(
            Err(&admin_key),
            "SELECT action, actor FROM audit_log WHERE action = 'query_history.clear'",
        )
        .await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["actor"], json!(format!("user:{alice_id}")));
}
