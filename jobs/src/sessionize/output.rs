//! Session rows out: the builder that appends them to Arrow columns, the
//! spool files they are written to, and the plan that streams them back
//! sorted into the table.

use super::*;
use crow_lake::datafusion::common::config::{ConfigNonZeroUsize, ExecutionOptions};

/// Sessions computed over one read of the raw tables (by one task, or
/// merged from all of them).
pub(super) struct Built {
    pub(super) out: SessionBatches,
    /// Earliest start of a session not yet closed at the read end.
    pub(super) open_min_start: Option<i64>,
    pub(super) open: u64,
    pub(super) events: u64,
    pub(super) duplicates: u64,
    pub(super) spill_count: u64,
    pub(super) spilled_bytes: u64,
}

impl Built {
    /// Keeping the sessions that start in `[keep.0, keep.1)`, spooled to
    /// `disk` when given.
    pub(super) fn new(keep: (i64, i64), disk: Option<Arc<DiskManager>>) -> Self {
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

    pub(super) fn open_session(&mut self, start: i64) {
        self.open += 1;
        self.open_min_start = Some(self.open_min_start.map_or(start, |m| m.min(start)));
    }

    /// Add what another task built.
    pub(super) fn merge(&mut self, other: Built) -> Result<()> {
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
pub(super) struct SessionBatches {
    pub(super) keep: (i64, i64),
    pub(super) b: SessionBuilder,
    pub(super) done: Vec<RecordBatch>,
    pub(super) disk: Option<Arc<DiskManager>>,
    pub(super) spool: Option<SpoolWriter>,
    pub(super) files: Vec<Arc<dyn SpillFile>>,
}

/// The spool file being written.
pub(super) struct SpoolWriter {
    pub(super) file: Arc<dyn SpillFile>,
    pub(super) writer: StreamWriter<Box<dyn SpillWriter>>,
}

/// What a [`SessionBatches`] made: batches kept in memory and spool files.
#[derive(Default)]
pub(super) struct Sessions {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) files: Vec<Arc<dyn SpillFile>>,
}

impl SessionBatches {
    pub(super) fn new(keep: (i64, i64), disk: Option<Arc<DiskManager>>) -> Self {
        SessionBatches {
            keep,
            b: SessionBuilder::default(),
            done: Vec::new(),
            disk,
            spool: None,
            files: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, r: SessionRow) -> Result<()> {
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
    pub(super) fn finish(mut self) -> Result<Sessions> {
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
pub(super) struct SpoolPartition {
    pub(super) file: Arc<dyn SpillFile>,
    pub(super) schema: SchemaRef,
}

/// Batches kept in memory as one partition of the sessions to write.
#[derive(Debug)]
pub(super) struct MemPartition {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) schema: SchemaRef,
}

/// The window's sessions as a DataFusion plan over the spool files (and
/// in-memory batches): those starting in `[start, end)`, in the table's
/// file order (day, org, start, id). The sort runs, and spills, under
/// `ctx`'s memory pool.
pub(super) fn sessions_plan(
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
pub(super) struct SessionBuilder {
    pub(super) len: usize,
    pub(super) org_id: StringBuilder,
    pub(super) session_id: StringBuilder,
    pub(super) channel: StringBuilder,
    pub(super) visitor_id: StringBuilder,
    pub(super) user_id: StringBuilder,
    pub(super) anonymous_ids: ListBuilder<StringBuilder>,
    pub(super) started_at: TimestampMicrosecondBuilder,
    pub(super) ended_at: TimestampMicrosecondBuilder,
    pub(super) event_count: Int64Builder,
    pub(super) page_views: Int64Builder,
    pub(super) product_ids: ListBuilder<StringBuilder>,
    pub(super) device_type: StringBuilder,
    pub(super) traffic_source: StringBuilder,
    pub(super) is_returning: BooleanBuilder,
    pub(super) converted: BooleanBuilder,
    pub(super) source_ref: StringBuilder,
    pub(super) timeline: StringBuilder,
    pub(super) source_ids: ListBuilder<StringBuilder>,
    pub(super) job_run_id: StringBuilder,
    pub(super) session_date: Date32Builder,
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
    pub(super) fn finish(&mut self) -> Result<RecordBatch> {
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
pub(super) fn job_runtime(mb: u64) -> Result<Arc<RuntimeEnv>> {
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
/// own query planner), sized to the pool ([`size_to_pool`]).
pub(super) fn writer_context(runtime: &Arc<RuntimeEnv>, pool_bytes: usize) -> SessionContext {
    let ctx = DeltaSessionContext::with_runtime_env(runtime.clone()).into_inner();
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        size_to_pool(&mut state.config_mut().options_mut().execution, pool_bytes);
    }
    ctx
}

/// The execution settings of a job's sessions under a pool of `pool_bytes`:
/// - a sort sets aside for merging its spill files 10 MiB, or with a small
///   pool a share of it (several sorts run at once), and sorts in place up
///   to 1 MiB, or that share;
/// - rows per batch: a sort must hold a few of its input batches within
///   its share of the pool (the fair pool splits it among every sort and
///   repartition that can spill, eight in a web pass), so a small pool gets
///   small batches; from 64 MiB up, DataFusion's 8,192. About 512 bytes a
///   row (a web event with its text).
pub(super) fn size_to_pool(execution: &mut ExecutionOptions, pool_bytes: usize) {
    execution.sort_spill_reservation_bytes = (10 << 20).min(pool_bytes / 16);
    execution.sort_in_place_threshold_bytes = (1 << 20).min(pool_bytes / 16);
    if let Ok(rows) = ConfigNonZeroUsize::try_new((pool_bytes / 32 / 512).clamp(256, 8192)) {
        execution.batch_size = rows;
    }
}
