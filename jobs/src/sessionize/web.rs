//! Web: deduplicated, stitched Segment events split into sessions by
//! visitor and inactivity gap, one task per partition.

use super::*;
use std::borrow::Cow;
use std::collections::HashMap;

use crow_lake::arrow::array::{
    new_null_array, BooleanArray, StringViewArray, UInt64Array, UInt8Array,
};
use crow_lake::arrow::compute::kernels::boolean::or;
use crow_lake::arrow::compute::kernels::cmp::distinct;
use crow_lake::arrow::compute::{concat, filter_record_batch};
use crow_lake::arrow::datatypes::{Float64Type, Schema, UInt64Type, UInt8Type};
use crow_lake::datafusion::common::tree_node::TreeNodeRecursion;
use crow_lake::datafusion::physical_expr::expressions::IsNotNullExpr;
use crow_lake::datafusion::physical_expr::PhysicalExpr;
use crow_lake::datafusion::physical_plan::filter::FilterExec;
use crow_lake::datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use crow_lake::datafusion::physical_plan::union::UnionExec;
use crow_lake::datafusion::physical_plan::{DisplayAs, DisplayFormatType, PlanProperties};

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

/// A scanned web event as the narrowing before the sort reads it
/// ([`narrow`]): its text borrowed from the batch it came in.
#[derive(Clone, Copy)]
struct RawEvent<'a> {
    kind: &'a str,
    event: Option<&'a str>,
    name: Option<&'a str>,
    user_id: Option<&'a str>,
    page_path: Option<&'a str>,
    page_url: Option<&'a str>,
    referrer: Option<&'a str>,
    campaign_source: Option<&'a str>,
    product_id: Option<&'a str>,
    product_sku: Option<&'a str>,
    product_name: Option<&'a str>,
    order_id: Option<&'a str>,
    revenue: Option<f64>,
    props: Option<&'a str>,
}

/// A web event as the split needs it: what [`narrow`] made of it before the
/// sort, borrowed from the sorted batch it came in ([`WebColumns`]),
/// nothing copied until a session row keeps it.
#[derive(Clone, Copy)]
pub(super) struct WebEvent<'a> {
    pub(super) message_id: &'a str,
    pub(super) anonymous_id: Option<&'a str>,
    pub(super) user_id: Option<&'a str>,
    pub(super) occurred: i64,
    pub(super) device_type: Option<&'a str>,
    /// The product id, else the SKU.
    pub(super) product: Option<&'a str>,
    /// The traffic source were the event its session's first.
    pub(super) source: &'a str,
    /// Its timeline entry's kind and detail.
    pub(super) tl_kind: &'a str,
    pub(super) tl_detail: &'a str,
    pub(super) page_view: bool,
    pub(super) converted: bool,
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
    let (sql, keys_sql, params) = web_sql(opts.org.as_deref(), pass.read_start, pass.read_end);
    let (total, copies, keys_plan) = copied_messages(params.sql(ctx, &keys_sql).await?).await?;
    let (count, bytes) = crow_lake::plan_spills(&keys_plan);
    built.spill_count += count;
    built.spilled_bytes += bytes;

    let gap = opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = pass.read_end.timestamp_micros();
    let orgs = Arc::new(Orgs::default());
    let (sorted, parts) =
        first_copies_by_visitor(ctx, params.sql(ctx, &sql).await?, narrowed, copies, &orgs).await?;
    let task_ctx = ctx.task_ctx();
    let mut tasks = Tasks(Vec::with_capacity(parts));
    for p in 0..parts {
        let split = WebSplit {
            stream: sorted.execute(p, task_ctx.clone())?,
            orgs: Arc::clone(&orgs),
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

/// The web events of `[read_start, read_end)` with their stitched visitor
/// (every copy of a message: [`first_copies_by_visitor`] keeps the first
/// received), and the keys of the same events (org and message id, for
/// [`copied_messages`]), with the values both bind.
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
    // The text columns as the scan made them (string views): [`narrow`]
    // copies what the sorts carry into plain Utf8 and reads the rest where
    // they are.
    let texts = WEB_TEXT_COLUMNS.join(", ");
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
                  CASE WHEN event IN ('Products Searched', 'Checkout Step Viewed', 'Checkout Step Completed')
                       THEN properties END AS props
           FROM raw_web_events
           WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
             AND occurred_at >= {a} AND occurred_at < {b} {org}
         )
         SELECT base.*, arrow_cast(COALESCE(base.user_id, ids.uid, base.anonymous_id), 'Utf8') AS visitor_id
         FROM base LEFT JOIN ids ON base.org_id = ids.org_id AND base.anonymous_id = ids.anon"
    );
    let keys_sql = format!(
        "SELECT arrow_cast(org_id, 'Utf8') AS org_id, arrow_cast(message_id, 'Utf8') AS message_id
         FROM raw_web_events
         WHERE event_date >= DATE '{da}' AND event_date <= DATE '{db}'
           AND occurred_at >= {a} AND occurred_at < {b} {org}"
    );
    (sql, keys_sql, params)
}

/// Distinct copied messages above this many (or above a quarter of the
/// events read) take the path that sorts every event by message
/// ([`Copies::Many`]).
const FEW_COPIES: usize = 100_000;

/// Which messages of a read have more than one copy, by [`message_keys`].
pub(super) enum Copies {
    /// None: every event is its message's only copy.
    None,
    /// These keys (64-bit hashes of org and message id; a collision only
    /// sends another message's events through the exact path too).
    Few(Arc<HashSet<u64>>),
    /// Too many to list: every event goes through the sort by message.
    Many,
}

