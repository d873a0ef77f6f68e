//! The collector's HTTP surface (axum).
//!
//! Segment HTTP Tracking API: `POST /v1/batch` (and `/v1/import`),
//! `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/group`,
//! `/v1/alias` (and Analytics.js's short forms `/v1/t`, `/v1/p`, …), the
//! settings Analytics.js loads (`GET /v1/projects/{writeKey}/settings`); CROW's own `POST /v1/social/captures` and
//! `POST /v1/cctv/transcripts`; `/healthz`, `/readyz` and the browser SDK
//! at `/sdk/crow.js`. (`/metrics` is `crow serve`'s: it encodes the one
//! registry the collector's [`crate::metrics::Metrics`] register into.)
//!
//! A request is answered 2xx only after its rows — accepted events and
//! rejected ones alike — are fsync'd in the WAL. Rejected events go to
//! `failed_events` with their reason and payload and are listed in the
//! response; the valid events of the same batch are accepted.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use crow_lake::Lake;
use crow_schemas::config::IngestConfig;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::channels;
use crate::metrics::Metrics;
use crate::normalize::{hash_ip, normalize_json, Defaults, NormalizeContext, Rejection};
use crate::wal::{RowFormat, Wal, WalBatch, WalError, WalTable};
use crow_schemas::rows::{FailedEventRow, FailureCode, FailureSource};

/// The browser SDK, served at `/sdk/crow.js`.
pub const SDK_JS: &str = include_str!("../sdk/crow.js");

/// Everything the handlers share.
pub struct IngestState {
    /// The write-ahead log.
    pub wal: Wal,
    /// Telemetry.
    pub metrics: Arc<Metrics>,
    /// Collector settings.
    pub cfg: IngestConfig,
    /// Salt for IP hashes.
    pub ip_salt: String,
    /// `ingest.trusted_proxies`, parsed.
    trusted_proxies: Vec<crow_schemas::net::IpRange>,
    keys: KeyCache,
}

impl IngestState {
    /// Shared state for the collector's handlers.
    pub fn new(
        wal: Wal,
        metrics: Arc<Metrics>,
        cfg: IngestConfig,
        ip_salt: String,
        lake: Lake,
    ) -> Arc<IngestState> {
        // Validated with the configuration; a bad entry here is skipped.
        let trusted_proxies = cfg
            .trusted_proxies
            .iter()
            .filter_map(|p| crow_schemas::net::IpRange::parse(p).ok())
            .collect();
        Arc::new(IngestState {
            wal,
            metrics,
            cfg,
            ip_salt,
            trusted_proxies,
            keys: KeyCache::new(lake),
        })
    }
}

/// Write key → organization, loaded from the `organizations` table. The whole
/// (small) table is cached and refreshed at most once per second on a miss
/// and every 30 s otherwise, so hostile clients guessing keys cost no lake
/// reads.
struct KeyCache {
    lake: Lake,
    inner: RwLock<KeyMap>,
}

struct KeyMap {
    /// Key hash → (organization, end of the key's grace period if it is a
    /// rotated-out key).
    by_hash: HashMap<String, (String, Option<chrono::DateTime<chrono::Utc>>)>,
    loaded: Option<Instant>,
}

impl KeyCache {
    fn new(lake: Lake) -> Self {
        Self {
            lake,
            inner: RwLock::new(KeyMap {
                by_hash: HashMap::new(),
                loaded: None,
            }),
        }
    }

