//! The `crow bench` subcommand: its arguments (a clap [`Subcommand`] that
//! `crow` mounts as `bench` when built with the `bench` feature) and
//! [`run`], which dispatches to the benchmarks.

use anyhow::Result;
use clap::Subcommand;
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::ingest_load::LoadArgs;

/// `crow bench …`: the benchmarks' own commands (BENCHMARKS.md).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Land synthetic web events (the demo funnel) into the lake for the
    /// job benchmarks.
    Generate {
        /// Events to land.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Days of activity, ending the day before yesterday (so no session
        /// of the data is still open whatever the time of day).
        #[arg(long, default_value_t = 28)]
        days: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Enrichment throughput against a local OpenAI-compatible server with
    /// a fixed latency (a temp lake).
    Enrich {
        /// About this many sessions.
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        /// Provider latency per call.
        #[arg(long, default_value_t = 300)]
        latency_ms: u64,
        /// Concurrent provider calls.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Top-10 similarity search over N vectors of `ai.embeddings.dims`
    /// dimensions: the exact scan in memory, and the search endpoint's
    /// whole path over a temp lake.
    Search {
        /// Vectors searched.
        #[arg(long, default_value_t = 100_000)]
        vectors: usize,
        /// In-memory queries timed.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// End-to-end queries through the lake (0: skip that part).
        #[arg(long, default_value_t = 5)]
        lake_queries: usize,
    },
    /// Bulk import rate against plain serde_json parsing the same
    /// decompressed file (a generated Segment archive, a temp lake).
    Import {
        /// Events in the generated archive.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Durable ingest throughput and latency over real HTTP (a collector in
    /// this process, over a temp lake unless --lake is given).
    Ingest {
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        batch: Vec<usize>,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds per batch size.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Load a collector that runs elsewhere (its base URL, e.g.
        /// http://127.0.0.1:8080) instead of one in this process.
        #[arg(long, requires = "write_key")]
        url: Option<String>,
        /// The write key for --url.
        #[arg(long)]
        write_key: Option<String>,
    },
}

/// Run a `crow bench` command with the effective configuration; `lake_given`
/// says whether the lake was chosen on the command line (`--lake`), which
/// `crow bench ingest` uses instead of a temp lake.
pub async fn run(cfg: &Config, lake_given: bool, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Generate { events, days, seed } => {
            let lake = Lake::open(&cfg.lake).await?;
            crate::generate::run(&lake, events, days, seed).await
        }
        BenchCommand::Import { events } => crate::import::run(cfg, events.max(1)).await,
        BenchCommand::Search {
            vectors,
            queries,
            lake_queries,
        } => crate::search::run(cfg, vectors.max(1), queries.max(1), lake_queries).await,
        BenchCommand::Enrich {
            sessions,
            latency_ms,
            concurrency,
        } => crate::enrich::run(cfg.clone(), sessions.max(1), latency_ms, concurrency.max(1)).await,
        BenchCommand::Ingest {
            batch,
            clients,
            seconds,
            url: Some(url),
            write_key,
        } => {
            let args = LoadArgs {
                batches: batch,
                concurrency: clients.max(1),
                seconds: seconds.max(1),
            };
            crate::ingest_load::run_remote(&url, write_key.as_deref().unwrap_or_default(), args)
                .await
        }
        BenchCommand::Ingest {
            batch,
            clients,
            seconds,
            ..
        } => {
            let args = LoadArgs {
                batches: batch,
                concurrency: clients.max(1),
                seconds: seconds.max(1),
            };
            crate::ingest_load::run(cfg.clone(), lake_given, args).await
        }
    }
}
