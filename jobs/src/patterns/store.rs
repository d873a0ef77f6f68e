//! The job's per-day figures, kept in `daily_metrics` so that a daily run
//! reads one day of sessions, not the history.
//!
//! Every test the job makes is over days' [`Stats`]: a day, the 28 days
//! before it, a week or month pooled, a trend's weeks. A day's stats are
//! counted once from its sessions and written to `daily_metrics`, one row
//! per organization, metric and segment, with the sample sessions a
//! finding cites and their interactions. Each day's rows carry the
//! fingerprint of the day's live `sessions` and `interactions` files when
//! it was counted. A run counts again only the days whose fingerprint is
//! not the one stored (a day never counted, a backfilled or late session,
//! a re-enrichment, a compaction); it reads every other day back.
//!
//! The finder always reads its days from the table, the ones counted in
//! this run included, so a day counted now and one counted a month ago are
//! the same figures, bit for bit.

use crow_lake::arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Float64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use crow_lake::arrow::compute::cast;
use crow_lake::arrow::datatypes::{DataType, Date32Type, Field, Float64Type};
use crow_lake::deltalake::DeltaTable;
use crow_lake::{LiveFile, Scan};
use crow_schemas::{DAILY_METRICS, INTERACTIONS, SESSIONS};

use super::*;

/// Days counted per commit: a long first run keeps what it counted if it
/// is stopped, and holds a bounded number of days' rows.
const DAYS_PER_COMMIT: usize = 14;

/// One organization's complete days, as the finder reads them.
#[derive(Debug, Default)]
pub(super) struct OrgDays {
    /// Every day with sessions, from the table.
    pub(super) days: BTreeMap<NaiveDate, Stats>,
    /// The interaction of each sample session.
    pub(super) interactions: HashMap<String, String>,
}

/// What a run learned of the days before its horizon.
#[derive(Debug, Default)]
pub(super) struct Kept {
    /// The organizations' days (those asked for).
    pub(super) by_org: BTreeMap<String, OrgDays>,
    /// Sessions read to count days.
    pub(super) sessions_read: u64,
    /// Days counted from their sessions in this run.
    pub(super) days_counted: u64,
    /// Days read back as they were counted before.
    pub(super) days_kept: u64,
}

/// A day's sources as of the snapshots a run reads: the fingerprint of
/// its live `sessions` and `interactions` files, and whether it has
/// sessions at all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    fingerprint: String,
    has_sessions: bool,
}

/// The `sessions` and `interactions` snapshots a run reads, and what each
/// day of them holds.
pub(super) struct Sources {
    sessions: DeltaTable,
    interactions: DeltaTable,
    days: BTreeMap<NaiveDate, Source>,
}

impl Sources {
    /// The latest snapshots of `sessions` and `interactions`.
    pub(super) async fn load(lake: &Lake) -> Result<Sources> {
        let sessions = lake.table_for_read(SESSIONS.name).await?;
        let interactions = lake.table_for_read(INTERACTIONS.name).await?;
        let mut files: BTreeMap<NaiveDate, (Vec<String>, bool)> = BTreeMap::new();
        for (tag, table) in [("sessions", &sessions), ("interactions", &interactions)] {
            for f in Lake::live_files(table)? {
                let Some(day) = day_of(&f) else {
                    return Err(Error::Corrupt(format!(
                        "{tag}: file {} has no session_date",
                        f.path
                    )));
                };
                let e = files.entry(day).or_default();
                e.0.push(format!(
                    "{tag}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
                    f.path,
                    f.size,
                    f.modification_time,
                    f.deletion_vector.as_deref().unwrap_or("")
                ));
                e.1 |= tag == "sessions";
            }
        }
        let days = files
            .into_iter()
            .map(|(d, (mut names, has_sessions))| {
                names.sort_unstable();
                let fingerprint = sha256_hex(names.join("\n").as_bytes());
                (
                    d,
                    Source {
                        fingerprint,
                        has_sessions,
                    },
                )
            })
            .collect();
        Ok(Sources {
            sessions,
            interactions,
            days,
        })
    }

    /// A session over the lake with `sessions` and `interactions` pinned
    /// to these snapshots (what is counted is what was fingerprinted).
    async fn session(&self, lake: &Lake) -> Result<SessionContext> {
        let ctx = lake.session().await?;
        for (name, table) in [
            (SESSIONS.name, &self.sessions),
            (INTERACTIONS.name, &self.interactions),
        ] {
            ctx.deregister_table(name)?;
            ctx.register_table(name, lake.provider_for(table, Scan::Delta).await?)?;
        }
        Ok(ctx)
    }

