//! Printing records as a table, JSON or CSV.
//!
//! JSON is always an array of row objects (or one object for a single
//! created object) in which every column is present, a null written as
//! `null` — a script can tell "no value" from "no such column"; CSV has a
//! header row; tables are for people.
//!
//! Everything a command prints to stdout goes through here (or [`line`]), so
//! a failed write — above all a reader that closed the pipe, as `crow …
//! | head` does — is an error `main` can recognise, never a panic.

use std::io::Write;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;

/// Output format of a command that prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// JSON: an array of row objects.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Print record batches in `format` to stdout.
pub fn print_batches(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Table => {
            // The same table style as every other command's.
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
            t.set_header(names);
            let options = arrow::util::display::FormatOptions::default();
            for b in batches {
                let cells = b
                    .columns()
                    .iter()
                    .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()?;
                for row in 0..b.num_rows() {
                    t.add_row(
                        cells
                            .iter()
                            .map(|f| f.value(row).to_string())
                            .collect::<Vec<_>>(),
                    );
                }
            }
            writeln!(out, "{t}")?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Json => {
            let buf = json_array(batches)?;
            if buf.is_empty() {
                writeln!(out, "[]")?;
            } else {
                out.write_all(&buf)?;
                writeln!(out)?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::new());
            if batches.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
            }
            for b in batches {
                w.write(b).context("writing CSV")?;
            }
            out.write_all(&w.into_inner())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Record batches as one JSON array of row objects, nulls written as
/// `null` (empty when there are no batches).
fn json_array(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    Ok(w.into_inner())
}

/// Record batches as JSON row objects with every column, nulls as `null`
/// (for commands that print query results inside a larger JSON object).
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>> {
    let buf = json_array(batches)?;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).context("reading back the JSON of a query result")
}

/// Print one line of text to stdout (headings between tables, a message).
pub fn line(text: impl std::fmt::Display) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Print text to stdout as it is (a document that ends with its newline).
pub fn text(text: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Print serde rows (objects with the same keys) in `format`. In JSON every
/// column in `columns` is present in every row, `null` when a row lacks it.
pub fn print_rows(format: Format, columns: &[&str], rows: &[serde_json::Value]) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            out.write_all(b"[")?;
            for (i, r) in rows.iter().enumerate() {
                out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
                write_ordered(&mut out, &with_every_column(r, columns), columns, "  ")?;
            }
            out.write_all(if rows.is_empty() { b"]\n" } else { b"\n]\n" })?;
        }
        Format::Csv => {
            writeln!(out, "{}", columns.join(","))?;
            for r in rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| csv_cell(&cell_text(r.get(*c))))
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        Format::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
            t.set_header(columns.to_vec());
            for r in rows {
                t.add_row(
                    columns
                        .iter()
                        .map(|c| cell_text(r.get(*c)))
                        .collect::<Vec<_>>(),
                );
            }
            writeln!(out, "{t}")?;
            writeln!(
                out,
                "({} row{})",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Print one created object: JSON prints the object itself, not an array.
pub fn print_object(format: Format, columns: &[&str], obj: &serde_json::Value) -> Result<()> {
    if format == Format::Json {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        write_ordered(&mut out, &with_every_column(obj, columns), columns, "")?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    print_rows(format, columns, std::slice::from_ref(obj))
}

/// Write `v` pretty-printed at `indent`; an object's members come in the
/// order of `columns` (the order the table shows), then any others.
fn write_ordered(
    out: &mut impl Write,
    v: &serde_json::Value,
    columns: &[&str],
    indent: &str,
) -> Result<()> {
    let Some(obj) = v.as_object() else {
        let text = serde_json::to_string_pretty(v)?;
        out.write_all(text.replace('\n', &format!("\n{indent}")).as_bytes())?;
        return Ok(());
    };
    if obj.is_empty() {
        out.write_all(b"{}")?;
        return Ok(());
    }
    let mut keys: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| obj.contains_key(*c))
        .collect();
    keys.extend(
        obj.keys()
            .map(String::as_str)
            .filter(|k| !columns.contains(k)),
    );
    out.write_all(b"{")?;
    let inner = format!("{indent}  ");
    for (i, k) in keys.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        write!(out, "{sep}\n{inner}{}: ", serde_json::to_string(k)?)?;
        let value = serde_json::to_string_pretty(&obj[*k])?;
        out.write_all(value.replace('\n', &format!("\n{inner}")).as_bytes())?;
    }
    write!(out, "\n{indent}}}")?;
    Ok(())
}

/// `row` with a `null` for each of `columns` it lacks (rows that are not
/// objects are left alone).
fn with_every_column(row: &serde_json::Value, columns: &[&str]) -> serde_json::Value {
    let mut row = row.clone();
    if let Some(obj) = row.as_object_mut() {
        for c in columns {
            obj.entry(*c).or_insert(serde_json::Value::Null);
        }
    }
    row
}

fn cell_text(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
