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

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use crow_schemas::rows::FailureCode;
use crow_schemas::time::days_from_time;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::rowcodec::RowWriter;

/// How far in the future an event's time may be before it is corrected.
pub const FUTURE_TOLERANCE_MS: i64 = 10 * 60 * 1000;

/// The deepest nesting an event may have (as `serde_json`'s own limit).
pub const MAX_DEPTH: usize = 128;

/// Why an event was rejected: a stable code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Stable machine-readable code.
    pub code: FailureCode,
    /// Human-readable reason.
    pub reason: String,
}

impl Rejection {
    fn new(code: FailureCode, reason: impl Into<String>) -> Self {
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

/// What the request supplies for every event of it: the type implied by the
/// endpoint (`/v1/track` → "track"), and a batch's `sentAt` and `context`
/// (raw JSON), which fill in what an event does not say itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults<'a> {
    /// The endpoint's type, used when an event has none.
    pub kind: Option<&'a str>,
    /// The batch's `sentAt` (raw JSON), used when an event has none.
    pub sent_at: Option<&'a str>,
    /// The batch's `context` (raw JSON object): its keys are added to each
    /// event's context where the event has none of its own.
    pub context: Option<&'a str>,
}

type Text<'a> = Option<Cow<'a, str>>;

/// One `raw_web_events` row (column names as in `crow_schemas::RAW_WEB_EVENTS`).
/// Timestamps are microseconds since the epoch, dates days since the epoch.
/// Text borrows from the request body where it can.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct RawWebEventRow<'a> {
    pub org_id: Cow<'a, str>,
    pub message_id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    pub event: Text<'a>,
    pub name: Text<'a>,
    pub anonymous_id: Text<'a>,
    pub user_id: Text<'a>,
    pub group_id: Text<'a>,
    pub previous_id: Text<'a>,
    pub occurred_at: i64,
    pub original_timestamp: Option<i64>,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub timestamp_corrected: bool,
    pub page_url: Text<'a>,
    pub page_path: Text<'a>,
    pub page_referrer: Text<'a>,
    pub page_title: Text<'a>,
    pub user_agent: Text<'a>,
    pub ip_hash: Text<'a>,
    pub device_type: Text<'a>,
    pub campaign_source: Text<'a>,
    pub campaign_medium: Text<'a>,
    pub campaign_name: Text<'a>,
    pub product_id: Text<'a>,
    pub product_sku: Text<'a>,
    pub product_name: Text<'a>,
    pub product_price: Option<f64>,
    pub product_quantity: Option<i64>,
    pub product_category: Text<'a>,
    pub currency: Text<'a>,
    pub order_id: Text<'a>,
    pub revenue: Option<f64>,
    pub properties: Text<'a>,
    pub traits: Text<'a>,
    pub context: Text<'a>,
    pub integrations: Text<'a>,
    pub event_date: i32,
}

fn own(t: Text<'_>) -> Text<'static> {
    t.map(|c| Cow::Owned(c.into_owned()))
}

impl RawWebEventRow<'_> {
    /// The row with every text owned (no longer tied to the request body).
    pub fn into_owned(self) -> RawWebEventRow<'static> {
        RawWebEventRow {
            org_id: Cow::Owned(self.org_id.into_owned()),
            message_id: Cow::Owned(self.message_id.into_owned()),
            kind: Cow::Owned(self.kind.into_owned()),
            event: own(self.event),
            name: own(self.name),
            anonymous_id: own(self.anonymous_id),
            user_id: own(self.user_id),
            group_id: own(self.group_id),
            previous_id: own(self.previous_id),
            occurred_at: self.occurred_at,
            original_timestamp: self.original_timestamp,
            sent_at: self.sent_at,
            received_at: self.received_at,
            timestamp_corrected: self.timestamp_corrected,
            page_url: own(self.page_url),
            page_path: own(self.page_path),
            page_referrer: own(self.page_referrer),
            page_title: own(self.page_title),
            user_agent: own(self.user_agent),
            ip_hash: own(self.ip_hash),
            device_type: own(self.device_type),
            campaign_source: own(self.campaign_source),
            campaign_medium: own(self.campaign_medium),
            campaign_name: own(self.campaign_name),
            product_id: own(self.product_id),
            product_sku: own(self.product_sku),
            product_name: own(self.product_name),
            product_price: self.product_price,
            product_quantity: self.product_quantity,
            product_category: own(self.product_category),
            currency: own(self.currency),
            order_id: own(self.order_id),
            revenue: self.revenue,
            properties: own(self.properties),
            traits: own(self.traits),
            context: own(self.context),
            integrations: own(self.integrations),
            event_date: self.event_date,
        }
    }

    /// Append the row in the WAL's binary row format
    /// ([`crate::rowcodec`]), columns in the table's order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = RowWriter::new(out, crow_schemas::RAW_WEB_EVENTS.version, 38);
        w.text(Some(&self.org_id));
        w.text(Some(&self.message_id));
        w.text(Some(&self.kind));
        w.text(self.event.as_deref());
        w.text(self.name.as_deref());
        w.text(self.anonymous_id.as_deref());
        w.text(self.user_id.as_deref());
        w.text(self.group_id.as_deref());
        w.text(self.previous_id.as_deref());
        w.i64(Some(self.occurred_at));
        w.i64(self.original_timestamp);
        w.i64(self.sent_at);
        w.i64(Some(self.received_at));
        w.bool(Some(self.timestamp_corrected));
        w.text(self.page_url.as_deref());
        w.text(self.page_path.as_deref());
        w.text(self.page_referrer.as_deref());
        w.text(self.page_title.as_deref());
        w.text(self.user_agent.as_deref());
        w.text(self.ip_hash.as_deref());
        w.text(self.device_type.as_deref());
        w.text(self.campaign_source.as_deref());
        w.text(self.campaign_medium.as_deref());
        w.text(self.campaign_name.as_deref());
        w.text(self.product_id.as_deref());
        w.text(self.product_sku.as_deref());
        w.text(self.product_name.as_deref());
        w.f64(self.product_price);
        w.i64(self.product_quantity);
        w.text(self.product_category.as_deref());
        w.text(self.currency.as_deref());
        w.text(self.order_id.as_deref());
        w.f64(self.revenue);
        w.text(self.properties.as_deref());
        w.text(self.traits.as_deref());
        w.text(self.context.as_deref());
        w.text(self.integrations.as_deref());
        w.i32(Some(self.event_date));
    }
}

