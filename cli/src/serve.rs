//! `crow serve`: the collector on one listener, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use crow_ingest::Collector;
use crow_lake::Lake;
use crow_schemas::config::Config;

pub async fn run(
    lake: Lake,
    mut cfg: Config,
    listen: Option<String>,
    wal_dir: Option<PathBuf>,
) -> Result<()> {
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    let addr: SocketAddr = cfg.server.listen.parse().with_context(|| {
        format!(
            "--listen `{}` is not an address like 127.0.0.1:8080",
            cfg.server.listen
        )
    })?;
    lake.init().await.context("preparing the lake")?;
    let wal_dir = wal_dir.unwrap_or_else(|| crow_ingest::service::wal_dir(&cfg.ingest, &lake));
    let collector = Collector::start(lake.clone(), cfg.ingest.clone(), wal_dir.clone())
        .await
        .with_context(|| format!("starting the collector (WAL in {})", wal_dir.display()))?;
    let app = collector.router.clone();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, lake = lake.uri(), wal = %wal_dir.display(), "crow serve listening");
    eprintln!("crow serve listening on http://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("server error")?;
    tracing::info!("shutting down: flushing the WAL");
    collector.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
