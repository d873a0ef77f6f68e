//! `crow demo`: a synthetic brand with a week of activity, landed in the lake.

use anyhow::{Context, Result};
use chrono::{Days, SubsecRound, Utc};
use crow_ingest::generate::{self, GenerateOptions};
use crow_ingest::normalize::{normalize, NormalizeContext};
use crow_lake::Lake;
use crow_schemas::config::Config;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};

pub async fn run(
    lake: &Lake,
    cfg: &Config,
    visitors: usize,
    days: u32,
    seed: u64,
    format: Format,
) -> Result<()> {
    let bar = ProgressBar::new(7).with_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));

    bar.set_message("creating the lake");
    lake.init().await?;
    bar.inc(1);

    bar.set_message("organization");
    let (org_id, write_key) =
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
        };
    bar.inc(1);

    bar.set_message("product catalog");
    let products: Vec<crow_lake::products::Product> = generate::catalog()
        .into_iter()
        .map(|p| crow_lake::products::Product {
            org_id: org_id.clone(),
            product_id: p.product_id,
            sku: Some(p.sku),
            name: p.name,
            url: Some(p.url),
            category: Some(p.category),
            brand: Some(generate::BRAND_NAME.to_string()),
            price: Some(p.price),
            currency: Some("USD".into()),
            description: Some(p.description),
            image_url: None,
            source: "demo".into(),
        })
        .collect();
    crow_lake::products::upsert(lake, &products).await?;
    bar.inc(1);

    bar.set_message(format!("generating {visitors} visitors over {days} days"));
    let today = Utc::now().date_naive();
    let first_day = today
        .checked_sub_days(Days::new(u64::from(days.max(1))))
        .context("date out of range")?;
    let events = generate::events(&GenerateOptions {
        visitors,
        first_day,
        days: days.max(1),
        seed,
    });
    let received_at = Utc::now();
    let ctx = NormalizeContext {
        org_id: &org_id,
        received_at,
        ip_hash: None,
        strip_query_params: &[],
        ip_salt: "crow-demo",
    };
    let mut rows = Vec::with_capacity(events.len());
    for e in &events {
        // The generator only produces valid events; a rejection is a bug.
        let row = normalize(e, None, &ctx)
            .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.reason))?;
        rows.push(row);
    }
    bar.inc(1);

    bar.set_message(format!("landing {} events", rows.len()));
    // Exactly once: the same demo (org, seed, days, visitors) lands once,
    // however often `crow demo` runs.
    let app_id = format!("crow-demo/{org_id}/{seed}/{first_day}/{days}/{visitors}");
    let batch = crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows)?;
    let landed = lake
        .append_once(crow_schemas::RAW_WEB_EVENTS.name, vec![batch], &app_id, 0)
        .await?;
    bar.inc(1);

    // CROW's main job: sessions, then AI-written interactions (incremental,
    // so running the demo again only processes what is new).
    bar.set_message("sessionizing");
    let quiet: crow_jobs::ProgressRef = std::sync::Arc::new(crow_jobs::NoProgress);
    let sessions = crow_jobs::sessionize::run(
        lake,
        &crow_jobs::sessionize::Options {
            org: None,
            window: None,
            gap: chrono::Duration::minutes(i64::from(cfg.jobs.session_gap_minutes)),
            now: Utc::now().trunc_subsecs(6),
            trigger: crow_jobs::Trigger::Cli,
        },
        &quiet,
    )
    .await?;
    bar.inc(1);
    let provider = crow_jobs::ai::from_config(&cfg.ai)?;
    bar.set_message(format!(
        "enriching sessions ({}/{})",
        provider.name(),
        provider.model()
    ));
    let enriched = crow_jobs::enrich::run(
        lake,
        provider,
        &crow_jobs::enrich::Options {
            org: None,
            window: None,
            trigger: crow_jobs::Trigger::Cli,
            policy: crow_jobs::ai::RetryPolicy::new(cfg.ai.max_retries),
            concurrency: cfg.ai.concurrency,
            daily_token_budget: cfg.ai.daily_token_budget,
        },
        &quiet,
    )
    .await?;
    bar.inc(1);
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
        rows.len(),
        if landed {
            "landed"
        } else {
            "were already in the lake"
        },
        first_day,
        today.pred_opt().unwrap_or(today),
    );
    if let Some(k) = write_key {
        eprintln!("ingest write key (shown once): {k}");
    }
    eprintln!(
        "sessionize wrote {} sessions ({} still open); enrich wrote {} interactions with {}/{} ({} failures)",
        sessions.sessions,
        sessions.open_sessions,
        enriched.interactions,
        enriched.provider,
        enriched.model,
        enriched.failures
    );
    eprintln!("lake: {}", lake.uri());
    let sql = format!(
        "WITH r AS (
           SELECT event_date AS d, count(*) AS events, count(DISTINCT anonymous_id) AS visitors,
             sum(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS product_views,
             sum(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS adds_to_cart,
             sum(CASE WHEN event = 'Checkout Started' THEN 1 ELSE 0 END) AS checkouts,
             sum(CASE WHEN event = 'Order Completed' THEN 1 ELSE 0 END) AS orders,
             round(sum(CASE WHEN event = 'Order Completed' THEN revenue ELSE 0 END), 2) AS revenue
           FROM raw_web_events WHERE org_id = '{org_id}' GROUP BY event_date),
         s AS (SELECT session_date AS d, count(*) AS sessions FROM sessions
               WHERE org_id = '{org_id}' GROUP BY session_date),
         i AS (SELECT session_date AS d, count(*) AS interactions,
                 sum(CASE WHEN outcome IN ('abandoned_cart', 'abandoned_checkout') THEN 1 ELSE 0 END) AS abandoned
               FROM interactions WHERE org_id = '{org_id}' GROUP BY session_date)
         SELECT r.d AS event_date, events, visitors, product_views, adds_to_cart, checkouts, orders,
                revenue, COALESCE(s.sessions, 0) AS sessions, COALESCE(i.interactions, 0) AS interactions,
                COALESCE(i.abandoned, 0) AS abandoned
         FROM r LEFT JOIN s ON r.d = s.d LEFT JOIN i ON r.d = i.d ORDER BY r.d"
    );
    let (schema, batches) = lake.sql(&sql).await?;
    output::print_batches(format, &schema, &batches)?;
    if format == Format::Table {
        let sample = format!(
            "SELECT CAST(started_at AS VARCHAR) AS started_at, outcome, description FROM interactions
             WHERE org_id = '{org_id}' AND outcome IN ('purchased', 'abandoned_checkout', 'abandoned_cart')
             ORDER BY started_at DESC LIMIT 5"
        );
        let (schema, batches) = lake.sql(&sample).await?;
        println!("\nLatest interactions (crow sql \"select * from interactions\" for all):");
        output::print_batches(format, &schema, &batches)?;
    }
    Ok(())
}
