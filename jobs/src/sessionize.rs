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
//! Execution (web): the deduplicated, stitched events are hash-partitioned
//! by `(org_id, visitor)` into one partition per core; each partition is
//! sorted by visitor and time on its own and split into sessions by its own
//! task. The queries run under a memory pool of `jobs.memory_limit_mb`, so
//! the deduplication window and the sorts spill to the OS temp folder
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
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
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
use crow_schemas::SESSIONS;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::job::{Job, JobContext, Planned, Request, Split};
use crate::runs;
use crate::{str_lit, ts_lit, Error, ProgressRef, Result, Trigger, Window};

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

/// One row of `sessions`, on its way into [`SessionBatches`].
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub org_id: String,
    pub session_id: String,
    pub channel: &'static str,
    pub visitor_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_ids: Option<Vec<String>>,
    pub started_at: i64,
    pub ended_at: i64,
    pub event_count: i64,
    pub page_views: Option<i64>,
    pub product_ids: Option<Vec<String>>,
    pub device_type: Option<String>,
    pub traffic_source: Option<String>,
    pub is_returning: Option<bool>,
    pub converted: Option<bool>,
    pub source_ref: Option<String>,
    pub timeline: String,
    pub source_ids: Vec<String>,
    pub job_run_id: String,
    pub session_date: i32,
}

/// Sessions computed over one read of the raw tables (by one task, or
/// merged from all of them).
struct Built {
    out: SessionBatches,
    /// Earliest start of a session not yet closed at the read end.
    open_min_start: Option<i64>,
    open: u64,
    events: u64,
    duplicates: u64,
    spill_count: u64,
    spilled_bytes: u64,
}

impl Built {
    /// Keeping the sessions that start in `[keep.0, keep.1)`, spooled to
    /// `disk` when given.
    fn new(keep: (i64, i64), disk: Option<Arc<DiskManager>>) -> Self {
        Built {
            out: SessionBatches::new(keep, disk),
            open_min_start: None,
            open: 0,
            events: 0,
            duplicates: 0,
            spill_count: 0,
            spilled_bytes: 0,
        }
    }

    fn open_session(&mut self, start: i64) {
        self.open += 1;
        self.open_min_start = Some(self.open_min_start.map_or(start, |m| m.min(start)));
    }

    /// Add what another task built.
    fn merge(&mut self, other: Built) -> Result<()> {
        self.open_min_start = match (self.open_min_start, other.open_min_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.open += other.open;
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.spill_count += other.spill_count;
        self.spilled_bytes += other.spilled_bytes;
        self.out.append(other.out)
    }
}

/// `sessions` rows appended straight into Arrow column builders (no
/// serde/JSON step); every [`CHUNK`] rows the builders are finished into a
/// batch, which goes to a spool file (an Arrow IPC stream in the runtime's
/// temp folder) when the run has a disk manager, else stays in memory.
/// Rows starting outside `keep` are dropped on the way in.
struct SessionBatches {
    keep: (i64, i64),
    b: SessionBuilder,
    done: Vec<RecordBatch>,
    disk: Option<Arc<DiskManager>>,
    spool: Option<SpoolWriter>,
    files: Vec<Arc<dyn SpillFile>>,
}

/// The spool file being written.
struct SpoolWriter {
    file: Arc<dyn SpillFile>,
    writer: StreamWriter<Box<dyn SpillWriter>>,
}

/// What a [`SessionBatches`] made: batches kept in memory and spool files.
#[derive(Default)]
struct Sessions {
    batches: Vec<RecordBatch>,
    files: Vec<Arc<dyn SpillFile>>,
}

impl SessionBatches {
    fn new(keep: (i64, i64), disk: Option<Arc<DiskManager>>) -> Self {
        SessionBatches {
            keep,
            b: SessionBuilder::default(),
            done: Vec::new(),
            disk,
            spool: None,
            files: Vec::new(),
        }
    }

    fn push(&mut self, r: SessionRow) -> Result<()> {
        if r.started_at < self.keep.0 || r.started_at >= self.keep.1 {
            return Ok(());
        }
        self.b.append(r);
        if self.b.len >= CHUNK {
            let batch = self.b.finish()?;
            self.emit(batch)?;
        }
        Ok(())
    }

    fn emit(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(disk) = &self.disk else {
            self.done.push(batch);
            return Ok(());
        };
        if self.spool.is_none() {
            let file = disk.create_tmp_file("sessionize output")?;
            let writer = StreamWriter::try_new(file.open_writer()?, &SESSIONS.schema())?;
            self.spool = Some(SpoolWriter { file, writer });
        }
        if let Some(s) = &mut self.spool {
            s.writer.write(&batch)?;
        }
        Ok(())
    }

    /// Take over another builder's output (its unfinished rows finished).
    fn append(&mut self, other: SessionBatches) -> Result<()> {
        let mut out = other.finish()?;
        self.done.append(&mut out.batches);
        self.files.append(&mut out.files);
        Ok(())
    }

