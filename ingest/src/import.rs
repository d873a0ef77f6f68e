//! Bulk import of historical events: Segment's archive format (JSON lines,
//! one event per line, usually gzip'd, as Segment's S3/GCS destinations
//! write them), or Parquet with Segment's column names (each row read as
//! the event it records: [`crate::segment_parquet`]), through the
//! collector's own normaliser and validation.
//!
//! - **Same rules as the collector.** Every line goes through
//!   [`normalize_json`]; a line that fails lands in `failed_events` with its
//!   reason and the line itself (source `import`), never dropped.
//! - **Exactly once per file.** A file is known by the SHA-256 of its bytes
//!   (as given: compressed or not) and the organization. Its events are
//!   committed in chunks of `ingest.import_chunk_events` lines, each chunk with the Delta
//!   application transaction `import:ORG:SHA` at the chunk's number, to
//!   `raw_web_events` and `failed_events` alike: importing the file again
//!   (or after a crash part-way) lands only the chunks not committed yet.
//! - **The collector's fast path.** Rows are encoded with the WAL's binary
//!   row codec and decoded into Arrow in one pass per chunk, as the flusher
//!   does; text borrows from the line.

use std::io::{BufRead, BufReader, Read};

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use crow_lake::Lake;
use sha2::{Digest, Sha256};

use crate::normalize::{normalize_json, Defaults, NormalizeContext};
use crow_schemas::rows::{FailedEventRow, FailureCode, FailureSource};

/// What importing one file did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The file as named by the caller.
    pub file: String,
    /// SHA-256 of its bytes: its identity for exactly-once.
    pub sha256: String,
    /// Non-empty lines read.
    pub lines: u64,
    /// Events landed in `raw_web_events` by this call.
    pub imported: u64,
    /// Lines landed in `failed_events` by this call.
    pub failed: u64,
    /// Lines of chunks an earlier import of the same file had committed.
    pub already_imported: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Errors of an import (the file itself; bad lines are not errors).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or decompressed.
    #[error("reading {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The lake refused a commit.
    #[error(transparent)]
    Lake(#[from] crow_lake::Error),
    /// The file looked like Parquet but could not be read as such.
    #[error("reading {file} as Parquet: {reason}")]
    Parquet {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A chunk's commit task ended without an answer.
    #[error("an import commit task failed: {0}")]
    Task(String),
}

impl ImportReport {
    fn add(&mut self, (imported, failed): (u64, u64)) {
        self.imported += imported;
        self.failed += failed;
    }
}

/// Settings of an import.
pub struct ImportOptions<'a> {
    /// The organization the events belong to.
    pub org_id: &'a str,
    /// Query parameters to strip from URLs (`ingest.strip_query_params`).
    pub strip_query_params: &'a [String],
    /// Salt for an IP found in `context.ip` (`ingest.ip_salt`).
    pub ip_salt: &'a str,
    /// When the import runs (each event's `received_at` when it has none).
    pub now: DateTime<Utc>,
    /// Lines per commit (`ingest.import_chunk_events`).
    pub chunk_events: usize,
}

/// Import one file's bytes (`name` for messages). `progress` is called
/// with the number of the file's bytes consumed so far.
pub async fn import_bytes(
    lake: &Lake,
    opts: &ImportOptions<'_>,
    name: &str,
    data: &[u8],
    progress: &(dyn Fn(u64) + Sync),
) -> crate::Result<ImportReport> {
    let started = std::time::Instant::now();
    let sha = hex::encode(Sha256::digest(data));
    let app_id = format!("import:{}:{sha}", opts.org_id);
    let raw = crow_schemas::RAW_WEB_EVENTS.name;
    let failed_table = crow_schemas::FAILED_EVENTS.name;
    let done_raw = lake.app_version(raw, &app_id).await?.unwrap_or(0);
    let done_failed = lake.app_version(failed_table, &app_id).await?.unwrap_or(0);
    let converted = json_lines_of_parquet(name, data)?;
    let body = converted.as_deref().unwrap_or(data);
    // How far into the file `at` bytes of `body` are, for the progress bar.
    let in_file = |at: u64| at.saturating_mul(data.len() as u64) / (body.len() as u64).max(1);
    let counted = Counted::new(body);
    let mut lines = BufReader::with_capacity(1 << 20, decoded(&counted));
    let mut report = ImportReport {
        file: name.to_string(),
        sha256: sha,
        ..ImportReport::default()
    };
    let read_error = |e| ImportError::Read {
        file: name.to_string(),
        source: e,
    };
    let mut chunk = Chunk::default();
    let mut pending: Option<tokio::task::JoinHandle<Result<(u64, u64), ImportError>>> = None;
    let mut number: i64 = 1;
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).map_err(read_error)?;
        report.bytes += n as u64;
        let text = line.trim_ascii();
        if n > 0 && !text.is_empty() {
            report.lines += 1;
            // A chunk is done once `raw_web_events` has it: its failures
            // are committed first, and its events commit even when there
            // are none (the transaction still advances).
            if number > done_raw {
                chunk.add(text, opts);
            } else {
                chunk.skipped += 1;
            }
        }
        if chunk.len() >= opts.chunk_events.max(1) || (n == 0 && chunk.len() > 0) {
            // One chunk commits while the next is parsed (at most one in
            // flight, so chunks commit in order).
            if let Some(p) = pending.take() {
                report.add(p.await.map_err(|e| ImportError::Task(e.to_string()))??);
            }
            report.already_imported += std::mem::take(&mut chunk.skipped);
            let full = std::mem::take(&mut chunk);
            let (lake, app_id) = (lake.clone(), app_id.clone());
            pending = Some(tokio::spawn(async move {
                full.commit(&lake, &app_id, number, (done_raw, done_failed))
                    .await
            }));
            number += 1;
            progress(in_file(counted.position()));
        }
        if n == 0 {
            break;
        }
    }
    if let Some(p) = pending.take() {
        report.add(p.await.map_err(|e| ImportError::Task(e.to_string()))??);
    }
    progress(data.len() as u64);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The bytes behind `counted`, gunzipped when they are gzip'd (by their
