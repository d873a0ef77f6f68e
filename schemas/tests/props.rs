//! Properties of the `[schedule]` cron parser, on generated input: it never
//! panics on any text, and every schedule it parses fires strictly after
//! the instant it is asked about, at a time its fields allow (checked
//! against sets computed here from the generated fields, independently of
//! the parser), with no allowed time skipped before it.
//!
//! `Cron` does not print itself, so there is no text round trip to check.
//!
//! Bounded in time: `PROPTEST_CASES` (default 256 per property) sets the
//! number of cases.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use crow_schemas::config::cron::Cron;
use proptest::prelude::*;

/// One comma-separated part of a field: `*`, `a`, `a-b`, each optionally
/// with a step `/n`.
#[derive(Debug, Clone)]
enum Part {
    Star(Option<u32>),
    One(u32, Option<u32>),
    Range(u32, u32, Option<u32>),
}

impl Part {
    fn text(&self) -> String {
        let step = |s: &Option<u32>| s.map(|n| format!("/{n}")).unwrap_or_default();
        match self {
            Part::Star(s) => format!("*{}", step(s)),
            Part::One(a, s) => format!("{a}{}", step(s)),
            Part::Range(a, b, s) => format!("{a}-{b}{}", step(s)),
        }
    }

    /// The values this part allows in `min..=max`, by crontab(5)'s
    /// definition (`a/n` runs from `a` to the field's end).
    fn values(&self, min: u32, max: u32) -> BTreeSet<u32> {
        let (lo, hi, step) = match *self {
            Part::Star(s) => (min, max, s),
            Part::One(a, None) => (a, a, None),
            Part::One(a, Some(s)) => (a, max, Some(s)),
            Part::Range(a, b, s) => (a, b, s),
        };
        let step = u64::from(step.unwrap_or(1));
        (u64::from(lo)..=u64::from(hi))
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .filter_map(|v| u32::try_from(v).ok())
            .collect()
    }
}

/// A step: small ones, any, and ones near `u32::MAX`.
fn step() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        3 => Just(None),
        3 => (1u32..=70).prop_map(Some),
        1 => any::<u32>().prop_map(|n| Some(n.max(1))),
        1 => ((u32::MAX - 64)..=u32::MAX).prop_map(Some),
    ]
}

fn part(min: u32, max: u32) -> impl Strategy<Value = Part> {
    prop_oneof![
        step().prop_map(Part::Star),
        (min..=max, step()).prop_map(|(a, s)| Part::One(a, s)),
        (min..=max, min..=max, step()).prop_map(|(a, b, s)| Part::Range(a.min(b), a.max(b), s)),
    ]
}

/// A field: `*` alone half the time, else a list of one to three parts.
fn field(min: u32, max: u32) -> impl Strategy<Value = Vec<Part>> {
    prop_oneof![
        Just(vec![Part::Star(None)]),
        prop::collection::vec(part(min, max), 1..=3),
    ]
}

/// A generated schedule: its text and the sets each field allows.
#[derive(Debug, Clone)]
struct Schedule {
    text: String,
    seconds: BTreeSet<u32>,
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: BTreeSet<u32>,
    months: BTreeSet<u32>,
    weekdays: BTreeSet<u32>,
    dom_restricted: bool,
    dow_restricted: bool,
}

