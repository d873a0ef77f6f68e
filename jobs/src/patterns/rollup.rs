//! Roll-up: the [`Finder`] that tests an organization's days and periods and
//! confirms a part's findings in its parent, and the rows it writes.

use super::*;

/// A `patterns` row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PatternRow {
    pub(super) org_id: String,
    pub(super) pattern_id: String,
    pub(super) period_kind: String,
    #[serde(deserialize_with = "de_days")]
    pub(super) period_start: i32,
    #[serde(deserialize_with = "de_days")]
    period_end: i32,
    pub(super) kind: String,
    pub(super) segment: Option<String>,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) product_ids: Vec<String>,
    pub(super) support: i64,
    pub(super) significance: Option<f64>,
    pub(super) evidence: String,
    pub(super) provider: String,
    pub(super) model: String,
    #[serde(deserialize_with = "de_micros")]
    pub(super) created_at: i64,
    /// The period is not over yet (null in rows written before the column
    /// existed).
    #[serde(default)]
    provisional: Option<bool>,
}

/// The statistical finding as a pattern row (description not yet by the
/// provider).
pub(super) fn to_row(
    org: &str,
    period: &Period,
    f: &Finding,
    sid_to_iid: &HashMap<String, String>,
    provisional: bool,
) -> PatternRow {
    let samples: Vec<&String> = f
        .samples
        .iter()
        .filter_map(|s| sid_to_iid.get(s))
        .take(5)
        .collect();
    let evidence = json!({
        "metric": f.metric,
        "segment": if f.segment.is_empty() { Value::Null } else { json!(f.segment) },
        "period": {"kind": period.kind, "start": period.start.to_string(), "end": period.end.to_string()},
        "provisional": provisional,
        "span": {"start": f.span.0.to_string(), "end": f.span.1.to_string()},
        "complete_days": (f.span.1 - f.span.0).num_days(),
        "statistics": f.facts,
        "z": (f.z * 100.0).round() / 100.0,
        "p_value": p_value(f.z),
        "impact": {"unit": f.unit, "estimate": (f.impact * 10.0).round() / 10.0,
                   "low": ((f.impact - 1.96 * f.impact_se) * 10.0).round() / 10.0,
                   "high": ((f.impact + 1.96 * f.impact_se) * 10.0).round() / 10.0},
        "sample_interaction_ids": samples,
        "sample_session_ids": f.samples.iter().take(5).collect::<Vec<_>>(),
        "from_periods": f.children,
    });
    PatternRow {
        org_id: org.to_string(),
        pattern_id: format!(
            "pat_{}",
            &sha256_hex(
                format!(
                    "{org}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
                    period.kind, period.start, f.metric, f.segment
                )
                .as_bytes()
            )[..26]
        ),
        period_kind: period.kind.to_string(),
        period_start: days_from_date(period.start),
        period_end: days_from_date(period.end),
        kind: f.kind.to_string(),
        segment: (!f.segment.is_empty()).then(|| f.segment.clone()),
        title: f.title.clone(),
        description: described(f),
        product_ids: f.product_ids.clone(),
        support: f.support,
        significance: Some((f.z.abs() * 100.0).round() / 100.0),
        evidence: evidence.to_string(),
        provider: "offline".into(),
        model: crate::ai::offline::MODEL.into(),
        created_at: Utc::now().timestamp_micros(),
        provisional: Some(provisional),
    }
}

/// A finding of a part (child period), as its parent re-tests it: which
/// metric and segment, over which days, in which direction.
#[derive(Debug, Clone)]
pub(super) struct ChildRef {
    pub(super) metric: String,
    pub(super) segment: String,
    pub(super) span: (NaiveDate, NaiveDate),
    pub(super) z: f64,
    /// "day:2026-11-25", "week:2026-11-23", …
    pub(super) label: String,
    /// A trend finding (the week to a day), not the period's own test.
    pub(super) trend: bool,
}

