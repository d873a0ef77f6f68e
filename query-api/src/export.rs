//! Exports: a table (or, through the API, a query) for a time range, written
//! as Parquet, CSV or JSON lines to object storage (a local folder or S3),
//! streamed batch by batch.
//!
//! API exports run asynchronously and live in the lake's `_exports/` area,
//! one folder per organization: `_exports/<org_id>/<export_id>.json` holds the
//! status, `_exports/<org_id>/<export_id>.<ext>` the data. A key can only
//! name exports of its own organization's folder.
//!
//! Invariants of an API export:
//! - **Bounded.** It stops after `api.export_timeout_seconds`, past
//!   `api.export_max_rows` rows or `api.export_max_bytes` bytes, and at most
//!   `api.max_concurrent_exports_per_org` run per organization in one server
//!   (beyond it: 429 with Retry-After). A limit ends it `failed`, with a
//!   reason naming the limit.
//! - **Stopped means stopped.** A timed-out or cancelled export's writer is
//!   told to stop (it checks between batches and yields to the scheduler
//!   regularly, so it cannot hold a worker); if it has not ended after
//!   [`STOP_GRACE`] its task is aborted. Either way the task, and with it the
//!   query's stream and every task DataFusion spawned for it, is dropped.
//! - **No partial files.** Whenever an export does not succeed, its data
//!   file (or unfinished upload) is removed; the status file stays, with the
//!   reason.
//! - **Cancellation** (`DELETE /api/v1/exports/{id}`) stops an export
//!   running in this server at once. An export running in another server
//!   over the same lake is marked `cancelled` in the lake; that server reads
//!   its status every [`STATUS_POLL`] and stops it then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crow_lake::object_store::buffered::BufWriter;
use crow_lake::object_store::path::Path as StorePath;
use crow_lake::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use crow_lake::Lake;
use datafusion::prelude::{col, lit, DataFrame};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::sql::{Encoder, ResultFormat};
use crate::tenant::TenantSchema;
use crate::ApiState;

/// Any export failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// JSON lines.
    Jsonl,
}

impl ExportFormat {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    fn result_format(self) -> ResultFormat {
        match self {
            ExportFormat::Parquet => ResultFormat::Parquet,
            ExportFormat::Csv => ResultFormat::Csv,
            ExportFormat::Jsonl => ResultFormat::Ndjson,
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(ExportFormat::Parquet),
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" | "ndjson" => Ok(ExportFormat::Jsonl),
            o => Err(format!("format `{o}` is not one of parquet, csv, jsonl")),
        }
    }
}

/// The column a table's time range applies to, and whether it is a date.
pub fn time_column(table: &str) -> Option<(&'static str, bool)> {
    Some(match table {
        "raw_web_events" => ("occurred_at", false),
        "raw_social_captures" => ("captured_at", false),
        "raw_cctv_transcripts" => ("segment_start", false),
        "failed_events" => ("failed_at", false),
        "sessions" | "interactions" | "job_runs" => ("started_at", false),
        "patterns" => ("period_start", true),
        "stories" => ("start_date", true),
        "usage_daily" => ("usage_date", true),
        "daily_metrics" => ("metric_date", true),
        "organizations" | "api_keys" | "products" | "llm_cache" => ("created_at", false),
        _ => return None,
    })
}

/// A time bound as a literal of the column's type.
pub fn bound(t: DateTime<Utc>, is_date: bool) -> ScalarValue {
    if is_date {
        ScalarValue::Date32(Some(crow_schemas::time::days_from_time(t)))
    } else {
        ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
    }
}