const TYPES: &[&str] = &["track", "page", "screen", "identify", "group", "alias"];

/// Validate and normalise one event given as a JSON value (the demo's
/// generator and tests). The collector uses [`normalize_json`] on the
/// request text.
pub fn normalize(
    event: &Value,
    default_type: Option<&str>,
    ctx: &NormalizeContext<'_>,
) -> Result<RawWebEventRow<'static>, Rejection> {
    let text = event.to_string();
    let defaults = Defaults {
        kind: default_type,
        ..Defaults::default()
    };
    normalize_json(&text, &defaults, ctx).map(RawWebEventRow::into_owned)
}

/// A JSON value's text, classified when a field is read.
#[derive(Debug, Clone, Copy)]
struct Raw<'a>(&'a str);

enum Scalar<'a> {
    Null,
    Str(Cow<'a, str>),
    Num(&'a str),
    Bool(bool),
    Object(&'a str),
    Array,
}

impl<'a> Raw<'a> {
    fn scalar(self) -> Scalar<'a> {
        let t = self.0.trim_ascii();
        match t.as_bytes().first() {
            Some(b'"') => match t.get(1..t.len().saturating_sub(1)) {
                // No escapes: the text between the quotes is the string.
                Some(inner) if !inner.contains('\\') => Scalar::Str(Cow::Borrowed(inner)),
                _ => serde_json::from_str::<String>(t)
                    .map_or(Scalar::Null, |s| Scalar::Str(Cow::Owned(s))),
            },
            Some(b'{') => Scalar::Object(t),
            Some(b'[') => Scalar::Array,
            Some(b't') => Scalar::Bool(true),
            Some(b'f') => Scalar::Bool(false),
            Some(b'n') | None => Scalar::Null,
            Some(_) => Scalar::Num(t),
        }
    }
}

/// A map key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

struct Pick<'k, const N: usize>(&'k [&'k str; N]);

/// The picked members, and whether one of them was repeated.
type Picked<'a, const N: usize> = ([Option<Raw<'a>>; N], bool);

impl<'de, const N: usize> Visitor<'de> for Pick<'_, N> {
    type Value = Picked<'de, N>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = [None; N];
        let mut repeated = false;
        while let Some(Key(key)) = map.next_key()? {
            match self.0.iter().position(|k| *k == key) {
                // A repeated key: the last one wins, as in a parsed object.
                Some(i) => {
                    repeated |= out[i].is_some();
                    out[i] = Some(Raw(map.next_value::<&'de RawValue>()?.get()));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((out, repeated))
    }
}

/// The values of `keys` in the JSON object `text`, in one pass and without
/// building the object: every other member is skipped unparsed.
fn pick<'a, const N: usize>(
    text: &'a str,
    keys: &[&str; N],
) -> Result<Picked<'a, N>, serde_json::Error> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let out = (&mut de).deserialize_map(Pick(keys))?;
    de.end()?;
    Ok(out)
}

/// Like [`pick`] for an optional member that should be an object: anything
/// else reads as an empty object.
fn pick_in<'a, const N: usize>(text: Option<Raw<'a>>, keys: &[&str; N]) -> Picked<'a, N> {
    match text.map(Raw::scalar) {
        Some(Scalar::Object(t)) => pick(t, keys).unwrap_or(([None; N], false)),
        _ => ([None; N], false),
    }
}

/// The members of a JSON object in order, values as their raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    out.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn members(text: &str) -> Result<Members<'_>, Rejection> {
    serde_json::from_str(text).map_err(|e| Rejection::new(FailureCode::InvalidJson, e.to_string()))
}

/// Write an object of `(key, raw value)` members: keys in their order,
/// values exactly as given.
fn write_object<'v>(members: impl Iterator<Item = (&'v str, Cow<'v, str>)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A key serialises infallibly.
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&v);
    }
    out.push('}');
    out
}

