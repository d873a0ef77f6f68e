//! The dashboard served by `crow serve`, in Debian's Chromium (Playwright,
//! `tests/py/dashboard.py`), on a lake filled by `crow demo` and the
//! collector: sign-in through /login, an overview whose figures, each
//! figure per day (in the browser's time zone) and top products equal SQL
//! over the same lake (and not another organization's
//! rows), new events appearing without a reload, the interactions list
//! (paged, filtered) and one opened as its session's timeline, the catalog
//! with each product's activity and one product per day (equal to SQL), a funnel (split by device) and its paths
//! as counted session by session here, the notifications bell (listed, marked
//! read), the SQL console (a saved query reopened after a reload shows the
//! same rows; its history, on another browser, equal to `query_history`,
//! a failed run kept with its error), billing and its invoice's line items as `crow
//! billing report` has them, the latest week's patterns with their evidence
//! drawn over the days around the week (each day equal to SQL over
//! `sessions`; the days endpoint 404 for another organization), an invitation accepted in
//! the browser, Settings' write key replaced and the old one refused by the
//! collector, a social source and cameras added and removed in Settings
//! (the camera left equal to SQL over `cameras`), Settings hidden from a viewer (and the write-key API refusing
//! them), no console errors or failed
//! requests, no serious axe-core violations, screenshots at 375 and 1440 px
//! that are not blank; and the assets: hashed, cached, gzip, a first load
//! under 300 KB.

use std::time::Duration;

use reqwest::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING};
use serde_json::{json, Value};

use crate::support::{Backend, Server};

