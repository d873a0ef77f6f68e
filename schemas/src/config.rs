//! CROW configuration: `crow.toml` plus `CROW_*` environment variables.
//!
//! Layering, lowest first: built-in defaults → the TOML file → environment
//! variables → [`Config::validate`]. Every leaf key `section.key` can be set
//! from the environment as `CROW_SECTION_KEY` (e.g. `ai.provider` →
//! `CROW_AI_PROVIDER`, `lake.s3.endpoint` → `CROW_LAKE_S3_ENDPOINT`); the lake
//! URI is also `CROW_LAKE`. An unknown key or an invalid value is an error
//! that names the key.
//!
//! This module parses text; reading the file is the caller's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::serialize_exposed;
use crate::{JobName, Secret};

pub mod cron;

/// A configuration error, always naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, e.g. `ai.concurrency` or `CROW_AI_CONCURRENCY`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the lake lives and how to reach it.
    pub lake: LakeConfig,
    /// The HTTP server (collector and query API).
    pub server: ServerConfig,
    /// The collector.
    pub ingest: IngestConfig,
    /// Batch jobs.
    pub jobs: JobsConfig,
    /// The AI provider.
    pub ai: AiConfig,
    /// The price book.
    pub billing: BillingConfig,
    /// The query API.
    pub api: ApiConfig,
    /// The scheduler inside `crow serve`.
    pub schedule: ScheduleConfig,
    /// The social collector: platform endpoints, limits, credentials.
    pub social: SocialConfig,
    /// AI-driven discovery (`discover` sources): the web-search provider
    /// and the bounds of a run.
    pub discovery: DiscoveryConfig,
    /// Rendering script-built pages in headless Chromium (social `web`
    /// sources and `crow products crawl`).
    pub browser: BrowserConfig,
}

/// Lake location and storage options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// Lake URI: a local folder (`./crow-data`, `file:///…`) or
    /// `s3://bucket/prefix` (AWS S3, Cloudflare R2, any S3-compatible store).
    pub uri: String,
    /// S3 / R2 settings, used for `s3://` URIs. Unset fields fall back to the
    /// standard `AWS_*` environment variables.
    pub s3: S3Config,
    /// Extra object_store / delta-rs storage options, passed through as is.
    /// They may hold credentials, so every value is a secret (`***` in
    /// `crow config show`).
    pub options: BTreeMap<String, Secret>,
    /// How often a writer retries a commit that lost an optimistic
    /// concurrency race before giving up.
    pub commit_retries: u32,
    /// Read tables for analyst SQL (the query API) as plain Parquet: the
    /// Delta snapshot's file list handed to DataFusion's Parquet scan, when
    /// the table's protocol allows it (no deletion vectors, no column
    /// mapping, no reader feature CROW does not know). Otherwise, and with
    /// `false`, delta-rs's scan reads it.
    pub plain_parquet_scan: bool,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            uri: "./crow-data".into(),
            s3: S3Config::default(),
            options: BTreeMap::new(),
            commit_retries: 15,
            plain_parquet_scan: true,
        }
    }
}

/// S3-compatible storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `https://<account>.r2.cloudflarestorage.com`.
    /// Empty: `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: String,
    /// Region (`auto` for R2). Empty: `AWS_REGION`, else `us-east-1`.
    pub region: String,
    /// Access key id. Empty: `AWS_ACCESS_KEY_ID`. A secret (`***` when shown).
    pub access_key_id: Secret,
    /// Secret access key. Empty: `AWS_SECRET_ACCESS_KEY`. Prefer the
    /// environment variable to keeping secrets in a file.
    pub secret_access_key: Secret,
    /// Allow plain HTTP endpoints (local test servers). Also `AWS_ALLOW_HTTP`.
    pub allow_http: bool,
    /// Commit safety without DynamoDB: `etag` uses conditional writes
    /// (If-Match / If-None-Match), which R2 and current S3 support;
    /// `disabled` turns them off; `""` leaves the storage client's default.
    pub conditional_put: ConditionalPut,
    /// Use path-style requests (`endpoint/bucket/key`), needed by many local
    /// S3-compatible servers.
    pub path_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: String::new(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            allow_http: false,
            conditional_put: ConditionalPut::Etag,
            path_style: false,
        }
    }
}

/// `lake.s3.conditional_put`: how commits are kept safe on S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionalPut {
    /// `""`: no option is passed; the storage client's default applies.
    #[serde(rename = "")]
    ClientDefault,
    /// `etag`: conditional writes (If-Match / If-None-Match).
    #[serde(rename = "etag")]
    Etag,
    /// `disabled`: no conditional writes.
    #[serde(rename = "disabled")]
    Disabled,
}

impl ConditionalPut {
    /// The value as written in the configuration (and passed to the
    /// storage client as `aws_conditional_put`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionalPut::ClientDefault => "",
            ConditionalPut::Etag => "etag",
            ConditionalPut::Disabled => "disabled",
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address of `crow serve`.
    pub listen: String,
    /// Most connections open at once; further clients wait in the listen
    /// backlog until one closes.
    pub max_connections: u64,
    /// A connection that has not sent a complete request head (request line
    /// and headers) this many seconds after it opened, or after its previous
    /// response, is closed. Idle keep-alive connections close after it too.
    pub header_read_timeout_seconds: u64,
    /// Reading a request body may take at most this many seconds; a slower
    /// client gets 408.
    pub body_read_timeout_seconds: u64,
    /// Who may read `/metrics`: clients on this machine (loopback) always;
    /// others only with `Authorization: Bearer <metrics_token>`. Empty: no
    /// remote reader. A secret (`***` when shown).
    pub metrics_token: Secret,
    /// Listen address of the Arrow Flight SQL service (`crow serve
    /// --flight-listen`). Empty: off.
    pub flight_listen: String,
    /// Listen address of the Postgres-wire listener (`crow serve
    /// --pg-listen`). Empty: off.
    pub pg_listen: String,
    /// TLS certificate chain (PEM) of the Postgres-wire listener. With
    /// `pg_tls_key`, clients may (and off loopback must) use TLS.
    pub pg_tls_cert: String,
    /// TLS private key (PEM) of the Postgres-wire listener.
    pub pg_tls_key: String,
    /// TLS certificate chain (PEM) of the Arrow Flight SQL listener. With
    /// `flight_tls_key`, it serves `grpc+tls://` only.
    pub flight_tls_cert: String,
    /// TLS private key (PEM) of the Arrow Flight SQL listener.
    pub flight_tls_key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_connections: 1024,
            header_read_timeout_seconds: 30,
            body_read_timeout_seconds: 30,
            metrics_token: Secret::default(),
            flight_listen: String::new(),
            pg_listen: String::new(),
            pg_tls_cert: String::new(),
            pg_tls_key: String::new(),
            flight_tls_cert: String::new(),
            flight_tls_key: String::new(),
        }
    }
}

