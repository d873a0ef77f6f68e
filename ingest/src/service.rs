//! Starting and stopping the collector: WAL + flusher + routes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crow_lake::Lake;
use crow_schemas::config::IngestConfig;

use crate::flush::Flusher;
use crate::metrics::Metrics;
use crate::server::{router, IngestState};
use crate::wal::{Wal, WalOptions};

/// A running collector (without its listener: [`Collector::router`] is
/// mounted by `crow serve`).
pub struct Collector {
    /// The collector's routes.
    pub router: axum::Router,
    /// The WAL.
    pub wal: Wal,
    /// Telemetry.
    pub metrics: Arc<Metrics>,
    flusher: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// The WAL folder: `cfg.wal_dir`, else `<lake folder>/_wal` for a local lake,
/// else `./crow-wal`.
pub fn wal_dir(cfg: &IngestConfig, lake: &Lake) -> PathBuf {
    if !cfg.wal_dir.is_empty() {
        return PathBuf::from(&cfg.wal_dir);
    }
    match lake.local_path() {
        Some(p) => p.join("_wal"),
        None => PathBuf::from("crow-wal"),
    }
}

/// The salt IPs are hashed with: `ingest.ip_salt`, or the one kept in the
/// WAL folder (made on first use), so hashes stay comparable across
/// restarts and with `crow import`.
pub fn ip_salt(cfg: &IngestConfig, wal_dir: &Path) -> crate::Result<String> {
    if cfg.ip_salt.is_empty() {
        Ok(load_or_create_salt(wal_dir)?)
    } else {
        Ok(cfg.ip_salt.expose().to_string())
    }
}

impl Collector {
    /// Open the WAL (recovering what an earlier run left), start the flusher
    /// and build the routes.
    pub async fn start(
        lake: Lake,
        cfg: IngestConfig,
        wal_dir: PathBuf,
    ) -> crate::Result<Collector> {
        let ip_salt = ip_salt(&cfg, &wal_dir)?;
        let collector_id =
            load_or_create(&wal_dir, "collector-id", || crow_lake::ids::new_id("col"))?;
        let interval = Duration::from_millis(cfg.flush_interval_ms.max(10));
        let wal = Wal::open(WalOptions {
            dir: wal_dir,
            seal_interval: interval,
            seal_rows: cfg.flush_max_rows,
            seal_bytes: 64 * 1024 * 1024,
            max_pending_bytes: cfg.max_pending_bytes,
            queue: 4096,
        })?;
        let metrics = Arc::new(Metrics::default());
        let flusher = Flusher::new(
            wal.clone(),
            lake.clone(),
            &collector_id,
            metrics.clone(),
            interval,
        );
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(flusher.run(rx));
        let state = IngestState::new(wal.clone(), metrics.clone(), cfg, ip_salt, lake);
        tracing::info!(collector_id, wal = %wal.dir().display(), "collector started");
        Ok(Collector {
            router: router(state),
            wal,
            metrics,
            flusher: handle,
            shutdown,
        })
    }

    /// Register the collector's metrics (its own and its WAL's) into
    /// `crow serve`'s registry.
    pub fn register_metrics(&self, registry: &mut crow_schemas::metrics::Registry) {
        self.metrics.register(registry, self.wal.stats());
    }

    /// Serve the collector's routes on a free loopback port (for the demo and
    /// the benchmarks, which drive it over real HTTP from the same process).
    pub async fn serve_on_loopback(
        &self,
    ) -> crate::Result<(
        std::net::SocketAddr,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = self.router.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        Ok((addr, server))
    }

    /// Seal the active segment, commit everything sealed, stop the flusher.
    pub async fn shutdown(self) {
        if let Err(e) = self.wal.seal_now().await {
            tracing::warn!(error = %e, "sealing the WAL at shutdown failed; it is recovered on restart");
        }
        let _ = self.shutdown.send(true);
        let _ = self.flusher.await;
    }
}

fn load_or_create(
    dir: &std::path::Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let v = make();
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, &v)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(v)
        }
    }
}

fn load_or_create_salt(dir: &std::path::Path) -> std::io::Result<String> {
    load_or_create(dir, "ip-salt", || crow_lake::ids::new_secret("salt"))
}