    /// Everything made, the unfinished rows included; spool files closed.
    fn finish(mut self) -> Result<Sessions> {
        if self.b.len > 0 {
            let batch = self.b.finish()?;
            self.emit(batch)?;
        }
        if let Some(s) = self.spool.take() {
            s.writer.into_inner()?.finish()?;
            self.files.push(s.file);
        }
        Ok(Sessions {
            batches: self.done,
            files: self.files,
        })
    }
}

/// A spool file read back as one partition of the sessions to write.
struct SpoolPartition {
    file: Arc<dyn SpillFile>,
    schema: SchemaRef,
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

/// Batches kept in memory as one partition of the sessions to write.
#[derive(Debug)]
struct MemPartition {
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
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

/// The window's sessions as a DataFusion plan over the spool files (and
/// in-memory batches): those starting in `[start, end)`, in the table's
/// file order (day, org, start, id). The sort runs, and spills, under
/// `ctx`'s memory pool.
fn sessions_plan(
    ctx: &SessionContext,
    out: Sessions,
    start: i64,
    end: i64,
) -> Result<(DataFrame, DataFrame)> {
    let schema = SESSIONS.schema();
    let mut parts: Vec<Arc<dyn PartitionStream>> = Vec::new();
    for file in out.files {
        parts.push(Arc::new(SpoolPartition {
            file,
            schema: schema.clone(),
        }));
    }
    parts.push(Arc::new(MemPartition {
        batches: out.batches,
        schema: schema.clone(),
    }));
    let ts = |t: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t),
            Some("UTC".into()),
        ))
    };
    let inside = ctx
        .read_table(Arc::new(StreamingTable::try_new(schema, parts)?))?
        .filter(
            col("started_at")
                .gt_eq(ts(start))
                .and(col("started_at").lt(ts(end))),
        )?;
    let ordered = inside.clone().sort(
        ["session_date", "org_id", "started_at", "session_id"]
            .into_iter()
            .map(|c| col(c).sort(true, false))
            .collect(),
    )?;
    Ok((inside, ordered))
}

/// One Arrow builder per `sessions` column, in the table's order.
struct SessionBuilder {
    len: usize,
    org_id: StringBuilder,
    session_id: StringBuilder,
    channel: StringBuilder,
    visitor_id: StringBuilder,
    user_id: StringBuilder,
    anonymous_ids: ListBuilder<StringBuilder>,
    started_at: TimestampMicrosecondBuilder,
    ended_at: TimestampMicrosecondBuilder,
    event_count: Int64Builder,
    page_views: Int64Builder,
    product_ids: ListBuilder<StringBuilder>,
    device_type: StringBuilder,
    traffic_source: StringBuilder,
    is_returning: BooleanBuilder,
    converted: BooleanBuilder,
    source_ref: StringBuilder,
    timeline: StringBuilder,
    source_ids: ListBuilder<StringBuilder>,
    job_run_id: StringBuilder,
    session_date: Date32Builder,
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

impl SessionBuilder {
    fn append(&mut self, r: SessionRow) {
        fn list(b: &mut ListBuilder<StringBuilder>, v: Option<Vec<String>>) {
            match v {
                Some(v) => {
                    for s in v {
                        b.values().append_value(s);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        self.len += 1;
        self.org_id.append_value(r.org_id);
        self.session_id.append_value(r.session_id);
        self.channel.append_value(r.channel);
        self.visitor_id.append_option(r.visitor_id);
        self.user_id.append_option(r.user_id);
        list(&mut self.anonymous_ids, r.anonymous_ids);
        self.started_at.append_value(r.started_at);
        self.ended_at.append_value(r.ended_at);
        self.event_count.append_value(r.event_count);
        self.page_views.append_option(r.page_views);
        list(&mut self.product_ids, r.product_ids);
        self.device_type.append_option(r.device_type);
        self.traffic_source.append_option(r.traffic_source);
        self.is_returning.append_option(r.is_returning);
        self.converted.append_option(r.converted);
        self.source_ref.append_option(r.source_ref);
        self.timeline.append_value(r.timeline);
        list(&mut self.source_ids, Some(r.source_ids));
        self.job_run_id.append_value(r.job_run_id);
        self.session_date.append_value(r.session_date);
    }

    /// The rows appended so far as a batch with exactly the table's schema;
    /// the builders start over.
    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.org_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.visitor_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.anonymous_ids.finish()),
            Arc::new(self.started_at.finish()),
            Arc::new(self.ended_at.finish()),
            Arc::new(self.event_count.finish()),
            Arc::new(self.page_views.finish()),
            Arc::new(self.product_ids.finish()),
            Arc::new(self.device_type.finish()),
            Arc::new(self.traffic_source.finish()),
            Arc::new(self.is_returning.finish()),
            Arc::new(self.converted.finish()),
            Arc::new(self.source_ref.finish()),
            Arc::new(self.timeline.finish()),
            Arc::new(self.source_ids.finish()),
            Arc::new(self.job_run_id.finish()),
            Arc::new(self.session_date.finish()),
        ];
        Ok(RecordBatch::try_new(SESSIONS.schema(), columns)?)
    }
}

/// A runtime whose memory pool holds `mb` MiB; beyond it operators that can
/// spill write to the OS temp folder. When the pool runs out, the error
/// names its largest consumers.
fn job_runtime(mb: u64) -> Result<Arc<RuntimeEnv>> {
    let bytes = usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(bytes),
        std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
    );
    Ok(RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory),
        )
        .build_arc()?)
}