impl ServerConfig {
    /// Check the server's values (keys named `server.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "server.listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            ));
        }
        if !self.flight_listen.is_empty()
            && self.flight_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                "server.flight_listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:50051 (or empty: off)",
                    self.flight_listen
                ),
            ));
        }
        in_range(&[
            ("server.max_connections", self.max_connections, 1_000_000),
            (
                "server.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                3600,
            ),
            (
                "server.body_read_timeout_seconds",
                self.body_read_timeout_seconds,
                3600,
            ),
        ])?;
        if !self.metrics_token.is_empty() && self.metrics_token.expose().len() < 16 {
            return Err(err(
                "server.metrics_token",
                "must be at least 16 characters (or empty)",
            ));
        }
        if !self.pg_listen.is_empty() && self.pg_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "server.pg_listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:5432 (or empty: off)",
                    self.pg_listen
                ),
            ));
        }
        for (cert, key, what) in [
            (&self.pg_tls_cert, &self.pg_tls_key, "pg"),
            (&self.flight_tls_cert, &self.flight_tls_key, "flight"),
        ] {
            if cert.is_empty() != key.is_empty() {
                let missing = if cert.is_empty() { "cert" } else { "key" };
                return Err(err(
                    format!("server.{what}_tls_{missing}"),
                    format!(
                        "server.{what}_tls_cert and server.{what}_tls_key are set together (PEM files)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Collector settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Write-ahead log folder on local disk. Empty: `<lake>/_wal` for a local
    /// lake, `./crow-wal` otherwise.
    pub wal_dir: String,
    /// Largest accepted event, in bytes (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// Largest accepted request body, in bytes (Segment: 500 KB).
    pub max_request_bytes: usize,
    /// Flush WAL segments to the lake at least this often, in milliseconds.
    pub flush_interval_ms: u64,
    /// Flush as soon as this many rows are pending.
    pub flush_max_rows: usize,
    /// Above this many un-flushed WAL bytes the collector answers 503 with
    /// Retry-After instead of growing.
    pub max_pending_bytes: u64,
    /// Salt for hashing client IPs (raw IPs are never stored). Empty: a random
    /// salt kept beside the WAL. A secret (`***` when shown).
    pub ip_salt: Secret,
    /// URL query parameters removed from page URLs and referrers before
    /// storage (exact names; `*` removes every query string).
    pub strip_query_params: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges such as `10.0.0.0/8`)
    /// whose `X-Forwarded-For` is believed when hashing the client's IP.
    /// A request from any other peer is hashed by its own address, whatever
    /// it claims. Empty: `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<String>,
    /// `crow import`: lines committed together (one Delta commit per table
    /// and chunk; a re-run after a crash lands only the chunks not
    /// committed yet).
    pub import_chunk_events: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            wal_dir: String::new(),
            max_event_bytes: 32 * 1024,
            max_request_bytes: 500 * 1024,
            flush_interval_ms: 2_000,
            flush_max_rows: 50_000,
            max_pending_bytes: 256 * 1024 * 1024,
            ip_salt: Secret::default(),
            strip_query_params: vec![
                "email".into(),
                "token".into(),
                "password".into(),
                "gclid".into(),
                "fbclid".into(),
            ],
            trusted_proxies: Vec::new(),
            import_chunk_events: 200_000,
        }
    }
}

/// Batch job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// A web session ends after this many minutes without events.
    pub session_gap_minutes: u32,
    /// Memory pool of a job's queries, in MiB (16..=1048576): sessionize's
    /// sorts and windows spill to the OS temp folder beyond it. Each sort
    /// needs room for a couple of its input batches, so a pool far below
    /// the default fails ("Resources exhausted") instead of spilling. The
    /// job's own buffers (one visitor's events and one chunk of sessions per
    /// core, the Delta writer's open files) come on top.
    pub memory_limit_mb: u64,
    /// The patterns job.
    pub patterns: PatternsConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            session_gap_minutes: 60,
            memory_limit_mb: 2048,
            patterns: PatternsConfig::default(),
        }
    }
}

/// Patterns job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatternsConfig {
    /// False discovery rate of one period's tests: the many metrics and
    /// segments tested for a period are corrected with Benjamini–Hochberg at
    /// this rate (at most this share of a period's findings are expected to
    /// be chance). Between 0 and 0.5; the default 0.01 keeps quiet data to
    /// about half a false finding per month (BENCHMARKS.md).
    pub fdr: f64,
    /// A new, ongoing story at least this significant (its largest |z|)
    /// notifies every user of its organization (once per story, and by its
    /// webhook). 0 turns these notifications off.
    pub notify_min_significance: f64,
}

impl Default for PatternsConfig {
    fn default() -> Self {
        Self {
            fdr: 0.01,
            notify_min_significance: DEFAULT_NOTIFY_MIN_SIGNIFICANCE,
        }
    }
}

/// Default of `jobs.patterns.notify_min_significance`.
pub const DEFAULT_NOTIFY_MIN_SIGNIFICANCE: f64 = 6.0;

/// AI provider settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// `offline` (deterministic, no network), `gemini` or `openai`.
    pub provider: AiProvider,
    /// Model name. Empty: the provider's default.
    pub model: String,
    /// Base URL of the provider's API. Empty: the provider's public endpoint.
    pub base_url: String,
    /// Maximum concurrent provider calls.
    pub concurrency: usize,
    /// Retries per call, for each kind apart: transient errors (429/5xx,
    /// timeouts) and re-asks after invalid answers.
    pub max_retries: u32,
    /// Per-organization daily token budget (0: unlimited).
    pub daily_token_budget: u64,
    /// Embeddings for semantic product matching and search (`[ai.embeddings]`).
    pub embeddings: EmbeddingsConfig,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            provider: AiProvider::Offline,
            model: String::new(),
            base_url: String::new(),
            concurrency: 8,
            max_retries: 4,
            daily_token_budget: 0,
            embeddings: EmbeddingsConfig::default(),
        }
    }
}

/// `[ai.embeddings]`: the embedding provider of semantic product matching
/// and `GET /api/v1/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// `offline` (deterministic hashed words and character trigrams, no
    /// network), `gemini` (`GEMINI_API_KEY`) or `openai` (an
    /// OpenAI-compatible `/embeddings`, `OPENAI_API_KEY`).
    pub provider: AiProvider,
    /// Model name. Empty: the provider's default.
    pub model: String,
    /// Base URL of the provider's API (as `ai.base_url`). Empty: the
    /// provider's public endpoint.
    pub base_url: String,
    /// Dimensions of every vector (8 to 4096).
    pub dims: usize,
    /// Texts per provider call (1 to 100).
    pub batch_size: usize,
    /// Catalog candidates a free-text session (social, CCTV) gets by
    /// similarity to its text (0: none).
    pub candidates: usize,
    /// Least cosine similarity of such a candidate (-1 to 1).
    pub min_score: f64,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        Self {
            provider: AiProvider::Offline,
            model: String::new(),
            base_url: String::new(),
            dims: 256,
            batch_size: 64,
            candidates: 5,
            min_score: 0.3,
        }
    }
}

impl EmbeddingsConfig {
    /// Check the values (keys named `ai.embeddings.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        if !(8..=4096).contains(&self.dims) {
            return Err(err("ai.embeddings.dims", "must be 8–4096"));
        }
        if !(1..=100).contains(&self.batch_size) {
            return Err(err("ai.embeddings.batch_size", "must be 1–100"));
        }
        if self.candidates > 50 {
            return Err(err("ai.embeddings.candidates", "must be at most 50"));
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return Err(err("ai.embeddings.min_score", "must be between -1 and 1"));
        }
        let b = &self.base_url;
        let is_url = b.starts_with("http://") || b.starts_with("https://");
        if !b.is_empty() && !is_url {
            return Err(err(
                "ai.embeddings.base_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

/// `ai.provider`: which model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AiProvider {
    /// `offline`: deterministic answers, no network.
    Offline,
    /// `gemini`: Google Gemini (`GEMINI_API_KEY`).
    Gemini,
    /// `openai`: the OpenAI API or a compatible server (`OPENAI_API_KEY`).
    #[serde(rename = "openai")]
    OpenAi,
}

impl AiProvider {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AiProvider::Offline => "offline",
            AiProvider::Gemini => "gemini",
            AiProvider::OpenAi => "openai",
        }
    }
}

impl std::fmt::Display for AiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The price book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// ISO 4217 currency of every price.
    pub currency: String,
    /// Price per interaction.
    pub per_interaction: f64,
    /// Price per pattern.
    pub per_pattern: f64,
    /// Price per 1,000 raw events ingested.
    pub per_1000_events: f64,
    /// Price per 1,000 AI input tokens (pass-through).
    pub per_1000_input_tokens: f64,
    /// Price per 1,000 AI output tokens (pass-through).
    pub per_1000_output_tokens: f64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            per_interaction: 0.002,
            per_pattern: 0.05,
            per_1000_events: 0.01,
            per_1000_input_tokens: 0.0003,
            per_1000_output_tokens: 0.0025,
        }
    }
}

