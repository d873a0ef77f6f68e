//! Rows ⇄ Arrow record batches, by each table's contract.
//!
//! Writers build rows as serde structs whose field names are the table's
//! columns (timestamps as microseconds since the epoch, dates as days), and
//! [`rows_to_batch`] turns them into a batch with exactly the table's schema.
//! Readers turn query results back into JSON objects with [`batches_to_json`].

use arrow::array::RecordBatch;
use arrow::json::ReaderBuilder;
use crow_schemas::TableDef;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Build one batch with `def`'s schema from serde rows. Unknown fields are
/// an error (they would be silently lost otherwise).
pub fn rows_to_batch<S: Serialize>(def: &TableDef, rows: &[S]) -> Result<RecordBatch> {
    let schema = def.schema();
    if rows.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len())
        .with_strict_mode(true)
        .build_decoder()?;
    decoder.serialize(rows)?;
    match decoder.flush()? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

/// Record batches as JSON objects, one per row (nulls omitted).
pub fn batches_to_json(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&buf)?)
}

/// Record batches as typed rows.
pub fn batches_to_rows<T: DeserializeOwned>(batches: &[RecordBatch]) -> Result<Vec<T>> {
    batches_to_json(batches)?
        .into_iter()
        .map(|m| serde_json::from_value(serde_json::Value::Object(m)).map_err(Error::from))
        .collect()
}

/// Serde helpers for timestamps: written as microseconds since the epoch,
/// read from microseconds or RFC 3339 text (as Arrow's JSON writer emits).
pub mod ts_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Micros(i64),
        Text(String),
    }

    fn from_raw<E: serde::de::Error>(raw: Raw) -> Result<DateTime<Utc>, E> {
        match raw {
            Raw::Micros(m) => DateTime::from_timestamp_micros(m)
                .ok_or_else(|| E::custom("timestamp out of range")),
            Raw::Text(s) => parse(&s).ok_or_else(|| E::custom(format!("invalid timestamp {s:?}"))),
        }
    }

    fn parse(s: &str) -> Option<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.with_timezone(&Utc));
        }
        chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc())
    }

    /// Serialize as microseconds.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.timestamp_micros())
    }

    /// Deserialize from microseconds or RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        from_raw(Raw::deserialize(d)?)
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::*;

        /// Serialize as microseconds or null.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.timestamp_micros()),
                None => s.serialize_none(),
            }
        }

        /// Deserialize from microseconds, RFC 3339 or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<Raw>::deserialize(d)? {
                Some(r) => from_raw(r).map(Some),
                None => Ok(None),
            }
        }
    }
}
