//! Segment's events as Parquet, for `crow import`: each row becomes the
//! Segment event it records, as one JSON line, so a Parquet export goes
//! through the same normaliser, validation and exactly-once import as the
//! JSON-lines archive.
//!
//! Column names are Segment's, as its warehouse and data-lake exports write
//! them (snake case, nested objects flattened with `_`), or the event's own
//! names (camel case, nested objects as struct or JSON-text columns):
//!
//! - `id`/`message_id`, `anonymous_id`, `user_id`, `group_id`,
//!   `previous_id`, `event`, `type`, `name`, `timestamp`,
//!   `original_timestamp`, `sent_at`, `received_at` are the event's
//!   top-level fields (`messageId`, `anonymousId`, …).
//! - `context`, `properties`, `traits`, `integrations`: a struct column, or
//!   text holding a JSON object, is the object itself.
//! - `context_*`: the context, flattened — `context_page_url` is
//!   `context.page.url`, `context_user_agent` is `context.userAgent`,
//!   `context_campaign_source` is `context.campaign.source` (the keys CROW
//!   reads are listed in [`CONTEXT`]); any other `context_x` is `context.x`.
//! - `properties_x` is `properties.x`; `traits_x` is `traits.x`.
//! - `uuid_ts`, `loaded_at` and `event_text` (the warehouse's bookkeeping)
//!   are left out; every other column is a property of the event (a trait
//!   for `identify` and `group` calls), as in Segment's per-event tables.
//! - Without a `type` column, a row with an `event` is a `track` call and
//!   any other a `page` call.
//!
//! Null cells are absent fields. A row the normaliser then refuses lands in
//! `failed_events` with its reason and its JSON, like a bad archive line.

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

/// Whether `data` is a Parquet file (its magic number at both ends).
pub fn is_parquet(data: &[u8]) -> bool {
    data.len() >= 12 && data.starts_with(b"PAR1") && data.ends_with(b"PAR1")
}

