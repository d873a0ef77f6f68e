//! Calendar: periods (day, week, month, year, all time), weekdays and the
//! day numbers the tables store.

use super::*;

pub(super) fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

/// A period of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// 'day', 'week', 'month', 'year' or 'all'.
    pub kind: &'static str,
    /// First day.
    pub start: NaiveDate,
    /// Day after the last.
    pub end: NaiveDate,
}

impl Period {
    pub(super) fn day(d: NaiveDate) -> Period {
        Period {
            kind: "day",
            start: d,
            end: d + Days::new(1),
        }
    }

    pub(super) fn week(d: NaiveDate) -> Period {
        let start = d - Days::new(u64::from(d.weekday().num_days_from_monday()));
        Period {
            kind: "week",
            start,
            end: start + Days::new(7),
        }
    }

    pub(super) fn month(d: NaiveDate) -> Period {
        let start = d.with_day(1).unwrap_or(d);
        Period {
            kind: "month",
            start,
            end: start + Months::new(1),
        }
    }

    pub(super) fn year(d: NaiveDate) -> Period {
        let start = NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d);
        Period {
            kind: "year",
            start,
            end: start + Months::new(12),
        }
    }

    pub(super) fn phrase(&self) -> String {
        match self.kind {
            "day" => format!("on {}", self.start),
            "week" => format!("in the week of {}", self.start),
            "month" => format!("in {}", self.start.format("%B %Y")),
            "year" => format!("in {}", self.start.year()),
            _ => "over all time".into(),
        }
    }

    /// The previous `n` periods of the same kind (nearest first).
    pub(super) fn previous(&self, n: usize) -> Vec<Period> {
        let mut out = Vec::new();
        let mut cur = *self;
        for _ in 0..n {
            let p = match cur.kind {
                "day" => Period::day(cur.start - Days::new(1)),
                "week" => Period::week(cur.start - Days::new(7)),
                "month" => Period::month(cur.start - Months::new(1)),
                _ => return out,
            };
            out.push(p);
            cur = p;
        }
        out
    }
}

/// The weekdays of a baseline, and of the days the current figures cover,
/// for a baseline adjusted to the current span's weekday mix.
pub(super) struct Season<'a> {
    /// Weekday of each baseline entry (aligned with the baseline).
    pub(super) base: Vec<Weekday>,
    /// Date of each baseline entry (aligned with the baseline).
    pub(super) base_days: Vec<NaiveDate>,
    /// The current span's days: weekday and statistics.
    pub(super) cur: Vec<(Weekday, &'a Stats)>,
}

pub(super) fn wd_index(w: Weekday) -> usize {
    w.num_days_from_monday() as usize
}

/// A date read back as days since the epoch (Arrow's JSON writes text).
pub(super) fn de_days<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<i32, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .map(|x| x as i32)
            .ok_or_else(|| serde::de::Error::custom("bad date")),
        Value::String(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
            .map(days_from_date)
            .map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("bad date {other}"))),
    }
}

/// A timestamp read back as microseconds.
pub(super) fn de_micros<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(with = "crow_lake::batch::ts_micros")] DateTime<Utc>);
    W::deserialize(d).map(|w| w.0.timestamp_micros())
}

/// The date of a stored day (1970-01-01 for one beyond chrono's range).
pub(super) fn date_of(days: i32) -> NaiveDate {
    date_from_days(days).unwrap_or_default()
}

/// "on 2026-11-25", "from 2026-11-25 to 2026-11-27" (`[a, b)`).
pub(super) fn span_phrase(a: NaiveDate, b: NaiveDate) -> String {
    let last = b.pred_opt().unwrap_or(a);
    if last <= a {
        format!("on {a}")
    } else {
        format!("from {a} to {last}")
    }
}