/// Restrict `df` over `table` to `[from, to)`.
pub fn in_range(
    df: DataFrame,
    table: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> datafusion::error::Result<DataFrame> {
    let Some((c, is_date)) = time_column(table) else {
        return Ok(df);
    };
    let mut df = df;
    if let Some(f) = from {
        df = df.filter(col(c).gt_eq(lit(bound(f, is_date))))?;
    }
    if let Some(t) = to {
        df = df.filter(col(c).lt(lit(bound(t, is_date))))?;
    }
    Ok(df)
}

/// One table without its secret columns, every organization (operators'
/// CLI exports without `--org`).
pub async fn all_orgs_frame(lake: &Lake, table: &str) -> crow_lake::Result<DataFrame> {
    let def = crow_schemas::table(table)
        .ok_or_else(|| crow_lake::Error::UnknownTable(table.to_string()))?;
    let cols: Vec<&str> = def
        .columns
        .iter()
        .map(|c| c.name)
        .filter(|c| !def.secret_columns.contains(c))
        .collect();
    Ok(lake.dataframe(table).await?.select_columns(&cols)?)
}

/// Limits on one export's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rows written.
    pub max_rows: u64,
    /// Most bytes written (for Parquet, also counting the row group still
    /// buffered in memory).
    pub max_bytes: u64,
}

impl Limits {
    /// No limit (operators' CLI exports).
    pub const NONE: Limits = Limits {
        max_rows: u64::MAX,
        max_bytes: u64::MAX,
    };
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Why writing an export ended without a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// More rows than [`Limits::max_rows`].
    #[error(
        "the export has more than {0} rows (api.export_max_rows); narrow the time range or the query"
    )]
    TooManyRows(u64),
    /// More bytes than [`Limits::max_bytes`].
    #[error(
        "the export is larger than {0} bytes (api.export_max_bytes); narrow the time range or the query"
    )]
    TooManyBytes(u64),
    /// Told to stop (timeout or cancellation).
    #[error("the export was stopped")]
    Stopped,
    /// The query, the encoder or the store failed.
    #[error("{0}")]
    Failed(BoxError),
}

impl WriteError {
    fn failed(e: impl Into<BoxError>) -> Self {
        WriteError::Failed(e.into())
    }
}

/// Stream `df` as `format` to `path` in `store`. `progress` is called with
/// the rows written so far. Returns the number of rows.
pub async fn write(
    df: DataFrame,
    format: ExportFormat,
    store: Arc<dyn ObjectStore>,
    path: &StorePath,
    progress: impl FnMut(u64),
) -> Result<u64, BoxError> {
    // The sender lives until the end: nobody stops a CLI export but Ctrl-C.
    let (_stop, stop_rx) = watch::channel(false);
    match write_limited(df, format, store, path, Limits::NONE, stop_rx, progress).await {
        Ok(w) => Ok(w.rows),
        Err(WriteError::Failed(e)) => Err(e),
        Err(e) => Err(e.into()),
    }
}

/// [`write`] within `limits`, until `stop` turns true. On any error the
/// upload is aborted, so no partial file is left behind by this function.
pub async fn write_limited(
    df: DataFrame,
    format: ExportFormat,
    store: Arc<dyn ObjectStore>,
    path: &StorePath,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    progress: impl FnMut(u64),
) -> Result<Written, WriteError> {
    let mut out = BufWriter::new(store, path.clone());
    let result = tokio::select! {
        biased;
        true = async { stop.wait_for(|s| *s).await.is_ok() } => Err(WriteError::Stopped),
        r = encode(df, format, &mut out, limits, progress) => r,
    };
    if result.is_err() {
        if let Err(e) = out.abort().await {
            tracing::warn!(path = %path, error = %e, "aborting an export upload failed");
        }
    }
    result
}

async fn encode(
    df: DataFrame,
    format: ExportFormat,
    out: &mut BufWriter,
    limits: Limits,
    mut progress: impl FnMut(u64),
) -> Result<Written, WriteError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await.map_err(WriteError::failed)?;
    let mut enc = Encoder::new(format.result_format(), &schema).map_err(WriteError::Failed)?;
    let mut w = Written { rows: 0, bytes: 0 };
    let head = enc.start();
    put(out, &head, &mut w, 0, limits).await?;
    while let Some(b) = stream.next().await {
        let b = b.map_err(WriteError::failed)?;
        w.rows += b.num_rows() as u64;
        if w.rows > limits.max_rows {
            return Err(WriteError::TooManyRows(limits.max_rows));
        }
        let chunk = enc.batch(&b).map_err(WriteError::Failed)?;
        let buffered = match &enc {
            Encoder::Parquet(p) => p.in_progress_size() as u64,
            _ => 0,
        };
        put(out, &chunk, &mut w, buffered, limits).await?;
        progress(w.rows);
        // A query whose batches are always ready (a recursive CTE) and a
        // buffered writer would otherwise never yield: this lets the task
        // be stopped or aborted, and other tasks run.
        tokio::task::consume_budget().await;
    }
    let tail = enc.finish().map_err(WriteError::Failed)?;
    put(out, &tail, &mut w, 0, limits).await?;
    out.shutdown().await.map_err(WriteError::failed)?;
    Ok(w)
}