    async fn org_for(&self, write_key: &str) -> Result<Option<String>, crow_lake::Error> {
        let hash = crow_lake::ids::sha256_hex(write_key.as_bytes());
        let now = chrono::Utc::now();
        let usable = |entry: &(String, Option<chrono::DateTime<chrono::Utc>>)| {
            entry.1.is_none_or(|until| until > now)
        };
        {
            let m = self.inner.read().await;
            if let Some(entry) = m.by_hash.get(&hash) {
                if !usable(entry) {
                    // A rotated-out key past its grace period.
                    return Ok(None);
                }
                if m.loaded
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
                {
                    return Ok(Some(entry.0.clone()));
                }
            } else if m
                .loaded
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return Ok(None);
            }
        }
        let mut m = self.inner.write().await;
        if m.loaded
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let orgs = crow_lake::orgs::list(&self.lake).await?;
            m.by_hash = orgs
                .iter()
                .flat_map(|o| {
                    o.accepted_key_hashes(now)
                        .into_iter()
                        .map(|(h, until)| (h.to_string(), (o.org_id.clone(), until)))
                })
                .collect();
            m.loaded = Some(Instant::now());
        }
        Ok(m.by_hash
            .get(&hash)
            .filter(|e| usable(e))
            .map(|e| e.0.clone()))
    }

    async fn ready(&self) -> bool {
        self.inner.read().await.loaded.is_some() || self.org_for("").await.is_ok()
    }
}

/// The collector's routes.
pub fn router(state: Arc<IngestState>) -> Router {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            axum::http::Method::POST,
            axum::http::Method::GET,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers(tower_http::cors::Any)
        .max_age(Duration::from_secs(86_400));
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/social/captures", post(social))
        .route("/v1/cctv/transcripts", post(cctv))
        .route("/v1/{kind}", post(single))
        .route("/v1/projects/{write_key}/settings", get(project_settings))
        .route("/sdk/crow.js", get(sdk))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Bodies are read with our own bound (see `read_body`), so an
        // oversized request gets the same JSON refusal as every other error.
        .layer(DefaultBodyLimit::disable())
        // A slow or stalled client cannot hold a request open: 408 after 30 s.
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(cors)
        .with_state(state)
}

/// Why a whole request was refused: one variant per stable code, and the
/// one place its HTTP status and `Retry-After` are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The body is over `ingest.max_request_bytes` (gzip-decoded too).
    RequestTooLarge,
    /// One event is over `ingest.max_event_bytes`.
    EventTooLarge,
    /// `Content-Encoding: gzip` with a body that does not inflate.
    InvalidGzip,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The body is not JSON.
    InvalidJson,
    /// The JSON nests deeper than the collector reads.
    TooDeep,
    /// A batch without its `batch` array.
    MissingBatch,
    /// A list endpoint without its array.
    MissingItems,
    /// The SDK's settings need a `Host` header.
    InvalidHost,
    /// No write key in the request.
    MissingWriteKey,
    /// A write key no organization has.
    InvalidWriteKey,
    /// No such endpoint under `/v1/`.
    NotFound,
    /// The request took longer than the collector waits.
    RequestTimeout,
    /// The WAL is full or behind: retry soon.
    Backpressure,
    /// The WAL or the lake cannot take the events now: retry later.
    Unavailable,
}

impl Refused {
    /// The stable code clients and the `crow_ingest_requests_refused_total`
    /// metric see.
    pub fn code(self) -> &'static str {
        match self {
            Refused::RequestTooLarge => "request_too_large",
            Refused::EventTooLarge => "event_too_large",
            Refused::InvalidGzip => "invalid_gzip",
            Refused::InvalidUtf8 => "invalid_utf8",
            Refused::InvalidJson => "invalid_json",
            Refused::TooDeep => "too_deep",
            Refused::MissingBatch => "missing_batch",
            Refused::MissingItems => "missing_items",
            Refused::InvalidHost => "invalid_host",
            Refused::MissingWriteKey => "missing_write_key",
            Refused::InvalidWriteKey => "invalid_write_key",
            Refused::NotFound => "not_found",
            Refused::RequestTimeout => "request_timeout",
            Refused::Backpressure => "backpressure",
            Refused::Unavailable => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refused::RequestTooLarge | Refused::EventTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::InvalidGzip
            | Refused::InvalidUtf8
            | Refused::InvalidJson
            | Refused::TooDeep
            | Refused::MissingBatch
            | Refused::MissingItems
            | Refused::InvalidHost => StatusCode::BAD_REQUEST,
            Refused::MissingWriteKey | Refused::InvalidWriteKey => StatusCode::UNAUTHORIZED,
            Refused::NotFound => StatusCode::NOT_FOUND,
            Refused::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Refused::Backpressure | Refused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a client should wait before sending again, when it should:
    /// backpressure clears as the flusher catches up, an outage takes longer.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Refused::Backpressure => Some(1),
            Refused::Unavailable => Some(5),
            _ => None,
        }
    }
}

