//! Tenant-scoped DataFusion sessions: the isolation boundary of the API.
//!
//! A fresh [`SessionContext`] is built per request. Its only catalog is
//! `datafusion`, whose only schema `public` is a [`TenantSchema`]: each CROW
//! table name resolves to a *view* whose plan is the Delta table filtered to
//! `org_id = <the key's org>` with the table's secret columns removed. The
//! unfiltered Delta providers are never registered under any name, so no
//! SQL — joins, unions, CTEs, subqueries, `information_schema`, time travel —
//! can reach another organization's rows. No file-reading table functions
//! are registered and URL tables are off, so `SELECT * FROM 'file.parquet'`
//! and `read_parquet(...)` resolve to nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crow_lake::{AsOf, Lake};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{col, lit, SessionConfig, SessionContext};

/// Table functions an API query may call: none of them reads files.
pub const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// Tables whose rows only an admin (key or user) sees; others see them
/// empty.
pub const ADMIN_ONLY_TABLES: &[&str] = &[
    "users",
    "user_sessions",
    "user_tokens",
    "audit_log",
    "notifications",
    "a2a_tasks",
    "chats",
    "chat_messages",
    "saved_queries",
    "query_history",
];

/// A table's point in history for one query.
pub type Pins = HashMap<String, AsOf>;

/// The columns a tenant's view of `def` has, in order: all but its secret
/// ones (what `pg_catalog` and the like describe).
pub fn view_columns(
    def: &'static crow_schemas::TableDef,
) -> impl Iterator<Item = &'static crow_schemas::ColumnDef> {
    def.columns
        .iter()
        .filter(|c| !def.secret_columns.contains(&c.name))
}

/// The `public` schema of a tenant session: CROW's tables, org-filtered.
#[derive(Debug)]
pub struct TenantSchema {
    lake: Lake,
    org_id: String,
    pins: Pins,
    default_as_of: AsOf,
    loaded: tokio::sync::Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// Whether `api_keys` shows admin keys (only to an admin key).
    admin_keys_visible: std::sync::atomic::AtomicBool,
    /// The first storage failure while resolving a table (logged and
    /// answered as a server error, never shown to the client).
    pub failure: Mutex<Option<crow_lake::Error>>,
    /// The Delta version each resolved table's view reads (`None`: the
    /// table did not exist at the time asked for: an empty table). Taken
    /// from the very snapshot the view scans, so it is what a query planned
    /// in this session reads.
    read: Mutex<BTreeMap<String, Option<u64>>>,
}

impl TenantSchema {
    fn new(lake: Lake, org_id: String, default_as_of: AsOf, pins: Pins) -> Self {
        Self {
            lake,
            org_id,
            pins,
            default_as_of,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            admin_keys_visible: std::sync::atomic::AtomicBool::new(false),
            failure: Mutex::new(None),
            read: Mutex::new(BTreeMap::new()),
        }
    }

