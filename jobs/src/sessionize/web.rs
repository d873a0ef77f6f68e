//! Web: deduplicated, stitched Segment events split into sessions by
//! visitor and inactivity gap, one task per partition.

use super::*;

/// Visitors (org \u{1} visitor) with a web session before `before`.
pub(super) async fn earlier_visitors(
    ctx: &SessionContext,
    org: Option<&str>,
    before: DateTime<Utc>,
) -> Result<HashSet<String>> {
    let mut params = Params::default();
    let sql = format!(
        "SELECT DISTINCT org_id, visitor_id FROM sessions
         WHERE channel = 'web' AND visitor_id IS NOT NULL AND started_at < {} {}",
        params.ts("before", before),
        params.org("org_id", org)
    );
    let batches = params.sql(ctx, &sql).await?.collect().await?;
    let mut out = HashSet::new();
    for b in &batches {
        let (o, v) = (text(b, "org_id")?, text(b, "visitor_id")?);
        for i in 0..b.num_rows() {
            out.insert(format!("{}\u{1}{}", o.value(i), v.value(i)));
        }
    }
    Ok(out)
}

/// The text columns of `raw_web_events` the sessionizer reads.
const WEB_TEXT_COLUMNS: [&str; 16] = [
    "org_id",
    "message_id",
    "type",
    "event",
    "name",
    "anonymous_id",
    "user_id",
    "page_path",
    "page_url",
    "page_referrer",
    "device_type",
    "campaign_source",
    "product_id",
    "product_sku",
    "product_name",
    "order_id",
];

/// A web event as the sessionizer needs it.
pub(super) struct WebEvent {
    pub(super) message_id: String,
    pub(super) kind: String,
    pub(super) event: Option<String>,
    pub(super) name: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) anonymous_id: Option<String>,
    pub(super) occurred: i64,
    pub(super) page_path: Option<String>,
    pub(super) page_url: Option<String>,
    pub(super) referrer: Option<String>,
    pub(super) device_type: Option<String>,
    pub(super) campaign_source: Option<String>,
    pub(super) product_id: Option<String>,
    pub(super) product_sku: Option<String>,
    pub(super) product_name: Option<String>,
    pub(super) order_id: Option<String>,
    pub(super) revenue: Option<f64>,
    pub(super) props: Option<String>,
}

pub(super) async fn web(
    pass: &Pass<'_>,
    returning: &Arc<HashSet<String>>,
    built: &mut Built,
    progress: &ProgressRef,
) -> Result<()> {
    let Pass {
        ctx, opts, run_id, ..
    } = *pass;
    let (sql, count_sql, params) = web_sql(opts.org.as_deref(), pass.read_start, pass.read_end);
    let counted = params.sql(ctx, &count_sql).await?.collect().await?;
    let total = match counted.first().filter(|d| d.num_rows() > 0) {
        Some(d) => micros(d, "n")?.value(0).max(0) as u64,
        None => 0,
    };

    let gap = opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = pass.read_end.timestamp_micros();
    let (sorted, parts) = sorted_by_visitor(ctx, params.sql(ctx, &sql).await?).await?;
    let task_ctx = ctx.task_ctx();
    let mut tasks = Tasks(Vec::with_capacity(parts));
    for p in 0..parts {
        let split = WebSplit {
            stream: sorted.execute(p, task_ctx.clone())?,
            gap,
            read_end,
            returning: returning.clone(),
            run_id: run_id.to_string(),
            progress: progress.clone(),
            keep: built.out.keep,
            disk: built.out.disk.clone(),
        };
        tasks.0.push(tokio::spawn(split.run()));
    }
    let mut read = 0;
    for t in tasks.0.iter_mut() {
        let part = t
            .await
            .map_err(|e| Error::Internal(format!("sessionize task failed: {e}")))??;
        read += part.events;
        built.merge(part)?;
    }
    let (count, bytes) = crow_lake::plan_spills(&sorted);
    built.spill_count += count;
    built.spilled_bytes += bytes;
    built.duplicates += total.saturating_sub(read);
    Ok(())
}

