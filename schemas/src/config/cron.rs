//! A small cron expression parser: the schedules of `[schedule]`.
//!
//! Five fields, `minute hour day-of-month month day-of-week`, as in
//! crontab(5), or six with a leading `second` field (for tests and very
//! frequent jobs). Each field is `*`, a number, a range `a-b`, a step
//! `*/n`, `a-b/n` or `a/n`, or a comma-separated list of those. Day of week
//! is 0–7 (0 and 7 are Sunday). As in crontab, when both day-of-month and
//! day-of-week are restricted, a day matching either matches; a field that
//! begins with `*` (`*`, `*/2`) counts as unrestricted there, so
//! `0 0 */2 * 1` is a Monday that is also an odd day of the month, as
//! cron(8) reads it. All times are UTC.
//!
//! Ours, not a crate's, for a measured reason (issue 13 item 7): `croner`
//! 4.0.3 (six optional-seconds fields, OR of the day fields) parsed and
//! searched the same expressions from 2026-12-04 and changes meanings we
//! keep. It counts only a bare `*` as unrestricted, so `0 0 */2 * 1` fires
//! on 2026-12-05 (an odd day, a Saturday) where crontab and this module
//! wait for a Monday on an odd day (2026-12-07, 2026-12-21), and
//! `* * 10-10 4-4 */4` fires on 2027-04-01 (a Thursday in April) where
//! ours waits for a 10 April on a Sunday or Thursday (2031-04-10). It
//! refuses `a/n` steps (`5/10 * * * *`: "single number steps … are not
//! allowed"), which we accept. `0 0 30 2 *` takes it 0.58 s (a debug
//! build) to give up, searching to the year 5000 before an error; ours
//! answers `None` after one 400-year cycle. It agrees where both day fields
//! are restricted (`0 0 1 * 1`, `0 0 29 2 0`) and on seconds
//! (`0 */15 * * * *`), and it would add six crates (`croner`,
//! `derive_builder` and its two, `strum` and its macros).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc};

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    dom_restricted: bool,
    dow_restricted: bool,
}

fn field(text: &str, name: &str, min: u32, max: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    if text.is_empty() {
        return Err(format!("the {name} field is empty"));
    }
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("step `{s}` of the {name} field is not a number"))?;
                if s == 0 {
                    return Err(format!("step of the {name} field must be positive"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let num = |s: &str| -> Result<u32, String> {
            let n: u32 = s
                .parse()
                .map_err(|_| format!("`{s}` in the {name} field is not a number"))?;
            if n < min || n > max {
                return Err(format!(
                    "{n} is outside the {name} field's range {min}-{max}"
                ));
            }
            Ok(n)
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("range {a}-{b} of the {name} field is backwards"));
            }
            (a, b)
        } else {
            let a = num(range)?;
            // `a/n` means from a to the end in steps of n.
            (a, if part.contains('/') { max } else { a })
        };
        // `lo..=hi` in steps of `step`; a step past `u32::MAX` ends it
        // (wrapping round would set values below `lo`).
        for v in (lo..=hi).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
            bits |= 1 << v;
        }
    }
    // crontab(5): a day field beginning with `*` is not "restricted" for
    // the day-of-month OR day-of-week rule, even with a step.
    Ok((bits, !text.starts_with('*')))
}

