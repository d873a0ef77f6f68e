//! Arrow Flight SQL (`crow serve --flight-listen ADDR`): tenant-isolated
//! read-only SQL for data tools (ADBC, pyarrow, polars, JDBC) that move large
//! results as Arrow batches.
//!
//! Every call gets exactly what `POST /api/v1/sql` gets: the key is checked
//! by [`auth::authenticate`] (so a revoked key is refused within
//! `api.key_cache_seconds`, and the per-key rate limit applies), the query
//! is planned by [`sql::plan_query`] in the caller's tenant session (same
//! refusals) and run by [`sql::start_for`] (same concurrency slots, memory
//! pool, timeout and row cap). Results are streamed batch by batch; a limit
//! broken mid-stream ends the stream with an error, never a silently short
//! result. Text and binary columns come as plain `Utf8`/`Binary` (not view
//! types), which every Flight SQL client reads.
//!
//! Authentication: `authorization: Bearer <API key secret>` on every call,
//! or a Handshake with basic auth (user = key id, password = secret) that
//! answers the bearer token to send — the secret itself, so the server keeps
//! no token state and a revocation reaches handshaken clients too. The key
//! is checked by [`Authenticated`], a layer in front of the whole
//! FlightService, before any request is decoded: a caller without a valid
//! key gets `Unauthenticated` for every call (unknown commands, garbage
//! tickets, unimplemented methods alike), so it learns nothing of what the
//! service offers. Only Handshake passes through, to check its basic auth.
//!
//! Statements are stateless: a ticket or prepared-statement handle carries
//! the organization and the SQL. It is redeemed only by a key of that
//! organization, and always runs in the redeeming caller's own tenant
//! session, so a forged handle reaches nothing the caller's SQL could not.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use base64::Engine;
use crow_lake::AsOf;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::codegen::Service;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::keys::Scope;
use crate::slots::Permits;
use crate::sql::{self, RunningQuery};
use crate::tenant::Pins;
use crate::ApiState;

/// The catalog and schema of a tenant session (as in SQL:
/// `datafusion.public.interactions`).
pub const CATALOG: &str = "datafusion";
/// See [`CATALOG`].
pub const SCHEMA: &str = "public";

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
type HandshakeStream =
    Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send + 'static>>;

/// Serve Flight SQL on `listener` until `shutdown` completes; over TLS
/// only when `tls` is given (see [`tls_acceptor`]).
pub async fn serve(
    state: Arc<ApiState>,
    listener: tokio::net::TcpListener,
    tls: Option<crate::pg::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let service = Authenticated {
        inner: FlightServiceServer::new(FlightSql {
            state: state.clone(),
        }),
        state,
    };
    let mut server = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("flight_sql", call = %req.uri().path()));
    let router = server.add_service(service);
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    shutdown,
                )
                .await
        }
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, acceptor), shutdown)
                .await
        }
    }
}

/// The TLS acceptor of the Flight SQL listener (`server.flight_tls_cert`
/// and `_key`): HTTP/2 negotiated by ALPN, as gRPC clients require.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<crate::pg::TlsAcceptor, String> {
    let mut config = crate::pg::tls_config(cert, key, "server.flight_tls")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(crate::pg::TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connection of the Flight SQL listener.
struct TlsConn {
    stream: pgwire::tokio::tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: std::net::SocketAddr,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = std::net::SocketAddr;

    fn connect_info(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The TLS connections of `listener`: each handshake runs on its own task
/// (at most 10 s), so a slow or failing client holds up no other.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: crate::pg::TlsAcceptor,
) -> impl Stream<Item = std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsConn>(16);
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "flight: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = socket.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(socket),
                );
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(TlsConn { stream, peer }).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "flight: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "flight: TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}

/// The FlightService's methods, as counted in the request metrics (any
/// other path is counted as `unknown`: callers choose no label).
const METHODS: &[&str] = &[
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
];

/// The FlightService behind a key check: every call but Handshake is
/// authenticated (as [`FlightSql::principal`] does) before the service
/// decodes anything; the caller's [`Principal`] travels in the request's
/// extensions so the handlers do not check (and rate-limit) it twice.
#[derive(Clone)]
pub struct Authenticated {
    inner: FlightServiceServer<FlightSql>,
    state: Arc<ApiState>,
}