/// `context` without its `ip` members (every copy) and with query
/// parameters stripped from every copy of `page.url`, `page.referrer` and
/// `page.search`. Everything else keeps its order and its exact text
/// (numbers are not re-printed); returns the text and the last `ip`.
fn rewrite_context(context: &str, strip: &[String]) -> Result<(String, Option<String>), Rejection> {
    let Members(top) = members(context)?;
    let mut ip = None;
    let mut changed = false;
    let mut kept = Vec::with_capacity(top.len());
    for (k, v) in &top {
        match k.as_ref() {
            "ip" => {
                changed = true;
                ip = Some(match Raw(v.get()).scalar() {
                    Scalar::Str(s) => s.into_owned(),
                    _ => String::new(),
                });
            }
            "page" if v.get().trim_ascii_start().starts_with('{') => {
                let Members(page) = members(v.get())?;
                let page: Vec<(&str, Cow<'_, str>)> = page
                    .iter()
                    .map(|(pk, pv)| {
                        let raw = Cow::Borrowed(pv.get());
                        let text = match (pk.as_ref(), Raw(pv.get()).scalar()) {
                            ("url" | "referrer" | "search", Scalar::Str(u)) => {
                                let stripped = strip_query(&u, strip);
                                if stripped == u {
                                    raw
                                } else {
                                    changed = true;
                                    Cow::Owned(serde_json::to_string(&stripped).unwrap_or_default())
                                }
                            }
                            _ => raw,
                        };
                        (pk.as_ref(), text)
                    })
                    .collect();
                kept.push((k.as_ref(), Cow::Owned(write_object(page.into_iter()))));
            }
            _ => kept.push((k.as_ref(), Cow::Borrowed(v.get()))),
        }
    }
    if !changed {
        // Nothing had to go: the context stays exactly as sent.
        return Ok((context.to_string(), None));
    }
    Ok((write_object(kept.into_iter()), ip))
}

/// True when `text` holds a `\uD800`–`\uDFFF` escape: a surrogate, which
/// must come in a valid pair. Skipping a string does not check that, so such
/// events are validated in full.
fn has_surrogate_escape(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memmem::find_iter(b, b"\\u").any(|i| matches!(b.get(i + 2), Some(b'd' | b'D')))
}

/// A JSON number as id text, written as before this reader existed: integers
/// as sent, other numbers as `serde_json` prints them (`1e3` → `1000.0`).
/// `None` for a number no float can hold.
fn number_text(n: &str) -> Option<Cow<'_, str>> {
    let b = n.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if !digits.is_empty() && digits.len() < 19 && digits.iter().all(u8::is_ascii_digit) {
        // Within i64: printed exactly as sent.
        return Some(Cow::Borrowed(n));
    }
    serde_json::from_str::<serde_json::Number>(n)
        .ok()
        .map(|x| Cow::Owned(x.to_string()))
}

