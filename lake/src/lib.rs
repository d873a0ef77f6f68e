//! CROW's storage layer: every table is a Delta table under one lake root.
//!
//! The lake root is a local folder (default `./crow-data`) or an
//! S3-compatible prefix (`s3://bucket/prefix`: AWS S3, Cloudflare R2, MinIO,
//! …). This is the only crate that touches object storage.
//!
//! Invariants:
//! - **Commits are atomic and safe without a lock service.** Every commit is a
//!   conditional put of the next `_delta_log` entry (`If-None-Match: *` on S3
//!   and R2, create-new on a local folder); a writer that loses the race
//!   re-reads the log, checks for a logical conflict and retries. Concurrent
//!   blind appends from many processes all land.
//! - **Exactly once.** [`Lake::append_once`] records an application
//!   transaction (app id + version) in the same commit as the data, so a
//!   retried or replayed append with the same id lands once.
//! - **Windows are replaced exactly.** [`Lake::replace_where`] atomically
//!   removes the rows matching a predicate and adds new rows that all match
//!   it — the primitive behind idempotent jobs.
#![warn(missing_docs)]

pub mod audit;
pub mod backoff;
pub mod batch;
pub mod cluster;
pub mod coop;
pub mod counts;
mod error;
pub mod ids;
pub mod like;
pub mod logcache;
pub mod notify;
pub mod order;
pub mod orgs;
pub mod predicate;
pub mod products;
pub mod pushdown;
pub mod scan;
mod schema;
pub mod vector;
pub mod webhook;
pub mod window;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

pub use arrow;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use crow_schemas::config::LakeConfig;
use crow_schemas::TableDef;
pub use datafusion;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
pub use deltalake;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
pub use error::{Error, ErrorKind, Result};
use futures::{StreamExt, TryStreamExt};
pub use object_store;
use url::Url;

static COMMIT_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fewest retries of a blind append that lost a race for its version
/// number ([`Lake::append`]), whatever `lake.commit_retries` says.
const BLIND_APPEND_RETRIES: usize = 15;

/// The wait before a commit that lost a race runs again: 40 ms doubling to
/// 1.28 s, plus up to 50 ms so the writers that collided spread out.
const COMMIT_BACKOFF: backoff::Backoff =
    backoff::Backoff::new(Duration::from_millis(40), Duration::from_millis(1280))
        .with_jitter(backoff::Jitter::Add(Duration::from_millis(50)));

/// Operations this process retried after losing a commit race (for metrics).
pub fn commit_retries_total() -> u64 {
    COMMIT_RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Key under which a table's schema version is recorded in its Delta
/// configuration.
pub const SCHEMA_VERSION_KEY: &str = "crow.schema.version";

/// The Delta table property that sets how many commits apart the log is
/// checkpointed (delta-rs writes the checkpoint after the commit).
pub const CHECKPOINT_INTERVAL_KEY: &str = "delta.checkpointInterval";

/// How many commits apart a table's log is checkpointed. Reading a table
/// reads its last checkpoint and then every commit after it, one request
/// each on an object store. The unpartitioned tables — ledgers and
/// registries such as `job_runs`, `organizations`, `api_keys` — take many
/// small commits and are read by nearly every command: they checkpoint every
/// 10 commits, as Delta Lake's own default is, so a read replays at most 9
/// commits. The date-partitioned event and fact tables hold the most files,
/// and a checkpoint rewrites every live file's entry: they keep delta-rs's
/// 100, and `crow checkpoint` (the scheduler's nightly maintenance)
/// checkpoints their logs as well. (`crow optimize` compacts data files,
/// not the log.)
pub fn checkpoint_interval(def: &TableDef) -> u64 {
    if def.partition_by.is_empty() {
        10
    } else {
        100
    }
}

/// Where [`Lake::init`] records, under the lake root, that every table is
/// as this CROW needs it: `{"marker": 1, "tables": {name: schema version,
/// …}}` ([`Lake::prepare`] reads it).
pub const TABLES_MARKER: &str = "_crow/tables.json";

/// The content of [`TABLES_MARKER`] for this CROW's tables. `marker` is
/// raised when what `init` does to an existing table changes (not only its
/// columns), so lakes initialised before are checked again.
fn tables_marker() -> serde_json::Value {
    let tables: serde_json::Map<String, serde_json::Value> = crow_schemas::ALL_TABLES
        .iter()
        .map(|d| (d.name.to_string(), serde_json::json!(d.version)))
        .collect();
    serde_json::json!({"marker": 1, "tables": tables})
}

/// Size, shape and version of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// Current Delta version.
    pub version: u64,
    /// Active data files.
    pub files: usize,
    /// Rows, from the files' statistics.
    pub rows: u64,
    /// Bytes of the active data files.
    pub bytes: u64,
}

/// What an optimize did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OptimizeSummary {
    /// Small files rewritten.
    pub files_removed: u64,
    /// Compacted files written.
    pub files_added: u64,
    /// Table version after the optimize.
    pub version: u64,
}

/// A point in a table's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The latest version.
    Latest,
    /// A Delta version.
    Version(u64),
    /// The version current at a time.
    Timestamp(DateTime<Utc>),
}

/// How a registered table is scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// As plain Parquet ([`scan::PlainParquetTable`]) when
    /// `lake.plain_parquet_scan` is on and the table's protocol allows it,
    /// otherwise through delta-rs.
    Auto,
    /// Always through delta-rs's provider (the jobs: their sorts spill under
    /// a memory pool, measured on that scan).
    Delta,
}

/// One live data file of a table snapshot ([`Lake::live_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// Path relative to the table's root.
    pub path: String,
    /// Size in bytes.
    pub size: i64,
    /// When it was written (milliseconds since the epoch).
    pub modification_time: i64,
    /// Its deletion vector, when rows of it were deleted in place (a
    /// writer with deletion vectors on): the same file with other rows.
    pub deletion_vector: Option<String>,
    /// Partition column → value (None: null).
    pub partition_values: std::collections::BTreeMap<String, Option<String>>,
}

/// A lake: a root URI plus the storage options to reach it.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    display: String,
    options: HashMap<String, String>,
    commit_retries: usize,
    /// `lake.plain_parquet_scan`: whether [`Scan::Auto`] may read tables as
    /// plain Parquet.
    plain_parquet_scan: bool,
    /// Latest snapshots of the tables read through this lake (shared by its
    /// clones), brought up to date incrementally on every read.
    snapshots: Arc<tokio::sync::Mutex<HashMap<String, DeltaTable>>>,
    /// The object store of the lake's root, made on first use and shared by
    /// every table (and clone of the lake): one HTTP client and connection
    /// pool on S3/R2, and the commit files read once ([`logcache`]).
    store: Arc<std::sync::Mutex<Option<Arc<logcache::LogCache>>>>,
    /// Operations of this lake (and its clones) run again after losing a
    /// commit race; [`commit_retries_total`] counts the whole process's.
    retried: Arc<std::sync::atomic::AtomicU64>,
}

/// The storage options hold credentials: only their names are printed.
impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut option_names: Vec<&String> = self.options.keys().collect();
        option_names.sort();
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .field("option_names", &option_names)
            .field("commit_retries", &self.commit_retries)
            .finish_non_exhaustive()
    }
}