impl ChildRef {
    pub(super) fn of_row(r: &PatternRow) -> Option<ChildRef> {
        let ev: Value = serde_json::from_str(&r.evidence).ok()?;
        let metric = ev["metric"].as_str()?.to_string();
        let z = ev["z"].as_f64()?;
        let (ps, pe) = (date_of(r.period_start), date_of(r.period_end));
        let day = |v: &Value| {
            v.as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        };
        // Rows written before spans existed cover their whole period.
        let span = (
            day(&ev["span"]["start"]).unwrap_or(ps),
            day(&ev["span"]["end"]).unwrap_or(pe),
        );
        Some(ChildRef {
            metric,
            segment: r.segment.clone().unwrap_or_default(),
            span,
            z,
            label: format!("{}:{}", r.period_kind, ps),
            trend: ev["statistics"]["trend"].is_object(),
        })
    }
}

/// The findings of `parent`'s parts (`child_kind` periods inside it): this
/// run's where it computed them, else the table's.
pub(super) fn child_refs(
    org: &str,
    parent: &Period,
    child_kind: &str,
    existing: &[PatternRow],
    new_rows: &BTreeMap<Period, Vec<PatternRow>>,
) -> Vec<ChildRef> {
    let (ps, pe) = (days_from_date(parent.start), days_from_date(parent.end));
    let fresh: Vec<&Period> = new_rows
        .keys()
        .filter(|p| p.kind == child_kind && p.start < parent.end && p.end > parent.start)
        .collect();
    let mut out = Vec::new();
    for r in existing {
        if r.org_id == org
            && r.period_kind == child_kind
            && r.period_start < pe
            && r.period_end > ps
            && !fresh
                .iter()
                .any(|p| days_from_date(p.start) == r.period_start)
        {
            out.extend(ChildRef::of_row(r));
        }
    }
    for p in fresh {
        out.extend(new_rows[p].iter().filter_map(ChildRef::of_row));
    }
    out
}

/// One organization's complete days, and the tests over them.
pub(super) struct Finder<'a> {
    pub(super) day_stats: BTreeMap<NaiveDate, Stats>,
    pub(super) first_data: NaiveDate,
    pub(super) horizon: NaiveDate,
    pub(super) names: &'a HashMap<String, String>,
    /// False discovery rate of one period's tests.
    pub(super) fdr: f64,
    /// The organization's currency (revenue impacts), when its catalog
    /// names one.
    pub(super) currency: Option<String>,
    /// Days with a finding, per metric and segment (days are computed in
    /// order; earlier days' findings come from the table).
    pub(super) flagged: std::cell::RefCell<Flagged>,
    /// Days with a finding of the day's own test (not a trend's), in any
    /// metric or segment: incidents, left out of a trend test's week and
    /// baseline (an incident seen in one segment echoes in others).
    pub(super) own_flagged: std::cell::RefCell<BTreeSet<NaiveDate>>,
}

