//! The names of CROW's scheduled jobs.
//!
//! [`JobName`] is the one list of jobs: the configuration's schedules
//! (`[schedule]`, [`ScheduleConfig::jobs`](crate::config::ScheduleConfig::jobs)),
//! the scheduler, backfills and `crow jobs` all go through it, so a new
//! variant makes the compiler point at every place that must learn the new
//! job. It lives here, the lowest crate, because the configuration names
//! jobs; `crow-jobs` re-exports it next to the jobs themselves.

use std::fmt;
use std::str::FromStr;

/// A job CROW runs on a schedule. The order of the variants is the order
/// the scheduler runs jobs that are due at the same time (the chain order:
/// collect, sessionize, enrich, find patterns, bill, then maintenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobName {
    /// Collect every organization's due social sources.
    Social,
    /// Raw events of all channels → sessions.
    Sessionize,
    /// Sessions → AI-written interactions.
    Enrich,
    /// Sessions and interactions → patterns per day, week, month, year, all.
    Patterns,
    /// Usage per organization per day → usage_daily (priced).
    Billing,
    /// Compact small files of every table.
    Optimize,
    /// Checkpoint the Delta log of every table.
    Checkpoint,
    /// Delete files of every table no recent version needs.
    Vacuum,
}

impl JobName {
    /// Every job, in the scheduler's order.
    pub const ALL: [JobName; 8] = [
        JobName::Social,
        JobName::Sessionize,
        JobName::Enrich,
        JobName::Patterns,
        JobName::Billing,
        JobName::Optimize,
        JobName::Checkpoint,
        JobName::Vacuum,
    ];

    /// The job's name in the run ledger (`job_runs.job`), its lease and its
    /// `[schedule]` key.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobName::Social => "social",
            JobName::Sessionize => "sessionize",
            JobName::Enrich => "enrich",
            JobName::Patterns => "patterns",
            JobName::Billing => "billing",
            JobName::Optimize => "optimize",
            JobName::Checkpoint => "checkpoint",
            JobName::Vacuum => "vacuum",
        }
    }

    /// What the job does, in one line (`crow jobs --help`).
    pub const fn about(self) -> &'static str {
        match self {
            JobName::Social => "Collect every organization's due social sources.",
            JobName::Sessionize => "Raw events of all channels → sessions.",
            JobName::Enrich => "Sessions → AI-written interactions.",
            JobName::Patterns => {
                "Sessions and interactions → patterns per day, week, month, year, all."
            }
            JobName::Billing => "Usage per organization per day → usage_daily (priced).",
            JobName::Optimize => "Compact small files of every table.",
            JobName::Checkpoint => "Checkpoint the Delta log of every table.",
            JobName::Vacuum => "Delete files of every table that no recent version needs.",
        }
    }
}

impl AsRef<str> for JobName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`JobName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownJob(pub String);

impl fmt::Display for UnknownJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown job `{}` (one of {})",
            self.0,
            JobName::ALL.map(JobName::as_str).join(", ")
        )
    }
}

impl std::error::Error for UnknownJob {}

impl FromStr for JobName {
    type Err = UnknownJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobName::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| UnknownJob(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for j in JobName::ALL {
            assert_eq!(j.as_str().parse::<JobName>(), Ok(j));
            assert_eq!(j.to_string(), j.as_str());
        }
        let mut sorted = JobName::ALL;
        sorted.sort();
        assert_eq!(sorted, JobName::ALL, "ALL is in declaration order");
        let e = "optimise".parse::<JobName>().unwrap_err().to_string();
        assert!(
            e.contains("unknown job `optimise`") && e.contains("vacuum"),
            "{e}"
        );
    }
}