/// The number of events of `keys` (their `org_id` and `message_id`) and
/// which messages have more than one copy: the keys' hashes sorted under
/// the pool (8 bytes an event), equal neighbours are copies. The plan is
/// returned for its spill metrics.
async fn copied_messages(keys: DataFrame) -> Result<(u64, Copies, Arc<dyn ExecutionPlan>)> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("k", DataType::UInt64, false)]));
    let task_ctx = Arc::new(keys.task_ctx());
    let plan = keys.create_physical_plan().await?;
    let out = schema.clone();
    let hashed = Arc::new(MapBatches::stateless(
        plan,
        schema.clone(),
        "MessageKeys",
        move |b| {
            let keys = UInt64Array::from(message_keys(b)?);
            Ok(RecordBatch::try_new(out.clone(), vec![Arc::new(keys)])?)
        },
    ));
    let order = ascending(&schema, &["k"])?;
    let sorted: Arc<dyn ExecutionPlan> = Arc::new(SortPreservingMergeExec::new(
        order.clone(),
        Arc::new(SortExec::new(order, hashed).with_preserve_partitioning(true)),
    ));
    let mut stream = sorted.execute(0, task_ctx)?;
    let (mut total, mut last, mut copied, mut many) = (0u64, None::<u64>, HashSet::new(), false);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        total += batch.num_rows() as u64;
        let keys = batch.column(0).as_primitive::<UInt64Type>();
        for &k in keys.values() {
            if last == Some(k) && !many {
                copied.insert(k);
                many = copied.len() > FEW_COPIES;
            }
            last = Some(k);
        }
    }
    // Where the copied messages are more than a quarter of the events,
    // reading every event twice to spare sorting them gains nothing.
    many |= copied.len() as u64 > total / 4;
    let copies = if many {
        Copies::Many
    } else if copied.is_empty() {
        Copies::None
    } else {
        Copies::Few(Arc::new(copied))
    };
    Ok((total, copies, sorted))
}

/// A 64-bit hash of each row's `(org_id, message_id)` (Utf8 columns; NULL
/// hashes apart from every text). The same in every pass of a run.
fn message_keys(batch: &RecordBatch) -> DfResult<Vec<u64>> {
    use std::hash::{Hash, Hasher};
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| DataFusionError::Internal(format!("sessionize: no text column {name}")))
    };
    let (org, message) = (column("org_id")?, column("message_id")?);
    Ok((0..batch.num_rows())
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            org.is_valid(i).then(|| org.value(i)).hash(&mut h);
            message.is_valid(i).then(|| message.value(i)).hash(&mut h);
            h.finish()
        })
        .collect())
}

/// What each scan of the web query goes through first ([`narrowed`]).
type Prepare = fn(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>>;

/// The plan of `query` (the web events with their visitor, every copy),
/// each of its scans through `prepare` (the split's [`narrow`]),
/// deduplicated and in one partition per core by visitor, each sorted by
/// visitor and time on its own, its org ids numbered in `orgs`
/// ([`numbered`]): the plan and its partition count.
///
/// Deduplication keeps the first received copy of each message, as
/// `row_number() OVER (PARTITION BY org_id, message_id ORDER BY received_at,
/// occurred_at) = 1` would. That window is not used: partitioned by a key
/// unique on nearly every row, DataFusion keeps state for and slices every
/// batch per key, about five times the cost of a sort of all the events
/// (10 M events: 24 s against 4.4 s). Instead, by what [`copied_messages`]
/// found:
/// - no copies: nothing to cut;
/// - a few copied messages: only their events (read apart, in a second scan
///   of the same query) are hashed by
///   `(org_id, message_id)`, sorted by (org, message, received, occurred) and
///   cut to the first row of each message ([`first_copies`]); the other
///   events skip that sort and join them again;
/// - many: every event takes that path.
///
/// A copy whose visitor is unknown is dropped after the cut, so it still
/// shadows the later copies. Every sort spills under the pool.
async fn first_copies_by_visitor(
    ctx: &SessionContext,
    query: DataFrame,
    prepare: Prepare,
    copies: Copies,
    orgs: &Arc<Orgs>,
) -> Result<(Arc<dyn ExecutionPlan>, usize)> {
    let parts = ctx.state().config().target_partitions().max(1);
    let first = |plan: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        let schema = plan.schema();
        let by_message = hashed_sort(
            plan,
            &["org_id", "message_id"],
            &["org_id", "message_id", "received_at", "occurred_at"],
            parts,
        )?;
        Ok(Arc::new(first_copies(
            by_message,
            vec![
                physical_col("org_id", &schema)?,
                physical_col("message_id", &schema)?,
            ],
        )))
    };
    let deduplicated = match copies {
        Copies::None => prepare(query.create_physical_plan().await?)?,
        Copies::Many => first(prepare(query.create_physical_plan().await?)?)?,
        Copies::Few(keys) => {
            let plan = prepare(query.clone().create_physical_plan().await?)?;
            let schema = plan.schema();
            let only = |copied: bool, plan| {
                let keys = Arc::clone(&keys);
                Arc::new(MapBatches::stateless(
                    plan,
                    schema.clone(),
                    "CopiedMessages",
                    move |b| {
                        let mask: BooleanArray = message_keys(b)?
                            .iter()
                            .map(|k| Some(keys.contains(k) == copied))
                            .collect();
                        Ok(filter_record_batch(b, &mask)?)
                    },
                ))
            };
            let single = only(false, plan);
            let copied = first(only(true, prepare(query.create_physical_plan().await?)?))?;
            UnionExec::try_new(vec![single, copied])?
        }
    };
    let schema = deduplicated.schema();
    let known: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(
        Arc::new(IsNotNullExpr::new(physical_col("visitor_id", &schema)?)),
        deduplicated,
    )?);
    let sorted = hashed_sort(
        numbered(known, orgs)?,
        &["org", "visitor_id"],
        &["org", "visitor_id", "occurred_at", "message_id"],
        parts,
    )?;
    Ok((sorted, parts))
}

/// The org ids of a run's web events by their 64-bit hash: the sort by
/// visitor carries the hash ([`numbered`]), the split names the org again.
#[derive(Default)]
pub(super) struct Orgs(std::sync::Mutex<HashMap<u64, Arc<str>>>);

impl Orgs {
    /// The hash of `org`, remembered; two orgs of one hash are an error
    /// (never silently one org).
    fn number(&self, org: &str) -> DfResult<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        org.hash(&mut h);
        let n = h.finish();
        let mut known = self
            .0
            .lock()
            .map_err(|_| DataFusionError::Internal("sessionize: org ids poisoned".into()))?;
        match known.get(&n) {
            Some(o) if &**o != org => Err(DataFusionError::Execution(format!(
                "sessionize: org ids {o} and {org} have the same 64-bit hash"
            ))),
            Some(_) => Ok(n),
            None => {
                known.insert(n, Arc::from(org));
                Ok(n)
            }
        }
    }

    /// The org id numbered `n`.
    fn name(&self, n: u64) -> Result<Arc<str>> {
        self.0
            .lock()
            .map_err(|_| Error::Internal("sessionize: org ids poisoned".into()))?
            .get(&n)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("sessionize: no org id numbered {n}")))
    }
}