impl Schedule {
    /// Whether `t` is a firing time, by the sets alone.
    fn matches(&self, t: DateTime<Utc>) -> bool {
        let dom = self.days.contains(&t.day());
        let dow = self.weekdays.contains(&t.weekday().num_days_from_sunday());
        let day = if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        };
        t.nanosecond() == 0
            && self.seconds.contains(&t.second())
            && self.minutes.contains(&t.minute())
            && self.hours.contains(&t.hour())
            && self.months.contains(&t.month())
            && day
    }
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        prop::option::of(field(0, 59)),
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12),
        field(0, 7),
    )
        .prop_map(|(sec, min, hour, dom, month, dow)| {
            let text_of = |f: &[Part]| f.iter().map(Part::text).collect::<Vec<_>>().join(",");
            let set = |f: &[Part], lo, hi| -> BTreeSet<u32> {
                f.iter().flat_map(|p| p.values(lo, hi)).collect()
            };
            let mut fields = vec![
                text_of(&min),
                text_of(&hour),
                text_of(&dom),
                text_of(&month),
                text_of(&dow),
            ];
            if let Some(s) = &sec {
                fields.insert(0, text_of(s));
            }
            // Day of week 7 is Sunday, like 0.
            let weekdays = set(&dow, 0, 7)
                .into_iter()
                .map(|d| if d == 7 { 0 } else { d })
                .collect();
            Schedule {
                text: fields.join(" "),
                seconds: sec.as_deref().map_or_else(|| [0].into(), |s| set(s, 0, 59)),
                minutes: set(&min, 0, 59),
                hours: set(&hour, 0, 23),
                days: set(&dom, 1, 31),
                months: set(&month, 1, 12),
                weekdays,
                dom_restricted: !text_of(&dom).starts_with('*'),
                dow_restricted: !text_of(&dow).starts_with('*'),
            }
        })
}

/// An instant between 2000 and 2090, with a fraction of a second.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..3_786_825_600, 0u32..1_000_000_000).prop_map(|(s, ns)| {
        Utc.timestamp_opt(s, ns)
            .single()
            .unwrap_or(DateTime::UNIX_EPOCH)
    })
}

/// Text that looks like cron often enough to reach the field parser.
fn cronish() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[0-9*/,\\- \t]{0,40}",
        prop::collection::vec("[0-9*/,\\-]{1,12}|[0-9]{1,2}/[0-9]{9,10}", 0..8)
            .prop_map(|v| v.join(" ")),
        prop::collection::vec(
            "\\*|[0-9]{1,2}|[0-9]{1,2}-[0-9]{1,2}|[0-9*]{1,2}/[0-9]{1,10}",
            5..=6
        )
        .prop_map(|v| v.join(" ")),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_text(text in cronish(), t in instant()) {
        if let Ok(c) = Cron::parse(&text) {
            if let Some(n) = c.next_after(t) {
                prop_assert!(n > t, "`{text}`: {n} is not after {t}");
            }
        }
    }

    #[test]
    fn the_next_fire_time_is_after_the_instant_and_matches_every_field(s in schedule(), t in instant()) {
        let c = Cron::parse(&s.text).map_err(|e| TestCaseError::fail(format!("`{}`: {e}", s.text)))?;
        let Some(n) = c.next_after(t) else {
            // Never firing is only right for a schedule no day can meet
            // (such as 30 February): every month it allows is too short
            // for every day it allows, and no weekday rescues it.
            let possible = s.months.iter().any(|m| {
                let longest = match m { 2 => 29, 4 | 6 | 9 | 11 => 30, _ => 31 };
                s.days.iter().any(|d| *d <= longest)
            });
            let weekday_rescues = s.dom_restricted && s.dow_restricted && !s.weekdays.is_empty();
            prop_assert!(
                !possible && !weekday_rescues,
                "`{}` never fires after {t}, yet a day can match it", s.text
            );
            return Ok(());
        };
        prop_assert!(n > t, "`{}`: {n} is not after {t}", s.text);
        prop_assert!(s.matches(n), "`{}`: {n} does not match its fields", s.text);
        // No firing time is skipped: within three hours of `t`, every
        // whole second before `n` is checked.
        if n - t <= Duration::hours(3) {
            let mut cur = t.with_nanosecond(0).unwrap_or(t) + Duration::seconds(1);
            while cur < n {
                prop_assert!(!s.matches(cur), "`{}`: {cur} fires before {n} (after {t})", s.text);
                cur += Duration::seconds(1);
            }
        }
    }
}
