//! Reading a Delta table as plain Parquet.
//!
//! delta-rs's table provider replays the log through the Delta kernel at
//! every scan, adds a synthetic file-id column and transforms each batch
//! above its Parquet scan: what a table with deletion vectors, column mapping
//! or type widening needs. CROW's tables have none of those, so for them a
//! [`PlainParquetTable`] hands the snapshot's active files — path, size,
//! partition values, row count — straight to DataFusion's Parquet scan, as a
//! `ListingTable` would, without listing the store:
//!
//! - **Delta semantics are the snapshot's.** The files read are the add
//!   actions of the snapshot the table was loaded at (a time-travelled one
//!   too); a file removed by an overwrite, delete or optimize is not in it.
//!   Partition values come from the log (typed per the table's schema), not
//!   from folder names.
//! - **One predicate.** Filters on partition columns prune whole files here
//!   (exactly, so DataFusion drops them); every other filter is left to
//!   DataFusion, which pushes it into the Parquet scan as its one predicate:
//!   row groups, pages (page index) and bloom filters are pruned with it, and
//!   rows are filtered while decoding — or, once the filter is seen to keep
//!   many rows, above the scan ([`crate::pushdown`]).
//! - **Footers are read once.** The Parquet metadata of each file is kept in
//!   the session runtime's file-metadata cache (DataFusion's `CacheManager`),
//!   keyed by the file's path, so a long-running API server parses a footer
//!   once across requests. A file's path never changes contents in Delta.
//! - **Filters the files prove are not evaluated.** The Delta log keeps
//!   each file's row count and each column's minimum, maximum and null
//!   count. A filter `column = value` that every file either satisfies on
//!   every row (minimum = maximum = value, no nulls) or on none (value
//!   outside the range) is answered by the file list alone: the files of the
//!   second kind are skipped and the filter is reported *exact*, so
//!   DataFusion neither reads the column nor evaluates the filter — and a
//!   `count(*)` is answered from the row counts. That is the tenant filter
//!   `org_id = …` of every API query when each file holds one organization
//!   (a lake of one organization, or a table written per organization). If
//!   any file holds other values too, or has no statistics, the filter is
//!   evaluated as usual — but the files whose range excludes the value are
//!   still not opened (another tenant's files), and within the rest it
//!   prunes row groups and pages by their own statistics (`crow optimize`
//!   sorts files by organization).
//! - **Sorted files are declared sorted.** When every file a scan reads
//!   was written by `crow optimize` sorted by its table's key
//!   ([`crate::cluster`]; at most [`MAX_SORTED_FILES`] of them), each file
//!   is its own partition and the scan declares the order, less the
//!   leading key columns that hold one value in every file (the
//!   organization, in files of one tenant). A window, `GROUP BY` or
//!   `ORDER BY` per visitor then merges the files instead of sorting every
//!   row ([`crate::order`] keeps aggregates that would only partly use the
//!   order hashing).
//! - **Only what it can honour.** [`plain_scan_allowed`] says whether a
//!   snapshot's protocol can be read this way; otherwise delta-rs reads it.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_datasource::TableSchema;
use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use deltalake::DeltaTable;
use object_store::path::Path;
use object_store::ObjectMeta;

/// Reader features a plain Parquet scan honours: they change how the log is
/// read (the snapshot already did that) or which types columns may have
/// (the Parquet reader reads them), never which rows or columns a data file
/// holds.
const HONOURED_READER_FEATURES: &[&str] = &["timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"];

/// Whether a table at this snapshot can be read as plain Parquet: a reader
/// version of at most 3, no column mapping (`delta.columnMapping.mode` unset
/// or `none`), and no reader feature outside [`HONOURED_READER_FEATURES`]
/// (deletion vectors, column mapping, type widening and any feature this
/// code does not know are not). `Err` says why not.
pub fn plain_scan_allowed(table: &DeltaTable) -> Result<(), String> {
    let snap = table.snapshot().map_err(|e| e.to_string())?;
    let protocol = snap.protocol();
    if protocol.min_reader_version() > 3 {
        return Err(format!(
            "reader version {} is newer than this scan knows",
            protocol.min_reader_version()
        ));
    }
    if let Some(features) = protocol.reader_features() {
        if let Some(f) = features
            .iter()
            .find(|f| !HONOURED_READER_FEATURES.contains(&f.as_ref()))
        {
            return Err(format!("reader feature `{}`", f.as_ref()));
        }
    }
    let mode = snap
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .map(|m| m.to_ascii_lowercase());
    if mode.as_deref().is_some_and(|m| m != "none") {
        return Err("column mapping".to_string());
    }
    Ok(())
}

