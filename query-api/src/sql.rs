//! `POST /api/v1/sql`: read-only, tenant-isolated SQL with streamed results.
//!
//! The statement is planned in a tenant session ([`crate::tenant`]); a plan
//! that is not a query (DDL, DML, COPY, SET and other statements, EXPLAIN) is
//! refused with 400 before anything runs. The query runs under the shared
//! memory pool (spilling to disk), a timeout and a row cap. Results are
//! encoded batch by batch in the format the `Accept` header asks for. The
//! first batches are fetched before the status line is sent, so a query that
//! fails early (or is small) gets a proper problem response; a large result
//! that breaks a limit mid-stream is aborted (the client sees an incomplete
//! response), never silently truncated.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use crow_lake::AsOf;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use serde::Deserialize;

use crate::cache::{CacheKey, Cached, Lookup, ResultCache};
use crate::error::{ApiError, ApiResult};
use crate::guard;
use crate::runtime::QueryTask;
use crate::slots::Permits;
use crate::tenant::{Pins, TenantSchema};
use crate::ApiState;

/// Body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One SQL query.
    pub sql: String,
    /// Time travel: every table as of this time (RFC 3339).
    #[serde(default)]
    pub as_of: Option<String>,
    /// Time travel: tables pinned to Delta versions, `{"products": 3}`.
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, u64>,
}

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// `application/json`: an array of row objects.
    Json,
    /// `application/x-ndjson`: one row object per line.
    Ndjson,
    /// `text/csv` with a header row.
    Csv,
    /// `application/vnd.apache.arrow.stream`; with the media-type parameter
    /// `view_types=false`, text and binary columns come as plain `Utf8` /
    /// `Binary` instead of `Utf8View` / `BinaryView` (for older readers).
    Arrow {
        /// Plain types instead of view types.
        plain: bool,
    },
    /// `application/vnd.apache.parquet`.
    Parquet,
}

impl ResultFormat {
    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::Ndjson => "application/x-ndjson",
            ResultFormat::Csv => "text/csv; charset=utf-8",
            ResultFormat::Arrow { .. } => "application/vnd.apache.arrow.stream",
            ResultFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn from_media(m: &str) -> Option<Self> {
        Some(match m {
            "application/json" | "application/*" | "*/*" => ResultFormat::Json,
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                ResultFormat::Ndjson
            }
            "text/csv" | "text/*" => ResultFormat::Csv,
            "application/vnd.apache.arrow.stream" => ResultFormat::Arrow { plain: false },
            "application/vnd.apache.parquet" | "application/parquet" => ResultFormat::Parquet,
            _ => return None,
        })
    }

    /// The format an `Accept` header asks for (highest q first); JSON when
    /// absent.
    pub fn negotiate(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(accept) = headers.get(header::ACCEPT) else {
            return Ok(ResultFormat::Json);
        };
        let accept = accept.to_str().unwrap_or("");
        if accept.trim().is_empty() {
            return Ok(ResultFormat::Json);
        }
        let mut offers: Vec<(f32, usize, &str, bool)> = accept
            .split(',')
            .enumerate()
            .map(|(i, part)| {
                let mut it = part.split(';');
                let media = it.next().unwrap_or("").trim();
                let params: Vec<&str> = it.map(str::trim).collect();
                let q = params
                    .iter()
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let plain = params
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case("view_types=false"));
                (q, i, media, plain)
            })
            .filter(|(q, _, _, _)| *q > 0.0)
            .collect();
        offers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offers
            .iter()
            .find_map(|(_, _, m, plain)| {
                ResultFormat::from_media(&m.to_ascii_lowercase()).map(|f| match f {
                    ResultFormat::Arrow { .. } => ResultFormat::Arrow { plain: *plain },
                    f => f,
                })
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    "supported result formats: application/json, application/x-ndjson, text/csv, \
                     application/vnd.apache.arrow.stream, application/vnd.apache.parquet",
                )
            })
    }
}

/// Parse the time-travel fields of a request.
pub fn pins(req: &SqlRequest) -> ApiResult<(AsOf, Pins)> {
    let default = match req.as_of.as_deref() {
        None => AsOf::Latest,
        Some(t) => {
            let ts = crow_schemas::time::parse_time("as_of", t)
                .map_err(|e| ApiError::bad_request("invalid_as_of", e.to_string()))?;
            AsOf::Timestamp(ts)
        }
    };
    let mut pins = Pins::new();
    for (table, v) in &req.versions {
        if crow_schemas::table(table).is_none() {
            return Err(ApiError::bad_request(
                "unknown_table",
                format!("`versions` names `{table}`, which is not a CROW table"),
            ));
        }
        // Delta versions are signed 64-bit numbers.
        if i64::try_from(*v).is_err() {
            return Err(ApiError::bad_request(
                "invalid_version",
                format!("`versions.{table}` = {v} is not a Delta version"),
            ));
        }
        pins.insert(table.clone(), AsOf::Version(*v));
    }
    Ok((default, pins))
}