impl<'a> Finder<'a> {
    /// Per-day statistics of every complete day from the first day with
    /// data (a day without sessions is a complete day with none).
    #[cfg(test)]
    pub(super) fn new(
        sessions: &[Sess],
        first_data: NaiveDate,
        horizon: NaiveDate,
        names: &'a HashMap<String, String>,
        fdr: f64,
    ) -> Finder<'a> {
        let mut per_day: BTreeMap<NaiveDate, Vec<&Sess>> = BTreeMap::new();
        for s in sessions.iter().filter(|s| s.day < horizon) {
            per_day.entry(s.day).or_default().push(s);
        }
        let days = per_day
            .into_iter()
            .map(|(d, v)| (d, Stats::of_day(&v)))
            .collect();
        Self::of_days(days, first_data, horizon, names, fdr)
    }

    /// A finder over days' statistics counted before (`daily_metrics`):
    /// every complete day from the first day with data, a day missing
    /// from `days` being a complete day without sessions.
    pub(super) fn of_days(
        mut days: BTreeMap<NaiveDate, Stats>,
        first_data: NaiveDate,
        horizon: NaiveDate,
        names: &'a HashMap<String, String>,
        fdr: f64,
    ) -> Finder<'a> {
        let day_stats = first_data
            .iter_days()
            .take_while(|d| *d < horizon)
            .map(|d| {
                let st = days.remove(&d).unwrap_or_else(|| Stats {
                    days: 1.0,
                    ..Stats::default()
                });
                (d, st)
            })
            .collect();
        Finder {
            day_stats,
            first_data,
            horizon,
            names,
            fdr,
            currency: None,
            flagged: std::cell::RefCell::new(HashMap::new()),
            own_flagged: std::cell::RefCell::new(BTreeSet::new()),
        }
    }

    /// Whether a baseline starting on `from` can compare new vs returning
    /// visitors.
    pub(super) fn visitor_type(&self, from: NaiveDate) -> bool {
        from >= self.first_data + Days::new(WARM_UP_DAYS)
    }

    /// The complete days `[a, b)` pooled; None unless every one of them is
    /// complete and on or after the first day with data.
    fn span(&self, a: NaiveDate, b: NaiveDate) -> Option<Stats> {
        if a < self.first_data || b > self.horizon || a >= b {
            return None;
        }
        let mut st = Stats::default();
        for (_, s) in self.day_stats.range(a..b) {
            st.merge(s);
        }
        Some(st)
    }

    /// Every metric of `cur` (and every count of the baseline) tested, the
    /// tests corrected together (Benjamini–Hochberg at the job's FDR).
    fn findings(&self, cur: &Stats, base: &[&Stats], ctx: &TestCtx) -> Vec<Finding> {
        let mut keys: BTreeSet<&Key> = cur.cells.keys().collect();
        for b in base {
            for k in b.cells.keys() {
                if is_count(&k.0) {
                    keys.insert(k);
                }
            }
        }
        let mut fs: Vec<Finding> = keys
            .into_iter()
            .filter_map(|k| test_metric(k, cur, base, ctx))
            .collect();
        fs.extend(pairs(cur, ctx));
        let tests = fs.len();
        let fs = benjamini_hochberg(fs, self.fdr, tests);
        segment_explains_whole(one_fact(fs), cur, base, ctx)
    }

    /// A complete day against the 28 days before it.
    pub(super) fn day(&self, p: &Period) -> Vec<Finding> {
        let Some(cur) = self.day_stats.get(&p.start) else {
            return Vec::new();
        };
        let (base, base_days): (Vec<&Stats>, Vec<NaiveDate>) = p
            .previous(BASELINE_DAYS as usize)
            .iter()
            .filter_map(|b| Some((self.day_stats.get(&b.start)?, b.start)))
            .unzip();
        let flagged = self.flagged.borrow();
        let ctx = TestCtx {
            when: p.phrase(),
            baseline: format!("over the previous {BASELINE_DAYS} days"),
            per_day: false,
            min_base: 7,
            span: (p.start, p.end),
            names: self.names,
            visitor_type: self.visitor_type(p.start - Days::new(BASELINE_DAYS as u64)),
            season: Some(Season {
                base: base_days.iter().map(Datelike::weekday).collect(),
                base_days,
                cur: vec![(p.start.weekday(), cur)],
            }),
            flagged: Some(&flagged),
        };
        let mut fs = self.findings(cur, &base, &ctx);
        drop(flagged);
        // Slow changes the day alone does not show: the week to the day
        // (a day with findings of its own is an incident, not part of it).
        if !fs.is_empty() {
            self.own_flagged.borrow_mut().insert(p.start);
        }
        let trend = self.trend(p, &fs);
        fs.extend(trend);
        let fs = top(fs);
        // Exactly the findings written: a later run that reads this day
        // from the table leaves out the same baseline days.
        self.flag(p.start, &fs);
        fs
    }

    /// Remember the day's findings: their metric and segment leave this
    /// day out of later baselines (an incident is not what is normal).
    fn flag(&self, day: NaiveDate, fs: &[Finding]) {
        let mut flagged = self.flagged.borrow_mut();
        let mut own = self.own_flagged.borrow_mut();
        for f in fs {
            if f.facts.get("trend").is_none() {
                own.insert(day);
            }
            flagged
                .entry((f.metric.clone(), f.segment.clone()))
                .or_default()
                .insert(day);
        }
    }

    /// Remember a day's findings already in the table (days this run does
    /// not compute).
    pub(super) fn flag_rows(&self, rows: &[PatternRow]) {
        let mut flagged = self.flagged.borrow_mut();
        let mut own = self.own_flagged.borrow_mut();
        for r in rows.iter().filter(|r| r.period_kind == "day") {
            if let Some(c) = ChildRef::of_row(r) {
                let day = date_of(r.period_start);
                if !c.trend {
                    own.insert(day);
                }
                flagged
                    .entry((c.metric, c.segment))
                    .or_default()
                    .insert(day);
            }
        }
    }

    /// A week's or month's own test: its complete days pooled against the
    /// same elapsed days (the same weekdays, the same first days of the
    /// month) of the periods before it.
    pub(super) fn own(&self, p: &Period) -> Vec<Finding> {
        let end = p.end.min(self.horizon);
        let elapsed = (end - p.start).num_days();
        if p.start < self.first_data || elapsed <= 0 {
            return Vec::new();
        }
        let Some(cur) = self.span(p.start, end) else {
            return Vec::new();
        };
        let (n, min_base, unit) = match p.kind {
            "week" => (4, 2, "week"),
            _ => (3, 1, "month"),
        };
        let mut earliest = p.start;
        let base: Vec<Stats> = p
            .previous(n)
            .iter()
            .filter_map(|b| {
                let st = self.span(b.start, (b.start + Days::new(elapsed as u64)).min(b.end))?;
                earliest = earliest.min(b.start);
                Some(st)
            })
            .collect();
        let base_refs: Vec<&Stats> = base.iter().collect();
        let complete = end >= p.end;
        let previous = plural(base.len(), unit);
        let last = end.pred_opt().unwrap_or(p.start);
        let baseline = match (unit, complete) {
            (_, true) => format!("over the previous {previous}"),
            ("week", false) => format!(
                "over the same weekdays ({}–{}) of the previous {previous}",
                p.start.format("%A"),
                last.format("%A")
            ),
            _ => format!("over the same first {elapsed} days of the previous {previous}"),
        };
        let when = if complete {
            p.phrase()
        } else {
            format!(
                "{} (its {} so far)",
                p.phrase(),
                plural(elapsed as usize, "complete day")
            )
        };
        let ctx = TestCtx {
            when,
            baseline,
            per_day: true,
            min_base,
            span: (p.start, end),
            names: self.names,
            visitor_type: self.visitor_type(earliest),
            season: None,
            flagged: None,
        };
        self.findings(&cur, &base_refs, &ctx)
    }

    /// The parent's own evidence for the days `[a, b)` of its part: these
    /// days against the parent's other complete days and the 28 days before
    /// them (the baseline, and the test's context).
    fn confirm_ctx<'s>(
        &'s self,
        p: &Period,
        (a, b): (NaiveDate, NaiveDate),
        flagged: &'s Flagged,
    ) -> (Vec<&'s Stats>, TestCtx<'s>) {
        // The parent's own evidence: these days against the parent's
        // other complete days and the 28 days before them.
        let from = a
            .checked_sub_days(Days::new(BASELINE_DAYS as u64))
            .unwrap_or(a)
            .max(self.first_data);
        let to = p.end.min(self.horizon);
        let (base, base_days): (Vec<&Stats>, Vec<NaiveDate>) = self
            .day_stats
            .range(from..to)
            .filter(|(d, _)| **d < a || **d >= b)
            .map(|(d, s)| (s, *d))
            .unzip();
        let cur_days: Vec<(Weekday, &Stats)> = self
            .day_stats
            .range(a..b)
            .map(|(d, s)| (d.weekday(), s))
            .collect();
        let ctx = TestCtx {
            when: span_phrase(a, b),
            baseline: format!(
                "over the other complete days from {from} to {}",
                to.pred_opt().unwrap_or(to)
            ),
            per_day: true,
            min_base: 7,
            span: (a, b),
            names: self.names,
            visitor_type: self.visitor_type(from),
            season: Some(Season {
                base: base_days.iter().map(Datelike::weekday).collect(),
                base_days,
                cur: cur_days,
            }),
            flagged: Some(flagged),
        };
        (base, ctx)
    }

    /// One fact, one row, in a roll-up: an all-traffic finding and one
    /// segment's finding of the same metric, both carried up (from
    /// different parts, or one the period's own and one a part's), are told
    /// once when the rest of the traffic was flat over the all-traffic
    /// finding's days (see [`segment_explains_whole`]).
    fn explain_wholes(&self, p: &Period, fs: Vec<Finding>) -> Vec<Finding> {
        let wholes: Vec<(String, (NaiveDate, NaiveDate))> = fs
            .iter()
            .filter(|f| f.segment.is_empty() && !is_pair(&f.metric))
            .map(|f| (f.metric.clone(), f.span))
            .collect();
        let mut fs = fs;
        let flagged = self.flagged.borrow();
        for (metric, span) in wholes {
            let Some(cur) = self.span(span.0, span.1) else {
                continue;
            };
            let (base, ctx) = self.confirm_ctx(p, span, &flagged);
            let (same, rest): (Vec<Finding>, Vec<Finding>) = fs
                .into_iter()
                .partition(|f| f.metric == metric && !is_pair(&f.metric));
            let mut same = segment_explains_whole(same, &cur, &base, &ctx);
            same.extend(rest);
            fs = same;
        }
        fs
    }

    /// The period's own findings, plus its parts' findings that the
    /// period's own data confirms (per metric and segment: the own test if
    /// it found it, else the strongest confirmation), strongest first.
    pub(super) fn merge(
        &self,
        p: &Period,
        own: Vec<Finding>,
        children: &[ChildRef],
    ) -> Vec<Finding> {
        let mut by_key: BTreeMap<Key, Finding> = BTreeMap::new();
        for f in own {
            by_key.insert((f.metric.clone(), f.segment.clone()), f);
        }
        let mut by_span: BTreeMap<(NaiveDate, NaiveDate), Vec<&ChildRef>> = BTreeMap::new();
        for c in children {
            let a = c.span.0.max(p.start).max(self.first_data);
            let b = c.span.1.min(p.end).min(self.horizon);
            if a < b && !is_pair(&c.metric) {
                by_span.entry((a, b)).or_default().push(c);
            }
        }
        let flagged = self.flagged.borrow();
        for (span, cs) in by_span {
            for (mut f, c) in self.confirmed(p, span, &cs, &flagged) {
                let key = (f.metric.clone(), f.segment.clone());
                f.own = false;
                f.children = vec![c.label.clone()];
                match by_key.get_mut(&key) {
                    Some(e) => {
                        let mut labels = std::mem::take(&mut e.children);
                        if !labels.contains(&c.label) {
                            labels.push(c.label.clone());
                        }
                        if !e.own && f.z.abs() > e.z.abs() {
                            *e = f;
                        }
                        e.children = labels;
                    }
                    None => {
                        by_key.insert(key, f);
                    }
                }
            }
        }
        let mut out: Vec<Finding> = by_key.into_values().collect();
        for f in &mut out {
            f.children.sort();
            f.children.dedup();
            if !f.children.is_empty() {
                f.description = format!(
                    "{} It stood out {}.",
                    f.description,
                    parts_phrase(&f.children)
                );
            }
        }
        top(self.explain_wholes(p, one_fact(out)))
    }

    /// The findings of parts `cs` over their days `[a, b)` that the
    /// parent's own data confirms: each re-tested on these days against
    /// the parent's other days (see [`Finder::confirm_ctx`]), corrected
    /// together with every metric these days could test, in the part's
    /// direction; each with the part it came from.
    fn confirmed(
        &self,
        p: &Period,
        (a, b): (NaiveDate, NaiveDate),
        cs: &[&ChildRef],
        flagged: &Flagged,
    ) -> Vec<(Finding, ChildLabel)> {
        let Some(cur) = self.span(a, b) else {
            return Vec::new();
        };
        let (base, ctx) = self.confirm_ctx(p, (a, b), flagged);
        // The confirmations are one family with every metric these
        // days could test.
        let tests = cur.cells.keys().filter(|k| testable(&k.0)).count();
        let mut tested: Vec<(Finding, &ChildRef)> = Vec::new();
        for &c in cs {
            let key = (c.metric.clone(), c.segment.clone());
            if let Some(f) = test_metric(&key, &cur, &base, &ctx) {
                tested.push((f, c));
            }
        }
        let refs: Vec<(String, String, String, f64)> = tested
            .iter()
            .map(|(f, c)| (f.metric.clone(), f.segment.clone(), c.label.clone(), c.z))
            .collect();
        let kept = benjamini_hochberg(
            tested.into_iter().map(|(f, _)| f).collect(),
            self.fdr,
            tests,
        );
        kept.into_iter()
            .filter_map(|f| {
                let c = refs
                    .iter()
                    .find(|r| r.0 == f.metric && r.1 == f.segment)
                    .map(|r| ChildLabel {
                        label: r.2.clone(),
                        z: r.3,
                    })?;
                ((f.z > 0.0) == (c.z > 0.0)).then_some((f, c))
            })
            .collect()
    }
}
