//! Segment-style event → `raw_web_events` row, with validation.
//!
//! Follows Segment's HTTP Tracking API semantics:
//! - `type` is one of track, page, screen, identify, group, alias;
//! - every event needs `anonymousId` or `userId` (alias needs `previousId`
//!   and `userId`, track needs `event`, group needs `groupId`);
//! - `messageId` is kept; the collector generates one when it is absent;
//! - time: `occurred_at = receivedAt - (sentAt - timestamp)` when the client
//!   sent both (clock-skew correction, as Segment does); `timestamp` alone is
//!   taken as is; neither → the receive time. Events in the past are
//!   accepted as they are (imports and backfills send history); an
//!   `occurred_at` more than [`FUTURE_TOLERANCE_MS`] in the future is clamped
//!   to the receive time and flagged with `timestamp_corrected`.
//! - privacy: `context.ip` is replaced by a salted hash; configured query
//!   parameters are stripped from page URLs and referrers.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// How far in the future an event's time may be before it is corrected.
pub const FUTURE_TOLERANCE_MS: i64 = 10 * 60 * 1000;

/// Why an event was rejected: a stable code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

impl Rejection {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Everything the normaliser needs besides the event itself.
#[derive(Debug, Clone)]
pub struct NormalizeContext<'a> {
    /// The organization the write key belongs to.
    pub org_id: &'a str,
    /// When the request was received.
    pub received_at: DateTime<Utc>,
    /// Salted hash of the client IP (computed once per request), if known.
    pub ip_hash: Option<String>,
    /// Query parameters to strip from URLs (`*`: every query string).
    pub strip_query_params: &'a [String],
    /// Salt for hashing an IP found in `context.ip`.
    pub ip_salt: &'a str,
}

/// One `raw_web_events` row (column names as in `crow_schemas::RAW_WEB_EVENTS`).
/// Timestamps are microseconds since the epoch, dates days since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct RawWebEventRow {
    pub org_id: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub name: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub previous_id: Option<String>,
    pub occurred_at: i64,
    pub original_timestamp: Option<i64>,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub timestamp_corrected: bool,
    pub page_url: Option<String>,
    pub page_path: Option<String>,
    pub page_referrer: Option<String>,
    pub page_title: Option<String>,
    pub user_agent: Option<String>,
    pub ip_hash: Option<String>,
    pub device_type: Option<String>,
    pub campaign_source: Option<String>,
    pub campaign_medium: Option<String>,
    pub campaign_name: Option<String>,
    pub product_id: Option<String>,
    pub product_sku: Option<String>,
    pub product_name: Option<String>,
    pub product_price: Option<f64>,
    pub product_quantity: Option<i64>,
    pub product_category: Option<String>,
    pub currency: Option<String>,
    pub order_id: Option<String>,
    pub revenue: Option<f64>,
    pub properties: Option<String>,
    pub traits: Option<String>,
    pub context: Option<String>,
    pub integrations: Option<String>,
    pub event_date: i32,
}

const TYPES: &[&str] = &["track", "page", "screen", "identify", "group", "alias"];

