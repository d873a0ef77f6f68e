#!/usr/bin/env python3
"""One large result fetched through each of CROW's protocols, in one run:
Arrow Flight SQL (the ADBC driver), `POST /api/v1/sql` as an Arrow IPC
stream and as JSON, and the Postgres wire (psycopg, binary cursor). Rows per second each (client wall time: the request,
the transfer and decoding into the client's objects — a pyarrow Table for
Arrow, Python dicts for JSON).

The result is synthetic, so no lake is needed: ROWS rows of four columns
(an integer id, a small integer, a short text, a float) from
`generate_series`, computed by the same tenant session as any query.

usage: protocols.py API_URL FLIGHT_URI KEY [--rows N] [--json-rows N]
       [--runs N] [--pg HOST:PORT --org ORG_ID]

JSON holds every row as a Python dict (about 0.5 KB each), so it is
measured on --json-rows rows (default 2,000,000) unless told otherwise; so
is the Postgres wire, whose client holds every row as a Python tuple.
"""
import argparse
import json
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import requests
from adbc_driver_flightsql import DatabaseOptions


def sql(rows):
    return (
        "SELECT value AS id, value % 1000 AS bucket, "
        "'user-' || CAST(value % 100000 AS VARCHAR) AS user_id, "
        f"CAST(value AS DOUBLE) / 7 AS amount FROM generate_series(1, {rows})"
    )


def flight(args, rows):
    conn = flight_sql.connect(
        args.flight,
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {args.key}"},
    )
    with conn, conn.cursor() as cur:
        cur.execute(sql(rows))
        return cur.fetch_arrow_table().num_rows


def http(args, rows, accept):
    r = requests.post(
        args.api + "/api/v1/sql",
        headers={"Authorization": f"Bearer {args.key}", "Accept": accept},
        json={"sql": sql(rows)},
        stream=True,
        timeout=3600,
    )
    r.raise_for_status()
    if accept.startswith("application/vnd.apache.arrow"):
        r.raw.decode_content = True
        return pa.ipc.open_stream(r.raw).read_all().num_rows
    return len(json.loads(r.content))


def postgres(args, rows):
    import psycopg

    host, port = args.pg.rsplit(":", 1)
    dsn = f"host={host} port={port} dbname=crow user={args.org} password={args.key}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute(sql(rows))
            return len(cur.fetchall())


PROTOCOLS = [
    ("Arrow Flight SQL (ADBC)", "rows", flight),
    ("HTTP Arrow IPC", "rows", lambda a, n: http(a, n, "application/vnd.apache.arrow.stream")),
    ("HTTP JSON", "json_rows", lambda a, n: http(a, n, "application/json")),
    ("Postgres wire (psycopg, binary)", "json_rows", postgres),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("api")
    p.add_argument("flight")
    p.add_argument("key")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--json-rows", type=int, default=2_000_000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--pg", help="HOST:PORT of crow serve --pg-listen")
    p.add_argument("--org", help="organization id (the Postgres user name)")
    args = p.parse_args()
    print("| protocol | rows | seconds | rows/s |")
    print("|---|---:|---:|---:|")
    results = {}
    for name, size, fetch in PROTOCOLS:
        if fetch is postgres and not args.pg:
            continue
        n = getattr(args, size)
        best = None
        for _ in range(args.runs):
            t = time.perf_counter()
            got = fetch(args, n)
            s = time.perf_counter() - t
            assert got == n, f"{name}: {got} rows, expected {n}"
            best = s if best is None else min(best, s)
        results[name] = n / best
        print(f"| {name} | {n:,} | {best:.1f} | {n / best:,.0f} |", flush=True)
    base = results["HTTP JSON"]
    print()
    for name, rate in results.items():
        print(f"{name}: {rate / base:.1f}× HTTP JSON")


if __name__ == "__main__":
    main()
