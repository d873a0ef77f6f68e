//! A small `pg_catalog` for the tools that introspect through it (psql's
//! `\dt`, `\d TABLE`, `\dt+`/`\d+`, SQLAlchemy's and BI tools' reflection):
//! `pg_namespace`, `pg_class`, `pg_attribute`, `pg_type`, `pg_attrdef`,
//! `pg_index`, `pg_constraint`, `pg_inherits`, … and the functions their
//! queries call (`format_type`, `pg_get_expr`, `col_description`, …).
//!
//! It describes the caller's tenant session and nothing else: its relations
//! are the session's `public` tables ([`SchemaProvider::table_names`]), their
//! columns those of the tenant's views ([`crate::tenant::view_columns`]:
//! secret columns left out), with the tables' and columns' documentation as
//! their comments. It holds no row of any table, and nothing that differs
//! between organizations. CROW has no indexes, constraints, defaults,
//! inheritance, policies, statistics objects or publications: those
//! catalogs exist (so the queries plan) and are empty.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::encode::pg_type;

/// `public`'s namespace oid, as in Postgres.
const PUBLIC_OID: i64 = 2200;
/// The first table oid.
const FIRST_OID: i64 = 16_384;
/// The `default` collation's oid (of text columns), as in Postgres.
const DEFAULT_COLLATION: i64 = 100;

/// A column of a catalog table.
enum Col {
    Text(Vec<Option<String>>),
    Int(Vec<i64>),
    Int32(Vec<i32>),
    Int16(Vec<i16>),
    Bool(Vec<bool>),
    Float(Vec<f32>),
}

impl Col {
    fn array(self) -> ArrayRef {
        match self {
            Col::Text(v) => Arc::new(StringArray::from(v)),
            Col::Int(v) => Arc::new(Int64Array::from(v)),
            Col::Int32(v) => Arc::new(Int32Array::from(v)),
            Col::Int16(v) => Arc::new(Int16Array::from(v)),
            Col::Bool(v) => Arc::new(BooleanArray::from(v)),
            Col::Float(v) => Arc::new(Float32Array::from(v)),
        }
    }

    /// An empty column of this one's type.
    fn empty(&self) -> Col {
        match self {
            Col::Text(_) => Col::Text(vec![]),
            Col::Int(_) => Col::Int(vec![]),
            Col::Int32(_) => Col::Int32(vec![]),
            Col::Int16(_) => Col::Int16(vec![]),
            Col::Bool(_) => Col::Bool(vec![]),
            Col::Float(_) => Col::Float(vec![]),
        }
    }
}

fn text(v: impl IntoIterator<Item = impl Into<String>>) -> Col {
    Col::Text(v.into_iter().map(|s| Some(s.into())).collect())
}

fn nulls(n: usize) -> Col {
    Col::Text(vec![None; n])
}

fn table(columns: Vec<(&str, Col)>) -> Option<Arc<MemTable>> {
    let arrays: Vec<(&str, ArrayRef)> = columns.into_iter().map(|(n, c)| (n, c.array())).collect();
    let fields: Vec<Field> = arrays
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), arrays.into_iter().map(|(_, a)| a).collect()).ok()?;
    MemTable::try_new(schema, vec![vec![batch]])
        .ok()
        .map(Arc::new)
}

/// A catalog CROW has no rows for: its columns, empty.
fn empty(columns: Vec<(&str, Col)>) -> Option<Arc<MemTable>> {
    table(columns.into_iter().map(|(n, c)| (n, c.empty())).collect())
}

/// Postgres' types of CROW's columns: (oid, name, length, category).
const TYPES: &[(i64, &str, i16, &str)] = &[
    (16, "bool", 1, "B"),
    (17, "bytea", -1, "U"),
    (20, "int8", 8, "N"),
    (21, "int2", 2, "N"),
    (23, "int4", 4, "N"),
    (25, "text", -1, "S"),
    (114, "json", -1, "U"),
    (700, "float4", 4, "N"),
    (701, "float8", 8, "N"),
    (1043, "varchar", -1, "S"),
    (1082, "date", 4, "D"),
    (1114, "timestamp", 8, "D"),
    (1184, "timestamptz", 8, "D"),
    (1700, "numeric", -1, "N"),
];

/// The relations a tenant session shows: (oid, table) in the session's
/// order.
fn relations(public: &dyn SchemaProvider) -> Vec<(i64, &'static crow_schemas::TableDef)> {
    let mut names = public.table_names();
    names.sort();
    names
        .iter()
        .filter_map(|n| crow_schemas::table(n))
        .zip(FIRST_OID..)
        .map(|(d, oid)| (oid, d))
        .collect()
}

