//! Billing, backfills and the scheduler end to end: invoices reconcile with
//! SQL counts over the underlying tables, billing and backfills are
//! idempotent, two `crow serve` processes on one lake run each job slot
//! once and never the same job at the same time, failed runs are retried
//! with backoff; a dead server's lease is taken over once it expired, a run
//! whose lease cannot be renewed is abandoned, SIGTERM lets the run in
//! progress finish, slots missed while busy or down collapse into one, and a
//! backfill that failed part-way is finished by running it again. The lease
//! tests hold a scheduled enrich run open with a provider that answers only
//! when the test says so.
//!
//! Every case runs on both backends through `both_backends!`, except three
//! whose subject no backend changes: SIGTERM (signal handling), the lease
//! that cannot be renewed (it turns the local lease folder into a file)
//! and `--only api` / `--only ingest` (which servers a process starts).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crow_lake::batch::rows_to_batch;
use serde_json::{json, Value};

use crate::support::{both_backends, land_web, strip_ansi, Backend, Server};

fn page(id: &str, anon: &str, at: DateTime<Utc>) -> Value {
    json!({
        "type": "track", "event": "Product Viewed", "messageId": id, "anonymousId": anon,
        "timestamp": at.to_rfc3339(),
        "properties": {"product_id": "p1", "name": "Aria Headphones"},
        "context": {"device": {"type": "mobile"}},
    })
}

