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
    let (mut landed, mut visitors, mut chunk) = (0u64, 0u64, 0u64);
    let plan = |chunk: u64, visitors: usize, take: usize| Chunk {
        org_id: org_id.clone(),
        received_at,
        first_day,
        days: days.max(1),
        seed: seed.wrapping_add(chunk),
        visitors,
        take,
    };
    let make = |c: Chunk| tokio::task::spawn_blocking(move || c.batch());
    // Chunks are made (generated, normalised, encoded: a blocking thread
    // each) ahead of their turn, two at once, while the one before them
    // commits; the commits stay in order. Ahead of its turn a chunk is made
    // as a whole one (`FULL` visitors), which it is unless it is one of the
    // last: a chunk whose turn shows it should have been smaller (fewer
    // visitors, or more events than remain) is made again as it should
    // be. So a seed gives the same events in the same commits as making
    // one chunk after the other.
    let mut ahead: std::collections::VecDeque<Making> = std::collections::VecDeque::new();
    let mut committing: Option<tokio::task::JoinHandle<crow_lake::Result<u64>>> = None;
    while landed < events {
        let remaining = events - landed;
        let n_visitors = ((remaining as f64 / EVENTS_PER_VISITOR).ceil() as usize).clamp(1, FULL);
        // Chunk `chunk + i` is surely whole when a whole chunk more than
        // `i + 1` of them remains (chunks vary by a few percent).
        let whole = (FULL as f64 * EVENTS_PER_VISITOR) as u64;
        while ahead.len() < AHEAD && remaining > (ahead.len() as u64 + 2) * whole {
            let c = plan(chunk + ahead.len() as u64, FULL, usize::MAX);
            ahead.push_back(make(c));
        }
        let made = match ahead.pop_front() {
            Some(m) => {
                let (batch, rows) = m.await.context("generating a chunk")??;
                (n_visitors == FULL && rows as u64 <= remaining).then_some((batch, rows))
            }
            None => None,
        };
        let (batch, rows) = match made {
            Some(made) => made,
            None => {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX);
                make(plan(chunk, n_visitors, take))
                    .await
                    .context("generating a chunk")??
            }
        };
        if let Some(c) = committing.take() {
            c.await.context("committing a chunk")??;
            bar.set_position(landed);
        }
        let lake = lake.clone();
        committing = Some(tokio::spawn(async move {
            lake.append(crow_schemas::RAW_WEB_EVENTS.name, vec![batch])
                .await
        }));
        landed += rows as u64;
        visitors += n_visitors as u64;
        chunk += 1;
    }
    if let Some(c) = committing.take() {
        c.await.context("committing a chunk")??;
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

/// Visitors in a chunk (chunks of 50k visitors keep memory flat).
const FULL: usize = 50_000;
/// About this many events per visitor (the demo funnel's average).
const EVENTS_PER_VISITOR: f64 = 8.5;
/// Chunks made at once ahead of their turn.
const AHEAD: usize = 2;

/// A chunk being made: its batch of `raw_web_events` and its row count.
type Making = tokio::task::JoinHandle<Result<(crow_lake::arrow::record_batch::RecordBatch, usize)>>;

/// One chunk of generated events: who, when, and how many.
struct Chunk {
    org_id: String,
    received_at: chrono::DateTime<chrono::Utc>,
    first_day: chrono::NaiveDate,
    days: u32,
    seed: u64,
    visitors: usize,
    /// At most this many events (the last chunk stops at the total).
    take: usize,
}

impl Chunk {
    /// The chunk's events, normalised as the collector does, sorted by day,
    /// as one batch of `raw_web_events`; and how many rows it holds.
    fn batch(self) -> Result<(crow_lake::arrow::record_batch::RecordBatch, usize)> {
        let generated = generate::events(&GenerateOptions {
            visitors: self.visitors,
            first_day: self.first_day,
            days: self.days,
            seed: self.seed,
            incidents: Vec::new(),
        });
        let ctx = NormalizeContext {
            org_id: &self.org_id,
            received_at: self.received_at,
            ip_hash: None,
            strip_query_params: &[],
            ip_salt: "bench",
        };
        let mut rows = Vec::with_capacity(generated.len().min(self.take));
        for e in generated.iter().take(self.take) {
            let row = normalize(e, None, &ctx)
                .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.reason))?;
            rows.push(row);
        }
        drop(generated);
        rows.sort_by_key(|r| r.event_date);
        let batch = crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows)?;
        Ok((batch, rows.len()))
    }
}
