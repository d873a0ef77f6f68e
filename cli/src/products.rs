//! `crow products`: import, crawl and list the product catalog.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use crow_jobs::ai::refine::Refiner;
use crow_jobs::ai::RetryPolicy;
use crow_jobs::browser::Browser;
use crow_jobs::catalog;
use crow_lake::datafusion::common::ScalarValue;
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::jobs::progress;
use crate::output::{self, Format};
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    /// Upsert products from a CSV file (header row) or JSON lines.
    Import {
        /// The file (.csv, or .jsonl / .ndjson / .json with one object per line).
        file: PathBuf,
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Crawl a site's sitemap for product pages (schema.org Product JSON-LD,
    /// else OpenGraph; script-built pages rendered in headless Chromium as
    /// `browser.render` says; pages without product data refined by the AI
    /// provider) and upsert them. Honours robots.txt.
    Crawl {
        /// Site URL (its /robots.txt and sitemaps are read) or a sitemap URL.
        url: String,
        /// Organization id or name.
        #[arg(long)]
        org: String,
        /// Pages fetched at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Minimum milliseconds between requests (robots.txt Crawl-delay may
        /// raise it).
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
        /// Seconds before a request times out.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
        /// Product pages fetched at most.
        #[arg(long, default_value_t = 5000)]
        max_pages: usize,
        /// Do not ask the AI provider for the product of a page without
        /// JSON-LD / OpenGraph product data (such a page is then no product).
        #[arg(long)]
        no_ai_refine: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List an organization's products.
    List {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

pub async fn run(lake: &Lake, cfg: &Config, cmd: ProductsCommand) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    match cmd {
        ProductsCommand::Import { file, org, format } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let products = catalog::read_file(&file, &org_id)?;
            upsert(lake, &org_id, products, 0, format.format).await
        }
        ProductsCommand::Crawl {
            url,
            org,
            concurrency,
            interval_ms,
            timeout,
            max_pages,
            no_ai_refine,
            format,
        } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let refiner = if no_ai_refine {
                None
            } else {
                let provider = crow_jobs::ai::from_config(&cfg.ai)
                    .context("AI product refinement (pass --no-ai-refine to crawl without it)")?;
                Some(Arc::new(Refiner::new(
                    provider,
                    RetryPolicy::new(cfg.ai.max_retries),
                    cfg.ai.concurrency,
                )))
            };
            let opts = catalog::CrawlOptions {
                concurrency,
                min_interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_secs(timeout),
                max_pages,
                browser: Browser::from_config(&cfg.browser),
                refiner,
            };
            let (progress, pb) = progress(false);
            let report = catalog::crawl(&url, &org_id, &opts, &progress).await?;
            pb.finish_and_clear();
            for (u, e) in report.errors.iter().take(20) {
                eprintln!("warning: {u}: {e}");
            }
            eprintln!(
                "read {} sitemap(s) listing {} page(s); {} disallowed by robots.txt; fetched {}; {} rendered in Chromium; {} product(s), {} by AI refinement; {} error(s)",
                report.sitemaps,
                report.pages_listed,
                report.disallowed,
                report.pages_fetched,
                report.rendered,
                report.products.len(),
                report.refined,
                report.errors.len()
            );
            let errors = report.errors.len();
            let incoming = report
                .products
                .into_iter()
                .map(catalog::Incoming::with_fields_present)
                .collect();
            upsert(lake, &org_id, incoming, errors, format.format).await
        }
        ProductsCommand::List { org, format } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let (schema, batches) = lake
                .sql_with(
                    "SELECT product_id, sku, name, category, price, currency, url, source, updated_at
                     FROM products WHERE org_id = $1 ORDER BY name, product_id",
                    vec![ScalarValue::from(org_id.as_str())],
                )
                .await?;
            output::print_batches(format.format, &schema, &batches)
        }
    }
}

async fn upsert(
    lake: &Lake,
    org_id: &str,
    incoming: Vec<catalog::Incoming>,
    errors: usize,
    format: Format,
) -> Result<()> {
    let products = catalog::prepare(lake, org_id, incoming).await?;
    let (inserted, updated) = crow_lake::products::upsert(lake, &products).await?;
    let obj = serde_json::json!({
        "org_id": org_id,
        "products": products.len(),
        "inserted": inserted,
        "updated": updated,
        "errors": errors,
    });
    output::print_object(
        format,
        &["org_id", "products", "inserted", "updated", "errors"],
        &obj,
    )
}
