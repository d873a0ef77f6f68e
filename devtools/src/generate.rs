//! `crow bench generate`: synthetic web events landed straight into a lake
//! for the job and query benchmarks.
//!
//! The events are the demo brand's (`crow_ingest::generate`, the same
//! generator `crow demo` uses), passed through the collector's
//! normalization and appended to `raw_web_events` in chunks, under the
//! organization "Bench Co" (created on the first run, reused after).

use std::sync::Arc;

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
    let template = Arc::new(Template {
        org_id: org_id.clone(),
        received_at: chrono::Utc::now(),
        first_day,
        days: days.max(1),
        seed,
    });
    let landed = land(lake, &template, events, FULL, &bar).await?;
    bar.finish_and_clear();
    let out = json!({
        "org_id": org_id,
        "events": landed.events,
        "visitors": landed.visitors,
        "commits": landed.chunks,
        "chunks_made_ahead": landed.made_ahead,
        "chunks_made_again": landed.made_again,
        "from": first_day.to_string(),
        "to": to.to_string(),
        "lake": lake.uri(),
    });
    crate::output::line(format_args!("{}", serde_json::to_string_pretty(&out)?))?;
    Ok(())
}

/// What [`land`] did.
#[derive(Debug, Default)]
struct Landed {
    /// Events committed.
    events: u64,
    /// Visitors generated.
    visitors: u64,
    /// Commits, one a chunk.
    chunks: u64,
    /// Chunks made ahead of their turn and committed as made.
    made_ahead: u64,
    /// Chunks made ahead and then made again (one of the last, smaller ones).
    made_again: u64,
}

/// What every chunk of a run shares.
struct Template {
    org_id: String,
    received_at: chrono::DateTime<chrono::Utc>,
    first_day: chrono::NaiveDate,
    days: u32,
    seed: u64,
}

/// Chunk `k` of `template`: `visitors` visitors, at most `take` events.
fn chunk(template: &Arc<Template>, k: u64, visitors: usize, take: usize) -> Chunk {
    Chunk {
        template: Arc::clone(template),
        k,
        visitors,
        take,
    }
}

/// Visitors of a chunk whose turn comes when `remaining` events are still to land:
/// as many as make the rest at about [`EVENTS_PER_VISITOR`], at most `full`.
fn visitors_for(remaining: u64, full: usize) -> usize {
    ((remaining as f64 / EVENTS_PER_VISITOR).ceil() as usize).clamp(1, full.max(1))
}

/// Append `events` generated events to `raw_web_events`, a commit per chunk
/// of at most `full` visitors.
///
/// Chunks are made (generated, normalised, encoded: a blocking thread
/// each) ahead of their turn, [`AHEAD`] at once, while the one before them
/// commits; the commits stay in order. Ahead of its turn a chunk is made as
/// a whole one (`full` visitors), which it is unless it is one of the last:
/// a chunk whose turn shows it should have been smaller (fewer visitors, or
/// more events than remain) is made again as it should be. So a seed gives
/// the same events in the same commits as making one chunk after the other.
async fn land(
    lake: &Lake,
    template: &Arc<Template>,
    events: u64,
    full: usize,
    bar: &ProgressBar,
) -> Result<Landed> {
    let full = full.max(1);
    let make = |c: Chunk| tokio::task::spawn_blocking(move || c.batch());
    let mut done = Landed::default();
    let mut ahead: std::collections::VecDeque<Making> = std::collections::VecDeque::new();
    let mut committing: Option<tokio::task::JoinHandle<crow_lake::Result<u64>>> = None;
    // Chunk `k + i` is made ahead when more than `i + 1` whole chunks
    // remain: it is then whole unless it is the last (chunks vary by a few
    // percent), which at most makes the last chunk twice.
    let whole = (full as f64 * EVENTS_PER_VISITOR) as u64;
    while done.events < events {
        let (k, remaining) = (done.chunks, events - done.events);
        let n_visitors = visitors_for(remaining, full);
        while ahead.len() < AHEAD && remaining > (ahead.len() as u64 + 1) * whole {
            let c = chunk(template, k + ahead.len() as u64, full, usize::MAX);
            ahead.push_back(make(c));
        }
        let made = match ahead.pop_front() {
            Some(m) => {
                let (batch, rows) = m.await.context("generating a chunk")??;
                let fits = n_visitors == full && rows as u64 <= remaining;
                if fits {
                    done.made_ahead += 1;
                } else {
                    done.made_again += 1;
                }
                fits.then_some((batch, rows))
            }
            None => None,
        };
        let (batch, rows) = match made {
            Some(made) => made,
            None => {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX);
                make(chunk(template, k, n_visitors, take))
                    .await
                    .context("generating a chunk")??
            }
        };
        if let Some(c) = committing.take() {
            c.await.context("committing a chunk")??;
            bar.set_position(done.events);
        }
        let lake = lake.clone();
        committing = Some(tokio::spawn(async move {
            lake.append(crow_schemas::RAW_WEB_EVENTS.name, vec![batch])
                .await
        }));
        done.events += rows as u64;
        done.visitors += n_visitors as u64;
        done.chunks += 1;
    }
    if let Some(c) = committing.take() {
        c.await.context("committing a chunk")??;
    }
    Ok(done)
}