/// True when `text` nests arrays and objects deeper than `limit`.
pub fn nested_deeper_than(text: &str, limit: usize) -> bool {
    let b = text.as_bytes();
    // Cheap bound first: fewer opening brackets than the limit cannot nest
    // deeper than it.
    if memchr::memchr2_iter(b'{', b'[', b).count() <= limit {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &c in b {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

const EVENT_KEYS: [&str; 15] = [
    "type",
    "event",
    "name",
    "anonymousId",
    "userId",
    "groupId",
    "previousId",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
];
const CONTEXT_KEYS: [&str; 5] = ["ip", "userAgent", "device", "campaign", "page"];
const PAGE_KEYS: [&str; 5] = ["url", "path", "referrer", "title", "search"];
const CAMPAIGN_KEYS: [&str; 3] = ["source", "medium", "name"];
const PROPERTY_KEYS: [&str; 14] = [
    "product_id",
    "sku",
    "name",
    "price",
    "quantity",
    "category",
    "currency",
    "order_id",
    "revenue",
    "total",
    "url",
    "path",
    "referrer",
    "title",
];

/// Validate and normalise one event from its JSON text (one element of a
/// request's `batch`, or a single-event body). The event is read in one
/// pass: text fields borrow from `text`, `properties`, `traits`, `context`
/// and `integrations` are kept as the client sent them (the context is
/// rewritten only when an IP or a stripped query parameter must go).
pub fn normalize_json<'a>(
    text: &'a str,
    defaults: &Defaults<'a>,
    ctx: &'a NormalizeContext<'_>,
) -> Result<RawWebEventRow<'a>, Rejection> {
    if nested_deeper_than(text, MAX_DEPTH) {
        return Err(Rejection::new(
            FailureCode::TooDeep,
            "the event is nested too deeply",
        ));
    }
    if !text.trim_ascii_start().starts_with('{') {
        return Err(Rejection::new(
            FailureCode::NotAnObject,
            "an event must be a JSON object",
        ));
    }
    if has_surrogate_escape(text) {
        serde_json::from_str::<Value>(text)
            .map_err(|e| Rejection::new(FailureCode::InvalidJson, e.to_string()))?;
    }
    let (fields, _) = pick(text, &EVENT_KEYS)
        .map_err(|e| Rejection::new(FailureCode::InvalidJson, e.to_string()))?;
    match defaults.context.map(|c| Raw(c).scalar()) {
        Some(Scalar::Object(batch)) => {
            // The batch's context fills in the event's: merge, then read the
            // merged text (owned, since it is built here).
            let merged = match fields[13].map(Raw::scalar) {
                None | Some(Scalar::Object(_)) => {
                    // The event's members as sent, then the batch's members
                    // the event lacks (a repeated batch key: its last copy).
                    let event_ctx = match fields[13] {
                        Some(r) => members(r.0)?.0,
                        None => Vec::new(),
                    };
                    let Members(batch_ctx) = members(batch)?;
                    let mut merged: Vec<(&str, Cow<'_, str>)> = event_ctx
                        .iter()
                        .map(|(k, v)| (k.as_ref(), Cow::Borrowed(v.get())))
                        .collect();
                    let from_event = merged.len();
                    for (k, v) in &batch_ctx {
                        if merged[..from_event].iter().any(|(e, _)| *e == k.as_ref()) {
                            continue;
                        }
                        match merged[from_event..]
                            .iter_mut()
                            .find(|(e, _)| *e == k.as_ref())
                        {
                            Some(slot) => slot.1 = Cow::Borrowed(v.get()),
                            None => merged.push((k.as_ref(), Cow::Borrowed(v.get()))),
                        }
                    }
                    Some(write_object(merged.into_iter()))
                }
                Some(_) => None,
            };
            match merged {
                Some(m) => {
                    let mut fields = fields;
                    fields[13] = Some(Raw(&m));
                    build(fields, defaults, ctx).map(RawWebEventRow::into_owned)
                }
                None => build(fields, defaults, ctx),
            }
        }
        _ => build(fields, defaults, ctx),
    }
}

fn build<'a>(
    f: [Option<Raw<'a>>; 15],
    defaults: &Defaults<'a>,
    ctx: &'a NormalizeContext<'_>,
) -> Result<RawWebEventRow<'a>, Rejection> {
    let [kind, event, name, anonymous_id, user_id, group_id, previous_id, message_id, timestamp, original_timestamp, sent_at, properties, traits, context, integrations] =
        f;
    let kind: &'static str = match (kind.map(Raw::scalar), defaults.kind) {
        (Some(Scalar::Str(t)), _) => TYPES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&t))
            .copied()
            .ok_or_else(|| {
                Rejection::new(
                    FailureCode::InvalidType,
                    format!("`type` must be one of {}", TYPES.join(", ")),
                )
            })?,
        (None | Some(Scalar::Null), Some(d)) => TYPES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(d))
            .copied()
            .ok_or_else(|| {
                Rejection::new(FailureCode::InvalidType, format!("unknown type {d:?}"))
            })?,
        (None | Some(Scalar::Null), None) => {
            return Err(Rejection::new(
                FailureCode::MissingType,
                "`type` is required",
            ))
        }
        (Some(_), _) => {
            return Err(Rejection::new(
                FailureCode::InvalidType,
                "`type` must be a string",
            ))
        }
    };
    let text = |key: &str, raw: Option<Raw<'a>>, max: usize| -> Result<Text<'a>, Rejection> {
        match raw.map(Raw::scalar) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) if s.is_empty() => Ok(None),
            Some(Scalar::Str(s)) if s.len() > max => Err(Rejection::new(
                FailureCode::FieldTooLong,
                format!("`{key}` is longer than {max} bytes"),
            )),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            // Segment accepts numeric ids and stringifies them.
            Some(Scalar::Num(n)) => number_text(n).map(Some).ok_or_else(|| {
                Rejection::new(FailureCode::InvalidJson, format!("`{key}` is out of range"))
            }),
            Some(_) => Err(Rejection::new(
                FailureCode::InvalidField,
                format!("`{key}` must be a string"),
            )),
        }
    };
    const ANY: usize = usize::MAX;
    let anonymous_id = text("anonymousId", anonymous_id, 512)?;
    let user_id = text("userId", user_id, 512)?;
    if anonymous_id.is_none() && user_id.is_none() {
        return Err(Rejection::new(
            FailureCode::MissingIdentity,
            "`anonymousId` or `userId` is required",
        ));
    }
    let message_id = text("messageId", message_id, 512)?;
    let event_name = text("event", event, ANY)?;
    let name = text("name", name, ANY)?;
    let group_id = text("groupId", group_id, ANY)?;
    let previous_id = text("previousId", previous_id, ANY)?;
    match kind {
        "track" if event_name.is_none() => {
            return Err(Rejection::new(
                FailureCode::MissingField,
                "track events need `event`",
            ))
        }
        "group" if group_id.is_none() => {
            return Err(Rejection::new(
                FailureCode::MissingField,
                "group calls need `groupId`",
            ))
        }
        "alias" if previous_id.is_none() || user_id.is_none() => {
            return Err(Rejection::new(
                FailureCode::MissingField,
                "alias calls need `previousId` and `userId`",
            ))
        }
        _ => {}
    }
    let object = |key: &str, raw: Option<Raw<'a>>| -> Result<Option<&'a str>, Rejection> {
        match raw.map(Raw::scalar) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Object(t)) => Ok(Some(t)),
            Some(_) => Err(Rejection::new(
                FailureCode::InvalidField,
                format!("`{key}` must be an object"),
            )),
        }
    };
    let properties = object("properties", properties)?;
    let traits = object("traits", traits)?;
    let context = object("context", context)?;
    let integrations = object("integrations", integrations)?;

    let ts = |key: &str, raw: Option<Raw<'a>>| -> Result<Option<DateTime<Utc>>, Rejection> {
        match raw.map(Raw::scalar) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => parse_time(&s).map(Some).ok_or_else(|| {
                Rejection::new(
                    FailureCode::InvalidTimestamp,
                    format!("`{key}` is not an ISO-8601 time: {s:?}"),
                )
            }),
            Some(_) => Err(Rejection::new(
                FailureCode::InvalidTimestamp,
                format!("`{key}` must be an ISO-8601 string"),
            )),
        }
    };
    let original = ts("timestamp", timestamp)?.or(ts("originalTimestamp", original_timestamp)?);
    let sent_at = ts("sentAt", sent_at.or(defaults.sent_at.map(Raw)))?;
    let received = ctx.received_at;
    let mut occurred = match (original, sent_at) {
        (Some(t), Some(s)) => received.checked_sub_signed(s - t).ok_or_else(|| {
            Rejection::new(
                FailureCode::InvalidTimestamp,
                "`timestamp` and `sentAt` are too far apart",
            )
        })?,
        (Some(t), None) => t,
        (None, _) => received,
    };
    let mut corrected = false;
    if (occurred - received).num_milliseconds() > FUTURE_TOLERANCE_MS {
        occurred = received;
        corrected = true;
    }
    let message_id = match message_id {
        Some(m) => m,
        None => Cow::Owned(format!("crow-{}", uuid::Uuid::now_v7())),
    };

    let ([ip, user_agent, device, campaign, page], context_repeats) = match context {
        Some(c) => pick(c, &CONTEXT_KEYS)
            .map_err(|e| Rejection::new(FailureCode::InvalidJson, e.to_string()))?,
        None => ([None; 5], false),
    };
    let ([device_type], _) = pick_in(device, &["type"]);
    let ([campaign_source, campaign_medium, campaign_name], _) = pick_in(campaign, &CAMPAIGN_KEYS);
    let ([page_url, page_path, page_referrer, page_title, page_search], page_repeats) =
        pick_in(page, &PAGE_KEYS);
    let (
        [p_product_id, p_sku, p_name, p_price, p_quantity, p_category, p_currency, p_order_id, p_revenue, p_total, p_url, p_path, p_referrer, p_title],
        _,
    ) = match properties {
        Some(p) => pick(p, &PROPERTY_KEYS)
            .map_err(|e| Rejection::new(FailureCode::InvalidJson, e.to_string()))?,
        None => ([None; 14], false),
    };
    let strip = |u: Text<'a>| u.map(|u| strip_query_cow(u, ctx.strip_query_params));

    // IP: hash whatever the client put in context.ip, else the request's.
    // The stored context never holds the IP, nor stripped query parameters;
    // it is rewritten only when something has to go.
    let has_query =
        |r: Option<Raw<'a>>| matches!(r.map(Raw::scalar), Some(Scalar::Str(u)) if u.contains('?'));
    let page_has_query = !ctx.strip_query_params.is_empty()
        && (has_query(page_url) || has_query(page_referrer) || has_query(page_search));
    let mut ip_hash: Text<'a> = ctx.ip_hash.as_deref().map(Cow::Borrowed);
    let context_text: Text<'a> = match context {
        // A repeated `ip`, `page` or page field could hide a copy that would
        // not be stripped: such contexts are rewritten too (parsing keeps
        // the last copy, the one read above).
        Some(c) if ip.is_some() || page_has_query || context_repeats || page_repeats => {
            let (text, ip) = rewrite_context(c, ctx.strip_query_params)?;
            if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
                ip_hash = Some(Cow::Owned(hash_ip(ctx.ip_salt, &ip)));
            }
            Some(Cow::Owned(text))
        }
        Some(c) => Some(Cow::Borrowed(c)),
        None => None,
    };

    let is_view = matches!(kind, "page" | "screen");
    // Campaign parameters of the page URL as sent (before any stripping),
    // for events whose context names no campaign.
    let utm_url: Text<'a> = if campaign.is_none() {
        value_text(p_url).or_else(|| value_text(page_url))
    } else {
        None
    };
    Ok(RawWebEventRow {
        org_id: Cow::Borrowed(ctx.org_id),
        message_id,
        kind: Cow::Borrowed(kind),
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
        page_url: strip(value_text(p_url).or_else(|| value_text(page_url))),
        page_path: value_text(p_path).or_else(|| value_text(page_path)),
        page_referrer: strip(value_text(p_referrer).or_else(|| value_text(page_referrer))),
        page_title: value_text(p_title).or_else(|| value_text(page_title)),
        user_agent: value_text(user_agent),
        ip_hash,
        device_type: value_text(device_type)
            .map(|s| {
                if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(s.to_ascii_lowercase())
                } else {
                    s
                }
            })
            .or_else(|| {
                value_text(user_agent)
                    .and_then(|ua| device_from_user_agent(&ua))
                    .map(Cow::Borrowed)
            }),
        campaign_source: value_text(campaign_source).or_else(|| utm(&utm_url, "utm_source")),
        campaign_medium: value_text(campaign_medium).or_else(|| utm(&utm_url, "utm_medium")),
        campaign_name: value_text(campaign_name).or_else(|| utm(&utm_url, "utm_campaign")),
        product_id: value_text(p_product_id),
        product_sku: value_text(p_sku),
        product_name: if is_view { None } else { value_text(p_name) },
        product_price: value_f64(p_price),
        product_quantity: value_f64(p_quantity).map(|q| q as i64),
        product_category: value_text(p_category),
        currency: value_text(p_currency),
        order_id: value_text(p_order_id),
        revenue: value_f64(p_revenue.or(p_total)),
        properties: properties.map(Cow::Borrowed),
        traits: traits.map(Cow::Borrowed),
        context: context_text,
        integrations: integrations.map(Cow::Borrowed),
        event_date: days_from_time(occurred),
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

/// Salted SHA-256 of an IP address.
pub fn hash_ip(salt: &str, ip: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"\0");
    h.update(ip.trim().as_bytes());
    hex::encode(h.finalize())
}