/// Why a plan is refused, if it is not a plain query.
fn refusal(plan: &LogicalPlan) -> Option<(&'static str, &'static str)> {
    match plan {
        LogicalPlan::Ddl(_) => Some((
            "ddl_not_allowed",
            "DDL (CREATE, DROP, CREATE EXTERNAL TABLE, …) is not allowed: the API is read-only",
        )),
        LogicalPlan::Dml(_) => Some((
            "dml_not_allowed",
            "INSERT, UPDATE, DELETE and COPY are not allowed: the API is read-only",
        )),
        LogicalPlan::Copy(_) => Some((
            "dml_not_allowed",
            "COPY is not allowed: the API is read-only (use exports)",
        )),
        LogicalPlan::Statement(_) => Some((
            "statement_not_allowed",
            "SET, transactions and prepared statements are not allowed; send one query",
        )),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => Some((
            "statement_not_allowed",
            "EXPLAIN is not available through the API",
        )),
        _ => None,
    }
}

/// Turn a DataFusion error into an answer: the caller's mistakes are shown,
/// storage and internal failures are logged and hidden.
pub fn df_error(e: &DataFusionError, schema: Option<&TenantSchema>) -> ApiError {
    if let Some(f) = schema.and_then(|s| s.failure.lock().ok().and_then(|mut f| f.take())) {
        return ApiError::from_lake("resolving a table for a query", &f);
    }
    match e.find_root() {
        DataFusionError::Plan(m) if unknown_table(m).is_some() => {
            let name = unknown_table(m).unwrap_or_default();
            ApiError::bad_request(
                "unknown_table",
                format!("there is no table `{name}` (SHOW TABLES lists the tables you can read)"),
            )
        }
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => {
            ApiError::bad_request("invalid_query", e.find_root().to_string())
        }
        DataFusionError::ResourcesExhausted(m) => resources_exhausted(m),
        _ => ApiError::internal("query failed", e),
    }
}

/// The table a planner's "table '…' not found" names (its last part: the
/// catalog and schema are CROW's own).
fn unknown_table(m: &str) -> Option<&str> {
    let name = m.strip_prefix("table '")?.strip_suffix("' not found")?;
    Some(name.rsplit('.').next().unwrap_or(name))
}

fn resources_exhausted(m: &str) -> ApiError {
    if m.contains("api.max_function_output_mb") {
        // Our own message: names the function and the limit, no values.
        ApiError::bad_request("resources_exhausted", m.to_string())
    } else {
        ApiError::bad_request(
            "resources_exhausted",
            "the query needs more memory than the API allows; aggregate more or add a LIMIT",
        )
    }
}

/// Turn an error raised while a query runs into an answer. Unlike planning
/// errors, these can quote the values of rows (`Cannot cast string '…'`),
/// and a query's own predicates may be evaluated before the tenant filter:
/// so no text of theirs is sent, only what kind of failure it was. The
/// server log (debug level) has the message.
pub fn exec_error(e: &DataFusionError, schema: Option<&TenantSchema>) -> ApiError {
    use arrow::error::ArrowError as A;
    if let Some(f) = schema.and_then(|s| s.failure.lock().ok().and_then(|mut f| f.take())) {
        return ApiError::from_lake("reading a table for a query", &f);
    }
    let root = e.find_root();
    tracing::debug!(error = %e, "a query failed while running");
    let detail = match root {
        DataFusionError::ResourcesExhausted(m) => return resources_exhausted(m),
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            A::CastError(_) => {
                "a value could not be cast to the requested type (use try_cast to get null instead)"
            }
            A::ParseError(_) => "a value could not be parsed",
            A::DivideByZero => "division by zero",
            A::ArithmeticOverflow(_) => "arithmetic overflow",
            _ => "the query failed while running",
        },
        DataFusionError::Execution(m) if m.to_ascii_lowercase().contains("divide by zero") => {
            "division by zero"
        }
        DataFusionError::Execution(_)
        | DataFusionError::Plan(_)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => "the query failed while running",
        _ => return ApiError::internal("query failed", e),
    };
    ApiError::bad_request(
        "query_failed",
        format!("{detail}; messages of running queries don't show row values"),
    )
}

/// Plan `sql` in `ctx` and refuse anything but a query.
///
/// The statement is measured against the configured [`guard::Limits`]
/// before it is planned: planning a statement beyond them could exhaust a
/// thread's stack.
pub async fn plan_query(
    state: &ApiState,
    ctx: &SessionContext,
    schema: &TenantSchema,
    sql: &str,
) -> ApiResult<DataFrame> {
    plan_normalized(state, ctx, schema, sql).await.map(|p| p.0)
}