/// One active data file of the snapshot.
#[derive(Debug, Clone)]
struct DataFile {
    meta: ObjectMeta,
    /// Values of the partition columns, in [`PlainParquetTable`]'s
    /// partition order.
    partition_values: Vec<ScalarValue>,
    rows: Option<usize>,
    /// The file's position in the snapshot's log data (the order of its
    /// statistics arrays).
    log_index: usize,
    /// The columns its rows are sorted by, if `crow optimize` wrote it
    /// ([`crate::cluster::sorted_by`]).
    sorted_by: Option<&'static [&'static str]>,
}

/// What a file's statistics prove about a filter `column = value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// Every row satisfies it (minimum = maximum = value, no nulls).
    All,
    /// No row does (the value is outside the range, or every row is null).
    None,
    /// Some rows may: the filter must be evaluated.
    Unknown,
}

/// A Delta snapshot read as plain Parquet (see the module docs).
#[derive(Debug)]
pub struct PlainParquetTable {
    /// The table's schema, in its Delta column order (what SQL sees).
    schema: SchemaRef,
    /// Where each column of `schema` is in the scan's schema (the file
    /// columns, then the partition columns).
    scan_index: Vec<usize>,
    /// The columns stored in the data files.
    file_schema: SchemaRef,
    /// The partition columns, in the scan's order.
    partition_fields: Vec<FieldRef>,
    files: Vec<DataFile>,
    table: DeltaTable,
    version: Option<u64>,
    /// Per file column, what its statistics prove for a value (memo of
    /// [`PlainParquetTable::proofs`], keyed by column and value).
    proofs: std::sync::Mutex<ProofMemo>,
    /// Each file's statistics per column, in log order (memo of
    /// [`PlainParquetTable::column_stats`]: a query comparing one column
    /// with many values reads them once).
    column_stats: std::sync::Mutex<ColumnStatsMemo>,
}

/// Statistics per column, one entry per file in log order.
type ColumnStatsMemo = std::collections::HashMap<String, Arc<Vec<Option<ColumnStats>>>>;

/// Proofs per `(column, value)`, one per file.
type ProofMemo = std::collections::HashMap<(String, StatValue), Arc<Vec<Proof>>>;

/// Parsed statistics of one column of one file, kept per process: a
/// table's files are many, their statistics JSON in the log is parsed only
/// the first time a filter asks.
static STATS_CACHE: std::sync::LazyLock<std::sync::Mutex<StatsCache>> =
    std::sync::LazyLock::new(Default::default);

/// `(table root + file path, column)` → the file's statistics of it.
type StatsCache = std::collections::HashMap<(String, String), Option<ColumnStats>>;

/// At most this many files sorted by a key are declared sorted, each its
/// own partition ([`PlainParquetTable::sort_order`]); a scan of more (a
/// long range of days) spreads them over the session's partitions, as for
/// unsorted files, rather than merging so many streams at once.
const MAX_SORTED_FILES: usize = 128;

/// The column every CROW table keeps its organization in: the tenant
/// filter of every API query compares it.
const TENANT_COLUMN: &str = "org_id";

/// Bytes read from the end of a file for its footer, when the session does
/// not say (DataFusion's own default).
const METADATA_SIZE_HINT: usize = 512 * 1024;

/// [`STATS_CACHE`]'s bound (about 100 bytes each): past it, it starts over.
const STATS_CACHE_ENTRIES: usize = 1_000_000;

