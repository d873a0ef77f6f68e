"""Read a Delta table written by CROW with an independent reader.

usage: read_table.py ENGINE TABLE_URI COL[,COL...]

ENGINE is `deltalake` (the Python deltalake package) or `polars`. Prints
one JSON object per row, sorted by the first column, with timestamps as
microseconds since the epoch and dates as ISO strings, so the output can be
compared with CROW's own reading of the same table. S3 settings come from
the standard AWS_* environment variables.
"""
import datetime
import json
import os
import sys


def storage_options():
    opts = {}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP"):
        if os.environ.get(key):
            opts[key] = os.environ[key]
    if opts:
        opts.setdefault("AWS_REGION", "us-east-1")
        opts["conditional_put"] = "etag"
    return opts


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        delta = v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def main():
    engine, uri, cols = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    if engine == "deltalake":
        from deltalake import DeltaTable

        table = DeltaTable(uri, storage_options=storage_options() or None)
        rows = table.to_pyarrow_table(columns=cols).to_pylist()
    elif engine == "polars":
        import polars as pl

        df = pl.read_delta(uri, storage_options=storage_options() or None)
        rows = df.select(cols).to_dicts()
    else:
        raise SystemExit(f"unknown engine {engine}")
    rows = [{c: plain(r[c]) for c in cols} for r in rows]
    rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    for r in rows:
        print(json.dumps(r, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
    # The deltalake package's native threads can abort the interpreter at
    # exit ("terminate called without an active exception"); the reading is
    # complete and printed by now, so leave without running finalizers.
    os._exit(0)