/// A whole-request refusal, as JSON with a stable code.
#[derive(Debug)]
pub struct Refusal {
    why: Refused,
    message: String,
}

impl Refusal {
    fn new(why: Refused, message: impl Into<String>) -> Self {
        Self {
            why,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.why.status(),
            Json(json!({"success": false, "code": self.why.code(), "message": self.message})),
        )
            .into_response();
        if let Some(s) = self.why.retry_after() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

fn refuse(state: &IngestState, why: Refused, message: impl Into<String>) -> Refusal {
    state.metrics.requests_refused.inc_by(why.code(), 1);
    Refusal::new(why, message)
}

/// Read the body, at most the request limit (plus slack for gzip framing).
async fn body_bytes(state: &IngestState, body: Body) -> Result<Bytes, Refusal> {
    let limit = state.cfg.max_request_bytes;
    axum::body::to_bytes(body, limit + 1024).await.map_err(|_| {
        refuse(
            state,
            Refused::RequestTooLarge,
            format!("the request is larger than {limit} bytes"),
        )
    })
}

/// Decompress (gzip) and check the size. A plain body is not copied;
/// [`body_text`] checks that it is UTF-8.
fn read_body(state: &IngestState, headers: &HeaderMap, body: Bytes) -> Result<Bytes, Refusal> {
    let limit = state.cfg.max_request_bytes;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        || body.starts_with(&[0x1f, 0x8b]);
    let raw = if gzip {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(&body[..]).take(limit as u64 + 1);
        dec.read_to_end(&mut out).map_err(|e| {
            refuse(
                state,
                Refused::InvalidGzip,
                format!("the gzip body is invalid: {e}"),
            )
        })?;
        Bytes::from(out)
    } else {
        body
    };
    if raw.len() > limit {
        return Err(refuse(
            state,
            Refused::RequestTooLarge,
            format!("the request is larger than {limit} bytes"),
        ));
    }
    Ok(raw)
}

fn json_refusal(state: &IngestState, e: &serde_json::Error) -> Refusal {
    if e.to_string().contains("recursion limit") {
        refuse(state, Refused::TooDeep, "the JSON is nested too deeply")
    } else {
        refuse(state, Refused::InvalidJson, format!("invalid JSON: {e}"))
    }
}

fn basic_key(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_string())
}

async fn authorize(
    state: &IngestState,
    headers: &HeaderMap,
    body_key: Option<&str>,
) -> Result<String, Refusal> {
    let key = basic_key(headers).or_else(|| body_key.filter(|k| !k.is_empty()).map(str::to_string));
    let Some(key) = key else {
        return Err(refuse(
            state,
            Refused::MissingWriteKey,
            "a write key is required (HTTP Basic user name, or `writeKey` in the body)",
        ));
    };
    match state.keys.org_for(&key).await {
        Ok(Some(org)) => Ok(org),
        Ok(None) => Err(refuse(state, Refused::InvalidWriteKey, "unknown write key")),
        Err(e) => {
            tracing::error!(error = %e, "write key lookup failed");
            Err(refuse(
                state,
                Refused::Unavailable,
                "the lake is unavailable; retry later",
            ))
        }
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy
/// (`ingest.trusted_proxies`); then the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy. A client cannot
/// choose its hash by sending the header itself.
fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted: &[crow_schemas::net::IpRange],
) -> Option<String> {
    let peer = peer?.ip();
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return Some(peer.to_string());
    }
    let mut hops: Vec<std::net::IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return Some(peer.to_string());
        };
        for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            match h.parse() {
                Ok(ip) => hops.push(ip),
                // A hop we cannot read: stop believing the chain there.
                Err(_) => return Some(peer.to_string()),
            }
        }
    }
    let client = hops
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer);
    Some(client.to_string())
}

/// One rejected event in a response.
#[derive(Debug, Serialize)]
struct Rejected {
    index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    code: FailureCode,
    reason: String,
}

