//! Clustered compaction: `crow optimize` on a table with a clustering key
//! ([`cluster_keys`]) rewrites each date partition's files into large files
//! whose rows are sorted by that key — for `raw_web_events` by organization,
//! visitor, time and message id — with bloom filters on the columns lookups probe.
//!
//! - **Why sorted.** Every query filters on `org_id`, and the per-visitor
//!   queries (funnels, paths, sessionization) group or partition by
//!   `anonymous_id`. In sorted files each row group holds a narrow range of
//!   both, so the Parquet statistics, page index and bloom filters prune
//!   row groups and pages of other tenants and other visitors, and the
//!   visitor's rows sit together. The scan declares that order to
//!   DataFusion ([`crate::scan`]), which merges the sorted files where a
//!   window or group-by per visitor needs the order, instead of sorting.
//! - **Exact and safe beside writers.** A partition's files at the
//!   snapshot read are replaced in one commit by files holding exactly their
//!   rows (`dataChange: false`, operation OPTIMIZE). Files a collector
//!   appends meanwhile are not touched, and a concurrent rewrite of the same
//!   files is a Delta conflict: the partition is retried from a new
//!   snapshot.
//! - **Once per change.** Files it writes carry the tag [`CLUSTER_TAG`]
//!   (the key); a partition whose files all carry the table's key is left
//!   alone, so running it again rewrites only days that got new files.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit, SessionContext};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt;
use deltalake::DeltaTable;
use futures::TryStreamExt;

use crate::{Error, Lake, OptimizeSummary, Result};

/// Tag on the files a clustered compaction wrote: their sort key, comma
/// separated.
pub const CLUSTER_TAG: &str = "crow.clusteredBy";

/// Target size of a clustered file (as for plain compaction).
pub const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// The tables with a clustering key, and the key: the columns their files
/// are sorted by after `optimize`, each ascending with nulls last.
const KEYS: &[(&str, &[&str])] = &[(
    "raw_web_events",
    &["org_id", "anonymous_id", "occurred_at", "message_id"],
)];

/// The clustering key of a table, if it has one: the columns its files are
/// sorted by after `optimize`.
pub fn cluster_keys(table: &str) -> Option<&'static [&'static str]> {
    KEYS.iter().find(|(t, _)| *t == table).map(|(_, k)| *k)
}

/// The key a file tagged [`CLUSTER_TAG`] = `tag` is sorted by (each column
/// ascending, nulls last), if `tag` is a table's current key. Files tagged
/// with an older key are not taken as sorted (earlier keys were written
/// with nulls first); the next `crow optimize` rewrites them.
pub fn sorted_by(tag: &str) -> Option<&'static [&'static str]> {
    KEYS.iter().map(|(_, k)| *k).find(|k| k.join(",") == tag)
}

/// Columns of a clustered table written with bloom filters (point lookups
/// by visitor and by page).
fn bloom_columns(table: &str) -> &'static [&'static str] {
    match table {
        "raw_web_events" => &["anonymous_id", "page_path"],
        _ => &[],
    }
}

/// One partition's live files at the snapshot read.
#[derive(Default)]
struct Partition {
    /// Raw partition values (as in the log).
    values: HashMap<String, Option<String>>,
    removes: Vec<Remove>,
    /// Whether every file carries the table's key.
    clustered: bool,
}

impl Lake {
    /// Rewrite the partitions of `name` that have files not yet clustered
    /// by its key ([`cluster_keys`]) into sorted files, one commit per
    /// partition.
    pub(crate) async fn cluster(&self, name: &str, keys: &[&str]) -> Result<OptimizeSummary> {
        let tag = keys.join(",");
        let t = self.table(name).await?;
        let mut summary = OptimizeSummary {
            version: t.version().unwrap_or(0),
            ..OptimizeSummary::default()
        };
        let pending: Vec<String> = partitions(&t, &tag)?
            .into_iter()
            .filter(|(_, p)| !p.clustered)
            .map(|(k, _)| k)
            .collect();
        for key in pending {
            let (removed, added, version) = self
                .with_retries(name, || self.cluster_partition(name, keys, &tag, &key))
                .await?;
            summary.files_removed += removed;
            summary.files_added += added;
            summary.version = summary.version.max(version);
        }
        Ok(summary)
    }