/// A session on the job's runtime that the Delta writer can plan with (its
/// own query planner), with the sort reservations sized to the pool.
fn writer_context(runtime: &Arc<RuntimeEnv>, pool_bytes: usize) -> SessionContext {
    let ctx = DeltaSessionContext::with_runtime_env(runtime.clone()).into_inner();
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let execution = &mut state.config_mut().options_mut().execution;
        execution.sort_spill_reservation_bytes = (10 << 20).min(pool_bytes / 16);
        execution.sort_in_place_threshold_bytes = (1 << 20).min(pool_bytes / 16);
    }
    ctx
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

/// Where an incremental run starts: the watermark, moved back to midnight
/// of the earliest late event; or, on a first run, midnight of the earliest
/// activity. None when there is no activity at all.
async fn incremental_start(
    lake: &Lake,
    org: Option<&str>,
) -> Result<Option<(DateTime<Utc>, Vec<NaiveDate>)>> {
    let org_cond = org_filter(org);
    let Some(wm) = runs::watermark(lake, JOB).await? else {
        let sql = format!(
            "SELECT min(t) AS t FROM (
               SELECT min(occurred_at) AS t FROM raw_web_events WHERE TRUE {org_cond}
               UNION ALL SELECT min(captured_at) FROM raw_social_captures WHERE TRUE {org_cond}
               UNION ALL SELECT min(segment_start) FROM raw_cctv_transcripts WHERE TRUE {org_cond})"
        );
        return Ok(min_time(lake, &sql)
            .await?
            .map(|t| (midnight(t), Vec::new())));
    };
    let last = runs::last_succeeded(lake, JOB).await?;
    let since = last
        .map(|r| r.started_at - Duration::minutes(LATE_ALLOWANCE_MINUTES))
        .unwrap_or(wm);
    let (since, wm_lit) = (ts_lit(since), ts_lit(wm));
    let sql = format!(
        "SELECT DISTINCT d FROM (
           SELECT date_trunc('day', occurred_at) AS d FROM raw_web_events
             WHERE received_at >= {since} AND occurred_at < {wm_lit} {org_cond}
           UNION ALL SELECT date_trunc('day', captured_at) FROM raw_social_captures
             WHERE received_at >= {since} AND captured_at < {wm_lit} {org_cond}
           UNION ALL SELECT date_trunc('day', segment_start) FROM raw_cctv_transcripts
             WHERE received_at >= {since} AND segment_start < {wm_lit} {org_cond})
         ORDER BY d"
    );
    let (_, batches) = lake.sql(&sql).await?;
    let mut days = Vec::new();
    for b in &batches {
        let c = cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>();
        for i in 0..c.len() {
            if c.is_valid(i) {
                if let Some(t) = DateTime::from_timestamp_micros(c.value(i)) {
                    days.push(t.date_naive());
                }
            }
        }
    }
    days.sort();
    days.dedup();
    let start = days
        .first()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_or(wm, |d| d.min(wm));
    if !days.is_empty() {
        tracing::info!(
            ?days,
            "sessionize: late events arrived, recomputing their days"
        );
    }
    Ok(Some((start, days)))
}

async fn min_time(lake: &Lake, sql: &str) -> Result<Option<DateTime<Utc>>> {
    let (_, batches) = lake.sql(sql).await?;
    for b in &batches {
        if b.num_rows() == 0 {
            continue;
        }
        let c = cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>();
        if c.is_valid(0) {
            return Ok(DateTime::from_timestamp_micros(c.value(0)));
        }
    }
    Ok(None)
}

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

fn org_filter(org: Option<&str>) -> String {
    org.map(|o| format!(" AND org_id = {}", str_lit(o)))
        .unwrap_or_default()
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
    // A sort sets this much aside for merging its spill files; with a small
    // pool, a share of it (several sorts run at once).
    let config = crow_lake::session_config()
        .with_sort_spill_reservation_bytes((10 << 20).min(pool_bytes / 16))
        .with_sort_in_place_threshold_bytes((1 << 20).min(pool_bytes / 16));
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
        progress.phase("sessionizing web events", 0);
        web(
            &ctx, opts, read_start, read_end, &returning, run_id, &mut built, progress,
        )
        .await?;
        progress.phase("sessionizing CCTV transcripts", 0);
        cctv(&ctx, opts, read_start, read_end, run_id, &mut built).await?;
        progress.phase("sessionizing social captures", 0);
        social(&ctx, opts, read_start, read_end, run_id, &mut built).await?;
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

/// Visitors (org \u{1} visitor) with a web session before `before`.
async fn earlier_visitors(
    ctx: &SessionContext,
    org: Option<&str>,
    before: DateTime<Utc>,
) -> Result<HashSet<String>> {
    let sql = format!(
        "SELECT DISTINCT org_id, visitor_id FROM sessions
         WHERE channel = 'web' AND visitor_id IS NOT NULL AND started_at < {} {}",
        ts_lit(before),
        org_filter(org)
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = HashSet::new();
    for b in &batches {
        let (o, v) = (text(b, "org_id")?, text(b, "visitor_id")?);
        for i in 0..b.num_rows() {
            out.insert(format!("{}\u{1}{}", o.value(i), v.value(i)));
        }
    }
    Ok(out)
}

/// A text column as Utf8 (whatever string type the scan produced).
fn text(b: &RecordBatch, name: &str) -> Result<crow_lake::arrow::array::StringArray> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("column {name} missing from the scan")))?;
    let c = cast(c, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

fn micros(b: &RecordBatch, name: &str) -> Result<crow_lake::arrow::array::Int64Array> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("column {name} missing from the scan")))?;
    let c = cast(c, &DataType::Int64)?;
    Ok(c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>()
        .clone())
}