async fn commit(state: &IngestState, records: WalBatch, started: Instant) -> Result<(), Refusal> {
    match state.wal.append(records).await {
        Ok(()) => {
            state
                .metrics
                .ack_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(WalError::Backpressure) => {
            state.metrics.backpressure.inc();
            Err(refuse(
                state,
                Refused::Backpressure,
                "the collector is catching up; retry later",
            ))
        }
        Err(WalError::Unavailable(e)) => {
            tracing::error!(error = %e, "WAL append failed");
            Err(refuse(
                state,
                Refused::Unavailable,
                "the collector cannot store events now; retry later",
            ))
        }
    }
}

fn respond(accepted: usize, rejected: Vec<Rejected>, single: bool) -> Response {
    if rejected.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({"success": true, "accepted": accepted})),
        )
            .into_response();
    }
    // Nothing accepted: 400 (SDKs must not retry). The body also carries
    // Segment's error shape (`code`, `message`), which SDKs parse.
    let status = if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let message = match (rejected.len(), single) {
        (_, true) => rejected
            .first()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
        (n, false) => format!("{n} event(s) rejected; see `rejected`"),
    };
    (
        status,
        Json(
            json!({"success": accepted > 0, "accepted": accepted, "rejected": rejected,
            "code": "invalid_events", "message": message}),
        ),
    )
        .into_response()
}

/// What a request's items became: WAL records (accepted rows, and a
/// `failed_events` row per rejected item), and the answer's counts.
struct Prepared {
    records: WalBatch,
    accepted: usize,
    rejected: Vec<Rejected>,
}

/// The items of one request to one organization on one channel, as they
/// are accepted or rejected.
struct Intake<'a> {
    state: &'a IngestState,
    org: &'a str,
    channel: &'static str,
    now: DateTime<Utc>,
    out: Prepared,
}

impl<'a> Intake<'a> {
    fn new(
        state: &'a IngestState,
        org: &'a str,
        channel: &'static str,
        now: DateTime<Utc>,
        records: WalBatch,
    ) -> Self {
        Self {
            state,
            org,
            channel,
            now,
            out: Prepared {
                records,
                accepted: 0,
                rejected: Vec::new(),
            },
        }
    }

    /// Item `index` (its message id, if known, and its `payload` as
    /// received) was rejected for `r`: counted, recorded in
    /// `failed_events`, and listed in the answer.
    fn reject(&mut self, index: usize, message_id: Option<String>, r: Rejection, payload: &str) {
        self.state
            .metrics
            .events_rejected
            .inc_by(r.code.as_str(), 1);
        let row = FailedEventRow::new(
            crow_lake::ids::new_id("fail"),
            FailureSource::Collector,
            r.code,
            r.reason.as_str(),
            self.now,
        )
        .with_org(self.org)
        .with_channel(self.channel)
        .with_message_id(message_id.clone())
        .with_payload(payload);
        // Serialising a struct of strings and numbers into memory cannot fail.
        let _ = self
            .out
            .records
            .push_with(WalTable::FailedEvents, RowFormat::Json, |buf| {
                serde_json::to_writer(buf, &row)
            });
        self.out.rejected.push(Rejected {
            index,
            message_id,
            code: r.code,
            reason: r.reason,
        });
    }

    /// The records and counts, the accepted items counted.
    fn finish(self) -> Prepared {
        if self.out.accepted > 0 {
            self.state
                .metrics
                .events_accepted
                .inc_by(self.channel, self.out.accepted as u64);
        }
        self.out
    }
}