    /// Cluster one partition (by its key in [`partitions`]) from the
    /// latest snapshot: (files removed, files added, version).
    async fn cluster_partition(
        &self,
        name: &str,
        keys: &[&str],
        tag: &str,
        key: &str,
    ) -> Result<(u64, u64, u64)> {
        let t = self.table(name).await?;
        let version = t.version().unwrap_or(0);
        let Some(part) = partitions(&t, tag)?.remove(key) else {
            return Ok((0, 0, version)); // rewritten or emptied meanwhile
        };
        if part.clustered {
            return Ok((0, 0, version));
        }
        let snap = t.snapshot().map_err(|e| Error::delta(name, e))?;
        let schema: SchemaRef = snap.snapshot().arrow_schema();
        let partition_columns: Vec<String> = snap.metadata().partition_columns().to_vec();
        let ctx = SessionContext::new_with_config(crate::session_config());
        self.register(&ctx, "t", name, crate::AsOf::Version(version))
            .await?;
        let mut df = ctx.table("t").await?;
        for c in &partition_columns {
            let field = schema.field_with_name(c)?;
            df = df.filter(match part.values.get(c) {
                Some(Some(v)) => col(c.as_str()).eq(lit(ScalarValue::try_from_string(
                    v.clone(),
                    field.data_type(),
                )?)),
                _ => col(c.as_str()).is_null(),
            })?;
        }
        // Ascending, nulls last: the order SQL's `ORDER BY c` asks for, so
        // the scan can declare it ([`sorted_by`]).
        let sort = keys.iter().map(|k| col(*k).sort(true, false)).collect();
        let mut rows = df.sort(sort)?.execute_stream().await?;
        let props = snap.table_config();
        let config = deltalake::datafile::writer::WriterConfig::new(
            schema.clone(),
            partition_columns,
            Some(clustered_writer_properties(name)),
            NonZeroU64::new(TARGET_FILE_BYTES),
            None,
            props.num_indexed_cols(),
            props
                .data_skipping_stats_columns
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
        );
        let mut writer = deltalake::datafile::writer::DeltaWriter::new(t.object_store(), config);
        while let Some(batch) = rows.try_next().await? {
            writer
                .write(&conform(&batch, &schema)?)
                .await
                .map_err(|e| Error::delta(name, e))?;
        }
        let adds = writer.close().await.map_err(|e| Error::delta(name, e))?;
        let added = adds.len() as u64;
        let removed = part.removes.len() as u64;
        let mut actions: Vec<Action> = adds
            .into_iter()
            .map(|a| Action::Add(tagged(a, tag)))
            .collect();
        actions.extend(part.removes.into_iter().map(Action::Remove));
        let done = CommitBuilder::from(self.commit_props(&t))
            .with_actions(actions)
            .build(
                Some(snap),
                t.log_store(),
                DeltaOperation::Optimize {
                    predicate: Some(key.to_string()),
                    target_size: i64::try_from(TARGET_FILE_BYTES).unwrap_or(i64::MAX),
                },
            )
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok((removed, added, done.version()))
    }
}

/// The table's live files by partition (key: `col=value/…`), and whether
/// each partition is clustered by `tag` already.
fn partitions(t: &DeltaTable, tag: &str) -> Result<BTreeMap<String, Partition>> {
    let snap = t.snapshot().map_err(|e| Error::delta("cluster", e))?;
    let columns = snap.metadata().partition_columns().to_vec();
    let mut out: BTreeMap<String, Partition> = BTreeMap::new();
    for view in snap.log_data().iter() {
        let values = view.partition_values_map();
        let key = columns
            .iter()
            .map(|c| match values.get(c) {
                Some(Some(v)) => format!("{c}={v}"),
                _ => format!("{c}=null"),
            })
            .collect::<Vec<_>>()
            .join("/");
        // The tags are only on the file's Add action.
        #[allow(deprecated)]
        let add = view.add_action();
        let has_tag = add
            .tags
            .as_ref()
            .and_then(|m| m.get(CLUSTER_TAG))
            .is_some_and(|v| v.as_deref() == Some(tag));
        let p = out.entry(key).or_insert_with(|| Partition {
            values: values.clone(),
            clustered: true,
            ..Partition::default()
        });
        p.clustered &= has_tag;
        p.removes.push(view.remove_action(false));
    }
    Ok(out)
}

/// A rewritten file's Add: no change of data, tagged with the key.
fn tagged(mut add: Add, tag: &str) -> Add {
    add.data_change = false;
    add.tags
        .get_or_insert_with(HashMap::new)
        .insert(CLUSTER_TAG.to_string(), Some(tag.to_string()));
    add
}

/// `batch` with the table's own column types (the scan may read strings as
/// views).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::Invalid(format!("clustering read no column `{}`", f.name()))
            })?;
            Ok(arrow::compute::cast(c, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// CROW's writer settings ([`crate::writer_properties`]) plus bloom filters
/// on the table's lookup columns.
fn clustered_writer_properties(table: &str) -> parquet::file::properties::WriterProperties {
    let mut b = crate::writer_properties(table).into_builder();
    for c in bloom_columns(table) {
        let path = parquet::schema::types::ColumnPath::from(*c);
        b = b
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path, 0.01);
    }
    b.build()
}
