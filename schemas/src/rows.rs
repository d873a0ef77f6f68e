//! The rows CROW writes from more than one place, or passes between jobs,
//! defined once: their field names are the table contract's columns
//! (checked by this module's tests), timestamps are microseconds since the
//! epoch and dates days since the epoch ([`crate::time`]).
//!
//! They are plain serde structs: `crow_lake::batch::rows_to_batch` turns
//! them into a batch with exactly the table's schema. They live here, below
//! `crow-lake`, so that the collector and every job share them; this crate
//! does no I/O and draws no randomness, so ids (`crow_lake::ids::new_id`)
//! are given to the constructors.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::time::days_from_time;
use crate::JobName;

/// Who rejected something (the `source` column of `failed_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSource {
    /// The collector's HTTP endpoints: `collector`.
    Collector,
    /// A bulk import (`crow import`): `import`.
    Import,
    /// A job: `job:<name>`.
    Job(JobName),
}

impl std::fmt::Display for FailureSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureSource::Collector => f.write_str("collector"),
            FailureSource::Import => f.write_str("import"),
            FailureSource::Job(job) => write!(f, "job:{}", job.as_str()),
        }
    }
}

/// Defines [`FailureCode`] from one list of `Variant => "stored string"`
/// with a doc line each, so the enum, its strings and `ALL` cannot drift.
macro_rules! failure_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident => $code:literal,)+) => {
        /// Why something was rejected, as stored in the `reason_code` column
        /// of `failed_events` (stable and machine-readable; the strings never
        /// change once written). The human-readable text goes in `reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FailureCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl FailureCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [FailureCode] = &[$(FailureCode::$variant,)+];

            /// The stored string, e.g. `missing_field`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(FailureCode::$variant => $code,)+
                }
            }
        }
    };
}

failure_codes! {
    /// An event is larger than the collector's per-event limit.
    EventTooLarge => "event_too_large",
    /// A text field is longer than its limit.
    FieldTooLong => "field_too_long",
    /// The collector could not encode a row it accepted (a bug).
    Internal => "internal",
    /// A field has the wrong type or an unusable value.
    InvalidField => "invalid_field",
    /// The text is not valid JSON (or a number no float holds).
    InvalidJson => "invalid_json",
    /// A timestamp does not parse or cannot be corrected.
    InvalidTimestamp => "invalid_timestamp",
    /// The event's `type` is unknown or not a string.
    InvalidType => "invalid_type",
    /// A required field is missing.
    MissingField => "missing_field",
    /// An event has neither `userId` nor `anonymousId`.
    MissingIdentity => "missing_identity",
    /// An event has no `type` and its endpoint gives none.
    MissingType => "missing_type",
    /// An item is JSON but not an object.
    NotAnObject => "not_an_object",
    /// The JSON is nested deeper than the collector accepts.
    TooDeep => "too_deep",
    /// A session's stored timeline does not read (enrich).
    InvalidTimeline => "invalid_timeline",
    /// The organization's daily AI token budget is used up (enrich).
    AiBudgetExhausted => "ai_budget_exhausted",
    /// A kept interaction lost product ids that were not candidates (enrich).
    AiUnknownProductsDropped => "ai_unknown_products_dropped",
    /// The AI provider failed without a more specific reason.
    AiError => "ai_error",
    /// The AI provider refused the request.
    AiRequestRefused => "ai_request_refused",
    /// The AI provider could not be reached or kept failing.
    AiUnavailable => "ai_unavailable",
    /// The AI provider's answer did not pass validation, even after re-asks.
    AiMalformedOutput => "ai_malformed_output",
    /// A pattern's AI narrative was rejected; the statistical text was kept.
    AiNarrativeRejected => "ai_narrative_rejected",
    /// A social source could not be fetched (social).
    SourceFailed => "source_failed",
    /// A social source returned an item that does not read (social).
    MalformedItem => "malformed_item",
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A `failed_events` row ([`crate::FAILED_EVENTS`]): anything the collector
/// or a job could not accept, with the reason. Built with
/// [`FailedEventRow::new`] and the `with_*` setters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct FailedEventRow {
    pub org_id: Option<String>,
    pub failure_id: String,
    pub source: String,
    pub channel: Option<String>,
    pub message_id: Option<String>,
    pub reason_code: String,
    pub reason: String,
    pub payload: Option<String>,
    pub failed_at: i64,
    pub event_date: i32,
}