fn prepare_web(
    state: &IngestState,
    org: &str,
    events: &[&RawValue],
    defaults: &Defaults<'_>,
    ip_hash: Option<String>,
    now: DateTime<Utc>,
) -> Prepared {
    let ctx = NormalizeContext {
        org_id: org,
        received_at: now,
        ip_hash,
        strip_query_params: &state.cfg.strip_query_params,
        ip_salt: &state.ip_salt,
    };
    let bytes: usize = events.iter().map(|e| e.get().len()).sum();
    let records = WalBatch::with_capacity(bytes + events.len() * 256);
    let mut intake = Intake::new(state, org, "web", now, records);
    for (index, raw) in events.iter().enumerate() {
        let text = raw.get();
        // The batch's context is part of every event it fills in.
        let size = text.len() + defaults.context.map_or(0, str::len);
        let result = if size > state.cfg.max_event_bytes {
            Err(Rejection {
                code: FailureCode::EventTooLarge,
                reason: format!(
                    "the event is larger than {} bytes",
                    state.cfg.max_event_bytes
                ),
            })
        } else {
            normalize_json(text, defaults, &ctx)
        };
        match result {
            Ok(row) => {
                let _ = intake.out.records.push_with(
                    WalTable::RawWebEvents,
                    RowFormat::Binary,
                    |buf| {
                        row.encode(buf);
                        Ok::<(), std::convert::Infallible>(())
                    },
                );
                intake.out.accepted += 1;
            }
            Err(r) => {
                // The message id, when the event is an object that has one
                // (an oversized event too: SDKs match rejections by it; the
                // rest of it is skipped unparsed, and the request's size is
                // bounded already).
                let message_id = (r.code != FailureCode::TooDeep)
                    .then(|| serde_json::from_str::<MessageIdOnly>(text).ok())
                    .flatten()
                    .and_then(|m| m.message_id);
                intake.reject(index, message_id, r, text);
            }
        }
    }
    intake.finish()
}

/// Only the message id of an event (every other field is skipped unparsed).
#[derive(serde::Deserialize)]
struct MessageIdOnly {
    #[serde(rename = "messageId")]
    message_id: Option<String>,
}

/// Only the write key of a body (every other field is skipped unparsed).
#[derive(serde::Deserialize)]
struct WriteKeyOnly {
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

#[derive(serde::Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(rename = "sentAt", borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
}

/// The body as text: 400 when it is not UTF-8.
fn body_text<'b>(state: &IngestState, raw: &'b Bytes) -> Result<&'b str, Refusal> {
    std::str::from_utf8(raw)
        .map_err(|_| refuse(state, Refused::InvalidUtf8, "the body is not valid UTF-8"))
}

async fn batch(
    State(state): State<Arc<IngestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let started = Instant::now();
    let now = Utc::now();
    let body = body_bytes(&state, body).await?;
    let raw = read_body(&state, &headers, body)?;
    let text = body_text(&state, &raw)?;
    let parsed: BatchBody<'_> = serde_json::from_str(text).map_err(|e| json_refusal(&state, &e))?;
    let org = authorize(&state, &headers, parsed.write_key.as_deref()).await?;
    let Some(events) = parsed.batch else {
        return Err(refuse(
            &state,
            Refused::MissingBatch,
            "`batch` must be an array of events",
        ));
    };
    let ip_hash = client_ip(&headers, Some(peer), &state.trusted_proxies)
        .map(|ip| hash_ip(&state.ip_salt, &ip));
    let defaults = Defaults {
        kind: None,
        sent_at: parsed.sent_at.map(RawValue::get),
        context: parsed.context.map(RawValue::get),
    };
    let prepared = prepare_web(&state, &org, &events, &defaults, ip_hash, now);
    commit(&state, prepared.records, started).await?;
    Ok(respond(prepared.accepted, prepared.rejected, false))
}

async fn single(
    State(state): State<Arc<IngestState>>,
    Path(kind): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let started = Instant::now();
    let now = Utc::now();
    let body = body_bytes(&state, body).await?;
    let kind = match kind.as_str() {
        "track" | "page" | "screen" | "identify" | "group" | "alias" => kind,
        "t" | "p" | "i" | "g" | "a" | "s" => match kind.as_str() {
            "t" => "track",
            "p" => "page",
            "i" => "identify",
            "g" => "group",
            "a" => "alias",
            _ => "screen",
        }
        .to_string(),
        _ => {
            return Err(refuse(
                &state,
                Refused::NotFound,
                format!("no endpoint /v1/{kind}"),
            ))
        }
    };
    let raw = read_body(&state, &headers, body)?;
    if raw.len() > state.cfg.max_event_bytes {
        return Err(refuse(
            &state,
            Refused::EventTooLarge,
            format!(
                "the event is larger than {} bytes",
                state.cfg.max_event_bytes
            ),
        ));
    }
    let text = body_text(&state, &raw)?;
    let event: &RawValue = serde_json::from_str(text).map_err(|e| json_refusal(&state, &e))?;
    let write_key = serde_json::from_str::<WriteKeyOnly>(text)
        .ok()
        .and_then(|k| k.write_key);
    let org = authorize(&state, &headers, write_key.as_deref()).await?;
    let ip_hash = client_ip(&headers, Some(peer), &state.trusted_proxies)
        .map(|ip| hash_ip(&state.ip_salt, &ip));
    let defaults = Defaults {
        kind: Some(&kind),
        ..Defaults::default()
    };
    let prepared = prepare_web(&state, &org, &[event], &defaults, ip_hash, now);
    commit(&state, prepared.records, started).await?;
    Ok(respond(prepared.accepted, prepared.rejected, true))
}