/// The web events of `[read_start, read_end)` deduplicated (the first
/// received copy wins) with their stitched visitor, and the count of the
/// events before deduplication, with the values both bind.
fn web_sql(
    org: Option<&str>,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
) -> (String, String, Params) {
    let mut params = Params::default();
    let org = params.org("org_id", org);
    let (a, b) = (params.ts("start", read_start), params.ts("end", read_end));
    let (da, db) = (
        read_start.date_naive().format("%Y-%m-%d"),
        read_end.date_naive().format("%Y-%m-%d"),
    );
    // Text columns as plain Utf8 before the deduplication sort: the scan's
    // string views keep whole Parquet pages alive, so every sorted batch
    // would hold (and the memory pool would count) far more than its rows.
    let texts = WEB_TEXT_COLUMNS
        .iter()
        .map(|c| format!("arrow_cast({c}, 'Utf8') AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH links AS (
           SELECT org_id, anonymous_id AS anon, user_id AS uid, occurred_at FROM raw_web_events
            WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL AND occurred_at < {b} {org}
           UNION ALL
           SELECT org_id, previous_id AS anon, user_id AS uid, occurred_at FROM raw_web_events
            WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL AND occurred_at < {b} {org}
         ),
         ids AS (
           SELECT org_id, anon, arrow_cast(first_value(uid ORDER BY occurred_at, uid), 'Utf8') AS uid
           FROM links GROUP BY org_id, anon
         ),
         base AS (
           SELECT {texts}, occurred_at, received_at, revenue,
                  arrow_cast(CASE WHEN event IN ('Products Searched', 'Checkout Step Viewed', 'Checkout Step Completed')
                       THEN properties END, 'Utf8') AS props
           FROM raw_web_events
           WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
             AND occurred_at >= {a} AND occurred_at < {b} {org}
         ),
         numbered AS (
           SELECT org_id, message_id, type, event, name, anonymous_id, user_id, occurred_at,
                  page_path, page_url, page_referrer, device_type, campaign_source,
                  product_id, product_sku, product_name, order_id, revenue, props,
                  row_number() OVER (PARTITION BY org_id, message_id ORDER BY received_at, occurred_at) AS rn
           FROM base
         ),
         ev AS (SELECT * FROM numbered WHERE rn = 1)
         SELECT ev.*, arrow_cast(COALESCE(ev.user_id, ids.uid, ev.anonymous_id), 'Utf8') AS visitor_id
         FROM ev LEFT JOIN ids ON ev.org_id = ids.org_id AND ev.anonymous_id = ids.anon
         WHERE COALESCE(ev.user_id, ids.uid, ev.anonymous_id) IS NOT NULL"
    );
    let count_sql = format!(
        "SELECT count(*) AS n FROM raw_web_events
         WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
           AND occurred_at >= {a} AND occurred_at < {b} {org}"
    );
    (sql, count_sql, params)
}

/// The plan of `query` in one partition per core, by visitor: each is
/// sorted by visitor and time (spilling under the pool) on its own. The
/// plan and its partition count.
async fn sorted_by_visitor(
    ctx: &SessionContext,
    query: DataFrame,
) -> Result<(Arc<dyn ExecutionPlan>, usize)> {
    let plan = query.create_physical_plan().await?;
    let schema = plan.schema();
    let parts = ctx.state().config().target_partitions().max(1);
    let hashed: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(
            vec![
                physical_col("org_id", &schema)?,
                physical_col("visitor_id", &schema)?,
            ],
            parts,
        ),
    )?);
    let asc = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let mut order = Vec::new();
    for c in ["org_id", "visitor_id", "occurred_at", "message_id"] {
        order.push(PhysicalSortExpr::new(physical_col(c, &schema)?, asc));
    }
    let order = LexOrdering::new(order)
        .ok_or_else(|| Error::Internal("sessionize: empty sort order".into()))?;
    let sorted: Arc<dyn ExecutionPlan> =
        Arc::new(SortExec::new(order, hashed).with_preserve_partitioning(true));
    Ok((sorted, parts))
}

/// Tasks aborted when dropped: an error in one partition, or a cancelled
/// run, stops the others instead of leaving them sorting.
struct Tasks<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One partition of the web events, sorted by (org, visitor, time), split
/// into sessions by its own task.
struct WebSplit {
    pub(super) stream: SendableRecordBatchStream,
    pub(super) gap: i64,
    pub(super) read_end: i64,
    pub(super) returning: Arc<HashSet<String>>,
    pub(super) run_id: String,
    pub(super) progress: ProgressRef,
    pub(super) keep: (i64, i64),
    pub(super) disk: Option<Arc<DiskManager>>,
}

