//! Findings: what a test found, ranked, and the rules that keep one fact in
//! one row (a funnel step over its transition, a segment that explains all
//! traffic).

use super::*;

/// One finding before it is written.
#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub(super) kind: &'static str,
    pub(super) metric: String,
    pub(super) segment: String,
    pub(super) z: f64,
    pub(super) support: i64,
    pub(super) product_ids: Vec<String>,
    pub(super) facts: Value,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) samples: Vec<String>,
    pub(super) children: Vec<String>,
    /// Found by this period's own test (not confirmed from a part).
    pub(super) own: bool,
    /// The complete days the finding's figures cover, `[start, end)`.
    pub(super) span: (NaiveDate, NaiveDate),
    /// Two-sided p-value of `z`.
    pub(super) p: f64,
    /// Large enough to matter (relative and absolute change), whatever its
    /// significance.
    pub(super) notable: bool,
    /// Estimated difference from the baseline over the span, in `unit`
    /// (negative: lost), and its standard error.
    pub(super) impact: f64,
    pub(super) impact_se: f64,
    /// "orders", "sessions", "visitors", "product views", "events".
    pub(super) unit: &'static str,
}

impl Finding {
    /// How much it matters, for ranking: the impact it had at least (the
    /// 95% interval's bound nearest zero), weighted by what its unit is
    /// worth (an order 10, a session or visitor 1, a product view 0.3, an
    /// event 0.1) — impact and confidence together, not |z| alone.
    pub(super) fn rank_score(&self) -> f64 {
        (self.impact.abs() - 1.96 * self.impact_se).max(0.0) * unit_weight(self.unit)
    }
}

/// The findings that matter most first (their impact at least, by what
/// its unit is worth, then |z|), at most [`MAX_PER_PERIOD`].
pub(super) fn top(mut fs: Vec<Finding>) -> Vec<Finding> {
    fs.sort_by(|a, b| {
        b.rank_score()
            .partial_cmp(&a.rank_score())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                b.z.abs()
                    .partial_cmp(&a.z.abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.metric.cmp(&b.metric))
            .then_with(|| a.segment.cmp(&b.segment))
    });
    fs.truncate(MAX_PER_PERIOD);
    fs
}

/// The funnel step that states the same fact as the transition `a` → `b`
/// (two consecutive funnel events), as that step's metric.
fn funnel_of_transition(a: &str, b: &str) -> Option<String> {
    STEPS
        .windows(2)
        .find(|w| w[0].1 == a && w[1].1 == b)
        .map(|w| {
            Metric::Funnel {
                from: w[0].0.into(),
                to: w[1].0.into(),
            }
            .to_string()
        })
}

/// The all-traffic metric that states the same fact as `metric`: a funnel
/// step for the transition between its two events, a failure event's
/// failures for its volume.
fn same_fact_as(metric: &str) -> Option<String> {
    match metric.parse() {
        Ok(Metric::Transition { from, to }) => funnel_of_transition(&from, &to),
        Ok(Metric::Event(k)) => Some(Metric::Error(k).to_string()),
        _ => None,
    }
}

/// One fact, one row (all traffic): a transition between consecutive
/// funnel events found together with that funnel step, and a failure
/// event's volume found together with its failures (which name the step),
/// are dropped and kept as the surviving row's supporting evidence
/// (`same_fact`).
pub(super) fn one_fact(fs: Vec<Finding>) -> Vec<Finding> {
    let funnels: BTreeSet<String> = fs
        .iter()
        .filter(|f| {
            f.segment.is_empty()
                && matches!(
                    f.metric.parse(),
                    Ok(Metric::Funnel { .. } | Metric::Error(_))
                )
        })
        .map(|f| f.metric.clone())
        .collect();
    let mut same: BTreeMap<String, Value> = BTreeMap::new();
    let mut out = Vec::with_capacity(fs.len());
    for f in fs {
        let equivalent =
            same_fact_as(&f.metric).filter(|m| f.segment.is_empty() && funnels.contains(m));
        match equivalent {
            Some(m) => {
                same.insert(
                    m,
                    json!({"metric": f.metric, "z": (f.z * 100.0).round() / 100.0, "statistics": f.facts}),
                );
            }
            None => out.push(f),
        }
    }
    for f in &mut out {
        if f.segment.is_empty() {
            if let (Some(v), Some(obj)) = (same.remove(&f.metric), f.facts.as_object_mut()) {
                obj.insert("same_fact".into(), v);
            }
        }
    }
    out
}

/// The segment label of "all traffic except one segment" (never stored).
const REST: &str = "rest";

