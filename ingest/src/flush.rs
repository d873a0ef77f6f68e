//! The flusher: sealed WAL segments → Delta commits, exactly once.
//!
//! For every sealed segment, oldest first, the rows of each table are
//! decoded into one Arrow batch (clustered by `org_id` so Parquet statistics
//! prune by tenant) and committed with the application transaction
//! `(crow-collector/<collector id>, <segment seq>)`. Only when every table of
//! the segment is committed is the file deleted. A crash anywhere in between
//! replays the segment on restart; tables that already hold the transaction
//! skip it, so nothing lands twice and nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use arrow::compute::{sort_to_indices, take_record_batch, SortOptions};
use crow_lake::Lake;

use crate::metrics::Metrics;
use crate::wal::{RowFormat, Segment, Wal, WalTable};

/// Flushes sealed WAL segments into the lake.
#[derive(Clone)]
pub struct Flusher {
    wal: Wal,
    lake: Lake,
    app_id: String,
    metrics: Arc<Metrics>,
    interval: Duration,
}

impl Flusher {
    /// A flusher for `wal` into `lake`. `collector_id` identifies this WAL.
    pub fn new(
        wal: Wal,
        lake: Lake,
        collector_id: &str,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> Flusher {
        Flusher {
            wal,
            lake,
            app_id: format!("crow-collector/{collector_id}"),
            metrics,
            interval,
        }
    }

    /// Flush until `shutdown` turns true, then flush what is sealed once more.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                self.interval
            } else {
                Duration::from_millis(200u64.saturating_mul(1 << failures.min(6)))
            };
            tokio::select! {
                _ = self.wal.sealed_notify().notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {
                    if let Err(e) = self.flush_sealed().await {
                        tracing::error!(error = %e, "final flush failed; the WAL keeps the rows for the next start");
                    }
                    return;
                }
            }
            match self.flush_sealed().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    self.metrics.flush_failures.inc();
                    tracing::warn!(error = %e, failures, "flush failed; retrying with backoff");
                }
            }
        }
    }

    /// Flush every sealed segment. Returns the number of rows committed.
    ///
    /// Consecutive sealed segments are committed together, up to
    /// [`GROUP_BYTES`] of segment files per commit: one Delta commit per table
    /// for the whole group, carrying the application transaction version of
    /// the group's last segment. So a flusher that fell behind (a burst, a
    /// lake outage) catches up with fewer, larger commits. Exactly once
    /// still holds per segment: before committing a table, the rows of
    /// segments at or below that table's recorded version are left out.
    pub async fn flush_sealed(&self) -> crate::Result<u64> {
        let mut total = 0;
        let mut sealed = self.wal.sealed_segments()?.into_iter().peekable();
        while sealed.peek().is_some() {
            let started = Instant::now();
            let group = next_group(&mut sealed);
            let Some(last_seq) = group.last().map(|(seq, _)| *seq) else {
                break;
            };
            let (by_table, flushed) = self.decode_group(group).await?;
            total += self.commit_group(by_table, last_seq).await?;
            self.wal.mark_flushed(last_seq)?;
            for path in &flushed {
                self.wal.retire(path)?;
                self.metrics.segments_flushed.inc();
            }
            self.metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(total)
    }

    /// Decode a group's segments off the async runtime: each table's
    /// batches with the segment they came from, and the segments read. A
    /// segment that cannot be read back (disk corruption, or a bug) must
    /// not block every later one: it is set aside, loudly.
    async fn decode_group(&self, group: Vec<(u64, PathBuf)>) -> crate::Result<Decoded> {
        let decoded = tokio::task::spawn_blocking(move || {
            group
                .into_iter()
                .map(|(seq, path)| {
                    let tables = decode_segment(&path);
                    (seq, path, tables)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|source| crate::Error::Panicked {
            task: "WAL decoder",
            source,
        })?;
        let mut by_table: BTreeMap<WalTable, Vec<(u64, RecordBatch)>> = BTreeMap::new();
        let mut flushed = Vec::new();
        for (seq, path, tables) in decoded {
            match tables {
                Ok(tables) => {
                    for (table, batch) in tables {
                        by_table.entry(table).or_default().push((seq, batch));
                    }
                    flushed.push(path);
                }
                Err(e) => {
                    let kept = path.with_extension("corrupt");
                    tracing::error!(seq, error = %e, kept = %kept.display(),
                        "WAL segment cannot be decoded; quarantined for inspection");
                    self.metrics.segments_quarantined.inc();
                    self.wal.quarantine(&path, &kept)?;
                }
            }
        }
        Ok((by_table, flushed))
    }

    /// Commit each table's parts as one batch with the group's last segment
    /// as the transaction version, leaving out segments the table already
    /// committed (a replay). Returns the rows committed.
    async fn commit_group(
        &self,
        by_table: BTreeMap<WalTable, Vec<(u64, RecordBatch)>>,
        last_seq: u64,
    ) -> Result<u64, crow_lake::Error> {
        let mut total = 0;
        for (table, parts) in by_table {
            let name = table.table_name();
            let done = self.lake.app_version(name, &self.app_id).await?;
            let (skipped, fresh): (Vec<_>, Vec<_>) = parts
                .into_iter()
                .partition(|(seq, _)| done.is_some_and(|d| d >= *seq as i64));
            for (seq, _) in &skipped {
                tracing::info!(
                    seq,
                    table = name,
                    "segment already committed (replay): skipped"
                );
            }
            if fresh.is_empty() {
                continue;
            }
            let batch = cluster(fresh.into_iter().map(|(_, b)| b).collect())?;
            let n = batch.num_rows() as u64;
            if self
                .lake
                .append_once(name, vec![batch], &self.app_id, last_seq as i64)
                .await?
            {
                total += n;
                self.metrics.rows_committed.inc_by(name, n);
            }
        }
        Ok(total)
    }
}

/// A group's decoded rows by table (with each batch's segment), and the
/// segments that were read.
type Decoded = (BTreeMap<WalTable, Vec<(u64, RecordBatch)>>, Vec<PathBuf>);

/// The next sealed segments to commit together: at least one, then more
/// while the group stays within [`GROUP_BYTES`].
fn next_group(
    sealed: &mut std::iter::Peekable<std::vec::IntoIter<(u64, PathBuf)>>,
) -> Vec<(u64, PathBuf)> {
    let mut group = Vec::new();
    let mut bytes = 0u64;
    while let Some((seq, path)) = sealed.next_if(|(_, p)| {
        let len = std::fs::metadata(p).map_or(0, |m| m.len());
        let fits = group.is_empty() || bytes + len <= GROUP_BYTES;
        if fits {
            bytes += len;
        }
        fits
    }) {
        group.push((seq, path));
    }
    group
}

/// The most segment bytes committed together.
pub const GROUP_BYTES: u64 = 128 * 1024 * 1024;

/// One batch of a table's parts, clustered by `org_id`.
fn cluster(mut parts: Vec<RecordBatch>) -> Result<RecordBatch, crow_lake::Error> {
    let batch = match parts.len() {
        1 => parts.remove(0),
        _ => {
            let schema = parts[0].schema();
            arrow::compute::concat_batches(&schema, &parts)?
        }
    };
    sort_by_org(batch)
}

/// Read a sealed segment and decode each table's rows into one batch.
fn decode_segment(
    path: &std::path::Path,
) -> Result<Vec<(WalTable, RecordBatch)>, crow_lake::Error> {
    let segment = Segment::read(path)?;
    #[derive(Default)]
    struct Rows<'a> {
        json: Vec<u8>,
        binary: Vec<&'a [u8]>,
    }
    let mut by_table: BTreeMap<WalTable, Rows<'_>> = BTreeMap::new();
    for (table, format, row) in segment.records() {
        let rows = by_table.entry(table).or_default();
        match format {
            RowFormat::Json => {
                rows.json.extend_from_slice(row);
                rows.json.push(b'\n');
            }
            RowFormat::Binary => rows.binary.push(row),
        }
    }
    by_table
        .into_iter()
        .map(|(table, rows)| {
            let name = table.table_name();
            let def = crow_schemas::table(name)
                .ok_or_else(|| crow_lake::Error::UnknownTable(name.into()))?;
            let schema = def.schema();
            let mut batches = Vec::with_capacity(2);
            if !rows.json.is_empty() {
                batches.push(decode_json(&schema, &rows.json)?);
            }
            if !rows.binary.is_empty() {
                batches.push(
                    crate::rowcodec::decode_rows(&schema, def.version, &rows.binary)
                        .map_err(|e| crow_lake::Error::Invalid(e.to_string()))?,
                );
            }
            let batch = match batches.len() {
                1 => batches.remove(0),
                _ => arrow::compute::concat_batches(&schema, &batches)?,
            };
            Ok((table, batch))
        })
        .collect()
}

/// Cluster a batch by `org_id` (so Parquet statistics prune by tenant),
/// unless it already is.
fn sort_by_org(batch: RecordBatch) -> Result<RecordBatch, crow_lake::Error> {
    let Ok(org) = batch.schema().index_of("org_id") else {
        return Ok(batch);
    };
    let column = batch.column(org);
    if let Some(orgs) = column.as_any().downcast_ref::<arrow::array::StringArray>() {
        if orgs.null_count() == 0 && orgs.iter().is_sorted() {
            return Ok(batch);
        }
    }
    let idx = sort_to_indices(column, Some(SortOptions::default()), None)?;
    Ok(take_record_batch(&batch, &idx)?)
}

/// Decode newline-delimited JSON rows into one batch of `schema`.
fn decode_json(
    schema: &arrow::datatypes::SchemaRef,
    json: &[u8],
) -> Result<RecordBatch, crow_lake::Error> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(64 * 1024)
        .with_strict_mode(true)
        .build_decoder()?;
    let mut batches = Vec::new();
    let mut rest = json;
    while !rest.is_empty() {
        let used = decoder.decode(rest)?;
        rest = &rest[used..];
        if let Some(b) = decoder.flush()? {
            batches.push(b);
        }
        if used == 0 && !rest.is_empty() && decoder.is_empty() {
            return Err(crow_lake::Error::Invalid(
                "WAL rows could not be decoded".into(),
            ));
        }
    }
    if let Some(b) = decoder.flush()? {
        batches.push(b);
    }
    Ok(arrow::compute::concat_batches(schema, &batches)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{WalBatch, WalOptions};

    /// WAL options for `<dir>/wal`: seal only when told to.
    fn wal_options(dir: &tempfile::TempDir) -> WalOptions {
        WalOptions {
            dir: dir.path().join("wal"),
            seal_interval: Duration::from_secs(3600),
            seal_rows: 1_000_000,
            seal_bytes: 1 << 30,
            max_pending_bytes: 1 << 30,
            queue: 16,
        }
    }

    /// A fresh local lake and a WAL that seals only when told to.
    async fn lake_and_wal() -> (tempfile::TempDir, Lake, Wal) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crow_schemas::config::LakeConfig {
            uri: dir.path().join("lake").display().to_string(),
            ..Default::default()
        };
        let lake = Lake::open(&cfg).await.unwrap();
        lake.init().await.unwrap();
        let wal = Wal::open(wal_options(&dir)).unwrap();
        (dir, lake, wal)
    }

    /// A WAL batch of one `failed_events` row (JSON).
    fn failed(message_id: Option<&str>) -> WalBatch {
        let row = crow_schemas::rows::FailedEventRow::new(
            crow_lake::ids::new_id("fail"),
            crow_schemas::rows::FailureSource::Collector,
            crow_schemas::rows::FailureCode::MissingField,
            "why",
            chrono::Utc::now(),
        )
        .with_org("o1")
        .with_channel("web")
        .with_message_id(message_id.map(str::to_string))
        .with_payload("{}");
        let mut b = WalBatch::default();
        b.push_json(WalTable::FailedEvents, &serde_json::to_vec(&row).unwrap());
        b
    }

    fn flusher(wal: &Wal, lake: &Lake, metrics: &Arc<Metrics>) -> Flusher {
        Flusher::new(
            wal.clone(),
            lake.clone(),
            "test",
            metrics.clone(),
            Duration::from_secs(1),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_once_and_quarantines_undecodable_segments() {
        let (dir, lake, wal) = lake_and_wal().await;
        let good = failed(Some("m1"));
        wal.append(good.clone()).await.unwrap();
        wal.seal_now().await.unwrap();
        // A row with a column the table does not have cannot be decoded.
        let mut bad = WalBatch::default();
        bad.push_json(
            WalTable::FailedEvents,
            br#"{"org_id":"o1","no_such_column":1}"#,
        );
        wal.append(bad).await.unwrap();
        wal.seal_now().await.unwrap();
        wal.append(good).await.unwrap();
        wal.seal_now().await.unwrap();

        let first = dir.path().join("wal").join(format!("{:020}.sealed", 1));
        let copy = dir.path().join("segment-1.copy");
        std::fs::copy(&first, &copy).unwrap();

        let metrics = Arc::new(Metrics::default());
        let f = flusher(&wal, &lake, &metrics);
        assert_eq!(f.flush_sealed().await.unwrap(), 2);
        assert_eq!(metrics.segments_quarantined.get(), 1);
        assert!(wal.sealed_segments().unwrap().is_empty());
        assert!(dir
            .path()
            .join("wal")
            .join(format!("{:020}.corrupt", 2))
            .exists());
        assert_eq!(lake.stats("failed_events").await.unwrap().rows, 2);
        let app = "crow-collector/test";
        assert_eq!(
            lake.app_version("failed_events", app).await.unwrap(),
            Some(3)
        );
        // A crash after the commit but before the segment was deleted: the
        // replay lands nothing twice.
        std::fs::copy(&copy, &first).unwrap();
        assert_eq!(f.flush_sealed().await.unwrap(), 0);
        assert!(!first.exists());
        assert_eq!(lake.stats("failed_events").await.unwrap().rows, 2);
    }

    /// Segments committed together, then replayed after a crash together
    /// with newer ones: each segment's rows land once, in binary and JSON
    /// rows alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_commits_land_each_segment_once() {
        let (dir, lake, wal) = lake_and_wal().await;
        let ctx = crate::normalize::NormalizeContext {
            org_id: "o1",
            received_at: chrono::Utc::now(),
            ip_hash: None,
            strip_query_params: &[],
            ip_salt: "s",
        };
        let web = |id: &str| {
            let row = crate::normalize::normalize(
                &serde_json::json!({"type": "track", "event": "E", "userId": "u", "messageId": id}),
                None,
                &ctx,
            )
            .unwrap();
            let mut b = WalBatch::default();
            b.push_with(WalTable::RawWebEvents, RowFormat::Binary, |buf| {
                row.encode(buf);
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap();
            b
        };
        wal.append(web("m1")).await.unwrap();
        wal.seal_now().await.unwrap();
        wal.append(web("m2")).await.unwrap();
        wal.seal_now().await.unwrap();
        let seg = |n: u64| dir.path().join("wal").join(format!("{n:020}.sealed"));
        let keep = |n: u64| dir.path().join(format!("segment-{n}.copy"));
        for n in [1, 2] {
            std::fs::copy(seg(n), keep(n)).unwrap();
        }
        let metrics = Arc::new(Metrics::default());
        let f = flusher(&wal, &lake, &metrics);
        // Both segments in one commit, versioned by the last one.
        let before = lake.table("raw_web_events").await.unwrap().version();
        assert_eq!(f.flush_sealed().await.unwrap(), 2);
        let after = lake.table("raw_web_events").await.unwrap().version();
        assert_eq!(after, before.map(|v| v + 1));
        let app = "crow-collector/test";
        assert_eq!(
            lake.app_version("raw_web_events", app).await.unwrap(),
            Some(2)
        );
        // Crash before the segments were deleted; a third one arrives. The
        // replayed group lands only the new segment.
        for n in [1, 2] {
            std::fs::copy(keep(n), seg(n)).unwrap();
        }
        wal.append(web("m3")).await.unwrap();
        wal.append(failed(None)).await.unwrap();
        wal.seal_now().await.unwrap();
        assert_eq!(f.flush_sealed().await.unwrap(), 2);
        assert!(wal.sealed_segments().unwrap().is_empty());
        let (_, batches) = lake
            .sql("select message_id from raw_web_events order by message_id")
            .await
            .unwrap();
        let rows = crow_lake::batch::batches_to_json(&batches).unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r["message_id"].clone()).collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
        assert_eq!(lake.stats("failed_events").await.unwrap().rows, 1);
        assert_eq!(
            lake.app_version("raw_web_events", app).await.unwrap(),
            Some(3)
        );
    }

    /// Everything flushed, the WAL emptied, the collector restarted: new
    /// segments are numbered after the flushed ones, so they are not taken
    /// for replays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn numbering_goes_on_after_an_emptied_wal() {
        let (dir, lake, wal) = lake_and_wal().await;
        let metrics = Arc::new(Metrics::default());
        let opts = || wal_options(&dir);
        // While a collector holds the folder, a second one is refused.
        let refused = Wal::open(opts()).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("another collector")),
            "{refused:?}"
        );
        let mut first = Some(wal);
        for (round, id) in ["f1", "f2"].iter().enumerate() {
            let wal = match first.take() {
                Some(w) => w,
                // The previous writer lets go of the folder once its handles
                // are gone.
                None => {
                    let mut tries = 0;
                    loop {
                        match Wal::open(opts()) {
                            Ok(w) => break w,
                            Err(_) if tries < 200 => {
                                tries += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            Err(e) => panic!("reopening the WAL: {e}"),
                        }
                    }
                }
            };
            wal.append(failed(Some(id))).await.unwrap();
            wal.seal_now().await.unwrap();
            let f = flusher(&wal, &lake, &metrics);
            assert_eq!(f.flush_sealed().await.unwrap(), 1, "round {round}");
        }
        assert_eq!(lake.stats("failed_events").await.unwrap().rows, 2);
    }
}
