//! Exports: a table (or, through the API, a query) for a time range, written
//! as Parquet, CSV or JSON lines to object storage (a local folder or S3),
//! streamed batch by batch.
//!
//! API exports run asynchronously and live in the lake's `_exports/` area,
//! one folder per organization: `_exports/<org_id>/<export_id>.json` holds the
//! status, `_exports/<org_id>/<export_id>.<ext>` the data. A key can only
//! name exports of its own organization's folder.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use crow_lake::object_store::buffered::BufWriter;
use crow_lake::object_store::path::Path as StorePath;
use crow_lake::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use crow_lake::{AsOf, Lake};
use datafusion::prelude::{col, lit, DataFrame};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::sql::{Encoder, ResultFormat};
use crate::tenant::{tenant_context, Pins};
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
        "usage_daily" => ("usage_date", true),
        "organizations" | "api_keys" | "products" | "llm_cache" => ("created_at", false),
        _ => return None,
    })
}

/// A time bound as a literal of the column's type.
pub fn bound(t: DateTime<Utc>, is_date: bool) -> ScalarValue {
    if is_date {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        ScalarValue::Date32(
            i32::try_from(t.date_naive().signed_duration_since(epoch).num_days()).ok(),
        )
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

/// Stream `df` as `format` to `path` in `store`. `progress` is called with
/// the rows written so far. Returns the number of rows.
pub async fn write(
    df: DataFrame,
    format: ExportFormat,
    store: Arc<dyn ObjectStore>,
    path: &StorePath,
    mut progress: impl FnMut(u64),
) -> Result<u64, BoxError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut enc = Encoder::new(format.result_format(), &schema)?;
    let mut out = BufWriter::new(store, path.clone());
    out.write_all(&enc.start()).await?;
    let mut rows = 0u64;
    while let Some(b) = stream.next().await {
        let b = b?;
        rows += b.num_rows() as u64;
        out.write_all(&enc.batch(&b)?).await?;
        progress(rows);
    }
    out.write_all(&enc.finish()?).await?;
    out.shutdown().await?;
    Ok(rows)
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
    /// Start of the table's time range (RFC 3339), inclusive.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of the table's time range, exclusive.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// parquet, csv or jsonl.
    pub format: ExportFormat,
}

/// The status document of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportStatus {
    /// Export id.
    pub id: String,
    /// 'running', 'succeeded' or 'failed'.
    pub status: String,
    /// The format.
    pub format: ExportFormat,
    /// The exported table, if a table.
    pub table: Option<String>,
    /// Rows written (when succeeded).
    pub rows: Option<u64>,
    /// Bytes of the file (when succeeded).
    pub bytes: Option<u64>,
    /// Why it failed (safe to show).
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

/// `POST /api/v1/exports`: start an export; answers 202 with its status.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let p = crate::auth::authenticate(&st.keys, &st.limiter, &headers, Scope::Export).await?;
    let req: ExportRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {{\"table\": \"sessions\", \"format\": \"parquet\"}}: {e}"),
        )
    })?;
    let (ctx, schema) = tenant_context(
        &st.lake,
        st.runtime.clone(),
        &p.org_id,
        AsOf::Latest,
        Pins::new(),
        8192,
    );
    // Plan now, so a bad table or query is a 400 here rather than a failed
    // export later.
    let df = match (&req.table, &req.sql) {
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
                .map_err(|e| crate::sql::df_error(&e, Some(&schema)))?;
            in_range(df, t, req.from, req.to)
                .map_err(|e| crate::sql::df_error(&e, Some(&schema)))?
        }
        (None, Some(q)) => {
            if req.from.is_some() || req.to.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "`from`/`to` apply to table exports; put the range in the query",
                ));
            }
            crate::sql::plan_query(&st, &ctx, &schema, q).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of `table` or `sql`",
            ))
        }
    };
    let id = crow_lake::ids::new_id("exp");
    let mut status = ExportStatus {
        id: id.clone(),
        status: "running".into(),
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
    let (lake, org) = (st.lake.clone(), p.org_id.clone());
    tokio::spawn(async move {
        let _keep = schema;
        let file = format!("{id}.{}", status.format.extension());
        let result = match area(&lake, &org, &file) {
            Ok((store, path)) => write(df, status.format, store.clone(), &path, |_| {})
                .await
                .map(|rows| (rows, store, path)),
            Err(e) => Err(e.to_string().into()),
        };
        status.finished_at = Some(Utc::now());
        match result {
            Ok((rows, store, path)) => {
                status.status = "succeeded".into();
                status.rows = Some(rows);
                status.bytes = store.head(&path).await.ok().map(|m| m.size);
                status.download_url = Some(format!("/api/v1/exports/{id}/download"));
            }
            Err(e) => {
                tracing::error!(export = %id, error = %e, "export failed");
                status.status = "failed".into();
                status.error = Some("the export failed; it has been logged".into());
            }
        }
        if let Err(e) = save_status(&lake, &org, &status).await {
            tracing::error!(export = %id, error = %e, "saving export status failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
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
