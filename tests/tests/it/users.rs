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
    fn header(&self) -> String {
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

pub fn crow_stdin(b: &Backend, args: &[&str], stdin: &str) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::crow_bin())
        .args(["--lake", &b.uri])
        .args(args)
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
    let owner = crow_stdin(
        &b,
        &[
            "users",
            "create",
            "--org",
            "Acme",
            "--email",
            "olga@example.com",
            "--role",
            "owner",
            "--password-stdin",
            "--format",
            "json",
        ],
        "owner password 123\n",
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
    // even with the right password.
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
    assert!(r.headers().get("retry-after").is_some());
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
    ("get", "/api/v1/usage", data),
    ("get", "/api/v1/stories", data),
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
    ("get", "/api/v1/health", public),
    ("get", "/api/v1/openapi.json", public),
    // Last: it ends the caller's session.
    ("post", "/api/v1/auth/logout", user_only),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_and_scope_as_documented() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Matrix"]);
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &[]);
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
        crow_stdin(
            &b,
            &[
                "users",
                "create",
                "--org",
                "Matrix",
                "--email",
                &email,
                "--role",
                role,
                "--password-stdin",
                "--format",
                "json",
            ],
            "matrix password 1\n",
        );
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
                _ => http.post(&url),
            };
            if *method == "post" {
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
                if !["insufficient_scope", "insufficient_role"].contains(&code) {
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
    crow_stdin(
        &b,
        &[
            "users",
            "create",
            "--org",
            "Hooked",
            "--email",
            "h@example.com",
            "--role",
            "owner",
            "--password-stdin",
            "--format",
            "json",
        ],
        "hooked password 1\n",
    );
    let wal = tempfile::tempdir().expect("wal");
    let s = Server::start(&b, wal.path(), &[]);
    let http = reqwest::Client::new();
    // The secret is never readable through the API, even by an admin key.
    let admin = b.crow_json(&["keys", "create", "--org", "Hooked", "--scope", "admin"]);
    let shown: Value = http
        .post(s.url("/api/v1/sql"))
        .bearer_auth(admin["secret"].as_str().expect("secret"))
        .json(&json!({"sql": "select * from organizations"}))
        .send()
        .await
        .expect("sql")
        .json()
        .await
        .expect("json");
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