impl Lake {
    /// Open the lake described by `cfg`. A local folder is created if missing;
    /// nothing else is touched until a table is used.
    pub async fn open(cfg: &LakeConfig) -> Result<Lake> {
        deltalake::aws::register_handlers(None);
        let uri = cfg.uri.trim();
        let root = parse_root(uri).await?;
        let mut options = HashMap::new();
        if matches!(root.scheme(), "s3" | "s3a") {
            let s3 = &cfg.s3;
            let mut put = |k: &str, v: &str| {
                if !v.is_empty() {
                    options.insert(k.to_string(), v.to_string());
                }
            };
            put("AWS_ENDPOINT_URL", &s3.endpoint);
            put("AWS_REGION", &s3.region);
            put("AWS_ACCESS_KEY_ID", s3.access_key_id.expose());
            put("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.expose());
            if s3.allow_http {
                put("AWS_ALLOW_HTTP", "true");
            }
            put("aws_conditional_put", s3.conditional_put.as_str());
            if s3.path_style {
                put("aws_virtual_hosted_style_request", "false");
            }
            // Fill what the config left unset from the standard variables,
            // so one place (this map) decides.
            for key in [
                "AWS_ENDPOINT_URL",
                "AWS_REGION",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_ALLOW_HTTP",
            ] {
                if !options.contains_key(key) {
                    if let Ok(v) = std::env::var(key) {
                        if !v.is_empty() {
                            options.insert(key.to_string(), v);
                        }
                    }
                }
            }
            options
                .entry("AWS_REGION".into())
                .or_insert_with(|| "us-east-1".into());
        }
        for (k, v) in &cfg.options {
            options.insert(k.clone(), v.expose().to_string());
        }
        Ok(Lake {
            display: if root.scheme() == "file" {
                root.to_file_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| root.to_string())
            } else {
                root.to_string()
            },
            root,
            options,
            commit_retries: cfg.commit_retries as usize,
            plain_parquet_scan: cfg.plain_parquet_scan,
            snapshots: Arc::default(),
            store: Arc::default(),
            retried: Arc::default(),
        })
    }