impl NamedService for Authenticated {
    const NAME: &'static str = <FlightServiceServer<FlightSql> as NamedService>::NAME;
}

type HttpResponse = axum::http::Response<tonic::body::Body>;

impl Service<axum::http::Request<tonic::body::Body>> for Authenticated {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<axum::http::Request<tonic::body::Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let method = req.uri().path().rsplit('/').next().unwrap_or("");
            let method = METHODS.iter().find(|m| **m == method).copied();
            if method != Some("Handshake") {
                let mut headers = HeaderMap::new();
                if let Some(v) = req.headers().get(header::AUTHORIZATION) {
                    headers.insert(header::AUTHORIZATION, v.clone());
                }
                match check_key(&state, &headers).await {
                    Ok(p) => {
                        req.extensions_mut().insert(p);
                    }
                    Err(e) => {
                        let call = method.unwrap_or("unknown");
                        state
                            .metrics
                            .request(&format!("flight_sql:{call}"), e.status.as_u16());
                        return Ok(status(e).into_http());
                    }
                }
            }
            inner.call(req).await
        })
    }
}

/// The caller of `headers` (only its `authorization`), by its bearer key.
async fn check_key(state: &ApiState, headers: &HeaderMap) -> ApiResult<Principal> {
    if headers.is_empty() {
        return Err(ApiError::unauthorized(
            "send an API key as `authorization: Bearer SECRET`, or handshake with the key id \
             as user name and the secret as password",
        ));
    }
    auth::authenticate(&state.keys, &state.limiter, headers, Scope::Read).await
}

/// The Flight SQL service.
pub struct FlightSql {
    state: Arc<ApiState>,
}

/// What a ticket or prepared-statement handle holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Handle {
    /// The organization whose key issued it.
    org: String,
    /// The query.
    sql: String,
    /// Time travel, as `POST /api/v1/sql`'s `as_of` (the `x-crow-as-of`
    /// header of the call that planned it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    as_of: Option<String>,
    /// Time travel, as `POST /api/v1/sql`'s `versions` (`x-crow-versions`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<String, u64>,
    /// Values bound to the query's `$1`, `$2`, … (`DoPut` of a prepared
    /// statement): one row, as an Arrow IPC stream in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl Handle {
    /// The tables' time travel.
    fn pins(&self) -> ApiResult<(AsOf, Pins)> {
        sql::pins(&sql::SqlRequest {
            sql: String::new(),
            as_of: self.as_of.clone(),
            versions: self.versions.clone(),
        })
    }

    /// The bound parameters, if any.
    fn params(&self) -> ApiResult<Option<ParamValues>> {
        let Some(b64) = &self.params else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_request(
                "invalid_ticket",
                "this statement handle's parameters are not readable",
            )
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad())?;
        let mut reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                .map_err(|_| bad())?;
        let batch = reader.next().ok_or_else(bad)?.map_err(|_| bad())?;
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0).map_err(|_| bad()))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Some(ParamValues::from(values)))
    }
}

fn handle(p: &Principal, mut h: Handle) -> ApiResult<Vec<u8>> {
    h.org = p.org_id.clone();
    serde_json::to_vec(&h).map_err(|e| ApiError::internal("encoding a Flight SQL handle", &e))
}

/// The handle of a ticket or statement, if it was issued to `p`'s
/// organization.
fn redeem(p: &Principal, bytes: &[u8]) -> ApiResult<Handle> {
    let h: Handle = serde_json::from_slice(bytes).map_err(|_| {
        ApiError::bad_request(
            "invalid_ticket",
            "this ticket or statement handle was not issued by this server",
        )
    })?;
    if h.org != p.org_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_ticket",
            "this ticket or statement handle belongs to another organization",
        ));
    }
    Ok(h)
}

