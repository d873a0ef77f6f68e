//! Table maintenance as scheduled jobs: `optimize` (compact small files),
//! `checkpoint` (checkpoint the Delta log) and `vacuum` (delete files no
//! version within `schedule.vacuum_retention_hours` needs), each over every
//! table CROW writes. A run's window is its slot (no data time); it stops at
//! the first table that fails.

use async_trait::async_trait;
use serde::Serialize;

use crow_lake::Lake;

use crate::job::{Job, JobContext, JobName, Planned, Request};
use crate::{Result, Window};

/// What a maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Tables handled.
    pub tables: u64,
    /// Files removed (optimize, vacuum).
    pub changed: u64,
}

/// One maintenance operation, applied to each table in turn.
#[async_trait]
pub trait Task: Sized + Send + Sync + 'static {
    /// The job's name.
    const NAME: &'static str;
    /// The operation with its settings.
    fn build(ctx: &JobContext) -> Self;
    /// Apply it to `table`; how many files it removed.
    async fn table(&self, lake: &Lake, table: &str) -> Result<u64>;
}

/// A maintenance [`Task`] as a job over every table.
#[derive(Debug)]
pub struct Maintenance<T>(T);

#[async_trait]
impl<T: Task> Job for Maintenance<T> {
    const NAME: &'static str = T::NAME;
    type Plan = Window;
    type Report = Report;

    fn build(ctx: &JobContext, _req: &Request) -> Result<Self> {
        Ok(Maintenance(T::build(ctx)))
    }

    async fn plan(&self, ctx: &JobContext, req: &Request) -> Result<Planned<Window, Report>> {
        let slot = req.slot.unwrap_or(ctx.now);
        let window = Window {
            start: slot,
            end: slot,
        };
        Ok(Planned::Run {
            window,
            plan: window,
        })
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        window: Window,
        _run_id: &str,
    ) -> Result<(Window, Report)> {
        let mut report = Report::default();
        for def in crow_schemas::ALL_TABLES {
            report.changed += self.0.table(&ctx.lake, def.name).await?;
            report.tables += 1;
        }
        Ok((window, report))
    }

    fn rows(r: &Report) -> (u64, u64) {
        (r.tables, r.changed)
    }
}

/// Compact small files of every table.
#[derive(Debug)]
pub struct Optimize;

#[async_trait]
impl Task for Optimize {
    const NAME: &'static str = JobName::Optimize.as_str();

    fn build(_: &JobContext) -> Self {
        Optimize
    }

    async fn table(&self, lake: &Lake, table: &str) -> Result<u64> {
        Ok(lake.optimize(table).await?.files_removed)
    }
}

/// Checkpoint the Delta log of every table.
#[derive(Debug)]
pub struct Checkpoint;

#[async_trait]
impl Task for Checkpoint {
    const NAME: &'static str = JobName::Checkpoint.as_str();

    fn build(_: &JobContext) -> Self {
        Checkpoint
    }

    async fn table(&self, lake: &Lake, table: &str) -> Result<u64> {
        lake.checkpoint(table).await?;
        Ok(0)
    }
}

/// Delete files of every table that no version within
/// `schedule.vacuum_retention_hours` needs.
#[derive(Debug)]
pub struct Vacuum {
    retention_hours: u64,
}

#[async_trait]
impl Task for Vacuum {
    const NAME: &'static str = JobName::Vacuum.as_str();

    fn build(ctx: &JobContext) -> Self {
        Vacuum {
            retention_hours: ctx.config.schedule.vacuum_retention_hours,
        }
    }

    async fn table(&self, lake: &Lake, table: &str) -> Result<u64> {
        Ok(lake.vacuum(table, self.retention_hours, false).await?.len() as u64)
    }
}
