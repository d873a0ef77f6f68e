//! `crow`: CROW's command line.

mod ask;
mod backfill;
mod billing;
mod demo;
mod error;
mod export;
mod flight;
mod http;
mod import;
mod jobs;
mod keys;
mod maint;
mod orgs;
mod output;
mod products;
mod serve;
mod social;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use crow_lake::Lake;
use crow_schemas::config::Config;
use output::Format;

/// mimalloc: the ingest path and DataFusion allocate many small objects;
/// glibc's allocator took a quarter of the collector's CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CROW: an open interaction-analytics lakehouse.
#[derive(Debug, Parser)]
#[command(name = "crow", version, about, propagate_version = true)]
struct Cli {
    /// Lake URI: a local folder (default ./crow-data) or s3://bucket/prefix.
    #[arg(long, global = true, env = "CROW_LAKE")]
    lake: Option<String>,
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "CROW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the lake and every table (running it again changes nothing).
    Init(FormatArg),
    /// Each table with its version, files, rows and bytes.
    Tables(FormatArg),
    /// Ask a question about an organization's data in plain language: the
    /// AI provider (`ai.provider`) writes one SQL query, which runs in the
    /// organization's tenant session like `/api/v1/sql`.
    Ask {
        /// The question, e.g. "top 5 products by views".
        question: String,
        /// Organization id or name.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Run SQL over the lake.
    Sql {
        /// The query.
        query: String,
        /// Time travel: every table as of this time (RFC 3339, e.g.
        /// 2026-11-28T08:00:00Z), except those `--table-version` pins.
        #[arg(long)]
        as_of: Option<String>,
        /// Time travel: one table at a Delta version, as TABLE=VERSION
        /// (repeatable).
        #[arg(long = "table-version", value_name = "TABLE=VERSION")]
        versions: Vec<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The commit history of a table.
    History {
        /// Table name.
        table: String,
        /// Show at most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Compact small files (all tables, or one).
    Optimize {
        /// Table name (default: every table).
        table: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Delete files no version within the retention period needs.
    Vacuum {
        /// Table name (default: every table).
        table: Option<String>,
        /// Keep files needed by versions of the last HOURS hours.
        #[arg(long, default_value_t = 168)]
        retention_hours: u64,
        /// Only list the files that would be deleted (one row per file),
        /// deleting nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Write a checkpoint of the Delta log (all tables, or one).
    Checkpoint {
        /// Table name (default: every table).
        table: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Organizations (tenants).
    #[command(subcommand)]
    Orgs(orgs::OrgsCommand),
    /// Users of an organization: invite, roles, disable, password resets,
    /// sessions.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Query API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Export a table (one organization's rows) to Parquet, CSV or JSON lines.
    Export(export::ExportArgs),
    /// Import historical events (Segment's archive format: JSON lines,
    /// gzip'd or not) exactly once per file, bad lines to failed_events.
    Import(import::ImportArgs),
    /// Batch jobs: sessionize, enrich, patterns, billing (run now, status).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// The product catalog: import, crawl, list.
    #[command(subcommand)]
    Products(products::ProductsCommand),
    /// The social channel: an organization's sources (feeds, hashtags,
    /// subreddits, searches) and collector runs.
    #[command(subcommand)]
    Social(social::SocialCommand),
    /// Recompute a range of days with a job and the jobs downstream of it
    /// (sessionize → enrich → patterns → billing).
    Backfill(backfill::BackfillArgs),
    /// Invoices from metered usage.
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// The whole pipeline on a synthetic brand: five weeks of activity (with
    /// incidents to find) sent through the collector, then sessionize,
    /// enrich, patterns and billing.
    Demo {
        /// Visitors to generate (over all days).
        #[arg(long, default_value_t = 12_000)]
        visitors: usize,
        /// Days of activity, ending the day before yesterday (so no session
        /// of the data is still open whatever the time of day).(21 or more plant incidents).
        #[arg(long, default_value_t = 35)]
        days: u32,
        /// Random seed (same seed, same data).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Run the demo as if the clock read this time (RFC 3339, not in
        /// the future): the activity ends the day before it, and the jobs
        /// use it as their clock.
        #[arg(long)]
        now: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    // Only in a `crow` built with the `bench` feature (crow-devtools): the
    // product binary carries no benchmark fixtures.
    /// Benchmarks (see BENCHMARKS.md).
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(crow_devtools::BenchCommand),
    /// Run the server: the collector (Segment-compatible ingest) with its WAL
    /// and flusher, the query API, and the job scheduler.
    Serve {
        /// Listen address (default: server.listen, 127.0.0.1:8080; also set
        /// by CROW_LISTEN or CROW_SERVER_LISTEN, which `crow config show`
        /// reflects).
        #[arg(long)]
        listen: Option<String>,
        /// Write-ahead log folder (default: ingest.wal_dir, else <lake>/_wal
        /// for a local lake and ./crow-wal otherwise; also set by
        /// CROW_WAL_DIR or CROW_INGEST_WAL_DIR).
        #[arg(long)]
        wal_dir: Option<PathBuf>,
        /// Serve only one part (for separate scaling): `api` (no scheduler)
        /// or `ingest` (with the scheduler). Default: both on one listener,
        /// with the scheduler.
        #[arg(long, env = "CROW_SERVE_ONLY", value_enum)]
        only: Option<serve::Only>,
        /// Also serve Arrow Flight SQL on this address (default:
        /// server.flight_listen; empty: off).
        #[arg(long)]
        flight_listen: Option<String>,
        /// Also serve the Postgres wire protocol on this address (default:
        /// server.pg_listen, empty: off), for psql, BI tools and Postgres
        /// drivers; user = key id or organization id, password = API key.
        #[arg(long)]
        pg_listen: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key (the secret is shown once; only its hash is stored).
    Create {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        /// What the key may do.
        #[arg(long, value_parser = ["read", "export", "admin"], default_value = "read")]
        scope: String,
        /// Expire after this many days (default: `api.key_default_expiry_days`, 90).
        #[arg(long, value_name = "DAYS", conflicts_with = "never_expires")]
        expires: Option<u32>,
        /// Make a key that never expires.
        #[arg(long)]
        never_expires: bool,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List API keys (never their secrets or hashes).
    List {
        /// Only this organization's keys (id or name).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Revoke an API key by id (enforced by servers within api.key_cache_seconds).
    Revoke {
        /// Key id (`key_…`).
        id: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets masked).
    Show,
    /// Print a crow.toml with every key at its default.
    Default,
}

/// The exit status of a command whose reader closed the pipe (`crow … |
/// head`): 128 + SIGPIPE, what a shell reports for a tool SIGPIPE ended.
const BROKEN_PIPE_EXIT: u8 = 141;

/// CROW's own crates, as tracing names them.
const CROW_TARGETS: [&str; 6] = [
    "crow",
    "crow_schemas",
    "crow_lake",
    "crow_ingest",
    "crow_jobs",
    "crow_query_api",
];

/// The log filter: `CROW_LOG` (full `EnvFilter` syntax) when set and not
/// empty; else everything at `warn`, and for `crow serve` CROW's own crates
/// at `info` (the Delta and DataFusion libraries log every commit and scan
/// at info: hundreds of lines a minute). delta-kernel logs an ERROR whenever
/// it probes a folder that is not a table yet (every `crow init`); the
/// caller handles that case, so it is off by default. A command other than
/// `crow serve` says its own error in one line, cause included, so the
/// kernel's ERROR lines for the same failure (one per table it was loading,
/// each with the store's whole answer) are off there too.
fn log_filter(serve: bool) -> tracing_subscriber::EnvFilter {
    if let Ok(v) = std::env::var("CROW_LOG") {
        if !v.trim().is_empty() {
            match tracing_subscriber::EnvFilter::try_new(&v) {
                Ok(f) => return f,
                Err(e) => eprintln!(
                    "warning: CROW_LOG `{v}` is not a log filter ({e}); using the default"
                ),
            }
        }
    }
    let mut filter =
        "warn,buoyant_kernel::snapshot::builder=off,deltalake_core::operations::merge=error"
            .to_string();
    if serve {
        for t in CROW_TARGETS {
            filter.push_str(&format!(",{t}=info"));
        }
    } else {
        filter.push_str(",buoyant_kernel=off");
    }
    tracing_subscriber::EnvFilter::new(filter)
}

/// Transparent huge pages off for this process, unless the operator set
/// mimalloc's own `MIMALLOC_ALLOW_THP`. mimalloc asks the kernel for huge
/// pages on its whole 1 GiB arena (`madvise(MADV_HUGEPAGE)`), so with THP in
/// `madvise` or `always` mode every first touch of a 2 MiB range zeroes all
/// of it: a `crow init` spent 80 % of its time in the kernel zeroing pages it
/// never used (RSS 160 MB instead of 57), the test suite a third of its CPU,
/// and sessionizing 10 M events ran about a tenth slower (BENCHMARKS.md,
/// "Huge pages"). Queries in a warm server were the same either way. The
/// flag is the process's (all threads, kept across `exec`); it only changes
/// how pages are backed, never what is allocated.
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Not worth failing a command for: the kernel may not know the call.
        tracing::debug!("could not turn transparent huge pages off: {e}");
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(matches!(cli.command, Command::Serve { .. })))
        .with_writer(std::io::stderr)
        .init();
    no_huge_pages();
    // Large stacks (address space, touched only as used): exports and REST
    // plan user input here; SQL queries run on the query API's own runtime.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(32 * 1024 * 1024)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Not a failure worth a word: the reader has what it wanted.
        Err(e) if error::is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            tracing::debug!("the full chain of causes: {e:?}");
            eprintln!("error: {}", error::one_line(&e));
            let code = if error::is_retryable(&e) {
                i32::from(error::TEMPFAIL_EXIT)
            } else {
                1
            };
            // Leave without tearing the runtime down: a failed command may
            // leave work of its own on the blocking threads (the other
            // tables a lake was loading when one of them failed), and the
            // delta kernel panics when the runtime it waits on goes away
            // under it: a panic message after the error, for nothing.
            // (`exit` still flushes stdout.)
            std::process::exit(code)
        }
    }
}

/// Help and version go to stdout as clap writes them; a wrong argument is
/// one line on stderr, with the hint clap gives, and clap's exit status (2).
fn argument_error(e: &clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    if !e.use_stderr() {
        // --help, --version: the text is the answer.
        return match e.print() {
            Ok(()) => ExitCode::from(code),
            Err(_) => ExitCode::from(BROKEN_PIPE_EXIT),
        };
    }
    let command = error::command_path(&<Cli as clap::CommandFactory>::command(), std::env::args());
    eprintln!("error: {}", error::argument_error(e, &command));
    ExitCode::from(code)
}

fn load_config(cli: &Cli) -> Result<Config> {
    let text = match &cli.config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?,
        ),
        None => match std::fs::read_to_string("crow.toml") {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context("reading ./crow.toml"),
        },
    };
    let mut cfg = Config::load(text.as_deref(), std::env::vars())?;
    if let Some(lake) = &cli.lake {
        cfg.lake.uri = lake.clone();
        cfg.validate()?;
    }
    Ok(cfg)
}

async fn open_lake(cfg: &Config) -> Result<Lake> {
    Ok(Lake::open(&cfg.lake).await?)
}

/// `crow keys create|list|revoke`.
async fn keys_command(cfg: &Config, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            org,
            scope,
            expires,
            never_expires,
            name,
            format,
        } => {
            let lake = open_lake(cfg).await?;
            let expires = match (expires, never_expires, cfg.api.key_default_expiry_days) {
                (Some(d), _, _) => Some(d),
                (None, true, _) | (None, false, 0) => None,
                (None, false, d) => Some(d),
            };
            keys::create(&lake, &org, &scope, expires, name.as_deref(), format.format).await
        }
        KeysCommand::List { org, format } => {
            let lake = open_lake(cfg).await?;
            keys::list(&lake, org.as_deref(), format.format).await
        }
        KeysCommand::Revoke { id, format } => {
            let lake = open_lake(cfg).await?;
            keys::revoke(&lake, &id, format.format).await
        }
    }
}

/// `crow jobs …`: run a job, or read the jobs' status, runs and failures.
async fn jobs_command(cfg: &Config, cmd: jobs::JobsCommand) -> Result<()> {
    let lake = open_lake(cfg).await?;
    match cmd {
        jobs::JobsCommand::Run(args) => jobs::run(&lake, cfg, args).await,
        jobs::JobsCommand::Status(format) => jobs::status(&lake, cfg, format.format).await,
        jobs::JobsCommand::Runs { job, limit, format } => {
            jobs::list_runs(&lake, job, limit, format.format).await
        }
        jobs::JobsCommand::Failures(format) => jobs::failures(&lake, format.format).await,
    }
}

// Long on purpose: one match arm per `crow` subcommand, each a call into
// the module that implements it.
async fn run(cli: Cli) -> Result<()> {
    let cfg = load_config(&cli)?;
    match cli.command {
        Command::Init(f) => maint::init(&open_lake(&cfg).await?, f.format).await,
        Command::Tables(f) => maint::tables(&open_lake(&cfg).await?, f.format).await,
        Command::Ask {
            question,
            org,
            format,
        } => {
            ask::run(
                &open_lake(&cfg).await?,
                &cfg,
                &org,
                &question,
                format.format,
            )
            .await
        }
        Command::Sql {
            query,
            as_of,
            versions,
            format,
        } => {
            let lake = open_lake(&cfg).await?;
            maint::sql(&lake, &query, as_of.as_deref(), &versions, format.format).await
        }
        Command::History {
            table,
            limit,
            format,
        } => maint::history(&open_lake(&cfg).await?, &table, limit, format.format).await,
        Command::Optimize { table, format } => {
            maint::optimize(&open_lake(&cfg).await?, table.as_deref(), format.format).await
        }
        Command::Vacuum {
            table,
            retention_hours,
            dry_run,
            format,
        } => {
            let lake = open_lake(&cfg).await?;
            maint::vacuum(
                &lake,
                table.as_deref(),
                retention_hours,
                dry_run,
                format.format,
            )
            .await
        }
        Command::Checkpoint { table, format } => {
            maint::checkpoint(&open_lake(&cfg).await?, table.as_deref(), format.format).await
        }
        Command::Orgs(cmd) => orgs::run(&open_lake(&cfg).await?, cmd).await,
        Command::Users(cmd) => users::run(&open_lake(&cfg).await?, &cfg, cmd).await,
        Command::Demo {
            visitors,
            days,
            seed,
            now,
            format,
        } => {
            let lake = open_lake(&cfg).await?;
            let now = now.unwrap_or_else(chrono::Utc::now);
            demo::run(&lake, &cfg, visitors, days, seed, now, format.format).await
        }
        // Every secret prints as `***` (crow_schemas::Secret).
        Command::Config(ConfigCommand::Show) => output::text(&cfg.to_toml()),
        #[cfg(feature = "bench")]
        Command::Bench(cmd) => crow_devtools::run(&cfg, cli.lake.is_some(), cmd).await,
        Command::Serve {
            listen,
            wal_dir,
            only,
            flight_listen,
            pg_listen,
        } => {
            let lake = open_lake(&cfg).await?;
            let protocols = serve::Protocols {
                flight_listen,
                pg_listen,
            };
            serve::run(lake, cfg, listen, wal_dir, only, protocols).await
        }
        Command::Keys(cmd) => keys_command(&cfg, cmd).await,
        Command::Export(args) => export::run(&open_lake(&cfg).await?, args).await,
        Command::Import(args) => import::run(&open_lake(&cfg).await?, &cfg, args).await,
        Command::Jobs(cmd) => jobs_command(&cfg, cmd).await,
        Command::Social(cmd) => social::run(&open_lake(&cfg).await?, &cfg, cmd).await,
        Command::Products(cmd) => products::run(&open_lake(&cfg).await?, &cfg, cmd).await,
        Command::Backfill(args) => backfill::run(&open_lake(&cfg).await?, &cfg, args).await,
        Command::Billing(cmd) => billing::run(&open_lake(&cfg).await?, &cfg, cmd).await,
        Command::Config(ConfigCommand::Default) => {
            output::text(&crow_schemas::config::default_toml())
        }
    }
}
