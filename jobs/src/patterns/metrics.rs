//! Metrics: a day's sessions read into [`Sess`], counted into [`Stats`]
//! (volume, funnel, transitions, errors, products) per segment, and what
//! each metric is (its kind, unit and worth).

use super::*;

/// The funnel: each step's short name (in metric names) and its event.
pub(super) const STEPS: [(&str, &str); 5] = [
    ("view", SegmentEvent::ProductViewed.as_str()),
    ("cart", SegmentEvent::ProductAdded.as_str()),
    ("checkout", SegmentEvent::CheckoutStarted.as_str()),
    ("payment", SegmentEvent::PaymentInfoEntered.as_str()),
    ("order", SegmentEvent::OrderCompleted.as_str()),
];

/// A session as the patterns job sees it.
#[derive(Debug, Clone)]
pub(super) struct Sess {
    pub(super) id: String,
    pub(super) day: NaiveDate,
    visitor: Option<String>,
    pub(super) segments: Vec<String>,
    kinds: Vec<String>,
    viewed: Vec<String>,
    pub(super) bought: Vec<String>,
    pub(super) steps: [bool; 5],
    /// Failure events with the funnel step reached before each (index
    /// into [`STEPS`]; None before the funnel).
    pub(super) failures: Vec<(String, Option<usize>)>,
    /// Revenue of the session's orders, when they carried one.
    pub(super) revenue: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SessionIn {
    pub(super) org_id: String,
    pub(super) session_id: String,
    pub(super) channel: String,
    pub(super) session_date: String,
    pub(super) visitor_id: Option<String>,
    pub(super) device_type: Option<String>,
    pub(super) traffic_source: Option<String>,
    pub(super) is_returning: Option<bool>,
    pub(super) timeline: String,
}

/// The conversion from funnel step `from` to step `to` (indexes into
/// [`STEPS`]).
fn funnel(from: usize, to: usize) -> Metric {
    Metric::Funnel {
        from: STEPS[from].0.into(),
        to: STEPS[to].0.into(),
    }
}

/// The funnel step a failure occurs at, as stored in `error_at:` metrics.
fn step_key(step: Option<usize>) -> &'static str {
    step.and_then(|i| STEPS.get(i)).map_or("start", |s| s.0)
}

/// The failing events of a segment (or, with `only`, of one event) and the
/// steps they occur at, most sessions first.
pub(super) fn failing_events(
    cur: &Stats,
    seg: &str,
    only: Option<&str>,
) -> Vec<(String, String, f64)> {
    let mut out: Vec<(String, String, f64)> = cur
        .cells
        .iter()
        .filter(|((_, s), _)| s == seg)
        .filter_map(|((m, _), c)| {
            let Ok(Metric::ErrorAt { event, step }) = m.parse() else {
                return None;
            };
            only.is_none_or(|o| o == event)
                .then_some((event, step, c.k))
        })
        .collect();
    out.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| a.1.cmp(&b.1))
    });
    out
}

pub(super) fn is_failure(kind: &str) -> bool {
    let k = kind.to_lowercase();
    k.contains("fail") || k.contains("error") || k.contains("declin")
}

/// The segments of a session: a web session's device type, traffic
/// source and new vs returning visitor (those it has), another channel's
/// session its channel.
fn segments_of(r: &SessionIn) -> Vec<String> {
    let mut segments = Vec::new();
    if r.channel == "web" {
        if let Some(d) = r.device_type.as_ref().filter(|d| !d.is_empty()) {
            segments.push(format!("device_type={d}"));
        }
        if let Some(s) = r.traffic_source.as_ref().filter(|s| !s.is_empty()) {
            segments.push(format!("traffic_source={s}"));
        }
        if let Some(ret) = r.is_returning {
            segments.push(format!(
                "visitor_type={}",
                if ret { "returning" } else { "new" }
            ));
        }
    } else {
        segments.push(format!("channel={}", r.channel));
    }
    segments
}