impl FailedEventRow {
    /// A failure with id `failure_id` (a new `fail_…` id), rejected by
    /// `source` at `now` for `code` (stable, machine-readable) and `reason`
    /// (for people); no organization, channel, message or payload yet.
    pub fn new(
        failure_id: String,
        source: FailureSource,
        code: FailureCode,
        reason: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            org_id: None,
            failure_id,
            source: source.to_string(),
            channel: None,
            message_id: None,
            reason_code: code.as_str().to_string(),
            reason: reason.into(),
            payload: None,
            failed_at: now.timestamp_micros(),
            event_date: days_from_time(now),
        }
    }

    /// The organization the failure belongs to.
    pub fn with_org(mut self, org_id: impl Into<String>) -> Self {
        self.org_id = Some(org_id.into());
        self
    }

    /// The channel (`web`, `social`, `cctv`) of what was rejected.
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// The rejected thing's message id, when it had one.
    pub fn with_message_id(mut self, message_id: Option<String>) -> Self {
        self.message_id = message_id;
        self
    }

    /// The original payload, as received.
    pub fn with_payload(mut self, payload: impl Into<String>) -> Self {
        self.payload = Some(payload.into());
        self
    }
}

/// A `raw_social_captures` row ([`crate::RAW_SOCIAL_CAPTURES`]), written by
/// the collector and by the social job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct SocialCaptureRow {
    pub org_id: String,
    pub capture_id: String,
    pub run_id: String,
    pub platform: String,
    pub url: String,
    pub canonical_url: Option<String>,
    pub author: Option<String>,
    pub published_at: Option<i64>,
    pub captured_at: i64,
    pub text: Option<String>,
    pub content_hash: String,
    pub metrics: Option<String>,
    pub received_at: i64,
    pub event_date: i32,
}

/// A `raw_cctv_transcripts` row ([`crate::RAW_CCTV_TRANSCRIPTS`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct CctvTranscriptRow {
    pub org_id: String,
    pub segment_id: String,
    pub store_id: String,
    pub camera_id: String,
    pub segment_start: i64,
    pub segment_end: i64,
    pub text: String,
    pub observations: Option<String>,
    pub model: Option<String>,
    pub received_at: i64,
    pub event_date: i32,
}

/// A `sessions` row ([`crate::SESSIONS`]), as the sessionize job builds it
/// (it appends the rows to Arrow columns itself, in this order).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub org_id: String,
    pub session_id: String,
    pub channel: &'static str,
    pub visitor_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_ids: Option<Vec<String>>,
    pub started_at: i64,
    pub ended_at: i64,
    pub event_count: i64,
    pub page_views: Option<i64>,
    pub product_ids: Option<Vec<String>>,
    pub device_type: Option<String>,
    pub traffic_source: Option<String>,
    pub is_returning: Option<bool>,
    pub converted: Option<bool>,
    pub source_ref: Option<String>,
    pub timeline: String,
    pub source_ids: Vec<String>,
    pub job_run_id: String,
    pub session_date: i32,
}

/// An `interactions` row ([`crate::INTERACTIONS`]), as the enrich job
/// writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct InteractionRow {
    pub org_id: String,
    pub interaction_id: String,
    pub session_id: String,
    pub channel: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub description: String,
    pub intent: Option<String>,
    pub sentiment: Option<String>,
    pub outcome: Option<String>,
    pub product_ids: Vec<String>,
    pub confidence: Option<f64>,
    pub source_ids: Vec<String>,
    pub provider: String,
    pub model: String,
    pub prompt_version: String,
    pub prompt_hash: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub created_at: i64,
    pub session_date: i32,
}

