//! `crow bench ingest`: durable ingest throughput and latency over real HTTP.
//!
//! Starts a collector in this process on 127.0.0.1 over a fresh lake (a temp
//! folder unless `--lake` is given), creates an organization, and drives it
//! with concurrent HTTP clients sending Segment batches of each size. Every
//! request is timed from send to durable acknowledgement. The plain JSON
//! parse rate of the same payloads is measured in the same run as the
//! ceiling. Finally it measures how long an acknowledged event takes to be
//! visible to SQL.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use crow_ingest::Collector;
use crow_lake::Lake;
use crow_schemas::config::Config;
use serde_json::json;

pub struct BenchArgs {
    pub batches: Vec<usize>,
    pub concurrency: usize,
    pub seconds: u64,
}

/// `crow bench ingest --url URL --write-key KEY`: the same load against a
/// collector that runs elsewhere (e.g. a `crow serve` that also answers
/// queries); acknowledged requests and latency only, since the lake behind
/// it is not this process's to watch.
pub async fn ingest_remote(url: &str, write_key: &str, args: BenchArgs) -> Result<()> {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    );
    let url = format!("{}/v1/batch", url.trim_end_matches('/'));
    crate::output::line(format_args!(
        "| batch | clients | requests | 503s | events/s | p50 ms | p99 ms |"
    ))?;
    crate::output::line(format_args!("|---:|---:|---:|---:|---:|---:|---:|"))?;
    for &batch in &args.batches {
        let payloads: Vec<Vec<u8>> = (0..64).map(|i| payload(batch, i)).collect();
        let l = load(
            &url,
            &auth,
            &payloads,
            args.concurrency,
            Duration::from_secs(args.seconds),
        )
        .await?;
        crate::output::line(format_args!(
            "| {batch} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            args.concurrency,
            l.requests,
            l.refused,
            (l.requests * batch) as f64 / l.seconds,
            l.p50,
            l.p99,
        ))?;
    }
    Ok(())
}

pub async fn ingest(cfg: Config, lake_given: bool, args: BenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg;
    if !lake_given {
        cfg.lake.uri = tmp.path().join("lake").display().to_string();
    }
    let lake = Lake::open(&cfg.lake).await?;
    lake.init().await?;
    let org = crow_lake::orgs::create(&lake, "Bench Co", None, None).await?;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", org.write_key))
    );
    let wal_dir = tmp.path().join("wal");
    let collector = Collector::start(lake.clone(), cfg.ingest.clone(), wal_dir).await?;
    let (addr, server) = collector.serve_on_loopback().await?;
    let url = format!("http://{addr}/v1/batch");
    crate::output::line(format_args!("| batch | clients | requests | 503s | events/s | p50 ms | p99 ms | drain s | committed events/s | JSON-parse ceiling events/s | ratio |"))?;
    crate::output::line(format_args!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ))?;
    for &batch in &args.batches {
        let payloads: Vec<Vec<u8>> = (0..64).map(|i| payload(batch, i)).collect();
        let ceiling = parse_ceiling(&payloads, batch);
        let l = load(
            &url,
            &auth,
            &payloads,
            args.concurrency,
            Duration::from_secs(args.seconds),
        )
        .await?;
        // Until every acknowledged event is committed to the lake: the
        // sustained rate counts the flusher's backlog too.
        let drain = Instant::now();
        wait_drained(&collector).await;
        let drain = drain.elapsed().as_secs_f64();
        let events = (l.requests * batch) as f64;
        let events_per_s = events / l.seconds;
        crate::output::line(format_args!(
            "| {batch} | {} | {} | {} | {events_per_s:.0} | {:.2} | {:.2} | {drain:.2} | {:.0} | {ceiling:.0} | {:.2} |",
            args.concurrency,
            l.requests,
            l.refused,
            l.p50,
            l.p99,
            events / (l.seconds + drain),
            events_per_s / ceiling
        ))?;
    }
    // Visibility: one acknowledged event, then poll SQL until it shows.
    let http = reqwest::Client::new();
    let id = format!("visibility-{}", uuid::Uuid::new_v4());
    let body =
        json!({"batch": [{"type": "track", "event": "Visible", "userId": "u", "messageId": id}]});
    let sent = Instant::now();
    let r = http
        .post(&url)
        .header("Authorization", &auth)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "visibility probe refused: {}",
        r.status()
    );
    let q = format!("select count(*) as n from raw_web_events where message_id = '{id}'");
    loop {
        let (_, b) = lake.sql(&q).await?;
        let rows = crow_lake::batch::batches_to_json(&b)?;
        if rows
            .first()
            .and_then(|r| r.get("n"))
            .and_then(serde_json::Value::as_i64)
            == Some(1)
        {
            break;
        }
        anyhow::ensure!(
            sent.elapsed() < Duration::from_secs(60),
            "event not visible after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::output::line(format_args!(
        "\nack → visible to `crow sql`: {:.2} s (flush interval {} ms)",
        sent.elapsed().as_secs_f64(),
        cfg.ingest.flush_interval_ms
    ))?;
    server.abort();
    collector.shutdown().await;
    Ok(())
}