    /// Operations this lake (and its clones) ran again after losing a
    /// commit race to another writer.
    pub fn commit_retries(&self) -> u64 {
        self.retried.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The lake root as given to people (a path for local lakes).
    pub fn uri(&self) -> &str {
        &self.display
    }

    /// Whether the lake is a local folder.
    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// The local folder of a local lake.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        if self.is_local() {
            self.root.to_file_path().ok()
        } else {
            None
        }
    }

    /// The storage options used for every table.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// URL of a table's folder.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        let def = def(name)?;
        self.root
            .join(&format!("{}/", def.name))
            .map_err(|e| Error::InvalidUri {
                uri: self.root.to_string(),
                reason: e.to_string(),
            })
    }

    fn builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(name)?;
        let store = self.root_store().map_err(|e| Error::delta(name, e))?;
        Ok(DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| Error::delta(name, e))?
            .with_storage_backend(store, url)
            .with_storage_options(self.options.clone()))
    }

    /// The lake root's object store, as delta-rs would make it for any
    /// table of the lake (its registered factory for the URL's scheme, with
    /// the lake's storage options), made once and kept.
    fn root_store(
        &self,
    ) -> std::result::Result<Arc<dyn object_store::ObjectStore>, DeltaTableError> {
        let mut slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(Arc::clone(s) as Arc<dyn object_store::ObjectStore>);
        }
        let scheme = Url::parse(&format!("{}://", self.root.scheme()))
            .map_err(|_| DeltaTableError::InvalidTableLocation(self.root.to_string()))?;
        let factory = deltalake::logstore::object_store_factories()
            .get(&scheme)
            .map(|f| Arc::clone(f.value()))
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(self.root.to_string()))?;
        let config = deltalake::logstore::StorageConfig::parse_options(self.options.clone())?;
        let (root, _prefix) = factory.parse_url_opts(&self.root, &config)?;
        let store = logcache::LogCache::new(root);
        // Small Parquet files are worth keeping only when a read is a
        // request over the network.
        let store = Arc::new(if self.is_local() {
            store
        } else {
            store.keeping_small_files()
        });
        *slot = Some(Arc::clone(&store));
        Ok(store)
    }

    /// Commit-file reads of this lake's tables answered from memory and
    /// sent to the store ([`logcache`]).
    pub fn log_reads(&self) -> (u64, u64) {
        let slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|s| s.counts()).unwrap_or_default()
    }

    /// Reads of small Parquet files answered from memory, and small files
    /// read whole from the store ([`logcache`]; both 0 on a local lake).
    pub fn small_file_reads(&self) -> (u64, u64) {
        let slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|s| s.file_counts()).unwrap_or_default()
    }

    /// Load a table at its latest version.
    pub async fn table(&self, name: &str) -> Result<DeltaTable> {
        self.table_as_of(name, AsOf::Latest).await
    }

    /// A table at its latest version, for reading (and for the flusher's
    /// appends). A long-running process (the API, the scheduler, the
    /// collector) keeps each table's snapshot and brings it up
    /// to date with the commits since it was last read — one listing of the
    /// log — instead of loading the snapshot and replaying the log again.
    /// The result is the same table state a fresh load gives.
    pub async fn table_for_read(&self, name: &str) -> Result<DeltaTable> {
        let cached = self.snapshots.lock().await.get(name).cloned();
        let table = match cached {
            Some(mut t) => match t.update_incremental(None).await {
                Ok(()) => t,
                Err(e) => {
                    tracing::debug!(table = name, error = %e, "snapshot update failed; loading afresh");
                    self.table(name).await?
                }
            },
            None => self.table(name).await?,
        };
        self.snapshots
            .lock()
            .await
            .insert(name.to_string(), table.clone());
        Ok(table)
    }

    /// Load a table as of a version or a time (time travel).
    pub async fn table_as_of(&self, name: &str, as_of: AsOf) -> Result<DeltaTable> {
        let b = self.builder(name)?;
        let b = match as_of {
            AsOf::Latest => b,
            AsOf::Version(v) => b.with_version(v),
            AsOf::Timestamp(t) => b.with_timestamp(t),
        };
        b.load().await.map_err(|e| match e {
            // No table there (an object store says "not a table"; a local
            // folder that does not exist, "invalid table location"): a lake
            // not made yet, or made by an older CROW before the table was
            // added. `crow init` creates it.
            DeltaTableError::NotATable(_) => Error::TableMissing {
                table: name.to_string(),
                uri: self.display.clone(),
            },
            DeltaTableError::KernelError(k)
                if k.to_string().starts_with("Invalid table location") =>
            {
                Error::TableMissing {
                    table: name.to_string(),
                    uri: self.display.clone(),
                }
            }
            e => Error::delta(name, e),
        })
    }

    /// Create every table that does not exist yet. Returns each table with
    /// `true` if this call created it. Running it again changes nothing.
    ///
    /// The tables are checked eight at a time (on S3/R2 each is a listing
    /// and a few reads), and once all are as this CROW needs them, the
    /// schema version of each is written to [`TABLES_MARKER`], which lets
    /// [`Lake::prepare`] skip the check.
    pub async fn init(&self) -> Result<Vec<(&'static str, bool)>> {
        use futures::{StreamExt, TryStreamExt};
        let out: Vec<(&'static str, bool)> = futures::stream::iter(crow_schemas::ALL_TABLES)
            .map(|def| async move { Ok::<_, Error>((def.name, self.create_table(def).await?)) })
            .buffered(8)
            .try_collect()
            .await?;
        let (store, path) = self.store_for(&self.url_of(TABLES_MARKER)?)?;
        object_store::ObjectStoreExt::put(
            store.as_ref(),
            &path,
            serde_json::to_vec(&tables_marker())?.into(),
        )
        .await?;
        Ok(out)
    }

    /// Make sure every table exists at this CROW's schema version, as
    /// [`Lake::init`] does, at the cost of one read when they do: the
    /// commands that write to the lake (jobs, keys, users, `crow serve`…)
    /// call this first. When [`TABLES_MARKER`] lists every table at the
    /// version this CROW writes, nothing else is read; otherwise (a new
    /// lake, a lake an older or newer CROW last initialised, a marker that
    /// cannot be read) the full [`Lake::init`] runs and writes it anew.
    ///
    /// A table removed by hand after that is not made again here: reading
    /// it says "table `x` does not exist … (run `crow init`)".
    pub async fn prepare(&self) -> Result<()> {
        let (store, path) = self.store_for(&self.url_of(TABLES_MARKER)?)?;
        let current = match object_store::ObjectStoreExt::get(store.as_ref(), &path).await {
            Ok(got) => got
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v == tables_marker()),
            Err(_) => false,
        };
        if !current {
            self.init().await?;
        }
        Ok(())
    }

    async fn create_table(&self, def: &TableDef) -> Result<bool> {
        let url = self.table_url(def.name)?;
        if url.scheme() == "file" {
            if let Ok(p) = url.to_file_path() {
                tokio::fs::create_dir_all(p).await?;
            }
        }
        // As `DeltaTable::try_from_url_with_storage_options`, on the lake's
        // store: a location with no table yet is one to create.
        let mut existing = self
            .builder(def.name)?
            .build()
            .map_err(|e| Error::delta(def.name, e))?;
        match existing.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => {}
            Err(e) => return Err(Error::delta(def.name, e)),
        }
        if existing.version().is_some() {
            self.evolve(def, existing).await?;
            return Ok(false);
        }
        let schema: StructType = def
            .schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e: arrow::error::ArrowError| Error::Arrow(e))?;
        let res = existing
            .create()
            .with_columns(schema.fields().cloned())
            .with_partition_columns(def.partition_by.iter().copied())
            .with_table_name(def.name)
            .with_comment(def.doc)
            .with_raise_if_key_not_exists(false)
            .with_configuration([
                (SCHEMA_VERSION_KEY, Some(def.version.to_string())),
                (
                    CHECKPOINT_INTERVAL_KEY,
                    Some(checkpoint_interval(def).to_string()),
                ),
            ])
            .with_save_mode(SaveMode::Ignore)
            .await;
        match res {
            Ok(_) => Ok(true),
            // Another process created it at the same moment: it exists now.
            Err(e) => {
                let err = Error::delta(def.name, e);
                if err.kind() == ErrorKind::Conflict {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Bring a table created by an earlier CROW up to its contract: the
    /// columns added since (always nullable, always at the end) are added
    /// to its Delta schema — rows written before read them as null, no data
    /// file is rewritten — and the schema version is recorded; a table with
    /// no checkpoint interval of its own gets CROW's
    /// ([`checkpoint_interval`]). A table that already has every column and
    /// an interval is left untouched (no commit).
    async fn evolve(&self, def: &TableDef, table: DeltaTable) -> Result<()> {
        let target: StructType = def
            .schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e: arrow::error::ArrowError| Error::Arrow(e))?;
        let snapshot = table.snapshot().map_err(|e| Error::delta(def.name, e))?;
        let current = snapshot.schema();
        let has_interval = snapshot
            .metadata()
            .configuration()
            .contains_key(CHECKPOINT_INTERVAL_KEY);
        let missing: Vec<_> = target
            .fields()
            .filter(|f| current.field(f.name()).is_none())
            .cloned()
            .collect();
        let mut properties = HashMap::new();
        if !has_interval {
            properties.insert(
                CHECKPOINT_INTERVAL_KEY.to_string(),
                checkpoint_interval(def).to_string(),
            );
        }
        if missing.is_empty() {
            if properties.is_empty() {
                return Ok(());
            }
            return self.set_properties(def.name, table, properties).await;
        }
        if let Some(f) = missing.iter().find(|f| !f.is_nullable()) {
            return Err(Error::Invalid(format!(
                "table {} lacks the required column {}: it cannot be added to existing rows",
                def.name,
                f.name()
            )));
        }
        tracing::info!(
            table = def.name,
            columns = ?missing.iter().map(|f| f.name().to_string()).collect::<Vec<_>>(),
            version = def.version,
            "adding the columns of the table's new schema version"
        );
        let commit = self.commit_props(&table);
        let added = table
            .add_columns()
            .with_fields(missing)
            .with_commit_properties(commit)
            .await;
        let table = match added {
            Ok(t) => t,
            Err(e) => {
                // Another process evolved it at the same moment.
                let again = self.table(def.name).await?;
                let snap = again.snapshot().map_err(|e| Error::delta(def.name, e))?;
                let schema = snap.schema();
                if target.fields().all(|f| schema.field(f.name()).is_some()) {
                    return Ok(());
                }
                return Err(Error::delta(def.name, e));
            }
        };
        properties.insert(SCHEMA_VERSION_KEY.to_string(), def.version.to_string());
        self.set_properties(def.name, table, properties).await
    }

    async fn set_properties(
        &self,
        name: &str,
        table: DeltaTable,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        let keys: Vec<String> = properties.keys().cloned().collect();
        let commit = self.commit_props(&table);
        let set = table
            .set_tbl_properties()
            .with_properties(properties)
            .with_raise_if_not_exists(false)
            .with_commit_properties(commit)
            .await;
        match set {
            Ok(_) => Ok(()),
            Err(e) => {
                // Another process set them at the same moment.
                let again = self.table(name).await?;
                let snap = again.snapshot().map_err(|e| Error::delta(name, e))?;
                let config = snap.metadata().configuration();
                if keys.iter().all(|k| config.contains_key(k)) {
                    return Ok(());
                }
                Err(Error::delta(name, e))
            }
        }
    }

    /// Version, files, rows and bytes of a table.
    pub async fn stats(&self, name: &str) -> Result<TableStats> {
        let t = self.table(name).await?;
        let snap = t.snapshot().map_err(|e| Error::delta(name, e))?;
        let files = snap.log_data();
        let (rows, bytes) = files.iter().fold((0u64, 0u64), |(r, b), f| {
            (
                r + f.num_records().unwrap_or(0) as u64,
                b + u64::try_from(f.size()).unwrap_or(0),
            )
        });
        Ok(TableStats {
            version: snap.version() as u64,
            files: files.num_files(),
            rows,
            bytes,
        })
    }

    /// The live data files of a loaded table's snapshot: a file's path
    /// (relative to the table), size, write time, deletion vector and
    /// partition values. What a reader of that snapshot reads: a file is
    /// never changed in place, so the same list means the same rows.
    pub fn live_files(table: &DeltaTable) -> Result<Vec<LiveFile>> {
        let name = table.log_store().root_url().to_string();
        let snap = table.snapshot().map_err(|e| Error::delta(&name, e))?;
        Ok(snap
            .log_data()
            .iter()
            .map(|view| LiveFile {
                path: view.path().to_string(),
                size: view.size(),
                modification_time: view.modification_time(),
                deletion_vector: view.deletion_vector_descriptor().map(|d| format!("{d:?}")),
                partition_values: view
                    .partition_values_map()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect())
    }

    /// How every write commits: up to `lake.commit_retries` retries after a
    /// lost race, and no clean-up of expired log files. delta-rs's clean-up
    /// after each commit lists the table's whole `_delta_log` (thousands of
    /// files, a request per thousand, on a table the collector commits to
    /// every few seconds) to find commits past `delta.logRetentionDuration`;
    /// [`Lake::checkpoint`] (`crow checkpoint`, nightly on the schedule) does
    /// it once instead, as Delta Lake does when it writes a checkpoint.
    ///
    /// Each commit records the version it was planned against
    /// (`readVersion`, as Delta Lake's own writers do): a commit whose read
    /// version is older than the version before it met other writers'
    /// commits on the way, checked them for conflicts and landed after them
    /// (`crow history` shows both).
    fn commit_props(&self, read: &DeltaTable) -> CommitProperties {
        self.commit_props_retrying(read, self.commit_retries)
    }

    /// [`Lake::commit_props`] with `retries` in place of
    /// `lake.commit_retries`.
    fn commit_props_retrying(&self, read: &DeltaTable, retries: usize) -> CommitProperties {
        let props = CommitProperties::default()
            .with_max_retries(retries)
            .with_cleanup_expired_logs(Some(false));
        match read.version() {
            Some(v) => props.with_metadata([("readVersion".to_string(), serde_json::json!(v))]),
            None => props,
        }
    }

    /// Append batches to a table (a blind append: never conflicts with other
    /// appends). Returns the committed version, or the current one when there
    /// was nothing to write.
    pub async fn append(&self, name: &str, batches: Vec<RecordBatch>) -> Result<u64> {
        self.write(name, non_empty(batches), None).await
    }

    /// Commit `batches`: an append, or with `replace` an overwrite of the rows
    /// matching that predicate. Retried when a concurrent writer wins.
    async fn write(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        replace: Option<&Expr>,
    ) -> Result<u64> {
        if batches.is_empty() {
            return self.table(name).await.map(|t| t.version().unwrap_or(0));
        }
        let batches = &batches;
        let replace = &replace.map(predicate::to_delta_sql).transpose()?;
        // A blind append loses a race only for its version number: Delta's
        // conflict rules let it through at the next one, and nothing it
        // wrote depends on what it read. Refusing it (with
        // `lake.commit_retries = 0`) would lose rows whose cause already
        // happened — an audit entry for a change that committed — so it is
        // retried at least `BLIND_APPEND_RETRIES` times whatever the
        // setting says.
        let retries = match replace {
            Some(_) => self.commit_retries,
            None => self.commit_retries.max(BLIND_APPEND_RETRIES),
        };
        self.with_retries_up_to(name, retries, || async move {
            let t = self.table(name).await?;
            let props = match replace {
                Some(_) => writer_properties(name),
                None => append_writer_properties(name),
            };
            let commit = self.commit_props_retrying(&t, retries);
            let mut w = t
                .write(batches.clone())
                .with_writer_properties(props)
                .with_commit_properties(commit);
            w = match replace {
                Some(p) => w
                    .with_save_mode(SaveMode::Overwrite)
                    .with_replace_where(p.clone()),
                None => w.with_save_mode(SaveMode::Append),
            };
            let t = w.await.map_err(|e| Error::delta(name, e))?;
            Ok(t.version().unwrap_or(0))
        })
        .await
    }

    /// The last version committed by application `app_id` to a table.
    pub async fn app_version(&self, name: &str, app_id: &str) -> Result<Option<i64>> {
        let t = self.table_for_read(name).await?;
        let snap = t.snapshot().map_err(|e| Error::delta(name, e))?;
        snap.transaction_version(t.log_store().as_ref(), app_id)
            .await
            .map_err(|e| Error::delta(name, e))
    }

    /// Append exactly once: commit the batches together with the application
    /// transaction (`app_id`, `version`), unless that application already
    /// committed `version` or later. Returns whether this call landed the
    /// batches.
    pub async fn append_once(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<bool> {
        let batches = &non_empty(batches);
        self.with_retries(name, || async move {
            // The kept snapshot brought up to date (a listing of the new
            // commits) instead of a fresh load per call: the collector's
            // flusher appends every few seconds for as long as it runs.
            let t = self.table_for_read(name).await?;
            let snap = t.snapshot().map_err(|e| Error::delta(name, e))?;
            let last = snap
                .transaction_version(t.log_store().as_ref(), app_id)
                .await
                .map_err(|e| Error::delta(name, e))?;
            if last.is_some_and(|l| l >= version) {
                return Ok(false);
            }
            let props = self
                .commit_props(&t)
                .with_application_transaction(Transaction::new(app_id, version));
            if batches.is_empty() {
                // Record the transaction even with no rows, so the sequence
                // advances (an empty WAL segment is still retired once).
                let empty = RecordBatch::new_empty(def(name)?.schema());
                t.write(vec![empty])
                    .with_save_mode(SaveMode::Append)
                    .with_commit_properties(props)
                    .await
                    .map_err(|e| Error::delta(name, e))?;
            } else {
                t.write(batches.clone())
                    .with_writer_properties(append_writer_properties(name))
                    .with_save_mode(SaveMode::Append)
                    .with_commit_properties(props)
                    .await
                    .map_err(|e| Error::delta(name, e))?;
            }
            Ok(true)
        })
        .await
    }

    /// Atomically replace the rows matching `predicate` (an expression over
    /// the table's columns, e.g. `col("session_date").gt_eq(date(d))`, see
    /// [`predicate`]) with `batches`. Every new row must match the
    /// predicate. With no batches, the matching rows are deleted.
    pub async fn replace_where(
        &self,
        name: &str,
        predicate: &Expr,
        batches: Vec<RecordBatch>,
    ) -> Result<u64> {
        let batches = non_empty(batches);
        if batches.is_empty() {
            self.delete_where(name, predicate).await?;
            return self.table(name).await.map(|t| t.version().unwrap_or(0));
        }
        self.write(name, batches, Some(predicate)).await
    }

    /// [`Lake::replace_where`], unless the rows matching `predicate` already
    /// are exactly `batches` (compared without the `ignore` columns, e.g. a
    /// run id or a write time): then nothing is committed, so recomputing a
    /// window that did not change leaves the table identical. Returns
    /// whether a commit was made.
    pub async fn replace_where_if_changed(
        &self,
        name: &str,
        predicate: &Expr,
        batches: Vec<RecordBatch>,
        ignore: &[&str],
    ) -> Result<bool> {
        let new_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let new = futures::stream::iter(batches.iter().cloned().map(Ok));
        if self
            .window_holds(name, predicate, new_rows, new, ignore)
            .await?
        {
            return Ok(false);
        }
        self.replace_where(name, predicate, batches).await?;
        Ok(true)
    }

    /// [`Lake::replace_where_if_changed`] for a window too large to hold in
    /// memory: its new rows are `rows`, a DataFusion plan (a scan of spooled
    /// files, say) that is run once to compare and once more to write, on
    /// its own session's runtime — so its sorts spill under that session's
    /// memory pool. `rows` must have the table's schema.
    pub async fn replace_where_if_changed_df(
        &self,
        name: &str,
        predicate: &Expr,
        rows: DataFrame,
        ignore: &[&str],
    ) -> Result<bool> {
        let new_rows = rows.clone().count().await?;
        let new = rows.clone().execute_stream().await?;
        if self
            .window_holds(name, predicate, new_rows, new, ignore)
            .await?
        {
            return Ok(false);
        }
        if new_rows == 0 {
            self.delete_where(name, predicate).await?;
            return Ok(true);
        }
        let (state, plan) = rows.into_parts();
        let session: Arc<dyn datafusion::catalog::Session> = Arc::new(state);
        let (plan, session) = (&plan, &session);
        let predicate = &predicate::to_delta_sql(predicate)?;
        self.with_retries(name, || async move {
            let t = self.table(name).await?;
            let commit = self.commit_props(&t);
            t.write(Vec::new())
                .with_input_plan(plan.clone())
                .with_session_state(session.clone())
                .with_writer_properties(writer_properties(name))
                .with_commit_properties(commit)
                .with_save_mode(SaveMode::Overwrite)
                .with_replace_where(predicate.clone())
                .await
                .map_err(|e| Error::delta(name, e))?;
            Ok(())
        })
        .await?;
        Ok(true)
    }

    /// Whether the rows matching `predicate` are exactly the `new_rows` rows
    /// of `new`, compared without the `ignore` columns.
    async fn window_holds<S>(
        &self,
        name: &str,
        predicate: &Expr,
        new_rows: usize,
        mut new: S,
        ignore: &[&str],
    ) -> Result<bool>
    where
        S: futures::Stream<
                Item = std::result::Result<RecordBatch, datafusion::error::DataFusionError>,
            > + Unpin,
    {
        let def = def(name)?;
        let ctx = new_context();
        self.register(&ctx, "t", name, AsOf::Latest).await?;
        let df = ctx.table("t").await?.filter(predicate.clone())?;
        let old = df.clone().count().await?;
        if old != new_rows {
            return Ok(false);
        }
        let columns: Vec<&str> = def
            .columns
            .iter()
            .map(|c| c.name)
            .filter(|c| !ignore.contains(c))
            .collect();
        // Rows compared by a hash of their canonical JSON, one batch at a
        // time, so a large window costs 32 bytes a row, not its text.
        let hash_rows = |batch: &RecordBatch, out: &mut Vec<[u8; 32]>| -> Result<()> {
            for mut r in batch::batches_to_json(std::slice::from_ref(batch))? {
                r.retain(|k, _| columns.contains(&k.as_str()));
                let text = serde_json::Value::Object(r).to_string();
                let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
                out.push(digest.into());
            }
            Ok(())
        };
        let mut current = Vec::with_capacity(old);
        let mut stream = df.execute_stream().await?;
        while let Some(b) = stream.try_next().await? {
            hash_rows(&b, &mut current)?;
        }
        let mut wanted = Vec::with_capacity(new_rows);
        while let Some(b) = new.try_next().await? {
            hash_rows(&b, &mut wanted)?;
        }
        current.sort_unstable();
        wanted.sort_unstable();
        Ok(current == wanted)
    }

    /// Delete the rows matching `predicate` (an expression over the table's
    /// columns, see [`predicate`]). Returns the number deleted.
    pub async fn delete_where(&self, name: &str, predicate: &Expr) -> Result<u64> {
        let predicate = &predicate::to_delta_sql(predicate)?;
        self.with_retries(name, || async move {
            let t = self.table(name).await?;
            let commit = self.commit_props(&t);
            let (_, m) = t
                .delete()
                .with_predicate(predicate.clone())
                .with_commit_properties(commit)
                .await
                .map_err(|e| Error::delta(name, e))?;
            Ok(m.num_deleted_rows.unwrap_or(0) as u64)
        })
        .await
    }

    /// Upsert: rows of `batches` whose `keys` match an existing row replace
    /// it; the others are inserted. Returns (inserted, updated).
    pub async fn merge(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        keys: &[&str],
    ) -> Result<(u64, u64)> {
        self.merge_if(name, batches, keys, None).await
    }

    /// [`Lake::merge`], updating a matched row only when `update_if` (an
    /// expression over `target.` and `source.` columns, e.g.
    /// `col("target.state").eq(lit("open"))`) holds for it: a compare-and-set
    /// on rows. The condition is checked against the table the commit
    /// lands on: a concurrent writer that rewrote the row makes this commit
    /// conflict, and the retry reads the row again.
    pub async fn merge_if(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        keys: &[&str],
        update_if: Option<&Expr>,
    ) -> Result<(u64, u64)> {
        let def = def(name)?;
        let batches = non_empty(batches);
        if batches.is_empty() {
            return Ok((0, 0));
        }
        if keys.is_empty() || keys.iter().any(|k| def.column(k).is_none()) {
            return Err(Error::Invalid(format!(
                "merge keys {keys:?} are not columns of {name}"
            )));
        }
        let predicate = keys
            .iter()
            .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (batches, predicate) = (&batches, &predicate);
        let update_if = &update_if.map(predicate::to_delta_sql).transpose()?;
        // `created_at` keeps its first value when a row is updated.
        let updated: Vec<&str> = def
            .columns
            .iter()
            .map(|c| c.name)
            .filter(|c| *c != "created_at")
            .collect();
        let updated = &updated;
        self.with_retries(name, || async move {
            let t = self.table(name).await?;
            let ctx = SessionContext::new();
            let source = ctx.read_batches(batches.clone())?;
            let commit = self.commit_props(&t);
            let (_, m) = t
                .merge(source, predicate.clone())
                .with_source_alias("source")
                .with_target_alias("target")
                .with_commit_properties(commit)
                .when_matched_update(|mut u| {
                    if let Some(cond) = update_if {
                        u = u.predicate(cond.clone());
                    }
                    for c in updated {
                        u = u.update(*c, format!("source.\"{c}\""));
                    }
                    u
                })
                .and_then(|m| {
                    m.when_not_matched_insert(|mut i| {
                        for c in def.columns {
                            i = i.set(c.name, format!("source.\"{}\"", c.name));
                        }
                        i
                    })
                })
                .map_err(|e| Error::delta(name, e))?
                .await
                .map_err(|e| Error::delta(name, e))?;
            Ok((
                m.num_target_rows_inserted as u64,
                m.num_target_rows_updated as u64,
            ))
        })
        .await
    }

    /// Run `op` again when it lost a race with a concurrent writer (up to
    /// `lake.commit_retries` times).
    async fn with_retries<T, F, Fut>(&self, name: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.with_retries_up_to(name, self.commit_retries, op).await
    }

    /// [`Lake::with_retries`], up to `retries` times.
    async fn with_retries_up_to<T, F, Fut>(
        &self,
        name: &str,
        retries: usize,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0usize;
        loop {
            match op().await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < retries => {
                    attempt += 1;
                    COMMIT_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.retried
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(table = name, attempt, error = %e, "commit conflict, retrying");
                    let retry = u32::try_from(attempt - 1).unwrap_or(u32::MAX);
                    tokio::time::sleep(COMMIT_BACKOFF.delay(retry)).await;
                }
                other => return other,
            }
        }
    }

    /// The commit history, newest first: version, time, operation and its
    /// metrics, as JSON objects.
    pub async fn history(&self, name: &str, limit: usize) -> Result<Vec<serde_json::Value>> {
        let t = self.table(name).await?;
        let latest = t.version().unwrap_or(0);
        let commits: Vec<_> = t
            .history(Some(limit))
            .try_collect()
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok(commits
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let metrics = c.info.get("operationMetrics").cloned().unwrap_or_default();
                let metric = |k: &str| metrics.get(k).cloned().unwrap_or(serde_json::Value::Null);
                serde_json::json!({
                    "version": latest.saturating_sub(i as u64),
                    "timestamp": c.timestamp.and_then(DateTime::<Utc>::from_timestamp_millis)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    "operation": c.operation,
                    "rows_added": metric("num_added_rows"),
                    "files_added": metric("num_added_files"),
                    "files_removed": metric("num_removed_files"),
                    // delta-rs records a commit's lost races (another
                    // writer's commit at the version it tried) only when
                    // there were some.
                    "retries": metrics.get("num_retries").cloned().unwrap_or(serde_json::json!(0)),
                    "read_version": c.read_version,
                    "parameters": c.operation_parameters,
                })
            })
            .collect())
    }

    /// Compact small files into larger ones; a table with a clustering key
    /// ([`cluster::cluster_keys`]) has each partition with new files
    /// rewritten sorted by it ([`cluster`]).
    pub async fn optimize(&self, name: &str) -> Result<OptimizeSummary> {
        if let Some(keys) = cluster::cluster_keys(name) {
            return self.cluster(name, keys).await;
        }
        let t = self.table(name).await?;
        let commit = self.commit_props(&t);
        let (t, m) = t
            .optimize()
            .with_type(OptimizeType::Compact)
            .with_target_size(NonZeroU64::new(128 * 1024 * 1024).unwrap_or(NonZeroU64::MIN))
            .with_writer_properties(writer_properties(name))
            .with_commit_properties(commit)
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok(OptimizeSummary {
            files_removed: m.num_files_removed,
            files_added: m.num_files_added,
            version: t.version().unwrap_or(0),
        })
    }

    /// Delete data files that no version within `retention_hours` needs
    /// (also files orphaned by failed writes). Returns the files deleted
    /// (or that would be, with `dry_run`), as paths in the table, sorted.
    ///
    /// delta-rs counts every expired tombstone of the log as a file to
    /// delete, even when an earlier vacuum deleted it already; a list
    /// people check before deleting must name only files that are there,
    /// so the candidates are checked against the store first.
    pub async fn vacuum(
        &self,
        name: &str,
        retention_hours: u64,
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let t = self.table(name).await?;
        let retention = chrono::Duration::hours(retention_hours.min(100_000) as i64);
        let (t, plan) = t
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_dry_run(true)
            .await
            .map_err(|e| Error::delta(name, e))?;
        let store = t.object_store();
        let checks = futures::stream::iter(plan.files_deleted.into_iter().map(|file| {
            let store = store.clone();
            async move {
                let path = object_store::path::Path::from(file.as_str());
                match object_store::ObjectStoreExt::head(store.as_ref(), &path).await {
                    Ok(_) => Ok(Some(file)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }))
        .buffer_unordered(16)
        .try_collect::<Vec<Option<String>>>()
        .await?;
        let mut present: Vec<String> = checks.into_iter().flatten().collect();
        present.sort();
        if dry_run || present.is_empty() {
            return Ok(present);
        }
        let commit = self.commit_props(&t);
        let (_, m) = t
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_commit_properties(commit)
            .await
            .map_err(|e| Error::delta(name, e))?;
        let deleted: std::collections::HashSet<String> = m.files_deleted.into_iter().collect();
        present.retain(|f| deleted.contains(f));
        Ok(present)
    }

    /// Write a checkpoint of the table's log at its current version, then
    /// delete the log files the checkpoint makes unneeded that are older than
    /// the table's `delta.logRetentionDuration` (30 days unless set; not when
    /// `delta.enableExpiredLogCleanup` is false). Commits leave this to here
    /// ([`Lake::commit_props`]).
    pub async fn checkpoint(&self, name: &str) -> Result<u64> {
        let t = self.table(name).await?;
        deltalake::checkpoints::create_checkpoint(&t, None)
            .await
            .map_err(|e| Error::delta(name, e))?;
        let cleanup = t
            .snapshot()
            .map(|s| {
                use deltalake::table::config::TablePropertiesExt;
                s.table_config().enable_expired_log_cleanup()
            })
            .unwrap_or(false);
        if cleanup {
            deltalake::checkpoints::cleanup_metadata(&t, None)
                .await
                .map_err(|e| Error::delta(name, e))?;
        }
        Ok(t.version().unwrap_or(0))
    }

    /// A DataFusion session with every table under its name, at its latest
    /// version. A table is loaded when a query first names it, once per
    /// session (see `schema.rs`): a query over one table reads one table's
    /// log, not the whole lake's.
    pub async fn session(&self) -> Result<SessionContext> {
        self.session_as_of(AsOf::Latest).await
    }

    /// A DataFusion session with every table as of a time (tables that did
    /// not exist then are empty), each loaded when first named.
    pub async fn session_as_of(&self, as_of: AsOf) -> Result<SessionContext> {
        self.query_session(as_of, &[], Scan::Delta).await
    }

    /// A DataFusion session like [`Lake::session`], with `config` (start
    /// from [`session_config`]) on `runtime`: a job gives it a memory pool,
    /// so its sorts spill to the runtime's disk manager instead of growing.
    pub async fn session_on(
        &self,
        config: SessionConfig,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<SessionContext> {
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udf(vector::cosine_udf());
        self.install_tables(&ctx, AsOf::Latest, HashMap::new(), Scan::Delta)?;
        Ok(ctx)
    }

    /// A DataFusion session with every table at its latest version, except
    /// the tables pinned to a version or time in `pins`. A pin past a
    /// table's latest version is refused here, before any query.
    pub async fn session_with(&self, pins: &[(String, AsOf)]) -> Result<SessionContext> {
        self.query_session(AsOf::Latest, pins, Scan::Delta).await
    }

    /// An analyst's session (`crow sql`): every table as of `as_of`, except
    /// the tables pinned in `pins`, read with `scan` — [`Scan::Auto`] reads
    /// them as the query API does (plain Parquet where the protocol allows).
    /// A pin past a table's latest version is refused here, before any
    /// query.
    pub async fn query_session(
        &self,
        as_of: AsOf,
        pins: &[(String, AsOf)],
        scan: Scan,
    ) -> Result<SessionContext> {
        for (t, as_of) in pins {
            def(t)?;
            if let AsOf::Version(v) = as_of {
                self.check_version(t, *v).await?;
            }
        }
        let ctx = new_context();
        self.install_tables(&ctx, as_of, pins.iter().cloned().collect(), scan)?;
        Ok(ctx)
    }

    /// Makes the lake's tables the default schema of `ctx`, each loaded
    /// when a query first names it ([`schema::LakeSchema`]).
    fn install_tables(
        &self,
        ctx: &SessionContext,
        as_of: AsOf,
        pins: HashMap<String, AsOf>,
        scan: Scan,
    ) -> Result<()> {
        let state = ctx.state();
        let names = &state.config().options().catalog;
        let catalog = ctx.catalog(&names.default_catalog).ok_or_else(|| {
            Error::Invalid(format!(
                "the session has no catalog `{}`",
                names.default_catalog
            ))
        })?;
        catalog.register_schema(
            &names.default_schema,
            Arc::new(schema::LakeSchema::new(self.clone(), as_of, pins, scan)),
        )?;
        Ok(())
    }

    /// Refuses version `v` of table `name` when it is past the latest: loading
    /// a version far beyond the log lists and probes without end.
    async fn check_version(&self, name: &str, v: u64) -> Result<()> {
        let latest = self.table_for_read(name).await?.version().unwrap_or(0);
        if v > latest {
            return Err(Error::Invalid(format!(
                "table `{name}` has no version {v} (latest is {latest})"
            )));
        }
        Ok(())
    }

    /// Register table `name` as `alias` in `ctx` as of a point in time. A
    /// time before the table existed gives an empty table. Returns the Delta
    /// version registered — the snapshot the registered provider reads —
    /// or `None` for that empty table. The table is read through delta-rs
    /// ([`Scan::Delta`]); see [`Lake::register_scan`].
    pub async fn register(
        &self,
        ctx: &SessionContext,
        alias: &str,
        name: &str,
        as_of: AsOf,
    ) -> Result<Option<u64>> {
        self.register_scan(ctx, alias, name, as_of, Scan::Delta)
            .await
    }

    /// The table provider of a loaded table: a [`scan::PlainParquetTable`]
    /// of its snapshot when `scan` is [`Scan::Auto`], `lake.plain_parquet_scan`
    /// is on and the snapshot's protocol allows it
    /// ([`scan::plain_scan_allowed`]); delta-rs's provider otherwise. Both
    /// read the same snapshot with the same schema.
    pub async fn provider_for(
        &self,
        table: &DeltaTable,
        scan: Scan,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let delta = table.table_provider().await?;
        if scan == Scan::Delta || !self.plain_parquet_scan {
            return Ok(delta);
        }
        match crate::scan::plain_scan_allowed(table) {
            Ok(()) => {
                let plain = crate::scan::PlainParquetTable::try_new(table, delta.schema())?;
                tracing::debug!(
                    table = %table.log_store().root_url(),
                    version = plain.version(),
                    files = plain.num_files(),
                    "plain Parquet scan"
                );
                Ok(Arc::new(plain))
            }
            Err(why) => {
                tracing::debug!(table = %table.log_store().root_url(), reason = %why, "read through delta-rs");
                Ok(delta)
            }
        }
    }

    /// [`Lake::register`] with a choice of scan.
    pub async fn register_scan(
        &self,
        ctx: &SessionContext,
        alias: &str,
        name: &str,
        as_of: AsOf,
        scan: Scan,
    ) -> Result<Option<u64>> {
        let (provider, version) = self.provider_as_of(name, as_of, scan).await?;
        ctx.register_table(alias, provider)?;
        Ok(version)
    }

    /// The provider of table `name` as of a point in time, and the Delta
    /// version it reads (`None`: a time before the table existed, an empty
    /// table).
    pub(crate) async fn provider_as_of(
        &self,
        name: &str,
        as_of: AsOf,
        scan: Scan,
    ) -> Result<(Arc<dyn datafusion::catalog::TableProvider>, Option<u64>)> {
        // A version is checked against the latest before anything loads it.
        if let AsOf::Version(v) = as_of {
            self.check_version(name, v).await?;
        }
        let loaded = match as_of {
            AsOf::Latest => self.table_for_read(name).await,
            _ => self.table_as_of(name, as_of).await,
        };
        Ok(match loaded {
            Ok(t) => (self.provider_for(&t, scan).await?, t.version()),
            Err(e) => match as_of {
                AsOf::Timestamp(ts) if self.created_after(name, ts).await? => {
                    (empty_provider(name)?, None)
                }
                AsOf::Version(v) => {
                    let latest = self.table(name).await?.version().unwrap_or(0);
                    return Err(Error::Invalid(format!(
                        "table `{name}` has no version {v} (latest is {latest}): {e}"
                    )));
                }
                _ => return Err(e),
            },
        })
    }

    /// Whether table `name`'s first commit is after `ts`.
    async fn created_after(&self, name: &str, ts: DateTime<Utc>) -> Result<bool> {
        let t = match self.table(name).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        };
        let latest = t.version().unwrap_or(0) as usize;
        let commits: Vec<_> = t
            .history(Some(latest + 1))
            .try_collect()
            .await
            .map_err(|e| Error::delta(name, e))?;
        Ok(commits
            .last()
            .and_then(|c| c.timestamp)
            .is_some_and(|first| first > ts.timestamp_millis()))
    }

    /// Run a read-only SQL query over the lake (DDL, DML and SET are refused).
    pub async fn sql(&self, query: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.sql_with(query, Vec::<datafusion::common::ScalarValue>::new())
            .await
    }

    /// [`Lake::sql`] with parameters: `$1`, `$2`, … in `query` take the
    /// values of `params`, in order, as typed values (never spliced into the
    /// text, so a value needs no quoting).
    /// Named values (`$org`) bind as pairs of name and value.
    pub async fn sql_with(
        &self,
        query: &str,
        params: impl Into<datafusion::common::ParamValues>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let ctx = self.session().await?;
        run_read_only_with(&ctx, query, params).await
    }

    /// An object store and path for `url` (a file:// or s3:// URL), with this
    /// lake's storage options (S3 endpoint, credentials). Used for files
    /// beside the tables, such as exports.
    pub fn store_for(
        &self,
        url: &Url,
    ) -> Result<(Box<dyn object_store::ObjectStore>, object_store::path::Path)> {
        Ok(object_store::parse_url_opts(url, self.options.clone())?)
    }

    /// The URL of `rel` (a relative path such as `_exports/x.parquet`) under
    /// the lake root.
    pub fn url_of(&self, rel: &str) -> Result<Url> {
        self.root.join(rel).map_err(|e| Error::InvalidUri {
            uri: format!("{}{rel}", self.root),
            reason: e.to_string(),
        })
    }

    /// A DataFrame over one table at its latest version.
    pub async fn dataframe(&self, name: &str) -> Result<DataFrame> {
        let ctx = new_context();
        self.register(&ctx, name, name, AsOf::Latest).await?;
        Ok(ctx.table(name).await?)
    }
}

/// The one input of a single-input operator, from the children
/// `ExecutionPlan::with_new_children` is given: an internal error naming
/// `operator` when there is not exactly one.
pub fn only_child(
    mut children: Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    operator: &str,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(input), true) => Ok(input),
        _ => Err(datafusion::error::DataFusionError::Internal(format!(
            "{operator} takes one input"
        ))),
    }
}

/// Run a read-only query in `ctx`, collecting the result.
pub async fn run_read_only(
    ctx: &SessionContext,
    query: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    run_read_only_with(ctx, query, Vec::<datafusion::common::ScalarValue>::new()).await
}

/// [`run_read_only`] with `$1`, `$2`, … bound to `params`.
pub async fn run_read_only_with(
    ctx: &SessionContext,
    query: &str,
    params: impl Into<datafusion::common::ParamValues>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    use datafusion::common::ParamValues;
    let opts = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let mut df = ctx.sql_with_options(query, opts).await?;
    let params = params.into();
    let none = match &params {
        ParamValues::List(l) => l.is_empty(),
        ParamValues::Map(m) => m.is_empty(),
    };
    if !none {
        df = df.with_param_values(params)?;
    }
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok((schema, batches))
}

/// Spill files and bytes of every operator of an executed plan (read
/// once its stream has ended: the sorts, aggregations and joins that went
/// past their memory pool's share).
pub fn plan_spills(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> (u64, u64) {
    let (mut count, mut bytes) = plan.metrics().map_or((0, 0), |m| {
        (
            m.spill_count().unwrap_or(0) as u64,
            m.spilled_bytes().unwrap_or(0) as u64,
        )
    });
    for child in plan.children() {
        let (c, b) = plan_spills(child);
        count += c;
        bytes += b;
    }
    (count, bytes)
}

/// The session configuration of every context the lake makes: the
/// information schema on, one partition per core.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    prefer_existing_sort(&mut config);
    config
}

/// Keep the order sorted files arrive in ([`scan`]: files `crow optimize`
/// wrote are declared sorted) by merging them where a window or group-by
/// needs it, rather than repartitioning and sorting again. It changes
/// nothing for a plan whose input declares no order. A
/// `DATAFUSION_OPTIMIZER_PREFER_EXISTING_SORT` setting wins.
pub fn prefer_existing_sort(config: &mut SessionConfig) {
    if std::env::var_os("DATAFUSION_OPTIMIZER_PREFER_EXISTING_SORT").is_none() {
        config.options_mut().optimizer.prefer_existing_sort = true;
    }
}

/// CROW's planner rules on top of DataFusion's: `LIKE` patterns matched by
/// their pieces ([`like`]), counts per partition value read from the file
/// list and partial counts by string view ([`counts`]) and scans of sorted
/// files ([`order`]), per-visitor `lag`, `lead`, `row_number` and
/// `first_value` run by run
/// ([`window`]), and joins that yield so an aborted query stops
/// ([`coop`]). Every session
/// that runs users' SQL is built with them.
pub fn with_planner_rules(
    builder: datafusion::execution::session_state::SessionStateBuilder,
) -> datafusion::execution::session_state::SessionStateBuilder {
    let builder = builder
        .with_analyzer_rule(Arc::new(like::PiecesLike::default()))
        .with_physical_optimizer_rule(Arc::new(counts::CountsFromStatistics))
        .with_physical_optimizer_rule(Arc::new(counts::CountsByView));
    // Last: it only wraps joins, so the other rules see plain plans.
    order::with_rules(builder)
        .with_physical_optimizer_rule(Arc::new(window::RunWindows))
        .with_physical_optimizer_rule(Arc::new(coop::CooperativeJoins))
}

fn new_context() -> SessionContext {
    let state = with_planner_rules(
        datafusion::execution::session_state::SessionStateBuilder::new()
            .with_config(session_config())
            .with_default_features(),
    )
    .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(vector::cosine_udf());
    ctx
}

fn empty_provider(name: &str) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let schema = def(name)?.schema();
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![]],
    )?))
}

