//! CROW's end-to-end tests: one binary (see STYLE.md), real storage backends,
//! the real `crow` binary, independent readers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod a2a;
mod api;
mod ask;
mod ask_bench;
mod bench;
mod browser;
mod cache;
mod chats;
mod cli;
mod dashboard;
mod discover;
mod embed;
mod exports;
mod flight;
mod framework;
mod hardening;
mod hostile;
mod import;
mod ingest;
mod jobs;
mod lake;
mod orgs;
mod pgwire;
mod query_history;
mod readers;
mod readme;
mod saved_queries;
mod scan;
mod schedule;
mod social;
mod support;
mod users;