/// Validate and normalise one event. `default_type` is the type implied by the
/// endpoint (`/v1/track` → "track"); a batch passes `None`.
pub fn normalize(
    event: &Value,
    default_type: Option<&str>,
    ctx: &NormalizeContext<'_>,
) -> Result<RawWebEventRow, Rejection> {
    let obj = event
        .as_object()
        .ok_or_else(|| Rejection::new("not_an_object", "an event must be a JSON object"))?;
    let kind = match (obj.get("type"), default_type) {
        (Some(Value::String(t)), _) => t.to_ascii_lowercase(),
        (None | Some(Value::Null), Some(d)) => d.to_string(),
        (None | Some(Value::Null), None) => {
            return Err(Rejection::new("missing_type", "`type` is required"))
        }
        (Some(_), _) => return Err(Rejection::new("invalid_type", "`type` must be a string")),
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err(Rejection::new(
            "invalid_type",
            format!("`type` must be one of {}", TYPES.join(", ")),
        ));
    }
    let text = |key: &str| -> Result<Option<String>, Rejection> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Segment accepts numeric ids and stringifies them.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(Rejection::new(
                "invalid_field",
                format!("`{key}` must be a string"),
            )),
        }
    };
    let anonymous_id = text("anonymousId")?;
    let user_id = text("userId")?;
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(Rejection::new(
            "missing_identity",
            "`anonymousId` or `userId` is required",
        ));
    }
    for (key, max) in [("anonymousId", 512), ("userId", 512), ("messageId", 512)] {
        if let Some(Value::String(s)) = obj.get(key) {
            if s.len() > max {
                return Err(Rejection::new(
                    "field_too_long",
                    format!("`{key}` is longer than {max} bytes"),
                ));
            }
        }
    }
    let event_name = text("event")?;
    let name = text("name")?;
    let group_id = text("groupId")?;
    let previous_id = text("previousId")?;
    match kind.as_str() {
        "track" if event_name.is_none() => {
            return Err(Rejection::new("missing_field", "track events need `event`"))
        }
        "group" if group_id.is_none() => {
            return Err(Rejection::new(
                "missing_field",
                "group calls need `groupId`",
            ))
        }
        "alias" if previous_id.is_none() || user_id.is_none() => {
            return Err(Rejection::new(
                "missing_field",
                "alias calls need `previousId` and `userId`",
            ))
        }
        _ => {}
    }
    let object = |key: &str| -> Result<Option<&Map<String, Value>>, Rejection> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(Rejection::new(
                "invalid_field",
                format!("`{key}` must be an object"),
            )),
        }
    };
    let properties = object("properties")?;
    let traits = object("traits")?;
    let context = object("context")?;
    let integrations = object("integrations")?;

    let ts = |key: &str| -> Result<Option<DateTime<Utc>>, Rejection> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_time(s).map(Some).ok_or_else(|| {
                Rejection::new(
                    "invalid_timestamp",
                    format!("`{key}` is not an ISO-8601 time: {s:?}"),
                )
            }),
            Some(_) => Err(Rejection::new(
                "invalid_timestamp",
                format!("`{key}` must be an ISO-8601 string"),
            )),
        }
    };
    let original = ts("timestamp")?.or(ts("originalTimestamp")?);
    let sent_at = ts("sentAt")?;
    let received = ctx.received_at;
    let mut occurred = match (original, sent_at) {
        (Some(t), Some(s)) => received - (s - t),
        (Some(t), None) => t,
        (None, _) => received,
    };
    let mut corrected = false;
    if (occurred - received).num_milliseconds() > FUTURE_TOLERANCE_MS {
        occurred = received;
        corrected = true;
    }

    let message_id = match text("messageId")? {
        Some(m) => m,
        None => format!("crow-{}", uuid::Uuid::now_v7()),
    };

    let page = context
        .and_then(|c| c.get("page"))
        .and_then(Value::as_object);
    let prop_str = |k: &str| properties.and_then(|p| p.get(k)).and_then(value_text);
    let page_str =
        |k: &str| prop_str(k).or_else(|| page.and_then(|p| p.get(k)).and_then(value_text));
    let ctx_path = |path: &[&str]| -> Option<String> {
        let mut cur = context?.get(path[0])?;
        for p in &path[1..] {
            cur = cur.get(*p)?;
        }
        value_text(cur)
    };
    let strip = |u: Option<String>| u.map(|u| strip_query(&u, ctx.strip_query_params));

    // IP: hash whatever the client put in context.ip, else the request's.
    // The stored context never holds the IP, nor stripped query parameters;
    // it is copied only when something has to go.
    let page_has_query = |c: &Map<String, Value>| {
        !ctx.strip_query_params.is_empty()
            && c.get("page").and_then(Value::as_object).is_some_and(|p| {
                ["url", "referrer", "search"].iter().any(|k| {
                    p.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|u| u.contains('?'))
                })
            })
    };
    let mut ip_hash = ctx.ip_hash.clone();
    let context_text = match context {
        Some(c) if c.contains_key("ip") || page_has_query(c) => {
            let mut c = c.clone();
            if let Some(Value::String(ip)) = c.remove("ip") {
                if !ip.is_empty() {
                    ip_hash = Some(hash_ip(ctx.ip_salt, &ip));
                }
            }
            if let Some(Value::Object(p)) = c.get_mut("page") {
                for k in ["url", "referrer", "search"] {
                    if let Some(Value::String(u)) = p.get_mut(k) {
                        *u = strip_query(u, ctx.strip_query_params);
                    }
                }
            }
            Some(Value::Object(c).to_string())
        }
        Some(c) => serde_json::to_string(c).ok(),
        None => None,
    };

    let product_price = properties.and_then(|p| p.get("price")).and_then(value_f64);
    let revenue = properties
        .and_then(|p| p.get("revenue").or_else(|| p.get("total")))
        .and_then(value_f64);
    let quantity = properties
        .and_then(|p| p.get("quantity"))
        .and_then(value_f64)
        .map(|q| q as i64);

    let is_view = matches!(kind.as_str(), "page" | "screen");
    let json = |m: Option<&Map<String, Value>>| m.and_then(|m| serde_json::to_string(m).ok());
    Ok(RawWebEventRow {
        org_id: ctx.org_id.to_string(),
        message_id,
        kind,
        event: event_name,
        name,
        anonymous_id,
        user_id,
        group_id,
        previous_id,
        occurred_at: occurred.timestamp_micros(),
        original_timestamp: original.map(|t| t.timestamp_micros()),
        sent_at: sent_at.map(|t| t.timestamp_micros()),
        received_at: received.timestamp_micros(),
        timestamp_corrected: corrected,
        page_url: strip(page_str("url")),
        page_path: page_str("path"),
        page_referrer: strip(page_str("referrer")),
        page_title: page_str("title"),
        user_agent: ctx_path(&["userAgent"]),
        ip_hash,
        device_type: ctx_path(&["device", "type"]).map(|s| s.to_ascii_lowercase()),
        campaign_source: ctx_path(&["campaign", "source"]),
        campaign_medium: ctx_path(&["campaign", "medium"]),
        campaign_name: ctx_path(&["campaign", "name"]),
        product_id: prop_str("product_id"),
        product_sku: prop_str("sku"),
        product_name: if is_view { None } else { prop_str("name") },
        product_price,
        product_quantity: quantity,
        product_category: prop_str("category"),
        currency: prop_str("currency"),
        order_id: prop_str("order_id"),
        revenue,
        properties: json(properties),
        traits: json(traits),
        context: context_text,
        integrations: json(integrations),
        event_date: days_since_epoch(occurred),
    })
}

