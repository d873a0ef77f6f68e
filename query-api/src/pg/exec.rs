//! Statements of a Postgres-wire connection: the simple and the extended
//! query protocol, over [`crate::sql`]'s planner and runner.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use crow_lake::AsOf;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::PgWireBackendMessage;

use super::session::{self, Command, Cursor};
use super::{encode, recheck, user_error, Session};
use crate::error::ApiError;
use crate::slots::Permits;
use crate::sql::RunningQuery;
use crate::ApiState;

/// The server version `version()` and `SHOW server_version` report: the
/// Postgres protocol and dialect level drivers may rely on.
pub const SERVER_VERSION: &str = "16.6";

/// An API error as a Postgres error: its SQLSTATE and CROW's message.
pub(crate) fn api_error(e: &ApiError) -> PgWireError {
    let code = match e.code {
        "unknown_table" => "42P01",
        "ddl_not_allowed" | "dml_not_allowed" | "statement_not_allowed" | "insufficient_scope" => {
            "42501"
        }
        "query_timeout" => "57014",
        "result_too_large" => "54000",
        "statement_too_large" | "statement_too_complex" => "54001",
        "resources_exhausted" => "53200",
        "too_many_queries" | "rate_limited" => "53300",
        "unauthorized" => "28000",
        "invalid_query" if e.detail.contains("rror during planning") => "42000",
        "invalid_query" if e.detail.contains("SQL error") || e.detail.contains("arser") => "42601",
        "invalid_query" => "42000",
        "query_failed" => "22000",
        "unavailable" => "08006",
        _ if e.status.is_server_error() => "XX000",
        _ => "42000",
    };
    user_error(code, e.detail.clone())
}