/// [`plan_query`], and the statement normalized: parsed and printed again
/// (the same text for statements that differ only in whitespace, comments
/// or keyword case).
pub async fn plan_normalized(
    state: &ApiState,
    ctx: &SessionContext,
    schema: &TenantSchema,
    sql: &str,
) -> ApiResult<(DataFrame, String)> {
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_query", "`sql` is empty"));
    }
    let limits = guard::Limits::from_config(&state.cfg);
    let refused = |e: ApiError| {
        state.metrics.refused(e.code);
        e
    };
    guard::check_length(sql, &limits).map_err(refused)?;
    let session = ctx.state();
    let dialect = session.config().options().sql_parser.dialect;
    let statement = session
        .sql_to_statement(sql, &dialect)
        .map_err(|e| df_error(&e, Some(schema)))?;
    guard::check_statement(&statement, &limits).map_err(refused)?;
    let normalized = statement.to_string();
    // Literals are repeated per row outside the memory pool: with large
    // ones, smaller batches keep each batch's copies within the function
    // output cap (api.max_function_output_mb).
    let rows = guard::batch_rows_for(
        guard::literal_bytes(&statement),
        state.function_cap() / 8,
        session.config().batch_size(),
    );
    let session = match datafusion::common::config::ConfigNonZeroUsize::try_new(rows) {
        Ok(n) if rows < session.config().batch_size() => {
            let mut s = session;
            s.config_mut().options_mut().execution.batch_size = n;
            ctx.state_ref()
                .write()
                .config_mut()
                .options_mut()
                .execution
                .batch_size = n;
            s
        }
        _ => session,
    };
    let plan = session
        .statement_to_plan(statement)
        .await
        .map_err(|e| df_error(&e, Some(schema)))?;
    if let Some((code, msg)) = refusal(&plan) {
        state.metrics.refused(code);
        return Err(ApiError::bad_request(code, msg));
    }
    let opts = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    if let Err(e) = opts.verify_plan(&plan) {
        state.metrics.refused("statement_not_allowed");
        return Err(ApiError::bad_request(
            "statement_not_allowed",
            format!("only read-only queries are allowed: {}", e.find_root()),
        ));
    }
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| df_error(&e, Some(schema)))?;
    Ok((df, normalized))
}

/// The tenant session of a caller: only `p`'s organization's rows, with
/// admin-only rows for admin keys. Every protocol (HTTP, Flight SQL) opens
/// its sessions here.
pub fn tenant_session(
    state: &ApiState,
    p: &crate::auth::Principal,
    as_of: AsOf,
    pins: Pins,
) -> (SessionContext, Arc<TenantSchema>) {
    state.tenant_session(p, as_of, pins)
}

/// Start `p`'s query as `POST /api/v1/sql` does: the caller's concurrency
/// slots (held by the returned [`Permits`] until the answer is sent), their
/// tenant session, the query timeout counted from `started`, and at most
/// `api.max_result_rows` + 1 rows (one more than allowed, so a result that is
/// too large is noticed, never silently cut).
pub async fn start_for(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
    as_of: AsOf,
    pins: Pins,
    started: std::time::Instant,
) -> ApiResult<(RunningQuery, Permits)> {
    start_cached_for(state, p, sql, as_of, pins, started, None).await
}

/// [`start_for`], looking the planned query up in the result cache
/// ([`crate::cache`]) when `format` is given (the answer's format, part of
/// the key): on a hit the query is planned (which brings every table it
/// reads up to date) but not run, and [`RunningQuery::cached`] holds the
/// answer.
pub async fn start_cached_for(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
    as_of: AsOf,
    pins: Pins,
    started: std::time::Instant,
    format: Option<ResultFormat>,
) -> ApiResult<(RunningQuery, Permits)> {
    let lookup = format.map(|f| Lookup {
        format: format!("{f:?}"),
        as_of,
        pins: pins.clone(),
    });
    start_inner_for(state, p, sql, (as_of, pins), started, None, lookup).await
}

/// [`start_for`] with values for the query's `$1`, `$2`, … placeholders
/// (Flight SQL's prepared statements with bound parameters).
pub async fn start_params_for(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
    (as_of, pins): (AsOf, Pins),
    started: std::time::Instant,
    params: Option<datafusion::common::ParamValues>,
) -> ApiResult<(RunningQuery, Permits)> {
    start_inner_for(state, p, sql, (as_of, pins), started, params, None).await
}

async fn start_inner_for(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
    (as_of, pins): (AsOf, Pins),
    started: std::time::Instant,
    params: Option<datafusion::common::ParamValues>,
    lookup: Option<Lookup>,
) -> ApiResult<(RunningQuery, Permits)> {
    let permits = state.slots.acquire(&p.key_id, &p.org_id)?;
    let (ctx, schema) = tenant_session(state, p, as_of, pins);
    tracing::debug!(org = %p.org_id, key = %p.key_id, "sql query");
    let deadline = tokio::time::Instant::from_std(started) + state.query_timeout();
    let limit = usize::try_from(state.cfg.max_result_rows.saturating_add(1)).unwrap_or(usize::MAX);
    let query = RunningQuery::start_inner(
        state,
        ctx,
        schema,
        sql,
        params,
        Some(limit),
        deadline,
        lookup,
    )
    .await?;
    Ok((query, permits))
}

