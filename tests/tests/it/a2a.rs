//! The A2A agent (`/.well-known/agent-card.json`, JSON-RPC at `/a2a`)
//! against a live `crow serve` on the world of the ask tests (org A: the
//! demo brand; org B: a few marked rows): the official Python `a2a-sdk`
//! client (protocol 1.0), a second server on the same lake, the 0.3 method
//! names over raw JSON-RPC, keys and tenant isolation, the audit log.

use std::time::Duration;

use serde_json::{json, Value};

use crate::ask::{world, World, SHAPES};
use crate::support::{post_json, Server};

/// Run tests/py/a2a_client.py against `base`: (exit code, its JSON).
fn client(base: &str, key: &str, mode: &str, arg: &str) -> (i32, Value) {
    crate::support::python_client("a2a_client.py", &[base, key, mode, arg])
}

/// Numbers as f64 (the SDK's protobuf `Value` carries every number as a
/// double), so rows compare across the wire.
fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

/// The data part of a task's answer artifact.
fn answer_data(task: &Value) -> &Value {
    let parts = task["artifacts"][0]["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("no artifact: {task}"));
    parts
        .iter()
        .map(|p| &p["data"])
        .find(|d| d.is_object())
        .unwrap_or_else(|| panic!("no data part: {task}"))
}

fn status_text(task: &Value) -> String {
    task["status"]["message"]["parts"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// One JSON-RPC call to `/a2a` of `base`: (HTTP status, body).
async fn rpc(
    w: &World,
    base: &str,
    key: Option<&str>,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params});
    post_json(&w.http, &format!("{base}/a2a"), key, &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a2a_agent_with_the_official_client_across_servers_and_tenants() {
    let w = world().await;
    let base = w.server.url("");
    let (id, want) = official_client(&w, &base).await;
    across_servers_and_tenants(&w, &base, &id, &want).await;
    let id = v03_send_get_cancel(&w, &base).await;
    v03_input_stream_and_errors(&w, &base, &id).await;
}

/// The card, then the SDK's flow; returns the answered task's id and rows.
async fn official_client(w: &World, base: &str) -> (String, Vec<Value>) {
    // The card is public and says where and how to call.
    let card: Value = w
        .http
        .get(w.server.url("/.well-known/agent-card.json"))
        .send()
        .await
        .expect("card")
        .json()
        .await
        .expect("card json");
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .expect("skills")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(skills, ["ask", "weekly-report"], "{card}");
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        json!(format!("{base}/a2a"))
    );
    assert_eq!(card["supportedInterfaces"][0]["protocolVersion"], "1.0");
    assert_eq!(
        card["securitySchemes"]["crowApiKey"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );

    let (code, out) = client(base, &w.key_a, "flow", "");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["card"]["name"], "CROW");
    // A question is answered with the rows of its reference SQL.
    let answered = &out["answered"];
    assert_eq!(
        answered["status"]["state"], "TASK_STATE_COMPLETED",
        "{answered}"
    );
    let (question, _, reference) = SHAPES[0];
    let want = w.sql(&w.key_a, reference).await;
    let data = answer_data(answered);
    assert_eq!(norm(&data["rows"]), norm(&json!(want)), "{question}");
    assert!(!status_text(answered).is_empty());
    assert_eq!(answered["history"][0]["role"], "ROLE_USER");
    w.assert_no_b("a2a answer", answered);
    // The follow-up is read with the question before it (same context);
    // a question the offline provider has no shape for is rejected, saying
    // a real model is needed.
    let follow = &out["follow_up"];
    assert_eq!(follow["contextId"], answered["contextId"]);
    assert_eq!(
        follow["status"]["state"], "TASK_STATE_COMPLETED",
        "{follow}"
    );
    let mobile = w
        .sql(
            &w.key_a,
            "SELECT product_id, max(product_name) AS name, count(*) AS views FROM raw_web_events \
             WHERE event = 'Product Viewed' AND device_type = 'mobile' AND product_id IS NOT NULL \
             GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 5",
        )
        .await;
    assert!(!mobile.is_empty() && mobile != want);
    assert_eq!(norm(&answer_data(follow)["rows"]), norm(&json!(mobile)));
    let t = &out["unsupported"];
    assert_eq!(t["status"]["state"], "TASK_STATE_REJECTED", "{t}");
    assert!(status_text(t).contains("real model"), "{t}");
    // Streaming: the task, a status per query, the artifact, the end.
    let events = out["stream_events"].as_array().expect("events");
    assert!(events[0]["task"]["id"].is_string(), "{events:?}");
    assert!(events.iter().any(
        |e| e["statusUpdate"]["status"]["message"]["parts"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Running: SELECT"))
    ));
    assert!(events
        .iter()
        .any(|e| e["artifactUpdate"]["artifact"].is_object()));
    let last = events.last().expect("last event");
    assert_eq!(
        last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{last}"
    );
    // A task waiting for input can be canceled; an answered one cannot.
    assert_eq!(
        out["waiting"]["status"]["state"],
        "TASK_STATE_INPUT_REQUIRED"
    );
    assert_eq!(out["canceled"]["status"]["state"], "TASK_STATE_CANCELED");
    assert_eq!(out["canceled"]["id"], out["waiting"]["id"]);
    let refused = out["cancel_answered"].as_str().unwrap_or("");
    assert!(refused.contains("TaskNotCancelable"), "{refused}");
    let listed = out["listed"]["tasks"].as_array().expect("tasks");
    assert_eq!(listed.len(), 5, "{}", out["listed"]);

    let id = answered["id"].as_str().expect("task id").to_string();
    (id, want)
}

/// A second server on the same lake, org B's key, bad keys, the rows of
/// `a2a_tasks` and the audit log.
async fn across_servers_and_tenants(w: &World, base: &str, id: &str, want: &[Value]) {
    // A second server on the same lake reads the task back.
    let wal2 = tempfile::tempdir().expect("wal");
    let second = Server::start(&w.b, wal2.path(), &[]);
    let (code, got) = client(&second.url(""), &w.key_a, "get", id);
    assert_eq!(code, 0, "{got}");
    assert_eq!(got["task"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(norm(&answer_data(&got["task"])["rows"]), norm(&json!(want)));

    // Org B's key finds no task of org A's and lists none.
    let (code, got) = client(&second.url(""), &w.key_b, "get", id);
    assert_eq!(code, 3, "{got}");
    assert!(
        got["error"].as_str().unwrap_or("").contains("TaskNotFound"),
        "{got}"
    );
    let (_, listed_b) = rpc(w, base, Some(&w.key_b), "ListTasks", json!({})).await;
    assert_eq!(listed_b["result"]["tasks"], json!([]), "{listed_b}");
    // Bad and missing keys are refused.
    for key in ["ck_not_a_real_key", ""] {
        let (code, got) = client(base, key, "send", "top 5 products by views");
        assert_eq!(code, 3, "{got}");
        assert!(got["error"].as_str().unwrap_or("").contains("401"), "{got}");
    }
    // Tasks are admin-only rows of a2a_tasks; every message and cancel is audited.
    assert_eq!(
        w.sql(&w.key_a, "select count(*) as n from a2a_tasks").await[0]["n"],
        0
    );
    assert_eq!(
        w.sql(&w.admin_a, "select count(*) as n from a2a_tasks")
            .await[0]["n"],
        5
    );
    let audit = w
        .sql(
            &w.admin_a,
            "select action, count(*) as n from audit_log where action like 'a2a.%' group by 1 order by 1",
        )
        .await;
    assert_eq!(
        audit,
        [
            json!({"action": "a2a.cancel", "n": 1}),
            json!({"action": "a2a.message", "n": 4})
        ]
    );
}

/// A 0.3 message.
fn msg(text: &str, task: Option<&str>) -> Value {
    let mut m = json!({"kind": "message", "messageId": "m1", "role": "user",
                       "parts": [{"kind": "text", "text": text}]});
    if let Some(t) = task {
        m["taskId"] = json!(t);
    }
    m
}

/// The 0.3 names over raw JSON-RPC: `kind` discriminators, lower-case
/// states, results not wrapped; a non-blocking send polled to the end; a
/// task waiting for input continued; the JSON-RPC errors.
async fn v03_send_get_cancel(w: &World, base: &str) -> String {
    let key = Some(w.key_a.as_str());
    let (s, r) = rpc(
        w,
        base,
        key,
        "message/send",
        json!({"message": msg("conversion by device", None)}),
    )
    .await;
    assert_eq!(s, 200);
    let t = &r["result"];
    assert_eq!(t["kind"], "task", "{r}");
    assert_eq!(t["status"]["state"], "completed", "{r}");
    assert_eq!(t["history"][0]["role"], "user");
    assert_eq!(t["history"][1]["role"], "agent");
    let kinds: Vec<&str> = t["artifacts"][0]["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["text", "data"]);
    let want = w.sql(&w.key_a, SHAPES[2].2).await;
    assert_eq!(t["artifacts"][0]["parts"][1]["data"]["rows"], json!(want));
    let id = t["id"].as_str().expect("id").to_string();
    let (_, got) = rpc(
        w,
        base,
        key,
        "tasks/get",
        json!({"id": id, "historyLength": 1}),
    )
    .await;
    assert_eq!(got["result"]["id"], json!(id));
    assert_eq!(got["result"]["history"].as_array().map(Vec::len), Some(1));
    let (_, c) = rpc(w, base, key, "tasks/cancel", json!({"id": id})).await;
    assert_eq!(c["error"]["code"], -32002, "{c}");

    // Not blocking: the working task at once, then polled to its end.
    let (_, r) = rpc(w, base, key, "message/send",
        json!({"message": msg("best selling products", None), "configuration": {"blocking": false}})).await;
    assert_eq!(r["result"]["status"]["state"], "working", "{r}");
    let id2 = r["result"]["id"].as_str().expect("id").to_string();
    assert_eq!(settled(w, base, &id2).await, "completed");

    // A cancel racing a background answer: whichever lands first stands.
    // A cancel that succeeded is never overwritten by the answer, and a
    // refused one means the task had ended.
    for _ in 0..3 {
        let (_, r) = rpc(w, base, key, "message/send",
            json!({"message": msg("best selling products", None), "configuration": {"blocking": false}})).await;
        let id3 = r["result"]["id"].as_str().expect("id").to_string();
        let (_, c) = rpc(w, base, key, "tasks/cancel", json!({"id": id3})).await;
        let canceled = c["result"]["status"]["state"] == "canceled";
        assert!(canceled || c["error"]["code"] == -32002, "{c}");
        let state = settled(w, base, &id3).await;
        if canceled {
            // Past the answer's time: still canceled.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (_, g) = rpc(w, base, key, "tasks/get", json!({"id": id3})).await;
            assert_eq!(g["result"]["status"]["state"], "canceled", "{g}");
        } else {
            assert_eq!(state, "completed", "a refused cancel: the task had ended");
        }
    }
    id
}

/// Org A's task `id` polled (0.3 `tasks/get`) until it is no longer
/// working, for up to 30 s: its state.
async fn settled(w: &World, base: &str, id: &str) -> String {
    let mut state = String::new();
    for _ in 0..120 {
        let (_, g) = rpc(w, base, Some(&w.key_a), "tasks/get", json!({"id": id})).await;
        state = g["result"]["status"]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state != "working" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    state
}

/// 0.3: a task waiting for input continued, streaming, JSON-RPC errors.
async fn v03_input_stream_and_errors(w: &World, base: &str, id: &str) {
    let key = Some(w.key_a.as_str());
    // A message without text waits for input; the next message continues it.
    let (_, r) = rpc(
        w,
        base,
        key,
        "message/send",
        json!({"message": msg(" ", None)}),
    )
    .await;
    assert_eq!(r["result"]["status"]["state"], "input-required", "{r}");
    let id3 = r["result"]["id"].as_str().expect("id").to_string();
    let (_, r) = rpc(
        w,
        base,
        key,
        "message/send",
        json!({"message": msg("weekly report", Some(&id3))}),
    )
    .await;
    assert_eq!(r["result"]["id"], json!(id3));
    assert_eq!(r["result"]["status"]["state"], "completed", "{r}");
    let (_, r) = rpc(
        w,
        base,
        key,
        "message/send",
        json!({"message": msg("again", Some(&id3))}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32004, "{r}");

    // Streaming: server-sent JSON-RPC responses, the last one final.
    let text = w
        .http
        .post(format!("{base}/a2a"))
        .bearer_auth(&w.key_a)
        .json(
            &json!({"jsonrpc": "2.0", "id": 9, "method": "message/stream",
                      "params": {"message": msg("Top 5 products by views", None)}}),
        )
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("events");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event"))
        .collect();
    assert_eq!(events[0]["result"]["kind"], "task", "{text}");
    let last = &events.last().expect("events")["result"];
    assert_eq!(
        (last["kind"].as_str(), last["final"].as_bool()),
        (Some("status-update"), Some(true))
    );
    assert_eq!(last["status"]["state"], "completed");

    // Errors: another org's task, an unknown method, bad params, bad JSON, no key.
    let kb = Some(w.key_b.as_str());
    let (_, r) = rpc(w, base, kb, "tasks/get", json!({"id": id})).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    let (_, r) = rpc(w, base, kb, "tasks/cancel", json!({"id": id3})).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    let (_, r) = rpc(w, base, key, "tasks/resubscribe", json!({"id": id})).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let (_, r) = rpc(w, base, key, "GetTask", json!({})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let long = "x".repeat(2001);
    let (_, r) = rpc(
        w,
        base,
        key,
        "message/send",
        json!({"message": msg(&long, None)}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = w
        .http
        .post(format!("{base}/a2a"))
        .bearer_auth(&w.key_a)
        .body("{not json")
        .send()
        .await
        .expect("bad json");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let (s, _) = rpc(w, base, None, "tasks/get", json!({"id": id})).await;
    assert_eq!(s, 401);
    let r: Value = w
        .http
        .post(format!("{base}/a2a"))
        .bearer_auth(&w.key_a)
        .header("A2A-Version", "9.9")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": id}}))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    assert_eq!(r["error"]["code"], -32009, "{r}");
    // A page of another site may not drive the agent with a key it holds;
    // the server's own origin may.
    for (origin, want) in [("http://evil.example", 403), (base, 200)] {
        let r = w
            .http
            .post(format!("{base}/a2a"))
            .bearer_auth(&w.key_a)
            .header("Origin", origin)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": id}}))
            .send()
            .await
            .expect("origin");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, want, "Origin {origin}: {body}");
        if want == 403 {
            assert!(body.contains("forbidden_origin"), "{body}");
        }
    }
}