/// A query's handle with the time travel of a call's `x-crow-as-of` and
/// `x-crow-versions` (a JSON object of table versions) metadata, checked
/// as `POST /api/v1/sql` checks its `as_of` and `versions`.
fn new_handle(md: &MetadataMap, sql: String) -> ApiResult<Handle> {
    let text = |name: &str| -> ApiResult<Option<String>> {
        md.get(name)
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    ApiError::bad_request("invalid_as_of", format!("`{name}` is not text"))
                })
            })
            .transpose()
    };
    let versions = match text("x-crow-versions")? {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_str(&v).map_err(|e| {
            ApiError::bad_request(
                "invalid_version",
                format!("`x-crow-versions` must be a JSON object like {{\"products\": 3}}: {e}"),
            )
        })?,
    };
    let h = Handle {
        org: String::new(),
        sql,
        as_of: text("x-crow-as-of")?,
        versions,
        params: None,
    };
    h.pins()?;
    Ok(h)
}

/// One row of values for a prepared statement's parameters, cast to the
/// types the planner inferred for them, as a handle's `params`.
fn bind(batches: &[RecordBatch], types: &[Option<DataType>]) -> ApiResult<Option<String>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    if rows != 1 {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!("bind one row of parameters to a query, not {rows}"),
        ));
    }
    if batch.num_columns() != types.len() {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "the statement has {} parameters; {} were bound",
                types.len(),
                batch.num_columns()
            ),
        ));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, (c, t)) in batch.columns().iter().zip(types).enumerate() {
        let c = match t {
            Some(t) if t != c.data_type() => arrow::compute::cast(c, t).map_err(|e| {
                ApiError::bad_request("invalid_parameters", format!("parameter ${}: {e}", i + 1))
            })?,
            _ => c.clone(),
        };
        fields.push(arrow::datatypes::Field::new(
            format!("${}", i + 1),
            c.data_type().clone(),
            true,
        ));
        columns.push(c.slice(0, 1));
    }
    let one = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| ApiError::internal("binding parameters", &e))?;
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &one.schema())
            .map_err(|e| ApiError::internal("binding parameters", &e))?;
        w.write(&one)
            .and_then(|()| w.finish())
            .map_err(|e| ApiError::internal("binding parameters", &e))?;
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(buf)))
}

/// The parameter schema of a prepared statement (unknown types as text).
fn parameter_schema(types: &[Option<DataType>]) -> Schema {
    Schema::new(
        types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                arrow::datatypes::Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Utf8),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    )
}

/// CROW's error as a gRPC status, with CROW's message and its code in the
/// `x-crow-code` metadata.
pub fn status(e: ApiError) -> Status {
    let code = match (e.status.as_u16(), e.code) {
        (_, "ddl_not_allowed" | "dml_not_allowed" | "statement_not_allowed") => {
            Code::PermissionDenied
        }
        (_, "resources_exhausted" | "result_too_large") => Code::ResourceExhausted,
        (401, _) => Code::Unauthenticated,
        (403, _) => Code::PermissionDenied,
        (404, _) => Code::NotFound,
        (408, _) => Code::DeadlineExceeded,
        (429, _) => Code::ResourceExhausted,
        (503, _) => Code::Unavailable,
        (400..=499, _) => Code::InvalidArgument,
        _ => Code::Internal,
    };
    let mut s = Status::new(code, e.detail);
    s.metadata_mut()
        .insert("x-crow-code", MetadataValue::from_static(e.code));
    s
}

/// The `authorization` metadata as an HTTP header map (nothing else: no
/// cookie reaches [`auth::authenticate`] from here).
fn auth_headers(md: &MetadataMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = md
        .get("authorization")
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

fn info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> ApiResult<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| ApiError::internal("encoding a Flight SQL schema", &e))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_ordered(true))
}

/// One batch as a Flight data stream.
fn one_batch(batch: Result<RecordBatch, FlightError>) -> ApiResult<DoGetStream> {
    let batch = batch.map_err(|e| ApiError::internal("building Flight SQL metadata", &e))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map(|r| r.map_err(Status::from));
    Ok(Box::pin(stream))
}

/// What `GetSqlInfo` answers.
fn sql_info() -> Result<SqlInfoData, FlightError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "CROW");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    // SQL_SUPPORTED_TRANSACTION_NONE.
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build()
}

