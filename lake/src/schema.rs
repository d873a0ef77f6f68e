//! The lake's tables as a DataFusion schema that loads a table when a query
//! first names it.
//!
//! A [`crate::Lake::session`] used to load every table's snapshot before its
//! first query: some 25 tables, each a log listing and reads, whatever the
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
pub(crate) struct LakeSchema {
    lake: Lake,
    default_as_of: AsOf,
    pins: HashMap<String, AsOf>,
    /// Providers loaded so far, one per table for the session's life.
    loaded: tokio::sync::Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    /// Tables registered into the session, and lake tables deregistered.
    registered: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
    removed: Mutex<HashSet<String>>,
}

impl LakeSchema {
    pub(crate) fn new(lake: Lake, default_as_of: AsOf, pins: HashMap<String, AsOf>) -> Self {
        Self {
            lake,
            default_as_of,
            pins,
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

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("lake", &self.lake)
            .field("default_as_of", &self.default_as_of)
            .finish_non_exhaustive()
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
            .provider_as_of(name, as_of, Scan::Delta)
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