async fn sql(http: &reqwest::Client, s: &Server, key: &str, q: &str) -> Vec<Value> {
    let r = http
        .post(s.url("/api/v1/sql"))
        .bearer_auth(key)
        .json(&json!({ "sql": q }))
        .send()
        .await
        .expect("sql");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{q}: {body}");
    body.as_array().cloned().unwrap_or_default()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Each figure per day as the overview drew it equals SQL over the same
/// period, day by day. The owner's browser is in Asia/Kolkata (UTC+05:30
/// all year): a day is a local date, named by its local midnight (seconds).
async fn assert_series_is_sql(http: &reqwest::Client, s: &Server, key: &str, snap: &Value) {
    use std::collections::BTreeMap;
    const IST: i64 = 330 * 60;
    let (from, to) = (
        snap["from"].as_str().expect("from"),
        snap["to"].as_str().expect("to"),
    );
    let by_day = |col: &str, figures: &str, table: &str| {
        format!(
            "SELECT CAST(to_unixtime(date_trunc('day', {col} + INTERVAL '330 minutes')) AS BIGINT) - {IST} AS t,
                    {figures}
             FROM {table} WHERE {col} >= '{from}' AND {col} < '{to}' GROUP BY 1 ORDER BY 1"
        )
    };
    let web = sql(
        http,
        s,
        key,
        &by_day(
            "occurred_at",
            "count(*) AS events, count(DISTINCT anonymous_id) AS visitors,
             count(*) FILTER (WHERE event = 'Order Completed') AS orders,
             coalesce(sum(revenue) FILTER (WHERE event = 'Order Completed'), 0) AS revenue",
            "raw_web_events",
        ),
    )
    .await;
    let ses = sql(
        http,
        s,
        key,
        &by_day(
            "started_at",
            "count(*) AS sessions, count(*) FILTER (WHERE converted) AS converted",
            "sessions",
        ),
    )
    .await;
    let int = sql(
        http,
        s,
        key,
        &by_day("started_at", "count(*) AS interactions", "interactions"),
    )
    .await;
    // Days with a value (the page draws a zero, SQL has no row).
    let shown = |id: &str| -> BTreeMap<i64, f64> {
        snap["series"][id]
            .as_array()
            .unwrap_or_else(|| panic!("no series of {id}: {snap}"))
            .iter()
            .filter(|p| !p[1].is_null() && num(&p[1]) != 0.0)
            .map(|p| (p[0].as_i64().expect("a time"), num(&p[1])))
            .collect()
    };
    let want = |rows: &[Value], col: &str| -> BTreeMap<i64, f64> {
        rows.iter()
            .filter(|r| num(&r[col]) != 0.0)
            .map(|r| (r["t"].as_i64().expect("a day"), num(&r[col])))
            .collect()
    };
    assert!(
        want(&web, "events").len() >= 2,
        "a week of events has several days: {web:?}"
    );
    for (id, rows, col) in [
        ("events", &web, "events"),
        ("visitors", &web, "visitors"),
        ("orders", &web, "orders"),
        ("sessions", &ses, "sessions"),
        ("interactions", &int, "interactions"),
    ] {
        assert_eq!(
            shown(id),
            want(rows, col),
            "{id} per day on the page vs SQL"
        );
    }
    let (page_rev, sql_rev) = (shown("revenue"), want(&web, "revenue"));
    assert_eq!(
        page_rev.keys().collect::<Vec<_>>(),
        sql_rev.keys().collect::<Vec<_>>(),
        "revenue days"
    );
    for (t, v) in &sql_rev {
        assert!(
            (page_rev[t] - v).abs() < 1e-6 * v.abs().max(1.0),
            "revenue on {t}: {page_rev:?} vs {sql_rev:?}"
        );
    }
    let conv: BTreeMap<i64, f64> = ses
        .iter()
        .filter(|r| num(&r["sessions"]) > 0.0 && num(&r["converted"]) > 0.0)
        .map(|r| {
            (
                r["t"].as_i64().expect("a day"),
                num(&r["converted"]) / num(&r["sessions"]),
            )
        })
        .collect();
    let page_conv = shown("conversion");
    assert_eq!(
        page_conv.keys().collect::<Vec<_>>(),
        conv.keys().collect::<Vec<_>>(),
        "conversion days"
    );
    for (t, v) in &conv {
        assert!(
            (page_conv[t] - v).abs() < 1e-9,
            "conversion on {t}: {page_conv:?} vs {conv:?}"
        );
    }
}

/// The overview as the page drew it equals SQL over the same period.
async fn assert_overview_is_sql(http: &reqwest::Client, s: &Server, key: &str, snap: &Value) {
    let (from, to) = (
        snap["from"].as_str().expect("from"),
        snap["to"].as_str().expect("to"),
    );
    let range = |col: &str| format!("{col} >= '{from}' AND {col} < '{to}'");
    let web = &sql(
        http,
        s,
        key,
        &format!(
            "SELECT count(*) AS events, count(DISTINCT anonymous_id) AS visitors,
                    count(*) FILTER (WHERE event = 'Order Completed') AS orders,
                    coalesce(sum(revenue) FILTER (WHERE event = 'Order Completed'), 0) AS revenue
             FROM raw_web_events WHERE {}",
            range("occurred_at")
        ),
    )
    .await[0];
    let ses = &sql(
        http,
        s,
        key,
        &format!(
            "SELECT count(*) AS n, count(*) FILTER (WHERE converted) AS converted FROM sessions WHERE {}",
            range("started_at")
        ),
    )
    .await[0];
    let int = &sql(
        http,
        s,
        key,
        &format!(
            "SELECT count(*) AS n FROM interactions WHERE {}",
            range("started_at")
        ),
    )
    .await[0];
    let k = &snap["kpis"];
    assert!(num(&web["events"]) > 0.0, "the period has events: {snap}");
    for (name, want) in [
        ("events", &web["events"]),
        ("visitors", &web["visitors"]),
        ("orders", &web["orders"]),
        ("sessions", &ses["n"]),
        ("interactions", &int["n"]),
    ] {
        assert_eq!(
            num(&k[name]),
            num(want),
            "{name} on the page vs SQL: {snap}"
        );
    }
    assert!(
        (num(&k["revenue"]) - num(&web["revenue"])).abs() < 1e-6,
        "revenue: {snap} vs {web}"
    );
    let conv = num(&ses["converted"]) / num(&ses["n"]).max(1.0);
    assert!(
        (num(&k["conversion"]) - conv).abs() < 1e-5,
        "conversion: {snap} vs {ses}"
    );
    let top = sql(
        http,
        s,
        key,
        &format!(
            "SELECT product_id, count(*) FILTER (WHERE event = 'Product Viewed') AS views,
                    count(*) FILTER (WHERE event = 'Product Added') AS adds
             FROM raw_web_events WHERE {} AND product_id IS NOT NULL
             GROUP BY product_id ORDER BY views DESC, adds DESC, product_id LIMIT 10",
            range("occurred_at")
        ),
    )
    .await;
    let shown: Vec<(String, f64, f64)> = snap["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| {
            (
                p["product_id"].as_str().unwrap_or("").to_string(),
                num(&p["views"]),
                num(&p["adds"]),
            )
        })
        .collect();
    let want: Vec<(String, f64, f64)> = top
        .iter()
        .map(|p| {
            (
                p["product_id"].as_str().unwrap_or("").to_string(),
                num(&p["views"]),
                num(&p["adds"]),
            )
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(shown, want, "top products on the page vs SQL");
}

/// The interactions page lists what SQL lists, newest first, in pages of
/// 25; the one opened shows every step of its session's timeline.
async fn assert_interactions_are_sql(http: &reqwest::Client, s: &Server, key: &str, seen: &Value) {
    let ids = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["interaction_id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let list = |b: &Value, extra: &str, n: usize| {
        format!(
            "SELECT interaction_id FROM interactions
             WHERE started_at >= '{}' AND started_at < '{}' {extra}
             ORDER BY started_at DESC, interaction_id LIMIT {n}",
            b["from"].as_str().unwrap_or(""),
            b["to"].as_str().unwrap_or("")
        )
    };
    let want = ids(sql(http, s, key, &list(&seen["listed"], "", 50)).await);
    assert_eq!(seen["two_pages"], json!(want), "two pages of interactions");
    let p = &seen["purchased"];
    let want = ids(sql(http, s, key, &list(p, "AND outcome = 'purchased'", 25)).await);
    assert!(!want.is_empty());
    assert_eq!(p["ids"], json!(want), "purchased only");
    let opened = &seen["opened"];
    let timeline = sql(
        http,
        s,
        key,
        &format!(
            "SELECT s.timeline FROM interactions i JOIN sessions s ON s.session_id = i.session_id
             WHERE i.interaction_id = '{}'",
            opened["id"].as_str().unwrap_or("")
        ),
    )
    .await;
    let steps: Vec<Value> =
        serde_json::from_str(timeline[0]["timeline"].as_str().unwrap_or("")).expect("timeline");
    assert!(!steps.is_empty());
    assert_eq!(num(&opened["steps"]), steps.len() as f64, "{opened}");
}

/// The products page: every catalog product with its views, adds to cart,
/// interactions, purchases and patterns, as SQL counts them.
async fn assert_products_are_sql(http: &reqwest::Client, s: &Server, key: &str, seen: &Value) {
    let (from, to) = (
        seen["from"].as_str().unwrap_or(""),
        seen["to"].as_str().unwrap_or(""),
    );
    let catalog = sql(http, s, key, "SELECT product_id FROM products").await;
    let events = sql(
        http,
        s,
        key,
        &format!(
            "SELECT product_id, count(*) FILTER (WHERE event = 'Product Viewed') AS views,
                    count(*) FILTER (WHERE event = 'Product Added') AS adds
             FROM raw_web_events WHERE occurred_at >= '{from}' AND occurred_at < '{to}'
             GROUP BY product_id"
        ),
    )
    .await;
    // Interactions and patterns naming each product, counted here.
    let named = sql(
        http,
        s,
        key,
        &format!(
            "SELECT product_ids, outcome FROM interactions
             WHERE started_at >= '{from}' AND started_at < '{to}'"
        ),
    )
    .await;
    let patterns = sql(http, s, key, "SELECT product_ids FROM patterns").await;
    let names = |r: &Value, pid: &str| {
        r["product_ids"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == pid))
    };
    let rows = seen["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), catalog.len(), "every catalog product is listed");
    let mut last_views = f64::MAX;
    for r in rows {
        let pid = r["product_id"].as_str().expect("product_id");
        let ev = events.iter().find(|e| e["product_id"] == pid);
        let (views, adds) = ev.map_or((0.0, 0.0), |e| (num(&e["views"]), num(&e["adds"])));
        assert_eq!((num(&r["views"]), num(&r["adds"])), (views, adds), "{pid}");
        assert!(views <= last_views, "most viewed first");
        last_views = views;
        let n = named.iter().filter(|i| names(i, pid)).count() as f64;
        let bought = named
            .iter()
            .filter(|i| names(i, pid) && i["outcome"] == "purchased")
            .count() as f64;
        let pats = patterns.iter().filter(|p| names(p, pid)).count() as f64;
        assert_eq!(
            (
                num(&r["interactions"]),
                num(&r["purchased"]),
                num(&r["patterns"])
            ),
            (n, bought, pats),
            "{pid}"
        );
    }
}

/// One product over time, as the page drew it: per UTC day its views and
/// carts (its events), orders (converted sessions whose timeline adds it to
/// the cart, read here), interactions and day patterns naming it.
async fn assert_product_trend_is_sql(http: &reqwest::Client, s: &Server, key: &str, seen: &Value) {
    let (from, to) = (
        seen["from"].as_str().unwrap_or(""),
        seen["to"].as_str().unwrap_or(""),
    );
    let t = &seen["trend"];
    let pid = t["product_id"].as_str().expect("product");
    let mut want: std::collections::BTreeMap<String, [f64; 5]> = Default::default();
    let range = |c: &str| format!("{c} >= '{from}' AND {c} < '{to}'");
    for r in sql(http, s, key, &format!(
        "SELECT CAST(CAST(occurred_at AS DATE) AS VARCHAR) AS d,
                count(*) FILTER (WHERE event = 'Product Viewed') AS v, count(*) FILTER (WHERE event = 'Product Added') AS c
         FROM raw_web_events WHERE product_id = '{pid}' AND {} GROUP BY 1", range("occurred_at"))).await
    {
        let e = want.entry(r["d"].as_str().unwrap_or("").into()).or_default();
        e[0] = num(&r["v"]);
        e[1] = num(&r["c"]);
    }
    for r in sql(
        http,
        s,
        key,
        &format!(
        "SELECT CAST(session_date AS VARCHAR) AS d, timeline FROM sessions WHERE converted AND {}",
        range("started_at")),
    )
    .await
    {
        let tl: Vec<(i64, String, String)> =
            serde_json::from_str(r["timeline"].as_str().unwrap_or("[]")).unwrap_or_default();
        if tl
            .iter()
            .any(|(_, k, d)| k == "Product Added" && d.split(' ').next() == Some(pid))
        {
            want.entry(r["d"].as_str().unwrap_or("").into())
                .or_default()[2] += 1.0;
        }
    }
    for r in sql(http, s, key, &format!(
        "SELECT CAST(CAST(started_at AS DATE) AS VARCHAR) AS d, product_ids FROM interactions WHERE {}",
        range("started_at"))).await
    {
        if r["product_ids"].as_array().is_some_and(|a| a.iter().any(|p| p == pid)) {
            want.entry(r["d"].as_str().unwrap_or("").into()).or_default()[3] += 1.0;
        }
    }
    for r in sql(
        http,
        s,
        key,
        &format!(
            "SELECT CAST(period_start AS VARCHAR) AS d, product_ids FROM patterns
         WHERE period_kind = 'day' AND period_start >= CAST(CAST('{from}' AS TIMESTAMP) AS DATE)
           AND period_start < CAST(CAST('{to}' AS TIMESTAMP) AS DATE)"
        ),
    )
    .await
    {
        if r["product_ids"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == pid))
        {
            want.entry(r["d"].as_str().unwrap_or("").into())
                .or_default()[4] += 1.0;
        }
    }
    want.retain(|_, v| v.iter().any(|x| *x > 0.0));
    let shown: std::collections::BTreeMap<String, [f64; 5]> = t["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            let f = |c: &str| num(&d[c]);
            (
                d["day"].as_str().unwrap_or("").to_string(),
                [
                    f("views"),
                    f("carts"),
                    f("orders"),
                    f("interactions"),
                    f("patterns"),
                ],
            )
        })
        .filter(|(_, v)| v.iter().any(|x| *x > 0.0))
        .collect();
    assert_eq!(shown, want, "{pid} per day");
    let total = |i: usize| want.values().map(|v| v[i]).sum::<f64>();
    assert!(
        total(0) > 0.0 && total(2) > 0.0 && total(3) > 0.0,
        "{want:?}"
    );
}

/// Session id → (device, event names in order).
type SessionEvents = std::collections::BTreeMap<String, (String, Vec<String>)>;

/// Each web session that started in `[from, to)`: its device and its
/// events' names in order (time, then message id), as the funnel page
/// names them ("Page: Home" for a page view; no identify calls).
async fn session_events(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    from: &str,
    to: &str,
) -> SessionEvents {
    let rows = sql(
        http,
        s,
        key,
        &format!(
            "SELECT s.session_id, coalesce(s.device_type, 'unknown') AS device, e.message_id,
                    CAST(e.occurred_at AS BIGINT) AS t, e.type, e.event, e.name
             FROM (SELECT session_id, device_type, unnest(source_ids) AS mid FROM sessions
                   WHERE channel = 'web' AND started_at >= '{from}' AND started_at < '{to}') s
             LEFT JOIN raw_web_events e ON e.message_id = s.mid"
        ),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    // Per session: its device and (time, message id, name) of each event.
    type Timed = Vec<(i64, String, String)>;
    let mut by: std::collections::BTreeMap<String, (String, Timed)> = Default::default();
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let id = text("session_id");
        let entry = by
            .entry(id.clone())
            .or_insert_with(|| (text("device"), vec![]));
        let name = match r["type"].as_str() {
            Some("track") => r["event"].as_str().map(str::to_string),
            Some("page") => Some(format!("Page: {}", r["name"].as_str().unwrap_or("unnamed"))),
            Some("screen") => Some(format!(
                "Screen: {}",
                r["name"].as_str().unwrap_or("unnamed")
            )),
            _ => None,
        };
        if let Some(name) = name {
            if seen.insert((id, text("message_id"))) {
                entry
                    .1
                    .push((r["t"].as_i64().unwrap_or(0), text("message_id"), name));
            }
        }
    }
    by.into_iter()
        .map(|(id, (device, mut ev))| {
            ev.sort();
            (id, (device, ev.into_iter().map(|e| e.2).collect()))
        })
        .collect()
}

/// How far a session gets through `steps`, each after the one before.
fn reached(events: &[String], steps: &[String]) -> usize {
    events.iter().fold(0, |k, e| {
        if k < steps.len() && *e == steps[k] {
            k + 1
        } else {
            k
        }
    })
}

/// The events between a session's first `start` and the first `end` after
/// it, repeats in a row once; None when it has not both.
fn path_between(events: &[String], start: &str, end: &str) -> Option<String> {
    let mut once: Vec<&String> = events.iter().collect();
    once.dedup();
    let a = once.iter().position(|e| *e == start)?;
    let z = a + 1 + once[a + 1..].iter().position(|e| *e == end)?;
    Some(
        once[a + 1..z]
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(" → "),
    )
}

/// The funnel page's step counts (in total and per device) and its top
/// paths equal the same definitions computed here, session by session.
/// Returns the sessions that reached the last step in order, and those
/// that have every step's event in any order.
async fn assert_funnel_is_sql(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    seen: &Value,
) -> (usize, usize) {
    let from = seen["from"].as_str().expect("from");
    let to = seen["to"].as_str().expect("to");
    let sessions = session_events(http, s, key, from, to).await;
    let steps: Vec<String> = seen["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|x| x["step"].as_str().unwrap_or("").to_string())
        .collect();
    let count = |device: Option<&str>| -> Vec<f64> {
        (1..=steps.len())
            .map(|k| {
                sessions
                    .values()
                    .filter(|(d, ev)| device.is_none_or(|w| d == w) && reached(ev, &steps) >= k)
                    .count() as f64
            })
            .collect()
    };
    let shown: Vec<f64> = seen["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|x| num(&x["count"]))
        .collect();
    assert!(shown[0] > 0.0, "{seen}");
    assert_eq!(shown, count(None), "the funnel's steps vs SQL: {seen}");
    for seg in seen["segments"].as_array().expect("segments") {
        let counts: Vec<f64> = seg["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(num)
            .collect();
        assert_eq!(counts, count(seg["seg"].as_str()), "{seg}");
    }
    let mut paths: std::collections::BTreeMap<String, u64> = Default::default();
    let (start, end) = (
        seen["start"].as_str().expect("start"),
        seen["end"].as_str().expect("end"),
    );
    for (_, ev) in sessions.values() {
        if let Some(p) = path_between(ev, start, end) {
            *paths.entry(p).or_default() += 1;
        }
    }
    let mut top: Vec<(String, u64)> = paths.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(seen["top"].as_u64().unwrap_or(10) as usize);
    let want: Vec<Value> = top
        .iter()
        .map(|(p, n)| json!({"path": p, "sessions": n}))
        .collect();
    assert_eq!(seen["paths"], json!(want), "the top paths vs SQL");
    let in_order = sessions
        .values()
        .filter(|(_, ev)| reached(ev, &steps) == steps.len())
        .count();
    let any_order = sessions
        .values()
        .filter(|(_, ev)| steps.iter().all(|s| ev.contains(s)))
        .count();
    (in_order, any_order)
}

/// Pages are no-cache; assets are hashed, immutable and gzip; the first
/// load of the app is at most 300 KB compressed.
async fn assert_assets(http: &reqwest::Client, s: &Server) {
    let mut total = 0usize;
    let page = http
        .get(s.url("/app/"))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("app");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    let plain = http
        .get(s.url("/app/"))
        .send()
        .await
        .expect("app")
        .text()
        .await
        .expect("html");
    total += page.bytes().await.expect("body").len();
    let assets: Vec<String> = plain
        .split("\"/assets/")
        .skip(1)
        .filter_map(|p| p.split('"').next())
        .map(str::to_string)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(assets.len() >= 6, "{plain}");
    for a in &assets {
        let parts: Vec<&str> = a.split('.').collect();
        assert!(
            parts.len() >= 3 && parts[parts.len() - 2].len() == 8,
            "{a} has a content hash in its name"
        );
        let r = http
            .get(s.url(&format!("/assets/{a}")))
            .header(ACCEPT_ENCODING, "gzip, deflate")
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{a}");
        assert_eq!(
            r.headers()[CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        if a.ends_with(".js") && !a.starts_with("favicon") {
            assert_eq!(r.headers()[CONTENT_ENCODING], "gzip", "{a}");
        }
        total += r.bytes().await.expect("asset").len();
    }
    assert!(
        total <= 300_000,
        "the first load is {total} bytes compressed"
    );
    let gone = http
        .get(s.url("/assets/app.00000000.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(gone.status(), 404);
}

/// A cell as the page shows it, without the locale's digit grouping.
fn plain(s: &str) -> String {
    s.replace([',', '\u{a0}', '\u{202f}', ' '], "")
}

/// The rows a chat answer showed are its own SQL's rows, re-run through
/// `/api/v1/sql` (the first 20, in order, every column).
async fn assert_chat_rows(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    sql_text: &str,
    shown: &Value,
) {
    let want = sql(http, s, key, sql_text).await;
    let (head, shown) = shown
        .as_array()
        .and_then(|t| t.split_first())
        .expect("a header and rows");
    let cols: Vec<&str> = head
        .as_array()
        .expect("header")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!want.is_empty(), "{sql_text}");
    assert_eq!(shown.len(), want.len().min(20), "{sql_text}: {shown:?}");
    for (row, w) in shown.iter().zip(&want) {
        let cells: Vec<String> = row
            .as_array()
            .expect("cells")
            .iter()
            .map(|c| plain(c.as_str().unwrap_or("")))
            .collect();
        let values: Vec<String> = cols
            .iter()
            .map(|c| match &w[*c] {
                Value::String(t) => plain(t),
                Value::Null => "∅".to_string(),
                v => v.to_string(),
            })
            .collect();
        assert_eq!(cells, values, "{sql_text}");
    }
}

/// Ask CROW's panel: the first answer is the top products by views, the
/// follow-up the same on mobile, both with the rows their SQL returns; the
/// refusal says a real model is needed.
async fn assert_chat_is_sql(http: &reqwest::Client, s: &Server, key: &str, chat: &Value) {
    let first = chat["sql"].as_str().expect("sql");
    assert!(first.contains("'Product Viewed'"), "{chat}");
    assert!(!first.contains("mobile"), "{chat}");
    assert_chat_rows(http, s, key, first, &chat["rows"]).await;
    let mobile = chat["mobile_sql"].as_str().expect("mobile sql");
    assert!(
        mobile.contains("'Product Viewed'") && mobile.contains("device_type = 'mobile'"),
        "the follow-up is read with the first question: {chat}"
    );
    assert_chat_rows(http, s, key, mobile, &chat["mobile_rows"]).await;
    assert_ne!(chat["rows"], chat["mobile_rows"], "{chat}");
    let words = chat["words"].as_str().expect("words");
    let top = chat["rows"][1][0].as_str().expect("the top product's id");
    assert!(
        words.contains(top),
        "the answer names the top product: {chat}"
    );
}

async fn send_other_org_events(http: &reqwest::Client, s: &Server, key: &str) {
    let now = chrono::Utc::now().to_rfc3339();
    let batch: Vec<Value> = (0..4)
        .map(|i| {
            json!({"type": "track", "event": "Product Viewed", "anonymousId": "other-visitor",
                        "messageId": format!("other-{i}"), "timestamp": now,
                        "properties": {"product_id": "nw-1001"}})
        })
        .collect();
    let r = http
        .post(s.url("/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .expect("batch");
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let b = Backend::local();
    // Enough visitors and days for the patterns job to find something.
    b.crow_json(&["demo", "--visitors", "3000", "--days", "21"]);
    let org = crow_ingest::generate::BRAND_NAME;
    let key = b.crow_json(&["orgs", "rotate-key", org]);
    let write_key = key["write_key"].as_str().expect("write_key").to_string();
    let api_key = b.crow_json(&["keys", "create", "--org", org]);
    let api_key = api_key["secret"].as_str().expect("secret").to_string();
    let other = b.crow_json(&["orgs", "create", "--name", "Other Co"]);
    let other_key = other["write_key"].as_str().expect("write_key").to_string();
    let other_api_key = b.crow_json(&["keys", "create", "--org", "Other Co"]);
    let other_api_key = other_api_key["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    crate::users::create_user(
        &b,
        org,
        "ops@northwind-audio.example",
        "owner",
        "owner password 123",
    );
    let viewer = b.crow_json(&[
        "users",
        "create",
        "--org",
        org,
        "--email",
        "viewer@northwind-audio.example",
        "--role",
        "viewer",
    ]);
    let token = viewer["invitation_token"].as_str().expect("token");

    let wal = tempfile::tempdir().expect("wal");
    let server = Server::start(&b, wal.path(), &[("CROW_INGEST_FLUSH_INTERVAL_MS", "300")]);
    let http = reqwest::Client::new();
    // The owner signs in from two devices: the second is a notification,
    // for the bell (so is the browser's sign-in after them).
    let (st, _, _) = crate::users::login(
        &http,
        &server,
        "ops@northwind-audio.example",
        "owner password 123",
    )
    .await;
    assert_eq!(st, 200);
    let r = http
        .post(server.url("/api/v1/auth/login"))
        .header("User-Agent", "A new phone/1.0")
        .json(&json!({"email": "ops@northwind-audio.example", "password": "owner password 123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200);
    assert_assets(&http, &server).await;
    // Another organization's visitor, now: the overview must not count it.
    send_other_org_events(&http, &server, &other_key).await;
    let lake = b.lake().await;
    crate::ingest::wait_count(
        &lake,
        "select count(*) from raw_web_events where anonymous_id = 'other-visitor'",
        4,
        Duration::from_secs(20),
    )
    .await;

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let axe = crate::support::python()
        .parent()
        .and_then(std::path::Path::parent)
        .map(|venv| venv.join("node/node_modules/axe-core/axe.min.js"))
        .expect("the venv folder");
    assert!(
        axe.exists(),
        "{} is missing: run scripts/test-deps.sh",
        axe.display()
    );
    let printed = crate::ingest::python(
        "dashboard.py",
        &[
            &format!("http://{}", server.addr),
            "ops@northwind-audio.example",
            "owner password 123",
            token,
            &write_key,
            &axe.to_string_lossy(),
            &out.to_string_lossy(),
        ],
    );
    let seen: Value = serde_json::from_str(&printed)
        .unwrap_or_else(|e| panic!("the script's JSON ({e}): {printed}"));
    assert_overview_is_sql(&http, &server, &api_key, &seen["first"]).await;
    assert_series_is_sql(&http, &server, &api_key, &seen["first"]).await;
    assert_overview_is_sql(&http, &server, &api_key, &seen["live"]).await;
    // Settings: of the two cameras added in the browser, the one left is
    // the organization's only camera, as entered; the social source added
    // and removed there is gone.
    let cameras = sql(
        &http,
        &server,
        &api_key,
        "SELECT camera_id, store_id, name, location FROM cameras ORDER BY camera_id",
    )
    .await;
    assert_eq!(
        cameras,
        [json!({"camera_id": "till-2", "store_id": "store-1", "name": "Till 2", "location": null})]
    );
    let feeds = sql(
        &http,
        &server,
        &api_key,
        "SELECT count(*) AS n FROM social_sources WHERE target = 'https://news.example/crow-dashboard-feed.xml'",
    )
    .await;
    assert_eq!(feeds[0]["n"], 0, "{feeds:?}");
    // The live figures are SQL over a period that holds the events sent
    // while the page was open.
    let live = &seen["live"];
    let sent = sql(
        &http,
        &server,
        &api_key,
        &format!(
            "SELECT count(*) AS n FROM raw_web_events WHERE anonymous_id = '{}'
               AND occurred_at >= '{}' AND occurred_at < '{}'",
            live["anon"].as_str().expect("anon"),
            live["from"].as_str().expect("from"),
            live["to"].as_str().expect("to")
        ),
    )
    .await;
    assert_eq!(sent[0]["n"], 3, "{live}");
    assert!(num(&live["loads"]) > num(&seen["first"]["loads"]), "{seen}");
    let titles: Vec<String> = sql(
        &http,
        &server,
        &api_key,
        "SELECT title FROM patterns WHERE period_kind = 'week'
           AND period_start = (SELECT max(period_start) FROM patterns WHERE period_kind = 'week')
         ORDER BY significance DESC, pattern_id LIMIT 50",
    )
    .await
    .iter()
    .map(|r| r["title"].as_str().unwrap_or("").to_string())
    .collect();
    assert!(!titles.is_empty());
    assert_eq!(
        seen["patterns"]["titles"],
        json!(titles),
        "the latest week's patterns, strongest first"
    );
    assert_pattern_days_are_sql(&http, &server, &api_key, &other_api_key, &seen["patterns"]).await;
    assert_interactions_are_sql(&http, &server, &api_key, &seen["interactions"]).await;
    assert_products_are_sql(&http, &server, &api_key, &seen["products"]).await;
    assert_product_trend_is_sql(&http, &server, &api_key, &seen["products"]).await;
    let funnels = &seen["funnels"];
    assert_funnel_is_sql(&http, &server, &api_key, &funnels["split"]).await;
    let linked = assert_funnel_is_sql(&http, &server, &api_key, &funnels["linked"]).await;
    assert!(
        0 < linked.0 && linked.0 < linked.1,
        "the shared funnel's last step (a product page after a product view) is reached by fewer sessions in order than in any order: {linked:?}"
    );
    assert!(num(&funnels["bell"]["unread"]) >= 2.0, "{funnels}");
    // Billing: the same numbers as `crow billing report`.
    let bill = &seen["billing"];
    let month = bill["month"].as_str().expect("month");
    let report = b.crow_json(&["billing", "report", "--month", month, "--org", org]);
    let inv = &report[0];
    assert_eq!(bill["total_micros"], inv["total_micros"], "{bill} vs {inv}");
    assert_eq!(bill["days"], inv["days"], "{bill} vs {inv}");
    let shown: Vec<String> = bill["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .take(6)
        .map(|t| t.as_str().unwrap_or("").replace([',', '\u{a0}', ' '], ""))
        .collect();
    let u = &inv["usage"];
    let want: Vec<String> = [
        "events",
        "sessions",
        "interactions",
        "patterns",
        "ai_input_tokens",
        "ai_output_tokens",
    ]
    .iter()
    .map(|k| u[*k].to_string())
    .collect();
    assert_eq!(shown, want, "{bill} vs {inv}");
    // The month's invoice: the report's line items and total.
    let lines: Vec<Value> = inv["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            json!({"item": l["item"], "quantity": l["quantity"], "per": l["per"],
                "unit_price_micros": l["unit_price_micros"], "amount_micros": l["amount_micros"]})
        })
        .collect();
    assert!(lines.len() >= 5, "{inv}");
    assert_eq!(bill["invoice"]["lines"], json!(lines), "{bill} vs {inv}");
    assert_eq!(
        bill["invoice"]["total_micros"], inv["total_micros"],
        "{bill} vs {inv}"
    );
    // The console showed the rows its query returns (first grid page).
    let c = &seen["console"];
    let want = sql(
        &http,
        &server,
        &api_key,
        c["query"].as_str().expect("query"),
    )
    .await;
    let shown = c["rows"].as_array().expect("rows");
    assert!(!want.is_empty());
    assert_eq!(shown.len(), want.len().min(50), "{c}");
    for (row, w) in shown.iter().zip(&want) {
        assert_eq!(row[0], w["event_date"], "{c}");
        assert_eq!(
            row[1].as_str().map(|t| t.replace([',', '\u{a0}', ' '], "")),
            Some(w["events"].to_string()),
            "{c}"
        );
    }
    // The saved query, opened after a reload and run, showed the same rows.
    assert_eq!(c["saved_rows"], c["rows"], "{c}");
    // The history followed the owner to another browser: the queries run
    // in the first, newest first, as `query_history` holds them; one opened
    // into the editor; cleared, it is empty on the server too.
    // The failed one is kept with its error.
    let ran = json!([
        c["query"],
        "SELECT 1 AS one",
        "SELECT no_such_column FROM raw_web_events"
    ]);
    assert_eq!(c["history_elsewhere"], ran, "{c}");
    assert_eq!(c["history_ok"], json!(["yes", "yes", "no"]), "{c}");
    assert_eq!(c["history_in_lake"], c["history_elsewhere"], "{c}");
    assert_eq!(c["history_opened"], "SELECT 1 AS one", "{c}");
    assert_eq!(c["history_after_clear"], json!([]), "{c}");
    // The export downloaded from the console is the query's whole result.
    let exported: Vec<&str> = c["exported"]
        .as_array()
        .expect("exported")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut lines = vec!["event_date,events".to_string()];
    lines.extend(
        want.iter()
            .map(|w| format!("{},{}", w["event_date"].as_str().unwrap_or(""), w["events"])),
    );
    assert_eq!(exported, lines, "the exported CSV vs the query");
    assert_chat_is_sql(&http, &server, &api_key, &seen["chat"]).await;
    for page in [
        "landing",
        "login",
        "overview",
        "interactions",
        "products",
        "funnels",
        "notifications",
        "sql",
        "billing",
        "patterns",
        "settings",
        "chat",
    ] {
        for w in [375, 1440] {
            assert!(out.join(format!("{page}-{w}.png")).exists());
        }
    }
    // The viewer's password was set in the browser; the API refuses what
    // the UI hides from a viewer (the whole matrix is in users.rs).
    let (st, body, jar) = crate::users::login(
        &http,
        &server,
        "viewer@northwind-audio.example",
        "viewer password 1",
    )
    .await;
    assert_eq!(
        st, 200,
        "the viewer signs in with the password set in the browser: {body}"
    );
    let r = http
        .get(server.url("/api/v1/audit"))
        .header(
            reqwest::header::COOKIE,
            format!("crow_session={}", jar.session),
        )
        .send()
        .await
        .expect("audit");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 403, "a viewer reads no audit log: {body}");
}

/// The SQL condition of a pattern's segment over `sessions`.
fn segment_sql(seg: &str) -> Option<String> {
    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
    Some(match seg.split_once('=') {
        None if seg.is_empty() => "TRUE".to_string(),
        Some(("device_type", v)) => format!("channel = 'web' AND device_type = {}", lit(v)),
        Some(("traffic_source", v)) => format!("channel = 'web' AND traffic_source = {}", lit(v)),
        Some(("visitor_type", "new")) => "channel = 'web' AND is_returning = false".into(),
        Some(("visitor_type", "returning")) => "channel = 'web' AND is_returning = true".into(),
        Some(("channel", v)) => format!("channel = {}", lit(v)),
        _ => return None,
    })
}

/// A session's timeline holds an event of this kind (a timeline is
/// `[[offset,"kind","detail"],…]`: a kind sits between two commas).
fn has_kind(kind: &str) -> String {
    format!("timeline LIKE '%,\"{kind}\",%'")
}

/// SQL of a pattern's metric per day, as (k, n) by `day` (n = 0 for a
/// count), for the metrics SQL can count from `sessions` alone.
fn metric_sql(metric: &str, seg: &str) -> Option<String> {
    const STEPS: [(&str, &str); 5] = [
        ("view", "Product Viewed"),
        ("cart", "Product Added"),
        ("checkout", "Checkout Started"),
        ("payment", "Payment Info Entered"),
        ("order", "Order Completed"),
    ];
    let cond = segment_sql(seg)?;
    let step = |k: &str| STEPS.iter().find(|s| s.0 == k).map(|s| has_kind(s.1));
    let (k, n) = if metric == "sessions" {
        ("count(*)".to_string(), "0".to_string())
    } else if let Some((a, b)) = metric
        .strip_prefix("funnel:")
        .and_then(|r| r.split_once('>'))
    {
        let (a, b) = (step(a)?, step(b)?);
        (
            format!("count(*) FILTER (WHERE {a} AND {b})"),
            format!("count(*) FILTER (WHERE {a})"),
        )
    } else if let Some(kind) = metric
        .strip_prefix("event:")
        .or_else(|| metric.strip_prefix("error:"))
        .filter(|_| seg.is_empty())
    {
        // A failure's count is its events' count.
        let needle = format!(",\"{kind}\",");
        (
            format!(
                "coalesce(sum((length(timeline) - length(replace(timeline, '{needle}', ''))) / {}), 0)",
                needle.chars().count()
            ),
            "0".to_string(),
        )
    } else {
        return None;
    };
    Some(format!(
        "SELECT CAST(session_date AS VARCHAR) AS day, CAST({k} AS DOUBLE) AS k, CAST({n} AS DOUBLE) AS n
         FROM sessions WHERE {cond} GROUP BY session_date"
    ))
}

/// Each pattern's evidence chart drew its metric day by day: 28 days
/// before the period to 7 after (or yesterday), one point per day with
/// data, each equal to SQL over the same lake; and the days endpoint is
/// tenant-scoped (another organization's key finds no such patterns).
async fn assert_pattern_days_are_sql(
    http: &reqwest::Client,
    s: &Server,
    key: &str,
    other_key: &str,
    seen: &Value,
) {
    let start = &sql(
        http,
        s,
        key,
        "SELECT CAST(max(period_start) AS VARCHAR) AS s FROM patterns WHERE period_kind = 'week'",
    )
    .await[0]["s"];
    let start = start.as_str().expect("the latest week");
    let first_day = chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").expect("date")
        - chrono::Duration::days(28);
    let url = format!("/api/v1/insights/days?period_kind=week&period_start={start}");
    let mine = http
        .get(s.url(&url))
        .bearer_auth(key)
        .send()
        .await
        .expect("days");
    assert_eq!(mine.status(), 200);
    let body: Value = mine.json().await.expect("json");
    assert_eq!(body["from"], first_day.to_string(), "{body}");
    // The window's end as the page got it: the server's "yesterday" when
    // the page asked, which a run crossing midnight UTC moves on by a day
    // before this request.
    let to = seen["days_to"].as_str().expect("the page's window end");
    assert!(
        body["to"].as_str().is_some_and(|now| now >= to),
        "{body} ends before the page's {to}"
    );
    let pats = seen["days"].as_array().expect("days");
    assert_eq!(
        body["patterns"].as_array().map(Vec::len),
        Some(pats.len()),
        "{body}"
    );
    let mut checked = 0;
    for p in pats {
        let pts = p["points"].as_array().expect("points");
        let Some(q) = metric_sql(
            p["metric"].as_str().unwrap_or(""),
            p["segment"].as_str().unwrap_or(""),
        ) else {
            continue;
        };
        let want: std::collections::HashMap<String, (f64, f64)> = sql(http, s, key, &q)
            .await
            .iter()
            .map(|r| {
                (
                    r["day"].as_str().unwrap_or("").to_string(),
                    (num(&r["k"]), num(&r["n"])),
                )
            })
            .collect();
        let rate = p["measure"] == "rate";
        // A point on every day of the window, but a rate's days without
        // trials.
        let mut days = 0;
        let mut d = first_day;
        while d.to_string().as_str() < to {
            let n = want.get(&d.to_string()).map_or(0.0, |w| w.1);
            days += usize::from(!rate || n > 0.0);
            d += chrono::Duration::days(1);
        }
        assert_eq!(pts.len(), days, "{p}");
        for pt in pts {
            let d = pt["date"].as_str().expect("date");
            let (k, n) = want.get(d).copied().unwrap_or((0.0, 0.0));
            assert_eq!((num(&pt["k"]), num(&pt["n"])), (k, n), "{d} of {p}");
            let v = if rate { k / n } else { k };
            assert!((num(&pt["value"]) - v).abs() < 1e-9, "{d}: {v} of {p}");
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "the latest week has a sessions, funnel or event pattern to check: {pats:?}"
    );
    // Tenant-scoped: another organization has no patterns of that week.
    let theirs = http
        .get(s.url(&url))
        .bearer_auth(other_key)
        .send()
        .await
        .expect("days");
    assert_eq!(theirs.status(), 404);
}