/// `plan` with its `org_id` as the org's number in `orgs` (a `UInt64`
/// column `org`: 8 bytes where the sort by visitor would move the whole id
/// with every event) and without `received_at` (read by the deduplication
/// only).
fn numbered(plan: Arc<dyn ExecutionPlan>, orgs: &Arc<Orgs>) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    let org_at = input.index_of("org_id")?;
    let keep: Vec<usize> = (0..input.fields().len())
        .filter(|&i| i != org_at && input.field(i).name() != "received_at")
        .collect();
    let mut fields = vec![Field::new("org", DataType::UInt64, false)];
    fields.extend(keep.iter().map(|&i| input.field(i).clone()));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let (out, orgs) = (schema.clone(), Arc::clone(orgs));
    Ok(Arc::new(MapBatches::stateless(
        plan,
        schema,
        "NumberedOrgs",
        move |b| {
            let org = b
                .column(org_at)
                .as_string_opt::<i32>()
                .ok_or_else(|| DataFusionError::Internal("sessionize: org_id not Utf8".into()))?;
            // A batch is nearly always one org: hashed once.
            let mut last: Option<(&str, u64)> = None;
            let mut numbers = Vec::with_capacity(b.num_rows());
            for i in 0..b.num_rows() {
                let o = if org.is_valid(i) { org.value(i) } else { "" };
                let n = match last {
                    Some((l, n)) if l == o => n,
                    _ => orgs.number(o)?,
                };
                last = Some((o, n));
                numbers.push(n);
            }
            let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(numbers))];
            columns.extend(keep.iter().map(|&i| Arc::clone(b.column(i))));
            Ok(RecordBatch::try_new(out.clone(), columns)?)
        },
    )))
}

/// `plan` hash-partitioned by `keys` into `parts` partitions, each sorted
/// (ascending, nulls last) by `order` on its own.
fn hashed_sort(
    plan: Arc<dyn ExecutionPlan>,
    keys: &[&str],
    order: &[&str],
    parts: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let keys = keys
        .iter()
        .map(|c| physical_col(c, &schema))
        .collect::<DfResult<Vec<_>>>()?;
    let hashed: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        plan,
        Partitioning::Hash(keys, parts),
    )?);
    Ok(Arc::new(
        SortExec::new(ascending(&schema, order)?, hashed).with_preserve_partitioning(true),
    ))
}

/// The order by `columns` of `schema`, each ascending with nulls last.
fn ascending(schema: &SchemaRef, columns: &[&str]) -> Result<LexOrdering> {
    let asc = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let order = columns
        .iter()
        .map(|c| Ok(PhysicalSortExpr::new(physical_col(c, schema)?, asc)))
        .collect::<DfResult<Vec<_>>>()?;
    LexOrdering::new(order).ok_or_else(|| Error::Internal("sessionize: empty sort order".into()))
}

/// The first row of each run of equal `keys` (NULL equal to NULL) of a
/// sorted input, per partition: with the input sorted by the keys and then
/// by preference, the preferred row of each key.
fn first_copies(input: Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>) -> MapBatches {
    let schema = input.schema();
    MapBatches::new(input, schema, "FirstCopies", move || {
        let keys = keys.clone();
        // The key of the last row seen, as one-row arrays.
        let mut last: Option<Vec<ArrayRef>> = None;
        Box::new(move |batch: &RecordBatch| {
            let n = batch.num_rows();
            if n == 0 {
                return Ok(batch.clone());
            }
            let mut keep: Option<BooleanArray> = None;
            let mut tail = Vec::with_capacity(keys.len());
            for (i, key) in keys.iter().enumerate() {
                let values = key.evaluate(batch)?.into_array(n)?;
                // Each row's predecessor: the last row of the batch before
                // (a NULL before the first row of the partition), then this
                // batch's rows shifted by one.
                let before = match &last {
                    Some(l) => Arc::clone(&l[i]),
                    None => new_null_array(values.data_type(), 1),
                };
                let previous = concat(&[before.as_ref(), values.slice(0, n - 1).as_ref()])?;
                let differs = distinct(&values, &previous)?;
                keep = Some(match keep {
                    Some(k) => or(&k, &differs)?,
                    None => differs,
                });
                // Copied, so the batch's buffers are not kept alive.
                tail.push(concat(&[values.slice(n - 1, 1).as_ref()])?);
            }
            let mut keep = keep.unwrap_or_else(|| BooleanArray::from(vec![true; n]));
            if last.is_none() {
                // The partition's first row is a first copy even when its
                // key is NULL (which equals the NULL put before it).
                let mut first = vec![false; n];
                first[0] = true;
                keep = or(&keep, &BooleanArray::from(first))?;
            }
            last = Some(tail);
            Ok(filter_record_batch(batch, &keep)?)
        })
    })
}

/// [`WebEvent::page_view`], [`WebEvent::converted`], and an anonymous id
/// equal to the visitor id (not copied): bits of [`narrow`]'s `flags`.
const PAGE_VIEW: u8 = 1;
const CONVERTED: u8 = 2;
const ANONYMOUS_IS_VISITOR: u8 = 4;

/// Each scanned batch of `plan` (every column of the web query) made into
/// the columns the sorts carry and the split reads ([`narrow`]).
fn narrowed(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        text("org_id", true),
        text("message_id", true),
        text("visitor_id", true),
        input.field_with_name("occurred_at")?.clone(),
        input.field_with_name("received_at")?.clone(),
        text("anonymous_id", true),
        text("user_id", true),
        text("device_type", true),
        text("product", true),
        text("source", false),
        text("tl_kind", false),
        text("tl_detail", false),
        Field::new("flags", DataType::UInt8, false),
    ]));
    let out = schema.clone();
    Ok(Arc::new(MapBatches::new(
        plan,
        schema,
        "NarrowWebEvents",
        move || {
            let out = out.clone();
            let mut hosts = Hosts::default();
            Box::new(move |b: &RecordBatch| narrow(b, &out, &mut hosts))
        },
    )))
}

