//! The HTTP loop of `crow serve`: hyper with a header-read timeout (a
//! client that never finishes its request head, or idles on keep-alive, is
//! disconnected) and a cap on open connections (further clients wait in the
//! listen backlog), with graceful shutdown.
//!
//! `axum::serve` has neither: it runs hyper without a timer, so a
//! connection that sends half a request line stays open forever.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use crow_schemas::metrics::{register, Counter, Gauge, Registry};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Limits of the loop (from `server.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
}

/// Connection counters, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: Gauge,
    accepted: Counter,
    at_capacity: Counter,
}

impl ConnStats {
    /// Register the connection counters into `crow serve`'s registry.
    pub fn register(&self, r: &mut Registry) {
        register(
            r,
            "crow_http_connections_open",
            "HTTP connections open now.",
            self.open.clone(),
        );
        register(
            r,
            "crow_http_connections_accepted_total",
            "HTTP connections accepted.",
            self.accepted.clone(),
        );
        register(
            r,
            "crow_http_connections_at_capacity_total",
            "Times a new connection waited because server.max_connections were open.",
            self.at_capacity.clone(),
        );
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then stop
/// accepting, let open connections finish their requests and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (closing, closing_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            stats.at_capacity.inc();
            tracing::warn!(
                max_connections = max,
                "server.max_connections reached; new connections wait"
            );
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Per-connection failures (reset before accept) are
                    // normal; running out of file descriptors is not, and
                    // retrying at once would spin.
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::warn!(error = %e, "accept failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.inc();
        stats.open.inc();
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            closing_rx.clone(),
            stats.clone(),
            permit,
        ));
    }
    let _ = closing.send(true);
    // Every connection holds a slot until it is done: wait for all of them.
    let _ = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

/// Serve one accepted connection (its peer address given to handlers as
/// `ConnectInfo`) until it ends, or until the server closes — then let it
/// finish its request; `permit` (its slot) is released when it is done.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
    stats: Arc<ConnStats>,
    permit: OwnedSemaphorePermit,
) {
    let svc = app.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        req
    });
    // hyper's header timeout starts with the first byte (the version
    // sniffing of the auto builder waits for it unbounded): a client
    // that connects and says nothing is closed here.
    let mut first = [0u8; 1];
    if tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first))
        .await
        .is_err()
    {
        tracing::debug!(%peer, "closing a connection that sent nothing");
        stats.open.dec();
        drop(permit);
        return;
    }
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut conn =
        pin!(builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc)));
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = async {
            // The guard `wait_for` returns must not live across an await.
            let _ = closing.wait_for(|c| *c).await;
        } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
    stats.open.dec();
    drop(permit);
}
