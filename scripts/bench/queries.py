#!/usr/bin/env python3
"""Analyst queries, ClickBench style: each query through CROW's SQL path
(`POST /api/v1/sql` of a running `crow serve --only api`, Arrow IPC stream
result read with pyarrow) and through DuckDB over the same Parquet files of
the `raw_web_events` Delta table, in the same run.

For each query and engine: one warm-up run, then RUNS timed runs (the best
counts, as in ClickBench's hot runs). The two engines alternate query by
query so both see the same machine load. Both results are normalised
(numbers as floats, dates and timestamps as ISO text), sorted and compared;
floats with a relative tolerance (10% for the approximate distinct counts,
whose HyperLogLog sketches differ between the engines).

Prints a markdown table (query, CROW ms, DuckDB ms, ratio, same rows), the
geometric mean of the ratios, and CROW's fixed per-request overhead. Exits 1
if any result differs or a query fails.

usage: queries.py API_URL KEY TABLE_DIR ORG_ID [--runs N] [--only Q03,Q11]
       [--json OUT.json]
"""
import argparse
import datetime as dt
import decimal
import json
import math
import os
import statistics
import sys
import time

import duckdb
import pyarrow as pa
import requests

V = "raw_web_events"
# (id, what it exercises, SQL) in the SQL both engines accept; a dict gives
# per-engine variants {"crow": …, "duckdb": …}.
QUERIES = [
    ("Q01", "count(*)", f"SELECT count(*) AS n FROM {V}"),
    ("Q02", "count with a filter",
     f"SELECT count(*) AS n FROM {V} WHERE event = 'Order Completed'"),
    ("Q03", "group by event",
     f"SELECT event, count(*) AS n FROM {V} GROUP BY event ORDER BY n DESC"),
    ("Q04", "group by day",
     f"SELECT event_date, count(*) AS n FROM {V} GROUP BY event_date ORDER BY event_date"),
    ("Q05", "distinct visitors", f"SELECT count(DISTINCT anonymous_id) AS visitors FROM {V}"),
    ("Q06", "exact distinct visitors by day",
     f"SELECT event_date, count(DISTINCT anonymous_id) AS visitors FROM {V} "
     f"GROUP BY event_date ORDER BY event_date"),
    ("Q07", "approx distinct visitors by day",
     {"crow": f"SELECT event_date, approx_distinct(anonymous_id) AS visitors FROM {V} "
              f"GROUP BY event_date ORDER BY event_date",
      "duckdb": f"SELECT event_date, approx_count_distinct(anonymous_id) AS visitors FROM {V} "
                f"GROUP BY event_date ORDER BY event_date"}),
    ("Q08", "top-10 products by views",
     f"SELECT product_id, product_name, count(*) AS views FROM {V} "
     f"WHERE event = 'Product Viewed' GROUP BY product_id, product_name "
     f"ORDER BY views DESC, product_id LIMIT 10"),
    ("Q09", "top-10 pages (views, visitors)",
     f"SELECT page_path, count(*) AS views, count(DISTINCT anonymous_id) AS visitors FROM {V} "
     f"WHERE type = 'page' GROUP BY page_path ORDER BY views DESC, page_path LIMIT 10"),
    ("Q10", "revenue by day",
     f"SELECT event_date, count(*) AS orders, sum(revenue) AS revenue, avg(revenue) AS aov "
     f"FROM {V} WHERE event = 'Order Completed' GROUP BY event_date ORDER BY event_date"),
    ("Q11", "device split (events, visitors)",
     f"SELECT device_type, count(*) AS events, count(DISTINCT anonymous_id) AS visitors "
     f"FROM {V} GROUP BY device_type ORDER BY device_type"),
    ("Q12", "hourly traffic, desktop vs mobile",
     f"SELECT extract(hour FROM occurred_at) AS hour, "
     f"sum(CASE WHEN device_type = 'desktop' THEN 1 ELSE 0 END) AS desktop, "
     f"sum(CASE WHEN device_type = 'mobile' THEN 1 ELSE 0 END) AS mobile "
     f"FROM {V} GROUP BY extract(hour FROM occurred_at) ORDER BY hour"),
    ("Q13", "funnel view → add → checkout → order per visitor",
     f"WITH v AS (SELECT anonymous_id, "
     f"max(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS viewed, "
     f"max(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS added, "
     f"max(CASE WHEN event = 'Checkout Started' THEN 1 ELSE 0 END) AS checkout, "
     f"max(CASE WHEN event = 'Order Completed' THEN 1 ELSE 0 END) AS ordered "
     f"FROM {V} GROUP BY anonymous_id) "
     f"SELECT count(*) AS visitors, sum(viewed) AS viewed, sum(viewed * added) AS added, "
     f"sum(viewed * added * checkout) AS checkout, "
     f"sum(viewed * added * checkout * ordered) AS ordered FROM v"),
    ("Q14", "events per visitor, HAVING, histogram",
     f"SELECT n, count(*) AS visitors FROM (SELECT anonymous_id, count(*) AS n FROM {V} "
     f"GROUP BY anonymous_id HAVING count(*) >= 10) t GROUP BY n ORDER BY n"),
    ("Q15", "window: lag per visitor (time between events)",
     f"WITH e AS (SELECT extract(epoch FROM occurred_at) - extract(epoch FROM lag(occurred_at) "
     f"OVER (PARTITION BY anonymous_id ORDER BY occurred_at, message_id)) AS gap FROM {V}) "
     f"SELECT count(gap) AS gaps, sum(CASE WHEN gap > 1800 THEN 1 ELSE 0 END) AS new_visits, "
     f"avg(CASE WHEN gap <= 1800 THEN gap END) AS avg_gap_s FROM e"),
    ("Q16", "window: row_number, first-touch source",
     f"SELECT campaign_source, count(*) AS visitors FROM (SELECT campaign_source, "
     f"row_number() OVER (PARTITION BY anonymous_id ORDER BY occurred_at, message_id) AS rn "
     f"FROM {V}) t WHERE rn = 1 GROUP BY campaign_source ORDER BY visitors DESC"),
    ("Q17", "CTE self-join: first view → first order",
     f"WITH views AS (SELECT anonymous_id, min(occurred_at) AS first_view FROM {V} "
     f"WHERE event = 'Product Viewed' GROUP BY anonymous_id), "
     f"orders AS (SELECT anonymous_id, min(occurred_at) AS first_order FROM {V} "
     f"WHERE event = 'Order Completed' GROUP BY anonymous_id) "
     f"SELECT count(*) AS buyers, avg(extract(epoch FROM o.first_order) - "
     f"extract(epoch FROM w.first_view)) AS secs_to_order "
     f"FROM views w JOIN orders o ON w.anonymous_id = o.anonymous_id"),
    ("Q18", "LIKE filter on page_url",
     f"SELECT page_title, count(*) AS views FROM {V} "
     f"WHERE page_url LIKE '%/products/%ear%' GROUP BY page_title ORDER BY views DESC, page_title"),
]
APPROX = {"Q07"}

