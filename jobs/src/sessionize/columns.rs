//! Reading the scans' columns, whatever string or time type they came as.

use super::*;

/// A text column as Utf8 (whatever string type the scan produced).
pub(super) fn text(b: &RecordBatch, name: &str) -> Result<crow_lake::arrow::array::StringArray> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column {name} missing from the scan")))?;
    let c = cast(c, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

pub(super) fn micros(b: &RecordBatch, name: &str) -> Result<crow_lake::arrow::array::Int64Array> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("column {name} missing from the scan")))?;
    let c = cast(c, &DataType::Int64)?;
    Ok(c.as_primitive::<crow_lake::arrow::datatypes::Int64Type>()
        .clone())
}

pub(super) fn opt_str(a: &crow_lake::arrow::array::StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Deterministic session id: same org, channel, key and start → same id.
pub(super) fn session_id(org: &str, channel: &str, key: &str, start: i64) -> String {
    let mut h = Sha256::new();
    h.update(org.as_bytes());
    h.update([0]);
    h.update(channel.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(start.to_le_bytes());
    let hex = hex::encode(h.finalize());
    format!("ses_{}", &hex[..26])
}