/// Visitors with a few events each on `day`, ids prefixed by `tag`.
fn day_events(tag: &str, day: NaiveDate, visitors: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for v in 0..visitors {
        let start = day.and_hms_opt(9, 0, 0).expect("time").and_utc()
            + chrono::Duration::minutes(37 * v as i64);
        for k in 0..3 {
            out.push(page(
                &format!("{tag}-{v}-{k}"),
                &format!("{tag}-visitor-{v}"),
                start + chrono::Duration::minutes(2 * k),
            ));
        }
    }
    out
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

fn days_since_epoch(day: NaiveDate) -> i64 {
    (day - NaiveDate::default()).num_days()
}

fn sql(b: &Backend, q: &str) -> Vec<Value> {
    b.crow_json(&["sql", q]).as_array().expect("rows").clone()
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// `(quantity × unit + per/2) / per` — the README's pricing rule, in the
/// test's own integers.
fn priced(q: i64, unit_micros: i64, per: i64) -> i64 {
    (q * unit_micros + per / 2) / per
}

fn table_version(b: &Backend, table: &str) -> i64 {
    let t = b.crow_json(&["tables"]);
    t.as_array()
        .expect("tables")
        .iter()
        .find(|r| r["table"] == table)
        .map(|r| int(&r["version"]))
        .expect("table listed")
}

both_backends!(billing_reconciles_with_sql_and_is_idempotent => billing_reconciles);

async fn billing_reconciles(b: Backend) {
    b.crow_ok(&["init"]);
    let a = b.crow_json(&["orgs", "create", "--name", "Alpha"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let z = b.crow_json(&["orgs", "create", "--name", "Zeta"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let lake = b.lake().await;
    let recv = Utc::now() - chrono::Duration::hours(3);
    // Alpha: two March days and one April day; a retried event twice.
    let mut alpha = day_events("a1", d("2026-03-10"), 4);
    alpha.push(alpha[0].clone());
    alpha.extend(day_events("a2", d("2026-03-11"), 3));
    alpha.extend(day_events("a3", d("2026-04-01"), 2));
    land_web(&lake, &a, &alpha, recv).await;
    land_web(&lake, &z, &day_events("z1", d("2026-03-31"), 5), recv).await;
    // CCTV and social for Zeta (a duplicate segment).
    let t0 = Utc
        .with_ymd_and_hms(2026, 3, 12, 10, 0, 0)
        .single()
        .expect("t");
    let seg = |id: &str| {
        crow_ingest::channels::cctv_row(
            &z,
            &json!({"segment_id": id, "store_id": "s1", "camera_id": "c1",
                    "segment_start": t0.to_rfc3339(), "segment_end": (t0 + chrono::Duration::minutes(2)).to_rfc3339(),
                    "text": "A shopper tries the Aria Headphones."}),
            recv,
        )
        .expect("segment")
    };
    let segs = vec![seg("g1"), seg("g2"), seg("g2")];
    lake.append(
        "raw_cctv_transcripts",
        vec![rows_to_batch(&crow_schemas::RAW_CCTV_TRANSCRIPTS, &segs).expect("batch")],
    )
    .await
    .expect("append");
    let cap = crow_ingest::channels::social_row(
        &z,
        None,
        &json!({"capture_id": "k1", "run_id": "r1", "platform": "instagram", "url": "https://instagram.example/p/1",
                "text": "Love the Aria Headphones", "captured_at": t0.to_rfc3339()}),
        recv,
    )
    .expect("capture");
    lake.append(
        "raw_social_captures",
        vec![rows_to_batch(&crow_schemas::RAW_SOCIAL_CAPTURES, &[cap]).expect("batch")],
    )
    .await
    .expect("append");

    for job in ["sessionize", "enrich"] {
        b.crow_json(&[
            "jobs",
            "run",
            job,
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-02",
            "--quiet",
        ]);
    }
    // Paid AI answers and patterns of every period kind, as a model and the
    // patterns job would write them.
    let interaction = |id: &str, day: NaiveDate, i: i64, o: i64| {
        let at = day
            .and_hms_opt(12, 0, 0)
            .expect("t")
            .and_utc()
            .timestamp_micros();
        json!({"org_id": z, "interaction_id": id, "session_id": format!("s-{id}"), "channel": "web",
               "started_at": at, "ended_at": at, "description": "paid", "intent": "browse",
               "sentiment": "neutral", "outcome": "browsed", "product_ids": [], "confidence": 0.9,
               "source_ids": [], "provider": "gemini", "model": "m", "prompt_version": "v", "prompt_hash": "h",
               "input_tokens": i, "output_tokens": o, "created_at": at, "session_date": days_since_epoch(day)})
    };
    let paid = vec![
        interaction("i1", d("2026-03-20"), 1_234, 321),
        interaction("i2", d("2026-03-21"), 1_001, 77),
    ];
    lake.append(
        "interactions",
        vec![rows_to_batch(&crow_schemas::INTERACTIONS, &paid).expect("batch")],
    )
    .await
    .expect("append");
    let pattern = |id: &str, kind: &str, start: NaiveDate, end: NaiveDate| {
        json!({"org_id": a, "pattern_id": id, "period_kind": kind,
               "period_start": days_since_epoch(start), "period_end": days_since_epoch(end),
               "kind": "volume", "title": "t", "description": "d", "product_ids": [], "support": 10,
               "evidence": "{}", "provider": "offline", "model": "m", "created_at": 0})
    };
    let pats = vec![
        pattern("p1", "day", d("2026-03-10"), d("2026-03-11")),
        pattern("p2", "day", d("2026-03-10"), d("2026-03-11")),
        pattern("p3", "day", d("2026-03-11"), d("2026-03-12")),
        pattern("p4", "week", d("2026-03-09"), d("2026-03-16")),
        pattern("p5", "month", d("2026-03-01"), d("2026-04-01")),
    ];
    lake.append(
        "patterns",
        vec![rows_to_batch(&crow_schemas::PATTERNS, &pats).expect("batch")],
    )
    .await
    .expect("append");

    let r = b.crow_json(&[
        "jobs",
        "run",
        "billing",
        "--from",
        "2026-03-01",
        "--to",
        "2026-05-01",
        "--quiet",
    ]);
    assert_eq!(r["written"], true, "{r}");
    assert_eq!(r["days"], 61, "{r}");

    // The counts, straight from SQL over the underlying tables (the
    // queries the README documents).
    let month = "BETWEEN DATE '2026-03-01' AND DATE '2026-03-31'";
    let expected = |org: &str| -> BTreeMap<&'static str, i64> {
        let q = |s: String| int(&sql(&b, &s)[0]["n"]);
        let o = format!("org_id = '{org}'");
        let mut m = BTreeMap::new();
        m.insert(
            "events",
            q(format!("SELECT count(DISTINCT message_id) AS n FROM raw_web_events WHERE {o} AND event_date {month}"))
                + q(format!("SELECT count(DISTINCT capture_id) AS n FROM raw_social_captures WHERE {o} AND event_date {month}"))
                + q(format!("SELECT count(DISTINCT segment_id) AS n FROM raw_cctv_transcripts WHERE {o} AND event_date {month}")),
        );
        m.insert(
            "interactions",
            q(format!(
                "SELECT count(*) AS n FROM interactions WHERE {o} AND session_date {month}"
            )),
        );
        m.insert(
            "patterns",
            q(format!("SELECT count(*) AS n FROM patterns WHERE {o} AND period_kind = 'day' AND period_start {month}")),
        );
        m.insert(
            "ai_input_tokens",
            q(format!("SELECT coalesce(sum(input_tokens), 0) AS n FROM interactions WHERE {o} AND session_date {month}")),
        );
        m.insert(
            "ai_output_tokens",
            q(format!("SELECT coalesce(sum(output_tokens), 0) AS n FROM interactions WHERE {o} AND session_date {month}")),
        );
        m
    };
    let ea = expected(&a);
    let ez = expected(&z);
    // The data as planted: Alpha 12 + 9 distinct March events, 3 day
    // patterns; Zeta 15 web + 2 CCTV + 1 social, 2 paid interactions.
    assert_eq!(ea["events"], 21, "{ea:?}");
    assert_eq!(ea["patterns"], 3, "{ea:?}");
    assert_eq!(ez["events"], 18, "{ez:?}");
    assert_eq!(ez["ai_input_tokens"], 2_235, "{ez:?}");
    assert_eq!(ea["interactions"], 7, "{ea:?}");

    let invoices = b.crow_json(&["billing", "report", "--month", "2026-03"]);
    let invoices = invoices.as_array().expect("invoices");
    assert_eq!(invoices.len(), 2, "{invoices:?}");
    // The default price book in micros: per 1,000 events 10,000; per
    // interaction 2,000; per pattern 50,000; per 1,000 input tokens 300,
    // output 2,500.
    let prices: BTreeMap<&str, (i64, i64)> = [
        ("events", (10_000, 1000)),
        ("interactions", (2_000, 1)),
        ("patterns", (50_000, 1)),
        ("ai_input_tokens", (300, 1000)),
        ("ai_output_tokens", (2_500, 1000)),
    ]
    .into_iter()
    .collect();
    let invoice = |org: &str| -> Value {
        invoices
            .iter()
            .find(|i| i["org_id"] == org)
            .unwrap_or_else(|| panic!("no invoice for {org}: {invoices:?}"))
            .clone()
    };
    for (inv, exp) in [(invoice(&a), &ea), (invoice(&z), &ez)] {
        let org = inv["org_id"].as_str().expect("org");
        assert_eq!(inv["currency"], "USD");
        let mut total = 0;
        for line in inv["lines"].as_array().expect("lines") {
            let item = line["item"].as_str().expect("item");
            let (unit, per) = prices[item];
            assert_eq!(int(&line["quantity"]), exp[item], "{org} {item}: {inv}");
            assert_eq!(int(&line["unit_price_micros"]), unit, "{item}");
            let amount = priced(exp[item], unit, per);
            assert_eq!(int(&line["amount_micros"]), amount, "{org} {item}: {inv}");
            total += amount;
        }
        assert_eq!(int(&inv["total_micros"]), total, "{inv}");
        assert_eq!(
            inv["total"],
            format!("{}.{:06}", total / 1_000_000, total % 1_000_000)
        );
    }
    // Zeta's output tokens: 398 × 2,500 / 1,000 = 995 micros exactly; input
    // 2,235 × 300 / 1,000 = 670.5 → 671 (half up).
    let zl = &invoice(&z)["lines"];
    assert_eq!(int(&zl[3]["amount_micros"]), 671, "{zl}");
    assert_eq!(int(&zl[4]["amount_micros"]), 995, "{zl}");

    // usage_daily per day equals the same counts per day.
    let per_day = sql(
        &b,
        &format!("SELECT CAST(usage_date AS VARCHAR) AS d, events, patterns FROM usage_daily WHERE org_id = '{a}' ORDER BY usage_date"),
    );
    assert_eq!(
        per_day,
        vec![
            json!({"d": "2026-03-10", "events": 12, "patterns": 2}),
            json!({"d": "2026-03-11", "events": 9, "patterns": 1}),
            json!({"d": "2026-04-01", "events": 6, "patterns": 0}),
        ]
    );

    // Running billing again changes nothing: no new table version, the same
    // invoices.
    let v = table_version(&b, "usage_daily");
    let r = b.crow_json(&[
        "jobs",
        "run",
        "billing",
        "--from",
        "2026-03-01",
        "--to",
        "2026-05-01",
        "--quiet",
    ]);
    assert_eq!(r["written"], false, "{r}");
    assert_eq!(table_version(&b, "usage_daily"), v);
    let again = b.crow_json(&["billing", "report", "--month", "2026-03"]);
    assert_eq!(&again, &Value::Array(invoices.clone()));

    // New activity is billed by the next incremental run.
    land_web(&lake, &a, &day_events("a4", d("2026-03-10"), 1), Utc::now()).await;
    let r = b.crow_json(&["jobs", "run", "billing", "--quiet"]);
    assert_eq!(r["written"], true, "{r}");
    let one = b.crow_json(&["billing", "report", "--month", "2026-03", "--org", "Alpha"]);
    assert_eq!(one.as_array().expect("invoices").len(), 1, "{one}");
    assert_eq!(
        int(&one[0]["lines"][0]["quantity"]),
        ea["events"] + 3,
        "{one}"
    );

    // CSV: one row per line item plus the total.
    let csv = b.crow_ok(&["billing", "report", "--month", "2026-03", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "org_id,org_name,month,item,quantity,per,unit_price,amount,currency"
    );
    assert_eq!(lines.len(), 1 + 2 * 6, "{csv}");
    assert!(
        lines[6].starts_with(&format!("{a},Alpha,2026-03,total,,,,")),
        "{csv}"
    );
    // A wrong month is an argument error (exit 2) naming the flag and the
    // value.
    let bad = b.crow(&["billing", "report", "--month", "2026-13"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--month") && err.contains("`2026-13` is not a month like 2026-03"),
        "{err}"
    );
}

/// Sessions, interactions and usage as comparable snapshots.
fn snapshot(b: &Backend) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    (
        sql(b, "SELECT session_id, event_count, source_ids FROM sessions ORDER BY session_id"),
        sql(b, "SELECT interaction_id, session_id, description FROM interactions ORDER BY interaction_id"),
        sql(b, "SELECT org_id, CAST(usage_date AS VARCHAR) AS d, events, sessions, interactions, patterns, amount_micros FROM usage_daily ORDER BY org_id, usage_date"),
    )
}

fn backfill_runs(b: &Backend) -> BTreeMap<String, i64> {
    sql(
        b,
        "SELECT job, count(*) AS n FROM job_runs WHERE \"trigger\" = 'backfill' AND status = 'succeeded' GROUP BY job",
    )
    .into_iter()
    .map(|r| (r["job"].as_str().expect("job").to_string(), int(&r["n"])))
    .collect()
}

both_backends!(backfill_cascades_and_is_idempotent => backfill_cascades_and_is_idempotent_on);

async fn backfill_cascades_and_is_idempotent_on(b: Backend) {
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Shop"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let lake = b.lake().await;
    let recv = Utc::now() - chrono::Duration::hours(3);
    let mut events = Vec::new();
    for (i, day) in ["2026-02-02", "2026-02-03", "2026-02-04"]
        .iter()
        .enumerate()
    {
        events.extend(day_events(&format!("e{i}"), d(day), 3 + i));
    }
    land_web(&lake, &org, &events, recv).await;

    let steps = b.crow_json(&[
        "backfill",
        "sessionize",
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-05",
        "--quiet",
    ]);
    let jobs: Vec<&str> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["job"].as_str().expect("job"))
        .collect();
    assert_eq!(
        jobs,
        [
            "sessionize",
            "sessionize",
            "sessionize",
            "enrich",
            "enrich",
            "enrich",
            "patterns",
            "billing"
        ],
        "{steps}"
    );
    assert_eq!(steps[1]["window_start"], "2026-02-03");
    let runs = backfill_runs(&b);
    assert_eq!(runs.get("sessionize"), Some(&3), "{runs:?}");
    assert_eq!(runs.get("enrich"), Some(&3), "{runs:?}");
    assert_eq!(runs.get("patterns"), Some(&1), "{runs:?}");
    assert_eq!(runs.get("billing"), Some(&1), "{runs:?}");
    let first = snapshot(&b);
    assert_eq!(
        first.0.len(),
        3 + 4 + 5,
        "one session per visitor: {:?}",
        first.0
    );
    assert_eq!(first.1.len(), 12, "every session enriched");
    let usage: Vec<(String, i64, i64)> = first
        .2
        .iter()
        .map(|r| {
            (
                r["d"].as_str().expect("d").to_string(),
                int(&r["events"]),
                int(&r["sessions"]),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [
            ("2026-02-02".to_string(), 9, 3),
            ("2026-02-03".to_string(), 12, 4),
            ("2026-02-04".to_string(), 15, 5)
        ]
    );

    // The same backfill again: the same tables.
    b.crow_json(&[
        "backfill",
        "sessionize",
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-05",
        "--quiet",
    ]);
    assert_eq!(snapshot(&b), first);
    assert_eq!(backfill_runs(&b).get("billing"), Some(&2));

    // A late visitor on the 3rd: without cascading only sessions change…
    land_web(&lake, &org, &day_events("late", d("2026-02-03"), 1), recv).await;
    let steps = b.crow_json(&[
        "backfill",
        "sessionize",
        "--from",
        "2026-02-03",
        "--to",
        "2026-02-04",
        "--no-cascade",
        "--quiet",
    ]);
    assert_eq!(steps.as_array().expect("steps").len(), 1, "{steps}");
    let partial = snapshot(&b);
    assert_eq!(partial.0.len(), 13);
    assert_eq!(partial.1, first.1, "interactions untouched");
    assert_eq!(partial.2, first.2, "usage untouched");
    // …and cascading from enrich brings interactions and usage up to date.
    b.crow_json(&[
        "backfill",
        "enrich",
        "--from",
        "2026-02-03",
        "--to",
        "2026-02-04",
        "--quiet",
    ]);
    let full = snapshot(&b);
    assert_eq!(full.1.len(), 13);
    assert_eq!(int(&full.2[1]["events"]), 15, "{:?}", full.2);
    assert_eq!(int(&full.2[1]["sessions"]), 5, "{:?}", full.2);
    assert_eq!(full.2[0], first.2[0], "other days untouched");

    let bad = b.crow(&[
        "backfill",
        "sessionize",
        "--from",
        "2026-02-05",
        "--to",
        "2026-02-02",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--to 2026-02-02 must be after"));
}

/// `(job, slot)` of every "run started" line of a server's log.
fn started(logs: &[String]) -> Vec<(String, String)> {
    logs.iter()
        .map(|l| strip_ansi(l))
        .filter(|l| l.contains("scheduler: run started"))
        .map(|l| {
            let field = |name: &str| {
                l.split(&format!(" {name}="))
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(|s| s.trim_matches('"').to_string())
                    .unwrap_or_else(|| panic!("no {name} in {l}"))
            };
            (field("job"), field("slot"))
        })
        .collect()
}

#[derive(Debug)]
struct RunRow {
    job: String,
    status: String,
    host: String,
    window: (i64, i64),
    time: (i64, i64),
}

fn scheduled_runs(b: &Backend) -> Vec<RunRow> {
    sql(
        b,
        "SELECT job, status, host, \
                CAST(CAST(window_start AS BIGINT) AS VARCHAR) AS ws, CAST(CAST(window_end AS BIGINT) AS VARCHAR) AS we, \
                CAST(CAST(started_at AS BIGINT) AS VARCHAR) AS s, CAST(CAST(finished_at AS BIGINT) AS VARCHAR) AS f \
         FROM job_runs WHERE \"trigger\" = 'schedule' ORDER BY job, started_at",
    )
    .into_iter()
    .map(|r| RunRow {
        job: r["job"].as_str().expect("job").to_string(),
        status: r["status"].as_str().expect("status").to_string(),
        host: r["host"].as_str().unwrap_or_default().to_string(),
        window: (int(&r["ws"]), int(&r["we"])),
        // A running job has no finish time yet (an explicit null).
        time: (
            int(&r["s"]),
            r.get("f").filter(|v| !v.is_null()).map_or(i64::MAX, int),
        ),
    })
    .collect()
}

both_backends!(two_servers_run_each_job_slot_once => two_servers);

async fn two_servers(b: Backend) {
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Shop"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let lake = b.lake().await;
    // Activity of the last days, received hours ago (no late events).
    let today = Utc::now().date_naive();
    let mut events = Vec::new();
    for back in 1..=3 {
        events.extend(day_events(
            &format!("d{back}"),
            today - chrono::Days::new(back),
            4,
        ));
    }
    land_web(
        &lake,
        &org,
        &events,
        Utc::now() - chrono::Duration::hours(3),
    )
    .await;

    let every = "*/4 * * * * *";
    let env = |host: &'static str| {
        vec![
            ("CROW_SCHEDULE_ENABLED", "true"),
            ("CROW_SCHEDULE_TICK_SECONDS", "1"),
            ("CROW_SCHEDULE_SOCIAL", "off"),
            ("CROW_SCHEDULE_LEASE_SECONDS", "6"),
            ("CROW_SCHEDULE_SESSIONIZE", every),
            ("CROW_SCHEDULE_ENRICH", every),
            ("CROW_SCHEDULE_PATTERNS", every),
            ("CROW_SCHEDULE_BILLING", every),
            ("CROW_SCHEDULE_OPTIMIZE", "off"),
            ("CROW_SCHEDULE_CHECKPOINT", "off"),
            ("HOSTNAME", host),
        ]
    };
    let wal_a = tempfile::tempdir().expect("tmp");
    let wal_b = tempfile::tempdir().expect("tmp");
    let mut sa = Server::start(&b, wal_a.path(), &env("serve-a"));
    let mut sb = Server::start(&b, wal_b.path(), &env("serve-b"));
    let t0 = Instant::now();
    // Until both servers ran jobs and every job ran a few slots (at most a
    // minute and a half).
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let runs = scheduled_runs(&b);
        let per_job = |j: &str| {
            runs.iter()
                .filter(|r| r.job == j && r.status == "succeeded")
                .count()
        };
        let hosts: BTreeSet<&str> = runs.iter().map(|r| r.host.as_str()).collect();
        if (["sessionize", "enrich", "billing"]
            .iter()
            .all(|j| per_job(j) >= 4)
            && hosts.len() == 2)
            || t0.elapsed() > Duration::from_secs(90)
        {
            break;
        }
    }
    sa.stop();
    sb.stop();
    let runs = scheduled_runs(&b);
    let logs_a = sa.logs.lock().expect("logs").clone();
    let logs_b = sb.logs.lock().expect("logs").clone();

    for job in ["sessionize", "enrich", "patterns", "billing"] {
        let mine: Vec<&RunRow> = runs.iter().filter(|r| r.job == job).collect();
        assert!(mine.len() >= 2, "{job} ran {} times: {runs:#?}", mine.len());
        assert!(
            mine.iter().all(|r| r.status == "succeeded"),
            "{job}: {mine:#?}"
        );
        // The lease: no two runs of one job at the same time, whichever
        // server ran them.
        for w in mine.windows(2) {
            assert!(
                w[1].time.0 >= w[0].time.1,
                "{job} ran twice at once: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
    }
    // Sessionize's incremental windows tile time: each window ran once.
    let sess: Vec<&RunRow> = runs.iter().filter(|r| r.job == "sessionize").collect();
    for w in sess.windows(2) {
        assert!(
            w[1].window.0 >= w[0].window.1,
            "sessionize windows overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let hosts: BTreeSet<&str> = runs.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["serve-a", "serve-b"]),
        "both servers took part"
    );
    // Each slot of each job started once, on one server, and each start is
    // one ledger row.
    let (sa_slots, sb_slots) = (started(&logs_a), started(&logs_b));
    let mut all: Vec<(String, String)> = sa_slots.iter().chain(&sb_slots).cloned().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a slot ran twice: {sa_slots:?} {sb_slots:?}");
    // Every ledger row is one of those starts (a run with nothing to do
    // writes no row, as with `crow jobs run`).
    for job in ["sessionize", "enrich", "patterns", "billing"] {
        let starts = all.iter().filter(|(j, _)| j == job).count();
        let rows = runs.iter().filter(|r| r.job == job).count();
        assert!(rows <= starts, "{job}: {rows} runs, {starts} starts");
    }

    // `crow jobs status` shows the schedule and the leases.
    let status = b.crow_json(&["jobs", "status"]);
    let sched = status.as_array().expect("one row per job");
    let sess = sched
        .iter()
        .find(|s| s["job"] == "sessionize")
        .expect("row");
    assert_eq!(sess["schedule"], "*/5 * * * *", "the default: {status}");
    assert_eq!(sess["state"], "succeeded", "{status}");
    assert!(sess["last_slot"].is_string(), "{status}");
    let runs = b.crow_json(&["jobs", "runs", "--job", "sessionize", "--limit", "1"]);
    assert!(runs[0]["attempt"].is_number(), "{runs}");
    assert_eq!(runs[0]["trigger"], "schedule", "{runs}");
}

both_backends!(failed_runs_are_retried_with_backoff => failed_runs_are_retried_with_backoff_on);

async fn failed_runs_are_retried_with_backoff_on(b: Backend) {
    b.crow_ok(&["init"]);
    // An admin to tell when the job gives up, and a viewer not to.
    b.crow_json(&["orgs", "create", "--name", "Ops Co"]);
    b.crow_json(&[
        "users",
        "create",
        "--org",
        "Ops Co",
        "--email",
        "ops@example.com",
        "--role",
        "admin",
    ]);
    b.crow_json(&[
        "users",
        "create",
        "--org",
        "Ops Co",
        "--email",
        "view@example.com",
        "--role",
        "viewer",
    ]);
    let wal = tempfile::tempdir().expect("tmp");
    // Once a minute, at the second that comes 10 s from now (UTC, as
    // schedules are): the first slot is due soon after the server is up,
    // not up to a minute later. The three attempts (2 s and 4 s apart) and
    // the 10 s watch for a fourth all end long before the next slot, so
    // `jobs status` still shows this slot's outcome.
    let second = (chrono::Utc::now() + chrono::Duration::seconds(10)).timestamp() % 60;
    let enrich = format!("{second} * * * * *");
    let mut server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_SCHEDULE_ENABLED", "true"),
            ("CROW_SCHEDULE_TICK_SECONDS", "1"),
            ("CROW_SCHEDULE_SOCIAL", "off"),
            ("CROW_SCHEDULE_LEASE_SECONDS", "6"),
            ("CROW_SCHEDULE_MAX_ATTEMPTS", "3"),
            ("CROW_SCHEDULE_RETRY_BASE_SECONDS", "2"),
            ("CROW_SCHEDULE_SESSIONIZE", "off"),
            ("CROW_SCHEDULE_ENRICH", enrich.as_str()),
            ("CROW_SCHEDULE_PATTERNS", "off"),
            ("CROW_SCHEDULE_BILLING", "off"),
            ("CROW_SCHEDULE_OPTIMIZE", "off"),
            ("CROW_SCHEDULE_CHECKPOINT", "off"),
            // Gemini without a key: every attempt fails.
            ("CROW_AI_PROVIDER", "gemini"),
            ("GEMINI_API_KEY", ""),
        ],
    );
    let t0 = Instant::now();
    let failed = || {
        sql(
            &b,
            "SELECT attempt, error, CAST(CAST(window_start AS BIGINT) AS VARCHAR) AS slot, \
                    CAST(CAST(started_at AS BIGINT) AS VARCHAR) AS s \
             FROM job_runs WHERE job = 'enrich' AND \"trigger\" = 'schedule' AND status = 'failed' ORDER BY started_at",
        )
    };
    let mut rows = Vec::new();
    // The first slot is about 10 s away (a minute more if the server was
    // slower than that to start).
    while t0.elapsed() < Duration::from_secs(100) {
        std::thread::sleep(Duration::from_secs(2));
        rows = failed();
        if rows.len() >= 3 {
            break;
        }
    }
    // Past the backoff a fourth attempt would wait (8 s after the third):
    // none comes.
    std::thread::sleep(Duration::from_secs(10));
    let status = b.crow_json(&["jobs", "status"]);
    server.stop();
    let rows_now = failed();
    assert!(rows.len() >= 3, "{rows:?}");
    let slot = &rows_now[0]["slot"];
    let same: Vec<&Value> = rows_now.iter().filter(|r| &r["slot"] == slot).collect();
    let attempts: Vec<i64> = same.iter().map(|r| int(&r["attempt"])).collect();
    assert_eq!(attempts, [1, 2, 3], "{rows_now:?}");
    assert!(
        same[0]["error"]
            .as_str()
            .expect("error")
            .contains("GEMINI_API_KEY"),
        "{rows_now:?}"
    );
    let s: Vec<i64> = same.iter().map(|r| int(&r["s"])).collect();
    assert!(s[1] - s[0] >= 2_000_000, "first backoff 2 s: {s:?}");
    assert!(s[2] - s[1] >= 4_000_000, "second backoff 4 s: {s:?}");
    let enrich = status
        .as_array()
        .expect("schedule")
        .iter()
        .find(|s| s["job"] == "enrich")
        .expect("enrich")
        .clone();
    assert_eq!(
        enrich["schedule"], "*/5 * * * *",
        "status reads the config it runs with"
    );
    assert_eq!(enrich["state"], "failed", "{status}");
    // Out of retries: the organization's admins are notified, once per
    // given-up slot, without the internal error.
    let notes = sql(
        &b,
        "SELECT n.kind, n.title, n.body, u.email FROM notifications n JOIN users u ON n.user_id = u.user_id",
    );
    // One per slot that used its three attempts (a second slot may have
    // come due while the test ran).
    let given_up = rows_now.iter().filter(|r| int(&r["attempt"]) == 3).count();
    assert!(given_up >= 1, "{rows_now:?}");
    assert_eq!(notes.len(), given_up, "{notes:?} for {rows_now:?}");
    assert!(
        notes.iter().all(|n| n["email"] == "ops@example.com"
            && n["kind"] == "job_failed"
            && n["title"].as_str().is_some_and(|t| t.contains("enrich"))
            && !n["body"].as_str().unwrap_or("").contains("GEMINI_API_KEY")),
        "{notes:?}"
    );
}

both_backends!(vacuum_runs_on_its_schedule_and_keeps_the_retention => vacuum_runs_on_its_schedule_and_keeps_the_retention_on);

/// Vacuum is scheduled like optimize and checkpoint: a scheduled run goes
/// over every table, is recorded in `job_runs`, and deletes a file only
/// past `schedule.vacuum_retention_hours` (so nothing of a fresh lake).
async fn vacuum_runs_on_its_schedule_and_keeps_the_retention_on(b: Backend) {
    b.crow_ok(&["init"]);
    b.crow_json(&["orgs", "create", "--name", "Vac"]);
    b.crow_json(&["orgs", "create", "--name", "Vac 2"]);
    let before = b.crow_json(&["sql", "select count(*) as n from organizations"]);
    let wal = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(
        &b,
        wal.path(),
        &[
            ("CROW_SCHEDULE_ENABLED", "true"),
            ("CROW_SCHEDULE_TICK_SECONDS", "1"),
            ("CROW_SCHEDULE_SOCIAL", "off"),
            ("CROW_SCHEDULE_SESSIONIZE", "off"),
            ("CROW_SCHEDULE_ENRICH", "off"),
            ("CROW_SCHEDULE_PATTERNS", "off"),
            ("CROW_SCHEDULE_BILLING", "off"),
            ("CROW_SCHEDULE_OPTIMIZE", "off"),
            ("CROW_SCHEDULE_CHECKPOINT", "off"),
            ("CROW_SCHEDULE_VACUUM", "*/2 * * * * *"),
        ],
    );
    let t0 = Instant::now();
    let mut rows = Vec::new();
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(1));
        rows = sql(
            &b,
            "SELECT status, rows_in, rows_out FROM job_runs WHERE job = 'vacuum' AND \"trigger\" = 'schedule'",
        );
        if rows.iter().any(|r| r["status"] == "succeeded") {
            break;
        }
    }
    server.stop();
    let done = rows
        .iter()
        .find(|r| r["status"] == "succeeded")
        .unwrap_or_else(|| panic!("a scheduled vacuum succeeded: {rows:?}"));
    assert_eq!(
        int(&done["rows_in"]),
        crow_schemas::ALL_TABLES.len() as i64,
        "every table: {done}"
    );
    assert_eq!(
        int(&done["rows_out"]),
        0,
        "within 168 h nothing goes: {done}"
    );
    assert_eq!(
        b.crow_json(&["sql", "select count(*) as n from organizations"]),
        before
    );
    let status = b.crow_json(&["jobs", "status"]);
    let vacuum = status
        .as_array()
        .expect("rows")
        .iter()
        .find(|s| s["job"] == "vacuum")
        .cloned()
        .expect("a vacuum row");
    assert_eq!(vacuum["schedule"], "0 4 * * 0", "the default: {status}");
    assert_eq!(vacuum["last_status"], "succeeded", "{status}");
}

/// `crow serve --only api` runs no scheduler even with the schedule on,
/// and serves no collector; `--only ingest` with the same settings runs
/// the scheduler and the collector but serves no `/api/v1/*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_api_runs_no_scheduler_and_only_ingest_serves_no_api() {
    let b = Backend::local();
    b.crow_ok(&["init"]);
    let created = b.crow_json(&["orgs", "create", "--name", "Split Co"]);
    let org = created["org_id"].as_str().expect("org").to_string();
    let write_key = created["write_key"].as_str().expect("key").to_string();
    let api_key = b.crow_json(&["keys", "create", "--org", "Split Co"])["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    // Yesterday's activity, so a scheduled sessionize has work and writes
    // a ledger row.
    let lake = b.lake().await;
    let yesterday = Utc::now().date_naive() - chrono::Days::new(1);
    land_web(
        &lake,
        &org,
        &day_events("split", yesterday, 3),
        Utc::now() - chrono::Duration::hours(3),
    )
    .await;

    // Sessionize every 2 s, everything else off.
    let env = |host: &'static str, only: &'static str| {
        vec![
            ("CROW_SCHEDULE_ENABLED", "true"),
            ("CROW_SCHEDULE_TICK_SECONDS", "1"),
            ("CROW_SCHEDULE_LEASE_SECONDS", "6"),
            ("CROW_SCHEDULE_SESSIONIZE", "*/2 * * * * *"),
            ("CROW_SCHEDULE_ENRICH", "off"),
            ("CROW_SCHEDULE_PATTERNS", "off"),
            ("CROW_SCHEDULE_BILLING", "off"),
            ("CROW_SCHEDULE_SOCIAL", "off"),
            ("CROW_SCHEDULE_OPTIMIZE", "off"),
            ("CROW_SCHEDULE_CHECKPOINT", "off"),
            ("CROW_SCHEDULE_VACUUM", "off"),
            ("CROW_SERVE_ONLY", only),
            ("HOSTNAME", host),
        ]
    };
    let http = reqwest::Client::new();
    let event = json!({"batch": [page("split-live", "split-live-visitor", Utc::now() - chrono::Duration::minutes(1))]});
    let logs = |s: &Server| -> Vec<String> {
        s.logs
            .lock()
            .expect("logs")
            .iter()
            .map(|l| strip_ansi(l))
            .collect()
    };

    // --only api: the API answers, the collector is not there, and over
    // several schedule slots nothing is scheduled.
    let wal_a = tempfile::tempdir().expect("tmp");
    let mut api = Server::start(&b, wal_a.path(), &env("api-only", "api"));
    let r = http
        .get(api.url("/api/v1/organization"))
        .bearer_auth(&api_key)
        .send()
        .await
        .expect("organization");
    assert_eq!(r.status(), 200, "the API is served");
    let r = http
        .post(api.url("/v1/batch"))
        .basic_auth(&write_key, Some(""))
        .json(&event)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 404, "no collector with --only api");
    tokio::time::sleep(Duration::from_secs(7)).await;
    api.stop();
    let api_logs = logs(&api);
    assert!(
        api_logs.iter().any(|l| l.contains("scheduler off")),
        "{api_logs:#?}"
    );
    assert!(
        !api_logs
            .iter()
            .any(|l| l.contains("scheduler started") || l.contains("scheduler: run started")),
        "--only api ran the scheduler: {api_logs:#?}"
    );
    assert!(
        scheduled_runs(&b).is_empty(),
        "--only api wrote scheduled runs"
    );

    // --only ingest, same settings: the scheduler runs (a scheduled
    // sessionize lands in the ledger), the collector accepts events, and
    // no /api/v1/* route exists.
    let wal_b = tempfile::tempdir().expect("tmp");
    let mut ingest = Server::start(&b, wal_b.path(), &env("ingest-only", "ingest"));
    for path in ["/api/v1/organization", "/api/v1/openapi.json"] {
        let r = http
            .get(ingest.url(path))
            .bearer_auth(&api_key)
            .send()
            .await
            .expect("api");
        assert_eq!(r.status(), 404, "{path} with --only ingest");
    }
    let r = http
        .post(ingest.url("/api/v1/sql"))
        .bearer_auth(&api_key)
        .json(&json!({"sql": "select 1"}))
        .send()
        .await
        .expect("sql");
    assert_eq!(r.status(), 404, "/api/v1/sql with --only ingest");
    let r = http
        .post(ingest.url("/v1/batch"))
        .basic_auth(&write_key, Some(""))
        .json(&event)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200, "the collector accepts events");
    let t0 = Instant::now();
    let runs = loop {
        let runs = scheduled_runs(&b);
        if !runs.is_empty() || t0.elapsed() > Duration::from_secs(30) {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ingest.stop();
    assert!(
        runs.iter()
            .any(|r| r.job == "sessionize" && r.host == "ingest-only"),
        "the same settings without --only api schedule runs: {runs:#?} {:#?}",
        logs(&ingest)
    );
    assert!(runs.iter().all(|r| r.host == "ingest-only"), "{runs:#?}");
}

/// An enrichment answer every session accepts.
const ANSWER: &str = r#"{"description":"Viewed a product and left.","intent":"browse","sentiment":"neutral","outcome":"browsed","product_ids":[],"confidence":0.6}"#;

/// A Gemini-speaking AI provider that holds every request until
/// [`GatedAi::open`]: a scheduled enrich run lasts exactly as long as the
/// test wants, and a request arriving shows the run is under way. It runs
/// on its own thread and runtime so that blocking test code cannot stall
/// it.
struct GatedAi {
    base: String,
    gate: tokio::sync::watch::Sender<bool>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedAi {
    fn start() -> GatedAi {
        use std::sync::atomic::Ordering;
        let (gate, rx) = tokio::sync::watch::channel(false);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let (tx, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                let app = axum::Router::new().fallback(move || {
                    let mut rx = rx.clone();
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        // Until the gate opens (or the test is over).
                        let _ = rx.wait_for(|open| *open).await;
                        (
                            [("content-type", "application/json")],
                            crate::jobs::gemini_ok(ANSWER),
                        )
                    }
                });
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(10))
            .expect("the AI provider listens");
        GatedAi {
            base: format!("http://{addr}"),
            gate,
            calls,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answer the held request and every later one at once.
    fn open(&self) {
        self.gate.send_replace(true);
    }
}

/// A lake on `b` with yesterday's sessions of three visitors, not enriched
/// yet: a scheduled enrich has three provider calls to make.
async fn lake_with_sessions(b: Backend) -> Backend {
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Lease Co"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let lake = b.lake().await;
    let yesterday = Utc::now().date_naive() - chrono::Days::new(1);
    land_web(
        &lake,
        &org,
        &day_events("lease", yesterday, 3),
        Utc::now() - chrono::Duration::hours(3),
    )
    .await;
    b.crow_json(&["jobs", "run", "sessionize", "--quiet"]);
    assert_eq!(
        sql(&b, "SELECT count(*) AS n FROM sessions")[0]["n"],
        json!(3)
    );
    b
}

/// A cron expression (with seconds) whose only slot of the day is `secs`
/// from now, and that slot.
fn slot_in(secs: i64) -> (String, DateTime<Utc>) {
    use chrono::{SubsecRound, Timelike};
    let t = (Utc::now() + chrono::Duration::seconds(secs)).trunc_subsecs(0);
    (
        format!("{} {} {} * * *", t.second(), t.minute(), t.hour()),
        t,
    )
}

/// `crow serve` settings: the scheduler on with a 6 s lease and 1 s ticks,
/// enrich and billing on the given schedules through the gated provider
/// (one call at a time), every other job off.
fn gated_env(ai: &GatedAi, enrich: &str, billing: &str, host: &str) -> Vec<(String, String)> {
    [
        ("CROW_SCHEDULE_ENABLED", "true"),
        ("CROW_SCHEDULE_TICK_SECONDS", "1"),
        ("CROW_SCHEDULE_LEASE_SECONDS", "6"),
        ("CROW_SCHEDULE_SOCIAL", "off"),
        ("CROW_SCHEDULE_SESSIONIZE", "off"),
        ("CROW_SCHEDULE_ENRICH", enrich),
        ("CROW_SCHEDULE_PATTERNS", "off"),
        ("CROW_SCHEDULE_BILLING", billing),
        ("CROW_SCHEDULE_OPTIMIZE", "off"),
        ("CROW_SCHEDULE_CHECKPOINT", "off"),
        ("CROW_SCHEDULE_VACUUM", "off"),
        ("CROW_AI_PROVIDER", "gemini"),
        ("CROW_AI_MODEL", "gemini-test"),
        ("CROW_AI_BASE_URL", ai.base.as_str()),
        ("GEMINI_API_KEY", "test-key"),
        ("CROW_AI_CONCURRENCY", "1"),
        ("HOSTNAME", host),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn start_server(b: &Backend, wal: &std::path::Path, env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(b, wal, &env)
}

/// A server's log lines without colours.
fn log_lines(s: &Server) -> Vec<String> {
    s.logs
        .lock()
        .expect("logs")
        .iter()
        .map(|l| strip_ansi(l))
        .collect()
}

/// `name=value` of a log line.
fn log_field(line: &str, name: &str) -> Option<String> {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_string())
}

/// `(slot, attempt)` of every scheduled start of `job` in a server's log.
fn starts_of(s: &Server, job: &str) -> Vec<(String, i64)> {
    log_lines(s)
        .iter()
        .filter(|l| l.contains("scheduler: run started"))
        .filter(|l| log_field(l, "job").as_deref() == Some(job))
        .map(|l| {
            (
                log_field(l, "slot").expect("slot"),
                log_field(l, "attempt")
                    .and_then(|a| a.parse().ok())
                    .expect("attempt"),
            )
        })
        .collect()
}

/// Poll `f` every 200 ms until it gives a value, for at most `secs`.
async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scheduled enrich runs: `(host, status, attempt)`, oldest first.
fn enrich_runs(b: &Backend) -> Vec<(String, String, i64)> {
    sql(
        b,
        "SELECT host, status, attempt FROM job_runs \
         WHERE job = 'enrich' AND \"trigger\" = 'schedule' ORDER BY started_at",
    )
    .iter()
    .map(|r| {
        (
            r["host"].as_str().unwrap_or_default().to_string(),
            r["status"].as_str().expect("status").to_string(),
            int(&r["attempt"]),
        )
    })
    .collect()
}

/// The error of the scheduled enrich run of `attempt`.
fn enrich_error(b: &Backend, attempt: i64) -> String {
    sql(
        b,
        &format!(
            "SELECT error FROM job_runs WHERE job = 'enrich' AND \"trigger\" = 'schedule' AND attempt = {attempt}"
        ),
    )[0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every state of a job's lease, by sequence number, read from the lake's
/// store (a folder or S3).
async fn lease_states(b: &Backend, job: &str) -> Vec<Value> {
    use crow_lake::object_store::ObjectStoreExt;
    let lake = b.lake().await;
    let url = lake.url_of(&format!("_leases/{job}/")).expect("url");
    let (store, dir) = lake.store_for(&url).expect("store");
    let listed = store
        .list_with_delimiter(Some(&dir))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut states = Vec::new();
    for meta in listed.objects {
        if !meta.location.as_ref().ends_with(".json") {
            continue;
        }
        let bytes = store
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        states.push(serde_json::from_slice::<Value>(&bytes).expect("lease json"));
    }
    states.sort_by_key(|s| s["seq"].as_u64());
    states
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// Each session enriched exactly once.
fn assert_enriched_once(b: &Backend) {
    let r = &sql(
        b,
        "SELECT count(*) AS n, count(DISTINCT session_id) AS s FROM interactions",
    )[0];
    assert_eq!(
        (int(&r["n"]), int(&r["s"])),
        (3, 3),
        "one interaction per session"
    );
}

both_backends!(a_dead_servers_lease_is_taken_over_after_it_expires => dead_servers_lease);

/// A server killed (SIGKILL) in the middle of a scheduled run leaves its
/// lease to expire; a second server then takes the same slot over as
/// attempt 2 — not before the lease expired — and the slot's job completes
/// once: the ledger shows the dead server's attempt `failed` (recorded by
/// the survivor, "abandoned") and the survivor's success, and every session
/// has one interaction.
async fn dead_servers_lease(b: Backend) {
    let b = lake_with_sessions(b).await;
    let ai = GatedAi::start();
    let (cron, slot) = slot_in(8);
    let wal_a = tempfile::tempdir().expect("tmp");
    let wal_b = tempfile::tempdir().expect("tmp");
    let mut servers = vec![
        start_server(&b, wal_a.path(), &gated_env(&ai, &cron, "off", "serve-a")),
        start_server(&b, wal_b.path(), &gated_env(&ai, &cron, "off", "serve-b")),
    ];
    assert!(Utc::now() < slot, "both servers started before the slot");
    let slot_text = slot.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Whichever server won the slot is in the middle of its run: its first
    // provider call is held.
    let holder = wait_for("a server to start the slot's run", 30, || {
        (ai.calls() >= 1)
            .then(|| {
                servers
                    .iter()
                    .position(|s| !starts_of(s, "enrich").is_empty())
            })
            .flatten()
    })
    .await;
    assert_eq!(
        starts_of(&servers[holder], "enrich"),
        [(slot_text.clone(), 1)]
    );
    let mut dead = servers.remove(holder);
    let survivor = servers.remove(0);
    let (dead_host, survivor_host) = if holder == 0 {
        ("serve-a", "serve-b")
    } else {
        ("serve-b", "serve-a")
    };
    dead.kill9();
    // The survivor retries the same slot as attempt 2 once the lease
    // expired.
    wait_for("the survivor to take the lease over", 30, || {
        (!starts_of(&survivor, "enrich").is_empty()).then_some(())
    })
    .await;
    assert_eq!(starts_of(&survivor, "enrich"), [(slot_text.clone(), 2)]);
    let states = lease_states(&b, "enrich").await;
    let holder_of = |s: &Value| s["holder"].as_str().expect("holder").to_string();
    let dead_expiry = states
        .iter()
        .filter(|s| holder_of(s).starts_with(dead_host))
        .map(|s| ts(&s["expires_at"]))
        .max()
        .expect("the dead server's states");
    let taken = states
        .iter()
        .find(|s| holder_of(s).starts_with(survivor_host))
        .expect("the survivor's state");
    assert!(
        ts(&taken["written_at"]) >= dead_expiry,
        "taken over before the lease expired: {states:#?}"
    );
    assert_eq!(taken["attempt"], 2, "{taken}");
    ai.open();
    wait_for("the survivor's run to succeed", 60, || {
        enrich_runs(&b)
            .iter()
            .any(|r| r.1 == "succeeded")
            .then_some(())
    })
    .await;
    let mut survivor = survivor;
    survivor.stop();
    assert_eq!(
        enrich_runs(&b),
        [
            (dead_host.to_string(), "failed".to_string(), 1),
            (survivor_host.to_string(), "succeeded".to_string(), 2)
        ],
        "the dead server's attempt, recorded failed by the survivor, then the survivor's"
    );
    let error = enrich_error(&b, 1);
    assert!(
        error.starts_with(&format!("abandoned: the lease of {dead_host}/")),
        "{error}"
    );
    assert_enriched_once(&b);
    let last = lease_states(&b, "enrich").await.pop().expect("a state");
    assert_eq!(
        (last["state"].as_str(), last["attempt"].as_i64()),
        (Some("succeeded"), Some(2)),
        "{last}"
    );
    assert!(holder_of(&last).starts_with(survivor_host), "{last}");
    assert_eq!(ts(&last["slot"]), slot);
}

// Local only: signal handling does not depend on the backend, and the
// lease and ledger writes it checks run on S3 in the tests around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish_and_starts_no_other_local() {
    sigterm_finishes_the_run(Backend::local()).await;
}

/// SIGTERM while a scheduled run is under way: the process stays up until
/// the run has finished and recorded its success, then exits cleanly; a job
/// due at the same slot behind it (billing) is not started.
async fn sigterm_finishes_the_run(b: Backend) {
    let b = lake_with_sessions(b).await;
    let ai = GatedAi::start();
    let (cron, slot) = slot_in(4);
    let wal = tempfile::tempdir().expect("tmp");
    let mut server = start_server(&b, wal.path(), &gated_env(&ai, &cron, &cron, "serve-t"));
    assert!(Utc::now() < slot, "the server started before the slot");
    wait_for("the run to reach the provider", 30, || {
        (ai.calls() >= 1 && !starts_of(&server, "enrich").is_empty()).then_some(())
    })
    .await;
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for("the server to begin shutting down", 30, || {
        log_lines(&server)
            .iter()
            .any(|l| l.contains("shutting down: stopping the scheduler"))
            .then_some(())
    })
    .await;
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "crow serve exited with a run in progress"
    );
    assert!(enrich_runs(&b).iter().all(|r| r.1 == "running"));
    ai.open();
    let exit = wait_for("crow serve to exit", 60, || {
        server.child.try_wait().expect("try_wait")
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        enrich_runs(&b),
        [("serve-t".to_string(), "succeeded".to_string(), 1)]
    );
    assert_enriched_once(&b);
    let logs = log_lines(&server);
    let at = |needle: &str| {
        logs.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {logs:#?}"))
    };
    assert!(at("scheduler: run succeeded") < at("scheduler stopped"));
    assert_eq!(
        starts_of(&server, "billing"),
        [],
        "billing was due at the same slot but the server was stopping"
    );
    assert!(
        scheduled_runs(&b).iter().all(|r| r.job == "enrich"),
        "{:?}",
        scheduled_runs(&b)
    );
    let last = lease_states(&b, "enrich").await.pop().expect("a state");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(
        lease_states(&b, "billing").await,
        Vec::<Value>::new(),
        "billing's lease was never taken"
    );
}

both_backends!(slots_missed_while_busy_collapse_into_one => slots_missed_while_busy);

/// Slots that pass while a run is busy collapse into one: with enrich
/// every 2 s and a run held for more than four slots, the next run is for
/// the latest slot, and none of the slots in between ever starts.
async fn slots_missed_while_busy(b: Backend) {
    let b = lake_with_sessions(b).await;
    let ai = GatedAi::start();
    let wal = tempfile::tempdir().expect("tmp");
    let mut server = start_server(
        &b,
        wal.path(),
        &gated_env(&ai, "*/2 * * * * *", "off", "serve-c"),
    );
    let first = wait_for("the first run to reach the provider", 30, || {
        (ai.calls() >= 1)
            .then(|| starts_of(&server, "enrich").first().cloned())
            .flatten()
    })
    .await;
    let first_slot = ts(&json!(first.0));
    // Hold the run until three more slots have passed.
    wait_for("three slots to pass", 30, || {
        (Utc::now() >= first_slot + chrono::Duration::milliseconds(8_500)).then_some(())
    })
    .await;
    let opened = Utc::now();
    ai.open();
    let starts = wait_for("two more runs", 30, || {
        let s = starts_of(&server, "enrich");
        (s.len() >= 3).then_some(s)
    })
    .await;
    server.stop();
    let slots: Vec<DateTime<Utc>> = starts.iter().map(|s| ts(&json!(s.0))).collect();
    assert_eq!(slots[0], first_slot);
    // The run after the busy one is for the latest slot by its end, not for
    // the first one it missed.
    assert!(
        slots[1] > opened - chrono::Duration::seconds(2),
        "the next run is the latest slot: {starts:?} (gate opened {opened})"
    );
    // Slots that passed at least 2 s before the run ended (at least three:
    // +2 s, +4 s, +6 s) never start.
    let mut missed = 0;
    let mut m = first_slot + chrono::Duration::seconds(2);
    while m < opened - chrono::Duration::seconds(2) {
        assert!(!slots.contains(&m), "the missed slot {m} ran: {starts:?}");
        missed += 1;
        m += chrono::Duration::seconds(2);
    }
    assert!(missed >= 3, "{missed} slots missed");
    assert!(starts.iter().all(|s| s.1 == 1), "{starts:?}");
    assert_eq!(
        enrich_runs(&b)
            .iter()
            .filter(|r| r.1 == "succeeded")
            .count(),
        1,
        "the later runs found nothing to do: {:?}",
        enrich_runs(&b)
    );
    assert_enriched_once(&b);
}

/// A server that cannot renew its lease in time abandons its run: with the
/// job's lease folder unwritable in the middle of a run (replaced by a
/// file), renewals fail, and once the lease has expired the run is given
/// up — its held provider call dropped, nothing enriched, the run recorded
/// `failed`. With the folder
/// back, the same slot runs again as attempt 2 and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_cannot_be_renewed_is_abandoned_local() {
    let b = lake_with_sessions(Backend::local()).await;
    let ai = GatedAi::start();
    let (cron, slot) = slot_in(4);
    let wal = tempfile::tempdir().expect("tmp");
    let mut server = start_server(&b, wal.path(), &gated_env(&ai, &cron, "off", "serve-r"));
    assert!(Utc::now() < slot, "the server started before the slot");
    wait_for("the run to reach the provider", 30, || {
        (ai.calls() >= 1 && !starts_of(&server, "enrich").is_empty()).then_some(())
    })
    .await;
    let leases = std::path::Path::new(&b.uri).join("_leases");
    let (dir, away) = (leases.join("enrich"), leases.join("enrich.away"));
    std::fs::rename(&dir, &away).expect("move the lease folder away");
    std::fs::write(&dir, b"not a folder").expect("a file in its place");
    // Renewals may have landed before the folder went: the lease lasts
    // until the latest expiry written.
    let expiry = std::fs::read_dir(&away)
        .expect("states")
        .filter_map(|e| e.ok())
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .map(|s| ts(&s["expires_at"]))
        .max()
        .expect("a state");
    wait_for("the run to be abandoned", 30, || {
        log_lines(&server)
            .iter()
            .any(|l| l.contains("scheduler: run failed") && l.contains("run abandoned"))
            .then_some(())
    })
    .await;
    assert!(
        Utc::now() >= expiry,
        "abandoned before the lease expired at {expiry}"
    );
    assert!(
        log_lines(&server)
            .iter()
            .any(|l| l.contains("could not renew the lease")),
        "renewals failed first"
    );
    assert_eq!(
        sql(&b, "SELECT count(*) AS n FROM interactions")[0]["n"],
        json!(0),
        "the abandoned run wrote nothing"
    );
    assert_eq!(
        enrich_runs(&b),
        [("serve-r".to_string(), "failed".to_string(), 1)],
        "the abandoned run is recorded failed"
    );
    let error = enrich_error(&b, 1);
    assert!(error.contains("run abandoned"), "{error}");

    // The lake is back: the same slot's second attempt runs and succeeds.
    ai.open();
    std::fs::remove_file(&dir).expect("remove the file");
    std::fs::rename(&away, &dir).expect("the lease folder back");
    wait_for("the second attempt to succeed", 60, || {
        enrich_runs(&b)
            .iter()
            .any(|r| r.1 == "succeeded")
            .then_some(())
    })
    .await;
    server.stop();
    let slot_text = slot.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(
        starts_of(&server, "enrich"),
        [(slot_text.clone(), 1), (slot_text, 2)]
    );
    assert_eq!(
        enrich_runs(&b),
        [
            ("serve-r".to_string(), "failed".to_string(), 1),
            ("serve-r".to_string(), "succeeded".to_string(), 2)
        ]
    );
    assert_enriched_once(&b);
}

both_backends!(a_backfill_that_failed_part_way_is_finished_by_running_it_again => a_backfill_that_failed_part_way_is_finished_by_running_it_again_on);

/// A backfill that fails part-way stops at the failing step and names it,
/// with the steps before it done and none after it run; running the same
/// backfill again finishes it, and the tables hold each session,
/// interaction and usage day once.
async fn a_backfill_that_failed_part_way_is_finished_by_running_it_again_on(b: Backend) {
    b.crow_ok(&["init"]);
    let org = b.crow_json(&["orgs", "create", "--name", "Resume Co"])["org_id"]
        .as_str()
        .expect("org")
        .to_string();
    let lake = b.lake().await;
    let mut events = Vec::new();
    for (i, day) in ["2026-02-02", "2026-02-03", "2026-02-04"]
        .iter()
        .enumerate()
    {
        events.extend(day_events(&format!("r{i}"), d(day), 3 + i));
    }
    land_web(
        &lake,
        &org,
        &events,
        Utc::now() - chrono::Duration::hours(3),
    )
    .await;
    let args = [
        "backfill",
        "sessionize",
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-05",
        "--quiet",
    ];

    // Gemini without a key: enrich cannot start, after sessionize's three
    // days are done.
    let out = std::process::Command::new(crate::support::crow_bin())
        .arg("--lake")
        .arg(&b.uri)
        .args(args)
        .envs(b.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("CROW_CONFIG")
        .env_remove("CROW_LAKE")
        .env("CROW_AI_PROVIDER", "gemini")
        .env("GEMINI_API_KEY", "")
        .output()
        .expect("run crow");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backfill failed: {stderr}");
    assert!(
        stderr.contains("backfill stopped at enrich [2026-02-02T00:00:00Z, 2026-02-03T00:00:00Z)"),
        "the error names the step: {stderr}"
    );
    assert!(stderr.contains("GEMINI_API_KEY"), "{stderr}");
    assert_eq!(
        backfill_runs(&b),
        BTreeMap::from([("sessionize".to_string(), 3)]),
        "sessionize done, nothing after enrich run"
    );
    let half = snapshot(&b);
    assert_eq!(half.0.len(), 3 + 4 + 5, "{:?}", half.0);
    assert!(half.1.is_empty() && half.2.is_empty(), "{half:?}");

    // The same backfill again, the provider working: finished.
    let steps = b.crow_json(&args);
    assert_eq!(steps.as_array().expect("steps").len(), 8, "{steps}");
    assert_eq!(
        backfill_runs(&b),
        BTreeMap::from([
            ("billing".to_string(), 1),
            ("enrich".to_string(), 3),
            ("patterns".to_string(), 1),
            ("sessionize".to_string(), 6)
        ])
    );
    let done = snapshot(&b);
    assert_eq!(done.0, half.0, "the sessions replaced, not doubled");
    assert_eq!(done.1.len(), 12, "every session enriched once");
    let enriched: BTreeSet<String> = done.1.iter().map(|r| r["session_id"].to_string()).collect();
    assert_eq!(enriched.len(), 12);
    let usage: Vec<(String, i64, i64, i64)> = done
        .2
        .iter()
        .map(|r| {
            (
                r["d"].as_str().expect("d").to_string(),
                int(&r["events"]),
                int(&r["sessions"]),
                int(&r["interactions"]),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [
            ("2026-02-02".to_string(), 9, 3, 3),
            ("2026-02-03".to_string(), 12, 4, 4),
            ("2026-02-04".to_string(), 15, 5, 5)
        ]
    );
}

both_backends!(slots_missed_while_down_collapse_into_one_run_at_start => slots_missed_while_down);

/// Slots missed while no server ran collapse into one as well: a server
/// started after enrich's schedule passed several slots since the job's last
/// run runs the latest of them right away — one run, for a slot before it
/// started — and none of the others.
async fn slots_missed_while_down(b: Backend) {
    let b = lake_with_sessions(b).await;
    let ai = GatedAi::start();
    ai.open();
    let env = gated_env(&ai, "*/2 * * * * *", "off", "serve-d");
    let wal_1 = tempfile::tempdir().expect("tmp");
    let mut first = start_server(&b, wal_1.path(), &env);
    wait_for("a first scheduled run to succeed", 30, || {
        enrich_runs(&b)
            .iter()
            .any(|r| r.1 == "succeeded")
            .then_some(())
    })
    .await;
    first.stop();
    let last = lease_states(&b, "enrich").await.pop().expect("a state");
    assert_eq!(last["state"], "succeeded", "{last}");
    let last_slot = ts(&last["slot"]);
    // Down across three slots.
    wait_for("three slots to pass", 30, || {
        (Utc::now() >= last_slot + chrono::Duration::milliseconds(7_500)).then_some(())
    })
    .await;
    let wal_2 = tempfile::tempdir().expect("tmp");
    let mut second = start_server(&b, wal_2.path(), &env);
    let starts = wait_for("a run on start-up", 30, || {
        let s = starts_of(&second, "enrich");
        (!s.is_empty()).then_some(s)
    })
    .await;
    second.stop();
    let logs = log_lines(&second);
    let up = logs
        .iter()
        .find(|l| l.contains("scheduler started"))
        .and_then(|l| l.split_whitespace().next())
        .map(|t| ts(&json!(t)))
        .expect("the scheduler's start time");
    let first_slot = ts(&json!(starts[0].0));
    // The latest slot before start-up, or — when the next slot came due
    // while the scheduler read the lease (a CI run saw the start-up log
    // 24 ms before a slot) — that slot, into which the missed one collapses.
    assert!(
        first_slot > up - chrono::Duration::seconds(2)
            && first_slot <= up + chrono::Duration::seconds(2),
        "the first run is for the latest slot at start-up ({up}): {starts:?}"
    );
    assert!(
        first_slot >= last_slot + chrono::Duration::seconds(6),
        "three slots were missed (+2 s, +4 s, +6 s): last {last_slot}, {starts:?}"
    );
    assert_eq!(
        starts
            .iter()
            .filter(|s| ts(&json!(s.0)) <= first_slot)
            .count(),
        1,
        "one run for the missed slots: {starts:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("slots missed while down, running the latest")),
        "{logs:#?}"
    );
}