/// Write `chunk` unless the file would pass `limits.max_bytes` (counting
/// `buffered` bytes the encoder holds).
async fn put(
    out: &mut BufWriter,
    chunk: &[u8],
    w: &mut Written,
    buffered: u64,
    limits: Limits,
) -> Result<(), WriteError> {
    let after = w.bytes.saturating_add(chunk.len() as u64);
    if after.saturating_add(buffered) > limits.max_bytes {
        return Err(WriteError::TooManyBytes(limits.max_bytes));
    }
    if !chunk.is_empty() {
        out.write_all(chunk).await.map_err(WriteError::failed)?;
    }
    w.bytes = after;
    Ok(())
}

/// Body of `POST /api/v1/exports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// A table to export (one of `table` or `sql`).
    #[serde(default)]
    pub table: Option<String>,
    /// A query whose result to export.
    #[serde(default)]
    pub sql: Option<String>,
    /// Start of the table's time range (RFC 3339 time or a date), inclusive.
    #[serde(default)]
    pub from: Option<String>,
    /// End of the table's time range, exclusive.
    #[serde(default)]
    pub to: Option<String>,
    /// parquet, csv or jsonl.
    pub format: ExportFormat,
}

/// The status document of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportStatus {
    /// Export id.
    pub id: String,
    /// `running`, `succeeded`, `failed` (see `error`) or `cancelled`.
    pub status: String,
    /// The format.
    pub format: ExportFormat,
    /// The exported table, if a table.
    pub table: Option<String>,
    /// Rows written (when succeeded).
    pub rows: Option<u64>,
    /// Bytes of the file (when succeeded).
    pub bytes: Option<u64>,
    /// Why it failed or was cancelled (safe to show), e.g. the limit it
    /// reached.
    pub error: Option<String>,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where to download it (when succeeded).
    pub download_url: Option<String>,
}

fn area(lake: &Lake, org: &str, file: &str) -> Result<(Arc<dyn ObjectStore>, StorePath), ApiError> {
    let url = lake
        .url_of(&format!("_exports/{org}/{file}"))
        .map_err(|e| ApiError::internal("export path", &e))?;
    let (store, path) = lake
        .store_for(&url)
        .map_err(|e| ApiError::internal("export store", &e))?;
    Ok((Arc::from(store), path))
}

async fn save_status(lake: &Lake, org: &str, s: &ExportStatus) -> Result<(), ApiError> {
    let (store, path) = area(lake, org, &format!("{}.json", s.id))?;
    let body = serde_json::to_vec(s).map_err(|e| ApiError::internal("export status", &e))?;
    store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| ApiError::internal("writing export status", &e))?;
    Ok(())
}

fn valid_id(id: &str) -> bool {
    id.starts_with("exp_")
        && id.len() <= 40
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

async fn load_status(lake: &Lake, org: &str, id: &str) -> ApiResult<ExportStatus> {
    if !valid_id(id) {
        return Err(ApiError::not_found(format!("no export `{id}`")));
    }
    let (store, path) = area(lake, org, &format!("{id}.json"))?;
    match store.get(&path).await {
        Ok(r) => {
            let bytes = r
                .bytes()
                .await
                .map_err(|e| ApiError::internal("reading export status", &e))?;
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("export status", &e))
        }
        Err(crow_lake::object_store::Error::NotFound { .. }) => {
            Err(ApiError::not_found(format!("no export `{id}`")))
        }
        Err(e) => Err(ApiError::internal("reading export status", &e)),
    }
}

/// How long a stopped export's writer may take to end by itself before its
/// task is aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often a running export reads its status file, to notice a
/// cancellation made through another server.
pub const STATUS_POLL: Duration = Duration::from_secs(2);