/// The schema of `p`'s query's result, planned (with every refusal of
/// [`plan_query`]) but not run; within the caller's slots and the query
/// timeout.
pub async fn result_schema(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
) -> ApiResult<SchemaRef> {
    result_schema_at(state, p, sql, (AsOf::Latest, Pins::new()))
        .await
        .map(|(schema, _)| schema)
}

/// [`result_schema`] of the tables as of a time or versions, with the
/// types of the query's `$1`, `$2`, … placeholders (`None`: not inferred).
pub async fn result_schema_at(
    state: &Arc<ApiState>,
    p: &crate::auth::Principal,
    sql: String,
    (as_of, pins): (AsOf, Pins),
) -> ApiResult<(SchemaRef, Vec<Option<DataType>>)> {
    let _permits = state.slots.acquire(&p.key_id, &p.org_id)?;
    let (ctx, schema) = tenant_session(state, p, as_of, pins);
    let deadline = tokio::time::Instant::now() + state.query_timeout();
    let st = state.clone();
    let mut task = state.query_rt.spawn(async move {
        let df = plan_query(&st, &ctx, &schema, &sql).await?;
        let inferred = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| df_error(&e, Some(&schema)))?;
        let n = inferred
            .keys()
            .filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        let params = (1..=n)
            .map(|i| inferred.get(&format!("${i}")).cloned().flatten())
            .collect();
        Ok::<_, ApiError>((Arc::new(df.schema().as_arrow().clone()), params))
    });
    match tokio::time::timeout_at(deadline, task.join()).await {
        Err(_) => Err(query_timeout(state)),
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(panicked(Some(e))),
    }
}

/// Batches between the query runtime and the response: a few, so a slow
/// client holds back the query instead of filling memory.
const CHANNEL_BATCHES: usize = 2;

/// A query planned and running on the query runtime
/// ([`crate::runtime`]): its result's schema, then its batches as they are
/// produced. Dropping it cancels the query.
pub struct RunningQuery {
    /// The result's schema.
    pub schema: SchemaRef,
    /// What the result cache said ([`Cached::Off`] unless asked). On a hit
    /// nothing runs and no batch comes.
    pub cached: Cached,
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, ApiError>>,
    task: QueryTask<()>,
    done: bool,
}

/// A query planned and, unless the result cache has it, started: its
/// output schema, what the cache said, and the physical plan with its
/// stream (`None` for a hit: nothing runs).
type Started = (
    SchemaRef,
    Cached,
    Option<(
        Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        datafusion::physical_plan::SendableRecordBatchStream,
    )>,
);

/// Plan `sql` (with `params` bound and at most `limit` rows), look it up in
/// the result cache with `lookup`, and start it unless that is a hit.
async fn plan_and_start(
    st: &Arc<ApiState>,
    ctx: &SessionContext,
    schema: &TenantSchema,
    sql: &str,
    params: Option<datafusion::common::ParamValues>,
    limit: Option<usize>,
    lookup: Option<Lookup>,
) -> ApiResult<Started> {
    let (df, normalized) = plan_normalized(st, ctx, schema, sql).await?;
    // Looked up after planning: the key holds the versions of
    // the tables the plan reads.
    let cached = match &lookup {
        Some(l) => st
            .result_cache
            .probe(l, &normalized, df.logical_plan(), schema),
        None => Cached::Off,
    };
    let df = match params {
        Some(p) => df
            .with_param_values(p)
            .map_err(|e| df_error(&e, Some(schema)))?,
        None => df,
    };
    let df = match limit {
        Some(n) => df
            .limit(0, Some(n))
            .map_err(|e| df_error(&e, Some(schema)))?,
        None => df,
    };
    let out: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    if let Cached::Hit(_) = cached {
        return Ok((out, cached, None));
    }
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| df_error(&e, Some(schema)))?;
    let stream = datafusion::physical_plan::execute_stream(plan.clone(), task_ctx)
        .map_err(|e| df_error(&e, Some(schema)))?;
    Ok((out, cached, Some((plan, stream))))
}

impl RunningQuery {
    /// Plan `sql` and start it on the query runtime, with at most `limit`
    /// rows. Returns once the query is planned and executing, or has
    /// failed; `deadline` bounds the wait (and planning).
    pub async fn start(
        state: &Arc<ApiState>,
        ctx: SessionContext,
        schema: Arc<TenantSchema>,
        sql: String,
        limit: Option<usize>,
        deadline: tokio::time::Instant,
    ) -> ApiResult<Self> {
        Self::start_with_params(state, ctx, schema, sql, None, limit, deadline).await
    }