/// The file's rows as Segment events, one JSON object per line.
pub fn to_json_lines(data: &[u8]) -> Result<Vec<u8>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(data))
        .map_err(|e| e.to_string())?
        .with_batch_size(8192)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(data.len() * 4);
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        for row in rows_of(&batch)? {
            serde_json::to_writer(&mut out, &segment_event(row)).map_err(|e| e.to_string())?;
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// A batch's rows as JSON objects named by column (nulls left out).
fn rows_of(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, String> {
    let mut buf = Vec::new();
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(false)
        .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
        .collect()
}

/// The event's top-level fields by their column names.
const TOP: &[(&str, &str)] = &[
    ("id", "messageId"),
    ("message_id", "messageId"),
    ("messageId", "messageId"),
    ("anonymous_id", "anonymousId"),
    ("anonymousId", "anonymousId"),
    ("user_id", "userId"),
    ("userId", "userId"),
    ("group_id", "groupId"),
    ("groupId", "groupId"),
    ("previous_id", "previousId"),
    ("previousId", "previousId"),
    ("event", "event"),
    ("type", "type"),
    ("name", "name"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
    ("originalTimestamp", "originalTimestamp"),
    ("sent_at", "sentAt"),
    ("sentAt", "sentAt"),
    ("received_at", "receivedAt"),
    ("receivedAt", "receivedAt"),
];

/// The objects an event carries, by their column names.
const OBJECTS: &[&str] = &["context", "properties", "traits", "integrations"];

/// The warehouse's own columns, not the event's.
const BOOKKEEPING: &[&str] = &["uuid_ts", "loaded_at", "event_text"];

/// Flattened context columns and their place in `context`: the keys
/// CROW reads, in Segment's spelling.
pub const CONTEXT: &[(&str, &[&str])] = &[
    ("context_page_url", &["page", "url"]),
    ("context_page_path", &["page", "path"]),
    ("context_page_title", &["page", "title"]),
    ("context_page_referrer", &["page", "referrer"]),
    ("context_page_search", &["page", "search"]),
    ("context_user_agent", &["userAgent"]),
    ("context_ip", &["ip"]),
    ("context_locale", &["locale"]),
    ("context_timezone", &["timezone"]),
    ("context_campaign_source", &["campaign", "source"]),
    ("context_campaign_medium", &["campaign", "medium"]),
    ("context_campaign_name", &["campaign", "name"]),
    ("context_campaign_term", &["campaign", "term"]),
    ("context_campaign_content", &["campaign", "content"]),
    ("context_device_type", &["device", "type"]),
    ("context_device_id", &["device", "id"]),
    ("context_device_manufacturer", &["device", "manufacturer"]),
    ("context_device_model", &["device", "model"]),
    ("context_os_name", &["os", "name"]),
    ("context_os_version", &["os", "version"]),
    ("context_library_name", &["library", "name"]),
    ("context_library_version", &["library", "version"]),
    ("context_screen_width", &["screen", "width"]),
    ("context_screen_height", &["screen", "height"]),
];

/// One row as the Segment event it records. Whole-object columns go in
/// first, so a flattened column only fills in what they leave out.
fn segment_event(row: Map<String, Value>) -> Value {
    let mut event = Map::new();
    let mut objects: Map<String, Value> = Map::new();
    let mut loose: Vec<(String, Value)> = Vec::new();
    let (whole, flat): (Vec<_>, Vec<_>) = row
        .into_iter()
        .partition(|(c, _)| OBJECTS.contains(&c.as_str()));
    for (column, value) in whole {
        merge(&mut objects, &column, &[], object_of(value));
    }
    for (column, value) in flat {
        if let Some((_, field)) = TOP.iter().find(|(c, _)| *c == column) {
            event.entry(*field).or_insert(value);
        } else if let Some((_, path)) = CONTEXT.iter().find(|(c, _)| *c == column) {
            merge(&mut objects, "context", path, value);
        } else if let Some((object, key)) = prefixed(&column) {
            merge(&mut objects, object, &[key], value);
        } else if !BOOKKEEPING.contains(&column.as_str()) {
            loose.push((column, value));
        }
    }
    if !event.contains_key("type") {
        let kind = if event.contains_key("event") {
            "track"
        } else {
            "page"
        };
        event.insert("type".into(), Value::from(kind));
    }
    let into = match event.get("type").and_then(Value::as_str) {
        Some("identify" | "group") => "traits",
        _ => "properties",
    };
    for (column, value) in loose {
        merge(&mut objects, into, &[column.as_str()], value);
    }
    event.extend(objects);
    Value::Object(event)
}

/// `context_x`, `properties_x`, `traits_x`: the object and the key `x`.
fn prefixed(column: &str) -> Option<(&'static str, &str)> {
    ["context", "properties", "traits"]
        .into_iter()
        .find_map(|o| {
            let key = column.strip_prefix(o)?.strip_prefix('_')?;
            (!key.is_empty()).then_some((o, key))
        })
}

/// A struct cell is an object already; text holding a JSON object is that
/// object; anything else stays as it is (and the normaliser refuses it by
/// name).
fn object_of(value: Value) -> Value {
    match value {
        Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        v => v,
    }
}

/// Put `value` at `object.path…` in `objects`, keeping what is there.
fn merge(objects: &mut Map<String, Value>, object: &str, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        objects.insert(object.to_string(), value);
        return;
    };
    let slot = objects
        .entry(object)
        .or_insert_with(|| Value::Object(Map::new()));
    let mut at = slot;
    for key in parents {
        let Value::Object(m) = at else { return };
        at = m.entry(*key).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(m) = at {
        m.entry(*last).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use serde_json::json;

    use super::*;

    fn write_parquet(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<(), String> {
        let mut w = parquet::arrow::ArrowWriter::try_new(out, batch.schema(), None)
            .map_err(|e| e.to_string())?;
        w.write(batch).map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn file(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let mut out = Vec::new();
        write_parquet(&mut out, &batch).expect("parquet");
        out
    }

    fn events(data: &[u8]) -> Vec<Value> {
        let text = to_json_lines(data).expect("converted");
        String::from_utf8(text)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn warehouse_columns_become_the_segment_event() {
        let ts = TimestampMicrosecondArray::from(vec![Some(1_790_000_000_000_000), None])
            .with_timezone("UTC");
        let data = file(vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["m1", "m2"])) as ArrayRef,
            ),
            (
                "anonymous_id",
                Arc::new(StringArray::from(vec![Some("a1"), None])),
            ),
            (
                "user_id",
                Arc::new(StringArray::from(vec![None, Some("u2")])),
            ),
            (
                "event",
                Arc::new(StringArray::from(vec![Some("Order Completed"), None])),
            ),
            ("timestamp", Arc::new(ts)),
            (
                "context_page_url",
                Arc::new(StringArray::from(vec![
                    "https://s.example/a",
                    "https://s.example/b",
                ])),
            ),
            (
                "context_user_agent",
                Arc::new(StringArray::from(vec![Some("UA"), None])),
            ),
            (
                "context_campaign_source",
                Arc::new(StringArray::from(vec![Some("news"), None])),
            ),
            (
                "context_app_build",
                Arc::new(StringArray::from(vec![Some("7"), None])),
            ),
            (
                "properties_currency",
                Arc::new(StringArray::from(vec![Some("EUR"), None])),
            ),
            ("revenue", Arc::new(Int64Array::from(vec![Some(42), None]))),
            ("uuid_ts", Arc::new(StringArray::from(vec!["x", "y"]))),
            (
                "event_text",
                Arc::new(StringArray::from(vec![
                    "Order Completed",
                    "Order Completed",
                ])),
            ),
        ]);
        assert!(is_parquet(&data));
        let got = events(&data);
        let t = chrono::DateTime::from_timestamp_micros(1_790_000_000_000_000)
            .expect("time")
            .naive_utc();
        let stamp = crate::normalize::parse_time(got[0]["timestamp"].as_str().expect("text"))
            .expect("a time");
        assert_eq!(stamp.naive_utc(), t, "{}", got[0]);
        assert_eq!(
            got[0],
            json!({
                "messageId": "m1", "anonymousId": "a1", "type": "track", "event": "Order Completed",
                "timestamp": got[0]["timestamp"],
                "context": {"page": {"url": "https://s.example/a"}, "userAgent": "UA",
                            "campaign": {"source": "news"}, "app_build": "7"},
                "properties": {"currency": "EUR", "revenue": 42},
            })
        );
        assert_eq!(
            got[1],
            json!({"messageId": "m2", "userId": "u2", "type": "page",
                   "context": {"page": {"url": "https://s.example/b"}}}),
            "no event: a page call; null cells are absent fields"
        );
    }

    #[test]
    fn object_columns_as_json_text_and_traits_of_identify_calls() {
        let data = file(vec![
            (
                "messageId",
                Arc::new(StringArray::from(vec!["m1", "m2"])) as ArrayRef,
            ),
            (
                "type",
                Arc::new(StringArray::from(vec!["identify", "track"])),
            ),
            ("userId", Arc::new(StringArray::from(vec!["u1", "u1"]))),
            (
                "context",
                Arc::new(StringArray::from(vec![
                    r#"{"page": {"url": "https://s.example/x", "path": "/x"}}"#,
                    "not an object",
                ])),
            ),
            (
                "context_page_url",
                Arc::new(StringArray::from(vec![
                    "https://s.example/flat",
                    "https://s.example/y",
                ])),
            ),
            ("plan", Arc::new(StringArray::from(vec!["pro", "pro"]))),
        ]);
        let got = events(&data);
        assert_eq!(
            got[0],
            json!({"messageId": "m1", "type": "identify", "userId": "u1",
                   "context": {"page": {"url": "https://s.example/x", "path": "/x"}},
                   "traits": {"plan": "pro"}}),
            "the object column wins over a flattened one; other columns are traits of an identify call"
        );
        assert_eq!(
            got[1]["context"],
            json!("not an object"),
            "text that is not an object stays, for the normaliser to refuse by name"
        );
        assert_eq!(got[1]["properties"], json!({"plan": "pro"}));
    }

    #[test]
    fn not_parquet_is_an_error_not_a_panic() {
        assert!(!is_parquet(b"PAR1"));
        assert!(!is_parquet(b"{\"type\": \"track\"}\n"));
        let broken = b"PAR1 this is no parquet file at all PAR1";
        assert!(is_parquet(broken));
        assert!(to_json_lines(broken).is_err());
    }
}
