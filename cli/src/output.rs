//! Printing records as a table, JSON or CSV.
//!
//! JSON is always an array of row objects (or one object for a single
//! created object); CSV has a header row; tables are for people.

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
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if batches.is_empty() || rows == 0 {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
                t.set_header(names);
                writeln!(out, "{t}")?;
            } else {
                let table = arrow::util::pretty::pretty_format_batches(batches)?;
                writeln!(out, "{table}")?;
            }
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            let buf = w.into_inner();
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

/// Print serde rows (objects with the same keys) in `format`.
pub fn print_rows(format: Format, columns: &[&str], rows: &[serde_json::Value]) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, rows)?;
            writeln!(out)?;
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
        serde_json::to_writer_pretty(&mut out, obj)?;
        writeln!(out)?;
        return Ok(());
    }
    print_rows(format, columns, std::slice::from_ref(obj))
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
