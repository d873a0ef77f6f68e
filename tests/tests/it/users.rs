//! People over real HTTP: an invitation sets a password once, sign-in sets
//! an HttpOnly session cookie, cookie mutations need the CSRF token, wrong
//! passwords and unknown e-mails get the same answer, repeated failures are
//! throttled, a disabled user or a revoked session is refused on two
//! servers within the cache bound, admin-only tables stay empty for an
//! analyst, and every step is in the audit log.

use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{json, Value};

use crate::support::{Backend, Server};

/// A browser's cookie jar, reduced to what CROW sets.
#[derive(Default, Clone)]
pub struct Jar {
    pub session: String,
    pub csrf: String,
}

impl Jar {
    pub(crate) fn header(&self) -> String {
        format!("crow_session={}; crow_csrf={}", self.session, self.csrf)
    }
}

pub async fn login(
    http: &reqwest::Client,
    s: &Server,
    email: &str,
    password: &str,
) -> (u16, Value, Jar) {
    let r = http
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    let status = r.status().as_u16();
    let mut jar = Jar::default();
    for c in r.headers().get_all(SET_COOKIE) {
        let c = c.to_str().expect("cookie");
        if let Some(v) = c.strip_prefix("crow_session=") {
            assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
            jar.session = v.split(';').next().unwrap_or("").to_string();
        }
        if let Some(v) = c.strip_prefix("crow_csrf=") {
            jar.csrf = v.split(';').next().unwrap_or("").to_string();
        }
    }
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, jar)
}