/// A statistics value of a column type a proof compares exactly: strings
/// (byte order, as Parquet and Delta order them), integers, booleans.
/// Timestamps are left out: the log keeps them truncated to milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum StatValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl StatValue {
    /// A literal compared with a column of `data_type`.
    fn of_literal(data_type: &DataType, v: &ScalarValue) -> Option<Self> {
        match data_type {
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                v.try_as_str().flatten().map(|s| Self::Str(s.to_string()))
            }
            DataType::Boolean => match v {
                ScalarValue::Boolean(Some(b)) => Some(Self::Bool(*b)),
                _ => None,
            },
            t if t.is_integer() => match v.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(Some(i)) => Some(Self::Int(i)),
                _ => None,
            },
            _ => None,
        }
    }

    /// A value of the log's statistics JSON for a column of `data_type`.
    fn of_json(data_type: &DataType, v: &serde_json::Value) -> Option<Self> {
        match (data_type, v) {
            (
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8,
                serde_json::Value::String(s),
            ) => Some(Self::Str(s.clone())),
            (DataType::Boolean, serde_json::Value::Bool(b)) => Some(Self::Bool(*b)),
            (t, serde_json::Value::Number(n)) if t.is_integer() => n.as_i64().map(Self::Int),
            _ => None,
        }
    }
}

/// One column's statistics in one file.
#[derive(Debug, Clone)]
struct ColumnStats {
    min: Option<StatValue>,
    max: Option<StatValue>,
    nulls: Option<u64>,
}

impl ColumnStats {
    /// `column`'s entry of a file's statistics JSON (`minValues`,
    /// `maxValues`, `nullCount`).
    fn parse(json: &str, column: &str, data_type: &DataType) -> Option<Self> {
        let stats: serde_json::Value = serde_json::from_str(json).ok()?;
        let value = |key: &str| stats.get(key).and_then(|m| m.get(column));
        Some(Self {
            min: value("minValues").and_then(|v| StatValue::of_json(data_type, v)),
            max: value("maxValues").and_then(|v| StatValue::of_json(data_type, v)),
            nulls: value("nullCount").and_then(serde_json::Value::as_u64),
        })
    }

    /// Whether every row of a file of `rows` rows holds the same non-null
    /// value: its minimum, which [`ColumnStats::prove`] shows every row
    /// holds. Strings must be shorter than 32 bytes, where no Delta writer
    /// truncates its statistics (a truncated minimum and maximum could be
    /// equal for different values).
    fn is_constant(&self, rows: usize) -> bool {
        self.min.as_ref().is_some_and(|v| {
            !matches!(v, StatValue::Str(s) if s.len() >= 32) && self.prove(v, rows) == Proof::All
        })
    }

    /// What these statistics of a file of `rows` rows prove about
    /// `column = value`. Minimum and maximum are bounds (a truncated string
    /// statistic still bounds the values), so minimum = maximum = value
    /// with no nulls means every row holds the value.
    fn prove(&self, value: &StatValue, rows: usize) -> Proof {
        if self
            .nulls
            .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n == rows))
        {
            return Proof::None;
        }
        let (Some(min), Some(max)) = (&self.min, &self.max) else {
            return Proof::Unknown;
        };
        if value < min || value > max {
            Proof::None
        } else if min == value && max == value && self.nulls == Some(0) {
            Proof::All
        } else {
            Proof::Unknown
        }
    }
}

/// `column = literal` (either way round) on a non-null literal.
fn equality(filter: &Expr) -> Option<(&Column, &ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    if *op != Operator::Eq {
        return None;
    }
    let (c, v) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    (!v.is_null()).then_some((c, v))
}