/// Visitors in a chunk (chunks of 50k visitors keep memory flat).
const FULL: usize = 50_000;
/// About this many events per visitor (the demo funnel's average).
const EVENTS_PER_VISITOR: f64 = 8.5;
/// Chunks made at once ahead of their turn.
const AHEAD: usize = 2;

/// A chunk being made: its batch of `raw_web_events` and its row count.
type Making = tokio::task::JoinHandle<Result<(crow_lake::arrow::record_batch::RecordBatch, usize)>>;

/// One chunk of generated events: the run's template, its number (the
/// generator's seed is the run's plus it), how many visitors and events.
struct Chunk {
    template: Arc<Template>,
    k: u64,
    visitors: usize,
    /// At most this many events (the last chunk stops at the total).
    take: usize,
}

impl Chunk {
    /// The chunk's events, normalised as the collector does, sorted by day,
    /// as one batch of `raw_web_events`; and how many rows it holds.
    fn batch(self) -> Result<(crow_lake::arrow::record_batch::RecordBatch, usize)> {
        let t = &self.template;
        let generated = generate::events(&GenerateOptions {
            visitors: self.visitors,
            first_day: t.first_day,
            days: t.days,
            seed: t.seed.wrapping_add(self.k),
            incidents: Vec::new(),
        });
        let ctx = NormalizeContext {
            org_id: &t.org_id,
            received_at: t.received_at,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `raw_web_events` in `lake`, as JSON text sorted by message.
    async fn rows(lake: &Lake) -> Vec<String> {
        let (_, batches) = lake
            .sql(
                "SELECT message_id, anonymous_id, event, occurred_at, event_date, properties \
                 FROM raw_web_events ORDER BY message_id",
            )
            .await
            .expect("query");
        crow_lake::batch::batches_to_json(&batches)
            .expect("json")
            .into_iter()
            .map(|r| serde_json::Value::Object(r).to_string())
            .collect()
    }

    /// Chunks made two at once ahead of their turn land the same events in
    /// the same number of commits as the chunks made one after the other
    /// (the code before it), the last, smaller ones included. (A chunk made
    /// ahead that turns out not to fit is made again; the demo's chunks
    /// vary too little for these sizes to reach that.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_made_ahead_are_the_chunks_made_one_after_the_other() {
        let open = |dir: &tempfile::TempDir| {
            let cfg = crow_schemas::config::LakeConfig {
                uri: dir.path().display().to_string(),
                ..Default::default()
            };
            async move {
                let lake = Lake::open(&cfg).await.expect("open");
                lake.init().await.expect("init");
                lake
            }
        };
        let (a, b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (ahead, one_by_one) = (open(&a).await, open(&b).await);
        let template = Arc::new(Template {
            org_id: "org_bench".into(),
            received_at: chrono::Utc::now(),
            first_day: chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("date"),
            days: 7,
            seed: 3,
        });
        // 40 visitors a chunk: about 25 chunks of about 340 events.
        let (events, full) = (8_000u64, 40usize);
        let before = ahead
            .table("raw_web_events")
            .await
            .expect("table")
            .version();
        let landed = land(&ahead, &template, events, full, &ProgressBar::hidden())
            .await
            .expect("land");
        assert_eq!(landed.events, events);
        assert!(landed.made_ahead >= 15, "{landed:?}");
        let after = ahead
            .table("raw_web_events")
            .await
            .expect("table")
            .version();
        assert_eq!(
            after.unwrap_or(0) - before.unwrap_or(0),
            landed.chunks,
            "a commit a chunk"
        );

        // The same, one chunk after the other.
        let (mut n, mut k) = (0u64, 0u64);
        while n < events {
            let remaining = events - n;
            let take = usize::try_from(remaining).expect("take");
            let (batch, rows) = chunk(&template, k, visitors_for(remaining, full), take)
                .batch()
                .expect("chunk");
            one_by_one
                .append("raw_web_events", vec![batch])
                .await
                .expect("append");
            n += rows as u64;
            k += 1;
        }
        assert_eq!((n, k), (landed.events, landed.chunks));
        let want = rows(&one_by_one).await;
        assert_eq!(want.len(), events as usize);
        assert_eq!(rows(&ahead).await, want);
    }
}
