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
use crow_schemas::metrics::{self, Registry};

/// Which part of the server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The query API (`/api/v1/…`) only.
    Api,
    /// The collector only.
    Ingest,
}

/// `--flight-listen` and `--pg-listen`, when given (they override
/// `server.flight_listen` and `server.pg_listen`).
pub struct Protocols {
    pub flight_listen: Option<String>,
    pub pg_listen: Option<String>,
}

impl Protocols {
    /// Override the configured addresses with the flags given (`listen`
    /// is `--listen`).
    fn apply(self, cfg: &mut Config, listen: Option<String>) {
        if let Some(l) = listen {
            cfg.server.listen = l;
        }
        if let Some(l) = self.flight_listen {
            cfg.server.flight_listen = l;
        }
        if let Some(l) = self.pg_listen {
            cfg.server.pg_listen = l;
        }
    }
}

pub async fn run(
    lake: Lake,
    mut cfg: Config,
    listen: Option<String>,
    wal_dir: Option<PathBuf>,
    only: Option<Only>,
    protocols: Protocols,
) -> Result<()> {
    protocols.apply(&mut cfg, listen);
    let addr: SocketAddr = cfg.server.listen.parse().with_context(|| {
        format!(
            "--listen `{}` is not an address like 127.0.0.1:8080",
            cfg.server.listen
        )
    })?;
    let flight_addr = crate::flight::address(&cfg.server.flight_listen, only)?;
    lake.prepare().await.context("preparing the lake")?;
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
        Some(query_api(&lake, &cfg)?)
    };
    let conns = std::sync::Arc::new(crate::http::ConnStats::default());
    let app = app(&cfg, &lake, collector.as_ref(), api.as_ref(), &conns)?;
    let scheduler = if only != Some(Only::Api) && cfg.schedule.enabled {
        Some(start_scheduler(lake.clone(), cfg.clone())?)
    } else {
        tracing::info!("scheduler off (--only api or schedule.enabled = false)");
        None
    };
    let analyst = Analyst::start(&cfg, flight_addr, api.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, lake = lake.uri(), wal = %wal_dir.display(), "crow serve listening");
    eprintln!("crow serve listening on http://{local}");
    crate::http::serve(
        listener,
        app,
        crate::http::Limits {
            max_connections: usize::try_from(cfg.server.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: std::time::Duration::from_secs(
                cfg.server.header_read_timeout_seconds,
            ),
        },
        conns,
        shutdown_signal(),
    )
    .await;
    analyst.stop().await;
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

/// What `crow serve` answers: the collector's routes and/or the query
/// API's (its request bodies bounded; alone, with its own `/healthz`),
/// and `/metrics` behind the metrics token.
fn app(
    cfg: &Config,
    lake: &Lake,
    collector: Option<&Collector>,
    api: Option<&std::sync::Arc<crow_query_api::ApiState>>,
    conns: &std::sync::Arc<crate::http::ConnStats>,
) -> Result<axum::Router> {
    let body = crow_query_api::BodyLimits {
        max_bytes: crow_query_api::api_body_limit(&cfg.api),
        read_timeout: std::time::Duration::from_secs(cfg.server.body_read_timeout_seconds),
    };
    let app = match (collector, api) {
        (Some(c), Some(a)) => {
            c.router
                .clone()
                .merge(crow_query_api::router(a.clone()).layer(
                    axum::middleware::from_fn_with_state(body, crow_query_api::bounded_body),
                ))
        }
        (Some(c), None) => c.router.clone(),
        (None, Some(a)) => crow_query_api::router(a.clone())
            .layer(axum::middleware::from_fn_with_state(
                body,
                crow_query_api::bounded_body,
            ))
            .route("/healthz", axum::routing::get(|| async { "ok" })),
        (None, None) => anyhow::bail!("nothing to serve"),
    };
    let registry = metrics_registry(lake, collector, api.map(std::sync::Arc::as_ref), conns);
    Ok(app
        .route(
            "/metrics",
            axum::routing::get(move || metrics(registry.clone())),
        )
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(MetricsAccess {
                token: cfg.server.metrics_token.clone(),
            }),
            guard_metrics,
        )))
}

/// The query API's state, with the configured AI provider for ask (or,
/// when it cannot be made, one that answers 502 with the reason: the
/// collector, SQL and the jobs do not depend on it).
fn query_api(lake: &Lake, cfg: &Config) -> Result<std::sync::Arc<crow_query_api::ApiState>> {
    let api = crow_query_api::ApiState::new(lake.clone(), cfg.api.clone())
        .context("starting the query API")?;
    api.set_prices(crow_jobs::billing::Prices::from_config(&cfg.billing)?);
    match crow_jobs::ai::embed::from_config(&cfg.ai.embeddings) {
        Ok(e) => api.set_embedder(e),
        // Search then answers with the offline embedder's vectors only.
        Err(e) => tracing::warn!(error = %e, "search has no embedding provider"),
    }
    match crow_jobs::ai::from_config(&cfg.ai) {
        Ok(p) => api.set_ai(p),
        Err(e) => {
            // The collector, SQL and the jobs' own failures don't depend
            // on it: ask answers 502 with the reason instead.
            tracing::warn!(error = %e, "ask has no AI provider");
            api.set_ai(std::sync::Arc::new(crow_query_api::ask::Unavailable(
                e.to_string(),
            )));
        }
    }
    Ok(api)
}

/// The analysts' protocols beside HTTP, each off unless configured: Arrow
/// Flight SQL and the Postgres wire, both over the query API's state.
struct Analyst {
    flight: Option<crate::flight::Running>,
    pg: Option<tokio::task::JoinHandle<()>>,
}

