//! The one parser of the times users give CROW: REST filters (`from`,
//! `to`), export requests, `crow export --from/--to`, and time travel
//! (`as_of`, `--as-of`). Every input accepts the same forms, and a refusal
//! names the field and those forms.

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

#[cfg(test)]
mod tests {
    use super::*;

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