fn payload(batch: usize, seed: usize) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (0..batch)
        .map(|i| {
            json!({
                "type": "track", "event": "Product Viewed",
                "anonymousId": format!("anon-{seed}-{i}"),
                "messageId": "", // filled per request
                "timestamp": "2026-11-01T12:00:00.000Z",
                "properties": {"product_id": format!("nw-{:04}", 1000 + i % 18), "sku": "NW-HE-001",
                    "name": "Aria Over-Ear Wireless Headphones", "price": 249.0, "currency": "USD", "category": "Headphones"},
                "context": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
                    "device": {"type": "desktop"}, "library": {"name": "crow.js", "version": "0.1.0"},
                    "page": {"url": "https://northwind-audio.example/products/aria", "path": "/products/aria",
                        "referrer": "https://www.google.com/", "title": "Aria"},
                    "campaign": {"source": "google", "medium": "cpc", "name": "autumn"}}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"batch": events, "sentAt": "2026-11-01T12:00:01.000Z"}))
        .unwrap_or_default()
}

/// Events per second that plain `serde_json` parsing of the same payloads
/// reaches on all cores: the ceiling for any JSON collector.
fn parse_ceiling(payloads: &[Vec<u8>], batch: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            let (stop, count) = (stop.clone(), count.clone());
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let v: serde_json::Value =
                        serde_json::from_slice(&payloads[i % payloads.len()]).unwrap_or_default();
                    std::hint::black_box(v);
                    count.fetch_add(batch as u64, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// One load run: acknowledged requests, 503 refusals, latency percentiles
/// (ms) and how long it ran (s).
struct Load {
    requests: usize,
    refused: u64,
    p50: f64,
    p99: f64,
    seconds: f64,
}

async fn load(
    url: &str,
    auth: &str,
    payloads: &[Vec<u8>],
    clients: usize,
    duration: Duration,
) -> Result<Load> {
    let refused = Arc::new(AtomicU64::new(0));
    // Each payload cut at its events' empty message ids, so every request
    // can give every event its own id without searching the text.
    const HOLE: &str = "\"messageId\":\"\"";
    let payloads: Arc<Vec<Vec<String>>> = Arc::new(
        payloads
            .iter()
            .map(|p| {
                String::from_utf8_lossy(p)
                    .split(HOLE)
                    .map(str::to_string)
                    .collect()
            })
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    let run = Arc::new(uuid::Uuid::new_v4().simple().to_string());
    for c in 0..clients {
        let (url, auth, payloads, run, refused) = (
            url.to_string(),
            auth.to_string(),
            payloads.clone(),
            run.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            let mut n = 0usize;
            while started.elapsed() < duration {
                // A unique message id per event, so the lake holds real rows.
                let parts = &payloads[n % payloads.len()];
                let mut body = String::with_capacity(
                    parts.iter().map(String::len).sum::<usize>() + parts.len() * 64,
                );
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        use std::fmt::Write as _;
                        let _ = write!(body, "\"messageId\":\"{run}-{c}-{n}-{i}\"");
                    }
                    body.push_str(part);
                }
                n += 1;
                let t = Instant::now();
                match http
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                    Ok(r) if r.status().as_u16() == 503 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Ok(r) => anyhow::bail!("unexpected status {}", r.status()),
                    Err(e) => return Err(e).context("request failed"),
                }
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Load {
        requests: all.len(),
        refused: refused.load(Ordering::Relaxed),
        p50: pct(0.50),
        p99: pct(0.99),
        seconds: secs,
    })
}

async fn wait_drained(c: &Collector) {
    let start = Instant::now();
    let _ = c.wal.seal_now().await;
    while c.wal.stats().pending_bytes.load(Ordering::Relaxed) > 0
        && start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `crow bench generate`: land synthetic web events (the demo brand's
/// funnel, through the collector's normalization) for the job benchmarks.
pub async fn generate(lake: &Lake, events: u64, days: u32, seed: u64) -> Result<()> {
    use crow_ingest::generate::{self, GenerateOptions};
    use crow_ingest::normalize::{normalize, NormalizeContext};
    use indicatif::{ProgressBar, ProgressStyle};
    lake.init().await?;
    // A second run on the same lake adds to the same organization.
    let org_id = match crow_lake::orgs::find_by_name(lake, "Bench Co").await? {
        Some(o) => o.org_id,
        None => {
            crow_lake::orgs::create(lake, "Bench Co", None, None)
                .await?
                .org
                .org_id
        }
    };
    crow_lake::products::upsert(lake, &generate::catalog_products(&org_id)).await?;
    // The data ends at the start of yesterday, not today: a run shortly
    // after midnight UTC would otherwise still hold the last evening's
    // sessions open (they are within one gap of the clock), and a peer that
    // knows no clock would count them; the comparison would depend on the
    // time of day.
    let to = chrono::Utc::now()
        .date_naive()
        .pred_opt()
        .context("date out of range")?;
    let first_day = to
        .checked_sub_days(chrono::Days::new(u64::from(days.max(1))))
        .context("date out of range")?;
    let bar = ProgressBar::new(events).with_style(
        ProgressStyle::with_template(
            "{spinner} generating [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let received_at = chrono::Utc::now();
    let ctx = NormalizeContext {
        org_id: &org_id,
        received_at,
        ip_hash: None,
        strip_query_params: &[],
        ip_salt: "bench",
    };
    let (mut landed, mut visitors, mut chunk) = (0u64, 0u64, 0u64);
    // About 8.5 events per visitor; chunks of 50k visitors keep memory flat.
    while landed < events {
        let remaining = events - landed;
        let n_visitors = ((remaining as f64 / 8.5).ceil() as usize).clamp(1, 50_000);
        let generated = generate::events(&GenerateOptions {
            visitors: n_visitors,
            first_day,
            days: days.max(1),
            seed: seed.wrapping_add(chunk),
            incidents: Vec::new(),
        });
        let mut rows = Vec::with_capacity(generated.len());
        for e in generated.iter().take(remaining as usize) {
            let row = normalize(e, None, &ctx)
                .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.reason))?;
            rows.push(row);
        }
        drop(generated);
        rows.sort_by_key(|r| r.event_date);
        let batch = crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows)?;
        lake.append(crow_schemas::RAW_WEB_EVENTS.name, vec![batch])
            .await?;
        landed += rows.len() as u64;
        visitors += n_visitors as u64;
        chunk += 1;
        bar.set_position(landed);
    }
    bar.finish_and_clear();
    let out = json!({
        "org_id": org_id,
        "events": landed,
        "visitors": visitors,
        "from": first_day.to_string(),
        "to": to.to_string(),
        "lake": lake.uri(),
    });
    crate::output::line(format_args!("{}", serde_json::to_string_pretty(&out)?))?;
    Ok(())
}

/// `crow bench enrich`: enrichment throughput against a local
/// OpenAI-compatible server that answers after a fixed latency, compared
/// with the ideal `concurrency / latency`.
pub async fn enrich(
    cfg: Config,
    sessions_wanted: usize,
    latency_ms: u64,
    concurrency: usize,
) -> Result<()> {
    use crow_jobs::job::run;
    use crow_jobs::{ai, enrich, sessionize, JobContext, Request};
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg;
    cfg.lake.uri = tmp.path().join("lake").display().to_string();
    let lake = Lake::open(&cfg.lake).await?;
    lake.init().await?;
    // Sessions come from generated activity: about 1.1 sessions per visitor.
    let org = crow_lake::orgs::create(&lake, "Bench Co", None, None).await?;
    let ctx = crow_ingest::normalize::NormalizeContext {
        org_id: &org.org.org_id,
        received_at: chrono::Utc::now(),
        ip_hash: None,
        strip_query_params: &[],
        ip_salt: "bench",
    };
    let today = chrono::Utc::now().date_naive();
    let events = crow_ingest::generate::events(&crow_ingest::generate::GenerateOptions {
        visitors: sessions_wanted,
        first_day: today
            .checked_sub_days(chrono::Days::new(7))
            .context("date")?,
        days: 7,
        seed: 11,
        incidents: Vec::new(),
    });
    let rows = events
        .iter()
        .map(|e| crow_ingest::normalize::normalize(e, None, &ctx))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.reason))?;
    let batch = crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows)?;
    lake.append(crow_schemas::RAW_WEB_EVENTS.name, vec![batch])
        .await?;
    // The bench's own settings: hour-long sessions, the default memory,
    // two retries per call, `concurrency` calls at once, no token budget.
    cfg.jobs.session_gap_minutes = 60;
    cfg.jobs.memory_limit_mb = crow_schemas::config::JobsConfig::default().memory_limit_mb;
    cfg.ai.max_retries = 2;
    cfg.ai.concurrency = concurrency;
    cfg.ai.daily_token_budget = 0;
    let s = run::<sessionize::Sessionize>(
        &JobContext::new(lake.clone(), cfg.clone()),
        &Request::incremental(),
    )
    .await?;

    // The fake provider: OpenAI wire format, a fixed latency, valid answers.
    let calls = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let app = {
        let (calls, in_flight, max_in_flight) =
            (calls.clone(), in_flight.clone(), max_in_flight.clone());
        axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let (calls, in_flight, max_in_flight) =
                    (calls.clone(), in_flight.clone(), max_in_flight.clone());
                async move {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                    max_in_flight.fetch_max(now, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(latency_ms)).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let answer = r#"{"description":"Viewed products.","intent":"browse","sentiment":"neutral","outcome":"browsed","product_ids":[],"confidence":0.5}"#;
                    axum::Json(json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 400, "completion_tokens": 40}
                    }))
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let provider: Arc<dyn ai::Provider> = Arc::new(ai::openai::OpenAi::new(
        &format!("http://{addr}/v1"),
        "bench-model",
        None,
        Duration::from_secs(30),
    )?);
    let ctx = JobContext::new(lake.clone(), cfg.clone()).with_provider(provider);
    let started = Instant::now();
    let r = run::<enrich::Enrich>(&ctx, &Request::incremental()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let ideal = r.sessions as f64 * latency_ms as f64 / 1000.0 / concurrency as f64;
    let calls_first = calls.load(Ordering::Relaxed);
    // Again over the same window: every answer comes from the cache.
    let window = crow_jobs::Window {
        start: r.window_start.context("window")?,
        end: r.window_end.context("window")?,
    };
    let started = Instant::now();
    let again = run::<enrich::Enrich>(&ctx, &Request::new(None, Some(window))).await?;
    let cached_s = started.elapsed().as_secs_f64();
    server.abort();
    crate::output::line(format_args!("| sessions | latency ms | concurrency | max in flight | seconds | ideal seconds | efficiency | sessions/s | cached re-run s | provider calls on re-run |"))?;
    crate::output::line(format_args!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ))?;
    crate::output::line(format_args!(
        "| {} | {latency_ms} | {concurrency} | {} | {elapsed:.2} | {ideal:.2} | {:.0}% | {:.1} | {cached_s:.2} | {} |",
        r.sessions,
        max_in_flight.load(Ordering::Relaxed),
        100.0 * ideal / elapsed,
        r.sessions as f64 / elapsed,
        calls.load(Ordering::Relaxed) - calls_first,
    ))?;
    eprintln!(
        "sessionized {} sessions; enrich wrote {} interactions ({} failures); the re-run hit the cache {} times",
        s.sessions, r.interactions, r.failures, again.cache_hits
    );
    Ok(())
}