impl WebSplit {
    async fn run(mut self) -> Result<Built> {
        let mut built = Built::new(self.keep, self.disk.clone());
        let mut cur_key: Option<(String, String)> = None;
        let mut events: Vec<WebEvent> = Vec::new();
        while let Some(batch) = self.stream.next().await {
            let batch = batch?;
            self.progress.inc(batch.num_rows() as u64);
            built.events += batch.num_rows() as u64;
            let org_c = text(&batch, "org_id")?;
            let visitor = text(&batch, "visitor_id")?;
            let event_at = web_events(&batch)?;
            for i in 0..batch.num_rows() {
                let (o, v) = (org_c.value(i), visitor.value(i));
                if cur_key.as_ref().is_none_or(|(co, cv)| co != o || cv != v) {
                    if let Some(key) = cur_key.take() {
                        self.flush(key, std::mem::take(&mut events), &mut built)?;
                    }
                    cur_key = Some((o.to_string(), v.to_string()));
                }
                events.push(event_at(i));
            }
        }
        if let Some(key) = cur_key.take() {
            self.flush(key, events, &mut built)?;
        }
        Ok(built)
    }

    /// Split the events of one visitor (`(org, visitor)`) into sessions.
    fn flush(
        &self,
        (org, visitor): (String, String),
        events: Vec<WebEvent>,
        built: &mut Built,
    ) -> Result<()> {
        flush_visitor(
            &org,
            &visitor,
            events,
            self.gap,
            self.read_end,
            &self.returning,
            &self.run_id,
            built,
        )
    }
}

/// The web events of a batch, by row (its columns are looked up once).
fn web_events(batch: &RecordBatch) -> Result<impl Fn(usize) -> WebEvent> {
    let message_id = text(batch, "message_id")?;
    let kind = text(batch, "type")?;
    let event = text(batch, "event")?;
    let name = text(batch, "name")?;
    let user_id = text(batch, "user_id")?;
    let anonymous_id = text(batch, "anonymous_id")?;
    let occurred = micros(batch, "occurred_at")?;
    let page_path = text(batch, "page_path")?;
    let page_url = text(batch, "page_url")?;
    let referrer = text(batch, "page_referrer")?;
    let device_type = text(batch, "device_type")?;
    let campaign_source = text(batch, "campaign_source")?;
    let product_id = text(batch, "product_id")?;
    let product_sku = text(batch, "product_sku")?;
    let product_name = text(batch, "product_name")?;
    let order_id = text(batch, "order_id")?;
    let revenue = float(batch, "revenue")?;
    let props = text(batch, "props")?;
    Ok(move |i| WebEvent {
        message_id: message_id.value(i).to_string(),
        kind: kind.value(i).to_string(),
        event: opt_str(&event, i),
        name: opt_str(&name, i),
        user_id: opt_str(&user_id, i),
        anonymous_id: opt_str(&anonymous_id, i),
        occurred: occurred.value(i),
        page_path: opt_str(&page_path, i),
        page_url: opt_str(&page_url, i),
        referrer: opt_str(&referrer, i),
        device_type: opt_str(&device_type, i),
        campaign_source: opt_str(&campaign_source, i),
        product_id: opt_str(&product_id, i),
        product_sku: opt_str(&product_sku, i),
        product_name: opt_str(&product_name, i),
        order_id: opt_str(&order_id, i),
        revenue: revenue.is_valid(i).then(|| revenue.value(i)),
        props: opt_str(&props, i),
    })
}

/// Split one visitor's time-ordered events into sessions.
#[allow(clippy::too_many_arguments)]
pub(super) fn flush_visitor(
    org: &str,
    visitor: &str,
    events: Vec<WebEvent>,
    gap: i64,
    read_end: i64,
    returning: &HashSet<String>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    let mut seen_before = returning.contains(&format!("{org}\u{1}{visitor}"));
    let mut start = 0;
    for i in 1..=events.len() {
        let split = i == events.len() || events[i].occurred - events[i - 1].occurred > gap;
        if !split {
            continue;
        }
        let part = &events[start..i];
        start = i;
        let (first, last) = (part[0].occurred, part[part.len() - 1].occurred);
        if last.saturating_add(gap) > read_end {
            built.open_session(first);
            continue;
        }
        built
            .out
            .push(web_session(org, visitor, part, seen_before, run_id)?)?;
        seen_before = true;
    }
    Ok(())
}