/// [`strip_query`], copying only when there is something to strip.
/// The device class a User-Agent names, for events whose context has no
/// `device.type`: `tablet` (iPad, Android without "Mobile", "Tablet"),
/// `mobile` ("Mobi", iPhone, iPod, Android phones), else `desktop`.
pub fn device_from_user_agent(ua: &str) -> Option<&'static str> {
    let ua = ua.trim();
    if ua.is_empty() {
        return None;
    }
    let has = |needle: &str| {
        ua.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if has("ipad") || has("tablet") || (has("android") && !has("mobile")) {
        Some("tablet")
    } else if has("mobi") || has("iphone") || has("ipod") || has("android") {
        Some("mobile")
    } else {
        Some("desktop")
    }
}

/// The value of query parameter `key` in `url` (percent-decoded, `+` as a
/// space), if present and not empty.
fn utm<'a>(url: &Text<'_>, key: &str) -> Text<'a> {
    let url = url.as_deref()?;
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k != key || v.is_empty() {
            return None;
        }
        Some(Cow::Owned(percent_decode(v)))
    })
}

/// `%XX` escapes and `+` decoded; invalid escapes and bytes kept as sent.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_query_cow<'a>(url: Cow<'a, str>, params: &[String]) -> Cow<'a, str> {
    if params.is_empty() || !url.contains('?') {
        url
    } else {
        Cow::Owned(strip_query(&url, params))
    }
}

