//! Sessionize: raw activity of all three channels → `sessions`.
//!
//! Rules (see the README's "Jobs" section):
//! - **Web.** Events are deduplicated by `(org_id, message_id)` (the first
//!   received copy wins). Identity is stitched: an anonymous id seen together
//!   with a user id (any event carrying both, or an `alias` call's
//!   `previous_id`) belongs to that user — the earliest such user id wins —
//!   and the visitor is `user_id`, else the stitched user, else the anonymous
//!   id. A visitor's session ends after `jobs.session_gap_minutes` (default
//!   60) without events.
//! - **CCTV.** Each camera-hour (store, camera, UTC hour of the segment
//!   start) is one session; segments are deduplicated by `segment_id`.
//! - **Social.** Each collector run (`run_id`) is one session; captures are
//!   deduplicated by `capture_id`.
//! - **Closed sessions only.** A web or social session is closed once its
//!   last event is at least one gap older than the watermark (the run's
//!   clock); a camera-hour once the hour is over. Open sessions are left for
//!   a later run.
//! - **Windows.** A run writes the sessions whose `started_at` falls in its
//!   window `[start, end)` and replaces exactly that window of the table.
//!   An incremental run starts at the watermark and ends at the earliest
//!   start of a session still open (at most watermark − gap), so no session
//!   is ever cut or skipped.
//! - **Late events.** An incremental run also looks for events *received*
//!   since the previous run started (minus a 10 minute allowance for the
//!   collector's flush delay) that *occurred* before its window. The run's
//!   window then starts at the UTC midnight of the earliest such event, so
//!   the affected days are sessionized again: late events join the session
//!   they belong to (which may merge or extend sessions) or form their own.
//!   Explicit windows (`--from/--to`, backfills) always read everything that
//!   has arrived.
//!
//! Execution (web): a narrow first pass finds the copied messages (sorted
//! 64-bit hashes of `(org_id, message_id)`); only their events are sorted by
//! message and cut to the first received copy (`web::FirstCopies`).
//! Before any sort, each event is narrowed to what the split reads of it
//! (`web::narrow`: keys, ids and device, its product, traffic source and
//! timeline entry already worked out, three flags) — about half the bytes
//! the sorts would otherwise move, spill and merge. The deduplicated,
//! stitched events are hash-partitioned
//! by org and visitor (the org as its 64-bit hash, `web::Orgs`, named again
//! by the split) into one partition per core; each partition is
//! sorted by visitor and time on its own and split into sessions by its own
//! task. The queries run under a memory pool of `jobs.memory_limit_mb`, so
//! the sorts spill to the OS temp folder
//! instead of growing. Session rows are appended straight into Arrow column
//! builders, finished as batches of [`CHUNK`] rows as visitors complete and
//! written to a spool file (Arrow IPC, in the runtime's temp folder); a task
//! holds one visitor's events and one unfinished batch. The window's
//! sessions then stream from the spool files, sorted into the table's file
//! order under the same pool, into one atomic replace commit.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use crow_lake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Int64Array, Int64Builder, ListBuilder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondBuilder,
};
use crow_lake::arrow::compute::cast;
use crow_lake::arrow::datatypes::{DataType, Field, SchemaRef};
use crow_lake::arrow::ipc::reader::StreamReader;
use crow_lake::arrow::ipc::writer::StreamWriter;
use crow_lake::datafusion::arrow::compute::SortOptions;
use crow_lake::datafusion::catalog::streaming::StreamingTable;
use crow_lake::datafusion::common::ScalarValue;
use crow_lake::datafusion::error::{DataFusionError, Result as DfResult};
use crow_lake::datafusion::execution::disk_manager::{
    DiskManager, DiskManagerBuilder, DiskManagerMode,
};
use crow_lake::datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use crow_lake::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use crow_lake::datafusion::execution::spill_file::{SpillFile, SpillWriter};
use crow_lake::datafusion::execution::SendableRecordBatchStream;
use crow_lake::datafusion::execution::TaskContext;
use crow_lake::datafusion::functions_aggregate::expr_fn::count;
use crow_lake::datafusion::physical_expr::expressions::col as physical_col;
use crow_lake::datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use crow_lake::datafusion::physical_plan::repartition::RepartitionExec;
use crow_lake::datafusion::physical_plan::sorts::sort::SortExec;
use crow_lake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use crow_lake::datafusion::physical_plan::streaming::PartitionStream;
use crow_lake::datafusion::physical_plan::{ExecutionPlan, Partitioning};
use crow_lake::datafusion::prelude::{col, lit, DataFrame, SessionContext};
use crow_lake::deltalake::delta_datafusion::DeltaSessionContext;
use crow_lake::Lake;
use crow_schemas::segment::SegmentEvent;
use crow_schemas::time::days_from_micros;
use crow_schemas::timeline::{self, TimelineEntry};
use crow_schemas::SESSIONS;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::job::{Job, JobContext, Planned, Request, Split};
use crate::runs;
use crate::{Error, Params, ProgressRef, Result, Trigger, Window};