/// The catalog's tables, describing `rels`.
fn tables(
    rels: &[(i64, &'static crow_schemas::TableDef)],
) -> Vec<(&'static str, Option<Arc<MemTable>>)> {
    let n = rels.len();
    let pg_namespace = table(vec![
        ("oid", Col::Int(vec![11, PUBLIC_OID, 13_000])),
        (
            "nspname",
            text(["pg_catalog", "public", "information_schema"]),
        ),
        ("nspowner", Col::Int(vec![10, 10, 10])),
        ("nspacl", nulls(3)),
    ]);

    let mut natts = Vec::new();
    let (mut attrelid, mut attname, mut atttypid, mut attlen, mut attnum) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut attnotnull, mut attcollation, mut attstorage) = (vec![], vec![], vec![]);
    for (oid, def) in rels {
        let cols: Vec<_> = crate::tenant::view_columns(def).collect();
        natts.push(cols.len() as i16);
        for (i, c) in cols.iter().enumerate() {
            let ty = i64::from(pg_type(&c.ty.data_type()).oid());
            let len = TYPES.iter().find(|t| t.0 == ty).map_or(-1, |t| t.2);
            attrelid.push(*oid);
            attname.push(c.name.to_string());
            atttypid.push(ty);
            attlen.push(len);
            attnum.push(i as i16 + 1);
            attnotnull.push(!c.nullable);
            let is_text = matches!(ty, 25 | 1043);
            attcollation.push(if is_text { DEFAULT_COLLATION } else { 0 });
            attstorage.push(if len < 0 { "x" } else { "p" });
        }
    }
    let rows = attrelid.len();
    let oids: Vec<i64> = rels.iter().map(|r| r.0).collect();
    let pg_class = table(vec![
        ("oid", Col::Int(oids.clone())),
        ("relname", text(rels.iter().map(|r| r.1.name))),
        ("relnamespace", Col::Int(vec![PUBLIC_OID; n])),
        ("reltype", Col::Int(vec![0; n])),
        ("reloftype", Col::Int(vec![0; n])),
        ("relowner", Col::Int(vec![10; n])),
        ("relam", Col::Int(vec![2; n])),
        ("relfilenode", Col::Int(oids)),
        ("reltablespace", Col::Int(vec![0; n])),
        ("relpages", Col::Int32(vec![0; n])),
        ("reltuples", Col::Float(vec![-1.0; n])),
        ("relallvisible", Col::Int32(vec![0; n])),
        ("reltoastrelid", Col::Int(vec![0; n])),
        ("relhasindex", Col::Bool(vec![false; n])),
        ("relisshared", Col::Bool(vec![false; n])),
        ("relpersistence", text(vec!["p"; n])),
        ("relkind", text(vec!["r"; n])),
        ("relnatts", Col::Int16(natts)),
        ("relchecks", Col::Int16(vec![0; n])),
        ("relhasrules", Col::Bool(vec![false; n])),
        ("relhastriggers", Col::Bool(vec![false; n])),
        ("relhassubclass", Col::Bool(vec![false; n])),
        ("relrowsecurity", Col::Bool(vec![false; n])),
        ("relforcerowsecurity", Col::Bool(vec![false; n])),
        ("relispopulated", Col::Bool(vec![true; n])),
        ("relreplident", text(vec!["n"; n])),
        ("relispartition", Col::Bool(vec![false; n])),
        ("relrewrite", Col::Int(vec![0; n])),
        ("relacl", nulls(n)),
        ("reloptions", nulls(n)),
        ("relpartbound", nulls(n)),
    ]);
    let pg_attribute = table(vec![
        ("attrelid", Col::Int(attrelid)),
        ("attname", text(attname)),
        ("atttypid", Col::Int(atttypid)),
        ("attstattarget", Col::Int16(vec![-1; rows])),
        ("attlen", Col::Int16(attlen)),
        ("attnum", Col::Int16(attnum)),
        ("attndims", Col::Int16(vec![0; rows])),
        ("atttypmod", Col::Int32(vec![-1; rows])),
        ("attstorage", text(attstorage)),
        ("attcompression", text(vec![""; rows])),
        ("attnotnull", Col::Bool(attnotnull)),
        ("atthasdef", Col::Bool(vec![false; rows])),
        ("atthasmissing", Col::Bool(vec![false; rows])),
        ("attidentity", text(vec![""; rows])),
        ("attgenerated", text(vec![""; rows])),
        ("attisdropped", Col::Bool(vec![false; rows])),
        ("attislocal", Col::Bool(vec![true; rows])),
        ("attinhcount", Col::Int16(vec![0; rows])),
        ("attcollation", Col::Int(attcollation)),
        ("attacl", nulls(rows)),
        ("attoptions", nulls(rows)),
        ("attfdwoptions", nulls(rows)),
    ]);
    let t = TYPES.len();
    let pg_type_table = table(vec![
        ("oid", Col::Int(TYPES.iter().map(|t| t.0).collect())),
        ("typname", text(TYPES.iter().map(|t| t.1))),
        ("typnamespace", Col::Int(vec![11; t])),
        ("typowner", Col::Int(vec![10; t])),
        ("typlen", Col::Int16(TYPES.iter().map(|t| t.2).collect())),
        (
            "typbyval",
            Col::Bool(TYPES.iter().map(|t| t.2 > 0).collect()),
        ),
        ("typtype", text(vec!["b"; t])),
        ("typcategory", text(TYPES.iter().map(|t| t.3))),
        ("typisdefined", Col::Bool(vec![true; t])),
        ("typdelim", text(vec![","; t])),
        ("typrelid", Col::Int(vec![0; t])),
        ("typelem", Col::Int(vec![0; t])),
        ("typarray", Col::Int(vec![0; t])),
        ("typnotnull", Col::Bool(vec![false; t])),
        ("typbasetype", Col::Int(vec![0; t])),
        ("typtypmod", Col::Int32(vec![-1; t])),
        ("typndims", Col::Int32(vec![0; t])),
        (
            "typcollation",
            Col::Int(
                TYPES
                    .iter()
                    .map(|t| if t.3 == "S" { DEFAULT_COLLATION } else { 0 })
                    .collect(),
            ),
        ),
        ("typdefault", nulls(t)),
    ]);
    let pg_collation = table(vec![
        ("oid", Col::Int(vec![DEFAULT_COLLATION, 950])),
        ("collname", text(["default", "C"])),
        ("collnamespace", Col::Int(vec![11, 11])),
    ]);
    let pg_am = table(vec![
        ("oid", Col::Int(vec![2])),
        ("amname", text(["heap"])),
        ("amtype", text(["t"])),
    ]);
    let pg_database = table(vec![
        ("oid", Col::Int(vec![16_383])),
        ("datname", text(["crow"])),
        ("datdba", Col::Int(vec![10])),
        ("encoding", Col::Int32(vec![6])),
        ("datallowconn", Col::Bool(vec![true])),
        ("datistemplate", Col::Bool(vec![false])),
    ]);
    let pg_roles = table(vec![
        ("oid", Col::Int(vec![10])),
        ("rolname", text(["crow"])),
        ("rolsuper", Col::Bool(vec![false])),
    ]);
    let pg_tablespace = table(vec![
        ("oid", Col::Int(vec![1663])),
        ("spcname", text(["pg_default"])),
    ]);
    let (i, s, b, x) = (
        || Col::Int(vec![]),
        || text(Vec::<String>::new()),
        || Col::Bool(vec![]),
        || Col::Int16(vec![]),
    );
    vec![
        ("pg_namespace", pg_namespace),
        ("pg_class", pg_class),
        ("pg_attribute", pg_attribute),
        ("pg_type", pg_type_table),
        ("pg_collation", pg_collation),
        ("pg_am", pg_am),
        ("pg_database", pg_database),
        ("pg_roles", pg_roles),
        ("pg_tablespace", pg_tablespace),
        (
            "pg_attrdef",
            empty(vec![
                ("oid", i()),
                ("adrelid", i()),
                ("adnum", x()),
                ("adbin", s()),
            ]),
        ),
        (
            "pg_index",
            empty(vec![
                ("indexrelid", i()),
                ("indrelid", i()),
                ("indnatts", x()),
                ("indnkeyatts", x()),
                ("indisunique", b()),
                ("indnullsnotdistinct", b()),
                ("indisprimary", b()),
                ("indisexclusion", b()),
                ("indimmediate", b()),
                ("indisclustered", b()),
                ("indisvalid", b()),
                ("indisready", b()),
                ("indislive", b()),
                ("indisreplident", b()),
                ("indkey", s()),
                ("indexprs", s()),
                ("indpred", s()),
            ]),
        ),
        (
            "pg_constraint",
            empty(vec![
                ("oid", i()),
                ("conname", s()),
                ("connamespace", i()),
                ("contype", s()),
                ("condeferrable", b()),
                ("condeferred", b()),
                ("convalidated", b()),
                ("conrelid", i()),
                ("contypid", i()),
                ("conindid", i()),
                ("conparentid", i()),
                ("confrelid", i()),
                ("confupdtype", s()),
                ("confdeltype", s()),
                ("confmatchtype", s()),
                ("conislocal", b()),
                ("coninhcount", x()),
                ("connoinherit", b()),
                ("conkey", s()),
                ("confkey", s()),
                ("conbin", s()),
            ]),
        ),
        (
            "pg_inherits",
            empty(vec![
                ("inhrelid", i()),
                ("inhparent", i()),
                ("inhseqno", i()),
                ("inhdetachpending", b()),
            ]),
        ),
        (
            "pg_policy",
            empty(vec![
                ("oid", i()),
                ("polname", s()),
                ("polrelid", i()),
                ("polcmd", s()),
                ("polpermissive", b()),
                ("polroles", s()),
                ("polqual", s()),
                ("polwithcheck", s()),
            ]),
        ),
        (
            "pg_statistic_ext",
            empty(vec![
                ("oid", i()),
                ("stxrelid", i()),
                ("stxname", s()),
                ("stxnamespace", i()),
                ("stxowner", i()),
                ("stxstattarget", i()),
                ("stxkeys", s()),
                ("stxkind", s()),
            ]),
        ),
        (
            "pg_publication",
            empty(vec![
                ("oid", i()),
                ("pubname", s()),
                ("pubowner", i()),
                ("puballtables", b()),
                ("pubinsert", b()),
                ("pubupdate", b()),
                ("pubdelete", b()),
                ("pubtruncate", b()),
                ("pubviaroot", b()),
            ]),
        ),
        (
            "pg_publication_rel",
            empty(vec![
                ("oid", i()),
                ("prpubid", i()),
                ("prrelid", i()),
                ("prqual", s()),
                ("prattrs", s()),
            ]),
        ),
        (
            "pg_publication_namespace",
            empty(vec![("oid", i()), ("pnpubid", i()), ("pnnspid", i())]),
        ),
        (
            "pg_trigger",
            empty(vec![
                ("oid", i()),
                ("tgrelid", i()),
                ("tgparentid", i()),
                ("tgname", s()),
                ("tgenabled", s()),
                ("tgisinternal", b()),
            ]),
        ),
        (
            "pg_rewrite",
            empty(vec![
                ("oid", i()),
                ("rulename", s()),
                ("ev_class", i()),
                ("ev_type", s()),
                ("ev_enabled", s()),
                ("is_instead", b()),
            ]),
        ),
        (
            "pg_description",
            empty(vec![
                ("objoid", i()),
                ("classoid", i()),
                ("objsubid", i()),
                ("description", s()),
            ]),
        ),
        (
            "pg_foreign_table",
            empty(vec![
                ("ftrelid", i()),
                ("ftserver", i()),
                ("ftoptions", s()),
            ]),
        ),
        (
            "pg_partitioned_table",
            empty(vec![("partrelid", i()), ("partstrat", s())]),
        ),
        (
            "pg_sequence",
            empty(vec![("seqrelid", i()), ("seqtypid", i())]),
        ),
        (
            "pg_depend",
            empty(vec![
                ("classid", i()),
                ("objid", i()),
                ("objsubid", i()),
                ("refclassid", i()),
                ("refobjid", i()),
                ("refobjsubid", i()),
                ("deptype", s()),
            ]),
        ),
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
        1043 => "character varying",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1700 => "numeric",
        _ => "text",
    }
}

/// What a catalog function answers.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Answer {
    /// SQL NULL of the function's type: no expression, definition or size.
    Null,
    /// A constant.
    Bool(bool),
    /// `format_type(oid, typmod)`.
    FormatType,
    /// `col_description(table oid, attnum)`: the column's documentation.
    ColDescription(Vec<Vec<&'static str>>),
    /// `obj_description(oid[, catalog])`: the table's documentation.
    ObjDescription(Vec<&'static str>),
}

/// A catalog function that takes any arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgFn {
    name: &'static str,
    ret: DataType,
    answer: Answer,
    signature: Signature,
}

fn pg_fn(name: &'static str, ret: DataType, answer: Answer) -> ScalarUDF {
    ScalarUDF::new_from_impl(PgFn {
        name,
        ret,
        answer,
        signature: Signature::variadic_any(Volatility::Stable),
    })
}

/// The `i`-th argument as int64s (NULL where it is not a number).
fn ints(args: &[ColumnarValue], i: usize, rows: usize) -> DfResult<Int64Array> {
    let Some(arg) = args.get(i) else {
        return Ok(Int64Array::from(vec![None; rows]));
    };
    let a = arg.to_array(rows)?;
    let a = arrow::compute::cast(&a, &DataType::Int64)
        .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Int64, a.len()));
    Ok(a.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::from(vec![None; rows])))
}