    /// [`RunningQuery::start`] with values for the statement's `$1`, `$2`, …
    /// placeholders (prepared statements of the Postgres wire).
    pub async fn start_with_params(
        state: &Arc<ApiState>,
        ctx: SessionContext,
        schema: Arc<TenantSchema>,
        sql: String,
        params: Option<datafusion::common::ParamValues>,
        limit: Option<usize>,
        deadline: tokio::time::Instant,
    ) -> ApiResult<Self> {
        Self::start_inner(state, ctx, schema, sql, params, limit, deadline, None).await
    }

    /// [`RunningQuery::start_with_params`], looking the planned query up in
    /// the result cache with `lookup`.
    #[allow(clippy::too_many_arguments)]
    async fn start_inner(
        state: &Arc<ApiState>,
        ctx: SessionContext,
        schema: Arc<TenantSchema>,
        sql: String,
        params: Option<datafusion::common::ParamValues>,
        limit: Option<usize>,
        deadline: tokio::time::Instant,
        lookup: Option<Lookup>,
    ) -> ApiResult<Self> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        let st = state.clone();
        let mut task = state.query_rt.spawn(async move {
            let started = plan_and_start(&st, &ctx, &schema, &sql, params, limit, lookup);
            let (plan, mut stream) = match started.await {
                Ok((out, cached, running)) => {
                    if ready_tx.send(Ok((out, cached))).is_err() {
                        return;
                    }
                    match running {
                        Some(r) => r,
                        // A hit: nothing runs.
                        None => return,
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Some(b) = stream.next().await {
                let b = b.map_err(|e| exec_error(&e, Some(&schema)));
                let failed = b.is_err();
                if tx.send(b).await.is_err() || failed {
                    break;
                }
            }
            // What went past the memory pool, for /metrics (also when the
            // query failed or its caller left: it spilled all the same).
            drop(stream);
            let (files, bytes) = crow_lake::plan_spills(&plan);
            st.metrics.spilled(files, bytes);
            // Keeps the tenant schema (and so its loaded views) alive while
            // streaming.
            drop(schema);
        });
        let ready = tokio::time::timeout_at(deadline, ready_rx).await;
        let (out, cached) = match ready {
            Err(_) => return Err(query_timeout(state)),
            Ok(Ok(r)) => r?,
            // The task ended without answering: it panicked.
            Ok(Err(_)) => return Err(panicked(task.join().await.err())),
        };
        Ok(Self {
            schema: out,
            cached,
            rx,
            task,
            done: false,
        })
    }

    /// The next batch; `None` at the end. A panic of the query is an error,
    /// never a silently shortened result.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, ApiError>> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Some(b) => Some(b),
            None => {
                self.done = true;
                match self.task.join().await {
                    Ok(()) => None,
                    Err(e) => Some(Err(panicked(Some(e)))),
                }
            }
        }
    }
}

fn panicked(e: Option<tokio::task::JoinError>) -> ApiError {
    let why = e.map_or_else(|| "the query task ended".to_string(), |e| e.to_string());
    ApiError::internal("a query failed unexpectedly", &why)
}

pub(crate) fn query_timeout(state: &ApiState) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "query_timeout",
        format!(
            "the query ran longer than {} s and was cancelled",
            state.cfg.query_timeout_seconds
        ),
    )
}

/// Bytes fetched before the response starts: errors within them get a
/// proper status.
const PREFETCH_BYTES: usize = 4 * 1024 * 1024;

/// Stream a running query's result as `format`.
pub async fn respond(
    state: &ApiState,
    mut query: RunningQuery,
    format: ResultFormat,
    started: std::time::Instant,
    permits: Permits,
) -> ApiResult<Response> {
    let cached = std::mem::replace(&mut query.cached, Cached::Off);
    let tee = match cached {
        Cached::Hit(body) => {
            state.metrics.query_seconds(started.elapsed().as_secs_f64());
            let mut r = Response::new(Body::from(body));
            set_headers(&mut r, format, &Cached::Hit(Bytes::new()));
            return Ok(r);
        }
        Cached::Miss(ref key) => Some(Tee {
            key: key.clone(),
            chunks: Vec::new(),
            bytes: 0,
        }),
        _ => None,
    };
    let max_rows = state.cfg.max_result_rows;
    let deadline = tokio::time::Instant::from_std(started) + state.query_timeout();
    let out_schema = query.schema.clone();
    let mut pending = VecDeque::new();
    let (mut rows, mut bytes, mut ended) = (0u64, 0usize, false);
    while bytes < PREFETCH_BYTES {
        match tokio::time::timeout_at(deadline, query.next()).await {
            Err(_) => return Err(query_timeout(state)),
            Ok(None) => {
                ended = true;
                break;
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(b))) => {
                rows += b.num_rows() as u64;
                bytes += b.get_array_memory_size();
                pending.push_back(b);
                if rows > max_rows {
                    return Err(too_large(max_rows));
                }
            }
        }
    }
    state.metrics.query_seconds(started.elapsed().as_secs_f64());
    let enc = Encoder::new(format, &out_schema).map_err(|e| ApiError::internal("encoder", &e))?;
    let streamer = Streamer {
        query,
        pending,
        ended,
        enc: Some(enc),
        rows,
        max_rows,
        deadline,
        started: false,
        finished: false,
        tee,
        cache: state.result_cache.clone(),
        _permits: permits,
    };
    let body = futures::stream::unfold(streamer, |mut s| async move {
        s.next_chunk().await.map(|c| (c, s))
    });
    let mut r = Response::new(Body::from_stream(body));
    set_headers(&mut r, format, &cached);
    Ok(r)
}

