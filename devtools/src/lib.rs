//! CROW's benchmark fixtures: the code behind `crow bench`, kept out of the
//! product binary.
//!
//! A `crow` built as users install it (`cargo build --release -p
//! crow-cli`) has no `bench` subcommand and none of this crate: no load
//! generator, no fake AI provider. `crow-cli`'s `bench` feature (off by
//! default) pulls this crate in and mounts [`BenchCommand`] as `crow bench`;
//! the workspace's test build turns the feature on (the test package
//! dev-depends on `crow-cli` with it), so `target/debug/crow` of `cargo
//! build --workspace --all-targets` has it for the tests and
//! `scripts/bench-*.sh`.
//!
//! - `ingest_load`: `crow bench ingest`, concurrent HTTP clients against a
//!   collector in this process or elsewhere;
//! - `fake_provider`: the OpenAI-wire server with a fixed latency that
//!   `crow bench enrich` measures the enrich job against;
//! - `generate`, `import`, `enrich`, `search`: `crow bench
//!   generate|import|enrich|search`.
//!
//! The synthetic brand itself (`crow_ingest::generate`) is not here: `crow
//! demo`, a user command, is built on it.
//!
//! Every function here is a command's body, as in `crow`'s own modules:
//! errors are `anyhow::Error`, reported by `crow`'s `main` like any
//! command's (a closed stdout pipe stays recognisable, see `output`).
#![warn(missing_docs)]

mod command;
mod enrich;
mod fake_provider;
mod generate;
mod import;
mod ingest_load;
mod output;
mod search;

pub use command::{run, BenchCommand};
