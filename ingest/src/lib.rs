//! CROW's collector: Segment-compatible HTTP ingest for web and app events,
//! plus social captures and CCTV transcripts.
//!
//! **Ack means durable**: a request is answered 2xx only after its rows are
//! in an fsync'd write-ahead log ([`wal`]); the [`flush`]er commits WAL
//! segments to the raw Delta tables exactly once (Delta application
//! transactions), then retires them. Invalid events are never dropped: they
//! land in `failed_events` with their reason and payload.
//!
//! Event validation and normalisation live in [`normalize`]; the synthetic
//! brand used by `crow demo` and the benchmarks lives in [`generate`].
#![warn(missing_docs)]

pub mod channels;
pub mod error;
pub mod flush;
pub mod generate;
pub mod import;
pub mod metrics;
pub mod normalize;
pub mod rowcodec;
pub mod segment_parquet;
pub mod server;
pub mod service;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
pub use service::Collector;
