//! Patterns: what stands out and what changed, per day, week, month, year
//! and all time (work in progress: the statistics land in the next commit).

use chrono::{DateTime, Utc};
use crow_lake::Lake;
use serde::Serialize;
use std::sync::Arc;

use crate::ai::Provider;
use crate::{ProgressRef, Result, Trigger, Window};

/// Name of the job in the ledger.
pub const JOB: &str = "patterns";

/// What to compute.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this organization (None: all).
    pub org: Option<String>,
    /// Explicit window of whole days (None: incremental).
    pub window: Option<Window>,
    /// How the run was started.
    pub trigger: Trigger,
    /// The run's clock.
    pub now: DateTime<Utc>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run id (empty when there was nothing to do).
    pub run_id: String,
    /// Window start.
    pub window_start: Option<DateTime<Utc>>,
    /// Window end.
    pub window_end: Option<DateTime<Utc>>,
    /// Patterns written, all period kinds.
    pub patterns: u64,
}

/// Run the patterns job.
pub async fn run(
    lake: &Lake,
    provider: Arc<dyn Provider>,
    opts: &Options,
    progress: &ProgressRef,
) -> Result<Report> {
    let _ = (lake, provider, opts, progress);
    Ok(Report::default())
}