/// A scanned web event made into what the split reads of it, before the
/// sort by visitor: its keys, ids and device as plain Utf8, its product,
/// traffic source and timeline entry worked out, and three flags — about half
/// the bytes of the event's columns, which are the bytes the sort moves,
/// spills and merges. The session built from these is the one the event's
/// columns would make.
fn narrow(b: &RecordBatch, schema: &SchemaRef, hosts: &mut Hosts) -> DfResult<RecordBatch> {
    let n = b.num_rows();
    let column = |name: &str| {
        b.column_by_name(name).ok_or_else(|| {
            DataFusionError::Internal(format!("sessionize: no column {name} in the web events"))
        })
    };
    let utf8 = |name: &str| -> DfResult<ArrayRef> { Ok(cast(column(name)?, &DataType::Utf8)?) };
    let t = |name: &str| Texts::of(column(name)?);
    let (visitor, anonymous) = (t("visitor_id")?, t("anonymous_id")?);
    let (kind, event, name, user) = (t("type")?, t("event")?, t("name")?, t("user_id")?);
    let (path, url, referrer, campaign) = (
        t("page_path")?,
        t("page_url")?,
        t("page_referrer")?,
        t("campaign_source")?,
    );
    let (product_id, sku, product_name, order, props) = (
        t("product_id")?,
        t("product_sku")?,
        t("product_name")?,
        t("order_id")?,
        t("props")?,
    );
    let revenue = cast(column("revenue")?, &DataType::Float64)?;
    let revenue = revenue.as_primitive::<Float64Type>();
    let mut anonymous_out = StringBuilder::with_capacity(n, 0);
    let mut product = StringBuilder::with_capacity(n, 0);
    let mut source = StringBuilder::with_capacity(n, 8 * n);
    let mut tl_kind = StringBuilder::with_capacity(n, 8 * n);
    let mut tl_detail = StringBuilder::with_capacity(n, 16 * n);
    let mut flags = Vec::with_capacity(n);
    let order_completed = Some(SegmentEvent::OrderCompleted.as_str());
    for i in 0..n {
        let e = RawEvent {
            kind: kind.get(i).unwrap_or_default(),
            event: event.get(i),
            name: name.get(i),
            user_id: user.get(i),
            page_path: path.get(i),
            page_url: url.get(i),
            referrer: referrer.get(i),
            campaign_source: campaign.get(i),
            product_id: product_id.get(i),
            product_sku: sku.get(i),
            product_name: product_name.get(i),
            order_id: order.get(i),
            revenue: revenue.is_valid(i).then(|| revenue.value(i)),
            props: props.get(i),
        };
        let anon = anonymous.get(i);
        let is_visitor = anon.is_some() && anon == visitor.get(i);
        anonymous_out.append_option(anon.filter(|_| !is_visitor));
        product.append_option(e.product_id.or(e.product_sku));
        source.append_value(traffic_source(&e, hosts));
        let (k, d) = timeline_entry(&e);
        tl_kind.append_value(k);
        tl_detail.append_value(d);
        let page_view = e.kind == "page" || e.kind == "screen";
        flags.push(
            (u8::from(page_view) * PAGE_VIEW)
                | (u8::from(e.event == order_completed) * CONVERTED)
                | (u8::from(is_visitor) * ANONYMOUS_IS_VISITOR),
        );
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            utf8("org_id")?,
            utf8("message_id")?,
            utf8("visitor_id")?,
            Arc::clone(column("occurred_at")?),
            Arc::clone(column("received_at")?),
            Arc::new(anonymous_out.finish()),
            utf8("user_id")?,
            utf8("device_type")?,
            Arc::new(product.finish()),
            Arc::new(source.finish()),
            Arc::new(tl_kind.finish()),
            Arc::new(tl_detail.finish()),
            Arc::new(UInt8Array::from(flags)),
        ],
    )?)
}

/// A text column of a scanned batch as it came: string views, else plain
/// Utf8 (any other string type cast to it).
enum Texts {
    Plain(StringArray),
    View(StringViewArray),
}