/// Query API settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// How long an API key lookup is cached, in seconds (1..=60): a revoked
    /// key is refused within this time.
    pub key_cache_seconds: u64,
    /// A signed-in session ends after this many minutes without a request.
    pub session_idle_minutes: u64,
    /// A signed-in session ends this many hours after sign-in, used or not.
    pub session_max_hours: u64,
    /// Mark session cookies `Secure` always (they are also when the request
    /// came over TLS, by `X-Forwarded-Proto: https` from a proxy).
    pub cookie_secure: bool,
    /// Sustained requests per second allowed per API key (token bucket).
    pub rate_limit_per_second: f64,
    /// Burst size of the per-key token bucket.
    pub rate_limit_burst: u32,
    /// Sustained requests per second allowed per client address for
    /// requests without credentials (sign-in, health, public pages, …).
    pub public_rate_limit_per_second: f64,
    /// Burst size of the per-address bucket of requests without credentials.
    pub public_rate_limit_burst: u32,
    /// A SQL query (planning, execution and streaming) is cancelled after
    /// this many seconds.
    pub query_timeout_seconds: u64,
    /// Largest result a SQL query may return, in rows.
    pub max_result_rows: u64,
    /// Memory shared by all running queries, in MiB; operators that need
    /// more spill to disk.
    pub memory_limit_mb: u64,
    /// Folder for spill files. Empty: the OS temp folder.
    pub spill_dir: String,
    /// Threads that plan and run SQL queries (all protocols), apart from
    /// the collector's. 0: one per core. Fewer than the cores leave the
    /// rest to the collector's acknowledgements under heavy queries.
    pub query_threads: u64,
    /// Added to the nice value of the query threads (0–19; Linux): above 0 they
    /// yield the CPU to the collector's acknowledgements, HTTP serving and
    /// the scheduler's jobs whenever both want it, and take all of it when
    /// nothing else runs. 0: queries compete equally.
    pub query_nice: u64,
    /// Largest page of a REST listing.
    pub max_page_size: u32,
    /// Saved queries one user keeps at most (the dashboard's SQL console);
    /// one more is refused with 409 `too_many_saved_queries`.
    pub max_saved_queries: u32,
    /// Longest SQL statement accepted, in bytes.
    pub max_sql_bytes: u64,
    /// Deepest expression in a statement: nesting and chains of operators
    /// (`a + b + c` is 3 deep, `x or y or z` too) count one level each.
    pub max_expression_depth: u64,
    /// Most values in one `IN (…)` list.
    pub max_in_list: u64,
    /// Most expressions in one statement (every literal, column and
    /// operator counts).
    pub max_expression_nodes: u64,
    /// Largest output one call of a text, binary or list function
    /// (`repeat`, `lpad`, `concat`, `range`, `array_repeat`, …) may produce
    /// for one batch of rows, in MiB; a call that would produce more fails
    /// before it allocates.
    pub max_function_output_mb: u64,
    /// Memory for answers of `POST /api/v1/sql` kept for repeated queries
    /// (keyed by the query, the tenant and the versions of the tables it
    /// reads), in MiB; 0 turns the cache off.
    pub result_cache_mb: u64,
    /// Largest answer the result cache keeps, in MiB (1..=1024).
    pub result_cache_max_entry_mb: u64,
    /// SQL queries one API key may run at a time.
    pub max_concurrent_queries_per_key: u64,
    /// SQL queries one organization may run at a time.
    pub max_concurrent_queries_per_org: u64,
    /// An API export still running after this many seconds is stopped and
    /// marked `failed`; its partial file is removed.
    pub export_timeout_seconds: u64,
    /// Largest API export, in rows; past it the export fails.
    pub export_max_rows: u64,
    /// Largest API export file, in bytes; past it the export fails.
    pub export_max_bytes: u64,
    /// API exports one organization may run at once in one server; beyond
    /// it `POST /api/v1/exports` answers 429.
    pub max_concurrent_exports_per_org: u32,
    /// The `Retry-After` (seconds) of that 429.
    pub export_retry_after_seconds: u64,
    /// A key made without `--expires` (or `--never-expires`) expires after
    /// this many days; 0: such keys never expire.
    pub key_default_expiry_days: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            key_cache_seconds: 60,
            session_idle_minutes: 720,
            session_max_hours: 168,
            cookie_secure: false,
            rate_limit_per_second: 10.0,
            rate_limit_burst: 50,
            public_rate_limit_per_second: 20.0,
            public_rate_limit_burst: 200,
            query_timeout_seconds: 60,
            max_result_rows: 1_000_000,
            memory_limit_mb: 1024,
            query_threads: 0,
            query_nice: 10,
            spill_dir: String::new(),
            max_page_size: 1000,
            max_saved_queries: 200,
            max_sql_bytes: 1024 * 1024,
            max_expression_depth: 256,
            max_in_list: 10_000,
            max_expression_nodes: 100_000,
            max_function_output_mb: 64,
            result_cache_mb: 64,
            result_cache_max_entry_mb: 8,
            max_concurrent_queries_per_key: 4,
            max_concurrent_queries_per_org: 8,
            export_timeout_seconds: 600,
            export_max_rows: 100_000_000,
            export_max_bytes: 10 * 1024 * 1024 * 1024,
            max_concurrent_exports_per_org: 2,
            export_retry_after_seconds: 30,
            key_default_expiry_days: 90,
        }
    }
}

/// The scheduler inside `crow serve`: a cron schedule per job (UTC).
///
/// A schedule is a 5-field cron expression (`minute hour day month
/// weekday`) or a 6-field one with a leading second; `""` or `"off"`
/// disables the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Run the scheduler in `crow serve` (never with `--only api`).
    pub enabled: bool,
    /// How often the scheduler wakes up to look for due jobs, in seconds.
    pub tick_seconds: u64,
    /// A job's lease in the lake lasts this many seconds and is renewed
    /// every third of it while the job runs; another server takes a lease
    /// over only after it expired.
    pub lease_seconds: u64,
    /// Attempts of one scheduled run (1: no retry).
    pub max_attempts: u32,
    /// Wait before the first retry of a failed run, in seconds; doubled for
    /// each further attempt.
    pub retry_base_seconds: u64,
    /// Raw events → sessions.
    pub sessionize: String,
    /// Sessions → interactions.
    pub enrich: String,
    /// Interactions → patterns (day and every period above it).
    pub patterns: String,
    /// Usage → `usage_daily`.
    pub billing: String,
    /// Collect every organization's due social sources (each source has
    /// its own cron; this is how often they are looked at).
    pub social: String,
    /// Compact small files of every table.
    pub optimize: String,
    /// Checkpoint the Delta log of every table.
    pub checkpoint: String,
    /// Delete files of every table that no version within
    /// `vacuum_retention_hours` needs.
    pub vacuum: String,
    /// Scheduled vacuums keep the files of this many hours of versions:
    /// time travel and readers that started earlier work within it.
    pub vacuum_retention_hours: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_seconds: 15,
            lease_seconds: 300,
            max_attempts: 4,
            retry_base_seconds: 30,
            sessionize: "*/5 * * * *".into(),
            enrich: "*/5 * * * *".into(),
            patterns: "15 0 * * *".into(),
            billing: "0 * * * *".into(),
            social: "* * * * *".into(),
            optimize: "0 3 * * *".into(),
            checkpoint: "30 3 * * *".into(),
            vacuum: "0 4 * * 0".into(),
            vacuum_retention_hours: 168,
        }
    }
}

