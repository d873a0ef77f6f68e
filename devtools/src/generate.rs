//! `crow bench generate`: synthetic web events landed straight into a lake
//! for the job and query benchmarks.
//!
//! The events are the demo brand's (`crow_ingest::generate`, the same
//! generator `crow demo` uses), passed through the collector's
//! normalization and appended to `raw_web_events` in chunks, under the
//! organization "Bench Co" (created on the first run, reused after).

use anyhow::{Context, Result};
use crow_ingest::generate::{self, GenerateOptions};
use crow_ingest::normalize::{normalize, NormalizeContext};
use crow_lake::Lake;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// `crow bench generate`: land synthetic web events (the demo brand's
/// funnel, through the collector's normalization) for the job benchmarks.
pub(crate) async fn run(lake: &Lake, events: u64, days: u32, seed: u64) -> Result<()> {
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