/// The rest of the traffic "did not move" when its own test's |z| stays
/// under this: not even nominally significant (5%, two-sided), far below a
/// finding's bar, so a whole change is put on one segment only when the
/// rest is plainly flat.
const REST_MAX_Z: f64 = 2.0;

/// One fact, one row, across segments: when all traffic and one segment
/// moved the same way on a metric, and the rest of the traffic (all traffic
/// without that segment, tested like any segment against its own baseline)
/// did not move, the segment explains the whole change. The segment's row
/// is the clearer statement ("Mobile: … fell"), so it stays, with the
/// all-traffic finding as its supporting evidence (`explains_whole`); the
/// all-traffic row is dropped. A segment explains the whole only when it is
/// the one finding of its dimension for that metric: two devices that both
/// moved are a change of the whole.
pub(super) fn segment_explains_whole(
    fs: Vec<Finding>,
    cur: &Stats,
    base: &[&Stats],
    ctx: &TestCtx,
) -> Vec<Finding> {
    let dim = |seg: &str| seg.split('=').next().unwrap_or_default().to_string();
    let mut explained: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for w in fs
        .iter()
        .filter(|f| f.segment.is_empty() && !is_pair(&f.metric))
    {
        let mut segs: Vec<&Finding> = fs
            .iter()
            .filter(|s| s.metric == w.metric && !s.segment.is_empty())
            .collect();
        segs.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
        let explains = segs.iter().find(|s| {
            s.z.signum() == w.z.signum()
                && segs
                    .iter()
                    .filter(|o| dim(&o.segment) == dim(&s.segment))
                    .count()
                    == 1
                && rest_unchanged(&w.metric, &s.segment, cur, base, ctx)
        });
        if let Some(s) = explains {
            let whole = json!({"metric": w.metric, "title": w.title,
                "z": (w.z * 100.0).round() / 100.0, "statistics": w.facts});
            explained.insert(w.metric.clone(), (s.segment.clone(), whole));
        }
    }
    if explained.is_empty() {
        return fs;
    }
    fs.into_iter()
        .filter(|f| !(f.segment.is_empty() && explained.contains_key(&f.metric)))
        .map(|mut f| {
            if let Some((seg, whole)) = explained.get(&f.metric) {
                if *seg == f.segment {
                    if let Some(o) = f.facts.as_object_mut() {
                        o.insert("explains_whole".into(), whole.clone());
                    }
                }
            }
            f
        })
        .collect()
}

/// Whether all traffic without `seg` shows no change on `metric`: the rest,
/// tested against its own baseline like any segment, stays under
/// [`REST_MAX_Z`].
fn rest_unchanged(metric: &str, seg: &str, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> bool {
    let key: Key = (metric.to_string(), REST.to_string());
    let whole_key: Key = (metric.to_string(), String::new());
    let seg_key: Key = (metric.to_string(), seg.to_string());
    let rest = |st: &Stats| -> Stats {
        let mut out = Stats {
            sessions: st.sessions,
            days: st.days,
            ..Stats::default()
        };
        if let Some(w) = st.cells.get(&whole_key) {
            let s = st.cells.get(&seg_key).copied().unwrap_or_default();
            out.cells.insert(
                key.clone(),
                Cell {
                    k: (w.k - s.k).max(0.0),
                    n: (w.n - s.n).max(0.0),
                },
            );
        }
        out
    };
    let cur_rest = rest(cur);
    let base_rest: Vec<Stats> = base.iter().map(|b| rest(b)).collect();
    let base_refs: Vec<&Stats> = base_rest.iter().collect();
    let season_cur: Vec<(Weekday, Stats)> = ctx
        .season
        .as_ref()
        .map(|s| s.cur.iter().map(|(w, st)| (*w, rest(st))).collect())
        .unwrap_or_default();
    // The days left out of the whole's baseline (earlier incidents) are
    // left out of the rest's too.
    let flagged: Flagged = ctx
        .flagged
        .and_then(|f| f.get(&whole_key))
        .map(|days| HashMap::from([(key.clone(), days.clone())]))
        .unwrap_or_default();
    let ctx2 = ctx.with(
        ctx.season.as_ref().map(|s| Season {
            base: s.base.clone(),
            base_days: s.base_days.clone(),
            cur: season_cur.iter().map(|(w, st)| (*w, st)).collect(),
        }),
        Some(&flagged),
    );
    test_metric(&key, &cur_rest, &base_refs, &ctx2).is_none_or(|f| f.z.abs() < REST_MAX_Z)
}