mod cctv;
mod columns;
mod output;
mod social;
mod web;
mod window;

/// The words of a timeline entry's `detail` that product similarity reads:
/// a social post's own text, without the author before it and the reach
/// after it, which say nothing about products and dilute a paraphrase's
/// similarity; other channels' detail as it is.
pub fn similarity_text<'a>(channel: &str, detail: &'a str) -> &'a str {
    if channel == "social" {
        social::post_text(detail)
    } else {
        detail
    }
}

use cctv::*;
use columns::*;
/// One row of `sessions`, on its way into the output batches.
pub use crow_schemas::rows::SessionRow;
use output::*;
use social::*;
use web::*;
use window::*;

/// Name of the job in the ledger.
pub const JOB: &str = crate::JobName::Sessionize.as_str();
/// Timeline entries kept per session; longer sessions end with a
/// `truncated` entry.
pub const MAX_TIMELINE: usize = 300;
/// How long before the previous run's start a received event still counts
/// as possibly unseen (collector flush delay).
const LATE_ALLOWANCE_MINUTES: i64 = 10;
/// Sessions per finished Arrow batch.
pub const CHUNK: usize = 8192;

/// What to sessionize.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this organization (None: all).
    pub org: Option<String>,
    /// Explicit window of session starts (None: incremental from the
    /// watermark).
    pub window: Option<Window>,
    /// Inactivity gap that ends a web session.
    pub gap: Duration,
    /// The run's clock: sessions must be closed by this time.
    pub now: DateTime<Utc>,
    /// How the run was started.
    pub trigger: Trigger,
    /// Memory pool of the run's queries in MiB (`jobs.memory_limit_mb`):
    /// sorts and windows spill to disk beyond it.
    pub memory_limit_mb: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run id in `job_runs` (empty when there was nothing to do).
    pub run_id: String,
    /// Window start (RFC 3339).
    pub window_start: Option<DateTime<Utc>>,
    /// Window end.
    pub window_end: Option<DateTime<Utc>>,
    /// Source rows read (after deduplication).
    pub events_read: u64,
    /// Duplicate source rows dropped.
    pub duplicates: u64,
    /// Sessions written, all channels.
    pub sessions: u64,
    /// Web / social / CCTV sessions written.
    pub web_sessions: u64,
    /// Social sessions written.
    pub social_sessions: u64,
    /// CCTV sessions written.
    pub cctv_sessions: u64,
    /// Sessions still open, left for a later run.
    pub open_sessions: u64,
    /// Days recomputed because late events arrived for them.
    pub late_days: Vec<NaiveDate>,
    /// Spill files the sessionizing sorts (deduplication, visitors) wrote
    /// (0: everything fit in `jobs.memory_limit_mb`).
    pub spill_count: u64,
    /// Bytes those sorts spilled to disk.
    pub spilled_bytes: u64,
}

impl std::fmt::Debug for SpoolPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolPartition")
            .field("path", &self.file.path())
            .finish()
    }
}

impl PartitionStream for SpoolPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        // A local temp file, read a batch at a time.
        let open = || -> DfResult<_> {
            let path = self.file.path().ok_or_else(|| {
                DataFusionError::Execution("sessionize spool file has no local path".into())
            })?;
            let file = std::io::BufReader::new(std::fs::File::open(path)?);
            Ok(StreamReader::try_new(file, None)?)
        };
        let batches: Box<dyn Iterator<Item = DfResult<RecordBatch>> + Send> = match open() {
            Ok(r) => Box::new(r.map(|b| b.map_err(DataFusionError::from))),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

impl PartitionStream for MemPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches: Vec<DfResult<RecordBatch>> = self.batches.iter().cloned().map(Ok).collect();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

impl Default for SessionBuilder {
    fn default() -> Self {
        // The list columns' item field as the table declares it.
        let list = || {
            ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "element",
                DataType::Utf8,
                true,
            )))
        };
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        SessionBuilder {
            len: 0,
            org_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            channel: StringBuilder::new(),
            visitor_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            anonymous_ids: list(),
            started_at: ts(),
            ended_at: ts(),
            event_count: Int64Builder::new(),
            page_views: Int64Builder::new(),
            product_ids: list(),
            device_type: StringBuilder::new(),
            traffic_source: StringBuilder::new(),
            is_returning: BooleanBuilder::new(),
            converted: BooleanBuilder::new(),
            source_ref: StringBuilder::new(),
            timeline: StringBuilder::new(),
            source_ids: list(),
            job_run_id: StringBuilder::new(),
            session_date: Date32Builder::new(),
        }
    }
}