/// How long `DELETE` waits for a local export to stop and clean up.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// The exports running in this server, by organization: the concurrency
/// limit and the cancel switches. A std mutex, never held across `.await`.
#[derive(Clone, Default)]
pub struct Exports(Arc<Mutex<HashMap<String, HashMap<String, Running>>>>);

struct Running {
    /// Set to true to cancel the export.
    cancel: watch::Sender<bool>,
    /// Turns true once the export has stopped and its status is final.
    done: watch::Receiver<bool>,
}

/// An export's place in [`Exports`]; dropping it frees the place.
struct Slot {
    exports: Exports,
    org: String,
    id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.exports.lock();
        if let Some(org) = map.get_mut(&self.org) {
            org.remove(&self.id);
            if org.is_empty() {
                map.remove(&self.org);
            }
        }
    }
}

impl Exports {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Running>>> {
        // The map stays consistent under a panic (single inserts/removes).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take one of `org`'s `max` places for export `id`, or None when all
    /// are taken. Returns the place, the cancel switch and the done flag.
    fn reserve(
        &self,
        org: &str,
        id: &str,
        max: usize,
    ) -> Option<(Slot, watch::Receiver<bool>, watch::Sender<bool>)> {
        let mut map = self.lock();
        let running = map.entry(org.to_string()).or_default();
        if running.len() >= max {
            return None;
        }
        let (cancel, cancel_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        running.insert(id.to_string(), Running { cancel, done });
        let slot = Slot {
            exports: self.clone(),
            org: org.to_string(),
            id: id.to_string(),
        };
        Some((slot, cancel_rx, done_tx))
    }

    /// Cancel export `id` of `org` if it runs here; returns its done flag.
    fn cancel(&self, org: &str, id: &str) -> Option<watch::Receiver<bool>> {
        let map = self.lock();
        let r = map.get(org)?.get(id)?;
        r.cancel.send_replace(true);
        Some(r.done.clone())
    }
}

/// `POST /api/v1/exports`: start an export; answers 202 with its status.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Export).await?;
    let (req, (from, to)) = parse_request(&body)?;
    // A place among the organization's running exports first: a refused
    // export costs no planning.
    let id = crow_lake::ids::new_id("exp");
    let max = usize::try_from(st.cfg.max_concurrent_exports_per_org).unwrap_or(usize::MAX);
    let Some((slot, cancel, done)) = st.exports.reserve(&p.org_id, &id, max) else {
        tracing::info!(org = %p.org_id, max, "export refused: too many running");
        return Err(too_many_exports(max, st.cfg.export_retry_after_seconds));
    };
    let (ctx, schema) = st.latest_session(&p.org_id, p.scope == Scope::Admin);
    // Plan now, so a bad table or query is a 400 here rather than a failed
    // export later.
    let df = plan_export(&st, &ctx, &schema, &req, from, to).await?;
    let status = ExportStatus {
        id: id.clone(),
        status: RUNNING.into(),
        format: req.format,
        table: req.table.clone(),
        rows: None,
        bytes: None,
        error: None,
        created_at: Utc::now(),
        finished_at: None,
        download_url: None,
    };
    save_status(&st.lake, &p.org_id, &status).await?;
    let answer = status.clone();
    let job = Job {
        lake: st.lake.clone(),
        org: p.org_id.clone(),
        status,
        df,
        limits: Limits {
            max_rows: st.cfg.export_max_rows,
            max_bytes: st.cfg.export_max_bytes,
        },
        timeout_seconds: st.cfg.export_timeout_seconds,
        cancel,
        done,
        slot,
        user: p.user.as_ref().map(|u| u.user_id.clone()),
        schema,
    };
    tokio::spawn(job.run());
    audit_created(&st.lake, &p, &answer).await;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The `from` and `to` times of a table export's range.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// An export request's body, and its `from` and `to` times.
fn parse_request(body: &[u8]) -> ApiResult<(ExportRequest, TimeRange)> {
    let req: ExportRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {{\"table\": \"sessions\", \"format\": \"parquet\"}}: {e}"),
        )
    })?;
    let time = |name: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| crow_schemas::time::parse_time(name, v))
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
    };
    let range = (time("from", &req.from)?, time("to", &req.to)?);
    Ok((req, range))
}

