//! `crow demo`: a synthetic brand with weeks of activity sent through the
//! real collector, then CROW's jobs over it: sessionize, enrich, patterns.

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Days, SubsecRound, Utc};
use crow_ingest::generate::{self, GenerateOptions, Incident};
use crow_lake::datafusion::common::ScalarValue;
use crow_lake::Lake;
use crow_schemas::config::Config;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};

/// `crow demo`: create the demo brand and its catalog, send its generated
/// activity through the collector, run the jobs, and print what they found.
// Long on purpose: the demo's script, one progress-bar step after another
// (each step is its own function), then its summary.
pub async fn run(
    lake: &Lake,
    cfg: &Config,
    visitors: usize,
    days: u32,
    seed: u64,
    now: DateTime<Utc>,
    format: Format,
) -> Result<()> {
    // The demo's clock (the current time unless `--now` replays another
    // moment): the activity ends the day before it, the jobs run as of it.
    let now = now.trunc_subsecs(6);
    if now > Utc::now() + chrono::Duration::minutes(1) {
        anyhow::bail!(
            "--now {now} is in the future: the collector would not accept activity from it"
        );
    }
    let bar = progress_bar();
    bar.set_message("creating the lake");
    lake.prepare().await?;
    bar.inc(1);

    bar.set_message("organization");
    let (org_id, write_key) = demo_org(lake).await?;
    bar.inc(1);

    bar.set_message("product catalog");
    let products = generate::catalog_products(&org_id);
    crow_lake::products::upsert(lake, &products).await?;
    bar.inc(1);

    bar.set_message(format!("generating {visitors} visitors over {days} days"));
    let today = now.date_naive();
    let first_day = today
        .checked_sub_days(Days::new(u64::from(days.max(1))))
        .context("date out of range")?;
    let events = generate::events(&GenerateOptions {
        visitors,
        first_day,
        days: days.max(1),
        seed,
        incidents: incidents(days),
    });
    bar.inc(1);

    let (landed, shown_key) =
        land_events(lake, cfg, &org_id, seed, write_key.clone(), &events, &bar).await?;
    bar.inc(1);

    // The demo brand's owner exists before the jobs run, so the patterns
    // job's notification of the strongest story reaches them.
    let (email, password) = demo_owner(lake, &org_id).await?;

    // CROW's main job: sessions, then AI-written interactions (incremental,
    // so running the demo again only processes what is new).
    let prices = crow_jobs::billing::Prices::from_config(&cfg.billing)?;
    let (sessions, enriched, patterns) = run_jobs(lake, cfg, now, &bar).await?;
    bar.finish_and_clear();

    eprintln!(
        "{} demo brand {} ({org_id}): {} products, {} events {} for {} .. {}",
        if write_key.is_some() {
            "created"
        } else {
            "using"
        },
        generate::BRAND_NAME,
        products.len(),
        events.len(),
        if landed {
            "landed"
        } else {
            "were already in the lake"
        },
        first_day,
        today.pred_opt().unwrap_or(today),
    );
    if let Some(k) = shown_key {
        eprintln!("ingest write key (shown once): {k}");
    }
    print_job_reports(&sessions, &enriched, &patterns);
    eprintln!("lake: {}", lake.uri());
    print_days(lake, format, &org_id).await?;
    if format == Format::Table {
        print_findings(lake, format, &org_id).await?;
        print_invoices(lake, &org_id, first_day, today, &prices).await?;
        print_sign_in(lake, cfg, &email, &password)?;
    }
    Ok(())
}

/// The demo's progress bar: nine steps, ticking while a step runs.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(9).with_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// What the demo's jobs wrote, one line per job family.
fn print_job_reports(
    sessions: &crow_jobs::sessionize::Report,
    enriched: &crow_jobs::enrich::Report,
    patterns: &crow_jobs::patterns::Report,
) {
    eprintln!(
        "sessionize wrote {} sessions ({} still open); enrich wrote {} interactions with {}/{} ({} failures)",
        sessions.sessions,
        sessions.open_sessions,
        enriched.interactions,
        enriched.provider,
        enriched.model,
        enriched.failures
    );
    eprintln!(
        "patterns wrote {} findings ({} day, {} week, {} month, {} year, {} all time) and {} stories",
        patterns.patterns, patterns.day, patterns.week, patterns.month, patterns.year, patterns.all, patterns.stories
    );
}