/// A statement answered without running anything.
#[derive(Debug, Clone)]
pub enum Fixed {
    /// Accepted and ignored (`SET`, `DISCARD ALL`, …), with its tag.
    Tag(&'static str),
    /// `BEGIN`: a read-only connection has nothing to isolate.
    Begin,
    /// `COMMIT` or `ROLLBACK`.
    End(&'static str),
    /// `SHOW` of a session parameter.
    Show(String, String),
    /// No rows, with these (text) columns: a catalog query every branch
    /// of which reads a catalog CROW keeps empty
    /// ([`super::catalog::empty_answer`]).
    Empty(Vec<String>),
}

/// Session parameters drivers ask for, and CROW's fixed values.
const PARAMETERS: &[(&str, &str)] = &[
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("transaction isolation level", "read committed"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
    ("default_transaction_read_only", "on"),
    ("timezone", "UTC"),
    ("time zone", "UTC"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("search_path", "public"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("is_superuser", "off"),
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("statement_timeout", "0"),
    ("default_table_access_method", "heap"),
];

/// What `sql` is, if it is answered without running anything.
pub fn fixed(sql: &str) -> Option<Fixed> {
    let s = sql.trim().trim_end_matches(';').trim().to_ascii_lowercase();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = s.split(' ').next().unwrap_or("");
    Some(match first {
        "set" => Fixed::Tag("SET"),
        "reset" => Fixed::Tag("RESET"),
        "discard" => Fixed::Tag("DISCARD ALL"),
        "unlisten" => Fixed::Tag("UNLISTEN"),
        "begin" => Fixed::Begin,
        "start" if s.starts_with("start transaction") => Fixed::Begin,
        // Savepoints (psycopg's nested transactions): nothing to undo.
        "savepoint" => Fixed::Tag("SAVEPOINT"),
        "release" => Fixed::Tag("RELEASE"),
        "rollback" if s.starts_with("rollback to ") => Fixed::Tag("ROLLBACK"),
        "commit" | "end" => Fixed::End("COMMIT"),
        "rollback" | "abort" => Fixed::End("ROLLBACK"),
        "show" => {
            let name = s.strip_prefix("show ")?;
            let (name, value) = PARAMETERS.iter().find(|(n, _)| *n == name)?;
            Fixed::Show((*name).to_string(), (*value).to_string())
        }
        _ => return super::catalog::empty_answer(sql).map(Fixed::Empty),
    })
}

fn fixed_response(f: &Fixed) -> Response {
    match f {
        Fixed::Tag(t) => Response::Execution(Tag::new(t)),
        Fixed::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Fixed::End(t) => Response::TransactionEnd(Tag::new(t)),
        Fixed::Show(name, value) => {
            let fields = Arc::new(vec![FieldInfo::new(
                name.clone(),
                None,
                None,
                Type::TEXT,
                FieldFormat::Text,
            )]);
            let mut enc = DataRowEncoder::new(fields.clone());
            let row = enc
                .encode_field(&Some(value.as_str()))
                .map(|()| enc.take_row());
            let mut r = QueryResponse::new(fields, futures::stream::iter(vec![row]));
            r.set_command_tag("SHOW");
            Response::Query(r)
        }
        Fixed::Empty(columns) => {
            let fields = Arc::new(empty_fields(columns, |_| FieldFormat::Text));
            Response::Query(QueryResponse::new(fields, futures::stream::empty()))
        }
    }
}

fn empty_fields(columns: &[String], format: impl Fn(usize) -> FieldFormat) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| FieldInfo::new(c.clone(), None, None, Type::TEXT, format(i)))
        .collect()
}

/// A parsed statement of the extended protocol.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Answered without running anything.
    Fixed(Fixed),
    /// A query: its text, the types of its `$n` parameters and its
    /// result's schema.
    Query {
        /// The SQL.
        sql: String,
        /// Parameter `$i+1`'s type.
        params: Vec<DataType>,
        /// The result's schema.
        schema: SchemaRef,
    },
    /// A statement about SQL-level prepared statements or cursors
    /// ([`session`]), with the types of its `$n` parameters (of a
    /// `DECLARE`'s query) and its result's schema (of `FETCH`, `EXECUTE`).
    Session {
        /// The statement.
        cmd: Command,
        /// Parameter `$i+1`'s type.
        params: Vec<DataType>,
        /// The result's schema, if it has rows.
        schema: Option<SchemaRef>,
    },
}

/// Functions drivers call on connect, with Postgres' answers.
fn add_pg_functions(ctx: &SessionContext) {
    let text = |name: &str, value: String| {
        create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| {
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                    value.clone(),
                ))))
            }),
        )
    };
    ctx.register_udf(text(
        "version",
        format!(
            "PostgreSQL {SERVER_VERSION} (CROW {}, Apache DataFusion {})",
            env!("CARGO_PKG_VERSION"),
            datafusion::DATAFUSION_VERSION
        ),
    ));
    ctx.register_udf(text("current_schema", "public".into()));
    ctx.register_udf(text("current_database", "crow".into()));
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(current_setting),
    ));
}

/// `current_setting(name)`: a session parameter of [`PARAMETERS`], or
/// NULL for one CROW has not.
fn current_setting(args: &[ColumnarValue]) -> datafusion::common::Result<ColumnarValue> {
    let setting = |name: &str| {
        let name = name.trim().to_ascii_lowercase();
        PARAMETERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_string())
    };
    Ok(match args.first() {
        Some(ColumnarValue::Scalar(ScalarValue::Utf8(name))) => {
            ColumnarValue::Scalar(ScalarValue::Utf8(name.as_deref().and_then(setting)))
        }
        Some(ColumnarValue::Array(a)) => {
            let names = a
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .cloned()
                .unwrap_or_else(|| arrow::array::StringArray::from(vec![None::<&str>; a.len()]));
            let out: arrow::array::StringArray =
                names.iter().map(|n| n.and_then(setting)).collect();
            ColumnarValue::Array(Arc::new(out))
        }
        _ => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
    })
}

