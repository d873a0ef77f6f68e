#!/usr/bin/env python3
"""The analyst query set of scripts/bench/queries.py on several layouts of
the same rows (scripts/bench-storage.sh): through CROW's `POST /api/v1/sql`
(one server per layout) and through DuckDB over each layout's Parquet files.
Layouts alternate query by query so all see the same machine load; every
layout must give the same rows (within an engine) as the first.

usage: layouts.py KEY NAME=URL=TABLE_DIR ... --org ORG_ID [--runs N]

Prints a markdown table of best times (ms) per query, engine and layout,
and per engine the geometric mean of each layout's time over the first
layout's. Exits 1 if any result differs or a query fails.
"""
import argparse
import math
import sys

from queries import APPROX, QUERIES, Crow, Duck, best, same_rows, sql_for


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("key")
    ap.add_argument("layouts", nargs="+", help="NAME=URL=TABLE_DIR")
    ap.add_argument("--org", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    layouts = []
    for spec in a.layouts:
        name, url, table_dir = spec.split("=", 2)
        layouts.append((name, Crow(url, a.key), Duck(table_dir, a.org)))
    names = [n for n, _, _ in layouts]
    rows, ok = [], True
    for qid, what, q in QUERIES:
        print(f"{qid} {what} ...", file=sys.stderr, flush=True)
        times = {}
        for engine in ("crow", "duckdb"):
            first = None
            for name, crow, duck in layouts:
                run = crow.run if engine == "crow" else duck.run
                try:
                    ms, res = best(run, sql_for(q, engine), a.runs)
                except Exception as e:  # a failed query is a result, not a crash
                    print(f"  {engine} on {name} failed: {e}", file=sys.stderr)
                    ok = False
                    continue
                times[(engine, name)] = ms
                if first is None:
                    first = res
                else:
                    same, why = same_rows(first, res, 0.10 if qid in APPROX else 1e-9)
                    if not same:
                        ok = False
                        print(f"  {engine} on {name} DIFFERENT from {names[0]}: {why}",
                              file=sys.stderr)
        rows.append((qid, what, times))
    head = " | ".join(f"CROW {n}" for n in names) + " | " + " | ".join(f"DuckDB {n}" for n in names)
    print(f"| query | what | {head} |")
    print("|---|---|" + "---:|" * (2 * len(names)))
    fmt = lambda v: f"{v:.0f}" if v is not None else "failed"
    for qid, what, t in rows:
        cells = [fmt(t.get((e, n))) for e in ("crow", "duckdb") for n in names]
        print(f"| {qid} | {what} | " + " | ".join(cells) + " |")
    print()
    for engine, label in (("crow", "CROW"), ("duckdb", "DuckDB")):
        for n in names[1:]:
            r = [t[(engine, n)] / t[(engine, names[0])] for _, _, t in rows
                 if (engine, n) in t and (engine, names[0]) in t]
            geo = math.exp(sum(math.log(x) for x in r) / len(r)) if r else float("nan")
            print(f"**{label}: {n} / {names[0]} geometric mean {geo:.2f}** ({len(r)} queries)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