/// The content type and `X-Crow-Cache` (`hit`, `miss` or `bypass`; for a
/// bypass because of the query, `X-Crow-Cache-Reason` says why).
fn set_headers(r: &mut Response, format: ResultFormat, cached: &Cached) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    h.insert("x-crow-cache", HeaderValue::from_static(cached.header()));
    if let Cached::Bypass(why) = cached {
        if let Ok(v) = HeaderValue::from_str(why) {
            h.insert("x-crow-cache-reason", v);
        }
    }
}

/// The chunks of an answer being streamed, kept for the result cache
/// while they fit in an entry.
struct Tee {
    key: CacheKey,
    chunks: Vec<Bytes>,
    bytes: usize,
}

pub(crate) fn too_large(max_rows: u64) -> ApiError {
    ApiError::bad_request(
        "result_too_large",
        format!(
            "the result has more than {max_rows} rows; aggregate, add a LIMIT, or use an export"
        ),
    )
}

struct Streamer {
    query: RunningQuery,
    pending: VecDeque<RecordBatch>,
    ended: bool,
    enc: Option<Encoder>,
    rows: u64,
    max_rows: u64,
    deadline: tokio::time::Instant,
    started: bool,
    /// The encoder's closing bytes were produced: the answer is complete.
    finished: bool,
    /// A copy of the answer for the result cache (a miss that still fits).
    tee: Option<Tee>,
    cache: Arc<ResultCache>,
    // The query's concurrency slots, held until the answer is sent.
    _permits: Permits,
}

impl Streamer {
    fn abort(&mut self, why: &str) -> Option<Result<Bytes, std::io::Error>> {
        tracing::warn!(reason = why, "aborting a streamed SQL result");
        self.enc = None;
        Some(Err(std::io::Error::other(why.to_string())))
    }

    /// The next chunk of the body, copied for the result cache while the
    /// answer fits an entry; a complete answer is stored with its last
    /// chunk, one that fails is not.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let chunk = self.next_encoded().await;
        match &chunk {
            Some(Ok(b)) => {
                if let Some(t) = &mut self.tee {
                    t.bytes += b.len();
                    if t.bytes > self.cache.entry_cap() {
                        self.tee = None;
                    } else if !b.is_empty() {
                        t.chunks.push(b.clone());
                    }
                }
                if self.finished {
                    if let Some(t) = self.tee.take() {
                        self.cache.put(t.key, Bytes::from(t.chunks.concat()));
                    }
                }
            }
            Some(Err(_)) | None => self.tee = None,
        }
        chunk
    }

    async fn next_encoded(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            let enc = self.enc.as_mut()?;
            if !self.started {
                self.started = true;
                let head = enc.start();
                if !head.is_empty() {
                    return Some(Ok(head));
                }
            }
            let batch = match self.pending.pop_front() {
                Some(b) => b,
                None if self.ended => {
                    let enc = self.enc.take()?;
                    return match enc.finish() {
                        Ok(b) => {
                            self.finished = true;
                            Some(Ok(b))
                        }
                        Err(e) => self.abort(&format!("encoding failed: {e}")),
                    };
                }
                None => match tokio::time::timeout_at(self.deadline, self.query.next()).await {
                    Err(_) => return self.abort("query timeout"),
                    Ok(None) => {
                        self.ended = true;
                        continue;
                    }
                    Ok(Some(Err(e))) => return self.abort(&format!("query failed: {}", e.detail)),
                    Ok(Some(Ok(b))) => {
                        self.rows += b.num_rows() as u64;
                        if self.rows > self.max_rows {
                            return self.abort("result larger than api.max_result_rows");
                        }
                        b
                    }
                },
            };
            match enc.batch(&batch) {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => return Some(Ok(b)),
                Err(e) => return self.abort(&format!("encoding failed: {e}")),
            }
        }
    }
}