fn def(name: &str) -> Result<&'static TableDef> {
    crow_schemas::table(name).ok_or_else(|| Error::UnknownTable(name.to_string()))
}

fn non_empty(batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}

async fn parse_root(uri: &str) -> Result<Url> {
    let invalid = |reason: String| Error::InvalidUri {
        uri: uri.to_string(),
        reason,
    };
    if uri.is_empty() {
        return Err(invalid("empty".into()));
    }
    let mut url = if uri.contains("://") {
        Url::parse(uri).map_err(|e| invalid(e.to_string()))?
    } else {
        let path = std::path::Path::new(uri);
        tokio::fs::create_dir_all(path).await?;
        let abs = tokio::fs::canonicalize(path).await?;
        Url::from_directory_path(&abs).map_err(|_| invalid("not an absolute folder path".into()))?
    };
    match url.scheme() {
        "file" => {
            let p = url
                .to_file_path()
                .map_err(|_| invalid("not a local path".into()))?;
            tokio::fs::create_dir_all(&p).await?;
        }
        "s3" | "s3a" | "memory" => {
            if url.scheme() != "memory" && url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(
                    "an s3 URI needs a bucket: s3://bucket/prefix".into(),
                ));
            }
        }
        other => return Err(invalid(format!("unsupported scheme `{other}`"))),
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// JSON payload columns: written without statistics or dictionaries.
pub const PAYLOAD_COLUMNS: &[&str] = &[
    "properties",
    "traits",
    "context",
    "integrations",
    "payload",
    "metrics",
    "observations",
    "timeline",
    "evidence",
];

