//! CROW's query API: API keys, tenant-isolated read-only SQL, REST resources.
//!
//! Invariants:
//! - **A key sees only its organization's rows.** Every read runs in a fresh
//!   DataFusion session whose catalog holds only org-filtered, secret-free
//!   views of CROW's tables ([`tenant`]); the filter is in the query plan, not
//!   in rewritten SQL, so joins, unions, CTEs, subqueries, `information_schema`
//!   and time travel all stay inside the tenant.
//! - **Read-only.** DDL, DML, COPY, SET and other statements are refused with
//!   400 before anything runs; no file-reading table function exists.
//! - **Keys are hashes.** Only a SHA-256 of a key is stored; lookups are
//!   cached at most `api.key_cache_seconds` (≤ 60 s), so a revocation is
//!   enforced within that time.
//! - **Errors are problem details** with stable codes; internal causes are
//!   logged, never sent.
#![warn(missing_docs)]

pub mod a2a;
pub mod account;
pub mod ask;
pub mod ask_plan;
pub mod auth;
pub mod body;
pub mod bounded;
pub mod cache;
pub mod cameras;
pub mod chats;
pub mod concat_op;
pub mod error;
pub mod evidence;
pub mod export;
pub mod flight;
pub mod guard;
pub mod history;
pub mod invoice;
pub mod keys;
pub mod manage;
pub mod mcp;
pub mod mcp_tools;
pub mod metrics;
pub mod openapi;
mod owned;
pub mod pg;
pub mod rest;
pub mod runtime;
pub mod saved;
pub mod search;
pub mod slots;
pub mod social;
pub mod sql;
pub mod tenant;
pub mod users;
pub mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use crow_lake::Lake;
use crow_schemas::config::ApiConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

pub use crate::body::{api_body_limit, bounded_body, BodyLimits};
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;

/// Everything the handlers share.
pub struct ApiState {
    /// The lake.
    pub lake: Lake,
    /// Settings.
    pub cfg: ApiConfig,
    /// API keys by hash.
    pub keys: auth::KeyCache,
    /// Per-key token buckets.
    pub limiter: auth::RateLimiter,
    /// Sign-in attempts per e-mail: 5 at once, then one a minute.
    pub login_by_email: auth::RateLimiter,
    /// Sign-in attempts per client address: 30 at once, then one every 2 s.
    pub login_by_ip: auth::RateLimiter,
    /// Requests without credentials, per client address
    /// (`api.public_rate_limit_*`).
    pub public_by_ip: auth::RateLimiter,
    /// Telemetry.
    pub metrics: Arc<metrics::ApiMetrics>,
    /// Memory pool (spilling) and disk manager shared by every query.
    pub runtime: Arc<RuntimeEnv>,
    /// The threads queries are planned and run on.
    pub query_rt: runtime::QueryRuntime,
    /// Concurrent queries per key and per organization.
    pub slots: slots::Slots,
    /// API exports running in this server.
    pub exports: export::Exports,
    /// The AI provider of `ask` (offline until [`ApiState::set_ai`]).
    ai: std::sync::OnceLock<Arc<dyn crow_jobs::ai::Provider>>,
    /// The embedder of `/api/v1/search` (offline until
    /// [`ApiState::set_embedder`]).
    embedder: std::sync::OnceLock<Arc<dyn crow_jobs::ai::embed::Embedder>>,
    /// MCP sessions of the 2025-11-25 revision.
    pub mcp_sessions: mcp::Sessions,
    /// Answers of `POST /api/v1/sql` by query, tenant and table versions.
    pub result_cache: Arc<cache::ResultCache>,
    /// The price book of `GET /api/v1/invoice` (`[billing]`; the default
    /// book until [`ApiState::set_prices`]).
    pub prices: std::sync::OnceLock<crow_jobs::billing::Prices>,
}