fn web_session(
    org: &str,
    visitor: &str,
    events: &[WebEvent],
    is_returning: bool,
    run_id: &str,
) -> Result<SessionRow> {
    let started = events[0].occurred;
    let ended = events[events.len() - 1].occurred;
    let mut anonymous_ids = BTreeSet::new();
    let mut product_ids: Vec<String> = Vec::new();
    let mut user_id = None;
    let mut page_views = 0i64;
    let mut converted = false;
    let mut timeline = Vec::with_capacity(events.len().min(MAX_TIMELINE + 1));
    for e in events {
        if let Some(a) = &e.anonymous_id {
            anonymous_ids.insert(a.clone());
        }
        if e.user_id.is_some() {
            user_id.clone_from(&e.user_id);
        }
        if let Some(p) = e.product_id.as_ref().or(e.product_sku.as_ref()) {
            if !product_ids.contains(p) {
                product_ids.push(p.clone());
            }
        }
        if e.kind == "page" || e.kind == "screen" {
            page_views += 1;
        }
        if e.event.as_deref() == Some(SegmentEvent::OrderCompleted.as_str()) {
            converted = true;
        }
        if timeline.len() < MAX_TIMELINE {
            let offset = (e.occurred - started) / 1_000_000;
            let (kind, detail) = timeline_entry(e);
            timeline.push(TimelineEntry::new(offset, kind, detail));
        }
    }
    if events.len() > MAX_TIMELINE {
        let offset = (ended - started) / 1_000_000;
        timeline.push(TimelineEntry::new(
            offset,
            "truncated",
            format!("{} more events", events.len() - MAX_TIMELINE),
        ));
    }
    let first = &events[0];
    let device_type = events.iter().find_map(|e| e.device_type.clone());
    Ok(SessionRow {
        org_id: org.to_string(),
        session_id: session_id(org, "web", visitor, started),
        channel: "web",
        visitor_id: Some(visitor.to_string()),
        user_id: user_id
            .or_else(|| (!anonymous_ids.contains(visitor)).then(|| visitor.to_string())),
        anonymous_ids: Some(anonymous_ids.into_iter().collect()),
        started_at: started,
        ended_at: ended,
        event_count: events.len() as i64,
        page_views: Some(page_views),
        product_ids: Some(product_ids),
        device_type,
        traffic_source: Some(traffic_source(first)),
        is_returning: Some(is_returning),
        converted: Some(converted),
        source_ref: None,
        timeline: timeline::to_json(&timeline),
        source_ids: events.iter().map(|e| e.message_id.clone()).collect(),
        job_run_id: run_id.to_string(),
        session_date: days_from_micros(started),
    })
}

/// utm source, else the referrer's host when it is another site, else
/// 'direct'.
pub(super) fn traffic_source(e: &WebEvent) -> String {
    if let Some(s) = e.campaign_source.as_ref().filter(|s| !s.is_empty()) {
        return s.to_lowercase();
    }
    let own_host = e
        .page_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    if let Some(host) = e
        .referrer
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    {
        if Some(&host) != own_host.as_ref() {
            return host.trim_start_matches("www.").to_string();
        }
    }
    "direct".into()
}

fn timeline_entry(e: &WebEvent) -> (String, String) {
    match e.kind.as_str() {
        "page" | "screen" => (
            e.kind.clone(),
            e.page_path
                .clone()
                .or_else(|| e.name.clone())
                .unwrap_or_default(),
        ),
        "track" => {
            let name = e.event.clone().unwrap_or_else(|| "track".into());
            let detail = if let Some(order) = &e.order_id {
                match e.revenue {
                    Some(r) => format!("order {order} {r:.2}"),
                    None => format!("order {order}"),
                }
            } else if let Some(p) = e.product_id.as_ref().or(e.product_sku.as_ref()) {
                match &e.product_name {
                    Some(n) => format!("{p} {n}"),
                    None => p.clone(),
                }
            } else if let Some(props) = &e.props {
                compact_props(props)
            } else {
                String::new()
            };
            (name, detail)
        }
        other => (other.to_string(), e.user_id.clone().unwrap_or_default()),
    }
}

/// The interesting bits of search / checkout-step properties.
fn compact_props(props: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(props) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for key in ["query", "step", "shipping_method", "payment_method"] {
        if let Some(x) = v.get(key) {
            match x {
                serde_json::Value::String(s) => parts.push(format!("{key}={s}")),
                serde_json::Value::Number(n) => parts.push(format!("{key}={n}")),
                _ => {}
            }
        }
    }
    parts.join(" ")
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