# Fixed costs of a CROW request: no table at all, and the table resolved
# (Delta log loaded, partitions pruned to nothing) but no file read.
OVERHEAD = [
    ("SELECT 1", "SELECT 1 AS one"),
    ("table resolved, no file read",
     f"SELECT count(*) AS n FROM {V} WHERE event_date < DATE '1971-01-01'"),
]


def sql_for(q, engine):
    return q[engine] if isinstance(q, dict) else q


class Crow:
    def __init__(self, url, key):
        self.url = url.rstrip("/") + "/api/v1/sql"
        self.s = requests.Session()
        self.s.headers.update({"Authorization": f"Bearer {key}",
                               "Accept": "application/vnd.apache.arrow.stream"})

    def run(self, sql):
        for attempt in range(20):
            r = self.s.post(self.url, json={"sql": sql}, timeout=600)
            if r.status_code == 429:  # the key's rate limit; not part of the query
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            break
        if r.status_code != 200:
            raise RuntimeError(f"CROW answered {r.status_code}: {r.text[:500]}")
        return pa.ipc.open_stream(r.content).read_all()


class Duck:
    def __init__(self, table_dir, org_id):
        self.con = duckdb.connect()
        self.con.execute(f"SET threads = {os.cpu_count()}")
        self.con.execute("SET TimeZone = 'UTC'")
        # The same rows CROW's org-filtered view holds (one org in this lake).
        glob = os.path.join(table_dir, "event_date=*", "*.parquet")
        self.con.execute(
            f"CREATE VIEW {V} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true) "
            f"WHERE org_id = '{org_id}'")

    def run(self, sql):
        return self.con.sql(sql).to_arrow_table()


def timed(fn, sql):
    t = time.perf_counter()
    res = fn(sql)
    return (time.perf_counter() - t) * 1000.0, res


def norm_value(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, decimal.Decimal)):
        return float(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat()
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    return str(v)


def rows_of(table):
    cols = [c.to_pylist() for c in table.columns]
    rows = [tuple(norm_value(c[i]) for c in cols) for i in range(table.num_rows)]
    # Sort with None first and numbers before text, whatever the types.
    key = lambda r: tuple((0, "") if x is None else (1, x) if isinstance(x, float) else (2, x)
                          for x in r)
    return sorted(rows, key=key)


def same_rows(a, b, rel):
    ra, rb = rows_of(a), rows_of(b)
    if a.num_columns != b.num_columns:
        return False, f"{a.num_columns} vs {b.num_columns} columns"
    if len(ra) != len(rb):
        return False, f"{len(ra)} vs {len(rb)} rows"
    for x, y in zip(ra, rb):
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=rel, abs_tol=1e-6):
                    return False, f"{x} vs {y}"
            elif u != v:
                return False, f"{x} vs {y}"
    return True, ""


