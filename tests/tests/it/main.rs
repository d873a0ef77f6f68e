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

/// libtest starts tests in the order of their names, six at a time here.
/// This one mostly waits (a minute for a social run's session to close,
/// then the scheduled sessionize and enrich), and as `social::…` it started
/// among the last and ran alone for the suite's last minute. Under this
/// root-level name it starts among the first, and its wait overlaps the
/// other tests' work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_social_run_becomes_a_session_and_interactions_naming_products() {
    social::a_scheduled_run_becomes_a_session_and_interactions_naming_products().await;
}
