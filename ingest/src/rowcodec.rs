//! The WAL's binary row format, and its decoder into Arrow.
//!
//! A row is the table's schema version and its column count (both LEB128),
//! then every column in the table's order:
//! - text: LEB128 of `length + 1`, then the UTF-8 bytes; `0` is null;
//! - 64-bit integers, timestamps and floats: `0` for null, or `1` and eight
//!   little-endian bytes;
//! - 32-bit integers and dates: `0` for null, or `1` and four bytes;
//! - booleans: `0` null, `1` false, `2` true.
//!
//! The decoder is driven by the table's Arrow schema, so the collector
//! builds record batches straight from the rows it logged, without a JSON
//! round trip. A row of another schema version is refused (the segment is
//! then quarantined, loudly, never misread).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

/// Appends one row's columns to a buffer.
pub struct RowWriter<'b> {
    buf: &'b mut Vec<u8>,
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl<'b> RowWriter<'b> {
    /// Start a row of `columns` columns of schema version `version`.
    pub fn new(buf: &'b mut Vec<u8>, version: u32, columns: usize) -> Self {
        put_varint(buf, u64::from(version));
        put_varint(buf, columns as u64);
        Self { buf }
    }

    /// A text column.
    pub fn text(&mut self, v: Option<&str>) {
        match v {
            None => self.buf.push(0),
            Some(s) => {
                put_varint(self.buf, s.len() as u64 + 1);
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    /// A 64-bit integer or timestamp column.
    pub fn i64(&mut self, v: Option<i64>) {
        self.fixed(v.map(i64::to_le_bytes));
    }

    /// A 32-bit integer or date column.
    pub fn i32(&mut self, v: Option<i32>) {
        self.fixed(v.map(i32::to_le_bytes));
    }

    /// A float column.
    pub fn f64(&mut self, v: Option<f64>) {
        self.fixed(v.map(f64::to_le_bytes));
    }

    fn fixed<const N: usize>(&mut self, v: Option<[u8; N]>) {
        match v {
            None => self.buf.push(0),
            Some(bytes) => {
                self.buf.push(1);
                self.buf.extend_from_slice(&bytes);
            }
        }
    }

    /// A boolean column.
    pub fn bool(&mut self, v: Option<bool>) {
        self.buf.push(match v {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }
}

/// Why rows could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("WAL row {row}: {message}")]
pub struct DecodeError {
    row: usize,
    message: String,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("truncated row")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// A fixed-width value after its null marker.
    fn fixed<const N: usize>(&mut self) -> Result<Option<[u8; N]>, String> {
        match self.byte()? {
            0 => Ok(None),
            1 => {
                let end = self.pos + N;
                let s = self.data.get(self.pos..end).ok_or("truncated row")?;
                self.pos = end;
                let mut out = [0u8; N];
                out.copy_from_slice(s);
                Ok(Some(out))
            }
            b => Err(format!("bad null marker {b}")),
        }
    }

    fn text(&mut self) -> Result<Option<&'a str>, String> {
        let n = self.varint()? as usize;
        if n == 0 {
            return Ok(None);
        }
        let end = self
            .pos
            .checked_add(n - 1)
            .filter(|e| *e <= self.data.len())
            .ok_or("truncated text")?;
        let s = std::str::from_utf8(&self.data[self.pos..end]).map_err(|e| e.to_string())?;
        self.pos = end;
        Ok(Some(s))
    }
}

enum Column {
    Text(StringBuilder),
    I64(Int64Builder),
    Ts(TimestampMicrosecondBuilder),
    I32(Int32Builder),
    Date(Date32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl Column {
    /// The bytes this column's value takes in a row (after its marker), for
    /// sizing; `None` when the row is malformed (the decoder says why).
    fn skip(dt: &DataType, r: &mut Reader<'_>) -> Option<usize> {
        let n = match dt {
            DataType::Utf8 => return r.text().ok().map(|t| t.map_or(0, str::len)),
            DataType::Boolean => return r.byte().ok().map(|_| 0),
            DataType::Int64 | DataType::Float64 | DataType::Timestamp(_, _) => 8,
            _ => 4,
        };
        if r.byte().ok()? == 1 {
            r.pos += n;
        }
        Some(0)
    }

    fn new(dt: &DataType, rows: usize, text_bytes: usize) -> Result<Column, String> {
        Ok(match dt {
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(rows, text_bytes)),
            DataType::Int64 => Column::I64(Int64Builder::with_capacity(rows)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Column::Ts(
                TimestampMicrosecondBuilder::with_capacity(rows).with_data_type(dt.clone()),
            ),
            DataType::Int32 => Column::I32(Int32Builder::with_capacity(rows)),
            DataType::Date32 => Column::Date(Date32Builder::with_capacity(rows)),
            DataType::Float64 => Column::F64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            other => return Err(format!("no binary row encoding for {other}")),
        })
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), String> {
        match self {
            Column::Text(b) => b.append_option(r.text()?),
            Column::I64(b) => b.append_option(r.fixed()?.map(i64::from_le_bytes)),
            Column::Ts(b) => b.append_option(r.fixed()?.map(i64::from_le_bytes)),
            Column::I32(b) => b.append_option(r.fixed()?.map(i32::from_le_bytes)),
            Column::Date(b) => b.append_option(r.fixed()?.map(i32::from_le_bytes)),
            Column::F64(b) => b.append_option(r.fixed()?.map(f64::from_le_bytes)),
            Column::Bool(b) => b.append_option(match r.byte()? {
                0 => None,
                1 => Some(false),
                2 => Some(true),
                x => return Err(format!("bad boolean {x}")),
            }),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::I64(mut b) => Arc::new(b.finish()),
            Column::Ts(mut b) => Arc::new(b.finish()),
            Column::I32(mut b) => Arc::new(b.finish()),
            Column::Date(mut b) => Arc::new(b.finish()),
            Column::F64(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Decode binary rows into one record batch of `schema` (schema version
/// `version`).
pub fn decode_rows(
    schema: &SchemaRef,
    version: u32,
    rows: &[&[u8]],
) -> Result<RecordBatch, DecodeError> {
    let fail = |row: usize| move |message: String| DecodeError { row, message };
    // Each text column gets exactly the room its values need.
    let mut text_bytes = vec![0usize; schema.fields().len()];
    for row in rows {
        let mut r = Reader { data: row, pos: 0 };
        if r.varint().and_then(|_| r.varint()).is_err() {
            break;
        }
        for (f, total) in schema.fields().iter().zip(text_bytes.iter_mut()) {
            match Column::skip(f.data_type(), &mut r) {
                Some(n) => *total += n,
                None => break,
            }
        }
    }
    let mut columns = schema
        .fields()
        .iter()
        .zip(&text_bytes)
        .map(|(f, bytes)| Column::new(f.data_type(), rows.len(), *bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail(0))?;
    for (i, row) in rows.iter().enumerate() {
        let mut r = Reader { data: row, pos: 0 };
        let v = r.varint().map_err(fail(i))?;
        let n = r.varint().map_err(fail(i))?;
        if v != u64::from(version) || n != columns.len() as u64 {
            return Err(fail(i)(format!(
                "schema version {v} with {n} columns, but the table is version {version} with {}",
                columns.len()
            )));
        }
        for c in &mut columns {
            c.read(&mut r).map_err(fail(i))?;
        }
        if r.pos != row.len() {
            return Err(fail(i)(format!("{} bytes left over", row.len() - r.pos)));
        }
    }
    let arrays = columns.into_iter().map(Column::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| fail(0)(e.to_string()))
}
