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
//! their comments (`pg_description`). It holds no row of any table, and
//! nothing that differs between organizations. CROW has no indexes,
//! constraints, defaults, inheritance, policies, statistics objects or
//! publications: those catalogs exist (so the queries plan) and are empty.
//! Every table is a `MemTable` built per statement: nothing writes to it.
//!
//! [`rewrite`] adapts what tools send to what the planner reads, and
//! [`empty_answer`] answers the catalog queries that can only find rows in
//! an empty catalog.

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
/// `information_schema`'s namespace oid.
const INFORMATION_SCHEMA_OID: i64 = 13_000;
/// The `heap` access method's oid, as in Postgres.
const HEAP_OID: i64 = 2;
/// `pg_class`'s own oid (`'pg_catalog.pg_class'::regclass`), as in Postgres.
const PG_CLASS_OID: i64 = 1259;

/// A column of a catalog table.
enum Col {
    Text(Vec<Option<String>>),
    Int(Vec<i64>),
    Int32(Vec<i32>),
    Int16(Vec<i16>),
    Bool(Vec<bool>),
    Float(Vec<f32>),
    /// `n` NULL text arrays (`text[]`).
    NullTextList(usize),
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
            Col::NullTextList(n) => arrow::array::new_null_array(
                &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                n,
            ),
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
            Col::NullTextList(_) => Col::NullTextList(0),
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
    let (pg_attribute, natts) = attributes(rels);
    let mut out = vec![
        ("pg_namespace", namespaces()),
        ("pg_class", classes(rels, natts)),
        ("pg_attribute", pg_attribute),
        ("pg_type", types()),
        ("pg_description", descriptions(rels)),
    ];
    out.extend(fixed_catalogs());
    out.extend(empty_catalogs());
    out
}

/// `pg_namespace`: Postgres' own schemas and `public`.
fn namespaces() -> Option<Arc<MemTable>> {
    table(vec![
        (
            "oid",
            Col::Int(vec![11, PUBLIC_OID, INFORMATION_SCHEMA_OID]),
        ),
        (
            "nspname",
            text(["pg_catalog", "public", "information_schema"]),
        ),
        ("nspowner", Col::Int(vec![10, 10, 10])),
        ("nspacl", nulls(3)),
    ])
}