impl Analyst {
    async fn start(
        cfg: &Config,
        flight_addr: Option<SocketAddr>,
        api: Option<&std::sync::Arc<crow_query_api::ApiState>>,
    ) -> Result<Analyst> {
        let flight = crate::flight::start(cfg, flight_addr, api).await?;
        let pg = match api {
            Some(a) => start_pg(cfg, a).await?,
            None if !cfg.server.pg_listen.is_empty() => {
                anyhow::bail!(
                    "--pg-listen (server.pg_listen) needs the query API: not with --only ingest"
                )
            }
            None => None,
        };
        Ok(Analyst { flight, pg })
    }

    async fn stop(self) {
        crate::flight::stop(self.flight).await;
        if let Some(pg) = self.pg {
            pg.abort();
        }
    }
}

/// Start the Postgres-wire listener (`server.pg_listen`), if configured.
async fn start_pg(
    cfg: &Config,
    api: &std::sync::Arc<crow_query_api::ApiState>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.server.pg_listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = cfg.server.pg_listen.parse().with_context(|| {
        format!(
            "--pg-listen `{}` is not an address like 127.0.0.1:5432",
            cfg.server.pg_listen
        )
    })?;
    let tls = if cfg.server.pg_tls_cert.is_empty() {
        None
    } else {
        Some(
            crow_query_api::pg::tls_acceptor(&cfg.server.pg_tls_cert, &cfg.server.pg_tls_key)
                .map_err(anyhow::Error::msg)?,
        )
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.pg_listen)"))?;
    let local = listener.local_addr()?;
    let secure = if tls.is_some() {
        "TLS"
    } else {
        "no TLS: loopback clients only"
    };
    tracing::info!(%local, secure, "Postgres wire listening");
    eprintln!("crow serve Postgres wire on postgresql://{local} ({secure})");
    let max = usize::try_from(cfg.server.max_connections).unwrap_or(usize::MAX);
    Ok(Some(tokio::spawn(crow_query_api::pg::serve(
        listener,
        api.clone(),
        tls,
        max,
        std::future::pending(),
    ))))
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

/// The one Prometheus registry of this server: the lake's (commit cache,
/// commit retries: whatever `--only` runs), the collector's metrics (if it runs), then the API's (if it runs), then
/// the connections'.
fn metrics_registry(
    lake: &Lake,
    collector: Option<&Collector>,
    api: Option<&crow_query_api::ApiState>,
    conns: &crate::http::ConnStats,
) -> std::sync::Arc<Registry> {
    let mut registry = Registry::default();
    // The clones share the lake's one store, so they read what every part
    // of this server (collector, API, scheduler) read through it.
    let hits = lake.clone();
    metrics::register(
        &mut registry,
        "crow_lake_commit_cache_hits_total",
        "Delta commit files answered from the lake's commit cache instead of the store.",
        metrics::Reading::counter(move || hits.log_reads().0),
    );
    let misses = lake.clone();
    metrics::register(
        &mut registry,
        "crow_lake_commit_cache_misses_total",
        "Delta commit files read from the store (and kept, if they fit).",
        metrics::Reading::counter(move || misses.log_reads().1),
    );
    let hits = lake.clone();
    metrics::register(
        &mut registry,
        "crow_lake_small_file_cache_hits_total",
        "Reads of small Parquet files answered from memory (S3/R2 lakes).",
        metrics::Reading::counter(move || hits.small_file_reads().0),
    );
    let misses = lake.clone();
    metrics::register(
        &mut registry,
        "crow_lake_small_file_cache_misses_total",
        "Small Parquet files read whole from the store to be kept (S3/R2 lakes).",
        metrics::Reading::counter(move || misses.small_file_reads().1),
    );
    metrics::register(
        &mut registry,
        "crow_lake_scans_filtered_in_decoder_total",
        "Plain Parquet scans whose own filter was evaluated in the Parquet decoder.",
        metrics::Reading::counter(|| crow_lake::pushdown::scans().0),
    );
    metrics::register(
        &mut registry,
        "crow_lake_scans_filtered_above_total",
        "Plain Parquet scans whose own filter, seen to keep many rows, was evaluated above the scan.",
        metrics::Reading::counter(|| crow_lake::pushdown::scans().1),
    );
    metrics::register(
        &mut registry,
        "crow_lake_commit_retries_total",
        "Lake operations run again after losing a commit race to another writer.",
        metrics::Reading::counter(crow_lake::commit_retries_total),
    );
    if let Some(c) = collector {
        c.register_metrics(&mut registry);
    }
    if let Some(a) = api {
        a.metrics.register(&mut registry);
    }
    conns.register(&mut registry);
    std::sync::Arc::new(registry)
}

/// `/metrics`: the registry in Prometheus text format (behind
/// `guard_metrics`).
async fn metrics(registry: std::sync::Arc<Registry>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&registry),
    )
}

/// Who may read `/metrics`.
struct MetricsAccess {
    token: crow_schemas::Secret,
}

/// `/metrics`: answered to clients on this machine, and to others only with
/// `Authorization: Bearer <server.metrics_token>` (403 otherwise, so a
/// public listener does not publish CROW's internals).
async fn guard_metrics(
    axum::extract::State(access): axum::extract::State<std::sync::Arc<MetricsAccess>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() != "/metrics" {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = !access.token.is_empty()
        && bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), access.token.expose().as_bytes()));
    let local = peer.ip().is_loopback()
        || matches!(peer.ip(), std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    if !local && !token_ok {
        return (
            axum::http::StatusCode::FORBIDDEN,
            "metrics are served to this machine only; set server.metrics_token and send it as a Bearer token to read them remotely\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
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