/// The sessionize job, configured for one run.
#[derive(Debug)]
pub struct Sessionize {
    opts: Options,
}

/// Where a run starts, where an explicit window ends, and the days late
/// events moved it back to.
type Start = (DateTime<Utc>, Option<DateTime<Utc>>, Vec<NaiveDate>);

#[async_trait::async_trait]
impl Job for Sessionize {
    const NAME: &'static str = JOB;
    const SPLIT: Option<Split> = Some(Split::Days);
    const IDLE: &'static str = "there is no raw activity to sessionize yet";
    type Plan = Start;
    type Report = Report;

    fn build(ctx: &JobContext, req: &Request) -> Result<Self> {
        let cfg = &ctx.config.jobs;
        Ok(Sessionize {
            opts: Options {
                org: req.org.clone(),
                window: req.window,
                gap: Duration::minutes(i64::from(cfg.session_gap_minutes)),
                now: ctx.now,
                trigger: req.trigger,
                memory_limit_mb: cfg.memory_limit_mb,
            },
        })
    }

    async fn plan(&self, ctx: &JobContext, _req: &Request) -> Result<Planned<Start, Report>> {
        // An explicit window ends where it says; an incremental one starts
        // at the watermark and learns its end while running.
        let explicit = self
            .opts
            .window
            .map(|w| (w, (w.start, Some(w.end), Vec::new())));
        let incremental = async {
            let start = incremental_start(&ctx.lake, self.opts.org.as_deref()).await;
            start.map(|s| {
                s.map(|(from, late_days)| {
                    let window = Window {
                        start: from,
                        end: from,
                    };
                    (window, (from, None, late_days))
                })
            })
        };
        Self::plan_window(explicit, incremental, Report::default()).await
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        (from, explicit_end, late_days): Start,
        run_id: &str,
    ) -> Result<(Window, Report)> {
        let (lake, opts, progress) = (&ctx.lake, &self.opts, &ctx.progress);
        let (window, built, inside, ordered) =
            sessionize(lake, opts, from, explicit_end, progress, run_id).await?;
        let mut report = Report {
            run_id: run_id.to_string(),
            window_start: Some(window.start),
            window_end: Some(window.end),
            events_read: built.events,
            duplicates: built.duplicates,
            open_sessions: built.open,
            late_days,
            spill_count: built.spill_count,
            spilled_bytes: built.spilled_bytes,
            ..Report::default()
        };
        let counts = inside
            .aggregate(vec![col("channel")], vec![count(lit(1)).alias("n")])?
            .collect()
            .await?;
        for b in &counts {
            let (channel, n) = (text(b, "channel")?, micros(b, "n")?);
            for i in 0..b.num_rows() {
                let n = n.value(i).max(0) as u64;
                match channel.value(i) {
                    "web" => report.web_sessions += n,
                    "social" => report.social_sessions += n,
                    _ => report.cctv_sessions += n,
                }
                report.sessions += n;
            }
        }
        progress.phase("writing sessions", 0);
        write(lake, opts.org.as_deref(), window, ordered).await?;
        Ok((window, report))
    }

    fn rows(r: &Report) -> (u64, u64) {
        (r.events_read, r.sessions)
    }
}