fn float(b: &RecordBatch, name: &str) -> Result<crow_lake::arrow::array::Float64Array> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("column {name} missing from the scan")))?;
    let c = cast(c, &DataType::Float64)?;
    Ok(c.as_primitive::<crow_lake::arrow::datatypes::Float64Type>()
        .clone())
}

fn opt_str(a: &crow_lake::arrow::array::StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Deterministic session id: same org, channel, key and start → same id.
fn session_id(org: &str, channel: &str, key: &str, start: i64) -> String {
    let mut h = Sha256::new();
    h.update(org.as_bytes());
    h.update([0]);
    h.update(channel.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(start.to_le_bytes());
    let hex = hex::encode(h.finalize());
    format!("ses_{}", &hex[..26])
}

fn day_of(micros: i64) -> i32 {
    micros.div_euclid(86_400_000_000) as i32
}

/// The text columns of `raw_web_events` the sessionizer reads.
const WEB_TEXT_COLUMNS: [&str; 16] = [
    "org_id",
    "message_id",
    "type",
    "event",
    "name",
    "anonymous_id",
    "user_id",
    "page_path",
    "page_url",
    "page_referrer",
    "device_type",
    "campaign_source",
    "product_id",
    "product_sku",
    "product_name",
    "order_id",
];

/// A web event as the sessionizer needs it.
struct WebEvent {
    message_id: String,
    kind: String,
    event: Option<String>,
    name: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    occurred: i64,
    page_path: Option<String>,
    page_url: Option<String>,
    referrer: Option<String>,
    device_type: Option<String>,
    campaign_source: Option<String>,
    product_id: Option<String>,
    product_sku: Option<String>,
    product_name: Option<String>,
    order_id: Option<String>,
    revenue: Option<f64>,
    props: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn web(
    ctx: &SessionContext,
    opts: &Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    returning: &Arc<HashSet<String>>,
    run_id: &str,
    built: &mut Built,
    progress: &ProgressRef,
) -> Result<()> {
    let org = org_filter(opts.org.as_deref());
    let (a, b) = (ts_lit(read_start), ts_lit(read_end));
    let (da, db) = (
        read_start.date_naive().format("%Y-%m-%d"),
        read_end.date_naive().format("%Y-%m-%d"),
    );
    // Text columns as plain Utf8 before the deduplication sort: the scan's
    // string views keep whole Parquet pages alive, so every sorted batch
    // would hold (and the memory pool would count) far more than its rows.
    let texts = WEB_TEXT_COLUMNS
        .iter()
        .map(|c| format!("arrow_cast({c}, 'Utf8') AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH links AS (
           SELECT org_id, anonymous_id AS anon, user_id AS uid, occurred_at FROM raw_web_events
            WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL AND occurred_at < {b} {org}
           UNION ALL
           SELECT org_id, previous_id AS anon, user_id AS uid, occurred_at FROM raw_web_events
            WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL AND occurred_at < {b} {org}
         ),
         ids AS (
           SELECT org_id, anon, arrow_cast(first_value(uid ORDER BY occurred_at, uid), 'Utf8') AS uid
           FROM links GROUP BY org_id, anon
         ),
         base AS (
           SELECT {texts}, occurred_at, received_at, revenue,
                  arrow_cast(CASE WHEN event IN ('Products Searched', 'Checkout Step Viewed', 'Checkout Step Completed')
                       THEN properties END, 'Utf8') AS props
           FROM raw_web_events
           WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
             AND occurred_at >= {a} AND occurred_at < {b} {org}
         ),
         numbered AS (
           SELECT org_id, message_id, type, event, name, anonymous_id, user_id, occurred_at,
                  page_path, page_url, page_referrer, device_type, campaign_source,
                  product_id, product_sku, product_name, order_id, revenue, props,
                  row_number() OVER (PARTITION BY org_id, message_id ORDER BY received_at, occurred_at) AS rn
           FROM base
         ),
         ev AS (SELECT * FROM numbered WHERE rn = 1)
         SELECT ev.*, arrow_cast(COALESCE(ev.user_id, ids.uid, ev.anonymous_id), 'Utf8') AS visitor_id
         FROM ev LEFT JOIN ids ON ev.org_id = ids.org_id AND ev.anonymous_id = ids.anon
         WHERE COALESCE(ev.user_id, ids.uid, ev.anonymous_id) IS NOT NULL"
    );
    let count_sql = format!(
        "SELECT count(*) AS n FROM raw_web_events
         WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
           AND occurred_at >= {a} AND occurred_at < {b} {org}"
    );
    let counted = ctx.sql(&count_sql).await?.collect().await?;
    let total = match counted.first().filter(|d| d.num_rows() > 0) {
        Some(d) => micros(d, "n")?.value(0).max(0) as u64,
        None => 0,
    };

    let gap = opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = read_end.timestamp_micros();
    // One partition per core, by visitor: each is sorted (spilling under the
    // pool) and split into sessions on its own.
    let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
    let schema = plan.schema();
    let parts = ctx.state().config().target_partitions().max(1);
    let hashed: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(
            vec![
                physical_col("org_id", &schema)?,
                physical_col("visitor_id", &schema)?,
            ],
            parts,
        ),
    )?);
    let asc = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let mut order = Vec::new();
    for c in ["org_id", "visitor_id", "occurred_at", "message_id"] {
        order.push(PhysicalSortExpr::new(physical_col(c, &schema)?, asc));
    }
    let order = LexOrdering::new(order)
        .ok_or_else(|| Error::Invalid("sessionize: empty sort order".into()))?;
    let sorted: Arc<dyn ExecutionPlan> =
        Arc::new(SortExec::new(order, hashed).with_preserve_partitioning(true));
    let task_ctx = ctx.task_ctx();
    let mut tasks = Tasks(Vec::with_capacity(parts));
    for p in 0..parts {
        let split = WebSplit {
            stream: sorted.execute(p, task_ctx.clone())?,
            gap,
            read_end,
            returning: returning.clone(),
            run_id: run_id.to_string(),
            progress: progress.clone(),
            keep: built.out.keep,
            disk: built.out.disk.clone(),
        };
        tasks.0.push(tokio::spawn(split.run()));
    }
    let mut read = 0;
    for t in tasks.0.iter_mut() {
        let part = t
            .await
            .map_err(|e| Error::Invalid(format!("sessionize task failed: {e}")))??;
        read += part.events;
        built.merge(part)?;
    }
    let (count, bytes) = crow_lake::plan_spills(&sorted);
    built.spill_count += count;
    built.spilled_bytes += bytes;
    built.duplicates += total.saturating_sub(read);
    Ok(())
}

/// Tasks aborted when dropped: an error in one partition, or a cancelled
/// run, stops the others instead of leaving them sorting.
struct Tasks<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One partition of the web events, sorted by (org, visitor, time), split
/// into sessions by its own task.
struct WebSplit {
    stream: SendableRecordBatchStream,
    gap: i64,
    read_end: i64,
    returning: Arc<HashSet<String>>,
    run_id: String,
    progress: ProgressRef,
    keep: (i64, i64),
    disk: Option<Arc<DiskManager>>,
}

impl WebSplit {
    async fn run(mut self) -> Result<Built> {
        let mut built = Built::new(self.keep, self.disk.clone());
        let mut cur_key: Option<(String, String)> = None;
        let mut events: Vec<WebEvent> = Vec::new();
        while let Some(batch) = self.stream.next().await {
            let batch = batch?;
            self.progress.inc(batch.num_rows() as u64);
            built.events += batch.num_rows() as u64;
            let org_c = text(&batch, "org_id")?;
            let visitor = text(&batch, "visitor_id")?;
            let message_id = text(&batch, "message_id")?;
            let kind = text(&batch, "type")?;
            let event = text(&batch, "event")?;
            let name = text(&batch, "name")?;
            let user_id = text(&batch, "user_id")?;
            let anonymous_id = text(&batch, "anonymous_id")?;
            let occurred = micros(&batch, "occurred_at")?;
            let page_path = text(&batch, "page_path")?;
            let page_url = text(&batch, "page_url")?;
            let referrer = text(&batch, "page_referrer")?;
            let device_type = text(&batch, "device_type")?;
            let campaign_source = text(&batch, "campaign_source")?;
            let product_id = text(&batch, "product_id")?;
            let product_sku = text(&batch, "product_sku")?;
            let product_name = text(&batch, "product_name")?;
            let order_id = text(&batch, "order_id")?;
            let revenue = float(&batch, "revenue")?;
            let props = text(&batch, "props")?;
            for i in 0..batch.num_rows() {
                let (o, v) = (org_c.value(i), visitor.value(i));
                if cur_key.as_ref().is_none_or(|(co, cv)| co != o || cv != v) {
                    if let Some((co, cv)) = cur_key.take() {
                        flush_visitor(
                            &co,
                            &cv,
                            std::mem::take(&mut events),
                            self.gap,
                            self.read_end,
                            &self.returning,
                            &self.run_id,
                            &mut built,
                        )?;
                    }
                    cur_key = Some((o.to_string(), v.to_string()));
                }
                events.push(WebEvent {
                    message_id: message_id.value(i).to_string(),
                    kind: kind.value(i).to_string(),
                    event: opt_str(&event, i),
                    name: opt_str(&name, i),
                    user_id: opt_str(&user_id, i),
                    anonymous_id: opt_str(&anonymous_id, i),
                    occurred: occurred.value(i),
                    page_path: opt_str(&page_path, i),
                    page_url: opt_str(&page_url, i),
                    referrer: opt_str(&referrer, i),
                    device_type: opt_str(&device_type, i),
                    campaign_source: opt_str(&campaign_source, i),
                    product_id: opt_str(&product_id, i),
                    product_sku: opt_str(&product_sku, i),
                    product_name: opt_str(&product_name, i),
                    order_id: opt_str(&order_id, i),
                    revenue: revenue.is_valid(i).then(|| revenue.value(i)),
                    props: opt_str(&props, i),
                });
            }
        }
        if let Some((co, cv)) = cur_key.take() {
            flush_visitor(
                &co,
                &cv,
                events,
                self.gap,
                self.read_end,
                &self.returning,
                &self.run_id,
                &mut built,
            )?;
        }
        Ok(built)
    }
}

/// Split one visitor's time-ordered events into sessions.
#[allow(clippy::too_many_arguments)]
fn flush_visitor(
    org: &str,
    visitor: &str,
    events: Vec<WebEvent>,
    gap: i64,
    read_end: i64,
    returning: &HashSet<String>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    let mut seen_before = returning.contains(&format!("{org}\u{1}{visitor}"));
    let mut start = 0;
    for i in 1..=events.len() {
        let split = i == events.len() || events[i].occurred - events[i - 1].occurred > gap;
        if !split {
            continue;
        }
        let part = &events[start..i];
        start = i;
        let (first, last) = (part[0].occurred, part[part.len() - 1].occurred);
        if last.saturating_add(gap) > read_end {
            built.open_session(first);
            continue;
        }
        built
            .out
            .push(web_session(org, visitor, part, seen_before, run_id)?)?;
        seen_before = true;
    }
    Ok(())
}

fn web_session(
    org: &str,
    visitor: &str,
    events: &[WebEvent],
    is_returning: bool,
    run_id: &str,
) -> Result<SessionRow> {
    let started = events[0].occurred;
    let ended = events[events.len() - 1].occurred;
    let mut anonymous_ids = BTreeSet::new();
    let mut product_ids: Vec<String> = Vec::new();
    let mut user_id = None;
    let mut page_views = 0i64;
    let mut converted = false;
    let mut timeline = Vec::with_capacity(events.len().min(MAX_TIMELINE + 1));
    for e in events {
        if let Some(a) = &e.anonymous_id {
            anonymous_ids.insert(a.clone());
        }
        if e.user_id.is_some() {
            user_id.clone_from(&e.user_id);
        }
        if let Some(p) = e.product_id.as_ref().or(e.product_sku.as_ref()) {
            if !product_ids.contains(p) {
                product_ids.push(p.clone());
            }
        }
        if e.kind == "page" || e.kind == "screen" {
            page_views += 1;
        }
        if e.event.as_deref() == Some("Order Completed") {
            converted = true;
        }
        if timeline.len() < MAX_TIMELINE {
            let offset = (e.occurred - started) / 1_000_000;
            let (kind, detail) = timeline_entry(e);
            timeline.push((offset, kind, detail));
        }
    }
    if events.len() > MAX_TIMELINE {
        let offset = (ended - started) / 1_000_000;
        timeline.push((
            offset,
            "truncated".to_string(),
            format!("{} more events", events.len() - MAX_TIMELINE),
        ));
    }
    let first = &events[0];
    let device_type = events.iter().find_map(|e| e.device_type.clone());
    Ok(SessionRow {
        org_id: org.to_string(),
        session_id: session_id(org, "web", visitor, started),
        channel: "web",
        visitor_id: Some(visitor.to_string()),
        user_id: user_id
            .or_else(|| (!anonymous_ids.contains(visitor)).then(|| visitor.to_string())),
        anonymous_ids: Some(anonymous_ids.into_iter().collect()),
        started_at: started,
        ended_at: ended,
        event_count: events.len() as i64,
        page_views: Some(page_views),
        product_ids: Some(product_ids),
        device_type,
        traffic_source: Some(traffic_source(first)),
        is_returning: Some(is_returning),
        converted: Some(converted),
        source_ref: None,
        // `[[offset, kind, detail], …]`: tuples serialize as JSON arrays.
        timeline: serde_json::to_string(&timeline)
            .map_err(|e| Error::Invalid(format!("session timeline: {e}")))?,
        source_ids: events.iter().map(|e| e.message_id.clone()).collect(),
        job_run_id: run_id.to_string(),
        session_date: day_of(started),
    })
}

/// utm source, else the referrer's host when it is another site, else
/// 'direct'.
fn traffic_source(e: &WebEvent) -> String {
    if let Some(s) = e.campaign_source.as_ref().filter(|s| !s.is_empty()) {
        return s.to_lowercase();
    }
    let own_host = e
        .page_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    if let Some(host) = e
        .referrer
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    {
        if Some(&host) != own_host.as_ref() {
            return host.trim_start_matches("www.").to_string();
        }
    }
    "direct".into()
}

fn timeline_entry(e: &WebEvent) -> (String, String) {
    match e.kind.as_str() {
        "page" | "screen" => (
            e.kind.clone(),
            e.page_path
                .clone()
                .or_else(|| e.name.clone())
                .unwrap_or_default(),
        ),
        "track" => {
            let name = e.event.clone().unwrap_or_else(|| "track".into());
            let detail = if let Some(order) = &e.order_id {
                match e.revenue {
                    Some(r) => format!("order {order} {r:.2}"),
                    None => format!("order {order}"),
                }
            } else if let Some(p) = e.product_id.as_ref().or(e.product_sku.as_ref()) {
                match &e.product_name {
                    Some(n) => format!("{p} {n}"),
                    None => p.clone(),
                }
            } else if let Some(props) = &e.props {
                compact_props(props)
            } else {
                String::new()
            };
            (name, detail)
        }
        other => (other.to_string(), e.user_id.clone().unwrap_or_default()),
    }
}

/// The interesting bits of search / checkout-step properties.
fn compact_props(props: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(props) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for key in ["query", "step", "shipping_method", "payment_method"] {
        if let Some(x) = v.get(key) {
            match x {
                serde_json::Value::String(s) => parts.push(format!("{key}={s}")),
                serde_json::Value::Number(n) => parts.push(format!("{key}={n}")),
                _ => {}
            }
        }
    }
    parts.join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

async fn cctv(
    ctx: &SessionContext,
    opts: &Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    // A camera-hour starting before the window start belongs to an earlier
    // window, so the read starts at the hour of `read_start + gap`.
    let org = org_filter(opts.org.as_deref());
    let (a, b) = (ts_lit(read_start), ts_lit(read_end));
    let sql = format!(
        "SELECT * FROM (
           SELECT org_id, segment_id, store_id, camera_id, segment_start, segment_end, text,
                  row_number() OVER (PARTITION BY org_id, segment_id ORDER BY received_at) AS rn
           FROM raw_cctv_transcripts
           WHERE segment_start >= {a} AND segment_start < {b} {org})
         WHERE rn = 1
         ORDER BY org_id, store_id, camera_id, segment_start, segment_id"
    );
    let hour = 3_600_000_000i64;
    let read_end = read_end.timestamp_micros();
    let batches = ctx.sql(&sql).await?.collect().await?;
    struct Seg {
        id: String,
        start: i64,
        end: i64,
        text: String,
    }
    type CameraHour = (String, String, String, i64);
    let mut groups: Vec<(CameraHour, Vec<Seg>)> = Vec::new();
    for batch in &batches {
        built.events += batch.num_rows() as u64;
        let (o, id, st, cam) = (
            text(batch, "org_id")?,
            text(batch, "segment_id")?,
            text(batch, "store_id")?,
            text(batch, "camera_id")?,
        );
        let (s, e, t) = (
            micros(batch, "segment_start")?,
            micros(batch, "segment_end")?,
            text(batch, "text")?,
        );
        for i in 0..batch.num_rows() {
            let h = s.value(i).div_euclid(hour) * hour;
            let key = (
                o.value(i).to_string(),
                st.value(i).to_string(),
                cam.value(i).to_string(),
                h,
            );
            let seg = Seg {
                id: id.value(i).to_string(),
                start: s.value(i),
                end: e.value(i),
                text: t.value(i).to_string(),
            };
            match groups.last_mut() {
                Some((k, v)) if *k == key => v.push(seg),
                _ => groups.push((key, vec![seg])),
            }
        }
    }
    for ((org, store, camera, h), segs) in groups {
        if h + hour > read_end {
            built.open_session(h);
            continue;
        }
        let started = segs.iter().map(|s| s.start).min().unwrap_or(h);
        let ended = segs.iter().map(|s| s.end).max().unwrap_or(h);
        let source = format!("{store}/{camera}");
        let timeline: Vec<serde_json::Value> = segs
            .iter()
            .take(MAX_TIMELINE)
            .map(|s| {
                serde_json::json!([
                    (s.start - started) / 1_000_000,
                    "segment",
                    truncate(&s.text, 500)
                ])
            })
            .collect();
        built.out.push(SessionRow {
            session_id: session_id(&org, "cctv", &source, h),
            org_id: org,
            channel: "cctv",
            visitor_id: Some(source.clone()),
            user_id: None,
            anonymous_ids: None,
            started_at: started,
            ended_at: ended,
            event_count: segs.len() as i64,
            page_views: None,
            product_ids: None,
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: Some(source),
            timeline: serde_json::Value::Array(timeline).to_string(),
            source_ids: segs.iter().map(|s| s.id.clone()).collect(),
            job_run_id: run_id.to_string(),
            session_date: day_of(started),
        })?;
    }
    Ok(())
}

async fn social(
    ctx: &SessionContext,
    opts: &Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    let org = org_filter(opts.org.as_deref());
    let (a, b) = (ts_lit(read_start), ts_lit(read_end));
    let sql = format!(
        "SELECT * FROM (
           SELECT org_id, capture_id, run_id, platform, url, author, captured_at, text, metrics,
                  row_number() OVER (PARTITION BY org_id, capture_id ORDER BY received_at) AS rn
           FROM raw_social_captures
           WHERE captured_at >= {a} AND captured_at < {b} {org})
         WHERE rn = 1
         ORDER BY org_id, run_id, captured_at, capture_id"
    );
    let gap = opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = read_end.timestamp_micros();
    let batches = ctx.sql(&sql).await?.collect().await?;
    struct Cap {
        id: String,
        platform: String,
        url: String,
        author: Option<String>,
        at: i64,
        text: Option<String>,
        reach: String,
    }
    let mut groups: Vec<((String, String), Vec<Cap>)> = Vec::new();
    for batch in &batches {
        built.events += batch.num_rows() as u64;
        let (o, id, r, p, u, au, t) = (
            text(batch, "org_id")?,
            text(batch, "capture_id")?,
            text(batch, "run_id")?,
            text(batch, "platform")?,
            text(batch, "url")?,
            text(batch, "author")?,
            text(batch, "text")?,
        );
        let metrics = text(batch, "metrics")?;
        let at = micros(batch, "captured_at")?;
        for i in 0..batch.num_rows() {
            let key = (o.value(i).to_string(), r.value(i).to_string());
            let cap = Cap {
                id: id.value(i).to_string(),
                platform: p.value(i).to_string(),
                url: u.value(i).to_string(),
                author: opt_str(&au, i),
                at: at.value(i),
                text: opt_str(&t, i),
                reach: reach(opt_str(&metrics, i).as_deref()),
            };
            match groups.last_mut() {
                Some((k, v)) if *k == key => v.push(cap),
                _ => groups.push((key, vec![cap])),
            }
        }
    }
    for ((org, run), caps) in groups {
        let started = caps.iter().map(|c| c.at).min().unwrap_or(0);
        let ended = caps.iter().map(|c| c.at).max().unwrap_or(0);
        if ended.saturating_add(gap) > read_end {
            built.open_session(started);
            continue;
        }
        let platforms: BTreeSet<&str> = caps.iter().map(|c| c.platform.as_str()).collect();
        let platform = if platforms.len() == 1 {
            platforms.iter().next().map(|p| p.to_string())
        } else {
            Some("mixed".to_string())
        };
        let timeline: Vec<serde_json::Value> = caps
            .iter()
            .take(MAX_TIMELINE)
            .map(|c| {
                let who = c.author.as_deref().unwrap_or("unknown");
                let body = c.text.as_deref().unwrap_or(&c.url);
                serde_json::json!([
                    (c.at - started) / 1_000_000,
                    c.platform,
                    format!("@{who}: {}{}", truncate(body, 500), c.reach)
                ])
            })
            .collect();
        built.out.push(SessionRow {
            session_id: session_id(&org, "social", &run, 0),
            org_id: org,
            channel: "social",
            visitor_id: platform,
            user_id: None,
            anonymous_ids: None,
            started_at: started,
            ended_at: ended,
            event_count: caps.len() as i64,
            page_views: None,
            product_ids: None,
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: Some(run),
            timeline: serde_json::Value::Array(timeline).to_string(),
            source_ids: caps.iter().map(|c| c.id.clone()).collect(),
            job_run_id: run_id.to_string(),
            session_date: day_of(started),
        })?;
    }
    Ok(())
}

