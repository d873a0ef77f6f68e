//! A small `pg_catalog` for the tools that introspect through it (psql's
//! `\dt`, driver and BI tool table lists): `pg_namespace`, `pg_class`,
//! `pg_attribute`, `pg_type`, `pg_am`, `pg_database`, and the functions
//! their queries call. It describes CROW's tables as the tenant sees them
//! (secret columns left out); it holds no rows of any table.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use crow_schemas::ColumnType;
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

use super::encode::pg_type;

/// `public`'s namespace oid, as in Postgres.
const PUBLIC_OID: i64 = 2200;
/// The first table oid.
const FIRST_OID: i64 = 16_384;

fn table(columns: Vec<(&str, ArrayRef)>) -> Option<Arc<MemTable>> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .ok()?;
    MemTable::try_new(schema, vec![vec![batch]])
        .ok()
        .map(Arc::new)
}

fn text(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn int(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn int32(v: Vec<i32>) -> ArrayRef {
    Arc::new(Int32Array::from(v))
}

fn arrow_of(t: ColumnType) -> DataType {
    t.data_type()
}

/// The catalog's tables.
fn tables() -> Vec<(&'static str, Option<Arc<MemTable>>)> {
    let defs = crow_schemas::ALL_TABLES;
    let n = defs.len();
    let oids: Vec<i64> = (0..n as i64).map(|i| FIRST_OID + i).collect();
    let pg_namespace = table(vec![
        ("oid", int(vec![11, PUBLIC_OID, 13_000])),
        (
            "nspname",
            text(vec![
                "pg_catalog".into(),
                "public".into(),
                "information_schema".into(),
            ]),
        ),
        ("nspowner", int(vec![10, 10, 10])),
    ]);
    let mut natts = Vec::new();
    let (mut attrelid, mut attname, mut atttypid, mut attnum, mut attnotnull) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (def, oid) in defs.iter().zip(&oids) {
        let cols: Vec<_> = def
            .columns
            .iter()
            .filter(|c| !def.secret_columns.contains(&c.name))
            .collect();
        natts.push(cols.len() as i32);
        for (i, c) in cols.iter().enumerate() {
            attrelid.push(*oid);
            attname.push(c.name.to_string());
            atttypid.push(i64::from(pg_type(&arrow_of(c.ty)).oid()));
            attnum.push(i as i32 + 1);
            attnotnull.push(!c.nullable);
        }
    }
    let rows = attrelid.len();
    let pg_class = table(vec![
        ("oid", int(oids.clone())),
        (
            "relname",
            text(defs.iter().map(|d| d.name.to_string()).collect()),
        ),
        ("relnamespace", int(vec![PUBLIC_OID; n])),
        ("relkind", text(vec!["r".into(); n])),
        ("relowner", int(vec![10; n])),
        ("relam", int(vec![2; n])),
        ("relpersistence", text(vec!["p".into(); n])),
        (
            "relispartition",
            Arc::new(BooleanArray::from(vec![false; n])),
        ),
        ("relhasindex", Arc::new(BooleanArray::from(vec![false; n]))),
        ("relnatts", int32(natts)),
        ("reltuples", int(vec![-1; n])),
    ]);
    let pg_attribute = table(vec![
        ("attrelid", int(attrelid)),
        ("attname", text(attname)),
        ("atttypid", int(atttypid)),
        ("attnum", int32(attnum)),
        ("attnotnull", Arc::new(BooleanArray::from(attnotnull))),
        (
            "attisdropped",
            Arc::new(BooleanArray::from(vec![false; rows])),
        ),
        ("atttypmod", int32(vec![-1; rows])),
        ("atthasdef", Arc::new(BooleanArray::from(vec![false; rows]))),
        ("attgenerated", text(vec![String::new(); rows])),
        ("attidentity", text(vec![String::new(); rows])),
        ("attcollation", int(vec![0; rows])),
    ]);
    let types = [
        (16, "bool"),
        (17, "bytea"),
        (20, "int8"),
        (21, "int2"),
        (23, "int4"),
        (25, "text"),
        (114, "json"),
        (700, "float4"),
        (701, "float8"),
        (1082, "date"),
        (1114, "timestamp"),
        (1184, "timestamptz"),
        (1700, "numeric"),
    ];
    let pg_type_table = table(vec![
        ("oid", int(types.iter().map(|t| t.0).collect())),
        (
            "typname",
            text(types.iter().map(|t| t.1.to_string()).collect()),
        ),
        ("typnamespace", int(vec![11; types.len()])),
        ("typtype", text(vec!["b".into(); types.len()])),
        ("typrelid", int(vec![0; types.len()])),
        ("typelem", int(vec![0; types.len()])),
        ("typbasetype", int(vec![0; types.len()])),
    ]);
    let pg_am = table(vec![
        ("oid", int(vec![2])),
        ("amname", text(vec!["heap".into()])),
    ]);
    let pg_database = table(vec![
        ("oid", int(vec![16_383])),
        ("datname", text(vec!["crow".into()])),
    ]);
    vec![
        ("pg_namespace", pg_namespace),
        ("pg_class", pg_class),
        ("pg_attribute", pg_attribute),
        ("pg_type", pg_type_table),
        ("pg_am", pg_am),
        ("pg_database", pg_database),
    ]
}

/// Postgres' name of a type oid (`format_type`).
fn type_name(oid: i64) -> &'static str {
    match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1700 => "numeric",
        _ => "text",
    }
}

fn add_functions(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                "crow".into(),
            ))))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_table_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
    ctx.register_udf(create_udf(
        "format_type",
        vec![DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let oids = arrays
                .first()
                .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned())
                .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
            let names: StringArray = oids.iter().map(|o| o.map(type_name)).collect();
            Ok(ColumnarValue::Array(Arc::new(names)))
        }),
    ));
}

/// Register `pg_catalog` and its functions in a tenant session.
pub fn register(ctx: &SessionContext) {
    let schema = MemorySchemaProvider::new();
    for (name, t) in tables() {
        if let Some(t) = t {
            let _ = schema.register_table(name.to_string(), t);
        }
    }
    if let Some(catalog) = ctx.catalog("datafusion") {
        let _ = catalog.register_schema("pg_catalog", Arc::new(schema));
    }
    add_functions(ctx);
}

/// What the planner cannot read in the SQL tools send, made plain:
/// `pg_catalog.f(` → `f(` (its functions are registered unqualified),
/// `OPERATOR(pg_catalog.~)` → `~`, `COLLATE pg_catalog.default` dropped.
pub fn rewrite(sql: &str) -> String {
    let mut s = sql
        .replace("OPERATOR(pg_catalog.~)", "~")
        .replace(" COLLATE pg_catalog.default", "");
    let needle = "pg_catalog.";
    let mut out = String::with_capacity(s.len());
    while let Some(i) = s.find(needle) {
        let after = &s[i + needle.len()..];
        let ident_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let is_call = after[ident_len..].trim_start().starts_with('(');
        out.push_str(&s[..i]);
        if !is_call {
            out.push_str(needle);
        }
        s = after.to_string();
    }
    out.push_str(&s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_unqualifies_functions_only() {
        assert_eq!(
            rewrite("select pg_catalog.version(), x from pg_catalog.pg_class c where pg_catalog.pg_table_is_visible (c.oid)"),
            "select version(), x from pg_catalog.pg_class c where pg_table_is_visible (c.oid)"
        );
        assert_eq!(
            rewrite("a OPERATOR(pg_catalog.~) '^x$' COLLATE pg_catalog.default"),
            "a ~ '^x$'"
        );
    }
}