impl Sess {
    /// A session as the metrics count it. A row that does not read (its
    /// date or its timeline) is an error naming the session: counting it
    /// as an empty session, or leaving it out, would change every figure
    /// of its day without a word.
    pub(super) fn from_row(r: SessionIn) -> Result<Sess> {
        let day = NaiveDate::parse_from_str(&r.session_date, "%Y-%m-%d").map_err(|e| {
            Error::Corrupt(format!(
                "session {}: session_date `{}` is not a date: {e}",
                r.session_id, r.session_date
            ))
        })?;
        let timeline = crow_schemas::timeline::parse(&r.timeline)
            .map_err(|e| Error::Corrupt(format!("session {}: {e}", r.session_id)))?;
        let segments = segments_of(&r);
        let mut s = Sess {
            id: r.session_id,
            day,
            visitor: r.visitor_id,
            segments,
            kinds: Vec::with_capacity(timeline.len()),
            viewed: Vec::new(),
            bought: Vec::new(),
            steps: [false; 5],
            failures: Vec::new(),
            revenue: None,
        };
        let mut added = Vec::new();
        let mut reached: Option<usize> = None;
        for TimelineEntry { kind, detail, .. } in &timeline {
            let first = detail.split_whitespace().next().unwrap_or("").to_string();
            match SegmentEvent::from_name(kind) {
                Some(SegmentEvent::ProductViewed)
                    if !first.is_empty() && !s.viewed.contains(&first) =>
                {
                    s.viewed.push(first)
                }
                Some(SegmentEvent::ProductAdded)
                    if !first.is_empty() && !added.contains(&first) =>
                {
                    added.push(first)
                }
                _ => {}
            }
            for (i, (_, name)) in STEPS.iter().enumerate() {
                if kind == name {
                    s.steps[i] = true;
                    reached = Some(reached.map_or(i, |r| r.max(i)));
                }
            }
            if is_failure(kind) {
                s.failures.push((kind.clone(), reached));
            }
            // "order o-1 249.00": the order's revenue, when the event had one.
            if kind == SegmentEvent::OrderCompleted.as_str() {
                if let Some(v) = detail
                    .strip_prefix("order ")
                    .and_then(|d| d.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                {
                    s.revenue = Some(s.revenue.unwrap_or(0.0) + v);
                }
            }
            s.kinds.push(kind.clone());
        }
        if s.steps[4] {
            s.bought = added;
        }
        Ok(s)
    }

    fn loop_kind(&self) -> Option<&str> {
        let mut run = 1;
        for w in self.kinds.windows(2) {
            if w[0] == w[1] && w[0] != "page" && w[0] != "screen" {
                run += 1;
                if run >= 3 {
                    return Some(&w[1]);
                }
            } else {
                run = 1;
            }
        }
        None
    }
}

/// Counts (k) or rates (k of n) of one metric in one segment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cell {
    pub(super) k: f64,
    pub(super) n: f64,
}

pub(super) type Key = (String, String);

/// One period's metrics, with sample sessions (hits, misses) per metric.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) cells: HashMap<Key, Cell>,
    pub(super) samples: HashMap<Key, (Vec<String>, Vec<String>)>,
    pub(super) sessions: u64,
    /// Days with data merged into these stats (counts are compared per day).
    pub(super) days: f64,
    /// When set, only these metrics are kept (and only the work they need
    /// is done); when not, every metric.
    pub(super) only: Option<Arc<Only>>,
}

/// The metrics [`Stats::of_day_only`] counts: the keys asked for (with what
/// they are computed from) and their families, so whole groups of metrics
/// nobody asked for are not even formed. Each metric is counted by the
/// same code either way, so its figures are the same.
#[derive(Debug, Default)]
pub(super) struct Only {
    pub(super) keys: HashSet<Key>,
    /// `event:`, `funnel:`, `sessions`, … (the asked metrics'
    /// [`Metric::family`]; a name that is no metric has none).
    families: HashSet<String>,
    /// Whether any key is of a segment (else only all traffic is counted).
    segmented: bool,
}