/// The settings the official Segment browser library (Analytics.js 2.0,
/// `@segment/analytics-next`) loads from its `cdnURL` before sending
/// anything: only the Segment.io destination, pointed back at this
/// collector (`apiHost` from the request's `Host`, `protocol` from a
/// trusted proxy's `X-Forwarded-Proto`), and the library's own telemetry
/// to Segment turned off. An unknown write key is refused like an event.
async fn project_settings(
    State(state): State<Arc<IngestState>>,
    Path(write_key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&state, &HeaderMap::new(), Some(&write_key)).await?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| {
            refuse(
                &state,
                Refused::InvalidHost,
                "the request needs a valid Host header (it becomes the library's apiHost)",
            )
        })?;
    let behind_proxy = state.trusted_proxies.iter().any(|r| r.contains(peer.ip()));
    let protocol = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| behind_proxy && matches!(*p, "http" | "https"))
        .unwrap_or("http");
    let settings = json!({
        "integrations": {"Segment.io": {
            "apiKey": write_key,
            "apiHost": format!("{host}/v1"),
            "protocol": protocol,
            "unbundledIntegrations": [],
            "addBundledMetadata": true,
            "maybeBundledConfigIds": {},
        }},
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}}},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0.0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    });
    let mut r = Json(settings).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

async fn social(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    other_channel(state, headers, body, "social").await
}

async fn cctv(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    other_channel(state, headers, body, "cctv").await
}

async fn other_channel(
    state: Arc<IngestState>,
    headers: HeaderMap,
    body: Body,
    channel: &'static str,
) -> Result<Response, Refusal> {
    let started = Instant::now();
    let now = Utc::now();
    let body = body_bytes(&state, body).await?;
    let raw = read_body(&state, &headers, body)?;
    let parsed: Value =
        serde_json::from_str(body_text(&state, &raw)?).map_err(|e| json_refusal(&state, &e))?;
    let org = authorize(
        &state,
        &headers,
        parsed.get("writeKey").and_then(Value::as_str),
    )
    .await?;
    let (list_key, table) = match channel {
        "social" => ("captures", WalTable::RawSocialCaptures),
        _ => ("segments", WalTable::RawCctvTranscripts),
    };
    let Some(items) = parsed.get(list_key).and_then(Value::as_array) else {
        return Err(refuse(
            &state,
            Refused::MissingItems,
            format!("`{list_key}` must be an array"),
        ));
    };
    let mut intake = Intake::new(&state, &org, channel, now, WalBatch::default());
    for (index, item) in items.iter().enumerate() {
        let row = match channel {
            "social" => {
                channels::social_row(&org, parsed.get("run_id"), item, now).and_then(|r| encode(&r))
            }
            _ => channels::cctv_row(&org, item, now).and_then(|r| encode(&r)),
        };
        match row {
            Ok(json) => {
                intake.out.records.push_json(table, &json);
                intake.out.accepted += 1;
            }
            Err(r) => {
                let id = item
                    .get(if channel == "social" {
                        "capture_id"
                    } else {
                        "segment_id"
                    })
                    .and_then(Value::as_str)
                    .map(str::to_string);
                intake.reject(index, id, r, &item.to_string());
            }
        }
    }
    let prepared = intake.finish();
    commit(&state, prepared.records, started).await?;
    Ok(respond(prepared.accepted, prepared.rejected, false))
}

