//! Arrow columns as Postgres values: type OIDs, and the text and binary
//! encodings of each row. Lists, structs and maps are sent as JSON text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::{BufMut, BytesMut};
use datafusion::common::ScalarValue;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

use super::user_error;

/// Microseconds from the Unix epoch to Postgres' (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to Postgres' epoch.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The Postgres type a column of `t` is sent as.
pub fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..) => Type::JSON,
        _ => Type::TEXT,
    }
}

/// The arrow type a parameter declared as `t` is read as.
pub fn arrow_type(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => DataType::Float64,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => DataType::Utf8,
        _ => return None,
    })
}

/// The row description of a result.
pub fn fields(
    schema: &arrow::datatypes::Schema,
    format: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format(i),
            )
        })
        .collect()
}

/// Whether the binary encoding of a column of `t` is implemented.
fn binary_ok(t: &Type) -> bool {
    *t != Type::NUMERIC
}

/// Refuse binary results for columns whose binary encoding CROW lacks.
pub fn check_formats(fields: &[FieldInfo]) -> PgWireResult<()> {
    for f in fields {
        if f.format() == FieldFormat::Binary && !binary_ok(f.datatype()) {
            return Err(user_error(
                "0A000",
                format!(
                    "column `{}` ({}) is only sent in text format",
                    f.name(),
                    f.datatype().name()
                ),
            ));
        }
    }
    Ok(())
}

/// One column prepared for encoding.
enum Column {
    /// Nested values, as JSON text per row.
    Json(Vec<Option<String>>),
    Plain(ArrayRef),
}

fn json_column(a: &ArrayRef) -> PgWireResult<Vec<Option<String>>> {
    let field = Field::new("v", a.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![field])),
        vec![a.clone()],
    )
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    w.write(&batch)
        .and_then(|()| w.finish())
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let out = w.into_inner();
    let mut values = Vec::with_capacity(a.len());
    for line in out.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        values.push(match row.remove("v") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.to_string()),
        });
    }
    Ok(values)
}

/// The rows of `batch`, each field in its format.
pub fn rows(batch: &RecordBatch, fields: &[FieldInfo]) -> PgWireResult<Vec<DataRow>> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            Ok(if pg_type(c.data_type()) == Type::JSON {
                Column::Json(json_column(c)?)
            } else {
                Column::Plain(c.clone())
            })
        })
        .collect::<PgWireResult<Vec<_>>>()?;
    let opts = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok())
        .collect::<Vec<_>>();
    let count = i16::try_from(fields.len()).unwrap_or(i16::MAX);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut buf = BytesMut::with_capacity(16 * fields.len());
        for (i, (col, f)) in columns.iter().zip(fields).enumerate() {
            let start = buf.len();
            buf.put_i32(-1);
            let written = match col {
                Column::Json(v) => match &v[row] {
                    Some(s) => {
                        buf.put_slice(s.as_bytes());
                        true
                    }
                    None => false,
                },
                // A NULL literal's column (`DataType::Null`) has no null
                // buffer: each of its values is NULL all the same.
                Column::Plain(a) if a.is_null(row) || a.data_type() == &DataType::Null => false,
                Column::Plain(a) => {
                    if f.format() == FieldFormat::Binary {
                        binary(a, row, &mut buf)?;
                    } else {
                        text(a, row, formatters[i].as_ref(), &mut buf);
                    }
                    true
                }
            };
            if written {
                let len = i32::try_from(buf.len() - start - 4).unwrap_or(i32::MAX);
                buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        out.push(DataRow::new(buf, count));
    }
    Ok(out)
}

fn micros(a: &ArrayRef, row: usize) -> Option<i64> {
    use arrow::datatypes::*;
    Some(match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => a
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            a.as_primitive::<TimestampNanosecondType>().value(row) / 1_000
        }
        _ => return None,
    })
}

fn days(a: &ArrayRef, row: usize) -> Option<i32> {
    use arrow::datatypes::*;
    match a.data_type() {
        DataType::Date32 => Some(a.as_primitive::<Date32Type>().value(row)),
        DataType::Date64 => {
            i32::try_from(a.as_primitive::<Date64Type>().value(row) / 86_400_000).ok()
        }
        _ => None,
    }
}

fn float_text(v: f64, buf: &mut BytesMut) {
    if v.is_nan() {
        buf.put_slice(b"NaN");
    } else if v.is_infinite() {
        buf.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        buf.put_slice(v.to_string().as_bytes());
    }
}