impl Cron {
    /// Parse a 5- or 6-field expression.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(format!(
                    "`{expr}` has {n} fields; expected 5 (minute hour day month weekday) or 6 (with a leading second)"
                ))
            }
        };
        let (seconds, _) = field(sec, "second", 0, 59)?;
        let (minutes, _) = field(rest[0], "minute", 0, 59)?;
        let (hours, _) = field(rest[1], "hour", 0, 23)?;
        let (days, dom_restricted) = field(rest[2], "day-of-month", 1, 31)?;
        let (months, _) = field(rest[3], "month", 1, 12)?;
        let (mut weekdays, dow_restricted) = field(rest[4], "day-of-week", 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            dom_restricted,
            dow_restricted,
        })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first time matching the schedule strictly after `t`; None if
    /// the schedule never fires (e.g. 31 February).
    ///
    /// The search spans one whole Gregorian cycle (400 years, after which
    /// dates and weekdays repeat), so None is exact: a day of the month
    /// that must also fall on a given weekday (`0 0 10 4 */4`: 10 April on
    /// a Sunday or Thursday) can be six or more years away, and 29 February
    /// on a given weekday up to 40. Months the schedule excludes are
    /// skipped whole, so even a schedule that never fires costs a few
    /// thousand steps.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        const CYCLE_YEARS: i32 = 400;
        let t = t.with_nanosecond(0)? + Duration::seconds(1);
        let mut day = t.date_naive();
        let mut from = t.time();
        let end = NaiveDate::from_ymd_opt(day.year().checked_add(CYCLE_YEARS + 1)?, 1, 1)?;
        while day < end {
            if self.months & (1 << day.month()) == 0 {
                // The first day of the next month.
                let (y, m) = if day.month() == 12 {
                    (day.year() + 1, 1)
                } else {
                    (day.year(), day.month() + 1)
                };
                day = NaiveDate::from_ymd_opt(y, m, 1)?;
                from = NaiveTime::MIN;
                continue;
            }
            if self.day_matches(day) {
                if let Some(time) = self.first_time_from(from) {
                    return Some(day.and_time(time).and_utc());
                }
            }
            day = day.succ_opt()?;
            from = NaiveTime::MIN;
        }
        None
    }

    /// The latest time matching the schedule at or before `t`, searching
    /// back from `since` (exclusive). None when none lies in `(since, t]`.
    pub fn last_in(&self, since: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut last = None;
        let mut cur = since;
        while let Some(n) = self.next_after(cur) {
            if n > t {
                break;
            }
            last = Some(n);
            cur = n;
        }
        last
    }

    fn first_time_from(&self, from: NaiveTime) -> Option<NaiveTime> {
        for h in from.hour()..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let m0 = if h == from.hour() { from.minute() } else { 0 };
            for m in m0..60 {
                if self.minutes & (1 << m) == 0 {
                    continue;
                }
                let s0 = if h == from.hour() && m == from.minute() {
                    from.second()
                } else {
                    0
                };
                for s in s0..60 {
                    if self.seconds & (1 << s) != 0 {
                        return NaiveTime::from_hms_opt(h, m, s);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    /// Our answers the module doc sets against croner's.
    #[test]
    fn the_answers_the_module_doc_quotes() {
        let from = at(2026, 12, 4, 0, 0, 0);
        let c = Cron::parse("0 0 */2 * 1").unwrap();
        let first = c.next_after(from);
        assert_eq!(first, Some(at(2026, 12, 7, 0, 0, 0)));
        assert_eq!(
            first.and_then(|t| c.next_after(t)),
            Some(at(2026, 12, 21, 0, 0, 0))
        );
        assert_eq!(
            Cron::parse("* * 10-10 4-4 */4").unwrap().next_after(from),
            Some(at(2031, 4, 10, 0, 0, 0))
        );
        assert_eq!(
            Cron::parse("5/10 * * * *").unwrap().next_after(from),
            Some(at(2026, 12, 4, 0, 5, 0))
        );
    }

    #[test]
    fn next_times() {
        let c = Cron::parse("*/5 * * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 10, 3, 7)),
            Some(at(2026, 3, 10, 10, 5, 0))
        );
        assert_eq!(
            c.next_after(at(2026, 3, 10, 10, 5, 0)),
            Some(at(2026, 3, 10, 10, 10, 0))
        );
        let c = Cron::parse("15 0 * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 0, 15, 0)),
            Some(at(2026, 3, 11, 0, 15, 0))
        );
        let c = Cron::parse("0 * * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 12, 31, 23, 0, 0)),
            Some(at(2027, 1, 1, 0, 0, 0))
        );
        let c = Cron::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 10, 3, 7)),
            Some(at(2026, 3, 10, 10, 3, 10))
        );
        // Mondays at 06:30 (7 is Sunday too).
        let c = Cron::parse("30 6 * * 1").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 0, 0, 0)),
            Some(at(2026, 3, 16, 6, 30, 0))
        );
        let c = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 0, 0, 0)),
            Some(at(2026, 3, 15, 0, 0, 0))
        );
        // Day of month OR day of week when both are restricted.
        let c = Cron::parse("0 0 1 * 1").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 0, 0, 0)),
            Some(at(2026, 3, 16, 0, 0, 0))
        );
        // A field beginning with `*` is unrestricted for that rule, step or
        // not (crontab(5)): odd days that are Mondays, not either.
        let c = Cron::parse("0 0 */2 * 1").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 0, 0, 0)),
            Some(at(2026, 3, 23, 0, 0, 0))
        );
        // 10 April on a Sunday or Thursday: after 2081 (a Thursday), the
        // next is 2087, beyond any few-year search window.
        let c = Cron::parse("* * 10 4 */4").unwrap();
        assert_eq!(
            c.next_after(at(2081, 4, 10, 23, 59, 0)),
            Some(at(2087, 4, 10, 0, 0, 0))
        );
        // 29 February on a Sunday (`*/7` is 0 and 7, both Sunday): 2032,
        // then 2060.
        let c = Cron::parse("0 0 29 2 */7").unwrap();
        assert_eq!(
            c.next_after(at(2032, 3, 1, 0, 0, 0)),
            Some(at(2060, 2, 29, 0, 0, 0))
        );
        // Never: 30 February.
        assert_eq!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at(2026, 1, 1, 0, 0, 0)),
            None
        );
        assert_eq!(
            Cron::parse("0 0 31 2 *")
                .unwrap()
                .next_after(at(2026, 1, 1, 0, 0, 0)),
            None
        );
        let c = Cron::parse("0 9-17/4,23 * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 10, 13, 0, 0)),
            Some(at(2026, 3, 10, 17, 0, 0))
        );
        assert_eq!(
            c.last_in(at(2026, 3, 10, 0, 0, 0), at(2026, 3, 10, 22, 0, 0)),
            Some(at(2026, 3, 10, 17, 0, 0))
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "1,,2 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