impl ScalarUDFImpl for PgFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.ret.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let texts = |f: &dyn Fn(Option<i64>, Option<i64>) -> Option<&'static str>| {
            let (a, b) = (ints(&args.args, 0, rows)?, ints(&args.args, 1, rows)?);
            let out: StringArray = (0..rows)
                .map(|r| {
                    let get = |x: &Int64Array| (!x.is_null(r)).then(|| x.value(r));
                    f(get(&a), get(&b))
                })
                .collect();
            Ok::<_, datafusion::error::DataFusionError>(ColumnarValue::Array(Arc::new(out)))
        };
        let table_of = |oid: Option<i64>| {
            oid.and_then(|o| o.checked_sub(FIRST_OID))
                .and_then(|o| usize::try_from(o).ok())
        };
        match &self.answer {
            Answer::Null => Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.ret)?)),
            Answer::Bool(v) => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(*v)))),
            Answer::FormatType => texts(&|oid, _| oid.map(type_name)),
            Answer::ColDescription(docs) => texts(&|oid, attnum| {
                let cols = docs.get(table_of(oid)?)?;
                let i = usize::try_from(attnum?.checked_sub(1)?).ok()?;
                cols.get(i).copied().filter(|d| !d.is_empty())
            }),
            Answer::ObjDescription(docs) => {
                texts(&|oid, _| docs.get(table_of(oid)?).copied().filter(|d| !d.is_empty()))
            }
        }
    }
}