    /// The days in `[from, to)` that have sessions, and whether
    /// `daily_metrics` holds their current figures.
    pub(super) async fn days_in(
        &self,
        lake: &Lake,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, bool>> {
        let stored = stored_fingerprints(lake, Some(from), to).await?;
        Ok(self
            .days
            .range(from..to)
            .filter(|(_, s)| s.has_sessions)
            .map(|(d, s)| (*d, is_current(stored.get(d), s)))
            .collect())
    }
}

/// Whether a day's stored fingerprints are its source's (one value: a day
/// half rewritten is counted again).
fn is_current(stored: Option<&BTreeSet<String>>, source: &Source) -> bool {
    stored.is_some_and(|f| f.len() == 1 && f.contains(&source.fingerprint))
}

/// The `session_date` of a file of `sessions` or `interactions`.
fn day_of(f: &LiveFile) -> Option<NaiveDate> {
    let v = f.partition_values.get("session_date")?.as_deref()?;
    NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
}

/// The fingerprints stored per day (more than one: a day half rewritten,
/// which is counted again).
async fn stored_fingerprints(
    lake: &Lake,
    from: Option<NaiveDate>,
    to: NaiveDate,
) -> Result<BTreeMap<NaiveDate, BTreeSet<String>>> {
    let from = from
        .map(|f| format!(" AND metric_date >= DATE '{f}'"))
        .unwrap_or_default();
    let (_, batches) = lake
        .sql(&format!(
            "SELECT DISTINCT CAST(metric_date AS VARCHAR) AS d, source_fingerprint AS f \
             FROM daily_metrics WHERE metric_date < DATE '{to}'{from}"
        ))
        .await?;
    #[derive(Deserialize)]
    struct Row {
        d: String,
        f: String,
    }
    let mut out: BTreeMap<NaiveDate, BTreeSet<String>> = BTreeMap::new();
    for r in batches_to_rows::<Row>(&batches)? {
        let d = NaiveDate::parse_from_str(&r.d, "%Y-%m-%d")
            .map_err(|e| Error::Corrupt(format!("daily_metrics: metric_date `{}`: {e}", r.d)))?;
        out.entry(d).or_default().insert(r.f);
    }
    Ok(out)
}

/// Bring `daily_metrics` up to date for every day before `horizon` (all
/// organizations: a day is counted whole), then read back the days of
/// `org` (all when None). The sessions read that the report gives are
/// `org`'s only: a run for one organization says nothing of the others.
pub(super) async fn days_before(
    lake: &Lake,
    horizon: NaiveDate,
    org: Option<&str>,
    progress: &ProgressRef,
) -> Result<Kept> {
    let sources = Sources::load(lake).await?;
    let stored = stored_fingerprints(lake, None, horizon).await?;
    // Days to count: sessions whose figures are missing or stale; days
    // without sessions any more whose figures remain (removed).
    let mut stale: Vec<NaiveDate> = Vec::new();
    let mut kept = 0u64;
    for (d, s) in sources.days.range(..horizon) {
        let have = stored.get(d);
        match (s.has_sessions, is_current(have, s)) {
            (true, true) => kept += 1,
            (true, false) => stale.push(*d),
            (false, _) if have.is_some() => stale.push(*d),
            (false, _) => {}
        }
    }
    for d in stored.keys() {
        if !sources.days.contains_key(d) {
            stale.push(*d);
        }
    }
    stale.sort_unstable();
    stale.dedup();
    let mut out = Kept {
        days_kept: kept,
        ..Kept::default()
    };
    if !stale.is_empty() {
        progress.phase("counting days", stale.len() as u64);
        let ctx = sources.session(lake).await?;
        let now = Utc::now();
        for chunk in stale.chunks(DAYS_PER_COMMIT) {
            let mut rows = Rows::new();
            for d in chunk {
                let (read, counted) = count_day(&ctx, &sources, *d, now, &mut rows).await?;
                out.sessions_read += read
                    .iter()
                    .filter(|(o, _)| org.is_none_or(|x| x == o.as_str()))
                    .map(|(_, n)| n)
                    .sum::<u64>();
                out.days_counted += u64::from(counted);
                progress.inc(1);
            }
            let predicate = col("metric_date")
                .in_list(chunk.iter().map(|d| predicate::date(*d)).collect(), false);
            lake.replace_where(DAILY_METRICS.name, &predicate, vec![rows.finish()?])
                .await?;
        }
        tracing::info!(
            counted = out.days_counted,
            kept = out.days_kept,
            sessions = out.sessions_read,
            "patterns: days counted from their sessions"
        );
    }
    progress.phase("reading daily figures", 0);
    out.by_org = read_days(lake, (None, horizon), org, None).await?;
    Ok(out)
}

/// Count day `d` from its sessions into `rows` (every organization).
/// Returns the sessions read per organization and whether the day had
/// any.
async fn count_day(
    ctx: &SessionContext,
    sources: &Sources,
    d: NaiveDate,
    now: DateTime<Utc>,
    rows: &mut Rows,
) -> Result<(BTreeMap<String, u64>, bool)> {
    let Some(source) = sources.days.get(&d).filter(|s| s.has_sessions) else {
        return Ok((BTreeMap::new(), false));
    };
    let sql = format!(
        "SELECT org_id, session_id, channel, CAST(session_date AS VARCHAR) AS session_date, visitor_id,
                device_type, traffic_source, is_returning, timeline
         FROM sessions WHERE session_date = DATE '{d}'"
    );
    let mut by_org: BTreeMap<String, Vec<Sess>> = BTreeMap::new();
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    while let Some(b) = stream.next().await {
        let b = b?;
        for r in batches_to_rows::<SessionIn>(std::slice::from_ref(&b))? {
            let org = r.org_id.clone();
            by_org.entry(org).or_default().push(Sess::from_row(r)?);
        }
    }
    #[derive(Deserialize)]
    struct Ids {
        org_id: String,
        session_id: String,
        interaction_id: String,
    }
    // One interaction per session (the smallest id if a re-enrichment
    // left two), so the samples are the same on every count.
    let ids = batches_to_rows::<Ids>(
        &ctx.sql(&format!(
            "SELECT org_id, session_id, min(interaction_id) AS interaction_id FROM interactions
             WHERE session_date = DATE '{d}' GROUP BY org_id, session_id"
        ))
        .await?
        .collect()
        .await?,
    )?;
    let mut iids: HashMap<(String, String), String> = HashMap::with_capacity(ids.len());
    for r in ids {
        iids.insert((r.org_id, r.session_id), r.interaction_id);
    }
    let read = by_org
        .iter()
        .map(|(o, v)| (o.clone(), v.len() as u64))
        .collect();
    for (org, mut sessions) in by_org {
        // The scan's order is not stable; samples must be.
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        let refs: Vec<&Sess> = sessions.iter().collect();
        let stats = Stats::of_day(&refs);
        rows.day(&org, d, &stats, &iids, &source.fingerprint, now);
    }
    Ok((read, true))
}

/// `daily_metrics` rows being built, column by column.
struct Rows {
    org: StringBuilder,
    metric: StringBuilder,
    segment: StringBuilder,
    k: Float64Builder,
    n: Float64Builder,
    lists: [ListBuilder<StringBuilder>; 4],
    fingerprint: StringBuilder,
    computed_at: TimestampMicrosecondBuilder,
    date: Date32Builder,
}

impl Rows {
    fn new() -> Rows {
        let list = || {
            ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "element",
                DataType::Utf8,
                true,
            )))
        };
        Rows {
            org: StringBuilder::new(),
            metric: StringBuilder::new(),
            segment: StringBuilder::new(),
            k: Float64Builder::new(),
            n: Float64Builder::new(),
            lists: [list(), list(), list(), list()],
            fingerprint: StringBuilder::new(),
            computed_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            date: Date32Builder::new(),
        }
    }

    /// One organization's day: a row per metric and segment, in order.
    fn day(
        &mut self,
        org: &str,
        d: NaiveDate,
        stats: &Stats,
        iids: &HashMap<(String, String), String>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) {
        let mut keys: Vec<(&Key, &Cell)> = stats.cells.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let none = (Vec::new(), Vec::new());
        for (key, cell) in keys {
            self.org.append_value(org);
            self.metric.append_value(&key.0);
            self.segment.append_value(&key.1);
            self.k.append_value(cell.k);
            self.n.append_value(cell.n);
            let (hits, misses) = stats.samples.get(key).unwrap_or(&none);
            for (i, ids) in [hits, misses].into_iter().enumerate() {
                let (sessions, interactions) = self.lists.split_at_mut(2 * i + 1);
                for s in ids {
                    sessions[2 * i].values().append_value(s);
                    let iid = iids.get(&(org.to_string(), s.clone()));
                    interactions[0].values().append_option(iid);
                }
                sessions[2 * i].append(true);
                interactions[0].append(true);
            }
            self.fingerprint.append_value(fingerprint);
            self.computed_at.append_value(now.timestamp_micros());
            self.date.append_value(days_from_date(d));
        }
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let [a, b, c, e] = &mut self.lists;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.org.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.segment.finish()),
            Arc::new(self.k.finish()),
            Arc::new(self.n.finish()),
            Arc::new(a.finish()),
            Arc::new(b.finish()),
            Arc::new(c.finish()),
            Arc::new(e.finish()),
            Arc::new(self.fingerprint.finish()),
            Arc::new(self.computed_at.finish()),
            Arc::new(self.date.finish()),
        ];
        Ok(RecordBatch::try_new(DAILY_METRICS.schema(), columns)?)
    }
}