/// The demo brand's organization: found by name, or created (then with
/// its new write key).
async fn demo_org(lake: &Lake) -> Result<(String, Option<String>)> {
    Ok(
        match crow_lake::orgs::find_by_name(lake, generate::BRAND_NAME).await? {
            Some(o) => (o.org_id, None),
            None => {
                let c = crow_lake::orgs::create(
                    lake,
                    generate::BRAND_NAME,
                    Some(generate::BRAND_DOMAIN),
                    Some(generate::BRAND_CONTEXT),
                )
                .await?;
                (c.org.org_id, Some(c.write_key))
            }
        },
    )
}

/// The incidents of `days` of activity: three weeks or more get incidents
/// for the patterns job to find — a week of failing mobile payments (the
/// last week) and a product going viral for three days before it.
fn incidents(days: u32) -> Vec<Incident> {
    if days >= 21 {
        vec![
            Incident::MobilePaymentOutage {
                from_day: days - 7,
                days: 7,
            },
            Incident::ViralProduct {
                product: 7,
                from_day: days - 12,
                days: 3,
            },
        ]
    } else {
        Vec::new()
    }
}

/// Send `events` through the real collector (durable WAL, exactly-once
/// flusher), unless this demo already landed. Returns whether they were
/// sent, and the write key to show (a new one when the organization
/// existed and its key had to be rotated to send).
async fn land_events(
    lake: &Lake,
    cfg: &Config,
    org_id: &str,
    seed: u64,
    write_key: Option<String>,
    events: &[serde_json::Value],
    bar: &ProgressBar,
) -> Result<(bool, Option<String>)> {
    let landed_before = demo_events_landed(lake, org_id, seed).await?;
    let landed = landed_before < events.len() as u64;
    let mut shown_key = write_key.clone();
    if landed {
        let write_key = match write_key {
            Some(k) => k,
            None => {
                let k = crow_lake::orgs::rotate_write_key(lake, org_id).await?;
                shown_key = Some(k.clone());
                k
            }
        };
        bar.set_message(format!(
            "sending {} events through the collector",
            events.len()
        ));
        send_through_collector(lake, cfg, &write_key, events).await?;
    }
    Ok((landed, shown_key))
}

/// The demo's jobs, as the scheduler runs them: sessionize, enrich,
/// patterns and billing, each incremental, through the job runner.
async fn run_jobs(
    lake: &Lake,
    cfg: &Config,
    now: DateTime<Utc>,
    bar: &ProgressBar,
) -> Result<(
    crow_jobs::sessionize::Report,
    crow_jobs::enrich::Report,
    crow_jobs::patterns::Report,
)> {
    use crow_jobs::job::run;
    let ctx = crow_jobs::JobContext::new(lake.clone(), cfg.clone()).at(now);
    let req = crow_jobs::Request::incremental();
    bar.set_message("sessionizing");
    let sessions = run::<crow_jobs::sessionize::Sessionize>(&ctx, &req).await?;
    bar.inc(1);
    let provider = ctx.provider()?;
    bar.set_message(format!(
        "enriching sessions ({}/{})",
        provider.name(),
        provider.model()
    ));
    let enriched = run::<crow_jobs::enrich::Enrich>(&ctx, &req).await?;
    bar.inc(1);
    bar.set_message("finding patterns");
    let patterns = run::<crow_jobs::patterns::Patterns>(&ctx, &req).await?;
    bar.inc(1);
    bar.set_message("billing");
    run::<crow_jobs::billing::Billing>(&ctx, &req).await?;
    bar.inc(1);
    Ok((sessions, enriched, patterns))
}

