//! The window of a run: where an incremental run starts (the watermark, or
//! the midnight of the earliest late event) and the filters it reads with.

use super::*;

/// Where an incremental run starts: the watermark, moved back to midnight
/// of the earliest late event; or, on a first run, midnight of the earliest
/// activity. None when there is no activity at all.
pub(super) async fn incremental_start(
    lake: &Lake,
    org: Option<&str>,
) -> Result<Option<(DateTime<Utc>, Vec<NaiveDate>)>> {
    let mut params = Params::default();
    let org_cond = params.org("org_id", org);
    let Some(wm) = runs::watermark(lake, JOB).await? else {
        let sql = format!(
            "SELECT min(t) AS t FROM (
               SELECT min(occurred_at) AS t FROM raw_web_events WHERE TRUE {org_cond}
               UNION ALL SELECT min(captured_at) FROM raw_social_captures WHERE TRUE {org_cond}
               UNION ALL SELECT min(segment_start) FROM raw_cctv_transcripts WHERE TRUE {org_cond})"
        );
        return Ok(min_time(lake, &sql, &params)
            .await?
            .map(|t| (midnight(t), Vec::new())));
    };
    let last = runs::last_succeeded(lake, JOB).await?;
    let since = last
        .map(|r| r.started_at - Duration::minutes(LATE_ALLOWANCE_MINUTES))
        .unwrap_or(wm);
    let (since, wm_lit) = (params.ts("since", since), params.ts("wm", wm));
    let sql = format!(
        "SELECT DISTINCT d FROM (
           SELECT date_trunc('day', occurred_at) AS d FROM raw_web_events
             WHERE received_at >= {since} AND occurred_at < {wm_lit} {org_cond}
           UNION ALL SELECT date_trunc('day', captured_at) FROM raw_social_captures
             WHERE received_at >= {since} AND captured_at < {wm_lit} {org_cond}
           UNION ALL SELECT date_trunc('day', segment_start) FROM raw_cctv_transcripts
             WHERE received_at >= {since} AND segment_start < {wm_lit} {org_cond})
         ORDER BY d"
    );
    let (_, batches) = params.run(lake, &sql).await?;
    let mut days = Vec::new();
    for b in &batches {
        let c = cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>();
        for i in 0..c.len() {
            if c.is_valid(i) {
                if let Some(t) = DateTime::from_timestamp_micros(c.value(i)) {
                    days.push(t.date_naive());
                }
            }
        }
    }
    days.sort();
    days.dedup();
    let start = days
        .first()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_or(wm, |d| d.min(wm));
    if !days.is_empty() {
        tracing::info!(
            ?days,
            "sessionize: late events arrived, recomputing their days"
        );
    }
    Ok(Some((start, days)))
}

async fn min_time(lake: &Lake, sql: &str, params: &Params) -> Result<Option<DateTime<Utc>>> {
    let (_, batches) = params.run(lake, sql).await?;
    for b in &batches {
        if b.num_rows() == 0 {
            continue;
        }
        let c = cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>();
        if c.is_valid(0) {
            return Ok(DateTime::from_timestamp_micros(c.value(0)));
        }
    }
    Ok(None)
}

pub(super) fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::days(1)).unwrap_or(t)
}

impl Pass<'_> {
    /// The rows of `table` whose `time` falls in the read range, one per
    /// `(org_id, id)` (the first received copy wins): `columns`, sorted by
    /// `order`. A row is a first copy when its predecessor in the order of
    /// (org, id, received) is another id (as the web events are
    /// deduplicated, [`super::web`]).
    pub(super) async fn first_copies(
        &self,
        table: &str,
        id: &str,
        time: &str,
        columns: &str,
        order: &str,
    ) -> Result<Vec<RecordBatch>> {
        let mut params = Params::default();
        let org = params.org("org_id", self.opts.org.as_deref());
        let (a, b) = (
            params.ts("start", self.read_start),
            params.ts("end", self.read_end),
        );
        let sql = format!(
            "SELECT {columns} FROM (
               SELECT {columns},
                      lag(org_id) OVER copies AS prev_org, lag({id}) OVER copies AS prev_id
               FROM {table}
               WHERE {time} >= {a} AND {time} < {b} {org}
               WINDOW copies AS (ORDER BY org_id, {id}, received_at))
             WHERE (prev_org IS DISTINCT FROM org_id) OR (prev_id IS DISTINCT FROM {id})
             ORDER BY {order}"
        );
        Ok(params.sql(self.ctx, &sql).await?.collect().await?)
    }
}
