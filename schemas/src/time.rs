//! The one parser of the times users give CROW: REST filters (`from`,
//! `to`), export requests, `crow export --from/--to`, and time travel
//! (`as_of`, `--as-of`). Every input accepts the same forms, and a refusal
//! names the field and those forms.
//!
//! Also the one home of "days since the epoch", the value of every `DATE`
//! column (Arrow `Date32`): [`days_from_date`], [`days_from_time`],
//! [`days_from_micros`] and back with [`date_from_days`].

use chrono::{DateTime, NaiveDate, Utc};

/// The accepted forms, as said in errors and docs.
pub const ACCEPTED_FORMS: &str =
    "an RFC 3339 time such as 2026-11-25T08:00:00Z or a date such as 2026-11-25 (midnight UTC)";

/// A time that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// The field or flag the value was given for, e.g. `from` or `--as-of`.
    pub field: String,
    /// The value as given.
    pub value: String,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` {:?} is not a time: give {ACCEPTED_FORMS}",
            self.field, self.value
        )
    }
}

impl std::error::Error for TimeError {}

/// Read `value`, given for `field`: an RFC 3339 time (any offset, turned
/// into UTC) or a `YYYY-MM-DD` date (its midnight UTC).
pub fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, TimeError> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| TimeError {
            field: field.to_string(),
            value: value.to_string(),
        })
}

/// Days since 1970-01-01 of `d` (a `DATE` column's value).
pub fn days_from_date(d: NaiveDate) -> i32 {
    // Every `NaiveDate` is within ±262,143 years: its day count fits an i32.
    d.signed_duration_since(NaiveDate::default()).num_days() as i32
}

/// Days since 1970-01-01 of `t`'s UTC date.
pub fn days_from_time(t: DateTime<Utc>) -> i32 {
    days_from_date(t.date_naive())
}

/// Days since 1970-01-01 of the UTC date of a timestamp in microseconds.
pub fn days_from_micros(micros: i64) -> i32 {
    micros.div_euclid(86_400_000_000) as i32
}

/// The date `days` after 1970-01-01 (`None` beyond chrono's range).
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(days)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_the_epoch_agree_from_dates_times_and_micros() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("date");
        assert_eq!(days_from_date(epoch), 0);
        let d = NaiveDate::from_ymd_opt(2026, 11, 25).expect("date");
        assert_eq!(days_from_date(d), 20_782);
        assert_eq!(date_from_days(20_782), Some(d));
        let before = NaiveDate::from_ymd_opt(1969, 12, 31).expect("date");
        assert_eq!(days_from_date(before), -1);
        for t in [
            "2026-11-25T00:00:00Z",
            "2026-11-25T23:59:59.999999Z",
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
        ] {
            let t = parse_time("t", t).expect("time");
            assert_eq!(days_from_time(t), days_from_micros(t.timestamp_micros()));
            assert_eq!(days_from_time(t), t.timestamp().div_euclid(86_400) as i32);
            assert_eq!(date_from_days(days_from_time(t)), Some(t.date_naive()));
        }
    }

    #[test]
    fn times_and_dates_are_read_and_refusals_name_the_field() {
        let day = parse_time("from", "2026-11-25").expect("date");
        assert_eq!(day.to_rfc3339(), "2026-11-25T00:00:00+00:00");
        let t = parse_time("from", "2026-11-25T09:30:00+01:00").expect("time");
        assert_eq!(t.to_rfc3339(), "2026-11-25T08:30:00+00:00");
        let e = parse_time("as_of", "soon").expect_err("refused");
        let msg = e.to_string();
        assert!(msg.starts_with("`as_of` \"soon\""), "{msg}");
        assert!(
            msg.contains("RFC 3339") && msg.contains("2026-11-25"),
            "{msg}"
        );
        assert!(parse_time("to", "2026-13-01").is_err());
    }
}