impl Only {
    pub(super) fn new(metrics: &[Key]) -> Only {
        let mut o = Only::default();
        for (m, seg) in metrics {
            if let Ok(metric) = m.parse::<Metric>() {
                o.families.insert(metric.family().into());
                // A transition is a rate of the transitions out of its source.
                if let Metric::Transition { from, .. } = metric {
                    let base = Metric::TransitionsFrom(from);
                    o.families.insert(base.family().into());
                    o.keys.insert((base.to_string(), seg.clone()));
                }
            }
            o.segmented |= !seg.is_empty();
            o.keys.insert((m.clone(), seg.clone()));
        }
        o
    }
}

pub(super) fn is_count(metric: &str) -> bool {
    matches!(
        metric.parse(),
        Ok(Metric::Sessions | Metric::Visitors | Metric::Event(_) | Metric::Error(_))
    )
}

impl Stats {
    pub(super) fn add(
        &mut self,
        metric: String,
        seg: &str,
        k: f64,
        n: f64,
        sample: Option<(&str, bool)>,
    ) {
        let key = (metric, seg.to_string());
        if self.only.as_ref().is_some_and(|o| !o.keys.contains(&key)) {
            return;
        }
        let c = self.cells.entry(key.clone()).or_default();
        c.k += k;
        c.n += n;
        if let Some((id, hit)) = sample {
            let s = self.samples.entry(key).or_default();
            let v = if hit { &mut s.0 } else { &mut s.1 };
            if v.len() < 5 {
                v.push(id.to_string());
            }
        }
    }

    pub(super) fn merge(&mut self, other: &Stats) {
        self.sessions += other.sessions;
        self.days += other.days;
        for (k, c) in &other.cells {
            let e = self.cells.entry(k.clone()).or_default();
            e.k += c.k;
            e.n += c.n;
        }
        for (k, (h, m)) in &other.samples {
            let e = self.samples.entry(k.clone()).or_default();
            for x in h {
                if e.0.len() < 5 {
                    e.0.push(x.clone());
                }
            }
            for x in m {
                if e.1.len() < 5 {
                    e.1.push(x.clone());
                }
            }
        }
    }

    pub(super) fn of_day(sessions: &[&Sess]) -> Stats {
        Self::of_day_only(sessions, None)
    }

    /// [`Stats::of_day`], keeping only the metrics of `only` (all when
    /// None) and skipping the work of the families it does not name.
    pub(super) fn of_day_only(sessions: &[&Sess], only: Option<Arc<Only>>) -> Stats {
        let w = Wants::of(only.as_deref());
        let mut st = Stats {
            sessions: sessions.len() as u64,
            days: 1.0,
            only: only.clone(),
            ..Stats::default()
        };
        let mut visitors = BTreeSet::new();
        for s in sessions {
            if let Some(v) = &s.visitor {
                visitors.insert(v.as_str());
            }
            let segs: Vec<&str> = std::iter::once("")
                .chain(
                    s.segments
                        .iter()
                        .map(String::as_str)
                        .filter(|_| w.segmented),
                )
                .collect();
            for seg in &segs {
                st.add_segment(s, seg, &w);
            }
            st.add_overall(s, &w);
        }
        st.add(
            Metric::Visitors.to_string(),
            "",
            visitors.len() as f64,
            0.0,
            None,
        );
        st.finish_rates();
        st
    }