impl PlainParquetTable {
    /// The provider of `table`'s loaded snapshot, whose SQL schema is
    /// `schema` (that of delta-rs's provider, so either scan answers with
    /// the same types). The caller checks [`plain_scan_allowed`] first.
    pub fn try_new(table: &DeltaTable, schema: SchemaRef) -> crate::Result<Self> {
        let delta = |e| crate::Error::delta("plain scan", e);
        let snap = table.snapshot().map_err(delta)?;
        let partition_columns: Vec<String> = snap.metadata().partition_columns().to_vec();
        let mut file_fields: Vec<FieldRef> = Vec::new();
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        for name in &partition_columns {
            let field = schema.field_with_name(name)?;
            partition_fields.push(Arc::new(field.clone()));
        }
        for f in schema.fields() {
            if !partition_columns.contains(f.name()) {
                file_fields.push(f.clone());
            }
        }
        // The scan's schema is the file columns, then the partition columns.
        let mut scan_index = Vec::with_capacity(schema.fields().len());
        let mut next_file_column = 0;
        for f in schema.fields() {
            match partition_columns.iter().position(|p| p == f.name()) {
                Some(i) => scan_index.push(file_fields.len() + i),
                None => {
                    scan_index.push(next_file_column);
                    next_file_column += 1;
                }
            }
        }
        let root = Path::from_url_path(table.log_store().root_url().path())
            .map_err(object_store::Error::from)?;
        let mut files = Vec::new();
        for (log_index, view) in snap.log_data().iter().enumerate() {
            let raw = view.partition_values_map();
            let partition_values = partition_fields
                .iter()
                .map(|field| match raw.get(field.name()) {
                    Some(Some(v)) => ScalarValue::try_from_string(v.clone(), field.data_type())
                        .map_err(|e| {
                            crate::Error::Invalid(format!(
                                "file {} has partition value `{v}` for {}: {e}",
                                view.path(),
                                field.name()
                            ))
                        }),
                    // Missing or null: a null partition value.
                    _ => Ok(ScalarValue::try_from(field.data_type())?),
                })
                .collect::<crate::Result<Vec<_>>>()?;
            let location = view
                .object_store_path()
                .parts()
                .fold(root.clone(), |p, part| p.join(part));
            let size = u64::try_from(view.size()).map_err(|_| {
                crate::Error::Invalid(format!("file {} has a negative size", view.path()))
            })?;
            // The clustering tag is only on the file's Add action.
            #[allow(deprecated)]
            let sorted_by = view
                .add_action()
                .tags
                .as_ref()
                .and_then(|m| m.get(crate::cluster::CLUSTER_TAG))
                .and_then(|v| v.as_deref())
                .and_then(crate::cluster::sorted_by);
            files.push(DataFile {
                meta: ObjectMeta {
                    location,
                    last_modified: view.modification_datetime().map_err(delta)?,
                    size,
                    e_tag: None,
                    version: None,
                },
                partition_values,
                rows: view.num_records(),
                log_index,
                sorted_by,
            });
        }
        files.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
        Ok(Self {
            schema,
            scan_index,
            file_schema: Arc::new(Schema::new(file_fields)),
            partition_fields,
            files,
            table: table.clone(),
            version: table.version(),
            proofs: Default::default(),
            column_stats: Default::default(),
        })
    }