    /// The organization whose rows this session shows.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// Whether admin-only rows are visible ([`TenantSchema::show_admin_keys`]).
    pub fn admin(&self) -> bool {
        self.admin_keys_visible
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every table resolved so far and the Delta version its view reads.
    /// After a query is planned, these are the versions it reads: tables
    /// are resolved while planning, each once per session. `None` if the
    /// record was lost (a panic while it was held).
    pub fn versions_read(&self) -> Option<BTreeMap<String, Option<u64>>> {
        self.read.lock().ok().map(|m| m.clone())
    }

    /// Let `api_keys` show the organization's admin keys too. By default
    /// a session (of a read or export key) sees only read and export keys,
    /// so a read key cannot enumerate who administers the organization.
    /// Call before the first query.
    pub fn show_admin_keys(&self) {
        self.admin_keys_visible
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The org-filtered, secret-free view of table `name`.
    async fn view(&self, name: &str) -> crow_lake::Result<Arc<dyn TableProvider>> {
        let def = crow_schemas::table(name)
            .ok_or_else(|| crow_lake::Error::UnknownTable(name.to_string()))?;
        let as_of = self.pins.get(name).copied().unwrap_or(self.default_as_of);
        // A private context holds the raw provider only while the view's
        // plan is built; it is dropped before the query runs.
        let private = SessionContext::new();
        // Plain Parquet when the table allows it (`lake.plain_parquet_scan`):
        // the org filter below is applied above either scan alike.
        let version = self
            .lake
            .register_scan(&private, "raw", name, as_of, crow_lake::Scan::Auto)
            .await?;
        if let Ok(mut read) = self.read.lock() {
            read.insert(name.to_string(), version);
        }
        let columns: Vec<&str> = view_columns(def).map(|c| c.name).collect();
        let df = private
            .table("raw")
            .await?
            .filter(col("org_id").eq(lit(self.org_id.as_str())))?;
        let admin = self
            .admin_keys_visible
            .load(std::sync::atomic::Ordering::Relaxed);
        let df = if name == "api_keys" && !admin {
            df.filter(col("scope").not_eq(lit("admin")))?
        } else if ADMIN_ONLY_TABLES.contains(&name) && !admin {
            // Who the organization's people are, their sessions and the
            // audit trail: for admins (admin keys, admin and owner users).
            df.filter(lit(false))?
        } else {
            df
        };
        let df = df.select_columns(&columns)?;
        Ok(df.into_view())
    }
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        crow_schemas::ALL_TABLES
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if crow_schemas::table(name).is_none() {
            return Ok(None);
        }
        let mut loaded = self.loaded.lock().await;
        if let Some(t) = loaded.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.view(name).await {
            Ok(t) => {
                loaded.insert(name.to_string(), t.clone());
                Ok(Some(t))
            }
            Err(e) => {
                let msg = match (&e, self.pins.get(name)) {
                    // A pinned version that does not exist is the caller's
                    // mistake; say so.
                    (crow_lake::Error::Invalid(_), Some(AsOf::Version(v))) => {
                        format!("table `{name}` has no version {v}")
                    }
                    _ => format!("table `{name}` is unavailable"),
                };
                if let Ok(mut f) = self.failure.lock() {
                    if f.is_none() && !matches!(e, crow_lake::Error::Invalid(_)) {
                        *f = Some(e);
                    }
                }
                Err(DataFusionError::Plan(msg))
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        crow_schemas::table(name).is_some()
    }
}

/// Output cap of a text, binary or list function call in sessions built
/// without a configured one ([`tenant_context`]); the API's is
/// `api.max_function_output_mb`.
pub const DEFAULT_FUNCTION_CAP: usize = 64 * 1024 * 1024;

/// A session over `org_id`'s rows only.
pub fn tenant_context(
    lake: &Lake,
    runtime: Arc<RuntimeEnv>,
    org_id: &str,
    default_as_of: AsOf,
    pins: Pins,
    batch_size: usize,
) -> (SessionContext, Arc<TenantSchema>) {
    tenant_context_with(
        lake,
        runtime,
        org_id,
        default_as_of,
        pins,
        batch_size,
        DEFAULT_FUNCTION_CAP,
    )
}

/// A session over `org_id`'s rows only, whose text, binary and list
/// functions produce at most `function_cap` bytes per call
/// ([`crate::bounded`]).
pub fn tenant_context_with(
    lake: &Lake,
    runtime: Arc<RuntimeEnv>,
    org_id: &str,
    default_as_of: AsOf,
    pins: Pins,
    batch_size: usize,
    function_cap: usize,
) -> (SessionContext, Arc<TenantSchema>) {
    // `DATAFUSION_*` variables tune the engine (e.g.
    // `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true`); what isolation
    // needs is set after them.
    let mut config = SessionConfig::from_env()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring invalid DATAFUSION_* settings");
            SessionConfig::new()
        })
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema("datafusion", "public")
        .with_batch_size(batch_size)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    crow_lake::prefer_existing_sort(&mut config);
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features();
    builder = crow_lake::with_planner_rules(builder);
    if let Some(fns) = builder.table_functions() {
        fns.retain(|name, _| ALLOWED_TABLE_FUNCTIONS.contains(&name.as_str()));
    }
    crate::bounded::bound_functions(&mut builder, function_cap);
    let mut state = builder.build();
    // After type coercion: text `||` becomes a bounded function too.
    state.add_analyzer_rule(Arc::new(crate::concat_op::BoundStringConcat::new(
        function_cap,
    )));
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(crow_lake::vector::cosine_udf());
    let schema = Arc::new(TenantSchema::new(
        lake.clone(),
        org_id.to_string(),
        default_as_of,
        pins,
    ));
    let catalog = MemoryCatalogProvider::new();
    // Cannot fail for a memory catalog; a failure would leave the session
    // without tables, which only makes queries fail.
    let _ = catalog.register_schema("public", schema.clone());
    ctx.register_catalog("datafusion", Arc::new(catalog));
    (ctx, schema)
}