    /// A session's metrics in one segment: sessions, funnel steps, failures
    /// (and at which step), orders and revenue.
    fn add_segment(&mut self, s: &Sess, seg: &str, w: &Wants) {
        let st = self;
        st.add(
            Metric::Sessions.to_string(),
            seg,
            1.0,
            0.0,
            Some((&s.id, true)),
        );
        // Funnel steps, step to step and view to order.
        for i in 0..4 {
            if w.funnel && s.steps[i] {
                let hit = s.steps[i + 1];
                st.add(
                    funnel(i, i + 1).to_string(),
                    seg,
                    f64::from(u8::from(hit)),
                    1.0,
                    Some((&s.id, hit)),
                );
            }
        }
        if w.funnel && s.steps[0] {
            let hit = s.steps[4];
            st.add(
                funnel(0, 4).to_string(),
                seg,
                f64::from(u8::from(hit)),
                1.0,
                Some((&s.id, hit)),
            );
        }
        let failed = !s.failures.is_empty();
        st.add(
            Metric::ErrorSessions.to_string(),
            seg,
            f64::from(u8::from(failed)),
            1.0,
            Some((&s.id, failed)),
        );
        // Which failure, at which step: sessions per (event, step).
        let mut at: BTreeSet<String> = BTreeSet::new();
        for (f, step) in s.failures.iter().filter(|_| w.errors_at) {
            at.insert(
                Metric::ErrorAt {
                    event: f.clone(),
                    step: step_key(*step).into(),
                }
                .to_string(),
            );
        }
        for m in at {
            st.add(m, seg, 1.0, 0.0, None);
        }
        if (w.orders || w.revenue) && s.steps[4] {
            st.add(Metric::Orders.to_string(), seg, 1.0, 0.0, None);
            // Revenue of the orders that carried one (k: the sum,
            // n: how many), and its squares (for the spread).
            if let Some(r) = s.revenue {
                st.add(Metric::Revenue.to_string(), seg, r, 1.0, None);
                st.add(Metric::RevenueSq.to_string(), seg, r * r, 1.0, None);
            }
        }
    }

    /// A session's overall-only metrics: events, failures, transitions,
    /// loops, products.
    fn add_overall(&mut self, s: &Sess, w: &Wants) {
        let st = self;
        let mut kinds_seen = BTreeSet::new();
        for k in s.kinds.iter().filter(|_| w.events || w.loops) {
            st.add(Metric::Event(k.clone()).to_string(), "", 1.0, 0.0, None);
            kinds_seen.insert(k.as_str());
        }
        for (f, _) in s.failures.iter().filter(|_| w.errors) {
            let m = Metric::Error(f.clone()).to_string();
            st.add(m, "", 1.0, 0.0, Some((&s.id, true)));
        }
        for pair in s.kinds.windows(2).filter(|_| w.transitions) {
            if pair[0] == pair[1] {
                continue;
            }
            // Every transition out of pair[0] counts toward its base.
            let transition = Metric::Transition {
                from: pair[0].clone(),
                to: pair[1].clone(),
            };
            st.add(transition.to_string(), "", 1.0, 0.0, Some((&s.id, true)));
            let base = Metric::TransitionsFrom(pair[0].clone());
            st.add(base.to_string(), "", 1.0, 0.0, None);
        }
        let looped = if w.loops { s.loop_kind() } else { None };
        for k in kinds_seen.into_iter().filter(|_| w.loops) {
            if k == "page" || k == "screen" {
                continue;
            }
            let hit = looped == Some(k);
            st.add(
                Metric::Loop(k.to_string()).to_string(),
                "",
                f64::from(u8::from(hit)),
                1.0,
                Some((&s.id, hit)),
            );
        }
        for p in s.viewed.iter().filter(|_| w.products) {
            st.add(
                Metric::ProductViews(p.clone()).to_string(),
                "",
                1.0,
                0.0,
                Some((&s.id, true)),
            );
            let hit = s.bought.contains(p);
            st.add(
                Metric::ProductConversion(p.clone()).to_string(),
                "",
                f64::from(u8::from(hit)),
                1.0,
                Some((&s.id, hit)),
            );
        }
        for (i, a) in s.bought.iter().enumerate().filter(|_| w.bought) {
            st.add(Metric::Bought(a.clone()).to_string(), "", 1.0, 0.0, None);
            for b in s.bought.iter().skip(i + 1) {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                let m = Metric::Pair(x.clone(), y.clone()).to_string();
                st.add(m, "", 1.0, 0.0, Some((&s.id, true)));
            }
        }
    }