/// A capture's engagement, as the timeline shows it: ` (likes 5, replies
/// 2, reposts 3)` from its `metrics` JSON (empty when it has none).
fn reach(metrics: Option<&str>) -> String {
    let Some(m) = metrics.and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()) else {
        return String::new();
    };
    let parts: Vec<String> = ["likes", "replies", "reposts", "score", "views"]
        .iter()
        .filter_map(|k| {
            m.get(*k)
                .and_then(serde_json::Value::as_i64)
                .map(|n| format!("{k} {n}"))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Replace the window's sessions (of one org, or all) with `rows`.
async fn write(lake: &Lake, org: Option<&str>, window: Window, rows: DataFrame) -> Result<()> {
    if window.is_empty() {
        return Ok(());
    }
    let last_day = (window.end - Duration::microseconds(1)).date_naive();
    let predicate = format!(
        "session_date >= '{}' AND session_date <= '{}' AND started_at >= {} AND started_at < {}{}",
        window.start.date_naive().format("%Y-%m-%d"),
        last_day.format("%Y-%m-%d"),
        ts_lit(window.start),
        ts_lit(window.end),
        org_filter(org)
    );
    lake.replace_where_if_changed_df(SESSIONS.name, &predicate, rows, &["job_run_id"])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, t: i64) -> WebEvent {
        WebEvent {
            message_id: id.into(),
            kind: "track".into(),
            event: Some("Product Viewed".into()),
            name: None,
            user_id: None,
            anonymous_id: Some("a1".into()),
            occurred: t,
            page_path: None,
            page_url: Some("https://shop.example/p/1".into()),
            referrer: Some("https://www.google.com/".into()),
            device_type: Some("mobile".into()),
            campaign_source: None,
            product_id: Some("p1".into()),
            product_sku: None,
            product_name: Some("Headphones".into()),
            order_id: None,
            revenue: None,
            props: None,
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
            events,
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
