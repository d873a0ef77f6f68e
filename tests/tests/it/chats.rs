//! Chats (`/api/v1/chats`) against a live `crow serve` over the demo lake:
//! signed-in users create, continue (plain and streamed), rename and delete
//! their chats; a follow-up ("and on mobile?") is answered with the earlier
//! turn; the messages are stored with their SQL and row counts; only the
//! owner ever sees a chat.

use reqwest::header::COOKIE;
use serde_json::{json, Value};

use crate::ask::{world, World, SHAPES};
use crate::users::{call_as, signed_in, Jar};

const PASSWORD: &str = "chat password 1";

/// Conversion by device on mobile web sessions, written by hand.
const MOBILE_REFERENCE: &str = "SELECT device_type, count(*) AS sessions, \
     count(*) FILTER (WHERE converted) AS orders, \
     round(100.0 * count(*) FILTER (WHERE converted) / count(*), 2) AS conversion_pct \
     FROM sessions WHERE channel = 'web' AND device_type = 'mobile' GROUP BY device_type";

/// A signed-in user of `org`.
async fn user(w: &World, org: &str, email: &str, role: &str) -> Jar {
    signed_in(&w.b, &w.http, &w.server, (org, email, role), PASSWORD).await
}

/// A request as the user of `jar` (with the CSRF token), or with `key`.
async fn call(
    w: &World,
    who: Result<&Jar, &str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call_as(&w.http, &w.server, who, (method, path), body).await
}

/// A question in a chat as server-sent events: (event, data) in order.
async fn ask_streamed(w: &World, jar: &Jar, chat: &str, question: &str) -> Vec<(String, Value)> {
    let r = w
        .http
        .post(w.server.url(&format!("/api/v1/chats/{chat}/messages")))
        .header(COOKIE, jar.header())
        .header("X-CSRF-Token", &jar.csrf)
        .header("Accept", "text/event-stream")
        .json(&json!({ "question": question }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("events");
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_string(), serde_json::from_str(data).expect("data")))
        })
        .collect()
}

use reqwest::Method as M;