    /// Counts that are rates of another: a product's views are a share of
    /// the day's sessions (more traffic is not a product trend), a
    /// transition a rate of its source event.
    fn finish_rates(&mut self) {
        let st = self;
        for ((m, _), c) in st.cells.iter_mut() {
            if let Ok(Metric::ProductViews(_)) = m.parse() {
                c.n = st.sessions as f64;
            }
        }
        let froms: Vec<(Key, Cell)> = st
            .cells
            .iter()
            .filter(|((m, _), _)| matches!(m.parse(), Ok(Metric::TransitionsFrom(_))))
            .map(|(k, c)| (k.clone(), *c))
            .collect();
        let mut trans: Vec<(Key, Cell)> = Vec::new();
        for ((m, seg), c) in &st.cells {
            if let Ok(Metric::Transition { from, .. }) = m.parse() {
                let base_name = Metric::TransitionsFrom(from).to_string();
                let base = froms
                    .iter()
                    .find(|((fm, _), _)| *fm == base_name)
                    .map_or(0.0, |(_, c)| c.k);
                trans.push(((m.clone(), seg.clone()), Cell { k: c.k, n: base }));
            }
        }
        for (k, c) in trans {
            st.cells.insert(k, c);
        }
    }
}

/// Which metric families a [`Stats`] computes (all without an [`Only`]).
struct Wants {
    segmented: bool,
    funnel: bool,
    errors_at: bool,
    orders: bool,
    events: bool,
    errors: bool,
    loops: bool,
    transitions: bool,
    products: bool,
    bought: bool,
    revenue: bool,
}

impl Wants {
    fn of(only: Option<&Only>) -> Wants {
        let wants = |f: &str| only.is_none_or(|o| o.families.contains(f));
        Wants {
            segmented: only.is_none_or(|o| o.segmented),
            funnel: wants("funnel:"),
            errors_at: wants("error_at:"),
            orders: wants("orders"),
            events: wants("event:"),
            errors: wants("error:"),
            loops: wants("loop:"),
            transitions: wants("transition:") || wants("transitions_from:"),
            products: wants("product_views:") || wants("product_conversion:"),
            bought: wants("bought:") || wants("pair:"),
            revenue: wants("revenue") || wants("revenue_sq"),
        }
    }
}

/// What one unit of an impact is worth when findings are ranked.
pub fn unit_weight(unit: &str) -> f64 {
    match unit {
        "orders" => 10.0,
        "sessions" | "visitors" => 1.0,
        "product views" => 0.3,
        _ => 0.1,
    }
}

/// The unit of a metric's impact.
pub(super) fn unit_of(metric: &str) -> &'static str {
    match metric.parse() {
        Ok(Metric::Visitors) => "visitors",
        Ok(Metric::Event(_) | Metric::Error(_) | Metric::Transition { .. }) => "events",
        Ok(Metric::ProductViews(_)) => "product views",
        Ok(Metric::Funnel { to, .. }) if to == "order" => "orders",
        Ok(Metric::ProductConversion(_) | Metric::Pair(..)) => "orders",
        _ => "sessions",
    }
}

/// Whether a metric is a pair of products bought together (a finding with
/// no baseline, never part of a change).
pub(super) fn is_pair(metric: &str) -> bool {
    matches!(metric.parse(), Ok(Metric::Pair(..)))
}

/// Whether a metric is tested (the others are parts of other metrics).
pub(super) fn testable(metric: &str) -> bool {
    !matches!(
        metric.parse(),
        Ok(Metric::TransitionsFrom(_)
            | Metric::Bought(_)
            | Metric::Pair(..)
            | Metric::ErrorAt { .. }
            | Metric::Orders
            | Metric::Revenue
            | Metric::RevenueSq)
    )
}

/// The kind of finding a metric's change is (`patterns.kind`).
pub(super) fn kind_of(metric: &str) -> &'static str {
    match metric.parse() {
        Ok(Metric::Sessions | Metric::Visitors | Metric::Event(_)) => "volume",
        Ok(Metric::Funnel { .. }) => "funnel",
        Ok(Metric::Transition { .. } | Metric::Loop(_)) => "transition",
        Ok(Metric::ErrorSessions | Metric::Error(_) | Metric::ErrorAt { .. }) => "errors",
        _ => "product_trend",
    }
}