/// `b` with its string and binary view columns copied into buffers of their
/// own values, where the buffers they point into are mostly other rows'
/// values: a filter or a limit leaves a view column pointing into the whole
/// pages it was decoded from (a dozen rows of a visitor's events hold
/// megabytes of buffers), and the Arrow IPC writer sends every buffer a
/// column holds. Columns whose buffers are mostly theirs are left as they
/// are.
fn compact_views(b: &RecordBatch) -> EncResult<RecordBatch> {
    use arrow::array::AsArray;
    let mut changed = false;
    let columns: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| {
            let compact = match c.data_type() {
                DataType::Utf8View => compacted(c.as_string_view()),
                DataType::BinaryView => compacted(c.as_binary_view()),
                _ => None,
            };
            changed |= compact.is_some();
            compact.unwrap_or_else(|| c.clone())
        })
        .collect();
    if !changed {
        return Ok(b.clone());
    }
    Ok(RecordBatch::try_new_with_options(
        b.schema(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
    )?)
}

/// `a` copied into buffers of its own values, if the buffers it points
/// into hold more than twice what its values use, plus 64 KiB.
fn compacted<T: arrow::datatypes::ByteViewType + ?Sized>(
    a: &arrow::array::GenericByteViewArray<T>,
) -> Option<ArrayRef> {
    const SLACK: usize = 64 * 1024;
    let held: usize = a.data_buffers().iter().map(|d| d.len()).sum();
    let used = a.total_buffer_bytes_used();
    (held > used.saturating_mul(2).saturating_add(SLACK)).then(|| Arc::new(a.gc()) as ArrayRef)
}

/// Encodes record batches into one of the result formats, chunk by chunk.
pub enum Encoder {
    /// JSON array; whether a row was written.
    Json(bool),
    /// NDJSON.
    Ndjson,
    /// CSV; whether the header was written.
    Csv(bool, SchemaRef),
    /// Arrow IPC stream, and the plain schema its batches are cast to
    /// (`view_types=false`).
    Arrow(
        Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>,
        Option<SchemaRef>,
    ),
    /// Parquet.
    Parquet(Box<parquet::arrow::ArrowWriter<Vec<u8>>>),
}

type EncResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Encoder {
    /// A new encoder for batches of `schema`.
    pub fn new(format: ResultFormat, schema: &SchemaRef) -> EncResult<Self> {
        Ok(match format {
            ResultFormat::Json => Encoder::Json(false),
            ResultFormat::Ndjson => Encoder::Ndjson,
            ResultFormat::Csv => Encoder::Csv(false, csv_schema(schema)),
            ResultFormat::Arrow { plain } => {
                let plain = plain.then(|| plain_schema(schema));
                let written = plain.as_ref().unwrap_or(schema);
                Encoder::Arrow(
                    Box::new(arrow::ipc::writer::StreamWriter::try_new(
                        Vec::new(),
                        written,
                    )?),
                    plain,
                )
            }
            ResultFormat::Parquet => Encoder::Parquet(Box::new(
                parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None)?,
            )),
        })
    }

    /// Bytes before the first batch.
    pub fn start(&mut self) -> Bytes {
        match self {
            Encoder::Json(_) => Bytes::from_static(b"["),
            Encoder::Arrow(w, _) => Bytes::from(std::mem::take(w.get_mut())),
            _ => Bytes::new(),
        }
    }

    /// The bytes of one batch (may be empty while a writer buffers).
    pub fn batch(&mut self, b: &RecordBatch) -> EncResult<Bytes> {
        Ok(match self {
            Encoder::Json(wrote) => {
                let lines = ndjson(b)?;
                let mut out = Vec::with_capacity(lines.len() + 16);
                for line in lines.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                    if *wrote {
                        out.push(b',');
                    }
                    *wrote = true;
                    out.extend_from_slice(line);
                }
                Bytes::from(out)
            }
            Encoder::Ndjson => Bytes::from(ndjson(b)?),
            Encoder::Csv(header_done, schema) => {
                let b = csv_batch(b, schema)?;
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(!*header_done)
                    .build(Vec::new());
                w.write(&b)?;
                *header_done = true;
                Bytes::from(w.into_inner())
            }
            Encoder::Arrow(w, plain) => {
                match plain {
                    Some(schema) => w.write(&cast_to(b, schema)?)?,
                    None => w.write(&compact_views(b)?)?,
                }
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Encoder::Parquet(w) => {
                w.write(b)?;
                Bytes::from(std::mem::take(w.inner_mut()))
            }
        })
    }

    /// The closing bytes.
    pub fn finish(self) -> EncResult<Bytes> {
        Ok(match self {
            Encoder::Json(_) => Bytes::from_static(b"]"),
            Encoder::Ndjson => Bytes::new(),
            Encoder::Csv(header_done, schema) => {
                if header_done {
                    Bytes::new()
                } else {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(Vec::new());
                    w.write(&RecordBatch::new_empty(schema))?;
                    Bytes::from(w.into_inner())
                }
            }
            Encoder::Arrow(mut w, _) => {
                w.finish()?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Encoder::Parquet(w) => Bytes::from(w.into_inner()?),
        })
    }
}

