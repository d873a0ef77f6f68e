//! `crow serve --flight-listen ADDR`: the Arrow Flight SQL listener beside
//! the HTTP one ([`crow_query_api::flight`]), stopped with it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::serve::Only;

/// A running Flight SQL service: its stop signal and task.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The address of `server.flight_listen` (or `--flight-listen`), if set.
pub fn address(listen: &str, only: Option<Only>) -> Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().with_context(|| {
        format!("--flight-listen / server.flight_listen `{listen}` is not an address like 127.0.0.1:50051")
    })?;
    if only == Some(Only::Ingest) {
        anyhow::bail!(
            "--flight-listen / server.flight_listen needs the query API: not with --only ingest"
        );
    }
    Ok(Some(addr))
}

/// Bind and start the service (when an address is set and the API runs).
pub async fn start(
    cfg: &crow_schemas::config::Config,
    addr: Option<SocketAddr>,
    api: Option<&Arc<crow_query_api::ApiState>>,
) -> Result<Option<Running>> {
    let (Some(addr), Some(api)) = (addr, api) else {
        return Ok(None);
    };
    let server = &cfg.server;
    let tls = if server.flight_tls_cert.is_empty() {
        None
    } else {
        Some(
            crow_query_api::flight::tls_acceptor(&server.flight_tls_cert, &server.flight_tls_key)
                .map_err(anyhow::Error::msg)?,
        )
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.flight_listen)"))?;
    let local = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let api = api.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.changed().await;
        };
        if let Err(e) = crow_query_api::flight::serve(api, listener, tls, shutdown).await {
            tracing::error!(error = %e, "the Flight SQL service failed");
        }
    });
    tracing::info!(%local, "Arrow Flight SQL listening");
    eprintln!("crow serve: Arrow Flight SQL on {scheme}://{local}");
    Ok(Some(Running { stop, task }))
}

/// Stop the service: open streams get a few seconds to finish.
pub async fn stop(running: Option<Running>) {
    let Some(r) = running else { return };
    let _ = r.stop.send(true);
    let mut task = r.task;
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}
