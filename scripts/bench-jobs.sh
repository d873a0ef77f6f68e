#!/usr/bin/env bash
# The job benchmarks of BENCHMARKS.md, in one run on this machine:
#  1. sessionize EVENTS generated web events (default 10 million, about 1.2
#     million visitors) with `crow jobs run sessionize`, and the same rule
#     written as DuckDB SQL over the same Parquet files; wall time and peak
#     memory of each (measured as separate processes);
#  2. enrichment against a local OpenAI-compatible server answering after
#     300 ms, at concurrency 16, against the ideal concurrency / latency.
# Usage: scripts/bench-jobs.sh   (EVENTS=1000000 for a quick run; SESSIONS=N
#        sessions to enrich; CROWTEST_BIN=PATH to use an already built binary
#        instead of building in release; CROWTEST_VENV=DIR for a venv that has
#        DuckDB already)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-10000000}"
SESSIONS="${SESSIONS:-2000}"
source scripts/bench/lib.sh
bench_venv duckdb duckdb==2.0.0
bench_crow
bench_work
lake="$work/lake"
bench_generate "$lake"
from=$(bench_field "$work/gen.json" from)
to=$(bench_field "$work/gen.json" to)
visitors=$(bench_field "$work/gen.json" visitors)
parquet_mib=$(du -sm "$lake/raw_web_events" | cut -f1)
echo "sessionizing with crow ..." >&2
"$py" scripts/bench/measure.py "$crow" --lake "$lake" jobs run sessionize --from "$from" --to "$to" \
  --quiet --format json >"$work/crow.json" 2>"$work/crow.err" || { cat "$work/crow.err" >&2; exit 1; }
echo "sessionizing with duckdb ..." >&2
"$py" scripts/bench/measure.py "$py" scripts/bench/sessionize_duckdb.py "$lake/raw_web_events" \
  "${from}T00:00:00Z" "${to}T00:00:00Z" 60 "$work/duck.parquet" >"$work/duck.json" 2>"$work/duck.err" \
  || { cat "$work/duck.err" >&2; exit 1; }
"$py" - "$work" "$EVENTS" "$visitors" "$parquet_mib" <<'PY'
import json, sys
work, events, visitors, mib = sys.argv[1:5]
crow = json.load(open(f"{work}/crow.json"))
duck = json.load(open(f"{work}/duck.json"))
cm = json.loads(open(f"{work}/crow.err").read().strip().splitlines()[-1])
dm = json.loads(open(f"{work}/duck.err").read().strip().splitlines()[-1])
same = "yes" if crow["web_sessions"] == duck["sessions"] else f"NO ({crow['web_sessions']} vs {duck['sessions']})"
print(f"\nsessionize: {int(events):,} events, {int(visitors):,} visitors, {mib} MiB of Parquet\n")
print("| engine | seconds | peak MiB | sessions | same sessions |")
print("|---|---:|---:|---:|---|")
print(f"| CROW (`crow jobs run sessionize`) | {cm['seconds']:.1f} | {cm['peak_mib']:.0f} | {crow['web_sessions']:,} | {same} |")
print(f"| DuckDB 2.0.0 (same rule in SQL) | {dm['seconds']:.1f} | {dm['peak_mib']:.0f} | {duck['sessions']:,} | |")
print(f"| ratio CROW / DuckDB | {cm['seconds'] / dm['seconds']:.2f} | {cm['peak_mib'] / dm['peak_mib']:.2f} | | |")
PY
echo
echo "enrich: $SESSIONS sessions against a local provider with 300 ms latency"
"$crow" bench enrich --sessions "$SESSIONS" --latency-ms 300 --concurrency 16