/// `crow bench import`: a generated Segment archive (gzip'd JSON lines) of
/// `events` events, parsed by plain `serde_json` (each decompressed line to
/// a `Value`, one core, the file already in memory) and imported with
/// `crow import`'s code into a temp lake; both rates and their ratio.
pub async fn import(cfg: &Config, events: u64) -> Result<()> {
    use crow_ingest::generate::{self, GenerateOptions};
    use std::io::Write;
    let first_day = chrono::Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(28))
        .context("date out of range")?;
    let mut plain = Vec::new();
    let (mut written, mut chunk) = (0u64, 0u64);
    while written < events {
        let remaining = events - written;
        let visitors = ((remaining as f64 / 8.5).ceil() as usize).clamp(1, 50_000);
        for e in generate::events(&GenerateOptions {
            visitors,
            first_day,
            days: 28,
            seed: 1 + chunk,
            incidents: Vec::new(),
        })
        .iter()
        .take(remaining as usize)
        {
            serde_json::to_writer(&mut plain, e)?;
            plain.push(b'\n');
            written += 1;
        }
        chunk += 1;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain)?;
    let archive = gz.finish()?;
    // The ceiling: serde_json over the decompressed lines.
    let started = Instant::now();
    let mut parsed = 0u64;
    for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        parsed += u64::from(v.is_object());
    }
    let parse_s = started.elapsed().as_secs_f64();
    let tmp = tempfile::tempdir()?;
    let mut lake_cfg = cfg.lake.clone();
    lake_cfg.uri = tmp.path().join("lake").display().to_string();
    let lake = Lake::open(&lake_cfg).await?;
    lake.init().await?;
    let org = crow_lake::orgs::create(&lake, "Import Bench", None, None)
        .await?
        .org
        .org_id;
    let opts = crow_ingest::import::ImportOptions {
        org_id: &org,
        strip_query_params: &cfg.ingest.strip_query_params,
        ip_salt: "bench",
        now: chrono::Utc::now(),
        chunk_events: cfg.ingest.import_chunk_events,
    };
    let r = crow_ingest::import::import_bytes(&lake, &opts, "archive.jsonl.gz", &archive, &|_| {})
        .await?;
    anyhow::ensure!(
        r.imported + r.failed == parsed,
        "imported {} + failed {} of {parsed} events",
        r.imported,
        r.failed
    );
    let parse_rate = parsed as f64 / parse_s;
    let import_rate = parsed as f64 / r.seconds;
    crate::output::line(format_args!(
        "| events | archive MiB (gzip) | decompressed MiB | serde_json events/s | import events/s | import / serde_json |"
    ))?;
    crate::output::line(format_args!("|---:|---:|---:|---:|---:|---:|"))?;
    crate::output::line(format_args!(
        "| {parsed} | {:.1} | {:.1} | {parse_rate:.0} | {import_rate:.0} | {:.2} |",
        archive.len() as f64 / 1048576.0,
        plain.len() as f64 / 1048576.0,
        import_rate / parse_rate
    ))?;
    Ok(())
}