/// `Utf8View` → `Utf8`, `BinaryView` → `Binary`, also inside lists,
/// structs and maps.
fn plain_type(t: &DataType) -> DataType {
    let field = |f: &arrow::datatypes::FieldRef| {
        Arc::new(
            Field::new(f.name(), plain_type(f.data_type()), f.is_nullable())
                .with_metadata(f.metadata().clone()),
        )
    };
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

pub(crate) fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                Field::new(f.name(), plain_type(f.data_type()), f.is_nullable())
                    .with_metadata(f.metadata().clone())
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// `b` with its columns cast to `schema`'s types.
pub(crate) fn cast_to(b: &RecordBatch, schema: &SchemaRef) -> EncResult<RecordBatch> {
    let columns = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn ndjson(b: &RecordBatch) -> EncResult<Vec<u8>> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    w.write(b)?;
    w.finish()?;
    Ok(w.into_inner())
}

fn csv_unsupported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(..)
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// CSV cannot hold nested values: those columns become text.
fn csv_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if csv_unsupported(f.data_type()) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect::<Vec<_>>(),
    ))
}

fn csv_batch(b: &RecordBatch, schema: &SchemaRef) -> EncResult<RecordBatch> {
    if !b
        .schema()
        .fields()
        .iter()
        .any(|f| csv_unsupported(f.data_type()))
    {
        return Ok(b.clone());
    }
    let opts = FormatOptions::default();
    let cols: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| -> EncResult<ArrayRef> {
            if !csv_unsupported(c.data_type()) {
                return Ok(c.clone());
            }
            let f = ArrayFormatter::try_new(c.as_ref(), &opts)?;
            let mut s = StringBuilder::new();
            for i in 0..c.len() {
                if c.is_null(i) {
                    s.append_null();
                } else {
                    s.append_value(f.value(i).to_string());
                }
            }
            Ok(Arc::new(s.finish()))
        })
        .collect::<EncResult<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few rows filtered out of many long strings go out in an Arrow
    /// stream of their own size, not of the buffers they were cut from;
    /// whole columns go as they are, and the values are the same.
    #[test]
    fn arrow_results_do_not_carry_the_buffers_rows_were_filtered_from() {
        use arrow::array::{Array, AsArray, BooleanArray, StringViewArray};
        let values: Vec<String> = (0..10_000)
            .map(|i| format!("a value long enough not to be inlined, number {i:05}"))
            .collect();
        let all = StringViewArray::from_iter_values(values.iter());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::Utf8View,
            false,
        )]));
        let whole = RecordBatch::try_new(schema.clone(), vec![Arc::new(all.clone())]).unwrap();
        let keep = BooleanArray::from_iter((0..10_000).map(|i| Some(i % 1000 == 7)));
        let few = arrow::compute::filter_record_batch(&whole, &keep).unwrap();
        assert_eq!(few.num_rows(), 10);
        let encoded = |b: &RecordBatch| {
            let mut e = Encoder::new(ResultFormat::Arrow { plain: false }, &schema).unwrap();
            let mut out = e.start().to_vec();
            out.extend_from_slice(&e.batch(b).unwrap());
            out.extend_from_slice(&e.finish().unwrap());
            out
        };
        let small = encoded(&few);
        assert!(small.len() < 4096, "10 rows took {} bytes", small.len());
        let read: Vec<RecordBatch> =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(small), None)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let got: Vec<&str> = read[0]
            .column(0)
            .as_string_view()
            .iter()
            .flatten()
            .collect();
        let want: Vec<String> = (0..10).map(|k| values[k * 1000 + 7].clone()).collect();
        assert_eq!(got, want);
        // A whole column is its buffers: sent as it is, not copied.
        let same = compact_views(&whole).unwrap();
        assert!(same.column(0).to_data().buffers()[1].ptr_eq(&all.data_buffers()[0]));
        assert!(encoded(&whole).len() > all.get_buffer_memory_size() / 2);
    }

    fn accept(v: &str) -> ApiResult<ResultFormat> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        ResultFormat::negotiate(&h)
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(
            ResultFormat::negotiate(&HeaderMap::new()).unwrap(),
            ResultFormat::Json
        );
        assert_eq!(accept("text/csv").unwrap(), ResultFormat::Csv);
        assert_eq!(
            accept("application/xml;q=0.9, application/x-ndjson").unwrap(),
            ResultFormat::Ndjson
        );
        assert_eq!(
            accept("text/csv;q=0.1, application/vnd.apache.parquet").unwrap(),
            ResultFormat::Parquet
        );
        assert_eq!(accept("application/xml").unwrap_err().status, 406);
    }
}