fn add_functions(ctx: &SessionContext, rels: &[(i64, &'static crow_schemas::TableDef)]) {
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
    ctx.register_udf(pg_fn("format_type", DataType::Utf8, Answer::FormatType));
    let col_docs = rels
        .iter()
        .map(|(_, d)| crate::tenant::view_columns(d).map(|c| c.doc).collect())
        .collect();
    ctx.register_udf(pg_fn(
        "col_description",
        DataType::Utf8,
        Answer::ColDescription(col_docs),
    ));
    let docs = rels.iter().map(|(_, d)| d.doc).collect();
    ctx.register_udf(pg_fn(
        "obj_description",
        DataType::Utf8,
        Answer::ObjDescription(docs),
    ));
    for name in [
        "pg_get_expr",
        "pg_get_constraintdef",
        "pg_get_indexdef",
        "pg_get_triggerdef",
        "pg_get_viewdef",
        "pg_get_statisticsobjdef_columns",
        "pg_get_partkeydef",
        "shobj_description",
        "pg_size_pretty",
    ] {
        ctx.register_udf(pg_fn(name, DataType::Utf8, Answer::Null));
    }
    for name in [
        "to_regtype",
        "to_regclass",
        "pg_table_size",
        "pg_relation_size",
        "pg_total_relation_size",
    ] {
        ctx.register_udf(pg_fn(name, DataType::Int64, Answer::Null));
    }
    ctx.register_udf(pg_fn(
        "pg_relation_is_publishable",
        DataType::Boolean,
        Answer::Bool(false),
    ));
}

/// Register `pg_catalog` and its functions in a tenant session whose
/// `public` schema is `public`.
pub fn register(ctx: &SessionContext, public: &dyn SchemaProvider) {
    let rels = relations(public);
    let schema = MemorySchemaProvider::new();
    for (name, t) in tables(&rels) {
        if let Some(t) = t {
            let _ = schema.register_table(name.to_string(), t);
        }
    }
    if let Some(catalog) = ctx.catalog("datafusion") {
        let _ = catalog.register_schema("pg_catalog", Arc::new(schema));
    }
    add_functions(ctx, &rels);
}

/// Casts to Postgres' catalog types, as the planner reads them.
const CASTS: &[(&str, &str)] = &[
    ("::pg_catalog.regclass", "::text"),
    ("::pg_catalog.regtype", "::text"),
    ("::pg_catalog.regnamespace", "::text"),
    ("::pg_catalog.regproc", "::text"),
    ("::pg_catalog.text", "::text"),
    ("::pg_catalog.name", "::text"),
    ("::regclass", "::text"),
    ("::regtype", "::text"),
    ("::oid", "::bigint"),
    ("::name", "::text"),
];

/// What the planner cannot read in the SQL tools send, made plain:
/// `pg_catalog.f(` → `f(` (its functions are registered unqualified),
/// `OPERATOR(pg_catalog.~)` → `~`, `COLLATE pg_catalog.default` dropped,
/// casts to catalog types (`::pg_catalog.regclass`, `::oid`, …) to text
/// or bigint.
pub fn rewrite(sql: &str) -> String {
    let mut s = qualify_catalogs(sql)
        // SQLAlchemy's schema listing (`NOT LIKE 'pg/_%' ESCAPE '/'`): the
        // planner takes only `\` as escape; unescaped, `_` matches itself.
        .replace(" ESCAPE '/'", "")
        .replace("OPERATOR(pg_catalog.~)", "~")
        .replace(" COLLATE pg_catalog.default", "");
    if s.contains("::") {
        for (from, to) in CASTS {
            s = replace_cast(&s, from, to);
        }
    }
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
    if sql.contains("pg_catalog.") {
        if let Some(aggregated) = aggregate_scalar_subqueries(&out) {
            return aggregated;
        }
    }
    out
}

/// Catalog queries' scalar subqueries, made plannable: their one value
/// aggregated (`(SELECT max(c.collname) FROM …)`), and the conditions the
/// planner cannot decorrelate moved out of them — ones on the outer row
/// only (`AND a.atthasdef`), and comparisons other than `=` of an outer
/// and an inner value (`a.attcollation <> t.typcollation`, compared with
/// that value found by the remaining conditions) — into `CASE WHEN … THEN
/// (SELECT …) END`. Postgres refuses a scalar subquery that finds two rows;
/// for at most one row these are the same. `None` if there is nothing to
/// change, or the SQL does not parse.
fn aggregate_scalar_subqueries(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |e| {
        if let Some(new) = plannable_subquery(e) {
            *e = new;
            changed = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The qualifiers (`a` of `a.attname`) `e` refers to; `""` for an
/// unqualified column.
fn qualifiers(e: &datafusion::sql::sqlparser::ast::Expr) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{visit_expressions, Expr};
    let mut out = Vec::new();
    let _ = visit_expressions(e, |x| {
        match x {
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                out.push(parts[parts.len() - 2].value.to_ascii_lowercase());
            }
            Expr::Identifier(_) => out.push(String::new()),
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

fn conjuncts(
    e: datafusion::sql::sqlparser::ast::Expr,
    out: &mut Vec<datafusion::sql::sqlparser::ast::Expr>,
) {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner, out);
        }
        other => out.push(other),
    }
}

/// [`aggregate_scalar_subqueries`] of one expression, if it is a scalar
/// subquery to change.
fn plannable_subquery(
    e: &datafusion::sql::sqlparser::ast::Expr,
) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, TableFactor,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let Expr::Subquery(q) = e else { return None };
    let mut q = q.clone();
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if select.projection.len() != 1 || grouped {
        return None;
    }
    let (SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. }) =
        &mut select.projection[0]
    else {
        return None;
    };
    let parse = |text: String| {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .ok()
    };
    let aggregated = matches!(&*x, Expr::Function(f)
        if AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str()));
    if aggregated {
        return None;
    }
    *x = parse(format!("max({x})"))?;
    // The subquery's own names: its tables' aliases (or names).
    let mut inner: Vec<String> = Vec::new();
    for t in &select.from {
        for f in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Table { name, alias, .. } = f {
                let n = match alias {
                    Some(a) => a.name.value.clone(),
                    None => name.0.last().map(|p| p.to_string()).unwrap_or_default(),
                };
                inner.push(n.to_ascii_lowercase());
            }
        }
    }
    let is_inner = |qs: &[String]| qs.iter().all(|q| q.is_empty() || inner.contains(q));
    let is_outer =
        |qs: &[String]| !qs.is_empty() && qs.iter().all(|q| !q.is_empty() && !inner.contains(q));
    let mut all = Vec::new();
    if let Some(w) = select.selection.take() {
        conjuncts(w, &mut all);
    }
    let (mut kept, mut outer_only, mut compared) = (Vec::new(), Vec::new(), Vec::new());
    for c in all {
        let qs = qualifiers(&c);
        if is_outer(&qs) {
            outer_only.push(c);
            continue;
        }
        match &c {
            Expr::BinaryOp { left, op, right }
                if *op != BinaryOperator::Eq
                    && matches!(
                        op,
                        BinaryOperator::NotEq
                            | BinaryOperator::Lt
                            | BinaryOperator::LtEq
                            | BinaryOperator::Gt
                            | BinaryOperator::GtEq
                    ) =>
            {
                let (l, r) = (qualifiers(left), qualifiers(right));
                if is_outer(&l) && is_inner(&r) {
                    compared.push((left.to_string(), op.to_string(), right.to_string(), false));
                } else if is_inner(&l) && is_outer(&r) {
                    compared.push((right.to_string(), op.to_string(), left.to_string(), true));
                } else {
                    kept.push(c);
                }
            }
            _ => kept.push(c),
        }
    }
    let rest = kept
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" AND ");
    if outer_only.is_empty() && compared.is_empty() {
        select.selection = if rest.is_empty() {
            None
        } else {
            Some(parse(rest)?)
        };
        return Some(Expr::Subquery(q));
    }
    let from = select
        .from
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let filter = if rest.is_empty() {
        String::new()
    } else {
        format!(" WHERE {rest}")
    };
    let mut conditions: Vec<String> = outer_only.iter().map(|c| format!("({c})")).collect();
    for (outer, op, inner_side, flipped) in compared {
        let found = format!("(SELECT max({inner_side}) FROM {from}{filter})");
        conditions.push(if flipped {
            format!("({found} {op} {outer})")
        } else {
            format!("({outer} {op} {found})")
        });
    }
    select.selection = if rest.is_empty() {
        None
    } else {
        Some(parse(rest)?)
    };
    parse(format!(
        "CASE WHEN {} THEN ({q}) END",
        conditions.join(" AND ")
    ))
}