/// SQL `LIKE` with `%` and `_` (the patterns of `GetTables`).
fn like(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('_', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// A running query's batches, cast to plain types, within the query's
/// deadline and the row cap; ends after the first error.
struct Batches {
    state: Arc<ApiState>,
    query: RunningQuery,
    schema: SchemaRef,
    deadline: tokio::time::Instant,
    rows: u64,
    done: bool,
    // The query's concurrency slots, held until the stream is dropped.
    _permits: Permits,
}

impl Batches {
    async fn next(&mut self) -> Option<Result<RecordBatch, FlightError>> {
        if self.done {
            return None;
        }
        let max = self.state.cfg.max_result_rows;
        let r = match tokio::time::timeout_at(self.deadline, self.query.next()).await {
            Err(_) => Err(sql::query_timeout(&self.state)),
            Ok(None) => {
                self.done = true;
                return None;
            }
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(b))) => {
                self.rows += b.num_rows() as u64;
                if self.rows > max {
                    Err(sql::too_large(max))
                } else {
                    sql::cast_to(&b, &self.schema)
                        .map_err(|e| ApiError::internal("converting a result batch", &e))
                }
            }
        };
        if let Err(e) = &r {
            self.done = true;
            tracing::warn!(reason = %e.detail, "aborting a Flight SQL result");
        }
        Some(r.map_err(|e| FlightError::Tonic(Box::new(status(e)))))
    }
}

impl FlightSql {
    /// A service over `state`.
    pub fn new(state: Arc<ApiState>) -> Self {
        Self { state }
    }