/// The 429 for an organization already running `max` exports.
fn too_many_exports(max: usize, retry_after: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_exports",
        format!(
            "{max} exports of this organization are running \
             (api.max_concurrent_exports_per_org); wait for one to finish or cancel one"
        ),
    );
    e.retry_after = Some(retry_after);
    e
}

/// The export's rows, planned (within `api.query_timeout_seconds`): a
/// table in `from`..`to`, or a query.
async fn plan_export(
    st: &ApiState,
    ctx: &datafusion::prelude::SessionContext,
    schema: &TenantSchema,
    req: &ExportRequest,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> ApiResult<DataFrame> {
    let plan = async {
        match (&req.table, &req.sql) {
            (Some(t), None) => {
                if crow_schemas::table(t).is_none() {
                    return Err(ApiError::bad_request(
                        "unknown_table",
                        format!("`{t}` is not a CROW table"),
                    ));
                }
                let df = ctx
                    .table(t.as_str())
                    .await
                    .map_err(|e| crate::sql::df_error(&e, Some(schema)))?;
                in_range(df, t, from, to).map_err(|e| crate::sql::df_error(&e, Some(schema)))
            }
            (None, Some(q)) => {
                if from.is_some() || to.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "`from`/`to` apply to table exports; put the range in the query",
                    ));
                }
                crate::sql::plan_query(st, ctx, schema, q).await
            }
            _ => Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of `table` or `sql`",
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(st.cfg.query_timeout_seconds), plan)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "query_timeout",
                "planning the query took too long",
            )
        })?
}