/// A `usage_daily` row ([`crate::USAGE_DAILY`]), as the billing job writes
/// and compares it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct UsageRow {
    pub org_id: String,
    /// Days since the epoch.
    pub usage_date: i32,
    pub events: i64,
    pub sessions: i64,
    pub interactions: i64,
    pub patterns: i64,
    pub ai_input_tokens: i64,
    pub ai_output_tokens: i64,
    pub amount_micros: i64,
    pub currency: String,
    pub computed_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnType, TableDef};
    use serde_json::Value;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time")
    }

    /// Whether a JSON value (not null) can fill a column of type `ty`.
    fn fits(ty: ColumnType, v: &Value) -> bool {
        match ty {
            ColumnType::Text => v.is_string(),
            ColumnType::Int64 | ColumnType::Timestamp => v.is_i64(),
            ColumnType::Int32 | ColumnType::Date => {
                v.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            ColumnType::Float64 => v.is_number(),
            ColumnType::Bool => v.is_boolean(),
            ColumnType::TextList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            ColumnType::Float32List => v.as_array().is_some_and(|a| a.iter().all(Value::is_number)),
        }
    }

    /// `full` (every field set) and `sparse` (every optional field unset)
    /// against `def`: the same column names, values of the column's type,
    /// and only nullable columns left null.
    fn check<R: Serialize>(def: &TableDef, full: &R, sparse: &R) {
        let full = serde_json::to_value(full).expect("json");
        let sparse = serde_json::to_value(sparse).expect("json");
        for row in [&full, &sparse] {
            let obj = row.as_object().expect("object");
            let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
            let mut columns: Vec<&str> = def.columns.iter().map(|c| c.name).collect();
            fields.sort_unstable();
            columns.sort_unstable();
            assert_eq!(fields, columns, "{}: fields against columns", def.name);
        }
        for c in def.columns {
            let v = &full[c.name];
            assert!(
                fits(c.ty, v),
                "{}.{}: {v} is not {:?}",
                def.name,
                c.name,
                c.ty
            );
            let s = &sparse[c.name];
            assert!(
                c.nullable || fits(c.ty, s),
                "{}.{}: a required column left {s}",
                def.name,
                c.name
            );
        }
    }

    #[test]
    fn failure_codes_keep_their_stored_strings() {
        // These strings are in every lake already written: never change one.
        let want = [
            "event_too_large",
            "field_too_long",
            "internal",
            "invalid_field",
            "invalid_json",
            "invalid_timestamp",
            "invalid_type",
            "missing_field",
            "missing_identity",
            "missing_type",
            "not_an_object",
            "too_deep",
            "invalid_timeline",
            "ai_budget_exhausted",
            "ai_unknown_products_dropped",
            "ai_error",
            "ai_request_refused",
            "ai_unavailable",
            "ai_malformed_output",
            "ai_narrative_rejected",
            "source_failed",
            "malformed_item",
        ];
        let got: Vec<&str> = FailureCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(got, want);
        for c in FailureCode::ALL {
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                Value::String(c.as_str().into())
            );
        }
    }

    #[test]
    fn failed_event_rows_match_their_contract() {
        let sparse = FailedEventRow::new(
            "fail_1".into(),
            FailureSource::Collector,
            FailureCode::MissingField,
            "why",
            now(),
        );
        let full = sparse
            .clone()
            .with_org("o1")
            .with_channel("web")
            .with_message_id(Some("m1".into()))
            .with_payload("{}");
        check(&crate::FAILED_EVENTS, &full, &sparse);
        assert_eq!(full.failed_at, 1_764_000_000_123_456);
        assert_eq!(full.event_date, days_from_time(now()));
    }

    #[test]
    fn failure_sources_are_spelled_as_stored() {
        assert_eq!(FailureSource::Collector.to_string(), "collector");
        assert_eq!(FailureSource::Import.to_string(), "import");
        assert_eq!(
            FailureSource::Job(JobName::Enrich).to_string(),
            "job:enrich"
        );
    }

    #[test]
    fn raw_channel_rows_match_their_contracts() {
        let full = SocialCaptureRow {
            org_id: "o".into(),
            capture_id: "c".into(),
            run_id: "r".into(),
            platform: "instagram".into(),
            url: "u".into(),
            canonical_url: Some("u".into()),
            author: Some("a".into()),
            published_at: Some(1),
            captured_at: 2,
            text: Some("t".into()),
            content_hash: "h".into(),
            metrics: Some("{}".into()),
            received_at: 3,
            event_date: 4,
        };
        let sparse = SocialCaptureRow {
            canonical_url: None,
            author: None,
            published_at: None,
            text: None,
            metrics: None,
            ..full.clone()
        };
        check(&crate::RAW_SOCIAL_CAPTURES, &full, &sparse);
        let full = CctvTranscriptRow {
            org_id: "o".into(),
            segment_id: "s".into(),
            store_id: "st".into(),
            camera_id: "c".into(),
            segment_start: 1,
            segment_end: 2,
            text: "t".into(),
            observations: Some("[]".into()),
            model: Some("m".into()),
            received_at: 3,
            event_date: 4,
        };
        let sparse = CctvTranscriptRow {
            observations: None,
            model: None,
            ..full.clone()
        };
        check(&crate::RAW_CCTV_TRANSCRIPTS, &full, &sparse);
    }

    #[test]
    fn session_rows_match_their_contract() {
        let full = SessionRow {
            org_id: "o".into(),
            session_id: "s".into(),
            channel: "web",
            visitor_id: Some("v".into()),
            user_id: Some("u".into()),
            anonymous_ids: Some(vec!["a".into()]),
            started_at: 1,
            ended_at: 2,
            event_count: 3,
            page_views: Some(4),
            product_ids: Some(vec!["p".into()]),
            device_type: Some("mobile".into()),
            traffic_source: Some("direct".into()),
            is_returning: Some(true),
            converted: Some(false),
            source_ref: Some("r".into()),
            timeline: "[]".into(),
            source_ids: vec!["m".into()],
            job_run_id: "run".into(),
            session_date: 5,
        };
        let sparse = SessionRow {
            visitor_id: None,
            user_id: None,
            anonymous_ids: None,
            page_views: None,
            product_ids: None,
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: None,
            ..full.clone()
        };
        check(&crate::SESSIONS, &full, &sparse);
    }

    #[test]
    fn interaction_and_usage_rows_match_their_contracts() {
        let full = InteractionRow {
            org_id: "o".into(),
            interaction_id: "i".into(),
            session_id: "s".into(),
            channel: "web".into(),
            started_at: 1,
            ended_at: 2,
            description: "d".into(),
            intent: Some("buy".into()),
            sentiment: Some("positive".into()),
            outcome: Some("purchased".into()),
            product_ids: vec!["p".into()],
            confidence: Some(0.5),
            source_ids: vec!["m".into()],
            provider: "offline".into(),
            model: "m".into(),
            prompt_version: "v".into(),
            prompt_hash: "h".into(),
            input_tokens: 3,
            output_tokens: 4,
            created_at: 5,
            session_date: 6,
        };
        let sparse = InteractionRow {
            intent: None,
            sentiment: None,
            outcome: None,
            confidence: None,
            ..full.clone()
        };
        check(&crate::INTERACTIONS, &full, &sparse);
        let usage = UsageRow {
            org_id: "o".into(),
            usage_date: 1,
            events: 2,
            sessions: 3,
            interactions: 4,
            patterns: 5,
            ai_input_tokens: 6,
            ai_output_tokens: 7,
            amount_micros: 8,
            currency: "EUR".into(),
            computed_at: 9,
        };
        check(&crate::USAGE_DAILY, &usage, &usage);
    }
}