/// The social collector (`crow social`, the scheduler's `social` job).
///
/// Every platform's base URL is a setting, so a proxy, a self-hosted
/// instance or a test server can stand in for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocialConfig {
    /// Mastodon instance whose public API is read (hashtags, accounts).
    pub mastodon_url: String,
    /// Reddit's public JSON listings.
    pub reddit_url: String,
    /// Hacker News search (Algolia).
    pub hackernews_url: String,
    /// YouTube, for channel and playlist feeds.
    pub youtube_url: String,
    /// Bluesky AppView (public, no session: author feeds).
    pub bluesky_url: String,
    /// Bluesky PDS where post search signs in (`createSession`) and
    /// searches (`searchPosts`).
    pub bluesky_pds_url: String,
    /// Bluesky handle or e-mail for post search (empty: no search).
    pub bluesky_identifier: String,
    /// A Bluesky app password (Settings → App passwords, never the account
    /// password) for post search. Prefer `CROW_SOCIAL_BLUESKY_APP_PASSWORD`
    /// to keeping it in a file; `crow config show` masks it.
    pub bluesky_app_password: Secret,
    /// Items read per source and run at most (pages are followed up to it).
    pub max_items_per_source: usize,
    /// Pages read per source and run at most.
    pub max_pages_per_source: usize,
    /// Minimum milliseconds between two requests to one platform.
    pub min_interval_ms: u64,
    /// Longest `Retry-After` honoured on a 429/503, in seconds; a longer
    /// one fails the source for this run.
    pub max_retry_after_seconds: u64,
    /// Seconds before a request times out.
    pub timeout_seconds: u64,
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self {
            mastodon_url: "https://mastodon.social".into(),
            reddit_url: "https://www.reddit.com".into(),
            hackernews_url: "https://hn.algolia.com".into(),
            youtube_url: "https://www.youtube.com".into(),
            bluesky_url: "https://public.api.bsky.app".into(),
            bluesky_pds_url: "https://bsky.social".into(),
            bluesky_identifier: String::new(),
            bluesky_app_password: Secret::default(),
            max_items_per_source: 200,
            max_pages_per_source: 5,
            min_interval_ms: 1000,
            max_retry_after_seconds: 60,
            timeout_seconds: 20,
        }
    }
}

impl SocialConfig {
    /// Check the collector's values (keys named `social.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("social.mastodon_url", &self.mastodon_url),
            ("social.reddit_url", &self.reddit_url),
            ("social.hackernews_url", &self.hackernews_url),
            ("social.youtube_url", &self.youtube_url),
            ("social.bluesky_url", &self.bluesky_url),
            ("social.bluesky_pds_url", &self.bluesky_pds_url),
        ] {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(err(key, "must be an http:// or https:// URL"));
            }
        }
        in_range(&[
            (
                "social.max_items_per_source",
                self.max_items_per_source as u64,
                100_000,
            ),
            (
                "social.max_pages_per_source",
                self.max_pages_per_source as u64,
                1000,
            ),
            ("social.timeout_seconds", self.timeout_seconds, 600),
            (
                "social.max_retry_after_seconds",
                self.max_retry_after_seconds,
                3600,
            ),
        ])?;
        if self.min_interval_ms > 60_000 {
            return Err(err("social.min_interval_ms", "must be at most 60000"));
        }
        Ok(())
    }
}

/// `[discovery]`: how `discover` sources find pages. The AI provider
/// proposes search queries from the organization's context and catalog;
/// the search provider configured here runs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `searxng` (a SearXNG instance's JSON API) or `brave` (Brave Search API).
    pub provider: SearchProvider,
    /// Base URL of the search API. Empty: Brave's public endpoint for
    /// `brave`; a SearXNG instance has no default and must be named.
    pub url: String,
    /// The search API's key: Brave's `X-Subscription-Token`; for SearXNG,
    /// sent as a bearer token when set (an instance behind an
    /// authenticating proxy). Prefer `CROW_DISCOVERY_API_KEY`; `crow config
    /// show` masks it.
    pub api_key: Secret,
    /// Result links read per query at most.
    pub results_per_query: usize,
    /// Search queries the AI provider may propose per run at most.
    pub max_queries: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            provider: SearchProvider::Searxng,
            url: String::new(),
            api_key: Secret::default(),
            results_per_query: 10,
            max_queries: 5,
        }
    }
}

/// `discovery.provider`: which web search runs the proposed queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchProvider {
    /// `searxng`: `GET {url}/search?q=…&format=json`.
    Searxng,
    /// `brave`: `GET {url}/res/v1/web/search?q=…` with `X-Subscription-Token`.
    Brave,
}

impl DiscoveryConfig {
    /// Check discovery's values (keys named `discovery.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        let http = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !http {
            return Err(err("discovery.url", "must be an http:// or https:// URL"));
        }
        in_range(&[
            (
                "discovery.results_per_query",
                self.results_per_query as u64,
                100,
            ),
            ("discovery.max_queries", self.max_queries as u64, 50),
        ])
    }
}

/// `browser.render`: when a fetched page is rendered in headless Chromium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrowserRender {
    /// Render a page only when its static HTML yields no usable content
    /// (no main text, no product) and it has scripts that could build it.
    Auto,
    /// Never render: a script-built page yields what its static HTML has.
    Never,
    /// Render every page, and read the rendered DOM (the static HTML when
    /// rendering fails).
    Always,
}

/// Headless Chromium for pages whose content script builds (see
/// `crow_jobs::browser`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    /// `auto` (render when the static page yields nothing and has
    /// scripts), `never` or `always`.
    pub render: BrowserRender,
    /// The Chromium executable (a path, or a name looked up on `PATH`).
    /// Empty: the first of `chromium`, `chromium-browser`, `google-chrome`,
    /// `google-chrome-stable` on `PATH`.
    pub chromium: String,
    /// Seconds one render may take in all (start, load, scripts, DOM dump);
    /// a page still rendering then is cut and reported.
    pub timeout_seconds: u64,
    /// Milliseconds of virtual time the page's scripts and timers get
    /// before the DOM is read (Chromium's `--virtual-time-budget`).
    pub script_budget_ms: u64,
    /// Pages rendered at once within one crawl or collector run.
    pub max_concurrent: usize,
    /// Largest rendered DOM read, in bytes; a larger one is refused.
    pub max_bytes: u64,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            render: BrowserRender::Auto,
            chromium: String::new(),
            timeout_seconds: 30,
            script_budget_ms: 5000,
            max_concurrent: 2,
            max_bytes: 10 << 20,
        }
    }
}

impl BrowserConfig {
    /// Check the renderer's values (keys named `browser.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        in_range(&[
            ("browser.timeout_seconds", self.timeout_seconds, 600),
            ("browser.max_concurrent", self.max_concurrent as u64, 64),
            ("browser.max_bytes", self.max_bytes, 200 << 20),
        ])?;
        if self.script_budget_ms >= self.timeout_seconds.saturating_mul(1000) {
            return Err(err(
                "browser.script_budget_ms",
                "must be less than browser.timeout_seconds (in milliseconds)",
            ));
        }
        if self.chromium.trim() != self.chromium {
            return Err(err(
                "browser.chromium",
                "has leading or trailing whitespace",
            ));
        }
        Ok(())
    }
}

impl ScheduleConfig {
    /// The cron expression configured for `job` (`""` or `"off"`:
    /// disabled).
    pub fn expr(&self, job: JobName) -> &str {
        match job {
            JobName::Social => &self.social,
            JobName::Sessionize => &self.sessionize,
            JobName::Enrich => &self.enrich,
            JobName::Patterns => &self.patterns,
            JobName::Billing => &self.billing,
            JobName::Optimize => &self.optimize,
            JobName::Checkpoint => &self.checkpoint,
            JobName::Vacuum => &self.vacuum,
        }
    }