    /// The caller of a request: as [`Authenticated`] found it, or (when
    /// the service is used without that layer) by its bearer key.
    fn principal<T>(
        &self,
        request: &Request<T>,
    ) -> impl Future<Output = ApiResult<Principal>> + Send + '_ {
        // Read now: a request's body (a stream) need not be `Sync`.
        let known = request.extensions().get::<Principal>().cloned();
        let headers = auth_headers(request.metadata());
        async move {
            match known {
                Some(p) => Ok(p),
                None => check_key(&self.state, &headers).await,
            }
        }
    }

    /// Count a call in the API's request metrics and answer it.
    fn done<T>(&self, call: &str, r: ApiResult<T>) -> Result<T, Status> {
        let code = r.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
        self.state
            .metrics
            .request(&format!("flight_sql:{call}"), code);
        r.map_err(status)
    }

    /// The bearer token for a Handshake's basic auth (or bearer) header.
    async fn handshake_token(&self, md: &MetadataMap) -> ApiResult<String> {
        let headers = auth_headers(md);
        if let Some(secret) = auth::bearer(&headers) {
            check_key(&self.state, &headers).await?;
            return Ok(secret.to_string());
        }
        let refused = || {
            ApiError::unauthorized(
                "handshake with basic auth: the API key's id as user name, its secret as password",
            )
        };
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Basic "))
            .ok_or_else(refused)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(refused)?;
        let (user, secret) = decoded.split_once(':').ok_or_else(refused)?;
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| refused())?,
        );
        let p = auth::authenticate(&self.state.keys, &self.state.limiter, &h, Scope::Read).await?;
        if p.key_id != user {
            return Err(ApiError::unauthorized(
                "the user name is not this API key's id",
            ));
        }
        Ok(secret.to_string())
    }

    /// `GetFlightInfo` of a query: planned (refusals answered here), with a
    /// ticket bound to the caller's organization.
    async fn query_info(
        &self,
        request: Request<FlightDescriptor>,
        sql: Option<String>,
        handle_bytes: Option<&[u8]>,
    ) -> ApiResult<FlightInfo> {
        let p = self.principal(&request).await?;
        let h = match (sql, handle_bytes) {
            (Some(s), _) => new_handle(request.metadata(), s)?,
            (None, Some(h)) => redeem(&p, h)?,
            (None, None) => return Err(ApiError::bad_request("invalid_query", "no query")),
        };
        let (schema, _) = sql::result_schema_at(&self.state, &p, h.sql.clone(), h.pins()?).await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle(&p, h)?.into(),
        }
        .as_any()
        .encode_to_vec();
        info(&sql::plain_schema(&schema), ticket, request.into_inner())
    }

    /// `DoGet` of a query ticket: the result, streamed.
    async fn query_stream(
        &self,
        request: Request<Ticket>,
        ticket: &[u8],
    ) -> ApiResult<DoGetStream> {
        let started = Instant::now();
        let p = self.principal(&request).await?;
        let h = redeem(&p, ticket)?;
        let (pins, params) = (h.pins()?, h.params()?);
        let (query, permits) =
            sql::start_params_for(&self.state, &p, h.sql, pins, started, params).await?;
        let schema = sql::plain_schema(&query.schema);
        let batches = Batches {
            deadline: tokio::time::Instant::from_std(started) + self.state.query_timeout(),
            state: self.state.clone(),
            query,
            schema: schema.clone(),
            rows: 0,
            done: false,
            _permits: permits,
        };
        let stream =
            futures::stream::unfold(
                batches,
                |mut b| async move { b.next().await.map(|r| (r, b)) },
            );
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream)
            .map(|r| r.map_err(Status::from));
        Ok(Box::pin(flight))
    }

    /// `DoPut` of a prepared statement's parameters: a new handle holding
    /// them (the service keeps no state).
    async fn bind_parameters(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> ApiResult<DoPutPreparedStatementResult> {
        let p = self.principal(&request).await?;
        let mut h = redeem(&p, &cmd.prepared_statement_handle)?;
        let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map(|r| r.map_err(FlightError::from)),
        );
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| {
            ApiError::bad_request("invalid_parameters", format!("reading parameters: {e}"))
        })?;
        let (_, types) = sql::result_schema_at(&self.state, &p, h.sql.clone(), h.pins()?).await?;
        h.params = bind(&batches, &types)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle(&p, h)?.into()),
        })
    }

    /// `GetFlightInfo` of a metadata command: its schema, and the command
    /// itself as the ticket.
    async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        ticket: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = match self.principal(&request).await {
            Ok(_) => info(&schema, ticket, request.into_inner()),
            Err(e) => Err(e),
        };
        self.done("GetFlightInfo", r).map(Response::new)
    }

    /// `GetTables`: the tables of the caller's tenant session, with their
    /// schemas (as queries return them) when asked.
    async fn tables<T>(&self, q: CommandGetTables, request: &Request<T>) -> ApiResult<DoGetStream> {
        let p = self.principal(request).await?;
        let (include, pattern) = (q.include_schema, q.table_name_filter_pattern.clone());
        let mut builder = q.into_builder();
        let (ctx, tenant) = sql::tenant_session(&self.state, &p, AsOf::Latest, Pins::new());
        let public = ctx
            .catalog(CATALOG)
            .and_then(|c| c.schema(SCHEMA))
            .ok_or_else(|| ApiError::internal("listing tables", &"no public schema"))?;
        let empty: SchemaRef = Arc::new(Schema::empty());
        for name in public.table_names() {
            let wanted = pattern.as_deref().is_none_or(|p| like(p, &name));
            // Only the schemas the answer holds are loaded.
            let schema = if include && wanted {
                match public.table(&name).await {
                    Ok(Some(t)) => sql::plain_schema(&t.schema()),
                    Ok(None) => empty.clone(),
                    Err(e) => return Err(sql::df_error(&e, Some(&tenant))),
                }
            } else {
                empty.clone()
            };
            builder
                .append(CATALOG, SCHEMA, &name, "TABLE", &schema)
                .map_err(|e| ApiError::internal("listing tables", &e))?;
        }
        one_batch(builder.build())
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let r = self.handshake_token(request.metadata()).await;
        let token = self.done("Handshake", r)?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::unauthenticated("the key's secret is not valid metadata"))?;
        let out: HandshakeStream = Box::pin(futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        })]));
        let mut response = Response::new(out);
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = self.query_info(request, Some(query.query), None).await;
        self.done("GetFlightInfo", r).map(Response::new)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let r = self
            .query_info(request, None, Some(&cmd.prepared_statement_handle))
            .await;
        self.done("GetFlightInfo", r).map(Response::new)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = self.query_stream(request, &ticket.statement_handle).await;
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = self
            .query_stream(request, &cmd.prepared_statement_handle)
            .await;
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let r = async {
            let p = self.principal(&request).await?;
            let h = new_handle(request.metadata(), query.query.clone())?;
            let (schema, types) =
                sql::result_schema_at(&self.state, &p, query.query.clone(), h.pins()?).await?;
            let ipc = |schema: &Schema| -> ApiResult<_> {
                let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
                    .try_into()
                    .map_err(|e| ApiError::internal("encoding a Flight SQL schema", &e))?;
                Ok(bytes)
            };
            Ok(ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle(&p, h)?.into(),
                dataset_schema: ipc(&sql::plain_schema(&schema))?,
                parameter_schema: if types.is_empty() {
                    Default::default()
                } else {
                    ipc(&parameter_schema(&types))?
                },
            })
        }
        .await;
        self.done("CreatePreparedStatement", r)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let r = async {
            let p = self.principal(&request).await?;
            redeem(&p, &query.prepared_statement_handle).map(|_| ())
        }
        .await;
        self.done("ClosePreparedStatement", r)
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let r = self.bind_parameters(cmd, request).await;
        self.done("DoPut", r)
    }

    async fn do_put_statement_update(
        &self,
        _cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let r = self.read_only(&request).await;
        self.done("DoPut", r)
    }

    async fn do_put_statement_ingest(
        &self,
        _cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let r = self.read_only(&request).await;
        self.done("DoPut", r)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(request, query.into_builder().schema(), ticket)
            .await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(request, query.into_builder().schema(), ticket)
            .await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(request, query.into_builder().schema(), ticket)
            .await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(request, query.into_builder().schema(), ticket)
            .await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let data = sql_info().map_err(|e| status(ApiError::internal("SqlInfo", &e)))?;
        let schema = query.into_builder(&data).schema();
        self.metadata_info(request, schema, ticket).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = match self.principal(&request).await {
            Ok(_) => {
                let mut b = query.into_builder();
                b.append(CATALOG);
                one_batch(b.build())
            }
            Err(e) => Err(e),
        };
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = match self.principal(&request).await {
            Ok(_) => {
                let mut b = query.into_builder();
                b.append(CATALOG, SCHEMA);
                one_batch(b.build())
            }
            Err(e) => Err(e),
        };
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = self.tables(query, &request).await;
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = match self.principal(&request).await {
            Ok(_) => {
                let mut b = query.into_builder();
                b.append("TABLE");
                one_batch(b.build())
            }
            Err(e) => Err(e),
        };
        self.done("DoGet", r).map(Response::new)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let r = match self.principal(&request).await {
            Ok(_) => sql_info()
                .map_err(|e| ApiError::internal("SqlInfo", &e))
                .and_then(|data| one_batch(query.into_builder(&data).build())),
            Err(e) => Err(e),
        };
        self.done("DoGet", r).map(Response::new)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightSql {
    /// Writes are refused (after authentication, so a stranger learns
    /// nothing).
    async fn read_only<T>(&self, request: &Request<T>) -> ApiResult<i64> {
        self.principal(request).await?;
        self.state.metrics.refused("dml_not_allowed");
        Err(ApiError::bad_request(
            "dml_not_allowed",
            "INSERT, UPDATE, DELETE and ingestion are not allowed: the API is read-only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("inter%", "interactions"));
        assert!(like("%", ""));
        assert!(like("s_ssions", "sessions"));
        assert!(!like("s_ssions", "ssessions"));
        assert!(!like("products", "product"));
        assert!(like("%act%", "interactions"));
    }

    #[test]
    fn refusals_map_to_grpc_codes() {
        let refused = ApiError::bad_request("dml_not_allowed", "no");
        assert_eq!(status(refused).code(), Code::PermissionDenied);
        let bad = ApiError::bad_request("invalid_query", "syntax");
        let s = status(bad);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "syntax");
        assert_eq!(
            status(ApiError::unauthorized("x")).code(),
            Code::Unauthenticated
        );
    }
}