/// The catalogs CROW keeps empty.
const EMPTY: &[&str] = &[
    "pg_attrdef",
    "pg_index",
    "pg_constraint",
    "pg_inherits",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_trigger",
    "pg_rewrite",
    "pg_foreign_table",
    "pg_partitioned_table",
    "pg_sequence",
];

/// Whether an expression calls an aggregate function (outside its
/// subqueries).
#[derive(Default)]
struct Aggregates {
    depth: usize,
    found: bool,
}

impl datafusion::sql::sqlparser::ast::Visitor for Aggregates {
    type Break = ();

    fn pre_visit_query(
        &mut self,
        _q: &datafusion::sql::sqlparser::ast::Query,
    ) -> std::ops::ControlFlow<()> {
        self.depth += 1;
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_query(
        &mut self,
        _q: &datafusion::sql::sqlparser::ast::Query,
    ) -> std::ops::ControlFlow<()> {
        self.depth -= 1;
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_expr(
        &mut self,
        e: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        if let datafusion::sql::sqlparser::ast::Expr::Function(f) = e {
            let n = f.name.to_string().to_ascii_lowercase();
            let n = n.trim_start_matches("pg_catalog.");
            if self.depth == 0 && AGGREGATES.contains(&n) {
                self.found = true;
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Aggregate functions of catalog queries.
const AGGREGATES: &[&str] = &[
    "count",
    "max",
    "min",
    "sum",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
];

/// The columns of a query that must answer no rows, because every branch
/// of it (`UNION`) is a plain select (no aggregate, `GROUP BY` or
/// `HAVING`) that inner-joins an empty catalog (`FROM pg_catalog.pg_policy
/// pol`, `… JOIN pg_catalog.pg_inherits i`): psql's `\d` asks for
/// policies, statistics objects, publications and inheritance this way,
/// with functions (`array(select …)`) the planner lacks.
pub fn empty_answer(sql: &str) -> Option<Vec<String>> {
    use datafusion::sql::sqlparser::ast::{
        GroupByExpr, JoinOperator, SelectItem, SetExpr, Statement, TableFactor, Visit,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    if !sql.contains("pg_catalog.") {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    fn branches<'a>(
        body: &'a SetExpr,
        out: &mut Vec<&'a datafusion::sql::sqlparser::ast::Select>,
    ) -> bool {
        match body {
            SetExpr::Select(s) => {
                out.push(s);
                true
            }
            SetExpr::SetOperation { left, right, .. } => {
                branches(left, out) && branches(right, out)
            }
            SetExpr::Query(q) => branches(&q.body, out),
            _ => false,
        }
    }
    let mut selects = Vec::new();
    if q.with.is_some() || !branches(&q.body, &mut selects) {
        return None;
    }
    let is_empty_catalog = |f: &TableFactor| match f {
        TableFactor::Table { name, .. } => {
            let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
            matches!(parts.as_slice(), [s, t] if s == "pg_catalog" && EMPTY.contains(&t.as_str()))
        }
        _ => false,
    };
    for s in &selects {
        let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
        if grouped || s.having.is_some() {
            return None;
        }
        let aggregate = s.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let mut v = Aggregates::default();
                let _ = e.visit(&mut v);
                v.found
            }
            _ => false,
        });
        if aggregate {
            return None;
        }
        // An empty table in the FROM list, or inner-joined to it; other
        // joins only LEFT ones (which keep an empty left side empty).
        let inner = |j: &JoinOperator| {
            matches!(
                j,
                JoinOperator::Inner(_) | JoinOperator::Join(_) | JoinOperator::CrossJoin(_)
            )
        };
        let only_left = s.from.iter().all(|t| {
            t.joins.iter().all(|j| {
                inner(&j.join_operator)
                    || matches!(
                        j.join_operator,
                        JoinOperator::Left(_) | JoinOperator::LeftOuter(_)
                    )
            })
        });
        let reads_empty = s.from.iter().any(|t| {
            is_empty_catalog(&t.relation)
                || t.joins
                    .iter()
                    .any(|j| inner(&j.join_operator) && is_empty_catalog(&j.relation))
        });
        if !reads_empty || !only_left {
            return None;
        }
    }
    let first = selects.first()?;
    Some(
        first
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                SelectItem::UnnamedExpr(e) => column_name(e),
                _ => "?column?".to_string(),
            })
            .collect(),
    )
}

/// Postgres' name of an unnamed result column.
fn column_name(e: &datafusion::sql::sqlparser::ast::Expr) -> String {
    use datafusion::sql::sqlparser::ast::Expr;
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()).unwrap_or_default(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        Expr::Function(f) => f.name.0.last().map(|p| p.to_string()).unwrap_or_default(),
        _ => "?column?".to_string(),
    }
}

/// `FROM pg_type` → `FROM pg_catalog.pg_type`: Postgres finds its catalogs
/// without a schema (psycopg's type lookups name them so).
fn qualify_catalogs(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut last = 0;
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < lower.len() {
        let rest = &lower[i..];
        let kw = if rest.starts_with("from") || rest.starts_with("join") {
            4
        } else {
            0
        };
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if kw > 0 && word_start {
            let after = &rest[kw..];
            let name_at = after.len() - after.trim_start().len();
            let name = &after[name_at..];
            if name_at > 0 && name.starts_with("pg_") {
                let len = name
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(name.len());
                let next = name[len..].trim_start();
                if !next.starts_with('.') && !next.starts_with('(') {
                    let at = i + kw + name_at;
                    out.push_str(&sql[last..at]);
                    out.push_str("pg_catalog.");
                    last = at;
                }
            }
            i += kw;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out.push_str(&sql[last..]);
    out
}

/// `s` with each cast `from` (not followed by more of an identifier)
/// replaced by `to`.
fn replace_cast(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
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

    #[test]
    fn scalar_subqueries_of_catalog_queries_are_aggregated() {
        assert_eq!(
            rewrite("SELECT a.attname, (SELECT c.collname FROM pg_catalog.pg_collation c WHERE c.oid = a.attcollation) AS coll, (SELECT count(*) FROM pg_catalog.pg_class) FROM pg_catalog.pg_attribute a"),
            "SELECT a.attname, (SELECT max(c.collname) FROM pg_catalog.pg_collation c WHERE c.oid = a.attcollation) AS coll, (SELECT count(*) FROM pg_catalog.pg_class) FROM pg_catalog.pg_attribute a"
        );
        // psql's `\d`: outer-only and non-equality conditions move out.
        assert_eq!(
            rewrite("SELECT (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) FROM pg_catalog.pg_attribute a"),
            "SELECT CASE WHEN (a.atthasdef) THEN (SELECT max(pg_get_expr(d.adbin, d.adrelid, true)) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END, CASE WHEN (a.attcollation <> (SELECT max(t.typcollation) FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid)) THEN (SELECT max(c.collname) FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid) END FROM pg_catalog.pg_attribute a"
        );
        // Other queries are left as they are.
        let q = "select (select x from t where t.a = u.a) from u";
        assert_eq!(rewrite(q), q);
    }

    #[test]
    fn only_queries_of_empty_catalogs_answer_empty() {
        let cols = empty_answer(
            "SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i WHERE c.oid = i.inhrelid",
        );
        assert_eq!(
            cols,
            Some(vec![
                "oid".into(),
                "relkind".into(),
                "inhdetachpending".into()
            ])
        );
        let union = "SELECT pubname, NULL FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_class c ON true UNION SELECT pubname, NULL FROM pg_catalog.pg_publication p";
        assert!(empty_answer(union).is_some());
        for not_empty in [
            // Real catalogs, aggregates, outer joins keeping rows.
            "SELECT c.relname FROM pg_catalog.pg_class c",
            "SELECT count(*) FROM pg_catalog.pg_policy",
            "SELECT c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_inherits i ON c.oid = i.inhrelid",
            "SELECT c.relname FROM pg_catalog.pg_inherits i RIGHT JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid",
            "SELECT pubname FROM pg_catalog.pg_publication UNION SELECT relname FROM pg_catalog.pg_class",
            "SELECT * FROM interactions",
        ] {
            assert_eq!(empty_answer(not_empty), None, "{not_empty}");
        }
    }

    #[test]
    fn unqualified_catalogs_are_qualified() {
        assert_eq!(
            qualify_catalogs("SELECT typname FROM pg_type t JOIN pg_namespace n ON true, x FROM\n pg_class"),
            "SELECT typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON true, x FROM\n pg_catalog.pg_class"
        );
        for same in [
            "select * from pg_catalog.pg_type",
            "select * from pg_tables_of_mine.x",
            "select * from interactions",
            "select pg_type from t",
            "select * from unnest(pg_x(1))",
        ] {
            assert_eq!(qualify_catalogs(same), same);
        }
    }

    #[test]
    fn rewrite_casts_catalog_types() {
        assert_eq!(
            rewrite("select c.oid::pg_catalog.regclass::pg_catalog.text, x::oid, y::oidvector"),
            "select c.oid::text::text, x::bigint, y::oidvector"
        );
    }
}