    /// What each file's statistics (in `self.files` order) prove about
    /// `column = value` for a string, integer or boolean column stored in
    /// the files; `None` for other columns.
    fn proofs(&self, column: &str, value: &ScalarValue) -> Option<Arc<Vec<Proof>>> {
        let field = self.file_schema.field_with_name(column).ok()?;
        let value = StatValue::of_literal(field.data_type(), value)?;
        let key = (column.to_string(), value.clone());
        if let Some(p) = self.proofs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Some(p);
        }
        let stats = self.column_stats(column, field.data_type())?;
        let proofs: Vec<Proof> = self
            .files
            .iter()
            .map(|f| match (f.rows, stats.get(f.log_index)) {
                (Some(rows), Some(Some(c))) => c.prove(&value, rows),
                _ => Proof::Unknown,
            })
            .collect();
        let proofs = Arc::new(proofs);
        if let Ok(mut m) = self.proofs.lock() {
            m.insert(key, proofs.clone());
        }
        Some(proofs)
    }

    /// Each file's statistics of `column`, in log order (`None` where the
    /// log has none). A file's statistics never change (Delta files are
    /// immutable), so they are parsed once per process ([`STATS_CACHE`]),
    /// and looked up once per provider.
    fn column_stats(
        &self,
        column: &str,
        data_type: &DataType,
    ) -> Option<Arc<Vec<Option<ColumnStats>>>> {
        if let Some(s) = self
            .column_stats
            .lock()
            .ok()
            .and_then(|m| m.get(column).cloned())
        {
            return Some(s);
        }
        let snap = self.table.snapshot().ok()?;
        let root = self.table.log_store().root_url().to_string();
        let views: Vec<_> = snap.log_data().iter().collect();
        let keys: Vec<(String, String)> = views
            .iter()
            .map(|view| (format!("{root}{}", view.path()), column.to_string()))
            .collect();
        // Look up under the process-wide lock, parse the files it misses
        // without it (a cold table's statistics JSON takes milliseconds that
        // other tables' first reads would otherwise wait), then store them.
        let mut found: Vec<Option<Option<ColumnStats>>> = {
            let cache = STATS_CACHE.lock().ok()?;
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let parsed: Vec<(usize, Option<ColumnStats>)> = found
            .iter()
            .enumerate()
            .filter(|(_, hit)| hit.is_none())
            .map(|(i, _)| {
                let c = views[i]
                    .stats()
                    .and_then(|json| ColumnStats::parse(&json, column, data_type));
                (i, c)
            })
            .collect();
        if !parsed.is_empty() {
            let mut cache = STATS_CACHE.lock().ok()?;
            if cache.len() > STATS_CACHE_ENTRIES {
                cache.clear();
            }
            for (i, c) in &parsed {
                cache.insert(keys[*i].clone(), c.clone());
            }
        }
        for (i, c) in parsed {
            found[i] = Some(c);
        }
        let out: Vec<Option<ColumnStats>> = found.into_iter().map(Option::flatten).collect();
        let out = Arc::new(out);
        if let Ok(mut m) = self.column_stats.lock() {
            m.insert(column.to_string(), out.clone());
        }
        Some(out)
    }

    /// For a filter the files' statistics decide exactly (every file's
    /// rows all satisfy it or none does): which files keep rows.
    fn decided_by_statistics(&self, filter: &Expr) -> Option<Arc<Vec<Proof>>> {
        let (c, v) = equality(filter)?;
        let proofs = self.proofs(&c.name, v)?;
        proofs
            .iter()
            .all(|p| *p != Proof::Unknown)
            .then_some(proofs)
    }

    /// The Delta version whose files this provider reads.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// How many data files the snapshot has.
    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_fields
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// Whether `filter` must be evaluated on the rows (DataFusion's
    /// `Inexact`): neither the partition values nor every file's
    /// statistics decide it.
    fn evaluated_on_rows(&self, filter: &Expr) -> bool {
        !self.is_partition_filter(filter) && self.decided_by_statistics(filter).is_none()
    }

    /// Whether `filter` can be decided from partition values alone.
    fn is_partition_filter(&self, filter: &Expr) -> bool {
        let names = self.partition_names();
        !names.is_empty() && expr_applicable_for_cols(&names, filter)
    }

    /// The files whose partition values satisfy every filter in
    /// `partition_filters` and that no proof in `proofs` rules out
    /// ([`Proof::None`]).
    fn pruned_files(
        &self,
        partition_filters: &[Expr],
        proofs: &[Arc<Vec<Proof>>],
    ) -> DfResult<(Vec<usize>, Vec<PartitionedFile>)> {
        let partition_schema = DFSchema::try_from(Schema::new(
            self.partition_fields
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ))?;
        let mut kept = Vec::with_capacity(self.files.len());
        let mut out = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            if proofs.iter().any(|p| p[i] == Proof::None) {
                continue;
            }
            let mut pf = PartitionedFile::new_from_meta(f.meta.clone());
            pf.partition_values = f.partition_values.clone();
            let Some(mut pf) = filter_partitioned_file(pf, partition_filters, &partition_schema)?
            else {
                continue;
            };
            pf.statistics = Some(Arc::new(self.file_statistics(f)));
            kept.push(i);
            out.push(pf);
        }
        Ok((kept, out))
    }

    /// The order the rows of each of the files `kept` (indices into
    /// `self.files`) are in, as columns sorted ascending with nulls last:
    /// when `crow optimize` wrote every one of them sorted by the same key
    /// ([`crate::cluster`]) and they are at most [`MAX_SORTED_FILES`].
    /// Leading key columns that hold one value in each file (the
    /// organization, in files of one tenant) are left out: each file is
    /// sorted by the rest as well, which is the order per-visitor windows
    /// and group-bys need.
    fn sort_order(&self, kept: &[usize]) -> Option<&'static [&'static str]> {
        let first = self.files.get(*kept.first()?)?.sorted_by?;
        if kept.len() > MAX_SORTED_FILES
            || kept.iter().any(|&i| self.files[i].sorted_by != Some(first))
            || first
                .iter()
                .any(|c| self.file_schema.field_with_name(c).is_err())
        {
            return None;
        }
        let mut columns = first;
        while let [head, rest @ ..] = columns {
            if rest.is_empty() {
                break;
            }
            let field = self.file_schema.field_with_name(head).ok()?;
            let Some(stats) = self.column_stats(head, field.data_type()) else {
                break;
            };
            let constant = kept.iter().all(|&i| {
                let f = &self.files[i];
                matches!(
                    (f.rows, stats.get(f.log_index)),
                    (Some(rows), Some(Some(c))) if c.is_constant(rows)
                )
            });
            if !constant {
                break;
            }
            columns = rest;
        }
        Some(columns)
    }

    /// A file's statistics over the scan's schema: its row count from the
    /// Delta log, its partition values exactly, nothing claimed about the
    /// other columns (the Parquet footers have those).
    fn file_statistics(&self, f: &DataFile) -> Statistics {
        let rows = f.rows.map_or(Precision::Absent, Precision::Exact);
        let mut stats = Statistics::new_unknown(&self.file_schema);
        stats.num_rows = rows;
        stats.total_byte_size = Precision::Inexact(usize::try_from(f.meta.size).unwrap_or(0));
        for v in &f.partition_values {
            let mut c = datafusion::common::ColumnStatistics::new_unknown();
            if v.is_null() {
                c.null_count = rows;
            } else {
                c.null_count = Precision::Exact(0);
                c.min_value = Precision::Exact(v.clone());
                c.max_value = Precision::Exact(v.clone());
                c.distinct_count = Precision::Exact(1);
            }
            stats.column_statistics.push(c);
        }
        stats
    }
}

