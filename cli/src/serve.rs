//! `crow serve`: the collector and the query API on one listener (or one of
//! them with `--only`), with graceful shutdown; and the job scheduler
//! (unless `--only api` or `schedule.enabled = false`), on its own runtime
//! so jobs never compete with request handling for the HTTP runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use crow_ingest::Collector;
use crow_lake::Lake;
use crow_schemas::config::Config;

/// Which part of the server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The query API (`/api/v1/…`) only.
    Api,
    /// The collector only.
    Ingest,
}

pub async fn run(
    lake: Lake,
    mut cfg: Config,
    listen: Option<String>,
    wal_dir: Option<PathBuf>,
    only: Option<Only>,
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
    let collector = if only == Some(Only::Api) {
        None
    } else {
        Some(
            Collector::start(lake.clone(), cfg.ingest.clone(), wal_dir.clone())
                .await
                .with_context(|| {
                    format!("starting the collector (WAL in {})", wal_dir.display())
                })?,
        )
    };
    let api = if only == Some(Only::Ingest) {
        None
    } else {
        Some(
            crow_query_api::ApiState::new(lake.clone(), cfg.api.clone())
                .context("starting the query API")?,
        )
    };
    let app = match (&collector, &api) {
        (Some(c), Some(a)) => c
            .router
            .clone()
            .merge(crow_query_api::router(a.clone()))
            .layer(axum::middleware::from_fn_with_state(
                a.metrics.clone(),
                append_api_metrics,
            )),
        (Some(c), None) => c.router.clone(),
        (None, Some(a)) => {
            let m = a.metrics.clone();
            crow_query_api::router(a.clone())
                .route("/healthz", axum::routing::get(|| async { "ok" }))
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = m.clone();
                        async move { m.render() }
                    }),
                )
        }
        (None, None) => anyhow::bail!("nothing to serve"),
    };
    let scheduler = if only != Some(Only::Api) && cfg.schedule.enabled {
        Some(start_scheduler(lake.clone(), cfg.clone())?)
    } else {
        tracing::info!("scheduler off (--only api or schedule.enabled = false)");
        None
    };
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
    if let Some((stop, thread)) = scheduler {
        tracing::info!("shutting down: stopping the scheduler (a running job is finished first)");
        let _ = stop.send(true);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    if let Some(c) = collector {
        tracing::info!("shutting down: flushing the WAL");
        c.shutdown().await;
    }
    Ok(())
}

/// Start the scheduler on a thread with its own runtime; returns its stop
/// signal and thread.
fn start_scheduler(
    lake: Lake,
    cfg: Config,
) -> Result<(
    tokio::sync::watch::Sender<bool>,
    std::thread::JoinHandle<()>,
)> {
    let scheduler =
        crow_jobs::scheduler::Scheduler::new(lake, cfg).context("starting the scheduler")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("crow-jobs")
        .enable_all()
        .build()
        .context("starting the scheduler's runtime")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("crow-scheduler".into())
        .spawn(move || runtime.block_on(scheduler.run(stopped)))
        .context("starting the scheduler thread")?;
    Ok((stop, thread))
}

/// `/metrics` of the combined server: the collector's metrics followed by
/// the API's.
async fn append_api_metrics(
    axum::extract::State(m): axum::extract::State<
        std::sync::Arc<crow_query_api::metrics::ApiMetrics>,
    >,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().path() != "/metrics" {
        return next.run(req).await;
    }
    let r = next.run(req).await;
    let (mut parts, body) = r.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut text = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    text.push_str(&m.render());
    axum::response::Response::from_parts(parts, axum::body::Body::from(text))
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
