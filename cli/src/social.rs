//! `crow social`: an organization's social sources (add, list, remove) and
//! a collector run now.

use anyhow::{Context, Result};
use clap::Subcommand;
use crow_jobs::social;
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::output;
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum SocialCommand {
    /// Add a source the collector reads on its schedule.
    Add {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        /// rss, youtube, mastodon, reddit, hackernews, bluesky, web or
        /// discover.
        #[arg(long)]
        kind: String,
        /// rss: a feed URL; youtube: a channel (UC…) or playlist (PL…) id;
        /// mastodon: `#tag` or `@account`; reddit: `r/sub` or a query;
        /// hackernews: a query; bluesky: `@handle` or a query (search needs
        /// social.bluesky_identifier and social.bluesky_app_password); web:
        /// a page URL; discover: `auto` or a topic hint (AI-proposed web
        /// searches through `[discovery]`).
        #[arg(long)]
        target: String,
        /// Cron expression (UTC) of its scheduled runs, or `off`
        /// (default: hourly, `0 * * * *`).
        #[arg(long)]
        schedule: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List an organization's sources and how their last run went.
    List {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Remove a source (what it captured stays).
    Remove {
        /// The source id (`src_…`).
        source_id: String,
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Read every enabled source of the organization now: one run, one
    /// session.
    Run {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

pub async fn run(lake: &Lake, cfg: &Config, cmd: SocialCommand) -> Result<()> {
    lake.prepare().await.context("preparing the lake")?;
    match cmd {
        SocialCommand::Add {
            org,
            kind,
            target,
            schedule,
            format,
        } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let src = social::add(lake, &org_id, &kind, &target, schedule.as_deref()).await?;
            output::print_object(format.format, social::SOURCE_COLUMNS, &src.to_json())
        }
        SocialCommand::List { org, format } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let rows: Vec<serde_json::Value> = social::list(lake, &org_id)
                .await?
                .iter()
                .map(social::Source::to_json)
                .collect();
            output::print_rows(format.format, social::SOURCE_COLUMNS, &rows)
        }
        SocialCommand::Remove {
            source_id,
            org,
            format,
        } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            if !social::remove(lake, &org_id, &source_id).await? {
                anyhow::bail!("the organization has no source {source_id}");
            }
            output::print_object(
                format.format,
                &["source_id", "removed"],
                &serde_json::json!({"source_id": source_id, "removed": true}),
            )
        }
        SocialCommand::Run { org, format } => {
            let org_id = crow_query_api::keys::resolve_org(lake, &org).await?.org_id;
            let report = social::run_now(lake, cfg, &org_id).await?;
            print_report(&report, format.format)
        }
    }
}

/// `crow social run`'s report: as one object in JSON, else a row per
/// source and a summary line.
fn print_report(report: &social::RunReport, format: output::Format) -> Result<()> {
    if format == output::Format::Json {
        return output::print_object(
            format,
            &[
                "org_id",
                "run_id",
                "fetched",
                "captured",
                "versions",
                "unchanged",
                "skipped",
                "failed_sources",
                "sources",
            ],
            &serde_json::to_value(report)?,
        );
    }
    let rows: Vec<serde_json::Value> = report
        .sources
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    output::print_rows(
        format,
        &[
            "source_id",
            "kind",
            "target",
            "status",
            "fetched",
            "captured",
            "skipped",
            "error",
        ],
        &rows,
    )?;
    output::line(format!(
        "run {}: {} captured ({} new versions), {} unchanged, {} skipped, {} source(s) failed",
        report.run_id,
        report.captured,
        report.versions,
        report.unchanged,
        report.skipped,
        report.failed_sources
    ))
}
