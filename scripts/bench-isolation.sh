#!/usr/bin/env bash
# Collector acks under analyst load (BENCHMARKS.md, "Ingest: acks while a
# heavy query runs"): one `crow serve` (collector and query API in one
# process, default settings) on a temp lake; `crow bench ingest --url` sends
# batches of BATCH events from CLIENTS clients for SECONDS seconds, first
# alone, then while QUERIES heavy queries run back to back through
# `POST /api/v1/sql` (a 30-million-row distinct count: both cores and the
# memory pool busy). Prints both tables and the ratio of the ack p99s.
# Usage: scripts/bench-isolation.sh   (SECONDS_PER_RUN=20 BATCH=10 CLIENTS=16
#        QUERIES=1 ROWS=30000000; CROWTEST_BIN=PATH to use an already built
#        binary instead of building in release)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECONDS_PER_RUN:-20}"
batch="${BATCH:-10}"
clients="${CLIENTS:-16}"
queries="${QUERIES:-1}"
rows="${ROWS:-30000000}"
py="${PYTHON:-python3}"
source scripts/bench/lib.sh
bench_crow
bench_work
loops=()
trap 'for l in "${loops[@]}"; do kill "$l" 2>/dev/null || true; done; bench_stop_all; rm -rf "$work"' EXIT
lake="$work/lake"
"$crow" --lake "$lake" init >/dev/null
org=$("$crow" --lake "$lake" orgs create --name "Bench Isolation" --format json)
wk=$(echo "$org" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["write_key"])')
oid=$(echo "$org" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["org_id"])')
key=$("$crow" --lake "$lake" keys create --org "$oid" --scope read --format json \
  | "$py" -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
# The result cache is off: the heavy query runs anew each time.
bench_serve both CROW_API_RESULT_CACHE_MB=0 CROW_API_QUERY_TIMEOUT_SECONDS=3600 \
  CROW_API_RATE_LIMIT_BURST=100000 -- --lake "$lake" serve --listen "127.0.0.1:0" --wal-dir "$work/wal"
echo "acks alone: batches of $batch events, $clients clients, $secs s"
"$crow" bench ingest --url "$url" --write-key "$wk" --batch "$batch" --clients "$clients" \
  --seconds "$secs" | tee "$work/alone.md"
sql="select count(distinct v) as n from (select value % 10000019 as v from generate_series(1, $rows))"
body=$("$py" -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$sql")
for _ in $(seq 1 "$queries"); do
  ( while true; do
      curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d "$body" "$url/api/v1/sql" >>"$work/queries.log"
    done ) &
  loops+=($!)
done
sleep 2
echo
echo "acks while $queries heavy quer$([ "$queries" = 1 ] && echo y || echo ies) run back to back"
"$crow" bench ingest --url "$url" --write-key "$wk" --batch "$batch" --clients "$clients" \
  --seconds "$secs" | tee "$work/loaded.md"
for l in "${loops[@]}"; do kill "$l" 2>/dev/null || true; done
loops=()
"$py" - "$work/alone.md" "$work/loaded.md" "$work/queries.log" <<'PY'
import sys
def row(path):
    last = [l for l in open(path) if l.startswith("| ") and l[2].isdigit()][-1]
    cells = [c.strip() for c in last.strip().strip("|").split("|")]
    return float(cells[5]), float(cells[6]), float(cells[4])
a, b = row(sys.argv[1]), row(sys.argv[2])
q = [l.split() for l in open(sys.argv[3]) if l.strip()]
ok = [float(t) for c, t in q if c == "200"]
print()
print(f"heavy queries answered while loaded: {len(ok)} (200), {len(q) - len(ok)} other; "
      f"mean {sum(ok) / max(len(ok), 1):.1f} s")
print(f"ack p50 {a[0]:.2f} → {b[0]:.2f} ms; ack p99 {a[1]:.2f} → {b[1]:.2f} ms: "
      f"**p99 ratio {b[1] / a[1]:.2f}** (goal ≤ 1.5); events/s {a[2]:.0f} → {b[2]:.0f}")
PY
