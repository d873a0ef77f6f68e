//! The Postgres wire protocol (`crow serve --pg-listen ADDR`): psql, BI
//! tools and Postgres drivers query the lake as they would a database.
//!
//! It is a second door to exactly what `POST /api/v1/sql` runs:
//! - **Startup.** The user name is the key's id or its organization's id;
//!   the password is the API key's secret, checked like a Bearer token
//!   ([`crate::auth::authenticate_key`]: unknown, revoked, expired keys and
//!   disabled organizations are refused; the key's rate limit applies).
//!   Only a hash of each key is stored, so the password travels as a
//!   cleartext password message: over TLS (`server.pg_tls_cert`/`_key`),
//!   or on a loopback connection; any other connection without TLS is
//!   refused before the password is asked for.
//! - **Every statement** re-checks the key through the key cache (so a key
//!   revoked while a connection is open is refused at its next statement,
//!   within `api.key_cache_seconds`), takes the key's and organization's
//!   concurrency slots, and runs in a fresh tenant session
//!   ([`crate::ApiState::tenant_session`]) through [`crate::sql`]'s
//!   planner, refusals, timeout, memory pool and row cap.
//! - What drivers send on connect and never affects data — `SET`, `BEGIN`/
//!   `COMMIT`/`ROLLBACK`, `SHOW` of session parameters, `DISCARD`,
//!   `DEALLOCATE` — is answered here without running anything.

mod catalog;
mod encode;
mod exec;
mod session;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::tokio_rustls::rustls;
use tokio::net::TcpListener;

use crate::auth::Principal;
use crate::keys::Scope;
use crate::ApiState;

pub use pgwire::tokio::TlsAcceptor;

/// Who a connection authenticated as, kept for its lifetime: the key's
/// secret, re-checked before every statement.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    secret: String,
}

/// Checks a connection's password as an API key secret.
struct KeySource {
    st: Arc<ApiState>,
}

impl Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySource")
    }
}

/// An error sent to a client: a SQLSTATE and CROW's message.
pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

#[async_trait]
impl AuthSource<Session> for KeySource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        // Only hashes of keys are stored: passwords are verified, never read.
        Err(fatal("28000", "password authentication only"))
    }

    async fn verify_password(
        &self,
        login: &LoginInfo,
        presented: &[u8],
    ) -> PgWireResult<Option<Session>> {
        let user = login.user().unwrap_or_default().to_string();
        let secret = std::str::from_utf8(presented)
            .map_err(|_| fatal("28P01", "the password is not an API key"))?
            .to_string();
        let principal =
            crate::auth::authenticate_key(&self.st.keys, &self.st.limiter, &secret, Scope::Read)
                .await
                .map_err(|e| {
                    tracing::debug!(user, code = e.code, "pg connection refused");
                    fatal(auth_sqlstate(e.code), e.detail.clone())
                })?;
        if user != principal.key_id && user != principal.org_id {
            return Err(fatal(
                "28P01",
                "the user name must be the API key's id or its organization's id",
            ));
        }
        Ok(Some(Session { secret }))
    }
}

fn auth_sqlstate(code: &str) -> &'static str {
    match code {
        "rate_limited" => "53300",
        "unauthorized" => "28P01",
        "insufficient_scope" => "42501",
        _ => "28000",
    }
}

/// Re-check a connection's key before a statement: revoked, expired and
/// rate-limited keys are refused at once.
pub(crate) async fn recheck(st: &ApiState, session: &Session) -> PgWireResult<Principal> {
    crate::auth::authenticate_key(&st.keys, &st.limiter, &session.secret, Scope::Read)
        .await
        .map_err(|e| exec::api_error(&e))
}

/// The startup handler: TLS policy, then a cleartext password checked as
/// an API key.
struct Startup {
    driver: AuthDriver<DefaultServerParameterProvider, Session>,
    passwords: CleartextPasswordAuth<KeySource>,
}

fn is_loopback(addr: std::net::SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !client.is_secure() && !is_loopback(client.socket_addr()) {
                    return Err(fatal(
                        "28000",
                        "connect with TLS (sslmode=require): the password is an API key \
                         and is only accepted over TLS or from this machine",
                    ));
                }
                if client.metadata().get("user").is_none_or(|u| u.is_empty()) {
                    return Err(PgWireError::UserNameRequired);
                }
                self.driver
                    .begin_authentication(client, self.passwords.create())
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                if let AuthOutcome::Authenticated {
                    identity,
                    final_message,
                } = self.driver.advance_authentication(client, m).await?
                {
                    let Some(session) = identity else {
                        return Err(fatal("28000", "authentication failed"));
                    };
                    client.session_extensions().insert(session);
                    self.driver
                        .complete_authentication(client, final_message)
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Every handler of one listener.
struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<exec::Queries>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// The TLS acceptor of `cert` (PEM chain) and `key` (PEM private key).
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    tls_config(cert, key, "server.pg_tls").map(|c| TlsAcceptor::from(Arc::new(c)))
}

/// The rustls server configuration of `cert` (PEM chain) and `key` (PEM
/// private key), errors naming the settings `{setting}_cert`/`_key`.
pub fn tls_config(cert: &str, key: &str, setting: &str) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting}_cert `{cert}`: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{setting}_cert `{cert}` holds no PEM certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{setting}_key `{key}`: {e}"))?;
    // Both ring and aws-lc-rs are in the build: name the provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{setting}_cert / {setting}_key: {e}"))
}

/// Serve the Postgres wire protocol on `listener` until `shutdown`
/// resolves; at most `max_connections` connections at once (others wait
/// in the backlog).
pub async fn serve(
    listener: TcpListener,
    st: Arc<ApiState>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let manager = Arc::new(ConnectionManager::new());
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = format!("{} (CROW)", exec::SERVER_VERSION);
    params.is_superuser = false;
    params.default_transaction_read_only = true;
    let handlers = Arc::new(Handlers {
        startup: Arc::new(Startup {
            driver: AuthDriver::new(params).with_connection_manager(manager.clone()),
            passwords: CleartextPasswordAuth::new(Arc::new(KeySource { st: st.clone() })),
        }),
        queries: Arc::new(exec::Queries::new(st)),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pg: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handlers = handlers.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %e, "pg connection ended");
            }
            drop(permit);
        });
    }
}