/// Answer 408 when a request (including reading its body) takes over 30 s.
async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(Duration::from_secs(30), next.run(req)).await {
        Ok(r) => r,
        Err(_) => Refusal::new(Refused::RequestTimeout, "the request took longer than 30 s")
            .into_response(),
    }
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, Rejection> {
    serde_json::to_vec(row).map_err(|e| Rejection {
        code: FailureCode::Internal,
        reason: format!("could not encode the row: {e}"),
    })
}

async fn sdk() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        SDK_JS,
    )
}

async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    let pending = state
        .wal
        .stats()
        .pending_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    if pending > state.cfg.max_pending_bytes {
        return (StatusCode::SERVICE_UNAVAILABLE, "flushing is behind").into_response();
    }
    if !state.keys.ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "the lake is unreachable").into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;
    use crow_schemas::net::IpRange;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().expect("test header value"));
        h
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().expect("test address"), 4000))
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = [IpRange::parse("10.0.0.0/8").expect("range")];
        // An untrusted peer cannot pick the address that is hashed.
        assert_eq!(
            client_ip(&headers("1.2.3.4"), peer("203.0.113.9"), &trusted).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client_ip(&headers("1.2.3.4"), peer("203.0.113.9"), &[]).as_deref(),
            Some("203.0.113.9")
        );
        // Through the proxy: the nearest untrusted hop, not a spoofed first one.
        assert_eq!(
            client_ip(
                &headers("6.6.6.6, 198.51.100.4, 10.0.0.2"),
                peer("10.0.0.1"),
                &trusted
            )
            .as_deref(),
            Some("198.51.100.4")
        );
        // Garbage in the chain: the proxy's own address.
        assert_eq!(
            client_ip(&headers("not-an-ip"), peer("10.0.0.1"), &trusted).as_deref(),
            Some("10.0.0.1")
        );
        // No header through a proxy: the proxy.
        assert_eq!(
            client_ip(&HeaderMap::new(), peer("10.0.0.1"), &trusted).as_deref(),
            Some("10.0.0.1")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refused; 15] = [
        Refused::RequestTooLarge,
        Refused::EventTooLarge,
        Refused::InvalidGzip,
        Refused::InvalidUtf8,
        Refused::InvalidJson,
        Refused::TooDeep,
        Refused::MissingBatch,
        Refused::MissingItems,
        Refused::InvalidHost,
        Refused::MissingWriteKey,
        Refused::InvalidWriteKey,
        Refused::NotFound,
        Refused::RequestTimeout,
        Refused::Backpressure,
        Refused::Unavailable,
    ];

    #[test]
    fn every_refusal_has_its_own_code_and_503s_say_when_to_retry() {
        let codes: std::collections::BTreeSet<_> = ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), ALL.len(), "codes are distinct");
        for r in ALL {
            assert!(r.status().is_client_error() || r.status().is_server_error());
            assert_eq!(
                r.retry_after().is_some(),
                r.status() == StatusCode::SERVICE_UNAVAILABLE,
                "{}: Retry-After exactly on 503",
                r.code()
            );
        }
        let resp = Refusal::new(Refused::Backpressure, "busy").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(1u64))
        );
    }

    /// A social capture or CCTV segment the collector accepted but cannot
    /// encode (a bug of ours, not the client's) is rejected with the code
    /// `internal` and serde's reason, and so goes to `failed_events` like
    /// any rejected event (`Intake::reject`) instead of being lost.
    #[test]
    fn a_row_that_cannot_be_encoded_is_an_internal_rejection() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no JSON for this"))
            }
        }
        let r = encode(&Unencodable).expect_err("cannot be encoded");
        assert_eq!(r.code, FailureCode::Internal);
        assert_eq!(r.code.as_str(), "internal");
        assert_eq!(r.reason, "could not encode the row: no JSON for this");
        let ok = encode(&json!({"segment_id": "s1"})).map_err(|r| r.reason);
        assert_eq!(ok.as_deref(), Ok(&br#"{"segment_id":"s1"}"#[..]));
    }
}