/// Compute the sessions starting at or after `from` (and before
/// `explicit_end`, when given); returns the window actually covered, what
/// the run counted, and the window's sessions as a plan: unordered (to
/// count) and in the table's file order (to write).
async fn sessionize(
    lake: &Lake,
    opts: &Options,
    from: DateTime<Utc>,
    explicit_end: Option<DateTime<Utc>>,
    progress: &ProgressRef,
    run_id: &str,
) -> Result<(Window, Built, DataFrame, DataFrame)> {
    let now = opts.now;
    let read_start = from - opts.gap;
    // Explicit windows read a day past their end first and widen the read
    // while a session starting inside is still going at the read's end.
    let mut read_end = match explicit_end {
        Some(end) => (end + Duration::days(1)).min(now),
        None => now,
    };
    let runtime = job_runtime(opts.memory_limit_mb)?;
    let pool_bytes =
        usize::try_from(opts.memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let mut config = crow_lake::session_config();
    size_to_pool(&mut config.options_mut().execution, pool_bytes);
    let session = || lake.session_on(config.clone(), runtime.clone());
    // Who had a session before the window does not depend on how far the
    // read goes: asked once, not per widening.
    let returning = Arc::new(earlier_visitors(&session().await?, opts.org.as_deref(), from).await?);
    // Sessions starting after this are never in the window.
    let keep_end = explicit_end.unwrap_or(now - opts.gap).timestamp_micros();
    let keep = (from.timestamp_micros(), keep_end);
    loop {
        let ctx = session().await?;
        let mut built = Built::new(keep, Some(runtime.disk_manager.clone()));
        let pass = Pass {
            ctx: &ctx,
            opts,
            read_start,
            read_end,
            run_id,
        };
        progress.phase("sessionizing web events", 0);
        web(&pass, &returning, &mut built, progress).await?;
        progress.phase("sessionizing CCTV transcripts", 0);
        cctv(&pass, &mut built).await?;
        progress.phase("sessionizing social captures", 0);
        social(&pass, &mut built).await?;
        let end = match explicit_end {
            Some(end) => {
                let still_open = built
                    .open_min_start
                    .is_some_and(|s| s < end.timestamp_micros());
                if still_open && read_end < now {
                    read_end = (read_end + Duration::days(7)).min(now);
                    continue;
                }
                end
            }
            None => {
                let mut end = now - opts.gap;
                if let Some(s) = built
                    .open_min_start
                    .and_then(DateTime::from_timestamp_micros)
                {
                    end = end.min(s);
                }
                end.max(from)
            }
        };
        let (s, e) = (from.timestamp_micros(), end.timestamp_micros());
        let out = std::mem::replace(&mut built.out, SessionBatches::new(keep, None)).finish()?;
        let (inside, ordered) = sessions_plan(&writer_context(&runtime, pool_bytes), out, s, e)?;
        // Sessions open inside the window are reported; those after it are
        // simply not due yet.
        return Ok((Window { start: from, end }, built, inside, ordered));
    }
}

/// One read of the raw tables, shared by the three channels: the query
/// context, the run's options, the range of activity read and the run id.
struct Pass<'a> {
    ctx: &'a SessionContext,
    opts: &'a Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    run_id: &'a str,
}

/// Append `v` to the last group when that group's key is `key`, else start
/// a group: rows sorted by key end up one group per key.
fn group_sorted<K: PartialEq, V>(groups: &mut Vec<(K, Vec<V>)>, key: K, v: V) {
    match groups.last_mut() {
        Some((k, vs)) if *k == key => vs.push(v),
        _ => groups.push((key, vec![v])),
    }
}