    /// Each job with its parsed schedule (None: disabled); iterating the
    /// map gives the order the scheduler runs them in when several are due.
    pub fn jobs(&self) -> Result<BTreeMap<JobName, Option<cron::Cron>>, ConfigError> {
        JobName::ALL
            .into_iter()
            .map(|job| {
                let e = self.expr(job).trim();
                if e.is_empty() || e.eq_ignore_ascii_case("off") {
                    return Ok((job, None));
                }
                cron::Cron::parse(e)
                    .map(|c| (job, Some(c)))
                    .map_err(|m| err(format!("schedule.{job}"), m))
            })
            .collect()
    }
}

impl Config {
    /// Parse a TOML document (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let mut ce = toml_error(&e);
            // The key with its section (`schedule.optimise`), where the
            // error points at one.
            if let Some(key) = e.span().and_then(|span| key_at(text, span.start)) {
                if ce.key == "crow.toml" || key.ends_with(&format!(".{}", ce.key)) {
                    ce.key = key;
                }
            }
            // Where, as a line and column (not toml's quoted snippet, which
            // repeats the value on a line of its own).
            if let Some(before) = e.span().and_then(|span| text.get(..span.start)) {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
                ce.message = format!("{what} (line {line}, column {column})");
            }
            ce
        })
    }

    /// Defaults, then `toml` (if any), then the `CROW_*` variables in `env`,
    /// then validation.
    pub fn load<I, K, V>(toml_text: Option<&str>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let base = match toml_text {
            Some(t) => Config::from_toml(t)?,
            None => Config::default(),
        };
        let cfg = base.with_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Apply `CROW_*` environment variables on top of this configuration.
    pub fn with_env<I, K, V>(self, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // Secrets go into the tree as their values (and come back out of
        // it): the tree is only this round trip, never printed.
        let mut tree = serialize_exposed(|| toml::Value::try_from(&self))
            .map_err(|e| err("config", e.to_string()))?;
        let mut leaves = Vec::new();
        collect_leaves(&tree, &mut Vec::new(), &mut leaves);
        let mut applied: Vec<(Vec<String>, String, String)> = Vec::new();
        for (k, v) in env {
            let (k, v) = (k.as_ref(), v.as_ref());
            let Some(rest) = k.strip_prefix("CROW_") else {
                continue;
            };
            if ENV_IGNORED.contains(&k) {
                continue;
            }
            let path: Vec<String> = if rest == "LAKE" {
                vec!["lake".into(), "uri".into()]
            } else if rest == "LISTEN" {
                vec!["server".into(), "listen".into()]
            } else if rest == "WAL_DIR" {
                vec!["ingest".into(), "wal_dir".into()]
            } else if let Some(p) = leaves.iter().find(|p| env_name(p) == k) {
                p.clone()
            } else if let Some(opt) = rest.strip_prefix("LAKE_OPTIONS_") {
                vec!["lake".into(), "options".into(), opt.to_ascii_lowercase()]
            } else {
                // A CROW_* variable that is no setting is a mistake (a typo
                // would otherwise be silently ignored): name it, and the
                // setting it most likely meant.
                let mut known: Vec<String> = leaves.iter().map(|p| env_name(p)).collect();
                known.extend(ENV_OTHER.iter().map(|s| s.to_string()));
                let hint = known
                    .iter()
                    .map(|c| (edit_distance(c, k), c))
                    .filter(|(d, _)| *d <= 3)
                    .min()
                    .map(|(_, c)| format!(" (did you mean {c}?)"))
                    .unwrap_or_default();
                return Err(err(
                    k,
                    format!(
                        "is not a CROW setting{hint}; settings are CROW_SECTION_KEY (see `crow config default`)"
                    ),
                ));
            };
            set_leaf(&mut tree, &path, k, v)?;
            applied.push((path, k.to_string(), v.to_string()));
        }
        if applied.is_empty() {
            return Ok(self);
        }
        tree.try_into::<Config>()
            .map_err(|e| self.env_error(&applied, &e))
    }

    /// The error of a `CROW_*` value the configuration could not take (such
    /// as an unknown `ai.provider`), naming its key: the variables are
    /// tried one at a time until one fails.
    fn env_error(
        &self,
        applied: &[(Vec<String>, String, String)],
        e: &toml::de::Error,
    ) -> ConfigError {
        for (path, env_key, raw) in applied {
            let failed = serialize_exposed(|| toml::Value::try_from(self))
                .ok()
                .and_then(|mut tree| {
                    set_leaf(&mut tree, path, env_key, raw).ok()?;
                    tree.try_into::<Config>().err()
                });
            if let Some(e) = failed {
                let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
                return err(path.join("."), format!("{what} (from {env_key})"));
            }
        }
        toml_error(e)
    }

    /// Check values that parse but make no sense (section by section; the
    /// first problem found is the one reported).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.lake.validate()?;
        self.server.validate()?;
        self.social.validate()?;
        self.discovery.validate()?;
        self.browser.validate()?;
        self.ingest.validate()?;
        self.jobs.validate()?;
        if self.ai.concurrency == 0 {
            return Err(err("ai.concurrency", "must be positive"));
        }
        self.ai.embeddings.validate()?;
        self.billing.validate_currency()?;
        self.schedule.validate()?;
        self.api.validate()?;
        self.billing.validate_prices()
    }
}

impl LakeConfig {
    /// Check `lake.uri`: not empty, and a scheme CROW can open.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.uri.trim().is_empty() {
            return Err(err("lake.uri", "must not be empty"));
        }
        if let Some((scheme, _)) = self.uri.split_once("://") {
            if !matches!(scheme, "file" | "s3" | "s3a" | "memory") {
                return Err(err(
                    "lake.uri",
                    format!("unsupported scheme `{scheme}://` (use a folder, file://, or s3://)"),
                ));
            }
        }
        Ok(())
    }
}

impl IngestConfig {
    /// Check the collector's values (keys named `ingest.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_request_bytes {
            return Err(err(
                "ingest.max_event_bytes",
                "must be positive and at most ingest.max_request_bytes",
            ));
        }
        for p in &self.trusted_proxies {
            if let Err(e) = crate::net::IpRange::parse(p) {
                return Err(err("ingest.trusted_proxies", e));
            }
        }
        if !(1..=10_000_000).contains(&self.import_chunk_events) {
            return Err(err("ingest.import_chunk_events", "must be 1–10000000"));
        }
        if self.flush_max_rows == 0 {
            return Err(err("ingest.flush_max_rows", "must be positive"));
        }
        Ok(())
    }
}

impl JobsConfig {
    /// Check the jobs' values (keys named `jobs.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        if self.session_gap_minutes == 0 {
            return Err(err("jobs.session_gap_minutes", "must be positive"));
        }
        if !(16..=1 << 20).contains(&self.memory_limit_mb) {
            return Err(err(
                "jobs.memory_limit_mb",
                "must be between 16 and 1048576",
            ));
        }
        let fdr = self.patterns.fdr;
        if !(fdr > 0.0 && fdr <= 0.5) {
            return Err(err("jobs.patterns.fdr", "must be above 0 and at most 0.5"));
        }
        let n = self.patterns.notify_min_significance;
        if !(n.is_finite() && n >= 0.0) {
            return Err(err(
                "jobs.patterns.notify_min_significance",
                "must be 0 (off) or a positive |z|, such as 6",
            ));
        }
        Ok(())
    }
}

impl BillingConfig {
    /// Check `billing.currency`: an ISO 4217 code.
    fn validate_currency(&self) -> Result<(), ConfigError> {
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(err(
                "billing.currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
        Ok(())
    }

    /// Check the prices: each a non-negative number.
    fn validate_prices(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("billing.per_interaction", self.per_interaction),
            ("billing.per_pattern", self.per_pattern),
            ("billing.per_1000_events", self.per_1000_events),
            ("billing.per_1000_input_tokens", self.per_1000_input_tokens),
            (
                "billing.per_1000_output_tokens",
                self.per_1000_output_tokens,
            ),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(err(key, "must be a non-negative number"));
            }
        }
        Ok(())
    }
}