/// `export.create` in the audit log (a failure to write it is logged; the
/// export already runs).
async fn audit_created(lake: &crow_lake::Lake, p: &crate::auth::Principal, status: &ExportStatus) {
    let audited = crate::users::audit(
        lake,
        crate::users::Audit {
            org_id: &p.org_id,
            actor: &p.actor(),
            action: "export.create",
            target: Some(&status.id),
            outcome: "ok",
            detail: serde_json::to_value(status).ok(),
            ..crate::users::Audit::default()
        },
    )
    .await;
    if let Err(e) = audited {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

const RUNNING: &str = "running";
const SUCCEEDED: &str = "succeeded";
const FAILED: &str = "failed";
const CANCELLED: &str = "cancelled";

/// One running API export and what it needs to end properly.
struct Job {
    lake: Lake,
    org: String,
    status: ExportStatus,
    df: DataFrame,
    limits: Limits,
    timeout_seconds: u64,
    cancel: watch::Receiver<bool>,
    done: watch::Sender<bool>,
    slot: Slot,
    /// The signed-in user who started it (told when it ends); none for keys.
    user: Option<String>,
    // Keeps the tenant schema (and so its loaded views) alive while running.
    schema: Arc<TenantSchema>,
}

/// How the supervisor saw an export end.
enum End {
    Finished(Result<Result<Written, WriteError>, tokio::task::JoinError>),
    TimedOut,
    Cancelled,
    CancelledElsewhere,
}

impl Job {
    /// Run the export's writer in its own task and watch it: timeout,
    /// cancellation, final status, clean-up.
    async fn run(self) {
        let Job {
            lake,
            org,
            mut status,
            df,
            limits,
            timeout_seconds,
            mut cancel,
            done,
            slot,
            user,
            schema,
        } = self;
        let id = status.id.clone();
        let file = format!("{id}.{}", status.format.extension());
        let end = match area(&lake, &org, &file) {
            Ok((store, path)) => {
                let end = watch_writer(
                    &lake,
                    &org,
                    &id,
                    df,
                    status.format,
                    (store.clone(), path.clone()),
                    limits,
                    timeout_seconds,
                    &mut cancel,
                )
                .await;
                Some((end, store, path))
            }
            Err(e) => {
                tracing::error!(export = %id, error = %e, "export area");
                None
            }
        };
        drop(schema);
        status.finished_at = Some(Utc::now());
        let Settled { keep_file, save } =
            settle(&lake, &org, &id, end.as_ref(), &mut status, timeout_seconds).await;
        if let (false, Some((_, store, path))) = (keep_file, &end) {
            remove_data(store.as_ref(), path, &id).await;
        }
        if save {
            if let Err(e) = save_status(&lake, &org, &status).await {
                tracing::error!(export = %id, error = %e, "saving export status failed");
            }
            if let Some(user) = user {
                notify_ended(&lake, &org, &user, &status).await;
            }
        }
        // Free the place before announcing the end: whoever waited for it
        // may start another export at once.
        drop(slot);
        done.send_replace(true);
    }
}

/// What becomes of an ended export: whether its file stays, whether its
/// status is saved (not when it was cancelled through another server).
struct Settled {
    keep_file: bool,
    save: bool,
}

/// Record in `status` how export `id` ended (`end` with its file's place;
/// `None` when no place could be found for it).
async fn settle(
    lake: &Lake,
    org: &str,
    id: &str,
    end: Option<&(End, Arc<dyn ObjectStore>, StorePath)>,
    status: &mut ExportStatus,
    timeout_seconds: u64,
) -> Settled {
    let mut keep_file = false;
    let mut save = true;
    match end {
        Some((End::Finished(Ok(Ok(w))), store, path)) => {
            // Cancelled through another server just now: stay cancelled.
            if cancelled_in_lake(lake, org, id).await {
                save = false;
            } else {
                keep_file = true;
                status.status = SUCCEEDED.into();
                status.rows = Some(w.rows);
                status.bytes = Some(store.head(path).await.map_or(w.bytes, |m| m.size));
                status.download_url = Some(format!("/api/v1/exports/{id}/download"));
            }
        }
        Some((End::Finished(Ok(Err(e))), ..))
            if matches!(e, WriteError::TooManyRows(_) | WriteError::TooManyBytes(_)) =>
        {
            tracing::info!(export = %id, org = %org, reason = %e, "export stopped at a limit");
            status.status = FAILED.into();
            status.error = Some(e.to_string());
        }
        Some((End::Finished(r), ..)) => {
            match r {
                Ok(Err(e)) => tracing::error!(export = %id, error = %e, "export failed"),
                Err(e) => tracing::error!(export = %id, error = %e, "export task failed"),
                Ok(Ok(_)) => {}
            }
            status.status = FAILED.into();
            status.error = Some("the export failed; it has been logged".into());
        }
        Some((End::TimedOut, ..)) => {
            tracing::info!(export = %id, org = %org, "export timed out");
            status.status = FAILED.into();
            status.error = Some(format!(
                "the export ran longer than {timeout_seconds} s \
                 (api.export_timeout_seconds) and was stopped"
            ));
        }
        Some((End::Cancelled, ..)) => {
            tracing::info!(export = %id, org = %org, "export cancelled");
            status.status = CANCELLED.into();
            status.error = Some(cancelled_reason(id));
        }
        Some((End::CancelledElsewhere, ..)) => {
            tracing::info!(export = %id, org = %org, "export cancelled through another server");
            save = false;
        }
        None => {
            status.status = FAILED.into();
            status.error = Some("the export failed; it has been logged".into());
        }
    }
    Settled { keep_file, save }
}

/// Tell the user who started an export that it is ready (or failed). A
/// cancelled export tells no one: its user cancelled it.
async fn notify_ended(lake: &Lake, org: &str, user: &str, status: &ExportStatus) {
    let (kind, title) = match status.status.as_str() {
        SUCCEEDED => (
            "export_ready",
            format!(
                "Your {} export is ready ({} rows)",
                status.format.extension(),
                status.rows.unwrap_or(0)
            ),
        ),
        FAILED => (
            "export_failed",
            format!("Your {} export failed", status.format.extension()),
        ),
        _ => return,
    };
    let notice = crow_lake::notify::Notice {
        kind,
        title,
        body: status.error.clone(),
        link: Some(format!("/api/v1/exports/{}", status.id)),
    };
    let to = [(org.to_string(), user.to_string())];
    if let Err(e) = crow_lake::notify::notify_users(lake, &to, &notice).await {
        tracing::warn!(export = %status.id, error = %e, "could not notify the export's end");
    }
}

/// Spawn the writer and wait for it to finish, time out, or be cancelled;
/// a writer that did not finish has ended (or been aborted) on return.
#[allow(clippy::too_many_arguments)]
async fn watch_writer(
    lake: &Lake,
    org: &str,
    id: &str,
    df: DataFrame,
    format: ExportFormat,
    (store, path): (Arc<dyn ObjectStore>, StorePath),
    limits: Limits,
    timeout_seconds: u64,
    cancel: &mut watch::Receiver<bool>,
) -> End {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_seconds);
    let (stop, stop_rx) = watch::channel(false);
    let mut task = tokio::spawn(async move {
        write_limited(df, format, store, &path, limits, stop_rx, |_| {}).await
    });
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + STATUS_POLL, STATUS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            r = &mut task => return End::Finished(r),
            () = tokio::time::sleep_until(deadline) => break End::TimedOut,
            true = async { cancel.wait_for(|c| *c).await.is_ok() } => break End::Cancelled,
            _ = poll.tick() => {}
        }
        if cancelled_in_lake(lake, org, id).await {
            break End::CancelledElsewhere;
        }
    };
    stop.send_replace(true);
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        tracing::warn!(export = %id, "export writer did not stop; aborting its task");
        task.abort();
        let _ = task.await;
    }
    end
}

