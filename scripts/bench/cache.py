"""The result cache's effect on a dashboard-style repeat: one query sent N
times through POST /api/v1/sql to a server with the cache and to one
without (same lake). Prints each server's first call, median and p95
latency and the X-Crow-Cache answers seen, and checks every body is the
same.

usage: cache.py KEY URL_WITH_CACHE URL_WITHOUT [--runs 20]
"""
import argparse
import statistics
import time

import requests

QUERY = ("SELECT event_date, event, count(*) AS n, count(DISTINCT anonymous_id) AS visitors "
         "FROM raw_web_events GROUP BY event_date, event ORDER BY event_date, event")


def run(url, key, runs):
    times, seen, bodies = [], {}, set()
    s = requests.Session()
    for _ in range(runs):
        t = time.perf_counter()
        r = s.post(url + "/api/v1/sql", json={"sql": QUERY},
                   headers={"authorization": "Bearer " + key})
        body = r.content
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
        bodies.add(body)
        h = r.headers.get("x-crow-cache", "?")
        seen[h] = seen.get(h, 0) + 1
    return times, seen, bodies


def main():
    p = argparse.ArgumentParser()
    p.add_argument("key")
    p.add_argument("cached")
    p.add_argument("uncached")
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args()
    out = {}
    for name, url in [("without cache", a.uncached), ("with cache", a.cached)]:
        times, seen, bodies = run(url, a.key, a.runs)
        out[name] = bodies
        rest = sorted(times[1:])
        p95 = rest[min(len(rest) - 1, int(round(0.95 * (len(rest) - 1))))]
        total = sum(times)
        print(f"| {name} | {times[0]:.1f} | {statistics.median(rest):.1f} | {p95:.1f} | "
              f"{total:.0f} | {', '.join(f'{k} {v}' for k, v in sorted(seen.items()))} |")
    assert len(out["with cache"]) == 1 and out["with cache"] == out["without cache"], \
        "every answer must be the same"
    print(f"query: {QUERY}")


if __name__ == "__main__":
    main()