/// The demo brand's activity per day: events, funnel steps, orders,
/// revenue, sessions and interactions.
async fn print_days(lake: &Lake, format: Format, org_id: &str) -> Result<()> {
    let sql = "WITH r AS (
           SELECT event_date AS d, count(*) AS events, count(DISTINCT anonymous_id) AS visitors,
             sum(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS product_views,
             sum(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS adds_to_cart,
             sum(CASE WHEN event = 'Checkout Started' THEN 1 ELSE 0 END) AS checkouts,
             sum(CASE WHEN event = 'Order Completed' THEN 1 ELSE 0 END) AS orders,
             round(sum(CASE WHEN event = 'Order Completed' THEN revenue ELSE 0 END), 2) AS revenue
           FROM raw_web_events WHERE org_id = $1 GROUP BY event_date),
         s AS (SELECT session_date AS d, count(*) AS sessions FROM sessions
               WHERE org_id = $1 GROUP BY session_date),
         i AS (SELECT session_date AS d, count(*) AS interactions,
                 sum(CASE WHEN outcome IN ('abandoned_cart', 'abandoned_checkout') THEN 1 ELSE 0 END) AS abandoned
               FROM interactions WHERE org_id = $1 GROUP BY session_date)
         SELECT r.d AS event_date, events, visitors, product_views, adds_to_cart, checkouts, orders,
                revenue, COALESCE(s.sessions, 0) AS sessions, COALESCE(i.interactions, 0) AS interactions,
                COALESCE(i.abandoned, 0) AS abandoned
         FROM r LEFT JOIN s ON r.d = s.d LEFT JOIN i ON r.d = i.d ORDER BY r.d";
    let (schema, batches) = lake.sql_with(sql, vec![ScalarValue::from(org_id)]).await?;
    output::print_batches(format, &schema, &batches)?;
    Ok(())
}

/// The latest interactions, the week's top stories and the findings
/// beneath them.
async fn print_findings(lake: &Lake, format: Format, org_id: &str) -> Result<()> {
    let org = || vec![ScalarValue::from(org_id)];
    let sample =
        "SELECT CAST(started_at AS VARCHAR) AS started_at, outcome, description FROM interactions
         WHERE org_id = $1 AND outcome IN ('purchased', 'abandoned_checkout', 'abandoned_cart')
         ORDER BY started_at DESC LIMIT 5";
    let (schema, batches) = lake.sql_with(sample, org()).await?;
    output::line("\nLatest interactions (crow sql \"select * from interactions\" for all):")?;
    output::print_batches(format, &schema, &batches)?;
    // Stories first: what happened this week, by what it cost or gained.
    let stories =
        "SELECT CAST(start_date AS VARCHAR) AS since, CASE WHEN ongoing THEN 'ongoing' ELSE CAST(last_date AS VARCHAR) END AS until,
                kind, title
         FROM stories WHERE org_id = $1
           AND last_date >= (SELECT max(period_start) FROM patterns WHERE org_id = $1 AND period_kind = 'week')
         ORDER BY rank_score DESC, significance DESC LIMIT 5";
    let (schema, batches) = lake.sql_with(stories, org()).await?;
    output::line("\nTop stories of the week (crow sql \"select * from stories\" for all):")?;
    output::print_batches(format, &schema, &batches)?;
    let week =
        "SELECT CAST(period_start AS VARCHAR) AS week_of, provisional, kind, segment, title, round(significance, 1) AS z
         FROM patterns WHERE org_id = $1 AND period_kind = 'week'
           AND period_start = (SELECT max(period_start) FROM patterns WHERE org_id = $1 AND period_kind = 'week')
         ORDER BY significance DESC LIMIT 8";
    let (schema, batches) = lake.sql_with(week, org()).await?;
    output::line("\nTop findings of the week, beneath the stories (crow sql \"select * from patterns\" for all):")?;
    output::print_batches(format, &schema, &batches)?;
    Ok(())
}

/// One invoice per month the generated activity touched: from the first
/// generated day to the last (yesterday).
async fn print_invoices(
    lake: &Lake,
    org_id: &str,
    first_day: chrono::NaiveDate,
    today: chrono::NaiveDate,
    prices: &crow_jobs::billing::Prices,
) -> Result<()> {
    // One invoice per month the generated activity touched: from the
    // first generated day to the last (yesterday).
    let last_day = today.pred_opt().unwrap_or(today);
    let mut month_start = first_day.with_day(1).unwrap_or(first_day);
    while month_start <= last_day {
        let month = month_start.format("%Y-%m").to_string();
        let invoices = crow_jobs::billing::invoices(lake, &month, Some(org_id), prices).await?;
        output::line(format!(
            "\nThe invoice of {month} (crow billing report --month {month}):"
        ))?;
        crate::billing::print_table(&invoices, &month)?;
        month_start = match month_start.checked_add_months(chrono::Months::new(1)) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

/// The last lines of the demo: how to open the dashboard on this lake, and
/// the demo owner's sign-in.
fn print_sign_in(lake: &Lake, cfg: &Config, email: &str, password: &str) -> Result<()> {
    let port = cfg.server.listen.rsplit(':').next().unwrap_or("8080");
    let uri = lake.uri();
    let plain = uri
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._:-+@=".contains(c));
    let uri = if plain {
        uri.to_string()
    } else {
        format!("'{}'", uri.replace('\'', r"'\''"))
    };
    output::line(format!(
        "\nOpen the dashboard: serve this lake with\n  crow --lake {uri} serve\nthen open http://localhost:{port}/login and sign in as the demo brand's owner (a new password each demo run):\n  e-mail: {email}\n  password: {password}"
    ))?;
    output::line(format!(
        "Sign in as the demo brand's owner from a script instead:\n  curl -c cookies localhost:{port}/api/v1/auth/login -d '{{\"email\": \"{email}\", \"password\": \"{password}\"}}'"
    ))?;
    Ok(())
}

/// The demo brand's owner (created once), with a fresh password.
async fn demo_owner(lake: &Lake, org_id: &str) -> Result<(String, String)> {
    use crow_query_api::users;
    let email = "owner@northwind-audio.example";
    let password = crow_lake::ids::new_secret("pw");
    if users::find(lake, email).await.is_ok() {
        users::set_password(lake, email, &password).await?;
    } else {
        users::create(
            lake,
            org_id,
            email,
            users::Role::Owner,
            Some("Demo owner"),
            Some(&password),
        )
        .await?;
    }
    Ok((email.to_string(), password))
}

/// How many of this demo's events (seed) are already in the lake.
async fn demo_events_landed(lake: &Lake, org_id: &str, seed: u64) -> Result<u64> {
    let (_, batches) = lake
        .sql_with(
            "SELECT count(DISTINCT message_id) AS n FROM raw_web_events
             WHERE org_id = $1 AND message_id LIKE $2",
            vec![
                ScalarValue::from(org_id),
                ScalarValue::from(format!("demo-{seed}-%")),
            ],
        )
        .await?;
    let rows = crow_lake::batch::batches_to_json(&batches)?;
    Ok(rows
        .first()
        .and_then(|r| r.get("n"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0))
}

/// Send events to a collector started in this process, over HTTP with the
/// write key, as an SDK would; then flush its WAL into the lake.
async fn send_through_collector(
    lake: &Lake,
    cfg: &Config,
    write_key: &str,
    events: &[serde_json::Value],
) -> Result<()> {
    use futures::StreamExt;
    let wal_dir = crow_ingest::service::wal_dir(&cfg.ingest, lake);
    let collector = crow_ingest::Collector::start(lake.clone(), cfg.ingest.clone(), wal_dir)
        .await
        .context("starting the collector")?;
    let (addr, server) = collector.serve_on_loopback().await?;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/batch");
    let results: Vec<Result<()>> = futures::stream::iter(events.chunks(200).map(|chunk| {
        let (client, url) = (client.clone(), url.clone());
        let body = serde_json::json!({"batch": chunk, "sentAt": Utc::now().to_rfc3339()});
        async move {
            for attempt in 0..20u64 {
                let resp = client
                    .post(&url)
                    .basic_auth(write_key, Some(""))
                    .json(&body)
                    .send()
                    .await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                if status.as_u16() == 429 || status.as_u16() == 503 {
                    // Backpressure: the flusher is catching up.
                    tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
                    continue;
                }
                let text = resp.text().await.unwrap_or_default();
                anyhow::bail!("the collector answered {status}: {text}");
            }
            anyhow::bail!("the collector stayed busy")
        }
    }))
    .buffer_unordered(4)
    .collect()
    .await;
    for r in results {
        r?;
    }
    server.abort();
    collector.shutdown().await;
    Ok(())
}