impl Texts {
    fn of(c: &ArrayRef) -> DfResult<Self> {
        Ok(match c.data_type() {
            DataType::Utf8View => Texts::View(c.as_string_view().clone()),
            _ => Texts::Plain(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    fn get(&self, i: usize) -> Option<&str> {
        match self {
            Texts::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Texts::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
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
    pub(super) orgs: Arc<Orgs>,
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
        let mut cur_key: Option<(u64, String)> = None;
        // The batches the current visitor's events are in (the last one is
        // the batch being read), and those events as (batch, row).
        let mut batches: Vec<WebColumns> = Vec::new();
        let mut rows: Vec<(usize, usize)> = Vec::new();
        while let Some(batch) = self.stream.next().await {
            let batch = batch?;
            self.progress.inc(batch.num_rows() as u64);
            built.events += batch.num_rows() as u64;
            let org_c = batch
                .column_by_name("org")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| Error::Internal("sessionize: no org column".into()))?
                .clone();
            let visitor = text(&batch, "visitor_id")?;
            batches.push(WebColumns::new(&batch)?);
            for i in 0..batch.num_rows() {
                let (o, v) = (org_c.value(i), visitor.value(i));
                if cur_key.as_ref().is_none_or(|(co, cv)| *co != o || cv != v) {
                    if let Some(key) = cur_key.take() {
                        self.flush(key, &batches, &rows, &mut built)?;
                        rows.clear();
                        // Only the batch being read holds events still to come.
                        batches.drain(..batches.len() - 1);
                    }
                    cur_key = Some((o, v.to_string()));
                }
                rows.push((batches.len() - 1, i));
            }
        }
        if let Some(key) = cur_key.take() {
            self.flush(key, &batches, &rows, &mut built)?;
        }
        Ok(built)
    }

    /// Split the events of one visitor (`(org, visitor)`, at `rows` of
    /// `batches`) into sessions.
    fn flush(
        &self,
        (org, visitor): (u64, String),
        batches: &[WebColumns],
        rows: &[(usize, usize)],
        built: &mut Built,
    ) -> Result<()> {
        let events: Vec<WebEvent<'_>> = rows.iter().map(|&(b, i)| batches[b].event(i)).collect();
        flush_visitor(
            &self.orgs.name(org)?,
            &visitor,
            &events,
            self.gap,
            self.read_end,
            &self.returning,
            &self.run_id,
            built,
        )
    }
}

/// The columns of a sorted batch of narrowed web events ([`narrow`]),
/// looked up and cast once.
struct WebColumns {
    message_id: StringArray,
    visitor: StringArray,
    anonymous_id: StringArray,
    user_id: StringArray,
    occurred: Int64Array,
    device_type: StringArray,
    product: StringArray,
    source: StringArray,
    tl_kind: StringArray,
    tl_detail: StringArray,
    flags: UInt8Array,
}

impl WebColumns {
    fn new(batch: &RecordBatch) -> Result<Self> {
        let flags = batch
            .column_by_name("flags")
            .and_then(|c| c.as_primitive_opt::<UInt8Type>())
            .ok_or_else(|| Error::Internal("sessionize: no flags column".into()))?
            .clone();
        Ok(Self {
            message_id: text(batch, "message_id")?,
            visitor: text(batch, "visitor_id")?,
            anonymous_id: text(batch, "anonymous_id")?,
            user_id: text(batch, "user_id")?,
            occurred: micros(batch, "occurred_at")?,
            device_type: text(batch, "device_type")?,
            product: text(batch, "product")?,
            source: text(batch, "source")?,
            tl_kind: text(batch, "tl_kind")?,
            tl_detail: text(batch, "tl_detail")?,
            flags,
        })
    }

    /// Row `i`, borrowing its text.
    fn event(&self, i: usize) -> WebEvent<'_> {
        fn at(a: &StringArray, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        let opt = |a| at(a, i);
        let flags = self.flags.value(i);
        WebEvent {
            message_id: self.message_id.value(i),
            anonymous_id: if flags & ANONYMOUS_IS_VISITOR != 0 {
                opt(&self.visitor)
            } else {
                opt(&self.anonymous_id)
            },
            user_id: opt(&self.user_id),
            occurred: self.occurred.value(i),
            device_type: opt(&self.device_type),
            product: opt(&self.product),
            source: self.source.value(i),
            tl_kind: self.tl_kind.value(i),
            tl_detail: self.tl_detail.value(i),
            page_view: flags & PAGE_VIEW != 0,
            converted: flags & CONVERTED != 0,
        }
    }
}

/// Split one visitor's time-ordered events into sessions.
#[allow(clippy::too_many_arguments)]
pub(super) fn flush_visitor(
    org: &str,
    visitor: &str,
    events: &[WebEvent<'_>],
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
    events: &[WebEvent<'_>],
    is_returning: bool,
    run_id: &str,
) -> Result<SessionRow> {
    let started = events[0].occurred;
    let ended = events[events.len() - 1].occurred;
    let mut anonymous_ids = BTreeSet::new();
    let mut product_ids: Vec<&str> = Vec::new();
    let mut user_id = None;
    let mut page_views = 0i64;
    let mut converted = false;
    let mut timeline = Vec::with_capacity(events.len().min(MAX_TIMELINE + 1));
    for e in events {
        if let Some(a) = e.anonymous_id {
            anonymous_ids.insert(a);
        }
        if e.user_id.is_some() {
            user_id = e.user_id;
        }
        if let Some(p) = e.product {
            if !product_ids.contains(&p) {
                product_ids.push(p);
            }
        }
        page_views += i64::from(e.page_view);
        converted |= e.converted;
        if timeline.len() < MAX_TIMELINE {
            let offset = (e.occurred - started) / 1_000_000;
            timeline.push(TimelineEntry::new(offset, e.tl_kind, e.tl_detail));
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
    let device_type = events
        .iter()
        .find_map(|e| e.device_type.map(str::to_string));
    Ok(SessionRow {
        org_id: org.to_string(),
        session_id: session_id(org, "web", visitor, started),
        channel: "web",
        visitor_id: Some(visitor.to_string()),
        user_id: user_id
            .map(str::to_string)
            .or_else(|| (!anonymous_ids.contains(visitor)).then(|| visitor.to_string())),
        anonymous_ids: Some(anonymous_ids.into_iter().map(str::to_string).collect()),
        started_at: started,
        ended_at: ended,
        event_count: events.len() as i64,
        page_views: Some(page_views),
        product_ids: Some(product_ids.into_iter().map(str::to_string).collect()),
        device_type,
        traffic_source: Some(first.source.to_string()),
        is_returning: Some(is_returning),
        converted: Some(converted),
        source_ref: None,
        timeline: timeline::to_json(&timeline),
        source_ids: events.iter().map(|e| e.message_id.to_string()).collect(),
        job_run_id: run_id.to_string(),
        session_date: days_from_micros(started),
    })
}

/// utm source, else the referrer's host when it is another site (as
/// `url` parses both), else 'direct'.
fn traffic_source<'a>(e: &RawEvent<'a>, hosts: &mut Hosts) -> Cow<'a, str> {
    if let Some(s) = e.campaign_source.filter(|s| !s.is_empty()) {
        return if s.bytes().any(|c| !c.is_ascii() || c.is_ascii_uppercase()) {
            Cow::Owned(s.to_lowercase())
        } else {
            Cow::Borrowed(s)
        };
    }
    if let Some(host) = e.referrer.and_then(|r| hosts.of(r)) {
        let own = e.page_url.and_then(|u| hosts.of(u));
        if own.as_deref() != Some(&*host) {
            return Cow::Owned(host.trim_start_matches("www.").to_string());
        }
    }
    Cow::Borrowed("direct")
}

/// The host of each URL seen, as `url` parses it, kept for the next
/// events: a partition's events repeat few page URLs and referrers. Bounded:
/// emptied when it reaches [`Hosts::MAX`] URLs.
#[derive(Default)]
struct Hosts(HashMap<Box<str>, Option<Arc<str>>>);

impl Hosts {
    const MAX: usize = 4096;

    fn of(&mut self, u: &str) -> Option<Arc<str>> {
        if let Some(host) = self.0.get(u) {
            return host.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let host: Option<Arc<str>> = url::Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(Arc::from));
        self.0.insert(u.into(), host.clone());
        host
    }
}

/// The kind and detail of an event's timeline entry.
fn timeline_entry<'a>(e: &RawEvent<'a>) -> (&'a str, Cow<'a, str>) {
    match e.kind {
        "page" | "screen" => (
            e.kind,
            Cow::Borrowed(e.page_path.or(e.name).unwrap_or_default()),
        ),
        "track" => {
            let name = e.event.unwrap_or("track");
            let detail = if let Some(order) = e.order_id {
                Cow::Owned(match e.revenue {
                    Some(r) => format!("order {order} {r:.2}"),
                    None => format!("order {order}"),
                })
            } else if let Some(p) = e.product_id.or(e.product_sku) {
                match e.product_name {
                    Some(n) => Cow::Owned(format!("{p} {n}")),
                    None => Cow::Borrowed(p),
                }
            } else if let Some(props) = e.props {
                Cow::Owned(compact_props(props))
            } else {
                Cow::Borrowed("")
            };
            (name, detail)
        }
        other => (other, Cow::Borrowed(e.user_id.unwrap_or_default())),
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

/// Each batch of `input` through a function made for each partition (which
/// may keep state from batch to batch): a filter, a cut or a projection of
/// rows. No order or partitioning by columns is claimed for the output.
struct MapBatches {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    name: &'static str,
    make: MakeMap,
    properties: Arc<PlanProperties>,
}

type BatchMap = Box<dyn FnMut(&RecordBatch) -> DfResult<RecordBatch> + Send>;
type MakeMap = Arc<dyn Fn() -> BatchMap + Send + Sync>;

impl MapBatches {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        name: &'static str,
        make: impl Fn() -> BatchMap + Send + Sync + 'static,
    ) -> Self {
        Self::with_make(input, schema, name, Arc::new(make))
    }

    /// A map that keeps no state.
    fn stateless(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        name: &'static str,
        f: impl Fn(&RecordBatch) -> DfResult<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        let f = Arc::new(f);
        Self::new(input, schema, name, move || {
            let f = Arc::clone(&f);
            Box::new(move |b: &RecordBatch| f(b))
        })
    }

    fn with_make(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        name: &'static str,
        make: MakeMap,
    ) -> Self {
        let p = input.properties();
        let properties = PlanProperties::new(
            crow_lake::datafusion::physical_expr::EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(p.output_partitioning().partition_count()),
            p.emission_type,
            p.boundedness,
        );
        Self {
            input,
            schema,
            name,
            make,
            properties: Arc::new(properties),
        }
    }
}

impl std::fmt::Debug for MapBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl DisplayAs for MapBatches {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl ExecutionPlan for MapBatches {
    fn name(&self) -> &str {
        self.name
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::with_make(
            crow_lake::only_child(children, self.name)?,
            self.schema.clone(),
            self.name,
            Arc::clone(&self.make),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let mut f = (self.make)();
        let stream = input.map(move |batch| f(&batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

#[cfg(test)]
mod first_copies_tests {
    use super::*;
    use crow_lake::arrow::array::{Int64Array, StringArray};
    use crow_lake::arrow::datatypes::Schema;
    use crow_lake::datafusion::datasource::memory::MemorySourceConfig;

    fn batch(
        schema: &SchemaRef,
        keys: &[(Option<&str>, Option<&str>)],
        rows: &[i64],
    ) -> RecordBatch {
        let org: StringArray = keys.iter().map(|k| k.0).collect();
        let msg: StringArray = keys.iter().map(|k| k.1).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(org),
                Arc::new(msg),
                Arc::new(Int64Array::from(rows.to_vec())),
            ],
        )
        .expect("batch")
    }

    /// Rows kept from sorted batches (given as one partition), by row number.
    async fn kept(batches: &[&[(Option<&str>, Option<&str>)]]) -> Vec<i64> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("message_id", DataType::Utf8, true),
            Field::new("row", DataType::Int64, false),
        ]));
        let mut next = 0;
        let mut input = Vec::new();
        for keys in batches {
            let rows: Vec<i64> = (next..next + keys.len() as i64).collect();
            next += keys.len() as i64;
            input.push(batch(&schema, keys, &rows));
        }
        let source =
            MemorySourceConfig::try_new_exec(&[input], schema.clone(), None).expect("source");
        let keys = vec![
            physical_col("org_id", &schema).expect("col"),
            physical_col("message_id", &schema).expect("col"),
        ];
        let plan = first_copies(source, keys);
        let ctx = SessionContext::new();
        let mut stream = plan.execute(0, ctx.task_ctx()).expect("execute");
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            let b = b.expect("batch");
            let rows = b
                .column(2)
                .as_primitive::<crow_lake::arrow::datatypes::Int64Type>();
            out.extend(rows.values().iter().copied());
        }
        out
    }

    #[tokio::test]
    async fn the_first_row_of_each_key_is_kept_across_batches() {
        let (o, p) = (Some("o1"), Some("o2"));
        let got = kept(&[
            &[(o, Some("a")), (o, Some("a")), (o, Some("b"))],
            // A run that goes on from the batch before, then two keys that
            // differ in one column each.
            &[(o, Some("b")), (o, Some("c")), (p, Some("c"))],
            &[(p, Some("c"))],
            &[],
            &[(p, Some("c")), (p, Some("d"))],
        ])
        .await;
        assert_eq!(got, vec![0, 2, 4, 5, 8]);
    }

    #[tokio::test]
    async fn null_keys_are_one_key_and_the_first_row_is_always_kept() {
        let got = kept(&[
            &[(None, None), (None, None), (Some("o"), None)],
            &[(Some("o"), None), (Some("o"), Some("a"))],
        ])
        .await;
        assert_eq!(got, vec![0, 2, 4]);
    }

    /// The kept row numbers of each path over two partitions of events.
    async fn paths(
        rows: &[(&str, &str, i64, i64, Option<&str>)],
    ) -> (Vec<i64>, Vec<i64>, u64, bool) {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("message_id", DataType::Utf8, true),
            Field::new("received_at", DataType::Int64, false),
            Field::new("occurred_at", DataType::Int64, false),
            Field::new("visitor_id", DataType::Utf8, true),
            Field::new("row", DataType::Int64, false),
        ]));
        let part = |range: std::ops::Range<usize>| {
            let r = &rows[range.clone()];
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(r.iter().map(|x| Some(x.0)).collect::<StringArray>()),
                    Arc::new(r.iter().map(|x| Some(x.1)).collect::<StringArray>()),
                    Arc::new(Int64Array::from(r.iter().map(|x| x.2).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(r.iter().map(|x| x.3).collect::<Vec<_>>())),
                    Arc::new(r.iter().map(|x| x.4).collect::<StringArray>()),
                    Arc::new(Int64Array::from(
                        range.map(|i| i as i64).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("batch")
        };
        let half = rows.len() / 2;
        let table = crow_lake::datafusion::datasource::MemTable::try_new(
            schema.clone(),
            vec![vec![part(0..half)], vec![part(half..rows.len())]],
        )
        .expect("table");
        let ctx = SessionContext::new_with_config(
            crow_lake::datafusion::prelude::SessionConfig::new().with_target_partitions(2),
        );
        ctx.register_table("t", Arc::new(table)).expect("register");
        let df = ctx.table("t").await.expect("t");
        let keys = df
            .clone()
            .select_columns(&["org_id", "message_id"])
            .expect("keys");
        let (total, copies, _) = copied_messages(keys).await.expect("copies");
        let few = matches!(copies, Copies::Few(_));
        let kept = |copies| {
            let (ctx, df) = (&ctx, df.clone());
            async move {
                let orgs = Arc::new(Orgs::default());
                let (plan, parts) = first_copies_by_visitor(ctx, df, Ok, copies, &orgs)
                    .await
                    .expect("plan");
                let mut out = Vec::new();
                for p in 0..parts {
                    let mut stream = plan.execute(p, ctx.task_ctx()).expect("execute");
                    while let Some(b) = stream.next().await {
                        let b = b.expect("batch");
                        let rows = b.column_by_name("row").expect("row");
                        out.extend(
                            rows.as_primitive::<crow_lake::arrow::datatypes::Int64Type>()
                                .values()
                                .iter()
                                .copied(),
                        );
                    }
                }
                out.sort_unstable();
                out
            }
        };
        let first = kept(copies).await;
        (first, kept(Copies::Many).await, total, few)
    }

    #[tokio::test]
    async fn every_path_keeps_the_first_received_copy_across_partitions() {
        // (org, message, received, occurred, visitor), row = position.
        let rows = [
            ("o1", "m1", 1, 5, Some("v1")), // 0: a later copy of m1
            ("o2", "m3", 0, 1, Some("v3")), // 1: m3 of another org
            ("o1", "m2", 0, 1, None),       // 2: m2's first copy, no visitor
            ("o1", "m4", 0, 3, Some("v1")), // 3: m4, occurred later
            ("o1", "s1", 0, 1, Some("v1")), // 4..: single events
            ("o1", "s2", 0, 1, Some("v1")),
            ("o1", "s3", 0, 1, Some("v1")),
            ("o1", "s4", 0, 1, Some("v2")),
            ("o1", "m1", 0, 6, Some("v2")), // 8: m1's first copy
            ("o1", "m2", 1, 1, Some("v1")), // 9: m2's later copy
            ("o1", "m3", 0, 2, Some("v1")), // 10: m3 of o1
            ("o1", "m4", 0, 2, Some("v1")), // 11: m4's first copy
            ("o1", "s5", 0, 1, Some("v1")),
            ("o1", "s6", 0, 1, Some("v1")),
        ];
        let (few, many, total, was_few) = paths(&rows).await;
        assert_eq!(total, 14);
        assert!(was_few, "3 copied messages of 14 events take the few path");
        let expected = vec![1, 4, 5, 6, 7, 8, 10, 11, 12, 13];
        assert_eq!(few, expected, "few");
        assert_eq!(many, expected, "many");
        // Copies of more than a quarter of the events: every event sorted.
        let (_, _, _, was_few) = paths(
            &rows[..4]
                .iter()
                .chain(&rows[8..12])
                .copied()
                .collect::<Vec<_>>(),
        )
        .await;
        assert!(!was_few);
        // No copies: every event with a visitor, nothing cut.
        let (none, many, _, was_few) = paths(&rows[4..8]).await;
        assert!(!was_few);
        assert_eq!(none, vec![0, 1, 2, 3]);
        assert_eq!(many, none);
    }
}

#[cfg(test)]
mod narrow_tests {
    use super::*;
    use crow_lake::arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};

    type Row = [Option<&'static str>; 18];

    /// Raw web events as the web query yields them: the 16 text columns as
    /// string views, times, revenue, props and the visitor as plain Utf8.
    fn raw(rows: &[Row], revenue: &[Option<f64>]) -> RecordBatch {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (c, name) in WEB_TEXT_COLUMNS.iter().enumerate() {
            fields.push(Field::new(*name, DataType::Utf8View, true));
            columns.push(Arc::new(
                rows.iter().map(|r| r[c]).collect::<StringViewArray>(),
            ));
        }
        let times = || {
            Arc::new(
                TimestampMicrosecondArray::from((0..rows.len() as i64).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            )
        };
        let time_type = DataType::Timestamp(
            crow_lake::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        fields.push(Field::new("occurred_at", time_type.clone(), true));
        columns.push(times());
        fields.push(Field::new("received_at", time_type, true));
        columns.push(times());
        fields.push(Field::new("revenue", DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(revenue.to_vec())));
        for (c, name) in ["props", "visitor_id"].iter().enumerate() {
            fields.push(Field::new(*name, DataType::Utf8, true));
            columns.push(Arc::new(
                rows.iter().map(|r| r[16 + c]).collect::<StringArray>(),
            ));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("raw batch")
    }

    /// One raw event: (type, event, name, anonymous, user, path, url,
    /// referrer, campaign, product id, sku, product name, order, props,
    /// visitor).
    #[allow(clippy::too_many_arguments)]
    fn ev(
        kind: &'static str,
        event: Option<&'static str>,
        name: Option<&'static str>,
        ids: (Option<&'static str>, Option<&'static str>, &'static str),
        page: (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        ),
        campaign: Option<&'static str>,
        product: (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        ),
        order: Option<&'static str>,
        props: Option<&'static str>,
    ) -> Row {
        let (anonymous, user, visitor) = ids;
        let (path, url, referrer) = page;
        [
            Some("org"),
            Some("m"),
            Some(kind),
            event,
            name,
            anonymous,
            user,
            path,
            url,
            referrer,
            Some("mobile"),
            campaign,
            product.0,
            product.1,
            product.2,
            order,
            props,
            Some(visitor),
        ]
    }

    #[test]
    fn a_narrowed_event_reads_as_its_columns_would() {
        let shop = Some("https://shop.example/p/1");
        let rows = [
            // A page view from Google; its anonymous id is the visitor.
            ev(
                "page",
                None,
                None,
                (Some("a1"), None, "a1"),
                (
                    Some("/p/1"),
                    shop,
                    Some("https://www.google.com/search?q=x"),
                ),
                None,
                (None, None, None),
                None,
                None,
            ),
            // A product viewed, referred by its own site.
            ev(
                "track",
                Some("Product Viewed"),
                None,
                (Some("a1"), None, "a1"),
                (None, shop, Some("https://shop.example/")),
                None,
                (Some("p1"), Some("sku-1"), Some("Headphones")),
                None,
                None,
            ),
            // An order from a campaign, by a known user.
            ev(
                "track",
                Some("Order Completed"),
                None,
                (Some("a2"), Some("u1"), "u1"),
                (None, shop, Some("https://www.google.com/")),
                Some("NewsLetter"),
                (None, None, None),
                Some("o9"),
                None,
            ),
            // A search: its props in the detail.
            ev(
                "track",
                Some("Products Searched"),
                None,
                (Some("a2"), Some("u1"), "u1"),
                (None, None, None),
                Some("cpc"),
                (None, None, None),
                None,
                Some(r#"{"query":"red shoes","page":2,"step":3}"#),
            ),
            // An identify: the user in the detail, no anonymous id.
            ev(
                "identify",
                None,
                None,
                (None, Some("u1"), "u1"),
                (None, None, Some("not a url")),
                Some(""),
                (None, None, None),
                None,
                None,
            ),
            // A screen by name, a product by SKU only.
            ev(
                "screen",
                None,
                Some("Home"),
                (Some("a3"), None, "a3"),
                (None, Some("app://home"), Some("https://Partner.Example/x")),
                None,
                (None, Some("sku-7"), None),
                None,
                None,
            ),
        ];
        let revenue = [None, None, Some(12.5), None, None, None];
        let batch = raw(&rows, &revenue);
        let plan = narrowed(
            crow_lake::datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch.clone()]],
                batch.schema(),
                None,
            )
            .expect("source"),
        )
        .expect("narrowed");
        let schema = plan.schema();
        let mut hosts = Hosts::default();
        let once = narrow(&batch, &schema, &mut hosts).expect("narrow");
        // Again with the hosts known: the same columns.
        assert_eq!(narrow(&batch, &schema, &mut hosts).expect("again"), once);
        let c = WebColumns::new(&once).expect("columns");
        let got: Vec<_> = (0..rows.len())
            .map(|i| {
                let e = c.event(i);
                (
                    e.anonymous_id,
                    e.user_id,
                    e.product,
                    e.source,
                    e.tl_kind,
                    e.tl_detail,
                    e.page_view,
                    e.converted,
                    e.device_type,
                    e.occurred,
                )
            })
            .collect();
        let m = Some("mobile");
        assert_eq!(
            got,
            vec![
                (
                    Some("a1"),
                    None,
                    None,
                    "google.com",
                    "page",
                    "/p/1",
                    true,
                    false,
                    m,
                    0
                ),
                (
                    Some("a1"),
                    None,
                    Some("p1"),
                    "direct",
                    "Product Viewed",
                    "p1 Headphones",
                    false,
                    false,
                    m,
                    1
                ),
                (
                    Some("a2"),
                    Some("u1"),
                    None,
                    "newsletter",
                    "Order Completed",
                    "order o9 12.50",
                    false,
                    true,
                    m,
                    2
                ),
                (
                    Some("a2"),
                    Some("u1"),
                    None,
                    "cpc",
                    "Products Searched",
                    "query=red shoes step=3",
                    false,
                    false,
                    m,
                    3
                ),
                (
                    None,
                    Some("u1"),
                    None,
                    "direct",
                    "identify",
                    "u1",
                    false,
                    false,
                    m,
                    4
                ),
                (
                    Some("a3"),
                    None,
                    Some("sku-7"),
                    "partner.example",
                    "screen",
                    "Home",
                    true,
                    false,
                    m,
                    5
                ),
            ]
        );
        // The anonymous id equal to the visitor is not copied: a flag.
        let anonymous = once.column_by_name("anonymous_id").expect("column");
        assert_eq!(anonymous.null_count(), 4);
        let flags = once
            .column_by_name("flags")
            .expect("flags")
            .as_primitive::<UInt8Type>();
        assert_eq!(flags.value(0), PAGE_VIEW | ANONYMOUS_IS_VISITOR);
        assert_eq!(flags.value(5), PAGE_VIEW | ANONYMOUS_IS_VISITOR);
    }
}

#[cfg(test)]
mod orgs_tests {
    use super::*;

    #[test]
    fn an_org_keeps_its_number_and_a_number_names_its_org() {
        let orgs = Orgs::default();
        let a = orgs.number("org_a").expect("a");
        assert_eq!(orgs.number("org_a").expect("a again"), a);
        let b = orgs.number("org_b").expect("b");
        assert_ne!(a, b);
        assert_eq!(&*orgs.name(a).expect("name a"), "org_a");
        assert_eq!(&*orgs.name(b).expect("name b"), "org_b");
        // A number no org was given is an error, not an empty org.
        let unknown = (0..).find(|n| *n != a && *n != b).expect("a free number");
        assert!(orgs.name(unknown).is_err());
    }
}
