#!/usr/bin/env python3
"""The sessionize rule of CROW's web channel, written as DuckDB SQL over the
Parquet files of the `raw_web_events` Delta table: deduplicate by
(org_id, message_id) keeping the first received copy, stitch anonymous ids to
the earliest user id seen with them (events carrying both, alias calls), split
each visitor's events where the gap exceeds GAP minutes, and write one row
per session (start, end, events, page views, products, converted, source ids)
to a Parquet file. Prints the session count as JSON.

It reads every data file of the table's date partitions (not `_delta_log`,
where checkpoints are Parquet too): right for the benchmarks' append-only
lakes, which have no removed files.

usage: sessionize_duckdb.py TABLE_DIR FROM TO GAP_MINUTES OUT.parquet
"""
import json
import sys

import duckdb

table, frm, to, gap, out = sys.argv[1:6]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
sql = f"""
COPY (
WITH raw AS (
  SELECT * FROM read_parquet('{table}/event_date=*/*.parquet', hive_partitioning = true)
),
links AS (
  SELECT org_id, anonymous_id AS anon, user_id AS uid, occurred_at FROM raw
   WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
  UNION ALL
  SELECT org_id, previous_id, user_id, occurred_at FROM raw
   WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
),
ids AS (
  SELECT org_id, anon, arg_min(uid, (occurred_at, uid)) AS uid FROM links GROUP BY org_id, anon
),
ev AS (
  SELECT * FROM (
    SELECT org_id, message_id, type, event, anonymous_id, user_id, occurred_at, product_id,
           row_number() OVER (PARTITION BY org_id, message_id ORDER BY received_at, occurred_at) AS rn
    FROM raw
    WHERE occurred_at >= TIMESTAMPTZ '{frm}' - INTERVAL {gap} MINUTE
  ) WHERE rn = 1
),
v AS (
  SELECT ev.*, COALESCE(ev.user_id, ids.uid, ev.anonymous_id) AS visitor
  FROM ev LEFT JOIN ids ON ev.org_id = ids.org_id AND ev.anonymous_id = ids.anon
),
g AS (
  SELECT *, CASE WHEN lag(occurred_at) OVER w IS NULL
                   OR occurred_at - lag(occurred_at) OVER w > INTERVAL {gap} MINUTE
                 THEN 1 ELSE 0 END AS new_session
  FROM v WINDOW w AS (PARTITION BY org_id, visitor ORDER BY occurred_at, message_id)
),
s AS (
  SELECT *, sum(new_session) OVER (PARTITION BY org_id, visitor ORDER BY occurred_at, message_id
                                   ROWS UNBOUNDED PRECEDING) AS session_no
  FROM g
)
SELECT org_id, visitor AS visitor_id, min(occurred_at) AS started_at, max(occurred_at) AS ended_at,
       count(*) AS event_count,
       sum(CASE WHEN type IN ('page', 'screen') THEN 1 ELSE 0 END) AS page_views,
       list(DISTINCT product_id) FILTER (WHERE product_id IS NOT NULL) AS product_ids,
       bool_or(event = 'Order Completed') AS converted,
       list(message_id ORDER BY occurred_at, message_id) AS source_ids
FROM s
GROUP BY org_id, visitor, session_no
HAVING min(occurred_at) >= TIMESTAMPTZ '{frm}' AND min(occurred_at) < TIMESTAMPTZ '{to}'
) TO '{out}' (FORMAT parquet)
"""
con.execute(sql)
n = con.execute(f"SELECT count(*), sum(event_count) FROM read_parquet('{out}')").fetchone()
print(json.dumps({"sessions": n[0], "events": int(n[1] or 0)}))