/// `pg_attribute`: the tenant views' columns (secret columns left out),
/// and each relation's number of columns.
fn attributes(
    rels: &[(i64, &'static crow_schemas::TableDef)],
) -> (Option<Arc<MemTable>>, Vec<i16>) {
    let mut natts = Vec::new();
    let (mut attrelid, mut attname, mut atttypid, mut attlen, mut attnum) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut attnotnull, mut attcollation, mut attstorage) = (vec![], vec![], vec![]);
    for (oid, def) in rels {
        let cols: Vec<_> = crate::tenant::view_columns(def).collect();
        natts.push(i16::try_from(cols.len()).unwrap_or(i16::MAX));
        for (i, c) in cols.iter().enumerate() {
            let ty = i64::from(pg_type(&c.ty.data_type()).oid());
            let len = TYPES.iter().find(|t| t.0 == ty).map_or(-1, |t| t.2);
            attrelid.push(*oid);
            attname.push(c.name.to_string());
            atttypid.push(ty);
            attlen.push(len);
            attnum.push(i16::try_from(i + 1).unwrap_or(i16::MAX));
            attnotnull.push(!c.nullable);
            let is_text = matches!(ty, 25 | 1043);
            attcollation.push(if is_text { DEFAULT_COLLATION } else { 0 });
            attstorage.push(if len < 0 { "x" } else { "p" });
        }
    }
    let rows = attrelid.len();
    let t = table(vec![
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
    (t, natts)
}

/// `pg_class`: one ordinary table per relation of the tenant session, with
/// `natts[i]` columns; no storage options (`reloptions` NULL).
fn classes(
    rels: &[(i64, &'static crow_schemas::TableDef)],
    natts: Vec<i16>,
) -> Option<Arc<MemTable>> {
    let n = rels.len();
    let oids: Vec<i64> = rels.iter().map(|r| r.0).collect();
    table(vec![
        ("oid", Col::Int(oids.clone())),
        ("relname", text(rels.iter().map(|r| r.1.name))),
        ("relnamespace", Col::Int(vec![PUBLIC_OID; n])),
        ("reltype", Col::Int(vec![0; n])),
        ("reloftype", Col::Int(vec![0; n])),
        ("relowner", Col::Int(vec![10; n])),
        ("relam", Col::Int(vec![HEAP_OID; n])),
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
        ("reloptions", Col::NullTextList(n)),
        ("relpartbound", nulls(n)),
    ])
}

/// `pg_type`: the types of CROW's columns.
fn types() -> Option<Arc<MemTable>> {
    let t = TYPES.len();
    let collation = |c: &str| if c == "S" { DEFAULT_COLLATION } else { 0 };
    table(vec![
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
            Col::Int(TYPES.iter().map(|t| collation(t.3)).collect()),
        ),
        ("typdefault", nulls(t)),
    ])
}

/// `pg_description`: each relation's documentation (`objsubid` 0) and its
/// columns' (`objsubid` = `attnum`), as Postgres keeps `COMMENT ON`.
fn descriptions(rels: &[(i64, &'static crow_schemas::TableDef)]) -> Option<Arc<MemTable>> {
    let (mut objoid, mut objsubid, mut description) = (vec![], vec![], vec![]);
    for (oid, def) in rels {
        let docs = std::iter::once(def.doc).chain(crate::tenant::view_columns(def).map(|c| c.doc));
        for (sub, doc) in docs.enumerate() {
            if !doc.is_empty() {
                objoid.push(*oid);
                objsubid.push(i64::try_from(sub).unwrap_or(i64::MAX));
                description.push(doc.to_string());
            }
        }
    }
    let n = objoid.len();
    table(vec![
        ("objoid", Col::Int(objoid)),
        ("classoid", Col::Int(vec![PG_CLASS_OID; n])),
        ("objsubid", Col::Int(objsubid)),
        ("description", text(description)),
    ])
}

/// The small catalogs with fixed rows: collations, access methods, the
/// database, its role and tablespace.
fn fixed_catalogs() -> Vec<(&'static str, Option<Arc<MemTable>>)> {
    vec![
        (
            "pg_collation",
            table(vec![
                ("oid", Col::Int(vec![DEFAULT_COLLATION, 950])),
                ("collname", text(["default", "C"])),
                ("collnamespace", Col::Int(vec![11, 11])),
            ]),
        ),
        (
            "pg_am",
            table(vec![
                ("oid", Col::Int(vec![HEAP_OID, 403])),
                ("amname", text(["heap", "btree"])),
                ("amtype", text(["t", "i"])),
            ]),
        ),
        (
            "pg_database",
            table(vec![
                ("oid", Col::Int(vec![16_383])),
                ("datname", text(["crow"])),
                ("datdba", Col::Int(vec![10])),
                ("encoding", Col::Int32(vec![6])),
                ("datallowconn", Col::Bool(vec![true])),
                ("datistemplate", Col::Bool(vec![false])),
            ]),
        ),
        (
            "pg_roles",
            table(vec![
                ("oid", Col::Int(vec![10])),
                ("rolname", text(["crow"])),
                ("rolsuper", Col::Bool(vec![false])),
            ]),
        ),
        (
            "pg_tablespace",
            table(vec![
                ("oid", Col::Int(vec![1663])),
                ("spcname", text(["pg_default"])),
            ]),
        ),
    ]
}

/// The type of a column of an empty catalog: `I` int8, `S` text, `B` bool,
/// `X` int2, `F` float4.
#[derive(Clone, Copy)]
enum Kind {
    I,
    S,
    B,
    X,
    F,
}

impl Kind {
    fn col(self) -> Col {
        match self {
            Kind::I => Col::Int(vec![]),
            Kind::S => text(Vec::<String>::new()),
            Kind::B => Col::Bool(vec![]),
            Kind::X => Col::Int16(vec![]),
            Kind::F => Col::Float(vec![]),
        }
    }
}

/// The catalogs CROW has no rows for (no indexes, constraints, defaults,
/// inheritance, policies, …): their names and columns.
const EMPTY_CATALOGS: &[(&str, &[(&str, Kind)])] = {
    use Kind::{B, F, I, S, X};
    &[
        (
            "pg_attrdef",
            &[("oid", I), ("adrelid", I), ("adnum", X), ("adbin", S)],
        ),
        (
            "pg_index",
            &[
                ("indexrelid", I),
                ("indrelid", I),
                ("indnatts", X),
                ("indnkeyatts", X),
                ("indisunique", B),
                ("indnullsnotdistinct", B),
                ("indisprimary", B),
                ("indisexclusion", B),
                ("indimmediate", B),
                ("indisclustered", B),
                ("indisvalid", B),
                ("indisready", B),
                ("indislive", B),
                ("indisreplident", B),
                ("indkey", S),
                ("indclass", S),
                ("indoption", S),
                ("indexprs", S),
                ("indpred", S),
            ],
        ),
        (
            "pg_constraint",
            &[
                ("oid", I),
                ("conname", S),
                ("connamespace", I),
                ("contype", S),
                ("condeferrable", B),
                ("condeferred", B),
                ("convalidated", B),
                ("conrelid", I),
                ("contypid", I),
                ("conindid", I),
                ("conparentid", I),
                ("confrelid", I),
                ("confupdtype", S),
                ("confdeltype", S),
                ("confmatchtype", S),
                ("conislocal", B),
                ("coninhcount", X),
                ("connoinherit", B),
                ("conkey", S),
                ("confkey", S),
                ("conbin", S),
            ],
        ),
        (
            "pg_inherits",
            &[
                ("inhrelid", I),
                ("inhparent", I),
                ("inhseqno", I),
                ("inhdetachpending", B),
            ],
        ),
        (
            "pg_policy",
            &[
                ("oid", I),
                ("polname", S),
                ("polrelid", I),
                ("polcmd", S),
                ("polpermissive", B),
                ("polroles", S),
                ("polqual", S),
                ("polwithcheck", S),
            ],
        ),
        (
            "pg_statistic_ext",
            &[
                ("oid", I),
                ("stxrelid", I),
                ("stxname", S),
                ("stxnamespace", I),
                ("stxowner", I),
                ("stxstattarget", I),
                ("stxkeys", S),
                ("stxkind", S),
            ],
        ),
        (
            "pg_publication",
            &[
                ("oid", I),
                ("pubname", S),
                ("pubowner", I),
                ("puballtables", B),
                ("pubinsert", B),
                ("pubupdate", B),
                ("pubdelete", B),
                ("pubtruncate", B),
                ("pubviaroot", B),
            ],
        ),
        (
            "pg_publication_rel",
            &[
                ("oid", I),
                ("prpubid", I),
                ("prrelid", I),
                ("prqual", S),
                ("prattrs", S),
            ],
        ),
        (
            "pg_publication_namespace",
            &[("oid", I), ("pnpubid", I), ("pnnspid", I)],
        ),
        (
            "pg_trigger",
            &[
                ("oid", I),
                ("tgrelid", I),
                ("tgparentid", I),
                ("tgname", S),
                ("tgenabled", S),
                ("tgisinternal", B),
            ],
        ),
        (
            "pg_rewrite",
            &[
                ("oid", I),
                ("rulename", S),
                ("ev_class", I),
                ("ev_type", S),
                ("ev_enabled", S),
                ("is_instead", B),
            ],
        ),
        (
            "pg_foreign_table",
            &[("ftrelid", I), ("ftserver", I), ("ftoptions", S)],
        ),
        (
            "pg_partitioned_table",
            &[("partrelid", I), ("partstrat", S)],
        ),
        (
            "pg_sequence",
            &[
                ("seqrelid", I),
                ("seqtypid", I),
                ("seqstart", I),
                ("seqincrement", I),
                ("seqmax", I),
                ("seqmin", I),
                ("seqcache", I),
                ("seqcycle", B),
            ],
        ),
        (
            "pg_depend",
            &[
                ("classid", I),
                ("objid", I),
                ("objsubid", I),
                ("refclassid", I),
                ("refobjid", I),
                ("refobjsubid", I),
                ("deptype", S),
            ],
        ),
        (
            "pg_opclass",
            &[
                ("oid", I),
                ("opcmethod", I),
                ("opcname", S),
                ("opcnamespace", I),
                ("opcdefault", B),
                ("opcintype", I),
            ],
        ),
        (
            "pg_enum",
            &[
                ("oid", I),
                ("enumtypid", I),
                ("enumsortorder", F),
                ("enumlabel", S),
            ],
        ),
    ]
};

/// The catalogs CROW has no rows for (no indexes, constraints, defaults,
/// inheritance, policies, …): their columns, empty.
fn empty_catalogs() -> Vec<(&'static str, Option<Arc<MemTable>>)> {
    EMPTY_CATALOGS
        .iter()
        .map(|(name, cols)| {
            (
                *name,
                empty(cols.iter().map(|(c, k)| (*c, k.col())).collect()),
            )
        })
        .collect()
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
    /// `CAST(x AS REGCLASS)` ([`rewrite`] calls this with `x` as text): the
    /// oid of the relation named `x` (a catalog's or the session's table,
    /// optionally schema-qualified), or `x` itself if it is a number.
    RegClass(Vec<(String, i64)>),
    /// `json_build_object(key, value, …)`: a JSON object's text.
    JsonObject,
    /// `pattern ESCAPE 'c'` ([`rewrite`]): the `LIKE` pattern with `\` as
    /// its escape character instead of `c`.
    LikePattern,
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
            Answer::RegClass(names) => {
                let a = strings(&args.args, 0, rows)?;
                let out: Int64Array = (0..rows)
                    .map(|r| {
                        (!a.is_null(r))
                            .then(|| regclass(a.value(r), names))
                            .flatten()
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            Answer::JsonObject => json_objects(&args.args, rows),
            Answer::LikePattern => {
                let (p, e) = (strings(&args.args, 0, rows)?, strings(&args.args, 1, rows)?);
                let out: StringArray = (0..rows)
                    .map(|r| {
                        let esc = (!e.is_null(r)).then(|| e.value(r).chars().next()).flatten();
                        (!p.is_null(r)).then(|| like_pattern(p.value(r), esc))
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// The `i`-th argument as text (NULL where it has none).
fn strings(args: &[ColumnarValue], i: usize, rows: usize) -> DfResult<StringArray> {
    let Some(arg) = args.get(i) else {
        return Ok(StringArray::from(vec![None::<&str>; rows]));
    };
    let a = arrow::compute::cast(&arg.to_array(rows)?, &DataType::Utf8)?;
    Ok(a.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(vec![None::<&str>; rows])))
}

/// Postgres' oids of the catalogs tools name in `'pg_catalog.x'::regclass`.
const CATALOG_OIDS: &[(&str, i64)] = &[
    ("pg_class", PG_CLASS_OID),
    ("pg_attribute", 1249),
    ("pg_type", 1247),
    ("pg_proc", 1255),
    ("pg_namespace", 2615),
    ("pg_constraint", 2606),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_attrdef", 2604),
    ("pg_collation", 3456),
    ("pg_am", 2601),
    ("pg_database", 1262),
    ("pg_trigger", 2620),
    ("pg_rewrite", 2618),
    ("pg_inherits", 2611),
    ("pg_opclass", 2616),
    ("pg_sequence", 2224),
    ("pg_depend", 2608),
    ("pg_policy", 3256),
    ("pg_statistic_ext", 3381),
    ("pg_tablespace", 1213),
    ("pg_enum", 3501),
];

/// The oid `'name'::regclass` names: a number is itself; `pg_catalog.x`
/// and `public.x` (quoted or not) are looked up in `names`.
fn regclass(name: &str, names: &[(String, i64)]) -> Option<i64> {
    let name = name.trim();
    if let Ok(oid) = name.parse::<i64>() {
        return Some(oid);
    }
    let (schema, rel) = match name.rsplit_once('.') {
        Some((s, r)) => (Some(s.trim_matches('"')), r.trim_matches('"')),
        None => (None, name.trim_matches('"')),
    };
    let found = |n: &(String, i64)| (n.0 == rel).then_some(n.1);
    match schema {
        Some("pg_catalog") => CATALOG_OIDS.iter().find(|c| c.0 == rel).map(|c| c.1),
        Some("public") => names.iter().find_map(found),
        Some(_) => None,
        None => names
            .iter()
            .find_map(found)
            .or_else(|| CATALOG_OIDS.iter().find(|c| c.0 == rel).map(|c| c.1)),
    }
}

/// `pattern` with escape character `esc` rewritten to use `\`, the only
/// escape character the planner's `LIKE` takes.
fn like_pattern(pattern: &str, esc: Option<char>) -> String {
    let Some(esc) = esc.filter(|c| *c != '\\') else {
        return pattern.to_string();
    };
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == esc {
            match chars.next() {
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push(c),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// `json_build_object(k1, v1, k2, v2, …)` per row: booleans and numbers as
/// JSON's, NULL as null, other values as their text.
fn json_objects(args: &[ColumnarValue], rows: usize) -> DfResult<ColumnarValue> {
    use serde_json::Value;
    let arrays = args
        .iter()
        .map(|a| a.to_array(rows))
        .collect::<DfResult<Vec<_>>>()?;
    let mut values: Vec<Vec<Value>> = Vec::with_capacity(arrays.len());
    for a in &arrays {
        let column: Vec<Value> = match a.data_type() {
            DataType::Boolean => {
                let b = arrow::compute::cast(a, &DataType::Boolean)?;
                let b = b.as_any().downcast_ref::<BooleanArray>().cloned();
                (0..rows)
                    .map(|r| match &b {
                        Some(b) if !b.is_null(r) => Value::Bool(b.value(r)),
                        _ => Value::Null,
                    })
                    .collect()
            }
            t if t.is_integer() => {
                let n = ints(
                    std::slice::from_ref(&ColumnarValue::Array(a.clone())),
                    0,
                    rows,
                )?;
                (0..rows)
                    .map(|r| {
                        if n.is_null(r) {
                            Value::Null
                        } else {
                            Value::from(n.value(r))
                        }
                    })
                    .collect()
            }
            _ => {
                let s = strings(
                    std::slice::from_ref(&ColumnarValue::Array(a.clone())),
                    0,
                    rows,
                )?;
                (0..rows)
                    .map(|r| {
                        if s.is_null(r) {
                            Value::Null
                        } else {
                            Value::from(s.value(r))
                        }
                    })
                    .collect()
            }
        };
        values.push(column);
    }
    let out: StringArray = (0..rows)
        .map(|r| {
            let mut object = serde_json::Map::new();
            for pair in values.chunks(2) {
                if let [k, v] = pair {
                    let key = match &k[r] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    object.insert(key, v[r].clone());
                }
            }
            Some(Value::Object(object).to_string())
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out)))
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
    for name in ["pg_collation_is_visible", "pg_type_is_visible"] {
        ctx.register_udf(pg_fn(name, DataType::Boolean, Answer::Bool(true)));
    }
    for name in ["pg_get_serial_sequence", "pg_get_ruledef"] {
        ctx.register_udf(pg_fn(name, DataType::Utf8, Answer::Null));
    }
    let names = rels
        .iter()
        .map(|(oid, d)| (d.name.to_string(), *oid))
        .collect();
    ctx.register_udf(pg_fn(REGCLASS_FN, DataType::Int64, Answer::RegClass(names)));
    ctx.register_udf(pg_fn(
        "json_build_object",
        DataType::Utf8,
        Answer::JsonObject,
    ));
    ctx.register_udf(pg_fn(LIKE_PATTERN_FN, DataType::Utf8, Answer::LikePattern));
}

/// The function [`rewrite`] calls for `CAST(x AS REGCLASS)`.
const REGCLASS_FN: &str = "crow_regclass";
/// The function [`rewrite`] calls for a `LIKE` pattern's `ESCAPE`.
const LIKE_PATTERN_FN: &str = "crow_like_pattern";

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
        if let Some(rewritten) = rewrite_catalog_ast(&out) {
            return rewritten;
        }
    }
    out
}

/// Catalog queries, made plannable expression by expression (innermost
/// first): `None` if nothing changed, or the SQL does not parse.
/// - a scalar subquery that answers no rows whatever the data
///   ([`query_is_empty`]: SQLAlchemy's column defaults and identity
///   options, read from `pg_attrdef` and `pg_sequence`) is NULL, as
///   Postgres answers it;
/// - other scalar subqueries are aggregated ([`plannable_subquery`]);
/// - catalog casts and `LIKE … ESCAPE` become functions ([`catalog_cast`],
///   [`like_escape`]);
/// - a parameter passed straight to a function is text
///   ([`typed_parameters`]);
/// - storage options CROW never has are NULL ([`no_storage_options`]).
fn rewrite_catalog_ast(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |e| {
        let new = match &*e {
            Expr::Subquery(q) if query_is_empty(q) => parse_expr("NULL"),
            other => plannable_subquery(other)
                .or_else(|| catalog_cast(other))
                .or_else(|| no_storage_options(other)),
        };
        if let Some(new) = new {
            *e = new;
            changed = true;
        }
        changed |= like_escape(e) | typed_parameters(e);
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

/// One expression of Postgres' SQL.
fn parse_expr(text: &str) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// Casts to Postgres' catalog types, in any spelling (`CAST(x AS
/// REGCLASS)`, `x::OID`): `regclass` → the relation's oid
/// ([`Answer::RegClass`]), `oid` → `BIGINT`, `regtype`, `regnamespace`,
/// `regproc` and `name` → `TEXT`.
fn catalog_cast(
    e: &datafusion::sql::sqlparser::ast::Expr,
) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::ast::{DataType as SqlType, Expr};
    let Expr::Cast {
        expr, data_type, ..
    } = e
    else {
        return None;
    };
    let ty = match data_type {
        SqlType::Regclass => "regclass".to_string(),
        SqlType::Custom(name, _) => name
            .0
            .last()?
            .to_string()
            .trim_matches('"')
            .to_ascii_lowercase(),
        _ => return None,
    };
    match ty.as_str() {
        "regclass" => parse_expr(&format!("{REGCLASS_FN}(CAST({expr} AS TEXT))")),
        "oid" => parse_expr(&format!("CAST({expr} AS BIGINT)")),
        "regtype" | "regnamespace" | "regproc" | "name" => {
            parse_expr(&format!("CAST({expr} AS TEXT)"))
        }
        _ => None,
    }
}

/// `x LIKE p ESCAPE 'c'` → `x LIKE crow_like_pattern(p, 'c')` (SQLAlchemy's
/// `startswith(…, autoescape=True)`, of its schema listing): the planner
/// takes only `\` as escape character. Whether `e` changed.
fn like_escape(e: &mut datafusion::sql::sqlparser::ast::Expr) -> bool {
    use datafusion::sql::sqlparser::ast::Expr;
    let (Expr::Like {
        pattern,
        escape_char,
        ..
    }
    | Expr::ILike {
        pattern,
        escape_char,
        ..
    }) = e
    else {
        return false;
    };
    let Some(esc) = escape_char.take() else {
        return false;
    };
    match parse_expr(&format!("{LIKE_PATTERN_FN}({pattern}, {esc})")) {
        Some(p) => {
            **pattern = p;
            true
        }
        None => {
            *escape_char = Some(esc);
            false
        }
    }
}

/// A bare parameter passed to a function (`pg_get_constraintdef(oid, $1)`)
/// has no type the planner can infer: it is read as text, as the
/// extended protocol's untyped parameters are. Whether `e` changed.
fn typed_parameters(e: &mut datafusion::sql::sqlparser::ast::Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
    };
    let Expr::Function(f) = e else { return false };
    let FunctionArguments::List(list) = &mut f.args else {
        return false;
    };
    let mut changed = false;
    for arg in &mut list.args {
        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) = arg {
            if matches!(a, Expr::Value(v) if matches!(v.value, Value::Placeholder(_))) {
                if let Some(cast) = parse_expr(&format!("CAST({a} AS TEXT)")) {
                    *a = cast;
                    changed = true;
                }
            }
        }
    }
    changed
}

/// psql's `\d+` lists a table's storage options and its TOAST table's as
/// `c.reloptions || array(select 'toast.' || x from unnest(tc.reloptions)
/// x)`, a correlated set-returning subquery the planner lacks. CROW has no
/// storage options (`reloptions` is NULL), so that array is
/// `tc.reloptions` itself.
fn no_storage_options(
    e: &datafusion::sql::sqlparser::ast::Expr,
) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, SetExpr, TableFactor};
    let Expr::Function(f) = e else { return None };
    let FunctionArguments::Subquery(q) = &f.args else {
        return None;
    };
    if !f.name.to_string().eq_ignore_ascii_case("array") {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    let TableFactor::UNNEST { array_exprs, .. } = &from.relation else {
        return None;
    };
    let [options] = array_exprs.as_slice() else {
        return None;
    };
    let is_options = match options {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("reloptions"),
        Expr::CompoundIdentifier(p) => p
            .last()
            .is_some_and(|i| i.value.eq_ignore_ascii_case("reloptions")),
        _ => false,
    };
    (is_options && from.joins.is_empty()).then(|| options.clone())
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

/// The scalar subquery of a catalog query made plannable: its one value
/// aggregated (`(SELECT max(c.collname) FROM …)`), and the conditions the
/// planner cannot decorrelate moved out of it — ones on the outer row
/// only (`AND a.atthasdef`), and comparisons other than `=` of an outer
/// and an inner value (`a.attcollation <> t.typcollation`, compared with
/// that value found by the remaining conditions) — into `CASE WHEN … THEN
/// (SELECT …) END`. Postgres refuses a scalar subquery that finds two rows;
/// for at most one row these are the same. `None` for any other expression
/// ([`rewrite_catalog_ast`]).
fn plannable_subquery(
    e: &datafusion::sql::sqlparser::ast::Expr,
) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, SelectItem, SetExpr};
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
    let aggregated = matches!(&*x, Expr::Function(f)
        if AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str()));
    if aggregated {
        return None;
    }
    *x = parse_pg_expr(format!("max({x})"))?;
    let inner = subquery_names(select);
    let mut all = Vec::new();
    if let Some(w) = select.selection.take() {
        conjuncts(w, &mut all);
    }
    let split = SplitConditions::of(all, &inner);
    let rest = joined(&split.kept, " AND ");
    let kept = if rest.is_empty() {
        None
    } else {
        Some(parse_pg_expr(rest.clone())?)
    };
    if split.outer_only.is_empty() && split.compared.is_empty() {
        select.selection = kept;
        return Some(Expr::Subquery(q));
    }
    let conditions = split.moved_out(select, &rest);
    select.selection = kept;
    parse_pg_expr(format!(
        "CASE WHEN {} THEN ({q}) END",
        conditions.join(" AND ")
    ))
}

/// `items` as text, separated by `sep`.
fn joined<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// `text` parsed as one Postgres expression.
fn parse_pg_expr(text: String) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// A subquery's own names: its tables' aliases (or names), lowercase.
fn subquery_names(select: &datafusion::sql::sqlparser::ast::Select) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::TableFactor;
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
    inner
}

/// A scalar subquery's conditions, sorted by what [`plannable_subquery`]
/// does with them.
struct SplitConditions {
    /// Conditions that stay in the subquery.
    kept: Vec<datafusion::sql::sqlparser::ast::Expr>,
    /// Conditions on the outer row only.
    outer_only: Vec<datafusion::sql::sqlparser::ast::Expr>,
    /// Comparisons other than `=` of an outer and an inner value: (outer
    /// side, operator, inner side, whether the inner side was on the left).
    compared: Vec<(String, String, String, bool)>,
}

impl SplitConditions {
    /// Sort `all` by the names they use (`inner`: the subquery's own).
    fn of(all: Vec<datafusion::sql::sqlparser::ast::Expr>, inner: &[String]) -> Self {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};
        let is_inner = |qs: &[String]| qs.iter().all(|q| q.is_empty() || inner.contains(q));
        let is_outer = |qs: &[String]| {
            !qs.is_empty() && qs.iter().all(|q| !q.is_empty() && !inner.contains(q))
        };
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
        SplitConditions {
            kept,
            outer_only,
            compared,
        }
    }

    /// The conditions moved out of the subquery into its `CASE WHEN`: the
    /// outer-only ones, and each comparison against the inner value found
    /// by the subquery's `FROM` and remaining conditions (`rest`).
    fn moved_out(
        self,
        select: &datafusion::sql::sqlparser::ast::Select,
        rest: &str,
    ) -> Vec<String> {
        let from = joined(&select.from, ", ");
        let filter = if rest.is_empty() {
            String::new()
        } else {
            format!(" WHERE {rest}")
        };
        let mut conditions: Vec<String> =
            self.outer_only.iter().map(|c| format!("({c})")).collect();
        for (outer, op, inner_side, flipped) in self.compared {
            let found = format!("(SELECT max({inner_side}) FROM {from}{filter})");
            conditions.push(if flipped {
                format!("({found} {op} {outer})")
            } else {
                format!("({outer} {op} {found})")
            });
        }
        conditions
    }
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
    "pg_depend",
    "pg_opclass",
    "pg_enum",
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

/// The columns of a catalog query that answers no rows whatever the data
/// ([`query_is_empty`]): psql's `\d` asks for policies, statistics
/// objects, publications and inheritance, SQLAlchemy for keys and indexes,
/// with functions (`array(select …)`, `unnest`, `generate_subscripts`)
/// the planner lacks.
pub fn empty_answer(sql: &str) -> Option<Vec<String>> {
    use datafusion::sql::sqlparser::ast::{SelectItem, Statement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    if !sql.contains("pg_catalog.") {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    if !query_is_empty(q) {
        return None;
    }
    let mut selects = Vec::new();
    branches(&q.body, &mut selects);
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

/// The plain selects a query's body is made of (`UNION`s of them), or
/// false if it holds anything else.
fn branches<'a>(
    body: &'a datafusion::sql::sqlparser::ast::SetExpr,
    out: &mut Vec<&'a datafusion::sql::sqlparser::ast::Select>,
) -> bool {
    use datafusion::sql::sqlparser::ast::SetExpr;
    match body {
        SetExpr::Select(s) => {
            out.push(s);
            true
        }
        SetExpr::SetOperation { left, right, .. } => branches(left, out) && branches(right, out),
        SetExpr::Query(q) => branches(&q.body, out),
        _ => false,
    }
}

/// Whether a query answers no rows whatever the data: it has no `WITH`,
/// and every branch of it is [`select_is_empty`].
fn query_is_empty(q: &datafusion::sql::sqlparser::ast::Query) -> bool {
    let mut selects = Vec::new();
    q.with.is_none()
        && branches(&q.body, &mut selects)
        && selects.iter().all(|s| select_is_empty(s))
}

/// Whether a plain select answers no rows: it reads an empty relation (a
/// catalog CROW keeps empty, or a subquery that answers none) in its FROM
/// list or inner-joined to it, its other joins are LEFT ones (which keep
/// an empty left side empty), and it does not aggregate over all rows
/// (`count(*)` of nothing is one row; grouped, nothing is no rows).
fn select_is_empty(s: &datafusion::sql::sqlparser::ast::Select) -> bool {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, JoinOperator, SelectItem, Visit};
    let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    let aggregate = s.having.is_some()
        || s.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let mut v = Aggregates::default();
                let _ = e.visit(&mut v);
                v.found
            }
            _ => false,
        });
    if aggregate && !grouped {
        return false;
    }
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
        factor_is_empty(&t.relation)
            || t.joins
                .iter()
                .any(|j| inner(&j.join_operator) && factor_is_empty(&j.relation))
    });
    reads_empty && only_left
}

/// Whether a FROM item has no rows: a catalog CROW keeps empty, or a
/// subquery that answers none.
fn factor_is_empty(f: &datafusion::sql::sqlparser::ast::TableFactor) -> bool {
    use datafusion::sql::sqlparser::ast::TableFactor;
    match f {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
            matches!(parts.as_slice(), [s, t] if s == "pg_catalog" && EMPTY.contains(&t.as_str()))
        }
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        _ => false,
    }
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
            rewrite("SELECT (SELECT d.description FROM pg_catalog.pg_description d WHERE d.objoid = a.attrelid AND d.objsubid = a.attnum AND a.atthasdef), (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) FROM pg_catalog.pg_attribute a"),
            "SELECT CASE WHEN (a.atthasdef) THEN (SELECT max(d.description) FROM pg_catalog.pg_description d WHERE d.objoid = a.attrelid AND d.objsubid = a.attnum) END, CASE WHEN (a.attcollation <> (SELECT max(t.typcollation) FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid)) THEN (SELECT max(c.collname) FROM pg_catalog.pg_collation c, pg_catalog.pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid) END FROM pg_catalog.pg_attribute a"
        );
        // A subquery of a catalog CROW keeps empty is NULL, as it answers.
        assert_eq!(
            rewrite("SELECT CASE WHEN a.atthasdef THEN (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d WHERE a.atthasdef AND d.adrelid = a.attrelid) ELSE NULL END, (SELECT count(*) FROM pg_catalog.pg_attrdef) FROM pg_catalog.pg_attribute a"),
            "SELECT CASE WHEN a.atthasdef THEN NULL ELSE NULL END, (SELECT count(*) FROM pg_catalog.pg_attrdef) FROM pg_catalog.pg_attribute a"
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
    fn sqlalchemy_reflection_is_made_plannable() {
        // Casts to catalog types in any spelling, parameters of functions,
        // `LIKE … ESCAPE`.
        assert_eq!(
            rewrite("SELECT pg_catalog.pg_class.oid FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.classoid = CAST($1 AS REGCLASS) WHERE CAST(pg_catalog.pg_class.oid AS OID) > $2::OID AND pg_catalog.pg_get_constraintdef(pg_catalog.pg_class.oid, $3) IS NULL"),
            "SELECT pg_catalog.pg_class.oid FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.classoid = crow_regclass(CAST($1 AS TEXT)) WHERE CAST(pg_catalog.pg_class.oid AS BIGINT) > CAST($2 AS BIGINT) AND pg_get_constraintdef(pg_catalog.pg_class.oid, CAST($3 AS TEXT)) IS NULL"
        );
        assert_eq!(
            rewrite("SELECT pg_catalog.pg_namespace.nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.pg_namespace.nspname NOT LIKE $1::VARCHAR || '%' ESCAPE '/'"),
            "SELECT pg_catalog.pg_namespace.nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.pg_namespace.nspname NOT LIKE crow_like_pattern($1::VARCHAR || '%', '/')"
        );
        assert_eq!(like_pattern("pg/_", Some('/')), "pg\\_");
        assert_eq!(like_pattern("a\\b//c/", Some('/')), "a\\\\b\\/c/");
        assert_eq!(like_pattern("x_%", None), "x_%");
        // psql's `\d+`: storage options.
        assert_eq!(
            rewrite("SELECT pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)"),
            "SELECT array_to_string(c.reloptions || tc.reloptions, ', ') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)"
        );
    }

    #[test]
    fn regclass_names_catalogs_and_the_sessions_tables() {
        let names = vec![("interactions".to_string(), FIRST_OID)];
        assert_eq!(regclass("pg_catalog.pg_class", &names), Some(PG_CLASS_OID));
        assert_eq!(regclass("pg_constraint", &names), Some(2606));
        assert_eq!(
            regclass("\"public\".\"interactions\"", &names),
            Some(FIRST_OID)
        );
        assert_eq!(regclass("16384", &names), Some(16_384));
        assert_eq!(regclass("public.pg_class", &names), None);
        assert_eq!(regclass("other.interactions", &names), None);
        assert_eq!(regclass("api_keys_secret", &names), None);
    }

    #[test]
    fn json_build_object_of_rows() {
        let args = [
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("name".into()))),
            ColumnarValue::Array(Arc::new(StringArray::from(vec![Some("C"), None]))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("n".into()))),
            ColumnarValue::Scalar(ScalarValue::Int64(Some(2))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("b".into()))),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))),
        ];
        let ColumnarValue::Array(out) = json_objects(&args, 2).expect("json") else {
            panic!("an array");
        };
        let out = out.as_any().downcast_ref::<StringArray>().expect("text");
        let row = |i: usize| serde_json::from_str::<serde_json::Value>(out.value(i)).expect("JSON");
        assert_eq!(row(0), serde_json::json!({"name": "C", "n": 2, "b": true}));
        assert_eq!(row(1), serde_json::json!({"name": null, "n": 2, "b": true}));
    }

    #[test]
    fn sqlalchemy_key_and_index_queries_answer_empty() {
        // get_pk_constraint's: grouped over a join with an empty subquery.
        let pk = "SELECT attr.conrelid, array_agg(CAST(attr.attname AS TEXT) ORDER BY attr.ord) AS cols, attr.conname, min(attr.description) AS description FROM (SELECT con.conrelid AS conrelid, con.conname AS conname, con.description AS description, con.ord AS ord, pg_catalog.pg_attribute.attname AS attname FROM pg_catalog.pg_attribute JOIN (SELECT pg_catalog.pg_constraint.conrelid AS conrelid, pg_catalog.pg_constraint.conname AS conname, unnest(pg_catalog.pg_index.indkey) AS attnum, generate_subscripts(pg_catalog.pg_index.indkey, $1::INTEGER) AS ord, pg_catalog.pg_description.description AS description FROM pg_catalog.pg_constraint JOIN pg_catalog.pg_index ON pg_catalog.pg_constraint.conindid = pg_catalog.pg_index.indexrelid LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = pg_catalog.pg_constraint.oid WHERE pg_catalog.pg_constraint.contype = $2::VARCHAR AND pg_catalog.pg_constraint.conrelid IN ($3, $4)) AS con ON pg_catalog.pg_attribute.attnum = con.attnum AND pg_catalog.pg_attribute.attrelid = con.conrelid WHERE con.conrelid IN ($5, $6)) AS attr GROUP BY attr.conrelid, attr.conname ORDER BY attr.conrelid, attr.conname";
        assert_eq!(
            empty_answer(pk),
            Some(vec![
                "conrelid".into(),
                "cols".into(),
                "conname".into(),
                "description".into()
            ])
        );
        // Not empty: an aggregate over all rows, a derived table that has
        // rows, a LEFT join keeping the real catalog's rows.
        for not_empty in [
            "SELECT count(*) FROM (SELECT c.conname FROM pg_catalog.pg_constraint c) AS x",
            "SELECT x.relname FROM pg_catalog.pg_index i RIGHT JOIN (SELECT relname FROM pg_catalog.pg_class) AS x ON true",
            "SELECT x.relname FROM (SELECT relname FROM pg_catalog.pg_class) AS x GROUP BY x.relname",
            "SELECT c.relname, con.conname FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_constraint con ON c.oid = con.conrelid",
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