#[tokio::test(flavor = "multi_thread")]
async fn chats_follow_up_store_turns_and_stay_with_their_owner() {
    let w = world().await;
    let alice = user(&w, &w.org_a, "alice@demo.example", "analyst").await;
    let bob = user(&w, &w.org_a, "bob@demo.example", "viewer").await;
    let carol = user(&w, &w.org_b, "carol@beta.example", "admin").await;

    // A chat started with its first question: answered, both stored.
    let (s, c) = call(
        &w,
        Ok(&alice),
        M::POST,
        "/api/v1/chats",
        Some(json!({"question": "conversion by device"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let id = c["chat"]["id"].as_str().expect("chat id").to_string();
    assert_eq!(c["chat"]["title"], "conversion by device");
    let by_device = w.sql(&w.key_a, SHAPES[2].2).await;
    assert!(by_device.len() >= 2, "{by_device:?}");
    let reply = &c["messages"][1];
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["rows"], json!(by_device), "{reply}");
    assert_eq!(reply["row_count"], by_device.len());

    // The follow-up uses the earlier turn: alone it is not a question the
    // offline provider answers, in the chat it is conversion on mobile.
    let (s, alone) = w
        .post(
            "/api/v1/ask",
            Some(&w.key_a),
            &json!({"question": "and on mobile?"}),
        )
        .await;
    assert_eq!(s, 422, "{alone}");
    let path = format!("/api/v1/chats/{id}/messages");
    let (s, t) = call(
        &w,
        Ok(&alice),
        M::POST,
        &path,
        Some(json!({"question": "and on mobile?"})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let mobile = w.sql(&w.key_a, MOBILE_REFERENCE).await;
    assert_eq!(mobile.len(), 1, "{mobile:?}");
    let reply = &t["messages"][1];
    assert_eq!(reply["rows"], json!(mobile), "{reply}");
    assert!(
        reply["sql"]
            .as_str()
            .unwrap_or("")
            .contains("device_type = 'mobile'"),
        "{reply}"
    );
    assert_eq!(t["chat"]["message_count"], 4);

    // Streamed: the steps, the answer, then the stored messages.
    let events = ask_streamed(&w, &alice, &id, "and by traffic source?").await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["chat", "sql", "rows", "answer", "message"],
        "{events:?}"
    );
    let sql = events[3].1["sql"].as_str().unwrap_or("").to_string();
    assert!(
        sql.starts_with("SELECT traffic_source") && sql.contains("'mobile'"),
        "{sql}"
    );
    assert_eq!(events[4].1["messages"][1]["rows"], events[3].1["rows"]);

    // A question that cannot be answered is a turn too, saying why.
    let (s, t) = call(
        &w,
        Ok(&alice),
        M::POST,
        &path,
        Some(json!({"question": "what is the meaning of life?"})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        t["messages"][1]["error"]["code"], "question_not_supported",
        "{t}"
    );
    // An empty question is refused and stores nothing.
    let (s, e) = call(
        &w,
        Ok(&alice),
        M::POST,
        &path,
        Some(json!({"question": " "})),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_question")),
        "{e}"
    );

    // Opened: every message in order, answers with their SQL, row counts,
    // columns and timing.
    let (s, open) = call(&w, Ok(&alice), M::GET, &format!("/api/v1/chats/{id}"), None).await;
    assert_eq!(s, 200, "{open}");
    let msgs = open["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 8, "{open}");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], i + 1, "{m}");
        assert_eq!(m["role"], if i % 2 == 0 { "user" } else { "assistant" });
    }
    let questions: Vec<&str> = msgs
        .iter()
        .step_by(2)
        .filter_map(|m| m["question"].as_str())
        .collect();
    assert_eq!(
        questions,
        [
            "conversion by device",
            "and on mobile?",
            "and by traffic source?",
            "what is the meaning of life?"
        ]
    );
    for m in msgs.iter().skip(1).step_by(2).take(3) {
        assert!(
            m["sql"].as_str().is_some_and(|s| s.starts_with("SELECT")),
            "{m}"
        );
        assert_eq!(
            m["row_count"],
            m["rows"].as_array().map(Vec::len).unwrap_or(99),
            "{m}"
        );
        assert_eq!(m["columns"][3], "conversion_pct", "{m}");
        assert_eq!(m["truncated"], false);
        assert!(
            m["duration_ms"].as_i64().is_some() && m["answer"].is_string(),
            "{m}"
        );
        assert!(m["error"].is_null(), "{m}");
    }
    assert_eq!(msgs[1]["row_count"], by_device.len());
    assert_eq!(msgs[3]["row_count"], 1);

    // Listing: newest first, paged.
    let (s, c2) = call(
        &w,
        Ok(&alice),
        M::POST,
        "/api/v1/chats",
        Some(json!({"title": "Second"})),
    )
    .await;
    assert_eq!(s, 201, "{c2}");
    assert_eq!(c2["messages"], json!([]));
    let (s, page) = call(&w, Ok(&alice), M::GET, "/api/v1/chats?limit=1", None).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["data"][0]["title"], "Second");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, page2) = call(
        &w,
        Ok(&alice),
        M::GET,
        &format!("/api/v1/chats?limit=1&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(page2["data"][0]["id"], id.as_str(), "{page2}");
    assert!(page2["next_cursor"].is_null(), "{page2}");

    // Renamed.
    let chat_path = format!("/api/v1/chats/{id}");
    let (s, r) = call(
        &w,
        Ok(&alice),
        M::PATCH,
        &chat_path,
        Some(json!({"title": "Conversion"})),
    )
    .await;
    assert_eq!(
        (s, r["chat"]["title"].as_str()),
        (200, Some("Conversion")),
        "{r}"
    );
    let (s, _) = call(
        &w,
        Ok(&alice),
        M::PATCH,
        &chat_path,
        Some(json!({"title": ""})),
    )
    .await;
    assert_eq!(s, 400);

    // Nobody else: another user of the organization, a user of another
    // organization, as if the chat did not exist; an API key has no chats.
    for (who, jar) in [("bob", &bob), ("carol", &carol)] {
        for (m, body) in [
            (M::GET, None),
            (M::PATCH, Some(json!({"title": "mine"}))),
            (M::DELETE, None),
        ] {
            let (s, e) = call(&w, Ok(jar), m.clone(), &chat_path, body).await;
            assert_eq!(s, 404, "{who} {m}: {e}");
        }
        let (s, e) = call(
            &w,
            Ok(jar),
            M::POST,
            &path,
            Some(json!({"question": "conversion by device"})),
        )
        .await;
        assert_eq!(s, 404, "{who}: {e}");
        let (s, l) = call(&w, Ok(jar), M::GET, "/api/v1/chats", None).await;
        assert_eq!((s, l["data"].clone()), (200, json!([])), "{who}");
    }
    let (s, e) = call(&w, Err(&w.admin_a), M::GET, "/api/v1/chats", None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("user_required")), "{e}");
    let (s, _) = call(&w, Err(&w.key_a), M::GET, &chat_path, None).await;
    assert_eq!(s, 403);

    // Through SQL the rows are admin-only: an admin key sees them, a read
    // key does not, another organization never.
    let count = |rows: Vec<Value>| rows[0]["n"].as_i64().unwrap_or(-1);
    let q = format!("select count(*) as n from chat_messages where chat_id = '{id}'");
    assert_eq!(count(w.sql(&w.admin_a, &q).await), 8);
    assert_eq!(count(w.sql(&w.key_a, &q).await), 0);
    assert_eq!(count(w.sql(&w.key_b, &q).await), 0);
    let stored = w
        .sql(
            &w.admin_a,
            &format!("select seq, sql, row_count from chat_messages where chat_id = '{id}' and role = 'assistant' order by seq"),
        )
        .await;
    assert_eq!(stored[1]["row_count"], 1, "{stored:?}");
    assert!(stored[1]["sql"].as_str().unwrap_or("").contains("'mobile'"));

    // Deleted: gone, with its messages.
    let (s, _) = call(&w, Ok(&alice), M::DELETE, &chat_path, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&w, Ok(&alice), M::GET, &chat_path, None).await;
    assert_eq!(s, 404);
    assert_eq!(count(w.sql(&w.admin_a, &q).await), 0);
    let (_, l) = call(&w, Ok(&alice), M::GET, "/api/v1/chats", None).await;
    assert_eq!(l["data"].as_array().map(Vec::len), Some(1), "{l}");

    // A chat started streamed: the chat first, then the answer, stored.
    let r = w
        .http
        .post(w.server.url("/api/v1/chats"))
        .header(COOKIE, alice.header())
        .header("X-CSRF-Token", &alice.csrf)
        .header("Accept", "text/event-stream")
        .json(&json!({"question": "top 3 products by views"}))
        .send()
        .await
        .expect("post");
    let text = r.text().await.expect("events");
    let first = text.split("\n\n").next().unwrap_or("");
    assert!(first.starts_with("event: chat"), "{text}");
    let (_, l) = call(&w, Ok(&alice), M::GET, "/api/v1/chats?limit=1", None).await;
    assert_eq!(l["data"][0]["title"], "top 3 products by views", "{l}");
    assert_eq!(l["data"][0]["message_count"], 2, "{l}");
    // Signed in by cookie, a change needs the CSRF token.
    let r = w
        .http
        .post(w.server.url("/api/v1/chats"))
        .header(COOKIE, alice.header())
        .json(&json!({"title": "no token"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
}