/// The stored days in `[from, to)` of `org` (all when None), by
/// organization; only the `metrics` given, when given.
pub(super) async fn read_days(
    lake: &Lake,
    (from, to): (Option<NaiveDate>, NaiveDate),
    org: Option<&str>,
    metrics: Option<&[String]>,
) -> Result<BTreeMap<String, OrgDays>> {
    let mut params = Params::default();
    let mut org_cond = params.org("org_id", org);
    if let Some(m) = metrics {
        let names: BTreeSet<&String> = m.iter().collect();
        let list: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, m)| params.text(&format!("m{i}"), m))
            .collect();
        if list.is_empty() {
            return Ok(BTreeMap::new());
        }
        org_cond.push_str(&format!(" AND metric IN ({})", list.join(", ")));
    }
    let from = from
        .map(|f| format!(" AND metric_date >= DATE '{f}'"))
        .unwrap_or_default();
    let sql = format!(
        "SELECT org_id, metric_date, metric, segment, k, n, hit_session_ids, hit_interaction_ids,
                miss_session_ids, miss_interaction_ids
         FROM daily_metrics WHERE metric_date < DATE '{to}'{from}{org_cond}"
    );
    let ctx = lake.session().await?;
    let mut stream = params.sql(&ctx, &sql).await?.execute_stream().await?;
    let mut out: BTreeMap<String, OrgDays> = BTreeMap::new();
    while let Some(b) = stream.next().await {
        add_rows(&b?, &mut out)?;
    }
    count_sessions(&mut out);
    Ok(out)
}