impl ApiState {
    /// Build the shared state.
    pub fn new(lake: Lake, cfg: ApiConfig) -> datafusion::error::Result<Arc<ApiState>> {
        let query_rt = runtime::QueryRuntime::start(
            usize::try_from(cfg.query_threads).unwrap_or(0),
            i32::try_from(cfg.query_nice).unwrap_or(0),
        )?;
        let disk = if cfg.spill_dir.is_empty() {
            DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory)
        } else {
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![cfg
                .spill_dir
                .clone()
                .into()]))
        };
        let pool_bytes =
            usize::try_from(cfg.memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(pool_bytes)))
            .with_disk_manager_builder(disk)
            .build_arc()?;
        let mut keys =
            auth::KeyCache::new(lake.clone(), Duration::from_secs(cfg.key_cache_seconds));
        keys.session_idle =
            chrono::Duration::minutes(i64::try_from(cfg.session_idle_minutes).unwrap_or(720));
        let metrics = Arc::new(metrics::ApiMetrics::default());
        let mb = |n: u64| usize::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let result_cache = Arc::new(cache::ResultCache::new(
            mb(cfg.result_cache_mb),
            mb(cfg.result_cache_max_entry_mb),
            metrics.clone(),
        ));
        Ok(Arc::new(ApiState {
            result_cache,
            keys,
            login_by_email: auth::RateLimiter::new(1.0 / 60.0, 5),
            login_by_ip: auth::RateLimiter::new(0.5, 30),
            public_by_ip: auth::RateLimiter::new(
                cfg.public_rate_limit_per_second,
                cfg.public_rate_limit_burst,
            ),
            limiter: auth::RateLimiter::new(cfg.rate_limit_per_second, cfg.rate_limit_burst),
            metrics,
            runtime,
            query_rt,
            slots: slots::Slots::new(
                cfg.max_concurrent_queries_per_key,
                cfg.max_concurrent_queries_per_org,
            ),
            exports: export::Exports::default(),
            ai: std::sync::OnceLock::new(),
            embedder: std::sync::OnceLock::new(),
            prices: std::sync::OnceLock::new(),
            mcp_sessions: mcp::Sessions::default(),
            lake,
            cfg,
        }))
    }

    /// Use `provider` for `ask` (once; later calls are ignored).
    pub fn set_ai(&self, provider: Arc<dyn crow_jobs::ai::Provider>) {
        let _ = self.ai.set(provider);
    }

    /// Use `e` for search (once; later calls are ignored).
    pub fn set_embedder(&self, e: Arc<dyn crow_jobs::ai::embed::Embedder>) {
        let _ = self.embedder.set(e);
    }

    /// The embedder of search.
    pub fn embedder(&self) -> Arc<dyn crow_jobs::ai::embed::Embedder> {
        self.embedder
            .get_or_init(|| {
                let dims = crow_schemas::config::EmbeddingsConfig::default().dims;
                Arc::new(crow_jobs::ai::embed::OfflineEmbedder::new(dims))
            })
            .clone()
    }

    /// Price invoices with `prices` (once; later calls are ignored).
    pub fn set_prices(&self, prices: crow_jobs::billing::Prices) {
        let _ = self.prices.set(prices);
    }

    /// The AI provider of `ask`.
    pub fn ai(&self) -> Arc<dyn crow_jobs::ai::Provider> {
        self.ai
            .get_or_init(|| {
                Arc::new(crow_jobs::ai::offline::Offline::new(
                    crow_jobs::ai::offline::MODEL,
                ))
            })
            .clone()
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.query_timeout_seconds)
    }

    /// The tenant session a SQL query of `p` runs in (HTTP and Postgres
    /// wire alike): `p`'s organization's views, the shared memory pool, the
    /// function output cap; `api_keys` shows admin keys to admin keys only.
    pub fn tenant_session(
        &self,
        p: &auth::Principal,
        as_of: crow_lake::AsOf,
        pins: tenant::Pins,
    ) -> (
        datafusion::prelude::SessionContext,
        Arc<tenant::TenantSchema>,
    ) {
        self.session_over(
            &p.org_id,
            as_of,
            pins,
            self.function_cap(),
            p.scope == Scope::Admin,
        )
    }

    /// A session over `org_id`'s latest rows with the default function
    /// output cap ([`tenant::tenant_context`]), as REST listings, exports
    /// and insight days read; `admin` shows admin keys in `api_keys`.
    pub(crate) fn latest_session(
        &self,
        org_id: &str,
        admin: bool,
    ) -> (
        datafusion::prelude::SessionContext,
        Arc<tenant::TenantSchema>,
    ) {
        self.session_over(
            org_id,
            crow_lake::AsOf::Latest,
            tenant::Pins::new(),
            tenant::DEFAULT_FUNCTION_CAP,
            admin,
        )
    }

    /// A session over `org_id`'s rows ([`tenant::tenant_context_with`],
    /// batches of 8,192 rows); `admin` shows admin keys in `api_keys`.
    fn session_over(
        &self,
        org_id: &str,
        as_of: crow_lake::AsOf,
        pins: tenant::Pins,
        function_cap: usize,
        admin: bool,
    ) -> (
        datafusion::prelude::SessionContext,
        Arc<tenant::TenantSchema>,
    ) {
        let (ctx, schema) = tenant::tenant_context_with(
            &self.lake,
            self.runtime.clone(),
            org_id,
            as_of,
            pins,
            8192,
            function_cap,
        );
        if admin {
            schema.show_admin_keys();
        }
        (ctx, schema)
    }

    /// Largest output of one function call, in bytes.
    pub fn function_cap(&self) -> usize {
        usize::try_from(self.cfg.max_function_output_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX)
    }
}