impl ScheduleConfig {
    /// Check the schedules (every cron parses) and the scheduler's values
    /// (keys named `schedule.*`).
    fn validate(&self) -> Result<(), ConfigError> {
        self.jobs()?;
        in_range(&[
            ("schedule.tick_seconds", self.tick_seconds, 3600),
            ("schedule.lease_seconds", self.lease_seconds, 86_400),
            ("schedule.max_attempts", u64::from(self.max_attempts), 100),
            (
                "schedule.retry_base_seconds",
                self.retry_base_seconds,
                86_400,
            ),
        ])?;
        if self.lease_seconds < 3 {
            return Err(err("schedule.lease_seconds", "must be at least 3"));
        }
        if !(24..=100_000).contains(&self.vacuum_retention_hours) {
            return Err(err(
                "schedule.vacuum_retention_hours",
                "must be between 24 and 100000 (a scheduled vacuum never deletes files a running job or a reader of the last day may need)",
            ));
        }
        Ok(())
    }
}

impl ApiConfig {
    /// Check the query API's values (keys named `api.*`).
    // Long on purpose: one flat list of per-key bounds, in the order the
    // errors are reported; splitting it would only scatter the table.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=60).contains(&self.key_cache_seconds) {
            return Err(err("api.key_cache_seconds", "must be between 1 and 60"));
        }
        if !(1..=43_200).contains(&self.session_idle_minutes) {
            return Err(err(
                "api.session_idle_minutes",
                "must be between 1 and 43200 (30 days)",
            ));
        }
        if !(1..=8_760).contains(&self.session_max_hours) {
            return Err(err(
                "api.session_max_hours",
                "must be between 1 and 8760 (a year)",
            ));
        }
        if !self.rate_limit_per_second.is_finite() || self.rate_limit_per_second <= 0.0 {
            return Err(err(
                "api.rate_limit_per_second",
                "must be a positive number",
            ));
        }
        if !self.public_rate_limit_per_second.is_finite()
            || self.public_rate_limit_per_second <= 0.0
        {
            return Err(err(
                "api.public_rate_limit_per_second",
                "must be a positive number",
            ));
        }
        if self.query_threads > 1024 {
            return Err(err("api.query_threads", "must be 0 (one per core) to 1024"));
        }
        if self.query_nice > 19 {
            return Err(err("api.query_nice", "must be 0 to 19"));
        }
        for (key, v) in [
            ("api.rate_limit_burst", u64::from(self.rate_limit_burst)),
            (
                "api.public_rate_limit_burst",
                u64::from(self.public_rate_limit_burst),
            ),
            ("api.query_timeout_seconds", self.query_timeout_seconds),
            ("api.max_result_rows", self.max_result_rows),
            ("api.memory_limit_mb", self.memory_limit_mb),
            ("api.max_page_size", u64::from(self.max_page_size)),
            ("api.max_saved_queries", u64::from(self.max_saved_queries)),
            ("api.max_sql_bytes", self.max_sql_bytes),
            ("api.max_expression_depth", self.max_expression_depth),
            ("api.max_in_list", self.max_in_list),
            ("api.max_expression_nodes", self.max_expression_nodes),
            ("api.max_function_output_mb", self.max_function_output_mb),
            (
                "api.max_concurrent_queries_per_key",
                self.max_concurrent_queries_per_key,
            ),
            (
                "api.max_concurrent_queries_per_org",
                self.max_concurrent_queries_per_org,
            ),
            ("api.export_max_rows", self.export_max_rows),
            ("api.export_max_bytes", self.export_max_bytes),
        ] {
            if v == 0 {
                return Err(err(key, "must be positive"));
            }
        }
        in_range(&[
            (
                "api.export_timeout_seconds",
                self.export_timeout_seconds,
                7 * 86_400,
            ),
            (
                "api.max_concurrent_exports_per_org",
                u64::from(self.max_concurrent_exports_per_org),
                1000,
            ),
            (
                "api.export_retry_after_seconds",
                self.export_retry_after_seconds,
                3600,
            ),
            (
                "api.result_cache_max_entry_mb",
                self.result_cache_max_entry_mb,
                1024,
            ),
        ])?;
        if self.result_cache_mb > 1024 * 1024 {
            return Err(err(
                "api.result_cache_mb",
                "must be at most 1048576 (1 TiB); 0 turns the cache off",
            ));
        }
        Ok(())
    }
}

/// Each `(key, value, max)` must be between 1 and `max`.
fn in_range(entries: &[(&str, u64, u64)]) -> Result<(), ConfigError> {
    for &(key, v, max) in entries {
        if v == 0 || v > max {
            return Err(err(key, format!("must be between 1 and {max}")));
        }
    }
    Ok(())
}

/// `CROW_*` variables that are flags of the CLI, not configuration keys.
/// `CROW_*` variables read elsewhere (not settings of the file).
const ENV_IGNORED: &[&str] = &["CROW_CONFIG", "CROW_LOG", "CROW_SERVE_ONLY"];
/// Other names a `CROW_*` variable may have (for the typo hint).
const ENV_OTHER: &[&str] = &[
    "CROW_CONFIG",
    "CROW_LOG",
    "CROW_SERVE_ONLY",
    "CROW_LAKE",
    "CROW_LISTEN",
    "CROW_WAL_DIR",
];

/// Levenshtein distance of two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn env_name(path: &[String]) -> String {
    format!("CROW_{}", path.join("_").to_ascii_uppercase())
}

fn collect_leaves(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                prefix.push(k.clone());
                collect_leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

fn set_leaf(
    tree: &mut toml::Value,
    path: &[String],
    env_key: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let dotted = path.join(".");
    let mut cur = tree;
    for (i, part) in path.iter().enumerate() {
        let toml::Value::Table(t) = cur else {
            return Err(err(env_key, format!("`{dotted}` is not a table")));
        };
        if i + 1 == path.len() {
            let new = match t.get(part) {
                Some(toml::Value::Integer(_)) => raw
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| {
                        err(env_key, format!("`{raw}` is not an integer (for {dotted})"))
                    })?,
                Some(toml::Value::Float(_)) => raw
                    .trim()
                    .parse::<f64>()
                    .map(toml::Value::Float)
                    .map_err(|_| err(env_key, format!("`{raw}` is not a number (for {dotted})")))?,
                Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                    "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
                    _ => {
                        return Err(err(
                            env_key,
                            format!("`{raw}` is not a boolean (for {dotted})"),
                        ))
                    }
                },
                Some(toml::Value::Array(_)) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                _ => toml::Value::String(raw.to_string()),
            };
            t.insert(part.clone(), new);
            return Ok(());
        }
        cur = t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
    Ok(())
}

/// The dotted key (`section.key`) whose line holds byte `pos` of `text`.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

fn toml_error(e: &toml::de::Error) -> ConfigError {
    // toml's messages name the key ("unknown field `x`", "for key `ai.concurrency`").
    let msg = e.message().to_string();
    let key = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("unknown field"))
        .map(str::to_string)
        .unwrap_or_else(|| "crow.toml".to_string());
    let mut m = e.to_string().trim().replace('\n', " ");
    while m.contains("  ") {
        m = m.replace("  ", " ");
    }
    err(key, m)
}

/// A `crow.toml` holding every key at its default.
pub fn default_toml() -> String {
    Config::default().to_toml()
}