/// Parse an ISO-8601 / RFC 3339 time; a time without an offset is UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Days since 1970-01-01 of `t` (a Delta/Arrow `date`).
pub fn days_since_epoch(t: DateTime<Utc>) -> i32 {
    t.timestamp().div_euclid(86_400) as i32
}

/// Salted SHA-256 of an IP address.
pub fn hash_ip(salt: &str, ip: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"\0");
    h.update(ip.trim().as_bytes());
    hex::encode(h.finalize())
}

/// Remove the named query parameters (or all, with `*`) from a URL.
pub fn strip_query(url: &str, params: &[String]) -> String {
    if params.is_empty() {
        return url.to_string();
    }
    let Some((base, rest)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let kept: Vec<&str> = if params.iter().any(|p| p == "*") {
        Vec::new()
    } else {
        query
            .split('&')
            .filter(|kv| {
                let key = kv.split('=').next().unwrap_or_default();
                !kv.is_empty() && !params.iter().any(|p| p.eq_ignore_ascii_case(key))
            })
            .collect()
    };
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(received: &str) -> NormalizeContext<'static> {
        static STRIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        NormalizeContext {
            org_id: "org_1",
            received_at: parse_time(received).unwrap(),
            ip_hash: None,
            strip_query_params: STRIP.get_or_init(|| vec!["email".to_string()]),
            ip_salt: "salt",
        }
    }

    #[test]
    fn skew_is_corrected_from_sent_at() {
        // Client clock 1 hour behind: sentAt and timestamp both lag.
        let e = json!({"type":"track","event":"Product Viewed","anonymousId":"a",
            "timestamp":"2026-01-01T10:00:00Z","sentAt":"2026-01-01T10:00:05Z","messageId":"m1",
            "properties":{"product_id":"p1","price":"19.5","sku":"S1"},
            "context":{"ip":"1.2.3.4","device":{"type":"Mobile"},"page":{"url":"https://x.test/p?email=a@b.c&q=1"}}});
        let r = normalize(&e, None, &ctx("2026-01-01T11:00:10Z")).unwrap();
        assert_eq!(
            r.occurred_at,
            parse_time("2026-01-01T11:00:05Z")
                .unwrap()
                .timestamp_micros()
        );
        assert_eq!(r.product_id.as_deref(), Some("p1"));
        assert_eq!(r.product_price, Some(19.5));
        assert_eq!(r.device_type.as_deref(), Some("mobile"));
        assert_eq!(r.page_url.as_deref(), Some("https://x.test/p?q=1"));
        assert_eq!(
            r.ip_hash.as_deref(),
            Some(hash_ip("salt", "1.2.3.4").as_str())
        );
        assert!(!r.context.unwrap().contains("1.2.3.4"));
        assert!(!r.timestamp_corrected);
    }

    #[test]
    fn past_is_kept_future_is_clamped() {
        let past = json!({"type":"page","userId":"u","timestamp":"2025-03-01T00:00:00Z"});
        let r = normalize(&past, None, &ctx("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            r.event_date,
            days_since_epoch(parse_time("2025-03-01T00:00:00Z").unwrap())
        );
        let fut = json!({"type":"page","userId":"u","timestamp":"2027-03-01T00:00:00Z"});
        let r = normalize(&fut, None, &ctx("2026-01-01T00:00:00Z")).unwrap();
        assert!(r.timestamp_corrected);
        assert_eq!(r.occurred_at, r.received_at);
    }

    #[test]
    fn invalid_events_say_why() {
        let c = ctx("2026-01-01T00:00:00Z");
        let cases = [
            (json!([1]), "not_an_object"),
            (json!({"type":"track","anonymousId":"a"}), "missing_field"),
            (json!({"type":"track","event":"x"}), "missing_identity"),
            (json!({"type":"bogus","userId":"u"}), "invalid_type"),
            (
                json!({"type":"page","userId":"u","timestamp":"yesterday"}),
                "invalid_timestamp",
            ),
            (
                json!({"type":"page","userId":"u","properties":[1]}),
                "invalid_field",
            ),
            (json!({"type":"alias","userId":"u"}), "missing_field"),
        ];
        for (e, code) in cases {
            assert_eq!(normalize(&e, None, &c).unwrap_err().code, code, "{e}");
        }
        // The endpoint's type applies when the event has none.
        assert!(normalize(&json!({"event":"x","userId":"u"}), Some("track"), &c).is_ok());
    }

    #[test]
    fn strip_query_keeps_others_and_fragment() {
        let p = vec!["token".to_string()];
        assert_eq!(
            strip_query("https://a/b?token=1&x=2#f", &p),
            "https://a/b?x=2#f"
        );
        assert_eq!(strip_query("https://a/b?token=1", &p), "https://a/b");
        assert_eq!(
            strip_query("https://a/b?x=1", &["*".to_string()]),
            "https://a/b"
        );
    }
}