def best(fn, sql, runs):
    fn(sql)  # warm-up
    times = []
    res = None
    for _ in range(runs):
        ms, res = timed(fn, sql)
        times.append(ms)
    return min(times), res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("table_dir")
    ap.add_argument("org_id")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    crow, duck = Crow(a.url, a.key), Duck(a.table_dir, a.org_id)
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    results, ok = [], True
    for qid, what, q in QUERIES:
        if only and qid not in only:
            continue
        print(f"{qid} {what} ...", file=sys.stderr, flush=True)
        try:
            c_ms, c_res = best(crow.run, sql_for(q, "crow"), a.runs)
        except Exception as e:  # a failed query is a result, not a crash
            print(f"  CROW failed: {e}", file=sys.stderr)
            c_ms, c_res = None, None
        d_ms, d_res = best(duck.run, sql_for(q, "duckdb"), a.runs)
        if c_res is None:
            same, why = False, "CROW failed"
        else:
            same, why = same_rows(c_res, d_res, 0.10 if qid in APPROX else 1e-9)
        if not same:
            ok = False
            print(f"  DIFFERENT: {why}", file=sys.stderr)
        results.append({"id": qid, "what": what, "crow_ms": c_ms, "duckdb_ms": d_ms,
                        "ratio": c_ms / d_ms if c_ms else None, "same": same,
                        "rows": d_res.num_rows, "why": why})
        print(f"  crow {c_ms and round(c_ms)} ms, duckdb {d_ms:.0f} ms", file=sys.stderr)

    overhead = []
    for name, sql in OVERHEAD:
        c = sorted(timed(crow.run, sql)[0] for _ in range(11))
        d = sorted(timed(duck.run, sql)[0] for _ in range(11))
        overhead.append({"what": name, "crow_ms": statistics.median(c),
                         "duckdb_ms": statistics.median(d)})

    print("| query | what | CROW ms | DuckDB ms | ratio CROW / DuckDB | rows | same rows |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in results:
        c = f"{r['crow_ms']:.0f}" if r["crow_ms"] else "failed"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "—"
        same = "yes" if r["same"] else f"**NO** ({r['why'][:80]})"
        if r["same"] and r["id"] in APPROX:
            same = "yes (±10%, approximate)"
        print(f"| {r['id']} | {r['what']} | {c} | {r['duckdb_ms']:.0f} | {ratio} | {r['rows']} | {same} |")
    ratios = [r["ratio"] for r in results if r["ratio"]]
    geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios)) if ratios else float("nan")
    print(f"\n**Geometric mean of the ratios: {geo:.2f}** ({len(ratios)} queries)")
    tot_c = sum(r["crow_ms"] for r in results if r["crow_ms"])
    tot_d = sum(r["duckdb_ms"] for r in results)
    print(f"Sum of best times: CROW {tot_c / 1000:.2f} s, DuckDB {tot_d / 1000:.2f} s")
    o = {x["what"]: x for x in overhead}
    print("\nFixed per-request cost (median of 11):\n")
    print("| request | CROW ms | DuckDB ms |")
    print("|---|---:|---:|")
    for x in overhead:
        print(f"| `{x['what']}` | {x['crow_ms']:.1f} | {x['duckdb_ms']:.1f} |")
    fixed = o["table resolved, no file read"]["crow_ms"]
    d_fixed = o["table resolved, no file read"]["duckdb_ms"]
    timed_ok = [r for r in results if r["crow_ms"]]
    if timed_ok:
        shares = [fixed / r["crow_ms"] for r in timed_ok]
        alt = [(r["crow_ms"] - fixed + d_fixed) / r["duckdb_ms"] for r in timed_ok]
        print(f"\nCROW's fixed cost (table resolved, nothing read: {fixed:.0f} ms) is "
              f"{100 * min(shares):.0f}–{100 * max(shares):.0f}% of its per-query times (median "
              f"{100 * statistics.median(shares):.0f}%). With DuckDB's fixed cost ({d_fixed:.0f} ms) "
              f"in its place the geometric mean would be "
              f"{math.exp(sum(math.log(max(x, 1e-3)) for x in alt) / len(alt)):.2f}.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"queries": results, "overhead": overhead, "geomean": geo}, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