/// Each day's session count: its all-traffic `sessions` figure.
fn count_sessions(out: &mut BTreeMap<String, OrgDays>) {
    for org in out.values_mut() {
        for st in org.days.values_mut() {
            st.sessions = st
                .cells
                .get(&(Metric::Sessions.to_string(), String::new()))
                .map_or(0, |c| c.k as u64);
        }
    }
}

/// Rows of `daily_metrics` into their organizations' days.
fn add_rows(b: &RecordBatch, out: &mut BTreeMap<String, OrgDays>) -> Result<()> {
    let column = |name: &str, ty: &DataType| -> Result<ArrayRef> {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| Error::Corrupt(format!("daily_metrics: no column {name}")))?;
        Ok(cast(c, ty)?)
    };
    let list_ty = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    let org = column("org_id", &DataType::Utf8)?;
    let date = column("metric_date", &DataType::Date32)?;
    let metric = column("metric", &DataType::Utf8)?;
    let segment = column("segment", &DataType::Utf8)?;
    let k = column("k", &DataType::Float64)?;
    let n = column("n", &DataType::Float64)?;
    let lists = [
        column("hit_session_ids", &list_ty)?,
        column("hit_interaction_ids", &list_ty)?,
        column("miss_session_ids", &list_ty)?,
        column("miss_interaction_ids", &list_ty)?,
    ];
    let (org, metric, segment) = (
        org.as_string::<i32>(),
        metric.as_string::<i32>(),
        segment.as_string::<i32>(),
    );
    let date = date.as_primitive::<Date32Type>();
    let (k, n) = (
        k.as_primitive::<Float64Type>(),
        n.as_primitive::<Float64Type>(),
    );
    let lists: Vec<_> = lists.iter().map(|l| l.as_list::<i32>()).collect();
    let texts = |row: usize, l: usize| -> Vec<Option<String>> {
        let v = lists[l].value(row);
        let v = v.as_string::<i32>();
        (0..v.len())
            .map(|i| v.is_valid(i).then(|| v.value(i).to_string()))
            .collect()
    };
    for row in 0..b.num_rows() {
        let day = date_from_days(date.value(row)).ok_or_else(|| {
            Error::Corrupt(format!("daily_metrics: metric_date {}", date.value(row)))
        })?;
        let od = out.entry(org.value(row).to_string()).or_default();
        let st = od.days.entry(day).or_insert_with(|| Stats {
            days: 1.0,
            ..Stats::default()
        });
        let key = (
            metric.value(row).to_string(),
            segment.value(row).to_string(),
        );
        st.cells.insert(
            key.clone(),
            Cell {
                k: k.value(row),
                n: n.value(row),
            },
        );
        let mut sample = (Vec::new(), Vec::new());
        for (side, (sl, il)) in [(0usize, 1usize), (2, 3)].into_iter().enumerate() {
            let sessions = texts(row, sl);
            let interactions = texts(row, il);
            // The two lists are one list of pairs: anything else is a row
            // this job did not write, never silently read.
            if sessions.len() != interactions.len() || sessions.iter().any(Option::is_none) {
                return Err(Error::Corrupt(format!(
                    "daily_metrics: {day} {} {:?}: sample sessions and their interactions do not pair up",
                    key.0, key.1
                )));
            }
            for (s, iid) in sessions.into_iter().flatten().zip(interactions) {
                if let Some(iid) = iid {
                    od.interactions.insert(s.clone(), iid);
                }
                if side == 0 {
                    sample.0.push(s);
                } else {
                    sample.1.push(s);
                }
            }
        }
        if !sample.0.is_empty() || !sample.1.is_empty() {
            st.samples.insert(key, sample);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::eval;
    use super::*;

    /// Days written as `daily_metrics` rows and read back are the days
    /// counted: every figure to the bit, the samples in order with their
    /// interactions, and a finder over them finds exactly what one over
    /// the sessions finds.
    #[test]
    fn a_day_kept_reads_back_exactly_as_counted() {
        let case = eval::cases(70)
            .into_iter()
            .find(|c| !c.changes.is_empty())
            .expect("a planted case");
        let (sessions, _) = eval::generate(&case, 3);
        let mut per_day: BTreeMap<NaiveDate, Vec<&Sess>> = BTreeMap::new();
        for s in &sessions {
            per_day.entry(s.day).or_default().push(s);
        }
        // Every third session has no interaction (a null in the list).
        let iids: HashMap<(String, String), String> = sessions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, s)| (("org".to_string(), s.id.clone()), format!("int-{}", s.id)))
            .collect();
        let now = Utc::now();
        let mut rows = Rows::new();
        let counted: BTreeMap<NaiveDate, Stats> = per_day
            .iter()
            .map(|(d, v)| (*d, Stats::of_day(v)))
            .collect();
        for (d, st) in &counted {
            rows.day("org", *d, st, &iids, "fingerprint", now);
        }
        let batch = rows.finish().expect("a batch of the table's schema");
        assert_eq!(batch.schema(), DAILY_METRICS.schema());
        let mut read = BTreeMap::new();
        add_rows(&batch, &mut read).expect("rows read back");
        count_sessions(&mut read);
        let kept = read.remove("org").expect("the organization");
        assert_eq!(kept.days.len(), counted.len());
        for (d, want) in &counted {
            let got = &kept.days[d];
            assert_eq!(got.sessions, want.sessions, "{d}");
            assert_eq!(got.days.to_bits(), want.days.to_bits());
            assert_eq!(got.cells.len(), want.cells.len(), "{d}");
            for (k, c) in &want.cells {
                let g = got.cells.get(k).expect("every cell");
                assert_eq!(
                    (g.k.to_bits(), g.n.to_bits()),
                    (c.k.to_bits(), c.n.to_bits()),
                    "{d} {k:?}"
                );
            }
            assert_eq!(got.samples, want.samples, "{d}");
        }
        for (sid, iid) in &kept.interactions {
            assert_eq!(iids.get(&("org".to_string(), sid.clone())), Some(iid));
        }
        assert!(!kept.interactions.is_empty());
        // The finder over the kept days finds what the one over sessions does.
        let names = HashMap::new();
        let first = *counted.keys().next().expect("a day");
        let horizon = *counted.keys().last().expect("a day") + Days::new(1);
        let fresh = Finder::new(&sessions, first, horizon, &names, DEFAULT_FDR);
        let from_table = Finder::of_days(kept.days, first, horizon, &names, DEFAULT_FDR);
        let mut found = 0;
        for d in (first + Days::new(28))
            .iter_days()
            .take_while(|d| *d < horizon)
        {
            let p = Period::day(d);
            let (a, b) = (fresh.day(&p), from_table.day(&p));
            let row = |f: &Finding| {
                let mut r = to_row("org", &p, f, &kept.interactions, false);
                r.created_at = 0;
                r
            };
            let (a, b): (Vec<_>, Vec<_>) =
                (a.iter().map(row).collect(), b.iter().map(row).collect());
            found += a.len();
            assert_eq!(
                serde_json::to_string(&a).expect("rows"),
                serde_json::to_string(&b).expect("rows"),
                "{d}"
            );
        }
        assert!(found > 0, "the planted change is found");
    }
}