/// The text encoding of one value.
fn text(a: &ArrayRef, row: usize, f: Option<&ArrayFormatter>, buf: &mut BytesMut) {
    use arrow::datatypes::*;
    match a.data_type() {
        DataType::Boolean => buf.put_slice(if a.as_boolean().value(row) {
            b"t"
        } else {
            b"f"
        }),
        DataType::Float64 => float_text(a.as_primitive::<Float64Type>().value(row), buf),
        DataType::Float32 => float_text(f64::from(a.as_primitive::<Float32Type>().value(row)), buf),
        DataType::Timestamp(_, tz) => {
            let us = micros(a, row).unwrap_or_default();
            if let Some(t) = chrono::DateTime::from_timestamp_micros(us) {
                let s = if tz.is_some() {
                    t.format("%Y-%m-%d %H:%M:%S%.6f+00")
                } else {
                    t.format("%Y-%m-%d %H:%M:%S%.6f")
                };
                buf.put_slice(s.to_string().as_bytes());
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bytes: &[u8] = match a.data_type() {
                DataType::Binary => a.as_binary::<i32>().value(row),
                DataType::LargeBinary => a.as_binary::<i64>().value(row),
                _ => a.as_binary_view().value(row),
            };
            buf.put_slice(b"\\x");
            for b in bytes {
                buf.put_slice(format!("{b:02x}").as_bytes());
            }
        }
        _ => {
            if let Some(f) = f {
                buf.put_slice(f.value(row).to_string().as_bytes());
            }
        }
    }
}

/// The binary encoding of one value.
fn binary(a: &ArrayRef, row: usize, buf: &mut BytesMut) -> PgWireResult<()> {
    use arrow::datatypes::*;
    match a.data_type() {
        DataType::Boolean => buf.put_u8(u8::from(a.as_boolean().value(row))),
        DataType::Int8 => buf.put_i16(i16::from(a.as_primitive::<Int8Type>().value(row))),
        DataType::UInt8 => buf.put_i16(i16::from(a.as_primitive::<UInt8Type>().value(row))),
        DataType::Int16 => buf.put_i16(a.as_primitive::<Int16Type>().value(row)),
        DataType::UInt16 => buf.put_i32(i32::from(a.as_primitive::<UInt16Type>().value(row))),
        DataType::Int32 => buf.put_i32(a.as_primitive::<Int32Type>().value(row)),
        DataType::UInt32 => buf.put_i64(i64::from(a.as_primitive::<UInt32Type>().value(row))),
        DataType::Int64 => buf.put_i64(a.as_primitive::<Int64Type>().value(row)),
        DataType::Float16 => buf.put_f32(a.as_primitive::<Float16Type>().value(row).to_f32()),
        DataType::Float32 => buf.put_f32(a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => buf.put_f64(a.as_primitive::<Float64Type>().value(row)),
        DataType::Date32 | DataType::Date64 => {
            buf.put_i32(
                days(a, row)
                    .unwrap_or_default()
                    .saturating_sub(PG_EPOCH_DAYS),
            );
        }
        DataType::Timestamp(..) => {
            buf.put_i64(
                micros(a, row)
                    .unwrap_or_default()
                    .saturating_sub(PG_EPOCH_MICROS),
            );
        }
        DataType::Binary => buf.put_slice(a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => buf.put_slice(a.as_binary::<i64>().value(row)),
        DataType::BinaryView => buf.put_slice(a.as_binary_view().value(row)),
        // Text (and everything sent as text): the binary form is the text.
        _ => {
            let opts = FormatOptions::default();
            let f = ArrayFormatter::try_new(a.as_ref(), &opts)
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            text(a, row, Some(&f), buf);
        }
    }
    Ok(())
}

/// A parameter's value: `raw` in text or binary format, declared (or
/// inferred) as `t`, read as `target`.
pub fn param(
    raw: Option<&[u8]>,
    binary_format: bool,
    t: &Type,
    target: &DataType,
) -> PgWireResult<ScalarValue> {
    let Some(raw) = raw else {
        return ScalarValue::try_from(target).map_err(|e| PgWireError::ApiError(Box::new(e)));
    };
    let bad = |what: &str| user_error("22P02", format!("parameter: {what}"));
    let value = if binary_format {
        let fixed = |n: usize| -> PgWireResult<&[u8]> {
            if raw.len() == n {
                Ok(raw)
            } else {
                Err(bad(&format!("a binary {} must be {n} bytes", t.name())))
            }
        };
        match *t {
            Type::BOOL => ScalarValue::Boolean(Some(fixed(1)?[0] != 0)),
            Type::INT2 => {
                let b = fixed(2)?;
                ScalarValue::Int16(Some(i16::from_be_bytes([b[0], b[1]])))
            }
            Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(
                fixed(4)?.try_into().map_err(|_| bad("int4"))?,
            ))),
            Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(
                fixed(8)?.try_into().map_err(|_| bad("int8"))?,
            ))),
            Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(
                fixed(4)?.try_into().map_err(|_| bad("float4"))?,
            ))),
            Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(
                fixed(8)?.try_into().map_err(|_| bad("float8"))?,
            ))),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN | Type::JSON => {
                ScalarValue::Utf8(Some(
                    std::str::from_utf8(raw)
                        .map_err(|_| bad("not UTF-8"))?
                        .to_string(),
                ))
            }
            _ => {
                return Err(user_error(
                    "0A000",
                    format!(
                        "parameters of type {} are only accepted in text format",
                        t.name()
                    ),
                ))
            }
        }
    } else {
        ScalarValue::Utf8(Some(
            std::str::from_utf8(raw)
                .map_err(|_| bad("not UTF-8"))?
                .to_string(),
        ))
    };
    if value.data_type() == *target {
        return Ok(value);
    }
    let text = match &value {
        ScalarValue::Utf8(Some(s)) => Some(s.clone()),
        _ => None,
    };
    match (text, target) {
        // Postgres' text booleans.
        (Some(s), DataType::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" => Ok(ScalarValue::Boolean(Some(true))),
            "f" | "false" | "no" | "off" | "0" => Ok(ScalarValue::Boolean(Some(false))),
            _ => Err(bad(&format!("`{s}` is not a boolean"))),
        },
        _ => value
            .cast_to(target)
            .map_err(|_| bad(&format!("cannot be read as {target}"))),
    }
}