impl Config {
    /// This configuration as a TOML document, every set [`Secret`] shown
    /// as `***` (so it is for people, not for loading back).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_validate() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.lake.uri, "./crow-data");
        assert_eq!(c.ai.provider, AiProvider::Offline);
        assert_eq!(c.jobs.session_gap_minutes, 60);
        assert_eq!(c.jobs.memory_limit_mb, 2048);
    }

    #[test]
    fn env_overrides_file() {
        let c = Config::load(
            Some("[ai]\nprovider = \"gemini\"\nconcurrency = 2\n"),
            env(&[
                ("CROW_AI_CONCURRENCY", "16"),
                ("CROW_LAKE", "s3://bucket/p"),
                ("CROW_LAKE_S3_ALLOW_HTTP", "true"),
                ("CROW_INGEST_STRIP_QUERY_PARAMS", "a, b"),
                ("CROW_LAKE_OPTIONS_AWS_S3_ADDRESSING_STYLE", "path"),
                ("CROW_LISTEN", "0.0.0.0:9000"),
                ("CROW_WAL_DIR", "/var/lib/crow/wal"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.server.listen, "0.0.0.0:9000",
            "CROW_LISTEN is server.listen"
        );
        assert_eq!(
            c.ingest.wal_dir, "/var/lib/crow/wal",
            "CROW_WAL_DIR is ingest.wal_dir"
        );
        assert_eq!(c.ai.provider, AiProvider::Gemini);
        assert_eq!(c.ai.concurrency, 16);
        assert_eq!(c.lake.uri, "s3://bucket/p");
        assert!(c.lake.s3.allow_http);
        assert_eq!(c.ingest.strip_query_params, vec!["a", "b"]);
        assert_eq!(c.lake.options["aws_s3_addressing_style"].expose(), "path");
        let c = Config::load(
            Some("[api]\nkey_cache_seconds = 30\n"),
            env(&[
                ("CROW_API_KEY_CACHE_SECONDS", "2"),
                ("CROW_API_RATE_LIMIT_PER_SECOND", "0.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.key_cache_seconds, 2);
        assert_eq!(c.api.rate_limit_per_second, 0.5);
        // A CROW_* variable that is no setting names itself, and what it
        // probably meant; other prefixes are not ours.
        let e = Config::load(None, env(&[("CROW_AI_PROVDER", "gemini")])).unwrap_err();
        assert_eq!(e.key, "CROW_AI_PROVDER", "{e}");
        assert!(e.message.contains("did you mean CROW_AI_PROVIDER?"), "{e}");
        let e = Config::load(None, env(&[("CROW_SOMETHING_ELSE", "x")])).unwrap_err();
        assert!(!e.message.contains("did you mean"), "{e}");
        Config::load(
            None,
            env(&[
                ("CROWTEST_VENV", "x"),
                ("CROW_LOG", "debug"),
                ("CROW_SERVE_ONLY", "api"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load(Some("[ai]\nconcurrency = \"many\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "ai.concurrency", "{e}");
        let e = Config::load(Some("[ai]\nprovidr = \"gemini\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "ai.providr", "{e}");
        let e = Config::load(None, env(&[("CROW_AI_CONCURRENCY", "lots")])).unwrap_err();
        assert_eq!(e.key, "CROW_AI_CONCURRENCY");
        // A value that is not one of a setting's names: the key, the value
        // and the names allowed, from the file and from the environment.
        let e = Config::load(None, env(&[("CROW_AI_PROVIDER", "skynet")])).unwrap_err();
        assert_eq!(e.key, "ai.provider");
        assert_eq!(
            e.message,
            "unknown variant `skynet`, expected one of `offline`, `gemini`, `openai` (from CROW_AI_PROVIDER)"
        );
        let e = Config::load(Some("[ai]\nprovider = \"OpenAI\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "ai.provider", "{e}");
        assert!(
            e.message
                .contains("`OpenAI`, expected one of `offline`, `gemini`, `openai`"),
            "{e}"
        );
        let e = Config::load(
            Some("[lake.s3]\nconditional_put = \"etag\"\n"),
            env(&[
                ("CROW_AI_MODEL", "m"),
                ("CROW_LAKE_S3_CONDITIONAL_PUT", "always"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.key, "lake.s3.conditional_put", "{e}");
        assert!(
            e.message
                .contains("`always`, expected one of ``, `etag`, `disabled`"),
            "{e}"
        );
        for (value, want) in [
            ("", ConditionalPut::ClientDefault),
            ("etag", ConditionalPut::Etag),
            ("disabled", ConditionalPut::Disabled),
        ] {
            let c = Config::load(None, env(&[("CROW_LAKE_S3_CONDITIONAL_PUT", value)])).unwrap();
            assert_eq!(c.lake.s3.conditional_put, want);
        }
        for (value, want) in [
            ("offline", AiProvider::Offline),
            ("gemini", AiProvider::Gemini),
            ("openai", AiProvider::OpenAi),
        ] {
            let c = Config::load(None, env(&[("CROW_AI_PROVIDER", value)])).unwrap();
            assert_eq!(c.ai.provider, want);
            assert!(c.to_toml().contains(&format!("provider = \"{value}\"")));
        }
        let e = Config::load(Some("[server]\nlisten = \"here\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "server.listen");
        let e = Config::load(Some("[server]\nflight_listen = \"x\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "server.flight_listen");
        let e = Config::load(None, env(&[("CROW_LAKE_S3_ALLOW_HTTP", "perhaps")])).unwrap_err();
        assert_eq!(e.key, "CROW_LAKE_S3_ALLOW_HTTP");
        let e = Config::load(None, env(&[("CROW_API_KEY_CACHE_SECONDS", "600")])).unwrap_err();
        assert_eq!(e.key, "api.key_cache_seconds");
        let e = Config::load(Some("[api]\nrate_limit_burst = 0\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "api.rate_limit_burst");
        for (var, key) in [
            (
                "CROW_API_EXPORT_TIMEOUT_SECONDS",
                "api.export_timeout_seconds",
            ),
            ("CROW_API_EXPORT_MAX_ROWS", "api.export_max_rows"),
            ("CROW_API_EXPORT_MAX_BYTES", "api.export_max_bytes"),
            (
                "CROW_API_MAX_CONCURRENT_EXPORTS_PER_ORG",
                "api.max_concurrent_exports_per_org",
            ),
            (
                "CROW_API_EXPORT_RETRY_AFTER_SECONDS",
                "api.export_retry_after_seconds",
            ),
        ] {
            let e = Config::load(None, env(&[(var, "0")])).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let c = Config::load(None, env(&[("CROW_API_EXPORT_TIMEOUT_SECONDS", "3")])).unwrap();
        assert_eq!(c.api.export_timeout_seconds, 3);
        for v in ["0", "15", "1048577"] {
            let e = Config::load(None, env(&[("CROW_JOBS_MEMORY_LIMIT_MB", v)])).unwrap_err();
            assert_eq!(e.key, "jobs.memory_limit_mb", "{e}");
        }
        let c = Config::load(Some("[jobs]\nmemory_limit_mb = 64\n"), env(&[])).unwrap();
        assert_eq!(c.jobs.memory_limit_mb, 64);
    }

    #[test]
    fn schedules() {
        let c = Config::load(
            Some("[schedule]\nsessionize = \"* * * * *\"\npatterns = \"off\"\n"),
            env(&[
                ("CROW_SCHEDULE_BILLING", ""),
                ("CROW_SCHEDULE_ENRICH", "*/2 * * * * *"),
                ("CROW_SCHEDULE_ENABLED", "false"),
                ("CROW_SCHEDULE_LEASE_SECONDS", "6"),
            ]),
        )
        .unwrap();
        assert!(!c.schedule.enabled);
        assert_eq!(c.schedule.lease_seconds, 6);
        let jobs = c.schedule.jobs().unwrap();
        let on: Vec<&str> = jobs
            .iter()
            .filter(|j| j.1.is_some())
            .map(|j| j.0.as_str())
            .collect();
        assert_eq!(
            on,
            [
                "social",
                "sessionize",
                "enrich",
                "optimize",
                "checkpoint",
                "vacuum"
            ]
        );
        let e = Config::load(Some("[schedule]\nbilling = \"0 25 * * *\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "schedule.billing", "{e}");
        assert!(e.message.contains("hour"), "{e}");
        let e = Config::load(None, env(&[("CROW_SCHEDULE_ENRICH", "every minute")])).unwrap_err();
        assert_eq!(e.key, "schedule.enrich", "{e}");
        let e = Config::load(None, env(&[("CROW_SCHEDULE_TICK_SECONDS", "0")])).unwrap_err();
        assert_eq!(e.key, "schedule.tick_seconds", "{e}");
        let e = Config::load(Some("[schedule]\noptimise = \"\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "schedule.optimise", "{e}");
    }

    #[test]
    fn patterns_fdr_is_a_rate() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!((c.jobs.patterns.fdr - 0.01).abs() < 1e-12);
        let c = Config::load(None, env(&[("CROW_JOBS_PATTERNS_FDR", "0.05")])).unwrap();
        assert!((c.jobs.patterns.fdr - 0.05).abs() < 1e-12);
        let c = Config::load(Some("[jobs.patterns]\nfdr = 0.02\n"), env(&[])).unwrap();
        assert!((c.jobs.patterns.fdr - 0.02).abs() < 1e-12);
        for bad in ["0", "0.9", "-0.1"] {
            let e = Config::load(None, env(&[("CROW_JOBS_PATTERNS_FDR", bad)])).unwrap_err();
            assert_eq!(e.key, "jobs.patterns.fdr", "{e}");
        }
        let e = Config::load(
            None,
            env(&[("CROW_JOBS_PATTERNS_NOTIFY_MIN_SIGNIFICANCE", "-1")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "jobs.patterns.notify_min_significance", "{e}");
    }

    #[test]
    fn example_configs_parse() {
        for name in ["crow.local.toml", "crow.r2.toml"] {
            let path = format!("{}/../deploy/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let c = Config::load(Some(&text), env(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.contains("r2") {
                assert!(c.lake.uri.starts_with("s3://"));
                assert_eq!(c.lake.s3.region, "auto");
                assert_eq!(c.lake.s3.conditional_put, ConditionalPut::Etag);
            }
        }
    }

    /// Secrets from the file and from `CROW_*` keep their values through
    /// loading (the environment is applied through a TOML tree) and are
    /// never printed.
    #[test]
    fn secrets_load_and_never_print() {
        let file = "[lake.s3]\nsecret_access_key = \"file-s3-secret\"\n\
                    [lake.options]\naws_session_token = \"file-session-token\"\n\
                    [ingest]\nip_salt = \"file-ip-salt\"\n";
        let c = Config::load(
            Some(file),
            env(&[
                ("CROW_LAKE_S3_ACCESS_KEY_ID", "env-access-key"),
                ("CROW_SERVER_METRICS_TOKEN", "env-metrics-token-0123456789"),
                ("CROW_SOCIAL_BLUESKY_APP_PASSWORD", "env-app-password"),
                (
                    "CROW_LAKE_OPTIONS_AZURE_STORAGE_ACCOUNT_KEY",
                    "env-azure-key",
                ),
            ]),
        )
        .unwrap();
        let values = [
            (c.lake.s3.secret_access_key.expose(), "file-s3-secret"),
            (
                c.lake.options["aws_session_token"].expose(),
                "file-session-token",
            ),
            (c.ingest.ip_salt.expose(), "file-ip-salt"),
            (c.lake.s3.access_key_id.expose(), "env-access-key"),
            (
                c.server.metrics_token.expose(),
                "env-metrics-token-0123456789",
            ),
            (c.social.bluesky_app_password.expose(), "env-app-password"),
            (
                c.lake.options["azure_storage_account_key"].expose(),
                "env-azure-key",
            ),
        ];
        for (got, want) in values {
            assert_eq!(got, want);
        }
        for text in [c.to_toml(), format!("{c:?}"), format!("{c:#?}")] {
            for (_, v) in values {
                assert!(!text.contains(v), "{v} printed: {text}");
            }
        }
        let shown = c.to_toml();
        assert!(shown.contains("ip_salt = \"***\""), "{shown}");
        assert!(shown.contains("aws_session_token = \"***\""), "{shown}");
        let e = Config::load(None, env(&[("CROW_SERVER_METRICS_TOKEN", "short")])).unwrap_err();
        assert_eq!(e.key, "server.metrics_token", "{e}");
    }

    /// `[discovery]`: its key is a secret that never prints, a bad value
    /// names its key, an unknown provider is refused by name.
    #[test]
    fn discovery_settings_load_and_name_bad_keys() {
        let c = Config::load(
            Some("[discovery]\nprovider = \"brave\"\nmax_queries = 3\n"),
            env(&[
                ("CROW_DISCOVERY_API_KEY", "brave-token-value"),
                ("CROW_DISCOVERY_RESULTS_PER_QUERY", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.discovery.provider, SearchProvider::Brave);
        assert_eq!(
            (c.discovery.max_queries, c.discovery.results_per_query),
            (3, 4)
        );
        assert_eq!(c.discovery.api_key.expose(), "brave-token-value");
        let shown = c.to_toml();
        assert!(!shown.contains("brave-token-value"), "{shown}");
        assert!(shown.contains("api_key = \"***\""), "{shown}");
        let e = Config::load(None, env(&[("CROW_DISCOVERY_MAX_QUERIES", "0")])).unwrap_err();
        assert_eq!(e.key, "discovery.max_queries", "{e}");
        let e = Config::load(Some("[discovery]\nurl = \"searx.local\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "discovery.url", "{e}");
        let e = Config::load(None, env(&[("CROW_DISCOVERY_PROVIDER", "bing")])).unwrap_err();
        assert_eq!(e.key, "discovery.provider", "{e}");
    }

    #[test]
    fn default_toml_round_trips() {
        let text = default_toml();
        assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
    }

    #[test]
    fn browser_settings_are_checked_by_name() {
        let c = Config::load(
            Some("[browser]\nrender = \"never\"\nmax_concurrent = 3\n"),
            env(&[("CROW_BROWSER_TIMEOUT_SECONDS", "9")]),
        )
        .unwrap();
        assert_eq!(c.browser.render, BrowserRender::Never);
        assert_eq!(
            (c.browser.max_concurrent, c.browser.timeout_seconds),
            (3, 9)
        );
        let e = Config::load(Some("[browser]\nrender = \"sometimes\"\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "browser.render", "{e}");
        let e = Config::load(Some("[browser]\nmax_concurrent = 0\n"), env(&[])).unwrap_err();
        assert_eq!(e.key, "browser.max_concurrent", "{e}");
        let e = Config::load(None, env(&[("CROW_BROWSER_SCRIPT_BUDGET_MS", "30000")])).unwrap_err();
        assert_eq!(e.key, "browser.script_budget_ms", "{e}");
        let e = Config::load(None, env(&[("CROW_BROWSER_RENDER", "maybe")])).unwrap_err();
        assert_eq!(e.key, "browser.render", "{e}");
    }

    #[test]
    fn embedding_settings_load_and_bad_ones_are_named() {
        let c = Config::load(
            Some("[ai.embeddings]\nprovider = \"openai\"\ndims = 64\n"),
            env(&[("CROW_AI_EMBEDDINGS_BATCH_SIZE", "8")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ai.embeddings.provider, AiProvider::OpenAi);
        assert_eq!((c.ai.embeddings.dims, c.ai.embeddings.batch_size), (64, 8));
        for (k, v, key) in [
            ("CROW_AI_EMBEDDINGS_DIMS", "4", "ai.embeddings.dims"),
            (
                "CROW_AI_EMBEDDINGS_BATCH_SIZE",
                "0",
                "ai.embeddings.batch_size",
            ),
            (
                "CROW_AI_EMBEDDINGS_MIN_SCORE",
                "1.5",
                "ai.embeddings.min_score",
            ),
            (
                "CROW_AI_EMBEDDINGS_BASE_URL",
                "ftp://x",
                "ai.embeddings.base_url",
            ),
        ] {
            let e = Config::load(None, env(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }
}