/// The API's routes, all under `/api/v1/` (mounted by `crow serve` beside
/// the collector), and the dashboard's pages and assets ([`web`]).
/// `/metrics` is not among them: see [`ApiState::metrics`].
// Long on purpose: the route table, one `.route` per path, read top to bottom
// beside the OpenAPI document; splitting it would hide which paths exist.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql_handler))
        .route("/api/v1/ask", post(ask::handler))
        .route("/mcp", post(mcp::post).get(mcp::get).delete(mcp::delete))
        .route(a2a::PATH, post(a2a::post))
        .route("/.well-known/agent-card.json", get(a2a::card))
        .route(
            "/api/v1/organization",
            get(rest::organization).patch(manage::update_org),
        )
        .route(
            "/api/v1/users",
            get(manage::list_users).post(manage::create_user),
        )
        .route(
            "/api/v1/users/{id}",
            axum::routing::patch(manage::update_user),
        )
        .route("/api/v1/users/{id}/reset", post(manage::reset_user))
        .route(
            "/api/v1/keys",
            get(manage::list_keys).post(manage::create_key),
        )
        .route("/api/v1/keys/{id}/revoke", post(manage::revoke_key))
        .route("/api/v1/organization/write-key", get(manage::write_key))
        .route(
            "/api/v1/organization/write-key/rotate",
            post(manage::rotate_write_key),
        )
        .route("/api/v1/products", get(rest::products))
        .route("/api/v1/search", get(search::handler))
        .route(
            "/api/v1/social/sources",
            get(rest::social_sources).post(social::add_source),
        )
        .route(
            "/api/v1/social/sources/{id}",
            axum::routing::delete(social::remove_source),
        )
        .route("/api/v1/cameras", get(rest::cameras).post(cameras::create))
        .route(
            "/api/v1/cameras/{id}",
            axum::routing::delete(cameras::delete),
        )
        .route("/api/v1/sessions", get(rest::sessions))
        .route("/api/v1/interactions", get(rest::interactions))
        .route("/api/v1/insights", get(rest::insights))
        .route("/api/v1/insights/days", get(evidence::days))
        .route("/api/v1/stories", get(rest::stories))
        .route("/api/v1/usage", get(rest::usage))
        .route("/api/v1/invoice", get(invoice::invoice))
        .route("/api/v1/audit", get(rest::audit))
        .route("/api/v1/exports", post(export::create))
        .route(
            "/api/v1/exports/{id}",
            get(export::get).delete(export::cancel),
        )
        .route("/api/v1/exports/{id}/download", get(export::download))
        .route("/api/v1/auth/login", post(account::login))
        .route("/api/v1/auth/accept", post(account::accept))
        .route("/api/v1/auth/logout", post(account::logout))
        .route("/api/v1/auth/me", get(account::me))
        .route("/api/v1/auth/sessions", get(account::my_sessions))
        .route(
            "/api/v1/auth/sessions/{id}/revoke",
            post(account::revoke_session),
        )
        .route("/api/v1/chats", get(chats::list).post(chats::create))
        .route(
            "/api/v1/chats/{id}",
            get(chats::open).patch(chats::rename).delete(chats::delete),
        )
        .route("/api/v1/chats/{id}/messages", post(chats::post_message))
        .route(
            "/api/v1/saved-queries",
            get(saved::list).post(saved::create),
        )
        .route(
            "/api/v1/query-history",
            get(history::list)
                .post(history::record)
                .delete(history::clear),
        )
        .route(
            "/api/v1/saved-queries/{id}",
            get(saved::get).patch(saved::update).delete(saved::delete),
        )
        .route("/api/v1/notifications", get(account::notifications))
        .route(
            "/api/v1/notifications/{id}/read",
            post(account::notification_read),
        )
        .route("/api/v1/health", get(health))
        .route(
            "/api/v1/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .merge(web::routes())
        .fallback(not_found)
        // `bounded_body` (mounted by `crow serve`) reads bodies within this
        // bound and answers 413 as problem+json; this keeps extractors in step.
        .layer(axum::extract::DefaultBodyLimit::max(api_body_limit(
            &state.cfg,
        )))
        .layer(axum::middleware::from_fn(account::csrf_guard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            public_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Requests that carry no credentials — neither an API key nor a session
/// cookie: sign-in, invitations, health, the OpenAPI document, public
/// pages, unknown paths — share one token bucket per client address
/// (`api.public_rate_limit_per_second`, `api.public_rate_limit_burst`),
/// answered 429 `rate_limited` with `Retry-After` beyond it. Credentialed
/// requests are limited per key or user instead ([`auth::authenticate`]).
/// The address is the connection's: behind a proxy every client shares the
/// proxy's, so the default is generous.
pub async fn public_limit(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let credentialed =
        auth::bearer(headers).is_some() || auth::cookie(headers, auth::SESSION_COOKIE).is_some();
    if !credentialed {
        let ip = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        if let Err(wait) = st.public_by_ip.check(&ip) {
            return auth::rate_limited("of this address", wait).into_response();
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        ApiError::not_found(format!("no such resource: {}", req.uri().path())).into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, "not found").into_response()
    }
}

async fn count_requests(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let r = next.run(req).await;
    st.metrics.request(&route, r.status().as_u16());
    r
}

async fn health(State(st): State<Arc<ApiState>>) -> Response {
    if st.keys.ready().await {
        axum::Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the lake is not reachable",
        )
        .into_response()
    }
}

async fn sql_handler(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    match run_sql(&st, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run_sql(st: &Arc<ApiState>, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let started = Instant::now();
    let p = auth::authenticate(&st.keys, &st.limiter, headers, Scope::Read).await?;
    let req: sql::SqlRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be JSON like {{\"sql\": \"select 1\"}}: {e}"),
        )
    })?;
    let format = sql::ResultFormat::negotiate(headers)?;
    let (as_of, pins) = sql::pins(&req)?;
    let (query, permits) =
        sql::start_cached_for(st, &p, req.sql, as_of, pins, started, Some(format)).await?;
    sql::respond(st, query, format, started, permits).await
}

/// One call in the audit log (`outcome` 'ok' or 'failed'); a failure to
/// write it is logged, never answered.
pub async fn audit_call(
    st: &ApiState,
    p: &auth::Principal,
    action: &str,
    target: &str,
    ok: bool,
    detail: serde_json::Value,
) {
    let actor = p.actor();
    let audited = users::audit(
        &st.lake,
        crow_lake::audit::Audit {
            org_id: &p.org_id,
            actor: &actor,
            action,
            target: Some(target),
            outcome: if ok { "ok" } else { "failed" },
            detail: Some(detail),
            ..Default::default()
        },
    )
    .await;
    if let Err(e) = audited {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// Record batches as JSON row objects (nulls explicit).
pub fn json_rows(batches: &[RecordBatch]) -> ApiResult<Vec<serde_json::Value>> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for b in batches {
        w.write(b)
            .map_err(|e| ApiError::internal("encoding rows as JSON", &e))?;
    }
    w.finish()
        .map_err(|e| ApiError::internal("encoding rows as JSON", &e))?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| ApiError::internal("encoding rows as JSON", &e))
}
