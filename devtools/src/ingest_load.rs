//! `crow bench ingest`: the ingest load generator, durable ingest
//! throughput and latency over real HTTP.
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

/// The load of one `crow bench ingest` run.
pub(crate) struct LoadArgs {
    /// Batch sizes (events per request) to measure, one after another.
    pub(crate) batches: Vec<usize>,
    /// Concurrent HTTP clients.
    pub(crate) concurrency: usize,
    /// Seconds of load per batch size.
    pub(crate) seconds: u64,
}

/// `crow bench ingest --url URL --write-key KEY`: the same load against a
/// collector that runs elsewhere (e.g. a `crow serve` that also answers
/// queries); acknowledged requests and latency only, since the lake behind
/// it is not this process's to watch.
pub(crate) async fn run_remote(url: &str, write_key: &str, args: LoadArgs) -> Result<()> {
    let auth = basic_auth(write_key);
    let url = format!("{}/v1/batch", url.trim_end_matches('/'));
    crate::output::line(format_args!(
        "| batch | clients | requests | 503s | events/s | p50 ms | p99 ms |"
    ))?;
    crate::output::line(format_args!("|---:|---:|---:|---:|---:|---:|---:|"))?;
    for &batch in &args.batches {
        let payloads = payloads(batch);
        let l = load(&url, &auth, &payloads, &args).await?;
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

/// `crow bench ingest`: the load against a collector in this process, over
/// a temp lake unless `lake_given` (then `cfg.lake`), with the drain time,
/// the JSON-parse ceiling and the ack-to-visible time.
pub(crate) async fn run(cfg: Config, lake_given: bool, args: LoadArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg;
    if !lake_given {
        cfg.lake.uri = tmp.path().join("lake").display().to_string();
    }
    let lake = Lake::open(&cfg.lake).await?;
    lake.init().await?;
    let org = crow_lake::orgs::create(&lake, "Bench Co", None, None).await?;
    let auth = basic_auth(&org.write_key);
    let wal_dir = tmp.path().join("wal");
    let collector = Collector::start(lake.clone(), cfg.ingest.clone(), wal_dir).await?;
    let (addr, server) = collector.serve_on_loopback().await?;
    let url = format!("http://{addr}/v1/batch");
    crate::output::line(format_args!("| batch | clients | requests | 503s | events/s | p50 ms | p99 ms | drain s | committed events/s | JSON-parse ceiling events/s | ratio |"))?;
    crate::output::line(format_args!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ))?;
    for &batch in &args.batches {
        let payloads = payloads(batch);
        let ceiling = parse_ceiling(&payloads, batch);
        let l = load(&url, &auth, &payloads, &args).await?;
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
    let visible = ack_to_visible(&lake, &url, &auth).await?;
    crate::output::line(format_args!(
        "\nack → visible to `crow sql`: {visible:.2} s (flush interval {} ms)",
        cfg.ingest.flush_interval_ms
    ))?;
    server.abort();
    collector.shutdown().await;
    Ok(())
}

/// The `Authorization` header of a write key.
fn basic_auth(write_key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    )
}

/// Seconds from one acknowledged event to SQL over `lake` seeing it
/// (polled; an error after 60 s).
async fn ack_to_visible(lake: &Lake, url: &str, auth: &str) -> Result<f64> {
    let http = reqwest::Client::new();
    let id = format!("visibility-{}", uuid::Uuid::new_v4());
    let body =
        json!({"batch": [{"type": "track", "event": "Visible", "userId": "u", "messageId": id}]});
    let sent = Instant::now();
    let r = http
        .post(url)
        .header("Authorization", auth)
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
    Ok(sent.elapsed().as_secs_f64())
}

/// The 64 payloads of one batch size, sent in turn.
fn payloads(batch: usize) -> Vec<Vec<u8>> {
    (0..64).map(|i| payload(batch, i)).collect()
}

/// One Segment batch body of `batch` product views with empty message ids
/// (each request fills in its own).
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

/// `args.concurrency` concurrent clients posting `payloads` in turn to
/// `url` for `args.seconds`, each event with its own message id; 503
/// refusals are counted and backed off, any other failure ends the run.
async fn load(url: &str, auth: &str, payloads: &[Vec<u8>], args: &LoadArgs) -> Result<Load> {
    let duration = Duration::from_secs(args.seconds);
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
    for c in 0..args.concurrency {
        let client = Client {
            url: url.to_string(),
            auth: auth.to_string(),
            payloads: payloads.clone(),
            run: run.clone(),
            refused: refused.clone(),
            id: c,
        };
        tasks.push(tokio::spawn(client.send_until(started + duration)));
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

/// One of [`load`]'s concurrent clients.
struct Client {
    url: String,
    auth: String,
    /// The payloads, cut at their events' message ids.
    payloads: Arc<Vec<Vec<String>>>,
    /// This load run's id, part of every message id.
    run: Arc<String>,
    refused: Arc<AtomicU64>,
    /// The client's number, part of its message ids.
    id: usize,
}

impl Client {
    /// Post the payloads in turn until `until`; the latency of every
    /// acknowledged request.
    async fn send_until(self, until: Instant) -> Result<Vec<Duration>> {
        let http = reqwest::Client::new();
        let mut lat = Vec::new();
        let mut n = 0usize;
        while Instant::now() < until {
            let body = self.body(n);
            n += 1;
            let t = Instant::now();
            match http
                .post(&self.url)
                .header("Authorization", &self.auth)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                Ok(r) if r.status().as_u16() == 503 => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Ok(r) => anyhow::bail!("unexpected status {}", r.status()),
                Err(e) => return Err(e).context("request failed"),
            }
        }
        Ok(lat)
    }

    /// Request `n`'s body: a unique message id per event, so the lake
    /// holds real rows.
    fn body(&self, n: usize) -> String {
        use std::fmt::Write as _;
        let parts = &self.payloads[n % self.payloads.len()];
        let mut body =
            String::with_capacity(parts.iter().map(String::len).sum::<usize>() + parts.len() * 64);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                let _ = write!(body, "\"messageId\":\"{}-{}-{n}-{i}\"", self.run, self.id);
            }
            body.push_str(part);
        }
        body
    }
}

/// Until the collector's WAL holds nothing uncommitted (at most 120 s).
async fn wait_drained(c: &Collector) {
    let start = Instant::now();
    let _ = c.wal.seal_now().await;
    while c.wal.stats().pending_bytes.load(Ordering::Relaxed) > 0
        && start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