/// The handler of both query protocols.
pub struct Queries {
    st: Arc<ApiState>,
    parser: Arc<Parser>,
}

impl Queries {
    pub fn new(st: Arc<ApiState>) -> Self {
        Self {
            parser: Arc::new(Parser { st: st.clone() }),
            st,
        }
    }
}

fn session_of(client: &(impl ClientInfo + ?Sized)) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| user_error("28000", "not authenticated"))
}

/// Plans statements for the extended protocol (types of parameters and
/// results), in the caller's tenant session.
pub struct Parser {
    st: Arc<ApiState>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(f) = fixed(sql) {
            return Ok(Some(Prepared::Fixed(f)));
        }
        if let Some(cmd) = session::parse(sql) {
            return self.parse_session(client, cmd?, types).await.map(Some);
        }
        let (sql, params, schema) = self.plan(client, sql, types).await?;
        Ok(Some(Prepared::Query {
            sql,
            params,
            schema,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(match stmt {
            Prepared::Fixed(_) => vec![],
            Prepared::Query { params, .. } | Prepared::Session { params, .. } => {
                params.iter().map(encode::pg_type).collect()
            }
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = |i: usize| column_format.map_or(FieldFormat::Text, |f| f.format_for(i));
        Ok(match stmt {
            Prepared::Fixed(Fixed::Show(name, _)) => vec![FieldInfo::new(
                name.clone(),
                None,
                None,
                Type::TEXT,
                format(0),
            )],
            Prepared::Fixed(Fixed::Empty(columns)) => empty_fields(columns, format),
            Prepared::Fixed(_) | Prepared::Session { schema: None, .. } => vec![],
            Prepared::Query { schema, .. }
            | Prepared::Session {
                schema: Some(schema),
                ..
            } => encode::fields(schema, format),
        })
    }
}

impl Parser {
    /// Plan `sql` in the caller's tenant session: the SQL as it runs, its
    /// parameters' types and its result's schema.
    async fn plan<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<(String, Vec<DataType>, SchemaRef)>
    where
        C: ClientInfo + ?Sized,
    {
        let session = session_of(client)?;
        let p = recheck(&self.st, &session).await?;
        let (ctx, schema) = self.st.tenant_session(&p, AsOf::Latest, Default::default());
        add_pg_functions(&ctx);
        super::catalog::register(&ctx, schema.as_ref());
        let sql = super::catalog::rewrite(sql);
        let st = self.st.clone();
        let text = sql.clone();
        let mut task = self.st.query_rt.spawn(async move {
            let df = crate::sql::plan_query(&st, &ctx, &schema, &text).await?;
            let inferred = df
                .logical_plan()
                .get_parameter_types()
                .map_err(|e| crate::sql::df_error(&e, Some(&schema)))?;
            let out: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            Ok::<_, ApiError>((inferred, out))
        });
        let (inferred, schema) = match task.join().await {
            Ok(r) => r.map_err(|e| api_error(&e))?,
            Err(e) => return Err(user_error("XX000", format!("planning failed: {e}"))),
        };
        let n = inferred
            .keys()
            .filter_map(|k| k.strip_prefix('$')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
            .max(types.len());
        let params = (1..=n)
            .map(|i| {
                inferred
                    .get(&format!("${i}"))
                    .cloned()
                    .flatten()
                    .or_else(|| {
                        types
                            .get(i - 1)
                            .cloned()
                            .flatten()
                            .and_then(|t| encode::arrow_type(&t))
                    })
                    .unwrap_or(DataType::Utf8)
            })
            .collect();
        Ok((sql, params, schema))
    }

    /// A session statement of the extended protocol: the parameters of a
    /// `DECLARE`'s query, the result of a `FETCH` (the cursor's) or an
    /// `EXECUTE` (the prepared statement's).
    async fn parse_session<C>(
        &self,
        client: &C,
        cmd: Command,
        types: &[Option<Type>],
    ) -> PgWireResult<Prepared>
    where
        C: ClientInfo + ?Sized,
    {
        let (params, schema) = match &cmd {
            Command::Declare { sql, .. } => {
                let (_, params, _) = self.plan(client, sql, types).await?;
                (params, None)
            }
            Command::Fetch { name, skip, .. } => {
                let conn = session::conn(client);
                let cursors = conn.cursors.lock().await;
                let c = cursors.get(name).ok_or_else(|| no_cursor(name))?;
                (vec![], (!skip).then(|| c.schema.clone()))
            }
            Command::Execute { name, .. } => {
                let stmt = prepared_statement(client, name)?;
                let (_, _, schema) = self.plan(client, &stmt.sql, &[]).await?;
                (vec![], Some(schema))
            }
            _ => (vec![], None),
        };
        Ok(Prepared::Session {
            cmd,
            params,
            schema,
        })
    }
}

/// A query stopped after `seconds` (`api.query_timeout_seconds`).
pub(super) fn timed_out(seconds: u64) -> PgWireError {
    user_error(
        "57014",
        format!("the query ran longer than {seconds} s and was cancelled"),
    )
}

fn no_cursor(name: &str) -> PgWireError {
    user_error("34000", format!("cursor \"{name}\" does not exist"))
}

fn prepared_statement(
    client: &(impl ClientInfo + ?Sized),
    name: &str,
) -> PgWireResult<session::Statement> {
    let conn = session::conn(client);
    let stmts = conn
        .statements
        .lock()
        .map_err(|_| user_error("XX000", "prepared statements unavailable"))?;
    stmts.get(name).cloned().ok_or_else(|| {
        user_error(
            "26000",
            format!("prepared statement \"{name}\" does not exist"),
        )
    })
}

/// A running query's rows, batch by batch, within the row cap and the
/// deadline; cancelled by a cancel request while it streams.
struct Rows {
    query: RunningQuery,
    fields: Arc<Vec<FieldInfo>>,
    ready: VecDeque<DataRow>,
    rows: u64,
    max_rows: u64,
    deadline: tokio::time::Instant,
    timeout: u64,
    handle: Option<Arc<ConnectionHandle>>,
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
    done: bool,
    _permits: Permits,
}

impl Rows {
    fn take(&mut self, batch: &arrow::array::RecordBatch) -> PgWireResult<()> {
        self.rows += batch.num_rows() as u64;
        if self.rows > self.max_rows {
            return Err(user_error(
                "54000",
                format!(
                    "the result has more than {} rows; aggregate, add a LIMIT, or use an export",
                    self.max_rows
                ),
            ));
        }
        self.ready.extend(encode::rows(batch, &self.fields)?);
        Ok(())
    }

    async fn next_row(&mut self) -> Option<PgWireResult<DataRow>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if self.cancel.is_none() {
                // After the statement's own cancel window (planning and the
                // first batch): rows are streamed outside it.
                if let Some(h) = &self.handle {
                    self.cancel = Some(h.start_query().await);
                }
            }
            let (query, cancel) = (&mut self.query, &mut self.cancel);
            let cancelled = async {
                match cancel.as_mut() {
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let deadline = self.deadline;
            let next = tokio::select! {
                n = tokio::time::timeout_at(deadline, query.next()) => Some(n),
                () = cancelled => None,
            };
            let Some(next) = next else {
                self.done = true;
                return Some(Err(PgWireError::QueryCanceled));
            };
            match next {
                Err(_) => {
                    self.done = true;
                    return Some(Err(timed_out(self.timeout)));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(api_error(&e)));
                }
                Ok(Some(Ok(b))) => {
                    if let Err(e) = self.take(&b) {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

impl Queries {
    /// Start `sql` for `client`'s key: re-checked, within its slots, in a
    /// fresh tenant session (planned and refused as on the HTTP path).
    async fn start<C>(
        &self,
        client: &C,
        sql: &str,
        params: Option<ParamValues>,
    ) -> PgWireResult<(
        RunningQuery,
        Permits,
        tokio::time::Instant,
        std::time::Instant,
    )>
    where
        C: ClientInfo + Sync + ?Sized,
    {
        let session = session_of(client)?;
        let st = &self.st;
        let p = recheck(st, &session).await?;
        let permits = st
            .slots
            .acquire(&p.key_id, &p.org_id)
            .map_err(|e| api_error(&e))?;
        let started = std::time::Instant::now();
        let (ctx, schema) = st.tenant_session(&p, AsOf::Latest, Default::default());
        add_pg_functions(&ctx);
        super::catalog::register(&ctx, schema.as_ref());
        tracing::debug!(org = %p.org_id, key = %p.key_id, "pg query");
        let deadline = tokio::time::Instant::from_std(started) + st.query_timeout();
        let limit = usize::try_from(st.cfg.max_result_rows.saturating_add(1)).unwrap_or(usize::MAX);
        let query = RunningQuery::start_with_params(
            st,
            ctx,
            schema,
            super::catalog::rewrite(sql),
            params,
            Some(limit),
            deadline,
        )
        .await
        .map_err(|e| api_error(&e))?;
        Ok((query, permits, deadline, started))
    }

    /// Run `sql` for `client`'s key ([`Queries::start`]). Returns once the
    /// first rows are ready (so planning and a slow first batch can be
    /// cancelled and time out).
    async fn run<C>(
        &self,
        client: &C,
        sql: &str,
        params: Option<ParamValues>,
        format: impl Fn(usize) -> FieldFormat + Send,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sync + ?Sized,
    {
        let st = &self.st;
        let (query, permits, deadline, started) = self.start(client, sql, params).await?;
        let fields = Arc::new(encode::fields(&query.schema, format));
        encode::check_formats(&fields)?;
        let mut rows = Rows {
            query,
            fields: fields.clone(),
            ready: VecDeque::new(),
            rows: 0,
            max_rows: st.cfg.max_result_rows,
            deadline,
            timeout: st.cfg.query_timeout_seconds,
            handle: client
                .session_extensions()
                .get::<Arc<ConnectionHandle>>()
                .map(|h| (*h).clone()),
            cancel: None,
            done: false,
            _permits: permits,
        };
        // The first batch inside the cancellable part.
        let first = match tokio::time::timeout_at(deadline, rows.query.next()).await {
            Err(_) => return Err(api_error(&crate::sql::query_timeout(st))),
            Ok(None) => {
                rows.done = true;
                None
            }
            Ok(Some(Err(e))) => return Err(api_error(&e)),
            Ok(Some(Ok(b))) => Some(b),
        };
        if let Some(b) = first {
            rows.take(&b)?;
        }
        st.metrics.query_seconds(started.elapsed().as_secs_f64());
        let stream = futures::stream::unfold(rows, |mut r| async move {
            r.next_row().await.map(|row| (row, r))
        });
        Ok(Response::Query(QueryResponse::new(fields, stream)))
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(f) = fixed(query) {
            session_of(client)?;
            if matches!(f, Fixed::End(_)) {
                end_transaction(&*client).await;
            }
            return Ok(vec![fixed_response(&f)]);
        }
        if let Some(cmd) = session::parse(query) {
            let r = self
                .session(&*client, cmd?, None, |_| FieldFormat::Text)
                .await?;
            if let Some(name) = closed_portal(query) {
                client.portal_store().rm_portal(&name);
            }
            return Ok(vec![r]);
        }
        Ok(vec![
            self.run(client, query, None, |_| FieldFormat::Text).await?,
        ])
    }
}

fn param_values(
    portal: &Portal<Prepared>,
    stmt: &StoredStatement<Prepared>,
    params: &[DataType],
) -> PgWireResult<ParamValues> {
    if portal.parameter_len() != params.len() {
        return Err(user_error(
            "08P01",
            format!(
                "the statement has {} parameters; {} were bound",
                params.len(),
                portal.parameter_len()
            ),
        ));
    }
    let values = params
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let declared = stmt
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN && t.oid() != 0)
                .unwrap_or_else(|| encode::pg_type(target));
            let raw = portal.parameters.get(i).and_then(|p| p.as_deref());
            encode::param(raw, portal.parameter_format.is_binary(i), &declared, target)
        })
        .collect::<PgWireResult<Vec<_>>>()?;
    Ok(ParamValues::from(values))
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = portal.statement.clone();
        match &stmt.statement {
            Prepared::Fixed(f) => {
                if matches!(f, Fixed::End(_)) {
                    end_transaction(&*client).await;
                }
                Ok(fixed_response(f))
            }
            Prepared::Session { cmd, params, .. } => {
                let values = if params.is_empty() {
                    None
                } else {
                    Some(param_values(portal, &stmt, params)?)
                };
                let formats = portal.result_column_format.clone();
                let r = self
                    .session(&*client, cmd.clone(), values, move |i| {
                        formats.format_for(i)
                    })
                    .await?;
                match cmd {
                    Command::Declare { name, sql, .. } => {
                        // psycopg describes a declared cursor as a portal.
                        let schema = session::conn(&*client)
                            .cursors
                            .lock()
                            .await
                            .get(name)
                            .map(|c| c.schema.clone());
                        if let Some(schema) = schema {
                            let stmt = StoredStatement::new(
                                String::new(),
                                Prepared::Query {
                                    sql: sql.clone(),
                                    params: vec![],
                                    schema,
                                },
                                vec![],
                            );
                            client
                                .portal_store()
                                .put_portal(Arc::new(Portal::new_cursor(
                                    name.clone(),
                                    Arc::new(stmt),
                                )));
                        }
                    }
                    Command::Close(Some(name)) => client.portal_store().rm_portal(name),
                    _ => {}
                }
                Ok(r)
            }
            Prepared::Query { sql, params, .. } => {
                let values = param_values(portal, &stmt, params)?;
                let formats = portal.result_column_format.clone();
                self.run(client, sql, Some(values), move |i| formats.format_for(i))
                    .await
            }
        }
    }
}

/// The cursor a `CLOSE name` statement closes (its portal goes too).
fn closed_portal(sql: &str) -> Option<String> {
    match session::parse(sql) {
        Some(Ok(Command::Close(Some(name)))) => Some(name),
        _ => None,
    }
}

/// `COMMIT`/`ROLLBACK`: cursors declared `WITHOUT HOLD` are closed.
async fn end_transaction(client: &(impl ClientInfo + ?Sized)) {
    let conn = session::conn(client);
    conn.cursors.lock().await.retain(|_, c| c.hold);
}

impl Queries {
    /// Run a session statement ([`session::Command`]) for `client`.
    async fn session<C>(
        &self,
        client: &C,
        cmd: Command,
        params: Option<ParamValues>,
        format: impl Fn(usize) -> FieldFormat + Send,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sync + ?Sized,
    {
        let conn = session::conn(client);
        let tag = |t: &str| Ok(Response::Execution(Tag::new(t)));
        match cmd {
            Command::Prepare { name, sql } => {
                let (_, params, _) = self.parser.plan(client, &sql, &[]).await?;
                let mut stmts = conn
                    .statements
                    .lock()
                    .map_err(|_| user_error("XX000", "prepared statements unavailable"))?;
                if stmts.contains_key(&name) {
                    return Err(user_error(
                        "42P05",
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                }
                stmts.insert(name, session::Statement { sql, params });
                tag("PREPARE")
            }
            Command::Execute { name, args } => {
                let stmt = prepared_statement(client, &name)?;
                let values = execute_values(&stmt, &args)?;
                self.run(client, &stmt.sql, Some(values), format).await
            }
            Command::Deallocate(name) => {
                let mut stmts = conn
                    .statements
                    .lock()
                    .map_err(|_| user_error("XX000", "prepared statements unavailable"))?;
                match name {
                    // A protocol-level statement's name (psycopg's) is
                    // not an error either: the driver keeps those.
                    Some(n) => {
                        stmts.remove(&n);
                    }
                    None => stmts.clear(),
                }
                tag("DEALLOCATE")
            }
            Command::Declare { name, hold, sql } => {
                self.declare(client, &conn, name, hold, &sql, params).await
            }
            Command::Fetch { name, count, skip } => {
                self.fetch(client, &conn, &name, count, skip, format).await
            }
            Command::Close(name) => {
                let mut cursors = conn.cursors.lock().await;
                match name {
                    Some(n) => {
                        cursors.remove(&n).ok_or_else(|| no_cursor(&n))?;
                    }
                    None => cursors.clear(),
                }
                tag("CLOSE CURSOR")
            }
        }
    }

    /// `DECLARE name CURSOR FOR sql`: start the query and keep it, unread,
    /// as the connection's cursor `name`.
    async fn declare<C>(
        &self,
        client: &C,
        conn: &session::Conn,
        name: String,
        hold: bool,
        sql: &str,
        params: Option<ParamValues>,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sync + ?Sized,
    {
        if conn.cursors.lock().await.contains_key(&name) {
            return Err(user_error(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        let (query, permits, deadline, _) = self.start(client, sql, params).await?;
        let cursor = Cursor {
            schema: query.schema.clone(),
            hold,
            query,
            pending: VecDeque::new(),
            rows: 0,
            max_rows: self.st.cfg.max_result_rows,
            deadline,
            timeout: self.st.cfg.query_timeout_seconds,
            done: false,
            _permits: permits,
        };
        conn.cursors.lock().await.insert(name, cursor);
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }

    /// `FETCH`/`MOVE`: the next `count` rows of cursor `name` (all left
    /// with `None`), sent, or only counted when `skip`.
    async fn fetch<C>(
        &self,
        client: &C,
        conn: &session::Conn,
        name: &str,
        count: Option<u64>,
        skip: bool,
        format: impl Fn(usize) -> FieldFormat + Send,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sync + ?Sized,
    {
        // The key is re-checked at every FETCH, as at every statement.
        recheck(&self.st, session_of(client)?.as_ref()).await?;
        let mut cursors = conn.cursors.lock().await;
        let c = cursors.get_mut(name).ok_or_else(|| no_cursor(name))?;
        let batches = c.fetch(count).await?;
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if skip {
            return Ok(Response::Execution(Tag::new("MOVE").with_rows(n)));
        }
        let fields = Arc::new(encode::fields(&c.schema, format));
        encode::check_formats(&fields)?;
        let mut rows = Vec::with_capacity(n);
        for b in &batches {
            rows.extend(encode::rows(b, &fields)?.into_iter().map(Ok));
        }
        let mut r = QueryResponse::new(fields, futures::stream::iter(rows));
        r.set_command_tag("FETCH");
        Ok(Response::Query(r))
    }
}

/// `EXECUTE`'s literal values as the prepared statement's parameters.
fn execute_values(stmt: &session::Statement, args: &[Option<String>]) -> PgWireResult<ParamValues> {
    if args.len() != stmt.params.len() {
        return Err(user_error(
            "42601",
            format!(
                "the prepared statement takes {} values; {} were given",
                stmt.params.len(),
                args.len()
            ),
        ));
    }
    let values = stmt
        .params
        .iter()
        .zip(args)
        .map(|(t, v)| {
            encode::param(
                v.as_deref().map(str::as_bytes),
                false,
                &encode::pg_type(t),
                t,
            )
        })
        .collect::<PgWireResult<Vec<_>>>()?;
    Ok(ParamValues::from(values))
}