/// magic number).
fn decoded<'a>(counted: &'a Counted<'a>) -> Box<dyn Read + Send + 'a> {
    if counted.data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    }
}

/// A Parquet file's events as JSON lines ([`crate::segment_parquet`]);
/// `None` for any other file. Its identity stays the SHA-256 of the file
/// as given.
fn json_lines_of_parquet(name: &str, data: &[u8]) -> Result<Option<Vec<u8>>, ImportError> {
    if !crate::segment_parquet::is_parquet(data) {
        return Ok(None);
    }
    crate::segment_parquet::to_json_lines(data)
        .map(Some)
        .map_err(|reason| ImportError::Parquet {
            file: name.to_string(),
            reason,
        })
}

/// One chunk's rows: good events encoded with the WAL row codec (offsets
/// into one buffer), bad ones as `failed_events` rows.
#[derive(Default)]
struct Chunk {
    buf: Vec<u8>,
    ends: Vec<usize>,
    failed: Vec<FailedEventRow>,
    /// Lines of a chunk an earlier import committed (not parsed again).
    skipped: u64,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ends.len() + self.failed.len() + self.skipped as usize
    }

    fn add(&mut self, text: &str, opts: &ImportOptions<'_>) {
        let ctx = NormalizeContext {
            org_id: opts.org_id,
            received_at: opts.now,
            ip_hash: None,
            strip_query_params: opts.strip_query_params,
            ip_salt: opts.ip_salt,
        };
        match normalize_json(text, &Defaults::default(), &ctx) {
            Ok(row) => {
                row.encode(&mut self.buf);
                self.ends.push(self.buf.len());
            }
            Err(r) => {
                let message_id = (r.code != FailureCode::TooDeep)
                    .then(|| serde_json::from_str::<MessageIdOnly>(text).ok())
                    .flatten()
                    .and_then(|m| m.message_id);
                self.failed.push(
                    FailedEventRow::new(
                        crow_lake::ids::new_id("fail"),
                        FailureSource::Import,
                        r.code,
                        r.reason,
                        opts.now,
                    )
                    .with_org(opts.org_id)
                    .with_channel("web")
                    .with_message_id(message_id)
                    .with_payload(text),
                );
            }
        }
    }

    /// Commit the chunk as transaction `number` of `app_id` to each table
    /// that has not committed it yet; the rows landed (events, failures).
    async fn commit(
        &self,
        lake: &Lake,
        app_id: &str,
        number: i64,
        (done_raw, done_failed): (i64, i64),
    ) -> Result<(u64, u64), ImportError> {
        let mut landed = (0, 0);
        if number > done_failed && !self.failed.is_empty() {
            let batch =
                crow_lake::batch::rows_to_batch(&crow_schemas::FAILED_EVENTS, &self.failed)?;
            if lake
                .append_once(
                    crow_schemas::FAILED_EVENTS.name,
                    vec![batch],
                    app_id,
                    number,
                )
                .await?
            {
                landed.1 = self.failed.len() as u64;
            }
        }
        if number > done_raw {
            let batch = self.events()?;
            let rows = batch.num_rows() as u64;
            if lake
                .append_once(
                    crow_schemas::RAW_WEB_EVENTS.name,
                    vec![batch],
                    app_id,
                    number,
                )
                .await?
            {
                landed.0 = rows;
            }
        }
        Ok(landed)
    }

    /// The good events as one batch, sorted by day so each day's partition
    /// gets one file.
    fn events(&self) -> Result<RecordBatch, ImportError> {
        let def = &crow_schemas::RAW_WEB_EVENTS;
        let mut rows = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for &end in &self.ends {
            rows.push(&self.buf[start..end]);
            start = end;
        }
        let batch = crate::rowcodec::decode_rows(&def.schema(), def.version, &rows)
            .map_err(|e| crow_lake::Error::Invalid(e.to_string()))?;
        let Some(day) = batch.column_by_name("event_date") else {
            return Ok(batch);
        };
        let order =
            arrow::compute::sort_to_indices(day, None, None).map_err(crow_lake::Error::from)?;
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c, &order, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crow_lake::Error::from)?;
        RecordBatch::try_new(batch.schema(), columns)
            .map_err(|e| ImportError::Lake(crow_lake::Error::from(e)))
    }
}

#[derive(serde::Deserialize)]
struct MessageIdOnly {
    #[serde(rename = "messageId")]
    message_id: Option<String>,
}

/// A byte slice read through `&Counted`, which knows how far it got.
struct Counted<'a> {
    data: &'a [u8],
    pos: std::sync::atomic::AtomicUsize,
}

impl<'a> Counted<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn position(&self) -> u64 {
        self.pos.load(std::sync::atomic::Ordering::Relaxed) as u64
    }
}

impl Read for &Counted<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.pos.load(std::sync::atomic::Ordering::Relaxed);
        let rest = self.data.get(pos..).unwrap_or_default();
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos
            .store(pos + n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