/// How CROW's Parquet files are written, chosen by measurement on the
/// 10 M-event generator (BENCHMARKS.md, "Storage"): ZSTD level 3 instead of
/// Snappy; dictionaries on every column, the JSON payload columns
/// ([`PAYLOAD_COLUMNS`]) included (they repeat heavily across a site's
/// events), but no statistics for those (no query prunes on their min/max);
/// timestamps delta-encoded instead of dictionary-encoded (they are nearly
/// sorted and nearly unique). Together about a third of the bytes of Snappy
/// without payload dictionaries. These are the settings at rest: appends to
/// a clustered table use [`append_writer_properties`] (Snappy) instead.
pub fn writer_properties(table: &str) -> parquet::file::properties::WriterProperties {
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_created_by(format!("crow {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default(),
        ));
    if let Some(def) = crow_schemas::table(table) {
        for c in def.columns {
            let path = ColumnPath::from(c.name);
            if PAYLOAD_COLUMNS.contains(&c.name) {
                b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
            } else if c.ty == crow_schemas::ColumnType::Timestamp {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
        }
    }
    b.build()
}

/// How a table's newly appended files are written. `raw_web_events` — the
/// collector's flush every few seconds, `crow import`, the generator — is
/// rewritten whole by the next `optimize` (its days are clustered, see
/// [`cluster::cluster_keys`]), so its appends are Snappy-compressed: cheaper
/// to write and to read than ZSTD for the hours until that rewrite, and still
/// about half the bytes of the former files thanks to the dictionaries
/// (BENCHMARKS.md, "Storage"). Every other table is written as at rest
/// ([`writer_properties`]): nothing is sure to rewrite its files.
pub fn append_writer_properties(table: &str) -> parquet::file::properties::WriterProperties {
    let at_rest = writer_properties(table);
    if cluster::cluster_keys(table).is_none() {
        return at_rest;
    }
    at_rest
        .into_builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build()
}

/// ZSTD level of CROW's Parquet files (level 6 saved 3 % more bytes than 3
/// for a slower write; BENCHMARKS.md).
const ZSTD_LEVEL: i32 = 3;

/// Helpers of the planner rules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// `sql` over the table `t` holding `parts` (one `Vec` per input
    /// partition), in a session built from `builder`: the physical plan
    /// (indented) and the result as a text table.
    pub async fn answer(
        builder: SessionStateBuilder,
        parts: Vec<Vec<RecordBatch>>,
        sql: &str,
    ) -> (String, String) {
        let ctx = SessionContext::new_with_state(builder.build());
        let table = MemTable::try_new(parts[0][0].schema(), parts).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let df = ctx.sql(sql).await.expect("plan");
        let plan = df.clone().create_physical_plan().await.expect("physical");
        let plan = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        let rows = df.collect().await.expect("rows");
        let rows = arrow::util::pretty::pretty_format_batches(&rows)
            .expect("format")
            .to_string();
        (rows, plan)
    }
}
