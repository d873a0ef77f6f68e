"""Read a CROW Delta table without delta-rs, and compare it with CROW's rows.

usage: independent_delta.py TABLE_DIR CROW_PARQUET

The table's log is replayed here, from the Delta protocol alone: the last
checkpoint (`_delta_log/_last_checkpoint`, single- or multi-part Parquet)
and then every JSON commit after it, in order, keeping the `add` actions no
later `remove` cancels. The live files are then read three times, by
pyarrow (datasets over the file list), by DuckDB (`read_parquet` of the
list) and by polars (its own Parquet reader, `read_parquet`; polars'
`read_delta` would go through delta-rs), with the partition values the log
gives each file added as columns. Each must hold exactly the rows of CROW_PARQUET (`crow export TABLE --format
parquet`: CROW's own reading of the table), on the columns CROW exports
(secret columns are never exported). Prints a JSON summary; exits 1 with
the first difference otherwise.
"""
import datetime
import decimal
import glob
import json
import os
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def replay(table):
    log = os.path.join(table, "_delta_log")
    live, start, checkpoint = {}, 0, None
    schema = None
    last = os.path.join(log, "_last_checkpoint")
    if os.path.exists(last):
        cp = json.load(open(last))
        checkpoint = cp["version"]
        parts = sorted(glob.glob(os.path.join(log, f"{checkpoint:020d}.checkpoint*.parquet")))
        if not parts:
            raise SystemExit(f"{table}: _last_checkpoint names version {checkpoint}, no checkpoint file")
        for part in parts:
            for row in pq.read_table(part).to_pylist():
                if row.get("add"):
                    a = dict(row["add"])
                    # A map column: pyarrow gives its entries as pairs.
                    if isinstance(a.get("partitionValues"), list):
                        a["partitionValues"] = dict(a["partitionValues"])
                    live[a["path"]] = a
                if row.get("metaData"):
                    schema = row["metaData"]
        start = checkpoint + 1
    commits = sorted(
        int(os.path.basename(p)[:20])
        for p in glob.glob(os.path.join(log, "[0-9]" * 20 + ".json"))
    )
    after = [v for v in commits if v >= start]
    for v in after:
        with open(os.path.join(log, f"{v:020d}.json")) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = action["add"]
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
                elif "metaData" in action:
                    schema = action["metaData"]
    if schema is None:
        raise SystemExit(f"{table}: no metaData action")
    for a in live.values():
        if a.get("deletionVector"):
            raise SystemExit(f"{table}: {a['path']} has a deletion vector, which CROW does not write")
    return live, schema, checkpoint, len(after)


def partition_value(text, kind):
    if text is None:
        return None
    if kind == "date":
        return datetime.date.fromisoformat(text)
    if kind in ("integer", "long", "short", "byte"):
        return int(text)
    return text


def with_partitions(tbl, values, kinds):
    for col, kind in kinds.items():
        v = partition_value(values.get(col), kind)
        if col in tbl.column_names:
            # Written into the file too: it must agree with the log.
            seen = set(plain(x) for x in tbl.column(col).to_pylist())
            if seen - {plain(v)}:
                raise SystemExit(f"{col}: the file holds {seen}, the log says {v}")
            continue
        typ = pa.date32() if kind == "date" else (pa.int64() if isinstance(v, int) else pa.string())
        tbl = tbl.append_column(col, pa.array([v] * tbl.num_rows, type=typ))
    return tbl


def no_views(t):
    """The type with view types (how some writers record text in the
    file's Arrow schema) replaced by the plain ones: the values are equal."""
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(no_views(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, no_views(f.type)) for f in t])
    return t


def plain_table(tbl):
    schema = pa.schema([pa.field(f.name, no_views(f.type)) for f in tbl.schema])
    return tbl.cast(schema) if schema != tbl.schema else tbl


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def rows(tbl, cols):
    out = [json.dumps({c: plain(r[c]) for c in cols}, sort_keys=True) for r in tbl.select(cols).to_pylist()]
    out.sort()
    return out


def main():
    table, crow_file = sys.argv[1], sys.argv[2]
    live, meta, checkpoint, commits_after = replay(table)
    fields = json.loads(meta["schemaString"])["fields"]
    kinds = {f["name"]: f["type"] for f in fields if f["name"] in meta.get("partitionColumns", [])}
    crow = pq.read_table(crow_file)
    cols = crow.column_names
    want = rows(crow, cols)
    files = [(os.path.join(table, a["path"]), a.get("partitionValues") or {}) for a in live.values()]
    for path, _ in files:
        if not os.path.exists(path):
            raise SystemExit(f"{table}: the log's live file {path} is missing (vacuumed?)")

    con = duckdb.connect()

    def duckdb_read(path):
        t = con.sql(f"select * from read_parquet('{path}')").arrow()
        return t.read_all() if isinstance(t, pa.RecordBatchReader) else t

    readers = [
        ("pyarrow", pq.read_table),
        ("duckdb", duckdb_read),
        ("polars", lambda path: pl.read_parquet(path).to_arrow()),
    ]
    for name, read in readers:
        parts = [plain_table(with_partitions(read(p), values, kinds)) for p, values in files]
        got = rows(pa.concat_tables(parts, promote_options="permissive"), cols) if parts else []
        if got != want:
            diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise SystemExit(f"{name}: {len(got)} rows, CROW {len(want)}; first difference at {diff}: "
                             f"{got[diff] if diff < len(got) else None} vs "
                             f"{want[diff] if diff < len(want) else None}")

    lists = [f.name for f in crow.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
             or pa.types.is_list_view(f.type)]
    on_disk = [p for p in glob.glob(os.path.join(table, "**", "*.parquet"), recursive=True)
               if "_delta_log" not in p]
    print(json.dumps({"readers": [name for name, _ in readers],
                      "rows": len(want), "files": len(files), "files_on_disk": len(on_disk),
                      "checkpoint": checkpoint,
                      "commits_after_checkpoint": commits_after, "list_columns": lists}))


if __name__ == "__main__":
    main()