async fn get(http: &reqwest::Client, s: &Server, path: &str, jar: &Jar) -> (u16, Value) {
    let r = http
        .get(s.url(path))
        .header(COOKIE, jar.header())
        .send()
        .await
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn sql(http: &reqwest::Client, s: &Server, jar: &Jar, csrf: bool, q: &str) -> (u16, Value) {
    let mut r = http
        .post(s.url("/api/v1/sql"))
        .header(COOKIE, jar.header())
        .json(&json!({"sql": q}));
    if csrf {
        r = r.header("X-CSRF-Token", &jar.csrf);
    }
    let r = r.send().await.expect("sql");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `crow users create` of `email` in `org` with `role`, the password given
/// on standard input; the created user as JSON.
pub fn create_user(b: &Backend, org: &str, email: &str, role: &str, password: &str) -> Value {
    crow_stdin(
        b,
        &[
            "users",
            "create",
            "--org",
            org,
            "--email",
            email,
            "--role",
            role,
            "--password-stdin",
            "--format",
            "json",
        ],
        &format!("{password}\n"),
    )
}

/// A new `role` user of `org` (see [`create_user`]), signed in: its jar.
pub(crate) async fn signed_in(
    b: &Backend,
    http: &reqwest::Client,
    server: &Server,
    (org, email, role): (&str, &str, &str),
    password: &str,
) -> Jar {
    create_user(b, org, email, role, password);
    let (s, body, jar) = login(http, server, email, password).await;
    assert_eq!(s, 200, "{body}");
    jar
}

/// A request as the user of `jar` (with the CSRF token), or with the API
/// key `key`: the status and the body (as a JSON string when it is not
/// JSON).
pub(crate) async fn call_as(
    http: &reqwest::Client,
    server: &Server,
    who: Result<&Jar, &str>,
    (method, path): (reqwest::Method, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http.request(method, server.url(path));
    r = match who {
        Ok(jar) => r
            .header(reqwest::header::COOKIE, jar.header())
            .header("X-CSRF-Token", &jar.csrf),
        Err(key) => r.bearer_auth(key),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    crate::support::answer(r.send().await.expect("request")).await
}

pub fn crow_stdin(b: &Backend, args: &[&str], stdin: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::crow_bin())
        .args(["--lake", &b.uri])
        .args(args)
        // The backend's settings (an S3 lake's endpoint and credentials).
        .envs(b.env.iter().map(|(k, v)| (k, v)))
        .env_remove("CROW_CONFIG")
        .env_remove("CROW_LAKE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("crow");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("crow");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_sign_in_csrf_throttle_disable_and_audit() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Acme"]);
    let invited = b.crow_json(&[
        "users",
        "create",
        "--org",
        "Acme",
        "--email",
        "Ann@Example.com",
        "--role",
        "analyst",
    ]);
    assert_eq!(invited["status"], "invited");
    assert_eq!(invited["email"], "ann@example.com");
    let token = invited["invitation_token"]
        .as_str()
        .expect("token")
        .to_string();
    let owner = create_user(
        &b,
        "Acme",
        "olga@example.com",
        "owner",
        "owner password 123",
    );
    assert_eq!(owner["status"], "active");
    assert_eq!(owner["invitation_token"], Value::Null);
    let listed = b.crow_json(&["users", "list", "--org", "Acme"]);
    assert!(
        listed
            .as_array()
            .expect("rows")
            .iter()
            .all(|u| u.get("password_hash").is_none()),
        "{listed}"
    );

    let env = [("CROW_API_KEY_CACHE_SECONDS", "1")];
    let wal_a = tempfile::tempdir().expect("wal");
    let wal_b = tempfile::tempdir().expect("wal");
    let a = Server::start(&b, wal_a.path(), &env);
    let other = Server::start(&b, wal_b.path(), &env);
    let http = reqwest::Client::new();

    // The invitation sets the password once.
    let accept = |t: String, p: &'static str| {
        let http = http.clone();
        let url = a.url("/api/v1/auth/accept");
        async move {
            let r = http
                .post(url)
                .json(&json!({"token": t, "password": p}))
                .send()
                .await
                .expect("accept");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (st, body) = accept(token.clone(), "short").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_password")),
        "{body}"
    );
    let (st, body) = accept(token.clone(), "analyst password 1").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["user"]["status"], "active");
    let (st, body) = accept(token.clone(), "another password 2").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_token")),
        "a token works once: {body}"
    );
    let (st, _) = accept("inv_made_up".into(), "another password 2").await;
    assert_eq!(st, 400);
    // A token past its expiry is refused like a used one. (Time passes in
    // the lake: the token's `expires_at` is moved 25 hours back.)
    let late = b.crow_json(&[
        "users",
        "create",
        "--org",
        "Acme",
        "--email",
        "late@example.com",
        "--role",
        "viewer",
    ]);
    let late = late["invitation_token"]
        .as_str()
        .expect("token")
        .to_string();
    let lake = b.lake().await;
    let (_, aged) = lake
        .sql(
            "SELECT * REPLACE (expires_at - INTERVAL '25 hours' AS expires_at) FROM user_tokens \
             WHERE user_id = (SELECT user_id FROM users WHERE email = 'late@example.com')",
        )
        .await
        .expect("aged token");
    lake.merge("user_tokens", aged, &["token_id"])
        .await
        .expect("merge");
    let (st, body) = accept(late, "late password 123").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_token")),
        "an expired invitation: {body}"
    );

    // Wrong password and unknown e-mail: the same answer.
    let (st1, wrong, _) = login(&http, &a, "ann@example.com", "not the password").await;
    let (st2, unknown, _) = login(&http, &a, "nobody@example.com", "not the password").await;
    assert_eq!((st1, st2), (401, 401));
    assert_eq!(
        wrong, unknown,
        "the answer does not tell whether the e-mail exists"
    );

    // Sign in, me, SQL with and without the CSRF token.
    let (st, body, jar) = login(&http, &a, "ANN@example.com", "analyst password 1").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["csrf_token"], jar.csrf.as_str());
    let (st, me) = get(&http, &a, "/api/v1/auth/me", &jar).await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["user"]["role"], "analyst");
    assert_eq!(me["organization"]["name"], "Acme");
    let (st, body) = sql(&http, &a, &jar, false, "select 1 as x").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("csrf_token_missing")),
        "{body}"
    );
    // Another Authorization scheme does not excuse the token.
    let r = http
        .post(a.url("/api/v1/sql"))
        .header(COOKIE, jar.header())
        .header("Authorization", "Basic eDp5")
        .json(&json!({"sql": "select 1 as x"}))
        .send()
        .await
        .expect("sql");
    assert_eq!(
        r.status().as_u16(),
        403,
        "a cookie with a Basic header still needs the CSRF token"
    );
    let forged = Jar {
        csrf: "0".repeat(32),
        ..jar.clone()
    };
    let (st, _) = sql(&http, &a, &forged, true, "select 1 as x").await;
    assert_eq!(st, 403, "a token of another session is refused");
    let (st, body) = sql(&http, &a, &jar, true, "select 1 as x").await;
    assert_eq!(st, 200, "{body}");
    // The other server knows the session too.
    let (st, _) = get(&http, &other, "/api/v1/auth/me", &jar).await;
    assert_eq!(st, 200);
    // An analyst sees no users, sessions or audit rows.
    for t in ["users", "user_sessions", "audit_log"] {
        let (st, body) = sql(
            &http,
            &a,
            &jar,
            true,
            &format!("select count(*) as n from {t}"),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body, json!([{"n": 0}]), "{t} is for admins");
    }

    // Throttling: five failures for one e-mail, then 429 with Retry-After,
    // even with the right password: five attempts at once, then one a
    // minute.
    let started = Instant::now();
    for _ in 0..6 {
        login(&http, &a, "olga@example.com", "wrong password!").await;
    }
    let r = http
        .post(a.url("/api/v1/auth/login"))
        .json(&json!({"email": "olga@example.com", "password": "owner password 123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 429);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let want = crate::support::retry_after_range(60.0, started.elapsed());
    assert!(
        retry_after.is_some_and(|s| want.contains(&s)),
        "{retry_after:?}, not in {want:?}"
    );
    let problem: Value = r.json().await.expect("problem");
    assert_eq!(problem["code"], "too_many_attempts", "{problem}");
    // Another server has its own buckets; the owner signs in there.
    let (st, _, owner_jar) = login(&http, &other, "olga@example.com", "owner password 123").await;
    assert_eq!(st, 200);
    let (st, body) = sql(
        &http,
        &other,
        &owner_jar,
        true,
        "select action, outcome, actor from audit_log order by at",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let actions: Vec<String> = body
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["action"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "user.create:ok",
        "user.password_set:ok",
        "auth.login:failed",
        "auth.login:ok",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }

    // GET /api/v1/audit: for admins; an analyst is refused with a stable code.
    let (st, page) = get(&http, &other, "/api/v1/audit?limit=2", &owner_jar).await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2), "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    let (st, body) = get(&http, &a, "/api/v1/audit", &jar).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("insufficient_role")),
        "{body}"
    );

    // Disabled: refused on both servers within the cache bound.
    b.crow_json(&["users", "disable", "ann@example.com"]);
    let start = Instant::now();
    for s in [&a, &other] {
        loop {
            let (st, _) = get(&http, s, "/api/v1/auth/me", &jar).await;
            if st == 401 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "still {st}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let (st, _, _) = login(&http, &other, "ann@example.com", "analyst password 1").await;
    assert_eq!(st, 401, "a disabled user cannot sign in");

    // A sign-in from a new device is a notification for that user; they
    // read and mark it over the API.
    let r = http
        .post(other.url("/api/v1/auth/login"))
        .header("User-Agent", "A new browser/1.0")
        .json(&json!({"email": "olga@example.com", "password": "owner password 123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 200);
    let (st, page) = get(&http, &other, "/api/v1/notifications", &owner_jar).await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["unread"], 1, "{page}");
    assert_eq!(page["data"][0]["kind"], "new_sign_in", "{page}");
    assert!(
        page["data"][0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("A new browser/1.0")),
        "{page}"
    );
    let id = page["data"][0]["id"].as_str().expect("id").to_string();
    let r = http
        .post(other.url(&format!("/api/v1/notifications/{id}/read")))
        .header(COOKIE, owner_jar.header())
        .header("X-CSRF-Token", &owner_jar.csrf)
        .send()
        .await
        .expect("read");
    assert_eq!(r.status().as_u16(), 200);
    let (_, page) = get(&http, &other, "/api/v1/notifications", &owner_jar).await;
    assert_eq!(page["unread"], 0, "{page}");
    assert!(page["data"][0]["read_at"].is_string(), "{page}");

    // Logout ends the session (with the CSRF token).
    let r = http
        .post(other.url("/api/v1/auth/logout"))
        .header(COOKIE, owner_jar.header())
        .header("X-CSRF-Token", &owner_jar.csrf)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 204);
    let (st, _) = get(&http, &other, "/api/v1/auth/me", &owner_jar).await;
    assert_eq!(st, 401);
    let sessions = b.crow_json(&["users", "sessions", "olga@example.com"]);
    let status_of = |ua: Value| {
        sessions
            .as_array()
            .expect("rows")
            .iter()
            .find(|s| s["user_agent"] == ua)
            .map(|s| s["status"].clone())
    };
    assert_eq!(status_of(Value::Null), Some(json!("revoked")), "{sessions}");
    assert_eq!(
        status_of(json!("A new browser/1.0")),
        Some(json!("active")),
        "{sessions}"
    );
}

/// Who calls, in the permission matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    ReadKey,
    ExportKey,
    AdminKey,
    Viewer,
    Analyst,
    Admin,
    Owner,
}

/// What an endpoint answers a caller: let through (any answer but 401 and
/// 403), 401, or 403 with a stable code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
}

fn data(w: Who) -> Expect {
    if w == Who::Nobody {
        Expect::Unauthorized
    } else {
        Expect::Allowed
    }
}

fn export(w: Who) -> Expect {
    match w {
        Who::Nobody => Expect::Unauthorized,
        Who::ReadKey | Who::Viewer => Expect::Forbidden,
        _ => Expect::Allowed,
    }
}

fn admin(w: Who) -> Expect {
    match w {
        Who::Nobody => Expect::Unauthorized,
        Who::AdminKey | Who::Admin | Who::Owner => Expect::Allowed,
        _ => Expect::Forbidden,
    }
}

fn user_only(w: Who) -> Expect {
    match w {
        Who::Viewer | Who::Analyst | Who::Admin | Who::Owner => Expect::Allowed,
        _ => Expect::Unauthorized,
    }
}

/// Chats, saved queries and query history: any signed-in user; a key is authenticated but
/// owns none (403 `user_required`).
fn chats(w: Who) -> Expect {
    match w {
        Who::Nobody => Expect::Unauthorized,
        Who::ReadKey | Who::ExportKey | Who::AdminKey => Expect::Forbidden,
        _ => Expect::Allowed,
    }
}

fn public(_: Who) -> Expect {
    Expect::Allowed
}

/// The documented permission matrix (README, "Roles and permissions"),
/// endpoint by endpoint. Every path and method of the OpenAPI document
/// must have an entry: a new endpoint without one fails this test.
type Rule = fn(Who) -> Expect;

const MATRIX: &[(&str, &str, Rule)] = &[
    ("post", "/api/v1/sql", data),
    ("post", "/api/v1/ask", data),
    ("get", "/api/v1/organization", data),
    ("get", "/api/v1/products", data),
    ("get", "/api/v1/sessions", data),
    ("get", "/api/v1/interactions", data),
    ("get", "/api/v1/insights", data),
    ("get", "/api/v1/insights/days", data),
    ("get", "/api/v1/invoice", data),
    ("get", "/api/v1/usage", data),
    ("get", "/api/v1/stories", data),
    ("get", "/api/v1/search", data),
    ("get", "/api/v1/audit", admin),
    ("post", "/api/v1/exports", export),
    ("get", "/api/v1/exports/{id}", export),
    ("delete", "/api/v1/exports/{id}", export),
    ("get", "/api/v1/exports/{id}/download", export),
    ("post", "/api/v1/auth/login", public),
    ("post", "/api/v1/auth/accept", public),
    ("get", "/api/v1/auth/me", user_only),
    ("get", "/api/v1/auth/sessions", user_only),
    ("post", "/api/v1/auth/sessions/{id}/revoke", user_only),
    ("get", "/api/v1/notifications", user_only),
    ("post", "/api/v1/notifications/{id}/read", user_only),
    ("get", "/api/v1/chats", chats),
    ("post", "/api/v1/chats", chats),
    ("get", "/api/v1/chats/{id}", chats),
    ("patch", "/api/v1/chats/{id}", chats),
    ("delete", "/api/v1/chats/{id}", chats),
    ("post", "/api/v1/chats/{id}/messages", chats),
    ("get", "/api/v1/saved-queries", chats),
    ("post", "/api/v1/saved-queries", chats),
    ("get", "/api/v1/saved-queries/{id}", chats),
    ("patch", "/api/v1/saved-queries/{id}", chats),
    ("delete", "/api/v1/saved-queries/{id}", chats),
    ("get", "/api/v1/query-history", chats),
    ("post", "/api/v1/query-history", chats),
    ("delete", "/api/v1/query-history", chats),
    ("get", "/api/v1/health", public),
    ("get", "/api/v1/openapi.json", public),
    ("patch", "/api/v1/organization", admin),
    ("get", "/api/v1/users", admin),
    ("post", "/api/v1/users", admin),
    ("patch", "/api/v1/users/{id}", admin),
    ("post", "/api/v1/users/{id}/reset", admin),
    ("get", "/api/v1/keys", admin),
    ("post", "/api/v1/keys", admin),
    ("post", "/api/v1/keys/{id}/revoke", admin),
    ("get", "/api/v1/organization/write-key", admin),
    ("post", "/api/v1/organization/write-key/rotate", admin),
    ("get", "/api/v1/social/sources", data),
    ("post", "/api/v1/social/sources", admin),
    ("delete", "/api/v1/social/sources/{id}", admin),
    ("get", "/api/v1/cameras", data),
    ("post", "/api/v1/cameras", admin),
    ("delete", "/api/v1/cameras/{id}", admin),
    // Last: it ends the caller's session.
    ("post", "/api/v1/auth/logout", user_only),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_and_scope_as_documented() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Matrix"]);
    let wal = tempfile::tempdir().expect("wal");
    // Each caller makes one request per entry, more than the default burst
    // of a key's rate limit (50): rate limits are not what this checks.
    let s = Server::start(&b, wal.path(), &[("CROW_API_RATE_LIMIT_BURST", "1000")]);
    let http = reqwest::Client::new();

    // The matrix covers the whole API as documented.
    let doc: Value = http
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.push(("get".into(), "/api/v1/openapi.json".into()));
    for (m, p) in &documented {
        assert!(
            MATRIX.iter().any(|(mm, pp, _)| mm == m && pp == p),
            "{} {p} has no entry in the permission matrix",
            m.to_uppercase()
        );
    }

    let mut callers: Vec<(Who, Option<String>, Option<Jar>)> = vec![(Who::Nobody, None, None)];
    for (who, scope) in [
        (Who::ReadKey, "read"),
        (Who::ExportKey, "export"),
        (Who::AdminKey, "admin"),
    ] {
        let k = b.crow_json(&["keys", "create", "--org", "Matrix", "--scope", scope]);
        callers.push((
            who,
            Some(k["secret"].as_str().expect("secret").to_string()),
            None,
        ));
    }
    for (who, role) in [
        (Who::Viewer, "viewer"),
        (Who::Analyst, "analyst"),
        (Who::Admin, "admin"),
        (Who::Owner, "owner"),
    ] {
        let email = format!("{role}@matrix.example");
        create_user(&b, "Matrix", &email, role, "matrix password 1");
        let (st, body, jar) = login(&http, &s, &email, "matrix password 1").await;
        assert_eq!(st, 200, "{body}");
        callers.push((who, None, Some(jar)));
    }

    let mut wrong = Vec::new();
    for (who, key, jar) in &callers {
        for (method, path, rule) in MATRIX {
            let url = s.url(&path.replace("{id}", "id_that_does_not_exist"));
            let mut req = match *method {
                "get" => http.get(&url),
                "delete" => http.delete(&url),
                "patch" => http.patch(&url),
                _ => http.post(&url),
            };
            if *method == "post" || *method == "patch" {
                let body = match *path {
                    "/api/v1/sql" => json!({"sql": "select 1 as x"}),
                    "/api/v1/ask" => json!({"question": "conversion by device"}),
                    "/api/v1/exports" => json!({"table": "products", "format": "csv"}),
                    _ => json!({}),
                };
                req = req.json(&body);
            }
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            if let Some(j) = jar {
                req = req
                    .header(COOKIE, j.header())
                    .header("X-CSRF-Token", &j.csrf);
            }
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let got = match status {
                401 => Expect::Unauthorized,
                403 => Expect::Forbidden,
                _ => Expect::Allowed,
            };
            let want = rule(*who);
            if got != want {
                wrong.push(format!(
                    "{who:?} {} {path}: {status} {body}, expected {want:?}",
                    method.to_uppercase()
                ));
            }
            if got == Expect::Forbidden {
                let code = body["code"].as_str().unwrap_or("");
                if !["insufficient_scope", "insufficient_role", "user_required"].contains(&code) {
                    wrong.push(format!("{who:?} {path}: 403 without a stable code: {body}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Each export started is in the audit log, with who started it.
    let audited = b.crow_json(&[
        "sql",
        "select actor from audit_log where action = 'export.create' order by actor",
    ]);
    let actors: Vec<&str> = audited
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r["actor"]
                .as_str()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        actors,
        ["key", "key", "user", "user", "user"],
        "export and admin keys, analyst, admin and owner: {audited}"
    );
}

/// A webhook receiver: answers 500 to the first request, 200 after, and
/// keeps what it received (headers lower-cased, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, String)>>>;

fn receiver() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = Vec::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.trim().split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            keep.lock()
                .expect("lock")
                .push((headers, String::from_utf8_lossy(&body).to_string()));
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_webhook_signed_and_retried() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Hooked"]);
    let (url, got) = receiver();
    let hook = b.crow_json(&["orgs", "webhook", "Hooked", "--url", &url]);
    let secret = hook["webhook_secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    create_user(&b, "Hooked", "h@example.com", "owner", "hooked password 1");
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &[]);
    let http = reqwest::Client::new();
    // The secret is never readable through the API, even by an admin key.
    let admin = b.crow_json(&["keys", "create", "--org", "Hooked", "--scope", "admin"]);
    let shown: Value = crate::support::sql_over_http(
        &http,
        &s,
        admin["secret"].as_str().expect("secret"),
        "select * from organizations",
    )
    .await;
    assert!(shown[0]["webhook_url"].is_string(), "{shown}");
    assert!(
        shown[0].get("webhook_secret").is_none() && !shown.to_string().contains(&secret),
        "{shown}"
    );
    for ua in ["first browser", "second browser"] {
        let r = http
            .post(s.url("/api/v1/auth/login"))
            .header("User-Agent", ua)
            .json(&json!({"email": "h@example.com", "password": "hooked password 1"}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 200);
    }
    // Delivered on the second attempt (the receiver failed the first).
    let start = Instant::now();
    while got.lock().expect("lock").len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no retry arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (headers, body) = got.lock().expect("lock")[1].clone();
    let header = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let v: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["kind"], "new_sign_in", "{v}");
    // Verified independently: Python's hmac over "<timestamp>.<body>".
    let check = std::process::Command::new(crate::support::python())
        .args([
            "-c",
            "import hmac,hashlib,sys; print('sha256=' + hmac.new(sys.argv[1].encode(), (sys.argv[2] + '.' + sys.argv[3]).encode(), hashlib.sha256).hexdigest())",
            &secret,
            &header("x-crow-timestamp"),
            &body,
        ])
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        header("x-crow-signature"),
        "the signature verifies with the secret"
    );
    // The delivery is on record, with its attempts.
    let start = Instant::now();
    loop {
        let rows = b.crow_json(&[
            "sql",
            "select outcome, detail from audit_log where action = 'webhook.deliver'",
        ]);
        if let Some(r) = rows.as_array().and_then(|r| r.first()) {
            assert_eq!(r["outcome"], "ok", "{rows}");
            let d: Value =
                serde_json::from_str(r["detail"].as_str().unwrap_or("{}")).expect("detail");
            assert_eq!(d["attempts"], 2, "{d}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no delivery record"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An export started by a signed-in user tells that user when it is ready
/// (linked to its status); one started with an API key tells no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_export_notifies_the_user_who_started_it() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Exporters"]);
    create_user(
        &b,
        "Exporters",
        "e@example.com",
        "analyst",
        "export password 1",
    );
    let key = b.crow_json(&["keys", "create", "--org", "Exporters", "--scope", "export"]);
    let key = key["secret"].as_str().expect("secret").to_string();
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &[]);
    let http = reqwest::Client::new();
    let (st, _, jar) = login(&http, &s, "e@example.com", "export password 1").await;
    assert_eq!(st, 200);
    let body = json!({"table": "products", "format": "csv"});
    let r = http
        .post(s.url("/api/v1/exports"))
        .header(COOKIE, jar.header())
        .header("X-CSRF-Token", &jar.csrf)
        .json(&body)
        .send()
        .await
        .expect("export");
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let by_key = http
        .post(s.url("/api/v1/exports"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .expect("export");
    assert_eq!(by_key.status().as_u16(), 202);
    let by_key = by_key.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let start = Instant::now();
    let ready = loop {
        let (st, list) = get(&http, &s, "/api/v1/notifications", &jar).await;
        assert_eq!(st, 200, "{list}");
        let found = list["data"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["kind"] == "export_ready").cloned());
        if let Some(n) = found {
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no export_ready notification: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let link = format!("/api/v1/exports/{id}");
    assert_eq!(ready["link"], link.as_str(), "{ready}");
    let (st, status) = get(&http, &s, &link, &jar).await;
    assert_eq!(
        (st, status["status"].as_str()),
        (200, Some("succeeded")),
        "{status}"
    );
    // The key's export ended too, and no one was told of it.
    let start = Instant::now();
    loop {
        let (_, st) = get(&http, &s, &format!("/api/v1/exports/{by_key}"), &jar).await;
        if st["status"] == "succeeded" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = b.crow_json(&[
        "sql",
        "select kind, link from notifications where kind like 'export%'",
    ]);
    assert_eq!(all, json!([{"kind": "export_ready", "link": link}]));
}

/// Requests without credentials share one bucket per address: beyond it,
/// 429 `rate_limited` with Retry-After, whatever the endpoint; a request
/// with a key is counted against the key instead, and still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_requests_are_limited_per_address() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Public"]);
    let key = b.crow_json(&["keys", "create", "--org", "Public"]);
    let key = key["secret"].as_str().expect("secret").to_string();
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_API_PUBLIC_RATE_LIMIT_PER_SECOND", "0.01"),
            ("CROW_API_PUBLIC_RATE_LIMIT_BURST", "40"),
        ],
    );
    let http = reqwest::Client::new();
    // Spend what is left of the bucket (the start-up's readiness checks
    // took some) on public endpoints.
    let mut served = 0;
    let refused = loop {
        let r = http
            .get(s.url("/api/v1/openapi.json"))
            .send()
            .await
            .expect("get");
        if r.status().as_u16() == 429 {
            break r;
        }
        assert_eq!(r.status().as_u16(), 200);
        served += 1;
        assert!(served <= 40, "never limited");
    };
    let wait: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(wait >= 1, "{wait}");
    let body: Value = refused.json().await.expect("problem");
    assert_eq!(body["code"], "rate_limited", "{body}");
    // Every public endpoint shares the bucket: sign-in, health, unknown paths.
    let r = http
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"email": "a@example.com", "password": "whatever it is"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 429);
    for path in ["/api/v1/health", "/api/v1/no-such-thing"] {
        let r = http.get(s.url(path)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 429, "{path}");
    }
    // A key's requests are not public ones.
    let r = http
        .get(s.url("/api/v1/organization"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
}

/// Send `method path` with the caller's cookie and CSRF token.
async fn call(
    http: &reqwest::Client,
    s: &Server,
    jar: &Jar,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    call_as(http, s, Ok(jar), (method, path), Some(body)).await
}

/// An admin manages members, keys and settings through the API with the
/// CLI's rules: owners are managed by owners only, the last owner stays,
/// changes bite at once, another organization's users and keys do not
/// exist, secrets are shown once, and every change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_members_keys_and_settings_through_the_api() {
    use reqwest::Method;
    let b = Backend::local();
    b.crow_ok(&["init"]);
    for org in ["Shop", "Elsewhere"] {
        b.crow_json(&["orgs", "create", "--name", org]);
    }
    let mut ids = std::collections::HashMap::new();
    for (org, email, role) in [
        ("Shop", "owner@shop.example", "owner"),
        ("Shop", "admin@shop.example", "admin"),
        ("Shop", "ann@shop.example", "analyst"),
        ("Elsewhere", "else@else.example", "admin"),
    ] {
        let u = create_user(&b, org, email, role, "member password 1");
        ids.insert(email, u["id"].as_str().expect("id").to_string());
    }
    let other_key = b.crow_json(&["keys", "create", "--org", "Elsewhere"]);
    let other_key = other_key["id"].as_str().expect("id").to_string();
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &[]);
    let http = reqwest::Client::new();
    let sign_in = |email: &'static str| {
        let (http, s) = (http.clone(), &s);
        async move {
            let (st, body, jar) = login(&http, s, email, "member password 1").await;
            assert_eq!(st, 200, "{body}");
            jar
        }
    };
    let admin = sign_in("admin@shop.example").await;
    let owner = sign_in("owner@shop.example").await;
    let ann = sign_in("ann@shop.example").await;

    // Invite: the token is in the answer once, and works.
    let (st, invited) = call(
        &http,
        &s,
        &admin,
        Method::POST,
        "/api/v1/users",
        json!({"email": "Vic@Shop.example", "role": "viewer"}),
    )
    .await;
    assert_eq!(st, 201, "{invited}");
    let token = invited["invitation_token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = http
        .post(s.url("/api/v1/auth/accept"))
        .json(&json!({"token": token, "password": "viewer password 1"}))
        .send()
        .await
        .expect("accept");
    assert_eq!(r.status().as_u16(), 200);
    let (st, listed) = get(&http, &s, "/api/v1/users", &admin).await;
    assert_eq!(st, 200, "{listed}");
    let emails: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|u| u["email"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        emails,
        [
            "owner@shop.example",
            "admin@shop.example",
            "ann@shop.example",
            "vic@shop.example"
        ]
    );
    assert!(!listed.to_string().contains("argon2"), "{listed}");

    // Owners are managed by owners only; the last owner stays.
    let owner_id = ids["owner@shop.example"].clone();
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/users".to_string(),
            json!({"email": "o2@shop.example", "role": "owner"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{owner_id}"),
            json!({"role": "viewer"}),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{owner_id}/reset"),
            json!({}),
        ),
    ] {
        let (st, body) = call(&http, &s, &admin, method, &path, body).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (403, Some("insufficient_role")),
            "{path}: {body}"
        );
    }
    let (st, body) = call(
        &http,
        &s,
        &owner,
        Method::PATCH,
        &format!("/api/v1/users/{owner_id}"),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (409, Some("last_owner")),
        "{body}"
    );

    // A role change and a disable bite at once.
    let ann_id = ids["ann@shop.example"].clone();
    let export = json!({"table": "products", "format": "csv"});
    let (st, _) = call(
        &http,
        &s,
        &ann,
        Method::POST,
        "/api/v1/exports",
        export.clone(),
    )
    .await;
    assert_eq!(st, 202);
    let (st, body) = call(
        &http,
        &s,
        &admin,
        Method::PATCH,
        &format!("/api/v1/users/{ann_id}"),
        json!({"role": "viewer"}),
    )
    .await;
    assert_eq!((st, body["role"].as_str()), (200, Some("viewer")), "{body}");
    let (st, _) = call(&http, &s, &ann, Method::POST, "/api/v1/exports", export).await;
    assert_eq!(st, 403, "a viewer cannot export");
    let (st, _) = call(
        &http,
        &s,
        &admin,
        Method::PATCH,
        &format!("/api/v1/users/{ann_id}"),
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = get(&http, &s, "/api/v1/auth/me", &ann).await;
    assert_eq!(st, 401, "a disabled user's session has ended");
    // A disabled user's password is not reset (enable them first).
    let (st, body) = call(
        &http,
        &s,
        &admin,
        Method::POST,
        &format!("/api/v1/users/{ann_id}/reset"),
        json!({}),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (409, Some("user_disabled")),
        "{body}"
    );
    // Roles and scopes outside the documented ones are named as such.
    for (method, path, body, code) in [
        (
            Method::POST,
            "/api/v1/users".to_string(),
            json!({"email": "x@shop.example", "role": "superuser"}),
            "invalid_role",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{ann_id}"),
            json!({"role": "root"}),
            "invalid_role",
        ),
        (
            Method::POST,
            "/api/v1/keys".to_string(),
            json!({"scope": "write", "name": "nope"}),
            "invalid_scope",
        ),
    ] {
        let (st, answer) = call(&http, &s, &admin, method, &path, body).await;
        assert_eq!(
            (st, answer["code"].as_str()),
            (400, Some(code)),
            "{path}: {answer}"
        );
    }

    // Keys: the secret once, it works, listing shows no secret, revoking bites.
    let (st, key) = call(
        &http,
        &s,
        &admin,
        Method::POST,
        "/api/v1/keys",
        json!({"scope": "read", "name": "dashboard"}),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    let secret = key["secret"].as_str().expect("secret").to_string();
    let key_id = key["id"].as_str().expect("id").to_string();
    assert!(
        key["expires_at"].is_string(),
        "the default expiry applies: {key}"
    );
    let org = |k: String| {
        let http = http.clone();
        let url = s.url("/api/v1/organization");
        async move {
            http.get(url)
                .bearer_auth(k)
                .send()
                .await
                .expect("get")
                .status()
                .as_u16()
        }
    };
    assert_eq!(org(secret.clone()).await, 200);
    let (_, keys) = get(&http, &s, "/api/v1/keys", &admin).await;
    assert!(!keys.to_string().contains(&secret), "{keys}");
    assert_eq!(
        keys["data"].as_array().map(Vec::len),
        Some(1),
        "only this org's keys: {keys}"
    );
    let (st, _) = call(
        &http,
        &s,
        &admin,
        Method::POST,
        &format!("/api/v1/keys/{key_id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        org(secret).await,
        401,
        "a revoked key is refused at once here"
    );

    // Another organization's users and keys do not exist here.
    let other_user = ids["else@else.example"].clone();
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/api/v1/users/{other_user}"),
            json!({"disabled": true}),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{other_user}/reset"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/keys/{other_key}/revoke"),
            json!({}),
        ),
    ] {
        let (st, body) = call(&http, &s, &admin, method, &path, body).await;
        assert_eq!(st, 404, "{path}: {body}");
    }
    let other = b.crow_json(&[
        "sql",
        &format!(
        "select count(*) as n from api_keys where key_id = '{other_key}' and revoked_at is null"),
    ]);
    assert_eq!(other, json!([{"n": 1}]));

    // Settings: the context text the AI provider gets.
    let (st, body) = call(
        &http,
        &s,
        &admin,
        Method::PATCH,
        "/api/v1/organization",
        json!({"context": "We sell speakers and headphones."}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (_, shown) = get(&http, &s, "/api/v1/organization", &admin).await;
    assert_eq!(
        shown["context"], "We sell speakers and headphones.",
        "{shown}"
    );
    let (st, body) = call(
        &http,
        &s,
        &admin,
        Method::PATCH,
        "/api/v1/organization",
        json!({"name": "Elsewhere"}),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_request")),
        "names are unique: {body}"
    );

    // Every change is audited with its actor.
    let admin_actor = format!("user:{}", ids["admin@shop.example"]);
    let audited = b.crow_json(&["sql", &format!(
        "select distinct action from audit_log where actor = '{admin_actor}' and outcome = 'ok' order by action")]);
    let actions: Vec<&str> = audited
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    for a in [
        "key.create",
        "key.revoke",
        "org.update",
        "user.create",
        "user.disable",
        "user.role",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}