/// Rows in `batches`.
fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Replace the window's sessions (of one org, or all) with `rows`.
async fn write(lake: &Lake, org: Option<&str>, window: Window, rows: DataFrame) -> Result<()> {
    if window.is_empty() {
        return Ok(());
    }
    let last_day = (window.end - Duration::microseconds(1)).date_naive();
    let predicate = crate::window_predicate(window.start.date_naive(), last_day, window, org);
    lake.replace_where_if_changed_df(SESSIONS.name, &predicate, rows, &["job_run_id"])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A narrowed event ([`WebEvent`]: what the split reads; the narrowing
    /// itself is tested in `web`).
    fn ev(id: &str, t: i64) -> WebEvent<'_> {
        WebEvent {
            message_id: id,
            anonymous_id: Some("a1"),
            user_id: None,
            occurred: t,
            device_type: Some("mobile"),
            product: Some("p1"),
            source: "google.com",
            tl_kind: "Product Viewed",
            tl_detail: "p1 Headphones",
            page_view: false,
            converted: false,
        }
    }

    const MIN: i64 = 60_000_000;

    #[test]
    fn a_gap_longer_than_the_limit_splits_sessions_and_open_ones_wait() {
        let events = vec![
            ev("m1", 0),
            ev("m2", 30 * MIN),
            ev("m3", 30 * MIN + 60 * MIN + 1),
            ev("m4", 200 * MIN),
        ];
        let mut built = Built::new((i64::MIN, i64::MAX), None);
        let read_end = 200 * MIN + 59 * MIN; // m4's session is still open
        flush_visitor(
            "o",
            "a1",
            &events,
            60 * MIN,
            read_end,
            &HashSet::new(),
            "run",
            &mut built,
        )
        .unwrap();
        assert_eq!(built.open, 1);
        assert_eq!(built.open_min_start, Some(200 * MIN));
        let batches = built.out.finish().unwrap().batches;
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.schema(), SESSIONS.schema());
        assert_eq!(b.num_rows(), 2);
        let source_ids = b.column_by_name("source_ids").unwrap().as_list::<i32>();
        let ids = |i: usize| -> Vec<String> {
            let v = source_ids.value(i);
            v.as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(0), vec!["m1", "m2"]);
        assert_eq!(ids(1), vec!["m3"]);
        let returning = b.column_by_name("is_returning").unwrap().as_boolean();
        assert!(!returning.value(0));
        assert!(returning.value(1));
        assert!(returning.is_valid(0) && returning.is_valid(1));
        let source = text(b, "traffic_source").unwrap();
        assert_eq!(source.value(0), "google.com");
        let sid = text(b, "session_id").unwrap();
        assert_ne!(sid.value(0), sid.value(1));
        // Same input, same id.
        assert_eq!(sid.value(0), session_id("o", "web", "a1", 0));
        let timeline = text(b, "timeline").unwrap();
        assert_eq!(
            timeline.value(0),
            r#"[[0,"Product Viewed","p1 Headphones"],[1800,"Product Viewed","p1 Headphones"]]"#
        );
    }

    fn row(t: i64) -> SessionRow {
        SessionRow {
            org_id: "o".into(),
            session_id: format!("s{t}"),
            channel: "web",
            visitor_id: None,
            user_id: None,
            anonymous_ids: None,
            started_at: t,
            ended_at: t,
            event_count: 1,
            page_views: None,
            product_ids: Some(Vec::new()),
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: None,
            timeline: "[]".into(),
            source_ids: vec!["m".into()],
            job_run_id: "run".into(),
            session_date: i32::from(t % 3 == 0),
        }
    }

    #[test]
    fn rows_outside_the_kept_range_are_dropped_and_chunks_are_bounded() {
        let mut out = SessionBatches::new((10, 10 + CHUNK as i64 + 5), None);
        for t in 0..(CHUNK as i64 + 20) {
            out.push(row(t)).unwrap();
        }
        // One finished chunk while pushing, the rest at the end.
        assert_eq!(out.done.len(), 1);
        let batches = out.finish().unwrap().batches;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, CHUNK + 5);
        assert!(batches.iter().all(|b| b.num_rows() <= CHUNK));
        // An empty list stays an empty list, a missing one is null.
        let products = batches[0].column_by_name("product_ids").unwrap();
        assert!(products.is_valid(0));
        assert_eq!(products.as_list::<i32>().value_length(0), 0);
        assert!(batches[0]
            .column_by_name("anonymous_ids")
            .unwrap()
            .is_null(0));
    }

    #[tokio::test]
    async fn spooled_chunks_read_back_filtered_and_in_file_order() {
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::OsTmpDirectory)
            .build()
            .map(Arc::new)
            .unwrap();
        let n = 2 * CHUNK as i64 + 7;
        let mut out = SessionBatches::new((0, n), Some(disk));
        for t in (0..n).rev() {
            out.push(row(t)).unwrap();
        }
        // Finished chunks went to the spool, not to memory.
        assert!(out.done.is_empty());
        let spooled = out.finish().unwrap();
        assert!(spooled.batches.is_empty());
        assert_eq!(spooled.files.len(), 1);
        let ctx = SessionContext::new();
        let (inside, ordered) = sessions_plan(&ctx, spooled, 5, n - 5).unwrap();
        assert_eq!(inside.count().await.unwrap(), (n - 10) as usize);
        let batches = ordered.collect().await.unwrap();
        let keys: Vec<(i32, i64)> = batches
            .iter()
            .flat_map(|b| {
                let d = b
                    .column_by_name("session_date")
                    .unwrap()
                    .as_primitive::<crow_lake::arrow::datatypes::Date32Type>()
                    .clone();
                let t = micros(b, "started_at").unwrap();
                (0..b.num_rows())
                    .map(|i| (d.value(i), t.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(keys.len(), (n - 10) as usize);
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "not in file order");
        // Day 0 first (starts not divisible by 3), from the filter's start.
        assert_eq!(keys.first(), Some(&(0, 5)));
    }
}
