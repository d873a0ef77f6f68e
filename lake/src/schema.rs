//! The lake's tables as a DataFusion schema that loads a table when a query
//! first names it.
//!
//! A [`crate::Lake::session`] used to load every table's snapshot before its
//! first query: all 29 tables, each a log listing and reads, whatever the
//! query read. On an object store each of those is a round trip, so a
//! `crow sql` over one table paid for all of them. [`LakeSchema`] loads a
//! table when the planner resolves its name, once per session: the session
//! then reads that snapshot for as long as it lives, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;

use crate::{AsOf, Error, Lake, Scan};

/// Every table of the lake, each as of its own point in time (latest by
/// default), loaded on first use. Tables registered into the session by
/// name take precedence over the lake's, as in any schema.
#[derive(Debug)]
pub(crate) struct LakeSchema {
    lake: Lake,
    default_as_of: AsOf,
    pins: HashMap<String, AsOf>,
    /// How the tables are read ([`Scan`]).
    scan: Scan,
    /// Providers loaded so far, one per table for the session's life.
    loaded: tokio::sync::Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// Tables registered into the session, and lake tables deregistered.
    registered: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    removed: Mutex<HashSet<String>>,
}

impl LakeSchema {
    pub(crate) fn new(
        lake: Lake,
        default_as_of: AsOf,
        pins: HashMap<String, AsOf>,
        scan: Scan,
    ) -> Self {
        Self {
            lake,
            default_as_of,
            pins,
            scan,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            removed: Mutex::new(HashSet::new()),
        }
    }

    fn is_lake_table(&self, name: &str) -> bool {
        crow_schemas::table(name).is_some() && !self.removed.lock().is_ok_and(|r| r.contains(name))
    }

    fn registered(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        self.registered
            .lock()
            .ok()
            .and_then(|r| r.get(name).cloned())
    }
}

fn poisoned() -> DataFusionError {
    DataFusionError::Internal("the session's table registry was poisoned by a panic".into())
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = crow_schemas::ALL_TABLES
            .iter()
            .map(|t| t.name)
            .filter(|n| self.is_lake_table(n))
            .map(str::to_string)
            .collect();
        if let Ok(r) = self.registered.lock() {
            names.extend(
                r.keys()
                    .filter(|k| !names.contains(k))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(t) = self.registered(name) {
            return Ok(Some(t));
        }
        if !self.is_lake_table(name) {
            return Ok(None);
        }
        let mut loaded = self.loaded.lock().await;
        if let Some(t) = loaded.get(name) {
            return Ok(Some(t.clone()));
        }
        let as_of = self.pins.get(name).copied().unwrap_or(self.default_as_of);
        // The lake's own error travels inside DataFusion's and comes out
        // whole (`From<DataFusionError> for Error`): "table `x` does not
        // exist … (run `crow init`)", not a planner message.
        let (provider, _) = self
            .lake
            .provider_as_of(name, as_of, self.scan)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        loaded.insert(name.to_string(), provider.clone());
        Ok(Some(provider))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if self.table_exist(&name) {
            return Err(DataFusionError::Plan(format!(
                "the table {name} already exists"
            )));
        }
        self.registered
            .lock()
            .map_err(|_| poisoned())?
            .insert(name, table);
        Ok(None)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(t) = self.registered.lock().map_err(|_| poisoned())?.remove(name) {
            return Ok(Some(t));
        }
        if !self.is_lake_table(name) {
            return Ok(None);
        }
        self.removed
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_string());
        // A table never loaded has no provider to hand back.
        Ok(self.loaded.try_lock().ok().and_then(|mut l| l.remove(name)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.registered(name).is_some() || self.is_lake_table(name)
    }
}

/// Unwraps a lake error that travelled inside a DataFusion one (a table
/// loaded while a query was planned); any other error stays DataFusion's.
pub(crate) fn lake_error_of(e: DataFusionError) -> Error {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<Error>() {
            Ok(lake) => *lake,
            Err(other) => Error::DataFusion(Box::new(DataFusionError::External(other))),
        },
        DataFusionError::Context(what, inner) => match lake_error_of(*inner) {
            Error::DataFusion(df) => {
                Error::DataFusion(Box::new(DataFusionError::Context(what, df)))
            }
            lake => lake,
        },
        other => Error::DataFusion(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use crow_schemas::config::LakeConfig;
    use datafusion::prelude::SessionContext;

    use crate::{Error, Lake};

    async fn count(ctx: &SessionContext, table: &str) -> i64 {
        let (_, batches) = crate::run_read_only(ctx, &format!("select count(*) as n from {table}"))
            .await
            .expect("count");
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("a count")
            .value(0)
    }

    #[tokio::test]
    async fn a_session_loads_the_tables_a_query_names_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("lake");
        let lake = Lake::open(&LakeConfig {
            uri: root.display().to_string(),
            ..LakeConfig::default()
        })
        .await
        .expect("open");
        lake.init().await.expect("init");
        // A table no query names is never loaded: its absence is no error.
        std::fs::remove_dir_all(root.join("daily_metrics")).expect("remove a table");
        let ctx = lake.session().await.expect("session");
        assert_eq!(count(&ctx, "organizations").await, 0);
        // A table once loaded is that snapshot for the session's life; a
        // new session reads the new version.
        crate::orgs::create(&lake, "Alpha", None, None)
            .await
            .expect("create an organization");
        assert_eq!(count(&ctx, "organizations").await, 0);
        let fresh = lake.session().await.expect("session");
        assert_eq!(count(&fresh, "organizations").await, 1);
        // The missing table, named: the lake's own error, through the
        // planner, not a DataFusion message.
        let err = crate::run_read_only(&fresh, "select count(*) from daily_metrics")
            .await
            .expect_err("a missing table");
        assert!(
            matches!(&err, Error::TableMissing { table, .. } if table == "daily_metrics"),
            "{err}"
        );
        // Deregistered and registered again: the session's own table wins.
        fresh.deregister_table("organizations").expect("deregister");
        let gone = crate::run_read_only(&fresh, "select * from organizations")
            .await
            .expect_err("a deregistered table");
        assert!(
            gone.to_string().contains("organizations") && gone.to_string().contains("not found"),
            "{gone}"
        );
        let empty = crate::empty_provider("organizations").expect("empty");
        fresh
            .register_table("organizations", empty)
            .expect("register");
        assert_eq!(count(&fresh, "organizations").await, 0);
    }
}