fn cancelled_reason(id: &str) -> String {
    format!("cancelled by DELETE /api/v1/exports/{id}")
}

/// Whether export `id`'s status in the lake says `cancelled`.
async fn cancelled_in_lake(lake: &Lake, org: &str, id: &str) -> bool {
    matches!(load_status(lake, org, id).await, Ok(s) if s.status == CANCELLED)
}

/// Remove an export's data file, if there is one.
async fn remove_data(store: &dyn ObjectStore, path: &StorePath, id: &str) {
    match store.delete(path).await {
        Ok(()) | Err(crow_lake::object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::error!(export = %id, error = %e, "removing an export's data failed"),
    }
}

/// `DELETE /api/v1/exports/{id}`: cancel a running export; its data is
/// removed and its status becomes `cancelled`.
pub async fn cancel(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<ExportStatus>> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Export).await?;
    // Another organization's export is not found: the path is the org's.
    let mut s = load_status(&st.lake, &p.org_id, &id).await?;
    if let Some(mut done) = st.exports.cancel(&p.org_id, &id) {
        if tokio::time::timeout(CANCEL_WAIT, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            tracing::warn!(export = %id, "a cancelled export has not ended yet");
        }
        s = load_status(&st.lake, &p.org_id, &id).await?;
    } else if s.status == RUNNING {
        // Running in another server (which notices within STATUS_POLL), or
        // left `running` by a server that stopped.
        s.status = CANCELLED.into();
        s.error = Some(cancelled_reason(&id));
        s.finished_at = Some(Utc::now());
        save_status(&st.lake, &p.org_id, &s).await?;
        let (store, path) = area(
            &st.lake,
            &p.org_id,
            &format!("{id}.{}", s.format.extension()),
        )?;
        remove_data(store.as_ref(), &path, &id).await;
    }
    match s.status.as_str() {
        CANCELLED | RUNNING => Ok(Json(s)),
        other => Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_finished",
            format!("export `{id}` has already {other}; only a running export can be cancelled"),
        )),
    }
}

/// `GET /api/v1/exports/{id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<ExportStatus>> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Export).await?;
    Ok(Json(load_status(&st.lake, &p.org_id, &id).await?))
}

/// `GET /api/v1/exports/{id}/download`: the file, streamed.
pub async fn download(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Export).await?;
    let s = load_status(&st.lake, &p.org_id, &id).await?;
    if s.status != "succeeded" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_not_ready",
            format!("export `{id}` is {}", s.status),
        ));
    }
    let file = format!("{id}.{}", s.format.extension());
    let (store, path) = area(&st.lake, &p.org_id, &file)?;
    let r = store
        .get(&path)
        .await
        .map_err(|e| ApiError::internal("reading an export", &e))?;
    let stream = r.into_stream().map(|c| c.map_err(std::io::Error::other));
    let mut resp = Response::new(axum::body::Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match s.format {
            ExportFormat::Parquet => "application/vnd.apache.parquet",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