/// Split `files` into at most `n` groups of similar byte size.
pub(crate) fn balanced_groups(files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.clamp(1, files.len().max(1));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    let mut files = files;
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    for f in files {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += f.object_meta.size;
            g.1.push(f);
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|g| FileGroup::new(g.1))
        .collect()
}

#[async_trait]
impl TableProvider for PlainParquetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.evaluated_on_rows(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Exact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projected: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| self.is_partition_filter(f))
            .cloned()
            .collect();
        // Files the statistics rule out for a `column = value` filter are
        // not scanned. For a filter they decide, DataFusion was told it is
        // exact (and evaluates it nowhere), so this is where it applies;
        // for the others (some file holds other values too) DataFusion
        // still evaluates it, and the files skipped here are only those no
        // row of which could pass — another tenant's files, say.
        // (`proofs` answers for columns stored in the files only.)
        let ruled_out: Vec<Arc<Vec<Proof>>> = filters
            .iter()
            .filter_map(|f| equality(f).and_then(|(c, v)| self.proofs(&c.name, v)))
            .collect();
        let (kept, files) = self.pruned_files(&partition_filters, &ruled_out)?;
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(Arc::new(
                self.schema.project(&projected)?,
            ))));
        }
        // The files' store, registered once in the session's runtime.
        self.table
            .update_datafusion_session(state)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store_url = self.table.log_store().root_url().as_object_store_url();
        let store = state.runtime_env().object_store(&store_url)?;
        let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        // The filters the scan itself evaluates (not decided by partition
        // values or file statistics): in the Parquet decoder, or above the
        // scan once they are seen to keep many rows ([`crate::pushdown`]).
        // One on the tenant column stays in the decoder, where each
        // condition sees only the rows the ones before it kept.
        let row_filters: Vec<&Expr> = filters
            .iter()
            .filter(|f| self.evaluated_on_rows(f))
            .collect();
        // `datafusion.execution.parquet.pushdown_filters` pushes every filter
        // down (the session's setting wins over the scan's).
        let forced = state.config_options().execution.parquet.pushdown_filters;
        let learn = !forced
            && !row_filters.is_empty()
            && !row_filters
                .iter()
                .any(|f| f.column_refs().iter().any(|c| c.name == TENANT_COLUMN));
        // Keyed by every filter of the scan, the decided ones too: the
        // tenant filter on files of one organization is one, so two
        // organizations never share what was learned from their rows.
        let pushdown_key = learn
            .then(|| {
                let texts: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
                crate::pushdown::key(self.table.log_store().root_url().as_str(), &texts)
            })
            .flatten();
        let push_down = pushdown_key.is_none_or(crate::pushdown::push_down);
        if !row_filters.is_empty() {
            crate::pushdown::count(push_down);
        }
        let mut options = state.table_options().parquet.clone();
        options.global.enable_page_index = true;
        options.global.bloom_filter_on_read = true;
        options.global.pushdown_filters = push_down;
        options.global.reorder_filters = true;
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        // The footer is read with room to spare (DataFusion's listing
        // tables do the same; a bare `ParquetSource` reads the last 8 bytes
        // first, then the footer: one request more per file). For a small
        // file this first read is the whole file, which the lake's store
        // keeps on S3/R2 (`logcache`).
        let metadata_size_hint = options
            .global
            .metadata_size_hint
            .unwrap_or(METADATA_SIZE_HINT);
        let source = ParquetSource::new(table_schema)
            .with_table_parquet_options(options)
            .with_metadata_size_hint(metadata_size_hint);
        let reader: Arc<dyn ParquetFileReaderFactory> =
            Arc::new(CachedParquetFileReaderFactory::new(store, metadata_cache));
        // A scan that pushes down a filter it may learn about measures
        // what the filter keeps (into its own metrics, which the readers
        // count into), reported when the query's plan is dropped.
        let reader: Arc<dyn ParquetFileReaderFactory> = match (pushdown_key, push_down) {
            (Some(key), true) => Arc::new(crate::pushdown::Measured::new(
                reader,
                key,
                source.metrics().clone(),
            )),
            _ => reader,
        };
        let source = source.with_parquet_file_reader_factory(reader);
        let rows = files.iter().try_fold(0usize, |acc, f| {
            match f.statistics.as_ref().map(|s| s.num_rows) {
                Some(Precision::Exact(n)) => Some(acc + n),
                _ => None,
            }
        });
        // The file columns, then the partition columns.
        let scan_schema = Schema::new(
            self.file_schema
                .fields()
                .iter()
                .chain(self.partition_fields.iter())
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut statistics = Statistics::new_unknown(&scan_schema);
        statistics.num_rows = rows.map_or(Precision::Absent, Precision::Exact);
        // Files sorted by a key are each their own partition, declared
        // sorted: DataFusion then merges them in order where a query needs
        // the order (a window or group-by per visitor) instead of sorting
        // all their rows. Otherwise files are spread over the partitions.
        let ordering = match self.sort_order(&kept) {
            Some(columns) => {
                let sort = columns
                    .iter()
                    .map(|c| {
                        Ok(PhysicalSortExpr::new(
                            Arc::new(PhysicalColumn::new_with_schema(c, &scan_schema)?),
                            SortOptions {
                                descending: false,
                                nulls_first: false,
                            },
                        ))
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                LexOrdering::new(sort)
            }
            None => None,
        };
        let groups = match ordering {
            Some(_) => files.into_iter().map(|f| FileGroup::new(vec![f])).collect(),
            None => balanced_groups(files, state.config().target_partitions()),
        };
        let scan_projection: Vec<usize> = projected.iter().map(|&i| self.scan_index[i]).collect();
        let config = FileScanConfigBuilder::new(store_url, Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(Some(scan_projection))?
            .with_limit(limit)
            .with_output_ordering(ordering.into_iter().collect())
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