/// Remove the named query parameters (or all, with `*`) from a URL.
///
/// A parameter's name is compared after form decoding (`%XX` escapes and
/// `+`, as a server would read it) and without regard to ASCII case, so
/// `em%61il=` and `EMAIL=` go under a rule for `email`; every copy of a
/// repeated parameter goes. Kept parameters keep their exact text.
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
                let Some((key, _)) = url::form_urlencoded::parse(kv.as_bytes()).next() else {
                    return false;
                };
                !params.iter().any(|p| p.eq_ignore_ascii_case(&key))
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

/// A property as text: strings (non-empty), numbers and booleans.
fn value_text(v: Option<Raw<'_>>) -> Text<'_> {
    match v?.scalar() {
        Scalar::Str(s) if !s.is_empty() => Some(s),
        Scalar::Num(n) => number_text(n),
        Scalar::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        _ => None,
    }
}

/// A property as a number: JSON numbers, or strings holding one.
fn value_f64(v: Option<Raw<'_>>) -> Option<f64> {
    match v?.scalar() {
        Scalar::Num(n) => n.parse::<f64>().ok().filter(|f| f.is_finite()),
        Scalar::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
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
    fn context_is_kept_as_sent_unless_something_must_go() {
        let c = ctx("2026-01-01T11:00:10Z");
        // A page URL with a query but nothing to strip: byte for byte.
        let sent = r#"{ "page": {"url": "https://x.test/p?q=1",  "title":"T"}, "locale":"en-GB", "app": {"v": 1.10} }"#;
        let text = format!(
            r#"{{"type":"track","event":"E","anonymousId":"a","messageId":"m","context":{sent}}}"#
        );
        let r = normalize_json(&text, &Defaults::default(), &c).unwrap();
        assert_eq!(r.context.as_deref(), Some(sent));
        // Something to strip: members keep their order and their text.
        let sent = r#"{"z":1.10,"page":{"url":"https://x.test/p?email=a&q=1","title":"T"},"ip":"1.2.3.4","a":[1, 2]}"#;
        let text = format!(
            r#"{{"type":"track","event":"E","anonymousId":"a","messageId":"m","context":{sent}}}"#
        );
        let r = normalize_json(&text, &Defaults::default(), &c).unwrap();
        assert_eq!(
            r.context.as_deref(),
            Some(r#"{"z":1.10,"page":{"url":"https://x.test/p?q=1","title":"T"},"a":[1, 2]}"#)
        );
        assert!(r.ip_hash.is_some());
        // A batch's context fills in after the event's own members, in order.
        let defaults = Defaults {
            context: Some(r#"{"library":{"name":"sdk"},"locale":"fr","zeta":2.50}"#),
            ..Defaults::default()
        };
        let text = r#"{"type":"track","event":"E","anonymousId":"a","messageId":"m","context":{"locale":"en","b":1.0}}"#;
        let r = normalize_json(text, &defaults, &c).unwrap();
        assert_eq!(
            r.context.as_deref(),
            Some(r#"{"locale":"en","b":1.0,"library":{"name":"sdk"},"zeta":2.50}"#)
        );
    }

    #[test]
    fn device_and_campaign_are_filled_from_user_agent_and_page_url() {
        let c = ctx("2026-01-01T11:00:10Z");
        let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
        let e = json!({"type":"page","anonymousId":"a","messageId":"m",
            "context":{"userAgent": phone,
                "page":{"url":"https://x.test/p?utm_source=news%20letter&utm_medium=email&utm_campaign=black+friday&email=a@b.c"}}});
        let r = normalize(&e, None, &c).unwrap();
        assert_eq!(r.device_type.as_deref(), Some("mobile"));
        assert_eq!(r.campaign_source.as_deref(), Some("news letter"));
        assert_eq!(r.campaign_medium.as_deref(), Some("email"));
        assert_eq!(r.campaign_name.as_deref(), Some("black friday"));
        assert_eq!(
            r.page_url.as_deref(),
            Some("https://x.test/p?utm_source=news%20letter&utm_medium=email&utm_campaign=black+friday"),
            "stripping still applies"
        );
        // What the client said wins over what CROW would infer.
        let e = json!({"type":"page","anonymousId":"a","messageId":"m",
            "context":{"userAgent": phone, "device":{"type":"TV"},
                "campaign":{"source":"ads"},
                "page":{"url":"https://x.test/p?utm_source=news&utm_medium=email"}}});
        let r = normalize(&e, None, &c).unwrap();
        assert_eq!(r.device_type.as_deref(), Some("tv"));
        assert_eq!(r.campaign_source.as_deref(), Some("ads"));
        assert_eq!(r.campaign_medium, None, "context.campaign is taken whole");
        for (ua, want) in [
            ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)", Some("tablet")),
            ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 Safari/537.36", Some("tablet")),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Mobile Safari/537.36", Some("mobile")),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", Some("desktop")),
            ("  ", None),
        ] {
            assert_eq!(device_from_user_agent(ua), want, "{ua}");
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
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
            days_from_time(parse_time("2025-03-01T00:00:00Z").unwrap())
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
            (json!([1]), FailureCode::NotAnObject),
            (
                json!({"type":"track","anonymousId":"a"}),
                FailureCode::MissingField,
            ),
            (
                json!({"type":"track","event":"x"}),
                FailureCode::MissingIdentity,
            ),
            (
                json!({"type":"bogus","userId":"u"}),
                FailureCode::InvalidType,
            ),
            (
                json!({"type":"page","userId":"u","timestamp":"yesterday"}),
                FailureCode::InvalidTimestamp,
            ),
            (
                json!({"type":"page","userId":"u","properties":[1]}),
                FailureCode::InvalidField,
            ),
            (
                json!({"type":"alias","userId":"u"}),
                FailureCode::MissingField,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(normalize(&e, None, &c).unwrap_err().code, code, "{e}");
        }
        // The endpoint's type applies when the event has none.
        let row = normalize(&json!({"event":"x","userId":"u"}), Some("track"), &c)
            .expect("a track event from the endpoint's type");
        assert_eq!(
            (
                row.kind.as_ref(),
                row.event.as_deref(),
                row.user_id.as_deref()
            ),
            ("track", Some("x"), Some("u"))
        );
    }

    #[test]
    fn binary_rows_decode_exactly_like_json_rows() {
        let c = ctx("2026-01-01T11:00:10Z");
        let events = [
            json!({"type":"track","event":"Say \"hi\" ✓","anonymousId":"a","messageId":"m1",
                "timestamp":"2026-01-01T10:00:00Z","sentAt":"2026-01-01T10:00:05Z",
                "properties":{"product_id":7,"price":"19.5","quantity":2.0,"name":"Aria","on_sale":true},
                "context":{"device":{"type":"Mobile"},"campaign":{"source":"google","medium":"cpc","name":"x"},
                    "page":{"url":"https://x.test/a?email=e&k=1","path":"/a","referrer":"https://r.test/","title":"A"},
                    "userAgent":"UA","ip":"10.0.0.1"},
                "traits":{"plan":"pro"},"integrations":{"All":true}}),
            json!({"type":"page","userId":"u"}),
            json!({"type":"track","event":"Order Completed","userId":42,
                "properties":{"order_id":"o1","total":"10.5","currency":"EUR"}}),
        ];
        let rows: Vec<_> = events
            .iter()
            .map(|e| normalize(e, None, &c).unwrap())
            .collect();
        let via_json =
            crow_lake::batch::rows_to_batch(&crow_schemas::RAW_WEB_EVENTS, &rows).unwrap();
        let bufs: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| {
                let mut b = Vec::new();
                r.encode(&mut b);
                b
            })
            .collect();
        let refs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        let via_binary = crate::rowcodec::decode_rows(
            &crow_schemas::RAW_WEB_EVENTS.schema(),
            crow_schemas::RAW_WEB_EVENTS.version,
            &refs,
        )
        .unwrap();
        assert_eq!(via_json, via_binary);
        assert_eq!(rows[0].event.as_deref(), Some("Say \"hi\" ✓"));
        assert_eq!(rows[0].product_id.as_deref(), Some("7"));
        assert_eq!(rows[0].product_quantity, Some(2));
        assert_eq!(rows[2].user_id.as_deref(), Some("42"));
        assert_eq!(rows[2].revenue, Some(10.5));
        // A truncated row is an error, not a short batch.
        assert!(crate::rowcodec::decode_rows(
            &crow_schemas::RAW_WEB_EVENTS.schema(),
            crow_schemas::RAW_WEB_EVENTS.version,
            &[&bufs[0][..bufs[0].len() - 3]]
        )
        .is_err());
    }

    #[test]
    fn request_text_is_read_in_place() {
        let c = ctx("2026-01-01T11:00:10Z");
        // Escaped keys still match; payloads are kept as sent.
        let text = r#"{"type":"track","event":"E","user\u0049d":"u1","properties": {"sku" : "S-1", "x":[1,{"y":2}]},
            "context":{"userAgent":"mine","page":{"url":"https://x.test/p"}},"unknown":{"deep":[[[]]]}}"#;
        let d = Defaults {
            kind: None,
            sent_at: Some("\"2026-01-01T10:00:05Z\""),
            context: None,
        };
        let r = normalize_json(text, &d, &c).unwrap();
        assert_eq!(r.user_id.as_deref(), Some("u1"));
        assert_eq!(r.product_sku.as_deref(), Some("S-1"));
        assert_eq!(
            r.properties.as_deref(),
            Some(r#"{"sku" : "S-1", "x":[1,{"y":2}]}"#)
        );
        assert!(matches!(r.properties, Some(Cow::Borrowed(_))));
        assert!(matches!(r.context, Some(Cow::Borrowed(_))));
        assert_eq!(r.page_url.as_deref(), Some("https://x.test/p"));
        // The batch's sentAt applies (no timestamp: the receive time).
        assert_eq!(
            r.sent_at,
            Some(
                parse_time("2026-01-01T10:00:05Z")
                    .unwrap()
                    .timestamp_micros()
            )
        );

        // The batch's context fills in what the event's lacks.
        let d = Defaults {
            kind: None,
            sent_at: None,
            context: Some(r#"{"userAgent":"batch","device":{"type":"Tablet"},"ip":"1.2.3.4"}"#),
        };
        let r = normalize_json(text, &d, &c).unwrap();
        assert_eq!(r.user_agent.as_deref(), Some("mine"));
        assert_eq!(r.device_type.as_deref(), Some("tablet"));
        assert_eq!(
            r.ip_hash.as_deref(),
            Some(hash_ip("salt", "1.2.3.4").as_str())
        );
        assert!(!r.context.as_deref().unwrap_or_default().contains("1.2.3.4"));

        // Nesting: the bound is exact, and brackets in strings do not count.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nested_deeper_than(&deep(MAX_DEPTH), MAX_DEPTH));
        assert!(nested_deeper_than(&deep(MAX_DEPTH + 1), MAX_DEPTH));
        let quoted = format!("{{\"a\":\"{}\"}}", "[".repeat(500));
        assert!(!nested_deeper_than(&quoted, MAX_DEPTH));
        let event = format!(
            r#"{{"type":"page","userId":"u","properties":{{"a":{}}}}}"#,
            deep(200)
        );
        assert_eq!(
            normalize_json(&event, &Defaults::default(), &c)
                .unwrap_err()
                .code,
            FailureCode::TooDeep
        );
        // A repeated key: the last one wins.
        let r = normalize_json(
            r#"{"type":"page","userId":"u1","userId":"u2"}"#,
            &Defaults::default(),
            &c,
        )
        .unwrap();
        assert_eq!(r.user_id.as_deref(), Some("u2"));
    }

    #[test]
    fn hostile_events_are_refused_or_cleaned() {
        let c = ctx("2026-01-01T11:00:10Z");
        let d = Defaults::default();
        // A repeated page hides an address in its first copy: the stored
        // context is rewritten, keeping only the (stripped) last copy.
        let r = normalize_json(
            r#"{"type":"page","userId":"u","context":{"page":{"url":"https://s/?email=a@b.c"},"page":{"url":"https://s/?q=1"}}}"#,
            &d,
            &c,
        )
        .unwrap();
        let stored = r.context.as_deref().unwrap_or_default();
        assert!(!stored.contains("a@b.c"), "{stored}");
        assert_eq!(r.page_url.as_deref(), Some("https://s/?q=1"));
        let r = normalize_json(
            r#"{"type":"page","userId":"u","context":{"page":{"url":"https://s/?email=a@b.c","url":"https://s/"}}}"#,
            &d,
            &c,
        )
        .unwrap();
        assert!(!r.context.as_deref().unwrap_or_default().contains("a@b.c"));
        // A lone surrogate is invalid JSON, wherever it is.
        for text in [
            r#"{"type":"page","userId":"\ud800"}"#,
            r#"{"type":"page","userId":"u","properties":{"x":"\uDC00"}}"#,
        ] {
            assert_eq!(
                normalize_json(text, &d, &c).unwrap_err().code,
                FailureCode::InvalidJson,
                "{text}"
            );
        }
        // A valid pair is fine.
        let r = normalize_json(r#"{"type":"page","userId":"\ud83d\ude00"}"#, &d, &c).unwrap();
        assert_eq!(r.user_id.as_deref(), Some("😀"));
        // Numeric ids read as before: integers as sent, others as serde_json
        // prints them; a number no float holds is refused.
        for (id, want) in [
            ("42", "42"),
            ("-7", "-7"),
            ("1.0", "1.0"),
            ("1e3", "1000.0"),
        ] {
            let text = format!(r#"{{"type":"page","userId":{id}}}"#);
            let r = normalize_json(&text, &d, &c).unwrap();
            assert_eq!(r.user_id.as_deref(), Some(want), "{id}");
        }
        assert_eq!(
            normalize_json(r#"{"type":"page","userId":1e400}"#, &d, &c)
                .unwrap_err()
                .code,
            FailureCode::InvalidJson
        );
        // Times so far apart that the skew correction overflows: refused, no panic.
        assert_eq!(
            normalize_json(
                r#"{"type":"page","userId":"u","timestamp":"-200000-01-01T00:00:00","sentAt":"+200000-01-01T00:00:00"}"#,
                &d,
                &c
            )
            .unwrap_err()
            .code,
            FailureCode::InvalidTimestamp
        );
    }

    /// A rule matches the parameter's name as a server decodes it: escaped,
    /// `+`-encoded, in any case, and every copy of it.
    #[test]
    fn strip_query_decodes_names() {
        let p = vec!["email".to_string(), "first name".to_string()];
        for (sent, kept) in [
            ("https://a/b?em%61il=x%40y.z&q=1", "https://a/b?q=1"),
            ("https://a/b?%65%6D%61%69%6C=x&q=1", "https://a/b?q=1"),
            ("https://a/b?EMAIL=x&q=1", "https://a/b?q=1"),
            ("https://a/b?Em%41il=x&q=1#f", "https://a/b?q=1#f"),
            (
                "https://a/b?email=1&q=1&email=2&em%61il=3",
                "https://a/b?q=1",
            ),
            ("https://a/b?email&q=%65mail", "https://a/b?q=%65mail"),
            (
                "https://a/b?first+name=Ann&first%20name=Bo&last=C",
                "https://a/b?last=C",
            ),
            ("https://a/b?q=1&&email=x", "https://a/b?q=1"),
            // Only one level of decoding, as a server does: `%2561` is `%61`.
            ("https://a/b?em%2561il=x", "https://a/b?em%2561il=x"),
            (
                "https://a/b?emails=x&e-mail=y",
                "https://a/b?emails=x&e-mail=y",
            ),
        ] {
            assert_eq!(strip_query(sent, &p), kept, "{sent}");
        }
    }

    /// Through the normaliser: the page URL, the referrer and every copy in
    /// the stored context lose an encoded `email`.
    #[test]
    fn encoded_names_are_stripped_from_stored_events() {
        let c = ctx("2026-01-01T11:00:10Z");
        let e = json!({"type":"page","anonymousId":"a","messageId":"m",
            "context":{"page":{"url":"https://x.test/p?em%61il=a%40b.c&q=1",
                "referrer":"https://r.test/?EM%41IL=a%40b.c",
                "search":"?Email=a%40b.c"}}});
        let r = normalize(&e, None, &c).unwrap();
        assert_eq!(r.page_url.as_deref(), Some("https://x.test/p?q=1"));
        assert_eq!(r.page_referrer.as_deref(), Some("https://r.test/"));
        let context = r.context.as_deref().unwrap_or_default();
        assert!(!context.contains("a%40b.c"), "{context}");
        assert!(context.contains("https://x.test/p?q=1"), "{context}");
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
